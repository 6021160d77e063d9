//! The routed fast path: the decision for an IP frame addressed to a gateway's MAC, made on the
//! worker that received it, and the configuration it is made from.
//!
//! # Theory of operation
//!
//! The control plane builds an [`L3Config`] (each network's gateway addresses, MAC and MTU; the
//! routes; the pairs of networks allowed to reach each other) and publishes it with
//! [`L3::store`] or [`L3::update`]; workers read the published snapshot without a lock (RCU
//! through `ArcSwap`, as aardvark-dns reloads its backends). The part that changes on the packet
//! path, each network's neighbour table and its ICMP error budget, lives beside the snapshot in
//! an `Arc` carried from one snapshot to the next, so learning an address never copies the
//! configuration and publishing a configuration never forgets a neighbour.
//!
//! [`L3::forward`] takes `[virtio_net_hdr][Ethernet frame]`, exactly as a port handed it over,
//! and decides in this order (Linux's `ip_forward` order, with policy moved before the TTL check
//! so that an isolated network learns nothing about another, not even a time-exceeded):
//!
//! 1. parse: the virtio-net header, Ethernet, the IP header (IPv4 header checksum verified);
//! 2. addresses: a source that names no host is dropped; the gateway's own addresses (its DNS
//!    address too), broadcast, multicast and Neighbor Discovery are [`Forward::Local`] (the slow
//!    path's); the host alias is [`Forward::Uplink`]; link-local never crosses networks;
//! 3. route: longest prefix match; none → ICMP net unreachable;
//! 4. policy: the ingress network must be allowed to reach the egress network (a network always
//!    reaches itself); otherwise a silent drop, as Docker isolates its networks;
//! 5. TTL / hop limit ≤ 1 → ICMP time exceeded;
//! 6. MTU: the egress network's, against the packet, or for a GSO frame against one segment
//!    (`gso_size` plus the IP and TCP/UDP headers) → fragmentation needed / packet too big;
//! 7. next hop: the route's gateway or the destination itself, looked up in the egress
//!    network's neighbour table → [`Forward::Resolve`] when unknown, ICMP host unreachable
//!    when resolution failed;
//! 8. rewrite in place: MACs, TTL (IPv4 header checksum updated incrementally, RFC 1624) or hop
//!    limit. A GSO frame's header is the template of all its segments, so the same edit holds for
//!    each; the TCP/UDP partial checksum covers no field that changes.
//!
//! ICMP errors come from the ingress network's gateway, go back to the sender's MAC, follow RFC
//! 1812 / RFC 4443 on what may be reported, and spend a token of the ingress network's
//! [`RateLimiter`]. The router keeps no flow state: policy applies per direction, so two
//! networks that talk need both pairs allowed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use foldhash::fast::RandomState;
use hashbrown::HashMap;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use parking_lot::Mutex;
use vswitch_switch::packet::VNET_HDR_LEN;
use vswitch_switch::{Mac, NetId};

use crate::answer::{mac_at, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HDR_LEN};
use crate::checksum;
use crate::icmperr::{self, v4_not_a_host, IcmpError, RateLimiter};
use crate::lpm::{Lpm4, Lpm6, LpmError};
use crate::neigh::{NeighLearn, NeighLookup, NeighRow, NeighTable};
use crate::resolve;

/// Largest network id the router accepts (ids index a table; the switch hands out dense ones).
pub const MAX_NET_ID: NetId = 65535;
const IPV4_HDR_LEN: usize = 20;
const IPV6_HDR_LEN: usize = 40;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
/// ICMPv6 Neighbor Solicitation and Advertisement.
const ND_SOLICIT: u8 = 135;
const ND_ADVERT: u8 = 136;
/// virtio-net header: the ECN bit of `gso_type`, and the types (`VIRTIO_NET_HDR_GSO_*`).
const GSO_ECN: u8 = 0x80;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_UDP: u8 = 3;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal: $doc:literal,)*) => {
        /// Why the router dropped a frame without forwarding it or answering with an error. The
        /// names are what the counters print.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum DropReason {
            $(#[doc = $doc] $variant,)*
        }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            pub const COUNT: usize = Self::ALL.len();

            pub fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }
        }
    };
}

drop_reasons! {
    Malformed => "malformed": "truncated, inconsistent lengths, a bad IPv4 header checksum, or a virtio-net header that does not fit the packet",
    Unsupported => "unsupported": "not IPv4 or IPv6 (a VLAN tag included), or a GSO frame with IPv6 extension headers",
    NoNetwork => "no_network": "the ingress network has no L3 configuration",
    Martian => "martian": "an address that is never routed: unspecified, loopback, reserved, a multicast source, a directed broadcast",
    Scope => "scope": "a link-local source or destination, which never leaves its link",
    PolicyDenied => "policy_denied": "the ingress network may not reach the egress network",
    TtlExceeded => "ttl_exceeded": "TTL or hop limit expired; no error sent (RFC 1812/4443 forbid it for this packet, or no gateway address to send from)",
    NoRoute => "no_route": "no route to the destination; no error sent (as above)",
    TooBig => "too_big": "larger than the egress MTU; no error sent (as above)",
    HostUnreachable => "host_unreachable": "the next hop did not answer resolution; no error sent (as above)",
    WouldFragment => "would_fragment": "IPv4 without DF larger than the egress MTU: the router does not fragment",
    IcmpRateLimited => "icmp_rate_limited": "an ICMP error was due but the ingress network's error budget is spent",
    Unresolved => "unresolved": "the next hop's MAC is being resolved (a request went out less than a second ago)",
}

impl IcmpError {
    /// The drop counted when this error is due but may not be sent.
    fn unsent(self) -> DropReason {
        match self {
            IcmpError::TimeExceeded => DropReason::TtlExceeded,
            IcmpError::NetUnreachable => DropReason::NoRoute,
            IcmpError::HostUnreachable => DropReason::HostUnreachable,
            IcmpError::AdminProhibited => DropReason::PolicyDenied,
            IcmpError::TooBig { .. } => DropReason::TooBig,
        }
    }
}

