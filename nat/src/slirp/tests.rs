//! Tests of the slirp engine: a smoltcp interface plays the container, real host sockets on 127.0.0.1 and ::1 answer.
//!
//! Frames go through an in-memory [`FrameIo`]; the engine runs on its own thread with real time.
//! The engine only ever reaches loopback addresses in tests (see `host_address`), whatever a
//! (random) frame asks for; other addresses only with an outbound address the host lacks, whose
//! bind fails before anything is sent. The tests take one lock: some count the process's open files.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::test_rng::Rng;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{
    HardwareAddress, Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr, IpAddress, IpCidr, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr,
    UdpPacket, UdpRepr,
};

use super::frame::{fold, pseudo, sum, FRAME_HDRS, GSO_TCPV4, GSO_TCPV6, VNET_F_NEEDS_CSUM};
use super::*;

const NET: NetId = 1;
const PORT: PortId = 7;
const GW_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0x01]);
const CLIENT_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0x02]);
const GW4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const GW6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

static SERIAL: Mutex<()> = Mutex::new(());

/// With SLIRP_DEBUG set, smoltcp's and the engine's logs go to stderr, by thread.
struct Dbg;

impl log::Log for Dbg {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        eprintln!("{:?} {}", std::thread::current().name(), r.args());
    }
    fn flush(&self) {}
}

/// Held by every test that opens descriptors: several count /proc/self/fd before and after.
pub(super) fn serial() -> MutexGuard<'static, ()> {
    if std::env::var_os("SLIRP_DEBUG").is_some() {
        let _ = log::set_logger(&Dbg);
        log::set_max_level(log::LevelFilter::Trace);
    }
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The uplink double: frames in, frames out, and the eventfd that says frames wait.
struct Mem {
    inbox: Mutex<VecDeque<(NetId, PortId, Vec<u8>)>>,
    outbox: Mutex<VecDeque<(PortId, Vec<u8>)>>,
    cv: Condvar,
    wake: EventFd,
}

impl Mem {
    fn push(&self, net: NetId, wire: Vec<u8>) {
        self.inbox.lock().unwrap().push_back((net, PORT, wire));
        self.wake.notify();
    }

    /// Everything sent so far, waiting up to `wait_ms` for something.
    fn take(&self, wait_ms: u64) -> Vec<(PortId, Vec<u8>)> {
        let mut out = self.outbox.lock().unwrap();
        if out.is_empty() && wait_ms > 0 {
            out = self.cv.wait_timeout(out, Duration::from_millis(wait_ms)).unwrap().0;
        }
        out.drain(..).collect()
    }
}

struct MemIo(Arc<Mem>);

impl FrameIo for MemIo {
    fn wake_fd(&self) -> RawFd {
        self.0.wake.raw()
    }

    fn drain_wake(&self) {
        self.0.wake.drain();
    }

    fn pop(&self, f: &mut dyn FnMut(NetId, PortId, &[u8])) -> bool {
        let Some((net, port, wire)) = self.0.inbox.lock().unwrap().pop_front() else { return false };
        f(net, port, &wire);
        true
    }

    fn transmit(&self, port: PortId, wire: &[u8]) -> bool {
        self.0.outbox.lock().unwrap().push_back((port, wire.to_vec()));
        self.0.cv.notify_all();
        true
    }

    /// The one container there is sits at PORT.
    fn transmit_to(&self, net: NetId, mac: Mac, wire: &[u8]) -> bool {
        net == NET && mac == CLIENT_MAC && self.transmit(PORT, wire)
    }
}

/// The container's link: IP packets in both directions.
struct Dev {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
    mtu: usize,
}

struct RxTok(Vec<u8>);
struct TxTok<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for RxTok {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut p = vec![0; len];
        let r = f(&mut p);
        self.0.push(p);
        r
    }
}

impl Device for Dev {
    type RxToken<'a> = RxTok;
    type TxToken<'a> = TxTok<'a>;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(RxTok, TxTok<'_>)> {
        let p = self.rx.pop_front()?;
        Some((RxTok(p), TxTok(&mut self.tx)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<TxTok<'_>> {
        Some(TxTok(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

/// The engine, a container (a smoltcp interface), and the frames between them.
struct Rig {
    engine: Engine,
    mem: Arc<Mem>,
    dev: Dev,
    iface: Interface,
    sockets: SocketSet<'static>,
    t0: Instant,
    net_mtu: usize,
    /// Mark the container's TCP packets over 1500 bytes as GSO with a partial checksum, as a
    /// kernel with TSO sends them.
    gso_out: bool,
    /// GSO frames the container sent.
    gso_sent: usize,
    /// GSO frames the engine sent, and the largest segment after segmentation.
    gso_in: usize,
    max_seg: usize,
    /// Every frame the container sent.
    sent: Vec<Vec<u8>>,
    /// IP packets the engine sent that were not TCP.
    other: Vec<Vec<u8>>,
    /// Check every frame from the engine (off once random frames make it answer strangers).
    strict: bool,
    /// How long a step waits for the engine (0: spin, for measurements).
    wait_ms: u64,
}

impl Rig {
    fn new(limits: EngineLimits, client_mtu: usize, net_mtu: u32) -> Rig {
        let mem = Arc::new(Mem {
            inbox: Mutex::new(VecDeque::new()),
            outbox: Mutex::new(VecDeque::new()),
            cv: Condvar::new(),
            wake: EventFd::new().unwrap(),
        });
        let engine = Engine::start(MemIo(mem.clone()), limits).unwrap();
        engine.set_networks(networks(true, net_mtu));
        let mut dev = Dev { rx: VecDeque::new(), tx: Vec::new(), mtu: client_mtu };
        let mut cfg = Config::new(HardwareAddress::Ip);
        cfg.random_seed = 42;
        let mut iface = Interface::new(cfg, &mut dev, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(CLIENT4), 24)).unwrap();
            a.push(IpCidr::new(IpAddress::Ipv6(CLIENT6), 64)).unwrap();
        });
        iface.routes_mut().add_default_ipv4_route(GW4).unwrap();
        iface.routes_mut().add_default_ipv6_route(GW6).unwrap();
        Rig {
            engine,
            mem,
            dev,
            iface,
            sockets: SocketSet::new(Vec::new()),
            t0: Instant::now(),
            net_mtu: net_mtu as usize,
            gso_out: false,
            gso_sent: 0,
            gso_in: 0,
            max_seg: 0,
            sent: Vec::new(),
            other: Vec::new(),
            strict: true,
            wait_ms: 2,
        }
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_millis(self.t0.elapsed().as_millis() as i64)
    }

    fn connect(&mut self, v6: bool, port: u16, local_port: u16) -> SocketHandle {
        let gw = if v6 { IpAddr::V6(GW6) } else { IpAddr::V4(GW4) };
        self.connect_to(SocketAddr::new(gw, port), local_port)
    }

    fn connect_to(&mut self, to: SocketAddr, local_port: u16) -> SocketHandle {
        let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 256 * 1024]), tcp::SocketBuffer::new(vec![0; 256 * 1024]));
        s.connect(self.iface.context(), (IpAddress::from(to.ip()), to.port()), local_port).unwrap();
        self.sockets.add(s)
    }

    /// A listening socket of the container's on `port`.
    fn serve(&mut self, port: u16) -> SocketHandle {
        let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 256 * 1024]), tcp::SocketBuffer::new(vec![0; 256 * 1024]));
        s.listen(port).unwrap();
        self.sockets.add(s)
    }

    fn sock(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    fn read(&mut self, h: SocketHandle, into: &mut Vec<u8>) {
        while self.sock(h).can_recv() {
            self.sock(h)
                .recv(|b| {
                    into.extend_from_slice(b);
                    (b.len(), ())
                })
                .unwrap();
        }
    }

    /// Sends an IP packet from the container.
    fn send_ip(&mut self, ip: &[u8]) {
        let v6 = ip[0] >> 4 == 6;
        let mut w = vec![0u8; FRAME_HDRS];
        w[10..16].copy_from_slice(&GW_MAC.0);
        w[16..22].copy_from_slice(&CLIENT_MAC.0);
        w[22..24].copy_from_slice(&if v6 { 0x86ddu16 } else { 0x0800 }.to_be_bytes());
        w.extend_from_slice(ip);
        let ihl = if v6 { 40 } else { usize::from(ip[0] & 15) * 4 };
        let tcp = ip[if v6 { 6 } else { 9 }] == 6;
        if self.gso_out && tcp && ip.len() > 1500 {
            // What a kernel with TSO writes: one super-segment, its checksum left partial.
            let doff = usize::from(ip[ihl + 12] >> 4) * 4;
            w[0] = VNET_F_NEEDS_CSUM;
            w[1] = if v6 { GSO_TCPV6 } else { GSO_TCPV4 };
            w[2..4].copy_from_slice(&((14 + ihl + doff) as u16).to_le_bytes());
            w[4..6].copy_from_slice(&1448u16.to_le_bytes());
            w[6..8].copy_from_slice(&((14 + ihl) as u16).to_le_bytes());
            w[8..10].copy_from_slice(&16u16.to_le_bytes());
            let (s, d) = addrs(ip);
            let partial = fold(pseudo(s, d, 6, ip.len() - ihl));
            let at = FRAME_HDRS + ihl + 16;
            w[at..at + 2].copy_from_slice(&partial.to_be_bytes());
            self.gso_sent += 1;
        }
        self.sent.push(w.clone());
        self.mem.push(NET, w);
    }

    /// A frame from the engine: checked, segmented if GSO, handed to the container.
    fn receive(&mut self, port: PortId, wire: &[u8]) {
        if !self.strict && (wire.len() < FRAME_HDRS + 40 || wire[10..16] != CLIENT_MAC.0 || wire[1] != 0) {
            return;
        }
        assert_eq!(port, PORT);
        assert_eq!(&wire[10..16], &CLIENT_MAC.0);
        assert_eq!(&wire[16..22], &GW_MAC.0);
        let ip = &wire[FRAME_HDRS..];
        let v6 = ip[0] >> 4 == 6;
        assert_eq!(u16::from_be_bytes([wire[22], wire[23]]), if v6 { 0x86dd } else { 0x0800 });
        if ip[if v6 { 6 } else { 9 }] != 6 {
            assert!(ip.len() <= self.net_mtu, "{} > MTU", ip.len());
            self.other.push(ip.to_vec());
            return;
        }
        let gso = wire[1];
        if gso != 0 {
            assert_eq!(gso, if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
            assert_eq!(wire[0], VNET_F_NEEDS_CSUM);
            self.gso_in += 1;
            let size = usize::from(u16::from_le_bytes([wire[4], wire[5]]));
            for seg in segment(ip, size) {
                assert!(seg.len() <= self.net_mtu, "segment of {} bytes over the MTU", seg.len());
                self.max_seg = self.max_seg.max(seg.len());
                self.dev.rx.push_back(seg);
            }
        } else {
            assert_eq!(wire[0], 0, "a plain frame carries a full checksum");
            assert!(ip.len() <= self.net_mtu);
            self.max_seg = self.max_seg.max(ip.len());
            self.dev.rx.push_back(ip.to_vec());
        }
    }

    /// One exchange: what the container has to send goes out, what the engine sent (waiting up
    /// to `wait_ms` for it) comes in.
    fn step(&mut self, wait_ms: u64) {
        let now = self.now();
        let _ = self.iface.poll(now, &mut self.dev, &mut self.sockets);
        for ip in std::mem::take(&mut self.dev.tx) {
            self.send_ip(&ip);
        }
        for (port, wire) in self.mem.take(wait_ms) {
            self.receive(port, &wire);
        }
        let _ = self.iface.poll(self.now(), &mut self.dev, &mut self.sockets);
        for ip in std::mem::take(&mut self.dev.tx) {
            self.send_ip(&ip);
        }
    }

    /// Steps until `cond` holds; false after `ms` milliseconds.
    fn run_until(&mut self, ms: u64, mut cond: impl FnMut(&mut Rig) -> bool) -> bool {
        let end = Instant::now() + Duration::from_millis(ms);
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() > end {
                return false;
            }
            self.step(self.wait_ms);
        }
    }

    fn state(&mut self, h: SocketHandle) -> tcp::State {
        self.sock(h).state()
    }

    /// Sends a datagram-ish IP packet built by hand (UDP, ICMP) and waits for the engine's answers.
    fn exchange(&mut self, wire: Vec<u8>, want: usize, ms: u64) -> Vec<Vec<u8>> {
        self.other.clear();
        self.mem.push(NET, wire);
        self.run_until(ms, |r| r.other.len() >= want);
        std::mem::take(&mut self.other)
    }

    fn no_flows_within(&mut self, ms: u64) -> bool {
        self.run_until(ms, |r| r.engine.flows().is_empty())
    }
}

