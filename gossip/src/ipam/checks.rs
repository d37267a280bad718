//! What a received IPAM record must pass, and the counters of what was refused. IPAM records,
//! like topology records, carry no signature of their owner: they are flooded through relays
//! and any peer holding the cluster secret may send any of them. So what is checked is what can
//! be checked whoever wrote the record:
//!
//! * it is well formed: not named 0, a nickname of at most 255 bytes, claims and votes only on
//!   blocks of our CIDR and size, no more claims than there are blocks;
//! * its stamp does not jump absurdly: incarnation and version at most [`MAX_STAMP_JUMP`] above
//!   the copy we hold (or above 0), so that a forged copy cannot take a stamp nothing could ever
//!   supersede;
//! * a copy of our own record newer than ours is ours only when we lost our state (we started
//!   without our record, and adopt the first one that comes back); otherwise someone wrote it:
//!   it is counted, its content ignored, and our stamp raised above it so that ours replaces it
//!   everywhere;
//! * a claim on a block that another live member holds, with a majority's votes, gets no vote
//!   from us ([`Ipam::held_by_other`], used by the rules) and is counted.
//!
//! `docs/security.md` ("A compromised host") says what a liar can still do.

use super::{Block, Ipam, IpamRecord};
use crate::sign::{verify, SignedRecord, Unverified, IPAM_DOMAIN};
use crate::PeerName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Most an incarnation or a version may rise from one received copy to the next. An honest
/// record rises by one per change: a million changes between two copies we see is absurd.
pub const MAX_STAMP_JUMP: u64 = 1 << 20;
/// Longest nickname accepted, in bytes.
pub const MAX_NICKNAME: usize = 255;

/// Received IPAM records refused or found suspicious, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamRejects {
    /// Malformed records (named 0, a nickname too long, claims or votes on what is not a
    /// block of ours, more claims than blocks): refused.
    pub malformed: u64,
    /// Records whose stamp jumped by more than [`MAX_STAMP_JUMP`]: refused.
    pub version_jump: u64,
    /// Copies of our own record that we did not write: ignored, our stamp raised above them.
    pub forged_own: u64,
    /// Records claiming a block that another live member holds with a majority's votes: kept
    /// (they are the owner's business) but the claim gets no vote from us.
    pub conflicting_claims: u64,
    /// Records whose signature does not verify: refused.
    #[serde(default)]
    pub signature: u64,
    /// Records signed with a key that is not their name's: refused.
    #[serde(default)]
    pub wrong_key: u64,
    /// Records without a signature for a name that has a key (or with signatures required):
    /// refused.
    #[serde(default)]
    pub unsigned: u64,
    /// Unsigned records accepted (from routers that do not sign yet).
    #[serde(default)]
    pub unsigned_accepted: u64,
}

impl Ipam {
    /// Whether `r` is well formed for our configuration.
    pub(super) fn well_formed(&self, r: &IpamRecord) -> bool {
        let blocks = self.cfg.block_count();
        !r.name.is_broadcast()
            && r.nickname.len() <= MAX_NICKNAME
            && (r.claims.len() as u64) <= blocks
            && r.claims.keys().all(|b| self.cfg.is_block(*b))
            && r.votes.keys().all(|b| self.cfg.is_block(*b))
            && r.votes.values().all(|(z, _)| !z.is_broadcast())
    }

    /// Whether `r`'s stamp stays within [`MAX_STAMP_JUMP`] of the copy we hold.
    pub(super) fn plausible_stamp(&self, r: &IpamRecord) -> bool {
        let (inc, ver) = self.records.get(&r.name).map_or((0, 0), |o| o.stamp());
        r.incarnation <= inc.saturating_add(MAX_STAMP_JUMP)
            && r.version <= ver.saturating_add(MAX_STAMP_JUMP)
    }

    /// Checks a received record; false (and counted) when it is refused.
    pub(super) fn admit(&mut self, r: &IpamRecord) -> bool {
        if !self.well_formed(r) {
            self.rejects.malformed += 1;
            return false;
        }
        // Beyond MAX_STAMP no owner counts (IpamRecord::plausible), and within it no more than
        // MAX_STAMP_JUMP above the copy we hold.
        if !r.plausible() || !self.plausible_stamp(r) {
            self.rejects.version_jump += 1;
            return false;
        }
        true
    }

