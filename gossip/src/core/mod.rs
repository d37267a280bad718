//! The gossip protocol state machine, without I/O.
//!
//! [`GossipCore`] holds our [`Topology`] and decides what to tell whom. The driver feeds it
//! connection events and received [`GossipMsg`]s with the current time, calls
//! [`tick`](GossipCore::tick) periodically, sends the [`Output::Send`]s it returns on the
//! matching control connections and, on [`Output::Changed`], recomputes whatever it derives from
//! the topology (peer table, routes, peers to dial).
//!
//! Dissemination, in short (details and measurements in `docs/gossip.md`):
//!
//! - **Full state only to a newcomer**: [`connected`](GossipCore::connected) to a peer that is
//!   not in our view (a new peer, or one from another partition) queues our whole view to it,
//!   split into [`GossipMsg::Full`] parts of bounded size, breadth-first from us. A peer that is
//!   in our view (a connection re-established) gets our bucket hashes instead, which starts an
//!   anti-entropy exchange costing a fraction of a full state.
//! - **Deltas at once**: a change of our own record goes to every connected peer (the first
//!   change at once, the rest of a burst after [`DEFAULT_OWN_HOLDDOWN`]); a record received
//!   from others that changes our view is passed on to our children in the broadcast tree of
//!   the record's owner (over connections, [`Routes::compute_connections`]), never back to a
//!   peer it came from. In a stable topology every peer receives each change once: O(N)
//!   messages per change instead of a flood over every connection. A batch of received
//!   messages ([`on_messages`](GossipCore::on_messages)) is merged and passed on together.
//! - **Anti-entropy**: every interval (with ±25 % jitter) a [`GossipMsg::Summary`] of the view
//!   (one 64-bit hash and a count) goes to one random connected peer. Only if it differs does
//!   the exchange go on: bucket hashes, then (name, uid, version) digests of the buckets that
//!   differ, then the records each side lacks. This repairs what deltas missed (lost messages,
//!   views that disagreed while a change spread).
//! - **Garbage collection** after every merge and disconnection: records of peers that are not
//!   reachable over connections both ends list are dropped from the view. They wait in a
//!   private limbo for two anti-entropy intervals, in case the record that connects them
//!   arrives later; limbo is never gossiped.
//!
//! The code, by job:
//!
//! - this file: [`GossipCore`], its construction, accessors and [`Stats`];
//! - [`msg`]: the messages ([`GossipMsg`]), what the core asks of the driver ([`Output`]) and
//!   how records are split into messages of bounded size;
//! - [`input`]: what the driver feeds in (connections, messages, timers);
//! - [`forward`]: who gets which record (full states, deltas, our own record's hold-down);
//! - [`anti_entropy`]: the summary, bucket and digest exchange;
//! - [`gc`]: garbage collection and limbo;
//! - [`checks`]: what a received record must pass (well formed, version not absurdly ahead),
//!   and the counting of records about us that we did not write.

mod anti_entropy;
pub mod checks;
mod forward;
mod gc;
mod input;
pub mod msg;
#[cfg(test)]
mod signing_tests;
#[cfg(test)]
mod tests;

pub use msg::{DigestEntry, GossipMsg, Output};

use crate::routes::Routes;
use crate::sign::{HostKey, Verifier};
use crate::topology::{ConnEntry, PeerRecord, Topology};
use crate::PeerName;
use gc::Limbo;
use msg::Overheads;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Default bound on the JSON size of one [`GossipMsg`]: 4 KiB below the control channel's 64 KiB
/// limit ([`crate::proto::MAX_MESSAGE_LEN`]), leaving room for the envelope the driver wraps it
/// in.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 60 * 1024;

/// Default anti-entropy interval.
pub const DEFAULT_ANTI_ENTROPY_INTERVAL: Duration = Duration::from_secs(1);

/// Default minimum time between two sends of our own record: a burst of connection changes (a
/// router starting and dialling its peers) goes out as one delta instead of one per connection.
/// The first change after a quiet period goes out at once.
pub const DEFAULT_OWN_HOLDDOWN: Duration = Duration::from_millis(100);

