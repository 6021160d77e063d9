//! Answers one query from the local names, or says it is to be forwarded or dropped.
//!
//! What is answered here, as Docker's embedded DNS and aardvark-dns do:
//! - A, AAAA and ANY (both) for the names of [`Names::lookup`] within the querier's
//!   [`Names::scope`]; every address of every matching endpoint, rotated by the caller's
//!   counter so that repeated queries start with a different one;
//! - PTR for the `in-addr.arpa` / `ip6.arpa` name of an endpoint address in scope:
//!   `name.network.` ([`Names::reverse`]);
//! - any other type for a local name (or for the reverse name of a local address): NOERROR with
//!   no answers (NODATA), never forwarded, so a container's names never leak upstream;
//! - a local name asked in a class other than IN (or ANY): REFUSED, for the same reason;
//! - a query with EDNS version above 0 for a local name: BADVERS (RFC 6891 §6.1.3).
//!
//! Replies to local names are authoritative (AA), say recursion is available (RA, the daemon
//! forwards), copy RD and CD, echo the question exactly as asked (resolvers that randomize the
//! case of names, "0x20", compare it) and use it as the owner of every answer; TTLs are
//! [`LOCAL_TTL`]. A query with an OPT record gets one back, advertising [`EDNS_PAYLOAD`] with
//! no options, its DO bit copied from the query's (RFC 3225 §3; nothing here is signed, so
//! there are no signatures to add).

use std::net::{IpAddr, Ipv6Addr};

use hickory_proto::op::{Edns, Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use crate::msg::{error_reply, fit, EDNS_PAYLOAD};
use crate::names::MAX_NAME_TEXT;
use crate::wire::Header;
use crate::{Names, NetId, LOCAL_TTL};

/// What [`answer`] did with a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A complete reply was written to `out` (local answer, or an error reply such as
    /// FORMERR/NOTIMP/REFUSED).
    Reply,
    /// Not a local name: the caller forwards the query upstream (after checking the Cache).
    Forward,
    /// Not worth a reply (shorter than a header, or a response rather than a query): drop
    /// silently.
    Drop,
}

/// Answers `query` (a DNS message as received, without the TCP length prefix) from `names` for
/// a querier on `net` at `client`.
///
/// `max_len`: the most the reply may take (UDP: [`crate::udp_limit`], or less for the path's
/// MTU; TCP: 65535); a longer reply is replaced by a truncated one (TC set, header, question and
/// OPT record only: see [`fit`]). `rotate`: a counter the caller bumps per query; the order of
/// several addresses for one name is rotated by it.
///
/// In order: fewer than 12 bytes, or QR set → [`Outcome::Drop`]; an opcode other than QUERY →
/// NOTIMP; QDCOUNT other than 1, or a message that does not parse → FORMERR; a name that is
/// not local → [`Outcome::Forward`] (`out` is left empty); else the local answer.
pub fn answer(names: &Names, net: NetId, client: IpAddr, query: &[u8], max_len: usize, rotate: u32, out: &mut Vec<u8>) -> Outcome {
    out.clear();
    let Some(h) = Header::read(query) else { return Outcome::Drop };
    if h.is_response() {
        return Outcome::Drop;
    }
    if h.opcode() != u8::from(OpCode::Query) {
        return error(query, ResponseCode::NotImp, max_len, out);
    }
    if h.qd != 1 {
        return error(query, ResponseCode::FormErr, max_len, out);
    }
    let Ok(msg) = Message::from_vec(query) else { return error(query, ResponseCode::FormErr, max_len, out) };
    let Some(q) = msg.queries.first() else { return error(query, ResponseCode::FormErr, max_len, out) };

    let mut buf = [0u8; MAX_NAME_TEXT + 2];
    let Some(key) = lower_key(q.name(), &mut buf) else { return Outcome::Forward };
    let scope = names.scope(net, client);
    let local = match arpa_ip(key) {
        Some(ip) => names.reverse(&scope, ip).map(Local::Ptr),
        None => names.lookup_lower(&scope, key).map(Local::Addrs),
    };
    let Some(local) = local else { return Outcome::Forward };
    if !matches!(q.query_class(), DNSClass::IN | DNSClass::ANY) {
        return error(query, ResponseCode::Refused, max_len, out);
    }
    if msg.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return error(query, ResponseCode::BADVERS, max_len, out);
    }

    let owner = q.name();
    let qtype = q.query_type();
    let mut reply = Message::response(msg.metadata.id, OpCode::Query);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = msg.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.checking_disabled = msg.metadata.checking_disabled;
    reply.add_query(q.clone());
    match local {
        Local::Addrs(addrs) => {
            if matches!(qtype, RecordType::A | RecordType::ANY) {
                let mut v4: Vec<Record> = addrs
                    .iter()
                    .filter_map(|ip| match ip {
                        IpAddr::V4(a) => Some(Record::from_rdata(owner.clone(), LOCAL_TTL, RData::A(A(*a)))),
                        IpAddr::V6(_) => None,
                    })
                    .collect();
                rotate_by(&mut v4, rotate);
                reply.answers.extend(v4);
            }
            if matches!(qtype, RecordType::AAAA | RecordType::ANY) {
                let mut v6: Vec<Record> = addrs
                    .iter()
                    .filter_map(|ip| match ip {
                        IpAddr::V6(a) => Some(Record::from_rdata(owner.clone(), LOCAL_TTL, RData::AAAA(AAAA(*a)))),
                        IpAddr::V4(_) => None,
                    })
                    .collect();
                rotate_by(&mut v6, rotate);
                reply.answers.extend(v6);
            }
        }
        Local::Ptr(target) => {
            if matches!(qtype, RecordType::PTR | RecordType::ANY) {
                // Names::reverse gives labels of 1 to 63 bytes, 253 bytes at most: this cannot
                // fail, but a failure would only cost the answer, not the reply.
                let Ok(target) = Name::from_labels(target.split('.').map(str::as_bytes)) else {
                    return error(query, ResponseCode::ServFail, max_len, out);
                };
                reply.answers.push(Record::from_rdata(owner.clone(), LOCAL_TTL, RData::PTR(PTR(target))));
            }
        }
    }
    if let Some(asked) = &msg.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD).set_dnssec_ok(asked.flags().dnssec_ok);
        reply.edns = Some(edns);
    }
    if reply.emit(&mut BinEncoder::new(out)).is_err() {
        return error(query, ResponseCode::ServFail, max_len, out);
    }
    shrink_to(out, max_len);
    Outcome::Reply
}

