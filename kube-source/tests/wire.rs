//! The fake's wire shape, read with a plain HTTP/1.1 client: lists and watches carry the fields
//! a real API server sends, in its framing.

mod common;

use std::time::Duration;

use common::{pod_json, RawResponse};
use serde_json::{json, Value};
use weft_kube::fake::{fixtures, Fake, Options};
use weft_kube::Kind;

async fn fake_with_fixtures() -> Fake {
    let fake = Fake::start_with(Options {
        bookmark_interval: None,
    })
    .await;
    for fixture in [
        fixtures::NAMESPACE,
        fixtures::POD,
        fixtures::NETWORK_POLICY,
        fixtures::NODE,
    ] {
        fake.apply_json(fixtures::json(fixture));
    }
    fake
}

async fn get_json(fake: &Fake, path: &str) -> (u16, Value, String) {
    let mut response = RawResponse::get(fake.addr(), path).await;
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.body().await;
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (response.status, value, body)
}

#[tokio::test]
async fn lists_have_the_real_shape() {
    let fake = fake_with_fixtures().await;
    let revision = fake.revision();
    assert_eq!(revision, 4, "one revision counter for all kinds");

    let (status, list, body) = get_json(&fake, "/api/v1/pods?limit=500&resourceVersion=0").await;
    assert_eq!(status, 200);
    assert!(
        body.starts_with(
            r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"4"}"#
        ),
        "{body}"
    );
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let pod = &items[0];
    // List items have no kind or apiVersion, as the real server's.
    assert!(
        pod.get("kind").is_none() && pod.get("apiVersion").is_none(),
        "{pod}"
    );
    let meta = &pod["metadata"];
    assert_eq!(meta["name"], "web-7c9f8d6b5d-x2lqp");
    assert_eq!(meta["namespace"], "shop");
    // The server's own resourceVersion replaces the recorded one; the rest is kept.
    assert_eq!(meta["resourceVersion"], "2");
    assert_eq!(meta["uid"], "0b8f1b3e-6a59-4f4c-8a0e-3d3c2e9a4f21");
    assert_eq!(meta["creationTimestamp"], "2025-05-12T08:15:40Z");
    assert_eq!(meta["generation"], 1);
    assert_eq!(meta["managedFields"][1]["manager"], "kubelet");
    assert_eq!(pod["status"]["podIP"], "10.244.1.17");
    assert_eq!(
        pod["spec"]["containers"][0]["ports"][0]["containerPort"],
        8080
    );

    let (_, list, _) = get_json(&fake, "/api/v1/namespaces").await;
    assert_eq!(list["kind"], "NamespaceList");
    let ns = &list["items"][0];
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "shop"
    );
    assert_eq!(ns["status"]["phase"], "Active");
    assert_eq!(ns["metadata"]["resourceVersion"], "1");

    let (_, list, _) = get_json(&fake, "/apis/networking.k8s.io/v1/networkpolicies").await;
    assert_eq!(list["kind"], "NetworkPolicyList");
    assert_eq!(list["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(list["items"][0]["spec"]["policyTypes"][0], "Ingress");

    let (_, list, _) = get_json(&fake, "/api/v1/nodes").await;
    assert_eq!(list["kind"], "NodeList");
    assert_eq!(
        list["items"][0]["status"]["addresses"][0]["type"],
        "InternalIP"
    );

    // A namespace the fake creates gets a uid, a creationTimestamp and the name label.
    fake.apply_json(json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "a"}}));
    let (_, list, _) = get_json(&fake, "/api/v1/namespaces").await;
    let a = &list["items"][0]["metadata"];
    assert_eq!(a["name"], "a", "items in key order");
    assert_eq!(a["labels"]["kubernetes.io/metadata.name"], "a");
    assert!(a["uid"].as_str().unwrap().len() == 36, "{a}");
    assert!(
        a["creationTimestamp"].as_str().unwrap().ends_with('Z'),
        "{a}"
    );
}

