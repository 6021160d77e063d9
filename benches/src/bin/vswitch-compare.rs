//! vswitch-compare: vswitch vs the Linux bridge vs vswitch's null forwarder (`--scenario l2`),
//! routed vswitch vs Linux kernel routing vs the null forwarder (`--scenario l3`), or all five
//! (`--scenario all`): built, measured, torn down.
//!
//! For each MTU and each round, each system is built fresh in namespaces of its own, measured
//! with every workload, and torn down; the order of the systems rotates from round to round so
//! that none always runs first. TCP runs at every MTU; UDP packet rate and round trips at the
//! first MTU only. Run as root:
//!
//! ```text
//! cargo build --release -p vswitch-bench -p vswitch-ctl
//! sudo target/release/vswitch-compare --json results/compare.json
//! sudo target/release/vswitch-compare --scenario l3 --json results/compare-l3.json
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use vswitch_bench::machine::{self, Machine};
use vswitch_bench::report::{Report, Sample, Workload};
use vswitch_bench::systems::{self, DaemonOptions, Kind, Running};
use vswitch_bench::{cmd, netns, workloads, Result};

/// Compares vswitch with the Linux bridge and with vswitch's null forwarder, and vswitch's
/// routing with Linux kernel routing (`--scenario l3`), in network namespaces it creates and
/// removes itself.
#[derive(Debug, Parser)]
#[command(name = "vswitch-compare", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Which comparison: `l2` (bridge, vswitch, null: two namespaces on one network), `l3`
    /// (kernel-router, vswitch-routed, null: two namespaces on two networks routed by the
    /// gateway; the null forwarder cannot route, its L2 figure is the I/O ceiling), or `all`.
    #[arg(long, value_enum, default_value_t = Scenario::L2)]
    scenario: Scenario,
    /// Systems to measure (overrides --scenario).
    #[arg(long, value_enum, value_delimiter = ',')]
    systems: Option<Vec<Kind>>,
    /// Workloads to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Workload::Tcp, Workload::Udp, Workload::Rtt])]
    workloads: Vec<Workload>,
    /// Link MTUs for TCP; UDP and round trips run at the first.
    #[arg(long, value_delimiter = ',', default_values_t = [1500u32, 65520])]
    mtus: Vec<u32>,
    /// Rounds; each round measures every system once, in rotating order.
    #[arg(short = 'r', long, default_value_t = 3)]
    runs: usize,
    /// Seconds of each iperf3 TCP run (`iperf3 -t`).
    #[arg(short = 't', long, default_value_t = 5)]
    time: u32,
    /// Seconds of each UDP packet-rate run.
    #[arg(long, default_value_t = 5)]
    udp_time: u32,
    /// UDP payload bytes for the packet rate and the round trips.
    #[arg(long, default_value_t = 64)]
    udp_size: usize,
    /// Datagrams per second the UDP sender offers; 0 = as fast as it can.
    #[arg(long, default_value_t = 0)]
    udp_pps: u64,
    /// Round trips per latency run.
    #[arg(long, default_value_t = 20_000)]
    rtt_count: u64,
    /// Upper bound in seconds of each latency run.
    #[arg(long, default_value_t = 10)]
    rtt_time: u32,
    /// vswitchd worker threads (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// Directory holding vswitchd and vswitchctl (default: this program's own directory).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Extra argument for vswitchd (repeatable), e.g. `--daemon-arg=--no-pin`.
    #[arg(long = "daemon-arg", allow_hyphen_values = true)]
    daemon_args: Vec<String>,
    /// Run vswitchd in the caller's network namespace instead of one of its own.
    #[arg(long)]
    daemon_in_caller_netns: bool,
    /// Keep each vswitchd's state directory and log (in $TMPDIR) for a post-mortem.
    #[arg(long)]
    keep_logs: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    L2,
    L3,
    All,
}

impl Scenario {
    fn systems(self) -> Vec<Kind> {
        match self {
            Scenario::L2 => vec![Kind::Bridge, Kind::Vswitch, Kind::Null],
            Scenario::L3 => vec![Kind::KernelRouter, Kind::VswitchRouted, Kind::Null],
            Scenario::All => vec![Kind::Bridge, Kind::Vswitch, Kind::KernelRouter, Kind::VswitchRouted, Kind::Null],
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Delete namespaces left behind by runs that were killed (named vsb<PID>-…, PID gone).
    Cleanup,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Some(Command::Cleanup) => cleanup(),
        None => compare(&cli),
    };
    match res {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("vswitch-compare: {e}");
            ExitCode::from(2)
        }
    }
}

fn cleanup() -> Result<bool> {
    let left = netns::leftovers();
    if left.is_empty() {
        println!("nothing to clean up");
    }
    let mut ok = true;
    for ns in left {
        match cmd::run("ip", &["netns", "del", &ns]) {
            Ok(_) => println!("deleted namespace {ns}"),
            Err(e) => {
                eprintln!("{e}");
                ok = false;
            }
        }
    }
    Ok(ok)
}

