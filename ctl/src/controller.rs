//! The network controller: applies requests to the model, the store and the data plane, in
//! that order of checks and the reverse order of effects, so a refused request changes nothing
//! and an acknowledged one is on disk.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_json::{json, Value};
use vswitch_dns::NamesBuilder;
use vswitch_router::{
    gratuitous_arp, unsolicited_na, Dhcp6Config, Dhcp6Server, DhcpConfig, DhcpServer, Gateway, Gateways, L3Config, NetworkL3, RaConfig,
    RouteTarget, L3, UNSOLICITED_NA_LEN,
};
use vswitch_switch::port::{Port, Tap};
use vswitch_switch::{Dataplane, Mac, NetId, NetworkConfig, PortId};

use crate::api_types::{ConnectReq, CreateNetworkReq, DisconnectReq};
use crate::dns::{Dns, NetDns};
use crate::error::ApiError;
use crate::ipam;
use crate::leases::{LeaseDb, Pool};
use crate::model::{new_id, opt, Driver, Endpoint, IpamConfig, Network, Sandbox, State, UserRoute, STATE_VERSION};
use crate::ports::PortMapping;
use crate::provision::{self, TapSpec};
use crate::resolvconf;
use crate::store::Store;
use vswitch_nat::slirp::{Engine, EngineNet, NsSockets, PortForward, PublishError, Splice, SpliceTo};

/// What the user asked of a new endpoint beyond its addresses.
#[derive(Debug)]
struct EpOpts {
    name: Option<String>,
    mac: Option<Mac>,
    aliases: Vec<String>,
    dhcp: bool,
    ports: Vec<PortMapping>,
}

/// The addresses IPAM gave a new endpoint.
#[derive(Debug, Clone, Copy, Default)]
struct Addrs {
    v4: Option<(Ipv4Addr, u8)>,
    v6: Option<(Ipv6Addr, u8)>,
}

impl Addrs {
    #[allow(clippy::too_many_arguments)]
    fn endpoint(
        self,
        net: &Network,
        sandbox_id: Option<String>,
        name: String,
        ifname: String,
        veth: bool,
        mac: Option<Mac>,
        aliases: Vec<String>,
    ) -> Endpoint {
        let mac = mac.unwrap_or_else(|| match self.v4 {
            Some((a, _)) => Mac::from_ipv4(a),
            None => {
                let r: [u8; 4] = rand::random();
                Mac([0x02, 0x42, r[0], r[1], r[2], r[3]])
            }
        });
        Endpoint {
            id: new_id(),
            network_id: net.id.clone(),
            sandbox_id,
            name,
            ifname,
            veth,
            mac,
            ipv4: self.v4.map(|a| a.0),
            prefix: self.v4.map_or(0, |a| a.1),
            ipv6: self.v6.map(|a| a.0),
            prefix6: self.v6.map_or(0, |a| a.1),
            aliases,
            dhcp: false,
            ports: Vec::new(),
        }
    }
}

/// What the data plane holds for an attached endpoint.
#[derive(Debug)]
struct Attached {
    port: PortId,
    /// Kept so disconnect can clear the TAP's persistent flag.
    tap: Option<Arc<Tap>>,
}

#[derive(Debug)]
pub struct Controller {
    state: State,
    store: Store,
    dp: Arc<Dataplane>,
    gateways: Arc<Gateways>,
    nets: HashMap<String, NetId>,
    attached: HashMap<String, Attached>,
    leases: Arc<LeaseDb>,
    l3: Arc<L3>,
    dns: Arc<Dns>,
    engine: Arc<Engine>,
    /// Whether published TCP ports' clients on the host's loopback are spliced into the
    /// container's namespace (`vswitchd --splice-loopback`).
    splice: bool,
    /// Each endpoint's forwards in the engine, and the last forward id given out.
    published: HashMap<String, Vec<u64>>,
    next_forward: u64,
}

/// The slirp engine, and how the controller publishes ports through it.
#[derive(Debug, Clone)]
pub struct Nat {
    pub engine: Arc<Engine>,
    /// Published TCP ports' clients on the host's loopback are spliced into the container's
    /// namespace (see `vswitch_nat::slirp::Splice`; the service sees them on its loopback)
    /// instead of framed (from the gateway's address).
    pub splice: bool,
}

const DEFAULT_MTU: u32 = 1500;
const DEFAULT_AGING: u32 = 300;
const DEFAULT_MAC_LIMIT: u32 = 1024;

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn parse_u32_opt(
    options: &BTreeMap<String, String>,
    key: &str,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, ApiError> {
    match options.get(key) {
        None => Ok(default),
        Some(v) => match v.parse::<u32>() {
            Ok(0) if key == opt::MTU => Ok(default),
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "option {key}={v:?} is invalid: expected an integer from {} to {}",
                range.start(),
                range.end()
            ))),
        },
    }
}

impl Controller {
    /// Loads the state (creating the predefined networks on a first start), programs the data
    /// plane and re-attaches every endpoint whose sandbox still exists.
    pub fn start(
        store: Store,
        dp: Arc<Dataplane>,
        gateways: Arc<Gateways>,
        leases: Arc<LeaseDb>,
        l3: Arc<L3>,
        dns: Arc<Dns>,
        nat: Nat,
    ) -> Result<Self, ApiError> {
        let loaded = store.load()?;
        let first = loaded.is_none();
        let mut c = Controller {
            state: loaded.unwrap_or_default(),
            store,
            dp,
            gateways,
            nets: HashMap::new(),
            attached: HashMap::new(),
            leases,
            l3,
            dns,
            engine: nat.engine,
            splice: nat.splice,
            published: HashMap::new(),
            next_forward: 0,
        };
        c.state.version = STATE_VERSION;
        if first {
            c.state.networks = predefined();
        }
        for n in c.state.networks.clone() {
            c.program_network(&n)?;
        }
        let mut changed = first;
        for ep in c.state.endpoints.clone() {
            match c.reattach(&ep) {
                Ok(true) => {
                    let mut e = ep.clone();
                    if let Err(err) = c.publish_ports(&mut e, None) {
                        log::warn!("endpoint {} on {}: its ports are not published: {err}", ep.name, c.net_name(&ep.network_id));
                    }
                }
                Ok(false) => {
                    log::warn!("endpoint {} ({}) on {}: its sandbox is gone; removing it", ep.name, ep.ifname, c.net_name(&ep.network_id));
                    c.forget_endpoint(&ep.id);
                    changed = true;
                }
                Err(e) => log::warn!("endpoint {} ({}): cannot re-attach: {e}; it stays detached", ep.name, ep.ifname),
            }
        }
        if changed {
            c.store.save(&c.state)?;
        }
        c.sync_derived();
        Ok(c)
    }

    /// Brings what is derived from the model up to date after any change of networks,
    /// endpoints or routes: the router's configuration and neighbours, the DHCP reservations.
    fn sync_derived(&self) {
        self.sync_l3();
        self.sync_pools();
        self.sync_dns();
        self.sync_engine();
    }

    /// The networks whose containers reach the host and the world through the slirp engine.
    fn sync_engine(&self) {
        let nets = self
            .state
            .networks
            .iter()
            .filter(|n| n.uplink())
            .filter_map(|n| {
                let nid = *self.nets.get(&n.id)?;
                Some((
                    nid,
                    EngineNet {
                        mac: n.gateway_mac(),
                        v4: n.gateway4(),
                        v6: n.gateway6(),
                        host_loopback: n.host_loopback(),
                        mtu: n.mtu,
                        outbound4: None,
                        outbound6: None,
                        host_alias4: None,
                        host_alias6: None,
                    },
                ))
            })
            .collect();
        self.engine.set_networks(nets);
    }

    /// Connection tracking's flows (`conntrack ls`), named by network.
    pub fn conntrack(&self) -> Value {
        let by_nid: HashMap<NetId, &str> =
            self.state.networks.iter().filter_map(|n| self.nets.get(&n.id).map(|&id| (id, n.name.as_str()))).collect();
        let rows: Vec<Value> = self
            .engine
            .flows()
            .iter()
            .map(|f| {
                let r = &f.row;
                json!({
                    "Network": by_nid.get(&f.net).copied().unwrap_or("?"),
                    "Proto": r.proto.name(),
                    "Source": r.src.to_string(),
                    "Destination": r.dst.to_string(),
                    "State": r.state.name(),
                    "AgeMs": r.age_ms,
                    "ExpiresInMs": r.expires_in_ms,
                    "Packets": r.packets,
                    "Bytes": r.bytes,
                })
            })
            .collect();
        Value::Array(rows)
    }

