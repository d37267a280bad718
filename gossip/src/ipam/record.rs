//! What peers exchange and persist: each peer's [`IpamRecord`] (claims and votes, written only by
//! its owner), its compact form on the wire and on disk, the [`IpamMsg`]s between neighbours and
//! the persisted [`IpamState`]. Changing any of these forms breaks mixed-version clusters and
//! existing state files.

use super::Block;
use crate::sign::{PublicKey, Signature, SignedRecord, IPAM_DOMAIN};
use crate::PeerName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The highest incarnation or version a record may carry: 2^63 - 1 changes, with the other half
/// of the range left for the owner to move past it.
pub const MAX_STAMP: u64 = u64::MAX / 2;

/// One claim on a block, in its claimant's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// Unique per claim of this claimant (its record version when it claimed): a vote names it.
    pub seq: u64,
    /// Whether the claimant has seen a majority vote for it (then it keeps the block until it
    /// releases it, leaves or is reclaimed).
    pub held: bool,
}

/// A peer's IPAM record. Only its owner writes it; everyone else keeps the newest copy by
/// (incarnation, version) and passes it on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "WireRecord", from = "WireRecord")]
pub struct IpamRecord {
    /// The owner.
    pub name: PeerName,
    /// The owner's nickname, for status.
    pub nickname: String,
    /// Bumped when the owner comes back after being reclaimed, or after a clean leave.
    pub incarnation: u64,
    /// Bumped on every change within an incarnation.
    pub version: u64,
    /// The owner's claims, held or pending.
    pub claims: BTreeMap<Block, Claim>,
    /// The owner's votes: at most one per block, for (claimant, claim seq).
    pub votes: BTreeMap<Block, (PeerName, u64)>,
    /// Peers the owner has not seen reachable for longer than the grace period, with the
    /// incarnation it votes to reclaim.
    pub reclaim_votes: BTreeMap<PeerName, u64>,
    /// Peers (and incarnations) the owner has seen reclaimed by a majority: once anyone has seen
    /// it, it is a fact for everyone.
    pub reclaimed: BTreeMap<PeerName, u64>,
    /// The owner left cleanly: it holds nothing and no longer counts.
    pub left: bool,
    /// The owner's public key ([`crate::sign`]); absent from routers that do not sign.
    pub key: Option<PublicKey>,
    /// The owner's signature of [`SignedRecord::signed_body`].
    pub sig: Option<Signature>,
}

impl IpamRecord {
    /// A fresh record.
    pub fn new(name: PeerName, nickname: String) -> IpamRecord {
        IpamRecord {
            name,
            nickname,
            incarnation: 0,
            version: 0,
            claims: BTreeMap::new(),
            votes: BTreeMap::new(),
            reclaim_votes: BTreeMap::new(),
            reclaimed: BTreeMap::new(),
            left: false,
            key: None,
            sig: None,
        }
    }

    /// What orders copies of the same record.
    pub fn stamp(&self) -> (u64, u64) {
        (self.incarnation, self.version)
    }

    /// Whether the stamp is one an owner can still move past: incarnation and version at most
    /// [`MAX_STAMP`]. Records beyond it are refused (from neighbours and from the state file):
    /// no owner counts that far, and adopting our own record at `u64::MAX` would leave no higher
    /// version to answer with (found by the `ipam_records` fuzz target).
    pub fn plausible(&self) -> bool {
        self.incarnation <= MAX_STAMP && self.version <= MAX_STAMP
    }

    /// Blocks held.
    pub fn held(&self) -> Vec<Block> {
        self.claims
            .iter()
            .filter(|(_, c)| c.held)
            .map(|(b, _)| *b)
            .collect()
    }

    /// Blocks claimed, not yet held.
    pub fn pending(&self) -> Vec<Block> {
        self.claims
            .iter()
            .filter(|(_, c)| !c.held)
            .map(|(b, _)| *b)
            .collect()
    }
}

