//! CPU use over a measurement window: of one process (all its threads) and of the whole machine.
//!
//! Percentages are of one core (100 = one core busy for the whole window), like `top`. The
//! process figure sums every thread's time on CPU from `/proc/PID/task/*/schedstat` (ns); the
//! machine figure is the busy share of `/proc/stat`'s first line (everything but idle and
//! iowait), which includes the kernel's softirq work: for the Linux bridge that is the
//! forwarding itself.

use std::time::Instant;

/// A reading taken at the start of a window.
#[derive(Debug, Clone)]
pub struct Probe {
    pid: Option<u32>,
    at: Instant,
    proc_ns: u64,
    busy: u64,
    total: u64,
}

/// CPU use over a window, in percent of one core.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// The watched process; `None` when there is none (the kernel forwards).
    pub process: Option<f64>,
    /// The whole machine, every core.
    pub machine: f64,
}

impl Probe {
    /// Starts a window, watching `pid` if given.
    pub fn start(pid: Option<u32>) -> Self {
        let (busy, total) = machine_ticks();
        Self { pid, at: Instant::now(), proc_ns: pid.map_or(0, process_ns), busy, total }
    }

    /// Ends the window.
    pub fn finish(&self) -> Usage {
        let wall = self.at.elapsed().as_nanos().max(1) as f64;
        let (busy, total) = machine_ticks();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let dt = total.saturating_sub(self.total).max(1) as f64;
        Usage {
            process: self.pid.map(|p| process_ns(p).saturating_sub(self.proc_ns) as f64 / wall * 100.0),
            machine: busy.saturating_sub(self.busy) as f64 / dt * cores * 100.0,
        }
    }
}

/// Nanoseconds on CPU of every thread of `pid` (threads that ended earlier are not counted).
fn process_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// (busy, total) clock ticks of all CPUs since boot.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return (0, 0) };
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already
    // inside user, so only the first eight count.
    let v: Vec<u64> = line.split_whitespace().skip(1).take(8).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}
