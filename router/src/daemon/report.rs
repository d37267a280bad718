//! What the router reports: `weft status` ([`Report`]), the per-peer rows and the MAC table,
//! built from the daemon's state, with the gossip layer's status types converted to the API's
//! at this boundary (the contract keeps its own copies, so the CLI and the plugin never link the
//! gossip crate; the conversions keep the JSON field for field).

use super::*;
use crate::dataplane::Reason;
use gossip::driver::{ConnectionStatus, RefusedStatus, TargetState, TargetStatus};
use gossip::ipam::{HostBlocks, IpamStatus};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;
use vswitch::{Location, PeerName};
use weft_api::status as api_status;
use weft_api::status::{MacReport, PeerReport, Report};

impl Daemon {
    pub(super) fn peer_reports(&self) -> Vec<PeerReport> {
        let view = self.routes_view();
        let neighbors = lock(&self.neighbors);
        let nick = |p: PeerName| -> String {
            view.known
                .iter()
                .find(|(n, _)| *n == p)
                .map(|(_, k)| k.clone())
                .or_else(|| neighbors.get(&p).map(|n| n.info.nickname.clone()))
                .unwrap_or_else(|| p.to_string())
        };
        let mut names: Vec<PeerName> = view.known.iter().map(|(n, _)| *n).collect();
        names.extend(neighbors.keys().copied());
        names.sort();
        names.dedup();
        let mut out: Vec<PeerReport> = names
            .into_iter()
            .map(|name| {
                let c = self.counters_for(name);
                let n = neighbors.get(&name);
                let hop = view
                    .next_hops
                    .iter()
                    .find(|(d, _)| *d == name)
                    .map(|(_, h)| *h);
                let fast = lock(&self.fast_peers).get(&name).is_some_and(|p| p.fast());
                let (state, path) = match (n, hop) {
                    (Some(n), _) if n.usable && fast => {
                        ("established".to_string(), "fast path".to_string())
                    }
                    (Some(n), _) if n.usable => ("established".to_string(), "direct".to_string()),
                    (Some(_), Some(h)) => (
                        "connected, data path down".into(),
                        format!("via {}", nick(h)),
                    ),
                    (Some(_), None) => ("connected, data path down".into(), "none".into()),
                    (None, Some(h)) if h == name => ("established".into(), "direct".into()),
                    (None, Some(h)) => ("reachable".into(), format!("via {}", nick(h))),
                    (None, None) => ("unreachable".into(), "none".into()),
                };
                let rtt_us = c.rtt_us.load(Relaxed);
                let session = n.and_then(|n| n.session.as_ref());
                // The AEAD datagrams are sealed with now; before the first key of a handover
                // is in use, the one the pair chose on its connection.
                let encryption = match (n, session) {
                    (Some(n), Some(s)) => lock(s)
                        .aead()
                        .or(n.info.keys.as_ref().map(|k| k.aead))
                        .map_or("chacha20-poly1305", vswitch::Aead::name),
                    (Some(_), None) if self.cfg.secrets.is_some() => "trusted",
                    _ => "none",
                };
                PeerReport {
                    name: name.to_string(),
                    nickname: nick(name),
                    addr: n
                        .map(|n| {
                            // As an operator would write it (IPv4 as IPv4, not ::ffff:a.b.c.d).
                            let a = self.udp_addr(n);
                            SocketAddr::new(a.ip().to_canonical(), a.port()).to_string()
                        })
                        .unwrap_or_default(),
                    state,
                    path,
                    mtu: n
                        .map(|n| n.info.pod_mtu.min(self.shared.pod_mtu))
                        .unwrap_or(0),
                    rtt_ms: (n.is_some() && rtt_us > 0).then_some(rtt_us as f64 / 1000.0),
                    rtt_histogram: c.rtt.snapshot(),
                    tx_frames: c.tx_frames.load(Relaxed),
                    tx_bytes: c.tx_bytes.load(Relaxed),
                    tx_datagrams: c.tx_datagrams.load(Relaxed),
                    rx_frames: c.rx_frames.load(Relaxed),
                    rx_bytes: c.rx_bytes.load(Relaxed),
                    rx_datagrams: c.rx_datagrams.load(Relaxed),
                    relayed_datagrams: c.relayed_datagrams.load(Relaxed),
                    drops: Reason::ALL
                        .iter()
                        .map(|r| (r.as_str().to_string(), c.drops_for(*r)))
                        .filter(|(_, v)| *v > 0)
                        .collect(),
                    encryption: encryption.into(),
                    fastpath: match n {
                        None => String::new(),
                        Some(_) => self.fast_reason(name),
                    },
                    key_epoch: session.and_then(|s| lock(s).send_epoch()),
                    rekeys: n.map(|n| n.rekeys).unwrap_or(0),
                    secret: n
                        .and_then(|n| n.info.secret.as_ref())
                        .map(|s| s.fingerprint().to_string()),
                    key_age_secs: session.and_then(|s| {
                        lock(s)
                            .sealer()
                            .map(|s| s.age(std::time::Instant::now()).as_secs())
                    }),
                    clock_offset_ms: n.and_then(|n| n.info.clock_offset_ms),
                }
            })
            .collect();
        out.sort_by(|a, b| a.nickname.cmp(&b.nickname).then(a.name.cmp(&b.name)));
        out
    }

