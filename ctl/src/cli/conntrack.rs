//! `vswitchctl conntrack ls|flush`: the flows the slirp engine carries on host sockets.

use clap::Subcommand;
use serde_json::Value;

use super::{print_json, table, Ctx};
use crate::client::ClientError;

#[derive(Debug, Subcommand)]
pub(super) enum ConntrackCmd {
    /// List the tracked flows: protocol, container address, destination, state, counters.
    #[command(alias = "list")]
    Ls,
    /// Close every flow and release its host socket.
    Flush,
}

impl ConntrackCmd {
    pub(super) fn exec(self, ctx: &Ctx) -> Result<(), ClientError> {
        if let ConntrackCmd::Flush = self {
            ctx.call("POST", "/conntrack/flush", None)?;
            return Ok(());
        }
        let v = ctx.call("GET", "/conntrack", None)?;
        if ctx.json() {
            print_json(&v);
            return Ok(());
        }
        let s = |r: &Value, k: &str| r[k].as_str().unwrap_or("-").to_string();
        let pair = |r: &Value, k: &str| format!("{}/{}", r[k][0].as_u64().unwrap_or(0), r[k][1].as_u64().unwrap_or(0));
        let rows: Vec<Vec<String>> = v
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                vec![
                    s(r, "Network"),
                    s(r, "Proto"),
                    s(r, "Source"),
                    s(r, "Destination"),
                    s(r, "State"),
                    format!("{}s", r["AgeMs"].as_u64().unwrap_or(0) / 1000),
                    format!("{}s", r["ExpiresInMs"].as_u64().unwrap_or(0) / 1000),
                    pair(r, "Packets"),
                    pair(r, "Bytes"),
                ]
            })
            .collect();
        table::print(&["NETWORK", "PROTO", "SOURCE", "DESTINATION", "STATE", "AGE", "EXPIRES", "PKTS(OUT/IN)", "BYTES(OUT/IN)"], &rows);
        Ok(())
    }
}
