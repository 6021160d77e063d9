//! Open vSwitch's userspace datapath as a peer of vswitch: an OVS bridge with veth ports, run by daemons of our own.
//!
//! `ovs` is built like `bridge` (see [`crate::systems`]): namespaces `a` and `b`, each with an
//! `eth0` (10.77.0.2/24 and 10.77.0.3/24) whose veth peer (`pa`, `pb`) lives in a third
//! namespace `sw`. There the peers are ports of the OVS bridge `br0` with
//! `datapath_type=netdev`: ovs-vswitchd switches the frames itself, in userspace (the bridge's
//! default `NORMAL` action: MAC learning), and `--disable-system` keeps the kernel datapath out.
//!
//! ovsdb-server and ovs-vswitchd run in `sw`, in the foreground (each owned by a [`Proc`]), with
//! everything in this run's temporary directory: the database, its socket, the control sockets,
//! pid files and logs, all named on their command lines. OVS_RUNDIR, OVS_DBDIR, OVS_LOGDIR and
//! OVS_SYSCONFDIR point there too, for whatever a tool would otherwise look for in the system
//! instance's directories (/var/run/openvswitch, /etc/openvswitch), and every ovs-vsctl names
//! the database socket. A system instance, running or not, is never touched. Those paths on
//! the daemons' command lines are also how `vswitch-compare cleanup` recognises the daemons of
//! a killed run ([`cmd::leftover_processes`]).
//!
//! # How the ports are polled
//!
//! A veth added as a plain port (type `system`) is opened by netdev-linux with an AF_PACKET
//! socket (recvmmsg/sendmmsg in batches of 32). Its netdev class is not a PMD one, and
//! dpif-netdev starts PMD threads only for PMD ports, so there are none: the main thread of
//! ovs-vswitchd polls both ports in its poll loop, sleeping in poll() when they are idle
//! (`ovs-appctl dpif-netdev/pmd-stats-show` counts their packets under "main thread";
//! `pmd-rxq-show` lists no PMD). Forwarding is therefore single-threaded, whatever `threads`
//! says. These ports run with userspace TSO (`other_config:userspace-tso-enable=true`,
//! experimental in OVS 3.1, read at start only): netdev-linux then reads and writes a virtio-net
//! header on those sockets (PACKET_VNET_HDR), so a frame keeps its GSO size and its pending
//! checksum from one veth to the other, as with vswitch's vnet headers and the kernel bridge.
//! Without it TCP does not get through at all with default endpoints: the endpoints' veths
//! leave checksums to offload, OVS forwards them unfinished and `b` drops them (ping works).
//!
//! Ports of type `afxdp` are PMD ports: AF_XDP sockets busy-polled by PMD threads, one per core
//! of `other_config:pmd-cpu-mask` (here `threads` cores). They forward no GSO frames (attaching
//! XDP to a veth turns its peer's GSO off, and OVS 3.1 has no TSO for AF_XDP), need the
//! endpoints' transmit checksum offload off (`ethtool -K eth0 tx off`: XDP sees the frame as it
//! is, unfinished checksum included), and cap the MTU at 3506 (`AFXDP_MAX_MTU`).
//!
//! Measured with `vswitch-compare -t 3 --udp-time 3` on the 2-vCPU VM this was written on
//! (kernel 6.18, OVS 3.1.0, nothing else running), at MTU 1500: `system` ports with userspace
//! TSO 9.6–11.5 Gbit/s of TCP (with some 200 000 retransmits: the AF_PACKET receive socket
//! overflows), 97–99 kpps of 64-byte UDP received, round trips p50 111–114 µs; `afxdp` ports
//! (one or two PMD threads) 2.6–2.8 Gbit/s, 117–131 kpps, 20–35 µs. At MTU 65520, `system`
//! with TSO 7.1 Gbit/s; AF_XDP cannot take that MTU. By hand with iperf3 at 1500: `system`
//! without TSO (endpoints' tx checksum off) 0.7 Gbit/s, `afxdp-nonpmd` (AF_XDP polled by the
//! main thread) 1.2. AF_XDP wins the packet rate and the round trips (busy polling: no
//! wakeups), but it loses TCP by a factor of four, cannot carry the large MTU, changes the
//! endpoints, and with no traffic at all it kept both vCPUs busy (the PMD thread polling, and
//! ovs-vswitchd's main thread spinning alongside). So `system` ports with userspace TSO are the
//! default; `VSWITCH_BENCH_OVS_PORTS=afxdp` picks AF_XDP, to measure it on another machine.
//!
//! The MTU is set on both veth ends and requested from OVS (`mtu_request`) on its ports; OVS's
//! netdev datapath on `system` ports sizes its receive buffers from the port's MTU and passes
//! frames of 65520 bytes. Before returning, a ping from `a` to `b` and one of the full MTU with
//! DF set must get through, so a setup that cannot carry what the workloads send fails here.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cmd::{self, Proc, TempDir};
use crate::netns::Netns;
use crate::systems::{self, path_str};
use crate::workloads::Pair;
use crate::{err, Error, Result};

