//! A DNS load generator over UDP: many queries in flight on several sockets, replies matched by id, latencies in a histogram.
//!
//! One thread drives every socket. It keeps `window` queries outstanding on each (sendmmsg to
//! refill, recvmmsg to drain, both non-blocking) and sleeps in poll(2) only when it can neither
//! send nor read, so that at a closed-loop window it costs the server as little CPU as it can
//! on a 2-core machine. A reply counts when its id belongs to a query in flight on that socket
//! and its question is that query's (a late answer to an id since reused is a stray, not a
//! match). A query unanswered after `timeout` is lost and its id freed. The run is bounded in
//! time and in queries, and it drains what is in flight (at most `timeout`) before returning.
//!
//! Queries are A queries with RD set and no EDNS, built once per name with hickory-proto; each
//! send copies the name's template and writes a fresh id.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::cpu::{Probe, Usage};
use crate::udp::mmsghdr;

/// Queries per sendmmsg, replies per recvmmsg.
const BATCH: usize = 64;
/// Room for one query: a name takes at most 255 bytes on the wire, plus header and question.
const MAX_QUERY: usize = 512;
/// Room for one reply; an A answer to one of our queries takes under 100 bytes.
const MAX_REPLY: usize = 1024;
/// The DNS header: id, flags, four counts.
const HEADER: usize = 12;
/// Longest the idle wait sleeps before looking at the clock again.
const IDLE_WAIT_MS: i32 = 10;

/// What one load run does.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub server: SocketAddr,
    /// Names asked, in turn (A queries).
    pub names: Vec<String>,
    pub sockets: usize,
    /// Queries outstanding per socket.
    pub window: usize,
    /// Untimed load before the measured window, so that the server is in its steady state.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Queries unanswered this long are lost.
    pub timeout: Duration,
    /// Upper bound on the queries sent, whatever the duration.
    pub max_queries: u64,
    /// The server process, whose CPU use over the measured window is reported.
    pub watch_pid: Option<u32>,
}

/// What one load run measured. Counts are of queries sent in the measured window.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub sent: u64,
    /// Answered NOERROR with at least one answer record and the TC bit clear.
    pub answered: u64,
    /// Answered otherwise: another rcode, no answer record, truncated.
    pub errors: u64,
    /// Unanswered within the timeout.
    pub lost: u64,
    /// Datagrams that matched no query in flight (late answers, duplicates, noise).
    pub strays: u64,
    /// Good answers received inside the measured window, whenever their query was sent: the rate.
    pub answered_in_window: u64,
    pub window: Duration,
    /// Latency of every answered query.
    pub latency: Histogram,
    /// CPU of the load generator's thread over the measured window, percent of one core.
    pub client_cpu_pct: f64,
    /// The watched process's and the machine's CPU over the window.
    pub usage: Usage,
}

impl LoadResult {
    /// Good answers per second over the measured window.
    pub fn qps(&self) -> f64 {
        self.answered_in_window as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

/// An A query for `name` (made absolute) with id `id` and RD set.
pub fn a_query(name: &str, id: u16) -> io::Result<Vec<u8>> {
    let fqdn = if name.ends_with('.') { name.to_string() } else { format!("{name}.") };
    // from_ascii keeps the name as written (parse() maps it through IDNA).
    let name = Name::from_ascii(&fqdn).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("name {fqdn:?}: {e}")))?;
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name, RecordType::A));
    let v = m.to_vec().map_err(|e| io::Error::other(format!("cannot encode a query for {fqdn:?}: {e}")))?;
    if v.len() > MAX_QUERY {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("name {fqdn:?} is too long")));
    }
    Ok(v)
}

/// A reply as the checks before a run see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub addrs: Vec<Ipv4Addr>,
    /// The smallest TTL of the A records.
    pub min_ttl: Option<u32>,
}

/// Decodes a reply with hickory-proto.
pub fn parse_answer(buf: &[u8]) -> io::Result<Answer> {
    let m = Message::from_vec(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("undecodable reply: {e}")))?;
    let a: Vec<(Ipv4Addr, u32)> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some((a.0, r.ttl)),
            _ => None,
        })
        .collect();
    Ok(Answer { rcode: m.metadata.response_code, addrs: a.iter().map(|x| x.0).collect(), min_ttl: a.iter().map(|x| x.1).min() })
}

