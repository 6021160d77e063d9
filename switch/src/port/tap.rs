//! TAP ports: multiqueue, virtio-net header, offloads, created or re-attached by name.
//!
//! `IFF_VNET_HDR` + `TUNSETOFFLOAD(CSUM|TSO4|TSO6[|USO4|USO6])` lets the kernel hand us 64 KB
//! GSO frames with partial checksums and take them back the same way: one syscall per 64 KB
//! instead of per 1500 B. `IFF_MULTI_QUEUE` gives one fd per worker. The device is made
//! persistent so that it outlives a crash of the daemon: the restarted daemon re-attaches by
//! name and the container's addresses and routes are still in place.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::packet::VNET_HDR_LEN;
use crate::port::{Port, PortKind};
use crate::sys;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;

const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_USO4: libc::c_uint = 0x20;
const TUN_F_USO6: libc::c_uint = 0x40;

/// `struct ifreq` as TUNSETIFF reads it: a name and a short of flags, padded to 40 bytes.
#[repr(C)]
struct IfReqFlags {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// `struct ifreq` as SIOCGIFHWADDR fills it: a name and a `struct sockaddr`.
#[repr(C)]
struct IfReqHwAddr {
    name: [libc::c_char; libc::IFNAMSIZ],
    family: libc::sa_family_t,
    data: [u8; 14],
    _pad: [u8; 8],
}

/// Why a TAP could not be opened; the message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("cannot open /dev/net/tun: permission denied (the device is mode 0600 here; run as root, or chmod 0666 /dev/net/tun as distributions ship it)")]
    TunPermission,
    #[error("cannot open /dev/net/tun: {0} (is the tun module loaded? try: modprobe tun)")]
    TunOpen(io::Error),
    #[error("TAP {name}: {source} (an interface of that name that is not a multiqueue TAP with a virtio-net header already exists in the namespace)")]
    Attach { name: String, source: io::Error },
    #[error("TAP {name}: {op}: {source}")]
    Setup { name: String, op: &'static str, source: io::Error },
    #[error(transparent)]
    Name(io::Error),
}

/// How to open a TAP.
#[derive(Debug, Clone)]
pub struct TapOptions {
    /// Number of queues (one per worker).
    pub queues: usize,
    /// Keep the device when our fds close, so a restarted daemon finds it.
    pub persist: bool,
    /// Take the device as someone else made it (rootlesskit's `ip tuntap add` makes a
    /// single-queue TAP and owns its configuration): a single-queue TAP is attached with one
    /// queue, and its persistence is left as it is. A TAP that does not exist is created
    /// multiqueue and not persistent, as slirp4netns creates one for Podman.
    pub adopt: bool,
}

/// A TAP device in whichever network namespace it was opened in; the fds work from anywhere.
#[derive(Debug)]
pub struct Tap {
    name: String,
    fds: Vec<OwnedFd>,
}

impl Tap {
    /// Creates the TAP `name` in the calling thread's network namespace, or attaches to a
    /// persistent one of that name, with `opts.queues` queues.
    pub fn open(name: &str, opts: &TapOptions) -> Result<Self, TapError> {
        let ifname = sys::ifname_bytes(name).map_err(TapError::Name)?;
        let mut queues = opts.queues.max(1);
        let mut fds = Vec::with_capacity(queues);
        let mut flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE;
        while fds.len() < queues {
            let fd = open_tun()?;
            let mut req = IfReqFlags { name: ifname, flags, _pad: [0; 22] };
            // SAFETY: req is a valid ifreq-sized struct that outlives the call; TUNSETIFF reads and writes it.
            let attached = sys::cvt(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req) });
            match attached {
                // The kernel refuses a multiqueue attach to a single-queue device with EINVAL.
                Err(e) if opts.adopt && fds.is_empty() && flags & IFF_MULTI_QUEUE != 0 && e.raw_os_error() == Some(libc::EINVAL) => {
                    flags &= !IFF_MULTI_QUEUE;
                    queues = 1;
                    continue;
                }
                r => r.map_err(|source| TapError::Attach { name: name.to_string(), source })?,
            };
            if fds.is_empty() {
                setup_device(fd.as_raw_fd(), name)?;
            }
            fds.push(fd);
        }
        if opts.adopt {
            return Ok(Self { name: name.to_string(), fds });
        }
        // Persistent only once every queue is attached, so a failure above leaves nothing behind.
        let fd = fds[0].as_raw_fd();
        // SAFETY: TUNSETPERSIST takes its argument by value.
        sys::cvt(unsafe { libc::ioctl(fd, TUNSETPERSIST as _, opts.persist as libc::c_ulong) }).map_err(|source| TapError::Setup {
            name: name.to_string(),
            op: "TUNSETPERSIST",
            source,
        })?;
        Ok(Self { name: name.to_string(), fds })
    }

    /// A TAP from fds opened elsewhere (another namespace, another process) with the virtio-net
    /// header and offloads already set up, as [`Tap::open`] leaves them.
    pub fn from_fds(name: &str, fds: Vec<OwnedFd>) -> Self {
        assert!(!fds.is_empty(), "a TAP has at least one queue");
        Self { name: name.to_string(), fds }
    }

    /// The device's MAC address as the namespace sees it (the container's, not ours).
    pub fn hw_addr(&self) -> io::Result<crate::Mac> {
        let mut req = IfReqHwAddr { name: [0; libc::IFNAMSIZ], family: 0, data: [0; 14], _pad: [0; 8] };
        // SAFETY: SIOCGIFHWADDR on a TAP fd fills the ifreq's sockaddr, which req provides in full.
        sys::cvt(unsafe { libc::ioctl(self.fds[0].as_raw_fd(), libc::SIOCGIFHWADDR as _, &mut req) })?;
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&req.data[..6]);
        Ok(crate::Mac(mac))
    }

    /// Clears the persistent flag so the device disappears when the last fd closes.
    pub fn unpersist(&self) -> io::Result<()> {
        // SAFETY: TUNSETPERSIST takes its argument by value.
        sys::cvt(unsafe { libc::ioctl(self.fds[0].as_raw_fd(), TUNSETPERSIST as _, 0 as libc::c_ulong) })?;
        Ok(())
    }

    /// Hands the fds over, owned (to send them to another process).
    pub fn into_fds(self) -> Vec<OwnedFd> {
        self.fds
    }

    /// Hands the fds over (used by callers that pass a TAP to another process).
    pub fn into_raw_fds(self) -> Vec<RawFd> {
        self.fds.into_iter().map(IntoRawFd::into_raw_fd).collect()
    }
}

