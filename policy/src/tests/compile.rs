//! The compiler on literal cases: the host rules' shape, and the generated ruleset
//! interpreted on packets, compared with the reference evaluator; IPv6; counters.

use super::interp::{Interp, Packet};
use super::reference::{addresses, PODS};
use super::{cluster, key};
use crate::compile::RuleSets;
use crate::model::Direction;
use crate::nft::{self, counter_name, Verdict};
use crate::reference::{allows, Endpoint, Protocol};
use crate::{compile, Cluster, PodKey};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

const POLICY: &str = r#"
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: prod}
spec:
  podSelector: {matchLabels: {role: db}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - ipBlock: {cidr: 172.17.0.0/16, except: [172.17.1.0/24]}
    - ipBlock: {cidr: "fd00:1::/48", except: ["fd00:1::/64"]}
    - namespaceSelector: {matchLabels: {project: myproject}}
      podSelector: {matchLabels: {role: frontend}}
    ports: [{port: 6379}, {port: dns, protocol: UDP}]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/30, except: [10.0.0.2/32]}}]
    ports: [{port: 5978}, {port: http}]
"#;

fn ep(a: &str, pod: Option<&str>) -> Endpoint {
    Endpoint {
        addr: a.parse().unwrap(),
        pod: pod.map(key),
    }
}

/// The verdict of the host holding every pod, for a forward packet.
fn forward(c: &Cluster, addrs: &BTreeMap<PodKey, Vec<IpAddr>>, p: Packet) -> bool {
    let local: BTreeSet<PodKey> = addrs.keys().cloned().collect();
    let rs = nft::ruleset(&compile(c, addrs, &local));
    Interp::new(&rs).hook_allows("forward", &p)
}

#[test]
fn host_rules_shape() {
    let c = cluster(&format!("{PODS}{POLICY}"));
    let local: BTreeSet<PodKey> = [key("prod/db")].into();
    let rules = compile(&c, &addresses(), &local);
    let db: IpAddr = "10.0.0.1".parse().unwrap();
    assert_eq!(rules.local_pods(), BTreeMap::from([(db, key("prod/db"))]));
    assert_eq!(rules.ingress_isolated, BTreeSet::from([db]));
    assert_eq!(rules.egress_isolated, BTreeSet::from([db]));
    let p = rules.policies.values().next().unwrap();
    assert_eq!(p.key, "prod/db");
    let r: &RuleSets = &p.rules(Direction::Ingress).unwrap()[0];
    assert_eq!(
        r.pods.as_ref().unwrap(),
        &BTreeSet::from(["10.0.0.2".parse().unwrap()])
    );
    let blocks: Vec<String> = r
        .blocks
        .as_ref()
        .unwrap()
        .iter()
        .map(nft::range_element)
        .collect();
    assert_eq!(
        blocks,
        [
            "172.17.0.0/24",
            "172.17.2.0-172.17.255.255",
            "fd00:1:0:1::-fd00:1:0:ffff:ffff:ffff:ffff:ffff"
        ]
    );
    // dns resolves on db (the selected pod) as UDP 53.
    let named: Vec<_> = r
        .named
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| (n.addr, n.port))
        .collect();
    assert_eq!(named, [(db, 53)]);
    // Egress to an ipBlock only: the named port is not resolvable, no named set.
    assert!(p.rules(Direction::Egress).unwrap()[0].named.is_none());
    // Nothing local selected: no policy, nothing isolated.
    let none = compile(&c, &addresses(), &[key("prod/web")].into());
    assert!(none.policies.is_empty() && none.ingress_isolated.is_empty());
}

