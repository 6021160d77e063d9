//! TCP load generators: 1-byte ping-pong on one connection, and new connections per second, with their servers.
//!
//! - [`ping_pong`] measures request/response latency: one connection, `TCP_NODELAY`, one byte
//!   sent and the same byte awaited before the next; [`echo_server`] answers it.
//! - [`conn_rate`] measures how many connections a path sets up and tears down per second:
//!   `parallel` threads each connect, send one byte, wait for it to come back and close, in a
//!   loop (netperf's TCP_CRR: the client closes first, so TIME_WAIT stays on the client side);
//!   [`reply_server`] answers with as many threads, each serving one connection at a time.
//!
//! Every loop is bounded by a count and a deadline, and every socket call by a timeout: a
//! listener's `SO_RCVTIMEO` bounds `accept` as well, so servers notice their stop flag.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How long one blocking call of a server may wait before it checks its stop flag again.
const TICK: Duration = Duration::from_millis(50);
/// Upper bound on the round trips of one ping-pong run, whatever its duration.
pub const MAX_ROUND_TRIPS: u64 = 10_000_000;
/// Upper bound on the connections of one connection-rate run, whatever its duration.
pub const MAX_CONNECTIONS: u64 = 5_000_000;
/// How long a failed connection attempt's thread waits before the next: a path that refuses
/// connections must not turn the run into a busy loop.
const BACKOFF: Duration = Duration::from_millis(10);

/// Bounds every `accept` on `l` (and on its clones, the same socket) by `t`: it then fails
/// with `WouldBlock`, and the server loop can look at its stop flag and deadline.
fn accept_timeout(l: &TcpListener, t: Duration) -> io::Result<()> {
    let tv = libc::timeval { tv_sec: t.as_secs() as _, tv_usec: t.subsec_micros() as _ };
    // SAFETY: the descriptor is `l`'s, open for the duration of the call; the option value is a
    // `timeval` on the stack whose size is passed with it, and the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast::<libc::c_void>(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A timeout of a socket call with `SO_RCVTIMEO`/`SO_SNDTIMEO` (`EAGAIN`), or an interrupted one.
fn retry(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted)
}

/// A peer that went away: the end of one connection, not of the server.
fn gone(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe)
}

/// Serves connections on `l` one after another, echoing every byte, until `stop` is set or
/// `hard` passes. Returns the bytes echoed.
pub fn echo_server(l: &TcpListener, stop: &AtomicBool, hard: Instant) -> io::Result<u64> {
    accept_timeout(l, TICK)?;
    let done = || stop.load(Ordering::Acquire) || Instant::now() >= hard;
    let mut echoed = 0;
    let mut buf = [0u8; 512];
    while !done() {
        let mut s = match l.accept() {
            Ok((s, _)) => s,
            Err(e) if retry(&e) => continue,
            Err(e) => return Err(e),
        };
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(TICK))?;
        s.set_write_timeout(Some(Duration::from_secs(1)))?;
        while !done() {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => match s.write_all(&buf[..n]) {
                    Ok(()) => echoed += n as u64,
                    Err(e) if gone(&e) => break,
                    Err(e) => return Err(e),
                },
                Err(e) if retry(&e) => {}
                Err(e) if gone(&e) => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(echoed)
}

/// What one ping-pong run measured.
#[derive(Debug, Clone, Default)]
pub struct PingPong {
    /// Each timed round trip, in nanoseconds, in order.
    pub rtt_ns: Vec<u64>,
    /// How long `connect` took (the handshake through the path), in nanoseconds.
    pub connect_ns: u64,
}

/// One connection to `dst`; 1-byte round trips, untimed for `warmup`, then timed until `count`
/// of them or `max_time`. A reply that takes longer than `timeout` fails the run (TCP loses
/// nothing: a stall that long is a fault of the path).
pub fn ping_pong(dst: SocketAddr, count: u64, warmup: Duration, max_time: Duration, timeout: Duration) -> io::Result<PingPong> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect_timeout(&dst, timeout)?;
    let connect_ns = t0.elapsed().as_nanos() as u64;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let count = count.min(MAX_ROUND_TRIPS);
    let mut out = PingPong { rtt_ns: Vec::with_capacity(count.min(1 << 20) as usize), connect_ns };
    let measure_from = Instant::now() + warmup;
    let deadline = measure_from + max_time;
    let mut byte = 0u8;
    loop {
        let now = Instant::now();
        let timed = now >= measure_from;
        if timed && (out.rtt_ns.len() as u64 >= count || now >= deadline) {
            return Ok(out);
        }
        byte = byte.wrapping_add(1);
        let t = Instant::now();
        s.write_all(&[byte])?;
        let mut r = [0u8; 1];
        s.read_exact(&mut r).map_err(|e| {
            if retry(&e) {
                io::Error::new(io::ErrorKind::TimedOut, format!("no echo within {} ms", timeout.as_millis()))
            } else {
                e
            }
        })?;
        if r[0] != byte {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("echo {} for byte {byte}", r[0])));
        }
        if timed {
            out.rtt_ns.push(t.elapsed().as_nanos() as u64);
        }
    }
}

