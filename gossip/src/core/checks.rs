//! What a received topology record must pass before it is merged. Records are flooded through
//! relays and every peer holding the cluster secret may send any record, so the checks that hold
//! whoever wrote it come first: well formed, a version not absurdly far ahead, and a record about
//! ourselves that we did not write is counted (our own record is raised above it so that ours
//! replaces it everywhere). Then the owner's signature ([`crate::sign`]): a record of another
//! peer must be signed with its name's key, or, from a router that does not sign yet, carry no
//! signature while its name has no key and signatures are not required. `docs/security.md` ("A
//! compromised host") says what a liar can still do.

use super::GossipCore;
use crate::sign::{SignedRecord, Unverified, TOPOLOGY_DOMAIN};
use crate::topology::PeerRecord;
use crate::PeerName;
use std::time::{Duration, Instant};

/// Longest nickname accepted, in bytes (host names are at most 64).
pub const MAX_NICKNAME: usize = 255;
/// Most connections a record may list (far above any real mesh's degree; the 64 KiB message
/// limit allows about 1,500).
pub const MAX_CONNS: usize = 4096;
/// How far ahead of our wall clock a version may be. Routers start their version at the Unix
/// time in milliseconds and raise it by one per change, so an honest version is close to the
/// clock of the host that wrote it; this leaves a day for clocks that disagree. A version far
/// beyond it would be kept forever (nothing could ever supersede it).
pub const MAX_VERSION_AHEAD: Duration = Duration::from_secs(24 * 3600);

/// Most pods a record may list (Kubernetes' default is 110 per node; a record must also fit the
/// 60 KiB message bound, which [`GossipCore::set_pods`] keeps to).
pub const MAX_PODS: usize = 4096;
/// Longest pod namespace or name accepted, in bytes (Kubernetes allows 63 and 253).
pub const MAX_POD_NAME: usize = 253;
/// Most addresses a pod may list (one per family, and room to spare).
pub const MAX_POD_ADDRS: usize = 8;

/// Whether a record's pods are within the bounds above, each with a non-empty identity.
pub fn pods_well_formed(pods: &[crate::topology::PodEntry]) -> bool {
    pods.len() <= MAX_PODS
        && pods.iter().all(|p| {
            !p.namespace.is_empty()
                && !p.name.is_empty()
                && p.namespace.len() <= MAX_POD_NAME
                && p.name.len() <= MAX_POD_NAME
                && p.addrs.len() <= MAX_POD_ADDRS
        })
}

/// Why a received record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Named 0 (the reserved broadcast name), a nickname too long, too many connections, pods
    /// beyond [`pods_well_formed`]'s bounds.
    Malformed,
    /// A version too far ahead of our clock.
    Version,
}

impl GossipCore {
    /// Tells the core the wall clock: `unix_ms` is the Unix time in milliseconds at `now`.
    /// Without it versions are not checked against a clock (tests, simulations).
    pub fn with_wall_clock(mut self, unix_ms: u64, now: Instant) -> Self {
        self.wall_clock = Some((unix_ms, now));
        self
    }

    /// The highest version a record may carry at `now`, if the core knows the clock.
    pub(super) fn max_version(&self, now: Instant) -> Option<u64> {
        let (ms, at) = self.wall_clock?;
        let elapsed = now.saturating_duration_since(at) + MAX_VERSION_AHEAD;
        Some(ms.saturating_add(elapsed.as_millis() as u64))
    }

    /// Checks a received record (from the connection to `from`), counting it when refused or
    /// when it is about us but not ours.
    pub(super) fn admit(&mut self, now: Instant, from: PeerName, r: &PeerRecord) -> bool {
        match self.check(now, r) {
            Err(Refused::Malformed) => {
                self.stats.rejected_malformed += 1;
                return false;
            }
            Err(Refused::Version) => {
                self.stats.rejected_version += 1;
                return false;
            }
            Ok(()) => {}
        }
        let ours = self.topology.ours();
        if r.name == ours.name && r.version >= ours.version && r != ours {
            // Not a copy of ours from before a restart (its version would be below ours, which
            // started at our start time): someone wrote it. The merge raises ours above it.
            self.stats.foreign_own += 1;
        }
        if r.name == ours.name {
            return true;
        }
        self.verify(from, r)
    }

