//! Fixtures for end-to-end tests: throwaway namespaces, veths and daemons that clean up on drop.
//!
//! Every name carries the test process's PID and a counter, so tests run in parallel and
//! never collide with each other or with a previous run. Each test starts its own vswitchd
//! with its own socket and state directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test run: `{prefix}{pid}x{n}`, at most 15 characters.
pub fn unique(prefix: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let s = format!("{prefix}{}x{n}", std::process::id() % 100_000);
    assert!(s.len() <= 15, "name {s} too long for an interface");
    s
}

/// True when the test may proceed; otherwise prints a loud SKIPPED line.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIPPED {test}: needs root (network namespaces, TAP devices)");
    }
    root && tools_or_skip(test)
}

fn tools_or_skip(test: &str) -> bool {
    for t in ["ip", "ping"] {
        if Command::new(t).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            eprintln!("SKIPPED {test}: `{t}` is not installed (scripts/test installs iproute2 and iputils-ping)");
            return false;
        }
    }
    true
}

/// Runs a command, returning its output; panics if it could not start.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

/// Runs a command that must succeed; returns stdout.
pub fn ok(cmd: &str, args: &[&str]) -> String {
    let o = run(cmd, args);
    assert!(o.status.success(), "{cmd} {args:?} failed: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A namespace with IPv6 off: its router solicitations and MLD reports would otherwise
    /// flood the network and refresh FDB entries while a test wants it quiet.
    pub fn new() -> Self {
        let ns = Self::with_ipv6();
        ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]);
        ns
    }

    /// A namespace with IPv6 on, as the kernel makes it.
    pub fn with_ipv6() -> Self {
        let name = unique("vst");
        ok("ip", &["netns", "add", &name]);
        Netns { name }
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    pub fn exec_ok(&self, args: &[&str]) -> String {
        let o = self.exec(args);
        assert!(
            o.status.success(),
            "in {}: {args:?} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Starts a long-running command inside the namespace (killed on drop of the guard).
    pub fn spawn(&self, args: &[&str]) -> Proc {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn in namespace");
        Proc(Some(child))
    }

    /// True when all `count` pings to `ip` get answers within `count` + 2 seconds
    /// (with both -c and -w, ping fails unless every reply arrived).
    pub fn ping(&self, ip: &str, count: u32) -> bool {
        self.exec(&["ping", "-c", &count.to_string(), "-i", "0.2", "-w", &(count + 2).to_string(), ip]).status.success()
    }

    /// Pings until one answer comes or `secs` pass (for paths that need ARP to settle).
    pub fn ping_eventually(&self, ip: &str, secs: u64) -> bool {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if self.exec(&["ping", "-c", "1", "-W", "1", ip]).status.success() {
                return true;
            }
        }
        false
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
        // `ip netns del` leaves /etc/netns/NAME (the resolv.conf the daemon wrote, when the
        // daemon stops before it notices the namespace is gone).
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.name));
    }
}

/// A child process killed (by its PID) and reaped on drop.
#[derive(Debug)]
pub struct Proc(pub Option<Child>);

impl Proc {
    /// Waits for the process to end and returns its output.
    pub fn wait(mut self) -> Output {
        self.0.take().expect("running").wait_with_output().expect("wait")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A veth pair whose first end stays in the root namespace; deleted on drop.
#[derive(Debug)]
pub struct Veth {
    pub host: String,
    pub peer: String,
}

impl Veth {
    /// Creates the pair and moves the peer into `ns` as `ifname`.
    pub fn new(ns: &Netns, ifname: &str) -> Self {
        let host = unique("vsh");
        let peer = unique("vsp");
        ok("ip", &["link", "add", &host, "type", "veth", "peer", "name", &peer]);
        let v = Veth { host, peer };
        ok("ip", &["link", "set", &v.peer, "netns", &ns.name, "name", ifname]);
        v
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.host]);
    }
}

/// Where cargo put the binaries: next to the test executable's `deps/` directory.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("VSWITCH_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir").to_path_buf();
    assert!(
        dir.join("vswitchd").exists(),
        "no vswitchd in {}: build the binaries first (cargo build --bins) or set VSWITCH_BIN_DIR",
        dir.display()
    );
    dir
}

/// A vswitchd of the test's own, with its own socket and state directory.
#[derive(Debug)]
pub struct Daemon {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub extra: Vec<String>,
    child: Option<Child>,
}

