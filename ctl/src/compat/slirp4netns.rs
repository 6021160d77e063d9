//! The `slirp4netns` personality: slirp4netns's command line, namespaces, TAP handling, ready
//! and exit fds and API socket, served by vswitch's own stack.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use clap::{Parser, ValueEnum};
use ipnet::{Ipv4Net, Ipv6Net};
use vswitch_nat::Proto;
use vswitch_switch::Mac;

use super::stack::{slirp_mac, DhcpPlan, Forward, NetPlan, Stack, V6Plan};
use super::{api, confine_personality, join_and_open_tap, outbound_v4, outbound_v6, sys, Target};
use crate::provision::TapSpec;

/// The version of slirp4netns whose interface this personality speaks.
pub const COMPAT_VERSION: &str = "1.2.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum NetnsType {
    Pid,
    Path,
    Tapfd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TargetType {
    Netns,
    Bess,
}

/// User-mode networking for unprivileged network namespaces (vswitch's slirp4netns).
#[derive(Debug, Parser)]
#[command(
    name = "slirp4netns",
    override_usage = "slirp4netns [OPTION]... PID|PATH [TAPNAME]",
    disable_version_flag = true,
    after_help = "DNS at net+3 forwards to the servers of /etc/resolv.conf ($VSWITCH_RESOLV_CONF names another file).\n\
                  Addresses: network 10.0.2.0/24 unless --cidr; gateway and host net+2, DNS net+3, container net+100, DHCP from net+15.\n\
                  IPv6 (--enable-ipv6): fd00::/64, gateway fd00::2, DNS fd00::3, addresses by router advertisement."
)]
struct Args {
    /// Bring up the interface: lo and TAPNAME up, MTU, net+100, default route via net+2.
    #[arg(short = 'c', long)]
    configure: bool,
    /// Exit when this file descriptor is closed (hang-up).
    #[arg(short = 'e', long, value_name = "FD")]
    exit_fd: Option<i32>,
    /// Write "1" to this file descriptor and close it once serving.
    #[arg(short = 'r', long, value_name = "FD")]
    ready_fd: Option<i32>,
    /// MTU of the TAP and the network (1..65521).
    #[arg(short = 'm', long, value_name = "MTU", default_value_t = 1500, value_parser = clap::value_parser!(u32).range(1..=65521))]
    mtu: u32,
    /// IPv4 network (prefix 1..25), e.g. 10.0.2.0/24.
    #[arg(long, value_name = "CIDR")]
    cidr: Option<String>,
    /// Prohibit connecting to the host's 127.0.0.1:* through net+2.
    #[arg(long, alias = "no-host-loopback")]
    disable_host_loopback: bool,
    /// What PID|PATH names: a process whose namespaces to join, or a network namespace file.
    #[arg(long, value_enum, value_name = "pid|path", default_value = "pid")]
    netns_type: NetnsType,
    /// User namespace to join with --netns-type=path.
    #[arg(long, value_name = "PATH")]
    userns_path: Option<PathBuf>,
    /// API socket (add_hostfwd, list_hostfwd, remove_hostfwd).
    #[arg(short = 'a', long, value_name = "PATH")]
    api_socket: Option<PathBuf>,
    /// Enable IPv6 (fd00::/64 with router advertisements).
    #[arg(short = '6', long)]
    enable_ipv6: bool,
    /// Confine the process: a new mount namespace pivoted to an empty root, capabilities dropped.
    #[arg(long, alias = "create-sandbox")]
    enable_sandbox: bool,
    /// Confine the process to the system calls it uses (a seccomp filter).
    #[arg(long)]
    enable_seccomp: bool,
    /// Source address (or interface) of outbound IPv4 connections.
    #[arg(long, value_name = "IPv4|IF")]
    outbound_addr: Option<String>,
    /// Source address (or interface) of outbound IPv6 connections.
    #[arg(long, value_name = "IPv6|IF")]
    outbound_addr6: Option<String>,
    /// No DNS forwarder at net+3.
    #[arg(long)]
    disable_dns: bool,
    /// MAC address of the TAP (with --configure).
    #[arg(long, value_name = "MAC")]
    macaddress: Option<String>,
    /// Target: a network namespace (bess, for User Mode Linux, is not supported).
    #[arg(long, value_enum, value_name = "netns|bess", default_value = "netns")]
    target_type: TargetType,
    /// Print version information and exit.
    #[arg(short = 'v', long)]
    version: bool,
    /// PID|PATH [TAPNAME]
    #[arg(value_name = "PID|PATH")]
    target: Option<String>,
    #[arg(value_name = "TAPNAME")]
    tapname: Option<String>,
    #[arg(hide = true)]
    extra: Vec<String>,
}