    /// Closes every flow (`conntrack flush`): their host sockets are released.
    pub fn conntrack_flush(&self) {
        self.engine.flush();
    }

    /// The DNS names of every DNS-enabled network, published whole, and the resolv.conf of
    /// each named namespace pointed at its networks' gateway.
    fn sync_dns(&self) {
        let mut b = NamesBuilder::default();
        let mut nets = HashMap::new();
        for n in self.state.networks.iter().filter(|n| n.dns_enabled()) {
            let Some(&nid) = self.nets.get(&n.id) else { continue };
            b.network(nid, &n.name);
            nets.insert(nid, NetDns::new(n.dns_servers.clone(), n.mtu));
        }
        for e in &self.state.endpoints {
            let Some(&nid) = self.nets.get(&e.network_id) else { continue };
            b.endpoint(nid, e.sandbox_id.as_deref().unwrap_or(&e.id), &e.name, &e.aliases, e.ipv4, e.ipv6);
        }
        self.dns.publish(b.build(), nets);
        let wanted: Vec<(String, String)> = self
            .state
            .sandboxes
            .iter()
            .filter_map(|sb| {
                let name = resolvconf::netns_name(&sb.netns)?;
                let nets: Vec<&Network> = self
                    .state
                    .endpoints
                    .iter()
                    .filter(|e| e.sandbox_id.as_deref() == Some(&sb.id))
                    .filter_map(|e| self.network_by_id(&e.network_id).ok())
                    .filter(|n| n.dns_enabled())
                    .collect();
                let server = nets.iter().find_map(|n| n.gateway4().map(IpAddr::V4).or(n.gateway6().map(IpAddr::V6)))?;
                Some((name.to_string(), resolvconf::render(self.store.dir(), server, nets.iter().map(|n| n.name.as_str()))))
            })
            .collect();
        resolvconf::sync(self.store.dir(), &wanted);
    }

    /// The router's whole configuration, rebuilt from the model and published at once:
    /// connected routes, the pairs of networks allowed to route (`route-to`, both ways), user
    /// routes, and every endpoint's address as a static neighbour.
    fn sync_l3(&self) {
        let cfg = match self.l3_config(&self.state.routes) {
            Ok(c) => c,
            Err(e) => {
                log::error!("router configuration refused: {e}; keeping the previous one");
                return;
            }
        };
        self.l3.store(cfg);
        for e in &self.state.endpoints {
            let Some(&nid) = self.nets.get(&e.network_id) else { continue };
            for ip in e.ipv4.map(IpAddr::V4).into_iter().chain(e.ipv6.map(IpAddr::V6)) {
                let _ = self.l3.set_neighbor_static(nid, ip, e.mac);
            }
        }
    }

    fn l3_config(&self, routes: &[UserRoute]) -> Result<L3Config, ApiError> {
        let bad = |e: vswitch_router::L3Error| ApiError::bad_request(e.to_string());
        let mut cfg = L3Config::new();
        for n in &self.state.networks {
            let Some(&nid) = self.nets.get(&n.id) else { continue };
            let net4 = n.v4().and_then(|c| match (c.gateway, c.subnet) {
                (IpAddr::V4(g), IpNet::V4(s)) => Ipv4Net::new(g, s.prefix_len()).ok(),
                _ => None,
            });
            let net6 = n.v6().and_then(|c| match (c.gateway, c.subnet) {
                (IpAddr::V6(g), IpNet::V6(s)) => Ipv6Net::new(g, s.prefix_len()).ok(),
                _ => None,
            });
            cfg.set_network(
                nid,
                NetworkL3 {
                    mac: n.gateway_mac(),
                    mtu: n.mtu,
                    ipv4: net4,
                    ipv6: net6,
                    internal: n.internal,
                    uplink: n.uplink(),
                    host_loopback: n.host_loopback(),
                    dns4: None,
                    dns6: None,
                    host_alias4: None,
                    host_alias6: None,
                },
            )
            .map_err(bad)?;
        }
        for n in &self.state.networks {
            for other in &n.route_to {
                if let (Some(&a), Some(&b)) = (self.nets.get(&n.id), self.nets.get(other)) {
                    cfg.allow(a, b);
                    cfg.allow(b, a);
                }
            }
        }
        for r in routes {
            let Some(&nid) = self.nets.get(&r.network_id) else { continue };
            cfg.add_route(r.dst, RouteTarget { net: nid, via: Some(r.via) }).map_err(bad)?;
        }
        Ok(cfg)
    }

    /// Routes as `route ls` shows them.
    pub fn routes(&self) -> Value {
        let cfg = self.l3.config();
        let by_nid: HashMap<NetId, &Network> = self.state.networks.iter().filter_map(|n| self.nets.get(&n.id).map(|&id| (id, n))).collect();
        let rows: Vec<Value> = cfg
            .routes()
            .iter()
            .map(|r| {
                let from: Vec<String> = by_nid
                    .iter()
                    .filter(|(&id, _)| id != r.target.net && cfg.allows(id, r.target.net))
                    .map(|(_, n)| n.name.clone())
                    .collect();
                json!({
                    "Destination": r.prefix.to_string(),
                    "Network": by_nid.get(&r.target.net).map(|n| n.name.clone()),
                    "Via": r.target.via.map(|v| v.to_string()),
                    "Kind": if r.connected { "connected" } else { "user" },
                    "ReachableFrom": if from.is_empty() { "-".to_string() } else { from.join(",") },
                })
            })
            .collect();
        Value::Array(rows)
    }

    /// Adds a route through `via`, a host on one of the networks.
    pub fn add_route(&mut self, dst: &str, via: &str) -> Result<(), ApiError> {
        let dst: IpNet =
            dst.parse().map_err(|_| ApiError::bad_request(format!("invalid destination {dst:?}: expected a CIDR like 192.168.50.0/24")))?;
        let via: IpAddr = via.parse().map_err(|_| ApiError::bad_request(format!("invalid next hop {via:?}: expected an IP address")))?;
        let dst = dst.trunc();
        if self.state.routes.iter().any(|r| r.dst == dst) {
            return Err(ApiError::conflict(format!("a route to {dst} exists: remove it first")));
        }
        let net = self
            .state
            .networks
            .iter()
            .find(|n| n.driver == Driver::Bridge && n.ipam.iter().any(|c| c.subnet.contains(&via)))
            .ok_or_else(|| ApiError::bad_request(format!("next hop {via} is on no network's subnet")))?;
        let mut routes = self.state.routes.clone();
        routes.push(UserRoute { dst, via, network_id: net.id.clone() });
        // Validate against the router before anything changes.
        self.l3_config(&routes)?;
        let before = std::mem::replace(&mut self.state.routes, routes);
        if let Err(e) = self.store.save(&self.state) {
            self.state.routes = before;
            return Err(e.into());
        }
        self.sync_l3();
        Ok(())
    }

    pub fn remove_route(&mut self, dst: &str) -> Result<(), ApiError> {
        let dst: IpNet = dst.parse().map_err(|_| ApiError::bad_request(format!("invalid destination {dst:?}: expected a CIDR")))?;
        let dst = dst.trunc();
        if !self.state.routes.iter().any(|r| r.dst == dst) {
            return Err(ApiError::not_found(format!("no route to {dst} was added (a network's own subnet is removed with the network)")));
        }
        let before = self.state.routes.clone();
        self.state.routes.retain(|r| r.dst != dst);
        if let Err(e) = self.store.save(&self.state) {
            self.state.routes = before;
            return Err(e.into());
        }
        self.sync_l3();
        Ok(())
    }

    /// The gateway's neighbour cache of one network or all.
    pub fn neigh(&self, spec: Option<&str>) -> Result<Value, ApiError> {
        let only = spec.map(|s| self.find_network(s).map(|n| n.id.clone())).transpose()?;
        let now = self.dp.now();
        let mut rows = Vec::new();
        for n in &self.state.networks {
            if only.as_ref().is_some_and(|o| *o != n.id) {
                continue;
            }
            let Some(&nid) = self.nets.get(&n.id) else { continue };
            for r in self.l3.neighbors(nid, now).unwrap_or_default() {
                rows.push(json!({
                    "Network": n.name,
                    "IP": r.ip.to_string(),
                    "MAC": r.mac.map(|m| m.to_string()),
                    "State": r.state.name(),
                    "Age": r.age,
                }));
            }
        }
        Ok(Value::Array(rows))
    }

