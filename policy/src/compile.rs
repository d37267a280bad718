//! The compiler: cluster state + pod addresses + this host's pods -> [`HostRules`], the
//! family-independent description of what this host enforces (which local pods are isolated in
//! each direction, and for each policy that selects a local pod, its rules as address sets and
//! port sets). [`crate::nft`] writes it as nftables.

use crate::{Cluster, PodKey};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// What one host enforces. Equality is what the router compares to decide whether anything
/// changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostRules {
    // Filled in by the implementation.
}

impl HostRules {
    /// The local pods, by address, for counters and status.
    pub fn local_pods(&self) -> BTreeMap<IpAddr, PodKey> {
        todo!()
    }
}

/// Compiles the rules for the pods of `local` (their addresses are in `addresses`).
pub fn compile(
    _cluster: &Cluster,
    _addresses: &BTreeMap<PodKey, Vec<IpAddr>>,
    _local: &BTreeSet<PodKey>,
) -> HostRules {
    todo!()
}
