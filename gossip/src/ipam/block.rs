//! [`Block`]: an IP prefix, the pod CIDR or one block of it, and its text form (the form on the
//! wire and in state files).

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

/// An IP prefix with its host bits zero: the pod CIDR or one block of it. Shown and serialized as
/// `A.B.C.D/N`.
///
/// A thin wrapper over [`ipnet::IpNet`] (convert with [`Block::net`] and `TryFrom<IpNet>`), so
/// that one prefix type serves both address families. IPAM is IPv4 only today: every way to
/// make a `Block` ([`Block::new`], parsing, deserializing, `TryFrom<IpNet>`) refuses IPv6,
/// because the block arithmetic ([`super::IpamConfig::block`]) and the router's address
/// reservations are IPv4. The IPv4 accessors ([`Block::base`], [`Block::contains`],
/// [`Block::nth`], [`Block::size`]) rely on that.
///
/// The wrapper, rather than `IpNet` itself, keeps the text form strict: `IpNet`'s own parser
/// accepts host bits set (`10.32.0.1/27`), which a block must not have.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Block(IpNet);

impl Block {
    /// An IPv4 prefix from an address and a length; host bits are cleared. `None` if
    /// `prefix > 32`.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Block> {
        let net = Ipv4Net::new(addr, prefix).ok()?;
        Some(Block(IpNet::V4(net.trunc())))
    }

    /// The prefix as an [`IpNet`].
    pub fn net(&self) -> IpNet {
        self.0
    }

    /// The first address (host bits zero), of either family.
    pub fn network(&self) -> IpAddr {
        self.0.network()
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.0.prefix_len()
    }

    /// The IPv4 prefix. Every block is IPv4 today (see the type's documentation).
    fn v4(&self) -> Ipv4Net {
        match self.0 {
            IpNet::V4(n) => n,
            IpNet::V6(_) => unreachable!("blocks are IPv4 only: no constructor makes an IPv6 one"),
        }
    }

    /// The first address (host bits zero). IPv4, like every block today.
    pub fn base(&self) -> Ipv4Addr {
        self.v4().network()
    }

    /// How many addresses it spans.
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix())
    }

    /// Whether `ip` lies inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.v4().contains(&ip)
    }

    /// The `i`th address inside (`None` past the end).
    pub fn nth(&self, i: u64) -> Option<Ipv4Addr> {
        (i < self.size()).then(|| Ipv4Addr::from(u32::from(self.base()) + i as u32))
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

/// Refuses a prefix with host bits set, and (IPAM being IPv4 only today) an IPv6 one.
impl TryFrom<IpNet> for Block {
    type Error = BadBlock;
    fn try_from(net: IpNet) -> Result<Block, BadBlock> {
        match net {
            IpNet::V4(n) if n.trunc() == n => Ok(Block(net)),
            _ => Err(BadBlock(net.to_string())),
        }
    }
}

/// Why a string is not a block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IPv4 prefix A.B.C.D/N")]
pub struct BadBlock(pub String);

/// Strictly `A.B.C.D/N`, host bits zero, `N` at most 32: the form routers of every version read
/// and write. IPv4 only today (see [`Block`]).
impl FromStr for Block {
    type Err = BadBlock;
    fn from_str(s: &str) -> Result<Block, BadBlock> {
        let bad = || BadBlock(s.to_string());
        let (a, n) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
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
