//! Relays: sockets made inside a container's namespace whose traffic goes to an address reached from this process's own (pasta's `-T` and `-U`: the namespace's loopback ports forwarded to the host's).
//!
//! TCP: the relay's listener's connections are spliced to a connection this process makes to
//! the destination (see the `splice` module). UDP: each client of the relay's socket gets a
//! host socket connected to the destination, a conntrack flow (client → destination) that
//! idles out with the network's UDP timeouts; answers go back to the client from the relay's
//! socket. Both kinds count against the network's flow limits, are listed by `flows` and
//! closed by `flush` and by [`Engine::unrelay`](super::Engine::unrelay).

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::publish::{accept_each, turn_away, HostSock};
use super::splice::{from_loopback, NsSockets, SpliceConn};
use super::{add, connect_failed, gauge, table_of, Close, Core, Counters, FlowVal, FrameIo, Kind, NetId, DGRAM_BUDGET};
use crate::{Dir, FlowId, FlowKey, Proto, TcpFlags};

/// A relay's socket, made inside the namespace ([`NsSockets::listener`], [`NsSockets::udp`]).
#[derive(Debug)]
pub enum RelaySock {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// A socket made elsewhere (inside a container's namespace) whose traffic is carried to `to`,
/// reached from this process's own namespace.
#[derive(Debug)]
pub struct Relay {
    /// The caller's name for it, unique among the engine's relays.
    pub id: u64,
    /// The network whose connection tracking holds its flows.
    pub net: NetId,
    pub sock: RelaySock,
    pub to: SocketAddr,
}

impl Relay {
    fn raw_fd(&self) -> std::os::fd::RawFd {
        match &self.sock {
            RelaySock::Tcp(l) => l.as_raw_fd(),
            RelaySock::Udp(u) => u.as_raw_fd(),
        }
    }
}

/// A UDP client carried between two sockets: a UDP relay's (the socket connected to the relay's
/// destination), or a spliced published UDP port's (the socket inside the container's namespace
/// connected to the service).
#[derive(Debug)]
pub(super) struct UdpRelayFlow {
    pub(super) sock: UdpSocket,
    /// Where datagrams go when `sock` is not connected there.
    pub(super) to: Option<SocketAddr>,
    /// Where answers go back from.
    pub(super) back: Back,
    pub(super) client: SocketAddr,
}

impl UdpRelayFlow {
    pub(super) fn send(&self, b: &[u8]) -> io::Result<usize> {
        match self.to {
            Some(to) => self.sock.send_to(b, to),
            None => self.sock.send(b),
        }
    }
}

/// The socket a [`UdpRelayFlow`]'s answers leave from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Back {
    /// The relay with this epoll token.
    Relay(u64),
    /// The published port with this id.
    Published(u64),
}

impl NsSockets {
    /// A TCP socket listening at `addr` inside the namespace (non-blocking, SO_REUSEADDR so that
    /// connections of an earlier one in TIME-WAIT do not block it), for a [`Relay`].
    pub fn listener(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let s = self.take(addr.is_ipv6())?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_reuse_address(true)?;
        s.bind(&SockAddr::from(addr))?;
        s.listen(128)?;
        Ok(s.into())
    }

    /// A UDP socket bound at `addr` inside the namespace (non-blocking), for a [`Relay`].
    pub fn udp(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        let domain = if addr.is_ipv6() { libc::AF_INET6 } else { libc::AF_INET };
        let s = Socket::from(self.make(domain, libc::SOCK_DGRAM, 1)?.pop().ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))?);
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.bind(&SockAddr::from(addr))?;
        Ok(s.into())
    }
}

impl Core {
    pub(super) fn add_relay(&mut self, r: Relay, c: &Counters) {
        if let Some(old) = self.relay_tokens.remove(&r.id) {
            self.relays.remove(&old);
            self.splicing -= 1;
        }
        let token = self.token();
        if let Err(e) = self.poller.add_edge(r.raw_fd(), token) {
            add(&c.drop_host_socket_failed, 1);
            return log::error!("slirp: relay {} to {} cannot be watched: {e}", r.id, r.to);
        }
        self.relay_tokens.insert(r.id, token);
        self.relays.insert(token, r);
        self.splicing += 1;
    }

