//! End-to-end outbound NAT through the slirp engine: curl, iperf3, UDP and ping from a
//! namespace to servers on the host's loopback (through the gateway address, when allowed) and
//! to an "outside" namespace the test reaches from the host over a veth of its own.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vswitch_tests::*;

/// An HTTP server on `addr` (port 0: any) answering every request with `body`; records each
/// client's address. Stops with the test process.
fn http_server(addr: &str, body: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind(addr).expect("bind");
    let port = l.local_addr().unwrap().port();
    let peers = Arc::new(Mutex::new(Vec::new()));
    let p = peers.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut s = s;
                p.lock().unwrap().push(s.peer_addr().map(|a| a.to_string()).unwrap_or_default());
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    req.extend_from_slice(&buf[..n]);
                    if req.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            });
        }
    });
    (port, peers)
}

/// A UDP server on 127.0.0.1 that answers each datagram with "echo:" and the datagram.
fn udp_echo() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let mut out = b"echo:".to_vec();
            out.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&out, from);
        }
    });
    port
}

#[test]
fn tcp_and_udp_reach_the_host_loopback_only_when_allowed() {
    if !root_or_skip("tcp_and_udp_reach_the_host_loopback_only_when_allowed") {
        return;
    }
    let (port, peers) = http_server("127.0.0.1:0", "hello from the host");
    let udp = udp_echo();
    let d = Daemon::start();
    let (a, b) = (Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.70.1.0/24", "-o", "host-loopback=true", "open"]);
    d.ctl_ok(&["network", "create", "--subnet", "10.70.2.0/24", "shut"]);
    d.ctl_ok(&["network", "connect", "open", &a.name]);
    d.ctl_ok(&["network", "connect", "shut", &b.name]);
    let url = format!("http://10.70.1.1:{port}/");
    let got = a.exec_ok(&["curl", "-sS", "--max-time", "5", &url]);
    assert_eq!(got, "hello from the host");
    assert!(peers.lock().unwrap().iter().all(|p| p.starts_with("127.0.0.1:")), "{peers:?}");
    // Without host-loopback the gateway's address is only the gateway.
    let shut = b.exec(&["curl", "-sS", "--max-time", "2", &format!("http://10.70.2.1:{port}/")]);
    assert!(!shut.status.success(), "host loopback reached without -o host-loopback=true");
    // UDP request and response.
    let echo = a.exec_ok(&["bash", "-c", &format!("printf ping | socat -t2 - UDP:10.70.1.1:{udp}")]);
    assert_eq!(echo, "echo:ping");
    let s = d.ctl_json(&["stats"]);
    assert!(s["Nat"]["TcpOpened"].as_u64().unwrap() >= 1 && s["Nat"]["UdpFlows"].as_u64().unwrap() >= 1, "{}", s["Nat"]);
    let flows = d.ctl_json(&["conntrack", "ls"]);
    assert!(
        flows.as_array().unwrap().iter().any(|f| f["Proto"] == "udp" && f["Source"].as_str().unwrap().starts_with("10.70.1.2:")),
        "{flows}"
    );
    // A refused port is refused at once (RST), not a timeout.
    let closed = free_port();
    let t = std::time::Instant::now();
    let r = a.exec(&["curl", "-sS", "--max-time", "5", &format!("http://10.70.1.1:{closed}/")]);
    assert!(!r.status.success() && t.elapsed() < Duration::from_secs(3), "{:?}", String::from_utf8_lossy(&r.stderr));
    assert!(d.ctl_json(&["stats"])["Nat"]["TcpRefused"].as_u64().unwrap() >= 1);
    // UDP to a closed port: the host's port unreachable comes back as ICMP, so the container's
    // socket fails at once instead of waiting for an answer.
    let closed = free_port();
    let t = std::time::Instant::now();
    let r = a.exec(&["bash", "-c", &format!("printf x | socat -t4 - UDP:10.70.1.1:{closed}")]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("Connection refused") && t.elapsed() < Duration::from_secs(3), "{err} after {:?}", t.elapsed());
    assert!(d.ctl_json(&["stats"])["Nat"]["UdpUnreachable"].as_u64().unwrap() >= 1);
}

#[test]
fn iperf3_to_the_host_and_back() {
    if !root_or_skip("iperf3_to_the_host_and_back") {
        return;
    }
    let port = free_port().to_string();
    let server = Proc(Some(
        std::process::Command::new("iperf3")
            .args(["-s", "-B", "127.0.0.1", "-p", &port])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("iperf3"),
    ));
    assert!(eventually(5, || std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_ok()));
    let d = Daemon::start();
    let a = Netns::new();
    d.ctl_ok(&["network", "create", "--subnet", "10.71.0.0/24", "-o", "host-loopback=true", "fast"]);
    d.ctl_ok(&["network", "connect", "fast", &a.name]);
    for reverse in [false, true] {
        let mut args = vec!["iperf3", "-c", "10.71.0.1", "-p", &port, "-t", "2", "-J"];
        if reverse {
            args.push("-R");
        }
        let out = a.exec_ok(&args);
        let v: serde_json::Value = serde_json::from_str(&out).expect("iperf3 JSON");
        let bps = v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0);
        eprintln!(
            "iperf3 {} through the slirp engine: {:.2} Gbit/s",
            if reverse { "host -> namespace" } else { "namespace -> host" },
            bps / 1e9
        );
        assert!(bps > 1e6, "{out}");
    }
    drop(server);
    // The engine's socket to the host's loopback uses Reno, whatever the system's default: a
    // pacing one (BBR) holds a loopback connection to a third of the throughput.
    let l = TcpListener::bind("127.0.0.1:0").expect("listen");
    l.set_nonblocking(true).expect("non-blocking");
    let lport = l.local_addr().expect("addr").port();
    let to = format!("TCP:10.71.0.1:{lport}");
    let _client = a.spawn(&["socat", "-T", "30", "-u", "OPEN:/dev/null,ignoreeof", &to]);
    let mut held = None;
    assert!(eventually(5, || {
        held = held.take().or_else(|| l.accept().ok());
        held.is_some()
    }));
    let ss = run("ss", &["-tinH", "state", "established", &format!("( dport = :{lport} )")]);
    let ss = String::from_utf8_lossy(&ss.stdout);
    assert!(ss.contains("reno"), "{ss}");
}

