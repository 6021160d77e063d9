//! Longest-prefix-match tables for IPv4 ([`Lpm4`]) and IPv6 ([`Lpm6`]) routes.
//!
//! # Theory of operation
//!
//! A multibit trie with leaf pushing, in the family of DIR-24-8 (Gupta et al., 1998) but with
//! small strides so that memory follows the routes, not the address space:
//!
//! - the **root** is indexed directly by the first 16 bits of the address (65 536 slots, 256 KB,
//!   allocated on the first insert and zeroed by the allocator, so only the pages that routes
//!   touch become resident);
//! - below it, **chunks** of 16 slots (4 bits, one 64-byte cache line) exist only where a prefix
//!   longer than the level above lives. IPv4 has at most four of them on a path (/20, /24, /28,
//!   /32), IPv6 at most 28.
//!
//! A slot holds 32 bits: [`EMPTY`], a *leaf* (the id of the route that covers the slot's whole
//! range, plus one), or a *child* (the top bit, then a chunk index). Every prefix is written
//! ("painted") into all the slots its range covers at the level where it ends, except those
//! already held by a longer prefix; a chunk created under a leaf starts as 16 copies of it. So a
//! lookup is one load per level and never backtracks: follow children until a leaf, then read
//! the route's value from a dense array.
//!
//! Updates are the control plane's: an exact-match map per prefix length says which prefixes
//! exist. A new prefix paints its range; replacing a prefix's value only rewrites the value
//! array; removing one repaints its range with the longest shorter prefix that covers it (found
//! in the maps) and folds chunks that became 16 equal leaves back into their parent. Lookups
//! never allocate and never panic; updates allocate.

use std::fmt;
use std::hash::Hash;

use foldhash::fast::RandomState;
use hashbrown::HashMap;

/// Bits one chunk resolves.
const STRIDE: u32 = 4;
/// Slots in one chunk.
const FANOUT: usize = 1 << STRIDE;
/// The slot points to a chunk (its index in the low 31 bits).
const CHILD: u32 = 1 << 31;
/// The slot is covered by no route.
const EMPTY: u32 = 0;
/// Routes one table holds at most: a leaf is the route's id plus one, below [`CHILD`].
pub const MAX_ROUTES: usize = (CHILD - 2) as usize;

/// Why a route was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LpmError {
    /// prefix length longer than the address
    #[error("prefix length {len} is longer than the address ({max} bits)")]
    PrefixLength { len: u8, max: u8 },
    /// the table holds as many routes as it can
    #[error("the routing table is full ({MAX_ROUTES} routes)")]
    Full,
}

/// One chunk: 16 slots, aligned so that it is exactly one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Chunk([u32; FANOUT]);

/// An address as the trie reads it: most significant bit first.
pub(crate) trait Key: Copy + Eq + Hash + fmt::Debug {
    const BITS: u32;
    /// Bits resolved by the directly indexed root.
    const ROOT: u32;
    /// The `width` bits of the address starting `at` bits from the top. Callers keep
    /// `at + width <= BITS` and `1 <= width <= 16`; outside that the answer is wrong, not a panic.
    fn bits(self, at: u32, width: u32) -> usize;
    /// The address with every bit after the first `len` cleared (`len <= BITS`).
    fn masked(self, len: u32) -> Self;
}

impl Key for u32 {
    const BITS: u32 = 32;
    const ROOT: u32 = 16;

    #[inline(always)]
    fn bits(self, at: u32, width: u32) -> usize {
        (self.wrapping_shl(at) >> (Self::BITS - width).min(Self::BITS - 1)) as usize
    }

    fn masked(self, len: u32) -> Self {
        self & u32::MAX.checked_shl(Self::BITS - len.min(Self::BITS)).unwrap_or(0)
    }
}

impl Key for u128 {
    const BITS: u32 = 128;
    const ROOT: u32 = 16;

    #[inline(always)]
    fn bits(self, at: u32, width: u32) -> usize {
        (self.wrapping_shl(at) >> (Self::BITS - width).min(Self::BITS - 1)) as usize
    }

