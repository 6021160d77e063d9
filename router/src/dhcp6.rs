//! A minimal stateful DHCPv6 server (RFC 8415) for one network: addresses in IA_NA, DNS
//! configuration, sans-IO, leases kept by the caller's [`LeaseStore`].
//!
//! Theory of operation. Clients send from their link-local address and port 546 to
//! All_DHCP_Relay_Agents_and_Servers (ff02::1:2) port 547; [`Dhcp6Server::handle`] answers
//! unicast to that link-local address and MAC, from the gateway's EUI-64 link-local address
//! ([`crate::link_local_from_mac`], the same one the Router Advertisements come from):
//! - SOLICIT → ADVERTISE with the addresses [`LeaseStore::offer`] proposes, preference 255 so
//!   the client need not wait for other servers; or, when the client asked for Rapid Commit
//!   (and the configuration allows it), the leases committed and a REPLY;
//! - REQUEST, RENEW, REBIND → the leases committed ([`LeaseStore::commit`]) and a REPLY. The
//!   server is authoritative for its prefix: whatever the store gives the IA is returned, and any
//!   other address the client listed comes back with lifetimes 0 so that it stops using it;
//! - CONFIRM → Success or NotOnLink; RELEASE, DECLINE → the store is told, REPLY Success;
//! - INFORMATION-REQUEST → REPLY with DNS servers (option 23) and the domain list (option 24).
//!
//! Each IA_NA is its own lease: the store's key is the client's DUID followed by the IAID. The
//! server's DUID is a DUID-LL (type 3) of the gateway's MAC, stable across restarts. IA_TA and
//! IA_PD are not served (they are left out of replies); relayed messages are not served.
//! Addresses are /128s: the on-link prefix reaches hosts through Router Advertisements (set the
//! M flag there, and leave A off unless SLAAC should run too).

use std::net::Ipv6Addr;

use vswitch_switch::Mac;

use crate::answer::{write_eth, ETHERTYPE_IPV6, ETH_HDR_LEN};
use crate::dhcp::{encode_search_list, Cursor, DhcpAnswer, DhcpConfigError, LeaseStore};
use crate::ra::{
    is_link_local, link_local_from_mac, mask_v6, parse_frame6, upper_checksum, upper_checksum_ok, v6_at, write_ipv6_header, Frame6,
    IPV6_HDR_LEN,
};

/// The DHCPv6 reply [`Dhcp6Server::handle`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dhcp6Reply {
    Advertise,
    Reply,
}

/// What [`Dhcp6Server::handle`]'s answers say about the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcp6Config {
    /// The gateway's MAC: the replies' source, the server DUID, and (EUI-64) their source address.
    pub server_mac: Mac,
    /// The network's prefix: only addresses inside it are handed out or confirmed.
    pub prefix: Ipv6Addr,
    pub prefix_len: u8,
    /// DNS servers (option 23); left out when empty. At most 64.
    pub dns: Vec<Ipv6Addr>,
    /// Domain search list (option 24), at most 255 bytes encoded.
    pub search: Vec<String>,
    /// Preferred lifetime of the addresses; T1 and T2 are 0.5 and 0.8 of it (RFC 8415 §21.4).
    pub preferred_secs: u32,
    /// Valid lifetime of the addresses: the lease. `u32::MAX` is infinite.
    pub valid_secs: u32,
    /// Answer a SOLICIT carrying Rapid Commit with a REPLY that commits the lease at once.
    pub rapid_commit: bool,
}

impl Dhcp6Config {
    /// Addresses from `prefix/prefix_len`, preferred for an hour, valid for two, Rapid Commit
    /// allowed, no DNS configuration.
    pub fn new(server_mac: Mac, prefix: Ipv6Addr, prefix_len: u8) -> Self {
        Dhcp6Config {
            server_mac,
            prefix,
            prefix_len,
            dns: Vec::new(),
            search: Vec::new(),
            preferred_secs: 3600,
            valid_secs: 7200,
            rapid_commit: true,
        }
    }
}

/// A DHCPv6 server for one network: its configuration, checked and pre-encoded once.
#[derive(Debug, Clone)]
pub struct Dhcp6Server {
    cfg: Dhcp6Config,
    /// DUID-LL: type 3, hardware type 1 (Ethernet), the MAC (RFC 8415 §11.4).
    duid: [u8; DUID_LL_LEN],
    link_local: Ipv6Addr,
    search_wire: Vec<u8>,
}

const SERVER_PORT: u16 = 547;
const CLIENT_PORT: u16 = 546;
const UDP_HDR_LEN: usize = 8;
const NEXT_HEADER_UDP: u8 = 17;
const HOP_LIMIT: u8 = 64;
/// All_DHCP_Relay_Agents_and_Servers (RFC 8415 §7.1) and its Ethernet address.
const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
const ALL_SERVERS_MAC: Mac = Mac([0x33, 0x33, 0, 1, 0, 2]);
const DUID_LL_LEN: usize = 10;
/// A DUID is a 2-byte type and at most 128 bytes (RFC 8415 §11.1).
const DUID_MAX_LEN: usize = 130;
/// Message type and transaction id.
const MSG_HDR_LEN: usize = 4;
/// IAID, T1, T2: an IA_NA before its options.
const IA_NA_HDR_LEN: usize = 12;
/// Address, preferred and valid lifetimes: an IAADDR before its options.
const IAADDR_LEN: usize = 24;
/// Where the DHCPv6 message starts in a reply frame.
const REPLY_MSG_AT: usize = ETH_HDR_LEN + IPV6_HDR_LEN + UDP_HDR_LEN;

// Message types (RFC 8415 §7.3).
const SOLICIT: u8 = 1;
const ADVERTISE: u8 = 2;
const REQUEST: u8 = 3;
const CONFIRM: u8 = 4;
const RENEW: u8 = 5;
const REBIND: u8 = 6;
const REPLY: u8 = 7;
const RELEASE: u8 = 8;
const DECLINE: u8 = 9;
const INFORMATION_REQUEST: u8 = 11;

// Options (RFC 8415 §21, RFC 3646).
const OPT_CLIENTID: u16 = 1;
const OPT_SERVERID: u16 = 2;
const OPT_IA_NA: u16 = 3;
const OPT_IA_TA: u16 = 4;
const OPT_IAADDR: u16 = 5;
const OPT_PREFERENCE: u16 = 7;
const OPT_STATUS_CODE: u16 = 13;
const OPT_RAPID_COMMIT: u16 = 14;
const OPT_DNS_SERVERS: u16 = 23;
const OPT_DOMAIN_LIST: u16 = 24;
const OPT_IA_PD: u16 = 25;

// Status codes (RFC 8415 §21.13).
const STATUS_SUCCESS: u16 = 0;
const STATUS_NO_ADDRS_AVAIL: u16 = 2;
const STATUS_NOT_ON_LINK: u16 = 4;

type Answer6 = DhcpAnswer<Dhcp6Reply>;