impl SignedRecord for IpamRecord {
    const DOMAIN: &'static [u8] = IPAM_DOMAIN;

    fn auth(&mut self) -> (&mut Option<PublicKey>, &mut Option<Signature>) {
        (&mut self.key, &mut self.sig)
    }
}

/// The compact form of a record on the wire and on disk.
#[derive(Clone, Serialize, Deserialize)]
struct WireRecord {
    name: u64,
    #[serde(default)]
    nick: String,
    inc: u64,
    ver: u64,
    /// (block, seq, held)
    #[serde(default)]
    claims: Vec<(Block, u64, bool)>,
    /// (block, claimant, seq)
    #[serde(default)]
    votes: Vec<(Block, u64, u64)>,
    /// (peer, incarnation)
    #[serde(default)]
    reclaim: Vec<(u64, u64)>,
    /// (peer, incarnation)
    #[serde(default)]
    reclaimed: Vec<(u64, u64)>,
    #[serde(default)]
    left: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<PublicKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig: Option<Signature>,
}

impl From<IpamRecord> for WireRecord {
    fn from(r: IpamRecord) -> WireRecord {
        WireRecord {
            name: r.name.0,
            nick: r.nickname,
            inc: r.incarnation,
            ver: r.version,
            claims: r.claims.iter().map(|(b, c)| (*b, c.seq, c.held)).collect(),
            votes: r.votes.iter().map(|(b, (p, s))| (*b, p.0, *s)).collect(),
            reclaim: r.reclaim_votes.iter().map(|(p, i)| (p.0, *i)).collect(),
            reclaimed: r.reclaimed.iter().map(|(p, i)| (p.0, *i)).collect(),
            left: r.left,
            key: r.key,
            sig: r.sig,
        }
    }
}

impl From<WireRecord> for IpamRecord {
    fn from(w: WireRecord) -> IpamRecord {
        IpamRecord {
            name: PeerName(w.name),
            nickname: w.nick,
            incarnation: w.inc,
            version: w.ver,
            claims: w
                .claims
                .into_iter()
                .map(|(b, seq, held)| (b, Claim { seq, held }))
                .collect(),
            votes: w
                .votes
                .into_iter()
                .map(|(b, p, s)| (b, (PeerName(p), s)))
                .collect(),
            reclaim_votes: w
                .reclaim
                .into_iter()
                .map(|(p, i)| (PeerName(p), i))
                .collect(),
            reclaimed: w
                .reclaimed
                .into_iter()
                .map(|(p, i)| (PeerName(p), i))
                .collect(),
            left: w.left,
            key: w.key,
            sig: w.sig,
        }
    }
}

/// IPAM messages between neighbours (inside [`crate::proto::Message::Ipam`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IpamMsg {
    /// Records new to the sender (flooding), or all it knows (on a new connection), or asked for.
    Records {
        /// The records.
        records: Vec<IpamRecord>,
    },
    /// Anti-entropy: (name, incarnation, version) of records the sender knows.
    Digest {
        /// The entries.
        entries: Vec<(u64, u64, u64)>,
    },
    /// Asks for these records (the receiver's digest showed newer ones).
    Request {
        /// Peer names.
        names: Vec<u64>,
    },
    /// The receiver of a [`IpamMsg::Records`] that carried its sender's own record says which
    /// copy it now has (a leaving host waits for one).
    Ack {
        /// Whose record.
        name: u64,
        /// Its incarnation.
        incarnation: u64,
        /// Its version.
        version: u64,
    },
}

/// What is persisted: every record we know (ours included) and the blocks we lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamState {
    /// The pod CIDR the state belongs to (a state for another CIDR is ignored).
    pub cidr: Block,
    /// The block size the state belongs to.
    pub block_prefix: u8,
    /// Every known record.
    pub records: Vec<IpamRecord>,
    /// Blocks we held until the cluster reclaimed them.
    #[serde(default)]
    pub lost: Vec<Block>,
}
