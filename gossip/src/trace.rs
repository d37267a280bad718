//! `weft trace --live` on the control channel (from [`crate::proto::TRACE_VERSION`]): the
//! router that sends a probe arms each neighbour with the probe's [`Signature`]
//! ([`Arm`], [`crate::proto::Message::TraceArm`]); each watches for packets that carry it for
//! the arm's window and answers on the same connection with what it saw ([`Report`],
//! [`crate::proto::Message::TraceReport`]). Pure: the types, the matching and the bounds every
//! received message is held to.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use vswitch::wire::FlowRepr;

/// Events one report carries at most (more are cut, and the report says so).
pub const MAX_EVENTS: usize = 64;
/// Characters of an event's text at most.
pub const MAX_TEXT: usize = 200;
/// The longest window an arm may ask for.
pub const MAX_WINDOW_MS: u32 = 10_000;

/// IANA protocol numbers.
pub const ICMP: u8 = 1;
/// ICMPv6, what an [`ICMP`] probe is over IPv6.
pub const ICMPV6: u8 = 58;
/// TCP.
pub const TCP: u8 = 6;
/// UDP.
pub const UDP: u8 = 17;

/// The protocol number of a probe protocol's name (`icmp`, `tcp`, `udp`).
pub fn protocol(name: &str) -> Option<u8> {
    match name {
        "icmp" => Some(ICMP),
        "tcp" => Some(TCP),
        "udp" => Some(UDP),
        _ => None,
    }
}

/// The note of a report whose events were cut at [`MAX_EVENTS`].
pub const CUT_NOTE: &str = "more events than kept; cut";

/// What marks a probe and its answer: the addresses, the protocol, and the ICMP echo
/// identifier or the TCP/UDP source port the prober chose at random.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The probe's source address (the source pod's).
    pub src: IpAddr,
    /// Its destination address.
    pub dst: IpAddr,
    /// [`ICMP`], [`TCP`] or [`UDP`].
    pub proto: u8,
    /// The ICMP echo identifier, or the TCP/UDP source port.
    pub key: u16,
    /// The TCP/UDP destination port (`None` for ICMP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// Which way a matching packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The probe.
    Probe,
    /// Its answer (echo reply, SYN-ACK or RST).
    Reply,
}

impl Direction {
    /// `probe` or `reply`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Probe => "probe",
            Direction::Reply => "reply",
        }
    }
}

impl Signature {
    /// Whether a packet with flow `flow` (and ICMP echo identifier `echo`, from
    /// [`vswitch::wire::flow::echo_id`]) is the probe or its reply.
    pub fn matches(&self, flow: &FlowRepr, echo: Option<u16>) -> Option<Direction> {
        // The probe's protocol is named ICMP for both families; over IPv6 it is ICMPv6 (58).
        let proto = if self.proto == ICMP && self.src.is_ipv6() {
            ICMPV6
        } else {
            self.proto
        };
        if flow.protocol != proto {
            return None;
        }
        let forward = flow.src == self.src && flow.dst == self.dst;
        let back = flow.src == self.dst && flow.dst == self.src;
        if !forward && !back {
            return None;
        }
        let keyed = if self.proto == ICMP {
            echo == Some(self.key)
        } else {
            match (flow.ports, forward) {
                (Some((s, d)), true) => s == self.key && self.port.is_none_or(|p| p == d),
                (Some((s, d)), false) => d == self.key && self.port.is_none_or(|p| p == s),
                (None, _) => false,
            }
        };
        match (keyed, forward) {
            (false, _) => None,
            (true, true) => Some(Direction::Probe),
            (true, false) => Some(Direction::Reply),
        }
    }