/// What became of one frame given to [`L3::forward`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// Rewritten in place (source MAC: the egress network's gateway; destination MAC: the next
    /// hop; TTL or hop limit decremented): deliver it to `dst_mac` inside network `net`.
    Out { net: NetId, dst_mac: Mac },
    /// An ICMP error of `len` bytes (a bare Ethernet frame) is at the start of `err_out`: send it
    /// out of the port the frame came in on. The frame itself is dropped.
    Icmp { len: usize, error: IcmpError },
    /// The next hop `ip` in network `net` has no known MAC: send a resolution request
    /// ([`L3::resolve_request`] writes one) into `net`. The frame is dropped; count it.
    Resolve { net: NetId, ip: IpAddr },
    /// For the gateway itself (its address, a broadcast, a multicast group): the slow path's.
    Local,
    /// Out of every network: the NAT engine's (see [`NetworkL3::uplink`]), untouched.
    Uplink,
    /// Dropped without an answer.
    Drop(DropReason),
}

/// Where a route leads: out of network `net`, to the neighbour `via` or (None: a connected
/// route) to the destination itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteTarget {
    pub net: NetId,
    pub via: Option<IpAddr>,
}

/// One row of `route ls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRow {
    pub prefix: IpNet,
    pub target: RouteTarget,
    /// A network's own subnet, installed with the network.
    pub connected: bool,
}

/// A network as the router sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkL3 {
    /// The gateway's MAC: routed frames arrive addressed to it and leave from it.
    pub mac: Mac,
    /// Largest IP packet the network carries (the switch's `NetworkConfig::mtu`).
    pub mtu: u32,
    /// The gateway's IPv4 address and the subnet's prefix length (10.20.0.1/24): the subnet is
    /// the network's connected route.
    pub ipv4: Option<Ipv4Net>,
    /// The same for IPv6 (fd20::1/64).
    pub ipv6: Option<Ipv6Net>,
    /// `--internal`: never routes to another network nor is reached from one, whatever pairs
    /// are allowed.
    pub internal: bool,
    /// Destinations no route covers leave through the uplink (the NAT engine: the host and
    /// the world). Off: they are unreachable, as on an `--internal` network.
    pub uplink: bool,
    /// The NAT engine carries new TCP and UDP flows to the gateway's own address to the host's
    /// loopback (`host-loopback`); off, it refuses them. The router itself does not look: on a
    /// network with the uplink, TCP and UDP to the gateway's address (but DNS and DHCP, which the
    /// gateway serves) always go to the uplink, where they may also be a container's answers to
    /// published ports' clients that appear to come from the gateway (host-loopback or not).
    pub host_loopback: bool,
    /// A second address of the gateway where it serves DNS: on the subnet (slirp4netns's
    /// 10.0.2.3) or off it (pasta's link-local 169.254.1.1, reached through the gateway).
    /// Everything sent to it is the slow path's, never routed nor sent up the uplink.
    pub dns4: Option<Ipv4Addr>,
    /// The same for IPv6 (fd00::3).
    pub dns6: Option<Ipv6Addr>,
    /// An address that stands for the host itself (pasta's `--map-guest-addr`): with the uplink,
    /// everything sent to it goes there, link-local or not, and the NAT engine carries it to the
    /// host's own address (see `EngineNet::host_alias4`). Without the uplink it is ignored.
    pub host_alias4: Option<Ipv4Addr>,
    /// The same for IPv6.
    pub host_alias6: Option<Ipv6Addr>,
}

/// Why the router refused a configuration change; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum L3Error {
    #[error("network {0} has no L3 configuration")]
    UnknownNetwork(NetId),
    #[error("network id {0} is out of range (at most {MAX_NET_ID})")]
    NetworkId(NetId),
    #[error("MTU {mtu} is out of range ({min}..=65535)")]
    Mtu { mtu: u32, min: u32 },
    #[error("{0} is not a unicast MAC address")]
    Mac(Mac),
    #[error("{prefix} is already the subnet of network {net}")]
    SubnetInUse { prefix: IpNet, net: NetId },
    #[error("{0} is a network's subnet (a connected route): change the network instead")]
    Connected(IpNet),
    #[error("a route to {0} exists: remove it before making {0} a network's subnet")]
    RouteExists(IpNet),
    #[error("next hop {via} is not on network {net}'s subnet")]
    ViaNotOnLink { via: IpAddr, net: NetId },
    #[error("network {net} has no gateway address of the family of {prefix}")]
    NoGateway { prefix: IpNet, net: NetId },
    #[error("DNS address {dns} must be a host's address, neither the gateway's ({subnet}) nor that subnet's network or broadcast address")]
    DnsAddress { dns: IpAddr, subnet: IpNet },
    #[error("host alias {alias} must be a host's address, neither the gateway's nor its DNS address")]
    HostAlias { alias: IpAddr },
    #[error(transparent)]
    Lpm(#[from] LpmError),
}

/// Everything the control plane decides for routing, published whole by [`L3::store`]. Edits
/// are cheap (a route insert touches a few cache lines), so the control plane keeps one, edits
/// it, and publishes a clone, or lets [`L3::update`] do that.
#[derive(Debug, Clone, Default)]
pub struct L3Config {
    nets: BTreeMap<NetId, NetworkL3>,
    /// The route tables hold indexes into `targets`.
    fib4: Lpm4<u32>,
    fib6: Lpm6<u32>,
    targets: Targets,
    /// The subnets installed as connected routes, and their network.
    connected: BTreeMap<IpNet, NetId>,
    /// (from, to): `from` may route to `to`.
    allowed: BTreeSet<(NetId, NetId)>,
}

