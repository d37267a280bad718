//! A deterministic simulation of many [`GossipCore`]s on one thread: no sockets, injected time,
//! seeded randomness.
//!
//! Messages move in rounds: what a peer sends during round r is delivered during round r + 1 (a
//! message on a connection that closed in between is lost, as on TCP), optionally dropped with a
//! seeded probability. Every message is serialised and parsed again on the way, and its size
//! (JSON + the 4-byte frame) is charged to the sender. Connections are symmetric and immediate:
//! `connect(a, b)` calls `connected` on both cores in the same round.
//!
//! The tests below run it at small sizes; `benches/benches/gossip_sim.rs` includes this file and
//! runs it at 100 to 1000 peers (`cargo bench -p weft-benches --bench gossip_sim`).
#![allow(dead_code)]

use gossip::core::{GossipCore, GossipMsg, Output, DEFAULT_MAX_MESSAGE_BYTES};
use gossip::sign::HostKey;
use gossip::topology::{ConnEntry, PeerRecord};
use gossip::PeerName;
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Version the simulated peers start at (a Unix time in milliseconds, as the router uses).
pub const START_VERSION: u64 = 1_700_000_000_000;

/// Parameters of a simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of everything random: names, uids, loss, the cores' own generators.
    pub seed: u64,
    /// Simulated time per round (one network hop).
    pub round: Duration,
    /// The cores' anti-entropy interval.
    pub anti_entropy: Duration,
    /// Probability that a message is lost.
    pub loss: f64,
    /// When a peer's topology changes, connect it to every peer it knows and is not connected to
    /// (the router dials discovered peers), in the next round.
    pub auto_connect: bool,
    /// The cores' message size bound; the simulator checks every message against it.
    pub max_message_bytes: usize,
    /// Every peer signs its record with a key of its own and takes the name the key derives
    /// (what routers do from this version on); keys are drawn from the system's random source,
    /// so names, and with them tie-breaks, differ from run to run.
    pub signed: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            round: Duration::from_millis(100),
            anti_entropy: Duration::from_secs(1),
            loss: 0.0,
            auto_connect: false,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            signed: false,
        }
    }
}

/// Messages and bytes sent, in total and by message kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Messages sent.
    pub messages: u64,
    /// Bytes sent, JSON plus the 4-byte frame.
    pub bytes: u64,
    /// (messages, bytes) by [`GossipMsg::kind`].
    pub by_kind: BTreeMap<&'static str, (u64, u64)>,
}

impl Traffic {
    /// What was sent between `earlier` and `self`.
    pub fn since(&self, earlier: &Traffic) -> Traffic {
        let mut by_kind = self.by_kind.clone();
        for (k, (m, b)) in &earlier.by_kind {
            let e = by_kind.entry(k).or_default();
            e.0 -= m;
            e.1 -= b;
        }
        by_kind.retain(|_, (m, _)| *m > 0);
        Traffic {
            messages: self.messages - earlier.messages,
            bytes: self.bytes - earlier.bytes,
            by_kind,
        }
    }

    /// Bytes of the anti-entropy messages (summary, buckets, digest, request).
    pub fn anti_entropy_bytes(&self) -> u64 {
        ["summary", "buckets", "digest", "request"]
            .iter()
            .filter_map(|k| self.by_kind.get(k))
            .map(|(_, b)| b)
            .sum()
    }

    /// Bytes of full-state and delta messages.
    pub fn dissemination_bytes(&self) -> u64 {
        self.bytes - self.anti_entropy_bytes()
    }
}

#[derive(Debug)]
struct Peer {
    name: PeerName,
    core: GossipCore,
}

/// The simulated network.
#[derive(Debug)]
pub struct Sim {
    /// Its parameters.
    pub cfg: SimConfig,
    /// Simulated time.
    pub now: Instant,
    /// Rounds run.
    pub round: u64,
    peers: Vec<Peer>,
    index: HashMap<PeerName, usize>,
    adj: Vec<BTreeSet<usize>>,
    in_flight: Vec<(usize, usize, GossipMsg)>,
    rng: SmallRng,
    /// Bytes each peer sent.
    pub sent_bytes: Vec<u64>,
    /// Everything sent.
    pub traffic: Traffic,
    dial: BTreeSet<(usize, usize)>,
    changed: Vec<bool>,
    /// Each peer's key, when [`SimConfig::signed`].
    keys: Vec<Arc<HostKey>>,
}

