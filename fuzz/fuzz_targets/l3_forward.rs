//! `L3::forward`: the input is `[virtio_net_hdr][Ethernet frame]` (the fuzzer owns the GSO
//! fields too), routed from the network whose gateway MAC it is addressed to (network 1 when
//! none). It runs as given and again with its checksums fixed up.
//!
//! The router: networks 1 (10.20.0.1/24, fd20::1/64) and 2 (10.30.0.1/24, fd30::1/64, MTU
//! 1400) route to each other, as the unit tests' fixtures; 3 is isolated; 4 is IPv4-only, a
//! /31 with MTU 576, reached from 1; 5 is IPv6-only and internal. Routes via known, unknown and
//! link-local next hops. Time advances a second per input, so resolution goes from NotFound
//! through Incomplete to Failed for the unknown next hops and ICMP errors are never starved by
//! the rate limit; a crash replayed alone starts from the same empty state.
//!
//! Invariants: a forwarded frame keeps its length and virtio-net header, goes to an allowed
//! network from that network's gateway MAC, with its TTL or hop limit one less, a valid IPv4
//! header checksum, and no other byte changed; a frame not forwarded is left untouched; an ICMP
//! error fits its buffer, goes back to the sender's MAC from the ingress gateway, with every
//! checksum right; a resolution request can be written for every `Resolve`.

#![no_main]

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vswitch_fuzz::{check_reply, copy_into, ethertype, fix_checksums, mac_at, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HDR_LEN, VNET_HDR_LEN};
use vswitch_router::{Forward, L3Config, NetworkL3, RouteTarget, ICMP_ERROR_BUF, L3};
use vswitch_switch::{Mac, NetId};

const GWS: [Mac; 5] = [
    Mac([0x02, 0x42, 0x0a, 0x14, 0x00, 0x01]),
    Mac([0x02, 0x42, 0x0a, 0x1e, 0x00, 0x01]),
    Mac([0x02, 0x42, 0x0a, 0x28, 0x00, 0x01]),
    Mac([0x02, 0x42, 0x0a, 0x32, 0x00, 0x01]),
    Mac([0x02, 0x42, 0x0a, 0x3c, 0x00, 0x01]),
];
const A: Mac = Mac([0x02, 0x42, 0x0a, 0x14, 0x00, 0x02]);
const B: Mac = Mac([0x02, 0x42, 0x0a, 0x1e, 0x00, 0x02]);
const C: Mac = Mac([0x02, 0x42, 0x0a, 0x32, 0x00, 0x02]);
/// Where the IP header starts in the wire.
const IP_AT: usize = VNET_HDR_LEN + ETH_HDR_LEN;

static ROUTER: OnceLock<L3> = OnceLock::new();
static NOW: AtomicU32 = AtomicU32::new(1000);