impl Daemon {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(unique("vsd"));
        std::fs::create_dir_all(&dir).expect("daemon dir");
        let socket = dir.join("vswitchd.sock");
        let mut d = Daemon { dir, socket, extra: extra.iter().map(|s| s.to_string()).collect(), child: None };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("vswitchd.log")).expect("log");
        // Names the embedded DNS does not know must never leave this machine: unless a test
        // says otherwise, the upstream is a closed port on loopback (refused at once).
        let resolv = self.dir.join("resolv.conf");
        if !self.extra.iter().any(|a| a == "--resolv-conf") {
            if !resolv.exists() {
                std::fs::write(&resolv, "nameserver 127.0.0.1:9\n").expect("resolv.conf");
            }
            self.extra.extend(["--resolv-conf".to_string(), resolv.display().to_string()]);
        }
        let child = Command::new(bin_dir().join("vswitchd"))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .args(["--workers", "2", "--no-pin"])
            .args(&self.extra)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start vswitchd");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if self.ctl(&["network", "ls", "-q"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("vswitchd did not come up; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vswitchd.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Runs vswitchctl against this daemon.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin_dir().join("vswitchctl")).arg("--socket").arg(&self.socket).args(args).output().expect("run vswitchctl")
    }

    /// Runs vswitchctl, which must succeed; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(
            o.status.success(),
            "vswitchctl {args:?} failed: {}{}\n--- daemon log ---\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["--format", "json"];
        full.extend_from_slice(args);
        serde_json::from_str(&self.ctl_ok(&full)).expect("JSON from vswitchctl")
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// A port's counters from `stats`, by endpoint name.
    pub fn port_stats(&self, endpoint: &str) -> Value {
        let s = self.ctl_json(&["stats"]);
        s["Ports"].as_array().into_iter().flatten().find(|p| p["Endpoint"] == endpoint).cloned().unwrap_or(Value::Null)
    }

    /// The IPv4 address (without prefix) of a sandbox on a network.
    pub fn ip_of(&self, network: &str, name: &str) -> String {
        let v = self.ctl_json(&["network", "inspect", network]);
        let c = v[0]["Containers"].as_object().expect("Containers");
        let e = c.values().find(|e| e["Name"] == name).unwrap_or_else(|| panic!("{name} not on {network}: {v}"));
        e["IPv4Address"].as_str().expect("address").split('/').next().expect("ip").to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the PID of a child we started and have not reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(3);
            while Instant::now() < end && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- vswitchd log ({}) ---\n{}", self.dir.display(), self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A namespace standing for "the world": reached from the host's namespace over a veth of the
/// test's own, `10.B.T.1/30` on the host side and `10.B.T.2/30` inside; removed on drop.
#[derive(Debug)]
pub struct Outside {
    pub ns: Netns,
    _veth: Veth,
    pub host: String,
    pub addr: String,
}

impl Outside {
    /// `b`: a second octet the test owns; the third comes from the PID, so runs do not collide.
    pub fn new(b: u8) -> Self {
        let t = (std::process::id() % 200) as u8 + 20;
        let ns = Netns::new();
        let veth = Veth::new(&ns, "eth0");
        let host = format!("10.{b}.{t}.1");
        let addr = format!("10.{b}.{t}.2");
        ok("ip", &["addr", "add", &format!("{host}/30"), "dev", &veth.host]);
        ok("ip", &["link", "set", &veth.host, "up"]);
        ns.exec_ok(&["ip", "addr", "add", &format!("{addr}/30"), "dev", "eth0"]);
        ns.exec_ok(&["ip", "link", "set", "eth0", "up"]);
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        Outside { ns, _veth: veth, host, addr }
    }
}

/// A free port on 127.0.0.1 for UDP and TCP (bound and released: another process could take
/// it in between, which the tests' own unique names make unlikely).
pub fn free_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = u.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A dnsmasq serving fixed records on 127.0.0.1:`port` (UDP and TCP), logging each query; the
/// upstream the embedded DNS forwards to in tests. Killed on drop.
#[derive(Debug)]
pub struct Dnsmasq {
    pub port: u16,
    pub log: PathBuf,
    args: Vec<String>,
    proc: Option<Proc>,
}

impl Dnsmasq {
    /// `records`: dnsmasq options such as `--address=/up.test/10.9.9.9`.
    pub fn start(port: u16, records: &[String]) -> Self {
        let log = std::env::temp_dir().join(format!("{}.log", unique("dnsm")));
        let mut d = Dnsmasq { port, log, args: records.to_vec(), proc: None };
        d.restart();
        d
    }

    pub fn stop(&mut self) {
        self.proc = None;
    }

    pub fn restart(&mut self) {
        self.proc = None;
        let child = Command::new("dnsmasq")
            .args(["-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1"])
            .args(["--user=root", "--group=root", "--pid-file=", "--log-queries", "--cache-size=0", "--local-ttl=60"])
            .arg(format!("--port={}", self.port))
            .arg(format!("--log-facility={}", self.log.display()))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dnsmasq (apt-get install dnsmasq-base)");
        self.proc = Some(Proc(Some(child)));
        let up = eventually(5, || std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok());
        assert!(up, "dnsmasq did not come up on port {}", self.port);
    }

    /// How many queries for `name` (any type) it has logged.
    pub fn queries_for(&self, name: &str) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default().to_ascii_lowercase();
        let name = format!(" {} from", name.to_ascii_lowercase());
        log.lines().filter(|l| l.contains("query[") && l.contains(&name)).count()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.proc = None;
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `dig` inside `ns` with `args`; returns stdout (dig exits 0 on NXDOMAIN and SERVFAIL too).
pub fn dig(ns: &Netns, args: &[&str]) -> String {
    let mut full = vec!["dig", "+time=2", "+tries=1"];
    full.extend_from_slice(args);
    String::from_utf8_lossy(&ns.exec(&full).stdout).into_owned()
}

/// Waits until `f` is true or `secs` pass.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// Sends raw Ethernet frames out of `ifname` inside `ns` through an AF_PACKET socket, the way
/// a misbehaving container would. Returns how many the kernel accepted.
pub fn send_raw(ns: &Netns, ifname: &str, frames: Vec<Vec<u8>>) -> usize {
    let path = ns.path();
    let ifname = std::ffi::CString::new(ifname).expect("ifname");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("open netns");
        use std::os::fd::AsRawFd;
        // SAFETY: f is an open namespace fd; this thread is ours and ends right after.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
        // SAFETY: ifname is NUL-terminated.
        let idx = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
        assert!(idx != 0, "no such interface in the namespace");
        // SAFETY: plain socket creation; the fd is closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(fd >= 0, "AF_PACKET socket");
        // SAFETY: sockaddr_ll is plain data; zeroed is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = idx as i32;
        sll.sll_halen = 6;
        let mut sent = 0;
        for fr in &frames {
            // SAFETY: fr and sll are valid for the sizes passed.
            let r = unsafe {
                libc::sendto(
                    fd,
                    fr.as_ptr().cast(),
                    fr.len(),
                    0,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if r >= 0 {
                sent += 1;
            }
        }
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        sent
    })
    .join()
    .expect("raw sender thread")
}

/// Sends one HTTP request to a Unix socket and returns (status, body).
pub fn http_raw(socket: &Path, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect API socket");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(request.as_bytes()).expect("write request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default();
    (status, body)
}
/// Test users alive in this process, and /dev/net/tun's mode before the first was created.
static TUN_OPENED: std::sync::Mutex<(u32, u32)> = std::sync::Mutex::new((0, 0o600));

/// A user for the test, removed with its home on drop; /dev/net/tun opened to everyone while
/// it lives (it is 0600 on these machines where distributions ship 0666), and put back.
#[derive(Debug)]
pub struct TestUser {
    pub name: String,
}

impl TestUser {
    pub fn create() -> Self {
        let name = unique("vsu");
        ok("useradd", &["-m", &name]);
        let mut tun = TUN_OPENED.lock().unwrap_or_else(|e| e.into_inner());
        if tun.0 == 0 {
            tun.1 = std::fs::metadata("/dev/net/tun").map(|m| m.permissions().mode() & 0o777).unwrap_or(0o600);
            let _ = std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(0o666));
        }
        tun.0 += 1;
        TestUser { name }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let mut tun = TUN_OPENED.lock().unwrap_or_else(|e| e.into_inner());
        tun.0 -= 1;
        if tun.0 == 0 {
            let _ = std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(tun.1));
        }
        drop(tun);
        kill_processes_of(&self.name);
        remove_subids(&self.name);
        let _ = run("userdel", &["-r", &self.name]);
    }
}

