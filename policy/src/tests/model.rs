//! The cluster model: validation (each error names its field), the namespace label,
//! all-or-nothing replacement, status addresses, selecting policies.

use super::{cluster, key, objects};
use crate::model::{Peer, PortRef, NAMESPACE_NAME_LABEL};
use crate::{Cluster, Error, ObjectKey};

fn policy(spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: ns}}\nspec:\n{spec}"
    )
}

/// The field of the error upserting `yaml` gives.
fn invalid_field(yaml: &str) -> String {
    let mut c = Cluster::new();
    match c.upsert(&objects(yaml)[0]) {
        Err(Error::Invalid {
            field,
            kind,
            key,
            reason,
        }) => {
            assert!(!reason.is_empty());
            assert!(!kind.is_empty() && !key.is_empty() || field == "metadata.name");
            field
        }
        other => panic!("{other:?} for {yaml}"),
    }
}

#[test]
fn validation_errors_name_the_field() {
    let cases: &[(&str, &str)] = &[
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {namespace: ns}\n",
            "metadata.name",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\n",
            "metadata.namespace",
        ),
        ("  podSelector: {matchExpressions: [{key: a, operator: Is, values: [x]}]}\n", "spec.podSelector.matchExpressions[0].operator"),
        ("  podSelector: {matchExpressions: [{key: a, operator: In, values: []}]}\n", "spec.podSelector.matchExpressions[0].values"),
        ("  podSelector: {matchExpressions: [{key: a, operator: NotIn}]}\n", "spec.podSelector.matchExpressions[0].values"),
        ("  podSelector: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}\n", "spec.podSelector.matchExpressions[0].values"),
        ("  podSelector: {matchExpressions: [{key: a, operator: DoesNotExist, values: [x]}]}\n", "spec.podSelector.matchExpressions[0].values"),
        ("  podSelector: {matchLabels: {\"bad key!\": x}}\n", "spec.podSelector.matchLabels"),
        ("  podSelector: {matchLabels: {a: \"-bad\"}}\n", "spec.podSelector.matchLabels[a]"),
        ("  podSelector: {matchExpressions: [{key: a, operator: In, values: [\"x y\"]}]}\n", "spec.podSelector.matchExpressions[0].values[0]"),
        ("  podSelector: {}\n  ingress: [{ports: [{port: 0}]}]\n", "spec.ingress[0].ports[0].port"),
        ("  podSelector: {}\n  ingress: [{ports: [{port: 65536}]}]\n", "spec.ingress[0].ports[0].port"),
        ("  podSelector: {}\n  ingress: [{ports: [{port: 80, endPort: 79}]}]\n", "spec.ingress[0].ports[0].endPort"),
        ("  podSelector: {}\n  ingress: [{ports: [{port: http, endPort: 90}]}]\n", "spec.ingress[0].ports[0].endPort"),
        ("  podSelector: {}\n  ingress: [{ports: [{endPort: 90}]}]\n", "spec.ingress[0].ports[0].endPort"),
        ("  podSelector: {}\n  egress: [{ports: [{port: 80, protocol: ICMP}]}]\n", "spec.egress[0].ports[0].protocol"),
        ("  podSelector: {}\n  egress: [{ports: [{port: 80, protocol: tcp}]}]\n", "spec.egress[0].ports[0].protocol"),
        ("  podSelector: {}\n  ingress: [{ports: [{port: Http}]}]\n", "spec.ingress[0].ports[0].port"),
        ("  podSelector: {}\n  ingress: [{ports: [{port: \"8080\"}]}]\n", "spec.ingress[0].ports[0].port"),
        ("  podSelector: {}\n  ingress: [{ports: [{port: a-very-long-port-name}]}]\n", "spec.ingress[0].ports[0].port"),
        ("  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]\n", "spec.ingress[0].from[0].ipBlock.cidr"),
        ("  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/24, except: [10.0.1.0/28]}}]}]\n", "spec.ingress[0].from[0].ipBlock.except[0]"),
        ("  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/24, except: [nope]}}]}]\n", "spec.ingress[0].from[0].ipBlock.except[0]"),
        ("  podSelector: {}\n  ingress: [{}, {from: [{}]}]\n", "spec.ingress[1].from[0]"),
        ("  podSelector: {}\n  egress: [{to: [{podSelector: {}, ipBlock: {cidr: 10.0.0.0/8}}]}]\n", "spec.egress[0].to[0]"),
        ("  podSelector: {}\n  egress: [{to: [{namespaceSelector: {matchLabels: {a: \"b c\"}}}]}]\n", "spec.egress[0].to[0].namespaceSelector.matchLabels[a]"),
        ("  podSelector: {}\n  policyTypes: [Ingres]\n", "spec.policyTypes[0]"),
    ];
    for (spec, field) in cases {
        let yaml = if spec.starts_with("apiVersion") {
            spec.to_string()
        } else {
            policy(spec)
        };
        assert_eq!(invalid_field(&yaml), *field, "{yaml}");
    }
    let pod = |ports: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: ns}}\nspec:\n  containers:\n  - name: c\n    ports: {ports}\n")
    };
    assert_eq!(
        invalid_field(&pod("[{containerPort: 0}]")),
        "spec.containers[0].ports[0].containerPort"
    );
    assert_eq!(
        invalid_field(&pod("[{containerPort: 80, name: HTTP}]")),
        "spec.containers[0].ports[0].name"
    );
    assert_eq!(
        invalid_field(&pod("[{containerPort: 80, protocol: IP}]")),
        "spec.containers[0].ports[0].protocol"
    );
    assert_eq!(
        invalid_field(&pod(
            "[{containerPort: 80, name: web}, {containerPort: 81, name: web}]"
        )),
        "spec.containers[0].ports[1].name"
    );
    assert_eq!(
        invalid_field(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {\"x/\": y}}\n"
        ),
        "metadata.labels"
    );
    assert_eq!(
        invalid_field("apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: b}\nstatus: {podIP: 10.0.0.300}\n"),
        "status.podIP"
    );
}

