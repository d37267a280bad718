//! Prometheus metrics (`weft router --metrics ADDR`, `GET /metrics`): the figures of
//! `weft status`, in the text exposition format.
//!
//! Rendered from the same [`Report`] the status API serves, so the two never disagree. The
//! format is a few lines of text per figure; a metrics library would add a registry that
//! duplicates the counters the data plane already keeps.
//!
//! A family with no sample this time (no peer dropped anything, no pod attached) is left out,
//! `# HELP` and `# TYPE` included, as the Go client does. Every family is listed in
//! docs/metrics.md; `tests/tests/metrics.rs` parses a real router's page and holds the two
//! together.

use std::fmt::Write;
use weft_api::status::{Report, TargetState};

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The page being written, and the `# HELP`/`# TYPE` head of the family begun last, written
/// with its first sample (a family without samples leaves nothing).
struct Out(String, Option<String>);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        self.1 = Some(format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    }

    fn val(&mut self, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        if let Some(head) = self.1.take() {
            self.0.push_str(&head);
        }
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {v}");
        } else {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
                .collect();
            let _ = writeln!(self.0, "{name}{{{}}} {v}", l.join(","));
        }
    }
}

/// The metrics page for a report.
pub fn render(r: &Report) -> String {
    let mut o = Out(String::new(), None);
    o.head("weft_info", "gauge", "Router identity (always 1).");
    o.val(
        "weft_info",
        &[
            ("version", &r.version),
            ("name", &r.name),
            ("nickname", &r.nickname),
        ],
        1,
    );
    o.head("weft_pod_mtu_bytes", "gauge", "MTU pods must use.");
    o.val("weft_pod_mtu_bytes", &[], r.pod_mtu);
    o.head(
        "weft_uptime_seconds",
        "gauge",
        "Seconds since the router started.",
    );
    o.val("weft_uptime_seconds", &[], r.uptime_secs);

    o.head(
        "weft_worker_tap_rx_frames_total",
        "counter",
        "Frames a data plane worker read from its TAP queue.",
    );
    for (i, w) in r.workers.iter().enumerate() {
        o.val(
            "weft_worker_tap_rx_frames_total",
            &[("worker", &i.to_string())],
            w.tap_rx_frames,
        );
    }
    o.head(
        "weft_worker_udp_rx_datagrams_total",
        "counter",
        "Datagrams a data plane worker received on its UDP socket.",
    );
    for (i, w) in r.workers.iter().enumerate() {
        o.val(
            "weft_worker_udp_rx_datagrams_total",
            &[("worker", &i.to_string())],
            w.udp_rx_datagrams,
        );
    }

    o.head("weft_peers", "gauge", "Known peers by state.");
    let mut states: std::collections::BTreeMap<&str, u64> = Default::default();
    for p in &r.peers {
        *states.entry(p.state.as_str()).or_default() += 1;
    }
    for (s, n) in states {
        o.val("weft_peers", &[("state", s)], n);
    }

    type Field = fn(&weft_api::status::PeerReport) -> u64;
    let per_peer: [(&str, &str, Field); 7] = [
        (
            "weft_peer_tx_frames_total",
            "Frames sent to the peer.",
            |p| p.tx_frames,
        ),
        (
            "weft_peer_tx_bytes_total",
            "Frame bytes sent to the peer.",
            |p| p.tx_bytes,
        ),
        (
            "weft_peer_tx_datagrams_total",
            "Datagrams sent to the peer.",
            |p| p.tx_datagrams,
        ),
        (
            "weft_peer_rx_frames_total",
            "Frames received from the peer.",
            |p| p.rx_frames,
        ),
        (
            "weft_peer_rx_bytes_total",
            "Frame bytes received from the peer.",
            |p| p.rx_bytes,
        ),
        (
            "weft_peer_rx_datagrams_total",
            "Datagrams received from the peer.",
            |p| p.rx_datagrams,
        ),
        (
            "weft_peer_relayed_datagrams_total",
            "Datagrams of the peer this router relayed.",
            |p| p.relayed_datagrams,
        ),
    ];
    for (name, help, f) in per_peer {
        o.head(name, "counter", help);
        for p in &r.peers {
            o.val(name, &[("peer", &p.name), ("nickname", &p.nickname)], f(p));
        }
    }
    o.head(
        "weft_peer_drops_total",
        "counter",
        "Drops of the peer's traffic by reason.",
    );
    for p in &r.peers {
        for (reason, v) in &p.drops {
            o.val(
                "weft_peer_drops_total",
                &[
                    ("peer", &p.name),
                    ("nickname", &p.nickname),
                    ("reason", reason),
                ],
                v,
            );
        }
    }
    o.head(
        "weft_peer_path",
        "gauge",
        "The path to each peer (1 for the current one).",
    );
    for p in &r.peers {
        o.val(
            "weft_peer_path",
            &[
                ("peer", &p.name),
                ("nickname", &p.nickname),
                ("state", &p.state),
                ("path", &p.path),
            ],
            1,
        );
    }
    o.head(
        "weft_peer_last_rtt_seconds",
        "gauge",
        "Round trip of the last UDP heartbeat.",
    );
    for p in &r.peers {
        if let Some(ms) = p.rtt_ms {
            o.val(
                "weft_peer_last_rtt_seconds",
                &[("peer", &p.name), ("nickname", &p.nickname)],
                ms / 1000.0,
            );
        }
    }
    rtt_histograms(&mut o, r);

    o.head(
        "weft_fastpath_peers",
        "gauge",
        "Neighbours on the kernel VXLAN fast path.",
    );
    o.val(
        "weft_fastpath_peers",
        &[("state", &r.fastpath.state)],
        r.fastpath.peers,
    );
    for (name, help, v) in [
        (
            "weft_fastpath_tx_packets_total",
            "Packets the VXLAN device sent.",
            r.fastpath.tx_packets,
        ),
        (
            "weft_fastpath_rx_packets_total",
            "Packets the VXLAN device received.",
            r.fastpath.rx_packets,
        ),
        (
            "weft_fastpath_tx_bytes_total",
            "Bytes the VXLAN device sent.",
            r.fastpath.tx_bytes,
        ),
        (
            "weft_fastpath_rx_bytes_total",
            "Bytes the VXLAN device received.",
            r.fastpath.rx_bytes,
        ),
    ] {
        o.head(name, "counter", help);
        o.val(name, &[], v);
    }
    o.head("weft_targets", "gauge", "Dial targets by state.");
    let mut t: std::collections::BTreeMap<&str, u64> = Default::default();
    for target in &r.targets {
        let s = match target.state {
            TargetState::Connecting => "connecting",
            TargetState::Established { .. } => "established",
            TargetState::Retrying { .. } => "retrying",
            TargetState::Failed { .. } => "failed",
        };
        *t.entry(s).or_default() += 1;
    }
    for (s, n) in t {
        o.val("weft_targets", &[("state", s)], n);
    }
    o.head(
        "weft_connections",
        "gauge",
        "Established control connections.",
    );
    o.val("weft_connections", &[], r.connections.len());
    o.head(
        "weft_refused_connections_total",
        "counter",
        "Inbound control connections refused by limits.",
    );
    o.val("weft_refused_connections_total", &[], r.refused_connections);
    o.head(
        "weft_gossip_rejected_records_total",
        "counter",
        "Gossiped topology and IPAM records refused or found suspicious, by reason.",
    );
    for (reason, v) in &r.rejected_records {
        o.val(
            "weft_gossip_rejected_records_total",
            &[("reason", reason)],
            v,
        );
    }

    for (k, v) in &r.counters {
        let name = format!("weft_{k}_total");
        o.head(&name, "counter", &format!("Data plane counter {k}."));
        o.val(&name, &[], v);
    }
    o.head("weft_drops_total", "counter", "Data plane drops by reason.");
    for (reason, v) in &r.drops {
        o.val("weft_drops_total", &[("reason", reason)], v);
    }
    for (k, v) in &r.kernel_fdb {
        let (name, kind) = match k.as_str() {
            "bridge_full_rounds" | "rounds_late" => {
                (format!("weft_kernel_fdb_{k}_total"), "counter")
            }
            _ => (format!("weft_kernel_fdb_{k}"), "gauge"),
        };
        o.head(&name, kind, &format!("Kernel forwarding tables: {k}."));
        o.val(&name, &[], v);
    }
    for (k, v) in &r.fdb {
        let (name, kind) = match k.as_str() {
            "entries" | "capacity" => (format!("weft_mac_table_{k}"), "gauge"),
            _ => (format!("weft_mac_table_{k}_total"), "counter"),
        };
        o.head(&name, kind, &format!("MAC table {k}."));
        o.val(&name, &[], v);
    }
    if let Some(i) = &r.ipam {
        o.head(
            "weft_ipam_reservations",
            "gauge",
            "Pod addresses reserved on this host.",
        );
        o.val("weft_ipam_reservations", &[], i.reservations.len());
        o.head(
            "weft_ipam_lost_reservations",
            "gauge",
            "Reservations in blocks this host no longer holds.",
        );
        o.val("weft_ipam_lost_reservations", &[], i.lost.len());
        o.head(
            "weft_ipam_held_blocks",
            "gauge",
            "Blocks of the pod CIDR this host holds.",
        );
        o.val("weft_ipam_held_blocks", &[], i.held.len());
        o.head(
            "weft_ipam_free_blocks",
            "gauge",
            "Blocks of the pod CIDR no host holds.",
        );
        if let Some(c) = &i.cluster {
            o.val("weft_ipam_free_blocks", &[], c.free_blocks);
        }
        o.head(
            "weft_ipam_ready",
            "gauge",
            "1 when a pod ADD can be served now.",
        );
        o.val("weft_ipam_ready", &[], u8::from(i.ready));
    }
    if let Some(s) = &r.secrets {
        secrets(&mut o, r, s);
    }
    if let Some(g) = &r.guard {
        o.head(
            "weft_guard_ports",
            "gauge",
            "Pod bridge ports under the port guard.",
        );
        o.val("weft_guard_ports", &[], g.ports.len());
        o.head(
            "weft_guard_ok",
            "gauge",
            "1 when the last change of the port guard's nftables table worked.",
        );
        o.val("weft_guard_ok", &[], u8::from(g.state == "on"));
        o.head(
            "weft_guard_flood_limit_pps",
            "gauge",
            "Frames a second each guarded port may send to broadcast and multicast destinations \
             (0: no limit); drops beyond it are weft_guard_dropped_total{reason=\"flood_limit\"}.",
        );
        o.val("weft_guard_flood_limit_pps", &[], g.flood_limit_pps);
        o.head(
            "weft_guard_dropped_total",
            "counter",
            "Frames the port guard dropped, by reason.",
        );
        for (reason, v) in &g.drops {
            o.val("weft_guard_dropped_total", &[("reason", reason)], v);
        }
        for (name, what) in [
            ("weft_guard_port_dropped_packets_total", "Frames"),
            ("weft_guard_port_dropped_bytes_total", "Bytes of frames"),
        ] {
            o.head(
                name,
                "counter",
                &format!("{what} the port guard dropped from one pod."),
            );
            for p in &g.ports {
                let v = if name.ends_with("packets_total") {
                    p.dropped_packets
                } else {
                    p.dropped_bytes
                };
                let labels = [
                    ("container", p.attachment.container_id.as_str()),
                    ("ifname", p.attachment.ifname.as_str()),
                    ("port", p.port.name.as_str()),
                ];
                o.val(name, &labels, v);
            }
        }
    }
    if let Some(p) = &r.policy {
        policy(&mut o, p);
    }
    o.0
}

