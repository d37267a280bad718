//! `weft trace`, the pure part: where two endpoints are and the path a packet between them
//! takes, explained from a [`Snapshot`] of the router's state. No I/O: the daemon gathers the
//! snapshot (`daemon/trace.rs`) and this module reasons on it with the data plane's own
//! functions: the fabric the data plane reads ([`Fabric::unicast_route`], the same call the TAP
//! side makes for every unicast frame, and [`Fabric::children`] for floods), the MAC table's
//! entries as [`vswitch::Fdb::lookup`] returns them, the IPAM blocks and pod lists the mesh
//! agreed on, and NetworkPolicy through the reference evaluator
//! ([`weft_policy::reference::explain`]) on the inputs the last compile used. Where each end is
//! lives in `endpoints`.

use gossip::ipam::Block;
use std::collections::BTreeMap;
use std::net::IpAddr;
use vswitch::engine::{Fabric, Peer};
use vswitch::switch::Decision;
use vswitch::{Location, MacAddr, PeerName};
use weft_api::trace::{Hop, HopKind, TraceAnswer};
use weft_policy::reference::{self, DirectionVerdict, Protocol};
use weft_policy::{Cluster, PodKey};

mod endpoints;
pub mod live;
#[cfg(test)]
mod tests;
pub mod watch;

use endpoints::Found;
pub use endpoints::{Flow, Target};

/// A request that cannot be traced: an endpoint that is neither `namespace/name`, an IP
/// address nor a MAC, or a protocol other than `tcp`, `udp`, `icmp` (the crate's one error enum,
/// answered with HTTP 400).
pub type TraceError = crate::Error;

fn bad(what: String) -> TraceError {
    crate::Error::BadRequest(what)
}

/// A pod attached on this host (its reservation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPod {
    /// Its addresses: IPv4 first on a dual-stack cluster, then IPv6.
    pub addrs: Vec<IpAddr>,
    /// Its identity, when given at ADD.
    pub pod: Option<PodKey>,
    /// Its MAC, once its port is guarded.
    pub mac: Option<MacAddr>,
}

/// What the router knows of NetworkPolicy.
#[derive(Debug, Clone, Copy)]
pub enum PolicyView<'a> {
    /// No source configured: nothing is filtered.
    Off,
    /// Sources configured but not all read yet: the previous ruleset, if any, is in force.
    NotReady,
    /// The inputs of the last compile: the cluster and the pod addresses.
    On(&'a Cluster, &'a BTreeMap<PodKey, Vec<IpAddr>>),
}

/// The router's state as the trace needs it, taken at one moment.
#[derive(Debug)]
pub struct Snapshot<'a, P> {
    /// This host.
    pub me: PeerName,
    /// Nicknames of every peer known (this host included).
    pub nicknames: BTreeMap<PeerName, String>,
    /// The bridge's name.
    pub bridge: String,
    /// This host's pod MTU.
    pub pod_mtu: u32,
    /// This host's underlay MTU.
    pub underlay_mtu: u32,
    /// The cluster has a secret.
    pub encrypted: bool,
    /// The data plane's fabric (the one it forwards with now).
    pub fabric: &'a Fabric<P>,
    /// The MAC table's live entries.
    pub macs: BTreeMap<MacAddr, Location>,
    /// This host's pods.
    pub local_pods: Vec<LocalPod>,
    /// Every host's pods as the mesh lists them (this host's included).
    pub mesh_pods: Vec<(PeerName, PodKey, Vec<IpAddr>)>,
    /// The pod CIDRs (one per family), when IPAM is on.
    pub cidrs: Vec<Block>,
    /// The pod-address blocks and their holders.
    pub blocks: Vec<(Block, PeerName)>,
    /// Per neighbour, why it is on the fast path or the sleeve (as `weft status` shows it).
    pub fast_reasons: BTreeMap<PeerName, String>,
    /// Per neighbour, the pod MTU of the pair (the smaller of both hosts').
    pub peer_mtus: BTreeMap<PeerName, u32>,
    /// NetworkPolicy.
    pub policy: PolicyView<'a>,
}

