//! The slirp engine: containers reach the host and the world through ordinary host sockets, unprivileged (TCP, UDP, ICMP echo).
//!
//! The router hands the uplink every IP frame whose destination no route covers (and TCP and
//! UDP to the gateway's own address), as `[virtio_net_hdr][Ethernet]`, GSO super-frames
//! included. The engine, on a thread of its own, terminates those flows and carries them on
//! host sockets:
//! - TCP: a userspace TCP endpoint per connection (smoltcp) facing the container, a
//!   non-blocking host connection behind it; the container's SYN is answered only once the
//!   host accepted (see the `tcp` module for large segments, backpressure, closing and timers).
//! - UDP: a connected host socket per (container address and port, destination); replies are
//!   built as frames from the destination, fragmented when over the network's MTU.
//! - ICMP echo: a ping socket per (container, destination, echo identifier).
//!
//! Destinations: the network's gateway address means the host itself (127.0.0.1 or ::1), and
//! only with `host_loopback` (new flows to it are refused otherwise, TCP with a RST); a host
//! alias means the address it maps to ([`EngineNet::host_alias4`]); anything else goes where it
//! was addressed. The container's side of a flow always keeps the address it sent to. A network's outbound addresses (slirp4netns'
//! `--outbound-addr`) are the local addresses its own flows' host sockets are bound to, so that
//! the world sees them come from there; see [`EngineNet::outbound4`].
//!
//! Published ports ([`Engine::publish`], the `publish` module) work the other way: host sockets
//! whose clients' connections and datagrams the engine carries to a container; TCP clients on
//! the host's loopback may be spliced into the container's namespace instead (the `splice`
//! module). A frame from a
//! container is looked up among its own flows and as the answer of a published port's flow
//! before it is taken for a new flow of its own.
//!
//! Every flow is an entry of the network's [`Conntrack`] table, whose timeouts close idle ones
//! and whose rows `vswitchctl conntrack ls` shows; new flows past [`EngineLimits::max_flows`]
//! in all, or [`EngineLimits::per_source`] for one container address, are refused (a RST for
//! TCP) and counted, and existing ones carry on. Every frame dropped is counted with its reason.
//!
//! The thread blocks only in `epoll_wait`: host sockets are non-blocking, frames to containers
//! go through [`FrameIo::transmit`] and [`FrameIo::transmit_to`], which never wait. Other threads talk to it through a
//! channel and an eventfd ([`Engine::set_networks`], [`Engine::forget`], [`Engine::flows`],
//! [`Engine::flush`], [`Engine::publish`], [`Engine::unpublish`]).

mod frame;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod icmp;
mod publish;
mod relay;
mod splice;
mod sys;
mod tcp;
#[cfg(test)]
mod tests;
mod udp;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use arc_swap::ArcSwap;
use socket2::{SockAddr, Socket};
use vswitch_switch::sys::EventFd;
use vswitch_switch::{Mac, Uplink};

pub use publish::{PortForward, PublishError};
pub use relay::{Relay, RelaySock};
pub use splice::{NsSockets, Splice, SpliceTo};
pub use vswitch_switch::{NetId, PortId};

use crate::{Conntrack, CtRow, Dir, FlowId, FlowKey, Proto, TcpFlags, Timeouts};
use frame::{Dest, Packet, Reject, Via, FRONT, GSO_UDP_L4, MAX_IP, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use icmp::IcmpFlow;
use publish::Listener;
use sys::{Event, Poller};
use tcp::{Connect, Ctx, Refuser, SentLog, TcpConn, TcpParams};
use udp::UdpFlow;

/// A network the engine serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineNet {
    /// The gateway's MAC: the source of every frame sent to the network's containers.
    pub mac: Mac,
    /// The gateway's addresses: traffic to them goes to the host's loopback (with `host_loopback`),
    /// and published ports' clients the container could not answer appear to come from them.
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    /// Whether the gateway's address stands for the host's loopback; off, traffic to it is dropped.
    pub host_loopback: bool,
    /// The largest IP packet the network's containers take: replies are cut to it (TCP segments
    /// by the container's kernel, through GSO; UDP and ICMP replies as IP fragments).
    pub mtu: u32,
    /// The local addresses the network's own flows leave from, by family (slirp4netns'
    /// `--outbound-addr` and `--outbound-addr6`; None: whatever the kernel's routes pick). A flow
    /// whose host socket cannot be bound there (an address the host does not have) is refused as
    /// if its connect had failed. Published ports' flows leave from their own socket, and flows to
    /// the host's loopback keep the kernel's choice unless the address is a loopback one (see
    /// `outbound_source`).
    pub outbound4: Option<Ipv4Addr>,
    pub outbound6: Option<Ipv6Addr>,
    /// (alias, target): new flows to the alias go to the target instead (pasta's
    /// `--map-guest-addr`: the alias stands for the host, the target is the host's own address),
    /// with or without `host_loopback`. The container's side of the flow keeps the alias, so its
    /// replies come from there.
    pub host_alias4: Option<(Ipv4Addr, Ipv4Addr)>,
    pub host_alias6: Option<(Ipv6Addr, Ipv6Addr)>,
}

/// Where frames come from and where they go: [`Uplink`] in the daemon, an in-memory double in
/// tests. Used from the engine's thread only.
pub trait FrameIo: Send + 'static {
    /// Readable (level-triggered) while frames wait.
    fn wake_fd(&self) -> RawFd;
    /// Called before [`pop`](Self::pop)ping, when [`wake_fd`](Self::wake_fd) was readable.
    fn drain_wake(&self);
    /// Hands the next frame, `[virtio_net_hdr][Ethernet frame]` from `port` of network `net`, to
    /// `f`; false when none waits.
    fn pop(&self, f: &mut dyn FnMut(NetId, PortId, &[u8])) -> bool;
    /// Writes `wire` (`[virtio_net_hdr][Ethernet frame]`) into `port` without waiting; false if
    /// it could not (the port is gone).
    fn transmit(&self, port: PortId, wire: &[u8]) -> bool;
    /// Writes `wire` to the port of network `net` where `mac` was learned (every port of the
    /// network when it was not), without waiting; false if it went nowhere. Published ports
    /// reach containers that have sent nothing yet this way.
    fn transmit_to(&self, net: NetId, mac: Mac, wire: &[u8]) -> bool;
}

impl FrameIo for Uplink {
    fn wake_fd(&self) -> RawFd {
        Uplink::wake_fd(self)
    }

    fn drain_wake(&self) {
        Uplink::drain_wake(self)
    }

    fn pop(&self, f: &mut dyn FnMut(NetId, PortId, &[u8])) -> bool {
        let Some(frame) = Uplink::pop(self) else { return false };
        f(frame.net, frame.port, frame.buf.wire());
        self.recycle(frame.buf);
        true
    }

