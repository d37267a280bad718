//! How a host takes part in IPAM ([`IpamConfig`]: the pod CIDR and its blocks) and why a block
//! cannot be had ([`IpamError`]).

use super::Block;
use std::path::PathBuf;
use std::time::Duration;

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

impl IpamConfig {
    /// Checks the configuration: the block size must lie inside the CIDR (and within the
    /// family's 32 or 128 bits), and the CIDR may hold at most 2^20 blocks.
    pub fn validate(&self) -> Result<(), String> {
        if self.block_prefix > self.cidr.family_bits() || self.block_prefix < self.cidr.prefix() {
            return Err(format!(
                "block size /{} does not fit in the pod CIDR {}",
                self.block_prefix, self.cidr
            ));
        }
        if self.block_prefix - self.cidr.prefix() > 20 {
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
        1u64 << (self.block_prefix - self.cidr.prefix())
    }

    /// The `i`th block of the CIDR, of the CIDR's family.
    pub fn block(&self, i: u64) -> Option<Block> {
        self.cidr.subblock(self.block_prefix, i)
    }

    /// Whether `b` is one of the CIDR's blocks.
    pub fn is_block(&self, b: Block) -> bool {
        b.prefix() == self.block_prefix && self.cidr.contains(b.base())
    }
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
