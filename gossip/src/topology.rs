//! The topology: every peer's versioned record of its own connections, and the merge that makes
//! all views converge.
//!
//! Each peer owns exactly one [`PeerRecord`]: its name, its run id (`uid`), a version and the list
//! of peers it is connected to. Only the owner changes its record, and every change raises the
//! version. Records travel as whole values; a receiver keeps, per name, the record that comes
//! last in the total order of [`PeerRecord::supersedes`] (version first, then uid). Merging is
//! therefore a pointwise maximum: commutative, associative and idempotent, so any delivery order,
//! duplication or regrouping of records ends in the same view.
//!
//! Garbage collection ([`Topology::gc`]) is outside that lattice: it deletes the records of peers
//! that cannot be reached from us over connections both ends report. A stale record that comes
//! back later (a slow message, a peer that was partitioned away) is merged again, found
//! unreachable and collected again; if it is reachable it describes a live peer and belongs in the
//! view. See `docs/gossip.md`.

use crate::sign::{HostKey, PublicKey, Signature, SignedRecord, TOPOLOGY_DOMAIN};
use crate::PeerName;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Number of buckets the view is split into for anti-entropy (see
/// [`Topology::bucket_summaries`]).
pub const SUMMARY_BUCKETS: usize = 64;

/// One connection in a peer's record.
///
/// On the wire it is the array `[peer, "addr", usable]`, which keeps a record with hundreds of
/// connections well below the control channel's message limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "(u64, SocketAddr, bool)", from = "(u64, SocketAddr, bool)")]
pub struct ConnEntry {
    /// The peer at the other end.
    pub peer: PeerName,
    /// Where the record's owner reaches (or sees) that peer's control port: other peers dial it
    /// to discover the peer.
    pub addr: SocketAddr,
    /// The data path is confirmed (the peer answers UDP heartbeats). Only usable connections
    /// carry traffic ([`crate::routes::Routes::compute`]).
    pub usable: bool,
}

impl From<ConnEntry> for (u64, SocketAddr, bool) {
    fn from(c: ConnEntry) -> Self {
        (c.peer.0, c.addr, c.usable)
    }
}

impl From<(u64, SocketAddr, bool)> for ConnEntry {
    fn from((peer, addr, usable): (u64, SocketAddr, bool)) -> Self {
        ConnEntry {
            peer: PeerName(peer),
            addr,
            usable,
        }
    }
}

/// Serde helpers that write a [`PeerName`] as a plain number.
pub(crate) mod name_as_u64 {
    use crate::PeerName;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(name: &PeerName, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(name.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PeerName, D::Error> {
        u64::deserialize(d).map(PeerName)
    }
}

/// One pod of the record's owner, as NetworkPolicy needs it on every host: its identity
/// (`K8S_POD_NAMESPACE`, `K8S_POD_NAME` given at CNI ADD) and its addresses. On the wire it is the
/// array `["namespace", "name", ["10.32.0.5", ...]]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(
    into = "(String, String, Vec<IpAddr>)",
    from = "(String, String, Vec<IpAddr>)"
)]
pub struct PodEntry {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// Its addresses.
    pub addrs: Vec<IpAddr>,
}

impl From<PodEntry> for (String, String, Vec<IpAddr>) {
    fn from(p: PodEntry) -> Self {
        (p.namespace, p.name, p.addrs)
    }
}

impl From<(String, String, Vec<IpAddr>)> for PodEntry {
    fn from((namespace, name, addrs): (String, String, Vec<IpAddr>)) -> Self {
        PodEntry {
            namespace,
            name,
            addrs,
        }
    }
}

/// What one peer says about itself: who it is, whom it is connected to, and which pods it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// The owner's stable name.
    #[serde(with = "name_as_u64")]
    pub name: PeerName,
    /// The owner's run id: a new value on every start.
    pub uid: u64,
    /// Raised by the owner on every change. The router starts it at the Unix time in
    /// milliseconds, so the record of a restarted peer usually supersedes its old one at once.
    pub version: u64,
    /// The owner's human-friendly name (host name).
    pub nickname: String,
    /// The owner's connections, sorted by peer, at most one per peer.
    pub conns: Vec<ConnEntry>,
    /// The owner's pods that have an identity, sorted. Absent on the wire when empty, so that a
    /// record without pods is exactly what routers before NetworkPolicy wrote and read (they
    /// ignore the field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodEntry>,
    /// The owner's public key ([`crate::sign`]). Absent from records of routers that do not
    /// sign (older versions), like [`sig`](Self::sig).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PublicKey>,
    /// The owner's signature of the record's compact JSON without this field
    /// ([`SignedRecord::signed_body`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<Signature>,
}