    /// The nftables match of the probe (`reverse`: of its reply), e.g.
    /// `ip saddr 10.32.0.2 ip daddr 10.32.1.3 icmp id 4660`.
    pub fn nft_match(&self, reverse: bool) -> String {
        let (s, d) = if reverse {
            (self.dst, self.src)
        } else {
            (self.src, self.dst)
        };
        let fam = if s.is_ipv4() { "ip" } else { "ip6" };
        let mut m = format!("{fam} saddr {s} {fam} daddr {d}");
        let key = self.key;
        match (self.proto, reverse) {
            (ICMP, _) if s.is_ipv4() => m.push_str(&format!(" icmp id {key}")),
            (ICMP, _) => m.push_str(&format!(" icmpv6 id {key}")),
            (p, r) => {
                let name = if p == TCP { "tcp" } else { "udp" };
                let (mine, theirs) = if r {
                    ("dport", "sport")
                } else {
                    ("sport", "dport")
                };
                m.push_str(&format!(" {name} {mine} {key}"));
                if let Some(port) = self.port {
                    m.push_str(&format!(" {name} {theirs} {port}"));
                }
            }
        }
        m
    }

    /// Refuses what no prober sends (a protocol other than ICMP, TCP and UDP, a TCP/UDP probe
    /// without a port, mixed address families).
    pub fn check(&self) -> Result<(), &'static str> {
        if self.src.is_ipv4() != self.dst.is_ipv4() {
            return Err("mixed address families");
        }
        match (self.proto, self.port) {
            (ICMP, None) => Ok(()),
            (TCP | UDP, Some(_)) => Ok(()),
            _ => Err("not an ICMP, TCP or UDP probe"),
        }
    }
}

/// [`crate::proto::Message::TraceArm`]: watch for packets with `signature` for `window_ms`,
/// then report them under `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arm {
    /// The trace's identifier, chosen at random by the router that arms.
    pub id: u64,
    /// The probe's mark.
    pub signature: Signature,
    /// How long to watch, milliseconds (at most [`MAX_WINDOW_MS`]).
    pub window_ms: u32,
}

/// One observation of the probe or its reply on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Where it was seen: `kernel`, `tap in`, `sleeve out`, `sleeve in`, `relay`, `tap out`.
    pub point: String,
    /// Probe or reply.
    pub direction: Direction,
    /// What was seen, one phrase (`pod veth vethwe1 -> vxlan weft-vxlan`).
    pub detail: String,
    /// The observing host's wall clock, Unix microseconds.
    pub at_us: u64,
}

impl Event {
    /// Cuts the texts to [`MAX_TEXT`] characters.
    pub fn bounded(mut self) -> Event {
        for s in [&mut self.point, &mut self.detail] {
            if let Some((i, _)) = s.char_indices().nth(MAX_TEXT) {
                s.truncate(i);
            }
        }
        self
    }
}

