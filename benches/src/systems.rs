//! The systems under test, each built in namespaces of its own and torn down on drop.
//!
//! - `bridge`: namespaces `a` and `b`, each with an `eth0` whose veth peer is a port of a kernel
//!   bridge in a third namespace `br`; nothing is created in the caller's namespace.
//! - `vswitch`: `vswitchd` (in a namespace `d` of its own unless asked otherwise) with a network
//!   `benchnet`; `vswitchctl network connect` gives `a` and `b` their `eth0`.
//! - `null`: the same with `vswitchd --null-forwarder` (port I/O without switching logic).
//! - `kernel-router`: Linux routing between two kernel bridges in a namespace `r` with
//!   `ip_forward=1`; `a` on the first bridge's subnet, `b` on the second's, each with a default
//!   route via its bridge's address.
//! - `vswitch-routed`: vswitchd with two networks that may route to each other (`route-to`);
//!   `a` connected to the first, `b` to the second; vswitchd's gateway routes between them.
//! - `dnsmasq`: the DNS comparison's peer of vswitch's embedded DNS, built by [`crate::dns`]
//!   (which builds vswitch for that comparison too).
//! - `pasta`, `slirp4netns`: the NAT comparison's peers of vswitch's slirp engine, built by
//!   [`crate::nat`] (which builds vswitch for that comparison too).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::cmd::{self, Proc, TempDir};
use crate::netns::Netns;
use crate::report::Family;
use crate::workloads::Pair;
use crate::{err, Result};

/// The subnet of the test network; `.2` and `.3` on the bridge, as IPAM assigns them on vswitch.
pub const SUBNET: &str = "10.77.0.0/24";
const BRIDGE_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const BRIDGE_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
/// The IPv6 subnet of the test network (the `ipv6` variants), `::2` and `::3` on the bridge.
pub const SUBNET6: &str = "fd77::/64";
const BRIDGE_A6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
const BRIDGE_B6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 3);
/// The routed scenario's IPv6 subnets; endpoints `::2`, gateways `::1`.
pub const ROUTED_SUBNETS6: [&str; 2] = ["fd70::/64", "fd71::/64"];
const ROUTED_A6: Ipv6Addr = Ipv6Addr::new(0xfd70, 0, 0, 0, 0, 0, 0, 2);
const ROUTED_B6: Ipv6Addr = Ipv6Addr::new(0xfd71, 0, 0, 0, 0, 0, 0, 2);
const ROUTED_GW6: [&str; 2] = ["fd70::1", "fd71::1"];
/// The network vswitch-compare creates in vswitchd.
pub const NETWORK: &str = "benchnet";
/// The routed scenario's two subnets; endpoints are `.2`, gateways `.1`, on both systems.
pub const ROUTED_SUBNETS: [&str; 2] = ["10.70.0.0/24", "10.71.0.0/24"];
const ROUTED_A: Ipv4Addr = Ipv4Addr::new(10, 70, 0, 2);
const ROUTED_B: Ipv4Addr = Ipv4Addr::new(10, 71, 0, 2);
const ROUTED_GW: [&str; 2] = ["10.70.0.1", "10.71.0.1"];
/// The routed scenario's networks in vswitchd (the second is created with `route-to` the first).
pub const ROUTED_NETWORKS: [&str; 2] = ["benchnet-a", "benchnet-b"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Linux bridge with veth ports.
    Bridge,
    /// vswitchd, switching.
    Vswitch,
    /// vswitchd --null-forwarder.
    Null,
    /// Linux kernel routing (ip_forward) between two bridges.
    KernelRouter,
    /// vswitchd routing between two networks (route-to).
    VswitchRouted,
    /// dnsmasq serving local names and forwarding (the DNS comparison only).
    Dnsmasq,
    /// pasta (package passt) connecting a namespace to the host (the NAT comparison only).
    Pasta,
    /// slirp4netns connecting a namespace to the host (the NAT comparison only).
    Slirp4netns,
    /// Open vSwitch's userspace datapath (ovs-vswitchd, `datapath_type=netdev`) with veth ports.
    Ovs,
    /// The vswitchd binary as slirp4netns (`vswitchd slirp4netns …`), with slirp4netns's command line.
    VswitchSlirp4netns,
    /// The vswitchd binary as pasta (`vswitchd pasta …`), with pasta's command line.
    VswitchPasta,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bridge => "bridge",
            Kind::Vswitch => "vswitch",
            Kind::Null => "null",
            Kind::KernelRouter => "kernel-router",
            Kind::VswitchRouted => "vswitch-routed",
            Kind::Dnsmasq => "dnsmasq",
            Kind::Pasta => "pasta",
            Kind::Slirp4netns => "slirp4netns",
            Kind::Ovs => "ovs",
            Kind::VswitchSlirp4netns => "vswitch-slirp4netns",
            Kind::VswitchPasta => "vswitch-pasta",
        }
    }

    /// The personality of the vswitchd binary this system runs, if it is one.
    pub fn personality(self) -> Option<&'static str> {
        match self {
            Kind::VswitchSlirp4netns => Some("slirp4netns"),
            Kind::VswitchPasta => Some("pasta"),
            _ => None,
        }
    }

    /// Whether the system runs vswitchd.
    pub fn uses_vswitchd(self) -> bool {
        matches!(self, Kind::Vswitch | Kind::Null | Kind::VswitchRouted)
    }

    /// Whether it takes part in the comparisons of `family`: switching and routing (every system
    /// that forwards frames between namespaces), DNS (dnsmasq and vswitch), NAT (pasta,
    /// slirp4netns and vswitch's slirp engine).
    pub fn takes_part(self, family: Family) -> bool {
        match family {
            Family::Net => {
                matches!(self, Kind::Bridge | Kind::Vswitch | Kind::Null | Kind::KernelRouter | Kind::VswitchRouted | Kind::Ovs)
            }
            Family::Dns => matches!(self, Kind::Dnsmasq | Kind::Vswitch),
            Family::Nat => {
                matches!(self, Kind::Vswitch | Kind::Pasta | Kind::Slirp4netns | Kind::VswitchSlirp4netns | Kind::VswitchPasta)
            }
        }
    }

    /// Whether the kernel forwards (no forwarding process to watch).
    pub fn is_kernel(self) -> bool {
        matches!(self, Kind::Bridge | Kind::KernelRouter)
    }
}

