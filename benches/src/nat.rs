//! The NAT comparison: vswitch's slirp engine against pasta and slirp4netns, out to the host's loopback and in through a published port.
//!
//! Each system connects one container namespace `c` to "the host": a namespace `d` of its own
//! (the caller's with --daemon-in-caller-netns), where the slirp process runs and its host
//! sockets live, so the host's loopback the container reaches is `d`'s. Built, measured, torn
//! down on drop:
//!
//! - `vswitch`: vswitchd `--splice-loopback` in `d` (as Debian 12's pasta splices loopback
//!   clients; `VSWITCH_BENCH_NAT_FRAMED=1` leaves it out); `network create --subnet 10.77.0.0/24
//!   -o host-loopback=true -o com.docker.network.driver.mtu=MTU benchnet`; `network connect -p
//!   127.0.0.1:HP:5202 benchnet c`. The gateway (10.77.0.1) is the host's loopback.
//! - `pasta`: `pasta --config-net -f --runas 0 -4 -I eth0 -m MTU -a 10.76.0.2 -n 24 -g
//!   10.76.0.254 -t 127.0.0.1/HP:5202 -u none -T none -U none --netns /run/netns/c`, run in
//!   `d`. The gateway is mapped to the host's loopback (pasta's default; no --no-map-gw). pasta
//!   copies its configuration from the host's default-route interface and will not start
//!   without one: `d` gets a stub, a veth whose two ends are both in `d` (`ext0`
//!   10.76.0.1/24, default via 10.76.0.254), so nothing sent there leaves `d`.
//! - `slirp4netns`: `slirp4netns --configure --mtu=MTU --ready-fd=R --exit-fd=E --api-socket S
//!   --enable-sandbox --enable-seccomp --netns-type=path /run/netns/c tap0`, run in `d` (as
//!   podman and rootlesskit run it, but with the host loopback left reachable) under `unshare
//!   --mount --propagation slave` (its sandbox must not touch our mounts); the port is
//!   published with the API socket's `add_hostfwd` (127.0.0.1:HP to 5202). 10.0.2.2 is the
//!   host's loopback. The exit fd is a pipe this process holds: if it dies, slirp4netns ends.
//! - Through rootlesskit (`VSWITCH_BENCH_ROOTLESSKIT=PATH`): pasta, slirp4netns and the two
//!   drop-ins are started by rootlesskit as an unprivileged user, as rootless Docker runs them
//!   ([`crate::rootlesskit`]); vswitchd itself is not a rootlesskit driver.
//!
//! Workloads (the servers and clients are ours or iperf3; traffic only between `c` and `d`'s
//! loopback): `nat-out` (iperf3 client in `c` to the host address, server on 127.0.0.1 of
//! `d`), `nat-out-rev` (the same with `-R`: data from the host), `nat-rr` ([`tcpload`]'s 1-byte
//! ping-pong, same path), `portfwd-in` (iperf3 server in `c` on 5202, client in `d` to
//! 127.0.0.1:HP), `portfwd-in-rev` (the same with `-R`: data from the namespace), `conn-rate`
//! ([`tcpload`]'s connection loop, same path). A system that cannot publish a port (a
//! vswitchctl without `-p`) skips the last three.
//!
//! pasta, slirp4netns and iperf3 are given paths in this run's temporary directory (pid file,
//! API socket, log file): that is how `vswitch-compare cleanup` finds them after a killed run.
//! pasta also quits by itself when its namespace is deleted, slirp4netns when this process dies.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::cmd::{self, Proc, TempDir};
use crate::cpu::Probe;
use crate::netns::{self, Netns};
use crate::report::Workload;
use crate::systems::{self, Daemon, DaemonOptions, Kind, NETWORK, SUBNET};
use crate::tcpload::{self, ConnConfig};
use crate::workloads::{self, Iperf, TcpSample};
use crate::{dns, err, rootlesskit, Result};