impl L3Config {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds network `net`, or replaces its settings (its old subnets' routes go, the new ones
    /// come; its other routes and pairs stay). Returns the old settings.
    pub fn set_network(&mut self, net: NetId, n: NetworkL3) -> Result<Option<NetworkL3>, L3Error> {
        if net > MAX_NET_ID {
            return Err(L3Error::NetworkId(net));
        }
        if n.mac.is_multicast() || n.mac.is_zero() {
            return Err(L3Error::Mac(n.mac));
        }
        let min = if n.ipv6.is_some() { 1280 } else { 68 };
        if n.mtu < min || n.mtu > 65535 {
            return Err(L3Error::Mtu { mtu: n.mtu, min });
        }
        check_dns(net, &n)?;
        check_host_alias(&n)?;
        let subnets = [n.ipv4.map(|a| IpNet::V4(a.trunc())), n.ipv6.map(|a| IpNet::V6(a.trunc()))];
        for p in subnets.into_iter().flatten() {
            match self.connected.get(&p) {
                Some(&other) if other != net => return Err(L3Error::SubnetInUse { prefix: p, net: other }),
                Some(_) => {}
                None if self.route(p).is_some() => return Err(L3Error::RouteExists(p)),
                None => {}
            }
        }
        let old = self.nets.insert(net, n);
        self.remove_connected(net);
        let target = RouteTarget { net, via: None };
        for p in subnets.into_iter().flatten() {
            // The prefix lengths come from valid `IpNet`s; only a full table can refuse them,
            // and a network's two subnets do not fill one.
            let _ = self.insert_route(p, target);
            self.connected.insert(p, net);
        }
        Ok(old)
    }

    /// Removes network `net` with its connected routes, the routes leading into it and the
    /// pairs naming it. Returns its settings.
    pub fn remove_network(&mut self, net: NetId) -> Option<NetworkL3> {
        let old = self.nets.remove(&net)?;
        self.remove_connected(net);
        let doomed: Vec<IpNet> = self.routes().into_iter().filter(|r| r.target.net == net).map(|r| r.prefix).collect();
        for p in doomed {
            self.delete_route(p);
        }
        self.allowed.retain(|&(from, to)| from != net && to != net);
        Some(old)
    }

    fn remove_connected(&mut self, net: NetId) {
        let mine: Vec<IpNet> = self.connected.iter().filter(|(_, &n)| n == net).map(|(p, _)| *p).collect();
        for p in mine {
            self.connected.remove(&p);
            self.delete_route(p);
        }
    }

    pub fn network(&self, net: NetId) -> Option<&NetworkL3> {
        self.nets.get(&net)
    }

    pub fn networks(&self) -> impl Iterator<Item = (NetId, &NetworkL3)> + '_ {
        self.nets.iter().map(|(id, n)| (*id, n))
    }

    /// Adds a route (host bits of `prefix` are ignored), or replaces the target of an existing
    /// one and returns the old target. The target network must exist with a gateway of the
    /// prefix's family, and `via`, if any, must be on its subnet (or IPv6 link-local).
    pub fn add_route(&mut self, prefix: IpNet, target: RouteTarget) -> Result<Option<RouteTarget>, L3Error> {
        let prefix = prefix.trunc();
        if self.connected.contains_key(&prefix) {
            return Err(L3Error::Connected(prefix));
        }
        let n = self.nets.get(&target.net).ok_or(L3Error::UnknownNetwork(target.net))?;
        let on_link = match (prefix, target.via) {
            (IpNet::V4(_), _) if n.ipv4.is_none() => return Err(L3Error::NoGateway { prefix, net: target.net }),
            (IpNet::V6(_), _) if n.ipv6.is_none() => return Err(L3Error::NoGateway { prefix, net: target.net }),
            (_, None) => true,
            (IpNet::V4(_), Some(IpAddr::V4(v))) => n.ipv4.is_some_and(|g| g.contains(&v) && g.addr() != v),
            (IpNet::V6(_), Some(IpAddr::V6(v))) => n.ipv6.is_some_and(|g| (g.contains(&v) || v.is_unicast_link_local()) && g.addr() != v),
            _ => false,
        };
        if let (false, Some(via)) = (on_link, target.via) {
            return Err(L3Error::ViaNotOnLink { via, net: target.net });
        }
        self.insert_route(prefix, target)
    }

    /// Removes a route; a connected route goes only with its network.
    pub fn remove_route(&mut self, prefix: IpNet) -> Result<Option<RouteTarget>, L3Error> {
        let prefix = prefix.trunc();
        if self.connected.contains_key(&prefix) {
            return Err(L3Error::Connected(prefix));
        }
        Ok(self.delete_route(prefix))
    }

    fn insert_route(&mut self, p: IpNet, t: RouteTarget) -> Result<Option<RouteTarget>, L3Error> {
        let i = self.targets.acquire(t);
        let old = match p {
            IpNet::V4(p) => self.fib4.insert(p.network().to_bits(), p.prefix_len(), i),
            IpNet::V6(p) => self.fib6.insert(p.network().to_bits(), p.prefix_len(), i),
        };
        match old {
            Ok(old) => Ok(old.and_then(|o| self.targets.release(o))),
            Err(e) => {
                self.targets.release(i);
                Err(e.into())
            }
        }
    }

    fn delete_route(&mut self, p: IpNet) -> Option<RouteTarget> {
        let i = match p {
            IpNet::V4(p) => self.fib4.remove(p.network().to_bits(), p.prefix_len()),
            IpNet::V6(p) => self.fib6.remove(p.network().to_bits(), p.prefix_len()),
        }?;
        self.targets.release(i)
    }

    /// The target of exactly `prefix`, if it is a route.
    pub fn route(&self, prefix: IpNet) -> Option<RouteTarget> {
        let i = match prefix {
            IpNet::V4(p) => self.fib4.get(p.network().to_bits(), p.prefix_len()),
            IpNet::V6(p) => self.fib6.get(p.network().to_bits(), p.prefix_len()),
        }?;
        self.targets.get(i)
    }

    /// The route `dst` takes (`ip route get`). As fast as the packet path's lookup.
    #[inline]
    pub fn lookup(&self, dst: IpAddr) -> Option<RouteTarget> {
        match dst {
            IpAddr::V4(a) => self.lookup_v4(a),
            IpAddr::V6(a) => self.lookup_v6(a),
        }
    }