    fn transmit(&self, port: PortId, wire: &[u8]) -> bool {
        Uplink::transmit(self, port, wire)
    }

    fn transmit_to(&self, net: NetId, mac: Mac, wire: &[u8]) -> bool {
        Uplink::transmit_to(self, net, mac, wire)
    }
}

/// Limits and timeouts of an [`Engine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    /// Flows open at once, all networks together (default 65536); new ones beyond are refused.
    pub max_flows: usize,
    /// Flows open at once from or to one container address, its own flows and its published
    /// ports' together (default 16384: connections in their last second of TIME-WAIT count
    /// too, and a busy published port closes thousands a second).
    pub per_source: usize,
    /// When idle flows are closed (connection tracking's; UDP: 30 s unreplied, 120 s replied).
    pub timeouts: Timeouts,
    /// Bytes each TCP connection buffers toward the container (default 4 MiB): the most in
    /// flight to it, what bulk transfers to containers need. Memory is taken as data reaches into
    /// it, not up front (see the `tcp` module), and given back when the connection is over (in
    /// TIME-WAIT too); the engine keeps 16 closed short connections' sockets for the next ones.
    pub tcp_buffer: usize,
    /// Bytes each TCP connection buffers from the container (default 256 KiB): the window
    /// announced to it (scaled). Small, because the container decides how far into it it
    /// writes (out of order, ahead of what the host took), and 256 KiB carries what the host's
    /// loopback takes.
    pub tcp_window: usize,
    /// A connection whose container acknowledges nothing for this long is reset (default 120 s).
    pub tcp_timeout_ms: u64,
}

impl Default for EngineLimits {
    fn default() -> Self {
        Self {
            max_flows: 65_536,
            per_source: 16_384,
            timeouts: Timeouts::default(),
            tcp_buffer: 4 << 20,
            tcp_window: 256 << 10,
            tcp_timeout_ms: 120_000,
        }
    }
}

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident, )*) => {
        /// What the engine did and dropped since it started (a snapshot; `*_open` are gauges).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct EngineCounters {
            $( $(#[$doc])* pub $name: u64, )*
        }

        /// The engine thread's counters: written by it alone, read by anyone.
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $( $name: AtomicU64, )*
        }

        impl Counters {
            fn snapshot(&self) -> EngineCounters {
                EngineCounters { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }
    };
}

counters! {
    /// Frames taken from the uplink.
    frames_in,
    /// Frames sent to containers.
    frames_out,
    /// TCP connections established with the host and answered to the container.
    tcp_opened,
    /// TCP connections closed gracefully, both ways.
    tcp_closed,
    /// SYNs answered with a RST because the host refused the connection.
    tcp_refused,
    /// SYNs answered with a RST because the host connection failed otherwise (unreachable, no route, ...).
    tcp_connect_failed,
    /// SYNs dropped because the host connection timed out.
    tcp_connect_timeout,
    /// Connections the container reset (or stopped answering): reset toward the host too.
    tcp_reset_by_container,
    /// Connections the host reset (or failed): reset toward the container too.
    tcp_reset_by_host,
    /// Segments of no known connection, answered with a RST.
    tcp_stray,
    /// UDP flows opened.
    udp_flows,
    /// ICMP echo flows opened.
    icmp_flows,
    /// Flows closed by their idle timeout.
    flows_expired,
    /// Payload bytes written to host sockets.
    bytes_to_host,
    /// Payload bytes read from host sockets.
    bytes_from_host,
    /// ICMP errors the host reported for UDP flows (port, host or network unreachable: passed
    /// on to the container as ICMP destination unreachable).
    udp_unreachable,
    /// Open TCP connections (gauge).
    tcp_open,
    /// Open UDP flows (gauge).
    udp_open,
    /// Open ICMP echo flows (gauge).
    icmp_open,
    /// Dropped: truncated or inconsistent frames, bad addresses.
    drop_malformed,
    /// Dropped: a bad IPv4 header or transport checksum.
    drop_checksum,
    /// Dropped: not IPv4/IPv6, not TCP/UDP/ICMP echo, IP fragments, IPv6 extension headers.
    drop_unsupported,
    /// Dropped: from a network the engine has no configuration for.
    drop_no_network,
    /// Dropped: to the gateway without `host_loopback`, or to an address no host socket may reach (loopback, multicast).
    drop_denied,
    /// Dropped: a flow's packet from another MAC or port than the one that opened it.
    drop_spoofed,
    /// Refused: the flow limit (total or per source) was reached.
    drop_flow_table_full,
    /// Refused: `net.ipv4.ping_group_range` forbids ping sockets to this user.
    drop_ping_not_permitted,
    /// Refused: a UDP or ICMP host socket could not be made, bound to the network's outbound
    /// address or connected (out of descriptors, an address the host lacks, ...).
    drop_host_socket_failed,
    /// Dropped: a host socket did not take a datagram (its buffer full, an error).
    drop_host_send_failed,
    /// Dropped: a reply too large to be framed.
    too_big,
    /// Frames to containers that could not be written (the port gone).
    tx_failed,
    /// Published ports' TCP connections the container took (answered the SYN).
    pub_tcp_opened,
    /// Published ports' TCP connections the container refused (a RST) or never answered: the client was reset.
    pub_tcp_refused,
    /// Published ports' UDP flows (client addresses) opened.
    pub_udp_flows,
    /// Payload bytes from published ports' clients to containers.
    pub_bytes_in,
    /// Payload bytes from containers to published ports' clients.
    pub_bytes_out,
    /// Published ports' connections (reset) and datagrams dropped: the network not served, no
    /// gateway address to stand for the client, the flow limits (also in `drop_flow_table_full`),
    /// a socket error, or a datagram the client's socket did not take.
    pub_dropped,
    /// Published ports (gauge).
    pub_ports,
    /// Connections TCP relays took (spliced from a namespace to the host; their bytes, and UDP
    /// relays', are in `bytes_to_host` and `bytes_from_host`, UDP relays' flows in `udp_flows`).
    relayed,
    /// Published ports' TCP connections from the host's loopback spliced into the container's
    /// namespace (also in `pub_tcp_opened` once connected, or `pub_tcp_refused`).
    pub_spliced,
    /// Loopback clients of a spliced published port that took the framed path: no socket could
    /// be made in the namespace (or, rarely, their flow's key was taken).
    pub_splice_fallback,
    /// Spliced connections' sockets given up for another because the port picked for them was
    /// held for the service they connect to (pasta's personality's own ports: EADDRNOTAVAIL).
    pub_splice_port_busy,
    /// Open spliced connections (gauge; not in `tcp_open`).
    splice_open,
}

/// The congestion control of host TCP sockets whose peer is on this host (spliced connections,
/// connections to the host's loopback). There is no queue to pace for there, and a pacing
/// congestion control (BBR, the default of some systems, this VM's among them) holds a loopback
/// connection to a third of what a loss-based one moves: 19 against 60 Gbit/s with iperf3 on the
/// VM's loopback, 12 against 16-18 through a splicing forwarder. Reno is the one any user may
/// set (net.ipv4.tcp_allowed_congestion_control), and as fast there as CUBIC.
const LOCAL_CONGESTION: &[u8] = b"reno";

/// Gives `sock`, a TCP socket whose peer is on this host, [`LOCAL_CONGESTION`]; where that is
/// refused, the system's default stays.
fn local_congestion(sock: &socket2::Socket) {
    let _ = sock.set_tcp_congestion(LOCAL_CONGESTION);
}

/// Adds to a counter. The engine's thread is the only writer, so a load and a store will do
/// (no locked instruction on the packet path).
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// Moves a gauge by one (the engine's thread is its only writer).
fn gauge(c: &AtomicU64, delta: i64) {
    c.store(c.load(Ordering::Relaxed).saturating_add_signed(delta), Ordering::Relaxed);
}

/// One flow, for `vswitchctl conntrack ls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRow {
    pub net: NetId,
    /// As connection tracking has it: orig is the direction of whoever opened the flow. For the
    /// container's own flows that is the container (its address and port, the destination it
    /// addressed); for a published port's, the client (as the container sees it: its own address,
    /// or the gateway's) and the container's address and port.
    pub row: CtRow,
}