impl Sim {
    /// `n` peers, not connected.
    pub fn new(cfg: SimConfig, n: usize) -> Sim {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let mut sim = Sim {
            now: Instant::now(),
            round: 0,
            peers: Vec::with_capacity(n),
            index: HashMap::new(),
            adj: vec![BTreeSet::new(); n],
            in_flight: Vec::new(),
            rng: SmallRng::seed_from_u64(rng.random()),
            sent_bytes: vec![0; n],
            traffic: Traffic::default(),
            dial: BTreeSet::new(),
            changed: vec![false; n],
            keys: Vec::new(),
            cfg,
        };
        for i in 0..n {
            let name = loop {
                let candidate = if sim.cfg.signed {
                    let doc = HostKey::generate_pkcs8().expect("a key");
                    let key = Arc::new(HostKey::from_pkcs8(&doc).expect("a key"));
                    let name = key.derived_name();
                    sim.keys.push(key);
                    name
                } else {
                    PeerName(rng.random())
                };
                if !candidate.is_broadcast() && !sim.index.contains_key(&candidate) {
                    break candidate;
                }
                sim.keys.truncate(i);
            };
            sim.index.insert(name, i);
            let uid = rng.random();
            let core = sim.make_core(i, name, uid, START_VERSION + i as u64);
            sim.peers.push(Peer { name, core });
        }
        sim
    }

