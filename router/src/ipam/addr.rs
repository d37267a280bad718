//! Address arithmetic of pod IPAM: block sizes, the checks on `--pod-cidr` and
//! `--pod-block-prefix`, durations as flags spell them, and which addresses of a block a pod may
//! get (never the network address, the gateway, or the pod CIDR's first or last).

use anyhow::{bail, Context, Result};
use gossip::ipam::Block;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// The default block size for a pod CIDR. IPv4: /24, or the CIDR's prefix + 2 (four blocks)
/// when the CIDR is a /23 or smaller. IPv6: /64 (Kubernetes' default per-node size) when the CIDR
/// is a /44 to a /56; for a longer CIDR 8 bits more than it (256 blocks), at most /120; for a
/// shorter one 20 bits more (2^20 blocks, the most a CIDR may hold).
pub fn default_block_prefix(cidr: Block) -> u8 {
    let p = cidr.prefix();
    if cidr.is_ipv6() {
        (p + 8).max(64).min(p.saturating_add(20)).min(120)
    } else if p >= 23 {
        p + 2
    } else {
        24
    }
}

/// Checks that blocks of `/block_prefix` fit inside `cidr` and hold at least 4 addresses.
pub fn validate(cidr: Block, block_prefix: u8) -> Result<()> {
    if block_prefix < cidr.prefix() {
        bail!(
            "--pod-block-prefix {block_prefix} makes blocks larger than the pod CIDR {cidr}: it must be {} or more",
            cidr.prefix()
        );
    }
    let most = cidr.family_bits() - 2;
    if block_prefix > most {
        bail!(
            "--pod-block-prefix {block_prefix} makes blocks of fewer than 4 addresses: it must be {most} or less"
        );
    }
    Ok(())
}

/// Parses a duration such as `90s`, `15m`, `1h`, `1h30m` or `2d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration> {
    let t = s.trim();
    if t.is_empty() {
        bail!("an empty duration: write e.g. 90s, 15m or 1h");
    }
    if let Ok(n) = t.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => bail!("{s:?} is not a duration: use s, m, h or d, e.g. 90s, 15m, 1h"),
        };
        let n: u64 = num
            .parse()
            .with_context(|| format!("{s:?} is not a duration: a unit needs a number before it"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .with_context(|| format!("{s:?} is too long"))?;
        num.clear();
    }
    if !num.is_empty() {
        bail!("{s:?} is not a duration: {num} has no unit (s, m, h or d)");
    }
    Ok(Duration::from_secs(total))
}

/// The `i`th address after `a` (wrapping), in `a`'s family.
fn offset(a: IpAddr, i: u128) -> IpAddr {
    match a {
        IpAddr::V4(x) => IpAddr::V4(Ipv4Addr::from(u32::from(x).wrapping_add(i as u32))),
        IpAddr::V6(x) => IpAddr::V6(Ipv6Addr::from(u128::from(x).wrapping_add(i))),
    }
}

/// The gateway of a block: its second address.
pub fn gateway(block: Block) -> IpAddr {
    offset(block.base(), 1)
}

/// The last address of a block.
pub(crate) fn last(block: Block) -> IpAddr {
    let host_bits = u32::from(block.family_bits() - block.prefix());
    let size = 1u128.checked_shl(host_bits).unwrap_or(0).wrapping_sub(1);
    offset(block.base(), size)
}

/// Whether `ip` may be given to a pod: not a block's network or gateway address, not the pod
/// CIDR's first or last address.
pub fn assignable(cidr: Block, block: Block, ip: IpAddr) -> bool {
    block.contains(ip)
        && ip != block.base()
        && ip != gateway(block)
        && ip != cidr.base()
        && ip != last(cidr)
}

/// A dual-stack cluster's IPv6 pod CIDR and the IPv4 one its addresses are mapped from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DualStack {
    /// The IPv4 pod CIDR (the one the cluster agrees blocks of).
    pub cidr4: Block,
    /// The IPv6 pod CIDR.
    pub cidr6: Block,
}

impl DualStack {
    /// Checks the pair: `cidr4` IPv4, `cidr6` IPv6 and at least as large (so that every IPv4
    /// address of the pod CIDR has its own IPv6 one).
    pub fn new(cidr4: Block, cidr6: Block) -> Result<DualStack> {
        if cidr4.is_ipv6() || !cidr6.is_ipv6() {
            bail!("a dual-stack cluster has one IPv4 and one IPv6 --pod-cidr (got {cidr4} and {cidr6})");
        }
        let bits4 = 32 - cidr4.prefix();
        if 128 - cidr6.prefix() < bits4 {
            bail!(
                "--pod-cidr {cidr6} is smaller than {cidr4}: every pod's IPv6 address is mapped from \
                 its IPv4 one, so the IPv6 pod CIDR needs at least {bits4} host bits (a /{} or \
                 larger, e.g. a /48)",
                128 - bits4
            );
        }
        Ok(DualStack { cidr4, cidr6 })
    }

    /// The IPv6 address of the pod (or gateway) with the IPv4 address `v4`: the IPv6 CIDR's
    /// first address plus `v4`'s offset in the IPv4 CIDR (`10.32.1.5` in `10.32.0.0/12` is
    /// `fd10:32::105` in `fd10:32::/48`). `None` for an address outside the IPv4 CIDR.
    pub fn map(&self, ip: IpAddr) -> Option<Ipv6Addr> {
        let IpAddr::V4(v4) = ip else {
            return None;
        };
        if !self.cidr4.contains(v4) {
            return None;
        }
        let (IpAddr::V4(base4), IpAddr::V6(base6)) = (self.cidr4.base(), self.cidr6.base()) else {
            return None;
        };
        let offset = u32::from(v4) - u32::from(base4);
        Some(Ipv6Addr::from(u128::from(base6) + u128::from(offset)))
    }

    /// The IPv6 twin of the IPv4 block `b`: where its addresses map to (`10.32.1.0/24` is
    /// `fd10:32::100/120` in the example of [`DualStack::map`]).
    pub fn block(&self, b: Block) -> Option<Block> {
        if b.is_ipv6() {
            return None;
        }
        Block::new(self.map(b.base())?, 128 - (32 - b.prefix()))
    }
}
