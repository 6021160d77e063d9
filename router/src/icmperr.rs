//! ICMP errors the router sends about packets it could not forward (RFC 792, RFC 1812 §4.3;
//! ICMPv6: RFC 4443), and the token bucket that limits how many it sends.
//!
//! Read RFC 1812 §4.3.2.7 and RFC 4443 §2.4(e) first: they list the packets no error may be
//! sent about (errors about errors, non-first fragments, packets to a group address or from an
//! address that names no single host), which [`reportable_v4`] and [`reportable_v6`] enforce.
//! An error quotes as much of the offending packet as fits in 576 bytes (IPv4, RFC 1812
//! §4.3.2.3) or 1280 bytes (IPv6, RFC 4443 §2.4(c)), comes from the gateway's address and MAC,
//! and goes to the MAC the offending frame came from. Everything is written into a buffer the
//! caller owns; nothing allocates or panics.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use vswitch_switch::Mac;

use crate::answer::{write_eth, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HDR_LEN};
use crate::checksum;

/// A buffer this big holds any error [`write_v4`] or [`write_v6`] builds with its full quote.
pub const ICMP_ERROR_BUF: usize = ETH_HDR_LEN + V6_MAX_ERROR;

/// Largest IPv4 error datagram (RFC 1812 §4.3.2.3).
const V4_MAX_ERROR: usize = 576;
/// Largest ICMPv6 error packet: the IPv6 minimum MTU (RFC 4443 §2.4(c)).
const V6_MAX_ERROR: usize = 1280;
const IPV4_HDR_LEN: usize = 20;
const IPV6_HDR_LEN: usize = 40;
/// Type, code, checksum and the 4-byte field every error message has.
const ICMP_HDR_LEN: usize = 8;
const PROTO_ICMP: u8 = 1;
const NEXT_ICMPV6: u8 = 58;
/// TTL / hop limit of what the router originates, as Linux's default.
const HOP_LIMIT: u8 = 64;
/// Precedence "internetwork control", as Linux marks the ICMP errors it sends.
const TOS_INTERNETWORK_CONTROL: u8 = 0xc0;

/// An error the router reports, named for what went wrong (not for its type and code, which
/// differ between ICMPv4 and ICMPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// TTL or hop limit reached zero in transit. ICMPv4 11/0, ICMPv6 3/0.
    TimeExceeded,
    /// No route to the destination. ICMPv4 3/0 (net unreachable), ICMPv6 1/0 (no route).
    NetUnreachable,
    /// The next hop did not answer address resolution. ICMPv4 3/1, ICMPv6 1/3 (address unreachable).
    HostUnreachable,
    /// Policy forbids it. ICMPv4 3/13 (communication administratively prohibited), ICMPv6 1/1.
    AdminProhibited,
    /// Larger than the next hop's MTU and may not be fragmented. ICMPv4 3/4 with the next-hop
    /// MTU (RFC 1191), ICMPv6 2/0 (packet too big) with the MTU.
    TooBig { mtu: u32 },
}

impl IcmpError {
    /// Type, code and the 4-byte field after the checksum, for ICMPv4.
    fn v4(self) -> (u8, u8, [u8; 4]) {
        match self {
            IcmpError::TimeExceeded => (11, 0, [0; 4]),
            IcmpError::NetUnreachable => (3, 0, [0; 4]),
            IcmpError::HostUnreachable => (3, 1, [0; 4]),
            IcmpError::AdminProhibited => (3, 13, [0; 4]),
            IcmpError::TooBig { mtu } => {
                let m = u16::try_from(mtu).unwrap_or(u16::MAX).to_be_bytes();
                (3, 4, [0, 0, m[0], m[1]])
            }
        }
    }

    /// Type, code and the 4-byte field after the checksum, for ICMPv6.
    fn v6(self) -> (u8, u8, [u8; 4]) {
        match self {
            IcmpError::TimeExceeded => (3, 0, [0; 4]),
            IcmpError::NetUnreachable => (1, 0, [0; 4]),
            IcmpError::HostUnreachable => (1, 3, [0; 4]),
            IcmpError::AdminProhibited => (1, 1, [0; 4]),
            IcmpError::TooBig { mtu } => (2, 0, mtu.to_be_bytes()),
        }
    }
}

/// ICMPv4 types that are not errors (echo, timestamp, information, mask, router discovery): an
/// error may be sent about these, about no other ICMP message (RFC 1812 §4.3.2.7).
fn icmpv4_is_query(t: u8) -> bool {
    matches!(t, 0 | 8 | 9 | 10 | 13 | 14 | 15 | 16 | 17 | 18)
}