/// Asks `server` for `name`'s A records, one query at a time, until one is answered or `within`
/// has passed (the server may still be starting); the answer.
pub fn resolve(server: SocketAddr, name: &str, within: Duration) -> io::Result<Answer> {
    let sock = UdpSocket::bind(unspecified(server))?;
    sock.connect(server)?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let deadline = Instant::now() + within;
    let mut id: u16 = 0x5a00;
    let mut buf = [0u8; MAX_REPLY];
    let mut last_err = None;
    while Instant::now() < deadline {
        id = id.wrapping_add(1);
        let q = a_query(name, id)?;
        if let Err(e) = sock.send(&q) {
            // ECONNREFUSED from an earlier query's ICMP error: nothing listens yet.
            last_err = Some(e);
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        loop {
            match sock.recv(&mut buf) {
                Ok(n) if n >= HEADER && buf[..2] == id.to_be_bytes() => return parse_answer(&buf[..n]),
                Ok(_) => continue,
                Err(e) => {
                    last_err = Some(e);
                    break;
                }
            }
        }
        if last_err.as_ref().is_some_and(|e| e.raw_os_error() == Some(libc::ECONNREFUSED)) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no answer from {server} for {name} within {within:?}{}", last_err.map_or_else(String::new, |e| format!(" (last: {e})"))),
    ))
}

fn unspecified(server: SocketAddr) -> SocketAddr {
    if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    }
}

/// Latencies in nanoseconds, in log-linear buckets: exact below 64 ns, then 64 buckets per
/// power of two (at most 1.6% wide), so any percentile is within 1.6% of the truth.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum_ns: u128,
    max_ns: u64,
}

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;

impl Default for Histogram {
    fn default() -> Self {
        Self { counts: vec![0; ((64 - SUB_BITS as usize) + 1) * SUB as usize], total: 0, sum_ns: 0, max_ns: 0 }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The summary, not the thousands of buckets.
        f.debug_struct("Histogram")
            .field("count", &self.total)
            .field("p50_ns", &self.quantile_ns(0.5))
            .field("p99_ns", &self.quantile_ns(0.99))
            .field("max_ns", &self.max_ns())
            .finish()
    }
}

impl Histogram {
    fn index(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let e = 63 - v.leading_zeros(); // v's highest bit, at least SUB_BITS
        let sub = (v >> (e - SUB_BITS)) & (SUB - 1);
        (((e - SUB_BITS + 1) as u64) << SUB_BITS | sub) as usize
    }

    /// The lowest value and the width of bucket `i`.
    fn bucket(i: usize) -> (u64, u64) {
        let i = i as u64;
        if i < SUB {
            return (i, 1);
        }
        let shift = (i >> SUB_BITS) - 1;
        ((SUB + (i & (SUB - 1))) << shift, 1 << shift)
    }

    pub fn record(&mut self, ns: u64) {
        self.counts[Self::index(ns)] += 1;
        self.total += 1;
        self.sum_ns += u128::from(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn mean_ns(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum_ns as f64 / self.total as f64)
    }

    pub fn max_ns(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max_ns)
    }

    /// The `p` quantile (0..=1): the middle of the bucket holding the value of that rank.
    pub fn quantile_ns(&self, p: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, w) = Self::bucket(i);
                return Some(lo as f64 + (w - 1) as f64 / 2.0);
            }
        }
        Some(self.max_ns as f64)
    }
}

/// A query in flight, by id.
#[derive(Debug, Clone, Copy)]
struct Pending {
    sent: Instant,
    name: u32,
    /// Which use of this id this is: the FIFO of timeouts refers to one use only.
    generation: u32,
    /// Sent inside the measured window.
    counted: bool,
}

/// One socket and its queries in flight.
struct Flow {
    sock: UdpSocket,
    slots: Vec<Option<Pending>>,
    generations: Vec<u32>,
    /// (id, generation) in the order sent: the oldest is the next to time out.
    fifo: VecDeque<(u16, u32)>,
    in_flight: usize,
    next_id: u16,
    tx: Vec<u8>,
    rx: Vec<u8>,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow").field("in_flight", &self.in_flight).finish()
    }
}

/// Phase of a run, from the clock.
struct Clock {
    measure_from: Instant,
    stop_at: Instant,
}

