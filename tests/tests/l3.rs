//! End-to-end L3 in real namespaces: the gateway over IPv4 and IPv6, router advertisements
//! and SLAAC, announcements of new endpoints.

use vswitch_tests::*;

#[test]
fn dual_stack_endpoints_reach_each_other_and_the_gateway() {
    if !root_or_skip("dual_stack_endpoints_reach_each_other_and_the_gateway") {
        return;
    }
    let d = Daemon::start();
    let (a, b) = (Netns::with_ipv6(), Netns::with_ipv6());
    d.ctl_ok(&["network", "create", "--subnet", "10.50.0.0/24", "--ipv6", "--subnet", "fd50::/64", "front"]);
    d.ctl_ok(&["network", "connect", "front", &a.name]);
    d.ctl_ok(&["network", "connect", "--ip6", "fd50::99", "front", &b.name]);
    let v = d.ctl_json(&["network", "inspect", "front"]);
    assert_eq!(v[0]["EnableIPv6"], true);
    let addrs: Vec<String> =
        v[0]["Containers"].as_object().unwrap().values().map(|c| c["IPv6Address"].as_str().unwrap().to_string()).collect();
    assert!(addrs.contains(&"fd50::2/64".to_string()) && addrs.contains(&"fd50::99/64".to_string()), "{addrs:?}");
    assert!(a.exec_ok(&["ip", "-6", "route"]).contains("default via fd50::1"));
    assert!(a.ping("10.50.0.1", 1), "IPv4 gateway");
    assert!(a.ping_eventually("fd50::1", 5), "IPv6 gateway");
    assert!(a.ping_eventually("fd50::99", 5), "a -> b over IPv6");
    assert!(b.ping("10.50.0.2", 1), "b -> a over IPv4");
    // A network with --ipv6 and no IPv6 subnet gets a /64 of the host's ULA /48.
    d.ctl_ok(&["network", "create", "--ipv6", "auto6"]);
    let v = d.ctl_json(&["network", "inspect", "auto6"]);
    let cfg = v[0]["IPAM"]["Config"].as_array().unwrap();
    let v6 = cfg.iter().find_map(|c| c["Subnet"].as_str().filter(|s| s.contains(':'))).expect("an IPv6 subnet");
    assert!(v6.starts_with("fd") && v6.ends_with("::/64"), "{v6}");
}

#[test]
fn slaac_hosts_configure_themselves_from_router_advertisements() {
    if !root_or_skip("slaac_hosts_configure_themselves_from_router_advertisements") {
        return;
    }
    let d = Daemon::start();
    let a = Netns::with_ipv6();
    d.ctl_ok(&["network", "create", "--subnet", "10.51.0.0/24", "--ipv6", "--subnet", "fd51::/64", "slaac"]);
    d.ctl_ok(&["network", "connect", "slaac", &a.name]);
    // Beside its static fd51::2, the host forms an address from the advertised prefix and its
    // EUI-64 (02:42:0a:33:00:02 -> ::42:aff:fe33:2) and learns a default router.
    assert!(
        eventually(15, || a.exec_ok(&["ip", "-6", "addr", "show", "dev", "eth0"]).contains("fd51::42:aff:fe33:2/64")),
        "no SLAAC address: {}",
        a.exec_ok(&["ip", "-6", "addr"])
    );
    assert!(a.exec_ok(&["ip", "-6", "route"]).contains("default via fe80::"), "no RA default route");
    // The gateway's link-local address (the RA's source) answers too.
    let gw_ll = a.exec_ok(&["ip", "-6", "route", "show", "default", "proto", "ra"]);
    let ll = gw_ll.split_whitespace().nth(2).expect("next hop").to_string();
    assert!(a.ping_eventually(&format!("{ll}%eth0"), 5), "link-local gateway {ll}");
    assert!(d.ctl_json(&["stats"])["Gateway"]["RouterAdverts"].as_u64().unwrap() >= 1);
}

