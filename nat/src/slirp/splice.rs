//! Spliced published ports: a client on the host's loopback is joined to a socket inside the container's network namespace with splice(2), no TCP stack in between.
//!
//! A published port's connection normally becomes a userspace TCP endpoint facing the
//! container (the `tcp` module), so that the container sees the client's own address; a client
//! on the host's loopback, which the container could not answer, appears as the gateway. When
//! the port was published with a [`Splice`], the engine instead connects a TCP socket made
//! inside the container's namespace for such a client and moves the bytes between the two
//! kernel sockets through a pair of pipes, as pasta does. The bytes never come to user space,
//! and there is no second TCP stack to run: on the 2-CPU VM a loopback client gets 1.5× the
//! framed path's throughput and 1.7× its connection rate (BENCHMARKS.md). A UDP client of such a
//! port gets a socket inside the namespace, connected to the service, for its flow: its
//! datagrams are sent from there and the answers go back through the published socket.
//!
//! What the container's service sees depends on [`SpliceTo`]: with [`SpliceTo::Loopback`]
//! (pasta's `--host-lo-to-ns-lo`) a client on its own loopback, the connection going to the
//! namespace's loopback, services bound there included; with [`SpliceTo::Container`] (vswitchd
//! `--splice-loopback`) a loopback client of the container's address (the kernel reuses loopback
//! connections' TIME-WAIT ports at once; from the container's own address a stream of short
//! connections ran out of ports with the kernel's choice of port); with [`SpliceTo::Public`]
//! (pasta's default) a client at the container's own address, from ports we pick out of the
//! namespace's ephemeral range less its reserved ports ([`OwnPorts`]), which TIME-WAIT does not
//! hold up, stepping over a port held for the same service (see [`from_own_port`]). The first two make a service that trusts
//! its loopback trust the host's local users, which is why they are asked for, not defaults;
//! the third does the same for a service that trusts its own address (PostgreSQL's `samehost`),
//! as pasta's default does. Each
//! spliced connection is a flow of connection
//! tracking like any other (keyed client → container, counted against the limits, closed by
//! `flush`, by the endpoint's disconnect and by unpublishing); its TCP states are the ones the
//! splice can tell (opened, each half closed).
//!
//! When no socket can be made or connected in the namespace (it is gone, out of descriptors,
//! its loopback down) the connection takes the framed path instead, counted in
//! `pub_splice_fallback`; a connection refused inside is refused to the client (a RST).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{SockAddr, Socket};

use super::frame::FRONT;
use super::publish::{turn_away, Listener};
use super::relay::{Back, UdpRelayFlow};
use super::{
    add, connect_failed, gauge, local_congestion, sys, table_of, Close, Core, Counters, FlowVal, FrameIo, Inbound, Kind, NetId, PortForward,
};
use crate::{Dir, FlowId, FlowKey, Proto, TcpFlags};

/// Pipe capacity asked for per direction: 64 KiB pipes (the default) cost 35% of the throughput
/// on loopback against 1 MiB ones (the default pipe-max-size), measured with a splice forwarder
/// and iperf3 on the 2-CPU VM.
const PIPE_SIZE: usize = 1 << 20;
/// Empty pipes kept for the next connections: making and sizing two per connection is four
/// system calls a short connection need not pay. Few: an unprivileged user's pipes share
/// fs.pipe-user-pages-soft (64 MiB by default), past which new pipes get two pages.
const PIPE_POOL: usize = 8;
/// splice calls one readiness event may make before other sockets get a turn.
const BUDGET: usize = 64;

/// A source of TCP sockets inside one network namespace (a container's), for spliced published
/// ports. Shared by every published port of that namespace.
pub struct NsSockets {
    net: OwnedFd,
    user: Option<OwnedFd>,
    /// Sockets made ahead, [TCP IPv4, TCP IPv6, UDP IPv4, UDP IPv6]: one trip into the
    /// namespace makes several.
    pool: Mutex<[Vec<OwnedFd>; 4]>,
    /// The namespace's net.ipv4.ip_local_port_range and ip_local_reserved_ports, opened inside
    /// it ([`OwnPorts`]); None where they could not be (no /proc): Linux's defaults then.
    sysctls: Option<[std::fs::File; 2]>,
    /// What they said when last read, and when.
    ports: Mutex<(Option<Instant>, Arc<OwnPorts>)>,
}