/// The OVS bridge in `sw`; its ports are the `sw` ends of the veths to `a` and `b`
/// ([`systems::VETH_PORTS`]), addressed like `bridge`'s endpoints.
const BRIDGE: &str = "br0";
/// The environment variable that picks the OVS port type: `system` (the default) or `afxdp`.
const PORTS_ENV: &str = "VSWITCH_BENCH_OVS_PORTS";
/// The largest MTU of an `afxdp` port on a veth: a veth takes a native XDP program only up to
/// this MTU (the kernel's limit with 4 KiB pages); OVS 3.1's own AF_XDP frames would hold 3694.
const AFXDP_MAX_MTU: u32 = 3506;
/// How long each daemon may take to answer after it started, and the ports to come up.
const START_LIMIT: Duration = Duration::from_secs(15);
/// How long a daemon may take to exit after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(5);
/// Lines of ovs-vswitchd's log in an error.
const LOG_LINES: usize = 20;

/// The type of the OVS ports (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ports {
    /// AF_PACKET, non-PMD, polled by the main thread; userspace TSO on.
    System,
    /// AF_XDP, PMD, busy-polled by `threads` PMD threads.
    Afxdp,
}

impl Ports {
    /// The type [`PORTS_ENV`] asks for, `system` if none.
    fn from_env() -> Result<Self> {
        match std::env::var(PORTS_ENV) {
            Err(std::env::VarError::NotPresent) => Ok(Ports::System),
            Ok(v) if v.is_empty() || v == "system" => Ok(Ports::System),
            Ok(v) if v == "afxdp" => Ok(Ports::Afxdp),
            Ok(v) => Err(err(format!("{PORTS_ENV}={v}: the OVS port type must be `system` or `afxdp`"))),
            Err(e) => Err(err(format!("{PORTS_ENV}: {e}"))),
        }
    }

    /// The interface type in OVS's database.
    fn ovs_type(self) -> &'static str {
        match self {
            Ports::System => "system",
            Ports::Afxdp => "afxdp",
        }
    }
}

/// Where the OVS programs are installed.
#[derive(Debug)]
struct Programs {
    tool: PathBuf,
    ovsdb_server: PathBuf,
    vswitchd: PathBuf,
    vsctl: PathBuf,
    appctl: PathBuf,
}

impl Programs {
    /// Finds them in `PATH`, or says what to install.
    fn find() -> Result<Self> {
        let find = |name: &str| {
            cmd::which(name).ok_or_else(|| {
                err(format!(
                    "{name} not found in PATH: install Open vSwitch (Debian: `apt-get install openvswitch-switch`; its \
                     system service is not needed: this runs an instance of its own)"
                ))
            })
        };
        Ok(Self {
            tool: find("ovsdb-tool")?,
            ovsdb_server: find("ovsdb-server")?,
            vswitchd: find("ovs-vswitchd")?,
            vsctl: find("ovs-vsctl")?,
            appctl: find("ovs-appctl")?,
        })
    }
}