/// The rig's one network, with or without host-loopback.
fn networks(host_loopback: bool, mtu: u32) -> HashMap<NetId, EngineNet> {
    let net = EngineNet {
        mac: GW_MAC,
        v4: Some(GW4),
        v6: Some(GW6),
        host_loopback,
        mtu,
        outbound4: None,
        outbound6: None,
        host_alias4: None,
        host_alias6: None,
    };
    HashMap::from([(NET, net)])
}

fn addrs(ip: &[u8]) -> (IpAddr, IpAddr) {
    if ip[0] >> 4 == 6 {
        let s: [u8; 16] = ip[8..24].try_into().unwrap();
        let d: [u8; 16] = ip[24..40].try_into().unwrap();
        (IpAddr::from(s), IpAddr::from(d))
    } else {
        let s: [u8; 4] = ip[12..16].try_into().unwrap();
        let d: [u8; 4] = ip[16..20].try_into().unwrap();
        (IpAddr::from(s), IpAddr::from(d))
    }
}

/// What the kernel behind a TAP does with a TCP GSO frame: segments of `size` payload bytes,
/// headers copied, sequence numbers, lengths and checksums fixed, FIN and PSH on the last only.
fn segment(ip: &[u8], size: usize) -> Vec<Vec<u8>> {
    let v6 = ip[0] >> 4 == 6;
    let ihl = if v6 { 40 } else { usize::from(ip[0] & 15) * 4 };
    let doff = usize::from(ip[ihl + 12] >> 4) * 4;
    let hdrs = ihl + doff;
    let payload = &ip[hdrs..];
    assert!(payload.len() > size, "a GSO frame with a single segment's payload");
    let seq0 = u32::from_be_bytes(ip[ihl + 4..ihl + 8].try_into().unwrap());
    let (src, dst) = addrs(ip);
    let chunks: Vec<&[u8]> = payload.chunks(size).collect();
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut p = ip[..hdrs].to_vec();
            p.extend_from_slice(chunk);
            if v6 {
                let plen = (p.len() - 40) as u16;
                p[4..6].copy_from_slice(&plen.to_be_bytes());
            } else {
                let total = p.len() as u16;
                p[2..4].copy_from_slice(&total.to_be_bytes());
                let id = u16::from_be_bytes([p[4], p[5]]).wrapping_add(i as u16);
                p[4..6].copy_from_slice(&id.to_be_bytes());
                p[10..12].fill(0);
                let c = !fold(sum(&p[..ihl], 0));
                p[10..12].copy_from_slice(&c.to_be_bytes());
            }
            let seq = seq0.wrapping_add((i * size) as u32);
            p[ihl + 4..ihl + 8].copy_from_slice(&seq.to_be_bytes());
            if i + 1 < n {
                p[ihl + 13] &= !0x09; // FIN, PSH
            }
            p[ihl + 16..ihl + 18].fill(0);
            let c = !fold(sum(&p[ihl..], pseudo(src, dst, 6, p.len() - ihl)));
            p[ihl + 16..ihl + 18].copy_from_slice(&c.to_be_bytes());
            p
        })
        .collect()
}

/// Bytes that tell where they are: a corrupted, lost or reordered stretch shows.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    (0..len).map(|_| rng.next() as u8).collect()
}

/// FNV-1a: a checksum of content.
fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3))
}

fn listen(v6: bool) -> (TcpListener, u16) {
    let l = TcpListener::bind(if v6 { "[::1]:0" } else { "127.0.0.1:0" }).unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// A container's frame carrying a UDP datagram or ICMP echo request, as a kernel sends it.
fn dgram_frame(src: IpAddr, dst: IpAddr, proto: u8, hdr: [u8; 8], payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; FRONT + payload.len()];
    buf[FRONT..].copy_from_slice(payload);
    buf[FRONT - 8..FRONT].copy_from_slice(&hdr);
    let l4_len = 8 + payload.len();
    if proto == PROTO_UDP {
        buf[FRONT - 4..FRONT - 2].copy_from_slice(&(l4_len as u16).to_be_bytes());
    }
    let at = if proto == PROTO_UDP { FRONT - 2 } else { FRONT - 6 };
    buf[at..at + 2].fill(0);
    let acc = if proto == PROTO_ICMP { 0 } else { pseudo(src, dst, proto, l4_len) };
    let c = !fold(sum(&buf[FRONT - 8..], acc));
    buf[at..at + 2].copy_from_slice(&c.to_be_bytes());
    let d = Dest { via: Via::Port(PORT), mac: GW_MAC, gw_mac: CLIENT_MAC, mtu: 65535 };
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    let n = payload.len();
    assert!(frame::emit(&mut buf, n, &mut scratch, &d, src, dst, proto, 1, &mut |f| out = f.to_vec()));
    out
}

fn udp_frame(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 8];
    h[0..2].copy_from_slice(&src.port().to_be_bytes());
    h[2..4].copy_from_slice(&dst.port().to_be_bytes());
    dgram_frame(src.ip(), dst.ip(), PROTO_UDP, h, payload)
}

fn echo_frame(src: IpAddr, dst: IpAddr, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 8];
    h[0] = if src.is_ipv6() { 128 } else { 8 };
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[6..8].copy_from_slice(&seq.to_be_bytes());
    dgram_frame(src, dst, if src.is_ipv6() { PROTO_ICMPV6 } else { PROTO_ICMP }, h, payload)
}

/// Parses a UDP reply with smoltcp (checksums verified): (source, destination, payload).
fn parse_udp(ip: &[u8]) -> (SocketAddr, SocketAddr, Vec<u8>) {
    let caps = ChecksumCapabilities::default();
    let (s, d, l4): (IpAddress, IpAddress, &[u8]) = if ip[0] >> 4 == 4 {
        let p = Ipv4Packet::new_checked(ip).unwrap();
        let r = Ipv4Repr::parse(&p, &caps).unwrap();
        (r.src_addr.into(), r.dst_addr.into(), &ip[20..])
    } else {
        let p = Ipv6Packet::new_checked(ip).unwrap();
        let r = Ipv6Repr::parse(&p).unwrap();
        (r.src_addr.into(), r.dst_addr.into(), &ip[40..])
    };
    let u = UdpPacket::new_checked(l4).unwrap();
    let r = UdpRepr::parse(&u, &s, &d, &caps).unwrap();
    (SocketAddr::new(s.into(), r.src_port), SocketAddr::new(d.into(), r.dst_port), u.payload().to_vec())
}

fn host_fnv_reader(l: TcpListener, reply: Vec<u8>) -> std::thread::JoinHandle<(usize, u64)> {
    std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            w.write_all(&reply).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        (&s).read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        (got.len(), fnv(&got))
    })
}

/// The container sends `up` and closes; the host sends `down` and closes; both arrive whole.
fn transfer(rig: &mut Rig, v6: bool, up: &[u8], down: &[u8]) {
    let (l, port) = listen(v6);
    let host = host_fnv_reader(l, down.to_vec());
    let h = rig.connect(v6, port, 40000);
    let mut off = 0;
    let mut got = Vec::new();
    let done = rig.run_until(20_000, |r| {
        if off < up.len() {
            if let Ok(n) = r.sock(h).send_slice(&up[off..]) {
                off += n;
            }
        }
        if off == up.len() {
            r.sock(h).close();
        }
        r.read(h, &mut got);
        off == up.len() && got.len() == down.len() && matches!(r.state(h), tcp::State::TimeWait | tcp::State::Closed)
    });
    assert!(
        done,
        "sent {off}/{}, got {}/{}, state {}, {:?} {:?}",
        up.len(),
        got.len(),
        down.len(),
        rig.state(h),
        rig.engine.counters(),
        rig.engine.flows()
    );
    assert_eq!(host.join().unwrap(), (up.len(), fnv(up)));
    assert_eq!((got.len(), fnv(&got)), (down.len(), fnv(down)));
    assert!(rig.no_flows_within(5000), "{:?}", rig.engine.flows());
    let c = rig.engine.counters();
    assert_eq!((c.tcp_opened, c.tcp_closed, c.tcp_open), (1, 1, 0), "{c:?}");
    assert_eq!((c.drop_checksum, c.drop_malformed, c.tx_failed), (0, 0, 0), "{c:?}");
}

#[test]
fn tcp_carries_a_megabyte_each_way_in_gso_frames() {
    let _g = serial();
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    transfer(&mut rig, false, &pattern(1 << 20, 1), &pattern(1 << 20, 2));
    // The engine sent large segments, which the kernel (here, `segment`) cut to the MSS.
    assert!(rig.gso_in > 0);
    assert!(rig.max_seg <= 1500 && rig.max_seg > 1400, "{}", rig.max_seg);
}

