//! The workloads run between two namespaces: iperf3 TCP throughput, UDP packet rate, UDP round trips.
//!
//! Each takes a [`Pair`] (sender side `a`, receiver side `b`) and the PID of the forwarding
//! process if there is one, and returns one sample with the forwarder's and the machine's CPU
//! use over the measured window.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::cmd::{self, Proc};
use crate::cpu::{Probe, Usage};
use crate::netns::{self, exec_in};
use crate::udp::{self, BlastConfig};
use crate::{err, Result};

/// Port of the iperf3 server and of the UDP sink / echo server inside `b`.
const PORT: u16 = 5201;

/// Two endpoints of a system under test: namespaces and their addresses on the test network.
#[derive(Debug, Clone)]
pub struct Pair {
    pub a: String,
    pub b: String,
    pub ip_a: IpAddr,
    pub ip_b: IpAddr,
}

/// One TCP throughput run.
#[derive(Debug, Clone, Serialize)]
pub struct TcpSample {
    /// Received bits per second, in Gbit/s (iperf3's `end.sum_received`).
    pub gbps: f64,
    pub retransmits: u64,
    pub fwd_cpu_pct: Option<f64>,
    pub vm_cpu_pct: f64,
    /// Received Gbit/s of each of iperf3's 1-s intervals, in order (not a figure of its own:
    /// what stalls and peaks are read from).
    #[serde(skip)]
    pub intervals_gbps: Vec<f64>,
}

/// Runs iperf3 from `a` to `b` for `secs` seconds, `streams` TCP connections at once.
pub fn tcp(pair: &Pair, secs: u32, streams: u32, fwd: Option<u32>) -> Result<TcpSample> {
    let run = Iperf {
        server_ns: Some(&pair.b),
        bind: Some(pair.ip_b),
        port: PORT,
        client_ns: Some(&pair.a),
        target: SocketAddr::from((pair.ip_b, PORT)),
        reverse: false,
        mark: None,
        streams,
        await_target: false,
    };
    iperf3(&run, secs, fwd)
}

/// Where one iperf3 test runs: the server in `server_ns` (the caller's namespace if none) on
/// `bind`:`port` (every address if none), the client in `client_ns` connecting to `target`
/// (the server's address, or one forwarded to it).
#[derive(Debug, Clone)]
pub struct Iperf<'a> {
    pub server_ns: Option<&'a str>,
    pub bind: Option<IpAddr>,
    pub port: u16,
    pub client_ns: Option<&'a str>,
    pub target: SocketAddr,
    /// `-R`: the server sends, the client receives, on the connection the client opened.
    pub reverse: bool,
    /// A directory of this run's: the server's `--logfile` and the client's `--pidfile` go
    /// there, and a path in a run's temporary directory marks the process as that run's, so
    /// `vswitch-compare cleanup` finds it if the run is killed (an iperf3 client whose peer
    /// vanished spins at 100% CPU well past its `-t`).
    pub mark: Option<&'a Path>,
    /// Parallel TCP streams (`-P`); 1 is one connection.
    pub streams: u32,
    /// Wait, once the server listens, until something listens on `target` in the client's
    /// namespace too: a port that is published only when the server binds it (pasta's `-t auto`,
    /// rootlesskit's implicit port driver) appears a moment later.
    pub await_target: bool,
}

/// Runs one iperf3 TCP stream for `secs` seconds as `t` says; CPU of `fwd` and of the machine
/// over the client's run.
pub fn iperf3(t: &Iperf, secs: u32, fwd: Option<u32>) -> Result<TcpSample> {
    let port = t.port.to_string();
    let mut args: Vec<String> = vec!["-s".into(), "-1".into(), "-p".into(), port.clone()];
    if let Some(b) = t.bind {
        args.extend(["-B".into(), b.to_string()]);
    }
    if let Some(dir) = t.mark {
        args.push(format!("--logfile={}", dir.join(format!("iperf3-server-{}.log", t.port)).display()));
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Proc::spawn(netns::command(t.server_ns, "iperf3", &argv), "iperf3 server", None, Duration::from_secs(2))?;
    wait_listening(t.server_ns, t.bind, t.port, &mut server)?;
    if t.await_target {
        // On any address: pasta publishes on 0.0.0.0.
        wait_listening(t.client_ns, None, t.target.port(), &mut server)?;
    }
    let (target, target_port) = (t.target.ip().to_string(), t.target.port().to_string());
    let secs_s = secs.to_string();
    let pidfile = t.mark.map(|dir| dir.join(format!("iperf3-client-{}.pid", t.target.port())).display().to_string());
    let mut cargs = vec!["-c", &target, "-p", &target_port, "-t", &secs_s, "--json"];
    if t.reverse {
        cargs.push("-R");
    }
    let streams = t.streams.to_string();
    if t.streams > 1 {
        cargs.extend(["-P", &streams]);
    }
    if let Some(p) = &pidfile {
        cargs.extend(["--pidfile", p]);
    }
    let client = netns::command(t.client_ns, "iperf3", &cargs);
    let probe = Probe::start(fwd);
    let out = cmd::output_within(client, Duration::from_secs(u64::from(secs) + 30))?;
    let usage = probe.finish();
    let _ = server.wait_within(Duration::from_secs(3));
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| err(format!("iperf3 client printed no JSON ({e}); stderr: {}", String::from_utf8_lossy(&out.stderr).trim())))?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return Err(err(format!("iperf3: {e}")));
    }
    let bps = v
        .pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .ok_or_else(|| err("iperf3 JSON has no end.sum_received.bits_per_second"))?;
    let retransmits = v.pointer("/end/sum_sent/retransmits").and_then(Value::as_u64).unwrap_or(0);
    let intervals_gbps = v
        .get("intervals")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.pointer("/sum/bits_per_second").and_then(Value::as_f64))
        .map(|b| b / 1e9)
        .collect();
    Ok(TcpSample { gbps: bps / 1e9, retransmits, fwd_cpu_pct: usage.process, vm_cpu_pct: usage.machine, intervals_gbps })
}