/// Kills (by PID) whatever the test user still runs: only processes this test started as it.
pub fn kill_processes_of(user: &str) {
    let Ok(uid) = String::from_utf8(run("id", &["-u", user]).stdout) else { return };
    let uid = uid.trim().to_string();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let owner = status.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1)).unwrap_or("");
        if owner == uid {
            // SAFETY: kill(2) on a PID read from /proc that belongs to the test's own user.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// A directory everyone may read, holding copies of the binaries (the build directory need not
/// be readable by the test user); removed on drop.
#[derive(Debug)]
pub struct Stage(pub PathBuf);

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Stage {
    /// A fresh directory owned by `user` and readable by all, holding copies of the build's
    /// binaries: `(binary, name of the copy)` (a copy named `slirp4netns` runs that personality).
    pub fn new(user: &TestUser, bins: &[(&str, &str)]) -> Self {
        let stage = Stage(std::env::temp_dir().join(unique("vsr")));
        std::fs::create_dir_all(&stage.0).unwrap();
        for (bin, name) in bins {
            std::fs::copy(bin_dir().join(bin), stage.0.join(name)).unwrap();
        }
        ok("chown", &["-R", &user.name, stage.0.to_str().unwrap()]);
        std::fs::set_permissions(&stage.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        stage
    }
}

impl TestUser {
    /// Gives the user subordinate uid and gid ranges (rootlesskit's newuidmap needs them);
    /// they are removed with the user.
    pub fn with_subids(self) -> Self {
        let base = 300_000 + (std::process::id() % 1000) * 65_536;
        for f in ["/etc/subuid", "/etc/subgid"] {
            let mut text = std::fs::read_to_string(f).unwrap_or_default();
            if !text.lines().any(|l| l.starts_with(&format!("{}:", self.name))) {
                text.push_str(&format!("{}:{base}:65536\n", self.name));
                std::fs::write(f, text).unwrap();
            }
        }
        self
    }

    /// Runs `stage/run.sh` as the user with `args`, behind `wrap` (`unshare ...`); returns its
    /// stdout and a report for assertions, with the stage's `log` file appended.
    pub fn run_script(&self, stage: &Stage, wrap: &[&str], args: &[&str], log: &str) -> (String, String) {
        let script = stage.0.join("run.sh");
        let mut full = vec!["-u", &self.name, "--"];
        full.extend_from_slice(wrap);
        full.extend_from_slice(&["bash", script.to_str().unwrap(), stage.0.to_str().unwrap()]);
        full.extend_from_slice(args);
        let out = run("runuser", &full);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let text = std::fs::read_to_string(stage.0.join(log)).unwrap_or_default();
        let why = format!("{stdout}{}\n--- {log} ---\n{text}", String::from_utf8_lossy(&out.stderr));
        (stdout, why)
    }
}

fn remove_subids(user: &str) {
    for f in ["/etc/subuid", "/etc/subgid"] {
        let Ok(text) = std::fs::read_to_string(f) else { continue };
        let kept: String = text.lines().filter(|l| !l.starts_with(&format!("{user}:"))).map(|l| format!("{l}\n")).collect();
        if kept != text {
            let _ = std::fs::write(f, kept);
        }
    }
}

/// A service on `bind` (a loopback address and port 0, usually) answering every connection
/// with an HTTP response carrying `reply`; returns its port. Lives as long as the test process.
pub fn http_service(bind: &str, reply: &'static str) -> u16 {
    let l = std::net::TcpListener::bind(bind).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in l.incoming().flatten() {
            let mut b = [0u8; 512];
            let _ = s.read(&mut b);
            let _ = s.write_all(format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{reply}", reply.len()).as_bytes());
        }
    });
    port
}

/// A UDP service on `bind` answering every datagram with `reply`; returns its port. Lives as
/// long as the test process.
pub fn udp_service(bind: &str, reply: &'static str) -> u16 {
    let s = std::net::UdpSocket::bind(bind).unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut b = [0u8; 512];
        while let Ok((_, from)) = s.recv_from(&mut b) {
            let _ = s.send_to(reply.as_bytes(), from);
        }
    });
    port
}