impl fmt::Display for FlowRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "net {} {}", self.net, self.row)
    }
}

enum Request {
    Networks,
    Forget(Option<NetId>, Vec<IpAddr>),
    Flush,
    Flows(mpsc::SyncSender<Vec<FlowRow>>),
    Publish(Box<Listener>),
    /// Acknowledged once the socket is closed.
    Unpublish(u64, mpsc::SyncSender<()>),
    Relay(Box<relay::Relay>),
    Unrelay(u64),
}

struct Shared {
    nets: ArcSwap<HashMap<NetId, EngineNet>>,
    /// Published ports and the addresses they are bound to, as the callers of `publish` see them.
    published: Mutex<HashMap<u64, (PortForward, SocketAddr)>>,
    counters: Counters,
    /// Wakes the engine for a request or to stop.
    ctl: EventFd,
    stop: AtomicBool,
}

/// The slirp engine: a thread carrying containers' flows on host sockets (see the module
/// documentation). Dropping it stops the thread and closes every flow.
pub struct Engine {
    shared: Arc<Shared>,
    requests: mpsc::Sender<Request>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine").field("running", &self.running()).finish_non_exhaustive()
    }
}

const WAKE_TOKEN: u64 = 0;
const CTL_TOKEN: u64 = 1;
const FIRST_FLOW_TOKEN: u64 = 2;
/// Frames taken from the uplink in one round, before sockets and timers get a turn.
const FRAME_BUDGET: usize = 256;
/// Datagrams read from one host socket in one round.
const DGRAM_BUDGET: usize = 64;
/// At most one warning about ping sockets per this many milliseconds.
const PING_WARN_MS: u64 = 60_000;

