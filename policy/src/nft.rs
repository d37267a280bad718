//! [`HostRules`](crate::HostRules) as nftables: the ruleset of `table inet weft_policy`, modelled as sets with
//! elements and chains with rules ([`Ruleset`]), so that going from one ruleset to the next is
//! one `nft -f` transaction of set element additions and deletions and of rewritten chains only
//! where their rules changed ([`transaction`]).
//!
//! The table (one `inet` table, every rule written once per family with `ip`/`ip6`, every
//! address set once per family as `<name>_v4` of `ipv4_addr` and `<name>_v6` of `ipv6_addr`):
//!
//! * base chains, policy accept: `egress` (hook forward, priority -10), `ingress` (hook
//!   forward, priority -5), `egress_host` (hook input, priority -10: a pod's connections to its
//!   own host). Each: `ct state established,related accept`; the isolated local pods (sets
//!   `egress_isolated_*` / `ingress_isolated_*`) jump to `egress_check` / `ingress_check`; at the
//!   end, new connections of local pods that are not isolated are counted as allowed.
//! * `egress_check` / `ingress_check`: one guarded jump per policy chain
//!   (`ip saddr @pol_<id>_sel_v4 jump pol_<id>_eg`), then a rate-limited `log group 8`, the
//!   per-pod drop counter and `drop`.
//! * `egress_allow` / `ingress_allow`: the per-pod allow counter and `accept`; a policy rule that
//!   matches does `goto` there, which ends the base chain (the other direction's base chain still
//!   runs: only a drop is final across base chains).
//! * `pol_<id>_in` / `pol_<id>_eg`, `<id>` = [`crate::compile::policy_id`]: one rule per peer
//!   matcher and port matcher of each policy rule, on sets `pol_<id>_{in,eg}<n>_{pods,blocks,
//!   ports,named}`. Numeric ports as `meta l4proto . th dport @…_ports` (interval set of
//!   `inet_proto . inet_service`), named ports as `ip daddr . meta l4proto . th dport @…_named_v4`
//!   (elements: for ingress the selected local pods' own resolutions, for egress the peer pods').
//! * Named counters `{in,eg}_{allow,drop}_<hex address>` per local pod address, reached through
//!   the maps `{ingress,egress}_{allow,drop}_counters_{v4,v6}` ([`counter_name`],
//!   [`parse_counter_name`]).
//!
//! Every chain starts with a rule `continue comment "weft-policy fp=<hash> …"`, the fingerprint
//! of its content: [`from_json`] reads it back so that a router that restarts can reconcile
//! the kernel's table with [`transaction`] without flushing it. Names are generated from hashes,
//! addresses and fixed words only; the only user strings (policy names) go into those comments,
//! restricted to a safe alphabet.

mod build;
mod json;
mod script;

use crate::model::Direction;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

pub use build::{range_element, ruleset};
pub use json::{counters_from_json, from_json};
pub use script::transaction;

/// The table (family `inet`).
pub const TABLE: &str = "weft_policy";

/// The NFLOG group denials are logged to.
pub const LOG_GROUP: u16 = 8;

/// A ruleset as written (and as read back from the kernel, for reconciling after a restart).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Named counters.
    pub counters: BTreeSet<String>,
    /// Sets and maps, by name.
    pub sets: BTreeMap<String, Set>,
    /// Chains, by name.
    pub chains: BTreeMap<String, Chain>,
}

/// A set or a map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Set {
    /// The key type as nft writes it: `ipv4_addr`, `inet_proto . inet_service`, ...
    pub key_type: String,
    /// For a map, the data type (`counter`).
    pub data_type: Option<String>,
    /// `flags interval`.
    pub interval: bool,
    /// Elements as nft lists them (`10.0.0.0/24`, `tcp . 80-90`, `10.0.0.1 : "eg_drop_0a000001"`).
    pub elements: BTreeSet<String>,
}

