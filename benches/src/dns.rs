//! The DNS comparison: vswitch's embedded DNS against dnsmasq, for local names and for cached upstream names.
//!
//! Each system is built with what both workloads need, measured, and torn down on drop:
//!
//! - `dnsmasq`: a client namespace `c` and a server namespace `s` joined by a veth (`c`'s
//!   `eth0` 10.78.0.2/30, `s`'s 10.78.0.1/30); in `s` a dnsmasq answers the local names
//!   (`--host-record=NAME,IP`). For upstream names, an upstream dnsmasq on 127.0.0.1:PORT of the
//!   host namespace (`--address=/up.test/10.9.9.9 --local-ttl=3600`) and, in front of it, a
//!   caching dnsmasq in the host namespace too (`--server=127.0.0.1#PORT`: it must reach that
//!   127.0.0.1), listening on the host end of a second veth whose other end is `c`'s `up0`.
//!   That link's /30 is the first of 10.77.254.0/24 that no host address or route overlaps; it
//!   is created here and goes with the link. Nothing is routed: `c` has no default route, only
//!   its two /30s.
//! - `vswitch`: vswitchd (in a namespace `d` of its own unless --daemon-in-caller-netns), the
//!   same upstream dnsmasq on 127.0.0.1:PORT of vswitchd's namespace (where vswitchd forwards
//!   from), and a network created with `--dns 127.0.0.1:PORT`. The local names are endpoints'
//!   `--name` and `--alias`es, [`NAMES_PER_ENDPOINT`] per endpoint namespace `eN`; `c` is
//!   connected as `client` and asks the gateway for both kinds of names.
//!
//! Local names are `svcN`, upstream names `nN.up.test`, asked as A queries, each answered with
//! one address. Before a workload every name is asked once from `c` and the answer checked (the
//! address, and for upstream names a TTL that outlives the run), which also fills both
//! forwarders' caches: under load every upstream name is a cache hit. The load itself comes
//! from [`crate::dnsload`], on a thread inside `c`; the same window is offered to both systems.
//!
//! dnsmasq runs with `-k --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces
//! --listen-address=… --user=root --group=root --pid-file=`, and logs to a file in this run's
//! temporary directory: that path in its command line is how `vswitch-compare cleanup` finds
//! the dnsmasq processes of a killed run.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::cmd::{self, Proc, TempDir};
use crate::cpu::Probe;
use crate::dnsload::{self, Answer, LoadConfig, LoadResult};
use crate::netns::{self, Netns};
use crate::report::Workload;
use crate::systems::{self, Daemon, DaemonOptions, Kind, NETWORK, SUBNET};
use crate::{err, Result};

/// The upstream's zone: every name under it is answered with [`UPSTREAM_ANSWER`].
pub const UPSTREAM_DOMAIN: &str = "up.test";
pub const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(10, 9, 9, 9);
/// The TTL of the upstream's answers (`--local-ttl`): longer than any run, so nothing expires.
const UPSTREAM_TTL: u32 = 3600;
/// Local names per endpoint namespace on vswitch: its `--name` and the rest `--alias`es.
pub const NAMES_PER_ENDPOINT: usize = 10;
/// Most names of each kind (dnsmasq takes the local ones on its command line).
pub const MAX_NAMES: usize = 2000;
/// The link between the client and dnsmasq's server namespace (not in the host namespace).
const LINK_SERVER: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
const LINK_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
/// The /30s tried, in order, for the link between the client and the host namespace.
const HOST_NETS: Ipv4Addr = Ipv4Addr::new(10, 77, 254, 0);
const HOST_NETS_COUNT: u8 = 64;
/// Host-namespace veths are named `vsb<pid>h<n>`: [`leftover_links`] finds a killed run's.
const HOST_LINK_MARK: char = 'h';
const DNS_PORT: u16 = 53;
/// How long a server may take to answer its first query after it starts.
const READY: Duration = Duration::from_secs(5);
/// Warm-up of each load run before its measured window.
const WARMUP: Duration = Duration::from_millis(500);
/// Upper bound on one load run's queries, whatever its duration.
const MAX_QUERIES: u64 = 50_000_000;
/// How long the machine's CPU is sampled, the system under test idle, before each load.
const BACKGROUND: Duration = Duration::from_millis(500);

