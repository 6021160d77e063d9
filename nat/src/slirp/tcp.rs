//! TCP flows of the slirp engine: a smoltcp endpoint per connection facing the container, a non-blocking host socket behind it.
//!
//! A container's SYN to D:P first opens a host connection to D:P (or the host's loopback for
//! the gateway's address); the SYN is held meanwhile, and answered only once the host accepts:
//! it is then fed to a smoltcp socket listening on D:P, created for it. A host that refuses gets
//! the container a RST (the SYN fed to an interface with no socket, which is what smoltcp
//! answers with); a host that never answers gets it nothing, as a dropped SYN would.
//!
//! One smoltcp `Interface` per connection, with the connection's destination as its address:
//! polling then costs O(1) per connection rather than a scan of every socket, containers of
//! different networks may use the same addresses, and the interface's MTU is the network's.
//!
//! Large segments both ways. smoltcp takes whatever IP packet it is given (a 64 KB GSO segment
//! from the container arrives whole; its checksum is partial then, so smoltcp's verification is
//! off and [`super::frame::parse`] checks whole-frame checksums itself). Toward the container,
//! smoltcp's IP MTU is 65535 and the MSS option of the held SYN is raised to 65535 before
//! smoltcp reads it, so it sends segments as large as the window allows; every segment with
//! more payload than the container's own MSS (capped by the network MTU, less the options each
//! segment carries) leaves as a GSO frame (`gso_type` TCPV4/TCPV6, `gso_size` that MSS,
//! NEEDS_CSUM with the pseudo-header sum in the checksum field), which the kernel behind the
//! container's TAP or veth segments exactly as it does its own. Smaller segments carry a full
//! checksum and no offload.
//!
//! Backpressure, both ways, with no buffer of our own in between: bytes are read from the host
//! socket straight into smoltcp's send buffer, and only while it has room, so a container that
//! reads slowly shrinks its window, fills the buffer, and leaves data waiting in the host's
//! socket, whose window then closes in turn; bytes the container sends are written to the host
//! straight from smoltcp's receive buffer, and only as much as the host takes, so a slow host
//! leaves them there and smoltcp's window to the container closes. Readiness is edge-triggered,
//! remembered here as `readable`/`writable` until a call answers EAGAIN.
//!
//! Closing: the container's FIN becomes `shutdown(SHUT_WR)` on the host socket once everything
//! before it is written; the host's EOF becomes smoltcp's `close()` (a FIN after the buffered
//! data). A RST from the container (or smoltcp giving up) closes the host socket with
//! SO_LINGER 0, which sends a RST; a host error (ECONNRESET, EPIPE) aborts the smoltcp socket,
//! which sends the container a RST.
//!
//! Buffers: `EngineLimits::tcp_buffer` bytes toward the container (4 MiB by default: the most
//! the kernel's autotuning gives a socket's send buffer, `tcp_wmem`) and `tcp_window` from it
//! (256 KiB, the window smoltcp announces, scaled). Toward the container that is the most in
//! flight, and in flight it waits for the container's ACKs, each a TAP read, a worker and a
//! wake-up of the engine away: at 256 KiB the engine stalled on them and carried 8 Gbit/s
//! where 4 MiB carries 13-14 (BENCHMARKS.md, "The engine's TCP buffers"). Only the host fills
//! it, at the engine's pace, and smoltcp starts it over at its beginning whenever it empties;
//! the window, which the container fills where it likes (out of order, ahead of what the host
//! took), stays small. The host's side has the kernel's own (autotuned) socket buffers.
//! Memory is what is touched, not what is allocated: the buffers are above glibc's mmap
//! threshold (held at its default by [`super::sys::map_large_allocations`]), so they arrive as
//! untouched zero pages (never huge ones: [`sys::small_page_buffer`]), cost no `memset`, and go back to the kernel when freed; a connection
//! that moved little holds little, and only such connections' sockets are pooled ([`recycle`]).
//! A connection keeps what its busiest moment touched until it ends (up to 4.25 MiB), as a
//! kernel socket keeps its grown buffers.
//!
//! Timers: smoltcp's (retransmission, delayed ACK at 10 ms, zero-window probes, its user
//! timeout) as [`TcpConn::next_poll`] reports them, and a short TIME-WAIT ([`TIME_WAIT_MS`]); idle connections are
//! closed by connection tracking's timeouts (2 h 4 min established), not here.
//!
//! Published ports turn this around ([`TcpConn::accept`]): the host connection is already there
//! (accepted), and smoltcp plays the client, connecting from the address the container is to
//! see (the client's own, or the gateway's) to the container. Everything after the handshake is
//! the same: the container's SYN-ACK has its MSS raised as a SYN's is, for GSO; the same pump,
//! half-closes and resets. A container that answers with a RST, or not at all within
//! [`PUBLISHED_SYN_TIMEOUT_MS`], gets the client a RST (the host's kernel completed the
//! client's handshake before anyone asked the container: userspace forwarders cannot do better).

use std::cell::RefCell;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::frame::{self, Dest, Via, ETH_HDR_LEN, FRAME_HDRS, GSO_TCPV4, GSO_TCPV6, IPV6_HDR_LEN, MAX_IP, VNET_F_NEEDS_CSUM};
use super::sys::{self, Event, Poller};
use super::{add, Counters, FrameIo};