impl Engine {
    /// Starts the engine's thread on `io`, serving no network until [`set_networks`](Self::set_networks).
    pub fn start(io: impl FrameIo, limits: EngineLimits) -> io::Result<Engine> {
        sys::map_large_allocations();
        let poller = Poller::new(256)?;
        let ctl = EventFd::new()?;
        poller.add_level(io.wake_fd(), WAKE_TOKEN)?;
        poller.add_level(ctl.raw(), CTL_TOKEN)?;
        let shared = Arc::new(Shared {
            nets: ArcSwap::from_pointee(HashMap::new()),
            published: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            ctl,
            stop: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel();
        let core = Core::new(shared.clone(), rx, poller, limits);
        let thread = std::thread::Builder::new().name("vswitch-slirp".into()).spawn(move || core.run(&io))?;
        Ok(Engine { shared, requests: tx, thread: Some(thread) })
    }

    fn request(&self, r: Request) -> bool {
        let sent = self.requests.send(r).is_ok();
        if sent {
            self.shared.ctl.notify();
        }
        sent
    }

    /// Replaces the networks served, whole; flows of networks no longer there are closed (their
    /// host sockets reset).
    pub fn set_networks(&self, nets: HashMap<NetId, EngineNet>) {
        self.shared.nets.store(Arc::new(nets));
        self.request(Request::Networks);
    }

    /// Closes every flow of these container addresses, in every network (an endpoint
    /// disconnected), their published ports' included: their host sockets are released (TCP
    /// ones reset), nothing is sent to the container. Published ports stay published
    /// ([`unpublish`](Self::unpublish) them).
    pub fn forget(&self, addrs: Vec<IpAddr>) {
        self.request(Request::Forget(None, addrs));
    }

    /// [`forget`](Self::forget) in one network only: where networks reuse addresses (every
    /// slirp4netns sandbox is 10.0.2.100), the endpoint's own network.
    pub fn forget_in(&self, net: NetId, addrs: Vec<IpAddr>) {
        self.request(Request::Forget(Some(net), addrs));
    }

    /// Closes every flow (`conntrack flush`): TCP connections are reset both ways.
    pub fn flush(&self) {
        self.request(Request::Flush);
    }

    pub fn counters(&self) -> EngineCounters {
        self.shared.counters.snapshot()
    }

    /// Whether the engine's thread still runs (it stops only when dropped, or on a bug).
    pub fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Every open flow, for `conntrack ls` (waits for the engine's thread to list them).
    pub fn flows(&self) -> Vec<FlowRow> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.request(Request::Flows(tx));
        rx.recv().unwrap_or_default()
    }

    /// Publishes a port: binds its host socket now, on the caller's thread (non-blocking; TCP
    /// listening with SO_REUSEADDR, as docker-proxy does; IPv6 addresses IPv6 only, so that
    /// `0.0.0.0` and `[::]` are published separately), so that a port taken is reported, with who
    /// holds it, before anything is acknowledged; then hands it to the engine's thread. Returns
    /// the address bound (port 0 picks one). The network need not be served yet: until it is,
    /// its clients are turned away (`pub_dropped`).
    pub fn publish(&self, fwd: PortForward) -> Result<SocketAddr, PublishError> {
        let mut published = self.shared.published.lock().unwrap_or_else(|e| e.into_inner());
        if published.contains_key(&fwd.id) {
            return Err(PublishError::Exists(fwd.id));
        }
        let (sock, bound) = publish::bind(&fwd)?;
        let listener = Listener { fwd: fwd.clone(), sock, token: 0, clients: HashMap::new() };
        if !self.request(Request::Publish(Box::new(listener))) {
            return Err(PublishError::Io(io::Error::other("the slirp engine has stopped")));
        }
        published.insert(fwd.id, (fwd, bound));
        Ok(bound)
    }

    /// Closes a published port's host socket and every flow of it (TCP reset both ways); false
    /// (and nothing done) for an unknown id. Returns once the engine's thread has closed the
    /// socket, so that the port can be published again at once.
    pub fn unpublish(&self, id: u64) -> bool {
        let gone = self.shared.published.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        if gone.is_some() {
            let (tx, rx) = mpsc::sync_channel(1);
            if self.request(Request::Unpublish(id, tx)) {
                let _ = rx.recv();
            }
        }
        gone.is_some()
    }

    /// Starts a relay (pasta's `-T` and `-U`): its socket's connections or datagrams are
    /// carried to its destination, from this process's namespace (see the `relay` module). Relays are gone with the engine, or by
    /// [`unrelay`](Self::unrelay).
    pub fn relay(&self, r: Relay) -> io::Result<()> {
        if self.request(Request::Relay(Box::new(r))) {
            Ok(())
        } else {
            Err(io::Error::other("the slirp engine has stopped"))
        }
    }

    /// Closes a relay's listener and resets its connections (nothing for an unknown id).
    pub fn unrelay(&self, id: u64) {
        self.request(Request::Unrelay(id));
    }

    /// The published ports, with the addresses they are bound to, by id.
    pub fn published(&self) -> Vec<(PortForward, SocketAddr)> {
        let mut v: Vec<_> = self.shared.published.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        v.sort_by_key(|(f, _)| f.id);
        v
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.ctl.notify();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A flow's own data in connection tracking.
#[derive(Debug)]
struct FlowVal {
    /// Its epoll token (never reused), by which readiness and timers find it.
    token: u64,
    kind: Kind,
    /// A published port's flow (None: one the container opened).
    inbound: Option<Inbound>,
}

/// What a published port's flow is, beyond its key.
#[derive(Debug, Clone, Copy)]
struct Inbound {
    /// The published port's id.
    fwd: u64,
    net: NetId,
    container: IpAddr,
    /// The client as the host sees it.
    client: SocketAddr,
}

#[derive(Debug)]
enum Kind {
    Tcp(Box<TcpConn>),
    Udp(UdpFlow),
    Icmp(IcmpFlow),
    /// A published UDP port's client: datagrams go to the container at this destination; its
    /// answers leave through the published socket.
    UdpIn(Dest),
    /// A published port's client on the host's loopback, joined to a socket inside the
    /// container's namespace (see the `splice` module).
    Splice(Box<splice::SpliceConn>),
    /// A UDP relay's client (see the `relay` module).
    UdpRelay(relay::UdpRelayFlow),
}

/// How a flow leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// It is over (or replaced): sockets closed as they are.
    Quiet,
    /// TCP is reset toward the host, and toward the container too if `container`.
    Reset { container: bool },
}

/// The engine thread's state.
struct Core {
    shared: Arc<Shared>,
    requests: mpsc::Receiver<Request>,
    poller: Poller,
    limits: EngineLimits,
    params: TcpParams,
    nets: Arc<HashMap<NetId, EngineNet>>,
    tables: HashMap<NetId, Conntrack<FlowVal>>,
    tokens: HashMap<u64, (NetId, FlowId)>,
    next_token: u64,
    /// (when, token) of TCP connections' timers, one per connection at most (its `deadline`).
    timers: BTreeSet<(u64, u64)>,
    /// Tokens of datagram sockets with more to read than one round took.
    again: Vec<u64>,
    refuser: Option<Refuser>,
    /// Frames to containers are built here (TCP).
    txbuf: Vec<u8>,
    /// Datagrams from the host are read here, with room for headers in front.
    rxbuf: Vec<u8>,
    /// IP fragments are built here.
    fragbuf: Vec<u8>,
    sent: SentLog,
    /// IP lengths of the datagrams one round read from a host socket.
    lens: Vec<usize>,
    removed: Vec<(FlowKey, FlowVal)>,
    start: Instant,
    /// The IP identification of the next datagram built.
    ident: u32,
    ping_warned: Option<u64>,
    more_frames: bool,
    /// Published ports by id, and their ids by epoll token.
    listeners: HashMap<u64, Listener>,
    listener_tokens: HashMap<u64, u64>,
    /// Published ports' flows per container (they are keyed by client, so connection tracking's
    /// per-source count does not see them).
    inbound_per: HashMap<(NetId, IpAddr), usize>,
    /// Where the search for a free source port starts when a client's own is taken.
    probe: u16,
    /// Empty pipes for the next spliced connections.
    pipes: Vec<splice::Pipe>,
    /// Published ports that splice, and relays: while there is none, no pipe is kept.
    splicing: usize,
    /// Relays by epoll token, and their tokens by id.
    relays: HashMap<u64, relay::Relay>,
    relay_tokens: HashMap<u64, u64>,
}

impl Core {
    fn new(shared: Arc<Shared>, requests: mpsc::Receiver<Request>, poller: Poller, limits: EngineLimits) -> Self {
        Core {
            nets: shared.nets.load_full(),
            shared,
            requests,
            poller,
            limits,
            params: TcpParams {
                buffer: limits.tcp_buffer.clamp(4096, 64 << 20),
                window: limits.tcp_window.clamp(4096, 64 << 20),
                timeout_ms: limits.tcp_timeout_ms,
            },
            tables: HashMap::new(),
            tokens: HashMap::new(),
            next_token: FIRST_FLOW_TOKEN,
            timers: BTreeSet::new(),
            again: Vec::new(),
            refuser: None,
            txbuf: Vec::new(),
            rxbuf: vec![0; FRONT + MAX_IP],
            fragbuf: Vec::new(),
            sent: Vec::new(),
            lens: Vec::new(),
            removed: Vec::new(),
            start: Instant::now(),
            ident: std::process::id().wrapping_mul(0x9e37_79b9),
            ping_warned: None,
            more_frames: true,
            listeners: HashMap::new(),
            listener_tokens: HashMap::new(),
            inbound_per: HashMap::new(),
            probe: 0,
            pipes: Vec::new(),
            splicing: 0,
            relays: HashMap::new(),
            relay_tokens: HashMap::new(),
        }
    }

    /// Milliseconds since the engine started (never 0).
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1)
    }

    fn sweep_every(&self) -> u64 {
        let t = &self.limits.timeouts;
        (t.udp_ms.min(t.icmp_ms).min(t.tcp_close_ms) / 4).clamp(10, 1000)
    }

    fn run(mut self, io: &dyn FrameIo) {
        let shared = self.shared.clone();
        let c = &shared.counters;
        let now = self.now();
        self.refuser = Some(Refuser::new(&mut Ctx { io, counters: c, buf: &mut self.txbuf, sent: &mut self.sent, now }));
        self.sent.clear();
        let mut events = Vec::with_capacity(256);
        let mut next_sweep: u64 = 0;
        while !shared.stop.load(Ordering::Acquire) {
            let now = self.now();
            let mut timeout = next_sweep.saturating_sub(now);
            if let Some((t, _)) = self.timers.first() {
                timeout = timeout.min(t.saturating_sub(now));
            }
            if self.more_frames || !self.again.is_empty() {
                timeout = 0;
            }
            events.clear();
            if let Err(e) = self.poller.wait(timeout.min(1000) as i32, &mut events) {
                log::error!("slirp engine: epoll_wait failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
            let now = self.now();
            for ev in &events {
                match ev.token {
                    WAKE_TOKEN => {
                        io.drain_wake();
                        self.more_frames = true;
                    }
                    CTL_TOKEN => {
                        shared.ctl.drain();
                        self.handle_requests(io, c, now);
                    }
                    _ => self.ready(io, c, *ev, now),
                }
            }
            if self.more_frames {
                self.frames(io, c, now);
            }
            for token in std::mem::take(&mut self.again) {
                self.ready(io, c, Event { token, readable: true, ..Event::default() }, now);
            }
            self.run_timers(io, c, now);
            if now >= next_sweep {
                self.sweep(io, c, now);
                next_sweep = now + self.sweep_every();
            }
        }
    }

    fn handle_requests(&mut self, io: &dyn FrameIo, c: &Counters, now: u64) {
        while let Ok(r) = self.requests.try_recv() {
            match r {
                Request::Networks => {
                    self.nets = self.shared.nets.load_full();
                    let gone: Vec<NetId> = self.tables.keys().filter(|n| !self.nets.contains_key(n)).copied().collect();
                    for net in gone {
                        if let Some(mut t) = self.tables.remove(&net) {
                            t.retain(|_, _| false, &mut self.removed);
                        }
                        self.dispose_removed(io, c, Close::Reset { container: false }, now);
                    }
                }
                Request::Forget(only, addrs) => {
                    for (_, t) in self.tables.iter_mut().filter(|(n, _)| only.is_none_or(|o| o == **n)) {
                        // A published port's flow is the container's by its destination.
                        t.retain(|k, f| !addrs.contains(&f.value.inbound.as_ref().map_or(k.src.ip(), |i| i.container)), &mut self.removed);
                    }
                    self.dispose_removed(io, c, Close::Reset { container: false }, now);
                }
                Request::Flush => {
                    for t in self.tables.values_mut() {
                        t.retain(|_, _| false, &mut self.removed);
                    }
                    self.dispose_removed(io, c, Close::Reset { container: true }, now);
                }
                Request::Flows(tx) => {
                    let rows = self.tables.iter().flat_map(|(&net, t)| t.rows(now).map(move |row| FlowRow { net, row })).collect();
                    let _ = tx.send(rows);
                }
                Request::Publish(l) => self.add_listener(*l, c),
                Request::Unpublish(id, done) => {
                    self.remove_listener(io, c, id, now);
                    let _ = done.send(());
                }
                Request::Relay(r) => self.add_relay(*r, c),
                Request::Unrelay(id) => self.remove_relay(io, c, id, now),
            }
        }
    }

    fn frames(&mut self, io: &dyn FrameIo, c: &Counters, now: u64) {
        for _ in 0..FRAME_BUDGET {
            if !io.pop(&mut |net, port, wire| self.frame(io, c, net, port, wire, now)) {
                self.more_frames = false;
                return;
            }
        }
    }

    /// One frame from a container.
    fn frame(&mut self, io: &dyn FrameIo, c: &Counters, net: NetId, port: PortId, wire: &[u8], now: u64) {
        add(&c.frames_in, 1);
        let Some(cfg) = self.nets.get(&net) else { return add(&c.drop_no_network, 1) };
        let pkt = match frame::parse(wire) {
            Ok(p) => p,
            Err(Reject::Malformed) => return add(&c.drop_malformed, 1),
            Err(Reject::Checksum) => return add(&c.drop_checksum, 1),
            Err(Reject::Unsupported) => return add(&c.drop_unsupported, 1),
        };
        if pkt.src_mac.is_multicast() || pkt.src_mac.is_zero() || !unicast(pkt.src) || pkt.src == pkt.dst {
            return add(&c.drop_malformed, 1);
        }
        // None: no new flow may go there (an existing one, a published port's, may well be there).
        let host = host_address(cfg, pkt.dst);
        let dest = Dest { via: Via::Port(port), mac: pkt.src_mac, gw_mac: cfg.mac, mtu: net_mtu(cfg) };
        match pkt.proto {
            PROTO_TCP => self.tcp_frame(io, c, net, &pkt, host, dest, now),
            PROTO_UDP => self.udp_frame(c, net, &pkt, host, dest, now),
            PROTO_ICMP | PROTO_ICMPV6 => match host {
                Some(host) => self.icmp_frame(c, net, &pkt, host, dest, now),
                None => add(&c.drop_denied, 1),
            },
            _ => add(&c.drop_unsupported, 1),
        }
    }

    fn table(&mut self, net: NetId) -> &mut Conntrack<FlowVal> {
        table_of(&mut self.tables, net, &self.limits)
    }

    /// Whether a new flow of container `src` in `net` (from it, or to it through a published
    /// port) fits the limits; counted when not.
    fn admit(&mut self, net: NetId, src: IpAddr, c: &Counters) -> bool {
        let total: usize = self.tables.values().map(|t| t.len()).sum();
        let from_src = self.tables.get(&net).map_or(0, |t| t.count_for(src)) + self.inbound_per.get(&(net, src)).copied().unwrap_or(0);
        if total >= self.limits.max_flows || from_src >= self.limits.per_source {
            add(&c.drop_flow_table_full, 1);
            return false;
        }
        true
    }

    fn token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    /// Answers a TCP segment with a RST (unless it is one).
    fn refuse(&mut self, io: &dyn FrameIo, c: &Counters, ip: &[u8], dest: Dest, now: u64) {
        if let Some(r) = &mut self.refuser {
            r.refuse(ip, dest, &mut Ctx { io, counters: c, buf: &mut self.txbuf, sent: &mut self.sent, now });
        }
        self.sent.clear();
    }

    #[allow(clippy::too_many_arguments)]
    fn tcp_frame(&mut self, io: &dyn FrameIo, c: &Counters, net: NetId, pkt: &Packet<'_>, host: Option<IpAddr>, dest: Dest, now: u64) {
        let l4 = pkt.l4;
        let (sport, dport, flags) = (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]), l4[13]);
        let f = TcpFlags::from_bits(flags);
        let syn = f.contains(TcpFlags::SYN) && !f.contains(TcpFlags::ACK) && !f.contains(TcpFlags::RST);
        let key = FlowKey::new(Proto::Tcp, SocketAddr::new(pkt.src, sport), SocketAddr::new(pkt.dst, dport));
        let table = table_of(&mut self.tables, net, &self.limits);
        // The container's own connection (orig), or its answer on a published port's (reply).
        if let Some((id, dir)) = table.find(&key) {
            let Some(Kind::Tcp(conn)) = table.get_mut(id).map(|f| &mut f.value.kind) else { return };
            // A published port's connection is only ever answered by the container; the other
            // way round, the container would be sending as someone else.
            if !same_origin(conn.dest(), &dest) || conn.inbound() != (dir == Dir::Reply) {
                return add(&c.drop_spoofed, 1);
            }
            if conn.lingering() && (dir == Dir::Reply || !syn) {
                // The rest of TIME-WAIT, no socket to answer with: a RST, as to a connection that is gone.
                add(&c.tcp_stray, 1);
                return self.refuse(io, c, pkt.ip, dest, now);
            }
            if dir == Dir::Reply || !(syn && conn.reusable()) {
                let mut ctx = Ctx { io, counters: c, buf: &mut self.txbuf, sent: &mut self.sent, now };
                let done = conn.on_segment(pkt.ip, pkt.ip.len() - l4.len(), &mut ctx);
                table.on_tcp(id, dir, f, now);
                table.on_packet(id, dir, pkt.ip.len(), now);
                return self.after_tcp(io, c, net, id, done, now);
            }
            // A new connection on the ports of one that is over.
            if let Some((_, v)) = table.remove(id) {
                self.dispose(io, c, v, Close::Quiet, now);
            }
        }
        if !syn {
            add(&c.tcp_stray, 1);
            return self.refuse(io, c, pkt.ip, dest, now);
        }
        let Some(host) = host else {
            add(&c.drop_denied, 1);
            return self.refuse(io, c, pkt.ip, dest, now);
        };
        if !self.admit(net, pkt.src, c) {
            return self.refuse(io, c, pkt.ip, dest, now);
        }
        let token = self.token();
        let tcp_at = pkt.ip.len() - l4.len();
        let local = SocketAddr::new(pkt.dst, dport);
        let from = self.nets.get(&net).and_then(|cfg| outbound_source(cfg, host));
        let (conn, connected) =
            match TcpConn::connect(pkt.ip, tcp_at, local, from, SocketAddr::new(host, dport), dest, self.params, &self.poller, token) {
                Ok(r) => r,
                Err(e) => {
                    connect_failed(c, &e);
                    if e.kind() == io::ErrorKind::TimedOut {
                        return;
                    }
                    return self.refuse(io, c, pkt.ip, dest, now);
                }
            };
        let table = self.table(net);
        let Ok((id, _)) = table.get_or_insert_with(key, now, || FlowVal { token, kind: Kind::Tcp(Box::new(conn)), inbound: None }) else {
            add(&c.drop_flow_table_full, 1);
            return self.refuse(io, c, pkt.ip, dest, now);
        };
        table.on_tcp(id, Dir::Orig, f, now);
        table.on_packet(id, Dir::Orig, pkt.ip.len(), now);
        self.tokens.insert(token, (net, id));
        gauge(&c.tcp_open, 1);
        if connected {
            self.tcp_host(io, c, net, id, Event { token, writable: true, ..Event::default() }, now);
        }
    }

    /// Readiness of a TCP connection's host socket.
    fn tcp_host(&mut self, io: &dyn FrameIo, c: &Counters, net: NetId, id: FlowId, ev: Event, now: u64) {
        let Some(table) = self.tables.get_mut(&net) else { return };
        let Some(Kind::Tcp(conn)) = table.get_mut(id).map(|f| &mut f.value.kind) else { return };
        let mut ctx = Ctx { io, counters: c, buf: &mut self.txbuf, sent: &mut self.sent, now };
        if !conn.connecting() {
            let done = conn.on_host(&ev, &mut ctx);
            return self.after_tcp(io, c, net, id, done, now);
        }
        match conn.poll_connect(&ev, &mut ctx) {
            Connect::Pending => {}
            Connect::Opened => self.after_tcp(io, c, net, id, false, now),
            Connect::Dropped => {
                self.sent.clear();
                if let Some((_, v)) = table.remove(id) {
                    self.dispose(io, c, v, Close::Quiet, now);
                }
            }
            Connect::Failed(e) => {
                connect_failed(c, &e);
                let dest = *conn.dest();
                let syn = conn.syn().map(<[u8]>::to_vec);
                if let Some((_, v)) = table.remove(id) {
                    self.dispose(io, c, v, Close::Quiet, now);
                }
                if let Some(syn) = syn.filter(|_| e.kind() != io::ErrorKind::TimedOut) {
                    self.refuse(io, c, &syn, dest, now);
                }
            }
        }
    }

    /// After a TCP connection ran: tells connection tracking what it sent, and either removes
    /// it (`done`) or schedules its timer.
    fn after_tcp(&mut self, io: &dyn FrameIo, c: &Counters, net: NetId, id: FlowId, done: bool, now: u64) {
        let Some(table) = self.tables.get_mut(&net) else { return };
        // What smoltcp sends is the reply of the container's connection, the orig of a published port's.
        let dir = match table.get(id).map(|f| &f.value.kind) {
            Some(Kind::Tcp(conn)) if conn.inbound() => Dir::Orig,
            _ => Dir::Reply,
        };
        for (flags, len) in self.sent.drain(..) {
            table.on_tcp(id, dir, TcpFlags::from_bits(flags), now);
            table.on_packet(id, dir, len as usize, now);
        }
        if done {
            if let Some((_, v)) = table.remove(id) {
                self.dispose(io, c, v, Close::Quiet, now);
            }
            return;
        }
        let Some(flow) = table.get_mut(id) else { return };
        let token = flow.value.token;
        let Kind::Tcp(conn) = &mut flow.value.kind else { return };
        let next = conn.next_poll(now);
        if next != conn.deadline {
            if let Some(old) = conn.deadline {
                self.timers.remove(&(old, token));
            }
            if let Some(t) = next {
                self.timers.insert((t, token));
            }
            conn.deadline = next;
        }
    }

    fn run_timers(&mut self, io: &dyn FrameIo, c: &Counters, now: u64) {
        while let Some(&(t, token)) = self.timers.first() {
            if t > now {
                return;
            }
            self.timers.pop_first();
            let Some(&(net, id)) = self.tokens.get(&token) else { continue };
            let Some(table) = self.tables.get_mut(&net) else { continue };
            let Some(Kind::Tcp(conn)) = table.get_mut(id).map(|f| &mut f.value.kind) else { continue };
            conn.deadline = None;
            let done = conn.on_timer(&mut Ctx { io, counters: c, buf: &mut self.txbuf, sent: &mut self.sent, now });
            self.after_tcp(io, c, net, id, done, now);
        }
    }

    /// Readiness of a host socket.
    fn ready(&mut self, io: &dyn FrameIo, c: &Counters, ev: Event, now: u64) {
        let Some(&(net, id)) = self.tokens.get(&ev.token) else {
            if let Some(&fwd) = self.listener_tokens.get(&ev.token) {
                self.listener_ready(io, c, fwd, ev, now);
            } else if self.relays.contains_key(&ev.token) {
                self.relay_ready(io, c, ev.token, now);
            }
            return;
        };
        let Some(table) = self.tables.get_mut(&net) else { return };
        let Some(flow) = table.get_mut(id) else { return };
        let mut more = false;
        let mut lens = std::mem::take(&mut self.lens);
        match &flow.value.kind {
            Kind::Tcp(_) => return self.tcp_host(io, c, net, id, ev, now),
            Kind::Splice(_) => return self.splice_ready(io, c, net, id, ev.token, now),
            Kind::UdpRelay(_) => return self.udp_relay_answers(c, net, id, ev.token, now),
            // No socket of its own: the published one's readiness is the listener's.
            Kind::UdpIn(_) => return,
            Kind::Udp(u) => {
                for i in 0..=DGRAM_BUDGET {
                    if i == DGRAM_BUDGET {
                        more = true;
                        break;
                    }
                    self.ident = self.ident.wrapping_add(1);
                    match u.recv_one(&mut self.rxbuf, &mut self.fragbuf, self.ident, io, c) {
                        None => break,
                        Some(0) => {}
                        Some(n) => lens.push(n),
                    }
                }
            }
            Kind::Icmp(p) => {
                for i in 0..=DGRAM_BUDGET {
                    if i == DGRAM_BUDGET {
                        more = true;
                        break;
                    }
                    self.ident = self.ident.wrapping_add(1);
                    match p.recv_one(&mut self.rxbuf, &mut self.fragbuf, self.ident, io, c) {
                        None => break,
                        Some(0) => {}
                        Some(n) => lens.push(n),
                    }
                }
            }
        }
        for n in lens.drain(..) {
            table.on_packet(id, Dir::Reply, n, now);
        }
        self.lens = lens;
        if more {
            self.again.push(ev.token);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn udp_frame(&mut self, c: &Counters, net: NetId, pkt: &Packet<'_>, host: Option<IpAddr>, dest: Dest, now: u64) {
        let l4 = pkt.l4;
        let (sport, dport) = (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]));
        let container = SocketAddr::new(pkt.src, sport);
        let remote = SocketAddr::new(pkt.dst, dport);
        let key = FlowKey::new(Proto::Udp, container, remote);
        let id = match self.table(net).find(&key) {
            Some((id, Dir::Orig)) => id,
            // The container answers a published port's client.
            Some((id, Dir::Reply)) => return self.udp_answer(c, net, id, pkt, &dest, now),
            None => {
                let Some(host) = host else { return add(&c.drop_denied, 1) };
                if !self.admit(net, pkt.src, c) {
                    return;
                }
                let token = self.token();
                let from = self.nets.get(&net).and_then(|cfg| outbound_source(cfg, host));
                let flow = match UdpFlow::open(container, remote, from, SocketAddr::new(host, dport), dest, &self.poller, token) {
                    Ok(f) => f,
                    Err(_) => return add(&c.drop_host_socket_failed, 1),
                };
                let Ok((id, _)) = self.table(net).get_or_insert_with(key, now, || FlowVal { token, kind: Kind::Udp(flow), inbound: None })
                else {
                    return add(&c.drop_flow_table_full, 1);
                };
                self.tokens.insert(token, (net, id));
                gauge(&c.udp_open, 1);
                add(&c.udp_flows, 1);
                id
            }
        };
        let table = self.table(net);
        let Some(Kind::Udp(flow)) = table.get_mut(id).map(|f| &mut f.value.kind) else { return add(&c.drop_spoofed, 1) };
        if !same_origin(&flow.dest, &dest) {
            return add(&c.drop_spoofed, 1);
        }
        for seg in udp_datagrams(pkt) {
            match flow.send(seg) {
                Ok(n) => add(&c.bytes_to_host, n as u64),
                Err(_) => add(&c.drop_host_send_failed, 1),
            }
        }
        table.on_packet(id, Dir::Orig, pkt.ip.len(), now);
    }

    fn icmp_frame(&mut self, c: &Counters, net: NetId, pkt: &Packet<'_>, host: IpAddr, dest: Dest, now: u64) {
        let l4 = pkt.l4;
        // Echo requests only; errors and everything else have no socket to go to.
        if l4[0] != if pkt.src.is_ipv6() { 128 } else { 8 } || l4[1] != 0 {
            return add(&c.drop_unsupported, 1);
        }
        let echo_id = u16::from_be_bytes([l4[4], l4[5]]);
        let key = FlowKey::icmp_echo(pkt.src, pkt.dst, echo_id);
        let id = match self.table(net).id_of(&key) {
            Some(id) => id,
            None => {
                if !self.admit(net, pkt.src, c) {
                    return;
                }
                let token = self.token();
                let from = self.nets.get(&net).and_then(|cfg| outbound_source(cfg, host));
                let flow = match IcmpFlow::open(pkt.src, pkt.dst, from, host, echo_id, dest, &self.poller, token) {
                    Ok(f) => f,
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
                        add(&c.drop_ping_not_permitted, 1);
                        if self.ping_warned.is_none_or(|t| now.saturating_sub(t) >= PING_WARN_MS) {
                            self.ping_warned = Some(now);
                            log::warn!(
                                "slirp: ping sockets are not permitted to this user (net.ipv4.ping_group_range); ICMP echo from containers is dropped"
                            );
                        }
                        return;
                    }
                    Err(_) => return add(&c.drop_host_socket_failed, 1),
                };
                let Ok((id, _)) = self.table(net).get_or_insert_with(key, now, || FlowVal { token, kind: Kind::Icmp(flow), inbound: None })
                else {
                    return add(&c.drop_flow_table_full, 1);
                };
                self.tokens.insert(token, (net, id));
                gauge(&c.icmp_open, 1);
                add(&c.icmp_flows, 1);
                id
            }
        };
        let table = self.table(net);
        let Some(Kind::Icmp(flow)) = table.get_mut(id).map(|f| &mut f.value.kind) else { return };
        if !same_origin(&flow.dest, &dest) {
            return add(&c.drop_spoofed, 1);
        }
        match flow.send(l4) {
            Ok(n) => add(&c.bytes_to_host, n as u64),
            Err(_) => add(&c.drop_host_send_failed, 1),
        }
        table.on_packet(id, Dir::Orig, pkt.ip.len(), now);
    }

