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

use std::net::Ipv4Addr;
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
            Family::Net => matches!(self, Kind::Bridge | Kind::Vswitch | Kind::Null | Kind::KernelRouter | Kind::VswitchRouted),
            Family::Dns => matches!(self, Kind::Dnsmasq | Kind::Vswitch),
            Family::Nat => matches!(self, Kind::Vswitch | Kind::Pasta | Kind::Slirp4netns),
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
    namespaces: Vec<Netns>,
    /// How long building it took.
    pub setup: Duration,
}

impl Running {
    /// The PID of the forwarding process (none for the kernel bridge).
    pub fn forwarder_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Daemon::pid)
    }

    /// The namespaces, for messages.
    pub fn namespaces(&self) -> Vec<&str> {
        self.namespaces.iter().map(Netns::name).collect()
    }
}

/// Builds `kind` with links of `mtu` bytes.
pub fn start(kind: Kind, mtu: u32, opts: &DaemonOptions) -> Result<Running> {
    let t = Instant::now();
    let mut r = match kind {
        Kind::Bridge => bridge(mtu)?,
        Kind::Vswitch | Kind::Null => vswitch(kind, mtu, opts)?,
        Kind::KernelRouter => kernel_router(mtu)?,
        Kind::VswitchRouted => vswitch_routed(mtu, opts)?,
        Kind::Dnsmasq => return Err(err("dnsmasq forwards no frames: it takes part in the DNS comparison only (--scenario dns)")),
        Kind::Pasta | Kind::Slirp4netns => {
            return Err(err(format!("{} takes part in the NAT comparison only (--scenario nat)", kind.as_str())))
        }
    };
    r.setup = t.elapsed();
    Ok(r)
}

fn bridge(mtu: u32) -> Result<Running> {
    let (a, b, br) = (Netns::create("a")?, Netns::create("b")?, Netns::create("br")?);
    let m = mtu.to_string();
    br.ip(&["link", "add", "br0", "mtu", &m, "type", "bridge"])?;
    for (ns, ip, port) in [(&a, BRIDGE_A, "pa"), (&b, BRIDGE_B, "pb")] {
        br.ip(&["link", "add", port, "mtu", &m, "type", "veth", "peer", "name", "eth0", "mtu", &m, "netns", ns.name()])?;
        br.ip(&["link", "set", port, "master", "br0", "up"])?;
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
    }
    br.ip(&["link", "set", "br0", "up"])?;
    let pair = Pair { a: a.name().to_string(), b: b.name().to_string(), ip_a: BRIDGE_A, ip_b: BRIDGE_B };
    Ok(Running { kind: Kind::Bridge, mtu, pair, daemon: None, namespaces: vec![a, b, br], setup: Duration::ZERO })
}

/// Two bridges in namespace `r`, each with its subnet's gateway address, and IPv4 forwarding
/// on in `r`: the kernel routes between `a` (behind `br1`) and `b` (behind `br2`).
fn kernel_router(mtu: u32) -> Result<Running> {
    let (a, b, r) = (Netns::create("a")?, Netns::create("b")?, Netns::create("r")?);
    let m = mtu.to_string();
    let legs = [(&a, ROUTED_A, "br1", "pa", ROUTED_GW[0]), (&b, ROUTED_B, "br2", "pb", ROUTED_GW[1])];
    for (ns, ip, br, port, gw) in legs {
        r.ip(&["link", "add", br, "mtu", &m, "type", "bridge"])?;
        r.ip(&["addr", "add", &format!("{gw}/24"), "dev", br])?;
        r.ip(&["link", "add", port, "mtu", &m, "type", "veth", "peer", "name", "eth0", "mtu", &m, "netns", ns.name()])?;
        r.ip(&["link", "set", port, "master", br, "up"])?;
        r.ip(&["link", "set", br, "up"])?;
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&["route", "add", "default", "via", gw])?;
    }
    // Per namespace: this turns forwarding on in `r` only.
    cmd::checked(r.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]), Duration::from_secs(10))?;
    let pair = Pair { a: a.name().to_string(), b: b.name().to_string(), ip_a: ROUTED_A, ip_b: ROUTED_B };
    Ok(Running { kind: Kind::KernelRouter, mtu, pair, daemon: None, namespaces: vec![a, b, r], setup: Duration::ZERO })
}

/// vswitchd with two networks allowed to route to each other, `a` on one and `b` on the other.
fn vswitch_routed(mtu: u32, opts: &DaemonOptions) -> Result<Running> {
    let (a, b) = (Netns::create("a")?, Netns::create("b")?);
    let d = if opts.own_netns { Some(Netns::create("d")?) } else { None };
    let daemon = start_daemon(Kind::VswitchRouted, d.as_ref(), opts)?;
    let setup = || -> Result<Pair> {
        let mtu_opt = format!("com.docker.network.driver.mtu={mtu}");
        let [na, nb] = ROUTED_NETWORKS;
        daemon.ctl(&["network", "create", "--subnet", ROUTED_SUBNETS[0], "-o", &mtu_opt, na])?;
        daemon.ctl(&["network", "create", "--subnet", ROUTED_SUBNETS[1], "-o", &mtu_opt, "-o", &format!("route-to={na}"), nb])?;
        let ip_a = connect(&daemon, na, &a, &[])?;
        let ip_b = connect(&daemon, nb, &b, &[])?;
        Ok(Pair { a: a.name().to_string(), b: b.name().to_string(), ip_a, ip_b })
    };
    let pair = match setup() {
        Ok(p) => p,
        Err(e) => return Err(err(format!("{e}\n--- vswitchd log (last lines) ---\n{}", daemon.log_tail(20)))),
    };
    let mut namespaces = vec![a, b];
    namespaces.extend(d);
    Ok(Running { kind: Kind::VswitchRouted, mtu, pair, daemon: Some(daemon), namespaces, setup: Duration::ZERO })
}

fn vswitch(kind: Kind, mtu: u32, opts: &DaemonOptions) -> Result<Running> {
    let (a, b) = (Netns::create("a")?, Netns::create("b")?);
    let d = if opts.own_netns { Some(Netns::create("d")?) } else { None };
    let daemon = start_daemon(kind, d.as_ref(), opts)?;
    let setup = || -> Result<Pair> {
        daemon.ctl(&["network", "create", "--subnet", SUBNET, "-o", &format!("com.docker.network.driver.mtu={mtu}"), NETWORK])?;
        let ip_a = connect(&daemon, NETWORK, &a, &[])?;
        let ip_b = connect(&daemon, NETWORK, &b, &[])?;
        Ok(Pair { a: a.name().to_string(), b: b.name().to_string(), ip_a, ip_b })
    };
    let pair = match setup() {
        Ok(p) => p,
        Err(e) => return Err(err(format!("{e}\n--- vswitchd log (last lines) ---\n{}", daemon.log_tail(20)))),
    };
    let mut namespaces = vec![a, b];
    namespaces.extend(d);
    Ok(Running { kind, mtu, pair, daemon: Some(daemon), namespaces, setup: Duration::ZERO })
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
