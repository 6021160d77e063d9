//! Micro-benchmarks of the embedded DNS (`vswitch_dns`): a raw query packet in, a raw reply out,
//! for local names among 100 and 10k containers and for upstream names found in the cache.
//!
//! Run: `cargo bench -p vswitch-bench --bench dns` (a filter runs part of it: `-- dns_local`).
//! Every benchmark reports queries per second. Queries are built once, as a stub resolver sends
//! them (RD set, an OPT record advertising 1232 bytes), and each takes the daemon's path:
//! `udp_limit` for the reply's size, then `answer`.
//!
//! - `dns_local`: `answer` writes the reply from the `Names` snapshot. `a_hot` asks for one
//!   container's A record every time; `a_spread` for containers drawn at random (at 10k, the
//!   name index no longer sits in L1/L2); `name_net_spread` for `NAME.NETWORK`, which misses the
//!   whole name before the split finds it; `ptr_spread` for the reverse names of their addresses.
//! - `dns_upstream`: a name that is not local. `forward` is `answer` deciding so (it parses the
//!   query whole before it can tell); `cache_hit` the daemon's path for a cached name: that,
//!   then `Cache::get` (a cache holding as many upstream names as there are containers) and
//!   `fit`; `cache_get` the `Cache::get` alone.
//!
//! The dns crate's own `cargo bench -p vswitch-dns` covers `Names::lookup` and `Cache::put`.

mod common;

use common::Rng;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{BenchmarkId, Criterion, Throughput};
use vswitch_dns::hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use vswitch_dns::hickory_proto::rr::rdata::A;
use vswitch_dns::hickory_proto::rr::{Name, RData, Record, RecordType};
use vswitch_dns::{answer, fit, udp_limit, Cache, Names, NamesBuilder, Outcome, EDNS_PAYLOAD};

/// Containers (local names), and upstream names in the cache, per run.
const SIZES: [usize; 2] = [100, 10_000];
/// The network every container is on.
const NET: u32 = 1;
/// Random picks per `spread` benchmark, cycled through (a power of two).
const PICKS: usize = 1 << 14;
/// The daemon's cache capacity (`CACHE_ENTRIES` in ctl/src/dns.rs).
const CACHE_ENTRIES: usize = 16_384;
/// The caller's clock when the cache is read (ms): 42 s after the answers were stored, so the
/// TTLs served are counted down.
const NOW: u64 = 42_000;

/// Container `i`'s addresses.
fn v4(i: usize) -> Ipv4Addr {
    Ipv4Addr::from_bits(0x0a58_0002 + i as u32)
}

fn v6(i: usize) -> Ipv6Addr {
    Ipv6Addr::from_bits(0xfd00_0000_0000_0000_0000_0000_0000_0002 + i as u128)
}

/// `n` containers on network "front", each named `web-I` with the alias `svc-I`, dual-stack.
fn names(n: usize) -> Names {
    let mut b = NamesBuilder::new();
    b.network(NET, "front");
    for i in 0..n {
        let name = format!("web-{i}");
        b.endpoint(NET, &name, &name, &[format!("svc-{i}")], Some(v4(i)), Some(v6(i)));
    }
    b.build()
}

/// A query for `name` as a stub resolver sends it.
fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    // from_ascii keeps the case; the reply must echo it.
    m.add_query(Query::query(Name::from_ascii(name).expect("a valid name"), qtype));
    let mut e = Edns::new();
    e.set_max_payload(EDNS_PAYLOAD);
    m.edns = Some(e);
    m.to_vec().expect("a query that encodes")
}

/// The reverse name of `ip`'s A record: `d.c.b.a.in-addr.arpa.`.
fn ptr_name(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
}

/// What a recursive resolver answers to an A query: two A records (TTL 300) and an OPT record.
fn upstream_response(q: &[u8]) -> Vec<u8> {
    let qm = Message::from_vec(q).expect("our own query parses");
    let mut r = Message::new(qm.metadata.id, MessageType::Response, OpCode::Query);
    r.metadata.recursion_desired = true;
    r.metadata.recursion_available = true;
    r.add_query(qm.queries[0].clone());
    for i in 0..2 {
        r.add_answer(Record::from_rdata(qm.queries[0].name().clone(), 300, RData::A(A::new(93, 184, 216, 34 + i))));
    }
    r.edns = qm.edns.clone();
    r.to_vec().expect("a response that encodes")
}

/// The answers of a reply, checked to be a NOERROR response to `q`.
fn reply_answers(q: &[u8], reply: &[u8]) -> Vec<RData> {
    let m = Message::from_vec(reply).expect("the reply parses");
    let qm = Message::from_vec(q).expect("our own query parses");
    assert_eq!(m.metadata.id, qm.metadata.id);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(m.queries, qm.queries, "the question is echoed as asked");
    m.answers.into_iter().map(|r| r.data).collect()
}