/// How long a connection stays in TIME-WAIT once both sides closed (the engine closed first):
/// long enough to acknowledge the container's FIN and its first retransmission (Linux's RTO is
/// at least 200 ms); a later one gets a RST, which a container in LAST-ACK takes as the end it
/// waits for. Short, because the connection's buffers (`tcp_buffer`, `tcp_window`) lived until it ended: at
/// thousands of connections a second, a 1 s TIME-WAIT held gigabytes.
const TIME_WAIT_MS: u64 = 250;
/// The most segments smoltcp may send for a connection in one go, before other work gets a turn.
const EGRESS_BURST: usize = 64;
/// MSS assumed when a SYN carries no MSS option (RFC 9293, RFC 8200 minimum MTU less headers).
const DEFAULT_MSS_V4: u16 = 536;
const DEFAULT_MSS_V6: u16 = 1220;
/// How long a published port's connection waits for the container's SYN-ACK (smoltcp retransmits
/// the SYN meanwhile) before the client is reset.
pub(crate) const PUBLISHED_SYN_TIMEOUT_MS: u64 = 20_000;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
/// smoltcp's clock counts microseconds in an i64 and adds its timeouts to it.
const MAX_CLOCK_MS: u64 = 1 << 50;

pub(crate) fn instant(ms: u64) -> Instant {
    Instant::from_millis(i64::try_from(ms.min(MAX_CLOCK_MS)).unwrap_or(0))
}

/// What a connection reports of its packets to the container, for connection tracking.
pub(crate) type SentLog = Vec<(u8, u32)>;

/// The engine state a connection works with while it runs.
pub(crate) struct Ctx<'a> {
    pub(crate) io: &'a dyn FrameIo,
    pub(crate) counters: &'a Counters,
    /// Where frames to the container are built: `FRAME_HDRS + MAX_IP` bytes.
    pub(crate) buf: &'a mut Vec<u8>,
    /// TCP flags and IP length of every segment sent to a container since the caller last looked.
    pub(crate) sent: &'a mut SentLog,
    pub(crate) now: u64,
}

/// Sizes and timeouts of every connection's smoltcp socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpParams {
    /// Toward the container (smoltcp's send buffer).
    pub(crate) buffer: usize,
    /// From the container (smoltcp's receive buffer: the window it is offered).
    pub(crate) window: usize,
    pub(crate) timeout_ms: u64,
}

/// How a host connect attempt stands.
#[derive(Debug)]
pub(crate) enum Connect {
    Pending,
    Opened,
    /// The host refused or could not be reached: answer the held SYN with a RST.
    Failed(io::Error),
    /// The SYN was not taken after all; nothing to answer.
    Dropped,
}

enum Stage {
    /// The host connection is under way; the container's SYN (its MSS raised) waits for it.
    Connecting {
        syn: Vec<u8>,
    },
    Open {
        iface: Box<Interface>,
        sockets: SocketSet<'static>,
        handle: SocketHandle,
    },
    /// The rest of TIME-WAIT once both sides are done, smoltcp's socket back in the pool: its
    /// buffers are most of a connection's memory, and a stream of short connections keeps
    /// thousands in TIME-WAIT (1.5 GB at 8,000 connections a second when each kept its own).
    /// The flow holds its ports until TIME-WAIT is over; a segment on it is answered with a RST
    /// (a FIN the container sent again, our last ACK lost, closes its side at once).
    TimeWait,
}

/// The host half of a connection.
#[derive(Debug)]
struct Host {
    sock: Option<Socket>,
    /// Edge-triggered readiness, until a call says EAGAIN.
    readable: bool,
    writable: bool,
    /// The host sent its FIN (a read returned 0).
    eof: bool,
    /// We sent the host our FIN (the container's).
    wr_shut: bool,
    /// Bytes carried, both ways together: how far into its buffers the smoltcp socket wrote.
    moved: u64,
}

/// One TCP connection from a container, or to it through a published port.
pub(crate) struct TcpConn {
    dest: Dest,
    /// The most payload one segment to the container may carry (its MSS, capped by the MTU).
    mss: usize,
    /// smoltcp's address and port: the destination the container connected to, or (published)
    /// the source it is to see.
    local: SocketAddr,
    /// A published port's connection: smoltcp connects to the container.
    inbound: bool,
    /// (Published) the container answered the SYN.
    answered: bool,
    host: Host,
    stage: Stage,
    /// The container sent its FIN.
    container_fin: bool,
    /// The last segment from the container that was an ACK and nothing else: its ACK number and window.
    last_pure_ack: Option<(u32, u16)>,
    time_wait_since: Option<u64>,
    params: TcpParams,
    /// When the engine's timer will next look at this connection (None: not scheduled).
    pub(crate) deadline: Option<u64>,
}

impl Drop for TcpConn {
    fn drop(&mut self) {
        self.release_socket();
    }
}

impl std::fmt::Debug for TcpConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConn")
            .field("dest", &self.dest)
            .field("local", &self.local)
            .field("host", &self.host)
            .field("open", &matches!(self.stage, Stage::Open { .. }))
            .finish_non_exhaustive()
    }
}

