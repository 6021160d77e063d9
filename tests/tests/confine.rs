//! End-to-end confinement: vswitchd with --sandbox --seccomp still serves namespaces, and /proc
//! shows it confined: capabilities cut, seccomp in filter mode, no_new_privs, no host root.

use std::path::Path;

use vswitch_tests::*;

/// A field of a /proc status file, trimmed.
fn field(status: &str, name: &str) -> String {
    status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_else(|| panic!("no {name} in {status}"))
}

fn caps(status: &str, name: &str) -> u64 {
    u64::from_str_radix(&field(status, name), 16).expect("a capability mask")
}

/// What --sandbox keeps where held: DAC_OVERRIDE, NET_BIND_SERVICE, NET_ADMIN, NET_RAW, SYS_ADMIN.
const KEPT: u64 = 1 << 1 | 1 << 10 | 1 << 12 | 1 << 13 | 1 << 21;

#[test]
fn a_confined_daemon_serves_namespaces_and_holds_only_what_it_needs() {
    if !root_or_skip("a_confined_daemon_serves_namespaces_and_holds_only_what_it_needs") {
        return;
    }
    let mut d = Daemon::start_with(&["--sandbox", "--seccomp", "--splice-loopback"]);
    // Created after the daemon entered its sandbox: `ip netns add` mounts must still reach it.
    let (a, b) = (Netns::new(), Netns::new());
    d.ctl_ok(&["network", "create", "--subnet", "10.61.0.0/24", "conf"]);
    d.ctl_ok(&["network", "connect", "conf", &a.name]);
    d.ctl_ok(&["network", "connect", "conf", &b.name]);
    let (ip_a, ip_b) = (d.ip_of("conf", &a.name), d.ip_of("conf", &b.name));
    assert!(a.ping("10.61.0.1", 2), "a -> gateway");
    assert!(a.ping(&ip_b, 2), "a -> b");
    assert!(b.ping(&ip_a, 1), "b -> a");
    // The namespaces' resolv.conf went through the writable /etc/netns to the host's.
    assert!(eventually(3, || Path::new("/etc/netns").join(&a.name).join("resolv.conf").exists()), "no /etc/netns/{}/resolv.conf", a.name);
    // A published port's client on the host's loopback is spliced into the namespace: pipes,
    // splice and the child that makes sockets there pass the filter.
    let c = Netns::new();
    let p = free_port();
    d.ctl_ok(&["network", "connect", "-p", &format!("{p}:80"), "conf", &c.name]);
    let _srv = c.spawn(&["socat", "TCP-LISTEN:80,fork,reuseaddr", "SYSTEM:echo spliced"]);
    assert!(eventually(5, || c.exec_ok(&["ss", "-ltn"]).contains(":80 ")));
    let got = run("socat", &["-T3", "-", &format!("TCP:127.0.0.1:{p},connect-timeout=3")]);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "spliced");
    let nat = d.ctl_json(&["stats"])["Nat"].clone();
    assert!(nat["PublishedSpliced"].as_u64() >= Some(1) && nat["PublishedSpliceFallback"] == 0, "{nat}");

    let pid = d.pid();
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let want = KEPT & caps(&own, "CapPrm:");
    // Every thread: the ones started after confinement inherit it, none started before.
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten().collect();
    assert!(tasks.len() > 2, "the daemon runs its workers");
    for t in tasks {
        let st = std::fs::read_to_string(t.path().join("status")).unwrap();
        for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
            assert_eq!(caps(&st, set), want, "{set} of task {:?}", t.file_name());
        }
        assert_eq!(caps(&st, "CapInh:"), 0);
        assert_eq!(caps(&st, "CapAmb:"), 0);
        assert_eq!(field(&st, "Seccomp:"), "2", "seccomp filter mode");
        assert_eq!(field(&st, "NoNewPrivs:"), "1");
    }

    // Its root is a read-only tmpfs of its own holding the kept paths, not the host's.
    assert_ne!(std::fs::read_link("/proc/self/ns/mnt").unwrap(), std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap());
    let root = Path::new("/proc").join(pid.to_string()).join("root");
    for gone in ["usr", "home", "bin", "var/lib", "root"] {
        assert!(!root.join(gone).exists(), "the daemon sees /{gone}");
    }
    for kept in ["etc/netns", "proc/self", "dev/net/tun", "var/run/netns"] {
        assert!(root.join(kept).exists(), "the daemon lacks /{kept}");
    }
    assert!(root.join(d.dir.strip_prefix("/").unwrap()).join("state").is_dir(), "no state directory");
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let top = mountinfo.lines().find(|l| l.split_whitespace().nth(4) == Some("/")).expect("a root mount");
    assert!(top.contains(" - tmpfs ") && top.split_whitespace().nth(5).unwrap().starts_with("ro"), "{top}");

    // The state directory stayed writable: a restart finds the endpoints and traffic resumes.
    d.restart();
    let v = d.ctl_json(&["network", "inspect", "conf"]);
    assert_eq!(v[0]["Containers"].as_object().unwrap().len(), 3, "{v}");
    assert!(a.ping_eventually(&ip_b, 5), "a -> b after a restart");
}
