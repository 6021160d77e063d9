//! vswitch-bench's results: the `results.json` schema (version 1), the summaries and ratios computed from its runs, and the terminal table, `report.md` and chart made from them.
//!
//! The schema is documented in BENCHMARKS.md ("results.json"). It only grows: fields are added,
//! never renamed or given another meaning, and `schema` changes if that ever has to happen.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::chart;
use crate::machine::Machine;
use crate::report::Summary;
use crate::scenario::{Ip, Scenario, Variant};

/// The value of `schema`.
pub const SCHEMA: &str = "vswitch-bench/1";

/// Everything one `vswitch-bench run` measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub schema: String,
    /// The command line, as typed.
    pub command: String,
    pub started_utc: String,
    pub finished_utc: String,
    /// Stopped early by SIGINT or SIGTERM: what is here was measured, the rest was not.
    pub interrupted: bool,
    pub machine: Machine,
    pub config: Config,
    /// The scenarios asked for, with the systems each compares.
    pub scenarios: Vec<ScenarioInfo>,
    /// One entry per measurement.
    pub runs: Vec<Run>,
    /// Median and min–max over the rounds, per scenario, variant, system and worker count.
    pub summaries: Vec<SummaryRow>,
    /// vswitch's system against each peer, on each scenario's deciding figure.
    pub ratios: Vec<Ratio>,
    /// Systems not measured, and why (a peer not installed: never a zero).
    pub skipped: Vec<Skipped>,
    /// Setups or measurements that failed.
    pub failures: Vec<Failure>,
    /// What the systems said about themselves (vswitchd's counters, logs) and other remarks.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub runs: usize,
    /// vswitchd worker counts (a sweep when more than one); OVS gets as many PMD threads.
    pub workers: Vec<usize>,
    /// MTUs asked for (empty: each scenario's own).
    pub mtus: Vec<u32>,
    pub ips: Vec<Ip>,
    /// Seconds of each throughput and packet-rate run.
    pub secs: u32,
    /// Parallel TCP streams in the l2/l3 TCP scenarios.
    pub streams: u32,
    pub vswitchd_args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioInfo {
    pub name: String,
    pub about: String,
    /// The deciding figure: key in `runs[].metrics`, unit, and which way is better.
    pub metric: String,
    pub unit: String,
    pub higher_is_better: bool,
    /// The unit of work that CPU is counted per (`Gbit`, `Mpkt`…); absent for latency.
    pub work_unit: Option<String>,
    /// vswitch's system here.
    pub subject: String,
    /// Peers measured (installed ones).
    pub peers: Vec<String>,
    /// vswitch's drop-in replacements measured here, each with the peer it replaces:
    /// `[drop-in, peer]` (the vswitchd binary as slirp4netns, with slirp4netns's command line).
    #[serde(default)]
    pub drop_ins: Vec<(String, String)>,
    pub variants: Vec<Variant>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub scenario: String,
    pub variant: Variant,
    pub system: String,
    /// The worker count (vswitchd) or thread count (OVS); absent for the kernel and
    /// single-threaded peers.
    pub workers: Option<usize>,
    /// 0-based round.
    pub round: usize,
    /// Seconds the topology took to build.
    pub setup_s: f64,
    /// Every figure of the run, by name (`gbps`, `rx_kpps`, `p50_us`, `fwd_cpu_pct`…); see
    /// BENCHMARKS.md for each workload's.
    pub metrics: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    pub scenario: String,
    pub variant: Variant,
    pub system: String,
    pub workers: Option<usize>,
    /// Summary of every metric present in the runs.
    pub metrics: BTreeMap<String, Summary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    pub scenario: String,
    pub variant: Variant,
    /// vswitch's system, and its worker count.
    pub subject: String,
    pub workers: Option<usize>,
    pub peer: String,
    pub peer_workers: Option<usize>,
    pub metric: String,
    /// subject's median / peer's median.
    pub ratio: f64,
    /// Whether vswitch does better (ratio > 1 for throughput, < 1 for latency).
    pub better: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub scenario: String,
    pub system: String,
    pub reason: String,
    /// The Debian package that provides it, when it is a missing program.
    pub package: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub scenario: String,
    pub variant: Variant,
    pub system: String,
    pub workers: Option<usize>,
    pub round: usize,
    pub error: String,
}

