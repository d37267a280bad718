//! The kernel side of policy: `nft -f` transactions on `table inet weft_policy`, reading the
//! table back (for reconciling after a restart, and its counters), and the bridge's netfilter
//! switch (`net.bridge.bridge-nf-call-iptables`), without which bridged pod-to-pod traffic never
//! reaches the inet hooks. All blocking: run from `spawn_blocking`.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;
use weft_policy::model::Direction;
use weft_policy::nft::{self, Ruleset, Verdict};

/// Runs one `nft -f` script (one transaction: all of it or nothing).
pub fn run(script: &str) -> Result<()> {
    crate::ipam::nft(script)
}

/// The table as the kernel holds it (`None`: no table, or nft unavailable).
pub fn read_table() -> Option<Ruleset> {
    let out = Command::new("nft")
        .args(["-j", "list", "table", "inet", nft::TABLE])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    nft::from_json(&String::from_utf8_lossy(&out.stdout))
}

/// The per-pod counters: (address, direction, verdict) -> (packets, bytes); empty without a
/// table.
pub fn read_counters() -> BTreeMap<(IpAddr, Direction, Verdict), (u64, u64)> {
    let Ok(out) = Command::new("nft")
        .args(["-j", "list", "counters", "table", "inet", nft::TABLE])
        .output()
    else {
        return BTreeMap::new();
    };
    if !out.status.success() {
        return BTreeMap::new();
    }
    nft::counters_from_json(&String::from_utf8_lossy(&out.stdout))
}

/// The sysctls that send bridged IPv4 and IPv6 frames through the inet hooks.
const BRIDGE_NF: [&str; 2] = [
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
];

/// Turns bridge netfilter on in this network namespace (the host's), so that the inet forward
/// hook sees pods' traffic on the bridge: between two pods of the host, and through the TAP
/// and VXLAN ports. kube-proxy needs the same switch for Services.
pub fn enable_bridge_netfilter() -> Result<()> {
    for path in BRIDGE_NF {
        match std::fs::read_to_string(path) {
            Ok(v) if v.trim() == "1" => continue,
            Ok(_) => std::fs::write(path, "1").with_context(|| format!("writing 1 to {path}"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{path} does not exist: the br_netfilter module is not loaded \
                 (`modprobe br_netfilter`); without it policy cannot see traffic between pods"
            ),
            Err(e) => return Err(e).with_context(|| format!("reading {path}")),
        }
    }
    Ok(())
}

/// Removes the table (`weft leave`).
pub fn remove() -> Result<()> {
    run(&nft::remove())
}