    /// Why a neighbour is on the fast path or not, as `weft status` shows it.
    pub(super) fn fast_reason(&self, name: PeerName) -> String {
        match &self.fast_off {
            Some(off) => off.clone(),
            None => lock(&self.fast_peers)
                .get(&name)
                .map(|p| p.reason.clone())
                .unwrap_or_else(|| "probing".into()),
        }
    }

    /// Every gossiped record we hold, with nicknames resolved from the records themselves.
    fn topology_report(&self) -> Vec<api_status::TopologyRecord> {
        let records = self.gossip.topology_records();
        let nicknames: BTreeMap<PeerName, &str> = records
            .iter()
            .map(|r| (r.name, r.nickname.as_str()))
            .collect();
        let nick = |p: PeerName| nicknames.get(&p).copied().unwrap_or_default().to_string();
        let mut out: Vec<api_status::TopologyRecord> = records
            .iter()
            .map(|r| api_status::TopologyRecord {
                name: r.name.to_string(),
                nickname: r.nickname.clone(),
                version: r.version,
                signed: r.sig.is_some(),
                connections: r
                    .conns
                    .iter()
                    .map(|c| api_status::TopologyConnection {
                        peer: c.peer.to_string(),
                        nickname: nick(c.peer),
                        usable: c.usable,
                    })
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| a.nickname.cmp(&b.nickname).then(a.name.cmp(&b.name)));
        out
    }

    pub(super) fn report(&self) -> Report {
        let c = &self.shared.counters;
        let counters: BTreeMap<String, u64> = [
            ("tap_rx_frames", &c.tap_rx_frames),
            ("tap_rx_bytes", &c.tap_rx_bytes),
            ("tap_tx_frames", &c.tap_tx_frames),
            ("tap_tx_bytes", &c.tap_tx_bytes),
            ("udp_rx_datagrams", &c.udp_rx_datagrams),
            ("udp_tx_datagrams", &c.udp_tx_datagrams),
            ("unicast_frames", &c.unicast_frames),
            ("flooded_frames", &c.flooded_frames),
            ("relayed_datagrams", &c.relayed_datagrams),
            ("icmp_too_big_sent", &c.icmp_too_big_sent),
            ("heartbeats_answered", &c.heartbeats_answered),
            ("vxlan_handoff_frames", &c.vxlan_handoff_frames),
            ("tap_rx_gso_frames", &c.tap_rx_gso_frames),
            ("tap_rx_gso_segments", &c.tap_rx_gso_segments),
            ("tx_csum_partial_segments", &c.tx_csum_partial_segments),
            ("tap_tx_gso_frames", &c.tap_tx_gso_frames),
            ("tap_tx_gso_segments", &c.tap_tx_gso_segments),
            ("udp_tx_gso_sends", &c.udp_tx_gso_sends),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.load(Relaxed)))
        .collect();
        let drops = Reason::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), c.drops_for(*r)))
            .collect();
        let fs = self.shared.switch().stats();
        let fdb = [
            ("entries", fs.entries as u64),
            ("capacity", self.cfg.fdb_capacity as u64),
            ("evictions", fs.evictions),
            ("expirations", fs.expirations),
            ("moves", fs.moves),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let k = *lock(&self.kernel_fdb);
        let mut kernel_fdb: std::collections::BTreeMap<String, u64> = [
            ("bridge_full_rounds", k.bridge_full_rounds),
            ("rounds_late", k.rounds_late),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
        if let Some((n, max)) = k.bridge {
            kernel_fdb.insert("bridge_learned".into(), n.into());
            kernel_fdb.insert("bridge_max_learned".into(), max.into());
        }
        if let Some(n) = k.vxlan_entries {
            kernel_fdb.insert("vxlan_entries".into(), n as u64);
            kernel_fdb.insert("vxlan_max".into(), self.cfg.kernel_max_macs.into());
        }
        Report {
            version: env!("CARGO_PKG_VERSION").into(),
            name: self.name.to_string(),
            nickname: self.cfg.nickname.clone(),
            uid: format!("{:016x}", self.uid),
            listen: self.cfg.listen.to_string(),
            bridge: self.cfg.bridge.clone(),
            tap: self.cfg.tap.clone(),
            underlay_mtu: self.underlay_mtu,
            pod_mtu: self.shared.pod_mtu,
            uptime_secs: self.started.elapsed().as_secs(),
            peers: self.peer_reports(),
            topology: self.topology_report(),
            targets: self.gossip.targets().into_iter().map(target).collect(),
            connections: (self.gossip.connections().into_iter())
                .map(connection)
                .collect(),
            refused_connections: self.gossip.refused_connections(),
            refused: (self.gossip.refused_peers().into_iter())
                .map(refused)
                .collect(),
            rejected_records: self.gossip.rejected_records(),
            encrypted: self.cfg.secrets.is_some(),
            secrets: self.cfg.secrets.is_some().then(|| {
                let (accepted, retired) = self.gossip.secret_fingerprints();
                let f = lock(&self.secret_file);
                weft_api::status::SecretsReport {
                    accepted: accepted.iter().map(|f| f.to_string()).collect(),
                    retired: retired.iter().map(|f| f.to_string()).collect(),
                    file_error: f.error.clone(),
                    reloads: f.reloads,
                    reload_errors: f.errors,
                }
            }),
            fastpath: match &self.fast_off {
                Some(off) => weft_api::status::FastPathReport {
                    state: off.clone(),
                    ..Default::default()
                },
                None => {
                    let st = lock(&self.fast_stats).unwrap_or_default();
                    weft_api::status::FastPathReport {
                        state: "on".into(),
                        device: fastpath_device(&self.cfg.bridge),
                        vni: self.cfg.vni,
                        port: self.cfg.vxlan_port,
                        peers: lock(&self.fast_peers).values().filter(|p| p.fast()).count(),
                        rx_packets: st.rx_packets,
                        tx_packets: st.tx_packets,
                        rx_bytes: st.rx_bytes,
                        tx_bytes: st.tx_bytes,
                    }
                }
            },
            counters,
            workers: (self.shared.workers.iter())
                .map(|w| weft_api::status::WorkerReport {
                    tap_rx_frames: w.tap_rx_frames.load(Relaxed),
                    udp_rx_datagrams: w.udp_rx_datagrams.load(Relaxed),
                })
                .collect(),
            drops,
            fdb,
            kernel_fdb,
            ipam: self.ipam.as_ref().map(|i| {
                let (ready, reason) = i.readiness();
                weft_api::status::IpamSection {
                    cidr: i.cidr().to_string(),
                    cidr6: i.cidr6().map(|c| c.to_string()).unwrap_or_default(),
                    held6: i.held6().iter().map(|b| b.to_string()).collect(),
                    block_prefix: i.block_prefix(),
                    masquerade: i.masquerade(),
                    held: i.held().iter().map(|b| b.to_string()).collect(),
                    reservations: i.reservations(),
                    lost: i.lost(),
                    lost_blocks: self
                        .gossip
                        .ipam_lost()
                        .iter()
                        .map(|b| b.to_string())
                        .collect(),
                    ready,
                    reason,
                    cluster: self.gossip.ipam_status().map(cluster_ipam),
                }
            }),
            guard: self.ipam.as_ref().map(|i| i.guard_report()),
            policy: self
                .policy
                .as_ref()
                .zip(self.ipam.as_ref())
                .map(|(p, i)| p.report(i, &self.gossip)),
        }
    }

    pub(super) fn macs(&self) -> Vec<MacReport> {
        let now = Instant::now();
        let sw = self.shared.switch();
        let mut out: Vec<MacReport> = sw
            .fdb()
            .entries()
            .into_iter()
            .map(|(mac, loc, seen)| MacReport {
                mac: mac.to_string(),
                location: match loc {
                    Location::Local => "local".into(),
                    Location::Peer(p) => p.to_string(),
                },
                age_ms: now.saturating_duration_since(seen).as_millis() as u64,
            })
            .collect();
        out.sort_by(|a, b| a.mac.cmp(&b.mac));
        out
    }
}

