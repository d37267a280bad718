//! `weft trace`: the path a packet from one endpoint to another would take, as the router
//! computes it from the state its data plane uses (`POST /v1/trace`, [`TraceRequest`] ->
//! [`TraceAnswer`]), and its text rendering, one line per hop ([`render`]).

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// `POST /v1/trace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRequest {
    /// The source: a pod (`namespace/name`), an IPv4 address or a MAC address.
    pub from: String,
    /// The destination, in the same forms.
    pub to: String,
    /// `tcp`, `udp` or `icmp`.
    #[serde(default = "default_proto")]
    pub proto: String,
    /// The destination port (TCP, UDP); ignored for ICMP.
    #[serde(default)]
    pub port: Option<u16>,
}

fn default_proto() -> String {
    "tcp".into()
}

/// Where an endpoint of the trace is, as this router knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEndpoint {
    /// What was asked (`namespace/name`, an address, a MAC).
    pub query: String,
    /// The pod, `namespace/name`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Its IPv4 address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Its MAC address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The host's peer name; empty when unknown.
    pub host: String,
    /// The host's nickname; empty when unknown.
    pub host_nickname: String,
    /// The host is the one the trace was asked on.
    pub local: bool,
    /// How the host was found: `local reservation`, `gossiped pod list`, `IPAM block <cidr>`,
    /// `MAC table`, or `unknown`.
    pub found_by: String,
}

impl TraceEndpoint {
    /// The endpoint as one short phrase: `x/a (10.32.0.2) on h1`.
    pub fn describe(&self) -> String {
        let mut s = self.pod.clone().unwrap_or_else(|| self.query.clone());
        if let Some(a) = self.addr.as_ref().filter(|a| Some(*a) != self.pod.as_ref()) {
            if *a != s {
                let _ = write!(s, " ({a})");
            }
        }
        if self.host.is_empty() {
            s.push_str(" on an unknown host");
        } else {
            let _ = write!(s, " on {}", self.host_nickname);
            if self.local {
                s.push_str(" (this host)");
            }
        }
        s
    }
}

/// One step of the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HopKind {
    /// NetworkPolicy at the source's host.
    Egress,
    /// Delivered by the bridge of the host both endpoints are on.
    Bridge,
    /// The kernel VXLAN fast path to a neighbour.
    FastPath,
    /// The sleeve (user-space UDP encapsulation) to a neighbour.
    Sleeve,
    /// A relay passes the datagram on.
    Relay,
    /// An unknown destination: flooded.
    Flood,
    /// No route: the frame is dropped.
    NoRoute,
    /// Between two other hosts: not seen from the host asked.
    Elsewhere,
    /// NetworkPolicy at the destination's host.
    Ingress,
    /// Handed to the destination pod by its host's bridge.
    Deliver,
}

impl HopKind {
    /// Its name as the text shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            HopKind::Egress => "egress",
            HopKind::Bridge => "bridge",
            HopKind::FastPath => "fast path",
            HopKind::Sleeve => "sleeve",
            HopKind::Relay => "relay",
            HopKind::Flood => "flood",
            HopKind::NoRoute => "no route",
            HopKind::Elsewhere => "elsewhere",
            HopKind::Ingress => "ingress",
            HopKind::Deliver => "deliver",
        }
    }
}

/// One hop of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// What happens.
    pub kind: HopKind,
    /// The host it happens on (nickname); empty when unknown.
    pub host: String,
    /// The host it goes to (nickname), for hops between hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// One sentence.
    pub detail: String,
    /// Why this path (the fast path's reason for a sleeve hop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `chacha20-poly1305`, `trusted` (a secret, the path exempt) or `none`, for hops between
    /// hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// The largest IP packet a pod can send along this hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_mtu: Option<u32>,
    /// The underlay MTU the encapsulated packet must fit, for hops between hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay_mtu: Option<u32>,
    /// For policy hops: whether the connection passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<bool>,
    /// For policy hops: the policies that decide (`namespace/name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

impl Hop {
    /// A hop with only its kind, host and sentence.
    pub fn new(kind: HopKind, host: &str, detail: impl Into<String>) -> Hop {
        Hop {
            kind,
            host: host.to_string(),
            to: None,
            detail: detail.into(),
            reason: None,
            encryption: None,
            pod_mtu: None,
            underlay_mtu: None,
            allowed: None,
            policies: Vec::new(),
        }
    }
}

