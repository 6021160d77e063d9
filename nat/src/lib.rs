//! vswitch's NAT: connection tracking, and the slirp engine that carries containers' flows on host sockets.
//!
//! Connection tracking is sans-IO, like the router: no sockets, no threads, no clock. Time is a
//! parameter (`now_ms`, milliseconds on the caller's monotonic clock), so every timeout and
//! eviction can be tested step by step and benchmarked without a network. The slirp engine
//! ([`slirp`]) is the one part that does I/O: its own thread, an epoll over the uplink ring and
//! the host sockets, and smoltcp facing the containers.
//!
//! - [`Conntrack`]: the flow table. One entry per connection, keyed by its 5-tuple as the
//!   container side sees it ([`FlowKey`]), with TCP states and UDP/ICMP "assured" marks as Linux's
//!   nf_conntrack keeps them, timeouts ([`Timeouts`]), a hard limit with eviction, per-source
//!   counts, and a slot for the caller's own per-flow data (its host socket, its translation).

// deny, not forbid: slirp's epoll wrapper (slirp/sys.rs) allows it, one kernel call per block.
#![deny(unsafe_code)]

mod conntrack;
pub mod slirp;
#[cfg(test)]
mod test_rng;

pub use conntrack::{
    Conntrack, CtCounters, CtRow, Dir, Flow, FlowId, FlowKey, FlowState, Full, Proto, TcpFlags, TcpState, Timeouts, DEFAULT_LIMIT,
};
