//! A deterministic simulation of several [`Ipam`] state machines: no sockets, injected time,
//! seeded randomness.
//!
//! Messages move in rounds of 100 ms: what a peer sends in round r is delivered in round r + 1,
//! and lost if the link went down in between (as on TCP). Links are a full mesh between live
//! peers of the same partition group; each peer is told who is reachable (its group) every round.
//! Every message is framed and parsed again on the way (and checked against the frame limit),
//! and every `Persist` writes the state as JSON to the peer's simulated disk, from which a crashed
//! peer restarts. After every round the simulator checks the safety invariant: no block is held
//! by two hosts at once (a host counts as holding what its own record holds, unless the cluster
//! reclaimed it).

use gossip::ipam::{
    reclaimed_set, Block, ClaimState, Ipam, IpamConfig, IpamMsg, IpamOut, IpamRecord, IpamState,
};
use gossip::proto::{self, Message};
use gossip::PeerName;
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const ROUND: Duration = Duration::from_millis(100);
/// Rounds a claim may stay pending before the simulated driver withdraws it (the claim timeout).
const CLAIM_ROUNDS: u64 = 50;

struct Sim {
    now: Instant,
    round: u64,
    cfg: IpamConfig,
    names: Vec<PeerName>,
    peers: Vec<Option<Ipam>>,
    disk: Vec<Option<String>>,
    group: Vec<u32>,
    links: BTreeSet<(usize, usize)>,
    queue: Vec<(usize, usize, IpamMsg)>,
    /// How many blocks each peer wants to hold.
    want: Vec<usize>,
    /// When each peer's current claim started.
    claim_at: Vec<Option<u64>>,
    rng: SmallRng,
    /// Probability that a message is lost (anti-entropy must repair it).
    loss: f64,
}

fn cfg(cidr: &str, block_prefix: u8, init_peers: usize, grace: Duration) -> IpamConfig {
    IpamConfig {
        cidr: cidr.parse().unwrap(),
        block_prefix,
        grace,
        init_peers,
        state_file: None,
    }
}

