//! Broken watches: the source resumes from the last version it saw (a bookmark's included)
//! without relisting, relists exactly once after `410 Expired`, and reports failures as
//! `Event::Error` while it retries.

mod common;

use std::time::Duration;

use common::{names, pod_json, wait_until, Harness};
use serde_json::json;
use weft_kube::fake::{fixtures, Fake, Options};
use weft_kube::{Event, Kind};
use weft_policy::{Object, ObjectKey};

fn fast_bookmarks() -> Options {
    Options {
        bookmark_interval: Some(Duration::from_millis(100)),
    }
}

#[tokio::test]
async fn a_broken_watch_resumes_from_the_last_bookmark_without_relisting() {
    let mut h = Harness::start(fast_bookmarks()).await;
    let listed = h.fake.revision();
    assert_eq!(h.fake.stats(Kind::Pod).watch_versions, [listed.to_string()]);

    // The revision moves on without any pod change: only a bookmark tells the pod watcher.
    let ns = json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "other"}});
    let moved = h.fake.apply_json(ns);
    h.applied("other").await;
    let before = h.fake.stats(Kind::Pod).bookmarks;
    wait_until("two bookmarks after the change", || {
        h.fake.stats(Kind::Pod).bookmarks >= before + 2
    })
    .await;

    // Compacted at `moved`: resuming from the list's version would be 410 and a relist.
    h.fake.compact();
    h.fake.break_watches();
    wait_until("every kind watches again", || {
        Kind::ALL.iter().all(|k| h.fake.stats(*k).watches == 2)
    })
    .await;
    h.wait_watching().await;
    for kind in Kind::ALL {
        let stats = h.fake.stats(kind);
        assert_eq!(
            stats.watch_versions,
            [listed.to_string(), moved.to_string()],
            "{kind} resumed from the bookmark"
        );
        assert_eq!((stats.lists, stats.expired), (1, 0), "{kind}: no relist");
    }

    // The resumed watch delivers.
    h.fake.apply_json(pod_json("after", json!({})));
    h.applied("after").await;
    assert!(
        !h.seen.iter().any(|e| matches!(e, Event::Error { .. })),
        "{:#?}",
        h.seen
    );
    h.task.abort();
}

#[tokio::test]
async fn an_expired_watch_relists_once_with_the_current_objects() {
    let mut h = Harness::start(Options {
        bookmark_interval: None,
    })
    .await;
    h.fake.apply_json(pod_json("gone", json!({"app": "old"})));
    h.applied("gone").await;

    // Unreachable: every connection closes, and new ones are refused.
    h.fake.set_reachable(false);
    let mut web = fixtures::json(fixtures::POD);
    web["metadata"]["labels"]["app"] = json!("web-v2");
    h.fake.apply_json(web);
    h.fake.apply_json(pod_json("new", json!({"app": "new"})));
    h.fake.delete(Kind::Pod, "shop", "gone").unwrap();
    let mut ns = fixtures::json(fixtures::NAMESPACE);
    ns["metadata"]["labels"]["team"] = json!("api");
    h.fake.apply_json(ns);
    h.fake.compact();
    h.fake.set_reachable(true);

    let pods = h.synced(Kind::Pod).await;
    assert_eq!(names(&pods), ["new", "web-7c9f8d6b5d-x2lqp"], "{pods:#?}");
    let Some(Object::Pod(web)) = pods.iter().find(|p| common::name_of(p) != "new") else {
        panic!()
    };
    assert_eq!(web.metadata.labels.as_ref().unwrap()["app"], "web-v2");
    let namespaces = h.synced(Kind::Namespace).await;
    let Object::Namespace(shop) = &namespaces[0] else {
        panic!()
    };
    assert_eq!(shop.metadata.labels.as_ref().unwrap()["team"], "api");
    // The deletion while disconnected shows only as the pod's absence from the relist.
    assert!(!h.seen.iter().any(|e| matches!(e, Event::Deleted(_))));

    // After the relist, changes come from the watch again: one relist, not one per event.
    h.fake.apply_json(pod_json("later", json!({})));
    h.applied("later").await;
    h.wait_watching().await;
    for kind in [Kind::Pod, Kind::Namespace] {
        let stats = h.fake.stats(kind);
        assert_eq!(stats.lists, 2, "{kind}: {stats:?}");
        assert!(stats.expired >= 1, "{kind}: {stats:?}");
    }
    h.task.abort();
}

#[tokio::test]
async fn a_failing_watch_is_reported_and_recovers_without_relisting() {
    let mut h = Harness::start(Options {
        bookmark_interval: None,
    })
    .await;
    h.fake.fail(Kind::Pod, Some(500));
    h.fake.break_watches();
    let error = h
        .next("a pod watch error", |e| {
            matches!(
                e,
                Event::Error {
                    kind: Kind::Pod,
                    ..
                }
            )
        })
        .await;
    let Event::Error { message, .. } = error else {
        panic!()
    };
    assert!(
        message.contains("fake failure injected for pods"),
        "{message}"
    );

    // A change while the watch fails arrives once the watch is back, from history.
    h.fake.apply_json(pod_json("during", json!({})));
    h.fake.fail(Kind::Pod, None);
    h.applied("during").await;
    let stats = h.fake.stats(Kind::Pod);
    assert_eq!(stats.lists, 1, "{stats:?}");
    assert!(stats.failed >= 1 && stats.watches >= 3, "{stats:?}");
    h.task.abort();
}

#[tokio::test]
async fn a_forbidden_list_is_reported_and_the_other_kinds_go_on() {
    let fake = Fake::start().await;
    fake.apply_json(fixtures::json(fixtures::NETWORK_POLICY));
    fake.apply_json(fixtures::json(fixtures::POD));
    fake.fail(Kind::NetworkPolicy, Some(403));
    let mut h = Harness::spawn(fake);
    let error = h
        .next("a policy list error", |e| {
            matches!(
                e,
                Event::Error {
                    kind: Kind::NetworkPolicy,
                    ..
                }
            )
        })
        .await;
    let Event::Error { message, .. } = error else {
        panic!()
    };
    assert!(message.contains("forbidden"), "{message}");
    let pods = h.synced(Kind::Pod).await;
    assert_eq!(names(&pods), ["web-7c9f8d6b5d-x2lqp"]);

    h.fake.fail(Kind::NetworkPolicy, None);
    let policies = h.synced(Kind::NetworkPolicy).await;
    assert_eq!(names(&policies), ["web-allow-frontend"]);
    h.fake
        .delete(Kind::NetworkPolicy, "shop", "web-allow-frontend");
    let deleted = Event::Deleted(ObjectKey::NetworkPolicy {
        namespace: "shop".into(),
        name: "web-allow-frontend".into(),
    });
    h.next("the policy deleted", |e| *e == deleted).await;
    // The list was retried with a growing delay, not in a tight loop.
    let stats = h.fake.stats(Kind::NetworkPolicy);
    assert!(stats.failed <= 4, "{stats:?}");
    h.task.abort();
}
