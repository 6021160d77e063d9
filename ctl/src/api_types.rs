//! Request bodies of the HTTP API, shaped like Docker's Engine API where Docker has the call.
//!
//! Unknown fields are ignored, as Docker's own clients send fields this daemon has no use for
//! (CheckDuplicate, Scope, Links, DriverOpts...); wrong types are refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfigReq {
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default, rename = "IPRange")]
    pub ip_range: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub auxiliary_addresses: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamReq {
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub config: Vec<IpamConfigReq>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateNetworkReq {
    pub name: String,
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub attachable: bool,
    #[serde(default, rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    #[serde(default, rename = "IPAM")]
    pub ipam: Option<IpamReq>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointIpamReq {
    #[serde(default, rename = "IPv4Address")]
    pub ipv4_address: Option<String>,
    #[serde(default, rename = "IPv6Address")]
    pub ipv6_address: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointConfigReq {
    #[serde(default, rename = "IPAMConfig")]
    pub ipam_config: Option<EndpointIpamReq>,
    #[serde(default)]
    pub mac_address: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConnectReq {
    /// The sandbox: a namespace name, a path, or a PID. Absent with `veth`.
    #[serde(default)]
    pub container: Option<String>,
    /// The container name (default: the namespace's name).
    #[serde(default)]
    pub name: Option<String>,
    /// Attach an existing interface of the host (the host end of a veth) instead of a sandbox.
    #[serde(default)]
    pub veth: Option<String>,
    #[serde(default)]
    pub endpoint_config: Option<EndpointConfigReq>,
    /// Create the interface without addresses: the sandbox's DHCP client asks for them.
    #[serde(default, rename = "DHCP")]
    pub dhcp: bool,
    /// Published ports, as `-p` takes them: `[ip:][hostport:]containerport[/proto]`.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Ports the container serves (`--expose`), published on ephemeral host ports by `PublishAll`.
    #[serde(default)]
    pub expose: Vec<String>,
    #[serde(default)]
    pub publish_all: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DisconnectReq {
    /// The sandbox (as given to connect), its container name, or the veth's name.
    pub container: String,
    #[serde(default)]
    pub force: bool,
}
