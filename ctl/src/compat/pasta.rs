//! The `pasta` personality: the subset of pasta's command line Podman and rootlesskit use,
//! configuring the namespace, forking to the background, forwarding ports, and exiting when the
//! namespace goes away; vswitch's stack behind it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use ipnet::{Ipv4Net, Ipv6Net};
use vswitch_nat::slirp::{NsSockets, PublishError, RelaySock, Splice, SpliceTo};
use vswitch_nat::Proto;
use vswitch_switch::Mac;

use super::portspec::{self, PortSpec};
use super::stack::{DhcpPlan, NetPlan, Stack, V6Plan};
use super::{join_and_open_tap, sys, v4, v6, Target};
use crate::provision::TapSpec;

/// pasta's own MAC for the gateway side.
const PASTA_MAC: Mac = Mac([0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55]);

/// Translates host traffic to a network namespace (vswitch's pasta: Podman's and rootlesskit's subset).
#[derive(Debug, Parser)]
#[command(
    name = "pasta",
    override_usage = "pasta [OPTION]... PID\n       pasta [OPTION]... --netns PATH|NAME",
    disable_version_flag = true
)]
struct Args {
    /// Configure lo, the interface, its addresses and routes in the namespace.
    #[arg(long)]
    config_net: bool,
    /// The target network namespace (a path, or a name under /run/netns).
    #[arg(long, value_name = "PATH|NAME")]
    netns: Option<String>,
    /// The user namespace owning the target (default: the PID's).
    #[arg(long, value_name = "PATH")]
    userns: Option<PathBuf>,
    /// Write the background process's PID to FILE.
    #[arg(short = 'P', long = "pid", value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// DNS sent to ADDR (TCP/UDP 53) is answered by forwarding to the host's resolvers.
    #[arg(long, value_name = "ADDR")]
    dns_forward: Vec<IpAddr>,
    /// Traffic to ADDR reaches the host's own (global) address.
    #[arg(long, value_name = "ADDR")]
    map_guest_addr: Option<IpAddr>,
    /// Traffic to ADDR reaches the host's loopback.
    #[arg(long, value_name = "ADDR")]
    map_host_loopback: Option<IpAddr>,
    /// The gateway's address does not stand for the host's loopback.
    #[arg(long)]
    no_map_gw: bool,
    /// Print nothing but errors.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Log to stderr (accepted for compatibility; diagnostics go to stderr until the fork).
    #[arg(long)]
    stderr: bool,
    /// Stay in the foreground.
    #[arg(short = 'f', long)]
    foreground: bool,
    /// TCP ports forwarded from the host to the namespace: none, auto, all, or
    /// [ADDR/]P[-P][:P[-P]],... with ~P[-P] exclusions (exclusions alone: all but those).
    #[arg(short = 't', long = "tcp-ports", value_name = "SPEC")]
    tcp_ports: Vec<String>,
    /// UDP ports forwarded from the host to the namespace (as -t).
    #[arg(short = 'u', long = "udp-ports", value_name = "SPEC")]
    udp_ports: Vec<String>,
    /// TCP ports of the namespace's loopback forwarded to the host's: none, auto (the ports
    /// bound on the host, re-read every second; the default), all, or a list (as -t).
    #[arg(short = 'T', long = "tcp-ns", value_name = "SPEC")]
    tcp_ns: Vec<String>,
    /// UDP ports of the namespace's loopback forwarded to the host's (as -T).
    #[arg(short = 'U', long = "udp-ns", value_name = "SPEC")]
    udp_ns: Vec<String>,
    /// The interface's name in the namespace (default: the host's external interface's, else tap0).
    #[arg(short = 'I', long, value_name = "NAME")]
    ns_ifname: Option<String>,
    /// MTU of the interface (default 65520).
    #[arg(short = 'm', long, value_name = "MTU", value_parser = clap::value_parser!(u32).range(68..=65520))]
    mtu: Option<u32>,
    /// The namespace's address (default: the host's); once per family.
    #[arg(short = 'a', long, value_name = "ADDR")]
    address: Vec<IpAddr>,
    /// IPv4 prefix length or netmask (default: the host's).
    #[arg(short = 'n', long, value_name = "MASK")]
    netmask: Option<String>,
    /// The gateway (default: the host's); once per family.
    #[arg(short = 'g', long, value_name = "ADDR")]
    gateway: Vec<IpAddr>,
    /// IPv4 only.
    #[arg(short = '4', long)]
    ipv4_only: bool,
    /// No DHCP server (by default one answers with the namespace's address).
    #[arg(long)]
    no_dhcp: bool,
    /// No router advertisements.
    #[arg(long)]
    no_ra: bool,
    /// No DHCPv6 server (there is none: the namespace gets its IPv6 address from --config-net or SLAAC).
    #[arg(long)]
    no_dhcpv6: bool,
    /// Clients on the host's loopback of forwarded ports reach the namespace's loopback, services
    /// bound there included, and appear there as loopback clients; without it they reach the
    /// namespace's address from that address (either way TCP spliced, UDP from a socket inside).
    #[arg(long)]
    host_lo_to_ns_lo: bool,
    /// Listen for pesto on this Unix socket: published ports shown and changed while running.
    #[arg(short = 'c', long, value_name = "SOCKET")]
    conf_path: Option<PathBuf>,
    /// Print the version and exit.
    #[arg(long)]
    version: bool,
    /// PID whose namespaces to join.
    #[arg(value_name = "PID")]
    target: Vec<String>,
}