/// How to run vswitchd.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Where `vswitchd` and `vswitchctl` are.
    pub bin_dir: PathBuf,
    pub workers: usize,
    /// Run vswitchd inside a namespace of its own (true) or in the caller's.
    pub own_netns: bool,
    /// Keep the state directory and log after the run.
    pub keep: bool,
    /// Extra arguments for vswitchd.
    pub extra_args: Vec<String>,
}

/// A running vswitchd and the directory holding its socket, state and log.
#[derive(Debug)]
pub struct Daemon {
    // Field order is drop order: stop the process before removing its directory.
    proc: Proc,
    dir: TempDir,
    ctl: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The directory holding the socket, the state and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `vswitchctl --socket S args…`; its stdout.
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new(&self.ctl);
        c.arg("--socket").arg(&self.socket).args(args);
        cmd::checked(c, Duration::from_secs(30))
    }

    /// `vswitchctl --format json args…`, parsed.
    pub fn ctl_json(&self, args: &[&str]) -> Result<Value> {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        Ok(serde_json::from_str(&self.ctl(&all)?)?)
    }

    /// The last lines of the daemon's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the daemon now; how long it took to exit and whether it had to be killed.
    pub fn stop(&mut self) -> (Duration, bool) {
        let t = Instant::now();
        let (_, killed) = self.proc.stop();
        (t.elapsed(), killed)
    }
}

/// A system under test, built and ready for traffic.
#[derive(Debug)]
pub struct Running {
    pub kind: Kind,
    pub mtu: u32,
    pub pair: Pair,
    // Field order is drop order: the daemon stops before its sandboxes' namespaces go.
    pub daemon: Option<Daemon>,
    /// Open vSwitch's daemons, for `ovs`.
    pub ovs: Option<crate::ovs::Ovs>,
    namespaces: Vec<Netns>,
    /// How long building it took.
    pub setup: Duration,
}

