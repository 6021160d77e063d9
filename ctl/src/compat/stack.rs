//! One network, one TAP and the whole vswitch stack behind it (switch, gateway services, DNS,
//! the slirp engine): what the slirp4netns and pasta personalities run.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use parking_lot::Mutex;
use vswitch_dns::NamesBuilder;
use vswitch_nat::slirp::{Engine, EngineCounters, EngineLimits, EngineNet, PortForward, PublishError, Relay, RelaySock, Splice};
use vswitch_nat::Proto;
use vswitch_router::{DhcpConfig, DhcpServer, Gateway, Gateways, L3Config, NetworkL3, RaConfig, L3};
use vswitch_switch::port::Tap;
use vswitch_switch::{Dataplane, DataplaneConfig, Hooks, L3Handler, Mac, Mode, NetId, NetworkConfig, SlowPathHandler};

use crate::dns::{Dns, DnsHandle, NetDns};
use crate::leases::{LeaseDb, Pool};
use crate::model::IpamConfig;

/// The IPv6 side of a [`NetPlan`].
#[derive(Debug, Clone)]
pub struct V6Plan {
    pub subnet: Ipv6Net,
    /// The container's address when it is configured for it (pasta); None: SLAAC picks one.
    pub guest: Option<Ipv6Addr>,
    pub gateway: Ipv6Addr,
    pub dns: Option<Ipv6Addr>,
    /// Router advertisements sent (pasta's --no-ra turns them off).
    pub ra: bool,
}

/// What the DHCP server hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpPlan {
    /// libslirp's: this address and the next 15, never the container's own.
    Range(Ipv4Addr),
    /// pasta's: the container's address, to the one client there is.
    Guest,
}

/// The network a personality serves.
#[derive(Debug, Clone)]
pub struct NetPlan {
    pub subnet4: Ipv4Net,
    /// The gateway: the default route, and the host's loopback when `host_loopback`.
    pub gateway4: Ipv4Addr,
    /// Where the DNS forwarder answers besides the gateway (slirp4netns: net+3); None: no DNS.
    pub dns4: Option<Ipv4Addr>,
    /// The container's address (slirp4netns: net+100): published ports' default target.
    pub guest4: Ipv4Addr,
    /// What DHCP hands out; None: no DHCP.
    pub dhcp: Option<DhcpPlan>,
    pub v6: Option<V6Plan>,
    pub mtu: u32,
    pub host_loopback: bool,
    pub outbound4: Option<Ipv4Addr>,
    pub outbound6: Option<Ipv6Addr>,
    pub gateway_mac: Mac,
    /// Upstream resolvers; empty: the host's, from `resolv_conf`.
    pub dns_upstreams: Vec<SocketAddr>,
    pub resolv_conf: PathBuf,
    /// pasta: the gateway answers ARP/ND for every address but the container's, and only the
    /// gateway's own address is on the link for the router (the rest leaves through the engine).
    pub proxy_all: bool,
    /// pasta's --map-guest-addr / --map-host-loopback: (address, what it reaches on the host).
    pub host_alias: Option<(IpAddr, IpAddr)>,
}

/// A published port as the personalities list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub id: u64,
    pub proto: Proto,
    pub host: SocketAddr,
    pub guest: SocketAddr,
}

/// The running stack. Dropping it does not stop the threads: the personalities end by exiting.
pub struct Stack {
    pub plan: NetPlan,
    dp: Arc<Dataplane>,
    engine: Arc<Engine>,
    net: NetId,
    tap: Arc<Tap>,
    /// The next published port's id: slirp4netns's ids only grow. Held while publishing, so two
    /// API calls cannot take the same one.
    next_id: Mutex<u64>,
    /// How published ports splice their clients on the host's loopback (pasta's
    /// `--host-lo-to-ns-lo`); None: they are framed like any other.
    splice: Option<Splice>,
    _rt: tokio::runtime::Runtime,
    _dns: Option<Arc<Dns>>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack").field("net", &self.net).field("tap", &self.tap).finish_non_exhaustive()
    }
}

