//! What the fuzz targets share: an Internet checksum written apart from the crates under test,
//! a checksum fix-up that carries mutated frames past the parsers' checksum checks, a reader
//! that verifies every checksum of a reply, and a fixed-capacity lease store.
//!
//! Nothing here allocates per input: buffers are set up once and reused.

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use vswitch_router::LeaseStore;
use vswitch_switch::Mac;

pub const ETH_HDR_LEN: usize = 14;
pub const VNET_HDR_LEN: usize = 10;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
const PROTO_ICMP: u8 = 1;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;

pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub fn ethertype(eth: &[u8]) -> Option<u16> {
    (eth.len() >= ETH_HDR_LEN).then(|| be16(eth, 12))
}

pub fn mac_at(b: &[u8], at: usize) -> Mac {
    Mac::from_slice(&b[at..at + 6])
}

/// RFC 1071 one's-complement sum over `parts`, as if they were one message.
fn sum_parts(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    let mut odd: Option<u8> = None;
    for p in parts {
        for &b in *p {
            match odd.take() {
                Some(hi) => sum += u64::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u64::from(hi) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // Folded to 16 bits above.
    !(sum as u16)
}

fn pseudo4(src: &[u8], dst: &[u8], proto: u8, len: u16) -> [u8; 12] {
    let l = len.to_be_bytes();
    [src[0], src[1], src[2], src[3], dst[0], dst[1], dst[2], dst[3], 0, proto, l[0], l[1]]
}

fn pseudo6(src: &[u8], dst: &[u8], next: u8, len: u32) -> [u8; 40] {
    let mut p = [0u8; 40];
    p[0..16].copy_from_slice(&src[..16]);
    p[16..32].copy_from_slice(&dst[..16]);
    p[32..36].copy_from_slice(&len.to_be_bytes());
    p[39] = next;
    p
}

/// Rewrites every checksum of a bare Ethernet frame that a receiver would check (the IPv4
/// header; ICMP; ICMPv6; UDP over IPv4 when non-zero, UDP over IPv6 always) wherever the
/// lengths in the headers leave it in place; the rest of the frame is left as it is. Returns
/// whether a byte changed. Fuzzed frames rarely carry a right checksum, and every parser here
/// stops at a wrong one: the targets run each input as given and once more fixed up.
pub fn fix_checksums(eth: &mut [u8]) -> bool {
    let Some(t) = ethertype(eth) else { return false };
    let ip = &mut eth[ETH_HDR_LEN..];
    let mut changed = false;
    let mut set = |b: &mut [u8], at: usize, v: u16| {
        let v = v.to_be_bytes();
        if b[at..at + 2] != v {
            b[at..at + 2].copy_from_slice(&v);
            changed = true;
        }
    };
    match t {
        ETHERTYPE_IPV4 => {
            if ip.len() < 20 {
                return false;
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ihl < 20 || ihl > ip.len() {
                return false;
            }
            let mut h = [0u8; 60];
            h[..ihl].copy_from_slice(&ip[..ihl]);
            h[10..12].fill(0);
            set(ip, 10, sum_parts(&[&h[..ihl]]));
            let total = usize::from(be16(ip, 2));
            if total < ihl || total > ip.len() {
                return changed;
            }
            let (src, dst) = ([ip[12], ip[13], ip[14], ip[15]], [ip[16], ip[17], ip[18], ip[19]]);
            let proto = ip[9];
            let l4 = &mut ip[ihl..total];
            match proto {
                PROTO_ICMP if l4.len() >= 4 => {
                    let (a, b) = (l4[2], l4[3]);
                    l4[2..4].fill(0);
                    let c = sum_parts(&[l4]);
                    l4[2..4].copy_from_slice(&[a, b]);
                    set(l4, 2, c);
                }
                PROTO_UDP if l4.len() >= 8 && l4[6..8] != [0, 0] => {
                    let ulen = usize::from(be16(l4, 4));
                    if (8..=l4.len()).contains(&ulen) {
                        let u = &mut l4[..ulen];
                        let (a, b) = (u[6], u[7]);
                        u[6..8].fill(0);
                        // `ulen` came from a u16.
                        let c = match sum_parts(&[&pseudo4(&src, &dst, PROTO_UDP, ulen as u16), u]) {
                            0 => 0xffff,
                            c => c,
                        };
                        u[6..8].copy_from_slice(&[a, b]);
                        set(u, 6, c);
                    }
                }
                _ => {}
            }
        }
        ETHERTYPE_IPV6 => {
            if ip.len() < 40 {
                return false;
            }
            let plen = usize::from(be16(ip, 4));
            if 40 + plen > ip.len() {
                return false;
            }
            let mut addrs = [0u8; 32];
            addrs.copy_from_slice(&ip[8..40]);
            let next = ip[6];
            let payload = &mut ip[40..40 + plen];
            match next {
                PROTO_ICMPV6 if plen >= 4 => {
                    let (a, b) = (payload[2], payload[3]);
                    payload[2..4].fill(0);
                    let c = sum_parts(&[&pseudo6(&addrs[..16], &addrs[16..], next, plen as u32), payload]);
                    payload[2..4].copy_from_slice(&[a, b]);
                    set(payload, 2, c);
                }
                PROTO_UDP if plen >= 8 => {
                    let ulen = usize::from(be16(payload, 4));
                    if (8..=plen).contains(&ulen) {
                        let u = &mut payload[..ulen];
                        let (a, b) = (u[6], u[7]);
                        u[6..8].fill(0);
                        let c = match sum_parts(&[&pseudo6(&addrs[..16], &addrs[16..], next, ulen as u32), u]) {
                            0 => 0xffff,
                            c => c,
                        };
                        u[6..8].copy_from_slice(&[a, b]);
                        set(u, 6, c);
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
    changed
}

/// Checks a frame the code under test wrote (a reply, an ICMP error, a resolution request):
/// its IP length covers exactly the rest of the frame (no padding, nothing cut), and every
/// checksum verifies. Err names what is wrong.
pub fn check_reply(frame: &[u8]) -> Result<(), &'static str> {
    let t = ethertype(frame).ok_or("shorter than an Ethernet header")?;
    let ip = &frame[ETH_HDR_LEN..];
    match t {
        ETHERTYPE_ARP => {
            if ip.len() != 28 {
                return Err("ARP packet is not 28 bytes");
            }
        }
        ETHERTYPE_IPV4 => {
            if ip.len() < 20 || ip[0] != 0x45 {
                return Err("IPv4 header is not a plain 20-byte one");
            }
            if usize::from(be16(ip, 2)) != ip.len() {
                return Err("IPv4 total length is not the frame's");
            }
            if sum_parts(&[&ip[..20]]) != 0 {
                return Err("IPv4 header checksum");
            }
            let l4 = &ip[20..];
            match ip[9] {
                PROTO_ICMP if l4.len() < 8 || sum_parts(&[l4]) != 0 => return Err("ICMP checksum"),
                PROTO_UDP => {
                    if l4.len() < 8 || usize::from(be16(l4, 4)) != l4.len() {
                        return Err("UDP length is not the datagram's");
                    }
                    // `l4` is shorter than the IPv4 total length, a u16.
                    if l4[6..8] != [0, 0] && sum_parts(&[&pseudo4(&ip[12..16], &ip[16..20], PROTO_UDP, l4.len() as u16), l4]) != 0 {
                        return Err("UDP checksum (IPv4)");
                    }
                }
                _ => {}
            }
        }
        ETHERTYPE_IPV6 => {
            if ip.len() < 40 || ip[0] >> 4 != 6 {
                return Err("IPv6 header");
            }
            if 40 + usize::from(be16(ip, 4)) != ip.len() {
                return Err("IPv6 payload length is not the frame's");
            }
            let payload = &ip[40..];
            let pseudo = pseudo6(&ip[8..24], &ip[24..40], ip[6], payload.len() as u32);
            match ip[6] {
                PROTO_ICMPV6 if payload.len() < 4 || sum_parts(&[&pseudo, payload]) != 0 => return Err("ICMPv6 checksum"),
                PROTO_UDP => {
                    if payload.len() < 8 || usize::from(be16(payload, 4)) != payload.len() {
                        return Err("UDP length is not the payload's");
                    }
                    if payload[6..8] == [0, 0] || sum_parts(&[&pseudo, payload]) != 0 {
                        return Err("UDP checksum (IPv6)");
                    }
                }
                _ => {}
            }
        }
        _ => return Err("not ARP, IPv4 or IPv6"),
    }
    Ok(())
}

/// Copies `data` into `buf` (reusing its capacity) and returns the copy.
pub fn copy_into<'b>(buf: &'b mut Vec<u8>, data: &[u8]) -> &'b mut [u8] {
    buf.clear();
    buf.extend_from_slice(data);
    buf.as_mut_slice()
}

/// The longest lease key: a DHCPv4 client identifier (option 61) holds 255 bytes.
const KEY_MAX: usize = 255;

#[derive(Debug, Clone, Copy)]
struct Slot<A> {
    key: [u8; KEY_MAX],
    key_len: usize,
    lease: Option<(A, u64)>,
}

/// A lease store of fixed capacity that behaves as the control plane's should, and checks
/// what the server asks of it: it commits only addresses `may_commit` accepts (the server must
/// filter what the store proposes), with an expiry not in the past, for a non-empty key and a
/// unicast MAC. Its `offer` returns a requested address as it is, inside the pool or not, so
/// the server's own filtering is what is tested.
#[derive(Debug)]
pub struct FixedLeases<A: Copy + PartialEq + std::fmt::Debug> {
    slots: Vec<Slot<A>>,
    template: Vec<Slot<A>>,
    pool: Vec<A>,
    declined: [Option<A>; 4],
    declined_next: usize,
    may_commit: fn(A) -> bool,
    now: u64,
    /// Commits since the last [`FixedLeases::reset`].
    pub commits: usize,
}

impl<A: Copy + PartialEq + std::fmt::Debug> FixedLeases<A> {
    /// `capacity` leases over `pool`; `may_commit` says which addresses the server may commit.
    pub fn new(capacity: usize, pool: Vec<A>, may_commit: fn(A) -> bool) -> Self {
        let empty = Slot { key: [0; KEY_MAX], key_len: 0, lease: None };
        FixedLeases {
            slots: vec![empty; capacity],
            template: vec![empty; capacity],
            pool,
            declined: [None; 4],
            declined_next: 0,
            may_commit,
            now: 0,
            commits: 0,
        }
    }

    /// Records a lease that every [`FixedLeases::reset`] restores.
    pub fn preset(&mut self, client: &[u8], addr: A, expires_at_secs: u64) {
        let slot = self.template.iter_mut().find(|s| s.lease.is_none()).expect("preset beyond capacity");
        slot.key[..client.len()].copy_from_slice(client);
        slot.key_len = client.len();
        slot.lease = Some((addr, expires_at_secs));
    }

    /// Back to the preset leases, at time `now` (so that every input sees the same store).
    pub fn reset(&mut self, now: u64) {
        self.slots.copy_from_slice(&self.template);
        self.declined = [None; 4];
        self.declined_next = 0;
        self.now = now;
        self.commits = 0;
    }

    fn find(&self, client: &[u8]) -> Option<usize> {
        self.slots.iter().position(|s| s.lease.is_some() && &s.key[..s.key_len] == client)
    }

    fn taken(&self, a: A, by: &[u8]) -> bool {
        self.declined.contains(&Some(a)) || self.slots.iter().any(|s| s.lease.is_some_and(|(l, _)| l == a) && &s.key[..s.key_len] != by)
    }

    fn check_key(client: &[u8], mac: Option<Mac>) {
        assert!(!client.is_empty() && client.len() <= KEY_MAX, "lease key of {} bytes", client.len());
        if let Some(mac) = mac {
            assert!(!mac.is_multicast(), "lease for the group MAC {mac}");
        }
    }
}

impl<A: Copy + PartialEq + std::fmt::Debug> LeaseStore<A> for FixedLeases<A> {
    fn offer(&mut self, client: &[u8], mac: Mac, requested: Option<A>) -> Option<A> {
        Self::check_key(client, Some(mac));
        if let Some(i) = self.find(client) {
            return self.slots[i].lease.map(|(a, _)| a);
        }
        if let Some(r) = requested.filter(|r| !self.taken(*r, client)) {
            return Some(r);
        }
        self.pool.iter().copied().find(|a| !self.taken(*a, client))
    }

    fn commit(&mut self, client: &[u8], mac: Mac, addr: A, expires_at_secs: u64) -> bool {
        Self::check_key(client, Some(mac));
        assert!((self.may_commit)(addr), "the server committed {addr:?}, an address it may not give out");
        assert!(expires_at_secs >= self.now, "a lease that expired before it was given");
        if self.taken(addr, client) {
            return false;
        }
        let i = match self.find(client) {
            Some(i) => i,
            None => match self.slots.iter().position(|s| s.lease.is_none()) {
                Some(i) => i,
                None => return false,
            },
        };
        let s = &mut self.slots[i];
        s.key[..client.len()].copy_from_slice(client);
        s.key_len = client.len();
        s.lease = Some((addr, expires_at_secs));
        self.commits += 1;
        true
    }

    fn release(&mut self, client: &[u8], addr: A) {
        Self::check_key(client, None);
        if let Some(i) = self.find(client) {
            if self.slots[i].lease.is_some_and(|(a, _)| a == addr) {
                self.slots[i].lease = None;
            }
        }
    }

    fn decline(&mut self, client: &[u8], addr: A) {
        self.release(client, addr);
        self.declined[self.declined_next] = Some(addr);
        self.declined_next = (self.declined_next + 1) % self.declined.len();
    }

    fn lookup(&self, client: &[u8]) -> Option<(A, u64)> {
        Self::check_key(client, None);
        self.find(client).and_then(|i| self.slots[i].lease)
    }
}

/// `a` inside `net/len`.
pub fn v4_in(a: Ipv4Addr, net: Ipv4Addr, len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    a.to_bits() & mask == net.to_bits() & mask
}

/// `a` inside `net/len`.
pub fn v6_in(a: Ipv6Addr, net: Ipv6Addr, len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    a.to_bits() & mask == net.to_bits() & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_rfc1071_example() {
        assert_eq!(sum_parts(&[&[0x00, 0x01, 0xf2], &[0x03, 0xf4, 0xf5, 0xf6, 0xf7]]), 0x220d);
    }
}
