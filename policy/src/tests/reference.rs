//! The reference evaluator on literal cases from the Kubernetes documentation.

use super::{cluster, key};
use crate::reference::{allows, Endpoint, Protocol};
use crate::{Cluster, PodKey};
use std::collections::BTreeMap;
use std::net::IpAddr;

pub const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {project: myproject}}
---
apiVersion: v1
kind: Namespace
metadata: {name: dev}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: prod, labels: {role: db}}
spec:
  containers:
  - name: c
    ports: [{name: redis, containerPort: 6379}, {name: dns, containerPort: 53, protocol: UDP}]
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {role: frontend}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: tool, namespace: dev, labels: {role: frontend}}
---
apiVersion: v1
kind: Pod
metadata: {name: lost, namespace: nowhere}
"#;

/// Addresses: prod/db 10.0.0.1, prod/web 10.0.0.2, dev/tool 10.0.0.3, nowhere/lost 10.0.0.4.
pub fn addresses() -> BTreeMap<PodKey, Vec<IpAddr>> {
    [
        ("prod/db", "10.0.0.1"),
        ("prod/web", "10.0.0.2"),
        ("dev/tool", "10.0.0.3"),
        ("nowhere/lost", "10.0.0.4"),
    ]
    .into_iter()
    .map(|(k, a)| (key(k), vec![a.parse().unwrap()]))
    .collect()
}

fn pod(k: &str) -> Endpoint {
    let addr = addresses()[&key(k)][0];
    Endpoint {
        addr,
        pod: Some(key(k)),
    }
}

fn outside(a: &str) -> Endpoint {
    Endpoint {
        addr: a.parse().unwrap(),
        pod: None,
    }
}

fn ok(c: &Cluster, from: &Endpoint, to: &Endpoint, p: Protocol, port: u16) -> bool {
    allows(c, &addresses(), from, to, p, port)
}

#[test]
fn no_policy_allows_everything() {
    let c = cluster(PODS);
    assert!(ok(&c, &pod("prod/web"), &pod("prod/db"), Protocol::Tcp, 1));
    assert!(ok(
        &c,
        &outside("8.8.8.8"),
        &pod("prod/db"),
        Protocol::Other(1),
        0
    ));
}

#[test]
fn the_docs_example() {
    let c = cluster(&format!(
        "{PODS}---\n{}",
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: test-network-policy, namespace: prod}
spec:
  podSelector: {matchLabels: {role: db}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - ipBlock: {cidr: 172.17.0.0/16, except: [172.17.1.0/24]}
    - namespaceSelector: {matchLabels: {project: myproject}}
    - podSelector: {matchLabels: {role: frontend}}
    ports: [{protocol: TCP, port: 6379}]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/24}}]
    ports: [{protocol: TCP, port: 5978}]
"#
    ));
    let db = pod("prod/db");
    assert!(ok(&c, &pod("prod/web"), &db, Protocol::Tcp, 6379));
    assert!(!ok(&c, &pod("prod/web"), &db, Protocol::Tcp, 6380));
    assert!(!ok(&c, &pod("prod/web"), &db, Protocol::Udp, 6379));
    assert!(
        !ok(&c, &pod("dev/tool"), &db, Protocol::Tcp, 6379),
        "podSelector alone: own namespace"
    );
    assert!(ok(&c, &outside("172.17.0.9"), &db, Protocol::Tcp, 6379));
    assert!(
        !ok(&c, &outside("172.17.1.9"), &db, Protocol::Tcp, 6379),
        "except"
    );
    assert!(ok(&c, &db, &outside("10.0.0.200"), Protocol::Tcp, 5978));
    assert!(
        ok(&c, &db, &pod("dev/tool"), Protocol::Tcp, 5978),
        "ipBlock matches pod addresses"
    );
    assert!(!ok(&c, &db, &outside("10.0.1.1"), Protocol::Tcp, 5978));
    // web is not isolated for egress; db's ingress still applies.
    assert!(ok(&c, &pod("prod/web"), &pod("dev/tool"), Protocol::Udp, 9));
}

#[test]
fn namespace_and_pod_selector_in_one_peer_is_an_and() {
    let c = cluster(&format!(
        "{PODS}---\n{}",
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: and, namespace: prod}
spec:
  podSelector: {matchLabels: {role: db}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: dev}}
      podSelector: {matchLabels: {role: frontend}}
"#
    ));
    assert!(ok(&c, &pod("dev/tool"), &pod("prod/db"), Protocol::Tcp, 1));
    assert!(!ok(&c, &pod("prod/web"), &pod("prod/db"), Protocol::Tcp, 1));
    assert!(!ok(
        &c,
        &outside("1.1.1.1"),
        &pod("prod/db"),
        Protocol::Tcp,
        1
    ));
}

