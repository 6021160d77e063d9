//! `parse_rs` and `answer_rs`: the input is a bare Ethernet frame, answered for the gateway
//! 02:42:ac:11:00:01 with the default SLAAC configuration (fd00::/64) and with one that sets
//! every option (M and O flags, RDNSS, no MTU, a /128 prefix, infinite lifetimes). The input
//! runs as given and again with its checksums fixed up.
//!
//! Invariants: `answer_rs` answers exactly the frames `parse_rs` accepts; a valid solicitation
//! names a unicast, non-zero MAC and a source that is not a group; the advertisement fits the
//! buffer, has a right checksum, comes from the gateway's MAC and EUI-64 link-local address
//! with hop limit 255, goes where `RsInfo::reply_to` says; a buffer exactly its length gives
//! the same bytes and one a byte shorter gives none.

#![no_main]

use std::cell::RefCell;
use std::net::Ipv6Addr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vswitch_fuzz::{check_reply, copy_into, fix_checksums, mac_at};
use vswitch_router::{answer_rs, link_local_from_mac, parse_rs, RaConfig, REPLY_BUF};
use vswitch_switch::Mac;

const GW_MAC: Mac = Mac([0x02, 0x42, 0xac, 0x11, 0x00, 0x01]);

static CONFIGS: OnceLock<[RaConfig; 2]> = OnceLock::new();

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn configs() -> [RaConfig; 2] {
    let slaac = RaConfig::new("fd00::".parse().unwrap(), 64);
    let mut all = RaConfig::new("fd00::abcd".parse().unwrap(), 128);
    all.mtu = 0;
    all.managed = true;
    all.other = true;
    all.autonomous = false;
    all.dns = Some("fd00::1".parse().unwrap());
    all.valid_lifetime_secs = u32::MAX;
    all.preferred_lifetime_secs = u32::MAX;
    [slaac, all]
}

fn run(eth: &[u8]) {
    let rs = parse_rs(eth);
    if let Some(rs) = rs {
        assert!(!rs.src_mac.is_multicast() && !rs.src_mac.is_zero(), "a solicitation from MAC {}", rs.src_mac);
        assert!(!rs.src_ip.is_multicast(), "a solicitation from {}", rs.src_ip);
    }
    let mut out = [0u8; REPLY_BUF];
    for cfg in CONFIGS.get_or_init(configs) {
        let a = answer_rs(eth, GW_MAC, cfg, &mut out);
        assert_eq!(a.is_some(), rs.is_some(), "answer_rs and parse_rs disagree");
        let (Some(len), Some(rs)) = (a, rs) else { continue };
        assert!(len <= out.len(), "advertisement of {len} bytes in a {}-byte buffer", out.len());
        let r = &out[..len];
        if let Err(e) = check_reply(r) {
            panic!("advertisement is broken: {e}");
        }
        let (dst_mac, dst_ip) = rs.reply_to();
        assert_eq!(mac_at(r, 0), dst_mac);
        assert_eq!(mac_at(r, 6), GW_MAC);
        assert_eq!(r[21], 255, "hop limit");
        assert_eq!(r[22..38], link_local_from_mac(GW_MAC).octets());
        assert_eq!(Ipv6Addr::from(<[u8; 16]>::try_from(&r[38..54]).unwrap()), dst_ip);
        assert_eq!(r[54], 134, "not a Router Advertisement");

        let mut exact = [0u8; REPLY_BUF];
        assert_eq!(answer_rs(eth, GW_MAC, cfg, &mut exact[..len]), Some(len));
        assert_eq!(&exact[..len], r, "an exact-size buffer changed the advertisement");
        assert_eq!(answer_rs(eth, GW_MAC, cfg, &mut exact[..len - 1]), None, "an advertisement in a buffer too short");
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