/// Where ovs-vsctl and ovs-appctl are, and the files of one run.
#[derive(Debug)]
struct Files {
    vsctl: PathBuf,
    appctl: PathBuf,
    /// The run directory: OVS_RUNDIR, OVS_DBDIR, OVS_LOGDIR and OVS_SYSCONFDIR.
    dir: PathBuf,
    /// `unix:<dir>/db.sock`, ovsdb-server's socket, for ovs-vswitchd and ovs-vsctl.
    db_remote: String,
    db_sock: PathBuf,
    vswitchd_ctl: PathBuf,
    vswitchd_log: PathBuf,
    /// ovs-vswitchd's stdout and stderr (errors only: `-vconsole:err`; a crash's last words).
    vswitchd_out: PathBuf,
    ovsdb_log: PathBuf,
}

impl Files {
    /// `cmd` with the OVS environment pointing at the run directory.
    fn env(&self, mut cmd: Command) -> Command {
        for var in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
            cmd.env(var, &self.dir);
        }
        cmd
    }

    /// Runs `ovs-vsctl --db=unix:… args…` (within `limit`); its stdout.
    fn vsctl(&self, args: &[&str], limit: Duration) -> Result<String> {
        let mut c = Command::new(&self.vsctl);
        c.arg(format!("--db={}", self.db_remote)).args(args);
        cmd::checked(self.env(c), limit)
    }

    /// Runs `ovs-appctl -t <ovs-vswitchd's control socket> args…`; its stdout.
    fn appctl(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new(&self.appctl);
        c.arg("--timeout=5").arg("-t").arg(&self.vswitchd_ctl).args(args);
        cmd::checked(self.env(c), Duration::from_secs(10))
    }
}

/// ovsdb-server and ovs-vswitchd, running in `sw` with their files in a run directory of ours.
#[derive(Debug)]
pub struct Ovs {
    // Field order is drop order: ovs-vswitchd stops first (ovsdb-server's client, and the
    // process that holds the ports), then ovsdb-server, then their directory goes.
    vswitchd: Proc,
    ovsdb: Proc,
    files: Files,
    dir: TempDir,
}

impl Ovs {
    /// ovs-vswitchd's PID: its threads' CPU time is the forwarder's.
    pub fn pid(&self) -> u32 {
        self.vswitchd.pid()
    }

    /// Starts ovsdb-server on a fresh database, then ovs-vswitchd, both in `sw`, and waits
    /// until each answers. `threads` PMD threads; `ports` decides userspace TSO.
    fn start(progs: Programs, sw: &Netns, threads: usize, ports: Ports, keep: bool) -> Result<Self> {
        let Programs { tool, ovsdb_server, vswitchd, vsctl, appctl } = progs;
        let dir = cmd::temp_dir(keep)?;
        let at = |name: &str| dir.path().join(name);
        let files = Files {
            vsctl,
            appctl,
            dir: dir.path().to_path_buf(),
            db_remote: format!("unix:{}", path_str(&at("db.sock"))?),
            db_sock: at("db.sock"),
            vswitchd_ctl: at("ovs-vswitchd.ctl"),
            vswitchd_log: at("ovs-vswitchd.log"),
            vswitchd_out: at("ovs-vswitchd.out"),
            ovsdb_log: at("ovsdb-server.log"),
        };
        let db = path_str(&at("conf.db"))?;
        let s = |p: &Path| path_str(p);

        // The schema is the one installed with the programs (ovsdb-tool's default).
        let mut create = Command::new(&tool);
        create.args(["create", &db]);
        cmd::checked(files.env(create), Duration::from_secs(10)).map_err(|e| err(format!("creating the OVS database: {e}")))?;

        let ovsdb_args = [
            db.clone(),
            format!("--remote=p{}", files.db_remote),
            format!("--pidfile={}", s(&at("ovsdb-server.pid"))?),
            format!("--log-file={}", s(&files.ovsdb_log)?),
            format!("--unixctl={}", s(&at("ovsdb-server.ctl"))?),
            "-vconsole:err".into(),
        ];
        let argv: Vec<&str> = ovsdb_args.iter().map(String::as_str).collect();
        let mut ovsdb = Proc::spawn(files.env(sw.exec(&s(&ovsdb_server)?, &argv)), "ovsdb-server", Some(&at("ovsdb-server.out")), GRACE)?;
        // Ready when ovs-vsctl can initialise the database through the socket. The settings
        // are read by ovs-vswitchd at start (userspace TSO only then).
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pmd_mask = cpu_mask(threads.clamp(1, cpus));
        let tso = (ports == Ports::System).to_string();
        let init = [
            "--timeout=5",
            "--no-wait",
            "init",
            "--",
            "set",
            "Open_vSwitch",
            ".",
            &format!("other_config:userspace-tso-enable={tso}"),
            // Only PMD ports (`afxdp`) get PMD threads; `system` ports leave this unused.
            &format!("other_config:pmd-cpu-mask={pmd_mask}"),
            // Off the forwarding path in the userspace datapath: a flow miss is handled by the
            // thread that polled the packet, handlers only wait for kernel upcalls that never
            // come, and one revalidator ages a two-port bridge's flows. One each, on any machine.
            "other_config:n-handler-threads=1",
            "other_config:n-revalidator-threads=1",
        ];
        wait_ready(&mut ovsdb, &files.ovsdb_log, "ovsdb-server", || {
            // Before the socket exists ovs-vsctl would wait for it until its --timeout.
            if !files.db_sock.exists() {
                return Err(err(format!("no socket {} yet", files.db_sock.display())));
            }
            files.vsctl(&init, Duration::from_secs(10)).map(drop)
        })?;

        let vswitchd_args = [
            files.db_remote.clone(),
            format!("--pidfile={}", s(&at("ovs-vswitchd.pid"))?),
            format!("--log-file={}", s(&files.vswitchd_log)?),
            format!("--unixctl={}", s(&files.vswitchd_ctl)?),
            // The kernel datapath is not what is measured: refuse it outright.
            "--disable-system".into(),
            "-vconsole:err".into(),
        ];
        let argv: Vec<&str> = vswitchd_args.iter().map(String::as_str).collect();
        let mut vswitchd = Proc::spawn(files.env(sw.exec(&s(&vswitchd)?, &argv)), "ovs-vswitchd", Some(&files.vswitchd_out), GRACE)?;
        wait_ready(&mut vswitchd, &files.vswitchd_log, "ovs-vswitchd", || files.appctl(&["version"]).map(drop))?;
        Ok(Self { vswitchd, ovsdb, files, dir })
    }

