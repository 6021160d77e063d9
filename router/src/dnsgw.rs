//! DNS at the gateway's addresses: UDP datagrams to port 53 unwrapped from their frames and the
//! answers wrapped back, and the interface of the DNS service that answers them.
//!
//! The service itself (names, scoping, forwarding, the cache) lives in the control plane; here
//! is only what the slow path needs to hand it queries and send its answers, over UDP (this
//! module) and TCP ([`crate::TcpGateway`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use vswitch_switch::{Mac, NetId, PortId};

use crate::answer::{mac_at, write_eth, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HDR_LEN};
use crate::checksum;
use crate::tcpgw::ConnId;

pub const DNS_PORT: u16 = 53;
const IPPROTO_UDP: u8 = 17;
const UDP_HDR_LEN: usize = 8;
const IPV4_HDR_LEN: usize = 20;
const IPV6_HDR_LEN: usize = 40;

/// Who asked, and how the answer goes back to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DnsClient {
    pub net: NetId,
    /// The port the query came in on, where the answer leaves.
    pub port: PortId,
    pub mac: Mac,
    /// The querier's address and port.
    pub addr: SocketAddr,
    /// The address it asked, the gateway's own or its DNS address (the answer's source).
    pub server: IpAddr,
    /// The TCP connection the query came on; None for UDP.
    pub tcp: Option<ConnId>,
}

/// What the service did with a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsAction {
    /// The answer is in `out`: send it now.
    Reply,
    /// The answer comes later, through [`DnsService::drain_completed`].
    Pending,
    /// No answer at all (not a query, or refused without a word).
    Drop,
}

/// The embedded DNS server, called on the slow-path thread: it must answer or defer at once,
/// never wait on the network.
pub trait DnsService: Send + Sync + std::fmt::Debug {
    /// Whether network `net` has a DNS server at its gateway.
    fn serves(&self, net: NetId) -> bool;
    /// Handles one query (a DNS message; over TCP without its length prefix). An answer for
    /// UDP must already fit the client's limit and the network's MTU.
    fn query(&self, client: &DnsClient, msg: &[u8], out: &mut Vec<u8>) -> DnsAction;
    /// Answers that completed since the last call (forwarded queries), each with its client.
    fn drain_completed(&self, f: &mut dyn FnMut(&DnsClient, &[u8]));
}

/// A UDP datagram to the gateway's DNS port, as found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpQuery<'a> {
    pub src_mac: Mac,
    pub client: SocketAddr,
    /// The address the query was sent to.
    pub server: IpAddr,
    pub payload: &'a [u8],
}

/// What a frame is to the DNS server at the addresses given to [`parse_udp_query`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpParse<'a> {
    Query(UdpQuery<'a>),
    /// UDP to our DNS port, but cut short, inconsistent or with a bad checksum.
    Malformed,
    /// Not UDP to port 53 of these addresses.
    NotDns,
}

