//! The forwarding database: (network, MAC) → port, learned with aging, static entries, and a
//! per-port cap on learned addresses against MAC flooding.
//!
//! Sharded: each shard is a read-mostly hash map behind its own `RwLock`. The packet path takes
//! a read lock for lookups and for refreshing an entry it already knows (the timestamp is an
//! atomic), and a write lock only when a new address appears or one moves port. Control
//! operations (show, aging, flush) take one shard at a time, so a worker never waits on more
//! than one shard's worth of work. Time is a parameter (seconds on the dataplane's clock).

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use hashbrown::HashMap;
use parking_lot::RwLock;

use crate::{Mac, NetId, PortId};

const SHARDS: usize = 64;
/// `seen` value of an entry that never ages.
const STATIC: u32 = u32::MAX;
/// Ports the per-port counters can address.
pub const MAX_PORTS: usize = 4096;
/// Learned entries the whole table holds at most (about 36 MB); past it nothing new is learned.
pub const MAX_LEARNED: u32 = 1 << 20;
/// Entries each shard has room for before its first growth (4096 in all): small networks never
/// make a worker rehash a shard on the packet path.
const SHARD_CAPACITY: usize = 64;

#[derive(Debug)]
struct Entry {
    port: AtomicU32,
    seen: AtomicU32,
}

type Shard = RwLock<HashMap<u64, Entry, foldhash::fast::RandomState>>;

/// The outcome of offering a source address to the FDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// Already known on this port (its age was refreshed).
    Known,
    /// A new entry.
    Added,
    /// The address moved from another port.
    Moved,
    /// Not learned: the port holds its limit of learned addresses.
    LimitReached,
    /// Not learned: a static entry owns the address on another port.
    StaticElsewhere,
}

/// One row of `fdb show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbRow {
    pub net: NetId,
    pub mac: Mac,
    pub port: PortId,
    pub is_static: bool,
    /// Seconds since the address was last seen (0 for static entries).
    pub age: u32,
}

#[derive(Debug)]
pub struct Fdb {
    shards: Box<[Shard]>,
    /// Learned (non-static) entries per port.
    learned: Box<[AtomicU32]>,
    /// Learned entries in all.
    total: AtomicU32,
}

impl Default for Fdb {
    fn default() -> Self {
        Self::new()
    }
}

fn key(net: NetId, mac: Mac) -> u64 {
    (u64::from(net) << 48) | mac.to_u64()
}

