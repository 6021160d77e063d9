//! Micro-benchmarks of the routed path: longest-prefix-match lookups (IPv4 at 1k and 1M routes,
//! IPv6 at 1k and 100k) and `L3::forward` on one routed frame.
//!
//! Run: `cargo bench -p vswitch-bench --bench l3` (a filter runs part of it: `-- lpm4`). Each
//! table is built once; its size and memory are printed then.
//!
//! LPM benchmarks look up a batch of [`BATCH`] addresses per iteration and report elements
//! (lookups) per second. Independent lookups overlap in the CPU (a tight loop of them keeps
//! several cache misses in flight); `chained` makes each address depend on the previous answer,
//! so it shows the latency of one lookup instead. Address patterns:
//! - `random`: uniformly random addresses (what a router facing the whole address space sees);
//! - `matched`: addresses inside routes drawn at random from the table, so every lookup ends at
//!   a route, most of them at the deepest level the table has.
//!
//! `l3_forward` routes one frame per iteration between two networks allowed to reach each other:
//! `v4_64B` and `v6_64B` with two connected routes (a container host's table), and
//! `v4_64B_1M_routes_spread` with 1M more routes and destinations spread over them (every frame
//! a cold route lookup); `l3_forward_batch32` runs the latter a worker's batch at a time.

mod common;

use common::Rng;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use vswitch_router::{Forward, L3Config, Lpm4, Lpm6, NetworkL3, RouteTarget, L3};
use vswitch_switch::packet::VNET_HDR_LEN;
use vswitch_switch::{Mac, NetId};

/// Lookups per criterion iteration.
const BATCH: usize = 1024;
/// Addresses per pattern, cycled through batch by batch (a power of two).
const QUERIES: usize = 1 << 18;
/// The data plane clock during the benchmark (seconds).
const NOW: u32 = 100;

/// 128 random bits.
fn u128(rng: &mut Rng) -> u128 {
    (u128::from(rng.next()) << 64) | u128::from(rng.next())
}

/// Prefix-length mixes of the IPv4 tables: `bgp` is shaped like the Internet's table (60% /24,
/// 30% /16–/23, 10% /8–/12); `uniform` draws every length from /8 to /32 alike, so a third of
/// the routes need four or five loads.
const V4_MIXES: [(&str, &[u8]); 2] = [
    ("bgp", &[24, 24, 24, 24, 24, 24, 16, 18, 20, 22, 23, 8, 12]),
    ("uniform", &[8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32]),
];

/// Resident memory of this process, in MB (Linux).
fn rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.unwrap_or(0.0) / 1e3
}

/// `n` distinct random routes with lengths drawn from `lens`; the routes as (address, length).
fn v4_table(n: usize, lens: &[u8], rng: &mut Rng) -> (Lpm4<u32>, Vec<(u32, u8)>) {
    let mut t = Lpm4::new();
    let mut routes = Vec::with_capacity(n);
    while t.len() < n {
        let l = lens[rng.below(lens.len())];
        let a = (rng.next() as u32) & u32::MAX.checked_shl(32 - u32::from(l)).unwrap_or(0);
        let id = t.len() as u32;
        if t.insert(a, l, id).expect("valid prefix").is_none() {
            routes.push((a, l));
        }
    }
    (t, routes)
}

/// `n` distinct random IPv6 routes, as containers and hosts use them: mostly /48, /56 and /64
/// (some /32 and /128) under 2000::/3.
fn v6_table(n: usize, rng: &mut Rng) -> (Lpm6<u32>, Vec<(u128, u8)>) {
    const LENS: [u8; 10] = [32, 48, 48, 48, 56, 56, 64, 64, 64, 128];
    let mut t = Lpm6::new();
    let mut routes = Vec::with_capacity(n);
    while t.len() < n {
        let l = LENS[rng.below(LENS.len())];
        let a = ((u128(rng) >> 3) | (1u128 << 125)) & u128::MAX.checked_shl(128 - u32::from(l)).unwrap_or(0);
        let id = t.len() as u32;
        if t.insert(a, l, id).expect("valid prefix").is_none() {
            routes.push((a, l));
        }
    }
    (t, routes)
}