/// Serves the connection-rate client on `l` with `threads` threads, each taking one connection
/// at a time: read a byte, send it back, read until the client closes, close. Until `stop` or
/// `hard`; returns the connections served.
pub fn reply_server(l: TcpListener, threads: usize, stop: Arc<AtomicBool>, hard: Instant) -> io::Result<u64> {
    accept_timeout(&l, TICK)?;
    let served = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for i in 0..threads.max(1) {
        let (l, stop, served) = (l.try_clone()?, stop.clone(), served.clone());
        // Threads start in the namespace of the thread that creates them: this one's.
        let h = thread::Builder::new().name(format!("reply-{i}")).spawn(move || -> io::Result<()> {
            let done = || stop.load(Ordering::Acquire) || Instant::now() >= hard;
            let mut buf = [0u8; 64];
            while !done() {
                let mut s = match l.accept() {
                    Ok((s, _)) => s,
                    Err(e) if retry(&e) => continue,
                    Err(e) => return Err(e),
                };
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(1)))?;
                s.set_write_timeout(Some(Duration::from_secs(1)))?;
                // Any failure ends this connection only: the client counts it.
                let mut serve = |s: &mut TcpStream| -> io::Result<()> {
                    let mut b = [0u8; 1];
                    s.read_exact(&mut b)?;
                    s.write_all(&b)?;
                    while s.read(&mut buf)? > 0 {}
                    Ok(())
                };
                if serve(&mut s).is_ok() {
                    served.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })?;
        handles.push(h);
    }
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => first_err = first_err.or(Some(e)),
            Err(_) => first_err = first_err.or(Some(io::Error::other("a reply server thread panicked"))),
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(served.load(Ordering::Relaxed)),
    }
}

/// What a connection-rate run is told to do.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    pub dst: SocketAddr,
    /// Connections in flight: one per thread.
    pub parallel: usize,
    /// Untimed connections first (the path's caches, the server's threads), then the window.
    pub warmup: Duration,
    pub duration: Duration,
    /// Per connect, and per read or write.
    pub timeout: Duration,
}

/// What a connection-rate run measured (connections started inside the window).
#[derive(Debug, Clone, Default)]
pub struct ConnResult {
    pub completed: u64,
    pub failed: u64,
    pub window: Duration,
    /// connect to reply, per completed connection, in nanoseconds.
    pub latency_ns: Vec<u64>,
    /// The first failure, for the report.
    pub first_error: Option<String>,
}