    /// Closes a relay's socket and its flows (TCP ones reset).
    pub(super) fn remove_relay(&mut self, io: &dyn FrameIo, c: &Counters, id: u64, now: u64) {
        let Some(token) = self.relay_tokens.remove(&id) else { return };
        let Some(r) = self.relays.remove(&token) else { return };
        self.splicing -= 1;
        if let Some(t) = self.tables.get_mut(&r.net) {
            t.retain(
                |_, f| match &f.value.kind {
                    Kind::UdpRelay(u) => u.back != Back::Relay(token),
                    Kind::Splice(s) => s.relay != token,
                    _ => true,
                },
                &mut self.removed,
            );
        }
        self.dispose_removed(io, c, Close::Reset { container: false }, now);
        if self.splicing == 0 {
            self.pipes.clear();
        }
    }

    /// Readiness of the relay with epoll token `token`: connections to accept, datagrams to carry.
    pub(super) fn relay_ready(&mut self, io: &dyn FrameIo, c: &Counters, token: u64, now: u64) {
        let Some(r) = self.relays.remove(&token) else { return };
        let more = match &r.sock {
            RelaySock::Tcp(l) => accept_each(l, c, |sock, client| self.relay_one(io, c, &r, token, sock, client, now)),
            RelaySock::Udp(u) => self.relay_datagrams(c, &r, u, token, now),
        };
        if more {
            self.again.push(token);
        }
        self.relays.insert(token, r);
    }

    #[allow(clippy::too_many_arguments)]
    fn relay_one(&mut self, io: &dyn FrameIo, c: &Counters, r: &Relay, relay: u64, sock: Socket, client: SocketAddr, now: u64) {
        let key = FlowKey::new(Proto::Tcp, client, r.to);
        if !self.admit(r.net, client.ip(), c) || self.tables.get(&r.net).is_some_and(|t| t.find(&key).is_some()) {
            return turn_away(sock);
        }
        let host = match Socket::new(Domain::for_address(r.to), Type::STREAM.nonblocking(), Some(Protocol::TCP)) {
            Ok(s) => s,
            Err(_) => {
                add(&c.drop_host_socket_failed, 1);
                return turn_away(sock);
            }
        };
        let (token, other) = (self.token(), self.token());
        // From the loopback when the host address is not one, as a relay's clients are.
        if let Err(e) = from_loopback(&host, r.to) {
            connect_failed(c, &e);
            return turn_away(sock);
        }
        let conn = match SpliceConn::start(sock, host, r.to, other, relay) {
            Ok(conn) => conn,
            Err((e, sock)) => {
                connect_failed(c, &e);
                return turn_away(sock);
            }
        };
        let [a, b] = conn.fds();
        if self.poller.add_edge(a, token).and_then(|()| self.poller.add_edge(b, other)).is_err() {
            add(&c.drop_host_socket_failed, 1);
            return conn.close(true, None);
        }
        let table = table_of(&mut self.tables, r.net, &self.limits);
        let Ok((id, _)) = table.get_or_insert_with(key, now, || FlowVal { token, kind: Kind::Splice(Box::new(conn)), inbound: None })
        else {
            return add(&c.drop_flow_table_full, 1);
        };
        table.on_tcp(id, Dir::Orig, TcpFlags::SYN, now);
        self.tokens.insert(token, (r.net, id));
        self.tokens.insert(other, (r.net, id));
        add(&c.relayed, 1);
        gauge(&c.splice_open, 1);
        self.splice_ready(io, c, r.net, id, token, now);
    }

