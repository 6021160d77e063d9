//! vswitch-compare: vswitch vs the Linux bridge vs vswitch's null forwarder (`--scenario l2`),
//! routed vswitch vs Linux kernel routing vs the null forwarder (`--scenario l3`), vswitch's
//! embedded DNS vs dnsmasq (`--scenario dns`), vswitch's slirp engine vs pasta and slirp4netns
//! (`--scenario nat`), or all of them (`--scenario all`): built, measured, torn down.
//!
//! For each MTU and each round, each system is built fresh in namespaces of its own, measured
//! with every workload, and torn down; the order of the systems rotates from round to round so
//! that none always runs first. Throughput (TCP, NAT in and out) runs at every MTU; UDP packet
//! rate, round trips, DNS, NAT request/response and connection rate at the first MTU only. Run
//! as root:
//!
//! ```text
//! cargo build --release -p vswitch-bench -p vswitch-ctl
//! sudo target/release/vswitch-compare --json results/compare.json
//! sudo target/release/vswitch-compare --scenario l3 --json results/compare-l3.json
//! sudo target/release/vswitch-compare --scenario dns --json results/compare-dns.json
//! sudo target/release/vswitch-compare --scenario nat --json results/compare-nat.json
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use vswitch_bench::dns::{self, DnsOptions, DnsSystem};
use vswitch_bench::harness::{pct, to_metrics};
use vswitch_bench::machine::{self, Machine};
use vswitch_bench::nat::{self, NatOptions, NatSystem};
use vswitch_bench::report::{Family, Report, Sample, Workload, DNS_WORKLOADS, NAT_WORKLOADS};
use vswitch_bench::systems::{self, DaemonOptions, Kind, Running};
use vswitch_bench::{cmd, harness, workloads, Result};

/// Compares vswitch with the Linux bridge and with vswitch's null forwarder, vswitch's routing
/// with Linux kernel routing (`--scenario l3`), vswitch's embedded DNS with dnsmasq (`--scenario
/// dns`), and vswitch's slirp engine with pasta and slirp4netns (`--scenario nat`), in network
/// namespaces it creates and removes itself.
#[derive(Debug, Parser)]
#[command(name = "vswitch-compare", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Which comparison: `l2` (bridge, vswitch, null: two namespaces on one network), `l3`
    /// (kernel-router, vswitch-routed, null: two namespaces on two networks routed by the
    /// gateway; the null forwarder cannot route, its L2 figure is the I/O ceiling), `dns`
    /// (dnsmasq, vswitch: queries for local names and cached upstream names), `nat` (vswitch,
    /// pasta, slirp4netns: a namespace to the host's loopback and back in through a published
    /// port), or `all`.
    #[arg(long, value_enum, default_value_t = Scenario::L2)]
    scenario: Scenario,
    /// Systems to measure (overrides --scenario).
    #[arg(long, value_enum, value_delimiter = ',')]
    systems: Option<Vec<Kind>>,
    /// Workloads to run (default: tcp,udp,rtt; with --scenario dns dns-local,dns-cached; with
    /// --scenario nat nat-out,nat-out-rev,portfwd-in,nat-rr,conn-rate; with all, every one).
    /// DNS workloads run on dnsmasq and vswitch, NAT workloads on vswitch, pasta and
    /// slirp4netns, the others on the rest.
    #[arg(long, value_enum, value_delimiter = ',')]
    workloads: Option<Vec<Workload>>,
    /// Link MTUs for TCP and NAT throughput; UDP, round trips, DNS, nat-rr and conn-rate run at the first.
    #[arg(long, value_delimiter = ',', default_values_t = [1500u32, 65520])]
    mtus: Vec<u32>,
    /// Rounds; each round measures every system once, in rotating order.
    #[arg(short = 'r', long, default_value_t = 3)]
    runs: usize,
    /// Seconds of each iperf3 TCP run (`iperf3 -t`), NAT ones too.
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
    /// Round trips per latency run (UDP rtt, and TCP nat-rr).
    #[arg(long, default_value_t = 20_000)]
    rtt_count: u64,
    /// Upper bound in seconds of each latency run.
    #[arg(long, default_value_t = 10)]
    rtt_time: u32,
    /// conn-rate: connections in flight (client threads on the host, server threads in the namespace).
    #[arg(long, default_value_t = 8)]
    conn_parallel: usize,
    /// conn-rate: seconds of each measured run (after 0.5 s of warm-up).
    #[arg(long, default_value_t = 5)]
    conn_time: u32,
    /// DNS: names of each kind (local; upstream), asked in turn.
    #[arg(long, default_value_t = 100)]
    dns_names: usize,
    /// DNS: sockets of the load generator.
    #[arg(long, default_value_t = 4)]
    dns_sockets: usize,
    /// DNS: queries in flight per socket.
    #[arg(long, default_value_t = 32)]
    dns_window: usize,
    /// DNS: seconds of each measured load (after 0.5 s of warm-up).
    #[arg(long, default_value_t = 5)]
    dns_time: u32,
    /// DNS: seconds of each latency run with one query in flight.
    #[arg(long, default_value_t = 2)]
    dns_latency_time: u32,
    /// DNS: milliseconds after which an unanswered query counts as lost.
    #[arg(long, default_value_t = 1000)]
    dns_timeout_ms: u64,
    /// DNS: skip the dnsperf cross-check (once per system and workload, in the first round,
    /// when dnsperf is installed).
    #[arg(long)]
    no_dnsperf: bool,
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
    Dns,
    Nat,
    All,
}