impl PeerRecord {
    /// A record without connections.
    pub fn new(name: PeerName, uid: u64, version: u64, nickname: impl Into<String>) -> Self {
        PeerRecord {
            name,
            uid,
            version,
            nickname: nickname.into(),
            conns: Vec::new(),
            pods: Vec::new(),
            key: None,
            sig: None,
        }
    }

    /// True when `self` replaces `other` (a record of the same peer) in a view.
    ///
    /// The order is `(version, uid)`; records that tie on both (which honest peers never
    /// produce) are ordered by their connections and nickname, so that the order stays total and
    /// merging deterministic whatever is received.
    pub fn supersedes(&self, other: &PeerRecord) -> bool {
        (
            self.version,
            self.uid,
            &self.conns,
            &self.nickname,
            &self.pods,
        ) > (
            other.version,
            other.uid,
            &other.conns,
            &other.nickname,
            &other.pods,
        )
    }

    /// The owner's connection to `peer`, if it lists one.
    pub fn conn(&self, peer: PeerName) -> Option<&ConnEntry> {
        self.conns
            .binary_search_by_key(&peer, |c| c.peer)
            .ok()
            .map(|i| &self.conns[i])
    }

    /// The record's contribution to [`Topology::summary`]: a fixed hash of `(name, uid,
    /// version)`, the same on every peer and platform.
    pub fn summary_hash(&self) -> u64 {
        mix(mix(mix(self.name.0 ^ 0x5157_4546_5447_4f53) ^ self.uid) ^ self.version)
    }

    /// Sorts the connections by peer and drops duplicates, self-connections and the reserved
    /// name 0, so that equal content compares equal.
    fn normalize(&mut self) {
        let me = self.name;
        self.conns
            .retain(|c| c.peer != me && !c.peer.is_broadcast());
        if !self.conns.is_sorted_by(|a, b| a.peer < b.peer) {
            self.conns.sort();
            self.conns.dedup_by_key(|c| c.peer);
        }
        if !self.pods.is_sorted() {
            self.pods.sort();
        }
    }
}

impl SignedRecord for PeerRecord {
    const DOMAIN: &'static [u8] = TOPOLOGY_DOMAIN;

    fn auth(&mut self) -> (&mut Option<PublicKey>, &mut Option<Signature>) {
        (&mut self.key, &mut self.sig)
    }
}

/// The anti-entropy bucket of a peer name, in `0..SUMMARY_BUCKETS`.
pub fn bucket_of(name: PeerName) -> usize {
    (mix(name.0) >> (64 - SUMMARY_BUCKETS.trailing_zeros())) as usize
}

/// The splitmix64 finaliser: a fixed, well-mixing 64-bit permutation.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Bytes of `value` as compact JSON, counted without building the string.
pub(crate) fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing our types to a counter cannot fail: no maps with non-string keys, no I/O errors.
    let _ = serde_json::to_writer(&mut c, value);
    c.0
}

#[derive(Debug, Clone)]
struct Held {
    record: PeerRecord,
    /// `json_len(&record)`, kept for message sizing and memory accounting.
    json_len: usize,
}

/// One peer's view of the whole mesh: the newest record it knows of every reachable peer,
/// including its own.
#[derive(Debug, Clone)]
pub struct Topology {
    ours: PeerName,
    records: BTreeMap<PeerName, Held>,
    buckets: [u64; SUMMARY_BUCKETS],
    generation: u64,
    bytes: usize,
    /// Signs our record on every change, when set.
    signer: Option<Arc<HostKey>>,
}

impl Topology {
    /// A view holding only our own record (connections are normalised: sorted, deduplicated).
    pub fn new(mut ours: PeerRecord) -> Self {
        ours.normalize();
        let mut t = Topology {
            ours: ours.name,
            records: BTreeMap::new(),
            buckets: [0; SUMMARY_BUCKETS],
            generation: 0,
            bytes: 0,
            signer: None,
        };
        t.put(ours);
        t
    }

