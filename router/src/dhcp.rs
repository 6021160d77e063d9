//! A DHCPv4 server for one network (RFC 2131, options from RFC 2132), sans-IO: a client's frame
//! in, at most one reply frame out, leases kept by the caller's [`LeaseStore`].
//!
//! Theory of operation. [`DhcpServer::handle`] takes a bare Ethernet frame (IPv4, UDP from port
//! 68 to 67, broadcast or unicast to the server) and answers as RFC 2131 §4.3 says:
//! - DISCOVER → OFFER of the address [`LeaseStore::offer`] proposes (nothing is recorded yet);
//! - REQUEST → ACK once [`LeaseStore::commit`] has recorded the lease, or NAK. The four client
//!   states are told apart as §4.3.2 does: a server identifier means SELECTING (another server's
//!   identifier: the client chose it, we stay quiet); a requested address without one means
//!   INIT-REBOOT; neither, with `ciaddr` set, means RENEWING or REBINDING. The server is
//!   authoritative for its network: an address it can confirm is ACKed even without a record
//!   (after a restart that lost nothing, or a client moved between ports), anything else NAKed,
//!   so a client with a stale address starts over at once instead of waiting for timeouts;
//! - DECLINE and RELEASE → the store is told, no reply; INFORM → ACK with configuration only.
//!
//! Replies go where RFC 2131 §4.1 says: to `ciaddr` when the client has an address; to the
//! broadcast address when the client set the broadcast flag (or for a NAK); otherwise unicast to
//! the offered address and `chaddr`. Relayed requests (`giaddr` set) are not served.
//!
//! Time is a parameter (`now_secs`, seconds on the clock the store persists: leases outlive the
//! daemon). Nothing here allocates per frame or panics on any input.

use std::net::Ipv4Addr;

use vswitch_switch::Mac;

use crate::answer::{mac_at, write_eth, ETHERTYPE_IPV4, ETH_HDR_LEN};
use crate::checksum;

/// The leases of one network, kept by the control plane (persisted before `commit` returns,
/// so that an ACKed lease survives a crash). `A` is the address type: [`Ipv4Addr`] for
/// [`DhcpServer`], [`std::net::Ipv6Addr`] for [`crate::Dhcp6Server`].
///
/// `client` identifies the client: for DHCPv4 its client identifier (option 61, the whole
/// value including the type byte) or else its 6-byte hardware address; for DHCPv6 its DUID
/// followed by the 4 bytes of the IAID (big-endian), one key per identity association.
/// `mac` is its Ethernet address, for the store's records (`chaddr` for DHCPv4, the frame's
/// source for DHCPv6). Time is seconds on the clock the caller passes as `now_secs`.
pub trait LeaseStore<A> {
    /// Proposes an address for `client`, recording nothing: the address it already holds (an
    /// unexpired or expired lease it still owns), else `requested` when that is free and in
    /// the pool, else any free address; `None` when the pool is exhausted.
    fn offer(&mut self, client: &[u8], mac: Mac, requested: Option<A>) -> Option<A>;
    /// Records that `client` holds `addr` until `expires_at_secs`, durably, before returning
    /// true; false when `addr` cannot be given to it (taken by another client since the offer)
    /// or could not be persisted. Called again on every renewal.
    fn commit(&mut self, client: &[u8], mac: Mac, addr: A, expires_at_secs: u64) -> bool;
    /// `client` gives `addr` back (when it is the client's).
    fn release(&mut self, client: &[u8], addr: A);
    /// `client` found `addr` in use by someone else (an ARP or DAD conflict): it should not be
    /// offered again for a while (RFC 2131 §4.3.3, RFC 8415 §18.3.8).
    fn decline(&mut self, client: &[u8], addr: A);
    /// The address `client` holds and when its lease expires.
    fn lookup(&self, client: &[u8]) -> Option<(A, u64)>;
}

/// What became of one frame given to [`DhcpServer::handle`] or [`crate::Dhcp6Server::handle`];
/// `K` names the reply ([`Dhcp4Reply`] or [`crate::Dhcp6Reply`]). Each variant is meant to be a
/// counter of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpAnswer<K> {
    /// A reply of `len` bytes (a bare Ethernet frame) is at the start of the output buffer; it
    /// goes back out of the port the request came in on.
    Reply { kind: K, len: usize },
    /// A RELEASE was passed to the store; no reply is owed (DHCPv4).
    Released,
    /// A DECLINE was passed to the store; no reply is owed (DHCPv4).
    Declined,
    /// A DISCOVER found no free address: not answered (DHCPv4; DHCPv6 says NoAddrsAvail).
    NoAddress,
    /// The store refused to commit a lease; not answered, so the client asks again.
    CommitFailed,
    /// Not a datagram from a DHCP client to a server (another protocol or port): try the
    /// frame's other consumers.
    NotDhcp,
    /// A DHCP message not for this server to answer: another server's, a relay's, a type a
    /// server does not answer, addressed elsewhere.
    Ignored,
    /// Truncated, bad lengths or checksums, or fields no valid client writes.
    Malformed,
    /// The reply does not fit the output buffer.
    TooBig,
}

impl<K> DhcpAnswer<K> {
    /// The length of the reply written, if any.
    pub fn reply_len(&self) -> Option<usize> {
        match *self {
            DhcpAnswer::Reply { len, .. } => Some(len),
            _ => None,
        }
    }
}

/// The DHCPv4 reply [`DhcpServer::handle`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dhcp4Reply {
    Offer,
    Ack,
    Nak,
}

/// What [`DhcpServer::handle`]'s answers say about the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpConfig {
    /// The gateway's MAC: the replies' Ethernet source, and which unicast frames are ours.
    pub server_mac: Mac,
    /// The gateway's address: the server identifier (option 54), the router (option 3) and the
    /// replies' source.
    pub server_ip: Ipv4Addr,
    /// The network's mask (option 1); the broadcast address (option 28) follows from it.
    pub subnet_mask: Ipv4Addr,
    /// DNS servers (option 6), usually the gateway; left out when empty. At most 63.
    pub dns: Vec<Ipv4Addr>,
    /// Lease time (option 51); T1 and T2 (options 58, 59) are 1/2 and 7/8 of it. `u32::MAX` is infinite.
    pub lease_secs: u32,
    /// Domain name (option 15).
    pub domain: Option<String>,
    /// Domain search list (option 119, RFC 3397), at most 255 bytes encoded.
    pub search: Vec<String>,
    /// Interface MTU (option 26), at least 68.
    pub mtu: Option<u16>,
    /// Broadcast every reply, whatever the client's broadcast flag says (for clients that
    /// cannot receive unicast before they are configured and do not say so).
    pub broadcast_replies: bool,
}

impl DhcpConfig {
    /// A configuration with no DNS servers, domain, search list or MTU, and one-hour leases.
    pub fn new(server_mac: Mac, server_ip: Ipv4Addr, subnet_mask: Ipv4Addr) -> Self {
        DhcpConfig {
            server_mac,
            server_ip,
            subnet_mask,
            dns: Vec::new(),
            lease_secs: 3600,
            domain: None,
            search: Vec::new(),
            mtu: None,
            broadcast_replies: false,
        }
    }
}

/// Why a configuration was refused by [`DhcpServer::new`] or [`crate::Dhcp6Server::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhcpConfigError {
    /// A domain name that is not one.
    #[error("invalid domain name {0:?}: dot-separated labels of 1 to 63 printable characters, 253 at most in all")]
    BadDomainName(String),
    /// The search list does not fit one option.
    #[error("the domain search list encodes to {0} bytes, more than the 255 one option holds")]
    SearchListTooLong(usize),
    /// A subnet mask with holes.
    #[error("subnet mask {0} is not a contiguous prefix")]
    BadMask(Ipv4Addr),
    /// The server's address is the network's or its broadcast address.
    #[error("server address {0} is not a host address of its subnet")]
    BadServerAddress(std::net::IpAddr),
    /// Too many DNS servers for one option.
    #[error("{0} DNS servers do not fit one option")]
    TooManyDnsServers(usize),
    /// An MTU below IPv4's minimum.
    #[error("MTU {0} is below the minimum of 68")]
    MtuTooSmall(u16),
    /// A zero lease or lifetime.
    #[error("a lease time of 0 seconds")]
    ZeroLease,
    /// An IPv6 prefix longer than 128 bits.
    #[error("prefix length {0} is longer than 128")]
    BadPrefixLength(u8),
    /// An IPv6 preferred lifetime beyond the valid one.
    #[error("preferred lifetime {0} s exceeds the valid lifetime {1} s")]
    PreferredBeyondValid(u32, u32),
}

