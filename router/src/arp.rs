//! ARP (RFC 826) for the gateway's IPv4 addresses (every address, when it proxies): a request for one gets a reply from the gateway's MAC.

use std::net::Ipv4Addr;

use crate::answer::{mac_at, write_eth, Answer, Reply, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETH_HDR_LEN, L2};
use crate::gateway::Gateway;
use crate::icmperr::v4_not_a_host;

/// Bytes of an ARP packet for Ethernet and IPv4; anything after it is Ethernet padding.
const ARP_LEN: usize = 28;
const HTYPE_ETHERNET: u16 = 1;
const OPER_REQUEST: u16 = 1;
const OPER_REPLY: u16 = 2;

/// Answers the ARP packet `arp` (the Ethernet payload) if it asks for the gateway's address or
/// its DNS address, or, with [`Gateway::proxy_all`], for any other host's.
pub(crate) fn answer(gw: &Gateway, l2: L2, arp: &[u8], out: &mut [u8]) -> Answer {
    let Some((p, _padding)) = arp.split_first_chunk::<ARP_LEN>() else {
        return Answer::Malformed;
    };
    let htype = u16::from_be_bytes([p[0], p[1]]);
    let ptype = u16::from_be_bytes([p[2], p[3]]);
    if htype != HTYPE_ETHERNET || ptype != ETHERTYPE_IPV4 {
        // ARP for another link or protocol: well formed for all we know, and not ours.
        return Answer::Ignored;
    }
    if p[4] != 6 || p[5] != 4 {
        // Ethernet and IPv4 fix these lengths; anything else would misplace every field below.
        return Answer::Malformed;
    }
    if u16::from_be_bytes([p[6], p[7]]) != OPER_REQUEST {
        return Answer::Ignored;
    }
    let sender_mac = mac_at(p, 8);
    let sender_ip = [p[14], p[15], p[16], p[17]];
    let target_ip = [p[24], p[25], p[26], p[27]];
    let gw_ip = Ipv4Addr::from(target_ip);
    if !gw.v4_addrs().contains(&Some(gw_ip)) && !proxied(gw, Ipv4Addr::from(sender_ip), gw_ip) {
        // Another host's address: the switch floods the request to it.
        return Answer::Ignored;
    }
    if sender_ip == target_ip {
        // Gratuitous ARP (an announcement, RFC 5227 §3), not a question; nobody waits for a reply.
        return Answer::Ignored;
    }
    if sender_mac.is_multicast() || sender_mac.is_zero() {
        // Nowhere to send the reply, and no genuine host claims such an address.
        return Answer::Malformed;
    }
    if !l2.dst.is_broadcast() && l2.dst != gw.mac {
        // A request unicast to some other station (the switch does not punt those today).
        return Answer::Ignored;
    }

    let len = ETH_HDR_LEN + ARP_LEN;
    let Some(r) = out.get_mut(..len) else { return Answer::TooBig };
    // Sent to the sender hardware address, as Linux does: it is where the asker wants the answer.
    // A probe (sender IP 0.0.0.0, RFC 5227 §2.1.1) gets the same reply, which tells the prober
    // that the address is taken.
    write_eth(r, sender_mac, gw.mac, ETHERTYPE_ARP);
    let a = &mut r[ETH_HDR_LEN..];
    a[0..2].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
    a[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&OPER_REPLY.to_be_bytes());
    a[8..14].copy_from_slice(&gw.mac.0);
    a[14..18].copy_from_slice(&gw_ip.octets());
    a[18..24].copy_from_slice(&sender_mac.0);
    a[24..28].copy_from_slice(&sender_ip);
    Answer::Reply { kind: Reply::Arp, len }
}