#[test]
fn tcp_over_ipv6_to_the_hosts_loopback() {
    let _g = serial();
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    transfer(&mut rig, true, &pattern(300_000, 3), &pattern(200_000, 4));
    assert!(rig.gso_in > 0);
}

#[test]
fn a_smaller_network_mtu_makes_smaller_segments() {
    let _g = serial();
    let mut rig = Rig::new(EngineLimits::default(), 1280, 1280);
    transfer(&mut rig, false, &pattern(100_000, 5), &pattern(300_000, 6));
    assert!(rig.max_seg <= 1280 && rig.max_seg > 1180, "{}", rig.max_seg);
}

#[test]
fn gso_frames_from_the_container_are_taken_whole() {
    let _g = serial();
    // The container's kernel hands over 64 KB segments with partial checksums.
    let mut rig = Rig::new(EngineLimits::default(), 65535, 1500);
    rig.gso_out = true;
    transfer(&mut rig, false, &pattern(600_000, 7), &pattern(1000, 8));
    assert!(rig.gso_sent > 3, "{}", rig.gso_sent);
    let biggest = rig.sent.iter().map(Vec::len).max().unwrap();
    assert!(biggest > 60_000, "{biggest}");
}

#[test]
fn half_closes_work_both_ways() {
    let _g = serial();
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    // The container closes first, then still receives.
    let (l, port) = listen(false);
    let host = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(b"answer after your FIN").unwrap();
        got
    });
    let h = rig.connect(false, port, 40001);
    assert!(rig.run_until(5000, |r| r.state(h) == tcp::State::Established));
    rig.sock(h).send_slice(b"question").unwrap();
    rig.sock(h).close();
    let mut got = Vec::new();
    assert!(rig.run_until(10_000, |r| {
        r.read(h, &mut got);
        matches!(r.state(h), tcp::State::TimeWait | tcp::State::Closed)
    }));
    assert_eq!(host.join().unwrap(), b"question");
    assert_eq!(got, b"answer after your FIN");

    // The host closes first, then still receives.
    let (l, port) = listen(false);
    let host = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"early").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let h = rig.connect(false, port, 40002);
    let mut got = Vec::new();
    assert!(rig.run_until(10_000, |r| {
        r.read(h, &mut got);
        r.state(h) == tcp::State::CloseWait
    }));
    assert_eq!(got, b"early");
    rig.sock(h).send_slice(b"late words").unwrap();
    rig.sock(h).close();
    assert!(rig.run_until(10_000, |r| r.state(h) == tcp::State::Closed));
    assert_eq!(host.join().unwrap(), b"late words");
    assert!(rig.no_flows_within(5000));
    assert_eq!(rig.engine.counters().tcp_closed, 2);
}

#[test]
fn time_wait_keeps_the_ports_without_the_socket_and_answers_a_late_fin_with_a_rst() {
    let _g = serial();
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    // The host closes first: the engine's side ends in TIME-WAIT once the container's FIN is in.
    let (l, port) = listen(false);
    let host = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let h = rig.connect(false, port, 40020);
    assert!(rig.run_until(10_000, |r| r.state(h) == tcp::State::CloseWait));
    rig.sock(h).send_slice(b"bye").unwrap();
    rig.sock(h).close();
    // At once: the engine's last ACK does not wait for a delayed-ACK timer.
    assert!(rig.run_until(200, |r| r.state(h) == tcp::State::Closed), "{}", rig.state(h));
    assert_eq!(host.join().unwrap(), b"bye");
    // The flow stays for the rest of TIME-WAIT (its socket already back in the pool).
    assert_eq!(rig.engine.flows().len(), 1, "{:?}", rig.engine.flows());
    // The container's FIN again, as if our last ACK had been lost: a RST ends its side.
    let fin = rig
        .sent
        .iter()
        .rev()
        .find(|w| w.len() >= FRAME_HDRS + 40 && w[FRAME_HDRS + 9] == 6 && w[FRAME_HDRS + 20 + 13] & 0x01 != 0)
        .cloned()
        .expect("the container's FIN");
    let stray = rig.engine.counters().tcp_stray;
    rig.mem.push(NET, fin);
    assert!(rig.run_until(2000, |r| r.engine.counters().tcp_stray == stray + 1));
    // TIME-WAIT ends on its own (250 ms), counted as a clean close.
    assert!(rig.no_flows_within(5000), "{:?}", rig.engine.flows());
    let c = rig.engine.counters();
    assert_eq!((c.tcp_opened, c.tcp_closed, c.tcp_open), (1, 1, 0), "{c:?}");
    // A new connection after it works (its socket from the pool).
    let (l, port) = listen(false);
    let host = std::thread::spawn(move || l.accept().unwrap().0.write_all(b"again").unwrap());
    let h = rig.connect(false, port, 40021);
    let mut got = Vec::new();
    assert!(rig.run_until(5000, |r| {
        r.read(h, &mut got);
        got == b"again"
    }));
    host.join().unwrap();
}

#[test]
fn a_refused_port_gets_a_rst() {
    let _g = serial();
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    let (l, port) = listen(false);
    drop(l);
    let h = rig.connect(false, port, 40003);
    assert!(rig.run_until(5000, |r| r.state(h) == tcp::State::Closed));
    let c = rig.engine.counters();
    assert_eq!((c.tcp_refused, c.tcp_opened, c.tcp_open), (1, 0, 0), "{c:?}");
    assert!(rig.engine.flows().is_empty());
}

#[test]
fn resets_propagate_both_ways() {
    let _g = serial();
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    // The container resets: the host's read fails.
    let (l, port) = listen(false);
    let host = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 100];
        let n = s.read(&mut b).unwrap();
        (n, s.read(&mut b).map_err(|e| e.kind()))
    });
    let h = rig.connect(false, port, 40004);
    assert!(rig.run_until(5000, |r| r.state(h) == tcp::State::Established));
    rig.sock(h).send_slice(b"hi").unwrap();
    assert!(rig.run_until(5000, |r| r.sock(h).send_queue() == 0));
    rig.sock(h).abort();
    rig.step(5);
    assert_eq!(host.join().unwrap(), (2, Err(std::io::ErrorKind::ConnectionReset)));
    assert!(rig.no_flows_within(5000));
    assert_eq!(rig.engine.counters().tcp_reset_by_container, 1);

    // The host resets: the container's socket closes without a FIN.
    let (l, port) = listen(false);
    let host = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let s = socket2::Socket::from(s);
        s.set_linger(Some(Duration::ZERO)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    });
    let h = rig.connect(false, port, 40005);
    assert!(rig.run_until(5000, |r| r.state(h) == tcp::State::Established));
    host.join().unwrap();
    assert!(rig.run_until(5000, |r| r.state(h) == tcp::State::Closed));
    assert!(rig.no_flows_within(5000));
    assert_eq!(rig.engine.counters().tcp_reset_by_host, 1);
}

fn udp_echo_server(v6: bool) -> (SocketAddr, std::thread::JoinHandle<()>, Arc<AtomicBool>) {
    let s = UdpSocket::bind(if v6 { "[::1]:0" } else { "127.0.0.1:0" }).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let addr = s.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let t = std::thread::spawn(move || {
        let mut b = vec![0u8; 65536];
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((n, from)) = s.recv_from(&mut b) {
                let mut reply = b"echo:".to_vec();
                reply.extend_from_slice(&b[..n]);
                let _ = s.send_to(&reply, from);
            }
        }
    });
    (addr, t, stop)
}

#[test]
fn udp_request_response_fragments_and_expiry() {
    let _g = serial();
    let mut limits = EngineLimits::default();
    limits.timeouts.udp_ms = 300;
    limits.timeouts.udp_stream_ms = 600;
    let mut rig = Rig::new(limits, 1500, 1500);
    for v6 in [false, true] {
        let (server, t, stop) = udp_echo_server(v6);
        let (client, gw) = if v6 { (IpAddr::V6(CLIENT6), IpAddr::V6(GW6)) } else { (IpAddr::V4(CLIENT4), IpAddr::V4(GW4)) };
        let src = SocketAddr::new(client, 5353);
        let dst = SocketAddr::new(gw, server.port());
        let replies = rig.exchange(udp_frame(src, dst, b"ping"), 1, 5000);
        assert_eq!(replies.len(), 1);
        assert_eq!(parse_udp(&replies[0]), (dst, src, b"echo:ping".to_vec()));
        // A reply over the MTU arrives in fragments that make it up again.
        let big = pattern(4000, 9);
        let frags = rig.exchange(udp_frame(src, dst, &big), 3, 5000);
        assert_eq!(frags.len(), 3, "{:?}", rig.engine.counters());
        let mut l4 = Vec::new();
        for f in &frags {
            l4.extend_from_slice(if v6 { &f[48..] } else { &f[20..] });
        }
        let mut want = b"echo:".to_vec();
        want.extend_from_slice(&big);
        assert_eq!(&l4[8..], &want[..]);
        let flows = rig.engine.flows();
        assert_eq!(flows.len(), 1);
        assert_eq!((flows[0].row.proto, flows[0].row.src, flows[0].row.dst), (Proto::Udp, src, dst));
        assert_eq!(flows[0].row.state, crate::FlowState::Assured);
        // Replied: 600 ms of silence closes it.
        assert!(rig.no_flows_within(3000));
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
    }
    let c = rig.engine.counters();
    assert_eq!((c.udp_flows, c.flows_expired, c.udp_open), (2, 2, 0), "{c:?}");
}