impl TcpConn {
    /// Starts a host connection from `from` (None: any address) to `host_addr` for the container's
    /// SYN `syn` (an IP packet whose transport header is at `tcp_at`), registered with `poller`
    /// under `token`. Err if the host socket cannot even be made or bound, or the connect fails at once.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn connect(
        syn: &[u8],
        tcp_at: usize,
        local: SocketAddr,
        from: Option<IpAddr>,
        host_addr: SocketAddr,
        dest: Dest,
        params: TcpParams,
        poller: &Poller,
        token: u64,
    ) -> io::Result<(TcpConn, bool)> {
        let mut syn = syn.to_vec();
        let v6 = local.is_ipv6();
        let mss = frame::tcp_mss(&mut syn[tcp_at..], Some(u16::MAX)).unwrap_or(if v6 { DEFAULT_MSS_V6 } else { DEFAULT_MSS_V4 });
        let ip_hdr = tcp_at;
        let mss = usize::from(mss).min(dest.mtu.saturating_sub(ip_hdr + 20)).max(64);
        let sock = Socket::new(Domain::for_address(host_addr), Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
        // The container's stack already coalesces (Nagle); ours would only add a delay.
        let _ = sock.set_tcp_nodelay(true);
        if host_addr.ip().is_loopback() {
            super::local_congestion(&sock);
        }
        super::bind_source(&sock, from, host_addr.ip())?;
        let connected = match sock.connect(&SockAddr::from(host_addr)) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => false,
            Err(e) => return Err(e),
        };
        poller.add_edge(sock.as_raw_fd(), token)?;
        let conn = TcpConn {
            dest,
            mss,
            local,
            inbound: false,
            answered: false,
            host: Host { sock: Some(sock), readable: false, writable: false, eof: false, wr_shut: false, moved: 0 },
            stage: Stage::Connecting { syn },
            container_fin: false,
            last_pure_ack: None,
            time_wait_since: None,
            params,
            deadline: None,
        };
        Ok((conn, connected))
    }

    /// A published port's connection, `sock` accepted from a client: smoltcp, with `local` as its
    /// address, connects to the container at `remote`. The SYN leaves on the first
    /// [`on_timer`](Self::on_timer). Err if the host socket cannot be registered.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn accept(
        sock: Socket,
        local: SocketAddr,
        remote: SocketAddr,
        dest: Dest,
        params: TcpParams,
        poller: &Poller,
        token: u64,
        ctx: &mut Ctx<'_>,
    ) -> io::Result<TcpConn> {
        sock.set_nonblocking(true)?;
        let _ = sock.set_tcp_nodelay(true);
        poller.add_edge(sock.as_raw_fd(), token)?;
        let v6 = local.is_ipv6();
        // Until the container's SYN-ACK says otherwise.
        let mss = usize::from(if v6 { DEFAULT_MSS_V6 } else { DEFAULT_MSS_V4 });
        let now_ms = ctx.now;
        let mut eg = Egress::new(ctx, dest, mss);
        let mut iface = new_iface(&mut Link { rx: None, eg: &mut eg }, IpAddress::from(local.ip()), now_ms);
        let mut sockets = SocketSet::new(Vec::with_capacity(1));
        let mut s = new_socket(params);
        s.set_timeout(Some(smoltcp::time::Duration::from_millis(PUBLISHED_SYN_TIMEOUT_MS)));
        let to = IpEndpoint::new(IpAddress::from(remote.ip()), remote.port());
        let from = IpListenEndpoint { addr: Some(IpAddress::from(local.ip())), port: local.port() };
        s.connect(iface.context(), to, from).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let handle = sockets.add(s);
        Ok(TcpConn {
            dest,
            mss,
            local,
            inbound: true,
            answered: false,
            host: Host { sock: Some(sock), readable: false, writable: false, eof: false, wr_shut: false, moved: 0 },
            stage: Stage::Open { iface: Box::new(iface), sockets, handle },
            container_fin: false,
            last_pure_ack: None,
            time_wait_since: None,
            params,
            deadline: None,
        })
    }

    pub(crate) fn dest(&self) -> &Dest {
        &self.dest
    }

    /// A published port's connection (smoltcp is the client).
    pub(crate) fn inbound(&self) -> bool {
        self.inbound
    }

    /// Still waiting for the host.
    pub(crate) fn connecting(&self) -> bool {
        matches!(self.stage, Stage::Connecting { .. })
    }

    /// The held SYN (while connecting): what a refuser answers with a RST.
    pub(crate) fn syn(&self) -> Option<&[u8]> {
        match &self.stage {
            Stage::Connecting { syn } => Some(syn),
            Stage::Open { .. } | Stage::TimeWait => None,
        }
    }

    /// Whether smoltcp's side is over or in TIME-WAIT: a new SYN on the same ports is a new connection.
    pub(crate) fn reusable(&mut self) -> bool {
        match &mut self.stage {
            Stage::Connecting { .. } => false,
            Stage::Open { sockets, handle, .. } => {
                matches!(sockets.get_mut::<tcp::Socket>(*handle).state(), tcp::State::Closed | tcp::State::TimeWait)
            }
            Stage::TimeWait => true,
        }
    }

    /// In TIME-WAIT with no socket left (see [`Stage::TimeWait`]): the engine answers its
    /// segments with a RST.
    pub(crate) fn lingering(&self) -> bool {
        matches!(self.stage, Stage::TimeWait)
    }

    /// Gives smoltcp's socket back to the pool, the connection now in [`Stage::TimeWait`] (or
    /// being dropped).
    fn release_socket(&mut self) {
        if let Stage::Open { mut sockets, handle, .. } = std::mem::replace(&mut self.stage, Stage::TimeWait) {
            // The only socket kind smoltcp is built with here.
            let smoltcp::socket::Socket::Tcp(s) = sockets.remove(handle);
            recycle(s, self.host.moved);
        }
    }

    /// Readiness of the host socket while connecting: whether the connection is up, failed or pending.
    pub(crate) fn poll_connect(&mut self, ev: &Event, ctx: &mut Ctx<'_>) -> Connect {
        let Some(sock) = &self.host.sock else { return Connect::Dropped };
        match sock.take_error() {
            Ok(Some(e)) | Err(e) => return Connect::Failed(e),
            Ok(None) => {}
        }
        if !ev.writable && !ev.error {
            return Connect::Pending;
        }
        match sock.peer_addr() {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                // Hung up without an error code: find out why by reading.
                let mut b = [0u8; 1];
                return match (&*sock).read(&mut b) {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => Connect::Failed(e),
                    _ if ev.error => Connect::Failed(io::Error::from_raw_os_error(libc::ECONNREFUSED)),
                    _ => Connect::Pending,
                };
            }
            Err(e) => return Connect::Failed(e),
        }
        self.host.readable |= ev.readable;
        self.host.writable = true;
        self.open(ctx)
    }

    /// The host accepted: smoltcp takes the held SYN on a socket made for it and answers.
    pub(crate) fn open(&mut self, ctx: &mut Ctx<'_>) -> Connect {
        let syn = match &mut self.stage {
            Stage::Connecting { syn } => std::mem::take(syn),
            Stage::Open { .. } | Stage::TimeWait => return Connect::Opened,
        };
        let local = IpEndpoint::new(IpAddress::from(self.local.ip()), self.local.port());
        let now_ms = ctx.now;
        let mut eg = Egress::new(ctx, self.dest, self.mss);
        let mut iface = new_iface(&mut Link { rx: None, eg: &mut eg }, local.addr, now_ms);
        let mut sockets = SocketSet::new(Vec::with_capacity(1));
        let mut s = new_socket(self.params);
        // The listening endpoint is the one address this interface has, so listening cannot fail.
        let _ = s.listen(IpListenEndpoint { addr: Some(local.addr), port: local.port });
        let handle = sockets.add(s);
        let _ = iface.poll_ingress_single(instant(now_ms), &mut Link { rx: Some(&syn), eg: &mut eg }, &mut sockets);
        let state = sockets.get::<tcp::Socket>(handle).state();
        if matches!(state, tcp::State::Listen | tcp::State::Closed) {
            return Connect::Dropped;
        }
        self.stage = Stage::Open { iface: Box::new(iface), sockets, handle };
        add(&ctx.counters.tcp_opened, 1);
        self.drive(None, ctx);
        Connect::Opened
    }

    /// A segment from the container (`ip`: the IP packet, its TCP header at `tcp_at`). True
    /// when the connection is over.
    pub(crate) fn on_segment(&mut self, ip: &[u8], tcp_at: usize, ctx: &mut Ctx<'_>) -> bool {
        let tcp = &ip[tcp_at..];
        let flags = tcp[13];
        match &mut self.stage {
            // Retransmitted SYNs wait with the first; a RST gives up on the host connection.
            Stage::Connecting { .. } => {
                if flags & TCP_RST != 0 {
                    self.host.sock = None;
                    add(&ctx.counters.tcp_reset_by_container, 1);
                    return true;
                }
                false
            }
            Stage::Open { .. } if self.inbound && !self.answered && flags & TCP_SYN != 0 => {
                // The container's SYN-ACK: its MSS is what segments to it are cut to (GSO), while
                // smoltcp is told 65535 so that it sends segments as large as the window allows.
                let mut synack = ip.to_vec();
                let v6 = ip.first().is_some_and(|b| b >> 4 == 6);
                let mss = frame::tcp_mss(&mut synack[tcp_at..], Some(u16::MAX)).unwrap_or(if v6 { DEFAULT_MSS_V6 } else { DEFAULT_MSS_V4 });
                self.mss = usize::from(mss).min(self.dest.mtu.saturating_sub(tcp_at + 20)).max(64);
                self.drive(Some(&synack), ctx);
                self.finished(ctx)
            }
            Stage::Open { sockets, handle, .. } => {
                // (ACK number, window) of a segment with no data and no flag but ACK.
                let pure_ack = (flags & !(TCP_ACK | TCP_PSH) == 0 && flags & TCP_ACK != 0 && tcp.len() == usize::from(tcp[12] >> 4) * 4)
                    .then(|| (u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]), u16::from_be_bytes([tcp[14], tcp[15]])));
                let s = sockets.get::<tcp::Socket>(*handle);
                // smoltcp answers a third duplicate ACK with a fast retransmit; when only its FIN
                // is unacknowledged there is nothing to retransmit, yet its retransmission timer
                // is stopped all the same, and the FIN, if it was lost, is never sent again.
                // Duplicate ACKs are no news then: leaving them out keeps the timer running.
                let dup = pure_ack.is_some()
                    && pure_ack == self.last_pure_ack
                    && matches!(s.state(), tcp::State::FinWait1 | tcp::State::Closing | tcp::State::LastAck)
                    && s.send_queue() == 0;
                self.last_pure_ack = pure_ack;
                self.drive(if dup { None } else { Some(ip) }, ctx);
                self.finished(ctx)
            }
            // The engine answers these itself (see `lingering`).
            Stage::TimeWait => self.finished(ctx),
        }
    }

    /// Readiness of the host socket once open. True when the connection is over.
    pub(crate) fn on_host(&mut self, ev: &Event, ctx: &mut Ctx<'_>) -> bool {
        self.host.readable |= ev.readable || ev.error;
        self.host.writable |= ev.writable || ev.error;
        if ev.error {
            let err = match self.host.sock.as_ref().map(Socket::take_error) {
                Some(Ok(Some(e)) | Err(e)) => Some(e),
                _ => None,
            };
            if let Some(e) = err {
                self.host_failed(e, ctx);
            }
        }
        self.drive(None, ctx);
        self.finished(ctx)
    }

    /// Timers (retransmissions, delayed ACKs, TIME-WAIT). True when the connection is over.
    pub(crate) fn on_timer(&mut self, ctx: &mut Ctx<'_>) -> bool {
        self.drive(None, ctx);
        self.finished(ctx)
    }

    /// When the engine should call [`on_timer`](Self::on_timer) next.
    pub(crate) fn next_poll(&mut self, now: u64) -> Option<u64> {
        let mut at = match &mut self.stage {
            Stage::Open { iface, sockets, .. } => {
                iface.poll_at(instant(now), sockets).map(|t| u64::try_from(t.total_millis()).unwrap_or(0))
            }
            Stage::TimeWait => None,
            Stage::Connecting { .. } => return None,
        };
        if let Some(since) = self.time_wait_since {
            let t = since.saturating_add(TIME_WAIT_MS);
            at = Some(at.map_or(t, |a| a.min(t)));
        }
        // smoltcp answers "now" when it has more to send than one burst: a millisecond later
        // lets the engine's other work in.
        at.map(|t| t.max(now + 1))
    }

    /// Resets both sides: a RST to the container (if `to_container`) and to the host.
    pub(crate) fn abort(&mut self, to_container: bool, ctx: &mut Ctx<'_>) {
        reset_host(&mut self.host);
        if let Stage::Open { sockets, handle, .. } = &mut self.stage {
            sockets.get_mut::<tcp::Socket>(*handle).abort();
            if to_container {
                self.drive(None, ctx);
            }
        }
    }

    /// Moves data both ways, sends what smoltcp has to send, and propagates FINs.
    fn drive(&mut self, rx: Option<&[u8]>, ctx: &mut Ctx<'_>) {
        let Stage::Open { iface, sockets, handle } = &mut self.stage else { return };
        let now = instant(ctx.now);
        let mut eg = Egress::new(ctx, self.dest, self.mss);
        if let Some(ip) = rx {
            let _ = iface.poll_ingress_single(now, &mut Link { rx: Some(ip), eg: &mut eg }, sockets);
        }
        let s = sockets.get_mut::<tcp::Socket>(*handle);
        if self.inbound && !self.answered && !matches!(s.state(), tcp::State::SynSent | tcp::State::Closed) {
            // The container took the connection: from now on the usual timeout applies.
            self.answered = true;
            s.set_timeout(Some(smoltcp::time::Duration::from_millis(self.params.timeout_ms)));
            add(&eg.counters.pub_tcp_opened, 1);
        }
        let c = eg.counters;
        let bytes = if self.inbound { (&c.pub_bytes_out, &c.pub_bytes_in) } else { (&c.bytes_to_host, &c.bytes_from_host) };
        if let Err(e) = pump(&mut self.host, s, bytes, &mut self.container_fin) {
            add(&eg.counters.tcp_reset_by_host, 1);
            let _ = e;
            reset_host(&mut self.host);
            s.abort();
        }
        for _ in 0..EGRESS_BURST {
            if iface.poll_egress(now, &mut Link { rx: None, eg: &mut eg }, sockets) == PollResult::None {
                break;
            }
        }
        let s = sockets.get_mut::<tcp::Socket>(*handle);
        note_fin(s.state(), &mut self.container_fin);
        if s.state() == tcp::State::TimeWait {
            self.time_wait_since.get_or_insert(ctx.now);
        }
    }

    fn host_failed(&mut self, _e: io::Error, ctx: &mut Ctx<'_>) {
        add(&ctx.counters.tcp_reset_by_host, 1);
        reset_host(&mut self.host);
        if let Stage::Open { sockets, handle, .. } = &mut self.stage {
            sockets.get_mut::<tcp::Socket>(*handle).abort();
        }
    }

    /// Whether both sides are done; closes the host socket as soon as its side is.
    fn finished(&mut self, ctx: &mut Ctx<'_>) -> bool {
        let over = self.time_wait_since.is_some_and(|t| ctx.now.saturating_sub(t) >= TIME_WAIT_MS);
        let Stage::Open { iface, sockets, handle } = &mut self.stage else {
            if matches!(self.stage, Stage::TimeWait) {
                if over {
                    add(&ctx.counters.tcp_closed, 1);
                }
                return over;
            }
            return self.host.sock.is_none();
        };
        let s = sockets.get_mut::<tcp::Socket>(*handle);
        let graceful = self.container_fin && self.host.eof;
        if self.host.eof && self.host.wr_shut {
            // Both directions finished on the host's side: nothing more to read or write there.
            self.host.sock = None;
        }
        match s.state() {
            tcp::State::Closed if graceful && s.can_recv() && self.host.sock.is_some() => false,
            tcp::State::Closed => {
                if self.host.sock.is_some() {
                    // The container reset the connection (or stopped answering): so do we, to the host.
                    if self.inbound && !self.answered {
                        add(&ctx.counters.pub_tcp_refused, 1);
                    } else {
                        add(&ctx.counters.tcp_reset_by_container, 1);
                    }
                    reset_host(&mut self.host);
                } else if graceful {
                    add(&ctx.counters.tcp_closed, 1);
                }
                true
            }
            tcp::State::TimeWait => {
                if self.host.sock.is_some() || s.can_recv() {
                    return false;
                }
                if over {
                    add(&ctx.counters.tcp_closed, 1);
                    return true;
                }
                // Once its last ACK is out (smoltcp delays it a little), nothing is left for the
                // socket but to ACK a FIN sent again: its next wake-up is then the end of its
                // own TIME-WAIT, seconds away.
                let now = instant(ctx.now);
                if iface.poll_at(now, sockets).is_none_or(|t| t >= now + smoltcp::time::Duration::from_secs(1)) {
                    // Its end is timed from here on (drive() has set it already).
                    self.time_wait_since.get_or_insert(ctx.now);
                    self.release_socket();
                }
                false
            }
            _ => false,
        }
    }
}