#[test]
fn ping_and_tcp_to_the_world_through_host_sockets() {
    if !root_or_skip("ping_and_tcp_to_the_world_through_host_sockets") {
        return;
    }
    let o = Outside::new(201);
    let d = Daemon::start();
    let a = Netns::new();
    d.ctl_ok(&["network", "create", "--subnet", "10.72.0.0/24", "world"]);
    d.ctl_ok(&["network", "connect", "world", &a.name]);
    // ICMP echo through a ping socket: the outside sees the host, the container its replies.
    assert!(a.ping(&o.addr, 3), "ping {} through the engine", o.addr);
    assert!(d.ctl_json(&["stats"])["Nat"]["IcmpFlows"].as_u64().unwrap() >= 1);
    // TCP to a server in the outside namespace.
    let srv = o.ns.spawn(&["bash", "-c", "printf 'HTTP/1.0 200 OK\\r\\n\\r\\nfrom outside' | nc -N -l 8081"]);
    std::thread::sleep(Duration::from_millis(300));
    let got = a.exec_ok(&["curl", "-sS", "--max-time", "5", &format!("http://{}:8081/", o.addr)]);
    assert_eq!(got, "from outside");
    drop(srv);
    // Disconnect releases every flow of the endpoint.
    d.ctl_ok(&["network", "disconnect", "world", &a.name]);
    assert!(eventually(3, || d.ctl_json(&["conntrack", "ls"]).as_array().unwrap().is_empty()), "flows left after disconnect");
}

#[test]
fn internal_networks_have_no_way_out() {
    if !root_or_skip("internal_networks_have_no_way_out") {
        return;
    }
    let (port, _) = http_server("127.0.0.1:0", "nope");
    let d = Daemon::start();
    let a = Netns::new();
    d.ctl_ok(&["network", "create", "--subnet", "10.73.0.0/24", "--internal", "-o", "host-loopback=true", "sealed"]);
    d.ctl_ok(&["network", "connect", "sealed", &a.name]);
    let r = a.exec(&["curl", "-sS", "--max-time", "2", &format!("http://10.73.0.1:{port}/")]);
    assert!(!r.status.success(), "an --internal network reached the host");
    assert_eq!(d.ctl_json(&["stats"])["Nat"]["FramesIn"].as_u64().unwrap(), 0, "nothing reached the engine");
}

fn udp_from(ns: &Netns, to: &str, sport: u16, msg: &str) -> String {
    let cmd = format!("printf {msg} | socat -T2 - UDP:{to},sourceport={sport},reuseaddr");
    String::from_utf8_lossy(&ns.exec(&["bash", "-c", &cmd]).stdout).into_owned()
}

