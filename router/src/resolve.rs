//! Address resolution for the router: the requests it sends for a next hop it does not know
//! (an ARP request, RFC 826; a Neighbor Solicitation, RFC 4861 §7.2.2), and what it learns from
//! the ARP and NDP frames that reach the gateway ([`learnable`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vswitch_switch::Mac;

use crate::answer::{mac_at, write_eth, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HDR_LEN};
use crate::checksum;

/// Bytes of an ARP request frame: Ethernet header and the ARP packet for Ethernet and IPv4.
pub const ARP_REQUEST_LEN: usize = ETH_HDR_LEN + ARP_LEN;
/// Bytes of a Neighbor Solicitation frame with a source link-layer address option.
pub const NS_LEN: usize = ETH_HDR_LEN + IPV6_HDR_LEN + ND_LEN + LL_OPT_LEN;

const ARP_LEN: usize = 28;
const IPV6_HDR_LEN: usize = 40;
/// Type, code, checksum, reserved (or flags), target address.
const ND_LEN: usize = 24;
const LL_OPT_LEN: usize = 8;
const NEXT_ICMPV6: u8 = 58;
const NEIGHBOR_SOLICIT: u8 = 135;
const NEIGHBOR_ADVERT: u8 = 136;
const OPT_SOURCE_LL: u8 = 1;
const OPT_TARGET_LL: u8 = 2;

