//! vswitch-bench: runs named scenarios through vswitch and every installed peer in one invocation, and writes a table, report.md, results.json and chart.svg.
//!
//! ```text
//! cargo build --release -p vswitch-bench -p vswitch-ctl
//! sudo target/release/vswitch-bench --list
//! sudo target/release/vswitch-bench run l2-tcp l2-pps --runs 5
//! sudo target/release/vswitch-bench run all --out results/
//! sudo target/release/vswitch-bench run l2-tcp --workers 1,2,4,8,16 --streams 16
//! ```
//!
//! Every measurement builds its system afresh in namespaces of its own and tears it down after;
//! within a round the systems' order rotates, so none always runs first. SIGINT or SIGTERM
//! stops the run after the measurement in progress, tears everything down and still writes
//! what was measured (marked interrupted); a second one exits at once (`vswitch-bench cleanup`
//! then removes what is left).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use vswitch_bench::dns::{self, DnsOptions};
use vswitch_bench::harness::{self, pct, to_metrics};
use vswitch_bench::machine::{self, Machine};
use vswitch_bench::nat::{self, NatOptions};
use vswitch_bench::report::{Family, Workload};
use vswitch_bench::results::{self, Config, Failure, Results, Run, Skipped};
use vswitch_bench::scenario::{self, Ip, Scenario, Variant};
use vswitch_bench::systems::{self, DaemonOptions, Kind};
use vswitch_bench::{cmd, err, workloads, Result};

/// Benchmarks vswitch against the Linux bridge and kernel routing, Open vSwitch's userspace
/// datapath, pasta, slirp4netns, dnsmasq and its own null forwarder, in network namespaces it
/// creates and removes itself (run as root).
#[derive(Debug, Parser)]
#[command(name = "vswitch-bench", version)]
struct Cli {
    /// List the scenarios and the peers (which are installed, and their packages), then exit.
    #[arg(long)]
    list: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run scenarios (names from --list, or `all`).
    Run(Box<RunArgs>),
    /// The same as --list.
    List,
    /// Remove what killed runs left behind: processes (vswitchd, OVS, pasta, slirp4netns,
    /// dnsmasq, iperf3, rootlesskit), namespaces (vsb<PID>-…), host links, users (vsbr<PID>,
    /// made for runs through rootlesskit), /etc/netns entries, temporary directories.
    Cleanup,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Scenarios to run, e.g. `l2-tcp l2-pps`, or `all`.
    #[arg(required = true, num_args = 1..)]
    scenarios: Vec<String>,
    /// Rounds: each measures every system once.
    #[arg(short = 'r', long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Directory for report.md, results.json and chart.svg (created; default
    /// vswitch-bench-results/<UTC date and time>).
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// vswitchd worker counts; more than one sweeps them (vswitch, null and OVS are measured at
    /// each, the kernel and single-threaded peers once). Default: one per CPU.
    #[arg(short, long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=1024))]
    workers: Vec<u32>,
    /// Only these MTUs (default: each scenario's own, 1500 and 65520 for throughput).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1280..=65521))]
    mtus: Vec<u32>,
    /// Address families: 4, 6 or 4,6 (IPv6 exists for the l2 and l3 scenarios).
    #[arg(long, value_delimiter = ',', default_value = "4", value_parser = parse_ip)]
    ip: Vec<Ip>,
    /// Seconds of each measured run (throughput, packet rate, DNS load, connection rate).
    #[arg(short = 't', long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=600))]
    time: u32,
    /// Parallel TCP streams in l2-tcp and l3-tcp (iperf3 -P): more than one spreads the load
    /// over vswitchd's workers, which a scaling sweep needs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=128))]
    streams: u32,
    /// Round trips per latency run (l2-rtt, nat-rr; at most 10 s each).
    #[arg(long, default_value_t = 20_000)]
    rtt_count: u64,
    /// Measure only these systems (default: each scenario's subject and every installed peer).
    #[arg(long, value_enum, value_delimiter = ',')]
    systems: Vec<Kind>,
    /// Install the missing peers and tools with apt-get first (Open vSwitch's service is kept
    /// from starting: the harness runs its own instance).
    #[arg(long)]
    install_peers: bool,
    /// Directory holding vswitchd and vswitchctl (default: this program's own).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Extra argument for vswitchd (repeatable), e.g. `--daemon-arg=--no-pin`.
    #[arg(long = "daemon-arg", allow_hyphen_values = true)]
    daemon_args: Vec<String>,
    /// Keep each run's temporary directory (logs, vswitchd state).
    #[arg(long)]
    keep_logs: bool,
    /// Also print vswitchd's per-port traffic and NAT/DNS counters after each run (they are
    /// in results.json either way); without it only drops and logged warnings are printed.
    #[arg(short, long)]
    verbose: bool,
}

