//! The cache of upstream answers: responses kept as the upstream server wrote them, served again
//! with the asker's id and question and with their TTLs counted down.
//!
//! Key: the question's name lowercased, its type and class, and the query's EDNS state (whether
//! it has an OPT record, its DO bit) and CD bit: each of those changes what a server answers.
//! An entry lives for the smallest TTL of the answer and authority records (positive answers),
//! or, for NXDOMAIN and NODATA, the smaller of the SOA record's TTL and its MINIMUM field (RFC
//! 2308 §5), capped at `max_ttl`. Not cached: errors other than NXDOMAIN, truncated responses,
//! negative responses without an SOA record (RFC 2308 §5 says not to), lifetimes of 0, and
//! responses that do not answer the query they are stored with (another id, question, opcode).
//!
//! Bounded: at most `capacity` entries and `max_bytes` of responses. When full, expired entries
//! go first (a heap ordered by expiry), else the oldest inserted (a FIFO queue). Both are lazy:
//! an entry replaced or removed leaves a stale item behind, recognized by its sequence number
//! and skipped; they are compacted once they outnumber the entries, so every operation is
//! O(log n) amortized.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::wire::{self, Header, Question, FLAG_CD, FLAG_RD, FLAG_TC, HEADER_LEN, MAX_NAME_LEN, TYPE_OPT, TYPE_SOA};

/// The default cap on an entry's lifetime: one day.
pub const DEFAULT_MAX_TTL: u32 = 86_400;
/// The default byte budget per entry of capacity (see [`Cache::with_max_bytes`]).
pub const DEFAULT_BYTES_PER_ENTRY: usize = 4096;
/// RFC 2181 §8: a TTL with the top bit set is to be taken as 0.
const TTL_MAX_VALID: u32 = i32::MAX as u32;
/// The key's longest form: a name, type, class and the flags byte.
const MAX_KEY_LEN: usize = MAX_NAME_LEN + 5;
/// What an entry costs beyond its bytes, for the byte budget.
const ENTRY_OVERHEAD: usize = 96;

const RCODE_NOERROR: u8 = 0;
const RCODE_NXDOMAIN: u8 = 3;

/// Counters of a [`Cache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// `get` calls answered from the cache.
    pub hits: u64,
    /// `get` calls not answered (nothing stored, expired, or not a cacheable query).
    pub misses: u64,
    /// Entries stored now (some may have expired, not yet removed).
    pub entries: usize,
    /// Entries removed by `put` to make room (expired ones included).
    pub evictions: u64,
}

struct Entry {
    key: Box<[u8]>,
    hash: u64,
    /// Unique per insertion: tells a live queue or heap item from a stale one.
    seq: u64,
    stored_ms: u64,
    expires_ms: u64,
    response: Box<[u8]>,
    /// Where the TTL of every record (other than OPT) lies in `response`.
    ttl_at: Box<[u16]>,
}

impl Entry {
    fn cost(&self) -> usize {
        cost(self.key.len(), self.response.len(), self.ttl_at.len())
    }
}

fn cost(key: usize, response: usize, ttls: usize) -> usize {
    key + response + 2 * ttls + ENTRY_OVERHEAD
}

