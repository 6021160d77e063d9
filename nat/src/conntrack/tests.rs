//! Tests of the connection tracking table: state walks, timeouts, eviction, ids, and random
//! operation sequences checked against a simple model.

use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::test_rng::Rng;

const T: Timeouts = Timeouts {
    tcp_syn_ms: 120_000,
    tcp_established_ms: 7_440_000,
    tcp_fin_ms: 120_000,
    tcp_time_wait_ms: 120_000,
    tcp_close_ms: 10_000,
    udp_ms: 30_000,
    udp_stream_ms: 120_000,
    icmp_ms: 30_000,
};

const SYN: TcpFlags = TcpFlags::SYN;
const ACK: TcpFlags = TcpFlags::ACK;
const FIN: TcpFlags = TcpFlags::FIN;
const RST: TcpFlags = TcpFlags::RST;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn tcp(src: &str, dst: &str) -> FlowKey {
    FlowKey::new(Proto::Tcp, sa(src), sa(dst))
}

fn udp(src: &str, dst: &str) -> FlowKey {
    FlowKey::new(Proto::Udp, sa(src), sa(dst))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn insert(ct: &mut Conntrack<u32>, key: FlowKey, now: u64, v: u32) -> FlowId {
    let (id, f) = ct.get_or_insert_with(key, now, || v).expect("room");
    assert_eq!(f.value, v, "a new flow");
    ct.check_invariants();
    id
}

fn expire(ct: &mut Conntrack<u32>, now: u64) -> Vec<u32> {
    let mut out = Vec::new();
    ct.expire(now, &mut out);
    ct.check_invariants();
    let mut v: Vec<u32> = out.into_iter().map(|(_, v)| v).collect();
    v.sort_unstable();
    v
}

/// Opens a TCP flow through the three-way handshake at `now`.
fn established(ct: &mut Conntrack<u32>, key: FlowKey, now: u64, v: u32) -> FlowId {
    let id = insert(ct, key, now, v);
    assert_eq!(ct.on_tcp(id, Dir::Orig, SYN, now), Some(TcpState::SynSent));
    assert_eq!(ct.on_tcp(id, Dir::Reply, SYN | ACK, now), Some(TcpState::SynRecv));
    assert_eq!(ct.on_tcp(id, Dir::Orig, ACK, now), Some(TcpState::Established));
    ct.check_invariants();
    id
}

#[test]
fn tcp_handshake_establishes_and_assures() {
    let mut ct = Conntrack::new(16, T);
    let key = tcp("10.0.0.2:40000", "1.1.1.1:443");
    let id = insert(&mut ct, key, 1000, 7);
    let f = ct.get(id).unwrap();
    assert_eq!(f.state(), FlowState::Tcp(TcpState::SynSent));
    assert_eq!(f.expires_ms(), 1000 + T.tcp_syn_ms);
    assert!(!f.assured() && !f.protected());

    // Out-of-order flags change nothing: an ACK from orig before the SYN+ACK, a bare SYN from reply.
    assert_eq!(ct.on_tcp(id, Dir::Orig, ACK, 1100), Some(TcpState::SynSent));
    assert_eq!(ct.on_tcp(id, Dir::Reply, SYN, 1100), Some(TcpState::SynSent));
    assert_eq!(ct.on_tcp(id, Dir::Reply, SYN | ACK, 1200), Some(TcpState::SynRecv));
    assert_eq!(ct.get(id).unwrap().expires_ms(), 1200 + T.tcp_syn_ms);
    // A retransmitted SYN from orig does not complete the handshake.
    assert_eq!(ct.on_tcp(id, Dir::Orig, SYN, 1250), Some(TcpState::SynRecv));
    assert_eq!(ct.on_tcp(id, Dir::Orig, ACK, 1300), Some(TcpState::Established));
    let f = ct.get(id).unwrap();
    assert!(f.assured() && f.protected());
    assert_eq!(f.expires_ms(), 1300 + T.tcp_established_ms);
    assert_eq!(f.tcp_state(), Some(TcpState::Established));
    ct.check_invariants();

    // Data keeps it alive; it only goes after the established timeout without a packet.
    assert!(ct.on_packet(id, Dir::Reply, 1400, 5_000_000));
    assert!(expire(&mut ct, 5_000_000 + T.tcp_established_ms - 1).is_empty());
    assert_eq!(expire(&mut ct, 5_000_000 + T.tcp_established_ms), vec![7]);
    assert!(ct.get(id).is_none());
    assert_eq!(ct.counters().expired, 1);
}

#[test]
fn tcp_close_orig_first_goes_through_time_wait_and_expires() {
    let mut ct = Conntrack::new(16, T);
    let id = established(&mut ct, tcp("10.0.0.2:40000", "1.1.1.1:443"), 0, 1);
    assert_eq!(ct.on_tcp(id, Dir::Orig, FIN | ACK, 10), Some(TcpState::FinWait));
    let f = ct.get(id).unwrap();
    assert!(f.assured() && !f.protected(), "closing flows may be evicted");
    assert_eq!(f.expires_ms(), 10 + T.tcp_fin_ms);
    // The closer's own segments change nothing; the other side's ACK moves to CloseWait.
    assert_eq!(ct.on_tcp(id, Dir::Orig, ACK, 11), Some(TcpState::FinWait));
    assert_eq!(ct.on_tcp(id, Dir::Reply, ACK, 12), Some(TcpState::CloseWait));
    assert_eq!(ct.on_tcp(id, Dir::Reply, ACK, 13), Some(TcpState::CloseWait), "more data from the open half");
    assert_eq!(ct.on_tcp(id, Dir::Orig, FIN | ACK, 14), Some(TcpState::CloseWait), "a retransmitted FIN");
    assert_eq!(ct.on_tcp(id, Dir::Reply, FIN | ACK, 20), Some(TcpState::LastAck));
    assert_eq!(ct.on_tcp(id, Dir::Reply, ACK, 21), Some(TcpState::LastAck), "the last closer's ACK");
    assert_eq!(ct.on_tcp(id, Dir::Orig, ACK, 30), Some(TcpState::TimeWait));
    assert_eq!(ct.get(id).unwrap().expires_ms(), 30 + T.tcp_time_wait_ms);
    ct.check_invariants();
    assert!(expire(&mut ct, 30 + T.tcp_time_wait_ms - 1).is_empty());
    assert_eq!(expire(&mut ct, 30 + T.tcp_time_wait_ms), vec![1]);
    assert!(ct.is_empty());
}

#[test]
fn tcp_close_reply_first_and_simultaneous() {
    let mut ct = Conntrack::new(16, T);
    // The server closes first, the client answers with FIN+ACK at once.
    let a = established(&mut ct, tcp("10.0.0.2:40000", "1.1.1.1:80"), 0, 1);
    assert_eq!(ct.on_tcp(a, Dir::Reply, FIN | ACK, 1), Some(TcpState::FinWait));
    assert_eq!(ct.on_tcp(a, Dir::Orig, FIN | ACK, 2), Some(TcpState::LastAck));
    assert_eq!(ct.on_tcp(a, Dir::Reply, ACK, 3), Some(TcpState::TimeWait));

    // Both FINs cross, then both ACKs.
    let b = established(&mut ct, tcp("10.0.0.2:40001", "1.1.1.1:80"), 0, 2);
    assert_eq!(ct.on_tcp(b, Dir::Orig, FIN | ACK, 1), Some(TcpState::FinWait));
    assert_eq!(ct.on_tcp(b, Dir::Reply, FIN | ACK, 1), Some(TcpState::LastAck));
    assert_eq!(ct.on_tcp(b, Dir::Orig, ACK, 2), Some(TcpState::TimeWait));
    assert_eq!(ct.on_tcp(b, Dir::Reply, ACK, 2), Some(TcpState::TimeWait));

    // A FIN during the handshake (SynRecv) also starts the close.
    let c = insert(&mut ct, tcp("10.0.0.2:40002", "1.1.1.1:80"), 0, 3);
    ct.on_tcp(c, Dir::Reply, SYN | ACK, 0);
    assert_eq!(ct.on_tcp(c, Dir::Orig, FIN | ACK, 1), Some(TcpState::FinWait));
    assert!(!ct.get(c).unwrap().assured(), "never established");
    ct.check_invariants();
}

#[test]
fn tcp_rst_closes_quickly_from_any_state() {
    let mut ct = Conntrack::new(16, T);
    let a = established(&mut ct, tcp("10.0.0.2:1", "1.1.1.1:80"), 0, 1);
    let b = insert(&mut ct, tcp("10.0.0.2:2", "1.1.1.1:80"), 0, 2);
    assert_eq!(ct.on_tcp(a, Dir::Reply, RST, 100), Some(TcpState::Closed));
    assert_eq!(ct.on_tcp(b, Dir::Reply, RST | ACK, 100), Some(TcpState::Closed), "connection refused");
    assert_eq!(ct.get(a).unwrap().expires_ms(), 100 + T.tcp_close_ms);
    assert!(!ct.get(a).unwrap().protected());
    ct.check_invariants();
    assert_eq!(ct.on_tcp(a, Dir::Orig, ACK, 101), Some(TcpState::Closed), "stays closed");
    assert_eq!(expire(&mut ct, 101 + T.tcp_close_ms), vec![1, 2]);
}

#[test]
fn tcp_syn_reopens_time_wait_and_closed() {
    let mut ct = Conntrack::new(16, T);
    let key = tcp("10.0.0.2:1", "1.1.1.1:80");
    let id = established(&mut ct, key, 0, 1);
    ct.on_tcp(id, Dir::Orig, RST, 1);
    assert_eq!(ct.on_tcp(id, Dir::Reply, SYN, 2), Some(TcpState::Closed), "only orig reopens");
    assert_eq!(ct.on_tcp(id, Dir::Orig, SYN | ACK, 2), Some(TcpState::Closed), "only a bare SYN reopens");
    assert_eq!(ct.on_tcp(id, Dir::Orig, SYN, 3), Some(TcpState::SynSent));
    let f = ct.get(id).unwrap();
    assert!(!f.assured(), "a new connection");
    assert_eq!(f.expires_ms(), 3 + T.tcp_syn_ms);
    assert_eq!(ct.id_of(&key), Some(id), "same flow, same id");
    ct.check_invariants();
}

#[test]
fn on_tcp_ignores_other_protocols_and_stale_ids() {
    let mut ct = Conntrack::new(16, T);
    let u = insert(&mut ct, udp("10.0.0.2:5000", "8.8.8.8:53"), 0, 1);
    assert_eq!(ct.on_tcp(u, Dir::Orig, SYN, 0), None);
    assert_eq!(ct.get(u).unwrap().state(), FlowState::Unreplied);
    ct.remove(u).unwrap();
    assert_eq!(ct.on_tcp(u, Dir::Orig, SYN, 0), None);
    assert!(!ct.on_packet(u, Dir::Orig, 10, 0));
    assert!(ct.remove(u).is_none());
}

#[test]
fn udp_unreplied_then_assured_timeouts() {
    let mut ct = Conntrack::new(16, T);
    let lone = insert(&mut ct, udp("10.0.0.2:5000", "8.8.8.8:53"), 0, 1);
    let talk = insert(&mut ct, udp("10.0.0.2:5001", "8.8.8.8:53"), 0, 2);
    assert!(ct.on_packet(lone, Dir::Orig, 40, 0));
    assert!(ct.on_packet(lone, Dir::Orig, 40, 10_000), "orig traffic refreshes the unreplied timeout");
    assert_eq!(ct.get(lone).unwrap().expires_ms(), 10_000 + T.udp_ms);

    ct.on_packet(talk, Dir::Orig, 40, 0);
    ct.on_packet(talk, Dir::Reply, 120, 5_000);
    let f = ct.get(talk).unwrap();
    assert_eq!(f.state(), FlowState::Assured);
    assert!(f.assured() && f.protected());
    assert_eq!(f.expires_ms(), 5_000 + T.udp_stream_ms);
    assert_eq!((f.packets(Dir::Orig), f.packets(Dir::Reply), f.bytes(Dir::Orig), f.bytes(Dir::Reply)), (1, 1, 40, 120));
    ct.check_invariants();

    assert_eq!(expire(&mut ct, 10_000 + T.udp_ms), vec![1]);
    assert!(expire(&mut ct, 5_000 + T.udp_stream_ms - 1).is_empty());
    ct.on_packet(talk, Dir::Orig, 40, 100_000);
    assert!(expire(&mut ct, 5_000 + T.udp_stream_ms).is_empty(), "refreshed");
    assert_eq!(expire(&mut ct, 100_000 + T.udp_stream_ms), vec![2]);
}

#[test]
fn icmp_echo_is_keyed_by_id_and_found_from_its_reply() {
    let mut ct = Conntrack::new(16, T);
    let (c, w) = (ip("fd00::2"), ip("2001:db8::1"));
    let key = FlowKey::icmp_echo(c, w, 0x1234);
    let id = insert(&mut ct, key, 0, 1);
    let other = insert(&mut ct, FlowKey::icmp_echo(c, w, 0x1235), 0, 2);
    assert_ne!(id, other, "another echo id is another flow");
    assert_eq!(ct.get(id).unwrap().expires_ms(), T.icmp_ms);

    let reply = FlowKey::icmp_echo(w, c, 0x1234);
    assert_eq!(reply, key.reversed());
    assert_eq!(ct.find(&reply), Some((id, Dir::Reply)));
    assert_eq!(ct.find(&key), Some((id, Dir::Orig)));
    ct.on_packet(id, Dir::Reply, 64, 1000);
    let f = ct.get(id).unwrap();
    assert_eq!(f.state(), FlowState::Assured);
    assert_eq!(f.expires_ms(), 1000 + T.icmp_ms, "assured ICMP keeps the ICMP timeout");
    assert_eq!(expire(&mut ct, T.icmp_ms), vec![2]);
    assert_eq!(expire(&mut ct, 1000 + T.icmp_ms), vec![1]);
}

#[test]
fn find_prefers_orig_then_reply_and_get_or_insert_returns_the_existing_flow() {
    let mut ct = Conntrack::new(16, T);
    let key = udp("10.0.0.2:5000", "10.0.1.3:6000");
    let id = insert(&mut ct, key, 0, 1);
    let (again, f) = ct.get_or_insert_with(key, 50, || panic!("not created again")).unwrap();
    assert_eq!((again, f.value, f.last_ms()), (id, 1, 0), "a hit is returned as is");
    assert_eq!(ct.find(&key.reversed()), Some((id, Dir::Reply)));
    // The other side opens its own flow toward the first (both initiate): each finds its own as orig.
    let back = insert(&mut ct, key.reversed(), 0, 2);
    assert_eq!(ct.find(&key.reversed()), Some((back, Dir::Orig)));
    assert_eq!(ct.find(&udp("10.0.0.9:1", "10.0.0.2:5000")), None);
    ct.get_mut(id).unwrap().value = 10;
    assert_eq!(ct.get(id).unwrap().value, 10);
}

#[test]
fn full_table_collects_expired_first_then_evicts_the_least_recently_active_unprotected() {
    let mut ct = Conntrack::new(4, T);
    let est = established(&mut ct, tcp("10.0.0.2:1", "1.1.1.1:80"), 0, 1);
    let u_old = insert(&mut ct, udp("10.0.0.2:2", "1.1.1.1:53"), 0, 2);
    let u_new = insert(&mut ct, udp("10.0.0.2:3", "1.1.1.1:53"), 1000, 3);
    let syn = insert(&mut ct, tcp("10.0.0.2:4", "1.1.1.1:80"), 2000, 4);
    // u_old is the oldest but was active last: u_new is now the least recently active.
    ct.on_packet(u_old, Dir::Orig, 10, 3000);

    // At 31 s, u_new (last seen at 1 s) is past due: it goes, and nothing is evicted.
    let e = insert(&mut ct, udp("10.0.0.2:5", "1.1.1.1:53"), 31_000, 5);
    assert_eq!(ct.counters().expired, 1);
    assert_eq!(ct.counters().evicted, 0);
    assert!(ct.get(u_new).is_none());

    // Nothing past due now: the least recently active unprotected flow is evicted: syn (2 s).
    let f = insert(&mut ct, udp("10.0.0.2:6", "1.1.1.1:53"), 31_500, 6);
    assert_eq!(ct.counters().evicted, 1);
    assert!(ct.get(syn).is_none());
    assert!(ct.get(u_old).is_some() && ct.get(est).is_some());
    // Both are handed back by the next expire.
    assert_eq!(expire(&mut ct, 31_500), vec![3, 4]);

    // Make everything protected: no more room.
    for id in [u_old, e, f] {
        ct.on_packet(id, Dir::Reply, 10, 32_000);
    }
    let before: Vec<(FlowKey, FlowState, u64)> = ct.iter().map(|(k, f)| (*k, f.state(), f.expires_ms())).collect();
    let err = ct.get_or_insert_with(udp("10.0.0.2:7", "1.1.1.1:53"), 32_000, || 7);
    assert_eq!(err.err(), Some(Full));
    assert_eq!(ct.counters().refused_full, 1);
    let after: Vec<(FlowKey, FlowState, u64)> = ct.iter().map(|(k, f)| (*k, f.state(), f.expires_ms())).collect();
    assert_eq!(before, after, "a refused insertion harms no flow");
    assert!(expire(&mut ct, 32_000).is_empty());
    ct.check_invariants();

    // A protected flow that starts closing becomes evictable again.
    ct.on_tcp(est, Dir::Orig, FIN | ACK, 33_000);
    insert(&mut ct, udp("10.0.0.2:7", "1.1.1.1:53"), 33_000, 7);
    assert!(ct.get(est).is_none());
    assert_eq!(ct.counters().evicted, 2);
    assert_eq!(expire(&mut ct, 33_000), vec![1]);

    // Limit 0 refuses everything.
    let mut none: Conntrack<u32> = Conntrack::new(0, T);
    assert!(none.get_or_insert_with(udp("10.0.0.2:1", "1.1.1.1:53"), 0, || 1).is_err());
    assert_eq!(none.counters().refused_full, 1);
}

#[test]
fn per_source_counts_follow_every_removal() {
    let mut ct = Conntrack::new(8, T);
    let (a, b) = (ip("10.0.0.2"), ip("fd00::3"));
    let a1 = insert(&mut ct, udp("10.0.0.2:1", "1.1.1.1:53"), 0, 1);
    let _a2 = insert(&mut ct, udp("10.0.0.2:2", "1.1.1.1:53"), 0, 2);
    let a3 = established(&mut ct, tcp("10.0.0.2:3", "1.1.1.1:80"), 0, 3);
    let b1 = insert(&mut ct, udp("[fd00::3]:1", "[2001:db8::1]:53"), 0, 4);
    let _b2 = insert(&mut ct, udp("[fd00::3]:2", "[2001:db8::1]:53"), 10_000, 5);
    assert_eq!((ct.count_for(a), ct.count_for(b), ct.count_for(ip("1.1.1.1"))), (3, 2, 0));

    ct.remove(a1).unwrap();
    assert_eq!(ct.count_for(a), 2);
    ct.on_packet(b1, Dir::Reply, 1, 0);
    assert_eq!(expire(&mut ct, T.udp_ms), vec![2]);
    assert_eq!(ct.count_for(a), 1);

    // The endpoint of b disconnects: all its flows go.
    let mut removed = Vec::new();
    ct.retain(|k, _| k.src.ip() != b, &mut removed);
    assert_eq!(removed.len(), 2);
    assert_eq!(ct.count_for(b), 0);
    ct.check_invariants();

    // Fill to the limit and evict: the evicted flow's source is counted down too.
    for p in 10..17 {
        insert(&mut ct, udp(&format!("10.0.0.9:{p}"), "1.1.1.1:53"), 20_000, p);
    }
    assert_eq!((ct.len(), ct.count_for(ip("10.0.0.9"))), (8, 7));
    insert(&mut ct, udp("10.0.0.2:99", "1.1.1.1:53"), 20_000, 99);
    assert_eq!((ct.count_for(ip("10.0.0.9")), ct.count_for(a)), (6, 2));
    assert!(ct.get(a3).is_some());

    // conntrack flush.
    ct.retain(|_, _| false, &mut removed);
    assert!(ct.is_empty());
    assert_eq!((ct.count_for(a), ct.count_for(ip("10.0.0.9"))), (0, 0));
    let c = ct.counters();
    assert_eq!((c.created, c.expired, c.evicted, c.removed), (13, 1, 1, 11));
    ct.check_invariants();
}

#[test]
fn ids_are_never_reused_by_another_flow() {
    let mut ct = Conntrack::new(2, T);
    let k1 = udp("10.0.0.2:1", "1.1.1.1:53");
    let id1 = insert(&mut ct, k1, 0, 1);
    ct.remove(id1).unwrap();
    let id2 = insert(&mut ct, udp("10.0.0.2:2", "1.1.1.1:53"), 0, 2);
    assert_ne!(id1, id2);
    assert!(ct.get(id1).is_none() && ct.get_mut(id1).is_none(), "the slot is reused, the id is not");
    assert!(!ct.on_packet(id1, Dir::Reply, 1, 0));
    assert_eq!(ct.get(id2).unwrap().state(), FlowState::Unreplied, "a stale id touched nothing");
    // The same key again is another flow with another id.
    let id3 = insert(&mut ct, k1, 0, 3);
    assert!(id3 != id1 && id3 != id2);
    let ids: Vec<FlowId> = ct.iter_ids().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&id2) && ids.contains(&id3));
}

