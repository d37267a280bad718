//! Garbage collection: records of peers no longer reachable over connections leave the view and
//! wait in limbo for two anti-entropy intervals, in case the record that connects them arrives
//! later.

use super::{GossipCore, LIMBO_CAP};
use crate::topology::PeerRecord;
use crate::PeerName;
use std::collections::HashMap;
use std::time::Instant;

/// A collected record, kept for a while in case the record that connects it arrives.
#[derive(Debug, Clone)]
pub(super) struct Limbo {
    record: PeerRecord,
    since: Instant,
    /// Who sent it (not to be sent back when it is restored).
    holders: Vec<PeerName>,
}

impl GossipCore {
    /// Drops records of peers not reachable over connections (what [`Topology::gc`] does, with
    /// the graph we need for forwarding anyway) and puts them in limbo.
    pub(super) fn collect_garbage(
        &mut self,
        now: Instant,
        holders: &HashMap<PeerName, Vec<PeerName>>,
    ) {
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

    pub(super) fn expire_limbo(&mut self, now: Instant) {
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
    pub(super) fn restore(&mut self, now: Instant, forward: &mut Vec<(PeerName, Vec<PeerName>)>) {
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
}
