//! End-to-end embedded DNS: dig and ping from real namespaces against the gateway, a real
//! dnsmasq as the upstream on loopback, and the namespace's resolv.conf.

use std::time::Instant;

use vswitch_tests::*;

fn short(ns: &Netns, args: &[&str]) -> Vec<String> {
    let mut a = vec!["+short"];
    a.extend_from_slice(args);
    dig(ns, &a).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

fn status(out: &str) -> &str {
    out.split("status: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("no answer")
}

#[test]
fn containers_find_each_other_by_name_alias_and_address() {
    if !root_or_skip("containers_find_each_other_by_name_alias_and_address") {
        return;
    }
    let d = Daemon::start();
    let (web, redis, redis2) = (Netns::new(), Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.61.0.0/24", "app"]);
    // Connected in any order; redis and redis2 share the alias "cache".
    d.ctl_ok(&["network", "connect", "--name", "redis", "--alias", "cache", "app", &redis.name]);
    d.ctl_ok(&["network", "connect", "--name", "web", "app", &web.name]);
    d.ctl_ok(&["network", "connect", "--name", "redis2", "--alias", "cache", "app", &redis2.name]);
    let (ip_redis, ip_redis2) = (d.ip_of("app", "redis"), d.ip_of("app", "redis2"));
    let gw = "@10.61.0.1";
    assert_eq!(short(&web, &[gw, "redis"]), vec![ip_redis.clone()]);
    assert_eq!(short(&web, &[gw, "ReDiS"]), vec![ip_redis.clone()], "names are case-insensitive");
    assert_eq!(short(&web, &[gw, "redis.app"]), vec![ip_redis.clone()], "NAME.NETWORK");
    let mut firsts = std::collections::HashSet::new();
    for _ in 0..4 {
        let mut got = short(&web, &[gw, "cache"]);
        firsts.insert(got[0].clone());
        got.sort();
        let mut want = vec![ip_redis.clone(), ip_redis2.clone()];
        want.sort();
        assert_eq!(got, want, "every address of the alias");
    }
    assert_eq!(firsts.len(), 2, "the order rotates between answers");
    let full = dig(&web, &[gw, "ReDiS"]);
    let words = full.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.contains(&format!("ANSWER SECTION: ReDiS. 0 IN A {ip_redis}")), "the question's case is echoed: {full}");
    assert!(full.contains("flags: qr aa rd ra"), "{full}");
    assert_eq!(short(&web, &[gw, "-x", &ip_redis]), vec!["redis.app.".to_string()], "PTR");
    assert_eq!(short(&web, &[gw, "+tcp", "redis"]), vec![ip_redis.clone()], "over TCP");
    assert_eq!(status(&dig(&web, &[gw, "redis", "AAAA"])), "NOERROR", "a local name without IPv6 is NODATA, not forwarded");
    // The namespace's resolver points at the gateway, with the network as search domain, so
    // ordinary programs find names with no /etc/hosts.
    let conf = std::fs::read_to_string(format!("/etc/netns/{}/resolv.conf", web.name)).expect("resolv.conf written");
    assert!(conf.contains("nameserver 10.61.0.1\nsearch app\n"), "{conf}");
    assert_eq!(short(&web, &["redis"]), vec![ip_redis.clone()], "through resolv.conf");
    assert!(web.exec(&["ping", "-c1", "-W2", "redis"]).status.success(), "ping by name");
    let v = d.ctl_json(&["network", "inspect", "app"]);
    assert_eq!(v[0]["VSwitch"]["DNS"]["Servers"][0], "10.61.0.1", "{v}");
    assert!(v[0]["VSwitch"]["DNS"]["Queries"].as_u64().unwrap() >= 10);
    assert!(d.ctl_json(&["stats"])["Dns"]["Local"].as_u64().unwrap() >= 10);
    // Gone the moment it disconnects, and its resolv.conf with it when it leaves the last network.
    d.ctl_ok(&["network", "disconnect", "app", &redis2.name]);
    assert_eq!(short(&web, &[gw, "cache"]), vec![ip_redis.clone()]);
    assert!(!std::path::Path::new(&format!("/etc/netns/{}/resolv.conf", redis2.name)).exists());
    assert!(short(&web, &[gw, "redis2"]).is_empty());
}

#[test]
fn dual_stack_names_answer_aaaa_and_ipv6_reverse() {
    if !root_or_skip("dual_stack_names_answer_aaaa_and_ipv6_reverse") {
        return;
    }
    let d = Daemon::start();
    let (a, b) = (Netns::with_ipv6(), Netns::with_ipv6());
    d.ctl_ok(&["network", "create", "--subnet", "10.62.0.0/24", "--ipv6", "--subnet", "fd62::/64", "six"]);
    d.ctl_ok(&["network", "connect", "--name", "alpha", "six", &a.name]);
    d.ctl_ok(&["network", "connect", "--name", "beta", "six", &b.name]);
    assert!(a.ping_eventually("fd62::1", 5));
    assert_eq!(short(&a, &["@fd62::1", "beta", "AAAA"]), vec!["fd62::3".to_string()], "AAAA over IPv6 transport");
    assert_eq!(short(&a, &["@10.62.0.1", "beta", "A"]), vec!["10.62.0.3".to_string()]);
    assert_eq!(short(&a, &["@fd62::1", "-x", "fd62::3"]), vec!["beta.six.".to_string()], "ip6.arpa PTR");
    assert_eq!(short(&a, &["@fd62::1", "+tcp", "beta", "AAAA"]), vec!["fd62::3".to_string()], "TCP over IPv6");
}

#[test]
fn names_are_scoped_to_the_networks_a_querier_is_on() {
    if !root_or_skip("names_are_scoped_to_the_networks_a_querier_is_on") {
        return;
    }
    let d = Daemon::start();
    let (x, y, z) = (Netns::new(), Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.63.1.0/24", "blue"]);
    d.ctl_ok(&["network", "create", "--subnet", "10.63.2.0/24", "green"]);
    d.ctl_ok(&["network", "connect", "--name", "x", "blue", &x.name]);
    d.ctl_ok(&["network", "connect", "--name", "y", "green", &y.name]);
    d.ctl_ok(&["network", "connect", "--name", "z", "blue", &z.name]);
    d.ctl_ok(&["network", "connect", "--name", "z", "green", &z.name]);
    // z is on both, so it sees y; x is on blue only and sees neither y nor y.green.
    assert_eq!(short(&z, &["@10.63.1.1", "y"]), vec!["10.63.2.2".to_string()]);
    assert_eq!(short(&z, &["@10.63.1.1", "y.green"]), vec!["10.63.2.2".to_string()]);
    for q in ["y", "y.green"] {
        let out = dig(&x, &["@10.63.1.1", q]);
        assert!(!out.contains("10.63.2.2"), "{q} leaked across networks: {out}");
    }
    let out = dig(&x, &["@10.63.1.1", "-x", "10.63.2.2"]);
    assert!(!out.contains("y.green"), "PTR leaked across networks: {out}");
    // What was acknowledged survives a crash: after kill -9 the names come back with the state.
    let mut d = d;
    d.kill9();
    d.restart();
    assert!(eventually(5, || short(&z, &["@10.63.2.1", "y"]) == vec!["10.63.2.2".to_string()]), "names after a restart");
}

#[test]
fn upstream_forwarding_caches_passes_errors_and_survives_the_upstream_going_away() {
    if !root_or_skip("upstream_forwarding_caches_passes_errors_and_survives_the_upstream_going_away") {
        return;
    }
    let port = free_port();
    // Enough TXT data that the answer needs TCP from a client without EDNS (512 bytes).
    let mut records = vec!["--address=/up.test/10.9.9.9".to_string(), "--address=/nx.test/".to_string()];
    for i in 0..12 {
        records.push(format!("--txt-record=big.test,{}", format!("{i:02}").repeat(40)));
    }
    let mut up = Dnsmasq::start(port, &records);
    let d = Daemon::start();
    let ns = Netns::new();
    let server = format!("127.0.0.1:{port}");
    d.ctl_ok(&["network", "create", "--subnet", "10.64.0.0/24", "--dns", &server, "fwd"]);
    d.ctl_ok(&["network", "connect", "--name", "c", "fwd", &ns.name]);
    assert_eq!(d.ctl_json(&["network", "inspect", "fwd"])[0]["VSwitch"]["DNS"]["Upstreams"][0], server.as_str());
    let gw = "@10.64.0.1";
    assert_eq!(short(&ns, &[gw, "up.test"]), vec!["10.9.9.9".to_string()], "forwarded");
    assert_eq!(short(&ns, &[gw, "UP.test"]), vec!["10.9.9.9".to_string()], "cached, in any case");
    assert_eq!(up.queries_for("up.test"), 1, "the second query came from the cache");
    assert!(d.ctl_json(&["stats"])["Dns"]["CacheHits"].as_u64().unwrap() >= 1);
    assert_eq!(status(&dig(&ns, &[gw, "a.nx.test"])), "NXDOMAIN", "NXDOMAIN passed through");
    // Without EDNS the answer does not fit 512 bytes: truncated over UDP, and dig's retry over
    // TCP (which it does by itself on TC) gets it whole.
    let big = dig(&ns, &[gw, "+noedns", "big.test", "TXT"]);
    assert!(big.contains("Truncated, retrying in TCP mode"), "{big}");
    assert_eq!(big.lines().filter(|l| l.starts_with("big.test.") && l.contains("TXT")).count(), 12, "{big}");
    assert_eq!(short(&ns, &[gw, "+edns=0", "+bufsize=4096", "big.test", "TXT"]).len(), 12, "EDNS lets it fit UDP");
    // The upstream goes away: SERVFAIL, quickly (the port is closed, so the kernel says so).
    up.stop();
    let t = Instant::now();
    let out = dig(&ns, &[gw, "other.up.test"]);
    assert_eq!(status(&out), "SERVFAIL", "{out}");
    assert!(t.elapsed().as_secs_f64() < 1.5, "SERVFAIL took {:?}", t.elapsed());
    up.restart();
    assert_eq!(short(&ns, &[gw, "third.up.test"]), vec!["10.9.9.9".to_string()], "recovers when it returns");
}

#[test]
fn the_host_resolv_conf_is_followed_when_it_changes() {
    if !root_or_skip("the_host_resolv_conf_is_followed_when_it_changes") {
        return;
    }
    let (p1, p2) = (free_port(), free_port());
    let _one = Dnsmasq::start(p1, &["--address=/which.test/10.1.1.1".to_string()]);
    let _two = Dnsmasq::start(p2, &["--address=/which.test/10.2.2.2".to_string()]);
    let dir = std::env::temp_dir().join(unique("vsr"));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("resolv.conf");
    std::fs::write(&conf, format!("nameserver 127.0.0.1:{p1}\n")).unwrap();
    let d = Daemon::start_with(&["--resolv-conf", conf.to_str().unwrap()]);
    let ns = Netns::new();
    d.ctl_ok(&["network", "create", "--subnet", "10.65.0.0/24", "hostdns"]);
    d.ctl_ok(&["network", "connect", "hostdns", &ns.name]);
    assert_eq!(short(&ns, &["@10.65.0.1", "a.which.test"]), vec!["10.1.1.1".to_string()]);
    std::fs::write(&conf, format!("# changed\nnameserver 127.0.0.1:{p2}\n")).unwrap();
    let moved = eventually(5, || short(&ns, &["@10.65.0.1", &format!("n{}.which.test", rand_tag())]) == vec!["10.2.2.2".to_string()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(moved, "the new upstream was not used");
}

fn rand_tag() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
}

#[test]
fn dns_disable_and_malformed_queries() {
    if !root_or_skip("dns_disable_and_malformed_queries") {
        return;
    }
    let d = Daemon::start();
    let (a, b) = (Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.66.1.0/24", "--dns-disable", "quiet"]);
    d.ctl_ok(&["network", "create", "--subnet", "10.66.2.0/24", "loud"]);
    d.ctl_ok(&["network", "connect", "--name", "a", "quiet", &a.name]);
    d.ctl_ok(&["network", "connect", "--name", "b", "loud", &b.name]);
    assert_eq!(status(&dig(&a, &["@10.66.1.1", "a"])), "no answer", "no server on a --dns-disable network");
    assert!(!std::path::Path::new(&format!("/etc/netns/{}/resolv.conf", a.name)).exists());
    assert_eq!(d.ctl_json(&["network", "inspect", "quiet"])[0]["VSwitch"]["DNS"]["Enabled"], false);
    let bad = d.ctl(&["network", "create", "--dns", "dns.example", "nope"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("--dns") && err.contains("expected an IP address"), "{err}");
    let bad = d.ctl(&["network", "create", "-o", "vswitch.dns.disable=maybe", "nope"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected true or false"));
    assert!(!d.ctl_ok(&["network", "ls"]).contains("nope"), "a refused create changes nothing");
    // Garbage to port 53: a header-sized message with a broken question gets FORMERR, shorter
    // junk is dropped, and the server goes on answering.
    let formerr = b.exec(&[
        "bash",
        "-c",
        "printf '\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\xff\\xff' | socat -t2 - UDP:10.66.2.1:53 | od -An -tx1",
    ]);
    let reply = String::from_utf8_lossy(&formerr.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(reply.starts_with("12 34 81"), "a reply to the same id: {reply:?}");
    assert_eq!(reply.split(' ').nth(3).map(|b| u8::from_str_radix(b, 16).unwrap() & 0x0f), Some(1), "FORMERR: {reply}");
    for junk in ["\\x00", "\\xff\\xff\\xff", "\\x12\\x34\\x81\\x80\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00"] {
        b.exec(&["bash", "-c", &format!("printf '{junk}' | socat -t0.3 - UDP:10.66.2.1:53")]);
    }
    assert_eq!(short(&b, &["@10.66.2.1", "b"]), vec!["10.66.2.2".to_string()], "still answering");
    assert!(d.ctl_json(&["stats"])["Dns"]["Dropped"].as_u64().unwrap() >= 2);
}

#[test]
fn the_default_bridge_has_no_names_like_docker() {
    if !root_or_skip("the_default_bridge_has_no_names_like_docker") {
        return;
    }
    let d = Daemon::start();
    let a = Netns::new();
    d.ctl_ok(&["network", "connect", "--name", "a", "bridge", &a.name]);
    assert_eq!(d.ctl_json(&["network", "inspect", "bridge"])[0]["VSwitch"]["DNS"]["Enabled"], false);
    assert!(!std::path::Path::new(&format!("/etc/netns/{}/resolv.conf", a.name)).exists());
}
