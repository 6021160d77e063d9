//! End-to-end control plane: default networks, Docker's rules for create/rm/prune, name and
//! ID-prefix lookup, API error shapes, and CLI error messages.

use vswitch_tests::*;

#[test]
fn default_networks_and_lifecycle_rules() {
    if !root_or_skip("default_networks_and_lifecycle_rules") {
        return;
    }
    let d = Daemon::start();
    let ls = d.ctl_ok(&["network", "ls"]);
    for n in ["bridge", "host", "none"] {
        assert!(ls.contains(n), "{ls}");
    }
    let bridge = d.ctl_json(&["network", "inspect", "bridge"]);
    assert_eq!(bridge[0]["IPAM"]["Config"][0]["Subnet"], "172.17.0.0/16");
    assert_eq!(bridge[0]["IPAM"]["Config"][0]["Gateway"], "172.17.0.1");
    assert_eq!(bridge[0]["Id"].as_str().unwrap().len(), 64);
    // Pools: the next network without --subnet gets 172.18.0.0/16, like Docker.
    let id = d.ctl_ok(&["network", "create", "auto1"]).trim().to_string();
    assert_eq!(id.len(), 64);
    let auto = d.ctl_json(&["network", "inspect", &id[..8]]);
    assert_eq!(auto[0]["Name"], "auto1", "unique ID prefix names the network");
    assert_eq!(auto[0]["IPAM"]["Config"][0]["Subnet"], "172.18.0.0/16");
    // Duplicate names and overlapping subnets are refused.
    let o = d.ctl(&["network", "create", "auto1"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    let o = d.ctl(&["network", "create", "--subnet", "172.18.5.0/24", "ovl"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("overlaps"), "{:?}", o);
    // Predefined networks stay; networks with endpoints stay; prune removes unused ones.
    let o = d.ctl(&["network", "rm", "bridge"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("pre-defined network and cannot be removed"));
    let a = Netns::new();
    d.ctl_ok(&["network", "create", "--subnet", "10.40.0.0/24", "busy"]);
    d.ctl_ok(&["network", "create", "--subnet", "10.41.0.0/24", "idle"]);
    d.ctl_ok(&["network", "create", "--subnet", "10.45.0.0/24", "idle2"]);
    d.ctl_ok(&["network", "connect", "--name", "web", "busy", &a.name]);
    let o = d.ctl(&["network", "rm", "busy"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("has active endpoints"));
    let o = d.ctl(&["network", "rm", "busy", "no-such-net", "idle2"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("2 of 3 networks not removed"), "{}", String::from_utf8_lossy(&o.stderr));
    let pruned = d.ctl_ok(&["network", "prune", "-f"]);
    assert!(pruned.contains("auto1") && pruned.contains("idle") && !pruned.contains("busy"), "{pruned}");
    let ls = d.ctl_ok(&["network", "ls"]);
    assert!(ls.contains("busy") && !ls.contains("idle"));
    // The container name is used in Containers.
    let v = d.ctl_json(&["network", "inspect", "busy"]);
    let c = v[0]["Containers"].as_object().unwrap().values().next().unwrap().clone();
    assert_eq!(c["Name"], "web");
    d.ctl_ok(&["network", "disconnect", "busy", "web"]);
    d.ctl_ok(&["network", "rm", "busy"]);
    // host and none cannot take endpoints.
    let o = d.ctl(&["network", "connect", "host", &a.name]);
    assert!(!o.status.success());
}

#[test]
fn api_refuses_malformed_requests_and_changes_nothing() {
    if !root_or_skip("api_refuses_malformed_requests_and_changes_nothing") {
        return;
    }
    let d = Daemon::start();
    let before = d.ctl_ok(&["network", "ls", "-q"]);
    let post = |path: &str, body: &str| {
        http_raw(
            &d.socket,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    for (body, status) in [
        ("{not json", 400),
        ("[]", 400),
        (r#"{"Name": 5}"#, 400),
        (r#"{"Name":"x","IPAM":{"Config":[{"Subnet":"10.0.0.0/33"}]}}"#, 400),
        (r#"{"Name":"x","IPAM":{"Config":[{"Subnet":"10.0.0.0/24","Gateway":"10.9.9.9"}]}}"#, 400),
        (r#"{"Name":"x","Options":{"com.docker.network.driver.mtu":"huge"}}"#, 400),
        (r#"{"Name":"bad name!"}"#, 400),
    ] {
        let (s, b) = post("/networks/create", body);
        assert_eq!(s, status, "{body} -> {s} {b}");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap_or_else(|_| panic!("error body is not JSON: {b}"));
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{b}");
    }
    let (s, _) = post("/networks/nosuch/connect", r#"{"Container":"x"}"#);
    assert_eq!(s, 404);
    let (s, b) = post("/networks/bridge/connect", r#"{"Container":"no-such-namespace-here"}"#);
    assert_eq!(s, 404, "{b}");
    let (s, _) = http_raw(&d.socket, "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(s, 404);
    // Docker's clients send fields we have no use for, and a version prefix: both are fine.
    let (s, b) = post("/v1.47/networks/create", r#"{"Name":"dockerish","CheckDuplicate":true,"Scope":"local","EnableIPv4":true}"#);
    assert_eq!(s, 201, "{b}");
    let (s, _) = http_raw(&d.socket, "DELETE /v1.47/networks/dockerish HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(s, 204);
    // Garbage that is not HTTP at all: the daemon survives it.
    let _ = http_raw(&d.socket, "\x00\x01\x02 garbage\r\n\r\n");
    assert_eq!(d.ctl_ok(&["network", "ls", "-q"]), before, "nothing changed");
}

#[test]
fn cli_errors_name_the_problem() {
    if !root_or_skip("cli_errors_name_the_problem") {
        return;
    }
    let d = Daemon::start();
    let err = |args: &[&str]| {
        let o = d.ctl(args);
        assert!(!o.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(err(&["network", "create", "--subnet", "notacidr", "x"]).contains("invalid subnet \"notacidr\""));
    assert!(err(&["network", "create", "-o", "novalue", "x"]).contains("is not KEY=VALUE"));
    assert!(err(&["network", "connect"]).contains("required"));
    assert!(err(&["network", "connect", "bridge", "no-such-ns-xyz"]).contains("not found"));
    assert!(err(&["network", "inspect", "nosuch"]).contains("network nosuch not found"));
    assert!(err(&["network", "connect", "--mac", "zz", "bridge", "x"]).contains("invalid MAC address"));
    assert!(err(&["frobnicate"]).contains("unrecognized subcommand"));
    // With no daemon behind the socket, say so and say how to start one.
    let o = run(bin_dir().join("vswitchctl").to_str().unwrap(), &["--socket", "/nonexistent/vs.sock", "network", "ls"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("cannot reach vswitchd") && e.contains("vswitchd --socket"), "{e}");
}

#[test]
fn a_second_daemon_on_the_same_socket_is_refused() {
    if !root_or_skip("a_second_daemon_on_the_same_socket_is_refused") {
        return;
    }
    let d = Daemon::start();
    let o = run(
        bin_dir().join("vswitchd").to_str().unwrap(),
        &["--socket", d.socket.to_str().unwrap(), "--state-dir", d.dir.join("other").to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already serving"));
    // Another socket but the same state directory: refused before it touches any device.
    let other = d.dir.join("other.sock");
    let o = run(
        bin_dir().join("vswitchd").to_str().unwrap(),
        &["--socket", other.to_str().unwrap(), "--state-dir", d.dir.join("state").to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("in use by another vswitchd"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(d.ctl(&["network", "ls"]).status.success(), "the first daemon is unharmed");
}