#[test]
fn icmp_echo_through_ping_sockets() {
    let _g = serial();
    let mut limits = EngineLimits::default();
    limits.timeouts.icmp_ms = 300;
    let mut rig = Rig::new(limits, 1500, 1500);
    let caps = ChecksumCapabilities::default();
    for v6 in [false, true] {
        let (client, gw) = if v6 { (IpAddr::V6(CLIENT6), IpAddr::V6(GW6)) } else { (IpAddr::V4(CLIENT4), IpAddr::V4(GW4)) };
        let data = pattern(56, 10);
        let replies = rig.exchange(echo_frame(client, gw, 0x1234, 7, &data), 1, 3000);
        if rig.engine.counters().drop_ping_not_permitted > 0 {
            eprintln!("SKIPPED icmp_echo_through_ping_sockets: net.ipv4.ping_group_range forbids ping sockets to this user");
            return;
        }
        assert_eq!(replies.len(), 1, "{:?}", rig.engine.counters());
        let ip = &replies[0];
        let (s, d) = addrs(ip);
        assert_eq!((s, d), (gw, client));
        if v6 {
            let p = Icmpv6Packet::new_checked(&ip[40..]).unwrap();
            let (IpAddr::V6(s6), IpAddr::V6(d6)) = (s, d) else { unreachable!() };
            match Icmpv6Repr::parse(&s6, &d6, &p, &caps).unwrap() {
                Icmpv6Repr::EchoReply { ident, seq_no, data: got } => assert_eq!((ident, seq_no, got), (0x1234, 7, &data[..])),
                r => panic!("{r:?}"),
            }
        } else {
            Ipv4Repr::parse(&Ipv4Packet::new_checked(&ip[..]).unwrap(), &caps).unwrap();
            let p = Icmpv4Packet::new_checked(&ip[20..]).unwrap();
            match Icmpv4Repr::parse(&p, &caps).unwrap() {
                Icmpv4Repr::EchoReply { ident, seq_no, data: got } => assert_eq!((ident, seq_no, got), (0x1234, 7, &data[..])),
                r => panic!("{r:?}"),
            }
        }
    }
    assert_eq!(rig.engine.counters().icmp_flows, 2);
    assert!(rig.no_flows_within(3000));
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn forget_closes_the_host_sockets() {
    let _g = serial();
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    let (l, port) = listen(false);
    let (server, t, stop) = udp_echo_server(false);
    let before = open_fds();
    let hs: Vec<_> = (0..3).map(|i| rig.connect(false, port, 41000 + i)).collect();
    assert!(rig.run_until(5000, |r| hs.iter().all(|&h| r.state(h) == tcp::State::Established)));
    let accepted: Vec<_> = (0..3).map(|_| l.accept().unwrap().0).collect();
    for i in 0..2 {
        let src = SocketAddr::new(IpAddr::V4(CLIENT4), 6000 + i);
        assert_eq!(rig.exchange(udp_frame(src, SocketAddr::new(IpAddr::V4(GW4), server.port()), b"x"), 1, 5000).len(), 1);
    }
    assert_eq!(rig.engine.flows().len(), 5);
    // The engine's five sockets and our three accepted ones.
    assert_eq!(open_fds(), before + 8);
    // Another network's containers are not these.
    rig.engine.forget_in(NET + 1, vec![IpAddr::V4(CLIENT4)]);
    assert_eq!(rig.engine.flows().len(), 5);
    rig.engine.forget(vec![IpAddr::V4(CLIENT4)]);
    assert!(rig.no_flows_within(2000));
    assert!(rig.run_until(2000, |_| open_fds() == before + 3), "{} open, {} before", open_fds(), before);
    // The host's ends were reset.
    for mut s in accepted {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(s.read(&mut [0u8; 10]).map_err(|e| e.kind()), Err(std::io::ErrorKind::ConnectionReset));
    }
    let c = rig.engine.counters();
    assert_eq!((c.tcp_open, c.udp_open), (0, 0), "{c:?}");
    // The container does not know yet: its next segment is answered with a RST.
    rig.sock(hs[0]).send_slice(b"anyone?").unwrap();
    assert!(rig.run_until(5000, |r| r.state(hs[0]) == tcp::State::Closed));
    assert_eq!(rig.engine.counters().tcp_stray, 1);
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}

#[test]
fn a_udp_gso_datagram_is_sent_as_its_segments() {
    let _g = serial();
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    let (server, t, stop) = udp_echo_server(false);
    let src = SocketAddr::new(IpAddr::V4(CLIENT4), 5000);
    let dst = SocketAddr::new(IpAddr::V4(GW4), server.port());
    let payload = pattern(250, 14);
    let mut w = udp_frame(src, dst, &payload);
    // UDP_L4 (UDP_SEGMENT) in 100-byte segments, its checksum left partial.
    w[0] = VNET_F_NEEDS_CSUM;
    w[1] = frame::GSO_UDP_L4;
    w[4..6].copy_from_slice(&100u16.to_le_bytes());
    let at = FRAME_HDRS + 20 + 6;
    w[at..at + 2].fill(0);
    let replies = rig.exchange(w, 3, 5000);
    assert_eq!(replies.len(), 3);
    let mut echoed: Vec<Vec<u8>> = replies.iter().map(|r| parse_udp(r).2).collect();
    echoed.sort_by_key(Vec::len);
    let mut want: Vec<Vec<u8>> = payload.chunks(100).map(|c| [b"echo:".as_slice(), c].concat()).collect();
    want.sort_by_key(Vec::len);
    assert_eq!(echoed.iter().map(Vec::len).collect::<Vec<_>>(), want.iter().map(Vec::len).collect::<Vec<_>>());
    for c in &want {
        assert!(echoed.contains(c));
    }
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}

#[test]
fn at_the_flow_limit_new_flows_are_refused_and_old_ones_carry_on() {
    let _g = serial();
    let limits = EngineLimits { max_flows: 2, ..EngineLimits::default() };
    let mut rig = Rig::new(limits, 1500, 1500);
    let (server, t, stop) = udp_echo_server(false);
    let dst = SocketAddr::new(IpAddr::V4(GW4), server.port());
    let a = SocketAddr::new(IpAddr::V4(CLIENT4), 7000);
    let b = SocketAddr::new(IpAddr::V4(CLIENT4), 7001);
    assert_eq!(rig.exchange(udp_frame(a, dst, b"a"), 1, 5000).len(), 1);
    // A TCP connection is the second flow.
    let (l, port) = listen(false);
    let h = rig.connect(false, port, 42000);
    assert!(rig.run_until(5000, |r| r.state(h) == tcp::State::Established));
    let (mut host, _) = l.accept().unwrap();
    // A third flow of either kind is refused: the datagram dropped, the SYN reset.
    assert!(rig.exchange(udp_frame(b, dst, b"b"), 1, 300).is_empty());
    let h2 = rig.connect(false, port, 42001);
    assert!(rig.run_until(5000, |r| r.state(h2) == tcp::State::Closed));
    assert_eq!(rig.engine.counters().drop_flow_table_full, 2);
    // The first two work as before.
    assert_eq!(parse_udp(&rig.exchange(udp_frame(a, dst, b"again"), 1, 5000)[0]).2, b"echo:again");
    let mut states: Vec<_> = rig.engine.flows().iter().map(|f| (f.row.proto, f.row.state)).collect();
    states.sort_by_key(|s| s.0);
    assert_eq!(states, [(Proto::Tcp, crate::FlowState::Tcp(crate::TcpState::Established)), (Proto::Udp, crate::FlowState::Assured)]);
    rig.sock(h).send_slice(b"still here").unwrap();
    let mut got = [0u8; 10];
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let reader = std::thread::spawn(move || {
        host.read_exact(&mut got).unwrap();
        got
    });
    assert!(rig.run_until(5000, |r| r.sock(h).send_queue() == 0));
    assert_eq!(&reader.join().unwrap(), b"still here");
    assert_eq!(rig.engine.flows().len(), 2);
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}

#[test]
fn per_source_limit() {
    let _g = serial();
    let limits = EngineLimits { per_source: 1, ..EngineLimits::default() };
    let mut rig = Rig::new(limits, 1500, 1500);
    let (server, t, stop) = udp_echo_server(false);
    let dst = SocketAddr::new(IpAddr::V4(GW4), server.port());
    assert_eq!(rig.exchange(udp_frame(SocketAddr::new(IpAddr::V4(CLIENT4), 1), dst, b"a"), 1, 5000).len(), 1);
    assert!(rig.exchange(udp_frame(SocketAddr::new(IpAddr::V4(CLIENT4), 2), dst, b"b"), 1, 300).is_empty());
    // Another container is not held back.
    let other = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3)), 1);
    assert_eq!(rig.exchange(udp_frame(other, dst, b"c"), 1, 5000).len(), 1);
    assert_eq!(rig.engine.counters().drop_flow_table_full, 1);
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}

#[test]
fn networks_removed_close_their_flows_and_unknown_ones_are_counted() {
    let _g = serial();
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    let (server, t, stop) = udp_echo_server(false);
    let src = SocketAddr::new(IpAddr::V4(CLIENT4), 9000);
    let dst = SocketAddr::new(IpAddr::V4(GW4), server.port());
    assert_eq!(rig.exchange(udp_frame(src, dst, b"x"), 1, 5000).len(), 1);
    rig.mem.push(99, udp_frame(src, dst, b"x"));
    rig.engine.set_networks(HashMap::new());
    assert!(rig.no_flows_within(2000));
    assert!(rig.exchange(udp_frame(src, dst, b"x"), 1, 300).is_empty());
    let c = rig.engine.counters();
    assert_eq!((c.drop_no_network, c.udp_open), (2, 0), "{c:?}");
    // Without host_loopback, the gateway's address reaches nothing.
    rig.engine.set_networks(HashMap::from([(NET, EngineNet { host_loopback: false, ..networks(true, 1500)[&NET].clone() })]));
    assert!(rig.exchange(udp_frame(src, dst, b"x"), 1, 300).is_empty());
    assert_eq!(rig.engine.counters().drop_denied, 1);
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}

#[test]
fn random_frames_are_counted_and_never_panic() {
    let _g = serial();
    let limits = EngineLimits { max_flows: 64, ..EngineLimits::default() };
    let mut rig = Rig::new(limits, 1500, 1500);
    // A corpus of real frames: a TCP session, UDP, ICMP echo, both families.
    let (server, t, stop) = udp_echo_server(false);
    transfer(&mut rig, false, &pattern(5000, 11), &pattern(3000, 12));
    let mut corpus = std::mem::take(&mut rig.sent);
    corpus.push(udp_frame(SocketAddr::new(IpAddr::V4(CLIENT4), 1), SocketAddr::new(IpAddr::V4(GW4), server.port()), b"q"));
    corpus.push(udp_frame(SocketAddr::new(IpAddr::V6(CLIENT6), 1), SocketAddr::new(IpAddr::V6(GW6), 9), b"q"));
    corpus.push(echo_frame(IpAddr::V4(CLIENT4), IpAddr::V4(GW4), 1, 1, b"ping"));
    corpus.push(echo_frame(IpAddr::V6(CLIENT6), IpAddr::V6(GW6), 1, 1, b"ping"));
    let before = rig.engine.counters();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..20_000 {
        let mut f = corpus[rng.below(corpus.len() as u64) as usize].clone();
        match rng.below(5) as usize {
            0 => {
                for _ in 0..1 + rng.below(4) as usize {
                    let at = rng.below(f.len() as u64) as usize;
                    f[at] = rng.next() as u8;
                }
            }
            1 => f.truncate(rng.below(f.len() as u64) as usize),
            2 => f.extend((0..rng.below(64) as usize).map(|_| rng.next() as u8)),
            // The virtio-net header: GSO types, sizes, checksum offsets.
            3 => {
                let at = rng.below(10) as usize;
                f[at] = rng.next() as u8;
            }
            _ => {
                let len = rng.below(200) as usize;
                f = (0..len).map(|_| rng.next() as u8).collect();
                if len > 24 && rng.below(2) as usize == 0 {
                    f[..24].copy_from_slice(&corpus[0][..24]);
                }
            }
        }
        rig.mem.push(NET, f);
        if i % 500 == 0 {
            // Let the engine keep up, and drop what it answers.
            rig.mem.take(1);
        }
    }
    rig.strict = false;
    let end = Instant::now() + Duration::from_secs(10);
    while !rig.mem.inbox.lock().unwrap().is_empty() && Instant::now() < end {
        rig.mem.take(5);
    }
    assert!(rig.engine.running());
    let c = rig.engine.counters();
    assert_eq!(c.frames_in - before.frames_in, 20_000);
    let dropped =
        c.drop_malformed + c.drop_checksum + c.drop_unsupported - before.drop_malformed - before.drop_checksum - before.drop_unsupported;
    assert!(dropped > 10_000, "{c:?}");
    // Still works.
    rig.engine.flush();
    assert!(rig.no_flows_within(2000));
    rig.mem.take(0);
    rig.dev.rx.clear();
    rig.sockets = SocketSet::new(Vec::new());
    let (l, port) = listen(false);
    let host = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"alive").unwrap();
    });
    let h = rig.connect(false, port, 43000);
    let mut got = Vec::new();
    assert!(rig.run_until(5000, |r| {
        r.read(h, &mut got);
        got == b"alive"
    }));
    host.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}