/// How the DNS workloads run.
#[derive(Debug, Clone)]
pub struct DnsOptions {
    /// Names of each kind (local; upstream).
    pub names: usize,
    /// The load generator's sockets, and queries in flight on each.
    pub sockets: usize,
    pub window: usize,
    /// Seconds of the measured load.
    pub secs: u32,
    /// Seconds of the latency run with one query in flight.
    pub one_secs: u32,
    pub timeout: Duration,
    /// MTU of the client's links (vswitch's network, dnsmasq's veths).
    pub mtu: u32,
}

/// A dnsmasq this program started, by role (`local`, `upstream`, `forwarder`).
#[derive(Debug)]
struct Dnsmasq {
    role: &'static str,
    proc: Proc,
    /// Its log (`--log-facility`), and its stdout and stderr.
    log: PathBuf,
    out: PathBuf,
}

impl Dnsmasq {
    /// Starts `dnsmasq` with the common options and `args`, in `ns` (else the caller's namespace).
    fn start(role: &'static str, ns: Option<&str>, dir: &Path, args: &[String]) -> Result<Self> {
        let prog = cmd::which("dnsmasq").ok_or_else(|| err("dnsmasq not found: apt-get install dnsmasq-base"))?;
        let prog = systems::path_str(&prog)?;
        let log = dir.join(format!("dnsmasq-{role}.log"));
        let out = dir.join(format!("dnsmasq-{role}.out"));
        let mut argv: Vec<String> =
            ["-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces", "--user=root", "--group=root", "--pid-file="]
                .iter()
                .map(|s| s.to_string())
                .collect();
        argv.push(format!("--log-facility={}", systems::path_str(&log)?));
        argv.extend(args.iter().cloned());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let command = match ns {
            Some(ns) => netns::exec_in(ns, &prog, &argv),
            None => {
                let mut c = Command::new(&prog);
                c.args(&argv);
                c
            }
        };
        let proc = Proc::spawn(command, &format!("dnsmasq ({role})"), Some(&out), Duration::from_secs(3))?;
        Ok(Self { role, proc, log, out })
    }

    /// Waits until it answers `name` at `server` (asked from `ns`); the answer.
    fn ready(&mut self, ns: Option<&str>, server: SocketAddr, name: &str) -> Result<Answer> {
        match ask(ns, server, vec![name.to_string()], READY) {
            Ok(mut a) => Ok(a.remove(0)),
            Err(e) => {
                let status = self.proc.exited().map_or_else(|| "still running".to_string(), |s| format!("exited: {s}"));
                Err(err(format!("dnsmasq ({}) at {server}: {e} ({status}); its output:\n{}", self.role, self.tail(10))))
            }
        }
    }