/// A source that names no single host: "this network" (0/8), loopback, multicast, reserved
/// and broadcast (240/4).
pub(crate) fn v4_not_a_host(a: Ipv4Addr) -> bool {
    let o = a.octets()[0];
    o == 0 || o == 127 || o >= 224
}

/// Whether RFC 1812 §4.3.2.7 allows an error about the IPv4 packet `ip` (its header first; the
/// bytes may run past its total length, they may not fall short of its header).
pub fn reportable_v4(ip: &[u8]) -> bool {
    let Some(h) = ip.first_chunk::<IPV4_HDR_LEN>() else { return false };
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if h[0] >> 4 != 4 || ihl < IPV4_HDR_LEN || ip.len() < ihl {
        return false;
    }
    let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
    let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
    if v4_not_a_host(src) || dst.is_multicast() || dst.is_broadcast() {
        return false;
    }
    if u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
        return false; // not the first fragment
    }
    if h[9] == PROTO_ICMP {
        // Unknown when cut short: then it may be an error, and no error is sent about it.
        return ip.get(ihl).is_some_and(|&t| icmpv4_is_query(t));
    }
    true
}

/// Whether RFC 4443 §2.4(e) allows an error about the IPv6 packet `ip`: not an ICMPv6 error,
/// not a fragment other than the first, not to a multicast address (the Packet Too Big
/// exception does not arise: the router does not forward multicast), and from an address that
/// names one host. The extension headers are walked to find the upper layer; a chain too long
/// or cut short gets no error.
pub fn reportable_v6(ip: &[u8]) -> bool {
    let Some(h) = ip.first_chunk::<IPV6_HDR_LEN>() else { return false };
    if h[0] >> 4 != 6 {
        return false;
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&h[8..24]).unwrap_or([0; 16]));
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&h[24..40]).unwrap_or([0; 16]));
    if src.is_unspecified() || src.is_multicast() || src.is_loopback() || dst.is_multicast() {
        return false;
    }
    let mut next = h[6];
    let mut at = IPV6_HDR_LEN;
    for _ in 0..8 {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-byte units, after the first 8.
            0 | 43 | 60 => {
                let Some(e) = ip.get(at..at + 2) else { return false };
                next = e[0];
                at += (usize::from(e[1]) + 1) * 8;
            }
            // Fragment: fixed 8 bytes; only the first fragment carries the upper-layer header.
            44 => {
                let Some(e) = ip.get(at..at + 4) else { return false };
                if u16::from_be_bytes([e[2], e[3]]) >> 3 != 0 {
                    return false;
                }
                next = e[0];
                at += 8;
            }
            // Authentication header: length in 4-byte units, after the first 8.
            51 => {
                let Some(e) = ip.get(at..at + 2) else { return false };
                next = e[0];
                at += (usize::from(e[1]) + 2) * 4;
            }
            NEXT_ICMPV6 => return ip.get(at).is_some_and(|&t| t >= 128),
            _ => return true,
        }
    }
    false
}

