//! Running external commands with time limits, a guard that stops a started process on drop,
//! temporary directories, and what a killed run left of them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::{err, Result};

/// How often a wait polls the child.
const POLL: Duration = Duration::from_millis(10);

/// A command line for messages: program and arguments, space-separated.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion within `limit`, capturing its output. A command still running at
/// the limit is killed (by its PID) and reported as an error. A non-zero exit is returned as
/// is, not as an error: see [`run`] for that.
pub fn output_within(mut cmd: Command, limit: Duration) -> Result<Output> {
    let what = describe(&cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot start `{what}`: {e}")))?;
    // Drain both pipes while waiting, so a chatty child never blocks on a full pipe.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let errs = drain(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let status = wait_within(&mut child, limit)?;
    let status = match status {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err(format!("`{what}` did not finish within {} s; killed it", limit.as_secs())));
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = errs.join().unwrap_or_default();
    Ok(Output { status, stdout, stderr })
}

/// Runs `prog args…` within `limit`; its stdout on success, an error with its stderr otherwise.
pub fn run_within(prog: &str, args: &[&str], limit: Duration) -> Result<String> {
    let mut cmd = Command::new(prog);
    cmd.args(args);
    checked(cmd, limit)
}

/// Runs `cmd` within `limit`; its stdout on success, an error with its stderr otherwise.
pub fn checked(cmd: Command, limit: Duration) -> Result<String> {
    let what = describe(&cmd);
    let o = output_within(cmd, limit)?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(err(format!("`{what}` failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr).trim())))
    }
}

/// Runs `prog args…` with the default limit for quick configuration commands (10 s).
pub fn run(prog: &str, args: &[&str]) -> Result<String> {
    run_within(prog, args, Duration::from_secs(10))
}

/// Waits for `child` at most `limit`; `None` if it is still running then.
pub fn wait_within(child: &mut Child, limit: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(POLL);
    }
}

/// A process this program started. Dropping it stops the process: SIGTERM (sent with
/// `kill -TERM PID`, the PID being the one `spawn` returned), then SIGKILL after a grace period.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    name: String,
    grace: Duration,
}

impl Proc {
    /// Starts `cmd` with stdin closed, stdout and stderr appended to `log` (or discarded).
    pub fn spawn(mut cmd: Command, name: &str, log: Option<&Path>, grace: Duration) -> Result<Self> {
        let what = describe(&cmd);
        cmd.stdin(Stdio::null());
        match log {
            Some(p) => {
                let f = std::fs::OpenOptions::new().create(true).append(true).open(p)?;
                cmd.stdout(f.try_clone()?).stderr(f);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd.spawn().map_err(|e| err(format!("cannot start `{what}`: {e}")))?;
        Ok(Self { child, name: name.to_string(), grace })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the process to end by itself, at most `limit`.
    pub fn wait_within(&mut self, limit: Duration) -> Result<Option<ExitStatus>> {
        wait_within(&mut self.child, limit)
    }

    /// Stops the process: SIGTERM, then SIGKILL if it is still there after the grace period.
    /// Returns its exit status and whether it had to be killed.
    pub fn stop(&mut self) -> (Option<ExitStatus>, bool) {
        if let Some(s) = self.exited() {
            return (Some(s), false);
        }
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        if let Ok(Some(s)) = wait_within(&mut self.child, self.grace) {
            return (Some(s), false);
        }
        let _ = self.child.kill();
        (self.child.wait().ok(), true)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let (_, killed) = self.stop();
            if killed {
                eprintln!("note: {} (pid {}) ignored SIGTERM for {:?}; killed it", self.name, self.pid(), self.grace);
            }
        }
    }
}

/// How every temporary directory of this program is named: `vswitch-compare.<pid>.<n>`, the
/// PID being the run's, in $TMPDIR. The processes a run starts (vswitchd, dnsmasq) are given
/// paths inside it, so their command lines say which run they belong to.
pub const TEMP_PREFIX: &str = "vswitch-compare.";
/// The file a kept directory holds, so that `cleanup` leaves it for the post-mortem.
const KEPT: &str = ".kept";

/// A fresh temporary directory for this run (`$TMPDIR/vswitch-compare.<pid>.<n>`).
pub fn temp_dir(keep: bool) -> Result<TempDir> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    TempDir::create(&std::env::temp_dir(), &format!("{TEMP_PREFIX}{}.{n}", std::process::id()), keep)
}

/// The run PID in a path or argument naming one of our temporary directories.
fn run_pid_in(arg: &str) -> Option<u32> {
    let base = std::env::temp_dir().join(TEMP_PREFIX);
    let at = arg.find(base.to_str()?)? + base.to_str()?.len();
    let digits: String = arg[at..].chars().take_while(char::is_ascii_digit).collect();
    arg[at + digits.len()..].starts_with('.').then(|| digits.parse().ok())?
}

/// Temporary directories of runs whose process is gone, except those kept with --keep-logs.
pub fn leftover_dirs() -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else { return Vec::new() };
    dir.filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.to_str().and_then(|s| run_pid_in(&format!("{s}."))).is_some_and(crate::netns::gone))
        .filter(|p| p.is_dir() && !p.join(KEPT).exists())
        .collect()
}

