//! `vswitchctl stats`: per-port counters with every drop reason, per-worker, gateway, DNS and NAT totals.

use clap::Args;
use serde_json::Value;

use super::{print_json, table, Ctx};
use crate::client::ClientError;

#[derive(Debug, Args)]
pub(super) struct StatsCmd {}

impl StatsCmd {
    pub(super) fn exec(self, ctx: &Ctx) -> Result<(), ClientError> {
        let v = ctx.call("GET", "/stats", None)?;
        if ctx.json() {
            print_json(&v);
            return Ok(());
        }
        let s = |r: &Value, k: &str| r[k].as_str().map_or_else(|| "-".to_string(), str::to_string);
        let n = |r: &Value, k: &str| r[k].as_u64().unwrap_or(0).to_string();
        let ports = v["Ports"].as_array().cloned().unwrap_or_default();
        let rows: Vec<Vec<String>> = ports
            .iter()
            .map(|p| {
                let reasons: Vec<String> = p["Drops"]
                    .as_object()
                    .map(|m| m.iter().filter(|(_, c)| c.as_u64().unwrap_or(0) > 0).map(|(k, c)| format!("{k}={c}")).collect())
                    .unwrap_or_default();
                let state = if p["Down"].as_bool().unwrap_or(false) { "down" } else { "up" };
                vec![
                    s(p, "Network"),
                    s(p, "Endpoint"),
                    s(p, "Interface"),
                    format!("{}/{}", s(p, "Kind"), state),
                    n(p, "RxPackets"),
                    n(p, "RxBytes"),
                    n(p, "TxPackets"),
                    n(p, "TxBytes"),
                    n(p, "Dropped"),
                    p["SandboxTxDropped"].as_u64().map_or_else(|| "-".to_string(), |v| v.to_string()),
                    if reasons.is_empty() { "-".into() } else { reasons.join(",") },
                ]
            })
            .collect();
        table::print(
            &["NETWORK", "ENDPOINT", "IFACE", "KIND", "RX-PKTS", "RX-BYTES", "TX-PKTS", "TX-BYTES", "DROPPED", "NOT-READ", "DROP-REASONS"],
            &rows,
        );
        println!("(NOT-READ: frames the sandbox sent that its kernel dropped because vswitchd's queue was full)");
        println!();
        let workers: Vec<Vec<String>> = v["Workers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|w| vec![n(w, "Worker"), n(w, "Wakeups"), n(w, "Batches"), n(w, "Frames")])
            .collect();
        table::print(&["WORKER", "WAKEUPS", "BATCHES", "FRAMES"], &workers);
        let g = &v["Gateway"];
        println!(
            "\ngateway: arp replies {}, icmp echo replies {}, nd adverts {}, icmpv6 echo replies {}, malformed {}, ignored {}",
            n(g, "ArpReplies"),
            n(g, "IcmpEchoReplies"),
            n(g, "NdAdverts"),
            n(g, "Icmp6EchoReplies"),
            n(g, "Malformed"),
            n(g, "Ignored")
        );
        let d = &v["Dns"];
        println!(
            "dns: {} queries, {} answered locally, {} forwarded, {} cache hits ({} entries), {} servfail, {} upstream errors, {} truncated, {} dropped",
            n(d, "Queries"),
            n(d, "Local"),
            n(d, "Forwarded"),
            n(d, "CacheHits"),
            n(d, "CacheEntries"),
            n(d, "ServFail"),
            n(d, "UpstreamErrors"),
            n(d, "Truncated"),
            n(d, "Dropped")
        );
        let t = &v["Nat"];
        let drops: Vec<String> = t["Drops"]
            .as_object()
            .map(|m| m.iter().filter(|(_, c)| c.as_u64().unwrap_or(0) > 0).map(|(k, c)| format!("{k}={c}")).collect())
            .unwrap_or_default();
        println!(
            "nat: {} tcp open ({} opened, {} refused), {} udp flows open, {} icmp flows open, {} published ports, {} bytes to host, {} from host, drops: {}",
            n(t, "TcpOpen"),
            n(t, "TcpOpened"),
            n(t, "TcpRefused"),
            n(t, "UdpOpen"),
            n(t, "IcmpOpen"),
            n(t, "PublishedPorts"),
            n(t, "BytesToHost"),
            n(t, "BytesFromHost"),
            if drops.is_empty() { "-".to_string() } else { drops.join(",") }
        );
        println!("fdb: {} entries, {} bytes of tables", v["Fdb"]["Entries"], v["Fdb"]["TableBytes"]);
        Ok(())
    }
}
