//! Micro-benchmarks of connection tracking (`vswitch_nat::Conntrack`) at 1k and 100k flows: the
//! lookups and per-packet update the slirp engine makes for every packet, and the ways a flow
//! enters and leaves the table.
//!
//! Run: `cargo bench -p vswitch-bench --bench conntrack` (a filter runs part of it:
//! `-- conntrack_find`). Each table is built once; its build time and resident memory are
//! printed then. Every benchmark reports elements (packets or flows) per second.
//!
//! - `conntrack_find`: `Conntrack::find` on a packet's 5-tuple. `hit_hot` looks up one flow
//!   every time; `hit_spread` flows drawn at random from the table (at 100k, mostly cache
//!   misses); `reply_spread` packets of the reply direction, which cost a missed probe for the
//!   orig key before the hit; `miss` 5-tuples of no flow (both probes miss: a packet that opens a
//!   flow).
//! - `conntrack_packet`: `find` then `on_packet`, what the engine does per packet of a known
//!   flow. `assured_spread` on replied UDP flows (protected: nothing but counters and the
//!   deadline change); `unreplied_spread` on unreplied ones, which also move to the tail of the
//!   eviction list (two more random lines touched).
//! - `conntrack_flow`: one flow in and out with the table kept at its size. `insert_remove`: a
//!   new flow by `get_or_insert_with`, then `remove` (a connection the engine closes);
//!   `insert_evict`: the table at its limit, so each insertion evicts the least recently active
//!   unreplied flow (handed back by `expire`, called each time); `insert_expire`: flows time
//!   out, one per millisecond, as fast as they come, so each insertion is paired with `expire`
//!   collecting the oldest.
//!
//! The nat crate's own `cargo bench -p vswitch-nat` covers bulk expiry (10k due flows at once).

mod common;

use common::Rng;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput};
use vswitch_nat::{Conntrack, Dir, FlowKey, Proto, Timeouts};

/// Table sizes every benchmark runs at.
const SIZES: [usize; 2] = [1_000, 100_000];
/// The caller's clock during the lookup benchmarks (ms); flows are created then, so a refresh
/// leaves their deadline where it is.
const NOW: u64 = 1_000;
/// Random picks per `spread` benchmark, cycled through (a power of two).
const PICKS: usize = 1 << 16;
/// Bytes reported per packet.
const PACKET: usize = 1_400;
/// Key indices at and above these are never in a filled table: one range per use, so that no
/// benchmark can meet a flow another one left behind.
const MISS_BASE: u64 = 1 << 40;
const INSERT_BASE: u64 = 2 << 40;
const EVICT_BASE: u64 = 3 << 40;

/// The `i`th flow, every `i` a distinct 5-tuple: one of 250 containers, a source port of 64000,
/// to port 443 of one of 16 servers (16 more every 16M flows).
fn key(i: u64) -> FlowKey {
    let host = (i % 250) as u32;
    let port = 1024 + ((i / 250) % 64_000) as u16;
    let server = (i % 16) as u32 + 16 * (i / 16_000_000) as u32;
    let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::from_bits(0x0a58_0002 + host)), port);
    let dst = SocketAddr::new(IpAddr::V4(Ipv4Addr::from_bits(0x5db8_0000 + server)), 443);
    FlowKey::new(Proto::Udp, src, dst)
}

/// Resident memory of this process, in MB (Linux).
fn rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.unwrap_or(0.0) / 1e3
}

/// A table of flows `0..n` created at `NOW`, replied to (assured) or not, with room for `limit`.
fn filled(n: usize, limit: usize, assured: bool) -> Conntrack<u64> {
    let rss0 = rss_mb();
    let t0 = Instant::now();
    let mut ct = Conntrack::new(limit, Timeouts::default());
    for i in 0..n as u64 {
        let (id, _) = ct.get_or_insert_with(key(i), NOW, || i).expect("below the limit");
        if assured {
            ct.on_packet(id, Dir::Reply, PACKET, NOW);
        }
    }
    assert_eq!(ct.len(), n);
    let kind = if assured { "assured" } else { "unreplied" };
    let built_ms = t0.elapsed().as_secs_f64() * 1e3;
    let grown = rss_mb() - rss0;
    // Below a few MB the growth is the allocator's, not the table's.
    if grown >= 4.0 {
        println!("conntrack: {n} {kind} flows built in {built_ms:.1} ms, {grown:.1} MB resident, {:.0} bytes/flow", grown * 1e6 / n as f64);
    } else {
        println!("conntrack: {n} {kind} flows built in {built_ms:.1} ms");
    }
    ct
}