#[test]
fn valid_labels_and_port_names() {
    use crate::validate::{is_label_key, is_label_value, is_port_name};
    assert!(
        is_label_key("app") && is_label_key("app.kubernetes.io/name") && is_label_key("A_b.c-D")
    );
    assert!(
        !is_label_key("")
            && !is_label_key("a/")
            && !is_label_key("Ex.com/a")
            && !is_label_key("-a")
    );
    assert!(!is_label_key(&"a".repeat(64)));
    assert!(
        is_label_value("")
            && is_label_value("v1.2_3-x")
            && !is_label_value("a b")
            && !is_label_value("a-")
    );
    assert!(
        is_port_name("http")
            && is_port_name("h2c")
            && is_port_name("x-1")
            && is_port_name("abcdefghijklmno")
    );
    assert!(
        !is_port_name("80")
            && !is_port_name("-a")
            && !is_port_name("a--b")
            && !is_port_name("abcdefghijklmnop")
    );
    assert!(!is_port_name("Http") && !is_port_name(""));
}

#[test]
fn an_invalid_object_keeps_the_previous_version() {
    let mut c = cluster(&policy("  podSelector: {matchLabels: {app: a}}\n"));
    let before = c.clone();
    let bad = objects(&policy(
        "  podSelector: {matchLabels: {app: a}}\n  ingress: [{ports: [{port: 0}]}]\n",
    ));
    assert!(c.upsert(&bad[0]).is_err());
    assert_eq!(c, before);
}

