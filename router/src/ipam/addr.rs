//! Address arithmetic of pod IPAM: block sizes, the checks on `--pod-cidr` and
//! `--pod-block-prefix`, durations as flags spell them, and which addresses of a block a pod may
//! get (never the network address, the gateway, or the pod CIDR's first or last).

use anyhow::{bail, Context, Result};
use gossip::ipam::Block;
use std::net::{IpAddr, Ipv4Addr};
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

/// A block's first address as IPv4. The router's pod side is IPv4 only for now: its start
/// refuses an IPv6 pod CIDR, and a block outside the pod CIDR is never held, so an IPv6 block
/// does not get here (it would map to 0.0.0.0, which is never assignable).
fn base4(block: Block) -> Ipv4Addr {
    match block.base() {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    }
}

/// The gateway of a block: its second address.
pub fn gateway(block: Block) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base4(block)).wrapping_add(1))
}

/// The last address of a block.
pub(crate) fn last(block: Block) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base4(block)).wrapping_add((block.size() - 1) as u32))
}

/// Whether `ip` may be given to a pod: not a block's network or gateway address, not the pod
/// CIDR's first or last address.
pub fn assignable(cidr: Block, block: Block, ip: Ipv4Addr) -> bool {
    block.contains(ip)
        && ip != base4(block)
        && ip != gateway(block)
        && ip != base4(cidr)
        && ip != last(cidr)
}
