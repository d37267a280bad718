//! The reference evaluator: answers "may this endpoint open a connection to that one on this
//! protocol and port?" straight from the Kubernetes definitions, one policy at a time, with no
//! precomputation. Tests hold the compiler to it.

use crate::{Cluster, PodKey};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A transport protocol a policy port can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
    /// Anything else (ICMP, ...): matched only by rules without ports.
    Other(u8),
}

/// One end of a connection: an address, and the pod it belongs to if it is one (`None` for
/// addresses outside the cluster's pods and for pods attached without an identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The address.
    pub addr: IpAddr,
    /// The pod with that address, if any.
    pub pod: Option<PodKey>,
}

/// Whether a new connection from `from` to `to` on `protocol`/`port` is allowed: egress of
/// `from` (if it is a pod) and ingress of `to` (if it is a pod). `addresses` maps pods to their
/// addresses (for peers selected by labels).
pub fn allows(
    _cluster: &Cluster,
    _addresses: &BTreeMap<PodKey, Vec<IpAddr>>,
    _from: &Endpoint,
    _to: &Endpoint,
    _protocol: Protocol,
    _port: u16,
) -> bool {
    todo!()
}