/// Adds the CPU cost per unit of work to a run's metrics: `fwd_cpu_s_per_<unit>` from the
/// forwarding process's CPU (`fwd_cpu_pct`, or `srv_cpu_pct` for DNS servers) and
/// `machine_cpu_s_per_<unit>` from the whole machine's (`vm_cpu_pct`). CPU-seconds per unit:
/// a share of a core divided by units per second.
pub fn add_cpu_per_unit(s: &Scenario, metrics: &mut BTreeMap<String, f64>) {
    let Some(work) = s.work else { return };
    let Some(rate) = metrics.get(work.key).map(|r| r * work.scale).filter(|r| *r > 0.0) else { return };
    let unit = work.unit.to_lowercase();
    let fwd = metrics.get("fwd_cpu_pct").or_else(|| metrics.get("srv_cpu_pct")).copied();
    if let Some(p) = fwd {
        metrics.insert(format!("fwd_cpu_s_per_{unit}"), p / 100.0 / rate);
    }
    if let Some(p) = metrics.get("vm_cpu_pct").copied() {
        metrics.insert(format!("machine_cpu_s_per_{unit}"), p / 100.0 / rate);
    }
}

type Key = (String, Variant, String, Option<usize>);

impl Results {
    /// Recomputes `summaries` and `ratios` from `runs`.
    pub fn summarize(&mut self) {
        let mut groups: BTreeMap<Key, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
        for r in &self.runs {
            let g = groups.entry((r.scenario.clone(), r.variant, r.system.clone(), r.workers)).or_default();
            for (k, v) in &r.metrics {
                g.entry(k.clone()).or_default().push(*v);
            }
        }
        // In the order of the scenarios, then the systems as the scenario lists them.
        let order = |k: &Key| {
            let si = self.scenarios.iter().position(|s| s.name == k.0).unwrap_or(usize::MAX);
            let sys = self
                .scenarios
                .get(si)
                .map_or(usize::MAX, |s| std::iter::once(&s.subject).chain(&s.peers).position(|p| *p == k.2).unwrap_or(usize::MAX));
            (si, k.1, sys, k.3)
        };
        let mut keys: Vec<&Key> = groups.keys().collect();
        keys.sort_by_key(|k| order(k));
        self.summaries = keys
            .into_iter()
            .map(|k| SummaryRow {
                scenario: k.0.clone(),
                variant: k.1,
                system: k.2.clone(),
                workers: k.3,
                metrics: groups[k].iter().filter_map(|(m, v)| Some((m.clone(), Summary::of(v)?))).collect(),
            })
            .collect();
        self.ratios = self.compute_ratios();
    }

    fn compute_ratios(&self) -> Vec<Ratio> {
        let mut out = Vec::new();
        for s in &self.scenarios {
            let rows: Vec<&SummaryRow> = self.summaries.iter().filter(|r| r.scenario == s.name).collect();
            // vswitch's system against every peer, and each drop-in against the peer it replaces.
            let pairs = s.peers.iter().map(|p| (&s.subject, p)).chain(s.drop_ins.iter().map(|(d, p)| (d, p)));
            for (subject, peer) in pairs {
                for subj in rows.iter().filter(|r| r.system == *subject) {
                    let Some(a) = subj.metrics.get(&s.metric) else { continue };
                    // A peer that scales is compared at the same worker count; one that does
                    // not (the kernel, pasta) with its only figure.
                    let candidates: Vec<&&SummaryRow> = rows.iter().filter(|r| r.system == *peer && r.variant == subj.variant).collect();
                    let Some(p) =
                        candidates.iter().find(|r| r.workers == subj.workers).or_else(|| candidates.iter().find(|r| r.workers.is_none()))
                    else {
                        continue;
                    };
                    let Some(b) = p.metrics.get(&s.metric) else { continue };
                    if b.median == 0.0 {
                        continue;
                    }
                    let ratio = a.median / b.median;
                    out.push(Ratio {
                        scenario: s.name.clone(),
                        variant: subj.variant,
                        subject: subject.clone(),
                        workers: subj.workers,
                        peer: peer.clone(),
                        peer_workers: p.workers,
                        metric: s.metric.clone(),
                        ratio,
                        better: if s.higher_is_better { ratio > 1.0 } else { ratio < 1.0 },
                    });
                }
            }
        }
        out
    }