    /// Tells the DHCP servers' lease store which addresses belong to endpoints.
    fn sync_pools(&self) {
        for n in &self.state.networks {
            let Some(&nid) = self.nets.get(&n.id) else { continue };
            let mut pool = Pool { network_id: n.id.clone(), v4: n.v4().cloned(), v6: n.v6().cloned(), ..Default::default() };
            for e in self.state.endpoints.iter().filter(|e| e.network_id == n.id) {
                pool.reserved.insert(e.mac, (e.ipv4, e.ipv6));
                pool.taken.extend(e.ipv4.map(IpAddr::V4));
                pool.taken.extend(e.ipv6.map(IpAddr::V6));
            }
            self.leases.set_pool(nid, Some(pool));
        }
    }

    fn net_name(&self, id: &str) -> String {
        self.state.networks.iter().find(|n| n.id == id).map_or_else(|| id.to_string(), |n| n.name.clone())
    }

    fn program_network(&mut self, n: &Network) -> Result<(), ApiError> {
        if n.driver != Driver::Bridge {
            return Ok(());
        }
        let cfg = NetworkConfig { aging_secs: n.aging_secs, mac_limit: n.mac_limit, mtu: n.mtu, gateway_mac: Some(n.gateway_mac()) };
        let id = self.dp.add_network(cfg).map_err(|e| ApiError::internal(e.to_string()))?;
        self.gateways
            .set(id, Gateway { ipv4: n.gateway4(), ipv6: n.gateway6(), mac: n.gateway_mac(), dns4: None, dns6: None, proxy_all: false });
        // IPv6 networks advertise their prefix, so SLAAC hosts configure themselves.
        let ra = n.v6().and_then(|c| match c.subnet {
            IpNet::V6(p) => {
                let mut ra = RaConfig::new(p.network(), p.prefix_len());
                ra.mtu = n.mtu;
                ra.autonomous = p.prefix_len() == 64;
                Some(ra)
            }
            IpNet::V4(_) => None,
        });
        self.gateways.set_ra(id, ra, self.dp.now());
        // Every network serves DHCP, for clients that ask instead of being configured
        // (`connect --dhcp`, VMs behind a TAP or a veth), like libvirt's networks.
        let v4 = n.v4().and_then(|c| match (c.subnet, c.gateway) {
            (IpNet::V4(sub), IpAddr::V4(gw)) => {
                let mut cfg = DhcpConfig::new(n.gateway_mac(), gw, sub.netmask());
                cfg.mtu = u16::try_from(n.mtu).ok();
                DhcpServer::new(cfg).map_err(|e| log::warn!("network {}: no DHCPv4: {e}", n.name)).ok()
            }
            _ => None,
        });
        let v6 = n.v6().and_then(|c| match c.subnet {
            IpNet::V6(sub) => Dhcp6Server::new(Dhcp6Config::new(n.gateway_mac(), sub.network(), sub.prefix_len()))
                .map_err(|e| log::warn!("network {}: no DHCPv6: {e}", n.name))
                .ok(),
            IpNet::V4(_) => None,
        });
        self.gateways.set_dhcp(id, v4, v6);
        self.nets.insert(n.id.clone(), id);
        Ok(())
    }

    /// Re-attaches an endpoint after a restart. Ok(false): its sandbox no longer exists.
    fn reattach(&mut self, ep: &Endpoint) -> Result<bool, ApiError> {
        let net = self.network_by_id(&ep.network_id)?.clone();
        if ep.veth {
            let port = provision::open_veth(&ep.ifname, self.dp.workers())?;
            self.attach_port(ep, &net, Arc::new(port), None)?;
            return Ok(true);
        }
        let sb = self.sandbox(ep)?.clone();
        if !provision::same_namespace(&sb.netns, sb.dev, sb.ino) {
            return Ok(false);
        }
        // Should the TAP have to be re-created, it gets the default route it had: the
        // sandbox's first endpoint is the one that installed it.
        let first = self.state.endpoints.iter().find(|e| e.sandbox_id == ep.sandbox_id).is_some_and(|e| e.id == ep.id);
        let spec = self.tap_spec(ep, &net, first);
        let (tap, created) = provision::ensure_tap(&sb.netns, spec, false)?;
        if created {
            log::info!("endpoint {} ({}): the TAP was gone from its sandbox; re-created it", ep.name, ep.ifname);
        }
        let tap = Arc::new(tap);
        self.attach_port(ep, &net, tap.clone(), Some(tap))?;
        Ok(true)
    }

    fn attach_port(&mut self, ep: &Endpoint, net: &Network, port: Arc<dyn Port>, tap: Option<Arc<Tap>>) -> Result<(), ApiError> {
        let nid = *self.nets.get(&net.id).ok_or_else(|| ApiError::internal("network not in the data plane"))?;
        let statics: &[Mac] = if ep.veth { &[] } else { std::slice::from_ref(&ep.mac) };
        let pid = self.dp.add_port(nid, port, statics).map_err(|e| match e {
            vswitch_switch::DpError::MacInUse(_) => ApiError::conflict(e.to_string()),
            _ => ApiError::internal(e.to_string()),
        })?;
        self.attached.insert(ep.id.clone(), Attached { port: pid, tap });
        // Tell the others on the network at once where this address lives now (a peer may
        // hold a stale MAC for it from an endpoint that had it before). Only for interfaces we
        // configured: a veth's far end has a MAC of its own, and a DHCP client has no address yet.
        if ep.veth || ep.dhcp {
            return Ok(());
        }
        let mut buf = [0u8; UNSOLICITED_NA_LEN];
        if let Some(n) = ep.ipv4.and_then(|a| gratuitous_arp(ep.mac, a, &mut buf)) {
            self.gateways.announce(nid, Some(pid), buf[..n].to_vec());
        }
        if let Some(n) = ep.ipv6.and_then(|a| unsolicited_na(ep.mac, a, &mut buf)) {
            self.gateways.announce(nid, Some(pid), buf[..n].to_vec());
        }
        Ok(())
    }

    fn tap_spec(&self, ep: &Endpoint, net: &Network, default_route: bool) -> TapSpec {
        // A DHCP endpoint's addresses are reserved for it, but its client configures them.
        let default_route = default_route && !ep.dhcp;
        let ep = &Endpoint { ipv4: ep.ipv4.filter(|_| !ep.dhcp), ipv6: ep.ipv6.filter(|_| !ep.dhcp), ..ep.clone() };
        TapSpec {
            ifname: ep.ifname.clone(),
            queues: self.dp.workers(),
            mtu: net.mtu,
            mac: Some(ep.mac),
            addr: ep.ipv4.map(|a| (a, ep.prefix)),
            addr6: ep.ipv6.map(|a| (a, ep.prefix6)),
            default_via: if default_route && !net.internal { net.gateway4() } else { None },
            default_via6: if default_route && !net.internal { net.gateway6() } else { None },
        }
    }

    fn sandbox(&self, ep: &Endpoint) -> Result<&Sandbox, ApiError> {
        let sid = ep.sandbox_id.as_deref().unwrap_or_default();
        self.state
            .sandboxes
            .iter()
            .find(|s| s.id == sid)
            .ok_or_else(|| ApiError::internal(format!("endpoint {} has no sandbox record", ep.id)))
    }

    fn network_by_id(&self, id: &str) -> Result<&Network, ApiError> {
        self.state.networks.iter().find(|n| n.id == id).ok_or_else(|| ApiError::internal(format!("no network {id}")))
    }

    /// Finds a network by full ID, then exact name, then unique ID prefix (Docker's order).
    pub fn find_network(&self, spec: &str) -> Result<&Network, ApiError> {
        let nets = &self.state.networks;
        if let Some(n) = nets.iter().find(|n| n.id == spec).or_else(|| nets.iter().find(|n| n.name == spec)) {
            return Ok(n);
        }
        let matches: Vec<_> = if spec.is_empty() { vec![] } else { nets.iter().filter(|n| n.id.starts_with(spec)).collect() };
        match matches.as_slice() {
            [n] => Ok(n),
            [] => Err(ApiError::not_found(format!("network {spec} not found"))),
            _ => Err(ApiError::bad_request(format!(
                "network {spec} is ambiguous ({} matches): give more of the ID or the name",
                matches.len()
            ))),
        }
    }

    pub fn networks(&self) -> &[Network] {
        &self.state.networks
    }

