//! `weft trace`: the path a packet from one endpoint to another would take, as the router
//! computes it from the state its data plane uses (`POST /v1/trace`, [`TraceRequest`] ->
//! [`TraceAnswer`]), and its text rendering, one line per hop ([`render`]).

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// `POST /v1/trace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRequest {
    /// The source: a pod (`namespace/name`), an IP address (IPv4 or IPv6) or a MAC address.
    pub from: String,
    /// The destination, in the same forms.
    pub to: String,
    /// `tcp`, `udp` or `icmp`.
    #[serde(default = "default_proto")]
    pub proto: String,
    /// The destination port (TCP, UDP); ignored for ICMP.
    #[serde(default)]
    pub port: Option<u16>,
    /// `weft trace --live`: also arm the hosts for a real probe; the answer's
    /// [`TraceAnswer::live`] says what to send and from which namespace, and
    /// `POST /v1/trace/report` ([`LiveReportRequest`]) completes it once sent.
    #[serde(default)]
    pub live: bool,
}

/// `POST /v1/trace/report`: the probe of live trace `id` was sent (or could not be); the
/// answer is the [`TraceAnswer`] with [`LiveTrace::hops`] filled in once every armed host
/// answered or the window closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveReportRequest {
    /// The live trace's identifier ([`LiveTrace::id`]).
    pub id: u64,
    /// When the probe left, the prober's wall clock, Unix microseconds.
    pub sent_at_us: u64,
    /// How long the answer took (echo reply, SYN-ACK or RST), when one came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_us: Option<u64>,
    /// What the prober has to say (no answer, a send error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
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
    /// `--live`: the probe and, once reported, what each host saw of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveTrace>,
}

/// A live trace: the marked probe and the hops it was seen at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveTrace {
    /// The trace's identifier (the hosts' reports carry it).
    pub id: u64,
    /// The source pod's network namespace, which the probe is sent from.
    pub netns: String,
    /// The probe's source address.
    pub src: String,
    /// Its destination address.
    pub dst: String,
    /// `icmp`, `tcp` or `udp`.
    pub proto: String,
    /// The mark: the ICMP echo identifier, or the TCP/UDP source port.
    pub key: u16,
    /// The destination port (TCP, UDP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// How long the hosts watch after arming, milliseconds.
    pub window_ms: u32,
    /// What was seen, in time order (empty until reported).
    #[serde(default)]
    pub hops: Vec<LiveHop>,
    /// Every host asked (or not), and how it answered.
    #[serde(default)]
    pub hosts: Vec<LiveHost>,
    /// The round trip the prober measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_us: Option<u64>,
    /// The path the probe was seen to take: `bridge`, `fast path`, `sleeve`, `relay` or
    /// `unseen`.
    #[serde(default)]
    pub observed: String,
    /// Whether it is the path the static trace predicts (`None` until reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<bool>,
    /// What the reader should know (clocks, hosts not asked, the prober's note).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One place the probe (or its reply) was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveHop {
    /// The host (nickname).
    pub host: String,
    /// `kernel` (a netfilter hook), `tap in`, `sleeve out`, `sleeve in`, `relay`, `tap out`.
    pub point: String,
    /// `probe` or `reply`.
    pub direction: String,
    /// What was seen there.
    pub detail: String,
    /// Microseconds after the probe was sent (that host's clock against the prober's).
    pub at_us: i64,
}

/// A host asked to watch, and how it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveHost {
    /// The host (nickname).
    pub host: String,
    /// `answered`, `no answer`, `refused: ...`, `not asked: ...`.
    pub status: String,
    /// Its clock against ours as the control connection measured it, milliseconds: the
    /// cross-host times are only as good as this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
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
    if let Some(l) = &t.live {
        render_live(&mut out, l);
    }
    out
}

/// The live part: the probe, one line per observation with its time, the hosts, the verdict.
fn render_live(out: &mut String, l: &LiveTrace) {
    let mark = if l.proto == "icmp" {
        format!("echo id {}", l.key)
    } else {
        format!("source port {}", l.key)
    };
    let _ = writeln!(
        out,
        "live probe {}{} {} -> {} ({mark})",
        l.proto,
        l.port.map(|p| format!("/{p}")).unwrap_or_default(),
        l.src,
        l.dst
    );
    let width = l.hops.iter().map(|h| h.host.len()).max().unwrap_or(0);
    for h in &l.hops {
        let line = format!(
            "  {:>+9}us  {:<width$}  {:<10}  {:<5}  {}",
            h.at_us, h.host, h.point, h.direction, h.detail
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if let Some(r) = l.rtt_us {
        let _ = writeln!(out, "round trip: {r}us");
    }
    for h in &l.hosts {
        let clock = h
            .clock_offset_ms
            .map(|c| format!(" (clock offset {c:+}ms)"))
            .unwrap_or_default();
        let _ = writeln!(out, "host {}: {}{clock}", h.host, h.status);
    }
    let verdict = match l.matched {
        Some(true) => "matches the static trace",
        Some(false) => "DIFFERS from the static trace",
        None => "not compared",
    };
    let _ = writeln!(out, "live path: {} ({verdict})", l.observed);
    for n in &l.notes {
        let _ = writeln!(out, "note: {n}");
    }
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
            live: None,
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

    #[test]
    fn renders_the_live_hops_and_old_requests_still_parse() {
        let old: TraceRequest = serde_json::from_str(r#"{"from":"x/a","to":"y/b"}"#).unwrap();
        assert!(!old.live);
        let hop = |host: &str, point: &str, direction: &str, detail: &str, at_us| LiveHop {
            host: host.into(),
            point: point.into(),
            direction: direction.into(),
            detail: detail.into(),
            at_us,
        };
        let l = LiveTrace {
            id: 9,
            netns: "/var/run/netns/a".into(),
            src: "10.32.0.2".into(),
            dst: "10.32.16.2".into(),
            proto: "icmp".into(),
            key: 4660,
            port: None,
            window_ms: 2000,
            hops: vec![
                hop("h1", "kernel", "probe", "pod veth1 -> vxlan weft-vxlan", 35),
                hop(
                    "h2",
                    "kernel",
                    "probe",
                    "vxlan weft-vxlan -> pod veth2",
                    120,
                ),
            ],
            hosts: vec![LiveHost {
                host: "h2".into(),
                status: "answered".into(),
                clock_offset_ms: Some(0),
            }],
            rtt_us: Some(250),
            observed: "fast path".into(),
            matched: Some(true),
            notes: vec![],
        };
        let mut out = String::new();
        render_live(&mut out, &l);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "live probe icmp 10.32.0.2 -> 10.32.16.2 (echo id 4660)"
        );
        assert_eq!(
            lines[1],
            "        +35us  h1  kernel      probe  pod veth1 -> vxlan weft-vxlan"
        );
        assert_eq!(lines[3], "round trip: 250us");
        assert_eq!(lines[4], "host h2: answered (clock offset +0ms)");
        assert_eq!(lines[5], "live path: fast path (matches the static trace)");
    }
}