impl Dhcp6Server {
    /// Checks `cfg` and encodes what can be encoded once.
    pub fn new(cfg: Dhcp6Config) -> Result<Self, DhcpConfigError> {
        if cfg.prefix_len > 128 {
            return Err(DhcpConfigError::BadPrefixLength(cfg.prefix_len));
        }
        if cfg.valid_secs == 0 {
            return Err(DhcpConfigError::ZeroLease);
        }
        if cfg.preferred_secs > cfg.valid_secs {
            return Err(DhcpConfigError::PreferredBeyondValid(cfg.preferred_secs, cfg.valid_secs));
        }
        if cfg.dns.len() > 64 {
            return Err(DhcpConfigError::TooManyDnsServers(cfg.dns.len()));
        }
        let search_wire = encode_search_list(&cfg.search)?;
        let m = cfg.server_mac.0;
        let duid = [0, 3, 0, 1, m[0], m[1], m[2], m[3], m[4], m[5]];
        Ok(Dhcp6Server { link_local: link_local_from_mac(cfg.server_mac), cfg, duid, search_wire })
    }

    pub fn config(&self) -> &Dhcp6Config {
        &self.cfg
    }

    /// The server's DUID, as clients see it in option 2.
    pub fn duid(&self) -> &[u8] {
        &self.duid
    }

    /// Answers the bare Ethernet frame `eth`, writing any reply to the start of `out` (a
    /// [`crate::REPLY_BUF`]-sized buffer is plenty), with leases from `store`.
    pub fn handle<S>(&self, eth: &[u8], now_secs: u64, store: &mut S, out: &mut [u8]) -> Answer6
    where
        S: LeaseStore<Ipv6Addr> + ?Sized,
    {
        let msg = match self.parse(eth) {
            Ok(m) => m,
            Err(a) => return a,
        };
        // RFC 8415 §16: which messages must carry a client or server identifier, and which must not.
        let has_server = msg.server_id.is_some();
        let names_us = msg.server_id == Some(&self.duid[..]);
        let ours = match msg.msg_type {
            SOLICIT | REBIND | CONFIRM => !has_server,
            REQUEST | RENEW | RELEASE | DECLINE => names_us,
            INFORMATION_REQUEST => (!has_server || names_us) && !msg.has_ia,
            // ADVERTISE, REPLY, RECONFIGURE, relay messages: not a server's to answer.
            _ => return DhcpAnswer::Ignored,
        };
        if msg.client_id.is_none() && msg.msg_type != INFORMATION_REQUEST {
            return DhcpAnswer::Malformed;
        }
        if !ours {
            // Addressed to another server, or not to a server at all.
            return DhcpAnswer::Ignored;
        }
        match msg.msg_type {
            SOLICIT | REQUEST | RENEW | REBIND if !msg.has_ia_na => DhcpAnswer::Ignored,
            SOLICIT if msg.rapid_commit && self.cfg.rapid_commit => {
                self.write(&msg, REPLY, out, |c| self.assign(&msg, true, true, now_secs, store, c))
            }
            SOLICIT => self.write(&msg, ADVERTISE, out, |c| self.assign(&msg, false, false, now_secs, store, c)),
            REQUEST | RENEW | REBIND => self.write(&msg, REPLY, out, |c| self.assign(&msg, true, false, now_secs, store, c)),
            CONFIRM => {
                let mut addrs = ia_addresses(msg.opts).peekable();
                if addrs.peek().is_none() {
                    // RFC 8415 §18.3.3: nothing to confirm, no reply.
                    return DhcpAnswer::Ignored;
                }
                let (code, text) = if addrs.all(|(_, a)| self.on_link(a)) {
                    (STATUS_SUCCESS, "all addresses still on link")
                } else {
                    (STATUS_NOT_ON_LINK, "not on link")
                };
                self.write(&msg, REPLY, out, |c| status(c, code, text).ok_or(DhcpAnswer::TooBig))
            }
            RELEASE | DECLINE => {
                let client = msg.client_id.unwrap_or_default();
                for (iaid, addr) in ia_addresses(msg.opts) {
                    let (key, len) = lease_key(client, iaid);
                    if msg.msg_type == RELEASE {
                        store.release(&key[..len], addr);
                    } else {
                        store.decline(&key[..len], addr);
                    }
                }
                self.write(&msg, REPLY, out, |c| status(c, STATUS_SUCCESS, "done").ok_or(DhcpAnswer::TooBig))
            }
            INFORMATION_REQUEST => self.write(&msg, REPLY, out, |c| self.configuration(c).ok_or(DhcpAnswer::TooBig)),
            _ => DhcpAnswer::Ignored,
        }
    }

    /// Writes one IA_NA per IA_NA of the request: the address the store gives it, committed
    /// when `commit`, or NoAddrsAvail. Then Rapid Commit when `rapid`, then the configuration.
    fn assign<S>(&self, msg: &Msg<'_>, commit: bool, rapid: bool, now_secs: u64, store: &mut S, c: &mut Cursor<'_>) -> Result<(), Answer6>
    where
        S: LeaseStore<Ipv6Addr> + ?Sized,
    {
        const TOO_BIG: Answer6 = DhcpAnswer::TooBig;
        let client = msg.client_id.unwrap_or_default();
        let (pref, valid) = (self.cfg.preferred_secs, self.cfg.valid_secs);
        let (t1, t2) = if pref == u32::MAX { (pref, pref) } else { (pref / 2, (u64::from(pref) * 4 / 5) as u32) };
        let expires = if valid == u32::MAX { u64::MAX } else { now_secs.saturating_add(u64::from(valid)) };
        for (iaid, ia) in Options(msg.opts).filter(|(code, _)| *code == OPT_IA_NA).filter_map(|(_, v)| v.split_first_chunk::<4>()) {
            let inner = ia.get(IA_NA_HDR_LEN - 4..).unwrap_or_default();
            let (key, len) = lease_key(client, iaid);
            let key = &key[..len];
            let listed = || iaaddrs(inner);
            let hint = listed().find(|a| self.on_link(*a));
            let addr = store.offer(key, msg.src_mac, hint).filter(|a| self.on_link(*a));
            if let Some(a) = addr {
                if commit && !store.commit(key, msg.src_mac, a, expires) {
                    return Err(DhcpAnswer::CommitFailed);
                }
            }
            let start = c.pos();
            c.u16(OPT_IA_NA).ok_or(TOO_BIG)?;
            c.u16(0).ok_or(TOO_BIG)?;
            c.put(iaid).ok_or(TOO_BIG)?;
            match addr {
                Some(a) => {
                    c.u32(t1).ok_or(TOO_BIG)?;
                    c.u32(t2).ok_or(TOO_BIG)?;
                    iaaddr(c, a, pref, valid).ok_or(TOO_BIG)?;
                    if commit {
                        // Whatever else the client holds from us is no longer its (RFC 8415 §18.3.4, 18.3.5).
                        for other in listed().filter(|o| *o != a) {
                            iaaddr(c, other, 0, 0).ok_or(TOO_BIG)?;
                        }
                    }
                }
                None => {
                    c.u32(0).ok_or(TOO_BIG)?;
                    c.u32(0).ok_or(TOO_BIG)?;
                    status(c, STATUS_NO_ADDRS_AVAIL, "no addresses available").ok_or(TOO_BIG)?;
                }
            }
            let ia_len = u16::try_from(c.pos() - start - 4).map_err(|_| TOO_BIG)?;
            c.patch_u16(start + 2, ia_len).ok_or(TOO_BIG)?;
        }
        if rapid {
            c.u16(OPT_RAPID_COMMIT).ok_or(TOO_BIG)?;
            c.u16(0).ok_or(TOO_BIG)?;
        }
        self.configuration(c).ok_or(TOO_BIG)
    }