fn parse_ip(s: &str) -> std::result::Result<Ip, String> {
    match s {
        "4" | "ipv4" => Ok(Ip::V4),
        "6" | "ipv6" => Ok(Ip::V6),
        _ => Err(format!("{s:?} is not an address family; expected 4 or 6")),
    }
}

/// Set by SIGINT/SIGTERM: finish the measurement in progress, tear down, write, exit 130.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match &cli.command {
        Some(Command::Run(args)) => run(args),
        Some(Command::Cleanup) => harness::cleanup("vswitch-bench").map(|ok| if ok { 0 } else { 1 }),
        Some(Command::List) => list().map(|_| 0),
        None if cli.list => list().map(|_| 0),
        None => Err(err("say what to do: `vswitch-bench --list`, `vswitch-bench run SCENARIO…` or `vswitch-bench cleanup` (see --help)")),
    };
    match res {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("vswitch-bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// Every system a scenario may compare, with what it needs.
fn availability(kind: Kind, bin_dir: &Path) -> std::result::Result<(), (String, Option<&'static str>)> {
    if let Some(package) = machine::missing_peer(kind) {
        let (prog, _) = machine::peer_program(kind).unwrap_or(("?", package));
        return Err((format!("not installed: {prog} (Debian package {package}; or run with --install-peers)"), Some(package)));
    }
    if kind.uses_vswitchd() || kind.personality().is_some() {
        for b in ["vswitchd", "vswitchctl"] {
            if !bin_dir.join(b).is_file() {
                return Err((
                    format!("{} not found: `cargo build --release -p vswitch-ctl` or pass --bin-dir", bin_dir.join(b).display()),
                    None,
                ));
            }
        }
    }
    Ok(())
}

fn default_bin_dir() -> PathBuf {
    std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from)).unwrap_or_default()
}

fn list() -> Result<()> {
    let bin_dir = default_bin_dir();
    println!("Scenarios (vswitch-bench run NAME…; `all` for every one):\n");
    for s in scenario::ALL {
        let mtus: Vec<String> = s.mtus.iter().map(u32::to_string).collect();
        println!("  {:<15} {}", s.name, s.about);
        println!(
            "  {:<15} {} vs {}; MTU {}{}; {} ({})",
            "",
            s.subject.as_str(),
            s.peers.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "),
            mtus.join(", "),
            if s.ipv6 { "; IPv4 and IPv6" } else { "; IPv4" },
            s.metric.unit,
            if s.metric.higher_is_better { "higher is better" } else { "lower is better" }
        );
    }
    println!("\nSystems:\n");
    let m = Machine::probe(Some(&bin_dir.join("vswitchd")));
    let all = [
        Kind::Vswitch,
        Kind::VswitchRouted,
        Kind::Null,
        Kind::Bridge,
        Kind::KernelRouter,
        Kind::Ovs,
        Kind::Pasta,
        Kind::Slirp4netns,
        Kind::Dnsmasq,
        Kind::VswitchSlirp4netns,
        Kind::VswitchPasta,
    ];
    for k in all {
        let what = match k {
            Kind::Vswitch => "vswitchd switching (and its slirp engine, and its DNS)",
            Kind::VswitchRouted => "vswitchd routing between two networks",
            Kind::Null => "vswitchd --null-forwarder: port I/O without switching logic, the ceiling",
            Kind::Bridge => "Linux bridge with veth ports",
            Kind::KernelRouter => "Linux routing between two bridges",
            Kind::Ovs => "Open vSwitch, userspace datapath (datapath_type=netdev), its own instance",
            Kind::Pasta => "pasta (passt project)",
            Kind::Slirp4netns => "slirp4netns",
            Kind::Dnsmasq => "dnsmasq",
            Kind::VswitchSlirp4netns => "the vswitchd binary as slirp4netns, given slirp4netns's command line (drop-in)",
            Kind::VswitchPasta => "the vswitchd binary as pasta, given pasta's command line (drop-in)",
        };
        let version = match k {
            Kind::Vswitch | Kind::VswitchRouted | Kind::Null | Kind::VswitchSlirp4netns | Kind::VswitchPasta => m.vswitchd.clone(),
            Kind::Ovs => m.ovs.clone(),
            Kind::Pasta => m.pasta.clone(),
            Kind::Slirp4netns => m.slirp4netns.clone(),
            Kind::Dnsmasq => m.dnsmasq.clone(),
            Kind::Bridge | Kind::KernelRouter => Some(format!("kernel {}", m.kernel)),
        };
        let state = match (k, availability(k, &bin_dir)) {
            (Kind::Dnsmasq, _) if cmd::which("dnsmasq").is_none() => "missing (Debian package dnsmasq-base)".to_string(),
            (_, Ok(())) => format!("installed: {}", version.unwrap_or_else(|| "version unknown".into())),
            (_, Err((why, _))) => why,
        };
        println!("  {:<15} {what}\n  {:<15} {state}", k.as_str(), "");
    }
    println!("\nLoad: iperf3 ({}), and vswitch-bench's own UDP, latency, connection-rate and DNS generators.", m.iperf3);
    Ok(())
}