/// The port served inside the container and published on the host's 127.0.0.1.
pub const CONTAINER_PORT: u16 = 5202;
/// pasta's container address and gateway (the host's loopback), and the stub uplink's address in `d`.
const PASTA_ADDR: Ipv4Addr = Ipv4Addr::new(10, 76, 0, 2);
const PASTA_GW: Ipv4Addr = Ipv4Addr::new(10, 76, 0, 254);
const PASTA_STUB: &str = "10.76.0.1/24";
/// slirp4netns's fixed addresses (`--configure`, default `--cidr`): the container's and the host's loopback.
const SLIRP_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
const SLIRP_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// How long a system may take to come up.
const READY: Duration = Duration::from_secs(10);
/// Untimed round trips before `nat-rr` measures, and connections before `conn-rate` does.
const RR_WARMUP: Duration = Duration::from_millis(200);
const CONN_WARMUP: Duration = Duration::from_millis(500);
/// A TCP call that takes longer fails `nat-rr`; a connection attempt that does counts as
/// failed in `conn-rate` (long enough for one SYN retransmission, 1 s, to still succeed).
const RR_TIMEOUT: Duration = Duration::from_secs(1);
const CONN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the machine's CPU is sampled, the system under test idle, before each workload.
const BACKGROUND: Duration = Duration::from_millis(500);

/// How the NAT workloads run.
#[derive(Debug, Clone)]
pub struct NatOptions {
    /// Seconds of each iperf3 run.
    pub secs: u32,
    /// `nat-rr`: round trips, and an upper bound in seconds.
    pub rr_count: u64,
    pub rr_secs: u32,
    /// `conn-rate`: connections in flight (client threads, and server threads), and seconds.
    pub conn_parallel: usize,
    pub conn_secs: u32,
}

/// A system of the NAT comparison, built and ready for traffic.
#[derive(Debug)]
pub struct NatSystem {
    pub kind: Kind,
    pub mtu: u32,
    /// The container namespace.
    pub container: String,
    /// The container's address, and the address it reaches the host's loopback at.
    pub addr: Ipv4Addr,
    pub host_addr: Ipv4Addr,
    /// The host port (on 127.0.0.1 of the host namespace) published to [`CONTAINER_PORT`], or
    /// why there is none.
    pub published: std::result::Result<u16, String>,
    /// How long building it took.
    pub setup: Duration,
    /// The published port appears only once the container binds it (rootlesskit's implicit
    /// port driver: pasta's -t auto).
    pub implicit_ports: bool,
    /// The namespace of the host side (`d`), none for the caller's.
    pub(crate) host: Option<String>,
    /// The forwarder's PID when it is not `forwarder`'s (rootlesskit started it).
    pub(crate) fwd_pid: Option<u32>,
    // Field order is drop order: the processes stop before their namespaces go, the user
    // that ran them goes after them, and the directory holding their logs goes last.
    pub daemon: Option<Daemon>,
    pub(crate) forwarder: Option<Proc>,
    /// slirp4netns's --exit-fd, held only to be closed: that ends slirp4netns (and so does this process dying).
    pub(crate) _exit_fd: Option<OwnedFd>,
    pub(crate) namespaces: Vec<Netns>,
    pub(crate) _user: Option<rootlesskit::BenchUser>,
    pub(crate) dir: TempDir,
}

impl NatSystem {
    /// A system whose forwarder is `proc` (pasta, slirp4netns, rootlesskit): the container's
    /// namespace and the host side's (none: the caller's), the container's address and the one
    /// it reaches the host's loopback at. Nothing published yet.
    pub(crate) fn forwarded(
        kind: Kind,
        mtu: u32,
        (c, d): (Netns, Option<Netns>),
        (addr, host_addr): (Ipv4Addr, Ipv4Addr),
        proc: Proc,
        dir: TempDir,
    ) -> Self {
        let host = d.as_ref().map(|n| n.name().to_string());
        let container = c.name().to_string();
        NatSystem {
            kind,
            mtu,
            container,
            addr,
            host_addr,
            published: Err("not yet".into()),
            setup: Duration::ZERO,
            implicit_ports: false,
            host,
            fwd_pid: None,
            daemon: None,
            forwarder: Some(proc),
            _exit_fd: None,
            namespaces: std::iter::once(c).chain(d).collect(),
            _user: None,
            dir,
        }
    }

    /// The process doing the NAT: vswitchd, pasta or slirp4netns.
    pub fn forwarder_pid(&self) -> Option<u32> {
        self.fwd_pid.or(self.daemon.as_ref().map(Daemon::pid)).or(self.forwarder.as_ref().map(Proc::pid))
    }

    /// The namespaces, for messages.
    pub fn namespaces(&self) -> Vec<&str> {
        self.namespaces.iter().map(Netns::name).collect()
    }

