//! Frames in and out of the slirp engine: parsing `[virtio_net_hdr][Ethernet][IP][L4]`, checksums, and building replies (fragmented when over the MTU).
//!
//! Parsing checks everything the engine relies on before any byte is trusted (lengths,
//! versions, the IPv4 header checksum, the transport checksum unless the virtio-net header says
//! it is partial), so that nothing later indexes out of bounds and every refusal has a reason.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use vswitch_switch::packet::VNET_HDR_LEN;
use vswitch_switch::{Mac, NetId, PortId};

use super::{add, Counters, FrameIo};

pub(crate) const ETH_HDR_LEN: usize = 14;
pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
pub(crate) const ETHERTYPE_IPV6: u16 = 0x86dd;
pub(crate) const IPV4_HDR_LEN: usize = 20;
pub(crate) const IPV6_HDR_LEN: usize = 40;
pub(crate) const PROTO_ICMP: u8 = 1;
pub(crate) const PROTO_TCP: u8 = 6;
pub(crate) const PROTO_UDP: u8 = 17;
pub(crate) const PROTO_ICMPV6: u8 = 58;
const PROTO_FRAGMENT: u8 = 44;

/// virtio_net_hdr flag: the transport checksum is partial (the sender's kernel left it to be completed).
pub(crate) const VNET_F_NEEDS_CSUM: u8 = 1;
pub(crate) const GSO_NONE: u8 = 0;
pub(crate) const GSO_TCPV4: u8 = 1;
pub(crate) const GSO_UDP: u8 = 3;
pub(crate) const GSO_TCPV6: u8 = 4;
pub(crate) const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

/// Bytes in front of an IP packet in a frame we send: the virtio-net header and Ethernet.
pub(crate) const FRAME_HDRS: usize = VNET_HDR_LEN + ETH_HDR_LEN;
/// Room kept in front of a reply's payload for every header (IPv6 + an 8-byte UDP or ICMP header).
pub(crate) const FRONT: usize = FRAME_HDRS + IPV6_HDR_LEN + 8;
/// The largest IP packet (without jumbograms).
pub(crate) const MAX_IP: usize = 65535;

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    Malformed,
    Checksum,
    Unsupported,
}

/// The virtio-net header fields the engine reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Vnet {
    pub(crate) flags: u8,
    pub(crate) gso_type: u8,
    pub(crate) gso_size: u16,
}

impl Vnet {
    pub(crate) fn needs_csum(&self) -> bool {
        self.flags & VNET_F_NEEDS_CSUM != 0
    }
}

/// A checked IP packet from a container.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Packet<'a> {
    pub(crate) vnet: Vnet,
    pub(crate) src_mac: Mac,
    /// The IP packet, without Ethernet header or padding.
    pub(crate) ip: &'a [u8],
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    pub(crate) proto: u8,
    /// The transport header and payload.
    pub(crate) l4: &'a [u8],
}