#[test]
fn the_ruleset_does_what_the_reference_says() {
    let c = cluster(&format!("{PODS}{POLICY}"));
    let a = addresses();
    let cases = [
        (
            ep("10.0.0.2", Some("prod/web")),
            ep("10.0.0.1", Some("prod/db")),
            Protocol::Tcp,
            6379,
        ),
        (
            ep("10.0.0.2", Some("prod/web")),
            ep("10.0.0.1", Some("prod/db")),
            Protocol::Udp,
            53,
        ),
        (
            ep("10.0.0.2", Some("prod/web")),
            ep("10.0.0.1", Some("prod/db")),
            Protocol::Tcp,
            53,
        ),
        (
            ep("10.0.0.3", Some("dev/tool")),
            ep("10.0.0.1", Some("prod/db")),
            Protocol::Tcp,
            6379,
        ),
        (
            ep("172.17.0.5", None),
            ep("10.0.0.1", Some("prod/db")),
            Protocol::Tcp,
            6379,
        ),
        (
            ep("172.17.1.5", None),
            ep("10.0.0.1", Some("prod/db")),
            Protocol::Tcp,
            6379,
        ),
        (
            ep("10.0.0.1", Some("prod/db")),
            ep("10.0.0.3", Some("dev/tool")),
            Protocol::Tcp,
            5978,
        ),
        (
            ep("10.0.0.1", Some("prod/db")),
            ep("10.0.0.2", Some("prod/web")),
            Protocol::Tcp,
            5978,
        ),
        (
            ep("10.0.0.1", Some("prod/db")),
            ep("10.0.0.3", Some("dev/tool")),
            Protocol::Tcp,
            8080,
        ),
        (
            ep("10.0.0.1", Some("prod/db")),
            ep("10.0.0.3", Some("dev/tool")),
            Protocol::Other(1),
            0,
        ),
        (
            ep("10.0.0.4", Some("nowhere/lost")),
            ep("10.0.0.3", Some("dev/tool")),
            Protocol::Other(1),
            0,
        ),
    ];
    let expected = [
        true, true, false, false, true, false, true, false, false, false, true,
    ];
    for ((from, to, proto, port), want) in cases.iter().zip(expected) {
        assert_eq!(
            allows(&c, &a, from, to, *proto, *port),
            want,
            "reference {from:?} {to:?} {port}"
        );
        let p = Packet {
            src: from.addr,
            dst: to.addr,
            protocol: *proto,
            port: *port,
        };
        assert_eq!(forward(&c, &a, p), want, "ruleset {from:?} {to:?} {port}");
    }
}

#[test]
fn ipv6_pods_and_blocks() {
    let c = cluster(&format!("{PODS}{POLICY}"));
    let mut a = addresses();
    a.get_mut(&key("prod/db"))
        .unwrap()
        .push("fd00::1".parse().unwrap());
    a.get_mut(&key("prod/web"))
        .unwrap()
        .push("fd00::2".parse().unwrap());
    let to_db = |src: &str, proto, port| Packet {
        src: src.parse().unwrap(),
        dst: "fd00::1".parse().unwrap(),
        protocol: proto,
        port,
    };
    for (src, proto, port, want) in [
        ("fd00::2", Protocol::Tcp, 6379, true),
        ("fd00::2", Protocol::Udp, 53, true),
        ("fd00::2", Protocol::Tcp, 80, false),
        ("fd00:1:0:2::9", Protocol::Tcp, 6379, true),
        ("fd00:1::9", Protocol::Tcp, 6379, false),
        ("2001:db8::1", Protocol::Tcp, 6379, false),
    ] {
        let p = to_db(src, proto, port);
        let from = Endpoint {
            addr: p.src,
            pod: (src == "fd00::2").then(|| key("prod/web")),
        };
        let to = Endpoint {
            addr: p.dst,
            pod: Some(key("prod/db")),
        };
        assert_eq!(
            allows(&c, &a, &from, &to, proto, port),
            want,
            "reference {src}"
        );
        assert_eq!(forward(&c, &a, p), want, "ruleset {src}");
    }
    let local: BTreeSet<PodKey> = a.keys().cloned().collect();
    let rs = nft::ruleset(&compile(&c, &a, &local));
    assert!(rs.sets["ingress_isolated_v6"].elements.contains("fd00::1"));
    assert!(rs.sets["ingress_isolated_v4"].elements.contains("10.0.0.1"));
    let blocks_v6 = rs
        .sets
        .iter()
        .find(|(n, _)| n.ends_with("in0_blocks_v6"))
        .unwrap()
        .1;
    assert_eq!(blocks_v6.elements.len(), 1);
}