    fn tail(&self, lines: usize) -> String {
        let mut all: Vec<String> = Vec::new();
        for p in [&self.out, &self.log] {
            all.extend(std::fs::read_to_string(p).unwrap_or_default().lines().map(str::to_string));
        }
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// What dnsmasq counted, from the statistics it logs on SIGUSR1 (cache insertions, queries
    /// forwarded and answered locally, per upstream server).
    fn counters(&self) -> String {
        let before = std::fs::read_to_string(&self.log).map_or(0, |t| t.len());
        let pid = self.proc.pid().to_string();
        let _ = Command::new("kill").args(["-USR1", &pid]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut text = String::new();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.len() > before && text[before..].contains("queries forwarded") {
                break;
            }
        }
        let new = text.get(before..).unwrap_or_default();
        let lines: Vec<&str> = new
            .lines()
            .filter(|l| l.contains("queries") || l.contains("cache size"))
            // "Nov 23 03:22:01 dnsmasq[123]: queries forwarded 100, …": the message only.
            .map(|l| l.split_once("]: ").map_or(l, |(_, m)| m))
            .collect();
        if lines.is_empty() {
            "no statistics logged".to_string()
        } else {
            lines.join("; ")
        }
    }
}

/// The veth between the client namespace and the host namespace: its host end, with an
/// address of a /30 no host address or route overlapped. Deleted on drop (with its peer).
#[derive(Debug)]
struct HostLink {
    name: String,
    /// Its address and prefix, for messages.
    addr: String,
}

impl HostLink {
    /// Creates it, `up0` in `client`; (link, host address, client address).
    fn create(client: &Netns, mtu: u32) -> Result<(Self, Ipv4Addr, Ipv4Addr)> {
        let net = free_host_net()?;
        let [a, b, c, d] = net.octets();
        let (host, peer) = (Ipv4Addr::new(a, b, c, d + 1), Ipv4Addr::new(a, b, c, d + 2));
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{}{}{HOST_LINK_MARK}{n}", netns::PREFIX, std::process::id());
        let m = mtu.to_string();
        cmd::run("ip", &["link", "add", &name, "mtu", &m, "type", "veth", "peer", "name", "up0", "mtu", &m, "netns", client.name()])?;
        let link = Self { name, addr: format!("{host}/30") };
        // No IPv6 on the host end: no link-local address, no router solicitations sent from it.
        let _ = cmd::run("sysctl", &["-qw", &format!("net.ipv6.conf.{}.disable_ipv6=1", link.name)]);
        cmd::run("ip", &["addr", "add", &format!("{host}/30"), "dev", &link.name])?;
        cmd::run("ip", &["link", "set", &link.name, "up"])?;
        client.ip(&["addr", "add", &format!("{peer}/30"), "dev", "up0"])?;
        client.ip(&["link", "set", "up0", "up"])?;
        Ok((link, host, peer))
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        if Path::new("/sys/class/net").join(&self.name).exists() {
            if let Err(e) = cmd::run("ip", &["link", "del", &self.name]) {
                eprintln!("warning: cannot delete link {}: {e}", self.name);
            }
        }
    }
}

/// Host-namespace veths of runs whose process is gone (`vsb<pid>h<n>`). Deleting the client
/// namespace deletes them too; one is left only if a run was killed between the two steps.
pub fn leftover_links() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| {
            let Some(rest) = name.strip_prefix(netns::PREFIX) else { return false };
            let Some((pid, n)) = rest.split_once(HOST_LINK_MARK) else { return false };
            n.parse::<u32>().is_ok() && pid.parse::<u32>().is_ok_and(netns::gone)
        })
        .collect()
}

/// The first /30 of [`HOST_NETS`] that no address or route of the host namespace overlaps.
fn free_host_net() -> Result<Ipv4Addr> {
    let taken = host_prefixes()?;
    (0..HOST_NETS_COUNT)
        .map(|i| {
            let [a, b, c, _] = HOST_NETS.octets();
            Ipv4Addr::new(a, b, c, i * 4)
        })
        .find(|net| !taken.iter().any(|&(p, len)| overlaps(*net, 30, p, len)))
        .ok_or_else(|| err(format!("every /30 of {HOST_NETS}/24 overlaps an address or route of this namespace")))
}

/// Every IPv4 prefix of the host namespace: its addresses' subnets and its routes, in every
/// table (the default route aside: a /30 of its own is more specific).
fn host_prefixes() -> Result<Vec<(Ipv4Addr, u8)>> {
    let mut v = Vec::new();
    let addrs: Value = serde_json::from_str(&cmd::run("ip", &["-j", "-4", "addr", "show"])?)?;
    for info in addrs.as_array().into_iter().flatten().filter_map(|l| l.get("addr_info")?.as_array()).flatten() {
        if let (Some(ip), Some(len)) = (info.get("local").and_then(Value::as_str), info.get("prefixlen").and_then(Value::as_u64)) {
            if let Ok(ip) = ip.parse() {
                v.push((ip, len.min(32) as u8));
            }
        }
    }
    let routes: Value = serde_json::from_str(&cmd::run("ip", &["-j", "-4", "route", "show", "table", "all"])?)?;
    for dst in routes.as_array().into_iter().flatten().filter_map(|r| r.get("dst")?.as_str()) {
        if let Some(p) = parse_prefix(dst) {
            v.push(p);
        }
    }
    Ok(v)
}

/// `a.b.c.d/len` or `a.b.c.d` (a /32); `default` and anything else: none.
fn parse_prefix(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/').unwrap_or((s, "32"));
    Some((ip.parse().ok()?, len.parse::<u8>().ok().filter(|l| *l <= 32)?))
}

fn overlaps(a: Ipv4Addr, alen: u8, b: Ipv4Addr, blen: u8) -> bool {
    let len = alen.min(blen);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
    u32::from(a) & mask == u32::from(b) & mask
}