/// Finds a DNS query over UDP addressed to one of the addresses in `v4` or `v6` (the gateway's
/// own and its DNS address; None entries match nothing) in a bare Ethernet frame; the query's
/// `server` is the address it was sent to, where the answer must come from. Fragments and
/// IPv6 extension headers are not DNS queries a container sends to its gateway.
pub fn parse_udp_query<'a>(eth: &'a [u8], v4: &[Option<Ipv4Addr>], v6: &[Option<Ipv6Addr>]) -> UdpParse<'a> {
    if eth.len() < ETH_HDR_LEN {
        return UdpParse::NotDns;
    }
    let src_mac = mac_at(eth, 6);
    let ip = &eth[ETH_HDR_LEN..];
    let (client_ip, server, udp, pseudo) = match u16::from_be_bytes([eth[12], eth[13]]) {
        ETHERTYPE_IPV4 => {
            let Some(h) = ip.first_chunk::<IPV4_HDR_LEN>() else { return UdpParse::NotDns };
            let gw = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
            if h[0] >> 4 != 4 || h[9] != IPPROTO_UDP || !v4.contains(&Some(gw)) {
                return UdpParse::NotDns;
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
            if ihl < IPV4_HDR_LEN || total < ihl + UDP_HDR_LEN || total > ip.len() || frag != 0 || checksum::of(&ip[..ihl]) != 0 {
                return if frag != 0 { UdpParse::NotDns } else { UdpParse::Malformed };
            }
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let udp = &ip[ihl..total];
            let pseudo = checksum::add(checksum::add(0, &ip[12..20]), &[0, IPPROTO_UDP]) + udp.len() as u64;
            (IpAddr::V4(src), IpAddr::V4(gw), udp, pseudo)
        }
        ETHERTYPE_IPV6 => {
            let Some(h) = ip.first_chunk::<IPV6_HDR_LEN>() else { return UdpParse::NotDns };
            let mut dst = [0u8; 16];
            dst.copy_from_slice(&h[24..40]);
            let gw = Ipv6Addr::from(dst);
            if h[0] >> 4 != 6 || h[6] != IPPROTO_UDP || !v6.contains(&Some(gw)) {
                return UdpParse::NotDns;
            }
            let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if len < UDP_HDR_LEN || IPV6_HDR_LEN + len > ip.len() {
                return UdpParse::Malformed;
            }
            let mut src = [0u8; 16];
            src.copy_from_slice(&ip[8..24]);
            let udp = &ip[IPV6_HDR_LEN..IPV6_HDR_LEN + len];
            let pseudo = checksum::pseudo_v6(&src, &gw.octets(), len as u32, IPPROTO_UDP);
            (IpAddr::V6(Ipv6Addr::from(src)), IpAddr::V6(gw), udp, pseudo)
        }
        _ => return UdpParse::NotDns,
    };
    if u16::from_be_bytes([udp[2], udp[3]]) != DNS_PORT {
        return UdpParse::NotDns;
    }
    let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if ulen < UDP_HDR_LEN || ulen > udp.len() {
        return UdpParse::Malformed;
    }
    let udp = &udp[..ulen];
    let sum = u16::from_be_bytes([udp[6], udp[7]]);
    // IPv4 may leave the checksum out (zero); IPv6 may not (RFC 8200 §8.1).
    let checked = !(sum == 0 && client_ip.is_ipv4());
    if checked && checksum::finish(checksum::add(pseudo, udp)) != 0 {
        return UdpParse::Malformed;
    }
    let sport = u16::from_be_bytes([udp[0], udp[1]]);
    UdpParse::Query(UdpQuery { src_mac, client: SocketAddr::new(client_ip, sport), server, payload: &udp[UDP_HDR_LEN..] })
}

