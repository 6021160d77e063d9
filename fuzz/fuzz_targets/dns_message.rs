//! `vswitch_dns`: the input is a DNS message (as a UDP payload, or a TCP one without its length
//! prefix), fed to every entry point. `answer()` runs against a fixture of two DNS networks
//! and a third without DNS (names with aliases, a name on both networks, replicas sharing an
//! alias, enough of them to overflow 512 bytes), for queriers on one network, on both, and
//! unknown, under several size limits. Then `udp_limit`, `error_reply`, `fit` (at several
//! sizes), `question`, `id`/`set_id`, and the cache: `put(input, input)`, and, when the input
//! has a question, `put` of it as the response to a query built from that question, then `get`
//! with that query and with its name's case flipped. One cache persists across inputs (8
//! entries, so it evicts; an input replayed alone starts from an empty one), its clock
//! advancing a little per input; the invariants are checked on another, emptied per input.
//!
//! Invariants: `Drop` exactly for inputs shorter than 12 bytes or with QR set; a `Reply`
//! parses as a DNS response with the query's id and fits the limit (a reply with a question
//! echoes the query's question bytes); `Forward` writes nothing. `udp_limit` is within
//! 512..=4096. An error reply exists exactly for inputs of 12 bytes or more, parses, and keeps
//! the id. `fit` returns the input when it fits, else at most `max` bytes (12 when `max` < 12).
//! A cache hit carries the asker's id and question bytes, is as long as the response
//! stored, has no TTL above the stored one, and parses whenever the stored response did (with
//! the hit's id and question).

#![no_main]

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vswitch_dns::hickory_proto::op::{Message, MessageType, ResponseCode};
use vswitch_dns::{answer, error_reply, fit, id, question, set_id, udp_limit, Cache, Names, NamesBuilder, Outcome};

const FRONT: u32 = 1;
const BACK: u32 = 2;
const NO_DNS: u32 = 3;

fn v4(a: u8, b: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 20, a, b)
}

fn fixture() -> Names {
    let mut b = NamesBuilder::new();
    b.network(FRONT, "front").network(BACK, "back");
    b.endpoint(FRONT, "web", "web", &["www".into(), "Web.Alias".into()], Some(v4(0, 2)), Some("fd00::2".parse().unwrap()));
    b.endpoint(FRONT, "db", "db", &[], Some(v4(0, 3)), None);
    b.endpoint(BACK, "db", "db", &["database".into()], Some(v4(1, 3)), Some("fd01::3".parse().unwrap()));
    b.endpoint(BACK, "api", "api", &[], Some(v4(1, 4)), None);
    b.endpoint(NO_DNS, "ghost", "ghost", &[], Some(v4(2, 5)), None);
    for i in 0..40u8 {
        b.endpoint(
            FRONT,
            &format!("r{i}"),
            &format!("replica-{i}"),
            &["pool".into()],
            Some(v4(3, i)),
            Some(Ipv6Addr::new(0xfd00, 3, 0, 0, 0, 0, 0, u16::from(i))),
        );
    }
    b.build()
}

static NAMES: OnceLock<Names> = OnceLock::new();

