//! Drop-in personalities for rootless container runtimes: the same binary, run as `slirp4netns`,
//! `pasta` or `pesto` (argv[0], or `vswitchd slirp4netns ...`), speaks those programs' command lines
//! and protocols, with vswitch's stack behind them.

pub mod api;
pub mod pasta;
pub mod pesto;
pub mod portspec;
pub mod slirp4netns;
pub mod stack;
pub mod sys;

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use vswitch_switch::port::{Tap, TapOptions};
use vswitch_switch::sys::setns;

use crate::provision::{self, TapSpec};

/// The personality `argv` asks for: by the program's file name, or by a first argument naming
/// one (`vswitchd slirp4netns ...`). Returns the arguments as that program would see them.
pub fn personality(argv: &[OsString]) -> Option<(&'static str, Vec<OsString>)> {
    let name = |s: &OsString| -> Option<&'static str> {
        let base = Path::new(s).file_name()?.to_str()?;
        ["slirp4netns", "pasta", "pesto"].into_iter().find(|p| *p == base)
    };
    if let Some(p) = argv.first().and_then(name) {
        return Some((p, argv.to_vec()));
    }
    let p = argv.get(1).filter(|a| !a.to_string_lossy().contains('/')).and_then(name)?;
    Some((p, argv[1..].to_vec()))
}

/// Runs a personality named by [`personality`]; returns the process's exit code.
pub fn run(name: &str, args: Vec<OsString>) -> i32 {
    match name {
        "slirp4netns" => slirp4netns::main(args),
        "pasta" => pasta::main(args),
        "pesto" => pesto::main(args),
        other => {
            eprintln!("{other}: this personality is not available in this build");
            1
        }
    }
}

/// Parses a personality's arguments; Err is the exit code once help or the error is printed
/// (0 for --help; 1 for a bad argument, as slirp4netns and pasta exit).
fn parse_args<T: clap::Parser>(args: Vec<OsString>) -> Result<T, i32> {
    T::try_parse_from(args).map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            1
        } else {
            0
        }
    })
}

/// The namespaces a personality serves.
#[derive(Debug, Clone)]
pub struct Target {
    pub net: PathBuf,
    /// The user namespace to join first (it owns `net`, so joining it gives the rights to
    /// open a TAP there without privileges on the host).
    pub user: Option<PathBuf>,
    /// Whether failing to join `user` is an error; joining one's own fails, harmlessly.
    pub user_required: bool,
}

/// Opens (or attaches to) the TAP `ifname` inside the target's namespaces, in a forked child
/// that joins them, configuring it when `configure` says how, and opening `files` there too
/// (`/proc/self/net/tcp` reads the namespace's sockets ever after); the fds come back to this
/// process, which never leaves its own namespaces. Call while single-threaded.
pub fn join_and_open_tap(
    t: &Target,
    ifname: &str,
    configure: Option<TapSpec>,
    files: &'static [&'static str],
) -> anyhow::Result<(Tap, Vec<std::fs::File>)> {
    let t2 = t.clone();
    let name = ifname.to_string();
    let mut fds = sys::in_child(move || {
        let net = std::fs::File::open(&t2.net).map_err(|e| format!("{}: {e}", t2.net.display()))?;
        if let Some(u) = &t2.user {
            match std::fs::File::open(u).and_then(|f| setns(&f, libc::CLONE_NEWUSER)) {
                // EINVAL: it is our own user namespace already.
                Err(e) if t2.user_required && e.raw_os_error() != Some(libc::EINVAL) => {
                    return Err(format!("joining the user namespace {}: {e}", u.display()))
                }
                _ => {}
            }
        }
        setns(&net, libc::CLONE_NEWNET).map_err(|e| format!("joining the network namespace {}: {e}", t2.net.display()))?;
        let tap = Tap::open(&name, &TapOptions { queues: 1, persist: false, adopt: true }).map_err(|e| e.to_string())?;
        if let Some(spec) = &configure {
            provision::configure_here(spec).map_err(|e| format!("configuring {name}: {e}"))?;
        }
        let mut fds = tap.into_fds();
        for f in files {
            fds.push(std::fs::File::open(f).map_err(|e| format!("{f}: {e}"))?.into());
        }
        Ok(fds)
    })
    .map_err(|e| anyhow!(e))?;
    if fds.len() != 1 + files.len() {
        bail!("the namespace helper sent {} fds, expected {}", fds.len(), 1 + files.len());
    }
    let rest = fds.split_off(1).into_iter().map(std::fs::File::from).collect();
    Ok((Tap::from_fds(ifname, fds), rest))
}

