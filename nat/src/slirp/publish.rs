//! Published ports (Docker's `-p`): host sockets whose connections and datagrams the slirp engine carries to a container, from the client's own address.
//!
//! [`Engine::publish`](super::Engine::publish) binds the host socket on the caller's thread, so
//! that a port already taken is reported (with the process holding it, when `/proc` tells) before
//! anything is acknowledged; the engine's thread then owns it:
//! - TCP: every accepted connection becomes a smoltcp client connecting to the container (see
//!   [`super::tcp`]), whose frames go to the container's MAC; or, for a client on the host's
//!   loopback when the port has a [`Splice`](super::Splice), a connection made inside the
//!   container's namespace, spliced to the client's (see [`super::splice`]).
//! - UDP: every client address becomes a flow toward the container; the container's answers are
//!   sent back from the published socket.
//!
//! The container sees the client's real address and port, which rootlesskit's and slirp4netns's
//! port drivers lose. Its answers to such an address have no route but the uplink, which brings
//! them back to the engine. A client on the host's loopback (127.0.0.0/8, ::1) would be a martian
//! source to the container's kernel, and an IPv6 client cannot talk to an IPv4 container (nor the
//! reverse): those appear to come from the network's gateway address instead ([`source_ip`]),
//! whose TCP and UDP the router hands to the uplink too. The client's port is kept, unless
//! another flow of the container has that source already (two loopback clients, both seen as the
//! gateway; one client on two published ports of one container port): then a free port of
//! 32768-60999 stands in. Flows are keyed in connection tracking as the client opened them
//! (client as the container sees it → container), and count toward the container's
//! `per_source` limit.
//!
//! UDP answers leave a socket bound to a wildcard address from whichever address the host's
//! routing picks, as docker-proxy's do: on a host with several addresses, not necessarily the
//! one the client addressed.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use vswitch_switch::Mac;

use super::frame::{self, Dest, Packet, Via, FRONT, IPV4_HDR_LEN, IPV6_HDR_LEN, MAX_IP, PROTO_UDP};
use super::sys::Event;
use super::tcp::{Ctx, TcpConn};
use super::{
    add, gauge, net_mtu, same_origin, table_of, udp_datagrams, Close, Core, Counters, EngineNet, FlowVal, FrameIo, Inbound, Kind, NetId,
    DGRAM_BUDGET,
};
use crate::{Dir, FlowId, FlowKey, Proto};

/// Connections a published TCP port keeps waiting for the engine to accept.
const BACKLOG: i32 = 1024;

/// A published port: host `host` (`proto`) forwarded to `container` in network `net`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForward {
    /// The caller's name for it, unique among the engine's published ports.
    pub id: u64,
    /// TCP or UDP.
    pub proto: Proto,
    /// Where the host listens: `0.0.0.0:8080`, `[::]:8080` (IPv6 only: the two are published
    /// separately), `127.0.0.1:8080`; port 0 picks one.
    pub host: SocketAddr,
    pub net: NetId,
    /// The container's address and port.
    pub container: SocketAddr,
    /// The container's MAC in `net`: where frames to it go, and whose frames its answers must be.
    pub container_mac: Mac,
    /// Clients on the host's loopback are spliced into the container's namespace instead of
    /// framed (see the `splice` module: TCP connections, UDP flows); None: every client is framed.
    pub splice: Option<super::Splice>,
}

/// Why a port could not be published; nothing was published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{addr}/{} is already in use{}", .proto.name(), .holder.as_deref().map(|h| format!(" by {h}")).unwrap_or_default())]
    InUse {
        addr: SocketAddr,
        proto: Proto,
        /// Who holds it, "pid 1234 (nginx)", when `/proc` tells (best effort).
        holder: Option<String>,
    },
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("a published port with id {0} exists already")]
    Exists(u64),
}

