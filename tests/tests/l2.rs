//! End-to-end L2: namespaces talk through vswitchd, isolation, connect/disconnect, FDB, crash
//! recovery, veth ports, and malformed frames.

use std::time::Duration;

use vswitch_tests::*;

#[test]
fn namespaces_ping_both_ways_and_the_gateway() {
    if !root_or_skip("namespaces_ping_both_ways_and_the_gateway") {
        return;
    }
    let d = Daemon::start();
    let (a, b) = (Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.10.0.0/24", "dev"]);
    d.ctl_ok(&["network", "connect", "dev", &a.name]);
    d.ctl_ok(&["network", "connect", "dev", &b.name]);
    assert_eq!(d.ip_of("dev", &a.name), "10.10.0.2");
    assert_eq!(d.ip_of("dev", &b.name), "10.10.0.3");
    // The TAP is eth0 inside the sandbox, with the address, MTU and the default route.
    let link = a.exec_ok(&["ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(link.contains("10.10.0.2/24"), "{link}");
    assert!(a.exec_ok(&["ip", "route"]).contains("default via 10.10.0.1 dev eth0"));
    assert!(a.exec_ok(&["ip", "link", "show", "eth0"]).contains("02:42:0a:0a:00:02"));
    assert!(a.ping("10.10.0.3", 3), "a -> b");
    assert!(b.ping("10.10.0.2", 3), "b -> a");
    assert!(a.ping("10.10.0.1", 2), "a -> gateway");
    // No kernel bridge carries this: the root namespace has no link into the sandboxes.
    let pa = d.port_stats(&a.name);
    assert!(pa["RxPackets"].as_u64().unwrap() >= 6 && pa["TxPackets"].as_u64().unwrap() >= 3, "{pa}");
    // The kernel's side of the TAP is read too (what the sandbox lost before vswitchd read it).
    assert_eq!(pa["SandboxTxDropped"].as_u64(), Some(0), "{pa}");
    let fdb = d.ctl_ok(&["fdb", "show", "dev"]);
    assert!(fdb.contains("02:42:0a:0a:00:02") && fdb.contains("02:42:0a:0a:00:03"), "{fdb}");
}

#[test]
fn networks_are_isolated_from_each_other() {
    if !root_or_skip("networks_are_isolated_from_each_other") {
        return;
    }
    let d = Daemon::start();
    let (a, b, c) = (Netns::new(), Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.31.0.0/24", "n1"]);
    d.ctl_ok(&["network", "create", "--subnet", "10.32.0.0/24", "n2"]);
    d.ctl_ok(&["network", "connect", "n1", &a.name]);
    d.ctl_ok(&["network", "connect", "n1", &b.name]);
    d.ctl_ok(&["network", "connect", "n2", &c.name]);
    assert!(a.ping("10.31.0.3", 1));
    // c claims an address in n1's subnet, so it would reach a over L2 if frames leaked.
    c.exec_ok(&["ip", "addr", "add", "10.31.0.50/24", "dev", "eth0"]);
    assert!(!c.ping("10.31.0.2", 2), "n2 must not reach n1 at L2");
    assert!(!c.ping("10.31.0.3", 1));
    assert!(!a.ping("10.32.0.2", 1), "nor through the gateway");
    // c's broadcasts (ARP) never arrived at a's port, and n1 never learned c's MAC.
    let before = d.port_stats(&a.name)["TxPackets"].as_u64().unwrap();
    let _ = c.ping("10.31.0.2", 1);
    assert_eq!(d.port_stats(&a.name)["TxPackets"].as_u64().unwrap(), before);
    assert!(!d.ctl_ok(&["fdb", "show", "n1"]).contains("02:42:0a:20:00:02"), "c's MAC leaked into n1");
    // A sandbox on both networks reaches both.
    d.ctl_ok(&["network", "connect", "n2", &a.name]);
    assert!(a.exec_ok(&["ip", "-o", "addr", "show", "dev", "eth1"]).contains("10.32.0.3/24"));
    assert!(a.ping("10.32.0.2", 1), "a on n2 reaches c");
    assert!(a.ping("10.31.0.3", 1), "and still b on n1");
}

#[test]
fn disconnect_stops_traffic_and_connect_restores_it() {
    if !root_or_skip("disconnect_stops_traffic_and_connect_restores_it") {
        return;
    }
    let d = Daemon::start();
    let (a, b) = (Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.33.0.0/24", "dc"]);
    d.ctl_ok(&["network", "connect", "dc", &a.name]);
    d.ctl_ok(&["network", "connect", "dc", &b.name]);
    assert!(a.ping("10.33.0.3", 1));
    d.ctl_ok(&["network", "disconnect", "dc", &b.name]);
    assert!(!b.exec(&["ip", "link", "show", "eth0"]).status.success(), "eth0 is gone from b");
    assert!(!a.ping("10.33.0.3", 1));
    let inspect = d.ctl_json(&["network", "inspect", "dc"]);
    assert_eq!(inspect[0]["Containers"].as_object().unwrap().len(), 1);
    // Disconnecting again is an error, unless forced.
    let o = d.ctl(&["network", "disconnect", "dc", &b.name]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("is not connected"));
    d.ctl_ok(&["network", "disconnect", "-f", "dc", &b.name]);
    d.ctl_ok(&["network", "connect", "dc", &b.name]);
    assert!(a.ping_eventually("10.33.0.3", 5), "traffic restored after reconnect");
}

#[test]
fn fdb_learns_addresses_and_ages_them_out() {
    if !root_or_skip("fdb_learns_addresses_and_ages_them_out") {
        return;
    }
    let d = Daemon::start();
    let (a, b) = (Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.34.0.0/24", "--fdb-aging", "2", "ag"]);
    d.ctl_ok(&["network", "connect", "ag", &a.name]);
    d.ctl_ok(&["network", "connect", "ag", &b.name]);
    // A MAC the control plane does not know: it can only be learned. b forgets a's old MAC
    // (announced at connect; Linux would ignore a change of it for a second).
    a.exec_ok(&["ip", "link", "set", "eth0", "address", "02:00:00:00:ab:cd"]);
    assert!(
        eventually(8, || {
            b.exec_ok(&["ip", "neigh", "flush", "all"]);
            a.exec(&["ping", "-c", "1", "-W", "1", "10.34.0.3"]).status.success()
        }),
        "a with its new MAC never reached b"
    );
    let fdb = d.ctl_json(&["fdb", "show", "ag"]);
    let row = fdb.as_array().unwrap().iter().find(|r| r["MAC"] == "02:00:00:00:ab:cd").cloned();
    let row = row.unwrap_or_else(|| panic!("learned MAC missing: {fdb}"));
    assert_eq!(row["Static"], false);
    assert_eq!(row["Endpoint"], a.name.as_str());
    // Aging 2 s: with the sender quiet, the entry disappears; static entries stay.
    assert!(eventually(6, || !d.ctl_ok(&["fdb", "show", "ag"]).contains("02:00:00:00:ab:cd")), "learned entry did not age out");
    assert!(d.ctl_ok(&["fdb", "show", "ag"]).contains("02:42:0a:22:00:03"), "static entries never age");
}

#[test]
fn state_survives_kill9_and_traffic_resumes() {
    if !root_or_skip("state_survives_kill9_and_traffic_resumes") {
        return;
    }
    let mut d = Daemon::start();
    let (a, b) = (Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.35.0.0/24", "-o", "com.docker.network.driver.mtu=9000", "--label", "team=x", "keep"]);
    d.ctl_ok(&["network", "connect", "--alias", "db", "keep", &a.name]);
    d.ctl_ok(&["network", "connect", "--ip", "10.35.0.77", "keep", &b.name]);
    let before = d.ctl_json(&["network", "inspect", "keep"]);
    assert!(a.ping("10.35.0.77", 1));
    d.restart();
    let after = d.ctl_json(&["network", "inspect", "keep"]);
    assert_eq!(before[0]["Id"], after[0]["Id"]);
    assert_eq!(before[0]["Containers"], after[0]["Containers"], "every endpoint is back");
    assert_eq!(after[0]["Labels"]["team"], "x");
    assert_eq!(after[0]["VSwitch"]["MTU"], 9000);
    // The namespace kept its interface and addresses; the port is re-attached.
    assert!(a.ping_eventually("10.35.0.77", 5), "traffic resumes without user action");
    assert!(b.ping("10.35.0.2", 1));
    // A namespace deleted while the daemon was down loses its endpoint at the next start.
    d.kill9();
    drop(b);
    d.restart();
    let after = d.ctl_json(&["network", "inspect", "keep"]);
    assert_eq!(after[0]["Containers"].as_object().unwrap().len(), 1);
    assert!(d.log().contains("its sandbox is gone"));
}

#[test]
fn a_deleted_namespace_frees_its_endpoint() {
    if !root_or_skip("a_deleted_namespace_frees_its_endpoint") {
        return;
    }
    let d = Daemon::start();
    let a = Netns::new();
    d.ctl_ok(&["network", "create", "--subnet", "10.36.0.0/24", "gone"]);
    d.ctl_ok(&["network", "connect", "gone", &a.name]);
    drop(a);
    assert!(
        eventually(10, || d.ctl_json(&["network", "inspect", "gone"])[0]["Containers"].as_object().unwrap().is_empty()),
        "endpoint of a deleted namespace stays: {}",
        d.log()
    );
    d.ctl_ok(&["network", "rm", "gone"]);
}

#[test]
fn veth_host_end_joins_a_network() {
    if !root_or_skip("veth_host_end_joins_a_network") {
        return;
    }
    let d = Daemon::start();
    let (a, c) = (Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.37.0.0/24", "vn"]);
    d.ctl_ok(&["network", "connect", "vn", &a.name]);
    let v = Veth::new(&c, "eth0");
    let out = d.ctl_json(&["network", "connect", "--veth", &v.host, "--ip", "10.37.0.9", "vn"]);
    assert_eq!(out["IPv4Address"], "10.37.0.9/24");
    c.exec_ok(&["ip", "addr", "add", "10.37.0.9/24", "dev", "eth0"]);
    c.exec_ok(&["ip", "link", "set", "eth0", "up"]);
    assert!(c.ping_eventually("10.37.0.2", 5), "veth sandbox reaches the TAP sandbox");
    assert!(a.ping_eventually("10.37.0.9", 5), "TAP sandbox reaches the veth sandbox");
    let st = d.port_stats(&v.host);
    assert_eq!(st["Kind"], "afpacket");
    // Attaching the same interface twice is refused.
    let o = d.ctl(&["network", "connect", "--veth", &v.host, "vn"]);
    assert!(!o.status.success());
    d.ctl_ok(&["network", "disconnect", "vn", &v.host]);
    assert!(!c.ping("10.37.0.2", 1));
}

#[test]
fn tcp_crosses_the_switch_with_gso_frames() {
    if !root_or_skip("tcp_crosses_the_switch_with_gso_frames") {
        return;
    }
    if run("sh", &["-c", "command -v iperf3"]).stdout.is_empty() {
        eprintln!("SKIPPED tcp_crosses_the_switch_with_gso_frames: iperf3 is not installed (scripts/test installs it)");
        return;
    }
    let d = Daemon::start();
    let (a, b) = (Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.38.0.0/24", "tcp"]);
    d.ctl_ok(&["network", "connect", "tcp", &a.name]);
    d.ctl_ok(&["network", "connect", "tcp", &b.name]);
    let port = "5299";
    let server = b.spawn(&["iperf3", "-s", "-1", "-p", port]);
    assert!(eventually(10, || b.exec_ok(&["ss", "-ltnH"]).contains(":5299")), "iperf3 server did not listen");
    let out = a.exec_ok(&["iperf3", "-c", "10.38.0.3", "-p", port, "-t", "2", "-J"]);
    drop(server);
    let v: serde_json::Value = serde_json::from_str(&out).expect("iperf3 JSON");
    let bytes = v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(bytes > 10 << 20, "TCP moved only {bytes} bytes");
    // Frames far larger than the MTU crossed whole (without GSO they would average ~1524 B
    // with the virtio-net header; with it, tens of KB).
    let st = d.port_stats(&a.name);
    let per = st["RxBytes"].as_u64().unwrap() / st["RxPackets"].as_u64().unwrap().max(1);
    assert!(per > 8000, "average frame {per} B: GSO frames were not passed through");
}

fn frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, len: usize, fill: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.resize(len.max(14), fill);
    f
}

#[test]
fn malformed_frames_are_counted_and_forwarding_continues() {
    if !root_or_skip("malformed_frames_are_counted_and_forwarding_continues") {
        return;
    }
    let d = Daemon::start();
    let (a, b) = (Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.39.0.0/24", "bad"]);
    d.ctl_ok(&["network", "connect", "bad", &a.name]);
    d.ctl_ok(&["network", "connect", "bad", &b.name]);
    assert!(a.ping("10.39.0.3", 1));
    let mut frames = Vec::new();
    // Group-address sources: never valid, never learned.
    for i in 0..50u8 {
        frames.push(frame([2, 0, 0, 0, 0, 9], [0x01, 0, 0x5e, 0, 0, i], 0x0800, 60, i));
    }
    // Garbage of every shape: random bytes, odd lengths, unknown ethertypes, ARP/IP headers cut short.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..300usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 14 + (x as usize % 1480);
        let mut f: Vec<u8> = (0..len).map(|k| (x >> (k % 56)) as u8).collect();
        f[6] &= 0xfe; // a unicast source, so the frame is "valid" L2 garbage
        if i % 3 == 0 {
            f[12..14].copy_from_slice(&[0x08, 0x06]); // a truncated or nonsensical ARP
            f[0..6].copy_from_slice(&[0xff; 6]);
        }
        frames.push(f);
    }
    let sent = send_raw(&a, "eth0", frames);
    assert!(sent >= 340, "only {sent} raw frames left the namespace");
    // Frames longer than the network's MTU: raise eth0's MTU inside a so the kernel lets them out.
    a.exec_ok(&["ip", "link", "set", "eth0", "mtu", "9000"]);
    let big: Vec<Vec<u8>> = (0..20).map(|_| frame([2, 0x42, 10, 39, 0, 3], [2, 0x42, 10, 39, 0, 2], 0x0800, 5000, 0)).collect();
    assert_eq!(send_raw(&a, "eth0", big), 20);
    a.exec_ok(&["ip", "link", "set", "eth0", "mtu", "1500"]);
    assert!(
        eventually(5, || {
            let p = d.port_stats(&a.name);
            p["Drops"]["multicast_src"].as_u64() == Some(50) && p["Drops"]["oversize"].as_u64() == Some(20)
        }),
        "drop counters: {}",
        d.port_stats(&a.name)
    );
    let fdb = d.ctl_ok(&["fdb", "show", "bad"]);
    assert!(!fdb.contains("01:00:5e"), "group addresses were learned: {fdb}");
    // The daemon is up and still forwarding.
    assert!(a.ping("10.39.0.3", 2));
    assert!(b.ping("10.39.0.2", 1));
    assert!(d.ctl_json(&["stats"])["Gateway"]["Malformed"].as_u64().unwrap() > 0, "the gateway counted the bad ARPs");
}

#[test]
fn a_sandbox_named_by_pid_and_by_path() {
    if !root_or_skip("a_sandbox_named_by_pid_and_by_path") {
        return;
    }
    let d = Daemon::start();
    let a = Netns::new();
    d.ctl_ok(&["network", "create", "--subnet", "10.42.0.0/24", "pid"]);
    // A process with a network namespace of its own and no name for it: a container's shape.
    let holder = Proc(Some(std::process::Command::new("unshare").args(["-n", "sleep", "60"]).spawn().expect("unshare -n sleep")));
    let pid = holder.0.as_ref().unwrap().id().to_string();
    assert!(eventually(5, || {
        let own = std::fs::read_link("/proc/self/ns/net").ok();
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
        theirs.is_some() && theirs != own
    }));
    let out = d.ctl_json(&["network", "connect", "pid", &pid]);
    assert_eq!(out["Name"], format!("pid{pid}"));
    d.ctl_ok(&["network", "connect", "pid", a.path().to_str().unwrap()]);
    assert!(a.ping_eventually("10.42.0.2", 5), "path-named sandbox reaches the PID-named one");
    // The process exits: its namespace, and so its endpoint, goes.
    drop(holder);
    assert!(
        eventually(10, || d.ctl_json(&["network", "inspect", "pid"])[0]["Containers"].as_object().unwrap().len() == 1),
        "endpoint of an exited PID stays"
    );
}

#[test]
fn per_port_mac_limit_stops_learning_not_forwarding() {
    if !root_or_skip("per_port_mac_limit_stops_learning_not_forwarding") {
        return;
    }
    let d = Daemon::start();
    let (a, b) = (Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.43.0.0/24", "--mac-limit", "10", "lim"]);
    d.ctl_ok(&["network", "connect", "lim", &a.name]);
    d.ctl_ok(&["network", "connect", "lim", &b.name]);
    // A MAC flood from a: 100 distinct unicast sources.
    let frames: Vec<Vec<u8>> = (0..100u8).map(|i| frame([0xff; 6], [2, 0xee, 0, 0, 0, i], 0x88b5, 60, 0)).collect();
    assert_eq!(send_raw(&a, "eth0", frames), 100);
    // Every frame is either learned or counted; the limit holds (two queues racing on
    // different shards may overshoot it by one per extra worker).
    let settled = || {
        let p = d.port_stats(&a.name);
        p["LearnLimited"].as_u64().unwrap_or(0) + p["Learned"].as_u64().unwrap_or(0) == 100
    };
    assert!(eventually(5, settled), "{}", d.port_stats(&a.name));
    let learned = d.port_stats(&a.name)["Learned"].as_u64().unwrap();
    assert!((10..=11).contains(&learned), "learned {learned} with a limit of 10");
    let rows = d.ctl_json(&["fdb", "show", "lim"]).as_array().unwrap().iter().filter(|r| r["Static"] == false).count();
    assert_eq!(rows as u64, learned);
    assert!(a.ping("10.43.0.3", 1), "the port still forwards");
}

#[test]
fn link_down_and_up_keeps_endpoints_attached() {
    if !root_or_skip("link_down_and_up_keeps_endpoints_attached") {
        return;
    }
    let d = Daemon::start();
    let (a, b, c) = (Netns::new(), Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.44.0.0/24", "flap"]);
    d.ctl_ok(&["network", "connect", "flap", &a.name]);
    d.ctl_ok(&["network", "connect", "flap", &b.name]);
    let v = Veth::new(&c, "eth0");
    d.ctl_ok(&["network", "connect", "--veth", &v.host, "--ip", "10.44.0.9", "flap"]);
    c.exec_ok(&["ip", "addr", "add", "10.44.0.9/24", "dev", "eth0"]);
    c.exec_ok(&["ip", "link", "set", "eth0", "up"]);
    assert!(a.ping_eventually("10.44.0.3", 5));
    assert!(a.ping_eventually("10.44.0.9", 5));
    // b's TAP goes down inside its sandbox while a floods ARP at it; the veth's host end flaps.
    b.exec_ok(&["ip", "link", "set", "eth0", "down"]);
    ok("ip", &["link", "set", &v.host, "down"]);
    a.exec_ok(&["ip", "neigh", "flush", "all"]);
    assert!(!a.ping("10.44.0.3", 1));
    assert!(!a.ping("10.44.0.9", 1));
    std::thread::sleep(Duration::from_millis(1500)); // past a reaper tick
    b.exec_ok(&["ip", "link", "set", "eth0", "up"]);
    ok("ip", &["link", "set", &v.host, "up"]);
    assert!(a.ping_eventually("10.44.0.3", 5), "TAP endpoint came back with its link");
    assert!(a.ping_eventually("10.44.0.9", 5), "veth endpoint came back with its link");
    let v2 = d.ctl_json(&["network", "inspect", "flap"]);
    assert_eq!(v2[0]["Containers"].as_object().unwrap().len(), 3, "no endpoint was forgotten");
    assert!(d.port_stats(&b.name)["Down"] == false);
}