/// Most records kept in limbo (collected records waiting for the record that connects them).
pub const LIMBO_CAP: usize = 8192;

/// Counters, for status pages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Full-state messages sent (each part counts).
    pub full_sent: u64,
    /// Delta messages sent.
    pub deltas_sent: u64,
    /// Anti-entropy messages sent (summary, buckets, digest, request).
    pub anti_entropy_sent: u64,
    /// Records sent in full-state and delta messages.
    pub records_sent: u64,
    /// Received records that changed our view.
    pub records_merged: u64,
    /// Anti-entropy rounds we started.
    pub anti_entropy_rounds: u64,
    /// Anti-entropy rounds (ours or a peer's) that found a difference.
    pub anti_entropy_mismatches: u64,
    /// Records dropped by garbage collection.
    pub forgotten: u64,
    /// Collected records brought back from limbo because they became reachable.
    pub restored: u64,
    /// Records or digest buckets left out of a message because alone they exceed the message
    /// size limit (a peer with well over a thousand connections).
    pub oversize: u64,
    /// Received records refused as malformed (named 0, a nickname or connection list too
    /// long): see [`checks`].
    #[serde(default)]
    pub rejected_malformed: u64,
    /// Received records refused for a version too far ahead of our clock.
    #[serde(default)]
    pub rejected_version: u64,
    /// Received records about us that we did not write (same run id and a version not below
    /// ours, or another run id with a version at least ours): our record was raised above them.
    #[serde(default)]
    pub foreign_own: u64,
    /// Received records refused because their signature does not verify ([`crate::sign`]).
    #[serde(default)]
    pub rejected_signature: u64,
    /// Received records signed with a key that is not their name's.
    #[serde(default)]
    pub rejected_wrong_key: u64,
    /// Received records without a signature for a name that has a key (or with signatures
    /// required).
    #[serde(default)]
    pub rejected_unsigned: u64,
    /// Unsigned records accepted (from routers that do not sign yet).
    #[serde(default)]
    pub unsigned_accepted: u64,
}

/// The gossip state machine of one peer. See the [module documentation](self).
pub struct GossipCore {
    topology: Topology,
    conns: BTreeMap<PeerName, ConnEntry>,
    rng: SmallRng,
    interval: Duration,
    next_anti_entropy: Instant,
    max_message_bytes: usize,
    /// Routes over connections (gossip trees, reachability), valid for `control_gen`.
    control: Routes,
    control_gen: u64,
    /// Data-plane routes, computed on first use after each change.
    routes: OnceLock<Routes>,
    routes_gen: u64,
    last_change: Option<Instant>,
    stats: Stats,
    overhead: Overheads,
    /// Records collected recently, by name; see [`GossipCore::restore`].
    limbo: BTreeMap<PeerName, Limbo>,
    limbo_ttl: Duration,
    /// Records merged while a full state was arriving, not reachable yet.
    unforwarded: Vec<(PeerName, Vec<PeerName>)>,
    /// Peers whose full state is partly received, with the time of the last part.
    full_in_progress: BTreeMap<PeerName, Instant>,
    holddown: Duration,
    last_own_sent: Option<Instant>,
    own_pending: bool,
    /// (Unix milliseconds, the instant they were read), for [`checks`].
    wall_clock: Option<(u64, Instant)>,
    /// Names and keys, for [`checks`].
    verifier: Verifier,
}

impl std::fmt::Debug for GossipCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipCore")
            .field("ours", &self.topology.our_name())
            .field("peers", &self.topology.len())
            .field("connections", &self.conns.len())
            .field("generation", &self.topology.generation())
            .field("stats", &self.stats)
            .finish()
    }
}

