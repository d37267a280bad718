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

use crate::routes::Routes;
use crate::topology::{bucket_of, json_len, ConnEntry, PeerRecord, Topology, SUMMARY_BUCKETS};
use crate::PeerName;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;
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

/// One line of a [`GossipMsg::Digest`]: which version of a peer's record the sender holds. On the
/// wire it is the array `[name, uid, version]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "(u64, u64, u64)", from = "(u64, u64, u64)")]
pub struct DigestEntry {
    /// The record's owner.
    pub name: PeerName,
    /// Its run id.
    pub uid: u64,
    /// Its version.
    pub version: u64,
}

impl DigestEntry {
    fn of(r: &PeerRecord) -> Self {
        DigestEntry {
            name: r.name,
            uid: r.uid,
            version: r.version,
        }
    }
}

impl From<DigestEntry> for (u64, u64, u64) {
    fn from(e: DigestEntry) -> Self {
        (e.name.0, e.uid, e.version)
    }
}

impl From<(u64, u64, u64)> for DigestEntry {
    fn from((name, uid, version): (u64, u64, u64)) -> Self {
        DigestEntry {
            name: PeerName(name),
            uid,
            version,
        }
    }
}

mod names_as_u64 {
    use crate::PeerName;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(names: &[PeerName], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(names.iter().map(|n| n.0))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PeerName>, D::Error> {
        Vec::<u64>::deserialize(d).map(|v| v.into_iter().map(PeerName).collect())
    }
}

/// A gossip message between two connected peers. JSON, tagged by `"kind"`; every message a
/// [`GossipCore`] emits serialises to at most its `max_message_bytes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GossipMsg {
    /// Part `part` (from 0) of `parts` of the sender's whole view, sent once when a connection is
    /// established. Records come in breadth-first order from the sender, so each prefix is
    /// connected; the receiver defers garbage collection until the last part.
    Full {
        /// Index of this part, from 0.
        part: u32,
        /// Number of parts.
        parts: u32,
        /// The records.
        records: Vec<PeerRecord>,
    },
    /// Records that changed the sender's view (or that the receiver asked for, or lacks).
    Delta {
        /// The records.
        records: Vec<PeerRecord>,
    },
    /// Anti-entropy opener: the sender's [`Topology::summary`] and record count. Ignored when
    /// equal to the receiver's; otherwise answered with [`GossipMsg::Buckets`].
    Summary {
        /// The sender's summary.
        summary: u64,
        /// The sender's number of records.
        count: u32,
    },
    /// The sender's [`Topology::bucket_summaries`], each folded to 32 bits. The receiver
    /// answers with a [`GossipMsg::Digest`] of the buckets that differ. Also the opener of the
    /// exchange when a connection to a peer already in our view is re-established.
    Buckets {
        /// One hash per bucket ([`SUMMARY_BUCKETS`] of them).
        hashes: Vec<u32>,
    },
    /// What the sender holds in some buckets. The receiver sends back, as a
    /// [`GossipMsg::Delta`], the records in those buckets that are newer on its side or missing
    /// from the digest, and asks with a [`GossipMsg::Request`] for those newer on the sender's.
    Digest {
        /// The buckets covered, complete: a record of these buckets absent from `entries` is one
        /// the sender lacks.
        buckets: Vec<u16>,
        /// The sender's records in those buckets.
        entries: Vec<DigestEntry>,
    },
    /// Asks for the current records of these peers, answered with a [`GossipMsg::Delta`].
    Request {
        /// The peers.
        #[serde(with = "names_as_u64")]
        names: Vec<PeerName>,
    },
}

impl GossipMsg {
    /// The message's `"kind"` tag, for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            GossipMsg::Full { .. } => "full",
            GossipMsg::Delta { .. } => "delta",
            GossipMsg::Summary { .. } => "summary",
            GossipMsg::Buckets { .. } => "buckets",
            GossipMsg::Digest { .. } => "digest",
            GossipMsg::Request { .. } => "request",
        }
    }

    /// Bytes of the message as compact JSON (what the driver frames).
    pub fn json_len(&self) -> usize {
        json_len(self)
    }
}

/// What the core asks the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `msg` on the control connection to `to` (always a connected peer).
    Send {
        /// The connected peer.
        to: PeerName,
        /// The message.
        msg: GossipMsg,
    },
    /// The topology changed: recompute routes, update the peer table, dial newly learnt peers.
    /// At most one per call, after the sends.
    Changed,
}

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
}

/// A collected record, kept for a while in case the record that connects it arrives.
#[derive(Debug, Clone)]
struct Limbo {
    record: PeerRecord,
    since: Instant,
    /// Who sent it (not to be sent back when it is restored).
    holders: Vec<PeerName>,
}

/// JSON bytes of each message kind with empty lists (and the largest part numbers).
#[derive(Debug, Clone, Copy)]
struct Overheads {
    full: usize,
    delta: usize,
    digest: usize,
    request: usize,
}

impl Overheads {
    fn new() -> Self {
        Overheads {
            full: json_len(&GossipMsg::Full {
                part: u32::MAX,
                parts: u32::MAX,
                records: vec![],
            }),
            delta: json_len(&GossipMsg::Delta { records: vec![] }),
            digest: json_len(&GossipMsg::Digest {
                buckets: vec![],
                entries: vec![],
            }),
            request: json_len(&GossipMsg::Request { names: vec![] }),
        }
    }
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

/// Splits `items` (each with its JSON size) into groups that fit a message of at most `max`
/// bytes whose empty form takes `overhead` bytes. Each item is counted with one separator, so the
/// estimate is never below the real size. Items too big for a message on their own are left out
/// and counted in `oversize`.
fn chunk<T>(
    items: impl IntoIterator<Item = (T, usize)>,
    overhead: usize,
    max: usize,
    oversize: &mut u64,
) -> Vec<Vec<T>> {
    let mut groups = Vec::new();
    let mut cur = Vec::new();
    let mut size = overhead;
    for (item, len) in items {
        if overhead + len > max {
            *oversize += 1;
            continue;
        }
        if size + len + 1 > max && !cur.is_empty() {
            groups.push(std::mem::take(&mut cur));
            size = overhead;
        }
        size += len + 1;
        cur.push(item);
    }
    if !cur.is_empty() {
        groups.push(cur);
    }
    groups
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
        }
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

