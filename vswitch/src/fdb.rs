//! The MAC table (forwarding database): where each MAC address was last seen, either on the local
//! bridge (through the TAP port) or behind a peer. Owns learning, moves, ageing and the size cap.
//!
//! # Design
//!
//! All memory is allocated in [`Fdb::new`]; `learn`, `lookup`, `expire` and `forget_peer` never
//! allocate, however many distinct source MACs arrive.
//!
//! - Entries live in a slot array of exactly `capacity` slots, filled in order and then reused.
//!   Removed slots (aged out, peer forgotten) go on a free list and are reused first.
//! - An open-addressing index (linear probing, at most half full, deletion by backward shift, so
//!   no tombstones) maps a MAC to its slot. MACs are hashed with foldhash under a per-table
//!   random seed (`foldhash::quality::RandomState`: a few nanoseconds for a MAC, where SipHash
//!   took about ten) so that a host choosing source MACs cannot aim them at one probe chain.
//! - When the table is full a new MAC takes the slot of a victim chosen by CLOCK (second chance)
//!   over the slot array: entries refreshed since the hand last passed (a host that keeps
//!   sending) get their reference bit cleared and are skipped; the first entry without it, or an
//!   aged-out one, is replaced. The hand looks at most [`CLOCK_SCAN`] slots per insert and then
//!   takes the last one it looked at, so the work per insert is bounded. A flood of one-off
//!   random MACs therefore mostly replaces itself, not the hosts that keep talking.
//!
//! A MAC seen at a different location moves at once (unlike Weave, which kept the old location
//! until the entry expired): a pod that migrates, or a stale entry, is corrected by the next
//! frame it sends.

use crate::wire::{MacAddr, PeerName};
use core::fmt;
use foldhash::quality::RandomState;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

/// Most slots the CLOCK hand examines for one insert into a full table.
pub const CLOCK_SCAN: usize = 8;

/// Largest capacity [`Fdb::new`] accepts; larger values are clamped.
pub const MAX_CAPACITY: usize = 1 << 24;

const EMPTY: u32 = u32::MAX;

/// Where a MAC lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    /// On this host's bridge.
    Local,
    /// Behind this peer.
    Peer(PeerName),
}

/// What [`Fdb::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// A new entry.
    New,
    /// Same location; its age was reset.
    Refreshed,
    /// The MAC moved from the given location.
    Moved(Location),
    /// A new entry that needed another one evicted (the table was at its cap).
    Evicted,
}

/// Counters the table keeps about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FdbStats {
    /// Entries currently held.
    pub entries: usize,
    /// Entries evicted because the table was full.
    pub evictions: u64,
    /// Entries removed because they aged out.
    pub expirations: u64,
    /// Moves between locations.
    pub moves: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    mac: MacAddr,
    loc: Location,
    seen: Instant,
    /// The MAC's hash; its low bits pick the home bucket in the index.
    hash: u32,
    live: bool,
    /// Set when the entry is refreshed or moves; cleared as the CLOCK hand passes.
    referenced: bool,
}

/// A bounded MAC table.
pub struct Fdb {
    /// Exactly `capacity` reserved; grows by `push` up to it and never beyond.
    slots: Vec<Slot>,
    /// Indexes of dead slots; `capacity` reserved.
    free: Vec<u32>,
    /// Open-addressing index: a slot index or `EMPTY`; a power of two, at least twice `capacity`.
    index: Box<[u32]>,
    mask: usize,
    hasher: RandomState,
    capacity: usize,
    max_age: Duration,
    /// Next slot the CLOCK hand examines.
    hand: usize,
    stats: FdbStats,
}

impl fmt::Debug for Fdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fdb")
            .field("capacity", &self.capacity)
            .field("max_age", &self.max_age)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Default for Fdb {
    /// A table with [`Fdb::DEFAULT_CAPACITY`] and [`Fdb::DEFAULT_MAX_AGE`].
    fn default() -> Self {
        Fdb::new(Fdb::DEFAULT_CAPACITY, Fdb::DEFAULT_MAX_AGE)
    }
}

impl Fdb {
    /// Default cap on entries.
    pub const DEFAULT_CAPACITY: usize = 8192;
    /// Default age after which an entry not seen again is dropped.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);

