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
//! Its DNS addresses ([`Gateway::dns4`], [`Gateway::dns6`]; slirp4netns's 10.0.2.3 beside the
//! gateway's 10.0.2.2) are answered the same way, and serve DNS as the gateway's own do.
//!
//! Everything else is counted as ignored, malformed or too big (see [`RouterCounters`]) and
//! dropped; nothing here panics on any input or allocates per frame.

#![forbid(unsafe_code)]

mod announce;
mod answer;
mod arp;
mod checksum;
mod dhcp;
mod dhcp6;
mod dnsgw;
mod forward;
mod gateway;
mod hook;
mod icmperr;
mod icmpv4;
mod icmpv6;
mod lpm;
mod neigh;
mod ra;
mod resolve;
mod tcpgw;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod l3_fixtures;

pub use announce::{gratuitous_arp, unsolicited_na, GARP_LEN, UNSOLICITED_NA_LEN};
pub use answer::{answer, Answer, Reply, REPLY_BUF};
pub use dhcp::{Dhcp4Reply, DhcpAnswer, DhcpConfig, DhcpConfigError, DhcpServer, LeaseStore};
pub use dhcp6::{Dhcp6Config, Dhcp6Reply, Dhcp6Server};
pub use dnsgw::{parse_udp_query, write_udp_reply, DnsAction, DnsClient, DnsService, UdpParse, UdpQuery, DNS_PORT};
pub use forward::{DropReason, Forward, L3Config, L3Error, NetworkL3, RouteRow, RouteTarget, L3, MAX_NET_ID};
pub use gateway::{Gateway, Gateways, Leases, RouterCounters};
pub use icmperr::{
    reportable_v4, reportable_v6, write_v4 as write_icmpv4_error, write_v6 as write_icmpv6_error, IcmpError, RateLimiter, ICMP_BURST,
    ICMP_ERROR_BUF, ICMP_RATE,
};
pub use lpm::{Lpm4, Lpm6, LpmError, MAX_ROUTES};
pub use neigh::{
    NeighLearn, NeighLookup, NeighRow, NeighState, NeighTable, DEFAULT_AGING_SECS, DEFAULT_CAPACITY, FAILED_HOLD, MAX_PROBES, RETRANS_SECS,
};
pub use ra::{
    answer_link_local, answer_rs, build_ra, build_unsolicited_ra, link_local_from_mac, parse_rs, RaConfig, RaTimer, RsInfo, ALL_NODES,
    ALL_NODES_MAC, ALL_ROUTERS,
};
pub use resolve::{learnable, write_arp_request, write_neighbor_solicit, ARP_REQUEST_LEN, NS_LEN};
pub use tcpgw::{ConnId, TcpGateway, TcpGwCounters, TcpPeer};