impl fmt::Debug for NsSockets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NsSockets").field("net", &self.net.as_raw_fd()).field("user", &self.user.as_ref().map(AsRawFd::as_raw_fd)).finish()
    }
}

impl NsSockets {
    /// The network namespace at `net` (/proc/PID/ns/net, /run/netns/NAME), entered through the
    /// user namespace at `user` when given (an unprivileged process that owns it). Makes its
    /// first sockets now, so that a namespace that cannot be entered is an error here.
    pub fn open(net: &Path, user: Option<&Path>) -> io::Result<NsSockets> {
        let open =
            |p: &Path| std::fs::File::open(p).map(OwnedFd::from).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())));
        let ports = Mutex::new((None, Arc::new(OwnPorts::default())));
        let ns =
            NsSockets { net: open(net)?, user: user.map(open).transpose()?, pool: Mutex::new(Default::default()), sysctls: None, ports };
        ns.take(false)?;
        // The rest of the first batch goes: a container no loopback client visits keeps one
        // descriptor open here, the namespace's.
        ns.pool.lock().unwrap_or_else(|e| e.into_inner())[0].clear();
        Ok(ns)
    }

    /// Opens the namespace's ephemeral port sysctls, for [`SpliceTo::Public`]'s own ports (now,
    /// while /proc is there: a confined process may lose it). Where they cannot be opened,
    /// Linux's defaults stand in.
    pub fn with_own_ports(mut self) -> NsSockets {
        self.sysctls = sys::ns_open(self.user.as_ref().map(AsRawFd::as_raw_fd), self.net.as_raw_fd(), OwnPorts::SYSCTLS)
            .ok()
            .and_then(|fds| <[OwnedFd; 2]>::try_from(fds).ok())
            .map(|fds| fds.map(std::fs::File::from));
        self
    }

    pub(super) fn make(&self, domain: libc::c_int, ty: libc::c_int, n: usize) -> io::Result<Vec<OwnedFd>> {
        sys::ns_sockets(self.user.as_ref().map(AsRawFd::as_raw_fd), self.net.as_raw_fd(), domain, ty, n)
    }

    /// A non-blocking TCP socket in the namespace, IPv6 or IPv4.
    pub(crate) fn take(&self, v6: bool) -> io::Result<Socket> {
        self.take_of(v6, false)
    }

    /// A non-blocking TCP or (`udp`) UDP socket in the namespace, IPv6 or IPv4.
    pub(crate) fn take_of(&self, v6: bool, udp: bool) -> io::Result<Socket> {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let list = &mut pool[usize::from(v6) + 2 * usize::from(udp)];
        if list.is_empty() {
            let domain = if v6 { libc::AF_INET6 } else { libc::AF_INET };
            list.extend(self.make(domain, if udp { libc::SOCK_DGRAM } else { libc::SOCK_STREAM }, sys::NS_BATCH)?);
        }
        list.pop().map(Socket::from).ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))
    }

    /// A TCP socket in the namespace about to connect to `to` there, bound where `from` says its
    /// connections come from: the container's own address at a port of ours from the namespace's
    /// ephemeral range ([`from_own_port`]) for `Public`, the namespace's loopback otherwise
    /// ([`from_loopback`]).
    pub(super) fn take_bound(&self, to: SocketAddr, from: SpliceTo) -> io::Result<Socket> {
        let s = self.take(to.is_ipv6())?;
        match from {
            SpliceTo::Public => from_own_port(&s, to.ip(), &self.own_ports())?,
            SpliceTo::Loopback | SpliceTo::Container => from_loopback(&s, to)?,
        }
        Ok(s)
    }

    /// The namespace's ephemeral ports, read again when a second has passed: a runtime may set
    /// them (`--sysctl`) after the network is attached, before the container starts.
    fn own_ports(&self) -> Arc<OwnPorts> {
        let mut cached = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if cached.0.is_none_or(|t| now.duration_since(t) >= OwnPorts::REREAD) {
            if let Some([range, reserved]) = &self.sysctls {
                // In one read from the start: the kernel gives the reserved ports' list whole or
                // not at all (nothing at a later offset), and at its longest (every other port
                // reserved) it is about 190 KB.
                let read = |f: &std::fs::File, max: usize| -> String {
                    let mut buf = vec![0u8; max];
                    let n = std::os::unix::fs::FileExt::read_at(f, &mut buf, 0).unwrap_or(0);
                    String::from_utf8_lossy(&buf[..n]).into_owned()
                };
                *cached = (Some(now), Arc::new(OwnPorts::parse(&read(range, 64), &read(reserved, 256 << 10))));
            } else {
                cached.0 = Some(now);
            }
        }
        Arc::clone(&cached.1)
    }
}

