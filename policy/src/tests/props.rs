//! Property tests: random clusters (namespaces with and without objects, pods with labels and
//! named ports, some with IPv6 addresses, spread over hosts; policies of every shape) compiled
//! per host, written as nftables, and the interpreter of those rulesets checked against the
//! reference evaluator for every pair of endpoints (pods, a pod the cluster does not know, an
//! identity-less address, outside addresses, the hosts) and a set of protocols and ports.

use super::interp::{Interp, Packet};
use crate::nft::{self, Ruleset};
use crate::reference::{allows, Endpoint, Protocol};
use crate::{compile, Cluster, PodKey};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

pub const HOSTS: usize = 3;

fn labels(
    keys: &'static [&'static str],
    values: &'static [&'static str],
) -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(keys).prop_map(str::to_string),
        prop::sample::select(values).prop_map(str::to_string),
        0..3,
    )
}

fn selector(
    keys: &'static [&'static str],
    values: &'static [&'static str],
) -> impl Strategy<Value = Value> {
    let expr = (
        prop::sample::select(keys),
        prop::sample::select(&["In", "NotIn", "Exists", "DoesNotExist"][..]),
        prop::collection::btree_set(prop::sample::select(values), 1..3),
    )
        .prop_map(|(k, op, vals)| {
            if op == "In" || op == "NotIn" {
                json!({"key": k, "operator": op, "values": vals})
            } else {
                json!({"key": k, "operator": op})
            }
        });
    (
        prop::collection::btree_map(
            prop::sample::select(keys).prop_map(str::to_string),
            prop::sample::select(values).prop_map(str::to_string),
            0..2,
        ),
        prop::collection::vec(expr, 0..2),
    )
        .prop_map(|(ml, me)| json!({"matchLabels": ml, "matchExpressions": me}))
}

const POD_KEYS: &[&str] = &["app", "role"];
const POD_VALUES: &[&str] = &["a", "b"];
const NS_KEYS: &[&str] = &["team", "kubernetes.io/metadata.name"];
const NS_VALUES: &[&str] = &["x", "y", "ns0", "ns1", "ns2"];
const PORT_NAMES: &[&str] = &["http", "dns", "nope"];
pub const PORTS: &[u16] = &[53, 80, 8080];

fn protocol() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(&[None, Some("TCP"), Some("UDP"), Some("SCTP")][..])
}

fn peer() -> impl Strategy<Value = Value> {
    let blocks: &[(&str, &[&str])] = &[
        ("10.0.0.0/24", &[]),
        ("10.0.0.0/24", &["10.0.0.0/30"]),
        ("10.0.0.0/29", &["10.0.0.4/31", "10.0.0.6/32"]),
        ("0.0.0.0/0", &["10.0.0.0/28"]),
        ("10.0.0.128/25", &[]),
        ("fd00::/64", &["fd00::/126"]),
        ("::/0", &[]),
        ("192.168.0.0/16", &[]),
    ];
    prop_oneof![
        selector(POD_KEYS, POD_VALUES).prop_map(|s| json!({"podSelector": s})),
        selector(NS_KEYS, NS_VALUES).prop_map(|s| json!({"namespaceSelector": s})),
        (selector(NS_KEYS, NS_VALUES), selector(POD_KEYS, POD_VALUES))
            .prop_map(|(n, p)| json!({"namespaceSelector": n, "podSelector": p})),
        prop::sample::select(blocks)
            .prop_map(|(c, e)| json!({"ipBlock": {"cidr": c, "except": e}})),
    ]
}

fn port() -> impl Strategy<Value = Value> {
    prop_oneof![
        protocol().prop_map(|p| json!({"protocol": p})),
        (protocol(), prop::sample::select(PORTS))
            .prop_map(|(p, n)| json!({"protocol": p, "port": n})),
        (
            protocol(),
            prop::sample::select(&[(50u16, 80u16), (80, 8080)][..])
        )
            .prop_map(|(p, (a, b))| json!({"protocol": p, "port": a, "endPort": b})),
        (protocol(), prop::sample::select(PORT_NAMES))
            .prop_map(|(p, n)| json!({"protocol": p, "port": n})),
    ]
}

fn rules(peers_field: &'static str) -> impl Strategy<Value = Option<Vec<Value>>> {
    let rule = (
        prop::option::of(prop::collection::vec(peer(), 0..3)),
        prop::option::of(prop::collection::vec(port(), 0..3)),
    )
        .prop_map(move |(peers, ports)| {
            let mut r = serde_json::Map::new();
            if let Some(p) = peers {
                r.insert(peers_field.into(), p.into());
            }
            if let Some(p) = ports {
                r.insert("ports".into(), p.into());
            }
            Value::Object(r)
        });
    prop::option::of(prop::collection::vec(rule, 0..3))
}