/// Writes an ICMPv4 `error` about the IPv4 packet `ip` (as received: its header first,
/// Ethernet padding allowed after it) into `out` as a bare Ethernet frame from `gw_mac` /
/// `gw_ip` to `to`. Returns its length, or None when [`reportable_v4`] forbids the error, the
/// packet is shorter than its header or `out` cannot hold the header and 8 bytes of quote.
pub fn write_v4(error: IcmpError, gw_mac: Mac, gw_ip: Ipv4Addr, to: Mac, ip: &[u8], out: &mut [u8]) -> Option<usize> {
    if !reportable_v4(ip) {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let room = out.len().checked_sub(ETH_HDR_LEN + IPV4_HDR_LEN + ICMP_HDR_LEN)?;
    // As much as fits in 576 bytes and in `out`, never past the datagram; at least its header.
    let quote = ip.len().min(total.max(ihl)).min(V4_MAX_ERROR - IPV4_HDR_LEN - ICMP_HDR_LEN).min(room);
    if quote < ihl + 8.min(total.saturating_sub(ihl)) {
        return None;
    }
    let src = [ip[12], ip[13], ip[14], ip[15]];
    let ip_len = IPV4_HDR_LEN + ICMP_HDR_LEN + quote;
    let len = ETH_HDR_LEN + ip_len;
    let frame = out.get_mut(..len)?;
    write_eth(frame, to, gw_mac, ETHERTYPE_IPV4);
    let (hdr, icmp) = frame[ETH_HDR_LEN..].split_at_mut(IPV4_HDR_LEN);
    hdr[0] = 0x45;
    hdr[1] = TOS_INTERNETWORK_CONTROL;
    // ip_len <= 576.
    hdr[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    hdr[4..8].fill(0); // identification, flags, fragment offset
    hdr[8] = HOP_LIMIT;
    hdr[9] = PROTO_ICMP;
    hdr[10..12].fill(0);
    hdr[12..16].copy_from_slice(&gw_ip.octets());
    hdr[16..20].copy_from_slice(&src);
    let c = checksum::of(hdr);
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
    let (t, code, rest) = error.v4();
    icmp[0] = t;
    icmp[1] = code;
    icmp[2..4].fill(0);
    icmp[4..8].copy_from_slice(&rest);
    icmp[ICMP_HDR_LEN..].copy_from_slice(&ip[..quote]);
    let c = checksum::of(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Some(len)
}

/// Writes an ICMPv6 `error` about the IPv6 packet `ip` (as received) into `out` as a bare
/// Ethernet frame from `gw_mac` / `gw_ip` to `to`. Returns its length, or None when
/// [`reportable_v6`] forbids it or `out` cannot hold the headers and the offending IPv6 header.
pub fn write_v6(error: IcmpError, gw_mac: Mac, gw_ip: Ipv6Addr, to: Mac, ip: &[u8], out: &mut [u8]) -> Option<usize> {
    if !reportable_v6(ip) {
        return None;
    }
    let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let room = out.len().checked_sub(ETH_HDR_LEN + IPV6_HDR_LEN + ICMP_HDR_LEN)?;
    let quote = ip.len().min(IPV6_HDR_LEN + payload).min(V6_MAX_ERROR - IPV6_HDR_LEN - ICMP_HDR_LEN).min(room);
    if quote < IPV6_HDR_LEN {
        return None;
    }
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&ip[8..24]);
    let icmp_len = ICMP_HDR_LEN + quote;
    let len = ETH_HDR_LEN + IPV6_HDR_LEN + icmp_len;
    let frame = out.get_mut(..len)?;
    write_eth(frame, to, gw_mac, ETHERTYPE_IPV6);
    let (hdr, icmp) = frame[ETH_HDR_LEN..].split_at_mut(IPV6_HDR_LEN);
    hdr[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    // icmp_len <= 1240.
    hdr[4..6].copy_from_slice(&(icmp_len as u16).to_be_bytes());
    hdr[6] = NEXT_ICMPV6;
    hdr[7] = HOP_LIMIT;
    hdr[8..24].copy_from_slice(&gw_ip.octets());
    hdr[24..40].copy_from_slice(&dst);
    let (t, code, rest) = error.v6();
    icmp[0] = t;
    icmp[1] = code;
    icmp[2..4].fill(0);
    icmp[4..8].copy_from_slice(&rest);
    icmp[ICMP_HDR_LEN..].copy_from_slice(&ip[..quote]);
    let sum = checksum::pseudo_v6(&gw_ip.octets(), &dst, icmp_len as u32, NEXT_ICMPV6);
    let c = checksum::finish(checksum::add(sum, icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Some(len)
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up, one spent per error. Lock
/// free (one atomic word: the second of the last refill and the tokens left), so the workers of
/// one network share it without a lock. Time is a parameter, in whole seconds.
#[derive(Debug)]
pub struct RateLimiter {
    /// Second of the last refill in the high half, tokens in the low half.
    state: AtomicU64,
    rate: u32,
    burst: u32,
}

/// Default errors per second a network's gateway sends.
pub const ICMP_RATE: u32 = 100;
/// Default errors a network's gateway sends in a burst. With a one-second clock a bucket
/// refills at most once a second, so a burst of [`ICMP_RATE`] lets the full rate through.
pub const ICMP_BURST: u32 = 100;

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new(ICMP_RATE, ICMP_BURST)
    }
}

impl RateLimiter {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self { state: AtomicU64::new(u64::from(burst)), rate, burst }
    }

    /// Takes a token at time `now` (seconds) if there is one.
    pub fn allow(&self, now: u32) -> bool {
        let mut cur = self.state.load(Relaxed);
        loop {
            let (last, tokens) = ((cur >> 32) as u32, cur as u32);
            let elapsed = now.wrapping_sub(last);
            // A clock that went backwards (or jumped more than 68 years) refills nothing.
            let elapsed = if elapsed > i32::MAX as u32 { 0 } else { elapsed };
            let tokens = tokens.saturating_add(self.rate.saturating_mul(elapsed)).min(self.burst);
            if tokens == 0 {
                return false;
            }
            let next = (u64::from(now) << 32) | u64::from(tokens - 1);
            match self.state.compare_exchange_weak(cur, next, Relaxed, Relaxed) {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    const GW4: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);

    fn gw6() -> Ipv6Addr {
        "fd00::1".parse().unwrap()
    }

    /// The IP packet of a fixture frame.
    fn ip(f: &[u8]) -> &[u8] {
        &f[ETH_HDR_LEN..]
    }

    #[test]
    fn v4_time_exceeded_quotes_the_whole_small_packet() {
        let mut out = [0u8; ICMP_ERROR_BUF];
        let len = write_v4(IcmpError::TimeExceeded, GW_MAC, GW4, CLIENT_MAC, ip(&ECHO_REQUEST), &mut out).unwrap();
        let f = &out[..len];
        assert_eq!(len, 14 + 20 + 8 + 76);
        assert_eq!(f[0..6], CLIENT_MAC.0);
        assert_eq!(f[6..12], GW_MAC.0);
        assert_eq!(f[23], 1, "ICMP");
        assert_eq!(f[26..30], GW4.octets());
        assert_eq!(f[30..34], [172, 17, 0, 2]);
        assert_eq!((f[34], f[35]), (11, 0));
        assert_eq!(f[42..], ECHO_REQUEST[14..]);
        assert!(checksums_valid(f));
    }

    #[test]
    fn v4_quotes_are_cut_at_576_bytes_and_at_the_buffer() {
        let big = echo_request_with(1400);
        let mut out = [0u8; ICMP_ERROR_BUF];
        let len = write_v4(IcmpError::TooBig { mtu: 1280 }, GW_MAC, GW4, CLIENT_MAC, ip(&big), &mut out).unwrap();
        assert_eq!(len, 14 + 576);
        assert_eq!((out[34], out[35], &out[38..42]), (3, 4, &[0, 0, 0x05, 0x00][..]));
        assert!(checksums_valid(&out[..len]));
        let mut small = [0u8; 14 + 20 + 8 + 28];
        assert_eq!(write_v4(IcmpError::TimeExceeded, GW_MAC, GW4, CLIENT_MAC, ip(&big), &mut small), Some(small.len()));
        let mut tiny = [0u8; 14 + 20 + 8 + 27];
        assert_eq!(write_v4(IcmpError::TimeExceeded, GW_MAC, GW4, CLIENT_MAC, ip(&big), &mut tiny), None);
    }

    /// An edit that turns a fixture into the case under test.
    type Edit = fn(&mut [u8]);

    #[test]
    fn v4_errors_are_not_sent_about_errors_fragments_or_group_addresses() {
        let cases: [(&str, Edit); 7] = [
            ("an ICMP error", |f| f[34] = 3),
            ("an unknown ICMP type", |f| f[34] = 42),
            ("a later fragment", |f| f[21] = 1),
            ("a multicast destination", |f| f[30] = 224),
            ("a broadcast destination", |f| f[30..34].fill(255)),
            ("an unspecified source", |f| f[26..30].fill(0)),
            ("a loopback source", |f| f[26] = 127),
        ];
        for (what, edit) in cases {
            let mut f = ECHO_REQUEST;
            edit(&mut f);
            fix_checksums(&mut f);
            assert!(!reportable_v4(ip(&f)), "{what}");
            assert_eq!(write_v4(IcmpError::TimeExceeded, GW_MAC, GW4, CLIENT_MAC, ip(&f), &mut [0; 600]), None, "{what}");
        }
        let mut first_fragment = ECHO_REQUEST;
        first_fragment[20] = 0x20; // MF, offset 0
        assert!(reportable_v4(ip(&first_fragment)));
    }

    #[test]
    fn v6_errors_quote_up_to_1280_bytes() {
        let mut out = [0u8; ICMP_ERROR_BUF];
        let len = write_v6(IcmpError::TimeExceeded, GW_MAC, gw6(), CLIENT_MAC, ip(&ECHO6_REQUEST), &mut out).unwrap();
        assert_eq!(len, 14 + 40 + 8 + 96);
        let f = &out[..len];
        assert_eq!((f[54], f[55]), (3, 0));
        assert_eq!(f[38..54], "fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(f[62..], ECHO6_REQUEST[14..]);
        assert!(checksums_valid(f));
        let big = echo6_request_with(1400);
        let len = write_v6(IcmpError::TooBig { mtu: 1280 }, GW_MAC, gw6(), CLIENT_MAC, ip(&big), &mut out).unwrap();
        assert_eq!(len, 14 + 1280);
        assert_eq!((out[54], out[55], &out[58..62]), (2, 0, &1280u32.to_be_bytes()[..]));
        assert!(checksums_valid(&out[..len]));
        assert_eq!(write_v6(IcmpError::TooBig { mtu: 1280 }, GW_MAC, gw6(), CLIENT_MAC, ip(&big), &mut [0u8; 101]), None);
    }

    #[test]
    fn v6_errors_are_not_sent_about_errors_fragments_or_group_addresses() {
        let mut f = ECHO6_REQUEST;
        f[54] = 1; // destination unreachable
        assert!(!reportable_v6(ip(&f)));
        let mut f = ECHO6_REQUEST;
        f[38] = 0xff;
        assert!(!reportable_v6(ip(&f)), "multicast destination");
        let mut f = ECHO6_REQUEST;
        f[22..38].fill(0);
        assert!(!reportable_v6(ip(&f)), "unspecified source");
        // A fragment header in front of the ICMPv6 message: first fragment yes, later ones no.
        let frag = |offset: u16| {
            let mut f = ECHO6_REQUEST[..54].to_vec();
            f[20] = 44;
            f.extend_from_slice(&[58, 0]);
            f.extend_from_slice(&(offset << 3).to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 1]);
            f.extend_from_slice(&ECHO6_REQUEST[54..]);
            f
        };
        assert!(reportable_v6(ip(&frag(0))));
        assert!(!reportable_v6(ip(&frag(1))));
        // A destination-options header before an ICMPv6 error: still an error, no report.
        let mut f = ECHO6_REQUEST[..54].to_vec();
        f[20] = 60;
        f.extend_from_slice(&[58, 0, 1, 4, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert!(!reportable_v6(ip(&f)));
        // Cut inside the extension header: no report either.
        assert!(!reportable_v6(&ip(&f)[..41]));
    }

    #[test]
    fn never_panics_on_short_or_odd_input() {
        let mut out = [0u8; ICMP_ERROR_BUF];
        for f in [&ECHO_REQUEST[..], &ECHO6_REQUEST[..]] {
            for cut in 0..f.len() {
                let p = &f[ETH_HDR_LEN.min(cut)..cut];
                for e in [IcmpError::TimeExceeded, IcmpError::TooBig { mtu: 1 << 20 }] {
                    let _ = write_v4(e, GW_MAC, GW4, CLIENT_MAC, p, &mut out);
                    let _ = write_v6(e, GW_MAC, gw6(), CLIENT_MAC, p, &mut out);
                    let _ = write_v4(e, GW_MAC, GW4, CLIENT_MAC, p, &mut out[..20]);
                }
            }
        }
    }

    #[test]
    fn rate_limiter_spends_and_refills_by_the_second() {
        let r = RateLimiter::new(10, 5);
        assert_eq!((0..20).filter(|_| r.allow(100)).count(), 5, "the burst");
        assert!(!r.allow(100));
        assert_eq!((0..20).filter(|_| r.allow(101)).count(), 5, "refilled up to the burst");
        let r = RateLimiter::new(3, 10);
        assert_eq!((0..20).filter(|_| r.allow(0)).count(), 10);
        assert_eq!((0..20).filter(|_| r.allow(1)).count(), 3, "the rate");
        assert_eq!((0..20).filter(|_| r.allow(0)).count(), 0, "time going backwards refills nothing");
        assert_eq!((0..20).filter(|_| r.allow(3)).count(), 6);
        assert_eq!((0..20).filter(|_| r.allow(1003)).count(), 10, "long idle: full");
        let r = RateLimiter::new(3, 10);
        assert_eq!((0..20).filter(|_| r.allow(u32::MAX - 1)).count(), 10);
        assert_eq!((0..20).filter(|_| r.allow(1)).count(), 9, "the clock may wrap");
        let none = RateLimiter::new(0, 0);
        assert!(!none.allow(5));
    }
}