    /// Adds the bridge with the two ports, and waits until OVS has them up at `mtu`.
    fn add_bridge(&self, mtu: u32, ports: Ports) -> Result<()> {
        let mtu_request = format!("mtu_request={mtu}");
        let ty = format!("type={}", ports.ovs_type());
        let mut args = vec!["--timeout=20", "--", "add-br", BRIDGE, "--", "set", "bridge", BRIDGE, "datapath_type=netdev"];
        for port in systems::VETH_PORTS {
            args.extend(["--", "add-port", BRIDGE, port, "--", "set", "interface", port, &ty, &mtu_request]);
        }
        // Without --no-wait, ovs-vsctl returns once ovs-vswitchd has applied the change.
        self.files.vsctl(&args, Duration::from_secs(30)).map_err(|e| err(format!("adding bridge {BRIDGE}: {e}")))?;
        let deadline = Instant::now() + START_LIMIT;
        for port in systems::VETH_PORTS {
            loop {
                let state =
                    self.files.vsctl(&["get", "interface", port, "ofport", "error", "link_state", "mtu"], Duration::from_secs(10))?;
                match port_state(&state, mtu) {
                    PortState::Ready => break,
                    PortState::Failed(why) => return Err(err(format!("port {port}: {why}"))),
                    PortState::NotYet(why) if Instant::now() >= deadline => {
                        return Err(err(format!("port {port} not ready within {} s: {why}", START_LIMIT.as_secs())))
                    }
                    PortState::NotYet(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        Ok(())
    }

    /// `e` as a failed setup step, with the last lines of ovs-vswitchd's log (and its console
    /// output if it exited, ovsdb-server's log if that one did).
    fn failed(&mut self, e: Error) -> Error {
        let dir = self.dir.path().display();
        let mut msg = format!(
            "{e}\n--- ovs-vswitchd log (last lines; logs in {dir}, kept with --keep-logs) ---\n{}",
            tail(&self.files.vswitchd_log, LOG_LINES)
        );
        if let Some(status) = self.vswitchd.exited() {
            msg.push_str(&format!("\n--- ovs-vswitchd exited ({status}); its console ---\n{}", tail(&self.files.vswitchd_out, LOG_LINES)));
        }
        if let Some(status) = self.ovsdb.exited() {
            msg.push_str(&format!("\n--- ovsdb-server exited ({status}); its log ---\n{}", tail(&self.files.ovsdb_log, LOG_LINES)));
        }
        err(msg)
    }
}

/// Two namespaces `a` and `b` whose `eth0`s (10.77.0.2/24 and 10.77.0.3/24, MTU `mtu`) are
/// joined by an OVS bridge with the userspace datapath in a third namespace `sw`, where
/// ovsdb-server and ovs-vswitchd of our own run; `threads` PMD threads (used by `afxdp` ports
/// only). Returns once a ping from `a` to `b`, small and of the full MTU, got through.
pub fn l2(mtu: u32, v6: bool, threads: usize, keep: bool) -> Result<(Ovs, Pair, Vec<Netns>)> {
    let ports = Ports::from_env()?;
    let progs = Programs::find()?;
    if ports == Ports::Afxdp && mtu > AFXDP_MAX_MTU {
        return Err(err(format!(
            "afxdp ports ({PORTS_ENV}=afxdp) take an MTU of at most {AFXDP_MAX_MTU} (a veth's native XDP), not {mtu}"
        )));
    }
    if ports == Ports::Afxdp && cmd::which("ethtool").is_none() {
        return Err(err("afxdp ports need ethtool (to turn the endpoints' transmit checksum offload off): install ethtool"));
    }
    // Declared before the daemons, so an early return stops the daemons before the namespaces
    // go (after a success, `Running`'s field order does the same).
    let (a, b, sw) = (Netns::create("a")?, Netns::create("b")?, Netns::create("sw")?);
    let pair = systems::veth_pair(&a, &b, &sw, mtu, v6)?;
    if ports == Ports::Afxdp {
        for ns in [&a, &b] {
            cmd::checked(ns.exec("ethtool", &["-K", "eth0", "tx", "off"]), Duration::from_secs(10))
                .map_err(|e| err(format!("turning transmit checksum offload off in {}: {e}", ns.name())))?;
        }
    }
    let mut ovs = Ovs::start(progs, &sw, threads, ports, keep)?;
    // Over IPv4, which the endpoints always have.
    let checked = ovs.add_bridge(mtu, ports).and_then(|()| ping_through(&a, systems::VETH_B, mtu));
    if let Err(e) = checked {
        return Err(ovs.failed(e));
    }
    Ok((ovs, pair, vec![a, b, sw]))
}

/// Pings `to` from `from`, first with small packets (a few tries: the first waits for ARP and
/// for OVS to learn the MACs), then one of the full `mtu` with DF set.
fn ping_through(from: &Netns, to: Ipv4Addr, mtu: u32) -> Result<()> {
    let ip = to.to_string();
    let ping = |extra: &[&str]| -> Result<()> {
        let mut args = vec!["-c", "1", "-W", "1", "-q"];
        args.extend_from_slice(extra);
        args.push(&ip);
        let c = from.exec("ping", &args);
        let what = cmd::describe(&c);
        let o = cmd::output_within(c, Duration::from_secs(10))?;
        if o.status.success() {
            return Ok(());
        }
        // With -q, ping's stdout is the summary (`1 packets transmitted, 0 received, …`): a
        // lost packet says only that, an unsendable one says why on stderr.
        let (out, errs) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        let summary = out.lines().find(|l| l.contains("transmitted")).unwrap_or_default();
        Err(err(format!("`{what}` failed ({}): {}", o.status, format!("{} {}", errs.trim(), summary.trim()).trim())))
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = ping(&[]);
    while last.is_err() && Instant::now() < deadline {
        last = ping(&[]);
    }
    last.map_err(|e| err(format!("ping {} → {ip} across the OVS bridge: {e}", from.name())))?;
    // IPv4 (20) and ICMP (8) headers around the payload: an IP packet of exactly the MTU.
    let size = mtu.saturating_sub(28).to_string();
    ping(&["-M", "do", "-s", &size]).map_err(|e| {
        err(format!(
            "small pings cross the OVS bridge but one of the full MTU ({mtu} bytes, DF set) does not: \
             OVS's userspace datapath did not carry frames that large: {e}"
        ))
    })
}

/// What `ovs-vsctl get interface P ofport error link_state mtu` says of a port.
#[derive(Debug, PartialEq)]
enum PortState {
    Ready,
    /// Not yet, and why (it may still come up).
    NotYet(String),
    /// OVS could not open or configure it.
    Failed(String),
}

/// Reads the four lines of `ovs-vsctl get interface P ofport error link_state mtu` (an unset
/// column is `[]`, a string quoted): ready when it has a port number, no error, its link is up
/// and OVS applied `mtu`.
fn port_state(out: &str, mtu: u32) -> PortState {
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let [ofport, error, link, port_mtu] = lines[..] else {
        return PortState::Failed(format!("unexpected answer from ovs-vsctl: {out:?}"));
    };
    if error != "[]" {
        return PortState::Failed(format!("OVS reports {error}"));
    }
    if ofport == "-1" {
        return PortState::Failed("OVS could not add it (ofport -1)".into());
    }
    if ofport == "[]" {
        return PortState::NotYet("no port number yet".into());
    }
    if link != "up" {
        return PortState::NotYet(format!("link state {link}"));
    }
    match port_mtu.parse::<u32>() {
        Ok(m) if m == mtu => PortState::Ready,
        // OVS applies mtu_request with the port: a different MTU now means it was refused.
        Ok(m) => PortState::Failed(format!("MTU {m}: OVS did not apply mtu_request={mtu}")),
        Err(_) => PortState::NotYet(format!("MTU {port_mtu}")),
    }
}

/// Polls `ready` until it succeeds; an error if `proc` exits first (with the tail of `log`) or
/// after [`START_LIMIT`] (with `ready`'s last error).
fn wait_ready(proc: &mut Proc, log: &Path, name: &str, mut ready: impl FnMut() -> Result<()>) -> Result<()> {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        if let Some(status) = proc.exited() {
            return Err(err(format!("{name} exited at start ({status}):\n{}", tail(log, LOG_LINES))));
        }
        let last = match ready() {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(err(format!("{name} did not answer within {} s ({last}):\n{}", START_LIMIT.as_secs(), tail(log, LOG_LINES))));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A hexadecimal CPU mask of the `n` lowest-numbered cores, as `pmd-cpu-mask` takes it.
fn cpu_mask(n: usize) -> String {
    let (full, rest) = (n / 4, n % 4);
    let mut s = String::from("0x");
    if rest > 0 || full == 0 {
        s.push(char::from_digit((1 << rest) - 1, 16).unwrap_or('0'));
    }
    s.push_str(&"f".repeat(full));
    s
}

/// The last `lines` lines of a log file (empty if it cannot be read).
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_masks() {
        assert_eq!(cpu_mask(0), "0x0");
        assert_eq!(cpu_mask(1), "0x1");
        assert_eq!(cpu_mask(2), "0x3");
        assert_eq!(cpu_mask(4), "0xf");
        assert_eq!(cpu_mask(5), "0x1f");
        assert_eq!(cpu_mask(16), "0xffff");
        assert_eq!(cpu_mask(70).len(), 2 + 18);
    }

    #[test]
    fn port_states() {
        assert_eq!(port_state("1\n[]\nup\n1500\n", 1500), PortState::Ready);
        assert_eq!(port_state("[]\n[]\n[]\n[]\n", 1500), PortState::NotYet("no port number yet".into()));
        assert_eq!(port_state("2\n[]\ndown\n1500\n", 1500), PortState::NotYet("link state down".into()));
        assert!(matches!(port_state("-1\n\"could not open network device pa (No such device)\"\n[]\n[]\n", 1500), PortState::Failed(_)));
        assert!(matches!(port_state("-1\n[]\n[]\n[]\n", 1500), PortState::Failed(_)));
        assert!(matches!(port_state("1\n[]\nup\n1500\n", 65520), PortState::Failed(_)));
        assert!(matches!(port_state("1\n[]\n", 1500), PortState::Failed(_)));
    }
}