/// [`crate::proto::Message::TraceReport`]: what a host saw of trace `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The arm's identifier.
    pub id: u64,
    /// What it saw, oldest first.
    pub events: Vec<Event>,
    /// Why it saw nothing or less than it could (refused, no kernel log, cut).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Report {
    /// The report held to the bounds: at most [`MAX_EVENTS`] events of bounded text.
    pub fn bounded(mut self) -> Report {
        if self.events.len() > MAX_EVENTS {
            self.events.truncate(MAX_EVENTS);
            self.note = Some("more events than a report carries; cut".into());
        }
        self.events = self.events.into_iter().map(Event::bounded).collect();
        if let Some(n) = &mut self.note {
            if let Some((i, _)) = n.char_indices().nth(MAX_TEXT) {
                n.truncate(i);
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_protocols_by_name() {
        assert_eq!(protocol("icmp"), Some(ICMP));
        assert_eq!(protocol("tcp"), Some(TCP));
        assert_eq!(protocol("udp"), Some(UDP));
        assert_eq!(protocol("sctp"), None);
    }

    fn flow(src: &str, dst: &str, protocol: u8, ports: Option<(u16, u16)>) -> FlowRepr {
        FlowRepr {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol,
            ports,
        }
    }

    fn sig(proto: u8, port: Option<u16>) -> Signature {
        Signature {
            src: "10.32.0.2".parse().unwrap(),
            dst: "10.32.1.3".parse().unwrap(),
            proto,
            key: 4660,
            port,
        }
    }

    #[test]
    fn icmp_probe_and_reply_by_echo_id() {
        let s = sig(ICMP, None);
        let f = flow("10.32.0.2", "10.32.1.3", ICMP, None);
        assert_eq!(s.matches(&f, Some(4660)), Some(Direction::Probe));
        assert_eq!(s.matches(&f, Some(4661)), None);
        assert_eq!(s.matches(&f, None), None);
        let r = flow("10.32.1.3", "10.32.0.2", ICMP, None);
        assert_eq!(s.matches(&r, Some(4660)), Some(Direction::Reply));
        let other = flow("10.32.0.9", "10.32.1.3", ICMP, None);
        assert_eq!(s.matches(&other, Some(4660)), None);
        assert_eq!(
            s.nft_match(false),
            "ip saddr 10.32.0.2 ip daddr 10.32.1.3 icmp id 4660"
        );
        assert_eq!(
            s.nft_match(true),
            "ip saddr 10.32.1.3 ip daddr 10.32.0.2 icmp id 4660"
        );
    }

    #[test]
    fn an_icmp_probe_over_ipv6_is_icmpv6() {
        let s = Signature {
            src: "fd10:32::2".parse().unwrap(),
            dst: "fd10:32::103".parse().unwrap(),
            proto: ICMP,
            key: 4660,
            port: None,
        };
        let f = flow("fd10:32::2", "fd10:32::103", ICMPV6, None);
        assert_eq!(s.matches(&f, Some(4660)), Some(Direction::Probe));
        let r = flow("fd10:32::103", "fd10:32::2", ICMPV6, None);
        assert_eq!(s.matches(&r, Some(4660)), Some(Direction::Reply));
        // Protocol 1 over IPv6 is not the probe.
        assert_eq!(
            s.matches(&flow("fd10:32::2", "fd10:32::103", ICMP, None), Some(4660)),
            None
        );
        assert_eq!(
            s.nft_match(false),
            "ip6 saddr fd10:32::2 ip6 daddr fd10:32::103 icmpv6 id 4660"
        );
    }

    #[test]
    fn tcp_and_udp_by_source_port() {
        let s = sig(TCP, Some(80));
        let syn = flow("10.32.0.2", "10.32.1.3", TCP, Some((4660, 80)));
        assert_eq!(s.matches(&syn, None), Some(Direction::Probe));
        let ack = flow("10.32.1.3", "10.32.0.2", TCP, Some((80, 4660)));
        assert_eq!(s.matches(&ack, None), Some(Direction::Reply));
        let other_port = flow("10.32.0.2", "10.32.1.3", TCP, Some((4661, 80)));
        assert_eq!(s.matches(&other_port, None), None);
        let udp = flow("10.32.0.2", "10.32.1.3", UDP, Some((4660, 80)));
        assert_eq!(s.matches(&udp, None), None);
        assert_eq!(
            s.nft_match(true),
            "ip saddr 10.32.1.3 ip daddr 10.32.0.2 tcp dport 4660 tcp sport 80"
        );
        assert!(s.check().is_ok());
        assert!(sig(TCP, None).check().is_err());
        assert!(sig(47, None).check().is_err());
    }

    #[test]
    fn reports_are_bounded() {
        let e = Event {
            point: "kernel".into(),
            direction: Direction::Probe,
            detail: "x".repeat(10 * MAX_TEXT),
            at_us: 1,
        };
        let r = Report {
            id: 7,
            events: vec![e; MAX_EVENTS + 5],
            note: None,
        }
        .bounded();
        assert_eq!(r.events.len(), MAX_EVENTS);
        assert_eq!(r.events[0].detail.chars().count(), MAX_TEXT);
        assert!(r.note.is_some());
        // Garbage is refused by the decoder, never a panic.
        for bad in [
            r#"{"type":"trace_report","id":"x"}"#,
            r#"{"type":"trace_arm","id":1,"signature":{"src":"1.2.3.4"},"window_ms":5}"#,
            r#"{"type":"trace_report","id":1,"events":[{"point":1}]}"#,
        ] {
            assert!(crate::proto::decode_body(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