/// What the local names say about a query's name.
enum Local {
    Addrs(Vec<IpAddr>),
    /// The name (`name.network`) for a reverse-lookup name.
    Ptr(String),
}

fn error(query: &[u8], rcode: ResponseCode, max_len: usize, out: &mut Vec<u8>) -> Outcome {
    if !error_reply(query, rcode, out) {
        return Outcome::Drop;
    }
    shrink_to(out, max_len);
    Outcome::Reply
}

/// Replaces a reply longer than `max_len` by its truncated form.
fn shrink_to(out: &mut Vec<u8>, max_len: usize) {
    if out.len() > max_len {
        let full = std::mem::take(out);
        fit(&full, max_len, out);
    }
}

fn rotate_by<T>(v: &mut [T], rotate: u32) {
    if !v.is_empty() {
        let by = rotate as usize % v.len();
        v.rotate_left(by);
    }
}

/// `name` lowercased in presentation form without the trailing dot, in `buf`; None if it cannot
/// be a local name (a label with a dot in it: `a\.b` is not `a.b`).
fn lower_key<'b>(name: &Name, buf: &'b mut [u8; MAX_NAME_TEXT + 2]) -> Option<&'b [u8]> {
    let mut len = 0;
    for label in name.iter() {
        if label.contains(&b'.') {
            return None;
        }
        let sep = usize::from(len > 0);
        let end = len + sep + label.len();
        if end > buf.len() {
            return None;
        }
        if sep == 1 {
            buf[len] = b'.';
        }
        buf[len + sep..end].copy_from_slice(label);
        len = end;
    }
    let key = &mut buf[..len];
    key.make_ascii_lowercase();
    Some(key)
}

/// The address a full reverse-lookup name stands for: `d.c.b.a.in-addr.arpa` (four decimal
/// octets) or the 32 nibbles of `….ip6.arpa`; None for anything else, partial names included.
fn arpa_ip(key: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(key).ok()?;
    if let Some(rest) = s.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let mut n = 0;
        for label in rest.split('.') {
            if n == 4 {
                return None;
            }
            octets[3 - n] = decimal_octet(label)?;
            n += 1;
        }
        return (n == 4).then(|| IpAddr::from(octets));
    }
    let rest = s.strip_suffix(".ip6.arpa")?;
    let mut bits = 0u128;
    let mut n = 0;
    for label in rest.split('.') {
        if n == 32 || label.len() != 1 {
            return None;
        }
        let nibble = char::from(label.as_bytes()[0]).to_digit(16)?;
        bits |= u128::from(nibble) << (4 * n);
        n += 1;
    }
    (n == 32).then(|| IpAddr::V6(Ipv6Addr::from(bits)))
}