/// A published port's host socket.
#[derive(Debug)]
pub(crate) enum HostSock {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl HostSock {
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            HostSock::Tcp(l) => l.as_raw_fd(),
            HostSock::Udp(u) => u.as_raw_fd(),
        }
    }
}

/// A published port on the engine's thread.
pub(crate) struct Listener {
    pub(crate) fwd: PortForward,
    pub(crate) sock: HostSock,
    /// Its epoll token.
    pub(crate) token: u64,
    /// UDP: each client's flow, with the flow's token (a flow removed and replaced must not take
    /// its successor's entry along).
    pub(crate) clients: HashMap<SocketAddr, (FlowId, u64)>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener").field("fwd", &self.fwd).field("clients", &self.clients.len()).finish_non_exhaustive()
    }
}

/// Checks `fwd` and binds its host socket (non-blocking; TCP listening, with SO_REUSEADDR as
/// docker-proxy does, so that connections of an earlier run in TIME-WAIT do not block it; IPv6
/// only on IPv6 addresses). Returns it and the address it is bound to.
pub(crate) fn bind(fwd: &PortForward) -> Result<(HostSock, SocketAddr), PublishError> {
    let invalid = |what: &str| PublishError::Io(io::Error::new(io::ErrorKind::InvalidInput, what.to_string()));
    let c = fwd.container.ip();
    if fwd.container.port() == 0 || c.is_unspecified() || c.is_multicast() || c.is_loopback() {
        return Err(invalid("the container's address and port must be a unicast address and a port"));
    }
    if fwd.container_mac.is_multicast() || fwd.container_mac.is_zero() {
        return Err(invalid("the container's MAC must be a unicast MAC"));
    }
    let (ty, proto) = match fwd.proto {
        Proto::Tcp => (Type::STREAM, Protocol::TCP),
        Proto::Udp => (Type::DGRAM, Protocol::UDP),
        Proto::Icmp => return Err(invalid("only TCP and UDP ports can be published")),
    };
    let sock = Socket::new(Domain::for_address(fwd.host), ty.nonblocking(), Some(proto))?;
    if fwd.host.is_ipv6() {
        // [::] must not take IPv4's 0.0.0.0 along: each is published on its own.
        sock.set_only_v6(true)?;
    }
    if fwd.proto == Proto::Tcp {
        // Not for UDP, where it would let two sockets share the port.
        sock.set_reuse_address(true)?;
    }
    if let Err(e) = sock.bind(&SockAddr::from(fwd.host)) {
        if e.raw_os_error() == Some(libc::EADDRINUSE) {
            return Err(PublishError::InUse { addr: fwd.host, proto: fwd.proto, holder: holder(fwd.host, fwd.proto) });
        }
        return Err(e.into());
    }
    if fwd.proto == Proto::Tcp {
        sock.listen(BACKLOG)?;
    }
    let bound = sock.local_addr()?.as_socket().ok_or_else(|| invalid("bound to a non-IP address"))?;
    let sock = match fwd.proto {
        Proto::Tcp => HostSock::Tcp(sock.into()),
        _ => HostSock::Udp(sock.into()),
    };
    Ok((sock, bound))
}

/// The address a published flow's client is to appear from to the container: the client's own
/// where the container can answer it through the uplink, else the network's gateway address of
/// the container's family (None without one). See the module documentation.
pub(crate) fn source_ip(client: IpAddr, container: IpAddr, net: &EngineNet) -> Option<IpAddr> {
    let client = client.to_canonical();
    let gateway = match container {
        IpAddr::V4(_) => net.v4.map(IpAddr::V4),
        IpAddr::V6(_) => net.v6.map(IpAddr::V6),
    };
    // What a container's kernel takes as a source, and the router sends back to the uplink.
    let answerable = match (client, container) {
        (IpAddr::V4(a), IpAddr::V4(_)) => {
            let first = a.octets()[0];
            !(a.is_loopback() || a.is_link_local() || a.is_broadcast() || first == 0 || first >= 224)
        }
        (IpAddr::V6(a), IpAddr::V6(_)) => !(a.is_loopback() || a.is_unspecified() || a.is_multicast() || a.is_unicast_link_local()),
        _ => false,
    };
    if answerable && client != container && Some(client) != gateway {
        Some(client)
    } else {
        gateway
    }
}