    /// The owner's signature on a received record of another peer ([`crate::sign::Verifier`],
    /// `first_hand`: it came on the connection to its owner). `Ok(true)`: a copy we hold that
    /// the name's key did not sign (believed before the key was known) must give way to this
    /// one whatever their stamps. Refusals are counted.
    pub(super) fn verify(&mut self, r: &IpamRecord, first_hand: bool) -> Result<bool, ()> {
        let held = self
            .records
            .get(&r.name)
            .map(|h| (h.key, r.stamp() > h.stamp()));
        if let Some((key, newer)) = held {
            // Not newer: ignored anyway (an unsigned copy of what we hold is what a router of an
            // older version passes on).
            if !newer && (key == r.key || r.sig.is_none()) {
                return Ok(false);
            }
        }
        let checked = self.verifier.check(
            r.name,
            r.key.as_ref(),
            r.sig.as_ref(),
            IPAM_DOMAIN,
            || r.signed_body(),
            first_hand,
        );
        match checked {
            Err(Unverified::BadSignature) => self.rejects.signature += 1,
            Err(Unverified::WrongKey) => self.rejects.wrong_key += 1,
            Err(Unverified::Unsigned) => self.rejects.unsigned += 1,
            Ok(()) if r.sig.is_none() => self.rejects.unsigned_accepted += 1,
            Ok(()) => {}
        }
        checked.map_err(|_| ())?;
        let bound = self.verifier.key_of(r.name);
        Ok(matches!(held, Some((key, _)) if bound.is_some() && key != bound && r.key == bound))
    }

    /// Whether a copy of our own record carries our valid signature (always false without a
    /// key of ours: then nothing can be told).
    pub(super) fn signed_by_us(&self, r: &IpamRecord) -> bool {
        let (Some(k), Some(key), Some(sig)) = (&self.signer, r.key, r.sig) else {
            return false;
        };
        key == k.public() && verify(&key, IPAM_DOMAIN, &r.signed_body(), &sig)
    }

    /// A copy of our own record newer than ours that we cannot have written: raise our stamp
    /// above it, keeping our content, and send ours again.
    pub(super) fn outdo_forged_own(&mut self, r: &IpamRecord) {
        self.rejects.forged_own += 1;
        let mut own = self.own().clone();
        own.incarnation = own.incarnation.max(r.incarnation);
        own.version = own.version.max(r.version) + 1;
        let own = self.put_own(own);
        self.dirty = true;
        self.flood(vec![own], None);
    }

    /// The live member other than `claimant` that holds `b` with a majority's votes, if any.
    pub(super) fn held_by_other(
        &self,
        b: Block,
        claimant: PeerName,
        members: &BTreeSet<PeerName>,
        quorum: usize,
    ) -> Option<PeerName> {
        members.iter().copied().find(|y| {
            *y != claimant
                && self.records.get(y).is_some_and(|r| {
                    r.claims.get(&b).is_some_and(|c| {
                        let votes = members
                            .iter()
                            .filter(|v| {
                                (self.records.get(*v))
                                    .is_some_and(|x| x.votes.get(&b) == Some(&(*y, c.seq)))
                            })
                            .count();
                        c.held && votes >= quorum
                    })
                })
        })
    }

    /// Counts the claims of a newly accepted record on blocks another live member holds.
    pub(super) fn count_conflicts(&mut self, r: &IpamRecord) {
        let gone = self.reclaimed();
        if r.left || gone.contains(&r.name) {
            return;
        }
        let mut members: BTreeSet<PeerName> = self
            .records
            .values()
            .filter(|x| !x.left && !gone.contains(&x.name))
            .map(|x| x.name)
            .collect();
        members.insert(r.name);
        let q = members.len().max(self.cfg.init_peers) / 2 + 1;
        if r.claims
            .keys()
            .any(|b| self.held_by_other(*b, r.name, &members, q).is_some())
        {
            self.rejects.conflicting_claims += 1;
        }
    }

