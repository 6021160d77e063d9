//! UDP load generators: a sendmmsg blaster, a recvmmsg sink that counts, and a ping-pong pair.
//!
//! Every datagram starts with a 16-byte stamp: the magic `VSWB`, a run id (so a sink counts
//! only its own run's datagrams, never a warm-up's or a stray's) and a sequence number. All
//! loops are bounded by time; sockets carry timeouts so no call blocks past a deadline.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Datagrams per sendmmsg / recvmmsg call.
pub const BATCH: usize = 64;
/// The stamp every datagram starts with.
pub const MAGIC: [u8; 4] = *b"VSWB";
/// Bytes of the stamp: magic, run id (u32), sequence (u64).
pub const STAMP_LEN: usize = 16;
/// How long one blocking socket call may wait before the loop checks its deadline again.
const TICK: Duration = Duration::from_millis(50);
/// Upper bound on the datagrams one blast sends (and one echo server answers), whatever the
/// duration: about 30 s at the fastest rate a 2-core VM reaches.
pub const MAX_DATAGRAMS: u64 = 20_000_000;
/// Largest datagram a sink reads (longer ones are truncated, and still counted).
const RX_BUF: usize = 2048;

fn stamp(buf: &mut [u8], run: u32, seq: u64) {
    buf[..4].copy_from_slice(&MAGIC);
    buf[4..8].copy_from_slice(&run.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
}

/// The sequence number of a datagram of run `run`, if it is one.
fn parse_stamp(buf: &[u8], run: u32) -> Option<u64> {
    if buf.len() < STAMP_LEN || buf[..4] != MAGIC || buf[4..8] != run.to_le_bytes() {
        return None;
    }
    Some(u64::from_le_bytes(buf[8..16].try_into().ok()?))
}

/// What a blaster is told to do.
#[derive(Debug, Clone)]
pub struct BlastConfig {
    pub dst: SocketAddr,
    /// UDP payload bytes (at least [`STAMP_LEN`]).
    pub payload: usize,
    pub duration: Duration,
    /// Datagrams per second to offer; 0 sends as fast as the socket takes them.
    pub rate_pps: u64,
    pub run: u32,
}

/// What a blaster did.
#[derive(Debug, Clone, Copy, Default)]
pub struct BlastResult {
    /// Datagrams the kernel accepted.
    pub sent: u64,
    pub elapsed: Duration,
    /// sendmmsg calls that failed (ENOBUFS, ECONNREFUSED from an earlier ICMP error…).
    pub errors: u64,
}

impl BlastResult {
    pub fn pps(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Sends `cfg.payload`-byte datagrams to `cfg.dst` in batches of [`BATCH`] with sendmmsg for
/// `cfg.duration` (and at most [`MAX_DATAGRAMS`]). Sends a few warm-up datagrams under another run id first, and waits for
/// them, so that neighbour resolution and learning are done before the clock starts.
pub fn blast(cfg: &BlastConfig) -> io::Result<BlastResult> {
    let payload = cfg.payload.max(STAMP_LEN);
    let bind: SocketAddr = if cfg.dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().map_err(io::Error::other)?;
    let sock = UdpSocket::bind(bind)?;
    sock.connect(cfg.dst)?;
    sock.set_write_timeout(Some(TICK))?;
    let mut warm = vec![0u8; payload];
    for i in 0..8 {
        stamp(&mut warm, cfg.run.wrapping_add(1), i);
        let _ = sock.send(&warm);
        std::thread::sleep(Duration::from_millis(25));
    }

    let mut bufs = vec![0u8; payload * BATCH];
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let mut res = BlastResult::default();
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        if now >= deadline || res.sent >= MAX_DATAGRAMS {
            break;
        }
        if cfg.rate_pps > 0 {
            // Pace per batch: wait until this batch's scheduled start.
            let due = start + Duration::from_secs_f64(seq as f64 / cfg.rate_pps as f64);
            if due > now {
                std::thread::sleep((due - now).min(deadline - now));
                continue;
            }
        }
        for (i, chunk) in bufs.chunks_mut(payload).enumerate() {
            stamp(chunk, cfg.run, seq + i as u64);
        }
        match send_batch(&sock, &mut bufs, payload) {
            Ok(n) => {
                res.sent += n as u64;
                seq += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS) | Some(libc::ECONNREFUSED)) => res.errors += 1,
            Err(e) => return Err(e),
        }
    }
    res.elapsed = start.elapsed();
    Ok(res)
}

/// One sendmmsg of every `payload`-sized chunk of `bufs` on a connected socket; the number
/// of datagrams the kernel took.
fn send_batch(sock: &UdpSocket, bufs: &mut [u8], payload: usize) -> io::Result<usize> {
    let mut iov: Vec<libc::iovec> =
        bufs.chunks_mut(payload).map(|c| libc::iovec { iov_base: c.as_mut_ptr().cast(), iov_len: c.len() }).collect();
    let mut msgs: Vec<libc::mmsghdr> = iov.iter_mut().map(|v| mmsghdr(v, std::ptr::null_mut(), 0)).collect();
    // SAFETY: `msgs` holds `msgs.len()` initialised mmsghdr, each pointing at one iovec of `iov`
    // which points into `bufs`; all three outlive the call and are not otherwise accessed
    // during it. No address (connected socket) and no control data are passed.
    let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as libc::c_uint, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

pub(crate) fn mmsghdr(iov: &mut libc::iovec, name: *mut libc::c_void, namelen: libc::socklen_t) -> libc::mmsghdr {
    // SAFETY: msghdr is plain data for the kernel (pointers and integers; musl's has private
    // padding fields, so it cannot be written as a literal): all zeroes is a valid empty one.
    let mut msg_hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    msg_hdr.msg_name = name;
    msg_hdr.msg_namelen = namelen;
    msg_hdr.msg_iov = iov;
    msg_hdr.msg_iovlen = 1;
    libc::mmsghdr { msg_hdr, msg_len: 0 }
}

/// What a sink counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct SinkResult {
    /// Datagrams of this run.
    pub received: u64,
    /// Datagrams of other runs or without a stamp (warm-up, strays).
    pub other: u64,
    /// From the first to the last datagram of this run.
    pub span: Duration,
    /// Highest sequence number seen + 1 (to spot reordering or duplicates against `received`).
    pub highest: u64,
}

impl SinkResult {
    pub fn pps(&self) -> f64 {
        if self.received < 2 {
            return 0.0;
        }
        // n datagrams span n-1 gaps.
        (self.received - 1) as f64 / self.span.as_secs_f64().max(1e-9)
    }
}

/// Counts run `run`'s datagrams on `sock` with recvmmsg until `stop` is set (then drains
/// what is queued) or `deadline` passes.
pub fn sink(sock: &UdpSocket, run: u32, stop: &AtomicBool, deadline: Instant) -> io::Result<SinkResult> {
    sock.set_read_timeout(Some(TICK))?;
    let mut bufs = vec![0u8; RX_BUF * BATCH];
    let mut res = SinkResult::default();
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    loop {
        if Instant::now() >= deadline {
            break;
        }
        let n = match recv_batch(sock, &mut bufs, RX_BUF) {
            Ok(lens) => {
                let now = Instant::now();
                let mut mine = 0u64;
                for (chunk, &len) in bufs.chunks(RX_BUF).zip(lens.iter()) {
                    match parse_stamp(&chunk[..len.min(RX_BUF)], run) {
                        Some(seq) => {
                            mine += 1;
                            res.highest = res.highest.max(seq + 1);
                        }
                        None => res.other += 1,
                    }
                }
                if mine > 0 {
                    first.get_or_insert(now);
                    last = now;
                    res.received += mine;
                }
                lens.len()
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        // Stop once told to and nothing more is queued.
        if n == 0 && stop.load(Ordering::Acquire) {
            break;
        }
    }
    if let Some(f) = first {
        res.span = last - f;
    }
    Ok(res)
}

/// One recvmmsg into `chunk`-sized slots of `bufs`: waits (up to the socket's read timeout) for
/// the first datagram, then takes what is queued. The lengths of the datagrams received.
fn recv_batch(sock: &UdpSocket, bufs: &mut [u8], chunk: usize) -> io::Result<Vec<usize>> {
    let mut iov: Vec<libc::iovec> =
        bufs.chunks_mut(chunk).map(|c| libc::iovec { iov_base: c.as_mut_ptr().cast(), iov_len: c.len() }).collect();
    let mut msgs: Vec<libc::mmsghdr> = iov.iter_mut().map(|v| mmsghdr(v, std::ptr::null_mut(), 0)).collect();
    // SAFETY: `msgs` holds `msgs.len()` initialised mmsghdr, each pointing at one iovec of `iov`
    // which points at a distinct `chunk`-byte slot of `bufs`; the kernel writes at most
    // `iov_len` bytes into each. All outlive the call. No address or control buffers are
    // passed, and a null timeout means "use the socket's SO_RCVTIMEO".
    let n = unsafe {
        libc::recvmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as libc::c_uint, libc::MSG_WAITFORONE as _, std::ptr::null_mut())
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(msgs[..n as usize].iter().map(|m| m.msg_len as usize).collect())
}

/// Answers every datagram on `sock` with the same bytes until `stop` is set or `deadline`
/// passes; returns how many it answered.
pub fn echo(sock: &UdpSocket, stop: &AtomicBool, deadline: Instant) -> io::Result<u64> {
    sock.set_read_timeout(Some(TICK))?;
    sock.set_write_timeout(Some(TICK))?;
    let mut buf = [0u8; RX_BUF];
    let mut n = 0;
    while !stop.load(Ordering::Acquire) && Instant::now() < deadline && n < MAX_DATAGRAMS {
        match sock.recv_from(&mut buf) {
            Ok((len, from)) => {
                if sock.send_to(&buf[..len], from).is_ok() {
                    n += 1;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Round trips measured by [`ping`].
#[derive(Debug, Clone, Default)]
pub struct PingResult {
    /// Round-trip times in nanoseconds, in the order measured.
    pub rtt_ns: Vec<u64>,
    /// Pings without an answer within the timeout.
    pub lost: u64,
}

/// Sends one `payload`-byte datagram at a time to `dst` and waits for its echo, `count` times
/// or until `max_time` has passed. A ping unanswered for `timeout` counts as lost; a late
/// answer to an earlier ping is skipped.
pub fn ping(dst: SocketAddr, payload: usize, count: u64, max_time: Duration, timeout: Duration, run: u32) -> io::Result<PingResult> {
    let bind: SocketAddr = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().map_err(io::Error::other)?;
    let sock = UdpSocket::bind(bind)?;
    sock.connect(dst)?;
    sock.set_write_timeout(Some(TICK))?;
    sock.set_read_timeout(Some(timeout))?;
    let mut out = vec![0u8; payload.max(STAMP_LEN)];
    let mut inb = [0u8; RX_BUF];
    let mut res = PingResult { rtt_ns: Vec::with_capacity(count.min(1 << 20) as usize), lost: 0 };
    let deadline = Instant::now() + max_time;
    // Warm-up: resolve neighbours and let the switch learn, outside the measurement.
    for i in 0..3 {
        stamp(&mut out, run.wrapping_add(1), i);
        let _ = sock.send(&out);
        let _ = sock.recv(&mut inb);
    }
    sock.set_read_timeout(Some(timeout))?;
    for seq in 0..count {
        if Instant::now() >= deadline {
            break;
        }
        stamp(&mut out, run, seq);
        let t0 = Instant::now();
        if let Err(e) = sock.send(&out) {
            if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ECONNREFUSED) {
                res.lost += 1;
                continue;
            }
            return Err(e);
        }
        loop {
            match sock.recv(&mut inb) {
                Ok(len) => {
                    if parse_stamp(&inb[..len], run) == Some(seq) {
                        res.rtt_ns.push(t0.elapsed().as_nanos() as u64);
                        break;
                    }
                    if t0.elapsed() >= timeout {
                        res.lost += 1;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    res.lost += 1;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn stamps_round_trip_and_other_runs_are_ignored() {
        let mut b = [0u8; 64];
        stamp(&mut b, 7, 42);
        assert_eq!(parse_stamp(&b, 7), Some(42));
        assert_eq!(parse_stamp(&b, 8), None);
        assert_eq!(parse_stamp(&b[..15], 7), None);
    }

    #[test]
    fn blast_and_sink_over_loopback() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = rx.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let sink_t = std::thread::spawn(move || sink(&rx, 5, &s2, Instant::now() + Duration::from_secs(10)));
        let cfg = BlastConfig { dst, payload: 64, duration: Duration::from_millis(200), rate_pps: 50_000, run: 5 };
        let tx = blast(&cfg).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Release);
        let got = sink_t.join().unwrap().unwrap();
        assert!(tx.sent > 1000, "{tx:?}");
        assert!(got.received <= tx.sent && got.received * 10 >= tx.sent * 9, "{got:?} vs {tx:?}");
        assert_eq!(got.other, 8, "the warm-up datagrams are not counted");
        // Paced at 50 kpps for 200 ms: ~10k datagrams, to within a batch or so.
        assert!(tx.sent <= 10_000 + BATCH as u64 * 2, "{tx:?}");
    }

    #[test]
    fn ping_pong_over_loopback() {
        let srv = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = srv.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let echo_t = std::thread::spawn(move || echo(&srv, &s2, Instant::now() + Duration::from_secs(10)));
        let r = ping(dst, 64, 500, Duration::from_secs(5), Duration::from_millis(200), 9).unwrap();
        stop.store(true, Ordering::Release);
        let echoed = echo_t.join().unwrap().unwrap();
        assert_eq!(r.rtt_ns.len() as u64 + r.lost, 500);
        assert!(r.lost <= 5, "{}", r.lost);
        assert!(echoed >= 500);
    }
}