/// Asks `server` for each name in turn from `ns`: the first may take `first` (a server that is
/// starting), each other 2 s. The answers, in order.
fn ask(ns: Option<&str>, server: SocketAddr, names: Vec<String>, first: Duration) -> Result<Vec<Answer>> {
    netns::run_in(ns, "dns-ask", move || {
        let mut out = Vec::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            let within = if i == 0 { first } else { Duration::from_secs(2) };
            out.push(dnsload::resolve(server, n, within)?);
        }
        Ok(out)
    })
}

/// A UDP port nothing uses on 127.0.0.1 in `ns` (a race with other programs is possible: the
/// caller retries when dnsmasq cannot bind it).
fn free_port(ns: Option<&str>) -> Result<u16> {
    netns::run_in(ns, "port", || Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port()))
}

/// Starts the upstream dnsmasq on 127.0.0.1 of `ns` (else the caller's namespace); it and its port.
fn start_upstream(ns: Option<&str>, dir: &Path) -> Result<(Dnsmasq, u16)> {
    let mut last = None;
    for _ in 0..3 {
        let port = free_port(ns)?;
        let args = vec![
            "--listen-address=127.0.0.1".to_string(),
            format!("--port={port}"),
            format!("--address=/{UPSTREAM_DOMAIN}/{UPSTREAM_ANSWER}"),
            format!("--local-ttl={UPSTREAM_TTL}"),
        ];
        let mut up = Dnsmasq::start("upstream", ns, dir, &args)?;
        match up.ready(ns, SocketAddr::from((Ipv4Addr::LOCALHOST, port)), &upstream_name(0)) {
            Ok(a) if a.addrs == [UPSTREAM_ANSWER] => return Ok((up, port)),
            Ok(a) => return Err(err(format!("the upstream dnsmasq answered {a:?}, not {UPSTREAM_ANSWER}"))),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| err("the upstream dnsmasq did not start")))
}

/// The local name number `k`.
pub fn local_name(k: usize) -> String {
    format!("svc{k}")
}

/// The upstream name number `k`.
pub fn upstream_name(k: usize) -> String {
    format!("n{k}.{UPSTREAM_DOMAIN}")
}

/// The address dnsmasq gives the local names of "endpoint" `i` (vswitch's come from IPAM).
fn dnsmasq_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 79, (i / 250) as u8, (i % 250 + 2) as u8)
}

/// A system of the DNS comparison, built and ready for queries.
#[derive(Debug)]
pub struct DnsSystem {
    pub kind: Kind,
    /// The namespace the queries come from.
    pub client: String,
    /// Where the client asks for local names, and for upstream names.
    pub local_server: SocketAddr,
    pub cached_server: SocketAddr,
    /// Every local name and the address it must resolve to.
    pub local_names: Vec<(String, Ipv4Addr)>,
    pub upstream_names: Vec<String>,
    /// How long building it took.
    pub setup: Duration,
    // Field order is drop order: the processes stop before their links and namespaces go, and
    // the directory holding dnsmasq's logs goes last.
    pub daemon: Option<Daemon>,
    servers: Vec<Dnsmasq>,
    host_link: Option<HostLink>,
    namespaces: Vec<Netns>,
    dir: TempDir,
}

impl DnsSystem {
    /// The process whose CPU a workload measures: the dnsmasq answering it, or vswitchd.
    pub fn server_pid(&self, w: Workload) -> Option<u32> {
        if let Some(d) = &self.daemon {
            return Some(d.pid());
        }
        let role = if w == Workload::DnsCached { "forwarder" } else { "local" };
        self.servers.iter().find(|s| s.role == role).map(|s| s.proc.pid())
    }

    /// The namespaces, for messages.
    pub fn namespaces(&self) -> Vec<&str> {
        self.namespaces.iter().map(Netns::name).collect()
    }

    /// The host-namespace veth and the /30 on it, if the system has one.
    pub fn host_link(&self) -> Option<String> {
        self.host_link.as_ref().map(|l| format!("{} {}", l.name, l.addr))
    }

    /// Each dnsmasq's own counters (role: statistics), for the record.
    pub fn dnsmasq_counters(&self) -> Vec<String> {
        self.servers.iter().map(|s| format!("{}: {}", s.role, s.counters())).collect()
    }

