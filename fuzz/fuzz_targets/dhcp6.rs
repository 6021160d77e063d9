//! `Dhcp6Server::handle`: the input is a bare Ethernet frame, answered by two servers, each
//! with its own lease store reset before every input: fd00::/64 with DNS, a search list and
//! Rapid Commit (as the unit tests' fixtures), and fd01::100/120 with infinite lifetimes, no
//! Rapid Commit and 40 DNS servers (so that large replies meet the buffer's end). The input
//! runs as given and again with its checksums fixed up (UDP over IPv6 always has one).
//!
//! Invariants: a reply fits the buffer, has every checksum right, goes from the server's MAC
//! and EUI-64 link-local address, port 547, back to the client's MAC, address and port 546;
//! it is an ADVERTISE or a REPLY with the request's transaction id and the server's DUID
//! first; every address it hands out with a non-zero lifetime is inside the prefix (not its
//! Subnet-Router anycast address); an ADVERTISE commits nothing, and the store is asked to
//! commit only such addresses.

#![no_main]

use std::cell::RefCell;
use std::net::Ipv6Addr;
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use vswitch_fuzz::{be16, check_reply, copy_into, fix_checksums, mac_at, v6_in, FixedLeases, ETH_HDR_LEN};
use vswitch_router::{link_local_from_mac, Dhcp6Config, Dhcp6Reply, Dhcp6Server, DhcpAnswer, REPLY_BUF};
use vswitch_switch::Mac;

const GW_MAC: Mac = Mac([0x02, 0x42, 0xac, 0x11, 0x00, 0x01]);
const OTHER_MAC: Mac = Mac([0x02, 0x42, 0xac, 0x12, 0x00, 0x01]);
const NOW: u64 = 1_700_000_000;
/// Where the DHCPv6 message starts: Ethernet, IPv6 and UDP headers.
const MSG_AT: usize = ETH_HDR_LEN + 40 + 8;
/// The fixtures' client (DUID-LLT) and the IAID of its IA_NA.
const CLIENT_DUID: [u8; 14] = [0x00, 0x01, 0x00, 0x01, 0x2d, 0x6e, 0x8a, 0x10, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
const IAID: [u8; 4] = [0xac, 0x11, 0x00, 0x02];

/// Which addresses a server may hand out.
type MayCommit = fn(Ipv6Addr) -> bool;

struct Fixture {
    servers: [(Dhcp6Server, MayCommit); 2],
    stores: Mutex<[FixedLeases<Ipv6Addr>; 2]>,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn on_link_main(a: Ipv6Addr) -> bool {
    v6_in(a, v6("fd00::"), 64) && a != v6("fd00::")
}

fn on_link_other(a: Ipv6Addr) -> bool {
    v6_in(a, v6("fd01::100"), 120) && a != v6("fd01::100")
}

fn fixture() -> Fixture {
    let mut c = Dhcp6Config::new(GW_MAC, v6("fd00::"), 64);
    c.dns = vec![v6("fd00::1")];
    c.search = vec!["vswitch.test".into()];
    let main = Dhcp6Server::new(c).unwrap();
    let mut c = Dhcp6Config::new(OTHER_MAC, v6("fd01::1ff"), 120);
    c.dns = (0..40).map(|i| Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, i)).collect();
    c.preferred_secs = u32::MAX;
    c.valid_secs = u32::MAX;
    c.rapid_commit = false;
    let other = Dhcp6Server::new(c).unwrap();

    let mut store = FixedLeases::new(8, (0x100..0x104).map(|i| Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i)).collect(), on_link_main);
    let mut key = CLIENT_DUID.to_vec();
    key.extend_from_slice(&IAID);
    store.preset(&key, v6("fd00::100"), NOW + 600);
    let other_store = FixedLeases::new(4, vec![v6("fd01::101"), v6("fd01::102")], on_link_other);
    Fixture { servers: [(main, on_link_main), (other, on_link_other)], stores: Mutex::new([store, other_store]) }
}

/// The options in `b` (code, value), stopping at the first that runs past the end.
fn options(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let code = be16(b.get(..4)?, 0);
        let len = usize::from(be16(b, 2));
        let v = b.get(4..4 + len)?;
        b = &b[4 + len..];
        Some((code, v))
    })
}

fn run(eth: &[u8]) {
    let fx = FIXTURE.get_or_init(fixture);
    let mut stores = fx.stores.lock().unwrap();
    let mut out = [0u8; REPLY_BUF];
    for ((server, on_link), store) in fx.servers.iter().zip(stores.iter_mut()) {
        store.reset(NOW);
        let a = server.handle(eth, NOW, store, &mut out);
        let DhcpAnswer::Reply { kind, len } = a else { continue };
        assert!(len <= out.len(), "reply of {len} bytes in a {}-byte buffer", out.len());
        let r = &out[..len];
        if let Err(e) = check_reply(r) {
            panic!("{kind:?} is broken: {e}");
        }
        let mac = server.config().server_mac;
        assert_eq!(mac_at(r, 6), mac, "reply not from the server's MAC");
        assert_eq!(mac_at(r, 0), mac_at(eth, 6), "reply not to the client's MAC");
        assert_eq!(r[22..38], link_local_from_mac(mac).octets(), "reply not from the server's link-local address");
        assert_eq!(r[38..54], eth[22..38], "reply not to the client's address");
        assert_eq!(r[20], 17, "reply not UDP");
        assert_eq!(r[54..58], [0x02, 0x23, 0x02, 0x22], "reply not from port 547 to port 546");
        let msg = &r[MSG_AT..];
        let want = match kind {
            Dhcp6Reply::Advertise => 2,
            Dhcp6Reply::Reply => 7,
        };
        assert_eq!(msg[0], want, "{kind:?} with message type {}", msg[0]);
        assert_eq!(msg[1..4], eth[MSG_AT + 1..MSG_AT + 4], "transaction id not echoed");
        let duid = server.duid();
        assert_eq!(msg[4..8], [0, 2, 0, duid.len() as u8], "server identifier not first");
        assert_eq!(&msg[8..8 + duid.len()], duid, "another server identifier");
        if kind == Dhcp6Reply::Advertise {
            assert_eq!(store.commits, 0, "an ADVERTISE committed a lease");
        }
        let mut rest = &msg[4..];
        for (code, v) in options(&msg[4..]) {
            rest = &rest[4 + v.len()..];
            if code != 3 {
                continue;
            }
            let inner = v.get(12..).expect("an IA_NA shorter than its header");
            for (c, ia) in options(inner) {
                if c == 5 {
                    assert!(ia.len() >= 24, "an IAADDR of {} bytes", ia.len());
                    let addr = Ipv6Addr::from(<[u8; 16]>::try_from(&ia[..16]).unwrap());
                    let valid = u32::from_be_bytes([ia[20], ia[21], ia[22], ia[23]]);
                    assert!(valid == 0 || on_link(addr), "handed out {addr}");
                }
            }
        }
        assert!(rest.is_empty(), "the reply's options do not fill it");
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
