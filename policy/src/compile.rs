//! The compiler: cluster state + pod addresses + this host's pods -> [`HostRules`], the
//! family-independent description of what this host enforces (which local pods are isolated in
//! each direction, and for each policy that selects a local pod, its rules as address sets and
//! port sets). [`crate::nft`] writes it as nftables.
//!
//! The shape of [`HostRules`] (which policies appear, which rules, which matchers each rule has)
//! depends only on the policies and on which policies select a local pod; pods coming, going or
//! changing labels elsewhere only change the contents of the sets. That is what lets
//! [`crate::nft::transaction`] turn most changes into set element updates.
//!
//! Speed: pods are indexed by namespace, namespace labels are computed once, and the pods a
//! (namespace selector, pod selector) pair selects are computed once per compile.

use crate::model::{Direction, Peer, PodState, Policy, PortRef, Rule, Selector};
use crate::reference::Protocol;
use crate::{Cluster, PodKey};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What one host enforces. Equality is what the router compares to decide whether anything
/// changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostRules {
    /// The local pods' addresses (local pods with an address, in the cluster or not).
    pub local: BTreeMap<IpAddr, PodKey>,
    /// Local addresses selected by at least one policy of type Ingress.
    pub ingress_isolated: BTreeSet<IpAddr>,
    /// Local addresses selected by at least one policy of type Egress.
    pub egress_isolated: BTreeSet<IpAddr>,
    /// The policies that select at least one local pod, by [`policy_id`].
    pub policies: BTreeMap<String, PolicyRules>,
}

impl HostRules {
    /// The local pods, by address, for counters and status.
    pub fn local_pods(&self) -> BTreeMap<IpAddr, PodKey> {
        self.local.clone()
    }
}

/// One policy as this host enforces it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRules {
    /// `namespace/name`.
    pub key: String,
    /// The local addresses it selects.
    pub selected: BTreeSet<IpAddr>,
    /// Its ingress rules, when it is of type Ingress (empty: deny all).
    pub ingress: Option<Vec<RuleSets>>,
    /// Its egress rules, when it is of type Egress.
    pub egress: Option<Vec<RuleSets>>,
}

impl PolicyRules {
    /// The rules of one direction.
    pub fn rules(&self, direction: Direction) -> Option<&[RuleSets]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }
}

/// One rule: it matches when the peer matches one of the peer matchers and the port matches
/// one of the port matchers. Each `Option` is `Some` when the rule has that kind of matcher
/// (then possibly with no elements).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSets {
    /// No `from`/`to`: every peer.
    pub any_peer: bool,
    /// The addresses of the pods its pod peers select.
    pub pods: Option<BTreeSet<IpAddr>>,
    /// Its ipBlocks, `except` removed: disjoint, sorted, non-adjacent ranges.
    pub blocks: Option<Vec<AddrRange>>,
    /// No `ports`: every port of every protocol.
    pub any_port: bool,
    /// Numeric ports, ranges and protocol-only entries (`0-65535`), merged per protocol.
    pub ports: Option<Vec<PortRange>>,
    /// Named ports resolved: for ingress on the selected local pods, for egress on the pods
    /// the peers select (all pods for a rule without `to`). Absent for an egress rule whose only
    /// peers are ipBlocks: a named port cannot be resolved there and matches nothing.
    pub named: Option<BTreeSet<NamedPort>>,
}

/// An inclusive address range of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddrRange {
    /// The first address.
    pub first: IpAddr,
    /// The last address (same family).
    pub last: IpAddr,
}

/// An inclusive port range of one protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// TCP, UDP or SCTP.
    pub protocol: Protocol,
    /// First port.
    pub first: u16,
    /// Last port.
    pub last: u16,
}

/// A named port resolved on one pod address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedPort {
    /// The destination pod's address.
    pub addr: IpAddr,
    /// The protocol.
    pub protocol: Protocol,
    /// The port number.
    pub port: u16,
}

/// The short stable identifier of a policy in nft names: 16 hex digits of FNV-1a over
/// `namespace/name` (and `salt`, non-zero only after a collision).
pub fn policy_id(key: &str, salt: u32) -> String {
    let salted = if salt == 0 {
        key.to_string()
    } else {
        format!("{key}#{salt}")
    };
    format!("{:016x}", fnv64(salted.as_bytes()))
}

/// FNV-1a, 64 bits: stable across builds and platforms.
pub(crate) fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A pod with its addresses, as indexed for one compile.
#[derive(Debug)]
struct Indexed<'a> {
    state: &'a PodState,
    addrs: &'a [IpAddr],
}