fn note_fin(state: tcp::State, fin: &mut bool) {
    if matches!(state, tcp::State::CloseWait | tcp::State::LastAck | tcp::State::Closing | tcp::State::TimeWait) {
        *fin = true;
    }
}

/// Closes the host socket with a RST (SO_LINGER 0).
fn reset_host(h: &mut Host) {
    if let Some(s) = h.sock.take() {
        let _ = s.set_linger(Some(Duration::ZERO));
    }
}

/// How many closed connections' smoltcp sockets an engine thread keeps for the next ones.
const SOCKET_POOL_MAX: usize = 16;
/// A socket whose connection carried more than this (both ways together) is freed, not pooled:
/// its send buffer's pages are resident as far as its data reached (a reused socket starts
/// writing at the beginning again), and the pool is to hold about `SOCKET_POOL_MAX` x (this +
/// `tcp_window`) of memory, not `SOCKET_POOL_MAX` x `tcp_buffer`. Short connections, which are what arrive thousands a second, stay under it.
const POOL_MOVED_MAX: u64 = 256 * 1024;

thread_local! {
    /// Closed connections' sockets. Each holds two buffers of `TcpParams::buffer` bytes that a
    /// fresh socket allocates: when glibc took them from its heap and zeroed them (256 KiB
    /// each then), that was a quarter of the engine thread's time at 5,000 new connections a
    /// second; mapped fresh, it is two mmaps, two munmaps and a page fault per page touched. smoltcp's `connect` and `listen` reset
    /// a closed socket whole (state, sequence numbers, timers, both buffers emptied), so a reused
    /// one carries nothing of its last connection: its buffers' old bytes are never read.
    static SOCKET_POOL: RefCell<Vec<tcp::Socket<'static>>> = const { RefCell::new(Vec::new()) };
}

