//! Router Advertisements (RFC 4861 §4.2, §6.2): how SLAAC and DHCPv6 clients learn their default
//! router, on-link prefix and MTU, and the gateway's link-local address they route through.
//!
//! Theory of operation. The gateway of an IPv6 network owns a link-local address derived from its
//! MAC ([`link_local_from_mac`], modified EUI-64, RFC 4291 §2.5.1): hosts accept Router
//! Advertisements only from a link-local source (RFC 4861 §6.1.2) and use that address as their
//! next hop, so Neighbor Solicitations for it must be answered too ([`answer_link_local`]).
//! Advertisements leave two ways:
//! - unsolicited, to all nodes (ff02::1, 33:33:00:00:00:01), when [`RaTimer::poll`] says one is
//!   due: three in quick succession after start-up, then every 200–600 s (RFC 4861 §6.2.4);
//! - solicited: [`parse_rs`] validates a Router Solicitation (§6.1.1) and [`RsInfo::reply_to`]
//!   names where the answer goes: unicast to the asker, as §6.2.6 allows, or all nodes when the
//!   asker has no address yet. [`answer_rs`] does both steps.
//!
//! Like the rest of the crate: no clock (time is a parameter), no allocation, no panic on any input.

use std::net::Ipv6Addr;

use vswitch_switch::Mac;

use crate::answer::{answer, mac_at, write_eth, Answer, ETHERTYPE_IPV6, ETH_HDR_LEN};
use crate::checksum;
use crate::gateway::Gateway;

/// The all-nodes group, where unsolicited advertisements go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// The Ethernet address of [`ALL_NODES`] (RFC 2464 §7).
pub const ALL_NODES_MAC: Mac = Mac([0x33, 0x33, 0, 0, 0, 1]);
/// The all-routers group, where Router Solicitations are sent.
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
const ALL_ROUTERS_MAC: Mac = Mac([0x33, 0x33, 0, 0, 0, 2]);

pub(crate) const IPV6_HDR_LEN: usize = 40;
const NEXT_HEADER_ICMPV6: u8 = 58;
const ROUTER_SOLICIT: u8 = 133;
const ROUTER_ADVERT: u8 = 134;
/// Type, code, checksum, reserved: a Router Solicitation before its options.
const RS_LEN: usize = 8;
/// Type, code, checksum, hop limit, flags, router lifetime, reachable time, retrans timer.
const RA_HDR_LEN: usize = 16;
const OPT_SOURCE_LL: u8 = 1;
const OPT_PREFIX_INFO: u8 = 3;
const OPT_MTU: u8 = 5;
/// Recursive DNS Server option (RFC 8106 §5.1).
const OPT_RDNSS: u8 = 25;
const LL_OPT_LEN: usize = 8;
const MTU_OPT_LEN: usize = 8;
const PREFIX_OPT_LEN: usize = 32;
/// An RDNSS option carrying one address: 8 bytes of header and the address.
const RDNSS_OPT_LEN: usize = 24;
const FLAG_MANAGED: u8 = 0x80;
const FLAG_OTHER: u8 = 0x40;
const PREFIX_ON_LINK: u8 = 0x80;
const PREFIX_AUTONOMOUS: u8 = 0x40;
/// ND messages must carry the largest hop limit: proof they never crossed a router (§6.1).
const ND_HOP_LIMIT: u8 = 255;

/// What the gateway advertises about an IPv6 network. [`RaConfig::new`] gives the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaConfig {
    /// The on-link prefix; bits past `prefix_len` are ignored (sent as zeros).
    pub prefix: Ipv6Addr,
    /// 0..=128. SLAAC (`autonomous`) needs 64 on Ethernet: hosts ignore it otherwise (RFC 4862 §5.5.3).
    pub prefix_len: u8,
    /// The link MTU hosts should use; 0 leaves the MTU option out.
    pub mtu: u32,
    /// The hop limit hosts should put on what they send; 0 leaves it to them.
    pub hop_limit: u8,
    /// How long hosts may use the gateway as a default router; 0: not a default router (send one
    /// with 0 before the gateway goes away, RFC 4861 §6.2.5).
    pub router_lifetime_secs: u16,
    /// How long the prefix stays valid (on-link, and addresses formed from it); u32::MAX is forever.
    pub valid_lifetime_secs: u32,
    /// How long addresses formed from the prefix stay preferred; no more than the valid lifetime.
    pub preferred_lifetime_secs: u32,
    /// M flag: addresses come from DHCPv6 (stateful).
    pub managed: bool,
    /// O flag: other configuration (DNS) comes from DHCPv6 (RFC 8415 Information-Request).
    pub other: bool,
    /// A flag of the prefix: hosts form addresses from it themselves (SLAAC, RFC 4862).
    pub autonomous: bool,
    /// A DNS server advertised in an RDNSS option (RFC 8106), for SLAAC hosts without DHCPv6.
    pub dns: Option<Ipv6Addr>,
    /// How long the RDNSS server may be used; RFC 8106 §5.1 suggests 3 × the advertising interval.
    pub dns_lifetime_secs: u32,
}

