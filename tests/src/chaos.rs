//! What the chaos and soak tests (`tests/tests/chaos.rs`, `tests/tests/soak.rs`) share: loss on
//! the underlay with nftables inside a host namespace, UDP segmentation on a host's underlay
//! link, snapshots of what a router leaves in its host (links, nftables tables), the control
//! connections of a report (to tell a connection that stayed up from a new one), and samples of a
//! process's memory and file descriptors from `/proc`.

use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use weft_api::status::Report;
use weft_lab::{Host, Lab};

/// The nftables table the loss rules live in (inside a host namespace; not one of Weft's).
pub const LOSS_TABLE: &str = "weftchaos";

/// Drops `percent` % of the UDP datagrams to port `port` arriving at `host` (nftables `numgen
/// random` in the host namespace's prerouting hook), replacing any earlier rate; 0 removes the
/// rule. The drops are counted: see [`loss_dropped`].
pub fn set_udp_loss(lab: &Lab, host: &Host, port: u16, percent: u32) -> Result<()> {
    let mut rules = format!("table ip {LOSS_TABLE}\ndelete table ip {LOSS_TABLE}\n");
    if percent > 0 {
        rules.push_str(&format!(
            "table ip {LOSS_TABLE} {{\n  counter dropped {{ }}\n  chain pre {{\n    type filter hook prerouting priority -300; policy accept;\n    udp dport {port} numgen random mod 100 < {percent} counter name \"dropped\" drop\n  }}\n}}\n"
        ));
    }
    lab.nft(&host.ns, &rules)
}

/// Packets the loss rule of [`set_udp_loss`] dropped in `host` so far.
pub fn loss_dropped(lab: &Lab, host: &Host) -> Result<u64> {
    let out = lab.exec_ok(
        &host.ns,
        &["nft", "list", "counter", "ip", LOSS_TABLE, "dropped"],
    )?;
    out.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no packet count in {out}"))
}

/// Turns UDP segmentation offload of `host`'s underlay link `eth0` on or off (`ethtool -K eth0
/// tx-udp-segmentation`): off, the kernel cuts the router's UDP GSO bundles into single
/// datagrams before they leave the host, so that a drop on the underlay loses one datagram, not
/// a bundle.
pub fn set_udp_segmentation(lab: &Lab, host: &Host, on: bool) -> Result<()> {
    let v = if on { "on" } else { "off" };
    lab.exec_ok(
        &host.ns,
        &["ethtool", "-K", "eth0", "tx-udp-segmentation", v],
    )
    .map(drop)
}

/// What a router leaves in its host namespace: the names of the links, the nftables tables and
/// the number of rules and set elements in them (`nft list ruleset`, lines that are not braces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSnapshot {
    /// Link names (`ip -o link show`).
    pub links: BTreeSet<String>,
    /// `family name` of every nftables table, sorted (a table there twice would show twice).
    pub tables: Vec<String>,
    /// Lines of the ruleset (rules, set elements, declarations; the flood limit's dynamic set as
    /// one line), a measure of leftover rules.
    pub ruleset_lines: usize,
}

/// Takes a [`HostSnapshot`] of namespace `ns`.
pub fn host_snapshot(lab: &Lab, ns: &str) -> Result<HostSnapshot> {
    let links = lab
        .exec_ok(ns, &["ip", "-o", "link", "show"])?
        .lines()
        .filter_map(|l| {
            let name = l.split(':').nth(1)?.trim();
            Some(name.split('@').next()?.to_owned())
        })
        .collect();
    let mut tables: Vec<String> = lab
        .exec_ok(ns, &["nft", "list", "tables"])?
        .lines()
        .filter_map(|l| l.strip_prefix("table ").map(str::to_owned))
        .collect();
    tables.sort();
    // The flood limit's dynamic set (`flood_rate`, one token bucket per port that sent floods,
    // expiring after a minute idle) comes and goes with traffic: it counts as one line.
    let ruleset = lab.exec_ok(ns, &["nft", "list", "ruleset"])?;
    let mut ruleset_lines = 0;
    let mut in_dynamic_set = false;
    for l in ruleset.lines().map(str::trim) {
        if in_dynamic_set {
            in_dynamic_set = l != "}";
            continue;
        }
        if l.starts_with("set flood_rate ") {
            in_dynamic_set = true;
        }
        if !l.is_empty() && l != "}" {
            ruleset_lines += 1;
        }
    }
    Ok(HostSnapshot {
        links,
        tables,
        ruleset_lines,
    })
}

/// One control connection as status shows it: (remote address, we dialled, seconds up).
pub type ConnKey = (String, bool, u64);

/// The control connections of a report, by peer nickname.
pub fn connections(r: &Report) -> BTreeMap<String, ConnKey> {
    r.connections
        .iter()
        .map(|c| {
            (
                c.nickname.clone(),
                (c.addr.clone(), c.outbound, c.established_secs),
            )
        })
        .collect()
}

/// The connections of `before` that were replaced or lost by the time of `after`, `secs_between`
/// seconds later: a connection that stayed up keeps its address and direction and has been up for
/// at least as long as it had plus the time between (less a second for rounding). Empty when
/// every connection stayed up.
pub fn reconnected(
    before: &BTreeMap<String, ConnKey>,
    after: &BTreeMap<String, ConnKey>,
    secs_between: u64,
) -> Vec<String> {
    before
        .iter()
        .filter(|(peer, (addr, out, up))| match after.get(*peer) {
            Some((a, o, u)) => a != addr || o != out || *u + 1 < up + secs_between,
            None => true,
        })
        .map(|(peer, b)| format!("{peer}: {b:?} -> {:?}", after.get(peer)))
        .collect()
}

/// Resident memory and open file descriptors of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// `VmRSS` in KiB.
    pub rss_kib: u64,
    /// Entries in `/proc/<pid>/fd`.
    pub fds: usize,
}

/// Samples `pid` from `/proc`.
pub fn proc_sample(pid: u32) -> Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no VmRSS for {pid}"))?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("listing /proc/{pid}/fd"))?
        .count();
    Ok(ProcSample { rss_kib, fds })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conns(list: &[(&str, &str, bool, u64)]) -> BTreeMap<String, ConnKey> {
        list.iter()
            .map(|(p, a, o, u)| (p.to_string(), (a.to_string(), *o, *u)))
            .collect()
    }

    #[test]
    fn reconnections_are_told_from_connections_that_stayed_up() {
        let before = conns(&[("h2", "10.200.0.12:6783", true, 10)]);
        let same = conns(&[("h2", "10.200.0.12:6783", true, 25)]);
        assert!(reconnected(&before, &same, 15).is_empty());
        let reset = conns(&[("h2", "10.200.0.12:6783", true, 3)]);
        assert_eq!(reconnected(&before, &reset, 15).len(), 1);
        let other_port = conns(&[("h2", "10.200.0.12:40000", false, 30)]);
        assert_eq!(reconnected(&before, &other_port, 15).len(), 1);
        assert_eq!(reconnected(&before, &BTreeMap::new(), 15).len(), 1);
    }

    #[test]
    fn samples_this_process() {
        let s = proc_sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.fds >= 3, "{s:?}");
    }
}