impl GossipCore {
    /// A core for the peer described by `ours` (normally without connections; its version is
    /// the router's start time in Unix milliseconds). `seed` feeds the random choice of
    /// anti-entropy partners and the jitter; `anti_entropy_interval` is the mean time between
    /// anti-entropy rounds (see [`DEFAULT_ANTI_ENTROPY_INTERVAL`]).
    pub fn new(ours: PeerRecord, seed: u64, anti_entropy_interval: Duration, now: Instant) -> Self {
        let conns = ours.conns.iter().map(|c| (c.peer, c.clone())).collect();
        let topology = Topology::new(ours);
        let mut rng = SmallRng::seed_from_u64(seed);
        let first = anti_entropy_interval.mul_f64(rng.random_range(0.0..1.0));
        GossipCore {
            control: Routes::compute_connections(&topology),
            control_gen: topology.generation(),
            routes: OnceLock::new(),
            routes_gen: topology.generation(),
            topology,
            conns,
            rng,
            interval: anti_entropy_interval,
            next_anti_entropy: now + first,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            last_change: None,
            stats: Stats::default(),
            overhead: Overheads::new(),
            limbo: BTreeMap::new(),
            unforwarded: Vec::new(),
            full_in_progress: BTreeMap::new(),
            limbo_ttl: anti_entropy_interval * 2,
            holddown: DEFAULT_OWN_HOLDDOWN,
            last_own_sent: None,
            own_pending: false,
            wall_clock: None,
            verifier: Verifier::new(false),
        }
    }

    /// Signs our record with `key` from now on ([`crate::sign`]).
    pub fn with_host_key(mut self, key: Arc<HostKey>) -> Self {
        self.verifier_bind_ours(&key);
        self.topology.set_signer(key);
        self
    }

    /// Refuses every unsigned record (`--require-signed-records`: every router of the cluster
    /// signs).
    pub fn with_require_signed(mut self, require: bool) -> Self {
        self.verifier.set_require_signed(require);
        self
    }

    /// Whether unsigned records and hellos are refused.
    pub fn requires_signed(&self) -> bool {
        self.verifier.require_signed()
    }

    /// The key bound to `name`, if any.
    pub fn key_of(&self, name: PeerName) -> Option<crate::sign::PublicKey> {
        self.verifier.key_of(name)
    }

    /// A control connection authenticated `name` with `key` (see
    /// [`crate::sign::Verifier::bind_connection`]).
    pub fn bind_connection_key(
        &mut self,
        name: PeerName,
        key: crate::sign::PublicKey,
    ) -> Result<(), crate::sign::Unverified> {
        self.verifier.bind_connection(name, key)
    }

    fn verifier_bind_ours(&mut self, key: &HostKey) {
        self.verifier
            .bind_own(self.topology.our_name(), key.public());
    }

    /// Sets the minimum time between two sends of our own record (default
    /// [`DEFAULT_OWN_HOLDDOWN`]; zero sends every change at once).
    pub fn with_own_holddown(mut self, holddown: Duration) -> Self {
        self.holddown = holddown;
        self
    }

    /// Sets the bound on the JSON size of each message (default
    /// [`DEFAULT_MAX_MESSAGE_BYTES`]). A record bigger than this on its own is never sent.
    pub fn with_max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max;
        self
    }

    /// The bound on the JSON size of each message.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Our view of the mesh.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Data-plane routes for the current topology (over usable connections), computed on first
    /// use after each change and cached.
    pub fn routes(&self) -> &Routes {
        self.routes.get_or_init(|| Routes::compute(&self.topology))
    }

    /// Our live connections, by peer.
    pub fn connections(&self) -> impl Iterator<Item = &ConnEntry> {
        self.conns.values()
    }

    /// When the topology last changed (`None` if never since start).
    pub fn last_change(&self) -> Option<Instant> {
        self.last_change
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn update_our_conns(&mut self) -> Option<PeerRecord> {
        self.topology
            .set_our_conns(self.conns.values().cloned().collect())
    }

    /// Recomputes the control routes if the topology changed since they were computed.
    fn refresh_control(&mut self) {
        if self.control_gen != self.topology.generation() {
            self.control = Routes::compute_connections(&self.topology);
            self.control_gen = self.topology.generation();
        }
    }

    /// Ends a call: reports a change of the topology since generation `before`.
    fn finish(&mut self, now: Instant, before: u64, out: &mut Vec<Output>) {
        let generation = self.topology.generation();
        if generation != before {
            self.last_change = Some(now);
            out.push(Output::Changed);
        }
        if generation != self.routes_gen {
            self.routes = OnceLock::new();
            self.routes_gen = generation;
        }
    }
}