/// Who holds `addr` (`proto`), "pid 1234 (nginx)": the socket's inode from `/proc/net/*`, then
/// the process with a descriptor for it. Best effort: None when `/proc` does not tell (another
/// user's process, another network namespace).
pub(crate) fn holder(addr: SocketAddr, proto: Proto) -> Option<String> {
    let inode = holder_inode(addr, proto)?;
    let link = format!("socket:[{inode}]");
    for proc in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = proc.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(proc.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == link.as_str()) {
                let comm = std::fs::read_to_string(proc.path().join("comm")).unwrap_or_default();
                return Some(format!("pid {pid} ({})", comm.trim()));
            }
        }
    }
    None
}

/// The inode of the socket that keeps `addr` from being bound: one on the same port whose
/// address is the same or a wildcard on either side (listening ones first, for TCP).
fn holder_inode(addr: SocketAddr, proto: Proto) -> Option<u64> {
    let files: [&str; 2] = match proto {
        Proto::Tcp => ["/proc/net/tcp", "/proc/net/tcp6"],
        _ => ["/proc/net/udp", "/proc/net/udp6"],
    };
    let mut best: Option<(bool, u64)> = None;
    for file in files {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        for (local, state, inode) in text.lines().skip(1).filter_map(proc_net_line) {
            let clash = local.ip() == addr.ip() || local.ip().is_unspecified() || addr.ip().is_unspecified();
            if local.port() != addr.port() || !clash || inode == 0 {
                continue;
            }
            // TCP_LISTEN is 0x0A.
            let listening = proto != Proto::Tcp || state == 0x0a;
            if best.is_none_or(|(l, _)| listening && !l) {
                best = Some((listening, inode));
            }
        }
    }
    best.map(|(_, inode)| inode)
}

/// One socket of `/proc/net/{tcp,udp}{,6}`: its local address, state and inode.
fn proc_net_line(line: &str) -> Option<(SocketAddr, u8, u64)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
    let (ip, port) = local.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // The kernel prints each 32-bit word of the address as the host-order number it reads.
    let word = |i: usize| u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::from(word(0)?),
        32 => {
            let mut a = [0u8; 16];
            for i in 0..4 {
                a[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::from(a)
        }
        _ => return None,
    };
    Some((SocketAddr::new(ip, port), u8::from_str_radix(state, 16).ok()?, inode.parse().ok()?))
}

/// Connections accepted from one published port in one round, before other work gets a turn.
const ACCEPT_BUDGET: usize = 64;

impl Core {
    /// A published port handed over by `Engine::publish`: its socket joins the epoll set.
    pub(super) fn add_listener(&mut self, mut l: Listener, c: &Counters) {
        let token = self.token();
        if let Err(e) = self.poller.add_edge(l.sock.raw_fd(), token) {
            log::error!("slirp: published port {} ({}) cannot be watched: {e}", l.fwd.id, l.fwd.host);
            self.shared.published.lock().unwrap_or_else(|e| e.into_inner()).remove(&l.fwd.id);
            return;
        }
        l.token = token;
        self.listener_tokens.insert(token, l.fwd.id);
        self.splicing += usize::from(l.fwd.splice.is_some());
        if let Some(old) = self.listeners.insert(l.fwd.id, l) {
            // Unpublished and published again before this thread saw the first: the old one goes.
            self.listener_tokens.remove(&old.token);
            self.splicing -= usize::from(old.fwd.splice.is_some());
            gauge(&c.pub_ports, -1);
        }
        gauge(&c.pub_ports, 1);
    }

