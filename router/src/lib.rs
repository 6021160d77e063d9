//! vswitch's L3 gateway services, answered in the switch's slow path: ARP, NDP and ICMP echo.
//!
//! Sans-IO, like quinn-proto: no sockets, no threads, no clock. The switch punts frames
//! addressed to a network's gateway (and the broadcasts and multicasts of networks that have
//! one) to its slow-path thread, which calls [`Gateways`] through
//! [`vswitch_switch::SlowPathHandler`]; any reply is handed back through the `tx` callback and
//! leaves by the port the request came in on. [`answer()`] is the same logic as a pure function
//! over one frame, for benchmarks and fuzz targets.
//!
//! What is answered, and for which address of the network's [`Gateway`]:
//! - ARP requests for its IPv4 address (RFC 826);
//! - ICMP echo requests to its IPv4 address (RFC 792);
//! - Neighbor Solicitations for its IPv6 address (RFC 4861), including Duplicate Address
//!   Detection probes;
//! - ICMPv6 echo requests to its IPv6 address (RFC 4443).
//!
//! Everything else is counted as ignored, malformed or too big (see [`RouterCounters`]) and
//! dropped; nothing here panics on any input or allocates per frame.

#![forbid(unsafe_code)]

mod answer;
mod arp;
mod checksum;
mod gateway;
mod icmpv4;
mod icmpv6;

#[cfg(test)]
mod fixtures;

pub use answer::{answer, Answer, Reply, REPLY_BUF};
pub use gateway::{Gateway, Gateways, RouterCounters};