impl Sim {
    fn new(n: usize, cfg: IpamConfig, seed: u64) -> Sim {
        let mut rng = SmallRng::seed_from_u64(seed);
        let now = Instant::now();
        let names: Vec<PeerName> = (0..n)
            .map(|i| PeerName((rng.random::<u64>() >> 8 << 8) | (i as u64 + 1)))
            .collect();
        let peers = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                Some(
                    Ipam::new(*name, format!("host{i}"), cfg.clone(), None, now)
                        .unwrap()
                        .with_digest_interval(Duration::from_secs(1)),
                )
            })
            .collect();
        let mut sim = Sim {
            now,
            round: 0,
            cfg,
            names,
            peers,
            disk: vec![None; n],
            group: vec![0; n],
            links: BTreeSet::new(),
            queue: Vec::new(),
            want: vec![0; n],
            claim_at: vec![None; n],
            rng,
            loss: 0.0,
        };
        for i in 0..n {
            let out = sim.peers[i].as_mut().unwrap().tick(now);
            sim.handle(i, out);
        }
        sim
    }

    fn ipam(&self, i: usize) -> &Ipam {
        self.peers[i].as_ref().expect("peer is alive")
    }

    fn handle(&mut self, i: usize, out: Vec<IpamOut>) {
        for o in out {
            match o {
                IpamOut::Persist => {
                    let st = self.peers[i].as_ref().unwrap().state();
                    self.disk[i] = Some(serde_json::to_string(&st).unwrap());
                }
                IpamOut::Send { to, msg } => {
                    let j = self
                        .names
                        .iter()
                        .position(|n| *n == to)
                        .expect("known peer");
                    assert!(
                        self.links.contains(&(i.min(j), i.max(j))),
                        "{i} sent to {j} without a link"
                    );
                    // Through the real framing, which also checks the size.
                    let bytes = proto::encode(&Message::Ipam(msg));
                    assert!(bytes.len() - 4 <= proto::MAX_MESSAGE_LEN);
                    let Message::Ipam(msg) = proto::decode_body(&bytes[4..]).unwrap() else {
                        panic!("not an IPAM message")
                    };
                    self.queue.push((i, j, msg));
                }
            }
        }
    }

    fn update_links(&mut self) {
        let n = self.names.len();
        let mut want = BTreeSet::new();
        for a in 0..n {
            for b in a + 1..n {
                if self.peers[a].is_some()
                    && self.peers[b].is_some()
                    && self.group[a] == self.group[b]
                {
                    want.insert((a, b));
                }
            }
        }
        let now = self.now;
        for &(a, b) in self.links.clone().difference(&want) {
            self.links.remove(&(a, b));
            for (x, y) in [(a, b), (b, a)] {
                if let Some(p) = self.peers[x].as_mut() {
                    let out = p.disconnected(now, self.names[y]);
                    self.handle(x, out);
                }
            }
        }
        for &(a, b) in want.clone().difference(&self.links.clone()) {
            self.links.insert((a, b));
            for (x, y) in [(a, b), (b, a)] {
                let out = self.peers[x]
                    .as_mut()
                    .unwrap()
                    .connected(now, self.names[y]);
                self.handle(x, out);
            }
        }
    }

    /// One round: links, deliveries, reachability and timers, the claims the peers want, and
    /// the invariant.
    fn step(&mut self) {
        self.round += 1;
        self.now += ROUND;
        let now = self.now;
        self.update_links();
        let queue = std::mem::take(&mut self.queue);
        for (from, to, msg) in queue {
            if !self.links.contains(&(from.min(to), from.max(to))) {
                continue;
            }
            if self.loss > 0.0 && self.rng.random::<f64>() < self.loss {
                continue;
            }
            let out = self.peers[to]
                .as_mut()
                .unwrap()
                .on_message(now, self.names[from], msg);
            self.handle(to, out);
            self.check();
        }
        let n = self.names.len();
        for i in 0..n {
            if self.peers[i].is_none() {
                continue;
            }
            let reachable: BTreeSet<PeerName> = (0..n)
                .filter(|&j| j != i && self.peers[j].is_some() && self.group[j] == self.group[i])
                .map(|j| self.names[j])
                .collect();
            let p = self.peers[i].as_mut().unwrap();
            let mut out = p.set_reachable(now, reachable);
            out.extend(p.tick(now));
            self.handle(i, out);
            self.drive_claims(i);
        }
        self.check();
    }

    /// What the driver's `ipam_claim` does, one step per round.
    fn drive_claims(&mut self, i: usize) {
        let now = self.now;
        let round = self.round;
        let p = self.peers[i].as_mut().unwrap();
        let pending = p.own().pending();
        if let Some(b) = pending.first().copied() {
            if self.claim_at[i].is_some_and(|t| round - t >= CLAIM_ROUNDS) {
                let out = p.withdraw(now, b);
                self.claim_at[i] = None;
                self.handle(i, out);
            }
            return;
        }
        self.claim_at[i] = None;
        if p.held().len() < self.want[i] {
            if let Ok((_, out)) = p.claim(now) {
                self.claim_at[i] = Some(round);
                self.handle(i, out);
            }
        }
    }

    fn run(&mut self, rounds: u64) {
        for _ in 0..rounds {
            self.step();
        }
    }

    /// Runs until `done` holds, at most `rounds` rounds.
    fn run_until(&mut self, rounds: u64, done: impl Fn(&Sim) -> bool) -> bool {
        for _ in 0..rounds {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    /// Every peer's own record as it stands (a crashed peer: as on its disk).
    fn own_records(&self) -> Vec<IpamRecord> {
        (0..self.names.len())
            .filter_map(|i| match &self.peers[i] {
                Some(p) => Some(p.own().clone()),
                None => self.disk[i].as_ref().and_then(|d| {
                    let st: IpamState = serde_json::from_str(d).unwrap();
                    st.records.into_iter().find(|r| r.name == self.names[i])
                }),
            })
            .collect()
    }

    /// The newest copy of every record anywhere.
    fn newest(&self) -> BTreeMap<PeerName, IpamRecord> {
        let mut all: BTreeMap<PeerName, IpamRecord> = BTreeMap::new();
        let mut add = |r: &IpamRecord| {
            if all.get(&r.name).is_none_or(|o| r.stamp() > o.stamp()) {
                all.insert(r.name, r.clone());
            }
        };
        for p in self.peers.iter().flatten() {
            p.records().values().for_each(&mut add);
        }
        for r in self.own_records() {
            add(&r);
        }
        all
    }

    /// The safety invariant.
    fn check(&self) {
        let gone = reclaimed_set(&self.newest(), self.cfg.init_peers);
        let mut holder: BTreeMap<Block, PeerName> = BTreeMap::new();
        for r in self.own_records() {
            if gone.contains(&r.name) || r.left {
                continue;
            }
            for b in r.held() {
                assert!(self.cfg.is_block(b), "{b} is not a block of the CIDR");
                if let Some(other) = holder.insert(b, r.name) {
                    panic!(
                        "round {}: {b} held by both {other} and {}\n{:#?}",
                        self.round,
                        r.name,
                        self.own_records()
                    );
                }
            }
        }
    }

    fn held(&self, i: usize) -> Vec<Block> {
        self.ipam(i).held()
    }

    fn all_have(&self, k: usize) -> bool {
        (0..self.names.len()).all(|i| self.peers[i].as_ref().is_none_or(|p| p.held().len() >= k))
    }

    fn crash(&mut self, i: usize) {
        self.peers[i] = None;
        self.claim_at[i] = None;
        self.update_links();
    }

    fn restart(&mut self, i: usize) {
        let state: Option<IpamState> = self.disk[i]
            .as_ref()
            .map(|d| serde_json::from_str(d).unwrap());
        let p = Ipam::new(
            self.names[i],
            format!("host{i}"),
            self.cfg.clone(),
            state,
            self.now,
        )
        .unwrap()
        .with_digest_interval(Duration::from_secs(1));
        self.peers[i] = Some(p);
        let out = self.peers[i].as_mut().unwrap().tick(self.now);
        self.handle(i, out);
    }
}

#[test]
fn simultaneous_start_every_peer_gets_a_block_and_no_block_has_two_holders() {
    for (n, v6) in [(3usize, false), (5, false), (3, true), (5, true)] {
        for seed in 0..20 {
            // Few blocks, so that simultaneous claims collide often: 4 for 3 hosts, 8 for 5.
            let extra = if n == 3 { 2 } else { 3 };
            let (cidr, block) = if v6 {
                (format!("fd10:32::/{}", 64 - extra), 64)
            } else {
                (format!("10.32.0.0/{}", 24 - extra), 24)
            };
            let mut sim = Sim::new(n, cfg(&cidr, block, n, Duration::from_secs(3600)), seed);
            sim.want = vec![1; n];
            assert!(
                sim.run_until(600, |s| s.all_have(1)),
                "n={n} seed={seed}: {:?}",
                (0..n).map(|i| s_held(&sim, i)).collect::<Vec<_>>()
            );
            // Then each wants a second one (some blocks stay free for n = 3: 4 blocks, 3 hosts).
            if n == 5 {
                sim.want = vec![1, 2, 1, 2, 2];
                assert!(sim.run_until(600, |s| (0..n).all(|i| s.held(i).len() == s.want[i])));
            }
            let held: usize = (0..n).map(|i| sim.held(i).len()).sum();
            assert_eq!(held, sim.want.iter().sum::<usize>());
        }
    }
}

/// A pod CIDR of 16 blocks: 10.32.0.0/20 in /24s, or fd10:32::/60 in /64s (IPv6 blocks go
/// through the same agreement; the property tests draw the family).
fn sixteen_blocks(v6: bool, init_peers: usize, grace: Duration) -> IpamConfig {
    if v6 {
        cfg("fd10:32::/60", 64, init_peers, grace)
    } else {
        cfg("10.32.0.0/20", 24, init_peers, grace)
    }
}

/// A pod CIDR of 4 blocks: 10.32.0.0/22 in /24s, or fd10:32::/62 in /64s.
fn four_blocks(v6: bool, init_peers: usize, grace: Duration) -> IpamConfig {
    if v6 {
        cfg("fd10:32::/62", 64, init_peers, grace)
    } else {
        cfg("10.32.0.0/22", 24, init_peers, grace)
    }
}

fn s_held(sim: &Sim, i: usize) -> (Vec<Block>, Vec<Block>) {
    (sim.ipam(i).held(), sim.ipam(i).own().pending())
}

#[test]
fn a_single_host_without_seeds_claims_alone_at_once() {
    let mut sim = Sim::new(1, cfg("10.32.0.0/12", 24, 1, Duration::from_secs(60)), 7);
    let now = sim.now;
    let (b, out) = sim.peers[0].as_mut().unwrap().claim(now).unwrap();
    sim.handle(0, out);
    assert_eq!(sim.ipam(0).claim_state(b), ClaimState::Held);
    assert!(sim.disk[0].is_some(), "persisted before anything else");
}

#[test]
fn three_hosts_each_alone_at_start_claim_nothing() {
    let mut sim = Sim::new(3, cfg("10.32.0.0/16", 24, 3, Duration::from_secs(3600)), 3);
    sim.group = vec![0, 1, 2];
    sim.want = vec![1; 3];
    sim.run(100);
    for i in 0..3 {
        assert!(sim.held(i).is_empty());
        assert_eq!(sim.ipam(i).quorum(), (1, 2));
    }
    // Two of them meet: they have a majority of three.
    sim.group = vec![0, 0, 2];
    assert!(sim.run_until(200, |s| s.held(0).len() == 1 && s.held(1).len() == 1));
    assert!(sim.held(2).is_empty());
    sim.group = vec![0, 0, 0];
    assert!(sim.run_until(300, |s| s.all_have(1)));
}

#[test]
fn a_restarted_peer_keeps_its_blocks_and_votes() {
    a_restarted_peer_keeps_its_blocks_and_votes_in(false);
    a_restarted_peer_keeps_its_blocks_and_votes_in(true);
}

fn a_restarted_peer_keeps_its_blocks_and_votes_in(v6: bool) {
    let mut sim = Sim::new(3, four_blocks(v6, 3, Duration::from_secs(3600)), 11);
    sim.want = vec![1; 3];
    assert!(sim.run_until(300, |s| s.all_have(1)));
    let before = sim.ipam(1).own().clone();
    sim.crash(1);
    sim.run(5);
    sim.restart(1);
    let after = sim.ipam(1).own().clone();
    assert_eq!(after.held(), before.held());
    assert_eq!(after.votes, before.votes);
    assert_eq!(after.incarnation, before.incarnation);
    assert!(after.version > before.version, "never reuses a version");
    // Peer 0 releases its block and peer 2 wants a second: peer 1's vote moves only after the
    // release, and the invariant holds throughout.
    let b0 = sim.held(0)[0];
    let now = sim.now;
    let out = sim.peers[0].as_mut().unwrap().release(now, b0);
    sim.handle(0, out);
    sim.want[0] = 0;
    sim.want[2] = 2;
    assert!(sim.run_until(300, |s| s.held(2).len() == 2));
    // 4 blocks, 3 held: with 0's block free again, 2 got either it or the fourth.
    sim.want[2] = 3;
    assert!(sim.run_until(300, |s| s.held(2).len() == 3));
    assert!(sim.held(2).contains(&b0));
}

#[test]
fn restart_from_a_lost_state_file_adopts_its_record_from_the_peers() {
    restart_from_a_lost_state_file_adopts_its_record_from_the_peers_in(false);
    restart_from_a_lost_state_file_adopts_its_record_from_the_peers_in(true);
}

fn restart_from_a_lost_state_file_adopts_its_record_from_the_peers_in(v6: bool) {
    let mut sim = Sim::new(3, four_blocks(v6, 3, Duration::from_secs(3600)), 12);
    sim.want = vec![1; 3];
    assert!(sim.run_until(300, |s| s.all_have(1)));
    let before = sim.ipam(2).own().clone();
    sim.crash(2);
    sim.disk[2] = None;
    sim.restart(2);
    assert!(sim.run_until(50, |s| s.ipam(2).own().votes == before.votes));
    assert_eq!(sim.held(2), before.held());
}

#[test]
fn leave_hands_blocks_back_and_stops_counting() {
    leave_hands_blocks_back_and_stops_counting_in(false);
    leave_hands_blocks_back_and_stops_counting_in(true);
}

fn leave_hands_blocks_back_and_stops_counting_in(v6: bool) {
    let mut sim = Sim::new(4, four_blocks(v6, 4, Duration::from_secs(3600)), 5);
    sim.want = vec![1; 4];
    assert!(sim.run_until(300, |s| s.all_have(1)));
    let b3 = sim.held(3)[0];
    let now = sim.now;
    let out = sim.peers[3].as_mut().unwrap().leave(now);
    sim.handle(3, out);
    assert!(sim.held(3).is_empty());
    assert!(sim.run_until(10, |s| s.ipam(3).leave_acked()));
    sim.crash(3);
    sim.run(5);
    assert_eq!(sim.ipam(0).members().len(), 3);
    assert_eq!(sim.ipam(0).free_blocks(), 1);
    sim.want[0] = 2;
    assert!(sim.run_until(300, |s| s.held(0).len() == 2));
    assert!(sim.held(0).contains(&b3));
    // It comes back later: a new incarnation with nothing.
    sim.restart(3);
    let own = sim.ipam(3).own();
    assert!(!own.left && own.claims.is_empty());
    assert_eq!(own.incarnation, 1);
    sim.run(20);
    assert_eq!(sim.ipam(0).members().len(), 4);
}

#[test]
fn a_dead_host_is_reclaimed_after_the_grace_period_and_its_block_reused() {
    a_dead_host_is_reclaimed_after_the_grace_period_and_its_block_reused_in(false);
    a_dead_host_is_reclaimed_after_the_grace_period_and_its_block_reused_in(true);
}

fn a_dead_host_is_reclaimed_after_the_grace_period_and_its_block_reused_in(v6: bool) {
    let grace = Duration::from_secs(30);
    let mut sim = Sim::new(3, four_blocks(v6, 3, grace), 21);
    sim.want = vec![1; 3];
    assert!(sim.run_until(300, |s| s.all_have(1)));
    let dead = sim.held(2)[0];
    sim.crash(2);
    sim.want = vec![2, 2, 0];
    // One of the two gets the fourth block; the other waits until 2's block is reclaimed.
    sim.run(100);
    assert_eq!(sim.held(0).len() + sim.held(1).len(), 3);
    assert_eq!(sim.ipam(0).members().len(), 3);
    assert!(
        sim.run_until(400, |s| s.held(0).len() + s.held(1).len() == 4),
        "reclaimed after the grace period"
    );
    assert!(sim.held(0).contains(&dead) || sim.held(1).contains(&dead));
    assert!(sim.round * ROUND.as_millis() as u64 > grace.as_millis() as u64);
    assert_eq!(sim.ipam(0).members().len(), 2);
    // The dead host comes back from its disk: it learns it was reclaimed.
    sim.restart(2);
    assert!(sim.run_until(50, |s| s.ipam(2).own().incarnation == 1));
    assert!(sim.held(2).is_empty());
    assert_eq!(sim.ipam(2).lost(), &[dead]);
    sim.run(20);
    assert_eq!(sim.ipam(0).members().len(), 3);
}

#[test]
fn a_deleted_host_is_reclaimed_at_once_but_not_while_it_is_still_reachable() {
    a_deleted_host_is_reclaimed_at_once_but_not_while_it_is_still_reachable_in(false);
    a_deleted_host_is_reclaimed_at_once_but_not_while_it_is_still_reachable_in(true);
}

fn a_deleted_host_is_reclaimed_at_once_but_not_while_it_is_still_reachable_in(v6: bool) {
    // A grace period far beyond the test: only the deletion can reclaim.
    let grace = Duration::from_secs(3600);
    let mut sim = Sim::new(3, four_blocks(v6, 3, grace), 23);
    sim.want = vec![1; 3];
    assert!(sim.run_until(300, |s| s.all_have(1)));
    let gone = sim.names[2];
    let block = sim.held(2)[0];
    // Deleted while still up (a Node object removed by mistake): nothing is taken.
    for i in 0..2 {
        let now = sim.now;
        let out = sim.peers[i].as_mut().unwrap().set_deleted(now, gone, true);
        sim.handle(i, out);
    }
    sim.run(50);
    assert_eq!(sim.held(2), vec![block]);
    assert!(sim.ipam(0).reclaimed().is_empty());
    // The host goes away: reclaimed within seconds, far inside the grace period.
    sim.crash(2);
    let start = sim.round;
    assert!(
        sim.run_until(100, |s| s.ipam(0).reclaimed().contains(&gone)
            && s.ipam(1).reclaimed().contains(&gone)),
        "reclaimed once unreachable"
    );
    assert!((sim.round - start) * (ROUND.as_millis() as u64) < 30_000);
    sim.want = vec![2, 2, 0];
    assert!(sim.run_until(200, |s| s.held(0).len() + s.held(1).len() == 4));
    assert!(sim.held(0).contains(&block) || sim.held(1).contains(&block));
}

#[test]
fn a_partitioned_minority_is_reclaimed_only_by_the_majority_and_notices_on_healing() {
    a_partitioned_minority_is_reclaimed_only_by_the_majority_and_notices_on_healing_in(false);
    a_partitioned_minority_is_reclaimed_only_by_the_majority_and_notices_on_healing_in(true);
}

fn a_partitioned_minority_is_reclaimed_only_by_the_majority_and_notices_on_healing_in(v6: bool) {
    let grace = Duration::from_secs(20);
    let mut sim = Sim::new(3, four_blocks(v6, 3, grace), 31);
    sim.want = vec![1; 3];
    assert!(sim.run_until(300, |s| s.all_have(1)));
    let b2 = sim.held(2)[0];
    sim.group = vec![0, 0, 1];
    sim.run(400);
    // The minority votes against the majority but cannot reclaim it; the majority reclaims it.
    assert_eq!(sim.ipam(2).own().reclaim_votes.len(), 2);
    assert!(sim.ipam(2).reclaimed().is_empty());
    assert_eq!(sim.held(2), vec![b2], "it does not know yet");
    assert!(sim.ipam(0).reclaimed().contains(&sim.names[2]));
    sim.want = vec![2, 2, 1];
    assert!(sim.run_until(300, |s| s.held(0).len() + s.held(1).len() == 4));
    sim.group = vec![0, 0, 0];
    assert!(sim.run_until(50, |s| s.ipam(2).own().incarnation == 1));
    assert!(sim.ipam(2).lost().contains(&b2));
    assert!(!sim.ipam(2).held().contains(&b2));
    sim.run(50);
    assert!(sim.ipam(0).reclaimed().is_empty());
    assert_eq!(sim.ipam(1).members().len(), 3);
}

#[test]
fn a_three_way_split_reclaims_nobody() {
    a_three_way_split_reclaims_nobody_in(false);
    a_three_way_split_reclaims_nobody_in(true);
}

fn a_three_way_split_reclaims_nobody_in(v6: bool) {
    let grace = Duration::from_secs(10);
    let mut sim = Sim::new(3, four_blocks(v6, 3, grace), 41);
    sim.want = vec![1; 3];
    assert!(sim.run_until(300, |s| s.all_have(1)));
    let held: Vec<_> = (0..3).map(|i| sim.held(i)).collect();
    sim.group = vec![0, 1, 2];
    sim.run(300);
    sim.group = vec![0, 0, 0];
    sim.run(100);
    for (i, h) in held.iter().enumerate() {
        assert_eq!(&sim.held(i), h);
        assert_eq!(sim.ipam(i).own().incarnation, 0);
        assert!(sim.ipam(i).own().reclaim_votes.is_empty());
    }
}

#[test]
fn a_two_host_cluster_never_reclaims() {
    a_two_host_cluster_never_reclaims_in(false);
    a_two_host_cluster_never_reclaims_in(true);
}

fn a_two_host_cluster_never_reclaims_in(v6: bool) {
    let mut sim = Sim::new(2, four_blocks(v6, 2, Duration::from_secs(5)), 51);
    sim.want = vec![1; 2];
    assert!(sim.run_until(300, |s| s.all_have(1)));
    sim.crash(1);
    sim.run(600);
    assert!(sim.ipam(0).reclaimed().is_empty());
    assert_eq!(sim.ipam(0).own().reclaim_votes.len(), 1);
    assert_eq!(sim.ipam(0).free_blocks(), 2);
    // Nor can the survivor claim more: no majority of two.
    sim.want[0] = 2;
    sim.run(100);
    assert_eq!(sim.held(0).len(), 1);
}

#[test]
fn lost_messages_are_repaired_by_anti_entropy() {
    let mut sim = Sim::new(5, cfg("10.32.0.0/21", 24, 5, Duration::from_secs(3600)), 61);
    sim.loss = 0.3;
    sim.want = vec![1; 5];
    assert!(sim.run_until(2000, |s| s.all_have(1)));
    sim.loss = 0.0;
    sim.run(30);
    let newest = sim.newest();
    for i in 0..5 {
        assert_eq!(sim.ipam(i).records(), &newest, "peer {i} converged");
    }
}

#[test]
fn a_large_cluster_state_fits_in_chunked_messages() {
    large_cluster_state_in(cfg("10.0.0.0/8", 24, 1, Duration::from_secs(3600)));
    // IPv6 blocks are written longer (fd10:32:0:257::/64): still within the frame limit.
    large_cluster_state_in(cfg("fd10:32::/48", 64, 1, Duration::from_secs(3600)));
}

fn large_cluster_state_in(c: IpamConfig) {
    // 600 hosts' worth of records with one claim each, synced to a new neighbour.
    let now = Instant::now();
    let mut records = Vec::new();
    for i in 0..600u64 {
        let mut r = IpamRecord::new(PeerName(i + 10), format!("host-{i}"));
        r.version = 3;
        let b = c.block(i).unwrap();
        r.claims
            .insert(b, gossip::ipam::Claim { seq: 2, held: true });
        for j in 0..600 {
            r.votes.insert(c.block(j).unwrap(), (PeerName(j + 10), 2));
        }
        records.push(r);
    }
    let mut a = Ipam::new(PeerName(1), "a".into(), c, None, now).unwrap();
    let out = a.on_message(now, PeerName(10), IpamMsg::Records { records });
    let out2 = a.connected(now, PeerName(2));
    let mut msgs = 0;
    for o in out.into_iter().chain(out2) {
        if let IpamOut::Send { to, msg } = o {
            if to == PeerName(2) {
                if let IpamMsg::Records { .. } = &msg {
                    msgs += 1;
                }
            }
            let bytes = proto::encode(&Message::Ipam(msg));
            assert!(bytes.len() - 4 <= proto::MAX_MESSAGE_LEN, "{}", bytes.len());
        }
    }
    assert!(msgs > 1, "split into several messages");
}

#[derive(Debug, Clone)]
enum Op {
    /// Assign every peer a partition group (0..3).
    Partition(Vec<u32>),
    /// Peer i wants one more block.
    Want(usize),
    /// Peer i releases its first block.
    Release(usize),
    /// Run this many rounds.
    Run(u64),
    /// Peer i crashes (or, if down, restarts from its disk).
    CrashOrRestart(usize),
}

fn op(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        proptest::collection::vec(0u32..3, n).prop_map(Op::Partition),
        (0..n).prop_map(Op::Want),
        (0..n).prop_map(Op::Release),
        (1u64..40).prop_map(Op::Run),
    ]
}

