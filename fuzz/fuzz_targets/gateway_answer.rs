//! `answer()` (ARP, ICMP echo, Neighbor Solicitation, ICMPv6 echo) and `answer_link_local`
//! for the gateway 172.17.0.1, fd00::1, 02:42:ac:11:00:01 and for a gateway with only an IPv4
//! address. The input is a bare Ethernet frame; it runs as given and again with its
//! checksums fixed up, so that mutations reach past the checksum checks.
//!
//! Invariants for every reply: it fits the output buffer, comes from the gateway's MAC, has
//! the ethertype of its kind and every checksum right, and its length matches the IP header's;
//! a buffer exactly that long gives the same bytes, and a buffer one byte shorter gives
//! `TooBig`. A frame from a group MAC is never answered.

#![no_main]

use std::cell::RefCell;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vswitch_fuzz::{check_reply, copy_into, ethertype, fix_checksums, mac_at, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use vswitch_router::{answer, answer_link_local, link_local_from_mac, Answer, Gateway, Reply, REPLY_BUF};
use vswitch_switch::Mac;

const GW_MAC: Mac = Mac([0x02, 0x42, 0xac, 0x11, 0x00, 0x01]);

struct Fixture {
    gateways: [Gateway; 2],
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn fixture() -> Fixture {
    let dual = Gateway {
        ipv4: Some("172.17.0.1".parse().unwrap()),
        ipv6: Some("fd00::1".parse().unwrap()),
        mac: GW_MAC,
        dns4: None,
        dns6: None,
        proxy_all: false,
    };
    let v4 = Gateway { ipv4: Some("172.17.0.1".parse().unwrap()), ipv6: None, mac: GW_MAC, dns4: None, dns6: None, proxy_all: false };
    Fixture { gateways: [dual, v4] }
}

/// Checks one answer against the invariants; `again` answers the same frame into a given buffer.
fn check(eth: &[u8], gw_mac: Mac, a: Answer, out: &[u8], again: &dyn Fn(&mut [u8]) -> Answer) {
    let Answer::Reply { kind, len } = a else {
        if let Answer::TooBig = a {
            // Only an echo request, whose reply is no longer than the request, can outgrow it.
            assert!(eth.len() > out.len(), "TooBig for a {}-byte frame", eth.len());
        }
        return;
    };
    assert!(len <= out.len(), "reply of {len} bytes in a {}-byte buffer", out.len());
    assert!(!mac_at(eth, 6).is_multicast(), "answered a frame from a group address");
    let r = &out[..len];
    if let Err(e) = check_reply(r) {
        panic!("{kind:?} reply is broken: {e}");
    }
    assert_eq!(mac_at(r, 6), gw_mac, "reply not from the gateway's MAC");
    if matches!(kind, Reply::Arp | Reply::NeighborAdvert) {
        // Both refuse to answer a zero hardware address (echo replies go to the frame's source).
        assert!(!mac_at(r, 0).is_zero(), "{kind:?} to the zero MAC");
    }
    let want = match kind {
        Reply::Arp => ETHERTYPE_ARP,
        Reply::IcmpEcho => ETHERTYPE_IPV4,
        Reply::NeighborAdvert | Reply::Icmp6Echo => ETHERTYPE_IPV6,
    };
    assert_eq!(ethertype(r), Some(want), "{kind:?} with another ethertype");
    assert_eq!(ethertype(eth), Some(want), "answered across protocols");

    let mut exact = [0u8; REPLY_BUF];
    assert_eq!(again(&mut exact[..len]), a, "an exact-size buffer changed the answer");
    assert_eq!(&exact[..len], r, "an exact-size buffer changed the reply");
    assert_eq!(again(&mut exact[..len - 1]), Answer::TooBig, "a buffer one byte short was not TooBig");
}

fn run(eth: &[u8]) {
    let fx = FIXTURE.get_or_init(fixture);
    let mut out = [0u8; REPLY_BUF];
    for gw in &fx.gateways {
        let a = answer(gw, eth, &mut out);
        check(eth, gw.mac, a, &out, &|buf| answer(gw, eth, buf));
        if a == Answer::Ignored {
            // As the slow path does: the link-local address next.
            let ll = link_local_from_mac(gw.mac);
            let a = answer_link_local(eth, gw.mac, ll, &mut out);
            check(eth, gw.mac, a, &out, &|buf| answer_link_local(eth, gw.mac, ll, buf));
        }
    }
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
