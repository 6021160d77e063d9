//! Samples, their summaries (median, min–max), the printed tables and ratios, and the JSON file.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::machine::Machine;
use crate::systems::Kind;

/// What was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// iperf3, one TCP stream.
    Tcp,
    /// UDP packet rate with sendmmsg/recvmmsg.
    Udp,
    /// UDP ping-pong round trips.
    Rtt,
    /// DNS queries for names the server knows itself (endpoints; dnsmasq's --host-record).
    DnsLocal,
    /// DNS queries for upstream names the forwarder has cached.
    DnsCached,
    /// iperf3, one TCP stream from a namespace to the host's loopback through the NAT.
    NatOut,
    /// The same connection with the data the other way (`iperf3 -R`): host to namespace.
    NatOutRev,
    /// 1-byte TCP request/response on one connection, namespace to the host's loopback.
    NatRr,
    /// iperf3, one TCP stream from the host's loopback to a port published into the namespace.
    PortfwdIn,
    /// The same connection with the data the other way (`iperf3 -R`): namespace to the client.
    PortfwdInRev,
    /// New TCP connections per second to a published port (connect, a byte each way, close).
    ConnRate,
}

/// The comparisons workloads belong to: each has its systems, tables and ratios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// Switching and routing between two namespaces (TCP, UDP, RTT).
    Net,
    /// DNS servers.
    Dns,
    /// Namespaces reaching the host and reached from it through a NAT (slirp engines).
    Nat,
}

pub const FAMILIES: [Family; 3] = [Family::Net, Family::Dns, Family::Nat];

impl Workload {
    pub fn is_dns(self) -> bool {
        self.family() == Family::Dns
    }

    pub fn family(self) -> Family {
        match self {
            Workload::Tcp | Workload::Udp | Workload::Rtt => Family::Net,
            Workload::DnsLocal | Workload::DnsCached => Family::Dns,
            Workload::NatOut
            | Workload::NatOutRev
            | Workload::NatRr
            | Workload::PortfwdIn
            | Workload::PortfwdInRev
            | Workload::ConnRate => Family::Nat,
        }
    }

    /// Whether it runs at every MTU asked for (throughput), not only at the first.
    pub fn every_mtu(self) -> bool {
        matches!(self, Workload::Tcp | Workload::NatOut | Workload::NatOutRev | Workload::PortfwdIn | Workload::PortfwdInRev)
    }

    /// Whether it needs a port published into the namespace.
    pub fn needs_published_port(self) -> bool {
        matches!(self, Workload::PortfwdIn | Workload::PortfwdInRev | Workload::ConnRate)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Tcp => "tcp",
            Workload::Udp => "udp",
            Workload::Rtt => "rtt",
            Workload::DnsLocal => "dns-local",
            Workload::DnsCached => "dns-cached",
            Workload::NatOut => "nat-out",
            Workload::NatOutRev => "nat-out-rev",
            Workload::NatRr => "nat-rr",
            Workload::PortfwdIn => "portfwd-in",
            Workload::PortfwdInRev => "portfwd-in-rev",
            Workload::ConnRate => "conn-rate",
        }
    }
}

/// The DNS workloads, in the order the tables show them.
pub const DNS_WORKLOADS: [Workload; 2] = [Workload::DnsLocal, Workload::DnsCached];
/// The NAT workloads, in the order they run and the tables show them.
pub const NAT_WORKLOADS: [Workload; 6] =
    [Workload::NatOut, Workload::NatOutRev, Workload::PortfwdIn, Workload::PortfwdInRev, Workload::NatRr, Workload::ConnRate];
/// The NAT workloads measuring throughput (every MTU), in table order.
const NAT_THROUGHPUT: [Workload; 4] = [Workload::NatOut, Workload::NatOutRev, Workload::PortfwdIn, Workload::PortfwdInRev];

/// One measurement of one workload on one system.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub system: Kind,
    pub mtu: u32,
    pub round: usize,
    pub workload: Workload,
    /// Named figures (`gbps`, `rx_kpps`, `p99_us`…).
    pub metrics: BTreeMap<String, f64>,
}

