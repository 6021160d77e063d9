//! Rootless: an ordinary user, created by the test, runs vswitchd inside a user namespace of its
//! own, with no privilege beyond it; its containers reach the host's loopback through the
//! slirp engine and serve through a published port.

use vswitch_tests::*;

const SCRIPT: &str = r#"
set -eu
T=$1; HOSTPORT=$2; PUBPORT=$3
ctl() { "$T/vswitchctl" --socket "$T/s.sock" "$@"; }
# A private /var/run/netns, so the user's namespaces have names and nothing leaks to the host.
mount -t tmpfs tmpfs /var/run/netns
"$T/vswitchd" --socket "$T/s.sock" --state-dir "$T/state" --workers 1 --no-pin --resolv-conf /dev/null > "$T/d.log" 2>&1 &
D=$!
trap 'kill $D 2>/dev/null; wait $D 2>/dev/null || true' EXIT
for i in $(seq 100); do ctl network ls -q >/dev/null 2>&1 && break; sleep 0.1; done
ip netns add c1 2>/dev/null || true
ip netns exec c1 ip link set lo up
ctl network create --subnet 10.79.0.0/24 -o host-loopback=true rl >/dev/null
ctl network connect -p "$PUBPORT:8000" rl c1 >/dev/null
echo "uid=$(id -u) caps=$(grep CapEff /proc/$D/status | cut -f2)"
echo "out=$(ip netns exec c1 curl -sS --max-time 5 http://10.79.0.1:$HOSTPORT/)"
ip netns exec c1 socat TCP-LISTEN:8000,reuseaddr SYSTEM:'echo inside' &
S=$!
for i in $(seq 50); do ip netns exec c1 ss -ltn | grep -q ':8000 ' && break; sleep 0.1; done
echo "in=$(socat -T3 - TCP:127.0.0.1:$PUBPORT)"
kill $S 2>/dev/null || true
"#;

#[test]
fn an_ordinary_user_runs_vswitchd_in_a_user_namespace() {
    if !root_or_skip("an_ordinary_user_runs_vswitchd_in_a_user_namespace") {
        return;
    }
    if run("unshare", &["--user", "--map-root-user", "true"]).status.code() != Some(0) {
        eprintln!("SKIPPED an_ordinary_user_runs_vswitchd_in_a_user_namespace: unprivileged user namespaces are disabled here");
        return;
    }
    let user = TestUser::create();
    let stage = Stage::new(&user, &[("vswitchd", "vswitchd"), ("vswitchctl", "vswitchctl")]);
    std::fs::write(stage.0.join("run.sh"), SCRIPT).unwrap();
    // The host's service, on its loopback only.
    let host_port = http_service("127.0.0.1:0", "host");
    let pub_port = free_port();
    let (stdout, why) = user.run_script(
        &stage,
        &["unshare", "--user", "--map-root-user", "--mount"],
        &[&host_port.to_string(), &pub_port.to_string()],
        "d.log",
    );
    eprintln!("{stdout}");
    let uid_line = stdout.lines().find(|l| l.starts_with("uid=")).unwrap_or_else(|| panic!("{why}"));
    // Root inside its user namespace (uid 0 there), an ordinary user outside it.
    assert!(uid_line.starts_with("uid=0 "), "{why}");
    assert!(stdout.contains("out=host"), "a container reaches the host's loopback: {why}");
    assert!(stdout.contains("in=inside"), "the host reaches a container through a published port: {why}");
}