/// Keeps a finished connection's socket, which carried `moved` bytes, for [`new_socket`]
/// (dropped when the pool is full or the socket's buffers hold too much memory).
fn recycle(mut s: tcp::Socket<'static>, moved: u64) {
    if moved > POOL_MOVED_MAX {
        return;
    }
    s.abort();
    // try_with: a connection dropped while the thread ends finds no pool, and frees its socket.
    let _ = SOCKET_POOL.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            if p.len() < SOCKET_POOL_MAX {
                p.push(s);
            }
        }
    });
}

fn new_socket(params: TcpParams) -> tcp::Socket<'static> {
    let fits = |s: &tcp::Socket<'static>| s.recv_capacity() == params.window && s.send_capacity() == params.buffer;
    let pooled = SOCKET_POOL
        .try_with(|p| {
            let mut p = p.try_borrow_mut().ok()?;
            let i = p.iter().position(fits)?;
            Some(p.swap_remove(i))
        })
        .ok()
        .flatten();
    let mut s = pooled.unwrap_or_else(|| {
        tcp::Socket::new(
            tcp::SocketBuffer::new(sys::small_page_buffer(params.window)),
            tcp::SocketBuffer::new(sys::small_page_buffer(params.buffer)),
        )
    });
    // Data read from the host is written whole already; holding a tail back for an ACK only adds latency.
    s.set_nagle_enabled(false);
    s.set_timeout(Some(smoltcp::time::Duration::from_millis(params.timeout_ms)));
    s
}