#[tokio::test]
async fn lists_page_with_limit_and_continue() {
    let fake = fake_with_fixtures().await;
    for name in ["b", "c"] {
        fake.apply_json(pod_json(name, json!({})));
    }
    let revision = fake.revision().to_string();
    let (_, first, _) = get_json(&fake, "/api/v1/pods?limit=2").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["metadata"]["remainingItemCount"], 1);
    assert_eq!(first["metadata"]["resourceVersion"], revision.as_str());
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    // A change between pages does not show in the rest of the list (one snapshot).
    fake.apply_json(pod_json("d", json!({})));
    let (_, rest, _) = get_json(&fake, &format!("/api/v1/pods?limit=2&continue={token}")).await;
    let names: Vec<&str> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-7c9f8d6b5d-x2lqp"]);
    assert_eq!(rest["metadata"]["resourceVersion"], revision.as_str());
    assert!(rest["metadata"].get("continue").is_none());
    let stats = fake.stats(Kind::Pod);
    assert_eq!((stats.lists, stats.list_pages), (1, 2));

    // A token used twice (or compacted away) is expired, as the real server's.
    let (status, err, _) = get_json(&fake, &format!("/api/v1/pods?continue={token}")).await;
    assert_eq!(status, 410);
    assert_eq!(err["kind"], "Status");
    assert_eq!(err["reason"], "Expired");
}

#[tokio::test]
async fn watches_stream_events_bookmarks_and_end_after_their_timeout() {
    let fake = fake_with_fixtures().await;
    let from = fake.revision();
    let started = tokio::time::Instant::now();
    let mut watch = RawResponse::get(
        fake.addr(),
        &format!("/api/v1/pods?watch=true&resourceVersion={from}&allowWatchBookmarks=true&timeoutSeconds=1"),
    )
    .await;
    assert_eq!(watch.status, 200);
    assert_eq!(watch.header("transfer-encoding"), Some("chunked"));
    assert_eq!(watch.header("content-type"), Some("application/json"));
    common::wait_until("the watch is registered", || {
        fake.open_watches(Kind::Pod) == 1
    })
    .await;

    let mut pod = fixtures::json(fixtures::POD);
    pod["metadata"]["labels"]["tier"] = json!("gold");
    let modified = fake.apply_json(pod);
    fake.apply_json(json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "x"}}));
    let deleted = fake
        .delete(Kind::Pod, "shop", "web-7c9f8d6b5d-x2lqp")
        .unwrap();
    fake.send_bookmarks();

    let line = watch.next_line().await.unwrap();
    assert!(
        line.starts_with(r#"{"type":"MODIFIED","object":{"#),
        "{line}"
    );
    let event: Value = serde_json::from_str(&line).unwrap();
    let object = &event["object"];
    // Watch events carry kind and apiVersion.
    assert_eq!(object["kind"], "Pod");
    assert_eq!(object["apiVersion"], "v1");
    assert_eq!(object["metadata"]["resourceVersion"], modified.to_string());
    assert_eq!(object["metadata"]["labels"]["tier"], "gold");
    assert_eq!(
        object["metadata"]["uid"],
        "0b8f1b3e-6a59-4f4c-8a0e-3d3c2e9a4f21"
    );

    // Only pods on this watch: the namespace change is not here.
    let event: Value = serde_json::from_str(&watch.next_line().await.unwrap()).unwrap();
    assert_eq!(event["type"], "DELETED");
    assert_eq!(
        event["object"]["metadata"]["resourceVersion"],
        deleted.to_string()
    );
    assert_eq!(event["object"]["metadata"]["name"], "web-7c9f8d6b5d-x2lqp");

    let event: Value = serde_json::from_str(&watch.next_line().await.unwrap()).unwrap();
    assert_eq!(
        event,
        json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
            "metadata": {"resourceVersion": deleted.to_string()}}})
    );
    // The stream ends cleanly (last chunk) after timeoutSeconds.
    assert_eq!(watch.next_line().await, None);
    assert!(watch.ended_cleanly());
    assert!(started.elapsed() >= Duration::from_secs(1));
    common::wait_until("the watch is closed", || fake.open_watches(Kind::Pod) == 0).await;
    assert_eq!(fake.stats(Kind::Pod).watch_versions, [from.to_string()]);
}