    /// The route an IPv4 destination takes.
    #[inline]
    pub fn lookup_v4(&self, dst: Ipv4Addr) -> Option<RouteTarget> {
        self.targets.get(self.fib4.lookup(dst.to_bits())?)
    }

    /// The route an IPv6 destination takes.
    #[inline]
    pub fn lookup_v6(&self, dst: Ipv6Addr) -> Option<RouteTarget> {
        self.targets.get(self.fib6.lookup(dst.to_bits())?)
    }

    /// Every route, IPv4 first, each family by address then prefix length.
    pub fn routes(&self) -> Vec<RouteRow> {
        let t = |i: u32| self.targets.get(i);
        let v4 = self.fib4.iter().filter_map(|(a, l, i)| Some((IpNet::V4(Ipv4Net::new(Ipv4Addr::from_bits(a), l).ok()?), t(i)?)));
        let v6 = self.fib6.iter().filter_map(|(a, l, i)| Some((IpNet::V6(Ipv6Net::new(Ipv6Addr::from_bits(a), l).ok()?), t(i)?)));
        let mut rows: Vec<RouteRow> =
            v4.chain(v6).map(|(prefix, target)| RouteRow { prefix, target, connected: self.connected.contains_key(&prefix) }).collect();
        rows.sort_by_key(|r| r.prefix);
        rows
    }

    /// Routes of both families, connected ones included.
    pub fn route_count(&self) -> usize {
        self.fib4.len() + self.fib6.len()
    }

    /// Bytes the route tables have allocated.
    pub fn fib_memory_bytes(&self) -> usize {
        self.fib4.memory_bytes() + self.fib6.memory_bytes() + self.targets.memory_bytes()
    }

    /// Lets network `from` route to network `to` (one direction: allow both for two networks to
    /// talk). Neither may be internal for it to take effect; either may be added later.
    pub fn allow(&mut self, from: NetId, to: NetId) {
        self.allowed.insert((from, to));
    }

    /// Takes back [`L3Config::allow`]; returns whether the pair was allowed.
    pub fn disallow(&mut self, from: NetId, to: NetId) -> bool {
        self.allowed.remove(&(from, to))
    }

    /// Whether a packet from network `from` may be routed into network `to`.
    pub fn allows(&self, from: NetId, to: NetId) -> bool {
        if from == to {
            return self.nets.contains_key(&from);
        }
        let (Some(f), Some(t)) = (self.nets.get(&from), self.nets.get(&to)) else { return false };
        !f.internal && !t.internal && self.allowed.contains(&(from, to))
    }

    /// The pairs as set, internal networks and missing ones included.
    pub fn allowed_pairs(&self) -> impl Iterator<Item = (NetId, NetId)> + '_ {
        self.allowed.iter().copied()
    }
}

/// A DNS address may be on the subnet (containers ARP for it) or off it (they reach it through
/// the gateway); either way it must be a host's address that nothing else on the network claims:
/// not the gateway's own, which already answers for itself, nor the subnet's network or
/// broadcast address.
fn check_dns(net: NetId, n: &NetworkL3) -> Result<(), L3Error> {
    if let Some(d) = n.dns4 {
        let dns = IpAddr::V4(d);
        let Some(g) = n.ipv4 else { return Err(L3Error::NoGateway { prefix: IpNet::from(dns), net }) };
        if v4_not_a_host(d) || d == g.addr() || (g.contains(&d) && !v4_host_of(g, d)) {
            return Err(L3Error::DnsAddress { dns, subnet: IpNet::V4(g) });
        }
    }
    if let Some(d) = n.dns6 {
        let dns = IpAddr::V6(d);
        let Some(g) = n.ipv6 else { return Err(L3Error::NoGateway { prefix: IpNet::from(dns), net }) };
        // The subnet's first address is its Subnet-Router anycast address (RFC 4291 §2.6.1).
        if v6_not_a_host(d) || d == g.addr() || (g.prefix_len() < 127 && d == g.network()) {
            return Err(L3Error::DnsAddress { dns, subnet: IpNet::V6(g) });
        }
    }
    Ok(())
}

/// A host alias must be a host's address, and not one the gateway answers for itself: the
/// packet path would not know whether to answer or carry it to the host.
fn check_host_alias(n: &NetworkL3) -> Result<(), L3Error> {
    if let Some(a) = n.host_alias4 {
        if v4_not_a_host(a) || n.ipv4.is_some_and(|g| g.addr() == a) || n.dns4 == Some(a) {
            return Err(L3Error::HostAlias { alias: IpAddr::V4(a) });
        }
    }
    if let Some(a) = n.host_alias6 {
        if v6_not_a_host(a) || n.ipv6.is_some_and(|g| g.addr() == a) || n.dns6 == Some(a) {
            return Err(L3Error::HostAlias { alias: IpAddr::V6(a) });
        }
    }
    Ok(())
}

/// Whether no host can have the IPv6 address `a`: unspecified, loopback, multicast, IPv4-mapped.
fn v6_not_a_host(a: Ipv6Addr) -> bool {
    a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.to_ipv4_mapped().is_some()
}

/// Whether `a` is a host of the IPv4 subnet `g` other than its gateway `g.addr()`: /31 and /32
/// have no network or broadcast address (RFC 3021).
fn v4_host_of(g: Ipv4Net, a: Ipv4Addr) -> bool {
    g.contains(&a) && a != g.addr() && (g.prefix_len() >= 31 || (a != g.network() && a != g.broadcast()))
}

/// Route targets, each stored once: the route tables hold a 4-byte index instead of the
/// 24-byte target, so the last array a lookup reads stays small (a million routes: 4 MB, not 24)
/// and the targets themselves, a handful in practice, stay in cache.
#[derive(Debug, Clone, Default)]
struct Targets {
    list: Vec<RouteTarget>,
    refs: Vec<u32>,
    index: HashMap<RouteTarget, u32, RandomState>,
    free: Vec<u32>,
}