    /// A file for this system's scratch data.
    fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Builds `kind` (dnsmasq or vswitch) for the DNS comparison.
pub fn start(kind: Kind, daemon: &DaemonOptions, o: &DnsOptions) -> Result<DnsSystem> {
    if o.names == 0 || o.names > MAX_NAMES {
        return Err(err(format!("--dns-names must be 1..={MAX_NAMES}")));
    }
    let t = Instant::now();
    let mut s = match kind {
        Kind::Dnsmasq => dnsmasq(daemon.keep, o)?,
        Kind::Vswitch => vswitch(daemon, o)?,
        other => return Err(err(format!("{} takes no part in the DNS comparison (dnsmasq, vswitch)", other.as_str()))),
    };
    s.setup = t.elapsed();
    Ok(s)
}

fn dnsmasq(keep: bool, o: &DnsOptions) -> Result<DnsSystem> {
    let dir = cmd::temp_dir(keep)?;
    let (c, s) = (Netns::create("c")?, Netns::create("s")?);
    let m = o.mtu.to_string();
    s.ip(&["link", "add", "eth0", "mtu", &m, "type", "veth", "peer", "name", "eth0", "mtu", &m, "netns", c.name()])?;
    s.ip(&["addr", "add", &format!("{LINK_SERVER}/30"), "dev", "eth0"])?;
    s.ip(&["link", "set", "eth0", "up"])?;
    c.ip(&["addr", "add", &format!("{LINK_CLIENT}/30"), "dev", "eth0"])?;
    c.ip(&["link", "set", "eth0", "up"])?;

    let local_names: Vec<(String, Ipv4Addr)> = (0..o.names).map(|k| (local_name(k), dnsmasq_address(k / NAMES_PER_ENDPOINT))).collect();
    let mut args = vec![format!("--listen-address={LINK_SERVER}")];
    args.extend(local_names.iter().map(|(n, ip)| format!("--host-record={n},{ip}")));
    let mut local = Dnsmasq::start("local", Some(s.name()), dir.path(), &args)?;
    let local_server = SocketAddr::from((LINK_SERVER, DNS_PORT));
    local.ready(Some(c.name()), local_server, &local_names[0].0)?;

    let (host_link, host_ip, _) = HostLink::create(&c, o.mtu)?;
    let (upstream, port) = start_upstream(None, dir.path())?;
    let args = vec![
        format!("--listen-address={host_ip}"),
        format!("--server=127.0.0.1#{port}"),
        // Room for every name (dnsmasq's default is 150 entries).
        format!("--cache-size={}", (o.names * 2).clamp(150, 10_000)),
    ];
    let mut forwarder = Dnsmasq::start("forwarder", None, dir.path(), &args)?;
    let cached_server = SocketAddr::from((host_ip, DNS_PORT));
    // Asked for a name that is not among those measured, so that they all start uncached.
    forwarder.ready(Some(c.name()), cached_server, &upstream_name(o.names))?;
    Ok(DnsSystem {
        kind: Kind::Dnsmasq,
        client: c.name().to_string(),
        local_server,
        cached_server,
        local_names,
        upstream_names: (0..o.names).map(upstream_name).collect(),
        setup: Duration::ZERO,
        daemon: None,
        servers: vec![forwarder, local, upstream],
        host_link: Some(host_link),
        namespaces: vec![c, s],
        dir,
    })
}

fn vswitch(opts: &DaemonOptions, o: &DnsOptions) -> Result<DnsSystem> {
    let dir = cmd::temp_dir(opts.keep)?;
    let c = Netns::create("c")?;
    let d = if opts.own_netns { Some(Netns::create("d")?) } else { None };
    let (upstream, port) = start_upstream(d.as_ref().map(Netns::name), dir.path())?;
    // Declared before the daemon, so that on an error it stops before they go.
    let mut endpoints: Vec<Netns> = Vec::new();
    let daemon = systems::start_daemon(Kind::Vswitch, d.as_ref(), opts)?;
    let upstream_addr = format!("127.0.0.1:{port}");
    let mut setup = || -> Result<(Vec<(String, Ipv4Addr)>, Ipv4Addr)> {
        let mtu = format!("com.docker.network.driver.mtu={}", o.mtu);
        daemon.ctl(&["network", "create", "--subnet", SUBNET, "-o", &mtu, "--dns", &upstream_addr, NETWORK])?;
        let mut names = Vec::with_capacity(o.names);
        for i in 0..o.names.div_ceil(NAMES_PER_ENDPOINT) {
            let ns = Netns::create(&format!("e{i}"))?;
            let mine: Vec<String> = (i * NAMES_PER_ENDPOINT..((i + 1) * NAMES_PER_ENDPOINT).min(o.names)).map(local_name).collect();
            let mut args = vec!["--name", mine[0].as_str()];
            for a in &mine[1..] {
                args.extend_from_slice(&["--alias", a.as_str()]);
            }
            let r = systems::connect(&daemon, NETWORK, &ns, &args);
            endpoints.push(ns);
            let ip = r?;
            names.extend(mine.into_iter().map(|n| (n, ip)));
        }
        systems::connect(&daemon, NETWORK, &c, &["--name", "client"])?;
        let inspect = daemon.ctl_json(&["network", "inspect", NETWORK])?;
        let upstreams = inspect_dns(&inspect, "Upstreams");
        if upstreams != [upstream_addr.as_str()] {
            return Err(err(format!("`network inspect {NETWORK}` shows DNS upstreams {upstreams:?}, not [{upstream_addr}]")));
        }
        let gw = gateway(&inspect).ok_or_else(|| err(format!("no IPv4 gateway in `network inspect {NETWORK}`")))?;
        Ok((names, gw))
    };
    let (local_names, gw) = match setup() {
        Ok(x) => x,
        Err(e) => return Err(err(format!("{e}\n--- vswitchd log (last lines) ---\n{}", daemon.log_tail(20)))),
    };
    let server = SocketAddr::from((gw, DNS_PORT));
    // The gateway answers once the client's port is up; asked for a name not measured.
    if let Err(e) = ask(Some(c.name()), server, vec![upstream_name(o.names)], READY) {
        return Err(err(format!("vswitch's DNS at {server}: {e}\n--- vswitchd log (last lines) ---\n{}", daemon.log_tail(20))));
    }
    let mut namespaces = vec![c];
    namespaces.extend(endpoints);
    namespaces.extend(d);
    Ok(DnsSystem {
        kind: Kind::Vswitch,
        client: namespaces[0].name().to_string(),
        local_server: server,
        cached_server: server,
        local_names,
        upstream_names: (0..o.names).map(upstream_name).collect(),
        setup: Duration::ZERO,
        daemon: Some(daemon),
        servers: vec![upstream],
        host_link: None,
        namespaces,
        dir,
    })
}

/// The network's IPv4 gateway in a `network inspect` answer (an object, or an array of one).
pub(crate) fn gateway(inspect: &Value) -> Option<Ipv4Addr> {
    let net = match inspect {
        Value::Array(a) => a.first()?,
        v => v,
    };
    net.pointer("/IPAM/Config")?.as_array()?.iter().find_map(|c| c.get("Gateway")?.as_str()?.parse().ok())
}

/// A list under `VSwitch.DNS` in a `network inspect` answer (`Servers`, `Upstreams`).
fn inspect_dns<'a>(inspect: &'a Value, key: &str) -> Vec<&'a str> {
    let net = match inspect {
        Value::Array(a) => a.first().unwrap_or(&Value::Null),
        v => v,
    };
    net.pointer(&format!("/VSwitch/DNS/{key}")).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect()
}