impl Running {
    /// The PID of the forwarding process (none for the kernel bridge).
    pub fn forwarder_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Daemon::pid).or_else(|| self.ovs.as_ref().map(crate::ovs::Ovs::pid))
    }

    /// The namespaces, for messages.
    pub fn namespaces(&self) -> Vec<&str> {
        self.namespaces.iter().map(Netns::name).collect()
    }
}

/// Builds `kind` with links of `mtu` bytes; with `v6`, the pair's addresses are IPv6 ones
/// (every system also keeps its IPv4 addresses).
pub fn start(kind: Kind, mtu: u32, v6: bool, opts: &DaemonOptions) -> Result<Running> {
    let t = Instant::now();
    let mut r = match kind {
        Kind::Bridge => bridge(mtu, v6)?,
        Kind::Vswitch | Kind::Null => vswitch(kind, mtu, v6, opts)?,
        Kind::KernelRouter => kernel_router(mtu, v6)?,
        Kind::VswitchRouted => vswitch_routed(mtu, v6, opts)?,
        Kind::Ovs => {
            let (ovs, pair, namespaces) = crate::ovs::l2(mtu, v6, opts.workers, opts.keep)?;
            Running { kind, mtu, pair, daemon: None, ovs: Some(ovs), namespaces, setup: Duration::ZERO }
        }
        Kind::Dnsmasq => return Err(err("dnsmasq forwards no frames: it takes part in the DNS comparison only (--scenario dns)")),
        Kind::Pasta | Kind::Slirp4netns | Kind::VswitchSlirp4netns | Kind::VswitchPasta => {
            return Err(err(format!("{} takes part in the NAT comparison only (--scenario nat)", kind.as_str())))
        }
    };
    if v6 {
        for ns in [&r.pair.a, &r.pair.b] {
            wait_dad(ns)?;
        }
    }
    r.setup = t.elapsed();
    Ok(r)
}