    fn masked(self, len: u32) -> Self {
        self & u128::MAX.checked_shl(Self::BITS - len.min(Self::BITS)).unwrap_or(0)
    }
}

/// Which table a slot lives in.
#[derive(Clone, Copy)]
enum Table {
    Root,
    Chunk(u32),
}

/// The slots: the root and the chunk arena. Separate from the routes so that painting can
/// borrow the routes' lengths while it writes slots.
#[derive(Clone, Default)]
struct Slots {
    root: Vec<u32>,
    chunks: Vec<Chunk>,
    free: Vec<u32>,
}

impl Slots {
    fn get(&self, t: Table, i: usize) -> u32 {
        match t {
            Table::Root => self.root[i],
            Table::Chunk(c) => self.chunks[c as usize].0[i],
        }
    }

    fn set(&mut self, t: Table, i: usize, v: u32) {
        match t {
            Table::Root => self.root[i] = v,
            Table::Chunk(c) => self.chunks[c as usize].0[i] = v,
        }
    }

    /// A chunk whose 16 slots start as `fill` (the leaf pushed down from its parent).
    fn alloc(&mut self, fill: u32) -> u32 {
        let chunk = Chunk([fill; FANOUT]);
        match self.free.pop() {
            Some(c) => {
                self.chunks[c as usize] = chunk;
                c
            }
            None => {
                self.chunks.push(chunk);
                // Fewer than 2^31 chunks: that would be 128 GB, far past any table we build.
                (self.chunks.len() - 1) as u32
            }
        }
    }

    /// The leaf every slot of chunk `c` holds, if they all hold the same one.
    fn uniform(&self, c: u32) -> Option<u32> {
        let s = &self.chunks[c as usize].0;
        (s[0] & CHILD == 0 && s.iter().all(|&e| e == s[0])).then_some(s[0])
    }

    /// Writes `new` into every leaf slot of prefix `key/len` for which `pred` holds, creating
    /// chunks on the way down and folding uniform ones on the way back.
    fn paint<K: Key>(&mut self, key: K, len: u32, new: u32, pred: &dyn Fn(u32) -> bool) {
        if self.root.is_empty() {
            // `vec!` of zeros comes from the zeroing allocator: untouched pages stay unmapped.
            self.root = vec![EMPTY; 1 << K::ROOT];
        }
        let mut path = [(Table::Root, 0usize); 32];
        let mut depth = 0;
        let (mut table, mut at, mut width) = (Table::Root, 0, K::ROOT);
        loop {
            let end = at + width;
            if len <= end {
                let first = key.bits(at, width);
                for i in first..first + (1 << (end - len)) {
                    self.paint_slot(table, i, new, pred);
                }
                break;
            }
            let i = key.bits(at, width);
            let e = self.get(table, i);
            let c = if e & CHILD != 0 {
                e & !CHILD
            } else {
                let c = self.alloc(e);
                self.set(table, i, CHILD | c);
                c
            };
            path[depth] = (table, i);
            depth += 1;
            (table, at, width) = (Table::Chunk(c), end, STRIDE);
        }
        for &(parent, i) in path[..depth].iter().rev() {
            let c = self.get(parent, i) & !CHILD;
            let Some(leaf) = self.uniform(c) else { break };
            self.set(parent, i, leaf);
            self.free.push(c);
        }
    }

    fn paint_slot(&mut self, table: Table, i: usize, new: u32, pred: &dyn Fn(u32) -> bool) {
        let e = self.get(table, i);
        if e & CHILD != 0 {
            let c = e & !CHILD;
            for j in 0..FANOUT {
                self.paint_slot(Table::Chunk(c), j, new, pred);
            }
            if let Some(leaf) = self.uniform(c) {
                self.set(table, i, leaf);
                self.free.push(c);
            }
        } else if pred(e) {
            self.set(table, i, new);
        }
    }
}

