//! Connection tracking, sans-IO: one entry per TCP, UDP or ICMP echo flow, with states,
//! timeouts and a hard limit, for the slirp engine, published ports and `vswitchctl conntrack`.
//!
//! A flow is keyed by its 5-tuple in the **orig** direction, the one of the packet that created
//! it ([`FlowKey`]); packets of the other direction are **reply** ([`Dir`]). The caller looks a
//! flow up or creates it with [`Conntrack::get_or_insert_with`], reports what it sees with
//! [`Conntrack::on_tcp`] (flags) and [`Conntrack::on_packet`] (accounting, UDP/ICMP replies), and
//! calls [`Conntrack::expire`] now and then to collect the flows that timed out, with its own
//! per-flow data `V` (say, the host socket to close). A flow leaves the table only through
//! `expire`, [`Conntrack::remove`] or [`Conntrack::retain`], each of which hands `V` back exactly
//! once; a flow past its deadline that is touched before `expire` collects it lives on, as with
//! Linux's lazy garbage collection.
//!
//! TCP states are a simplification of nf_conntrack's (`nf_conntrack_proto_tcp.c`), driven by
//! flags alone (no sequence-number window checks: the caller's own TCP endpoint or the host's
//! kernel does those). See [`TcpState`] for the mapping. UDP and ICMP echo flows are
//! **unreplied** until a packet is seen in the reply direction, then **assured**.
//!
//! When the table is at its limit, an insertion first collects the flows past their deadline,
//! then evicts the least recently active flow that is not protected; a protected flow is an
//! established TCP connection or an assured UDP/ICMP flow, and is never evicted (Linux's
//! `early_drop` spares assured flows the same way). If nothing can go, the insertion fails with
//! [`Full`]. Flows removed at insertion are handed back by the next `expire`.
//!
//! Costs: lookups are one hash probe (hashbrown with foldhash); flows live in a slab, so a
//! [`FlowId`] is an index plus a generation, stable while the flow lives and never matching a
//! later flow in the same slot. Deadlines live in a min-heap with lazy deletion: a refresh that
//! pushes a deadline later writes only the flow (the heap entry is re-pushed when it comes due),
//! a refresh that brings it earlier pushes a new entry and strands the old one; stale entries are
//! recognized by generation and deadline and compacted away once they outnumber the slots, so
//! `expire` costs O(log n) per flow it looks at and O(1) when nothing is due. The unprotected
//! flows form an intrusive doubly-linked list in order of last activity, so eviction is O(1).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::ops::BitOr;

use foldhash::fast::RandomState;
use hashbrown::{HashMap, HashTable};

/// A default for [`Conntrack::new`]'s limit: Linux's `nf_conntrack_max` on a small machine.
pub const DEFAULT_LIMIT: usize = 65_536;

/// The end of an intrusive list; also caps the slab at `u32::MAX` slots.
const NIL: u32 = u32::MAX;
/// Stale heap entries tolerated beyond twice the slab's size before the heap is rebuilt.
const HEAP_SLACK: usize = 1024;

/// The transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    /// ICMP or ICMPv6 echo: the echo identifier stands for both ports (see [`FlowKey::icmp_echo`]).
    Icmp,
}

impl Proto {
    /// The name `conntrack ls` prints.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

/// A flow's 5-tuple as the packet that created it carries it (the orig direction): for
/// outbound traffic, as the container sent it; for a published port, as the client sent it.
/// IPv4 or IPv6; the caller keeps the two addresses of one key in one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub proto: Proto,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

impl FlowKey {
    pub fn new(proto: Proto, src: SocketAddr, dst: SocketAddr) -> Self {
        Self { proto, src, dst }
    }

    /// The key of an ICMP echo from `src` to `dst` with identifier `id`. The identifier is both
    /// "ports", so that the echo reply's key, built the same way with the addresses swapped, is
    /// this key [`reversed`](Self::reversed).
    pub fn icmp_echo(src: IpAddr, dst: IpAddr, id: u16) -> Self {
        Self { proto: Proto::Icmp, src: SocketAddr::new(src, id), dst: SocketAddr::new(dst, id) }
    }

    /// The 5-tuple of the reply direction (source and destination swapped).
    pub fn reversed(&self) -> Self {
        Self { proto: self.proto, src: self.dst, dst: self.src }
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.proto.name(), self.src, self.dst)
    }
}