/// Waits until no IPv6 address of `ns` is tentative (duplicate address detection done): a
/// socket cannot bind one before.
fn wait_dad(ns: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = cmd::run("ip", &["-n", ns, "-6", "addr", "show", "tentative"])?;
        if out.trim().is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(err(format!("IPv6 addresses in {ns} still tentative after 10 s: {}", out.trim())));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The names, in the switch's namespace, of the veth ends that [`veth_pair`] leaves there.
pub(crate) const VETH_PORTS: [&str; 2] = ["pa", "pb"];
/// The IPv4 address [`veth_pair`] always gives `b` (a setup check pings it).
pub(crate) const VETH_B: Ipv4Addr = BRIDGE_B;

/// Gives `a` and `b` each an `eth0` of `mtu` bytes (.2 and .3 of [`SUBNET`], and ::2 and ::3 of
/// [`SUBNET6`] with `v6`) whose veth peer, [`VETH_PORTS`], stays in `sw`, up, for a switch there
/// to take as its port. The pair is addressed with IPv6 if `v6`, else IPv4.
pub(crate) fn veth_pair(a: &Netns, b: &Netns, sw: &Netns, mtu: u32, v6: bool) -> Result<Pair> {
    let m = mtu.to_string();
    for (ns, ip, ip6, port) in [(a, BRIDGE_A, BRIDGE_A6, VETH_PORTS[0]), (b, BRIDGE_B, BRIDGE_B6, VETH_PORTS[1])] {
        sw.ip(&["link", "add", port, "mtu", &m, "type", "veth", "peer", "name", "eth0", "mtu", &m, "netns", ns.name()])?;
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        if v6 {
            ns.ip(&["-6", "addr", "add", &format!("{ip6}/64"), "dev", "eth0", "nodad"])?;
        }
        ns.ip(&["link", "set", "eth0", "up"])?;
        sw.ip(&["link", "set", port, "up"])?;
    }
    let (ip_a, ip_b) = if v6 { (BRIDGE_A6.into(), BRIDGE_B6.into()) } else { (BRIDGE_A.into(), BRIDGE_B.into()) };
    Ok(Pair { a: a.name().to_string(), b: b.name().to_string(), ip_a, ip_b })
}

fn bridge(mtu: u32, v6: bool) -> Result<Running> {
    let (a, b, br) = (Netns::create("a")?, Netns::create("b")?, Netns::create("br")?);
    br.ip(&["link", "add", "br0", "mtu", &mtu.to_string(), "type", "bridge"])?;
    let pair = veth_pair(&a, &b, &br, mtu, v6)?;
    for port in VETH_PORTS {
        br.ip(&["link", "set", port, "master", "br0"])?;
    }
    br.ip(&["link", "set", "br0", "up"])?;
    Ok(Running { kind: Kind::Bridge, mtu, pair, daemon: None, ovs: None, namespaces: vec![a, b, br], setup: Duration::ZERO })
}

/// Two bridges in namespace `r`, each with its subnet's gateway address, and forwarding on in
/// `r`: the kernel routes between `a` (behind `br1`) and `b` (behind `br2`).
fn kernel_router(mtu: u32, v6: bool) -> Result<Running> {
    let (a, b, r) = (Netns::create("a")?, Netns::create("b")?, Netns::create("r")?);
    let m = mtu.to_string();
    let legs = [
        (&a, ROUTED_A, ROUTED_A6, "br1", "pa", ROUTED_GW[0], ROUTED_GW6[0]),
        (&b, ROUTED_B, ROUTED_B6, "br2", "pb", ROUTED_GW[1], ROUTED_GW6[1]),
    ];
    for (ns, ip, ip6, br, port, gw, gw6) in legs {
        r.ip(&["link", "add", br, "mtu", &m, "type", "bridge"])?;
        r.ip(&["addr", "add", &format!("{gw}/24"), "dev", br])?;
        r.ip(&["link", "add", port, "mtu", &m, "type", "veth", "peer", "name", "eth0", "mtu", &m, "netns", ns.name()])?;
        r.ip(&["link", "set", port, "master", br, "up"])?;
        r.ip(&["link", "set", br, "up"])?;
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&["route", "add", "default", "via", gw])?;
        if v6 {
            r.ip(&["-6", "addr", "add", &format!("{gw6}/64"), "dev", br, "nodad"])?;
            ns.ip(&["-6", "addr", "add", &format!("{ip6}/64"), "dev", "eth0", "nodad"])?;
            ns.ip(&["-6", "route", "add", "default", "via", gw6])?;
        }
    }
    // Per namespace: this turns forwarding on in `r` only.
    let mut sysctls = vec!["-qw", "net.ipv4.ip_forward=1"];
    if v6 {
        sysctls.push("net.ipv6.conf.all.forwarding=1");
    }
    cmd::checked(r.exec("sysctl", &sysctls), Duration::from_secs(10))?;
    let (ip_a, ip_b) = if v6 { (ROUTED_A6.into(), ROUTED_B6.into()) } else { (ROUTED_A.into(), ROUTED_B.into()) };
    let pair = Pair { a: a.name().to_string(), b: b.name().to_string(), ip_a, ip_b };
    if v6 {
        wait_dad(r.name())?;
    }
    Ok(Running { kind: Kind::KernelRouter, mtu, pair, daemon: None, ovs: None, namespaces: vec![a, b, r], setup: Duration::ZERO })
}

/// `network create` arguments for a subnet (and its IPv6 one with `v6`).
fn subnets<'a>(v4: &'a str, v6: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec!["--subnet", v4];
    if let Some(s6) = v6 {
        args.extend(["--ipv6", "--subnet", s6]);
    }
    args
}

/// The address `ns` got on `network`: IPv4, or IPv6 with `v6`.
fn endpoint_addr(daemon: &Daemon, network: &str, ns: &Netns, v6: bool) -> Result<IpAddr> {
    let ip4 = connect(daemon, network, ns, &[])?;
    if !v6 {
        return Ok(ip4.into());
    }
    let inspect = daemon.ctl_json(&["network", "inspect", network])?;
    endpoint_v6(&inspect, ns.name())
        .map(IpAddr::V6)
        .ok_or_else(|| err(format!("no IPv6 address for {} in `network inspect {network}`", ns.name())))
}