/// The trie shared by [`Lpm4`] and [`Lpm6`].
#[derive(Clone)]
struct Trie<K: Key, T: Copy> {
    slots: Slots,
    /// One exact-match map per prefix length: the masked address → the route's id.
    prefixes: Vec<HashMap<K, u32, RandomState>>,
    /// The value of route `id`; read by lookups.
    values: Vec<T>,
    /// The prefix length of route `id`; read by updates.
    lens: Vec<u8>,
    free_ids: Vec<u32>,
    len: usize,
}

impl<K: Key, T: Copy> Trie<K, T> {
    fn new() -> Self {
        Self {
            slots: Slots::default(),
            prefixes: (0..=K::BITS).map(|_| HashMap::default()).collect(),
            values: Vec::new(),
            lens: Vec::new(),
            free_ids: Vec::new(),
            len: 0,
        }
    }

    #[inline]
    fn lookup(&self, key: K) -> Option<T> {
        let mut e = *self.slots.root.get(key.bits(0, K::ROOT))?;
        let mut at = K::ROOT;
        while e & CHILD != 0 {
            if at + STRIDE > K::BITS {
                return None; // unreachable by construction; a wrong answer is not an option
            }
            let chunk = self.slots.chunks.get((e & !CHILD) as usize)?;
            e = *chunk.0.get(key.bits(at, STRIDE))?;
            at += STRIDE;
        }
        let id = e.checked_sub(1)?;
        self.values.get(id as usize).copied()
    }

    fn check_len(len: u8) -> Result<u32, LpmError> {
        let l = u32::from(len);
        if l > K::BITS {
            // BITS is 32 or 128: it fits a u8.
            return Err(LpmError::PrefixLength { len, max: K::BITS as u8 });
        }
        Ok(l)
    }

    fn insert(&mut self, addr: K, len: u8, value: T) -> Result<Option<T>, LpmError> {
        let l = Self::check_len(len)?;
        let key = addr.masked(l);
        if let Some(&id) = self.prefixes[len as usize].get(&key) {
            return Ok(Some(std::mem::replace(&mut self.values[id as usize], value)));
        }
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.values[id as usize] = value;
                self.lens[id as usize] = len;
                id
            }
            None if self.values.len() >= MAX_ROUTES => return Err(LpmError::Full),
            None => {
                self.values.push(value);
                self.lens.push(len);
                (self.values.len() - 1) as u32
            }
        };
        self.prefixes[len as usize].insert(key, id);
        self.len += 1;
        let lens = &self.lens;
        // Take every slot that no route covers, or one no longer than this.
        let pred = |e: u32| e == EMPTY || lens[(e - 1) as usize] <= len;
        self.slots.paint(key, l, id + 1, &pred);
        Ok(None)
    }

    fn remove(&mut self, addr: K, len: u8) -> Option<T> {
        let l = Self::check_len(len).ok()?;
        let key = addr.masked(l);
        let id = self.prefixes[len as usize].remove(&key)?;
        let value = self.values[id as usize];
        // The longest shorter prefix covering this one inherits its slots.
        let heir = (0..len).rev().find_map(|pl| self.prefixes[pl as usize].get(&key.masked(u32::from(pl)))).map_or(EMPTY, |&h| h + 1);
        let leaf = id + 1;
        self.slots.paint(key, l, heir, &|e| e == leaf);
        self.free_ids.push(id);
        self.len -= 1;
        if self.len == 0 {
            // Give the memory back: an emptied table is as small as a new one.
            *self = Self::new();
        }
        Some(value)
    }

    fn get(&self, addr: K, len: u8) -> Option<T> {
        let l = Self::check_len(len).ok()?;
        let id = self.prefixes[len as usize].get(&addr.masked(l))?;
        self.values.get(*id as usize).copied()
    }

    fn iter(&self) -> impl Iterator<Item = (K, u8, T)> + '_ {
        self.prefixes.iter().enumerate().flat_map(move |(len, m)| {
            // `len` indexes BITS + 1 maps: at most 128.
            m.iter().filter_map(move |(&k, &id)| Some((k, len as u8, *self.values.get(id as usize)?)))
        })
    }

    fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        let maps: usize = self.prefixes.iter().map(|m| m.capacity() * (size_of::<(K, u32)>() + 1) * 8 / 7).sum();
        self.slots.root.capacity() * 4
            + self.slots.chunks.capacity() * size_of::<Chunk>()
            + self.slots.free.capacity() * 4
            + maps
            + self.values.capacity() * size_of::<T>()
            + self.lens.capacity()
            + self.free_ids.capacity() * 4
    }
}

