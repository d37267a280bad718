//! The explain function on hand-built snapshots: a three-host cluster (h1 asks; h2 a
//! neighbour; h3 behind h2 or direct), pods on each, and policies.

use super::*;
use std::net::SocketAddr;

#[derive(Debug, Clone)]
struct P {
    name: PeerName,
    addr: Option<SocketAddr>,
    fast: bool,
    encrypts: bool,
}

impl Peer for P {
    fn name(&self) -> PeerName {
        self.name
    }
    fn udp_addr(&self) -> Option<SocketAddr> {
        self.addr
    }
    fn fast(&self) -> bool {
        self.fast
    }
    fn encrypts(&self) -> bool {
        self.encrypts
    }
}

const H1: PeerName = PeerName(1);
const H2: PeerName = PeerName(2);
const H3: PeerName = PeerName(3);

fn neighbour(name: PeerName, fast: bool, encrypts: bool) -> P {
    P {
        name,
        addr: Some(format!("10.0.0.{}:6783", name.0).parse().unwrap()),
        fast,
        encrypts,
    }
}

fn key(s: &str) -> PodKey {
    let (namespace, name) = s.split_once('/').unwrap();
    PodKey {
        namespace: namespace.into(),
        name: name.into(),
    }
}

fn ip(s: &str) -> std::net::Ipv4Addr {
    s.parse().unwrap()
}

/// h1 holds 10.32.0.0/24 (pods x/a .2, x/c .3), h2 10.32.1.0/24 (y/b .2), h3 10.32.2.0/24
/// (y/d .2, in the mesh's list only by its block: no pod entry).
fn snapshot<'a>(fabric: &'a Fabric<P>, policy: PolicyView<'a>) -> Snapshot<'a, P> {
    let block = |s: &str| Block::new(ip(s), 24).unwrap();
    Snapshot {
        me: H1,
        nicknames: [(H1, "h1"), (H2, "h2"), (H3, "h3")]
            .into_iter()
            .map(|(p, n)| (p, n.to_string()))
            .collect(),
        bridge: "weft".into(),
        pod_mtu: 1436,
        underlay_mtu: 1500,
        encrypted: false,
        fabric,
        macs: [("02:00:00:00:00:33".parse().unwrap(), Location::Peer(H3))]
            .into_iter()
            .collect(),
        local_pods: vec![
            LocalPod {
                addrs: vec![IpAddr::V4(ip("10.32.0.2")), "fd10:32::2".parse().unwrap()],
                pod: Some(key("x/a")),
                mac: Some("02:00:00:00:00:0a".parse().unwrap()),
            },
            LocalPod {
                addrs: vec![IpAddr::V4(ip("10.32.0.3"))],
                pod: Some(key("x/c")),
                mac: None,
            },
        ],
        mesh_pods: vec![(
            H2,
            key("y/b"),
            vec![IpAddr::V4(ip("10.32.1.2")), "fd10:32::102".parse().unwrap()],
        )],
        cidrs: vec![
            Block::new(ip("10.32.0.0"), 16).unwrap(),
            "fd10:32::/48".parse().unwrap(),
        ],
        blocks: vec![
            (block("10.32.0.0"), H1),
            (block("10.32.1.0"), H2),
            (block("10.32.2.0"), H3),
        ],
        fast_reasons: [
            (H2, "fast path: probes answered both ways".to_string()),
            (H3, "sleeve: VXLAN probes unanswered for 5 s".to_string()),
        ]
        .into_iter()
        .collect(),
        peer_mtus: [(H2, 1436), (H3, 1400)].into_iter().collect(),
        policy,
    }
}

/// h2 on the fast path, h3 a direct sleeve neighbour.
fn direct_fabric(encrypt_h3: bool) -> Fabric<P> {
    Fabric::new(
        vec![neighbour(H2, true, false), neighbour(H3, false, encrypt_h3)],
        &[(H2, H2), (H3, H3)],
        &[(H1, vec![H2, H3])],
    )
}

fn icmp() -> Flow {
    Flow::parse("", None).unwrap()
}

fn kinds(t: &TraceAnswer) -> Vec<HopKind> {
    t.hops.iter().map(|h| h.kind).collect()
}

#[test]
fn endpoints_parse() {
    assert_eq!("x/a".parse::<Target>().unwrap(), Target::Pod(key("x/a")));
    assert_eq!(
        "10.32.0.2".parse::<Target>().unwrap(),
        Target::Addr(IpAddr::V4(ip("10.32.0.2")))
    );
    assert!(matches!(
        "02:00:00:00:00:0a".parse::<Target>().unwrap(),
        Target::Mac(_)
    ));
    assert!("nonsense".parse::<Target>().is_err());
    assert!("a/b/c".parse::<Target>().is_err());
    assert!(Flow::parse("sctp", None).is_err());
    assert_eq!(Flow::parse("", Some(80)).unwrap().protocol, Protocol::Tcp);
}