/// vswitchd with two networks allowed to route to each other, `a` on one and `b` on the other.
fn vswitch_routed(mtu: u32, v6: bool, opts: &DaemonOptions) -> Result<Running> {
    let (a, b) = (Netns::create("a")?, Netns::create("b")?);
    let d = if opts.own_netns { Some(Netns::create("d")?) } else { None };
    let daemon = start_daemon(Kind::VswitchRouted, d.as_ref(), opts)?;
    let setup = || -> Result<Pair> {
        let mtu_opt = format!("com.docker.network.driver.mtu={mtu}");
        let [na, nb] = ROUTED_NETWORKS;
        let six = |i: usize| v6.then_some(ROUTED_SUBNETS6[i]);
        let mut create = vec!["network", "create"];
        create.extend(subnets(ROUTED_SUBNETS[0], six(0)));
        create.extend(["-o", &mtu_opt, na]);
        daemon.ctl(&create)?;
        let route_to = format!("route-to={na}");
        let mut create = vec!["network", "create"];
        create.extend(subnets(ROUTED_SUBNETS[1], six(1)));
        create.extend(["-o", &mtu_opt, "-o", &route_to, nb]);
        daemon.ctl(&create)?;
        let ip_a = endpoint_addr(&daemon, na, &a, v6)?;
        let ip_b = endpoint_addr(&daemon, nb, &b, v6)?;
        Ok(Pair { a: a.name().to_string(), b: b.name().to_string(), ip_a, ip_b })
    };
    let pair = match setup() {
        Ok(p) => p,
        Err(e) => return Err(err(format!("{e}\n--- vswitchd log (last lines) ---\n{}", daemon.log_tail(20)))),
    };
    let mut namespaces = vec![a, b];
    namespaces.extend(d);
    Ok(Running { kind: Kind::VswitchRouted, mtu, pair, daemon: Some(daemon), ovs: None, namespaces, setup: Duration::ZERO })
}

fn vswitch(kind: Kind, mtu: u32, v6: bool, opts: &DaemonOptions) -> Result<Running> {
    let (a, b) = (Netns::create("a")?, Netns::create("b")?);
    let d = if opts.own_netns { Some(Netns::create("d")?) } else { None };
    let daemon = start_daemon(kind, d.as_ref(), opts)?;
    let setup = || -> Result<Pair> {
        let mtu_opt = format!("com.docker.network.driver.mtu={mtu}");
        let mut create = vec!["network", "create"];
        create.extend(subnets(SUBNET, v6.then_some(SUBNET6)));
        create.extend(["-o", &mtu_opt, NETWORK]);
        daemon.ctl(&create)?;
        let ip_a = endpoint_addr(&daemon, NETWORK, &a, v6)?;
        let ip_b = endpoint_addr(&daemon, NETWORK, &b, v6)?;
        Ok(Pair { a: a.name().to_string(), b: b.name().to_string(), ip_a, ip_b })
    };
    let pair = match setup() {
        Ok(p) => p,
        Err(e) => return Err(err(format!("{e}\n--- vswitchd log (last lines) ---\n{}", daemon.log_tail(20)))),
    };
    let mut namespaces = vec![a, b];
    namespaces.extend(d);
    Ok(Running { kind, mtu, pair, daemon: Some(daemon), ovs: None, namespaces, setup: Duration::ZERO })
}