    /// Closes a published port's socket and every flow of it, TCP reset both ways.
    pub(super) fn remove_listener(&mut self, io: &dyn FrameIo, c: &Counters, id: u64, now: u64) {
        let Some(l) = self.listeners.remove(&id) else { return };
        self.listener_tokens.remove(&l.token);
        gauge(&c.pub_ports, -1);
        if l.fwd.splice.is_some() {
            self.splicing -= 1;
        }
        drop(l);
        // Spare pipes are for the next spliced connections: with no port left to make them, they go.
        if self.splicing == 0 {
            self.pipes.clear();
        }
        for t in self.tables.values_mut() {
            t.retain(|_, f| f.value.inbound.is_none_or(|i| i.fwd != id), &mut self.removed);
        }
        self.dispose_removed(io, c, Close::Reset { container: true }, now);
    }

    /// Readiness of a published port's socket: connections to accept, datagrams to read.
    pub(super) fn listener_ready(&mut self, io: &dyn FrameIo, c: &Counters, id: u64, ev: Event, now: u64) {
        if !(ev.readable || ev.error) {
            return;
        }
        // Out of the map while it works, so that the engine's state is free to change meanwhile.
        let Some(mut l) = self.listeners.remove(&id) else { return };
        let more = match &l.sock {
            HostSock::Tcp(_) => self.accept_all(io, c, &l, now),
            HostSock::Udp(_) => self.recv_all(io, c, &mut l, now),
        };
        if more {
            self.again.push(l.token);
        }
        self.listeners.insert(id, l);
    }

    /// Accepts what waits, up to a budget; true if more may.
    fn accept_all(&mut self, io: &dyn FrameIo, c: &Counters, l: &Listener, now: u64) -> bool {
        let HostSock::Tcp(listener) = &l.sock else { return false };
        accept_each(listener, c, |sock, client| self.accept_one(io, c, l, sock, client, now))
    }

    /// A client connected to a published TCP port: smoltcp connects to the container for it.
    fn accept_one(&mut self, io: &dyn FrameIo, c: &Counters, l: &Listener, sock: Socket, client: SocketAddr, now: u64) {
        let fwd = &l.fwd;
        let sock = match &fwd.splice {
            Some(_) if client.ip().is_loopback() => match self.splice_in(io, c, fwd, sock, client, now) {
                Ok(()) => return,
                Err(sock) => sock,
            },
            _ => sock,
        };
        if client.ip().is_loopback() {
            // What the engine sends this client stays on this host (see LOCAL_CONGESTION).
            super::local_congestion(&sock);
        }
        let net = fwd.net;
        let Some(new) = self.new_inbound(c, fwd, Proto::Tcp, client) else { return turn_away(sock) };
        let token = self.token();
        let mut ctx = Ctx { io, counters: c, buf: &mut self.txbuf, sent: &mut self.sent, now };
        let conn = match TcpConn::accept(sock, new.source, fwd.container, new.dest, self.params, &self.poller, token, &mut ctx) {
            Ok(conn) => conn,
            Err(_) => {
                add(&c.drop_host_socket_failed, 1);
                return add(&c.pub_dropped, 1);
            }
        };
        let inbound = Inbound { fwd: fwd.id, net, container: fwd.container.ip(), client };
        let key = FlowKey::new(Proto::Tcp, new.source, fwd.container);
        let table = table_of(&mut self.tables, net, &self.limits);
        // `admit` made room and `new_inbound` found the key free: this inserts.
        let Ok((id, _)) = table.get_or_insert_with(key, now, || FlowVal { token, kind: Kind::Tcp(Box::new(conn)), inbound: Some(inbound) })
        else {
            add(&c.drop_flow_table_full, 1);
            return add(&c.pub_dropped, 1);
        };
        self.tokens.insert(token, (net, id));
        *self.inbound_per.entry((net, inbound.container)).or_insert(0) += 1;
        gauge(&c.tcp_open, 1);
        // The SYN leaves now.
        let Some(Kind::Tcp(conn)) = table.get_mut(id).map(|f| &mut f.value.kind) else { return };
        let done = conn.on_timer(&mut Ctx { io, counters: c, buf: &mut self.txbuf, sent: &mut self.sent, now });
        self.after_tcp(io, c, net, id, done, now);
    }

