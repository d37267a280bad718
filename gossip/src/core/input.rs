//! What the driver feeds into the core: connections coming and going, the data path becoming
//! usable, received messages, and the periodic tick.

use super::{GossipCore, GossipMsg, Output};
use crate::topology::{ConnEntry, PeerRecord};
use crate::PeerName;
use rand::Rng;
use std::collections::HashMap;
use std::time::Instant;

impl GossipCore {
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

    /// Replaces the pods our record lists (NetworkPolicy: every host resolves other hosts' pods by
    /// identity). Pods beyond what fits one message with our connections are left out, the last
    /// ones in order first; the number left out is returned with the outputs.
    pub fn set_pods(
        &mut self,
        now: Instant,
        mut pods: Vec<crate::topology::PodEntry>,
    ) -> (Vec<Output>, usize) {
        let mut out = Vec::new();
        pods.retain(|p| super::checks::pods_well_formed(std::slice::from_ref(p)));
        pods.sort();
        pods.dedup();
        let wanted = pods.len();
        pods.truncate(super::checks::MAX_PODS);
        // Room for the record without pods, and a margin for the message around it.
        let mut bare = self.topology.ours().clone();
        bare.pods.clear();
        let room = self
            .max_message_bytes
            .saturating_sub(crate::topology::json_len(&bare) + 256);
        let mut used = 0;
        let fits = pods
            .iter()
            .take_while(|p| {
                used += crate::topology::json_len(p) + 1;
                used <= room
            })
            .count();
        pods.truncate(fits);
        let left_out = wanted - pods.len();
        let before = self.topology.generation();
        if self.topology.set_our_pods(pods).is_some() {
            self.own_changed(now, None, &mut out);
        }
        self.finish(now, before, &mut out);
        (out, left_out)
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
}
