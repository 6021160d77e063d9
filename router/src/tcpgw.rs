//! A TCP endpoint at the gateway carrying length-prefixed messages (DNS over TCP, RFC 7766), on smoltcp.
//!
//! Sans-IO like the rest of the crate: frames in through [`TcpGateway::input`], frames out
//! through the `tx` callback of [`TcpGateway::poll`], time as a parameter. smoltcp runs with
//! `Medium::Ip`, so it never does ARP or NDP (the gateway's are answered elsewhere): the
//! Ethernet header is stripped on input, and each IP packet smoltcp sends is wrapped again. A
//! connection's packets go to the MAC and switch port its SYN came from, and segments for it
//! from anywhere else are dropped, so that a container spoofing another's address can neither
//! steer its answers nor inject into its connections; what smoltcp sends in reply to one frame
//! (a RST to a refused SYN) goes back where that frame came from.
//!
//! smoltcp needs one socket per connection. Rather than keeping a socket in LISTEN between
//! segments, a listening socket is put in place only while a SYN that opens a new connection is
//! processed, and only while fewer than `max_conns` connections are open; every other segment
//! is processed with no listener at all. That way a burst of SYNs in one batch each finds a
//! listener (smoltcp would RST all but the first), a retransmitted SYN always reaches the
//! connection it belongs to (smoltcp hands a segment to the first socket that accepts it, and a
//! listener in an earlier slot would take it and open a duplicate), and a SYN over the limit
//! finds nobody and gets smoltcp's RST. The listening socket is reused until a SYN takes it.
//!
//! Messages: each is preceded by its length, two bytes big-endian. Whole messages read from a
//! connection go to `on_msg`; each [`TcpGateway::reply`] is one whole message, in any order.
//! A zero length is no message at all: it is counted malformed and the connection reset.
//!
//! Every frame is checked before smoltcp sees it (lengths, IPv4 and TCP checksums, addresses,
//! port), so that what smoltcp would silently drop is counted here; smoltcp checks the
//! checksums again. Nothing here panics on any input.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpControl,
    TcpPacket, TcpRepr,
};
use vswitch_switch::{Mac, PortId};

use crate::answer::{mac_at, write_eth, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HDR_LEN};

/// A connection, unique for the lifetime of its [`TcpGateway`]: ids are never reused.
pub type ConnId = u64;

/// The IP MTU smoltcp sends with: the MSS it announces is 1460 (IPv4) or 1440 (IPv6), and a
/// client announcing a smaller one (a smaller link MTU) is sent smaller segments.
const IP_MTU: usize = 1500;
/// smoltcp's receive buffer per connection, which is also the window announced. Queries are a
/// few hundred bytes; a larger message (up to 65535 bytes) is assembled in the connection's own
/// buffer a window at a time, so memory follows what clients send, not what they could.
const RX_BUF: usize = 4096;
/// smoltcp's transmit buffer per connection, the most bytes in flight. Replies that do not fit
/// yet wait in the connection's outbox.
const TX_BUF: usize = 16 * 1024;
/// The largest message the 2-byte length prefix can announce.
const MAX_MSG: usize = u16::MAX as usize;
/// The most reply bytes (prefixes included) a connection holds, sent or not yet acknowledged:
/// two of the largest replies, so one always fits once the connection has caught up.
const QUEUE_LIMIT: usize = 2 * (MAX_MSG + 2);
/// The most messages a connection may have handed to `on_msg` and not yet had replied to. At
/// the limit nothing more is read, so its window fills and a pipelining client waits.
const MAX_PIPELINE: usize = 64;
/// How long a connection lingers in TIME-WAIT (after an idle close) before its socket is freed:
/// long enough to acknowledge the client's FIN (smoltcp delays ACKs by 10 ms) and a retransmission
/// of it; a later one gets a RST, which a client in LAST-ACK takes as the end it waits for.
const TIME_WAIT_MS: u64 = 1000;
/// The most packets queued for the next `tx` between two polls, of each kind (smoltcp's own, and
/// its answers to single frames); beyond that smoltcp is told the link is busy and sends later,
/// and answers (RSTs) are dropped.
const TX_QUEUE_MAX: usize = 1024;

/// What a [`TcpGateway`] did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpGwCounters {
    /// Connections opened (SYN answered).
    pub accepted: u64,
    /// SYNs answered with a RST because `max_conns` connections were open.
    pub refused: u64,
    /// Messages handed to `on_msg`.
    pub messages: u64,
    /// Replies queued by [`TcpGateway::reply`].
    pub replies: u64,
    /// Frames dropped as truncated, inconsistent, with a bad checksum, not for us, or for a
    /// connection but not from its client's MAC and port; zero message lengths; messages cut
    /// short by the client's FIN.
    pub malformed: u64,
    /// Connections closed (or reset, if not yet or no longer established) after `idle_ms`
    /// without a segment from the client or a reply.
    pub idle_closed: u64,
}

/// Who is at the other end of a connection, and how frames reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPeer {
    /// The client's MAC (its SYN's source).
    pub mac: Mac,
    /// The switch port the client's SYN came from, where frames to it leave.
    pub port: PortId,
    /// The client's address and port.
    pub remote: SocketAddr,
    /// The gateway address the client connected to.
    pub local: IpAddr,
}

/// A TCP endpoint at one network's gateway: listens on one port at the gateway's IPv4 and/or
/// IPv6 addresses (its own, and a DNS address beside it), and carries length-prefixed messages
/// (see the module documentation).
///
/// Drive it from one thread: [`input`](Self::input) each frame [`wants_frame`](Self::wants_frame)
/// claims, then [`poll`](Self::poll); [`poll`](Self::poll) again after [`reply`](Self::reply),
/// and whenever [`next_poll_ms`](Self::next_poll_ms) says (retransmissions, delayed ACKs, idle
/// timeouts).
pub struct TcpGateway {
    mac: Mac,
    /// The addresses it listens at (None entries: none).
    v4: Box<[Option<Ipv4Addr>]>,
    v6: Box<[Option<Ipv6Addr>]>,
    port: u16,
    max_conns: usize,
    idle_ms: u64,
    iface: Interface,
    sockets: SocketSet<'static>,
    /// Packets smoltcp sent, each with room for an Ethernet header in front.
    tx: VecDeque<Vec<u8>>,
    /// Frames smoltcp sent in reply to one input() (RSTs, challenge ACKs), addressed to that
    /// frame's sender, until poll() hands them to `tx`.
    replies: Vec<(PortId, Vec<u8>)>,
    /// The socket that listens while a new connection's SYN is processed (closed in between).
    spare: Option<SocketHandle>,
    conns: HashMap<ConnId, Conn>,
    by_remote: HashMap<IpEndpoint, ConnId>,
    next_id: ConnId,
    /// The latest time seen: smoltcp's clock must not run backwards, whatever the caller's does.
    clock: u64,
    counters: TcpGwCounters,
}

