//! End-to-end published ports: host clients reach servers in namespaces through ports vswitchd
//! publishes, and the servers see the client's real address.

use vswitch_tests::*;

/// Servers in `ns` that answer each TCP connection on 80 and each UDP datagram on 53 with the
/// address they came from.
fn peer_echo_servers(ns: &Netns) -> (Proc, Proc) {
    let tcp = ns.spawn(&["socat", "TCP-LISTEN:80,fork,reuseaddr", "SYSTEM:echo tcp-peer=$SOCAT_PEERADDR"]);
    let udp = ns.spawn(&["socat", "UDP-RECVFROM:53,fork", "SYSTEM:echo udp-peer=$SOCAT_PEERADDR"]);
    listening(ns, "-ltn", ":80 ");
    listening(ns, "-lun", ":53 ");
    (tcp, udp)
}

/// Waits until `ss ARGS` in `ns` shows a socket on `port` (": PORT ").
fn listening(ns: &Netns, args: &str, port: &str) {
    assert!(eventually(5, || ns.exec_ok(&["ss", args]).contains(port)), "nothing listens on {port} in {}", ns.name);
}

fn tcp_ask(ns: Option<&Netns>, addr: &str, port: u16) -> String {
    let target = format!("TCP:{addr}:{port},connect-timeout=3");
    let args = ["socat", "-T3", "-", &target];
    let out = match ns {
        Some(ns) => ns.exec(&args),
        None => run(args[0], &args[1..]),
    };
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn udp_ask(ns: Option<&Netns>, addr: &str, port: u16) -> String {
    let cmd = format!("printf q | socat -T3 - UDP:{addr}:{port}");
    let out = match ns {
        Some(ns) => ns.exec(&["bash", "-c", &cmd]),
        None => run("bash", &["-c", &cmd]),
    };
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn published_ports_carry_the_clients_real_address() {
    if !root_or_skip("published_ports_carry_the_clients_real_address") {
        return;
    }
    let o = Outside::new(202);
    let d = Daemon::start();
    let web = Netns::new();
    let (tp, up) = (free_port(), free_port());
    d.ctl_ok(&["network", "create", "--subnet", "10.74.0.0/24", "-o", "host-loopback=true", "pub"]);
    let fds_before = fd_count(d.pid());
    d.ctl_ok(&["network", "connect", "--name", "web", "-p", &format!("{tp}:80"), "-p", &format!("{up}:53/udp"), "pub", &web.name]);
    let _servers = peer_echo_servers(&web);
    let listing = d.ctl_ok(&["port", "web"]);
    assert!(listing.contains(&format!("80/tcp -> 0.0.0.0:{tp}")) && listing.contains(&format!("53/udp -> [::]:{up}")), "{listing}");
    assert_eq!(d.ctl_ok(&["port", "web", "80"]).lines().next(), Some(format!("0.0.0.0:{tp}").as_str()));
    // A client elsewhere: the server sees its own address, not the host's or the gateway's.
    let got = tcp_ask(Some(&o.ns), &o.host, tp);
    assert_eq!(got, format!("tcp-peer={}", o.addr), "TCP");
    let got = udp_ask(Some(&o.ns), &o.host, up);
    assert_eq!(
        got,
        format!("udp-peer={}", o.addr),
        "UDP; {}; in the container: {}",
        d.ctl_json(&["stats"])["Nat"],
        web.exec_ok(&["grep", "Udp:", "/proc/net/snmp"])
    );
    // A client on the host's loopback: a source the container can answer, the gateway.
    assert_eq!(tcp_ask(None, "127.0.0.1", tp), "tcp-peer=10.74.0.1");
    assert_eq!(udp_ask(None, "127.0.0.1", up), "udp-peer=10.74.0.1");
    // Over IPv6 to an IPv4 container: the gateway's IPv4 address stands in for the client.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        assert_eq!(tcp_ask(None, "[::1]", tp), "tcp-peer=10.74.0.1", "IPv6 client");
        assert_eq!(udp_ask(None, "[::1]", up), "udp-peer=10.74.0.1", "IPv6 client");
    }
    // Hairpin: the container reaches its own published port through the host.
    assert_eq!(tcp_ask(Some(&web), "10.74.0.1", tp), "tcp-peer=10.74.0.1", "hairpin");
    // Disconnect releases every socket and flow.
    d.ctl_ok(&["network", "disconnect", "pub", &web.name]);
    assert!(eventually(3, || fd_count(d.pid()) <= fds_before), "fds before {fds_before}, after {}", fd_count(d.pid()));
    assert!(std::net::TcpListener::bind(("0.0.0.0", tp)).is_ok(), "the host port is free again");
}

#[test]
fn ranges_publish_all_and_conflicts() {
    if !root_or_skip("ranges_publish_all_and_conflicts") {
        return;
    }
    let d = Daemon::start();
    let (a, b) = (Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.75.0.0/24", "ranged"]);
    let base = loop {
        let p = free_port();
        if p < 65000 && (1..3).all(|i| std::net::TcpListener::bind(("0.0.0.0", p + i)).is_ok()) {
            break p;
        }
    };
    d.ctl_ok(&[
        "network",
        "connect",
        "--name",
        "a",
        "-p",
        &format!("{}-{}:80-82", base, base + 2),
        "--expose",
        "90",
        "-P",
        "ranged",
        &a.name,
    ]);
    let listing = d.ctl_ok(&["port", "a"]);
    for i in 0..3 {
        assert!(listing.contains(&format!("{}/tcp -> 0.0.0.0:{}", 80 + i, base + i)), "{listing}");
    }
    let eph = d.ctl_ok(&["port", "a", "90/tcp"]);
    let eph_port: u16 = eph.lines().next().and_then(|l| l.rsplit(':').next()).and_then(|p| p.parse().ok()).expect("an ephemeral port");
    let _srv = a.spawn(&["socat", "TCP-LISTEN:90,fork,reuseaddr", "SYSTEM:echo ninety"]);
    listening(&a, "-ltn", ":90 ");
    assert_eq!(tcp_ask(None, "127.0.0.1", eph_port), "ninety");
    // A port someone holds: refused with the port and the holder, and nothing is created.
    let holder = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let held = holder.local_addr().unwrap().port();
    let r = d.ctl(&["network", "connect", "--name", "b", "-p", &format!("{held}:80"), "ranged", &b.name]);
    let err = String::from_utf8_lossy(&r.stderr).to_string();
    assert!(!r.status.success() && err.contains(&held.to_string()) && err.contains("pid"), "{err}");
    let v = d.ctl_json(&["network", "inspect", "ranged"]);
    assert_eq!(v[0]["Containers"].as_object().unwrap().len(), 1, "the refused endpoint is not there: {v}");
    assert!(!b.exec_ok(&["ip", "link"]).contains("eth0"), "its interface was removed");
    // Bad specifications name what is wrong.
    let r = d.ctl(&["network", "connect", "-p", "8000-8010:80-81", "ranged", &b.name]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("differ in length"));
    // The published ports survive a crash of the daemon.
    let mut d = d;
    d.kill9();
    d.restart();
    assert!(eventually(5, || tcp_ask(None, "127.0.0.1", eph_port) == "ninety"), "published again after a restart");
}