impl Stack {
    /// Starts the threads (one worker, the slow path, the engine, a runtime thread for DNS
    /// forwarding) serving `tap` as `plan` says.
    pub fn start(plan: NetPlan, tap: Tap) -> anyhow::Result<Stack> {
        let gateways = Arc::new(Gateways::new());
        let l3 = Arc::new(L3::new());
        gateways.set_l3(l3.clone());
        let handler: Arc<dyn SlowPathHandler> = gateways.clone();
        let router: Arc<dyn L3Handler> = l3.clone();
        // One TAP, one worker: a second would only contend for its single queue.
        let cfg = DataplaneConfig { workers: 1, pin: false, mode: Mode::Switch };
        let dp = Arc::new(Dataplane::start(cfg, Hooks { slow: Some(handler), l3: Some(router), uplink: true })?);
        let net = dp.add_network(NetworkConfig { mtu: plan.mtu, gateway_mac: Some(plan.gateway_mac), ..Default::default() })?;
        let v6 = plan.v6.as_ref();
        let (alias4, alias6) = match plan.host_alias {
            Some((IpAddr::V4(a), IpAddr::V4(t))) => (Some((a, t)), None),
            Some((IpAddr::V6(a), IpAddr::V6(t))) => (None, Some((a, t))),
            Some((a, t)) => anyhow::bail!("{a} cannot stand for {t}: the families differ"),
            None => (None, None),
        };
        let mut l3cfg = L3Config::new();
        l3cfg
            .set_network(
                net,
                NetworkL3 {
                    mac: plan.gateway_mac,
                    mtu: plan.mtu,
                    // With proxy ARP every other address is reached through the engine, so only the
                    // gateway itself is on the router's link.
                    ipv4: Some(Ipv4Net::new(plan.gateway4, if plan.proxy_all { 32 } else { plan.subnet4.prefix_len() })?),
                    ipv6: v6.map(|v| Ipv6Net::new(v.gateway, if plan.proxy_all { 128 } else { v.subnet.prefix_len() })).transpose()?,
                    internal: false,
                    uplink: true,
                    host_loopback: plan.host_loopback,
                    dns4: plan.dns4,
                    dns6: v6.and_then(|v| v.dns),
                    host_alias4: alias4.map(|a| a.0),
                    host_alias6: alias6.map(|a| a.0),
                },
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        l3.store(l3cfg);
        let dns_on = plan.dns4.is_some();
        gateways.set(
            net,
            Gateway {
                ipv4: Some(plan.gateway4),
                ipv6: v6.map(|v| v.gateway),
                mac: plan.gateway_mac,
                dns4: plan.dns4,
                dns6: v6.and_then(|v| v.dns),
                proxy_all: plan.proxy_all,
            },
        );
        if let Some(v) = v6.filter(|v| v.ra) {
            let mut ra = RaConfig::new(v.subnet.network(), v.subnet.prefix_len());
            ra.mtu = plan.mtu;
            ra.dns = v.dns;
            gateways.set_ra(net, Some(ra), dp.now());
        }
        let leases = Arc::new(LeaseDb::in_memory());
        gateways.set_leases(leases.clone());
        if let Some(dhcp) = plan.dhcp {
            let mut cfg = DhcpConfig::new(plan.gateway_mac, plan.gateway4, plan.subnet4.netmask());
            cfg.dns = plan.dns4.into_iter().collect();
            cfg.mtu = u16::try_from(plan.mtu).ok();
            cfg.lease_secs = 86_400;
            leases.set_pool(net, Some(dhcp_pool(&plan, dhcp)?));
            gateways.set_dhcp(net, Some(DhcpServer::new(cfg)?), None);
        }
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).max_blocking_threads(2).enable_all().build()?;
        let dns = dns_on.then(|| {
            let dns = Dns::new(&plan.resolv_conf, rt.handle().clone(), dp.slow_waker());
            gateways.set_dns(Arc::new(DnsHandle(dns.clone())));
            let mut b = NamesBuilder::default();
            b.network(net, "slirp");
            dns.publish(b.build(), HashMap::from([(net, NetDns::new(plan.dns_upstreams.clone(), plan.mtu))]));
            dns
        });
        let uplink = dp.uplink().ok_or_else(|| anyhow::anyhow!("the data plane has no uplink"))?;
        let engine = Arc::new(Engine::start(uplink, EngineLimits::default())?);
        engine.set_networks(HashMap::from([(
            net,
            EngineNet {
                mac: plan.gateway_mac,
                v4: Some(plan.gateway4),
                v6: v6.map(|v| v.gateway),
                host_loopback: plan.host_loopback,
                mtu: plan.mtu,
                outbound4: plan.outbound4,
                outbound6: plan.outbound6,
                host_alias4: alias4,
                host_alias6: alias6,
            },
        )]));
        let tap = Arc::new(tap);
        dp.add_port(net, tap.clone(), &[])?;
        Ok(Stack { plan, dp, engine, net, tap, next_id: Mutex::new(1), splice: None, _rt: rt, _dns: dns })
    }