impl<P: Peer> Snapshot<'_, P> {
    fn nick(&self, p: PeerName) -> String {
        self.nicknames
            .get(&p)
            .cloned()
            .unwrap_or_else(|| p.to_string())
    }

    /// The hops between two hosts, from this host's fabric (`from` or `to` is this host).
    fn crossing(&self, from: PeerName, to: PeerName, hops: &mut Vec<Hop>) -> Option<&'static str> {
        let forward = from == self.me;
        let other = if forward { to } else { from };
        let Some(route) = self.fabric.unicast_route(Decision::Unicast(other)) else {
            hops.push(Hop::new(
                HopKind::NoRoute,
                &self.nick(self.me),
                format!(
                    "no route to {}: not reachable over usable connections",
                    self.nick(other)
                ),
            ));
            return Some("no route");
        };
        let hop_name = route.hop.name();
        let encryption = if route.hop.encrypts() {
            route
                .hop
                .aead()
                .map_or("chacha20-poly1305", vswitch::Aead::name)
        } else if self.encrypted && !route.is_fast() {
            "trusted"
        } else {
            "none"
        };
        let pod_mtu = self
            .peer_mtus
            .get(&hop_name)
            .copied()
            .unwrap_or(self.pod_mtu);
        // Hop endpoints in the packet's direction.
        let (a, b) = if forward {
            (self.me, hop_name)
        } else {
            (hop_name, self.me)
        };
        let (kind, detail) = if route.is_fast() {
            (
                HopKind::FastPath,
                format!(
                    "kernel VXLAN from {} to {} ({}), the router is not on the path",
                    self.nick(a),
                    self.nick(b),
                    route.addr.ip()
                ),
            )
        } else if route.is_direct() {
            (
                HopKind::Sleeve,
                format!(
                    "sleeve from {} to {} (UDP {})",
                    self.nick(a),
                    self.nick(b),
                    route.addr
                ),
            )
        } else {
            (
                HopKind::Sleeve,
                format!(
                    "sleeve from {} to the relay {} (UDP {})",
                    self.nick(a),
                    self.nick(b),
                    route.addr
                ),
            )
        };
        let mut h = Hop::new(kind, &self.nick(a), detail);
        h.to = Some(self.nick(b));
        h.reason = if route.is_direct() {
            self.fast_reasons.get(&hop_name).cloned()
        } else {
            // Relayed frames always take the sleeve: the fast path only carries a pair's own.
            Some(format!(
                "no usable direct path to {}: the shortest route over usable connections goes through {}",
                self.nick(other),
                self.nick(hop_name)
            ))
        };
        h.encryption = Some(encryption.into());
        h.pod_mtu = Some(pod_mtu);
        h.underlay_mtu = Some(self.underlay_mtu);
        if !route.is_direct() {
            let (relay, next) = if forward { (b, to) } else { (a, from) };
            let detail = if forward {
                format!(
                    "{} passes it on to {} (ttl - 1, sealed again for its own next hop)",
                    self.nick(relay),
                    self.nick(next)
                )
            } else {
                format!(
                    "{} relays it from {} (the reverse of this host's route)",
                    self.nick(relay),
                    self.nick(next)
                )
            };
            let mut r = Hop::new(HopKind::Relay, &self.nick(relay), detail);
            r.to = Some(self.nick(if forward { next } else { self.me }));
            if forward {
                hops.push(h);
                hops.push(r);
            } else {
                hops.push(r);
                hops.push(h);
            }
        } else {
            hops.push(h);
        }
        None
    }
}