#[test]
fn dropping_the_engine_stops_its_thread_and_closes_sockets() {
    let _g = serial();
    let before = open_fds();
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    let (server, t, stop) = udp_echo_server(false);
    let src = SocketAddr::new(IpAddr::V4(CLIENT4), 9000);
    assert_eq!(rig.exchange(udp_frame(src, SocketAddr::new(IpAddr::V4(GW4), server.port()), b"x"), 1, 5000).len(), 1);
    drop(rig);
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    assert_eq!(open_fds(), before);
}

#[test]
#[ignore = "a measurement: cargo test --release -p vswitch-nat slirp::tests::throughput -- --ignored --nocapture"]
fn throughput() {
    let _g = serial();
    let big = pattern(64 << 20, 13);
    for (what, client_mtu, gso_out) in [("container MTU 1500", 1500, false), ("container sends 64 KB GSO", 65535, true)] {
        for up in [true, false] {
            let mut rig = Rig::new(EngineLimits::default(), client_mtu, 1500);
            rig.gso_out = gso_out;
            rig.wait_ms = 0;
            let t = Instant::now();
            if up {
                transfer(&mut rig, false, &big, b"done");
            } else {
                transfer(&mut rig, false, b"go", &big);
            }
            let s = t.elapsed().as_secs_f64();
            let dir = if up { "container -> host" } else { "host -> container" };
            eprintln!("{what}, {dir}: {:.0} MB/s ({} GSO frames in, {} out)", big.len() as f64 / s / 1e6, rig.gso_sent, rig.gso_in);
        }
    }
}

/// A published TCP port of the container's `port` at `host` (port 0: picked).
fn publish_tcp(rig: &Rig, id: u64, host: &str, container: IpAddr, port: u16) -> SocketAddr {
    let fwd = PortForward {
        id,
        proto: Proto::Tcp,
        host: host.parse().unwrap(),
        net: NET,
        container: SocketAddr::new(container, port),
        container_mac: CLIENT_MAC,
        splice: None,
    };
    rig.engine.publish(fwd).unwrap()
}

/// A host client of a published port: sends `up` and half-closes, reads to the end; returns its
/// own address and what it read (length, checksum).
fn published_client(to: SocketAddr, up: Vec<u8>) -> std::thread::JoinHandle<(SocketAddr, usize, u64)> {
    std::thread::spawn(move || {
        let s = TcpStream::connect(to).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let local = s.local_addr().unwrap();
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            w.write_all(&up).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        (&s).read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        (local, got.len(), fnv(&got))
    })
}

/// The container, listening at `h`, takes a connection, receives `up` whole, sends `down` and
/// closes; returns whom the connection came from.
fn container_serves(rig: &mut Rig, h: SocketHandle, up: &[u8], down: &[u8]) -> SocketAddr {
    let (mut off, mut got, mut peer) = (0, Vec::new(), None);
    let done = rig.run_until(30_000, |r| {
        if peer.is_none() && r.state(h) == tcp::State::Established {
            peer = r.sock(h).remote_endpoint();
        }
        r.read(h, &mut got);
        if off < down.len() && r.sock(h).may_send() {
            off += r.sock(h).send_slice(&down[off..]).unwrap_or(0);
        }
        if off == down.len() && peer.is_some() {
            r.sock(h).close();
        }
        off == down.len() && got.len() == up.len() && matches!(r.state(h), tcp::State::TimeWait | tcp::State::Closed)
    });
    assert!(done, "sent {off}/{}, got {}/{}, state {}, {:?}", down.len(), got.len(), up.len(), rig.state(h), rig.engine.counters());
    assert_eq!(fnv(&got), fnv(up));
    let peer = peer.unwrap();
    SocketAddr::new(peer.addr.into(), peer.port)
}

#[test]
fn published_tcp_from_the_hosts_loopback_comes_from_the_gateway() {
    let _g = serial();
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    // Published ports need no host-loopback: the gateway's address is only the client's stand-in.
    rig.engine.set_networks(networks(false, 1500));
    let cases = [
        ("127.0.0.1:0", IpAddr::V4(CLIENT4), IpAddr::V4(GW4)),
        ("[::1]:0", IpAddr::V6(CLIENT6), IpAddr::V6(GW6)),
        // An IPv6 client of an IPv4 container: the gateway's IPv4 address.
        ("[::1]:0", IpAddr::V4(CLIENT4), IpAddr::V4(GW4)),
    ];
    for (i, (host, container, gw)) in cases.into_iter().enumerate() {
        let port = 80 + i as u16;
        let h = rig.serve(port);
        let bound = publish_tcp(&rig, i as u64, host, container, port);
        assert_eq!(bound.ip(), host.parse::<SocketAddr>().unwrap().ip());
        assert_ne!(bound.port(), 0);
        let (up, down) = (pattern(300_000, 20 + i as u64), pattern(1 << 20, 30 + i as u64));
        let client = published_client(bound, up.clone());
        let peer = container_serves(&mut rig, h, &up, &down);
        let (local, n, sum) = client.join().unwrap();
        assert_eq!((n, sum), (down.len(), fnv(&down)));
        // The client's port, from the gateway's address.
        assert_eq!(peer, SocketAddr::new(gw, local.port()));
        assert!(rig.no_flows_within(5000), "{:?}", rig.engine.flows());
    }
    let c = rig.engine.counters();
    assert_eq!((c.pub_tcp_opened, c.pub_tcp_refused, c.pub_dropped, c.tcp_open), (3, 0, 0, 0), "{c:?}");
    assert_eq!((c.pub_bytes_in, c.pub_bytes_out), (900_000, 3 << 20), "{c:?}");
    assert_eq!((c.tcp_opened, c.bytes_to_host, c.drop_spoofed, c.drop_checksum), (0, 0, 0, 0), "{c:?}");
    // Large segments to the container, which its kernel (here, `segment`) cuts to its MSS.
    assert!(rig.gso_in > 0);
    assert!(rig.max_seg <= 1500 && rig.max_seg > 1400, "{}", rig.max_seg);
    assert_eq!(rig.engine.published().len(), 3);
    assert_eq!(c.pub_ports, 3);
}

#[test]
fn published_tcp_flows_are_tracked_from_the_client() {
    let _g = serial();
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    let h = rig.serve(8080);
    let bound = publish_tcp(&rig, 1, "127.0.0.1:0", IpAddr::V4(CLIENT4), 8080);
    let client = TcpStream::connect(bound).unwrap();
    let local = client.local_addr().unwrap();
    assert!(rig.run_until(5000, |r| r.state(h) == tcp::State::Established));
    let flows = rig.engine.flows();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let row = flows[0].row;
    assert_eq!(
        (row.proto, row.src, row.dst),
        (Proto::Tcp, SocketAddr::new(IpAddr::V4(GW4), local.port()), SocketAddr::new(IpAddr::V4(CLIENT4), 8080))
    );
    assert_eq!(row.state, crate::FlowState::Tcp(crate::TcpState::Established));
    drop(client);
    assert!(rig.run_until(5000, |r| r.state(h) == tcp::State::CloseWait));
    rig.sock(h).close();
    assert!(rig.no_flows_within(5000));
}