/// Median and range of one metric over the rounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Self { median, min: v[0], max: v[n - 1], n })
    }

    /// `median (min–max)` with `dp` decimals; just the median for a single run.
    pub fn cell(&self, dp: usize) -> String {
        if self.n == 1 || self.min == self.max {
            format!("{:.dp$}", self.median)
        } else {
            format!("{:.dp$} ({:.dp$}–{:.dp$})", self.median, self.min, self.max)
        }
    }
}

/// Everything one invocation measured, plus what went wrong.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub config: Value,
    pub systems: Vec<Kind>,
    pub mtus: Vec<u32>,
    pub samples: Vec<Sample>,
    /// Per system: setup times, daemon stop times, drops and other observations.
    pub notes: Vec<String>,
    pub errors: Vec<String>,
}

impl Report {
    pub fn summary(&self, system: Kind, mtu: u32, workload: Workload, metric: &str) -> Option<Summary> {
        let v: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.system == system && s.mtu == mtu && s.workload == workload)
            .filter_map(|s| s.metrics.get(metric).copied())
            .collect();
        Summary::of(&v)
    }

    /// The MTU that UDP and round trips run at (the first one asked for).
    pub fn base_mtu(&self) -> u32 {
        self.mtus.first().copied().unwrap_or(1500)
    }

    fn cell(&self, system: Kind, mtu: u32, w: Workload, metric: &str, dp: usize) -> String {
        self.summary(system, mtu, w, metric).map_or_else(|| "–".to_string(), |s| s.cell(dp))
    }

    fn has(&self, family: Family) -> bool {
        self.samples.iter().any(|s| s.workload.family() == family)
    }

    /// The families with samples; switching and routing when nothing at all was measured.
    fn families(&self) -> Vec<Family> {
        let v: Vec<Family> = FAMILIES.into_iter().filter(|&f| self.has(f)).collect();
        if v.is_empty() {
            vec![Family::Net]
        } else {
            v
        }
    }

    /// The tables, as Markdown: switching and routing (TCP, UDP, RTT), DNS and NAT, each if measured.
    pub fn tables(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Median of the rounds, (min–max) across them.\n");
        for (i, f) in self.families().into_iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&match f {
                Family::Net => self.network_tables(),
                Family::Dns => self.dns_table(),
                Family::Nat => self.nat_tables(),
            });
        }
        out
    }

    /// The systems of a family's tables, in the order asked for.
    fn systems_of(&self, family: Family) -> Vec<Kind> {
        self.systems.iter().copied().filter(|s| s.takes_part(family)).collect()
    }

    /// The DNS table: one row per workload and system.
    fn dns_table(&self) -> String {
        let base = self.base_mtu();
        let mut out = String::from(
            "| system | workload | kqps | p50 µs | p99 µs | p50 µs, 1 in flight | p99 µs, 1 in flight | lost / errors | server CPU % | \
             client CPU % | machine CPU % | background CPU % |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        let mut dnsperf = Vec::new();
        for w in DNS_WORKLOADS {
            for &s in &self.systems {
                if !self.samples.iter().any(|x| x.system == s && x.workload == w) {
                    continue;
                }
                let c = |metric: &str, dp: usize| self.cell(s, base, w, metric, dp);
                let median =
                    |metric: &str| self.summary(s, base, w, metric).map_or_else(|| "–".to_string(), |x| format!("{:.0}", x.median));
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} |",
                    s.as_str(),
                    w.as_str(),
                    c("kqps", 1),
                    c("p50_us", 0),
                    c("p99_us", 0),
                    c("one_p50_us", 1),
                    c("one_p99_us", 1),
                    median("lost"),
                    median("errors"),
                    median("srv_cpu_pct"),
                    median("client_cpu_pct"),
                    median("vm_cpu_pct"),
                    c("bg_cpu_pct", 0)
                );
                // Beside our own figure of the same round: dnsperf runs once, rounds vary.
                for x in self.samples.iter().filter(|x| x.system == s && x.workload == w && x.mtu == base) {
                    if let (Some(d), Some(ours)) = (x.metrics.get("dnsperf_kqps"), x.metrics.get("kqps")) {
                        dnsperf.push(format!("{} {} round {}: dnsperf {d:.1} kqps, ours {ours:.1}", s.as_str(), w.as_str(), x.round + 1));
                    }
                }
            }
        }
        if !dnsperf.is_empty() {
            let _ = writeln!(out, "\ndnsperf cross-check, same window of queries in flight: {}.", dnsperf.join("; "));
        }
        out
    }

    fn network_tables(&self) -> String {
        let base = self.base_mtu();
        let systems = self.systems_of(Family::Net);
        let mut out = String::new();
        // Throughput.
        let mut head = String::from("| system |");
        let mut rule = String::from("|---|");
        for m in &self.mtus {
            let _ = write!(head, " TCP {m} Gbit/s |");
            rule.push_str("---|");
        }
        let _ = write!(head, " UDP 64 B rx kpps | UDP tx kpps | UDP loss % |");
        rule.push_str("---|---|---|");
        let _ = writeln!(out, "{head}\n{rule}");
        for &s in &systems {
            let mut row = format!("| {} |", s.as_str());
            for &m in &self.mtus {
                let _ = write!(row, " {} |", self.cell(s, m, Workload::Tcp, "gbps", 2));
            }
            let _ = write!(
                row,
                " {} | {} | {} |",
                self.cell(s, base, Workload::Udp, "rx_kpps", 0),
                self.cell(s, base, Workload::Udp, "tx_kpps", 0),
                self.cell(s, base, Workload::Udp, "loss_pct", 1)
            );
            let _ = writeln!(out, "{row}");
        }
        // Latency and CPU.
        let _ = writeln!(out);
        let mut head = String::from("| system | RTT p50 µs | RTT p99 µs | RTT avg µs |");
        let mut rule = String::from("|---|---|---|---|");
        for m in &self.mtus {
            let _ = write!(head, " TCP {m} retr |");
            rule.push_str("---|");
        }
        let cpu_cols: Vec<(u32, Workload, String)> = self
            .mtus
            .iter()
            .map(|&m| (m, Workload::Tcp, format!("TCP {m}")))
            .chain(std::iter::once((base, Workload::Udp, "UDP".to_string())))
            .collect();
        let names: Vec<&str> = cpu_cols.iter().map(|c| c.2.as_str()).collect();
        let _ = write!(head, " fwd CPU % {} | machine CPU % {} |", names.join(" / "), names.join(" / "));
        rule.push_str("---|---|");
        let _ = writeln!(out, "{head}\n{rule}");
        for &s in &systems {
            let mut row = format!(
                "| {} | {} | {} | {} |",
                s.as_str(),
                self.cell(s, base, Workload::Rtt, "p50_us", 1),
                self.cell(s, base, Workload::Rtt, "p99_us", 1),
                self.cell(s, base, Workload::Rtt, "avg_us", 1)
            );
            for &m in &self.mtus {
                let _ = write!(row, " {} |", self.cell(s, m, Workload::Tcp, "retransmits", 0));
            }
            let median = |m: u32, w: Workload, metric: &str| {
                self.summary(s, m, w, metric).map_or_else(|| "–".to_string(), |x| format!("{:.0}", x.median))
            };
            let fwd: Vec<String> =
                cpu_cols.iter().map(|(m, w, _)| if s.is_kernel() { "kernel".to_string() } else { median(*m, *w, "fwd_cpu_pct") }).collect();
            let vm: Vec<String> = cpu_cols.iter().map(|(m, w, _)| median(*m, *w, "vm_cpu_pct")).collect();
            let _ = write!(row, " {} | {} |", fwd.join(" / "), vm.join(" / "));
            let _ = writeln!(out, "{row}");
        }
        out
    }

    /// The NAT tables: throughput per workload and MTU; latency and connection rate; CPU.
    fn nat_tables(&self) -> String {
        let base = self.base_mtu();
        let systems = self.systems_of(Family::Nat);
        let has = |s: Kind, m: u32, w: Workload| self.samples.iter().any(|x| x.system == s && x.mtu == m && x.workload == w);
        // Columns: each throughput workload at each MTU, then the rest at the first MTU, of those measured.
        let mut cols: Vec<(Workload, u32)> = Vec::new();
        for w in NAT_THROUGHPUT {
            cols.extend(self.mtus.iter().map(|&m| (w, m)).filter(|&(w, m)| systems.iter().any(|&s| has(s, m, w))));
        }
        let tput = cols.len();
        cols.extend(
            [Workload::NatRr, Workload::ConnRate].into_iter().map(|w| (w, base)).filter(|&(w, m)| systems.iter().any(|&s| has(s, m, w))),
        );
        let mut out = String::new();
        if tput > 0 {
            let mut head = String::from("| system |");
            for (w, m) in &cols[..tput] {
                let _ = write!(head, " {} {m} Gbit/s |", w.as_str());
            }
            let _ = writeln!(out, "{head}\n|---|{}", "---|".repeat(tput));
            for &s in &systems {
                let mut row = format!("| {} |", s.as_str());
                for &(w, m) in &cols[..tput] {
                    let _ = write!(row, " {} |", self.cell(s, m, w, "gbps", 2));
                }
                let _ = writeln!(out, "{row}");
            }
        }
        let (rr, conn) = (cols.contains(&(Workload::NatRr, base)), cols.contains(&(Workload::ConnRate, base)));
        if rr || conn {
            out.push('\n');
            let mut head = String::from("| system |");
            if rr {
                head.push_str(" nat-rr p50 µs | nat-rr p99 µs | nat-rr avg µs |");
            }
            if conn {
                head.push_str(" conn-rate conn/s | conn-rate p50 µs | conn-rate p99 µs | conn-rate failed |");
            }
            let n = head.matches('|').count() - 2;
            let _ = writeln!(out, "{head}\n|---|{}", "---|".repeat(n));
            for &s in &systems {
                let mut row = format!("| {} |", s.as_str());
                if rr {
                    for metric in ["p50_us", "p99_us", "avg_us"] {
                        let _ = write!(row, " {} |", self.cell(s, base, Workload::NatRr, metric, 1));
                    }
                }
                if conn {
                    for (metric, dp) in [("conn_per_s", 0), ("p50_us", 0), ("p99_us", 0), ("failed", 0)] {
                        let _ = write!(row, " {} |", self.cell(s, base, Workload::ConnRate, metric, dp));
                    }
                }
                let _ = writeln!(out, "{row}");
            }
        }
        if !cols.is_empty() {
            // CPU: the forwarding process (all of vswitchd's threads; pasta; slirp4netns) and the
            // machine; and what others ran before each measurement.
            let _ = writeln!(
                out,
                "\nCPU % over each run, forwarder / machine (medians); background: the machine before the run, the system idle.\n"
            );
            let mut head = String::from("| system |");
            for (w, m) in &cols {
                let _ = write!(head, " {} {m} |", w.as_str());
            }
            head.push_str(" background CPU % |");
            let _ = writeln!(out, "{head}\n|---|{}", "---|".repeat(cols.len() + 1));
            let median = |s: Kind, m: u32, w: Workload, metric: &str| {
                self.summary(s, m, w, metric).map_or_else(|| "–".to_string(), |x| format!("{:.0}", x.median))
            };
            let (mut retr, mut stalls) = (Vec::new(), Vec::new());
            for &s in &systems {
                let mut row = format!("| {} |", s.as_str());
                let mut bg = Vec::new();
                for &(w, m) in &cols {
                    let _ = write!(row, " {} / {} |", median(s, m, w, "fwd_cpu_pct"), median(s, m, w, "vm_cpu_pct"));
                    bg.extend(
                        self.samples
                            .iter()
                            .filter(|x| x.system == s && x.mtu == m && x.workload == w)
                            .filter_map(|x| x.metrics.get("bg_cpu_pct")),
                    );
                    if let Some(r) = self.summary(s, m, w, "retransmits").filter(|r| r.max > 0.0) {
                        retr.push(format!("{} {} {m}: {}", s.as_str(), w.as_str(), r.cell(0)));
                    }
                    if let Some(st) = self.summary(s, m, w, "stalled_s").filter(|r| r.max > 0.0) {
                        let peak = self.summary(s, m, w, "peak_gbps").map_or_else(|| "–".to_string(), |p| p.cell(2));
                        stalls.push(format!("{} {} {m}: {} stalled, best second {peak} Gbit/s", s.as_str(), w.as_str(), st.cell(0)));
                    }
                }
                let bg: Vec<f64> = bg.into_iter().copied().collect();
                let _ = write!(row, " {} |", Summary::of(&bg).map_or_else(|| "–".to_string(), |x| x.cell(0)));
                let _ = writeln!(out, "{row}");
            }
            if !retr.is_empty() {
                let _ = writeln!(out, "\nTCP retransmits per run (iperf3's sender): {}.", retr.join("; "));
            }
            if !stalls.is_empty() {
                let _ = writeln!(out, "\nStalls, 1-s intervals under a tenth of the run's best, per run: {}.", stalls.join("; "));
            }
        }
        out
    }

    /// (label, mtu, workload, metric, lower is better) of every figure compared in the ratios:
    /// the switching and routing figures first, then the DNS ones, then the NAT ones.
    fn compared(&self) -> Vec<(String, u32, Workload, &'static str, bool)> {
        let base = self.base_mtu();
        let mut v: Vec<_> = self.mtus.iter().map(|&m| (format!("TCP {m} Gbit/s"), m, Workload::Tcp, "gbps", false)).collect();
        v.push(("UDP 64 B rx pps".into(), base, Workload::Udp, "rx_kpps", false));
        v.push(("RTT p50".into(), base, Workload::Rtt, "p50_us", true));
        v.push(("RTT p99".into(), base, Workload::Rtt, "p99_us", true));
        v.push(("RTT avg".into(), base, Workload::Rtt, "avg_us", true));
        for w in DNS_WORKLOADS {
            let n = w.as_str();
            v.push((format!("{n} qps"), base, w, "kqps", false));
            v.push((format!("{n} p50"), base, w, "p50_us", true));
            v.push((format!("{n} p99"), base, w, "p99_us", true));
            v.push((format!("{n} p50, 1 in flight"), base, w, "one_p50_us", true));
            v.push((format!("{n} p99, 1 in flight"), base, w, "one_p99_us", true));
        }
        for w in NAT_THROUGHPUT {
            v.extend(self.mtus.iter().map(|&m| (format!("{} {m} Gbit/s", w.as_str()), m, w, "gbps", false)));
        }
        v.push(("nat-rr p50".into(), base, Workload::NatRr, "p50_us", true));
        v.push(("nat-rr p99".into(), base, Workload::NatRr, "p99_us", true));
        v.push(("conn-rate conn/s".into(), base, Workload::ConnRate, "conn_per_s", false));
        v
    }

    fn ratio(&self, num: Kind, den: Kind, mtu: u32, w: Workload, metric: &str) -> Option<f64> {
        let n = self.summary(num, mtu, w, metric)?.median;
        let d = self.summary(den, mtu, w, metric)?.median;
        (d != 0.0).then_some(n / d)
    }

    /// The (numerator, denominator) pairs compared, of those both measured: vswitch against the
    /// bridge and the null forwarder; routed vswitch against kernel routing and the null
    /// forwarder (which cannot route: its two-namespace L2 figure is the ceiling of vswitch's
    /// port I/O, which routing shares).
    /// The DNS comparison's pair is vswitch / dnsmasq; the NAT comparison's vswitch / pasta and
    /// slirp4netns / pasta (pasta, the newer of the two, is the one to beat).
    pub fn pairs(&self) -> Vec<(Kind, Kind)> {
        const PAIRS: [(Kind, Kind); 8] = [
            (Kind::Vswitch, Kind::Bridge),
            (Kind::Vswitch, Kind::Null),
            (Kind::Vswitch, Kind::Ovs),
            (Kind::VswitchRouted, Kind::KernelRouter),
            (Kind::VswitchRouted, Kind::Null),
            (Kind::Vswitch, Kind::Dnsmasq),
            (Kind::Vswitch, Kind::Pasta),
            (Kind::Slirp4netns, Kind::Pasta),
        ];
        PAIRS.into_iter().filter(|(n, d)| self.systems.contains(n) && self.systems.contains(d)).collect()
    }

    /// The pairs that compare figures of `w`: those whose two systems both take part in its family.
    fn pairs_for(&self, w: Workload) -> Vec<(Kind, Kind)> {
        let f = w.family();
        self.pairs().into_iter().filter(|(n, d)| n.takes_part(f) && d.takes_part(f)).collect()
    }

    /// Each compared pair's ratio for each figure, as Markdown: one table per family (switching
    /// and routing, DNS, NAT), each when it has a pair and samples.
    pub fn ratios(&self) -> String {
        let mut out = String::new();
        for family in self.families() {
            let figures: Vec<_> = self.compared().into_iter().filter(|f| f.2.family() == family).collect();
            let Some(first) = figures.first() else { continue };
            let pairs = self.pairs_for(first.2);
            if pairs.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str("| figure (ratio of medians) |");
            for (n, d) in &pairs {
                let _ = write!(out, " {} / {} |", n.as_str(), d.as_str());
            }
            out.push_str("\n|---|");
            out.push_str(&"---|".repeat(pairs.len()));
            out.push('\n');
            let f = |r: Option<f64>| r.map_or_else(|| "–".to_string(), |r| format!("{r:.2}"));
            for (label, m, w, metric, lower) in figures {
                // NAT figures nobody measured (portfwd-in when no system publishes) stay out.
                if family == Family::Nat && !self.samples.iter().any(|s| s.workload == w && s.mtu == m) {
                    continue;
                }
                let note = if lower { " (lower is better)" } else { "" };
                let _ = write!(out, "| {label}{note} |");
                for &(n, d) in &pairs {
                    let _ = write!(out, " {} |", f(self.ratio(n, d, m, w, metric)));
                }
                out.push('\n');
            }
        }
        out
    }

    pub fn to_json(&self) -> Value {
        let mut summary = Vec::new();
        let mut keys: Vec<(Kind, u32, Workload, String)> =
            self.samples.iter().flat_map(|s| s.metrics.keys().map(move |k| (s.system, s.mtu, s.workload, k.clone()))).collect();
        keys.sort();
        keys.dedup();
        for (system, mtu, workload, metric) in keys {
            if let Some(s) = self.summary(system, mtu, workload, &metric) {
                summary.push(json!({ "system": system, "mtu": mtu, "workload": workload, "metric": metric,
                    "median": s.median, "min": s.min, "max": s.max, "n": s.n }));
            }
        }
        let ratios: Vec<Value> = self
            .compared()
            .into_iter()
            .map(|(label, m, w, metric, lower)| {
                let mut r = json!({ "figure": label, "mtu": m, "workload": w, "metric": metric, "lower_is_better": lower });
                for (n, d) in self.pairs_for(w) {
                    // `vswitch_over_bridge`, `vswitch_routed_over_kernel_router`…
                    let key = format!("{}_over_{}", n.as_str(), d.as_str()).replace('-', "_");
                    r[key] = json!(self.ratio(n, d, m, w, metric));
                }
                r
            })
            .collect();
        json!({
            "machine": self.machine,
            "config": self.config,
            "samples": self.samples,
            "summary": summary,
            "ratios": ratios,
            "notes": self.notes,
            "errors": self.errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_range() {
        assert_eq!(Summary::of(&[3.0, 1.0, 2.0]), Some(Summary { median: 2.0, min: 1.0, max: 3.0, n: 3 }));
        assert_eq!(Summary::of(&[4.0, 1.0]).map(|s| s.median), Some(2.5));
        assert_eq!(Summary::of(&[f64::NAN]), None);
        assert_eq!(Summary::of(&[1.234, 1.5]).map(|s| s.cell(2)), Some("1.37 (1.23–1.50)".to_string()));
        assert_eq!(Summary::of(&[7.0]).map(|s| s.cell(1)), Some("7.0".to_string()));
    }

    fn report(systems: Vec<Kind>) -> Report {
        let machine = Machine { nproc: 2, ..Machine::default() };
        Report { machine, config: Value::Null, systems, mtus: vec![1500], samples: Vec::new(), notes: Vec::new(), errors: Vec::new() }
    }

    fn tcp(system: Kind, gbps: f64) -> Sample {
        Sample { system, mtu: 1500, round: 0, workload: Workload::Tcp, metrics: [("gbps".to_string(), gbps)].into_iter().collect() }
    }

    #[test]
    fn routed_scenario_compares_with_kernel_routing_and_null() {
        let mut r = report(vec![Kind::KernelRouter, Kind::VswitchRouted, Kind::Null]);
        assert_eq!(r.pairs(), vec![(Kind::VswitchRouted, Kind::KernelRouter), (Kind::VswitchRouted, Kind::Null)]);
        r.samples = vec![tcp(Kind::KernelRouter, 10.0), tcp(Kind::VswitchRouted, 5.0), tcp(Kind::Null, 20.0)];
        let table = r.ratios();
        assert!(table.starts_with("| figure (ratio of medians) | vswitch-routed / kernel-router | vswitch-routed / null |"), "{table}");
        assert!(table.contains("| TCP 1500 Gbit/s | 0.50 | 0.25 |"), "{table}");
        let json = r.to_json();
        assert_eq!(json["ratios"][0]["vswitch_routed_over_kernel_router"], 0.5);
        assert!(json["ratios"][0].get("vswitch_over_bridge").is_none());
        assert!(r.tables().contains("| kernel-router | 10.00 |"), "{}", r.tables());
    }

    fn dns(system: Kind, w: Workload, kqps: f64, p50: f64) -> Sample {
        let metrics = [("kqps".to_string(), kqps), ("p50_us".to_string(), p50)].into_iter().collect();
        Sample { system, mtu: 1500, round: 0, workload: w, metrics }
    }

    #[test]
    fn dns_rows_and_ratios_against_dnsmasq_only() {
        let mut r = report(vec![Kind::Bridge, Kind::Vswitch, Kind::Null, Kind::Dnsmasq]);
        r.samples = vec![
            tcp(Kind::Bridge, 10.0),
            tcp(Kind::Vswitch, 5.0),
            dns(Kind::Dnsmasq, Workload::DnsLocal, 100.0, 400.0),
            dns(Kind::Vswitch, Workload::DnsLocal, 50.0, 800.0),
            dns(Kind::Dnsmasq, Workload::DnsCached, 80.0, 500.0),
        ];
        let t = r.tables();
        assert!(!t.contains("| dnsmasq | –"), "no dnsmasq row in the switching tables: {t}");
        assert!(t.contains("| dnsmasq | dns-local | 100.0 | 400 |"), "{t}");
        assert!(t.contains("| vswitch | dns-local | 50.0 | 800 |"), "{t}");
        assert!(t.contains("| dnsmasq | dns-cached | 80.0 |"), "{t}");
        assert!(!t.contains("| vswitch | dns-cached"), "no row without samples: {t}");
        let ratios = r.ratios();
        assert!(ratios.contains("| figure (ratio of medians) | vswitch / bridge | vswitch / null |\n"), "{ratios}");
        assert!(ratios.contains("| figure (ratio of medians) | vswitch / dnsmasq |\n"), "{ratios}");
        assert!(ratios.contains("| dns-local qps | 0.50 |"), "{ratios}");
        assert!(ratios.contains("| dns-local p50 (lower is better) | 2.00 |"), "{ratios}");
        assert!(ratios.contains("| TCP 1500 Gbit/s | 0.50 | – |"), "{ratios}");
        let json = r.to_json();
        let local = json["ratios"].as_array().unwrap().iter().find(|f| f["figure"] == "dns-local qps").unwrap();
        assert_eq!(local["vswitch_over_dnsmasq"], 0.5);
        assert!(local.get("vswitch_over_bridge").is_none());
        assert_eq!(json["samples"][2]["workload"], "dns-local");
    }

    #[test]
    fn a_dns_only_run_prints_only_dns_tables() {
        let mut r = report(vec![Kind::Dnsmasq, Kind::Vswitch]);
        r.samples = vec![dns(Kind::Dnsmasq, Workload::DnsLocal, 100.0, 400.0), dns(Kind::Vswitch, Workload::DnsLocal, 50.0, 800.0)];
        assert!(!r.tables().contains("TCP"), "{}", r.tables());
        assert!(!r.ratios().contains("TCP"), "{}", r.ratios());
        assert_eq!(r.pairs(), vec![(Kind::Vswitch, Kind::Dnsmasq)]);
    }

    fn nat(system: Kind, mtu: u32, w: Workload, metrics: &[(&str, f64)]) -> Sample {
        Sample { system, mtu, round: 0, workload: w, metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect() }
    }

    #[test]
    fn nat_tables_and_ratios_against_pasta() {
        let mut r = report(vec![Kind::Vswitch, Kind::Pasta, Kind::Slirp4netns]);
        r.mtus = vec![1500, 65520];
        r.samples = vec![
            nat(
                Kind::Vswitch,
                1500,
                Workload::NatOut,
                &[("gbps", 12.0), ("fwd_cpu_pct", 95.0), ("vm_cpu_pct", 150.0), ("bg_cpu_pct", 3.0)],
            ),
            nat(Kind::Pasta, 1500, Workload::NatOut, &[("gbps", 4.0), ("retransmits", 270.0), ("stalled_s", 2.0), ("peak_gbps", 13.0)]),
            nat(Kind::Slirp4netns, 1500, Workload::NatOut, &[("gbps", 1.0)]),
            nat(Kind::Vswitch, 65520, Workload::NatOutRev, &[("gbps", 6.0)]),
            nat(Kind::Pasta, 65520, Workload::NatOutRev, &[("gbps", 12.0)]),
            nat(Kind::Vswitch, 1500, Workload::NatRr, &[("p50_us", 90.0), ("p99_us", 150.0)]),
            nat(Kind::Pasta, 1500, Workload::NatRr, &[("p50_us", 80.0), ("p99_us", 100.0)]),
            nat(Kind::Pasta, 1500, Workload::ConnRate, &[("conn_per_s", 9000.0), ("failed", 0.0)]),
            nat(Kind::Slirp4netns, 1500, Workload::ConnRate, &[("conn_per_s", 3000.0), ("failed", 0.0)]),
        ];
        assert_eq!(r.pairs(), vec![(Kind::Vswitch, Kind::Pasta), (Kind::Slirp4netns, Kind::Pasta)]);
        let t = r.tables();
        assert!(!t.contains("UDP"), "no switching tables without their samples: {t}");
        assert!(t.contains("| system | nat-out 1500 Gbit/s | nat-out-rev 65520 Gbit/s |\n"), "only measured columns: {t}");
        assert!(t.contains("| vswitch | 12.00 | 6.00 |"), "{t}");
        assert!(t.contains("| slirp4netns | 1.00 | – |"), "{t}");
        assert!(t.contains("| pasta | 80.0 | 100.0 | – | 9000 |"), "{t}");
        assert!(t.contains("| vswitch | 95 / 150 | – / – | – / – | – / – | 3 |"), "{t}");
        assert!(t.contains("pasta nat-out 1500: 270"), "{t}");
        assert!(t.contains("pasta nat-out 1500: 2 stalled, best second 13.00 Gbit/s"), "{t}");
        let ratios = r.ratios();
        assert!(ratios.starts_with("| figure (ratio of medians) | vswitch / pasta | slirp4netns / pasta |\n"), "{ratios}");
        assert!(ratios.contains("| nat-out 1500 Gbit/s | 3.00 | 0.25 |"), "{ratios}");
        assert!(ratios.contains("| nat-out-rev 65520 Gbit/s | 0.50 | – |"), "{ratios}");
        assert!(ratios.contains("| nat-rr p50 (lower is better) | 1.12 | – |"), "{ratios}");
        assert!(ratios.contains("| conn-rate conn/s | – | 0.33 |"), "{ratios}");
        assert!(!ratios.contains("portfwd-in"), "no row for what nobody measured: {ratios}");
        let json = r.to_json();
        let out = json["ratios"].as_array().unwrap().iter().find(|f| f["figure"] == "nat-out 1500 Gbit/s").unwrap();
        assert_eq!(out["vswitch_over_pasta"], 3.0);
        assert_eq!(out["slirp4netns_over_pasta"], 0.25);
    }

    #[test]
    fn all_five_systems_give_four_pairs() {
        let r = report(vec![Kind::Bridge, Kind::Vswitch, Kind::KernelRouter, Kind::VswitchRouted, Kind::Null]);
        assert_eq!(r.pairs().len(), 4);
        assert!(report(vec![Kind::Bridge]).ratios().is_empty());
    }
}
