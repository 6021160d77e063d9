//! The slirp4netns personality as its callers use it: Podman's command line with ready and exit
//! fds and the API socket, rootlesskit as an ordinary user, and the edge cases of the API.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vswitch_tests::*;

fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array, which has room for them.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (File::from(OwnedFd::from_raw_fd(fds[0])), File::from(OwnedFd::from_raw_fd(fds[1]))) }
}

/// A running personality with Podman's fds: 3 = ready (write end), 4 = exit (read end).
struct Slirp {
    proc: Proc,
    ready: Option<File>,
    exit: Option<File>,
    log: PathBuf,
    _bin: Personality,
}

impl Slirp {
    fn spawn(args: &[&str], resolv: Option<&Path>) -> Slirp {
        let bin = Personality::new("slirp4netns");
        let (ready_r, ready_w) = pipe();
        let (exit_r, exit_w) = pipe();
        let log = bin.0.with_file_name("log");
        let mut cmd = Command::new(&bin.0);
        cmd.args(args).stdin(Stdio::null()).stdout(File::create(&log).unwrap()).stderr(File::create(&log).unwrap());
        if let Some(r) = resolv {
            cmd.env("VSWITCH_RESOLV_CONF", r);
        }
        let (rw, er) = (ready_w.as_raw_fd(), exit_r.as_raw_fd());
        // SAFETY: between fork and exec only dup2, which is async-signal-safe, runs; the targets
        // 3 and 4 are what the command line names, and dup2 clears close-on-exec on them.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(rw, 3) < 0 || libc::dup2(er, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn slirp4netns");
        drop((ready_w, exit_r));
        Slirp { proc: Proc(Some(child)), ready: Some(ready_r), exit: Some(exit_w), log, _bin: bin }
    }