    /// Collects idle flows.
    fn sweep(&mut self, io: &dyn FrameIo, c: &Counters, now: u64) {
        for t in self.tables.values_mut() {
            t.expire(now, &mut self.removed);
        }
        add(&c.flows_expired, self.removed.len() as u64);
        self.dispose_removed(io, c, Close::Reset { container: true }, now);
    }

    fn dispose_removed(&mut self, io: &dyn FrameIo, c: &Counters, how: Close, now: u64) {
        let mut removed = std::mem::take(&mut self.removed);
        for (_, v) in removed.drain(..) {
            self.dispose(io, c, v, how, now);
        }
        self.removed = removed;
    }

    /// Releases a flow taken out of its table.
    fn dispose(&mut self, io: &dyn FrameIo, c: &Counters, v: FlowVal, how: Close, now: u64) {
        self.tokens.remove(&v.token);
        if let Some(inb) = v.inbound {
            self.forget_inbound(&inb, v.token);
        }
        match v.kind {
            Kind::Tcp(mut conn) => {
                gauge(&c.tcp_open, -1);
                if let Some(t) = conn.deadline {
                    self.timers.remove(&(t, v.token));
                }
                if let Close::Reset { container } = how {
                    conn.abort(container, &mut Ctx { io, counters: c, buf: &mut self.txbuf, sent: &mut self.sent, now });
                    self.sent.clear();
                }
            }
            Kind::Udp(_) | Kind::UdpIn(_) | Kind::UdpRelay(_) => gauge(&c.udp_open, -1),
            Kind::Icmp(_) => gauge(&c.icmp_open, -1),
            Kind::Splice(conn) => {
                gauge(&c.splice_open, -1);
                self.tokens.remove(&conn.ns_token);
                let spare = if self.splicing > 0 { Some(&mut self.pipes) } else { None };
                conn.close(matches!(how, Close::Reset { .. }), spare);
            }
        }
    }
}