#[test]
fn the_flow_limit_refuses_new_flows_and_spares_old_ones_and_udp_flows_expire() {
    if !root_or_skip("the_flow_limit_refuses_new_flows_and_spares_old_ones_and_udp_flows_expire") {
        return;
    }
    let port = udp_echo();
    let d = Daemon::start_with(&["--nat-max-flows-per-endpoint", "3", "--nat-udp-timeout", "2"]);
    let a = Netns::new();
    d.ctl_ok(&["network", "create", "--subnet", "10.76.0.0/24", "-o", "host-loopback=true", "small"]);
    d.ctl_ok(&["network", "connect", "small", &a.name]);
    let to = format!("10.76.0.1:{port}");
    for sport in [41001, 41002, 41003] {
        assert_eq!(udp_from(&a, &to, sport, "x"), "echo:x", "flow from port {sport}");
    }
    assert_eq!(udp_from(&a, &to, 41004, "y"), "", "a fourth flow is over the limit");
    let nat = &d.ctl_json(&["stats"])["Nat"];
    assert!(nat["Drops"]["flow_table_full"].as_u64().unwrap() >= 1, "{nat}");
    assert_eq!(udp_from(&a, &to, 41001, "z"), "echo:z", "an existing flow is unharmed");
    // Answered flows live four times the unanswered timeout (8 s here); unanswered ones 2 s.
    assert!(
        eventually(15, || d.ctl_json(&["conntrack", "ls"]).as_array().unwrap().is_empty()),
        "flows did not expire: {}",
        d.ctl_json(&["conntrack", "ls"])
    );
    assert!(d.ctl_json(&["stats"])["Nat"]["FlowsExpired"].as_u64().unwrap() >= 3);
    assert_eq!(udp_from(&a, &to, 41004, "w"), "echo:w", "room again once they expired");
}

/// A frame from `src_mac`/`src` in the namespace to `dst` through the gateway `gw_mac`:
/// Ethernet + IPv4 (valid header checksum) + `l4` with protocol `proto`.
fn ipv4_frame(gw_mac: [u8; 6], src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8], total_extra: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&gw_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = 20 + l4.len() as u16 + total_extra;
    let mut ip = [0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0, src[0], src[1], src[2], src[3], dst[0], dst[1], dst[2], dst[3]];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let mut sum: u32 = ip.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

fn mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s.split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    v.try_into().unwrap()
}

#[test]
fn malformed_tcp_udp_and_icmp_frames_are_counted_and_dropped() {
    if !root_or_skip("malformed_tcp_udp_and_icmp_frames_are_counted_and_dropped") {
        return;
    }
    let d = Daemon::start();
    let a = Netns::new();
    d.ctl_ok(&["network", "create", "--subnet", "10.77.0.0/24", "junk"]);
    d.ctl_ok(&["network", "connect", "junk", &a.name]);
    let v = d.ctl_json(&["network", "inspect", "junk"]);
    let gw = mac(v[0]["VSwitch"]["GatewayMAC"].as_str().unwrap());
    let me = mac(v[0]["Containers"].as_object().unwrap().values().next().unwrap()["MacAddress"].as_str().unwrap());
    let (src, dst) = ([10, 77, 0, 2], [10, 203, 0, 1]); // no route covers dst: these go to the engine
    let mut syn = vec![0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0xde, 0xad, 0, 0]; // checksum wrong
    syn[16..18].copy_from_slice(&[0xde, 0xad]);
    let udp_cut = [0x9c, 0x41, 0, 53, 0, 40, 0, 0, 1, 2, 3, 4]; // says 40 bytes, has 12
                                                                // An ICMP timestamp request with a right checksum: well-formed, but not something the
                                                                // engine carries.
    let mut timestamp = [13u8, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut sum: u32 = timestamp.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    timestamp[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let frames = vec![
        ipv4_frame(gw, me, src, dst, 6, &syn, 0),
        ipv4_frame(gw, me, src, dst, 17, &udp_cut, 0),
        ipv4_frame(gw, me, src, dst, 1, &timestamp, 0),
    ];
    assert_eq!(send_raw(&a, "eth0", frames), 3);
    assert!(
        eventually(3, || {
            let n = &d.ctl_json(&["stats"])["Nat"];
            n["Drops"]["checksum"].as_u64() >= Some(1)
                && n["Drops"]["malformed"].as_u64() >= Some(1)
                && n["Drops"]["unsupported"].as_u64() >= Some(1)
        }),
        "{}",
        d.ctl_json(&["stats"])["Nat"]
    );
    let n = &d.ctl_json(&["stats"])["Nat"];
    assert_eq!((n["TcpOpen"].as_u64(), n["UdpOpen"].as_u64(), n["IcmpOpen"].as_u64()), (Some(0), Some(0), Some(0)), "no flow opened: {n}");
    // The engine goes on working.
    let (port, _) = http_server("127.0.0.1:0", "still here");
    d.ctl_ok(&["network", "create", "--subnet", "10.77.1.0/24", "-o", "host-loopback=true", "fine"]);
    let b = Netns::new();
    d.ctl_ok(&["network", "connect", "fine", &b.name]);
    assert_eq!(b.exec_ok(&["curl", "-sS", "--max-time", "5", &format!("http://10.77.1.1:{port}/")]), "still here");
}