/// The direction of a packet relative to its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// As the packet that created the flow ([`FlowKey`] as is).
    Orig,
    /// The other way ([`FlowKey::reversed`]).
    Reply,
}

impl Dir {
    fn index(self) -> usize {
        match self {
            Dir::Orig => 0,
            Dir::Reply => 1,
        }
    }
}

/// The flags of a TCP segment that drive [`TcpState`], with the bit values of the TCP header's
/// flags byte (byte 13), so `TcpFlags::from_bits(tcp[13])` reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const PSH: TcpFlags = TcpFlags(0x08);
    pub const ACK: TcpFlags = TcpFlags(0x10);

    pub fn from_bits(bits: u8) -> Self {
        TcpFlags(bits)
    }

    /// Whether every flag of `other` is set here.
    pub fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;

    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

/// The state of a TCP flow, named as Linux's nf_conntrack names them, tracked from flags alone.
///
/// | state         | entered when                                                        | timeout |
/// |---------------|---------------------------------------------------------------------|---------|
/// | `SynSent`     | the flow is created (for a SYN); a SYN from orig reopens `TimeWait`/`Closed` | `tcp_syn_ms` |
/// | `SynRecv`     | SYN+ACK from reply in `SynSent`                                     | `tcp_syn_ms` |
/// | `Established` | ACK (without SYN) from orig in `SynRecv`: the flow is now assured   | `tcp_established_ms` |
/// | `FinWait`     | the first FIN, either way, in `SynRecv` or `Established`            | `tcp_fin_ms` |
/// | `CloseWait`   | an ACK from the other side in `FinWait`: the first FIN is acknowledged, the other half still open | `tcp_fin_ms` |
/// | `LastAck`     | a FIN from the other side in `FinWait` or `CloseWait`               | `tcp_fin_ms` |
/// | `TimeWait`    | an ACK from the first closer in `LastAck`: both FINs acknowledged   | `tcp_time_wait_ms` |
/// | `Closed`      | a RST, either way, in any state                                     | `tcp_close_ms` |
///
/// Anything else leaves the state as it is (and refreshes its timeout). Unlike Linux, where
/// `CLOSE_WAIT` and `FIN_WAIT` come from a sequence-checked ACK of the FIN, any ACK from the
/// other side counts: the segment after a FIN nearly always acknowledges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpState {
    SynSent,
    SynRecv,
    Established,
    FinWait,
    CloseWait,
    LastAck,
    TimeWait,
    Closed,
}

impl TcpState {
    /// The name `conntrack ls` prints (Linux's `conntrack -L` names).
    pub fn name(self) -> &'static str {
        match self {
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Closed => "CLOSE",
        }
    }

    /// The state after a segment with `flags` from `dir`, and who closed: in `FinWait` and
    /// `CloseWait` the side that sent the first FIN, in `LastAck` the side that sent the second.
    fn next(self, closer: Dir, dir: Dir, flags: TcpFlags) -> (TcpState, Dir) {
        use TcpState::*;
        if flags.contains(TcpFlags::RST) {
            return (Closed, closer);
        }
        let (syn, ack, fin) = (flags.contains(TcpFlags::SYN), flags.contains(TcpFlags::ACK), flags.contains(TcpFlags::FIN));
        let other = dir != closer;
        match self {
            SynSent if dir == Dir::Reply && syn && ack => (SynRecv, closer),
            SynRecv | Established if fin => (FinWait, dir),
            SynRecv if dir == Dir::Orig && ack && !syn => (Established, closer),
            FinWait | CloseWait if other && fin => (LastAck, dir),
            FinWait if other && ack => (CloseWait, closer),
            LastAck if other && ack => (TimeWait, closer),
            TimeWait | Closed if dir == Dir::Orig && syn && !ack => (SynSent, closer),
            s => (s, closer),
        }
    }
}

/// The state of a flow, as `conntrack ls` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowState {
    Tcp(TcpState),
    /// UDP or ICMP: nothing seen in the reply direction yet.
    Unreplied,
    /// UDP or ICMP: a reply was seen; the flow is assured (longer UDP timeout, never evicted).
    Assured,
}