/// The policy hop of one direction on `host`: the verdict `v`, or `unevaluated` (why there is
/// none, and whether that means the packet passes).
fn policy_hop(
    kind: HopKind,
    host: &str,
    who: &str,
    v: Option<&DirectionVerdict>,
    unevaluated: (Option<bool>, &str),
    flow: &str,
) -> Hop {
    let side = if kind == HopKind::Egress {
        "egress"
    } else {
        "ingress"
    };
    let (allowed, policies, detail) = match v {
        None => (unevaluated.0, vec![], unevaluated.1.to_string()),
        Some(DirectionVerdict::NotAPod) => (
            Some(true),
            vec![],
            format!("{who} is not a pod of the cluster: no {side} policy applies"),
        ),
        Some(DirectionVerdict::NotIsolated) => (
            Some(true),
            vec![],
            format!("no policy selects {who} for {side}: allowed"),
        ),
        Some(DirectionVerdict::AllowedBy(p)) => (
            Some(true),
            vec![p.clone()],
            format!("{flow} allowed by {p}"),
        ),
        Some(DirectionVerdict::DeniedBy(ps)) => (
            Some(false),
            ps.clone(),
            format!(
                "{flow} denied: {who} is selected for {side} by {} and no rule allows it",
                ps.join(", ")
            ),
        ),
    };
    let mut h = Hop::new(kind, host, detail);
    h.allowed = allowed;
    h.policies = policies;
    h
}