    /// A connection to `peer` was established (or re-established, possibly to a restarted
    /// peer): adds `entry` to our record (its `peer` is set to `peer`), tells the other connected
    /// peers, and queues for `peer` our full view if `peer` is not in it, or our bucket hashes
    /// (the start of an anti-entropy exchange) if it is. Must be called before delivering any
    /// message received on that connection.
    pub fn connected(&mut self, now: Instant, peer: PeerName, mut entry: ConnEntry) -> Vec<Output> {
        let mut out = Vec::new();
        if peer == self.topology.our_name() || peer.is_broadcast() {
            return out;
        }
        let before = self.topology.generation();
        let known = self.topology.get(peer).is_some();
        entry.peer = peer;
        self.conns.insert(peer, entry);
        let ours = self.update_our_conns();
        if known {
            // The peer was reachable a moment ago: its view is close to ours, and reconciling
            // costs a fraction of a full state. (If it restarted, its digest shows every bucket
            // differing and it receives everything.)
            self.stats.anti_entropy_rounds += 1;
            let hashes = self.bucket_hashes();
            self.send(&mut out, peer, GossipMsg::Buckets { hashes });
        } else {
            self.send_full(peer, &mut out);
        }
        if ours.is_some() {
            // A full state carries our new record; bucket hashes do not.
            let except = (!known).then_some(peer);
            self.own_changed(now, except, &mut out);
        }
        self.finish(now, before, &mut out);
        out
    }

    /// Our connection to `peer` closed: removes it from our record, tells the other connected
    /// peers and forgets the peers no longer reachable.
    pub fn disconnected(&mut self, now: Instant, peer: PeerName) -> Vec<Output> {
        let mut out = Vec::new();
        if self.conns.remove(&peer).is_none() {
            return out;
        }
        let before = self.topology.generation();
        if self.update_our_conns().is_some() {
            self.own_changed(now, None, &mut out);
        }
        self.full_in_progress.remove(&peer);
        self.collect_garbage(now, &HashMap::new());
        self.finish(now, before, &mut out);
        out
    }