    /// Reads what waits on a published UDP port, up to a budget; true if more may.
    fn recv_all(&mut self, io: &dyn FrameIo, c: &Counters, l: &mut Listener, now: u64) -> bool {
        let ip_hdr = if l.fwd.container.is_ipv6() { IPV6_HDR_LEN } else { IPV4_HDR_LEN };
        let room = (MAX_IP - ip_hdr - 8).min(self.rxbuf.len().saturating_sub(FRONT));
        for _ in 0..DGRAM_BUDGET {
            let HostSock::Udp(sock) = &l.sock else { return false };
            let (n, client) = match sock.recv_from(&mut self.rxbuf[FRONT..FRONT + room]) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => continue,
            };
            self.datagram_in(io, c, l, n, client, now);
        }
        true
    }

    /// A client's datagram of `n` bytes (at `rxbuf[FRONT..]`) to a published UDP port: framed to
    /// the container, in the client's flow.
    fn datagram_in(&mut self, io: &dyn FrameIo, c: &Counters, l: &mut Listener, n: usize, client: SocketAddr, now: u64) {
        if l.fwd.splice.is_some() && client.ip().is_loopback() && self.splice_udp_in(c, l, n, client, now) {
            return;
        }
        let fwd = &l.fwd;
        let net = fwd.net;
        let known = l.clients.get(&client).map(|&(id, _)| id).filter(|&id| self.tables.get(&net).is_some_and(|t| t.get(id).is_some()));
        let id = match known {
            Some(id) => id,
            None => {
                let Some(new) = self.new_inbound(c, fwd, Proto::Udp, client) else { return };
                let token = self.token();
                let inbound = Inbound { fwd: fwd.id, net, container: fwd.container.ip(), client };
                let key = FlowKey::new(Proto::Udp, new.source, fwd.container);
                let table = table_of(&mut self.tables, net, &self.limits);
                let Ok((id, _)) =
                    table.get_or_insert_with(key, now, || FlowVal { token, kind: Kind::UdpIn(new.dest), inbound: Some(inbound) })
                else {
                    add(&c.drop_flow_table_full, 1);
                    return add(&c.pub_dropped, 1);
                };
                l.clients.insert(client, (id, token));
                *self.inbound_per.entry((net, inbound.container)).or_insert(0) += 1;
                gauge(&c.udp_open, 1);
                add(&c.pub_udp_flows, 1);
                id
            }
        };
        let Some(table) = self.tables.get_mut(&net) else { return };
        let Some(flow) = table.get(id) else { return };
        let (key, Kind::UdpIn(dest)) = (*flow.key(), &flow.value.kind) else { return };
        let dest = *dest;
        let (src, dst) = (key.src, key.dst);
        frame::write_udp(&mut self.rxbuf, n, src.ip(), dst.ip(), src.port(), dst.port());
        self.ident = self.ident.wrapping_add(1);
        if !frame::deliver(&mut self.rxbuf, n, &mut self.fragbuf, &dest, src.ip(), dst.ip(), PROTO_UDP, self.ident, io, c) {
            return add(&c.pub_dropped, 1);
        }
        add(&c.pub_bytes_in, n as u64);
        let ip_hdr = if dst.is_ipv6() { IPV6_HDR_LEN } else { IPV4_HDR_LEN };
        table.on_packet(id, Dir::Orig, ip_hdr + 8 + n, now);
    }

    /// The container answers a published UDP port's client (flow `id`, which `pkt` is the reply
    /// of): sent from the published socket.
    pub(super) fn udp_answer(&mut self, c: &Counters, net: NetId, id: FlowId, pkt: &Packet<'_>, from: &Dest, now: u64) {
        let Some(table) = self.tables.get_mut(&net) else { return };
        let Some(flow) = table.get(id) else { return };
        let (Kind::UdpIn(dest), Some(inb)) = (&flow.value.kind, flow.value.inbound) else { return add(&c.drop_spoofed, 1) };
        if !same_origin(dest, from) {
            return add(&c.drop_spoofed, 1);
        }
        let Some(HostSock::Udp(sock)) = self.listeners.get(&inb.fwd).map(|l| &l.sock) else { return };
        for seg in udp_datagrams(pkt) {
            match sock.send_to(seg, inb.client) {
                Ok(n) => add(&c.pub_bytes_out, n as u64),
                Err(_) => add(&c.pub_dropped, 1),
            }
        }
        table.on_packet(id, Dir::Reply, pkt.ip.len(), now);
    }

    /// What a new flow of published port `fwd` from `client` is to look like to the container;
    /// None (counted) when it may not be.
    fn new_inbound(&mut self, c: &Counters, fwd: &PortForward, proto: Proto, client: SocketAddr) -> Option<NewInbound> {
        let net = fwd.net;
        let nets = self.nets.clone();
        let refused = || {
            add(&c.pub_dropped, 1);
            None
        };
        let Some(cfg) = nets.get(&net) else { return refused() };
        let Some(ip) = source_ip(client.ip(), fwd.container.ip(), cfg) else { return refused() };
        if !self.admit(net, fwd.container.ip(), c) {
            return refused();
        }
        // The client's own port unless another flow has it (two clients seen as the gateway, the
        // same client on two published ports of one container port): then one that is free.
        let table = table_of(&mut self.tables, net, &self.limits);
        let free = |port: u16| {
            let k = FlowKey::new(proto, SocketAddr::new(ip, port), fwd.container);
            port != 0 && table.id_of(&k).is_none() && table.id_of(&k.reversed()).is_none()
        };
        let port = if free(client.port()) {
            client.port()
        } else {
            let mut found = None;
            for _ in 0..PORT_TRIES {
                self.probe = self.probe.wrapping_add(1);
                let p = EPHEMERAL.0 + self.probe % (EPHEMERAL.1 - EPHEMERAL.0);
                if free(p) {
                    found = Some(p);
                    break;
                }
            }
            match found {
                Some(p) => p,
                None => return refused(),
            }
        };
        let dest = Dest { via: Via::Mac(net), mac: fwd.container_mac, gw_mac: cfg.mac, mtu: net_mtu(cfg) };
        Some(NewInbound { source: SocketAddr::new(ip, port), dest })
    }

    /// A published port's flow is gone: it no longer counts for its container, nor answers to its client.
    pub(super) fn forget_inbound(&mut self, inb: &Inbound, token: u64) {
        if let Some(n) = self.inbound_per.get_mut(&(inb.net, inb.container)) {
            *n -= 1;
            if *n == 0 {
                self.inbound_per.remove(&(inb.net, inb.container));
            }
        }
        if let Some(l) = self.listeners.get_mut(&inb.fwd) {
            if l.clients.get(&inb.client).is_some_and(|&(_, t)| t == token) {
                l.clients.remove(&inb.client);
            }
        }
    }
}