    pub fn create_network(&mut self, req: CreateNetworkReq) -> Result<Network, ApiError> {
        let name = req.name.trim().to_string();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) || name.starts_with(['.', '-']) {
            return Err(ApiError::bad_request(format!(
                "invalid network name {:?}: use letters, digits, '_', '.', '-', starting with a letter or digit",
                req.name
            )));
        }
        if self.state.networks.iter().any(|n| n.name == name) {
            return Err(ApiError::conflict(format!("network with name {name} already exists")));
        }
        let driver = Driver::parse(req.driver.as_deref().unwrap_or("bridge")).map_err(ApiError::bad_request)?;
        if driver != Driver::Bridge {
            return Err(ApiError::forbidden(format!("only one instance of \"{}\" network is allowed", driver.as_str())));
        }
        let ipam_req = req.ipam.unwrap_or_default();
        if let Some(d) = ipam_req.driver.as_deref() {
            if d != "default" && !d.is_empty() {
                return Err(ApiError::bad_request(format!("IPAM driver {d:?} is not available: only \"default\"")));
            }
        }
        let mut used: Vec<IpNet> = self.state.networks.iter().flat_map(|n| n.ipam.iter().map(|c| c.subnet)).collect();
        let parse_net = |what: &str, s: &str| {
            s.parse::<IpNet>()
                .map_err(|_| ApiError::bad_request(format!("invalid {what} {s:?}: expected a CIDR like 10.10.0.0/24 or fd20::/64")))
        };
        let parse_ip = |what: &str, s: &str| {
            s.parse::<IpAddr>().map_err(|_| ApiError::bad_request(format!("invalid {what} {s:?}: expected an IP address")))
        };
        let mut configs: Vec<IpamConfig> = Vec::new();
        for c in &ipam_req.config {
            let subnet = match c.subnet.as_deref().filter(|s| !s.is_empty()) {
                Some(s) => parse_net("subnet", s)?,
                None if c.ip_range.is_some() || c.gateway.is_some() => {
                    return Err(ApiError::bad_request("--ip-range and --gateway need --subnet"))
                }
                None => {
                    ipam::pick_subnet(&used).ok_or_else(|| ApiError::forbidden("all default address pools are in use: give --subnet"))?
                }
            };
            let range = c.ip_range.as_deref().filter(|s| !s.is_empty()).map(|s| parse_net("ip-range", s)).transpose()?;
            let gw = c.gateway.as_deref().filter(|s| !s.is_empty()).map(|s| parse_ip("gateway", s)).transpose()?;
            let mut aux = Vec::new();
            for (k, v) in &c.auxiliary_addresses {
                aux.push((k.clone(), parse_ip("auxiliary address", v)?));
            }
            let cfg = ipam::configure(subnet, range, gw, aux)?;
            if let Some(o) = used.iter().find(|u| ipam::overlaps(u, &cfg.subnet)) {
                return Err(ApiError::forbidden(format!(
                    "Pool overlaps with other one on this address space: {} overlaps {o}",
                    cfg.subnet
                )));
            }
            used.push(cfg.subnet);
            configs.push(cfg);
        }
        let (n4, n6) = (configs.iter().filter(|c| c.is_v4()).count(), configs.iter().filter(|c| !c.is_v4()).count());
        if n4 > 1 || n6 > 1 {
            return Err(ApiError::bad_request("one IPv4 and one IPv6 subnet per network at most"));
        }
        if n6 > 0 && !req.enable_ipv6 {
            return Err(ApiError::bad_request("an IPv6 subnet needs --ipv6"));
        }
        if n4 == 0 {
            let subnet =
                ipam::pick_subnet(&used).ok_or_else(|| ApiError::forbidden("all default address pools are in use: give --subnet"))?;
            used.push(subnet);
            configs.insert(0, ipam::configure(subnet, None, None, vec![])?);
        }
        let mut new_ula = None;
        if req.enable_ipv6 && n6 == 0 {
            let ula = self.state.ula48.unwrap_or_else(|| *new_ula.insert(ipam::random_ula48()));
            let subnet = ipam::pick_subnet6(ula, &used)
                .ok_or_else(|| ApiError::forbidden("this host's IPv6 pool is used up: give an IPv6 --subnet"))?;
            configs.push(ipam::configure(subnet, None, None, vec![])?);
        }
        let mut route_to = Vec::new();
        if let Some(list) = req.options.get(opt::ROUTE_TO) {
            for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let other = self.find_network(name).map_err(|e| ApiError::bad_request(format!("option {}: {e}", opt::ROUTE_TO)))?;
                if other.driver != Driver::Bridge || other.internal || req.internal {
                    return Err(ApiError::bad_request(format!(
                        "option {}: {name} cannot be routed to (only between bridge networks that are not --internal)",
                        opt::ROUTE_TO
                    )));
                }
                route_to.push(other.id.clone());
            }
        }
        let dns_servers = req
            .options
            .get(opt::DNS_SERVERS)
            .map(|list| {
                list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(crate::dns::parse_server).collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("option {}: {e}", opt::DNS_SERVERS)))?
            .unwrap_or_default();
        let flag = |key: &str| match req.options.get(key).map(String::as_str) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(v) => Err(ApiError::bad_request(format!("option {key}={v:?} is invalid: expected true or false"))),
        };
        let dns_disabled = flag(opt::DNS_DISABLE)?;
        flag(opt::MASQUERADE)?;
        flag(opt::HOST_LOOPBACK)?;
        let mtu = parse_u32_opt(&req.options, opt::MTU, DEFAULT_MTU, 68..=65521)?;
        let aging_secs = parse_u32_opt(&req.options, opt::AGING, DEFAULT_AGING, 0..=1_000_000)?;
        let mac_limit = parse_u32_opt(&req.options, opt::MAC_LIMIT, DEFAULT_MAC_LIMIT, 0..=1_000_000)?;
        if let Some(p) = req.options.get(opt::IFACE_PREFIX) {
            if p.is_empty() || p.len() > 12 || !p.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(ApiError::bad_request(format!("option {}={p:?} is invalid: 1-12 letters or digits", opt::IFACE_PREFIX)));
            }
        }
        let n = Network {
            id: new_id(),
            name,
            driver,
            created: now_rfc3339(),
            internal: req.internal,
            attachable: req.attachable,
            enable_ipv6: req.enable_ipv6,
            ipam: configs,
            options: req.options,
            labels: req.labels,
            mtu,
            aging_secs,
            mac_limit,
            route_to,
            dns_servers,
            dns_disabled,
        };
        self.program_network(&n)?;
        self.state.networks.push(n.clone());
        let old_ula = self.state.ula48;
        if new_ula.is_some() {
            self.state.ula48 = new_ula;
        }
        if let Err(e) = self.store.save(&self.state) {
            self.state.ula48 = old_ula;
            self.state.networks.pop();
            self.unprogram_network(&n.id);
            return Err(e.into());
        }
        self.sync_derived();
        Ok(n)
    }

    fn unprogram_network(&mut self, id: &str) {
        if let Some(nid) = self.nets.remove(id) {
            let _ = self.dp.remove_network(nid);
            self.gateways.set_ra(nid, None, self.dp.now());
            self.gateways.set_dhcp(nid, None, None);
            self.leases.set_pool(nid, None);
            self.leases.forget_network(id);
            self.gateways.remove(nid);
        }
    }

    pub fn remove_network(&mut self, spec: &str) -> Result<(), ApiError> {
        let n = self.find_network(spec)?.clone();
        if n.is_predefined() {
            return Err(ApiError::forbidden(format!("{} is a pre-defined network and cannot be removed", n.name)));
        }
        if self.state.endpoints.iter().any(|e| e.network_id == n.id) {
            return Err(ApiError::forbidden(format!("error while removing network: network {} id {} has active endpoints", n.name, n.id)));
        }
        let before = self.state.clone();
        self.state.networks.retain(|x| x.id != n.id);
        self.state.routes.retain(|r| r.network_id != n.id);
        for other in &mut self.state.networks {
            other.route_to.retain(|id| *id != n.id);
        }
        if let Err(e) = self.store.save(&self.state) {
            self.state = before;
            return Err(e.into());
        }
        self.unprogram_network(&n.id);
        self.sync_derived();
        Ok(())
    }

    /// Removes every user-defined network without endpoints; returns their names.
    pub fn prune(&mut self) -> Result<Vec<String>, ApiError> {
        let unused: Vec<String> = self
            .state
            .networks
            .iter()
            .filter(|n| !n.is_predefined() && !self.state.endpoints.iter().any(|e| e.network_id == n.id))
            .map(|n| n.id.clone())
            .collect();
        let before = self.state.clone();
        self.state.networks.retain(|n| !unused.contains(&n.id));
        self.state.routes.retain(|r| !unused.contains(&r.network_id));
        for other in &mut self.state.networks {
            other.route_to.retain(|id| !unused.contains(id));
        }
        if let Err(e) = self.store.save(&self.state) {
            self.state = before;
            return Err(e.into());
        }
        let names = before.networks.iter().filter(|n| unused.contains(&n.id)).map(|n| n.name.clone()).collect();
        for id in &unused {
            self.unprogram_network(id);
        }
        self.sync_derived();
        Ok(names)
    }

    pub fn connect(&mut self, spec: &str, req: ConnectReq) -> Result<Endpoint, ApiError> {
        let net = self.find_network(spec)?.clone();
        match net.driver {
            Driver::Bridge => {}
            Driver::Host => {
                return Err(ApiError::forbidden("container cannot be disconnected from host network or connected to host network"))
            }
            Driver::Null => {
                return Err(ApiError::forbidden("container cannot be connected to the none network: it has no interfaces to give"))
            }
        }
        let epc = req.endpoint_config.clone().unwrap_or_default();
        let ipam_req = epc.ipam_config.clone().unwrap_or_default();
        let want4 = ipam_req
            .ipv4_address
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<Ipv4Addr>().map_err(|_| ApiError::bad_request(format!("invalid IPv4 address {s:?}"))))
            .transpose()?;
        let want6 = ipam_req
            .ipv6_address
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<Ipv6Addr>().map_err(|_| ApiError::bad_request(format!("invalid IPv6 address {s:?}"))))
            .transpose()?;
        let want_mac = epc
            .mac_address
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<Mac>().map_err(|e| ApiError::bad_request(e.to_string())))
            .transpose()?;
        if let Some(m) = want_mac {
            if m.is_multicast() || m.is_zero() {
                return Err(ApiError::bad_request(format!("invalid MAC address {m}: it must be a unicast address")));
            }
            if self.state.endpoints.iter().any(|e| e.network_id == net.id && e.mac == m) {
                return Err(ApiError::conflict(format!("MAC address {m} is already in use on network {}", net.name)));
            }
        }
        for a in &epc.aliases {
            if a.is_empty() || a.len() > 253 || !a.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                return Err(ApiError::bad_request(format!("invalid alias {a:?}: use letters, digits, '-', '_' and '.'")));
            }
        }
        if want6.is_some() && net.v6().is_none() {
            return Err(ApiError::bad_request(format!("network {} has no IPv6 subnet: create it with --ipv6", net.name)));
        }
        let on_net = || self.state.endpoints.iter().filter(|e| e.network_id == net.id);
        let leased = self.leases.leased(&net.id);
        let mut used4: HashSet<IpAddr> = on_net().filter_map(|e| e.ipv4).map(IpAddr::V4).collect();
        let mut used6: HashSet<IpAddr> = on_net().filter_map(|e| e.ipv6).map(IpAddr::V6).collect();
        used4.extend(leased.iter().filter(|a| a.is_ipv4()));
        used6.extend(leased.iter().filter(|a| a.is_ipv6()));
        let mut addrs = Addrs::default();
        if let Some(c) = net.v4() {
            if let IpAddr::V4(a) = ipam::allocate(c, &used4, want4.map(IpAddr::V4))? {
                addrs.v4 = Some((a, c.subnet.prefix_len()));
            }
        }
        if let Some(c) = net.v6() {
            if let IpAddr::V6(a) = ipam::allocate(c, &used6, want6.map(IpAddr::V6))? {
                addrs.v6 = Some((a, c.subnet.prefix_len()));
            }
        }
        if want_mac.is_none() {
            if let Some((a, _)) = addrs.v4 {
                let m = Mac::from_ipv4(a);
                if self.state.endpoints.iter().any(|e| e.network_id == net.id && e.mac == m) {
                    return Err(ApiError::conflict(format!(
                        "the MAC address {m} derived from {a} is already an endpoint's on network {}: give --mac",
                        net.name
                    )));
                }
            }
        }
        if want_mac == Some(net.gateway_mac()) {
            return Err(ApiError::conflict(format!("MAC address {} is the gateway's on network {}", net.gateway_mac(), net.name)));
        }
        let mut ports = Vec::new();
        for p in &req.ports {
            ports.extend(crate::ports::parse_publish(p).map_err(ApiError::bad_request)?);
        }
        let mut exposed = Vec::new();
        for p in &req.expose {
            exposed.extend(crate::ports::parse_expose(p).map_err(ApiError::bad_request)?);
        }
        if req.publish_all {
            let extra: Vec<PortMapping> =
                exposed.into_iter().filter(|e| !ports.iter().any(|p| p.proto == e.proto && p.container_port == e.container_port)).collect();
            ports.extend(extra);
        }
        if !ports.is_empty() && !net.uplink() {
            return Err(ApiError::bad_request(format!(
                "network {} has no way in or out (--internal or masquerade off): ports cannot be published",
                net.name
            )));
        }
        if !ports.is_empty() && (req.dhcp || addrs.v4.is_none() && addrs.v6.is_none()) {
            return Err(ApiError::bad_request("published ports need a static address: not with --dhcp"));
        }
        match (&req.veth, &req.container) {
            (Some(_), Some(_)) => Err(ApiError::bad_request("give either a sandbox or --veth, not both")),
            (None, None) => Err(ApiError::bad_request("missing sandbox: give a namespace name, a path or a PID (or --veth IFNAME)")),
            (Some(_), None) if req.dhcp => Err(ApiError::bad_request("--dhcp is for sandboxes: a veth's far end configures itself")),
            (Some(ifname), None) => {
                self.connect_veth(&net, addrs, ifname, EpOpts { name: req.name, mac: want_mac, aliases: epc.aliases, dhcp: false, ports })
            }
            (None, Some(sb)) => {
                self.connect_sandbox(&net, addrs, sb, EpOpts { name: req.name, mac: want_mac, aliases: epc.aliases, dhcp: req.dhcp, ports })
            }
        }
    }

    fn connect_veth(&mut self, net: &Network, addrs: Addrs, ifname: &str, o: EpOpts) -> Result<Endpoint, ApiError> {
        if let Some(e) = self.state.endpoints.iter().find(|e| e.veth && e.ifname == ifname) {
            return Err(ApiError::conflict(format!("interface {ifname} is already attached to network {}", self.net_name(&e.network_id))));
        }
        let mut ep = addrs.endpoint(net, None, o.name.unwrap_or_else(|| ifname.to_string()), ifname.to_string(), true, o.mac, o.aliases);
        ep.ports = o.ports;
        let port = provision::open_veth(ifname, self.dp.workers()).map_err(|e| ApiError::bad_request(e.to_string()))?;
        self.attach_port(&ep, net, Arc::new(port), None)?;
        self.commit_endpoint(ep, None)
    }

    fn connect_sandbox(&mut self, net: &Network, addrs: Addrs, sb_spec: &str, o: EpOpts) -> Result<Endpoint, ApiError> {
        let EpOpts { name, mac: want_mac, aliases, dhcp, ports } = o;
        let ns = provision::resolve_sandbox(sb_spec)?;
        let existing = self.state.sandboxes.iter().find(|s| s.dev == ns.dev && s.ino == ns.ino).cloned();
        let cname = name.clone().unwrap_or_else(|| existing.as_ref().map_or(ns.default_name.clone(), |s| s.name.clone()));
        if let Some(s) = &existing {
            if name.as_ref().is_some_and(|n| *n != s.name) {
                return Err(ApiError::conflict(format!(
                    "sandbox {sb_spec} is already known as container {:?}: use that name or none",
                    s.name
                )));
            }
            if self.state.endpoints.iter().any(|e| e.network_id == net.id && e.sandbox_id.as_deref() == Some(&s.id)) {
                return Err(ApiError::forbidden(format!("endpoint with name {} already exists in network {}", s.name, net.name)));
            }
        } else if self.state.sandboxes.iter().any(|s| s.name == cname) {
            return Err(ApiError::conflict(format!(
                "the container name {cname:?} is already in use by another sandbox: give a different --name"
            )));
        }
        let sandbox =
            existing.unwrap_or_else(|| Sandbox { id: new_id(), name: cname.clone(), netns: ns.path.clone(), dev: ns.dev, ino: ns.ino });
        let mine: Vec<&Endpoint> = self.state.endpoints.iter().filter(|e| e.sandbox_id.as_deref() == Some(&sandbox.id)).collect();
        let prefix = net.iface_prefix();
        let present = provision::link_names(&sandbox.netns)?;
        let ifname = (0..)
            .map(|i| format!("{prefix}{i}"))
            .find(|n| !mine.iter().any(|e| &e.ifname == n) && !present.contains(n))
            .expect("an unused interface name exists");
        let first = mine.is_empty();
        let mut ep = addrs.endpoint(net, Some(sandbox.id.clone()), cname, ifname, false, want_mac, aliases);
        ep.dhcp = dhcp;
        ep.ports = ports;
        let spec = self.tap_spec(&ep, net, first);
        let (tap, created) = provision::ensure_tap(&sandbox.netns, spec, true)?;
        let tap = Arc::new(tap);
        if let Err(e) = self.attach_port(&ep, net, tap.clone(), Some(tap.clone())) {
            if created {
                let _ = tap.unpersist();
                let _ = provision::delete_link(&sandbox.netns, &ep.ifname);
            }
            return Err(e);
        }
        self.commit_endpoint(ep, Some(sandbox))
    }

    /// Persists a provisioned endpoint; on failure undoes the provisioning.
    fn commit_endpoint(&mut self, mut ep: Endpoint, sandbox: Option<Sandbox>) -> Result<Endpoint, ApiError> {
        // Bound before anything is acknowledged: a port someone holds fails the connect whole.
        if let Err(e) = self.publish_ports(&mut ep, sandbox.as_ref()) {
            self.detach(&ep);
            return Err(e);
        }
        let new_sandbox = sandbox.as_ref().is_some_and(|s| !self.state.sandboxes.iter().any(|x| x.id == s.id));
        if new_sandbox {
            self.state.sandboxes.push(sandbox.clone().expect("checked"));
        }
        self.state.endpoints.push(ep.clone());
        if let Err(e) = self.store.save(&self.state) {
            self.state.endpoints.pop();
            if new_sandbox {
                self.state.sandboxes.pop();
            }
            self.unpublish_ports(&ep.id);
            self.detach(&ep);
            return Err(e.into());
        }
        self.sync_derived();
        Ok(ep)
    }

    /// Binds every published port of `ep` on the host and hands it to the engine, filling in
    /// the host ports picked for ephemeral ones. On an error nothing stays published. `sandbox`:
    /// the endpoint's, when it is not in the state yet.
    fn publish_ports(&mut self, ep: &mut Endpoint, sandbox: Option<&Sandbox>) -> Result<(), ApiError> {
        let Some(&nid) = self.nets.get(&ep.network_id) else { return Ok(()) };
        let target = ep.ipv4.map(IpAddr::V4).or(ep.ipv6.map(IpAddr::V6));
        let splice = self.splice_for(ep, sandbox);
        let mut done = Vec::new();
        let mut r = Ok(());
        'all: for m in ep.ports.iter_mut() {
            let Some(target) = target else { break };
            for (i, host) in m.host_ips().into_iter().enumerate() {
                self.next_forward += 1;
                let fwd = PortForward {
                    id: self.next_forward,
                    proto: match m.proto {
                        crate::ports::Proto::Tcp => vswitch_nat::Proto::Tcp,
                        crate::ports::Proto::Udp => vswitch_nat::Proto::Udp,
                    },
                    host: std::net::SocketAddr::new(host, m.host_port),
                    net: nid,
                    container: std::net::SocketAddr::new(target, m.container_port),
                    container_mac: ep.mac,
                    splice: splice.clone(),
                };
                match self.engine.publish(fwd) {
                    Ok(bound) => {
                        m.host_port = bound.port();
                        done.push(self.next_forward);
                    }
                    // The host has no IPv6: the IPv4 half of an any-address mapping serves alone.
                    Err(PublishError::Io(e)) if i == 1 && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {}
                    Err(e) => {
                        r = Err(ApiError::conflict(format!("cannot publish {m}: {e}")));
                        break 'all;
                    }
                }
            }
        }
        match r {
            Ok(()) => {
                self.published.insert(ep.id.clone(), done);
                Ok(())
            }
            Err(e) => {
                for id in done {
                    self.engine.unpublish(id);
                }
                Err(e)
            }
        }
    }

    /// How `ep`'s published ports splice their loopback clients: into its sandbox's namespace,
    /// at the container's address. None when splicing is off, the endpoint has no sandbox of ours
    /// or no port, or the namespace cannot be entered (then said in the log: its clients take the
    /// framed path).
    fn splice_for(&self, ep: &Endpoint, sandbox: Option<&Sandbox>) -> Option<Splice> {
        if !self.splice || ep.ports.is_empty() {
            return None;
        }
        let id = ep.sandbox_id.as_ref()?;
        let sb = sandbox.filter(|s| &s.id == id).or_else(|| self.state.sandboxes.iter().find(|s| &s.id == id))?;
        match NsSockets::open(&sb.netns, None) {
            Ok(ns) => Some(Splice { ns: Arc::new(ns), to: SpliceTo::Container }),
            Err(e) => {
                log::warn!("endpoint {}: published ports' loopback clients are framed, not spliced: {e}", ep.name);
                None
            }
        }
    }

    fn unpublish_ports(&mut self, endpoint_id: &str) {
        for id in self.published.remove(endpoint_id).unwrap_or_default() {
            self.engine.unpublish(id);
        }
    }

    /// `port NAME`: the published ports of the endpoints named NAME (or of a sandbox so named).
    pub fn ports(&self, name: &str) -> Result<Value, ApiError> {
        let sandbox = self.state.sandboxes.iter().find(|s| s.name == name).map(|s| s.id.as_str());
        let eps: Vec<&Endpoint> =
            self.state.endpoints.iter().filter(|e| e.name == name || (sandbox.is_some() && e.sandbox_id.as_deref() == sandbox)).collect();
        if eps.is_empty() {
            return Err(ApiError::not_found(format!("no such container: {name}")));
        }
        let mut rows = Vec::new();
        for e in eps {
            for m in &e.ports {
                for h in m.host_ips() {
                    rows.push(json!({
                        "Network": self.net_name(&e.network_id),
                        "ContainerPort": m.container_side(),
                        "HostIp": crate::ports::host_text(h),
                        "HostPort": m.host_port,
                        "Line": m.line(h),
                    }));
                }
            }
        }
        Ok(Value::Array(rows))
    }

    /// Takes an endpoint out of the data plane and deletes its interface.
    fn detach(&mut self, ep: &Endpoint) {
        self.release_port(&ep.id);
        if !ep.veth {
            if let Ok(sb) = self.sandbox(ep).cloned() {
                delete_sandbox_link(&sb, ep);
            }
        }
    }

    /// Takes an endpoint's port out of the data plane; a TAP stops being persistent, so the
    /// device goes when its last fd closes.
    fn release_port(&mut self, endpoint_id: &str) {
        if let Some(a) = self.attached.remove(endpoint_id) {
            let _ = self.dp.remove_port(a.port);
            if let Some(t) = a.tap {
                let _ = t.unpersist();
            }
        }
    }

    /// Drops an endpoint from the model (and its sandbox when it was the last one).
    fn forget_endpoint(&mut self, id: &str) {
        let Some(pos) = self.state.endpoints.iter().position(|e| e.id == id) else { return };
        let ep = self.state.endpoints.remove(pos);
        self.unpublish_ports(&ep.id);
        if let Some(&nid) = self.nets.get(&ep.network_id) {
            // Its flows' host sockets go with it.
            self.engine.forget_in(nid, ep.ipv4.map(IpAddr::V4).into_iter().chain(ep.ipv6.map(IpAddr::V6)).collect());
            for ip in ep.ipv4.map(IpAddr::V4).into_iter().chain(ep.ipv6.map(IpAddr::V6)) {
                self.l3.remove_neighbor(nid, ip);
            }
        }
        if let Some(sid) = ep.sandbox_id {
            if !self.state.endpoints.iter().any(|e| e.sandbox_id.as_deref() == Some(&sid)) {
                self.state.sandboxes.retain(|s| s.id != sid);
            }
        }
    }

    fn find_endpoint(&self, net: &Network, who: &str) -> Result<Endpoint, ApiError> {
        let on_net = || self.state.endpoints.iter().filter(|e| e.network_id == net.id);
        if let Some(e) = on_net().find(|e| e.name == who || e.id == who || (e.veth && e.ifname == who)) {
            return Ok(e.clone());
        }
        if let Ok(ns) = provision::resolve_sandbox(who) {
            if let Some(s) = self.state.sandboxes.iter().find(|s| s.dev == ns.dev && s.ino == ns.ino) {
                if let Some(e) = on_net().find(|e| e.sandbox_id.as_deref() == Some(&s.id)) {
                    return Ok(e.clone());
                }
            }
        }
        Err(ApiError::not_found(format!("container {who} is not connected to network {}", net.name)))
    }

    pub fn disconnect(&mut self, spec: &str, req: DisconnectReq) -> Result<(), ApiError> {
        let net = self.find_network(spec)?.clone();
        let ep = match self.find_endpoint(&net, &req.container) {
            Ok(ep) => ep,
            // Docker's --force: disconnecting something already gone is not an error.
            Err(_) if req.force => return Ok(()),
            Err(e) => return Err(e),
        };
        let saved = self.state.clone();
        self.forget_endpoint(&ep.id);
        if let Err(e) = self.store.save(&self.state) {
            self.state = saved;
            return Err(e.into());
        }
        self.sync_derived();
        // Detach after the sandbox record may be gone: look it up in the saved copy.
        let sandbox = saved.sandboxes.iter().find(|s| Some(&s.id) == ep.sandbox_id.as_ref()).cloned();
        self.release_port(&ep.id);
        // The disconnect is done and saved; a leftover interface is worth a warning, not a failure.
        if let Some(sb) = sandbox {
            delete_sandbox_link(&sb, &ep);
        }
        Ok(())
    }

    /// Keeps the model in step with the devices, once a second:
    /// - endpoints whose sandbox is gone are removed (the container is gone);
    /// - ports whose device was destroyed are detached, keeping the endpoint;
    /// - detached veth endpoints whose interface exists again are re-attached.
    ///
    /// A sandbox's end is seen on its path, not on the TAP: our TAP fds hold a reference to
    /// the namespace, so deleting the namespace's name (or the container's PID exiting) does
    /// not by itself tear the device down. Dropping the port here lets the namespace go.
    pub fn reap(&mut self) {
        let mut gone = Vec::new();
        let mut broken = Vec::new();
        let mut retry = Vec::new();
        for ep in &self.state.endpoints {
            let down = self.attached.get(&ep.id).is_some_and(|a| self.dp.port_is_down(a.port));
            let sandbox_gone = !ep.veth && self.sandbox(ep).map_or(true, |sb| !provision::same_namespace(&sb.netns, sb.dev, sb.ino));
            if sandbox_gone {
                gone.push(ep.clone());
            } else if down {
                broken.push(ep.clone());
            } else if ep.veth && !self.attached.contains_key(&ep.id) && vswitch_switch::sys::if_nametoindex(&ep.ifname).is_ok() {
                retry.push(ep.clone());
            }
        }
        for ep in &broken {
            log::warn!(
                "endpoint {} ({}): its device was destroyed; it stays detached{}",
                ep.name,
                ep.ifname,
                if ep.veth { " until the interface exists again" } else { " until disconnected and connected again" }
            );
            self.release_port(&ep.id);
        }
        for ep in &retry {
            match self.reattach(ep) {
                Ok(_) => log::info!("endpoint {} ({}): the interface is back; re-attached", ep.name, ep.ifname),
                Err(e) => log::warn!("endpoint {} ({}): cannot re-attach yet: {e}", ep.name, ep.ifname),
            }
        }
        if gone.is_empty() {
            return;
        }
        for ep in &gone {
            log::info!("endpoint {} ({}) on {}: its sandbox is gone; removing it", ep.name, ep.ifname, self.net_name(&ep.network_id));
            self.release_port(&ep.id);
            self.forget_endpoint(&ep.id);
        }
        if let Err(e) = self.store.save(&self.state) {
            log::error!("cannot save state after removing endpoints of vanished sandboxes: {e}");
        }
        self.sync_derived();
    }

    /// Docker-shaped `network inspect` JSON.
    pub fn inspect(&self, n: &Network) -> Value {
        let mut containers = serde_json::Map::new();
        let mut endpoints = Vec::new();
        for e in self.state.endpoints.iter().filter(|e| e.network_id == n.id) {
            let key = e.sandbox_id.clone().unwrap_or_else(|| e.id.clone());
            containers.insert(
                key,
                json!({
                    "Name": e.name,
                    "EndpointID": e.id,
                    "MacAddress": e.mac.to_string(),
                    "IPv4Address": e.ipv4.map(|a| format!("{a}/{}", e.prefix)).unwrap_or_default(),
                    "IPv6Address": e.ipv6.map(|a| format!("{a}/{}", e.prefix6)).unwrap_or_default(),
                }),
            );
            let port = self.attached.get(&e.id).map(|a| a.port);
            endpoints.push(json!({
                "EndpointID": e.id,
                "Name": e.name,
                "Interface": e.ifname,
                "Kind": if e.veth { "veth" } else { "tap" },
                "DHCP": e.dhcp,
                "Aliases": e.aliases,
                "Port": port,
                "State": match port { Some(p) if self.dp.port_is_down(p) => "down", Some(_) => "attached", None => "detached" },
            }));
        }
        let config: Vec<Value> = n
            .ipam
            .iter()
            .map(|c| {
                let mut o = json!({ "Subnet": c.subnet.to_string(), "Gateway": c.gateway.to_string() });
                if let Some(r) = c.ip_range {
                    o["IPRange"] = json!(r.to_string());
                }
                if !c.aux.is_empty() {
                    o["AuxiliaryAddresses"] = json!(c.aux.iter().map(|(k, v)| (k.clone(), v.to_string())).collect::<BTreeMap<_, _>>());
                }
                o
            })
            .collect();
        json!({
            "Name": n.name,
            "Id": n.id,
            "Created": n.created,
            "Scope": "local",
            "Driver": n.driver.as_str(),
            "EnableIPv4": n.driver == Driver::Bridge,
            "EnableIPv6": n.enable_ipv6,
            "IPAM": { "Driver": "default", "Options": {}, "Config": config },
            "Internal": n.internal,
            "Attachable": n.attachable,
            "Ingress": false,
            "ConfigFrom": { "Network": "" },
            "ConfigOnly": false,
            "Containers": containers,
            "Options": n.options,
            "Labels": n.labels,
            "VSwitch": {
                "MTU": n.mtu,
                "FdbAgeingTime": n.aging_secs,
                "MacLimit": n.mac_limit,
                "GatewayMAC": if n.driver == Driver::Bridge { n.gateway_mac().to_string() } else { String::new() },
                "Endpoints": endpoints,
                "Routes": self.routes().as_array().map(|rs| rs.iter().filter(|r| r["Network"] == n.name.as_str()).cloned().collect::<Vec<_>>()).unwrap_or_default(),
                "RoutesWith": n.route_to.iter().map(|id| self.net_name(id)).chain(
                    self.state.networks.iter().filter(|o| o.route_to.contains(&n.id)).map(|o| o.name.clone())
                ).collect::<std::collections::BTreeSet<_>>(),
                "DNS": self.dns_inspect(n),
                "Leases": self.leases.list(&n.id).iter().map(|l| json!({ "Address": l.addr.to_string(), "MAC": l.mac, "Expires": l.expires, "Declined": l.declined })).collect::<Vec<_>>(),
            },
        })
    }

    fn dns_inspect(&self, n: &Network) -> Value {
        let nid = self.nets.get(&n.id).copied();
        if !n.dns_enabled() {
            return json!({ "Enabled": false });
        }
        let servers: Vec<String> =
            n.gateway4().map(IpAddr::V4).into_iter().chain(n.gateway6().map(IpAddr::V6)).map(|a| a.to_string()).collect();
        json!({
            "Enabled": true,
            "Servers": servers,
            "Upstreams": nid.map(|id| self.dns.upstreams(id)).unwrap_or_default().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "Queries": nid.and_then(|id| self.dns.net_queries(id)).unwrap_or(0),
        })
    }

    /// Learned and static FDB entries, named by network and endpoint.
    pub fn fdb(&self, spec: Option<&str>) -> Result<Value, ApiError> {
        let only = spec.map(|s| self.find_network(s).map(|n| n.id.clone())).transpose()?;
        let by_port: HashMap<PortId, &Endpoint> =
            self.state.endpoints.iter().filter_map(|e| self.attached.get(&e.id).map(|a| (a.port, e))).collect();
        let mut rows = Vec::new();
        for n in &self.state.networks {
            if only.as_ref().is_some_and(|o| *o != n.id) {
                continue;
            }
            let Some(&nid) = self.nets.get(&n.id) else { continue };
            for r in self.dp.fdb_rows(Some(nid)) {
                let ep = by_port.get(&r.port);
                rows.push(json!({
                    "Network": n.name,
                    "MAC": r.mac.to_string(),
                    "Port": r.port,
                    "Endpoint": ep.map(|e| e.name.clone()),
                    "Interface": ep.map(|e| e.ifname.clone()),
                    "Static": r.is_static,
                    "Age": r.age,
                }));
            }
        }
        Ok(Value::Array(rows))
    }

    pub fn stats(&self) -> Value {
        let by_port: HashMap<PortId, &Endpoint> =
            self.state.endpoints.iter().filter_map(|e| self.attached.get(&e.id).map(|a| (a.port, e))).collect();
        let ports: Vec<Value> = self
            .dp
            .port_stats()
            .into_iter()
            .map(|p| {
                let ep = by_port.get(&p.id);
                let t = &p.totals;
                json!({
                    "Port": p.id,
                    "Network": ep.map(|e| self.net_name(&e.network_id)),
                    "Endpoint": ep.map(|e| e.name.clone()),
                    "Interface": p.name,
                    "Kind": p.kind,
                    "Queues": p.queues,
                    "Down": p.down,
                    "Learned": p.learned,
                    "RxPackets": t.rx_packets, "RxBytes": t.rx_bytes,
                    "TxPackets": t.tx_packets, "TxBytes": t.tx_bytes,
                    "Flooded": t.flooded, "Punted": t.punted, "Routed": t.routed, "LearnLimited": t.learn_limited,
                    "Dropped": t.dropped(),
                    "Drops": t.drops.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
                    // Filled in by `fill_kernel_drops`, outside the controller's lock.
                    "SandboxTxDropped": null,
                    "SandboxRxDropped": null,
                    "_netns": ep.filter(|e| !e.veth).and_then(|e| self.sandbox(e).ok()).map(|sb| sb.netns.display().to_string()),
                })
            })
            .collect();
        let workers: Vec<Value> = self
            .dp
            .worker_stats()
            .iter()
            .enumerate()
            .map(|(i, w)| json!({ "Worker": i, "Wakeups": w.wakeups, "Batches": w.batches, "Frames": w.frames }))
            .collect();
        let r = self.gateways.counters();
        json!({
            "Ports": ports,
            "Workers": workers,
            "Gateway": {
                "ArpReplies": r.arp_replies, "IcmpEchoReplies": r.icmp_echo_replies,
                "NdAdverts": r.nd_adverts, "Icmp6EchoReplies": r.icmp6_echo_replies,
                "Malformed": r.malformed, "Ignored": r.ignored, "TooBig": r.too_big, "RouterAdverts": r.router_adverts,
                "DhcpReplies": r.dhcp_replies, "DnsFrames": r.dns,
            },
            "Dns": self.dns.stats(),
            "Nat": engine_stats(&self.engine.counters()),
            "Fdb": { "Entries": self.dp.fdb().len(), "TableBytes": self.dp.fdb().table_bytes() },
        })
    }
}