/// One connection's state beyond smoltcp's socket.
#[derive(Debug)]
struct Conn {
    handle: SocketHandle,
    remote: IpEndpoint,
    local: IpAddress,
    /// Where the SYN came from: the only source its segments are taken from, and where the
    /// connection's packets go.
    mac: Mac,
    port: PortId,
    /// When the client last sent a segment, or we last queued a reply.
    last_ms: u64,
    /// A reply was queued since the last poll (reply() is not given the time).
    touched: bool,
    /// Bytes read from the socket that do not make a whole message yet.
    inbuf: Vec<u8>,
    /// Reply bytes that did not fit smoltcp's transmit buffer yet, in order.
    outbox: VecDeque<u8>,
    /// Messages handed out and not yet replied to (or abandoned).
    outstanding: usize,
    /// The idle timer closed it once; the next expiry resets it.
    expired: bool,
    /// When it was first seen in TIME-WAIT.
    time_wait_since: Option<u64>,
}

impl fmt::Debug for TcpGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // smoltcp's Interface has no Debug; the sockets would be noise.
        f.debug_struct("TcpGateway")
            .field("mac", &self.mac)
            .field("v4", &self.v4)
            .field("v6", &self.v6)
            .field("port", &self.port)
            .field("max_conns", &self.max_conns)
            .field("idle_ms", &self.idle_ms)
            .field("conns", &self.conns.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl TcpGateway {
    /// Listens on `port` at the addresses in `v4` and `v6` (None entries are skipped; the
    /// gateway's own and its DNS address), with at most `max_conns` connections at once
    /// (further SYNs get a RST); connections are closed after `idle_ms` without a segment from
    /// the client or a reply. A connection's packets come from the address it was opened to.
    pub fn new(mac: Mac, v4: &[Option<Ipv4Addr>], v6: &[Option<Ipv6Addr>], port: u16, max_conns: usize, idle_ms: u64) -> Self {
        let mut tx = VecDeque::new();
        let mut cfg = Config::new(HardwareAddress::Ip);
        // smoltcp draws initial sequence numbers from this seed; an off-path host must not be
        // able to guess them (RFC 6528). std's RandomState is keyed from the OS's randomness.
        cfg.random_seed = std::collections::hash_map::RandomState::new().hash_one((mac.0, port));
        let mut iface = Interface::new(cfg, &mut Link { rx: None, tx: &mut tx }, Instant::ZERO);
        let addrs = v4.iter().flatten().map(|&a| IpCidr::new(IpAddress::Ipv4(a), 32));
        let addrs = addrs.chain(v6.iter().flatten().map(|&a| IpCidr::new(IpAddress::Ipv6(a), 128)));
        let mut all_held = true;
        iface.update_ip_addrs(|a| {
            for cidr in addrs {
                all_held &= a.push(cidr).is_ok();
            }
        });
        if !all_held {
            // smoltcp holds two addresses by default; beyond that it would drop segments to the
            // others and reset their connections. AnyIP makes it take every destination, which
            // opens nothing: check() lets through only segments to the addresses given here.
            iface.set_any_ip(true);
        }
        // smoltcp sends only to addresses it has a route to; with Medium::Ip any route will do,
        // and clients are outside our /32 and /128.
        if let Some(&v4) = v4.iter().flatten().next() {
            let _ = iface.routes_mut().add_default_ipv4_route(v4);
        }
        if let Some(&v6) = v6.iter().flatten().next() {
            let _ = iface.routes_mut().add_default_ipv6_route(v6);
        }
        TcpGateway {
            mac,
            v4: v4.into(),
            v6: v6.into(),
            port,
            max_conns,
            idle_ms,
            iface,
            sockets: SocketSet::new(Vec::new()),
            tx,
            replies: Vec::new(),
            spare: None,
            conns: HashMap::new(),
            by_remote: HashMap::new(),
            next_id: 1,
            clock: 0,
            counters: TcpGwCounters::default(),
        }
    }

    /// Whether `eth` (a bare Ethernet frame) is TCP to one of our addresses and our port: only
    /// then call [`input`](Self::input).
    pub fn wants(&self, eth: &[u8]) -> bool {
        Self::wants_frame(eth, &self.v4, &self.v6, self.port)
    }

    /// [`wants`](Self::wants) without an endpoint: whether `eth` is TCP to one of the addresses
    /// in `v4` or `v6` and `port`. A segment too short to show its port is claimed too (input()
    /// counts it malformed); the destination MAC and the checksums are input()'s to check.
    pub fn wants_frame(eth: &[u8], v4: &[Option<Ipv4Addr>], v6: &[Option<Ipv6Addr>], port: u16) -> bool {
        let Some((hdr, ip)) = eth.split_first_chunk::<ETH_HDR_LEN>() else {
            return false;
        };
        let (port_at, ours) = match u16::from_be_bytes([hdr[12], hdr[13]]) {
            ETHERTYPE_IPV4 => {
                let Some(h) = ip.first_chunk::<20>() else {
                    return false;
                };
                let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
                (usize::from(h[0] & 0x0f) * 4 + 2, h[9] == u8::from(IpProtocol::Tcp) && v4.contains(&Some(dst)))
            }
            ETHERTYPE_IPV6 => {
                let Some(h) = ip.first_chunk::<40>() else {
                    return false;
                };
                let mut dst = [0u8; 16];
                dst.copy_from_slice(&h[24..40]);
                // Extension headers are not followed: TCP to the gateway has no reason for them.
                (42, h[6] == u8::from(IpProtocol::Tcp) && v6.contains(&Some(Ipv6Addr::from(dst))))
            }
            _ => return false,
        };
        ours && ip.get(port_at..port_at + 2).is_none_or(|p| u16::from_be_bytes([p[0], p[1]]) == port)
    }

    /// Takes a frame that arrived on `ingress`, one [`wants`](Self::wants) claimed; anything
    /// else is counted malformed. Call [`poll`](Self::poll) after it to send what it caused.
    pub fn input(&mut self, eth: &[u8], ingress: PortId, now_ms: u64) {
        let now_ms = self.clock(now_ms);
        let Some(seg) = self.check(eth) else {
            self.counters.malformed += 1;
            return;
        };
        let known = match self.by_remote.get(&seg.remote).and_then(|id| self.conns.get_mut(id)) {
            Some(c) if c.mac != seg.mac || c.port != ingress => {
                self.counters.malformed += 1;
                return;
            }
            Some(c) => {
                c.last_ms = now_ms;
                true
            }
            None => false,
        };
        let mut listener = None;
        if seg.opens && !known {
            if self.conns.len() < self.max_conns {
                listener = Some(self.listen());
            } else {
                self.counters.refused += 1;
            }
        }
        let mut link = Link { rx: Some(seg.ip), tx: &mut self.tx };
        let _ = self.iface.poll_ingress_single(instant(now_ms), &mut link, &mut self.sockets);
        // The queue was empty before (poll() empties it), so all of it answers this frame.
        for mut frame in self.tx.drain(..) {
            if let Some((_, ethertype)) = destination(&frame) {
                if self.replies.len() < TX_QUEUE_MAX {
                    write_eth(&mut frame, seg.mac, self.mac, ethertype);
                    self.replies.push((ingress, frame));
                }
            }
        }
        if let Some(h) = listener {
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            if matches!(s.state(), tcp::State::Listen | tcp::State::Closed) {
                // Not taken (smoltcp found fault with the SYN): deaf again until the next one.
                s.close();
            } else {
                self.spare = None;
                let id = self.next_id;
                self.next_id += 1;
                self.by_remote.insert(seg.remote, id);
                self.conns.insert(
                    id,
                    Conn {
                        handle: h,
                        remote: seg.remote,
                        local: seg.local,
                        mac: seg.mac,
                        port: ingress,
                        last_ms: now_ms,
                        touched: false,
                        inbuf: Vec::new(),
                        outbox: VecDeque::new(),
                        outstanding: 0,
                        expired: false,
                        time_wait_since: None,
                    },
                );
                self.counters.accepted += 1;
            }
        }
    }

    /// Runs the endpoint: every whole message read from a connection goes to `on_msg(conn,
    /// msg)` (without its length prefix), every frame to send to `tx(port, eth_frame)`. Call
    /// after input(), after reply(), and at [`next_poll_ms`](Self::next_poll_ms).
    pub fn poll(&mut self, now_ms: u64, on_msg: &mut dyn FnMut(ConnId, &[u8]), tx: &mut dyn FnMut(PortId, &[u8])) {
        let now_ms = self.clock(now_ms);
        for (&id, c) in &mut self.conns {
            let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
            if std::mem::take(&mut c.touched) {
                c.last_ms = now_ms;
            }
            expire(c, s, now_ms, self.idle_ms, &mut self.counters);
            service(id, c, s, &mut self.counters, on_msg);
        }
        let mut link = Link { rx: None, tx: &mut self.tx };
        let _ = self.iface.poll(instant(now_ms), &mut link, &mut self.sockets);
        for (port, frame) in self.replies.drain(..) {
            tx(port, &frame);
        }
        for mut frame in self.tx.drain(..) {
            // Everything smoltcp sends now belongs to a connection, unless it outlived it.
            let Some((remote, ethertype)) = destination(&frame) else { continue };
            let Some(c) = self.by_remote.get(&remote).and_then(|id| self.conns.get(id)) else { continue };
            write_eth(&mut frame, c.mac, self.mac, ethertype);
            tx(c.port, &frame);
        }
        // After the frames are out, so that aborted sockets' RSTs still find their client.
        let (sockets, by_remote) = (&mut self.sockets, &mut self.by_remote);
        self.conns.retain(|_, c| {
            let done = match sockets.get::<tcp::Socket>(c.handle).state() {
                tcp::State::Closed => true,
                tcp::State::TimeWait => now_ms.saturating_sub(*c.time_wait_since.get_or_insert(now_ms)) >= TIME_WAIT_MS,
                _ => false,
            };
            if done {
                sockets.remove(c.handle);
                by_remote.remove(&c.remote);
            }
            !done
        });
    }

    /// Queues `msg` (at most 65535 bytes; the length prefix is added here) as a reply on
    /// `conn`. False if the connection is gone (closed, reset, expired, or closing) or cannot
    /// take that much now (more than 128 KiB would be waiting); the reply is then dropped.
    pub fn reply(&mut self, conn: ConnId, msg: &[u8]) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else { return false };
        let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
        let Ok(len) = u16::try_from(msg.len()) else { return false };
        if c.expired || !s.may_send() || s.send_queue() + c.outbox.len() + 2 + msg.len() > QUEUE_LIMIT {
            return false;
        }
        send(c, s, &len.to_be_bytes());
        send(c, s, msg);
        c.outstanding = c.outstanding.saturating_sub(1);
        c.touched = true;
        self.counters.replies += 1;
        true
    }

    /// Gives up on one of `conn`'s messages without a reply, so that it no longer counts
    /// against the connection's pipeline or keeps a half-closed connection open. False if the
    /// connection is gone.
    pub fn abandon(&mut self, conn: ConnId) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else { return false };
        c.outstanding = c.outstanding.saturating_sub(1);
        c.touched = true;
        true
    }

    /// Who is at the other end of `conn`, if it is still open.
    pub fn peer(&self, conn: ConnId) -> Option<TcpPeer> {
        let c = self.conns.get(&conn)?;
        Some(TcpPeer { mac: c.mac, port: c.port, remote: c.remote.into(), local: c.local.into() })
    }

    /// When [`poll`](Self::poll) should next run (an absolute time, on the clock of `now_ms`,
    /// never before it) for retransmissions, delayed ACKs and timeouts; None if nothing is
    /// pending.
    pub fn next_poll_ms(&mut self, now_ms: u64) -> Option<u64> {
        let now_ms = self.clock(now_ms);
        let mut at = self.iface.poll_at(instant(now_ms), &self.sockets).map(|t| u64::try_from(t.total_millis()).unwrap_or(0));
        for c in self.conns.values() {
            let t = match (self.sockets.get::<tcp::Socket>(c.handle).state(), c.time_wait_since) {
                (tcp::State::TimeWait, Some(since)) => since.saturating_add(TIME_WAIT_MS),
                (tcp::State::TimeWait | tcp::State::Closed, _) => now_ms,
                _ if c.touched => now_ms,
                _ => c.last_ms.saturating_add(self.idle_ms),
            };
            at = Some(at.map_or(t, |a| a.min(t)));
        }
        at.map(|t| t.max(now_ms))
    }

    /// Connections open, including those closing (they hold their buffers until closed).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    pub fn counters(&self) -> TcpGwCounters {
        self.counters
    }

    fn clock(&mut self, now_ms: u64) -> u64 {
        self.clock = self.clock.max(now_ms.min(MAX_CLOCK_MS));
        self.clock
    }

    /// Puts the listening socket in place (created on first use), for one SYN.
    fn listen(&mut self) -> SocketHandle {
        let sockets = &mut self.sockets;
        let h = *self.spare.get_or_insert_with(|| sockets.add(new_socket()));
        // The spare is closed, so listening cannot fail.
        let _ = self.sockets.get_mut::<tcp::Socket>(h).listen(IpListenEndpoint { addr: None, port: self.port });
        h
    }

    /// Checks a frame as smoltcp will (and a little more), so that what it would drop
    /// silently is counted: None if it is not a well-formed TCP segment to us.
    fn check<'a>(&self, eth: &'a [u8]) -> Option<Segment<'a>> {
        let (hdr, payload) = eth.split_first_chunk::<ETH_HDR_LEN>()?;
        let mac = mac_at(hdr, 6);
        if mac_at(hdr, 0) != self.mac || mac.is_multicast() {
            return None;
        }
        let caps = ChecksumCapabilities::default();
        let (ip, src, dst, segment) = match u16::from_be_bytes([hdr[12], hdr[13]]) {
            ETHERTYPE_IPV4 => {
                let pkt = Ipv4Packet::new_checked(payload).ok()?;
                // Verifies the header checksum. Fragments are refused here, or (if smoltcp's
                // fragmentation feature is on) fail the TCP checks below.
                let repr = Ipv4Repr::parse(&pkt, &caps).ok()?;
                let s = repr.src_addr;
                if !self.v4.contains(&Some(repr.dst_addr))
                    || repr.next_header != IpProtocol::Tcp
                    || s.is_broadcast()
                    || s.is_multicast()
                    || s.is_unspecified()
                {
                    return None;
                }
                // Without the Ethernet padding of short frames.
                (payload.get(..usize::from(pkt.total_len()))?, IpAddress::Ipv4(s), IpAddress::Ipv4(repr.dst_addr), pkt.payload())
            }
            ETHERTYPE_IPV6 => {
                let pkt = Ipv6Packet::new_checked(payload).ok()?;
                let repr = Ipv6Repr::parse(&pkt).ok()?;
                let s = repr.src_addr;
                let ours = self.v6.contains(&Some(repr.dst_addr));
                if !ours || repr.next_header != IpProtocol::Tcp || s.is_multicast() || s.is_unspecified() {
                    return None;
                }
                (payload.get(..40 + repr.payload_len)?, IpAddress::Ipv6(s), IpAddress::Ipv6(repr.dst_addr), pkt.payload())
            }
            _ => return None,
        };
        let tcp = TcpPacket::new_checked(segment).ok()?;
        // Verifies the checksum, the header length, the options and non-zero ports.
        let repr = TcpRepr::parse(&tcp, &src, &dst, &caps).ok()?;
        if repr.dst_port != self.port {
            return None;
        }
        let opens = repr.control == TcpControl::Syn && repr.ack_number.is_none();
        Some(Segment { ip, mac, remote: IpEndpoint::new(src, repr.src_port), local: dst, opens })
    }
}