/// The ports [`from_own_port`] picks from: the namespace's ephemeral range less its reserved
/// ports, as the kernel's own choice of port would be (a service may count on a reserved port
/// being free when it starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OwnPorts {
    /// First and last port, inclusive.
    pub(super) range: (u16, u16),
    /// Ranges, inclusive, never picked.
    pub(super) reserved: Vec<(u16, u16)>,
}

impl Default for OwnPorts {
    /// Linux's defaults.
    fn default() -> Self {
        OwnPorts { range: (32_768, 60_999), reserved: Vec::new() }
    }
}

impl OwnPorts {
    const SYSCTLS: [&std::ffi::CStr; 2] = [c"/proc/sys/net/ipv4/ip_local_port_range", c"/proc/sys/net/ipv4/ip_local_reserved_ports"];
    const REREAD: Duration = Duration::from_secs(1);

    /// From the two sysctls' text ("32768\t60999", "8080,9000-9010"); what cannot be read
    /// keeps Linux's default.
    pub(super) fn parse(range: &str, reserved: &str) -> OwnPorts {
        let mut own = OwnPorts::default();
        let mut ends = range.split_whitespace().map(str::parse::<u16>);
        if let (Some(Ok(lo)), Some(Ok(hi))) = (ends.next(), ends.next()) {
            if 0 < lo && lo <= hi {
                own.range = (lo, hi);
            }
        }
        let mut ranges: Vec<(u16, u16)> = reserved
            .trim()
            .split(',')
            .filter_map(|r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                Some((a.trim().parse().ok()?, b.trim().parse().ok()?)).filter(|(a, b)| a <= b)
            })
            .collect();
        // Sorted and merged, for a binary search: the namespace's owner writes this list, and a
        // long one must not make each connection a long scan.
        ranges.sort_unstable();
        for r in ranges {
            match own.reserved.last_mut() {
                Some(last) if u32::from(r.0) <= u32::from(last.1) + 1 => last.1 = last.1.max(r.1),
                _ => own.reserved.push(r),
            }
        }
        own
    }

    /// The last port of the reserved range `port` is in, if it is reserved.
    fn reserved_through(&self, port: u16) -> Option<u16> {
        let i = self.reserved.partition_point(|&(a, _)| a <= port).checked_sub(1)?;
        let (_, b) = self.reserved[i];
        (port <= b).then_some(b)
    }
}

/// Where a published port's clients on the host's loopback are spliced to.
#[derive(Debug, Clone)]
pub struct Splice {
    pub ns: Arc<NsSockets>,
    pub to: SpliceTo,
}

impl PartialEq for Splice {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.ns, &other.ns) && self.to == other.to
    }
}

impl Eq for Splice {}

/// The address a spliced connection connects to inside the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpliceTo {
    /// The namespace's loopback of the client's family, at the container port (pasta's
    /// `--host-lo-to-ns-lo`): services bound to 127.0.0.1 inside are reached too.
    Loopback,
    /// The container's address and port, as the framed path reaches it, from the namespace's
    /// loopback (vswitchd's `--splice-loopback`).
    Container,
    /// The container's address and port, from that same address (pasta's default since
    /// 2024_10_30, without `--host-lo-to-ns-lo`): the service sees a client at its own address,
    /// not on its loopback, and a service bound to the loopback only is not reached.
    Public,
}

impl SpliceTo {
    pub(super) fn target(self, client: IpAddr, container: SocketAddr) -> SocketAddr {
        match self {
            SpliceTo::Loopback => SocketAddr::new(loopback(client.is_ipv6()), container.port()),
            SpliceTo::Container | SpliceTo::Public => container,
        }
    }

    /// The address a UDP flow to `to` is sent from inside the namespace: where TCP's come from.
    fn udp_source(self, to: SocketAddr) -> IpAddr {
        match self {
            SpliceTo::Public => to.ip(),
            SpliceTo::Loopback | SpliceTo::Container => loopback(to.is_ipv6()),
        }
    }
}