/// `POST /v1/trace` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceAnswer {
    /// The nickname of the host the trace was computed on.
    pub asked_on: String,
    /// The source.
    pub from: TraceEndpoint,
    /// The destination.
    pub to: TraceEndpoint,
    /// `tcp/80`, `udp/53`, `icmp`.
    pub flow: String,
    /// The hops, in order.
    pub hops: Vec<Hop>,
    /// `delivered`, `denied by policy`, `flooded`, `no route`, `partial` (the trace was asked on
    /// a host that is neither end's and could not see every step).
    pub outcome: String,
    /// What the trace could not tell, or what the reader should know.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The text of `weft trace`: the two ends, one line per hop, the outcome and the notes.
pub fn render(t: &TraceAnswer) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "trace {} from {} to {} (asked on {})",
        t.flow,
        t.from.describe(),
        t.to.describe(),
        t.asked_on
    );
    let width = t.hops.iter().map(|h| h.host.len()).max().unwrap_or(0);
    for (i, h) in t.hops.iter().enumerate() {
        let mut line = format!(
            "{:>2}  {:<width$}  {:<9}  {}",
            i + 1,
            if h.host.is_empty() { "?" } else { &h.host },
            h.kind.as_str(),
            h.detail
        );
        let mut extra = Vec::new();
        if let Some(r) = &h.reason {
            extra.push(format!("why: {r}"));
        }
        if let Some(e) = &h.encryption {
            extra.push(format!("encryption: {e}"));
        }
        match (h.pod_mtu, h.underlay_mtu) {
            (Some(p), Some(u)) => extra.push(format!("mtu: pod {p}, underlay {u}")),
            (Some(p), None) => extra.push(format!("mtu: {p}")),
            _ => {}
        }
        if !extra.is_empty() {
            let _ = write!(line, " [{}]", extra.join("; "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let _ = writeln!(out, "outcome: {}", t.outcome);
    for n in &t.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(pod: &str, addr: &str, host: &str, local: bool) -> TraceEndpoint {
        TraceEndpoint {
            query: pod.into(),
            pod: Some(pod.into()),
            addr: Some(addr.into()),
            mac: None,
            host: format!("{host}-name"),
            host_nickname: host.into(),
            local,
            found_by: "gossiped pod list".into(),
        }
    }

    #[test]
    fn renders_one_line_per_hop() {
        let mut sleeve = Hop::new(HopKind::Sleeve, "h1", "to h2 at 10.0.0.2:6783");
        sleeve.to = Some("h2".into());
        sleeve.reason = Some("fast path off: a secret".into());
        sleeve.encryption = Some("chacha20-poly1305".into());
        sleeve.pod_mtu = Some(1436);
        sleeve.underlay_mtu = Some(1500);
        let mut ingress = Hop::new(HopKind::Ingress, "h2", "denied by x/deny-all");
        ingress.allowed = Some(false);
        ingress.policies = vec!["x/deny-all".into()];
        let t = TraceAnswer {
            asked_on: "h1".into(),
            from: endpoint("x/a", "10.32.0.2", "h1", true),
            to: endpoint("y/b", "10.32.16.2", "h2", false),
            flow: "tcp/80".into(),
            hops: vec![sleeve, ingress],
            outcome: "denied by policy".into(),
            notes: vec!["a note".into()],
        };
        let text = render(&t);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "trace tcp/80 from x/a (10.32.0.2) on h1 (this host) to y/b (10.32.16.2) on h2 (asked on h1)"
        );
        assert_eq!(
            lines[1],
            " 1  h1  sleeve     to h2 at 10.0.0.2:6783 [why: fast path off: a secret; encryption: chacha20-poly1305; mtu: pod 1436, underlay 1500]"
        );
        assert_eq!(lines[2], " 2  h2  ingress    denied by x/deny-all");
        assert_eq!(lines[3], "outcome: denied by policy");
        assert_eq!(lines[4], "note: a note");
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains(r#""kind":"fast_path""#) || json.contains(r#""kind":"sleeve""#));
        assert_eq!(serde_json::from_str::<TraceAnswer>(&json).unwrap(), t);
    }
}
