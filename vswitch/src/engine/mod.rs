//! The sleeve engine: the protocol decisions of the data plane, without its I/O.
//!
//! In the spirit of a sans-I/O protocol core: the router's data plane thread reads datagrams and
//! frames, hands the bytes, the [`Fabric`] and the current time to the engine, and carries out
//! what it answers (send these bytes there, deliver these frames, count this drop). The engine
//! never does I/O, sleeps, spawns, logs or allocates per packet.
//!
//! * [`fabric`]: who the peers are, the next hop to each, the broadcast trees, who sent a
//!   datagram, and where a frame from a local pod goes ([`Fabric::unicast_route`],
//!   [`Fabric::children`]). Generic over the router's peer entry (`P: `[`Peer`]), so the
//!   engine's answers hand back the caller's own entry, counters and session included, with no
//!   second lookup and no parallel table to keep in step.
//! * [`receive`]: what to do with a received datagram. In two steps, because opening an
//!   encrypted datagram needs the caller's session: [`Engine::inspect`] checks the header and
//!   the encryption rules and says whose session opens it, then [`Engine::decide`] takes the
//!   plain datagram and returns an [`Action`]: deliver (after passing a broadcast down its tree),
//!   relay, answer a heartbeat, record a heartbeat answer, or drop with a [`Discard`] reason.
//!   [`Delivery`] then walks the frames to deliver.
//!
//! Heartbeats are written here too ([`Engine::heartbeat`]), with the body format of
//! [`crate::wire::heartbeat`].

pub mod fabric;
pub mod receive;
#[cfg(test)]
mod tests;

pub use fabric::{Children, Fabric, Peer, Route};
pub use receive::{Action, Delivery, Inspected};

use crate::wire::heartbeat::{Caps, HeartbeatRepr, CAPS_BODY_LEN};
use crate::wire::sleeve::{self, SleeveHeader, SleeveKind};
use crate::wire::{PeerName, Result};
use std::time::Instant;

/// What this build can do, as it answers heartbeats: it takes datagrams flagged
/// [`FLAG_CSUM_PARTIAL`](sleeve::FLAG_CSUM_PARTIAL).
pub const OUR_CAPS: Caps = Caps(Caps::CSUM_PARTIAL.0 | Caps::LANES.0);

/// Bytes of the heartbeat datagram [`Engine::heartbeat`] writes (header and body with the
/// capability byte).
pub const HEARTBEAT_LEN: usize = sleeve::HEADER_LEN + CAPS_BODY_LEN;

/// Why the engine drops a datagram or a frame record. Cheap and `Copy`: used per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Discard {
    /// The sleeve header (plain or encrypted) does not parse.
    #[error("malformed datagram")]
    Malformed,
    /// A plain datagram of another sleeve version.
    #[error("unsupported sleeve version")]
    UnsupportedVersion,
    /// From a peer we have no connection with (or, encrypted cluster, from an address and name
    /// we do not know).
    #[error("unknown peer")]
    UnknownPeer,
    /// Encrypted, from a neighbour we have no session with.
    #[error("no session with the sender")]
    NoSession,
    /// In clear, from a neighbour whose traffic must be encrypted.
    #[error("unencrypted")]
    Unencrypted,
    /// To relay, but its hop budget ran out.
    #[error("ttl expired")]
    TtlExpired,
    /// To relay towards a peer we have no route to.
    #[error("no route")]
    NoRoute,
    /// A frame record running past the end of its datagram, or empty.
    #[error("truncated frame record")]
    TruncatedRecord,
    /// A frame larger than this host's pod MTU allows.
    #[error("oversize frame")]
    OversizeFrame,
}

/// The engine's configuration: who we are, whether the cluster is encrypted, and time zero of
/// the heartbeat clock. `Copy`; the data plane makes one when it starts.
#[derive(Debug, Clone, Copy)]
pub struct Engine {
    me: PeerName,
    encrypted: bool,
    epoch: Instant,
}

impl Engine {
    /// An engine for the peer `me`; `encrypted`: the cluster has a secret (datagrams in clear
    /// from unknown senders are refused); heartbeat send times count microseconds from `epoch`.
    pub fn new(me: PeerName, encrypted: bool, epoch: Instant) -> Self {
        Engine {
            me,
            encrypted,
            epoch,
        }
    }

    /// Our peer name.
    pub fn me(&self) -> PeerName {
        self.me
    }

    /// Microseconds from the epoch to `now` (what a heartbeat carries as its send time).
    pub fn clock_us(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// Writes a heartbeat to the neighbour `peer` at the start of `buf`: sequence `seq`, send
    /// time `now`, and a zero capability byte (which asks the answer to carry the peer's).
    /// Returns its length, [`HEARTBEAT_LEN`].
    pub fn heartbeat(
        &self,
        peer: PeerName,
        seq: u64,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<usize> {
        let header = SleeveHeader {
            kind: SleeveKind::Heartbeat,
            ttl: 1,
            src: self.me,
            dst: peer,
        };
        let n = header.emit(buf)?;
        let body = HeartbeatRepr {
            seq,
            sent_us: self.clock_us(now),
            caps: Some(Caps::NONE),
        };
        Ok(n + body.emit(&mut buf[n..])?)
    }

    /// The neighbours our own broadcasts (and floods of unknown unicast) go to.
    pub fn flood<'f, P: Peer>(&self, fabric: &'f Fabric<P>) -> Children<'f, P> {
        fabric.children(self.me)
    }
}