/// Runs the personality; returns the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let a: Args = match super::parse_args(args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if a.version {
        println!("pasta (vswitch {} pasta personality)", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    match run(a) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pasta: {e:#}");
            1
        }
    }
}

/// The host's default route: (interface, gateway), from /proc/net/route.
fn host_route4() -> Option<(String, Ipv4Addr)> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 || f[1] != "00000000" {
            return None;
        }
        let gw = u32::from_str_radix(f[2], 16).ok()?;
        Some((f[0].to_string(), Ipv4Addr::from(gw.to_le_bytes())))
    })
}

/// The host's IPv6 default route with a global next hop: (interface, gateway).
fn host_route6() -> Option<(String, Ipv6Addr)> {
    let text = std::fs::read_to_string("/proc/net/ipv6_route").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 10 || f[0] != "0".repeat(32) || f[1] != "00" || f[9] == "lo" {
            return None;
        }
        let gw = Ipv6Addr::from(u128::from_str_radix(f[4], 16).ok()?);
        (!gw.is_unspecified() && !gw.is_unicast_link_local()).then(|| (f[9].to_string(), gw))
    })
}

/// The first address of interface `ifname` that `pick` takes, with its prefix length.
fn iface_addr<A>(ifname: &str, pick: impl Fn(IpAddr) -> Option<A>) -> Option<(A, u8)> {
    sys::interface_addrs(ifname).ok()?.into_iter().find_map(|(a, p)| Some((pick(a)?, p)))
}

fn prefix_of(mask: &str) -> anyhow::Result<u8> {
    if let Ok(p) = mask.parse::<u8>() {
        if p <= 32 {
            return Ok(p);
        }
    }
    let m: Ipv4Addr = mask.parse().map_err(|_| anyhow!("invalid --netmask {mask:?}: a prefix length 0..32 or a dotted mask"))?;
    let bits = u32::from(m);
    if bits.leading_ones() + bits.trailing_zeros() != 32 {
        bail!("invalid --netmask {mask}: not a contiguous mask");
    }
    Ok(bits.leading_ones() as u8)
}