/// Waits until something listens on TCP `bind`:`port` (any address if none) inside `ns` (the
/// caller's namespace if none): iperf3 prints nothing useful on a pipe until it exits. Fails
/// if `server` exits first.
pub fn wait_listening(ns: Option<&str>, bind: Option<IpAddr>, port: u16, server: &mut Proc) -> Result<()> {
    let want = bind.map(|b| SocketAddr::new(b, port).to_string());
    let suffix = format!(":{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(s) = server.exited() {
            return Err(err(format!("{} exited before listening ({s})", server.name())));
        }
        let ss = cmd::checked(netns::command(ns, "ss", &["-Hltn"]), Duration::from_secs(5))?;
        // `State Recv-Q Send-Q Local Peer`: the local address is the fourth column.
        let listening = ss.lines().filter_map(|l| l.split_whitespace().nth(3)).any(|local| match &want {
            Some(w) => local == w,
            None => local.ends_with(&suffix),
        });
        if listening {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    let what = want.unwrap_or_else(|| format!("port {port}"));
    Err(err(format!("{} did not listen on {what} within 10 s", server.name())))
}

/// One UDP packet-rate run.
#[derive(Debug, Clone, Serialize)]
pub struct UdpSample {
    pub tx_pps: f64,
    pub rx_pps: f64,
    /// Share of sent datagrams that never arrived, in percent.
    pub loss_pct: f64,
    pub sent: u64,
    pub received: u64,
    /// Where the missing datagrams went, from the kernel's counters over the run: frames the
    /// sender's `eth0` dropped on transmit (a TAP whose queue the switch did not drain in
    /// time; the qdisc), frames the receiver's `eth0` dropped on receive, and datagrams the
    /// receiving socket refused (buffer full: the receiver was too slow).
    pub a_tx_dropped: u64,
    pub b_rx_dropped: u64,
    pub b_rcvbuf_errors: u64,
    pub fwd_cpu_pct: Option<f64>,
    pub vm_cpu_pct: f64,
}

/// Kernel counters that say where UDP datagrams were lost between `a` and `b`.
#[derive(Debug, Clone, Copy, Default)]
struct LossCounters {
    a_tx_dropped: u64,
    b_rx_dropped: u64,
    b_rcvbuf_errors: u64,
}

impl LossCounters {
    /// Reads them; a counter that cannot be read is 0 (the breakdown is informative only).
    fn read(pair: &Pair) -> Self {
        Self {
            a_tx_dropped: link_stat(&pair.a, "eth0", "/0/stats64/tx/dropped"),
            b_rx_dropped: link_stat(&pair.b, "eth0", "/0/stats64/rx/dropped"),
            b_rcvbuf_errors: snmp(&pair.b, "Udp:", "RcvbufErrors"),
        }
    }

    fn since(self, before: Self) -> Self {
        Self {
            a_tx_dropped: self.a_tx_dropped.saturating_sub(before.a_tx_dropped),
            b_rx_dropped: self.b_rx_dropped.saturating_sub(before.b_rx_dropped),
            b_rcvbuf_errors: self.b_rcvbuf_errors.saturating_sub(before.b_rcvbuf_errors),
        }
    }
}

/// One counter of `ip -j -s link show dev <dev>` inside `ns`, by JSON pointer.
fn link_stat(ns: &str, dev: &str, pointer: &str) -> u64 {
    cmd::run("ip", &["-n", ns, "-j", "-s", "link", "show", "dev", dev])
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .and_then(|v| v.pointer(pointer).and_then(Value::as_u64))
        .unwrap_or(0)
}

/// One counter of `/proc/net/snmp` inside `ns` (`section` like `Udp:`, then the field name).
fn snmp(ns: &str, section: &str, field: &str) -> u64 {
    let Ok(text) = cmd::checked(exec_in(ns, "cat", &["/proc/net/snmp"]), Duration::from_secs(5)) else { return 0 };
    let mut rows = text.lines().filter(|l| l.starts_with(section));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else { return 0 };
    names.split_whitespace().zip(values.split_whitespace()).find(|(n, _)| *n == field).and_then(|(_, v)| v.parse().ok()).unwrap_or(0)
}

/// Blasts `payload`-byte UDP datagrams from `a` to a counting sink in `b` for `secs` seconds
/// (`rate_pps` = 0: unpaced).
pub fn udp_rate(pair: &Pair, secs: u32, payload: usize, rate_pps: u64, fwd: Option<u32>) -> Result<UdpSample> {
    let run = run_id();
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let bind = SocketAddr::from((pair.ip_b, PORT));
    let hard = Instant::now() + Duration::from_secs(u64::from(secs) + 20);
    let s = stop.clone();
    let counters = LossCounters::read(pair);
    let sink = netns::spawn_in(&pair.b, "udp-sink", move || {
        let sock = UdpSocket::bind(bind).map_err(|e| err(format!("udp sink bind {bind}: {e}")))?;
        let _ = ready_tx.send(());
        Ok(udp::sink(&sock, run, &s, hard)?)
    })?;
    // If the sink died before binding, the channel closes and recv fails.
    let sink_ready = ready_rx.recv_timeout(Duration::from_secs(5)).is_ok();
    let cfg = BlastConfig { dst: bind, payload, duration: Duration::from_secs(u64::from(secs)), rate_pps, run };
    let blaster = sink_ready.then(|| netns::spawn_in(&pair.a, "udp-blast", move || Ok(udp::blast(&cfg)?)));
    let (tx, usage) = match blaster {
        Some(Ok(h)) => {
            // The window opens after the blaster's 200 ms warm-up, roughly; close enough for CPU.
            let probe = Probe::start(fwd);
            let tx = netns::join(h, "udp blaster");
            let usage = probe.finish();
            (tx, usage)
        }
        Some(Err(e)) => (Err(e), Usage::default()),
        None => (Err(err("udp sink did not start")), Usage::default()),
    };
    // Let queued datagrams drain, then stop the sink.
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Release);
    let rx = netns::join(sink, "udp sink")?;
    let tx = tx?;
    let lost = LossCounters::read(pair).since(counters);
    let loss = if tx.sent == 0 { 100.0 } else { tx.sent.saturating_sub(rx.received) as f64 / tx.sent as f64 * 100.0 };
    Ok(UdpSample {
        tx_pps: tx.pps(),
        rx_pps: rx.pps(),
        loss_pct: loss,
        sent: tx.sent,
        received: rx.received,
        a_tx_dropped: lost.a_tx_dropped,
        b_rx_dropped: lost.b_rx_dropped,
        b_rcvbuf_errors: lost.b_rcvbuf_errors,
        fwd_cpu_pct: usage.process,
        vm_cpu_pct: usage.machine,
    })
}