/// `weft_peer_rtt_seconds`: per peer, every heartbeat round trip since the router started.
fn rtt_histograms(o: &mut Out, r: &Report) {
    const NAME: &str = "weft_peer_rtt_seconds";
    o.head(
        NAME,
        "histogram",
        "Round trips of the UDP heartbeats to a neighbour since the router started.",
    );
    for p in &r.peers {
        let Some(h) = &p.rtt_histogram else { continue };
        let peer = [("peer", p.name.as_str()), ("nickname", p.nickname.as_str())];
        let bucket = format!("{NAME}_bucket");
        for b in &h.buckets {
            let le = b.le_secs.to_string();
            o.val(&bucket, &[peer[0], peer[1], ("le", &le)], b.count);
        }
        o.val(&bucket, &[peer[0], peer[1], ("le", "+Inf")], h.count);
        o.val(&format!("{NAME}_sum"), &peer, h.sum_secs);
        o.val(&format!("{NAME}_count"), &peer, h.count);
    }
}

/// NetworkPolicy: the state, the sources, the ruleset's size and per local pod the allowed and
/// denied connections.
fn policy(o: &mut Out, p: &weft_api::policy::PolicyReport) {
    o.head(
        "weft_policy_ok",
        "gauge",
        "1 when the last NetworkPolicy ruleset was applied (0: the previous one stays in force).",
    );
    o.val("weft_policy_ok", &[], u8::from(p.state == "on"));
    o.head(
        "weft_policy_source_ok",
        "gauge",
        "1 when a policy source was read or synced without errors.",
    );
    for s in &p.sources {
        o.val(
            "weft_policy_source_ok",
            &[("source", &s.name)],
            u8::from(s.ok),
        );
    }
    for (name, help, v) in [
        ("weft_policy_policies", "NetworkPolicies known.", p.policies),
        ("weft_policy_pods", "Pods known (whole cluster).", p.pods),
        (
            "weft_policy_ruleset_lines",
            "Lines of the nftables ruleset in force.",
            p.ruleset_lines,
        ),
    ] {
        o.head(name, "gauge", help);
        o.val(name, &[], v);
    }
    o.head(
        "weft_policy_applied_total",
        "counter",
        "NetworkPolicy rulesets applied (each one nft transaction).",
    );
    o.val("weft_policy_applied_total", &[], p.applied);
    o.head(
        "weft_policy_apply_errors_total",
        "counter",
        "NetworkPolicy rulesets the kernel refused.",
    );
    o.val("weft_policy_apply_errors_total", &[], p.apply_errors);
    o.head(
        "weft_policy_compile_seconds",
        "gauge",
        "How long the last NetworkPolicy compile took.",
    );
    o.val(
        "weft_policy_compile_seconds",
        &[],
        p.last_compile_ms / 1000.0,
    );
    for (name, help) in [
        (
            "weft_policy_allowed_total",
            "New connections an isolated local pod was allowed, by direction.",
        ),
        (
            "weft_policy_dropped_total",
            "Packets no NetworkPolicy allowed, by local pod and direction.",
        ),
    ] {
        o.head(name, "counter", help);
        for pod in &p.local_pods {
            let (i, e) = if name.contains("allowed") {
                (pod.allowed_in, pod.allowed_out)
            } else {
                (pod.dropped_in, pod.dropped_out)
            };
            for (dir, v) in [("ingress", i), ("egress", e)] {
                o.val(
                    name,
                    &[
                        ("pod", &pod.pod),
                        ("address", &pod.address),
                        ("direction", dir),
                    ],
                    v,
                );
            }
        }
    }
}