/// An address inside `a/l`, host bits random.
fn inside_v4(a: u32, l: u8, rng: &mut Rng) -> u32 {
    a | ((rng.next() as u32) & u32::MAX.checked_shr(u32::from(l)).unwrap_or(0))
}

fn inside_v6(a: u128, l: u8, rng: &mut Rng) -> u128 {
    a | (u128(rng) & u128::MAX.checked_shr(u32::from(l)).unwrap_or(0))
}

/// Registers the three LPM benchmarks of one table: `random` and `matched` batches, `chained`.
fn bench_lpm<K: Copy>(c: &mut Criterion, group: &str, id: &str, lookup: impl Fn(K) -> Option<u32>, random: &[K], matched: &[K]) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(BATCH as u64));
    for (pattern, queries) in [("random", random), ("matched", matched)] {
        let mut at = 0usize;
        g.bench_function(BenchmarkId::new(pattern, id), |b| {
            b.iter(|| {
                let batch = &queries[at..at + BATCH];
                at = (at + BATCH) & (QUERIES - 1);
                let mut sum = 0u32;
                for &q in batch {
                    sum = sum.wrapping_add(lookup(black_box(q)).unwrap_or(0));
                }
                sum
            })
        });
    }
    // Which address comes next depends on the previous answer (through an index the compiler
    // cannot predict: route ids are below 2^31, so the shift is always 0, but it must wait for
    // the load to know): the lookups cannot overlap, so this is the latency of one.
    let mut at = 0usize;
    g.bench_function(BenchmarkId::new("chained", id), |b| {
        b.iter(|| {
            let mut prev = 0u32;
            for k in 0..BATCH {
                let q = matched[(at + k + (prev >> 31) as usize) & (QUERIES - 1)];
                prev = lookup(q).unwrap_or(0);
            }
            at = (at + BATCH) & (QUERIES - 1);
            prev
        })
    });
    g.finish();
}

fn lpm4(c: &mut Criterion) {
    for (mix, lens) in V4_MIXES {
        for n in [1_000usize, 1_000_000] {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ n as u64 ^ lens.len() as u64);
            let rss0 = rss_mb();
            let t0 = Instant::now();
            let (t, routes) = v4_table(n, lens, &mut rng);
            println!(
                "lpm4 {mix} {n} routes: built in {:.2} s, {:.1} MB allocated, {:.1} MB resident ({:?})",
                t0.elapsed().as_secs_f64(),
                t.memory_bytes() as f64 / 1e6,
                rss_mb() - rss0,
                t
            );
            let random: Vec<u32> = (0..QUERIES).map(|_| rng.next() as u32).collect();
            let matched: Vec<u32> = (0..QUERIES)
                .map(|_| {
                    let (a, l) = routes[rng.below(routes.len())];
                    inside_v4(a, l, &mut rng)
                })
                .collect();
            let hits = random.iter().filter(|&&q| t.lookup(q).is_some()).count();
            println!("lpm4 {mix} {n} routes: {:.1}% of random addresses match a route", hits as f64 / QUERIES as f64 * 100.0);
            bench_lpm(c, &format!("lpm4_{mix}"), &n.to_string(), |q| t.lookup(q), &random, &matched);
        }
    }
}

fn lpm6(c: &mut Criterion) {
    for n in [1_000usize, 100_000] {
        let mut rng = Rng(0xC2B2_AE3D_27D4_EB4F ^ n as u64);
        let t0 = Instant::now();
        let (t, routes) = v6_table(n, &mut rng);
        println!(
            "lpm6 {n} routes: built in {:.2} s, {:.1} MB allocated ({:?})",
            t0.elapsed().as_secs_f64(),
            t.memory_bytes() as f64 / 1e6,
            t
        );
        let random: Vec<u128> = (0..QUERIES).map(|_| (u128(&mut rng) >> 3) | (1u128 << 125)).collect();
        let matched: Vec<u128> = (0..QUERIES)
            .map(|_| {
                let (a, l) = routes[rng.below(routes.len())];
                inside_v6(a, l, &mut rng)
            })
            .collect();
        bench_lpm(c, "lpm6", &n.to_string(), |q| t.lookup(q), &random, &matched);
    }
}

// ---- L3::forward -------------------------------------------------------------------------