fn mac_at(b: &[u8], at: usize) -> Mac {
    Mac([b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5]])
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Parses and checks `[vnet hdr][Ethernet][IP]...` as it came off the uplink ring.
pub(crate) fn parse(wire: &[u8]) -> Result<Packet<'_>, Reject> {
    use Reject::*;
    if wire.len() < FRAME_HDRS {
        return Err(Malformed);
    }
    let vnet = Vnet { flags: wire[0], gso_type: wire[1] & !GSO_ECN, gso_size: u16::from_le_bytes([wire[4], wire[5]]) };
    if !matches!(vnet.gso_type, GSO_NONE | GSO_TCPV4 | GSO_UDP | GSO_TCPV6 | GSO_UDP_L4)
        || (vnet.gso_type != GSO_NONE && vnet.gso_size == 0)
    {
        return Err(Malformed);
    }
    let eth = &wire[VNET_HDR_LEN..];
    let src_mac = mac_at(eth, 6);
    let body = &eth[ETH_HDR_LEN..];
    let (ip, src, dst, proto, l4) = match be16(eth, 12) {
        ETHERTYPE_IPV4 => {
            let h = body.get(..IPV4_HDR_LEN).ok_or(Malformed)?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            let total = usize::from(be16(h, 2));
            if h[0] >> 4 != 4 || ihl < IPV4_HDR_LEN || total < ihl || total > body.len() {
                return Err(Malformed);
            }
            if fold(sum(&body[..ihl], 0)) != 0xffff {
                return Err(Checksum);
            }
            // More fragments, or an offset: reassembly is not done here.
            if be16(h, 6) & 0x3fff != 0 {
                return Err(Unsupported);
            }
            let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
            let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
            (&body[..total], IpAddr::V4(src), IpAddr::V4(dst), h[9], &body[ihl..total])
        }
        ETHERTYPE_IPV6 => {
            let h = body.get(..IPV6_HDR_LEN).ok_or(Malformed)?;
            let plen = usize::from(be16(h, 4));
            if h[0] >> 4 != 6 || IPV6_HDR_LEN + plen > body.len() {
                return Err(Malformed);
            }
            let mut a = [0u8; 16];
            a.copy_from_slice(&h[8..24]);
            let src = Ipv6Addr::from(a);
            a.copy_from_slice(&h[24..40]);
            let dst = Ipv6Addr::from(a);
            // Extension headers are not followed: nothing the engine carries needs them.
            (&body[..IPV6_HDR_LEN + plen], IpAddr::V6(src), IpAddr::V6(dst), h[6], &body[IPV6_HDR_LEN..IPV6_HDR_LEN + plen])
        }
        _ => return Err(Unsupported),
    };
    let v6 = src.is_ipv6();
    match (vnet.gso_type, proto) {
        (GSO_NONE, _) => {}
        (GSO_TCPV4, PROTO_TCP) if !v6 => {}
        (GSO_TCPV6, PROTO_TCP) if v6 => {}
        (GSO_UDP | GSO_UDP_L4, PROTO_UDP) => {}
        _ => return Err(Malformed),
    }
    match proto {
        PROTO_TCP => {
            let doff = usize::from(*l4.get(12).ok_or(Malformed)? >> 4) * 4;
            if l4.len() < 20 || doff < 20 || doff > l4.len() || be16(l4, 0) == 0 || be16(l4, 2) == 0 {
                return Err(Malformed);
            }
        }
        PROTO_UDP => {
            if l4.len() < 8 || be16(l4, 0) == 0 || be16(l4, 2) == 0 {
                return Err(Malformed);
            }
            // A GSO datagram's length field may describe the first segment only.
            if vnet.gso_type == GSO_NONE && usize::from(be16(l4, 4)) != l4.len() {
                return Err(Malformed);
            }
        }
        PROTO_ICMP | PROTO_ICMPV6 if l4.len() < 8 => return Err(Malformed),
        PROTO_ICMP if v6 => return Err(Unsupported),
        PROTO_ICMPV6 if !v6 => return Err(Unsupported),
        PROTO_ICMP | PROTO_ICMPV6 => {}
        _ => return Err(Unsupported),
    }
    if !vnet.needs_csum() && !l4_checksum_ok(src, dst, proto, l4) {
        return Err(Checksum);
    }
    Ok(Packet { vnet, src_mac, ip, src, dst, proto, l4 })
}

fn l4_checksum_ok(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> bool {
    let acc = match proto {
        PROTO_ICMP => 0,
        PROTO_UDP if src.is_ipv4() && be16(l4, 6) == 0 => return true,
        _ => pseudo(src, dst, proto, l4.len()),
    };
    fold(sum(l4, acc)) == 0xffff
}

/// Adds `data` to a one's-complement sum (RFC 1071), 32 bits at a time into 64.
pub(crate) fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc + u64::from(u32::from_be_bytes(tail))
}

/// Folds a sum to 16 bits (not complemented).
pub(crate) fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The pseudo-header's sum for a transport segment of `len` bytes.
pub(crate) fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u64 {
    let addrs = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum(&d.octets(), sum(&s.octets(), 0)),
        (IpAddr::V6(s), IpAddr::V6(d)) => sum(&d.octets(), sum(&s.octets(), 0)),
        // Never mixed: both come from one header.
        _ => 0,
    };
    addrs + u64::from(proto) + len as u64
}

/// How frames reach a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// Through the port its frames came from (the flows it opened).
    Port(PortId),
    /// To its MAC in this network, through whichever port the switch learned it on: a published
    /// port's flow starts before the container sent anything.
    Mac(NetId),
}

/// Where to send frames to a container, and from which MAC.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dest {
    pub(crate) via: Via,
    pub(crate) mac: Mac,
    pub(crate) gw_mac: Mac,
    pub(crate) mtu: usize,
}