impl Set {
    /// The definition's body (`type ...; flags ...;`), what decides whether a set must be
    /// recreated.
    pub fn definition(&self) -> String {
        let mut d = match &self.data_type {
            Some(data) => format!("type {} : {data};", self.key_type),
            None => format!("type {};", self.key_type),
        };
        if self.interval {
            d.push_str(" flags interval;");
        }
        d
    }
}

/// A chain: for a base chain its hook and priority; its rules and their fingerprint. Two chains
/// are equal when their base definitions and fingerprints are (a chain read from the kernel
/// has its fingerprint but not its rules' text).
#[derive(Debug, Clone, Default)]
pub struct Chain {
    /// For a base chain: hook and priority (type filter, policy accept).
    pub base: Option<BaseChain>,
    /// The fingerprint of the rules (hex).
    pub fingerprint: String,
    /// The rules as written, the fingerprint rule first (empty when read from the kernel).
    pub rules: Vec<String>,
}

impl PartialEq for Chain {
    fn eq(&self, other: &Chain) -> bool {
        self.base == other.base && self.fingerprint == other.fingerprint
    }
}

impl Eq for Chain {}

/// A base chain's hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    /// `forward`, `input`.
    pub hook: String,
    /// The priority, numeric (`filter` is 0).
    pub priority: i32,
}

const FINGERPRINT_PREFIX: &str = "weft-policy fp=";

impl Chain {
    /// A chain with `rules`, its fingerprint rule (commented with `label`) put first.
    pub fn new(base: Option<BaseChain>, label: &str, rules: Vec<String>) -> Chain {
        let label = safe_comment(label);
        let mut text = format!("{base:?}\n{label}\n");
        for r in &rules {
            text.push_str(r);
            text.push('\n');
        }
        let fingerprint = format!("{:016x}", crate::compile::fnv64(text.as_bytes()));
        let mut all = vec![format!(
            "continue comment \"{FINGERPRINT_PREFIX}{fingerprint} {label}\""
        )];
        all.extend(rules);
        Chain {
            base,
            fingerprint,
            rules: all,
        }
    }
}

/// A user string made safe for a quoted nft comment: letters, digits and `-._/:= ` only, at
/// most 160 bytes.
pub fn safe_comment(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._/:= ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(160)
        .collect()
}

/// Whether a counter counts allowed or dropped connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// New connections allowed.
    Allowed,
    /// Packets of connections refused.
    Dropped,
}

/// The named counter of a local pod address for one direction and verdict:
/// `{in,eg}_{allow,drop}_<8 or 32 hex digits>`.
pub fn counter_name(addr: IpAddr, direction: Direction, verdict: Verdict) -> String {
    let d = match direction {
        Direction::Ingress => "in",
        Direction::Egress => "eg",
    };
    let v = match verdict {
        Verdict::Allowed => "allow",
        Verdict::Dropped => "drop",
    };
    let hex = match addr {
        IpAddr::V4(a) => format!("{:08x}", u32::from(a)),
        IpAddr::V6(a) => format!("{:032x}", u128::from(a)),
    };
    format!("{d}_{v}_{hex}")
}

/// The inverse of [`counter_name`].
pub fn parse_counter_name(name: &str) -> Option<(IpAddr, Direction, Verdict)> {
    let mut parts = name.splitn(3, '_');
    let direction = match parts.next()? {
        "in" => Direction::Ingress,
        "eg" => Direction::Egress,
        _ => return None,
    };
    let verdict = match parts.next()? {
        "allow" => Verdict::Allowed,
        "drop" => Verdict::Dropped,
        _ => return None,
    };
    let hex = parts.next()?;
    if !hex
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return None;
    }
    let addr = match hex.len() {
        8 => IpAddr::V4(u32::from_str_radix(hex, 16).ok()?.into()),
        32 => IpAddr::V6(u128::from_str_radix(hex, 16).ok()?.into()),
        _ => return None,
    };
    Some((addr, direction, verdict))
}

/// The script that removes the table (and succeeds when there is none).
pub fn remove() -> String {
    format!("table inet {TABLE}\ndelete table inet {TABLE}\n")
}
