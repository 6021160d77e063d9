//! The embedded DNS server as the daemon runs it: local names answered on the slow path,
//! everything else forwarded upstream on the async runtime, with a cache.
//!
//! The slow path never waits: a query that needs an upstream is handed to a task and answered
//! `Pending`; the task leaves its answer in `completed` and wakes the slow path, whose next tick
//! sends it (see [`vswitch_router::DnsService`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hickory_proto::op::ResponseCode;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vswitch_dns::{answer, error_reply, fit, udp_limit, Cache, Names, Outcome};
use vswitch_router::{DnsAction, DnsClient, DnsService};
use vswitch_switch::{NetId, SlowWaker};

/// Upstream answers kept.
const CACHE_ENTRIES: usize = 16_384;
/// Queries waiting on upstreams at once; beyond, SERVFAIL at once (Docker allows 1024 too).
const MAX_INFLIGHT: usize = 1024;
/// How long one upstream gets before the next is tried. An upstream that is gone usually
/// answers with ICMP port unreachable at once, which moves on without waiting.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Upstreams tried per query, in order (resolv.conf's MAXNS).
const MAX_UPSTREAMS: usize = 3;
/// How often the host's resolv.conf is looked at for changes.
const RESOLV_CHECK: Duration = Duration::from_secs(1);
/// IPv4 + UDP and IPv6 + UDP headers: what a UDP answer leaves of the network's MTU.
const UDP4_OVERHEAD: usize = 28;
const UDP6_OVERHEAD: usize = 48;

/// A network's DNS server: where to forward, and the MTU a UDP answer must fit.
#[derive(Debug, Clone, Default)]
pub struct NetDns {
    /// `--dns` servers; empty: the host's resolv.conf.
    pub upstreams: Vec<SocketAddr>,
    pub mtu: u32,
    queries: Arc<AtomicU64>,
}

impl NetDns {
    pub fn new(upstreams: Vec<SocketAddr>, mtu: u32) -> Self {
        Self { upstreams, mtu, queries: Arc::default() }
    }
}

#[derive(Debug, Default)]
struct Counters {
    queries: AtomicU64,
    local: AtomicU64,
    forwarded: AtomicU64,
    cache_hits: AtomicU64,
    servfail: AtomicU64,
    errors: AtomicU64,
    dropped: AtomicU64,
    truncated: AtomicU64,
}

/// The host's resolver configuration, re-read when the file changes.
#[derive(Debug)]
struct HostResolv {
    path: PathBuf,
    servers: Vec<SocketAddr>,
    stamp: Option<(std::time::SystemTime, u64, u64)>,
    checked: Option<Instant>,
}

impl HostResolv {
    fn servers(&mut self) -> Vec<SocketAddr> {
        if self.checked.is_some_and(|t| t.elapsed() < RESOLV_CHECK) {
            return self.servers.clone();
        }
        self.checked = Some(Instant::now());
        let stamp = std::fs::metadata(&self.path).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.modified().unwrap_or(std::time::UNIX_EPOCH), m.len(), m.ino())
        });
        if stamp != self.stamp {
            self.stamp = stamp;
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            let servers = parse_resolv_conf(&text);
            log::info!(
                "DNS: upstream servers from {}: {}",
                self.path.display(),
                if servers.is_empty() { "none".to_string() } else { join(&servers) }
            );
            self.servers = servers;
        }
        self.servers.clone()
    }
}

fn join(s: &[SocketAddr]) -> String {
    s.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// The `nameserver` lines of a resolv.conf, at most three, port 53. As a vswitch extension a
/// port may follow (`127.0.0.1:5353`, `[::1]:5353`), which glibc would skip.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then_some(())?;
            parse_server(w.next()?).ok()
        })
        .take(MAX_UPSTREAMS)
        .collect()
}

