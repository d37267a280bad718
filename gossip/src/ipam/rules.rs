//! The agreement rules: which peers are reclaimed ([`reclaimed_set`]), which blocks are in use,
//! and [`Ipam::step`], which votes, wins or gives up our claims until nothing changes.
//! `docs/ipam.md` argues why they never let two hosts hold the same block.

use super::{Block, Claim, Ipam, IpamRecord};
use crate::PeerName;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// The peers reclaimed in this set of records, for `init_peers`.
///
/// A peer X is reclaimed when some record asserts it (`reclaimed[X] == X.incarnation`), or when
/// reclaim votes for its current incarnation come from a majority of the members (max(members,
/// init_peers)), counting only voters that are not themselves the target of a majority: after a
/// partition into pieces that are each a minority, the pieces' votes against each other do not
/// add up to a reclaim.
pub fn reclaimed_set(
    records: &BTreeMap<PeerName, IpamRecord>,
    init_peers: usize,
) -> BTreeSet<PeerName> {
    let live: Vec<&IpamRecord> = records.values().filter(|r| !r.left).collect();
    let mut gone: BTreeSet<PeerName> = live
        .iter()
        .filter(|r| {
            records
                .values()
                .any(|a| a.reclaimed.get(&r.name) == Some(&r.incarnation))
        })
        .map(|r| r.name)
        .collect();
    loop {
        let members: Vec<&IpamRecord> = live
            .iter()
            .copied()
            .filter(|r| !gone.contains(&r.name))
            .collect();
        let q = members.len().max(init_peers) / 2 + 1;
        let against = |x: &IpamRecord, voters: &[&IpamRecord]| {
            voters
                .iter()
                .filter(|v| {
                    v.name != x.name && v.reclaim_votes.get(&x.name) == Some(&x.incarnation)
                })
                .count()
        };
        let qualified: Vec<&IpamRecord> = members
            .iter()
            .copied()
            .filter(|v| against(v, &members) < q)
            .collect();
        let newly: Vec<PeerName> = members
            .iter()
            .filter(|x| against(x, &qualified) >= q)
            .map(|x| x.name)
            .collect();
        if newly.is_empty() {
            return gone;
        }
        gone.extend(newly);
    }
}

impl Ipam {
    /// Blocks in use: claimed by a member, or with a live vote for someone other than us.
    pub(super) fn used(&self) -> BTreeSet<Block> {
        let gone = self.reclaimed();
        let live = |p: &PeerName| {
            self.records
                .get(p)
                .is_some_and(|r| !r.left && !gone.contains(p))
        };
        let mut used = BTreeSet::new();
        for r in self.records.values().filter(|r| live(&r.name)) {
            used.extend(r.claims.keys().copied().filter(|b| self.cfg.is_block(*b)));
            for (b, (z, s)) in &r.votes {
                let valid = *z != self.me
                    && live(z)
                    && self.records[z].claims.get(b).is_some_and(|c| c.seq == *s);
                if valid && self.cfg.is_block(*b) {
                    used.insert(*b);
                }
            }
        }
        used
    }

    /// Runs the rules until nothing changes (a few rounds at most).
    pub(super) fn step(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        for _ in 0..8 {
            if !self.step_once(now) {
                break;
            }
        }
    }

    pub(super) fn step_once(&mut self, now: Instant) -> bool {
        let me = self.me;
        let gone = self.reclaimed();
        if gone.contains(&me) {
            // The cluster reclaimed us while we were away: what we held is lost.
            let held = self.held();
            self.lost.extend(held);
            self.lost.sort();
            self.lost.dedup();
            return self.change_own(Self::reincarnate);
        }
        let members: BTreeSet<PeerName> = self
            .records
            .values()
            .filter(|r| !r.left && !gone.contains(&r.name))
            .map(|r| r.name)
            .collect();
        let q = members.len().max(self.cfg.init_peers) / 2 + 1;
        for p in self.records.keys() {
            self.last_seen.entry(*p).or_insert(now);
        }
        let records = &self.records;
        let cfg = &self.cfg;
        let grace = cfg.grace;
        let away: BTreeSet<PeerName> = members
            .iter()
            .filter(|p| **p != me && !self.reachable.contains(p))
            .filter(|p| {
                self.deleted.contains(p)
                    || self
                        .last_seen
                        .get(p)
                        .is_some_and(|t| now.saturating_duration_since(*t) > grace)
            })
            .copied()
            .collect();
        let claim_live = |z: &PeerName, b: &Block, s: u64| {
            members.contains(z) && records[z].claims.get(b).is_some_and(|c| c.seq == s)
        };
        let mut own = records[&me].clone();
        // Reclaim assertions and votes.
        own.reclaimed = gone
            .iter()
            .filter_map(|p| records.get(p))
            .filter(|r| !r.left)
            .map(|r| (r.name, r.incarnation))
            .collect();
        own.reclaim_votes.retain(|p, inc| {
            records.get(p).is_some_and(|r| {
                !r.left && r.incarnation == *inc && (away.contains(p) || gone.contains(p))
            })
        });
        for p in &away {
            own.reclaim_votes.insert(*p, records[p].incarnation);
        }
        // Votes: drop those whose claim is gone, then vote on every block we have no vote on.
        own.votes.retain(|b, (z, s)| claim_live(z, b, *s));
        let mut candidates: BTreeMap<Block, (bool, PeerName, u64)> = BTreeMap::new();
        for z in &members {
            for (b, c) in &records[z].claims {
                // A claim on a block another live member holds with a majority's votes (which
                // honest hosts never make: they claim free blocks) gets no vote.
                if !cfg.is_block(*b) || self.held_by_other(*b, *z, &members, q).is_some() {
                    continue;
                }
                // Prefer a held claim, then the smallest name.
                let key = (!c.held, *z, c.seq);
                let e = candidates.entry(*b).or_insert(key);
                if key < *e {
                    *e = key;
                }
            }
        }
        for (b, (_, z, s)) in candidates {
            own.votes.entry(b).or_insert((z, s));
        }
        // Our pending claims: won, or lost to a held claim or a smaller claimant.
        let pending: Vec<(Block, Claim)> = own
            .claims
            .iter()
            .filter(|(_, c)| !c.held)
            .map(|(b, c)| (*b, *c))
            .collect();
        for (b, c) in pending {
            let votes = members
                .iter()
                .filter(|v| {
                    let votes = if **v == me {
                        &own.votes
                    } else {
                        &records[*v].votes
                    };
                    votes.get(&b) == Some(&(me, c.seq))
                })
                .count();
            if votes >= q {
                own.claims.insert(b, Claim { held: true, ..c });
                continue;
            }
            let beaten = members
                .iter()
                .filter(|z| **z != me)
                .any(|z| records[z].claims.get(&b).is_some_and(|o| o.held || *z < me));
            if beaten {
                own.claims.remove(&b);
                if own.votes.get(&b) == Some(&(me, c.seq)) {
                    own.votes.remove(&b);
                }
            }
        }
        self.change_own(|r| *r = own)
    }
}

/// A 64-bit mix of a name (splitmix64's finaliser), for the scan offset.
pub(super) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