thread_local! {
    static WIRE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static ORIG: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn gw_mac(net: NetId) -> Mac {
    GWS[net as usize - 1]
}

fn router() -> L3 {
    let net = |i: NetId, v4: Option<&str>, v6: Option<&str>, mtu: u32, internal: bool| NetworkL3 {
        uplink: i % 2 == 0,
        host_loopback: i % 4 == 0,
        mac: gw_mac(i),
        mtu,
        ipv4: v4.map(|s| s.parse().unwrap()),
        ipv6: v6.map(|s| s.parse().unwrap()),
        internal,
        dns4: None,
        dns6: None,
        host_alias4: None,
        host_alias6: None,
    };
    let mut c = L3Config::new();
    c.set_network(1, net(1, Some("10.20.0.1/24"), Some("fd20::1/64"), 1500, false)).unwrap();
    c.set_network(2, net(2, Some("10.30.0.1/24"), Some("fd30::1/64"), 1400, false)).unwrap();
    c.set_network(3, net(3, Some("10.40.0.1/24"), Some("fd40::1/64"), 1500, false)).unwrap();
    c.set_network(4, net(4, Some("10.50.0.0/31"), None, 576, false)).unwrap();
    c.set_network(5, net(5, None, Some("fd50::1/64"), 1280, true)).unwrap();
    for (from, to) in [(1, 2), (2, 1), (1, 4), (4, 1), (1, 5), (5, 1)] {
        c.allow(from, to);
    }
    let via = |net: NetId, ip: &str| RouteTarget { net, via: Some(ip.parse().unwrap()) };
    c.add_route("192.168.0.0/16".parse().unwrap(), via(2, "10.30.0.2")).unwrap();
    c.add_route("203.0.113.0/24".parse().unwrap(), via(2, "10.30.0.3")).unwrap();
    c.add_route("172.16.0.0/12".parse().unwrap(), RouteTarget { net: 4, via: None }).unwrap();
    c.add_route("fd99::/16".parse().unwrap(), via(2, "fe80::2")).unwrap();
    c.add_route("2001:db8::/32".parse().unwrap(), via(2, "fd30::3")).unwrap();
    let l3 = L3::new();
    l3.store(c);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    for (net, addr, mac) in [
        (1, "10.20.0.2", A),
        (1, "fd20::2", A),
        (2, "10.30.0.2", B),
        (2, "fd30::2", B),
        (2, "fe80::2", B),
        (3, "10.40.0.2", B),
        (4, "10.50.0.1", C),
    ] {
        l3.set_neighbor_static(net, ip(addr), mac).unwrap();
    }
    l3
}

fn run(l3: &L3, input: &[u8]) {
    let in_net = (input.len() >= VNET_HDR_LEN + 6)
        .then(|| mac_at(input, VNET_HDR_LEN))
        .and_then(|dst| GWS.iter().position(|&g| g == dst))
        .map_or(1, |i| i as NetId + 1);
    let now = NOW.fetch_add(1, Ordering::Relaxed);
    let mut err = [0u8; ICMP_ERROR_BUF];
    WIRE.with_borrow_mut(|buf| {
        let wire = copy_into(buf, input);
        let verdict = l3.forward(in_net, wire, &mut err, now);
        let wire: &[u8] = wire;
        match verdict {
            Forward::Out { net, dst_mac } => {
                assert!(l3.config().allows(in_net, net), "routed from network {in_net} to {net}, which it may not reach");
                assert_eq!(wire.len(), input.len());
                assert_eq!(wire[..VNET_HDR_LEN], input[..VNET_HDR_LEN], "the virtio-net header changed");
                assert!(!dst_mac.is_multicast() && !dst_mac.is_zero(), "next hop MAC {dst_mac}");
                assert_eq!(mac_at(wire, VNET_HDR_LEN), dst_mac);
                assert_eq!(mac_at(wire, VNET_HDR_LEN + 6), gw_mac(net), "not from the egress gateway's MAC");
                let (hop_at, sum_at) = match ethertype(&input[VNET_HDR_LEN..]) {
                    Some(ETHERTYPE_IPV4) => {
                        let ihl = usize::from(wire[IP_AT] & 0x0f) * 4;
                        let h = &wire[IP_AT..IP_AT + ihl];
                        let sum = h.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum::<u32>();
                        let folded = (sum & 0xffff) + (sum >> 16);
                        assert_eq!((folded & 0xffff) + (folded >> 16), 0xffff, "IPv4 header checksum wrong after the TTL decrement");
                        (IP_AT + 8, Some(IP_AT + 10))
                    }
                    Some(ETHERTYPE_IPV6) => (IP_AT + 7, None),
                    other => panic!("forwarded ethertype {other:?}"),
                };
                assert_eq!(wire[hop_at], input[hop_at].wrapping_sub(1), "TTL / hop limit not decremented by one");
                assert!(input[hop_at] > 1, "forwarded with TTL / hop limit {}", input[hop_at]);
                for i in VNET_HDR_LEN + 12..wire.len() {
                    if i != hop_at && Some(i) != sum_at && Some(i) != sum_at.map(|s| s + 1) {
                        assert_eq!(wire[i], input[i], "byte {i} changed in a forwarded frame");
                    }
                }
            }
            Forward::Uplink => {
                assert!(in_net % 2 == 0, "network {in_net} has no uplink");
                assert_eq!(wire, input, "a frame for the uplink was changed");
            }
            Forward::Icmp { len, error } => {
                assert_eq!(wire, input, "a frame answered with an ICMP error was changed");
                assert!(len <= err.len(), "ICMP error of {len} bytes in a {}-byte buffer", err.len());
                let e = &err[..len];
                if let Err(why) = check_reply(e) {
                    panic!("{error:?} is broken: {why}");
                }
                assert_eq!(mac_at(e, 0), mac_at(input, VNET_HDR_LEN + 6), "ICMP error not to the sender's MAC");
                assert_eq!(mac_at(e, 6), gw_mac(in_net), "ICMP error not from the ingress gateway's MAC");
                assert_eq!(ethertype(e), ethertype(&input[VNET_HDR_LEN..]), "ICMP error of another IP version");
            }
            Forward::Resolve { net, ip } => {
                assert_eq!(wire, input, "a frame held for resolution was changed");
                assert!(l3.config().allows(in_net, net), "resolving in network {net}, which {in_net} may not reach");
                let mut req = [0u8; 128];
                let len = l3.resolve_request(net, ip, &mut req).expect("Resolve for a next hop no request can be written for");
                if let Err(why) = check_reply(&req[..len]) {
                    panic!("resolution request for {ip} is broken: {why}");
                }
            }
            Forward::Local | Forward::Drop(_) => assert_eq!(wire, input, "a frame not forwarded was changed"),
        }
    });
}

fuzz_target!(|input: &[u8]| {
    let l3 = ROUTER.get_or_init(router);
    run(l3, input);
    if input.len() > VNET_HDR_LEN {
        ORIG.with_borrow_mut(|buf| {
            let fixed = copy_into(buf, input);
            if fix_checksums(&mut fixed[VNET_HDR_LEN..]) {
                run(l3, fixed);
            }
        });
    }
});
