//! The objects a source (a `--policy-dir` directory, the Kubernetes API) delivers, in
//! Kubernetes' own types, and their keys.

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// One object of a kind Weft uses.
// Unboxed on purpose: the variants are the API types others construct and match on directly.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// A namespace (name, labels).
    Namespace(Namespace),
    /// A pod (namespace, name, labels, container ports; status addresses when the API has them).
    Pod(Pod),
    /// A `networking.k8s.io/v1` NetworkPolicy.
    NetworkPolicy(NetworkPolicy),
    /// A node (the Kubernetes source uses it for peers; the compiler ignores it).
    Node(Node),
}

/// A pod's identity: `K8S_POD_NAMESPACE` and `K8S_POD_NAME`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodKey {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl std::fmt::Display for PodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What an object is, for deleting it: kind, namespace (empty for cluster-scoped kinds), name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKey {
    /// A namespace, by name.
    Namespace(String),
    /// A pod.
    Pod(PodKey),
    /// A policy, by namespace and name.
    NetworkPolicy {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A node, by name.
    Node(String),
}

impl Object {
    /// The object's key (a missing name or namespace reads as empty; [`crate::Cluster::upsert`]
    /// refuses those).
    pub fn key(&self) -> ObjectKey {
        fn name(m: &ObjectMeta) -> String {
            m.name.clone().unwrap_or_default()
        }
        fn namespace(m: &ObjectMeta) -> String {
            m.namespace.clone().unwrap_or_default()
        }
        match self {
            Object::Namespace(n) => ObjectKey::Namespace(name(&n.metadata)),
            Object::Pod(p) => ObjectKey::Pod(PodKey {
                namespace: namespace(&p.metadata),
                name: name(&p.metadata),
            }),
            Object::NetworkPolicy(p) => ObjectKey::NetworkPolicy {
                namespace: namespace(&p.metadata),
                name: name(&p.metadata),
            },
            Object::Node(n) => ObjectKey::Node(name(&n.metadata)),
        }
    }

    /// The object's kind as Kubernetes spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::Pod(_) => "Pod",
            Object::NetworkPolicy(_) => "NetworkPolicy",
            Object::Node(_) => "Node",
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectKey::Namespace(n) | ObjectKey::Node(n) => write!(f, "{n}"),
            ObjectKey::Pod(p) => write!(f, "{p}"),
            ObjectKey::NetworkPolicy { namespace, name } => write!(f, "{namespace}/{name}"),
        }
    }
}