    /// The host side's namespace, none for the caller's.
    pub fn host_ns(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// Whether pasta or slirp4netns has exited (vswitchd: see its own checks), and how.
    pub fn forwarder_exited(&mut self) -> Option<String> {
        let f = self.forwarder.as_mut()?;
        let s = f.exited()?;
        Some(format!("{} exited ({s}); its output:\n{}", f.name(), tail(&self.dir.path().join(log_name(self.kind)), 10)))
    }
}

/// The file a peer's stdout and stderr go to.
pub(crate) fn log_name(kind: Kind) -> String {
    format!("{}.out", kind.as_str())
}

/// The last `lines` lines of a file.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Builds `kind` (vswitch, pasta or slirp4netns) for the NAT comparison, its links at `mtu`.
pub fn start(kind: Kind, daemon: &DaemonOptions, mtu: u32) -> Result<NatSystem> {
    let t = Instant::now();
    let mut s = match kind {
        _ if rootlesskit::wanted().is_some() => rootlesskit::start(kind, daemon, mtu)?,
        Kind::Vswitch => vswitch(daemon, mtu)?,
        Kind::Pasta | Kind::VswitchPasta => pasta(kind, daemon, mtu)?,
        Kind::Slirp4netns | Kind::VswitchSlirp4netns => slirp4netns(kind, daemon, mtu)?,
        other => return Err(err(format!("{} takes no part in the NAT comparison (vswitch, pasta, slirp4netns)", other.as_str()))),
    };
    s.setup = t.elapsed();
    Ok(s)
}

/// A TCP port nothing listens on at 127.0.0.1 in `ns` (a race with other programs is possible,
/// and would fail the setup, not mislead it).
pub(crate) fn free_tcp_port(ns: Option<&str>) -> Result<u16> {
    netns::run_in(ns, "port", || Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()))
}

/// `d` when the host side runs in a namespace of its own.
pub(crate) fn host_namespace(opts: &DaemonOptions) -> Result<Option<Netns>> {
    if opts.own_netns {
        Ok(Some(Netns::create("d")?))
    } else {
        Ok(None)
    }
}

fn vswitch(opts: &DaemonOptions, mtu: u32) -> Result<NatSystem> {
    let dir = cmd::temp_dir(opts.keep)?;
    let c = Netns::create("c")?;
    let d = host_namespace(opts)?;
    let host = d.as_ref().map(|n| n.name().to_string());
    // Debian 12's pasta splices connections from the host's loopback into the namespace: so
    // does vswitchd with --splice-loopback, unless VSWITCH_BENCH_NAT_FRAMED=1 asks for its
    // default, framed path.
    let mut opts = opts.clone();
    if std::env::var_os("VSWITCH_BENCH_NAT_FRAMED").is_none_or(|v| v != "1") {
        opts.extra_args.push("--splice-loopback".into());
    }
    let opts = &opts;
    let daemon = systems::start_daemon(Kind::Vswitch, d.as_ref(), opts)?;
    let setup = || -> Result<(Ipv4Addr, Ipv4Addr, std::result::Result<u16, String>)> {
        let mtu_opt = format!("com.docker.network.driver.mtu={mtu}");
        daemon.ctl(&["network", "create", "--subnet", SUBNET, "-o", "host-loopback=true", "-o", &mtu_opt, NETWORK])?;
        let hp = free_tcp_port(host.as_deref())?;
        let publish = format!("127.0.0.1:{hp}:{CONTAINER_PORT}");
        let (addr, published) = match systems::connect(&daemon, NETWORK, &c, &["-p", &publish]) {
            Ok(ip) => (ip, Ok(hp)),
            // A vswitchctl or vswitchd without published ports: the outbound workloads still run.
            Err(e) => (systems::connect(&daemon, NETWORK, &c, &[])?, Err(format!("`network connect -p {publish}` failed: {e}"))),
        };
        let inspect = daemon.ctl_json(&["network", "inspect", NETWORK])?;
        let gw = dns::gateway(&inspect).ok_or_else(|| err(format!("no IPv4 gateway in `network inspect {NETWORK}`")))?;
        Ok((addr, gw, published))
    };
    let (addr, host_addr, published) = match setup() {
        Ok(x) => x,
        Err(e) => return Err(err(format!("{e}\n--- vswitchd log (last lines) ---\n{}", daemon.log_tail(20)))),
    };
    let mut namespaces = vec![c];
    namespaces.extend(d);
    Ok(NatSystem {
        kind: Kind::Vswitch,
        mtu,
        container: namespaces[0].name().to_string(),
        addr,
        host_addr,
        published,
        setup: Duration::ZERO,
        implicit_ports: false,
        host,
        fwd_pid: None,
        daemon: Some(daemon),
        forwarder: None,
        _exit_fd: None,
        namespaces,
        _user: None,
        dir,
    })
}