impl RaConfig {
    /// SLAAC on `prefix/prefix_len`: autonomous, no DHCPv6, MTU 1500, hop limit 64, router
    /// lifetime 1800 s (3 × the largest advertising interval, RFC 4861 §6.2.1), prefix valid
    /// for a day and preferred for four hours (radvd's defaults), no DNS option.
    pub fn new(prefix: Ipv6Addr, prefix_len: u8) -> Self {
        RaConfig {
            prefix,
            prefix_len,
            mtu: 1500,
            hop_limit: 64,
            router_lifetime_secs: 1800,
            valid_lifetime_secs: 86_400,
            preferred_lifetime_secs: 14_400,
            managed: false,
            other: false,
            autonomous: true,
            dns: None,
            dns_lifetime_secs: 1800,
        }
    }
}

/// A valid Router Solicitation: who asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsInfo {
    /// The asker's MAC: its source link-layer option, or the frame's source when it sent none.
    pub src_mac: Mac,
    /// The asker's address; unspecified (::) when it has none yet.
    pub src_ip: Ipv6Addr,
}

impl RsInfo {
    /// Where the answer goes: unicast to the asker (RFC 4861 §6.2.6 allows it, and it reaches only
    /// the port that asked), or to all nodes when the asker has no address to answer.
    pub fn reply_to(&self) -> (Mac, Ipv6Addr) {
        if self.src_ip.is_unspecified() {
            (ALL_NODES_MAC, ALL_NODES)
        } else {
            (self.src_mac, self.src_ip)
        }
    }
}

/// The link-local address of an interface with this MAC: fe80::/64 and the modified EUI-64
/// interface identifier (RFC 4291 §2.5.1 and appendix A): ff:fe in the middle, the
/// universal/local bit flipped. 02:42:ac:11:00:01 gives fe80::42:acff:fe11:1.
pub fn link_local_from_mac(mac: Mac) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]])
}