/// A dial target, as the API shows it.
pub fn target(t: TargetStatus) -> api_status::TargetStatus {
    api_status::TargetStatus {
        addr: t.addr,
        state: match t.state {
            TargetState::Connecting => api_status::TargetState::Connecting,
            TargetState::Established { peer } => api_status::TargetState::Established { peer },
            TargetState::Retrying {
                next_attempt_in_ms,
                last_error,
            } => api_status::TargetState::Retrying {
                next_attempt_in_ms,
                last_error,
            },
            TargetState::Failed { reason } => api_status::TargetState::Failed { reason },
        },
        failures: t.failures,
        discovered: t.discovered,
    }
}

/// A control connection, as the API shows it.
pub fn connection(c: ConnectionStatus) -> api_status::ConnectionStatus {
    api_status::ConnectionStatus {
        peer: c.peer,
        nickname: c.nickname,
        addr: c.addr,
        outbound: c.outbound,
        version: c.version,
        established_secs: c.established_secs,
        secret: c.secret,
    }
}

/// A refused address, as the API shows it.
pub fn refused(r: RefusedStatus) -> api_status::RefusedStatus {
    api_status::RefusedStatus {
        addr: r.addr,
        reason: r.reason,
        count: r.count,
        last_secs: r.last_secs,
    }
}

