//! ICMP echo flows of the slirp engine: one ping socket (unprivileged ICMP) per container, destination and echo identifier.
//!
//! The kernel gives a ping socket an identifier of its own (it plays the role of a port) and
//! fills in the checksum; replies are rebuilt with the container's identifier and the sequence
//! number and data the destination echoed.
//!
//! Where `net.ipv4.ping_group_range` leaves the daemon's group out (the kernel's default, "1 0",
//! leaves out even root) but it holds CAP_NET_RAW, a raw ICMP socket connected to the
//! destination does instead: the request goes as the container sent it, identifier included,
//! and only echo replies with that identifier are taken.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::frame::{self, Dest, FRONT, IPV4_HDR_LEN, IPV6_HDR_LEN, MAX_IP, PROTO_ICMP, PROTO_ICMPV6};
use super::sys::Poller;
use super::{Counters, FrameIo};

const ECHO_REPLY_V4: u8 = 0;
const ECHO_REPLY_V6: u8 = 129;

#[derive(Debug)]
pub(crate) struct IcmpFlow {
    sock: Socket,
    pub(crate) dest: Dest,
    container: IpAddr,
    remote: IpAddr,
    id: u16,
    /// A raw socket (the ping socket was not permitted): replies arrive with the IPv4 header and
    /// with every identifier.
    raw: bool,
}

impl IcmpFlow {
    /// Err with `PermissionDenied` when `net.ipv4.ping_group_range` leaves this user out. The
    /// socket is bound to `from` (the network's outbound address) if given, the identifier left
    /// to the kernel.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        container: IpAddr,
        remote: IpAddr,
        from: Option<IpAddr>,
        host: IpAddr,
        id: u16,
        dest: Dest,
        poller: &Poller,
        token: u64,
    ) -> io::Result<Self> {
        let (domain, proto) = if host.is_ipv6() { (Domain::IPV6, Protocol::ICMPV6) } else { (Domain::IPV4, Protocol::ICMPV4) };
        let (sock, raw) = match Socket::new(domain, Type::DGRAM.nonblocking(), Some(proto)) {
            Ok(s) => (s, false),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
                // Without CAP_NET_RAW this fails too, and the ping socket's error is the one to report.
                (Socket::new(domain, Type::RAW.nonblocking(), Some(proto)).map_err(|_| e)?, true)
            }
            Err(e) => return Err(e),
        };
        super::bind_source(&sock, from, host)?;
        sock.connect(&SockAddr::from(SocketAddr::new(host, 0)))?;
        poller.add_edge(sock.as_raw_fd(), token)?;
        Ok(IcmpFlow { sock, dest, container, remote, id, raw })
    }

    /// Sends the container's echo request (`l4`: its ICMP header and data); the kernel replaces
    /// the identifier and checksum.
    pub(crate) fn send(&self, l4: &[u8]) -> io::Result<usize> {
        self.sock.send(l4)
    }

    /// Receives one echo reply and sends it to the container. None when none waits;
    /// Some(bytes) with the reply's IP length (0 if it was not an echo reply or could not be framed).
    pub(crate) fn recv_one(&self, buf: &mut [u8], scratch: &mut Vec<u8>, ident: u32, io: &dyn FrameIo, c: &Counters) -> Option<usize> {
        let v6 = self.remote.is_ipv6();
        let ip_hdr = if v6 { IPV6_HDR_LEN } else { IPV4_HDR_LEN };
        let room = (MAX_IP - ip_hdr).min(buf.len().saturating_sub(FRONT - 8));
        // The ICMP header lands in front of the data, where the reply's own goes.
        let mut n = match (&self.sock).read(&mut buf[FRONT - 8..FRONT - 8 + room]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            // An ICMP error (unreachable, TTL exceeded), reported once: the request simply goes
            // unanswered.
            Err(_) => return Some(0),
        };
        if self.raw && !v6 {
            // A raw IPv4 socket hands over the IP header too.
            let ihl = usize::from(buf[FRONT - 8] & 0x0f) * 4;
            if n < ihl + 8 {
                return Some(0);
            }
            buf.copy_within(FRONT - 8 + ihl..FRONT - 8 + n, FRONT - 8);
            n -= ihl;
        }
        if n < 8 || buf[FRONT - 8] != if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 } {
            return Some(0);
        }
        if self.raw && u16::from_be_bytes([buf[FRONT - 4], buf[FRONT - 3]]) != self.id {
            return Some(0); // another flow's (or another program's) reply from the same host
        }
        let seq = u16::from_be_bytes([buf[FRONT - 2], buf[FRONT - 1]]);
        let len = n - 8;
        frame::write_echo_reply(buf, len, self.remote, self.container, self.id, seq);
        let proto = if v6 { PROTO_ICMPV6 } else { PROTO_ICMP };
        if !frame::deliver(buf, len, scratch, &self.dest, self.remote, self.container, proto, ident, io, c) {
            return Some(0);
        }
        Some(ip_hdr + n)
    }
}
