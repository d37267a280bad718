//! Cluster IPAM: the pod CIDR split into per-host blocks, agreed through the mesh with no central
//! store.
//!
//! This module owns which host holds which block: the public types, and [`Ipam`], a sans-IO state
//! machine (messages and `now` in, messages to send out; it never sleeps, spawns, logs or touches
//! files) that the tokio driver ([`crate::driver`]) feeds. Addresses inside a block are the
//! holding host's business (the router's reservations), not this module's. `docs/ipam.md`
//! describes the protocol and argues why two hosts never hold the same block.

use crate::PeerName;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// An IPv4 prefix: the pod CIDR or one block of it. Shown and serialized as `A.B.C.D/N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Block {
    /// The first address (host bits zero).
    pub base: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl Block {
    /// A prefix from an address and a length; host bits are cleared. `None` if `prefix > 32`.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Block> {
        if prefix > 32 {
            return None;
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Some(Block {
            base: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }

    /// How many addresses it spans.
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    /// Whether `ip` lies inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let off = u32::from(ip).wrapping_sub(u32::from(self.base)) as u64;
        u32::from(ip) >= u32::from(self.base) && off < self.size()
    }

    /// The `i`th address inside (`None` past the end).
    pub fn nth(&self, i: u64) -> Option<Ipv4Addr> {
        (i < self.size()).then(|| Ipv4Addr::from(u32::from(self.base) + i as u32))
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// Why a string is not a block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IPv4 prefix A.B.C.D/N")]
pub struct BadBlock(pub String);

impl FromStr for Block {
    type Err = BadBlock;
    fn from_str(s: &str) -> Result<Block, BadBlock> {
        let bad = || BadBlock(s.to_string());
        let (a, n) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = n.parse().map_err(|_| bad())?;
        let b = Block::new(addr, prefix).ok_or_else(bad)?;
        if b.base != addr {
            return Err(bad());
        }
        Ok(b)
    }
}

impl Serialize for Block {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Block {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Block, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How this host takes part in IPAM (`weft router --pod-cidr` and friends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConfig {
    /// The cluster's pod CIDR; every peer must have the same one (and the same block size).
    pub cidr: Block,
    /// Prefix length of the per-host blocks (e.g. 24 inside a /12).
    pub block_prefix: u8,
    /// A host unreachable from everyone for longer than this has its blocks reclaimed.
    pub grace: Duration,
    /// The cluster size to assume before more peers are known (Weave's `consensus=N`): no block is
    /// claimed until a majority of max(this, known peers) has agreed.
    pub init_peers: usize,
    /// Where the IPAM state (own claims and votes) is persisted, if anywhere.
    pub state_file: Option<PathBuf>,
}

/// Why no block could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// The router runs without `--pod-cidr`.
    #[error("IPAM is off: the router has no --pod-cidr")]
    Disabled,
    /// Not enough peers agreed in time (partition, or the cluster still starting): try again.
    #[error(
        "no majority for a new block yet: {have} of the {need} agreeing peers needed are reachable"
    )]
    NoQuorum {
        /// Peers reachable (ourselves included).
        have: usize,
        /// Peers needed.
        need: usize,
    },
    /// Every block of the pod CIDR is held by some host.
    #[error("the pod CIDR {0} has no free block left")]
    Exhausted(Block),
}

impl IpamError {
    /// Whether asking again later can succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, IpamError::NoQuorum { .. })
    }
}

/// One host's blocks, as we know them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostBlocks {
    /// The host's peer name (as `weft status` shows names).
    pub peer: String,
    /// Its nickname, if known.
    pub nickname: String,
    /// Blocks it holds.
    pub held: Vec<Block>,
    /// Blocks it is claiming (not yet agreed).
    pub pending: Vec<Block>,
    /// Whether it is reachable now.
    pub reachable: bool,
    /// Seconds since it was last reachable (0 when reachable).
    pub unreachable_secs: u64,
}

/// What `weft status` shows about IPAM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamStatus {
    /// The pod CIDR.
    pub cidr: Block,
    /// The block size.
    pub block_prefix: u8,
    /// Blocks this host holds.
    pub held: Vec<Block>,
    /// Every known host's blocks (this one included).
    pub hosts: Vec<HostBlocks>,
    /// Peers counted for majorities.
    pub members: usize,
    /// Agreeing peers a claim or reclaim needs.
    pub quorum: usize,
    /// Members reachable now (this host included).
    pub reachable: usize,
    /// Free blocks left in the CIDR.
    pub free_blocks: u64,
    /// Grace period before an unreachable host's blocks are reclaimed, seconds.
    pub grace_secs: u64,
    /// Blocks this host held until the cluster reclaimed them while it was unreachable (it then
    /// started a new incarnation): addresses in them must no longer be used.
    #[serde(default)]
    pub lost: Vec<Block>,
    /// This host's incarnation (bumped when it finds itself reclaimed, or after a clean leave).
    #[serde(default)]
    pub incarnation: u64,
}