/// `IP`, `IP:PORT` or `[IPv6]:PORT`; an IPv6 zone (`fe80::1%eth0`) is dropped with the rest of
/// the scope, since upstreams are reached from the daemon's namespace.
pub fn parse_server(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip = s.split('%').next().unwrap_or(s);
    ip.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("invalid DNS server {s:?}: expected an IP address, optionally with a port (10.0.0.1:53, [fd00::1]:53)"))
}

/// Why a forwarded query got no upstream answer.
#[derive(Debug)]
enum Upstream {
    Timeout,
    Io(std::io::Error),
    Bad,
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Timeout => write!(f, "no answer in {UPSTREAM_TIMEOUT:?}"),
            Upstream::Io(e) => write!(f, "{e}"),
            Upstream::Bad => f.write_str("an answer that does not match the query"),
        }
    }
}

#[derive(Debug)]
pub struct Dns {
    names: ArcSwap<Names>,
    nets: ArcSwap<HashMap<NetId, NetDns>>,
    host: Mutex<HostResolv>,
    cache: Mutex<Cache>,
    completed: Mutex<Vec<(DnsClient, Vec<u8>)>>,
    inflight: AtomicUsize,
    rotate: AtomicU32,
    counters: Counters,
    epoch: Instant,
    rt: tokio::runtime::Handle,
    waker: SlowWaker,
}

impl Dns {
    pub fn new(resolv_conf: &Path, rt: tokio::runtime::Handle, waker: SlowWaker) -> Arc<Self> {
        Arc::new(Self {
            names: ArcSwap::default(),
            nets: ArcSwap::default(),
            host: Mutex::new(HostResolv { path: resolv_conf.to_path_buf(), servers: Vec::new(), stamp: None, checked: None }),
            cache: Mutex::new(Cache::new(CACHE_ENTRIES)),
            completed: Mutex::default(),
            inflight: AtomicUsize::new(0),
            rotate: AtomicU32::new(0),
            counters: Counters::default(),
            epoch: Instant::now(),
            rt,
            waker,
        })
    }

    /// Publishes the names and the networks that serve DNS, both rebuilt whole from the model.
    pub fn publish(&self, names: Names, nets: HashMap<NetId, NetDns>) {
        // Keep each network's counter across rebuilds.
        let old = self.nets.load();
        let nets = nets
            .into_iter()
            .map(|(id, mut n)| {
                if let Some(o) = old.get(&id) {
                    n.queries = o.queries.clone();
                }
                (id, n)
            })
            .collect();
        self.names.store(Arc::new(names));
        self.nets.store(Arc::new(nets));
    }

    /// The upstreams a network forwards to, for inspect.
    pub fn upstreams(&self, net: NetId) -> Vec<SocketAddr> {
        match self.nets.load().get(&net) {
            Some(n) if !n.upstreams.is_empty() => n.upstreams.clone(),
            Some(_) => self.host.lock().servers(),
            None => Vec::new(),
        }
    }

    pub fn net_queries(&self, net: NetId) -> Option<u64> {
        self.nets.load().get(&net).map(|n| n.queries.load(Relaxed))
    }