impl Targets {
    #[inline]
    fn get(&self, i: u32) -> Option<RouteTarget> {
        self.list.get(i as usize).copied()
    }

    /// The index of `t`, stored if new, with one more route using it.
    fn acquire(&mut self, t: RouteTarget) -> u32 {
        if let Some(&i) = self.index.get(&t) {
            self.refs[i as usize] += 1;
            return i;
        }
        let i = match self.free.pop() {
            Some(i) => {
                self.list[i as usize] = t;
                self.refs[i as usize] = 1;
                i
            }
            None => {
                self.list.push(t);
                self.refs.push(1);
                // At most one target per route, and routes are fewer than 2^31.
                (self.list.len() - 1) as u32
            }
        };
        self.index.insert(t, i);
        i
    }

    /// One route less uses target `i`; returns the target.
    fn release(&mut self, i: u32) -> Option<RouteTarget> {
        let t = self.get(i)?;
        let refs = &mut self.refs[i as usize];
        *refs -= 1;
        if *refs == 0 {
            self.index.remove(&t);
            self.free.push(i);
        }
        Some(t)
    }

    fn memory_bytes(&self) -> usize {
        self.list.capacity() * std::mem::size_of::<RouteTarget>()
            + self.refs.capacity() * 4
            + self.index.capacity() * 32
            + self.free.capacity() * 4
    }
}

/// What a network keeps across configuration swaps: its neighbours and its ICMP error budget.
#[derive(Debug, Default)]
struct NetState {
    neigh: NeighTable,
    icmp: RateLimiter,
}

/// A network as the packet path reads it.
#[derive(Debug)]
struct NetRt {
    id: NetId,
    mac: Mac,
    mtu: usize,
    ipv4: Option<Ipv4Net>,
    ipv6: Option<Ipv6Net>,
    dns4: Option<Ipv4Addr>,
    dns6: Option<Ipv6Addr>,
    /// None without the uplink, where the alias means nothing.
    host_alias4: Option<Ipv4Addr>,
    host_alias6: Option<Ipv6Addr>,
    uplink: bool,
    /// Networks this one may route to, besides itself; sorted.
    egress: Box<[NetId]>,
    state: Arc<NetState>,
}

impl NetRt {
    fn may_reach(&self, to: NetId) -> bool {
        to == self.id || self.egress.binary_search(&to).is_ok()
    }

    /// Whether `ip` can be a neighbour on this network: on a subnet (IPv6 link-local too), not
    /// the gateway, its DNS address nor the host alias, not the IPv4 subnet's network or
    /// broadcast address.
    fn on_link(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.ipv4.is_some_and(|g| v4_host_of(g, a)) && self.dns4 != Some(a) && self.host_alias4 != Some(a),
            IpAddr::V6(a) => {
                self.ipv6.is_some_and(|g| (g.contains(&a) || a.is_unicast_link_local()) && a != g.addr())
                    && self.dns6 != Some(a)
                    && self.host_alias6 != Some(a)
            }
        }
    }
}

/// One published configuration with its per-network state.
#[derive(Debug, Default)]
struct Live {
    config: Arc<L3Config>,
    /// Indexed by `NetId`.
    nets: Vec<Option<NetRt>>,
}

/// The router: configuration swapped whole, neighbour tables beside it. Shared by every worker
/// (`forward`), the slow path (`learn_*`) and the control plane (`store`, `update`, the rest).
#[derive(Debug, Default)]
pub struct L3 {
    live: ArcSwap<Live>,
    /// Serializes publishers so that none loses another's edit. The packet path never takes it.
    writer: Mutex<()>,
}

impl L3 {
    /// A router with no networks: every frame is `Drop(NoNetwork)`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes `config`. Networks that stay keep their neighbours and error budget; the
    /// state of networks that left is dropped.
    pub fn store(&self, config: L3Config) {
        let _w = self.writer.lock();
        self.publish(Arc::new(config));
    }

    /// Edits a copy of the current configuration and publishes it; returns what `edit` returns.
    /// The copy costs about 25 ms per million routes; batch many edits into one call.
    pub fn update<R>(&self, edit: impl FnOnce(&mut L3Config) -> R) -> R {
        let _w = self.writer.lock();
        let mut next = L3Config::clone(&self.live.load().config);
        let r = edit(&mut next);
        self.publish(Arc::new(next));
        r
    }

    /// The configuration now published.
    pub fn config(&self) -> Arc<L3Config> {
        self.live.load().config.clone()
    }

    fn publish(&self, config: Arc<L3Config>) {
        let old = self.live.load();
        let mut nets: Vec<Option<NetRt>> = Vec::new();
        for (&id, n) in &config.nets {
            let idx = id as usize;
            if nets.len() <= idx {
                nets.resize_with(idx + 1, || None);
            }
            let state = old.net(id).map(|o| o.state.clone()).unwrap_or_default();
            let egress = config
                .allowed
                .range((id, 0)..=(id, NetId::MAX))
                .map(|&(_, to)| to)
                .filter(|&to| to != id && config.allows(id, to))
                .collect();
            nets[idx] = Some(NetRt {
                id,
                mac: n.mac,
                mtu: n.mtu as usize,
                ipv4: n.ipv4,
                ipv6: n.ipv6,
                dns4: n.dns4,
                dns6: n.dns6,
                host_alias4: n.host_alias4.filter(|_| n.uplink && !n.internal),
                host_alias6: n.host_alias6.filter(|_| n.uplink && !n.internal),
                uplink: n.uplink && !n.internal,
                egress,
                state,
            });
        }
        self.live.store(Arc::new(Live { config, nets }));
    }