/// Source ports tried when a client's own is taken, and how many tries.
const EPHEMERAL: (u16, u16) = (32768, 61000);
const PORT_TRIES: usize = 64;

/// A new published flow: the source the container sees, and how to reach it.
struct NewInbound {
    source: SocketAddr,
    dest: Dest,
}

/// Accepts what waits on `l`, up to a budget, handing each connection to `one`; true if more may wait.
pub(super) fn accept_each(l: &TcpListener, c: &Counters, mut one: impl FnMut(Socket, SocketAddr)) -> bool {
    for _ in 0..ACCEPT_BUDGET {
        match l.accept() {
            Ok((stream, client)) => one(Socket::from(stream), client),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
            // Out of descriptors, most likely: the connection waits in the backlog.
            Err(_) => {
                add(&c.drop_host_socket_failed, 1);
                return false;
            }
        }
    }
    true
}

/// Closes a connection the engine will not carry with a RST, so that the client knows at once.
pub(super) fn turn_away(sock: Socket) {
    let _ = sock.set_linger(Some(std::time::Duration::ZERO));
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn net() -> EngineNet {
        EngineNet {
            mac: Mac([2, 0, 0, 0, 0, 1]),
            v4: Some(Ipv4Addr::new(10, 0, 0, 1)),
            v6: Some("fd00::1".parse().unwrap()),
            host_loopback: false,
            mtu: 1500,
            outbound4: None,
            outbound6: None,
            host_alias4: None,
            host_alias6: None,
        }
    }

    #[test]
    fn the_container_sees_the_client_unless_it_could_not_answer_it() {
        let n = net();
        let c4: IpAddr = "10.0.0.2".parse().unwrap();
        let c6: IpAddr = "fd00::2".parse().unwrap();
        let gw4 = Some(IpAddr::V4(n.v4.unwrap()));
        let gw6 = Some(IpAddr::V6(n.v6.unwrap()));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Real clients keep their address.
        assert_eq!(source_ip(ip("203.0.113.9"), c4, &n), Some(ip("203.0.113.9")));
        assert_eq!(source_ip(ip("192.168.1.20"), c4, &n), Some(ip("192.168.1.20")));
        assert_eq!(source_ip(ip("2001:db8::7"), c6, &n), Some(ip("2001:db8::7")));
        // An IPv4 client through an IPv6 socket is an IPv4 client.
        assert_eq!(source_ip(ip("::ffff:203.0.113.9"), c4, &n), Some(ip("203.0.113.9")));
        // Loopback, link-local, and the other family: the gateway of the container's family.
        for (client, container, want) in [
            ("127.0.0.1", c4, gw4),
            ("127.3.2.1", c4, gw4),
            ("::1", c6, gw6),
            ("::ffff:127.0.0.1", c4, gw4),
            ("169.254.3.4", c4, gw4),
            ("fe80::1", c6, gw6),
            ("2001:db8::7", c4, gw4),
            ("203.0.113.9", c6, gw6),
            ("0.1.2.3", c4, gw4),
            // The container itself, through a host address.
            ("10.0.0.2", c4, gw4),
        ] {
            assert_eq!(source_ip(ip(client), container, &n), want, "{client} to {container}");
        }
        // No gateway of that family: nothing the container could answer.
        let v4_only = EngineNet { v6: None, ..net() };
        assert_eq!(source_ip(ip("203.0.113.9"), c6, &v4_only), None);
        assert_eq!(source_ip(ip("2001:db8::7"), c6, &v4_only), Some(ip("2001:db8::7")));
        assert_eq!(source_ip(ip("::1"), c6, &v4_only), None);
    }

    #[test]
    fn proc_net_lines_parse() {
        let v4 = concat!(
            "   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 123456 1 ",
            "0000000000000000 100 0 0 10 0"
        );
        let (a, st, inode) = proc_net_line(v4).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(a, "127.0.0.1:8080".parse().unwrap());
        }
        assert_eq!((st, inode), (0x0a, 123456));
        let v6 = concat!(
            "   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 ",
            "00:00000000 00000000     0        0 42 1 0000000000000000 100 0 0 10 0"
        );
        let (a, _, inode) = proc_net_line(v6).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(a, "[::1]:80".parse().unwrap());
        }
        assert_eq!(inode, 42);
        assert!(proc_net_line("  sl  local_address rem_address   st").is_none());
    }
}