/// Moves bytes between the host socket and smoltcp's buffers, as far as both sides take them,
/// counting them on `bytes` (to the host, from the host). Err on a host error (the caller resets
/// both sides).
fn pump(h: &mut Host, s: &mut tcp::Socket<'_>, bytes: (&AtomicU64, &AtomicU64), container_fin: &mut bool) -> io::Result<()> {
    let Some(sock) = &h.sock else { return Ok(()) };
    // Container → host, straight from smoltcp's receive buffer.
    while h.writable && s.can_recv() {
        let r = s.recv(|b| match sock.send_with_flags(b, libc::MSG_NOSIGNAL) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        });
        match r {
            Ok(Ok(n)) => {
                add(bytes.0, n as u64);
                h.moved += n as u64;
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => h.writable = false,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => break,
        }
    }
    note_fin(s.state(), container_fin);
    if *container_fin && !s.can_recv() && !h.wr_shut {
        // Everything the container sent before its FIN is with the host now.
        let _ = sock.shutdown(std::net::Shutdown::Write);
        h.wr_shut = true;
    }
    // Host → container, straight into smoltcp's send buffer, while it has room.
    while h.readable && !h.eof && s.can_send() {
        let r = s.send(|b| {
            if b.is_empty() {
                return (0, Ok(None));
            }
            match (&*sock).read(b) {
                Ok(n) => (n, Ok(Some(n))),
                Err(e) => (0, Err(e)),
            }
        });
        match r {
            Ok(Ok(None)) | Err(_) => break,
            Ok(Ok(Some(0))) => {
                h.eof = true;
                // A FIN after whatever is still buffered.
                s.close();
            }
            Ok(Ok(Some(n))) => {
                add(bytes.1, n as u64);
                h.moved += n as u64;
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => h.readable = false,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
        }
    }
    Ok(())
}

/// An interface for one connection (or for refusing): its only address `addr`, any destination
/// accepted, every container reached through it.
fn new_iface(dev: &mut Link<'_, '_, '_>, addr: IpAddress, now: u64) -> Interface {
    use std::hash::BuildHasher;
    let mut cfg = Config::new(HardwareAddress::Ip);
    // Initial sequence numbers come from this seed; an off-path host must not guess them (RFC 6528).
    cfg.random_seed = std::collections::hash_map::RandomState::new().hash_one(now);
    let mut iface = Interface::new(cfg, dev, instant(now));
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(addr, if addr.version() == smoltcp::wire::IpVersion::Ipv4 { 32 } else { 128 }));
    });
    // smoltcp sends only where it has a route; with Medium::Ip any route will do.
    match addr {
        IpAddress::Ipv4(a) => {
            let _ = iface.routes_mut().add_default_ipv4_route(a);
        }
        IpAddress::Ipv6(a) => {
            let _ = iface.routes_mut().add_default_ipv6_route(a);
        }
    }
    iface.set_any_ip(true);
    iface
}