    /// The data path to the connected peer `peer` became usable (it answers UDP heartbeats) or
    /// stopped being usable. No-op for a peer that is not connected.
    pub fn set_usable(&mut self, now: Instant, peer: PeerName, usable: bool) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(entry) = self.conns.get_mut(&peer) else {
            return out;
        };
        if entry.usable == usable {
            return out;
        }
        entry.usable = usable;
        let before = self.topology.generation();
        if self.update_our_conns().is_some() {
            self.own_changed(now, None, &mut out);
        }
        self.finish(now, before, &mut out);
        out
    }

    /// Handles a message received from the connected peer `from`. Prefer
    /// [`on_messages`](Self::on_messages) when several are waiting.
    pub fn on_message(&mut self, now: Instant, from: PeerName, msg: GossipMsg) -> Vec<Output> {
        self.on_messages(now, [(from, msg)])
    }

    /// Handles a batch of received messages, each with the connected peer it came from, in
    /// order. The records of the whole batch are merged together and passed on at once: one
    /// route computation, and per neighbour one message instead of one per received message.
    /// Drivers should hand over everything that is waiting.
    pub fn on_messages(
        &mut self,
        now: Instant,
        msgs: impl IntoIterator<Item = (PeerName, GossipMsg)>,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let before = self.topology.generation();
        let me = self.topology.our_name();
        let mut incoming: Vec<(PeerName, Vec<PeerRecord>)> = Vec::new();
        for (from, msg) in msgs {
            if from == me {
                continue;
            }
            match msg {
                GossipMsg::Full {
                    part,
                    parts,
                    records,
                } => {
                    if part.saturating_add(1) < parts {
                        self.full_in_progress.insert(from, now);
                    } else {
                        self.full_in_progress.remove(&from);
                    }
                    incoming.push((from, records));
                }
                GossipMsg::Delta { records } => incoming.push((from, records)),
                GossipMsg::Summary { summary, count } => {
                    if summary != self.topology.summary() || count as usize != self.topology.len() {
                        self.stats.anti_entropy_mismatches += 1;
                        let hashes = self.bucket_hashes();
                        self.send(&mut out, from, GossipMsg::Buckets { hashes });
                    }
                }
                GossipMsg::Buckets { hashes } => self.on_buckets(from, &hashes, &mut out),
                GossipMsg::Digest { buckets, entries } => {
                    self.on_digest(from, &buckets, &entries, &mut out)
                }
                GossipMsg::Request { names } => {
                    let names: Vec<PeerName> = names
                        .into_iter()
                        .filter(|n| self.topology.get(*n).is_some())
                        .collect();
                    self.send_records(from, &names, false, &mut out);
                }
            }
        }
        if !incoming.is_empty() {
            self.merge_and_forward(now, incoming, &mut out);
        }
        self.finish(now, before, &mut out);
        out
    }

    /// Call periodically (every 100 ms, say). Sends our own record if a change was held back
    /// (see [`with_own_holddown`](Self::with_own_holddown)), expires limbo, and runs
    /// anti-entropy when due: sends our summary to one random connected peer.
    pub fn tick(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let before = self.topology.generation();
        if self.own_pending && self.own_due(now) {
            self.own_changed(now, None, &mut out);
        }
        self.expire_limbo(now);
        // A full state whose last part never came (a broken peer) stops holding back garbage
        // collection after the limbo time.
        let ttl = self.limbo_ttl;
        let waiting = !self.full_in_progress.is_empty();
        self.full_in_progress
            .retain(|_, last| now.saturating_duration_since(*last) < ttl);
        if waiting && self.full_in_progress.is_empty() {
            self.settle(now, Vec::new(), &mut out);
        }
        if now >= self.next_anti_entropy {
            self.next_anti_entropy = now + self.interval.mul_f64(self.rng.random_range(0.75..1.25));
            let pick = self.rng.random_range(0..self.conns.len().max(1));
            if let Some(&peer) = self.conns.keys().nth(pick) {
                self.stats.anti_entropy_rounds += 1;
                let msg = GossipMsg::Summary {
                    summary: self.topology.summary(),
                    count: self.topology.len() as u32,
                };
                self.send(&mut out, peer, msg);
            }
        }
        self.finish(now, before, &mut out);
        out
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

    /// Drops records of peers not reachable over connections (what [`Topology::gc`] does, with
    /// the graph we need for forwarding anyway) and puts them in limbo.
    fn collect_garbage(&mut self, now: Instant, holders: &HashMap<PeerName, Vec<PeerName>>) {
        self.refresh_control();
        let gone: Vec<PeerName> = self
            .topology
            .records()
            .map(|r| r.name)
            .filter(|n| self.control.hops(*n).is_none())
            .collect();
        if gone.is_empty() {
            return;
        }
        let removed = self.topology.remove_all(&gone);
        self.stats.forgotten += removed.len() as u64;
        // Removing unreachable nodes leaves the reachable part of the graph, and so every tree
        // and hop count among reachable peers, unchanged: the routes stay valid.
        self.control_gen = self.topology.generation();
        for record in removed {
            let keep = self
                .limbo
                .get(&record.name)
                .is_some_and(|l| !record.supersedes(&l.record));
            if !keep {
                let holders = holders.get(&record.name).cloned().unwrap_or_default();
                self.limbo.insert(
                    record.name,
                    Limbo {
                        record,
                        since: now,
                        holders,
                    },
                );
            }
        }
        if self.limbo.len() > LIMBO_CAP {
            let mut by_age: Vec<(Instant, PeerName)> =
                self.limbo.iter().map(|(n, l)| (l.since, *n)).collect();
            by_age.sort_unstable();
            let excess = self.limbo.len() - LIMBO_CAP;
            for (_, n) in &by_age[..excess] {
                self.limbo.remove(n);
            }
        }
    }

    fn expire_limbo(&mut self, now: Instant) {
        let ttl = self.limbo_ttl;
        self.limbo
            .retain(|_, l| now.saturating_duration_since(l.since) < ttl);
    }

    /// Brings back collected records that the view now connects.
    ///
    /// A record can arrive before the record that links its owner to us (they travel along
    /// different trees, or in different parts of a full state). It is then unreachable and
    /// collected at once, but kept in limbo for two anti-entropy intervals: when a later merge
    /// makes it reachable, it re-enters the view and is passed on as if it had just arrived.
    /// Limbo is never gossiped, so a dead peer's record cannot circulate through it.
    fn restore(&mut self, now: Instant, forward: &mut Vec<(PeerName, Vec<PeerName>)>) {
        self.expire_limbo(now);
        let topology = &self.topology;
        let wanted = |l: &Limbo| {
            topology
                .get(l.record.name)
                .is_none_or(|cur| l.record.supersedes(cur))
        };
        // Cheap test first: some limbo record has a symmetric link into the view.
        let hopeful = self.limbo.values().any(|l| {
            wanted(l)
                && l.record.conns.iter().any(|c| {
                    topology
                        .get(c.peer)
                        .is_some_and(|r| r.conn(l.record.name).is_some())
                })
        });
        if !hopeful {
            return;
        }
        let candidates: Vec<PeerRecord> = self
            .limbo
            .values()
            .filter(|l| wanted(l))
            .map(|l| l.record.clone())
            .collect();
        let merged = self.topology.merge(candidates);
        self.collect_garbage(now, &HashMap::new());
        for r in merged {
            if self.topology.get(r.name) == Some(&r) {
                if let Some(l) = self.limbo.remove(&r.name) {
                    self.stats.restored += 1;
                    forward.push((r.name, l.holders));
                }
            }
        }
    }

    /// Merges the records of a batch, collects garbage (unless a full state is still arriving)
    /// and passes on what changed our view.
    fn merge_and_forward(
        &mut self,
        now: Instant,
        incoming: Vec<(PeerName, Vec<PeerRecord>)>,
        out: &mut Vec<Output>,
    ) {
        let mut senders: Vec<(PeerName, (u64, u64), PeerName)> = Vec::new();
        let mut all = Vec::new();
        for (from, records) in incoming {
            for r in records {
                senders.push((r.name, (r.version, r.uid), from));
                all.push(r);
            }
        }
        let changed = self.topology.merge(all);
        self.stats.records_merged += changed.len() as u64;
        // Who already holds each new record: the peers that sent it to us.
        let mut holders: HashMap<PeerName, Vec<PeerName>> =
            changed.iter().map(|r| (r.name, Vec::new())).collect();
        let versions: HashMap<PeerName, (u64, u64)> = changed
            .iter()
            .map(|r| (r.name, (r.version, r.uid)))
            .collect();
        for (name, key, from) in senders {
            if versions.get(&name) == Some(&key) {
                if let Some(h) = holders.get_mut(&name) {
                    h.push(from);
                }
            }
        }
        let forward: Vec<(PeerName, Vec<PeerName>)> = changed
            .iter()
            .map(|r| (r.name, holders.remove(&r.name).unwrap_or_default()))
            .collect();
        if !self.full_in_progress.is_empty() {
            // Garbage collection (and so limbo) waits for the rest of the full state; what is not
            // reachable yet is passed on once it is.
            let waiting = self.forward(&forward, out);
            self.unforwarded.extend(waiting);
            return;
        }
        self.settle(now, forward, out);
    }

    /// Collects garbage, then passes on `forward` (records that changed our view, with the
    /// peers that already hold them), the records held back while a full state arrived, and
    /// whatever comes back from limbo.
    fn settle(
        &mut self,
        now: Instant,
        mut forward: Vec<(PeerName, Vec<PeerName>)>,
        out: &mut Vec<Output>,
    ) {
        let holders: HashMap<PeerName, Vec<PeerName>> = forward.iter().cloned().collect();
        self.collect_garbage(now, &holders);
        forward.append(&mut self.unforwarded);
        if forward.is_empty() {
            return;
        }
        self.restore(now, &mut forward);
        self.forward(&forward, out);
    }

    /// Passes on records that changed our view: each to our children in its owner's broadcast
    /// tree, except the peer it came from; our own record (raised over a stale copy) to every
    /// connected peer. Returns the records held but not reachable (not passed on).
    fn forward(
        &mut self,
        records: &[(PeerName, Vec<PeerName>)],
        out: &mut Vec<Output>,
    ) -> Vec<(PeerName, Vec<PeerName>)> {
        let mut unreachable = Vec::new();
        if records.is_empty() {
            return unreachable;
        }
        self.refresh_control();
        let me = self.topology.our_name();
        let mut per_peer: BTreeMap<PeerName, BTreeSet<PeerName>> = BTreeMap::new();
        for (name, holders) in records {
            let name = *name;
            if self.topology.get(name).is_none() {
                continue; // collected: in limbo
            }
            if self.control.hops(name).is_none() {
                unreachable.push((name, holders.clone()));
                continue;
            }
            if name == me {
                for p in self.conns.keys() {
                    per_peer.entry(*p).or_default().insert(me);
                }
                continue;
            }
            for child in self.control.broadcast_children(name) {
                if !holders.contains(&child) && self.conns.contains_key(&child) {
                    per_peer.entry(child).or_default().insert(name);
                }
            }
        }
        for (to, names) in per_peer {
            let names: Vec<PeerName> = names.into_iter().collect();
            self.send_records(to, &names, false, out);
        }
        unreachable
    }

    fn own_due(&self, now: Instant) -> bool {
        self.last_own_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= self.holddown)
    }

    /// Our record changed: send it to every connected peer but `except` (which gets it in a full
    /// state), now or, within the hold-down after the last send, at a later tick.
    fn own_changed(&mut self, now: Instant, except: Option<PeerName>, out: &mut Vec<Output>) {
        if self.own_due(now) {
            self.send_ours(except, out);
            self.last_own_sent = Some(now);
            self.own_pending = false;
        } else {
            self.own_pending = true;
        }
    }

    /// Sends our record to every connected peer but `except`.
    fn send_ours(&mut self, except: Option<PeerName>, out: &mut Vec<Output>) {
        let me = [self.topology.our_name()];
        let peers: Vec<PeerName> = self
            .conns
            .keys()
            .copied()
            .filter(|p| Some(*p) != except)
            .collect();
        for p in peers {
            self.send_records(p, &me, false, out);
        }
    }

    /// Our whole view to `to`, breadth-first from us (unreachable records, if any, last).
    fn send_full(&mut self, to: PeerName, out: &mut Vec<Output>) {
        self.refresh_control();
        let mut order: Vec<(u32, PeerName)> = self
            .topology
            .records()
            .map(|r| (self.control.hops(r.name).unwrap_or(u32::MAX), r.name))
            .collect();
        order.sort_unstable();
        let names: Vec<PeerName> = order.into_iter().map(|(_, n)| n).collect();
        self.send_records(to, &names, true, out);
    }

    /// Sends the current records of `names` to `to`, as full-state parts or deltas, in as few
    /// messages as the size limit allows.
    fn send_records(
        &mut self,
        to: PeerName,
        names: &[PeerName],
        full: bool,
        out: &mut Vec<Output>,
    ) {
        let items = names
            .iter()
            .filter_map(|n| Some((*n, self.topology.record_len(*n)?)));
        let overhead = if full {
            self.overhead.full
        } else {
            self.overhead.delta
        };
        let groups = chunk(
            items,
            overhead,
            self.max_message_bytes,
            &mut self.stats.oversize,
        );
        let parts = groups.len() as u32;
        for (part, group) in groups.into_iter().enumerate() {
            let records: Vec<PeerRecord> = group
                .iter()
                .filter_map(|n| self.topology.get(*n).cloned())
                .collect();
            self.stats.records_sent += records.len() as u64;
            let msg = if full {
                GossipMsg::Full {
                    part: part as u32,
                    parts,
                    records,
                }
            } else {
                GossipMsg::Delta { records }
            };
            self.send(out, to, msg);
        }
    }

    /// Our bucket summaries folded to 32 bits, as [`GossipMsg::Buckets`] carries them.
    fn bucket_hashes(&self) -> Vec<u32> {
        self.topology
            .bucket_summaries()
            .iter()
            .map(|h| (h ^ (h >> 32)) as u32)
            .collect()
    }

    fn on_buckets(&mut self, from: PeerName, hashes: &[u32], out: &mut Vec<Output>) {
        if hashes.len() != SUMMARY_BUCKETS {
            return;
        }
        let ours = self.bucket_hashes();
        let differ: Vec<usize> = (0..SUMMARY_BUCKETS)
            .filter(|&b| ours[b] != hashes[b])
            .collect();
        if differ.is_empty() {
            return;
        }
        let mut by_bucket: BTreeMap<usize, Vec<DigestEntry>> =
            differ.iter().map(|&b| (b, Vec::new())).collect();
        for r in self.topology.records() {
            if let Some(list) = by_bucket.get_mut(&bucket_of(r.name)) {
                list.push(DigestEntry::of(r));
            }
        }
        let items = by_bucket.into_iter().map(|(b, entries)| {
            let len =
                json_len(&(b as u16)) + entries.iter().map(|e| json_len(e) + 1).sum::<usize>();
            ((b as u16, entries), len + 1)
        });
        let groups = chunk(
            items,
            self.overhead.digest,
            self.max_message_bytes,
            &mut self.stats.oversize,
        );
        for group in groups {
            let mut buckets = Vec::with_capacity(group.len());
            let mut entries = Vec::new();
            for (b, list) in group {
                buckets.push(b);
                entries.extend(list);
            }
            self.send(out, from, GossipMsg::Digest { buckets, entries });
        }
    }

    fn on_digest(
        &mut self,
        from: PeerName,
        buckets: &[u16],
        entries: &[DigestEntry],
        out: &mut Vec<Output>,
    ) {
        let covered: BTreeSet<usize> = buckets
            .iter()
            .map(|b| *b as usize)
            .filter(|b| *b < SUMMARY_BUCKETS)
            .collect();
        let theirs: HashMap<PeerName, (u64, u64)> = entries
            .iter()
            .filter(|e| covered.contains(&bucket_of(e.name)))
            .map(|e| (e.name, (e.version, e.uid)))
            .collect();
        self.refresh_control();
        let mut push: Vec<(u32, PeerName)> = self
            .topology
            .records()
            .filter(|r| covered.contains(&bucket_of(r.name)))
            .filter(|r| {
                theirs
                    .get(&r.name)
                    .is_none_or(|&theirs| theirs < (r.version, r.uid))
            })
            .map(|r| (self.control.hops(r.name).unwrap_or(u32::MAX), r.name))
            .collect();
        // Breadth-first from us, like a full state, so that each record arrives after the ones
        // that connect it.
        push.sort_unstable();
        let push: Vec<PeerName> = push.into_iter().map(|(_, n)| n).collect();
        let mut want: Vec<(PeerName, usize)> = theirs
            .iter()
            .filter(|(name, &v)| {
                self.topology
                    .get(**name)
                    .is_none_or(|r| (r.version, r.uid) < v)
            })
            .map(|(name, _)| (*name, json_len(&name.0)))
            .collect();
        want.sort_unstable();
        if push.is_empty() && want.is_empty() {
            return;
        }
        self.stats.anti_entropy_mismatches += 1;
        self.send_records(from, &push, false, out);
        let groups = chunk(
            want,
            self.overhead.request,
            self.max_message_bytes,
            &mut self.stats.oversize,
        );
        for names in groups {
            self.send(out, from, GossipMsg::Request { names });
        }
    }

    fn send(&mut self, out: &mut Vec<Output>, to: PeerName, msg: GossipMsg) {
        if !self.conns.contains_key(&to) {
            return; // a reply to a peer that is gone
        }
        match msg {
            GossipMsg::Full { .. } => self.stats.full_sent += 1,
            GossipMsg::Delta { .. } => self.stats.deltas_sent += 1,
            _ => self.stats.anti_entropy_sent += 1,
        }
        out.push(Output::Send { to, msg });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::tests::{addr, conn, rec};
    use proptest::prelude::*;

    const SEC: Duration = Duration::from_secs(1);

    fn core(name: u64, now: Instant) -> GossipCore {
        GossipCore::new(rec(name, 100, &[]), name, SEC, now)
    }

    fn entry(peer: u64) -> ConnEntry {
        conn(peer, true)
    }

    fn sends(out: &[Output]) -> Vec<(PeerName, &GossipMsg)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send { to, msg } => Some((*to, msg)),
                Output::Changed => None,
            })
            .collect()
    }

    fn records_of(msg: &GossipMsg) -> &[PeerRecord] {
        match msg {
            GossipMsg::Full { records, .. } | GossipMsg::Delta { records } => records,
            _ => &[],
        }
    }

    #[test]
    fn message_json_shapes() {
        let m = GossipMsg::Summary {
            summary: 7,
            count: 3,
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"kind":"summary","summary":7,"count":3}"#
        );
        let m = GossipMsg::Digest {
            buckets: vec![4],
            entries: vec![DigestEntry {
                name: PeerName(9),
                uid: 8,
                version: 7,
            }],
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"kind":"digest","buckets":[4],"entries":[[9,8,7]]}"#
        );
        let m = GossipMsg::Request {
            names: vec![PeerName(1), PeerName(2)],
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"kind":"request","names":[1,2]}"#
        );
        for m in [
            m,
            GossipMsg::Full {
                part: 0,
                parts: 1,
                records: vec![rec(1, 2, &[3])],
            },
            GossipMsg::Buckets {
                hashes: vec![1; 64],
            },
        ] {
            let bytes = serde_json::to_vec(&m).unwrap();
            assert_eq!(bytes.len(), m.json_len());
            assert_eq!(serde_json::from_slice::<GossipMsg>(&bytes).unwrap(), m);
        }
    }

    #[test]
    fn connect_sends_full_state_and_tells_the_others() {
        let now = Instant::now();
        let mut c = core(1, now);
        let out = c.connected(now, PeerName(2), entry(2));
        let s = sends(&out);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, PeerName(2));
        assert!(matches!(
            s[0].1,
            GossipMsg::Full {
                part: 0,
                parts: 1,
                ..
            }
        ));
        assert_eq!(records_of(s[0].1)[0].conns, vec![entry(2)]);
        assert_eq!(out.last(), Some(&Output::Changed));

        let later = now + SEC;
        let out = c.connected(later, PeerName(3), entry(3));
        let s = sends(&out);
        assert_eq!(s.len(), 2, "full state to 3, our new record to 2");
        assert!(s
            .iter()
            .any(|(to, m)| *to == PeerName(2) && matches!(m, GossipMsg::Delta { .. })));
        // Reconnecting a peer in our view: bucket hashes instead of a full state, no change.
        c.on_message(
            later,
            PeerName(3),
            GossipMsg::Delta {
                records: vec![rec(3, 1, &[1])],
            },
        );
        let out = c.connected(later, PeerName(3), entry(3));
        let s = sends(&out);
        assert_eq!(s.len(), 1);
        assert!(matches!(s[0].1, GossipMsg::Buckets { .. }));
        assert!(!out.contains(&Output::Changed));
        // Never to ourselves.
        assert!(c.connected(now, PeerName(1), entry(1)).is_empty());
    }

    #[test]
    fn deltas_follow_the_owners_tree_and_not_back() {
        // We are 2 in the line 1 - 2 - 3 - 4 (plus 5 hanging off 2).
        let now = Instant::now();
        let mut c = core(2, now);
        for p in [1, 3, 5] {
            c.connected(now, PeerName(p), entry(p));
        }
        let out = c.on_message(
            now,
            PeerName(3),
            GossipMsg::Delta {
                records: vec![
                    rec(1, 1, &[2]),
                    rec(3, 1, &[2, 4]),
                    rec(4, 1, &[3]),
                    rec(5, 1, &[2]),
                ],
            },
        );
        assert!(out.contains(&Output::Changed));
        let mut got: BTreeMap<PeerName, Vec<PeerName>> = BTreeMap::new();
        for (to, m) in sends(&out) {
            for r in records_of(m) {
                got.entry(to).or_default().push(r.name);
            }
        }
        // 3's and 4's records go to 1 and 5 (our children in their trees); 1's record goes to 5
        // (not back to 3, who sent it... and 3 is our child in 1's tree, but the sender); 5's to 1.
        assert_eq!(
            got[&PeerName(1)],
            vec![PeerName(3), PeerName(4), PeerName(5)]
        );
        assert_eq!(
            got[&PeerName(5)],
            vec![PeerName(1), PeerName(3), PeerName(4)]
        );
        assert!(!got.contains_key(&PeerName(3)));
        // The same again changes nothing and sends nothing.
        let out = c.on_message(
            now,
            PeerName(1),
            GossipMsg::Delta {
                records: vec![rec(3, 1, &[2, 4])],
            },
        );
        assert!(out.is_empty());
    }

    #[test]
    fn stale_self_goes_back_to_everyone() {
        let now = Instant::now();
        let mut c = core(1, now);
        c.connected(now, PeerName(2), entry(2));
        c.connected(now, PeerName(3), entry(3));
        let mut stale = rec(1, 500, &[7]);
        stale.uid = 42;
        let out = c.on_message(
            now,
            PeerName(2),
            GossipMsg::Delta {
                records: vec![stale],
            },
        );
        let s = sends(&out);
        assert_eq!(s.len(), 2);
        for (_, m) in s {
            let r = &records_of(m)[0];
            assert_eq!((r.name, r.version, r.uid), (PeerName(1), 501, 1000));
        }
    }

    #[test]
    fn disconnect_forgets_what_becomes_unreachable() {
        let now = Instant::now();
        let mut c = core(1, now);
        c.connected(now, PeerName(2), entry(2));
        c.on_message(
            now,
            PeerName(2),
            GossipMsg::Full {
                part: 0,
                parts: 1,
                records: vec![rec(2, 1, &[1, 3]), rec(3, 1, &[2])],
            },
        );
        assert_eq!(c.topology().len(), 3);
        assert_eq!(c.routes().next_hop(PeerName(3)), Some(PeerName(2)));
        let out = c.disconnected(now, PeerName(2));
        assert_eq!(out, vec![Output::Changed], "nobody left to tell");
        assert_eq!(c.topology().len(), 1);
        assert_eq!(c.routes().next_hop(PeerName(3)), None);
        assert_eq!(c.stats().forgotten, 2);
        assert_eq!(c.last_change(), Some(now));
    }

    #[test]
    fn full_state_defers_gc_to_the_last_part() {
        let now = Instant::now();
        let mut c = core(1, now);
        c.connected(now, PeerName(2), entry(2));
        // Part 0 holds 3, whose link to 2 only part 1 confirms.
        let full = |part, records| GossipMsg::Full {
            part,
            parts: 2,
            records,
        };
        c.on_message(now, PeerName(2), full(0, vec![rec(3, 1, &[2])]));
        assert_eq!(c.topology().len(), 2, "kept until the last part");
        c.on_message(now, PeerName(2), full(1, vec![rec(2, 1, &[1, 3])]));
        assert_eq!(c.topology().len(), 3);
    }

    #[test]
    fn usable_changes_reach_routes() {
        let now = Instant::now();
        let mut c = core(1, now);
        c.connected(now, PeerName(2), conn(2, false));
        let mut r2 = rec(2, 1, &[]);
        r2.conns = vec![conn(1, true)];
        c.on_message(now, PeerName(2), GossipMsg::Delta { records: vec![r2] });
        assert_eq!(c.routes().next_hop(PeerName(2)), None);
        let out = c.set_usable(now + SEC, PeerName(2), true);
        assert_eq!(sends(&out).len(), 1);
        assert_eq!(c.routes().next_hop(PeerName(2)), Some(PeerName(2)));
        assert!(c.set_usable(now, PeerName(2), true).is_empty());
        assert!(c.set_usable(now, PeerName(9), true).is_empty());
    }

    /// We are 1, connected to 2 and 4; 3 hangs off 2.
    fn one_with_two_and_four(now: Instant) -> GossipCore {
        let mut c = core(1, now);
        c.connected(now, PeerName(2), entry(2));
        c.connected(now, PeerName(4), entry(4));
        c.on_message(
            now,
            PeerName(4),
            GossipMsg::Delta {
                records: vec![rec(4, 1, &[1])],
            },
        );
        c.on_message(
            now,
            PeerName(2),
            GossipMsg::Delta {
                records: vec![rec(2, 1, &[1])],
            },
        );
        c
    }

    #[test]
    fn a_record_ahead_of_its_link_waits_in_limbo() {
        let now = Instant::now();
        let mut c = one_with_two_and_four(now);
        // 3's record arrives before 2's record that lists 3: unreachable, collected.
        let out = c.on_message(
            now,
            PeerName(2),
            GossipMsg::Delta {
                records: vec![rec(3, 1, &[2])],
            },
        );
        assert!(sends(&out).is_empty());
        assert!(c.topology().get(PeerName(3)).is_none());
        // 2's new record links it: 3 comes back and both go on to 4.
        let out = c.on_message(
            now,
            PeerName(2),
            GossipMsg::Delta {
                records: vec![rec(2, 2, &[1, 3])],
            },
        );
        assert_eq!(c.topology().len(), 4);
        assert_eq!(c.stats().restored, 1);
        let s = sends(&out);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, PeerName(4));
        let names: Vec<PeerName> = records_of(s[0].1).iter().map(|r| r.name).collect();
        assert_eq!(names, vec![PeerName(2), PeerName(3)]);
        // Limbo expires: a record left there too long is gone for good.
        let mut c = one_with_two_and_four(now);
        c.on_message(
            now,
            PeerName(2),
            GossipMsg::Delta {
                records: vec![rec(3, 1, &[2])],
            },
        );
        c.tick(now + 3 * SEC);
        c.on_message(
            now + 3 * SEC,
            PeerName(2),
            GossipMsg::Delta {
                records: vec![rec(2, 2, &[1, 3])],
            },
        );
        assert!(c.topology().get(PeerName(3)).is_none());
    }

    #[test]
    fn a_batch_is_merged_and_passed_on_together() {
        let now = Instant::now();
        let mut c = one_with_two_and_four(now);
        let batch = vec![
            (
                PeerName(2),
                GossipMsg::Delta {
                    records: vec![rec(3, 1, &[2])],
                },
            ),
            (
                PeerName(2),
                GossipMsg::Delta {
                    records: vec![rec(2, 2, &[1, 3])],
                },
            ),
        ];
        let out = c.on_messages(now, batch);
        let s = sends(&out);
        assert_eq!(s.len(), 1, "one message to 4 with both records");
        assert_eq!(records_of(s[0].1).len(), 2);
        assert_eq!(c.stats().restored, 0, "no detour through limbo");
        assert_eq!(out.last(), Some(&Output::Changed));
    }

    #[test]
    fn own_changes_in_a_burst_are_held_down() {
        let t0 = Instant::now();
        let mut c = one_with_two_and_four(t0);
        // The connections above were made at t0: the first change went out, later ones wait.
        let out = c.connected(t0, PeerName(5), entry(5));
        assert_eq!(sends(&out).len(), 1, "only the full state to 5");
        let out = c.tick(t0 + Duration::from_millis(50));
        assert!(sends(&out).is_empty(), "still within the hold-down");
        let out = c.tick(t0 + Duration::from_millis(100));
        let s = sends(&out);
        assert_eq!(s.len(), 3, "our record to 2, 4 and 5");
        for (_, m) in s {
            assert_eq!(records_of(m)[0].conns.len(), 3);
        }
        // After a quiet period a change goes out at once.
        let out = c.disconnected(t0 + SEC, PeerName(5));
        assert_eq!(sends(&out).len(), 2);
    }

    /// Delivers messages between two cores until none are left; returns the messages sent.
    fn exchange(a: &mut GossipCore, b: &mut GossipCore, now: Instant, first: Vec<Output>) -> usize {
        let an = a.topology().our_name();
        let bn = b.topology().our_name();
        let mut queue: Vec<(PeerName, PeerName, GossipMsg)> = first
            .into_iter()
            .filter_map(|o| match o {
                Output::Send { to, msg } => Some((an, to, msg)),
                Output::Changed => None,
            })
            .collect();
        let mut n = 0;
        while !queue.is_empty() {
            let mut next = Vec::new();
            for (from, to, msg) in queue {
                if to != an && to != bn {
                    continue;
                }
                n += 1;
                let core = if to == an { &mut *a } else { &mut *b };
                for o in core.on_message(now, from, msg) {
                    if let Output::Send { to: t, msg } = o {
                        next.push((to, t, msg));
                    }
                }
            }
            queue = next;
        }
        n
    }

    #[test]
    fn anti_entropy_is_one_message_when_in_sync_and_repairs_otherwise() {
        let t0 = Instant::now();
        let mut a = core(1, t0);
        let mut b = core(2, t0);
        let out = a.connected(t0, PeerName(2), entry(2));
        let out_b = b.connected(t0, PeerName(1), entry(1));
        exchange(&mut a, &mut b, t0, out);
        exchange(&mut b, &mut a, t0, out_b);
        assert_eq!(a.topology().summary(), b.topology().summary());
        // In sync: the summary is the only message.
        let out = a.tick(t0 + 2 * SEC);
        assert_eq!(sends(&out).len(), 1);
        assert_eq!(exchange(&mut a, &mut b, t0, out), 1);
        assert!(a.tick(t0 + 2 * SEC).is_empty(), "not due again yet");
        // b learns of 3 (behind it) and 4 (gone: unreachable, dropped); a misses the delta.
        b.connected(t0, PeerName(3), entry(3));
        b.on_message(
            t0,
            PeerName(3),
            GossipMsg::Delta {
                records: vec![rec(3, 1, &[2]), rec(4, 1, &[])],
            },
        );
        assert_eq!(b.topology().len(), 3);
        assert_ne!(a.topology().summary(), b.topology().summary());
        let out = a.tick(t0 + 4 * SEC);
        let n = exchange(&mut a, &mut b, t0, out);
        assert!(n >= 4, "summary, buckets, digest, records: {n}");
        assert_eq!(a.topology().summary(), b.topology().summary());
        assert_eq!(a.topology().len(), 3);
        assert_eq!(a.routes().next_hop(PeerName(3)), Some(PeerName(2)));
    }

    #[test]
    fn anti_entropy_pulls_newer_records() {
        // The line 1 - 2 - 3 - 4; a is 1, b is 2.
        let t0 = Instant::now();
        let mut a = core(1, t0);
        let mut b = core(2, t0);
        a.connected(t0, PeerName(2), entry(2));
        b.connected(t0, PeerName(1), entry(1));
        b.connected(t0, PeerName(3), entry(3));
        // a holds a newer record of 3 than b, b a newer one of 4: both flow.
        let (old3, new3) = (rec(3, 1, &[2, 4]), rec(3, 2, &[2, 4]));
        let (old4, new4) = (rec(4, 1, &[3]), rec(4, 2, &[3]));
        let b_ours = b.topology().ours().clone();
        let a_ours = a.topology().ours().clone();
        a.on_message(
            t0,
            PeerName(2),
            GossipMsg::Delta {
                records: vec![b_ours, new3.clone(), old4],
            },
        );
        b.on_message(
            t0,
            PeerName(3),
            GossipMsg::Delta {
                records: vec![a_ours, old3, new4.clone()],
            },
        );
        assert_eq!(a.topology().len(), 4);
        assert_eq!(b.topology().len(), 4);
        let out = a.tick(t0 + 2 * SEC);
        exchange(&mut a, &mut b, t0, out);
        assert_eq!(a.topology().get(PeerName(4)), Some(&new4));
        assert_eq!(b.topology().get(PeerName(3)), Some(&new3));
        assert_eq!(a.topology().summary(), b.topology().summary());
    }

    /// The line 1 - 2 - ... - n+1, without 1's record.
    fn many_records(n: u64) -> Vec<PeerRecord> {
        (2..n + 2)
            .map(|i| {
                let conns: Vec<u64> = [i - 1, i + 1].into_iter().filter(|p| *p <= n + 1).collect();
                let mut r = rec(i, i * 7, &conns);
                r.nickname = "x".repeat((i % 50) as usize);
                r
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn chunking_respects_the_byte_limit(n in 1u64..300, max in 600usize..20_000) {
            let t0 = Instant::now();
            let mut c = GossipCore::new(rec(1, 1, &[]), 1, SEC, t0).with_max_message_bytes(max);
            c.connected(t0, PeerName(2), ConnEntry { peer: PeerName(2), addr: addr(2), usable: true });
            c.on_message(t0, PeerName(2), GossipMsg::Delta { records: many_records(n) });
            prop_assert_eq!(c.topology().len() as u64, n + 1);
            // A new peer gets the full state.
            let out = c.connected(t0, PeerName(1000), entry(1000));
            let mut seen = BTreeSet::new();
            let mut parts = Vec::new();
            for (_, m) in sends(&out) {
                prop_assert!(serde_json::to_vec(m).unwrap().len() <= max);
                if let GossipMsg::Full { part, parts: total, records } = m {
                    parts.push((*part, *total));
                    for r in records {
                        prop_assert!(seen.insert(r.name));
                    }
                }
            }
            prop_assert_eq!(seen.len() as u64, n + 1);
            let total = parts.len() as u32;
            for (i, (part, t)) in parts.iter().enumerate() {
                prop_assert_eq!((*part, *t), (i as u32, total));
            }
            // Anti-entropy answers respect the limit too.
            let buckets = c.on_message(t0, PeerName(2), GossipMsg::Buckets { hashes: vec![0; SUMMARY_BUCKETS] });
            prop_assert!(!sends(&buckets).is_empty());
            let mut digested = 0;
            for (_, m) in sends(&buckets) {
                prop_assert!(serde_json::to_vec(m).unwrap().len() <= max);
                if let GossipMsg::Digest { entries, .. } = m {
                    digested += entries.len();
                }
            }
            prop_assert_eq!(digested as u64, n + 1);
            let names: Vec<PeerName> = (0..n + 2).map(PeerName).collect();
            let out = c.on_message(t0, PeerName(2), GossipMsg::Request { names });
            let mut answered = 0;
            for (_, m) in sends(&out) {
                prop_assert!(serde_json::to_vec(m).unwrap().len() <= max);
                answered += records_of(m).len();
            }
            prop_assert_eq!(answered as u64, n + 1);
        }
    }

    #[test]
    fn oversize_record_is_left_out() {
        let t0 = Instant::now();
        let mut c = GossipCore::new(rec(1, 1, &[]), 1, SEC, t0).with_max_message_bytes(300);
        for p in 2..20 {
            c.connected(t0, PeerName(p), entry(p));
        }
        let out = c.connected(t0, PeerName(30), entry(30));
        assert!(sends(&out).is_empty());
        assert!(c.stats().oversize > 0);
    }
}