    /// Decides the fate of `wire` (`[virtio_net_hdr][Ethernet frame]`, addressed to network
    /// `in_net`'s gateway MAC) at time `now` (seconds), rewriting it in place when it is
    /// forwarded and writing any ICMP error into `err_out` ([`crate::ICMP_ERROR_BUF`] bytes hold
    /// the longest; a shorter buffer quotes less). Lock-free except for the neighbour table's
    /// read lock; never allocates, logs or panics.
    pub fn forward(&self, in_net: NetId, wire: &mut [u8], err_out: &mut [u8], now: u32) -> Forward {
        self.live.load().forward(in_net, wire, err_out, now)
    }

    /// Writes a resolution request for next hop `ip` of network `net` into `out` (a broadcast
    /// ARP request, or a Neighbor Solicitation to `ip`'s solicited-node group, from the
    /// gateway): a bare Ethernet frame to flood in `net`. Returns its length, or None when the
    /// network has no gateway address of that family or `out` is too short (86 bytes suffice).
    pub fn resolve_request(&self, net: NetId, ip: IpAddr, out: &mut [u8]) -> Option<usize> {
        let live = self.live.load();
        let n = live.net(net)?;
        match ip {
            IpAddr::V4(a) => resolve::write_arp_request(n.mac, n.ipv4?.addr(), a, out),
            IpAddr::V6(a) => resolve::write_neighbor_solicit(n.mac, n.ipv6?.addr(), a, out),
        }
    }

    /// Records that `ip` is at `mac` in network `net`, as the slow path saw in ARP or NDP at time
    /// `now`. None when `net` is unknown or `ip` is not a neighbour there (off its subnets, the
    /// gateway's own address).
    pub fn learn_neighbor(&self, net: NetId, ip: IpAddr, mac: Mac, now: u32) -> Option<NeighLearn> {
        let live = self.live.load();
        let n = live.net(net)?;
        n.on_link(ip).then(|| n.state.neigh.learn(ip, mac, now))
    }

    /// [`L3::learn_neighbor`] for whatever binding a bare Ethernet frame that reached the gateway
    /// announces (ARP requests and replies, Neighbor Solicitations and Advertisements).
    pub fn learn_from_frame(&self, net: NetId, eth: &[u8], now: u32) -> Option<NeighLearn> {
        let (ip, mac) = resolve::learnable(eth)?;
        self.learn_neighbor(net, ip, mac, now)
    }

    /// Pins `ip` to `mac` in network `net` (an endpoint's address): never aged, never relearned.
    pub fn set_neighbor_static(&self, net: NetId, ip: IpAddr, mac: Mac) -> Result<(), L3Error> {
        if mac.is_multicast() || mac.is_zero() {
            return Err(L3Error::Mac(mac));
        }
        let live = self.live.load();
        let n = live.net(net).ok_or(L3Error::UnknownNetwork(net))?;
        n.state.neigh.set_static(ip, mac);
        Ok(())
    }

    /// Forgets neighbour `ip` of network `net`, static or learned; returns whether it was known.
    pub fn remove_neighbor(&self, net: NetId, ip: IpAddr) -> bool {
        self.live.load().net(net).is_some_and(|n| n.state.neigh.remove(ip))
    }

    /// The neighbours of network `net` at time `now`, for `neigh show`; None for an unknown network.
    pub fn neighbors(&self, net: NetId, now: u32) -> Option<Vec<NeighRow>> {
        Some(self.live.load().net(net)?.state.neigh.rows(now))
    }

    /// Drops aged neighbours of every network (the slow path's timer calls it); returns how many.
    pub fn expire_neighbors(&self, now: u32) -> usize {
        self.live.load().nets.iter().flatten().map(|n| n.state.neigh.expire(now)).sum()
    }
}

/// The fields of a virtio-net header that routing reads.
#[derive(Debug, Clone, Copy)]
struct Gso {
    kind: u8,
    /// Payload bytes of each segment.
    size: usize,
}

/// The GSO request of a virtio-net header: None for a plain frame, Err for one no kernel sends.
fn parse_gso(vnet: &[u8]) -> Result<Option<Gso>, DropReason> {
    let kind = vnet.get(1).ok_or(DropReason::Malformed)? & !GSO_ECN;
    if kind == GSO_NONE {
        return Ok(None);
    }
    let size = vnet.get(4..6).map(|b| usize::from(u16::from_le_bytes([b[0], b[1]]))).ok_or(DropReason::Malformed)?;
    match kind {
        GSO_TCPV4 | GSO_UDP | GSO_TCPV6 | GSO_UDP_L4 if size > 0 => Ok(Some(Gso { kind, size })),
        _ => Err(DropReason::Malformed),
    }
}

/// Bytes of one segment of a GSO packet: `gso_size` plus the IP header (`l3`) and the TCP or
/// UDP header at the start of `l4`. Err when the header does not match the GSO type.
fn segment_len(gso: Gso, v6: bool, proto: u8, l3: usize, l4: &[u8]) -> Result<usize, DropReason> {
    let l4_len = match (gso.kind, v6, proto) {
        (GSO_TCPV4, false, PROTO_TCP) | (GSO_TCPV6, true, PROTO_TCP) => {
            let doff = usize::from(l4.get(12).ok_or(DropReason::Malformed)? >> 4) * 4;
            if doff < 20 || doff > l4.len() {
                return Err(DropReason::Malformed);
            }
            doff
        }
        (GSO_UDP | GSO_UDP_L4, _, PROTO_UDP) if l4.len() >= 8 => 8,
        (GSO_TCPV6 | GSO_UDP | GSO_UDP_L4, true, _) if proto != PROTO_TCP && proto != PROTO_UDP => return Err(DropReason::Unsupported),
        _ => return Err(DropReason::Malformed),
    };
    Ok(gso.size + l3 + l4_len)
}

/// RFC 1624 eqn. 3: the checksum `hc` after a 16-bit word of the data changed from `old` to `new`.
/// Whether a packet to the gateway's address goes on to the uplink (the NAT engine: the host's
/// loopback, published ports' flows): TCP and UDP, but not the services the gateway answers
/// itself (DNS on 53, DHCP on 67 and 547). `l4` is the transport header onward; IPv6 extension
/// headers are not looked through.
fn to_host(proto: u8, l4: &[u8]) -> bool {
    let Some(ports) = l4.first_chunk::<4>() else { return false };
    let dport = u16::from_be_bytes([ports[2], ports[3]]);
    match proto {
        6 => dport != 53,
        17 => !matches!(dport, 53 | 67 | 547),
        _ => false,
    }
}