    /// The signature checks of [`crate::sign::Verifier`], on a record about someone else. A copy
    /// we hold that its name's key did not sign (believed before the key was known) gives way to
    /// a record that key signed, whatever their versions.
    fn verify(&mut self, from: PeerName, r: &PeerRecord) -> bool {
        let held_key = self.topology.get(r.name).map(|h| (h.key, r.supersedes(h)));
        if let Some((key, supersedes)) = held_key {
            if !supersedes && (key == r.key || r.sig.is_none()) {
                // The merge ignores it: no signature to check. (An unsigned copy of what we hold
                // is what a router of an older version passes on: it drops fields it does not
                // know.)
                return true;
            }
        }
        let checked = self.verifier.check(
            r.name,
            r.key.as_ref(),
            r.sig.as_ref(),
            TOPOLOGY_DOMAIN,
            || r.signed_body(),
            from == r.name,
        );
        match checked {
            Err(Unverified::BadSignature) => self.stats.rejected_signature += 1,
            Err(Unverified::WrongKey) => self.stats.rejected_wrong_key += 1,
            Err(Unverified::Unsigned) => self.stats.rejected_unsigned += 1,
            Ok(()) if r.sig.is_none() => self.stats.unsigned_accepted += 1,
            Ok(()) => {}
        }
        if checked.is_err() {
            return false;
        }
        if let (Some((held, _)), Some(bound)) = (held_key, self.verifier.key_of(r.name)) {
            if held != Some(bound) && r.key == Some(bound) {
                self.topology.remove_all(&[r.name]);
            }
        }
        true
    }