/// Writes a Router Advertisement from the gateway (`gw_mac`, `gw_link_local`) to `dst_mac` /
/// `dst_ip` into `out`, and returns its length: Ethernet, IPv6 (hop limit 255), ICMPv6 type 134
/// with the M and O flags, and the options source link-layer address, MTU (when non-zero),
/// prefix information (on-link; autonomous when asked) and RDNSS (when a DNS server is set).
///
/// `None` when `out` is too short, or when the result would be discarded by every host:
/// a source that is not link-local (RFC 4861 §6.1.2), a prefix longer than 128, a preferred
/// lifetime beyond the valid one (RFC 4862 §5.5.3 c).
pub fn build_ra(out: &mut [u8], gw_mac: Mac, gw_link_local: Ipv6Addr, dst_mac: Mac, dst_ip: Ipv6Addr, cfg: &RaConfig) -> Option<usize> {
    if !is_link_local(gw_link_local) || cfg.prefix_len > 128 || cfg.preferred_lifetime_secs > cfg.valid_lifetime_secs {
        return None;
    }
    let mtu_len = if cfg.mtu != 0 { MTU_OPT_LEN } else { 0 };
    let dns_len = if cfg.dns.is_some() { RDNSS_OPT_LEN } else { 0 };
    let icmp_len = RA_HDR_LEN + LL_OPT_LEN + mtu_len + PREFIX_OPT_LEN + dns_len;
    let len = ETH_HDR_LEN + IPV6_HDR_LEN + icmp_len;
    let r = out.get_mut(..len)?;
    write_eth(r, dst_mac, gw_mac, ETHERTYPE_IPV6);
    let (h, m) = r[ETH_HDR_LEN..].split_at_mut(IPV6_HDR_LEN);
    // At most 104 bytes: the cast cannot truncate.
    write_ipv6_header(h, gw_link_local, dst_ip, icmp_len as u16, NEXT_HEADER_ICMPV6, ND_HOP_LIMIT);

    m[0] = ROUTER_ADVERT;
    m[1] = 0;
    m[2..4].fill(0);
    m[4] = cfg.hop_limit;
    m[5] = if cfg.managed { FLAG_MANAGED } else { 0 } | if cfg.other { FLAG_OTHER } else { 0 };
    m[6..8].copy_from_slice(&cfg.router_lifetime_secs.to_be_bytes());
    // Reachable time and retransmission timer: unspecified, the hosts' defaults hold.
    m[8..16].fill(0);
    let mut at = RA_HDR_LEN;

    let o = &mut m[at..at + LL_OPT_LEN];
    o[0] = OPT_SOURCE_LL;
    o[1] = 1;
    o[2..8].copy_from_slice(&gw_mac.0);
    at += LL_OPT_LEN;

    if mtu_len != 0 {
        let o = &mut m[at..at + MTU_OPT_LEN];
        o[0..4].copy_from_slice(&[OPT_MTU, 1, 0, 0]);
        o[4..8].copy_from_slice(&cfg.mtu.to_be_bytes());
        at += MTU_OPT_LEN;
    }

    let o = &mut m[at..at + PREFIX_OPT_LEN];
    o[0] = OPT_PREFIX_INFO;
    o[1] = 4;
    o[2] = cfg.prefix_len;
    o[3] = PREFIX_ON_LINK | if cfg.autonomous { PREFIX_AUTONOMOUS } else { 0 };
    o[4..8].copy_from_slice(&cfg.valid_lifetime_secs.to_be_bytes());
    o[8..12].copy_from_slice(&cfg.preferred_lifetime_secs.to_be_bytes());
    o[12..16].fill(0);
    o[16..32].copy_from_slice(&mask_v6(cfg.prefix, cfg.prefix_len).octets());
    at += PREFIX_OPT_LEN;

    if let Some(dns) = cfg.dns {
        let o = &mut m[at..at + RDNSS_OPT_LEN];
        o[0..4].copy_from_slice(&[OPT_RDNSS, 3, 0, 0]);
        o[4..8].copy_from_slice(&cfg.dns_lifetime_secs.to_be_bytes());
        o[8..24].copy_from_slice(&dns.octets());
    }

    let sum = upper_checksum(gw_link_local, dst_ip, NEXT_HEADER_ICMPV6, m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    Some(len)
}

/// An unsolicited advertisement to all nodes from the gateway's EUI-64 link-local address.
pub fn build_unsolicited_ra(out: &mut [u8], gw_mac: Mac, cfg: &RaConfig) -> Option<usize> {
    build_ra(out, gw_mac, link_local_from_mac(gw_mac), ALL_NODES_MAC, ALL_NODES, cfg)
}

/// Validates a bare Ethernet frame as a Router Solicitation to all routers (RFC 4861 §6.1.1:
/// hop limit 255, a valid ICMPv6 checksum, code 0, at least 8 bytes, every option non-empty and
/// inside the message, no source link-layer option from the unspecified address). `None` for
/// anything else, valid or not.
pub fn parse_rs(eth: &[u8]) -> Option<RsInfo> {
    let Frame6::Packet(ip) = parse_frame6(eth) else { return None };
    if ip.next_header != NEXT_HEADER_ICMPV6 || ip.dst != ALL_ROUTERS || ip.dst_mac != ALL_ROUTERS_MAC {
        return None;
    }
    if ip.hop_limit != ND_HOP_LIMIT || ip.src.is_multicast() {
        return None;
    }
    let icmp = ip.payload;
    let rs = icmp.first_chunk::<RS_LEN>()?;
    if rs[0] != ROUTER_SOLICIT || rs[1] != 0 || !upper_checksum_ok(&ip, icmp) {
        return None;
    }
    let source_ll = source_link_layer(&icmp[RS_LEN..])?;
    if ip.src.is_unspecified() && source_ll.is_some() {
        return None;
    }
    let src_mac = source_ll.unwrap_or(ip.src_mac);
    if src_mac.is_multicast() || src_mac.is_zero() {
        return None;
    }
    Some(RsInfo { src_mac, src_ip: ip.src })
}

/// Answers a Router Solicitation in `eth`, if it is one, with an advertisement from the
/// gateway's EUI-64 link-local address to where [`RsInfo::reply_to`] says; returns its length.
pub fn answer_rs(eth: &[u8], gw_mac: Mac, cfg: &RaConfig, out: &mut [u8]) -> Option<usize> {
    let rs = parse_rs(eth)?;
    let (dst_mac, dst_ip) = rs.reply_to();
    build_ra(out, gw_mac, link_local_from_mac(gw_mac), dst_mac, dst_ip, cfg)
}

/// Answers Neighbor Solicitations (including Duplicate Address Detection and unreachability
/// probes) and ICMPv6 echo requests for the gateway's link-local address `gw_link_local`, with
/// the same logic [`answer()`] applies to its global address; the Neighbor Advertisement has the
/// Router flag set. Everything else is [`Answer::Ignored`] (ARP and IPv4 included), so call it
/// when [`answer()`] for the global address ignored the frame.
pub fn answer_link_local(eth: &[u8], gw_mac: Mac, gw_link_local: Ipv6Addr, out: &mut [u8]) -> Answer {
    answer(&Gateway { ipv4: None, ipv6: Some(gw_link_local), mac: gw_mac, dns4: None, dns6: None, proxy_all: false }, eth, out)
}

/// Says when the next unsolicited advertisement is due (RFC 4861 §6.2.4): right away, then the
/// first [`RaTimer::INITIAL_ADVERTISEMENTS`] at most 16 s apart, then at a random interval
/// between a third of the largest interval and the largest. Time is seconds on any clock that
/// does not go back; randomness is the caller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaTimer {
    next_at: u64,
    sent: u32,
    max_interval: u64,
}

