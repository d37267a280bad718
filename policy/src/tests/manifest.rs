//! Manifests: YAML and JSON files to objects.

use crate::manifest::{is_manifest, parse};
use crate::{Error, Object, ObjectKey};

const DOCS_EXAMPLE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: test-network-policy
  namespace: default
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
  - Ingress
  - Egress
  ingress:
  - from:
    - ipBlock:
        cidr: 172.17.0.0/16
        except:
        - 172.17.1.0/24
    - namespaceSelector:
        matchLabels:
          project: myproject
    - podSelector:
        matchLabels:
          role: frontend
    ports:
    - protocol: TCP
      port: 6379
  egress:
  - to:
    - ipBlock:
        cidr: 10.0.0.0/24
    ports:
    - protocol: TCP
      port: 5978
---
---
apiVersion: v1
kind: Pod
metadata:
  name: db
  namespace: default
  labels: {role: db}
  annotations: {a: b}
  managedFields: []
spec:
  containers:
  - name: redis
    image: redis:7
    ports:
    - {name: redis, containerPort: 6379}
status:
  phase: Running
  podIP: 10.1.0.5
  podIPs: [{ip: 10.1.0.5}, {ip: "fd00::5"}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
"#;

#[test]
fn yaml_documents_empty_ones_skipped_unknown_kinds_ignored() {
    let objs = parse("a.yaml", DOCS_EXAMPLE).unwrap();
    assert_eq!(objs.len(), 2);
    assert!(matches!(&objs[0], Object::NetworkPolicy(_)));
    assert_eq!(
        objs[1].key(),
        ObjectKey::Pod(crate::PodKey {
            namespace: "default".into(),
            name: "db".into()
        })
    );
}

#[test]
fn json_list_and_single_object() {
    let list = r#"{"apiVersion":"v1","kind":"List","items":[
        {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"prod","labels":{"team":"a"}}},
        {"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"}},
        {"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}]}"#;
    let objs = parse("l.json", list).unwrap();
    assert_eq!(objs.len(), 2);
    assert_eq!(objs[0].key(), ObjectKey::Namespace("prod".into()));
    assert_eq!(objs[1].key(), ObjectKey::Node("n1".into()));
    let one = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x"}}"#;
    assert_eq!(parse("o.json", one).unwrap().len(), 1);
}

#[test]
fn yaml_list() {
    let y = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n";
    assert_eq!(parse("l.yml", y).unwrap().len(), 1);
}

#[test]
fn a_bad_document_fails_the_file_with_its_index() {
    let y = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: [\n";
    match parse("bad.yaml", y) {
        Err(Error::Parse { file, index, .. }) => {
            assert_eq!(file, "bad.yaml");
            assert_eq!(index, 2);
        }
        other => panic!("{other:?}"),
    }
    // Missing apiVersion, a wrong apiVersion for the kind, a known kind that does not fit.
    for bad in [
        "kind: Namespace\nmetadata: {name: a}\n",
        "apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nmetadata: {name: a}\n",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: 3}\n",
        "- just\n- a list\n",
    ] {
        assert!(
            matches!(parse("b.yaml", bad), Err(Error::Parse { index: 1, .. })),
            "{bad}"
        );
    }
}

#[test]
fn a_file_cut_anywhere_is_an_error_or_a_prefix_never_a_panic() {
    let json = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}},{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"b"}}]}"#;
    for cut in 1..json.len() {
        assert!(parse("c.json", &json[..cut]).is_err(), "cut at {cut}");
    }
    // YAML cut inside a token of the last document: an error.
    let cut = &DOCS_EXAMPLE[..DOCS_EXAMPLE.find("podIPs: [{ip").unwrap() + 12];
    assert!(parse("c.yaml", cut).is_err());
}

#[test]
fn manifest_names() {
    assert!(is_manifest("a.yaml") && is_manifest("b.yml") && is_manifest("c.json"));
    assert!(!is_manifest(".a.yaml") && !is_manifest("a.txt"));
}