/// The cluster secrets: which are accepted (by fingerprint), the secret file's rereads, and per
/// neighbour the secret in use and the data keys' age.
fn secrets(o: &mut Out, r: &Report, s: &weft_api::status::SecretsReport) {
    o.head(
        "weft_secret_accepted",
        "gauge",
        "Accepted cluster secrets by fingerprint (preferred=1 for the one used to dial).",
    );
    for (i, f) in s.accepted.iter().enumerate() {
        let pref = if i == 0 { "1" } else { "0" };
        o.val(
            "weft_secret_accepted",
            &[("fingerprint", f), ("preferred", pref)],
            1,
        );
    }
    o.head(
        "weft_secret_file_ok",
        "gauge",
        "1 when the secret file last read and parsed; 0 while it does not (the last good secrets stay).",
    );
    o.val("weft_secret_file_ok", &[], u8::from(s.file_error.is_none()));
    o.head(
        "weft_secret_reloads_total",
        "counter",
        "Rereads of the secret file that replaced the secrets.",
    );
    o.val("weft_secret_reloads_total", &[], s.reloads);
    o.head(
        "weft_secret_reload_errors_total",
        "counter",
        "Rereads of the secret file that failed.",
    );
    o.val("weft_secret_reload_errors_total", &[], s.reload_errors);
    o.head(
        "weft_peer_data_key_age_seconds",
        "gauge",
        "Age of the data key sent with to a neighbour, labelled with the secret of its connection and the AEAD it seals with.",
    );
    for p in &r.peers {
        if let (Some(age), Some(f)) = (p.key_age_secs, &p.secret) {
            let labels = [
                ("peer", p.name.as_str()),
                ("nickname", p.nickname.as_str()),
                ("secret", f.as_str()),
                ("cipher", p.encryption.as_str()),
            ];
            o.val("weft_peer_data_key_age_seconds", &labels, age);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    fn report() -> Report {
        let peer = |name: &str, nick: &str, rtt: serde_json::Value| {
            serde_json::json!({
                "name": name, "nickname": nick, "addr": "10.0.0.2:6784",
                "state": "established", "path": "direct", "mtu": 1410, "rtt_ms": 0.5,
                "rtt_histogram": rtt,
                "tx_frames": 1, "tx_bytes": 2, "tx_datagrams": 3, "rx_frames": 4, "rx_bytes": 5,
                "rx_datagrams": 6, "relayed_datagrams": 0, "drops": {},
                "encryption": "none", "rekeys": 0,
            })
        };
        serde_json::from_value(serde_json::json!({
            "version": "0.1.0", "name": "00:01", "nickname": "h1", "uid": "1",
            "listen": "10.0.0.1:6783", "bridge": "weft", "tap": "vethwe", "underlay_mtu": 1500,
            "pod_mtu": 1410, "uptime_secs": 9,
            "peers": [
                peer("00:02", "h2", serde_json::json!({
                    "buckets": [{"le_secs": 0.00005, "count": 1}, {"le_secs": 0.0001, "count": 3}],
                    "count": 4, "sum_secs": 0.25,
                })),
                peer("00:03", "h3", serde_json::Value::Null),
            ],
            "targets": [], "connections": [], "refused_connections": 0, "refused": [],
            "encrypted": false, "counters": {}, "drops": {"no_route": 0}, "fdb": {},
        }))
        .unwrap()
    }

    #[test]
    fn rtt_histograms_and_empty_families() {
        let page = render(&report());
        let h2 = "peer=\"00:02\",nickname=\"h2\"";
        let want = format!(
            "# HELP weft_peer_rtt_seconds Round trips of the UDP heartbeats to a neighbour since \
             the router started.\n\
             # TYPE weft_peer_rtt_seconds histogram\n\
             weft_peer_rtt_seconds_bucket{{{h2},le=\"0.00005\"}} 1\n\
             weft_peer_rtt_seconds_bucket{{{h2},le=\"0.0001\"}} 3\n\
             weft_peer_rtt_seconds_bucket{{{h2},le=\"+Inf\"}} 4\n\
             weft_peer_rtt_seconds_sum{{{h2}}} 0.25\n\
             weft_peer_rtt_seconds_count{{{h2}}} 4\n"
        );
        assert!(page.contains(&want), "{page}");
        // h3 has answered no heartbeat yet: no histogram for it.
        assert!(!page.contains("weft_peer_rtt_seconds_count{peer=\"00:03\""));
        assert!(page.contains("weft_peer_last_rtt_seconds{peer=\"00:03\",nickname=\"h3\"} 0.0005"));
        // No peer dropped anything, no target, nothing rejected: those families are left out,
        // heads included; a family with zero-valued samples stays.
        for name in [
            "weft_peer_drops_total",
            "weft_targets",
            "weft_gossip_rejected_records_total",
        ] {
            assert!(!page.contains(name), "{name} in\n{page}");
        }
        assert!(page.contains(
            "# TYPE weft_drops_total counter\nweft_drops_total{reason=\"no_route\"} 0\n"
        ));
        // Every head is followed by a sample of its family.
        let lines: Vec<&str> = page.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(lines[i + 1].starts_with(name), "{l}");
            }
        }
    }
}