/// The Debian packages the scenarios need that are missing: tools, then peers.
fn missing_packages(scenarios: &[&Scenario]) -> Vec<&'static str> {
    let mut pkgs = Vec::new();
    let mut tools = vec![("ip", "iproute2"), ("ss", "iproute2"), ("iperf3", "iperf3"), ("kill", "procps"), ("sysctl", "procps")];
    if scenarios.iter().any(|s| s.family == Family::Nat) {
        tools.push(("unshare", "util-linux"));
    }
    if scenarios.iter().any(|s| s.family == Family::Dns) {
        tools.push(("dnsmasq", "dnsmasq-base"));
    }
    for (t, p) in tools {
        if cmd::which(t).is_none() && !pkgs.contains(&p) {
            pkgs.push(p);
        }
    }
    for s in scenarios {
        for &k in s.peers {
            if let Some(p) = machine::missing_peer(k).filter(|p| !pkgs.contains(p)) {
                pkgs.push(p);
            }
        }
    }
    pkgs
}

/// `apt-get install` of `pkgs`, with services kept from starting (OVS's package would start a
/// system instance otherwise) by a policy-rc.d of ours, removed after.
fn install(pkgs: &[&str]) -> Result<()> {
    const POLICY: &str = "/usr/sbin/policy-rc.d";
    let ours = !Path::new(POLICY).exists();
    if ours {
        std::fs::write(POLICY, "#!/bin/sh\n# written by vswitch-bench --install-peers: no service starts while it installs\nexit 101\n")?;
        std::fs::set_permissions(POLICY, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    eprintln!("installing: {}", pkgs.join(" "));
    let mut c = std::process::Command::new("apt-get");
    c.env("DEBIAN_FRONTEND", "noninteractive").args(["install", "-y", "--no-install-recommends"]).args(pkgs);
    let res = cmd::checked(c, Duration::from_secs(900));
    if ours {
        let _ = std::fs::remove_file(POLICY);
    }
    res.map(drop).map_err(|e| err(format!("apt-get install {} failed: {e}", pkgs.join(" "))))
}

/// One measurement to make.
#[derive(Debug, Clone)]
struct Unit {
    scenario: &'static Scenario,
    variant: Variant,
    system: Kind,
    workers: Option<usize>,
    round: usize,
}

impl Unit {
    fn tag(&self, runs: usize, swept: &[usize]) -> String {
        format!(
            "[{} {} · round {}/{}] {}",
            self.scenario.name,
            self.variant.label(),
            self.round + 1,
            runs,
            results::system_label(self.system.as_str(), self.workers, swept)
        )
    }
}

/// What a measurement gives: the figures, the setup time, notes, and a line for people.
struct Measured {
    metrics: std::collections::BTreeMap<String, f64>,
    setup_s: f64,
    notes: Vec<String>,
    line: String,
}

/// Where lines go: above the progress bar on a terminal, plain on stderr otherwise.
struct Out {
    bar: ProgressBar,
}

impl Out {
    fn say(&self, line: impl AsRef<str>) {
        self.bar.suspend(|| eprintln!("{}", line.as_ref()));
    }
}

fn utc_now(fmt: &str) -> String {
    cmd::run_within("date", &["-u", fmt], Duration::from_secs(5)).map(|s| s.trim().to_string()).unwrap_or_default()
}

fn run(a: &RunArgs) -> Result<u8> {
    let scenarios = scenario::resolve(&a.scenarios).map_err(err)?;
    if a.install_peers {
        let pkgs = missing_packages(&scenarios);
        if pkgs.is_empty() {
            eprintln!("--install-peers: everything is installed already");
        } else {
            install(&pkgs)?;
        }
    }
    let families = |f: Family| scenarios.iter().any(|s| s.family == f);
    machine::check_prerequisites(families(Family::Net), families(Family::Dns), families(Family::Nat))?;
    let left = harness::leftovers_line();
    if !left.is_empty() {
        eprintln!("note: killed runs left {left}; `vswitch-bench cleanup` removes them");
    }
    let bin_dir = a.bin_dir.clone().unwrap_or_else(default_bin_dir);
    let machine = Machine::probe(Some(&bin_dir.join("vswitchd")));
    let mut workers: Vec<usize> = a.workers.iter().map(|&w| w as usize).collect();
    if workers.is_empty() {
        workers.push(machine.nproc);
    }
    workers.dedup();
    let started_utc = utc_now("+%Y-%m-%dT%H:%M:%SZ");
    let out_dir = a.out.clone().unwrap_or_else(|| PathBuf::from("vswitch-bench-results").join(utc_now("+%Y%m%d-%H%M%S")));
    std::fs::create_dir_all(&out_dir).map_err(|e| err(format!("cannot create {}: {e}", out_dir.display())))?;

    // What runs where: skipped peers are listed once per scenario, never measured as zero.
    let mut skipped = Vec::new();
    let mut infos = Vec::new();
    let mut units = Vec::new();
    for s in &scenarios {
        let variants = s.variants(&a.mtus, &a.ip);
        let mut systems = Vec::new();
        for k in s.systems() {
            if !a.systems.is_empty() && !a.systems.contains(&k) {
                continue;
            }
            match availability(k, &bin_dir) {
                Ok(()) => systems.push(k),
                Err((reason, package)) => skipped.push(Skipped {
                    scenario: s.name.to_string(),
                    system: k.as_str().to_string(),
                    reason,
                    package: package.map(str::to_string),
                }),
            }
        }
        let peers = s.peers.iter().filter(|k| systems.contains(k)).map(|k| k.as_str().to_string()).collect();
        let drop_ins = s
            .drop_in_pairs()
            .into_iter()
            .filter(|(d, _)| systems.contains(d))
            .map(|(d, p)| (d.as_str().to_string(), p.as_str().to_string()))
            .collect();
        infos.push(results::scenario_info(s, peers, drop_ins, variants.clone()));
        // Each system once per worker count if it scales, else once.
        let slots: Vec<(Kind, Option<usize>)> = systems
            .iter()
            .flat_map(|&k| if scenario::scales(k) { workers.iter().map(|&w| (k, Some(w))).collect::<Vec<_>>() } else { vec![(k, None)] })
            .collect();
        for &variant in &variants {
            for round in 0..a.runs as usize {
                for i in 0..slots.len() {
                    let (system, w) = slots[(round + i) % slots.len()];
                    units.push(Unit { scenario: s, variant, system, workers: w, round });
                }
            }
        }
    }
    for s in &skipped {
        eprintln!("note: {} skipped in {}: {}", s.system, s.scenario, s.reason);
    }
    if units.is_empty() {
        return Err(err(format!(
            "nothing to measure in {}: every system was skipped or filtered out by --systems, or no variant matches --mtus/--ip",
            a.scenarios.join(" ")
        )));
    }
    ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!("\nvswitch-bench: interrupted again, exiting now; `vswitch-bench cleanup` removes what is left");
            std::process::exit(130);
        }
        eprintln!("\nvswitch-bench: interrupted; stopping after the measurement in progress (again to exit at once)");
    })
    .map_err(|e| err(format!("cannot catch SIGINT: {e}")))?;

    eprintln!(
        "machine: {} CPU(s), {}, {:.1} GiB, kernel {}; vswitchd {}",
        machine.nproc,
        machine.cpu,
        machine.mem_gib,
        machine.kernel,
        machine.vswitchd.as_deref().unwrap_or("unknown")
    );
    eprintln!("{} measurement(s), {} round(s), workers {:?}; results in {}", units.len(), a.runs, workers, out_dir.display());
    let bar = if std::io::stderr().is_terminal() { ProgressBar::new(units.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} {elapsed_precise} (about {eta} left) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let out = Out { bar };
    let mut res = Results {
        schema: results::SCHEMA.to_string(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_utc,
        finished_utc: String::new(),
        interrupted: false,
        machine,
        config: Config {
            runs: a.runs as usize,
            workers: workers.clone(),
            mtus: a.mtus.clone(),
            ips: a.ip.clone(),
            secs: a.time,
            streams: a.streams,
            vswitchd_args: a.daemon_args.clone(),
        },
        scenarios: infos,
        runs: Vec::new(),
        summaries: Vec::new(),
        ratios: Vec::new(),
        skipped,
        failures: Vec::new(),
        notes: Vec::new(),
    };
    let started = Instant::now();
    for u in &units {
        if INTERRUPTED.load(Ordering::SeqCst) {
            res.interrupted = true;
            break;
        }
        let tag = u.tag(a.runs as usize, &workers);
        out.bar.set_message(tag.clone());
        let opts = DaemonOptions {
            bin_dir: bin_dir.clone(),
            workers: u.workers.unwrap_or(res.machine.nproc),
            own_netns: true,
            keep: a.keep_logs,
            extra_args: a.daemon_args.clone(),
        };
        match measure(u, a, &opts, &tag, &out) {
            Ok(mut m) => {
                results::add_cpu_per_unit(u.scenario, &mut m.metrics);
                out.say(format!("{tag}: {} (setup {:.1} s)", m.line, m.setup_s));
                res.notes.append(&mut m.notes);
                res.runs.push(Run {
                    scenario: u.scenario.name.to_string(),
                    variant: u.variant,
                    system: u.system.as_str().to_string(),
                    workers: u.workers,
                    round: u.round,
                    setup_s: m.setup_s,
                    metrics: m.metrics,
                });
            }
            Err(e) => {
                out.say(format!("{tag}: failed: {e}"));
                res.failures.push(Failure {
                    scenario: u.scenario.name.to_string(),
                    variant: u.variant,
                    system: u.system.as_str().to_string(),
                    workers: u.workers,
                    round: u.round,
                    error: e.to_string(),
                });
            }
        }
        out.bar.inc(1);
    }
    out.bar.finish_and_clear();
    res.interrupted |= INTERRUPTED.load(Ordering::SeqCst);
    res.finished_utc = utc_now("+%Y-%m-%dT%H:%M:%SZ");
    res.summarize();
    println!("\n## Results ({:.0} s{})\n", started.elapsed().as_secs_f64(), if res.interrupted { ", interrupted" } else { "" });
    println!("{}", res.tables());
    if workers.len() > 1 {
        println!("## Scaling\n\n{}", res.scaling_table());
    }
    write_outputs(&res, &out_dir)?;
    println!("wrote {0}/report.md, {0}/results.json, {0}/chart.svg", out_dir.display());
    Ok(if res.interrupted {
        130
    } else if res.failures.is_empty() {
        0
    } else {
        1
    })
}

fn write_outputs(res: &Results, dir: &Path) -> Result<()> {
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).map_err(|e| err(format!("cannot write {}: {e}", dir.join(name).display())))
    };
    write("results.json", serde_json::to_string_pretty(res)?)?;
    write("report.md", res.markdown())?;
    write("chart.svg", res.chart())
}