/// A DHCPv4 server for one network: its configuration, checked and pre-encoded once.
#[derive(Debug, Clone)]
pub struct DhcpServer {
    cfg: DhcpConfig,
    /// The search list in DNS wire format (RFC 1035 §3.1, uncompressed), at most 255 bytes.
    search_wire: Vec<u8>,
    network: u32,
    mask: u32,
}

/// UDP ports (RFC 2131 §4.1).
const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;
const IPV4_HDR_LEN: usize = 20;
const UDP_HDR_LEN: usize = 8;
const PROTO_UDP: u8 = 17;
const FRAGMENT_MASK: u16 = 0x3fff;
const TTL: u8 = 64;
/// The fixed BOOTP fields before the magic cookie (RFC 2131 §2, figure 1).
const BOOTP_LEN: usize = 236;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Where options start: the fixed fields and the cookie.
const OPTIONS_AT: usize = BOOTP_LEN + 4;
/// The smallest BOOTP message; replies are padded to it (RFC 1542 §2.1: some relays and old
/// clients drop shorter ones).
const MIN_MESSAGE: usize = 300;
/// The largest IP datagram every client accepts (RFC 2131 §2: 576, unless option 57 says more).
const MIN_MAX_MESSAGE: usize = 576;
/// Where the DHCP message starts in a reply frame.
const REPLY_MSG_AT: usize = ETH_HDR_LEN + IPV4_HDR_LEN + UDP_HDR_LEN;
const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
const HTYPE_ETHERNET: u8 = 1;
const FLAG_BROADCAST: u16 = 0x8000;

// Message types (option 53, RFC 2132 §9.6).
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const DECLINE: u8 = 4;
const ACK: u8 = 5;
const NAK: u8 = 6;
const RELEASE: u8 = 7;
const INFORM: u8 = 8;

// Options (RFC 2132).
const OPT_PAD: u8 = 0;
const OPT_SUBNET_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_DOMAIN: u8 = 15;
const OPT_MTU: u8 = 26;
const OPT_BROADCAST: u8 = 28;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_LEASE_TIME: u8 = 51;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_MESSAGE: u8 = 56;
const OPT_MAX_MESSAGE: u8 = 57;
const OPT_T1: u8 = 58;
const OPT_T2: u8 = 59;
const OPT_CLIENT_ID: u8 = 61;
const OPT_SEARCH: u8 = 119;
const OPT_END: u8 = 255;

type Answer4 = DhcpAnswer<Dhcp4Reply>;

impl DhcpServer {
    /// Checks `cfg` and encodes what can be encoded once.
    pub fn new(cfg: DhcpConfig) -> Result<Self, DhcpConfigError> {
        let mask = u32::from(cfg.subnet_mask);
        if mask.leading_ones() + mask.trailing_zeros() != 32 {
            return Err(DhcpConfigError::BadMask(cfg.subnet_mask));
        }
        let network = u32::from(cfg.server_ip) & mask;
        let server = u32::from(cfg.server_ip);
        if mask.leading_ones() <= 30 && (server == network || server == network | !mask) {
            return Err(DhcpConfigError::BadServerAddress(cfg.server_ip.into()));
        }
        if cfg.dns.len() > 63 {
            return Err(DhcpConfigError::TooManyDnsServers(cfg.dns.len()));
        }
        if let Some(mtu) = cfg.mtu.filter(|&m| m < 68) {
            return Err(DhcpConfigError::MtuTooSmall(mtu));
        }
        if cfg.lease_secs == 0 {
            return Err(DhcpConfigError::ZeroLease);
        }
        if let Some(d) = &cfg.domain {
            encode_name(d, &mut Vec::new())?;
        }
        let search_wire = encode_search_list(&cfg.search)?;
        Ok(DhcpServer { cfg, search_wire, network, mask })
    }

    pub fn config(&self) -> &DhcpConfig {
        &self.cfg
    }

    /// Answers the bare Ethernet frame `eth`, writing any reply to the start of `out` (a
    /// [`crate::REPLY_BUF`]-sized buffer is plenty), with leases from `store`.
    pub fn handle<S>(&self, eth: &[u8], now_secs: u64, store: &mut S, out: &mut [u8]) -> Answer4
    where
        S: LeaseStore<Ipv4Addr> + ?Sized,
    {
        let req = match self.parse(eth) {
            Ok(req) => req,
            Err(a) => return a,
        };
        match req.msg_type {
            DISCOVER => self.discover(&req, store, out),
            REQUEST => self.request(&req, now_secs, store, out),
            DECLINE => match req.requested {
                Some(addr) if self.ours(&req) => {
                    store.decline(req.client_key(), addr);
                    DhcpAnswer::Declined
                }
                Some(_) => DhcpAnswer::Ignored,
                None => DhcpAnswer::Malformed,
            },
            RELEASE => {
                if req.ciaddr.is_unspecified() {
                    DhcpAnswer::Malformed
                } else if self.ours(&req) {
                    store.release(req.client_key(), req.ciaddr);
                    DhcpAnswer::Released
                } else {
                    DhcpAnswer::Ignored
                }
            }
            INFORM => {
                let a = self.reply(&req, ACK, Ipv4Addr::UNSPECIFIED, false, out);
                a.map_or(DhcpAnswer::TooBig, |len| DhcpAnswer::Reply { kind: Dhcp4Reply::Ack, len })
            }
            // OFFER, ACK, NAK (another server on the link) and the types of later RFCs.
            _ => DhcpAnswer::Ignored,
        }
    }