thread_local! {
    /// Kept across inputs, so that it fills up and evicts.
    static CACHE: RefCell<Cache> = RefCell::new(Cache::new(8).with_max_ttl(600));
    /// Emptied before every input, so that a hit can only be the input.
    static FRESH: RefCell<Cache> = RefCell::new(Cache::new(8).with_max_ttl(600));
    static NOW_MS: Cell<u64> = const { Cell::new(1_000_000) };
    static OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The length of the uncompressed name at 12, if the message has one.
fn qname_len(msg: &[u8]) -> Option<usize> {
    let mut i = 12;
    loop {
        let len = usize::from(*msg.get(i)?);
        if len & 0xc0 != 0 {
            return None;
        }
        i += 1 + len;
        if i - 12 > 255 || i > msg.len() {
            return None;
        }
        if len == 0 {
            return Some(i - 12);
        }
    }
}

fn check_answer(names: &Names, data: &[u8], out: &mut Vec<u8>) {
    let drop = data.len() < 12 || data[2] & 0x80 != 0;
    let clients: [(u32, IpAddr); 5] = [
        (FRONT, IpAddr::V4(v4(0, 2))),
        (FRONT, IpAddr::V4(v4(0, 3))),
        (BACK, "fd01::3".parse().unwrap()),
        (FRONT, IpAddr::V4(Ipv4Addr::new(9, 9, 9, 9))),
        (NO_DNS, IpAddr::V4(v4(2, 5))),
    ];
    let limit = udp_limit(data);
    assert!((512..=4096).contains(&limit), "udp_limit {limit}");
    for (i, &(net, client)) in clients.iter().enumerate() {
        let limits: &[usize] = if i == 0 { &[0, 12, 64, 512, limit, 65535] } else { &[65535] };
        for &max in limits {
            let o = answer(names, net, client, data, max, data.len() as u32, out);
            assert_eq!(o == Outcome::Drop, drop, "{o:?} for a {}-byte input", data.len());
            match o {
                Outcome::Drop | Outcome::Forward => assert!(out.is_empty(), "{o:?} wrote {} bytes", out.len()),
                Outcome::Reply => {
                    assert!(out.len() <= max.max(12), "a {}-byte reply for a limit of {max}", out.len());
                    let m = Message::from_vec(out).unwrap_or_else(|e| panic!("reply does not parse: {e}"));
                    assert_eq!(m.metadata.id, be16(data, 0), "id not echoed");
                    assert_eq!(m.metadata.message_type, MessageType::Response);
                    if be16(out, 4) == 1 {
                        let n = qname_len(out).expect("the reply's question name");
                        assert_eq!(out[12..12 + n + 4], data[12..12 + n + 4], "question not echoed as asked");
                    }
                }
            }
        }
    }
}

fn check_helpers(data: &[u8], out: &mut Vec<u8>) {
    let ok = error_reply(data, ResponseCode::ServFail, out);
    assert_eq!(ok, data.len() >= 12);
    if ok {
        let m = Message::from_vec(out).unwrap_or_else(|e| panic!("error reply does not parse: {e}"));
        assert_eq!(m.metadata.id, be16(data, 0));
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert!(out.len() <= 12 + 259 + 11);
    } else {
        assert!(out.is_empty());
    }
    for max in [0, 11, 12, 40, 100, 512] {
        fit(data, max, out);
        if data.len() <= max {
            assert_eq!(out[..], data[..], "a message that fits was changed");
        } else if data.len() >= 12 {
            assert!(out.len() <= max.max(12), "fit({max}) gave {} bytes", out.len());
            assert_eq!(out[..2], data[..2]);
            assert!(out[2] & 0x02 != 0, "no TC bit");
        } else {
            assert!(out.is_empty());
        }
    }
    if let Some((name, _)) = question(data) {
        assert_eq!(name, name.to_ascii_lowercase());
    }
    let mut copy = data.to_vec();
    set_id(&mut copy, 0xfeed);
    assert_eq!(id(&copy), (data.len() >= 2).then_some(0xfeed));
}

/// TTLs of every record, for comparing a cache hit with what was stored.
fn ttls(m: &Message) -> Vec<u32> {
    m.all_sections().map(|r| r.ttl).collect()
}

fn check_cache(data: &[u8], out: &mut Vec<u8>) {
    let now = NOW_MS.get() + 1000 * (data.len() as u64 % 7);
    NOW_MS.set(now);
    // The input as the response to a query for its own question.
    let query = qname_len(data).filter(|&n| data.len() >= 12 + n + 4 && be16(data, 4) != 0).map(|n| {
        let mut query = Vec::with_capacity(16 + n);
        query.extend_from_slice(&data[..2]);
        query.extend_from_slice(&[data[2] & 0x01, data[3] & 0x10, 0, 1, 0, 0, 0, 0, 0, 0]);
        query.extend_from_slice(&data[12..12 + n + 4]);
        (query, n)
    });
    CACHE.with_borrow_mut(|cache| {
        cache.put(data, data, now);
        let _ = cache.get(data, now, out);
        if let Some((query, _)) = &query {
            cache.put(query, data, now);
            let _ = cache.get(query, now + 1000, out);
        }
    });
    let Some((query, n)) = query else { return };
    FRESH.with_borrow_mut(|cache| {
        cache.clear();
        cache.put(&query, data, now);
        for (later, flip) in [(0u64, false), (1500, true), (600_000, false)] {
            let mut asked = query.clone();
            set_id(&mut asked, 0x5a5a);
            if flip {
                for b in &mut asked[13..12 + n] {
                    if b.is_ascii_alphabetic() {
                        *b ^= 0x20;
                    }
                }
            }
            if !cache.get(&asked, now + later, out) {
                continue;
            }
            assert_eq!(id(out), Some(0x5a5a), "hit without the asker's id");
            assert_eq!(out[12..12 + n + 4], asked[12..12 + n + 4], "hit without the asker's question");
            assert_eq!(out.len(), data.len(), "hit not as long as the response stored");
            // The response stored with the hit's id, RD bit and question: only TTLs may differ,
            // and TTLs do not change how a message parses.
            let mut same = data.to_vec();
            same[..2].copy_from_slice(&out[..2]);
            same[2] = (same[2] & !1) | (out[2] & 1);
            same[12..12 + n].copy_from_slice(&out[12..12 + n]);
            if let Ok(stored) = Message::from_vec(&same) {
                let hit = Message::from_vec(out).unwrap_or_else(|e| panic!("hit does not parse though the stored response did: {e}"));
                assert_eq!(hit.answers.len(), stored.answers.len());
                for (h, s) in ttls(&hit).iter().zip(ttls(&stored)) {
                    assert!(*h <= s, "TTL {h} served for a stored {s}");
                }
            }
        }
    });
}

fuzz_target!(|data: &[u8]| {
    let names = NAMES.get_or_init(fixture);
    OUT.with_borrow_mut(|out| {
        check_answer(names, data, out);
        check_helpers(data, out);
        check_cache(data, out);
    });
});
