//! Announcements of a newly attached endpoint: a gratuitous ARP (RFC 5227 §3, an ARP request
//! for its own address) and an unsolicited Neighbor Advertisement (RFC 4861 §7.2.6), so peers
//! that cached an old MAC for the address update it at once.

use std::net::{Ipv4Addr, Ipv6Addr};

use vswitch_switch::Mac;

use crate::answer::{write_eth, ETHERTYPE_ARP, ETHERTYPE_IPV6, ETH_HDR_LEN};
use crate::checksum;

/// Bytes of a gratuitous ARP frame.
pub const GARP_LEN: usize = ETH_HDR_LEN + 28;
/// Bytes of an unsolicited Neighbor Advertisement with a target link-layer address option.
pub const UNSOLICITED_NA_LEN: usize = ETH_HDR_LEN + 40 + 32;

/// Writes a gratuitous ARP for `ip` at `mac` into `out`; None when `out` is too short.
pub fn gratuitous_arp(mac: Mac, ip: Ipv4Addr, out: &mut [u8]) -> Option<usize> {
    let out = out.get_mut(..GARP_LEN)?;
    write_eth(out, Mac::BROADCAST, mac, ETHERTYPE_ARP);
    let a = &mut out[ETH_HDR_LEN..];
    a[0..8].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet, IPv4, request
    a[8..14].copy_from_slice(&mac.0);
    a[14..18].copy_from_slice(&ip.octets());
    a[18..24].fill(0);
    a[24..28].copy_from_slice(&ip.octets());
    Some(GARP_LEN)
}

/// Writes an unsolicited NA (override set, solicited clear) for `ip` at `mac` to all nodes.
pub fn unsolicited_na(mac: Mac, ip: Ipv6Addr, out: &mut [u8]) -> Option<usize> {
    let out = out.get_mut(..UNSOLICITED_NA_LEN)?;
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    write_eth(out, Mac([0x33, 0x33, 0, 0, 0, 1]), mac, ETHERTYPE_IPV6);
    let (ip6, icmp) = out[ETH_HDR_LEN..].split_at_mut(40);
    ip6[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    ip6[4..6].copy_from_slice(&32u16.to_be_bytes());
    ip6[6] = 58; // ICMPv6
    ip6[7] = 255; // hop limit 255: receivers drop ND with any other (RFC 4861 §7.1.2)
    ip6[8..24].copy_from_slice(&ip.octets());
    ip6[24..40].copy_from_slice(&all_nodes.octets());
    icmp.fill(0);
    icmp[0] = 136;
    icmp[4] = 0x20; // override
    icmp[8..24].copy_from_slice(&ip.octets());
    icmp[24] = 2; // target link-layer address
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&mac.0);
    let sum = checksum::add(checksum::pseudo_v6(&ip.octets(), &all_nodes.octets(), 32, 58), icmp);
    icmp[2..4].copy_from_slice(&checksum::finish(sum).to_be_bytes());
    Some(UNSOLICITED_NA_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([0x02, 0x42, 10, 0, 0, 2]);

    #[test]
    fn garp_is_a_request_for_its_own_address() {
        let mut b = [0u8; 64];
        assert_eq!(gratuitous_arp(MAC, Ipv4Addr::new(10, 0, 0, 2), &mut b), Some(42));
        assert_eq!(&b[0..6], &[0xff; 6]);
        assert_eq!(&b[12..14], &[0x08, 0x06]);
        assert_eq!(&b[20..22], &[0, 1], "opcode request");
        assert_eq!(&b[28..32], &b[38..42], "sender and target address are the same");
        assert!(gratuitous_arp(MAC, Ipv4Addr::new(10, 0, 0, 2), &mut [0u8; 41]).is_none());
    }

    #[test]
    fn unsolicited_na_checksums_and_flags() {
        let mut b = [0u8; 128];
        let ip: Ipv6Addr = "fd20::2".parse().unwrap();
        let n = unsolicited_na(MAC, ip, &mut b).unwrap();
        let icmp = &b[ETH_HDR_LEN + 40..n];
        let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        let sum = checksum::add(checksum::pseudo_v6(&ip.octets(), &dst.octets(), 32, 58), icmp);
        assert_eq!(checksum::finish(sum), 0, "the checksum verifies");
        assert_eq!(icmp[0], 136);
        assert_eq!(icmp[4], 0x20, "override, not solicited, not router");
        assert_eq!(&b[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
    }
}