/// Deletes an endpoint's interface inside its sandbox, if the sandbox is still the one we
/// knew; a failure is logged, since callers have already committed the change.
fn delete_sandbox_link(sb: &Sandbox, ep: &Endpoint) {
    if provision::same_namespace(&sb.netns, sb.dev, sb.ino) {
        if let Err(e) = provision::delete_link(&sb.netns, &ep.ifname) {
            log::warn!("endpoint {}: cannot delete {}: {e}", ep.name, ep.ifname);
        }
    }
}

/// Reads each TAP's kernel-side drop counters inside its sandbox (a netlink round trip per
/// port, so this runs without the controller's lock) and fills them into `stats`' JSON.
pub fn fill_kernel_drops(stats: &mut Value) {
    let Some(ports) = stats["Ports"].as_array_mut() else { return };
    for p in ports {
        let netns = p.as_object_mut().and_then(|o| o.remove("_netns"));
        let (Some(ns), Some(ifname)) = (netns.as_ref().and_then(Value::as_str), p["Interface"].as_str()) else { continue };
        if let Some(k) = provision::link_drops(std::path::Path::new(ns), ifname) {
            p["SandboxTxDropped"] = json!(k.tx_dropped);
            p["SandboxRxDropped"] = json!(k.rx_dropped);
        }
    }
}