impl Dest {
    /// Hands a frame to `io` toward the container, without waiting; false if it could not go.
    pub(crate) fn send(&self, io: &dyn FrameIo, wire: &[u8]) -> bool {
        match self.via {
            Via::Port(port) => io.transmit(port, wire),
            Via::Mac(net) => io.transmit_to(net, self.mac, wire),
        }
    }
}

/// Writes a zeroed virtio-net header and the Ethernet header at the start of `f`.
pub(crate) fn write_link(f: &mut [u8], d: &Dest, v6: bool) {
    f[..VNET_HDR_LEN].fill(0);
    let e = &mut f[VNET_HDR_LEN..FRAME_HDRS];
    e[..6].copy_from_slice(&d.mac.0);
    e[6..12].copy_from_slice(&d.gw_mac.0);
    e[12..14].copy_from_slice(&if v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 }.to_be_bytes());
}

/// Writes an IP header of `hdr.len()` bytes (20 or 40) for `plen` payload bytes.
fn write_ip(hdr: &mut [u8], src: IpAddr, dst: IpAddr, proto: u8, plen: usize, ident: u32, frag: u16) {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            hdr[0] = 0x45;
            hdr[1] = 0;
            hdr[2..4].copy_from_slice(&((IPV4_HDR_LEN + plen) as u16).to_be_bytes());
            hdr[4..6].copy_from_slice(&(ident as u16).to_be_bytes());
            hdr[6..8].copy_from_slice(&frag.to_be_bytes());
            hdr[8] = 64;
            hdr[9] = proto;
            hdr[10..12].fill(0);
            hdr[12..16].copy_from_slice(&s.octets());
            hdr[16..20].copy_from_slice(&d.octets());
            let c = !fold(sum(&hdr[..IPV4_HDR_LEN], 0));
            hdr[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            hdr[..4].copy_from_slice(&[0x60, 0, 0, 0]);
            hdr[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
            hdr[6] = proto;
            hdr[7] = 64;
            hdr[8..24].copy_from_slice(&s.octets());
            hdr[24..40].copy_from_slice(&d.octets());
        }
        _ => {}
    }
}

/// [`emit`] toward the container through `io`, counted: each frame sent (`frames_out`) or not
/// taken (`tx_failed`), and a segment too big for IP (`too_big`, and false).
#[allow(clippy::too_many_arguments)]
pub(crate) fn deliver(
    buf: &mut [u8],
    len: usize,
    scratch: &mut Vec<u8>,
    d: &Dest,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    ident: u32,
    io: &dyn FrameIo,
    c: &Counters,
) -> bool {
    let ok = emit(buf, len, scratch, d, src, dst, proto, ident, &mut |f| {
        add(if d.send(io, f) { &c.frames_out } else { &c.tx_failed }, 1);
    });
    if !ok {
        add(&c.too_big, 1);
    }
    ok
}

/// Builds reply frames around a transport segment that sits at `buf[FRONT - 8..FRONT + len]`
/// (its 8-byte UDP or ICMP header already written, checksum field included), and hands each
/// frame to `tx`: one frame when the packet fits the MTU, IP fragments otherwise. `scratch`
/// holds fragments. Returns false if the segment cannot be carried at all (too big for IP).
#[allow(clippy::too_many_arguments)]
pub(crate) fn emit(
    buf: &mut [u8],
    len: usize,
    scratch: &mut Vec<u8>,
    d: &Dest,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    ident: u32,
    tx: &mut dyn FnMut(&[u8]),
) -> bool {
    let v6 = src.is_ipv6();
    let ip_hdr = if v6 { IPV6_HDR_LEN } else { IPV4_HDR_LEN };
    let l4_len = 8 + len;
    if ip_hdr + l4_len > MAX_IP || buf.len() < FRONT + len {
        return false;
    }
    if ip_hdr + l4_len <= d.mtu {
        let start = FRONT - 8 - ip_hdr - FRAME_HDRS;
        write_link(&mut buf[start..], d, v6);
        write_ip(&mut buf[start + FRAME_HDRS..FRONT - 8], src, dst, proto, l4_len, ident, 0);
        tx(&buf[start..FRONT + len]);
        return true;
    }
    // Fragments: every one but the last carries a multiple of 8 bytes.
    let l4 = &buf[FRONT - 8..FRONT + len];
    let frag_hdr = if v6 { 8 } else { 0 };
    let per = (d.mtu.saturating_sub(ip_hdr + frag_hdr)) & !7;
    if per == 0 {
        return false;
    }
    let mut off = 0;
    while off < l4.len() {
        let n = per.min(l4.len() - off);
        let more = off + n < l4.len();
        scratch.clear();
        scratch.resize(FRAME_HDRS + ip_hdr + frag_hdr + n, 0);
        write_link(scratch, d, v6);
        let offset_field = (off / 8) as u16;
        if v6 {
            write_ip(&mut scratch[FRAME_HDRS..FRAME_HDRS + ip_hdr], src, dst, PROTO_FRAGMENT, frag_hdr + n, ident, 0);
            let fh = &mut scratch[FRAME_HDRS + ip_hdr..FRAME_HDRS + ip_hdr + 8];
            fh[0] = proto;
            fh[1] = 0;
            fh[2..4].copy_from_slice(&((offset_field << 3) | u16::from(more)).to_be_bytes());
            fh[4..8].copy_from_slice(&ident.to_be_bytes());
        } else {
            let flags = offset_field | if more { 0x2000 } else { 0 };
            write_ip(&mut scratch[FRAME_HDRS..FRAME_HDRS + ip_hdr], src, dst, proto, n, ident, flags);
        }
        scratch[FRAME_HDRS + ip_hdr + frag_hdr..].copy_from_slice(&l4[off..off + n]);
        tx(scratch);
        off += n;
    }
    true
}