impl FlowState {
    pub fn name(self) -> &'static str {
        match self {
            FlowState::Tcp(s) => s.name(),
            FlowState::Unreplied => "UNREPLIED",
            FlowState::Assured => "ASSURED",
        }
    }

    /// Protected flows are never evicted to make room: established TCP, assured UDP/ICMP.
    fn protected(self) -> bool {
        matches!(self, FlowState::Tcp(TcpState::Established) | FlowState::Assured)
    }
}

/// How long a flow lives after its last packet, per state, in milliseconds.
///
/// The defaults are Linux's nf_conntrack defaults except for established TCP: Linux keeps
/// those 5 days, because a router cannot tell a quiet connection from a dead one. Here every
/// flow can hold a host socket, so we take the shortest idle time RFC 5382 (REQ-5) allows a NAT
/// that cannot tell either, 2 hours 4 minutes: longer than the 2 hours after which TCP
/// keepalives start (RFC 1122 §4.2.3.6), so a connection that uses them never times out.
/// Unreplied UDP flows get Linux's 30 s, below RFC 4787 REQ-5's 2 minutes, because most are
/// lookups that never see an answer worth waiting for; replied flows get 120 s, which meets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `SynSent` and `SynRecv` (Linux: 120 s and 60 s).
    pub tcp_syn_ms: u64,
    /// `Established`: 2 h 4 min (see above).
    pub tcp_established_ms: u64,
    /// `FinWait`, `CloseWait`, `LastAck` (Linux: 120 s, 60 s, 30 s).
    pub tcp_fin_ms: u64,
    /// `TimeWait`: 120 s, 2 MSL.
    pub tcp_time_wait_ms: u64,
    /// `Closed` (after a RST): 10 s, enough for the RST's retransmitted segments to match.
    pub tcp_close_ms: u64,
    /// UDP, nothing seen in reply: 30 s.
    pub udp_ms: u64,
    /// UDP, replies seen: 120 s.
    pub udp_stream_ms: u64,
    /// ICMP echo, either state: 30 s.
    pub icmp_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp_syn_ms: 120_000,
            tcp_established_ms: 7_440_000,
            tcp_fin_ms: 120_000,
            tcp_time_wait_ms: 120_000,
            tcp_close_ms: 10_000,
            udp_ms: 30_000,
            udp_stream_ms: 120_000,
            icmp_ms: 30_000,
        }
    }
}

impl Timeouts {
    /// The timeout of a flow of `proto` in `state`.
    pub fn of(&self, proto: Proto, state: FlowState) -> u64 {
        match (proto, state) {
            (_, FlowState::Tcp(s)) => match s {
                TcpState::SynSent | TcpState::SynRecv => self.tcp_syn_ms,
                TcpState::Established => self.tcp_established_ms,
                TcpState::FinWait | TcpState::CloseWait | TcpState::LastAck => self.tcp_fin_ms,
                TcpState::TimeWait => self.tcp_time_wait_ms,
                TcpState::Closed => self.tcp_close_ms,
            },
            (Proto::Icmp, _) => self.icmp_ms,
            (_, FlowState::Unreplied) => self.udp_ms,
            (_, FlowState::Assured) => self.udp_stream_ms,
        }
    }
}

/// [`Conntrack::get_or_insert_with`] could not make room: the table is at its limit and every
/// flow in it is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection tracking table full: every flow is established or assured")]
pub struct Full;

/// A handle on a flow: valid while the flow lives, never valid for another flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId {
    index: u32,
    /// Bumped each time the slot is freed; wraps after 2^32 flows in one slot.
    gen: u32,
}

/// Counters of a [`Conntrack`], since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtCounters {
    /// Flows inserted.
    pub created: u64,
    /// Flows collected past their deadline (by `expire`, or to make room for an insertion).
    pub expired: u64,
    /// Unprotected flows removed before their deadline to make room for an insertion.
    pub evicted: u64,
    /// Insertions refused with [`Full`].
    pub refused_full: u64,
    /// Flows removed by the caller (`remove`, `retain`).
    pub removed: u64,
}

