//! `DhcpServer::handle`: the input is a bare Ethernet frame, answered by two servers, each
//! with its own lease store reset before every input (so every run is reproducible):
//! 172.17.0.1/16 with every option configured (DNS, domain, search list, MTU), and a /31
//! point-to-point server 10.0.0.0 with infinite leases that broadcasts every reply. The
//! input runs as given and again with its checksums fixed up.
//!
//! Invariants: a reply fits the buffer, has every checksum right, comes from the server's MAC,
//! address and port 67 to port 68, is a BOOTREPLY of at least 300 bytes with the request's
//! xid and chaddr, no larger than the client accepts (576 bytes of IP, or its option 57), and
//! offers or acknowledges only addresses of the server's subnet (other than its own); a NAK is
//! broadcast; an OFFER commits nothing; the store is asked to commit only such addresses.

#![no_main]

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use vswitch_fuzz::{be16, check_reply, copy_into, fix_checksums, mac_at, v4_in, FixedLeases, ETH_HDR_LEN};
use vswitch_router::{Dhcp4Reply, DhcpAnswer, DhcpConfig, DhcpServer, REPLY_BUF};
use vswitch_switch::Mac;

const GW_MAC: Mac = Mac([0x02, 0x42, 0xac, 0x11, 0x00, 0x01]);
const P2P_MAC: Mac = Mac([0x02, 0x42, 0x0a, 0x00, 0x00, 0x00]);
const NOW: u64 = 1_700_000_000;
/// The busybox client of the unit tests' fixtures: client identifier 01 + its MAC.
const CLIENT_ID: [u8; 7] = [1, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
/// Fixed BOOTP fields and the magic cookie.
const OPTIONS_AT: usize = 240;

/// Which addresses a server may hand out.
type MayCommit = fn(Ipv4Addr) -> bool;

struct Fixture {
    servers: [(DhcpServer, MayCommit); 2],
    stores: Mutex<[FixedLeases<Ipv4Addr>; 2]>,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn assignable_main(a: Ipv4Addr) -> bool {
    let b = a.to_bits();
    v4_in(a, Ipv4Addr::new(172, 17, 0, 0), 16) && a != Ipv4Addr::new(172, 17, 0, 1) && b & 0xffff != 0 && b & 0xffff != 0xffff
}

fn assignable_p2p(a: Ipv4Addr) -> bool {
    a == Ipv4Addr::new(10, 0, 0, 1)
}

fn fixture() -> Fixture {
    let mut c = DhcpConfig::new(GW_MAC, Ipv4Addr::new(172, 17, 0, 1), Ipv4Addr::new(255, 255, 0, 0));
    c.dns = vec![Ipv4Addr::new(172, 17, 0, 1), Ipv4Addr::new(9, 9, 9, 9)];
    c.domain = Some("vswitch.test".into());
    c.search = vec!["vswitch.test".into(), "example.org".into()];
    c.mtu = Some(1500);
    let main = DhcpServer::new(c).unwrap();
    let mut c = DhcpConfig::new(P2P_MAC, Ipv4Addr::new(10, 0, 0, 0), Ipv4Addr::new(255, 255, 255, 254));
    c.lease_secs = u32::MAX;
    c.broadcast_replies = true;
    let p2p = DhcpServer::new(c).unwrap();

    let mut store = FixedLeases::new(8, (2..10).map(|i| Ipv4Addr::new(172, 17, 0, i)).collect(), assignable_main);
    store.preset(&CLIENT_ID, Ipv4Addr::new(172, 17, 0, 5), NOW + 600);
    store.preset(&[0x02, 0x42, 0xac, 0x11, 0x00, 0x07], Ipv4Addr::new(172, 17, 0, 2), NOW - 1);
    let p2p_store = FixedLeases::new(2, vec![Ipv4Addr::new(10, 0, 0, 1)], assignable_p2p);
    Fixture { servers: [(main, assignable_main), (p2p, assignable_p2p)], stores: Mutex::new([store, p2p_store]) }
}

/// The first option 57 (maximum DHCP message size) of the request, read apart from the server.
fn max_message(msg: &[u8]) -> Option<u16> {
    let mut i = OPTIONS_AT;
    while i < msg.len() {
        match msg[i] {
            0 => i += 1,
            255 => return None,
            code => {
                let len = usize::from(*msg.get(i + 1)?);
                let v = msg.get(i + 2..i + 2 + len)?;
                if code == 57 && len == 2 {
                    return Some(u16::from_be_bytes([v[0], v[1]]));
                }
                i += 2 + len;
            }
        }
    }
    None
}

fn run(eth: &[u8]) {
    let fx = FIXTURE.get_or_init(fixture);
    let mut stores = fx.stores.lock().unwrap();
    let mut out = [0u8; REPLY_BUF];
    for ((server, assignable), store) in fx.servers.iter().zip(stores.iter_mut()) {
        store.reset(NOW);
        let a = server.handle(eth, NOW, store, &mut out);
        let DhcpAnswer::Reply { kind, len } = a else { continue };
        let cfg = server.config();
        assert!(len <= out.len(), "reply of {len} bytes in a {}-byte buffer", out.len());
        let r = &out[..len];
        if let Err(e) = check_reply(r) {
            panic!("{kind:?} is broken: {e}");
        }
        // The request parsed: an IPv4 header of `ihl` bytes, UDP, and a BOOTP message.
        let udp_at = ETH_HDR_LEN + usize::from(eth[ETH_HDR_LEN] & 0x0f) * 4;
        let req = &eth[udp_at + 8..udp_at + usize::from(be16(eth, udp_at + 4))];
        let ip = &r[ETH_HDR_LEN..];
        let msg = &ip[28..];
        assert_eq!(mac_at(r, 6), cfg.server_mac, "reply not from the server's MAC");
        assert_eq!(ip[12..16], cfg.server_ip.octets(), "reply not from the server's address");
        assert_eq!(ip[9], 17, "reply not UDP");
        assert_eq!(ip[20..24], [0, 67, 0, 68], "reply not from port 67 to port 68");
        assert!(msg.len() >= 300, "a {}-byte DHCP message", msg.len());
        assert_eq!(msg[0], 2, "not a BOOTREPLY");
        assert_eq!(msg[4..8], req[4..8], "xid not echoed");
        assert_eq!(msg[28..44], req[28..44], "chaddr not echoed");
        assert_eq!(msg[236..240], [99, 130, 83, 99], "no magic cookie");
        let limit = max_message(req).map_or(576, |m| usize::from(m).max(576));
        assert!(ip.len() <= limit, "a {}-byte reply to a client that accepts {limit}", ip.len());
        let yiaddr = Ipv4Addr::new(msg[16], msg[17], msg[18], msg[19]);
        match kind {
            Dhcp4Reply::Offer => {
                assert!(assignable(yiaddr), "offered {yiaddr}");
                assert_eq!(store.commits, 0, "an OFFER committed a lease");
            }
            Dhcp4Reply::Ack => assert!(yiaddr.is_unspecified() || assignable(yiaddr), "acknowledged {yiaddr}"),
            Dhcp4Reply::Nak => {
                assert!(yiaddr.is_unspecified(), "a NAK with yiaddr {yiaddr}");
                assert!(mac_at(r, 0).is_broadcast() && ip[16..20] == [255; 4], "a NAK not broadcast");
            }
        }
        if cfg.broadcast_replies && req[12..16] == [0; 4] {
            assert!(mac_at(r, 0).is_broadcast(), "broadcast_replies, yet a unicast reply");
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
