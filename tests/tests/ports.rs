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
    assert_eq!(d.ctl_json(&["stats"])["Nat"]["PublishedSpliced"], 0, "splicing is off by default");
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

#[test]
fn splice_loopback_joins_loopback_clients_to_the_namespace() {
    if !root_or_skip("splice_loopback_joins_loopback_clients_to_the_namespace") {
        return;
    }
    let d = Daemon::start_with(&["--splice-loopback"]);
    let web = Netns::new();
    let (tp, lp, wp, bp) = (free_port(), free_port(), free_port(), free_port());
    d.ctl_ok(&["network", "create", "--subnet", "10.73.0.0/24", "spliced"]);
    let fds_before = fd_count(d.pid());
    let up = free_port();
    let maps = [format!("{tp}:80"), format!("{lp}:81"), format!("{wp}:82"), format!("{bp}:5201"), format!("{up}:53/udp")];
    let mut args = vec!["network", "connect", "--name", "web"];
    maps.iter().for_each(|m| args.extend(["-p", m.as_str()]));
    args.extend(["spliced", web.name.as_str()]);
    d.ctl_ok(&args);
    let _peer = web.spawn(&["socat", "TCP-LISTEN:80,fork,reuseaddr", "SYSTEM:echo peer=$SOCAT_PEERADDR"]);
    let _udp_peer = web.spawn(&["socat", "UDP-RECVFROM:53,fork", "SYSTEM:echo udp-peer=$SOCAT_PEERADDR"]);
    // Bound to the container's loopback only: not published, as with Docker.
    let _local = web.spawn(&["socat", "TCP-LISTEN:81,bind=127.0.0.1,fork,reuseaddr", "SYSTEM:echo local"]);
    // Answers after the client's end of file: half-close must get through.
    let _wc = web.spawn(&["socat", "TCP-LISTEN:82,fork,reuseaddr", "SYSTEM:wc -c"]);
    let _iperf = web.spawn(&["iperf3", "-s", "-p", "5201"]);
    for p in [":80 ", ":81 ", ":82 ", ":5201 "] {
        listening(&web, "-ltn", p);
    }
    assert_eq!(tcp_ask(None, "127.0.0.1", tp), "peer=127.0.0.1");
    listening(&web, "-lun", ":53 ");
    assert_eq!(
        udp_ask(None, "127.0.0.1", up),
        "udp-peer=127.0.0.1",
        "{}; {}",
        d.ctl_json(&["stats"])["Nat"],
        web.exec_ok(&["grep", "Udp:", "/proc/net/snmp"])
    );
    assert_eq!(tcp_ask(None, "127.0.0.1", lp), "", "a service on the container's loopback is not published");
    let wc = run("sh", &["-c", &format!("printf 12345 | socat -t5 -T5 - TCP:127.0.0.1:{wp}")]);
    assert_eq!(String::from_utf8_lossy(&wc.stdout).trim(), "5");
    let bps = tp_iperf(bp);
    assert!(bps > 1e8, "{bps} bit/s through the splice");
    let nat = d.ctl_json(&["stats"])["Nat"].clone();
    assert!(nat["PublishedSpliced"].as_u64() >= Some(5) && nat["PublishedBytesIn"].as_u64() > Some(1 << 20), "{nat}");
    // A spliced connection is a flow of connection tracking: listed, and ended by a flush.
    let _slow = web.spawn(&["socat", "TCP-LISTEN:83,fork,reuseaddr", "SYSTEM:sleep 30"]);
    listening(&web, "-ltn", ":83 ");
    d.ctl_ok(&["network", "disconnect", "spliced", &web.name]);
    assert!(eventually(3, || fd_count(d.pid()) <= fds_before), "fds before {fds_before}, after {}", fd_count(d.pid()));
    let sp = free_port();
    d.ctl_ok(&["network", "connect", "--name", "web", "-p", &format!("{sp}:83"), "spliced", &web.name]);
    let mut held = std::net::TcpStream::connect(("127.0.0.1", sp)).unwrap();
    assert!(
        eventually(3, || d.ctl_ok(&["conntrack", "ls"]).lines().any(|l| l.contains("127.0.0.1") && l.contains(":83"))),
        "{}",
        d.ctl_ok(&["conntrack", "ls"])
    );
    d.ctl_ok(&["conntrack", "flush"]);
    held.set_read_timeout(Some(std::time::Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 1];
    assert!(matches!(std::io::Read::read(&mut held, &mut buf), Ok(0) | Err(_)), "the flush ended the client's connection");
    assert_eq!(d.ctl_json(&["stats"])["Nat"]["SpliceOpen"], 0);
    // Without --splice-loopback: the framed path, where a loopback client appears as the gateway.
    let d2 = Daemon::start();
    let other = Netns::new();
    let (np, hp) = (free_port(), free_port());
    d2.ctl_ok(&["network", "create", "--subnet", "10.72.0.0/24", "framed"]);
    d2.ctl_ok(&["network", "connect", "-p", &format!("{np}:80"), "-p", &format!("{hp}:82"), "framed", &other.name]);
    let _peer2 = other.spawn(&["socat", "TCP-LISTEN:80,fork,reuseaddr", "SYSTEM:echo peer=$SOCAT_PEERADDR"]);
    listening(&other, "-ltn", ":80 ");
    assert_eq!(tcp_ask(None, "127.0.0.1", np), "peer=10.72.0.1");
    assert_eq!(d2.ctl_json(&["stats"])["Nat"]["PublishedSpliced"], 0);
    // The engine's socket facing a loopback client uses Reno (what it sends stays on this host).
    let _hold = other.spawn(&["socat", "-T", "30", "TCP-LISTEN:82,reuseaddr", "OPEN:/dev/null,ignoreeof"]);
    listening(&other, "-ltn", ":82 ");
    let _client = std::net::TcpStream::connect(("127.0.0.1", hp)).expect("connect");
    let ss = || String::from_utf8_lossy(&run("ss", &["-tinH", "state", "established", &format!("( sport = :{hp} )")]).stdout).into_owned();
    assert!(eventually(5, || ss().contains("reno")), "{}", ss());
}

/// iperf3 from the host's loopback to `port`, 64 MB (not a timed run: other tests share the CPUs): the receiver's bit rate.
fn tp_iperf(port: u16) -> f64 {
    let out = run("iperf3", &["-c", "127.0.0.1", "-p", &port.to_string(), "-n", "64M", "-J"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0)
}