/// `--outbound-addr`: an IPv4 address, or an interface whose first IPv4 address to use.
pub fn outbound_v4(s: &str) -> anyhow::Result<Ipv4Addr> {
    outbound(s, "--outbound-addr", v4)
}

/// `--outbound-addr6`: an IPv6 address, or an interface whose first global IPv6 address to use.
pub fn outbound_v6(s: &str) -> anyhow::Result<Ipv6Addr> {
    outbound(s, "--outbound-addr6", |a| v6(a).filter(|v| !v.is_unicast_link_local()))
}

/// The IPv4 address, if `a` is one.
fn v4(a: IpAddr) -> Option<Ipv4Addr> {
    match a {
        IpAddr::V4(v) => Some(v),
        IpAddr::V6(_) => None,
    }
}

/// The IPv6 address, if `a` is one.
fn v6(a: IpAddr) -> Option<Ipv6Addr> {
    match a {
        IpAddr::V6(v) => Some(v),
        IpAddr::V4(_) => None,
    }
}

fn outbound<A: std::str::FromStr>(s: &str, flag: &str, pick: impl Fn(IpAddr) -> Option<A>) -> anyhow::Result<A> {
    if let Ok(a) = s.parse::<A>() {
        return Ok(a);
    }
    if s.parse::<IpAddr>().is_ok() {
        bail!("{flag} {s}: an address of the wrong family");
    }
    let addrs = sys::interface_addrs(s).map_err(|e| anyhow!("{flag} {s}: {e}"))?;
    addrs
        .into_iter()
        .find_map(|(a, _)| pick(a))
        .ok_or_else(|| anyhow!("{flag} {s}: neither an address nor an interface with one of that family"))
}

/// Where the DNS forwarder finds the host's resolvers: /etc/resolv.conf, or the file
/// `VSWITCH_RESOLV_CONF` names (slirp4netns and pasta have no flag for it).
pub fn host_resolv_conf() -> PathBuf {
    std::env::var_os("VSWITCH_RESOLV_CONF").map_or_else(|| PathBuf::from("/etc/resolv.conf"), PathBuf::from)
}

/// Applies `--enable-sandbox` / `--enable-seccomp`. Call while single-threaded, after every
/// file the process needs later (TAP, API socket) is open.
///
/// The sandbox keeps /etc and /run (slirp4netns's choice), the resolv.conf in use, and `keep_rw`
/// (the API socket's directory, so the socket can be removed at exit).
pub fn confine_personality(sandbox: bool, seccomp: bool, keep_rw: &[&Path]) -> anyhow::Result<()> {
    use crate::confine::{enter_sandbox, enter_seccomp, Keep, Profile, Sandbox};
    if sandbox {
        let mut sb = Sandbox::slirp4netns();
        if let Some(dir) = host_resolv_conf().parent().filter(|d| !d.starts_with("/etc") && !d.starts_with("/run")) {
            sb.keep.push(Keep::ro(dir));
        }
        sb.keep.extend(keep_rw.iter().copied().map(Keep::rw));
        enter_sandbox(&sb).map_err(|e| anyhow!("--enable-sandbox: {e}"))?;
    }
    if seccomp {
        enter_seccomp(Profile::Engine, &[]).map_err(|e| anyhow!("--enable-seccomp: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn personality_by_name_or_first_argument() {
        assert_eq!(personality(&os(&["/usr/bin/slirp4netns", "--help"])), Some(("slirp4netns", os(&["/usr/bin/slirp4netns", "--help"]))));
        assert_eq!(personality(&os(&["vswitchd", "slirp4netns", "-c"])), Some(("slirp4netns", os(&["slirp4netns", "-c"]))));
        assert_eq!(personality(&os(&["pasta", "--version"])).map(|p| p.0), Some("pasta"));
        assert_eq!(personality(&os(&["vswitchd", "--socket", "/x"])), None);
        assert_eq!(personality(&os(&["vswitchd", "/tmp/slirp4netns"])), None);
        assert_eq!(personality(&os(&["vswitchd"])), None);
    }

    #[test]
    fn outbound_addresses_and_interfaces() {
        assert_eq!(outbound_v4("192.0.2.7").unwrap(), Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(outbound_v4("lo").unwrap(), Ipv4Addr::LOCALHOST);
        assert!(outbound_v4("::1").unwrap_err().to_string().contains("wrong family"));
        assert!(outbound_v4("no-such-if0").is_err());
        assert_eq!(outbound_v6("2001:db8::1").unwrap(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
    }
}