/// One round-trip run.
#[derive(Debug, Clone, Serialize)]
pub struct RttSample {
    pub avg_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub min_us: f64,
    pub max_us: f64,
    pub count: u64,
    pub lost: u64,
}

/// UDP ping-pong from `a` to an echo server in `b`: `count` round trips or `max_secs`.
pub fn rtt(pair: &Pair, payload: usize, count: u64, max_secs: u32) -> Result<RttSample> {
    let run = run_id();
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let bind = SocketAddr::from((pair.ip_b, PORT));
    let hard = Instant::now() + Duration::from_secs(u64::from(max_secs) + 20);
    let s = stop.clone();
    let server = netns::spawn_in(&pair.b, "udp-echo", move || {
        let sock = UdpSocket::bind(bind).map_err(|e| err(format!("udp echo bind {bind}: {e}")))?;
        let _ = ready_tx.send(());
        Ok(udp::echo(&sock, &s, hard)?)
    })?;
    let ready = ready_rx.recv_timeout(Duration::from_secs(5)).is_ok();
    let res = if ready {
        netns::spawn_in(&pair.a, "udp-ping", move || {
            Ok(udp::ping(bind, payload, count, Duration::from_secs(u64::from(max_secs)), Duration::from_millis(500), run)?)
        })
        .and_then(|h| netns::join(h, "udp ping"))
    } else {
        Err(err("udp echo server did not start"))
    };
    stop.store(true, Ordering::Release);
    netns::join(server, "udp echo")?;
    let res = res?;
    let mut v = res.rtt_ns;
    if v.is_empty() {
        return Err(err(format!("no round trip completed ({} lost)", res.lost)));
    }
    v.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    let pct = |p: f64| us(v[((v.len() - 1) as f64 * p).round() as usize]);
    Ok(RttSample {
        avg_us: us(v.iter().sum::<u64>() / v.len() as u64),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        min_us: us(v[0]),
        max_us: us(v[v.len() - 1]),
        count: v.len() as u64,
        lost: res.lost,
    })
}

/// A run id for datagram stamps: different for every run of every workload.
fn run_id() -> u32 {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    // Even numbers only: blasters and pingers stamp warm-up datagrams with run + 1.
    (t ^ std::process::id().rotate_left(16) ^ N.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9)) & !1
}
