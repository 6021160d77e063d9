//! The machine a comparison runs on, and the tools it needs (with what to install when missing).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cmd;
use crate::systems::Kind;
use crate::{err, Result};

/// What the report says about the machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub mem_gib: f64,
    pub kernel: String,
    pub iperf3: String,
    pub vswitchd: Option<String>,
    /// Versions of the DNS comparison's tools, when installed.
    pub dnsmasq: Option<String>,
    pub dnsperf: Option<String>,
    /// Versions of the NAT comparison's peers, when installed.
    pub pasta: Option<String>,
    pub slirp4netns: Option<String>,
    /// Open vSwitch's version (the L2 comparison's userspace-datapath peer), when installed.
    pub ovs: Option<String>,
    pub date_utc: String,
}

impl Machine {
    /// Reads the machine's description; `vswitchd` is the daemon binary if it will be used.
    pub fn probe(vswitchd: Option<&Path>) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_string(), |(_, v)| v.trim().to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 =
            meminfo.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0.0);
        let first_line = |prog: &str, arg: &str| {
            cmd::run_within(prog, &[arg], Duration::from_secs(5)).ok().and_then(|s| s.lines().next().map(str::to_string))
        };
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            mem_gib: mem_kib / (1024.0 * 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
            iperf3: first_line("iperf3", "--version").unwrap_or_else(|| "missing".into()),
            vswitchd: vswitchd.and_then(|p| first_line(p.to_str()?, "--version")),
            dnsmasq: first_line("dnsmasq", "--version"),
            // dnsperf has no --version; its help ends with "Version 2.10.0".
            dnsperf: cmd::run_within("dnsperf", &["-h"], Duration::from_secs(5)).ok().and_then(|s| {
                s.lines().find(|l| l.starts_with("Version ")).map(|l| format!("dnsperf {}", l.trim_start_matches("Version ")))
            }),
            pasta: peer_version(Kind::Pasta),
            slirp4netns: peer_version(Kind::Slirp4netns),
            ovs: peer_version(Kind::Ovs),
            date_utc: first_line("date", "-u").unwrap_or_default(),
        }
    }
}

/// The program a peer runs as, and its Debian package, for the peers that may be missing
/// (the NAT comparison's are skipped when they are; dnsmasq is required, see [`check_prerequisites`]).
pub fn peer_program(kind: Kind) -> Option<(&'static str, &'static str)> {
    match kind {
        Kind::Pasta => Some(("pasta", "passt")),
        Kind::Slirp4netns => Some(("slirp4netns", "slirp4netns")),
        Kind::Ovs => Some(("ovs-vswitchd", "openvswitch-switch")),
        _ => None,
    }
}

/// The Debian package to install when `kind` is a peer whose program is missing.
pub fn missing_peer(kind: Kind) -> Option<&'static str> {
    peer_program(kind).filter(|(prog, _)| cmd::which(prog).is_none()).map(|(_, package)| package)
}

/// A peer's version: the first line of `--version`, with the package's version when the
/// program does not know its own (Debian 12's pasta says "pasta unknown version") and is the
/// package's own file (not, say, a newer pasta first in PATH: `scripts/pasta-current`).
fn peer_version(kind: Kind) -> Option<String> {
    let (prog, package) = peer_program(kind)?;
    let path = std::fs::canonicalize(cmd::which(prog)?).ok()?;
    let path_s = path.to_str()?;
    let first_line = |s: String| s.lines().next().map(str::to_string);
    let own = cmd::run_within(path_s, &["--version"], Duration::from_secs(5)).ok().and_then(first_line).or_else(|| {
        // pasta 2025 leaves `--version` unwritten into a pipe (it _exits with stdout buffered):
        // a terminal's line buffering gets it out.
        let line = format!("{path_s} --version");
        cmd::run_within("script", &["-qec", &line, "/dev/null"], Duration::from_secs(5)).ok().and_then(first_line)
    });
    let own = own.map(|o| o.trim().to_string()).filter(|o| !o.is_empty());
    let packaged =
        cmd::run_within("dpkg-query", &["-S", path_s], Duration::from_secs(5)).is_ok_and(|o| o.starts_with(&format!("{package}:")));
    let pkg = packaged
        .then(|| cmd::run_within("dpkg-query", &["-W", "-f", "${Version}", package], Duration::from_secs(5)).ok())
        .flatten()
        .filter(|v| !v.is_empty());
    match (own, pkg) {
        (Some(o), Some(p)) if o.contains("unknown") => Some(format!("{prog} {p} (Debian package {package})")),
        (Some(o), _) if packaged => Some(o),
        (Some(o), _) => Some(format!("{o} ({path_s})")),
        (None, Some(p)) => Some(format!("{prog} {p} (Debian package {package})")),
        (None, None) => Some(format!("{prog} (version unknown, {path_s})")),
    }
}

/// Tools the comparison runs, and the Debian package of each.
const TOOLS: [(&str, &str); 5] = [("ip", "iproute2"), ("ss", "iproute2"), ("iperf3", "iperf3"), ("kill", "procps"), ("sysctl", "procps")];
/// Tools the DNS comparison runs (dnsperf is optional: a cross-check).
const DNS_TOOLS: [(&str, &str); 3] = [("ip", "iproute2"), ("kill", "procps"), ("dnsmasq", "dnsmasq-base")];
/// Tools the NAT comparison runs (its peers, pasta and slirp4netns, are optional: see [`missing_peer`]).
const NAT_TOOLS: [(&str, &str); 5] =
    [("ip", "iproute2"), ("ss", "iproute2"), ("iperf3", "iperf3"), ("kill", "procps"), ("unshare", "util-linux")];
/// What rootlesskit needs to map the run's user's subordinate ids (NAT through rootlesskit only).
const ROOTLESSKIT_TOOLS: [(&str, &str); 2] = [("newuidmap", "uidmap"), ("newgidmap", "uidmap")];

/// Fails, naming what to install, unless every tool the asked comparisons need is there
/// (switching and routing: `network`; DNS: `dns`; NAT: `nat`) and we run as root.
pub fn check_prerequisites(network: bool, dns: bool, nat: bool) -> Result<()> {
    let rootless = nat && std::env::var_os(crate::rootlesskit::ENV).is_some();
    let tools = TOOLS.iter().filter(|_| network).chain(DNS_TOOLS.iter().filter(|_| dns)).chain(NAT_TOOLS.iter().filter(|_| nat));
    let tools = tools.chain(ROOTLESSKIT_TOOLS.iter().filter(|_| rootless));
    let mut missing: Vec<&str> = tools.filter(|(t, _)| cmd::which(t).is_none()).map(|(_, p)| *p).collect();
    missing.sort_unstable();
    missing.dedup();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("missing tools; install them with: apt-get install {}", missing.join(" ")));
    }
    if !is_root() {
        problems.push("must run as root (it creates network namespaces, veths and bridges)".to_string());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(err(problems.join("\n")))
    }
}

/// Whether the effective user is root (from /proc, no libc call needed).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0")))
        .unwrap_or(false)
}