/// Starts vswitchd (in `ns`, else in the caller's namespace) and waits until its API answers.
pub(crate) fn start_daemon(kind: Kind, ns: Option<&Netns>, opts: &DaemonOptions) -> Result<Daemon> {
    let vswitchd = opts.bin_dir.join("vswitchd");
    let ctl = opts.bin_dir.join("vswitchctl");
    for p in [&vswitchd, &ctl] {
        if !p.is_file() {
            return Err(err(format!("{} not found: build it with `cargo build --release -p vswitch-ctl` or pass --bin-dir", p.display())));
        }
    }
    let dir = cmd::temp_dir(opts.keep)?;
    let socket = dir.path().join("vswitchd.sock");
    let state = dir.path().join("state");
    let log = dir.path().join("vswitchd.log");
    let mut args: Vec<String> =
        vec!["--socket".into(), path_str(&socket)?, "--state-dir".into(), path_str(&state)?, "--workers".into(), opts.workers.to_string()];
    if kind == Kind::Null {
        args.push("--null-forwarder".into());
    }
    args.extend(opts.extra_args.iter().cloned());
    let prog = path_str(&vswitchd)?;
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let command = match ns {
        Some(ns) => ns.exec(&prog, &argv),
        None => {
            let mut c = Command::new(&prog);
            c.args(&argv);
            c
        }
    };
    let proc = Proc::spawn(command, "vswitchd", Some(&log), Duration::from_secs(5))?;
    let mut daemon = Daemon { proc, dir, ctl, socket, log };
    // Ready when the API answers.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(s) = daemon.proc.exited() {
            return Err(err(format!("vswitchd exited at start ({s}):\n{}", daemon.log_tail(20))));
        }
        if daemon.socket.exists() && daemon.ctl(&["network", "ls"]).is_ok() {
            return Ok(daemon);
        }
        if Instant::now() >= deadline {
            return Err(err(format!("vswitchd did not answer on {} within 15 s:\n{}", daemon.socket.display(), daemon.log_tail(20))));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connects `ns` to `network` (with `extra` options of `network connect`: `--name`, `--alias`)
/// and returns the IPv4 address IPAM gave it.
pub(crate) fn connect(daemon: &Daemon, network: &str, ns: &Netns, extra: &[&str]) -> Result<Ipv4Addr> {
    let before = addresses(&daemon.ctl_json(&["network", "inspect", network])?);
    let mut args = vec!["network", "connect"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[network, ns.name()]);
    daemon.ctl(&args)?;
    let after = addresses(&daemon.ctl_json(&["network", "inspect", network])?);
    // The endpoint named like the namespace, else the one address that is new.
    let named = after.iter().find(|(name, _)| name == ns.name()).map(|(_, ip)| *ip);
    let new: Vec<Ipv4Addr> = after.iter().map(|(_, ip)| *ip).filter(|ip| !before.iter().any(|(_, b)| b == ip)).collect();
    named
        .or(if new.len() == 1 { Some(new[0]) } else { None })
        .ok_or_else(|| err(format!("cannot tell the address of {} in `network inspect {network}`: {after:?}", ns.name())))
}

/// (container name, IPv4 address) of every endpoint in a `network inspect` answer (an object,
/// or an array of one like Docker's).
fn addresses(inspect: &Value) -> Vec<(String, Ipv4Addr)> {
    let net = match inspect {
        Value::Array(a) => a.first().unwrap_or(&Value::Null),
        v => v,
    };
    let Some(Value::Object(containers)) = net.get("Containers") else { return Vec::new() };
    containers
        .values()
        .filter_map(|c| {
            let ip = c.get("IPv4Address")?.as_str()?.split('/').next()?.parse().ok()?;
            Some((c.get("Name").and_then(Value::as_str).unwrap_or_default().to_string(), ip))
        })
        .collect()
}

/// The IPv6 address of the endpoint named `name` in a `network inspect` answer.
fn endpoint_v6(inspect: &Value, name: &str) -> Option<Ipv6Addr> {
    let net = match inspect {
        Value::Array(a) => a.first()?,
        v => v,
    };
    net.get("Containers")?
        .as_object()?
        .values()
        .find(|c| c.get("Name").and_then(Value::as_str) == Some(name))
        .and_then(|c| c.get("IPv6Address")?.as_str()?.split('/').next()?.parse().ok())
}

pub(crate) fn path_str(p: &Path) -> Result<String> {
    p.to_str().map(str::to_string).ok_or_else(|| err(format!("path {} is not UTF-8", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_addresses_from_docker_shaped_inspect() {
        let v: Value = serde_json::json!([{
            "Name": "benchnet",
            "Containers": {
                "abc": { "Name": "vsb1-0-a", "IPv4Address": "10.77.0.2/24" },
                "def": { "Name": "vsb1-1-b", "IPv4Address": "10.77.0.3/24" },
                "ghi": { "Name": "no-v4", "IPv4Address": "" }
            }
        }]);
        let mut got = addresses(&v);
        got.sort();
        assert_eq!(got, vec![("vsb1-0-a".to_string(), Ipv4Addr::new(10, 77, 0, 2)), ("vsb1-1-b".to_string(), Ipv4Addr::new(10, 77, 0, 3))]);
        assert_eq!(addresses(&v[0]).len(), 2, "a bare object works too");
    }
}