/// A checked segment, ready for smoltcp.
struct Segment<'a> {
    /// The IP packet, without Ethernet header or padding.
    ip: &'a [u8],
    mac: Mac,
    remote: IpEndpoint,
    local: IpAddress,
    /// A SYN without ACK: the first segment of a connection.
    opens: bool,
}

fn new_socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; RX_BUF]), tcp::SocketBuffer::new(vec![0; TX_BUF]));
    // Each reply is written whole; holding its tail back for the ACK of its head (and the
    // client's delayed ACK) would only add latency, as for any DNS server.
    s.set_nagle_enabled(false);
    s
}

/// The idle timer: the first expiry closes the connection (gracefully if it is established),
/// the second resets it (a client that never finishes closing).
fn expire(c: &mut Conn, s: &mut tcp::Socket<'_>, now_ms: u64, idle_ms: u64, counters: &mut TcpGwCounters) {
    let state = s.state();
    if matches!(state, tcp::State::TimeWait | tcp::State::Closed) || now_ms.saturating_sub(c.last_ms) < idle_ms {
        return;
    }
    if c.expired {
        s.abort();
        return;
    }
    c.expired = true;
    c.last_ms = now_ms;
    counters.idle_closed += 1;
    match state {
        tcp::State::Established | tcp::State::CloseWait => s.close(),
        _ => s.abort(),
    }
}

