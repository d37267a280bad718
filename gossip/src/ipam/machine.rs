//! The [`Ipam`] state machine of one host: its state, construction from a persisted state,
//! queries, and the calls that claim, withdraw and release blocks or leave the cluster. The rules
//! that decide claims are in [`super::rules`], the exchange with neighbours in [`super::sync`].

use super::rules::{mix, reclaimed_set};
use super::sync::DIGEST_INTERVAL;
use super::{Block, Claim, IpamConfig, IpamError, IpamMsg, IpamRecord, IpamState};
use crate::sign::{HostKey, SignedRecord, Verifier};
use crate::PeerName;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the state machine asks the driver to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpamOut {
    /// Write [`Ipam::state`] to the state file now, before sending anything that follows.
    Persist,
    /// Send to a directly connected neighbour.
    Send {
        /// The neighbour.
        to: PeerName,
        /// The message.
        msg: IpamMsg,
    },
}

/// Where a claim stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimState {
    /// A majority agreed: the block is ours.
    Held,
    /// Still waiting for votes.
    Pending,
    /// Withdrawn (someone else won it) or released.
    Gone,
}

/// The IPAM state machine of one host. See the module docs and `docs/ipam.md`.
#[derive(Debug)]
pub struct Ipam {
    pub(super) cfg: IpamConfig,
    pub(super) me: PeerName,
    pub(super) records: BTreeMap<PeerName, IpamRecord>,
    /// When each other peer was last reachable (or sent a newer record).
    pub(super) last_seen: HashMap<PeerName, Instant>,
    pub(super) reachable: BTreeSet<PeerName>,
    pub(super) neighbours: BTreeSet<PeerName>,
    pub(super) lost: Vec<Block>,
    pub(super) leaving: bool,
    pub(super) acked: Option<(u64, u64)>,
    pub(super) last_digest: Instant,
    pub(super) digest_interval: Duration,
    /// Our record changed: persist before sending anything.
    pub(super) dirty: bool,
    /// Only other peers' records changed since this instant: persisted within
    /// [`super::OTHERS_PERSIST_DELAY`] (they can be learnt again from the peers).
    pub(super) others_dirty: Option<Instant>,
    pub(super) out: Vec<IpamOut>,
    /// Records too large for one message, never sent.
    pub oversize: u64,
    /// We started without our own record (a new host, or a lost state file): the first newer
    /// copy of it that comes back is adopted. Otherwise a newer copy is not ours.
    pub(super) adopt_own: bool,
    /// Received records refused or found suspicious ([`super::checks`]).
    pub(super) rejects: super::IpamRejects,
    /// Peers whose host was deleted from the cluster (a Kubernetes Node gone): voted for
    /// reclaim as soon as they are unreachable, without waiting for the grace period.
    pub(super) deleted: BTreeSet<PeerName>,
    /// Signs our record on every change, when set ([`crate::sign`]).
    pub(super) signer: Option<Arc<HostKey>>,
    /// Names and keys, for [`super::checks`].
    pub(super) verifier: Verifier,
}

impl Ipam {
    /// A state machine for `me`, from a persisted state if there is one (a state for another CIDR
    /// or block size is ignored). Pending claims of a previous run are withdrawn; held blocks
    /// and votes are kept.
    pub fn new(
        me: PeerName,
        nickname: String,
        cfg: IpamConfig,
        state: Option<IpamState>,
        now: Instant,
    ) -> Result<Ipam, String> {
        cfg.validate()?;
        let mut records = BTreeMap::new();
        let mut lost = Vec::new();
        if let Some(st) = state {
            if st.cidr == cfg.cidr && st.block_prefix == cfg.block_prefix {
                for r in st.records.into_iter().filter(IpamRecord::plausible) {
                    records.insert(r.name, r);
                }
                lost = st.lost;
            }
        }
        let adopt_own = !records.contains_key(&me);
        let mut own = records
            .remove(&me)
            .unwrap_or_else(|| IpamRecord::new(me, nickname.clone()));
        own.nickname = nickname;
        own.claims.retain(|_, c| c.held);
        if own.left {
            Self::reincarnate(&mut own);
        }
        own.version += 1;
        records.insert(me, own);
        let last_seen = records.keys().map(|p| (*p, now)).collect();
        Ok(Ipam {
            cfg,
            me,
            records,
            last_seen,
            reachable: BTreeSet::new(),
            neighbours: BTreeSet::new(),
            lost,
            leaving: false,
            acked: None,
            last_digest: now,
            digest_interval: DIGEST_INTERVAL,
            dirty: true,
            others_dirty: None,
            out: Vec::new(),
            oversize: 0,
            adopt_own,
            rejects: super::IpamRejects::default(),
            deleted: BTreeSet::new(),
            signer: None,
            verifier: Verifier::new(false),
        })
    }