/// The program and leading arguments that run `kind`: pasta or slirp4netns themselves, or the
/// vswitchd binary in that personality.
pub(crate) fn program(kind: Kind, opts: &DaemonOptions) -> Result<Vec<String>> {
    match kind.personality() {
        Some(p) => Ok(vec![systems::path_str(&opts.bin_dir.join("vswitchd"))?, p.to_string()]),
        None => Ok(vec![kind.as_str().to_string()]),
    }
}

fn pasta(kind: Kind, opts: &DaemonOptions, mtu: u32) -> Result<NatSystem> {
    let dir = cmd::temp_dir(opts.keep)?;
    let c = Netns::create("c")?;
    let d = host_namespace(opts)?;
    if let Some(d) = &d {
        pasta_stub(d)?;
    }
    let host = d.as_ref().map(|n| n.name().to_string());
    let hp = free_tcp_port(host.as_deref())?;
    let (log, pidfile) = (dir.path().join("pasta.log"), dir.path().join("pasta.pid"));
    let netns_path = format!("{}/{}", netns::NETNS_DIR, c.name());
    let (m, a, g, fwd) = (mtu.to_string(), PASTA_ADDR.to_string(), PASTA_GW.to_string(), format!("127.0.0.1/{hp}:{CONTAINER_PORT}"));
    let (log_s, pid_s) = (systems::path_str(&log)?, systems::path_str(&pidfile)?);
    let mut argv: Vec<String> = program(kind, opts)?;
    argv.extend(["--config-net", "-f", "-q"].map(String::from));
    if kind.personality().is_none() {
        // As root pasta would switch to nobody, who cannot enter the namespace: --runas 0. Its
        // log goes to a file; vswitch's pasta never changes user and logs to stderr (the .out file).
        argv.extend(["--runas".into(), "0".into(), "-l".into(), log_s]);
    } else {
        // Debian 12's pasta (2023) splices connections from the host's loopback into the
        // namespace's loopback unasked; pastas since 2024_10_30, and vswitch's, do it with this.
        argv.push("--host-lo-to-ns-lo".into());
    }
    let rest = [
        "-4",
        "-I",
        "eth0",
        "-m",
        &m,
        "-a",
        &a,
        "-n",
        "24",
        "-g",
        &g,
        "-t",
        &fwd,
        "-u",
        "none",
        "-T",
        "none",
        "-U",
        "none",
        "-P",
        &pid_s,
        "--netns",
        &netns_path,
    ];
    argv.extend(rest.map(String::from));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = dir.path().join(log_name(kind));
    let proc = Proc::spawn(netns::command(host.as_deref(), argv[0], &argv[1..]), kind.as_str(), Some(&out), Duration::from_secs(3))?;
    let mut sys = NatSystem::forwarded(kind, mtu, (c, d), (PASTA_ADDR, PASTA_GW), proc, dir);
    sys.published = Ok(hp);
    wait_ready(&mut sys, "eth0", Some(hp))?;
    Ok(sys)
}

/// pasta takes its template from the default-route interface: in `d`, a veth with both ends there.
pub(crate) fn pasta_stub(d: &Netns) -> Result<()> {
    d.ip(&["link", "add", "ext0", "type", "veth", "peer", "name", "ext1"])?;
    d.ip(&["addr", "add", PASTA_STUB, "dev", "ext0"])?;
    d.ip(&["link", "set", "ext1", "up"])?;
    d.ip(&["link", "set", "ext0", "up"])?;
    d.ip(&["route", "add", "default", "via", &PASTA_GW.to_string(), "dev", "ext0"])?;
    Ok(())
}