#[test]
fn heap_stays_bounded_when_deadlines_keep_moving_earlier() {
    // Each established -> RST -> reopen -> established cycle pushes a sooner deadline.
    let mut ct = Conntrack::new(4, T);
    let id = established(&mut ct, tcp("10.0.0.2:1", "1.1.1.1:80"), 0, 1);
    for n in 0..10_000u64 {
        ct.on_tcp(id, Dir::Orig, RST, n);
        ct.on_tcp(id, Dir::Orig, SYN, n);
        ct.on_tcp(id, Dir::Reply, SYN | ACK, n);
        ct.on_tcp(id, Dir::Orig, ACK, n);
    }
    assert!(ct.heap.len() <= 2 * ct.slots.len() + HEAP_SLACK + 1, "heap of {}", ct.heap.len());
    ct.check_invariants();
    // Expiring a flow refreshed far into the future looks at its one live entry only.
    assert!(expire(&mut ct, 20_000).is_empty());
    assert_eq!(expire(&mut ct, 9_999 + T.tcp_established_ms), vec![1]);
}

#[test]
fn rows_show_what_conntrack_ls_prints() {
    let mut ct = Conntrack::new(4, T);
    let id = established(&mut ct, tcp("10.0.0.2:40000", "1.1.1.1:443"), 0, 1);
    ct.on_packet(id, Dir::Orig, 1200, 1000);
    ct.on_packet(id, Dir::Reply, 9000, 12_000);
    let u = insert(&mut ct, udp("[fd00::2]:5353", "[2001:db8::53]:53"), 12_000, 2);
    ct.on_packet(u, Dir::Orig, 80, 12_000);
    let mut rows: Vec<String> = ct.rows(12_500).map(|r| r.to_string()).collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            "tcp 10.0.0.2:40000 -> 1.1.1.1:443 ESTABLISHED age 12s expires 7440s packets 1/1 bytes 1200/9000",
            "udp [fd00::2]:5353 -> [2001:db8::53]:53 UNREPLIED age 0s expires 30s packets 1/0 bytes 80/0",
        ]
    );
    let r = ct.get(id).unwrap().row(12_500);
    assert_eq!((r.age_ms, r.expires_in_ms, r.state), (12_500, T.tcp_established_ms - 500, FlowState::Tcp(TcpState::Established)));
    assert!(format!("{ct:?}").contains("len: 2"), "Debug shows the size, not the flows");
}

