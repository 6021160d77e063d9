//! UDP flows of the slirp engine: one connected host socket per (container address and port, destination), replies (and the ICMP errors the host got) rebuilt as frames.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::frame::{self, Dest, Unreachable, FRONT, IPV4_HDR_LEN, IPV6_HDR_LEN, MAX_IP, PROTO_ICMP, PROTO_ICMPV6, PROTO_UDP};
use super::sys::Poller;
use super::{add, Counters, FrameIo};

/// One UDP flow: the container's address and port, where it sent to, and the host socket
/// connected there (to the host's loopback for the gateway's address), from the network's
/// outbound address if it has one, which only the destination's answers reach.
#[derive(Debug)]
pub(crate) struct UdpFlow {
    sock: Socket,
    pub(crate) dest: Dest,
    container: SocketAddr,
    remote: SocketAddr,
}

impl UdpFlow {
    pub(crate) fn open(
        container: SocketAddr,
        remote: SocketAddr,
        from: Option<IpAddr>,
        host: SocketAddr,
        dest: Dest,
        poller: &Poller,
        token: u64,
    ) -> io::Result<Self> {
        let sock = Socket::new(Domain::for_address(host), Type::DGRAM.nonblocking(), Some(Protocol::UDP))?;
        super::bind_source(&sock, from, host.ip())?;
        sock.connect(&SockAddr::from(host))?;
        poller.add_edge(sock.as_raw_fd(), token)?;
        Ok(UdpFlow { sock, dest, container, remote })
    }

    /// Sends one datagram to the host.
    pub(crate) fn send(&self, payload: &[u8]) -> io::Result<usize> {
        match self.sock.send(payload) {
            // An ICMP error for an earlier datagram is reported on this call, which then sent nothing.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => self.sock.send(payload),
            r => r,
        }
    }

    /// Receives one datagram and sends it to the container. None when none waits;
    /// Some(bytes) with the reply's IP length (0 if it could not be framed).
    pub(crate) fn recv_one(&self, buf: &mut [u8], scratch: &mut Vec<u8>, ident: u32, io: &dyn FrameIo, c: &Counters) -> Option<usize> {
        let ip_hdr = if self.remote.is_ipv6() { IPV6_HDR_LEN } else { IPV4_HDR_LEN };
        let room = (MAX_IP - ip_hdr - 8).min(buf.len().saturating_sub(FRONT));
        let n = match (&self.sock).read(&mut buf[FRONT..FRONT + room]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            // An ICMP error answered an earlier datagram (port or host unreachable): reported
            // once, then the socket reads on. The container is told as a router would tell it,
            // so that its socket fails now instead of waiting for an answer.
            Err(e) => {
                add(&c.udp_unreachable, 1);
                let Some(why) = Unreachable::of(&e) else { return Some(0) };
                let len = frame::write_udp_unreachable(buf, why, self.container, self.remote);
                let proto = if self.remote.is_ipv6() { PROTO_ICMPV6 } else { PROTO_ICMP };
                frame::deliver(buf, len, scratch, &self.dest, self.remote.ip(), self.container.ip(), proto, ident, io, c);
                // Not an answer: the flow stays unreplied (evictable, its short timeout), as
                // Linux's conntrack leaves a flow an ICMP error relates to.
                return Some(0);
            }
        };
        add(&c.bytes_from_host, n as u64);
        let (src, dst) = (self.remote.ip(), self.container.ip());
        frame::write_udp(buf, n, src, dst, self.remote.port(), self.container.port());
        if !frame::deliver(buf, n, scratch, &self.dest, src, dst, PROTO_UDP, ident, io, c) {
            return Some(0);
        }
        Some(ip_hdr + 8 + n)
    }
}