    /// DNS servers and the domain list, when configured.
    fn configuration(&self, c: &mut Cursor<'_>) -> Option<()> {
        if !self.cfg.dns.is_empty() {
            c.u16(OPT_DNS_SERVERS)?;
            // At most 64 servers (checked in `new`): 1024 bytes.
            c.u16((self.cfg.dns.len() * 16) as u16)?;
            for d in &self.cfg.dns {
                c.put(&d.octets())?;
            }
        }
        if !self.search_wire.is_empty() {
            c.u16(OPT_DOMAIN_LIST)?;
            // At most 255 bytes (checked in `new`).
            c.u16(self.search_wire.len() as u16)?;
            c.put(&self.search_wire)?;
        }
        Some(())
    }

    /// Writes a reply of type `msg_type` to `msg` into `out`: the headers, the server and client
    /// identifiers (and preference 255 in an ADVERTISE), then what `body` adds; `body`'s
    /// error is the answer when it fails.
    fn write(&self, msg: &Msg<'_>, msg_type: u8, out: &mut [u8], body: impl FnOnce(&mut Cursor<'_>) -> Result<(), Answer6>) -> Answer6 {
        match self.try_write(msg, msg_type, out, body) {
            Ok(len) if msg_type == ADVERTISE => DhcpAnswer::Reply { kind: Dhcp6Reply::Advertise, len },
            Ok(len) => DhcpAnswer::Reply { kind: Dhcp6Reply::Reply, len },
            Err(a) => a,
        }
    }

    fn try_write(
        &self,
        msg: &Msg<'_>,
        msg_type: u8,
        out: &mut [u8],
        body: impl FnOnce(&mut Cursor<'_>) -> Result<(), Answer6>,
    ) -> Result<usize, Answer6> {
        const TOO_BIG: Answer6 = DhcpAnswer::TooBig;
        // An IPv6 payload length is a u16: no reply is larger.
        let cap = out.len().min(ETH_HDR_LEN + IPV6_HDR_LEN + usize::from(u16::MAX));
        let mut c = Cursor::new(&mut out[..cap]);
        c.skip(REPLY_MSG_AT).ok_or(TOO_BIG)?;
        c.put(&[msg_type]).ok_or(TOO_BIG)?;
        c.put(&msg.xid).ok_or(TOO_BIG)?;
        c.u16(OPT_SERVERID).ok_or(TOO_BIG)?;
        c.u16(DUID_LL_LEN as u16).ok_or(TOO_BIG)?;
        c.put(&self.duid).ok_or(TOO_BIG)?;
        if let Some(id) = msg.client_id {
            c.u16(OPT_CLIENTID).ok_or(TOO_BIG)?;
            // At most DUID_MAX_LEN: `parse` checked.
            c.u16(id.len() as u16).ok_or(TOO_BIG)?;
            c.put(id).ok_or(TOO_BIG)?;
        }
        if msg_type == ADVERTISE {
            c.u16(OPT_PREFERENCE).ok_or(TOO_BIG)?;
            c.u16(1).ok_or(TOO_BIG)?;
            c.put(&[255]).ok_or(TOO_BIG)?;
        }
        body(&mut c)?;
        let len = c.pos();
        let frame = &mut out[..len];
        write_eth(frame, msg.src_mac, self.cfg.server_mac, ETHERTYPE_IPV6);
        let (h, udp) = frame[ETH_HDR_LEN..].split_at_mut(IPV6_HDR_LEN);
        // `cap` kept the payload within a u16.
        let udp_len = udp.len() as u16;
        write_ipv6_header(h, self.link_local, msg.src_ip, udp_len, NEXT_HEADER_UDP, HOP_LIMIT);
        udp[0..2].copy_from_slice(&SERVER_PORT.to_be_bytes());
        udp[2..4].copy_from_slice(&CLIENT_PORT.to_be_bytes());
        udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
        udp[6..8].fill(0);
        // A computed 0 is sent as ffff: 0 is not a valid UDP checksum over IPv6 (RFC 8200 §8.1).
        let sum = match upper_checksum(self.link_local, msg.src_ip, NEXT_HEADER_UDP, udp) {
            0 => 0xffff,
            s => s,
        };
        udp[6..8].copy_from_slice(&sum.to_be_bytes());
        Ok(len)
    }

    /// Inside the prefix, and not its Subnet-Router anycast address (RFC 4291 §2.6.1).
    fn on_link(&self, a: Ipv6Addr) -> bool {
        let len = self.cfg.prefix_len;
        mask_v6(a, len) == mask_v6(self.cfg.prefix, len) && (len == 128 || a != mask_v6(a, len)) && !a.is_multicast()
    }

    /// Validates the frame down to the DHCPv6 options.
    fn parse<'a>(&self, eth: &'a [u8]) -> Result<Msg<'a>, Answer6> {
        let ip = match parse_frame6(eth) {
            Frame6::Packet(ip) => ip,
            Frame6::NotIpv6 => return Err(DhcpAnswer::NotDhcp),
            Frame6::Malformed => return Err(DhcpAnswer::Malformed),
        };
        if ip.next_header != NEXT_HEADER_UDP {
            return Err(DhcpAnswer::NotDhcp);
        }
        let Some(u) = ip.payload.first_chunk::<UDP_HDR_LEN>() else { return Err(DhcpAnswer::Malformed) };
        if u16::from_be_bytes([u[2], u[3]]) != SERVER_PORT {
            return Err(DhcpAnswer::NotDhcp);
        }
        let udp_len = usize::from(u16::from_be_bytes([u[4], u[5]]));
        let Some(udp) = ip.payload.get(..udp_len).filter(|_| udp_len >= UDP_HDR_LEN) else { return Err(DhcpAnswer::Malformed) };
        // Over IPv6 the checksum is mandatory (RFC 8200 §8.1).
        if u[6..8] == [0, 0] || !upper_checksum_ok(&ip, udp) {
            return Err(DhcpAnswer::Malformed);
        }
        if u16::from_be_bytes([u[0], u[1]]) != CLIENT_PORT || ip.dst != ALL_SERVERS || ip.dst_mac != ALL_SERVERS_MAC {
            // A relay agent, or a message not sent to the servers' group.
            return Err(DhcpAnswer::Ignored);
        }
        if !is_link_local(ip.src) {
            // Clients speak from their link-local address (RFC 8415 §13.1); nothing else is on this link.
            return Err(DhcpAnswer::Ignored);
        }
        let m = &udp[UDP_HDR_LEN..];
        let Some((h, opts)) = m.split_first_chunk::<MSG_HDR_LEN>() else { return Err(DhcpAnswer::Malformed) };
        let mut msg = Msg {
            msg_type: h[0],
            xid: [h[1], h[2], h[3]],
            opts,
            client_id: None,
            server_id: None,
            rapid_commit: false,
            has_ia_na: false,
            has_ia: false,
            src_mac: ip.src_mac,
            src_ip: ip.src,
        };
        let duid = |v: &'a [u8]| Some(v).filter(|v| (2..=DUID_MAX_LEN).contains(&v.len())).ok_or(DhcpAnswer::Malformed);
        let mut it = Options(opts);
        for (code, v) in &mut it {
            match code {
                OPT_CLIENTID if msg.client_id.is_none() => msg.client_id = Some(duid(v)?),
                OPT_SERVERID if msg.server_id.is_none() => msg.server_id = Some(duid(v)?),
                OPT_RAPID_COMMIT => msg.rapid_commit = true,
                OPT_IA_NA => {
                    let inner = v.get(IA_NA_HDR_LEN..).ok_or(DhcpAnswer::Malformed)?;
                    if !well_formed(inner)
                        || Options(inner).any(|(c, a)| c == OPT_IAADDR && (a.len() < IAADDR_LEN || !well_formed(&a[IAADDR_LEN..])))
                    {
                        return Err(DhcpAnswer::Malformed);
                    }
                    msg.has_ia_na = true;
                    msg.has_ia = true;
                }
                OPT_IA_TA | OPT_IA_PD => msg.has_ia = true,
                _ => {}
            }
        }
        if !it.0.is_empty() {
            return Err(DhcpAnswer::Malformed);
        }
        Ok(msg)
    }
}