/// Writes a broadcast ARP request from the gateway (`gw_mac`, `gw_ip`) asking for `target` into
/// `out`; returns its length ([`ARP_REQUEST_LEN`]), or None when `out` is shorter.
pub fn write_arp_request(gw_mac: Mac, gw_ip: Ipv4Addr, target: Ipv4Addr, out: &mut [u8]) -> Option<usize> {
    let f = out.get_mut(..ARP_REQUEST_LEN)?;
    write_eth(f, Mac::BROADCAST, gw_mac, ETHERTYPE_ARP);
    let a = &mut f[ETH_HDR_LEN..];
    a[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    a[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&1u16.to_be_bytes()); // request
    a[8..14].copy_from_slice(&gw_mac.0);
    a[14..18].copy_from_slice(&gw_ip.octets());
    a[18..24].fill(0);
    a[24..28].copy_from_slice(&target.octets());
    Some(ARP_REQUEST_LEN)
}

/// Writes a Neighbor Solicitation from the gateway (`gw_mac`, `gw_ip`) for `target` to its
/// solicited-node group, with the gateway's MAC as source link-layer address option, into
/// `out`; returns its length ([`NS_LEN`]), or None when `out` is shorter.
pub fn write_neighbor_solicit(gw_mac: Mac, gw_ip: Ipv6Addr, target: Ipv6Addr, out: &mut [u8]) -> Option<usize> {
    let f = out.get_mut(..NS_LEN)?;
    let t = target.octets();
    let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(t[13]), u16::from_be_bytes([t[14], t[15]]));
    let g = group.octets();
    write_eth(f, Mac([0x33, 0x33, g[12], g[13], g[14], g[15]]), gw_mac, ETHERTYPE_IPV6);
    let (hdr, icmp) = f[ETH_HDR_LEN..].split_at_mut(IPV6_HDR_LEN);
    hdr[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    hdr[4..6].copy_from_slice(&((ND_LEN + LL_OPT_LEN) as u16).to_be_bytes());
    hdr[6] = NEXT_ICMPV6;
    hdr[7] = 255; // RFC 4861 §7.1.1: ND never crosses a router
    hdr[8..24].copy_from_slice(&gw_ip.octets());
    hdr[24..40].copy_from_slice(&g);
    icmp[0] = NEIGHBOR_SOLICIT;
    icmp[1] = 0;
    icmp[2..8].fill(0);
    icmp[8..24].copy_from_slice(&t);
    icmp[24] = OPT_SOURCE_LL;
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&gw_mac.0);
    let sum = checksum::pseudo_v6(&gw_ip.octets(), &g, (ND_LEN + LL_OPT_LEN) as u32, NEXT_ICMPV6);
    let c = checksum::finish(checksum::add(sum, icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Some(NS_LEN)
}

/// The address binding a bare Ethernet frame announces, if it is one the router may learn:
/// - an ARP request or reply: its sender (not a probe's 0.0.0.0);
/// - a Neighbor Advertisement with a target link-layer address option: its target;
/// - a Neighbor Solicitation from a unicast address with a source link-layer address option:
///   its source.
///
/// NDP messages count only with hop limit 255 and a valid checksum (RFC 4861 §7.1). The caller
/// checks that the address belongs to the network before learning it.
pub fn learnable(eth: &[u8]) -> Option<(IpAddr, Mac)> {
    let (hdr, payload) = eth.split_first_chunk::<ETH_HDR_LEN>()?;
    let (ip, mac) = match u16::from_be_bytes([hdr[12], hdr[13]]) {
        ETHERTYPE_ARP => arp_sender(payload)?,
        ETHERTYPE_IPV6 => nd_binding(payload)?,
        _ => return None,
    };
    (!mac.is_multicast() && !mac.is_zero()).then_some((ip, mac))
}

fn arp_sender(arp: &[u8]) -> Option<(IpAddr, Mac)> {
    let p = arp.first_chunk::<ARP_LEN>()?;
    let fixed = p[0..2] == [0, 1] && p[2..4] == ETHERTYPE_IPV4.to_be_bytes() && p[4] == 6 && p[5] == 4;
    let op = u16::from_be_bytes([p[6], p[7]]);
    let ip = Ipv4Addr::new(p[14], p[15], p[16], p[17]);
    if !fixed || !(op == 1 || op == 2) || ip.is_unspecified() {
        return None;
    }
    Some((IpAddr::V4(ip), mac_at(p, 8)))
}

fn nd_binding(ip: &[u8]) -> Option<(IpAddr, Mac)> {
    let h = ip.first_chunk::<IPV6_HDR_LEN>()?;
    let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    let icmp = ip.get(IPV6_HDR_LEN..IPV6_HDR_LEN + len)?;
    if h[0] >> 4 != 6 || h[6] != NEXT_ICMPV6 || h[7] != 255 || icmp.len() < ND_LEN || icmp[1] != 0 {
        return None;
    }
    let src = <[u8; 16]>::try_from(&h[8..24]).ok()?;
    let dst = <[u8; 16]>::try_from(&h[24..40]).ok()?;
    // `icmp` is bounded by a u16 length.
    let sum = checksum::pseudo_v6(&src, &dst, icmp.len() as u32, NEXT_ICMPV6);
    if checksum::finish(checksum::add(sum, icmp)) != 0 {
        return None;
    }
    let (addr, wanted) = match icmp[0] {
        NEIGHBOR_ADVERT => (Ipv6Addr::from(<[u8; 16]>::try_from(&icmp[8..24]).ok()?), OPT_TARGET_LL),
        NEIGHBOR_SOLICIT => (Ipv6Addr::from(src), OPT_SOURCE_LL),
        _ => return None,
    };
    if addr.is_unspecified() || addr.is_multicast() {
        return None;
    }
    let mut opts = &icmp[ND_LEN..];
    while let [t, l, ..] = *opts {
        let n = usize::from(l) * 8;
        if n == 0 || n > opts.len() {
            return None; // RFC 4861 §4.6: a zero length invalidates the whole message
        }
        if t == wanted && n >= LL_OPT_LEN {
            return Some((IpAddr::V6(addr), mac_at(opts, 2)));
        }
        opts = &opts[n..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn arp_request_matches_what_a_host_sends() {
        let mut out = [0u8; 64];
        let n = write_arp_request(CLIENT_MAC, "172.17.0.2".parse().unwrap(), "172.17.0.1".parse().unwrap(), &mut out).unwrap();
        // The fixture request from the client, without its Ethernet padding.
        assert_eq!(out[..n], ARP_REQUEST[..42]);
        assert_eq!(write_arp_request(GW_MAC, Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, &mut [0u8; 41]), None);
    }

    #[test]
    fn neighbor_solicit_matches_what_a_host_sends() {
        let mut out = [0u8; 100];
        let n = write_neighbor_solicit(CLIENT_MAC, "fd00::2".parse().unwrap(), "fd00::1".parse().unwrap(), &mut out).unwrap();
        assert_eq!(out[..n], NS);
        assert_eq!(write_neighbor_solicit(GW_MAC, Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, &mut [0u8; 85]), None);
    }

    #[test]
    fn learns_from_arp_and_ndp() {
        let client4: IpAddr = "172.17.0.2".parse().unwrap();
        let client6: IpAddr = "fd00::2".parse().unwrap();
        assert_eq!(learnable(&ARP_REQUEST), Some((client4, CLIENT_MAC)));
        assert_eq!(learnable(&ARP_REPLY), Some(("172.17.0.1".parse().unwrap(), GW_MAC)));
        assert_eq!(learnable(&NS), Some((client6, CLIENT_MAC)));
        assert_eq!(learnable(&NA), Some(("fd00::1".parse().unwrap(), GW_MAC)));
        let mut probe = ARP_REQUEST;
        probe[28..32].fill(0);
        assert_eq!(learnable(&probe), None, "an ARP probe announces nothing");
        let mut hop = NS;
        hop[21] = 64;
        assert_eq!(learnable(&hop), None, "NDP from beyond a router");
        let mut sum = NA;
        sum[57] ^= 1;
        assert_eq!(learnable(&sum), None, "bad checksum");
        assert_eq!(learnable(&ECHO_REQUEST), None);
        assert_eq!(learnable(&ECHO6_REQUEST), None);
        let mut zero_opt = NS.to_vec();
        zero_opt[79] = 0;
        fix_checksums(&mut zero_opt);
        assert_eq!(learnable(&zero_opt), None, "zero-length option");
        for f in [&ARP_REQUEST[..], &NS, &NA] {
            for cut in 0..f.len() {
                let _ = learnable(&f[..cut]);
            }
        }
    }
}