#[test]
fn ipv6_addresses_find_dual_stack_pods() {
    let f = direct_fabric(false);
    let s = snapshot(&f, PolicyView::Off);
    // A local pod and a remote one by their IPv6 addresses: shown with the address asked.
    let t = explain(&s, "fd10:32::2", "fd10:32::102", icmp()).unwrap();
    assert_eq!(t.from.pod.as_deref(), Some("x/a"));
    assert_eq!(t.from.addr.as_deref(), Some("fd10:32::2"));
    assert_eq!(t.to.pod.as_deref(), Some("y/b"));
    assert_eq!(t.to.addr.as_deref(), Some("fd10:32::102"));
    assert_eq!(t.to.found_by, "gossiped pod list");
    assert_eq!(t.outcome, "delivered");
    // By name, a pod shows its first (IPv4) address.
    let t = explain(&s, "x/a", "y/b", icmp()).unwrap();
    assert_eq!(t.to.addr.as_deref(), Some("10.32.1.2"));
    // An IPv6 address outside both pod CIDRs is routed out and masqueraded.
    let t = explain(&s, "x/a", "2001:db8::1", icmp()).unwrap();
    assert!(
        t.notes
            .iter()
            .any(|n| n.contains("outside the pod CIDR 10.32.0.0/16 and fd10:32::/48")),
        "{:?}",
        t.notes
    );
}

#[test]
fn same_host_is_the_bridge() {
    let f = direct_fabric(false);
    let t = explain(&snapshot(&f, PolicyView::Off), "x/a", "10.32.0.3", icmp()).unwrap();
    assert_eq!(
        kinds(&t),
        [
            HopKind::Egress,
            HopKind::Bridge,
            HopKind::Ingress,
            HopKind::Deliver
        ]
    );
    assert_eq!(t.outcome, "delivered");
    assert!(t.from.local && t.to.local);
    assert_eq!(t.to.pod.as_deref(), Some("x/c"));
    assert_eq!(t.to.found_by, "local reservation");
    assert!(t.hops.iter().all(|h| h.host == "h1"));
}

#[test]
fn direct_peer_on_the_fast_path() {
    let f = direct_fabric(false);
    let t = explain(&snapshot(&f, PolicyView::Off), "x/a", "y/b", icmp()).unwrap();
    assert_eq!(
        kinds(&t),
        [
            HopKind::Egress,
            HopKind::FastPath,
            HopKind::Ingress,
            HopKind::Deliver
        ]
    );
    let h = &t.hops[1];
    assert_eq!((h.host.as_str(), h.to.as_deref()), ("h1", Some("h2")));
    assert_eq!(h.encryption.as_deref(), Some("none"));
    assert_eq!((h.pod_mtu, h.underlay_mtu), (Some(1436), Some(1500)));
    assert!(h.reason.as_deref().unwrap().contains("fast path"));
    assert_eq!(t.to.found_by, "gossiped pod list");
    assert_eq!(t.hops[3].host, "h2");
    assert_eq!(t.outcome, "delivered");
}

#[test]
fn sleeve_with_its_reason_and_encryption() {
    let f = direct_fabric(true);
    // y/d has no pod entry: found through h3's IPAM block.
    let t = explain(&snapshot(&f, PolicyView::Off), "x/a", "10.32.2.2", icmp()).unwrap();
    assert_eq!(t.to.found_by, "IPAM block 10.32.2.0/24");
    let h = &t.hops[1];
    assert_eq!(h.kind, HopKind::Sleeve);
    assert_eq!(h.to.as_deref(), Some("h3"));
    assert_eq!(
        h.reason.as_deref(),
        Some("sleeve: VXLAN probes unanswered for 5 s")
    );
    assert_eq!(h.encryption.as_deref(), Some("chacha20-poly1305"));
    assert_eq!(h.pod_mtu, Some(1400), "the pair's smaller pod MTU");
    assert!(h.detail.contains("10.0.0.3:6783"), "{}", h.detail);
}

#[test]
fn through_a_relay() {
    // h3 only through h2 (h2 a sleeve neighbour here).
    let f = Fabric::new(
        vec![
            neighbour(H2, false, false),
            P {
                name: H3,
                addr: None,
                fast: false,
                encrypts: false,
            },
        ],
        &[(H2, H2), (H3, H2)],
        &[(H1, vec![H2])],
    );
    let mut s = snapshot(&f, PolicyView::Off);
    s.encrypted = true;
    let t = explain(&s, "02:00:00:00:00:0a", "02:00:00:00:00:33", icmp()).unwrap();
    assert_eq!(t.from.pod.as_deref(), Some("x/a"));
    assert_eq!(t.to.found_by, "MAC table");
    assert_eq!(
        kinds(&t),
        [
            HopKind::Egress,
            HopKind::Sleeve,
            HopKind::Relay,
            HopKind::Ingress,
            HopKind::Deliver
        ]
    );
    assert_eq!(t.hops[1].to.as_deref(), Some("h2"));
    assert_eq!(t.hops[1].encryption.as_deref(), Some("trusted"));
    assert!(
        t.hops[1]
            .reason
            .as_deref()
            .unwrap()
            .contains("no usable direct path to h3"),
        "{:?}",
        t.hops[1].reason
    );
    assert_eq!(
        (t.hops[2].host.as_str(), t.hops[2].to.as_deref()),
        ("h2", Some("h3"))
    );
}

