//! Throwaway network namespaces: created with a unique name, deleted on drop; threads that enter one.
//!
//! Names are `vsb<pid>-<n>-<role>`: the PID of this process makes them unique per run and lets
//! [`leftovers`] recognise namespaces of runs that were killed before they could clean up.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::{self, JoinHandle};

use crate::cmd;
use crate::{err, Result};

/// Prefix of every namespace this program creates.
pub const PREFIX: &str = "vsb";
/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

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

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = cmd::run("ip", &["netns", "del", &self.name]) {
            eprintln!("warning: cannot delete namespace {}: {e}", self.name);
        }
    }
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

/// Joins a thread from [`spawn_in`], turning a panic into an error.
pub fn join<T>(h: JoinHandle<Result<T>>, what: &str) -> Result<T> {
    h.join().map_err(|_| err(format!("{what} thread panicked")))?
}

/// Namespaces named like ours whose creating process is gone: leftovers of a killed run.
pub fn leftovers() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| {
            let Some(rest) = name.strip_prefix(PREFIX) else { return false };
            let Some((pid, _)) = rest.split_once('-') else { return false };
            pid.parse::<u32>().is_ok_and(|pid| pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect()
}
