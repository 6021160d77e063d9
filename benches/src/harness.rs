//! What both front ends (`vswitch-compare`, `vswitch-bench`) share: cleaning up after killed runs, vswitchd's counters and log after a run, sample metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::systems::Daemon;
use crate::{cmd, dns, netns, rootlesskit, Result};

/// Removes what runs that were killed left behind: processes, namespaces, host links,
/// /etc/netns entries and temporary directories. Prints each; false if something stayed.
pub fn cleanup(program: &str) -> Result<bool> {
    let mut ok = true;
    let mut any = false;
    // Processes first, so that no vswitchd rewrites a file or holds a port while the rest goes.
    for (pid, cmdline) in cmd::leftover_processes() {
        any = true;
        // The start of the command line: program and first options (dnsmasq's run long).
        let short: String = cmdline.chars().take(100).collect();
        let more = if short.len() < cmdline.len() { "…" } else { "" };
        if cmd::terminate(pid, Duration::from_secs(3)) {
            println!("stopped process {pid}: {short}{more}");
        } else {
            eprintln!("{program}: cannot stop process {pid}: {short}{more}");
            ok = false;
        }
    }
    let mut remove = |what: &str, name: &str, res: Result<()>| match res {
        Ok(()) => println!("deleted {what} {name}"),
        Err(e) => {
            eprintln!("{program}: {e}");
            ok = false;
        }
    };
    for ns in netns::leftovers() {
        any = true;
        remove("namespace", &ns, cmd::run("ip", &["netns", "del", &ns]).map(drop));
    }
    for link in dns::leftover_links() {
        any = true;
        remove("link", &link, cmd::run("ip", &["link", "del", &link]).map(drop));
    }
    for dir in cmd::leftover_dirs() {
        any = true;
        let name = dir.display().to_string();
        remove("directory", &name, std::fs::remove_dir_all(&dir).map_err(|e| crate::err(format!("cannot remove {name}: {e}"))));
    }
    for user in rootlesskit::leftover_users() {
        any = true;
        remove("user", &user, rootlesskit::remove_user(&user));
    }
    for name in netns::etc_leftovers() {
        any = true;
        if netns::remove_etc_netns(&name) {
            println!("removed {}/{name}", netns::ETC_NETNS);
        } else {
            eprintln!("{program}: left {}/{name}: it holds files vswitchd did not write", netns::ETC_NETNS);
        }
    }
    if !any {
        println!("nothing to clean up");
    }
    Ok(ok)
}

/// What killed runs left behind, in one line for a note; empty if nothing.
pub fn leftovers_line() -> String {
    let mut parts = Vec::new();
    let n = cmd::leftover_processes().len();
    if n > 0 {
        parts.push(format!("{n} process(es)"));
    }
    let ns = netns::leftovers();
    if !ns.is_empty() {
        parts.push(format!("{} namespace(s) ({})", ns.len(), ns.join(" ")));
    }
    let links = dns::leftover_links();
    if !links.is_empty() {
        parts.push(format!("{} link(s) ({})", links.len(), links.join(" ")));
    }
    let users = rootlesskit::leftover_users();
    if !users.is_empty() {
        parts.push(format!("{} user(s) ({})", users.len(), users.join(" ")));
    }
    let dirs = cmd::leftover_dirs().len() + netns::etc_leftovers().len();
    if dirs > 0 {
        parts.push(format!("{dirs} directory(ies)"));
    }
    parts.join(", ")
}

/// Records what vswitchd counted (drops explain losses; the DNS counters say what answered),
/// then stops it and records how that went and what it logged. `say` prints a line for the
/// person watching; the notes returned go into the results.
pub fn finish_daemon(d: &mut Daemon, tag: &str, say: &mut dyn FnMut(String)) -> Vec<String> {
    let mut notes = Vec::new();
    match d.ctl_json(&["stats"]) {
        Ok(stats) => {
            let line = drops_line(&stats);
            if !line.is_empty() {
                say(format!("{tag}: vswitchd counted {line}"));
            }
            say(format!("{tag}: vswitchd ports: {}", traffic_line(&stats)));
            if let Some(dns) = stats.get("Dns").filter(|v| v.get("Queries").and_then(Value::as_u64).unwrap_or(0) > 0) {
                say(format!("{tag}: vswitchd DNS: {}", compact(dns)));
            }
            if let Some(nat) = stats.get("Nat").filter(|v| v.as_object().is_some_and(|o| !o.is_empty())) {
                say(format!("{tag}: vswitchd NAT: {}", compact(nat)));
            }
            notes.push(format!("{tag}: stats {}", compact(&stats)));
        }
        Err(e) => notes.push(format!("{tag}: `vswitchctl stats` failed: {e}")),
    }
    let (took, killed) = d.stop();
    let errors: Vec<String> = d.log().lines().filter(|l| l.contains(" ERROR ") || l.contains(" WARN ")).map(str::to_string).collect();
    if killed || took > Duration::from_secs(2) {
        notes.push(format!("{tag}: vswitchd took {:.1} s to stop{}", took.as_secs_f64(), if killed { " and was killed" } else { "" }));
    }
    if !errors.is_empty() {
        say(format!("{tag}: vswitchd logged {} warning(s)/error(s), first: {}", errors.len(), errors[0]));
        notes.push(format!("{tag}: vswitchd log: {}", errors.join(" | ")));
    }
    notes
}

/// A CPU share for a line: `kernel` where there is no forwarding process to measure.
pub fn pct(p: Option<f64>) -> String {
    p.map_or_else(|| "kernel".to_string(), |p| format!("{p:.0}%"))
}

/// The numeric fields of a sample, by name.
pub fn to_metrics<T: serde::Serialize>(s: &T) -> BTreeMap<String, f64> {
    match serde_json::to_value(s) {
        Ok(Value::Object(o)) => o.into_iter().filter_map(|(k, v)| Some((k, v.as_f64()?))).collect(),
        _ => Default::default(),
    }
}

/// Non-zero drop counters of every port in a `vswitchctl stats` answer.
pub fn drops_line(stats: &Value) -> String {
    let mut parts = Vec::new();
    for p in stats.get("Ports").and_then(Value::as_array).into_iter().flatten() {
        let name = p.get("Interface").and_then(Value::as_str).unwrap_or("?");
        let drops: Vec<String> = p
            .get("Drops")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| v.as_u64().filter(|n| *n > 0).map(|n| format!("{k}={n}")))
            .collect();
        if !drops.is_empty() {
            parts.push(format!("{name}: {}", drops.join(" ")));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("drops: {}", parts.join("; "))
    }
}

/// Frames in and out of every port in a `vswitchctl stats` answer, and how they were handled.
pub fn traffic_line(stats: &Value) -> String {
    let n = |p: &Value, k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
    let parts: Vec<String> = stats
        .get("Ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{} rx {} ({} B/frame) tx {} flooded {} punted {}",
                p.get("Interface").and_then(Value::as_str).unwrap_or("?"),
                n(p, "RxPackets"),
                n(p, "RxBytes") / n(p, "RxPackets").max(1),
                n(p, "TxPackets"),
                n(p, "Flooded"),
                n(p, "Punted")
            )
        })
        .collect();
    parts.join("; ")
}

/// One-line JSON.
pub fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