/// The engine's counters as `stats` shows them.
fn engine_stats(c: &vswitch_nat::slirp::EngineCounters) -> Value {
    let mut v = json!({
        "FramesIn": c.frames_in, "FramesOut": c.frames_out,
        "TcpOpen": c.tcp_open, "TcpOpened": c.tcp_opened, "TcpClosed": c.tcp_closed, "TcpRefused": c.tcp_refused,
        "TcpConnectFailed": c.tcp_connect_failed, "TcpConnectTimeout": c.tcp_connect_timeout,
        "TcpResetByContainer": c.tcp_reset_by_container, "TcpResetByHost": c.tcp_reset_by_host, "TcpStray": c.tcp_stray,
        "UdpOpen": c.udp_open, "UdpFlows": c.udp_flows, "UdpUnreachable": c.udp_unreachable,
        "IcmpOpen": c.icmp_open, "IcmpFlows": c.icmp_flows, "FlowsExpired": c.flows_expired,
        "PublishedPorts": c.pub_ports, "PublishedTcpOpened": c.pub_tcp_opened, "PublishedTcpRefused": c.pub_tcp_refused,
        "PublishedUdpFlows": c.pub_udp_flows, "PublishedBytesIn": c.pub_bytes_in, "PublishedBytesOut": c.pub_bytes_out,
        "PublishedDropped": c.pub_dropped,
        "BytesToHost": c.bytes_to_host, "BytesFromHost": c.bytes_from_host,
        "Drops": {
            "malformed": c.drop_malformed, "checksum": c.drop_checksum, "unsupported": c.drop_unsupported,
            "no_network": c.drop_no_network, "denied": c.drop_denied, "spoofed": c.drop_spoofed,
            "flow_table_full": c.drop_flow_table_full, "ping_not_permitted": c.drop_ping_not_permitted,
            "host_socket_failed": c.drop_host_socket_failed, "host_send_failed": c.drop_host_send_failed,
            "too_big": c.too_big, "tx_failed": c.tx_failed,
        },
    });
    // Apart: json! recurses once per token, and one literal this size reaches its limit.
    v["PublishedSpliced"] = json!(c.pub_spliced);
    v["PublishedSpliceFallback"] = json!(c.pub_splice_fallback);
    v["PublishedSplicePortBusy"] = json!(c.pub_splice_port_busy);
    v["SpliceOpen"] = json!(c.splice_open);
    v
}

