//! The masquerade tables (`table ip weft`, and `table ip6 weft` on a dual-stack cluster) as an
//! `nft -f` script, its removal, and running `nft`.

use super::*;
use anyhow::{bail, Context, Result};
use gossip::ipam::Block;
use std::io::Write;

/// The nftables script that replaces `table ip weft` and `table ip6 weft` with the masquerade
/// rule of each family that has a pod CIDR (`cidr`, and the dual-stack `cidr6`), and removes the
/// table of a family that has none (left from an earlier configuration), atomically (the whole
/// script is one transaction). Pod to pod is never masqueraded.
pub fn masquerade_ruleset(cidr: Block, cidr6: Option<Block>) -> String {
    let (v4, v6) = if cidr.is_ipv6() {
        (None, Some(cidr))
    } else {
        (Some(cidr), cidr6)
    };
    let mut s = String::new();
    for (family, ip, c) in [("ip", "ip", v4), ("ip6", "ip6", v6)] {
        s.push_str(&format!(
            "table {family} {NFT_TABLE}\ndelete table {family} {NFT_TABLE}\n"
        ));
        if let Some(c) = c {
            s.push_str(&format!(
                "table {family} {NFT_TABLE} {{\n\
                 \x20 chain postrouting {{\n\
                 \x20   type nat hook postrouting priority srcnat; policy accept;\n\
                 \x20   {ip} saddr {c} {ip} daddr != {c} counter masquerade comment \"weft: pods to outside the pod CIDR\"\n\
                 \x20 }}\n\
                 }}\n"
            ));
        }
    }
    s
}

/// The nftables script that removes `table ip weft` and `table ip6 weft` (and succeeds when
/// there are none).
pub fn remove_ruleset() -> String {
    format!(
        "table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\ntable ip6 {NFT_TABLE}\ndelete table ip6 {NFT_TABLE}\n"
    )
}

/// Runs `nft -f -` with `script` on stdin.
pub(crate) fn nft(script: &str) -> Result<()> {
    use std::process::{Command, Stdio};
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (is nftables installed?)")?;
    let written = child
        .stdin
        .take()
        .context("nft has no stdin")?
        .write_all(script.as_bytes());
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        bail!(
            "nft failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    written.context("writing to nft")
}
