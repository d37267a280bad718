//! Objects in the exact shape a real API server (v1.33) returns them, recorded by hand:
//! `managedFields`, `status`, `uid`, `creationTimestamp`, `resourceVersion`, `generation`,
//! the `kubernetes.io/metadata.name` label of namespaces. The files are in
//! `kube-source/tests/fixtures/`.

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::Value;

/// Namespace `shop` (labels `team: web`), as JSON.
pub const NAMESPACE: &str = include_str!("../../tests/fixtures/namespace.json");
/// Pod `shop/web-7c9f8d6b5d-x2lqp` (labels `app: web`, port 8080, IP 10.244.1.17 on
/// `worker-1`), as JSON.
pub const POD: &str = include_str!("../../tests/fixtures/pod.json");
/// NetworkPolicy `shop/web-allow-frontend` (ingress to `app: web` on TCP 8080 from
/// `role: frontend` pods of `team: web` namespaces), as JSON.
pub const NETWORK_POLICY: &str = include_str!("../../tests/fixtures/networkpolicy.json");
/// Node `worker-1` (InternalIP 10.0.0.11, pod CIDR 10.244.1.0/24), as JSON.
pub const NODE: &str = include_str!("../../tests/fixtures/node.json");

/// A fixture as JSON.
pub fn json(fixture: &str) -> Value {
    serde_json::from_str(fixture).expect("fixtures are valid JSON")
}

/// The namespace fixture.
pub fn namespace() -> Namespace {
    serde_json::from_str(NAMESPACE).expect("namespace fixture")
}

/// The pod fixture.
pub fn pod() -> Pod {
    serde_json::from_str(POD).expect("pod fixture")
}

/// The NetworkPolicy fixture.
pub fn network_policy() -> NetworkPolicy {
    serde_json::from_str(NETWORK_POLICY).expect("network policy fixture")
}

/// The node fixture.
pub fn node() -> Node {
    serde_json::from_str(NODE).expect("node fixture")
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixtures_parse_as_their_types() {
        assert_eq!(super::namespace().metadata.name.as_deref(), Some("shop"));
        assert_eq!(super::pod().metadata.namespace.as_deref(), Some("shop"));
        assert!(super::network_policy().spec.is_some());
        assert!(super::node().status.is_some());
    }
}