    /// Published ports from now on splice their clients on the host's loopback as `splice` says.
    pub fn set_splice(&mut self, splice: Option<Splice>) {
        self.splice = splice;
    }

    /// Publishes host `host` to the container's `guest`; the id is the next of 1, 2, 3...
    pub fn add_forward(&self, proto: Proto, host: SocketAddr, guest: SocketAddr) -> Result<Forward, PublishError> {
        // The container's MAC as its namespace has it now: replies must come from it.
        let container_mac = self.tap.hw_addr()?;
        let mut next = self.next_id.lock();
        let id = *next;
        self.engine.publish(PortForward {
            id,
            proto,
            host,
            net: self.net,
            container: guest,
            container_mac,
            splice: self.splice.clone(),
        })?;
        *next += 1;
        Ok(Forward { id, proto, host, guest })
    }

    /// Relays what reaches `sock` (a socket inside the namespace) to `to`, from the host
    /// (pasta's `-T` and `-U`); returns its id, of the same sequence as published ports'.
    pub fn add_relay(&self, sock: RelaySock, to: SocketAddr) -> std::io::Result<u64> {
        let mut next = self.next_id.lock();
        let id = *next;
        self.engine.relay(Relay { id, net: self.net, sock, to })?;
        *next += 1;
        Ok(id)
    }

    /// Closes a relay and resets its connections.
    pub fn remove_relay(&self, id: u64) {
        self.engine.unrelay(id);
    }

    /// Removes a published port; false when there is none with that id.
    pub fn remove_forward(&self, id: u64) -> bool {
        self.engine.unpublish(id)
    }

    /// The published ports, as the engine holds them, by id.
    pub fn forwards(&self) -> Vec<Forward> {
        self.engine.published().into_iter().map(|(f, _)| Forward { id: f.id, proto: f.proto, host: f.host, guest: f.container }).collect()
    }

    pub fn engine_counters(&self) -> EngineCounters {
        self.engine.counters()
    }

    pub fn dataplane(&self) -> &Dataplane {
        &self.dp
    }
}

/// DHCP's pool: libslirp's 16 addresses from `first`, never the gateway's, the DNS server's or
/// the container's own; or pasta's one, the container's.
fn dhcp_pool(plan: &NetPlan, dhcp: DhcpPlan) -> anyhow::Result<Pool> {
    let (range, mut taken): (Ipv4Net, HashSet<IpAddr>) = match dhcp {
        DhcpPlan::Range(first) => {
            let base = u32::from(first);
            let range = Ipv4Net::new(first, 27)?.trunc();
            let mut taken: HashSet<IpAddr> =
                range.hosts().filter(|a| !(base..base + 16).contains(&u32::from(*a))).map(IpAddr::V4).collect();
            taken.insert(IpAddr::V4(plan.guest4));
            (range, taken)
        }
        DhcpPlan::Guest => (Ipv4Net::new(plan.guest4, 32)?, HashSet::new()),
    };
    taken.insert(IpAddr::V4(plan.gateway4));
    taken.extend(plan.dns4.map(IpAddr::V4));
    let v4 = IpamConfig {
        subnet: IpNet::V4(plan.subnet4),
        ip_range: Some(IpNet::V4(range)),
        gateway: IpAddr::V4(plan.gateway4),
        aux: Default::default(),
    };
    Ok(Pool { network_id: "slirp".into(), v4: Some(v4), v6: None, reserved: HashMap::new(), taken })
}

/// libslirp's gateway MAC: 52:55 and the gateway's IPv4 address.
pub fn slirp_mac(gw: Ipv4Addr) -> Mac {
    let o = gw.octets();
    Mac([0x52, 0x55, o[0], o[1], o[2], o[3]])
}
