//! The per-frame decision: classify, learn the source, look up the destination.
//!
//! Pure with respect to I/O: it reads the topology and the FDB and returns a [`Verdict`]; the
//! worker carries verdicts out for the whole batch. That keeps this path testable with byte
//! fixtures and benchmarkable without devices.

use crate::counters::{bump, Drop, PortWorkerCounters};
use crate::fdb::{Fdb, Learn};
use crate::packet::{Frame, ParseError};
use crate::topology::{NetworkEntry, PortEntry};
use crate::PortId;

/// Bytes an Ethernet header (with one VLAN tag) adds on top of the MTU.
const L2_OVERHEAD: usize = 18;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Drop(Drop),
    /// Known unicast: to this port only.
    Forward(PortId),
    /// Broadcast, multicast or unknown unicast: every other port of the network.
    Flood,
    /// Addressed to the gateway: the slow path (L3) only.
    Punt,
    /// Broadcast or multicast on a network with a gateway: flood, and the gateway sees it too.
    FloodAndPunt,
    /// IP addressed to the gateway's MAC: the router decides (on this worker).
    Route,
}

/// Decides the fate of one `[vnet hdr][frame]` that arrived on `ingress` in network `net`;
/// `routing` says whether an L3 handler takes IP frames for the gateway.
#[inline]
pub fn classify(
    fdb: &Fdb,
    net: &NetworkEntry,
    ingress: &PortEntry,
    wire: &[u8],
    now: u32,
    counters: &PortWorkerCounters,
    routing: bool,
) -> Verdict {
    let frame = match Frame::parse(wire) {
        Ok(f) => f,
        Err(ParseError::Runt) => return Verdict::Drop(Drop::Runt),
        Err(ParseError::BadVnetHeader) => return Verdict::Drop(Drop::BadVnetHdr),
    };
    if !frame.is_gso() && frame.eth_len() > net.config.mtu as usize + L2_OVERHEAD {
        return Verdict::Drop(Drop::Oversize);
    }
    let src = frame.src();
    if src.is_multicast() {
        return Verdict::Drop(Drop::MulticastSource);
    }
    if !src.is_zero() && fdb.learn(net.id, src, ingress.id, now, net.config.mac_limit) == Learn::LimitReached {
        bump(&counters.learn_limited, 1);
    }
    let dst = frame.dst();
    if dst.is_multicast() {
        return if net.config.gateway_mac.is_some() { Verdict::FloodAndPunt } else { Verdict::Flood };
    }
    if net.config.gateway_mac == Some(dst) {
        return match frame.ethertype() {
            ETHERTYPE_IPV4 | ETHERTYPE_IPV6 if routing => Verdict::Route,
            _ => Verdict::Punt,
        };
    }
    match fdb.lookup(net.id, dst) {
        Some(p) if p == ingress.id => Verdict::Drop(Drop::SamePort),
        Some(p) => Verdict::Forward(p),
        None => Verdict::Flood,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::PortCounters;
    use crate::packet::VNET_HDR_LEN;
    use crate::port::MemPort;
    use crate::topology::NetworkConfig;
    use crate::Mac;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    fn port(id: PortId) -> PortEntry {
        PortEntry {
            id,
            net: 1,
            port: Arc::new(MemPort::new("m", 4).unwrap()),
            counters: Arc::new(PortCounters::new(1)),
            down: Arc::new(AtomicBool::new(false)),
        }
    }

    fn net(gw: Option<Mac>) -> NetworkEntry {
        NetworkEntry { id: 1, config: NetworkConfig { gateway_mac: gw, mac_limit: 2, ..Default::default() }, ports: vec![1, 2] }
    }

    fn wire(dst: [u8; 6], src: [u8; 6], payload: usize) -> Vec<u8> {
        let mut v = vec![0u8; VNET_HDR_LEN];
        v.extend_from_slice(&dst);
        v.extend_from_slice(&src);
        v.extend_from_slice(&[0x08, 0x00]);
        v.resize(v.len() + payload, 0xab);
        v
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    #[test]
    fn floods_unknown_then_forwards_learned() {
        let fdb = Fdb::new();
        let (n, pa, pb) = (net(None), port(1), port(2));
        let c = pa.counters.worker(0);
        assert_eq!(classify(&fdb, &n, &pa, &wire(B, A, 46), 0, c, false), Verdict::Flood);
        assert_eq!(classify(&fdb, &n, &pb, &wire(A, B, 46), 0, c, false), Verdict::Forward(1));
        assert_eq!(classify(&fdb, &n, &pa, &wire(B, A, 46), 0, c, false), Verdict::Forward(2));
        assert_eq!(classify(&fdb, &n, &pa, &wire(A, B, 46), 0, c, false), Verdict::Drop(Drop::SamePort));
    }

    #[test]
    fn drops_malformed_frames_with_reasons() {
        let fdb = Fdb::new();
        let (n, pa) = (net(None), port(1));
        let c = pa.counters.worker(0);
        assert_eq!(classify(&fdb, &n, &pa, &[0u8; 12], 0, c, false), Verdict::Drop(Drop::Runt));
        let mut bad = wire(B, A, 46);
        bad[1] = 9;
        assert_eq!(classify(&fdb, &n, &pa, &bad, 0, c, false), Verdict::Drop(Drop::BadVnetHdr));
        assert_eq!(classify(&fdb, &n, &pa, &wire(B, A, 1501 + 4), 0, c, false), Verdict::Drop(Drop::Oversize));
        let mut gso = wire(B, A, 9000);
        gso[1] = 1;
        assert_eq!(classify(&fdb, &n, &pa, &gso, 0, c, false), Verdict::Flood, "GSO frames may exceed the MTU");
        assert_eq!(classify(&fdb, &n, &pa, &wire(B, [1, 0, 0, 0, 0, 1], 46), 0, c, false), Verdict::Drop(Drop::MulticastSource));
        assert_eq!(fdb.len(), 1, "only the GSO frame's source was learned");
        assert_eq!(fdb.lookup(1, Mac([1, 0, 0, 0, 0, 1])), None);
    }

    #[test]
    fn gateway_frames_go_to_the_slow_path() {
        let fdb = Fdb::new();
        let gw = Mac([2, 0x42, 0, 0, 0, 1]);
        let (n, pa) = (net(Some(gw)), port(1));
        let c = pa.counters.worker(0);
        assert_eq!(classify(&fdb, &n, &pa, &wire(gw.0, A, 46), 0, c, false), Verdict::Punt);
        assert_eq!(classify(&fdb, &n, &pa, &wire(gw.0, A, 46), 0, c, true), Verdict::Route, "IPv4 to the gateway is routed");
        let mut arp = wire(gw.0, A, 46);
        arp[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(classify(&fdb, &n, &pa, &arp, 0, c, true), Verdict::Punt, "ARP to the gateway is the slow path's");
        assert_eq!(classify(&fdb, &n, &pa, &wire([0xff; 6], A, 46), 0, c, false), Verdict::FloodAndPunt);
    }

    #[test]
    fn learn_limit_is_counted_not_dropped() {
        let fdb = Fdb::new();
        let (n, pa) = (net(None), port(1));
        let c = pa.counters.worker(0);
        for i in 0..3u8 {
            assert_eq!(classify(&fdb, &n, &pa, &wire(B, [2, 0, 0, 0, 1, i], 46), 0, c, false), Verdict::Flood);
        }
        assert_eq!(pa.counters.totals().learn_limited, 1);
        assert_eq!(fdb.learned_on(1), 2);
    }
}
