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