/// The largest IP packet to send a network's containers.
fn net_mtu(cfg: &EngineNet) -> usize {
    (cfg.mtu as usize).clamp(576, MAX_IP)
}

/// The datagrams of a UDP frame from a container: a UDP GSO super-datagram (UDP_L4) is several of
/// gso_size; UFO (UDP) is one.
fn udp_datagrams<'p>(pkt: &Packet<'p>) -> impl Iterator<Item = &'p [u8]> {
    let payload = &pkt.l4[8..];
    let size = if pkt.vnet.gso_type == GSO_UDP_L4 { usize::from(pkt.vnet.gso_size) } else { payload.len().max(1) };
    payload.chunks(size).chain(payload.is_empty().then_some(&payload[..0]))
}

/// Network `net`'s table, made on first use.
fn table_of<'t>(tables: &'t mut HashMap<NetId, Conntrack<FlowVal>>, net: NetId, limits: &EngineLimits) -> &'t mut Conntrack<FlowVal> {
    tables.entry(net).or_insert_with(|| Conntrack::new(limits.max_flows, limits.timeouts))
}

fn connect_failed(c: &Counters, e: &io::Error) {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => add(&c.tcp_refused, 1),
        Some(libc::ETIMEDOUT) => add(&c.tcp_connect_timeout, 1),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => add(&c.drop_host_socket_failed, 1),
        _ => add(&c.tcp_connect_failed, 1),
    }
}

