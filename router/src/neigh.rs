//! The neighbour table of one network (IP → MAC), as ARP (RFC 826) and NDP (RFC 4861 §7.3)
//! would keep it on a router, with time as a parameter (seconds on the data plane's clock).
//!
//! Read RFC 1122 §2.3.2.1 first: a host or router must not send more than one ARP request per
//! second for one destination, and must time its cache entries out. Entries are:
//!
//! - **static**: an endpoint's address and MAC, set by the control plane; never age, never
//!   evicted, never overwritten by what is learned;
//! - **learned**: seen in ARP or NDP at the gateway (the slow path calls [`NeighTable::learn`]);
//!   usable for `aging` seconds after the neighbour last spoke, then resolved again;
//! - **incomplete**: a resolution request went out; lookups answer [`NeighLookup::Incomplete`]
//!   for a second, then [`NeighLookup::NotFound`] again (the caller sends the next request), up
//!   to [`MAX_PROBES`] requests; after that the address is **failed** for [`FAILED_HOLD`] seconds
//!   (lookups answer [`NeighLookup::Failed`]: the router reports "host unreachable"), then
//!   resolution starts over.
//!
//! Static entries live in a map swapped whole on change (`ArcSwap`), so the packet path reads
//! them without writing to a shared cache line: every worker resolves the same few next hops.
//! Learned and incomplete entries count against a fixed capacity (the oldest is evicted when it
//! is reached) and live in shards, each a hash map behind its own `RwLock`: the packet path
//! takes the read lock for an address it can answer, the write lock at most once a second per
//! unresolved address.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use foldhash::fast::RandomState;
use hashbrown::HashMap;
use parking_lot::{Mutex, RwLock};
use vswitch_switch::Mac;

/// Seconds between two resolution requests for one address (RFC 1122 §2.3.2.1).
pub const RETRANS_SECS: u32 = 1;
/// Requests sent for one address before it counts as unreachable (RFC 4861 MAX_MULTICAST_SOLICIT).
pub const MAX_PROBES: u8 = 3;
/// Seconds an unreachable address stays failed before resolution is tried again.
pub const FAILED_HOLD: u32 = 10;
/// Default seconds a learned entry stays usable after its neighbour last spoke (as the FDB).
pub const DEFAULT_AGING_SECS: u32 = 300;
/// Default learned and incomplete entries one network's table holds.
pub const DEFAULT_CAPACITY: usize = 4096;
/// Tables at least this big are split in shards; smaller ones have one (and an exact capacity).
const SHARDED_FROM: usize = 256;
const SHARDS: usize = 16;

/// The answer to "what is the MAC of this next hop?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighLookup {
    /// Known: send to this MAC.
    Found(Mac),
    /// Unknown, and no request went out in the last second: the caller sends one now (the
    /// table has recorded that it did).
    NotFound,
    /// A request went out less than a second ago: wait for the answer.
    Incomplete,
    /// [`MAX_PROBES`] requests went unanswered: the host is unreachable for now.
    Failed,
}

/// What [`NeighTable::learn`] did with an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighLearn {
    /// A new entry, or an incomplete one resolved.
    Added,
    /// Already known with this MAC; its age was reset.
    Refreshed,
    /// Known with another MAC, now replaced.
    Changed,
    /// A static entry owns the address; nothing learned.
    Static,
    /// Not a MAC a neighbour can have (group address, or all zeros).
    Invalid,
}

/// The state of an entry, as `neigh show` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighState {
    Static,
    /// Learned and usable.
    Reachable,
    /// Learned, but older than the aging time: the next lookup resolves it again.
    Stale,
    Incomplete,
    Failed,
}

impl NeighState {
    pub fn name(self) -> &'static str {
        match self {
            NeighState::Static => "PERMANENT",
            NeighState::Reachable => "REACHABLE",
            NeighState::Stale => "STALE",
            NeighState::Incomplete => "INCOMPLETE",
            NeighState::Failed => "FAILED",
        }
    }
}

