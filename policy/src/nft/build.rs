//! [`ruleset`]: [`HostRules`] to the [`Ruleset`] of `table inet weft_policy` (the layout is
//! described in [`crate::nft`]): counters and counter maps per local pod address, isolation
//! sets, base chains, check and allow chains, one chain per policy and direction with the sets
//! of its rules, and the text of set elements exactly as `nft` lists them (so that a ruleset
//! read back with [`super::from_json`] compares equal).

use super::{counter_name, BaseChain, Chain, Ruleset, Set, Verdict, LOG_GROUP};
use crate::compile::{AddrRange, NamedPort, PortRange, RuleSets};
use crate::model::Direction;
use crate::reference::Protocol;
use crate::HostRules;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

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