#[test]
fn a_container_that_refuses_gets_the_client_reset() {
    let _g = serial();
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    // Nothing listens on the container's port 81: its stack answers the SYN with a RST.
    let bound = publish_tcp(&rig, 1, "127.0.0.1:0", IpAddr::V4(CLIENT4), 81);
    let mut client = TcpStream::connect(bound).unwrap();
    client.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut r = Err(std::io::ErrorKind::WouldBlock);
    assert!(rig.run_until(5000, |_| {
        r = client.read(&mut [0u8; 10]).map_err(|e| e.kind());
        !matches!(r, Err(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
    }));
    assert_eq!(r, Err(std::io::ErrorKind::ConnectionReset));
    assert!(rig.no_flows_within(2000));
    let c = rig.engine.counters();
    assert_eq!((c.pub_tcp_refused, c.pub_tcp_opened, c.tcp_reset_by_container, c.tcp_open), (1, 0, 0, 0), "{c:?}");
}

#[test]
fn published_udp_carries_datagrams_both_ways_per_client() {
    let _g = serial();
    let mut limits = EngineLimits::default();
    limits.timeouts.udp_ms = 300;
    limits.timeouts.udp_stream_ms = 600;
    let mut rig = Rig::new(limits, 1500, 1500);
    for (i, (host, container, gw)) in
        [("127.0.0.1:0", IpAddr::V4(CLIENT4), IpAddr::V4(GW4)), ("[::1]:0", IpAddr::V6(CLIENT6), IpAddr::V6(GW6))].into_iter().enumerate()
    {
        let id = 10 + i as u64;
        let cport = 5300 + i as u16;
        let fwd = PortForward {
            id,
            proto: Proto::Udp,
            host: host.parse().unwrap(),
            net: NET,
            container: SocketAddr::new(container, cport),
            container_mac: CLIENT_MAC,
            splice: None,
        };
        let bound = rig.engine.publish(fwd).unwrap();
        let clients: Vec<UdpSocket> = (0..2).map(|_| UdpSocket::bind(SocketAddr::new(bound.ip(), 0)).unwrap()).collect();
        for (k, client) in clients.iter().enumerate() {
            client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            for round in 0..2 {
                let ask = format!("question {k}.{round}");
                client.send_to(ask.as_bytes(), bound).unwrap();
                rig.other.clear();
                assert!(rig.run_until(5000, |r| !r.other.is_empty()), "{:?}", rig.engine.counters());
                let (src, dst, payload) = parse_udp(&rig.other[0]);
                // From the gateway (a loopback client), at the client's port, to the container.
                assert_eq!(
                    (src, dst, payload),
                    (SocketAddr::new(gw, client.local_addr().unwrap().port()), SocketAddr::new(container, cport), ask.clone().into_bytes())
                );
                // The container answers: the client hears it from the published address.
                rig.mem.push(NET, udp_frame(dst, src, format!("answer {k}.{round}").as_bytes()));
                let mut b = [0u8; 100];
                let (n, from) = client.recv_from(&mut b).unwrap();
                assert_eq!((&b[..n], from), (format!("answer {k}.{round}").as_bytes(), bound));
            }
        }
        let rows: Vec<_> = rig.engine.flows().into_iter().map(|f| (f.row.proto, f.row.dst, f.row.state)).collect();
        assert_eq!(rows, vec![(Proto::Udp, SocketAddr::new(container, cport), crate::FlowState::Assured); 2]);
        // Idle flows expire, and the next datagram opens a new one.
        assert!(rig.no_flows_within(3000));
        clients[0].send_to(b"again", bound).unwrap();
        rig.other.clear();
        assert!(rig.run_until(5000, |r| !r.other.is_empty()));
        assert_eq!(parse_udp(&rig.other[0]).2, b"again");
        rig.engine.unpublish(id);
        assert!(rig.no_flows_within(3000));
    }
    let c = rig.engine.counters();
    assert_eq!((c.pub_udp_flows, c.pub_dropped, c.udp_open, c.drop_spoofed), (6, 0, 0, 0), "{c:?}");
    assert_eq!(c.pub_bytes_out, 8 * "answer 0.0".len() as u64);
}

#[test]
fn a_port_in_use_is_reported_with_its_holder() {
    let _g = serial();
    let rig = Rig::new(EngineLimits::default(), 1500, 1500);
    let (taken, port) = listen(false);
    let fwd = |id, proto, host: SocketAddr| PortForward {
        id,
        proto,
        host,
        net: NET,
        container: SocketAddr::new(IpAddr::V4(CLIENT4), 80),
        container_mac: CLIENT_MAC,
        splice: None,
    };
    let me = format!("pid {} (", std::process::id());
    match rig.engine.publish(fwd(1, Proto::Tcp, taken.local_addr().unwrap())) {
        Err(PublishError::InUse { addr, proto: Proto::Tcp, holder }) => {
            assert_eq!(addr.port(), port);
            assert!(holder.as_deref().is_some_and(|h| h.starts_with(&me)), "{holder:?}");
        }
        r => panic!("{r:?}"),
    }
    // 0.0.0.0 takes 127.0.0.1's port too, and the error says so.
    let e = rig.engine.publish(fwd(1, Proto::Tcp, SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port))).unwrap_err();
    assert!(e.to_string().contains(&format!(":{port}/tcp is already in use by {me}")), "{e}");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    match rig.engine.publish(fwd(1, Proto::Udp, udp.local_addr().unwrap())) {
        Err(PublishError::InUse { proto: Proto::Udp, holder: Some(h), .. }) => assert!(h.starts_with(&me), "{h}"),
        r => panic!("{r:?}"),
    }
    // The same id twice.
    let bound = rig.engine.publish(fwd(2, Proto::Tcp, "127.0.0.1:0".parse().unwrap())).unwrap();
    assert!(matches!(rig.engine.publish(fwd(2, Proto::Tcp, "127.0.0.1:0".parse().unwrap())), Err(PublishError::Exists(2))));
    // Published once is in use for the next.
    assert!(matches!(rig.engine.publish(fwd(3, Proto::Tcp, bound)), Err(PublishError::InUse { .. })));
    // 0.0.0.0 and [::] are separate ports.
    let v4 = rig.engine.publish(fwd(4, Proto::Udp, "0.0.0.0:0".parse().unwrap())).unwrap();
    rig.engine.publish(fwd(5, Proto::Udp, SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), v4.port()))).unwrap();
    assert!(matches!(rig.engine.publish(fwd(6, Proto::Icmp, "127.0.0.1:0".parse().unwrap())), Err(PublishError::Io(_))));
    assert_eq!(rig.engine.published().iter().map(|(f, _)| f.id).collect::<Vec<_>>(), [2, 4, 5]);
    drop(taken);
}

#[test]
fn unpublish_closes_the_port_and_its_connections() {
    let _g = serial();
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    let before = open_fds();
    let hs: Vec<_> = (0..2).map(|_| rig.serve(80)).collect();
    let bound = publish_tcp(&rig, 7, "127.0.0.1:0", IpAddr::V4(CLIENT4), 80);
    let clients: Vec<_> = (0..2).map(|_| TcpStream::connect(bound).unwrap()).collect();
    assert!(rig.run_until(5000, |r| hs.iter().all(|&h| r.state(h) == tcp::State::Established)));
    assert_eq!(rig.engine.flows().len(), 2);
    // The listener, the engine's two connections, our two clients.
    assert_eq!(open_fds(), before + 5);
    rig.engine.unpublish(7);
    assert!(rig.engine.published().is_empty());
    assert!(rig.no_flows_within(2000));
    assert!(rig.run_until(2000, |_| open_fds() == before + 2), "{} open, {} before", open_fds(), before);
    for mut s in clients {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(s.read(&mut [0u8; 10]).map_err(|e| e.kind()), Err(std::io::ErrorKind::ConnectionReset));
    }
    // The container's ends were reset too.
    assert!(rig.run_until(5000, |r| hs.iter().all(|&h| r.state(h) == tcp::State::Closed)));
    assert_eq!(TcpStream::connect(bound).map_err(|e| e.kind()).unwrap_err(), std::io::ErrorKind::ConnectionRefused);
    let c = rig.engine.counters();
    assert_eq!((c.pub_ports, c.tcp_open), (0, 0), "{c:?}");
    // Unknown ids are nothing.
    rig.engine.unpublish(7);
}

#[test]
fn per_source_limit_counts_published_flows_of_the_container() {
    let _g = serial();
    let limits = EngineLimits { per_source: 1, ..EngineLimits::default() };
    let mut rig = Rig::new(limits, 1500, 1500);
    let h = rig.serve(80);
    let bound = publish_tcp(&rig, 1, "127.0.0.1:0", IpAddr::V4(CLIENT4), 80);
    let _first = TcpStream::connect(bound).unwrap();
    assert!(rig.run_until(5000, |r| r.state(h) == tcp::State::Established));
    // A second client is turned away at once.
    let _h2 = rig.serve(80);
    let mut second = TcpStream::connect(bound).unwrap();
    second.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(second.read(&mut [0u8; 10]).map_err(|e| e.kind()), Err(std::io::ErrorKind::ConnectionReset));
    // And so is the container's own new flow.
    let (l, port) = listen(false);
    let out = rig.connect(false, port, 44000);
    assert!(rig.run_until(5000, |r| r.state(out) == tcp::State::Closed));
    drop(l);
    let c = rig.engine.counters();
    assert_eq!((c.drop_flow_table_full, c.pub_dropped, c.tcp_open), (2, 1, 1), "{c:?}");
}

#[test]
fn a_container_reaches_its_own_published_port_through_the_host() {
    let _g = serial();
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    let server = rig.serve(80);
    let bound = publish_tcp(&rig, 1, "127.0.0.1:0", IpAddr::V4(CLIENT4), 80);
    // The container connects to the gateway (the host's loopback) at the published port: the
    // engine's own connection reaches its own listener, and comes back to the container.
    let client = rig.connect(false, bound.port(), 45000);
    let mut got = Vec::new();
    let mut asked = false;
    assert!(rig.run_until(10_000, |r| {
        if !asked && r.state(client) == tcp::State::Established && r.state(server) == tcp::State::Established {
            r.sock(client).send_slice(b"hello me").unwrap();
            asked = true;
        }
        let mut q = Vec::new();
        r.read(server, &mut q);
        if q == b"hello me" {
            r.sock(server).send_slice(b"hello you").unwrap();
        }
        r.read(client, &mut got);
        got == b"hello you"
    }));
    let peer = rig.sock(server).remote_endpoint().unwrap();
    assert_eq!(IpAddr::from(peer.addr), IpAddr::V4(GW4));
    let c = rig.engine.counters();
    assert_eq!((c.tcp_opened, c.pub_tcp_opened, c.tcp_open), (1, 1, 2), "{c:?}");
}

#[test]
fn without_host_loopback_new_tcp_to_the_gateway_is_reset() {
    let _g = serial();
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    rig.engine.set_networks(networks(false, 1500));
    let (l, port) = listen(false);
    let h = rig.connect(false, port, 46000);
    assert!(rig.run_until(5000, |r| r.state(h) == tcp::State::Closed));
    let c = rig.engine.counters();
    assert_eq!((c.drop_denied, c.tcp_open), (1, 0), "{c:?}");
    drop(l);
}

/// The rig's network, its flows leaving from these addresses.
fn outbound(v4: Option<&str>, v6: Option<&str>) -> HashMap<NetId, EngineNet> {
    let mut nets = networks(true, 1500);
    let n = nets.get_mut(&NET).unwrap();
    n.outbound4 = v4.map(|a| a.parse().unwrap());
    n.outbound6 = v6.map(|a| a.parse().unwrap());
    nets
}

/// Serves `nets` from the next frame on: the engine takes requests in order, so once it listed
/// its flows it has the new networks (frames already queued may otherwise beat them).
fn set_networks_now(rig: &Rig, nets: HashMap<NetId, EngineNet>) {
    rig.engine.set_networks(nets);
    rig.engine.flows();
}

/// A TCP connection from the container to the host's loopback through the gateway: the address
/// the host's server saw it come from.
fn tcp_peer(rig: &mut Rig, v6: bool, local_port: u16) -> IpAddr {
    let (l, port) = listen(v6);
    let host = std::thread::spawn(move || {
        let (mut s, peer) = l.accept().unwrap();
        s.write_all(b"seen").unwrap();
        peer.ip()
    });
    let h = rig.connect(v6, port, local_port);
    let mut got = Vec::new();
    let done = rig.run_until(5000, |r| {
        r.read(h, &mut got);
        got == b"seen"
    });
    assert!(done, "{:?}", rig.engine.counters());
    rig.sock(h).close();
    host.join().unwrap()
}

