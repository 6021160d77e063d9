//! Per-port, per-worker counters: one writer per cache line, summed when read.
//!
//! Every frame the switch does not deliver is counted under exactly one [`Drop`] reason on the
//! port it arrived on (or, for transmit failures, the port it was leaving by).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal: $doc:literal,)*) => {
        /// Why a frame was dropped. The names are what `vswitchctl stats` prints.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Drop {
            $(#[doc = $doc] $variant,)*
        }

        impl Drop {
            pub const ALL: &'static [Drop] = &[$(Drop::$variant,)*];
            pub const COUNT: usize = Self::ALL.len();
            pub fn name(self) -> &'static str {
                match self { $(Drop::$variant => $name,)* }
            }
        }
    };
}

drop_reasons! {
    Runt => "runt": "shorter than a virtio-net header plus an Ethernet header",
    BadVnetHdr => "bad_vnet_hdr": "virtio-net header with an unknown GSO type",
    Oversize => "oversize": "a non-GSO frame longer than the network's MTU allows",
    MulticastSource => "multicast_src": "source MAC is a group address",
    SamePort => "same_port": "the destination was learned on the port the frame came from",
    NoNetwork => "no_network": "the port is not attached to a network",
    SlowPathFull => "slowpath_full": "the ring to the slow path was full",
    PuntTooBig => "punt_too_big": "a frame for the gateway larger than the slow path takes (9 KB)",
    TxFull => "tx_full": "the egress device could not take the frame now",
    TxError => "tx_error": "the egress device refused the frame",
    PortDown => "port_down": "the device went away",
    LinkDown => "link_down": "the egress device exists but its link is down",
    RxError => "rx_error": "reading the device failed for another reason",
    Unresolved => "unresolved": "routed, but the next hop's MAC is not known yet",
    RoutedDrop => "routed_drop": "the router refused it (policy, TTL, malformed IP; see the gateway counters)",
    UplinkFull => "uplink_full": "routed out of the networks, but the ring to the NAT engine was full",
}

/// Counters written by one worker for one port. Aligned so two workers never share a line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct PortWorkerCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub flooded: AtomicU64,
    pub punted: AtomicU64,
    pub learn_limited: AtomicU64,
    pub routed: AtomicU64,
    pub drops: [AtomicU64; Drop::COUNT],
}

/// Adds to a counter that only this thread writes: a load and a store, no locked instruction.
#[inline]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// A port's counters: one block per worker plus one for the slow path.
#[derive(Debug)]
pub struct PortCounters {
    blocks: Box<[PortWorkerCounters]>,
}

/// Totals of a port's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortTotals {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub flooded: u64,
    pub punted: u64,
    pub learn_limited: u64,
    pub routed: u64,
    pub drops: Vec<(&'static str, u64)>,
}

impl PortTotals {
    pub fn dropped(&self) -> u64 {
        self.drops.iter().map(|d| d.1).sum()
    }
    pub fn drop_count(&self, d: Drop) -> u64 {
        self.drops.iter().find(|x| x.0 == d.name()).map_or(0, |x| x.1)
    }
}

impl PortCounters {
    /// `writers` is workers + 2 (the slow path and the uplink's engine have the last two).
    pub fn new(writers: usize) -> Self {
        Self { blocks: (0..writers).map(|_| PortWorkerCounters::default()).collect() }
    }

    pub fn worker(&self, w: usize) -> &PortWorkerCounters {
        &self.blocks[w.min(self.blocks.len() - 1)]
    }

    pub fn totals(&self) -> PortTotals {
        let sum = |f: &dyn Fn(&PortWorkerCounters) -> &AtomicU64| self.blocks.iter().map(|b| f(b).load(Relaxed)).sum::<u64>();
        PortTotals {
            rx_packets: sum(&|b| &b.rx_packets),
            rx_bytes: sum(&|b| &b.rx_bytes),
            tx_packets: sum(&|b| &b.tx_packets),
            tx_bytes: sum(&|b| &b.tx_bytes),
            flooded: sum(&|b| &b.flooded),
            punted: sum(&|b| &b.punted),
            learn_limited: sum(&|b| &b.learn_limited),
            routed: sum(&|b| &b.routed),
            drops: Drop::ALL.iter().map(|&d| (d.name(), sum(&|b| &b.drops[d as usize]))).collect(),
        }
    }
}

/// Counters of one worker thread as a whole.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerCounters {
    pub wakeups: AtomicU64,
    pub batches: AtomicU64,
    pub frames: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_all_writers() {
        let c = PortCounters::new(3);
        bump(&c.worker(0).rx_packets, 2);
        bump(&c.worker(2).rx_packets, 3);
        bump(&c.worker(9).drops[Drop::Runt as usize], 1);
        let t = c.totals();
        assert_eq!(t.rx_packets, 5);
        assert_eq!(t.drop_count(Drop::Runt), 1);
        assert_eq!(t.dropped(), 1);
        assert_eq!(Drop::ALL.len(), Drop::COUNT);
    }
}
