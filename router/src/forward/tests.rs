//! Tests of the routed path: byte fixtures for each decision, then truncations, mutations and
//! concurrent reconfiguration that must never panic.

use super::*;
use crate::fixtures::{checksums_valid, Rng};
use crate::icmperr::{ICMP_BURST, ICMP_ERROR_BUF};
use crate::l3_fixtures::*;

const GW1: Mac = Mac([0x02, 0x42, 0x0a, 0x14, 0x00, 0x01]);
const GW2: Mac = Mac([0x02, 0x42, 0x0a, 0x1e, 0x00, 0x01]);
const GW3: Mac = Mac([0x02, 0x42, 0x0a, 0x28, 0x00, 0x01]);
const A: Mac = Mac([0x02, 0x42, 0x0a, 0x14, 0x00, 0x02]);
const B: Mac = Mac([0x02, 0x42, 0x0a, 0x1e, 0x00, 0x02]);
const NOW: u32 = 1000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn network(mac: Mac, v4: &str, v6: &str, mtu: u32) -> NetworkL3 {
    NetworkL3 {
        mac,
        mtu,
        ipv4: Some(v4.parse().unwrap()),
        ipv6: Some(v6.parse().unwrap()),
        internal: false,
        uplink: false,
        host_loopback: false,
        dns4: None,
        dns6: None,
        host_alias4: None,
        host_alias6: None,
    }
}

/// Networks 1 (front) and 2 (back, MTU 1400) route to each other; network 3 (10.40.0.0/24,
/// fd40::/64) is isolated. A and B are static neighbours.
fn router() -> L3 {
    let mut c = L3Config::new();
    c.set_network(1, network(GW1, "10.20.0.1/24", "fd20::1/64", 1500)).unwrap();
    c.set_network(2, network(GW2, "10.30.0.1/24", "fd30::1/64", 1400)).unwrap();
    c.set_network(3, network(GW3, "10.40.0.1/24", "fd40::1/64", 1500)).unwrap();
    c.allow(1, 2);
    c.allow(2, 1);
    let l3 = L3::new();
    l3.store(c);
    l3.set_neighbor_static(1, ip("10.20.0.2"), A).unwrap();
    l3.set_neighbor_static(1, ip("fd20::2"), A).unwrap();
    l3.set_neighbor_static(2, ip("10.30.0.2"), B).unwrap();
    l3.set_neighbor_static(2, ip("fd30::2"), B).unwrap();
    l3.set_neighbor_static(3, ip("10.40.0.2"), B).unwrap();
    l3
}

/// `[virtio_net_hdr][eth]` with no offloads.
fn wire(eth: &[u8]) -> Vec<u8> {
    let mut w = vec![0u8; VNET_HDR_LEN];
    w.extend_from_slice(eth);
    w
}

/// The same with a GSO request of `kind` and `size`.
fn gso_wire(eth: &[u8], kind: u8, size: u16) -> Vec<u8> {
    let mut w = wire(eth);
    w[1] = kind;
    w[4..6].copy_from_slice(&size.to_le_bytes());
    w
}

/// Forwards `w` from network `net` at time `now`: the decision, the frame after, the error frame.
fn run(l3: &L3, net: NetId, mut w: Vec<u8>, now: u32) -> (Forward, Vec<u8>, Vec<u8>) {
    let mut err = vec![0u8; ICMP_ERROR_BUF];
    let f = l3.forward(net, &mut w, &mut err, now);
    let len = if let Forward::Icmp { len, .. } = f { len } else { 0 };
    err.truncate(len);
    (f, w.get(VNET_HDR_LEN..).unwrap_or_default().to_vec(), err)
}