/// One row of `neigh show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighRow {
    pub ip: IpAddr,
    /// None while incomplete or failed.
    pub mac: Option<Mac>,
    pub state: NeighState,
    /// Seconds since the neighbour last spoke (learned) or was last asked (incomplete, failed);
    /// 0 for static entries.
    pub age: u32,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Learned,
    /// Resolution in progress; `probes` requests sent so far.
    Pending {
        probes: u8,
    },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    mac: Mac,
    kind: Kind,
    /// Learned: when the neighbour last spoke. Pending: when it was last asked.
    at: u32,
}

/// Learned and pending entries whose address hashes to one shard.
type Shard = HashMap<IpAddr, Entry, RandomState>;
type Statics = HashMap<IpAddr, Mac, RandomState>;

/// The neighbour table of one network. See the module documentation.
#[derive(Debug)]
pub struct NeighTable {
    statics: ArcSwap<Statics>,
    /// Serializes writers of `statics` so that none loses another's edit.
    statics_writer: Mutex<()>,
    shards: Box<[RwLock<Shard>]>,
    /// Learned and pending entries one shard holds.
    shard_cap: usize,
    aging: u32,
}

/// Seconds from `then` to `now` on a clock that may wrap; a `then` in the future counts as now.
fn since(then: u32, now: u32) -> u32 {
    let d = now.wrapping_sub(then);
    if d > i32::MAX as u32 {
        0
    } else {
        d
    }
}

impl Default for NeighTable {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY, DEFAULT_AGING_SECS)
    }
}

impl NeighTable {
    /// A table holding up to `capacity` learned and incomplete entries (static ones do not
    /// count), whose learned entries are usable for `aging_secs` after the neighbour last spoke.
    pub fn new(capacity: usize, aging_secs: u32) -> Self {
        let capacity = capacity.max(1);
        let n = if capacity >= SHARDED_FROM { SHARDS } else { 1 };
        Self {
            statics: ArcSwap::default(),
            statics_writer: Mutex::new(()),
            shards: (0..n).map(|_| RwLock::new(Shard::default())).collect(),
            shard_cap: capacity.div_ceil(n),
            aging: aging_secs,
        }
    }

