//! IPv6 as far as the gateway needs it: Neighbor Discovery (RFC 4861) for the gateway's address
//! and its DNS address (every address, when it proxies), and ICMPv6 echo (RFC 4443) to them.

use std::net::Ipv6Addr;

use vswitch_switch::Mac;

use crate::answer::{write_eth, Answer, Reply, ETHERTYPE_IPV6, ETH_HDR_LEN, L2};
use crate::checksum;
use crate::gateway::Gateway;
use crate::ra::link_local_from_mac;

const IPV6_HDR_LEN: usize = 40;
const NEXT_HEADER_ICMPV6: u8 = 58;
/// Type, code, checksum: the part of an ICMPv6 header every message has.
const ICMP6_MIN_LEN: usize = 4;
const ECHO_REQUEST: u8 = 128;
const ECHO_REPLY: u8 = 129;
const NEIGHBOR_SOLICIT: u8 = 135;
const NEIGHBOR_ADVERT: u8 = 136;
/// Type, code, checksum, reserved, target: a Neighbor Solicitation or Advertisement before options.
const ND_LEN: usize = 24;
/// Echo header: type, code, checksum, identifier, sequence number.
const ECHO_HDR_LEN: usize = 8;
const OPT_SOURCE_LL: u8 = 1;
const OPT_TARGET_LL: u8 = 2;
/// A link-layer address option for Ethernet: type, length (in 8-byte units), the MAC.
const LL_OPT_LEN: usize = 8;
const NA_ROUTER: u8 = 0x80;
const NA_SOLICITED: u8 = 0x40;
const NA_OVERRIDE: u8 = 0x20;
/// ND packets must arrive with, and leave with, the largest hop limit: proof they never crossed
/// a router (RFC 4861 §7.1.1).
const ND_HOP_LIMIT: u8 = 255;
/// The hop limit of the echo replies the gateway originates, as Linux's default.
const HOP_LIMIT: u8 = 64;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Answers the IPv6 packet `ip` (the Ethernet payload, possibly followed by padding).
pub(crate) fn answer(gw: &Gateway, l2: L2, ip: &[u8], out: &mut [u8]) -> Answer {
    let Some(h) = ip.first_chunk::<IPV6_HDR_LEN>() else { return Answer::Malformed };
    if h[0] >> 4 != 6 {
        return Answer::Malformed;
    }
    let payload_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    let Some(payload) = ip.get(IPV6_HDR_LEN..IPV6_HDR_LEN + payload_len) else {
        return Answer::Malformed;
    };
    let src = addr_at(h, 8);
    let dst = addr_at(h, 24);
    // Extension headers never precede the messages answered here; a jumbogram (payload length
    // 0 and a hop-by-hop option) is not one of them either.
    let ours = gw.v6_addrs().iter().flatten().any(|&a| dst == a || dst == solicited_node(a));
    // A proxying gateway hears solicitations for any address: to its group, or unicast to the
    // gateway's MAC once the asker has it (unreachability detection).
    let proxy = gw.proxy_all && (is_solicited_node(dst) || (!dst.is_multicast() && l2.dst == gw.mac));
    if h[6] != NEXT_HEADER_ICMPV6 || !(ours || proxy) {
        return Answer::Ignored;
    }
    let icmp = payload;
    if icmp.len() < ICMP6_MIN_LEN {
        return Answer::Malformed;
    }
    // `icmp` came from a slice bounded by a u16, so its length fits a u32.
    let pseudo = checksum::pseudo_v6(&src.octets(), &dst.octets(), icmp.len() as u32, NEXT_HEADER_ICMPV6);
    if checksum::finish(checksum::add(pseudo, icmp)) != 0 {
        return Answer::Malformed;
    }
    let req = Request { l2, src, dst, hop_limit: h[7], icmp };
    match icmp[0] {
        NEIGHBOR_SOLICIT => neighbor_solicit(gw, &req, out),
        ECHO_REQUEST => echo(gw, &req, out),
        // Router Solicitations, MLD reports and the rest: not answered (yet).
        _ => Answer::Ignored,
    }
}