    /// Carries the datagrams waiting on a UDP relay's socket, up to a budget; true if more may.
    fn relay_datagrams(&mut self, c: &Counters, r: &Relay, sock: &UdpSocket, token: u64, now: u64) -> bool {
        let mut buf = std::mem::take(&mut self.rxbuf);
        let mut more = true;
        for _ in 0..DGRAM_BUDGET {
            let (n, client) = match sock.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                Err(_) => continue,
            };
            let Some(id) = self.udp_relay_flow(c, r, token, client, now) else { continue };
            let Some(table) = self.tables.get_mut(&r.net) else { continue };
            let Some(Kind::UdpRelay(f)) = table.get(id).map(|f| &f.value.kind) else { continue };
            match f.send(&buf[..n]) {
                Ok(n) => add(&c.bytes_to_host, n as u64),
                Err(_) => add(&c.drop_host_send_failed, 1),
            }
            table.on_packet(id, Dir::Orig, n, now);
        }
        self.rxbuf = buf;
        more
    }

    /// The flow of a UDP relay's client, made on its first datagram; None (counted) when it may not be.
    fn udp_relay_flow(&mut self, c: &Counters, r: &Relay, token: u64, client: SocketAddr, now: u64) -> Option<FlowId> {
        let key = FlowKey::new(Proto::Udp, client, r.to);
        if let Some((id, Dir::Orig)) = self.tables.get(&r.net).and_then(|t| t.find(&key)) {
            return Some(id);
        }
        if !self.admit(r.net, client.ip(), c) {
            return None;
        }
        let open = || -> io::Result<UdpSocket> {
            let s = Socket::new(Domain::for_address(r.to), Type::DGRAM.nonblocking(), Some(Protocol::UDP))?;
            s.connect(&SockAddr::from(r.to))?;
            Ok(s.into())
        };
        let sock = match open() {
            Ok(s) => s,
            Err(_) => {
                add(&c.drop_host_socket_failed, 1);
                return None;
            }
        };
        let ft = self.token();
        if self.poller.add_edge(sock.as_raw_fd(), ft).is_err() {
            add(&c.drop_host_socket_failed, 1);
            return None;
        }
        let flow = UdpRelayFlow { sock, to: None, back: Back::Relay(token), client };
        let table = table_of(&mut self.tables, r.net, &self.limits);
        let Ok((id, _)) = table.get_or_insert_with(key, now, || FlowVal { token: ft, kind: Kind::UdpRelay(flow), inbound: None }) else {
            add(&c.drop_flow_table_full, 1);
            return None;
        };
        self.tokens.insert(ft, (r.net, id));
        gauge(&c.udp_open, 1);
        add(&c.udp_flows, 1);
        Some(id)
    }

    /// Answers from a UDP relay flow's destination: back to its client from the relay's (or the
    /// published port's) socket.
    pub(super) fn udp_relay_answers(&mut self, c: &Counters, net: NetId, id: FlowId, token: u64, now: u64) {
        let mut buf = std::mem::take(&mut self.rxbuf);
        let mut more = true;
        for _ in 0..DGRAM_BUDGET {
            let Some(table) = self.tables.get_mut(&net) else { break };
            let Some(Kind::UdpRelay(f)) = table.get(id).map(|f| &f.value.kind) else { break };
            let n = match f.sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                // An ICMP error answered an earlier datagram: reported once, then it reads on.
                Err(_) => {
                    add(&c.udp_unreachable, 1);
                    continue;
                }
            };
            let (back, counter) = match f.back {
                Back::Relay(t) => match self.relays.get(&t).map(|r| &r.sock) {
                    Some(RelaySock::Udp(u)) => (u, &c.bytes_from_host),
                    _ => break,
                },
                Back::Published(fwd) => match self.listeners.get(&fwd).map(|l| &l.sock) {
                    Some(HostSock::Udp(u)) => (u, &c.pub_bytes_out),
                    _ => break,
                },
            };
            match back.send_to(&buf[..n], f.client) {
                Ok(n) => add(counter, n as u64),
                Err(_) => add(&c.drop_host_send_failed, 1),
            }
            table.on_packet(id, Dir::Reply, n, now);
        }
        self.rxbuf = buf;
        if more {
            self.again.push(token);
        }
    }
}