/// Compiles the rules for the pods of `local` (their addresses are in `addresses`).
pub fn compile(
    cluster: &Cluster,
    addresses: &BTreeMap<PodKey, Vec<IpAddr>>,
    local: &BTreeSet<PodKey>,
) -> HostRules {
    let mut out = HostRules::default();
    let none: &[IpAddr] = &[];
    // Pods by namespace, with their addresses.
    let mut by_ns: BTreeMap<&str, Vec<Indexed<'_>>> = BTreeMap::new();
    let mut local_by_ns: BTreeMap<&str, Vec<Indexed<'_>>> = BTreeMap::new();
    for (key, state) in cluster.pods() {
        let addrs = addresses.get(key).map(Vec::as_slice).unwrap_or(none);
        by_ns
            .entry(&key.namespace)
            .or_default()
            .push(Indexed { state, addrs });
        if local.contains(key) {
            local_by_ns
                .entry(&key.namespace)
                .or_default()
                .push(Indexed { state, addrs });
        }
    }
    for key in local {
        for a in addresses.get(key).into_iter().flatten() {
            out.local.insert(*a, key.clone());
        }
    }
    let ns_labels: BTreeMap<&str, _> = by_ns
        .keys()
        .map(|ns| (*ns, cluster.namespace_labels(ns)))
        .collect();
    let mut cache: BTreeMap<(Option<Selector>, String, Selector), BTreeSet<IpAddr>> =
        BTreeMap::new();
    let mut used_ids = BTreeSet::new();

    for policy in cluster.policies() {
        let selected_pods: Vec<&Indexed<'_>> = local_by_ns
            .get(policy.namespace.as_str())
            .into_iter()
            .flatten()
            .filter(|p| policy.pod_selector.matches(&p.state.labels))
            .collect();
        let selected: BTreeSet<IpAddr> = selected_pods
            .iter()
            .flat_map(|p| p.addrs.iter().copied())
            .collect();
        if selected.is_empty() {
            continue;
        }
        let key = policy.key();
        let mut salt = 0;
        let mut id = policy_id(&key, salt);
        while !used_ids.insert(id.clone()) {
            salt += 1;
            id = policy_id(&key, salt);
        }
        let mut cx = Cx {
            by_ns: &by_ns,
            ns_labels: &ns_labels,
            cache: &mut cache,
        };
        let mut rules_of = |direction: Direction| {
            policy.rules(direction).map(|rules| {
                rules
                    .iter()
                    .map(|r| cx.rule(policy, r, direction, &selected_pods))
                    .collect::<Vec<_>>()
            })
        };
        let ingress = rules_of(Direction::Ingress);
        let egress = rules_of(Direction::Egress);
        if ingress.is_some() {
            out.ingress_isolated.extend(selected.iter().copied());
        }
        if egress.is_some() {
            out.egress_isolated.extend(selected.iter().copied());
        }
        out.policies.insert(
            id,
            PolicyRules {
                key,
                selected,
                ingress,
                egress,
            },
        );
    }
    out
}

/// What one compile shares between policies.
struct Cx<'c, 'a> {
    by_ns: &'c BTreeMap<&'a str, Vec<Indexed<'a>>>,
    ns_labels: &'c BTreeMap<&'a str, crate::model::Labels>,
    cache: &'c mut BTreeMap<(Option<Selector>, String, Selector), BTreeSet<IpAddr>>,
}

impl std::fmt::Debug for Cx<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cx").finish_non_exhaustive()
    }
}