/// Builds the unit's system, runs its workload, tears the system down (by drop, on every path).
fn measure(u: &Unit, a: &RunArgs, opts: &DaemonOptions, tag: &str, out: &Out) -> Result<Measured> {
    // Drops and warnings always; the rest of vswitchd's counters on request.
    let mut say = |l: String| {
        if a.verbose || l.contains(" counted ") || l.contains(" logged ") {
            out.say(l)
        }
    };
    let w = u.scenario.workload;
    match u.scenario.family {
        Family::Net => {
            let mut sys = systems::start(u.system, u.variant.mtu, u.variant.ip == Ip::V6, opts)?;
            let fwd = sys.forwarder_pid();
            let (metrics, line) = match w {
                Workload::Tcp => {
                    let s = workloads::tcp(&sys.pair, a.time, a.streams, fwd)?;
                    let line = format!(
                        "{:.2} Gbit/s, {} retransmits, fwd CPU {}, machine CPU {:.0}%",
                        s.gbps,
                        s.retransmits,
                        pct(s.fwd_cpu_pct),
                        s.vm_cpu_pct
                    );
                    (to_metrics(&s), line)
                }
                Workload::Udp => {
                    let s = workloads::udp_rate(&sys.pair, a.time, 64, 0, fwd)?;
                    let mut m = to_metrics(&s);
                    m.insert("tx_kpps".into(), s.tx_pps / 1e3);
                    m.insert("rx_kpps".into(), s.rx_pps / 1e3);
                    let line = format!(
                        "rx {:.0} kpps (tx {:.0}, loss {:.1}%), fwd CPU {}, machine CPU {:.0}%",
                        s.rx_pps / 1e3,
                        s.tx_pps / 1e3,
                        s.loss_pct,
                        pct(s.fwd_cpu_pct),
                        s.vm_cpu_pct
                    );
                    (m, line)
                }
                Workload::Rtt => {
                    let s = workloads::rtt(&sys.pair, 64, a.rtt_count, 10)?;
                    (to_metrics(&s), format!("p50 {:.1} µs, p99 {:.1} µs ({} round trips, {} lost)", s.p50_us, s.p99_us, s.count, s.lost))
                }
                other => return Err(err(format!("{} is not a switching workload", other.as_str()))),
            };
            let notes = sys.daemon.as_mut().map(|d| harness::finish_daemon(d, tag, &mut say)).unwrap_or_default();
            Ok(Measured { metrics, setup_s: sys.setup.as_secs_f64(), notes, line })
        }
        Family::Nat => {
            let o = NatOptions { secs: a.time, rr_count: a.rtt_count, rr_secs: 10, conn_parallel: 8, conn_secs: a.time };
            let mut sys = nat::start(u.system, opts, u.variant.mtu)?;
            let (metrics, line) = match w {
                Workload::NatOut | Workload::NatOutRev | Workload::PortfwdIn | Workload::PortfwdInRev => {
                    let s = nat::throughput(&sys, w, a.time)?;
                    let line = format!(
                        "{:.2} Gbit/s ({} s stalled), {} retransmits, fwd CPU {}, machine CPU {:.0}%",
                        s.tcp.gbps,
                        s.stalled_s,
                        s.tcp.retransmits,
                        pct(s.tcp.fwd_cpu_pct),
                        s.tcp.vm_cpu_pct
                    );
                    (to_metrics(&s), line)
                }
                Workload::NatRr => {
                    let s = nat::request_response(&sys, &o)?;
                    (to_metrics(&s), format!("p50 {:.1} µs, p99 {:.1} µs, fwd CPU {}", s.p50_us, s.p99_us, pct(s.fwd_cpu_pct)))
                }
                Workload::ConnRate => {
                    let s = nat::connection_rate(&sys, &o)?;
                    let first = s.first_error.as_deref().map_or_else(String::new, |e| format!(" (first: {e})"));
                    (to_metrics(&s), format!("{:.0} conn/s, {} failed{first}, fwd CPU {}", s.conn_per_s, s.failed, pct(s.fwd_cpu_pct)))
                }
                other => return Err(err(format!("{} is not a NAT workload", other.as_str()))),
            };
            if let Some(why) = sys.forwarder_exited() {
                return Err(err(why));
            }
            let notes = sys.daemon.as_mut().map(|d| harness::finish_daemon(d, tag, &mut say)).unwrap_or_default();
            Ok(Measured { metrics, setup_s: sys.setup.as_secs_f64(), notes, line })
        }
        Family::Dns => {
            let o = DnsOptions {
                names: 100,
                sockets: 4,
                window: 32,
                secs: a.time,
                one_secs: 2,
                timeout: Duration::from_secs(1),
                mtu: u.variant.mtu,
            };
            let mut sys = dns::start(u.system, opts, &o)?;
            let s = dns::run(&sys, w, &o, false)?;
            let line = format!(
                "{:.1} kqps, p50 {:.0} µs, p99 {:.0} µs, {} lost, server CPU {}",
                s.kqps,
                s.p50_us,
                s.p99_us,
                s.lost,
                pct(s.srv_cpu_pct)
            );
            let mut notes = sys.daemon.as_mut().map(|d| harness::finish_daemon(d, tag, &mut say)).unwrap_or_default();
            notes.extend(sys.dnsmasq_counters().into_iter().map(|l| format!("{tag}: dnsmasq {l}")));
            Ok(Measured { metrics: to_metrics(&s), setup_s: sys.setup.as_secs_f64(), notes, line })
        }
    }
}
