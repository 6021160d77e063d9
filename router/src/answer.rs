//! One frame in, at most one reply out: the Ethernet layer and the dispatch to ARP, ICMP and NDP.
//!
//! Every parser here reads untrusted bytes from a container. The contract, as in smoltcp's
//! `wire`: a length is checked once before the fields it covers are read, and nothing reached
//! from [`answer()`] panics on any input, whatever its length or content (the fuzz test in this
//! file holds us to it). Replies are written into a buffer the caller owns, so answering
//! allocates nothing.

use vswitch_switch::Mac;

use crate::gateway::Gateway;
use crate::{arp, icmpv4, icmpv6};

/// Bytes of an Ethernet header without a VLAN tag.
pub(crate) const ETH_HDR_LEN: usize = 14;
pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
pub(crate) const ETHERTYPE_ARP: u16 = 0x0806;
pub(crate) const ETHERTYPE_IPV6: u16 = 0x86dd;

/// The size of the stack buffer the slow path builds replies in: a full 1500-byte MTU frame
/// and its Ethernet header fit. Echo requests whose reply would not fit are counted `too_big`.
pub const REPLY_BUF: usize = 1600;

/// The reply [`answer()`] wrote, named for the counter it bumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// ARP reply for the gateway's IPv4 address.
    Arp,
    /// ICMPv4 echo reply.
    IcmpEcho,
    /// ICMPv6 Neighbor Advertisement for the gateway's IPv6 address.
    NeighborAdvert,
    /// ICMPv6 echo reply.
    Icmp6Echo,
}

/// What became of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A reply of `len` bytes (a bare Ethernet frame) is at the start of the output buffer; it
    /// goes back out of the port the request came in on.
    Reply { kind: Reply, len: usize },
    /// Well formed, but not a request these services answer (another host's address, a
    /// protocol the gateway does not speak yet, a gratuitous ARP, a fragment).
    Ignored,
    /// Truncated, inconsistent lengths, a bad checksum or a field no valid sender writes.
    Malformed,
    /// A request we would answer, but the reply does not fit the output buffer.
    TooBig,
}

/// Answers one bare Ethernet frame `eth` on behalf of the gateway `gw`, writing any reply to
/// the start of `out`. Pure: no I/O, no clock, no allocation, no panic.
pub fn answer(gw: &Gateway, eth: &[u8], out: &mut [u8]) -> Answer {
    let Some((hdr, payload)) = eth.split_first_chunk::<ETH_HDR_LEN>() else {
        return Answer::Malformed;
    };
    let l2 = L2 { dst: mac_at(hdr, 0), src: mac_at(hdr, 6) };
    if l2.src.is_multicast() {
        // The switch already drops these; a frame from a group address is never genuine.
        return Answer::Malformed;
    }
    match u16::from_be_bytes([hdr[12], hdr[13]]) {
        ETHERTYPE_ARP => arp::answer(gw, l2, payload, out),
        ETHERTYPE_IPV4 => icmpv4::answer(gw, l2, payload, out),
        ETHERTYPE_IPV6 => icmpv6::answer(gw, l2, payload, out),
        // VLAN tags, LLDP, and whatever else reached the gateway: not for these services.
        _ => Answer::Ignored,
    }
}

/// The Ethernet addresses of the request, which decide whether it was meant for the gateway
/// and where the reply goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct L2 {
    pub(crate) dst: Mac,
    pub(crate) src: Mac,
}

/// Reads a MAC address at `at`; the caller has checked that six bytes are there.
pub(crate) fn mac_at(b: &[u8], at: usize) -> Mac {
    Mac::from_slice(&b[at..at + 6])
}

/// Writes an Ethernet header at the start of `out`, which holds at least [`ETH_HDR_LEN`] bytes.
pub(crate) fn write_eth(out: &mut [u8], dst: Mac, src: Mac, ethertype: u16) {
    out[0..6].copy_from_slice(&dst.0);
    out[6..12].copy_from_slice(&src.0);
    out[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn runts_and_group_sources_are_malformed() {
        let mut out = [0u8; REPLY_BUF];
        for len in 0..ETH_HDR_LEN {
            assert_eq!(answer(&gw(), &ARP_REQUEST[..len], &mut out), Answer::Malformed, "{len}");
        }
        let mut f = ARP_REQUEST;
        f[6] |= 1;
        assert_eq!(answer(&gw(), &f, &mut out), Answer::Malformed);
    }

    #[test]
    fn other_ethertypes_are_ignored() {
        let mut out = [0u8; REPLY_BUF];
        for ethertype in [0x8100u16, 0x88cc, 0x0000, 0xffff] {
            let mut f = ARP_REQUEST;
            f[12..14].copy_from_slice(&ethertype.to_be_bytes());
            assert_eq!(answer(&gw(), &f, &mut out), Answer::Ignored, "{ethertype:#x}");
        }
    }

    #[test]
    fn a_short_output_buffer_is_too_big_not_a_panic() {
        // 41 bytes: one short of the smallest reply (ARP, 42 bytes).
        for req in [&ARP_REQUEST[..], &ECHO_REQUEST, &NS, &ECHO6_REQUEST] {
            let mut out = [0u8; 41];
            assert_eq!(answer(&gw(), req, &mut out), Answer::TooBig);
        }
    }
}