/// Runs `cfg`: load for `warmup`, measured load for `duration`, then drains what is in flight.
pub fn run(cfg: &LoadConfig) -> io::Result<LoadResult> {
    if cfg.names.is_empty() || cfg.sockets == 0 || cfg.window == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "a DNS load needs names, sockets and a window"));
    }
    let window = cfg.window.min(32_768);
    let templates: Vec<Vec<u8>> = cfg.names.iter().map(|n| a_query(n, 0)).collect::<io::Result<_>>()?;
    let mut flows = Vec::with_capacity(cfg.sockets);
    for i in 0..cfg.sockets {
        let sock = UdpSocket::bind(unspecified(cfg.server))?;
        sock.connect(cfg.server)?;
        sock.set_nonblocking(true)?;
        flows.push(Flow {
            sock,
            slots: vec![None; 1 << 16],
            generations: vec![0; 1 << 16],
            fifo: VecDeque::with_capacity(window),
            in_flight: 0,
            // Spread the sockets' ids so that a reply on the wrong socket is a stray.
            next_id: (i as u16).wrapping_mul(0x2c1b),
            tx: vec![0u8; MAX_QUERY * BATCH],
            rx: vec![0u8; MAX_REPLY * BATCH],
        });
    }
    let start = Instant::now();
    let mut clock = Clock { measure_from: start + cfg.warmup, stop_at: start + cfg.warmup + cfg.duration };
    let mut res = LoadResult::default();
    // Opened once when the measured window starts, closed once when sending stops.
    let mut probe = None;
    let mut window_closed = false;
    let mut cpu_at_window: Option<u64> = None;
    let mut next_name = 0usize;
    let mut total_sent = 0u64;
    loop {
        let now = Instant::now();
        let sending = now < clock.stop_at && total_sent < cfg.max_queries;
        if !sending && now < clock.stop_at {
            // Stopped by max_queries: the window ends here, for the rate and for what counts.
            clock.stop_at = now.max(clock.measure_from);
        }
        if sending && probe.is_none() && !window_closed && now >= clock.measure_from {
            probe = Some(Probe::start(cfg.watch_pid));
            cpu_at_window = thread_cpu_ns();
        }
        let mut progress = false;
        for f in &mut flows {
            progress |= receive(f, &templates, &clock, &mut res)? > 0;
            expire(f, now, cfg.timeout, &mut res);
            if sending && f.in_flight < window {
                let n = send(f, &templates, window, &mut next_name, &clock, &mut res)?;
                total_sent += n as u64;
                progress |= n > 0;
            }
        }
        if !sending {
            if let Some(p) = probe.take() {
                // The measured window ends when sending does.
                window_closed = true;
                res.usage = p.finish();
                res.window = clock.stop_at.saturating_duration_since(clock.measure_from);
                res.client_cpu_pct = match (cpu_at_window, thread_cpu_ns()) {
                    (Some(a), Some(b)) => b.saturating_sub(a) as f64 / res.window.as_nanos().max(1) as f64 * 100.0,
                    _ => f64::NAN,
                };
            }
            let in_flight: usize = flows.iter().map(|f| f.in_flight).sum();
            if in_flight == 0 || now >= clock.stop_at + cfg.timeout {
                break;
            }
        }
        if !progress {
            wait_readable(&flows, IDLE_WAIT_MS)?;
        }
    }
    // Whatever is still in flight after the drain is lost.
    for f in &mut flows {
        for slot in f.slots.iter_mut() {
            if let Some(p) = slot.take() {
                if p.counted {
                    res.lost += 1;
                }
            }
        }
    }
    if res.window.is_zero() {
        // Stopped by max_queries before the window opened.
        res.window = Duration::from_nanos(1);
    }
    Ok(res)
}

/// Drains every reply queued on `f`'s socket; how many datagrams were read.
fn receive(f: &mut Flow, templates: &[Vec<u8>], clock: &Clock, res: &mut LoadResult) -> io::Result<usize> {
    let mut total = 0;
    loop {
        let lens = match recv_batch(&f.sock, &mut f.rx) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => return Ok(total),
            // An ICMP error from an earlier query (port unreachable while the server restarts):
            // its queries time out.
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => return Ok(total),
            Err(e) => return Err(e),
        };
        let now = Instant::now();
        for (i, &len) in lens.iter().enumerate() {
            let r = &f.rx[i * MAX_REPLY..i * MAX_REPLY + len.min(MAX_REPLY)];
            settle(&mut f.slots, &mut f.in_flight, r, templates, now, clock, res);
        }
        total += lens.len();
        if lens.len() < BATCH {
            return Ok(total);
        }
    }
}

