//! Helpers for the forwarding path: the size a UDP reply may take, error replies, truncation,
//! the message id, and a query's question for logs and counters.
//!
//! They work on the bytes as received (see [`crate::wire`]): an upstream answer is passed on as
//! the upstream server wrote it, never decoded and re-encoded.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::wire::{self, Header, EDNS_DO, FLAG_CD, FLAG_QR, FLAG_RA, FLAG_RD, FLAG_TC, HEADER_LEN, OPCODE_MASK};

/// The UDP payload size our own replies advertise in their OPT record: the DNS Flag Day 2020
/// value, which fits the IPv6 minimum MTU without fragmenting.
pub const EDNS_PAYLOAD: u16 = 1232;
/// A UDP reply without EDNS (RFC 1035 §4.2.1).
pub const UDP_MIN: usize = 512;
/// The most [`udp_limit`] allows, whatever a client advertises.
pub const UDP_MAX: usize = 4096;

/// The most a UDP reply to this query may take: 512, or the EDNS payload size it advertises
/// (clamped to 512..=4096). 512 for anything that does not parse.
pub fn udp_limit(query: &[u8]) -> usize {
    match wire::walk(query, |_, _| {}).and_then(|s| s.opt) {
        Some(opt) => usize::from(opt.payload).clamp(UDP_MIN, UDP_MAX),
        None => UDP_MIN,
    }
}

/// Writes to `out` a reply with `rcode` (e.g. ServFail, FormErr, Refused, NotImp): the query's
/// id, opcode and RD and CD bits, RA set, and its question when it has exactly one that parses
/// (else none). When the query carries an OPT record the reply carries one of ours
/// ([`EDNS_PAYLOAD`], no options, the query's DO bit) with the upper bits of an extended
/// `rcode`; without one, only
/// the lower 4 bits of the rcode can be said. False (and `out` empty) if the query has no
/// 12-byte header.
pub fn error_reply(query: &[u8], rcode: ResponseCode, out: &mut Vec<u8>) -> bool {
    out.clear();
    let Some(h) = Header::read(query) else { return false };
    let question = if h.qd == 1 { wire::first_question(query) } else { None };
    let opt = wire::walk(query, |_, _| {}).and_then(|s| s.opt);
    let flags = FLAG_QR | (h.flags & (OPCODE_MASK | FLAG_RD | FLAG_CD)) | FLAG_RA | u16::from(rcode.low());
    let reply = Header { id: h.id, flags, qd: u16::from(question.is_some()), an: 0, ns: 0, ar: u16::from(opt.is_some()) };
    reply.write(out);
    if let Some(q) = question {
        out.extend_from_slice(&query[q.name.start..q.end()]);
    }
    if let Some(opt) = opt {
        wire::write_opt(out, EDNS_PAYLOAD, rcode.high(), opt.flags & EDNS_DO);
    }
    true
}

/// `response` cut to fit `max` bytes: as-is when it fits; else its header with TC set, its
/// question section and its OPT record (RFC 6891 §7 wants it in truncated replies too), without
/// the answer, authority and other additional records. The question, then the OPT record, is
/// left out too when even that does not fit (and the whole question section when it does not
/// parse); the result is then at most `max` bytes whenever `max` ≥ 12. Nothing is written for
/// a response too long for `max` that has no 12-byte header.
pub fn fit(response: &[u8], max: usize, out: &mut Vec<u8>) {
    out.clear();
    if response.len() <= max {
        out.extend_from_slice(response);
        return;
    }
    let Some(h) = Header::read(response) else { return };
    // Every question, each name uncompressed: a pointer in the question section could only
    // point into the header, which is rewritten here.
    let mut questions_end = Some(HEADER_LEN);
    for _ in 0..h.qd {
        questions_end = questions_end.and_then(|at| wire::question_at(response, at)).map(|q| q.end());
        if questions_end.is_none() {
            break;
        }
    }
    let questions_end = questions_end.filter(|&end| end <= max);
    let opt = wire::walk(response, |_, _| {}).and_then(|s| s.opt);

    let start = out.len();
    let mut reply = Header { flags: h.flags | FLAG_TC, qd: 0, an: 0, ns: 0, ar: 0, ..h };
    reply.write(out);
    if let Some(end) = questions_end {
        reply.qd = h.qd;
        out.extend_from_slice(&response[HEADER_LEN..end]);
    }
    if let Some(opt) = opt {
        let opt_len = wire::OPT_LEN + opt.rdata.len();
        if out.len() + opt_len <= max {
            reply.ar = 1;
            out.push(0);
            out.extend_from_slice(&wire::TYPE_OPT.to_be_bytes());
            out.extend_from_slice(&opt.payload.to_be_bytes());
            out.extend_from_slice(&[opt.ext_rcode, opt.version]);
            out.extend_from_slice(&opt.flags.to_be_bytes());
            out.extend_from_slice(&(opt.rdata.len() as u16).to_be_bytes());
            out.extend_from_slice(&response[opt.rdata]);
        }
    }
    out[start..start + HEADER_LEN].copy_from_slice(&reply.to_bytes());
}