/// An interface with no sockets: smoltcp answers every segment fed to it (but a RST) with a
/// RST, which is how SYNs to refused, failed or over-limit connections and segments of unknown
/// connections are answered.
pub(crate) struct Refuser {
    v4: Interface,
    v6: Interface,
    sockets: SocketSet<'static>,
}

impl std::fmt::Debug for Refuser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refuser")
    }
}

impl Refuser {
    pub(crate) fn new(ctx: &mut Ctx<'_>) -> Self {
        let dest = Dest { via: Via::Port(0), mac: vswitch_switch::Mac::default(), gw_mac: vswitch_switch::Mac::default(), mtu: MAX_IP };
        let now = ctx.now;
        let mut eg = Egress::new(ctx, dest, MAX_IP);
        // Documentation addresses: any_ip makes the interface answer for every destination anyway.
        let v4 = new_iface(&mut Link { rx: None, eg: &mut eg }, IpAddress::v4(192, 0, 2, 1), now);
        let v6 = new_iface(&mut Link { rx: None, eg: &mut eg }, IpAddress::v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), now);
        Refuser { v4, v6, sockets: SocketSet::new(Vec::new()) }
    }

    /// Answers the TCP segment `ip` (an IP packet) with a RST to `dest`, unless it is a RST.
    pub(crate) fn refuse(&mut self, ip: &[u8], dest: Dest, ctx: &mut Ctx<'_>) {
        let iface = if ip.first().is_some_and(|b| b >> 4 == 6) { &mut self.v6 } else { &mut self.v4 };
        let now = instant(ctx.now);
        let mut eg = Egress::new(ctx, dest, MAX_IP);
        let _ = iface.poll_ingress_single(now, &mut Link { rx: Some(ip), eg: &mut eg }, &mut self.sockets);
    }
}

/// Where smoltcp's packets go: wrapped into frames to one container and handed to the FrameIo.
struct Egress<'c, 'a> {
    io: &'a dyn FrameIo,
    counters: &'a Counters,
    buf: &'c mut Vec<u8>,
    sent: &'c mut SentLog,
    dest: Dest,
    mss: usize,
}

impl<'c, 'a> Egress<'c, 'a> {
    fn new(ctx: &'c mut Ctx<'a>, dest: Dest, mss: usize) -> Self {
        if ctx.buf.len() < FRAME_HDRS + MAX_IP {
            ctx.buf.resize(FRAME_HDRS + MAX_IP, 0);
        }
        Egress { io: ctx.io, counters: ctx.counters, buf: ctx.buf, sent: ctx.sent, dest, mss }
    }