fn plan(a: &Args) -> anyhow::Result<(NetPlan, String)> {
    let route4 = host_route4();
    let ifname = a.ns_ifname.clone().or_else(|| route4.as_ref().map(|r| r.0.clone())).unwrap_or_else(|| "tap0".into());
    let host4 = route4.as_ref().and_then(|(i, _)| iface_addr(i, v4));
    let Some(addr4) = a.address.iter().copied().find_map(v4).or(host4.map(|h| h.0)) else {
        bail!("no usable host interface to copy an IPv4 address from: pass --address, --netmask and --gateway")
    };
    let prefix = match &a.netmask {
        Some(m) => prefix_of(m)?,
        None => host4.filter(|h| h.0 == addr4).map_or(24, |h| h.1),
    };
    let gw4 = a
        .gateway
        .iter()
        .copied()
        .find_map(v4)
        .or(route4.map(|r| r.1))
        .ok_or_else(|| anyhow!("the host has no IPv4 default route to copy a gateway from: pass --gateway"))?;
    if gw4 == addr4 {
        bail!("the gateway {gw4} is the namespace's own address");
    }
    let subnet4 = Ipv4Net::new(addr4, prefix)?.trunc();
    let v6 = if a.ipv4_only {
        None
    } else {
        let route6 = host_route6();
        let global6 = |a| v6(a).filter(|v| !v.is_unicast_link_local());
        let host6 = route6.as_ref().and_then(|(i, _)| iface_addr(i, global6));
        let gw6 = a.gateway.iter().copied().find_map(v6).or(route6.map(|r| r.1));
        match (a.address.iter().copied().find_map(v6).map(|g| (g, 64)).or(host6), gw6) {
            (Some((addr, p)), Some(gw)) if gw != addr => {
                Some(V6Plan { subnet: Ipv6Net::new(addr, p)?.trunc(), guest: Some(addr), gateway: gw, dns: None, ra: !a.no_ra })
            }
            _ => None,
        }
    };
    let mut v6 = v6;
    let mut dns4 = None;
    for d in &a.dns_forward {
        match (d, v6.as_mut()) {
            (IpAddr::V4(v), _) => dns4 = Some(*v),
            (IpAddr::V6(v), Some(p)) => p.dns = Some(*v),
            (IpAddr::V6(_), None) => {}
        }
    }
    let host_alias = match (a.map_guest_addr, a.map_host_loopback) {
        (Some(_), Some(_)) => bail!("--map-guest-addr and --map-host-loopback together are not supported"),
        (Some(g), None) => Some((g, IpAddr::V4(host4.map_or(Ipv4Addr::LOCALHOST, |h| h.0)))),
        (None, Some(l)) => Some((l, if l.is_ipv4() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { IpAddr::V6(Ipv6Addr::LOCALHOST) })),
        (None, None) => None,
    };
    let plan = NetPlan {
        subnet4,
        gateway4: gw4,
        dns4,
        guest4: addr4,
        dhcp: (!a.no_dhcp).then_some(DhcpPlan::Guest),
        v6,
        mtu: a.mtu.unwrap_or(65520),
        host_loopback: !a.no_map_gw,
        outbound4: None,
        outbound6: None,
        gateway_mac: PASTA_MAC,
        dns_upstreams: Vec::new(),
        resolv_conf: super::host_resolv_conf(),
        proxy_all: true,
        host_alias,
    };
    Ok((plan, ifname))
}

fn target(a: &Args) -> anyhow::Result<Target> {
    match (&a.netns, a.target.as_slice()) {
        (Some(_), [_, ..]) => bail!("give either a PID or --netns, not both"),
        (Some(n), []) => {
            let net = if n.contains('/') { PathBuf::from(n) } else { Path::new("/run/netns").join(n) };
            if !net.exists() {
                bail!("--netns {n}: no such network namespace");
            }
            Ok(Target { net, user: a.userns.clone(), user_required: a.userns.is_some() })
        }
        (None, [pid]) => {
            let pid: u32 = pid.parse().map_err(|_| anyhow!("{pid:?}: running a command is not supported; give a PID or --netns"))?;
            let user = a.userns.clone().unwrap_or_else(|| PathBuf::from(format!("/proc/{pid}/ns/user")));
            Ok(Target { net: PathBuf::from(format!("/proc/{pid}/ns/net")), user: Some(user), user_required: a.userns.is_some() })
        }
        (None, []) => bail!("no target: give a PID or --netns PATH (starting a new namespace is not supported)"),
        (None, [_, ..]) => bail!("running a command is not supported; give a PID or --netns"),
    }
}

/// The port specifications of one direction: the last `none`/`auto` wins, explicit lists add up.
fn specs(list: &[String]) -> anyhow::Result<Vec<PortSpec>> {
    list.iter().map(|s| portspec::parse(s).map_err(|e| anyhow!(e))).collect()
}

