//! The switch's configuration as the workers see it: ports and networks, swapped whole.
//!
//! Workers load the current `Topology` once per wake-up and never lock; the control plane
//! builds a new one and swaps it in (RCU through `ArcSwap`). A removed port's fds close when the
//! last worker lets go of the topology that held it, so a worker never writes to a reused fd.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::counters::PortCounters;
use crate::port::Port;
use crate::{Mac, NetId, PortId};

/// A port as the workers see it.
#[derive(Debug)]
pub struct PortEntry {
    pub id: PortId,
    pub net: NetId,
    pub port: Arc<dyn Port>,
    pub counters: Arc<PortCounters>,
    /// Set by a worker that saw the device disappear.
    pub down: Arc<AtomicBool>,
}

/// Per-network settings the data plane applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Seconds before a learned address is forgotten; 0 = never.
    pub aging_secs: u32,
    /// Most addresses one port may have learned; 0 = no limit.
    pub mac_limit: u32,
    /// Largest L3 payload of a non-GSO frame (the network's MTU).
    pub mtu: u32,
    /// The gateway's MAC: frames to it, and broadcasts, go to the slow path (L3) too.
    pub gateway_mac: Option<Mac>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self { aging_secs: 300, mac_limit: 1024, mtu: 1500, gateway_mac: None }
    }
}

#[derive(Debug, Clone)]
pub struct NetworkEntry {
    pub id: NetId,
    pub config: NetworkConfig,
    pub ports: Vec<PortId>,
}

/// Forwarding mode of the whole data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Full L2 switching: parse, learn, look up, forward or flood.
    #[default]
    Switch,
    /// The I/O ceiling: every frame goes to the other ports of its network untouched.
    Null,
}

#[derive(Debug, Clone, Default)]
pub struct Topology {
    /// Indexed by `PortId`.
    pub ports: Vec<Option<Arc<PortEntry>>>,
    /// Indexed by `NetId`.
    pub networks: Vec<Option<NetworkEntry>>,
}

impl Topology {
    pub fn port(&self, id: PortId) -> Option<&Arc<PortEntry>> {
        self.ports.get(id as usize).and_then(Option::as_ref)
    }

    pub fn network(&self, id: NetId) -> Option<&NetworkEntry> {
        self.networks.get(id as usize).and_then(Option::as_ref)
    }
}