impl ConnResult {
    pub fn per_sec(&self) -> f64 {
        self.completed as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

/// One connection: connect, a byte there and back, close (by drop: the client closes first).
fn one_connection(dst: SocketAddr, timeout: Duration) -> io::Result<()> {
    let mut s = TcpStream::connect_timeout(&dst, timeout)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(&[1])?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)
}

/// Runs `cfg`: `parallel` threads opening and closing connections to `dst`, at most
/// [`MAX_CONNECTIONS`] in all. The threads run in the caller's network namespace.
pub fn conn_rate(cfg: &ConnConfig) -> io::Result<ConnResult> {
    let start = Instant::now();
    let measure_from = start + cfg.warmup;
    let stop_at = measure_from + cfg.duration;
    let budget = Arc::new(AtomicU64::new(MAX_CONNECTIONS));
    let mut handles = Vec::new();
    for i in 0..cfg.parallel.max(1) {
        let (dst, timeout, budget) = (cfg.dst, cfg.timeout, budget.clone());
        let h = thread::Builder::new().name(format!("conn-{i}")).spawn(move || {
            let mut r = ConnResult::default();
            loop {
                let t = Instant::now();
                if t >= stop_at || budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err() {
                    return r;
                }
                let timed = t >= measure_from;
                match one_connection(dst, timeout) {
                    Ok(()) if timed => {
                        r.completed += 1;
                        r.latency_ns.push(t.elapsed().as_nanos() as u64);
                    }
                    Ok(()) => {}
                    Err(e) => {
                        if timed {
                            r.failed += 1;
                        }
                        r.first_error.get_or_insert_with(|| e.to_string());
                        thread::sleep(BACKOFF);
                    }
                }
            }
        })?;
        handles.push(h);
    }
    let mut all = ConnResult { window: cfg.duration, ..ConnResult::default() };
    for h in handles {
        let r = h.join().map_err(|_| io::Error::other("a connection thread panicked"))?;
        all.completed += r.completed;
        all.failed += r.failed;
        all.latency_ns.extend(r.latency_ns);
        if all.first_error.is_none() {
            all.first_error = r.first_error;
        }
    }
    Ok(all)
}

/// The `p` quantile (0..=1) of sorted nanoseconds, in microseconds (NaN if empty).
pub fn quantile_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize] as f64 / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_pong_over_loopback() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let dst = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let server = thread::spawn(move || echo_server(&l, &s, Instant::now() + Duration::from_secs(20)));
        let r = ping_pong(dst, 200, Duration::from_millis(20), Duration::from_secs(10), Duration::from_secs(2)).unwrap();
        assert_eq!(r.rtt_ns.len(), 200);
        // A second connection after the first is served too (the server takes them in turn).
        let r2 = ping_pong(dst, 10, Duration::ZERO, Duration::from_secs(10), Duration::from_secs(2)).unwrap();
        assert_eq!(r2.rtt_ns.len(), 10);
        stop.store(true, Ordering::Release);
        let echoed = server.join().unwrap().unwrap();
        assert!(echoed >= 210, "{echoed}");
    }

    #[test]
    fn conn_rate_over_loopback_counts_only_the_window() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let dst = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let server = thread::spawn(move || reply_server(l, 2, s, Instant::now() + Duration::from_secs(20)));
        let cfg = ConnConfig {
            dst,
            parallel: 2,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(300),
            timeout: Duration::from_secs(2),
        };
        let r = conn_rate(&cfg).unwrap();
        stop.store(true, Ordering::Release);
        let served = server.join().unwrap().unwrap();
        assert!(r.completed > 0 && r.failed == 0, "{r:?}");
        assert_eq!(r.latency_ns.len() as u64, r.completed);
        assert!(served >= r.completed, "served {served}, completed {}", r.completed);
        assert!((r.per_sec() - r.completed as f64 / 0.3).abs() < 1e-6);
    }

    #[test]
    fn conn_rate_counts_refused_connections_as_failed() {
        // A port nothing listens on: bound, then closed.
        let dst = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let cfg =
            ConnConfig { dst, parallel: 1, warmup: Duration::ZERO, duration: Duration::from_millis(100), timeout: Duration::from_secs(1) };
        let r = conn_rate(&cfg).unwrap();
        assert_eq!(r.completed, 0);
        assert!(r.failed > 0 && r.first_error.is_some(), "{r:?}");
    }

    #[test]
    fn quantiles() {
        let v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(quantile_us(&v, 0.5), 51.0);
        assert_eq!(quantile_us(&v, 0.99), 99.0);
        assert!(quantile_us(&[], 0.5).is_nan());
    }
}
