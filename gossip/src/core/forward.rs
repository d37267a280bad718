//! Dissemination: merging received records and passing on what changed our view along the
//! owners' broadcast trees, our own record (with its hold-down), full states for newcomers, and
//! the counting of everything sent.

use super::msg::chunk;
use super::{GossipCore, GossipMsg, Output};
use crate::topology::PeerRecord;
use crate::PeerName;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

impl GossipCore {
    /// Merges the records of a batch, collects garbage (unless a full state is still arriving)
    /// and passes on what changed our view.
    pub(super) fn merge_and_forward(
        &mut self,
        now: Instant,
        incoming: Vec<(PeerName, Vec<PeerRecord>)>,
        out: &mut Vec<Output>,
    ) {
        let mut senders: Vec<(PeerName, (u64, u64), PeerName)> = Vec::new();
        let mut all = Vec::new();
        for (from, records) in incoming {
            for r in records {
                if !self.admit(now, from, &r) {
                    continue;
                }
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
    pub(super) fn settle(
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
    pub(super) fn forward(
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

    pub(super) fn own_due(&self, now: Instant) -> bool {
        self.last_own_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= self.holddown)
    }

    /// Our record changed: send it to every connected peer but `except` (which gets it in a full
    /// state), now or, within the hold-down after the last send, at a later tick.
    pub(super) fn own_changed(
        &mut self,
        now: Instant,
        except: Option<PeerName>,
        out: &mut Vec<Output>,
    ) {
        if self.own_due(now) {
            self.send_ours(except, out);
            self.last_own_sent = Some(now);
            self.own_pending = false;
        } else {
            self.own_pending = true;
        }
    }

    /// Sends our record to every connected peer but `except`.
    pub(super) fn send_ours(&mut self, except: Option<PeerName>, out: &mut Vec<Output>) {
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
    pub(super) fn send_full(&mut self, to: PeerName, out: &mut Vec<Output>) {
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
    pub(super) fn send_records(
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

    pub(super) fn send(&mut self, out: &mut Vec<Output>, to: PeerName, msg: GossipMsg) {
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
}