const POLICY_TYPES: &[Option<&[&str]>] = &[
    None,
    Some(&["Ingress"]),
    Some(&["Egress"]),
    Some(&["Ingress", "Egress"]),
];

fn policy() -> impl Strategy<Value = Value> {
    (
        0..3usize,
        selector(POD_KEYS, POD_VALUES),
        prop::sample::select(POLICY_TYPES),
        rules("from"),
        rules("to"),
    )
        .prop_map(|(ns, sel, types, ingress, egress)| {
            let mut spec = json!({"podSelector": sel});
            if let Some(t) = types {
                spec["policyTypes"] = json!(t);
            }
            if let Some(i) = ingress {
                spec["ingress"] = json!(i);
            }
            if let Some(e) = egress {
                spec["egress"] = json!(e);
            }
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                   "metadata": {"namespace": format!("ns{ns}"), "name": "p"}, "spec": spec})
        })
}

/// A pod: namespace, labels, named ports (name -> (port, protocol)), has IPv6, host.
type PodGen = (
    usize,
    BTreeMap<String, String>,
    BTreeMap<&'static str, (u16, &'static str)>,
    bool,
    usize,
);

fn pod() -> impl Strategy<Value = PodGen> {
    (
        0..3usize,
        labels(POD_KEYS, POD_VALUES),
        prop::collection::btree_map(
            prop::sample::select(PORT_NAMES),
            (
                prop::sample::select(&[53u16, 80, 8080, 9000][..]),
                prop::sample::select(&["TCP", "UDP", "SCTP"][..]),
            ),
            0..3,
        ),
        any::<bool>(),
        0..HOSTS,
    )
}

/// A random cluster with its addresses and hosts.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub cluster: Cluster,
    pub addresses: BTreeMap<PodKey, Vec<IpAddr>>,
    /// The host of each pod (the ghost, known to the host but not to the cluster, is on 0).
    pub hosts: BTreeMap<PodKey, usize>,
}

pub fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(prop::option::of(labels(&["team"], &["x", "y"])), 3),
        prop::collection::vec(pod(), 1..7),
        prop::collection::vec(policy(), 0..4),
    )
        .prop_map(|(namespaces, pods, policies)| {
            let mut objects: Vec<Value> = Vec::new();
            for (i, ns) in namespaces.iter().enumerate() {
                if let Some(l) = ns {
                    objects.push(json!({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": format!("ns{i}"), "labels": l}}));
                }
            }
            let mut addresses = BTreeMap::new();
            let mut hosts = BTreeMap::new();
            for (i, (ns, labels, ports, v6, host)) in pods.iter().enumerate() {
                let name = format!("p{i}");
                let ports: Vec<Value> = ports
                    .iter()
                    .map(
                        |(n, (p, proto))| json!({"name": n, "containerPort": p, "protocol": proto}),
                    )
                    .collect();
                objects.push(json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": format!("ns{ns}"), "labels": labels},
                    "spec": {"containers": [{"name": "c", "ports": ports}]}}));
                let key = PodKey {
                    namespace: format!("ns{ns}"),
                    name,
                };
                let mut a: Vec<IpAddr> = vec![format!("10.0.0.{}", i + 1).parse().unwrap()];
                if *v6 {
                    a.push(format!("fd00::{}", i + 1).parse().unwrap());
                }
                addresses.insert(key.clone(), a);
                hosts.insert(key, *host);
            }
            for (i, mut p) in policies.into_iter().enumerate() {
                p["metadata"]["name"] = json!(format!("pol{i}"));
                objects.push(p);
            }
            let mut cluster = Cluster::new();
            for o in objects {
                let obj = crate::manifest::parse("p.json", &o.to_string())
                    .unwrap()
                    .remove(0);
                cluster
                    .upsert(&obj)
                    .unwrap_or_else(|e| panic!("{e} in {o}"));
            }
            // A pod the host knows but the cluster does not (no object yet).
            let ghost = PodKey {
                namespace: "ns0".into(),
                name: "ghost".into(),
            };
            addresses.insert(ghost.clone(), vec!["10.0.0.201".parse().unwrap()]);
            hosts.insert(ghost, 0);
            Scenario {
                cluster,
                addresses,
                hosts,
            }
        })
}