#[test]
fn counters_count_allowed_and_dropped_per_pod() {
    let c = cluster(&format!("{PODS}{POLICY}"));
    let a = addresses();
    let local: BTreeSet<PodKey> = a.keys().cloned().collect();
    let rs = nft::ruleset(&compile(&c, &a, &local));
    let mut i = Interp::new(&rs);
    let (db, web): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    assert!(i.hook_allows(
        "forward",
        &Packet {
            src: web,
            dst: db,
            protocol: Protocol::Tcp,
            port: 6379
        }
    ));
    assert!(!i.hook_allows(
        "forward",
        &Packet {
            src: web,
            dst: db,
            protocol: Protocol::Tcp,
            port: 1
        }
    ));
    assert!(!i.hook_allows(
        "input",
        &Packet {
            src: db,
            dst: "10.99.0.1".parse().unwrap(),
            protocol: Protocol::Tcp,
            port: 22
        }
    ));
    let n = |a, d, v| i.counts.get(&counter_name(a, d, v)).copied().unwrap_or(0);
    assert_eq!(n(web, Direction::Egress, Verdict::Allowed), 2);
    assert_eq!(n(db, Direction::Ingress, Verdict::Allowed), 1);
    assert_eq!(n(db, Direction::Ingress, Verdict::Dropped), 1);
    assert_eq!(n(db, Direction::Egress, Verdict::Dropped), 1);
    for name in &rs.counters {
        let (addr, d, v) = nft::parse_counter_name(name).unwrap();
        assert_eq!(&counter_name(addr, d, v), name);
    }
    assert_eq!(nft::parse_counter_name("in_drop_0a00000"), None);
    assert_eq!(nft::parse_counter_name("xx_drop_0a000001"), None);
}

/// 10,000 pods in 100 namespaces, 1,000 policies, 213 local pods (about a 47-host cluster): prints
/// the time and the size of the ruleset; asserts only that it finishes.
#[test]
fn ten_thousand_pods() {
    use crate::Object;
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let mut objects = Vec::new();
    let mut addrs = BTreeMap::new();
    let mut local = BTreeSet::new();
    for n in 0..100 {
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("ns{n}"), "labels": {"team": format!("t{}", n % 5)}}
        }))
        .unwrap();
        objects.push(Object::Namespace(ns));
        for p in 0..100 {
            let i = n * 100 + p;
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("p{p}"), "namespace": format!("ns{n}"),
                             "labels": {"app": format!("app{}", p % 10), "role": if p % 3 == 0 { "frontend" } else { "backend" }}},
                "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]}
            }))
            .unwrap();
            objects.push(Object::Pod(pod));
            let k = PodKey {
                namespace: format!("ns{n}"),
                name: format!("p{p}"),
            };
            let a: IpAddr = format!("10.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256)
                .parse()
                .unwrap();
            addrs.insert(k.clone(), vec![a]);
            if i % 47 == 0 {
                local.insert(k);
            }
        }
        for j in 0..10 {
            let pol: NetworkPolicy = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("pol{j}"), "namespace": format!("ns{n}")},
                "spec": {
                    "podSelector": {"matchLabels": {"app": format!("app{j}")}},
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{"from": [
                        {"podSelector": {"matchLabels": {"role": "frontend"}}},
                        {"namespaceSelector": {"matchLabels": {"team": format!("t{}", j % 5)}},
                         "podSelector": {"matchLabels": {"app": "app1"}}},
                        {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}],
                        "ports": [{"port": 80}, {"port": "http"}]}],
                    "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "app0"}}}],
                                "ports": [{"port": 5432}]},
                               {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}],
                                "ports": [{"port": 443}]}]
                }
            }))
            .unwrap();
            objects.push(Object::NetworkPolicy(pol));
        }
    }
    let mut c = Cluster::new();
    c.replace_all(&objects).unwrap();
    let start = std::time::Instant::now();
    let rules = compile(&c, &addrs, &local);
    let compiled = start.elapsed();
    let rs = nft::ruleset(&rules);
    let script = nft::transaction(None, &rs);
    let total = start.elapsed();
    let elements: usize = rs.sets.values().map(|s| s.elements.len()).sum();
    println!(
        "10k pods, 1k policies, {} local: compile {compiled:?}, + ruleset and script {total:?}; {} policies in force, {} chains, {} sets, {elements} elements, {} script lines, {} bytes",
        local.len(),
        rules.policies.len(),
        rs.chains.len(),
        rs.sets.len(),
        script.lines().count(),
        script.len()
    );
}