    pub fn stats(&self) -> Value {
        let c = &self.counters;
        let cache = self.cache.lock().stats();
        json!({
            "Queries": c.queries.load(Relaxed),
            "Local": c.local.load(Relaxed),
            "Forwarded": c.forwarded.load(Relaxed),
            "CacheHits": c.cache_hits.load(Relaxed),
            "CacheEntries": cache.entries,
            "ServFail": c.servfail.load(Relaxed),
            "UpstreamErrors": c.errors.load(Relaxed),
            "Truncated": c.truncated.load(Relaxed),
            "Dropped": c.dropped.load(Relaxed),
            "InFlight": self.inflight.load(Relaxed),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The most a reply to `client` may take: TCP's 64 KiB, or what the query allows over UDP
    /// and the network's MTU carries without fragments.
    fn max_len(&self, client: &DnsClient, query: &[u8], mtu: u32) -> usize {
        if client.tcp.is_some() {
            return usize::from(u16::MAX);
        }
        let overhead = if client.addr.is_ipv4() { UDP4_OVERHEAD } else { UDP6_OVERHEAD };
        udp_limit(query).min((mtu as usize).saturating_sub(overhead)).max(512)
    }

    fn servfail(&self, query: &[u8], out: &mut Vec<u8>) -> DnsAction {
        self.counters.servfail.fetch_add(1, Relaxed);
        if error_reply(query, ResponseCode::ServFail, out) {
            DnsAction::Reply
        } else {
            DnsAction::Drop
        }
    }

    /// Sends the query to the upstreams in order on the runtime; the answer (or SERVFAIL) is
    /// left for the slow path.
    fn forward(self: &Arc<Self>, client: DnsClient, query: Vec<u8>, upstreams: Vec<SocketAddr>, max_len: usize) {
        let me = self.clone();
        self.rt.spawn(async move {
            let mut answer = None;
            for up in upstreams.iter().take(MAX_UPSTREAMS) {
                let r = if client.tcp.is_some() { ask_tcp(*up, &query).await } else { ask_udp(*up, &query).await };
                match r {
                    Ok(resp) => {
                        let rcode = resp.get(3).map_or(2, |b| b & 0x0f);
                        // SERVFAIL and REFUSED move on to the next upstream, as Docker's resolver
                        // does; NXDOMAIN is an answer.
                        if rcode == 2 || rcode == 5 {
                            answer.get_or_insert(resp);
                            continue;
                        }
                        answer = Some(resp);
                        break;
                    }
                    Err(e) => {
                        me.counters.errors.fetch_add(1, Relaxed);
                        log::debug!("DNS: upstream {up}: {e}");
                    }
                }
            }
            let mut out = Vec::new();
            match answer {
                Some(resp) => {
                    me.cache.lock().put(&query, &resp, me.now_ms());
                    fit(&resp, max_len, &mut out);
                    if out.len() < resp.len() {
                        me.counters.truncated.fetch_add(1, Relaxed);
                    }
                }
                None => {
                    if me.servfail(&query, &mut out) == DnsAction::Drop {
                        out.clear();
                    }
                }
            }
            me.inflight.fetch_sub(1, Relaxed);
            if !out.is_empty() {
                me.completed.lock().push((client, out));
                me.waker.wake();
            }
        });
    }
}

/// One query to one upstream over UDP, from a fresh socket on a random port with a random
/// ID, so off-path answers are as hard to forge as against any stub resolver.
async fn ask_udp(up: SocketAddr, query: &[u8]) -> Result<Vec<u8>, Upstream> {
    let bind: SocketAddr = if up.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = tokio::net::UdpSocket::bind(bind).await.map_err(Upstream::Io)?;
    sock.connect(up).await.map_err(Upstream::Io)?;
    let id: u16 = rand::random();
    let mut q = query.to_vec();
    vswitch_dns::set_id(&mut q, id);
    sock.send(&q).await.map_err(Upstream::Io)?;
    let mut buf = vec![0u8; 65535];
    let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await.map_err(|_| Upstream::Timeout)?.map_err(Upstream::Io)?;
        let resp = &mut buf[..n];
        if vswitch_dns::id(resp) != Some(id) {
            continue; // a late answer to someone else, or noise: keep waiting
        }
        vswitch_dns::set_id(resp, vswitch_dns::id(query).ok_or(Upstream::Bad)?);
        return Ok(resp.to_vec());
    }
}

/// One query over TCP (RFC 7766): for clients that came over TCP, which a truncated UDP answer
/// sent there.
async fn ask_tcp(up: SocketAddr, query: &[u8]) -> Result<Vec<u8>, Upstream> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(up).await.map_err(Upstream::Io)?;
        let len = u16::try_from(query.len()).map_err(|_| Upstream::Bad)?;
        let mut msg = len.to_be_bytes().to_vec();
        msg.extend_from_slice(query);
        s.write_all(&msg).await.map_err(Upstream::Io)?;
        let mut l = [0u8; 2];
        s.read_exact(&mut l).await.map_err(Upstream::Io)?;
        let mut resp = vec![0u8; usize::from(u16::from_be_bytes(l))];
        s.read_exact(&mut resp).await.map_err(Upstream::Io)?;
        if vswitch_dns::id(&resp) != vswitch_dns::id(query) {
            return Err(Upstream::Bad);
        }
        Ok(resp)
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, io).await.map_err(|_| Upstream::Timeout)?
}