/// Matches one reply to its query among a socket's `slots` and records it.
fn settle(
    slots: &mut [Option<Pending>],
    in_flight: &mut usize,
    r: &[u8],
    templates: &[Vec<u8>],
    now: Instant,
    clock: &Clock,
    res: &mut LoadResult,
) {
    if r.len() < HEADER || r[2] & 0x80 == 0 {
        res.strays += 1;
        return;
    }
    let id = u16::from_be_bytes([r[0], r[1]]);
    let Some(p) = slots[usize::from(id)] else {
        res.strays += 1;
        return;
    };
    // Our queries have one question and nothing after it: the reply must repeat it (case
    // aside, which servers may change: RFC 4343 asks them to keep it, 0x20 resolvers rely on it).
    let q = &templates[p.name as usize][HEADER..];
    if r.len() < HEADER + q.len() || !r[HEADER..HEADER + q.len()].eq_ignore_ascii_case(q) {
        res.strays += 1;
        return;
    }
    slots[usize::from(id)] = None;
    *in_flight -= 1;
    let rcode = r[3] & 0x0f;
    let answers = u16::from_be_bytes([r[6], r[7]]);
    let truncated = r[2] & 0x02 != 0;
    let good = rcode == 0 && answers > 0 && !truncated;
    if good && now >= clock.measure_from && now < clock.stop_at {
        res.answered_in_window += 1;
    }
    if !p.counted {
        return;
    }
    if good {
        res.answered += 1;
        res.latency.record(now.saturating_duration_since(p.sent).as_nanos() as u64);
    } else {
        res.errors += 1;
    }
}

/// Frees the ids of queries in flight longer than `timeout`, oldest first.
fn expire(f: &mut Flow, now: Instant, timeout: Duration, res: &mut LoadResult) {
    while let Some(&(id, generation)) = f.fifo.front() {
        match f.slots[usize::from(id)] {
            Some(p) if p.generation == generation => {
                if now.saturating_duration_since(p.sent) < timeout {
                    return;
                }
                f.slots[usize::from(id)] = None;
                f.in_flight -= 1;
                if p.counted {
                    res.lost += 1;
                }
            }
            // Answered, or the id is in use again by a later query (whose own entry is further on).
            _ => {}
        }
        f.fifo.pop_front();
    }
}

/// Fills `f`'s window with one sendmmsg; how many queries the kernel took.
fn send(
    f: &mut Flow,
    templates: &[Vec<u8>],
    window: usize,
    next_name: &mut usize,
    clock: &Clock,
    res: &mut LoadResult,
) -> io::Result<usize> {
    let want = (window - f.in_flight).min(BATCH);
    let mut batch: Vec<(u16, usize, usize)> = Vec::with_capacity(want); // (id, name, len)
    while batch.len() < want {
        let id = f.next_id;
        f.next_id = f.next_id.wrapping_add(1);
        if f.slots[usize::from(id)].is_some() {
            continue;
        }
        let name = *next_name % templates.len();
        *next_name = next_name.wrapping_add(1);
        let t = &templates[name];
        let slot = &mut f.tx[batch.len() * MAX_QUERY..batch.len() * MAX_QUERY + t.len()];
        slot.copy_from_slice(t);
        slot[..2].copy_from_slice(&id.to_be_bytes());
        batch.push((id, name, t.len()));
    }
    let lens: Vec<usize> = batch.iter().map(|b| b.2).collect();
    let n = match send_batch(&f.sock, &mut f.tx, &lens) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => 0,
        // ENOBUFS: a full queue, try again later; ECONNREFUSED: an ICMP error from an earlier
        // query, reported on this call instead of the datagram being sent.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS) | Some(libc::ECONNREFUSED)) => 0,
        Err(e) => return Err(e),
    };
    let now = Instant::now();
    let counted = now >= clock.measure_from && now < clock.stop_at;
    for &(id, name, _) in &batch[..n] {
        let g = &mut f.generations[usize::from(id)];
        *g = g.wrapping_add(1);
        f.slots[usize::from(id)] = Some(Pending { sent: now, name: name as u32, generation: *g, counted });
        f.fifo.push_back((id, *g));
    }
    f.in_flight += n;
    if counted {
        res.sent += n as u64;
    }
    Ok(n)
}