/// Writes a UDP header in front of the `len` payload bytes at `buf[FRONT..]`, checksum included.
pub(crate) fn write_udp(buf: &mut [u8], len: usize, src: IpAddr, dst: IpAddr, sport: u16, dport: u16) {
    let h = &mut buf[FRONT - 8..FRONT];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&((8 + len).min(0xffff) as u16).to_be_bytes());
    h[6..8].fill(0);
    let mut c = !fold(sum(&buf[FRONT - 8..FRONT + len], pseudo(src, dst, PROTO_UDP, 8 + len)));
    if c == 0 {
        // Zero means "no checksum" for UDP.
        c = 0xffff;
    }
    buf[FRONT - 2..FRONT].copy_from_slice(&c.to_be_bytes());
}

/// Why a datagram of the container's could not be delivered, as an ICMP destination
/// unreachable tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreachable {
    Net,
    Host,
    Port,
}

impl Unreachable {
    /// What a host socket's error reports, when it is an ICMP error the host got.
    pub(crate) fn of(e: &std::io::Error) -> Option<Self> {
        match e.raw_os_error()? {
            libc::ECONNREFUSED => Some(Unreachable::Port),
            libc::EHOSTUNREACH => Some(Unreachable::Host),
            libc::ENETUNREACH => Some(Unreachable::Net),
            _ => None,
        }
    }

    /// (type, code) for ICMP or ICMPv6.
    fn type_code(self, v6: bool) -> (u8, u8) {
        match (v6, self) {
            (false, Unreachable::Net) => (3, 0),
            (false, Unreachable::Host) => (3, 1),
            (false, Unreachable::Port) => (3, 3),
            (true, Unreachable::Net) => (1, 0),
            (true, Unreachable::Host) => (1, 3),
            (true, Unreachable::Port) => (1, 4),
        }
    }
}

/// Writes an ICMP (ICMPv6) destination unreachable at `buf[FRONT - 8..]`, from `to` to `from`,
/// quoting a UDP datagram `from` → `to` (its IP and UDP headers, rebuilt: the engine keeps no
/// copy of what it sent, and the container's kernel finds its socket by these alone), checksum
/// included. Returns the length after the 8-byte ICMP header.
pub(crate) fn write_udp_unreachable(buf: &mut [u8], why: Unreachable, from: SocketAddr, to: SocketAddr) -> usize {
    let v6 = to.is_ipv6();
    let ip_hdr = if v6 { IPV6_HDR_LEN } else { IPV4_HDR_LEN };
    let q = &mut buf[FRONT..FRONT + ip_hdr + 8];
    write_ip(&mut q[..ip_hdr], from.ip(), to.ip(), PROTO_UDP, 8, 0, 0);
    q[ip_hdr..ip_hdr + 2].copy_from_slice(&from.port().to_be_bytes());
    q[ip_hdr + 2..ip_hdr + 4].copy_from_slice(&to.port().to_be_bytes());
    q[ip_hdr + 4..ip_hdr + 6].copy_from_slice(&8u16.to_be_bytes());
    q[ip_hdr + 6..ip_hdr + 8].fill(0);
    let (ty, code) = why.type_code(v6);
    let h = &mut buf[FRONT - 8..FRONT];
    h.copy_from_slice(&[ty, code, 0, 0, 0, 0, 0, 0]);
    let len = ip_hdr + 8;
    let acc = if v6 { pseudo(to.ip(), from.ip(), PROTO_ICMPV6, 8 + len) } else { 0 };
    let c = !fold(sum(&buf[FRONT - 8..FRONT + len], acc));
    buf[FRONT - 6..FRONT - 4].copy_from_slice(&c.to_be_bytes());
    len
}