fn compare(cli: &Cli) -> Result<bool> {
    machine::check_prerequisites()?;
    let left = netns::leftovers();
    if !left.is_empty() {
        eprintln!("note: {} namespace(s) from killed runs remain ({}); `vswitch-compare cleanup` removes them", left.len(), left.join(" "));
    }
    let bin_dir = match &cli.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?.parent().map(PathBuf::from).unwrap_or_default(),
    };
    let systems = cli.systems.clone().unwrap_or_else(|| cli.scenario.systems());
    let uses_daemon = systems.iter().any(|s| !s.is_kernel());
    if uses_daemon {
        for b in ["vswitchd", "vswitchctl"] {
            if !bin_dir.join(b).is_file() {
                return Err(vswitch_bench::err(format!(
                    "{} not found: build it with `cargo build --release -p vswitch-ctl`, pass --bin-dir, or use --systems bridge,kernel-router",
                    bin_dir.join(b).display()
                )));
            }
        }
    }
    let machine = Machine::probe(uses_daemon.then(|| bin_dir.join("vswitchd")).as_deref());
    let workers = cli.workers.unwrap_or(machine.nproc);
    let opts = DaemonOptions {
        bin_dir: bin_dir.clone(),
        workers,
        own_netns: !cli.daemon_in_caller_netns,
        keep: cli.keep_logs,
        extra_args: cli.daemon_args.clone(),
    };
    print_machine(&machine);
    let config = json!({
        "systems": systems, "workloads": cli.workloads, "mtus": cli.mtus, "runs": cli.runs,
        "tcp_secs": cli.time, "udp_secs": cli.udp_time, "udp_payload": cli.udp_size, "udp_pps": cli.udp_pps,
        "udp_batch": vswitch_bench::udp::BATCH, "rtt_count": cli.rtt_count, "rtt_max_secs": cli.rtt_time,
        "vswitchd_workers": workers, "vswitchd_args": cli.daemon_args, "vswitchd_own_netns": opts.own_netns,
        "bin_dir": bin_dir,
    });
    println!(
        "systems {:?}, workloads {:?}, MTUs {:?}, {} round(s); vswitchd --workers {workers}\n",
        systems.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        cli.workloads,
        cli.mtus,
        cli.runs
    );
    let mut report = Report {
        machine,
        config,
        systems: systems.clone(),
        mtus: cli.mtus.clone(),
        samples: Vec::new(),
        notes: Vec::new(),
        errors: Vec::new(),
    };
    let started = Instant::now();
    for (mi, &mtu) in cli.mtus.iter().enumerate() {
        let workloads: Vec<Workload> = cli.workloads.iter().copied().filter(|w| *w == Workload::Tcp || mi == 0).collect();
        if workloads.is_empty() {
            continue;
        }
        for round in 0..cli.runs {
            let n = systems.len();
            for k in 0..n {
                let system = systems[(round + k) % n];
                let tag = format!("[mtu {mtu} round {}/{}] {}", round + 1, cli.runs, system.as_str());
                match systems::start(system, mtu, &opts) {
                    Ok(running) => measure(cli, &mut report, running, round, &workloads, &tag),
                    Err(e) => {
                        eprintln!("{tag}: setup failed: {e}");
                        report.errors.push(format!("{tag}: setup failed: {e}"));
                    }
                }
            }
        }
    }
    println!("\n## Results ({:.0} s)\n", started.elapsed().as_secs_f64());
    println!("{}", report.tables());
    println!("{}", report.ratios());
    if report.pairs().contains(&(Kind::VswitchRouted, Kind::Null)) {
        println!(
            "vswitch-routed / null: the null forwarder cannot route; its figure is two namespaces on one \
             network, the ceiling of the port I/O that routed frames go through too.\n"
        );
    }
    if !report.errors.is_empty() {
        println!("Errors:");
        for e in &report.errors {
            println!("- {e}");
        }
    }
    if let Some(path) = &cli.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&report.to_json())?)?;
        println!("wrote {}", path.display());
    }
    Ok(report.errors.is_empty())
}

fn print_machine(m: &Machine) {
    println!("machine: {} CPU(s), {}, {:.1} GiB; kernel {}", m.nproc, m.cpu, m.mem_gib, m.kernel);
    println!("tools: {}; vswitchd: {}", m.iperf3, m.vswitchd.as_deref().unwrap_or("not used / unknown"));
    println!("date: {}", m.date_utc);
}

