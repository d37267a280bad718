//! The text tables of `weft status`: [`Report`]'s rendering for people.

use super::*;
use std::fmt::Write;

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (c, w) in cells.zip(&widths) {
            let _ = write!(s, "{c:<w$}  ");
        }
        let _ = writeln!(out, "  {}", s.trim_end());
    };
    line(out, &mut header.iter().copied());
    for r in rows {
        line(out, &mut r.iter().map(|s| s.as_str()));
    }
}

impl Report {
    /// The peers table.
    pub fn render_peers(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\nPeers: {}", self.peers.len());
        if self.peers.is_empty() {
            return out;
        }
        let rows: Vec<Vec<String>> = self
            .peers
            .iter()
            .map(|p| {
                let drops: u64 = p.drops.values().sum();
                vec![
                    p.nickname.clone(),
                    p.name.clone(),
                    if p.addr.is_empty() {
                        "-".into()
                    } else {
                        p.addr.clone()
                    },
                    p.state.clone(),
                    p.path.clone(),
                    p.rtt_ms
                        .map(|r| format!("{r:.2} ms"))
                        .unwrap_or_else(|| "-".into()),
                    if p.mtu == 0 {
                        "-".into()
                    } else {
                        p.mtu.to_string()
                    },
                    format!("{} / {}", p.tx_frames, human_bytes(p.tx_bytes)),
                    format!("{} / {}", p.rx_frames, human_bytes(p.rx_bytes)),
                    p.relayed_datagrams.to_string(),
                    drops.to_string(),
                    match (p.key_epoch, &p.secret) {
                        (Some(e), Some(s)) => format!(
                            "{} (secret {s}, key {e}, {} s old, {} rekeys)",
                            p.encryption,
                            p.key_age_secs.unwrap_or(0),
                            p.rekeys
                        ),
                        (Some(e), None) => {
                            format!("{} (key {e}, {} rekeys)", p.encryption, p.rekeys)
                        }
                        _ => p.encryption.clone(),
                    },
                    p.fastpath.clone(),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "PEER",
                "NAME",
                "ADDRESS",
                "STATE",
                "PATH",
                "RTT",
                "MTU",
                "TX FRAMES/BYTES",
                "RX FRAMES/BYTES",
                "RELAYED",
                "DROPS",
            ],
            &rows,
        );
        out
    }

    /// The topology table: one row per gossiped record, with the peers it lists (`*` marks a
    /// connection whose data path is not confirmed yet).
    pub fn render_topology(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\nTopology: {} peers", self.topology.len());
        let rows: Vec<Vec<String>> = self
            .topology
            .iter()
            .map(|r| {
                let conns: Vec<String> = r
                    .connections
                    .iter()
                    .map(|c| {
                        let who = if c.nickname.is_empty() {
                            &c.peer
                        } else {
                            &c.nickname
                        };
                        format!("{who}{}", if c.usable { "" } else { "*" })
                    })
                    .collect();
                vec![
                    r.nickname.clone(),
                    r.name.clone(),
                    r.version.to_string(),
                    if r.signed { "yes" } else { "no" }.into(),
                    conns.join(" "),
                ]
            })
            .collect();
        if !rows.is_empty() {
            table(
                &mut out,
                &["PEER", "NAME", "VERSION", "SIGNED", "CONNECTIONS"],
                &rows,
            );
        }
        out
    }

    /// The dial targets table.
    pub fn render_targets(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\nTargets: {}", self.targets.len());
        if self.targets.is_empty() {
            return out;
        }
        let rows: Vec<Vec<String>> = self
            .targets
            .iter()
            .map(|t| {
                let (state, detail) = match &t.state {
                    TargetState::Connecting => ("connecting".to_string(), String::new()),
                    TargetState::Established { peer } => ("established".into(), peer.clone()),
                    TargetState::Retrying {
                        next_attempt_in_ms,
                        last_error,
                    } => (
                        "retrying".into(),
                        format!(
                            "next attempt in {:.1} s after {} failure(s): {last_error}",
                            *next_attempt_in_ms as f64 / 1000.0,
                            t.failures
                        ),
                    ),
                    TargetState::Failed { reason } => ("failed".into(), reason.clone()),
                };
                vec![t.addr.clone(), state, detail]
            })
            .collect();
        table(&mut out, &["ADDRESS", "STATE", "DETAIL"], &rows);
        out
    }

    /// The control connections table.
    pub fn render_connections(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\nConnections: {}", self.connections.len());
        if self.connections.is_empty() {
            return out;
        }
        let rows: Vec<Vec<String>> = self
            .connections
            .iter()
            .map(|c| {
                vec![
                    c.nickname.clone(),
                    c.peer.clone(),
                    c.addr.clone(),
                    if c.outbound { "outbound" } else { "inbound" }.into(),
                    c.version.to_string(),
                    format!("{} s", c.established_secs),
                    c.secret.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "PEER",
                "NAME",
                "ADDRESS",
                "DIRECTION",
                "VERSION",
                "UP",
                "SECRET",
            ],
            &rows,
        );
        out
    }

    /// The text `weft status` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "weft {} router {} ({}) on {}, up {} s",
            self.version, self.nickname, self.name, self.listen, self.uptime_secs
        );
        if self.fastpath.state == "on" {
            let _ = writeln!(
                out,
                "fast path on: {} (VNI {}, UDP {}), {} peer(s), {} packets / {} out, {} packets / {} in",
                self.fastpath.device,
                self.fastpath.vni,
                self.fastpath.port,
                self.fastpath.peers,
                self.fastpath.tx_packets,
                human_bytes(self.fastpath.tx_bytes),
                self.fastpath.rx_packets,
                human_bytes(self.fastpath.rx_bytes)
            );
        } else {
            let _ = writeln!(out, "fast path {}", self.fastpath.state);
        }
        let _ = writeln!(
            out,
            "bridge {} via {}, pod MTU {} (underlay MTU {}), encryption {}",
            self.bridge,
            self.tap,
            self.pod_mtu,
            self.underlay_mtu,
            if self.encrypted { "on" } else { "off" }
        );
        if let Some(s) = &self.secrets {
            let _ = writeln!(
                out,
                "secrets: dialling with {}, accepting {}{}",
                s.accepted.first().map(String::as_str).unwrap_or("-"),
                s.accepted.join(", "),
                if s.retired.is_empty() {
                    String::new()
                } else {
                    format!("; retired {}", s.retired.join(", "))
                }
            );
            if let Some(e) = &s.file_error {
                let _ = writeln!(
                    out,
                    "secret file NOT applied (the secrets above stay in force): {e}"
                );
            }
        }
        let rejected: Vec<String> = (self.rejected_records.iter())
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !rejected.is_empty() {
            let _ = writeln!(out, "gossip records refused: {}", rejected.join(" "));
        }
        out.push_str(&self.render_peers());
        out.push_str(&self.render_targets());
        out.push_str(&self.render_connections());
        if !self.refused.is_empty() {
            let _ = writeln!(out, "\nRefused inbound connections:");
            let rows: Vec<Vec<String>> = self
                .refused
                .iter()
                .map(|r| {
                    vec![
                        r.addr.clone(),
                        r.count.to_string(),
                        format!("{} s ago", r.last_secs),
                        r.reason.clone(),
                    ]
                })
                .collect();
            table(&mut out, &["ADDRESS", "COUNT", "LAST", "REASON"], &rows);
        }
        let _ = writeln!(out, "\nData plane:");
        let kv = |m: &BTreeMap<String, u64>, skip_zero: bool| {
            m.iter()
                .filter(|(_, v)| !skip_zero || **v > 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(out, "  {}", kv(&self.counters, false));
        if self.workers.len() > 1 {
            let shares: Vec<String> = (self.workers.iter().enumerate())
                .map(|(i, w)| {
                    format!(
                        "{i}: tap_rx_frames={} udp_rx_datagrams={}",
                        w.tap_rx_frames, w.udp_rx_datagrams
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "  workers: {} ({})",
                self.workers.len(),
                shares.join(", ")
            );
        }
        let drops = kv(&self.drops, true);
        let _ = writeln!(
            out,
            "  drops: {}",
            if drops.is_empty() {
                "none".into()
            } else {
                drops
            }
        );
        let _ = writeln!(out, "  mac table: {}", kv(&self.fdb, false));
        if !self.kernel_fdb.is_empty() {
            let _ = writeln!(out, "  kernel fdb: {}", kv(&self.kernel_fdb, false));
        }
        out.push_str(&self.render_ipam_summary());
        out
    }

    /// The IPAM lines of `weft status`.
    pub fn render_ipam_summary(&self) -> String {
        let mut out = String::new();
        let Some(i) = &self.ipam else {
            let _ = writeln!(out, "\nIPAM: off (no --pod-cidr)");
            return out;
        };
        let six = if i.cidr6.is_empty() {
            String::new()
        } else {
            format!(" and IPv6 pod CIDR {} (mapped from IPv4)", i.cidr6)
        };
        let _ = writeln!(
            out,
            "\nIPAM: pod CIDR {} in /{} blocks{six}, masquerade {}, {}",
            i.cidr,
            i.block_prefix,
            if i.masquerade { "on" } else { "off" },
            if i.ready {
                "ready".to_string()
            } else {
                format!("NOT READY: {}", i.reason)
            }
        );
        let _ = writeln!(
            out,
            "  held blocks: {}",
            if i.held.is_empty() {
                "none".into()
            } else {
                i.held
                    .iter()
                    .enumerate()
                    .map(|(n, b)| match i.held6.get(n) {
                        Some(b6) => format!("{b} ({b6})"),
                        None => b.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        );
        let _ = writeln!(out, "  reservations: {}", i.reservations.len());
        if !i.lost_blocks.is_empty() {
            let _ = writeln!(
                out,
                "  LOST BLOCKS (reclaimed while this host was away): {}",
                i.lost_blocks.join(" ")
            );
        }
        match &i.cluster {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "  cluster: {} member(s), quorum {}, {} reachable, {} free block(s), grace {} s",
                    c.members, c.quorum, c.reachable, c.free_blocks, c.grace_secs
                );
            }
            None => {
                let _ = writeln!(out, "  cluster: no IPAM state from the mesh yet");
            }
        }
        if let Some(g) = &self.guard {
            let dropped: u64 = g.drops.values().sum();
            let _ = writeln!(
                out,
                "  port guard: {}, {} port(s), flood limit {}, {} frame(s) dropped{}",
                g.state,
                g.ports.len(),
                if g.flood_limit_pps == 0 {
                    "off".to_owned()
                } else {
                    format!("{}/s burst {}", g.flood_limit_pps, g.flood_limit_burst)
                },
                dropped,
                if dropped == 0 {
                    String::new()
                } else {
                    let by_reason: Vec<String> = (g.drops.iter())
                        .filter(|(_, v)| **v > 0)
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    format!(" ({})", by_reason.join(" "))
                }
            );
        }
        if let Some(p) = &self.policy {
            let _ = writeln!(out, "{}", p.summary());
        }
        if !i.lost.is_empty() {
            let _ = writeln!(
                out,
                "  LOST: {} reservation(s) in blocks this host no longer holds (recreate those pods):",
                i.lost.len()
            );
            for r in &i.lost {
                let _ = writeln!(
                    out,
                    "    {} {}/{}",
                    r.addresses()
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" "),
                    r.attachment.container_id,
                    r.attachment.ifname
                );
            }
        }
        out
    }

    /// `weft status policy`.
    pub fn render_policy(&self) -> String {
        match &self.policy {
            Some(p) => p.render(),
            None => "policy: off (no --policy-dir or --kubernetes)\n".into(),
        }
    }

    /// `weft status ipam`: the summary, the blocks of every host and this host's reservations.
    pub fn render_ipam(&self) -> String {
        let mut out = self.render_ipam_summary();
        let Some(i) = &self.ipam else {
            return out;
        };
        if let Some(c) = &i.cluster {
            let _ = writeln!(out, "\nBlocks by host:");
            let rows: Vec<Vec<String>> = c
                .hosts
                .iter()
                .map(|h| {
                    let list = |v: &[String]| {
                        if v.is_empty() {
                            "-".to_string()
                        } else {
                            v.iter()
                                .map(|b| b.to_string())
                                .collect::<Vec<_>>()
                                .join(" ")
                        }
                    };
                    vec![
                        h.nickname.clone(),
                        h.peer.clone(),
                        if h.reachable {
                            "reachable".into()
                        } else {
                            format!("unreachable for {} s", h.unreachable_secs)
                        },
                        list(&h.held),
                        list(&h.pending),
                    ]
                })
                .collect();
            table(
                &mut out,
                &["HOST", "NAME", "STATE", "HELD", "CLAIMING"],
                &rows,
            );
        }
        let _ = writeln!(out, "\nReservations: {}", i.reservations.len());
        if !i.reservations.is_empty() {
            let mut by_address: Vec<&crate::ipam::Reservation> = i.reservations.iter().collect();
            by_address.sort_by_key(|r| r.address);
            let rows: Vec<Vec<String>> = by_address
                .into_iter()
                .map(|r| {
                    let lost = i.lost.iter().any(|l| l.attachment == r.attachment);
                    let guarded = self
                        .guard
                        .iter()
                        .flat_map(|g| &g.ports)
                        .find(|p| p.attachment == r.attachment);
                    vec![
                        r.addresses()
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(" "),
                        r.attachment.container_id.clone(),
                        r.attachment.ifname.clone(),
                        if r.netns.is_empty() {
                            "-".into()
                        } else {
                            r.netns.clone()
                        },
                        r.port.as_ref().map_or("-".into(), |p| p.name.clone()),
                        guarded.map_or("-".into(), |p| p.dropped_packets.to_string()),
                        if lost { "LOST" } else { "ok" }.into(),
                    ]
                })
                .collect();
            table(
                &mut out,
                &[
                    "ADDRESS",
                    "CONTAINER",
                    "IFNAME",
                    "NETNS",
                    "PORT",
                    "DROPPED",
                    "STATE",
                ],
                &rows,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }

    /// A report with only the fields every router sends (what an older router's report reads
    /// as): every later field takes its default.
    fn minimal_report() -> Report {
        serde_json::from_value(serde_json::json!({
            "version": "0", "name": "a", "nickname": "h1", "uid": "0", "listen": "", "bridge": "",
            "tap": "", "underlay_mtu": 1500, "pod_mtu": 1410, "uptime_secs": 1, "peers": [],
            "targets": [], "connections": [], "refused_connections": 0, "refused": [],
            "encrypted": false, "counters": {}, "drops": {}, "fdb": {}
        }))
        .unwrap()
    }

    #[test]
    fn several_workers_get_a_line_each_share() {
        let mut r = minimal_report();
        assert!(
            r.workers.is_empty(),
            "a report without the field reads as empty"
        );
        assert!(!r.render().contains("workers:"));
        r.workers = vec![
            WorkerReport {
                tap_rx_frames: 5,
                udp_rx_datagrams: 6,
            },
            WorkerReport {
                tap_rx_frames: 7,
                udp_rx_datagrams: 8,
            },
        ];
        assert!(r.render().contains(
            "workers: 2 (0: tap_rx_frames=5 udp_rx_datagrams=6, 1: tap_rx_frames=7 udp_rx_datagrams=8)"
        ));
    }

    #[test]
    fn topology_marks_unconfirmed_connections() {
        let mut r = minimal_report();
        assert!(
            r.topology.is_empty(),
            "a report without the field reads as empty"
        );
        let conn = |peer: &str, nickname: &str, usable| TopologyConnection {
            peer: peer.into(),
            nickname: nickname.into(),
            usable,
        };
        r.topology = vec![
            TopologyRecord {
                name: "a".into(),
                nickname: "h1".into(),
                version: 7,
                signed: true,
                connections: vec![conn("b", "h2", true), conn("c", "", false)],
            },
            TopologyRecord {
                name: "b".into(),
                nickname: "h2".into(),
                version: 9,
                signed: false,
                connections: vec![conn("a", "h1", true)],
            },
        ];
        let text = r.render_topology();
        assert!(text.contains("Topology: 2 peers"), "{text}");
        let h1 = text.lines().find(|l| l.starts_with("  h1")).unwrap();
        assert!(
            h1.contains(" 7 ") && h1.contains(" yes ") && h1.ends_with("h2 c*"),
            "{text}"
        );
        assert!(text
            .lines()
            .any(|l| l.starts_with("  h2") && l.ends_with("h1")));
    }
}