/// One sendmmsg of the first `lens.len()` `MAX_QUERY`-sized slots of `bufs`, each `lens[i]`
/// bytes long, on a connected socket.
fn send_batch(sock: &UdpSocket, bufs: &mut [u8], lens: &[usize]) -> io::Result<usize> {
    let mut iov: Vec<libc::iovec> = bufs
        .chunks_mut(MAX_QUERY)
        .zip(lens)
        .map(|(c, &len)| libc::iovec { iov_base: c.as_mut_ptr().cast(), iov_len: len.min(c.len()) })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iov.iter_mut().map(|v| mmsghdr(v, std::ptr::null_mut(), 0)).collect();
    // SAFETY: `msgs` holds `msgs.len()` initialised mmsghdr, each pointing at one iovec of `iov`
    // which points at most `MAX_QUERY` bytes into its own slot of `bufs`; all three outlive
    // the call and are not otherwise accessed during it. No address (connected socket), no
    // control data. MSG_DONTWAIT: the socket is non-blocking anyway.
    let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as libc::c_uint, libc::MSG_DONTWAIT as _) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One non-blocking recvmmsg into the `MAX_REPLY`-sized slots of `bufs`; the datagrams' lengths.
fn recv_batch(sock: &UdpSocket, bufs: &mut [u8]) -> io::Result<Vec<usize>> {
    let mut iov: Vec<libc::iovec> =
        bufs.chunks_mut(MAX_REPLY).map(|c| libc::iovec { iov_base: c.as_mut_ptr().cast(), iov_len: c.len() }).collect();
    let mut msgs: Vec<libc::mmsghdr> = iov.iter_mut().map(|v| mmsghdr(v, std::ptr::null_mut(), 0)).collect();
    // SAFETY: `msgs` holds `msgs.len()` initialised mmsghdr, each pointing at one iovec of `iov`
    // which points at a distinct `MAX_REPLY`-byte slot of `bufs`; the kernel writes at most
    // `iov_len` bytes into each. All outlive the call. No address or control buffers; the
    // timeout is null and MSG_DONTWAIT makes the call return at once when nothing is queued.
    let n = unsafe {
        libc::recvmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as libc::c_uint, libc::MSG_DONTWAIT as _, std::ptr::null_mut())
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(msgs[..n as usize].iter().map(|m| m.msg_len as usize).collect())
}

