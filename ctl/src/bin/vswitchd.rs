//! vswitchd: the daemon. Starts the data plane's workers, restores the saved state and serves
//! the API on a Unix socket until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use clap::Parser;
use vswitch_ctl::confine;
use vswitch_ctl::controller::{Controller, Nat};
use vswitch_ctl::dns::{Dns, DnsHandle};
use vswitch_ctl::leases::LeaseDb;
use vswitch_ctl::store::Store;
use vswitch_ctl::{server, DEFAULT_SOCKET, DEFAULT_STATE_DIR};
use vswitch_nat::slirp::{Engine, EngineLimits};
use vswitch_router::{Gateways, L3};
use vswitch_switch::{Dataplane, DataplaneConfig, Hooks, L3Handler, Mode, SlowPathHandler};

/// The vswitch daemon: a userspace virtual switch for containers.
#[derive(Debug, Parser)]
#[command(name = "vswitchd", version)]
struct Args {
    /// Unix socket of the API.
    #[arg(long, env = "VSWITCH_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Directory of the state store.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Worker threads (0 = one per CPU).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Do not pin workers to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// Benchmark mode: forward every frame to the other ports of its network with no
    /// switching logic (the ceiling of the port I/O).
    #[arg(long)]
    null_forwarder: bool,
    /// Where the embedded DNS finds the upstream servers of networks without --dns (followed
    /// when it changes).
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Flows the slirp engine carries at once (connection tracking's limit); new ones beyond
    /// are refused and counted.
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(1..=4_000_000))]
    nat_max_flows: u32,
    /// Flows one container address may have at once (outbound and through published ports).
    #[arg(long, default_value_t = 16_384, value_parser = clap::value_parser!(u32).range(1..=4_000_000))]
    nat_max_flows_per_endpoint: u32,
    /// Seconds an unanswered UDP flow lives without traffic (four times as long once answered).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    nat_udp_timeout: u32,
    /// KiB each TCP connection of the slirp engine buffers toward the container: the most in
    /// flight to it (the window it is offered is 256 KiB). Memory is taken as data reaches into
    /// the buffer, not up front; below 1024, bulk transfers wait for the container's ACKs.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(4..=65_536))]
    nat_tcp_buffer_kib: u32,
    /// Confine the daemon at start, as slirp4netns's --enable-sandbox does: its own mount
    /// namespace whose root holds only the state directory, the socket's directory, the
    /// --resolv-conf directory, /etc (read-only, /etc/netns writable), /run, /var/run/netns,
    /// /proc and /dev/net/tun; no capability but CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_NET_RAW,
    /// CAP_NET_BIND_SERVICE and CAP_DAC_OVERRIDE (not CAP_SYS_PTRACE: a sandbox named by PID
    /// then resolves only for a process with no capability beyond those).
    #[arg(long)]
    sandbox: bool,
    /// Allow only the system calls the daemon makes (a seccomp allow-list); any other fails
    /// with EPERM.
    #[arg(long)]
    seccomp: bool,
    /// Splice published ports' clients on the host's loopback into the container's namespace
    /// (TCP with splice(2), no TCP stack in between: 1.5x the throughput and 1.7x the connection
    /// rate; UDP from a socket there), where the service sees them as a client on its own
    /// loopback (127.0.0.1, ::1), as pasta's --host-lo-to-ns-lo does. Off by default: a service
    /// that trusts its loopback (an admin port, Redis's protected mode) would trust every local
    /// user of the host; without it they come from the network's gateway address, as with Docker.
    #[arg(long)]
    splice_loopback: bool,
}

fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some((name, args)) = vswitch_ctl::compat::personality(&argv) {
        // Callers log a personality's output as warnings: say only what matters.
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,netlink_packet_route=error"))
            .format_timestamp_millis()
            .init();
        std::process::exit(vswitch_ctl::compat::run(name, args));
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,netlink_packet_route=error"))
        .format_timestamp_millis()
        .init();
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("vswitchd: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    // First of all: confinement covers only the threads started after it.
    if args.sandbox {
        confine::enter_sandbox(&confine::Sandbox::vswitchd(&args.state_dir, &args.socket, &args.resolv_conf)?)?;
    }
    if args.seccomp {
        confine::enter_seccomp(confine::Profile::Daemon, &[])?;
    }
    // Both checks come before anything touches a device: a second daemon re-attaching the
    // first one's TAPs would steal a share of every container's traffic.
    server::check_socket_free(&args.socket)?;
    let store = Store::open(&args.state_dir)?;
    let gateways = Arc::new(Gateways::new());
    let cfg =
        DataplaneConfig { workers: args.workers, pin: !args.no_pin, mode: if args.null_forwarder { Mode::Null } else { Mode::Switch } };
    let l3 = Arc::new(L3::new());
    gateways.set_l3(l3.clone());
    let handler: Arc<dyn SlowPathHandler> = gateways.clone();
    let router: Arc<dyn L3Handler> = l3.clone();
    let dp = Arc::new(Dataplane::start(cfg, Hooks { slow: Some(handler), l3: Some(router), uplink: true })?);
    let leases = Arc::new(LeaseDb::open(&args.state_dir)?);
    gateways.set_leases(leases.clone());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).max_blocking_threads(8).enable_all().build()?;
    let dns = Dns::new(&args.resolv_conf, rt.handle().clone(), dp.slow_waker());
    gateways.set_dns(Arc::new(DnsHandle(dns.clone())));
    let uplink = dp.uplink().ok_or_else(|| anyhow::anyhow!("the data plane has no uplink"))?;
    let mut limits = EngineLimits {
        max_flows: args.nat_max_flows as usize,
        per_source: args.nat_max_flows_per_endpoint as usize,
        tcp_buffer: args.nat_tcp_buffer_kib as usize * 1024,
        ..Default::default()
    };
    limits.timeouts.udp_ms = u64::from(args.nat_udp_timeout) * 1000;
    limits.timeouts.udp_stream_ms = limits.timeouts.udp_ms * 4;
    let engine = Arc::new(Engine::start(uplink, limits)?);
    let ctl = Controller::start(store, dp.clone(), gateways, leases, l3, dns, Nat { engine, splice: args.splice_loopback })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ctl = Arc::new(Mutex::new(ctl));
    let socket = args.socket.clone();
    rt.block_on(async move {
        let reaper = ctl.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let c = reaper.clone();
                let _ = tokio::task::spawn_blocking(move || c.lock().reap()).await;
            }
        });
        log::info!(
            "vswitchd {} serving {} with {} worker(s){}; state in {}",
            env!("CARGO_PKG_VERSION"),
            args.socket.display(),
            dp.workers(),
            if args.null_forwarder { " in null-forwarder mode" } else { "" },
            args.state_dir.display()
        );
        server::serve(&args.socket, ctl, shutdown_signal()).await
    })?;
    let _ = std::fs::remove_file(&socket);
    log::info!("vswitchd stopped; endpoints stay in their sandboxes and are re-attached at the next start");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