/// Explains the path from `from` to `to` for `flow`, as this router sees it.
pub fn explain<P: Peer>(
    s: &Snapshot<'_, P>,
    from_query: &str,
    to_query: &str,
    flow: Flow,
) -> Result<TraceAnswer, TraceError> {
    let from_t: Target = from_query.trim().parse()?;
    let to_t: Target = to_query.trim().parse()?;
    let from = s.locate(&from_t);
    let to = s.locate(&to_t);
    let mut notes = Vec::new();
    let mut hops = Vec::new();
    let me = s.nick(s.me);
    let flow_text = flow.describe();
    let host_nick = |h: Option<PeerName>| h.map(|h| s.nick(h)).unwrap_or_default();
    let (from_host, to_host) = (host_nick(from.host), host_nick(to.host));
    let who = |f: &Found, q: &str| {
        f.pod
            .as_ref()
            .map(|k| k.to_string())
            .unwrap_or_else(|| q.to_string())
    };

    // NetworkPolicy, cluster-wide: the reference evaluator on the last compile's inputs.
    let verdicts = match (s.policy, from.addr, to.addr) {
        (PolicyView::On(cluster, addresses), Some(fa), Some(ta)) => {
            let e = |f: &Found, a: IpAddr| reference::Endpoint {
                addr: a,
                pod: f.pod.clone(),
            };
            Some(reference::explain(
                cluster,
                addresses,
                &e(&from, fa),
                &e(&to, ta),
                flow.protocol,
                flow.port,
            ))
        }
        (PolicyView::On(..), _, _) => {
            notes.push("NetworkPolicy needs both ends' addresses; one is not known".into());
            None
        }
        _ => None,
    };
    let unevaluated = match s.policy {
        PolicyView::Off => (
            Some(true),
            "no NetworkPolicy source on this router: nothing filtered",
        ),
        PolicyView::NotReady => (
            None,
            "policy sources not read yet: the previous ruleset, if any, is in force",
        ),
        PolicyView::On(..) => (None, "not evaluated: an address is missing"),
    };
    if matches!(flow.protocol, Protocol::Tcp | Protocol::Udp) && flow.port == 0 {
        notes.push("no --port: policy rules that name ports do not match".into());
    }

    let egress = policy_hop(
        HopKind::Egress,
        &from_host,
        &who(&from, from_query),
        verdicts.as_ref().map(|v| &v.egress),
        unevaluated,
        &flow_text,
    );
    let ingress = policy_hop(
        HopKind::Ingress,
        &to_host,
        &who(&to, to_query),
        verdicts.as_ref().map(|v| &v.ingress),
        unevaluated,
        &flow_text,
    );
    let mut outcome: Option<String> = None;
    let egress_denied = egress.allowed == Some(false);
    hops.push(egress);
    if egress_denied {
        outcome = Some("denied by policy at egress".into());
    }

    if outcome.is_none() {
        match (from.host, to.host) {
            (Some(a), Some(b)) if a == b => {
                let mut h = Hop::new(
                    HopKind::Bridge,
                    &from_host,
                    format!(
                        "same host: the bridge {} forwards between the pods' ports (policy through br_netfilter)",
                        s.bridge
                    ),
                );
                h.pod_mtu = Some(s.pod_mtu);
                hops.push(h);
                if a != s.me {
                    notes.push(format!(
                        "asked on {me}, which is not {from_host}: this is what {me} knows of it"
                    ));
                }
            }
            (Some(a), None) => {
                let outside = to
                    .addr
                    .is_some_and(|t| !s.cidrs.is_empty() && s.cidrs.iter().all(|c| !c.contains(t)));
                if outside {
                    let cidrs: Vec<String> = s.cidrs.iter().map(ToString::to_string).collect();
                    notes.push(format!(
                        "{} is outside the pod CIDR {}: the pod sends it to its gateway and {} routes it (masqueraded)",
                        to_query,
                        cidrs.join(" and "),
                        from_host
                    ));
                }
                let mut detail = format!(
                    "{} is unknown (MAC table, IPAM blocks, pod lists): its frames are flooded",
                    who(&to, to_query)
                );
                if a == s.me {
                    let sleeve: Vec<String> = s
                        .fabric
                        .children(s.me)
                        .map(|(p, _)| s.nick(p.name()))
                        .collect();
                    let fast: Vec<String> = s
                        .fabric
                        .entries()
                        .iter()
                        .filter(|p| p.fast() && p.udp_addr().is_some())
                        .map(|p| s.nick(p.name()))
                        .collect();
                    detail.push_str(&format!(
                        ": sleeve to [{}], kernel VXLAN flood list to [{}]",
                        sleeve.join(", "),
                        fast.join(", ")
                    ));
                }
                hops.push(Hop::new(HopKind::Flood, &from_host, detail));
                outcome = Some("flooded".into());
            }
            (Some(a), Some(b)) if a == s.me || b == s.me => {
                if b == s.me {
                    notes.push(format!(
                        "asked on the destination's host: {from_host} chooses the path; shown is the reverse of this host's route to it"
                    ));
                }
                if let Some(o) = s.crossing(a, b, &mut hops) {
                    outcome = Some(o.into());
                }
            }
            (Some(_), Some(_)) => {
                notes.push(format!(
                    "asked on {me}, which is neither {from_host} nor {to_host}: the path between them is chosen on {from_host}; run weft trace there"
                ));
                hops.push(Hop::new(
                    HopKind::Elsewhere,
                    &from_host,
                    format!("{from_host} to {to_host}: not seen from {me}"),
                ));
                outcome = Some("partial".into());
            }
            (None, _) => {
                notes.push(format!(
                    "the source {from_query} is not known here (not a local pod, not in the mesh's pod lists, IPAM blocks or MAC table)"
                ));
                outcome = Some("partial".into());
            }
        }
    }
    if outcome.is_none() || outcome.as_deref() == Some("partial") && to.host.is_some() {
        let denied = ingress.allowed == Some(false);
        hops.push(ingress);
        if denied {
            outcome = Some("denied by policy at ingress".into());
        } else {
            let mut d = Hop::new(
                HopKind::Deliver,
                &to_host,
                format!("handed to {} by {}'s bridge", who(&to, to_query), to_host),
            );
            d.pod_mtu = Some(s.pod_mtu);
            hops.push(d);
        }
    }
    Ok(TraceAnswer {
        asked_on: me,
        from: s.endpoint(from_query, &from),
        to: s.endpoint(to_query, &to),
        flow: flow_text,
        hops,
        outcome: outcome.unwrap_or_else(|| "delivered".into()),
        notes,
        live: None,
    })
}