impl<'a> Cx<'_, 'a> {
    /// The pods (with addresses) a pod peer selects.
    fn peer_pods(
        &self,
        policy: &Policy,
        namespaces: &Option<Selector>,
        pods: &Selector,
    ) -> Vec<&Indexed<'a>> {
        self.by_ns
            .iter()
            .filter(|(ns, _)| match namespaces {
                None => **ns == policy.namespace,
                Some(s) => s.matches(&self.ns_labels[**ns]),
            })
            .flat_map(|(_, pods)| pods.iter())
            .filter(|p| pods.matches(&p.state.labels))
            .collect()
    }

    fn rule(
        &mut self,
        policy: &Policy,
        rule: &Rule,
        direction: Direction,
        selected: &[&Indexed<'a>],
    ) -> RuleSets {
        let mut out = RuleSets {
            any_peer: rule.peers.is_none(),
            any_port: rule.ports.is_none(),
            ..Default::default()
        };
        let mut block_ranges = Vec::new();
        let mut pod_peers: Vec<(&Option<Selector>, &Selector)> = Vec::new();
        for peer in rule.peers.iter().flatten() {
            match peer {
                Peer::Pods { namespaces, pods } => {
                    let cache_key = (
                        namespaces.clone(),
                        if namespaces.is_none() {
                            policy.namespace.clone()
                        } else {
                            String::new()
                        },
                        pods.clone(),
                    );
                    if !self.cache.contains_key(&cache_key) {
                        let addrs = self
                            .peer_pods(policy, namespaces, pods)
                            .iter()
                            .flat_map(|p| p.addrs.iter().copied())
                            .collect();
                        self.cache.insert(cache_key.clone(), addrs);
                    }
                    out.pods
                        .get_or_insert_with(BTreeSet::new)
                        .extend(self.cache[&cache_key].iter().copied());
                    pod_peers.push((namespaces, pods));
                }
                Peer::IpBlock { cidr, except } => {
                    let mut ranges = vec![to_u128(cidr.network(), cidr.broadcast())];
                    for e in except {
                        let (elo, ehi) = to_u128(e.network(), e.broadcast()).1;
                        ranges = subtract(ranges, elo, ehi);
                    }
                    block_ranges.extend(ranges);
                }
            }
        }
        if rule
            .peers
            .as_ref()
            .is_some_and(|p| p.iter().any(|p| matches!(p, Peer::IpBlock { .. })))
        {
            out.blocks = Some(merge(block_ranges));
        }
        let mut ranges = Vec::new();
        let mut named = Vec::new();
        for p in rule.ports.iter().flatten() {
            match &p.port {
                None => ranges.push((p.protocol, 0, 65535)),
                Some(PortRef::Range(a, b)) => ranges.push((p.protocol, *a, *b)),
                Some(PortRef::Named(n)) => named.push((p.protocol, n.as_str())),
            }
        }
        if !ranges.is_empty() {
            out.ports = Some(merge_ports(ranges));
        }
        let resolvable = direction == Direction::Ingress || out.any_peer || !pod_peers.is_empty();
        if !named.is_empty() && resolvable {
            let targets: Vec<&Indexed<'a>> = match direction {
                Direction::Ingress => selected.to_vec(),
                Direction::Egress if out.any_peer => self.by_ns.values().flatten().collect(),
                Direction::Egress => {
                    let mut t = Vec::new();
                    for (ns, pods) in &pod_peers {
                        t.extend(self.peer_pods(policy, ns, pods));
                    }
                    t
                }
            };
            let mut set = BTreeSet::new();
            for pod in targets {
                for (protocol, name) in &named {
                    if let Some(port) = pod.state.resolve(name, *protocol) {
                        for addr in pod.addrs {
                            set.insert(NamedPort {
                                addr: *addr,
                                protocol: *protocol,
                                port,
                            });
                        }
                    }
                }
            }
            out.named = Some(set);
        }
        out
    }
}

/// A range as (is IPv6, (first, last)) in u128.
fn to_u128(first: IpAddr, last: IpAddr) -> (bool, (u128, u128)) {
    match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (false, (u32::from(a).into(), u32::from(b).into())),
        (IpAddr::V6(a), IpAddr::V6(b)) => (true, (a.into(), b.into())),
        _ => unreachable!("a network's first and last addresses have one family"),
    }
}

fn from_u128(v6: bool, v: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(v))
    } else {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    }
}

/// `ranges` minus `[lo, hi]` (of the same family as the ranges it touches).
fn subtract(ranges: Vec<(bool, (u128, u128))>, lo: u128, hi: u128) -> Vec<(bool, (u128, u128))> {
    let mut out = Vec::new();
    for (v6, (a, b)) in ranges {
        if hi < a || lo > b {
            out.push((v6, (a, b)));
            continue;
        }
        if lo > a {
            out.push((v6, (a, lo - 1)));
        }
        if hi < b {
            out.push((v6, (hi + 1, b)));
        }
    }
    out
}

/// Sorted, merged (overlapping or adjacent), per family.
fn merge(mut ranges: Vec<(bool, (u128, u128))>) -> Vec<AddrRange> {
    ranges.sort();
    let mut merged: Vec<(bool, (u128, u128))> = Vec::new();
    for (v6, (a, b)) in ranges {
        match merged.last_mut() {
            Some((lv6, (_, lb))) if *lv6 == v6 && a <= lb.saturating_add(1) => *lb = (*lb).max(b),
            _ => merged.push((v6, (a, b))),
        }
    }
    merged
        .into_iter()
        .map(|(v6, (a, b))| AddrRange {
            first: from_u128(v6, a),
            last: from_u128(v6, b),
        })
        .collect()
}

fn merge_ports(mut ranges: Vec<(Protocol, u16, u16)>) -> Vec<PortRange> {
    ranges.sort();
    let mut merged: Vec<PortRange> = Vec::new();
    for (protocol, first, last) in ranges {
        match merged.last_mut() {
            Some(m) if m.protocol == protocol && u32::from(first) <= u32::from(m.last) + 1 => {
                m.last = m.last.max(last)
            }
            _ => merged.push(PortRange {
                protocol,
                first,
                last,
            }),
        }
    }
    merged
}