/// Sleeps until a socket has something to read, at most `ms` milliseconds.
fn wait_readable(flows: &[Flow], ms: i32) -> io::Result<()> {
    let mut fds: Vec<libc::pollfd> =
        flows.iter().map(|f| libc::pollfd { fd: f.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: `fds` holds `fds.len()` initialised pollfd for sockets owned by `flows`, which
    // outlive the call; poll writes only their `revents`.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// Nanoseconds the calling thread has run on a CPU. From CLOCK_THREAD_CPUTIME_ID, which
/// brings the running thread's own total up to date: on a tickless VM, /proc's schedstat of a
/// thread that has not been descheduled since the window opened can be seconds behind.
fn thread_cpu_ns() -> Option<u64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call; clock_gettime only
    // writes it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn histogram_buckets_are_contiguous_and_tight() {
        let mut prev_end = 0;
        for i in 0..Histogram::default().counts.len() {
            let (lo, w) = Histogram::bucket(i);
            assert_eq!(lo, prev_end, "bucket {i}");
            assert_eq!(Histogram::index(lo), i);
            assert_eq!(Histogram::index(lo + (w - 1)), i);
            assert!(w == 1 || (w as f64) / (lo as f64) <= 1.0 / 64.0 + 1e-12, "bucket {i}: {lo} + {w}");
            prev_end = lo.saturating_add(w);
        }
        assert_eq!(Histogram::index(u64::MAX), Histogram::default().counts.len() - 1);
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_ns(0.5), None);
        for v in 1..=1000u64 {
            h.record(v * 1000); // 1..1000 µs
        }
        let p50 = h.quantile_ns(0.5).unwrap();
        let p99 = h.quantile_ns(0.99).unwrap();
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.016, "{p50}");
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.016, "{p99}");
        assert_eq!(h.count(), 1000);
        assert_eq!(h.max_ns(), Some(1_000_000));
        assert!((h.mean_ns().unwrap() - 500_500.0).abs() < 1.0);
        let mut one = Histogram::default();
        one.record(7);
        assert_eq!(one.quantile_ns(0.0), Some(7.0));
        assert_eq!(one.quantile_ns(1.0), Some(7.0));
    }

    #[test]
    fn queries_decode_as_asked() {
        let q = a_query("Svc7", 0x1234).unwrap();
        let m = Message::from_vec(&q).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert!(m.metadata.recursion_desired);
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.queries[0].name().to_ascii(), "Svc7.");
        assert_eq!(m.queries[0].query_type(), RecordType::A);
        assert!(m.edns.is_none());
        assert_eq!(a_query("svc7.", 1).unwrap()[2..], a_query("svc7", 1).unwrap()[2..]);
    }

    /// A server on loopback that answers every A query with 10.0.0.<name's last byte>, except
    /// every `drop_every`th query, and names starting with "bad", which get NXDOMAIN.
    fn toy_server(drop_every: u64, stop: Arc<AtomicBool>) -> (SocketAddr, std::thread::JoinHandle<u64>) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let addr = sock.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                let Ok((len, from)) = sock.recv_from(&mut buf) else { continue };
                n += 1;
                if drop_every > 0 && n.is_multiple_of(drop_every) {
                    continue;
                }
                let q = Message::from_vec(&buf[..len]).unwrap();
                let name = q.queries[0].name().clone();
                let mut r = Message::response(q.metadata.id, OpCode::Query);
                r.add_query(q.queries[0].clone());
                if name.to_ascii().starts_with("bad") {
                    r.metadata.response_code = ResponseCode::NXDomain;
                } else {
                    let last = name.to_ascii().bytes().rev().nth(1).unwrap();
                    let a = hickory_proto::rr::Record::from_rdata(name, 30, RData::A(Ipv4Addr::new(10, 0, 0, last).into()));
                    r.add_answer(a);
                }
                let _ = sock.send_to(&r.to_vec().unwrap(), from);
            }
            n
        });
        (addr, h)
    }

    fn cfg(server: SocketAddr, names: &[&str]) -> LoadConfig {
        LoadConfig {
            server,
            names: names.iter().map(|s| s.to_string()).collect(),
            sockets: 3,
            window: 8,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(300),
            timeout: Duration::from_millis(200),
            max_queries: 1_000_000,
            watch_pid: None,
        }
    }

    #[test]
    fn resolve_and_load_over_loopback() {
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, server) = toy_server(0, stop.clone());
        let a = resolve(addr, "n1", Duration::from_secs(2)).unwrap();
        assert_eq!(a, Answer { rcode: ResponseCode::NoError, addrs: vec![Ipv4Addr::new(10, 0, 0, b'1')], min_ttl: Some(30) });
        let r = run(&cfg(addr, &["n1", "n2", "n3"])).unwrap();
        stop.store(true, Ordering::Release);
        server.join().unwrap();
        assert!(r.sent > 100, "{r:?}");
        assert_eq!(r.answered, r.sent, "{r:?}");
        assert_eq!((r.lost, r.errors, r.strays), (0, 0, 0), "{r:?}");
        assert_eq!(r.latency.count(), r.answered);
        assert!(r.qps() > 0.0 && r.window >= Duration::from_millis(300), "{r:?}");
        assert!(r.client_cpu_pct > 0.0 && r.client_cpu_pct < 110.0, "{r:?}");
        assert!(r.usage.machine > 0.0 && r.usage.process.is_none(), "{r:?}");
    }

    #[test]
    fn losses_and_errors_are_counted_and_the_run_ends() {
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, server) = toy_server(10, stop.clone());
        let t = Instant::now();
        let r = run(&cfg(addr, &["n1", "bad2"])).unwrap();
        stop.store(true, Ordering::Release);
        server.join().unwrap();
        // 300 ms measured + 50 warm-up + at most 200 ms draining, and some slack.
        assert!(t.elapsed() < Duration::from_millis(1500), "{:?}", t.elapsed());
        assert!(r.lost > 0 && r.errors > 0 && r.answered > 0, "{r:?}");
        assert_eq!(r.answered + r.errors + r.lost, r.sent, "{r:?}");
        assert_eq!(r.latency.count(), r.answered);
    }

    #[test]
    fn max_queries_bounds_the_run() {
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, server) = toy_server(0, stop.clone());
        let mut c = cfg(addr, &["n1"]);
        c.warmup = Duration::ZERO;
        c.duration = Duration::from_secs(30);
        c.max_queries = 200;
        let t = Instant::now();
        let r = run(&c).unwrap();
        stop.store(true, Ordering::Release);
        server.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(r.sent <= 200 + BATCH as u64, "{r:?}");
        assert_eq!(r.answered, r.sent);
    }
}
