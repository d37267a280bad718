//! [`HostRules`] as nftables: the ruleset of `table inet weft_policy`, modelled as sets with
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

mod json;
mod script;

use crate::compile::{AddrRange, NamedPort, PortRange, RuleSets};
use crate::model::Direction;
use crate::reference::Protocol;
use crate::HostRules;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

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

/// The two address families: selector keyword, name suffix, set type.
const FAMILIES: [(&str, &str, &str); 2] = [("ip", "_v4", "ipv4_addr"), ("ip6", "_v6", "ipv6_addr")];

fn family_of(addr: &IpAddr) -> &'static str {
    if addr.is_ipv4() {
        "_v4"
    } else {
        "_v6"
    }
}

fn proto_name(p: Protocol) -> String {
    match p {
        Protocol::Tcp => "tcp".into(),
        Protocol::Udp => "udp".into(),
        Protocol::Sctp => "sctp".into(),
        Protocol::Other(n) => n.to_string(),
    }
}

/// An address range as nft lists it: an address, a prefix, or `first-last`.
pub fn range_element(r: &AddrRange) -> String {
    let (first, last, bits) = match (r.first, r.last) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return format!("{}-{}", r.first, r.last),
    };
    if first == last {
        return r.first.to_string();
    }
    let size = last.wrapping_sub(first).wrapping_add(1);
    if size == 0 && first == 0 {
        return format!("{}/0", r.first);
    }
    if size.is_power_of_two() && first % size == 0 {
        return format!("{}/{}", r.first, bits - size.trailing_zeros());
    }
    format!("{}-{}", r.first, r.last)
}

fn port_element(p: &PortRange) -> String {
    if p.first == p.last {
        format!("{} . {}", proto_name(p.protocol), p.first)
    } else {
        format!("{} . {}-{}", proto_name(p.protocol), p.first, p.last)
    }
}

fn named_element(n: &NamedPort) -> String {
    format!("{} . {} . {}", n.addr, proto_name(n.protocol), n.port)
}

/// A builder for one ruleset.
#[derive(Debug, Default)]
struct Builder {
    out: Ruleset,
}

impl Builder {
    fn set(&mut self, name: String, key_type: &str, interval: bool, elements: BTreeSet<String>) {
        self.out.sets.insert(
            name,
            Set {
                key_type: key_type.into(),
                data_type: None,
                interval,
                elements,
            },
        );
    }

    /// A per-family pair of address sets (`<name>_v4`, `<name>_v6`), each address in its own.
    fn addr_sets<'a>(
        &mut self,
        name: &str,
        interval: bool,
        elements: impl Iterator<Item = (&'a str, String)>,
    ) {
        let mut by_fam: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for (fam, e) in elements {
            by_fam.entry(fam).or_default().insert(e);
        }
        for (_, suffix, ty) in FAMILIES {
            let els = by_fam.remove(suffix).unwrap_or_default();
            self.set(format!("{name}{suffix}"), ty, interval, els);
        }
    }
}