fn run(a: Args) -> anyhow::Result<()> {
    let (tcp_ns, udp_ns) = (specs(&a.tcp_ns)?, specs(&a.udp_ns)?);
    // pasta's default for -T and -U is auto; the last none or auto given wins over it.
    let auto = |list: &[PortSpec]| match list.iter().rev().find(|s| matches!(s, PortSpec::None | PortSpec::Auto)) {
        Some(s) => *s == PortSpec::Auto,
        None => list.is_empty(),
    };
    let (auto_tcp_ns, auto_udp_ns) = (auto(&tcp_ns), auto(&udp_ns));
    let (tcp, udp) = (specs(&a.tcp_ports)?, specs(&a.udp_ports)?);
    // Bound before anything else (a path that cannot be bound touches nothing) and before the
    // fork: the socket is there once the caller sees this process exit.
    let control = a.conf_path.as_deref().map(|p| super::api::bind(p).with_context(|| format!("-c {}", p.display()))).transpose()?;
    let target = target(&a)?;
    let (plan, ifname) = plan(&a)?;
    // pasta's default for -t and -u is auto.
    let auto_tcp = tcp.is_empty() || tcp.contains(&PortSpec::Auto);
    let auto_udp = udp.is_empty() || udp.contains(&PortSpec::Auto);
    let configure = a.config_net.then(|| TapSpec {
        ifname: ifname.clone(),
        queues: 1,
        mtu: plan.mtu,
        mac: None,
        addr: Some((plan.guest4, plan.subnet4.prefix_len())),
        addr6: plan.v6.as_ref().and_then(|v| Some((v.guest?, v.subnet.prefix_len()))),
        default_via: Some(plan.gateway4),
        default_via6: plan.v6.as_ref().map(|v| v.gateway),
    });
    let (tap, proc_net) = join_and_open_tap(
        &target,
        &ifname,
        configure,
        &["/proc/self/net/tcp", "/proc/self/net/tcp6", "/proc/self/net/udp", "/proc/self/net/udp6"],
    )?;
    // Entered now, so that a namespace this process cannot enter fails the start (unless only
    // -T's and -U's defaults wanted it).
    let explicit_ns = a.host_lo_to_ns_lo || tcp_ns.iter().chain(&udp_ns).any(|s| matches!(s, PortSpec::Ports { .. }));
    let ns = match NsSockets::open(&target.net, target.user.as_deref()) {
        Ok(ns) => Some(Arc::new(if a.host_lo_to_ns_lo { ns } else { ns.with_own_ports() })),
        Err(e) if explicit_ns => return Err(anyhow!("making sockets inside the namespace (--host-lo-to-ns-lo, -T): {e}")),
        Err(e) => {
            if !a.quiet {
                eprintln!("pasta: -T and -U auto are off: no socket can be made inside the namespace: {e}");
            }
            None
        }
    };
    // As pasta since 2024_10_30: loopback clients are spliced either way; the flag decides
    // whether they are loopback clients inside too.
    let to = if a.host_lo_to_ns_lo { SpliceTo::Loopback } else { SpliceTo::Public };
    let splice = ns.clone().map(|ns| Splice { ns, to });
    // Podman and rootlesskit wait for this process to exit, then use the namespace: the
    // foreground half exits only once the background one serves.
    let detached = if a.foreground { None } else { Some(sys::daemonize()?) };
    if let Some(p) = &a.pid_file {
        std::fs::write(p, format!("{}\n", std::process::id())).with_context(|| format!("--pid {}", p.display()))?;
    }
    sys::block_signals();
    sys::raise_nofile();
    let mut stack = Stack::start(plan, tap).context("starting the network stack")?;
    stack.set_splice(splice);
    let stack = Arc::new(stack);
    for (proto, list) in [(Proto::Tcp, &tcp), (Proto::Udp, &udp)] {
        for spec in list {
            match spec {
                PortSpec::Ports { addr, maps, every: true, .. } => publish_every(&stack, proto, *addr, maps, a.quiet),
                PortSpec::Ports { addr, maps, .. } => {
                    for &(host, ns) in maps {
                        publish(&stack, proto, *addr, host, ns, a.quiet);
                    }
                }
                _ => {}
            }
        }
    }
    let mut relays = Relays { ns: ns.clone(), v6: !a.ipv4_only && stack.plan.v6.is_some(), relayed: BTreeMap::new(), quiet: a.quiet };
    for (proto, list) in [(Proto::Tcp, &tcp_ns), (Proto::Udp, &udp_ns)] {
        for spec in list {
            if let PortSpec::Ports { addr, maps, every, .. } = spec {
                let (mut failed, mut first) = (0usize, None);
                for &(nsport, hostport) in maps {
                    // `all`: the ports the namespace's programs hold stay theirs, without a word;
                    // other failures (out of descriptors) are summed up below.
                    let (ids, err) = relays.relay(&stack, proto, *addr, nsport, hostport, !every);
                    if ids.is_empty() {
                        if *every {
                            if let Some(e) = err {
                                failed += 1;
                                first.get_or_insert_with(|| format!("{nsport}: {e}"));
                            }
                            continue;
                        }
                        bail!("-{} {nsport}: cannot take that port inside the namespace", if proto == Proto::Tcp { 'T' } else { 'U' });
                    }
                    relays.relayed.insert((proto, nsport), (false, ids));
                }
                if let (Some(first), false) = (first, a.quiet) {
                    eprintln!("pasta: {failed} {} ports not taken inside the namespace; the first: {first}", proto.name());
                }
            }
        }
    }
    if (auto_tcp_ns || auto_udp_ns) && relays.ns.is_some() {
        let s = stack.clone();
        let open = |p: &str| File::open(p).with_context(|| p.to_string());
        let tcp = if auto_tcp_ns { Some([open("/proc/self/net/tcp")?, open("/proc/self/net/tcp6")?]) } else { None };
        let udp = if auto_udp_ns { Some([open("/proc/self/net/udp")?, open("/proc/self/net/udp6")?]) } else { None };
        let mut host = HostPorts { tcp, udp };
        std::thread::Builder::new().name("pasta-auto-ns".into()).spawn(move || loop {
            relays.refresh(&s, &mut host);
            std::thread::sleep(Duration::from_secs(1));
        })?;
    }
    if let Some(l) = control {
        let s = stack.clone();
        std::thread::Builder::new().name("pasta-pesto".into()).spawn(move || super::pesto::serve(l, &s))?;
    }
    let mut files = proc_net.into_iter();
    let mut next = || files.next().expect("four /proc/net files");
    let (t4, t6, u4, u6) = (next(), next(), next(), next());
    if auto_tcp || auto_udp {
        let s = stack.clone();
        let quiet = a.quiet;
        std::thread::Builder::new().name("pasta-auto".into()).spawn(move || {
            let mut auto = AutoPorts { tcp: auto_tcp.then_some([t4, t6]), udp: auto_udp.then_some([u4, u6]), published: Vec::new() };
            loop {
                auto.refresh(&s, quiet);
                std::thread::sleep(Duration::from_secs(1));
            }
        })?;
    }
    if let Some(d) = detached {
        d.ready();
        sys::silence_stdio();
    }
    let net = target.net.clone();
    let pid_dir = a.target.first().map(|p| PathBuf::from(format!("/proc/{p}")));
    std::thread::Builder::new().name("pasta-watch".into()).spawn(move || {
        // pasta quits when its namespace does: the PID's /proc entry or the namespace file goes.
        while pid_dir.as_deref().map_or_else(|| net.exists(), Path::exists) {
            std::thread::sleep(Duration::from_millis(200));
        }
        sys::raise_process(libc::SIGTERM);
    })?;
    sys::wait_signal();
    for p in a.pid_file.iter().chain(&a.conf_path) {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// Where host port `host` (on `addr`, or on 0.0.0.0 and [::]) is published, and the namespace's
/// address and port `ns` each goes to (its own family's when it has one).
pub(super) fn binds(stack: &Stack, addr: Option<IpAddr>, host: u16, ns: u16) -> Vec<(SocketAddr, SocketAddr)> {
    let guest4 = SocketAddr::new(IpAddr::V4(stack.plan.guest4), ns);
    let guest6 = stack.plan.v6.as_ref().and_then(|v| Some(SocketAddr::new(IpAddr::V6(v.guest?), ns)));
    let pairs: Vec<(IpAddr, SocketAddr)> = match addr {
        Some(ip @ IpAddr::V4(_)) => vec![(ip, guest4)],
        Some(ip @ IpAddr::V6(_)) => vec![(ip, guest6.unwrap_or(guest4))],
        None => vec![(IpAddr::V4(Ipv4Addr::UNSPECIFIED), guest4), (IpAddr::V6(Ipv6Addr::UNSPECIFIED), guest6.unwrap_or(guest4))],
    };
    pairs.into_iter().map(|(ip, guest)| (SocketAddr::new(ip, host), guest)).collect()
}

/// Publishes host port `host` (see [`binds`]) to the namespace's `ns` port. Returns the ids that took.
fn publish(stack: &Stack, proto: Proto, addr: Option<IpAddr>, host: u16, ns: u16, quiet: bool) -> Vec<u64> {
    let mut ids = Vec::new();
    for (host, guest) in binds(stack, addr, host, ns) {
        match stack.add_forward(proto, host, guest) {
            Ok(f) => ids.push(f.id),
            Err(e) if !quiet => eprintln!("pasta: cannot forward {host}/{}: {e}", proto.name()),
            Err(_) => {}
        }
    }
    ids
}

/// `all`, or only exclusions: publishes every port of `maps` that can be bound. Ports held by
/// other programs or privileged are skipped without a word, as pasta does; anything else (out
/// of descriptors) is summed up in one line.
fn publish_every(stack: &Stack, proto: Proto, addr: Option<IpAddr>, maps: &[(u16, u16)], quiet: bool) {
    let (mut failed, mut first) = (0usize, None);
    for &(host, ns) in maps {
        for (host, guest) in binds(stack, addr, host, ns) {
            match stack.add_forward(proto, host, guest) {
                Ok(_) | Err(PublishError::InUse { .. }) => {}
                Err(PublishError::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
                Err(e) => {
                    failed += 1;
                    first.get_or_insert_with(|| format!("{host}/{}: {e}", proto.name()));
                }
            }
        }
    }
    if let (Some(first), false) = (first, quiet) {
        eprintln!("pasta: {failed} {} ports not forwarded; the first: {first}", proto.name());
    }
}

/// `-t auto` / `-u auto`: forward the ports bound in the namespace, re-read every second.
struct AutoPorts {
    tcp: Option<[File; 2]>,
    udp: Option<[File; 2]>,
    /// (proto, port, forward ids).
    published: Vec<(Proto, u16, Vec<u64>)>,
}

impl AutoPorts {
    fn refresh(&mut self, stack: &Stack, quiet: bool) {
        let mut want = BTreeSet::new();
        // Not the sockets this process made there (a relay bound to other than the loopback).
        let own = own_sockets();
        for (proto, files, state) in [(Proto::Tcp, &mut self.tcp, "0A"), (Proto::Udp, &mut self.udp, "07")] {
            let Some(files) = files else { continue };
            for f in files.iter_mut() {
                want.extend(bound_ports(f, state, false, &own).into_iter().map(|p| (proto, p)));
            }
        }
        // Ports pesto removed are published again while they are bound (auto mirrors them).
        let live: HashSet<u64> = stack.forwards().iter().map(|f| f.id).collect();
        self.published.retain(|(_, _, ids)| {
            let whole = ids.iter().all(|id| live.contains(id));
            if !whole {
                ids.iter().for_each(|&id| {
                    stack.remove_forward(id);
                });
            }
            whole
        });
        self.published.retain(|(proto, port, ids)| {
            let keep = want.contains(&(*proto, *port));
            if !keep {
                ids.iter().for_each(|&id| {
                    stack.remove_forward(id);
                });
            }
            keep
        });
        for (proto, port) in want {
            if !self.published.iter().any(|(p, q, _)| (*p, *q) == (proto, port)) {
                let ids = publish(stack, proto, None, port, port, quiet);
                self.published.push((proto, port, ids));
            }
        }
    }
}

/// `-T` and `-U`: ports of the namespace's loopback relayed to the host's.
struct Relays {
    ns: Option<Arc<NsSockets>>,
    v6: bool,
    /// By protocol and namespace port: (whether auto made it, relay ids).
    relayed: BTreeMap<(Proto, u16), (bool, Vec<u64>)>,
    quiet: bool,
}

/// The host's /proc/net files `-T auto` and `-U auto` read.
struct HostPorts {
    tcp: Option<[File; 2]>,
    udp: Option<[File; 2]>,
}

impl Relays {
    /// Takes `nsport` (`proto`) of the namespace's `addr` (its loopback, both families, when
    /// None) and relays it to the host's loopback `hostport`; returns the relays that took,
    /// and the first failure other than the port being held there (reported unless `report`
    /// is false or the process is quiet).
    fn relay(
        &self,
        stack: &Stack,
        proto: Proto,
        addr: Option<IpAddr>,
        nsport: u16,
        hostport: u16,
        report: bool,
    ) -> (Vec<u64>, Option<std::io::Error>) {
        let Some(ns) = &self.ns else { return (Vec::new(), None) };
        let binds = match addr {
            Some(a) => vec![a],
            None if self.v6 => vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)],
            None => vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        };
        let (mut ids, mut failed) = (Vec::new(), None);
        for ip in binds {
            let lo = if ip.is_ipv6() { IpAddr::V6(Ipv6Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::LOCALHOST) };
            let at = SocketAddr::new(ip, nsport);
            let sock = match proto {
                Proto::Udp => ns.udp(at).map(RelaySock::Udp),
                _ => ns.listener(at).map(RelaySock::Tcp),
            };
            match sock.and_then(|s| stack.add_relay(s, SocketAddr::new(lo, hostport))) {
                Ok(id) => ids.push(id),
                // A port the namespace's own programs hold is theirs: auto tries again later.
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
                Err(e) => {
                    if report && !self.quiet {
                        eprintln!("pasta: cannot forward {at}/{} to the host: {e}", proto.name());
                    }
                    failed.get_or_insert(e);
                }
            }
        }
        (ids, failed)
    }

    /// `-T auto`, `-U auto`: relays the ports bound on the host (but this process's own), and
    /// stops relaying those no longer bound.
    fn refresh(&mut self, stack: &Stack, host: &mut HostPorts) {
        let mut want = BTreeSet::new();
        let own = own_sockets();
        for (proto, files, state) in [(Proto::Tcp, &mut host.tcp, "0A"), (Proto::Udp, &mut host.udp, "07")] {
            for f in files.iter_mut().flatten() {
                want.extend(bound_ports(f, state, true, &own).into_iter().map(|p| (proto, p)));
            }
        }
        self.relayed.retain(|key, (auto, ids)| {
            let keep = !*auto || want.contains(key);
            if !keep {
                ids.iter().for_each(|&id| stack.remove_relay(id));
            }
            keep
        });
        for (proto, port) in want {
            if !self.relayed.contains_key(&(proto, port)) {
                let (ids, _) = self.relay(stack, proto, None, port, port, true);
                if !ids.is_empty() {
                    self.relayed.insert((proto, port), (true, ids));
                }
            }
        }
    }
}

/// Ports bound in state `state` (TCP LISTEN "0A", UDP unconnected "07") to an address other than
/// loopback (any address with `loopback`), from a /proc/net/{tcp,udp}[6] file; not those of
/// the sockets whose inodes `skip` holds.
fn bound_ports(f: &mut File, state: &str, loopback: bool, skip: &HashSet<u64>) -> BTreeSet<u16> {
    let mut text = String::new();
    if f.rewind().is_err() || f.read_to_string(&mut text).is_err() {
        return BTreeSet::new();
    }
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let (local, st, inode) = (w.get(1)?, w.get(3)?, w.get(9)?.parse::<u64>().ok()?);
            let (addr, port) = local.split_once(':')?;
            let on_lo = addr == "0100007F" || addr == "00000000000000000000000001000000";
            (*st == state && (loopback || !on_lo) && !skip.contains(&inode)).then(|| u16::from_str_radix(port, 16).ok()).flatten()
        })
        .collect()
}