macro_rules! lpm {
    ($(#[$doc:meta])* $name:ident, $key:ty) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name<T: Copy>(Trie<$key, T>);

        impl<T: Copy> Default for $name<T> {
            fn default() -> Self {
                Self::new()
            }
        }

        impl<T: Copy> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("routes", &self.len())
                    .field("chunks", &self.0.slots.chunks.len())
                    .finish()
            }
        }

        impl<T: Copy> $name<T> {
            /// An empty table; it allocates nothing until the first insert.
            pub fn new() -> Self {
                Self(Trie::new())
            }

            /// Adds the route `addr/len` (host bits are ignored), or replaces its value and
            /// returns the old one.
            pub fn insert(&mut self, addr: $key, len: u8, value: T) -> Result<Option<T>, LpmError> {
                self.0.insert(addr, len, value)
            }

            /// Removes the route `addr/len` (host bits are ignored) and returns its value.
            pub fn remove(&mut self, addr: $key, len: u8) -> Option<T> {
                self.0.remove(addr, len)
            }

            /// The value of the longest prefix that contains `addr`. Never allocates or panics.
            #[inline]
            pub fn lookup(&self, addr: $key) -> Option<T> {
                self.0.lookup(addr)
            }

            /// The value of exactly the route `addr/len`, if there is one.
            pub fn get(&self, addr: $key, len: u8) -> Option<T> {
                self.0.get(addr, len)
            }

            /// Routes in the table.
            pub fn len(&self) -> usize {
                self.0.len
            }

            pub fn is_empty(&self) -> bool {
                self.0.len == 0
            }

            /// Every route as `(address, prefix length, value)`, shortest prefixes first, in no
            /// particular order within a length.
            pub fn iter(&self) -> impl Iterator<Item = ($key, u8, T)> + '_ {
                self.0.iter()
            }

            /// Bytes the table has allocated (an upper bound on what is resident: the root's
            /// untouched pages are not).
            pub fn memory_bytes(&self) -> usize {
                self.0.memory_bytes()
            }
        }
    };
}

lpm!(
    /// IPv4 routes (`u32` addresses, host order as `u32::from(Ipv4Addr)` gives): at most five
    /// loads per lookup, two or three for prefixes up to /24.
    Lpm4,
    u32
);

