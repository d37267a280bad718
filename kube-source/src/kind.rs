//! The four kinds Weft watches, and what the API calls them (paths, list kinds, versions).

use std::fmt;

/// A kind of object the source watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `v1` Namespace (cluster-scoped).
    Namespace,
    /// `v1` Pod (namespaced).
    Pod,
    /// `networking.k8s.io/v1` NetworkPolicy (namespaced).
    NetworkPolicy,
    /// `v1` Node (cluster-scoped).
    Node,
}

impl Kind {
    /// All kinds, in the order the source starts their watchers.
    pub const ALL: [Kind; 4] = [Kind::Namespace, Kind::Pod, Kind::NetworkPolicy, Kind::Node];

    /// The object's `kind` field: `Pod`, `Namespace`, ...
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::Node => "Node",
        }
    }

    /// The object's `apiVersion` field: `v1` or `networking.k8s.io/v1`.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::NetworkPolicy => "networking.k8s.io/v1",
            _ => "v1",
        }
    }

    /// The resource's plural name, as in URLs and RBAC rules: `pods`, `namespaces`, ...
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Pod => "pods",
            Kind::NetworkPolicy => "networkpolicies",
            Kind::Node => "nodes",
        }
    }

    /// The path of the cluster-wide collection: `/api/v1/pods`,
    /// `/apis/networking.k8s.io/v1/networkpolicies`, ...
    pub fn path(self) -> &'static str {
        match self {
            Kind::Namespace => "/api/v1/namespaces",
            Kind::Pod => "/api/v1/pods",
            Kind::NetworkPolicy => "/apis/networking.k8s.io/v1/networkpolicies",
            Kind::Node => "/api/v1/nodes",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        matches!(self, Kind::Pod | Kind::NetworkPolicy)
    }

    /// The kind from an object's `kind` field (`None` for kinds Weft does not watch).
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind whose cluster-wide collection is at `path`.
    pub fn from_path(path: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.path() == path)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
            assert_eq!(Kind::from_path(kind.path()), Some(kind));
            assert!(kind.path().ends_with(kind.plural()));
        }
        assert_eq!(Kind::from_name("Service"), None);
    }
}