/// The inodes of this process's own sockets: what `-T auto` and `-U auto` must not relay back
/// into the namespace (published ports, the DNS forwarder's sockets, relays' host sockets).
fn own_sockets() -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return HashSet::new() };
    dir.flatten()
        .filter_map(|e| {
            let link = std::fs::read_link(e.path()).ok()?;
            link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("pasta").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn podman_and_rootlesskit_command_lines_parse() {
        let a = parse(&[
            "--config-net",
            "-t",
            "8080-8080:80-80",
            "-u",
            "5353-5353:53-53",
            "--dns-forward",
            "169.254.1.1",
            "-T",
            "none",
            "-U",
            "none",
            "--no-map-gw",
            "--quiet",
            "--netns",
            "/run/user/1000/netns/x",
            "--map-guest-addr",
            "169.254.1.2",
        ]);
        assert!(a.config_net && a.no_map_gw && a.quiet);
        assert_eq!(a.dns_forward, vec!["169.254.1.1".parse::<IpAddr>().unwrap()]);
        assert_eq!((a.tcp_ports.len(), a.udp_ports.len(), a.tcp_ns.as_slice()), (1, 1, &["none".to_string()][..]));
        let a = parse(&[
            "--stderr",
            "--ns-ifname=tap0",
            "--mtu=65520",
            "--config-net",
            "--address=10.0.2.100",
            "--netmask=24",
            "--gateway=10.0.2.2",
            "--dns-forward=10.0.2.3",
            "--ipv4-only",
            "--tcp-ports=none",
            "--udp-ports=none",
            "1234",
        ]);
        let (p, ifname) = plan(&a).unwrap();
        assert_eq!(ifname, "tap0");
        assert_eq!(
            (p.guest4, p.gateway4, p.dns4, p.subnet4.to_string()),
            (Ipv4Addr::new(10, 0, 2, 100), Ipv4Addr::new(10, 0, 2, 2), Some(Ipv4Addr::new(10, 0, 2, 3)), "10.0.2.0/24".to_string())
        );
        assert!(p.v6.is_none() && p.host_loopback);
        assert_eq!(target(&a).unwrap().net, PathBuf::from("/proc/1234/ns/net"));
    }

    #[test]
    fn unsupported_and_bad_options_are_errors() {
        assert!(Args::try_parse_from(["pasta", "--splice-only", "1"]).unwrap_err().to_string().contains("--splice-only"));
        assert!(Args::try_parse_from(["pasta", "--mtu=70000", "1"]).is_err());
        // rootlesskit's probe: passing it enables --host-lo-to-ns-lo.
        assert_eq!(main(vec!["pasta".into(), "--host-lo-to-ns-lo".into(), "--version".into()]), 0);
        assert_eq!(main(vec!["pasta".into(), "--version".into()]), 0);
        assert!(prefix_of("255.255.0.0").unwrap() == 16 && prefix_of("20").unwrap() == 20);
        assert!(prefix_of("255.0.255.0").is_err() && prefix_of("x").is_err());
        let e = target(&parse(&["sh", "-c", "true"])).unwrap_err().to_string();
        assert!(e.contains("running a command is not supported"), "{e}");
        assert!(Args::command().render_help().to_string().contains("--map-guest-addr"));
    }

    #[test]
    fn proc_net_parsing() {
        let dir = std::env::temp_dir().join(format!("pasta-procnet-{}", std::process::id()));
        std::fs::write(
            &dir,
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1\n\
             1: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2\n\
             2: 6400020A:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3\n\
             3: 6400020A:C350 0300020A:0050 01 00000000:00000000 00:00000000 00000000     0        0 4\n",
        )
        .unwrap();
        let mut f = File::open(&dir).unwrap();
        let none = HashSet::new();
        assert_eq!(bound_ports(&mut f, "0A", false, &none), BTreeSet::from([8080, 80]));
        // Read again from the start: the file is re-read every second.
        assert_eq!(bound_ports(&mut f, "0A", false, &none).len(), 2);
        assert_eq!(bound_ports(&mut f, "0A", true, &none), BTreeSet::from([8080, 80, 631]));
        assert_eq!(bound_ports(&mut f, "0A", true, &HashSet::from([1, 3])), BTreeSet::from([631]));
        let _ = std::fs::remove_file(&dir);
    }
}
