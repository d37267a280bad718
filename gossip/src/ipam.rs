//! Cluster IPAM: the pod CIDR split into per-host blocks, agreed through the mesh with no central
//! store (STUB: the public surface is fixed, the state machine is being written).
//!
//! This module owns which host holds which block. Addresses inside a block are the holding host's
//! business (the router's reservations), not this module's.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

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
}