    /// Signs our record with `key` now and on every later change.
    pub fn set_signer(&mut self, key: Arc<HostKey>) {
        self.signer = Some(key);
        let ours = self.ours().clone();
        self.put_ours(ours);
    }

    /// Replaces our record, signed when we have a key.
    fn put_ours(&mut self, mut r: PeerRecord) -> PeerRecord {
        if let Some(k) = &self.signer {
            r.sign(k);
        }
        self.put(r.clone());
        r
    }

    /// Our own record.
    pub fn ours(&self) -> &PeerRecord {
        &self
            .records
            .get(&self.ours)
            .expect("the view always holds our own record")
            .record
    }

    /// Our name.
    pub fn our_name(&self) -> PeerName {
        self.ours
    }

    /// Replaces our connection list. When it differs from the current one, raises our version and
    /// returns our new record (to send to others); otherwise returns `None`.
    pub fn set_our_conns(&mut self, conns: Vec<ConnEntry>) -> Option<PeerRecord> {
        let mut new = self.ours().clone();
        new.conns = conns;
        new.normalize();
        if new.conns == self.ours().conns {
            return None;
        }
        new.version = new.version.saturating_add(1);
        Some(self.put_ours(new))
    }

    /// Replaces our pods; returns our new record when they changed (its version raised).
    pub fn set_our_pods(&mut self, pods: Vec<PodEntry>) -> Option<PeerRecord> {
        let mut new = self.ours().clone();
        new.pods = pods;
        new.normalize();
        if new.pods == self.ours().pods {
            return None;
        }
        new.version = new.version.saturating_add(1);
        Some(self.put_ours(new))
    }

    /// Merges records received from others and returns those that changed our view, sorted by
    /// name (the newest one per name): the ones to pass on.
    ///
    /// A record that does not supersede the one we hold is ignored. A record about ourselves
    /// that is not exactly ours, with another uid (a copy from before our restart) or a version at
    /// least ours, makes us raise our version above it if needed; our own record is then part of
    /// the result so that it reaches whoever still holds the stale copy. Records named 0 are
    /// ignored.
    pub fn merge(&mut self, records: impl IntoIterator<Item = PeerRecord>) -> Vec<PeerRecord> {
        let mut changed: Vec<PeerName> = Vec::new();
        for mut r in records {
            if r.name.is_broadcast() {
                continue;
            }
            r.normalize();
            if r.name == self.ours {
                let ours = self.ours();
                if r == *ours || (r.uid == ours.uid && r.version < ours.version) {
                    continue;
                }
                if r.version >= ours.version {
                    let mut bumped = ours.clone();
                    bumped.version = r.version.saturating_add(1);
                    self.put_ours(bumped);
                }
                changed.push(self.ours);
                continue;
            }
            if let Some(h) = self.records.get(&r.name) {
                if !r.supersedes(&h.record) {
                    continue;
                }
            }
            changed.push(r.name);
            self.put(r);
        }
        changed.sort_unstable();
        changed.dedup();
        changed
            .into_iter()
            .filter_map(|n| self.get(n).cloned())
            .collect()
    }

    /// Drops the records of peers we cannot reach over connections that both ends list (usable
    /// or not), and returns their names, sorted.
    pub fn gc(&mut self) -> Vec<PeerName> {
        let reachable = self.reachable_over_connections();
        let gone: Vec<PeerName> = self
            .records
            .keys()
            .copied()
            .filter(|n| !reachable.contains_key(n))
            .collect();
        self.remove_all(&gone);
        gone
    }

    /// Removes the named records (never ours) and returns them. Used by [`gc`](Self::gc) and by
    /// callers that already know the reachable set.
    pub(crate) fn remove_all(&mut self, names: &[PeerName]) -> Vec<PeerRecord> {
        let mut removed = Vec::with_capacity(names.len());
        for n in names {
            if *n == self.ours {
                continue;
            }
            if let Some(h) = self.records.remove(n) {
                self.account(&h, false);
                self.generation += 1;
                removed.push(h.record);
            }
        }
        removed
    }