/// The ruleset for `rules`.
pub fn ruleset(rules: &HostRules) -> Ruleset {
    let mut b = Builder::default();
    // Counters and counter maps.
    for (dir, d) in [
        (Direction::Ingress, "ingress"),
        (Direction::Egress, "egress"),
    ] {
        for (verdict, v) in [(Verdict::Allowed, "allow"), (Verdict::Dropped, "drop")] {
            let mut maps: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
            for addr in rules.local.keys() {
                let name = counter_name(*addr, dir, verdict);
                maps.entry(family_of(addr))
                    .or_default()
                    .insert(format!("{addr} : \"{name}\""));
                b.out.counters.insert(name);
            }
            for (_, suffix, ty) in FAMILIES {
                b.out.sets.insert(
                    format!("{d}_{v}_counters{suffix}"),
                    Set {
                        key_type: ty.into(),
                        data_type: Some("counter".into()),
                        interval: false,
                        elements: maps.remove(suffix).unwrap_or_default(),
                    },
                );
            }
        }
    }
    let addrs = |s: &BTreeSet<IpAddr>| {
        s.iter()
            .map(|a| (family_of(a), a.to_string()))
            .collect::<Vec<_>>()
    };
    b.addr_sets(
        "ingress_isolated",
        false,
        addrs(&rules.ingress_isolated).into_iter(),
    );
    b.addr_sets(
        "egress_isolated",
        false,
        addrs(&rules.egress_isolated).into_iter(),
    );

    // Base chains.
    let base = |hook: &str, priority: i32| {
        Some(BaseChain {
            hook: hook.into(),
            priority,
        })
    };
    for (name, hook, priority, dir) in [
        ("egress", "forward", -10, Direction::Egress),
        ("ingress", "forward", -5, Direction::Ingress),
        ("egress_host", "input", -10, Direction::Egress),
    ] {
        let (d, key) = side(dir);
        let mut r = vec!["ct state established,related accept".to_string()];
        for (ip, suffix, _) in FAMILIES {
            r.push(format!("{ip} {key} @{d}_isolated{suffix} jump {d}_check"));
        }
        for (ip, suffix, _) in FAMILIES {
            r.push(format!(
                "ct state new counter name {ip} {key} map @{d}_allow_counters{suffix}"
            ));
        }
        b.out
            .chains
            .insert(name.into(), Chain::new(base(hook, priority), name, r));
    }
    for dir in [Direction::Ingress, Direction::Egress] {
        let (d, key) = side(dir);
        let short = if dir == Direction::Ingress {
            "in"
        } else {
            "eg"
        };
        let mut check = Vec::new();
        for (id, p) in &rules.policies {
            if p.rules(dir).is_some() {
                for (ip, suffix, _) in FAMILIES {
                    check.push(format!(
                        "{ip} {key} @pol_{id}_sel{suffix} jump pol_{id}_{short}"
                    ));
                }
            }
        }
        check.push(format!(
            "limit rate 10/second burst 20 packets log group {LOG_GROUP} prefix \"weft-policy {d}-deny: \""
        ));
        for (ip, suffix, _) in FAMILIES {
            check.push(format!(
                "counter name {ip} {key} map @{d}_drop_counters{suffix}"
            ));
        }
        check.push("drop".into());
        b.out.chains.insert(
            format!("{d}_check"),
            Chain::new(None, &format!("{d}_check"), check),
        );
        let mut allow = Vec::new();
        for (ip, suffix, _) in FAMILIES {
            allow.push(format!(
                "counter name {ip} {key} map @{d}_allow_counters{suffix} accept"
            ));
        }
        allow.push("accept".into());
        b.out.chains.insert(
            format!("{d}_allow"),
            Chain::new(None, &format!("{d}_allow"), allow),
        );
    }

    // Policies.
    for (id, p) in &rules.policies {
        b.addr_sets(
            &format!("pol_{id}_sel"),
            false,
            addrs(&p.selected).into_iter(),
        );
        for dir in [Direction::Ingress, Direction::Egress] {
            let Some(prules) = p.rules(dir) else { continue };
            let short = if dir == Direction::Ingress {
                "in"
            } else {
                "eg"
            };
            let mut chain = Vec::new();
            for (i, r) in prules.iter().enumerate() {
                let prefix = format!("pol_{id}_{short}{i}");
                policy_rule(&mut b, &mut chain, dir, &prefix, r);
            }
            let label = format!(
                "policy {} {}",
                p.key,
                if dir == Direction::Ingress {
                    "ingress"
                } else {
                    "egress"
                }
            );
            b.out
                .chains
                .insert(format!("pol_{id}_{short}"), Chain::new(None, &label, chain));
        }
    }
    b.out
}

