//! `vswitchctl route ...` and `vswitchctl neigh show`: the routing table and the neighbour cache.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{print_json, seg, table, Ctx};
use crate::client::ClientError;

#[derive(Debug, Subcommand)]
pub(super) enum RouteCmd {
    /// List routes: each network's own subnets, and routes users added.
    #[command(alias = "list")]
    Ls,
    /// Route DESTINATION through a host (a container acting as a router) on one of the networks.
    Add(Add),
    /// Remove a route that was added.
    #[command(alias = "del")]
    Rm(Rm),
}

#[derive(Debug, Args)]
pub(super) struct Add {
    /// Destination prefix, e.g. 192.168.50.0/24 or fd99::/48.
    destination: String,
    /// The next hop: an address inside one of the networks (the keyword `via` may precede it).
    #[arg(num_args = 1..=2, required = true)]
    via: Vec<String>,
}

#[derive(Debug, Args)]
pub(super) struct Rm {
    /// Destination prefix as added.
    destination: String,
}

impl RouteCmd {
    pub(super) fn exec(self, ctx: &Ctx) -> Result<(), ClientError> {
        match self {
            RouteCmd::Ls => {
                let v = ctx.call("GET", "/routes", None)?;
                if ctx.json() {
                    print_json(&v);
                    return Ok(());
                }
                let s = |r: &Value, k: &str| r[k].as_str().map_or_else(|| "-".to_string(), str::to_string);
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|r| vec![s(r, "Destination"), s(r, "Network"), s(r, "Via"), s(r, "Kind"), s(r, "ReachableFrom")])
                    .collect();
                table::print(&["DESTINATION", "NETWORK", "VIA", "KIND", "ROUTED-FROM"], &rows);
                Ok(())
            }
            RouteCmd::Add(a) => {
                let via = match a.via.as_slice() {
                    [kw, ip] if kw == "via" => ip.clone(),
                    [ip] if ip != "via" => ip.clone(),
                    _ => return Err(ClientError::Daemon("expected: route add DESTINATION [via] NEXT-HOP".into())),
                };
                ctx.call("POST", "/routes", Some(&json!({ "Destination": a.destination, "Via": via })))?;
                Ok(())
            }
            RouteCmd::Rm(r) => {
                ctx.call("DELETE", &format!("/routes?destination={}", seg(&r.destination)), None)?;
                Ok(())
            }
        }
    }
}

#[derive(Debug, Subcommand)]
pub(super) enum NeighCmd {
    /// The IP → MAC entries the gateway knows on a network (or on all).
    Show(Show),
}

#[derive(Debug, Args)]
pub(super) struct Show {
    network: Option<String>,
}

impl NeighCmd {
    pub(super) fn exec(self, ctx: &Ctx) -> Result<(), ClientError> {
        let NeighCmd::Show(s) = self;
        let path = match &s.network {
            Some(n) => format!("/neigh?network={}", seg(n)),
            None => "/neigh".into(),
        };
        let v = ctx.call("GET", &path, None)?;
        if ctx.json() {
            print_json(&v);
            return Ok(());
        }
        let s = |r: &Value, k: &str| match &r[k] {
            Value::String(x) => x.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        };
        let rows: Vec<Vec<String>> = v
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| vec![s(r, "Network"), s(r, "IP"), s(r, "MAC"), s(r, "State"), s(r, "Age")])
            .collect();
        table::print(&["NETWORK", "IP", "MAC", "STATE", "AGE"], &rows);
        Ok(())
    }
}
