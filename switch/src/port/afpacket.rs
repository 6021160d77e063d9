//! AF_PACKET ports: the host end of a veth pair (or any existing interface) read and written raw.
//!
//! `PACKET_VNET_HDR` makes the socket speak the same `[virtio_net_hdr][frame]` as our TAPs, so
//! GSO frames pass whole between a veth and a TAP. With several workers the sockets join one
//! `PACKET_FANOUT_HASH` group: the kernel spreads flows over workers, keeping each flow in order.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::port::{Health, Port, PortKind};
use crate::sys;

const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_MR_PROMISC: libc::c_ushort = 1;
const PACKET_FANOUT: libc::c_int = 18;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_FANOUT_HASH: u32 = 0;
/// Let the kernel pick a group id no other socket in the namespace uses (Linux 4.19+).
const PACKET_FANOUT_FLAG_UNIQUEID: u32 = 0x2000;
const ETH_P_ALL: u16 = 0x0003;

/// An interface read and written through one AF_PACKET socket per queue.
#[derive(Debug)]
pub struct AfPacket {
    name: String,
    ifindex: u32,
    fds: Vec<OwnedFd>,
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, opt: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: val points to a live T of exactly the size passed.
    sys::cvt(unsafe { libc::setsockopt(fd, level, opt, (val as *const T).cast(), std::mem::size_of::<T>() as libc::socklen_t) })?;
    Ok(())
}

impl AfPacket {
    /// Opens `queues` sockets on the interface `name` of the calling thread's namespace.
    pub fn open(name: &str, queues: usize) -> io::Result<Self> {
        let ifindex = sys::if_nametoindex(name).map_err(|e| io::Error::new(e.kind(), format!("interface {name}: {e}")))?;
        let queues = queues.max(1);
        // The first socket asks the kernel for a fresh group id; the others join that group.
        let mut group: Option<u32> = None;
        let mut fds = Vec::with_capacity(queues);
        for _ in 0..queues {
            // Protocol 0 until bind, so no frame of another interface is queued before we filter.
            // SAFETY: socket takes no pointers; the result is a fresh fd we own.
            let raw = sys::cvt(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) })?;
            // SAFETY: raw was just returned by the kernel and is owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let raw = fd.as_raw_fd();
            setsockopt(raw, libc::SOL_PACKET, PACKET_VNET_HDR, &1 as &libc::c_int)?;
            setsockopt(raw, libc::SOL_PACKET, PACKET_QDISC_BYPASS, &1 as &libc::c_int)?;
            // Without this we would read back every frame we transmit on the interface.
            setsockopt(raw, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &1 as &libc::c_int)?;
            let big: libc::c_int = 4 << 20;
            // Best effort: FORCE needs CAP_NET_ADMIN; the plain option is capped by rmem_max.
            if setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &big).is_err() {
                let _ = setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &big);
            }
            if setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &big).is_err() {
                let _ = setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, &big);
            }
            // SAFETY: sockaddr_ll is plain data; zeroed is a valid starting value.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = ETH_P_ALL.to_be();
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: sll is a valid sockaddr_ll of the size passed.
            sys::cvt(unsafe {
                libc::bind(raw, (&sll as *const libc::sockaddr_ll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t)
            })?;
            // SAFETY: packet_mreq is plain data; zeroed is a valid starting value.
            let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
            mreq.mr_ifindex = ifindex as i32;
            mreq.mr_type = PACKET_MR_PROMISC;
            setsockopt(raw, libc::SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq)?;
            if queues > 1 {
                match group {
                    None => {
                        let arg: u32 = (PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_UNIQUEID) << 16;
                        setsockopt(raw, libc::SOL_PACKET, PACKET_FANOUT, &arg)?;
                        let mut got: u32 = 0;
                        let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
                        // SAFETY: got and len are valid for writes of the sizes given.
                        sys::cvt(unsafe {
                            libc::getsockopt(raw, libc::SOL_PACKET, PACKET_FANOUT, (&mut got as *mut u32).cast(), &mut len)
                        })?;
                        group = Some(got & 0xffff);
                    }
                    Some(id) => setsockopt(raw, libc::SOL_PACKET, PACKET_FANOUT, &(id | (PACKET_FANOUT_HASH << 16)))?,
                }
            }
            fds.push(fd);
        }
        Ok(Self { name: name.to_string(), ifindex, fds })
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
}

impl Port for AfPacket {
    fn kind(&self) -> PortKind {
        PortKind::AfPacket
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
    fn check(&self, q: usize) -> Health {
        // A link going down sets sk_err (ENETDOWN) once; reading SO_ERROR clears it and the
        // socket works again when the link comes back. Only a vanished or replaced interface is gone.
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: err and len are valid for writes of the sizes given.
        let _ = unsafe {
            libc::getsockopt(self.queue_fd(q), libc::SOL_SOCKET, libc::SO_ERROR, (&mut err as *mut libc::c_int).cast(), &mut len)
        };
        match sys::if_nametoindex(&self.name) {
            Ok(i) if i == self.ifindex => Health::Alive,
            _ => Health::Gone,
        }
    }
}