fn bench_size(c: &mut Criterion, n: usize) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ n as u64);
    let hits: Vec<FlowKey> = (0..PICKS).map(|_| key(rng.below(n) as u64)).collect();
    let replies: Vec<FlowKey> = hits.iter().map(FlowKey::reversed).collect();
    let misses: Vec<FlowKey> = (0..PICKS).map(|_| key(MISS_BASE + rng.below(1 << 30) as u64)).collect();
    // Room for twice the flows: nothing here but `insert_evict` meets the limit.
    let mut assured = filled(n, 2 * n, true);

    // Sanity: the picks are what their names say.
    assert_eq!(assured.find(&hits[0]).map(|(_, d)| d), Some(Dir::Orig));
    assert_eq!(assured.find(&replies[0]).map(|(_, d)| d), Some(Dir::Reply));
    assert!(misses.iter().all(|k| assured.find(k).is_none()), "a miss key is in the table");

    let mut g = c.benchmark_group("conntrack_find");
    g.throughput(Throughput::Elements(1));
    let hot = hits[0];
    g.bench_function(BenchmarkId::new("hit_hot", n), |b| b.iter(|| assured.find(black_box(&hot))));
    for (name, keys) in [("hit_spread", &hits), ("reply_spread", &replies), ("miss", &misses)] {
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new(name, n), |b| {
            b.iter(|| {
                i = (i + 1) & (PICKS - 1);
                assured.find(black_box(&keys[i]))
            })
        });
    }
    g.finish();

    let mut unreplied = filled(n, n, false);
    let mut g = c.benchmark_group("conntrack_packet");
    g.throughput(Throughput::Elements(1));
    for (name, ct) in [("assured_spread", &mut assured), ("unreplied_spread", &mut unreplied)] {
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new(name, n), |b| {
            b.iter(|| {
                i = (i + 1) & (PICKS - 1);
                let (id, dir) = ct.find(black_box(&hits[i])).expect("a flow of the table");
                ct.on_packet(id, dir, PACKET, NOW)
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("conntrack_flow");
    g.throughput(Throughput::Elements(1));
    let mut next = INSERT_BASE;
    g.bench_function(BenchmarkId::new("insert_remove", n), |b| {
        b.iter(|| {
            next += 1;
            let (id, _) = assured.get_or_insert_with(black_box(key(next)), NOW, || next).expect("below the limit");
            assured.remove(id)
        })
    });
    assert_eq!(assured.len(), n);

    // `unreplied` is at its limit (n) with every flow evictable.
    let created = unreplied.counters().created;
    let mut next = EVICT_BASE;
    let mut out = Vec::new();
    g.bench_function(BenchmarkId::new("insert_evict", n), |b| {
        b.iter(|| {
            next += 1;
            let (id, _) = unreplied.get_or_insert_with(black_box(key(next)), NOW, || next).expect("an unreplied flow to evict");
            out.clear();
            unreplied.expire(NOW, &mut out);
            id
        })
    });
    let ct = unreplied.counters();
    assert_eq!(ct.evicted, ct.created - created, "every insertion evicted one flow");

    // Flow i is created at i + 1 ms and lives n ms: at t the flow of t - n is due as the flow
    // of t comes, so the table stays at n flows.
    let timeouts = Timeouts { udp_ms: n as u64, ..Timeouts::default() };
    let mut aging = Conntrack::new(2 * n, timeouts);
    for i in 0..n as u64 {
        aging.get_or_insert_with(key(i), i + 1, || i).expect("below the limit");
    }
    let mut now = n as u64;
    g.bench_function(BenchmarkId::new("insert_expire", n), |b| {
        b.iter(|| {
            now += 1;
            out.clear();
            aging.expire(now, &mut out);
            aging.get_or_insert_with(black_box(key(now - 1)), now, || now).expect("below the limit").0
        })
    });
    assert_eq!(aging.len(), n);
    assert_eq!(aging.counters().expired, now - n as u64, "one flow expired per insertion");
    g.finish();
}

fn main() {
    let mut c = common::criterion();
    for n in SIZES {
        bench_size(&mut c, n);
    }
    c.final_summary();
}