/// One tracked flow: the table's bookkeeping, read through the accessors, and the caller's
/// `value`.
#[derive(Debug, Clone)]
pub struct Flow<V> {
    key: FlowKey,
    /// `key`'s hash, so that growing the table does not hash keys again.
    hash: u64,
    state: FlowState,
    /// Ever established (TCP) or replied (UDP, ICMP); a TCP flow reopened by a SYN starts over.
    assured: bool,
    /// TCP: who sent the first FIN (`FinWait`, `CloseWait`) or the second (`LastAck`).
    closer: Dir,
    created_ms: u64,
    last_ms: u64,
    expires_ms: u64,
    packets: [u64; 2],
    bytes: [u64; 2],
    /// The deadline of this flow's live heap entry: never later than `expires_ms`.
    heap_due: u64,
    /// Neighbours in the list of unprotected flows (`NIL` at the ends and when protected).
    prev: u32,
    next: u32,
    /// The caller's per-flow data.
    pub value: V,
}

impl<V> Flow<V> {
    pub fn key(&self) -> &FlowKey {
        &self.key
    }

    pub fn state(&self) -> FlowState {
        self.state
    }

    /// The TCP state, for TCP flows.
    pub fn tcp_state(&self) -> Option<TcpState> {
        match self.state {
            FlowState::Tcp(s) => Some(s),
            _ => None,
        }
    }

    /// Whether the flow ever saw its handshake complete (TCP) or a reply (UDP, ICMP).
    pub fn assured(&self) -> bool {
        self.assured
    }

    /// Whether eviction spares this flow (established TCP, assured UDP/ICMP).
    pub fn protected(&self) -> bool {
        self.state.protected()
    }

    pub fn created_ms(&self) -> u64 {
        self.created_ms
    }

    /// When a packet of the flow was last reported (its creation, at first).
    pub fn last_ms(&self) -> u64 {
        self.last_ms
    }

    /// When the flow times out unless a packet is reported first.
    pub fn expires_ms(&self) -> u64 {
        self.expires_ms
    }

    /// Packets reported with [`Conntrack::on_packet`] in `dir`.
    pub fn packets(&self, dir: Dir) -> u64 {
        self.packets[dir.index()]
    }

    /// Bytes reported with [`Conntrack::on_packet`] in `dir`.
    pub fn bytes(&self, dir: Dir) -> u64 {
        self.bytes[dir.index()]
    }

    /// The flow as `conntrack ls` shows it at `now_ms`.
    pub fn row(&self, now_ms: u64) -> CtRow {
        CtRow {
            proto: self.key.proto,
            src: self.key.src,
            dst: self.key.dst,
            state: self.state,
            age_ms: now_ms.saturating_sub(self.created_ms),
            expires_in_ms: self.expires_ms.saturating_sub(now_ms),
            packets: self.packets,
            bytes: self.bytes,
        }
    }
}

/// One row of `conntrack ls`. `Display` writes it as one line:
/// `tcp 10.0.0.2:40000 -> 1.1.1.1:443 ESTABLISHED age 12s expires 7428s packets 10/8 bytes 1200/9000`
/// (packets and bytes orig/reply; expiry rounded up, so 0 s means due).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtRow {
    pub proto: Proto,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub state: FlowState,
    pub age_ms: u64,
    pub expires_in_ms: u64,
    /// Orig, reply.
    pub packets: [u64; 2],
    /// Orig, reply.
    pub bytes: [u64; 2],
}

impl fmt::Display for CtRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {} {} age {}s expires {}s packets {}/{} bytes {}/{}",
            self.proto.name(),
            self.src,
            self.dst,
            self.state.name(),
            self.age_ms / 1000,
            self.expires_in_ms.div_ceil(1000),
            self.packets[0],
            self.packets[1],
            self.bytes[0],
            self.bytes[1],
        )
    }
}

#[derive(Debug, Clone)]
struct Slot<V> {
    gen: u32,
    flow: Option<Flow<V>>,
}

/// The connection tracking table. See the module documentation.
#[derive(Clone)]
pub struct Conntrack<V> {
    slots: Vec<Slot<V>>,
    /// Free slots, reused last freed first.
    free: Vec<u32>,
    /// Slot indices of the live flows, by key.
    table: HashTable<u32>,
    hasher: RandomState,
    /// Live flows per source address (`FlowKey::src`'s IP); no entry at zero.
    per_src: HashMap<IpAddr, u32, RandomState>,
    /// (deadline, slot, generation): at least one entry per live flow, due at its `heap_due`.
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// The unprotected flows, least recently active first.
    lru_head: u32,
    lru_tail: u32,
    /// Flows removed to make room for an insertion, for the next `expire` to hand back.
    pending: Vec<(FlowKey, V)>,
    len: usize,
    limit: usize,
    timeouts: Timeouts,
    counters: CtCounters,
}

