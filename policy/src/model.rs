//! The validated cluster state the compiler and the reference evaluator read: namespaces with
//! labels, pods with labels and named ports, policies in a checked form (selectors parsed,
//! CIDRs parsed, ports in range). [`Cluster::upsert`] refuses an invalid object and keeps what
//! it had.

use crate::{Error, Object, ObjectKey, PodKey};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Everything the compiler needs to know about the cluster, apart from pod addresses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cluster {
    // Filled in by the implementation: namespaces, pods, policies (validated forms).
}

impl Cluster {
    /// An empty cluster.
    pub fn new() -> Cluster {
        Cluster::default()
    }

    /// Adds or replaces an object. An invalid object is refused (naming the field) and the
    /// previous version of it, if any, stays in force. Nodes are accepted and ignored.
    pub fn upsert(&mut self, _object: &Object) -> Result<(), Error> {
        todo!()
    }

    /// Removes an object; removing what is not there is not an error.
    pub fn delete(&mut self, _key: &ObjectKey) {
        todo!()
    }

    /// Replaces the whole state with `objects` (a relist, or a directory read again): every
    /// object is checked first; on the first invalid one the state is left as it was and the
    /// errors of all invalid objects are returned.
    pub fn replace_all(&mut self, _objects: &[Object]) -> Result<(), Vec<Error>> {
        todo!()
    }

    /// The addresses the pod objects themselves carry (`status.podIPs`), for a source that has
    /// them; the compiler also takes addresses from the mesh.
    pub fn status_addresses(&self) -> BTreeMap<PodKey, Vec<IpAddr>> {
        todo!()
    }

    /// The names of the policies that select `pod` for ingress and for egress.
    pub fn selecting(&self, _pod: &PodKey) -> (Vec<String>, Vec<String>) {
        todo!()
    }

    /// Counts for status: (namespaces, pods, policies).
    pub fn counts(&self) -> (usize, usize, usize) {
        todo!()
    }
}