    fn discover<S>(&self, req: &Request<'_>, store: &mut S, out: &mut [u8]) -> Answer4
    where
        S: LeaseStore<Ipv4Addr> + ?Sized,
    {
        let hint = req.requested.filter(|&a| self.assignable(a));
        let Some(addr) = store.offer(req.client_key(), req.chaddr, hint).filter(|&a| self.assignable(a)) else {
            return DhcpAnswer::NoAddress;
        };
        match self.reply(req, OFFER, addr, true, out) {
            Some(len) => DhcpAnswer::Reply { kind: Dhcp4Reply::Offer, len },
            None => DhcpAnswer::TooBig,
        }
    }

    fn request<S>(&self, req: &Request<'_>, now_secs: u64, store: &mut S, out: &mut [u8]) -> Answer4
    where
        S: LeaseStore<Ipv4Addr> + ?Sized,
    {
        let addr = match (req.server_id, req.requested) {
            // SELECTING, another server's offer was taken: our offer recorded nothing to undo.
            (Some(_), _) if !self.ours(req) => return DhcpAnswer::Ignored,
            // SELECTING, and our offer was the one taken.
            (Some(_), Some(addr)) => addr,
            // SELECTING without the address it selected.
            (Some(_), None) => return DhcpAnswer::Malformed,
            // INIT-REBOOT: the address it remembers.
            (None, Some(addr)) => addr,
            // RENEWING (unicast) or REBINDING (broadcast).
            (None, None) if !req.ciaddr.is_unspecified() => req.ciaddr,
            (None, None) => return DhcpAnswer::Malformed,
        };
        let key = req.client_key();
        let confirmed = self.assignable(addr)
            && store.lookup(key).is_none_or(|(held, _)| held == addr)
            && store.offer(key, req.chaddr, Some(addr)) == Some(addr);
        let (kind, code) = if confirmed {
            if !store.commit(key, req.chaddr, addr, self.expiry(now_secs)) {
                return DhcpAnswer::CommitFailed;
            }
            (Dhcp4Reply::Ack, ACK)
        } else {
            (Dhcp4Reply::Nak, NAK)
        };
        match self.reply(req, code, addr, true, out) {
            Some(len) => DhcpAnswer::Reply { kind, len },
            None => DhcpAnswer::TooBig,
        }
    }

    /// When a lease committed at `now_secs` expires.
    fn expiry(&self, now_secs: u64) -> u64 {
        if self.cfg.lease_secs == u32::MAX {
            u64::MAX
        } else {
            now_secs.saturating_add(u64::from(self.cfg.lease_secs))
        }
    }

    /// True when the message names no server, or this one.
    fn ours(&self, req: &Request<'_>) -> bool {
        req.server_id.is_none_or(|s| s == self.cfg.server_ip)
    }

    /// A host address of the network other than the server's own.
    fn assignable(&self, a: Ipv4Addr) -> bool {
        let a = u32::from(a);
        let point_to_point = self.mask.leading_ones() > 30;
        a & self.mask == self.network
            && a != u32::from(self.cfg.server_ip)
            && (point_to_point || (a != self.network && a != self.network | !self.mask))
    }

    /// Validates the frame down to the DHCP options and extracts what the server needs.
    fn parse<'a>(&self, eth: &'a [u8]) -> Result<Request<'a>, Answer4> {
        let Some((e, ip)) = eth.split_first_chunk::<ETH_HDR_LEN>() else { return Err(DhcpAnswer::NotDhcp) };
        let dst_mac = mac_at(e, 0);
        if u16::from_be_bytes([e[12], e[13]]) != ETHERTYPE_IPV4 || mac_at(e, 6).is_multicast() {
            return Err(DhcpAnswer::NotDhcp);
        }
        let Some(h) = ip.first_chunk::<IPV4_HDR_LEN>() else { return Err(DhcpAnswer::Malformed) };
        let ihl = usize::from(h[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
        if h[0] >> 4 != 4 || ihl < IPV4_HDR_LEN || total < ihl || total > ip.len() {
            return Err(DhcpAnswer::Malformed);
        }
        if h[9] != PROTO_UDP || u16::from_be_bytes([h[6], h[7]]) & FRAGMENT_MASK != 0 {
            return Err(DhcpAnswer::NotDhcp);
        }
        if checksum::of(&ip[..ihl]) != 0 {
            return Err(DhcpAnswer::Malformed);
        }
        let udp = &ip[ihl..total];
        let Some(u) = udp.first_chunk::<UDP_HDR_LEN>() else { return Err(DhcpAnswer::Malformed) };
        if u16::from_be_bytes([u[2], u[3]]) != SERVER_PORT {
            return Err(DhcpAnswer::NotDhcp);
        }
        let udp_len = usize::from(u16::from_be_bytes([u[4], u[5]]));
        if udp_len < UDP_HDR_LEN || udp_len > udp.len() {
            return Err(DhcpAnswer::Malformed);
        }
        let udp = &udp[..udp_len];
        if u16::from_be_bytes([u[6], u[7]]) != 0 {
            let pseudo = checksum::add(checksum::add(0, &h[12..20]), &[0, PROTO_UDP]);
            // `udp_len` came from a u16.
            let pseudo = checksum::add(pseudo, &(udp_len as u16).to_be_bytes());
            if checksum::finish(checksum::add(pseudo, udp)) != 0 {
                return Err(DhcpAnswer::Malformed);
            }
        }
        if u16::from_be_bytes([u[0], u[1]]) != CLIENT_PORT {
            // A relay agent (port 67) or something else: not served.
            return Err(DhcpAnswer::Ignored);
        }
        let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
        let to_us = (dst.is_broadcast() && dst_mac.is_broadcast()) || (dst == self.cfg.server_ip && dst_mac == self.cfg.server_mac);
        if !to_us {
            return Err(DhcpAnswer::Ignored);
        }

        let msg = &udp[UDP_HDR_LEN..];
        let Some(fixed) = msg.first_chunk::<OPTIONS_AT>() else { return Err(DhcpAnswer::Malformed) };
        if fixed[0] != BOOTREQUEST || fixed[1] != HTYPE_ETHERNET || fixed[2] != 6 || fixed[236..240] != MAGIC_COOKIE {
            // A BOOTREPLY, another link layer, plain BOOTP: none of them ours.
            return Err(DhcpAnswer::Ignored);
        }
        if fixed[24..28] != [0; 4] {
            return Err(DhcpAnswer::Ignored);
        }
        let chaddr = mac_at(fixed, 28);
        if chaddr.is_multicast() || chaddr.is_zero() {
            return Err(DhcpAnswer::Malformed);
        }
        let opts = parse_options(&msg[OPTIONS_AT..]).ok_or(DhcpAnswer::Malformed)?;
        let Some(msg_type) = opts.msg_type else { return Err(DhcpAnswer::Ignored) };
        Ok(Request {
            msg_type,
            fixed,
            ciaddr: Ipv4Addr::new(fixed[12], fixed[13], fixed[14], fixed[15]),
            chaddr,
            requested: opts.requested,
            server_id: opts.server_id,
            client_id: opts.client_id,
            max_message: opts.max_message,
        })
    }

    /// Writes a reply of type `code` to `req` into `out`: `yiaddr` (unspecified for INFORM and
    /// NAK), with the lease times when `lease`. Returns its length, or `None` when it does not fit.
    fn reply(&self, req: &Request<'_>, code: u8, yiaddr: Ipv4Addr, lease: bool, out: &mut [u8]) -> Option<usize> {
        let cfg = &self.cfg;
        let nak = code == NAK;
        let yiaddr = if nak { Ipv4Addr::UNSPECIFIED } else { yiaddr };
        // The IP datagram may be as large as the client said it accepts (and at least 576).
        let max_ip = req.max_message.map_or(MIN_MAX_MESSAGE, |m| usize::from(m).max(MIN_MAX_MESSAGE));
        let cap = out.len().min(ETH_HDR_LEN + max_ip);
        let msg = out.get_mut(REPLY_MSG_AT..cap)?;
        let fixed = msg.get_mut(..OPTIONS_AT)?;
        fixed.fill(0);
        fixed[0] = BOOTREPLY;
        fixed[1] = HTYPE_ETHERNET;
        fixed[2] = 6;
        fixed[4..8].copy_from_slice(&req.fixed[4..8]); // xid
        fixed[10..12].copy_from_slice(&req.fixed[10..12]); // flags
        if code == ACK {
            fixed[12..16].copy_from_slice(&req.ciaddr.octets());
        }
        fixed[16..20].copy_from_slice(&yiaddr.octets());
        fixed[24..28].copy_from_slice(&req.fixed[24..28]); // giaddr
        fixed[28..44].copy_from_slice(&req.fixed[28..44]); // chaddr
        fixed[236..240].copy_from_slice(&MAGIC_COOKIE);

        // Options, leaving room for the end option.
        let end_room = msg.len().checked_sub(1)?;
        let mut w = Cursor::new(msg.get_mut(..end_room)?);
        w.skip(OPTIONS_AT)?;
        w.opt(OPT_MESSAGE_TYPE, &[code])?;
        w.opt(OPT_SERVER_ID, &cfg.server_ip.octets())?;
        if !nak {
            if lease {
                let l = cfg.lease_secs;
                let (t1, t2) = if l == u32::MAX { (l, l) } else { (l / 2, (u64::from(l) * 7 / 8) as u32) };
                w.opt(OPT_LEASE_TIME, &l.to_be_bytes())?;
                w.opt(OPT_T1, &t1.to_be_bytes())?;
                w.opt(OPT_T2, &t2.to_be_bytes())?;
            }
            w.opt(OPT_SUBNET_MASK, &cfg.subnet_mask.octets())?;
            w.opt(OPT_BROADCAST, &(self.network | !self.mask).to_be_bytes())?;
            w.opt(OPT_ROUTER, &cfg.server_ip.octets())?;
            if !cfg.dns.is_empty() {
                // At most 63 servers (checked in `new`): 252 bytes.
                w.opt_header(OPT_DNS, cfg.dns.len() * 4)?;
                for d in &cfg.dns {
                    w.put(&d.octets())?;
                }
            }
            if let Some(mtu) = cfg.mtu {
                w.opt(OPT_MTU, &mtu.to_be_bytes())?;
            }
            // What only adds comfort is left out when the client's size limit (or `out`) leaves no room.
            if let Some(d) = &cfg.domain {
                w.opt_if_fits(OPT_DOMAIN, d.trim_end_matches('.').as_bytes());
            }
            if !self.search_wire.is_empty() {
                w.opt_if_fits(OPT_SEARCH, &self.search_wire);
            }
        } else {
            w.opt_if_fits(OPT_MESSAGE, b"address not available on this network");
        }
        if let Some(id) = req.client_id {
            // RFC 6842: echo the client identifier.
            w.opt_if_fits(OPT_CLIENT_ID, id);
        }
        let mut msg_len = w.pos();
        msg[msg_len] = OPT_END;
        msg_len += 1;
        if msg_len < MIN_MESSAGE {
            msg.get_mut(msg_len..MIN_MESSAGE)?.fill(OPT_PAD);
            msg_len = MIN_MESSAGE;
        }

        let (dst_mac, dst_ip) = if nak {
            (Mac::BROADCAST, Ipv4Addr::BROADCAST)
        } else if !req.ciaddr.is_unspecified() {
            (req.chaddr, req.ciaddr)
        } else if req.flags() & FLAG_BROADCAST != 0 || cfg.broadcast_replies || yiaddr.is_unspecified() {
            (Mac::BROADCAST, Ipv4Addr::BROADCAST)
        } else {
            (req.chaddr, yiaddr)
        };
        let len = REPLY_MSG_AT + msg_len;
        write_ipv4_udp(&mut out[..len], cfg.server_mac, cfg.server_ip, dst_mac, dst_ip);
        Some(len)
    }
}

/// Fills in the Ethernet, IPv4 and UDP headers (lengths and checksums included) of `frame`, a
/// DHCP reply whose message already follows them.
fn write_ipv4_udp(frame: &mut [u8], src_mac: Mac, src: Ipv4Addr, dst_mac: Mac, dst: Ipv4Addr) {
    write_eth(frame, dst_mac, src_mac, ETHERTYPE_IPV4);
    let (h, udp) = frame[ETH_HDR_LEN..].split_at_mut(IPV4_HDR_LEN);
    // A reply is at most 14 + 65535 bytes: `reply` capped it at the client's u16 maximum.
    let ip_len = (IPV4_HDR_LEN + udp.len()) as u16;
    let udp_len = udp.len() as u16;
    h.copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, TTL, PROTO_UDP, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    h[2..4].copy_from_slice(&ip_len.to_be_bytes());
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let sum = checksum::of(h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    udp[0..2].copy_from_slice(&SERVER_PORT.to_be_bytes());
    udp[2..4].copy_from_slice(&CLIENT_PORT.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].fill(0);
    let pseudo = checksum::add(checksum::add(checksum::add(0, &h[12..20]), &[0, PROTO_UDP]), &udp_len.to_be_bytes());
    // 0 means "no checksum" in UDP over IPv4; a computed 0 is sent as its equivalent, ffff.
    let sum = match checksum::finish(checksum::add(pseudo, udp)) {
        0 => 0xffff,
        s => s,
    };
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
}

/// A DHCP request, checked.
#[derive(Debug)]
struct Request<'a> {
    msg_type: u8,
    /// The fixed BOOTP fields and the cookie.
    fixed: &'a [u8; OPTIONS_AT],
    ciaddr: Ipv4Addr,
    chaddr: Mac,
    requested: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
    client_id: Option<&'a [u8]>,
    max_message: Option<u16>,
}

impl Request<'_> {
    /// The client's identity for the lease store: option 61, else the hardware address.
    fn client_key(&self) -> &[u8] {
        self.client_id.unwrap_or(&self.fixed[28..34])
    }

    fn flags(&self) -> u16 {
        u16::from_be_bytes([self.fixed[10], self.fixed[11]])
    }
}

/// The options a server acts on.
#[derive(Debug, Default)]
struct Options<'a> {
    msg_type: Option<u8>,
    requested: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
    client_id: Option<&'a [u8]>,
    max_message: Option<u16>,
}