    fn shard(&self, ip: &IpAddr) -> &RwLock<Shard> {
        let h = match ip {
            IpAddr::V4(a) => u64::from(a.to_bits()),
            IpAddr::V6(a) => {
                let b = a.to_bits();
                (b as u64) ^ ((b >> 64) as u64)
            }
        };
        // Fibonacci hashing: neighbouring addresses land in different shards.
        let i = (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize % self.shards.len();
        &self.shards[i]
    }

    fn fresh(&self, e: &Entry, now: u32) -> bool {
        since(e.at, now) <= self.aging
    }

    /// The MAC of `ip` at time `now`, or what to do about not knowing it. See [`NeighLookup`].
    pub fn lookup(&self, ip: IpAddr, now: u32) -> NeighLookup {
        if let Some(mac) = self.statics.load().get(&ip) {
            return NeighLookup::Found(*mac);
        }
        let shard = self.shard(&ip);
        {
            let s = shard.read();
            if let Some(e) = s.get(&ip) {
                match e.kind {
                    Kind::Learned if self.fresh(e, now) => return NeighLookup::Found(e.mac),
                    Kind::Pending { .. } if since(e.at, now) < RETRANS_SECS => return NeighLookup::Incomplete,
                    Kind::Pending { probes } if probes >= MAX_PROBES && since(e.at, now) < FAILED_HOLD => return NeighLookup::Failed,
                    _ => {}
                }
            }
        }
        // Something to record: take the write lock and decide again (another worker may have
        // recorded the same request meanwhile, or the address became static).
        let mut s = shard.write();
        if let Some(mac) = self.statics.load().get(&ip) {
            return NeighLookup::Found(*mac);
        }
        if let Some(e) = s.get_mut(&ip) {
            return match e.kind {
                Kind::Learned if self.fresh(e, now) => NeighLookup::Found(e.mac),
                Kind::Learned => {
                    *e = Entry { mac: Mac::default(), kind: Kind::Pending { probes: 1 }, at: now };
                    NeighLookup::NotFound
                }
                Kind::Pending { probes } => {
                    let waited = since(e.at, now);
                    if waited < RETRANS_SECS {
                        NeighLookup::Incomplete
                    } else if probes >= MAX_PROBES && waited < FAILED_HOLD {
                        NeighLookup::Failed
                    } else {
                        let probes = if probes >= MAX_PROBES { 1 } else { probes + 1 };
                        *e = Entry { mac: Mac::default(), kind: Kind::Pending { probes }, at: now };
                        NeighLookup::NotFound
                    }
                }
            };
        }
        make_room(&mut s, self.shard_cap, now);
        s.insert(ip, Entry { mac: Mac::default(), kind: Kind::Pending { probes: 1 }, at: now });
        NeighLookup::NotFound
    }

    /// Records that `ip` is at `mac`, as seen at time `now` in an ARP packet or a Neighbor
    /// Solicitation or Advertisement. Static entries win over what is learned.
    pub fn learn(&self, ip: IpAddr, mac: Mac, now: u32) -> NeighLearn {
        if mac.is_multicast() || mac.is_zero() {
            return NeighLearn::Invalid;
        }
        // The shard's lock first: the static map changes only under it, so an address is
        // never static and learned at once.
        let mut s = self.shard(&ip).write();
        if self.statics.load().contains_key(&ip) {
            return NeighLearn::Static;
        }
        if let Some(e) = s.get_mut(&ip) {
            let was = *e;
            *e = Entry { mac, kind: Kind::Learned, at: now };
            return match was.kind {
                Kind::Learned if was.mac == mac => NeighLearn::Refreshed,
                Kind::Learned => NeighLearn::Changed,
                Kind::Pending { .. } => NeighLearn::Added,
            };
        }
        make_room(&mut s, self.shard_cap, now);
        s.insert(ip, Entry { mac, kind: Kind::Learned, at: now });
        NeighLearn::Added
    }

    /// Pins `ip` to `mac` (an endpoint's own address): it never ages and learning never moves
    /// it. Copies the static map (the control plane's cost, once per endpoint).
    pub fn set_static(&self, ip: IpAddr, mac: Mac) {
        self.edit_statics(ip, |m| {
            m.insert(ip, mac);
        });
    }

    /// Forgets `ip`, static or not. Returns whether it was known.
    pub fn remove(&self, ip: IpAddr) -> bool {
        let mut was_static = false;
        let was_dynamic = self.edit_statics(ip, |m| was_static = m.remove(&ip).is_some());
        was_static || was_dynamic
    }

    /// Publishes an edited copy of the static map with the shard of `ip` locked, and drops any
    /// learned or pending entry of `ip`; returns whether there was one.
    fn edit_statics(&self, ip: IpAddr, edit: impl FnOnce(&mut Statics)) -> bool {
        let _w = self.statics_writer.lock();
        let mut s = self.shard(&ip).write();
        let mut next = Statics::clone(&self.statics.load());
        edit(&mut next);
        self.statics.store(Arc::new(next));
        s.remove(&ip).is_some()
    }

    /// Drops learned entries older than the aging time and resolutions given up on; returns how
    /// many. Lookups treat such entries as gone anyway; this gives their memory back.
    pub fn expire(&self, now: u32) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut s = shard.write();
            let before = s.len();
            s.retain(|_, e| match e.kind {
                Kind::Learned => since(e.at, now) <= self.aging,
                Kind::Pending { .. } => since(e.at, now) < FAILED_HOLD,
            });
            removed += before - s.len();
        }
        removed
    }

    /// Every entry, for `neigh show`, sorted by address.
    pub fn rows(&self, now: u32) -> Vec<NeighRow> {
        let statics = self.statics.load();
        let mut rows: Vec<NeighRow> =
            statics.iter().map(|(ip, mac)| NeighRow { ip: *ip, mac: Some(*mac), state: NeighState::Static, age: 0 }).collect();
        for shard in self.shards.iter() {
            let s = shard.read();
            rows.extend(s.iter().map(|(ip, e)| {
                let age = since(e.at, now);
                let (mac, state) = match e.kind {
                    Kind::Learned if self.fresh(e, now) => (Some(e.mac), NeighState::Reachable),
                    Kind::Learned => (Some(e.mac), NeighState::Stale),
                    Kind::Pending { probes } if probes >= MAX_PROBES && age >= RETRANS_SECS => (None, NeighState::Failed),
                    Kind::Pending { .. } => (None, NeighState::Incomplete),
                };
                NeighRow { ip: *ip, mac, state, age }
            }));
        }
        rows.sort_by_key(|r| r.ip);
        rows
    }

    /// Entries of every kind.
    pub fn len(&self) -> usize {
        self.statics.load().len() + self.shards.iter().map(|s| s.read().len()).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Makes room in shard `s` for one more entry: evicts the oldest if it holds `cap`. The scan
/// is bounded by the shard's capacity and runs only when a new address arrives at a full shard.
///
/// The first entry sizes the map for twice its capacity, once: below half full, hashbrown
/// reclaims its tombstones in place, so the packet path never allocates again for this shard.
fn make_room(s: &mut Shard, cap: usize, now: u32) {
    if s.capacity() == 0 {
        s.reserve(2 * cap);
    }
    if s.len() < cap {
        return;
    }
    if let Some(ip) = s.iter().max_by_key(|(_, e)| since(e.at, now)).map(|(ip, _)| *ip) {
        s.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M1: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const M2: Mac = Mac([2, 0, 0, 0, 0, 2]);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn static_entries_are_found_and_never_overwritten_or_aged() {
        let t = NeighTable::new(4, 10);
        t.set_static(ip("10.0.0.2"), M1);
        assert_eq!(t.lookup(ip("10.0.0.2"), 0), NeighLookup::Found(M1));
        assert_eq!(t.learn(ip("10.0.0.2"), M2, 5), NeighLearn::Static);
        assert_eq!(t.lookup(ip("10.0.0.2"), 1_000_000), NeighLookup::Found(M1));
        assert_eq!(t.expire(1_000_000), 0);
        assert!(t.remove(ip("10.0.0.2")));
        assert!(!t.remove(ip("10.0.0.2")));
        assert_eq!(t.lookup(ip("10.0.0.2"), 0), NeighLookup::NotFound);
    }

    #[test]
    fn resolution_is_rate_limited_then_fails_then_retries() {
        let t = NeighTable::new(4, 10);
        let a = ip("fd00::5");
        assert_eq!(t.lookup(a, 100), NeighLookup::NotFound, "first request");
        for _ in 0..5 {
            assert_eq!(t.lookup(a, 100), NeighLookup::Incomplete, "one request per second");
        }
        assert_eq!(t.lookup(a, 101), NeighLookup::NotFound, "second request");
        assert_eq!(t.lookup(a, 101), NeighLookup::Incomplete);
        assert_eq!(t.lookup(a, 102), NeighLookup::NotFound, "third request");
        assert_eq!(t.rows(102)[0].state, NeighState::Incomplete);
        assert_eq!(t.lookup(a, 103), NeighLookup::Failed);
        assert_eq!(t.rows(103)[0].state, NeighState::Failed);
        assert_eq!(t.lookup(a, 102 + FAILED_HOLD - 1), NeighLookup::Failed);
        assert_eq!(t.lookup(a, 102 + FAILED_HOLD), NeighLookup::NotFound, "tried again");
        assert_eq!(t.learn(a, M1, 200), NeighLearn::Added, "the answer resolves it");
        assert_eq!(t.lookup(a, 200), NeighLookup::Found(M1));
    }

    #[test]
    fn learned_entries_age_and_are_refreshed_by_their_neighbour() {
        let t = NeighTable::new(4, 10);
        let a = ip("10.0.0.3");
        assert_eq!(t.learn(a, M1, 0), NeighLearn::Added);
        assert_eq!(t.learn(a, M1, 5), NeighLearn::Refreshed);
        assert_eq!(t.lookup(a, 15), NeighLookup::Found(M1));
        assert_eq!(t.rows(16)[0].state, NeighState::Stale);
        assert_eq!(t.lookup(a, 16), NeighLookup::NotFound, "stale: resolve again");
        assert_eq!(t.learn(a, M2, 16), NeighLearn::Added);
        assert_eq!(t.learn(a, M1, 17), NeighLearn::Changed);
        assert_eq!(t.learn(a, Mac::BROADCAST, 17), NeighLearn::Invalid);
        assert_eq!(t.learn(a, Mac::default(), 17), NeighLearn::Invalid);
        assert_eq!(t.expire(27), 0);
        assert_eq!(t.expire(28), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn capacity_evicts_the_oldest_dynamic_entry_and_spares_static_ones() {
        let t = NeighTable::new(3, 100);
        for i in 0..10 {
            t.set_static(ip(&format!("10.0.1.{i}")), M1);
        }
        for i in 0..3u32 {
            t.learn(ip(&format!("10.0.0.{i}")), M1, i);
        }
        assert_eq!(t.lookup(ip("10.0.0.9"), 10), NeighLookup::NotFound, "a fourth dynamic entry");
        assert_eq!(t.len(), 13);
        let rows = t.rows(10);
        assert!(!rows.iter().any(|r| r.ip == ip("10.0.0.0")), "the oldest went");
        assert_eq!(rows.iter().filter(|r| r.state == NeighState::Static).count(), 10);
        t.set_static(ip("10.0.0.1"), M2);
        t.learn(ip("10.0.0.7"), M1, 11);
        t.learn(ip("10.0.0.8"), M1, 12);
        assert_eq!(t.len(), 14, "static entries do not count against the capacity");
    }

    #[test]
    fn sharded_tables_hold_about_their_capacity() {
        let t = NeighTable::new(1024, 100);
        for i in 0..5000u32 {
            t.learn(IpAddr::V4((0x0a00_0000 + i).into()), M1, i);
        }
        let n = t.len();
        assert!((900..=1024).contains(&n), "{n}");
        assert_eq!(t.lookup(IpAddr::V4((0x0a00_0000 + 4999).into()), 5000), NeighLookup::Found(M1));
    }

    #[test]
    fn churn_never_grows_a_shard_after_its_first_entry() {
        let t = NeighTable::new(64, 5);
        t.learn(ip("10.0.0.1"), M1, 0);
        let cap = t.shards[0].read().capacity();
        for i in 0..100_000u32 {
            let a = IpAddr::V4((0x0a00_0000 + i).into());
            if i % 2 == 0 {
                t.learn(a, M1, i / 10);
            } else {
                t.lookup(a, i / 10);
            }
            if i % 1000 == 0 {
                t.expire(i / 10);
            }
        }
        // `capacity()` counts tombstones against the room left, so churn can lower it without a
        // reallocation (how far depends on the map's random seed); growth would raise it.
        assert!(t.shards[0].read().capacity() <= cap, "{} > {cap}", t.shards[0].read().capacity());
        assert!(t.len() <= 64);
    }

    #[test]
    fn clock_going_backwards_is_not_an_age() {
        let t = NeighTable::new(4, 10);
        t.learn(ip("10.0.0.3"), M1, 100);
        assert_eq!(t.lookup(ip("10.0.0.3"), 50), NeighLookup::Found(M1));
        assert_eq!(t.lookup(ip("10.0.0.4"), 100), NeighLookup::NotFound);
        assert_eq!(t.lookup(ip("10.0.0.4"), 99), NeighLookup::Incomplete);
    }

    #[test]
    fn concurrent_lookups_send_one_request_per_second() {
        let t = std::sync::Arc::new(NeighTable::new(64, 10));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || (0..1000).filter(|_| t.lookup(ip("10.0.0.9"), 7) == NeighLookup::NotFound).count())
            })
            .collect();
        let requests: usize = threads.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(requests, 1);
    }
}
