//! Connection tracking's costs: a lookup that hits in a table of 100k flows (by key, and by id
//! with a packet reported), an insertion and removal beside 100k flows, and expiring 10k due
//! flows out of 100k: alone, and with the 90k others refreshed since their heap entries were
//! pushed, so that each of those is looked at and pushed back (the worst case of lazy deletion).
//!
//! `cargo bench -p vswitch-nat`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use vswitch_nat::{Conntrack, Dir, FlowId, FlowKey, Proto, Timeouts};

const FLOWS: u32 = 100_000;
const DUE: u32 = 10_000;

/// Flow `i`: one of 250 containers, 400 source ports each, to one of 16 servers.
fn key(i: u32, proto: Proto) -> FlowKey {
    let src = IpAddr::V4(Ipv4Addr::from(0x0a00_0002 + i % 250));
    let dst = IpAddr::V4(Ipv4Addr::from(0x0101_0100 + i % 16));
    FlowKey::new(proto, SocketAddr::new(src, 10_000 + (i / 250) as u16), SocketAddr::new(dst, 443))
}

/// A table of `FLOWS` UDP flows: the first `DUE` unreplied since 0 s (due at 30 s), the others
/// replied (due at 120 s after their last packet). With `refreshed`, the others were created at
/// 0 s too, so their first heap entries are due at 30 s as well; else they came at 20 s.
fn table(refreshed: bool) -> (Conntrack<u32>, Vec<FlowId>) {
    let mut ct = Conntrack::new(2 * FLOWS as usize, Timeouts::default());
    let ids = (0..FLOWS)
        .map(|i| {
            let at = if i < DUE || refreshed { 0 } else { 20_000 };
            let (id, _) = ct.get_or_insert_with(key(i, Proto::Udp), at, || i).unwrap();
            if i >= DUE {
                ct.on_packet(id, Dir::Reply, 100, at);
            }
            id
        })
        .collect();
    (ct, ids)
}

fn bench_conntrack(c: &mut Criterion) {
    let (mut ct, ids) = table(false);
    let keys: Vec<FlowKey> = (0..FLOWS).map(|i| key(i, Proto::Udp)).collect();
    // A stride through the table, so that consecutive lookups touch different cache lines.
    let mut n = 0usize;
    c.bench_function("conntrack/lookup_hit_100k", |b| {
        b.iter(|| {
            n = (n + 7919) % keys.len();
            let (_, f) = ct.get_or_insert_with(black_box(keys[n]), 1, || unreachable!()).unwrap();
            black_box(f.value)
        })
    });
    c.bench_function("conntrack/find_reply_100k", |b| {
        b.iter(|| {
            n = (n + 7919) % keys.len();
            black_box(ct.find(&black_box(keys[n]).reversed()))
        })
    });
    c.bench_function("conntrack/on_packet_by_id_100k", |b| {
        b.iter(|| {
            n = (n + 7919) % ids.len();
            black_box(ct.on_packet(black_box(ids[n]), Dir::Orig, 1400, 2))
        })
    });

    let mut p = 0u32;
    c.bench_function("conntrack/insert_remove_beside_100k", |b| {
        b.iter(|| {
            p = p.wrapping_add(1);
            let (id, _) = ct.get_or_insert_with(black_box(key(FLOWS + p % 1000, Proto::Tcp)), 3, || p).unwrap();
            black_box(ct.remove(id))
        })
    });
    let mut out = Vec::new();
    c.bench_function("conntrack/expire_none_due_100k", |b| {
        b.iter(|| {
            ct.expire(black_box(4), &mut out);
            black_box(out.len())
        })
    });

    let mut group = c.benchmark_group("conntrack");
    group.sample_size(20);
    for (name, refreshed) in [("expire_10k_due_of_100k", false), ("expire_10k_due_of_100k_90k_refreshed", true)] {
        let (base, _) = table(refreshed);
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || (base.clone(), Vec::with_capacity(DUE as usize)),
                |(ct, out)| {
                    ct.expire(30_000, out);
                    assert_eq!(out.len(), DUE as usize);
                    black_box(out.len())
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench_conntrack);
criterion_main!(benches);
