//! The uplink: frames the router sends out of every network (to the host and the world) go on a
//! bounded ring to the NAT engine's thread, which answers by writing frames into ports itself.
//!
//! The same hand-off as the slow path's ([`crate::handoff`]): workers never wait; a frame is
//! copied whole (GSO super-frames included, with their virtio-net header, so the engine sees
//! 64 KB segments), and dropped with a counter (`uplink_full`) when there is no room.

use std::os::fd::RawFd;
use std::sync::Arc;

use crate::counters::Drop;
use crate::dataplane::Shared;
use crate::handoff::{HandedFrame, Handoff};
use crate::packet::{PacketBuf, VNET_HDR_LEN};
use crate::{Mac, NetId, PortId};

/// A frame routed to the uplink: `[vnet hdr][Ethernet frame]`, from `port` in `net`.
pub type UplinkFrame = HandedFrame;

/// Frames that can wait for the engine at once.
pub const UPLINK_RING: usize = 512;

/// The ring from the workers to the engine: frames whole, `[vnet hdr][Ethernet frame]`.
#[derive(Debug)]
pub(crate) struct UplinkRing(Handoff);

impl UplinkRing {
    pub(crate) fn new() -> std::io::Result<Self> {
        Ok(Self(Handoff::new(UPLINK_RING, crate::packet::MAX_FRAME, Drop::UplinkFull)?))
    }

    pub(crate) fn push(&self, net: NetId, port: PortId, wire: &[u8]) -> Result<(), Drop> {
        self.0.push(net, port, |buf| {
            let n = wire.len().min(VNET_HDR_LEN + buf.frame_capacity());
            buf.rx_area()[..n].copy_from_slice(&wire[..n]);
            buf.set_len(n);
        })
    }
}

/// The engine's end of the uplink: frames to take, and ports to answer into. Obtained from
/// [`crate::Dataplane::uplink`]; used from one thread.
#[derive(Clone)]
pub struct Uplink(pub(crate) Arc<Shared>);

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Uplink")
    }
}

impl Uplink {
    fn ring(&self) -> &Handoff {
        // Dataplane::uplink hands out an Uplink only when the ring exists.
        &self.0.uplink.as_ref().expect("uplink ring").0
    }

    /// Readable (level-triggered) while frames wait; call [`Uplink::drain_wake`] before popping.
    pub fn wake_fd(&self) -> RawFd {
        self.ring().wake.raw()
    }

    /// Call when [`Uplink::wake_fd`] was readable, then pop until [`Uplink::pop`] gives None:
    /// a burst wakes the engine once, so frames left behind would wait for the next burst.
    pub fn drain_wake(&self) {
        self.ring().begin_drain();
    }

    pub fn pop(&self) -> Option<UplinkFrame> {
        self.ring().pop()
    }

    /// Gives a popped frame's buffer back.
    pub fn recycle(&self, buf: PacketBuf) {
        self.ring().recycle(buf);
    }

    /// Writes `wire` (`[vnet hdr][Ethernet frame]`) into `port`, counted on the uplink's own
    /// counter block. False if the port is gone.
    pub fn transmit(&self, port: PortId, wire: &[u8]) -> bool {
        let topo = self.0.topo.load();
        let Some(dst) = topo.port(port) else { return false };
        crate::worker::transmit(dst, self.0.workers.len() + 1, wire);
        true
    }

    /// Writes `wire` to the port of `net` where `mac` was learned, or to every port of `net` when
    /// none was (as a worker floods a frame to an unknown unicast MAC), counted on the uplink's own
    /// counter block. The NAT engine reaches a container this way before the container sent it
    /// anything (published ports). False if it went nowhere.
    pub fn transmit_to(&self, net: NetId, mac: Mac, wire: &[u8]) -> bool {
        let topo = self.0.topo.load();
        let w = self.0.workers.len() + 1;
        // The network check guards against an entry that outlived its port while the id went
        // to a port of another network.
        match self.0.fdb.lookup(net, mac).and_then(|p| topo.port(p)) {
            Some(dst) if dst.net == net => {
                crate::worker::transmit(dst, w, wire);
                true
            }
            _ => {
                let Some(n) = topo.network(net) else { return false };
                let mut sent = false;
                for dst in n.ports.iter().filter_map(|&p| topo.port(p)) {
                    crate::worker::transmit(dst, w, wire);
                    sent = true;
                }
                sent
            }
        }
    }

    /// The network a port belongs to now (None once it is removed).
    pub fn port_network(&self, port: PortId) -> Option<NetId> {
        self.0.topo.load().port(port).map(|p| p.net)
    }

    /// Seconds on the data plane's clock.
    pub fn now(&self) -> u32 {
        self.0.now()
    }

    pub fn stopping(&self) -> bool {
        self.0.stop.load(std::sync::atomic::Ordering::Relaxed)
    }
}