/// The networks that exist after a first start, like Docker's.
fn predefined() -> Vec<Network> {
    let bridge_cfg = ipam::configure("172.17.0.0/16".parse().expect("valid"), None, None, vec![]).expect("valid default pool");
    let base = |name: &str, driver: Driver, ipam: Vec<IpamConfig>, options: BTreeMap<String, String>| Network {
        id: new_id(),
        name: name.to_string(),
        driver,
        created: now_rfc3339(),
        internal: false,
        attachable: false,
        enable_ipv6: false,
        ipam,
        options,
        labels: BTreeMap::new(),
        mtu: DEFAULT_MTU,
        aging_secs: DEFAULT_AGING,
        mac_limit: DEFAULT_MAC_LIMIT,
        route_to: Vec::new(),
        dns_servers: Vec::new(),
        dns_disabled: false,
    };
    let bridge_opts = [
        ("com.docker.network.bridge.default_bridge", "true"),
        ("com.docker.network.bridge.enable_icc", "true"),
        ("com.docker.network.bridge.enable_ip_masquerade", "true"),
        ("com.docker.network.driver.mtu", "1500"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    vec![
        base("bridge", Driver::Bridge, vec![bridge_cfg], bridge_opts),
        base("host", Driver::Host, vec![], BTreeMap::new()),
        base("none", Driver::Null, vec![], BTreeMap::new()),
    ]
}