    /// Signs our record with `key` now and on every later change.
    pub fn with_host_key(mut self, key: Arc<HostKey>) -> Self {
        self.verifier.bind_own(self.me, key.public());
        self.signer = Some(key);
        let own = self.own().clone();
        self.put_own(own);
        self
    }

    /// A control connection authenticated `name` with `key`; a conflict was already refused by
    /// the topology's verifier, which sees every hello first.
    pub fn bind_connection_key(&mut self, name: PeerName, key: crate::sign::PublicKey) {
        let _ = self.verifier.bind_connection(name, key);
    }

    /// Refuses every unsigned record (`--require-signed-records`).
    pub fn with_require_signed(mut self, require: bool) -> Self {
        self.verifier.set_require_signed(require);
        self
    }

    /// Replaces our record, signed when we have a key; returns what was stored.
    pub(super) fn put_own(&mut self, mut own: IpamRecord) -> IpamRecord {
        if let Some(k) = &self.signer {
            own.sign(k);
        }
        self.records.insert(self.me, own.clone());
        own
    }

    /// Changes the anti-entropy interval.
    pub fn with_digest_interval(mut self, d: Duration) -> Self {
        self.digest_interval = d;
        self
    }

    pub(super) fn reincarnate(own: &mut IpamRecord) {
        own.incarnation += 1;
        own.claims.clear();
        own.votes.clear();
        own.reclaim_votes.clear();
        own.reclaimed.clear();
        own.left = false;
    }

    /// The configuration.
    pub fn config(&self) -> &IpamConfig {
        &self.cfg
    }

    /// Our name.
    pub fn name(&self) -> PeerName {
        self.me
    }

    /// Our record.
    pub fn own(&self) -> &IpamRecord {
        &self.records[&self.me]
    }

    /// Every record we know, ours included.
    pub fn records(&self) -> &BTreeMap<PeerName, IpamRecord> {
        &self.records
    }

    /// What to persist.
    pub fn state(&self) -> IpamState {
        IpamState {
            cidr: self.cfg.cidr,
            block_prefix: self.cfg.block_prefix,
            records: self.records.values().cloned().collect(),
            lost: self.lost.clone(),
        }
    }

    /// Blocks we hold (empty after a leave).
    pub fn held(&self) -> Vec<Block> {
        self.own().held()
    }

    /// Blocks we lost to a reclaim.
    pub fn lost(&self) -> &[Block] {
        &self.lost
    }

    /// Peers reclaimed in our view.
    pub fn reclaimed(&self) -> BTreeSet<PeerName> {
        reclaimed_set(&self.records, self.cfg.init_peers)
    }

    /// Peers counted for majorities: not left, not reclaimed (us included unless we left).
    pub fn members(&self) -> Vec<PeerName> {
        let gone = self.reclaimed();
        self.records
            .values()
            .filter(|r| !r.left && !gone.contains(&r.name))
            .map(|r| r.name)
            .collect()
    }

    /// (members reachable now, us included; agreeing members a claim needs).
    pub fn quorum(&self) -> (usize, usize) {
        let members = self.members();
        let q = members.len().max(self.cfg.init_peers) / 2 + 1;
        let have = members
            .iter()
            .filter(|p| **p == self.me || self.reachable.contains(p))
            .count();
        (have, q)
    }

    /// Where our claim on `b` stands.
    pub fn claim_state(&self, b: Block) -> ClaimState {
        match self.own().claims.get(&b) {
            Some(c) if c.held => ClaimState::Held,
            Some(_) => ClaimState::Pending,
            None => ClaimState::Gone,
        }
    }