/// A directory of the test's, removed on drop, with `name` (`slirp4netns`, `pasta`) linking to
/// the build's vswitchd: the personality chosen by the program's name.
#[derive(Debug)]
pub struct Personality(pub PathBuf);

impl Personality {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(unique("pers"));
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(bin_dir().join("vswitchd"), dir.join(name)).unwrap();
        Personality(dir.join(name))
    }
}

impl Drop for Personality {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Sends one UDP datagram ("q") to `addr:port` with socat (from `ns`, or the host) and returns
/// the answer, trimmed. Asks three times at most: on a loaded machine socat's forked UDP
/// servers have left a first datagram unanswered (counted in by the namespace's kernel, nothing
/// out); a wrong answer is returned at once.
pub fn udp_ask(ns: Option<&Netns>, addr: &str, port: u16) -> String {
    let cmd = format!("printf q | socat -t3 -T3 - UDP:{addr}:{port}");
    let mut got = String::new();
    for _ in 0..3 {
        let out = match ns {
            Some(ns) => ns.exec(&["bash", "-c", &cmd]),
            None => run("bash", &["-c", &cmd]),
        };
        got = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !got.is_empty() {
            break;
        }
    }
    got
}

/// A rootlesskit with the pasta network driver (2.0 or later): `$VSWITCH_ROOTLESSKIT2`, the one
/// scripts/rootlesskit2 unpacks into target/peers, or the one on $PATH if it has the driver.
/// Debian 12's own rootlesskit (1.1.0) has none.
pub fn rootlesskit2() -> Option<PathBuf> {
    let has_pasta =
        |p: &Path| Command::new(p).arg("--help").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--pasta-binary"));
    let unpacked = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/peers/rootlesskit2/usr/bin/rootlesskit");
    std::env::var_os("VSWITCH_ROOTLESSKIT2")
        .map(PathBuf::from)
        .into_iter()
        .chain([unpacked, PathBuf::from("rootlesskit")])
        .find(|p| has_pasta(p))
}
