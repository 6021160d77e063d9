//! The control plane's model: networks, endpoints and sandboxes, with Docker's semantics.
//!
//! These are what the store persists and what `inspect` shows. IDs are 64 hex characters like
//! Docker's; a network is named by its name or any unique prefix of its ID.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::{IpNet, Ipv6Net};
use serde::{Deserialize, Serialize};

/// Networks that exist from the first start and cannot be removed.
pub const PREDEFINED: [&str; 3] = ["bridge", "host", "none"];

/// Option keys (`-o`) this implementation acts on; others are kept and shown, as Docker does.
pub mod opt {
    pub const MTU: &str = "com.docker.network.driver.mtu";
    pub const AGING: &str = "vswitch.fdb.ageing_time";
    pub const MAC_LIMIT: &str = "vswitch.fdb.mac_limit";
    pub const IFACE_PREFIX: &str = "com.docker.network.container_iface_prefix";
    /// Networks this one routes to and from (comma-separated names); isolated otherwise.
    pub const ROUTE_TO: &str = "route-to";
    /// Upstream DNS servers of the network's embedded DNS (comma-separated `IP[:PORT]`;
    /// `--dns`); the host's resolv.conf when absent.
    pub const DNS_SERVERS: &str = "vswitch.dns.servers";
    /// "true": no DNS server at the gateway and no names published (`--dns-disable`).
    pub const DNS_DISABLE: &str = "vswitch.dns.disable";
    /// "false": no way out of the network (no NAT engine), as Docker's bridge driver reads it.
    pub const MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
    /// "true": TCP and UDP to the gateway's address reach the host's loopback (off by default,
    /// as slirp4netns's --disable-host-loopback is the safe side).
    pub const HOST_LOOPBACK: &str = "host-loopback";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Bridge,
    Host,
    Null,
}