/// A later packet of a flow must come from where its first one did (`flow`), or, for a
/// published port's flow, from the container's MAC (`frame`: where this one came from).
fn same_origin(flow: &Dest, frame: &Dest) -> bool {
    flow.mac == frame.mac && (matches!(flow.via, Via::Mac(_)) || flow.via == frame.via)
}

/// An address a container may send from.
fn unicast(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast() || a.is_loopback() || a.to_ipv4_mapped().is_some()),
    }
}

/// Where the host should send what a container addressed to `dst`: a host alias's target for the
/// alias, the host's loopback for the gateway's address (with `host_loopback`), the address
/// itself otherwise; None when no host socket may go there.
fn host_address(net: &EngineNet, dst: IpAddr) -> Option<IpAddr> {
    let host = match dst {
        IpAddr::V4(a) if net.host_alias4.is_some_and(|(alias, _)| alias == a) => net.host_alias4.map(|(_, to)| IpAddr::V4(to)),
        IpAddr::V6(a) if net.host_alias6.is_some_and(|(alias, _)| alias == a) => net.host_alias6.map(|(_, to)| IpAddr::V6(to)),
        IpAddr::V4(a) if net.v4 == Some(a) => net.host_loopback.then_some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        IpAddr::V6(a) if net.v6 == Some(a) => net.host_loopback.then_some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        a if unicast(a) => Some(a),
        _ => None,
    };
    // Tests feed random frames: whatever they address, no socket may leave the machine. Only an
    // outbound address's flows go further, to have their bind refused (see `bind_source`).
    #[cfg(test)]
    let host = host.filter(|h| h.is_loopback() || outbound_source(net, *h).is_some());
    host
}