/// What the model knows of a flow. TCP states come from the table (their walk has its own
/// tests); the model checks what follows from them: deadlines, protection, eviction order.
#[derive(Debug, Clone)]
struct MFlow {
    key: FlowKey,
    id: FlowId,
    value: u32,
    state: FlowState,
    expires: u64,
    /// Order of last activity (insertion or a reported packet).
    touched: u64,
    packets: [u64; 2],
}

#[derive(Debug, Default)]
struct Model {
    flows: Vec<MFlow>,
    pending: Vec<u32>,
    counters: CtCounters,
}

impl Model {
    /// Takes out the flows due at `now`: their values, and their ids into `stale`.
    fn reap(&mut self, now: u64, stale: &mut Vec<FlowId>) -> Vec<u32> {
        let (due, live): (Vec<MFlow>, Vec<MFlow>) = std::mem::take(&mut self.flows).into_iter().partition(|f| f.expires <= now);
        self.flows = live;
        self.counters.expired += due.len() as u64;
        stale.extend(due.iter().map(|f| f.id));
        due.into_iter().map(|f| f.value).collect()
    }
}

fn random_key(rng: &mut Rng) -> FlowKey {
    let srcs = [ip("10.0.0.2"), ip("10.0.0.3"), ip("fd00::2")];
    let src = srcs[rng.below(3) as usize];
    let dst = if src.is_ipv4() { ip("1.1.1.1") } else { ip("2001:db8::1") };
    let port = 1 + rng.below(6) as u16;
    match rng.below(3) {
        0 => FlowKey::new(Proto::Tcp, SocketAddr::new(src, port), SocketAddr::new(dst, 80)),
        1 => FlowKey::new(Proto::Udp, SocketAddr::new(src, port), SocketAddr::new(dst, 53)),
        _ => FlowKey::icmp_echo(src, dst, port),
    }
}

