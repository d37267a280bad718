//! Anti-entropy: bucket hashes, then digests of the buckets that differ, then the records (or
//! requests for them) each side lacks. The opener ([`GossipMsg::Summary`]) is sent by
//! [`GossipCore::tick`].

use super::msg::chunk;
use super::{DigestEntry, GossipCore, GossipMsg, Output};
use crate::topology::{bucket_of, json_len, SUMMARY_BUCKETS};
use crate::PeerName;
use std::collections::{BTreeMap, BTreeSet, HashMap};

impl GossipCore {
    /// Our bucket summaries folded to 32 bits, as [`GossipMsg::Buckets`] carries them.
    pub(super) fn bucket_hashes(&self) -> Vec<u32> {
        self.topology
            .bucket_summaries()
            .iter()
            .map(|h| (h ^ (h >> 32)) as u32)
            .collect()
    }

    pub(super) fn on_buckets(&mut self, from: PeerName, hashes: &[u32], out: &mut Vec<Output>) {
        if hashes.len() != SUMMARY_BUCKETS {
            return;
        }
        let ours = self.bucket_hashes();
        let differ: Vec<usize> = (0..SUMMARY_BUCKETS)
            .filter(|&b| ours[b] != hashes[b])
            .collect();
        if differ.is_empty() {
            return;
        }
        let mut by_bucket: BTreeMap<usize, Vec<DigestEntry>> =
            differ.iter().map(|&b| (b, Vec::new())).collect();
        for r in self.topology.records() {
            if let Some(list) = by_bucket.get_mut(&bucket_of(r.name)) {
                list.push(DigestEntry::of(r));
            }
        }
        let items = by_bucket.into_iter().map(|(b, entries)| {
            let len =
                json_len(&(b as u16)) + entries.iter().map(|e| json_len(e) + 1).sum::<usize>();
            ((b as u16, entries), len + 1)
        });
        let groups = chunk(
            items,
            self.overhead.digest,
            self.max_message_bytes,
            &mut self.stats.oversize,
        );
        for group in groups {
            let mut buckets = Vec::with_capacity(group.len());
            let mut entries = Vec::new();
            for (b, list) in group {
                buckets.push(b);
                entries.extend(list);
            }
            self.send(out, from, GossipMsg::Digest { buckets, entries });
        }
    }

    pub(super) fn on_digest(
        &mut self,
        from: PeerName,
        buckets: &[u16],
        entries: &[DigestEntry],
        out: &mut Vec<Output>,
    ) {
        let covered: BTreeSet<usize> = buckets
            .iter()
            .map(|b| *b as usize)
            .filter(|b| *b < SUMMARY_BUCKETS)
            .collect();
        let theirs: HashMap<PeerName, (u64, u64)> = entries
            .iter()
            .filter(|e| covered.contains(&bucket_of(e.name)))
            .map(|e| (e.name, (e.version, e.uid)))
            .collect();
        self.refresh_control();
        let mut push: Vec<(u32, PeerName)> = self
            .topology
            .records()
            .filter(|r| covered.contains(&bucket_of(r.name)))
            .filter(|r| {
                theirs
                    .get(&r.name)
                    .is_none_or(|&theirs| theirs < (r.version, r.uid))
            })
            .map(|r| (self.control.hops(r.name).unwrap_or(u32::MAX), r.name))
            .collect();
        // Breadth-first from us, like a full state, so that each record arrives after the ones
        // that connect it.
        push.sort_unstable();
        let push: Vec<PeerName> = push.into_iter().map(|(_, n)| n).collect();
        let mut want: Vec<(PeerName, usize)> = theirs
            .iter()
            .filter(|(name, &v)| {
                self.topology
                    .get(**name)
                    .is_none_or(|r| (r.version, r.uid) < v)
            })
            .map(|(name, _)| (*name, json_len(&name.0)))
            .collect();
        want.sort_unstable();
        if push.is_empty() && want.is_empty() {
            return;
        }
        self.stats.anti_entropy_mismatches += 1;
        self.send_records(from, &push, false, out);
        let groups = chunk(
            want,
            self.overhead.request,
            self.max_message_bytes,
            &mut self.stats.oversize,
        );
        for names in groups {
            self.send(out, from, GossipMsg::Request { names });
        }
    }
}
