//! What the fuzz targets reach of the slirp engine (feature `fuzzing`): the parser of the frames containers send, and the builders of the frames it answers with, no socket involved.

use std::net::SocketAddr;

use vswitch_switch::Mac;

use super::frame::{self, Dest, Unreachable, Via, FRONT, IPV6_HDR_LEN, MAX_IP, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use super::udp_datagrams;

/// Parses `wire` (`[virtio_net_hdr][Ethernet frame]`) as the engine parses a container's frame,
/// and for a packet it takes builds what the engine could answer at `mtu` (clamped as the
/// engine clamps a network's): a UDP reply carrying each datagram's payload back and a port
/// unreachable for it, an echo reply to an echo request; a TCP SYN's MSS option is read and
/// clamped in a copy. Each frame built goes to `out` (`[virtio_net_hdr][Ethernet][IP]`,
/// fragments included). `buf` and `scratch` are reused across calls. Returns whether the
/// parser took the frame.
pub fn answers(wire: &[u8], mtu: usize, buf: &mut Vec<u8>, scratch: &mut Vec<u8>, out: &mut dyn FnMut(&[u8])) -> bool {
    let Ok(pkt) = frame::parse(wire) else { return false };
    buf.resize(FRONT + MAX_IP, 0);
    let dest = Dest { via: Via::Mac(1), mac: pkt.src_mac, gw_mac: Mac([0x02, 0, 0, 0, 0, 0x01]), mtu: mtu.clamp(576, MAX_IP) };
    let l4 = pkt.l4;
    match pkt.proto {
        PROTO_UDP if l4.len() >= 8 => {
            let (sport, dport) = (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]));
            for seg in udp_datagrams(&pkt) {
                let n = seg.len().min(MAX_IP - IPV6_HDR_LEN - 8);
                buf[FRONT..FRONT + n].copy_from_slice(&seg[..n]);
                frame::write_udp(buf, n, pkt.dst, pkt.src, dport, sport);
                frame::emit(buf, n, scratch, &dest, pkt.dst, pkt.src, PROTO_UDP, 1, out);
            }
            let (from, to) = (SocketAddr::new(pkt.src, sport), SocketAddr::new(pkt.dst, dport));
            let len = frame::write_udp_unreachable(buf, Unreachable::Port, from, to);
            let proto = if pkt.dst.is_ipv6() { PROTO_ICMPV6 } else { PROTO_ICMP };
            frame::emit(buf, len, scratch, &dest, pkt.dst, pkt.src, proto, 2, out);
        }
        PROTO_ICMP | PROTO_ICMPV6 if l4.len() >= 8 && l4[0] == if pkt.src.is_ipv6() { 128 } else { 8 } => {
            let (id, seq) = (u16::from_be_bytes([l4[4], l4[5]]), u16::from_be_bytes([l4[6], l4[7]]));
            let n = (l4.len() - 8).min(MAX_IP - IPV6_HDR_LEN - 8);
            buf[FRONT..FRONT + n].copy_from_slice(&l4[8..8 + n]);
            frame::write_echo_reply(buf, n, pkt.dst, pkt.src, id, seq);
            frame::emit(buf, n, scratch, &dest, pkt.dst, pkt.src, pkt.proto, 3, out);
        }
        PROTO_TCP => {
            scratch.clear();
            scratch.extend_from_slice(l4);
            frame::tcp_mss(scratch, Some(1400));
        }
        _ => {}
    }
    true
}