/// A checksummed ICMPv6 message to one of the gateway's addresses or its solicited-node group (with
/// `proxy_all`, to any solicited-node group, or unicast to the gateway's MAC).
struct Request<'a> {
    l2: L2,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    icmp: &'a [u8],
}

/// A Neighbor Solicitation for one of the gateway's addresses (or one it proxies for) gets an
/// Advertisement for that address with the gateway's MAC.
fn neighbor_solicit(gw: &Gateway, req: &Request<'_>, out: &mut [u8]) -> Answer {
    let Some(ns) = req.icmp.first_chunk::<ND_LEN>() else { return Answer::Malformed };
    // RFC 4861 §7.1.1: the receiver must discard solicitations failing these checks.
    if req.hop_limit != ND_HOP_LIMIT || ns[1] != 0 {
        return Answer::Malformed;
    }
    let target = addr_at(ns, 8);
    if target.is_multicast() {
        return Answer::Malformed;
    }
    let Ok(source_ll) = source_link_layer(&req.icmp[ND_LEN..]) else { return Answer::Malformed };
    let own = gw.v6_addrs().contains(&Some(target));
    if !own && !proxied(gw, req, target) {
        return Answer::Ignored;
    }
    let gw_ip = target;
    if !req.l2.dst.is_multicast() && req.l2.dst != gw.mac {
        return Answer::Ignored;
    }

    let (dst_ip, dst_mac, flags) = if req.src.is_unspecified() {
        // Duplicate Address Detection: someone wants the gateway's address. It must be asked of
        // the solicited-node group without a source link-layer option; the answer goes to all
        // nodes and is not "solicited" (RFC 4861 §7.2.4), so the prober learns it is taken.
        if req.dst != solicited_node(gw_ip) || source_ll.is_some() {
            return Answer::Malformed;
        }
        (ALL_NODES, multicast_mac(ALL_NODES), NA_ROUTER | NA_OVERRIDE)
    } else {
        if req.src.is_multicast() {
            return Answer::Malformed;
        }
        // The option names the asker's MAC; a unicast probe may leave it out (RFC 4861 §7.2.2),
        // and then the frame's own source is the one place we know to reach.
        let mac = source_ll.unwrap_or(req.l2.src);
        if mac.is_multicast() || mac.is_zero() {
            return Answer::Malformed;
        }
        // A proxy's answer must not override the address's real owner, should one answer
        // too (RFC 4861 §7.2.8).
        let flags = if own { NA_ROUTER | NA_SOLICITED | NA_OVERRIDE } else { NA_ROUTER | NA_SOLICITED };
        (req.src, mac, flags)
    };

    let icmp_len = ND_LEN + LL_OPT_LEN;
    let Some((r, m)) = start_reply(out, gw, gw_ip, dst_mac, dst_ip, ND_HOP_LIMIT, icmp_len) else {
        return Answer::TooBig;
    };
    m[0] = NEIGHBOR_ADVERT;
    m[1] = 0;
    m[2..4].fill(0);
    m[4] = flags;
    m[5..8].fill(0);
    m[8..24].copy_from_slice(&gw_ip.octets());
    m[24] = OPT_TARGET_LL;
    m[25] = 1;
    m[26..32].copy_from_slice(&gw.mac.0);
    finish_reply(m, gw_ip, dst_ip);
    Answer::Reply { kind: Reply::NeighborAdvert, len: r }
}

/// Whether a proxying gateway ([`Gateway::proxy_all`]) answers `req` for `target`, an address
/// not its own. Not duplicate address detection (source `::`): the asker wants the address and
/// would give it up. Not the asker's own address, nor another's link-local one, which only its
/// owner can answer for (the gateway's own link-local address it can). The solicitation must
/// go where one for `target` goes: its solicited-node group or `target` itself.
fn proxied(gw: &Gateway, req: &Request<'_>, target: Ipv6Addr) -> bool {
    gw.proxy_all
        && !req.src.is_unspecified()
        && req.src != target
        && !(target.is_unspecified() || target.is_loopback() || target.to_ipv4_mapped().is_some())
        && (!target.is_unicast_link_local() || target == link_local_from_mac(gw.mac))
        && (req.dst == target || req.dst == solicited_node(target))
}