impl IpamConfig {
    /// Checks the configuration: the block size must lie inside the CIDR, and the CIDR may hold
    /// at most 2^20 blocks.
    pub fn validate(&self) -> Result<(), String> {
        if self.block_prefix > 32 || self.block_prefix < self.cidr.prefix {
            return Err(format!(
                "block size /{} does not fit in the pod CIDR {}",
                self.block_prefix, self.cidr
            ));
        }
        if self.block_prefix - self.cidr.prefix > 20 {
            return Err(format!(
                "the pod CIDR {} holds more than 2^20 blocks of /{}: choose larger blocks",
                self.cidr, self.block_prefix
            ));
        }
        if self.init_peers == 0 {
            return Err("init_peers must be at least 1".into());
        }
        Ok(())
    }

    /// How many blocks the CIDR holds.
    pub fn block_count(&self) -> u64 {
        1u64 << (self.block_prefix - self.cidr.prefix)
    }

    /// The `i`th block of the CIDR.
    pub fn block(&self, i: u64) -> Option<Block> {
        (i < self.block_count()).then(|| Block {
            base: Ipv4Addr::from(
                u32::from(self.cidr.base) + (i << (32 - self.block_prefix)) as u32,
            ),
            prefix: self.block_prefix,
        })
    }

    /// Whether `b` is one of the CIDR's blocks.
    pub fn is_block(&self, b: Block) -> bool {
        b.prefix == self.block_prefix && self.cidr.contains(b.base)
    }
}

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
        }
    }

    /// What orders copies of the same record.
    pub fn stamp(&self) -> (u64, u64) {
        (self.incarnation, self.version)
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

/// Encoded size above which records are sent in several messages (below the 64 KiB frame limit
/// with room for the envelope and encryption).
pub const CHUNK_BYTES: usize = 48 * 1024;
/// How long a change to other peers' records may wait before it is persisted (our own record is
/// persisted at once, before anything that shows it is sent).
pub const OTHERS_PERSIST_DELAY: Duration = Duration::from_secs(5);
/// Default interval between anti-entropy digests.
pub const DIGEST_INTERVAL: Duration = Duration::from_secs(2);

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

/// The IPAM state machine of one host. See the module docs and `docs/ipam.md`.
#[derive(Debug)]
pub struct Ipam {
    cfg: IpamConfig,
    me: PeerName,
    records: BTreeMap<PeerName, IpamRecord>,
    /// When each other peer was last reachable (or sent a newer record).
    last_seen: HashMap<PeerName, Instant>,
    reachable: BTreeSet<PeerName>,
    neighbours: BTreeSet<PeerName>,
    lost: Vec<Block>,
    leaving: bool,
    acked: Option<(u64, u64)>,
    last_digest: Instant,
    digest_interval: Duration,
    /// Our record changed: persist before sending anything.
    dirty: bool,
    /// Only other peers' records changed since this instant: persisted within
    /// [`OTHERS_PERSIST_DELAY`] (they can be learnt again from the peers).
    others_dirty: Option<Instant>,
    out: Vec<IpamOut>,
    /// Records too large for one message, never sent.
    pub oversize: u64,
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
                for r in st.records {
                    records.insert(r.name, r);
                }
                lost = st.lost;
            }
        }
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
        })
    }

    /// Changes the anti-entropy interval.
    pub fn with_digest_interval(mut self, d: Duration) -> Self {
        self.digest_interval = d;
        self
    }

    fn reincarnate(own: &mut IpamRecord) {
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

    /// Blocks in use: claimed by a member, or with a live vote for someone other than us.
    fn used(&self) -> BTreeSet<Block> {
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
                    if r.name == self.me {
                        if r.stamp() > self.own().stamp() {
                            // Our own record from before a lost state file: adopt it (its
                            // votes stay ours) and move past it.
                            let leaving = self.leaving;
                            let mut own = r;
                            if own.left && !leaving {
                                Self::reincarnate(&mut own);
                            }
                            own.version += 1;
                            self.records.insert(self.me, own.clone());
                            self.dirty = true;
                            self.flood(vec![own], None);
                        }
                        continue;
                    }
                    let newer = self
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

    /// Status for `weft status`.
    pub fn status(&self, now: Instant) -> IpamStatus {
        let gone = self.reclaimed();
        let (reachable, quorum) = self.quorum();
        let hosts = self
            .records
            .values()
            .filter(|r| !r.left && !gone.contains(&r.name))
            .map(|r| {
                let up = r.name == self.me || self.reachable.contains(&r.name);
                HostBlocks {
                    peer: r.name.to_string(),
                    nickname: r.nickname.clone(),
                    held: r.held(),
                    pending: r.pending(),
                    reachable: up,
                    unreachable_secs: if up {
                        0
                    } else {
                        self.last_seen
                            .get(&r.name)
                            .map(|t| now.saturating_duration_since(*t).as_secs())
                            .unwrap_or(0)
                    },
                }
            })
            .collect();
        IpamStatus {
            cidr: self.cfg.cidr,
            block_prefix: self.cfg.block_prefix,
            held: self.held(),
            hosts,
            members: self.members().len(),
            quorum,
            reachable,
            free_blocks: self.free_blocks(),
            grace_secs: self.cfg.grace.as_secs(),
            lost: self.lost.clone(),
            incarnation: self.own().incarnation,
        }
    }

    fn take_out(&mut self) -> Vec<IpamOut> {
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
    fn change_own(&mut self, f: impl FnOnce(&mut IpamRecord)) -> bool {
        let old = &self.records[&self.me];
        let mut own = old.clone();
        f(&mut own);
        if own == *old {
            return false;
        }
        own.version += 1;
        self.records.insert(self.me, own.clone());
        self.dirty = true;
        self.flood(vec![own], None);
        true
    }

    fn flood(&mut self, records: Vec<IpamRecord>, except: Option<PeerName>) {
        for to in self.neighbours.clone() {
            if Some(to) != except {
                self.send_records(to, records.clone());
            }
        }
    }

    fn send_records(&mut self, to: PeerName, records: Vec<IpamRecord>) {
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

    /// Runs the rules until nothing changes (a few rounds at most).
    fn step(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        for _ in 0..8 {
            if !self.step_once(now) {
                break;
            }
        }
    }

    fn step_once(&mut self, now: Instant) -> bool {
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
                self.last_seen
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
                if !cfg.is_block(*b) {
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
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(init_peers: usize) -> IpamConfig {
        IpamConfig {
            cidr: "10.32.0.0/12".parse().unwrap(),
            block_prefix: 24,
            grace: Duration::from_secs(60),
            init_peers,
            state_file: None,
        }
    }

    #[test]
    fn config_is_checked_and_blocks_enumerate_the_cidr() {
        let c = cfg(1);
        assert!(c.validate().is_ok());
        assert_eq!(c.block_count(), 4096);
        assert_eq!(c.block(0).unwrap().to_string(), "10.32.0.0/24");
        assert_eq!(c.block(4095).unwrap().to_string(), "10.47.255.0/24");
        assert_eq!(c.block(4096), None);
        assert!(c.is_block("10.40.1.0/24".parse().unwrap()));
        assert!(!c.is_block("10.48.0.0/24".parse().unwrap()));
        assert!(!c.is_block("10.32.0.0/25".parse().unwrap()));
        let mut bad = cfg(1);
        bad.block_prefix = 8;
        assert!(bad.validate().unwrap_err().contains("does not fit"));
        bad.block_prefix = 33;
        assert!(bad.validate().is_err());
        bad.block_prefix = 32;
        bad.cidr = "10.0.0.0/8".parse().unwrap();
        assert!(bad.validate().unwrap_err().contains("2^20"));
        assert!(cfg(0).validate().is_err());
    }

    #[test]
    fn records_round_trip_compactly() {
        let mut r = IpamRecord::new(PeerName(7), "h".into());
        r.incarnation = 2;
        r.version = 9;
        let b: Block = "10.32.4.0/24".parse().unwrap();
        r.claims.insert(b, Claim { seq: 8, held: true });
        r.votes.insert(b, (PeerName(7), 8));
        r.reclaim_votes.insert(PeerName(3), 1);
        r.reclaimed.insert(PeerName(4), 0);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#"["10.32.4.0/24",8,true]"#), "{json}");
        assert_eq!(serde_json::from_str::<IpamRecord>(&json).unwrap(), r);
        let msg = IpamMsg::Records {
            records: vec![r.clone()],
        };
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(serde_json::from_str::<IpamMsg>(&json).unwrap(), msg);
    }

    /// The text form of blocks, records and states is what routers of other versions read and
    /// what state files hold: it must stay byte for byte what it is.
    #[test]
    fn serialized_forms_are_stable() {
        let b: Block = "10.32.0.0/27".parse().unwrap();
        assert_eq!(serde_json::to_string(&b).unwrap(), r#""10.32.0.0/27""#);
        assert_eq!(
            serde_json::from_str::<Block>(r#""10.32.0.0/27""#).unwrap(),
            b
        );
        let mut r = IpamRecord::new(PeerName(7), "h".into());
        r.incarnation = 2;
        r.version = 9;
        // Keys in map order: address first, then prefix length.
        for (i, s) in ["10.32.1.0/24", "10.32.0.0/25", "10.32.0.0/24", "9.0.0.0/8"]
            .iter()
            .enumerate()
        {
            let b: Block = s.parse().unwrap();
            r.claims.insert(
                b,
                Claim {
                    seq: i as u64,
                    held: i % 2 == 0,
                },
            );
            r.votes.insert(b, (PeerName(7), i as u64));
        }
        r.reclaim_votes.insert(PeerName(3), 1);
        r.reclaimed.insert(PeerName(4), 0);
        let want = concat!(
            r#"{"name":7,"nick":"h","inc":2,"ver":9,"#,
            r#""claims":[["9.0.0.0/8",3,false],["10.32.0.0/24",2,true],["10.32.0.0/25",1,false],["10.32.1.0/24",0,true]],"#,
            r#""votes":[["9.0.0.0/8",7,3],["10.32.0.0/24",7,2],["10.32.0.0/25",7,1],["10.32.1.0/24",7,0]],"#,
            r#""reclaim":[[3,1]],"reclaimed":[[4,0]],"left":false}"#
        );
        assert_eq!(serde_json::to_string(&r).unwrap(), want);
        assert_eq!(serde_json::from_str::<IpamRecord>(want).unwrap(), r);
        let st = IpamState {
            cidr: "10.32.0.0/12".parse().unwrap(),
            block_prefix: 27,
            records: vec![],
            lost: vec![
                b,
                "0.0.0.0/0".parse().unwrap(),
                "10.32.0.5/32".parse().unwrap(),
            ],
        };
        let want = r#"{"cidr":"10.32.0.0/12","block_prefix":27,"records":[],"lost":["10.32.0.0/27","0.0.0.0/0","10.32.0.5/32"]}"#;
        assert_eq!(serde_json::to_string(&st).unwrap(), want);
        assert_eq!(serde_json::from_str::<IpamState>(want).unwrap(), st);
    }

    #[test]
    fn parsing_refuses_host_bits_bad_prefixes_and_other_forms() {
        for bad in [
            "10.32.0.1/27",
            "10.32.0.0/33",
            "10.32.0.0/",
            "10.32.0.0",
            "/27",
            "10.32.0/27",
            "10.32.0.0/-1",
            "10.32.0.0/27/1",
            " 10.32.0.0/27",
            "fd00::/64",
            "",
        ] {
            let e = bad.parse::<Block>().unwrap_err();
            assert_eq!(e, BadBlock(bad.to_string()));
            assert_eq!(
                e.to_string(),
                format!("{bad:?} is not an IPv4 prefix A.B.C.D/N")
            );
            let json = serde_json::to_string(bad).unwrap();
            let e = serde_json::from_str::<Block>(&json)
                .unwrap_err()
                .to_string();
            assert!(e.contains("is not an IPv4 prefix"), "{e}");
        }
        let b = Block::new("10.32.0.9".parse().unwrap(), 27).unwrap();
        assert_eq!(b.to_string(), "10.32.0.0/27");
        assert_eq!(Block::new("10.32.0.9".parse().unwrap(), 33), None);
        assert_eq!(b.size(), 32);
        assert!(b.contains("10.32.0.31".parse().unwrap()));
        assert!(!b.contains("10.32.0.32".parse().unwrap()));
        assert!(!b.contains("10.31.255.255".parse().unwrap()));
        assert_eq!(b.nth(31), Some("10.32.0.31".parse().unwrap()));
        assert_eq!(b.nth(32), None);
        let all: Block = "0.0.0.0/0".parse().unwrap();
        assert_eq!(all.size(), 1 << 32);
        assert!(all.contains("255.255.255.255".parse().unwrap()));
    }

    fn rec(name: u64, votes_against: &[u64]) -> IpamRecord {
        let mut r = IpamRecord::new(PeerName(name), String::new());
        for v in votes_against {
            r.reclaim_votes.insert(PeerName(*v), 0);
        }
        r
    }

    #[test]
    fn reclaim_needs_a_majority_of_unsuspected_voters() {
        let set = |rs: Vec<IpamRecord>, init| {
            let m: BTreeMap<PeerName, IpamRecord> = rs.into_iter().map(|r| (r.name, r)).collect();
            reclaimed_set(&m, init)
                .into_iter()
                .map(|p| p.0)
                .collect::<Vec<_>>()
        };
        // 1 and 2 vote against 3: reclaimed.
        assert_eq!(set(vec![rec(1, &[3]), rec(2, &[3]), rec(3, &[])], 3), [3]);
        // 3, alone, votes against both: nothing.
        assert!(set(vec![rec(1, &[]), rec(2, &[]), rec(3, &[1, 2])], 3).is_empty());
        // Both sides vote: the majority side wins, the minority's votes do not count.
        assert_eq!(
            set(vec![rec(1, &[3]), rec(2, &[3]), rec(3, &[1, 2])], 3),
            [3]
        );
        // Each alone voted against the others: nobody.
        assert!(set(vec![rec(1, &[2, 3]), rec(2, &[1, 3]), rec(3, &[1, 2])], 3).is_empty());
        // Two hosts: never.
        assert!(set(vec![rec(1, &[2]), rec(2, &[])], 2).is_empty());
        // A vote for an older incarnation does not count.
        let mut three = rec(3, &[]);
        three.incarnation = 1;
        assert!(set(vec![rec(1, &[3]), rec(2, &[3]), three.clone()], 3).is_empty());
        // An assertion by anyone is a fact.
        let mut one = rec(1, &[]);
        one.reclaimed.insert(PeerName(3), 1);
        assert_eq!(set(vec![one, rec(2, &[]), three], 3), [3]);
    }

    #[test]
    fn a_lone_host_holds_at_once_and_the_next_claim_takes_another_block() {
        let now = Instant::now();
        let mut a = Ipam::new(PeerName(1), "a".into(), cfg(1), None, now).unwrap();
        let (b1, out) = a.claim(now).unwrap();
        assert_eq!(out.first(), Some(&IpamOut::Persist));
        assert_eq!(a.claim_state(b1), ClaimState::Held);
        let (b2, _) = a.claim(now).unwrap();
        assert_ne!(b1, b2);
        assert_eq!(a.held().len(), 2);
        assert_eq!(a.free_blocks(), 4094);
        a.release(now, b1);
        assert_eq!(a.held(), vec![b2]);
        assert_eq!(a.claim_state(b1), ClaimState::Gone);
    }

    #[test]
    fn with_init_peers_a_lone_host_waits_and_withdraws() {
        let now = Instant::now();
        let mut a = Ipam::new(PeerName(1), "a".into(), cfg(3), None, now).unwrap();
        let (b, _) = a.claim(now).unwrap();
        assert_eq!(a.claim_state(b), ClaimState::Pending);
        assert_eq!(a.quorum(), (1, 2));
        // Asking again returns the same pending claim.
        assert_eq!(a.claim(now).unwrap().0, b);
        a.withdraw(now, b);
        assert_eq!(a.claim_state(b), ClaimState::Gone);
        assert!(a.own().votes.is_empty());
    }

    #[test]
    fn exhausted_when_every_block_is_held() {
        let now = Instant::now();
        let mut c = cfg(1);
        c.cidr = "10.32.0.0/23".parse().unwrap();
        let mut a = Ipam::new(PeerName(1), "a".into(), c.clone(), None, now).unwrap();
        a.claim(now).unwrap();
        a.claim(now).unwrap();
        assert_eq!(a.claim(now).unwrap_err(), IpamError::Exhausted(c.cidr));
    }

    #[test]
    fn state_for_another_cidr_is_ignored_and_a_left_record_restarts_as_a_new_incarnation() {
        let now = Instant::now();
        let mut a = Ipam::new(PeerName(1), "a".into(), cfg(1), None, now).unwrap();
        a.claim(now).unwrap();
        a.leave(now);
        let st = a.state();
        let b = Ipam::new(PeerName(1), "a".into(), cfg(1), Some(st.clone()), now).unwrap();
        assert_eq!(b.own().incarnation, 1);
        assert!(!b.own().left);
        let mut other = cfg(1);
        other.cidr = "10.64.0.0/12".parse().unwrap();
        let c = Ipam::new(PeerName(1), "a".into(), other, Some(st), now).unwrap();
        assert_eq!(c.own().incarnation, 0);
    }
}