impl Scenario {
    fn systems(self) -> Vec<Kind> {
        match self {
            Scenario::L2 => vec![Kind::Bridge, Kind::Vswitch, Kind::Null],
            Scenario::L3 => vec![Kind::KernelRouter, Kind::VswitchRouted, Kind::Null],
            Scenario::Dns => vec![Kind::Dnsmasq, Kind::Vswitch],
            Scenario::Nat => vec![Kind::Vswitch, Kind::Pasta, Kind::Slirp4netns],
            Scenario::All => vec![
                Kind::Bridge,
                Kind::Vswitch,
                Kind::KernelRouter,
                Kind::VswitchRouted,
                Kind::Null,
                Kind::Dnsmasq,
                Kind::Pasta,
                Kind::Slirp4netns,
            ],
        }
    }

    fn workloads(self) -> Vec<Workload> {
        let net = [Workload::Tcp, Workload::Udp, Workload::Rtt];
        match self {
            Scenario::L2 | Scenario::L3 => net.to_vec(),
            Scenario::Dns => DNS_WORKLOADS.to_vec(),
            Scenario::Nat => NAT_WORKLOADS.to_vec(),
            Scenario::All => net.into_iter().chain(DNS_WORKLOADS).chain(NAT_WORKLOADS).collect(),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Remove what runs that were killed left behind: their vswitchd, dnsmasq, pasta,
    /// slirp4netns, ovsdb-server, ovs-vswitchd and iperf3 processes, namespaces (vsb<PID>-…), host veths (vsb<PID>h…),
    /// vswitchd's resolv.conf files in /etc/netns, and temporary directories (not those kept
    /// with --keep-logs).
    Cleanup,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Some(Command::Cleanup) => harness::cleanup("vswitch-compare"),
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

fn compare(cli: &Cli) -> Result<bool> {
    let systems = cli.systems.clone().unwrap_or_else(|| cli.scenario.systems());
    let all_workloads = cli.workloads.clone().unwrap_or_else(|| cli.scenario.workloads());
    let of = |f: Family| all_workloads.iter().copied().filter(|w| w.family() == f).collect::<Vec<Workload>>();
    let (net_workloads, dns_workloads, nat_workloads) = (of(Family::Net), of(Family::Dns), of(Family::Nat));
    // Each family's workloads run on the systems that take part in it: switching and routing on
    // those that forward frames, DNS on those that serve it, NAT on the slirp engines.
    let part = |f: Family, w: &[Workload]| systems.iter().copied().filter(|s| s.takes_part(f) && !w.is_empty()).collect::<Vec<Kind>>();
    let (net_systems, dns_systems) = (part(Family::Net, &net_workloads), part(Family::Dns, &dns_workloads));
    let mut nat_systems = part(Family::Nat, &nat_workloads);
    // Peers that are not installed are skipped, not fatal: the others are still worth measuring.
    let mut skipped = Vec::new();
    nat_systems.retain(|&s| match machine::missing_peer(s) {
        Some(package) => {
            let line = format!("{} skipped: not installed (Debian package {package})", s.as_str());
            eprintln!("note: {line}");
            skipped.push(line);
            false
        }
        None => true,
    });
    if net_systems.is_empty() && dns_systems.is_empty() && nat_systems.is_empty() {
        return Err(vswitch_bench::err(format!(
            "nothing to measure: no system of {:?} runs any of the workloads {:?} (DNS workloads: dnsmasq, vswitch; NAT \
             workloads: vswitch, pasta, slirp4netns){}",
            systems.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            all_workloads.iter().map(|w| w.as_str()).collect::<Vec<_>>(),
            if skipped.is_empty() { String::new() } else { format!("; {}", skipped.join("; ")) }
        )));
    }
    machine::check_prerequisites(!net_systems.is_empty(), !dns_systems.is_empty(), !nat_systems.is_empty())?;
    let left = harness::leftovers_line();
    if !left.is_empty() {
        eprintln!("note: killed runs left {left}; `vswitch-compare cleanup` removes them");
    }
    let bin_dir = match &cli.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?.parent().map(PathBuf::from).unwrap_or_default(),
    };
    let systems: Vec<Kind> =
        systems.into_iter().filter(|s| net_systems.contains(s) || dns_systems.contains(s) || nat_systems.contains(s)).collect();
    let uses_daemon = net_systems.iter().chain(&dns_systems).chain(&nat_systems).any(|s| s.uses_vswitchd());
    if uses_daemon {
        for b in ["vswitchd", "vswitchctl"] {
            if !bin_dir.join(b).is_file() {
                return Err(vswitch_bench::err(format!(
                    "{} not found: build it with `cargo build --release -p vswitch-ctl`, pass --bin-dir, or use --systems bridge,kernel-router,dnsmasq",
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
    let dns_opts = DnsOptions {
        names: cli.dns_names,
        sockets: cli.dns_sockets,
        window: cli.dns_window,
        secs: cli.dns_time,
        one_secs: cli.dns_latency_time,
        timeout: Duration::from_millis(cli.dns_timeout_ms),
        mtu: cli.mtus.first().copied().unwrap_or(1500),
    };
    let nat_opts = NatOptions {
        secs: cli.time,
        rr_count: cli.rtt_count,
        rr_secs: cli.rtt_time,
        conn_parallel: cli.conn_parallel.max(1),
        conn_secs: cli.conn_time,
    };
    print_machine(&machine);
    let config = json!({
        "systems": systems, "workloads": all_workloads, "mtus": cli.mtus, "runs": cli.runs,
        "tcp_secs": cli.time, "udp_secs": cli.udp_time, "udp_payload": cli.udp_size, "udp_pps": cli.udp_pps,
        "udp_batch": vswitch_bench::udp::BATCH, "rtt_count": cli.rtt_count, "rtt_max_secs": cli.rtt_time,
        "dns_names": cli.dns_names, "dns_sockets": cli.dns_sockets, "dns_window": cli.dns_window, "dns_secs": cli.dns_time,
        "dns_latency_secs": cli.dns_latency_time, "dns_timeout_ms": cli.dns_timeout_ms, "dnsperf": !cli.no_dnsperf,
        "conn_parallel": nat_opts.conn_parallel, "conn_secs": cli.conn_time, "skipped": skipped,
        "vswitchd_workers": workers, "vswitchd_args": cli.daemon_args, "vswitchd_own_netns": opts.own_netns,
        "bin_dir": bin_dir,
    });
    println!(
        "systems {:?}, workloads {:?}, MTUs {:?}, {} round(s); vswitchd --workers {workers}",
        systems.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        all_workloads.iter().map(|w| w.as_str()).collect::<Vec<_>>(),
        if net_systems.is_empty() && nat_systems.is_empty() { &cli.mtus[..cli.mtus.len().min(1)] } else { &cli.mtus[..] },
        cli.runs
    );
    if !dns_systems.is_empty() {
        println!(
            "DNS: {} local and {} upstream names; {} socket(s) × {} in flight for {} s (after 0.5 s of warm-up), then 1 in flight \
             for {} s; lost after {} ms",
            cli.dns_names, cli.dns_names, cli.dns_sockets, cli.dns_window, cli.dns_time, cli.dns_latency_time, cli.dns_timeout_ms
        );
    }
    println!();
    let mut report = Report {
        machine,
        config,
        systems: systems.clone(),
        mtus: cli.mtus.clone(),
        samples: Vec::new(),
        notes: skipped,
        errors: Vec::new(),
    };
    let started = Instant::now();
    for (mi, &mtu) in cli.mtus.iter().enumerate() {
        let workloads: Vec<Workload> = net_workloads.iter().copied().filter(|w| *w == Workload::Tcp || mi == 0).collect();
        if workloads.is_empty() || net_systems.is_empty() {
            continue;
        }
        for round in 0..cli.runs {
            let n = net_systems.len();
            for k in 0..n {
                let system = net_systems[(round + k) % n];
                let tag = format!("[mtu {mtu} round {}/{}] {}", round + 1, cli.runs, system.as_str());
                match systems::start(system, mtu, false, &opts) {
                    Ok(running) => measure(cli, &mut report, running, round, &workloads, &tag),
                    Err(e) => {
                        eprintln!("{tag}: setup failed: {e}");
                        report.errors.push(format!("{tag}: setup failed: {e}"));
                    }
                }
            }
        }
    }
    if !dns_systems.is_empty() {
        let dnsperf = !cli.no_dnsperf && cmd::which("dnsperf").is_some();
        for round in 0..cli.runs {
            let n = dns_systems.len();
            for k in 0..n {
                let system = dns_systems[(round + k) % n];
                let tag = format!("[dns round {}/{}] {}", round + 1, cli.runs, system.as_str());
                match dns::start(system, &opts, &dns_opts) {
                    Ok(sys) => measure_dns(&mut report, sys, round, &dns_workloads, &dns_opts, dnsperf && round == 0, &tag),
                    Err(e) => {
                        eprintln!("{tag}: setup failed: {e}");
                        report.errors.push(format!("{tag}: setup failed: {e}"));
                    }
                }
            }
        }
    }
    if !nat_systems.is_empty() {
        for (mi, &mtu) in cli.mtus.iter().enumerate() {
            let workloads: Vec<Workload> = nat_workloads.iter().copied().filter(|w| w.every_mtu() || mi == 0).collect();
            if workloads.is_empty() {
                continue;
            }
            for round in 0..cli.runs {
                let n = nat_systems.len();
                for k in 0..n {
                    let system = nat_systems[(round + k) % n];
                    let tag = format!("[nat mtu {mtu} round {}/{}] {}", round + 1, cli.runs, system.as_str());
                    match nat::start(system, &opts, mtu) {
                        Ok(sys) => measure_nat(&mut report, sys, round, &workloads, &nat_opts, &tag),
                        Err(e) => {
                            eprintln!("{tag}: setup failed: {e}");
                            report.errors.push(format!("{tag}: setup failed: {e}"));
                        }
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
    println!(
        "tools: {}; {}; {}; {}; {}; vswitchd: {}",
        m.iperf3,
        m.dnsmasq.as_deref().unwrap_or("dnsmasq missing"),
        m.dnsperf.as_deref().unwrap_or("dnsperf missing"),
        m.pasta.as_deref().unwrap_or("pasta missing"),
        m.slirp4netns.as_deref().unwrap_or("slirp4netns missing"),
        m.vswitchd.as_deref().unwrap_or("not used / unknown")
    );
    println!("date: {}", m.date_utc);
}

/// Runs every workload on one built system, then tears it down (on return, by drop).
fn measure(cli: &Cli, report: &mut Report, mut running: Running, round: usize, workloads: &[Workload], tag: &str) {
    eprintln!("{tag}: ready in {:.2} s ({})", running.setup.as_secs_f64(), running.namespaces().join(" "));
    let fwd = running.forwarder_pid();
    for &w in workloads {
        let res = match w {
            Workload::Tcp => workloads::tcp(&running.pair, cli.time, 1, fwd).map(|s| {
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
            // Filtered out before: they run in measure_dns and measure_nat.
            w => Err(vswitch_bench::err(format!("{} runs in its own comparison", w.as_str()))),
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
        report.notes.extend(harness::finish_daemon(d, tag, &mut |l| eprintln!("{l}")));
    }
}

/// Runs the DNS workloads on one built system, then tears it down (on return, by drop).
fn measure_dns(report: &mut Report, mut sys: DnsSystem, round: usize, workloads: &[Workload], o: &DnsOptions, dnsperf: bool, tag: &str) {
    let link = sys.host_link().map_or_else(String::new, |l| format!("; host link {l}"));
    eprintln!("{tag}: ready in {:.2} s ({}{link})", sys.setup.as_secs_f64(), sys.namespaces().join(" "));
    let mtu = o.mtu;
    for &w in workloads {
        match dns::run(&sys, w, o, dnsperf) {
            Ok(s) => {
                eprintln!(
                    "{tag}: {} {:.1} kqps{}, p50 {:.0} µs, p99 {:.0} µs; 1 in flight p50 {:.1} µs, p99 {:.1} µs; \
                     {} lost, {} errors, {} strays; server cpu {}, client cpu {:.0}%, machine cpu {:.0}% (before: {:.0}%)",
                    w.as_str(),
                    s.kqps,
                    s.dnsperf_kqps.map_or_else(String::new, |d| format!(" (dnsperf {d:.1} kqps, {} lost)", s.dnsperf_lost.unwrap_or(0.0))),
                    s.p50_us,
                    s.p99_us,
                    s.one_p50_us,
                    s.one_p99_us,
                    s.lost,
                    s.errors,
                    s.strays,
                    pct(s.srv_cpu_pct),
                    s.client_cpu_pct,
                    s.vm_cpu_pct,
                    s.bg_cpu_pct
                );
                report.samples.push(Sample { system: sys.kind, mtu, round, workload: w, metrics: to_metrics(&s) });
            }
            Err(e) => {
                eprintln!("{tag}: {} failed: {e}", w.as_str());
                report.errors.push(format!("{tag}: {}: {e}", w.as_str()));
            }
        }
    }
    if let Some(d) = sys.daemon.as_mut() {
        report.notes.extend(harness::finish_daemon(d, tag, &mut |l| eprintln!("{l}")));
    } else {
        for line in sys.dnsmasq_counters() {
            eprintln!("{tag}: dnsmasq {line}");
            report.notes.push(format!("{tag}: dnsmasq {line}"));
        }
    }
}

/// Runs the NAT workloads on one built system, then tears it down (on return, by drop).
fn measure_nat(report: &mut Report, mut sys: NatSystem, round: usize, workloads: &[Workload], o: &NatOptions, tag: &str) {
    let port = match &sys.published {
        Ok(p) => format!("127.0.0.1:{p} published to {}", nat::CONTAINER_PORT),
        Err(e) => format!("no published port: {e}"),
    };
    eprintln!(
        "{tag}: ready in {:.2} s ({}; container {} reaches the host's loopback at {}; {port})",
        sys.setup.as_secs_f64(),
        sys.namespaces().join(" "),
        sys.addr,
        sys.host_addr
    );
    for &w in workloads {
        if w.needs_published_port() {
            if let Err(why) = &sys.published {
                let line = format!("{tag}: {} skipped: {why}", w.as_str());
                eprintln!("{line}");
                report.notes.push(line);
                continue;
            }
        }
        let res = match w {
            Workload::NatOut | Workload::NatOutRev | Workload::PortfwdIn | Workload::PortfwdInRev => {
                nat::throughput(&sys, w, o.secs).map(|s| {
                    eprintln!(
                        "{tag}: {} {:.2} Gbit/s (best second {:.2}, {} stalled), {} retransmits, fwd cpu {}, machine cpu {:.0}% (before: \
                     {:.0}%)",
                        w.as_str(),
                        s.tcp.gbps,
                        s.peak_gbps,
                        s.stalled_s,
                        s.tcp.retransmits,
                        pct(s.tcp.fwd_cpu_pct),
                        s.tcp.vm_cpu_pct,
                        s.bg_cpu_pct
                    );
                    to_metrics(&s)
                })
            }
            Workload::NatRr => nat::request_response(&sys, o).map(|s| {
                eprintln!(
                    "{tag}: nat-rr p50 {:.1} µs, p99 {:.1} µs, avg {:.1} µs ({} round trips; connect {:.0} µs), fwd cpu {}, machine cpu \
                     {:.0}% (before: {:.0}%)",
                    s.p50_us,
                    s.p99_us,
                    s.avg_us,
                    s.count,
                    s.connect_us,
                    pct(s.fwd_cpu_pct),
                    s.vm_cpu_pct,
                    s.bg_cpu_pct
                );
                to_metrics(&s)
            }),
            Workload::ConnRate => nat::connection_rate(&sys, o).map(|s| {
                let first = s.first_error.as_deref().map_or_else(String::new, |e| format!(" (first failure: {e})"));
                eprintln!(
                    "{tag}: conn-rate {:.0} conn/s ({} parallel), p50 {:.0} µs, p99 {:.0} µs, {} failed{first}, fwd cpu {}, machine \
                     cpu {:.0}% (before: {:.0}%)",
                    s.conn_per_s,
                    s.parallel,
                    s.p50_us,
                    s.p99_us,
                    s.failed,
                    pct(s.fwd_cpu_pct),
                    s.vm_cpu_pct,
                    s.bg_cpu_pct
                );
                if !first.is_empty() {
                    report.notes.push(format!("{tag}: conn-rate: {} failed{first}", s.failed));
                }
                to_metrics(&s)
            }),
            other => Err(vswitch_bench::err(format!("{} is not a NAT workload", other.as_str()))),
        };
        match res {
            Ok(metrics) => report.samples.push(Sample { system: sys.kind, mtu: sys.mtu, round, workload: w, metrics }),
            Err(e) => {
                eprintln!("{tag}: {} failed: {e}", w.as_str());
                report.errors.push(format!("{tag}: {}: {e}", w.as_str()));
            }
        }
    }
    if let Some(why) = sys.forwarder_exited() {
        eprintln!("{tag}: {why}");
        report.errors.push(format!("{tag}: {why}"));
    }
    if let Some(d) = sys.daemon.as_mut() {
        report.notes.extend(harness::finish_daemon(d, tag, &mut |l| eprintln!("{l}")));
    }
}
