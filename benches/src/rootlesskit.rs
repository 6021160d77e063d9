//! The NAT comparison through rootlesskit: each slirp started by rootlesskit as an unprivileged user, as rootless Docker runs it.
//!
//! With `VSWITCH_BENCH_ROOTLESSKIT=PATH` (a rootlesskit 2, which has `--net=pasta`;
//! scripts/rootlesskit2 fetches Debian 13's) the NAT scenarios build their systems this way
//! instead of starting the forwarder themselves:
//!
//! - a user made for the run (`vsbr<pid>`, with subordinate ids, /dev/net/tun opened to it for
//!   the run; all undone on drop) runs, in `d` (see [`crate::nat`]),
//!   `rootlesskit --state-dir S --net=NET --NET-binary=B --mtu=MTU --port-driver=P sleep infinity`;
//! - NET is `pasta` (pasta, or vswitchd's copy named `pasta`) with the implicit port driver
//!   (pasta's `-t auto`: the port the container binds is published on the host under the same
//!   number), or `slirp4netns` (slirp4netns, or vswitchd's copy) with the slirp4netns port
//!   driver (`rootlessctl add-ports 127.0.0.1:HP:5202/tcp`, the API socket's add_hostfwd) and
//!   `--slirp4netns-sandbox=auto --slirp4netns-seccomp=auto`, as rootless Docker passes them;
//! - rootlesskit configures tap0 itself (10.0.2.100/24, default via 10.0.2.2, the host's
//!   loopback: no --disable-host-loopback), and its child's network namespace is named for the
//!   workloads (`ip netns attach`).
//!
//! The workloads are the NAT ones, unchanged; the CPU measured is the forwarder's (the child of
//! rootlesskit that is neither rootlesskit nor the `sleep`).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cmd::{self, Proc};
use crate::nat::{self, NatSystem, CONTAINER_PORT};
use crate::netns::{self, Netns};
use crate::systems::{self, DaemonOptions, Kind};
use crate::{err, Result};

/// The variable naming the rootlesskit to run the NAT systems under.
pub const ENV: &str = "VSWITCH_BENCH_ROOTLESSKIT";
/// rootlesskit's fixed addresses (its default --cidr): the container's and the host's loopback.
const ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 2, 100);
const HOST: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 2, 2);
/// How long rootlesskit may take to start its child and the forwarder.
const READY: Duration = Duration::from_secs(10);