    /// The summary of `metric` for one system.
    pub fn summary(&self, scenario: &str, variant: Variant, system: &str, workers: Option<usize>, metric: &str) -> Option<Summary> {
        self.summaries
            .iter()
            .find(|r| r.scenario == scenario && r.variant == variant && r.system == system && r.workers == workers)
            .and_then(|r| r.metrics.get(metric).copied())
    }

    /// The tables: one per scenario and variant, a row per system (and worker count), with
    /// the deciding figure, the CPU per unit of work and the ratio of vswitch's figure to it.
    pub fn tables(&self) -> String {
        let mut out = String::new();
        for s in &self.scenarios {
            let dir = if s.higher_is_better { "higher is better" } else { "lower is better" };
            for &v in &s.variants {
                let rows: Vec<&SummaryRow> = self.summaries.iter().filter(|r| r.scenario == s.name && r.variant == v).collect();
                let _ = writeln!(out, "### {} ({}): {} — {}, {dir}\n", s.name, v.label(), s.about, s.unit);
                let cpu = s.work_unit.as_ref().map(|u| format!("fwd CPU-s per {u} | machine CPU-s per {u}"));
                let cpu_head = cpu.as_deref().unwrap_or("fwd CPU %");
                let who = if s.drop_ins.is_empty() { s.subject.clone() } else { format!("{} (or drop-in)", s.subject) };
                let _ = writeln!(out, "| system | {} (median, min–max) | {cpu_head} | {who} / this |", s.unit);
                let _ = writeln!(out, "|---|---|{}---|", "---|".repeat(cpu_head.matches(" | ").count() + 1));
                for r in &rows {
                    let fig = r.metrics.get(&s.metric).map_or_else(|| "—".to_string(), |m| m.cell(decimals(m.median)));
                    let cpu_cells = match &s.work_unit {
                        Some(u) => {
                            let u = u.to_lowercase();
                            let f = r.metrics.get(&format!("fwd_cpu_s_per_{u}")).map_or("kernel".to_string(), |m| sig3(m.median));
                            let m = r.metrics.get(&format!("machine_cpu_s_per_{u}")).map_or("—".to_string(), |m| sig3(m.median));
                            format!("{f} | {m}")
                        }
                        None => r.metrics.get("fwd_cpu_pct").map_or("—".to_string(), |m| format!("{:.0}", m.median)),
                    };
                    let ratio = if r.system == s.subject || s.drop_ins.iter().any(|(d, _)| *d == r.system) {
                        "—".to_string()
                    } else {
                        let found = self
                            .ratios
                            .iter()
                            .filter(|x| x.scenario == s.name && x.variant == v && x.peer == r.system && x.peer_workers == r.workers);
                        let cells: Vec<String> = found
                            .map(|x| {
                                let who = if x.subject == s.subject { String::new() } else { format!("{}: ", x.subject) };
                                format!("{who}{}{:.2}×", workers_prefix(x.workers, &self.config.workers), x.ratio)
                            })
                            .collect();
                        if cells.is_empty() {
                            "—".to_string()
                        } else {
                            cells.join(", ")
                        }
                    };
                    let _ =
                        writeln!(out, "| {} | {fig} | {cpu_cells} | {ratio} |", system_label(&r.system, r.workers, &self.config.workers));
                }
                for sk in self.skipped.iter().filter(|k| k.scenario == s.name) {
                    let blanks = " |".repeat(if s.work_unit.is_some() { 3 } else { 2 });
                    let _ = writeln!(out, "| {} | skipped: {} |{blanks}", sk.system, sk.reason);
                }
                for f in self.failures.iter().filter(|f| f.scenario == s.name && f.variant == v) {
                    let _ = writeln!(
                        out,
                        "| {} | failed in round {}: {} |{}",
                        system_label(&f.system, f.workers, &self.config.workers),
                        f.round + 1,
                        first_line(&f.error),
                        " |".repeat(if s.work_unit.is_some() { 3 } else { 2 })
                    );
                }
                out.push('\n');
            }
        }
        out
    }

