//! The reference evaluator: answers "may this endpoint open a connection to that one on this
//! protocol and port?" straight from the Kubernetes definitions, one policy at a time, with no
//! precomputation. Tests hold the compiler to it, and `weft trace` names the policies that
//! decide a connection with it ([`explain`]).

use crate::model::{Direction, Peer, PodState, Policy, PortRef, Rule};
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

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
            Protocol::Other(n) => n,
        }
    }

    /// The protocol with IP protocol number `n`.
    pub fn from_number(n: u8) -> Protocol {
        match n {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            132 => Protocol::Sctp,
            n => Protocol::Other(n),
        }
    }
}

/// Whether a new connection from `from` to `to` on `protocol`/`port` is allowed: egress of
/// `from` (if it is a pod) and ingress of `to` (if it is a pod). `addresses` maps pods to their
/// addresses (for peers selected by labels).
///
/// An endpoint is a pod of the cluster when its `pod` is in the cluster; when `pod` is `None`,
/// when the address belongs to a pod of the cluster per `addresses` (as the compiler, which
/// only sees addresses, takes it). `port` is ignored for protocols other than TCP, UDP, SCTP.
pub fn allows(
    cluster: &Cluster,
    addresses: &BTreeMap<PodKey, Vec<IpAddr>>,
    from: &Endpoint,
    to: &Endpoint,
    protocol: Protocol,
    port: u16,
) -> bool {
    explain(cluster, addresses, from, to, protocol, port).allowed()
}

/// The verdict of one direction (egress of the source, ingress of the destination) and what
/// decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectionVerdict {
    /// The endpoint is not a pod of the cluster: no policy applies on this side.
    NotAPod,
    /// No policy of this direction selects the pod: it is not isolated.
    NotIsolated,
    /// Allowed by a rule of this policy (`namespace/name`, the first in the cluster's order
    /// whose rule matches).
    AllowedBy(String),
    /// Denied: these policies select the pod for this direction and none of their rules
    /// matches.
    DeniedBy(Vec<String>),
}

impl DirectionVerdict {
    /// Whether the direction lets the connection through.
    pub fn allowed(&self) -> bool {
        !matches!(self, DirectionVerdict::DeniedBy(_))
    }
}

/// Both directions' verdicts for one connection ([`explain`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The source's egress.
    pub egress: DirectionVerdict,
    /// The destination's ingress.
    pub ingress: DirectionVerdict,
}

impl Explanation {
    /// Whether the connection is allowed (both directions let it through).
    pub fn allowed(&self) -> bool {
        self.egress.allowed() && self.ingress.allowed()
    }
}

/// [`allows`], with the verdict of each direction and the policies that decide it (for `weft
/// trace`). The same evaluation: `allows` is `explain(..).allowed()`.
pub fn explain(
    cluster: &Cluster,
    addresses: &BTreeMap<PodKey, Vec<IpAddr>>,
    from: &Endpoint,
    to: &Endpoint,
    protocol: Protocol,
    port: u16,
) -> Explanation {
    let src = identify(cluster, addresses, from);
    let dst = identify(cluster, addresses, to);
    let egress = match src.pod {
        None => DirectionVerdict::NotAPod,
        Some(pod) => direction_allows(cluster, pod, Direction::Egress, &dst, &dst, protocol, port),
    };
    let ingress = match dst.pod {
        None => DirectionVerdict::NotAPod,
        Some(pod) => direction_allows(cluster, pod, Direction::Ingress, &src, &dst, protocol, port),
    };
    Explanation { egress, ingress }
}

/// An endpoint with its pod looked up in the cluster.
#[derive(Debug)]
struct Resolved<'a> {
    addr: IpAddr,
    pod: Option<(&'a PodKey, &'a PodState)>,
}

fn identify<'a>(
    cluster: &'a Cluster,
    addresses: &BTreeMap<PodKey, Vec<IpAddr>>,
    e: &Endpoint,
) -> Resolved<'a> {
    let pod = match &e.pod {
        Some(key) => cluster.pods().get_key_value(key),
        None => addresses
            .iter()
            .filter(|(_, addrs)| addrs.contains(&e.addr))
            .find_map(|(key, _)| cluster.pods().get_key_value(key)),
    };
    Resolved { addr: e.addr, pod }
}

/// The check of one direction for `pod` (the source for egress, the destination for ingress):
/// allowed when no policy of that direction selects it, or some rule of one that does matches
/// `peer` (the other end) and the port on `dest` (the destination).
fn direction_allows(
    cluster: &Cluster,
    (key, pod): (&PodKey, &PodState),
    direction: Direction,
    peer: &Resolved<'_>,
    dest: &Resolved<'_>,
    protocol: Protocol,
    port: u16,
) -> DirectionVerdict {
    let mut selecting = Vec::new();
    for policy in cluster.policies() {
        if policy.namespace != key.namespace || !policy.pod_selector.matches(&pod.labels) {
            continue;
        }
        let Some(rules) = policy.rules(direction) else {
            continue;
        };
        for rule in rules {
            if rule_allows(cluster, policy, rule, direction, peer, dest, protocol, port) {
                return DirectionVerdict::AllowedBy(policy.key());
            }
        }
        selecting.push(policy.key());
    }
    if selecting.is_empty() {
        DirectionVerdict::NotIsolated
    } else {
        DirectionVerdict::DeniedBy(selecting)
    }
}

#[allow(clippy::too_many_arguments)]
fn rule_allows(
    cluster: &Cluster,
    policy: &Policy,
    rule: &Rule,
    direction: Direction,
    peer: &Resolved<'_>,
    dest: &Resolved<'_>,
    protocol: Protocol,
    port: u16,
) -> bool {
    // Named ports resolve on the destination pod: for ingress the selected pod; for egress the
    // peer, and only when it was matched as a pod (a named port towards an ipBlock peer cannot
    // be resolved, so it matches nothing).
    let (peer_ok, resolvable) = match &rule.peers {
        None => (true, true),
        Some(peers) => {
            let as_pod = peers
                .iter()
                .any(|p| pod_peer_matches(cluster, policy, p, peer));
            let as_block = peers.iter().any(|p| block_matches(p, peer.addr));
            (
                as_pod || as_block,
                direction == Direction::Ingress || as_pod,
            )
        }
    };
    if !peer_ok {
        return false;
    }
    let Some(ports) = &rule.ports else {
        return true;
    };
    ports.iter().any(|p| {
        if p.protocol != protocol {
            return false;
        }
        match &p.port {
            None => true,
            Some(PortRef::Range(first, last)) => *first <= port && port <= *last,
            Some(PortRef::Named(name)) => {
                resolvable
                    && dest.pod.and_then(|(_, pod)| pod.resolve(name, protocol)) == Some(port)
            }
        }
    })
}

fn pod_peer_matches(cluster: &Cluster, policy: &Policy, peer: &Peer, who: &Resolved<'_>) -> bool {
    let Peer::Pods { namespaces, pods } = peer else {
        return false;
    };
    let Some((key, pod)) = who.pod else {
        return false;
    };
    let namespace_ok = match namespaces {
        None => key.namespace == policy.namespace,
        Some(selector) => selector.matches(&cluster.namespace_labels(&key.namespace)),
    };
    namespace_ok && pods.matches(&pod.labels)
}

fn block_matches(peer: &Peer, addr: IpAddr) -> bool {
    match peer {
        Peer::IpBlock { cidr, except } => {
            cidr.contains(&addr) && !except.iter().any(|e| e.contains(&addr))
        }
        Peer::Pods { .. } => false,
    }
}