fn fix_ipv4_header(f: &mut [u8]) {
    let ihl = usize::from(f[14] & 0x0f) * 4;
    f[24..26].fill(0);
    let c = checksum::of(&f[14..14 + ihl]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

/// A fixture packet with its IPv4 destination, TTL and DF changed and `extra` bytes of payload
/// added (the UDP checksum is left stale: routers do not read it).
fn v4_edit(base: &[u8], dst: [u8; 4], ttl: u8, df: bool, extra: usize) -> Vec<u8> {
    let mut f = base.to_vec();
    f.extend((0..extra).map(|i| i as u8));
    let total = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[20] = if df { 0x40 } else { 0 };
    f[22] = ttl;
    f[30..34].copy_from_slice(&dst);
    fix_ipv4_header(&mut f);
    f
}

/// A fixture IPv6 packet with its destination, hop limit and payload size changed.
fn v6_edit(base: &[u8], dst: &str, hop: u8, extra: usize) -> Vec<u8> {
    let mut f = base.to_vec();
    f.extend((0..extra).map(|i| i as u8));
    let plen = (f.len() - 54) as u16;
    f[18..20].copy_from_slice(&plen.to_be_bytes());
    f[21] = hop;
    f[38..54].copy_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
    f
}

/// A TCP/IPv4 GSO super-frame from A to B: 20-byte TCP header, `payload` bytes.
fn tcp4_gso(payload: usize) -> Vec<u8> {
    let mut f = UDP4_IN[..34].to_vec();
    f[23] = PROTO_TCP;
    let mut tcp = [0u8; 20];
    tcp[12] = 5 << 4;
    f.extend_from_slice(&tcp);
    f.extend((0..payload).map(|i| i as u8));
    let total = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_header(&mut f);
    f
}

fn tcp6_gso(payload: usize) -> Vec<u8> {
    let mut f = UDP6_IN[..54].to_vec();
    f[20] = PROTO_TCP;
    let mut tcp = [0u8; 32];
    tcp[12] = 8 << 4; // with options: 32 bytes
    f.extend_from_slice(&tcp);
    f.extend((0..payload).map(|i| i as u8));
    let plen = (f.len() - 54) as u16;
    f[18..20].copy_from_slice(&plen.to_be_bytes());
    f
}

#[test]
fn routed_ipv4_is_rewritten_exactly() {
    let (f, out, _) = run(&router(), 1, wire(&UDP4_IN), NOW);
    assert_eq!(f, Forward::Out { net: 2, dst_mac: B });
    assert_eq!(out, UDP4_OUT, "MACs rewritten, TTL 64 → 63, header checksum updated");
    assert_eq!(checksum::of(&out[14..34]), 0);
}

#[test]
fn routed_ipv6_is_rewritten_exactly() {
    let (f, out, _) = run(&router(), 1, wire(&UDP6_IN), NOW);
    assert_eq!(f, Forward::Out { net: 2, dst_mac: B });
    assert_eq!(out, UDP6_OUT);
}

#[test]
fn ethernet_padding_travels_untouched() {
    let mut padded = UDP4_IN.to_vec();
    padded.extend_from_slice(&[0xee; 6]);
    let (f, out, _) = run(&router(), 1, wire(&padded), NOW);
    assert_eq!(f, Forward::Out { net: 2, dst_mac: B });
    assert_eq!(out[..UDP4_OUT.len()], UDP4_OUT);
    assert_eq!(out[UDP4_OUT.len()..], [0xee; 6]);
}

#[test]
fn ttl_1_gets_time_exceeded_from_the_ingress_gateway() {
    let (f, out, err) = run(&router(), 1, wire(&TTL1_IN), NOW);
    assert_eq!(f, Forward::Icmp { len: TIME_EXCEEDED4.len(), error: IcmpError::TimeExceeded });
    assert_eq!(err, TIME_EXCEEDED4);
    assert_eq!(out, TTL1_IN, "the frame is left as it came");
    let (f, _, err) = run(&router(), 1, wire(&HOP1_IN6), NOW);
    assert_eq!(f, Forward::Icmp { len: TIME_EXCEEDED6.len(), error: IcmpError::TimeExceeded });
    assert_eq!(err, TIME_EXCEEDED6);
}

#[test]
fn ttl_0_is_time_exceeded_too() {
    let f = v4_edit(&UDP4_IN, [10, 30, 0, 2], 0, true, 0);
    assert!(matches!(run(&router(), 1, wire(&f), NOW).0, Forward::Icmp { error: IcmpError::TimeExceeded, .. }));
}

#[test]
fn no_route_gets_net_unreachable() {
    let (f, _, err) = run(&router(), 1, wire(&NOROUTE4_IN), NOW);
    assert_eq!(f, Forward::Icmp { len: NET_UNREACH4.len(), error: IcmpError::NetUnreachable });
    assert_eq!(err, NET_UNREACH4);
    let (f, _, err) = run(&router(), 1, wire(&NOROUTE6_IN), NOW);
    assert_eq!(f, Forward::Icmp { len: NO_ROUTE6.len(), error: IcmpError::NetUnreachable });
    assert_eq!(err, NO_ROUTE6);
}

#[test]
fn df_and_too_big_gets_fragmentation_needed_with_the_mtu() {
    // 1401 bytes into network 2 (MTU 1400).
    let big = v4_edit(&UDP4_IN, [10, 30, 0, 2], 64, true, 1401 - 44);
    let (f, _, err) = run(&router(), 1, wire(&big), NOW);
    assert_eq!(f, Forward::Icmp { len: 14 + 576, error: IcmpError::TooBig { mtu: 1400 } });
    assert_eq!((err[34], err[35]), (3, 4));
    assert_eq!(err[38..42], [0, 0, 0x05, 0x78], "next-hop MTU in the second half (RFC 1191)");
    assert_eq!(err[42..], big[14..14 + 548], "quotes as much as fits in 576 bytes");
    assert_eq!(err[0..6], A.0);
    assert_eq!(err[6..12], GW1.0);
    assert!(checksums_valid(&err));
    let exact = v4_edit(&UDP4_IN, [10, 30, 0, 2], 64, true, 1400 - 44);
    assert_eq!(run(&router(), 1, wire(&exact), NOW).0, Forward::Out { net: 2, dst_mac: B });
    let no_df = v4_edit(&UDP4_IN, [10, 30, 0, 2], 64, false, 1401 - 44);
    assert_eq!(run(&router(), 1, wire(&no_df), NOW).0, Forward::Drop(DropReason::WouldFragment));
    // The other way the MTU is 1500: the same packet passes.
    let back = v4_edit(&UDP4_IN, [10, 20, 0, 2], 64, true, 1401 - 44);
    assert_eq!(run(&router(), 2, wire(&back), NOW).0, Forward::Out { net: 1, dst_mac: A });
}

#[test]
fn ipv6_too_big_gets_packet_too_big() {
    let big = v6_edit(&UDP6_IN, "fd30::2", 64, 1401 - 64);
    let (f, _, err) = run(&router(), 1, wire(&big), NOW);
    assert_eq!(f, Forward::Icmp { len: 14 + 1280, error: IcmpError::TooBig { mtu: 1400 } });
    assert_eq!((err[54], err[55]), (2, 0));
    assert_eq!(err[58..62], 1400u32.to_be_bytes());
    assert_eq!(err[62..], big[14..14 + 1232]);
    assert!(checksums_valid(&err));
    let exact = v6_edit(&UDP6_IN, "fd30::2", 64, 1400 - 64);
    assert_eq!(run(&router(), 1, wire(&exact), NOW).0, Forward::Out { net: 2, dst_mac: B });
}

#[test]
fn gso_frames_are_checked_by_segment_size() {
    let l3 = router();
    // 64 000 bytes of payload in one frame; segments of 1360 + 20 + 20 = 1400 fit network 2.
    let (f, out, _) = run(&l3, 1, gso_wire(&tcp4_gso(64_000), GSO_TCPV4, 1360), NOW);
    assert_eq!(f, Forward::Out { net: 2, dst_mac: B });
    assert_eq!(out[22], 63, "the template's TTL");
    assert_eq!(checksum::of(&out[14..34]), 0, "and its header checksum");
    let (f, _, err) = run(&l3, 1, gso_wire(&tcp4_gso(64_000), GSO_TCPV4 | GSO_ECN, 1361), NOW);
    assert_eq!(f, Forward::Icmp { len: 14 + 576, error: IcmpError::TooBig { mtu: 1400 } });
    assert!(checksums_valid(&err));
    // IPv6: 1328 + 40 + 32 = 1400.
    assert_eq!(run(&l3, 1, gso_wire(&tcp6_gso(30_000), GSO_TCPV6, 1328), NOW).0, Forward::Out { net: 2, dst_mac: B });
    assert!(matches!(run(&l3, 1, gso_wire(&tcp6_gso(30_000), GSO_TCPV6, 1329), NOW).0, Forward::Icmp { .. }));
    // UDP segmentation (USO): 8-byte header.
    let udp = v4_edit(&UDP4_IN, [10, 30, 0, 2], 64, true, 20_000);
    assert_eq!(run(&l3, 1, gso_wire(&udp, GSO_UDP_L4, 1372), NOW).0, Forward::Out { net: 2, dst_mac: B });
    assert!(matches!(run(&l3, 1, gso_wire(&udp, GSO_UDP_L4, 1373), NOW).0, Forward::Icmp { .. }));
    // A plain frame that large would not pass.
    assert!(matches!(run(&l3, 1, wire(&tcp4_gso(2000)), NOW).0, Forward::Icmp { .. }));
}

#[test]
fn gso_headers_that_do_not_fit_the_packet_are_malformed() {
    let l3 = router();
    let m = Forward::Drop(DropReason::Malformed);
    assert_eq!(run(&l3, 1, gso_wire(&tcp4_gso(5000), GSO_TCPV6, 1000), NOW).0, m, "TCPv6 on IPv4");
    assert_eq!(run(&l3, 1, gso_wire(&tcp6_gso(5000), GSO_TCPV4, 1000), NOW).0, m, "TCPv4 on IPv6");
    assert_eq!(run(&l3, 1, gso_wire(&UDP4_IN, GSO_TCPV4, 1000), NOW).0, m, "TCP on UDP");
    assert_eq!(run(&l3, 1, gso_wire(&tcp4_gso(5000), GSO_TCPV4, 0), NOW).0, m, "size 0");
    assert_eq!(run(&l3, 1, gso_wire(&tcp4_gso(5000), 2, 1000), NOW).0, m, "unknown type");
    let mut bad_doff = tcp4_gso(5000);
    bad_doff[46] = 4 << 4;
    assert_eq!(run(&l3, 1, gso_wire(&bad_doff, GSO_TCPV4, 1000), NOW).0, m, "TCP header of 16 bytes");
    let mut ext = tcp6_gso(100);
    ext[20] = 60;
    assert_eq!(run(&l3, 1, gso_wire(&ext, GSO_TCPV6, 1000), NOW).0, Forward::Drop(DropReason::Unsupported));
}

#[test]
fn isolated_networks_are_dropped_silently_even_when_ttl_expires() {
    let l3 = router();
    let to3 = v4_edit(&UDP4_IN, [10, 40, 0, 2], 64, true, 0);
    assert_eq!(run(&l3, 1, wire(&to3), NOW).0, Forward::Drop(DropReason::PolicyDenied));
    let to3_ttl1 = v4_edit(&UDP4_IN, [10, 40, 0, 2], 1, true, 0);
    assert_eq!(run(&l3, 1, wire(&to3_ttl1), NOW).0, Forward::Drop(DropReason::PolicyDenied));
    assert_eq!(run(&l3, 1, wire(&v6_edit(&UDP6_IN, "fd40::2", 64, 0)), NOW).0, Forward::Drop(DropReason::PolicyDenied));
    let to3_gw = v4_edit(&UDP4_IN, [10, 40, 0, 1], 64, true, 0);
    assert_eq!(run(&l3, 1, wire(&to3_gw), NOW).0, Forward::Drop(DropReason::PolicyDenied), "another network's gateway too");
    // One direction only: 1 → 3 allowed, 3 → 1 not.
    l3.update(|c| c.allow(1, 3));
    assert_eq!(run(&l3, 1, wire(&to3), NOW).0, Forward::Out { net: 3, dst_mac: B });
    let from3 = {
        let mut f = v4_edit(&UDP4_IN, [10, 20, 0, 2], 64, true, 0);
        f[26..30].copy_from_slice(&[10, 40, 0, 2]);
        fix_ipv4_header(&mut f);
        f
    };
    assert_eq!(run(&l3, 3, wire(&from3), NOW).0, Forward::Drop(DropReason::PolicyDenied));
    // An internal network is never an egress, whatever the pairs say.
    l3.update(|c| {
        let mut n = *c.network(3).unwrap();
        n.internal = true;
        c.set_network(3, n).unwrap();
    });
    assert_eq!(run(&l3, 1, wire(&to3), NOW).0, Forward::Drop(DropReason::PolicyDenied));
    // But it reaches its own subnet through its gateway.
    let inside = {
        let mut f = v4_edit(&UDP4_IN, [10, 40, 0, 2], 64, true, 0);
        f[26..30].copy_from_slice(&[10, 40, 0, 3]);
        fix_ipv4_header(&mut f);
        f
    };
    assert_eq!(run(&l3, 3, wire(&inside), NOW).0, Forward::Out { net: 3, dst_mac: B });
}

#[test]
fn unknown_neighbour_is_resolved_once_a_second_then_unreachable() {
    let l3 = router();
    let f = wire(&v4_edit(&UDP4_IN, [10, 30, 0, 9], 64, true, 0));
    let nine = ip("10.30.0.9");
    assert_eq!(run(&l3, 1, f.clone(), NOW).0, Forward::Resolve { net: 2, ip: nine });
    assert_eq!(run(&l3, 1, f.clone(), NOW).0, Forward::Drop(DropReason::Unresolved));
    let mut req = [0u8; 128];
    let n = l3.resolve_request(2, nine, &mut req).unwrap();
    assert_eq!(n, 42);
    assert_eq!(req[0..6], [0xff; 6]);
    assert_eq!(req[6..12], GW2.0);
    assert_eq!(req[28..32], [10, 30, 0, 1], "asked by the egress gateway");
    assert_eq!(req[38..42], [10, 30, 0, 9]);
    assert_eq!(run(&l3, 1, f.clone(), NOW + 1).0, Forward::Resolve { net: 2, ip: nine });
    assert_eq!(run(&l3, 1, f.clone(), NOW + 2).0, Forward::Resolve { net: 2, ip: nine });
    let (r, _, err) = run(&l3, 1, f.clone(), NOW + 3);
    assert_eq!(r, Forward::Icmp { len: 14 + 20 + 8 + 44, error: IcmpError::HostUnreachable });
    assert_eq!((err[34], err[35]), (3, 1));
    // The answer arrives; the slow path learns it.
    let m = Mac([2, 0, 0, 0, 0, 9]);
    assert_eq!(l3.learn_neighbor(2, nine, m, NOW + 4), Some(NeighLearn::Added));
    assert_eq!(run(&l3, 1, f, NOW + 4).0, Forward::Out { net: 2, dst_mac: m });
}

#[test]
fn unknown_ipv6_neighbour_gets_a_solicitation() {
    let l3 = router();
    let f = wire(&v6_edit(&UDP6_IN, "fd30::9", 64, 0));
    assert_eq!(run(&l3, 1, f, NOW).0, Forward::Resolve { net: 2, ip: ip("fd30::9") });
    let mut req = [0u8; 128];
    let n = l3.resolve_request(2, ip("fd30::9"), &mut req).unwrap();
    assert_eq!(n, 86);
    assert_eq!(req[0..6], [0x33, 0x33, 0xff, 0, 0, 9]);
    assert_eq!(req[22..38], "fd30::1".parse::<Ipv6Addr>().unwrap().octets());
    assert!(checksums_valid(&req[..n]));
    assert_eq!(resolve::learnable(&req[..n]), Some((ip("fd30::1"), GW2)), "a well-formed NS");
}

#[test]
fn routes_via_a_next_hop_use_its_mac() {
    let l3 = router();
    l3.update(|c| c.add_route("192.168.50.0/24".parse().unwrap(), RouteTarget { net: 2, via: Some(ip("10.30.0.2")) })).unwrap();
    l3.update(|c| c.add_route("2001:db8::/32".parse().unwrap(), RouteTarget { net: 2, via: Some(ip("fd30::2")) })).unwrap();
    let f = v4_edit(&UDP4_IN, [192, 168, 50, 7], 64, true, 0);
    let (r, out, _) = run(&l3, 1, wire(&f), NOW);
    assert_eq!(r, Forward::Out { net: 2, dst_mac: B });
    assert_eq!(out[30..34], [192, 168, 50, 7], "the destination is not touched");
    let f = v6_edit(&UDP6_IN, "2001:db8::7", 64, 0);
    assert_eq!(run(&l3, 1, wire(&f), NOW).0, Forward::Out { net: 2, dst_mac: B });
    // Through an unknown next hop: resolve the next hop, not the destination.
    l3.update(|c| c.add_route("192.168.60.0/24".parse().unwrap(), RouteTarget { net: 2, via: Some(ip("10.30.0.77")) })).unwrap();
    let f = v4_edit(&UDP4_IN, [192, 168, 60, 1], 64, true, 0);
    assert_eq!(run(&l3, 1, wire(&f), NOW).0, Forward::Resolve { net: 2, ip: ip("10.30.0.77") });
}

#[test]
fn the_gateway_its_broadcasts_and_groups_are_local() {
    let l3 = router();
    for dst in [[10, 20, 0, 1], [255, 255, 255, 255], [224, 0, 0, 251], [10, 30, 0, 1]] {
        let f = v4_edit(&UDP4_IN, dst, 1, true, 0);
        assert_eq!(run(&l3, 1, wire(&f), NOW).0, Forward::Local, "{dst:?}");
    }
    for dst in ["fd20::1", "ff02::1", "fe80::1", "fd30::1"] {
        let f = v6_edit(&UDP6_IN, dst, 1, 0);
        assert_eq!(run(&l3, 1, wire(&f), NOW).0, Forward::Local, "{dst}");
    }
}

#[test]
fn martians_and_link_local_are_dropped() {
    let l3 = router();
    let with_src = |src: [u8; 4], dst: [u8; 4]| {
        let mut f = v4_edit(&UDP4_IN, dst, 64, true, 0);
        f[26..30].copy_from_slice(&src);
        fix_ipv4_header(&mut f);
        wire(&f)
    };
    let cases = [
        ([127, 0, 0, 1], [10, 30, 0, 2], DropReason::Martian),
        ([0, 0, 0, 0], [10, 30, 0, 2], DropReason::Martian),
        ([224, 0, 0, 1], [10, 30, 0, 2], DropReason::Martian),
        ([255, 255, 255, 255], [10, 30, 0, 2], DropReason::Martian),
        ([10, 20, 0, 2], [127, 0, 0, 1], DropReason::Martian),
        ([10, 20, 0, 2], [0, 1, 2, 3], DropReason::Martian),
        ([10, 20, 0, 2], [240, 0, 0, 1], DropReason::Martian),
        ([10, 20, 0, 2], [10, 30, 0, 255], DropReason::Martian),
        ([169, 254, 0, 5], [10, 30, 0, 2], DropReason::Scope),
        ([10, 20, 0, 2], [169, 254, 0, 5], DropReason::Scope),
    ];
    for (src, dst, why) in cases {
        assert_eq!(run(&l3, 1, with_src(src, dst), NOW).0, Forward::Drop(why), "{src:?} → {dst:?}");
    }
    let with_src6 = |src: &str, dst: &str| {
        let mut f = v6_edit(&UDP6_IN, dst, 64, 0);
        f[22..38].copy_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
        wire(&f)
    };
    let cases6 = [
        ("::", "fd30::2", DropReason::Martian),
        ("::1", "fd30::2", DropReason::Martian),
        ("ff02::1", "fd30::2", DropReason::Martian),
        ("::ffff:10.20.0.2", "fd30::2", DropReason::Martian),
        ("fd20::2", "::1", DropReason::Martian),
        ("fd20::2", "::", DropReason::Martian),
        ("fe80::2", "fd30::2", DropReason::Scope),
    ];
    for (src, dst, why) in cases6 {
        assert_eq!(run(&l3, 1, with_src6(src, dst), NOW).0, Forward::Drop(why), "{src} → {dst}");
    }
}

#[test]
fn errors_are_rate_limited_per_ingress_network() {
    let l3 = router();
    let mut sent = 0;
    for _ in 0..ICMP_BURST + 50 {
        match run(&l3, 1, wire(&TTL1_IN), NOW).0 {
            Forward::Icmp { .. } => sent += 1,
            Forward::Drop(DropReason::IcmpRateLimited) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sent, ICMP_BURST);
    assert!(matches!(run(&l3, 1, wire(&NOROUTE4_IN), NOW).0, Forward::Drop(DropReason::IcmpRateLimited)), "one budget for all errors");
    // Network 2 has its own budget.
    let from2 = {
        let mut f = v4_edit(&UDP4_IN, [10, 20, 0, 2], 1, true, 0);
        f[26..30].copy_from_slice(&[10, 30, 0, 2]);
        fix_ipv4_header(&mut f);
        f
    };
    assert!(matches!(run(&l3, 2, wire(&from2), NOW).0, Forward::Icmp { .. }));
    assert!(matches!(run(&l3, 1, wire(&TTL1_IN), NOW + 1).0, Forward::Icmp { .. }), "refilled a second later");
    // The budget survives a new configuration.
    l3.update(|c| c.allow(1, 3));
    for _ in 0..ICMP_BURST {
        run(&l3, 1, wire(&TTL1_IN), NOW + 1);
    }
    assert!(matches!(run(&l3, 1, wire(&TTL1_IN), NOW + 1).0, Forward::Drop(DropReason::IcmpRateLimited)));
}

#[test]
fn no_error_about_an_error_a_later_fragment_or_without_an_address() {
    let l3 = router();
    // An ICMP port unreachable with TTL 1: time exceeded may not be sent about it.
    let mut icmp_err = TTL1_IN.to_vec();
    icmp_err[23] = 1;
    icmp_err[34] = 3;
    fix_ipv4_header(&mut icmp_err);
    assert_eq!(run(&l3, 1, wire(&icmp_err), NOW).0, Forward::Drop(DropReason::TtlExceeded));
    let mut later_fragment = TTL1_IN.to_vec();
    later_fragment[21] = 0x10;
    fix_ipv4_header(&mut later_fragment);
    assert_eq!(run(&l3, 1, wire(&later_fragment), NOW).0, Forward::Drop(DropReason::TtlExceeded));
    let mut icmp6_err = HOP1_IN6.to_vec();
    icmp6_err[20] = 58;
    icmp6_err[54] = 1;
    assert_eq!(run(&l3, 1, wire(&icmp6_err), NOW).0, Forward::Drop(DropReason::TtlExceeded));
    // A network without an IPv4 gateway address cannot send IPv4 errors.
    l3.update(|c| {
        let mut n = *c.network(1).unwrap();
        n.ipv4 = None;
        c.set_network(1, n).unwrap();
    });
    assert_eq!(run(&l3, 1, wire(&NOROUTE4_IN), NOW).0, Forward::Drop(DropReason::NoRoute));
    // The too-small error buffer: the error is not sent, nothing panics.
    let mut w = wire(&HOP1_IN6);
    assert_eq!(l3.forward(1, &mut w, &mut [0u8; 60], NOW), Forward::Drop(DropReason::TtlExceeded));
}

#[test]
fn other_ethertypes_and_networks_are_refused() {
    let l3 = router();
    let mut arp = UDP4_IN;
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(run(&l3, 1, wire(&arp), NOW).0, Forward::Drop(DropReason::Unsupported));
    let mut vlan = UDP4_IN;
    vlan[12..14].copy_from_slice(&[0x81, 0x00]);
    assert_eq!(run(&l3, 1, wire(&vlan), NOW).0, Forward::Drop(DropReason::Unsupported));
    assert_eq!(run(&l3, 9, wire(&UDP4_IN), NOW).0, Forward::Drop(DropReason::NoNetwork));
    assert_eq!(run(&L3::new(), 0, wire(&UDP4_IN), NOW).0, Forward::Drop(DropReason::NoNetwork));
}

#[test]
fn every_truncation_is_malformed_and_nothing_panics() {
    let l3 = router();
    for fixture in [&UDP4_IN[..], &UDP6_IN, &TTL1_IN, &HOP1_IN6, &NOROUTE4_IN, &NOROUTE6_IN] {
        let full = wire(fixture);
        for cut in 0..full.len() {
            let (f, _, _) = run(&l3, 1, full[..cut].to_vec(), NOW);
            assert_eq!(f, Forward::Drop(DropReason::Malformed), "{cut} of {}", full.len());
        }
    }
    let full = gso_wire(&tcp4_gso(3000), GSO_TCPV4, 1000);
    for cut in 0..full.len() {
        assert!(matches!(run(&l3, 1, full[..cut].to_vec(), NOW).0, Forward::Drop(_)));
    }
}

/// An edit that turns a fixture into the case under test.
type Edit = fn(&mut Vec<u8>);

#[test]
fn bad_ip_headers_are_malformed() {
    let l3 = router();
    let edits: [(&str, Edit); 5] = [
        ("header checksum", |f| f[24] ^= 1),
        ("version", |f| {
            f[14] = 0x55;
            fix_ipv4_header(f)
        }),
        ("IHL 4", |f| {
            f[14] = 0x44;
            fix_ipv4_header(f)
        }),
        ("total length past the frame", |f| {
            f[17] += 1;
            fix_ipv4_header(f)
        }),
        ("total length inside the header", |f| {
            f[16..18].copy_from_slice(&[0, 19]);
            fix_ipv4_header(f)
        }),
    ];
    for (what, edit) in edits {
        let mut f = UDP4_IN.to_vec();
        edit(&mut f);
        assert_eq!(run(&l3, 1, wire(&f), NOW).0, Forward::Drop(DropReason::Malformed), "{what}");
    }
    let mut v6 = UDP6_IN.to_vec();
    v6[19] += 1;
    assert_eq!(run(&l3, 1, wire(&v6), NOW).0, Forward::Drop(DropReason::Malformed), "payload length past the frame");
    v6[19] -= 1;
    v6[14] = 0x40;
    assert_eq!(run(&l3, 1, wire(&v6), NOW).0, Forward::Drop(DropReason::Malformed), "version");
}

#[test]
fn incremental_checksum_matches_a_full_recomputation() {
    let mut rng = Rng(7);
    for _ in 0..20_000 {
        let mut h: [u8; 20] = std::array::from_fn(|_| rng.next() as u8);
        h[0] = 0x45;
        h[10..12].fill(0);
        if rng.below(8) == 0 {
            // Steer towards the edge cases: a checksum of 0x0000 or 0xffff before the edit.
            h[2..4].fill(0);
        }
        let c = checksum::of(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        let old = u16::from_be_bytes([h[8], h[9]]);
        h[8] = h[8].wrapping_sub(1);
        let new = u16::from_be_bytes([h[8], h[9]]);
        let adj = checksum_adjust(c, old, new);
        h[10..12].copy_from_slice(&adj.to_be_bytes());
        assert_eq!(checksum::of(&h), 0, "{h:02x?}");
    }
}

#[test]
fn configuration_is_validated_and_consistent() {
    let mut c = L3Config::new();
    let n1 = network(GW1, "10.20.0.1/24", "fd20::1/64", 1500);
    assert_eq!(c.set_network(MAX_NET_ID + 1, n1), Err(L3Error::NetworkId(MAX_NET_ID + 1)));
    assert_eq!(c.set_network(1, NetworkL3 { mac: Mac::BROADCAST, ..n1 }), Err(L3Error::Mac(Mac::BROADCAST)));
    assert_eq!(c.set_network(1, NetworkL3 { mtu: 1279, ..n1 }), Err(L3Error::Mtu { mtu: 1279, min: 1280 }));
    assert_eq!(c.set_network(1, NetworkL3 { mtu: 576, ipv6: None, ..n1 }), Ok(None));
    assert_eq!(c.set_network(1, n1).unwrap().map(|o| o.mtu), Some(576));
    let subnet: IpNet = "10.20.0.0/24".parse().unwrap();
    assert_eq!(c.set_network(2, network(GW2, "10.20.0.9/24", "fd30::1/64", 1500)), Err(L3Error::SubnetInUse { prefix: subnet, net: 1 }));
    c.set_network(2, network(GW2, "10.30.0.1/24", "fd30::1/64", 1500)).unwrap();
    let t2 = RouteTarget { net: 2, via: None };
    assert_eq!(c.add_route(subnet, t2), Err(L3Error::Connected(subnet)));
    assert_eq!(c.remove_route(subnet), Err(L3Error::Connected(subnet)));
    assert_eq!(c.add_route("1.0.0.0/8".parse().unwrap(), RouteTarget { net: 7, via: None }), Err(L3Error::UnknownNetwork(7)));
    let off = RouteTarget { net: 2, via: Some(ip("10.20.0.5")) };
    assert_eq!(c.add_route("1.0.0.0/8".parse().unwrap(), off), Err(L3Error::ViaNotOnLink { via: ip("10.20.0.5"), net: 2 }));
    let cross = RouteTarget { net: 2, via: Some(ip("fd30::5")) };
    assert!(matches!(c.add_route("1.0.0.0/8".parse().unwrap(), cross), Err(L3Error::ViaNotOnLink { .. })));
    let gw_itself = RouteTarget { net: 2, via: Some(ip("10.30.0.1")) };
    assert!(matches!(c.add_route("1.0.0.0/8".parse().unwrap(), gw_itself), Err(L3Error::ViaNotOnLink { .. })));
    let ll = RouteTarget { net: 2, via: Some(ip("fe80::7")) };
    assert_eq!(c.add_route("2001:db8::/32".parse().unwrap(), ll), Ok(None), "IPv6 next hops may be link-local");
    let via = RouteTarget { net: 2, via: Some(ip("10.30.0.5")) };
    assert_eq!(c.add_route("1.2.3.4/8".parse().unwrap(), via), Ok(None), "host bits ignored");
    assert_eq!(c.add_route("1.0.0.0/8".parse().unwrap(), t2), Ok(Some(via)), "replaced");
    assert_eq!(c.lookup(ip("1.9.9.9")), Some(t2));
    assert_eq!(c.lookup(ip("10.30.0.7")), Some(t2));
    let rows = c.routes();
    let shown: Vec<String> = rows.iter().map(|r| format!("{} {} {}", r.prefix, r.target.net, r.connected)).collect();
    assert_eq!(
        shown,
        [
            "1.0.0.0/8 2 false",
            "10.20.0.0/24 1 true",
            "10.30.0.0/24 2 true",
            "2001:db8::/32 2 false",
            "fd20::/64 1 true",
            "fd30::/64 2 true"
        ]
    );
    c.allow(1, 2);
    c.allow(2, 1);
    assert!(c.allows(1, 2) && c.allows(1, 1) && !c.allows(1, 3));
    assert_eq!(c.remove_network(2).map(|n| n.mac), Some(GW2));
    assert_eq!(c.route_count(), 2, "network 2's connected routes and the routes into it went");
    assert_eq!(c.allowed_pairs().count(), 0);
    assert_eq!(c.remove_route("1.0.0.0/8".parse().unwrap()), Ok(None));
    c.add_route("10.50.0.0/24".parse().unwrap(), RouteTarget { net: 1, via: None }).unwrap();
    let taken: IpNet = "10.50.0.0/24".parse().unwrap();
    assert_eq!(c.set_network(5, network(GW3, "10.50.0.1/24", "fd50::1/64", 1500)), Err(L3Error::RouteExists(taken)));
    assert_eq!(c.remove_route(taken), Ok(Some(RouteTarget { net: 1, via: None })));
    assert_eq!(c.targets.index.len(), 1, "only network 1's connected target is still used");
    assert_eq!(c.targets.free.len(), c.targets.list.len() - 1);
    // A network's subnet may change; its old connected route goes.
    c.set_network(1, network(GW1, "10.21.0.1/16", "fd21::1/64", 1500)).unwrap();
    assert_eq!(c.lookup(ip("10.20.0.7")), None);
    assert_eq!(c.lookup(ip("10.21.200.7")), Some(RouteTarget { net: 1, via: None }));
}

#[test]
fn neighbours_survive_a_new_configuration_but_not_their_network() {
    let l3 = router();
    assert_eq!(l3.learn_neighbor(2, ip("10.30.0.8"), Mac([2, 0, 0, 0, 0, 8]), NOW), Some(NeighLearn::Added));
    assert_eq!(l3.learn_neighbor(2, ip("10.31.0.8"), Mac([2, 0, 0, 0, 0, 8]), NOW), None, "off the subnet");
    assert_eq!(l3.learn_neighbor(2, ip("10.30.0.1"), Mac([2, 0, 0, 0, 0, 8]), NOW), None, "the gateway itself");
    assert_eq!(l3.learn_neighbor(2, ip("10.30.0.255"), Mac([2, 0, 0, 0, 0, 8]), NOW), None, "the broadcast address");
    assert_eq!(l3.learn_neighbor(9, ip("10.30.0.8"), Mac([2, 0, 0, 0, 0, 8]), NOW), None, "no such network");
    l3.update(|c| c.allow(1, 3));
    let rows = l3.neighbors(2, NOW).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows.iter().map(|r| r.state.name()).collect::<Vec<_>>(), ["PERMANENT", "REACHABLE", "PERMANENT"]);
    assert!(l3.remove_neighbor(2, ip("10.30.0.8")));
    assert!(!l3.remove_neighbor(2, ip("10.30.0.8")));
    assert_eq!(l3.set_neighbor_static(9, ip("10.30.0.8"), B), Err(L3Error::UnknownNetwork(9)));
    assert_eq!(l3.set_neighbor_static(2, ip("10.30.0.8"), Mac::BROADCAST), Err(L3Error::Mac(Mac::BROADCAST)));
    l3.update(|c| c.remove_network(2));
    assert_eq!(l3.neighbors(2, NOW), None);
    l3.update(|c| c.set_network(2, network(GW2, "10.30.0.1/24", "fd30::1/64", 1400))).unwrap();
    assert_eq!(l3.neighbors(2, NOW), Some(vec![]), "a network added again starts empty");
    // Learning from frames the slow path sees.
    let mut arp = [0u8; 42];
    resolve::write_arp_request(Mac([2, 0, 0, 0, 0, 7]), "10.30.0.7".parse().unwrap(), "10.30.0.1".parse().unwrap(), &mut arp).unwrap();
    assert_eq!(l3.learn_from_frame(2, &arp, NOW), Some(NeighLearn::Added));
    assert_eq!(l3.learn_neighbor(2, ip("10.30.0.7"), Mac([2, 0, 0, 0, 0, 7]), NOW + 1), Some(NeighLearn::Refreshed));
    assert_eq!(l3.expire_neighbors(NOW + 1000), 1);
}

#[test]
fn concurrent_forwarding_and_reconfiguration() {
    let l3 = std::sync::Arc::new(router());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (l3, stop) = (l3.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                let mut err = [0u8; ICMP_ERROR_BUF];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut w = wire(&UDP4_IN);
                    match l3.forward(1, &mut w, &mut err, NOW) {
                        Forward::Out { net: 2, dst_mac: B } => assert_eq!(w[VNET_HDR_LEN..], UDP4_OUT),
                        Forward::Drop(DropReason::PolicyDenied) => {}
                        other => panic!("{other:?}"),
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    for i in 0..200u32 {
        l3.update(|c| {
            if i % 2 == 0 {
                c.disallow(1, 2);
            } else {
                c.allow(1, 2);
            }
            c.add_route(
                IpNet::V4(Ipv4Net::new(Ipv4Addr::from_bits(0x0b00_0000 + (i << 8)), 24).unwrap()),
                RouteTarget { net: 2, via: None },
            )
        })
        .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let frames: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(frames > 0);
    assert_eq!(l3.config().route_count(), 6 + 200);
    assert_eq!(l3.neighbors(2, NOW).unwrap().len(), 2, "static neighbours kept through 200 swaps");
}

#[test]
fn random_and_mutated_frames_never_panic() {
    let l3 = router();
    l3.update(|c| {
        c.add_route("0.0.0.0/0".parse().unwrap(), RouteTarget { net: 2, via: Some(ip("10.30.0.2")) }).unwrap();
        c.add_route("::/0".parse().unwrap(), RouteTarget { net: 2, via: Some(ip("fd30::2")) }).unwrap();
    });
    let seeds: Vec<Vec<u8>> = vec![
        wire(&UDP4_IN),
        wire(&UDP6_IN),
        wire(&TTL1_IN),
        wire(&HOP1_IN6),
        wire(&v4_edit(&UDP4_IN, [10, 30, 0, 2], 64, true, 1500)),
        wire(&v6_edit(&UDP6_IN, "fd30::2", 64, 1500)),
        gso_wire(&tcp4_gso(4000), GSO_TCPV4, 1400),
        gso_wire(&tcp6_gso(4000), GSO_TCPV6, 1300),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut outcomes = std::collections::HashMap::new();
    for i in 0..50_000u32 {
        let mut w = if i % 4 == 0 {
            let len = rng.below(120);
            let mut w: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if len > 24 {
                w[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14].copy_from_slice(&[[0x08, 0x00], [0x86, 0xdd]][rng.below(2)]);
                w[VNET_HDR_LEN + 14] = [0x45, 0x60][rng.below(2)];
            }
            w
        } else {
            let mut w = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(w.len().min(120));
                w[at] = rng.next() as u8;
            }
            if rng.below(4) == 0 {
                w.truncate(rng.below(w.len() + 1));
            }
            if rng.below(2) == 0 && w.len() >= VNET_HDR_LEN + 34 && w[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14] == [0x08, 0x00] {
                let ihl = usize::from(w[VNET_HDR_LEN + 14] & 0x0f) * 4;
                if ihl >= 20 && w.len() >= VNET_HDR_LEN + 14 + ihl {
                    fix_ipv4_header(&mut w[VNET_HDR_LEN..]);
                }
            }
            w
        };
        let before = w.len();
        let mut err = vec![0u8; [ICMP_ERROR_BUF, 100, 0][rng.below(3)]];
        let f = l3.forward(1 + rng.below(3) as NetId, &mut w, &mut err, NOW + i / 1000);
        assert_eq!(w.len(), before);
        match f {
            Forward::Icmp { len, .. } => {
                assert!(len <= err.len());
                assert!(checksums_valid(&err[..len]), "{:02x?}", &err[..len]);
                *outcomes.entry("icmp").or_insert(0) += 1;
            }
            Forward::Out { .. } => *outcomes.entry("out").or_insert(0) += 1,
            Forward::Drop(r) => *outcomes.entry(r.name()).or_insert(0) += 1,
            Forward::Local => *outcomes.entry("local").or_insert(0) += 1,
            Forward::Resolve { .. } => *outcomes.entry("resolve").or_insert(0) += 1,
            Forward::Uplink => panic!("no network of this router has an uplink"),
        }
    }
    for seen in ["icmp", "out", "malformed", "local", "martian"] {
        assert!(outcomes.get(seen).copied().unwrap_or(0) > 10, "{seen}: {outcomes:?}");
    }
}

/// What a million routes cost through the configuration API, and the lookup and forwarding
/// rates. Run with `cargo test --release -p vswitch-router -- --ignored --nocapture timing`.
#[test]
#[ignore = "timing: run in release mode"]
fn l3_timing_1m_routes_and_forwarding() {
    use std::time::Instant;
    let l3 = router();
    let mut rng = Rng(42);
    let t0 = Instant::now();
    let added = l3.update(|c| {
        let mut n = 0;
        while c.route_count() < 1_000_000 {
            let len = [24u8, 24, 24, 24, 24, 24, 16, 18, 20, 22, 23, 8, 12][rng.below(13)];
            let a = Ipv4Addr::from_bits(rng.next() as u32 | 0x0100_0000);
            let via = [Some(ip("10.30.0.2")), Some(ip("10.30.0.3")), None][rng.below(3)];
            if c.add_route(IpNet::V4(Ipv4Net::new(a, len).unwrap()), RouteTarget { net: 2, via }).is_ok() {
                n += 1;
            }
        }
        n
    });
    let build = t0.elapsed();
    let config = l3.config();
    let queries: Vec<Ipv4Addr> = (0..1 << 22).map(|_| Ipv4Addr::from_bits(rng.next() as u32)).collect();
    let t1 = Instant::now();
    let mut hits = 0u64;
    for _ in 0..4 {
        for &q in &queries {
            hits += u64::from(config.lookup_v4(q).is_some_and(|t| t.via.is_some()));
        }
    }
    let rate = (4 * queries.len()) as f64 / t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let copy = L3Config::clone(&config);
    let clone = t2.elapsed();
    eprintln!(
        "L3Config: {added} adds, {} routes, in {build:?} (one update), FIB {:.1} MB allocated, {:.1} M lookups/s ({hits}), clone {clone:?}",
        config.route_count(),
        config.fib_memory_bytes() as f64 / 1e6,
        rate / 1e6
    );
    drop(copy);
    let frames = 2_000_000u32;
    let mut w = wire(&UDP4_IN);
    let mut err = [0u8; ICMP_ERROR_BUF];
    let t3 = Instant::now();
    for _ in 0..frames {
        w[VNET_HDR_LEN + 22] = 64;
        w[VNET_HDR_LEN + 24..VNET_HDR_LEN + 26].copy_from_slice(&UDP4_IN[24..26]);
        let f = l3.forward(1, &mut w, &mut err, NOW);
        assert!(matches!(f, Forward::Out { .. }));
    }
    eprintln!("forward(): {:.1} M frames/s on one core (routed IPv4, 1M routes)", f64::from(frames) / t3.elapsed().as_secs_f64() / 1e6);
}

/// Network 1 with the uplink (and perhaps host-loopback); network 3 the same but `--internal`.
fn uplink_router(host_loopback: bool) -> L3 {
    let mut c = L3Config::new();
    c.set_network(1, NetworkL3 { uplink: true, host_loopback, ..network(GW1, "10.20.0.1/24", "fd20::1/64", 1500) }).unwrap();
    c.set_network(3, NetworkL3 { uplink: true, host_loopback, internal: true, ..network(GW3, "10.40.0.1/24", "fd40::1/64", 1500) })
        .unwrap();
    let l3 = L3::new();
    l3.store(c);
    l3
}

#[test]
fn unrouted_destinations_leave_through_the_uplink_untouched() {
    let l3 = uplink_router(false);
    for f in [&NOROUTE4_IN[..], &NOROUTE6_IN[..]] {
        let (verdict, out, _) = run(&l3, 1, wire(f), NOW);
        assert_eq!(verdict, Forward::Uplink);
        assert_eq!(out, f, "the engine gets the frame as the container sent it");
    }
    // An --internal network has no way out, uplink or not.
    let mut from3 = NOROUTE4_IN;
    from3[26..30].copy_from_slice(&[10, 40, 0, 2]);
    fix_ipv4_header(&mut from3);
    assert!(matches!(run(&l3, 3, wire(&from3), NOW).0, Forward::Icmp { error: IcmpError::NetUnreachable, .. }));
}

#[test]
fn tcp_and_udp_for_the_gateway_go_up_but_not_its_own_services() {
    let to_gw = |proto: u8, dport: u16| {
        let mut f = v4_edit(&UDP4_IN, [10, 20, 0, 1], 64, true, 0);
        f[23] = proto;
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        fix_ipv4_header(&mut f);
        wire(&f)
    };
    // With host-loopback or without: the engine decides (the host's loopback, or refused), and
    // answers to published ports' clients that appear as the gateway must reach it either way.
    for router in [uplink_router(true), uplink_router(false)] {
        for (proto, port) in [(6, 8080), (17, 8080), (6, 80), (17, 5353)] {
            assert_eq!(run(&router, 1, to_gw(proto, port), NOW).0, Forward::Uplink, "{proto}/{port}");
        }
        for (proto, port) in [(6, 53), (17, 53), (17, 67), (1, 0)] {
            assert_eq!(run(&router, 1, to_gw(proto, port), NOW).0, Forward::Local, "the gateway's own {proto}/{port}");
        }
    }
    // Without the uplink, the gateway's address is only the gateway.
    assert_eq!(run(&router(), 1, to_gw(6, 8080), NOW).0, Forward::Local);
}

/// [`uplink_router`] with DNS addresses beside network 1's gateway, as slirp4netns has.
fn uplink_router_with_dns() -> L3 {
    let mut c = L3Config::new();
    let n1 = network(GW1, "10.20.0.1/24", "fd20::1/64", 1500);
    c.set_network(1, NetworkL3 { uplink: true, dns4: Some("10.20.0.3".parse().unwrap()), dns6: Some("fd20::3".parse().unwrap()), ..n1 })
        .unwrap();
    let l3 = L3::new();
    l3.store(c);
    l3
}

#[test]
fn everything_to_the_dns_address_is_the_gateways_never_the_uplinks() {
    let l3 = uplink_router_with_dns();
    let to_dns4 = |proto: u8, dport: u16| {
        let mut f = v4_edit(&UDP4_IN, [10, 20, 0, 3], 64, true, 0);
        f[23] = proto;
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        fix_ipv4_header(&mut f);
        wire(&f)
    };
    let to_dns6 = |proto: u8, dport: u16| {
        let mut f = v6_edit(&UDP6_IN, "fd20::3", 64, 0);
        f[20] = proto;
        f[56..58].copy_from_slice(&dport.to_be_bytes());
        wire(&f)
    };
    for (proto, port) in [(6, 53), (17, 53), (6, 8080), (17, 5353), (1, 0)] {
        assert_eq!(run(&l3, 1, to_dns4(proto, port), NOW).0, Forward::Local, "{proto}/{port} to 10.20.0.3");
        let proto6 = if proto == 1 { 58 } else { proto };
        assert_eq!(run(&l3, 1, to_dns6(proto6, port), NOW).0, Forward::Local, "{proto6}/{port} to fd20::3");
    }
    // The gateway's own address still sends the host's traffic up; its DNS stays local.
    let mut to_gw = v4_edit(&UDP4_IN, [10, 20, 0, 1], 64, true, 0);
    fix_ipv4_header(&mut to_gw);
    assert_eq!(run(&l3, 1, wire(&to_gw), NOW).0, Forward::Uplink);
    // Without the DNS address, 10.20.0.3 is a neighbour like any other, to be resolved.
    assert_eq!(run(&uplink_router(false), 1, to_dns4(17, 53), NOW).0, Forward::Resolve { net: 1, ip: ip("10.20.0.3") });
    // And no frame may claim it for a container.
    assert_eq!(l3.learn_neighbor(1, ip("10.20.0.3"), A, NOW), None);
    assert_eq!(l3.learn_neighbor(1, ip("fd20::3"), A, NOW), None);
    assert!(l3.learn_neighbor(1, ip("10.20.0.4"), A, NOW).is_some());
}

#[test]
fn dns_addresses_must_be_hosts_other_than_the_gateway_on_or_off_the_subnet() {
    let mut c = L3Config::new();
    let n = network(GW1, "10.20.0.1/24", "fd20::1/64", 1500);
    let with = |dns4: Option<&str>, dns6: Option<&str>| NetworkL3 {
        dns4: dns4.map(|s| s.parse().unwrap()),
        dns6: dns6.map(|s| s.parse().unwrap()),
        ..n
    };
    let v4 = |dns: &str| Err(L3Error::DnsAddress { dns: ip(dns), subnet: "10.20.0.1/24".parse().unwrap() });
    let v6 = |dns: &str| Err(L3Error::DnsAddress { dns: ip(dns), subnet: "fd20::1/64".parse().unwrap() });
    for bad in ["10.20.0.1", "10.20.0.0", "10.20.0.255", "0.0.0.0", "127.0.0.53", "224.0.0.251", "255.255.255.255"] {
        assert_eq!(c.set_network(1, with(Some(bad), None)), v4(bad), "{bad}");
    }
    for bad in ["fd20::1", "fd20::", "::", "::1", "ff02::fb", "::ffff:10.20.0.3"] {
        assert_eq!(c.set_network(1, with(None, Some(bad))), v6(bad), "{bad}");
    }
    let no_v6 = NetworkL3 { ipv6: None, ..with(None, Some("fd20::3")) };
    assert_eq!(c.set_network(1, no_v6), Err(L3Error::NoGateway { prefix: "fd20::3/128".parse().unwrap(), net: 1 }));
    assert_eq!(c.networks().count(), 0, "nothing was changed");
    assert_eq!(c.set_network(1, with(Some("10.20.0.3"), Some("fd20::3"))), Ok(None));
    // Off the subnet, as pasta's --dns-forward has it, or another network's address.
    for (d4, d6) in [("169.254.1.1", "fe80::53"), ("10.30.0.5", "fd30::5"), ("192.0.2.53", "2001:db8::53")] {
        assert!(c.set_network(1, with(Some(d4), Some(d6))).is_ok(), "{d4} {d6}");
    }
    assert_eq!(
        L3Error::DnsAddress { dns: ip("10.20.0.1"), subnet: "10.20.0.1/24".parse().unwrap() }.to_string(),
        "DNS address 10.20.0.1 must be a host's address, neither the gateway's (10.20.0.1/24) nor that subnet's network or broadcast address"
    );
}

/// Network 1 with the uplink, pasta's way: its DNS address and the host's alias link-local,
/// off the subnet.
fn pasta_router() -> L3 {
    let n1 = network(GW1, "10.20.0.1/24", "fd20::1/64", 1500);
    let mut c = L3Config::new();
    c.set_network(
        1,
        NetworkL3 {
            uplink: true,
            dns4: Some("169.254.1.1".parse().unwrap()),
            dns6: Some("fe80::53".parse().unwrap()),
            host_alias4: Some("169.254.1.2".parse().unwrap()),
            host_alias6: Some("fe80::2:1".parse().unwrap()),
            ..n1
        },
    )
    .unwrap();
    let l3 = L3::new();
    l3.store(c);
    l3
}

fn udp4_to(dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut f = v4_edit(&UDP4_IN, dst, 64, true, 0);
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    wire(&f)
}

fn udp6_to(dst: &str, dport: u16) -> Vec<u8> {
    let mut f = v6_edit(&UDP6_IN, dst, 64, 0);
    f[56..58].copy_from_slice(&dport.to_be_bytes());
    wire(&f)
}

#[test]
fn a_link_local_dns_address_is_the_gateways_not_out_of_scope() {
    let l3 = pasta_router();
    for port in [53, 8080] {
        assert_eq!(run(&l3, 1, udp4_to([169, 254, 1, 1], port), NOW).0, Forward::Local, "{port}");
        assert_eq!(run(&l3, 1, udp6_to("fe80::53", port), NOW).0, Forward::Local, "{port}");
    }
    // Any other link-local destination is still out of scope.
    assert_eq!(run(&l3, 1, udp4_to([169, 254, 1, 3], 53), NOW).0, Forward::Drop(DropReason::Scope));
    assert_eq!(l3.learn_neighbor(1, ip("169.254.1.1"), A, NOW), None, "nor on the subnet, nor claimable");
}

#[test]
fn the_host_alias_goes_up_the_uplink_even_when_link_local() {
    let l3 = pasta_router();
    for port in [53, 80, 8080] {
        let (verdict, out, _) = run(&l3, 1, udp4_to([169, 254, 1, 2], port), NOW);
        assert_eq!((verdict, &out[..]), (Forward::Uplink, &udp4_to([169, 254, 1, 2], port)[VNET_HDR_LEN..]), "{port}");
        assert_eq!(run(&l3, 1, udp6_to("fe80::2:1", port), NOW).0, Forward::Uplink, "{port}");
    }
    let mut ping = v4_edit(&UDP4_IN, [169, 254, 1, 2], 64, true, 0);
    ping[23] = 1;
    fix_ipv4_header(&mut ping);
    assert_eq!(run(&l3, 1, wire(&ping), NOW).0, Forward::Uplink, "not only TCP and UDP");
    // Without the uplink the alias means nothing: link-local is out of scope, as ever.
    let mut c = L3Config::clone(&l3.config());
    let n1 = *c.network(1).unwrap();
    c.set_network(1, NetworkL3 { uplink: false, ..n1 }).unwrap();
    l3.store(c);
    assert_eq!(run(&l3, 1, udp4_to([169, 254, 1, 2], 80), NOW).0, Forward::Drop(DropReason::Scope));
    // On the subnet, the alias is nobody's neighbour either.
    let mut c = L3Config::new();
    c.set_network(1, NetworkL3 { uplink: true, host_alias4: Some("10.20.0.9".parse().unwrap()), ..n1 }).unwrap();
    l3.store(c);
    assert_eq!(run(&l3, 1, udp4_to([10, 20, 0, 9], 80), NOW).0, Forward::Uplink);
    assert_eq!(l3.learn_neighbor(1, ip("10.20.0.9"), A, NOW), None);
}

#[test]
fn host_aliases_must_be_hosts_other_than_the_gateways_addresses() {
    let n = NetworkL3 {
        dns4: Some("10.20.0.3".parse().unwrap()),
        dns6: Some("fd20::3".parse().unwrap()),
        ..network(GW1, "10.20.0.1/24", "fd20::1/64", 1500)
    };
    let mut c = L3Config::new();
    for bad in ["10.20.0.1", "10.20.0.3", "0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255"] {
        let got = c.set_network(1, NetworkL3 { host_alias4: Some(bad.parse().unwrap()), ..n });
        assert_eq!(got, Err(L3Error::HostAlias { alias: ip(bad) }), "{bad}");
    }
    for bad in ["fd20::1", "fd20::3", "::", "::1", "ff02::1", "::ffff:1.2.3.4"] {
        let got = c.set_network(1, NetworkL3 { host_alias6: Some(bad.parse().unwrap()), ..n });
        assert_eq!(got, Err(L3Error::HostAlias { alias: ip(bad) }), "{bad}");
    }
    assert_eq!(c.networks().count(), 0);
    let good = NetworkL3 { host_alias4: Some("169.254.1.2".parse().unwrap()), host_alias6: Some("fd20::9".parse().unwrap()), ..n };
    assert_eq!(c.set_network(1, good), Ok(None));
}

#[test]
fn neighbor_discovery_at_the_gateways_mac_is_never_routed() {
    // A Neighbor Solicitation unicast to a routed address (unreachability detection of an address
    // a proxying gateway answered for): hop limit 255, ICMPv6 type 135.
    let ns = |dst: &str, hop: u8, kind: u8| {
        let mut f = v6_edit(&UDP6_IN, dst, hop, 0);
        f[20] = 58;
        f[54] = kind;
        wire(&f)
    };
    for l3 in [router(), uplink_router(false)] {
        for dst in ["fd30::2", "fd99::2", "fd20::9"] {
            assert_eq!(run(&l3, 1, ns(dst, 255, 135), NOW).0, Forward::Local, "NS to {dst}");
            assert_eq!(run(&l3, 1, ns(dst, 255, 136), NOW).0, Forward::Local, "NA to {dst}");
        }
    }
    // Anything else to those addresses is routed as before.
    assert!(matches!(run(&router(), 1, ns("fd30::2", 64, 135), NOW).0, Forward::Out { net: 2, .. }));
    assert!(matches!(run(&router(), 1, ns("fd30::2", 255, 128), NOW).0, Forward::Out { net: 2, .. }));
    assert_eq!(run(&uplink_router(false), 1, ns("fd99::2", 255, 128), NOW).0, Forward::Uplink);
}