impl RaTimer {
    /// MaxRtrAdvInterval's default (RFC 4861 §6.2.1).
    pub const MAX_INTERVAL_SECS: u64 = 600;
    /// MAX_INITIAL_RTR_ADVERTISEMENTS (§10).
    pub const INITIAL_ADVERTISEMENTS: u32 = 3;
    /// MAX_INITIAL_RTR_ADVERT_INTERVAL (§10).
    pub const INITIAL_INTERVAL_SECS: u64 = 16;

    /// A timer with the default interval, its first advertisement due at `now_secs`.
    pub fn new(now_secs: u64) -> Self {
        Self::with_max_interval(now_secs, Self::MAX_INTERVAL_SECS)
    }

    /// A timer whose largest interval is `max_interval_secs`, held to RFC 4861's 4..=1800.
    pub fn with_max_interval(now_secs: u64, max_interval_secs: u64) -> Self {
        RaTimer { next_at: now_secs, sent: 0, max_interval: max_interval_secs.clamp(4, 1800) }
    }

    /// True when an unsolicited advertisement is due at `now_secs`; the next one is then
    /// scheduled, `random` (any value, uniformly drawn) choosing where in the interval it falls.
    pub fn poll(&mut self, now_secs: u64, random: u32) -> bool {
        if now_secs < self.next_at {
            return false;
        }
        self.sent = self.sent.saturating_add(1);
        // MinRtrAdvInterval: 0.33 × MaxRtrAdvInterval, its default (§6.2.1).
        let min = self.max_interval / 3;
        let mut interval = min + u64::from(random) % (self.max_interval - min + 1);
        if self.sent < Self::INITIAL_ADVERTISEMENTS {
            interval = interval.min(Self::INITIAL_INTERVAL_SECS);
        }
        self.next_at = now_secs.saturating_add(interval);
        true
    }

    /// When the next unsolicited advertisement is due: the time to wake up for.
    pub fn next_at(&self) -> u64 {
        self.next_at
    }

    /// Starts over with an advertisement due at `now_secs` and a fast initial burst, as after a
    /// change of what is advertised (§6.2.4).
    pub fn restart(&mut self, now_secs: u64) {
        *self = Self::with_max_interval(now_secs, self.max_interval);
    }
}

/// An Ethernet frame carrying IPv6, as far as [`parse_frame6`] checked it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ip6<'a> {
    pub(crate) dst_mac: Mac,
    pub(crate) src_mac: Mac,
    pub(crate) src: Ipv6Addr,
    pub(crate) dst: Ipv6Addr,
    pub(crate) hop_limit: u8,
    pub(crate) next_header: u8,
    /// Exactly the payload length the header gives; Ethernet padding is left out.
    pub(crate) payload: &'a [u8],
}