    /// `report.md`: how it was run, on what, the tables, what was skipped or failed.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(out, "# vswitch-bench report\n");
        let _ = writeln!(out, "`{}`\n", self.command);
        if self.interrupted {
            let _ = writeln!(out, "**Interrupted**: the run was stopped before the end; what follows is what had been measured.\n");
        }
        let _ = writeln!(out, "| | |\n|---|---|");
        let _ = writeln!(out, "| started / finished (UTC) | {} / {} |", self.started_utc, self.finished_utc);
        let _ = writeln!(out, "| CPU | {} × {} |", m.nproc, m.cpu);
        let _ = writeln!(out, "| memory | {:.1} GiB |", m.mem_gib);
        let _ = writeln!(out, "| kernel | {} |", m.kernel);
        let _ = writeln!(out, "| vswitchd | {} |", m.vswitchd.as_deref().unwrap_or("not used"));
        let tools = [
            ("iperf3", Some(m.iperf3.as_str())),
            ("dnsmasq", m.dnsmasq.as_deref()),
            ("dnsperf", m.dnsperf.as_deref()),
            ("pasta", m.pasta.as_deref()),
            ("slirp4netns", m.slirp4netns.as_deref()),
            ("Open vSwitch", m.ovs.as_deref()),
        ];
        for (name, v) in tools {
            let _ = writeln!(out, "| {name} | {} |", v.unwrap_or("not installed"));
        }
        let c = &self.config;
        let _ = writeln!(
            out,
            "| settings | {} round(s), {} s per run, vswitchd workers {:?}, TCP streams {}{} |\n",
            c.runs,
            c.secs,
            c.workers,
            c.streams,
            if c.vswitchd_args.is_empty() { String::new() } else { format!(", vswitchd {}", c.vswitchd_args.join(" ")) }
        );
        let _ = writeln!(
            out,
            "Each round builds every system afresh, measures it and tears it down, in an order that rotates from round to \
             round. Figures are the median (min–max) over the rounds; ratios are of medians measured in this one run. CPU is \
             CPU-seconds per unit of work: the forwarding process's (vswitchd, ovs-vswitchd, pasta, slirp4netns, dnsmasq; \
             `kernel` where the kernel forwards in the senders' context) and the whole machine's.\n"
        );
        out.push_str("## Results\n\n");
        out.push_str(&self.tables());
        if self.config.workers.len() > 1 {
            out.push_str("## Scaling\n\n");
            out.push_str(&self.scaling_table());
        }
        if !self.skipped.is_empty() {
            out.push_str("## Skipped\n\n");
            for s in &self.skipped {
                let _ = writeln!(out, "- {} in {}: {}", s.system, s.scenario, s.reason);
            }
            out.push('\n');
        }
        if !self.failures.is_empty() {
            out.push_str("## Failures\n\n");
            for f in &self.failures {
                let _ = writeln!(
                    out,
                    "- {} {} {} round {}: {}",
                    f.scenario,
                    f.variant.label(),
                    system_label(&f.system, f.workers, &self.config.workers),
                    f.round + 1,
                    first_line(&f.error)
                );
            }
            out.push('\n');
        }
        out.push_str(
            "`results.json` holds every run's figures, vswitchd's counters after each run, and these summaries; `chart.svg` draws them.\n",
        );
        out
    }

    /// The deciding figure of every scaling system at each worker count.
    pub fn scaling_table(&self) -> String {
        let mut out = String::new();
        let ws = &self.config.workers;
        for s in &self.scenarios {
            for &v in &s.variants {
                let systems: BTreeSet<&str> = self
                    .summaries
                    .iter()
                    .filter(|r| r.scenario == s.name && r.variant == v && r.workers.is_some())
                    .map(|r| r.system.as_str())
                    .collect();
                if systems.is_empty() {
                    continue;
                }
                let _ = writeln!(out, "### {} ({}), {}\n", s.name, v.label(), s.unit);
                let _ = writeln!(out, "| system | {} |", ws.iter().map(|w| format!("{w} worker(s)")).collect::<Vec<_>>().join(" | "));
                let _ = writeln!(out, "|---|{}", "---|".repeat(ws.len()));
                for sys in systems {
                    let cells: Vec<String> = ws
                        .iter()
                        .map(|&w| self.summary(&s.name, v, sys, Some(w), &s.metric).map_or("—".into(), |m| m.cell(decimals(m.median))))
                        .collect();
                    let _ = writeln!(out, "| {sys} | {} |", cells.join(" | "));
                }
                out.push('\n');
            }
        }
        out
    }

    /// `chart.svg`: a panel of grouped bars per scenario and variant (at the largest worker
    /// count), and a scaling panel per scenario and variant when workers were swept.
    pub fn chart(&self) -> String {
        let top = self.config.workers.iter().copied().max();
        let mut bars = Vec::new();
        let mut lines = Vec::new();
        for s in &self.scenarios {
            for &v in &s.variants {
                let rows: Vec<&SummaryRow> = self.summaries.iter().filter(|r| r.scenario == s.name && r.variant == v).collect();
                let bar = |r: &SummaryRow| {
                    r.metrics.get(&s.metric).map(|m| chart::Bar { system: r.system.clone(), median: m.median, min: m.min, max: m.max })
                };
                let group: Vec<chart::Bar> =
                    rows.iter().filter(|r| r.workers.is_none() || r.workers == top).filter_map(|r| bar(r)).collect();
                if !group.is_empty() {
                    bars.push(chart::BarGroup {
                        scenario: format!("{} {}", s.name, v.label()),
                        unit: s.unit.clone(),
                        higher_is_better: s.higher_is_better,
                        bars: group,
                    });
                }
                if self.config.workers.len() > 1 {
                    let mut by_system: BTreeMap<&str, Vec<(f64, f64, f64, f64)>> = BTreeMap::new();
                    for r in rows.iter().filter(|r| r.workers.is_some()) {
                        if let (Some(w), Some(m)) = (r.workers, r.metrics.get(&s.metric)) {
                            by_system.entry(&r.system).or_default().push((w as f64, m.median, m.min, m.max));
                        }
                    }
                    if !by_system.is_empty() {
                        lines.push(chart::LineGroup {
                            scenario: format!("{} {}", s.name, v.label()),
                            unit: s.unit.clone(),
                            higher_is_better: s.higher_is_better,
                            lines: by_system.into_iter().map(|(sys, points)| chart::Line { system: sys.to_string(), points }).collect(),
                            flat: rows.iter().filter(|r| r.workers.is_none()).filter_map(|r| bar(r)).collect(),
                        });
                    }
                }
            }
        }
        let m = &self.machine;
        let subtitle = format!(
            "{} × {}, kernel {}; {} round(s), median with min–max; {}",
            m.nproc, m.cpu, m.kernel, self.config.runs, self.started_utc
        );
        chart::render("vswitch-bench", &subtitle, &bars, &lines)
    }
}

