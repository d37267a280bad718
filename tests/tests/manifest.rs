//! `deploy/kubernetes/weft.yaml` against the Kubernetes v1.33 object types of `k8s-openapi` (the
//! version docs/kubernetes.md claims), not against an API server: every document deserializes
//! into its typed object, and serializing that object back gives every field of the document
//! (k8s-openapi ignores unknown fields when it reads, so a misspelt or misplaced field would
//! otherwise pass unnoticed). Then what ties the manifest to the code: the router's flags exist,
//! host networking, the state directory, the ConfigMap keys used, and RBAC list/watch on every
//! kind `weft router --kubernetes` watches (`weft_kube::Kind::ALL`). No root, no cluster.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::process::Command;
use weft_lab::testbed::weft_bin;

const MANIFEST: &str = include_str!("../../deploy/kubernetes/weft.yaml");

/// The manifest's documents, as JSON values (comment-only documents left out).
fn documents() -> Vec<Value> {
    serde_yaml::Deserializer::from_str(MANIFEST)
        .map(|d| Value::deserialize(d).expect("the manifest is YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The paths of `doc` that are missing from `typed` or differ there.
fn differences(path: &str, doc: &Value, typed: Option<&Value>, out: &mut Vec<String>) {
    match (doc, typed) {
        (Value::Object(m), Some(Value::Object(t))) => {
            for (k, v) in m {
                differences(&format!("{path}.{k}"), v, t.get(k), out);
            }
        }
        (Value::Array(a), Some(Value::Array(t))) if a.len() == t.len() => {
            for (i, v) in a.iter().enumerate() {
                differences(&format!("{path}[{i}]"), v, t.get(i), out);
            }
        }
        (_, None) => out.push(format!("{path}: not a field of the type (dropped)")),
        (d, Some(t)) if d != t => out.push(format!("{path}: {d} read back as {t}")),
        _ => {}
    }
}

/// `doc` as a `T`, checked to keep every field.
fn typed<T: DeserializeOwned + Serialize>(doc: &Value) -> T {
    let name = format!(
        "{} {}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    );
    let t: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{name} does not fit its type: {e}"));
    let back = serde_json::to_value(&t).unwrap();
    let mut diffs = Vec::new();
    differences("", doc, Some(&back), &mut diffs);
    assert!(diffs.is_empty(), "{name}:\n{}", diffs.join("\n"));
    t
}

/// The manifest's objects, by kind.
#[derive(Default)]
struct Objects {
    accounts: Vec<ServiceAccount>,
    roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
    maps: Vec<ConfigMap>,
    daemonsets: Vec<DaemonSet>,
}

fn objects() -> Objects {
    let mut o = Objects::default();
    for doc in documents() {
        match (doc["apiVersion"].as_str(), doc["kind"].as_str()) {
            (Some("v1"), Some("ServiceAccount")) => o.accounts.push(typed(&doc)),
            (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRole")) => {
                o.roles.push(typed(&doc))
            }
            (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRoleBinding")) => {
                o.bindings.push(typed(&doc))
            }
            (Some("v1"), Some("ConfigMap")) => o.maps.push(typed(&doc)),
            (Some("apps/v1"), Some("DaemonSet")) => o.daemonsets.push(typed(&doc)),
            (v, k) => panic!("a document of a kind this test does not know: {v:?} {k:?}"),
        }
    }
    o
}

#[test]
fn every_document_is_a_valid_v1_33_object_with_no_unknown_field() {
    let o = objects();
    assert_eq!(
        (
            o.accounts.len(),
            o.roles.len(),
            o.bindings.len(),
            o.maps.len(),
            o.daemonsets.len()
        ),
        (1, 1, 1, 1, 1)
    );
}

/// The round trip is what catches misspellings: a field that is not in the type is reported.
#[test]
fn a_misspelt_field_is_reported() {
    let mut docs = documents();
    let ds = docs.iter_mut().find(|d| d["kind"] == "DaemonSet").unwrap();
    ds["spec"]["template"]["spec"]["hostNetwrok"] = Value::Bool(true);
    let back = serde_json::to_value(serde_json::from_value::<DaemonSet>(ds.clone()).unwrap());
    let mut diffs = Vec::new();
    differences("", ds, Some(&back.unwrap()), &mut diffs);
    assert_eq!(
        diffs,
        [".spec.template.spec.hostNetwrok: not a field of the type (dropped)"]
    );
}

/// The long flags (`--name`) in `text` (a script, or `--help` output).
fn flags(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.split('=').next().unwrap().to_string())
        .collect()
}

fn help(args: &[&str]) -> String {
    let out = Command::new(weft_bin().expect("the release weft"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn container<'a>(ds: &'a DaemonSet, name: &str, init: bool) -> &'a Container {
    let spec = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let list = if init {
        spec.init_containers.as_ref().unwrap()
    } else {
        &spec.containers
    };
    list.iter().find(|c| c.name == name).unwrap()
}

#[test]
fn the_daemonset_runs_the_router_with_flags_it_has() {
    let o = objects();
    let ds = &o.daemonsets[0];
    let spec = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(spec.host_network, Some(true));

    let router = container(ds, "router", false);
    let script = router.command.as_ref().unwrap().join("\n");
    assert!(script.contains("exec weft router "), "{script}");
    let router_flags = flags(&help(&["router"]));
    // The flags the script passes (its comment lines left out).
    let code: Vec<&str> = script
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let used = flags(&code.join("\n"));
    assert!(used.contains(&"--kubernetes".to_string()), "{used:?}");
    for f in &used {
        assert!(router_flags.contains(f), "weft router has no {f}");
    }
    let probe = router.readiness_probe.as_ref().unwrap().exec.as_ref();
    let probe = probe.unwrap().command.as_ref().unwrap();
    assert_eq!(probe[..2], ["weft", "status"]);
    let status_flags = flags(&help(&["status"]));
    for f in flags(&probe.join(" ")) {
        assert!(status_flags.contains(&f), "weft status has no {f}");
    }

    // The state directory: the router's flag, the mount, and the conflist's stateDir agree.
    assert!(script.contains("--state-dir /run/weft"));
    let mounts = router.volume_mounts.as_ref().unwrap();
    assert!(mounts.iter().any(|m| m.mount_path == "/run/weft"));
    let map = o.maps[0].data.as_ref().unwrap();
    let conflist: Value = serde_json::from_str(&map["10-weft.conflist"]).unwrap();
    assert_eq!(conflist["plugins"][0]["type"], "weft-cni");
    assert_eq!(conflist["plugins"][0]["stateDir"], "/run/weft");

    // Every ConfigMap key the pods read is there; both containers run the same image.
    for c in &spec.containers {
        for e in c.env.iter().flatten() {
            let from = e.value_from.as_ref();
            if let Some(r) = from.and_then(|f| f.config_map_key_ref.as_ref()) {
                assert_eq!(r.name, o.maps[0].metadata.name.clone().unwrap());
                assert!(
                    map.contains_key(&r.key),
                    "no key {} in the ConfigMap",
                    r.key
                );
            }
        }
    }
    let install = container(ds, "install-cni", true);
    assert_eq!(install.image, router.image);
}

#[test]
fn rbac_grants_list_and_watch_on_every_watched_kind_to_the_daemonsets_account() {
    let o = objects();
    let role = &o.roles[0];
    for kind in weft_kube::Kind::ALL {
        let group = match kind.api_version().rsplit_once('/') {
            Some((g, _)) => g,
            None => "",
        };
        let granted = |verb: &str| {
            role.rules.iter().flatten().any(|r| {
                r.api_groups.iter().flatten().any(|g| g == group)
                    && r.resources.iter().flatten().any(|x| x == kind.plural())
                    && r.verbs.iter().any(|v| v == verb)
            })
        };
        assert!(
            granted("list") && granted("watch"),
            "{kind} not listable/watchable"
        );
    }
    // Read-only: no verb that changes anything.
    for r in role.rules.iter().flatten() {
        for v in &r.verbs {
            assert!(["get", "list", "watch"].contains(&v.as_str()), "verb {v}");
        }
    }
    let binding = &o.bindings[0];
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let account = &o.accounts[0].metadata;
    let ds = &o.daemonsets[0];
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name, account.name);
    assert!(binding
        .subjects
        .iter()
        .flatten()
        .any(|s| s.kind == "ServiceAccount"
            && Some(&s.name) == account.name.as_ref()
            && s.namespace == account.namespace));
    assert_eq!(ds.metadata.namespace, account.namespace);
}
