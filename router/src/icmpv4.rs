//! IPv4 as far as the gateway needs it: validate the header, answer ICMP echo requests (RFC 792)
//! sent to the gateway's address or its DNS address.

use std::net::Ipv4Addr;

use crate::answer::{write_eth, Answer, Reply, ETHERTYPE_IPV4, ETH_HDR_LEN, L2};
use crate::checksum;
use crate::gateway::Gateway;

/// Bytes of an IPv4 header without options.
const IPV4_HDR_LEN: usize = 20;
/// Bytes of the ICMP header that every message has: type, code, checksum, and 4 more.
const ICMP_HDR_LEN: usize = 8;
const PROTO_ICMP: u8 = 1;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
/// More-fragments flag and fragment offset, the bits of the flags word that mark a fragment.
const FRAGMENT_MASK: u16 = 0x3fff;
/// The TTL of what the gateway originates, as Linux's default.
const TTL: u8 = 64;

/// Answers the IPv4 packet `ip` (the Ethernet payload, possibly followed by padding).
pub(crate) fn answer(gw: &Gateway, l2: L2, ip: &[u8], out: &mut [u8]) -> Answer {
    let Some(h) = ip.first_chunk::<IPV4_HDR_LEN>() else { return Answer::Malformed };
    if h[0] >> 4 != 4 {
        return Answer::Malformed;
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    // `total <= ip.len()` leaves Ethernet padding out; `ihl <= total` keeps the header inside it.
    if ihl < IPV4_HDR_LEN || total < ihl || total > ip.len() {
        return Answer::Malformed;
    }
    if checksum::of(&ip[..ihl]) != 0 {
        return Answer::Malformed;
    }
    if u16::from_be_bytes([h[6], h[7]]) & FRAGMENT_MASK != 0 {
        // Reassembly is not worth its memory for pings to the gateway; a large ping is refused.
        return Answer::Ignored;
    }
    let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
    let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
    if h[9] != PROTO_ICMP || !gw.v4_addrs().contains(&Some(dst)) || l2.dst != gw.mac {
        // Traffic through the gateway (routing and NAT are other stages), or a broadcast ping,
        // which Linux does not answer either (icmp_echo_ignore_broadcasts).
        return Answer::Ignored;
    }
    if src.is_unspecified() || src.is_broadcast() || src.is_multicast() {
        // No single host to reply to.
        return Answer::Ignored;
    }
    let icmp = &ip[ihl..total];
    if icmp.len() < ICMP_HDR_LEN || checksum::of(icmp) != 0 {
        return Answer::Malformed;
    }
    if icmp[0] != ICMP_ECHO_REQUEST {
        return Answer::Ignored;
    }

    // The reply carries no IP options: none of them asks anything of an echo reply that we owe.
    let ip_len = IPV4_HDR_LEN + icmp.len();
    let len = ETH_HDR_LEN + ip_len;
    let Some(r) = out.get_mut(..len) else { return Answer::TooBig };
    write_eth(r, l2.src, gw.mac, ETHERTYPE_IPV4);
    let (rh, rm) = r[ETH_HDR_LEN..].split_at_mut(IPV4_HDR_LEN);
    rh[0] = 0x45;
    rh[1] = h[1]; // DSCP and ECN, kept as the request had them (as Linux does)
                  // `ip_len` fits: it is no larger than the request's `total`, which came from a u16.
    rh[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    rh[4..6].copy_from_slice(&h[4..6]); // identification: the reply is one unfragmented datagram
    rh[6..8].copy_from_slice(&0u16.to_be_bytes());
    rh[8] = TTL;
    rh[9] = PROTO_ICMP;
    rh[10..12].copy_from_slice(&0u16.to_be_bytes());
    rh[12..16].copy_from_slice(&dst.octets());
    rh[16..20].copy_from_slice(&src.octets());
    let ip_sum = checksum::of(rh);
    rh[10..12].copy_from_slice(&ip_sum.to_be_bytes());

    rm.copy_from_slice(icmp);
    rm[0] = ICMP_ECHO_REPLY;
    rm[1] = 0;
    rm[2..4].copy_from_slice(&0u16.to_be_bytes());
    let icmp_sum = checksum::of(rm);
    rm[2..4].copy_from_slice(&icmp_sum.to_be_bytes());
    Answer::Reply { kind: Reply::IcmpEcho, len }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::{answer, REPLY_BUF};
    use crate::fixtures::*;

    /// An edit that turns a fixture into the case under test.
    type Edit = fn(&mut [u8]);

    fn ask(f: &[u8]) -> (Answer, Vec<u8>) {
        let mut out = [0u8; REPLY_BUF];
        let a = answer(&gw(), f, &mut out);
        let len = if let Answer::Reply { len, .. } = a { len } else { 0 };
        (a, out[..len].to_vec())
    }

    #[test]
    fn echo_request_gets_the_exact_reply_with_valid_checksums() {
        assert!(checksums_valid(&ECHO_REQUEST));
        let (a, reply) = ask(&ECHO_REQUEST);
        assert_eq!(a, Answer::Reply { kind: Reply::IcmpEcho, len: ECHO_REQUEST.len() });
        assert_eq!(reply, ECHO_REPLY);
        // Recomputed here rather than trusted: the header sums to zero, and so does the message.
        assert_eq!(checksum::of(&reply[14..34]), 0);
        assert_eq!(checksum::of(&reply[34..]), 0);
        assert_eq!(reply[22], 64, "TTL");
        assert_eq!(reply[42..], ECHO_REQUEST[42..], "identifier, sequence and data preserved");
    }

    #[test]
    fn every_truncation_is_malformed() {
        for len in 0..ECHO_REQUEST.len() {
            assert_eq!(ask(&ECHO_REQUEST[..len]), (Answer::Malformed, vec![]), "{len}");
        }
    }

    #[test]
    fn ethernet_padding_after_the_datagram_is_left_out_of_the_reply() {
        let mut f = ECHO_REQUEST.to_vec();
        f.extend_from_slice(&[0xee; 10]);
        assert_eq!(ask(&f).1, ECHO_REPLY);
    }

    #[test]
    fn bad_headers_and_checksums_are_malformed() {
        // The second field says whether the IP header checksum is made right again after the
        // edit, so that the edit itself, not a stale checksum, is what gets the frame refused.
        let cases: [(&str, bool, Edit); 6] = [
            ("IP checksum", false, |f| f[24] ^= 1),
            ("ICMP checksum", false, |f| f[36] ^= 1),
            ("version 6", true, |f| f[14] = 0x65),
            ("IHL 4", true, |f| f[14] = 0x44),
            ("total length past the frame", true, |f| f[17] += 1),
            ("total length inside the header", true, |f| f[17] = 19),
        ];
        for (what, refix, edit) in cases {
            let mut f = ECHO_REQUEST;
            edit(&mut f);
            if refix {
                fix_ip_header_checksum(&mut f);
            }
            assert_eq!(ask(&f), (Answer::Malformed, vec![]), "{what}");
        }
    }

    fn fix_ip_header_checksum(f: &mut [u8]) {
        f[24..26].fill(0);
        let c = checksum::of(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn an_icmp_message_shorter_than_its_header_is_malformed() {
        let mut f = ECHO_REQUEST[..34 + 4].to_vec();
        f[17] = 24;
        fix_ip_header_checksum(&mut f);
        assert_eq!(ask(&f).0, Answer::Malformed);
    }

    #[test]
    fn fragments_are_ignored() {
        for flags in [0x2000u16, 0x0001, 0x20b9] {
            let mut f = ECHO_REQUEST;
            f[20..22].copy_from_slice(&flags.to_be_bytes());
            fix_checksums(&mut f);
            assert_eq!(ask(&f), (Answer::Ignored, vec![]), "{flags:#x}");
        }
    }

    #[test]
    fn pings_not_for_the_gateway_get_no_reply() {
        let cases: [(&str, Edit); 6] = [
            ("another destination IP", |f| f[33] = 9),
            ("broadcast Ethernet destination", |f| f[0..6].fill(0xff)),
            ("another protocol", |f| f[23] = 17),
            ("an echo reply", |f| f[34] = 0),
            ("a broadcast source", |f| f[26..30].fill(0xff)),
            ("the unspecified source", |f| f[26..30].fill(0)),
        ];
        for (what, edit) in cases {
            let mut f = ECHO_REQUEST;
            edit(&mut f);
            fix_checksums(&mut f);
            assert_eq!(ask(&f), (Answer::Ignored, vec![]), "{what}");
        }
        let mut none = gw();
        none.ipv4 = None;
        assert_eq!(answer(&none, &ECHO_REQUEST, &mut [0u8; REPLY_BUF]), Answer::Ignored);
    }

    #[test]
    fn a_ping_to_the_dns_address_is_answered_from_it() {
        let mut f = ECHO_REQUEST;
        f[33] = 3; // to 172.17.0.3
        fix_checksums(&mut f);
        let mut want = ECHO_REPLY;
        want[29] = 3; // from 172.17.0.3
        fix_checksums(&mut want);
        let mut out = [0u8; REPLY_BUF];
        assert_eq!(answer(&gw_with_dns(), &f, &mut out), Answer::Reply { kind: Reply::IcmpEcho, len: want.len() });
        assert_eq!(out[..want.len()], want);
        assert_eq!(ask(&f), (Answer::Ignored, vec![]), "no DNS address, no answer");
    }

    #[test]
    fn options_are_accepted_and_not_echoed() {
        // Four NOP options make a 24-byte header.
        let mut f = ECHO_REQUEST[..34].to_vec();
        f.extend_from_slice(&[1, 1, 1, 1]);
        f.extend_from_slice(&ECHO_REQUEST[34..]);
        f[14] = 0x46;
        f[17] += 4;
        fix_checksums(&mut f);
        let (a, reply) = ask(&f);
        assert!(matches!(a, Answer::Reply { kind: Reply::IcmpEcho, .. }));
        assert_eq!(reply, ECHO_REPLY);
    }

    #[test]
    fn replies_that_would_not_fit_the_buffer_are_too_big() {
        // Ethernet 14 + IP 20 + ICMP header 8 + data: 1558 bytes of data fill 1600 exactly.
        let fits = echo_request_with(REPLY_BUF - 42);
        let (a, reply) = ask(&fits);
        assert_eq!(a, Answer::Reply { kind: Reply::IcmpEcho, len: REPLY_BUF });
        assert!(checksums_valid(&reply));
        assert_eq!(ask(&echo_request_with(REPLY_BUF - 41)), (Answer::TooBig, vec![]));
        assert_eq!(ask(&echo_request_with(65535 - 28)), (Answer::TooBig, vec![]));
    }
}
