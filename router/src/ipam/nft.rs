//! The masquerade table (`table ip weft`) as an `nft -f` script, its removal, and running `nft`.

use super::*;
use anyhow::{bail, Context, Result};
use gossip::ipam::Block;
use std::io::Write;

/// The nftables script that replaces `table ip weft` with the masquerade rule, atomically (the
/// whole script is one transaction).
pub fn masquerade_ruleset(cidr: Block) -> String {
    format!(
        "table ip {NFT_TABLE}\n\
         delete table ip {NFT_TABLE}\n\
         table ip {NFT_TABLE} {{\n\
         \x20 chain postrouting {{\n\
         \x20   type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   ip saddr {cidr} ip daddr != {cidr} counter masquerade comment \"weft: pods to outside the pod CIDR\"\n\
         \x20 }}\n\
         }}\n"
    )
}

/// The nftables script that removes `table ip weft` (and succeeds when there is none).
pub fn remove_ruleset() -> String {
    format!("table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\n")
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