lpm!(
    /// IPv6 routes (`u128` addresses, as `u128::from(Ipv6Addr)` gives): one load per 4 bits
    /// after the first 16, so a /64 costs 13 loads; correct for any mix, fast enough for the
    /// tables containers use.
    Lpm6,
    u128
);

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: reproducible randomness without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn u128(&mut self) -> u128 {
            (u128::from(self.next()) << 64) | u128::from(self.next())
        }
    }

    /// The obvious answer: every route, checked one by one.
    #[derive(Default)]
    struct Reference<K> {
        routes: std::collections::HashMap<(K, u8), u32>,
    }

    impl<K: Key> Reference<K> {
        fn lookup(&self, a: K) -> Option<u32> {
            self.routes.iter().filter(|((k, l), _)| a.masked(u32::from(*l)) == *k).max_by_key(|((_, l), _)| *l).map(|(_, v)| *v)
        }
    }

    #[test]
    fn basics_v4() {
        let mut t = Lpm4::new();
        assert_eq!(t.lookup(0x0a00_0001), None);
        assert_eq!(t.memory_bytes(), 0, "an empty table allocates nothing");
        assert_eq!(t.insert(0x0a00_0000, 8, 1), Ok(None));
        assert_eq!(t.insert(0x0a14_0000, 16, 2), Ok(None));
        assert_eq!(t.insert(0x0a14_0005, 32, 3), Ok(None));
        assert_eq!(t.insert(0x0a14_0080, 25, 4), Ok(None));
        assert_eq!(t.lookup(0x0a00_0001), Some(1));
        assert_eq!(t.lookup(0x0a14_0001), Some(2));
        assert_eq!(t.lookup(0x0a14_0005), Some(3));
        assert_eq!(t.lookup(0x0a14_0006), Some(2));
        assert_eq!(t.lookup(0x0a14_00ff), Some(4));
        assert_eq!(t.lookup(0x0b00_0000), None);
        assert_eq!(t.insert(0x0a14_00ff, 16, 9), Ok(Some(2)), "host bits are ignored; replaced");
        assert_eq!(t.get(0x0a14_0000, 16), Some(9));
        assert_eq!(t.lookup(0x0a14_0006), Some(9));
        assert_eq!(t.len(), 4);
        assert_eq!(t.insert(0, 33, 0), Err(LpmError::PrefixLength { len: 33, max: 32 }));
        assert_eq!(t.remove(0x0a14_0000, 16), Some(9));
        assert_eq!(t.lookup(0x0a14_0006), Some(1), "the /8 takes over");
        assert_eq!(t.lookup(0x0a14_0005), Some(3));
        assert_eq!(t.remove(0x0a14_0000, 16), None);
        assert_eq!(t.insert(0, 0, 7), Ok(None));
        assert_eq!(t.lookup(0xffff_ffff), Some(7), "default route");
        let mut rows: Vec<_> = t.iter().collect();
        rows.sort();
        assert_eq!(rows, vec![(0, 0, 7), (0x0a00_0000, 8, 1), (0x0a14_0005, 32, 3), (0x0a14_0080, 25, 4)]);
        for (a, l, _) in rows {
            t.remove(a, l);
        }
        assert!(t.is_empty());
        assert_eq!(t.memory_bytes(), 0, "an emptied table gives its memory back");
    }

    #[test]
    fn basics_v6() {
        let mut t = Lpm6::new();
        let a = |s: &str| u128::from(s.parse::<std::net::Ipv6Addr>().unwrap());
        t.insert(a("fd20::"), 64, 1).unwrap();
        t.insert(a("fd20::1"), 128, 2).unwrap();
        t.insert(a("::"), 0, 3).unwrap();
        t.insert(a("fd20::"), 48, 4).unwrap();
        assert_eq!(t.lookup(a("fd20::2")), Some(1));
        assert_eq!(t.lookup(a("fd20::1")), Some(2));
        assert_eq!(t.lookup(a("fd20:0:0:1::1")), Some(4));
        assert_eq!(t.lookup(a("2001:db8::1")), Some(3));
        assert_eq!(t.insert(0, 129, 0), Err(LpmError::PrefixLength { len: 129, max: 128 }));
        assert_eq!(t.remove(a("fd20::"), 64), Some(1));
        assert_eq!(t.lookup(a("fd20::2")), Some(4));
        assert_eq!(t.lookup(a("fd20::1")), Some(2));
    }

    /// Prefix lengths biased to the interesting ones: the ends, the level boundaries, and
    /// anything else.
    fn random_len(rng: &mut Rng, bits: u32) -> u8 {
        let special = [0, 1, 15, 16, 17, 19, 20, 21, 24, 28, 31, 32, bits - 1, bits];
        let l = if rng.below(2) == 0 { special[rng.below(special.len() as u64) as usize] } else { rng.below(u64::from(bits) + 1) as u32 };
        l.min(bits) as u8
    }

    #[test]
    fn random_v4_against_brute_force() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for round in 0..20 {
            let mut t = Lpm4::new();
            let mut r = Reference::<u32>::default();
            // Addresses drawn near each other so that prefixes overlap and nest.
            let base = rng.next() as u32 & 0xff00_0000;
            let addr = |rng: &mut Rng| if rng.below(4) == 0 { rng.next() as u32 } else { base | (rng.next() as u32 & 0x00ff_ffff) };
            let mut live: Vec<(u32, u8)> = Vec::new();
            for step in 0..400 {
                if rng.below(3) == 0 && !live.is_empty() {
                    let (a, l) = live.swap_remove(rng.below(live.len() as u64) as usize);
                    assert_eq!(t.remove(a, l), r.routes.remove(&(a, l)), "round {round} step {step}");
                } else {
                    let (l, v) = (random_len(&mut rng, 32), rng.next() as u32);
                    let a = addr(&mut rng).masked(u32::from(l));
                    let old = r.routes.insert((a, l), v);
                    assert_eq!(t.insert(a, l, v), Ok(old));
                    if old.is_none() {
                        live.push((a, l));
                    }
                }
                for _ in 0..20 {
                    let q = addr(&mut rng);
                    assert_eq!(t.lookup(q), r.lookup(q), "round {round} step {step} {q:#x}");
                }
                // Lookups of the routes' own edges: first and last address of each range.
                for &(a, l) in live.iter().take(8) {
                    let last = a | u32::MAX.checked_shr(u32::from(l)).unwrap_or(0);
                    assert_eq!(t.lookup(a), r.lookup(a));
                    assert_eq!(t.lookup(last), r.lookup(last));
                }
            }
            assert_eq!(t.len(), r.routes.len());
            let mut rows: Vec<_> = t.iter().map(|(a, l, v)| ((a, l), v)).collect();
            let mut want: Vec<_> = r.routes.iter().map(|(k, v)| (*k, *v)).collect();
            rows.sort();
            want.sort();
            assert_eq!(rows, want);
            for (a, l) in live.drain(..) {
                assert!(t.remove(a, l).is_some());
            }
            assert!(t.is_empty());
            assert_eq!(t.memory_bytes(), 0);
        }
    }

    #[test]
    fn random_v6_against_brute_force() {
        let mut rng = Rng(0xfeed_face_cafe_beef);
        for round in 0..10 {
            let mut t = Lpm6::new();
            let mut r = Reference::<u128>::default();
            let base = rng.u128() & (u128::MAX << 80);
            let addr = |rng: &mut Rng| match rng.below(4) {
                0 => rng.u128(),
                1 => base | (rng.u128() >> 120),
                _ => base | (rng.u128() >> 48),
            };
            let mut live: Vec<(u128, u8)> = Vec::new();
            for step in 0..300 {
                if rng.below(3) == 0 && !live.is_empty() {
                    let (a, l) = live.swap_remove(rng.below(live.len() as u64) as usize);
                    assert_eq!(t.remove(a, l), r.routes.remove(&(a, l)), "round {round} step {step}");
                } else {
                    let l = random_len(&mut rng, 128);
                    let l = if rng.below(2) == 0 { l } else { [48, 56, 64, 80, 96, 127, 128][rng.below(7) as usize] };
                    let v = rng.next() as u32;
                    let a = addr(&mut rng).masked(u32::from(l));
                    let old = r.routes.insert((a, l), v);
                    assert_eq!(t.insert(a, l, v), Ok(old));
                    if old.is_none() {
                        live.push((a, l));
                    }
                }
                for _ in 0..20 {
                    let q = addr(&mut rng);
                    assert_eq!(t.lookup(q), r.lookup(q), "round {round} step {step} {q:#x}");
                }
                for &(a, l) in live.iter().take(8) {
                    let last = a | u128::MAX.checked_shr(u32::from(l)).unwrap_or(0);
                    assert_eq!(t.lookup(a), r.lookup(a));
                    assert_eq!(t.lookup(last), r.lookup(last));
                }
            }
            for (a, l) in live.drain(..) {
                assert!(t.remove(a, l).is_some());
            }
            assert!(t.is_empty());
        }
    }

    #[test]
    fn chunks_are_reused_after_removal() {
        let mut t = Lpm4::new();
        for round in 0..3 {
            for i in 0..1000u32 {
                t.insert(0x0a00_0000 | (i << 8) | 7, 32, i).unwrap();
            }
            t.insert(0, 1, 0).unwrap(); // keeps the table from emptying between rounds
            let chunks = t.0.slots.chunks.len();
            for i in 0..1000u32 {
                assert_eq!(t.remove(0x0a00_0000 | (i << 8) | 7, 32), Some(i));
            }
            assert_eq!(t.lookup(0x0a00_0007), Some(0));
            assert_eq!(t.0.slots.free.len(), chunks, "round {round}: every chunk folded back");
        }
    }

    /// Lookup rate at 1M random IPv4 routes, and what building them costs. Run with
    /// `cargo test --release -p vswitch-router -- --ignored --nocapture lpm`.
    #[test]
    #[ignore = "timing: run in release mode"]
    fn lpm_timing_1m_routes() {
        use std::time::Instant;
        #[derive(Clone, Copy)]
        #[allow(dead_code)]
        struct Target {
            net: u32,
            via: Option<std::net::IpAddr>,
        }
        /// Resident memory of this process, from /proc (Linux), in MB.
        fn rss_mb() -> f64 {
            let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let kb =
                s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
            kb.unwrap_or(0.0) / 1e3
        }
        for (name, lens) in [
            ("BGP-like (60% /24, 30% /16-/23, 10% /8-/15)", &[24u8, 24, 24, 24, 24, 24, 16, 18, 20, 22, 23, 8, 12][..]),
            ("uniform /8-/32", &[8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32][..]),
        ] {
            let mut rng = Rng(42);
            let rss0 = rss_mb();
            let mut only = Lpm4::new();
            while only.len() < 1_000_000 {
                let l = lens[rng.below(lens.len() as u64) as usize];
                only.insert(rng.next() as u32, l, 0u32).unwrap();
            }
            eprintln!(
                "lpm4 {name}: 1M routes with u32 values: {:.1} MB allocated, {:.1} MB resident",
                only.memory_bytes() as f64 / 1e6,
                rss_mb() - rss0
            );
            drop(only);
            let t0 = Instant::now();
            let mut t = Lpm4::new();
            let mut small32 = Lpm4::new();
            while t.len() < 1_000_000 {
                let l = lens[rng.below(lens.len() as u64) as usize];
                let n = t.len() as u32;
                t.insert(rng.next() as u32, l, Target { net: n % 8, via: None }).unwrap();
                small32.insert(rng.next() as u32, l, n).unwrap();
            }
            let build = t0.elapsed();
            let queries: Vec<u32> = (0..1 << 22).map(|_| rng.next() as u32).collect();
            let mut hits = 0u64;
            let t1 = Instant::now();
            for _ in 0..4 {
                for &q in &queries {
                    if let Some(v) = t.lookup(q) {
                        hits += u64::from(v.net);
                    }
                }
            }
            let rate = (4 * queries.len()) as f64 / t1.elapsed().as_secs_f64();
            eprintln!(
                "lpm4 {name}: built 1M routes in {build:?}, {:.1} MB, {:.1} M lookups/s (checksum {hits})",
                t.memory_bytes() as f64 / 1e6,
                rate / 1e6
            );
            let t3 = Instant::now();
            let mut h3 = 0u64;
            for &q in &queries {
                h3 += u64::from(small32.lookup(q).unwrap_or(0));
            }
            eprintln!("lpm4 u32 values: {:.1} M lookups/s ({h3})", queries.len() as f64 / t3.elapsed().as_secs_f64() / 1e6);
            let mut small = Lpm4::new();
            let _ = small.insert(0x0a00_0000, 8, 1u32);
            let t2 = Instant::now();
            let mut h = 0u64;
            for &q in &queries {
                h += u64::from(small.lookup(q).unwrap_or(0));
            }
            eprintln!("lpm4 one route: {:.1} M lookups/s ({h})", queries.len() as f64 / t2.elapsed().as_secs_f64() / 1e6);
        }
    }
}