/// Moves replies into the socket, hands out the whole messages read, and closes our half once
/// a client that closed its own has had all its answers.
fn service(id: ConnId, c: &mut Conn, s: &mut tcp::Socket<'_>, counters: &mut TcpGwCounters, on_msg: &mut dyn FnMut(ConnId, &[u8])) {
    while !c.outbox.is_empty() {
        let n = s.send_slice(c.outbox.as_slices().0).unwrap_or(0);
        if n == 0 {
            break;
        }
        c.outbox.drain(..n);
    }
    if c.outbox.is_empty() && c.outbox.capacity() > TX_BUF {
        c.outbox = VecDeque::new();
    }
    if c.expired {
        // Closing: whatever the client still sends will not be answered.
        while s.can_recv() {
            let _ = s.recv(|b| (b.len(), ()));
        }
        return;
    }
    loop {
        let mut at = 0;
        while c.outstanding < MAX_PIPELINE {
            let Some(len) = c.inbuf.get(at..at + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else { break };
            if len == 0 {
                counters.malformed += 1;
                c.inbuf = Vec::new();
                s.abort();
                return;
            }
            let Some(msg) = c.inbuf.get(at + 2..at + 2 + len) else { break };
            on_msg(id, msg);
            counters.messages += 1;
            c.outstanding += 1;
            at += 2 + len;
        }
        c.inbuf.drain(..at);
        // Read only when no whole message is waiting, so inbuf holds at most one message
        // and a receive buffer's worth.
        if c.outstanding >= MAX_PIPELINE || !s.can_recv() {
            break;
        }
        let _ = s.recv(|b| {
            c.inbuf.extend_from_slice(b);
            (b.len(), ())
        });
    }
    if c.inbuf.is_empty() && c.inbuf.capacity() > RX_BUF {
        c.inbuf = Vec::new();
    }
    // RFC 7766 §6.2.4: a client may close its half after its last query and still expects
    // the answers; our FIN follows them.
    if s.state() == tcp::State::CloseWait && !s.can_recv() && c.outstanding == 0 && c.outbox.is_empty() {
        if !c.inbuf.is_empty() {
            // A message the FIN cut short.
            counters.malformed += 1;
            c.inbuf = Vec::new();
        }
        s.close();
    }
}

/// Appends `bytes` to what `c` sends, after anything already waiting in its outbox.
fn send(c: &mut Conn, s: &mut tcp::Socket<'_>, bytes: &[u8]) {
    let n = if c.outbox.is_empty() { s.send_slice(bytes).unwrap_or(0) } else { 0 };
    c.outbox.extend(&bytes[n..]);
}

/// Where a packet smoltcp sent goes: the client's address and port, and the ethertype to wrap
/// it in. `frame` has room for the Ethernet header in front of the IP packet.
fn destination(frame: &[u8]) -> Option<(IpEndpoint, u16)> {
    let ip = frame.get(ETH_HDR_LEN..)?;
    let port_at = |at: usize| ip.get(at..at + 2).map(|p| u16::from_be_bytes([p[0], p[1]]));
    match ip.first()? >> 4 {
        4 => {
            let a: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            let port = port_at(usize::from(ip[0] & 0x0f) * 4 + 2)?;
            Some((IpEndpoint::new(IpAddress::Ipv4(a.into()), port), ETHERTYPE_IPV4))
        }
        6 => {
            let a: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            Some((IpEndpoint::new(IpAddress::Ipv6(a.into()), port_at(42)?), ETHERTYPE_IPV6))
        }
        _ => None,
    }
}

/// The latest time passed to smoltcp: its clock counts microseconds in an i64, and adds its
/// timeouts to it (35,000 years of milliseconds leave ample room).
const MAX_CLOCK_MS: u64 = 1 << 50;

fn instant(ms: u64) -> Instant {
    Instant::from_millis(i64::try_from(ms.min(MAX_CLOCK_MS)).unwrap_or(0))
}

/// The device smoltcp talks to: at most one received IP packet (the frame input() is handling,
/// without its Ethernet header) and the queue of packets it sends.
struct Link<'a> {
    rx: Option<&'a [u8]>,
    tx: &'a mut VecDeque<Vec<u8>>,
}

struct Rx<'a>(&'a [u8]);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // Room for the Ethernet header, written when the destination's MAC is looked up.
        let mut frame = vec![0; ETH_HDR_LEN + len];
        let r = f(&mut frame[ETH_HDR_LEN..]);
        self.0.push_back(frame);
        r
    }
}

