//! The gateways of all networks, swapped whole on change, and the slow-path handler that answers for them.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use vswitch_switch::{Flood, Mac, NetId, PortId, SlowPathHandler};

use crate::answer::{answer, Answer, Reply, REPLY_BUF};
use crate::dhcp::{DhcpAnswer, DhcpServer, LeaseStore};
use crate::dhcp6::Dhcp6Server;
use crate::dnsgw::{parse_udp_query, write_udp_reply, DnsAction, DnsClient, DnsService, UdpParse, DNS_PORT};
use crate::forward::L3;
use crate::ra::{answer_link_local, answer_rs, build_unsolicited_ra, link_local_from_mac, RaConfig, RaTimer};
use crate::tcpgw::TcpGateway;

/// A network's gateway: the addresses the switch answers ARP, NDP and pings for, and its MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gateway {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub mac: Mac,
    /// A second address that answers ARP, pings and DNS (UDP and TCP) with the gateway's MAC,
    /// and nothing else: slirp4netns puts DNS at 10.0.2.3 beside the gateway's 10.0.2.2; pasta
    /// at 169.254.1.1, off the subnet, which containers reach through the gateway.
    pub dns4: Option<Ipv4Addr>,
    /// The same for IPv6 (Neighbor Solicitations, pings, DNS): fd00::3 beside fd00::2.
    pub dns6: Option<Ipv6Addr>,
    /// Proxy ARP and ND for the whole link, as pasta does: the container holds the host's own
    /// address and believes every other address of its subnet on-link, so the gateway must
    /// answer for all of them or nothing it sends there would reach the uplink. Not for the
    /// asker's own address (nor its duplicate address detection), nor for IPv6 link-local
    /// addresses other than the gateway's. Off: only the addresses above are answered.
    pub proxy_all: bool,
}

impl Gateway {
    /// The IPv4 addresses that answer ARP, pings and DNS: the gateway's own and the DNS address.
    #[inline]
    pub fn v4_addrs(&self) -> [Option<Ipv4Addr>; 2] {
        [self.ipv4, self.dns4]
    }

    /// The IPv6 addresses that answer Neighbor Solicitations, pings and DNS.
    #[inline]
    pub fn v6_addrs(&self) -> [Option<Ipv6Addr>; 2] {
        [self.ipv6, self.dns6]
    }
}

/// A snapshot of what the gateway services did, each frame counted exactly once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterCounters {
    /// ARP replies sent for a gateway's IPv4 address (or any address, with `proxy_all`).
    pub arp_replies: u64,
    /// ICMPv4 echo replies sent.
    pub icmp_echo_replies: u64,
    /// Neighbor Advertisements sent for a gateway's IPv6 address (or any address, with `proxy_all`).
    pub nd_adverts: u64,
    /// ICMPv6 echo replies sent.
    pub icmp6_echo_replies: u64,
    /// DNS frames handed to the DNS service: UDP queries and TCP segments to port 53.
    pub dns: u64,
    /// Frames dropped as truncated, inconsistent or with a bad checksum.
    pub malformed: u64,
    /// Well-formed frames these services do not answer, or in a network without a gateway.
    pub ignored: u64,
    /// Echo requests whose reply would not fit the reply buffer ([`REPLY_BUF`] bytes).
    pub too_big: u64,
    /// Router advertisements sent, solicited and periodic.
    pub router_adverts: u64,
    /// DHCP (v4 and v6) replies sent.
    pub dhcp_replies: u64,
    /// DHCP messages handled without a reply (release, decline, no address left, commit failed).
    pub dhcp_other: u64,
}

/// The gateway of every network, read lock-free by the slow path and replaced whole by the
/// control plane, so a reader never waits for a writer (aardvark-dns reloads the same way).
/// A frame queued for flooding: (network, port not to send to, frame).
type Announcement = (NetId, Option<PortId>, Vec<u8>);

/// Where the DHCP servers keep their leases: the control plane's, which persists each one
/// before it is acknowledged. Called on the slow-path thread.
pub trait Leases: Send + Sync + std::fmt::Debug {
    /// Runs `f` with network `net`'s IPv4 lease store.
    fn with_v4(&self, net: NetId, f: &mut dyn FnMut(&mut dyn LeaseStore<Ipv4Addr>));
    /// Runs `f` with network `net`'s IPv6 lease store.
    fn with_v6(&self, net: NetId, f: &mut dyn FnMut(&mut dyn LeaseStore<Ipv6Addr>));
    /// Wall-clock seconds: leases outlive the daemon, so their clock must too.
    fn wall_secs(&self) -> u64;
}

/// A network's DHCP servers.
#[derive(Debug, Default)]
struct DhcpServers {
    v4: Option<DhcpServer>,
    v6: Option<Dhcp6Server>,
}

