//! Provisioning: resolve a sandbox to its network namespace, and create, configure, re-attach
//! and delete its interfaces through netlink (never by running `ip`).
//!
//! Work inside a namespace runs on a short-lived thread that entered it (see
//! `vswitch_switch::sys::in_netns`): netlink sockets and TAP devices are created in the
//! namespace of the thread that opens them.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlag};
use vswitch_switch::port::{AfPacket, Tap, TapOptions};
use vswitch_switch::{sys, Mac};

/// A network namespace as named by the user, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsRef {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    /// The container name to use when none is given.
    pub default_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("sandbox {0:?} not found: expected a namespace name under /var/run/netns, a path to a namespace file, or a PID ({1})")]
    NoSandbox(String, io::Error),
    #[error("sandbox {0:?} is not a network namespace")]
    NotNetns(String),
    #[error("sandbox {0:?} is vswitchd's own network namespace (the host's); connect a container's namespace instead")]
    HostNamespace(String),
    #[error(transparent)]
    Tap(#[from] vswitch_switch::port::TapError),
    #[error("{what}: {source}")]
    Netlink { what: String, source: io::Error },
    #[error("interface {0}: {1}")]
    Veth(String, io::Error),
}

fn nl<E: std::fmt::Display>(what: impl Into<String>) -> impl FnOnce(E) -> ProvisionError {
    let what = what.into();
    move |e| ProvisionError::Netlink { what, source: io::Error::other(e.to_string()) }
}

/// Resolves a namespace name, path or PID.
pub fn resolve_sandbox(spec: &str) -> Result<NsRef, ProvisionError> {
    let (path, default_name) = if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        (PathBuf::from(format!("/proc/{spec}/ns/net")), format!("pid{spec}"))
    } else if spec.contains('/') {
        let p = PathBuf::from(spec);
        let name = p.file_name().map_or_else(|| spec.to_string(), |n| n.to_string_lossy().into_owned());
        (p, name)
    } else if spec.is_empty() || spec == "." || spec == ".." {
        return Err(ProvisionError::NoSandbox(spec.to_string(), io::ErrorKind::InvalidInput.into()));
    } else {
        (PathBuf::from("/var/run/netns").join(spec), spec.to_string())
    };
    let md = std::fs::metadata(&path).map_err(|e| ProvisionError::NoSandbox(spec.to_string(), e))?;
    if !is_netns(&path) {
        return Err(ProvisionError::NotNetns(spec.to_string()));
    }
    let own = std::fs::metadata("/proc/self/ns/net").map_err(|e| ProvisionError::NoSandbox(spec.to_string(), e))?;
    if own.dev() == md.dev() && own.ino() == md.ino() {
        return Err(ProvisionError::HostNamespace(spec.to_string()));
    }
    Ok(NsRef { path, dev: md.dev(), ino: md.ino(), default_name })
}

/// True when `path` opens as a network namespace (nsfs inode of type net).
fn is_netns(path: &Path) -> bool {
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    let Ok(f) = std::fs::File::open(path) else { return false };
    use std::os::fd::AsRawFd;
    // SAFETY: NS_GET_NSTYPE takes no argument and only inspects the fd.
    let t = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE as _) };
    t == libc::CLONE_NEWNET
}

/// True when the namespace at `path` still exists and is the one we recorded.
pub fn same_namespace(path: &Path, dev: u64, ino: u64) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// How a TAP inside a sandbox is set up.
#[derive(Debug, Clone)]
pub struct TapSpec {
    pub ifname: String,
    pub queues: usize,
    pub mtu: u32,
    /// None leaves the device's MAC as it is.
    pub mac: Option<Mac>,
    pub addr: Option<(Ipv4Addr, u8)>,
    pub addr6: Option<(Ipv6Addr, u8)>,
    /// Install a default route via this gateway (the sandbox's first network).
    pub default_via: Option<Ipv4Addr>,
    pub default_via6: Option<Ipv6Addr>,
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()
}

/// Opens the sandbox's TAP, configuring it unless it already existed and `reconfigure` is false.
/// Returns the TAP and whether it had to be (re)created.
pub fn ensure_tap(netns: &Path, spec: TapSpec, reconfigure: bool) -> Result<(Tap, bool), ProvisionError> {
    let r = sys::in_netns(netns, move || {
        let existed = sys::if_nametoindex(&spec.ifname).is_ok();
        let tap = match Tap::open(&spec.ifname, &TapOptions { queues: spec.queues, persist: true, adopt: false }) {
            Ok(t) => t,
            Err(e) => return Ok(Err(ProvisionError::from(e))),
        };
        let configure = reconfigure || !existed;
        let rt = runtime()?;
        let res = rt.block_on(configure_link(&spec, configure));
        if res.is_err() && !existed {
            // Leave nothing half-made behind.
            let _ = tap.unpersist();
        }
        Ok(res.map(|()| (tap, !existed)))
    });
    r.map_err(|e| ProvisionError::Netlink { what: "entering the sandbox's namespace".into(), source: e })?
}

/// Configures an interface of the calling thread's namespace as `spec` says, every setting
/// (the slirp4netns personality's `--configure`, run in a process that joined the namespace).
pub fn configure_here(spec: &TapSpec) -> Result<(), ProvisionError> {
    runtime().map_err(nl("tokio runtime"))?.block_on(configure_link(spec, true))
}