fn slirp4netns(kind: Kind, opts: &DaemonOptions, mtu: u32) -> Result<NatSystem> {
    let dir = cmd::temp_dir(opts.keep)?;
    let c = Netns::create("c")?;
    let d = host_namespace(opts)?;
    let host = d.as_ref().map(|n| n.name().to_string());
    let api = dir.path().join("slirp4netns.sock");
    let (ready_r, ready_w) = pipe()?;
    let (exit_r, exit_w) = pipe()?;
    // The child gets the write end of one pipe and the read end of the other, by number.
    inheritable(&ready_w)?;
    inheritable(&exit_r)?;
    let netns_path = format!("{}/{}", netns::NETNS_DIR, c.name());
    // slirp4netns's sandbox changes mounts in a mount namespace of its own that still shares
    // propagation with ours: started in the host's, it unmounts the /run/netns bind mounts
    // (`ip netns exec` isolates it; with --daemon-in-caller-netns nothing would). A slave copy
    // of the mounts takes nothing back.
    let mut args = vec!["--mount".to_string(), "--propagation".to_string(), "slave".to_string()];
    args.extend(program(kind, opts)?);
    args.extend([
        "--configure".to_string(),
        format!("--mtu={mtu}"),
        format!("--ready-fd={}", ready_w.as_raw_fd()),
        format!("--exit-fd={}", exit_r.as_raw_fd()),
        "--api-socket".to_string(),
        systems::path_str(&api)?,
        "--enable-sandbox".to_string(),
        "--enable-seccomp".to_string(),
        "--netns-type=path".to_string(),
        netns_path,
        "tap0".to_string(),
    ]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = dir.path().join(log_name(kind));
    let spawned = Proc::spawn(netns::command(host.as_deref(), "unshare", &argv), kind.as_str(), Some(&out), Duration::from_secs(3));
    // Our copies: the child holds its own now; the ready pipe reads EOF if the child dies.
    drop(ready_w);
    drop(exit_r);
    let proc = spawned?;
    let mut sys = NatSystem::forwarded(kind, mtu, (c, d), (SLIRP_ADDR, SLIRP_HOST), proc, dir);
    sys._exit_fd = Some(exit_w);
    if let Err(e) = wait_fd(&ready_r, READY) {
        let why = sys.forwarder_exited().unwrap_or_default();
        return Err(err(format!("slirp4netns not ready: {e} {why}")));
    }
    wait_ready(&mut sys, "tap0", None)?;
    let hp = free_tcp_port(sys.host.as_deref())?;
    let req = json!({ "execute": "add_hostfwd",
        "arguments": { "proto": "tcp", "host_addr": "127.0.0.1", "host_port": hp, "guest_port": CONTAINER_PORT } });
    slirp_api(&api, &req)?;
    sys.published = Ok(hp);
    Ok(sys)
}

/// A pipe, both ends close-on-exec: (read, write).
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(err(format!("pipe2: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: pipe2 succeeded: both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Lets `fd` pass to the children spawned after this (until it is dropped). Only the setup of
/// one system spawns at a time, so no other child inherits it by accident.
fn inheritable(fd: &OwnedFd) -> Result<()> {
    // SAFETY: F_SETFD on a descriptor `fd` owns; it only clears the close-on-exec flag.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
        return Err(err(format!("fcntl(F_SETFD): {}", std::io::Error::last_os_error())));
    }
    Ok(())
}

/// Waits for a byte on `fd` (slirp4netns writes "1" to its --ready-fd once the namespace is
/// configured); EOF means the writer is gone.
fn wait_fd(fd: &OwnedFd, within: Duration) -> Result<()> {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = within.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `p` is one valid pollfd on the stack, and the count passed is 1.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    if n == 0 {
        return Err(err(format!("nothing on the ready fd within {} s", within.as_secs())));
    }
    if n < 0 {
        return Err(err(format!("poll: {}", std::io::Error::last_os_error())));
    }
    let mut b = [0u8; 1];
    // SAFETY: reads at most one byte into `b`, from a descriptor `fd` owns; poll said it is readable.
    let r = unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
    if r == 1 {
        Ok(())
    } else {
        Err(err("the ready fd closed without a byte"))
    }
}

/// One request on slirp4netns's API socket; its answer, or an error if it holds one.
pub(crate) fn slirp_api(sock: &Path, req: &Value) -> Result<Value> {
    let mut s = UnixStream::connect(sock).map_err(|e| err(format!("slirp4netns API {}: {e}", sock.display())))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(req.to_string().as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let v: Value = serde_json::from_str(&text)?;
    if v.get("error").is_some() || v.get("return").is_none() {
        return Err(err(format!("slirp4netns API answered {text} to {req}")));
    }
    Ok(v)
}

/// Waits until the container's `dev` has the system's address and MTU and a default route,
/// and, when given, something listens on 127.0.0.1:`port` on the host side (the published port).
pub(crate) fn wait_ready(sys: &mut NatSystem, dev: &str, port: Option<u16>) -> Result<()> {
    let deadline = Instant::now() + READY;
    loop {
        if let Some(why) = sys.forwarder_exited() {
            return Err(err(why));
        }
        let last = match configured(sys, dev, port) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(err(format!("{} not ready within {} s: {last}", sys.kind.as_str(), READY.as_secs())));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn configured(sys: &NatSystem, dev: &str, port: Option<u16>) -> Result<()> {
    let c = sys.container.as_str();
    let link: Value = serde_json::from_str(&cmd::run("ip", &["-n", c, "-j", "-4", "addr", "show", "dev", dev])?)?;
    let has_addr = link.pointer("/0/addr_info").and_then(Value::as_array).into_iter().flatten().any(|a| a["local"] == sys.addr.to_string());
    let mtu = link.pointer("/0/mtu").and_then(Value::as_u64);
    if !has_addr || mtu != Some(u64::from(sys.mtu)) {
        return Err(err(format!(
            "{dev} in {c}: address {} {}, MTU {mtu:?} (want {})",
            sys.addr,
            if has_addr { "set" } else { "missing" },
            sys.mtu
        )));
    }
    if !cmd::run("ip", &["-n", c, "-4", "route", "show", "default"])?.contains(&sys.host_addr.to_string()) {
        return Err(err(format!("no default route via {} in {c}", sys.host_addr)));
    }
    if let Some(p) = port {
        if !host_listens(sys, p)? {
            return Err(err(format!("nothing listens on 127.0.0.1:{p} yet")));
        }
    }
    Ok(())
}

/// Waits up to 5 s for [`host_listens`].
fn wait_host_listens(sys: &NatSystem, port: u16) -> Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !host_listens(sys, port)? {
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(true)
}

/// Whether something listens on 127.0.0.1:`port` on the host side.
fn host_listens(sys: &NatSystem, port: u16) -> Result<bool> {
    let ss = cmd::checked(netns::command(sys.host.as_deref(), "ss", &["-Hltn"]), Duration::from_secs(5))?;
    let want = format!("127.0.0.1:{port}");
    // `State Recv-Q Send-Q Local Peer`: the local address is the fourth column.
    Ok(ss.lines().filter_map(|l| l.split_whitespace().nth(3)).any(|local| local == want || local == format!("0.0.0.0:{port}")))
}

/// One throughput run: iperf3 with a time and the machine's CPU before it.
#[derive(Debug, Clone, Serialize)]
pub struct NatTcpSample {
    #[serde(flatten)]
    pub tcp: TcpSample,
    /// The best 1-s interval, and the intervals under a tenth of it: a path that stalls (no
    /// progress until a retransmission timeout) shows a good peak and a poor mean.
    pub peak_gbps: f64,
    pub stalled_s: f64,
    /// The machine's CPU in the half second before the run, the system idle: other people's work.
    pub bg_cpu_pct: f64,
}

/// (best interval, intervals under a tenth of it) of iperf3's 1-s intervals.
fn peak_and_stalls(intervals: &[f64]) -> (f64, f64) {
    let peak = intervals.iter().copied().fold(0.0, f64::max);
    (peak, intervals.iter().filter(|&&g| g < peak / 10.0).count() as f64)
}

/// The machine's CPU over [`BACKGROUND`], with nothing of ours running.
fn background() -> f64 {
    let p = Probe::start(None);
    std::thread::sleep(BACKGROUND);
    p.finish().machine
}

/// Runs a throughput workload (`nat-out`, `nat-out-rev`, `portfwd-in`, `portfwd-in-rev`) for `secs` seconds.
pub fn throughput(sys: &NatSystem, w: Workload, secs: u32) -> Result<NatTcpSample> {
    let dir = sys.dir.path();
    let run = match w {
        Workload::NatOut | Workload::NatOutRev => {
            let port = free_tcp_port(sys.host_ns())?;
            Iperf {
                server_ns: sys.host_ns(),
                bind: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                port,
                client_ns: Some(&sys.container),
                target: SocketAddr::from((sys.host_addr, port)),
                reverse: w == Workload::NatOutRev,
                mark: Some(dir),
                streams: 1,
                await_target: false,
            }
        }
        Workload::PortfwdIn | Workload::PortfwdInRev => Iperf {
            server_ns: Some(&sys.container),
            // Every address: pasta delivers forwarded connections to the namespace's loopback.
            bind: None,
            port: CONTAINER_PORT,
            client_ns: sys.host_ns(),
            target: SocketAddr::from((Ipv4Addr::LOCALHOST, published(sys)?)),
            reverse: w == Workload::PortfwdInRev,
            mark: Some(dir),
            streams: 1,
            await_target: sys.implicit_ports,
        },
        other => return Err(err(format!("{} is not a NAT throughput workload", other.as_str()))),
    };
    let bg_cpu_pct = background();
    let tcp = workloads::iperf3(&run, secs, sys.forwarder_pid())?;
    let (peak_gbps, stalled_s) = peak_and_stalls(&tcp.intervals_gbps);
    Ok(NatTcpSample { tcp, peak_gbps, stalled_s, bg_cpu_pct })
}

/// The published host port, or why the system has none.
fn published(sys: &NatSystem) -> Result<u16> {
    sys.published.clone().map_err(err)
}

/// One `nat-rr` run.
#[derive(Debug, Clone, Serialize)]
pub struct RrSample {
    pub p50_us: f64,
    pub p99_us: f64,
    pub avg_us: f64,
    pub min_us: f64,
    pub max_us: f64,
    pub count: u64,
    /// The handshake through the NAT (one sample per run).
    pub connect_us: f64,
    pub fwd_cpu_pct: Option<f64>,
    pub vm_cpu_pct: f64,
    pub bg_cpu_pct: f64,
}

/// 1-byte ping-pong from the container to an echo server on the host's loopback.
pub fn request_response(sys: &NatSystem, o: &NatOptions) -> Result<RrSample> {
    let bg_cpu_pct = background();
    let stop = Arc::new(AtomicBool::new(false));
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let hard = Instant::now() + Duration::from_secs(u64::from(o.rr_secs) + 20);
    let s = stop.clone();
    let server = netns::spawn_maybe_in(sys.host_ns(), "tcp-echo", move || {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let _ = port_tx.send(l.local_addr()?.port());
        Ok(tcpload::echo_server(&l, &s, hard)?)
    })?;
    let res = match port_rx.recv_timeout(Duration::from_secs(5)) {
        Ok(port) => {
            let dst = SocketAddr::from((sys.host_addr, port));
            let (count, max) = (o.rr_count, Duration::from_secs(u64::from(o.rr_secs)));
            let probe = Probe::start(sys.forwarder_pid());
            let r = netns::spawn_in(&sys.container, "tcp-ping", move || Ok(tcpload::ping_pong(dst, count, RR_WARMUP, max, RR_TIMEOUT)?))
                .and_then(|h| netns::join(h, "tcp ping"));
            r.map(|r| (r, probe.finish()))
        }
        Err(_) => Err(err("the TCP echo server did not start")),
    };
    stop.store(true, Ordering::Release);
    netns::join(server, "tcp echo")?;
    let (r, usage) = res?;
    let mut v = r.rtt_ns;
    if v.is_empty() {
        return Err(err("no round trip completed"));
    }
    v.sort_unstable();
    Ok(RrSample {
        p50_us: tcpload::quantile_us(&v, 0.5),
        p99_us: tcpload::quantile_us(&v, 0.99),
        avg_us: v.iter().sum::<u64>() as f64 / v.len() as f64 / 1e3,
        min_us: v[0] as f64 / 1e3,
        max_us: v[v.len() - 1] as f64 / 1e3,
        count: v.len() as u64,
        connect_us: r.connect_ns as f64 / 1e3,
        fwd_cpu_pct: usage.process,
        vm_cpu_pct: usage.machine,
        bg_cpu_pct,
    })
}

/// One `conn-rate` run.
#[derive(Debug, Clone, Serialize)]
pub struct ConnSample {
    pub conn_per_s: f64,
    pub completed: u64,
    pub failed: u64,
    /// Connect to reply, per connection.
    pub p50_us: f64,
    pub p99_us: f64,
    pub parallel: u64,
    /// Connections the server in the container saw through (more than completed: warm-up).
    pub served: u64,
    pub fwd_cpu_pct: Option<f64>,
    pub vm_cpu_pct: f64,
    pub bg_cpu_pct: f64,
    /// The first failure, if any (not a number: reported, not tabulated).
    #[serde(skip)]
    pub first_error: Option<String>,
}

/// New connections per second from the host's loopback through the published port to a
/// 1-byte server in the container.
pub fn connection_rate(sys: &NatSystem, o: &NatOptions) -> Result<ConnSample> {
    let hp = published(sys)?;
    let bg_cpu_pct = background();
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let hard = Instant::now() + Duration::from_secs(u64::from(o.conn_secs) + 30);
    let (s, threads) = (stop.clone(), o.conn_parallel);
    let server = netns::spawn_in(&sys.container, "tcp-reply", move || {
        // Every address: pasta delivers forwarded connections to the namespace's loopback.
        let l = TcpListener::bind(("0.0.0.0", CONTAINER_PORT))?;
        let _ = ready_tx.send(());
        Ok(tcpload::reply_server(l, threads, s, hard)?)
    })?;
    let res = match ready_rx.recv_timeout(Duration::from_secs(5)) {
        Ok(()) if sys.implicit_ports && !wait_host_listens(sys, hp)? => Err(err(format!("port {hp} was not published within 5 s"))),
        Ok(()) => {
            let cfg = ConnConfig {
                dst: SocketAddr::from((Ipv4Addr::LOCALHOST, hp)),
                parallel: o.conn_parallel,
                warmup: CONN_WARMUP,
                duration: Duration::from_secs(u64::from(o.conn_secs)),
                timeout: CONN_TIMEOUT,
            };
            let probe = Probe::start(sys.forwarder_pid());
            // The whole warm-up and window; CPU is a rate, the warm-up's share does not skew it.
            netns::run_in(sys.host_ns(), "conn-rate", move || Ok(tcpload::conn_rate(&cfg)?)).map(|r| (r, probe.finish()))
        }
        Err(_) => Err(err("the TCP reply server did not start")),
    };
    stop.store(true, Ordering::Release);
    let served = netns::join(server, "tcp reply")?;
    let (r, usage) = res?;
    if r.completed == 0 {
        return Err(err(format!("no connection completed ({} failed; first: {})", r.failed, r.first_error.as_deref().unwrap_or("none"))));
    }
    let mut v = r.latency_ns.clone();
    v.sort_unstable();
    Ok(ConnSample {
        conn_per_s: r.per_sec(),
        completed: r.completed,
        failed: r.failed,
        p50_us: tcpload::quantile_us(&v, 0.5),
        p99_us: tcpload::quantile_us(&v, 0.99),
        parallel: o.conn_parallel as u64,
        served,
        fwd_cpu_pct: usage.process,
        vm_cpu_pct: usage.machine,
        bg_cpu_pct,
        first_error: r.first_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_are_intervals_under_a_tenth_of_the_best() {
        assert_eq!(peak_and_stalls(&[13.2, 0.01, 6.1, 1.9, 0.01]), (13.2, 2.0));
        assert_eq!(peak_and_stalls(&[5.0, 5.0]), (5.0, 0.0));
        assert_eq!(peak_and_stalls(&[]), (0.0, 0.0));
    }

    #[test]
    fn pipe_ready_byte_and_eof() {
        let (r, w) = pipe().unwrap();
        // SAFETY: writes one byte from a static buffer to a descriptor `w` owns.
        assert_eq!(unsafe { libc::write(w.as_raw_fd(), b"1".as_ptr().cast(), 1) }, 1);
        assert!(wait_fd(&r, Duration::from_secs(1)).is_ok());
        drop(w);
        assert!(wait_fd(&r, Duration::from_secs(1)).is_err(), "EOF is not ready");
        let (r, _w) = pipe().unwrap();
        assert!(wait_fd(&r, Duration::from_millis(10)).is_err(), "nothing written: a timeout");
    }

    #[test]
    fn pipes_are_close_on_exec_until_made_inheritable() {
        let (r, _w) = pipe().unwrap();
        // SAFETY: F_GETFD on a descriptor `r` owns.
        let flags = |fd: &OwnedFd| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags(&r) & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        inheritable(&r).unwrap();
        assert_eq!(flags(&r) & libc::FD_CLOEXEC, 0);
    }
}