fn checksum_adjust(hc: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!hc) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    // Two folds leave 16 bits.
    !(sum as u16)
}

impl Live {
    #[inline]
    fn net(&self, id: NetId) -> Option<&NetRt> {
        self.nets.get(id as usize)?.as_ref()
    }

    fn forward(&self, in_net: NetId, wire: &mut [u8], err: &mut [u8], now: u32) -> Forward {
        let Some(inn) = self.net(in_net) else { return Forward::Drop(DropReason::NoNetwork) };
        if wire.len() < VNET_HDR_LEN + ETH_HDR_LEN {
            return Forward::Drop(DropReason::Malformed);
        }
        let (vnet, frame) = wire.split_at_mut(VNET_HDR_LEN);
        let gso = match parse_gso(vnet) {
            Ok(g) => g,
            Err(r) => return Forward::Drop(r),
        };
        match u16::from_be_bytes([frame[12], frame[13]]) {
            ETHERTYPE_IPV4 => self.forward_v4(inn, gso, frame, err, now),
            ETHERTYPE_IPV6 => self.forward_v6(inn, gso, frame, err, now),
            _ => Forward::Drop(DropReason::Unsupported),
        }
    }

    fn forward_v4(&self, inn: &NetRt, gso: Option<Gso>, frame: &mut [u8], err: &mut [u8], now: u32) -> Forward {
        use DropReason::*;
        let ip = &frame[ETH_HDR_LEN..];
        let Some(h) = ip.first_chunk::<IPV4_HDR_LEN>() else { return Forward::Drop(Malformed) };
        let ihl = usize::from(h[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
        if h[0] >> 4 != 4 || ihl < IPV4_HDR_LEN || total < ihl || total > ip.len() || checksum::of(&ip[..ihl]) != 0 {
            return Forward::Drop(Malformed);
        }
        let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
        let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
        let (ttl, proto) = (h[8], h[9]);
        let flags = u16::from_be_bytes([h[6], h[7]]);
        let df = flags & 0x4000 != 0;
        if v4_not_a_host(src) {
            return Forward::Drop(Martian);
        }
        if inn.ipv4.is_some_and(|g| g.addr() == dst) {
            return if inn.uplink && to_host(proto, &ip[ihl.min(total)..total]) { Forward::Uplink } else { Forward::Local };
        }
        if inn.dns4 == Some(dst) {
            // Only the gateway answers there (DNS, pings); the host is at the gateway's address.
            // Before the scope check: the DNS address may be link-local (pasta's 169.254.1.1).
            return Forward::Local;
        }
        if inn.host_alias4 == Some(dst) {
            // The host itself, link-local or not (pasta's 169.254.1.2): the NAT engine's.
            return Forward::Uplink;
        }
        if dst.is_broadcast() || dst.is_multicast() {
            return Forward::Local;
        }
        if v4_not_a_host(dst) {
            return Forward::Drop(Martian);
        }
        if src.is_link_local() || dst.is_link_local() {
            return Forward::Drop(Scope);
        }
        let Some((route, out)) = self.config.lookup_v4(dst).and_then(|r| Some((r, self.net(r.net)?))) else {
            if inn.uplink {
                return Forward::Uplink;
            }
            return self.error_v4(inn, IcmpError::NetUnreachable, frame, err, now);
        };
        if !inn.may_reach(out.id) {
            return Forward::Drop(PolicyDenied);
        }
        if out.dns4 == Some(dst) {
            return Forward::Local;
        }
        if let Some(g) = out.ipv4 {
            if g.addr() == dst {
                return Forward::Local;
            }
            if g.prefix_len() < 31 && dst == g.broadcast() {
                return Forward::Drop(Martian);
            }
        }
        if ttl <= 1 {
            return self.error_v4(inn, IcmpError::TimeExceeded, frame, err, now);
        }
        let size = match gso {
            None => total,
            Some(g) => {
                if flags & 0x3fff != 0 {
                    return Forward::Drop(Malformed); // a fragment cannot be segmented
                }
                match segment_len(g, false, proto, ihl, &ip[ihl..total]) {
                    Ok(s) => s,
                    Err(r) => return Forward::Drop(r),
                }
            }
        };
        if size > out.mtu {
            return if df {
                // Below 65536: the MTU was checked when it was configured.
                self.error_v4(inn, IcmpError::TooBig { mtu: out.mtu as u32 }, frame, err, now)
            } else {
                Forward::Drop(WouldFragment)
            };
        }
        let next_hop = match route.via {
            None => dst,
            Some(IpAddr::V4(v)) => v,
            Some(IpAddr::V6(_)) => return self.error_v4(inn, IcmpError::NetUnreachable, frame, err, now),
        };
        let mac = match out.state.neigh.lookup(IpAddr::V4(next_hop), now) {
            NeighLookup::Found(mac) => mac,
            NeighLookup::NotFound => return Forward::Resolve { net: out.id, ip: IpAddr::V4(next_hop) },
            NeighLookup::Incomplete => return Forward::Drop(Unresolved),
            NeighLookup::Failed => return self.error_v4(inn, IcmpError::HostUnreachable, frame, err, now),
        };
        frame[0..6].copy_from_slice(&mac.0);
        frame[6..12].copy_from_slice(&out.mac.0);
        let ip = &mut frame[ETH_HDR_LEN..];
        let old = u16::from_be_bytes([ip[8], ip[9]]);
        ip[8] = ttl - 1;
        let new = u16::from_be_bytes([ip[8], ip[9]]);
        let c = checksum_adjust(u16::from_be_bytes([ip[10], ip[11]]), old, new);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        Forward::Out { net: out.id, dst_mac: mac }
    }

    fn forward_v6(&self, inn: &NetRt, gso: Option<Gso>, frame: &mut [u8], err: &mut [u8], now: u32) -> Forward {
        use DropReason::*;
        let ip = &frame[ETH_HDR_LEN..];
        let Some(h) = ip.first_chunk::<IPV6_HDR_LEN>() else { return Forward::Drop(Malformed) };
        let total = IPV6_HDR_LEN + usize::from(u16::from_be_bytes([h[4], h[5]]));
        if h[0] >> 4 != 6 || total > ip.len() {
            return Forward::Drop(Malformed);
        }
        let addr = |at: usize| {
            let mut a = [0u8; 16];
            a.copy_from_slice(&h[at..at + 16]);
            Ipv6Addr::from(a)
        };
        let (src, dst) = (addr(8), addr(24));
        let (next, hop_limit) = (h[6], h[7]);
        if src.is_multicast() || src.is_unspecified() || src.is_loopback() || src.to_ipv4_mapped().is_some() {
            return Forward::Drop(Martian);
        }
        if next == PROTO_ICMPV6 && hop_limit == 255 && matches!(ip[IPV6_HDR_LEN..total].first(), Some(&(ND_SOLICIT | ND_ADVERT))) {
            // Neighbor Discovery never crosses a router (a forwarded one would arrive with hop
            // limit 254 and be discarded, RFC 4861 §7.1), so one at the gateway's MAC is for the
            // gateway: a proxying gateway's unreachability probes are unicast to the address asked.
            return Forward::Local;
        }
        if inn.ipv6.is_some_and(|g| g.addr() == dst) {
            return if inn.uplink && to_host(next, &ip[IPV6_HDR_LEN..total]) { Forward::Uplink } else { Forward::Local };
        }
        if inn.dns6 == Some(dst) {
            return Forward::Local;
        }
        if inn.host_alias6 == Some(dst) {
            return Forward::Uplink;
        }
        if dst.is_multicast() || dst.is_unicast_link_local() {
            return Forward::Local;
        }
        if dst.is_unspecified() || dst.is_loopback() || dst.to_ipv4_mapped().is_some() {
            return Forward::Drop(Martian);
        }
        if src.is_unicast_link_local() {
            return Forward::Drop(Scope);
        }
        let Some((route, out)) = self.config.lookup_v6(dst).and_then(|r| Some((r, self.net(r.net)?))) else {
            if inn.uplink {
                return Forward::Uplink;
            }
            return self.error_v6(inn, IcmpError::NetUnreachable, frame, err, now);
        };
        if !inn.may_reach(out.id) {
            return Forward::Drop(PolicyDenied);
        }
        if out.ipv6.is_some_and(|g| g.addr() == dst) || out.dns6 == Some(dst) {
            return Forward::Local;
        }
        if hop_limit <= 1 {
            return self.error_v6(inn, IcmpError::TimeExceeded, frame, err, now);
        }
        let size = match gso {
            None => total,
            Some(g) => match segment_len(g, true, next, IPV6_HDR_LEN, &ip[IPV6_HDR_LEN..total]) {
                Ok(s) => s,
                Err(r) => return Forward::Drop(r),
            },
        };
        if size > out.mtu {
            return self.error_v6(inn, IcmpError::TooBig { mtu: out.mtu as u32 }, frame, err, now);
        }
        let next_hop = match route.via {
            None => dst,
            Some(IpAddr::V6(v)) => v,
            Some(IpAddr::V4(_)) => return self.error_v6(inn, IcmpError::NetUnreachable, frame, err, now),
        };
        let mac = match out.state.neigh.lookup(IpAddr::V6(next_hop), now) {
            NeighLookup::Found(mac) => mac,
            NeighLookup::NotFound => return Forward::Resolve { net: out.id, ip: IpAddr::V6(next_hop) },
            NeighLookup::Incomplete => return Forward::Drop(Unresolved),
            NeighLookup::Failed => return self.error_v6(inn, IcmpError::HostUnreachable, frame, err, now),
        };
        frame[0..6].copy_from_slice(&mac.0);
        frame[6..12].copy_from_slice(&out.mac.0);
        frame[ETH_HDR_LEN + 7] = hop_limit - 1;
        Forward::Out { net: out.id, dst_mac: mac }
    }

    /// Answers the IPv4 packet in `frame` with `error` if the rules and the budget allow.
    fn error_v4(&self, inn: &NetRt, error: IcmpError, frame: &[u8], err: &mut [u8], now: u32) -> Forward {
        let ip = &frame[ETH_HDR_LEN..];
        let Some(gw) = inn.ipv4 else { return Forward::Drop(error.unsent()) };
        if !icmperr::reportable_v4(ip) {
            return Forward::Drop(error.unsent());
        }
        if !inn.state.icmp.allow(now) {
            return Forward::Drop(DropReason::IcmpRateLimited);
        }
        match icmperr::write_v4(error, inn.mac, gw.addr(), mac_at(frame, 6), ip, err) {
            Some(len) => Forward::Icmp { len, error },
            None => Forward::Drop(error.unsent()),
        }
    }

    /// Answers the IPv6 packet in `frame` with `error` if the rules and the budget allow.
    fn error_v6(&self, inn: &NetRt, error: IcmpError, frame: &[u8], err: &mut [u8], now: u32) -> Forward {
        let ip = &frame[ETH_HDR_LEN..];
        let Some(gw) = inn.ipv6 else { return Forward::Drop(error.unsent()) };
        if !icmperr::reportable_v6(ip) {
            return Forward::Drop(error.unsent());
        }
        if !inn.state.icmp.allow(now) {
            return Forward::Drop(DropReason::IcmpRateLimited);
        }
        match icmperr::write_v6(error, inn.mac, gw.addr(), mac_at(frame, 6), ip, err) {
            Some(len) => Forward::Icmp { len, error },
            None => Forward::Drop(error.unsent()),
        }
    }
}

#[cfg(test)]
mod tests;