/// Writes an echo reply header in front of the `len` data bytes at `buf[FRONT..]`, checksum included.
pub(crate) fn write_echo_reply(buf: &mut [u8], len: usize, src: IpAddr, dst: IpAddr, id: u16, seq: u16) {
    let v6 = src.is_ipv6();
    let h = &mut buf[FRONT - 8..FRONT];
    h[0] = if v6 { 129 } else { 0 };
    h[1] = 0;
    h[2..4].fill(0);
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[6..8].copy_from_slice(&seq.to_be_bytes());
    let acc = if v6 { pseudo(src, dst, PROTO_ICMPV6, 8 + len) } else { 0 };
    let c = !fold(sum(&buf[FRONT - 8..FRONT + len], acc));
    buf[FRONT - 6..FRONT - 4].copy_from_slice(&c.to_be_bytes());
}

/// Reads the MSS option of a TCP SYN (`tcp`: header onward), and overwrites it with `new` if
/// given. None if the SYN carries none.
pub(crate) fn tcp_mss(tcp: &mut [u8], new: Option<u16>) -> Option<u16> {
    let doff = usize::from(tcp.get(12)? >> 4) * 4;
    let opts = tcp.get_mut(20..doff)?;
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => return None,
            1 => i += 1,
            kind => {
                let len = usize::from(*opts.get(i + 1)?);
                if len < 2 || i + len > opts.len() {
                    return None;
                }
                if kind == 2 && len == 4 {
                    let mss = u16::from_be_bytes([opts[i + 2], opts[i + 3]]);
                    if let Some(n) = new {
                        opts[i + 2..i + 4].copy_from_slice(&n.to_be_bytes());
                    }
                    return Some(mss);
                }
                i += len;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to ddf2.
        assert_eq!(fold(sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7], 0)), 0xddf2);
        // Odd lengths pad with a zero byte.
        assert_eq!(fold(sum(&[0x01], 0)), 0x0100);
    }

    #[test]
    fn fragments_cover_the_datagram() {
        let d = Dest { via: Via::Port(1), mac: Mac([2, 0, 0, 0, 0, 2]), gw_mac: Mac([2, 0, 0, 0, 0, 1]), mtu: 1500 };
        for (src, dst) in [
            (IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
            (IpAddr::V6("2001:db8::1".parse().unwrap()), IpAddr::V6("fd00::2".parse().unwrap())),
        ] {
            let len = 4000;
            let mut buf = vec![0u8; FRONT + len];
            for (i, b) in buf[FRONT..].iter_mut().enumerate() {
                *b = i as u8;
            }
            write_udp(&mut buf, len, src, dst, 53, 40000);
            let mut frames = Vec::new();
            let mut scratch = Vec::new();
            assert!(emit(&mut buf, len, &mut scratch, &d, src, dst, PROTO_UDP, 7, &mut |f| frames.push(f.to_vec())));
            assert_eq!(frames.len(), 3);
            let mut whole = Vec::new();
            for f in &frames {
                assert!(f.len() - FRAME_HDRS <= 1500);
                let ip = &f[FRAME_HDRS..];
                if src.is_ipv4() {
                    assert_eq!(fold(sum(&ip[..20], 0)), 0xffff);
                    assert_eq!(usize::from(be16(ip, 6) & 0x1fff) * 8, whole.len());
                    whole.extend_from_slice(&ip[20..]);
                } else {
                    assert_eq!(ip[6], PROTO_FRAGMENT);
                    assert_eq!(usize::from(be16(ip, 42) >> 3) * 8, whole.len());
                    whole.extend_from_slice(&ip[48..]);
                }
            }
            assert_eq!(whole.len(), 8 + len);
            assert!(l4_checksum_ok(src, dst, PROTO_UDP, &whole));
            assert_eq!(&whole[8..], &buf[FRONT..]);
        }
    }
}
