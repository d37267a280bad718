//! The exchange between neighbours: a full sync on a new connection, records flooded on every
//! change, anti-entropy digests and requests, acknowledgements of a leaving host's record, and
//! the size limit of a message.

use super::{Ipam, IpamMsg, IpamOut, IpamRecord};
use crate::PeerName;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Encoded size above which records are sent in several messages (below the 64 KiB frame limit
/// with room for the envelope and encryption).
pub const CHUNK_BYTES: usize = 48 * 1024;
/// How long a change to other peers' records may wait before it is persisted (our own record is
/// persisted at once, before anything that shows it is sent).
pub const OTHERS_PERSIST_DELAY: Duration = Duration::from_secs(5);
/// Default interval between anti-entropy digests.
pub const DIGEST_INTERVAL: Duration = Duration::from_secs(2);

impl Ipam {
    /// A control connection to `peer` came up: full sync.
    pub fn connected(&mut self, now: Instant, peer: PeerName) -> Vec<IpamOut> {
        self.neighbours.insert(peer);
        self.last_seen.insert(peer, now);
        let all: Vec<IpamRecord> = self.records.values().cloned().collect();
        self.send_records(peer, all);
        self.step(now);
        self.take_out()
    }

    /// The last control connection to `peer` closed.
    pub fn disconnected(&mut self, _now: Instant, peer: PeerName) -> Vec<IpamOut> {
        self.neighbours.remove(&peer);
        self.take_out()
    }

    /// The peers reachable over control connections now (us excluded).
    pub fn set_reachable(&mut self, now: Instant, reachable: BTreeSet<PeerName>) -> Vec<IpamOut> {
        for p in &reachable {
            self.last_seen.insert(*p, now);
        }
        self.reachable = reachable;
        self.step(now);
        self.take_out()
    }

    /// Timers: anti-entropy digests and reclaim votes.
    pub fn tick(&mut self, now: Instant) -> Vec<IpamOut> {
        self.step(now);
        if self
            .others_dirty
            .is_some_and(|t| now.saturating_duration_since(t) >= OTHERS_PERSIST_DELAY)
        {
            self.dirty = true;
        }
        if now.saturating_duration_since(self.last_digest) >= self.digest_interval {
            self.last_digest = now;
            let entries: Vec<(u64, u64, u64)> = self
                .records
                .values()
                .map(|r| (r.name.0, r.incarnation, r.version))
                .collect();
            for to in self.neighbours.clone() {
                // ~50 bytes an entry: 800 entries stay far below the frame limit.
                for chunk in entries.chunks(800) {
                    self.out.push(IpamOut::Send {
                        to,
                        msg: IpamMsg::Digest {
                            entries: chunk.to_vec(),
                        },
                    });
                }
            }
        }
        self.take_out()
    }

    /// A message from the neighbour `from`.
    pub fn on_message(&mut self, now: Instant, from: PeerName, msg: IpamMsg) -> Vec<IpamOut> {
        match msg {
            IpamMsg::Records { records } => {
                let mut new = Vec::new();
                let mut ack = None;
                for r in records {
                    if !self.admit(&r) {
                        continue;
                    }
                    if r.name == self.me {
                        // With a key, only a copy we signed can be ours from before a lost
                        // state file.
                        let foreign = self.signer.is_some() && !self.signed_by_us(&r);
                        if r.stamp() > self.own().stamp() && (!self.adopt_own || foreign) {
                            self.outdo_forged_own(&r);
                        } else if r.stamp() > self.own().stamp() {
                            // Our own record from before a lost state file: adopt it (its
                            // votes stay ours) and move past it.
                            self.adopt_own = false;
                            let leaving = self.leaving;
                            let mut own = r;
                            if own.left && !leaving {
                                Self::reincarnate(&mut own);
                            }
                            own.version += 1;
                            let own = self.put_own(own);
                            self.dirty = true;
                            self.flood(vec![own], None);
                        }
                        continue;
                    }
                    let Ok(replaces_forgery) = self.verify(&r, r.name == from) else {
                        continue;
                    };
                    let newer = replaces_forgery
                        || self
                            .records
                            .get(&r.name)
                            .is_none_or(|o| r.stamp() > o.stamp());
                    if r.name == from {
                        ack = Some(
                            r.stamp().max(
                                self.records
                                    .get(&r.name)
                                    .map(|o| o.stamp())
                                    .unwrap_or((0, 0)),
                            ),
                        );
                    }
                    if newer {
                        self.count_conflicts(&r);
                        self.last_seen.insert(r.name, now);
                        self.records.insert(r.name, r.clone());
                        self.others_dirty.get_or_insert(now);
                        new.push(r);
                    }
                }
                if !new.is_empty() {
                    self.flood(new, Some(from));
                }
                if let Some((incarnation, version)) = ack {
                    self.out.push(IpamOut::Send {
                        to: from,
                        msg: IpamMsg::Ack {
                            name: from.0,
                            incarnation,
                            version,
                        },
                    });
                }
            }
            IpamMsg::Digest { entries } => {
                let mut push = Vec::new();
                let mut want = Vec::new();
                for (name, inc, ver) in entries {
                    match self.records.get(&PeerName(name)) {
                        Some(r) if r.stamp() > (inc, ver) => push.push(r.clone()),
                        Some(r) if r.stamp() == (inc, ver) => {}
                        _ => want.push(name),
                    }
                }
                if !push.is_empty() {
                    self.send_records(from, push);
                }
                if !want.is_empty() {
                    self.out.push(IpamOut::Send {
                        to: from,
                        msg: IpamMsg::Request { names: want },
                    });
                }
            }
            IpamMsg::Request { names } => {
                let recs = names
                    .iter()
                    .filter_map(|n| self.records.get(&PeerName(*n)).cloned())
                    .collect();
                self.send_records(from, recs);
            }
            IpamMsg::Ack {
                name,
                incarnation,
                version,
            } => {
                if name == self.me.0 {
                    self.acked = self.acked.max(Some((incarnation, version)));
                }
            }
        }
        self.step(now);
        self.take_out()
    }

    pub(super) fn flood(&mut self, records: Vec<IpamRecord>, except: Option<PeerName>) {
        for to in self.neighbours.clone() {
            if Some(to) != except {
                self.send_records(to, records.clone());
            }
        }
    }

    pub(super) fn send_records(&mut self, to: PeerName, records: Vec<IpamRecord>) {
        let mut chunk = Vec::new();
        let mut size = 0;
        for r in records {
            let len = serde_json::to_vec(&r)
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            if len > CHUNK_BYTES {
                self.oversize += 1;
                continue;
            }
            if size + len > CHUNK_BYTES && !chunk.is_empty() {
                self.out.push(IpamOut::Send {
                    to,
                    msg: IpamMsg::Records {
                        records: std::mem::take(&mut chunk),
                    },
                });
                size = 0;
            }
            size += len + 1;
            chunk.push(r);
        }
        if !chunk.is_empty() {
            self.out.push(IpamOut::Send {
                to,
                msg: IpamMsg::Records { records: chunk },
            });
        }
    }
}