/// One DNS workload on one system.
#[derive(Debug, Clone, Serialize)]
pub struct DnsSample {
    /// Good answers per second under the load, in thousands.
    pub kqps: f64,
    /// Latency under the load (queries in flight: sockets × window).
    pub p50_us: f64,
    pub p99_us: f64,
    pub avg_us: f64,
    pub max_us: f64,
    /// Latency with one query in flight.
    pub one_p50_us: f64,
    pub one_p99_us: f64,
    pub sent: u64,
    pub answered: u64,
    pub errors: u64,
    pub lost: u64,
    pub strays: u64,
    /// The answering process (dnsmasq, vswitchd), the load generator's thread and the machine,
    /// over the measured window, percent of one core.
    pub srv_cpu_pct: Option<f64>,
    pub client_cpu_pct: f64,
    pub vm_cpu_pct: f64,
    /// The machine's CPU in the half second before the load, the system under test idle:
    /// other people's work, which this 2-core VM shares.
    pub bg_cpu_pct: f64,
    /// dnsperf's figure for the same names and window, when it ran.
    pub dnsperf_kqps: Option<f64>,
    pub dnsperf_lost: Option<f64>,
}

/// Checks every name of `w` (the warm-up that fills the caches), then measures: the load, one
/// query in flight, and dnsperf if asked.
pub fn run(sys: &DnsSystem, w: Workload, o: &DnsOptions, dnsperf: bool) -> Result<DnsSample> {
    let (server, names) = match w {
        Workload::DnsLocal => (sys.local_server, sys.local_names.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()),
        Workload::DnsCached => (sys.cached_server, sys.upstream_names.clone()),
        other => return Err(err(format!("{other:?} is not a DNS workload"))),
    };
    let answers = ask(Some(&sys.client), server, names.clone(), READY)?;
    for (i, (name, a)) in names.iter().zip(&answers).enumerate() {
        let want = if w == Workload::DnsLocal { sys.local_names[i].1 } else { UPSTREAM_ANSWER };
        if a.addrs != [want] {
            return Err(err(format!("{server} answered {name} with {a:?}, expected {want}")));
        }
        if w == Workload::DnsCached && a.min_ttl.unwrap_or(0) < UPSTREAM_TTL / 2 {
            return Err(err(format!("{server} answered {name} with a TTL of {:?} s: too short to stay cached", a.min_ttl)));
        }
    }
    let load = LoadConfig {
        server,
        names: names.clone(),
        sockets: o.sockets,
        window: o.window,
        warmup: WARMUP,
        duration: Duration::from_secs(u64::from(o.secs)),
        timeout: o.timeout,
        max_queries: MAX_QUERIES,
        watch_pid: sys.server_pid(w),
    };
    let one = LoadConfig { sockets: 1, window: 1, duration: Duration::from_secs(u64::from(o.one_secs)), watch_pid: None, ..load.clone() };
    let background = Probe::start(None);
    std::thread::sleep(BACKGROUND);
    let bg_cpu_pct = background.finish().machine;
    let r = generate(&sys.client, load)?;
    let r1 = generate(&sys.client, one)?;
    if r.answered == 0 {
        return Err(err(format!("no query answered under load ({} sent, {} lost, {} errors)", r.sent, r.lost, r.errors)));
    }
    let (dnsperf_kqps, dnsperf_lost) = if dnsperf && cmd::which("dnsperf").is_some() {
        let p = run_dnsperf(sys, w, server, &names, o)?;
        (Some(p.0 / 1e3), Some(p.1))
    } else {
        (None, None)
    };
    let us = |h: &LoadResult, q: f64| h.latency.quantile_ns(q).map_or(f64::NAN, |ns| ns / 1e3);
    Ok(DnsSample {
        kqps: r.qps() / 1e3,
        p50_us: us(&r, 0.5),
        p99_us: us(&r, 0.99),
        avg_us: r.latency.mean_ns().map_or(f64::NAN, |ns| ns / 1e3),
        max_us: r.latency.max_ns().map_or(f64::NAN, |ns| ns as f64 / 1e3),
        one_p50_us: us(&r1, 0.5),
        one_p99_us: us(&r1, 0.99),
        sent: r.sent,
        answered: r.answered,
        errors: r.errors,
        lost: r.lost,
        strays: r.strays,
        srv_cpu_pct: r.usage.process,
        client_cpu_pct: r.client_cpu_pct,
        vm_cpu_pct: r.usage.machine,
        bg_cpu_pct,
        dnsperf_kqps,
        dnsperf_lost,
    })
}