/// Whether a proxying gateway ([`Gateway::proxy_all`]) answers `sender`'s request for `target`,
/// an address not its own. Never for the sender's own address (a gratuitous ARP), nor for a
/// probe (sender 0.0.0.0, RFC 5227 §2.1.1): the prober would take its address for taken. Nor
/// for what cannot be a host's address.
fn proxied(gw: &Gateway, sender: Ipv4Addr, target: Ipv4Addr) -> bool {
    gw.proxy_all && !sender.is_unspecified() && sender != target && !v4_not_a_host(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::{answer, REPLY_BUF};
    use crate::fixtures::*;

    fn ask(f: &[u8]) -> (Answer, Vec<u8>) {
        let mut out = [0u8; REPLY_BUF];
        let a = answer(&gw(), f, &mut out);
        let len = if let Answer::Reply { len, .. } = a { len } else { 0 };
        (a, out[..len].to_vec())
    }

    #[test]
    fn request_for_the_gateway_gets_the_exact_reply() {
        let (a, reply) = ask(&ARP_REQUEST);
        assert_eq!(a, Answer::Reply { kind: Reply::Arp, len: 42 });
        assert_eq!(reply, ARP_REPLY);
    }

    #[test]
    fn padding_is_optional_and_unicast_refreshes_are_answered() {
        assert_eq!(ask(&ARP_REQUEST[..42]).1, ARP_REPLY);
        let mut f = ARP_REQUEST;
        f[0..6].copy_from_slice(&GW_MAC.0);
        assert_eq!(ask(&f).1, ARP_REPLY);
    }

    #[test]
    fn every_truncation_is_malformed_until_only_padding_is_missing() {
        for len in 0..=ARP_REQUEST.len() {
            let (a, reply) = ask(&ARP_REQUEST[..len]);
            if len < 42 {
                assert_eq!(a, Answer::Malformed, "{len}");
                assert!(reply.is_empty());
            } else {
                assert_eq!(reply, ARP_REPLY, "{len}");
            }
        }
    }

    #[test]
    fn requests_for_other_addresses_are_ignored() {
        let mut f = ARP_REQUEST;
        f[41] = 9; // who has 172.17.0.9?
        assert_eq!(ask(&f), (Answer::Ignored, vec![]));
        let mut none = gw();
        none.ipv4 = None;
        assert_eq!(answer(&none, &ARP_REQUEST, &mut [0u8; REPLY_BUF]), Answer::Ignored);
    }

    #[test]
    fn the_dns_address_is_answered_with_the_gateway_mac_and_itself_as_sender() {
        let dns = gw_with_dns();
        let mut f = ARP_REQUEST;
        f[41] = 3; // who has 172.17.0.3?
        let mut out = [0u8; REPLY_BUF];
        assert_eq!(answer(&dns, &f, &mut out), Answer::Reply { kind: Reply::Arp, len: 42 });
        let mut want = ARP_REPLY;
        want[31] = 3; // sender IP 172.17.0.3, sender MAC still the gateway's
        assert_eq!(out[..42], want);
        assert_eq!(answer(&dns, &ARP_REQUEST, &mut out), Answer::Reply { kind: Reply::Arp, len: 42 });
        assert_eq!(out[..42], ARP_REPLY, "the gateway's own address is answered as before");
        assert_eq!(ask(&f), (Answer::Ignored, vec![]), "no DNS address, no answer");
    }

    /// [`ARP_REQUEST`] from `sender` asking for `target`.
    fn asking(sender: [u8; 4], target: [u8; 4]) -> [u8; 60] {
        let mut f = ARP_REQUEST;
        f[28..32].copy_from_slice(&sender);
        f[38..42].copy_from_slice(&target);
        f
    }

    #[test]
    fn a_proxying_gateway_answers_for_every_other_host() {
        let mut out = [0u8; REPLY_BUF];
        for target in [[172, 17, 0, 9], [172, 17, 0, 255], [10, 1, 2, 3], [169, 254, 1, 2]] {
            let f = asking([172, 17, 0, 2], target);
            assert_eq!(answer(&gw_proxy(), &f, &mut out), Answer::Reply { kind: Reply::Arp, len: 42 }, "{target:?}");
            let mut want = ARP_REPLY;
            want[28..32].copy_from_slice(&target); // the address asked, at the gateway's MAC
            assert_eq!(out[..42], want, "{target:?}");
            assert_eq!(ask(&f), (Answer::Ignored, vec![]), "{target:?} without proxy_all");
        }
        let mut refresh = asking([172, 17, 0, 2], [172, 17, 0, 9]);
        refresh[0..6].copy_from_slice(&GW_MAC.0);
        assert!(matches!(answer(&gw_proxy(), &refresh, &mut out), Answer::Reply { kind: Reply::Arp, .. }), "unicast to the gateway");
        refresh[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        assert_eq!(answer(&gw_proxy(), &refresh, &mut out), Answer::Ignored, "unicast to another station");
        assert_eq!(answer(&gw_proxy(), &ARP_REQUEST, &mut out), Answer::Reply { kind: Reply::Arp, len: 42 });
        assert_eq!(out[..42], ARP_REPLY, "the gateway's own address is answered as before");
    }

    #[test]
    fn a_proxying_gateway_leaves_the_askers_own_address_alone() {
        let mut out = [0u8; REPLY_BUF];
        let cases = [
            ("a gratuitous ARP", [172, 17, 0, 2], [172, 17, 0, 2]),
            ("a probe for an address the asker wants", [0, 0, 0, 0], [172, 17, 0, 9]),
            ("the unspecified address", [172, 17, 0, 2], [0, 0, 0, 0]),
            ("a loopback address", [172, 17, 0, 2], [127, 0, 0, 1]),
            ("a multicast group", [172, 17, 0, 2], [224, 0, 0, 251]),
            ("the broadcast address", [172, 17, 0, 2], [255, 255, 255, 255]),
        ];
        for (what, sender, target) in cases {
            assert_eq!(answer(&gw_proxy(), &asking(sender, target), &mut out), Answer::Ignored, "{what}");
        }
        // The gateway's own address is still defended against a probe.
        let probe = asking([0, 0, 0, 0], [172, 17, 0, 1]);
        assert!(matches!(answer(&gw_proxy(), &probe, &mut out), Answer::Reply { kind: Reply::Arp, .. }));
    }

    #[test]
    fn gratuitous_arp_and_replies_are_ignored() {
        let mut garp = ARP_REQUEST;
        garp.copy_within(38..42, 28); // sender IP = target IP
        assert_eq!(ask(&garp).0, Answer::Ignored);
        let mut reply = ARP_REQUEST;
        reply[21] = 2;
        assert_eq!(ask(&reply).0, Answer::Ignored);
    }

    #[test]
    fn a_probe_for_the_gateway_address_learns_it_is_taken() {
        let mut probe = ARP_REQUEST;
        probe[28..32].fill(0); // RFC 5227 probe: sender IP 0.0.0.0
        let (a, reply) = ask(&probe);
        assert!(matches!(a, Answer::Reply { kind: Reply::Arp, .. }));
        assert_eq!(reply[..38], ARP_REPLY[..38]);
        assert_eq!(reply[38..42], [0, 0, 0, 0]);
    }

    #[test]
    fn other_links_and_protocols_are_ignored_and_bad_lengths_malformed() {
        let mut f = ARP_REQUEST;
        f[15] = 6; // IEEE 802 hardware
        assert_eq!(ask(&f).0, Answer::Ignored);
        let mut f = ARP_REQUEST;
        f[16] = 0x86; // protocol 0x86dd
        f[17] = 0xdd;
        assert_eq!(ask(&f).0, Answer::Ignored);
        for (at, v) in [(18, 8), (19, 16)] {
            let mut f = ARP_REQUEST;
            f[at] = v;
            assert_eq!(ask(&f).0, Answer::Malformed, "byte {at}");
        }
    }

    #[test]
    fn unanswerable_senders_are_malformed_and_foreign_unicast_ignored() {
        let mut f = ARP_REQUEST;
        f[22] = 0x01; // a multicast sender hardware address
        assert_eq!(ask(&f).0, Answer::Malformed);
        let mut f = ARP_REQUEST;
        f[22..28].fill(0);
        assert_eq!(ask(&f).0, Answer::Malformed);
        let mut f = ARP_REQUEST;
        f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        assert_eq!(ask(&f).0, Answer::Ignored);
    }
}