/// Parses the options field (RFC 2132 §2): pad bytes, code-length-value triples, an end option
/// (or the end of the datagram). The first instance of an option counts. `None` when an option
/// runs past the datagram or has a length its definition forbids. Option overload (52) is not
/// honoured: the options a server needs are never moved to `sname` or `file` by real clients.
fn parse_options(mut b: &[u8]) -> Option<Options<'_>> {
    let mut o = Options::default();
    loop {
        match b {
            [] | [OPT_END, ..] => return Some(o),
            [OPT_PAD, rest @ ..] => b = rest,
            [code, len, rest @ ..] => {
                let len = usize::from(*len);
                let (v, rest) = rest.split_at_checked(len)?;
                let v4 = || <[u8; 4]>::try_from(v).ok().map(Ipv4Addr::from);
                if *code == OPT_CLIENT_ID && len < 2 {
                    // RFC 2132 §9.14: a type and at least one byte.
                    return None;
                }
                match *code {
                    OPT_MESSAGE_TYPE if o.msg_type.is_none() => o.msg_type = Some(*v.first().filter(|_| len == 1)?),
                    OPT_REQUESTED_IP if o.requested.is_none() => o.requested = Some(v4()?),
                    OPT_SERVER_ID if o.server_id.is_none() => o.server_id = Some(v4()?),
                    OPT_CLIENT_ID if o.client_id.is_none() => o.client_id = Some(v),
                    OPT_MAX_MESSAGE if o.max_message.is_none() => {
                        o.max_message = Some(u16::from_be_bytes(<[u8; 2]>::try_from(v).ok()?));
                    }
                    _ => {}
                }
                b = rest;
            }
            // A code with no room for its length.
            [_] => return None,
        }
    }
}

/// Encodes a domain name in DNS wire format (RFC 1035 §3.1, no compression) onto `out`.
pub(crate) fn encode_name(name: &str, out: &mut Vec<u8>) -> Result<(), DhcpConfigError> {
    let bad = || DhcpConfigError::BadDomainName(name.to_string());
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() || trimmed.len() > 253 {
        return Err(bad());
    }
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() > 63 || !label.bytes().all(|c| c.is_ascii_graphic()) {
            return Err(bad());
        }
        // At most 63: the cast keeps it.
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Ok(())
}

/// Encodes a search list as the value of one option (DHCPv4 119, DHCPv6 24): at most 255 bytes.
pub(crate) fn encode_search_list(names: &[String]) -> Result<Vec<u8>, DhcpConfigError> {
    let mut wire = Vec::new();
    for n in names {
        encode_name(n, &mut wire)?;
    }
    if wire.len() > 255 {
        return Err(DhcpConfigError::SearchListTooLong(wire.len()));
    }
    Ok(wire)
}

/// Writes into a buffer front to back; every write checks the room left, `None` when there is none.
#[derive(Debug)]
pub(crate) struct Cursor<'o> {
    buf: &'o mut [u8],
    at: usize,
}

impl<'o> Cursor<'o> {
    pub(crate) fn new(buf: &'o mut [u8]) -> Self {
        Cursor { buf, at: 0 }
    }

    /// Bytes written (or skipped) so far.
    pub(crate) fn pos(&self) -> usize {
        self.at
    }

    pub(crate) fn put(&mut self, b: &[u8]) -> Option<()> {
        let end = self.at.checked_add(b.len())?;
        self.buf.get_mut(self.at..end)?.copy_from_slice(b);
        self.at = end;
        Some(())
    }