/// `vswitch`, or `vswitch (4 workers)` when workers were swept.
pub fn system_label(system: &str, workers: Option<usize>, swept: &[usize]) -> String {
    match workers {
        Some(w) if swept.len() > 1 => format!("{system} ({w} worker{})", if w == 1 { "" } else { "s" }),
        _ => system.to_string(),
    }
}

fn workers_prefix(workers: Option<usize>, swept: &[usize]) -> String {
    match workers {
        Some(w) if swept.len() > 1 => format!("w{w}: "),
        _ => String::new(),
    }
}

/// Decimals for a figure of this size: three significant digits, at most two decimals.
fn decimals(x: f64) -> usize {
    match x.abs() {
        a if a >= 100.0 => 0,
        a if a >= 10.0 => 1,
        _ => 2,
    }
}

/// Three significant digits.
fn sig3(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.digits$}")
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// What `--list` and the report say about a scenario.
pub fn scenario_info(s: &Scenario, peers: Vec<String>, drop_ins: Vec<(String, String)>, variants: Vec<Variant>) -> ScenarioInfo {
    ScenarioInfo {
        name: s.name.to_string(),
        about: s.about.to_string(),
        metric: s.metric.key.to_string(),
        unit: s.metric.unit.to_string(),
        higher_is_better: s.metric.higher_is_better,
        work_unit: s.work.map(|w| w.unit.to_string()),
        subject: s.subject.as_str().to_string(),
        peers,
        drop_ins,
        variants,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario;

    fn machine() -> Machine {
        let slirp4netns = Some("slirp4netns version 1.2.0".into());
        Machine { nproc: 2, cpu: "Test CPU".into(), kernel: "6.1".into(), slirp4netns, ..Machine::default() }
    }

    fn run(system: &str, workers: Option<usize>, round: usize, gbps: f64) -> Run {
        let mut metrics =
            BTreeMap::from([("gbps".to_string(), gbps), ("fwd_cpu_pct".to_string(), 50.0), ("vm_cpu_pct".to_string(), 150.0)]);
        add_cpu_per_unit(scenario::find("l2-tcp").unwrap(), &mut metrics);
        Run { scenario: "l2-tcp".into(), variant: V1500, system: system.into(), workers, round, setup_s: 0.5, metrics }
    }

    const V1500: Variant = Variant { mtu: 1500, ip: Ip::V4 };

    fn results(workers: Vec<usize>) -> Results {
        let s = scenario::find("l2-tcp").unwrap();
        Results {
            schema: SCHEMA.into(),
            command: "vswitch-bench run l2-tcp".into(),
            started_utc: "a".into(),
            finished_utc: "b".into(),
            interrupted: false,
            machine: machine(),
            config: Config { runs: 3, workers, mtus: vec![1500], ips: vec![Ip::V4], secs: 5, streams: 1, vswitchd_args: vec![] },
            scenarios: vec![scenario_info(s, vec!["bridge".into(), "null".into()], vec![], vec![V1500])],
            runs: vec![],
            summaries: vec![],
            ratios: vec![],
            skipped: vec![Skipped {
                scenario: "l2-tcp".into(),
                system: "ovs".into(),
                reason: "not installed (Debian package openvswitch-switch)".into(),
                package: Some("openvswitch-switch".into()),
            }],
            failures: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn json_round_trips() {
        let mut r = results(vec![2]);
        r.runs = vec![run("vswitch", Some(2), 0, 10.0), run("bridge", None, 0, 5.0)];
        r.failures.push(Failure {
            scenario: "l2-tcp".into(),
            variant: V1500,
            system: "null".into(),
            workers: Some(2),
            round: 0,
            error: "boom".into(),
        });
        r.summarize();
        let text = serde_json::to_string_pretty(&r).unwrap();
        let back: Results = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        // The names in the file are the documented ones.
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema"], "vswitch-bench/1");
        assert_eq!(v["runs"][0]["variant"], serde_json::json!({"mtu": 1500, "ip": "ipv4"}));
        assert_eq!(v["summaries"][0]["metrics"]["gbps"]["median"], 10.0);
        assert_eq!(v["ratios"][0]["ratio"], 2.0);
        assert_eq!(v["skipped"][0]["package"], "openvswitch-switch");
    }

    #[test]
    fn summaries_ratios_and_cpu_per_unit() {
        let mut r = results(vec![2]);
        r.runs = vec![
            run("vswitch", Some(2), 0, 10.0),
            run("vswitch", Some(2), 1, 12.0),
            run("vswitch", Some(2), 2, 20.0),
            run("bridge", None, 0, 8.0),
            run("bridge", None, 1, 4.0),
            run("bridge", None, 2, 6.0),
        ];
        r.summarize();
        let v = r.summary("l2-tcp", V1500, "vswitch", Some(2), "gbps").unwrap();
        assert_eq!((v.median, v.min, v.max, v.n), (12.0, 10.0, 20.0, 3));
        // 50% of a core at 12 Gbit/s is 0.5 / 12 CPU-seconds per Gbit (median of per-run figures).
        let cpu = r.summary("l2-tcp", V1500, "vswitch", Some(2), "fwd_cpu_s_per_gbit").unwrap();
        assert!((cpu.median - 0.5 / 12.0).abs() < 1e-12);
        assert_eq!(r.ratios.len(), 1, "null has no runs: no ratio, not a zero");
        assert_eq!((r.ratios[0].peer.as_str(), r.ratios[0].ratio, r.ratios[0].better), ("bridge", 2.0, true));
        let t = r.tables();
        assert!(t.contains("| bridge | 6.00 (4.00–8.00) |"), "{t}");
        assert!(t.contains("2.00×"), "{t}");
        assert!(t.contains("| ovs | skipped: not installed (Debian package openvswitch-switch)"), "{t}");
        let md = r.markdown();
        assert!(md.contains("## Skipped") && md.contains("slirp4netns version 1.2.0"), "{md}");
    }

    #[test]
    fn lower_is_better_and_sweeps() {
        let mut r = results(vec![1, 2]);
        r.runs = vec![
            run("vswitch", Some(1), 0, 5.0),
            run("vswitch", Some(2), 0, 9.0),
            run("null", Some(1), 0, 6.0),
            run("null", Some(2), 0, 9.0),
        ];
        r.summarize();
        // Each worker count against the same count of the null forwarder.
        let got: Vec<(Option<usize>, f64)> = r.ratios.iter().map(|x| (x.workers, x.ratio)).collect();
        assert_eq!(got.len(), 2);
        assert!((got[0].1 - 5.0 / 6.0).abs() < 1e-9 && got[1].1 == 1.0, "{got:?}");
        let t = r.scaling_table();
        assert!(t.contains("| vswitch | 5.00 | 9.00 |"), "{t}");
        let svg = r.chart();
        assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{}", &svg[..80.min(svg.len())]);
        let mut rtt = results(vec![2]);
        rtt.scenarios[0].higher_is_better = false;
        rtt.runs = vec![run("vswitch", Some(2), 0, 5.0), run("bridge", None, 0, 10.0)];
        rtt.summarize();
        assert!(rtt.ratios[0].better, "0.5× the peer's latency is better");
    }

    #[test]
    fn drop_ins_are_compared_with_the_peer_they_replace() {
        let s = scenario::find("nat-out").unwrap();
        let mut r = results(vec![2]);
        let pairs = s.drop_in_pairs().iter().map(|(d, p)| (d.as_str().to_string(), p.as_str().to_string())).collect();
        r.scenarios = vec![scenario_info(s, vec!["pasta".into(), "slirp4netns".into()], pairs, vec![V1500])];
        r.skipped.clear();
        let nat = |system: &str, gbps: f64| Run {
            scenario: "nat-out".into(),
            variant: V1500,
            system: system.into(),
            workers: (system == "vswitch").then_some(2),
            round: 0,
            setup_s: 0.1,
            metrics: BTreeMap::from([("gbps".to_string(), gbps)]),
        };
        r.runs = vec![nat("vswitch", 9.0), nat("pasta", 3.0), nat("slirp4netns", 1.0), nat("vswitch-slirp4netns", 8.0)];
        r.summarize();
        let got: Vec<(&str, &str, f64)> = r.ratios.iter().map(|x| (x.subject.as_str(), x.peer.as_str(), x.ratio)).collect();
        assert_eq!(got, vec![("vswitch", "pasta", 3.0), ("vswitch", "slirp4netns", 9.0), ("vswitch-slirp4netns", "slirp4netns", 8.0)]);
        let t = r.tables();
        assert!(t.contains("| slirp4netns | 1.00 | kernel | — | 9.00×, vswitch-slirp4netns: 8.00× |"), "{t}");
        assert!(t.contains("vswitch (or drop-in) / this"), "{t}");
    }
}