#[derive(Debug)]
pub struct Gateways {
    table: ArcSwap<HashMap<NetId, Gateway>>,
    /// Serializes writers, so that two concurrent changes cannot each copy the old table and
    /// lose the other's edit. Readers never take it.
    writer: Mutex<()>,
    counters: Counters,
    /// Router advertisements per IPv6 network, with their timers (slow-path thread only).
    ra: Mutex<HashMap<NetId, (RaConfig, RaTimer)>>,
    /// Frames to flood at the next tick: (network, port not to send to, frame).
    announce: Mutex<Vec<Announcement>>,
    dhcp: Mutex<HashMap<NetId, DhcpServers>>,
    leases: Mutex<Option<Arc<dyn Leases>>>,
    /// The router whose neighbour tables learn from ARP and NDP seen here.
    l3: Mutex<Option<Arc<L3>>>,
    /// The data plane's clock at the last tick (handle() is not given one).
    now: AtomicU32,
    dns: Mutex<Option<Arc<dyn DnsService>>>,
    /// DNS over TCP, one endpoint per network that has had a connection, with the gateway it
    /// was made for (slow-path thread only).
    tcp: Mutex<HashMap<NetId, (Gateway, TcpGateway)>>,
    /// Milliseconds for the TCP endpoints' timers; the data plane's clock counts seconds.
    epoch: std::time::Instant,
}

/// DNS connections at once per network, and how long one may sit idle (RFC 7766 §6.2.3 asks
/// servers to close idle ones within seconds).
const DNS_TCP_CONNS: usize = 64;
const DNS_TCP_IDLE_MS: u64 = 10_000;

impl Default for Gateways {
    fn default() -> Self {
        Self {
            table: ArcSwap::default(),
            writer: Mutex::new(()),
            counters: Counters::default(),
            ra: Mutex::default(),
            announce: Mutex::default(),
            dhcp: Mutex::default(),
            leases: Mutex::default(),
            l3: Mutex::default(),
            now: AtomicU32::default(),
            dns: Mutex::default(),
            tcp: Mutex::default(),
            epoch: std::time::Instant::now(),
        }
    }
}

impl Gateways {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or replaces) the gateway of `net`.
    pub fn set(&self, net: NetId, gw: Gateway) {
        self.update(|t| {
            t.insert(net, gw);
        });
        log::debug!("gateway of network {net}: {gw:?}");
    }

    /// Removes the gateway of `net`; its frames are ignored from then on. Returns the old one.
    pub fn remove(&self, net: NetId) -> Option<Gateway> {
        let mut old = None;
        self.update(|t| old = t.remove(&net));
        if old.is_some() {
            log::debug!("gateway of network {net} removed");
        }
        old
    }

    /// The gateway of `net`, if it has one.
    /// Advertises `cfg` on `net` (IPv6 networks), at once and then on RFC 4861's schedule;
    /// None stops advertising.
    pub fn set_ra(&self, net: NetId, cfg: Option<RaConfig>, now: u32) {
        let mut ra = self.ra.lock();
        match cfg {
            Some(c) => {
                ra.insert(net, (c, RaTimer::new(u64::from(now))));
            }
            None => {
                ra.remove(&net);
            }
        }
    }

    /// Serves DHCPv4 and/or DHCPv6 on `net` (None and None: stops), with leases from the store
    /// given to [`Gateways::set_leases`].
    pub fn set_dhcp(&self, net: NetId, v4: Option<DhcpServer>, v6: Option<Dhcp6Server>) {
        let mut d = self.dhcp.lock();
        if v4.is_none() && v6.is_none() {
            d.remove(&net);
        } else {
            d.insert(net, DhcpServers { v4, v6 });
        }
    }

    /// Lets the router learn neighbours (IP → MAC) from the ARP and NDP frames punted here.
    pub fn set_l3(&self, l3: Arc<L3>) {
        *self.l3.lock() = Some(l3);
    }

    /// Serves DNS at the gateways of the networks `dns` says it serves, over UDP and TCP.
    pub fn set_dns(&self, dns: Arc<dyn DnsService>) {
        *self.dns.lock() = Some(dns);
    }

    pub fn set_leases(&self, leases: Arc<dyn Leases>) {
        *self.leases.lock() = Some(leases);
    }

    /// Queues a frame to flood in `net` (except on `except`) at the next tick.
    pub fn announce(&self, net: NetId, except: Option<PortId>, frame: Vec<u8>) {
        self.announce.lock().push((net, except, frame));
    }

    pub fn get(&self, net: NetId) -> Option<Gateway> {
        self.table.load().get(&net).copied()
    }

    /// The counters so far (each read on its own; they need not agree to the frame).
    pub fn counters(&self) -> RouterCounters {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RouterCounters {
            arp_replies: get(&c.arp_replies),
            icmp_echo_replies: get(&c.icmp_echo_replies),
            nd_adverts: get(&c.nd_adverts),
            icmp6_echo_replies: get(&c.icmp6_echo_replies),
            malformed: get(&c.malformed),
            ignored: get(&c.ignored),
            too_big: get(&c.too_big),
            dns: get(&c.dns),
            router_adverts: get(&c.router_adverts),
            dhcp_replies: get(&c.dhcp_replies),
            dhcp_other: get(&c.dhcp_other),
        }
    }

    /// Copies the table, edits the copy and publishes it: the control plane pays the copy (a
    /// few networks), the packet path never waits.
    fn update(&self, edit: impl FnOnce(&mut HashMap<NetId, Gateway>)) {
        let _w = self.writer.lock();
        let mut next = HashMap::clone(&self.table.load());
        edit(&mut next);
        self.table.store(Arc::new(next));
    }
}