/// A UDP datagram from the container to the host's loopback through the gateway, answered: the
/// address the host's socket saw it come from.
fn udp_peer(rig: &mut Rig, v6: bool, container_port: u16) -> IpAddr {
    let s = UdpSocket::bind(if v6 { "[::1]:0" } else { "127.0.0.1:0" }).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (client, gw) = if v6 { (IpAddr::V6(CLIENT6), IpAddr::V6(GW6)) } else { (IpAddr::V4(CLIENT4), IpAddr::V4(GW4)) };
    let src = SocketAddr::new(client, container_port);
    let dst = SocketAddr::new(gw, s.local_addr().unwrap().port());
    rig.other.clear();
    rig.mem.push(NET, udp_frame(src, dst, b"who"));
    let mut b = [0u8; 16];
    let (n, peer) = s.recv_from(&mut b).unwrap_or_else(|e| panic!("{e}: {:?}", rig.engine.counters()));
    assert_eq!(&b[..n], b"who");
    s.send_to(b"you", peer).unwrap();
    assert!(rig.run_until(5000, |r| !r.other.is_empty()));
    assert_eq!(parse_udp(&rig.other[0]), (dst, src, b"you".to_vec()));
    peer.ip()
}

#[test]
fn flows_leave_from_the_networks_outbound_address() {
    let _g = serial();
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    // Without one, the kernel picks (the loopback's own).
    assert_eq!(tcp_peer(&mut rig, false, 47000), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(udp_peer(&mut rig, false, 47000), IpAddr::V4(Ipv4Addr::LOCALHOST));
    // Linux routes all of 127/8 on lo, so these are the host's and reach 127.0.0.1.
    for (i, a) in ["127.0.0.2", "127.0.0.3"].into_iter().enumerate() {
        set_networks_now(&rig, outbound(Some(a), None));
        let want: IpAddr = a.parse().unwrap();
        assert_eq!(tcp_peer(&mut rig, false, 47001 + i as u16), want);
        assert_eq!(udp_peer(&mut rig, false, 47001 + i as u16), want);
        // The other family is left alone.
        assert_eq!(udp_peer(&mut rig, true, 47001 + i as u16), IpAddr::V6(Ipv6Addr::LOCALHOST));
    }
    // ::1 is the one IPv6 loopback address: bound to it, flows still work.
    set_networks_now(&rig, outbound(Some("127.0.0.2"), Some("::1")));
    assert_eq!(tcp_peer(&mut rig, true, 47010), IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(udp_peer(&mut rig, true, 47010), IpAddr::V6(Ipv6Addr::LOCALHOST));
    // ICMP echo sockets are bound too, and their replies still find them.
    let data = pattern(32, 13);
    let replies = rig.exchange(echo_frame(IpAddr::V4(CLIENT4), IpAddr::V4(GW4), 0x4242, 1, &data), 1, 3000);
    let c = rig.engine.counters();
    if c.drop_ping_not_permitted == 0 {
        assert_eq!(replies.len(), 1, "{c:?}");
        assert_eq!(addrs(&replies[0]), (IpAddr::V4(GW4), IpAddr::V4(CLIENT4)));
    }
    assert_eq!((c.tcp_connect_failed, c.drop_host_socket_failed), (0, 0), "{c:?}");
    assert!(rig.engine.running());
}

/// Whether `a` is an address of this host (a socket can be bound to it).
fn local(a: &str) -> bool {
    UdpSocket::bind(SocketAddr::new(a.parse().unwrap(), 0)).is_ok()
}

#[test]
fn the_hosts_loopback_is_reached_whatever_the_outbound_address() {
    let _g = serial();
    if local("192.0.2.1") || local("2001:db8::1") {
        eprintln!("SKIPPED the_hosts_loopback_is_reached_whatever_the_outbound_address: 192.0.2.1 or 2001:db8::1 is this host's");
        return;
    }
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    set_networks_now(&rig, outbound(Some("192.0.2.1"), Some("2001:db8::1")));
    assert_eq!(tcp_peer(&mut rig, false, 47100), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(udp_peer(&mut rig, false, 47100), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(tcp_peer(&mut rig, true, 47101), IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(udp_peer(&mut rig, true, 47101), IpAddr::V6(Ipv6Addr::LOCALHOST));
    let c = rig.engine.counters();
    assert_eq!((c.tcp_connect_failed, c.drop_host_socket_failed), (0, 0), "{c:?}");
}

#[test]
fn an_outbound_address_the_host_lacks_refuses_flows_and_counts_them() {
    let _g = serial();
    // Binding to an address the host lacks fails before anything is sent; if it is the host's
    // (or ip_nonlocal_bind is on), this test would send to the world, and `bind_source` stops it.
    if local("192.0.2.1") || local("2001:db8::1") {
        eprintln!("SKIPPED an_outbound_address_the_host_lacks_refuses_flows_and_counts_them: 192.0.2.1 or 2001:db8::1 binds here");
        return;
    }
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    set_networks_now(&rig, outbound(Some("192.0.2.1"), Some("2001:db8::1")));
    for (i, (client, world)) in [(IpAddr::V4(CLIENT4), "198.51.100.7"), (IpAddr::V6(CLIENT6), "2001:db8:1::7")].into_iter().enumerate() {
        let world: IpAddr = world.parse().unwrap();
        let before = rig.engine.counters();
        // TCP: reset, as a failed connect is.
        let h = rig.connect_to(SocketAddr::new(world, 80), 47200 + i as u16);
        assert!(rig.run_until(5000, |r| r.state(h) == tcp::State::Closed), "{:?}", rig.engine.counters());
        let c = rig.engine.counters();
        assert_eq!((c.tcp_connect_failed - before.tcp_connect_failed, c.tcp_opened, c.tcp_open), (1, 0, 0), "{c:?}");
        // UDP and ICMP echo: dropped, as when their socket cannot be made.
        let dst = SocketAddr::new(world, 53);
        assert!(rig.exchange(udp_frame(SocketAddr::new(client, 5353), dst, b"q"), 1, 300).is_empty());
        assert!(rig.exchange(echo_frame(client, world, 7, 1, b"ping"), 1, 300).is_empty());
        let c = rig.engine.counters();
        let icmp = u64::from(c.drop_ping_not_permitted == before.drop_ping_not_permitted);
        assert_eq!(c.drop_host_socket_failed - before.drop_host_socket_failed, 1 + icmp, "{c:?}");
        assert_eq!((c.udp_flows, c.icmp_flows, c.udp_open, c.icmp_open), (0, 0, 0, 0), "{c:?}");
    }
    assert!(rig.engine.flows().is_empty());
    assert!(rig.engine.running());
}

#[test]
fn outbound_sources_keep_to_their_family_and_leave_the_loopback_alone() {
    let nets = outbound(Some("192.0.2.1"), Some("2001:db8::1"));
    let n = &nets[&NET];
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(outbound_source(n, ip("198.51.100.7")), Some(ip("192.0.2.1")));
    assert_eq!(outbound_source(n, ip("2001:db8:1::7")), Some(ip("2001:db8::1")));
    assert_eq!(outbound_source(n, ip("127.0.0.1")), None);
    assert_eq!(outbound_source(n, ip("::1")), None);
    let nets = outbound(Some("127.0.0.2"), None);
    let n = &nets[&NET];
    assert_eq!(outbound_source(n, ip("127.0.0.1")), Some(ip("127.0.0.2")));
    assert_eq!(outbound_source(n, ip("::1")), None);
    assert_eq!(outbound_source(&networks(true, 1500)[&NET], ip("198.51.100.7")), None);
}

const ALIAS4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 2);
const ALIAS6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 2, 1);

/// The rig's network with host aliases (pasta's `--map-guest-addr`) and without host-loopback:
/// 169.254.1.2 and fe80::2:1 stand for the host, here its loopback (tests reach nothing else;
/// a real one maps to the host's own address).
fn aliased() -> HashMap<NetId, EngineNet> {
    let mut nets = networks(false, 1500);
    let n = nets.get_mut(&NET).unwrap();
    n.host_alias4 = Some((ALIAS4, Ipv4Addr::LOCALHOST));
    n.host_alias6 = Some((ALIAS6, Ipv6Addr::LOCALHOST));
    nets
}

#[test]
fn tcp_and_udp_to_the_host_alias_reach_the_host_and_come_back_from_the_alias() {
    let _g = serial();
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    set_networks_now(&rig, aliased());
    for (i, (client, alias)) in
        [(IpAddr::V4(CLIENT4), IpAddr::V4(ALIAS4)), (IpAddr::V6(CLIENT6), IpAddr::V6(ALIAS6))].into_iter().enumerate()
    {
        let (l, port) = listen(alias.is_ipv6());
        let host = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"host here").unwrap();
            let mut b = [0u8; 5];
            s.read_exact(&mut b).unwrap();
            b
        });
        let h = rig.connect_to(SocketAddr::new(alias, port), 48000 + i as u16);
        let mut got = Vec::new();
        let heard = rig.run_until(5000, |r| {
            r.read(h, &mut got);
            got == b"host here"
        });
        assert!(heard, "{alias}: {:?}", rig.engine.counters());
        // smoltcp takes segments only from the address it connected to.
        assert_eq!(IpAddr::from(rig.sock(h).remote_endpoint().unwrap().addr), alias);
        assert_eq!(rig.sock(h).send_slice(b"hello"), Ok(5));
        assert!(rig.run_until(5000, |_| host.is_finished()), "{alias}");
        assert_eq!(&host.join().unwrap(), b"hello");
        rig.sock(h).close();

        let (server, t, stop) = udp_echo_server(alias.is_ipv6());
        let src = SocketAddr::new(client, 5355);
        let dst = SocketAddr::new(alias, server.port());
        let replies = rig.exchange(udp_frame(src, dst, b"ping"), 1, 5000);
        assert_eq!(replies.len(), 1, "{alias}: {:?}", rig.engine.counters());
        assert_eq!(parse_udp(&replies[0]), (dst, src, b"echo:ping".to_vec()), "from the alias");
        let tracked = rig.engine.flows().iter().any(|f| (f.row.proto, f.row.src, f.row.dst) == (Proto::Udp, src, dst));
        assert!(tracked, "tracked as the container sent it: {:?}", rig.engine.flows());
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
    }
    let c = rig.engine.counters();
    assert_eq!((c.tcp_opened, c.udp_flows, c.drop_denied), (2, 2, 0), "{c:?}");
}

#[test]
fn the_host_alias_is_mapped_whatever_host_loopback_says_and_only_there() {
    let nets = aliased();
    let n = &nets[&NET];
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(host_address(n, ip("169.254.1.2")), Some(ip("127.0.0.1")));
    assert_eq!(host_address(n, ip("fe80::2:1")), Some(ip("::1")));
    assert_eq!(host_address(n, IpAddr::V4(GW4)), None, "the gateway's address still needs host-loopback");
    assert_eq!(host_address(n, IpAddr::V6(GW6)), None);
    let with_loopback = EngineNet { host_loopback: true, ..n.clone() };
    assert_eq!(host_address(&with_loopback, IpAddr::V4(GW4)), Some(ip("127.0.0.1")));
    assert_eq!(host_address(&with_loopback, ip("169.254.1.2")), Some(ip("127.0.0.1")));
    // Without aliases, the alias's address is an address like any other (past the test filter:
    // it is not loopback, so a test may not go there).
    assert_eq!(host_address(&networks(true, 1500)[&NET], ip("169.254.1.2")), None);
}