/// The message's id.
pub fn id(msg: &[u8]) -> Option<u16> {
    wire::be16(msg, 0)
}

/// Sets the message's id (nothing if it is shorter than 2 bytes).
pub fn set_id(msg: &mut [u8], id: u16) {
    if let Some(b) = msg.get_mut(..2) {
        b.copy_from_slice(&id.to_be_bytes());
    }
}

/// Key info of a query for logging and counting: its first question's name, lowercased, in
/// presentation form with the trailing dot (`example.com.`, `.` for the root; odd bytes
/// escaped as `\DDD`), and its type.
pub fn question(query: &[u8]) -> Option<(String, RecordType)> {
    let q = wire::first_question(query)?;
    let name = Name::read(&mut BinDecoder::new(&query[q.name.clone()])).ok()?;
    Some((name.to_lowercase().to_ascii(), RecordType::from(q.qtype)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{query, query_with};
    use hickory_proto::op::{Edns, Message, MessageType};

    #[test]
    fn udp_limit_follows_edns() {
        assert_eq!(udp_limit(&query("example.com.", RecordType::A)), 512);
        assert_eq!(udp_limit(&query_with("example.com.", RecordType::A, |m| m.edns = Some(edns(1232)))), 1232);
        assert_eq!(udp_limit(&query_with("example.com.", RecordType::A, |m| m.edns = Some(edns(65000)))), 4096);
        assert_eq!(udp_limit(&query_with("example.com.", RecordType::A, |m| m.edns = Some(edns(100)))), 512);
        assert_eq!(udp_limit(&[1, 2, 3]), 512);
    }

    fn edns(payload: u16) -> Edns {
        let mut e = Edns::new();
        e.set_max_payload(payload);
        e
    }

    #[test]
    fn error_reply_echoes_id_rd_and_question() {
        let q = query_with("Example.COM.", RecordType::AAAA, |m| {
            m.metadata.id = 0x1234;
            m.metadata.recursion_desired = true;
        });
        let mut out = Vec::new();
        assert!(error_reply(&q, ResponseCode::ServFail, &mut out));
        let r = Message::from_vec(&out).unwrap();
        assert_eq!(r.metadata.id, 0x1234);
        assert_eq!(r.metadata.message_type, MessageType::Response);
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        assert!(r.metadata.recursion_desired && r.metadata.recursion_available);
        assert_eq!(r.queries[0].name().to_ascii(), "Example.COM.");
        assert!(r.edns.is_none());

        let q = query_with("example.com.", RecordType::A, |m| m.edns = Some(edns(4096)));
        assert!(error_reply(&q, ResponseCode::Refused, &mut out));
        let r = Message::from_vec(&out).unwrap();
        assert_eq!(r.edns.as_ref().map(Edns::max_payload), Some(EDNS_PAYLOAD));
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);

        assert!(!error_reply(&q[..11], ResponseCode::FormErr, &mut out));
        assert!(out.is_empty());
        // A header alone: a reply with no question.
        assert!(error_reply(&q[..12], ResponseCode::FormErr, &mut out));
        assert_eq!(out.len(), 12);
        assert_eq!(u16::from_be_bytes([out[4], out[5]]), 0);
    }

    #[test]
    fn fit_truncates_to_question_and_opt() {
        let mut r = Message::new(7, MessageType::Response, hickory_proto::op::OpCode::Query);
        r.add_query(hickory_proto::op::Query::query("big.example.".parse().unwrap(), RecordType::A));
        for i in 0..100u8 {
            r.add_answer(hickory_proto::rr::Record::from_rdata(
                "big.example.".parse().unwrap(),
                60,
                hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A::new(10, 0, 0, i)),
            ));
        }
        r.edns = Some(edns(1232));
        let bytes = r.to_vec().unwrap();
        let mut out = Vec::new();
        fit(&bytes, 65535, &mut out);
        assert_eq!(out, bytes);
        fit(&bytes, 512, &mut out);
        assert!(out.len() <= 512);
        let t = Message::from_vec(&out).unwrap();
        assert!(t.metadata.truncation);
        assert_eq!(t.metadata.id, 7);
        assert!(t.answers.is_empty());
        assert_eq!(t.queries.len(), 1);
        assert_eq!(t.edns.as_ref().map(Edns::max_payload), Some(1232));
        // Room for the header and the question, not the OPT record.
        fit(&bytes, 12 + 17 + 5, &mut out);
        assert_eq!(out.len(), 12 + 17);
        assert_eq!(Message::from_vec(&out).unwrap().queries.len(), 1);
        fit(&bytes, 12, &mut out);
        assert_eq!(out.len(), 12);
    }

    #[test]
    fn ids_and_questions() {
        let mut q = query("WWW.Example.org.", RecordType::MX);
        set_id(&mut q, 0xbeef);
        assert_eq!(id(&q), Some(0xbeef));
        assert_eq!(question(&q), Some(("www.example.org.".to_owned(), RecordType::MX)));
        assert_eq!(question(&q[..20]), None);
        assert_eq!(question(&query(".", RecordType::NS)), Some((".".to_owned(), RecordType::NS)));
        assert_eq!(id(&[1]), None);
        set_id(&mut [1], 2);
    }
}
