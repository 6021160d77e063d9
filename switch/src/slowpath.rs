//! The slow path: a bounded lock-free ring from the workers to one thread that runs the
//! gateway's services (ARP, ICMP, NDP, DHCP, DNS) and the FDB's aging.
//!
//! Workers never wait on it (see [`crate::handoff`]): a frame that finds no room is dropped
//! and counted (`slowpath_full`).

use crate::counters::Drop;
use crate::handoff::Handoff;
use crate::packet::{VNET_F_NEEDS_CSUM, VNET_HDR_LEN};
use crate::{NetId, PortId};

/// Frames that can wait for the slow path at once.
pub const SLOW_RING: usize = 256;
/// Largest frame the slow path takes: a jumbo frame. The gateway's services never need more,
/// and small buffers keep the ring's memory (resident once zeroed) near 2.4 MB, not 17 MB.
pub const SLOW_FRAME: usize = 9216 + 18;

/// Handles frames for the gateway. Implemented by the router; called on the slow-path thread.
pub trait SlowPathHandler: Send + Sync + std::fmt::Debug {
    /// `eth` is a bare Ethernet frame that arrived on `ingress` in `net`. Replies are sent with
    /// `tx(port, frame)`, each a bare Ethernet frame.
    fn handle(&self, net: NetId, ingress: PortId, eth: &[u8], tx: &mut dyn FnMut(PortId, &[u8]));

    /// Called on the slow-path thread after every wake-up (frames, a [`SlowWaker`]
    /// notification) and at least twice a second, with the data plane's clock in seconds:
    /// periodic and queued frames (router advertisements, announcements of new endpoints) go
    /// out through `flood(net, except, frame)`, to every port of `net` but `except`; frames for
    /// one port (answers that completed elsewhere, such as a forwarded DNS query's) through
    /// `tx(port, frame)`.
    fn tick(&self, _now: u32, _flood: Flood<'_>, _tx: &mut dyn FnMut(PortId, &[u8])) {}

    /// How soon the handler needs `tick` again, when sooner than the half-second heartbeat
    /// (TCP retransmission timers).
    fn tick_in(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Floods a frame in a network, except on one port: `flood(net, except, frame)`.
pub type Flood<'a> = &'a mut dyn FnMut(NetId, Option<PortId>, &[u8]);

/// Wakes the slow-path thread from any thread, so that its handler's `tick` runs soon: how
/// work finished off the slow path (a forwarded DNS answer) gets back onto it.
#[derive(Clone)]
pub struct SlowWaker(pub(crate) std::sync::Arc<crate::dataplane::Shared>);

impl std::fmt::Debug for SlowWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlowWaker")
    }
}

impl SlowWaker {
    pub fn wake(&self) {
        if let Some(ring) = &self.0.slow {
            ring.notify();
        }
    }
}

/// The ring from the workers to the slow-path thread: bare frames (the virtio-net header
/// dropped, a partial checksum completed), at most [`SLOW_FRAME`] bytes.
#[derive(Debug)]
pub(crate) struct SlowRing(Handoff);

impl std::ops::Deref for SlowRing {
    type Target = Handoff;

    fn deref(&self) -> &Handoff {
        &self.0
    }
}

impl SlowRing {
    pub(crate) fn new() -> std::io::Result<Self> {
        Ok(Self(Handoff::new(SLOW_RING, SLOW_FRAME, Drop::SlowPathFull)?))
    }