const FRONT: NetId = 1;
const BACK: NetId = 2;
const GW_FRONT: Mac = Mac([0x02, 0x42, 0x0a, 0x14, 0x00, 0x01]);
const GW_BACK: Mac = Mac([0x02, 0x42, 0x0a, 0x1e, 0x00, 0x01]);
const MAC_A: Mac = Mac([0x02, 0x42, 0x0a, 0x14, 0x00, 0x02]);
const MAC_B: Mac = Mac([0x02, 0x42, 0x0a, 0x1e, 0x00, 0x02]);
const A4: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 2);
const B4: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 2);
const A6: Ipv6Addr = Ipv6Addr::new(0xfd20, 0, 0, 0, 0, 0, 0, 2);
const B6: Ipv6Addr = Ipv6Addr::new(0xfd30, 0, 0, 0, 0, 0, 0, 2);
const ETH: usize = 14;

/// The Internet checksum of `data` (RFC 1071), written independently of the router's.
fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `[zero vnet hdr][Ethernet][IPv4][UDP 40000 → 7][payload]`, 60 bytes of frame (64 on the wire
/// with the FCS), from A to `dst` through the front gateway; TTL 64, DF.
fn frame_v4(dst: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN];
    f.extend_from_slice(&GW_FRONT.0);
    f.extend_from_slice(&MAC_A.0);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = 60 - ETH;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&A4.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = inet_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let udp_len = (total - 20) as u16;
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&7u16.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum: the router does not read it
    f.resize(VNET_HDR_LEN + 60, 0x5a);
    f
}

/// The same for IPv6: 64 bytes of frame (UDP with 2 bytes of payload), hop limit 64.
fn frame_v6(dst: Ipv6Addr) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN];
    f.extend_from_slice(&GW_FRONT.0);
    f.extend_from_slice(&MAC_A.0);
    f.extend_from_slice(&[0x86, 0xdd]);
    let payload = (64 - ETH - 40) as u16;
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&payload.to_be_bytes());
    f.extend_from_slice(&[17, 64]);
    f.extend_from_slice(&A6.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&7u16.to_be_bytes());
    f.extend_from_slice(&payload.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(VNET_HDR_LEN + 64, 0x5a);
    f
}

/// Two dual-stack networks allowed to route to each other (what `route-to` sets up), with B a
/// static neighbour of the back network, as `network connect` pins an endpoint.
fn two_networks() -> L3Config {
    let mut cfg = L3Config::new();
    let net = |mac, v4: &str, v6: &str| NetworkL3 {
        uplink: false,
        host_loopback: false,
        mac,
        mtu: 1500,
        ipv4: Some(v4.parse::<Ipv4Net>().expect("IPv4 gateway")),
        ipv6: Some(v6.parse::<Ipv6Net>().expect("IPv6 gateway")),
        internal: false,
        dns4: None,
        dns6: None,
        host_alias4: None,
        host_alias6: None,
    };
    cfg.set_network(FRONT, net(GW_FRONT, "10.20.0.1/24", "fd20::1/64")).expect("front network");
    cfg.set_network(BACK, net(GW_BACK, "10.30.0.1/24", "fd30::1/64")).expect("back network");
    cfg.allow(FRONT, BACK);
    cfg.allow(BACK, FRONT);
    cfg
}

fn publish(cfg: L3Config) -> L3 {
    let l3 = L3::new();
    l3.store(cfg);
    l3.set_neighbor_static(BACK, IpAddr::V4(B4), MAC_B).expect("neighbour B (v4)");
    l3.set_neighbor_static(BACK, IpAddr::V6(B6), MAC_B).expect("neighbour B (v6)");
    l3
}

/// Puts back the bytes `forward` changed in a v4 frame: TTL and header checksum (the MACs it
/// writes are the same every time).
#[inline(always)]
fn reset_v4(f: &mut [u8], template: &[u8]) {
    let at = VNET_HDR_LEN + ETH + 8;
    f[at..at + 4].copy_from_slice(&template[at..at + 4]);
}