    /// What the ready fd said before `secs` passed (Podman waits for "1").
    fn wait_ready(&mut self, secs: u64) -> String {
        let mut r = self.ready.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            let _ = tx.send(s);
        });
        rx.recv_timeout(Duration::from_secs(secs)).unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process ended within `secs`.
    fn exited_within(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let c = self.proc.0.as_mut().unwrap();
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// One API request as Podman sends it (JSON, newline, shutdown of the write side), and the reply
/// read with one 2048-byte read as Podman reads it.
fn api(sock: &Path, req: &str) -> String {
    let mut s = UnixStream::connect(sock).expect("connect to the API socket");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("{req}\n").as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut buf = [0u8; 2048];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn podman_command_line_with_ready_exit_fds_and_api_socket() {
    if !root_or_skip("podman_command_line_with_ready_exit_fds_and_api_socket") {
        return;
    }
    let ns = Netns::with_ipv6();
    // Podman turns DAD off in the namespace until slirp4netns is ready.
    ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"]);
    let dir = std::env::temp_dir().join(unique("s4d"));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("ctr.net");
    let dnsmasq = Dnsmasq::start(free_port(), &["--address=/up.test/10.9.9.9".into()]);
    let resolv = dir.join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver 127.0.0.1:{}\n", dnsmasq.port)).unwrap();
    let netns = ns.path();
    let mut s = Slirp::spawn(
        &[
            "--mtu=65520",
            "--enable-sandbox",
            "--enable-seccomp",
            "--enable-ipv6",
            "-c",
            "-r",
            "3",
            "-e",
            "4",
            "--api-socket",
            sock.to_str().unwrap(),
            "--netns-type=path",
            netns.to_str().unwrap(),
            "tap0",
        ],
        Some(&resolv),
    );
    assert_eq!(s.wait_ready(15), "1", "ready fd: {}", s.log());
    // --enable-sandbox and --enable-seccomp confine it for real.
    let pid = s.proc.0.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("Seccomp:\t2") && status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(!Path::new(&format!("/proc/{pid}/root/usr")).exists(), "the sandbox's root has no /usr");
    assert!(s.log().contains("WARNING: 127.0.0.1:* on the host is accessible as 10.0.2.2"), "{}", s.log());
    // --configure: address, MTU, default route.
    let addr = ns.exec_ok(&["ip", "-o", "addr", "show", "dev", "tap0"]);
    assert!(addr.contains("inet 10.0.2.100/24"), "{addr}");
    assert!(ns.exec_ok(&["ip", "link", "show", "tap0"]).contains("mtu 65520"));
    assert!(ns.exec_ok(&["ip", "route"]).contains("default via 10.0.2.2 dev tap0"));
    assert!(ns.ping("10.0.2.2", 1), "gateway answers: {}", s.log());
    assert!(ns.ping("10.0.2.3", 1), "the DNS address answers pings");
    // DNS at net+3 forwards to the host's resolvers.
    assert_eq!(dig(&ns, &["@10.0.2.3", "up.test", "+short"]).trim(), "10.9.9.9");
    // The host's loopback through net+2 (not disabled here).
    let hp = http_service("127.0.0.1:0", "host");
    let out = ns.exec_ok(&["curl", "-sS", "--max-time", "5", &format!("http://10.0.2.2:{hp}/")]);
    assert_eq!(out, "host");
    // IPv6: an fd00::/64 address by router advertisement, the gateway at fd00::2.
    assert!(
        eventually(10, || ns.exec_ok(&["ip", "-6", "-o", "addr", "show", "dev", "tap0"]).contains("inet6 fd00::")),
        "SLAAC address: {}",
        ns.exec_ok(&["ip", "-6", "addr"])
    );
    assert!(eventually(5, || ns.exec(&["ping", "-6", "-c1", "-W1", "fd00::2"]).status.success()), "ping fd00::2");

    // Published ports through the API keep the client's address.
    let o = Outside::new(203);
    let _tcp = ns.spawn(&["socat", "TCP-LISTEN:8000,reuseaddr,fork", "SYSTEM:echo from $SOCAT_PEERADDR"]);
    let _udp = ns.spawn(&["socat", "UDP-RECVFROM:5300,fork", "SYSTEM:echo udp from $SOCAT_PEERADDR"]);
    let (tp, up) = (free_port(), free_port());
    let r = api(
        &sock,
        &format!(
            r#"{{"execute":"add_hostfwd","arguments":{{"proto":"tcp","host_addr":"0.0.0.0","host_port":{tp},"guest_addr":"","guest_port":8000}}}}"#
        ),
    );
    assert_eq!(r, r#"{"return":{"id":1}}"#);
    let r = api(&sock, &format!(r#"{{"execute":"add_hostfwd","arguments":{{"proto":"udp","host_port":{up},"guest_port":5300}}}}"#));
    assert_eq!(r, r#"{"return":{"id":2}}"#);
    let mut got = String::new();
    assert!(
        eventually(5, || {
            got = String::from_utf8_lossy(&o.ns.exec(&["socat", "-T3", "-", &format!("TCP:{}:{tp}", o.host)]).stdout).into_owned();
            !got.is_empty()
        }),
        "published TCP port: {}",
        s.log()
    );
    assert_eq!(got.trim(), format!("from {}", o.addr), "the server sees the client's own address");
    assert_eq!(udp_ask(Some(&o.ns), &o.host, up), format!("udp from {}", o.addr));
    let list = api(&sock, r#"{"execute":"list_hostfwd"}"#);
    assert!(list.contains(&format!(r#""host_port":{tp}"#)) && list.contains(r#""proto":"udp""#), "{list}");
    // The same host port again: slirp4netns's error, and nothing changed.
    let r = api(&sock, &format!(r#"{{"execute":"add_hostfwd","arguments":{{"proto":"tcp","host_port":{tp},"guest_port":8000}}}}"#));
    assert_eq!(r, r#"{"error":{"desc":"bad request: add_hostfwd: slirp_add_hostfwd failed"}}"#);
    assert_eq!(api(&sock, r#"{"execute":"remove_hostfwd","arguments":{"id":1}}"#), r#"{"return":{}}"#);
    assert!(!o.ns.exec(&["socat", "-T2", "-", &format!("TCP:{}:{tp}", o.host)]).status.success(), "a removed forward no longer listens");
    assert_eq!(api(&sock, r#"{"execute":"list_hostfwd"}"#).matches(r#""id":"#).count(), 1);

    // Closing the exit fd ends the process; the TAP it created goes with it.
    drop(s.exit.take());
    assert!(s.exited_within(5).is_some(), "exit fd closed but still running: {}", s.log());
    assert!(eventually(3, || !ns.exec_ok(&["ip", "link"]).contains("tap0")), "the TAP it created is gone");
    drop(dnsmasq);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn api_edge_cases_on_the_socket() {
    if !root_or_skip("api_edge_cases_on_the_socket") {
        return;
    }
    let ns = Netns::new();
    let dir = std::env::temp_dir().join(unique("s4e"));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("api.sock");
    // A stale file where the socket goes is replaced.
    std::fs::write(&sock, "stale").unwrap();
    let netns = ns.path();
    let mut s = Slirp::spawn(
        &[
            "--disable-host-loopback",
            "-c",
            "-r",
            "3",
            "-a",
            sock.to_str().unwrap(),
            "--netns-type",
            "path",
            netns.to_str().unwrap(),
            "tap0",
        ],
        Some(Path::new("/dev/null")),
    );
    assert_eq!(s.wait_ready(15), "1", "{}", s.log());
    assert!(!s.log().contains("WARNING: 127.0.0.1"), "no loopback warning with --disable-host-loopback");
    let hp = http_service("127.0.0.1:0", "host");
    assert!(!ns.exec(&["curl", "-sS", "--max-time", "3", &format!("http://10.0.2.2:{hp}/")]).status.success(), "loopback disabled");
    for (req, reason) in [
        ("{", "cannot parse JSON"),
        ("[]", "json_object() failed"),
        (r#"{"arguments":{}}"#, "no execute found"),
        (r#"{"execute":"nope"}"#, "unknown execute"),
        (r#"{"execute":"add_hostfwd","arguments":{"proto":"icmp","host_port":1,"guest_port":1}}"#, "add_hostfwd: bad arguments.proto"),
        (
            r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"x","host_port":1,"guest_port":1}}"#,
            "add_hostfwd: bad arguments.host_addr",
        ),
        (r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":0,"guest_port":1}}"#, "add_hostfwd: bad arguments.host_port"),
        (
            r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":1,"guest_addr":"192.0.2.1","guest_port":1}}"#,
            "add_hostfwd: bad arguments.guest_addr",
        ),
        (
            r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":1,"guest_port":65536}}"#,
            "add_hostfwd: bad arguments.guest_port",
        ),
        (r#"{"execute":"remove_hostfwd","arguments":{"id":7}}"#, "remove_hostfwd: slirp_remove_hostfwd failed"),
        (r#"{"execute":"remove_hostfwd","arguments":{}}"#, "remove_hostfwd: bad arguments.id"),
    ] {
        assert_eq!(api(&sock, req), format!(r#"{{"error":{{"desc":"bad request: {reason}"}}}}"#), "{req}");
    }
    // Oversized: refused, and the server still answers the next client.
    let big = format!(r#"{{"execute":"list_hostfwd","x":"{}"}}"#, "a".repeat(8000));
    assert_eq!(api(&sock, &big), r#"{"error":{"desc":"bad request: too large message"}}"#);
    // A client that never shuts down its write side still gets its answer.
    let mut c = UnixStream::connect(&sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(br#"{"execute":"list_hostfwd"}"#).unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, r#"{"return":{"entries":[]}}"#);
    // SIGTERM: exits and removes its socket.
    // SAFETY: kill(2) on the PID of the child this test started.
    unsafe { libc::kill(s.proc.0.as_ref().unwrap().id() as i32, libc::SIGTERM) };
    assert!(s.exited_within(5).is_some_and(|st| st.success()), "{}", s.log());
    assert!(!sock.exists(), "the API socket is removed at exit");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn usage_help_version_and_bad_arguments() {
    let bin = Personality::new("slirp4netns");
    let out = Command::new(&bin.0).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    // rootlesskit and Docker refuse a slirp4netns whose help lacks --netns-type; Podman probes the rest.
    for flag in [
        "--netns-type",
        "--disable-host-loopback",
        "--mtu",
        "--enable-sandbox",
        "--enable-seccomp",
        "--cidr",
        "--outbound-addr",
        "--enable-ipv6",
        "--api-socket",
        "--userns-path",
        "--disable-dns",
        "--macaddress",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(help.contains("slirp4netns [OPTION]... PID|PATH [TAPNAME]"));
    let out = Command::new(&bin.0).arg("--version").output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("slirp4netns version "));
    // The same through vswitchd's subcommand.
    let out = Command::new(bin_dir().join("vswitchd")).args(["slirp4netns", "--version"]).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("slirp4netns version "));
    for (args, expect) in [
        (vec!["--mtu=70000", "1", "tap0"], "70000"),
        (vec!["--cidr=10.0.0.0/28", "1", "tap0"], "1..25"),
        (vec!["--netns-type=path", "/nonexistent/netns", "tap0"], "no such network namespace"),
        (vec!["--frobnicate", "1", "tap0"], "--frobnicate"),
        (vec!["-e", "97", "1", "tap0"], "--exit-fd 97: not an open file descriptor"),
        (vec!["1"], "missing TAPNAME"),
    ] {
        let out = Command::new(&bin.0).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}

const ROOTLESSKIT: &str = r#"
set -eu
T=$1; HOSTPORT=$2; PUBPORT=$3
export XDG_RUNTIME_DIR=$T/xdg; mkdir -p "$XDG_RUNTIME_DIR"
rootlesskit --state-dir="$T/rk" --net=slirp4netns --slirp4netns-binary="$T/slirp4netns" --port-driver=slirp4netns \
  --slirp4netns-sandbox=true --slirp4netns-seccomp=true --copy-up=/etc sh -c '
    echo "uid=$(id -u) tap=$(ip -o -4 addr show dev tap0 | tr -s " " | cut -d" " -f4) ns=$(cat /etc/resolv.conf | grep nameserver)" > "$1/inside"
    echo "out=$(curl -sS --max-time 5 http://10.0.2.2:$2/)" >> "$1/inside"
    exec socat TCP-LISTEN:8000,reuseaddr,fork SYSTEM:"echo inside"' sh "$T" "$HOSTPORT" > "$T/rk.log" 2>&1 &
RK=$!
trap 'kill $RK 2>/dev/null; wait $RK 2>/dev/null || true' EXIT
for i in $(seq 150); do grep -q '^out=' "$T/inside" 2>/dev/null && break; sleep 0.1; done
cat "$T/inside"
rootlessctl --socket "$T/rk/api.sock" add-ports "127.0.0.1:$PUBPORT:8000/tcp" >/dev/null
echo "ports=$(rootlessctl --socket "$T/rk/api.sock" list-ports | tail -n +2 | wc -l)"
echo "in=$(socat -T3 - TCP:127.0.0.1:$PUBPORT)"
"#;

#[test]
fn rootlesskit_runs_with_vswitch_as_its_slirp4netns() {
    if !root_or_skip("rootlesskit_runs_with_vswitch_as_its_slirp4netns") {
        return;
    }
    for tool in ["rootlesskit", "rootlessctl", "newuidmap", "socat"] {
        if run("sh", &["-c", &format!("command -v {tool}")]).status.code() != Some(0) {
            eprintln!("SKIPPED rootlesskit_runs_with_vswitch_as_its_slirp4netns: {tool} is not installed (scripts/test installs rootlesskit, uidmap and socat)");
            return;
        }
    }
    let user = TestUser::create().with_subids();
    let stage = Stage::new(&user, &[("vswitchd", "slirp4netns")]);
    std::fs::write(stage.0.join("run.sh"), ROOTLESSKIT).unwrap();
    let host_port = http_service("127.0.0.1:0", "host");
    let pub_port = free_port();
    let (stdout, why) = user.run_script(&stage, &[], &[&host_port.to_string(), &pub_port.to_string()], "rk.log");
    assert!(stdout.contains("uid=0 tap=10.0.2.100/24 ns=nameserver 10.0.2.3"), "rootlesskit configured tap0 itself: {why}");
    assert!(stdout.contains("out=host"), "the container reaches the host's loopback through 10.0.2.2: {why}");
    assert!(stdout.contains("ports=1"), "rootlessctl lists the port: {why}");
    assert!(stdout.contains("in=inside"), "the host reaches the container through the slirp4netns port driver: {why}");
}
