//! Throwaway network namespaces: created with a unique name, deleted on drop; threads that enter one.
//!
//! Names are `vsb<pid>-<n>-<role>`: the PID of this process makes them unique per run and lets
//! [`leftovers`] recognise namespaces of runs that were killed before they could clean up.
//!
//! vswitchd writes `/etc/netns/<name>/resolv.conf` for every named namespace it connects to a
//! network with DNS, and leaves it there when it is stopped with the namespace still connected
//! (its state would connect it again at the next start): deleting one of our namespaces
//! removes that file too ([`remove_etc_netns`]).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::{self, JoinHandle};

use crate::cmd;
use crate::{err, Result};

/// Prefix of every namespace this program creates.
pub const PREFIX: &str = "vsb";
/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// Where iproute2 finds a named namespace's own /etc files, and vswitchd writes resolv.conf.
pub const ETC_NETNS: &str = "/etc/netns";
/// How the resolv.conf files vswitchd writes begin (ctl/src/resolvconf.rs); no other is removed.
const VSWITCHD_MARK: &str = "# Written by vswitchd";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A fresh name for a namespace with this role (`a`, `b`, `br`, `d`…).
pub fn unique_name(role: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}-{n}-{role}", std::process::id())
}

/// A named network namespace this program created. Dropping it deletes it, and with it every
/// interface inside (veths lose their peer too).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with a unique name for `role`, with its loopback up.
    pub fn create(role: &str) -> Result<Self> {
        let name = unique_name(role);
        cmd::run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Names the network namespace of process `pid` (one a program of ours made, such as
    /// rootlesskit's child) for `ip -n` and [`enter`]; dropping it removes the name only: the
    /// namespace lives as long as its processes.
    pub fn attach(role: &str, pid: u32) -> Result<Self> {
        let name = unique_name(role);
        cmd::run("ip", &["netns", "attach", &name, &pid.to_string()])?;
        Ok(Self { name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> args…` (configuration inside the namespace).
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        cmd::run("ip", &all)
    }

    /// A command that runs `prog args…` inside the namespace (`ip netns exec`, which execs the
    /// program: the PID of the spawned child is the program's own).
    pub fn exec(&self, prog: &str, args: &[&str]) -> Command {
        exec_in(&self.name, prog, args)
    }
}

/// A command that runs `prog args…` inside the named namespace.
pub fn exec_in(ns: &str, prog: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, prog]).args(args);
    c
}

/// A command that runs `prog args…` inside `ns`, or here (the caller's namespace) when none.
pub fn command(ns: Option<&str>, prog: &str, args: &[&str]) -> Command {
    match ns {
        Some(ns) => exec_in(ns, prog, args),
        None => {
            let mut c = Command::new(prog);
            c.args(args);
            c
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = cmd::run("ip", &["netns", "del", &self.name]) {
            eprintln!("warning: cannot delete namespace {}: {e}", self.name);
        }
        remove_etc_netns(&self.name);
    }
}

/// Removes the resolv.conf vswitchd wrote for the namespace `name`, if it is one vswitchd
/// wrote, and then `/etc/netns/<name>` if that left it empty. Whether something was removed.
pub fn remove_etc_netns(name: &str) -> bool {
    let dir = Path::new(ETC_NETNS).join(name);
    let file = dir.join("resolv.conf");
    let mut removed = false;
    if std::fs::read_to_string(&file).is_ok_and(|t| t.starts_with(VSWITCHD_MARK)) {
        removed = std::fs::remove_file(&file).is_ok();
    }
    // Only when empty: anything else there is not ours.
    removed | std::fs::remove_dir(&dir).is_ok()
}

/// Moves the calling thread into the named network namespace. Sockets it opens afterwards
/// live there; other threads are not affected.
pub fn enter(name: &str) -> Result<()> {
    let path = format!("{NETNS_DIR}/{name}");
    let f = File::open(&path).map_err(|e| err(format!("cannot open {path}: {e}")))?;
    // SAFETY: `f` is an open file descriptor of a network namespace, owned by `f` and valid for
    // the duration of the call; setns only changes this thread's namespace and touches no memory.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(err(format!("setns({path}): {}", std::io::Error::last_os_error())));
    }
    Ok(())
}

/// Runs `f` on a new thread inside the named namespace.
pub fn spawn_in<T, F>(ns: &str, what: &str, f: F) -> Result<JoinHandle<Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let ns = ns.to_string();
    thread::Builder::new()
        .name(format!("{what}@{ns}"))
        .spawn(move || {
            enter(&ns)?;
            f()
        })
        .map_err(|e| err(format!("cannot start thread {what}: {e}")))
}

/// Runs `f` on a thread inside `ns` and waits for it, or runs it here when `ns` is none.
pub fn run_in<T, F>(ns: Option<&str>, what: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match ns {
        Some(ns) => join(spawn_in(ns, what, f)?, what),
        None => f(),
    }
}

/// Runs `f` on a new thread inside `ns`, or in the caller's namespace when none.
pub fn spawn_maybe_in<T, F>(ns: Option<&str>, what: &str, f: F) -> Result<JoinHandle<Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match ns {
        Some(ns) => spawn_in(ns, what, f),
        None => thread::Builder::new().name(what.to_string()).spawn(f).map_err(|e| err(format!("cannot start thread {what}: {e}"))),
    }
}

/// Joins a thread from [`spawn_in`], turning a panic into an error.
pub fn join<T>(h: JoinHandle<Result<T>>, what: &str) -> Result<T> {
    h.join().map_err(|_| err(format!("{what} thread panicked")))?
}

/// Namespaces named like ours whose creating process is gone: leftovers of a killed run.
pub fn leftovers() -> Vec<String> {
    names_of_killed_runs(NETNS_DIR)
}

/// Directories in /etc/netns of our namespaces whose creating process is gone (vswitchd's
/// resolv.conf, see [`remove_etc_netns`]).
pub fn etc_leftovers() -> Vec<String> {
    names_of_killed_runs(ETC_NETNS)
}

fn names_of_killed_runs(dir: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(dir) else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| {
            let Some(rest) = name.strip_prefix(PREFIX) else { return false };
            let Some((pid, _)) = rest.split_once('-') else { return false };
            pid.parse::<u32>().is_ok_and(gone)
        })
        .collect()
}

/// Whether `pid` is another process than this one, and no longer runs: a killed run's. A
/// zombie counts as gone: a run killed a moment ago stays one until something reaps it.
pub fn gone(pid: u32) -> bool {
    if pid == std::process::id() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => zombie(&stat),
    }
}

/// Whether a `/proc/PID/stat` line is a zombie's (or a dead task's): the state follows the
/// command name, which is in parentheses and may itself hold spaces and parentheses.
fn zombie(stat: &str) -> bool {
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|s| s == "Z" || s == "X")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zombies_are_gone() {
        assert!(zombie("123 (vswitch-compare) Z 1 123 123 0 -1"));
        assert!(zombie("123 (a) b (c)) X 1"));
        assert!(!zombie("123 (vswitch-compare) S 1 123 123 0 -1"));
        assert!(!zombie("123 (Z) R 1"), "the name is not the state");
        assert!(!gone(std::process::id()), "this process is never gone");
    }
}