#[test]
fn a_new_endpoint_is_announced_so_peers_update_their_caches() {
    if !root_or_skip("a_new_endpoint_is_announced_so_peers_update_their_caches") {
        return;
    }
    let d = Daemon::start();
    let (a, b) = (Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.52.0.0/24", "ann"]);
    d.ctl_ok(&["network", "connect", "ann", &a.name]);
    d.ctl_ok(&["network", "connect", "--ip", "10.52.0.7", "--mac", "02:00:00:00:07:01", "ann", &b.name]);
    assert!(a.ping("10.52.0.7", 1));
    assert!(a.exec_ok(&["ip", "neigh", "show", "10.52.0.7"]).contains("02:00:00:00:07:01"));
    // The address moves to a new MAC: a's cache follows within a tick, with no traffic from a.
    d.ctl_ok(&["network", "disconnect", "ann", &b.name]);
    d.ctl_ok(&["network", "connect", "--ip", "10.52.0.7", "--mac", "02:00:00:00:07:02", "ann", &b.name]);
    assert!(
        eventually(3, || a.exec_ok(&["ip", "neigh", "show", "10.52.0.7"]).contains("02:00:00:00:07:02")),
        "a still caches the old MAC: {}",
        a.exec_ok(&["ip", "neigh"])
    );
}

/// A udhcpc script that only sets the address and the default route (Debian's default one
/// would also rewrite /etc/resolv.conf, which inside `ip netns exec` can be the host's).
fn udhcpc_script(d: &Daemon) -> String {
    let path = d.dir.join("udhcpc.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\ncase \"$1\" in bound|renew)\n  ip addr flush dev \"$interface\"\n  ip addr add \"$ip/$mask\" dev \"$interface\"\n  for r in $router; do ip route replace default via \"$r\" dev \"$interface\"; done\n  echo \"leased $ip\";;\nesac\n",
    )
    .unwrap();
    ok("chmod", &["755", path.to_str().unwrap()]);
    path.display().to_string()
}

#[test]
fn dhcp_clients_get_their_ipam_address_and_leases_survive_a_restart() {
    if !root_or_skip("dhcp_clients_get_their_ipam_address_and_leases_survive_a_restart") {
        return;
    }
    if run("sh", &["-c", "command -v udhcpc"]).stdout.is_empty() {
        eprintln!(
            "SKIPPED dhcp_clients_get_their_ipam_address_and_leases_survive_a_restart: udhcpc is not installed (scripts/test installs it)"
        );
        return;
    }
    let mut d = Daemon::start();
    let (a, vm) = (Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.53.0.0/24", "dh"]);
    // An endpoint that asks: its interface comes up bare, and DHCP gives it the reserved address.
    d.ctl_ok(&["network", "connect", "--dhcp", "dh", &a.name]);
    assert!(!a.exec_ok(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).contains("inet "), "configured although --dhcp");
    let script = udhcpc_script(&d);
    let out = a.exec_ok(&["udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-s", &script]);
    assert!(out.contains("leased 10.53.0.2"), "{out}");
    assert!(a.exec_ok(&["ip", "route"]).contains("default via 10.53.0.1"));
    assert!(a.ping("10.53.0.1", 1));
    // A VM-like client behind a veth the daemon knows nothing about: the next free address.
    let v = Veth::new(&vm, "eth0");
    d.ctl_ok(&["network", "connect", "--veth", &v.host, "--mac", "02:00:00:00:53:01", "dh"]);
    vm.exec_ok(&["ip", "link", "set", "eth0", "address", "02:00:00:00:53:99", "up"]);
    let out = vm.exec_ok(&["udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-s", &script]);
    let leased = out.lines().find_map(|l| l.strip_prefix("leased ")).expect("a lease").to_string();
    assert!(
        leased.starts_with("10.53.0.") && leased != "10.53.0.2" && leased != "10.53.0.3",
        "{leased} (10.53.0.3 is the veth endpoint's)"
    );
    assert!(vm.ping("10.53.0.2", 1), "the DHCP hosts reach each other");
    // The lease is on disk: after a crash and restart it is still there and the client renews it.
    d.restart();
    let v2 = d.ctl_json(&["network", "inspect", "dh"]);
    let leases = v2[0]["VSwitch"]["Leases"].as_array().unwrap().clone();
    assert!(leases.iter().any(|l| l["Address"] == leased.as_str() && l["MAC"] == "02:00:00:00:53:99"), "{leases:?}");
    let out = vm.exec_ok(&["udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-r", &leased, "-s", &script]);
    assert!(out.contains(&format!("leased {leased}")), "renewal after restart: {out}");
    // IPAM does not hand a leased address to a new endpoint.
    let b = Netns::new();
    let ep = d.ctl_json(&["network", "connect", "dh", &b.name]);
    assert_ne!(ep["IPv4Address"].as_str().unwrap().split('/').next().unwrap(), leased);
}

#[test]
fn routing_between_networks_follows_policy() {
    if !root_or_skip("routing_between_networks_follows_policy") {
        return;
    }
    let d = Daemon::start();
    let (a, b, c, ab) = (Netns::new(), Netns::new(), Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.60.0.0/24", "left"]);
    d.ctl_ok(&["network", "create", "--subnet", "10.61.0.0/24", "-o", "route-to=left", "right"]);
    d.ctl_ok(&["network", "create", "--subnet", "10.62.0.0/24", "iso"]);
    d.ctl_ok(&["network", "create", "--subnet", "10.63.0.0/24", "--internal", "-o", "route-to=", "inner"]);
    d.ctl_ok(&["network", "connect", "left", &a.name]);
    d.ctl_ok(&["network", "connect", "right", &b.name]);
    d.ctl_ok(&["network", "connect", "iso", &c.name]);
    d.ctl_ok(&["network", "connect", "inner", &ab.name]);
    // The isolation matrix: left <-> right are routed, everything else is refused.
    assert!(a.ping("10.61.0.2", 2), "left -> right");
    assert!(b.ping("10.60.0.2", 1), "right -> left");
    for (from, to) in [(&a, "10.62.0.2"), (&c, "10.60.0.2"), (&b, "10.62.0.2"), (&a, "10.63.0.2"), (&ab, "10.60.0.1")] {
        assert!(!from.ping(to, 1), "{} reached {to}", from.name);
    }
    let st = d.port_stats(&a.name);
    assert!(st["Routed"].as_u64().unwrap() >= 2, "frames a sent across the router: {st}");
    assert!(st["Drops"]["routed_drop"].as_u64().unwrap() >= 1, "the refused ones: {st}");
    // TCP across the router.
    let server = b.spawn(&["nc", "-l", "-p", "7001"]);
    assert!(eventually(5, || b.exec_ok(&["ss", "-ltnH"]).contains(":7001")));
    let o = a.exec(&["sh", "-c", "echo routed-hello | nc -q1 -w3 10.61.0.2 7001"]);
    assert!(o.status.success());
    let got = server.wait();
    assert!(String::from_utf8_lossy(&got.stdout).contains("routed-hello"));
    // Policy is the route-to option, both ways; the route table says who may reach what.
    let routes = d.ctl_ok(&["route", "ls"]);
    assert!(routes.lines().any(|l| l.starts_with("10.61.0.0/24") && l.contains("left")), "{routes}");
    assert!(routes.lines().any(|l| l.starts_with("10.62.0.0/24") && l.trim_end().ends_with('-')), "{routes}");
    // inspect shows the routes into a network and who it routes with.
    let v = d.ctl_json(&["network", "inspect", "right"]);
    assert_eq!(v[0]["VSwitch"]["RoutesWith"], serde_json::json!(["left"]));
    assert_eq!(v[0]["VSwitch"]["Routes"][0]["Destination"], "10.61.0.0/24");
    assert_eq!(d.ctl_json(&["network", "inspect", "left"])[0]["VSwitch"]["RoutesWith"], serde_json::json!(["right"]));
    // The stats table prints (it once panicked on a column count).
    assert!(d.ctl_ok(&["stats"]).contains("NOT-READ"));
}

#[test]
fn ttl_expiry_and_the_gateway_hop() {
    if !root_or_skip("ttl_expiry_and_the_gateway_hop") {
        return;
    }
    let d = Daemon::start();
    let (a, b) = (Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.64.0.0/24", "t1"]);
    d.ctl_ok(&["network", "create", "--subnet", "10.65.0.0/24", "-o", "route-to=t1", "t2"]);
    d.ctl_ok(&["network", "connect", "t1", &a.name]);
    d.ctl_ok(&["network", "connect", "t2", &b.name]);
    assert!(a.ping_eventually("10.65.0.2", 5));
    let o = a.exec(&["ping", "-c", "1", "-W", "2", "-t", "1", "10.65.0.2"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("From 10.64.0.1") && out.contains("Time to live exceeded"), "{out}");
    if !run("sh", &["-c", "command -v tracepath"]).stdout.is_empty() {
        let t = a.exec_ok(&["tracepath", "-n", "-m", "4", "10.65.0.2"]);
        assert!(t.contains("10.64.0.1") && t.contains("10.65.0.2"), "the gateway is a hop: {t}");
    }
}

#[test]
fn path_mtu_discovery_across_a_smaller_network() {
    if !root_or_skip("path_mtu_discovery_across_a_smaller_network") {
        return;
    }
    let d = Daemon::start();
    let (a, b) = (Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.66.0.0/24", "big"]);
    d.ctl_ok(&["network", "create", "--subnet", "10.67.0.0/24", "--mtu", "1400", "-o", "route-to=big", "small"]);
    d.ctl_ok(&["network", "connect", "big", &a.name]);
    d.ctl_ok(&["network", "connect", "small", &b.name]);
    assert!(a.ping_eventually("10.67.0.2", 5));
    // 1500-byte packets with DF set into a 1400-MTU network: fragmentation needed, MTU 1400.
    let o = a.exec(&["ping", "-c", "2", "-W", "2", "-M", "do", "-s", "1472", "10.67.0.2"]);
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("mtu = 1400") || out.contains("mtu=1400"), "{out}");
    // TCP finds the path MTU and completes: 2 MB through the router.
    let server = b.spawn(&["sh", "-c", "nc -l -p 7002 | wc -c"]);
    assert!(eventually(5, || b.exec_ok(&["ss", "-ltnH"]).contains(":7002")));
    let o = a.exec(&["sh", "-c", "head -c 2000000 /dev/zero | nc -q1 -w5 10.67.0.2 7002"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = server.wait();
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "2000000");
}

#[test]
fn user_routes_through_a_router_container() {
    if !root_or_skip("user_routes_through_a_router_container") {
        return;
    }
    let d = Daemon::start();
    let (a, r) = (Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.68.0.0/24", "edge"]);
    d.ctl_ok(&["network", "connect", "edge", &a.name]);
    d.ctl_ok(&["network", "connect", "--ip", "10.68.0.254", "edge", &r.name]);
    // r stands for a router to 192.168.77.0/24 (it owns 192.168.77.1).
    r.exec_ok(&["ip", "addr", "add", "192.168.77.1/32", "dev", "lo"]);
    d.ctl_ok(&["route", "add", "192.168.77.0/24", "via", "10.68.0.254"]);
    assert!(d
        .ctl_ok(&["route", "ls"])
        .lines()
        .any(|l| l.starts_with("192.168.77.0/24") && l.contains("10.68.0.254") && l.contains("user")));
    // a's default route points at the gateway; the gateway sends it on to r.
    assert!(a.ping_eventually("192.168.77.1", 5), "routed through the user route");
    let neigh = d.ctl_ok(&["neigh", "show", "edge"]);
    assert!(neigh.contains("10.68.0.254"), "{neigh}");
    // Bad routes are refused and change nothing.
    assert!(!d.ctl(&["route", "add", "192.168.78.0/24", "via", "10.99.0.1"]).status.success(), "next hop on no network");
    assert!(!d.ctl(&["route", "add", "192.168.77.0/24", "via", "10.68.0.254"]).status.success(), "duplicate");
    assert!(!d.ctl(&["route", "add", "not-a-prefix", "via", "10.68.0.254"]).status.success());
    d.ctl_ok(&["route", "rm", "192.168.77.0/24"]);
    assert!(!a.ping("192.168.77.1", 1));
    assert!(!d.ctl(&["route", "rm", "192.168.77.0/24"]).status.success(), "already gone");
}