/// Writes the frame that carries `payload` from `server`:53 to `client`, from the gateway's
/// MAC `gw` to `to`, into `out` (cleared first). None if the addresses are of different families
/// or the datagram would exceed the 64 KiB an IP packet can hold.
pub fn write_udp_reply(out: &mut Vec<u8>, gw: Mac, to: Mac, server: IpAddr, client: SocketAddr, payload: &[u8]) -> Option<()> {
    out.clear();
    let ulen = u16::try_from(UDP_HDR_LEN + payload.len()).ok()?;
    let mut udp = [0u8; UDP_HDR_LEN];
    udp[0..2].copy_from_slice(&DNS_PORT.to_be_bytes());
    udp[2..4].copy_from_slice(&client.port().to_be_bytes());
    udp[4..6].copy_from_slice(&ulen.to_be_bytes());
    let mut eth = [0u8; ETH_HDR_LEN];
    let pseudo = match (server, client.ip()) {
        (IpAddr::V4(s), IpAddr::V4(c)) => {
            let total = u16::try_from(IPV4_HDR_LEN + usize::from(ulen)).ok()?;
            write_eth(&mut eth, to, gw, ETHERTYPE_IPV4);
            out.extend_from_slice(&eth);
            let mut ip = [0u8; IPV4_HDR_LEN];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip[6] = 0x40; // DF: answers are sized to the path, never fragmented
            ip[8] = 64;
            ip[9] = IPPROTO_UDP;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&c.octets());
            let c = checksum::of(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&ip);
            checksum::add(checksum::add(0, &ip[12..20]), &[0, IPPROTO_UDP]) + u64::from(ulen)
        }
        (IpAddr::V6(s), IpAddr::V6(c)) => {
            write_eth(&mut eth, to, gw, ETHERTYPE_IPV6);
            out.extend_from_slice(&eth);
            let mut ip = [0u8; IPV6_HDR_LEN];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&ulen.to_be_bytes());
            ip[6] = IPPROTO_UDP;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&c.octets());
            out.extend_from_slice(&ip);
            checksum::pseudo_v6(&s.octets(), &c.octets(), u32::from(ulen), IPPROTO_UDP)
        }
        _ => return None,
    };
    let sum = checksum::add(checksum::add(pseudo, &udp), payload);
    let c = match checksum::finish(sum) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    out.extend_from_slice(&udp);
    out.extend_from_slice(payload);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW_MAC: Mac = Mac([0x02, 0x56, 0, 0, 0, 1]);
    const CLIENT_MAC: Mac = Mac([0x02, 0x42, 10, 0, 0, 2]);

    fn gw4() -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, 1)
    }

    fn gw6() -> Ipv6Addr {
        "fd00::1".parse().unwrap()
    }

    /// A query frame from the client to the gateway, built by the reply writer with the roles
    /// swapped and the ports fixed up: the writer's output is checked independently below.
    fn query_frame(client: SocketAddr, server: IpAddr, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        // Written as gateway→client, then mirrored: swap MACs, addresses and ports.
        write_udp_reply(&mut f, CLIENT_MAC, GW_MAC, client.ip(), SocketAddr::new(server, 0), payload).unwrap();
        let udp_at = ETH_HDR_LEN + if server.is_ipv4() { IPV4_HDR_LEN } else { IPV6_HDR_LEN };
        f[udp_at..udp_at + 2].copy_from_slice(&client.port().to_be_bytes());
        f[udp_at + 2..udp_at + 4].copy_from_slice(&DNS_PORT.to_be_bytes());
        refresh_udp_checksum(&mut f);
        f
    }

    /// Both checksums verify, computed independently of the code under test's helpers.
    fn checksums_valid(f: &[u8]) -> bool {
        let mut g = f.to_vec();
        let udp_at = ETH_HDR_LEN + if f[12] == 0x08 { IPV4_HDR_LEN } else { IPV6_HDR_LEN };
        let stored = [f[udp_at + 6], f[udp_at + 7]];
        refresh_udp_checksum(&mut g);
        let mut want = [g[udp_at + 6], g[udp_at + 7]];
        if want == [0, 0] {
            want = [0xff, 0xff];
        }
        let ip_ok = f[12] != 0x08 || checksum::of(&f[ETH_HDR_LEN..ETH_HDR_LEN + IPV4_HDR_LEN]) == 0;
        ip_ok && stored == want
    }

    fn refresh_udp_checksum(f: &mut [u8]) {
        let v4 = f[12] == 0x08;
        let (udp_at, pseudo) = if v4 {
            let ip = &f[ETH_HDR_LEN..];
            let ulen = u16::from_be_bytes([ip[24], ip[25]]);
            (ETH_HDR_LEN + 20, checksum::add(checksum::add(0, &ip[12..20]), &[0, IPPROTO_UDP]) + u64::from(ulen))
        } else {
            let ip = &f[ETH_HDR_LEN..];
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&ip[8..24]);
            d.copy_from_slice(&ip[24..40]);
            let len = u16::from_be_bytes([ip[4], ip[5]]);
            (ETH_HDR_LEN + 40, checksum::pseudo_v6(&s, &d, u32::from(len), IPPROTO_UDP))
        };
        f[udp_at + 6..udp_at + 8].fill(0);
        let c = checksum::finish(checksum::add(pseudo, &f[udp_at..]));
        f[udp_at + 6..udp_at + 8].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn finds_v4_and_v6_queries_and_writes_valid_replies() {
        for (client, server) in [
            (SocketAddr::new(Ipv4Addr::new(10, 0, 0, 2).into(), 40000), IpAddr::V4(gw4())),
            (SocketAddr::new("fd00::2".parse::<Ipv6Addr>().unwrap().into(), 40001), IpAddr::V6(gw6())),
        ] {
            let q = query_frame(client, server, b"question");
            assert!(checksums_valid(&q));
            let UdpParse::Query(got) = parse_udp_query(&q, &[Some(gw4())], &[Some(gw6())]) else { panic!("{q:02x?}") };
            assert_eq!(got, UdpQuery { src_mac: CLIENT_MAC, client, server, payload: b"question" });
            let mut r = Vec::new();
            write_udp_reply(&mut r, GW_MAC, CLIENT_MAC, server, client, b"the answer").unwrap();
            assert!(checksums_valid(&r), "{r:02x?}");
            assert_eq!(&r[0..6], &CLIENT_MAC.0);
            assert_eq!(&r[6..12], &GW_MAC.0);
            assert!(r.ends_with(b"the answer"));
            // The reply is not itself a query to the gateway.
            assert_eq!(parse_udp_query(&r, &[Some(gw4())], &[Some(gw6())]), UdpParse::NotDns);
        }
    }

    #[test]
    fn a_query_to_a_second_address_names_that_address_as_its_server() {
        let dns4 = Ipv4Addr::new(10, 0, 0, 3);
        let dns6: Ipv6Addr = "fd00::3".parse().unwrap();
        for (client, server) in [
            (SocketAddr::new(Ipv4Addr::new(10, 0, 0, 2).into(), 40000), IpAddr::V4(dns4)),
            (SocketAddr::new("fd00::2".parse::<Ipv6Addr>().unwrap().into(), 40001), IpAddr::V6(dns6)),
        ] {
            let q = query_frame(client, server, b"question");
            let UdpParse::Query(got) = parse_udp_query(&q, &[Some(gw4()), Some(dns4)], &[Some(gw6()), Some(dns6)]) else { panic!() };
            assert_eq!(got.server, server, "the answer must come from where the query went");
            assert!(matches!(parse_udp_query(&q, &[None, Some(dns4)], &[None, Some(dns6)]), UdpParse::Query(_)));
            assert_eq!(parse_udp_query(&q, &[Some(gw4()), None], &[Some(gw6()), None]), UdpParse::NotDns);
        }
    }

    #[test]
    fn other_addresses_ports_and_broken_frames() {
        let client = SocketAddr::new(Ipv4Addr::new(10, 0, 0, 2).into(), 40000);
        let q = query_frame(client, IpAddr::V4(gw4()), b"question");
        assert_eq!(parse_udp_query(&q, &[Some(Ipv4Addr::new(10, 0, 0, 9))], &[]), UdpParse::NotDns, "another address");
        assert_eq!(parse_udp_query(&q, &[], &[Some(gw6())]), UdpParse::NotDns, "no IPv4 gateway");
        let mut other_port = q.clone();
        other_port[ETH_HDR_LEN + 20 + 3] = 54;
        refresh_udp_checksum(&mut other_port);
        assert_eq!(parse_udp_query(&other_port, &[Some(gw4())], &[]), UdpParse::NotDns);
        let mut bad_sum = q.clone();
        *bad_sum.last_mut().unwrap() ^= 1;
        assert_eq!(parse_udp_query(&bad_sum, &[Some(gw4())], &[]), UdpParse::Malformed);
        let mut no_sum = bad_sum.clone();
        no_sum[ETH_HDR_LEN + 26..ETH_HDR_LEN + 28].fill(0);
        assert!(matches!(parse_udp_query(&no_sum, &[Some(gw4())], &[]), UdpParse::Query(_)), "IPv4 may omit the checksum");
        for len in 0..q.len() {
            // Never a panic; a cut frame is never taken for a query.
            assert!(!matches!(parse_udp_query(&q[..len], &[Some(gw4())], &[]), UdpParse::Query(_)), "{len}");
        }
        let mut fragment = q.clone();
        fragment[ETH_HDR_LEN + 6] |= 0x20;
        assert_eq!(parse_udp_query(&fragment, &[Some(gw4())], &[]), UdpParse::NotDns);
        let mut r = Vec::new();
        assert!(write_udp_reply(&mut r, GW_MAC, CLIENT_MAC, IpAddr::V6(gw6()), client, b"x").is_none(), "mixed families");
        assert!(write_udp_reply(&mut r, GW_MAC, CLIENT_MAC, IpAddr::V4(gw4()), client, &vec![0; 65530]).is_none());
    }
}