/// A pipe carrying one direction of a spliced connection.
pub(super) struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    cap: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (r, w, cap) = sys::pipe(PIPE_SIZE)?;
        Ok(Pipe { r, w, cap })
    }
}

/// One direction: what its pipe holds, and how far its closing went.
#[derive(Default)]
struct Half {
    pipe: Option<Pipe>,
    queued: usize,
    /// The source said end of file.
    eof: bool,
    /// The destination was told (shutdown of its write side).
    shut: bool,
}

/// A spliced connection: the client's socket on the host, the connection inside the namespace.
pub(super) struct SpliceConn {
    host: Socket,
    ns: Socket,
    /// The namespace side's epoll token; the host side's is the flow's.
    pub(super) ns_token: u64,
    /// The epoll token of the relay whose connection this is; 0 for a published port's.
    pub(super) relay: u64,
    connected: bool,
    /// [client → container, container → client].
    halves: [Half; 2],
}

impl fmt::Debug for SpliceConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = [self.halves[0].queued, self.halves[1].queued];
        f.debug_struct("SpliceConn").field("connected", &self.connected).field("queued", &q).finish_non_exhaustive()
    }
}

/// What a round of [`SpliceConn::run`] did.
#[derive(Debug, Default)]
pub(super) struct Pumped {
    /// Bytes delivered, [to the container, to the client].
    pub(super) bytes: [usize; 2],
    /// The namespace side's connect completed in this round.
    pub(super) opened: bool,
    /// Halves whose end of file was passed on in this round ([client's, container's]).
    pub(super) closed: [bool; 2],
    /// The budget ran out with more to do.
    pub(super) more: bool,
    pub(super) state: State,
}

#[derive(Debug, Default)]
pub(super) enum State {
    #[default]
    Open,
    /// Waiting for the namespace side's connect.
    Connecting,
    /// Both halves closed gracefully.
    Done,
    /// The connect inside the namespace failed (nothing listens there, mostly).
    Refused(io::Error),
    /// A socket failed (a reset, mostly): the other side is to be reset too.
    Failed,
}

impl SpliceConn {
    /// Starts connecting `ns` (bound already, where its connections are to come from) to `to`
    /// for the client `host`; `relay` is the relay's epoll token (0 for a published port's). Err
    /// gives the client's socket back with what failed.
    pub(super) fn start(host: Socket, ns: Socket, to: SocketAddr, ns_token: u64, relay: u64) -> Result<SpliceConn, (io::Error, Socket)> {
        // accept(2) gives a blocking socket, and a splice out of one waits for data whatever its flags say.
        if let Err(e) = host.set_nonblocking(true) {
            return Err((e, host));
        }
        let connected = match Self::connect(&ns, to) {
            Ok(c) => c,
            Err(e) => return Err((e, host)),
        };
        // The two sockets' own buffers are what the pipes drain into: leave them to autotuning.
        let _ = host.set_tcp_nodelay(true);
        let _ = ns.set_tcp_nodelay(true);
        // Both connections stay on this host.
        local_congestion(&host);
        local_congestion(&ns);
        Ok(SpliceConn { host, ns, ns_token, relay, connected, halves: Default::default() })
    }