/// For a direction: the word used in names and the address the local pod is on.
fn side(dir: Direction) -> (&'static str, &'static str) {
    match dir {
        Direction::Ingress => ("ingress", "daddr"),
        Direction::Egress => ("egress", "saddr"),
    }
}

/// The sets and rules of one policy rule.
fn policy_rule(
    b: &mut Builder,
    chain: &mut Vec<String>,
    dir: Direction,
    prefix: &str,
    r: &RuleSets,
) {
    let (d, _) = side(dir);
    let peer_key = if dir == Direction::Ingress {
        "saddr"
    } else {
        "daddr"
    };
    let verdict = format!("goto {d}_allow");
    if let Some(pods) = &r.pods {
        b.addr_sets(&format!("{prefix}_pods"), false, addrs_of(pods));
    }
    if let Some(blocks) = &r.blocks {
        let els = blocks
            .iter()
            .map(|x| (family_of(&x.first), range_element(x)));
        b.addr_sets(&format!("{prefix}_blocks"), true, els);
    }
    if let Some(ports) = &r.ports {
        let els = ports.iter().map(port_element).collect();
        b.set(
            format!("{prefix}_ports"),
            "inet_proto . inet_service",
            true,
            els,
        );
    }
    if let Some(named) = &r.named {
        let mut by_fam: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for n in named {
            by_fam
                .entry(family_of(&n.addr))
                .or_default()
                .insert(named_element(n));
        }
        for (_, suffix, ty) in FAMILIES {
            let els = by_fam.remove(suffix).unwrap_or_default();
            b.set(
                format!("{prefix}_named{suffix}"),
                &format!("{ty} . inet_proto . inet_service"),
                false,
                els,
            );
        }
    }
    // Port matchers, family-independent ("" = any port) or per family (named).
    let mut port_matchers: Vec<Option<String>> = Vec::new();
    if r.any_port {
        port_matchers.push(Some(String::new()));
    }
    if r.ports.is_some() {
        port_matchers.push(Some(format!("meta l4proto . th dport @{prefix}_ports ")));
    }
    let named = r.named.is_some();
    // Peer matchers per family ("" = any peer).
    let mut peer_sets: Vec<&str> = Vec::new();
    if r.pods.is_some() {
        peer_sets.push("pods");
    }
    if r.blocks.is_some() {
        peer_sets.push("blocks");
    }
    for pm in port_matchers.iter().flatten() {
        if r.any_peer {
            chain.push(format!("{pm}{verdict}"));
        }
        for (ip, suffix, _) in FAMILIES {
            for s in &peer_sets {
                chain.push(format!(
                    "{ip} {peer_key} @{prefix}_{s}{suffix} {pm}{verdict}"
                ));
            }
        }
    }
    if named {
        for (ip, suffix, _) in FAMILIES {
            let nm = format!("{ip} daddr . meta l4proto . th dport @{prefix}_named{suffix} ");
            match dir {
                // The elements are the selected pods' own ports; the peer is checked apart.
                Direction::Ingress => {
                    if r.any_peer {
                        chain.push(format!("{nm}{verdict}"));
                    }
                    for (ip2, suffix2, _) in FAMILIES {
                        if ip2 != ip {
                            continue;
                        }
                        for s in &peer_sets {
                            chain.push(format!("{ip2} saddr @{prefix}_{s}{suffix2} {nm}{verdict}"));
                        }
                    }
                }
                // The elements are the peer pods' ports: the set is the peer check.
                Direction::Egress => chain.push(format!("{nm}{verdict}")),
            }
        }
    }
}

fn addrs_of(s: &BTreeSet<IpAddr>) -> impl Iterator<Item = (&'static str, String)> + '_ {
    s.iter().map(|a| (family_of(a), a.to_string()))
}

/// The script that removes the table (and succeeds when there is none).
pub fn remove() -> String {
    format!("table inet {TABLE}\ndelete table inet {TABLE}\n")
}
