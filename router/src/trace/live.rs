//! `weft trace --live`, the pure part: what a kernel log entry's devices mean
//! ([`device_class`], [`kernel_detail`]), the hosts' reports merged into one time-ordered list
//! of hops relative to the probe's send ([`merge`]), the path those hops show ([`observed`]) and
//! the one the static trace predicts ([`predicted`]). The daemon (`daemon/live.rs`) arms,
//! collects and calls these; the data plane and the kernel log reader record into
//! [`super::watch::Watch`].

use gossip::trace::{Direction, Event, Report};
use std::collections::BTreeMap;
use weft_api::trace::{Hop, HopKind, LiveHop, LiveHost};

/// What a device is to the overlay, from its name: `tap` (the router's TAP port), `vxlan` (the
/// fast path's device), `bridge`, or `pod` (any other bridge port: a pod's veth).
pub fn device_class(name: &str, bridge: &str, tap: &str, vxlan: &str) -> &'static str {
    if name == tap {
        "tap"
    } else if name == vxlan {
        "vxlan"
    } else if name == bridge {
        "bridge"
    } else {
        "pod"
    }
}

/// The text of a kernel observation: `pod vethab12 -> vxlan weft-vxlan`, from the bridge ports
/// when the packet was bridged, else the devices.
pub fn kernel_detail(
    into: Option<&str>,
    out: Option<&str>,
    class: impl Fn(&str) -> &'static str,
) -> String {
    let side = |d: Option<&str>| match d {
        Some(n) => format!("{} {n}", class(n)),
        None => "host".to_string(),
    };
    format!("{} -> {}", side(into), side(out))
}

/// Which neighbours may be armed: those whose connection negotiated `min_version` or later
/// ([`gossip::proto::TRACE_VERSION`]); the others, with the reason, are not asked (a router of
/// an earlier version would close the connection on a message it does not know).
pub fn split_by_version<T>(
    neighbours: impl IntoIterator<Item = (T, u16)>,
    min_version: u16,
) -> (Vec<T>, Vec<(T, String)>) {
    let mut asked = Vec::new();
    let mut not_asked = Vec::new();
    for (n, version) in neighbours {
        if version >= min_version {
            asked.push(n);
        } else {
            not_asked.push((n, format!("its router speaks protocol version {version}")));
        }
    }
    (asked, not_asked)
}

/// One host's answer to an arm, as the daemon collected it.
#[derive(Debug, Clone)]
pub enum Answer {
    /// It reported.
    Report(Report),
    /// It did not answer within the window and the grace.
    Silent,
    /// It was not asked, and why (an older version, only reachable through a relay).
    NotAsked(String),
}

/// A host's answer with its nickname and the clock offset the control connection measured.
#[derive(Debug, Clone)]
pub struct HostAnswer {
    /// Its nickname.
    pub host: String,
    /// Its clock against ours, milliseconds.
    pub clock_offset_ms: Option<i64>,
    /// What it said.
    pub answer: Answer,
}

/// Merges the hosts' reports into hops ordered by time, each relative to `sent_at_us` (the
/// prober's clock), and one line per host. `names` maps peer names (as the data plane writes
/// them in its texts) to nicknames.
pub fn merge(
    sent_at_us: u64,
    answers: &[HostAnswer],
    names: &BTreeMap<String, String>,
) -> (Vec<LiveHop>, Vec<LiveHost>) {
    let mut hops = Vec::new();
    let mut hosts = Vec::new();
    for a in answers {
        let status = match &a.answer {
            Answer::Report(r) => {
                hops.extend(r.events.iter().map(|e| hop(&a.host, sent_at_us, e, names)));
                match &r.note {
                    Some(n) => format!("answered ({n})"),
                    None => "answered".into(),
                }
            }
            Answer::Silent => "no answer within the window".into(),
            Answer::NotAsked(why) => format!("not asked: {why}"),
        };
        hosts.push(LiveHost {
            host: a.host.clone(),
            status,
            clock_offset_ms: a.clock_offset_ms,
        });
    }
    hops.sort_by_key(|h| h.at_us);
    (hops, hosts)
}

fn hop(host: &str, sent_at_us: u64, e: &Event, names: &BTreeMap<String, String>) -> LiveHop {
    let mut detail = e.detail.clone();
    for (name, nick) in names {
        if detail.contains(name.as_str()) {
            detail = detail.replace(name.as_str(), nick);
        }
    }
    LiveHop {
        host: host.to_string(),
        point: e.point.clone(),
        direction: e.direction.as_str().to_string(),
        detail,
        at_us: e.at_us as i64 - sent_at_us as i64,
    }
}

/// The path the probe was seen to take: `relay` if a router relayed it, `sleeve` if a router
/// sealed or received it, `fast path` if a kernel passed it to or from the VXLAN device,
/// `bridge` if a kernel saw it only between pods, `unseen` otherwise.
pub fn observed(hops: &[LiveHop]) -> &'static str {
    let probe = Direction::Probe.as_str();
    let any = |f: &dyn Fn(&LiveHop) -> bool| hops.iter().any(|h| h.direction == probe && f(h));
    if any(&|h| h.point == "relay") {
        "relay"
    } else if any(&|h| h.point.starts_with("sleeve")) {
        "sleeve"
    } else if any(&|h| h.point == "kernel" && h.detail.contains("vxlan ")) {
        "fast path"
    } else if any(&|h| {
        h.point == "kernel" && h.detail.starts_with("pod ") && h.detail.contains("-> pod ")
    }) {
        "bridge"
    } else {
        "unseen"
    }
}