impl Device for Link<'_> {
    type RxToken<'b>
        = Rx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let p = self.rx.take()?;
        Some((Rx(p), Tx(&mut *self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        if self.tx.len() < TX_QUEUE_MAX {
            Some(Tx(&mut *self.tx))
        } else {
            None
        }
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = IP_MTU;
        // The default checksum capabilities verify on receive and compute on send.
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::Rng;

    const GW_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0x01]);
    const CLIENT_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0x02]);
    const CLIENT_PORT: PortId = 7;
    const GW4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const GW6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
    const DNS: u16 = 53;

    /// The gateway and a container with its own smoltcp stack, frames passed by hand.
    struct Net {
        gw: TcpGateway,
        client: Interface,
        sockets: SocketSet<'static>,
        now: u64,
        /// Messages the gateway handed out.
        msgs: Vec<(ConnId, Vec<u8>)>,
        /// Frames on their way to the client.
        to_client: Vec<Vec<u8>>,
        /// Every frame the client sent, for the fuzz tests.
        sent: Vec<Vec<u8>>,
    }

    impl Net {
        fn new(max_conns: usize, idle_ms: u64) -> Self {
            Self::with_gateway(TcpGateway::new(GW_MAC, &[Some(GW4)], &[Some(GW6)], DNS, max_conns, idle_ms))
        }

        fn with_gateway(gw: TcpGateway) -> Self {
            let mut tx = VecDeque::new();
            let mut cfg = Config::new(HardwareAddress::Ip);
            cfg.random_seed = 42;
            let mut client = Interface::new(cfg, &mut Link { rx: None, tx: &mut tx }, Instant::ZERO);
            client.update_ip_addrs(|a| {
                a.push(IpCidr::new(IpAddress::Ipv4(CLIENT4), 24)).unwrap();
                a.push(IpCidr::new(IpAddress::Ipv6(CLIENT6), 64)).unwrap();
            });
            Net { gw, client, sockets: SocketSet::new(Vec::new()), now: 1000, msgs: Vec::new(), to_client: Vec::new(), sent: Vec::new() }
        }

        /// A client socket connecting to the gateway's port 53 from `local_port`.
        fn connect(&mut self, v6: bool, local_port: u16) -> SocketHandle {
            self.connect_to(if v6 { IpAddress::Ipv6(GW6) } else { IpAddress::Ipv4(GW4) }, local_port)
        }

        /// A client socket connecting to port 53 of `addr` from `local_port`.
        fn connect_to(&mut self, addr: IpAddress, local_port: u16) -> SocketHandle {
            let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 128 * 1024]), tcp::SocketBuffer::new(vec![0; 16 * 1024]));
            s.connect(self.client.context(), (addr, DNS), local_port).unwrap();
            self.sockets.add(s)
        }

        fn sock(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
            self.sockets.get_mut::<tcp::Socket>(h)
        }

        /// Passes frames both ways at the current time until both sides are quiet.
        fn step(&mut self) {
            let now = instant(self.now);
            for _ in 0..10_000 {
                let mut out = VecDeque::new();
                for f in std::mem::take(&mut self.to_client) {
                    assert_eq!(mac_at(&f, 0), CLIENT_MAC);
                    assert_eq!(mac_at(&f, 6), GW_MAC);
                    let et = u16::from_be_bytes([f[12], f[13]]);
                    assert_eq!(et, if f[ETH_HDR_LEN] >> 4 == 4 { ETHERTYPE_IPV4 } else { ETHERTYPE_IPV6 });
                    let mut link = Link { rx: Some(&f[ETH_HDR_LEN..]), tx: &mut out };
                    let _ = self.client.poll(now, &mut link, &mut self.sockets);
                }
                let _ = self.client.poll(now, &mut Link { rx: None, tx: &mut out }, &mut self.sockets);
                let moved = !out.is_empty();
                for mut f in out {
                    let et = if f[ETH_HDR_LEN] >> 4 == 4 { ETHERTYPE_IPV4 } else { ETHERTYPE_IPV6 };
                    write_eth(&mut f, GW_MAC, CLIENT_MAC, et);
                    assert!(self.gw.wants(&f));
                    self.gw.input(&f, CLIENT_PORT, self.now);
                    self.sent.push(f);
                }
                let (msgs, to_client) = (&mut self.msgs, &mut self.to_client);
                self.gw.poll(self.now, &mut |id, m| msgs.push((id, m.to_vec())), &mut |port, f| {
                    assert_eq!(port, CLIENT_PORT);
                    to_client.push(f.to_vec());
                });
                if !moved && self.to_client.is_empty() {
                    return;
                }
            }
            panic!("no quiet after 10000 rounds");
        }

        /// Steps through `ms` milliseconds, one at a time.
        fn run(&mut self, ms: u64) {
            for _ in 0..ms {
                self.step();
                self.now += 1;
            }
        }

        /// Everything the client socket has received so far.
        fn read(&mut self, h: SocketHandle) -> Vec<u8> {
            let mut v = Vec::new();
            while self.sock(h).can_recv() {
                self.sock(h)
                    .recv(|b| {
                        v.extend_from_slice(b);
                        (b.len(), ())
                    })
                    .unwrap();
            }
            v
        }

        fn established(&mut self, v6: bool, local_port: u16) -> SocketHandle {
            let h = self.connect(v6, local_port);
            self.run(5);
            assert_eq!(self.sock(h).state(), tcp::State::Established);
            h
        }
    }

    fn framed(msg: &[u8]) -> Vec<u8> {
        let mut v = u16::try_from(msg.len()).unwrap().to_be_bytes().to_vec();
        v.extend_from_slice(msg);
        v
    }

    /// A message of `len` bytes that tells where its bytes are.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn query_and_reply(v6: bool) {
        let mut n = Net::new(8, 10_000);
        let h = n.established(v6, 40000);
        assert_eq!(n.gw.connections(), 1);
        let q = framed(&pattern(300, 1));
        // Two segments: the length and part of the query, then the rest.
        n.sock(h).send_slice(&q[..100]).unwrap();
        n.run(3);
        assert!(n.msgs.is_empty());
        n.sock(h).send_slice(&q[100..]).unwrap();
        // The client's Nagle holds the rest until our (delayed) ACK of the first part.
        n.run(20);
        assert_eq!(n.msgs.len(), 1);
        let (id, m) = n.msgs.pop().unwrap();
        assert_eq!(m, pattern(300, 1));
        let peer = n.gw.peer(id).unwrap();
        assert_eq!(peer.mac, CLIENT_MAC);
        assert_eq!(peer.port, CLIENT_PORT);
        let (client, gw) = if v6 { (IpAddr::V6(CLIENT6), IpAddr::V6(GW6)) } else { (IpAddr::V4(CLIENT4), IpAddr::V4(GW4)) };
        assert_eq!(peer.remote, SocketAddr::new(client, 40000));
        assert_eq!(peer.local, gw);
        assert!(n.gw.reply(id, &pattern(500, 2)));
        n.run(3);
        assert_eq!(n.read(h), framed(&pattern(500, 2)));
        let c = n.gw.counters();
        assert_eq!((c.accepted, c.messages, c.replies, c.malformed, c.refused), (1, 1, 1, 0, 0));
    }

    #[test]
    fn a_query_in_two_segments_is_one_message_and_gets_its_reply() {
        query_and_reply(false);
    }

    #[test]
    fn ipv6_works_the_same() {
        query_and_reply(true);
    }

    #[test]
    fn the_dns_address_beside_the_gateway_serves_from_itself() {
        let (dns4, dns6) = (Ipv4Addr::new(10, 0, 0, 3), Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3));
        // Two addresses fit smoltcp's interface; four do not, and take the AnyIP path.
        let two = TcpGateway::new(GW_MAC, &[Some(GW4), Some(dns4)], &[], DNS, 8, 10_000);
        let four = TcpGateway::new(GW_MAC, &[Some(GW4), Some(dns4)], &[Some(GW6), Some(dns6)], DNS, 8, 10_000);
        for (gw, targets) in
            [(two, &[IpAddress::Ipv4(dns4), IpAddress::Ipv4(GW4)][..]), (four, &[dns4.into(), dns6.into(), GW4.into()][..])]
        {
            let mut n = Net::with_gateway(gw);
            for (i, &to) in targets.iter().enumerate() {
                let port = 40000 + i as u16;
                // Established only if the SYN-ACK came from `to`: smoltcp's client takes nothing else.
                let h = n.connect_to(to, port);
                n.run(5);
                assert_eq!(n.sock(h).state(), tcp::State::Established, "{to}");
                n.sock(h).send_slice(&framed(b"query")).unwrap();
                n.run(3);
                let (id, m) = n.msgs.pop().unwrap();
                assert_eq!(m, b"query");
                assert_eq!(n.gw.peer(id).unwrap().local, IpAddr::from(to), "the answer's source");
                assert!(n.gw.reply(id, b"answer"));
                n.run(3);
                assert_eq!(n.read(h), framed(b"answer"));
            }
            assert_eq!(n.gw.counters().accepted, targets.len() as u64);
        }
    }

    #[test]
    fn anyip_opens_no_address_that_was_not_given() {
        let dns4 = Ipv4Addr::new(10, 0, 0, 3);
        let mut n = Net::with_gateway(TcpGateway::new(GW_MAC, &[Some(GW4), Some(dns4)], &[Some(GW6), None], DNS, 8, 10_000));
        let h = n.connect_to(IpAddress::Ipv4(dns4), 40000);
        n.run(5);
        assert_eq!(n.sock(h).state(), tcp::State::Established);
        // The same SYN to 10.0.0.9: not claimed, and refused if input() is given it anyway.
        let mut syn = n.sent[0].clone();
        syn[ETH_HDR_LEN + 19] = 9;
        syn[ETH_HDR_LEN + 10..ETH_HDR_LEN + 12].fill(0);
        let c = crate::checksum::of(&syn[ETH_HDR_LEN..ETH_HDR_LEN + 20]);
        syn[ETH_HDR_LEN + 10..ETH_HDR_LEN + 12].copy_from_slice(&c.to_be_bytes());
        assert!(!n.gw.wants(&syn));
        let before = n.gw.counters();
        n.gw.input(&syn, CLIENT_PORT, n.now);
        let mut sent = 0;
        n.gw.poll(n.now, &mut |_, _| panic!("no message"), &mut |_, _| sent += 1);
        assert_eq!((sent, n.gw.counters().malformed, n.gw.counters().accepted), (0, before.malformed + 1, before.accepted));
    }

    #[test]
    fn pipelined_queries_are_answered_in_any_order() {
        let mut n = Net::new(8, 10_000);
        let h = n.established(false, 40000);
        let mut all = Vec::new();
        for i in 0..3 {
            all.extend(framed(&pattern(20 + i, i as u8)));
        }
        n.sock(h).send_slice(&all).unwrap();
        n.run(3);
        assert_eq!(n.msgs.len(), 3);
        for (i, (_, m)) in n.msgs.iter().enumerate() {
            assert_eq!(*m, pattern(20 + i, i as u8));
        }
        let id = n.msgs[0].0;
        assert!(n.msgs.iter().all(|(c, _)| *c == id));
        for i in [2u8, 0, 1] {
            assert!(n.gw.reply(id, &pattern(100, i)));
        }
        n.run(3);
        let want: Vec<u8> = [2u8, 0, 1].iter().flat_map(|&i| framed(&pattern(100, i))).collect();
        assert_eq!(n.read(h), want);
    }

    #[test]
    fn a_60k_reply_arrives_whole() {
        let mut n = Net::new(8, 10_000);
        let h = n.established(false, 40000);
        n.sock(h).send_slice(&framed(b"query")).unwrap();
        n.run(3);
        let (id, _) = n.msgs.pop().unwrap();
        let big = pattern(60_000, 9);
        assert!(n.gw.reply(id, &big));
        let mut got = Vec::new();
        for _ in 0..200 {
            n.run(1);
            got.extend(n.read(h));
        }
        assert_eq!(got.len(), big.len() + 2);
        assert_eq!(got, framed(&big));
        // The largest message fits; one more byte cannot be framed.
        assert!(n.gw.reply(id, &vec![0; MAX_MSG]));
        assert!(!n.gw.reply(id, &vec![0; MAX_MSG + 1]));
    }

    #[test]
    fn a_large_query_is_assembled_across_windows() {
        let mut n = Net::new(8, 10_000);
        let h = n.established(false, 40000);
        let q = pattern(MAX_MSG, 3);
        let f = framed(&q);
        let mut at = 0;
        for _ in 0..500 {
            if at < f.len() {
                at += n.sock(h).send_slice(&f[at..]).unwrap();
            }
            n.run(1);
        }
        assert_eq!(at, f.len());
        assert_eq!(n.msgs.len(), 1);
        assert_eq!(n.msgs[0].1, q);
    }

    #[test]
    fn over_max_conns_a_syn_is_refused_and_the_others_carry_on() {
        let mut n = Net::new(2, 10_000);
        // All three SYNs leave in the same batch.
        let hs: Vec<_> = (0..3).map(|i| n.connect(false, 40000 + i)).collect();
        n.run(5);
        assert_eq!(n.sock(hs[0]).state(), tcp::State::Established);
        assert_eq!(n.sock(hs[1]).state(), tcp::State::Established);
        assert_eq!(n.sock(hs[2]).state(), tcp::State::Closed);
        let c = n.gw.counters();
        assert_eq!((c.accepted, c.refused), (2, 1));
        assert_eq!(n.gw.connections(), 2);
        for (i, &h) in hs[..2].iter().enumerate() {
            n.sock(h).send_slice(&framed(&[i as u8; 40])).unwrap();
        }
        n.run(3);
        assert_eq!(n.msgs.len(), 2);
        for (id, m) in std::mem::take(&mut n.msgs) {
            assert!(n.gw.reply(id, &m));
        }
        n.run(3);
        for (i, &h) in hs[..2].iter().enumerate() {
            assert_eq!(n.read(h), framed(&[i as u8; 40]));
        }
        // Once one closes, there is room again.
        n.sock(hs[0]).close();
        n.run(20);
        assert_eq!(n.gw.connections(), 1);
        let h = n.established(false, 40010);
        n.sock(h).send_slice(&framed(b"again")).unwrap();
        n.run(3);
        assert_eq!(n.msgs.len(), 1);
        assert_eq!(n.gw.counters().accepted, 3);
    }

    #[test]
    fn a_retransmitted_syn_opens_nothing() {
        let mut n = Net::new(8, 10_000);
        let h = n.connect(false, 40000);
        let mut out = VecDeque::new();
        let _ = n.client.poll(instant(n.now), &mut Link { rx: None, tx: &mut out }, &mut n.sockets);
        let mut syn = out.pop_front().unwrap();
        write_eth(&mut syn, GW_MAC, CLIENT_MAC, ETHERTYPE_IPV4);
        // Twice before the SYN-ACK, and once more when established.
        n.gw.input(&syn, CLIENT_PORT, n.now);
        n.gw.input(&syn, CLIENT_PORT, n.now);
        n.run(5);
        assert_eq!(n.sock(h).state(), tcp::State::Established);
        n.gw.input(&syn, CLIENT_PORT, n.now);
        n.run(5);
        assert_eq!(n.sock(h).state(), tcp::State::Established);
        assert_eq!((n.gw.counters().accepted, n.gw.connections()), (1, 1));
        n.sock(h).send_slice(&framed(b"q")).unwrap();
        n.run(3);
        assert_eq!(n.msgs.len(), 1);
    }

    #[test]
    fn segments_for_a_connection_from_elsewhere_are_dropped() {
        let mut n = Net::new(8, 10_000);
        let h = n.established(false, 40000);
        n.sock(h).send_slice(&framed(b"q")).unwrap();
        n.run(20);
        let data = n.sent.iter().rev().find(|f| f.len() > ETH_HDR_LEN + 40).unwrap().clone();
        let before = n.gw.counters();
        // Another port, then another MAC: a container replaying (or forging) the client's segment.
        n.gw.input(&data, CLIENT_PORT + 1, n.now);
        let mut other = data.clone();
        other[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        n.gw.input(&other, CLIENT_PORT, n.now);
        let mut sent = 0;
        n.gw.poll(n.now, &mut |_, _| panic!("no message"), &mut |_, _| sent += 1);
        assert_eq!(sent, 0);
        assert_eq!(n.gw.counters().malformed, before.malformed + 2);
        n.run(3);
        assert_eq!(n.msgs.len(), 1);
        assert_eq!(n.sock(h).state(), tcp::State::Established);
    }

    #[test]
    fn idle_connections_are_closed() {
        let mut n = Net::new(8, 500);
        let h = n.established(false, 40000);
        let next = n.gw.next_poll_ms(n.now).unwrap();
        assert!(next >= n.now && next <= n.now + 500, "{next} {}", n.now);
        n.run(400);
        assert_eq!(n.sock(h).state(), tcp::State::Established);
        // Activity restarts the clock.
        n.sock(h).send_slice(&framed(b"q")).unwrap();
        n.run(400);
        assert_eq!(n.sock(h).state(), tcp::State::Established);
        assert_eq!(n.gw.counters().idle_closed, 0);
        n.run(200);
        assert_eq!(n.sock(h).state(), tcp::State::CloseWait);
        assert_eq!(n.gw.counters().idle_closed, 1);
        // Its query will not be answered any more.
        let (id, _) = n.msgs.pop().unwrap();
        assert!(!n.gw.reply(id, b"late"));
        n.sock(h).close();
        n.run(TIME_WAIT_MS + 10);
        assert_eq!(n.gw.connections(), 0);
        assert_eq!(n.gw.next_poll_ms(n.now), None);
    }

    #[test]
    fn a_client_that_never_closes_is_reset_after_another_idle_period() {
        let mut n = Net::new(8, 500);
        let h = n.established(false, 40000);
        n.run(510);
        assert_eq!(n.sock(h).state(), tcp::State::CloseWait);
        n.run(510);
        assert_eq!(n.gw.connections(), 0);
        assert_eq!(n.sock(h).state(), tcp::State::Closed);
        assert_eq!(n.gw.counters().idle_closed, 1);
    }

    #[test]
    fn a_half_closed_client_still_gets_its_replies() {
        let mut n = Net::new(8, 10_000);
        let h = n.established(false, 40000);
        let mut q = framed(b"first");
        q.extend(framed(b"second"));
        n.sock(h).send_slice(&q).unwrap();
        n.sock(h).close();
        n.run(20);
        assert_eq!(n.msgs.len(), 2);
        assert_eq!(n.sock(h).state(), tcp::State::FinWait2);
        let (a, b) = (n.msgs[0].0, n.msgs[1].0);
        assert!(n.gw.reply(b, b"answer 2"));
        n.run(20);
        // One answer is still owed: no FIN yet.
        assert_eq!(n.sock(h).state(), tcp::State::FinWait2);
        assert!(n.gw.reply(a, b"answer 1"));
        n.run(20);
        let mut want = framed(b"answer 2");
        want.extend(framed(b"answer 1"));
        assert_eq!(n.read(h), want);
        assert_eq!(n.sock(h).state(), tcp::State::TimeWait);
        assert_eq!(n.gw.connections(), 0);
        assert!(!n.gw.reply(a, b"again"));
    }

    #[test]
    fn an_abandoned_query_lets_a_half_closed_connection_finish() {
        let mut n = Net::new(8, 10_000);
        let h = n.established(false, 40000);
        n.sock(h).send_slice(&framed(b"q")).unwrap();
        n.sock(h).close();
        n.run(20);
        let (id, _) = n.msgs.pop().unwrap();
        assert!(n.gw.abandon(id));
        n.run(20);
        assert_eq!(n.sock(h).state(), tcp::State::TimeWait);
        assert_eq!(n.gw.connections(), 0);
        assert!(!n.gw.abandon(id));
    }

    #[test]
    fn a_zero_length_resets_the_connection() {
        let mut n = Net::new(8, 10_000);
        let h = n.established(false, 40000);
        n.sock(h).send_slice(&[0, 0, 1, 2]).unwrap();
        n.run(5);
        assert_eq!(n.sock(h).state(), tcp::State::Closed);
        assert_eq!(n.gw.counters().malformed, 1);
        assert_eq!(n.gw.connections(), 0);
    }

    #[test]
    fn a_deep_pipeline_is_read_as_it_is_answered() {
        let mut n = Net::new(8, 10_000);
        let h = n.established(false, 40000);
        let all: Vec<u8> = (0..MAX_PIPELINE + 10).flat_map(|i| framed(&(i as u32).to_be_bytes())).collect();
        n.sock(h).send_slice(&all).unwrap();
        n.run(5);
        assert_eq!(n.msgs.len(), MAX_PIPELINE);
        let id = n.msgs[0].0;
        for _ in 0..10 {
            assert!(n.gw.reply(id, b"a"));
        }
        n.run(5);
        assert_eq!(n.msgs.len(), MAX_PIPELINE + 10);
        for (i, (_, m)) in n.msgs.iter().enumerate() {
            assert_eq!(*m, (i as u32).to_be_bytes());
        }
    }

    #[test]
    fn replies_to_unknown_or_closed_connections_are_refused() {
        let mut n = Net::new(8, 10_000);
        assert!(!n.gw.reply(1, b"x"));
        assert!(!n.gw.reply(12345, b"x"));
        assert!(n.gw.peer(1).is_none());
        let h = n.established(false, 40000);
        n.sock(h).send_slice(&framed(b"q")).unwrap();
        n.run(3);
        let (id, _) = n.msgs.pop().unwrap();
        n.sock(h).abort();
        n.run(3);
        assert_eq!(n.gw.connections(), 0);
        assert!(!n.gw.reply(id, b"x"));
        // Ids are not reused.
        let h = n.established(false, 40000);
        n.sock(h).send_slice(&framed(b"q")).unwrap();
        n.run(3);
        assert_ne!(n.msgs.pop().unwrap().0, id);
    }

    #[test]
    fn wants_only_tcp_to_our_addresses_and_port() {
        let mut n = Net::new(8, 10_000);
        n.established(false, 40000);
        n.established(true, 40001);
        let (syn4, syn6) = (n.sent[0].clone(), n.sent.iter().find(|f| f[ETH_HDR_LEN] >> 4 == 6).unwrap().clone());
        assert!(n.gw.wants(&syn4) && n.gw.wants(&syn6));
        let other_port = TcpGateway::new(GW_MAC, &[Some(GW4)], &[Some(GW6)], 853, 8, 1000);
        assert!(!other_port.wants(&syn4) && !other_port.wants(&syn6));
        let other_addr = TcpGateway::new(GW_MAC, &[Some(CLIENT4)], &[Some(CLIENT6)], DNS, 8, 1000);
        assert!(!other_addr.wants(&syn4) && !other_addr.wants(&syn6));
        let none = TcpGateway::new(GW_MAC, &[], &[], DNS, 8, 1000);
        assert!(!none.wants(&syn4) && !none.wants(&syn6));
        let mut udp = syn4.clone();
        udp[ETH_HDR_LEN + 9] = 17;
        assert!(!n.gw.wants(&udp));
        let mut arp = syn4.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert!(!n.gw.wants(&arp));
        // Cut before the port: still claimed, and counted.
        assert!(n.gw.wants(&syn4[..ETH_HDR_LEN + 21]));
    }

    /// A session's worth of real frames from the client, both address families.
    fn corpus() -> Vec<Vec<u8>> {
        let mut n = Net::new(8, 10_000);
        for (i, v6) in [false, true].into_iter().enumerate() {
            let h = n.established(v6, 40000 + i as u16);
            n.sock(h).send_slice(&framed(&pattern(700, 1))).unwrap();
            n.run(3);
            let (id, _) = n.msgs.pop().unwrap();
            n.gw.reply(id, b"answer");
            n.sock(h).close();
            n.run(20);
        }
        n.sent
    }

    #[test]
    fn truncated_and_corrupted_frames_are_counted_malformed() {
        let corpus = corpus();
        let mut gw = TcpGateway::new(GW_MAC, &[Some(GW4)], &[Some(GW6)], DNS, 8, 10_000);
        let mut expect = 0;
        for f in &corpus {
            for len in 0..f.len() {
                if gw.wants(&f[..len]) {
                    gw.input(&f[..len], CLIENT_PORT, 0);
                    expect += 1;
                }
            }
            let ip = ETH_HDR_LEN;
            let tcp = if f[ip] >> 4 == 4 { ip + 20 } else { ip + 40 };
            // The IPv4 TTL (header checksum), the TCP sequence number, the last payload byte.
            let spots: &[usize] = if f[ip] >> 4 == 4 { &[ip + 8, tcp + 4, f.len() - 1] } else { &[tcp + 4, f.len() - 1] };
            for &at in spots {
                let mut m = f.clone();
                m[at] ^= 0x40;
                assert!(gw.wants(&m));
                gw.input(&m, CLIENT_PORT, 0);
                expect += 1;
            }
            // Not sent to the gateway's MAC.
            let mut m = f.clone();
            m[0..6].copy_from_slice(&[0xff; 6]);
            gw.input(&m, CLIENT_PORT, 0);
            expect += 1;
        }
        assert_eq!(gw.counters().malformed, expect);
        assert_eq!(gw.connections(), 0);
        let mut sent = 0;
        gw.poll(1, &mut |_, _| panic!("no message"), &mut |_, _| sent += 1);
        assert_eq!(sent, 0);
    }

    #[test]
    fn random_frames_never_panic() {
        let corpus = corpus();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // A live connection, for the mutated segments to land on.
        let mut n = Net::new(8, 10_000);
        let h = n.established(false, 40000);
        let before = n.gw.counters().malformed;
        let mut fed = 0;
        for i in 0..20_000u64 {
            let mut f = corpus[rng.below(corpus.len())].clone();
            match rng.below(4) {
                0 => {
                    for _ in 0..1 + rng.below(4) {
                        let at = rng.below(f.len());
                        f[at] = rng.next() as u8;
                    }
                }
                1 => f.truncate(rng.below(f.len())),
                2 => f.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
                _ => {
                    let len = rng.below(120);
                    f = (0..len).map(|_| rng.next() as u8).collect();
                    if len > 14 && rng.below(2) == 0 {
                        f[..14].copy_from_slice(&corpus[0][..14]);
                    }
                }
            }
            // Whether claimed or not: input() must cope with anything.
            if n.gw.wants(&f) {
                fed += 1;
            }
            n.gw.input(&f, CLIENT_PORT, n.now + i / 100);
            n.gw.poll(n.now + i / 100, &mut |_, _| {}, &mut |_, _| {});
        }
        assert!(fed > 1000, "{fed}");
        assert!(n.gw.counters().malformed > before + 10_000, "{:?}", n.gw.counters());
        // The gateway still works.
        n.now += 200;
        n.sockets.remove(h);
        n.to_client.clear();
        let h = n.established(false, 41000);
        n.sock(h).send_slice(&framed(b"still here")).unwrap();
        n.run(3);
        assert_eq!(n.msgs.last().unwrap().1, b"still here");
    }

    #[test]
    fn a_clock_that_jumps_about_is_survived() {
        let mut n = Net::new(8, 500);
        let h = n.established(false, 40000);
        n.sock(h).send_slice(&framed(b"q")).unwrap();
        n.step();
        for t in [0, u64::MAX, 5, u64::MAX / 2, 1 << 50, (1 << 50) + 1] {
            n.gw.poll(t, &mut |_, _| {}, &mut |_, _| {});
            assert!(n.gw.next_poll_ms(t).is_none_or(|at| at >= t.min(MAX_CLOCK_MS)));
        }
        // The leap far ahead expired the connection; going back did not revive it.
        assert_eq!(n.gw.counters().idle_closed, 1);
        let (id, _) = n.msgs.pop().unwrap();
        assert!(!n.gw.reply(id, b"a"));
    }

    #[test]
    fn it_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<TcpGateway>();
    }
}