impl SlowPathHandler for Gateways {
    fn handle(&self, net: NetId, ingress: PortId, eth: &[u8], tx: &mut dyn FnMut(PortId, &[u8])) {
        if let Some(l3) = self.l3.lock().as_ref() {
            l3.learn_from_frame(net, eth, self.now.load(Ordering::Relaxed));
        }
        // Copy the gateway out so the table's guard is not held while the reply is sent.
        let Some(gw) = self.get(net) else {
            bump(&self.counters.ignored);
            return;
        };
        let mut out = [0u8; REPLY_BUF];
        let c = &self.counters;
        match answer(&gw, eth, &mut out) {
            Answer::Reply { kind, len } => {
                bump(match kind {
                    Reply::Arp => &c.arp_replies,
                    Reply::IcmpEcho => &c.icmp_echo_replies,
                    Reply::NeighborAdvert => &c.nd_adverts,
                    Reply::Icmp6Echo => &c.icmp6_echo_replies,
                });
                tx(ingress, &out[..len]);
            }
            // Counted, not logged: a storm of bad frames must not become a storm of log lines.
            Answer::Malformed => bump(&c.malformed),
            Answer::Ignored => match self.answer_v6_link(net, gw, eth, &mut out).or_else(|| self.answer_dhcp(net, eth, &mut out)) {
                Some((kind, len)) => {
                    bump(kind);
                    if len > 0 {
                        tx(ingress, &out[..len]);
                    }
                }
                None => bump(self.answer_dns(net, ingress, gw, eth, tx).unwrap_or(&c.ignored)),
            },
            Answer::TooBig => bump(&c.too_big),
        }
    }

    fn tick_in(&self) -> Option<std::time::Duration> {
        let now = self.now_ms();
        let at = self.tcp.lock().values_mut().filter_map(|(_, t)| t.next_poll_ms(now)).min()?;
        Some(std::time::Duration::from_millis(at.saturating_sub(now)))
    }

    fn tick(&self, now: u32, flood: Flood<'_>, tx: &mut dyn FnMut(PortId, &[u8])) {
        if self.now.swap(now, Ordering::Relaxed) != now {
            if let Some(l3) = self.l3.lock().as_ref() {
                l3.expire_neighbors(now);
            }
        }
        for (net, except, frame) in std::mem::take(&mut *self.announce.lock()) {
            flood(net, except, &frame);
        }
        self.tick_dns(tx);
        let mut out = [0u8; REPLY_BUF];
        let mut ra = self.ra.lock();
        for (net, (cfg, timer)) in ra.iter_mut() {
            // The jitter RFC 4861 asks for; it need not be random in any stronger sense.
            let jitter = (now ^ net.wrapping_mul(0x9e37_79b9)).wrapping_mul(2_654_435_761);
            if timer.poll(u64::from(now), jitter) {
                if let Some(len) = self.get(*net).and_then(|gw| build_unsolicited_ra(&mut out, gw.mac, cfg)) {
                    bump(&self.counters.router_adverts);
                    flood(*net, None, &out[..len]);
                }
            }
        }
    }
}