async fn configure_link(spec: &TapSpec, full: bool) -> Result<(), ProvisionError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(nl("netlink socket"))?;
    tokio::spawn(conn);
    let ifname = &spec.ifname;
    let mut links = handle.link().get().match_name(ifname.clone()).execute();
    let link = links.try_next().await.map_err(nl(format!("looking up {ifname}")))?;
    let index = link
        .map(|l| l.header.index)
        .ok_or_else(|| ProvisionError::Netlink { what: format!("looking up {ifname}"), source: io::ErrorKind::NotFound.into() })?;
    if full {
        let mut set = handle.link().set(index).mtu(spec.mtu);
        if let Some(mac) = spec.mac {
            set = set.address(mac.0.to_vec());
        }
        set.execute().await.map_err(nl(format!("setting MTU {} and MAC {:?} on {ifname}", spec.mtu, spec.mac)))?;
    }
    // The loopback must be up for a sandbox to talk to itself; harmless if it already is.
    if let Some(lo) = handle.link().get().match_name("lo".into()).execute().try_next().await.ok().flatten() {
        let _ = handle.link().set(lo.header.index).up().execute().await;
    }
    handle.link().set(index).up().execute().await.map_err(nl(format!("bringing {ifname} up")))?;
    if full {
        if let Some((ip, prefix)) = spec.addr {
            ignore_exists(handle.address().add(index, IpAddr::V4(ip), prefix).execute().await)
                .map_err(nl(format!("adding {ip}/{prefix} to {ifname}")))?;
        }
        if let Some((ip, prefix)) = spec.addr6 {
            // No duplicate address detection: IPAM already guarantees uniqueness, and DAD would
            // leave the address unusable ("tentative") for a second or more after connect.
            let mut req = handle.address().add(index, IpAddr::V6(ip), prefix);
            req.message_mut().attributes.push(AddressAttribute::Flags(vec![AddressFlag::Nodad]));
            ignore_exists(req.execute().await).map_err(nl(format!("adding {ip}/{prefix} to {ifname}")))?;
        }
        if let Some(gw) = spec.default_via {
            ignore_exists(handle.route().add().v4().gateway(gw).output_interface(index).execute().await)
                .map_err(nl(format!("adding default route via {gw}")))?;
        }
        if let Some(gw) = spec.default_via6 {
            ignore_exists(handle.route().add().v6().gateway(gw).output_interface(index).execute().await)
                .map_err(nl(format!("adding default route via {gw}")))?;
        }
    }
    Ok(())
}

fn ignore_exists(r: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match r {
        Err(rtnetlink::Error::NetlinkError(ref m)) if m.raw_code() == -libc::EEXIST => Ok(()),
        other => other,
    }
}

/// The names of every interface inside a sandbox.
pub fn link_names(netns: &Path) -> Result<Vec<String>, ProvisionError> {
    use netlink_packet_route::link::LinkAttribute;
    let r = sys::in_netns(netns, move || {
        let rt = runtime()?;
        Ok(rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection().map_err(nl("netlink socket"))?;
            tokio::spawn(conn);
            let links: Vec<_> = handle.link().get().execute().try_collect().await.map_err(nl("listing interfaces"))?;
            Ok(links
                .iter()
                .filter_map(|l| {
                    l.attributes.iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    })
                })
                .collect())
        }))
    });
    r.map_err(|e| ProvisionError::Netlink { what: "entering the sandbox's namespace".into(), source: e })?
}

/// Deletes an interface inside a sandbox; absent is not an error.
pub fn delete_link(netns: &Path, ifname: &str) -> Result<(), ProvisionError> {
    let ifname = ifname.to_string();
    let r = sys::in_netns(netns, move || {
        let rt = runtime()?;
        Ok(rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection().map_err(nl("netlink socket"))?;
            tokio::spawn(conn);
            let Ok(Some(link)) = handle.link().get().match_name(ifname.clone()).execute().try_next().await else {
                return Ok(());
            };
            handle.link().del(link.header.index).execute().await.map_err(nl(format!("deleting {ifname}")))
        }))
    });
    r.map_err(|e| ProvisionError::Netlink { what: "entering the sandbox's namespace".into(), source: e })?
}

/// Opens the host end of a veth (in vswitchd's namespace) for switching, bringing it up.
pub fn open_veth(ifname: &str, queues: usize) -> Result<AfPacket, ProvisionError> {
    let idx = sys::if_nametoindex(ifname).map_err(|e| ProvisionError::Veth(ifname.to_string(), e))?;
    let rt = runtime().map_err(|e| ProvisionError::Veth(ifname.to_string(), e))?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(nl("netlink socket"))?;
        tokio::spawn(conn);
        handle.link().set(idx).up().execute().await.map_err(nl(format!("bringing {ifname} up")))
    })?;
    AfPacket::open(ifname, queues).map_err(|e| ProvisionError::Veth(ifname.to_string(), e))
}

/// Drops the kernel counted on an interface inside a sandbox, seen from the sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkDrops {
    /// Frames the sandbox sent that were dropped before vswitchd read them (its queue was full).
    pub tx_dropped: u64,
    /// Frames vswitchd wrote that the sandbox's stack dropped.
    pub rx_dropped: u64,
}

/// Reads an interface's drop counters inside a sandbox; None when it cannot be read.
pub fn link_drops(netns: &Path, ifname: &str) -> Option<LinkDrops> {
    use netlink_packet_route::link::LinkAttribute;
    let ifname = ifname.to_string();
    sys::in_netns(netns, move || {
        let rt = runtime()?;
        Ok(rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection().ok()?;
            tokio::spawn(conn);
            let link = handle.link().get().match_name(ifname).execute().try_next().await.ok()??;
            link.attributes.iter().find_map(|a| match a {
                LinkAttribute::Stats64(s) => Some(LinkDrops { tx_dropped: s.tx_dropped, rx_dropped: s.rx_dropped }),
                _ => None,
            })
        }))
    })
    .ok()
    .flatten()
}