/// Runs every workload on one built system, then tears it down (on return, by drop).
fn measure(cli: &Cli, report: &mut Report, mut running: Running, round: usize, workloads: &[Workload], tag: &str) {
    eprintln!("{tag}: ready in {:.2} s ({})", running.setup.as_secs_f64(), running.namespaces().join(" "));
    let fwd = running.forwarder_pid();
    for &w in workloads {
        let res = match w {
            Workload::Tcp => workloads::tcp(&running.pair, cli.time, fwd).map(|s| {
                eprintln!(
                    "{tag}: tcp {:.2} Gbit/s, {} retransmits, fwd cpu {}, machine cpu {:.0}%",
                    s.gbps,
                    s.retransmits,
                    pct(s.fwd_cpu_pct),
                    s.vm_cpu_pct
                );
                to_metrics(&s)
            }),
            Workload::Udp => workloads::udp_rate(&running.pair, cli.udp_time, cli.udp_size, cli.udp_pps, fwd).map(|s| {
                eprintln!(
                    "{tag}: udp tx {:.0} kpps, rx {:.0} kpps, loss {:.1}% (a eth0 tx_dropped {}, b eth0 rx_dropped {}, \
                     b socket RcvbufErrors {}), fwd cpu {}, machine cpu {:.0}%",
                    s.tx_pps / 1e3,
                    s.rx_pps / 1e3,
                    s.loss_pct,
                    s.a_tx_dropped,
                    s.b_rx_dropped,
                    s.b_rcvbuf_errors,
                    pct(s.fwd_cpu_pct),
                    s.vm_cpu_pct
                );
                let mut m = to_metrics(&s);
                m.insert("tx_kpps".into(), s.tx_pps / 1e3);
                m.insert("rx_kpps".into(), s.rx_pps / 1e3);
                m.remove("tx_pps");
                m.remove("rx_pps");
                m
            }),
            Workload::Rtt => workloads::rtt(&running.pair, cli.udp_size, cli.rtt_count, cli.rtt_time).map(|s| {
                eprintln!(
                    "{tag}: rtt p50 {:.1} µs, p99 {:.1} µs, avg {:.1} µs ({} round trips, {} lost)",
                    s.p50_us, s.p99_us, s.avg_us, s.count, s.lost
                );
                to_metrics(&s)
            }),
        };
        match res {
            Ok(metrics) => report.samples.push(Sample { system: running.kind, mtu: running.mtu, round, workload: w, metrics }),
            Err(e) => {
                eprintln!("{tag}: {w:?} failed: {e}");
                report.errors.push(format!("{tag}: {w:?}: {e}"));
            }
        }
    }
    if let Some(d) = running.daemon.as_mut() {
        // What the switch itself counted: drops explain losses.
        match d.ctl_json(&["stats"]) {
            Ok(stats) => {
                let line = drops_line(&stats);
                if !line.is_empty() {
                    eprintln!("{tag}: vswitchd counted {line}");
                }
                eprintln!("{tag}: vswitchd ports: {}", traffic_line(&stats));
                report.notes.push(format!("{tag}: stats {}", compact(&stats)));
            }
            Err(e) => report.notes.push(format!("{tag}: `vswitchctl stats` failed: {e}")),
        }
        let (took, killed) = d.stop();
        let errors: Vec<String> = d.log().lines().filter(|l| l.contains(" ERROR ") || l.contains(" WARN ")).map(str::to_string).collect();
        if killed || took > Duration::from_secs(2) {
            report.notes.push(format!(
                "{tag}: vswitchd took {:.1} s to stop{}",
                took.as_secs_f64(),
                if killed { " and was killed" } else { "" }
            ));
        }
        if !errors.is_empty() {
            eprintln!("{tag}: vswitchd logged {} warning(s)/error(s), first: {}", errors.len(), errors[0]);
            report.notes.push(format!("{tag}: vswitchd log: {}", errors.join(" | ")));
        }
    }
}

fn pct(p: Option<f64>) -> String {
    p.map_or_else(|| "kernel".to_string(), |p| format!("{p:.0}%"))
}

/// The numeric fields of a sample, by name.
fn to_metrics<T: serde::Serialize>(s: &T) -> std::collections::BTreeMap<String, f64> {
    match serde_json::to_value(s) {
        Ok(Value::Object(o)) => o.into_iter().filter_map(|(k, v)| Some((k, v.as_f64()?))).collect(),
        _ => Default::default(),
    }
}

/// Non-zero drop counters of every port in a `vswitchctl stats` answer.
fn drops_line(stats: &Value) -> String {
    let mut parts = Vec::new();
    for p in stats.get("Ports").and_then(Value::as_array).into_iter().flatten() {
        let name = p.get("Interface").and_then(Value::as_str).unwrap_or("?");
        let drops: Vec<String> = p
            .get("Drops")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| v.as_u64().filter(|n| *n > 0).map(|n| format!("{k}={n}")))
            .collect();
        if !drops.is_empty() {
            parts.push(format!("{name}: {}", drops.join(" ")));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("drops: {}", parts.join("; "))
    }
}

/// Frames in and out of every port in a `vswitchctl stats` answer, and how they were handled.
fn traffic_line(stats: &Value) -> String {
    let n = |p: &Value, k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
    let parts: Vec<String> = stats
        .get("Ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{} rx {} ({} B/frame) tx {} flooded {} punted {}",
                p.get("Interface").and_then(Value::as_str).unwrap_or("?"),
                n(p, "RxPackets"),
                n(p, "RxBytes") / n(p, "RxPackets").max(1),
                n(p, "TxPackets"),
                n(p, "Flooded"),
                n(p, "Punted")
            )
        })
        .collect();
    parts.join("; ")
}

/// One-line JSON.
fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