impl Gateways {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// DNS queries to the gateway, over UDP and TCP. Some(counter) when the frame was DNS.
    fn answer_dns(&self, net: NetId, ingress: PortId, gw: Gateway, eth: &[u8], tx: &mut dyn FnMut(PortId, &[u8])) -> Option<&AtomicU64> {
        let dns = self.dns.lock().clone()?;
        if !dns.serves(net) {
            return None;
        }
        match parse_udp_query(eth, &gw.v4_addrs(), &gw.v6_addrs()) {
            UdpParse::Query(q) => {
                let client = DnsClient { net, port: ingress, mac: q.src_mac, addr: q.client, server: q.server, tcp: None };
                let mut msg = Vec::new();
                if dns.query(&client, q.payload, &mut msg) == DnsAction::Reply {
                    send_udp(gw.mac, &client, &msg, tx);
                }
                return Some(&self.counters.dns);
            }
            UdpParse::Malformed => return Some(&self.counters.malformed),
            UdpParse::NotDns => {}
        }
        if !TcpGateway::wants_frame(eth, &gw.v4_addrs(), &gw.v6_addrs(), DNS_PORT) {
            return None;
        }
        let now = self.now_ms();
        let mut tcp = self.tcp.lock();
        // An endpoint made for other addresses (the gateway was changed) would refuse the frame.
        if tcp.get(&net).is_some_and(|(made_for, _)| *made_for != gw) {
            tcp.remove(&net);
        }
        let (_, t) = tcp
            .entry(net)
            .or_insert_with(|| (gw, TcpGateway::new(gw.mac, &gw.v4_addrs(), &gw.v6_addrs(), DNS_PORT, DNS_TCP_CONNS, DNS_TCP_IDLE_MS)));
        t.input(eth, ingress, now);
        serve_tcp(net, t, &*dns, now, tx);
        Some(&self.counters.dns)
    }

    /// Sends the forwarded answers that came back, runs the TCP endpoints' timers, and drops
    /// the endpoints of networks that no longer serve DNS or whose gateway changed.
    fn tick_dns(&self, tx: &mut dyn FnMut(PortId, &[u8])) {
        let Some(dns) = self.dns.lock().clone() else { return };
        let now = self.now_ms();
        let mut tcp = self.tcp.lock();
        tcp.retain(|net, (made_for, _)| dns.serves(*net) && self.get(*net) == Some(*made_for));
        dns.drain_completed(&mut |client, msg| match client.tcp {
            Some(conn) => {
                if let Some((_, t)) = tcp.get_mut(&client.net) {
                    t.reply(conn, msg);
                }
            }
            None => {
                if let Some(gw) = self.get(client.net) {
                    send_udp(gw.mac, client, msg, tx);
                }
            }
        });
        for (net, (_, t)) in tcp.iter_mut() {
            serve_tcp(*net, t, &*dns, now, tx);
        }
    }

    /// DHCPv4 and DHCPv6 for a network that serves them. Some((counter, len)) when the frame
    /// was DHCP (len 0: handled, nothing to send, such as a release or a failed commit).
    fn answer_dhcp(&self, net: NetId, eth: &[u8], out: &mut [u8]) -> Option<(&AtomicU64, usize)> {
        let leases = self.leases.lock().clone()?;
        let servers = self.dhcp.lock();
        let s = servers.get(&net)?;
        let now = leases.wall_secs();
        let c = &self.counters;
        if let Some(v4) = &s.v4 {
            let mut a = DhcpAnswer::NotDhcp;
            leases.with_v4(net, &mut |st| a = v4.handle(eth, now, st, out));
            match a {
                DhcpAnswer::NotDhcp => {}
                DhcpAnswer::Reply { len, .. } => return Some((&c.dhcp_replies, len)),
                DhcpAnswer::Malformed => return Some((&c.malformed, 0)),
                _ => return Some((&c.dhcp_other, 0)),
            }
        }
        if let Some(v6) = &s.v6 {
            let mut a = DhcpAnswer::NotDhcp;
            leases.with_v6(net, &mut |st| a = v6.handle(eth, now, st, out));
            match a {
                DhcpAnswer::NotDhcp => {}
                DhcpAnswer::Reply { len, .. } => return Some((&c.dhcp_replies, len)),
                DhcpAnswer::Malformed => return Some((&c.malformed, 0)),
                _ => return Some((&c.dhcp_other, 0)),
            }
        }
        None
    }

    /// What IPv6 networks need beyond the gateway's global address: router solicitations, and
    /// neighbour solicitations and echo for the gateway's link-local address (the next hop
    /// SLAAC hosts use). Returns the counter to bump and the reply's length.
    fn answer_v6_link(&self, net: NetId, gw: Gateway, eth: &[u8], out: &mut [u8]) -> Option<(&AtomicU64, usize)> {
        let cfg = self.ra.lock().get(&net).map(|(c, _)| *c)?;
        if let Some(len) = answer_rs(eth, gw.mac, &cfg, out) {
            return Some((&self.counters.router_adverts, len));
        }
        match answer_link_local(eth, gw.mac, link_local_from_mac(gw.mac), out) {
            Answer::Reply { kind: Reply::NeighborAdvert, len } => Some((&self.counters.nd_adverts, len)),
            Answer::Reply { kind: Reply::Icmp6Echo, len } => Some((&self.counters.icmp6_echo_replies, len)),
            _ => None,
        }
    }
}

