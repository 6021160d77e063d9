//! The pasta personality run with the command lines rootlesskit and Podman pass: it configures
//! the namespace, forks to the background, serves DNS, the host and published ports, and quits
//! when the namespace goes away.

use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use vswitch_tests::*;

/// Runs pasta as a caller does, waiting for it to exit (it forks once ready).
fn pasta(bin: &Personality, args: &[&str], resolv: &std::path::Path) -> std::process::Output {
    Command::new(&bin.0).args(args).env("VSWITCH_RESOLV_CONF", resolv).output().unwrap()
}

/// Runs pasta on `ns` with an address of its own (10.76.0.2/24, gateway 10.76.0.254: no host
/// default route needed) and `opts`, and checks that it started.
fn pasta_on(bin: &Personality, ns: &Netns, opts: &[&str]) {
    let netns = format!("/run/netns/{}", ns.name);
    let mut args = vec!["--config-net", "-4", "-I", "eth0", "-a", "10.76.0.2", "-n", "24", "-g", "10.76.0.254"];
    args.extend_from_slice(opts);
    args.extend(["--netns", netns.as_str()]);
    let out = pasta(bin, &args, std::path::Path::new("/dev/null"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn fetch(port: u16) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Fetches from the host's loopback `port` until the answer is `want` (the service inside may
/// still be starting), for up to 5 s.
fn await_answer(port: u16, want: &str) {
    let mut got = None;
    assert!(
        eventually(5, || {
            got = fetch(port);
            got.as_deref().is_some_and(|g| g.trim() == want)
        }),
        "{got:?}"
    );
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
}

#[test]
fn rootlesskit_command_line_with_a_pid_and_auto_ports() {
    if !root_or_skip("rootlesskit_command_line_with_a_pid_and_auto_ports") {
        return;
    }
    let ns = Netns::new();
    let holder = ns.spawn(&["sleep", "120"]);
    let pid = holder.0.as_ref().unwrap().id().to_string();
    let dnsmasq = Dnsmasq::start(free_port(), &["--address=/up.test/10.9.9.9".into()]);
    let bin = Personality::new("pasta");
    let resolv = bin.0.with_file_name("resolv.conf");
    std::fs::write(&resolv, format!("nameserver 127.0.0.1:{}\n", dnsmasq.port)).unwrap();
    let out = pasta(
        &bin,
        &[
            "--stderr",
            "--ns-ifname=tap0",
            "--mtu=65520",
            "--config-net",
            "--address=10.0.2.100",
            "--netmask=24",
            "--gateway=10.0.2.2",
            "--dns-forward=10.0.2.3",
            "--ipv4-only",
            "--tcp-ports=auto",
            "--udp-ports=auto",
            &pid,
        ],
        &resolv,
    );
    assert!(out.status.success(), "pasta exits 0 once the namespace is configured: {}", String::from_utf8_lossy(&out.stderr));
    let addr = ns.exec_ok(&["ip", "-o", "addr", "show", "dev", "tap0"]);
    assert!(addr.contains("inet 10.0.2.100/24"), "{addr}");
    assert!(ns.exec_ok(&["ip", "link", "show", "tap0"]).contains("mtu 65520"));
    assert!(ns.exec_ok(&["ip", "route"]).contains("default via 10.0.2.2"));
    assert!(ns.ping("10.0.2.2", 1));
    assert_eq!(dig(&ns, &["@10.0.2.3", "up.test", "+short"]).trim(), "10.9.9.9", "--dns-forward");
    // The gateway stands for the host's loopback (no --no-map-gw).
    let hp = http_service("127.0.0.1:0", "host");
    assert_eq!(ns.exec_ok(&["curl", "-sS", "--max-time", "5", &format!("http://10.0.2.2:{hp}/")]), "host");
    // -T auto (pasta's default, which rootlesskit leaves): the host's bound ports appear on the
    // namespace's loopback within a few seconds.
    let mut got = String::new();
    assert!(
        eventually(6, || {
            let out = ns.exec(&["curl", "-sS", "--max-time", "2", &format!("http://127.0.0.1:{hp}/")]);
            got = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            got == "host"
        }),
        "-T auto: {got:?}"
    );
    // -U auto, the same for UDP.
    let hu = udp_service("127.0.0.1:0", "udp host");
    let mut got = String::new();
    assert!(
        eventually(6, || {
            got = udp_ask(Some(&ns), "127.0.0.1", hu);
            got == "udp host"
        }),
        "-U auto: {got:?}"
    );
    // auto: a port bound in the namespace appears on the host within a few seconds.
    let p = free_port();
    let _srv = ns.spawn(&["socat", &format!("TCP-LISTEN:{p},reuseaddr,fork"), "SYSTEM:echo inside"]);
    let mut got = None;
    assert!(
        eventually(6, || {
            got = fetch(p);
            got.as_deref().is_some_and(|g| g.trim() == "inside")
        }),
        "auto-forwarded port {p}: {got:?}"
    );
    // The namespace's process ends: pasta quits and its ports close.
    drop(holder);
    assert!(eventually(5, || !listening(p)), "pasta still forwards {p} after its PID ended");
}

#[test]
fn podman_command_line_with_ports_dns_forward_and_guest_addr() {
    if !root_or_skip("podman_command_line_with_ports_dns_forward_and_guest_addr") {
        return;
    }
    if !std::fs::read_to_string("/proc/net/route").unwrap_or_default().lines().any(|l| l.split_whitespace().nth(1) == Some("00000000")) {
        eprintln!(
            "SKIPPED podman_command_line_with_ports_dns_forward_and_guest_addr: the host has no IPv4 default route for pasta to copy"
        );
        return;
    }
    let ns = Netns::with_ipv6();
    let dnsmasq = Dnsmasq::start(free_port(), &["--address=/up.test/10.9.9.9".into()]);
    let bin = Personality::new("pasta");
    let resolv = bin.0.with_file_name("resolv.conf");
    std::fs::write(&resolv, format!("nameserver 127.0.0.1:{}\n", dnsmasq.port)).unwrap();
    let (tp, up) = (free_port(), free_port());
    let pidfile = bin.0.with_file_name("pasta.pid");
    let out = pasta(
        &bin,
        &[
            "--config-net",
            "--pid",
            pidfile.to_str().unwrap(),
            "-t",
            &format!("{tp}-{tp}:80-80"),
            "-u",
            &format!("{up}-{up}:53-53"),
            "--dns-forward",
            "169.254.1.1",
            "-T",
            "none",
            "-U",
            "none",
            "--no-map-gw",
            "--quiet",
            "--netns",
            ns.path().to_str().unwrap(),
            "--map-guest-addr",
            "169.254.1.2",
        ],
        &resolv,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "--quiet prints nothing");
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    // The namespace has the host's address on an interface named like the host's.
    let routes = ns.exec_ok(&["ip", "route"]);
    assert!(routes.starts_with("default via "), "{routes}");
    assert_eq!(dig(&ns, &["@169.254.1.1", "up.test", "+short"]).trim(), "10.9.9.9", "DNS at --dns-forward's address");
    // --map-guest-addr: the host itself, at its own address.
    let hp = http_service("0.0.0.0:0", "host itself");
    assert_eq!(ns.exec_ok(&["curl", "-sS", "--max-time", "5", &format!("http://169.254.1.2:{hp}/")]), "host itself");
    // -t/-u: published ports to the namespace's address.
    let _tcp = ns.spawn(&["socat", "TCP-LISTEN:80,reuseaddr,fork", "SYSTEM:echo web"]);
    let _udp = ns.spawn(&["socat", "UDP-RECVFROM:53,fork", "SYSTEM:echo dns"]);
    await_answer(tp, "web");
    assert!(eventually(5, || ns.exec_ok(&["ss", "-lun"]).contains(":53 ")), "the UDP server listens");
    assert_eq!(udp_ask(None, "127.0.0.1", up), "dns");
    // The namespace goes away: pasta quits.
    drop(ns);
    assert!(eventually(5, || !std::path::Path::new(&format!("/proc/{pid}")).exists()), "pasta {pid} outlived its namespace");
    assert!(!listening(tp));
}

#[test]
fn versions_probes_and_unsupported_options() {
    let bin = Personality::new("pasta");
    let null = std::path::Path::new("/dev/null");
    assert!(pasta(&bin, &["--version"], null).status.success(), "rootlesskit probes pasta --version");
    // rootlesskit then probes --host-lo-to-ns-lo, and passes it when this succeeds.
    assert!(pasta(&bin, &["--host-lo-to-ns-lo", "--version"], null).status.success());
    for (args, expect) in [
        (vec!["--splice-only", "1"], "--splice-only"),
        (vec!["-U", "0", "--netns", "/proc/self/ns/net"], "invalid port"),
        (vec!["-T", "all,80", "--netns", "/proc/self/ns/net"], "takes no other ports"),
        (vec!["-t", "0", "--netns", "/proc/self/ns/net"], "invalid port"),
        (vec!["--netns", "/nonexistent/ns"], "no such network namespace"),
        (vec!["-c", "/nonexistent/dir/pesto.sock", "--netns", "/proc/self/ns/net"], "-c /nonexistent/dir/pesto.sock"),
    ] {
        let out = pasta(&bin, &args, null);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}

#[test]
fn loopback_clients_are_spliced_from_the_namespace_address_without_host_lo_to_ns_lo() {
    if !root_or_skip("loopback_clients_are_spliced_from_the_namespace_address_without_host_lo_to_ns_lo") {
        return;
    }
    let ns = Netns::new();
    let bin = Personality::new("pasta");
    let (tp, lp, up) = (free_port(), free_port(), free_port());
    let (t, l, u) = (format!("127.0.0.1/{tp}:80"), format!("127.0.0.1/{lp}:81"), format!("127.0.0.1/{up}:53"));
    pasta_on(&bin, &ns, &["-t", &t, "-t", &l, "-u", &u, "-T", "none", "-U", "none"]);
    // As pasta since 2024_10_30: the service sees the namespace's own address (spliced), not the
    // gateway's (the framed path) nor a loopback client (--host-lo-to-ns-lo).
    let _peer = ns.spawn(&["socat", "TCP-LISTEN:80,fork,reuseaddr", "SYSTEM:echo peer=$SOCAT_PEERADDR"]);
    let _lo_only = ns.spawn(&["socat", "TCP-LISTEN:81,bind=127.0.0.1,fork,reuseaddr", "SYSTEM:echo loopback"]);
    let _udp_peer = ns.spawn(&["socat", "UDP-RECVFROM:53,fork", "SYSTEM:echo udp-peer=$SOCAT_PEERADDR"]);
    await_answer(tp, "peer=10.76.0.2");
    // Short connections one after another, each from a port of our own choosing: all spliced.
    for i in 0..300 {
        let got = fetch(tp);
        assert_eq!(got.as_deref().map(str::trim), Some("peer=10.76.0.2"), "connection {i}");
    }
    assert!(eventually(5, || ns.exec_ok(&["ss", "-ltn"]).contains("127.0.0.1:81 ")));
    assert_eq!(fetch(lp).unwrap_or_default(), "", "a service on the namespace's loopback only is not reached");
    assert!(eventually(5, || ns.exec_ok(&["ss", "-lun"]).contains(":53 ")));
    assert_eq!(udp_ask(None, "127.0.0.1", up), "udp-peer=10.76.0.2");
}

#[test]
fn spliced_clients_ports_follow_the_namespace_range_and_step_over_held_ones() {
    if !root_or_skip("spliced_clients_ports_follow_the_namespace_range_and_step_over_held_ones") {
        return;
    }
    let ns = Netns::new();
    // The kernel's own choice of port inside would keep to these; so must ours.
    ns.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=45000 45039"]);
    ns.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_local_reserved_ports=45020-45029"]);
    let bin = Personality::new("pasta");
    let tp = free_port();
    let t = format!("127.0.0.1/{tp}:80");
    pasta_on(&bin, &ns, &["-t", &t, "-u", "none", "-T", "none", "-U", "none"]);
    let _peer = ns.spawn(&["socat", "TCP-LISTEN:80,fork,reuseaddr", "SYSTEM:echo peer=$SOCAT_PEERADDR port=$SOCAT_PEERPORT"]);
    assert!(eventually(5, || ns.exec_ok(&["ss", "-ltn"]).contains(":80 ")));
    // Connections to the service from the first ports pasta will try, held open (in CLOSE-WAIT
    // once the service has answered): a connect from those ports to it fails with EADDRNOTAVAIL.
    let held: Vec<_> = (45000..45003)
        .map(|p| {
            let from = format!("TCP:10.76.0.2:80,bind=10.76.0.2:{p},reuseaddr");
            ns.spawn(&["socat", "-T", "60", "-u", "OPEN:/dev/null,ignoreeof", &from])
        })
        .collect();
    assert!(eventually(5, || (45000..45003).all(|p| ns.exec_ok(&["ss", "-tn"]).contains(&format!("10.76.0.2:{p} ")))));
    // The first client steps over the three held ports, on new sockets, still spliced.
    assert_eq!(fetch(tp).as_deref().map(str::trim), Some("peer=10.76.0.2 port=45003"));
    for i in 0..100 {
        let got = fetch(tp).unwrap_or_default();
        let port: u16 = got
            .trim()
            .strip_prefix("peer=10.76.0.2 port=")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("connection {i}: {got:?}"));
        assert!((45003..=45039).contains(&port) && !(45020..=45029).contains(&port), "connection {i} from port {port}");
    }
    drop(held);
}

#[test]
fn spliced_connections_use_reno_whatever_the_default() {
    if !root_or_skip("spliced_connections_use_reno_whatever_the_default") {
        return;
    }
    let ns = Netns::new();
    let bin = Personality::new("pasta");
    let hp = free_port();
    let h = format!("127.0.0.1/{hp}:82");
    pasta_on(&bin, &ns, &["-t", &h, "-u", "none", "-T", "none", "-U", "none"]);
    // Both sockets of a spliced connection stay on this host: Reno, whatever the system's
    // default (a pacing one such as BBR holds a loopback connection to a third of the throughput).
    let _hold = ns.spawn(&["socat", "-T", "30", "TCP-LISTEN:82,reuseaddr", "OPEN:/dev/null,ignoreeof"]);
    assert!(eventually(5, || ns.exec_ok(&["ss", "-ltn"]).contains(":82 ")));
    let _client = TcpStream::connect(("127.0.0.1", hp)).expect("connect");
    let inside = || ns.exec_ok(&["ss", "-tinH", "state", "established", "( dport = :82 )"]);
    assert!(eventually(5, || inside().contains("reno")), "inside: {}", inside());
    let host = run("ss", &["-tinH", "state", "established", &format!("( sport = :{hp} )")]);
    assert!(String::from_utf8_lossy(&host.stdout).contains("reno"), "{}", String::from_utf8_lossy(&host.stdout));
}

#[test]
fn host_lo_to_ns_lo_and_ns_ports_go_loopback_to_loopback() {
    if !root_or_skip("host_lo_to_ns_lo_and_ns_ports_go_loopback_to_loopback") {
        return;
    }
    let ns = Netns::new();
    let bin = Personality::new("pasta");
    let (tp, bp, wp) = (free_port(), free_port(), free_port());
    let fwd = |hp: u16, cp: u16| format!("127.0.0.1/{hp}:{cp}");
    let (t, b, w) = (fwd(tp, 80), fwd(bp, 5201), fwd(wp, 81));
    let up = free_port();
    let u = fwd(up, 53);
    // -T: the namespace's loopback port 8081 is the host's loopback port of this service.
    let hp = http_service("127.0.0.1:0", "host side");
    let tn = format!("8081:{hp}");
    let un = format!("5354:{}", udp_service("127.0.0.1:0", "udp host side"));
    pasta_on(&bin, &ns, &["--host-lo-to-ns-lo", "-t", &t, "-t", &b, "-t", &w, "-u", &u, "-T", &tn, "-U", &un]);
    // A service bound to the namespace's loopback only is reached, and sees a loopback client.
    let _peer = ns.spawn(&["socat", "TCP-LISTEN:80,bind=127.0.0.1,fork,reuseaddr", "SYSTEM:echo peer=$SOCAT_PEERADDR"]);
    let _udp_peer = ns.spawn(&["socat", "UDP-RECVFROM:53,bind=127.0.0.1,fork", "SYSTEM:echo udp-peer=$SOCAT_PEERADDR"]);
    // Half-close: the answer comes after the client's end of file, which must get through.
    let _wc = ns.spawn(&["socat", "TCP-LISTEN:81,fork,reuseaddr", "SYSTEM:wc -c"]);
    await_answer(tp, "peer=127.0.0.1");
    let wc = run("sh", &["-c", &format!("printf 12345 | socat -t5 -T5 - TCP:127.0.0.1:{wp}")]);
    assert_eq!(String::from_utf8_lossy(&wc.stdout).trim(), "5", "{}", String::from_utf8_lossy(&wc.stderr));
    // UDP too: a service on the namespace's loopback only, seeing a loopback client.
    assert!(eventually(5, || ns.exec_ok(&["ss", "-lun"]).contains("127.0.0.1:53 ")));
    assert_eq!(udp_ask(None, "127.0.0.1", up), "udp-peer=127.0.0.1");
    assert_eq!(ns.exec_ok(&["curl", "-sS", "--max-time", "5", "http://127.0.0.1:8081/"]), "host side", "-T");
    assert_eq!(udp_ask(Some(&ns), "127.0.0.1", 5354), "udp host side", "-U");
    // Bulk both ways through the pipes.
    let _iperf = ns.spawn(&["iperf3", "-s", "-p", "5201"]);
    assert!(eventually(5, || ns.exec_ok(&["ss", "-ltn"]).contains(":5201 ")));
    let bp = bp.to_string();
    for reverse in [false, true] {
        let mut a = vec!["-c", "127.0.0.1", "-p", &bp, "-n", "64M", "-J"];
        if reverse {
            a.push("-R");
        }
        // iperf3's server turns a client away (a reset) while it still finishes the last test.
        let mut v = serde_json::Value::Null;
        let ok = eventually(5, || {
            v = serde_json::from_slice(&run("iperf3", &a).stdout).unwrap_or_default();
            v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) > 1e8
        });
        assert!(ok, "reverse={reverse}: {v}");
    }
    // Nothing listens inside: the client is refused at once, not left hanging.
    drop(_wc);
    assert!(eventually(5, || !ns.exec_ok(&["ss", "-ltn"]).contains(":81 ")));
    let t0 = std::time::Instant::now();
    assert_eq!(fetch(wp).unwrap_or_default(), "");
    assert!(t0.elapsed() < Duration::from_secs(2), "refused after {:?}", t0.elapsed());
}

#[test]
fn pesto_adds_shows_deletes_and_replaces_ports_of_a_running_pasta() {
    if !root_or_skip("pesto_adds_shows_deletes_and_replaces_ports_of_a_running_pasta") {
        return;
    }
    let ns = Netns::new();
    let bin = Personality::new("pasta");
    let pesto_bin = Personality::new("pesto");
    let sock = bin.0.with_file_name("pasta.sock");
    let sock_s = sock.to_str().unwrap().to_string();
    // Podman 6's rootless-netns command line with -c.
    pasta_on(&bin, &ns, &["-t", "none", "-u", "none", "-T", "none", "-U", "none", "--no-map-gw", "--quiet", "-c", &sock_s]);
    assert!(sock.exists(), "the control socket is there once pasta has exited");
    let pesto = |a: &[&str]| {
        let out = Command::new(&pesto_bin.0).args(a).arg(&sock).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let _srv = ns.spawn(&["socat", "TCP-LISTEN:80,fork,reuseaddr", "SYSTEM:echo inside"]);
    let _udp = ns.spawn(&["socat", "UDP-RECVFROM:53,fork", "SYSTEM:echo dns"]);
    assert!(eventually(5, || ns.exec_ok(&["ss", "-ltn"]).contains(":80 ") && ns.exec_ok(&["ss", "-lun"]).contains(":53 ")));
    let (tp, up, xp) = (free_port(), free_port(), free_port());
    assert!(!listening(tp));
    // Podman adds each mapping for both families, host port to the same container port.
    let (t4, t6, u4) = (format!("0.0.0.0/{tp}:80"), format!("[::]/{tp}:80"), format!("0.0.0.0/{up}:53"));
    let (code, _, err) = pesto(&["--add", "-t", &t4, "-t", &t6, "-u", &u4]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(fetch(tp).unwrap_or_default().trim(), "inside");
    assert_eq!(udp_ask(None, "127.0.0.1", up), "dns");
    let (code, show, err) = pesto(&["-s", "-d"]);
    assert_eq!(code, Some(0));
    assert!(err.contains("pesto: request") && err.contains("pesto: reply"), "-d: {err}");
    assert!(
        show.contains(&format!("TCP 0.0.0.0:{tp} => 10.76.0.2:80")) && show.contains(&format!("UDP 0.0.0.0:{up} => 10.76.0.2:53")),
        "{show}"
    );
    // A request that cannot be carried out changes nothing: the second port is held.
    let holder = std::net::TcpListener::bind(("0.0.0.0", xp)).unwrap();
    let (code, _, err) = pesto(&["-D", "-t", &t4, "-A", "-t", &format!("0.0.0.0/{xp}:80")]);
    assert_eq!(code, Some(1));
    assert!(err.contains(&xp.to_string()), "{err}");
    assert_eq!(fetch(tp).unwrap_or_default().trim(), "inside", "the deletion before it was undone");
    drop(holder);
    // Bad specifiers and unknown rules are refused with what is wrong.
    let (code, _, err) = pesto(&["-A", "-t", "0.0.0.0/0"]);
    assert!(code == Some(1) && err.contains("invalid port"), "{err}");
    let (code, _, err) = pesto(&["-D", "-t", "0.0.0.0/1"]);
    assert!(code == Some(1) && err.contains("no such forwarding rule"), "{err}");
    // Deleting, then replacing the whole table.
    assert_eq!(pesto(&["--delete", "-t", &t4, "-t", &t6]).0, Some(0));
    assert!(!listening(tp), "deleted");
    assert_eq!(pesto(&["-t", &format!("{xp}:80")]).0, Some(0));
    assert_eq!(fetch(xp).unwrap_or_default().trim(), "inside");
    // The same table again, and the same host port moved: its socket is closed before it is
    // bound again, within the request.
    let (code, _, err) = pesto(&["-t", &format!("{xp}:80")]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = pesto(&["-D", "-t", &format!("0.0.0.0/{xp}"), "-A", "-t", &format!("0.0.0.0/{xp}:80")]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(fetch(xp).unwrap_or_default().trim(), "inside");
    let (_, show, _) = pesto(&["-s"]);
    assert!(!show.contains(&format!(":{up} ")), "replaced: the UDP rule went too: {show}");
    assert_eq!(pesto(&["-C", "HOST"]).0, Some(0));
    assert!(!listening(xp));
    let (_, show, _) = pesto(&["-s"]);
    assert_eq!(show.lines().filter(|l| l.contains("=>")).count(), 0, "{show}");
    drop(ns);
    assert!(eventually(5, || !sock.exists()), "pasta removes its control socket when it quits");
}

const ROOTLESSKIT_PASTA: &str = r#"
set -eu
T=$1; HOSTPORT=$2; TPORT=$3; UPORT=$4
export XDG_RUNTIME_DIR=$T/xdg; mkdir -p "$XDG_RUNTIME_DIR"
"$T/rootlesskit" --debug --state-dir="$T/rk" --net=pasta --pasta-binary="$T/pasta" --port-driver=implicit --copy-up=/etc sh -c '
    echo "uid=$(id -u) tap=$(ip -o -4 addr show dev tap0 | tr -s " " | cut -d" " -f4) ns=$(grep nameserver /etc/resolv.conf)" > "$1/inside"
    socat UDP-RECVFROM:$4,fork SYSTEM:"echo udp inside" &
    echo "out=$(curl -sS --max-time 5 --retry 3 --retry-connrefused --retry-delay 1 http://10.0.2.2:$2/)" >> "$1/inside"
    echo "lo=$(curl -sS --max-time 5 --retry 5 --retry-connrefused --retry-delay 1 http://127.0.0.1:$2/)" >> "$1/inside"
    exec socat TCP-LISTEN:$3,reuseaddr,fork SYSTEM:"echo inside \$SOCAT_PEERADDR"' sh "$T" "$HOSTPORT" "$TPORT" "$UPORT" > "$T/rk.log" 2>&1 &
RK=$!
trap 'kill $RK 2>/dev/null; wait $RK 2>/dev/null || true' EXIT
for i in $(seq 150); do grep -q '^lo=' "$T/inside" 2>/dev/null && break; sleep 0.1; done
cat "$T/inside"
# The implicit port driver: pasta's -t and -u auto publish what the namespace binds, within seconds.
got=
for i in $(seq 40); do got=$(socat -T2 - TCP:127.0.0.1:$TPORT 2>/dev/null || true); [ -n "$got" ] && break; sleep 0.25; done
echo "in=$got"
got=
for i in $(seq 10); do got=$(printf q | socat -T1 - UDP:127.0.0.1:$UPORT 2>/dev/null || true); [ -n "$got" ] && break; sleep 0.5; done
echo "udp=$got"
echo "pasta=$(grep -o 'Executing \[[^]]*pasta [^]]*\]' "$T/rk.log" | head -1)"
"#;

#[test]
fn rootlesskit_runs_with_vswitch_as_its_pasta() {
    if !root_or_skip("rootlesskit_runs_with_vswitch_as_its_pasta") {
        return;
    }
    let Some(rk) = rootlesskit2() else {
        eprintln!("SKIPPED rootlesskit_runs_with_vswitch_as_its_pasta: no rootlesskit with --net=pasta (2.0 or later; scripts/test fetches Debian 13's with scripts/rootlesskit2)");
        return;
    };
    for tool in ["newuidmap", "socat"] {
        if run("sh", &["-c", &format!("command -v {tool}")]).status.code() != Some(0) {
            eprintln!(
                "SKIPPED rootlesskit_runs_with_vswitch_as_its_pasta: {tool} is not installed (scripts/test installs uidmap and socat)"
            );
            return;
        }
    }
    let user = TestUser::create().with_subids();
    let stage = Stage::new(&user, &[("vswitchd", "pasta")]);
    std::fs::copy(&rk, stage.0.join("rootlesskit")).unwrap();
    std::fs::write(stage.0.join("run.sh"), ROOTLESSKIT_PASTA).unwrap();
    let host_port = http_service("127.0.0.1:0", "host");
    let (tport, uport) = (free_port(), free_port());
    let args = [host_port.to_string(), tport.to_string(), uport.to_string()];
    let (stdout, why) = user.run_script(&stage, &[], &args.each_ref().map(String::as_str), "rk.log");
    // rootlesskit 2.0's command line: --foreground, --no-dhcp, --no-ra, no --config-net (it configures tap0 itself).
    assert!(stdout.contains("--foreground") && stdout.contains("--no-dhcp") && stdout.contains("--no-ra"), "{why}");
    assert!(stdout.contains("uid=0 tap=10.0.2.100/24 ns=nameserver 10.0.2.3"), "rootlesskit configured tap0: {why}");
    assert!(stdout.contains("out=host"), "the namespace reaches the host's loopback through 10.0.2.2: {why}");
    // -T auto (rootlesskit passes no -T): the host's loopback port appears on the namespace's,
    // through a listener this unprivileged pasta made inside the user and network namespaces.
    assert!(stdout.contains("lo=host"), "-T auto: {why}");
    assert!(stdout.contains("in=inside "), "the host reaches a TCP port bound inside (implicit port driver): {why}");
    assert!(stdout.contains("udp=udp inside"), "and a UDP one: {why}");
    // rootlesskit ended, and pasta with it: the ports are gone.
    assert!(eventually(5, || !listening(tport)), "port {tport} still published after rootlesskit ended: {why}");
}

#[test]
fn dhcp_hands_out_the_namespace_address_unless_no_dhcp() {
    if !root_or_skip("dhcp_hands_out_the_namespace_address_unless_no_dhcp") {
        return;
    }
    let bin = Personality::new("pasta");
    let null = std::path::Path::new("/dev/null");
    for no_dhcp in [false, true] {
        let ns = Netns::new();
        let pidfile = bin.0.with_file_name("pasta.pid");
        let mut args =
            vec!["--ns-ifname=tap0", "-a", "10.0.2.100", "-n", "24", "-g", "10.0.2.2", "--ipv4-only", "-t", "none", "-u", "none"];
        args.extend(["-T", "none", "-U", "none", "--pid", pidfile.to_str().unwrap(), "--netns", &ns.name]);
        if no_dhcp {
            args.push("--no-dhcp");
        }
        let out = pasta(&bin, &args, null);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_string();
        // Without --config-net the interface is left down and unaddressed: DHCP configures it.
        ns.exec_ok(&["ip", "link", "set", "tap0", "up"]);
        let out = ns.exec(&["udhcpc", "-i", "tap0", "-n", "-q", "-f", "-s", "/bin/true", "-t", "2", "-T", "1"]);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if no_dhcp {
            assert!(!out.status.success() && !text.contains("lease of"), "--no-dhcp: {text}");
        } else {
            assert!(out.status.success() && text.contains("lease of 10.0.2.100 obtained from 10.0.2.2"), "{text}");
        }
        ok("kill", &[&pid]);
    }
}

#[test]
fn all_and_exclusion_only_specs_forward_every_port_outside_the_ephemeral_range() {
    if !root_or_skip("all_and_exclusion_only_specs_forward_every_port_outside_the_ephemeral_range") {
        return;
    }
    // pasta's host side in a namespace of the test's own: `all` takes tens of thousands of ports
    // there, none of the host's.
    let (host, ns) = (Netns::new(), Netns::new());
    host.exec_ok(&["ip", "link", "set", "lo", "up"]);
    // The ephemeral range is the namespace's own: a wide one there leaves ports 1-4999 to
    // `all`, few enough for the descriptor limits of a test machine (pasta's host side reads it
    // where it runs, as pasta does).
    let (eph_lo, eph_hi) = (5000u16, 65535u16);
    host.exec_ok(&["sysctl", "-qw", &format!("net.ipv4.ip_local_port_range={eph_lo} {eph_hi}")]);
    let (tp, excluded, held, up) = (eph_lo - 10, eph_lo - 11, eph_lo - 12, eph_lo - 13);
    // A port already taken on the host side is skipped without a word; its holder keeps it.
    let _holder = host.spawn(&["socat", &format!("TCP-LISTEN:{held},bind=127.0.0.1,reuseaddr,fork"), "SYSTEM:echo holder"]);
    let _tsrv = ns.spawn(&["socat", &format!("TCP-LISTEN:{tp},reuseaddr,fork"), "SYSTEM:echo inside"]);
    let _xsrv = ns.spawn(&["socat", &format!("TCP-LISTEN:{excluded},reuseaddr,fork"), "SYSTEM:echo excluded"]);
    let _usrv = ns.spawn(&["socat", &format!("UDP-RECVFROM:{up},fork"), "SYSTEM:echo udp inside"]);
    assert!(eventually(5, || host.exec(&["sh", "-c", &format!("ss -Hltn | grep -q 127.0.0.1:{held}")]).status.success()));
    let bin = Personality::new("pasta");
    let pidfile = bin.0.with_file_name("pasta.pid");
    let t = std::time::Instant::now();
    let out = host.exec(&[
        bin.0.to_str().unwrap(),
        "--config-net",
        "-a",
        "10.0.2.100",
        "-n",
        "24",
        "-g",
        "10.0.2.2",
        "--ipv4-only",
        "-t",
        &format!("127.0.0.1/all,~{excluded}"),
        "-u",
        "127.0.0.1/~1-1000",
        "-T",
        "~1-100",
        "-U",
        "none",
        "--pid",
        pidfile.to_str().unwrap(),
        "--netns",
        &ns.name,
    ]);
    let started = t.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "taken ports are skipped without a word: {}", String::from_utf8_lossy(&out.stderr));
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_string();
    let listening = host.exec_ok(&["sh", "-c", "ss -Hltn | wc -l"]).trim().parse::<usize>().unwrap();
    let expected = usize::from(eph_lo - 1) + usize::from(u16::MAX - eph_hi);
    assert!(listening >= expected - 10, "{listening} TCP ports listening, {expected} expected (every non-ephemeral one) after {started:?}");
    let ask =
        |port: u16| String::from_utf8_lossy(&host.exec(&["socat", "-T3", "-", &format!("TCP:127.0.0.1:{port}")]).stdout).trim().to_string();
    assert_eq!(ask(tp), "inside", "-t all forwards a port the container serves");
    assert_eq!(ask(excluded), "", "~{excluded} is left out");
    assert_eq!(ask(held), "holder", "a port taken before pasta started stays its holder's");
    assert_eq!(udp_ask(Some(&host), "127.0.0.1", up), "udp inside", "-u ~1-1000 forwards every other port");
    // -T ~1-100: the namespace's loopback ports but those (and the ones its programs hold) reach the host's.
    let inside =
        |port: u16| String::from_utf8_lossy(&ns.exec(&["socat", "-T3", "-", &format!("TCP:127.0.0.1:{port}")]).stdout).trim().to_string();
    assert_eq!(inside(held), "holder", "-T ~1-100 relays the namespace's loopback to the host's");
    assert_eq!(inside(tp), "inside", "a port the namespace's own program holds stays its own");
    assert!(ns.exec_ok(&["sh", "-c", "ss -Hltn | grep -c 127.0.0.1:"]).trim().parse::<usize>().unwrap() >= 4890);
    ok("kill", &[&pid]);
    eprintln!("pasta -t all started in {started:?} with {listening} TCP ports listening");
}