/// 0 to 255 written as a reverse-lookup label writes it: no sign, no leading zeros.
fn decimal_octet(label: &str) -> Option<u8> {
    let ok =
        !label.is_empty() && label.len() <= 3 && label.bytes().all(|b| b.is_ascii_digit()) && (label == "0" || !label.starts_with('0'));
    if ok {
        label.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::{MessageType, Query};

    use super::*;
    use crate::test_util::{query, query_with};
    use crate::NamesBuilder;

    const A_NET: NetId = 1;
    const B_NET: NetId = 2;

    fn v4(d: u8) -> Ipv4Addr {
        Ipv4Addr::new(172, 20, 0, d)
    }

    /// Network "front" (A) and "back" (B). web: A only, with alias "www" and an IPv6 address.
    /// db: A and B (one sandbox). api: B only. Three "pool" replicas on A.
    fn names() -> Names {
        let mut b = NamesBuilder::new();
        b.network(A_NET, "front").network(B_NET, "back");
        b.endpoint(A_NET, "web", "web", &["www".into()], Some(v4(2)), Some("fd00::2".parse().unwrap()));
        b.endpoint(A_NET, "db", "db", &[], Some(v4(3)), None);
        b.endpoint(B_NET, "db", "db", &[], Some(Ipv4Addr::new(172, 21, 0, 3)), None);
        b.endpoint(B_NET, "api", "api", &[], Some(Ipv4Addr::new(172, 21, 0, 4)), None);
        for i in 0..3 {
            b.endpoint(A_NET, &format!("pool{i}"), &format!("pool{i}"), &["pool".into()], Some(v4(10 + i)), None);
        }
        b.build()
    }

    fn web_client() -> IpAddr {
        IpAddr::V4(v4(2))
    }

    fn db_client() -> IpAddr {
        IpAddr::V4(v4(3))
    }

    fn ask(n: &Names, client: IpAddr, q: &[u8]) -> (Outcome, Option<Message>) {
        let mut out = Vec::new();
        let o = answer(n, A_NET, client, q, 65535, 0, &mut out);
        let m = (o == Outcome::Reply).then(|| Message::from_vec(&out).unwrap());
        (o, m)
    }

    fn addrs(m: &Message) -> Vec<IpAddr> {
        m.answers
            .iter()
            .map(|r| match &r.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_and_aaaa_and_any() {
        let n = names();
        let (o, m) = ask(&n, web_client(), &query("web.", RecordType::A));
        assert_eq!(o, Outcome::Reply);
        let m = m.unwrap();
        assert_eq!(addrs(&m), vec![IpAddr::V4(v4(2))]);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert!(m.metadata.authoritative && m.metadata.recursion_available);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers[0].ttl, LOCAL_TTL);
        let (_, m) = ask(&n, web_client(), &query("web.", RecordType::AAAA));
        assert_eq!(addrs(&m.unwrap()), vec!["fd00::2".parse::<IpAddr>().unwrap()]);
        let (_, m) = ask(&n, web_client(), &query("www.", RecordType::ANY));
        assert_eq!(addrs(&m.unwrap()), vec![IpAddr::V4(v4(2)), "fd00::2".parse().unwrap()]);
    }

    #[test]
    fn nodata_for_other_types_and_missing_families() {
        let n = names();
        for t in [RecordType::AAAA, RecordType::MX, RecordType::TXT, RecordType::SRV] {
            let (o, m) = ask(&n, web_client(), &query("db.", t));
            assert_eq!(o, Outcome::Reply, "{t}");
            let m = m.unwrap();
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert!(m.answers.is_empty(), "{t}");
        }
    }

    #[test]
    fn case_insensitive_and_the_question_is_echoed_as_asked() {
        let n = names();
        let q = query_with("wEb.", RecordType::A, |m| {
            m.metadata.id = 0x4242;
            m.metadata.recursion_desired = true;
        });
        let mut out = Vec::new();
        assert_eq!(answer(&n, A_NET, web_client(), &q, 512, 0, &mut out), Outcome::Reply);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.id, 0x4242);
        assert!(m.metadata.recursion_desired);
        assert_eq!(m.queries[0].name().to_ascii(), "wEb.");
        assert_eq!(m.answers[0].name.to_ascii(), "wEb.");
        // The wire bytes of the question, exactly.
        assert_eq!(&out[12..17], &[3, b'w', b'E', b'b', 0]);
        let (_, m) = ask(&n, web_client(), &query("WEB.FRONT.", RecordType::A));
        assert_eq!(addrs(&m.unwrap()), vec![IpAddr::V4(v4(2))]);
    }

    #[test]
    fn scoping() {
        let n = names();
        // web is on A only: it does not see api (on B), not even as api.back.
        assert_eq!(ask(&n, web_client(), &query("api.", RecordType::A)).0, Outcome::Forward);
        assert_eq!(ask(&n, web_client(), &query("api.back.", RecordType::A)).0, Outcome::Forward);
        assert_eq!(ask(&n, web_client(), &query("db.back.", RecordType::A)).0, Outcome::Forward);
        // db is on A and B: it sees both, and db on both networks.
        let (_, m) = ask(&n, db_client(), &query("api.", RecordType::A));
        assert_eq!(addrs(&m.unwrap()), vec![IpAddr::V4(Ipv4Addr::new(172, 21, 0, 4))]);
        let (_, m) = ask(&n, db_client(), &query("api.back", RecordType::A));
        assert_eq!(addrs(&m.unwrap()), vec![IpAddr::V4(Ipv4Addr::new(172, 21, 0, 4))]);
        let (_, m) = ask(&n, db_client(), &query("db.", RecordType::A));
        assert_eq!(addrs(&m.unwrap()), vec![IpAddr::V4(v4(3)), IpAddr::V4(Ipv4Addr::new(172, 21, 0, 3))]);
        let (_, m) = ask(&n, db_client(), &query("db.back.", RecordType::A));
        assert_eq!(addrs(&m.unwrap()), vec![IpAddr::V4(Ipv4Addr::new(172, 21, 0, 3))]);
        // An unknown client on A sees A only.
        let stranger = IpAddr::V4(v4(200));
        assert_eq!(addrs(&ask(&n, stranger, &query("web.", RecordType::A)).1.unwrap()), vec![IpAddr::V4(v4(2))]);
        assert_eq!(ask(&n, stranger, &query("api.", RecordType::A)).0, Outcome::Forward);
        // Not local at all.
        assert_eq!(ask(&n, web_client(), &query("example.com.", RecordType::A)).0, Outcome::Forward);
        assert_eq!(ask(&n, web_client(), &query(".", RecordType::NS)).0, Outcome::Forward);
    }

    #[test]
    fn rotation_across_calls() {
        let n = names();
        let q = query("pool.", RecordType::A);
        let mut firsts = Vec::new();
        for rotate in 0..3 {
            let mut out = Vec::new();
            assert_eq!(answer(&n, A_NET, web_client(), &q, 512, rotate, &mut out), Outcome::Reply);
            let got = addrs(&Message::from_vec(&out).unwrap());
            assert_eq!(got.len(), 3);
            firsts.push(got[0]);
            let mut sorted = got.clone();
            sorted.sort();
            assert_eq!(sorted, (10..13).map(|d| IpAddr::V4(v4(d))).collect::<Vec<_>>());
        }
        firsts.sort();
        firsts.dedup();
        assert_eq!(firsts.len(), 3, "each call starts with another address");
    }

    #[test]
    fn ptr() {
        let n = names();
        let (o, m) = ask(&n, web_client(), &query("2.0.20.172.in-addr.arpa.", RecordType::PTR));
        assert_eq!(o, Outcome::Reply);
        let m = m.unwrap();
        match &m.answers[0].data {
            RData::PTR(p) => assert_eq!(p.0.to_ascii(), "web.front."),
            other => panic!("{other:?}"),
        }
        let v6 = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
        let m = ask(&n, web_client(), &query(v6, RecordType::PTR)).1.unwrap();
        assert!(matches!(&m.answers[0].data, RData::PTR(p) if p.0.to_ascii() == "web.front."));
        // api is on B: out of web's scope.
        assert_eq!(ask(&n, web_client(), &query("4.0.21.172.in-addr.arpa.", RecordType::PTR)).0, Outcome::Forward);
        assert_eq!(ask(&n, web_client(), &query("8.8.8.8.in-addr.arpa.", RecordType::PTR)).0, Outcome::Forward);
        assert_eq!(ask(&n, web_client(), &query("20.172.in-addr.arpa.", RecordType::SOA)).0, Outcome::Forward);
        // A local reverse name asked for another type: NODATA.
        let m = ask(&n, web_client(), &query("2.0.20.172.in-addr.arpa.", RecordType::A)).1.unwrap();
        assert!(m.answers.is_empty());
        assert_eq!(arpa_ip(b"02.0.20.172.in-addr.arpa"), None, "leading zero");
        assert_eq!(arpa_ip(b"1.2.0.20.172.in-addr.arpa"), None, "five octets");
    }

    #[test]
    fn truncation_when_max_len_is_small() {
        let mut b = NamesBuilder::new();
        b.network(A_NET, "front");
        for i in 0..60u8 {
            b.endpoint(A_NET, &format!("r{i}"), "many", &[], Some(Ipv4Addr::new(10, 1, 0, i)), None);
        }
        let n = b.build();
        let q = query("many.", RecordType::A);
        let mut out = Vec::new();
        assert_eq!(answer(&n, A_NET, web_client(), &q, 65535, 0, &mut out), Outcome::Reply);
        assert_eq!(Message::from_vec(&out).unwrap().answers.len(), 60);
        assert!(out.len() > 512);
        assert_eq!(answer(&n, A_NET, web_client(), &q, 512, 0, &mut out), Outcome::Reply);
        assert!(out.len() <= 512);
        let m = Message::from_vec(&out).unwrap();
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty());
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.queries[0].name().to_ascii(), "many.");
    }

    #[test]
    fn edns_is_echoed() {
        let n = names();
        let q = query_with("web.", RecordType::A, |m| {
            let mut e = Edns::new();
            e.set_max_payload(4096).set_dnssec_ok(true);
            m.edns = Some(e);
        });
        let m = ask(&n, web_client(), &q).1.unwrap();
        let e = m.edns.clone().expect("an OPT record");
        assert_eq!(e.max_payload(), EDNS_PAYLOAD);
        assert_eq!(e.version(), 0);
        assert!(e.flags().dnssec_ok, "DO copied");
        assert_eq!(addrs(&m), vec![IpAddr::V4(v4(2))]);
        assert!(ask(&n, web_client(), &query("web.", RecordType::A)).1.unwrap().edns.is_none());
        // EDNS version 1: BADVERS, with an OPT record saying version 0.
        let q = query_with("web.", RecordType::A, |m| {
            let mut e = Edns::new();
            e.set_version(1);
            m.edns = Some(e);
        });
        let m = ask(&n, web_client(), &q).1.unwrap();
        assert_eq!(u16::from(m.metadata.response_code), 16);
        assert_eq!(m.edns.unwrap().version(), 0);
    }

    #[test]
    fn formerr_notimp_refused_and_drop() {
        let n = names();
        let mut out = Vec::new();
        let q = query("web.", RecordType::A);
        // Shorter than a header, or a response.
        assert_eq!(answer(&n, A_NET, web_client(), &q[..11], 512, 0, &mut out), Outcome::Drop);
        let mut resp = q.clone();
        resp[2] |= 0x80;
        assert_eq!(answer(&n, A_NET, web_client(), &resp, 512, 0, &mut out), Outcome::Drop);
        // NOTIFY (opcode 4).
        let mut notify = q.clone();
        notify[2] = (notify[2] & !0x78) | (4 << 3);
        assert_eq!(answer(&n, A_NET, web_client(), &notify, 512, 0, &mut out), Outcome::Reply);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
        assert_eq!(m.metadata.op_code, OpCode::Notify);
        // Two questions; none; a body cut short.
        let two = query_with("web.", RecordType::A, |m| {
            m.add_query(Query::query("db.".parse().unwrap(), RecordType::A));
        });
        for bad in [&two[..], &q[..12], &q[..q.len() - 1]] {
            let mut fixed = bad.to_vec();
            if bad.len() == 12 {
                fixed[5] = 0;
            }
            assert_eq!(answer(&n, A_NET, web_client(), &fixed, 512, 0, &mut out), Outcome::Reply);
            let m = Message::from_vec(&out).unwrap();
            assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
            assert_eq!(m.metadata.id, msg_id(&fixed));
        }
        // CHAOS class for a local name: REFUSED; for any other name: forwarded.
        let ch = query_with("web.", RecordType::TXT, |m| {
            m.queries[0].set_query_class(DNSClass::CH);
        });
        assert_eq!(answer(&n, A_NET, web_client(), &ch, 512, 0, &mut out), Outcome::Reply);
        assert_eq!(Message::from_vec(&out).unwrap().metadata.response_code, ResponseCode::Refused);
        let ch = query_with("version.bind.", RecordType::TXT, |m| {
            m.queries[0].set_query_class(DNSClass::CH);
        });
        assert_eq!(answer(&n, A_NET, web_client(), &ch, 512, 0, &mut out), Outcome::Forward);
        assert!(out.is_empty());
    }

    fn msg_id(m: &[u8]) -> u16 {
        u16::from_be_bytes([m[0], m[1]])
    }
}