/// Hands the DNS service every message read from `t`'s connections and writes back the answers
/// it has at once, until the endpoint has nothing more to say.
fn serve_tcp(net: NetId, t: &mut TcpGateway, dns: &dyn DnsService, now: u64, tx: &mut dyn FnMut(PortId, &[u8])) {
    let mut msgs = Vec::new();
    loop {
        t.poll(now, &mut |conn, m| msgs.push((conn, m.to_vec())), tx);
        if msgs.is_empty() {
            return;
        }
        let mut out = Vec::new();
        for (conn, m) in msgs.drain(..) {
            let Some(peer) = t.peer(conn) else { continue };
            let client = DnsClient { net, port: peer.port, mac: peer.mac, addr: peer.remote, server: peer.local, tcp: Some(conn) };
            match dns.query(&client, &m, &mut out) {
                DnsAction::Reply => {
                    t.reply(conn, &out);
                }
                // Answered later through drain_completed.
                DnsAction::Pending => {}
                DnsAction::Drop => {
                    t.abandon(conn);
                }
            }
        }
    }
}

fn send_udp(gw_mac: vswitch_switch::Mac, client: &DnsClient, msg: &[u8], tx: &mut dyn FnMut(PortId, &[u8])) {
    let mut frame = Vec::with_capacity(msg.len() + 62);
    if write_udp_reply(&mut frame, gw_mac, client.mac, client.server, client.addr, msg).is_some() {
        tx(client.port, &frame);
    }
}

/// The live counters behind [`RouterCounters`]; only the slow-path thread writes them.
#[derive(Debug, Default)]
struct Counters {
    arp_replies: AtomicU64,
    icmp_echo_replies: AtomicU64,
    nd_adverts: AtomicU64,
    icmp6_echo_replies: AtomicU64,
    malformed: AtomicU64,
    ignored: AtomicU64,
    too_big: AtomicU64,
    dns: AtomicU64,
    router_adverts: AtomicU64,
    dhcp_replies: AtomicU64,
    dhcp_other: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::ETH_HDR_LEN;
    use crate::fixtures::*;
    use std::net::{IpAddr, SocketAddr};

    /// Feeds one frame to `g` as if it arrived on port 7 of network 1; returns what was sent.
    fn feed(g: &Gateways, net: NetId, eth: &[u8]) -> Vec<(PortId, Vec<u8>)> {
        let mut sent = Vec::new();
        g.handle(net, 7, eth, &mut |port, frame| sent.push((port, frame.to_vec())));
        sent
    }

    fn total(c: RouterCounters) -> u64 {
        c.arp_replies
            + c.icmp_echo_replies
            + c.nd_adverts
            + c.icmp6_echo_replies
            + c.malformed
            + c.ignored
            + c.too_big
            + c.dns
            + c.router_adverts
            + c.dhcp_replies
            + c.dhcp_other
    }

    #[test]
    fn set_get_remove() {
        let g = Gateways::new();
        assert_eq!(g.get(1), None);
        g.set(1, gw());
        assert_eq!(g.get(1), Some(gw()));
        let mut other = gw();
        other.ipv6 = None;
        g.set(1, other);
        g.set(2, gw());
        assert_eq!((g.get(1), g.get(2)), (Some(other), Some(gw())));
        assert_eq!(g.remove(1), Some(other));
        assert_eq!(g.remove(1), None);
        assert_eq!((g.get(1), g.get(2)), (None, Some(gw())));
    }

    #[test]
    fn concurrent_writers_lose_no_update() {
        let g = Arc::new(Gateways::new());
        let writers: Vec<_> = (0..4u32)
            .map(|t| {
                let g = Arc::clone(&g);
                std::thread::spawn(move || (0..50).for_each(|i| g.set(t * 100 + i, gw())))
            })
            .collect();
        writers.into_iter().for_each(|w| w.join().unwrap());
        assert_eq!(g.table.load().len(), 200);
    }

    #[test]
    fn replies_leave_by_the_ingress_port_and_are_counted_by_kind() {
        let g = Gateways::new();
        g.set(1, gw());
        assert_eq!(feed(&g, 1, &ARP_REQUEST), vec![(7, ARP_REPLY.to_vec())]);
        assert_eq!(feed(&g, 1, &ECHO_REQUEST), vec![(7, ECHO_REPLY.to_vec())]);
        assert_eq!(feed(&g, 1, &NS), vec![(7, NA.to_vec())]);
        assert_eq!(feed(&g, 1, &ECHO6_REQUEST), vec![(7, ECHO6_REPLY.to_vec())]);
        assert_eq!(feed(&g, 1, &ARP_REQUEST[..20]), vec![]);
        assert_eq!(feed(&g, 1, &echo_request_with(REPLY_BUF)), vec![]);
        assert_eq!(feed(&g, 2, &ARP_REQUEST), vec![], "network 2 has no gateway");
        assert_eq!(
            g.counters(),
            RouterCounters {
                arp_replies: 1,
                icmp_echo_replies: 1,
                nd_adverts: 1,
                icmp6_echo_replies: 1,
                malformed: 1,
                ignored: 1,
                too_big: 1,
                dns: 0,
                router_adverts: 0,
                dhcp_replies: 0,
                dhcp_other: 0,
            }
        );
    }

