//! vswitch-bench's own end-to-end tests: outputs written, missing peers skipped (not zero), nothing left behind (also after SIGINT), UDP generator counts.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vswitch_bench::machine;
use vswitch_bench::systems::{self, DaemonOptions, Kind};
use vswitch_bench::workloads;

/// Programs a peer runs as: hidden from the PATH of the "missing peer" run.
const PEERS: [&str; 5] = ["ovs-vswitchd", "ovsdb-server", "ovs-vsctl", "pasta", "slirp4netns"];

fn root_or_skip(test: &str) -> bool {
    if !machine::is_root() {
        eprintln!("SKIPPED {test}: needs root (network namespaces, TAP devices)");
        return false;
    }
    if vswitch_bench::cmd::which("iperf3").is_none() {
        eprintln!("SKIPPED {test}: iperf3 is not installed (scripts/test installs it)");
        return false;
    }
    true
}

/// A directory of this test's own, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("vswitch-bench-test.{}.{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A PATH directory holding every program of /usr/bin, /usr/sbin, /bin and /sbin but the peers:
/// the machine as it is where they are not installed.
fn path_without_peers(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for src in ["/usr/local/bin", "/usr/local/sbin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let Ok(entries) = std::fs::read_dir(src) else { continue };
        for e in entries.flatten() {
            let name = e.file_name();
            if PEERS.iter().any(|p| name == *p) || bin.join(&name).exists() {
                continue;
            }
            let _ = std::os::unix::fs::symlink(e.path(), bin.join(&name));
        }
    }
    bin
}

/// vswitch-bench with its own TMPDIR (its temporary directories, which name its processes).
fn bench(tmp: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vswitch-bench"));
    c.env("TMPDIR", tmp);
    c
}

