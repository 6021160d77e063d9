//! The embedded DNS's per-query costs: `answer()` for a local A query among 1000 names (and the
//! name lookup alone), and the upstream cache (`Cache::get` hit, `Cache::put`).
//!
//! `cargo bench -p vswitch-dns`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use vswitch_dns::{answer, udp_limit, Cache, Names, NamesBuilder, Outcome};

const NET: u32 = 1;
const OTHER: u32 = 2;

fn addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 | (i + 2))
}

/// 1000 containers on NET, each with its name and an alias, the first 100 also on OTHER.
fn names() -> Names {
    let mut b = NamesBuilder::new();
    b.network(NET, "front").network(OTHER, "back");
    for i in 0..1000 {
        let name = format!("container-{i}");
        b.endpoint(NET, &name, &name, &[format!("svc-{i}")], Some(addr(i)), None);
        if i < 100 {
            b.endpoint(OTHER, &name, &name, &[], Some(Ipv4Addr::from(0x0b00_0000 | (i + 2))), None);
        }
    }
    b.build()
}

fn query(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.edns = Some(e);
    }
    m.to_vec().unwrap()
}

fn bench_answer(c: &mut Criterion) {
    let names = names();
    let client = IpAddr::V4(addr(7));
    let q = query("Container-500.", RecordType::A, true);
    let max = udp_limit(&q);
    let mut out = Vec::with_capacity(512);
    let mut rotate = 0u32;
    c.bench_function("answer/local_a_1000_names", |b| {
        b.iter(|| {
            rotate = rotate.wrapping_add(1);
            let o = answer(black_box(&names), NET, client, black_box(&q), max, rotate, &mut out);
            debug_assert_eq!(o, Outcome::Reply);
            black_box(out.len())
        })
    });
    let q = query("example.com.", RecordType::A, true);
    c.bench_function("answer/forward_decision", |b| b.iter(|| answer(black_box(&names), NET, client, black_box(&q), max, 0, &mut out)));
    let scope = names.scope(NET, client);
    c.bench_function("names/lookup", |b| b.iter(|| names.lookup(black_box(&scope), black_box("container-500"))));
}

/// An upstream answer: two A records and an OPT record, as a recursive resolver sends it.
fn upstream_response(q: &[u8]) -> Vec<u8> {
    let qm = Message::from_vec(q).unwrap();
    let mut r = Message::new(qm.metadata.id, MessageType::Response, OpCode::Query);
    r.metadata.recursion_desired = true;
    r.metadata.recursion_available = true;
    r.add_query(qm.queries[0].clone());
    for i in 0..2 {
        r.add_answer(Record::from_rdata(qm.queries[0].name().clone(), 300, RData::A(A::new(93, 184, 216, 34 + i))));
    }
    r.edns = qm.edns.clone();
    r.to_vec().unwrap()
}

fn bench_cache(c: &mut Criterion) {
    let mut cache = Cache::new(10_000);
    // A populated cache: 5000 other names.
    for i in 0..5000 {
        let q = query(&format!("host-{i}.example.com."), RecordType::A, true);
        cache.put(&q, &upstream_response(&q), 0);
    }
    let q = query("www.example.com.", RecordType::A, true);
    cache.put(&q, &upstream_response(&q), 0);
    let asked = query("WWW.example.COM.", RecordType::A, true);
    let mut out = Vec::with_capacity(512);
    c.bench_function("cache/get_hit", |b| {
        b.iter(|| {
            let hit = cache.get(black_box(&asked), 42_000, &mut out);
            debug_assert!(hit);
            black_box(out.len())
        })
    });
    let r = upstream_response(&q);
    c.bench_function("cache/put_replace", |b| b.iter(|| cache.put(black_box(&q), black_box(&r), 42_000)));
}

criterion_group!(benches, bench_answer, bench_cache);
criterion_main!(benches);