fn op_with_crashes(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => op(n),
        1 => (0..n).prop_map(Op::CrashOrRestart),
        1 => (50u64..200).prop_map(Op::Run),
    ]
}

fn apply(sim: &mut Sim, n: usize, o: Op) {
    match o {
        Op::Partition(g) => sim.group = g[..n].to_vec(),
        Op::Want(i) => sim.want[i % n] = (sim.want[i % n] + 1).min(3),
        Op::Release(i) => {
            let i = i % n;
            if let Some(b) = sim.peers[i]
                .as_ref()
                .and_then(|p| p.held().first().copied())
            {
                let now = sim.now;
                let out = sim.peers[i].as_mut().unwrap().release(now, b);
                sim.handle(i, out);
                sim.want[i] = sim.want[i].saturating_sub(1);
            }
        }
        Op::Run(r) => sim.run(r),
        Op::CrashOrRestart(i) => {
            let i = i % n;
            if sim.peers[i].is_some() {
                sim.crash(i);
            } else {
                sim.restart(i);
            }
        }
    }
}

proptest! {
    // IPAM_SIM_CASES=1000 for a longer run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("IPAM_SIM_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    /// Random partitions while peers claim and release, then healing: never two holders of a
    /// block at any instant, and after healing every peer gets what it wants.
    #[test]
    fn partitions_never_give_a_block_two_holders(
        n in 3usize..=5,
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(5), 1..40),
        v6 in any::<bool>(),
    ) {
        let mut sim = Sim::new(n, sixteen_blocks(v6, n, Duration::from_secs(36_000)), seed);
        for o in ops {
            apply(&mut sim, n, o);
        }
        sim.group = vec![0; n];
        let ok = sim.run_until(1500, |s| (0..n).all(|i| s.held(i).len() >= s.want[i]));
        prop_assert!(ok, "wanted {:?}, held {:?}", sim.want, (0..n).map(|i| s_held(&sim, i)).collect::<Vec<_>>());
    }

    /// The same with crashes, restarts from disk and a short grace period: hosts are reclaimed
    /// and come back as new incarnations. A reclaimed host no longer counts as a holder (it finds
    /// out when it reconnects); everyone else never shares a block.
    #[test]
    fn crashes_and_reclaims_never_give_a_block_two_holders(
        n in 3usize..=5,
        seed in any::<u64>(),
        ops in proptest::collection::vec(op_with_crashes(5), 1..40),
        v6 in any::<bool>(),
    ) {
        let mut sim = Sim::new(n, sixteen_blocks(v6, n, Duration::from_secs(5)), seed);
        for o in ops {
            apply(&mut sim, n, o);
        }
        for i in 0..n {
            if sim.peers[i].is_none() {
                sim.restart(i);
            }
        }
        sim.group = vec![0; n];
        // Everyone gets what it wants, and the reclaimed hosts have come back as new
        // incarnations.
        let ok = sim.run_until(1500, |s| {
            (0..n).all(|i| s.held(i).len() >= s.want[i] && s.ipam(i).reclaimed().is_empty())
        });
        prop_assert!(ok, "wanted {:?}, held {:?}", sim.want, (0..n).map(|i| s_held(&sim, i)).collect::<Vec<_>>());
    }
}