/// A DHCPv6 message from a client, its options checked to lie within it.
#[derive(Debug)]
struct Msg<'a> {
    msg_type: u8,
    xid: [u8; 3],
    opts: &'a [u8],
    client_id: Option<&'a [u8]>,
    server_id: Option<&'a [u8]>,
    rapid_commit: bool,
    /// An IA_NA (checked: its options, and their IAADDRs, lie within it).
    has_ia_na: bool,
    /// An IA of any kind.
    has_ia: bool,
    src_mac: Mac,
    src_ip: Ipv6Addr,
}

/// The options in `0` (RFC 8415 §21.1: code, length, value); iteration stops at the first one
/// that runs past the end, leaving it in `0`.
#[derive(Debug, Clone, Copy)]
struct Options<'a>(&'a [u8]);

impl<'a> Iterator for Options<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (h, rest) = self.0.split_first_chunk::<4>()?;
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let (v, rest) = rest.split_at_checked(len)?;
        self.0 = rest;
        Some((u16::from_be_bytes([h[0], h[1]]), v))
    }
}

/// True when the options in `b` fill it exactly.
fn well_formed(b: &[u8]) -> bool {
    let mut it = Options(b);
    it.by_ref().for_each(drop);
    it.0.is_empty()
}

/// The addresses of the IAADDRs in the options `b` (an IA_NA's, after its header).
fn iaaddrs(b: &[u8]) -> impl Iterator<Item = Ipv6Addr> + '_ {
    Options(b).filter(|(code, v)| *code == OPT_IAADDR && v.len() >= IAADDR_LEN).map(|(_, v)| v6_at(v, 0))
}

/// Every (IAID, address) in the IA_NAs of the message options `opts`.
fn ia_addresses(opts: &[u8]) -> impl Iterator<Item = (&[u8; 4], Ipv6Addr)> + '_ {
    Options(opts)
        .filter(|(code, _)| *code == OPT_IA_NA)
        .filter_map(|(_, v)| Some((v.first_chunk::<4>()?, v.get(IA_NA_HDR_LEN..)?)))
        .flat_map(|(iaid, inner)| iaaddrs(inner).map(move |a| (iaid, a)))
}

/// The lease store's key for an IA: the client's DUID, then the IAID.
fn lease_key(duid: &[u8], iaid: &[u8; 4]) -> ([u8; DUID_MAX_LEN + 4], usize) {
    let mut key = [0u8; DUID_MAX_LEN + 4];
    let n = duid.len().min(DUID_MAX_LEN);
    key[..n].copy_from_slice(&duid[..n]);
    key[n..n + 4].copy_from_slice(iaid);
    (key, n + 4)
}

fn iaaddr(c: &mut Cursor<'_>, a: Ipv6Addr, preferred: u32, valid: u32) -> Option<()> {
    c.u16(OPT_IAADDR)?;
    c.u16(IAADDR_LEN as u16)?;
    c.put(&a.octets())?;
    c.u32(preferred)?;
    c.u32(valid)
}