    fn make_core(&mut self, i: usize, name: PeerName, uid: u64, version: u64) -> GossipCore {
        let record = PeerRecord::new(name, uid, version, format!("host-{i}"));
        let core = GossipCore::new(record, self.rng.random(), self.cfg.anti_entropy, self.now)
            .with_max_message_bytes(self.cfg.max_message_bytes);
        match self.keys.get(i) {
            Some(k) => core.with_host_key(k.clone()).with_require_signed(true),
            None => core,
        }
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// True when the simulation has no peers.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The name of peer `i`.
    pub fn name(&self, i: usize) -> PeerName {
        self.peers[i].name
    }

    /// The index of the peer named `name`.
    pub fn index_of(&self, name: PeerName) -> usize {
        self.index[&name]
    }

    /// The core of peer `i`.
    pub fn core(&self, i: usize) -> &GossipCore {
        &self.peers[i].core
    }

    /// True when `a` and `b` are connected.
    pub fn linked(&self, a: usize, b: usize) -> bool {
        self.adj[a].contains(&b)
    }

    /// Number of connections.
    pub fn links(&self) -> usize {
        self.adj.iter().map(BTreeSet::len).sum::<usize>() / 2
    }

    /// Peer `i`'s neighbours.
    pub fn neighbours(&self, i: usize) -> Vec<usize> {
        self.adj[i].iter().copied().collect()
    }

    fn entry(&self, i: usize) -> ConnEntry {
        ConnEntry {
            peer: self.peers[i].name,
            addr: SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 6783)),
            usable: true,
        }
    }

    /// Connects `a` and `b` now (both cores are told; their messages leave in this round).
    pub fn connect(&mut self, a: usize, b: usize) {
        if a == b || self.linked(a, b) {
            return;
        }
        self.adj[a].insert(b);
        self.adj[b].insert(a);
        for (x, y) in [(a, b), (b, a)] {
            let (name, entry) = (self.peers[y].name, self.entry(y));
            let out = self.peers[x].core.connected(self.now, name, entry);
            self.handle(x, out);
        }
    }

    /// Closes the connection between `a` and `b`; messages in flight on it are lost.
    pub fn disconnect(&mut self, a: usize, b: usize) {
        if !self.linked(a, b) {
            return;
        }
        self.adj[a].remove(&b);
        self.adj[b].remove(&a);
        self.in_flight
            .retain(|(f, t, _)| !((*f == a && *t == b) || (*f == b && *t == a)));
        for (x, y) in [(a, b), (b, a)] {
            let name = self.peers[y].name;
            let out = self.peers[x].core.disconnected(self.now, name);
            self.handle(x, out);
        }
    }

    /// Restarts peer `k`: its connections close, it comes back with a new uid and `version`, and
    /// it reconnects to the same neighbours.
    pub fn restart(&mut self, k: usize, version: u64) {
        let neighbours = self.neighbours(k);
        for &n in &neighbours {
            self.disconnect(k, n);
        }
        self.in_flight.retain(|(f, t, _)| *f != k && *t != k);
        let name = self.peers[k].name;
        let uid = self.rng.random();
        self.peers[k].core = self.make_core(k, name, uid, version);
        for &n in &neighbours {
            self.connect(k, n);
        }
    }

    /// Each peer after the first connects to `k` distinct random earlier peers (or all of them
    /// while fewer exist): a connected graph of average degree about 2k.
    pub fn connect_sparse(&mut self, k: usize) {
        self.connect_sparse_first(self.len(), k);
    }

    /// [`connect_sparse`](Self::connect_sparse) over the first `count` peers only; the others
    /// stay alone.
    pub fn connect_sparse_first(&mut self, count: usize, k: usize) {
        for i in 1..count {
            let earlier: Vec<usize> = (0..i).collect();
            let picks: Vec<usize> = earlier
                .choose_multiple(&mut self.rng, k.min(i))
                .copied()
                .collect();
            for j in picks {
                self.connect(i, j);
            }
        }
    }

    /// Connects peer i to i + 1; `ring` closes the loop.
    pub fn connect_line(&mut self, ring: bool) {
        for i in 1..self.len() {
            self.connect(i - 1, i);
        }
        if ring && self.len() > 2 {
            self.connect(self.len() - 1, 0);
        }
    }

    fn handle(&mut self, i: usize, out: Vec<Output>) {
        for o in out {
            match o {
                Output::Changed => self.changed[i] = true,
                Output::Send { to, msg } => {
                    let j = self.index[&to];
                    assert!(
                        self.linked(i, j),
                        "peer {i} sent a {} to {j}, which it is not connected to",
                        msg.kind()
                    );
                    let bytes = serde_json::to_vec(&msg).expect("messages serialise");
                    assert!(
                        bytes.len() <= self.cfg.max_message_bytes,
                        "a {} of {} bytes exceeds the limit",
                        msg.kind(),
                        bytes.len()
                    );
                    let size = bytes.len() as u64 + 4;
                    self.sent_bytes[i] += size;
                    self.traffic.messages += 1;
                    self.traffic.bytes += size;
                    let k = self.traffic.by_kind.entry(msg.kind()).or_default();
                    k.0 += 1;
                    k.1 += size;
                    let parsed: GossipMsg =
                        serde_json::from_slice(&bytes).expect("messages parse back");
                    assert_eq!(parsed, msg);
                    self.in_flight.push((i, j, parsed));
                }
            }
        }
    }

    /// One round: pending dials, then the delivery of last round's messages, then every core's
    /// tick.
    pub fn step(&mut self) {
        self.round += 1;
        self.now += self.cfg.round;
        for (a, b) in std::mem::take(&mut self.dial) {
            self.connect(a, b);
        }
        // Each peer gets the round's messages as one batch, in the order they were sent.
        let mut inbox: Vec<Vec<(PeerName, GossipMsg)>> = vec![Vec::new(); self.len()];
        for (from, to, msg) in std::mem::take(&mut self.in_flight) {
            if !self.linked(from, to) {
                continue;
            }
            if self.cfg.loss > 0.0 && self.rng.random_bool(self.cfg.loss) {
                continue;
            }
            inbox[to].push((self.peers[from].name, msg));
        }
        for (to, batch) in inbox.into_iter().enumerate() {
            if !batch.is_empty() {
                let out = self.peers[to].core.on_messages(self.now, batch);
                self.handle(to, out);
            }
        }
        for i in 0..self.len() {
            let out = self.peers[i].core.tick(self.now);
            self.handle(i, out);
        }
        let n = self.len();
        let changed = std::mem::replace(&mut self.changed, vec![false; n]);
        if self.cfg.auto_connect {
            for (i, _) in changed.iter().enumerate().filter(|(_, c)| **c) {
                for r in self.peers[i].core.topology().records() {
                    let j = self.index[&r.name];
                    if j != i && !self.linked(i, j) {
                        self.dial.insert((i.min(j), i.max(j)));
                    }
                }
            }
        }
    }

    /// Connected components of the real connection graph (component id per peer).
    fn components(&self) -> Vec<usize> {
        let mut comp = vec![usize::MAX; self.len()];
        let mut next = 0;
        for s in 0..self.len() {
            if comp[s] != usize::MAX {
                continue;
            }
            comp[s] = next;
            let mut queue = VecDeque::from([s]);
            while let Some(u) = queue.pop_front() {
                for &v in &self.adj[u] {
                    if comp[v] == usize::MAX {
                        comp[v] = next;
                        queue.push_back(v);
                    }
                }
            }
            next += 1;
        }
        comp
    }

    /// True when every peer's view holds exactly the current records of the peers in its
    /// component (compared through the summaries, which the cores maintain incrementally).
    pub fn converged(&self) -> bool {
        let comp = self.components();
        let mut expected: HashMap<usize, (u64, usize)> = HashMap::new();
        for (i, p) in self.peers.iter().enumerate() {
            let e = expected.entry(comp[i]).or_default();
            e.0 = e.0.wrapping_add(p.core.topology().ours().summary_hash());
            e.1 += 1;
        }
        self.peers.iter().enumerate().all(|(i, p)| {
            let (sum, count) = expected[&comp[i]];
            let t = p.core.topology();
            t.summary() == sum && t.len() == count
        })
    }

    /// Runs rounds until [`converged`](Self::converged) and no dial is pending; returns the
    /// number of rounds it took, or `None` after `max` rounds.
    pub fn run_until_converged(&mut self, max: u64) -> Option<u64> {
        let start = self.round;
        loop {
            if self.dial.is_empty() && self.converged() {
                return Some(self.round - start);
            }
            if self.round - start >= max {
                return None;
            }
            self.step();
        }
    }

    /// Runs rounds until converged with nothing but anti-entropy summaries in flight; returns the
    /// rounds taken, or `None` after `max` rounds.
    pub fn settle(&mut self, max: u64) -> Option<u64> {
        let start = self.round;
        loop {
            let quiet = self
                .in_flight
                .iter()
                .all(|(_, _, m)| matches!(m, GossipMsg::Summary { .. }));
            if quiet && self.dial.is_empty() && self.converged() {
                return Some(self.round - start);
            }
            if self.round - start >= max {
                return None;
            }
            self.step();
        }
    }

    /// How many times each peer receives a data-plane broadcast from `src` when every peer
    /// forwards to its children in its own [`gossip::routes::Routes`].
    pub fn broadcast_receipts(&self, src: usize) -> Vec<u32> {
        let mut got = vec![0; self.len()];
        let src_name = self.peers[src].name;
        let mut queue = VecDeque::from([src]);
        while let Some(x) = queue.pop_front() {
            for c in self.peers[x].core.routes().broadcast_children(src_name) {
                let j = self.index[&c];
                assert!(
                    self.linked(x, j),
                    "broadcast child {j} of {x} is not a neighbour"
                );
                got[j] += 1;
                if got[j] == 1 {
                    queue.push_back(j);
                }
            }
        }
        got
    }

    /// Follows next hops from `a` to `b`; returns the peers visited after `a`.
    pub fn unicast_path(&self, a: usize, b: usize) -> Option<Vec<usize>> {
        let dst = self.peers[b].name;
        let mut at = a;
        let mut path = Vec::new();
        while at != b {
            let next = self.peers[at].core.routes().next_hop(dst)?;
            let j = self.index[&next];
            assert!(
                self.linked(at, j),
                "next hop {j} of {at} is not a neighbour"
            );
            path.push(j);
            at = j;
            if path.len() > self.len() {
                panic!("routing loop from {a} to {b}: {path:?}");
            }
        }
        Some(path)
    }

    /// Mean over peers of the JSON bytes of the records they hold.
    pub fn mean_view_bytes(&self) -> usize {
        self.peers
            .iter()
            .map(|p| p.core.topology().approx_bytes())
            .sum::<usize>()
            / self.len().max(1)
    }

    /// Bytes of a full-state transfer of peer `i`'s view: what broadcasting the whole topology
    /// costs per receiver, instead of a delta.
    pub fn full_state_bytes(&self, i: usize) -> u64 {
        let t = self.peers[i].core.topology();
        let records: Vec<PeerRecord> = t.records().cloned().collect();
        let max = self.cfg.max_message_bytes;
        let mut total = 0u64;
        let mut part: Vec<PeerRecord> = Vec::new();
        let size = |part: &Vec<PeerRecord>| {
            serde_json::to_vec(&GossipMsg::Full {
                part: 0,
                parts: 1,
                records: part.clone(),
            })
            .map(|b| b.len() as u64 + 4)
            .unwrap_or(0)
        };
        let mut running = 64usize;
        for r in records {
            let len = serde_json::to_vec(&r).map(|b| b.len()).unwrap_or(0) + 1;
            if running + len > max && !part.is_empty() {
                total += size(&part);
                part.clear();
                running = 64;
            }
            running += len;
            part.push(r);
        }
        if !part.is_empty() {
            total += size(&part);
        }
        total
    }

    /// `k` distinct random peers among the first `count`.
    pub fn random_peers(&mut self, count: usize, k: usize) -> Vec<usize> {
        let all: Vec<usize> = (0..count).collect();
        all.choose_multiple(&mut self.rng, k).copied().collect()
    }

    /// A random existing link whose removal keeps its component connected.
    pub fn removable_link(&mut self) -> Option<(usize, usize)> {
        let mut links: Vec<(usize, usize)> = (0..self.len())
            .flat_map(|a| {
                self.adj[a]
                    .iter()
                    .filter(move |b| **b > a)
                    .map(move |b| (a, *b))
            })
            .collect();
        for _ in 0..links.len() {
            let k = self.rng.random_range(0..links.len());
            let (a, b) = links.swap_remove(k);
            let parts = |sim: &Sim| {
                let c = sim.components();
                c.iter().collect::<BTreeSet<_>>().len()
            };
            let before = parts(self);
            self.adj[a].remove(&b);
            self.adj[b].remove(&a);
            let connected = parts(self) == before;
            self.adj[a].insert(b);
            self.adj[b].insert(a);
            if connected {
                return Some((a, b));
            }
        }
        None
    }

    /// A random peer index.
    pub fn random_peer(&mut self) -> usize {
        self.rng.random_range(0..self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_routes_consistent(sim: &Sim) {
        for src in 0..sim.len() {
            let got = sim.broadcast_receipts(src);
            for (i, n) in got.iter().enumerate() {
                let want = u32::from(i != src);
                assert_eq!(*n, want, "peer {i} got {n} copies of {src}'s broadcast");
            }
        }
    }

    #[test]
    fn chain_of_five_becomes_a_full_mesh() {
        let mut sim = Sim::new(
            SimConfig {
                auto_connect: true,
                ..SimConfig::default()
            },
            5,
        );
        sim.connect_line(false);
        let rounds = sim.run_until_converged(50).expect("converges");
        assert_eq!(sim.links(), 10, "every peer dialled every other one");
        assert!(rounds <= 10, "{rounds} rounds");
        let summary = sim.core(0).topology().summary();
        for i in 0..5 {
            let t = sim.core(i).topology();
            assert_eq!(t.summary(), summary);
            assert_eq!(t.len(), 5);
            for j in 0..5 {
                if i != j {
                    assert_eq!(
                        sim.core(i).routes().next_hop(sim.name(j)),
                        Some(sim.name(j))
                    );
                    assert_eq!(
                        sim.core(i).routes().path(sim.name(j)),
                        Some(vec![sim.name(i), sim.name(j)])
                    );
                }
            }
        }
        assert_routes_consistent(&sim);
    }

    #[test]
    fn sparse_64_converges_in_a_few_rounds() {
        let mut sim = Sim::new(SimConfig::default(), 64);
        sim.connect_sparse(3);
        let rounds = sim.run_until_converged(100).expect("converges");
        assert!(rounds <= 12, "{rounds} rounds");
        assert_routes_consistent(&sim);
        for a in [0, 17, 63] {
            for b in 0..64 {
                let path = sim.unicast_path(a, b).expect("reachable");
                let hops = sim.core(a).routes().hops(sim.name(b)).unwrap();
                assert_eq!(path.len() as u32, hops);
            }
        }
        // Once settled, only anti-entropy summaries flow: about one per peer per second.
        sim.settle(50).expect("settles");
        let before = sim.traffic.clone();
        for _ in 0..50 {
            sim.step();
        }
        let idle = sim.traffic.since(&before);
        assert_eq!(idle.by_kind.keys().collect::<Vec<_>>(), vec![&"summary"]);
        assert!(
            idle.messages <= 64 * 5 * 13 / 10,
            "{} summaries in 5 s",
            idle.messages
        );
    }

    #[test]
    fn signed_records_converge_like_unsigned_ones() {
        let mut sim = Sim::new(
            SimConfig {
                signed: true,
                ..SimConfig::default()
            },
            32,
        );
        sim.connect_sparse(3);
        let rounds = sim.run_until_converged(100).expect("converges");
        assert!(rounds <= 12, "{rounds} rounds");
        assert_routes_consistent(&sim);
        for i in 0..32 {
            let s = sim.core(i).stats();
            assert_eq!(
                (
                    s.rejected_signature,
                    s.rejected_wrong_key,
                    s.rejected_unsigned
                ),
                (0, 0, 0)
            );
            assert!(sim.core(i).topology().records().all(|r| r.sig.is_some()));
        }
        // A restart (new uid, same key and name) is taken as usual.
        sim.restart(5, START_VERSION + 1000);
        sim.run_until_converged(100)
            .expect("converges after a restart");
    }

    #[test]
    fn link_failure_on_a_ring_routes_around() {
        let mut sim = Sim::new(SimConfig::default(), 8);
        sim.connect_line(true);
        sim.run_until_converged(50).expect("converges");
        assert_eq!(sim.unicast_path(0, 1), Some(vec![1]));
        sim.disconnect(0, 1);
        let rounds = sim.run_until_converged(50).expect("converges again");
        assert!(rounds <= 8, "{rounds} rounds");
        assert_eq!(sim.unicast_path(0, 1), Some(vec![7, 6, 5, 4, 3, 2, 1]));
        assert_eq!(
            sim.core(0).routes().next_hop(sim.name(1)),
            Some(sim.name(7))
        );
        assert_eq!(sim.core(0).routes().path(sim.name(1)).unwrap().len(), 8);
        assert_routes_consistent(&sim);
        // A second failure splits the ring: each side forgets the other.
        sim.disconnect(4, 5);
        sim.run_until_converged(50).expect("converges again");
        assert_eq!(sim.core(0).topology().len(), 4, "0, 5, 6, 7");
        assert_eq!(sim.core(1).topology().len(), 4, "1, 2, 3, 4");
        assert_eq!(sim.unicast_path(0, 1), None);
    }

    #[test]
    fn anti_entropy_converges_under_20_percent_loss() {
        let mut sim = Sim::new(
            SimConfig {
                loss: 0.2,
                seed: 7,
                ..SimConfig::default()
            },
            32,
        );
        sim.connect_sparse(2);
        let rounds = sim
            .run_until_converged(600)
            .expect("converges despite loss");
        assert!(rounds > 0);
        assert_routes_consistent(&sim);
        let (a, b) = sim.removable_link().unwrap();
        sim.disconnect(a, b);
        sim.run_until_converged(600)
            .expect("converges after a change");
        assert_routes_consistent(&sim);
    }

    #[test]
    fn restarted_peer_replaces_its_old_record_everywhere() {
        let mut sim = Sim::new(SimConfig::default(), 16);
        sim.connect_sparse(2);
        sim.run_until_converged(100).expect("converges");
        let k = 5;
        let old = sim.core(k).topology().ours().clone();
        // Back with a new uid and a version far below the old one (a clock set back).
        sim.restart(k, 1);
        sim.run_until_converged(200)
            .expect("converges after the restart");
        let new = sim.core(k).topology().ours().clone();
        assert_ne!(new.uid, old.uid);
        assert!(
            new.version > old.version,
            "the stale record made the new run jump above it"
        );
        for i in 0..16 {
            let seen = sim.core(i).topology().get(sim.name(k)).unwrap();
            assert_eq!(seen, &new, "peer {i}");
        }
        assert_routes_consistent(&sim);
    }

    #[test]
    fn one_link_change_costs_about_two_records_per_peer() {
        let mut sim = Sim::new(SimConfig::default(), 64);
        sim.connect_sparse(3);
        sim.settle(100).expect("settles");
        let (a, b) = sim.removable_link().unwrap();
        let before = sim.traffic.clone();
        sim.disconnect(a, b);
        let rounds = sim.settle(50).expect("settles again");
        let spent = sim.traffic.since(&before);
        let record = sim.core(a).topology().approx_bytes() / sim.len();
        let full = sim.full_state_bytes(a);
        // Two records (a's and b's) reach every other peer about once each.
        let per_peer = spent.dissemination_bytes() / 64;
        assert!(
            per_peer < 4 * record as u64 + 64,
            "{per_peer} bytes per peer, records of about {record} bytes"
        );
        assert!(
            spent.dissemination_bytes() * 20 < full * 63,
            "{spent:?} vs {full} per peer"
        );
        assert!(rounds <= 12);
    }

    #[test]
    fn a_reconnection_costs_about_what_the_disconnection_did() {
        let mut sim = Sim::new(SimConfig::default(), 64);
        sim.connect_sparse(3);
        sim.settle(100).expect("settles");
        let (a, b) = sim.removable_link().unwrap();
        let before = sim.traffic.clone();
        sim.disconnect(a, b);
        sim.settle(100).expect("settles");
        let down = sim.traffic.since(&before);
        let before = sim.traffic.clone();
        sim.connect(a, b);
        sim.settle(100).expect("settles again");
        let up = sim.traffic.since(&before);
        // No full state between peers that know each other: the bucket exchange finds nothing
        // to send but the two new records, which spread like any change.
        assert!(!up.by_kind.contains_key("full"), "{up:?}");
        assert!(
            up.dissemination_bytes() < down.dissemination_bytes() * 5 / 4,
            "{up:?} vs {down:?}"
        );
        assert!(up.bytes < down.bytes + sim.full_state_bytes(a) / 4);
        assert_routes_consistent(&sim);
    }

    #[test]
    fn a_partition_heals() {
        // Two rings of 8 that know nothing of each other, then one link between them.
        let mut sim = Sim::new(SimConfig::default(), 16);
        for half in [0, 8] {
            for i in 0..8 {
                sim.connect(half + i, half + (i + 1) % 8);
            }
        }
        sim.settle(50).expect("settles");
        assert_eq!(sim.core(0).topology().len(), 8);
        sim.connect(3, 12);
        let rounds = sim.run_until_converged(50).expect("converges");
        assert!(rounds <= 8, "{rounds} rounds");
        assert_eq!(sim.core(0).topology().len(), 16);
        assert_eq!(sim.unicast_path(0, 12), Some(vec![1, 2, 3, 12]));
        assert_routes_consistent(&sim);
        // And splits again: each side forgets the other.
        sim.disconnect(3, 12);
        sim.run_until_converged(50).expect("converges");
        assert_eq!(sim.core(0).topology().len(), 8);
        assert_eq!(sim.core(15).topology().len(), 8);
    }

    #[test]
    fn simulation_is_deterministic() {
        let run = || {
            let mut sim = Sim::new(
                SimConfig {
                    loss: 0.1,
                    ..SimConfig::default()
                },
                24,
            );
            sim.connect_sparse(2);
            let r = sim.run_until_converged(500);
            (r, sim.traffic.clone(), sim.core(3).topology().summary())
        };
        assert_eq!(run(), run());
    }
}
