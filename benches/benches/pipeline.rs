//! Micro-benchmarks of the per-frame path: `pipeline::classify` and the FDB at 1k, 100k and 1M MACs.
//!
//! Run: `cargo bench -p vswitch-bench --bench pipeline` (add a filter such as `fdb_lookup` to
//! run part of it). Each size is filled once; the FDB's memory per entry is printed then.
//!
//! Two access patterns are measured where it matters:
//! - `hot`: the same frame (or key) every time, the best case a single flow sees;
//! - `spread`: keys drawn at random from the whole table, so at 1M entries most lookups miss
//!   the CPU caches, the case of a switch serving many hosts.

mod common;

use common::Rng;
use std::hint::black_box;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput};
use vswitch_switch::counters::PortCounters;
use vswitch_switch::packet::VNET_HDR_LEN;
use vswitch_switch::pipeline::{classify, Verdict};
use vswitch_switch::port::MemPort;
use vswitch_switch::topology::{NetworkConfig, NetworkEntry, PortEntry};
use vswitch_switch::{Fdb, Learn, Mac, NetId, PortId};

/// Table sizes every benchmark runs at.
const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];
/// The network every entry lives in.
const NET: NetId = 1;
/// The two ports the measured frame travels between; the filler entries sit on other ports.
const PORT_A: PortId = 1;
const PORT_B: PortId = 2;
/// Filler entries are spread over this many ports after A and B.
const FILL_PORTS: u32 = 64;
/// The dataplane clock during the benchmark (seconds); entries are learned at this time, so
/// refreshing them stores nothing.
const NOW: u32 = 100;
/// Random picks per `spread` benchmark, cycled through.
const PICKS: usize = 1 << 16;
/// An Ethernet frame of 64 bytes on the wire, less the 4-byte FCS the device adds.
const FRAME_LEN: usize = 60;

const MAC_A: Mac = Mac([0x02, 0x42, 0x0a, 0x4d, 0x00, 0x02]);
const MAC_B: Mac = Mac([0x02, 0x42, 0x0a, 0x4d, 0x00, 0x03]);

/// The `n`th filler MAC: locally administered unicast, distinct from A and B.
fn filler(n: u64) -> Mac {
    Mac::from_u64(0x0a00_0000_0000 | n)
}

/// The port the `n`th filler MAC is learned on.
fn filler_port(n: u64) -> PortId {
    3 + (n % u64::from(FILL_PORTS)) as PortId
}

/// A MAC that is never in the table.
fn absent(n: u64) -> Mac {
    Mac::from_u64(0x0e00_0000_0000 | n)
}

fn port(id: PortId) -> PortEntry {
    PortEntry {
        id,
        net: NET,
        port: Arc::new(MemPort::new("bench", 4).expect("eventfd for MemPort")),
        counters: Arc::new(PortCounters::new(1)),
        down: Arc::new(AtomicBool::new(false)),
    }
}

fn network() -> NetworkEntry {
    NetworkEntry { id: NET, config: NetworkConfig::default(), ports: vec![PORT_A, PORT_B] }
}

/// `[vnet hdr][dst src 0x0800 payload]`, the frame a port hands the pipeline.
fn wire(dst: Mac, src: Mac) -> Vec<u8> {
    let mut v = vec![0u8; VNET_HDR_LEN];
    v.extend_from_slice(&dst.0);
    v.extend_from_slice(&src.0);
    v.extend_from_slice(&[0x08, 0x00]);
    v.resize(VNET_HDR_LEN + FRAME_LEN, 0xab);
    v
}

/// An FDB holding `n` entries in `NET`: A on port A, B on port B, the rest on filler ports.
fn filled(n: usize) -> Fdb {
    let fdb = Fdb::new();
    assert_eq!(fdb.learn(NET, MAC_A, PORT_A, NOW, 0), Learn::Added);
    assert_eq!(fdb.learn(NET, MAC_B, PORT_B, NOW, 0), Learn::Added);
    for i in 0..n.saturating_sub(2) as u64 {
        fdb.learn(NET, filler(i), filler_port(i), NOW, 0);
    }
    assert_eq!(fdb.len(), n);
    fdb
}

fn report_memory(n: usize, fdb: &Fdb) {
    let bytes = fdb.table_bytes();
    println!("fdb memory: {n} entries, {bytes} table bytes, {:.1} bytes/entry", bytes as f64 / fdb.len() as f64);
}

fn bench_size(c: &mut Criterion, n: usize) {
    let fdb = filled(n);
    report_memory(n, &fdb);
    let net = network();
    let pa = port(PORT_A);
    let counters = pa.counters.worker(0);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ n as u64);
    let fill = n.saturating_sub(2);
    // (mac, the port it was learned on) for random filler entries.
    let hits: Vec<(Mac, PortId)> = (0..PICKS).map(|_| rng.below(fill) as u64).map(|k| (filler(k), filler_port(k))).collect();
    let misses: Vec<Mac> = (0..PICKS).map(|_| absent(rng.below(usize::MAX >> 1) as u64)).collect();

    // Sanity: the measured frame is forwarded, not flooded.
    let a_to_b = wire(MAC_B, MAC_A);
    assert_eq!(classify(&fdb, &net, &pa, &a_to_b, NOW, counters, false), Verdict::Forward(PORT_B));

    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(1));
    g.bench_with_input(BenchmarkId::new("hot", n), &a_to_b, |b, w| {
        b.iter(|| classify(&fdb, &net, &pa, black_box(w), NOW, counters, false))
    });
    // Frames from random filler hosts to B, each arriving on the port its source was learned
    // on: learning and the destination lookup both run, and the source's entry is a random one
    // of n (cold in cache at 1M). One frame buffer is rewritten in place, as a port's would be.
    let ingress: Vec<PortEntry> = (0..FILL_PORTS).map(|p| port(3 + p)).collect();
    let mut frame = wire(MAC_B, MAC_A);
    let mut i = 0usize;
    g.bench_function(BenchmarkId::new("spread", n), |b| {
        b.iter(|| {
            i = (i + 1) & (PICKS - 1);
            let (src, p) = hits[i];
            frame[VNET_HDR_LEN + 6..VNET_HDR_LEN + 12].copy_from_slice(&src.0);
            classify(&fdb, &net, &ingress[(p - 3) as usize], black_box(&frame), NOW, counters, false)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("fdb_lookup");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("hit_hot", n), |b| b.iter(|| fdb.lookup(NET, black_box(MAC_B))));
    let mut i = 0usize;
    g.bench_function(BenchmarkId::new("hit_spread", n), |b| {
        b.iter(|| {
            i = (i + 1) & (PICKS - 1);
            fdb.lookup(NET, black_box(hits[i].0))
        })
    });
    let mut i = 0usize;
    g.bench_function(BenchmarkId::new("miss", n), |b| {
        b.iter(|| {
            i = (i + 1) & (PICKS - 1);
            fdb.lookup(NET, black_box(misses[i]))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("fdb_learn_refresh");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("hot", n), |b| b.iter(|| fdb.learn(NET, black_box(MAC_A), PORT_A, NOW, 1024)));
    let mut i = 0usize;
    g.bench_function(BenchmarkId::new("spread", n), |b| {
        b.iter(|| {
            i = (i + 1) & (PICKS - 1);
            // On the port it was learned on: a refresh, never a move.
            let (mac, port) = hits[i];
            fdb.learn(NET, black_box(mac), port, NOW, 0)
        })
    });
    g.finish();
}

fn main() {
    let mut c = common::criterion();
    for n in SIZES {
        bench_size(&mut c, n);
    }
    c.final_summary();
}