/// The server as the slow path calls it (a newtype: the trait and `Arc` are both foreign).
#[derive(Debug, Clone)]
pub struct DnsHandle(pub Arc<Dns>);

impl DnsService for DnsHandle {
    fn serves(&self, net: NetId) -> bool {
        self.0.nets.load().contains_key(&net)
    }

    fn query(&self, client: &DnsClient, msg: &[u8], out: &mut Vec<u8>) -> DnsAction {
        self.0.query(client, msg, out)
    }

    fn drain_completed(&self, f: &mut dyn FnMut(&DnsClient, &[u8])) {
        let done = std::mem::take(&mut *self.0.completed.lock());
        for (client, msg) in &done {
            f(client, msg);
        }
    }
}

impl Dns {
    fn query(self: &Arc<Self>, client: &DnsClient, msg: &[u8], out: &mut Vec<u8>) -> DnsAction {
        let nets = self.nets.load();
        let Some(nd) = nets.get(&client.net) else { return DnsAction::Drop };
        let c = &self.counters;
        c.queries.fetch_add(1, Relaxed);
        nd.queries.fetch_add(1, Relaxed);
        let max_len = self.max_len(client, msg, nd.mtu);
        let rotate = self.rotate.fetch_add(1, Relaxed);
        match answer(&self.names.load(), client.net, client.addr.ip(), msg, max_len, rotate, out) {
            Outcome::Reply => {
                c.local.fetch_add(1, Relaxed);
                return DnsAction::Reply;
            }
            Outcome::Drop => {
                c.dropped.fetch_add(1, Relaxed);
                return DnsAction::Drop;
            }
            Outcome::Forward => {}
        }
        let mut hit = Vec::new();
        if self.cache.lock().get(msg, self.now_ms(), &mut hit) {
            c.cache_hits.fetch_add(1, Relaxed);
            fit(&hit, max_len, out);
            return DnsAction::Reply;
        }
        let upstreams = if nd.upstreams.is_empty() { self.host.lock().servers() } else { nd.upstreams.clone() };
        if upstreams.is_empty() || self.inflight.load(Relaxed) >= MAX_INFLIGHT {
            return self.servfail(msg, out);
        }
        self.inflight.fetch_add(1, Relaxed);
        c.forwarded.fetch_add(1, Relaxed);
        self.forward(*client, msg.to_vec(), upstreams, max_len);
        DnsAction::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_servers() {
        let text = "# comment\nsearch example.com\nnameserver 10.0.0.53\nnameserver fd00::53\nnameserver fe80::1%eth0\n\
                    nameserver 127.0.0.1:5353\nnameserver bogus\n";
        let s = parse_resolv_conf(text);
        assert_eq!(
            s,
            vec!["10.0.0.53:53".parse::<SocketAddr>().unwrap(), "[fd00::53]:53".parse().unwrap(), "[fe80::1]:53".parse().unwrap()],
            "three at most, in order"
        );
        assert_eq!(
            parse_resolv_conf("nameserver 127.0.0.1:5353\nnameserver [::1]:5300"),
            vec!["127.0.0.1:5353".parse::<SocketAddr>().unwrap(), "[::1]:5300".parse().unwrap()]
        );
        assert!(parse_server("dns.example").unwrap_err().contains("expected an IP address"));
    }
}