/// The upstream answer cache; see the module documentation. Time is the caller's clock in
/// milliseconds (monotonic), passed to every call.
pub struct Cache {
    table: HashTable<Entry>,
    hasher: foldhash::fast::RandomState,
    /// (seq, hash) in insertion order.
    fifo: VecDeque<(u64, u64)>,
    /// (expires_ms, seq, hash), soonest first.
    expiry: BinaryHeap<Reverse<(u64, u64, u64)>>,
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
    max_ttl: u32,
    next_seq: u64,
    stats: CacheStats,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("capacity", &self.capacity)
            .field("max_bytes", &self.max_bytes)
            .field("bytes", &self.bytes)
            .field("max_ttl", &self.max_ttl)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// A query's key, built on the stack.
struct Key {
    buf: [u8; MAX_KEY_LEN],
    len: usize,
    header: Header,
    question: Question,
}

impl Key {
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The key of a standard query with exactly one question; None for anything else.
    fn of(query: &[u8]) -> Option<Self> {
        let header = Header::read(query)?;
        if header.is_response() || header.opcode() != 0 || header.qd != 1 {
            return None;
        }
        let question = wire::first_question(query)?;
        let opt = wire::walk(query, |_, _| {})?.opt;
        let name = &query[question.name.clone()];
        let mut buf = [0u8; MAX_KEY_LEN];
        buf[..name.len()].copy_from_slice(name);
        // Length bytes are at most 63, below 'A': lowercasing the wire form leaves them alone.
        buf[..name.len()].make_ascii_lowercase();
        let mut len = name.len();
        buf[len..len + 2].copy_from_slice(&question.qtype.to_be_bytes());
        buf[len + 2..len + 4].copy_from_slice(&question.qclass.to_be_bytes());
        let edns = opt.as_ref().map_or(0, |o| 1 | (u8::from(o.dnssec_ok()) << 1));
        buf[len + 4] = edns | (u8::from(header.has(FLAG_CD)) << 2);
        len += 5;
        Some(Self { buf, len, header, question })
    }
}

impl Cache {
    /// A cache of at most `capacity` entries (0: nothing is ever stored), with a byte budget of
    /// `capacity` × [`DEFAULT_BYTES_PER_ENTRY`] and lifetimes capped at [`DEFAULT_MAX_TTL`].
    pub fn new(capacity: usize) -> Self {
        Self {
            table: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            fifo: VecDeque::new(),
            expiry: BinaryHeap::new(),
            capacity,
            max_bytes: capacity.saturating_mul(DEFAULT_BYTES_PER_ENTRY),
            bytes: 0,
            max_ttl: DEFAULT_MAX_TTL,
            next_seq: 0,
            stats: CacheStats::default(),
        }
    }

    /// Caps lifetimes (and the TTLs served) at `secs`.
    pub fn with_max_ttl(mut self, secs: u32) -> Self {
        self.max_ttl = secs;
        self
    }

    /// Bounds the memory the entries take (responses, keys and bookkeeping) at about `bytes`.
    pub fn with_max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// A cached answer for `query` at `now_ms`: the stored response with the query's id, RD bit
    /// and question (its exact case), TTLs decreased by the whole seconds spent in the cache.
    /// False on a miss, or an expired entry (removed then). The response is as large as the
    /// upstream's was: for UDP, pass it through [`crate::fit`] with [`crate::udp_limit`].
    pub fn get(&mut self, query: &[u8], now_ms: u64, out: &mut Vec<u8>) -> bool {
        out.clear();
        let hit = self.lookup(query, now_ms, out);
        if hit {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
        }
        hit
    }