impl<V> fmt::Debug for Conntrack<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conntrack")
            .field("len", &self.len)
            .field("limit", &self.limit)
            .field("timeouts", &self.timeouts)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<V> Conntrack<V> {
    /// A table of at most `limit` flows (capped at `u32::MAX - 1`; 0 refuses every insertion).
    /// Memory grows with use, up to the limit, and is not given back.
    pub fn new(limit: usize, timeouts: Timeouts) -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            table: HashTable::new(),
            hasher: RandomState::default(),
            per_src: HashMap::default(),
            heap: BinaryHeap::new(),
            lru_head: NIL,
            lru_tail: NIL,
            pending: Vec::new(),
            len: 0,
            limit: limit.min(NIL as usize - 1),
            timeouts,
            counters: CtCounters::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    pub fn counters(&self) -> CtCounters {
        self.counters
    }

    /// How many flows have `ip` as their source address: O(1), for per-endpoint limits.
    pub fn count_for(&self, ip: IpAddr) -> usize {
        self.per_src.get(&ip).map_or(0, |&n| n as usize)
    }

    fn find_index(&self, hash: u64, key: &FlowKey) -> Option<u32> {
        let slots = &self.slots;
        self.table.find(hash, |&i| slots[i as usize].flow.as_ref().is_some_and(|f| f.key == *key)).copied()
    }

    fn id_at(&self, index: u32) -> FlowId {
        FlowId { index, gen: self.slots[index as usize].gen }
    }

    /// The slot of `id` if its flow still lives.
    fn index_of(&self, id: FlowId) -> Option<u32> {
        let s = self.slots.get(id.index as usize)?;
        (s.gen == id.gen && s.flow.is_some()).then_some(id.index)
    }

    /// The live flow in slot `i`, which the caller knows is live (it is in the table or a list).
    fn at(&mut self, i: u32) -> &mut Flow<V> {
        self.slots[i as usize].flow.as_mut().expect("conntrack: a linked slot holds a flow")
    }

    /// Looks up the flow of `key` (orig direction), or creates it with `make()`'s value if there
    /// is none. A new flow starts as `SynSent` (TCP; the caller creates flows for SYNs) or
    /// unreplied (UDP, ICMP), with its timeout from `now_ms`; a found flow is returned as is
    /// (report its packet with `on_tcp`/`on_packet` to refresh it).
    ///
    /// At the limit, flows past their deadline are collected first, then the least recently
    /// active unprotected flow is evicted (both handed back by the next [`expire`](Self::expire));
    /// if every flow is protected, nothing changes but the `refused_full` counter: `Err(Full)`.
    pub fn get_or_insert_with(&mut self, key: FlowKey, now_ms: u64, make: impl FnOnce() -> V) -> Result<(FlowId, &mut Flow<V>), Full> {
        let hash = self.hasher.hash_one(key);
        if let Some(i) = self.find_index(hash, &key) {
            return Ok((self.id_at(i), self.at(i)));
        }
        if self.len >= self.limit && !self.make_room(now_ms) {
            self.counters.refused_full += 1;
            return Err(Full);
        }
        let state = match key.proto {
            Proto::Tcp => FlowState::Tcp(TcpState::SynSent),
            Proto::Udp | Proto::Icmp => FlowState::Unreplied,
        };
        let expires_ms = now_ms.saturating_add(self.timeouts.of(key.proto, state));
        let flow = Flow {
            key,
            hash,
            state,
            assured: false,
            closer: Dir::Orig,
            created_ms: now_ms,
            last_ms: now_ms,
            expires_ms,
            packets: [0; 2],
            bytes: [0; 2],
            heap_due: expires_ms,
            prev: NIL,
            next: NIL,
            value: make(),
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize].flow = Some(flow);
                i
            }
            None => {
                self.slots.push(Slot { gen: 0, flow: Some(flow) });
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.table.insert_unique(hash, i, |&j| slots[j as usize].flow.as_ref().map_or(0, |f| f.hash));
        *self.per_src.entry(key.src.ip()).or_insert(0) += 1;
        self.len += 1;
        self.counters.created += 1;
        let gen = self.slots[i as usize].gen;
        self.heap.push(Reverse((expires_ms, i, gen)));
        self.lru_push_back(i);
        self.maybe_compact_heap();
        Ok((FlowId { index: i, gen }, self.at(i)))
    }

    /// Frees one place at the limit, if it can: collects what is past due, else evicts.
    fn make_room(&mut self, now_ms: u64) -> bool {
        let mut pending = std::mem::take(&mut self.pending);
        self.reap_due(now_ms, &mut pending);
        self.pending = pending;
        if self.len < self.limit {
            return true;
        }
        if self.lru_head == NIL {
            return false;
        }
        let (key, value) = self.remove_at(self.lru_head);
        self.pending.push((key, value));
        self.counters.evicted += 1;
        true
    }

    /// The flow of `id`, if it still lives.
    pub fn get(&self, id: FlowId) -> Option<&Flow<V>> {
        self.slots.get(id.index as usize).filter(|s| s.gen == id.gen)?.flow.as_ref()
    }

    /// The flow of `id`, if it still lives, to reach its `value`.
    pub fn get_mut(&mut self, id: FlowId) -> Option<&mut Flow<V>> {
        self.slots.get_mut(id.index as usize).filter(|s| s.gen == id.gen)?.flow.as_mut()
    }

    /// The flow whose orig 5-tuple is `key`.
    pub fn id_of(&self, key: &FlowKey) -> Option<FlowId> {
        self.find_index(self.hasher.hash_one(key), key).map(|i| self.id_at(i))
    }

    /// The flow a packet with 5-tuple `key` belongs to, in either direction: the flow whose
    /// orig key it is, else the flow whose reply it is (`key` reversed). Two lookups at most.
    pub fn find(&self, key: &FlowKey) -> Option<(FlowId, Dir)> {
        if let Some(id) = self.id_of(key) {
            return Some((id, Dir::Orig));
        }
        self.id_of(&key.reversed()).map(|id| (id, Dir::Reply))
    }

    /// Updates a TCP flow's state from the flags of a segment seen in `dir` (see [`TcpState`])
    /// and refreshes its deadline for the new state. Returns the new state; `None` if `id` is
    /// stale or not a TCP flow. A SYN from orig in `TimeWait` or `Closed` reopens the flow
    /// (`SynSent`, not assured): a caller whose `value` belongs to the old connection checks the
    /// state before reporting the SYN, and removes the flow instead if it must.
    /// Counts nothing: report the segment's size with [`on_packet`](Self::on_packet).
    pub fn on_tcp(&mut self, id: FlowId, dir: Dir, flags: TcpFlags, now_ms: u64) -> Option<TcpState> {
        let i = self.index_of(id)?;
        let f = self.at(i);
        let FlowState::Tcp(state) = f.state else { return None };
        let (next, closer) = state.next(f.closer, dir, flags);
        let was = f.state;
        f.state = FlowState::Tcp(next);
        f.closer = closer;
        if next == TcpState::Established {
            f.assured = true;
        } else if next == TcpState::SynSent && state != TcpState::SynSent {
            f.assured = false;
        }
        self.state_changed(i, was);
        self.refresh(i, now_ms);
        Some(next)
    }

    /// Counts a packet of `bytes` seen in `dir` and refreshes the flow's deadline; for UDP and
    /// ICMP, the first packet in reply makes the flow assured. Returns false if `id` is stale.
    pub fn on_packet(&mut self, id: FlowId, dir: Dir, bytes: usize, now_ms: u64) -> bool {
        let Some(i) = self.index_of(id) else { return false };
        let f = self.at(i);
        let d = dir.index();
        f.packets[d] = f.packets[d].saturating_add(1);
        f.bytes[d] = f.bytes[d].saturating_add(bytes as u64);
        if dir == Dir::Reply && f.state == FlowState::Unreplied {
            f.state = FlowState::Assured;
            f.assured = true;
            self.state_changed(i, FlowState::Unreplied);
        }
        self.refresh(i, now_ms);
        true
    }

    /// Keeps the list of unprotected flows right after slot `i` went from state `was` to its own.
    fn state_changed(&mut self, i: u32, was: FlowState) {
        match (was.protected(), self.at(i).state.protected()) {
            (false, true) => self.lru_unlink(i),
            (true, false) => self.lru_push_back(i),
            _ => {}
        }
    }

    /// A packet of slot `i`'s flow at `now_ms`: its deadline moves to `now_ms` + its state's
    /// timeout, and it becomes the most recently active of the unprotected flows.
    fn refresh(&mut self, i: u32, now_ms: u64) {
        let timeouts = self.timeouts;
        let gen = self.slots[i as usize].gen;
        let f = self.at(i);
        f.last_ms = now_ms;
        f.expires_ms = now_ms.saturating_add(timeouts.of(f.key.proto, f.state));
        let protected = f.state.protected();
        if f.expires_ms < f.heap_due {
            // Sooner than the heap knows: a new entry; the old one goes stale.
            f.heap_due = f.expires_ms;
            let due = f.heap_due;
            self.heap.push(Reverse((due, i, gen)));
            self.maybe_compact_heap();
        }
        if !protected && self.lru_tail != i {
            self.lru_unlink(i);
            self.lru_push_back(i);
        }
    }

    /// Removes the flows past their deadline at `now_ms` and appends them to `out` with their
    /// values, after any flows removed since the last call to make room for insertions. Call it
    /// periodically (say, every second): it costs O(1) when nothing is due.
    pub fn expire(&mut self, now_ms: u64, out: &mut Vec<(FlowKey, V)>) {
        out.append(&mut self.pending);
        self.reap_due(now_ms, out);
    }

    fn reap_due(&mut self, now_ms: u64, out: &mut Vec<(FlowKey, V)>) {
        while let Some(&Reverse((due, i, gen))) = self.heap.peek() {
            if due > now_ms {
                break;
            }
            self.heap.pop();
            let slot = &mut self.slots[i as usize];
            let Some(f) = slot.flow.as_mut().filter(|f| slot.gen == gen && f.heap_due == due) else { continue };
            if f.expires_ms > now_ms {
                // Refreshed since this entry was pushed: it comes back when the flow is due.
                f.heap_due = f.expires_ms;
                self.heap.push(Reverse((f.expires_ms, i, gen)));
                continue;
            }
            out.push(self.remove_at(i));
            self.counters.expired += 1;
        }
    }

    /// Removes the flow of `id` and returns its key and value; `None` if `id` is stale.
    pub fn remove(&mut self, id: FlowId) -> Option<(FlowKey, V)> {
        let i = self.index_of(id)?;
        self.counters.removed += 1;
        Some(self.remove_at(i))
    }

    /// Keeps the flows for which `f` answers true and appends the others to `removed`: all the
    /// flows of an endpoint's addresses when it disconnects, everything for `conntrack flush`.
    pub fn retain(&mut self, mut f: impl FnMut(&FlowKey, &Flow<V>) -> bool, removed: &mut Vec<(FlowKey, V)>) {
        for i in 0..self.slots.len() as u32 {
            let keep = match &self.slots[i as usize].flow {
                Some(flow) => f(&flow.key, flow),
                None => true,
            };
            if !keep {
                removed.push(self.remove_at(i));
                self.counters.removed += 1;
            }
        }
    }

    /// The live flows, for `conntrack ls`, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &Flow<V>)> {
        self.slots.iter().filter_map(|s| s.flow.as_ref().map(|f| (&f.key, f)))
    }

    /// The live flows with their ids.
    pub fn iter_ids(&self) -> impl Iterator<Item = (FlowId, &Flow<V>)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.flow.as_ref().map(|f| (FlowId { index: i as u32, gen: s.gen }, f)))
    }

    /// The rows of `conntrack ls` at `now_ms`.
    pub fn rows(&self, now_ms: u64) -> impl Iterator<Item = CtRow> + '_ {
        self.iter().map(move |(_, f)| f.row(now_ms))
    }

    /// Takes the live flow out of slot `i` and out of every index; its heap entries go stale.
    fn remove_at(&mut self, i: u32) -> (FlowKey, V) {
        if !self.at(i).state.protected() {
            self.lru_unlink(i);
        }
        let slot = &mut self.slots[i as usize];
        let f = slot.flow.take().expect("conntrack: removing a live flow");
        slot.gen = slot.gen.wrapping_add(1);
        self.free.push(i);
        if let Ok(e) = self.table.find_entry(f.hash, |&j| j == i) {
            e.remove();
        }
        let ip = f.key.src.ip();
        if let hashbrown::hash_map::Entry::Occupied(mut e) = self.per_src.entry(ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        self.len -= 1;
        (f.key, f.value)
    }

    fn lru_push_back(&mut self, i: u32) {
        let tail = self.lru_tail;
        let f = self.at(i);
        f.prev = tail;
        f.next = NIL;
        if tail == NIL {
            self.lru_head = i;
        } else {
            self.at(tail).next = i;
        }
        self.lru_tail = i;
    }

    fn lru_unlink(&mut self, i: u32) {
        let f = self.at(i);
        let (prev, next) = (f.prev, f.next);
        f.prev = NIL;
        f.next = NIL;
        if prev == NIL {
            self.lru_head = next;
        } else {
            self.at(prev).next = next;
        }
        if next == NIL {
            self.lru_tail = prev;
        } else {
            self.at(next).prev = prev;
        }
    }

    /// Rebuilds the heap with one entry per live flow once stale entries outnumber the slots,
    /// so the heap stays O(slots) and the rebuild O(1) amortized per push.
    fn maybe_compact_heap(&mut self) {
        if self.heap.len() <= 2 * self.slots.len() + HEAP_SLACK {
            return;
        }
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.clear();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if let Some(f) = &mut s.flow {
                f.heap_due = f.expires_ms;
                entries.push(Reverse((f.expires_ms, i as u32, s.gen)));
            }
        }
        self.heap = BinaryHeap::from(entries);
    }

    /// Checks every internal invariant; panics with what is wrong.
    #[cfg(test)]
    fn check_invariants(&self) {
        let live: Vec<u32> = (0..self.slots.len() as u32).filter(|&i| self.slots[i as usize].flow.is_some()).collect();
        assert_eq!(live.len(), self.len, "len");
        assert!(self.len <= self.limit, "over the limit");
        assert_eq!(self.table.len(), self.len, "table size");
        assert_eq!(self.free.len() + self.len, self.slots.len(), "free list");
        let mut per_src: HashMap<IpAddr, u32> = HashMap::new();
        let mut with_entry = hashbrown::HashSet::<u32>::new();
        for Reverse((due, i, gen)) in self.heap.iter() {
            let s = &self.slots[*i as usize];
            if let Some(f) = s.flow.as_ref().filter(|f| s.gen == *gen && f.heap_due == *due) {
                assert!(f.heap_due <= f.expires_ms);
                with_entry.insert(*i);
            }
        }
        for &i in &live {
            let f = self.slots[i as usize].flow.as_ref().unwrap();
            assert_eq!(self.id_of(&f.key), Some(self.id_at(i)), "table maps the key to its slot");
            assert_eq!(f.hash, self.hasher.hash_one(f.key));
            assert!(with_entry.contains(&i), "every flow has a live heap entry");
            *per_src.entry(f.key.src.ip()).or_default() += 1;
        }
        assert_eq!(per_src.len(), self.per_src.len(), "per-source entries");
        for (ip, n) in per_src {
            assert_eq!(self.per_src.get(&ip), Some(&n), "per-source count of {ip}");
        }
        // The list: exactly the unprotected flows, linked both ways (the model tests check its
        // order, which is that of activity, not of time: the clock is the caller's).
        let mut seen = 0;
        let (mut prev, mut i) = (NIL, self.lru_head);
        while i != NIL {
            let f = self.slots[i as usize].flow.as_ref().expect("listed flow is live");
            assert!(!f.state.protected(), "protected flow in the eviction list");
            assert_eq!(f.prev, prev);
            seen += 1;
            (prev, i) = (i, f.next);
        }
        assert_eq!(prev, self.lru_tail);
        let unprotected = live.iter().filter(|&&i| !self.slots[i as usize].flow.as_ref().unwrap().state.protected()).count();
        assert_eq!(seen, unprotected, "every unprotected flow listed once");
        let c = self.counters;
        assert_eq!(c.created - c.expired - c.evicted - c.removed, self.len as u64, "counters add up");
    }
}

#[cfg(test)]
mod tests;
