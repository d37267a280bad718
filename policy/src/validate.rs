//! The checks [`crate::Cluster::upsert`] runs: Kubernetes objects to the validated forms of
//! [`crate::model`], or an [`Error::Invalid`] naming the kind, the key, the field path and the
//! reason. The rules are the API server's own (label syntax, selector operators, port ranges,
//! `IANA_SVC_NAME` port names, CIDRs), so what the API would refuse is refused here too.

use crate::model::{
    Checked, ContainerPort, Labels, Operator, Peer, PodState, Policy, PolicyPort, PortRef,
    Requirement, Rule, Selector, NAMESPACE_NAME_LABEL,
};
use crate::reference::Protocol;
use crate::{Error, Object, PodKey};
use k8s_openapi::api::networking::v1::{NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Who is being checked, for error messages.
struct Ctx {
    kind: &'static str,
    key: String,
}

impl Ctx {
    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            kind: self.kind.to_string(),
            key: self.key.clone(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Checks one object.
pub(crate) fn check(object: &Object) -> Result<Checked, Error> {
    let key = object.key().to_string();
    let cx = Ctx {
        kind: object.kind(),
        key,
    };
    match object {
        Object::Namespace(n) => {
            let name = name(&cx, &n.metadata)?;
            let mut labels = labels(&cx, &n.metadata)?;
            labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
            Ok(Checked::Namespace(name, labels))
        }
        Object::Pod(p) => {
            let name = name(&cx, &p.metadata)?;
            let namespace = namespace(&cx, &p.metadata)?;
            let labels = labels(&cx, &p.metadata)?;
            let mut ports: Vec<ContainerPort> = Vec::new();
            for (ci, c) in p.spec.iter().flat_map(|s| s.containers.iter()).enumerate() {
                for (pi, cp) in c.ports.iter().flatten().enumerate() {
                    let field = format!("spec.containers[{ci}].ports[{pi}]");
                    let port =
                        port_number(&cx, &format!("{field}.containerPort"), cp.container_port)?;
                    let protocol =
                        protocol(&cx, &format!("{field}.protocol"), cp.protocol.as_deref())?;
                    if let Some(n) = &cp.name {
                        if !is_port_name(n) {
                            return Err(
                                cx.err(format!("{field}.name"), format!("{n:?} {PORT_NAME}"))
                            );
                        }
                        if ports.iter().any(|o| o.name.as_deref() == Some(n)) {
                            return Err(cx.err(
                                format!("{field}.name"),
                                format!("duplicate port name {n:?}"),
                            ));
                        }
                    }
                    ports.push(ContainerPort {
                        name: cp.name.clone(),
                        port,
                        protocol,
                    });
                }
            }
            let mut status_addresses = Vec::new();
            if let Some(s) = &p.status {
                let listed: Vec<(String, &str)> = match &s.pod_ips {
                    Some(ips) if !ips.is_empty() => ips
                        .iter()
                        .enumerate()
                        .map(|(i, ip)| (format!("status.podIPs[{i}].ip"), ip.ip.as_str()))
                        .collect(),
                    _ => s
                        .pod_ip
                        .iter()
                        .map(|ip| ("status.podIP".to_string(), ip.as_str()))
                        .collect(),
                };
                for (field, ip) in listed {
                    let addr = ip
                        .parse()
                        .map_err(|_| cx.err(field, format!("{ip:?} is not an IP address")))?;
                    status_addresses.push(addr);
                }
            }
            Ok(Checked::Pod(
                PodKey { namespace, name },
                PodState {
                    labels,
                    ports,
                    status_addresses,
                },
            ))
        }
        Object::NetworkPolicy(np) => {
            let name = name(&cx, &np.metadata)?;
            let namespace = namespace(&cx, &np.metadata)?;
            labels(&cx, &np.metadata)?;
            let spec = np.spec.clone().unwrap_or_default();
            let pod_selector = match &spec.pod_selector {
                Some(s) => selector(&cx, "spec.podSelector", s)?,
                None => Selector::default(),
            };
            let (mut ingress_type, mut egress_type) = (false, false);
            match spec.policy_types.as_deref() {
                Some(types) if !types.is_empty() => {
                    for (i, t) in types.iter().enumerate() {
                        match t.as_str() {
                            "Ingress" => ingress_type = true,
                            "Egress" => egress_type = true,
                            other => {
                                return Err(cx.err(
                                    format!("spec.policyTypes[{i}]"),
                                    format!("{other:?} is neither \"Ingress\" nor \"Egress\""),
                                ))
                            }
                        }
                    }
                }
                // The API server's default: Ingress, and Egress when there are egress rules.
                _ => {
                    ingress_type = true;
                    egress_type = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
                }
            }
            let mut ingress = Vec::new();
            for (i, r) in spec.ingress.iter().flatten().enumerate() {
                let f = format!("spec.ingress[{i}]");
                ingress.push(rule(
                    &cx,
                    &f,
                    "from",
                    r.from.as_deref(),
                    r.ports.as_deref(),
                )?);
            }
            let mut egress = Vec::new();
            for (i, r) in spec.egress.iter().flatten().enumerate() {
                let f = format!("spec.egress[{i}]");
                egress.push(rule(&cx, &f, "to", r.to.as_deref(), r.ports.as_deref())?);
            }
            Ok(Checked::Policy(Policy {
                namespace,
                name,
                pod_selector,
                ingress: ingress_type.then_some(ingress),
                egress: egress_type.then_some(egress),
            }))
        }
        Object::Node(n) => {
            name(&cx, &n.metadata)?;
            Ok(Checked::Node)
        }
    }
}

const PORT_NAME: &str =
    "is not a valid port name (IANA_SVC_NAME: 1-15 lowercase letters, digits and '-', at least one letter, no leading, trailing or double '-')";

fn name(cx: &Ctx, m: &ObjectMeta) -> Result<String, Error> {
    match m.name.as_deref() {
        Some(n) if !n.is_empty() => Ok(n.to_string()),
        _ => Err(cx.err("metadata.name", "missing")),
    }
}

fn namespace(cx: &Ctx, m: &ObjectMeta) -> Result<String, Error> {
    match m.namespace.as_deref() {
        Some(n) if !n.is_empty() => Ok(n.to_string()),
        _ => Err(cx.err("metadata.namespace", "missing")),
    }
}

fn labels(cx: &Ctx, m: &ObjectMeta) -> Result<Labels, Error> {
    let labels = m.labels.clone().unwrap_or_default();
    check_labels(cx, "metadata.labels", &labels)?;
    Ok(labels)
}

fn check_labels(cx: &Ctx, field: &str, labels: &BTreeMap<String, String>) -> Result<(), Error> {
    for (k, v) in labels {
        if !is_label_key(k) {
            return Err(cx.err(field, format!("{k:?} is not a valid label key")));
        }
        if !is_label_value(v) {
            return Err(cx.err(
                format!("{field}[{k}]"),
                format!("{v:?} is not a valid label value"),
            ));
        }
    }
    Ok(())
}

fn selector(cx: &Ctx, field: &str, s: &LabelSelector) -> Result<Selector, Error> {
    let match_labels = s.match_labels.clone().unwrap_or_default();
    check_labels(cx, &format!("{field}.matchLabels"), &match_labels)?;
    let mut expressions = Vec::new();
    for (i, e) in s.match_expressions.iter().flatten().enumerate() {
        let f = format!("{field}.matchExpressions[{i}]");
        if !is_label_key(&e.key) {
            return Err(cx.err(
                format!("{f}.key"),
                format!("{:?} is not a valid label key", e.key),
            ));
        }
        let operator = match e.operator.as_str() {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => {
                return Err(cx.err(
                    format!("{f}.operator"),
                    format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist"),
                ))
            }
        };
        let values = e.values.clone().unwrap_or_default();
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(cx.err(format!("{f}.values"), "must be non-empty for In and NotIn"))
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(cx.err(
                    format!("{f}.values"),
                    "must be empty for Exists and DoesNotExist",
                ))
            }
            _ => {}
        }
        for (j, v) in values.iter().enumerate() {
            if !is_label_value(v) {
                return Err(cx.err(
                    format!("{f}.values[{j}]"),
                    format!("{v:?} is not a valid label value"),
                ));
            }
        }
        expressions.push(Requirement {
            key: e.key.clone(),
            operator,
            values: values.into_iter().collect(),
        });
    }
    Ok(Selector {
        match_labels,
        expressions,
    })
}

fn rule(
    cx: &Ctx,
    field: &str,
    peers_name: &str,
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
) -> Result<Rule, Error> {
    let mut checked_peers = Vec::new();
    for (i, p) in peers.unwrap_or_default().iter().enumerate() {
        let f = format!("{field}.{peers_name}[{i}]");
        checked_peers.push(peer(cx, &f, p)?);
    }
    let mut checked_ports = Vec::new();
    for (i, p) in ports.unwrap_or_default().iter().enumerate() {
        let f = format!("{field}.ports[{i}]");
        checked_ports.push(policy_port(cx, &f, p)?);
    }
    Ok(Rule {
        peers: (!checked_peers.is_empty()).then_some(checked_peers),
        ports: (!checked_ports.is_empty()).then_some(checked_ports),
    })
}

fn peer(cx: &Ctx, field: &str, p: &NetworkPolicyPeer) -> Result<Peer, Error> {
    if let Some(b) = &p.ip_block {
        if p.pod_selector.is_some() || p.namespace_selector.is_some() {
            return Err(cx.err(
                field,
                "ipBlock cannot be combined with podSelector or namespaceSelector",
            ));
        }
        let cidr: ipnet::IpNet = b.cidr.parse().map_err(|_| {
            cx.err(
                format!("{field}.ipBlock.cidr"),
                format!("{:?} is not a CIDR", b.cidr),
            )
        })?;
        let cidr = cidr.trunc();
        let mut except = Vec::new();
        for (i, e) in b.except.iter().flatten().enumerate() {
            let f = format!("{field}.ipBlock.except[{i}]");
            let net: ipnet::IpNet = e
                .parse()
                .map_err(|_| cx.err(&f, format!("{e:?} is not a CIDR")))?;
            let net = net.trunc();
            if !cidr.contains(&net) {
                return Err(cx.err(&f, format!("{e} is not inside {cidr}")));
            }
            except.push(net);
        }
        return Ok(Peer::IpBlock { cidr, except });
    }
    if p.pod_selector.is_none() && p.namespace_selector.is_none() {
        return Err(cx.err(
            field,
            "must specify podSelector, namespaceSelector or ipBlock",
        ));
    }
    let namespaces = match &p.namespace_selector {
        Some(s) => Some(selector(cx, &format!("{field}.namespaceSelector"), s)?),
        None => None,
    };
    let pods = match &p.pod_selector {
        Some(s) => selector(cx, &format!("{field}.podSelector"), s)?,
        None => Selector::default(),
    };
    Ok(Peer::Pods { namespaces, pods })
}

fn policy_port(cx: &Ctx, field: &str, p: &NetworkPolicyPort) -> Result<PolicyPort, Error> {
    let protocol = protocol(cx, &format!("{field}.protocol"), p.protocol.as_deref())?;
    let port = match (&p.port, p.end_port) {
        (None, None) => None,
        (None, Some(_)) => return Err(cx.err(format!("{field}.endPort"), "endPort requires port")),
        (Some(IntOrString::String(n)), end) => {
            if !is_port_name(n) {
                return Err(cx.err(format!("{field}.port"), format!("{n:?} {PORT_NAME}")));
            }
            if end.is_some() {
                return Err(cx.err(
                    format!("{field}.endPort"),
                    "endPort cannot be used with a named port",
                ));
            }
            Some(PortRef::Named(n.clone()))
        }
        (Some(IntOrString::Int(n)), end) => {
            let first = port_number(cx, &format!("{field}.port"), *n)?;
            let last = match end {
                Some(e) => {
                    let last = port_number(cx, &format!("{field}.endPort"), e)?;
                    if last < first {
                        return Err(cx.err(
                            format!("{field}.endPort"),
                            format!("{last} is less than port {first}"),
                        ));
                    }
                    last
                }
                None => first,
            };
            Some(PortRef::Range(first, last))
        }
    };
    Ok(PolicyPort { protocol, port })
}

fn port_number(cx: &Ctx, field: &str, n: i32) -> Result<u16, Error> {
    match u16::try_from(n) {
        Ok(p) if p >= 1 => Ok(p),
        _ => Err(cx.err(field, format!("{n} is not in 1..65535"))),
    }
}

fn protocol(cx: &Ctx, field: &str, p: Option<&str>) -> Result<Protocol, Error> {
    match p {
        None | Some("TCP") => Ok(Protocol::Tcp),
        Some("UDP") => Ok(Protocol::Udp),
        Some("SCTP") => Ok(Protocol::Sctp),
        Some(other) => Err(cx.err(field, format!("{other:?} is not one of TCP, UDP, SCTP"))),
    }
}

/// A label value: empty, or up to 63 of `[A-Za-z0-9-_.]` starting and ending alphanumeric.
pub(crate) fn is_label_value(v: &str) -> bool {
    v.is_empty() || is_label_name(v)
}

fn is_label_name(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain.
pub(crate) fn is_label_key(k: &str) -> bool {
    match k.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(k),
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// An `IANA_SVC_NAME`: 1-15 of lowercase letters, digits, '-', at least one letter, no
/// leading, trailing or double '-'.
pub(crate) fn is_port_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 15
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.iter().any(|c| c.is_ascii_lowercase())
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !n.contains("--")
}