#[test]
fn default_deny_both_ways_and_ingress_empty_list() {
    let c = cluster(&format!(
        "{PODS}---\n{}",
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: prod}
spec: {podSelector: {}, policyTypes: [Ingress, Egress], ingress: []}
"#
    ));
    assert!(!ok(
        &c,
        &pod("prod/web"),
        &pod("prod/db"),
        Protocol::Tcp,
        80
    ));
    assert!(!ok(
        &c,
        &pod("dev/tool"),
        &pod("prod/db"),
        Protocol::Tcp,
        80
    ));
    assert!(!ok(
        &c,
        &pod("prod/db"),
        &outside("8.8.8.8"),
        Protocol::Udp,
        53
    ));
    assert!(ok(
        &c,
        &pod("dev/tool"),
        &pod("nowhere/lost"),
        Protocol::Tcp,
        80
    ));
}

#[test]
fn named_ports_resolve_on_the_destination() {
    let c = cluster(&format!(
        "{PODS}---\n{}",
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named, namespace: prod}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress: [{ports: [{port: redis}, {port: dns, protocol: UDP}, {port: http, protocol: UDP}]}]
  egress:
  - to: [{podSelector: {}}]
    ports: [{port: http}]
  - to: [{ipBlock: {cidr: 0.0.0.0/0}}]
    ports: [{port: redis}, {port: 9000, endPort: 9010}]
"#
    ));
    let (db, web) = (pod("prod/db"), pod("prod/web"));
    assert!(ok(&c, &outside("1.2.3.4"), &db, Protocol::Tcp, 6379));
    assert!(!ok(&c, &outside("1.2.3.4"), &db, Protocol::Udp, 6379));
    assert!(ok(&c, &outside("1.2.3.4"), &db, Protocol::Udp, 53));
    assert!(
        !ok(&c, &outside("1.2.3.4"), &web, Protocol::Udp, 8080),
        "http is TCP on web"
    );
    assert!(
        !ok(&c, &outside("1.2.3.4"), &web, Protocol::Tcp, 6379),
        "web has no redis port"
    );
    // Egress: http resolves on web (8080), but web's ingress allows only redis/dns.
    assert!(!ok(&c, &db, &web, Protocol::Tcp, 8080));
    // Egress to an ipBlock with a named port: nothing; numeric ranges do.
    assert!(!ok(&c, &web, &pod("dev/tool"), Protocol::Tcp, 6379));
    assert!(ok(&c, &web, &pod("dev/tool"), Protocol::Tcp, 9010));
    assert!(!ok(&c, &web, &pod("dev/tool"), Protocol::Tcp, 9011));
    // ICMP: only rules without ports.
    assert!(!ok(&c, &web, &pod("dev/tool"), Protocol::Other(1), 0));
}

#[test]
fn pods_without_identity_are_matched_by_address_only() {
    let c = cluster(&format!(
        "{PODS}---\n{}",
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: prod}
spec:
  podSelector: {matchLabels: {role: db}}
  ingress: [{from: [{namespaceSelector: {}}]}, {from: [{ipBlock: {cidr: 10.9.0.0/16}}]}]
"#
    ));
    assert!(
        ok(&c, &pod("nowhere/lost"), &pod("prod/db"), Protocol::Tcp, 1),
        "a namespace with no object exists"
    );
    assert!(!ok(
        &c,
        &outside("10.8.0.1"),
        &pod("prod/db"),
        Protocol::Tcp,
        1
    ));
    assert!(ok(
        &c,
        &outside("10.9.0.1"),
        &pod("prod/db"),
        Protocol::Tcp,
        1
    ));
    // An endpoint given without its pod is recognised by its address.
    assert!(ok(
        &c,
        &outside("10.0.0.3"),
        &pod("prod/db"),
        Protocol::Tcp,
        1
    ));
}

#[test]
fn explain_names_the_deciding_policies() {
    use crate::reference::{explain, DirectionVerdict as V};
    let c = cluster(&format!(
        "{PODS}---\n{}",
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: prod}
spec: {podSelector: {matchLabels: {role: db}}, ingress: []}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: redis, namespace: prod}
spec:
  podSelector: {matchLabels: {role: db}}
  ingress: [{ports: [{protocol: TCP, port: 6379}]}]
"#
    ));
    let a = addresses();
    let (web, db) = (pod("prod/web"), pod("prod/db"));
    let e = explain(&c, &a, &web, &db, Protocol::Tcp, 6379);
    assert_eq!(e.egress, V::NotIsolated);
    assert_eq!(e.ingress, V::AllowedBy("prod/redis".into()));
    assert!(e.allowed());
    let e = explain(&c, &a, &web, &db, Protocol::Tcp, 80);
    assert_eq!(
        e.ingress,
        V::DeniedBy(vec!["prod/deny".into(), "prod/redis".into()])
    );
    assert!(!e.allowed());
    assert_eq!(
        explain(&c, &a, &outside("8.8.8.8"), &db, Protocol::Tcp, 6379).egress,
        V::NotAPod
    );
    // allows is explain's answer.
    assert_eq!(
        ok(&c, &web, &db, Protocol::Tcp, 80),
        explain(&c, &a, &web, &db, Protocol::Tcp, 80).allowed()
    );
}