#[test]
fn replace_all_is_all_or_nothing_and_reports_every_error() {
    let mut c = cluster("apiVersion: v1\nkind: Namespace\nmetadata: {name: keep}\n");
    let before = c.clone();
    let mut objs = objects("apiVersion: v1\nkind: Namespace\nmetadata: {name: new}\n");
    objs.extend(objects(&policy(
        "  podSelector: {matchLabels: {\"!\": a}}\n",
    )));
    objs.extend(objects("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n"));
    let errors = c.replace_all(&objs).unwrap_err();
    assert_eq!(errors.len(), 2);
    assert_eq!(c, before);
    c.replace_all(&objs[..1]).unwrap();
    assert_eq!(c.namespace_names().into_iter().collect::<Vec<_>>(), ["new"]);
}

#[test]
fn namespaces_carry_their_name_label_with_or_without_an_object() {
    let c = cluster(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod, labels: {team: a}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: x, namespace: orphan}\n",
    );
    assert_eq!(
        c.namespace_labels("prod")
            .get(NAMESPACE_NAME_LABEL)
            .unwrap(),
        "prod"
    );
    assert_eq!(c.namespace_labels("prod").get("team").unwrap(), "a");
    assert_eq!(c.namespace_labels("orphan").len(), 1);
    assert_eq!(c.counts(), (2, 1, 0));
}

#[test]
fn status_addresses_selecting_and_delete() {
    let mut c = cluster(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: ns, labels: {app: web}}
status: {podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}, {ip: "fd00::1"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: ns}
status: {podIP: 10.0.0.2}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: in, namespace: ns}
spec: {podSelector: {matchLabels: {app: web}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: both, namespace: ns}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: other, namespace: ns2}
spec: {podSelector: {}, egress: [{}]}
"#,
    );
    let s = c.status_addresses();
    assert_eq!(
        s[&key("ns/a")],
        [
            "10.0.0.1".parse::<std::net::IpAddr>().unwrap(),
            "fd00::1".parse().unwrap()
        ]
    );
    assert_eq!(
        s[&key("ns/b")],
        ["10.0.0.2".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(
        c.selecting(&key("ns/a")),
        (
            vec!["ns/both".into(), "ns/in".into()],
            vec!["ns/both".into()]
        )
    );
    assert_eq!(
        c.selecting(&key("ns/b")),
        (vec!["ns/both".into()], vec!["ns/both".into()])
    );
    assert_eq!(c.isolation(&key("ns/b")), (true, true));
    assert_eq!(c.counts(), (1, 2, 3), "ns2 has only a policy");
    c.delete(&ObjectKey::NetworkPolicy {
        namespace: "ns".into(),
        name: "both".into(),
    });
    c.delete(&ObjectKey::Namespace("never".into()));
    assert_eq!(c.isolation(&key("ns/b")), (false, false));
    let other = c.policies().find(|p| p.namespace == "ns2").unwrap();
    assert!(
        other.ingress.is_some() && other.egress.is_some(),
        "egress rules imply type Egress"
    );
}

#[test]
fn policy_types_default_and_parsed_forms() {
    let c = cluster(&policy(
        "  podSelector: {}\n  egress: []\n  ingress:\n  - from:\n    - namespaceSelector: {}\n      podSelector: {matchLabels: {a: b}}\n    - ipBlock: {cidr: 10.0.0.9/24, except: [10.0.0.0/28]}\n    ports: [{port: 80, endPort: 90, protocol: UDP}, {port: web}, {protocol: SCTP}]\n",
    ));
    let p = c.policies().next().unwrap();
    assert!(
        p.egress.is_none(),
        "an empty egress list does not make the policy of type Egress"
    );
    let r = &p.ingress.as_ref().unwrap()[0];
    let peers = r.peers.as_ref().unwrap();
    assert!(
        matches!(&peers[0], Peer::Pods { namespaces: Some(n), pods } if n.is_empty() && !pods.is_empty())
    );
    assert!(matches!(&peers[1], Peer::IpBlock { cidr, .. } if cidr.to_string() == "10.0.0.0/24"));
    let ports = r.ports.as_ref().unwrap();
    assert_eq!(ports[0].port, Some(PortRef::Range(80, 90)));
    assert_eq!(ports[1].port, Some(PortRef::Named("web".into())));
    assert_eq!(ports[2].port, None);
}