/// What [`parse_frame6`] found.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Frame6<'a> {
    /// A runt, another ethertype, or a frame from a group address.
    NotIpv6,
    /// IPv6 with a wrong version or a payload length past the frame.
    Malformed,
    Packet(Ip6<'a>),
}

/// Parses the Ethernet and IPv6 headers of `eth`; the payload length is checked against the frame.
pub(crate) fn parse_frame6(eth: &[u8]) -> Frame6<'_> {
    let Some((e, ip)) = eth.split_first_chunk::<ETH_HDR_LEN>() else { return Frame6::NotIpv6 };
    let src_mac = mac_at(e, 6);
    if u16::from_be_bytes([e[12], e[13]]) != ETHERTYPE_IPV6 || src_mac.is_multicast() {
        return Frame6::NotIpv6;
    }
    let Some(h) = ip.first_chunk::<IPV6_HDR_LEN>() else { return Frame6::Malformed };
    if h[0] >> 4 != 6 {
        return Frame6::Malformed;
    }
    let payload_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    let Some(payload) = ip.get(IPV6_HDR_LEN..IPV6_HDR_LEN + payload_len) else { return Frame6::Malformed };
    Frame6::Packet(Ip6 { dst_mac: mac_at(e, 0), src_mac, src: v6_at(h, 8), dst: v6_at(h, 24), hop_limit: h[7], next_header: h[6], payload })
}

/// True when the upper-layer message `data` (ICMPv6 or UDP, its checksum in place) verifies
/// against the pseudo-header of `ip`.
pub(crate) fn upper_checksum_ok(ip: &Ip6<'_>, data: &[u8]) -> bool {
    upper_checksum(ip.src, ip.dst, ip.next_header, data) == 0
}

/// The checksum of the upper-layer message `data` with the IPv6 pseudo-header (RFC 8200 §8.1);
/// over a message whose checksum field is zero, the value to store there.
pub(crate) fn upper_checksum(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, data: &[u8]) -> u16 {
    // IPv6 payloads come from a u16 length (or a reply built no larger), so the length fits.
    let pseudo = checksum::pseudo_v6(&src.octets(), &dst.octets(), data.len() as u32, next_header);
    checksum::finish(checksum::add(pseudo, data))
}

/// Writes an IPv6 header (no traffic class, no flow label) into `h`, which holds 40 bytes.
pub(crate) fn write_ipv6_header(h: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr, payload_len: u16, next_header: u8, hop_limit: u8) {
    h[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    h[4..6].copy_from_slice(&payload_len.to_be_bytes());
    h[6] = next_header;
    h[7] = hop_limit;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
}

/// Reads an IPv6 address at `at`; the caller has checked that sixteen bytes are there.
pub(crate) fn v6_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(a)
}

