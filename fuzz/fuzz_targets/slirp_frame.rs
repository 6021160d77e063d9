//! The slirp engine's frame parser and answer builders (`vswitch_nat::slirp::fuzzing::answers`):
//! the input is `[virtio_net_hdr][Ethernet frame]` as a container's port hands it over; its
//! first byte, taken apart, picks the network's MTU (576 to 65535) the answers are cut to.
//!
//! Each input runs as given and again with its checksums fixed up (so that mutations get past
//! the parser's checksum checks). Invariants: no panic; every frame built fits the MTU (its IP packet at most MTU bytes);
//! an unfragmented one passes `check_reply` (lengths and every checksum); fragments of one
//! answer carry offsets that follow each other and add up to its transport segment.

#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use vswitch_fuzz::{be16, check_reply, ethertype, fix_checksums, ETHERTYPE_IPV4, ETH_HDR_LEN, VNET_HDR_LEN};
use vswitch_nat::slirp::fuzzing::answers;

const MTUS: [usize; 4] = [576, 1280, 1500, 65535];

thread_local! {
    static BUFS: RefCell<(Vec<u8>, Vec<u8>, Vec<u8>)> = RefCell::new((Vec::new(), Vec::new(), Vec::new()));
}

fn run(input: &[u8]) {
    let Some((&pick, wire)) = input.split_first() else { return };
    let mtu = MTUS[usize::from(pick) % MTUS.len()];
    BUFS.with(|b| {
        let (buf, scratch, wire_copy) = &mut *b.borrow_mut();
        let wire = vswitch_fuzz::copy_into(wire_copy, wire);
        check(wire, mtu, buf, scratch);
        if wire.len() > VNET_HDR_LEN && fix_checksums(&mut wire[VNET_HDR_LEN..]) {
            check(wire, mtu, buf, scratch);
        }
    });
}

fn check(wire: &[u8], mtu: usize, buf: &mut Vec<u8>, scratch: &mut Vec<u8>) {
    // Where the next fragment of the answer being built must start, in bytes (0: none pending).
    let mut next_off = 0usize;
    answers(wire, mtu, buf, scratch, &mut |f| {
        assert!(f.len() >= VNET_HDR_LEN + ETH_HDR_LEN, "a frame without its headers");
        let eth = &f[VNET_HDR_LEN..];
        let ip = &eth[ETH_HDR_LEN..];
        assert!(ip.len() <= mtu, "{} bytes of IP over an MTU of {mtu}", ip.len());
        let frag = match ethertype(eth) {
            Some(ETHERTYPE_IPV4) => {
                let field = be16(ip, 6);
                let (off, more) = (usize::from(field & 0x1fff) * 8, field & 0x2000 != 0);
                (off != 0 || more).then_some((off, more, ip.len() - 20))
            }
            // IPv6: a fragment header follows the fixed one.
            _ if ip.len() >= 48 && ip[6] == 44 => {
                let field = be16(ip, 42);
                Some((usize::from(field & 0xfff8), field & 1 != 0, ip.len() - 48))
            }
            _ => None,
        };
        match frag {
            None => {
                assert_eq!(next_off, 0, "an answer began before the last one's fragments ended");
                if let Err(e) = check_reply(eth) {
                    panic!("{e}: {eth:02x?}");
                }
            }
            Some((off, more, n)) => {
                assert_eq!(off, next_off, "fragment offsets do not follow each other");
                assert!(!more || n % 8 == 0, "a fragment but the last carries a multiple of 8 bytes");
                next_off = if more { off + n } else { 0 };
            }
        }
    });
    assert_eq!(next_off, 0, "the last fragment of an answer is missing");
}

fuzz_target!(|input: &[u8]| run(input));