impl Scenario {
    /// The ruleset of each host.
    pub fn rulesets(&self) -> Vec<Ruleset> {
        (0..HOSTS)
            .map(|h| {
                let local: BTreeSet<PodKey> = self
                    .hosts
                    .iter()
                    .filter(|(_, hh)| **hh == h)
                    .map(|(k, _)| k.clone())
                    .collect();
                nft::ruleset(&compile(&self.cluster, &self.addresses, &local))
            })
            .collect()
    }

    /// Every endpoint, with its host if it is on one.
    fn endpoints(&self) -> Vec<(Endpoint, Option<usize>)> {
        let mut out = Vec::new();
        for (k, addrs) in &self.addresses {
            for a in addrs {
                out.push((
                    Endpoint {
                        addr: *a,
                        pod: Some(k.clone()),
                    },
                    Some(self.hosts[k]),
                ));
            }
        }
        // Attached without an identity, on host 0.
        out.push((
            Endpoint {
                addr: "10.0.0.200".parse().unwrap(),
                pod: None,
            },
            Some(0),
        ));
        for a in [
            "10.0.0.130",
            "192.168.3.4",
            "8.8.8.8",
            "fd00::99",
            "2001:db8::1",
        ] {
            out.push((
                Endpoint {
                    addr: a.parse().unwrap(),
                    pod: None,
                },
                None,
            ));
        }
        out
    }
}

/// Checks every connection; returns the numbers checked and denied.
pub fn check(s: &Scenario) -> (usize, usize) {
    let rulesets = s.rulesets();
    let mut interps: Vec<Interp<'_>> = rulesets.iter().map(Interp::new).collect();
    let endpoints = s.endpoints();
    let (mut checked, mut denied) = (0, 0);
    let host_addr = |h: usize| -> IpAddr { format!("10.99.0.{h}").parse().unwrap() };
    for (src, src_host) in &endpoints {
        // Destinations: every endpoint of the family, and the source's own host.
        let mut dsts: Vec<(Endpoint, Option<usize>, bool)> = endpoints
            .iter()
            .map(|(e, h)| (e.clone(), *h, false))
            .collect();
        if let (Some(h), true) = (src_host, src.addr.is_ipv4()) {
            dsts.push((
                Endpoint {
                    addr: host_addr(*h),
                    pod: None,
                },
                Some(*h),
                true,
            ));
        }
        for (dst, dst_host, to_host) in &dsts {
            if dst.addr == src.addr || dst.addr.is_ipv4() != src.addr.is_ipv4() {
                continue;
            }
            for protocol in [
                Protocol::Tcp,
                Protocol::Udp,
                Protocol::Sctp,
                Protocol::Other(1),
            ] {
                let ports: &[u16] = if let Protocol::Other(_) = protocol {
                    &[0]
                } else {
                    PORTS
                };
                for &port in ports {
                    let want = allows(&s.cluster, &s.addresses, src, dst, protocol, port);
                    let p = Packet {
                        src: src.addr,
                        dst: dst.addr,
                        protocol,
                        port,
                    };
                    let got = if *to_host {
                        interps[dst_host.unwrap()].hook_allows("input", &p)
                    } else {
                        let mut hosts: Vec<usize> =
                            src_host.iter().chain(dst_host.iter()).copied().collect();
                        hosts.dedup();
                        hosts.iter().all(|h| interps[*h].hook_allows("forward", &p))
                    };
                    assert_eq!(
                        got, want,
                        "{src:?} (host {src_host:?}) -> {dst:?} (host {dst_host:?}) {protocol:?}/{port}\n{:#?}",
                        s.cluster
                    );
                    checked += 1;
                    denied += usize::from(!want);
                }
            }
        }
    }
    (checked, denied)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn compiled_rulesets_agree_with_the_reference(s in scenario()) {
        let (checked, denied) = check(&s);
        DENIED.with(|d| {
            let mut d = d.borrow_mut();
            d.0 += checked;
            d.1 += denied;
        });
    }
}

thread_local! {
    static DENIED: std::cell::RefCell<(usize, usize)> = const { std::cell::RefCell::new((0, 0)) };
}

/// The generators make cases where both answers occur, often.
#[test]
fn the_property_sees_both_verdicts() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut checked, mut denied) = (0, 0);
    for _ in 0..16 {
        let s = scenario().new_tree(&mut runner).unwrap().current();
        let (c, d) = check(&s);
        checked += c;
        denied += d;
    }
    eprintln!("{denied} of {checked} denied");
    assert!(
        denied * 10 > checked && denied * 10 < checked * 9,
        "{denied} of {checked} denied"
    );
}