/// What a finished run `pid` (with temporary directories under `tmp`) left: namespaces named
/// for it, processes whose command line names `tmp`, directories in `tmp`.
fn leftovers(pid: u32, tmp: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let ns = String::from_utf8_lossy(&Command::new("ip").args(["netns", "ls"]).output().unwrap().stdout).into_owned();
    out.extend(ns.lines().filter(|l| l.starts_with(&format!("vsb{pid}-"))).map(|l| format!("namespace {l}")));
    let needle = tmp.to_str().unwrap().as_bytes().to_vec();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{p}/cmdline")) else { continue };
        if cmdline.windows(needle.len()).any(|w| w == needle.as_slice()) {
            out.push(format!("process {p}: {}", String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    for e in std::fs::read_dir(tmp).unwrap().flatten() {
        out.push(format!("directory {}", e.path().display()));
    }
    out
}

fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn run_writes_its_outputs_skips_missing_peers_and_leaves_nothing() {
    if !root_or_skip("run_writes_its_outputs_skips_missing_peers_and_leaves_nothing") {
        return;
    }
    let scratch = Scratch::new("outputs");
    let tmp = scratch.0.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let path = path_without_peers(&scratch.0);
    let out = scratch.0.join("out");
    let child = bench(&tmp)
        .env("PATH", &path)
        .args(["run", "l2-rtt", "nat-rr", "--runs", "1", "--rtt-count", "2000", "--systems", "vswitch,bridge,ovs,pasta", "--out"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let o = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", o.status);
    let left = leftovers(pid, &tmp);
    assert!(left.is_empty(), "left behind: {left:?}");

    let r = read_json(&out.join("results.json"));
    assert_eq!(r["schema"], "vswitch-bench/1");
    assert_eq!(r["interrupted"], false);
    // The missing peers are reported as skipped, with their package, and never measured.
    let skipped: Vec<(String, String)> = r["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["system"].as_str().unwrap().to_string(), s["package"].as_str().unwrap_or("").to_string()))
        .collect();
    assert!(skipped.contains(&("ovs".into(), "openvswitch-switch".into())), "{skipped:?}");
    assert!(skipped.contains(&("pasta".into(), "passt".into())), "{skipped:?}");
    let runs = r["runs"].as_array().unwrap();
    let systems: Vec<(&str, &str)> = runs.iter().map(|x| (x["scenario"].as_str().unwrap(), x["system"].as_str().unwrap())).collect();
    assert_eq!(systems.len(), 3, "l2-rtt on vswitch and bridge, nat-rr on vswitch: {systems:?}");
    assert!(
        systems.contains(&("l2-rtt", "vswitch")) && systems.contains(&("l2-rtt", "bridge")) && systems.contains(&("nat-rr", "vswitch"))
    );
    for x in runs {
        let p50 = x["metrics"]["p50_us"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 < 100_000.0, "{x}");
    }
    assert_eq!(r["ratios"].as_array().unwrap().len(), 1, "vswitch / bridge on l2-rtt only: {}", r["ratios"]);
    assert!(r["failures"].as_array().unwrap().is_empty(), "{}", r["failures"]);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| ovs | skipped: not installed: ovs-vswitchd (Debian package openvswitch-switch"), "{report}");
    assert!(report.contains("### l2-rtt (mtu 1500)") && report.contains("### nat-rr (mtu 1500)"), "{report}");
    let svg = std::fs::read_to_string(out.join("chart.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("l2-rtt mtu 1500") && svg.contains(">bridge<"), "{svg}");
    assert!(stdout.contains("vswitch / this"), "the table is printed too:\n{stdout}");
}

#[test]
fn sigint_mid_run_tears_everything_down_and_keeps_what_was_measured() {
    if !root_or_skip("sigint_mid_run_tears_everything_down_and_keeps_what_was_measured") {
        return;
    }
    let scratch = Scratch::new("sigint");
    let tmp = scratch.0.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = scratch.0.join("out");
    let mut child = bench(&tmp)
        .args(["run", "l2-tcp", "--runs", "5", "-t", "2", "--mtus", "1500", "--systems", "vswitch,bridge,null", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for l in lines.map_while(Result::ok) {
            if l.contains(" Gbit/s") {
                let _ = tx.send(());
            }
            all.push(l);
        }
        all
    });
    // After the first measurement the second is being set up or measured: interrupt it there.
    rx.recv_timeout(Duration::from_secs(60)).expect("no measurement within 60 s");
    std::thread::sleep(Duration::from_millis(700));
    let st = Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "vswitch-bench did not stop within 60 s of SIGINT");
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = reader.join().unwrap().join("\n");
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let left = leftovers(pid, &tmp);
    assert!(left.is_empty(), "left behind after SIGINT: {left:?}\n{stderr}");
    let r = read_json(&out.join("results.json"));
    assert_eq!(r["interrupted"], true);
    let n = r["runs"].as_array().unwrap().len();
    assert!((1..15).contains(&n), "{n} runs kept of 15");
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().contains("**Interrupted**"));
}

#[test]
fn udp_generator_counts_match_the_receiver_within_loss() {
    if !root_or_skip("udp_generator_counts_match_the_receiver_within_loss") {
        return;
    }
    let opts = DaemonOptions { bin_dir: PathBuf::new(), workers: 1, own_netns: true, keep: false, extra_args: vec![] };
    let sys = systems::start(Kind::Bridge, 1500, false, &opts).unwrap();
    // Paced well below what the bridge carries: what is sent arrives, but for what the receiver
    // could not take in time on a loaded machine (counted by the kernel), and the rates agree.
    let paced = workloads::udp_rate(&sys.pair, 2, 64, 20_000, None).unwrap();
    assert!(paced.sent > 30_000, "{paced:?}");
    let counted = paced.a_tx_dropped + paced.b_rx_dropped + paced.b_rcvbuf_errors;
    assert!(paced.received <= paced.sent && paced.sent - paced.received <= counted + 64, "{paced:?}");
    assert!(paced.loss_pct < 5.0, "{paced:?}");
    assert!((paced.rx_pps - paced.tx_pps).abs() / paced.tx_pps < 0.05, "{paced:?}");
    assert!((paced.tx_pps - 20_000.0).abs() < 2_000.0, "paced at 20 kpps: {paced:?}");
    // Unpaced: whatever did not arrive, the kernel counted as dropped on the way.
    let flat = workloads::udp_rate(&sys.pair, 2, 64, 0, None).unwrap();
    let missing = flat.sent - flat.received;
    let counted = flat.a_tx_dropped + flat.b_rx_dropped + flat.b_rcvbuf_errors;
    assert!(flat.received <= flat.sent, "{flat:?}");
    assert!(missing <= counted + 64, "{missing} missing, {counted} counted as dropped: {flat:?}");
    assert!((flat.loss_pct - missing as f64 / flat.sent as f64 * 100.0).abs() < 1e-9, "{flat:?}");
}
