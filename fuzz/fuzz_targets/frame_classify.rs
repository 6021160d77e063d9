//! `Frame::parse` and `pipeline::classify`: the input is `[virtio_net_hdr][Ethernet frame]` as
//! a port hands it over, classified on port 1 of a network whose gateway is 02:42:ac:11:00:01.
//!
//! Invariants: the view's accessors agree with the bytes; `classify` with routing on differs
//! from routing off only by `Route` where the slow path would get `Punt`, and only for IP to
//! the gateway's MAC; a frame is never forwarded back out of the port it came in on.
//!
//! The FDB holds two static entries (02:42:ac:11:00:02 on port 1, 02:42:ac:11:00:03 on port 2);
//! what an input teaches it is forgotten before the next input, so every run is reproducible.

#![no_main]

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use vswitch_fuzz::{be16, mac_at, ETHERTYPE_IPV4, ETHERTYPE_IPV6, VNET_HDR_LEN};
use vswitch_switch::counters::PortCounters;
use vswitch_switch::packet::{Frame, ParseError, ETH_HDR_LEN};
use vswitch_switch::pipeline::{classify, Verdict};
use vswitch_switch::port::MemPort;
use vswitch_switch::topology::{NetworkConfig, NetworkEntry, PortEntry};
use vswitch_switch::{Drop, Fdb, Mac, NetId, PortId};

const NET: NetId = 1;
const GW: Mac = Mac([0x02, 0x42, 0xac, 0x11, 0x00, 0x01]);
const HERE: Mac = Mac([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
const THERE: Mac = Mac([0x02, 0x42, 0xac, 0x11, 0x00, 0x03]);
const MTU: u32 = 1500;
const NOW: u32 = 1000;

struct Fixture {
    fdb: Fdb,
    net: NetworkEntry,
    ingress: PortEntry,
}

fn port(id: PortId) -> PortEntry {
    PortEntry {
        id,
        net: NET,
        port: Arc::new(MemPort::new("fuzz", 1).expect("eventfd")),
        counters: Arc::new(PortCounters::new(1)),
        down: Arc::new(AtomicBool::new(false)),
    }
}

fn fixture() -> Fixture {
    let fdb = Fdb::new();
    assert!(fdb.add_static(NET, HERE, 1));
    assert!(fdb.add_static(NET, THERE, 2));
    let config = NetworkConfig { aging_secs: 300, mac_limit: 2, mtu: MTU, gateway_mac: Some(GW) };
    Fixture { fdb, net: NetworkEntry { id: NET, config, ports: vec![1, 2] }, ingress: port(1) }
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

fn check_view(wire: &[u8]) {
    match Frame::parse(wire) {
        Ok(f) => {
            assert!(wire.len() >= VNET_HDR_LEN + ETH_HDR_LEN);
            assert_eq!(f.eth(), &wire[VNET_HDR_LEN..]);
            assert_eq!(f.eth_len(), wire.len() - VNET_HDR_LEN);
            assert_eq!(f.dst(), mac_at(wire, VNET_HDR_LEN));
            assert_eq!(f.src(), mac_at(wire, VNET_HDR_LEN + 6));
            assert_eq!(f.ethertype(), be16(wire, VNET_HDR_LEN + 12));
            assert_eq!(f.is_gso(), wire[1] & 0x7f != 0);
        }
        Err(ParseError::Runt) => assert!(wire.len() < VNET_HDR_LEN + ETH_HDR_LEN),
        Err(ParseError::BadVnetHeader) => assert!(wire.len() >= VNET_HDR_LEN + ETH_HDR_LEN),
    }
}

fuzz_target!(|wire: &[u8]| {
    let fx = FIXTURE.get_or_init(fixture);
    check_view(wire);
    let counters = fx.ingress.counters.worker(0);
    let routed = classify(&fx.fdb, &fx.net, &fx.ingress, wire, NOW, counters, true);
    fx.fdb.flush_net(NET, false);
    let switched = classify(&fx.fdb, &fx.net, &fx.ingress, wire, NOW, counters, false);
    fx.fdb.flush_net(NET, false);

    match (routed, switched) {
        (Verdict::Route, Verdict::Punt) => {
            let f = Frame::parse(wire).expect("routed a frame that does not parse");
            assert_eq!(f.dst(), GW, "routed a frame not addressed to the gateway");
            assert!(matches!(f.ethertype(), ETHERTYPE_IPV4 | ETHERTYPE_IPV6), "routed ethertype {:#x}", f.ethertype());
        }
        (r, s) => assert_eq!(r, s, "routing changed the verdict of a frame it does not route"),
    }
    match switched {
        Verdict::Forward(p) => {
            assert_ne!(p, fx.ingress.id, "forwarded back out of the ingress port");
            assert_eq!(p, 2, "forwarded to a port that holds no address");
        }
        Verdict::Drop(Drop::Runt) => assert!(wire.len() < VNET_HDR_LEN + ETH_HDR_LEN),
        Verdict::Drop(Drop::Oversize) => {
            assert!(wire[1] & 0x7f == 0, "a GSO frame dropped for its size");
            assert!(wire.len() - VNET_HDR_LEN > MTU as usize + 18);
        }
        Verdict::Drop(Drop::MulticastSource) => assert!(mac_at(wire, VNET_HDR_LEN + 6).is_multicast()),
        Verdict::Flood | Verdict::FloodAndPunt => {
            let dst = mac_at(wire, VNET_HDR_LEN);
            assert!(dst.is_multicast() || (dst != HERE && dst != THERE && dst != GW), "flooded a frame to a known address");
        }
        _ => {}
    }
});