fn open_tun() -> Result<OwnedFd, TapError> {
    let file =
        OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open("/dev/net/tun").map_err(|e| {
            if e.kind() == io::ErrorKind::PermissionDenied {
                TapError::TunPermission
            } else {
                TapError::TunOpen(e)
            }
        })?;
    Ok(file.into())
}

fn setup_device(fd: RawFd, name: &str) -> Result<(), TapError> {
    let err = |op: &'static str| move |source| TapError::Setup { name: name.to_string(), op, source };
    let hdr: libc::c_int = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one c_int through the pointer, which is valid for the call.
    sys::cvt(unsafe { libc::ioctl(fd, TUNSETVNETHDRSZ as _, &hdr) }).map_err(err("TUNSETVNETHDRSZ"))?;
    let base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    // USO exists from Linux 6.2; older kernels refuse the whole mask with EINVAL, so retry without it.
    // SAFETY: TUNSETOFFLOAD takes its argument by value.
    if unsafe { libc::ioctl(fd, TUNSETOFFLOAD as _, (base | TUN_F_USO4 | TUN_F_USO6) as libc::c_ulong) } < 0 {
        // SAFETY: as above.
        sys::cvt(unsafe { libc::ioctl(fd, TUNSETOFFLOAD as _, base as libc::c_ulong) }).map_err(err("TUNSETOFFLOAD"))?;
    }
    Ok(())
}

impl Port for Tap {
    fn kind(&self) -> PortKind {
        PortKind::Tap
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn queues(&self) -> usize {
        self.fds.len()
    }
    fn queue_fd(&self, q: usize) -> RawFd {
        self.fds[q % self.fds.len()].as_raw_fd()
    }
    fn recv(&self, q: usize, buf: &mut [u8]) -> io::Result<usize> {
        sys::read(self.queue_fd(q), buf)
    }
    fn send(&self, q: usize, wire: &[u8]) -> io::Result<()> {
        sys::write(self.queue_fd(q), wire).map(|_| ())
    }
}
