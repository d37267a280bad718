//! The source against the fake: the first list of each kind, then watch events one by one,
//! without relisting.

mod common;

use common::{pod_json, Harness};
use k8s_openapi::api::core::v1::Node;
use serde_json::json;
use weft_kube::fake::{fixtures, Options};
use weft_kube::{Event, Kind, NodeAddrs};
use weft_policy::{Object, ObjectKey, PodKey};

#[tokio::test]
async fn initial_sync_of_each_kind() {
    let h = Harness::start(Options::default()).await;
    let synced: Vec<(Kind, Vec<Object>)> = h
        .seen
        .iter()
        .filter_map(|e| match e {
            Event::Synced { kind, objects } => Some((*kind, objects.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(synced.len(), 4, "{synced:#?}");
    for (kind, objects) in &synced {
        assert_eq!(objects.len(), 1, "{kind}: {objects:#?}");
        // The object as the API returned it: the fixture with the fake's resourceVersion.
        let mut expected = match kind {
            Kind::Namespace => Object::Namespace(fixtures::namespace()),
            Kind::Pod => Object::Pod(fixtures::pod()),
            Kind::NetworkPolicy => Object::NetworkPolicy(fixtures::network_policy()),
            Kind::Node => Object::Node(fixtures::node()),
        };
        let version = match &objects[0] {
            Object::Namespace(o) => o.metadata.resource_version.clone(),
            Object::Pod(o) => o.metadata.resource_version.clone(),
            Object::NetworkPolicy(o) => o.metadata.resource_version.clone(),
            Object::Node(o) => o.metadata.resource_version.clone(),
        };
        match &mut expected {
            Object::Namespace(o) => o.metadata.resource_version = version,
            Object::Pod(o) => o.metadata.resource_version = version,
            Object::NetworkPolicy(o) => o.metadata.resource_version = version,
            Object::Node(o) => o.metadata.resource_version = version,
        }
        assert!(objects[0] == expected, "{kind}: {:#?}", objects[0]);
    }
    let node = match &synced.iter().find(|(k, _)| *k == Kind::Node).unwrap().1[0] {
        Object::Node(n) => n.clone(),
        _ => unreachable!(),
    };
    assert_eq!(
        NodeAddrs::from_node(&node).internal_ips,
        ["10.0.0.11".parse::<std::net::IpAddr>().unwrap()]
    );
    // One list and one watch per kind, the watch from the list's version.
    for kind in Kind::ALL {
        let stats = h.fake.stats(kind);
        assert_eq!((stats.lists, stats.watches), (1, 1), "{kind}: {stats:?}");
        assert_eq!(stats.watch_versions, ["4"], "{kind}");
    }
    h.task.abort();
}

#[tokio::test]
async fn changes_arrive_as_applied_and_deleted_without_relisting() {
    let mut h = Harness::start(Options::default()).await;

    // A new pod, then its labels change, then it goes.
    h.fake.apply_json(pod_json("db-0", json!({"app": "db"})));
    let pod = h.applied("db-0").await;
    let Object::Pod(pod) = pod else {
        panic!("{pod:?}")
    };
    assert_eq!(pod.metadata.labels.unwrap()["app"], "db");
    h.fake
        .apply_json(pod_json("db-0", json!({"app": "db", "role": "primary"})));
    let Object::Pod(pod) = h.applied("db-0").await else {
        panic!()
    };
    assert_eq!(pod.metadata.labels.unwrap()["role"], "primary");
    h.fake.delete(Kind::Pod, "shop", "db-0").unwrap();
    h.next("Deleted db-0", |e| {
        *e == Event::Deleted(ObjectKey::Pod(PodKey {
            namespace: "shop".into(),
            name: "db-0".into(),
        }))
    })
    .await;

    // A namespace's labels change (the name label stays, as the server keeps it).
    let mut ns = fixtures::json(fixtures::NAMESPACE);
    ns["metadata"]["labels"]["team"] = json!("payments");
    h.fake.apply_json(ns);
    let Object::Namespace(ns) = h.applied("shop").await else {
        panic!()
    };
    let labels = ns.metadata.labels.unwrap();
    assert_eq!(labels["team"], "payments");
    assert_eq!(labels["kubernetes.io/metadata.name"], "shop");

    // A node joins (a mesh peer to add) and leaves (a peer to forget).
    let mut node: Node = fixtures::node();
    node.metadata.name = Some("worker-2".into());
    node.status.as_mut().unwrap().addresses.as_mut().unwrap()[0].address = "10.0.0.12".into();
    h.fake.apply(&Object::Node(node));
    let Object::Node(node) = h.applied("worker-2").await else {
        panic!()
    };
    assert_eq!(
        NodeAddrs::from_node(&node).internal_ips,
        ["10.0.0.12".parse::<std::net::IpAddr>().unwrap()]
    );
    h.fake.delete(Kind::Node, "", "worker-2").unwrap();
    h.next("Deleted worker-2", |e| {
        *e == Event::Deleted(ObjectKey::Node("worker-2".into()))
    })
    .await;

    // A policy is changed, then deleted.
    let mut policy = fixtures::network_policy();
    policy.spec.as_mut().unwrap().policy_types = Some(vec!["Ingress".into(), "Egress".into()]);
    h.fake.apply(&Object::NetworkPolicy(policy));
    let Object::NetworkPolicy(policy) = h.applied("web-allow-frontend").await else {
        panic!()
    };
    assert_eq!(
        policy.metadata.generation,
        Some(2),
        "spec changed: generation bumped"
    );
    h.fake
        .delete(Kind::NetworkPolicy, "shop", "web-allow-frontend")
        .unwrap();
    h.next("Deleted the policy", |e| {
        *e == Event::Deleted(ObjectKey::NetworkPolicy {
            namespace: "shop".into(),
            name: "web-allow-frontend".into(),
        })
    })
    .await;

    // Every change came from the one watch of its kind: no relist, no second watch.
    for kind in Kind::ALL {
        let stats = h.fake.stats(kind);
        assert_eq!((stats.lists, stats.watches), (1, 1), "{kind}: {stats:?}");
    }
    let applied_or_deleted = h
        .seen
        .iter()
        .filter(|e| matches!(e, Event::Applied(_) | Event::Deleted(_)))
        .count();
    assert_eq!(applied_or_deleted, 8, "{:#?}", h.seen);
    assert!(
        !h.seen.iter().any(|e| matches!(e, Event::Error { .. })),
        "{:#?}",
        h.seen
    );
    h.task.abort();
}

#[tokio::test]
async fn the_source_stops_when_the_receiver_is_dropped() {
    let h = Harness::start(Options::default()).await;
    let Harness { fake, rx, task, .. } = h;
    drop(rx);
    tokio::time::timeout(common::DEADLINE, task)
        .await
        .expect("the source ends")
        .unwrap();
    common::wait_until("the watches are closed", || {
        Kind::ALL.iter().all(|k| fake.open_watches(*k) == 0)
    })
    .await;
}