#[tokio::test]
async fn a_watch_resumes_from_history_and_expires_after_compaction() {
    let fake = fake_with_fixtures().await;
    fake.apply_json(pod_json("b", json!({"app": "db"})));
    // Resuming from version 1 replays the pod changes after it, in order.
    let mut watch = RawResponse::get(
        fake.addr(),
        "/api/v1/pods?watch=true&resourceVersion=1&timeoutSeconds=5",
    )
    .await;
    let first: Value = serde_json::from_str(&watch.next_line().await.unwrap()).unwrap();
    let second: Value = serde_json::from_str(&watch.next_line().await.unwrap()).unwrap();
    assert_eq!(
        (
            &first["type"],
            &first["object"]["metadata"]["resourceVersion"]
        ),
        (&json!("ADDED"), &json!("2"))
    );
    assert_eq!(second["object"]["metadata"]["name"], "b");
    // Abruptly broken: the chunked body stops without its last chunk.
    fake.break_watches();
    let mut rest = Vec::new();
    while let Some(line) = tokio::time::timeout(common::DEADLINE, watch.next_line())
        .await
        .unwrap()
    {
        rest.push(line);
    }
    assert!(rest.is_empty(), "{rest:?}");
    assert!(!watch.ended_cleanly());

    fake.compact();
    let mut watch =
        RawResponse::get(fake.addr(), "/api/v1/pods?watch=true&resourceVersion=3").await;
    assert_eq!(
        watch.status, 200,
        "the real server answers 200 and an ERROR event"
    );
    let event: Value = serde_json::from_str(&watch.next_line().await.unwrap()).unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(
        event["object"],
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version: 3 (5)", "reason": "Expired", "code": 410})
    );
    assert_eq!(
        watch.next_line().await,
        None,
        "the watch ends after the error"
    );
    assert_eq!(fake.stats(Kind::Pod).expired, 1);
    // From the compaction point itself a watch is fine.
    let watch = RawResponse::get(fake.addr(), "/api/v1/pods?watch=true&resourceVersion=5").await;
    assert_eq!(watch.status, 200);
    common::wait_until("the watch is registered", || {
        fake.open_watches(Kind::Pod) == 1
    })
    .await;
}

#[tokio::test]
async fn errors_are_status_objects() {
    let fake = fake_with_fixtures().await;
    let (status, err, _) = get_json(&fake, "/api/v1/pods?labelSelector=app%3Dweb").await;
    assert_eq!(
        (status, &err["kind"], &err["reason"]),
        (400, &json!("Status"), &json!("BadRequest"))
    );

    fake.fail(Kind::NetworkPolicy, Some(403));
    let (status, err, _) = get_json(
        &fake,
        "/apis/networking.k8s.io/v1/networkpolicies?watch=true",
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(err["reason"], "Forbidden");
    assert_eq!(err["code"], 403);
    assert_eq!(
        err["details"],
        json!({"group": "networking.k8s.io", "kind": "networkpolicies"})
    );
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("cannot watch resource \"networkpolicies\""));
    fake.fail(Kind::NetworkPolicy, None);
    let (status, _, _) = get_json(&fake, "/apis/networking.k8s.io/v1/networkpolicies").await;
    assert_eq!(status, 200);

    let mut response = RawResponse::get(fake.addr(), "/api/v1/services").await;
    assert_eq!(response.status, 404);
    assert_eq!(response.body().await, "404 page not found\n");
}