impl Driver {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "bridge" | "" => Ok(Driver::Bridge),
            "host" => Ok(Driver::Host),
            "null" | "none" => Ok(Driver::Null),
            "overlay" | "macvlan" | "ipvlan" => Err(format!("driver {s:?} is not available yet in this build; use bridge")),
            _ => Err(format!("unknown driver {s:?}: expected bridge, host or null")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Host => "host",
            Driver::Null => "null",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfig {
    pub subnet: IpNet,
    pub ip_range: Option<IpNet>,
    pub gateway: IpAddr,
    #[serde(default)]
    pub aux: BTreeMap<String, IpAddr>,
}

impl IpamConfig {
    pub fn is_v4(&self) -> bool {
        matches!(self.subnet, IpNet::V4(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: Driver,
    /// RFC 3339.
    pub created: String,
    pub internal: bool,
    pub attachable: bool,
    pub enable_ipv6: bool,
    pub ipam: Vec<IpamConfig>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub mtu: u32,
    pub aging_secs: u32,
    pub mac_limit: u32,
    /// IDs of the networks this one may route to and from (`-o route-to=`).
    #[serde(default)]
    pub route_to: Vec<String>,
    /// Where the embedded DNS forwards names it does not know; empty: the host's resolvers.
    #[serde(default)]
    pub dns_servers: Vec<std::net::SocketAddr>,
    #[serde(default)]
    pub dns_disabled: bool,
}

impl Network {
    pub fn v4(&self) -> Option<&IpamConfig> {
        self.ipam.iter().find(|c| c.is_v4())
    }

    pub fn v6(&self) -> Option<&IpamConfig> {
        self.ipam.iter().find(|c| !c.is_v4())
    }

    pub fn gateway4(&self) -> Option<Ipv4Addr> {
        self.v4().and_then(|c| match c.gateway {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
    }

    pub fn gateway6(&self) -> Option<Ipv6Addr> {
        self.v6().and_then(|c| match c.gateway {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        })
    }

    /// Whether the gateway serves DNS and publishes names: user-defined bridge networks, as
    /// in Docker (the default bridge has no name resolution), unless disabled.
    pub fn dns_enabled(&self) -> bool {
        self.driver == Driver::Bridge && !self.is_predefined() && !self.dns_disabled
    }

    /// Whether containers reach the host and the world through the NAT engine.
    pub fn uplink(&self) -> bool {
        self.driver == Driver::Bridge && !self.internal && self.options.get(opt::MASQUERADE).is_none_or(|v| v != "false")
    }

    /// Whether the gateway's address stands for the host's loopback (needs the uplink).
    pub fn host_loopback(&self) -> bool {
        self.uplink() && self.options.get(opt::HOST_LOOPBACK).is_some_and(|v| v == "true")
    }

    pub fn is_predefined(&self) -> bool {
        PREDEFINED.contains(&self.name.as_str())
    }

    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    /// The gateway's MAC: locally administered, derived from the network ID so it is stable
    /// across restarts and distinct from endpoint MACs (02:42:...).
    pub fn gateway_mac(&self) -> vswitch_switch::Mac {
        let b = hex_bytes(&self.id);
        vswitch_switch::Mac([0x02, 0x56, b[0], b[1], b[2], b[3]])
    }

    pub fn iface_prefix(&self) -> &str {
        self.options.get(opt::IFACE_PREFIX).map_or("eth", String::as_str)
    }
}

fn hex_bytes(id: &str) -> [u8; 4] {
    let mut out = [0u8; 4];
    for (i, o) in out.iter_mut().enumerate() {
        *o = id.get(i * 2..i * 2 + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).unwrap_or(0);
    }
    out
}

/// A container's network stack: a network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: String,
    /// The container name (`--name`, default the namespace's name).
    pub name: String,
    /// A path to the namespace: /var/run/netns/NAME, a bind mount, or /proc/PID/ns/net.
    pub netns: PathBuf,
    /// Identity of the namespace when it was first seen, so a reused path or PID is not
    /// mistaken for the same sandbox.
    pub dev: u64,
    pub ino: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub network_id: String,
    /// None for a veth attached by interface name (the sandbox is not ours to manage).
    pub sandbox_id: Option<String>,
    /// The container name used in `Containers` and for DNS.
    pub name: String,
    /// Interface inside the sandbox (eth0), or the host-side veth for `--veth`.
    pub ifname: String,
    pub veth: bool,
    #[serde(with = "mac_text")]
    pub mac: vswitch_switch::Mac,
    pub ipv4: Option<Ipv4Addr>,
    pub prefix: u8,
    #[serde(default)]
    pub ipv6: Option<Ipv6Addr>,
    #[serde(default)]
    pub prefix6: u8,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Its addresses are handed out by DHCP instead of configured by us.
    #[serde(default)]
    pub dhcp: bool,
    /// Published ports (`-p`, `-P`), with the host port the engine bound (ephemeral ones too,
    /// so a restart binds the same).
    #[serde(default)]
    pub ports: Vec<crate::ports::PortMapping>,
}

/// A route the user added: `dst` reached through `via`, a host on `network_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRoute {
    pub dst: IpNet,
    pub via: IpAddr,
    pub network_id: String,
}

/// Everything the daemon persists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub networks: Vec<Network>,
    pub sandboxes: Vec<Sandbox>,
    pub endpoints: Vec<Endpoint>,
    /// This host's ULA /48, from which IPv6 networks without a subnet get a /64.
    #[serde(default)]
    pub ula48: Option<Ipv6Net>,
    #[serde(default)]
    pub routes: Vec<UserRoute>,
}

pub const STATE_VERSION: u32 = 1;

/// A fresh 64-hex ID.
pub fn new_id() -> String {
    let a: [u8; 32] = rand::random();
    a.iter().map(|b| format!("{b:02x}")).collect()
}

/// MACs are stored as text ("02:42:0a:0a:00:02").
mod mac_text {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use vswitch_switch::Mac;

    pub(super) fn serialize<S: Serializer>(m: &Mac, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(m)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}