/// An echo request to one of the gateway's addresses gets an echo reply from that address with
/// the same identifier, sequence number and data.
fn echo(gw: &Gateway, req: &Request<'_>, out: &mut [u8]) -> Answer {
    let gw_ip = req.dst;
    if !gw.v6_addrs().contains(&Some(gw_ip)) || req.l2.dst != gw.mac {
        // Sent to the solicited-node group, or to a MAC other than the gateway's.
        return Answer::Ignored;
    }
    if req.src.is_unspecified() || req.src.is_multicast() {
        return Answer::Ignored;
    }
    if req.icmp.len() < ECHO_HDR_LEN {
        return Answer::Malformed;
    }
    let Some((r, m)) = start_reply(out, gw, gw_ip, req.l2.src, req.src, HOP_LIMIT, req.icmp.len()) else {
        return Answer::TooBig;
    };
    m.copy_from_slice(req.icmp);
    m[0] = ECHO_REPLY;
    m[1] = 0;
    finish_reply(m, gw_ip, req.src);
    Answer::Reply { kind: Reply::Icmp6Echo, len: r }
}

/// Parses ND options (RFC 4861 §4.6) and returns the source link-layer address, if any.
/// A zero-length option, or one running past the message, makes the whole packet invalid.
fn source_link_layer(mut opts: &[u8]) -> Result<Option<Mac>, ()> {
    let mut found = None;
    while let Some(&[kind, units]) = opts.first_chunk::<2>() {
        let len = usize::from(units) * 8;
        if len == 0 || len > opts.len() {
            return Err(());
        }
        if kind == OPT_SOURCE_LL && len == LL_OPT_LEN {
            found = Some(Mac::from_slice(&opts[2..8]));
        }
        opts = &opts[len..];
    }
    // A single trailing byte cannot hold an option.
    if opts.is_empty() {
        Ok(found)
    } else {
        Err(())
    }
}

/// Writes the Ethernet and IPv6 headers of a reply carrying `icmp_len` bytes of ICMPv6; returns
/// the whole reply's length and the ICMPv6 message to fill, or `None` when `out` is too short.
fn start_reply<'o>(
    out: &'o mut [u8],
    gw: &Gateway,
    src: Ipv6Addr,
    dst_mac: Mac,
    dst: Ipv6Addr,
    hop_limit: u8,
    icmp_len: usize,
) -> Option<(usize, &'o mut [u8])> {
    let len = ETH_HDR_LEN + IPV6_HDR_LEN + icmp_len;
    // The message is a request's payload or a fixed-size advertisement, so it fits a u16.
    let payload_len = u16::try_from(icmp_len).ok()?;
    let r = out.get_mut(..len)?;
    write_eth(r, dst_mac, gw.mac, ETHERTYPE_IPV6);
    let (h, m) = r[ETH_HDR_LEN..].split_at_mut(IPV6_HDR_LEN);
    // Version 6, traffic class 0, flow label 0: the reply starts no flow of its own.
    h[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    h[4..6].copy_from_slice(&payload_len.to_be_bytes());
    h[6] = NEXT_HEADER_ICMPV6;
    h[7] = hop_limit;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    Some((len, m))
}

/// Fills in the checksum of the ICMPv6 message `m`, its checksum field not yet written.
fn finish_reply(m: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) {
    m[2..4].fill(0);
    // `m` is at most a u16's worth of bytes: `start_reply` checked.
    let pseudo = checksum::pseudo_v6(&src.octets(), &dst.octets(), m.len() as u32, NEXT_HEADER_ICMPV6);
    let sum = checksum::finish(checksum::add(pseudo, m));
    m[2..4].copy_from_slice(&sum.to_be_bytes());
}

/// Reads an IPv6 address at `at`; the caller has checked that sixteen bytes are there.
fn addr_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(a)
}

/// The solicited-node multicast group of `a` (RFC 4291 §2.7.1): ff02::1:ff00:0/104 and the
/// address's last 24 bits, where a Neighbor Solicitation for `a` is sent.
fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::from([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15]])
}

/// Whether `a` is a solicited-node multicast group, ff02::1:ff00:0/104.
fn is_solicited_node(a: Ipv6Addr) -> bool {
    let o = a.octets();
    o[..13] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff]
}

