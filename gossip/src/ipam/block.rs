//! [`Block`]: an IP prefix, the pod CIDR or one block of it, and its text form (the form on the
//! wire and in state files).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP prefix with its host bits zero: the pod CIDR or one block of it, of either family.
/// Shown and serialized as `A.B.C.D/N` or `x:y::/N` (the canonical IPv6 text form).
///
/// A thin wrapper over [`ipnet::IpNet`] (convert with [`Block::net`] and `TryFrom<IpNet>`). The
/// wrapper, rather than `IpNet` itself, keeps the text form strict: `IpNet`'s own parser accepts
/// host bits set (`10.32.0.1/27`), which a block must not have.
///
/// Routers before IPv6 IPAM parse only `A.B.C.D/N`: an IPv6 block never reaches them, because
/// a peer whose pod CIDRs differ from ours is refused at the handshake
/// ([`crate::proto::Hello::check_ipam`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Block(IpNet);

impl Block {
    /// A prefix from an address (of either family) and a length; host bits are cleared. `None`
    /// if `prefix` is longer than the family's addresses (32 or 128 bits).
    pub fn new(addr: impl Into<IpAddr>, prefix: u8) -> Option<Block> {
        let net = IpNet::new(addr.into(), prefix).ok()?;
        Some(Block(net.trunc()))
    }

    /// The prefix as an [`IpNet`].
    pub fn net(&self) -> IpNet {
        self.0
    }

    /// The first address (host bits zero).
    pub fn network(&self) -> IpAddr {
        self.0.network()
    }

    /// The first address (host bits zero); the same as [`Block::network`].
    pub fn base(&self) -> IpAddr {
        self.0.network()
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.0.prefix_len()
    }

    /// Whether it is an IPv6 prefix.
    pub fn is_ipv6(&self) -> bool {
        matches!(self.0, IpNet::V6(_))
    }

    /// The number of bits of its family's addresses: 32 or 128.
    pub fn family_bits(&self) -> u8 {
        self.0.max_prefix_len()
    }

    /// How many addresses it spans, capped at `u64::MAX` (an IPv6 /64 spans 2^64).
    pub fn size(&self) -> u64 {
        let host_bits = u32::from(self.family_bits() - self.prefix());
        1u64.checked_shl(host_bits).unwrap_or(u64::MAX)
    }

    /// Whether `ip` lies inside (an address of the other family never does).
    pub fn contains(&self, ip: impl Into<IpAddr>) -> bool {
        self.0.contains(&ip.into())
    }

    /// The `i`th address inside (`None` past the end).
    pub fn nth(&self, i: u64) -> Option<IpAddr> {
        let host_bits = u32::from(self.family_bits() - self.prefix());
        if host_bits < 64 && i >= 1u64 << host_bits {
            return None;
        }
        Some(match self.0 {
            IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + i as u32)),
            IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) + u128::from(i))),
        })
    }

    /// The `i`th block of length `prefix` inside this one (`None` past the end, or if `prefix`
    /// is shorter than this block's or longer than the family's addresses).
    pub fn subblock(&self, prefix: u8, i: u64) -> Option<Block> {
        if prefix < self.prefix() || prefix > self.family_bits() {
            return None;
        }
        let bits = u32::from(prefix - self.prefix());
        if bits < 64 && i >= 1u64 << bits {
            return None;
        }
        let shift = u32::from(self.family_bits() - prefix);
        let base: IpAddr = match self.0 {
            // i < 2^bits <= 2^32 here, so it fits.
            IpNet::V4(n) => {
                let off = u32::try_from(i).ok()?.checked_shl(shift).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | off))
            }
            IpNet::V6(n) => {
                let off = u128::from(i).checked_shl(shift).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | off))
            }
        };
        Block::new(base, prefix)
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.network(), self.0.prefix_len())
    }
}

/// The same as before the switch to `IpNet`: `Block { base: 10.32.0.0, prefix: 27 }`.
impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("base", &self.network())
            .field("prefix", &self.prefix())
            .finish()
    }
}

impl From<Block> for IpNet {
    fn from(b: Block) -> IpNet {
        b.0
    }
}

/// Refuses a prefix with host bits set.
impl TryFrom<IpNet> for Block {
    type Error = BadBlock;
    fn try_from(net: IpNet) -> Result<Block, BadBlock> {
        if net.trunc() == net {
            Ok(Block(net))
        } else {
            Err(BadBlock(net.to_string()))
        }
    }
}

/// Why a string is not a block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a prefix with its host bits zero, A.B.C.D/N or x:y::/N")]
pub struct BadBlock(pub String);

/// Strictly `ADDRESS/N`: an IPv4 address in dotted decimal or an IPv6 address in any of its
/// text forms, host bits zero, `N` at most 32 or 128. IPv4 blocks are the form routers of every
/// version read and write.
impl FromStr for Block {
    type Err = BadBlock;
    fn from_str(s: &str) -> Result<Block, BadBlock> {
        let bad = || BadBlock(s.to_string());
        let (a, n) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = n.parse().map_err(|_| bad())?;
        let b = Block::new(addr, prefix).ok_or_else(bad)?;
        if b.base() != addr {
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