    /// Breadth-first search from us over symmetric connections; the value is the hop count.
    fn reachable_over_connections(&self) -> BTreeMap<PeerName, u32> {
        let mut seen = BTreeMap::new();
        let mut queue = VecDeque::new();
        seen.insert(self.ours, 0);
        queue.push_back((self.ours, 0));
        while let Some((u, d)) = queue.pop_front() {
            let Some(ru) = self.get(u) else { continue };
            for c in &ru.conns {
                if seen.contains_key(&c.peer) {
                    continue;
                }
                if self.get(c.peer).is_some_and(|rv| rv.conn(u).is_some()) {
                    seen.insert(c.peer, d + 1);
                    queue.push_back((c.peer, d + 1));
                }
            }
        }
        seen
    }

    /// The record of `name`.
    pub fn get(&self, name: PeerName) -> Option<&PeerRecord> {
        self.records.get(&name).map(|h| &h.record)
    }

    /// Bytes of the record of `name` as compact JSON.
    pub(crate) fn record_len(&self, name: PeerName) -> Option<usize> {
        self.records.get(&name).map(|h| h.json_len)
    }

    /// Every record, ours included, in ascending name order.
    pub fn records(&self) -> impl Iterator<Item = &PeerRecord> {
        self.records.values().map(|h| &h.record)
    }

    /// Number of records, ours included.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Never true: the view always holds our own record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// A cheap summary of the whole view: the wrapping sum of [`PeerRecord::summary_hash`] over
    /// all records. Two views with the same records at the same versions have the same summary;
    /// it is maintained incrementally, so reading it costs [`SUMMARY_BUCKETS`] additions.
    pub fn summary(&self) -> u64 {
        self.buckets.iter().fold(0, |a, b| a.wrapping_add(*b))
    }

    /// The summary split by [`bucket_of`] the record's name: anti-entropy compares these to find
    /// which part of two views differs.
    pub fn bucket_summaries(&self) -> [u64; SUMMARY_BUCKETS] {
        self.buckets
    }

    /// Incremented on every change of the view (for caching routes).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Sum of the JSON sizes of the records held: the size of a full-state transfer, and an
    /// estimate of the view's memory.
    pub fn approx_bytes(&self) -> usize {
        self.bytes
    }

    fn put(&mut self, record: PeerRecord) {
        let held = Held {
            json_len: json_len(&record),
            record,
        };
        self.account(&held, true);
        if let Some(old) = self.records.insert(held.record.name, held) {
            self.account(&old, false);
        }
        self.generation += 1;
    }

    fn account(&mut self, h: &Held, add: bool) {
        let b = &mut self.buckets[bucket_of(h.record.name)];
        let hash = h.record.summary_hash();
        if add {
            *b = b.wrapping_add(hash);
            self.bytes += h.json_len;
        } else {
            *b = b.wrapping_sub(hash);
            self.bytes -= h.json_len;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn addr(n: u64) -> SocketAddr {
        SocketAddr::from(([10, 0, (n >> 8) as u8, n as u8], 6783))
    }

    pub(crate) fn conn(peer: u64, usable: bool) -> ConnEntry {
        ConnEntry {
            peer: PeerName(peer),
            addr: addr(peer),
            usable,
        }
    }

    pub(crate) fn rec(name: u64, version: u64, conns: &[u64]) -> PeerRecord {
        PeerRecord {
            name: PeerName(name),
            uid: name * 1000,
            version,
            nickname: format!("h{name}"),
            conns: conns.iter().map(|p| conn(*p, true)).collect(),
            pods: Vec::new(),
            key: None,
            sig: None,
        }
    }

    fn view(t: &Topology) -> Vec<PeerRecord> {
        t.records().cloned().collect()
    }

    #[test]
    fn record_json_is_compact() {
        let r = rec(2, 7, &[3]);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"name":2,"uid":2000,"version":7,"nickname":"h2","conns":[[3,"10.0.0.3:6783",true]]}"#
        );
        let back: PeerRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(json_len(&r), serde_json::to_vec(&r).unwrap().len());
    }