fn status(c: &mut Cursor<'_>, code: u16, text: &str) -> Option<()> {
    c.u16(OPT_STATUS_CODE)?;
    c.u16(u16::try_from(2 + text.len()).ok()?)?;
    c.u16(code)?;
    c.put(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::answer::REPLY_BUF;
    use crate::fixtures::{checksums_valid, CLIENT_MAC, GW_MAC};

    // Generated independently of this crate (Python, its own checksum), as in `fixtures.rs`.

    /// dhclient -6's SOLICIT: DUID-LLT client id, elapsed time, ORO (DNS, domain list), one IA_NA with no address, from its link-local address to ff02::1:2, hop limit 1.
    #[rustfmt::skip]
    const SOLICIT_FRAME: [u8; 114] = [
        0x33, 0x33, 0x00, 0x01, 0x00, 0x02, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x86, 0xdd, 0x60, 0x00,
        0x00, 0x00, 0x00, 0x3c, 0x11, 0x01, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x42,
        0xac, 0xff, 0xfe, 0x11, 0x00, 0x02, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0x02, 0x22, 0x02, 0x23, 0x00, 0x3c, 0x33, 0x94, 0x01, 0x5a,
        0x0b, 0x1c, 0x00, 0x01, 0x00, 0x0e, 0x00, 0x01, 0x00, 0x01, 0x2d, 0x6e, 0x8a, 0x10, 0x02, 0x42,
        0xac, 0x11, 0x00, 0x02, 0x00, 0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x06, 0x00, 0x04, 0x00, 0x17,
        0x00, 0x18, 0x00, 0x03, 0x00, 0x0c, 0xac, 0x11, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00,
    ];

    /// dhclient -6's REQUEST for fd00::100 after the ADVERTISE, naming the gateway's DUID-LL as the server.
    #[rustfmt::skip]
    const REQUEST_FRAME: [u8; 156] = [
        0x33, 0x33, 0x00, 0x01, 0x00, 0x02, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x86, 0xdd, 0x60, 0x00,
        0x00, 0x00, 0x00, 0x66, 0x11, 0x01, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x42,
        0xac, 0xff, 0xfe, 0x11, 0x00, 0x02, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0x02, 0x22, 0x02, 0x23, 0x00, 0x66, 0x5e, 0x94, 0x03, 0x7e,
        0x31, 0x05, 0x00, 0x01, 0x00, 0x0e, 0x00, 0x01, 0x00, 0x01, 0x2d, 0x6e, 0x8a, 0x10, 0x02, 0x42,
        0xac, 0x11, 0x00, 0x02, 0x00, 0x02, 0x00, 0x0a, 0x00, 0x03, 0x00, 0x01, 0x02, 0x42, 0xac, 0x11,
        0x00, 0x01, 0x00, 0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x06, 0x00, 0x04, 0x00, 0x17, 0x00, 0x18,
        0x00, 0x03, 0x00, 0x28, 0xac, 0x11, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x05, 0x00, 0x18, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    /// The ADVERTISE for [`SOLICIT_FRAME`]: fd00::100 (preferred 3600 s, valid 7200 s, T1 1800, T2 2880), preference 255, DNS fd00::1, domain list vswitch.test.
    #[rustfmt::skip]
    const ADVERTISE_FRAME: [u8; 185] = [
        0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x02, 0x42, 0xac, 0x11, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00,
        0x00, 0x00, 0x00, 0x83, 0x11, 0x40, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x42,
        0xac, 0xff, 0xfe, 0x11, 0x00, 0x01, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x42,
        0xac, 0xff, 0xfe, 0x11, 0x00, 0x02, 0x02, 0x23, 0x02, 0x22, 0x00, 0x83, 0xb0, 0x24, 0x02, 0x5a,
        0x0b, 0x1c, 0x00, 0x02, 0x00, 0x0a, 0x00, 0x03, 0x00, 0x01, 0x02, 0x42, 0xac, 0x11, 0x00, 0x01,
        0x00, 0x01, 0x00, 0x0e, 0x00, 0x01, 0x00, 0x01, 0x2d, 0x6e, 0x8a, 0x10, 0x02, 0x42, 0xac, 0x11,
        0x00, 0x02, 0x00, 0x07, 0x00, 0x01, 0xff, 0x00, 0x03, 0x00, 0x28, 0xac, 0x11, 0x00, 0x02, 0x00,
        0x00, 0x07, 0x08, 0x00, 0x00, 0x0b, 0x40, 0x00, 0x05, 0x00, 0x18, 0xfd, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0e, 0x10, 0x00,
        0x00, 0x1c, 0x20, 0x00, 0x17, 0x00, 0x10, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x18, 0x00, 0x0e, 0x07, 0x76, 0x73, 0x77, 0x69,
        0x74, 0x63, 0x68, 0x04, 0x74, 0x65, 0x73, 0x74, 0x00,
    ];

    /// An in-memory pool over fd00::100..=fd00::103.
    #[derive(Debug, Default)]
    struct Pool {
        leases: HashMap<Vec<u8>, (Ipv6Addr, u64)>,
        declined: Vec<Ipv6Addr>,
        commits: usize,
        fail_commits: bool,
    }

    impl Pool {
        fn taken(&self, a: Ipv6Addr, by: &[u8]) -> bool {
            self.declined.contains(&a) || self.leases.iter().any(|(k, (l, _))| *l == a && k.as_slice() != by)
        }
        fn pool() -> impl Iterator<Item = Ipv6Addr> + Clone {
            (0x100..0x104u16).map(|i| Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i))
        }
    }

    impl LeaseStore<Ipv6Addr> for Pool {
        fn offer(&mut self, client: &[u8], _mac: Mac, requested: Option<Ipv6Addr>) -> Option<Ipv6Addr> {
            if let Some((a, _)) = self.leases.get(client) {
                return Some(*a);
            }
            requested
                .filter(|r| Self::pool().any(|a| a == *r) && !self.taken(*r, client))
                .or_else(|| Self::pool().find(|a| !self.taken(*a, client)))
        }

        fn commit(&mut self, client: &[u8], _mac: Mac, addr: Ipv6Addr, expires_at_secs: u64) -> bool {
            if self.fail_commits || self.taken(addr, client) {
                return false;
            }
            self.commits += 1;
            self.leases.insert(client.to_vec(), (addr, expires_at_secs));
            true
        }

        fn release(&mut self, client: &[u8], addr: Ipv6Addr) {
            if self.leases.get(client).is_some_and(|(a, _)| *a == addr) {
                self.leases.remove(client);
            }
        }

        fn decline(&mut self, client: &[u8], addr: Ipv6Addr) {
            self.release(client, addr);
            self.declined.push(addr);
        }

        fn lookup(&self, client: &[u8]) -> Option<(Ipv6Addr, u64)> {
            self.leases.get(client).copied()
        }
    }

    const NOW: u64 = 1_700_000_000;
    const IAID: [u8; 4] = [0xac, 0x11, 0x00, 0x02];

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn server() -> Dhcp6Server {
        let mut c = Dhcp6Config::new(GW_MAC, v6("fd00::"), 64);
        c.dns = vec![v6("fd00::1")];
        c.search = vec!["vswitch.test".into()];
        Dhcp6Server::new(c).unwrap()
    }

    /// The client's DUID in the fixtures (DUID-LLT).
    fn client_duid() -> Vec<u8> {
        SOLICIT_FRAME[70..84].to_vec()
    }

    fn key(iaid: [u8; 4]) -> Vec<u8> {
        let mut k = client_duid();
        k.extend_from_slice(&iaid);
        k
    }

    fn ask(s: &Dhcp6Server, pool: &mut Pool, f: &[u8]) -> (Answer6, Vec<u8>) {
        let mut out = [0u8; REPLY_BUF];
        let a = s.handle(f, NOW, pool, &mut out);
        (a, out[..a.reply_len().unwrap_or(0)].to_vec())
    }

    fn opt(code: u16, v: &[u8]) -> Vec<u8> {
        let mut o = code.to_be_bytes().to_vec();
        o.extend_from_slice(&(v.len() as u16).to_be_bytes());
        o.extend_from_slice(v);
        o
    }

    fn ia_na(iaid: [u8; 4], addrs: &[Ipv6Addr]) -> Vec<u8> {
        let mut v = iaid.to_vec();
        v.extend_from_slice(&[0; 8]);
        for a in addrs {
            let mut ia = a.octets().to_vec();
            ia.extend_from_slice(&[0; 8]);
            v.extend(opt(OPT_IAADDR, &ia));
        }
        opt(OPT_IA_NA, &v)
    }

    /// A client message from the fixtures' client, every length and checksum right.
    fn client6(msg_type: u8, opts: &[Vec<u8>]) -> Vec<u8> {
        let mut m = vec![msg_type, 0x12, 0x34, 0x56];
        opts.iter().for_each(|o| m.extend_from_slice(o));
        let mut f = SOLICIT_FRAME[..REPLY_MSG_AT].to_vec();
        f.extend_from_slice(&m);
        let udp_len = (f.len() - 54) as u16;
        f[18..20].copy_from_slice(&udp_len.to_be_bytes());
        f[58..60].copy_from_slice(&udp_len.to_be_bytes());
        f[60..62].fill(0);
        let sum = upper_checksum(v6_at(&f, 22), v6_at(&f, 38), 17, &f[54..]);
        f[60..62].copy_from_slice(&sum.to_be_bytes());
        f
    }

    /// An independent reading of a reply: addressing, checksum, and its top-level options.
    #[derive(Debug)]
    struct Parsed {
        msg_type: u8,
        xid: [u8; 3],
        opts: Vec<(u16, Vec<u8>)>,
    }

    impl Parsed {
        fn get(&self, code: u16) -> Option<&[u8]> {
            self.opts.iter().find(|(c, _)| *c == code).map(|(_, v)| v.as_slice())
        }
        fn all(&self, code: u16) -> Vec<&[u8]> {
            self.opts.iter().filter(|(c, _)| *c == code).map(|(_, v)| v.as_slice()).collect()
        }
    }

    fn read(f: &[u8]) -> Parsed {
        assert!(checksums_valid(f), "UDP checksum with the pseudo-header");
        assert_eq!(f[0..6], CLIENT_MAC.0);
        assert_eq!(f[6..12], GW_MAC.0);
        assert_eq!(f[20], 17);
        assert_eq!(v6_at(f, 22), v6("fe80::42:acff:fe11:1"), "from the gateway's link-local address");
        assert_eq!(v6_at(f, 38), v6("fe80::42:acff:fe11:2"), "to the client's");
        assert_eq!(f[54..58], [2, 0x23, 2, 0x22]);
        assert_eq!(usize::from(u16::from_be_bytes([f[18], f[19]])), f.len() - 54);
        let m = &f[62..];
        let mut opts = Vec::new();
        let mut rest = &m[4..];
        while !rest.is_empty() {
            let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            opts.push((u16::from_be_bytes([rest[0], rest[1]]), rest[4..4 + len].to_vec()));
            rest = &rest[4 + len..];
        }
        assert_eq!(opts[0], (OPT_SERVERID, vec![0, 3, 0, 1, 0x02, 0x42, 0xac, 0x11, 0x00, 0x01]));
        Parsed { msg_type: m[0], xid: [m[1], m[2], m[3]], opts }
    }

    /// The (address, preferred, valid) of each IAADDR in an IA_NA's value, and its status code.
    fn ia_contents(ia: &[u8]) -> (Vec<(Ipv6Addr, u32, u32)>, Option<u16>) {
        let mut addrs = Vec::new();
        let mut status = None;
        for (code, v) in Options(&ia[12..]) {
            match code {
                OPT_IAADDR => addrs.push((
                    v6_at(v, 0),
                    u32::from_be_bytes(v[16..20].try_into().unwrap()),
                    u32::from_be_bytes(v[20..24].try_into().unwrap()),
                )),
                OPT_STATUS_CODE => status = Some(u16::from_be_bytes([v[0], v[1]])),
                _ => {}
            }
        }
        (addrs, status)
    }

    #[test]
    fn solicit_gets_the_exact_advertise_and_records_nothing() {
        let s = server();
        let mut pool = Pool::default();
        assert!(checksums_valid(&SOLICIT_FRAME) && checksums_valid(&REQUEST_FRAME));
        let (a, reply) = ask(&s, &mut pool, &SOLICIT_FRAME);
        assert_eq!(a, DhcpAnswer::Reply { kind: Dhcp6Reply::Advertise, len: ADVERTISE_FRAME.len() });
        assert_eq!(reply, ADVERTISE_FRAME);
        assert_eq!(pool.commits, 0);
        assert_eq!(s.duid(), &read(&reply).opts[0].1[..]);
    }

    #[test]
    fn request_renew_rebind_commit_and_release_frees() {
        let s = server();
        let mut pool = Pool::default();
        ask(&s, &mut pool, &SOLICIT_FRAME);
        let (a, reply) = ask(&s, &mut pool, &REQUEST_FRAME);
        assert!(matches!(a, DhcpAnswer::Reply { kind: Dhcp6Reply::Reply, .. }), "{a:?}");
        let r = read(&reply);
        assert_eq!((r.msg_type, r.xid), (REPLY, [0x7e, 0x31, 0x05]));
        assert_eq!(r.get(OPT_CLIENTID), Some(&client_duid()[..]));
        assert_eq!(r.get(OPT_PREFERENCE), None);
        let ia = r.get(OPT_IA_NA).unwrap();
        assert_eq!(ia[..12], [0xac, 0x11, 0x00, 0x02, 0, 0, 0x07, 0x08, 0, 0, 0x0b, 0x40]);
        assert_eq!(ia_contents(ia), (vec![(v6("fd00::100"), 3600, 7200)], None));
        assert_eq!(r.get(OPT_DNS_SERVERS), Some(&v6("fd00::1").octets()[..]));
        assert_eq!(r.get(OPT_DOMAIN_LIST), Some(&b"\x07vswitch\x04test\x00"[..]));
        assert_eq!(pool.lookup(&key(IAID)), Some((v6("fd00::100"), NOW + 7200)));

        let server_id = opt(OPT_SERVERID, s.duid());
        let client_id = opt(OPT_CLIENTID, &client_duid());
        let renew = client6(RENEW, &[client_id.clone(), server_id.clone(), ia_na(IAID, &[v6("fd00::100")])]);
        let r = read(&ask(&s, &mut pool, &renew).1);
        assert_eq!(ia_contents(r.get(OPT_IA_NA).unwrap()).0, vec![(v6("fd00::100"), 3600, 7200)]);
        let rebind = client6(REBIND, &[client_id.clone(), ia_na(IAID, &[v6("fd00::100")])]);
        let r = read(&ask(&s, &mut pool, &rebind).1);
        assert_eq!((r.msg_type, ia_contents(r.get(OPT_IA_NA).unwrap()).0.len()), (REPLY, 1));
        assert_eq!(pool.commits, 3);

        // A rebind naming a server is not one; a renew naming another server is not ours.
        assert_eq!(ask(&s, &mut pool, &client6(REBIND, &[client_id.clone(), server_id.clone(), ia_na(IAID, &[])])).0, DhcpAnswer::Ignored);
        let other = opt(OPT_SERVERID, &[0, 3, 0, 1, 9, 9, 9, 9, 9, 9]);
        assert_eq!(ask(&s, &mut pool, &client6(RENEW, &[client_id.clone(), other, ia_na(IAID, &[])])).0, DhcpAnswer::Ignored);

        let release = client6(RELEASE, &[client_id, server_id, ia_na(IAID, &[v6("fd00::100")])]);
        let r = read(&ask(&s, &mut pool, &release).1);
        assert_eq!(r.get(OPT_STATUS_CODE).map(|v| v[..2].to_vec()), Some(vec![0, 0]));
        assert_eq!(r.get(OPT_IA_NA), None);
        assert_eq!(pool.lookup(&key(IAID)), None);
    }

    #[test]
    fn rapid_commit_replies_at_once_when_allowed() {
        let s = server();
        let mut pool = Pool::default();
        let solicit = client6(SOLICIT, &[opt(OPT_CLIENTID, &client_duid()), opt(OPT_RAPID_COMMIT, &[]), ia_na(IAID, &[])]);
        let (a, reply) = ask(&s, &mut pool, &solicit);
        assert!(matches!(a, DhcpAnswer::Reply { kind: Dhcp6Reply::Reply, .. }));
        let r = read(&reply);
        assert_eq!((r.msg_type, r.get(OPT_RAPID_COMMIT)), (REPLY, Some(&[][..])));
        assert_eq!(pool.lookup(&key(IAID)).map(|l| l.0), Some(v6("fd00::100")));
        let mut cfg = s.config().clone();
        cfg.rapid_commit = false;
        let s = Dhcp6Server::new(cfg).unwrap();
        let r = read(&ask(&s, &mut pool, &solicit).1);
        assert_eq!((r.msg_type, r.get(OPT_RAPID_COMMIT)), (ADVERTISE, None));
    }

    #[test]
    fn each_ia_is_its_own_lease_and_stale_addresses_get_zero_lifetimes() {
        let s = server();
        let mut pool = Pool::default();
        let second = [0, 0, 0, 7];
        let req = client6(
            REQUEST,
            &[
                opt(OPT_CLIENTID, &client_duid()),
                opt(OPT_SERVERID, s.duid()),
                ia_na(IAID, &[v6("fd00::102")]),
                ia_na(second, &[v6("2001:db8::1")]),
            ],
        );
        let r = read(&ask(&s, &mut pool, &req).1);
        let ias = r.all(OPT_IA_NA);
        assert_eq!(ias.len(), 2);
        assert_eq!(ia_contents(ias[0]).0, vec![(v6("fd00::102"), 3600, 7200)], "the hint is honoured when free");
        assert_eq!(ia_contents(ias[1]).0, vec![(v6("fd00::100"), 3600, 7200), (v6("2001:db8::1"), 0, 0)]);
        assert_eq!(pool.lookup(&key(second)).map(|l| l.0), Some(v6("fd00::100")));
        // Asking for another address in a renewal returns the held one, and the other at 0.
        let renew = client6(RENEW, &[opt(OPT_CLIENTID, &client_duid()), opt(OPT_SERVERID, s.duid()), ia_na(IAID, &[v6("fd00::101")])]);
        let r = read(&ask(&s, &mut pool, &renew).1);
        assert_eq!(ia_contents(r.get(OPT_IA_NA).unwrap()).0, vec![(v6("fd00::102"), 3600, 7200), (v6("fd00::101"), 0, 0)]);
    }

    #[test]
    fn exhausted_pools_say_no_addrs_avail_and_failed_commits_say_nothing() {
        let s = server();
        let mut pool = Pool::default();
        pool.declined.extend(Pool::pool());
        let r = read(&ask(&s, &mut pool, &SOLICIT_FRAME).1);
        let ia = r.get(OPT_IA_NA).unwrap();
        assert_eq!(ia[4..12], [0; 8], "T1 and T2 0");
        assert_eq!(ia_contents(ia), (vec![], Some(STATUS_NO_ADDRS_AVAIL)));
        let mut pool = Pool { fail_commits: true, ..Pool::default() };
        assert_eq!(ask(&s, &mut pool, &REQUEST_FRAME), (DhcpAnswer::CommitFailed, vec![]));
    }

    #[test]
    fn decline_confirm_and_information_request() {
        let s = server();
        let mut pool = Pool::default();
        let cid = opt(OPT_CLIENTID, &client_duid());
        let decline = client6(DECLINE, &[cid.clone(), opt(OPT_SERVERID, s.duid()), ia_na(IAID, &[v6("fd00::100")])]);
        assert_eq!(read(&ask(&s, &mut pool, &decline).1).get(OPT_STATUS_CODE).unwrap()[..2], [0, 0]);
        assert_eq!(pool.declined, vec![v6("fd00::100")]);

        let confirm = |addrs: &[Ipv6Addr]| client6(CONFIRM, &[cid.clone(), ia_na(IAID, addrs)]);
        let status = |f: &[u8]| u16::from_be_bytes(read(f).get(OPT_STATUS_CODE).unwrap()[..2].try_into().unwrap());
        assert_eq!(status(&ask(&s, &mut pool, &confirm(&[v6("fd00::55")])).1), STATUS_SUCCESS);
        assert_eq!(status(&ask(&s, &mut pool, &confirm(&[v6("fd00::55"), v6("fd01::55")])).1), STATUS_NOT_ON_LINK);
        assert_eq!(status(&ask(&s, &mut pool, &confirm(&[v6("fd00::")])).1), STATUS_NOT_ON_LINK, "the subnet-router anycast address");
        assert_eq!(ask(&s, &mut pool, &confirm(&[])), (DhcpAnswer::Ignored, vec![]));

        let info = client6(INFORMATION_REQUEST, &[cid.clone(), opt(6, &[0, 23, 0, 24])]);
        let r = read(&ask(&s, &mut pool, &info).1);
        assert_eq!(r.get(OPT_DNS_SERVERS), Some(&v6("fd00::1").octets()[..]));
        assert!(r.get(OPT_DOMAIN_LIST).is_some() && r.get(OPT_IA_NA).is_none());
        let anonymous = client6(INFORMATION_REQUEST, &[]);
        let r = read(&ask(&s, &mut pool, &anonymous).1);
        assert_eq!(r.get(OPT_CLIENTID), None);
        let with_ia = client6(INFORMATION_REQUEST, &[cid, ia_na(IAID, &[])]);
        assert_eq!(ask(&s, &mut pool, &with_ia).0, DhcpAnswer::Ignored);
        assert_eq!(pool.commits, 0);
    }

    #[test]
    fn what_is_not_a_request_to_this_server_is_sorted_out() {
        let s = server();
        let mut pool = Pool::default();
        type Edit = fn(&mut Vec<u8>);
        // Offsets into SOLICIT_FRAME: UDP at 54, the message at 62, its client id option at 66
        // (length at 68), its IA_NA at 98 (length at 100).
        let cases: [(&str, Edit, Answer6); 10] = [
            ("to port 53", |f| f[57] = 53, DhcpAnswer::NotDhcp),
            ("not UDP", |f| f[20] = 6, DhcpAnswer::NotDhcp),
            ("from a relay's port", |f| f[55] = 0x23, DhcpAnswer::Ignored),
            ("to another group", |f| f[53] = 3, DhcpAnswer::Ignored),
            ("to another MAC", |f| f[5] = 3, DhcpAnswer::Ignored),
            ("from a global address", |f| f[22] = 0xfd, DhcpAnswer::Ignored),
            ("an advertise", |f| f[62] = ADVERTISE, DhcpAnswer::Ignored),
            ("no client id", |f| f[67] = 99, DhcpAnswer::Malformed),
            ("an option past the end", |f| f[69] = 200, DhcpAnswer::Malformed),
            ("a short IA_NA", |f| f[101] = 8, DhcpAnswer::Malformed),
        ];
        for (what, edit, want) in cases {
            let mut f = SOLICIT_FRAME.to_vec();
            edit(&mut f);
            if f[20] == 17 {
                f[60..62].fill(0);
                let sum = upper_checksum(v6_at(&f, 22), v6_at(&f, 38), 17, &f[54..]);
                f[60..62].copy_from_slice(&sum.to_be_bytes());
            }
            assert_eq!(ask(&s, &mut pool, &f), (want, vec![]), "{what}");
        }
        let cid = opt(OPT_CLIENTID, &client_duid());
        let built: [(&str, Vec<u8>, Answer6); 5] = [
            (
                "a solicit naming a server",
                client6(SOLICIT, &[cid.clone(), opt(OPT_SERVERID, s.duid()), ia_na(IAID, &[])]),
                DhcpAnswer::Ignored,
            ),
            ("a solicit without IA_NA", client6(SOLICIT, &[cid.clone(), opt(OPT_IA_PD, &[0; 12])]), DhcpAnswer::Ignored),
            ("a DUID over 130 bytes", client6(SOLICIT, &[opt(OPT_CLIENTID, &[1; 131]), ia_na(IAID, &[])]), DhcpAnswer::Malformed),
            (
                "a short IAADDR",
                client6(SOLICIT, &[cid.clone(), opt(OPT_IA_NA, &[[0u8; 12].as_slice(), &opt(OPT_IAADDR, &[0; 23])].concat())]),
                DhcpAnswer::Malformed,
            ),
            ("a relay's message", client6(12, &[cid]), DhcpAnswer::Ignored),
        ];
        for (what, f, want) in built {
            assert_eq!(ask(&s, &mut pool, &f), (want, vec![]), "{what}");
        }
        for (what, f) in [
            ("an ARP frame", &crate::fixtures::ARP_REQUEST[..]),
            ("a ping", &crate::fixtures::ECHO6_REQUEST),
            ("an RS-sized runt", &[0u8; 13]),
        ] {
            assert_eq!(ask(&s, &mut pool, f).0, DhcpAnswer::NotDhcp, "{what}");
        }
        let mut bad = SOLICIT_FRAME;
        bad[100] ^= 1;
        assert_eq!(ask(&s, &mut pool, &bad).0, DhcpAnswer::Malformed, "checksum");
        let mut zero = SOLICIT_FRAME;
        zero[60..62].fill(0);
        assert_eq!(ask(&s, &mut pool, &zero).0, DhcpAnswer::Malformed, "no checksum");
        assert_eq!(pool.commits, 0);
    }

    #[test]
    fn every_truncation_of_every_fixture_gets_no_reply() {
        let s = server();
        for f in [&SOLICIT_FRAME[..], &REQUEST_FRAME] {
            for len in 0..f.len() {
                let mut pool = Pool::default();
                let (a, reply) = ask(&s, &mut pool, &f[..len]);
                assert!(reply.is_empty() && matches!(a, DhcpAnswer::Malformed | DhcpAnswer::NotDhcp), "{len}: {a:?}");
                assert_eq!(pool.commits, 0);
            }
        }
        let mut pool = Pool::default();
        for short in 0..ADVERTISE_FRAME.len() {
            let mut out = vec![0u8; short];
            assert_eq!(s.handle(&SOLICIT_FRAME, NOW, &mut pool, &mut out), DhcpAnswer::TooBig, "{short}");
        }
    }

    #[test]
    fn configurations_are_checked() {
        let base = server().config().clone();
        let with = |f: fn(&mut Dhcp6Config)| {
            let mut c = base.clone();
            f(&mut c);
            Dhcp6Server::new(c).err()
        };
        assert_eq!(with(|c| c.prefix_len = 129), Some(DhcpConfigError::BadPrefixLength(129)));
        assert_eq!(with(|c| c.preferred_secs = 7201), Some(DhcpConfigError::PreferredBeyondValid(7201, 7200)));
        assert_eq!(with(|c| c.valid_secs = 0), Some(DhcpConfigError::ZeroLease));
        assert!(matches!(with(|c| c.search = vec!["bad..name".into()]), Some(DhcpConfigError::BadDomainName(_))));
        assert_eq!(with(|c| c.dns = vec![Ipv6Addr::LOCALHOST; 65]), Some(DhcpConfigError::TooManyDnsServers(65)));
        assert_eq!(with(|_| {}), None);
    }

    #[test]
    fn random_and_mutated_frames_never_panic() {
        let s = server();
        let mut pool = Pool::default();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let seeds: [&[u8]; 2] = [&SOLICIT_FRAME, &REQUEST_FRAME];
        let mut out = [0u8; REPLY_BUF];
        let mut replies = 0;
        for i in 0..30_000u64 {
            let f = if i % 3 == 0 {
                let len = (next() % 300) as usize;
                let mut f: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if len >= 14 {
                    f[6] &= 0xfe;
                    f[12..14].copy_from_slice(&[0x86, 0xdd]);
                }
                f
            } else {
                // Mutate the message (its options mostly), then make the headers right again.
                let seed = seeds[(next() % 2) as usize];
                let mut m = seed[62..].to_vec();
                for _ in 0..1 + next() % 3 {
                    let at = (next() % m.len() as u64) as usize;
                    m[at] = if next() % 3 == 0 { (next() % 8) as u8 } else { next() as u8 };
                }
                if next() % 4 == 0 {
                    m.truncate(m.len() - (next() % 20) as usize);
                }
                let mut f = client6(0, &[]);
                f.truncate(62);
                f.extend_from_slice(&m);
                let udp_len = (f.len() - 54) as u16;
                f[18..20].copy_from_slice(&udp_len.to_be_bytes());
                f[58..60].copy_from_slice(&udp_len.to_be_bytes());
                f[60..62].fill(0);
                let sum = upper_checksum(v6_at(&f, 22), v6_at(&f, 38), 17, &f[54..]);
                f[60..62].copy_from_slice(&sum.to_be_bytes());
                f
            };
            if let Some(len) = s.handle(&f, NOW + i, &mut pool, &mut out).reply_len() {
                replies += 1;
                read(&out[..len]);
            }
        }
        assert!(replies > 1000, "{replies}");
    }
}