    #[test]
    fn advertises_answers_solicitations_and_floods_announcements() {
        let g = Gateways::new();
        g.set(1, gw());
        let cfg = RaConfig::new("fd20::".parse().unwrap(), 64);
        g.set_ra(1, Some(cfg), 100);
        let mut flooded = Vec::new();
        g.tick(100, &mut |net, except, f| flooded.push((net, except, f.to_vec())), &mut |_, _| ());
        assert_eq!(flooded.len(), 1, "the first advertisement goes out at once");
        assert_eq!(flooded[0].2[54], 134, "an RA");
        flooded.clear();
        g.tick(100, &mut |net, except, f| flooded.push((net, except, f.to_vec())), &mut |_, _| ());
        assert!(flooded.is_empty(), "not again in the same second");
        g.announce(1, Some(3), vec![1, 2, 3]);
        g.tick(101, &mut |net, except, f| flooded.push((net, except, f.to_vec())), &mut |_, _| ());
        assert!(flooded.contains(&(1, Some(3), vec![1, 2, 3])));
        assert_eq!(g.counters().router_adverts, 1);
        g.set_ra(1, None, 102);
        flooded.clear();
        g.tick(10_000, &mut |net, except, f| flooded.push((net, except, f.to_vec())), &mut |_, _| ());
        assert!(flooded.is_empty(), "advertising stopped");
    }

    #[test]
    fn works_as_the_switchs_handler() {
        let g = Arc::new(Gateways::new());
        g.set(3, gw());
        let h: Arc<dyn SlowPathHandler> = g.clone();
        let mut sent = 0;
        h.handle(3, 1, &ARP_REQUEST, &mut |_, _| sent += 1);
        assert_eq!((sent, g.counters().arp_replies), (1, 1));
    }