/// fe80::/10.
pub(crate) fn is_link_local(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// `a` with every bit past the first `len` cleared (`len` above 128 keeps all of them).
pub(crate) fn mask_v6(a: Ipv6Addr, len: u8) -> Ipv6Addr {
    let mask = u128::MAX.checked_shl(128 - u32::from(len.min(128))).unwrap_or(0);
    Ipv6Addr::from(u128::from(a) & mask)
}

/// Parses ND options (RFC 4861 §4.6) and returns the source link-layer address, if any; `None`
/// when an option is empty or runs past the message.
fn source_link_layer(mut opts: &[u8]) -> Option<Option<Mac>> {
    let mut found = None;
    while let Some(&[kind, units]) = opts.first_chunk::<2>() {
        let len = usize::from(units) * 8;
        if len == 0 || len > opts.len() {
            return None;
        }
        if kind == OPT_SOURCE_LL && len == LL_OPT_LEN {
            found = Some(mac_at(opts, 2));
        }
        opts = &opts[len..];
    }
    // A single trailing byte cannot hold an option.
    opts.is_empty().then_some(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::{Reply, REPLY_BUF};
    use crate::fixtures::{checksums_valid, CLIENT_MAC, GW_MAC};

    // Generated independently of this crate (Python, its own checksum), as in `fixtures.rs`.

    /// A Router Solicitation from the client's link-local address to all-routers, with a source link-layer option.
    #[rustfmt::skip]
    const RS: [u8; 70] = [
        0x33, 0x33, 0x00, 0x00, 0x00, 0x02, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x86, 0xdd, 0x60, 0x00,
        0x00, 0x00, 0x00, 0x10, 0x3a, 0xff, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x42,
        0xac, 0xff, 0xfe, 0x11, 0x00, 0x02, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x85, 0x00, 0x22, 0x83, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01,
        0x02, 0x42, 0xac, 0x11, 0x00, 0x02,
    ];

    /// The answer to [`RS`] for fd00::/64 (on-link, autonomous), MTU 1500, router lifetime 1800 s, from the gateway's link-local address.
    #[rustfmt::skip]
    const RA: [u8; 118] = [
        0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x02, 0x42, 0xac, 0x11, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00,
        0x00, 0x00, 0x00, 0x40, 0x3a, 0xff, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x42,
        0xac, 0xff, 0xfe, 0x11, 0x00, 0x01, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x42,
        0xac, 0xff, 0xfe, 0x11, 0x00, 0x02, 0x86, 0x00, 0x5a, 0x17, 0x40, 0x00, 0x07, 0x08, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01, 0x02, 0x42, 0xac, 0x11, 0x00, 0x01, 0x05, 0x01,
        0x00, 0x00, 0x00, 0x00, 0x05, 0xdc, 0x03, 0x04, 0x40, 0xc0, 0x00, 0x01, 0x51, 0x80, 0x00, 0x00,
        0x38, 0x40, 0x00, 0x00, 0x00, 0x00, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    /// A Neighbor Solicitation for the gateway's link-local address fe80::42:acff:fe11:1 from the client's.
    #[rustfmt::skip]
    const LL_NS: [u8; 86] = [
        0x33, 0x33, 0xff, 0x11, 0x00, 0x01, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x86, 0xdd, 0x60, 0x00,
        0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x42,
        0xac, 0xff, 0xfe, 0x11, 0x00, 0x02, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x01, 0xff, 0x11, 0x00, 0x01, 0x87, 0x00, 0x77, 0x8b, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x80,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x42, 0xac, 0xff, 0xfe, 0x11, 0x00, 0x01, 0x01, 0x01,
        0x02, 0x42, 0xac, 0x11, 0x00, 0x02,
    ];

    /// The answer to [`LL_NS`]: Router, Solicited, Override, the gateway's MAC.
    #[rustfmt::skip]
    const LL_NA: [u8; 86] = [
        0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x02, 0x42, 0xac, 0x11, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00,
        0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x42,
        0xac, 0xff, 0xfe, 0x11, 0x00, 0x01, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x42,
        0xac, 0xff, 0xfe, 0x11, 0x00, 0x02, 0x88, 0x00, 0xe9, 0xcc, 0xe0, 0x00, 0x00, 0x00, 0xfe, 0x80,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x42, 0xac, 0xff, 0xfe, 0x11, 0x00, 0x01, 0x02, 0x01,
        0x02, 0x42, 0xac, 0x11, 0x00, 0x01,
    ];

    fn client_ll() -> Ipv6Addr {
        "fe80::42:acff:fe11:2".parse().unwrap()
    }

    fn gw_ll() -> Ipv6Addr {
        "fe80::42:acff:fe11:1".parse().unwrap()
    }

    fn cfg() -> RaConfig {
        RaConfig::new("fd00::".parse().unwrap(), 64)
    }

    /// Edits a fixture, then makes its ICMPv6 checksum right again.
    fn edited(f: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut f = f.to_vec();
        edit(&mut f);
        crate::fixtures::fix_checksums(&mut f);
        f
    }

    #[test]
    fn link_local_is_modified_eui64() {
        assert_eq!(link_local_from_mac(GW_MAC), gw_ll());
        assert_eq!(link_local_from_mac(Mac([0, 0x11, 0x22, 0x33, 0x44, 0x55])), "fe80::211:22ff:fe33:4455".parse::<Ipv6Addr>().unwrap());
        assert!(is_link_local(gw_ll()) && is_link_local("febf::1".parse().unwrap()));
        assert!(!is_link_local("fec0::1".parse().unwrap()) && !is_link_local("fd00::1".parse().unwrap()));
    }

    #[test]
    fn solicitation_gets_the_exact_advertisement() {
        assert!(checksums_valid(&RS));
        let rs = parse_rs(&RS).unwrap();
        assert_eq!(rs, RsInfo { src_mac: CLIENT_MAC, src_ip: client_ll() });
        assert_eq!(rs.reply_to(), (CLIENT_MAC, client_ll()));
        let mut out = [0u8; REPLY_BUF];
        let len = answer_rs(&RS, GW_MAC, &cfg(), &mut out).unwrap();
        assert_eq!(out[..len], RA);
        assert!(checksums_valid(&out[..len]));
    }

    #[test]
    fn unsolicited_advertisement_goes_to_all_nodes_with_every_option() {
        let mut c = cfg();
        c.managed = true;
        c.other = true;
        c.autonomous = false;
        c.dns = Some("fd00::1".parse().unwrap());
        c.prefix = "fd00::abcd".parse().unwrap();
        let mut out = [0u8; REPLY_BUF];
        let len = build_unsolicited_ra(&mut out, GW_MAC, &c).unwrap();
        let f = &out[..len];
        assert_eq!(len, RA.len() + 24);
        assert!(checksums_valid(f));
        assert_eq!(f[0..6], ALL_NODES_MAC.0);
        assert_eq!(f[38..54], ALL_NODES.octets());
        assert_eq!(f[22..38], gw_ll().octets());
        assert_eq!(f[59], FLAG_MANAGED | FLAG_OTHER);
        // The prefix option: host bits cleared, on-link only.
        assert_eq!(f[86..90], [OPT_PREFIX_INFO, 4, 64, PREFIX_ON_LINK]);
        assert_eq!(f[102..118], "fd00::".parse::<Ipv6Addr>().unwrap().octets());
        // RDNSS: type 25, 3 units, lifetime, the address.
        assert_eq!(f[118..122], [25, 3, 0, 0]);
        assert_eq!(f[122..126], 1800u32.to_be_bytes());
        assert_eq!(f[126..142], "fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        // Without an MTU the option is left out.
        c.mtu = 0;
        c.dns = None;
        assert_eq!(build_unsolicited_ra(&mut out, GW_MAC, &c), Some(RA.len() - 8));
        assert!(checksums_valid(&out[..RA.len() - 8]));
    }

    #[test]
    fn configurations_no_host_accepts_build_nothing() {
        let mut out = [0u8; REPLY_BUF];
        let global: Ipv6Addr = "fd00::1".parse().unwrap();
        assert_eq!(build_ra(&mut out, GW_MAC, global, ALL_NODES_MAC, ALL_NODES, &cfg()), None);
        let mut c = cfg();
        c.prefix_len = 129;
        assert_eq!(build_unsolicited_ra(&mut out, GW_MAC, &c), None);
        let mut c = cfg();
        c.preferred_lifetime_secs = c.valid_lifetime_secs + 1;
        assert_eq!(build_unsolicited_ra(&mut out, GW_MAC, &c), None);
        for short in 0..RA.len() {
            assert_eq!(answer_rs(&RS, GW_MAC, &cfg(), &mut out[..short]), None, "{short}");
        }
    }

    #[test]
    fn prefixes_are_masked() {
        let a: Ipv6Addr = "2001:db8:ffff:ffff:ffff::1".parse().unwrap();
        assert_eq!(mask_v6(a, 0), Ipv6Addr::UNSPECIFIED);
        assert_eq!(mask_v6(a, 48), "2001:db8:ffff::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(mask_v6(a, 128), a);
        assert_eq!(mask_v6(a, 200), a);
    }

    #[test]
    fn solicitation_from_the_unspecified_address_is_answered_to_all_nodes() {
        let bare = edited(&RS, |f| {
            f.truncate(62);
            f[19] = 8;
            f[22..38].fill(0);
        });
        let rs = parse_rs(&bare).unwrap();
        assert_eq!(rs.reply_to(), (ALL_NODES_MAC, ALL_NODES));
        // Without a source link-layer option, the frame's source is used.
        let no_opt = edited(&RS, |f| {
            f.truncate(62);
            f[19] = 8;
        });
        assert_eq!(parse_rs(&no_opt).unwrap().src_mac, CLIENT_MAC);
    }

    #[test]
    fn invalid_solicitations_are_refused() {
        type Edit = fn(&mut Vec<u8>);
        let cases: [(&str, Edit); 10] = [
            ("hop limit 254", |f| f[21] = 254),
            ("code 1", |f| f[55] = 1),
            ("zero-length option", |f| f[63] = 0),
            ("option past the end", |f| f[63] = 2),
            ("link-layer option from ::", |f| f[22..38].fill(0)),
            ("multicast source", |f| f[22] = 0xff),
            ("to another group", |f| f[53] = 1),
            ("to another MAC", |f| f[5] = 1),
            ("an advertisement", |f| f[54] = ROUTER_ADVERT),
            ("multicast MAC in the option", |f| f[64] = 1),
        ];
        for (what, edit) in cases {
            assert_eq!(parse_rs(&edited(&RS, edit)), None, "{what}");
        }
        let mut bad_sum = RS;
        bad_sum[57] ^= 1;
        assert_eq!(parse_rs(&bad_sum), None, "checksum");
        let mut udp = RS;
        udp[20] = 17;
        assert_eq!(parse_rs(&udp), None, "not ICMPv6");
    }

    #[test]
    fn every_truncation_is_refused() {
        let mut out = [0u8; REPLY_BUF];
        for len in 0..RS.len() {
            assert_eq!(parse_rs(&RS[..len]), None, "{len}");
            assert_eq!(answer_rs(&RS[..len], GW_MAC, &cfg(), &mut out), None, "{len}");
        }
        for len in 0..LL_NS.len() {
            assert!(!matches!(answer_link_local(&LL_NS[..len], GW_MAC, gw_ll(), &mut out), Answer::Reply { .. }), "{len}");
        }
    }

    #[test]
    fn solicitation_for_the_link_local_address_gets_the_exact_advertisement() {
        assert!(checksums_valid(&LL_NS));
        let mut out = [0u8; REPLY_BUF];
        let a = answer_link_local(&LL_NS, GW_MAC, gw_ll(), &mut out);
        assert_eq!(a, Answer::Reply { kind: Reply::NeighborAdvert, len: LL_NA.len() });
        assert_eq!(out[..LL_NA.len()], LL_NA);
        // The global address is not the link-local one: the plain gateway ignores it.
        assert_eq!(answer(&crate::fixtures::gw(), &LL_NS, &mut out), Answer::Ignored);
        // And the link-local answerer ignores what is not for its address.
        assert_eq!(answer_link_local(&crate::fixtures::NS, GW_MAC, gw_ll(), &mut out), Answer::Ignored);
        assert_eq!(answer_link_local(&crate::fixtures::ARP_REQUEST, GW_MAC, gw_ll(), &mut out), Answer::Ignored);
    }

    #[test]
    fn timer_bursts_then_settles_between_a_third_and_the_maximum() {
        let mut t = RaTimer::new(100);
        assert!(!t.poll(99, 0), "not due yet");
        let mut now = 100;
        for i in 0..10u32 {
            let r = i.wrapping_mul(0x9e37_79b9);
            assert!(t.poll(now, r), "due at {now}");
            assert!(!t.poll(now, r), "just sent");
            let gap = t.next_at() - now;
            if i + 1 < RaTimer::INITIAL_ADVERTISEMENTS {
                assert!((1..=16).contains(&gap), "initial advertisement {i}: {gap}");
            } else {
                assert!((200..=600).contains(&gap), "advertisement {i}: {gap}");
            }
            now = t.next_at();
        }
        t.restart(5000);
        assert_eq!(t.next_at(), 5000);
        assert!(t.poll(5000, u32::MAX) && t.next_at() <= 5016);
        let mut tiny = RaTimer::with_max_interval(0, 1);
        assert!(tiny.poll(0, u32::MAX) && (1..=4).contains(&tiny.next_at()), "held to at least 4 s");
    }

    #[test]
    fn random_frames_never_panic() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut out = [0u8; REPLY_BUF];
        for i in 0..20_000 {
            let mut f = if i % 2 == 0 { RS.to_vec() } else { LL_NS.to_vec() };
            for _ in 0..1 + next() % 4 {
                let at = (next() % f.len() as u64) as usize;
                f[at] = next() as u8;
            }
            if next() % 4 == 0 {
                f.truncate((next() % (f.len() as u64 + 1)) as usize);
            }
            if next() % 2 == 0 && f.len() >= 58 && f[12..14] == [0x86, 0xdd] {
                let len = usize::from(u16::from_be_bytes([f[18], f[19]]));
                if len >= 4 && 54 + len <= f.len() {
                    crate::fixtures::fix_checksums(&mut f);
                }
            }
            if let Some(len) = answer_rs(&f, GW_MAC, &cfg(), &mut out) {
                assert!(checksums_valid(&out[..len]));
            }
            let _ = answer_link_local(&f, GW_MAC, gw_ll(), &mut out);
        }
    }
}
