//! `learnable` (the binding an ARP or NDP frame announces), `L3::learn_from_frame` and the
//! neighbour table behind it. The input is a bare Ethernet frame; it runs as given and again
//! with its checksums fixed up (NDP is learned only with a right ICMPv6 checksum).
//!
//! The router has network 1 (172.17.0.1/16, fd00::1/64, as the unit tests' fixtures, with a
//! static neighbour 172.17.0.9) and network 2 (10.0.0.1/24, IPv4 only). A separate table of
//! 8 entries, aging after 5 s, is fed every binding too, so eviction and ageing run often.
//! Time advances a second per input.
//!
//! Invariants: a binding has a unicast, non-zero MAC; an IPv4 one is an ARP sender (never
//! 0.0.0.0), an IPv6 one an NDP message with hop limit 255 about a unicast address; the router
//! learns only what `learnable` found, and only addresses on the network's subnets other than
//! the gateway's; once learned, a lookup at the same time finds that MAC (or the static one),
//! and the small table never holds more than its capacity.

#![no_main]

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vswitch_fuzz::{copy_into, ethertype, fix_checksums, mac_at, v4_in, v6_in, ETHERTYPE_ARP, ETHERTYPE_IPV6};
use vswitch_router::{learnable, L3Config, NeighLearn, NeighLookup, NeighTable, NetworkL3, L3};
use vswitch_switch::{Mac, NetId};

const GW_MAC: Mac = Mac([0x02, 0x42, 0xac, 0x11, 0x00, 0x01]);
const NET2_MAC: Mac = Mac([0x02, 0x42, 0x0a, 0x00, 0x00, 0x01]);
const STATIC_MAC: Mac = Mac([0x02, 0x42, 0xac, 0x11, 0x00, 0x09]);
const STATIC_IP: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 9);
const SMALL: usize = 8;

struct Fixture {
    l3: L3,
    small: NeighTable,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();
static NOW: AtomicU32 = AtomicU32::new(1000);

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn fixture() -> Fixture {
    let mut c = L3Config::new();
    let n1 = NetworkL3 {
        uplink: false,
        host_loopback: false,
        mac: GW_MAC,
        mtu: 1500,
        ipv4: Some("172.17.0.1/16".parse().unwrap()),
        ipv6: Some("fd00::1/64".parse().unwrap()),
        internal: false,
        dns4: None,
        dns6: None,
        host_alias4: None,
        host_alias6: None,
    };
    let n2 = NetworkL3 {
        mac: NET2_MAC,
        mtu: 1500,
        ipv4: Some("10.0.0.1/24".parse().unwrap()),
        ipv6: None,
        internal: false,
        uplink: false,
        host_loopback: false,
        dns4: None,
        dns6: None,
        host_alias4: None,
        host_alias6: None,
    };
    c.set_network(1, n1).unwrap();
    c.set_network(2, n2).unwrap();
    let l3 = L3::new();
    l3.store(c);
    l3.set_neighbor_static(1, IpAddr::V4(STATIC_IP), STATIC_MAC).unwrap();
    let small = NeighTable::new(SMALL, 5);
    small.set_static(IpAddr::V4(STATIC_IP), STATIC_MAC);
    Fixture { l3, small }
}

/// Whether `ip` may be a neighbour on network `net` of the fixture.
fn on_link(net: NetId, ip: IpAddr) -> bool {
    let v4_host = |a: Ipv4Addr, net: Ipv4Addr, len: u32, gw: Ipv4Addr| {
        let host = a.to_bits() & !u32::MAX.checked_shl(32 - len).unwrap_or(0);
        v4_in(a, net, len) && a != gw && host != 0 && host != !u32::MAX.checked_shl(32 - len).unwrap_or(0)
    };
    match (net, ip) {
        (1, IpAddr::V4(a)) => v4_host(a, Ipv4Addr::new(172, 17, 0, 0), 16, Ipv4Addr::new(172, 17, 0, 1)),
        (1, IpAddr::V6(a)) => {
            (v6_in(a, "fd00::".parse::<Ipv6Addr>().unwrap(), 64) || a.is_unicast_link_local())
                && a != "fd00::1".parse::<Ipv6Addr>().unwrap()
        }
        (2, IpAddr::V4(a)) => v4_host(a, Ipv4Addr::new(10, 0, 0, 0), 24, Ipv4Addr::new(10, 0, 0, 1)),
        _ => false,
    }
}

fn run(eth: &[u8]) {
    let fx = FIXTURE.get_or_init(fixture);
    let now = NOW.fetch_add(1, Ordering::Relaxed);
    let binding = learnable(eth);
    if let Some((ip, mac)) = binding {
        assert!(!mac.is_multicast() && !mac.is_zero(), "learnable MAC {mac}");
        match ip {
            IpAddr::V4(a) => {
                assert_eq!(ethertype(eth), Some(ETHERTYPE_ARP), "an IPv4 binding from a frame that is not ARP");
                assert!(eth.len() >= 42, "a binding from a {}-byte ARP frame", eth.len());
                assert_eq!(a.octets(), eth[28..32], "not the ARP sender's address");
                assert_eq!(mac, mac_at(eth, 22), "not the ARP sender's MAC");
                assert!(!a.is_unspecified(), "learned 0.0.0.0 from an ARP probe");
            }
            IpAddr::V6(a) => {
                assert_eq!(ethertype(eth), Some(ETHERTYPE_IPV6), "an IPv6 binding from a frame that is not IPv6");
                assert_eq!((eth[20], eth[21]), (58, 255), "a binding from something other than NDP with hop limit 255");
                assert!(!a.is_unspecified() && !a.is_multicast(), "learned {a}");
            }
        }
    }
    for net in [1, 2] {
        let learned = fx.l3.learn_from_frame(net, eth, now);
        match (binding, learned) {
            (None, Some(l)) => panic!("learned ({l:?}) from a frame learnable() refuses"),
            (Some((ip, _)), Some(_)) => assert!(on_link(net, ip), "network {net} learned {ip}, which is not on its link"),
            (Some((ip, _)), None) => assert!(!on_link(net, ip), "network {net} did not learn {ip}, which is on its link"),
            (None, None) => {}
        }
    }
    let Some((ip, mac)) = binding else { return };
    let t = &fx.small;
    // Half the time an unknown address is first asked for, so that learning resolves a pending entry.
    if now.is_multiple_of(2) {
        let _ = t.lookup(ip, now);
    }
    let expect = match t.learn(ip, mac, now) {
        NeighLearn::Added | NeighLearn::Refreshed | NeighLearn::Changed => mac,
        NeighLearn::Static => STATIC_MAC,
        NeighLearn::Invalid => panic!("the table refused {mac}, which learnable() gave"),
    };
    assert_eq!(t.lookup(ip, now), NeighLookup::Found(expect), "{ip} not found right after it was learned");
    assert!(t.len() <= SMALL + 1, "a table of {SMALL} entries holds {}", t.len());
}

fuzz_target!(|eth: &[u8]| {
    run(eth);
    SCRATCH.with_borrow_mut(|buf| {
        let fixed = copy_into(buf, eth);
        if fix_checksums(fixed) {
            run(fixed);
        }
    });
});