    #[test]
    fn random_and_mutated_frames_never_panic_and_are_each_counted_once() {
        let g = Gateways::new();
        g.set(1, gw());
        let seeds: [&[u8]; 4] = [&ARP_REQUEST, &ECHO_REQUEST, &NS, &ECHO6_REQUEST];
        let ethertypes = [[0x08, 0x06], [0x08, 0x00], [0x86, 0xdd]];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut replies = 0u64;
        const FRAMES: u64 = 20_000;
        for i in 0..FRAMES {
            let f: Vec<u8> = if i % 2 == 0 {
                // Pure garbage behind a plausible Ethernet header, so the L3 parsers are reached.
                let len = rng.below(200);
                let mut f: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if len >= ETH_HDR_LEN {
                    f[6] &= 0xfe;
                    f[12..14].copy_from_slice(&ethertypes[rng.below(3)]);
                }
                f
            } else {
                // A valid request with a few bytes changed and perhaps cut short: deeper paths.
                let mut f = seeds[rng.below(seeds.len())].to_vec();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(f.len());
                    f[at] = rng.next() as u8;
                }
                if rng.below(4) == 0 {
                    f.truncate(rng.below(f.len() + 1));
                }
                if rng.below(2) == 0 && f.len() > 20 && f[12..14] != [0x08, 0x06] {
                    // Repair the checksums half the time, or nearly every mutation stops there.
                    repair(&mut f);
                }
                f
            };
            for (port, reply) in feed(&g, 1, &f) {
                replies += 1;
                assert_eq!(port, 7);
                assert!(reply.len() >= 42 && reply.len() <= REPLY_BUF);
                assert_eq!(reply[6..12], GW_MAC.0, "replies come from the gateway's MAC");
                assert!(checksums_valid(&reply), "reply to {f:02x?}");
            }
        }
        let c = g.counters();
        assert_eq!(total(c), FRAMES);
        assert_eq!(c.arp_replies + c.icmp_echo_replies + c.nd_adverts + c.icmp6_echo_replies, replies);
        assert!(replies > 100 && c.malformed > 1000 && c.ignored > 1000, "{c:?}");
    }

    /// A DNS service that answers every query at once, and notes the address each was sent to.
    #[derive(Debug, Default)]
    struct Answers {
        servers: Mutex<Vec<IpAddr>>,
    }

    impl DnsService for Answers {
        fn serves(&self, _: NetId) -> bool {
            true
        }

        fn query(&self, client: &DnsClient, msg: &[u8], out: &mut Vec<u8>) -> DnsAction {
            self.servers.lock().push(client.server);
            out.clear();
            out.extend_from_slice(b"answer to ");
            out.extend_from_slice(msg);
            DnsAction::Reply
        }

        fn drain_completed(&self, _: &mut dyn FnMut(&DnsClient, &[u8])) {}
    }

    /// A DNS query over UDP from the client's port 53 to `server`:53: the reply writer's frame
    /// with the roles swapped (dnsgw's tests check that writer independently).
    fn udp_query(client: IpAddr, server: IpAddr) -> Vec<u8> {
        let mut f = Vec::new();
        write_udp_reply(&mut f, CLIENT_MAC, GW_MAC, client, SocketAddr::new(server, DNS_PORT), b"question").unwrap();
        f
    }

    /// A TCP SYN from the client, 172.17.0.2:40000, to `dst`:53.
    fn syn4(dst: Ipv4Addr) -> Vec<u8> {
        use crate::checksum;
        let mut f = vec![0u8; ETH_HDR_LEN + 40];
        crate::answer::write_eth(&mut f, GW_MAC, CLIENT_MAC, 0x0800);
        let ip = &mut f[ETH_HDR_LEN..ETH_HDR_LEN + 20];
        ip[0] = 0x45;
        ip[3] = 40;
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[172, 17, 0, 2]);
        ip[16..20].copy_from_slice(&dst.octets());
        let c = checksum::of(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let pseudo = checksum::add(checksum::add(0, &f[ETH_HDR_LEN + 12..ETH_HDR_LEN + 20]), &[0, 6]) + 20;
        let tcp = &mut f[ETH_HDR_LEN + 20..];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&DNS_PORT.to_be_bytes());
        tcp[7] = 1; // sequence number
        tcp[12] = 5 << 4;
        tcp[13] = 0x02; // SYN
        tcp[14..16].copy_from_slice(&[0xff, 0xff]);
        let c = checksum::finish(checksum::add(pseudo, tcp));
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        f
    }

    #[test]
    fn dns_over_udp_to_the_dns_address_is_answered_from_it() {
        let g = Gateways::new();
        let dns = Arc::new(Answers::default());
        g.set_dns(dns.clone());
        g.set(1, gw_with_dns());
        let client4: IpAddr = "172.17.0.2".parse().unwrap();
        let client6: IpAddr = "fd00::2".parse().unwrap();
        let cases = [(client4, "172.17.0.3"), (client6, "fd00::3"), (client4, "172.17.0.1"), (client6, "fd00::1")];
        for (client, server) in cases {
            let server: IpAddr = server.parse().unwrap();
            let sent = feed(&g, 1, &udp_query(client, server));
            assert_eq!(sent.len(), 1, "{server}");
            let (port, r) = &sent[0];
            assert_eq!(*port, 7);
            assert_eq!(r[6..12], GW_MAC.0, "from the gateway's MAC");
            let (src, dst, udp) = match (server, &r[ETH_HDR_LEN..]) {
                (IpAddr::V4(_), ip) => (&ip[12..16], &ip[16..20], &ip[20..]),
                (IpAddr::V6(_), ip) => (&ip[8..24], &ip[24..40], &ip[40..]),
            };
            let octets = |a: IpAddr| match a {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            assert_eq!((src, dst), (&octets(server)[..], &octets(client)[..]), "from the address asked");
            assert_eq!(udp[0..2], DNS_PORT.to_be_bytes());
            assert!(udp.ends_with(b"answer to question"));
        }
        assert_eq!(*dns.servers.lock(), cases.map(|(_, s)| s.parse::<IpAddr>().unwrap()));
        assert_eq!(g.counters().dns, 4);
        // Without DNS addresses the gateway does not answer for them.
        g.set(1, gw());
        assert!(feed(&g, 1, &udp_query(client4, "172.17.0.3".parse().unwrap())).is_empty());
        assert_eq!(g.counters().dns, 4);
    }

    #[test]
    fn dns_over_tcp_to_the_dns_address_is_accepted_from_it_even_after_a_change() {
        let g = Gateways::new();
        g.set_dns(Arc::new(Answers::default()));
        let syn_ack_from = |sent: &[(PortId, Vec<u8>)]| {
            let [(7, f)] = sent else { panic!("{sent:02x?}") };
            assert_eq!(f[ETH_HDR_LEN + 20 + 13], 0x12, "SYN-ACK");
            Ipv4Addr::new(f[26], f[27], f[28], f[29])
        };
        g.set(1, gw());
        assert_eq!(syn_ack_from(&feed(&g, 1, &syn4(Ipv4Addr::new(172, 17, 0, 1)))), Ipv4Addr::new(172, 17, 0, 1));
        assert!(feed(&g, 1, &syn4(Ipv4Addr::new(172, 17, 0, 3))).is_empty(), "not a DNS address yet");
        // The endpoint made for the old gateway gives way to one that listens at 172.17.0.3 too.
        g.set(1, gw_with_dns());
        assert_eq!(syn_ack_from(&feed(&g, 1, &syn4(Ipv4Addr::new(172, 17, 0, 3)))), Ipv4Addr::new(172, 17, 0, 3));
        assert!(feed(&g, 1, &syn4(Ipv4Addr::new(172, 17, 0, 9))).is_empty(), "nor any other address");
        assert_eq!(g.counters().dns, 2);
    }

    #[test]
    fn dns_at_a_link_local_address_off_the_subnet_is_answered_from_it() {
        let g = Gateways::new();
        let dns = Arc::new(Answers::default());
        g.set_dns(dns.clone());
        // pasta's --dns-forward: 169.254.1.1, reached through the gateway.
        let server4 = Ipv4Addr::new(169, 254, 1, 1);
        let server6: Ipv6Addr = "fe80::53".parse().unwrap();
        g.set(1, Gateway { dns4: Some(server4), dns6: Some(server6), proxy_all: true, ..gw() });
        let client4: IpAddr = "172.17.0.2".parse().unwrap();
        let sent = feed(&g, 1, &udp_query(client4, IpAddr::V4(server4)));
        let [(7, r)] = &sent[..] else { panic!("{sent:02x?}") };
        assert_eq!(r[ETH_HDR_LEN + 12..ETH_HDR_LEN + 20], [169, 254, 1, 1, 172, 17, 0, 2], "from the address asked");
        assert!(r.ends_with(b"answer to question"));
        let sent = feed(&g, 1, &udp_query("fd00::2".parse().unwrap(), IpAddr::V6(server6)));
        let [(7, r)] = &sent[..] else { panic!("{sent:02x?}") };
        assert_eq!(r[ETH_HDR_LEN + 8..ETH_HDR_LEN + 24], server6.octets());
        let sent = feed(&g, 1, &syn4(server4));
        let [(7, f)] = &sent[..] else { panic!("{sent:02x?}") };
        assert_eq!(f[ETH_HDR_LEN + 20 + 13], 0x12, "SYN-ACK");
        assert_eq!(f[ETH_HDR_LEN + 12..ETH_HDR_LEN + 16], server4.octets());
        assert_eq!(*dns.servers.lock(), [IpAddr::V4(server4), IpAddr::V6(server6)]);
        assert_eq!(g.counters().dns, 3);
    }

    #[test]
    fn a_proxying_gateway_answers_arp_and_nd_for_other_addresses_and_counts_them() {
        let g = Gateways::new();
        g.set(1, Gateway { proxy_all: true, ..gw() });
        let mut arp = ARP_REQUEST;
        arp[41] = 9; // who has 172.17.0.9?
        let sent = feed(&g, 1, &arp);
        let [(7, r)] = &sent[..] else { panic!("{sent:02x?}") };
        assert_eq!((&r[22..28], &r[28..32]), (&GW_MAC.0[..], &[172, 17, 0, 9][..]));
        let mut ns = NS.to_vec();
        ns[5] = 9; // to ff02::1:ff00:9, for fd00::9
        ns[53] = 9;
        ns[77] = 9;
        fix_checksums(&mut ns);
        let sent = feed(&g, 1, &ns);
        let [(7, r)] = &sent[..] else { panic!("{sent:02x?}") };
        assert_eq!((r[54], r[77], &r[80..86]), (136, 9, &GW_MAC.0[..]), "an advertisement for fd00::9 at the gateway's MAC");
        let c = g.counters();
        assert_eq!((c.arp_replies, c.nd_adverts, total(c)), (1, 1, 2));
        g.set(1, gw());
        assert!(feed(&g, 1, &arp).is_empty() && feed(&g, 1, &ns).is_empty(), "not without proxy_all");
    }

    /// Makes the checksums of a mutated IP frame right again where its lengths allow it.
    fn repair(f: &mut [u8]) {
        let ip_ok = match f[12..14] {
            [0x08, 0x00] => {
                let ihl = usize::from(f[14] & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
                ihl >= 20 && total >= ihl + 4 && 14 + total <= f.len()
            }
            [0x86, 0xdd] => {
                let len = usize::from(u16::from_be_bytes([f[18], f[19]]));
                len >= 4 && 54 + len <= f.len()
            }
            _ => false,
        };
        if ip_ok {
            fix_checksums(f);
        }
    }
}