/// Runs the load generator on a thread inside `ns`.
fn generate(ns: &str, cfg: LoadConfig) -> Result<LoadResult> {
    netns::run_in(Some(ns), "dns-load", move || Ok(dnsload::run(&cfg)?))
}

/// dnsperf from the client namespace with the same names, sockets and queries in flight, for
/// the measured duration; (queries per second, queries lost).
fn run_dnsperf(sys: &DnsSystem, w: Workload, server: SocketAddr, names: &[String], o: &DnsOptions) -> Result<(f64, f64)> {
    let data = sys.scratch(&format!("dnsperf-{}.txt", w.as_str()));
    let text: String = names.iter().map(|n| format!("{n} A\n")).collect();
    std::fs::write(&data, text)?;
    let data = systems::path_str(&data)?;
    let (ip, port) = (server.ip().to_string(), server.port().to_string());
    let (clients, outstanding) = (o.sockets.to_string(), (o.sockets * o.window).to_string());
    let secs = o.secs.to_string();
    let timeout = o.timeout.as_secs().max(1).to_string();
    let args = ["-s", &ip, "-p", &port, "-d", &data, "-l", &secs, "-c", &clients, "-q", &outstanding, "-t", &timeout];
    let out = cmd::checked(netns::exec_in(&sys.client, "dnsperf", &args), Duration::from_secs(u64::from(o.secs) + 30))?;
    parse_dnsperf(&out).ok_or_else(|| err(format!("cannot read dnsperf's output:\n{out}")))
}