/// Processes (vswitchd, dnsmasq) started by runs whose process is gone: (PID, command line).
/// Recognised by an argument naming a file in one of those runs' temporary directories.
pub fn leftover_processes() -> Vec<(u32, String)> {
    let Ok(proc_dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    proc_dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != std::process::id())
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> =
                raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            args.iter().filter_map(|a| run_pid_in(a)).any(crate::netns::gone).then(|| (pid, args.join(" ")))
        })
        .collect()
}

/// Stops a process that is not our child (a killed run's): SIGTERM, then SIGKILL after `grace`.
/// Whether it is gone.
pub fn terminate(pid: u32, grace: Duration) -> bool {
    let p = pid.to_string();
    let gone = || !Path::new(&format!("/proc/{pid}")).exists();
    let _ = Command::new("kill").args(["-TERM", &p]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if gone() {
            return true;
        }
        thread::sleep(POLL);
    }
    let _ = Command::new("kill").args(["-KILL", &p]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    thread::sleep(Duration::from_millis(100));
    gone()
}

/// A directory this program created; removed with its contents on drop unless kept.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// Creates `base/name` (which must not exist yet).
    pub fn create(base: &Path, name: &str, keep: bool) -> Result<Self> {
        let path = base.join(name);
        std::fs::create_dir(&path).map_err(|e| err(format!("cannot create {}: {e}", path.display())))?;
        Ok(Self { path, keep })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            let _ = std::fs::write(self.path.join(KEPT), "kept with --keep-logs; `vswitch-compare cleanup` leaves it\n");
            eprintln!("note: kept {}", self.path.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("warning: cannot remove {}: {e}", self.path.display());
        }
    }
}

/// Finds `prog` in `PATH`: where the programs are started from, so a program found is one
/// that starts (a peer outside `PATH` is as good as not installed, and reported so).
pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join(prog)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_pid_from_paths_in_our_temporary_directories() {
        let t = std::env::temp_dir();
        let t = t.to_str().unwrap();
        assert_eq!(run_pid_in(&format!("{t}/vswitch-compare.123.4/vswitchd.sock")), Some(123));
        assert_eq!(run_pid_in(&format!("--log-facility={t}/vswitch-compare.77.0/dnsmasq-local.log")), Some(77));
        assert_eq!(run_pid_in(&format!("{t}/vswitch-compare.123")), None, "no '.' after the PID");
        assert_eq!(run_pid_in(&format!("{t}/vswitch-compare.x.1/f")), None);
        assert_eq!(run_pid_in("/elsewhere/vswitch-compare.5.1/f"), None);
    }
}
