//! The forwarding decision. [`Switch`] wraps the [`Fdb`] and decides, for each frame read from the
//! local TAP port or received from a peer, where it goes.
//!
//! TODO(helper): implement; see the API below.

use crate::fdb::{Fdb, FdbStats};
use crate::wire::PeerName;
use std::time::Instant;

/// Why a frame was dropped. Cheap and `Copy`; the router counts drops per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    Truncated,
    /// 802.1D link-local destination (STP, LLDP, ...).
    LinkLocal,
    /// Source MAC is multicast/broadcast (invalid).
    BadSource,
    /// From the TAP port, for a MAC that is itself local: the bridge delivers it, not us.
    LocalDestination,
    /// From a peer, for a MAC known behind another peer (we are not its host).
    NotForUs,
}

impl DropReason {
    /// Every reason, for iterating counters.
    pub const ALL: [DropReason; 5] = [
        DropReason::Truncated,
        DropReason::LinkLocal,
        DropReason::BadSource,
        DropReason::LocalDestination,
        DropReason::NotForUs,
    ];

    /// A stable snake_case name for status output and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::LinkLocal => "link_local",
            DropReason::BadSource => "bad_source",
            DropReason::LocalDestination => "local_destination",
            DropReason::NotForUs => "not_for_us",
        }
    }

    /// Index into a `[_; DropReason::ALL.len()]` counter array.
    pub fn index(&self) -> usize {
        *self as usize
    }
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send to this one peer.
    Unicast(PeerName),
    /// Send to every peer (broadcast, multicast, unknown unicast).
    Flood,
    /// Write to the local TAP port (the bridge takes it from there).
    Deliver,
    /// Drop it.
    Drop(DropReason),
}

/// The switch: MAC learning plus the forwarding decision.
#[derive(Debug)]
pub struct Switch {
    _todo: (),
}

impl Switch {
    /// A switch over the given table.
    pub fn new(fdb: Fdb) -> Self {
        let _ = fdb;
        todo!()
    }

    /// A frame read from the local TAP port: learns its source as local and decides where it goes.
    pub fn from_local(&mut self, now: Instant, frame: &[u8]) -> Decision {
        let _ = (now, frame);
        todo!()
    }

    /// A frame decapsulated from `peer`: learns its source as behind `peer` and decides whether to
    /// deliver it locally.
    pub fn from_peer(&mut self, now: Instant, peer: PeerName, frame: &[u8]) -> Decision {
        let _ = (now, peer, frame);
        todo!()
    }

    /// The table.
    pub fn fdb(&self) -> &Fdb {
        todo!()
    }

    /// The table, mutably (ageing, forgetting peers).
    pub fn fdb_mut(&mut self) -> &mut Fdb {
        todo!()
    }

    /// Table counters.
    pub fn stats(&self) -> FdbStats {
        todo!()
    }
}