/// "Queries per second:" and "Queries lost:" of dnsperf's summary.
fn parse_dnsperf(out: &str) -> Option<(f64, f64)> {
    let field = |key: &str| -> Option<f64> {
        let line = out.lines().find(|l| l.trim_start().starts_with(key))?;
        line.split_once(':')?.1.split_whitespace().next()?.parse().ok()
    };
    Some((field("Queries per second")?, field("Queries lost").unwrap_or(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_overlaps() {
        assert_eq!(parse_prefix("10.0.0.0/8"), Some((Ipv4Addr::new(10, 0, 0, 0), 8)));
        assert_eq!(parse_prefix("192.0.2.2"), Some((Ipv4Addr::new(192, 0, 2, 2), 32)));
        assert_eq!(parse_prefix("default"), None);
        assert_eq!(parse_prefix("10.0.0.0/33"), None);
        let net = Ipv4Addr::new(10, 77, 254, 4);
        assert!(overlaps(net, 30, Ipv4Addr::new(10, 0, 0, 0), 8));
        assert!(overlaps(net, 30, Ipv4Addr::new(10, 77, 254, 6), 32));
        assert!(!overlaps(net, 30, Ipv4Addr::new(10, 77, 254, 8), 30));
        assert!(!overlaps(net, 30, Ipv4Addr::new(192, 0, 2, 0), 24));
        assert!(overlaps(net, 30, Ipv4Addr::UNSPECIFIED, 0), "a /0 overlaps everything (it is never read: `default` is skipped)");
    }

    #[test]
    fn reads_gateway_and_dns_from_inspect() {
        let v = serde_json::json!([{
            "Name": "benchnet",
            "IPAM": { "Config": [{ "Subnet": "fd00::/64", "Gateway": "fd00::1" }, { "Subnet": "10.77.0.0/24", "Gateway": "10.77.0.1" }] },
            "VSwitch": { "DNS": { "Enabled": true, "Servers": ["10.77.0.1"], "Upstreams": ["127.0.0.1:5353"] } }
        }]);
        assert_eq!(gateway(&v), Some(Ipv4Addr::new(10, 77, 0, 1)));
        assert_eq!(inspect_dns(&v, "Upstreams"), vec!["127.0.0.1:5353"]);
        assert_eq!(inspect_dns(&v[0], "Servers"), vec!["10.77.0.1"]);
        assert_eq!(gateway(&serde_json::json!({})), None);
    }

    #[test]
    fn dnsperf_summary() {
        let out = "Statistics:\n\n  Queries sent:         424262\n  Queries completed:    424262 (100.00%)\n  \
                   Queries lost:         3 (0.00%)\n\n  Response codes:       NOERROR 424262 (100.00%)\n  \
                   Queries per second:   84848.712335\n";
        assert_eq!(parse_dnsperf(out), Some((84848.712335, 3.0)));
        assert_eq!(parse_dnsperf("nothing"), None);
    }

    #[test]
    fn names() {
        assert_eq!(local_name(7), "svc7");
        assert_eq!(upstream_name(7), "n7.up.test");
        assert_eq!(dnsmasq_address(0), Ipv4Addr::new(10, 79, 0, 2));
        assert_eq!(dnsmasq_address(251), Ipv4Addr::new(10, 79, 1, 3));
    }
}