/// The rootlesskit to run the NAT systems under, if one is asked for.
pub fn wanted() -> Option<PathBuf> {
    std::env::var_os(ENV).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// A user made for one system, with subordinate uid and gid ranges (rootlesskit's newuidmap
/// needs them), and /dev/net/tun opened to everyone while it exists (Debian ships it 0666; some
/// machines have 0600). Dropping it ends its processes and undoes all of it.
#[derive(Debug)]
pub struct BenchUser {
    name: String,
    uid: u32,
    gid: u32,
    /// /dev/net/tun's mode before, when this changed it.
    tun_mode: Option<u32>,
}

const SUBID_FILES: [&str; 2] = ["/etc/subuid", "/etc/subgid"];
const TUN: &str = "/dev/net/tun";

/// `id FLAG name`: the user's uid (`-u`) or primary group's id (`-g`).
fn id(name: &str, flag: &str) -> Result<u32> {
    cmd::run("id", &[flag, name])?.trim().parse().map_err(|e| err(format!("id {flag} {name}: {e}")))
}

impl BenchUser {
    fn create() -> Result<Self> {
        let name = format!("{}r{}", netns::PREFIX, std::process::id());
        cmd::run("useradd", &["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", &name])?;
        // From here on, drop removes the user, whatever fails next.
        let mut user = BenchUser { name, uid: 0, gid: 0, tun_mode: None };
        user.uid = id(&user.name, "-u")?;
        // useradd --system gives the user a group of its own, whose id need not be the uid's.
        user.gid = id(&user.name, "-g")?;
        let base = 2_000_000 + (std::process::id() % 1000) * 65_536;
        for f in SUBID_FILES {
            let mut text = std::fs::read_to_string(f).unwrap_or_default();
            text.push_str(&format!("{}:{base}:65536\n", user.name));
            std::fs::write(f, text).map_err(|e| err(format!("{f}: {e}")))?;
        }
        let mode = std::fs::metadata(TUN).map_err(|e| err(format!("{TUN}: {e}")))?.permissions().mode() & 0o7777;
        if mode & 0o006 != 0o006 {
            std::fs::set_permissions(TUN, std::fs::Permissions::from_mode(mode | 0o666))?;
            user.tun_mode = Some(mode);
        }
        Ok(user)
    }

    /// Kills what is left of the user's processes (rootlesskit's children, normally ended with it).
    fn kill_all(&self) {
        let Ok(dir) = std::fs::read_dir("/proc") else { return };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else { continue };
            if e.metadata().is_ok_and(|m| m.uid() == self.uid) {
                // SAFETY: kill(2) on a PID read from /proc that belongs to the user this run made.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

impl Drop for BenchUser {
    fn drop(&mut self) {
        if self.uid != 0 {
            self.kill_all();
        }
        if let Err(e) = cmd::run("userdel", &[&self.name]) {
            eprintln!("warning: cannot remove user {}: {e}", self.name);
        }
        for f in SUBID_FILES {
            let Ok(text) = std::fs::read_to_string(f) else { continue };
            let prefix = format!("{}:", self.name);
            let kept: String = text.lines().filter(|l| !l.starts_with(&prefix)).map(|l| format!("{l}\n")).collect();
            if kept != text {
                let _ = std::fs::write(f, kept);
            }
        }
        if let Some(mode) = self.tun_mode {
            let _ = std::fs::set_permissions(TUN, std::fs::Permissions::from_mode(mode));
        }
    }
}

/// Users made by runs whose process is gone (`vsbr<PID>` in /etc/passwd).
pub fn leftover_users() -> Vec<String> {
    let prefix = format!("{}r", netns::PREFIX);
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter(|n| n.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()).is_some_and(netns::gone))
        .map(String::from)
        .collect()
}

/// Removes a user [`leftover_users`] found: its processes, the user, its subordinate ids.
pub fn remove_user(name: &str) -> Result<()> {
    let uid = id(name, "-u")?;
    drop(BenchUser { name: name.to_string(), uid, gid: 0, tun_mode: None });
    if leftover_users().iter().any(|u| u == name) {
        return Err(err(format!("cannot remove user {name}")));
    }
    Ok(())
}

/// `prog` on $PATH, as an absolute path (rootlesskit is given binaries by path).
fn which(prog: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
        .ok_or_else(|| err(format!("{prog} is not installed (vswitch-bench run --install-peers installs the peers)")))
}

/// A copy of `from` in `dir`, named `name`, that every user may run.
fn stage(from: &Path, dir: &Path, name: &str) -> Result<PathBuf> {
    let to = dir.join(name);
    std::fs::copy(from, &to).map_err(|e| err(format!("copying {} to {}: {e}", from.display(), to.display())))?;
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))?;
    Ok(to)
}

/// The child of `parent` that is the network driver: neither rootlesskit's own child (which
/// becomes the `sleep`) nor a passing newuidmap.
fn driver_pid(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid ...`: comm may hold spaces, so split after its closing parenthesis.
        let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent && !["rootlesskit", "sleep", "exe", "newuidmap", "newgidmap"].contains(&comm)).then_some(pid)
    })
}

/// Builds `kind` under rootlesskit, its links at `mtu`.
pub fn start(kind: Kind, opts: &DaemonOptions, mtu: u32) -> Result<NatSystem> {
    let rk = wanted().ok_or_else(|| err(format!("{ENV} is not set")))?;
    let (net, port_driver) = match kind {
        Kind::Pasta | Kind::VswitchPasta => ("pasta", "implicit"),
        Kind::Slirp4netns | Kind::VswitchSlirp4netns => ("slirp4netns", "slirp4netns"),
        other => {
            return Err(err(format!(
                "{} is not a rootlesskit network driver: with {ENV} run --systems pasta,vswitch-pasta,slirp4netns,vswitch-slirp4netns",
                other.as_str()
            )))
        }
    };
    let dir = cmd::temp_dir(opts.keep)?;
    let user = BenchUser::create()?;
    // The user's own corner of the run's directory: rootlesskit's state, its runtime directory,
    // and copies of the binaries it runs (the build directory need not be readable by it).
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let home = dir.path().join("user");
    std::fs::create_dir(&home)?;
    let rootlesskit = stage(&rk, &home, "rootlesskit")?;
    let driver = match kind.personality() {
        Some(p) => stage(&opts.bin_dir.join("vswitchd"), &home, p)?,
        None => which(net)?,
    };
    cmd::run("chown", &["-R", &user.name, systems::path_str(&home)?.as_str()])?;
    let d = nat::host_namespace(opts)?;
    if let (Some(d), "pasta") = (&d, net) {
        nat::pasta_stub(d)?;
    }
    let host = d.as_ref().map(|n| n.name().to_string());
    let state = home.join("rk");
    let (uid, gid) = (user.uid.to_string(), user.gid.to_string());
    let mut args: Vec<String> = ["--reuid", &uid, "--regid", &gid, "--clear-groups", "--"].map(String::from).to_vec();
    args.extend([
        systems::path_str(&rootlesskit)?,
        format!("--state-dir={}", systems::path_str(&state)?),
        format!("--net={net}"),
        format!("--{net}-binary={}", systems::path_str(&driver)?),
        format!("--mtu={mtu}"),
        format!("--port-driver={port_driver}"),
    ]);
    if net == "slirp4netns" {
        args.extend(["--slirp4netns-sandbox=auto".into(), "--slirp4netns-seccomp=auto".into()]);
    }
    args.extend(["sleep".into(), "infinity".into()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut command = netns::command(host.as_deref(), "setpriv", &argv);
    command.env("XDG_RUNTIME_DIR", home.join("xdg")).env("HOME", &home);
    std::fs::create_dir(home.join("xdg"))?;
    cmd::run("chown", &[&user.name, systems::path_str(&home.join("xdg"))?.as_str()])?;
    let log = dir.path().join(nat::log_name(kind));
    let mut proc = Proc::spawn(command, "rootlesskit", Some(&log), Duration::from_secs(5))?;
    let deadline = Instant::now() + READY;
    let (child, fwd) = loop {
        if let Some(s) = proc.exited() {
            return Err(err(format!("rootlesskit exited ({s}); its output:\n{}", nat::tail(&log, 15))));
        }
        let child = std::fs::read_to_string(state.join("child_pid")).ok().and_then(|p| p.trim().parse::<u32>().ok());
        if let (Some(c), Some(f)) = (child, driver_pid(proc.pid())) {
            break (c, f);
        }
        if Instant::now() >= deadline {
            return Err(err(format!("rootlesskit started no child and {net} within {} s:\n{}", READY.as_secs(), nat::tail(&log, 15))));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let c = Netns::attach("c", child)?;
    let mut sys = NatSystem::forwarded(kind, mtu, (c, d), (ADDR, HOST), proc, dir);
    sys.implicit_ports = port_driver == "implicit";
    sys.fwd_pid = Some(fwd);
    sys._user = Some(user);
    nat::wait_ready(&mut sys, "tap0", None)?;
    sys.published = if sys.implicit_ports {
        // pasta publishes the port the container binds, under the same number.
        Ok(CONTAINER_PORT)
    } else {
        let hp = nat::free_tcp_port(sys.host_ns())?;
        let rootlessctl = rk.with_file_name("rootlessctl");
        let sock = state.join("api.sock");
        let spec = format!("127.0.0.1:{hp}:{CONTAINER_PORT}/tcp");
        cmd::run(systems::path_str(&rootlessctl)?.as_str(), &["--socket", systems::path_str(&sock)?.as_str(), "add-ports", &spec])?;
        Ok(hp)
    };
    Ok(sys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_is_the_child_that_is_not_rootlesskit_or_its_sleep() {
        // This process's own children: a `sleep` is skipped, a `cat` is found.
        let mut sleep = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        assert_eq!(driver_pid(std::process::id()), None);
        let mut cat = std::process::Command::new("cat").stdin(std::process::Stdio::piped()).spawn().unwrap();
        assert_eq!(driver_pid(std::process::id()), Some(cat.id()));
        let _ = (sleep.kill(), cat.kill(), sleep.wait(), cat.wait());
    }
}
