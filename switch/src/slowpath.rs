//! The slow path: a bounded lock-free ring from the workers to one thread that runs the
//! gateway's services (ARP, ICMP, and later DHCP and DNS) and the FDB's aging.
//!
//! Workers never wait on it: a frame is copied into a buffer taken from a free ring; when no
//! buffer is free the frame is dropped and counted (`slowpath_full`). Buffers cycle between the
//! two rings, so after start-up nothing is allocated.

use crossbeam_queue::ArrayQueue;

use crate::counters::Drop;
use crate::packet::{PacketBuf, VNET_HDR_LEN};
use crate::sys::EventFd;
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

    /// Called on the slow-path thread at least twice a second with the data plane's clock:
    /// periodic and queued frames (router advertisements, announcements of new endpoints) go
    /// out through `flood(net, except, frame)`, to every port of `net` but `except`.
    fn tick(&self, _now: u32, _flood: Flood<'_>) {}
}

/// Floods a frame in a network, except on one port: `flood(net, except, frame)`.
pub type Flood<'a> = &'a mut dyn FnMut(NetId, Option<PortId>, &[u8]);

#[derive(Debug)]
pub(crate) struct Punted {
    pub buf: PacketBuf,
    pub net: NetId,
    pub port: PortId,
}

#[derive(Debug)]
pub(crate) struct SlowRing {
    free: ArrayQueue<PacketBuf>,
    full: ArrayQueue<Punted>,
    pub wake: EventFd,
}

impl SlowRing {
    pub(crate) fn new() -> std::io::Result<Self> {
        let free = ArrayQueue::new(SLOW_RING);
        for _ in 0..SLOW_RING {
            let _ = free.push(PacketBuf::with_frame_capacity(SLOW_FRAME));
        }
        Ok(Self { free, full: ArrayQueue::new(SLOW_RING), wake: EventFd::new()? })
    }

    /// Copies `wire` (`[vnet hdr][frame]`) onto the ring.
    pub(crate) fn push(&self, net: NetId, port: PortId, wire: &[u8]) -> Result<(), Drop> {
        if wire.len() > VNET_HDR_LEN + SLOW_FRAME {
            return Err(Drop::PuntTooBig);
        }
        let Some(mut buf) = self.free.pop() else { return Err(Drop::SlowPathFull) };
        buf.fill_plain(&wire[VNET_HDR_LEN.min(wire.len())..]);
        match self.full.push(Punted { buf, net, port }) {
            Ok(()) => {
                self.wake.notify();
                Ok(())
            }
            Err(p) => {
                let _ = self.free.push(p.buf);
                Err(Drop::SlowPathFull)
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.full.is_empty()
    }

    pub(crate) fn pop(&self) -> Option<Punted> {
        self.full.pop()
    }

    pub(crate) fn recycle(&self, buf: PacketBuf) {
        let _ = self.free.push(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