/// Runs the personality; returns the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let a: Args = match super::parse_args(args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if a.version {
        println!("slirp4netns version {COMPAT_VERSION} (vswitch {})", env!("CARGO_PKG_VERSION"));
        println!("commit: vswitch");
        println!("libslirp: none (the vswitch slirp engine)");
        println!("SLIRP_CONFIG_VERSION_MAX: 0");
        println!("libseccomp: none (seccompiler)");
        return 0;
    }
    match run(a) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("slirp4netns: {e:#}");
            1
        }
    }
}

fn plan(a: &Args) -> anyhow::Result<NetPlan> {
    let subnet: Ipv4Net = match &a.cidr {
        None => Ipv4Net::new(Ipv4Addr::new(10, 0, 2, 0), 24)?,
        Some(c) => {
            let n: Ipv4Net = c.parse().map_err(|_| anyhow!("invalid --cidr {c:?}: expected an IPv4 network such as 10.0.2.0/24"))?;
            if !(1..=25).contains(&n.prefix_len()) {
                bail!("invalid --cidr {c:?}: the prefix length must be 1..25");
            }
            n.trunc()
        }
    };
    let at = |k: u32| Ipv4Addr::from(u32::from(subnet.network()) + k);
    if let Some(m) = &a.macaddress {
        if !a.configure {
            bail!("--macaddress can only be used with --configure");
        }
        m.parse::<Mac>().map_err(|e| anyhow!("invalid --macaddress {m:?}: {e}"))?;
    }
    let v6 = a.enable_ipv6.then(|| V6Plan {
        subnet: Ipv6Net::new(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0), 64).expect("a /64"),
        guest: None,
        gateway: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
        dns: (!a.disable_dns).then_some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3)),
        ra: true,
    });
    Ok(NetPlan {
        subnet4: subnet,
        gateway4: at(2),
        dns4: (!a.disable_dns).then_some(at(3)),
        guest4: at(100),
        dhcp: Some(DhcpPlan::Range(at(15))),
        v6,
        mtu: a.mtu,
        host_loopback: !a.disable_host_loopback,
        outbound4: a.outbound_addr.as_deref().map(outbound_v4).transpose()?,
        outbound6: a.outbound_addr6.as_deref().map(outbound_v6).transpose()?,
        gateway_mac: slirp_mac(at(2)),
        dns_upstreams: Vec::new(),
        resolv_conf: super::host_resolv_conf(),
        proxy_all: false,
        host_alias: None,
    })
}

fn target(a: &Args) -> anyhow::Result<Target> {
    let Some(t) = a.target.as_deref() else { bail!("missing PID|PATH (usage: slirp4netns [OPTION]... PID|PATH [TAPNAME])") };
    match a.netns_type {
        NetnsType::Pid => {
            let pid: u32 = t.parse().map_err(|_| anyhow!("{t:?} is not a PID (use --netns-type=path for a namespace file)"))?;
            if a.userns_path.is_some() {
                bail!("--userns-path needs --netns-type=path");
            }
            Ok(Target {
                net: PathBuf::from(format!("/proc/{pid}/ns/net")),
                user: Some(PathBuf::from(format!("/proc/{pid}/ns/user"))),
                user_required: false,
            })
        }
        NetnsType::Path => {
            let net = PathBuf::from(t);
            if !net.exists() {
                bail!("{t}: no such network namespace file");
            }
            if let Some(u) = &a.userns_path {
                if !u.exists() {
                    bail!("--userns-path {}: no such file", u.display());
                }
            }
            Ok(Target { net, user: a.userns_path.clone(), user_required: a.userns_path.is_some() })
        }
        NetnsType::Tapfd => bail!("--netns-type=tapfd is not supported: pass the namespace (pid or path) and the TAP's name"),
    }
}