    /// The counters of refused and suspicious records.
    pub fn rejects(&self) -> IpamRejects {
        self.rejects
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::{Claim, IpamConfig, IpamMsg, IpamOut, IpamState};
    use std::time::{Duration, Instant};

    fn cfg() -> IpamConfig {
        IpamConfig {
            cidr: "10.32.0.0/12".parse().unwrap(),
            block_prefix: 24,
            grace: Duration::from_secs(60),
            init_peers: 1,
            state_file: None,
        }
    }

    fn block(s: &str) -> Block {
        s.parse().unwrap()
    }

    fn record(name: u64, version: u64) -> IpamRecord {
        let mut r = IpamRecord::new(PeerName(name), format!("h{name}"));
        r.version = version;
        r
    }

    fn records(rs: Vec<IpamRecord>) -> IpamMsg {
        IpamMsg::Records { records: rs }
    }

    /// Versions of `name`'s record in what `out` sends.
    fn sent(out: &[IpamOut], name: u64) -> Vec<u64> {
        out.iter()
            .filter_map(|o| match o {
                IpamOut::Send {
                    msg: IpamMsg::Records { records },
                    ..
                } => Some(records),
                _ => None,
            })
            .flatten()
            .filter(|r| r.name == PeerName(name))
            .map(|r| r.version)
            .collect()
    }

    /// Host 1, restarted from a state file holding its record (version 10).
    fn restarted(now: Instant) -> Ipam {
        let state = IpamState {
            cidr: cfg().cidr,
            block_prefix: 24,
            records: vec![record(1, 10)],
            lost: Vec::new(),
        };
        let mut i = Ipam::new(PeerName(1), "h1".into(), cfg(), Some(state), now).unwrap();
        i.connected(now, PeerName(2));
        i
    }

    #[test]
    fn malformed_and_jumping_records_are_refused_and_counted() {
        let now = Instant::now();
        let mut i = restarted(now);
        let mut outside = record(3, 1);
        outside
            .claims
            .insert(block("10.48.0.0/24"), Claim { seq: 1, held: true });
        let mut small = record(4, 1);
        small.votes.insert(block("10.32.0.0/25"), (PeerName(4), 1));
        let mut nick = record(5, 1);
        nick.nickname = "x".repeat(300);
        let mut no_one = record(6, 1);
        no_one.votes.insert(block("10.32.0.0/24"), (PeerName(0), 1));
        let forged = vec![record(0, 1), outside, small, nick, no_one];
        i.on_message(now, PeerName(2), records(forged));
        assert_eq!(i.rejects().malformed, 5);
        assert_eq!(i.records().len(), 1, "{:?}", i.records().keys());

        // A first copy may start anywhere below the bound; later ones rise by at most the bound.
        i.on_message(
            now,
            PeerName(2),
            records(vec![record(3, MAX_STAMP_JUMP + 1)]),
        );
        assert_eq!(i.rejects().version_jump, 1);
        i.on_message(now, PeerName(2), records(vec![record(3, 1000)]));
        assert_eq!(i.records()[&PeerName(3)].version, 1000);
        let mut reborn = record(3, 1001);
        reborn.incarnation = MAX_STAMP_JUMP + 1;
        let far = record(3, 1000 + MAX_STAMP_JUMP + 1);
        i.on_message(now, PeerName(2), records(vec![reborn, far]));
        assert_eq!(i.rejects().version_jump, 3);
        assert_eq!(i.records()[&PeerName(3)].version, 1000);
        i.on_message(
            now,
            PeerName(2),
            records(vec![record(3, 1000 + MAX_STAMP_JUMP)]),
        );
        assert_eq!(i.records()[&PeerName(3)].version, 1000 + MAX_STAMP_JUMP);
        assert_eq!(i.rejects().forged_own, 0);
    }

    #[test]
    fn a_newer_copy_of_our_record_is_ignored_unless_we_lost_our_state() {
        let now = Instant::now();
        let b = block("10.32.9.0/24");
        let mut forged = record(1, 50);
        forged.claims.insert(
            b,
            Claim {
                seq: 49,
                held: true,
            },
        );
        forged.votes.insert(b, (PeerName(1), 49));

        // With our record on disk, a newer copy is someone else's: its claim is not ours, our
        // version goes above it and ours is sent again.
        let mut i = restarted(now);
        let out = i.on_message(now, PeerName(2), records(vec![forged.clone()]));
        assert_eq!(i.rejects().forged_own, 1);
        assert!(i.own().claims.is_empty() && i.own().votes.is_empty());
        assert_eq!(i.own().stamp(), (0, 51));
        assert_eq!(sent(&out, 1), vec![51]);
        assert!(out.contains(&IpamOut::Persist));

        // Without it (a lost state file), the first newer copy is adopted, later ones are not.
        let mut fresh = Ipam::new(PeerName(1), "h1".into(), cfg(), None, now).unwrap();
        fresh.connected(now, PeerName(2));
        fresh.on_message(now, PeerName(2), records(vec![forged.clone()]));
        assert_eq!(fresh.rejects().forged_own, 0);
        assert_eq!(
            fresh.own().claims[&b],
            Claim {
                seq: 49,
                held: true
            }
        );
        let mut again = forged;
        again.version = 80;
        again.claims.clear();
        fresh.on_message(now, PeerName(2), records(vec![again]));
        assert_eq!(fresh.rejects().forged_own, 1);
        assert!(fresh.own().claims.contains_key(&b));
        assert!(fresh.own().version > 80);
    }

    #[test]
    fn a_claim_on_a_block_another_live_host_holds_gets_no_vote() {
        let now = Instant::now();
        let b = block("10.32.7.0/24");
        // Host 3 holds b with the votes of 3, 4 and 6; host 2 (the smallest name, which honest
        // voters prefer between two held claims) says it holds b too, with only its own vote.
        let mut holder = record(3, 5);
        holder.claims.insert(b, Claim { seq: 4, held: true });
        let mut voters = vec![];
        for v in [3, 4, 6] {
            let mut r = if v == 3 { holder.clone() } else { record(v, 5) };
            r.votes.insert(b, (PeerName(3), 4));
            voters.push(r);
        }
        let mut liar = record(2, 5);
        liar.claims.insert(b, Claim { seq: 1, held: true });
        liar.votes.insert(b, (PeerName(2), 1));
        let mut all = voters;
        all.push(liar);
        let mut i = Ipam::new(PeerName(5), "h5".into(), cfg(), None, now).unwrap();
        i.connected(now, PeerName(2));
        i.on_message(now, PeerName(2), records(all));
        assert_eq!(i.own().votes.get(&b), Some(&(PeerName(3), 4)));
        assert_eq!(i.rejects().conflicting_claims, 1);
        // The liar's claim keeps b used (it is its record), so we never claim b ourselves.
        let (mine, _) = i.claim(now).unwrap();
        assert_ne!(mine, b);
    }
}