/// The path the static trace's hops predict, in [`observed`]'s words (`other` for a flood, no
/// route or a partial trace).
pub fn predicted(hops: &[Hop]) -> &'static str {
    let has = |k: HopKind| hops.iter().any(|h| h.kind == k);
    if has(HopKind::Relay) {
        "relay"
    } else if has(HopKind::Sleeve) {
        "sleeve"
    } else if has(HopKind::FastPath) {
        "fast path"
    } else if has(HopKind::Bridge) {
        "bridge"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(point: &str, direction: Direction, detail: &str, at_us: u64) -> Event {
        Event {
            point: point.into(),
            direction,
            detail: detail.into(),
            at_us,
        }
    }

    #[test]
    fn older_neighbours_are_never_armed() {
        let (asked, not) = split_by_version(
            [("h2", 3), ("h3", 2), ("h4", 1)],
            gossip::proto::TRACE_VERSION,
        );
        assert_eq!(asked, ["h2"]);
        assert_eq!(
            not,
            [
                ("h3", "its router speaks protocol version 2".to_string()),
                ("h4", "its router speaks protocol version 1".to_string())
            ]
        );
    }

    #[test]
    fn devices_are_classed_by_name() {
        let c = |n: &str| device_class(n, "weft", "vethwe-tap", "weft-vxlan");
        assert_eq!(c("weft-vxlan"), "vxlan");
        assert_eq!(c("vethwe-tap"), "tap");
        assert_eq!(c("weft"), "bridge");
        assert_eq!(c("veth1234"), "pod");
        assert_eq!(
            kernel_detail(Some("veth1234"), Some("weft-vxlan"), c),
            "pod veth1234 -> vxlan weft-vxlan"
        );
        assert_eq!(kernel_detail(None, Some("weft"), c), "host -> bridge weft");
    }

    #[test]
    fn reports_merge_in_time_order_with_names_and_silences() {
        let names = BTreeMap::from([("aa:bb".to_string(), "h2".to_string())]);
        let answers = vec![
            HostAnswer {
                host: "h1".into(),
                clock_offset_ms: None,
                answer: Answer::Report(Report {
                    id: 1,
                    events: vec![
                        event("kernel", Direction::Probe, "pod v1 -> tap t", 1_010),
                        event("sleeve out", Direction::Probe, "to aa:bb, plain", 1_020),
                        event("sleeve in", Direction::Reply, "from aa:bb", 1_300),
                    ],
                    note: None,
                }),
            },
            HostAnswer {
                host: "h2".into(),
                clock_offset_ms: Some(3),
                answer: Answer::Report(Report {
                    id: 1,
                    events: vec![event("sleeve in", Direction::Probe, "from h1", 1_100)],
                    note: Some("no kernel log".into()),
                }),
            },
            HostAnswer {
                host: "h3".into(),
                clock_offset_ms: None,
                answer: Answer::Silent,
            },
            HostAnswer {
                host: "h4".into(),
                clock_offset_ms: None,
                answer: Answer::NotAsked("version 2".into()),
            },
        ];
        let (hops, hosts) = merge(1_000, &answers, &names);
        let seen: Vec<_> = hops
            .iter()
            .map(|h| (h.host.as_str(), h.point.as_str(), h.at_us))
            .collect();
        assert_eq!(
            seen,
            [
                ("h1", "kernel", 10),
                ("h1", "sleeve out", 20),
                ("h2", "sleeve in", 100),
                ("h1", "sleeve in", 300)
            ]
        );
        assert_eq!(hops[1].detail, "to h2, plain");
        assert_eq!(hosts[1].status, "answered (no kernel log)");
        assert_eq!(hosts[2].status, "no answer within the window");
        assert_eq!(hosts[3].status, "not asked: version 2");
        assert_eq!(observed(&hops), "sleeve");
    }

    #[test]
    fn observed_and_predicted_paths() {
        let h = |point: &str, direction: &str, detail: &str| LiveHop {
            host: "h1".into(),
            point: point.into(),
            direction: direction.into(),
            detail: detail.into(),
            at_us: 0,
        };
        assert_eq!(
            observed(&[h("kernel", "probe", "pod a -> pod b")]),
            "bridge"
        );
        assert_eq!(
            observed(&[h("kernel", "probe", "pod a -> vxlan weft-vxlan")]),
            "fast path"
        );
        assert_eq!(
            observed(&[
                h("kernel", "probe", "pod a -> tap t"),
                h("relay", "probe", "x")
            ]),
            "relay"
        );
        // A reply alone says nothing of the probe's way.
        assert_eq!(observed(&[h("relay", "reply", "x")]), "unseen");
        assert_eq!(observed(&[]), "unseen");
        let hop = |k| Hop::new(k, "h1", "");
        assert_eq!(
            predicted(&[
                hop(HopKind::Egress),
                hop(HopKind::Sleeve),
                hop(HopKind::Relay)
            ]),
            "relay"
        );
        assert_eq!(predicted(&[hop(HopKind::FastPath)]), "fast path");
        assert_eq!(predicted(&[hop(HopKind::Bridge)]), "bridge");
        assert_eq!(predicted(&[hop(HopKind::Flood)]), "other");
    }
}