/// The cluster's IPAM view, as the API shows it (blocks written `A.B.C.D/N`).
pub fn cluster_ipam(s: IpamStatus) -> api_status::ClusterIpam {
    let blocks = |v: Vec<gossip::ipam::Block>| v.iter().map(ToString::to_string).collect();
    api_status::ClusterIpam {
        cidr: s.cidr.to_string(),
        block_prefix: s.block_prefix,
        held: blocks(s.held),
        hosts: s
            .hosts
            .into_iter()
            .map(|h: HostBlocks| api_status::HostBlocks {
                peer: h.peer,
                nickname: h.nickname,
                held: blocks(h.held),
                pending: blocks(h.pending),
                reachable: h.reachable,
                unreachable_secs: h.unreachable_secs,
            })
            .collect(),
        members: s.members,
        quorum: s.quorum,
        reachable: s.reachable,
        free_blocks: s.free_blocks,
        grace_secs: s.grace_secs,
        lost: blocks(s.lost),
        incarnation: s.incarnation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gossip::driver::{ConnectionStatus, RefusedStatus, TargetState, TargetStatus};
    use gossip::ipam::{HostBlocks, IpamStatus};

    /// The API's copies serialize exactly as the gossip layer's types do.
    #[test]
    pub(super) fn conversions_keep_the_json() {
        let t = TargetStatus {
            addr: "10.0.0.2:6783".into(),
            state: TargetState::Retrying {
                next_attempt_in_ms: 1500,
                last_error: "refused".into(),
            },
            failures: 3,
            discovered: true,
        };
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            serde_json::to_value(target(t.clone())).unwrap()
        );
        let c = ConnectionStatus {
            peer: "00:01".into(),
            nickname: "h1".into(),
            addr: "10.0.0.2:40000".into(),
            outbound: true,
            version: 2,
            established_secs: 9,
            secret: Some("ab12cd34".into()),
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::to_value(connection(c.clone())).unwrap()
        );
        let r = RefusedStatus {
            addr: "10.0.0.9".into(),
            reason: "wrong secret".into(),
            count: 2,
            last_secs: 1,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::to_value(refused(r.clone())).unwrap()
        );
        let b = |s: &str| s.parse::<gossip::ipam::Block>().unwrap();
        let s = IpamStatus {
            cidr: b("10.32.0.0/12"),
            block_prefix: 24,
            held: vec![b("10.32.1.0/24")],
            hosts: vec![HostBlocks {
                peer: "00:02".into(),
                nickname: "h2".into(),
                held: vec![b("10.32.2.0/24")],
                pending: vec![],
                reachable: false,
                unreachable_secs: 40,
            }],
            members: 3,
            quorum: 2,
            reachable: 2,
            free_blocks: 4093,
            grace_secs: 1800,
            lost: vec![b("10.32.9.0/24")],
            incarnation: 2,
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::to_value(cluster_ipam(s.clone())).unwrap()
        );
    }
}
