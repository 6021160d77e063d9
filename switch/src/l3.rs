//! The hook through which workers route: frames addressed to a gateway's MAC that are IP go to
//! an [`L3Handler`] (implemented by the router crate) on the worker itself, not the slow path.
//!
//! The handler rewrites the frame in place (MACs, TTL) and says where it goes next; the worker
//! then forwards it at L2 inside the egress network. Nothing here allocates or blocks.

use crate::{Mac, NetId};

/// What the router decided for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L3Verdict {
    /// Rewritten in place; deliver to `dst_mac` inside network `net`.
    Out { net: NetId, dst_mac: Mac },
    /// An ICMP error (a bare Ethernet frame of `len` bytes) was written to the scratch buffer:
    /// send it back out of the ingress port. The original frame is dropped.
    Reply { len: usize },
    /// The next hop's MAC is unknown: a resolution request (a bare Ethernet frame of `len`
    /// bytes, ARP or NDP) was written to the scratch buffer: flood it in `net`. The frame is dropped.
    Resolve { net: NetId, len: usize },
    /// The next hop's MAC is unknown and a request went out recently: drop the frame.
    Unresolved,
    /// For the gateway itself: hand it to the slow path.
    Local,
    /// Out of every network, to the host or the world: hand it whole to the NAT engine.
    Uplink,
    /// Dropped; `reason` is the router's own name for why, counted under `routed_drop`.
    Drop { reason: &'static str },
}

/// Routes frames for a gateway; called concurrently from every worker.
pub trait L3Handler: Send + Sync + std::fmt::Debug {
    /// `wire` is `[virtio_net_hdr][Ethernet frame]` that arrived in `in_net` for its gateway's
    /// MAC; `scratch` receives a reply or resolution frame; `now` is the data plane's clock.
    fn route(&self, in_net: NetId, wire: &mut [u8], scratch: &mut [u8], now: u32) -> L3Verdict;
}