#[test]
fn published_ports_splice_loopback_clients_into_the_namespace() {
    let _g = serial();
    let before = open_fds();
    // This process's own namespace stands for the container's: the splice's socket connects to
    // its loopback, where the "container's" server listens.
    let ns = match NsSockets::open(std::path::Path::new("/proc/self/ns/net"), None) {
        Ok(ns) => Arc::new(ns),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            eprintln!("SKIPPED published_ports_splice_loopback_clients_into_the_namespace: entering a network namespace needs root ({e})");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    let (l, port) = listen(false);
    let fwd = PortForward {
        id: 1,
        proto: Proto::Tcp,
        host: "127.0.0.1:0".parse().unwrap(),
        net: NET,
        container: SocketAddr::new(IpAddr::V4(CLIENT4), port),
        container_mac: CLIENT_MAC,
        splice: Some(Splice { ns: ns.clone(), to: SpliceTo::Loopback }),
    };
    let published = rig.engine.publish(fwd).unwrap();
    // Several pipefuls each way, the client half-closing first: both arrive whole.
    let (up, down) = (pattern(5 << 20, 3), pattern(3 << 20, 4));
    let server = host_fnv_reader(l, down.clone());
    let (_, got, sum) = published_client(published, up.clone()).join().unwrap();
    assert_eq!((got, sum), (down.len(), fnv(&down)));
    assert_eq!(server.join().unwrap(), (up.len(), fnv(&up)));
    let c = rig.engine.counters();
    assert_eq!(
        (c.pub_spliced, c.pub_tcp_opened, c.frames_out, c.pub_bytes_in, c.pub_bytes_out),
        (1, 1, 0, up.len() as u64, down.len() as u64)
    );
    assert!(rig.no_flows_within(3000), "{:?}", rig.engine.flows());
    assert_eq!(rig.engine.counters().splice_open, 0);
    // A published UDP port's loopback client: its own socket inside, answers from the published one.
    let (echo, t, stop) = udp_echo_server(false);
    let ufwd = PortForward {
        id: 9,
        proto: Proto::Udp,
        host: "127.0.0.1:0".parse().unwrap(),
        container: SocketAddr::new(IpAddr::V4(CLIENT4), echo.port()),
        ..rig.engine.published()[0].0.clone()
    };
    let up = rig.engine.publish(ufwd).unwrap();
    let cl = UdpSocket::bind("127.0.0.1:0").unwrap();
    cl.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    for i in 0..2 {
        cl.send_to(format!("u{i}").as_bytes(), up).unwrap();
        let mut b = [0u8; 64];
        let (k, from) = cl.recv_from(&mut b).unwrap();
        assert_eq!((&b[..k], from), (format!("echo:u{i}").as_bytes(), up));
    }
    let c = rig.engine.counters();
    assert_eq!((c.pub_spliced, c.pub_udp_flows, c.frames_out), (2, 1, 0), "one flow for the client, nothing framed");
    assert!(rig.engine.unpublish(9));
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    drop(cl);
    // Nothing listens there any more: the client is reset, not left waiting.
    let mut s = TcpStream::connect(published).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let r = s.read(&mut [0u8; 1]);
    assert!(matches!(&r, Err(e) if e.kind() == io::ErrorKind::ConnectionReset), "{r:?}");
    assert_eq!(rig.engine.counters().pub_tcp_refused, 1);
    // An open spliced connection is a flow: listed, and a flush resets both of its sockets.
    let (l, _) = listen(false);
    let fwd2 = PortForward {
        id: 2,
        host: "127.0.0.1:0".parse().unwrap(),
        container: SocketAddr::new(IpAddr::V4(CLIENT4), l.local_addr().unwrap().port()),
        ..rig.engine.published()[0].0.clone()
    };
    let p2 = rig.engine.publish(fwd2).unwrap();
    let mut held = TcpStream::connect(p2).unwrap();
    let (inside, _) = l.accept().unwrap();
    let flows = rig.engine.flows();
    assert!(flows.len() == 1 && flows[0].row.src == held.local_addr().unwrap(), "{flows:?}");
    rig.engine.flush();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(held.read(&mut [0u8; 1]).is_err(), "the client is reset");
    inside.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!((&inside).read(&mut [0u8; 1]).is_err(), "the namespace side is reset");
    drop((held, inside, s, l));
    assert!(rig.engine.unpublish(1) && rig.engine.unpublish(2));
    drop((rig, ns));
    assert_eq!(open_fds(), before);
}

#[test]
fn relays_carry_tcp_and_udp_from_the_namespace_to_the_host() {
    let _g = serial();
    let before = open_fds();
    let ns = match NsSockets::open(std::path::Path::new("/proc/self/ns/net"), None) {
        Ok(ns) => ns,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            eprintln!("SKIPPED relays_carry_tcp_and_udp_from_the_namespace_to_the_host: entering a network namespace needs root ({e})");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    // TCP: a listener made "inside" relays to a host server; both halves and their closing pass.
    let (l, port) = listen(false);
    let relay_l = ns.listener("127.0.0.1:0".parse().unwrap()).unwrap();
    let at = relay_l.local_addr().unwrap();
    let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    rig.engine.relay(Relay { id: 1, net: NET, sock: RelaySock::Tcp(relay_l), to }).unwrap();
    let (up, down) = (pattern(3 << 20, 5), pattern(2 << 20, 6));
    let server = host_fnv_reader(l, down.clone());
    let (_, got, sum) = published_client(at, up.clone()).join().unwrap();
    assert_eq!((got, sum), (down.len(), fnv(&down)));
    assert_eq!(server.join().unwrap(), (up.len(), fnv(&up)));
    // UDP: each client its own flow, answers back from the relay's socket.
    let (echo, t, stop) = udp_echo_server(false);
    let relay_u = ns.udp("127.0.0.1:0".parse().unwrap()).unwrap();
    let uat = relay_u.local_addr().unwrap();
    rig.engine.relay(Relay { id: 2, net: NET, sock: RelaySock::Udp(relay_u), to: echo }).unwrap();
    let clients: Vec<UdpSocket> = (0..2).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    for (i, cl) in clients.iter().enumerate() {
        cl.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        cl.send_to(format!("hi{i}").as_bytes(), uat).unwrap();
        let mut b = [0u8; 64];
        let (n, from) = cl.recv_from(&mut b).unwrap();
        assert_eq!((&b[..n], from), (format!("echo:hi{i}").as_bytes(), uat));
    }
    // Two relays to one destination: removing one leaves the other's connections alone.
    let (l2, port2) = listen(false);
    let to2 = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port2);
    let (ra, rb) = (ns.listener("127.0.0.1:0".parse().unwrap()).unwrap(), ns.listener("127.0.0.1:0".parse().unwrap()).unwrap());
    let (aa, ab) = (ra.local_addr().unwrap(), rb.local_addr().unwrap());
    rig.engine.relay(Relay { id: 3, net: NET, sock: RelaySock::Tcp(ra), to: to2 }).unwrap();
    rig.engine.relay(Relay { id: 4, net: NET, sock: RelaySock::Tcp(rb), to: to2 }).unwrap();
    let mut kept = TcpStream::connect(ab).unwrap();
    let (mut kept_in, _) = l2.accept().unwrap();
    let doomed = TcpStream::connect(aa).unwrap();
    let (doomed_in, _) = l2.accept().unwrap();
    rig.engine.unrelay(3);
    doomed_in.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!((&doomed_in).read(&mut [0u8; 1]).is_err(), "the removed relay's connection is reset");
    kept.write_all(b"still").unwrap();
    let mut got = [0u8; 5];
    kept_in.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    kept_in.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still", "the other relay's connection carries on");
    rig.engine.unrelay(4);
    drop((kept, kept_in, doomed, doomed_in, l2));
    let c = rig.engine.counters();
    assert_eq!((c.relayed, c.udp_flows, c.pub_spliced), (3, 2, 0));
    assert_eq!(
        rig.engine.flows().iter().filter(|f| f.row.proto == Proto::Udp).count(),
        2,
        "the UDP clients' flows: {:?}",
        rig.engine.flows()
    );
    rig.engine.unrelay(1);
    rig.engine.unrelay(2);
    assert!(rig.no_flows_within(3000), "{:?}", rig.engine.flows());
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    drop((rig, ns, clients));
    assert_eq!(open_fds(), before);
}

#[test]
fn udp_to_a_closed_port_comes_back_as_port_unreachable() {
    let _g = serial();
    let mut rig = Rig::new(EngineLimits::default(), 1500, 1500);
    for v6 in [false, true] {
        let closed = UdpSocket::bind(if v6 { "[::1]:0" } else { "127.0.0.1:0" }).unwrap().local_addr().unwrap().port();
        let (client, gw) = if v6 { (IpAddr::V6(CLIENT6), IpAddr::V6(GW6)) } else { (IpAddr::V4(CLIENT4), IpAddr::V4(GW4)) };
        let (src, dst) = (SocketAddr::new(client, 5353), SocketAddr::new(gw, closed));
        let replies = rig.exchange(udp_frame(src, dst, b"anyone?"), 1, 5000);
        assert_eq!(replies.len(), 1, "{:?}", rig.engine.counters());
        let ip = &replies[0];
        let (from, to, icmp) = addrs_and_l4(ip);
        assert_eq!((from, to), (gw, client), "from the address the container sent to");
        if v6 {
            let p = Icmpv6Packet::new_checked(icmp).unwrap();
            assert!(p.verify_checksum(&GW6, &CLIENT6));
            assert_eq!((icmp[0], icmp[1]), (1, 4), "ICMPv6 port unreachable");
        } else {
            assert!(Icmpv4Packet::new_checked(icmp).unwrap().verify_checksum());
            assert_eq!((icmp[0], icmp[1]), (3, 3), "ICMP port unreachable");
        }
        // The quote: the container's datagram, as its kernel matches it to the socket.
        let q = &icmp[8..];
        let (qsrc, qdst, udp) = addrs_and_l4(q);
        assert_eq!((qsrc, qdst), (client, gw));
        assert_eq!((be(udp, 0), be(udp, 2)), (5353, closed));
        assert!(rig.engine.counters().udp_unreachable >= 1);
    }
}

fn be(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// An IP packet's source, destination and what follows its (fixed) header.
fn addrs_and_l4(ip: &[u8]) -> (IpAddr, IpAddr, &[u8]) {
    if ip[0] >> 4 == 6 {
        let a = |at: usize| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&ip[at..at + 16]).unwrap()));
        (a(8), a(24), &ip[40..])
    } else {
        let a = |at: usize| IpAddr::V4(Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]));
        (a(12), a(16), &ip[20..])
    }
}