    /// Frames the IP packet of `len` bytes smoltcp wrote at `buf[FRAME_HDRS..]` and sends it.
    fn send(&mut self, len: usize) {
        let (hdrs, rest) = self.buf.split_at_mut(FRAME_HDRS);
        let ip = &mut rest[..len];
        let Some(&first) = ip.first() else { return };
        let v6 = first >> 4 == 6;
        let ihl = if v6 { IPV6_HDR_LEN } else { usize::from(first & 0x0f) * 4 };
        let Some(&doff) = ip.get(ihl + 12) else { return };
        let doff = usize::from(doff >> 4) * 4;
        if doff < 20 || ihl + doff > len {
            return;
        }
        let (src, dst) = if v6 {
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&ip[8..24]);
            d.copy_from_slice(&ip[24..40]);
            (IpAddr::from(s), IpAddr::from(d))
        } else {
            (IpAddr::from([ip[12], ip[13], ip[14], ip[15]]), IpAddr::from([ip[16], ip[17], ip[18], ip[19]]))
        };
        let tcp_len = len - ihl;
        let payload = tcp_len - doff;
        let flags = ip[ihl + 13];
        // Options repeat in every segment and count against the container's MSS.
        let seg = self.mss.min(self.dest.mtu.saturating_sub(ihl + 20)).saturating_sub(doff - 20);
        ip[ihl + 16..ihl + 18].fill(0);
        frame::write_link(hdrs, &self.dest, v6);
        let vnet = &mut hdrs[..FRAME_HDRS - ETH_HDR_LEN];
        if payload > seg && seg >= 8 {
            let c = frame::fold(frame::pseudo(src, dst, frame::PROTO_TCP, tcp_len));
            ip[ihl + 16..ihl + 18].copy_from_slice(&c.to_be_bytes());
            vnet[0] = VNET_F_NEEDS_CSUM;
            vnet[1] = if v6 { GSO_TCPV6 } else { GSO_TCPV4 };
            vnet[2..4].copy_from_slice(&((ETH_HDR_LEN + ihl + doff) as u16).to_le_bytes());
            vnet[4..6].copy_from_slice(&(seg as u16).to_le_bytes());
            vnet[6..8].copy_from_slice(&((ETH_HDR_LEN + ihl) as u16).to_le_bytes());
            vnet[8..10].copy_from_slice(&16u16.to_le_bytes());
        } else {
            let c = !frame::fold(frame::sum(&ip[ihl..], frame::pseudo(src, dst, frame::PROTO_TCP, tcp_len)));
            ip[ihl + 16..ihl + 18].copy_from_slice(&c.to_be_bytes());
        }
        if self.dest.send(self.io, &self.buf[..FRAME_HDRS + len]) {
            add(&self.counters.frames_out, 1);
        } else {
            add(&self.counters.tx_failed, 1);
        }
        self.sent.push((flags, len as u32));
    }
}

/// The device smoltcp talks to: at most one received IP packet, and the way out.
struct Link<'e, 'c, 'a> {
    rx: Option<&'e [u8]>,
    eg: &'e mut Egress<'c, 'a>,
}

struct Rx<'e>(&'e [u8]);
struct Tx<'e, 'c, 'a>(&'e mut Egress<'c, 'a>);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for Tx<'_, '_, '_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(MAX_IP);
        let r = f(&mut self.0.buf[FRAME_HDRS..FRAME_HDRS + len]);
        self.0.send(len);
        r
    }
}

impl<'c, 'a> Device for Link<'_, 'c, 'a> {
    type RxToken<'b>
        = Rx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b, 'c, 'a>
    where
        Self: 'b;

    fn receive(&mut self, _: Instant) -> Option<(Rx<'_>, Tx<'_, 'c, 'a>)> {
        let p = self.rx.take()?;
        Some((Rx(p), Tx(&mut *self.eg)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_, 'c, 'a>> {
        Some(Tx(&mut *self.eg))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        // Whole 64 KB segments both ways; segmentation to the container's MSS is the kernel's (GSO).
        caps.max_transmission_unit = MAX_IP;
        let mut sums = ChecksumCapabilities::default();
        // Verified (partial ones excepted) before smoltcp sees a frame, and filled in by Egress::send.
        sums.tcp = Checksum::None;
        caps.checksum = sums;
        caps
    }
}

#[cfg(test)]
mod pool_tests {
    use super::*;

    fn pooled() -> usize {
        SOCKET_POOL.with(|p| p.borrow().len())
    }

    #[test]
    fn only_short_connections_sockets_are_pooled_and_reused() {
        let params = TcpParams { buffer: 64 * 1024, window: 32 * 1024, timeout_ms: 1000 };
        assert_eq!(pooled(), 0, "each test thread starts with an empty pool");
        recycle(new_socket(params), POOL_MOVED_MAX);
        assert_eq!(pooled(), 1, "a connection that moved little gives its socket back");
        recycle(new_socket(params), POOL_MOVED_MAX + 1);
        assert_eq!(pooled(), 0, "the pooled socket was taken; a busy connection's is freed, not pooled");
        recycle(new_socket(params), 0);
        let other = TcpParams { buffer: 128 * 1024, ..params };
        let s = new_socket(other);
        assert_eq!((s.send_capacity(), pooled()), (128 * 1024, 1), "a socket of another size is not taken");
        for _ in 0..SOCKET_POOL_MAX + 4 {
            recycle(new_socket(other), 1);
        }
        assert_eq!(pooled(), 2, "one socket in, one out: the pool never passes its size");
        let many: Vec<_> = (0..SOCKET_POOL_MAX + 4).map(|_| new_socket(params)).collect();
        for s in many {
            recycle(s, 1);
        }
        assert_eq!(pooled(), SOCKET_POOL_MAX);
    }

    #[test]
    fn large_buffers_are_advised_off_huge_pages() {
        let v = sys::small_page_buffer(4 << 20);
        let at = v.as_ptr() as usize + (2 << 20);
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = smaps.lines();
        let mut flags = None;
        while let Some(l) = lines.next() {
            let Some((range, _)) = l.split_once(' ') else { continue };
            let Some((a, b)) = range.split_once('-') else { continue };
            let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else { continue };
            if (a..b).contains(&at) {
                flags = lines.by_ref().find_map(|l| l.strip_prefix("VmFlags:").map(str::to_string));
                break;
            }
        }
        let flags = flags.expect("the buffer's mapping is in /proc/self/smaps");
        assert!(flags.split_whitespace().any(|f| f == "nh"), "no MADV_NOHUGEPAGE on the buffer: {flags}");
    }
}