    pub(crate) fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len())?;
        self.at = end;
        Some(())
    }

    pub(crate) fn u16(&mut self, v: u16) -> Option<()> {
        self.put(&v.to_be_bytes())
    }

    pub(crate) fn u32(&mut self, v: u32) -> Option<()> {
        self.put(&v.to_be_bytes())
    }

    /// Writes `v` at `at`, somewhere already written (a length filled in afterwards).
    pub(crate) fn patch_u16(&mut self, at: usize, v: u16) -> Option<()> {
        self.buf.get_mut(at..at.checked_add(2)?)?.copy_from_slice(&v.to_be_bytes());
        Some(())
    }

    /// A DHCPv4 option: code, length, value (at most 255 bytes).
    fn opt(&mut self, code: u8, v: &[u8]) -> Option<()> {
        self.opt_header(code, v.len())?;
        self.put(v)
    }

    fn opt_header(&mut self, code: u8, len: usize) -> Option<()> {
        self.put(&[code, u8::try_from(len).ok()?])
    }

    /// Writes the option if it fits, and otherwise nothing.
    fn opt_if_fits(&mut self, code: u8, v: &[u8]) {
        let at = self.at;
        if self.opt(code, v).is_none() {
            self.at = at;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::answer::REPLY_BUF;
    use crate::fixtures::{CLIENT_MAC, GW_MAC};

    // Generated independently of this crate (Python, its own checksums), as in `fixtures.rs`.

    /// busybox udhcpc's DISCOVER: broadcast, flags 0, client id 01+MAC, max size 576, its parameter list and vendor class, zero-padded to 300 bytes.
    #[rustfmt::skip]
    const DISCOVER_FRAME: [u8; 342] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x08, 0x00, 0x45, 0x00,
        0x01, 0x48, 0x00, 0x00, 0x00, 0x00, 0x40, 0x11, 0x79, 0xa6, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
        0xff, 0xff, 0x00, 0x44, 0x00, 0x43, 0x01, 0x34, 0x3b, 0x74, 0x01, 0x01, 0x06, 0x00, 0x39, 0x03,
        0xf3, 0x26, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x63, 0x82, 0x53, 0x63, 0x35, 0x01, 0x01, 0x3d, 0x07, 0x01,
        0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x39, 0x02, 0x02, 0x40, 0x37, 0x07, 0x01, 0x03, 0x06, 0x0c,
        0x0f, 0x1c, 0x2a, 0x3c, 0x0c, 0x75, 0x64, 0x68, 0x63, 0x70, 0x20, 0x31, 0x2e, 0x33, 0x36, 0x2e,
        0x31, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    /// udhcpc's REQUEST after the OFFER (selecting): requested address 172.17.0.2, server identifier 172.17.0.1.
    #[rustfmt::skip]
    const REQUEST_FRAME: [u8; 342] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x08, 0x00, 0x45, 0x00,
        0x01, 0x48, 0x00, 0x00, 0x00, 0x00, 0x40, 0x11, 0x79, 0xa6, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
        0xff, 0xff, 0x00, 0x44, 0x00, 0x43, 0x01, 0x34, 0x79, 0x45, 0x01, 0x01, 0x06, 0x00, 0x39, 0x03,
        0xf3, 0x26, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x63, 0x82, 0x53, 0x63, 0x35, 0x01, 0x03, 0x3d, 0x07, 0x01,
        0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x32, 0x04, 0xac, 0x11, 0x00, 0x02, 0x36, 0x04, 0xac, 0x11,
        0x00, 0x01, 0x39, 0x02, 0x02, 0x40, 0x37, 0x07, 0x01, 0x03, 0x06, 0x0c, 0x0f, 0x1c, 0x2a, 0x3c,
        0x0c, 0x75, 0x64, 0x68, 0x63, 0x70, 0x20, 0x31, 0x2e, 0x33, 0x36, 0x2e, 0x31, 0xff, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    /// udhcpc renewing at T1: unicast to the server, ciaddr 172.17.0.2, no requested address or server identifier.
    #[rustfmt::skip]
    const RENEW_FRAME: [u8; 342] = [
        0x02, 0x42, 0xac, 0x11, 0x00, 0x01, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x08, 0x00, 0x45, 0x00,
        0x01, 0x48, 0x00, 0x00, 0x00, 0x00, 0x40, 0x11, 0x21, 0x80, 0xac, 0x11, 0x00, 0x02, 0xac, 0x11,
        0x00, 0x01, 0x00, 0x44, 0x00, 0x43, 0x01, 0x34, 0x1c, 0xfe, 0x01, 0x01, 0x06, 0x00, 0x11, 0x22,
        0x33, 0x44, 0x00, 0x00, 0x00, 0x00, 0xac, 0x11, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x63, 0x82, 0x53, 0x63, 0x35, 0x01, 0x03, 0x3d, 0x07, 0x01,
        0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x39, 0x02, 0x02, 0x40, 0x37, 0x07, 0x01, 0x03, 0x06, 0x0c,
        0x0f, 0x1c, 0x2a, 0x3c, 0x0c, 0x75, 0x64, 0x68, 0x63, 0x70, 0x20, 0x31, 0x2e, 0x33, 0x36, 0x2e,
        0x31, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    /// The OFFER for [`DISCOVER_FRAME`]: unicast to yiaddr and chaddr (broadcast flag clear), every configured option, the client id echoed (RFC 6842).
    #[rustfmt::skip]
    const OFFER_FRAME: [u8; 377] = [
        0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x02, 0x42, 0xac, 0x11, 0x00, 0x01, 0x08, 0x00, 0x45, 0x00,
        0x01, 0x6b, 0x00, 0x00, 0x00, 0x00, 0x40, 0x11, 0x21, 0x5d, 0xac, 0x11, 0x00, 0x01, 0xac, 0x11,
        0x00, 0x02, 0x00, 0x43, 0x00, 0x44, 0x01, 0x57, 0xaf, 0x2f, 0x02, 0x01, 0x06, 0x00, 0x39, 0x03,
        0xf3, 0x26, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xac, 0x11, 0x00, 0x02, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x63, 0x82, 0x53, 0x63, 0x35, 0x01, 0x02, 0x36, 0x04, 0xac,
        0x11, 0x00, 0x01, 0x33, 0x04, 0x00, 0x00, 0x0e, 0x10, 0x3a, 0x04, 0x00, 0x00, 0x07, 0x08, 0x3b,
        0x04, 0x00, 0x00, 0x0c, 0x4e, 0x01, 0x04, 0xff, 0xff, 0x00, 0x00, 0x1c, 0x04, 0xac, 0x11, 0xff,
        0xff, 0x03, 0x04, 0xac, 0x11, 0x00, 0x01, 0x06, 0x04, 0xac, 0x11, 0x00, 0x01, 0x1a, 0x02, 0x05,
        0xdc, 0x0f, 0x0c, 0x76, 0x73, 0x77, 0x69, 0x74, 0x63, 0x68, 0x2e, 0x74, 0x65, 0x73, 0x74, 0x77,
        0x0e, 0x07, 0x76, 0x73, 0x77, 0x69, 0x74, 0x63, 0x68, 0x04, 0x74, 0x65, 0x73, 0x74, 0x00, 0x3d,
        0x07, 0x01, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0xff,
    ];

    /// An in-memory pool over 172.17.0.2..=172.17.0.9, as the control plane's would behave.
    #[derive(Debug, Default)]
    struct Pool {
        leases: HashMap<Vec<u8>, (Ipv4Addr, u64)>,
        declined: Vec<Ipv4Addr>,
        commits: usize,
        fail_commits: bool,
    }

    impl Pool {
        fn taken(&self, a: Ipv4Addr, by: &[u8]) -> bool {
            self.declined.contains(&a) || self.leases.iter().any(|(k, (l, _))| *l == a && k.as_slice() != by)
        }
    }

    impl LeaseStore<Ipv4Addr> for Pool {
        fn offer(&mut self, client: &[u8], _mac: Mac, requested: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
            if let Some((a, _)) = self.leases.get(client) {
                return Some(*a);
            }
            let pool = (2..10u8).map(|i| Ipv4Addr::new(172, 17, 0, i));
            requested
                .filter(|r| pool.clone().any(|a| a == *r) && !self.taken(*r, client))
                .or_else(|| pool.into_iter().find(|a| !self.taken(*a, client)))
        }

        fn commit(&mut self, client: &[u8], _mac: Mac, addr: Ipv4Addr, expires_at_secs: u64) -> bool {
            if self.fail_commits || self.taken(addr, client) {
                return false;
            }
            self.commits += 1;
            self.leases.insert(client.to_vec(), (addr, expires_at_secs));
            true
        }

        fn release(&mut self, client: &[u8], addr: Ipv4Addr) {
            if self.leases.get(client).is_some_and(|(a, _)| *a == addr) {
                self.leases.remove(client);
            }
        }

        fn decline(&mut self, client: &[u8], addr: Ipv4Addr) {
            self.release(client, addr);
            self.declined.push(addr);
        }

        fn lookup(&self, client: &[u8]) -> Option<(Ipv4Addr, u64)> {
            self.leases.get(client).copied()
        }
    }

    fn server() -> DhcpServer {
        let mut c = DhcpConfig::new(GW_MAC, "172.17.0.1".parse().unwrap(), "255.255.0.0".parse().unwrap());
        c.dns = vec!["172.17.0.1".parse().unwrap()];
        c.domain = Some("vswitch.test".into());
        c.search = vec!["vswitch.test".into()];
        c.mtu = Some(1500);
        DhcpServer::new(c).unwrap()
    }

    const NOW: u64 = 1_700_000_000;
    const CLIENT_ID: [u8; 7] = [1, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02];

    fn ask(s: &DhcpServer, pool: &mut Pool, f: &[u8]) -> (Answer4, Vec<u8>) {
        let mut out = [0u8; REPLY_BUF];
        let a = s.handle(f, NOW, pool, &mut out);
        (a, out[..a.reply_len().unwrap_or(0)].to_vec())
    }

    /// An independent reading of a reply: the checksums verify, and the fields and options.
    #[derive(Debug)]
    struct Parsed {
        dst_mac: Mac,
        src_ip: Ipv4Addr,
        dst_ip: Ipv4Addr,
        xid: u32,
        flags: u16,
        ciaddr: Ipv4Addr,
        yiaddr: Ipv4Addr,
        chaddr: Mac,
        opts: HashMap<u8, Vec<u8>>,
    }

    fn read(f: &[u8]) -> Parsed {
        assert_eq!(f[12..14], [0x08, 0x00]);
        let ip = &f[14..];
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        assert_eq!(total, ip.len(), "no padding after the datagram");
        assert_eq!(checksum::of(&ip[..20]), 0, "IP header checksum");
        let udp = &ip[20..];
        assert_eq!(usize::from(u16::from_be_bytes([udp[4], udp[5]])), udp.len());
        assert_eq!(udp[0..4], [0, 67, 0, 68]);
        let mut pseudo = ip[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&udp[4..6]);
        assert_eq!(checksum::finish(checksum::add(checksum::add(0, &pseudo), udp)), 0, "UDP checksum");
        let m = &udp[8..];
        assert!(m.len() >= 300);
        assert_eq!((m[0], m[1], m[2]), (2, 1, 6));
        assert_eq!(m[236..240], MAGIC_COOKIE);
        let mut opts = HashMap::new();
        let mut i = 240;
        while m[i] != 255 {
            if m[i] == 0 {
                i += 1;
                continue;
            }
            let len = usize::from(m[i + 1]);
            assert!(opts.insert(m[i], m[i + 2..i + 2 + len].to_vec()).is_none(), "option {} twice", m[i]);
            i += 2 + len;
        }
        assert!(m[i + 1..].iter().all(|&b| b == 0), "only padding after the end option");
        let v4 = |at: usize| Ipv4Addr::new(m[at], m[at + 1], m[at + 2], m[at + 3]);
        Parsed {
            dst_mac: Mac::from_slice(&f[0..6]),
            src_ip: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
            dst_ip: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
            xid: u32::from_be_bytes([m[4], m[5], m[6], m[7]]),
            flags: u16::from_be_bytes([m[10], m[11]]),
            ciaddr: v4(12),
            yiaddr: v4(16),
            chaddr: Mac::from_slice(&m[28..34]),
            opts,
        }
    }

    /// A client message built like udhcpc's: `opts` (code, value) before the end option,
    /// `ciaddr`, the broadcast flag, sent broadcast or unicast to the server as `unicast` says.
    fn client(msg_type: u8, ciaddr: Ipv4Addr, broadcast: bool, unicast: bool, opts: &[(u8, &[u8])]) -> Vec<u8> {
        let mut m = vec![0u8; 240];
        m[0..4].copy_from_slice(&[1, 1, 6, 0]);
        m[4..8].copy_from_slice(&0x0bad_cafeu32.to_be_bytes());
        if broadcast {
            m[10] = 0x80;
        }
        m[12..16].copy_from_slice(&ciaddr.octets());
        m[28..34].copy_from_slice(&CLIENT_MAC.0);
        m[236..240].copy_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[OPT_MESSAGE_TYPE, 1, msg_type]);
        for (code, v) in opts {
            m.push(*code);
            m.push(v.len() as u8);
            m.extend_from_slice(v);
        }
        m.push(OPT_END);
        m.resize(m.len().max(300), 0);
        let (dst_mac, src, dst) = if unicast {
            (GW_MAC, ciaddr, Ipv4Addr::new(172, 17, 0, 1))
        } else {
            (Mac::BROADCAST, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST)
        };
        udp4(dst_mac, src, dst, 68, 67, &m)
    }

    /// A UDP datagram in IPv4 in Ethernet from the client, every length and checksum right.
    fn udp4(dst_mac: Mac, src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; REPLY_MSG_AT];
        f.extend_from_slice(payload);
        write_eth(&mut f, dst_mac, CLIENT_MAC, ETHERTYPE_IPV4);
        let udp_len = (8 + payload.len()) as u16;
        f[14..34].copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        f[16..18].copy_from_slice(&(udp_len + 20).to_be_bytes());
        f[26..30].copy_from_slice(&src.octets());
        f[30..34].copy_from_slice(&dst.octets());
        let c = checksum::of(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f[38..40].copy_from_slice(&udp_len.to_be_bytes());
        let mut pseudo = f[26..34].to_vec();
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&udp_len.to_be_bytes());
        let c = checksum::finish(checksum::add(checksum::add(0, &pseudo), &f[34..]));
        f[40..42].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn discover_gets_the_exact_offer_and_records_nothing() {
        let s = server();
        let mut pool = Pool::default();
        let (a, reply) = ask(&s, &mut pool, &DISCOVER_FRAME);
        assert_eq!(a, DhcpAnswer::Reply { kind: Dhcp4Reply::Offer, len: OFFER_FRAME.len() });
        assert_eq!(reply, OFFER_FRAME);
        read(&reply);
        assert_eq!(pool.commits, 0);
        assert!(pool.leases.is_empty());
    }

    #[test]
    fn full_dora_then_renew_rebind_and_release() {
        let s = server();
        let mut pool = Pool::default();
        let offer = read(&ask(&s, &mut pool, &DISCOVER_FRAME).1);
        assert_eq!((offer.yiaddr, offer.dst_ip, offer.dst_mac, offer.chaddr), (ip("172.17.0.2"), ip("172.17.0.2"), CLIENT_MAC, CLIENT_MAC));
        assert_eq!(offer.xid, 0x3903_f326);
        assert_eq!(offer.opts[&OPT_MESSAGE_TYPE], [OFFER]);

        let (a, reply) = ask(&s, &mut pool, &REQUEST_FRAME);
        assert!(matches!(a, DhcpAnswer::Reply { kind: Dhcp4Reply::Ack, .. }), "{a:?}");
        let ack = read(&reply);
        assert_eq!((ack.yiaddr, ack.ciaddr, ack.dst_ip, ack.src_ip), (ip("172.17.0.2"), ip("0.0.0.0"), ip("172.17.0.2"), ip("172.17.0.1")));
        assert_eq!(ack.opts[&OPT_MESSAGE_TYPE], [ACK]);
        for (code, v) in [
            (OPT_SERVER_ID, &[172, 17, 0, 1][..]),
            (OPT_LEASE_TIME, &3600u32.to_be_bytes()),
            (OPT_T1, &1800u32.to_be_bytes()),
            (OPT_T2, &3150u32.to_be_bytes()),
            (OPT_SUBNET_MASK, &[255, 255, 0, 0]),
            (OPT_ROUTER, &[172, 17, 0, 1]),
            (OPT_DNS, &[172, 17, 0, 1]),
            (OPT_BROADCAST, &[172, 17, 255, 255]),
            (OPT_DOMAIN, b"vswitch.test"),
            (OPT_SEARCH, b"\x07vswitch\x04test\x00"),
            (OPT_MTU, &1500u16.to_be_bytes()),
            (OPT_CLIENT_ID, &CLIENT_ID),
        ] {
            assert_eq!(ack.opts[&code], v, "option {code}");
        }
        assert_eq!(pool.lookup(&CLIENT_ID), Some((ip("172.17.0.2"), NOW + 3600)));

        // Renewing: unicast, ciaddr set; the ACK goes to ciaddr and carries it.
        let (a, reply) = ask(&s, &mut pool, &RENEW_FRAME);
        assert!(matches!(a, DhcpAnswer::Reply { kind: Dhcp4Reply::Ack, .. }), "{a:?}");
        let ack = read(&reply);
        assert_eq!(
            (ack.ciaddr, ack.yiaddr, ack.dst_ip, ack.dst_mac, ack.xid),
            (ip("172.17.0.2"), ip("172.17.0.2"), ip("172.17.0.2"), CLIENT_MAC, 0x1122_3344)
        );
        assert_eq!(pool.commits, 2);

        // Rebinding: the same, broadcast.
        let cid: &[u8] = &CLIENT_ID;
        let rebind = client(REQUEST, ip("172.17.0.2"), false, false, &[(OPT_CLIENT_ID, cid)]);
        let ack = read(&ask(&s, &mut pool, &rebind).1);
        assert_eq!((ack.opts[&OPT_MESSAGE_TYPE][0], ack.dst_ip), (ACK, ip("172.17.0.2")));

        // A second DISCOVER from the same client is offered the same address.
        assert_eq!(read(&ask(&s, &mut pool, &DISCOVER_FRAME).1).yiaddr, ip("172.17.0.2"));

        // Release: no reply, the address is free again.
        let release = client(RELEASE, ip("172.17.0.2"), false, true, &[(OPT_CLIENT_ID, cid), (OPT_SERVER_ID, &[172, 17, 0, 1])]);
        assert_eq!(ask(&s, &mut pool, &release), (DhcpAnswer::Released, vec![]));
        assert_eq!(pool.lookup(&CLIENT_ID), None);
    }

    #[test]
    fn clients_without_an_identifier_are_known_by_their_hardware_address() {
        // dhclient's default: no option 61.
        let s = server();
        let mut pool = Pool::default();
        let discover = client(DISCOVER, Ipv4Addr::UNSPECIFIED, false, false, &[]);
        let offer = read(&ask(&s, &mut pool, &discover).1);
        assert!(!offer.opts.contains_key(&OPT_CLIENT_ID));
        let req = client(
            REQUEST,
            Ipv4Addr::UNSPECIFIED,
            false,
            false,
            &[(OPT_REQUESTED_IP, &offer.yiaddr.octets()), (OPT_SERVER_ID, &[172, 17, 0, 1])],
        );
        assert!(matches!(ask(&s, &mut pool, &req).0, DhcpAnswer::Reply { kind: Dhcp4Reply::Ack, .. }));
        assert_eq!(pool.lookup(&CLIENT_MAC.0).map(|l| l.0), Some(offer.yiaddr));
    }

    #[test]
    fn broadcast_flag_and_configuration_make_replies_broadcast() {
        let s = server();
        let mut pool = Pool::default();
        let discover = client(DISCOVER, Ipv4Addr::UNSPECIFIED, true, false, &[]);
        let offer = read(&ask(&s, &mut pool, &discover).1);
        assert_eq!((offer.dst_mac, offer.dst_ip, offer.flags), (Mac::BROADCAST, Ipv4Addr::BROADCAST, 0x8000));
        let mut cfg = s.config().clone();
        cfg.broadcast_replies = true;
        let s = DhcpServer::new(cfg).unwrap();
        let offer = read(&ask(&s, &mut pool, &DISCOVER_FRAME).1);
        assert_eq!((offer.dst_mac, offer.dst_ip), (Mac::BROADCAST, Ipv4Addr::BROADCAST));
    }

    #[test]
    fn wrong_requested_addresses_are_naked_broadcast() {
        let s = server();
        let mut pool = Pool::default();
        assert!(ask(&s, &mut pool, &REQUEST_FRAME).0.reply_len().is_some());
        let cid: &[u8] = &CLIENT_ID;
        // INIT-REBOOT with an address the client does not hold, or that no client may hold.
        for (what, addr) in [
            ("another address", "172.17.0.7"),
            ("another network", "10.0.0.2"),
            ("the server's", "172.17.0.1"),
            ("broadcast", "172.17.255.255"),
        ] {
            let req = client(REQUEST, Ipv4Addr::UNSPECIFIED, false, false, &[(OPT_CLIENT_ID, cid), (OPT_REQUESTED_IP, &ip(addr).octets())]);
            let (a, reply) = ask(&s, &mut pool, &req);
            assert!(matches!(a, DhcpAnswer::Reply { kind: Dhcp4Reply::Nak, .. }), "{what}: {a:?}");
            let nak = read(&reply);
            assert_eq!(
                (nak.dst_mac, nak.dst_ip, nak.yiaddr, nak.ciaddr),
                (Mac::BROADCAST, Ipv4Addr::BROADCAST, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED),
                "{what}"
            );
            assert_eq!(nak.opts[&OPT_MESSAGE_TYPE], [NAK]);
            assert_eq!(nak.opts[&OPT_SERVER_ID], [172, 17, 0, 1]);
            assert!(!nak.opts.contains_key(&OPT_LEASE_TIME) && !nak.opts.contains_key(&OPT_ROUTER), "{what}");
        }
        // Selecting an address taken by someone else.
        let other: &[u8] = &[1, 2, 2, 2, 2, 2, 2];
        let req = client(
            REQUEST,
            Ipv4Addr::UNSPECIFIED,
            false,
            false,
            &[(OPT_CLIENT_ID, other), (OPT_REQUESTED_IP, &[172, 17, 0, 2]), (OPT_SERVER_ID, &[172, 17, 0, 1])],
        );
        assert!(matches!(ask(&s, &mut pool, &req).0, DhcpAnswer::Reply { kind: Dhcp4Reply::Nak, .. }));
        // Renewing an address it does not hold.
        let renew = client(REQUEST, ip("172.17.0.5"), false, true, &[(OPT_CLIENT_ID, cid)]);
        assert!(matches!(ask(&s, &mut pool, &renew).0, DhcpAnswer::Reply { kind: Dhcp4Reply::Nak, .. }));
        assert_eq!(pool.lookup(&CLIENT_ID).map(|l| l.0), Some(ip("172.17.0.2")), "the lease is untouched");
    }

    #[test]
    fn init_reboot_without_a_record_is_confirmed_when_the_address_is_free() {
        let s = server();
        let mut pool = Pool::default();
        let cid: &[u8] = &CLIENT_ID;
        let req = client(REQUEST, Ipv4Addr::UNSPECIFIED, false, false, &[(OPT_CLIENT_ID, cid), (OPT_REQUESTED_IP, &[172, 17, 0, 4])]);
        let ack = read(&ask(&s, &mut pool, &req).1);
        assert_eq!((ack.opts[&OPT_MESSAGE_TYPE][0], ack.yiaddr), (ACK, ip("172.17.0.4")));
        assert_eq!(pool.lookup(&CLIENT_ID).map(|l| l.0), Some(ip("172.17.0.4")));
    }

    #[test]
    fn requests_for_other_servers_and_failed_commits_get_no_reply() {
        let s = server();
        let mut pool = Pool::default();
        let other = client(
            REQUEST,
            Ipv4Addr::UNSPECIFIED,
            false,
            false,
            &[(OPT_REQUESTED_IP, &[172, 17, 0, 2]), (OPT_SERVER_ID, &[172, 17, 0, 9])],
        );
        assert_eq!(ask(&s, &mut pool, &other), (DhcpAnswer::Ignored, vec![]));
        pool.fail_commits = true;
        assert_eq!(ask(&s, &mut pool, &REQUEST_FRAME), (DhcpAnswer::CommitFailed, vec![]));
        assert!(pool.leases.is_empty());
    }

    #[test]
    fn decline_quarantines_and_exhaustion_is_silent() {
        let s = server();
        let mut pool = Pool::default();
        let decline = client(
            DECLINE,
            Ipv4Addr::UNSPECIFIED,
            false,
            false,
            &[(OPT_REQUESTED_IP, &[172, 17, 0, 2]), (OPT_SERVER_ID, &[172, 17, 0, 1])],
        );
        assert_eq!(ask(&s, &mut pool, &decline), (DhcpAnswer::Declined, vec![]));
        assert_eq!(read(&ask(&s, &mut pool, &DISCOVER_FRAME).1).yiaddr, ip("172.17.0.3"), "the declined address is skipped");
        let no_addr = client(DECLINE, Ipv4Addr::UNSPECIFIED, false, false, &[]);
        assert_eq!(ask(&s, &mut pool, &no_addr).0, DhcpAnswer::Malformed);
        pool.declined.extend((2..10).map(|i| Ipv4Addr::new(172, 17, 0, i)));
        assert_eq!(ask(&s, &mut pool, &DISCOVER_FRAME), (DhcpAnswer::NoAddress, vec![]));
    }

    #[test]
    fn inform_gets_configuration_without_a_lease() {
        let s = server();
        let mut pool = Pool::default();
        let inform = client(INFORM, ip("172.17.0.50"), false, true, &[]);
        let ack = read(&ask(&s, &mut pool, &inform).1);
        assert_eq!((ack.yiaddr, ack.ciaddr, ack.dst_ip), (Ipv4Addr::UNSPECIFIED, ip("172.17.0.50"), ip("172.17.0.50")));
        assert!(!ack.opts.contains_key(&OPT_LEASE_TIME) && !ack.opts.contains_key(&OPT_T1));
        assert_eq!(ack.opts[&OPT_ROUTER], [172, 17, 0, 1]);
        assert_eq!(pool.commits, 0);
    }

    #[test]
    fn options_are_parsed_robustly() {
        // Pads anywhere, no end option, repeated options (the first counts).
        let o = parse_options(&[0, 0, 53, 1, 3, 0, 50, 4, 10, 0, 0, 2, 53, 1, 1]).unwrap();
        assert_eq!((o.msg_type, o.requested), (Some(3), Some(ip("10.0.0.2"))));
        assert!(parse_options(&[]).is_some());
        // Anything after the end option is not read.
        assert_eq!(parse_options(&[53, 1, 1, 255, 53, 9]).unwrap().msg_type, Some(1));
        for bad in [&[53, 2, 1, 1][..], &[53, 1], &[50, 3, 1, 2, 3], &[54, 5, 1, 2, 3, 4, 5], &[61, 1, 1], &[57, 1, 2], &[12], &[12, 5, 1]]
        {
            assert!(parse_options(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn what_is_not_a_request_to_this_server_is_sorted_out() {
        let s = server();
        let mut pool = Pool::default();
        let m = &DISCOVER_FRAME[42..];
        let cases: [(&str, Vec<u8>, Answer4); 8] = [
            ("to port 53", udp4(Mac::BROADCAST, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 53, m), DhcpAnswer::NotDhcp),
            ("from a relay's port", udp4(Mac::BROADCAST, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 67, 67, m), DhcpAnswer::Ignored),
            ("to another host", udp4(Mac::BROADCAST, Ipv4Addr::UNSPECIFIED, ip("172.17.0.9"), 68, 67, m), DhcpAnswer::Ignored),
            ("to another MAC", udp4(CLIENT_MAC, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, m), DhcpAnswer::Ignored),
            ("an ARP frame", crate::fixtures::ARP_REQUEST.to_vec(), DhcpAnswer::NotDhcp),
            ("a ping", crate::fixtures::ECHO_REQUEST.to_vec(), DhcpAnswer::NotDhcp),
            ("IPv6", crate::fixtures::NS.to_vec(), DhcpAnswer::NotDhcp),
            ("an offer from another server", OFFER_FRAME.to_vec(), DhcpAnswer::NotDhcp),
        ];
        for (what, f, want) in cases {
            assert_eq!(ask(&s, &mut pool, &f), (want, vec![]), "{what}");
        }
        type Edit = fn(&mut Vec<u8>);
        let edits: [(&str, Edit, Answer4); 7] = [
            ("a BOOTREPLY", |m| m[0] = 2, DhcpAnswer::Ignored),
            ("relayed", |m| m[24] = 10, DhcpAnswer::Ignored),
            ("not Ethernet", |m| m[1] = 6, DhcpAnswer::Ignored),
            ("plain BOOTP", |m| m[236] = 0, DhcpAnswer::Ignored),
            ("no message type", |m| m[240] = 12, DhcpAnswer::Ignored),
            ("a multicast chaddr", |m| m[28] = 1, DhcpAnswer::Malformed),
            ("an option past the end", |m| m[244] = 250, DhcpAnswer::Malformed),
        ];
        for (what, edit, want) in edits {
            let mut m = m.to_vec();
            edit(&mut m);
            let f = udp4(Mac::BROADCAST, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, &m);
            assert_eq!(ask(&s, &mut pool, &f), (want, vec![]), "{what}");
        }
        let mut bad = DISCOVER_FRAME;
        bad[100] ^= 1;
        assert_eq!(ask(&s, &mut pool, &bad).0, DhcpAnswer::Malformed, "UDP checksum");
        bad = DISCOVER_FRAME;
        bad[40..42].fill(0);
        bad[100] ^= 1;
        assert!(ask(&s, &mut pool, &bad).0.reply_len().is_some(), "no UDP checksum is allowed");
        bad = DISCOVER_FRAME;
        bad[22] ^= 1;
        assert_eq!(ask(&s, &mut pool, &bad).0, DhcpAnswer::Malformed, "IP checksum");
    }

    #[test]
    fn every_truncation_of_every_fixture_gets_no_reply() {
        let s = server();
        for f in [&DISCOVER_FRAME[..], &REQUEST_FRAME, &RENEW_FRAME] {
            for len in 0..f.len() {
                let mut pool = Pool::default();
                let (a, reply) = ask(&s, &mut pool, &f[..len]);
                assert!(reply.is_empty() && matches!(a, DhcpAnswer::Malformed | DhcpAnswer::NotDhcp), "{len}: {a:?}");
                assert_eq!(pool.commits, 0);
            }
        }
    }

    #[test]
    fn short_buffers_and_small_size_limits() {
        let s = server();
        let mut pool = Pool::default();
        // The smallest reply: the fixed fields, the options no reply goes without, padding to
        // 300 bytes. Longer buffers get the options that fit.
        for short in 0..OFFER_FRAME.len() {
            let mut out = vec![0u8; short];
            match s.handle(&DISCOVER_FRAME, NOW, &mut pool, &mut out) {
                DhcpAnswer::TooBig => assert!(short < 342, "{short}"),
                DhcpAnswer::Reply { len, .. } => {
                    assert!(short >= 342 && len <= short, "{short}");
                    assert_eq!(read(&out[..len]).opts[&OPT_SERVER_ID], [172, 17, 0, 1]);
                }
                a => panic!("{short}: {a:?}"),
            }
        }
        // A long search list is dropped before the datagram outgrows 576 bytes.
        let mut cfg = s.config().clone();
        cfg.search = (0..8).map(|i| format!("{i}{}.example", "x".repeat(20))).collect();
        let s = DhcpServer::new(cfg.clone()).unwrap();
        let offer = read(&ask(&s, &mut pool, &DISCOVER_FRAME).1);
        assert!(!offer.opts.contains_key(&OPT_SEARCH));
        assert!(offer.opts.contains_key(&OPT_DOMAIN));
        // ...and kept for a client that accepts more.
        let cid: &[u8] = &CLIENT_ID;
        let big = client(DISCOVER, Ipv4Addr::UNSPECIFIED, false, false, &[(OPT_CLIENT_ID, cid), (OPT_MAX_MESSAGE, &1500u16.to_be_bytes())]);
        assert!(read(&ask(&s, &mut pool, &big).1).opts.contains_key(&OPT_SEARCH));
    }

    #[test]
    fn configurations_are_checked() {
        let base = server().config().clone();
        let with = |f: fn(&mut DhcpConfig)| {
            let mut c = base.clone();
            f(&mut c);
            DhcpServer::new(c).err()
        };
        assert!(matches!(with(|c| c.subnet_mask = ip("255.0.255.0")), Some(DhcpConfigError::BadMask(_))));
        assert!(matches!(with(|c| c.server_ip = ip("172.17.0.0")), Some(DhcpConfigError::BadServerAddress(_))));
        assert!(matches!(with(|c| c.domain = Some("a..b".into())), Some(DhcpConfigError::BadDomainName(_))));
        assert!(matches!(with(|c| c.search = vec!["x".repeat(64)]), Some(DhcpConfigError::BadDomainName(_))));
        assert!(matches!(with(|c| c.search = vec!["a".repeat(60); 5]), Some(DhcpConfigError::SearchListTooLong(_))));
        assert!(matches!(with(|c| c.dns = vec![ip("1.1.1.1"); 64]), Some(DhcpConfigError::TooManyDnsServers(64))));
        assert!(matches!(with(|c| c.mtu = Some(67)), Some(DhcpConfigError::MtuTooSmall(67))));
        assert!(matches!(with(|c| c.lease_secs = 0), Some(DhcpConfigError::ZeroLease)));
        assert_eq!(with(|c| c.domain = Some("example.com.".into())), None);
    }

    #[test]
    fn infinite_leases_stay_infinite() {
        let mut cfg = server().config().clone();
        cfg.lease_secs = u32::MAX;
        let s = DhcpServer::new(cfg).unwrap();
        let mut pool = Pool::default();
        let ack = read(&ask(&s, &mut pool, &REQUEST_FRAME).1);
        assert_eq!(ack.opts[&OPT_T2], u32::MAX.to_be_bytes());
        assert_eq!(pool.lookup(&CLIENT_ID).unwrap().1, u64::MAX);
    }

    #[test]
    fn random_and_mutated_frames_never_panic() {
        let s = server();
        let mut pool = Pool::default();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let seeds: [&[u8]; 3] = [&DISCOVER_FRAME, &REQUEST_FRAME, &RENEW_FRAME];
        let mut out = [0u8; REPLY_BUF];
        let mut replies = 0;
        for i in 0..30_000u64 {
            let f = if i % 3 == 0 {
                let len = (next() % 400) as usize;
                let mut f: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if len >= 14 {
                    f[6] &= 0xfe;
                    f[12..14].copy_from_slice(&[8, 0]);
                }
                f
            } else {
                // Mutate the DHCP message, then rebuild the headers so the options are reached.
                let seed = seeds[(next() % 3) as usize];
                let mut m = seed[42..].to_vec();
                for _ in 0..1 + next() % 6 {
                    let at = if next() % 2 == 0 { 240 + (next() % 60) as usize } else { (next() % m.len() as u64) as usize };
                    if at < m.len() {
                        m[at] = next() as u8;
                    }
                }
                m.truncate(m.len() - (next() % 80) as usize);
                let dst = Ipv4Addr::new(seed[30], seed[31], seed[32], seed[33]);
                udp4(Mac::from_slice(&seed[0..6]), Ipv4Addr::new(seed[26], seed[27], seed[28], seed[29]), dst, 68, 67, &m)
            };
            let a = s.handle(&f, NOW + i, &mut pool, &mut out);
            if let Some(len) = a.reply_len() {
                replies += 1;
                read(&out[..len]);
            }
        }
        assert!(replies > 1000, "{replies}");
    }
}
