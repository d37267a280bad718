//! The MAC table (forwarding database): where each MAC address was last seen, either on the local
//! bridge (through the TAP port) or behind a peer. Owns learning, moves, ageing and the size cap.
//!
//! TODO(helper): implement; see the API below.

use crate::wire::{MacAddr, PeerName};
use std::time::{Duration, Instant};

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

/// A bounded MAC table.
#[derive(Debug)]
pub struct Fdb {
    _todo: (),
}

impl Fdb {
    /// Default cap on entries.
    pub const DEFAULT_CAPACITY: usize = 8192;
    /// Default age after which an entry not seen again is dropped.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);

    /// A table holding at most `capacity` entries that forgets entries not seen for `max_age`.
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        let _ = (capacity, max_age);
        todo!()
    }

    /// Records that `mac` was seen at `loc` at `now`. A MAC seen at another location moves at once.
    pub fn learn(&mut self, now: Instant, mac: MacAddr, loc: Location) -> Learned {
        let _ = (now, mac, loc);
        todo!()
    }

    /// Where `mac` lives, if known and not expired at `now`.
    pub fn lookup(&self, now: Instant, mac: MacAddr) -> Option<Location> {
        let _ = (now, mac);
        todo!()
    }

    /// Drops every entry not seen within `max_age` before `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let _ = now;
        todo!()
    }

    /// Drops every entry behind `peer` (it left); returns how many.
    pub fn forget_peer(&mut self, peer: PeerName) -> usize {
        let _ = peer;
        todo!()
    }

    /// Counters.
    pub fn stats(&self) -> FdbStats {
        todo!()
    }

    /// All live entries (for status output); not for the per-packet path.
    pub fn entries(&self) -> Vec<(MacAddr, Location, Instant)> {
        todo!()
    }
}