    fn lookup(&mut self, query: &[u8], now_ms: u64, out: &mut Vec<u8>) -> bool {
        let Some(key) = Key::of(query) else { return false };
        let hash = self.hasher.hash_one(key.bytes());
        let Ok(found) = self.table.find_entry(hash, |e| *e.key == *key.bytes()) else { return false };
        if found.get().expires_ms <= now_ms {
            let (gone, _) = found.remove();
            self.bytes -= gone.cost();
            return false;
        }
        let e = found.get();
        out.extend_from_slice(&e.response);
        let q = key.question.name;
        // Same key, so the same name up to case: the same length.
        out[HEADER_LEN..HEADER_LEN + q.len()].copy_from_slice(&query[q]);
        out[..2].copy_from_slice(&key.header.id.to_be_bytes());
        // RD is the low bit of the flags' first byte.
        out[2] = (out[2] & !1) | u8::from(key.header.has(FLAG_RD));
        let elapsed = u32::try_from(now_ms.saturating_sub(e.stored_ms) / 1000).unwrap_or(u32::MAX);
        for &at in e.ttl_at.iter() {
            let at = usize::from(at);
            let ttl = u32::from_be_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]);
            out[at..at + 4].copy_from_slice(&ttl.saturating_sub(elapsed).to_be_bytes());
        }
        true
    }

    /// Stores `response` to `query` at `now_ms`; see the module documentation for what is kept
    /// and for how long. `query` is the query as sent upstream (the response must carry its id).
    /// An entry for the same key is replaced.
    pub fn put(&mut self, query: &[u8], response: &[u8], now_ms: u64) {
        if self.capacity == 0 {
            return;
        }
        let Some(key) = Key::of(query) else { return };
        let Some((stored, ttl_at, lifetime)) = self.cacheable(&key, response) else { return };
        let Ok(ttl_at) = ttl_at.iter().map(|&a| u16::try_from(a)).collect::<Result<Box<[u16]>, _>>() else { return };
        let need = cost(key.len, stored.len(), ttl_at.len());
        if need > self.max_bytes {
            return;
        }
        let hash = self.hasher.hash_one(key.bytes());
        if let Ok(old) = self.table.find_entry(hash, |e| *e.key == *key.bytes()) {
            let (old, _) = old.remove();
            self.bytes -= old.cost();
        }
        while self.table.len() >= self.capacity || self.bytes + need > self.max_bytes {
            if !self.evict_one(now_ms) {
                break;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let expires_ms = now_ms.saturating_add(u64::from(lifetime) * 1000);
        let entry =
            Entry { key: key.bytes().into(), hash, seq, stored_ms: now_ms, expires_ms, response: stored.into_boxed_slice(), ttl_at };
        self.bytes += entry.cost();
        self.table.insert_unique(hash, entry, |e| e.hash);
        self.fifo.push_back((seq, hash));
        self.expiry.push(Reverse((expires_ms, seq, hash)));
        self.compact();
    }

    /// The response as it will be stored (TTLs capped), where its TTLs
    /// are, and its lifetime in seconds; None if it is not to be cached.
    fn cacheable(&self, key: &Key, response: &[u8]) -> Option<(Vec<u8>, Vec<usize>, u32)> {
        // TTL offsets are kept as u16: a DNS message is at most 65535 bytes anyway.
        if response.len() > usize::from(u16::MAX) {
            return None;
        }
        let h = Header::read(response)?;
        if !h.is_response() || h.opcode() != 0 || h.has(FLAG_TC) || h.id != key.header.id || h.qd != 1 {
            return None;
        }
        let rq = wire::first_question(response)?;
        let qname = &key.bytes()[..key.question.name.len()];
        if rq.qtype != key.question.qtype || rq.qclass != key.question.qclass || !response[rq.name.clone()].eq_ignore_ascii_case(qname) {
            return None;
        }
        let rcode = h.rcode();
        if rcode != RCODE_NOERROR && rcode != RCODE_NXDOMAIN {
            return None;
        }

        let mut min_ttl = u32::MAX;
        let mut soa: Option<u32> = None;
        let mut ttl_at = Vec::new();
        let mut bad_edns = false;
        wire::walk(response, |section, rr| {
            if rr.rtype == TYPE_OPT {
                // An extended RCODE (BADVERS, BADCOOKIE...) is an error too.
                bad_edns |= section == 2 && rr.ttl >> 24 != 0;
                return;
            }
            ttl_at.push(rr.ttl_at);
            let ttl = if rr.ttl > TTL_MAX_VALID { 0 } else { rr.ttl };
            if section < 2 {
                min_ttl = min_ttl.min(ttl);
            }
            if section == 1 && rr.rtype == TYPE_SOA && soa.is_none() && rr.rdata.len() >= 22 {
                let minimum = wire::be32(response, rr.rdata.end - 4).unwrap_or(0);
                soa = Some(ttl.min(if minimum > TTL_MAX_VALID { 0 } else { minimum }));
            }
        })?;
        if bad_edns {
            return None;
        }
        let negative = rcode == RCODE_NXDOMAIN || h.an == 0;
        let lifetime = if negative { soa? } else { min_ttl }.min(self.max_ttl);
        if lifetime == 0 {
            return None;
        }

        // Whole, trailing bytes included: a compression pointer may point anywhere.
        let mut stored = response.to_vec();
        // Served TTLs never outlast the entry's cap; in a negative answer none outlasts the
        // negative lifetime (RFC 2308 §5: the SOA's TTL is the one the asker caches for).
        let cap = if negative { lifetime } else { self.max_ttl };
        for &at in &ttl_at {
            let ttl = wire::be32(&stored, at)?;
            let ttl = if ttl > TTL_MAX_VALID { 0 } else { ttl.min(cap) };
            stored[at..at + 4].copy_from_slice(&ttl.to_be_bytes());
        }
        Some((stored, ttl_at, lifetime))
    }

    /// Removes one entry: the soonest expired, else the oldest inserted. False if none is left.
    fn evict_one(&mut self, now_ms: u64) -> bool {
        while let Some(&Reverse((expires_ms, seq, hash))) = self.expiry.peek() {
            if expires_ms > now_ms {
                break;
            }
            self.expiry.pop();
            if self.remove(seq, hash) {
                self.stats.evictions += 1;
                return true;
            }
        }
        while let Some((seq, hash)) = self.fifo.pop_front() {
            if self.remove(seq, hash) {
                self.stats.evictions += 1;
                return true;
            }
        }
        false
    }

    /// Removes the entry of insertion `seq` if it is still there.
    fn remove(&mut self, seq: u64, hash: u64) -> bool {
        match self.table.find_entry(hash, |e| e.seq == seq) {
            Ok(found) => {
                let (gone, _) = found.remove();
                self.bytes -= gone.cost();
                true
            }
            Err(_) => false,
        }
    }

    /// Drops the stale items of the queue and the heap once they outnumber the entries.
    fn compact(&mut self) {
        let live = self.table.len();
        if self.fifo.len() > 2 * live + 32 {
            let mut items: Vec<(u64, u64)> = self.table.iter().map(|e| (e.seq, e.hash)).collect();
            items.sort_unstable();
            self.fifo = items.into();
        }
        if self.expiry.len() > 2 * live + 32 {
            self.expiry = self.table.iter().map(|e| Reverse((e.expires_ms, e.seq, e.hash))).collect();
        }
    }

    /// Removes every entry (counters are kept).
    pub fn clear(&mut self) {
        self.table.clear();
        self.fifo.clear();
        self.expiry.clear();
        self.bytes = 0;
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats { entries: self.table.len(), ..self.stats }
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::*;
    use crate::test_util::{query, query_with};

    fn response_to(q: &[u8], ttls: &[u32], rcode: ResponseCode, soa: Option<(u32, u32)>) -> Vec<u8> {
        let qm = Message::from_vec(q).unwrap();
        let mut r = Message::new(qm.metadata.id, MessageType::Response, OpCode::Query);
        r.metadata.recursion_desired = qm.metadata.recursion_desired;
        r.metadata.recursion_available = true;
        r.metadata.response_code = rcode;
        r.add_query(qm.queries[0].clone());
        let name = qm.queries[0].name().clone();
        for (i, &ttl) in ttls.iter().enumerate() {
            r.add_answer(Record::from_rdata(name.clone(), ttl, RData::A(A::new(192, 0, 2, i as u8))));
        }
        if let Some((ttl, minimum)) = soa {
            let mname: Name = "ns.example.".parse().unwrap();
            let rname: Name = "hostmaster.example.".parse().unwrap();
            let soa = SOA::new(mname, rname, 1, 3600, 600, 86400, minimum);
            r.add_authority(Record::from_rdata("example.".parse().unwrap(), ttl, RData::SOA(soa)));
        }
        r.edns = qm.edns.clone();
        r.to_vec().unwrap()
    }

    fn ttls_of(bytes: &[u8]) -> Vec<u32> {
        Message::from_vec(bytes).unwrap().all_sections().map(|r| r.ttl).collect()
    }

    #[test]
    fn hit_decrements_ttl_and_rewrites_id_and_case() {
        let mut c = Cache::new(16);
        let q = query_with("www.example.com.", RecordType::A, |m| m.metadata.id = 1);
        let r = response_to(&q, &[300, 200], ResponseCode::NoError, None);
        c.put(&q, &r, 10_000);
        assert_eq!(c.len(), 1);

        let q2 = query_with("WwW.ExAmple.COM.", RecordType::A, |m| m.metadata.id = 0xabcd);
        let mut out = Vec::new();
        assert!(c.get(&q2, 10_000 + 30_500, &mut out));
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.id, 0xabcd);
        assert_eq!(m.queries[0].name().to_ascii(), "WwW.ExAmple.COM.");
        assert_eq!(ttls_of(&out), vec![270, 170]);
        assert_eq!(m.answers.len(), 2);
        // Another type, or the DO bit: other keys.
        assert!(!c.get(&query("www.example.com.", RecordType::AAAA), 10_000, &mut out));
        let with_do = query_with("www.example.com.", RecordType::A, |m| {
            let mut e = Edns::new();
            e.set_dnssec_ok(true);
            m.edns = Some(e);
        });
        assert!(!c.get(&with_do, 10_000, &mut out));
        assert_eq!(c.stats(), CacheStats { hits: 1, misses: 2, entries: 1, evictions: 0 });
    }

    #[test]
    fn expiry_removes_the_entry() {
        let mut c = Cache::new(16);
        let q = query("a.example.", RecordType::A);
        c.put(&q, &response_to(&q, &[60, 5], ResponseCode::NoError, None), 0);
        let mut out = Vec::new();
        assert!(c.get(&q, 4_999, &mut out));
        assert_eq!(ttls_of(&out), vec![56, 1]);
        assert!(!c.get(&q, 5_000, &mut out), "the smallest TTL is the lifetime");
        assert!(c.is_empty());
    }

    #[test]
    fn negative_answers_need_an_soa() {
        let mut c = Cache::new(16);
        let mut out = Vec::new();
        // NXDOMAIN with SOA TTL 900, MINIMUM 60: 60 seconds, the SOA served with TTL 60 - t.
        let q = query("nx.example.", RecordType::A);
        c.put(&q, &response_to(&q, &[], ResponseCode::NXDomain, Some((900, 60))), 0);
        assert!(c.get(&q, 10_000, &mut out));
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(ttls_of(&out), vec![50]);
        assert!(!c.get(&q, 60_000, &mut out));
        // NODATA with SOA TTL 30, MINIMUM 300: 30 seconds.
        let q = query("nodata.example.", RecordType::AAAA);
        c.put(&q, &response_to(&q, &[], ResponseCode::NoError, Some((30, 300))), 0);
        assert!(c.get(&q, 29_999, &mut out));
        assert!(!c.get(&q, 30_000, &mut out));
        // Without an SOA: not cached.
        let q = query("bare.example.", RecordType::A);
        c.put(&q, &response_to(&q, &[], ResponseCode::NXDomain, None), 0);
        c.put(&q, &response_to(&q, &[], ResponseCode::NoError, None), 0);
        assert!(!c.get(&q, 0, &mut out));
    }

    #[test]
    fn not_cached_servfail_tc_ttl0_mismatch() {
        let mut c = Cache::new(16);
        let q = query_with("x.example.", RecordType::A, |m| m.metadata.id = 77);
        c.put(&q, &response_to(&q, &[60], ResponseCode::ServFail, None), 0);
        c.put(&q, &response_to(&q, &[60], ResponseCode::Refused, None), 0);
        c.put(&q, &response_to(&q, &[60, 0], ResponseCode::NoError, None), 0);
        let mut tc = response_to(&q, &[60], ResponseCode::NoError, None);
        tc[2] |= 0x02;
        c.put(&q, &tc, 0);
        let mut other_id = response_to(&q, &[60], ResponseCode::NoError, None);
        other_id[1] ^= 1;
        c.put(&q, &other_id, 0);
        let other_name = query_with("y.example.", RecordType::A, |m| m.metadata.id = 77);
        c.put(&q, &response_to(&other_name, &[60], ResponseCode::NoError, None), 0);
        let other_type = query_with("x.example.", RecordType::AAAA, |m| m.metadata.id = 77);
        c.put(&q, &response_to(&other_type, &[60], ResponseCode::NoError, None), 0);
        c.put(&q, &q, 0);
        c.put(&q, &[0u8; 11], 0);
        assert!(c.is_empty());
        // A TTL with the top bit set is 0 (RFC 2181 §8).
        c.put(&q, &response_to(&q, &[0x8000_0000], ResponseCode::NoError, None), 0);
        assert!(c.is_empty());
        c.put(&q, &response_to(&q, &[60], ResponseCode::NoError, None), 0);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn max_ttl_caps_lifetime_and_served_ttls() {
        let mut c = Cache::new(4).with_max_ttl(100);
        let q = query("long.example.", RecordType::A);
        c.put(&q, &response_to(&q, &[1_000_000], ResponseCode::NoError, None), 0);
        let mut out = Vec::new();
        assert!(c.get(&q, 1_000, &mut out));
        assert_eq!(ttls_of(&out), vec![99]);
        assert!(!c.get(&q, 100_000, &mut out));
    }

    #[test]
    fn capacity_evicts_expired_first_then_oldest() {
        let mut c = Cache::new(3);
        let mut out = Vec::new();
        let qs: Vec<Vec<u8>> = (0..6).map(|i| query(&format!("n{i}.example."), RecordType::A)).collect();
        c.put(&qs[0], &response_to(&qs[0], &[100], ResponseCode::NoError, None), 0);
        c.put(&qs[1], &response_to(&qs[1], &[10], ResponseCode::NoError, None), 0);
        c.put(&qs[2], &response_to(&qs[2], &[100], ResponseCode::NoError, None), 0);
        // At 20 s n1 has expired: it goes, not the oldest (n0).
        c.put(&qs[3], &response_to(&qs[3], &[100], ResponseCode::NoError, None), 20_000);
        assert_eq!(c.len(), 3);
        assert!(c.get(&qs[0], 20_000, &mut out));
        assert!(!c.get(&qs[1], 20_000, &mut out));
        // Nothing expired: the oldest inserted (n0) goes.
        c.put(&qs[4], &response_to(&qs[4], &[100], ResponseCode::NoError, None), 20_000);
        assert!(!c.get(&qs[0], 20_000, &mut out));
        for q in &qs[2..5] {
            assert!(c.get(q, 20_000, &mut out));
        }
        assert_eq!(c.stats().evictions, 2);
        // Replacing a key does not evict.
        c.put(&qs[4], &response_to(&qs[4], &[50], ResponseCode::NoError, None), 20_000);
        assert_eq!((c.len(), c.stats().evictions), (3, 2));
        // Many rounds: the stale items stay bounded.
        for round in 0..1000u64 {
            let q = &qs[(round % 6) as usize];
            c.put(q, &response_to(q, &[100], ResponseCode::NoError, None), 20_000 + round);
        }
        assert_eq!(c.len(), 3);
        assert!(c.fifo.len() <= 2 * 3 + 33 && c.expiry.len() <= 2 * 3 + 33);
        let live: usize = c.table.iter().map(Entry::cost).sum();
        assert_eq!(c.bytes, live);
    }

    #[test]
    fn byte_budget_bounds_memory() {
        let q = query("big.example.", RecordType::A);
        let r = response_to(&q, &[60; 20], ResponseCode::NoError, None);
        let mut c = Cache::new(100).with_max_bytes(r.len() + 200);
        c.put(&q, &r, 0);
        assert_eq!(c.len(), 1);
        let q2 = query("big2.example.", RecordType::A);
        c.put(&q2, &response_to(&q2, &[60; 20], ResponseCode::NoError, None), 0);
        assert_eq!(c.len(), 1, "two do not fit the budget");
        let mut out = Vec::new();
        assert!(c.get(&q2, 0, &mut out));
        let mut tiny = Cache::new(100).with_max_bytes(10);
        tiny.put(&q, &r, 0);
        assert!(tiny.is_empty());
        let mut none = Cache::new(0);
        none.put(&q, &r, 0);
        assert!(none.is_empty());
    }

    #[test]
    fn edns_state_is_part_of_the_key() {
        let mut c = Cache::new(4);
        let plain = query("e.example.", RecordType::A);
        let with_opt = query_with("e.example.", RecordType::A, |m| m.edns = Some(Edns::new()));
        c.put(&with_opt, &response_to(&with_opt, &[60], ResponseCode::NoError, None), 0);
        let mut out = Vec::new();
        assert!(!c.get(&plain, 0, &mut out), "a reply with an OPT record for a query without one");
        assert!(c.get(&with_opt, 0, &mut out));
        assert!(Message::from_vec(&out).unwrap().edns.is_some());
    }
}
