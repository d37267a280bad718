//! What `weft status` shows about IPAM: [`IpamStatus`] and [`Ipam::status`].

use super::{Block, Ipam};
use serde::{Deserialize, Serialize};
use std::time::Instant;

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

impl Ipam {
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
}