#[test]
fn unknown_destination_is_flooded() {
    let f = direct_fabric(false);
    let t = explain(
        &snapshot(&f, PolicyView::Off),
        "x/a",
        "02:00:00:00:00:99",
        icmp(),
    )
    .unwrap();
    assert_eq!(kinds(&t), [HopKind::Egress, HopKind::Flood]);
    assert_eq!(t.outcome, "flooded");
    assert_eq!(t.to.found_by, "unknown");
    // h3 gets the sleeve's copy, h2 (fast path) the VXLAN device's.
    assert!(
        t.hops[1]
            .detail
            .contains("sleeve to [h3], kernel VXLAN flood list to [h2]"),
        "{}",
        t.hops[1].detail
    );
}

#[test]
fn no_route() {
    let f = Fabric::new(vec![neighbour(H2, false, false)], &[(H2, H2)], &[]);
    let t = explain(&snapshot(&f, PolicyView::Off), "x/a", "10.32.2.2", icmp()).unwrap();
    assert_eq!(kinds(&t), [HopKind::Egress, HopKind::NoRoute]);
    assert_eq!(t.outcome, "no route");
}

#[test]
fn asked_on_a_third_host() {
    let f = direct_fabric(false);
    let t = explain(&snapshot(&f, PolicyView::Off), "y/b", "10.32.2.2", icmp()).unwrap();
    assert_eq!(t.outcome, "partial");
    assert!(
        t.notes.iter().any(|n| n.contains("neither h2 nor h3")),
        "{:?}",
        t.notes
    );
    assert_eq!(
        kinds(&t),
        [
            HopKind::Egress,
            HopKind::Elsewhere,
            HopKind::Ingress,
            HopKind::Deliver
        ]
    );
}

#[test]
fn asked_on_the_destination_host() {
    let f = direct_fabric(false);
    let t = explain(&snapshot(&f, PolicyView::Off), "y/b", "x/a", icmp()).unwrap();
    let h = &t.hops[1];
    assert_eq!(h.kind, HopKind::FastPath);
    assert_eq!((h.host.as_str(), h.to.as_deref()), ("h2", Some("h1")));
    assert!(t.notes.iter().any(|n| n.contains("destination's host")));
}

const OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Namespace
metadata: {name: y}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: y, labels: {app: b}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-only, namespace: y}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress:
    - ports: [{protocol: TCP, port: 80}]
"#;

fn cluster() -> (Cluster, BTreeMap<PodKey, Vec<IpAddr>>) {
    let mut c = Cluster::new();
    c.replace_all(&weft_policy::manifest::parse("t.yaml", OBJECTS).unwrap())
        .unwrap();
    let addresses = [
        (key("x/a"), vec![IpAddr::V4(ip("10.32.0.2"))]),
        (key("y/b"), vec![IpAddr::V4(ip("10.32.1.2"))]),
    ]
    .into_iter()
    .collect();
    (c, addresses)
}

#[test]
fn policy_deny_names_the_policy() {
    let f = direct_fabric(false);
    let (c, a) = cluster();
    let s = snapshot(&f, PolicyView::On(&c, &a));
    let t = explain(&s, "x/a", "y/b", Flow::parse("tcp", Some(22)).unwrap()).unwrap();
    assert_eq!(t.outcome, "denied by policy at ingress");
    let last = t.hops.last().unwrap();
    assert_eq!(last.kind, HopKind::Ingress);
    assert_eq!(last.host, "h2");
    assert_eq!(last.allowed, Some(false));
    assert_eq!(last.policies, ["y/web-only"]);
    assert!(last.detail.contains("tcp/22 denied"), "{}", last.detail);
    // The egress side: x/a is not isolated.
    assert_eq!(t.hops[0].allowed, Some(true));
    assert!(t.hops[0].policies.is_empty());
}

#[test]
fn policy_allow_names_the_policy() {
    let f = direct_fabric(false);
    let (c, a) = cluster();
    let s = snapshot(&f, PolicyView::On(&c, &a));
    let t = explain(&s, "x/a", "y/b", Flow::parse("tcp", Some(80)).unwrap()).unwrap();
    assert_eq!(t.outcome, "delivered");
    let ingress = t.hops.iter().find(|h| h.kind == HopKind::Ingress).unwrap();
    assert_eq!(ingress.allowed, Some(true));
    assert_eq!(ingress.policies, ["y/web-only"]);
    assert_eq!(t.flow, "tcp/80");
}

#[test]
fn policy_not_ready_is_said() {
    let f = direct_fabric(false);
    let t = explain(&snapshot(&f, PolicyView::NotReady), "x/a", "y/b", icmp()).unwrap();
    assert_eq!(t.hops[0].allowed, None);
    assert!(t.hops[0].detail.contains("not read yet"));
}