    fn check(&self, now: Instant, r: &PeerRecord) -> Result<(), Refused> {
        if r.name.is_broadcast()
            || r.nickname.len() > MAX_NICKNAME
            || r.conns.len() > MAX_CONNS
            || !pods_well_formed(&r.pods)
        {
            return Err(Refused::Malformed);
        }
        if self.max_version(now).is_some_and(|max| r.version > max) {
            return Err(Refused::Version);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::core::{GossipCore, GossipMsg, Output};
    use crate::topology::tests::{conn, rec};
    use crate::PeerName;
    use std::time::{Duration, Instant};

    const CLOCK_MS: u64 = 1_700_000_000_000;

    fn delta(records: Vec<crate::topology::PeerRecord>) -> GossipMsg {
        GossipMsg::Delta { records }
    }

    /// Records of `name` that `out` sends to anyone.
    fn sent_versions(out: &[Output], name: u64) -> Vec<u64> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send {
                    msg: GossipMsg::Delta { records } | GossipMsg::Full { records, .. },
                    ..
                } => Some(records),
                _ => None,
            })
            .flatten()
            .filter(|r| r.name == PeerName(name))
            .map(|r| r.version)
            .collect()
    }

    fn pod(ns: &str, name: String) -> crate::topology::PodEntry {
        crate::topology::PodEntry {
            namespace: ns.into(),
            name,
            addrs: vec!["10.32.0.9".parse().unwrap()],
        }
    }

    #[test]
    fn pods_beyond_the_bounds_are_refused_and_ours_are_cut_to_fit_a_message() {
        let now = Instant::now();
        let mut c = GossipCore::new(rec(1, CLOCK_MS, &[]), 1, Duration::from_secs(1), now)
            .with_max_message_bytes(4096)
            .with_own_holddown(Duration::ZERO);
        c.connected(now, PeerName(2), conn(2, true));
        let merged = c.stats().records_merged;
        let mut too_many = rec(3, CLOCK_MS, &[2]);
        too_many.pods = (0..5000).map(|i| pod("x", format!("p{i}"))).collect();
        let mut no_name = rec(4, CLOCK_MS, &[2]);
        no_name.pods = vec![pod("x", String::new())];
        let mut fine = rec(2, CLOCK_MS, &[1]);
        fine.pods = vec![pod("x", "a".into())];
        c.on_message(now, PeerName(2), delta(vec![too_many, no_name, fine]));
        assert_eq!(c.stats().rejected_malformed, 2);
        assert_eq!(c.stats().records_merged, merged + 1);
        assert_eq!(c.topology().get(PeerName(2)).unwrap().pods.len(), 1);

        // 200 pods do not fit 4 KiB: ours keeps what fits and says how many were left out.
        let (out, left_out) = c.set_pods(
            now,
            (0..200).map(|i| pod("x", format!("p{i:03}"))).collect(),
        );
        let kept = c.topology().ours().pods.len();
        assert!(kept > 10 && kept < 200, "{kept}");
        assert_eq!(left_out, 200 - kept);
        assert!(!sent_versions(&out, 1).is_empty(), "our new record is sent");
        assert!(crate::topology::json_len(c.topology().ours()) < 4096);
        // The same pods again: nothing changes, nothing is sent.
        let (out, _) = c.set_pods(
            now,
            (0..200).map(|i| pod("x", format!("p{i:03}"))).collect(),
        );
        assert!(sent_versions(&out, 1).is_empty());
    }

    #[test]
    fn forged_topology_records_are_refused_counted_or_outdone() {
        let now = Instant::now();
        let mut c = GossipCore::new(rec(1, CLOCK_MS, &[]), 1, Duration::from_secs(1), now)
            .with_wall_clock(CLOCK_MS, now);
        c.connected(now, PeerName(2), conn(2, true));
        c.on_message(now, PeerName(2), delta(vec![rec(2, CLOCK_MS, &[1])]));
        let merged = c.stats().records_merged;

        // Malformed: the reserved name, a nickname of 300 bytes, 5,000 connections.
        let mut long_nick = rec(3, CLOCK_MS, &[2]);
        long_nick.nickname = "x".repeat(300);
        let many: Vec<u64> = (10..5010).collect();
        let forged = vec![rec(0, CLOCK_MS, &[]), long_nick, rec(4, CLOCK_MS, &many)];
        c.on_message(now, PeerName(2), delta(forged));
        assert_eq!(c.stats().rejected_malformed, 3);
        assert_eq!(c.stats().records_merged, merged);

        // A version two days ahead of our clock (and u64::MAX): refused, a day ahead passes.
        let day = 24 * 3600 * 1000;
        let ahead = vec![rec(3, CLOCK_MS + 2 * day, &[2]), rec(5, u64::MAX, &[2])];
        c.on_message(now, PeerName(2), delta(ahead));
        assert_eq!(c.stats().rejected_version, 2);
        assert_eq!(c.stats().records_merged, merged);
        c.on_message(
            now,
            PeerName(2),
            delta(vec![rec(3, CLOCK_MS + day / 2, &[2])]),
        );
        assert_eq!(c.stats().records_merged, merged + 1);
        // The clock moves on: what was too far ahead an hour ago passes later.
        let later = now + Duration::from_secs(2 * 24 * 3600);
        c.on_message(
            later,
            PeerName(2),
            delta(vec![rec(3, CLOCK_MS + 2 * day, &[2])]),
        );
        assert_eq!(c.stats().rejected_version, 2);

        // Our own record, written by someone else (our run id, a newer version, other
        // connections): counted, and ours goes out above it.
        let mut mine = rec(1, CLOCK_MS + 1000, &[2, 7]);
        mine.nickname = "liar".into();
        let out = c.on_message(later, PeerName(2), delta(vec![mine]));
        assert_eq!(c.stats().foreign_own, 1);
        let ours = c.topology().ours().clone();
        assert!(ours.version > CLOCK_MS + 1000);
        assert_eq!(ours.nickname, "h1");
        assert_eq!(ours.conns, vec![conn(2, true)]);
        assert_eq!(sent_versions(&out, 1), vec![ours.version]);
        // Our own record from the future: refused, ours unchanged.
        let out = c.on_message(later, PeerName(2), delta(vec![rec(1, u64::MAX, &[2])]));
        assert_eq!(c.stats().rejected_version, 3);
        assert_eq!(c.topology().ours().version, ours.version);
        assert!(sent_versions(&out, 1).is_empty());
        // A stale copy of ours (a lower version) is nobody's forgery.
        c.on_message(later, PeerName(2), delta(vec![rec(1, CLOCK_MS - 5, &[])]));
        assert_eq!(c.stats().foreign_own, 1);
    }

    #[test]
    fn without_a_clock_versions_are_not_bounded() {
        let now = Instant::now();
        let mut c = GossipCore::new(rec(1, 100, &[]), 1, Duration::from_secs(1), now);
        c.connected(now, PeerName(2), conn(2, true));
        c.on_message(now, PeerName(2), delta(vec![rec(2, u64::MAX - 1, &[1])]));
        assert_eq!(c.stats().rejected_version, 0);
        assert_eq!(c.topology().get(PeerName(2)).unwrap().version, u64::MAX - 1);
    }
}