/// The local address a flow of network `net` to `host` leaves from: the network's outbound
/// address of that family. Not toward the host's loopback (the gateway's address), which needs
/// none and which an outbound address the host has lost would cut off; a loopback outbound
/// address reaches it, though, and is kept there.
fn outbound_source(net: &EngineNet, host: IpAddr) -> Option<IpAddr> {
    let from = match host {
        IpAddr::V4(_) => net.outbound4.map(IpAddr::V4),
        IpAddr::V6(_) => net.outbound6.map(IpAddr::V6),
    }?;
    (!host.is_loopback() || from.is_loopback()).then_some(from)
}

/// Binds a new flow's host socket to its source address `from` (any port), before it connects
/// to `to`. An address the host does not have fails here (EADDRNOTAVAIL), before anything is sent.
pub(crate) fn bind_source(sock: &Socket, from: Option<IpAddr>, to: IpAddr) -> io::Result<()> {
    if let Some(from) = from {
        sock.bind(&SockAddr::from(SocketAddr::new(from, 0)))?;
    }
    // A test's flow past `host_address`'s loopback-only filter must have failed just above; one
    // that did not (the address local after all) stops the engine rather than leave the machine.
    if cfg!(test) {
        assert!(to.is_loopback(), "a test's flow to {to} would leave the machine");
    }
    Ok(())
}