    /// A table holding at most `capacity` entries that forgets entries not seen for `max_age`.
    /// `capacity` is clamped to `1..=`[`MAX_CAPACITY`]. Allocates everything the table will ever
    /// use (about 64 bytes per entry).
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        let buckets = (capacity * 2).next_power_of_two();
        Fdb {
            slots: Vec::with_capacity(capacity),
            free: Vec::with_capacity(capacity),
            index: vec![EMPTY; buckets].into_boxed_slice(),
            mask: buckets - 1,
            hasher: RandomState::default(),
            capacity,
            max_age,
            hand: 0,
            stats: FdbStats::default(),
        }
    }

    /// Records that `mac` was seen at `loc` at `now`. A MAC seen at another location moves at once.
    ///
    /// An entry that had already aged out (but was not yet removed by [`Fdb::expire`]) counts as
    /// an expiration and is replaced: the result is [`Learned::New`].
    pub fn learn(&mut self, now: Instant, mac: MacAddr, loc: Location) -> Learned {
        let hash = self.hash(mac);
        if let Some((_, s)) = self.find(mac, hash) {
            let stale = self.is_stale(&self.slots[s], now);
            let slot = &mut self.slots[s];
            slot.seen = now;
            if stale {
                slot.loc = loc;
                slot.referenced = false;
                self.stats.expirations += 1;
                return Learned::New;
            }
            slot.referenced = true;
            if slot.loc == loc {
                return Learned::Refreshed;
            }
            let from = slot.loc;
            slot.loc = loc;
            self.stats.moves += 1;
            return Learned::Moved(from);
        }
        let fresh = Slot {
            mac,
            loc,
            seen: now,
            hash,
            live: true,
            referenced: false,
        };
        let (s, learned) = if let Some(s) = self.free.pop() {
            (s as usize, Learned::New)
        } else if self.slots.len() < self.capacity {
            self.slots.push(fresh);
            (self.slots.len() - 1, Learned::New)
        } else {
            self.evict(now)
        };
        self.slots[s] = fresh;
        self.stats.entries += 1;
        self.index_insert(s, hash);
        learned
    }

    /// Where `mac` lives, if known and not expired at `now`.
    pub fn lookup(&self, now: Instant, mac: MacAddr) -> Option<Location> {
        let (_, s) = self.find(mac, self.hash(mac))?;
        let slot = &self.slots[s];
        (!self.is_stale(slot, now)).then_some(slot.loc)
    }

    /// Drops every entry not seen within `max_age` before `now`; returns how many. Walks the
    /// whole table: call it periodically, not per frame.
    pub fn expire(&mut self, now: Instant) -> usize {
        let removed = self.remove_where(|fdb, slot| fdb.is_stale(slot, now));
        self.stats.expirations += removed as u64;
        removed
    }

    /// Drops every entry behind `peer` (it left); returns how many.
    pub fn forget_peer(&mut self, peer: PeerName) -> usize {
        self.remove_where(|_, slot| slot.loc == Location::Peer(peer))
    }

    /// Counters.
    pub fn stats(&self) -> FdbStats {
        self.stats
    }

    /// All entries held, aged out or not, with the time each was last seen (for status output);
    /// not for the per-packet path.
    pub fn entries(&self) -> Vec<(MacAddr, Location, Instant)> {
        self.slots
            .iter()
            .filter(|s| s.live)
            .map(|s| (s.mac, s.loc, s.seen))
            .collect()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.stats.entries
    }

    /// True if no entry is held.
    pub fn is_empty(&self) -> bool {
        self.stats.entries == 0
    }

    /// The cap on entries (after clamping).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The age after which an entry is ignored and then dropped.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    fn hash(&self, mac: MacAddr) -> u32 {
        let m = mac.0;
        let h = self.hasher.hash_one(u64::from_le_bytes([
            m[0], m[1], m[2], m[3], m[4], m[5], 0, 0,
        ]));
        // Fold the 64-bit hash; the truncation is intended.
        (h ^ (h >> 32)) as u32
    }

    fn is_stale(&self, slot: &Slot, now: Instant) -> bool {
        now.saturating_duration_since(slot.seen) > self.max_age
    }

    /// The index bucket and slot of `mac`.
    fn find(&self, mac: MacAddr, hash: u32) -> Option<(usize, usize)> {
        let mut i = hash as usize & self.mask;
        loop {
            let s = self.index[i];
            if s == EMPTY {
                return None;
            }
            let slot = &self.slots[s as usize];
            if slot.hash == hash && slot.mac == mac {
                return Some((i, s as usize));
            }
            i = (i + 1) & self.mask;
        }
    }

    fn index_insert(&mut self, slot: usize, hash: u32) {
        let mut i = hash as usize & self.mask;
        while self.index[i] != EMPTY {
            i = (i + 1) & self.mask;
        }
        // `slot` < capacity <= MAX_CAPACITY, so it fits in u32 and is never EMPTY.
        self.index[i] = slot as u32;
    }

    /// Empties index bucket `hole`, shifting later members of its probe run back so every entry
    /// stays reachable from its home bucket.
    fn index_remove(&mut self, mut hole: usize) {
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            let s = self.index[j];
            if s == EMPTY {
                break;
            }
            let home = self.slots[s as usize].hash as usize & self.mask;
            // The entry at j may fill the hole if the hole lies on its probe path [home, j].
            if (j.wrapping_sub(home) & self.mask) >= (j.wrapping_sub(hole) & self.mask) {
                self.index[hole] = s;
                hole = j;
            }
        }
        self.index[hole] = EMPTY;
    }

    /// Picks the slot a new MAC takes in a full table and unlinks its current entry.
    fn evict(&mut self, now: Instant) -> (usize, Learned) {
        let n = self.slots.len();
        let mut victim = self.hand;
        let mut learned = Learned::Evicted;
        for _ in 0..CLOCK_SCAN.min(n) {
            victim = self.hand;
            self.hand = (self.hand + 1) % n;
            let slot = &self.slots[victim];
            if self.is_stale(slot, now) {
                learned = Learned::New;
                break;
            }
            if !slot.referenced {
                break;
            }
            self.slots[victim].referenced = false;
        }
        match learned {
            Learned::New => self.stats.expirations += 1,
            _ => self.stats.evictions += 1,
        }
        self.unlink(victim);
        (victim, learned)
    }

    /// Removes the live entry in `slot` from the index and the count (the slot itself is left for
    /// the caller to reuse or free).
    fn unlink(&mut self, slot: usize) {
        let Slot { mac, hash, .. } = self.slots[slot];
        if let Some((bucket, _)) = self.find(mac, hash) {
            self.index_remove(bucket);
        }
        self.slots[slot].live = false;
        self.stats.entries -= 1;
    }

    fn remove_where(&mut self, pred: impl Fn(&Self, &Slot) -> bool) -> usize {
        let mut removed = 0;
        for s in 0..self.slots.len() {
            let slot = self.slots[s];
            if slot.live && pred(self, &slot) {
                self.unlink(s);
                // `s` < capacity <= MAX_CAPACITY: fits in u32.
                self.free.push(s as u32);
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: PeerName = PeerName(0xa);
    const B: PeerName = PeerName(0xb);

    fn mac(n: u32) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([0x02, 0x00, b[0], b[1], b[2], b[3]])
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A small deterministic generator (xorshift) for random MACs.
    fn random_macs(seed: u64) -> impl Iterator<Item = MacAddr> {
        let mut x = seed;
        core::iter::from_fn(move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            // Clear the I/G bit: sources are unicast.
            Some(MacAddr([b[0] & 0xfe, b[1], b[2], b[3], b[4], b[5]]))
        })
    }

    #[test]
    fn learns_and_refreshes() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(16, secs(300));
        assert!(fdb.is_empty());
        assert_eq!(fdb.lookup(t0, mac(1)), None);
        assert_eq!(fdb.learn(t0, mac(1), Location::Local), Learned::New);
        assert_eq!(fdb.learn(t0, mac(2), Location::Peer(A)), Learned::New);
        assert_eq!(fdb.learn(t0, mac(1), Location::Local), Learned::Refreshed);
        assert_eq!(fdb.lookup(t0, mac(1)), Some(Location::Local));
        assert_eq!(fdb.lookup(t0, mac(2)), Some(Location::Peer(A)));
        assert_eq!(fdb.len(), 2);
        assert_eq!(
            fdb.stats(),
            FdbStats {
                entries: 2,
                evictions: 0,
                expirations: 0,
                moves: 0
            }
        );
    }

    #[test]
    fn moves_at_once_local_to_peer_to_peer_to_local() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(16, secs(300));
        fdb.learn(t0, mac(1), Location::Local);
        assert_eq!(
            fdb.learn(t0, mac(1), Location::Peer(A)),
            Learned::Moved(Location::Local)
        );
        assert_eq!(fdb.lookup(t0, mac(1)), Some(Location::Peer(A)));
        assert_eq!(
            fdb.learn(t0 + secs(1), mac(1), Location::Peer(B)),
            Learned::Moved(Location::Peer(A))
        );
        assert_eq!(fdb.lookup(t0, mac(1)), Some(Location::Peer(B)));
        assert_eq!(
            fdb.learn(t0 + secs(2), mac(1), Location::Local),
            Learned::Moved(Location::Peer(B))
        );
        assert_eq!(fdb.lookup(t0 + secs(2), mac(1)), Some(Location::Local));
        assert_eq!(fdb.stats().moves, 3);
        assert_eq!(fdb.len(), 1);
    }

    #[test]
    fn ages_out_with_injected_time() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(16, secs(300));
        fdb.learn(t0, mac(1), Location::Local);
        fdb.learn(t0 + secs(200), mac(2), Location::Peer(A));
        // Exactly max_age old is still valid; one tick more is not.
        assert_eq!(fdb.lookup(t0 + secs(300), mac(1)), Some(Location::Local));
        assert_eq!(fdb.lookup(t0 + secs(301), mac(1)), None);
        assert_eq!(fdb.lookup(t0 + secs(301), mac(2)), Some(Location::Peer(A)));
        // Refreshing resets the age.
        fdb.learn(t0 + secs(250), mac(2), Location::Peer(A));
        assert_eq!(fdb.expire(t0 + secs(400)), 1);
        assert_eq!(fdb.lookup(t0 + secs(400), mac(2)), Some(Location::Peer(A)));
        assert_eq!(fdb.expire(t0 + secs(551)), 1);
        assert!(fdb.is_empty());
        assert_eq!(fdb.stats().expirations, 2);
        assert!(fdb.entries().is_empty());
    }

    #[test]
    fn relearning_an_aged_entry_is_new() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(16, secs(10));
        fdb.learn(t0, mac(1), Location::Peer(A));
        assert_eq!(
            fdb.learn(t0 + secs(11), mac(1), Location::Local),
            Learned::New
        );
        assert_eq!(fdb.lookup(t0 + secs(11), mac(1)), Some(Location::Local));
        assert_eq!(fdb.stats().moves, 0);
        assert_eq!(fdb.stats().expirations, 1);
        assert_eq!(fdb.len(), 1);
    }

    #[test]
    fn forgets_a_peer() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(16, secs(300));
        fdb.learn(t0, mac(1), Location::Peer(A));
        fdb.learn(t0, mac(2), Location::Peer(B));
        fdb.learn(t0, mac(3), Location::Peer(A));
        fdb.learn(t0, mac(4), Location::Local);
        assert_eq!(fdb.forget_peer(A), 2);
        assert_eq!(fdb.forget_peer(A), 0);
        assert_eq!(fdb.lookup(t0, mac(1)), None);
        assert_eq!(fdb.lookup(t0, mac(3)), None);
        assert_eq!(fdb.lookup(t0, mac(2)), Some(Location::Peer(B)));
        assert_eq!(fdb.lookup(t0, mac(4)), Some(Location::Local));
        let mut entries = fdb.entries();
        entries.sort_by_key(|e| e.0);
        assert_eq!(
            entries,
            vec![
                (mac(2), Location::Peer(B), t0),
                (mac(4), Location::Local, t0)
            ]
        );
        // Freed slots are reused before anything is evicted.
        for n in 10..24 {
            assert_eq!(fdb.learn(t0, mac(n), Location::Local), Learned::New);
        }
        assert_eq!(fdb.len(), 16);
        assert_eq!(fdb.stats().evictions, 0);
    }

    #[test]
    fn evicts_at_capacity() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(4, secs(300));
        for n in 0..4 {
            assert_eq!(fdb.learn(t0, mac(n), Location::Local), Learned::New);
        }
        assert_eq!(fdb.learn(t0, mac(4), Location::Local), Learned::Evicted);
        assert_eq!(fdb.len(), 4);
        assert_eq!(fdb.stats().evictions, 1);
        assert_eq!(fdb.lookup(t0, mac(4)), Some(Location::Local));
        let known = (0..5).filter(|n| fdb.lookup(t0, mac(*n)).is_some()).count();
        assert_eq!(known, 4);
    }

    #[test]
    fn eviction_prefers_aged_out_entries() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(4, secs(10));
        fdb.learn(t0, mac(0), Location::Local);
        for n in 1..4 {
            fdb.learn(t0 + secs(5), mac(n), Location::Local);
            fdb.learn(t0 + secs(5), mac(n), Location::Local); // referenced
        }
        // mac(0) is stale at t0+11 and the hand meets it first.
        assert_eq!(
            fdb.learn(t0 + secs(11), mac(9), Location::Local),
            Learned::New
        );
        assert_eq!(fdb.stats().evictions, 0);
        assert_eq!(fdb.stats().expirations, 1);
        for n in 1..4 {
            assert!(fdb.lookup(t0 + secs(11), mac(n)).is_some());
        }
    }

    #[test]
    fn second_chance_keeps_active_hosts_under_a_flood() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(64, secs(300));
        let active: Vec<MacAddr> = (0..8).map(mac).collect();
        for m in &active {
            fdb.learn(t0, *m, Location::Local);
        }
        for (i, m) in random_macs(7).take(64 * 10).enumerate() {
            fdb.learn(t0, m, Location::Peer(A));
            if i % 16 == 0 {
                // The active hosts keep sending now and then.
                for m in &active {
                    fdb.learn(t0, *m, Location::Local);
                }
            }
        }
        for m in &active {
            assert_eq!(fdb.lookup(t0, *m), Some(Location::Local), "{m} was evicted");
        }
        assert!(fdb.len() <= 64);
    }

    #[test]
    fn random_flood_stays_within_capacity_without_allocating() {
        let t0 = Instant::now();
        let cap = 1000;
        let mut fdb = Fdb::new(cap, secs(300));
        let slots_ptr = fdb.slots.as_ptr();
        let free_ptr = fdb.free.as_ptr();
        let mut new = 0u64;
        let mut evicted = 0u64;
        for m in random_macs(42).take(cap * 10) {
            match fdb.learn(t0, m, Location::Local) {
                Learned::New => new += 1,
                Learned::Evicted => evicted += 1,
                other => panic!("unexpected {other:?}"),
            }
            assert!(fdb.len() <= cap);
        }
        let stats = fdb.stats();
        assert_eq!(stats.entries, cap);
        assert_eq!(new, cap as u64);
        assert_eq!(evicted, 9 * cap as u64);
        assert_eq!(stats.evictions, 9 * cap as u64);
        assert_eq!(fdb.entries().len(), cap);
        // Nothing was reallocated: the same buffers, the same reserved sizes.
        assert_eq!(fdb.slots.as_ptr(), slots_ptr);
        assert_eq!(fdb.free.as_ptr(), free_ptr);
        assert_eq!(fdb.slots.capacity(), cap);
        assert_eq!(fdb.index.len(), 2048);
        // Every held entry is reachable through the index.
        for (m, loc, _) in fdb.entries() {
            assert_eq!(fdb.lookup(t0, m), Some(loc));
        }
    }

    #[test]
    fn index_survives_churn() {
        // Small table, many removals and inserts: backward-shift deletion must keep every entry
        // findable and never leave stale ones.
        let t0 = Instant::now();
        let mut fdb = Fdb::new(8, secs(300));
        let mut x = 1u32;
        for round in 0..2000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let m = mac(x % 24);
            let peer = if round % 3 == 0 { A } else { B };
            fdb.learn(t0, m, Location::Peer(peer));
            if round % 97 == 0 {
                fdb.forget_peer(A);
            }
            let entries = fdb.entries();
            assert_eq!(entries.len(), fdb.len());
            for (m, loc, _) in entries {
                assert_eq!(fdb.lookup(t0, m), Some(loc));
            }
            let occupied = fdb.index.iter().filter(|s| **s != EMPTY).count();
            assert_eq!(occupied, fdb.len());
        }
    }

    #[test]
    fn clamps_capacity() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(0, secs(1));
        assert_eq!(fdb.capacity(), 1);
        fdb.learn(t0, mac(1), Location::Local);
        assert_eq!(fdb.learn(t0, mac(2), Location::Local), Learned::Evicted);
        assert_eq!(fdb.lookup(t0, mac(2)), Some(Location::Local));
        assert_eq!(fdb.lookup(t0, mac(1)), None);
        let d = Fdb::default();
        assert_eq!(d.capacity(), Fdb::DEFAULT_CAPACITY);
        assert_eq!(d.max_age(), Fdb::DEFAULT_MAX_AGE);
        assert!(format!("{d:?}").contains("capacity: 8192"));
    }
}