    /// Copies `wire` (`[vnet hdr][frame]`) onto the ring.
    pub(crate) fn push(&self, net: NetId, port: PortId, wire: &[u8]) -> Result<(), Drop> {
        if wire.len() > VNET_HDR_LEN + SLOW_FRAME {
            return Err(Drop::PuntTooBig);
        }
        self.0.push(net, port, |buf| {
            let (hdr, frame) = wire.split_at(VNET_HDR_LEN.min(wire.len()));
            buf.fill_plain(frame);
            // The slow path sees bare frames, so a checksum the sender left to us is completed now.
            complete_checksum(hdr, &mut buf.wire_mut()[VNET_HDR_LEN..]);
        })
    }
}

/// Completes the partial checksum a virtio-net header with NEEDS_CSUM describes: the sender
/// stored the pseudo-header's sum at `csum_start + csum_offset` and left the rest to the
/// receiver (virtio spec 5.1.6.2). A header that points outside the frame is left alone; the
/// handler then sees a bad checksum and drops the frame as malformed.
fn complete_checksum(hdr: &[u8], frame: &mut [u8]) {
    if hdr.len() < VNET_HDR_LEN || hdr[0] & VNET_F_NEEDS_CSUM == 0 {
        return;
    }
    let start = usize::from(u16::from_le_bytes([hdr[6], hdr[7]]));
    let at = start + usize::from(u16::from_le_bytes([hdr[8], hdr[9]]));
    if at + 2 > frame.len() || start > at {
        return;
    }
    let mut sum = 0u64;
    let mut words = frame[start..].chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // Folded to 16 bits above. UDP sends a computed zero as all ones (RFC 768); for TCP the two
    // are the same number in one's complement.
    let c = match !(sum as u16) {
        0 => 0xffff,
        c => c,
    };
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_a_partial_checksum() {
        // UDP in IPv4, 10.0.0.1:1000 -> 10.0.0.2:53, 4 bytes of payload; the checksum field holds
        // the pseudo-header's sum (not complemented), as Linux leaves it with CHECKSUM_PARTIAL.
        let mut f = vec![0u8; 14 + 20 + 8 + 4];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14..34].copy_from_slice(&[0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        f[34..42].copy_from_slice(&[0x03, 0xe8, 0x00, 0x35, 0x00, 0x0c, 0, 0]);
        f[42..46].copy_from_slice(b"abcd");
        let pseudo: u32 = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 17 + 12;
        f[40..42].copy_from_slice(&((pseudo & 0xffff) as u16 + (pseudo >> 16) as u16).to_be_bytes());
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr[0] = VNET_F_NEEDS_CSUM;
        hdr[6..8].copy_from_slice(&34u16.to_le_bytes());
        hdr[8..10].copy_from_slice(&6u16.to_le_bytes());
        let mut wire = hdr.to_vec();
        wire.extend_from_slice(&f);
        let r = SlowRing::new().unwrap();
        r.push(1, 2, &wire).unwrap();
        let p = r.pop().unwrap();
        let got = &p.buf.wire()[VNET_HDR_LEN..];
        assert_eq!(got[..40], f[..40]);
        // Verify: the sum over pseudo-header and the whole UDP datagram folds to all ones.
        let mut sum = pseudo;
        for w in got[34..].chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff, "{got:02x?}");
        // A header pointing past the frame changes nothing.
        hdr[6..8].copy_from_slice(&400u16.to_le_bytes());
        let mut bad = hdr.to_vec();
        bad.extend_from_slice(&f);
        r.push(1, 2, &bad).unwrap();
        assert_eq!(&r.pop().unwrap().buf.wire()[VNET_HDR_LEN..], &f[..]);
    }

    #[test]
    fn ring_bounds_and_recycles() {
        let r = SlowRing::new().unwrap();
        let wire = [0u8; VNET_HDR_LEN + 14];
        for _ in 0..SLOW_RING {
            assert!(r.push(1, 2, &wire).is_ok());
        }
        assert_eq!(r.push(1, 2, &wire), Err(Drop::SlowPathFull), "full ring refuses");
        let p = r.pop().unwrap();
        assert_eq!((p.net, p.port, p.buf.len()), (1, 2, VNET_HDR_LEN + 14));
        r.recycle(p.buf);
        assert!(r.push(1, 2, &wire).is_ok());
        let big = vec![0u8; VNET_HDR_LEN + SLOW_FRAME + 1];
        assert_eq!(r.pop().map(|_| ()), Some(()));
        assert_eq!(r.push(1, 2, &big), Err(Drop::PuntTooBig));
    }
}
