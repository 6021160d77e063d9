//! `vswitchctl fdb show [NETWORK]`: the learned and static MAC entries.

use clap::{Args, Subcommand};
use serde_json::Value;

use super::{print_json, seg, table, Ctx};
use crate::client::ClientError;

#[derive(Debug, Subcommand)]
pub(super) enum FdbCmd {
    /// List FDB entries, of one network or of all.
    Show(Show),
}

#[derive(Debug, Args)]
pub(super) struct Show {
    /// Network name or ID (default: all networks).
    network: Option<String>,
}

impl FdbCmd {
    pub(super) fn exec(self, ctx: &Ctx) -> Result<(), ClientError> {
        let FdbCmd::Show(s) = self;
        let path = match &s.network {
            Some(n) => format!("/fdb?network={}", seg(n)),
            None => "/fdb".to_string(),
        };
        let v = ctx.call("GET", &path, None)?;
        if ctx.json() {
            print_json(&v);
            return Ok(());
        }
        let str_of = |r: &Value, k: &str| r[k].as_str().map_or_else(|| "-".to_string(), str::to_string);
        let rows: Vec<Vec<String>> = v
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                let stat = r["Static"].as_bool().unwrap_or(false);
                vec![
                    str_of(r, "Network"),
                    str_of(r, "MAC"),
                    str_of(r, "Endpoint"),
                    str_of(r, "Interface"),
                    r["Port"].to_string(),
                    if stat { "static" } else { "learned" }.to_string(),
                    if stat { "-".to_string() } else { format!("{}s", r["Age"]) },
                ]
            })
            .collect();
        table::print(&["NETWORK", "MAC", "ENDPOINT", "IFACE", "PORT", "TYPE", "AGE"], &rows);
        Ok(())
    }
}