    /// Whether a neighbour has acknowledged our record as it is now (after [`Ipam::leave`]).
    pub fn leave_acked(&self) -> bool {
        self.acked.is_some_and(|a| a >= self.own().stamp())
    }

    /// Free blocks left.
    pub fn free_blocks(&self) -> u64 {
        self.cfg.block_count() - self.used().len() as u64
    }

    /// Starts a claim on a free block (scanning from an offset derived from our name) and
    /// returns it, or the block we are already claiming. Watch it with [`Ipam::claim_state`].
    pub fn claim(&mut self, now: Instant) -> Result<(Block, Vec<IpamOut>), IpamError> {
        if self.leaving {
            return Err(IpamError::Disabled);
        }
        if let Some(b) = self.own().pending().first() {
            return Ok((*b, self.take_out()));
        }
        let used = self.used();
        let n = self.cfg.block_count();
        let offset = mix(self.me.0) % n;
        let Some(b) = (0..n)
            .filter_map(|i| self.cfg.block((offset + i) % n))
            .find(|b| !used.contains(b))
        else {
            return Err(IpamError::Exhausted(self.cfg.cidr));
        };
        let me = self.me;
        self.change_own(|own| {
            let seq = own.version + 1;
            own.claims.insert(b, Claim { seq, held: false });
            own.votes.insert(b, (me, seq));
        });
        self.step(now);
        Ok((b, self.take_out()))
    }

    /// Withdraws our claim on `b` if it is still pending (a held block stays).
    pub fn withdraw(&mut self, now: Instant, b: Block) -> Vec<IpamOut> {
        if self.own().claims.get(&b).is_some_and(|c| !c.held) {
            self.change_own(|own| {
                own.claims.remove(&b);
            });
        }
        self.step(now);
        self.take_out()
    }

    /// Marks `peer` as deleted from the cluster (its Kubernetes Node is gone, so the host cannot
    /// come back with its blocks): while it is unreachable we vote to reclaim it at once instead
    /// of after the grace period. A majority of hosts doing the same reclaims its blocks. A
    /// deleted peer that is still reachable is left alone (its pods may still use the addresses).
    pub fn set_deleted(&mut self, now: Instant, peer: PeerName, deleted: bool) -> Vec<IpamOut> {
        if deleted {
            self.deleted.insert(peer);
        } else {
            self.deleted.remove(&peer);
        }
        self.step(now);
        self.take_out()
    }

    /// Hands `b` back (held or pending).
    pub fn release(&mut self, now: Instant, b: Block) -> Vec<IpamOut> {
        if self.own().claims.contains_key(&b) {
            self.change_own(|own| {
                own.claims.remove(&b);
            });
        }
        self.step(now);
        self.take_out()
    }

    /// Leaves the cluster: every block handed back, our record marked left. Wait for
    /// [`Ipam::leave_acked`].
    pub fn leave(&mut self, _now: Instant) -> Vec<IpamOut> {
        self.leaving = true;
        self.acked = None;
        self.change_own(|own| {
            own.claims.clear();
            own.votes.clear();
            own.reclaim_votes.clear();
            own.reclaimed.clear();
            own.left = true;
        });
        self.take_out()
    }

    pub(super) fn take_out(&mut self) -> Vec<IpamOut> {
        let mut out = Vec::with_capacity(self.out.len() + 1);
        if std::mem::take(&mut self.dirty) {
            self.others_dirty = None;
            out.push(IpamOut::Persist);
        }
        out.append(&mut self.out);
        out
    }

    /// Applies `f` to our record; on a change bumps the version, marks the state dirty and
    /// floods the record.
    pub(super) fn change_own(&mut self, f: impl FnOnce(&mut IpamRecord)) -> bool {
        let old = &self.records[&self.me];
        let mut own = old.clone();
        f(&mut own);
        if own == *old {
            return false;
        }
        own.version += 1;
        let own = self.put_own(own);
        self.dirty = true;
        self.flood(vec![own], None);
        true
    }
}