fn random_flags(rng: &mut Rng) -> TcpFlags {
    const COMMON: [TcpFlags; 6] = [TcpFlags::SYN, TcpFlags(0x12), TcpFlags::ACK, TcpFlags(0x11), TcpFlags::FIN, TcpFlags(0x14)];
    if rng.below(4) == 0 {
        TcpFlags(rng.below(32) as u8)
    } else {
        COMMON[rng.below(COMMON.len() as u64) as usize]
    }
}

/// Runs `steps` random operations on a table of `limit` flows; returns its counters at the end.
fn run_model(seed: u64, steps: usize, limit: usize) -> CtCounters {
    let mut rng = Rng(seed | 1);
    let mut ct: Conntrack<u32> = Conntrack::new(limit, T);
    let mut m = Model::default();
    let mut stale: Vec<FlowId> = Vec::new();
    let mut now = 0u64;
    let mut touch = 0u64;
    let mut next_value = 0u32;
    for step in 0..steps {
        let ctx = format!("seed {seed} step {step}");
        match rng.below(100) {
            // Time passes: mostly a little, sometimes past every UDP timeout.
            0..=14 => now += [100, 1_000, 10_000, 40_000, 130_000][rng.below(5) as usize],
            15..=44 => {
                let key = random_key(&mut rng);
                next_value += 1;
                let v = next_value;
                let got = ct.get_or_insert_with(key, now, || v).map(|(id, f)| (id, f.value));
                if let Some(p) = m.flows.iter().position(|f| f.key == key) {
                    assert_eq!(got, Ok((m.flows[p].id, m.flows[p].value)), "{ctx}: hit");
                    continue;
                }
                if m.flows.len() >= limit {
                    let reaped = m.reap(now, &mut stale);
                    m.pending.extend(reaped);
                }
                if m.flows.len() >= limit {
                    let victim =
                        m.flows.iter().enumerate().filter(|(_, f)| !f.state.protected()).min_by_key(|(_, f)| f.touched).map(|(p, _)| p);
                    match victim {
                        Some(p) => {
                            let f = m.flows.remove(p);
                            stale.push(f.id);
                            m.pending.push(f.value);
                            m.counters.evicted += 1;
                        }
                        None => {
                            assert_eq!(got, Err(Full), "{ctx}: full");
                            m.counters.refused_full += 1;
                            continue;
                        }
                    }
                }
                let (id, value) = got.unwrap_or_else(|e| panic!("{ctx}: {e}"));
                assert_eq!(value, v, "{ctx}: created");
                let state = if key.proto == Proto::Tcp { FlowState::Tcp(TcpState::SynSent) } else { FlowState::Unreplied };
                touch += 1;
                m.flows.push(MFlow { key, id, value: v, state, expires: now + T.of(key.proto, state), touched: touch, packets: [0; 2] });
                m.counters.created += 1;
            }
            45..=74 => {
                if m.flows.is_empty() {
                    continue;
                }
                let p = rng.below(m.flows.len() as u64) as usize;
                let dir = if rng.below(2) == 0 { Dir::Orig } else { Dir::Reply };
                let f = &mut m.flows[p];
                touch += 1;
                f.touched = touch;
                if f.key.proto == Proto::Tcp && rng.below(3) != 0 {
                    let s = ct.on_tcp(f.id, dir, random_flags(&mut rng), now).unwrap_or_else(|| panic!("{ctx}: live tcp"));
                    f.state = FlowState::Tcp(s);
                } else {
                    assert!(ct.on_packet(f.id, dir, 100, now), "{ctx}: live");
                    f.packets[dir.index()] += 1;
                    if dir == Dir::Reply && f.state == FlowState::Unreplied {
                        f.state = FlowState::Assured;
                    }
                }
                f.expires = now + T.of(f.key.proto, f.state);
            }
            75..=84 => {
                let mut out = Vec::new();
                ct.expire(now, &mut out);
                let mut got: Vec<u32> = out.into_iter().map(|(_, v)| v).collect();
                let mut want = std::mem::take(&mut m.pending);
                want.extend(m.reap(now, &mut stale));
                got.sort_unstable();
                want.sort_unstable();
                assert_eq!(got, want, "{ctx}: expired");
            }
            85..=91 => {
                if m.flows.is_empty() || rng.below(4) == 0 {
                    if let Some(&id) = stale.get(rng.below(stale.len() as u64 + 1) as usize) {
                        assert!(ct.remove(id).is_none(), "{ctx}: stale id removes nothing");
                    }
                    continue;
                }
                let p = rng.below(m.flows.len() as u64) as usize;
                let f = m.flows.remove(p);
                assert_eq!(ct.remove(f.id), Some((f.key, f.value)), "{ctx}: remove");
                stale.push(f.id);
                m.counters.removed += 1;
            }
            92..=94 => {
                let gone = random_key(&mut rng).src.ip();
                let mut removed = Vec::new();
                ct.retain(|k, _| k.src.ip() != gone, &mut removed);
                let mut got: Vec<u32> = removed.into_iter().map(|(_, v)| v).collect();
                let (out, keep): (Vec<MFlow>, Vec<MFlow>) = std::mem::take(&mut m.flows).into_iter().partition(|f| f.key.src.ip() == gone);
                m.flows = keep;
                m.counters.removed += out.len() as u64;
                stale.extend(out.iter().map(|f| f.id));
                let mut want: Vec<u32> = out.into_iter().map(|f| f.value).collect();
                got.sort_unstable();
                want.sort_unstable();
                assert_eq!(got, want, "{ctx}: retain");
            }
            _ => {
                // A lookup by either direction finds the flow of that key.
                let key = random_key(&mut rng);
                let want = m.flows.iter().find(|f| f.key == key).map(|f| (f.id, Dir::Orig)).or_else(|| {
                    let r = key.reversed();
                    m.flows.iter().find(|f| f.key == r).map(|f| (f.id, Dir::Reply))
                });
                assert_eq!(ct.find(&key), want, "{ctx}: find");
            }
        }
        ct.check_invariants();
        assert_eq!(ct.len(), m.flows.len(), "{ctx}: len");
        assert_eq!(ct.counters(), m.counters, "{ctx}: counters");
        for f in &m.flows {
            let g = ct.get(f.id).unwrap_or_else(|| panic!("{ctx}: {:?} lives", f.id));
            assert_eq!((g.key(), g.value, g.state(), g.expires_ms()), (&f.key, f.value, f.state, f.expires), "{ctx}: flow");
            assert_eq!(g.packets(Dir::Orig) + g.packets(Dir::Reply), f.packets[0] + f.packets[1], "{ctx}: packets");
        }
        for src in [ip("10.0.0.2"), ip("10.0.0.3"), ip("fd00::2")] {
            assert_eq!(ct.count_for(src), m.flows.iter().filter(|f| f.key.src.ip() == src).count(), "{ctx}: count_for {src}");
        }
        for &id in &stale {
            assert!(ct.get(id).is_none(), "{ctx}: stale {id:?} resolves");
        }
    }
    ct.counters()
}

#[test]
fn random_operations_match_the_model() {
    let mut total = CtCounters::default();
    for seed in 1..=40u64 {
        let limit = [1, 3, 8, 16, 64][seed as usize % 5];
        let c = run_model(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), 2_000, limit);
        total.created += c.created;
        total.expired += c.expired;
        total.evicted += c.evicted;
        total.refused_full += c.refused_full;
        total.removed += c.removed;
    }
    // Every path was taken, many times.
    let CtCounters { created, expired, evicted, refused_full, removed } = total;
    assert!(created > 5000 && expired > 500 && evicted > 500 && refused_full > 100 && removed > 500, "{total:?}");
}
