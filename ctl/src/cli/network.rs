//! `vswitchctl network ...`: create, ls, inspect, rm, connect, disconnect, prune.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{print_json, seg, table, Ctx};
use crate::client::ClientError;
use crate::model::opt;

#[derive(Debug, Subcommand)]
pub(super) enum NetworkCmd {
    /// Create a network.
    Create(Create),
    /// List networks.
    #[command(alias = "list")]
    Ls(Ls),
    /// Show one or more networks in detail (Docker's JSON).
    Inspect(Inspect),
    /// Remove one or more networks.
    #[command(alias = "remove")]
    Rm(Rm),
    /// Connect a sandbox (network namespace) or a host veth to a network.
    Connect(Connect),
    /// Disconnect a sandbox from a network.
    Disconnect(Disconnect),
    /// Remove all networks that have no endpoints.
    Prune(Prune),
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

#[derive(Debug, Args)]
pub(super) struct Create {
    /// Network name.
    name: String,
    /// Driver: bridge (default), host, null.
    #[arg(short, long, default_value = "bridge")]
    driver: String,
    /// Subnet in CIDR form, IPv4 and/or IPv6 (default: the next free Docker pool).
    #[arg(long)]
    subnet: Vec<String>,
    /// Gateway address, one per subnet (default: the subnet's first host).
    #[arg(long)]
    gateway: Vec<String>,
    /// Allocate container addresses from this sub-range of a subnet.
    #[arg(long)]
    ip_range: Vec<String>,
    /// Reserve an address: NAME=IP (repeatable).
    #[arg(long = "aux-address", value_parser = key_value)]
    aux: Vec<(String, String)>,
    /// No route out of the network.
    #[arg(long)]
    internal: bool,
    /// Accepted for Docker compatibility (every network is attachable here).
    #[arg(long)]
    attachable: bool,
    /// Enable IPv6 (a /64 of this host's ULA /48 unless an IPv6 --subnet is given).
    #[arg(long)]
    ipv6: bool,
    /// Driver option KEY=VALUE (repeatable), e.g. com.docker.network.driver.mtu=9000.
    #[arg(short = 'o', long = "opt", value_parser = key_value)]
    opts: Vec<(String, String)>,
    /// Label KEY=VALUE (repeatable).
    #[arg(long, value_parser = key_value)]
    label: Vec<(String, String)>,
    /// MTU of the network's interfaces (same as -o com.docker.network.driver.mtu=N).
    #[arg(long)]
    mtu: Option<u32>,
    /// Seconds before a learned MAC is forgotten (0 = never; default 300).
    #[arg(long)]
    fdb_aging: Option<u32>,
    /// Most MACs one port may have learned (0 = no limit; default 1024).
    #[arg(long)]
    mac_limit: Option<u32>,
    /// Upstream DNS server for names the network does not know: IP or IP:PORT (repeatable;
    /// default: the host's resolv.conf).
    #[arg(long)]
    dns: Vec<String>,
    /// No DNS server at the gateway and no names published on this network.
    #[arg(long, conflicts_with = "dns")]
    dns_disable: bool,
}

/// Pairs each --gateway, --ip-range and --aux-address with the --subnet that contains it,
/// as Docker does.
fn ipam_configs(subnets: &[String], gateways: &[String], ranges: &[String], aux: &[(String, String)]) -> Result<Vec<Value>, ClientError> {
    use ipnet::IpNet;
    use std::net::IpAddr;
    let bad = |m: String| ClientError::Daemon(m);
    let nets: Vec<IpNet> = subnets
        .iter()
        .map(|s| s.parse().map_err(|_| bad(format!("invalid subnet {s:?}: expected a CIDR like 10.10.0.0/24 or fd20::/64"))))
        .collect::<Result<_, _>>()?;
    if nets.is_empty() {
        if !gateways.is_empty() || !ranges.is_empty() || !aux.is_empty() {
            return Err(bad("--gateway, --ip-range and --aux-address need --subnet".into()));
        }
        return Ok(vec![]);
    }
    let mut out: Vec<Value> = subnets.iter().map(|s| json!({ "Subnet": s, "AuxiliaryAddresses": {} })).collect();
    let owner = |what: &str, ip: IpAddr| {
        nets.iter().position(|n| n.contains(&ip)).ok_or_else(|| bad(format!("{what} {ip} is not inside any --subnet")))
    };
    for g in gateways {
        let ip: IpAddr = g.parse().map_err(|_| bad(format!("invalid gateway {g:?}: expected an IP address")))?;
        out[owner("gateway", ip)?]["Gateway"] = json!(g);
    }
    for r in ranges {
        let n: IpNet = r.parse().map_err(|_| bad(format!("invalid ip-range {r:?}: expected a CIDR")))?;
        out[owner("ip-range", n.network())?]["IPRange"] = json!(r);
    }
    for (k, v) in aux {
        let ip: IpAddr = v.parse().map_err(|_| bad(format!("invalid auxiliary address {v:?}: expected an IP address")))?;
        out[owner("auxiliary address", ip)?]["AuxiliaryAddresses"][k] = json!(v);
    }
    Ok(out)
}

/// A wrong --dns is named before anything is sent.
fn check_dns_server(s: &str) -> Result<(), ClientError> {
    crate::dns::parse_server(s).map(|_| ()).map_err(|e| ClientError::Daemon(format!("--dns: {e}")))
}

impl Create {
    fn exec(self, ctx: &Ctx) -> Result<(), ClientError> {
        let mut options: BTreeMap<String, String> = self.opts.into_iter().collect();
        for (k, v) in [(opt::MTU, self.mtu), (opt::AGING, self.fdb_aging), (opt::MAC_LIMIT, self.mac_limit)] {
            if let Some(v) = v {
                options.insert(k.to_string(), v.to_string());
            }
        }
        for d in &self.dns {
            check_dns_server(d)?;
        }
        if !self.dns.is_empty() {
            options.insert(opt::DNS_SERVERS.to_string(), self.dns.join(","));
        }
        if self.dns_disable {
            options.insert(opt::DNS_DISABLE.to_string(), "true".to_string());
        }
        let labels: BTreeMap<String, String> = self.label.into_iter().collect();
        let config = ipam_configs(&self.subnet, &self.gateway, &self.ip_range, &self.aux)?;
        let body = json!({
            "Name": self.name,
            "Driver": self.driver,
            "Internal": self.internal,
            "Attachable": self.attachable,
            "EnableIPv6": self.ipv6,
            "IPAM": { "Driver": "default", "Config": config },
            "Options": options,
            "Labels": labels,
        });
        let v = ctx.call("POST", "/networks/create", Some(&body))?;
        if ctx.json() {
            print_json(&v);
        } else {
            println!("{}", v["Id"].as_str().unwrap_or_default());
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
pub(super) struct Ls {
    /// Only print IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Show full IDs.
    #[arg(long)]
    no_trunc: bool,
}

impl Ls {
    fn exec(self, ctx: &Ctx) -> Result<(), ClientError> {
        let v = ctx.call("GET", "/networks", None)?;
        if ctx.json() {
            print_json(&v);
            return Ok(());
        }
        let nets = v.as_array().cloned().unwrap_or_default();
        let id = |n: &Value| {
            let id = n["Id"].as_str().unwrap_or_default().to_string();
            if self.no_trunc {
                id
            } else {
                id.chars().take(12).collect()
            }
        };
        if self.quiet {
            nets.iter().for_each(|n| println!("{}", id(n)));
            return Ok(());
        }
        let s = |n: &Value, k: &str| n[k].as_str().unwrap_or_default().to_string();
        let rows: Vec<Vec<String>> = nets
            .iter()
            .map(|n| {
                let subnet = n["IPAM"]["Config"][0]["Subnet"].as_str().unwrap_or("").to_string();
                let eps = n["Containers"].as_object().map_or(0, |m| m.len());
                vec![id(n), s(n, "Name"), s(n, "Driver"), s(n, "Scope"), subnet, eps.to_string()]
            })
            .collect();
        table::print(&["NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNET", "ENDPOINTS"], &rows);
        Ok(())
    }
}

#[derive(Debug, Args)]
pub(super) struct Inspect {
    /// Network names or IDs.
    #[arg(required = true)]
    networks: Vec<String>,
}

impl Inspect {
    fn exec(self, ctx: &Ctx) -> Result<(), ClientError> {
        let mut out = Vec::new();
        let mut failed = None;
        for n in &self.networks {
            match ctx.call("GET", &format!("/networks/{}", seg(n)), None) {
                Ok(v) => out.push(v),
                Err(e) => failed = Some(e),
            }
        }
        print_json(&Value::Array(out));
        failed.map_or(Ok(()), Err)
    }
}

#[derive(Debug, Args)]
pub(super) struct Rm {
    /// Network names or IDs.
    #[arg(required = true)]
    networks: Vec<String>,
}

impl Rm {
    fn exec(self, ctx: &Ctx) -> Result<(), ClientError> {
        let mut failed = 0;
        for n in &self.networks {
            match ctx.call("DELETE", &format!("/networks/{}", seg(n)), None) {
                Ok(_) => println!("{n}"),
                Err(e) => {
                    eprintln!("Error: {e}");
                    failed += 1;
                }
            }
        }
        if failed == 0 {
            return Ok(());
        }
        Err(ClientError::Daemon(format!("{failed} of {} networks not removed", self.networks.len())))
    }
}

#[derive(Debug, Args)]
pub(super) struct Connect {
    /// Network name or ID.
    network: String,
    /// The sandbox: a namespace name (/var/run/netns), a path to a namespace, or a PID.
    #[arg(required_unless_present = "veth")]
    sandbox: Option<String>,
    /// Static IPv4 address.
    #[arg(long)]
    ip: Option<String>,
    /// Static IPv6 address.
    #[arg(long)]
    ip6: Option<String>,
    /// Static MAC address (default 02:42 + the IPv4 address).
    #[arg(long)]
    mac: Option<String>,
    /// Network-scoped alias (repeatable).
    #[arg(long)]
    alias: Vec<String>,
    /// Container name (default: the namespace's name).
    #[arg(long)]
    name: Option<String>,
    /// Attach this existing host interface (the host end of a veth) instead of a sandbox.
    #[arg(long, conflicts_with = "sandbox")]
    veth: Option<String>,
    /// Leave the interface unconfigured: the sandbox's DHCP client (udhcpc, dhclient) gets
    /// the address IPAM reserved for it, and a default route.
    #[arg(long, conflicts_with_all = ["veth", "ip6"])]
    dhcp: bool,
    /// Publish a container port on the host: [ip:][hostport:]containerport[/tcp|udp], ports or
    /// ranges (8000-8010:80-90); no host port: an ephemeral one (repeatable).
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Publish every --expose'd port on an ephemeral host port.
    #[arg(short = 'P', long)]
    publish_all: bool,
    /// A port the container serves: PORT[-PORT][/tcp|udp] (repeatable; published by -P).
    #[arg(long)]
    expose: Vec<String>,
}

impl Connect {
    fn exec(self, ctx: &Ctx) -> Result<(), ClientError> {
        let body = json!({
            "Container": self.sandbox,
            "Name": self.name,
            "Veth": self.veth,
            "DHCP": self.dhcp,
            "Ports": self.publish,
            "Expose": self.expose,
            "PublishAll": self.publish_all,
            "EndpointConfig": { "IPAMConfig": { "IPv4Address": self.ip, "IPv6Address": self.ip6 }, "MacAddress": self.mac, "Aliases": self.alias },
        });
        let v = ctx.call("POST", &format!("/networks/{}/connect", seg(&self.network)), Some(&body))?;
        if ctx.json() {
            print_json(&v);
        } else {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            let v6 = s("IPv6Address");
            println!(
                "{} {} {} {}{}",
                s("Name"),
                s("Interface"),
                s("IPv4Address"),
                s("MacAddress"),
                if v6.is_empty() { String::new() } else { format!(" {v6}") }
            );
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
pub(super) struct Disconnect {
    /// Network name or ID.
    network: String,
    /// The sandbox as given to connect, its container name, or the veth's name.
    sandbox: String,
    /// Succeed even if it is not connected.
    #[arg(short, long)]
    force: bool,
}

impl Disconnect {
    fn exec(self, ctx: &Ctx) -> Result<(), ClientError> {
        let body = json!({ "Container": self.sandbox, "Force": self.force });
        ctx.call("POST", &format!("/networks/{}/disconnect", seg(&self.network)), Some(&body))?;
        Ok(())
    }
}

#[derive(Debug, Args)]
pub(super) struct Prune {
    /// Accepted for Docker compatibility; vswitchctl never prompts.
    #[arg(short, long)]
    force: bool,
}

impl Prune {
    fn exec(self, ctx: &Ctx) -> Result<(), ClientError> {
        let _ = self.force;
        let v = ctx.call("POST", "/networks/prune", None)?;
        if ctx.json() {
            print_json(&v);
            return Ok(());
        }
        let names = v["NetworksDeleted"].as_array().cloned().unwrap_or_default();
        if !names.is_empty() {
            println!("Deleted Networks:");
            names.iter().for_each(|n| println!("{}", n.as_str().unwrap_or_default()));
        }
        Ok(())
    }
}

impl NetworkCmd {
    pub(super) fn exec(self, ctx: &Ctx) -> Result<(), ClientError> {
        match self {
            NetworkCmd::Create(c) => c.exec(ctx),
            NetworkCmd::Ls(c) => c.exec(ctx),
            NetworkCmd::Inspect(c) => c.exec(ctx),
            NetworkCmd::Rm(c) => c.exec(ctx),
            NetworkCmd::Connect(c) => c.exec(ctx),
            NetworkCmd::Disconnect(c) => c.exec(ctx),
            NetworkCmd::Prune(c) => c.exec(ctx),
        }
    }
}