/// The Ethernet address of an IPv6 multicast group (RFC 2464 §7): 33:33 and its last 32 bits.
fn multicast_mac(group: Ipv6Addr) -> Mac {
    let o = group.octets();
    Mac([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::{answer, REPLY_BUF};
    use crate::fixtures::*;

    /// An edit that turns a fixture into the case under test.
    type Edit = fn(&mut Vec<u8>);

    fn ask(f: &[u8]) -> (Answer, Vec<u8>) {
        let mut out = [0u8; REPLY_BUF];
        let a = answer(&gw(), f, &mut out);
        let len = if let Answer::Reply { len, .. } = a { len } else { 0 };
        (a, out[..len].to_vec())
    }

    /// Edits a fixture, then makes its ICMPv6 checksum right again.
    fn edited<const N: usize>(f: [u8; N], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut f = f.to_vec();
        edit(&mut f);
        fix_checksums(&mut f);
        f
    }

    #[test]
    fn solicitation_for_the_gateway_gets_the_exact_advertisement() {
        assert!(checksums_valid(&NS));
        let (a, reply) = ask(&NS);
        assert_eq!(a, Answer::Reply { kind: Reply::NeighborAdvert, len: NA.len() });
        assert_eq!(reply, NA);
        assert!(checksums_valid(&reply), "checksum recomputed with the pseudo-header");
        assert_eq!(reply[21], 255, "hop limit");
        assert_eq!(reply[58], NA_ROUTER | NA_SOLICITED | NA_OVERRIDE);
    }

    #[test]
    fn unicast_probes_are_answered_even_without_a_link_layer_option() {
        // Neighbor Unreachability Detection: sent to the gateway's own address and MAC.
        let nud = edited(NS, |f| {
            f[0..6].copy_from_slice(&GW_MAC.0);
            f[38..54].copy_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        });
        assert_eq!(ask(&nud).1, NA);
        let bare = edited(NS, |f| {
            f.truncate(78);
            f[19] = 24;
        });
        let (_, reply) = ask(&bare);
        assert_eq!(reply[0..6], CLIENT_MAC.0, "replied to the frame's source MAC");
        assert_eq!(reply, NA);
    }

    #[test]
    fn duplicate_address_detection_is_answered_to_all_nodes() {
        let dad = edited(NS, |f| {
            f.truncate(78);
            f[19] = 24;
            f[22..38].fill(0);
        });
        let (a, reply) = ask(&dad);
        assert!(matches!(a, Answer::Reply { kind: Reply::NeighborAdvert, .. }));
        assert_eq!(reply[0..6], [0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(reply[38..54], ALL_NODES.octets());
        assert_eq!(reply[58], NA_ROUTER | NA_OVERRIDE, "not solicited");
        assert!(checksums_valid(&reply));
        let with_option = edited(NS, |f| f[22..38].fill(0));
        assert_eq!(ask(&with_option).0, Answer::Malformed, "DAD carries no source link-layer option");
    }

    #[test]
    fn solicitations_for_other_targets_are_ignored() {
        let other = edited(NS, |f| f[69] = 2);
        assert_eq!(ask(&other), (Answer::Ignored, vec![]));
        let other_group = edited(NS, |f| f[53] = 2);
        assert_eq!(ask(&other_group), (Answer::Ignored, vec![]));
        let mut none = gw();
        none.ipv6 = None;
        assert_eq!(answer(&none, &NS, &mut [0u8; REPLY_BUF]), Answer::Ignored);
    }

    #[test]
    fn the_dns_address_is_advertised_and_pinged_with_the_gateway_mac() {
        let dns = gw_with_dns();
        let mut out = [0u8; REPLY_BUF];
        // For fd00::3, to its solicited-node group ff02::1:ff00:3.
        let ns = edited(NS, |f| {
            f[5] = 3;
            f[53] = 3;
            f[77] = 3;
        });
        let na = edited(NA, |f| {
            f[37] = 3; // from fd00::3
            f[77] = 3; // target fd00::3, the gateway's MAC in the option
        });
        assert_eq!(answer(&dns, &ns, &mut out), Answer::Reply { kind: Reply::NeighborAdvert, len: NA.len() });
        assert_eq!(out[..NA.len()], na);
        assert_eq!(answer(&dns, &NS, &mut out), Answer::Reply { kind: Reply::NeighborAdvert, len: NA.len() });
        assert_eq!(out[..NA.len()], NA, "the gateway's own address is answered as before");
        assert_eq!(ask(&ns), (Answer::Ignored, vec![]), "no DNS address, no answer");

        let echo = edited(ECHO6_REQUEST, |f| f[53] = 3);
        let reply = edited(ECHO6_REPLY, |f| f[37] = 3);
        assert_eq!(answer(&dns, &echo, &mut out), Answer::Reply { kind: Reply::Icmp6Echo, len: reply.len() });
        assert_eq!(out[..reply.len()], reply);
        assert_eq!(ask(&echo), (Answer::Ignored, vec![]));
    }

    /// [`NS`] from fd00::2 for `target`, to the target's solicited-node group.
    fn ns_for(target: Ipv6Addr) -> Vec<u8> {
        let group = solicited_node(target);
        edited(NS, |f| {
            f[0..6].copy_from_slice(&multicast_mac(group).0);
            f[38..54].copy_from_slice(&group.octets());
            f[62..78].copy_from_slice(&target.octets());
        })
    }

    /// [`NA`] for `target`, from it, with `flags`.
    fn na_for(target: Ipv6Addr, flags: u8) -> Vec<u8> {
        edited(NA, |f| {
            f[22..38].copy_from_slice(&target.octets());
            f[58] = flags;
            f[62..78].copy_from_slice(&target.octets());
        })
    }

    #[test]
    fn a_proxying_gateway_advertises_every_other_address_without_override() {
        let mut out = [0u8; REPLY_BUF];
        let targets: [Ipv6Addr; 3] = ["fd00::9".parse().unwrap(), "2001:db8::1".parse().unwrap(), link_local_from_mac(GW_MAC)];
        for t in targets {
            let ns = ns_for(t);
            assert_eq!(answer(&gw_proxy(), &ns, &mut out), Answer::Reply { kind: Reply::NeighborAdvert, len: NA.len() }, "{t}");
            assert_eq!(out[..NA.len()], na_for(t, NA_ROUTER | NA_SOLICITED), "{t}");
            assert!(checksums_valid(&out[..NA.len()]));
            assert_eq!(ask(&ns), (Answer::Ignored, vec![]), "{t} without proxy_all");
        }
        // Unreachability detection: unicast to the address, at the gateway's MAC it was given.
        let t: Ipv6Addr = "fd00::9".parse().unwrap();
        let nud = edited(NS, |f| {
            f[0..6].copy_from_slice(&GW_MAC.0);
            f[38..54].copy_from_slice(&t.octets());
            f[62..78].copy_from_slice(&t.octets());
        });
        assert_eq!(answer(&gw_proxy(), &nud, &mut out), Answer::Reply { kind: Reply::NeighborAdvert, len: NA.len() });
        assert_eq!(out[..NA.len()], na_for(t, NA_ROUTER | NA_SOLICITED));
        let mut elsewhere = nud.clone();
        elsewhere[5] = 0x99;
        assert_eq!(answer(&gw_proxy(), &elsewhere, &mut out), Answer::Ignored, "unicast to another station");
        // The gateway's own address as before: overriding, and defended against DAD.
        assert_eq!(answer(&gw_proxy(), &NS, &mut out), Answer::Reply { kind: Reply::NeighborAdvert, len: NA.len() });
        assert_eq!(out[..NA.len()], NA);
        let dad = edited(NS, |f| {
            f.truncate(78);
            f[19] = 24;
            f[22..38].fill(0);
        });
        assert!(matches!(answer(&gw_proxy(), &dad, &mut out), Answer::Reply { kind: Reply::NeighborAdvert, .. }));
    }

    #[test]
    fn a_proxying_gateway_leaves_the_askers_own_and_link_local_addresses_alone() {
        let mut out = [0u8; REPLY_BUF];
        let t: Ipv6Addr = "fd00::9".parse().unwrap();
        let mut dad = ns_for(t);
        dad.truncate(78);
        dad[19] = 24;
        dad[22..38].fill(0);
        fix_checksums(&mut dad);
        let mut wrong_group = ns_for(t);
        wrong_group[5] = 8;
        wrong_group[53] = 8;
        fix_checksums(&mut wrong_group);
        let cases = [
            ("duplicate address detection", dad),
            ("the asker's own address", ns_for("fd00::2".parse().unwrap())),
            ("another's link-local address", ns_for("fe80::9".parse().unwrap())),
            ("a loopback address", ns_for(Ipv6Addr::LOCALHOST)),
            ("another address's group", wrong_group),
        ];
        for (what, ns) in cases {
            assert!(checksums_valid(&ns), "{what}");
            assert_eq!(answer(&gw_proxy(), &ns, &mut out), Answer::Ignored, "{what}");
        }
    }

    #[test]
    fn invalid_solicitations_are_malformed() {
        let cases: [(&str, Edit); 6] = [
            ("hop limit 254", |f| f[21] = 254),
            ("code 1", |f| f[55] = 1),
            ("multicast target", |f| f[62] = 0xff),
            ("zero-length option", |f| f[79] = 0),
            ("option past the end", |f| f[79] = 2),
            ("multicast source", |f| f[22] = 0xff),
        ];
        for (what, edit) in cases {
            assert_eq!(ask(&edited(NS, edit)), (Answer::Malformed, vec![]), "{what}");
        }
        let mut bad_sum = NS;
        bad_sum[57] ^= 1;
        assert_eq!(ask(&bad_sum).0, Answer::Malformed, "checksum");
    }

    #[test]
    fn every_truncation_is_malformed() {
        for f in [&NS[..], &ECHO6_REQUEST] {
            for len in 0..f.len() {
                assert_eq!(ask(&f[..len]), (Answer::Malformed, vec![]), "{len}");
            }
        }
    }

    #[test]
    fn echo_request_gets_the_exact_reply() {
        assert!(checksums_valid(&ECHO6_REQUEST));
        let (a, reply) = ask(&ECHO6_REQUEST);
        assert_eq!(a, Answer::Reply { kind: Reply::Icmp6Echo, len: ECHO6_REQUEST.len() });
        assert_eq!(reply, ECHO6_REPLY);
        assert!(checksums_valid(&reply));
        assert_eq!(reply[21], 64, "hop limit");
    }

    #[test]
    fn echo_not_for_the_gateway_is_ignored() {
        let cases: [(&str, Edit); 5] = [
            ("another destination", |f| f[53] = 9),
            ("another MAC", |f| f[5] = 9),
            ("an echo reply", |f| f[54] = super::ECHO_REPLY),
            ("a UDP datagram", |f| f[20] = 17),
            ("an extension header first", |f| f[20] = 0),
        ];
        for (what, edit) in cases {
            let mut f = ECHO6_REQUEST.to_vec();
            edit(&mut f);
            if f[20] == NEXT_HEADER_ICMPV6 {
                fix_checksums(&mut f);
            }
            assert_eq!(ask(&f), (Answer::Ignored, vec![]), "{what}");
        }
    }

    #[test]
    fn echo_replies_that_would_not_fit_are_too_big() {
        // Ethernet 14 + IPv6 40 + echo header 8 + data.
        let (a, reply) = ask(&echo6_request_with(REPLY_BUF - 62));
        assert_eq!(a, Answer::Reply { kind: Reply::Icmp6Echo, len: REPLY_BUF });
        assert!(checksums_valid(&reply));
        assert_eq!(ask(&echo6_request_with(REPLY_BUF - 61)), (Answer::TooBig, vec![]));
    }

    #[test]
    fn group_addresses_follow_the_rfcs() {
        let a: Ipv6Addr = "2001:db8::1:2:3:4567:89ab".parse().unwrap();
        assert_eq!(solicited_node(a), "ff02::1:ff67:89ab".parse::<Ipv6Addr>().unwrap());
        assert_eq!(multicast_mac(solicited_node(a)), Mac([0x33, 0x33, 0xff, 0x67, 0x89, 0xab]));
    }
}
