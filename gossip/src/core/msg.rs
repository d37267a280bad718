//! The gossip messages ([`GossipMsg`], JSON tagged by `"kind"`), what the core asks the driver
//! to do ([`Output`]), and how lists of records or digests are split into messages that stay
//! below the size limit.

use crate::topology::{json_len, PeerRecord};
use crate::PeerName;
use serde::{Deserialize, Serialize};

/// One line of a [`GossipMsg::Digest`]: which version of a peer's record the sender holds. On the
/// wire it is the array `[name, uid, version]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "(u64, u64, u64)", from = "(u64, u64, u64)")]
pub struct DigestEntry {
    /// The record's owner.
    pub name: PeerName,
    /// Its run id.
    pub uid: u64,
    /// Its version.
    pub version: u64,
}

impl DigestEntry {
    pub(super) fn of(r: &PeerRecord) -> Self {
        DigestEntry {
            name: r.name,
            uid: r.uid,
            version: r.version,
        }
    }
}

impl From<DigestEntry> for (u64, u64, u64) {
    fn from(e: DigestEntry) -> Self {
        (e.name.0, e.uid, e.version)
    }
}

impl From<(u64, u64, u64)> for DigestEntry {
    fn from((name, uid, version): (u64, u64, u64)) -> Self {
        DigestEntry {
            name: PeerName(name),
            uid,
            version,
        }
    }
}

mod names_as_u64 {
    use crate::PeerName;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(names: &[PeerName], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(names.iter().map(|n| n.0))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PeerName>, D::Error> {
        Vec::<u64>::deserialize(d).map(|v| v.into_iter().map(PeerName).collect())
    }
}

/// A gossip message between two connected peers. JSON, tagged by `"kind"`; every message a
/// [`GossipCore`](super::GossipCore) emits serialises to at most its `max_message_bytes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GossipMsg {
    /// Part `part` (from 0) of `parts` of the sender's whole view, sent once when a connection is
    /// established. Records come in breadth-first order from the sender, so each prefix is
    /// connected; the receiver defers garbage collection until the last part.
    Full {
        /// Index of this part, from 0.
        part: u32,
        /// Number of parts.
        parts: u32,
        /// The records.
        records: Vec<PeerRecord>,
    },
    /// Records that changed the sender's view (or that the receiver asked for, or lacks).
    Delta {
        /// The records.
        records: Vec<PeerRecord>,
    },
    /// Anti-entropy opener: the sender's [`Topology::summary`](crate::topology::Topology::summary) and record count. Ignored when
    /// equal to the receiver's; otherwise answered with [`GossipMsg::Buckets`].
    Summary {
        /// The sender's summary.
        summary: u64,
        /// The sender's number of records.
        count: u32,
    },
    /// The sender's [`Topology::bucket_summaries`](crate::topology::Topology::bucket_summaries), each folded to 32 bits. The receiver
    /// answers with a [`GossipMsg::Digest`] of the buckets that differ. Also the opener of the
    /// exchange when a connection to a peer already in our view is re-established.
    Buckets {
        /// One hash per bucket ([`SUMMARY_BUCKETS`](crate::topology::SUMMARY_BUCKETS) of them).
        hashes: Vec<u32>,
    },
    /// What the sender holds in some buckets. The receiver sends back, as a
    /// [`GossipMsg::Delta`], the records in those buckets that are newer on its side or missing
    /// from the digest, and asks with a [`GossipMsg::Request`] for those newer on the sender's.
    Digest {
        /// The buckets covered, complete: a record of these buckets absent from `entries` is one
        /// the sender lacks.
        buckets: Vec<u16>,
        /// The sender's records in those buckets.
        entries: Vec<DigestEntry>,
    },
    /// Asks for the current records of these peers, answered with a [`GossipMsg::Delta`].
    Request {
        /// The peers.
        #[serde(with = "names_as_u64")]
        names: Vec<PeerName>,
    },
}

impl GossipMsg {
    /// The message's `"kind"` tag, for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            GossipMsg::Full { .. } => "full",
            GossipMsg::Delta { .. } => "delta",
            GossipMsg::Summary { .. } => "summary",
            GossipMsg::Buckets { .. } => "buckets",
            GossipMsg::Digest { .. } => "digest",
            GossipMsg::Request { .. } => "request",
        }
    }

    /// Bytes of the message as compact JSON (what the driver frames).
    pub fn json_len(&self) -> usize {
        json_len(self)
    }
}

/// What the core asks the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `msg` on the control connection to `to` (always a connected peer).
    Send {
        /// The connected peer.
        to: PeerName,
        /// The message.
        msg: GossipMsg,
    },
    /// The topology changed: recompute routes, update the peer table, dial newly learnt peers.
    /// At most one per call, after the sends.
    Changed,
}

/// JSON bytes of each message kind with empty lists (and the largest part numbers).
#[derive(Debug, Clone, Copy)]
pub(super) struct Overheads {
    pub(super) full: usize,
    pub(super) delta: usize,
    pub(super) digest: usize,
    pub(super) request: usize,
}

impl Overheads {
    pub(super) fn new() -> Self {
        Overheads {
            full: json_len(&GossipMsg::Full {
                part: u32::MAX,
                parts: u32::MAX,
                records: vec![],
            }),
            delta: json_len(&GossipMsg::Delta { records: vec![] }),
            digest: json_len(&GossipMsg::Digest {
                buckets: vec![],
                entries: vec![],
            }),
            request: json_len(&GossipMsg::Request { names: vec![] }),
        }
    }
}

/// Splits `items` (each with its JSON size) into groups that fit a message of at most `max`
/// bytes whose empty form takes `overhead` bytes. Each item is counted with one separator, so the
/// estimate is never below the real size. Items too big for a message on their own are left out
/// and counted in `oversize`.
pub(super) fn chunk<T>(
    items: impl IntoIterator<Item = (T, usize)>,
    overhead: usize,
    max: usize,
    oversize: &mut u64,
) -> Vec<Vec<T>> {
    let mut groups = Vec::new();
    let mut cur = Vec::new();
    let mut size = overhead;
    for (item, len) in items {
        if overhead + len > max {
            *oversize += 1;
            continue;
        }
        if size + len + 1 > max && !cur.is_empty() {
            groups.push(std::mem::take(&mut cur));
            size = overhead;
        }
        size += len + 1;
        cur.push(item);
    }
    if !cur.is_empty() {
        groups.push(cur);
    }
    groups
}
