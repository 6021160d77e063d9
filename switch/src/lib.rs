//! vswitch's data plane: ports, packet buffers, the FDB, the per-frame pipeline and the workers.
//!
//! See `../shared/DESIGN.md` ("How a packet travels"). The control plane (`vswitch-ctl`) drives
//! it through [`Dataplane`]; the gateway's services plug in through [`SlowPathHandler`].

pub mod counters;
pub mod dataplane;
pub mod fdb;
mod handoff;
pub mod l3;
mod mac;
pub mod packet;
pub mod pipeline;
pub mod port;
pub mod slowpath;
pub mod sys;
pub mod topology;
pub mod uplink;
mod worker;

pub use counters::Drop;
pub use dataplane::{Dataplane, DataplaneConfig, DpError, Hooks, PortStats, WorkerStats};
pub use fdb::{Fdb, FdbRow, Learn};
pub use handoff::HandedFrame;
pub use l3::{L3Handler, L3Verdict};
pub use mac::{Mac, MacParseError};
pub use slowpath::{Flood, SlowPathHandler, SlowWaker};
pub use topology::{Mode, NetworkConfig, Topology};
pub use uplink::{Uplink, UplinkFrame, UPLINK_RING};
pub use worker::BATCH;

/// A network inside the data plane (dense, assigned by [`Dataplane::add_network`]).
pub type NetId = u32;
/// A port inside the data plane (assigned by [`Dataplane::add_port`]).
pub type PortId = u32;