fn forward(c: &mut Criterion) {
    let l3 = publish(two_networks());
    let mut err = vec![0u8; vswitch_router::ICMP_ERROR_BUF];
    let out = Forward::Out { net: BACK, dst_mac: MAC_B };

    let mut g = c.benchmark_group("l3_forward");
    g.throughput(Throughput::Elements(1));

    let template = frame_v4(B4);
    let mut f = template.clone();
    assert_eq!(l3.forward(FRONT, &mut f, &mut err, NOW), out, "the measured v4 frame is routed");
    assert_eq!(f[VNET_HDR_LEN + ETH + 8], 63, "TTL decremented");
    assert_eq!(inet_checksum(&f[VNET_HDR_LEN + ETH..VNET_HDR_LEN + ETH + 20]), 0, "header checksum still valid");
    g.bench_function("v4_64B", |b| {
        b.iter(|| {
            reset_v4(&mut f, &template);
            l3.forward(FRONT, black_box(&mut f), &mut err, NOW)
        })
    });

    let template6 = frame_v6(B6);
    let mut f6 = template6.clone();
    assert_eq!(l3.forward(FRONT, &mut f6, &mut err, NOW), out, "the measured v6 frame is routed");
    let hop = VNET_HDR_LEN + ETH + 7;
    g.bench_function("v6_64B", |b| {
        b.iter(|| {
            f6[hop] = 64;
            l3.forward(FRONT, black_box(&mut f6), &mut err, NOW)
        })
    });

    // 1M routes (BGP-like lengths, outside 10/8) via B on the back network, and frames to
    // addresses spread over them: every frame takes a cold route lookup.
    let mut cfg = two_networks();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let lens = V4_MIXES[0].1;
    let via = RouteTarget { net: BACK, via: Some(IpAddr::V4(B4)) };
    let mut routes = Vec::with_capacity(1_000_000);
    let t0 = Instant::now();
    while routes.len() < 1_000_000 {
        let l = lens[rng.below(lens.len())];
        let a = Ipv4Net::new(Ipv4Addr::from_bits(rng.next() as u32), l).expect("valid prefix").trunc();
        if a.contains(&Ipv4Addr::new(10, 0, 0, 0)) || Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 8).is_ok_and(|ten| ten.contains(&a)) {
            continue;
        }
        if let Ok(None) = cfg.add_route(IpNet::V4(a), via) {
            routes.push(a);
        }
    }
    println!(
        "l3_forward: 1M routes added in {:.2} s, FIB {:.1} MB ({} routes with the connected ones)",
        t0.elapsed().as_secs_f64(),
        cfg.fib_memory_bytes() as f64 / 1e6,
        cfg.route_count()
    );
    let l3 = publish(cfg);
    const FRAMES: usize = 1 << 14;
    // Destinations inside random routes; the few that are not host addresses (multicast,
    // 0/8, 127/8, 240/4, link-local) are drawn again.
    let mut templates: Vec<Vec<u8>> = Vec::with_capacity(FRAMES);
    while templates.len() < FRAMES {
        let r = routes[rng.below(routes.len())];
        let t = frame_v4(Ipv4Addr::from_bits(inside_v4(r.network().to_bits(), r.prefix_len(), &mut rng)));
        if l3.forward(FRONT, &mut t.clone(), &mut err, NOW) == out {
            templates.push(t);
        }
    }
    let mut frames = templates.clone();
    let mut i = 0usize;
    g.bench_function("v4_64B_1M_routes_spread", |b| {
        b.iter(|| {
            i = (i + 1) & (FRAMES - 1);
            let f = &mut frames[i];
            reset_v4(f, &templates[i]);
            l3.forward(FRONT, black_box(f), &mut err, NOW)
        })
    });
    g.finish();

    // The same, a worker's batch at a time (32 frames, as `worker::BATCH`): the route lookups of
    // one batch overlap in the CPU where one frame at a time waits for each miss in turn.
    let mut g = c.benchmark_group("l3_forward_batch32");
    g.throughput(Throughput::Elements(32));
    let mut i = 0usize;
    g.bench_function("v4_64B_1M_routes_spread", |b| {
        b.iter(|| {
            let mut routed = 0u32;
            for _ in 0..32 {
                i = (i + 1) & (FRAMES - 1);
                let f = &mut frames[i];
                reset_v4(f, &templates[i]);
                routed += u32::from(matches!(l3.forward(FRONT, black_box(f), &mut err, NOW), Forward::Out { .. }));
            }
            routed
        })
    });
    g.finish();
}

fn main() {
    let mut c = common::criterion();
    lpm4(&mut c);
    lpm6(&mut c);
    forward(&mut c);
    c.final_summary();
}