fn shard_of(k: u64) -> usize {
    // Fibonacci hashing: spreads consecutive MACs over shards.
    (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize
}

impl Fdb {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::with_capacity_and_hasher(SHARD_CAPACITY, foldhash::fast::RandomState::default())))
                .collect(),
            learned: (0..MAX_PORTS).map(|_| AtomicU32::new(0)).collect(),
            total: AtomicU32::new(0),
        }
    }

    fn shard(&self, k: u64) -> &Shard {
        &self.shards[shard_of(k)]
    }

    pub fn lookup(&self, net: NetId, mac: Mac) -> Option<PortId> {
        let k = key(net, mac);
        self.shard(k).read().get(&k).map(|e| e.port.load(Relaxed))
    }

    /// Offers `mac` seen on `port` at time `now`; learns unless the port is at `limit` (0 = no limit).
    pub fn learn(&self, net: NetId, mac: Mac, port: PortId, now: u32, limit: u32) -> Learn {
        let k = key(net, mac);
        let shard = self.shard(k);
        {
            let map = shard.read();
            if let Some(e) = map.get(&k) {
                let seen = e.seen.load(Relaxed);
                if e.port.load(Relaxed) == port {
                    // Store only on change: a store per frame would bounce the line between cores.
                    if seen != now && seen != STATIC {
                        e.seen.store(now, Relaxed);
                    }
                    return Learn::Known;
                }
                if seen == STATIC {
                    return Learn::StaticElsewhere;
                }
            }
        }
        let full = |me: &Self| (limit != 0 && me.learned_on(port) >= limit) || me.total.load(Relaxed) >= MAX_LEARNED;
        if full(self) {
            return Learn::LimitReached;
        }
        let mut map = shard.write();
        match map.get(&k) {
            Some(e) if e.seen.load(Relaxed) == STATIC => Learn::StaticElsewhere,
            Some(e) => {
                let old = e.port.swap(port, Relaxed);
                e.seen.store(now, Relaxed);
                if old != port {
                    self.count(old, -1);
                    self.count(port, 1);
                    Learn::Moved
                } else {
                    Learn::Known
                }
            }
            // Checked again under the lock: two queues of one port may race to the last slot.
            // (Different shards can still overshoot by a few; the cap is a guard, not an account.)
            None if full(self) => Learn::LimitReached,
            None => {
                map.insert(k, Entry { port: AtomicU32::new(port), seen: AtomicU32::new(now) });
                self.count(port, 1);
                Learn::Added
            }
        }
    }

    /// The port a static entry pins `mac` to, if any.
    pub fn static_owner(&self, net: NetId, mac: Mac) -> Option<PortId> {
        let k = key(net, mac);
        self.shard(k).read().get(&k).filter(|e| e.seen.load(Relaxed) == STATIC).map(|e| e.port.load(Relaxed))
    }

    /// Pins `mac` to `port` (an endpoint's own address); it never ages and is never moved by
    /// learning. Refused (false) when another port already holds it statically.
    pub fn add_static(&self, net: NetId, mac: Mac, port: PortId) -> bool {
        let k = key(net, mac);
        let mut map = self.shard(k).write();
        if let Some(e) = map.get(&k) {
            if e.seen.load(Relaxed) == STATIC && e.port.load(Relaxed) != port {
                return false;
            }
        }
        if let Some(old) = map.insert(k, Entry { port: AtomicU32::new(port), seen: AtomicU32::new(STATIC) }) {
            if old.seen.load(Relaxed) != STATIC {
                self.count(old.port.load(Relaxed), -1);
            }
        }
        true
    }

    fn count(&self, port: PortId, delta: i32) {
        let dec = |c: &AtomicU32| {
            // Never wrap below zero even if a caller miscounts.
            let _ = c.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
        };
        if delta > 0 {
            self.total.fetch_add(1, Relaxed);
        } else {
            dec(&self.total);
        }
        if let Some(c) = self.learned.get(port as usize) {
            if delta > 0 {
                c.fetch_add(1, Relaxed);
            } else {
                dec(c);
            }
        }
    }

    pub fn learned_on(&self, port: PortId) -> u32 {
        self.learned.get(port as usize).map_or(0, |c| c.load(Relaxed))
    }

    /// Removes every entry (learned or static) that `keep` rejects; returns how many went.
    fn remove_where(&self, mut drop_it: impl FnMut(u64, &Entry) -> bool) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            // Scan under the read lock first: most aging passes remove nothing.
            if !shard.read().iter().any(|(k, e)| drop_it(*k, e)) {
                continue;
            }
            shard.write().retain(|k, e| {
                if drop_it(*k, e) {
                    if e.seen.load(Relaxed) != STATIC {
                        self.count(e.port.load(Relaxed), -1);
                    }
                    removed += 1;
                    false
                } else {
                    true
                }
            });
        }
        removed
    }

    /// Removes learned entries older than their network's aging time (`aging(net)`, 0 = never).
    pub fn age(&self, now: u32, aging: impl Fn(NetId) -> u32) -> usize {
        self.remove_where(|k, e| {
            let seen = e.seen.load(Relaxed);
            let limit = aging((k >> 48) as NetId);
            seen != STATIC && limit != 0 && now.saturating_sub(seen) >= limit
        })
    }

    /// Forgets everything pointing at `port` (the port is going away).
    pub fn flush_port(&self, port: PortId) -> usize {
        self.remove_where(|_, e| e.port.load(Relaxed) == port)
    }

    /// Forgets a network's learned entries (static ones stay); `all` removes static ones too.
    pub fn flush_net(&self, net: NetId, all: bool) -> usize {
        self.remove_where(|k, e| (k >> 48) as NetId == net && (all || e.seen.load(Relaxed) != STATIC))
    }

    pub fn rows(&self, net: Option<NetId>, now: u32) -> Vec<FdbRow> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            for (k, e) in shard.read().iter() {
                let n = (k >> 48) as NetId;
                if net.is_some_and(|want| want != n) {
                    continue;
                }
                let seen = e.seen.load(Relaxed);
                out.push(FdbRow {
                    net: n,
                    mac: Mac::from_u64(k & 0xffff_ffff_ffff),
                    port: e.port.load(Relaxed),
                    is_static: seen == STATIC,
                    age: if seen == STATIC { 0 } else { now.saturating_sub(seen) },
                });
            }
        }
        out.sort_by_key(|r| (r.net, r.mac));
        out
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held by the tables (for the bytes-per-entry budget).
    pub fn table_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.read().allocation_size()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u64) -> Mac {
        Mac::from_u64(0x0242_0000_0000 | n)
    }

    #[test]
    fn learns_refreshes_and_moves() {
        let f = Fdb::new();
        assert_eq!(f.learn(1, mac(1), 3, 10, 0), Learn::Added);
        assert_eq!(f.learn(1, mac(1), 3, 11, 0), Learn::Known);
        assert_eq!(f.lookup(1, mac(1)), Some(3));
        assert_eq!(f.lookup(2, mac(1)), None, "networks are separate");
        assert_eq!(f.learn(1, mac(1), 4, 12, 0), Learn::Moved);
        assert_eq!(f.lookup(1, mac(1)), Some(4));
        assert_eq!(f.learned_on(3), 0);
        assert_eq!(f.learned_on(4), 1);
    }

    #[test]
    fn ages_out_learned_but_not_static() {
        let f = Fdb::new();
        f.learn(1, mac(1), 1, 100, 0);
        f.add_static(1, mac(2), 2);
        f.learn(2, mac(3), 5, 100, 0);
        assert_eq!(f.age(399, |_| 300), 0);
        // Network 2 never ages; network 1 ages after 300 s.
        assert_eq!(f.age(400, |n| if n == 1 { 300 } else { 0 }), 1);
        assert_eq!(f.lookup(1, mac(1)), None);
        assert_eq!(f.lookup(1, mac(2)), Some(2));
        assert_eq!(f.lookup(2, mac(3)), Some(5));
        assert_eq!(f.learned_on(1), 0);
    }

    #[test]
    fn static_entries_are_not_moved_by_learning_or_by_another_port() {
        let f = Fdb::new();
        assert!(f.add_static(1, mac(9), 1));
        assert!(!f.add_static(1, mac(9), 2), "another port's static entry is refused");
        assert!(f.add_static(1, mac(9), 1), "the owner may re-add it");
        assert_eq!(f.static_owner(1, mac(9)), Some(1));
        assert_eq!(f.static_owner(2, mac(9)), None);
        assert_eq!(f.learn(1, mac(9), 2, 5, 0), Learn::StaticElsewhere);
        assert_eq!(f.lookup(1, mac(9)), Some(1));
        assert_eq!(f.learn(1, mac(9), 1, 5, 0), Learn::Known);
    }

    #[test]
    fn per_port_limit_stops_learning() {
        let f = Fdb::new();
        for i in 0..4 {
            assert_eq!(f.learn(1, mac(i), 7, 0, 4), Learn::Added);
        }
        assert_eq!(f.learn(1, mac(99), 7, 0, 4), Learn::LimitReached);
        assert_eq!(f.lookup(1, mac(99)), None);
        // Known addresses still refresh at the limit.
        assert_eq!(f.learn(1, mac(0), 7, 1, 4), Learn::Known);
        f.flush_port(7);
        assert_eq!(f.learned_on(7), 0);
        assert!(f.is_empty());
    }

    #[test]
    fn rows_filter_and_report_age() {
        let f = Fdb::new();
        f.learn(1, mac(1), 1, 10, 0);
        f.add_static(1, mac(2), 2);
        f.learn(2, mac(3), 3, 10, 0);
        let rows = f.rows(Some(1), 25);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], FdbRow { net: 1, mac: mac(1), port: 1, is_static: false, age: 15 });
        assert!(rows[1].is_static);
        assert_eq!(f.flush_net(1, false), 1);
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn memory_per_entry_within_budget() {
        let f = Fdb::new();
        let n = 100_000u64;
        for i in 0..n {
            f.learn((i % 4) as NetId, mac(i), (i % 64) as PortId, 0, 0);
        }
        let per = f.table_bytes() as f64 / n as f64;
        assert!(per <= 64.0, "{per:.1} bytes per FDB entry");
    }
}