/// `queries` picked at random, `PICKS` of them.
fn spread(queries: &[Vec<u8>], rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..PICKS).map(|_| queries[rng.below(queries.len())].clone()).collect()
}

fn bench_size(c: &mut Criterion, n: usize) {
    let names = names(n);
    // The querier is a container of the network: its scope is looked up by its address.
    let client = IpAddr::V4(v4(0));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ n as u64);
    let mut out = Vec::with_capacity(512);
    let mut rotate = 0u32;

    let a: Vec<Vec<u8>> = (0..n).map(|i| query(&format!("Web-{i}."), RecordType::A)).collect();
    let name_net: Vec<Vec<u8>> = (0..n).map(|i| query(&format!("web-{i}.front."), RecordType::A)).collect();
    let ptr: Vec<Vec<u8>> = (0..n).map(|i| query(&ptr_name(v4(i)), RecordType::PTR)).collect();
    // Sanity: each kind is answered locally, with what it asks for.
    for (q, want) in [(&a[n - 1], RData::A(A(v4(n - 1)))), (&name_net[n - 1], RData::A(A(v4(n - 1))))] {
        assert_eq!(answer(&names, NET, client, q, udp_limit(q), 0, &mut out), Outcome::Reply);
        assert_eq!(reply_answers(q, &out), [want]);
    }
    assert_eq!(answer(&names, NET, client, &ptr[n - 1], udp_limit(&ptr[n - 1]), 0, &mut out), Outcome::Reply);
    assert!(matches!(&reply_answers(&ptr[n - 1], &out)[..], [RData::PTR(p)] if p.0.to_ascii() == format!("web-{}.front.", n - 1)));

    let mut g = c.benchmark_group("dns_local");
    g.throughput(Throughput::Elements(1));
    let hot = &a[n / 2];
    g.bench_function(BenchmarkId::new("a_hot", n), |b| {
        b.iter(|| {
            rotate = rotate.wrapping_add(1);
            let q = black_box(hot);
            answer(&names, NET, client, q, udp_limit(q), rotate, &mut out)
        })
    });
    for (name, queries) in [("a_spread", &a), ("name_net_spread", &name_net), ("ptr_spread", &ptr)] {
        let picks = spread(queries, &mut rng);
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new(name, n), |b| {
            b.iter(|| {
                i = (i + 1) & (PICKS - 1);
                rotate = rotate.wrapping_add(1);
                let q = black_box(&picks[i]);
                answer(&names, NET, client, q, udp_limit(q), rotate, &mut out)
            })
        });
    }
    g.finish();

    // As many upstream names in the cache as there are containers, stored at 0 ms.
    let upstream: Vec<Vec<u8>> = (0..n).map(|i| query(&format!("host-{i}.Example.com."), RecordType::A)).collect();
    let mut cache = Cache::new(CACHE_ENTRIES);
    for q in &upstream {
        cache.put(q, &upstream_response(q), 0);
    }
    assert_eq!(cache.len(), n, "every upstream answer is cached");
    let q = &upstream[n - 1];
    assert_eq!(answer(&names, NET, client, q, udp_limit(q), 0, &mut out), Outcome::Forward);
    let mut hit = Vec::with_capacity(512);
    assert!(cache.get(q, NOW, &mut hit), "a cache hit");
    fit(&hit, udp_limit(q), &mut out);
    assert_eq!(reply_answers(q, &out).len(), 2);
    assert_eq!(Message::from_vec(&out).expect("the reply parses").answers[0].ttl, 300 - 42, "TTLs counted down");

    let picks = spread(&upstream, &mut rng);
    let mut g = c.benchmark_group("dns_upstream");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function(BenchmarkId::new("forward", n), |b| {
        b.iter(|| {
            i = (i + 1) & (PICKS - 1);
            let q = black_box(&picks[i]);
            answer(&names, NET, client, q, udp_limit(q), 0, &mut out)
        })
    });
    let mut i = 0usize;
    g.bench_function(BenchmarkId::new("cache_hit", n), |b| {
        b.iter(|| {
            i = (i + 1) & (PICKS - 1);
            let q = black_box(&picks[i]);
            let max = udp_limit(q);
            if answer(&names, NET, client, q, max, 0, &mut out) == Outcome::Forward && cache.get(q, NOW, &mut hit) {
                fit(&hit, max, &mut out);
            }
            out.len()
        })
    });
    let mut i = 0usize;
    g.bench_function(BenchmarkId::new("cache_get", n), |b| {
        b.iter(|| {
            i = (i + 1) & (PICKS - 1);
            cache.get(black_box(&picks[i]), NOW, &mut hit)
        })
    });
    g.finish();
    let stats = cache.stats();
    assert_eq!(stats.misses, 0, "every read was a hit");
}

fn main() {
    let mut c = common::criterion();
    for n in SIZES {
        bench_size(&mut c, n);
    }
    c.final_summary();
}