fn run(a: Args) -> anyhow::Result<()> {
    if a.target_type == TargetType::Bess {
        bail!("--target-type=bess is not supported (only netns)");
    }
    let plan = plan(&a)?;
    let target = target(&a)?;
    let Some(tapname) = a.tapname.clone() else { bail!("missing TAPNAME (usage: slirp4netns [OPTION]... PID|PATH [TAPNAME])") };
    if !a.extra.is_empty() {
        eprintln!("WARNING: too many arguments");
    }
    if plan.host_loopback {
        eprintln!(
            "WARNING: 127.0.0.1:* on the host is accessible as {} (set --disable-host-loopback to prohibit connecting to 127.0.0.1:*)",
            plan.gateway4
        );
    }
    if a.enable_ipv6 {
        eprintln!("WARNING: IPv6 is served on fd00::/64 (router advertisements; gateway fd00::2, DNS fd00::3)");
    }
    for (flag, fd) in [("--exit-fd", a.exit_fd), ("--ready-fd", a.ready_fd)] {
        if let Some(fd) = fd.filter(|&fd| fd < 0 || !sys::fd_is_open(fd)) {
            bail!("{flag} {fd}: not an open file descriptor (the caller must pass it open)");
        }
    }
    let configure = a.configure.then(|| TapSpec {
        ifname: tapname.clone(),
        queues: 1,
        mtu: plan.mtu,
        mac: a.macaddress.as_deref().and_then(|m| m.parse().ok()),
        addr: Some((plan.guest4, plan.subnet4.prefix_len())),
        addr6: None,
        default_via: Some(plan.gateway4),
        default_via6: None,
    });
    let (tap, _) = join_and_open_tap(&target, &tapname, configure, &[])?;
    let listener = a.api_socket.as_deref().map(|p| api::bind(p).with_context(|| format!("API socket {}", p.display()))).transpose()?;
    let api_dir: Vec<&std::path::Path> = a.api_socket.as_deref().and_then(std::path::Path::parent).into_iter().collect();
    confine_personality(a.enable_sandbox, a.enable_seccomp, &api_dir)?;
    sys::block_signals();
    let stack = Arc::new(Stack::start(plan, tap).context("starting the network stack")?);
    if let Some(l) = listener {
        let s = stack.clone();
        std::thread::Builder::new().name("slirp4netns-api".into()).spawn(move || api::serve(l, &*s))?;
    }
    if let Some(fd) = a.ready_fd {
        // SAFETY: the fd was handed to us for this one purpose and is open (checked at the start).
        let mut f = File::from(unsafe { sys::own_fd(fd) });
        f.write_all(b"1").context("writing to the ready fd")?;
    }
    if let Some(fd) = a.exit_fd {
        std::thread::Builder::new().name("slirp4netns-exit".into()).spawn(move || {
            sys::wait_hangup(fd);
            sys::raise_process(libc::SIGTERM);
        })?;
    }
    let sig = sys::wait_signal();
    log::debug!("exiting on signal {sig}");
    if let Some(p) = &a.api_socket {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

impl api::Forwards for Stack {
    fn add(&self, proto: Proto, host: SocketAddr, guest: SocketAddr) -> Result<u64, String> {
        self.add_forward(proto, host, guest).map(|f: Forward| f.id).map_err(|e| e.to_string())
    }
    fn remove(&self, id: u64) -> bool {
        self.remove_forward(id)
    }
    fn list(&self) -> Vec<Forward> {
        self.forwards()
    }
    fn guest(&self) -> (Ipv4Addr, Ipv4Net) {
        (self.plan.guest4, self.plan.subnet4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn help_lists_every_flag_callers_probe() {
        let help = Args::command().render_help().to_string();
        for flag in [
            "--configure",
            "--exit-fd",
            "--ready-fd",
            "--mtu",
            "--enable-ipv6",
            "--api-socket",
            "--cidr",
            "--disable-host-loopback",
            "--netns-type",
            "--userns-path",
            "--enable-sandbox",
            "--enable-seccomp",
            "--outbound-addr",
            "--outbound-addr6",
            "--disable-dns",
            "--macaddress",
            "--help",
            "--version",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
        }
    }

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("slirp4netns").chain(args.iter().copied()))
    }

    #[test]
    fn podman_and_rootlesskit_command_lines_parse() {
        // Podman 5: `--opt=value` forms.
        let a = parse(&[
            "--disable-host-loopback",
            "--mtu=65520",
            "--enable-sandbox",
            "--enable-seccomp",
            "--enable-ipv6",
            "-c",
            "-r",
            "3",
            "-e",
            "4",
            "--netns-type=path",
            "/run/user/1000/netns/cni-1",
            "tap0",
        ])
        .unwrap();
        assert_eq!((a.mtu, a.ready_fd, a.exit_fd, a.netns_type), (65520, Some(3), Some(4), NetnsType::Path));
        assert!(a.configure && a.disable_host_loopback && a.enable_ipv6 && a.enable_sandbox && a.enable_seccomp);
        assert_eq!((a.target.as_deref(), a.tapname.as_deref()), (Some("/run/user/1000/netns/cni-1"), Some("tap0")));
        // rootlesskit: space-separated values, a PID.
        let a = parse(&[
            "--mtu",
            "65520",
            "-r",
            "3",
            "--disable-host-loopback",
            "--api-socket",
            "/tmp/s",
            "--cidr",
            "10.0.3.0/24",
            "1234",
            "tap0",
        ])
        .unwrap();
        assert_eq!(a.netns_type, NetnsType::Pid);
        let p = plan(&a).unwrap();
        assert_eq!(
            (p.gateway4, p.dns4, p.guest4),
            (Ipv4Addr::new(10, 0, 3, 2), Some(Ipv4Addr::new(10, 0, 3, 3)), Ipv4Addr::new(10, 0, 3, 100))
        );
        assert_eq!(target(&a).unwrap().net, PathBuf::from("/proc/1234/ns/net"));
    }

    #[test]
    fn bad_values_name_what_was_expected() {
        assert!(parse(&["--mtu=65522", "1", "tap0"]).is_err());
        assert!(parse(&["--mtu=0", "1", "tap0"]).is_err());
        assert!(parse(&["--netns-type=file", "1", "tap0"]).is_err());
        let e = plan(&parse(&["--cidr=10.0.0.0/26", "1", "tap0"]).unwrap()).unwrap_err().to_string();
        assert!(e.contains("1..25"), "{e}");
        let e = plan(&parse(&["--cidr=bogus", "1", "tap0"]).unwrap()).unwrap_err().to_string();
        assert!(e.contains("IPv4 network"), "{e}");
        let e = plan(&parse(&["--macaddress=02:00:00:00:00:01", "1", "tap0"]).unwrap()).unwrap_err().to_string();
        assert!(e.contains("--configure"), "{e}");
        let e = target(&parse(&["notapid", "tap0"]).unwrap()).unwrap_err().to_string();
        assert!(e.contains("not a PID"), "{e}");
        let e = target(&parse(&["--netns-type=path", "/nonexistent/ns", "tap0"]).unwrap()).unwrap_err().to_string();
        assert!(e.contains("no such network namespace"), "{e}");
    }
}