    /// Starts `ns`'s connect to `to`; true if it completed already.
    fn connect(ns: &Socket, to: SocketAddr) -> io::Result<bool> {
        match ns.connect(&SockAddr::from(to)) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The host side's and the namespace side's descriptors, for the epoll set.
    pub(super) fn fds(&self) -> [std::os::fd::RawFd; 2] {
        [self.host.as_raw_fd(), self.ns.as_raw_fd()]
    }

    /// Moves what can be moved both ways, until nothing more can or the budget is spent;
    /// `pipes` are the engine's spare ones.
    pub(super) fn run(&mut self, pipes: &mut Vec<Pipe>) -> Pumped {
        let mut out = Pumped::default();
        if !self.connected {
            match self.ns.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return Pumped { state: State::Refused(e), ..out },
            }
            match self.ns.peer_addr() {
                Ok(_) => {
                    self.connected = true;
                    out.opened = true;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => return Pumped { state: State::Connecting, ..out },
                Err(e) => return Pumped { state: State::Refused(e), ..out },
            }
        }
        for h in &mut self.halves {
            if h.pipe.is_none() {
                match pipes.pop().map_or_else(Pipe::new, Ok) {
                    Ok(p) => h.pipe = Some(p),
                    Err(_) => return Pumped { state: State::Failed, ..out },
                }
            }
        }
        for _ in 0..BUDGET {
            let mut progress = false;
            for (d, h) in self.halves.iter_mut().enumerate() {
                let (src, dst) = if d == 0 { (&self.host, &self.ns) } else { (&self.ns, &self.host) };
                let Some(p) = &h.pipe else { continue };
                if !h.eof && h.queued < p.cap {
                    match sys::splice(src.as_raw_fd(), p.w.as_raw_fd(), p.cap - h.queued) {
                        Ok(0) => {
                            h.eof = true;
                            progress = true;
                        }
                        Ok(n) => {
                            h.queued += n;
                            progress = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return Pumped { state: State::Failed, ..out },
                    }
                }
                if h.queued > 0 {
                    match sys::splice(p.r.as_raw_fd(), dst.as_raw_fd(), h.queued) {
                        Ok(n) => {
                            h.queued -= n;
                            out.bytes[d] += n;
                            progress |= n > 0;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return Pumped { state: State::Failed, ..out },
                    }
                }
                if h.eof && h.queued == 0 && !h.shut {
                    h.shut = true;
                    out.closed[d] = true;
                    // ENOTCONN: the peer is gone altogether, which its own read will tell.
                    let _ = dst.shutdown(std::net::Shutdown::Write);
                }
            }
            if self.halves.iter().all(|h| h.shut) {
                return Pumped { state: State::Done, ..out };
            }
            if !progress {
                return out;
            }
        }
        out.more = true;
        out
    }

    /// Closes both sockets, with a RST to each when `reset`; empty pipes go back to `spare`.
    pub(super) fn close(mut self, reset: bool, spare: Option<&mut Vec<Pipe>>) {
        if reset {
            let _ = self.host.set_linger(Some(Duration::ZERO));
            let _ = self.ns.set_linger(Some(Duration::ZERO));
        }
        let Some(pipes) = spare else { return };
        for h in &mut self.halves {
            if let Some(p) = h.pipe.take().filter(|_| h.queued == 0) {
                if pipes.len() < PIPE_POOL {
                    pipes.push(p);
                }
            }
        }
    }
}

/// The loopback address of a family.
fn loopback(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }
}

/// Binds `ns` (a socket inside the namespace, about to connect to `to` there) to the
/// namespace's loopback when `to` is not a loopback address: the service sees a loopback client,
/// which the client is.
pub(super) fn from_loopback(ns: &Socket, to: SocketAddr) -> io::Result<()> {
    if !to.ip().is_loopback() {
        // The kernel may reuse loopback connections' TIME-WAIT ports at once
        // (net.ipv4.tcp_tw_reuse's default), where a stream of short connections from the
        // container's own address ran out of ports: 2,000 connections a second instead of
        // 11,700 on the 2-CPU VM.
        let lo = loopback(to.is_ipv6());
        sys::bind_address_no_port(ns.as_raw_fd())?;
        ns.bind(&SockAddr::from(SocketAddr::new(lo, 0)))?;
    }
    Ok(())
}

/// Where [`from_own_port`] tries next: a count taken modulo the namespace's range.
static NEXT_PORT: AtomicU32 = AtomicU32::new(0);
/// Ports tried before giving up (to the framed path): others' connections and listeners hold some.
const OWN_PORT_TRIES: usize = 32;
/// Sockets a spliced connection from [`from_own_port`] may go through when the port it got is
/// held for the service it connects to (EADDRNOTAVAIL from connect: a connection from that port
/// to it is open, or in TIME-WAIT without timestamps); the framed path takes it after that.
const CONNECT_TRIES: usize = 8;

/// Binds `ns` to `addr` (the container's, about to be connected to) at a port of our choosing
/// from `ports`, with SO_REUSEADDR. Bound by us, not by connect(2), a port whose last connection
/// to the same service is in TIME-WAIT is taken over at once (the kernel allows it for explicitly
/// bound sockets when the old connection had timestamps, as Linux's have by default), where the
/// kernel's own choice would skip it: `tcp_tw_reuse` covers loopback addresses only, and a
/// stream of short connections ran out of ports. Tested with 2,000 connections over 100 ports.
fn from_own_port(ns: &Socket, addr: IpAddr, ports: &OwnPorts) -> io::Result<()> {
    ns.set_reuse_address(true)?;
    let (lo, hi) = (u32::from(ports.range.0), u32::from(ports.range.1));
    let span = hi - lo + 1;
    let mut last = io::Error::from(io::ErrorKind::AddrInUse);
    let (mut tries, mut seen) = (0, 0);
    // Reserved ranges are stepped over whole, without a bind; at most once round the range.
    while seen < span && tries < OWN_PORT_TRIES {
        let port = (lo + NEXT_PORT.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if let Some(end) = ports.reserved_through(port) {
            let rest = u32::from(end.min(ports.range.1) - port);
            NEXT_PORT.fetch_add(rest, Ordering::Relaxed);
            seen += rest + 1;
            continue;
        }
        seen += 1;
        tries += 1;
        match ns.bind(&SockAddr::from(SocketAddr::new(addr, port))) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

impl Core {
    /// A client on the host's loopback connected to published port `fwd`, which splices: joined
    /// to a connection inside the container's namespace. Err gives the socket back for the
    /// framed path when no socket could be made there.
    pub(super) fn splice_in(
        &mut self,
        io: &dyn FrameIo,
        c: &Counters,
        fwd: &PortForward,
        sock: Socket,
        client: SocketAddr,
        now: u64,
    ) -> Result<(), Socket> {
        let Some(sp) = &fwd.splice else { return Err(sock) };
        let net = fwd.net;
        let container = fwd.container.ip();
        let key = FlowKey::new(Proto::Tcp, client, fwd.container);
        if !self.nets.contains_key(&net) || !self.admit(net, container, c) {
            add(&c.pub_dropped, 1);
            turn_away(sock);
            return Ok(());
        }
        if self.tables.get(&net).is_some_and(|t| t.id_of(&key).is_some() || t.id_of(&key.reversed()).is_some()) {
            add(&c.pub_splice_fallback, 1);
            return Err(sock);
        }
        let to = sp.to.target(client.ip(), fwd.container);
        let (token, ns_token) = (self.token(), self.token());
        let mut sock = sock;
        let mut tries = 0;
        let conn = loop {
            let ns = match sp.ns.take_bound(to, sp.to) {
                Ok(s) => s,
                Err(_) => {
                    add(&c.pub_splice_fallback, 1);
                    return Err(sock);
                }
            };
            match SpliceConn::start(sock, ns, to, ns_token, 0) {
                // The port we picked is held for this service: another one, on a new socket.
                Err((e, s)) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) && sp.to == SpliceTo::Public && tries + 1 < CONNECT_TRIES => {
                    tries += 1;
                    add(&c.pub_splice_port_busy, 1);
                    sock = s;
                }
                r => break r,
            }
        };
        let conn = match conn {
            Ok(conn) => conn,
            // Refused at once: so is the client.
            Err((e, sock)) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                connect_failed(c, &e);
                add(&c.pub_tcp_refused, 1);
                turn_away(sock);
                return Ok(());
            }
            // The namespace side could not be set up (its loopback down, out of ports): the
            // framed path may still carry the client.
            Err((_, sock)) => {
                add(&c.pub_splice_fallback, 1);
                return Err(sock);
            }
        };
        let [h, n] = conn.fds();
        if self.poller.add_edge(h, token).and_then(|()| self.poller.add_edge(n, ns_token)).is_err() {
            add(&c.drop_host_socket_failed, 1);
            conn.close(true, None);
            add(&c.pub_dropped, 1);
            return Ok(());
        }
        let inbound = Inbound { fwd: fwd.id, net, container, client };
        let table = table_of(&mut self.tables, net, &self.limits);
        let Ok((id, _)) =
            table.get_or_insert_with(key, now, || FlowVal { token, kind: Kind::Splice(Box::new(conn)), inbound: Some(inbound) })
        else {
            add(&c.drop_flow_table_full, 1);
            add(&c.pub_dropped, 1);
            return Ok(());
        };
        table.on_tcp(id, Dir::Orig, TcpFlags::SYN, now);
        self.tokens.insert(token, (net, id));
        self.tokens.insert(ns_token, (net, id));
        *self.inbound_per.entry((net, container)).or_insert(0) += 1;
        add(&c.pub_spliced, 1);
        gauge(&c.splice_open, 1);
        self.splice_ready(io, c, net, id, token, now);
        Ok(())
    }

    /// Readiness of either socket of a spliced connection (`token`, either of its two).
    pub(super) fn splice_ready(&mut self, io: &dyn FrameIo, c: &Counters, net: NetId, id: FlowId, token: u64, now: u64) {
        let Some(table) = self.tables.get_mut(&net) else { return };
        let Some(flow) = table.get_mut(id) else { return };
        let published = flow.value.inbound.is_some();
        let Kind::Splice(conn) = &mut flow.value.kind else { return };
        let p = conn.run(&mut self.pipes);
        if p.opened && published {
            add(&c.pub_tcp_opened, 1);
        }
        if p.opened {
            table.on_tcp(id, Dir::Reply, TcpFlags::SYN | TcpFlags::ACK, now);
            table.on_tcp(id, Dir::Orig, TcpFlags::ACK, now);
        }
        for (d, dir) in [(0, Dir::Orig), (1, Dir::Reply)] {
            if p.bytes[d] > 0 {
                table.on_packet(id, dir, p.bytes[d], now);
            }
            if p.closed[d] {
                table.on_tcp(id, dir, TcpFlags::FIN | TcpFlags::ACK, now);
            }
        }
        let (to, from) = if published { (&c.pub_bytes_in, &c.pub_bytes_out) } else { (&c.bytes_to_host, &c.bytes_from_host) };
        add(to, p.bytes[0] as u64);
        add(from, p.bytes[1] as u64);
        let how = match p.state {
            State::Open | State::Connecting => {
                if p.more {
                    self.again.push(token);
                }
                return;
            }
            State::Done => Close::Quiet,
            State::Refused(e) => {
                connect_failed(c, &e);
                if published {
                    add(&c.pub_tcp_refused, 1);
                }
                Close::Reset { container: false }
            }
            State::Failed => {
                add(&c.tcp_reset_by_host, 1);
                Close::Reset { container: false }
            }
        };
        if let Some((_, v)) = table.remove(id) {
            self.dispose(io, c, v, how, now);
        }
    }
}

impl Core {
    /// A datagram of `n` bytes (at `rxbuf[FRONT..]`) from a client on the host's loopback to the
    /// published UDP port `l`, which splices: sent from a socket inside the container's
    /// namespace (from [`SpliceTo::udp_source`]), the client's own flow, whose answers leave through the
    /// published socket. False when no socket could be made there: the framed path takes it.
    pub(super) fn splice_udp_in(&mut self, c: &Counters, l: &Listener, n: usize, client: SocketAddr, now: u64) -> bool {
        let fwd = &l.fwd;
        let Some(sp) = &fwd.splice else { return false };
        let (net, container) = (fwd.net, fwd.container.ip());
        let key = FlowKey::new(Proto::Udp, client, fwd.container);
        let found = self.tables.get(&net).and_then(|t| {
            let (id, dir) = t.find(&key)?;
            let mine = matches!(t.get(id).map(|f| &f.value.kind), Some(Kind::UdpRelay(u)) if u.back == Back::Published(fwd.id));
            Some((id, mine && dir == Dir::Orig))
        });
        let id = match found {
            Some((id, true)) => id,
            // The same client's flow to this container port through another published port: its
            // answers leave from that port's socket, so this one takes the framed path.
            Some((_, false)) => return false,
            None => {
                if !self.nets.contains_key(&net) || !self.admit(net, container, c) {
                    add(&c.pub_dropped, 1);
                    return true;
                }
                let to = sp.to.target(client.ip(), fwd.container);
                // From where TCP's come from, and unconnected: a service bound to a wildcard
                // address answers a loopback client from the loopback, not from the address the
                // datagram was sent to, which a connected socket would not take.
                let open = || -> io::Result<UdpSocket> {
                    let s = sp.ns.take_of(to.is_ipv6(), true)?;
                    s.bind(&SockAddr::from(SocketAddr::new(sp.to.udp_source(to), 0)))?;
                    Ok(s.into())
                };
                let Ok(sock) = open() else {
                    add(&c.pub_splice_fallback, 1);
                    return false;
                };
                let token = self.token();
                if self.poller.add_edge(sock.as_raw_fd(), token).is_err() {
                    add(&c.drop_host_socket_failed, 1);
                    return true;
                }
                let inbound = Inbound { fwd: fwd.id, net, container, client };
                let flow = UdpRelayFlow { sock, to: Some(to), back: Back::Published(fwd.id), client };
                let table = table_of(&mut self.tables, net, &self.limits);
                let Ok((id, _)) =
                    table.get_or_insert_with(key, now, || FlowVal { token, kind: Kind::UdpRelay(flow), inbound: Some(inbound) })
                else {
                    add(&c.drop_flow_table_full, 1);
                    add(&c.pub_dropped, 1);
                    return true;
                };
                self.tokens.insert(token, (net, id));
                *self.inbound_per.entry((net, container)).or_insert(0) += 1;
                gauge(&c.udp_open, 1);
                add(&c.pub_udp_flows, 1);
                add(&c.pub_spliced, 1);
                id
            }
        };
        let Some(table) = self.tables.get_mut(&net) else { return true };
        let Some(Kind::UdpRelay(f)) = table.get(id).map(|f| &f.value.kind) else { return true };
        match f.send(&self.rxbuf[FRONT..FRONT + n]) {
            Ok(sent) => add(&c.pub_bytes_in, sent as u64),
            Err(_) => add(&c.pub_dropped, 1),
        }
        table.on_packet(id, Dir::Orig, n, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::serial;
    use super::*;

    #[test]
    fn own_ports_read_from_the_two_sysctls_text() {
        let p = OwnPorts::parse("45000\t45039\n", "45033,45020-45029,45025-45031\n");
        // Sorted and merged.
        assert_eq!(p, OwnPorts { range: (45_000, 45_039), reserved: vec![(45_020, 45_031), (45_033, 45_033)] });
        assert_eq!(p.reserved_through(45_020), Some(45_031));
        assert_eq!(p.reserved_through(45_031), Some(45_031));
        assert_eq!(p.reserved_through(45_033), Some(45_033));
        assert_eq!([45_019, 45_032, 45_034, 0, 65_535].map(|x| p.reserved_through(x)), [None; 5]);
        assert_eq!(OwnPorts::parse("32768\t60999\n", "\n"), OwnPorts::default());
        // Unreadable or nonsensical: Linux's default range; adjacent ranges merge.
        assert_eq!(OwnPorts::parse("", "").range, (32_768, 60_999));
        assert_eq!(OwnPorts::parse("60999 32768", "").range, (32_768, 60_999));
        assert_eq!(OwnPorts::parse("x 5", "9002,8080,y,9000-9001,7-3").reserved, vec![(8080, 8080), (9000, 9002)]);
    }

    /// A loopback address nothing else binds: its ports are all free.
    const QUIET: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 93, 41, 7));

    fn bound_port(ports: &OwnPorts) -> io::Result<u16> {
        let s = Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        from_own_port(&s, QUIET, ports)?;
        Ok(s.local_addr()?.as_socket().map_or(0, |a| a.port()))
    }

    #[test]
    fn own_ports_come_from_the_range_and_step_over_reserved_ones() {
        let _g = serial();
        let ports = OwnPorts { range: (41_000, 41_009), reserved: vec![(40_000, 41_001), (41_003, 41_008)] };
        let seen: std::collections::BTreeSet<u16> = (0..12).map(|_| bound_port(&ports).expect("a port")).collect();
        assert_eq!(seen, [41_002, 41_009].into(), "only the range's unreserved ports");
        // All of it reserved: an error (the framed path), not a loop; the top of the port space.
        let none = OwnPorts { range: (41_000, 41_001), reserved: vec![(41_000, 41_001)] };
        assert!(bound_port(&none).is_err());
        let top = OwnPorts { range: (65_534, 65_535), reserved: vec![(65_534, 65_534)] };
        assert_eq!(bound_port(&top).expect("a port"), 65_535);
    }

    #[test]
    fn a_namespace_s_ports_are_read_inside_it() {
        let _g = serial();
        // This process's own namespace, entered as another one would be: what its sysctls say.
        let ns = match NsSockets::open(Path::new("/proc/self/ns/net"), None) {
            Ok(ns) => ns.with_own_ports(),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return eprintln!("SKIPPED a_namespace_s_ports_are_read_inside_it: entering a network namespace needs root ({e})");
            }
            Err(e) => panic!("{e}"),
        };
        let read = |p: &str| std::fs::read_to_string(p).expect(p);
        let want = OwnPorts::parse(&read("/proc/sys/net/ipv4/ip_local_port_range"), &read("/proc/sys/net/ipv4/ip_local_reserved_ports"));
        assert!(ns.sysctls.is_some(), "both sysctls opened inside");
        assert_eq!(*ns.own_ports(), want);
    }
}