    #[test]
    fn merge_keeps_newest_and_reports_changes() {
        let mut t = Topology::new(rec(1, 10, &[2]));
        let g0 = t.generation();
        let changed = t.merge([rec(2, 5, &[1]), rec(3, 1, &[2])]);
        assert_eq!(changed.len(), 2);
        assert!(t.generation() > g0);
        let g1 = t.generation();
        assert!(t.merge([rec(2, 4, &[1, 3]), rec(2, 5, &[1])]).is_empty());
        assert_eq!(t.generation(), g1, "nothing new, no new generation");
        let changed = t.merge([rec(2, 6, &[1, 3]), rec(2, 7, &[1, 3])]);
        assert_eq!(
            changed,
            vec![rec(2, 7, &[1, 3])],
            "one result per name, the newest"
        );
        assert_eq!(t.get(PeerName(2)).unwrap().version, 7);
    }

    #[test]
    fn set_our_conns_bumps_only_on_change() {
        let mut t = Topology::new(rec(1, 10, &[]));
        assert!(t.set_our_conns(vec![]).is_none());
        let r = t.set_our_conns(vec![conn(3, true), conn(2, false), conn(3, false)]);
        let r = r.unwrap();
        assert_eq!(r.version, 11);
        assert_eq!(
            r.conns.iter().map(|c| c.peer.0).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert!(t
            .set_our_conns(vec![conn(2, false), conn(3, false)])
            .is_none());
        assert_eq!(t.ours().version, 11);
    }

    #[test]
    fn stale_self_makes_us_bump() {
        let mut t = Topology::new(rec(1, 10, &[2]));
        // An old copy from this run: ignored.
        assert!(t.merge([rec(1, 9, &[])]).is_empty());
        // A copy from a previous run with a higher version: we jump above it.
        let mut old = rec(1, 50, &[3]);
        old.uid = 1;
        let changed = t.merge([old.clone()]);
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].version, 51);
        assert_eq!(changed[0].uid, 1000, "still our run");
        assert_eq!(
            changed[0].conns,
            vec![conn(2, true)],
            "still our connections"
        );
        assert!(changed[0].supersedes(&old));
        // A copy from another run with a lower version: no bump, but our record goes out.
        old.version = 3;
        let changed = t.merge([old]);
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].version, 51);
        // Same run, same version, other content (a forgery or a bug): we move above it.
        let mut forged = t.ours().clone();
        forged.nickname = "evil".into();
        let changed = t.merge([forged]);
        assert_eq!(changed[0].version, 52);
        assert_eq!(t.ours().nickname, "h1");
    }

    #[test]
    fn gc_drops_unreachable_and_one_sided_links() {
        // 1 - 2 - 3, and 4 claims a link to 3 that 3 does not list; 5 is isolated.
        let mut t = Topology::new(rec(1, 1, &[2]));
        t.merge([
            rec(2, 1, &[1, 3]),
            rec(3, 1, &[2]),
            rec(4, 1, &[3]),
            rec(5, 1, &[]),
        ]);
        assert_eq!(t.len(), 5);
        assert_eq!(t.gc(), vec![PeerName(4), PeerName(5)]);
        assert_eq!(t.len(), 3);
        // 2 drops its link to 3: 3 becomes unreachable.
        t.merge([rec(2, 2, &[1])]);
        assert_eq!(t.gc(), vec![PeerName(3)]);
        // Our own record survives even with no connections.
        t.set_our_conns(vec![]);
        assert_eq!(t.gc(), vec![PeerName(2)]);
        assert_eq!(t.len(), 1);
        assert!(t.gc().is_empty());
    }

    #[test]
    fn gc_counts_unusable_connections() {
        let mut t = Topology::new(rec(1, 1, &[]));
        t.set_our_conns(vec![conn(2, false)]);
        let mut r2 = rec(2, 1, &[]);
        r2.conns = vec![conn(1, false)];
        t.merge([r2]);
        assert!(t.gc().is_empty());
    }

    #[test]
    fn pods_travel_with_the_record_and_are_absent_from_the_wire_when_none() {
        let r = rec(1, 5, &[2]);
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("pods"), "{json}");
        let mut t = Topology::new(r);
        let pod = |ns: &str, name: &str, a: &str| PodEntry {
            namespace: ns.into(),
            name: name.into(),
            addrs: vec![a.parse().unwrap()],
        };
        let new = t
            .set_our_pods(vec![pod("y", "b", "10.32.0.3"), pod("x", "a", "10.32.0.2")])
            .unwrap();
        assert_eq!(new.version, 6);
        assert_eq!(new.pods[0].namespace, "x", "sorted");
        assert!(t
            .set_our_pods(vec![pod("x", "a", "10.32.0.2"), pod("y", "b", "10.32.0.3")])
            .is_none());
        let json = serde_json::to_string(t.ours()).unwrap();
        assert!(
            json.contains(r#""pods":[["x","a",["10.32.0.2"]],["y","b",["10.32.0.3"]]]"#),
            "{json}"
        );
        let back: PeerRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, t.ours());
        // A router of the version before pods reads the record without them.
        let old: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            old["conns"],
            serde_json::json!([[2, "10.0.0.2:6783", true]])
        );
    }

    #[test]
    fn summary_tracks_content() {
        let mut a = Topology::new(rec(1, 1, &[2]));
        let mut b = Topology::new(rec(2, 1, &[1]));
        a.merge([rec(2, 1, &[1])]);
        b.merge([rec(1, 1, &[2])]);
        assert_eq!(a.summary(), b.summary());
        assert_eq!(a.bucket_summaries(), b.bucket_summaries());
        assert_eq!(a.approx_bytes(), b.approx_bytes());
        b.merge([rec(3, 1, &[2])]);
        assert_ne!(a.summary(), b.summary());
        b.gc();
        assert_eq!(a.summary(), b.summary());
        let total: usize = a.records().map(json_len).sum();
        assert_eq!(a.approx_bytes(), total);
    }

    fn arb_record() -> impl Strategy<Value = PeerRecord> {
        (
            1u64..6,
            0u64..3,
            0u64..4,
            proptest::collection::vec((1u64..6, any::<bool>()), 0..4),
            "[ab]{0,1}",
        )
            .prop_map(|(name, uid, version, conns, nick)| PeerRecord {
                name: PeerName(name),
                uid,
                version,
                nickname: nick,
                conns: conns.into_iter().map(|(p, u)| conn(p, u)).collect(),
                pods: Vec::new(),
                key: None,
                sig: None,
            })
    }

    proptest! {
        #[test]
        fn merge_is_order_and_grouping_independent(
            records in proptest::collection::vec(arb_record(), 0..24),
            seed in any::<u64>(),
            split in 0usize..24,
        ) {
            // Our own name is 100 so that the records never hit the self rule.
            let base = rec(100, 1, &[]);
            let mut all_at_once = Topology::new(base.clone());
            all_at_once.merge(records.clone());

            // Reversed, shuffled and regrouped into two batches.
            let mut shuffled = records.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = mix(s);
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let cut = split.min(shuffled.len());
            let mut grouped = Topology::new(base.clone());
            grouped.merge(shuffled[cut..].to_vec());
            grouped.merge(shuffled[..cut].to_vec());

            let mut one_by_one = Topology::new(base.clone());
            for r in records.iter().rev() {
                one_by_one.merge([r.clone()]);
            }

            prop_assert_eq!(view(&all_at_once), view(&grouped));
            prop_assert_eq!(view(&all_at_once), view(&one_by_one));
            prop_assert_eq!(all_at_once.summary(), grouped.summary());

            // Idempotent: merging again, or merging the view into itself, changes nothing.
            let g = all_at_once.generation();
            prop_assert!(all_at_once.merge(records.clone()).is_empty());
            prop_assert!(all_at_once.merge(view(&grouped)).is_empty());
            prop_assert_eq!(all_at_once.generation(), g);
        }

        #[test]
        fn merge_of_views_is_commutative(
            a in proptest::collection::vec(arb_record(), 0..12),
            b in proptest::collection::vec(arb_record(), 0..12),
        ) {
            let base = rec(100, 1, &[]);
            let mut ta = Topology::new(base.clone());
            ta.merge(a.clone());
            let mut tb = Topology::new(base.clone());
            tb.merge(b.clone());
            let (va, vb) = (view(&ta), view(&tb));
            ta.merge(vb);
            tb.merge(va);
            prop_assert_eq!(view(&ta), view(&tb));
            prop_assert_eq!(ta.bucket_summaries(), tb.bucket_summaries());
        }

        #[test]
        fn records_round_trip(r in arb_record()) {
            let bytes = serde_json::to_vec(&r).unwrap();
            prop_assert_eq!(bytes.len(), json_len(&r));
            prop_assert_eq!(serde_json::from_slice::<PeerRecord>(&bytes).unwrap(), r);
        }
    }
}
