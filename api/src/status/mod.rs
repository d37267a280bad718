//! What `weft status` shows: the report the router serves at `GET /v1/status` (and `GET
//! /v1/macs`), with the control plane's parts in their own types here, so that the contract does
//! not depend on the gossip crate: the router converts at the boundary and the JSON is the same.
//! Their rendering as text tables is in [`text`].

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod text;

/// The whole status of one router.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Weft version.
    pub version: String,
    /// Our peer name.
    pub name: String,
    /// Our nickname.
    pub nickname: String,
    /// Our run id.
    pub uid: String,
    /// Control and data address.
    pub listen: String,
    /// The host bridge.
    pub bridge: String,
    /// The router's TAP port on it.
    pub tap: String,
    /// MTU of the underlay interface.
    pub underlay_mtu: u32,
    /// MTU pods must use.
    pub pod_mtu: u32,
    /// Seconds since the router started.
    pub uptime_secs: u64,
    /// Connected peers with their counters.
    pub peers: Vec<PeerReport>,
    /// The mesh as this router sees it: every peer's gossiped record (ours included), with the
    /// connections it lists. Two routers agree on routes and broadcast trees once they show the
    /// same topology. Routers older than the field send none.
    #[serde(default)]
    pub topology: Vec<TopologyRecord>,
    /// Dial targets.
    pub targets: Vec<TargetStatus>,
    /// Control connections.
    pub connections: Vec<ConnectionStatus>,
    /// Inbound control connections refused by the connection or accept-rate limits.
    pub refused_connections: u64,
    /// Addresses whose connections were refused after they spoke (wrong secret, no secret,
    /// incompatible version, ...).
    pub refused: Vec<RefusedStatus>,
    /// Gossiped records refused or found suspicious, by reason: `topology_malformed`,
    /// `topology_version` (too far ahead of our clock), `topology_foreign_own` (about us, not
    /// written by us), `topology_signature`, `topology_wrong_key`, `topology_unsigned` (the
    /// owner's signature missing or wrong), `topology_unsigned_accepted` (unsigned, accepted:
    /// routers that do not sign yet), `ipam_malformed`, `ipam_version_jump`, `ipam_forged_own`,
    /// `ipam_conflicting_claims` and the four `ipam_` signature reasons (docs/security.md, "A
    /// compromised host").
    #[serde(default)]
    pub rejected_records: BTreeMap<String, u64>,
    /// The cluster has a secret.
    pub encrypted: bool,
    /// The secrets in force and the secret file's state (`None` without a secret).
    #[serde(default)]
    pub secrets: Option<SecretsReport>,
    /// The kernel VXLAN fast path.
    #[serde(default)]
    pub fastpath: FastPathReport,
    /// Host-wide data plane counters.
    pub counters: BTreeMap<String, u64>,
    /// The data plane workers (`--workers`), each with its own TAP queue and UDP socket: what
    /// each one read. Their sums are the host-wide `tap_rx_frames` and `udp_rx_datagrams`.
    /// Routers older than the field send none.
    #[serde(default)]
    pub workers: Vec<WorkerReport>,
    /// Drops by reason.
    pub drops: BTreeMap<String, u64>,
    /// MAC table counters.
    pub fdb: BTreeMap<String, u64>,
    /// The kernel's forwarding tables, bounded by `--kernel-max-macs`: `bridge_learned` and
    /// `bridge_max_learned` (what the bridge learned and its cap, when the kernel reports them),
    /// `bridge_full_rounds` (seconds in which the bridge was seen at its cap: a flood of MACs, or
    /// a cap too small), `vxlan_entries` and `vxlan_max` (the VXLAN device's table and its
    /// limit), `rounds_late` (fast path rounds cut off by their deadline).
    #[serde(default)]
    pub kernel_fdb: BTreeMap<String, u64>,
    /// Pod IPAM (`None` when the router runs without `--pod-cidr`).
    #[serde(default)]
    pub ipam: Option<IpamSection>,
    /// The port guard (anti-spoofing on the pods' bridge ports; `None` without IPAM).
    #[serde(default)]
    pub guard: Option<crate::guard::GuardReport>,
    /// NetworkPolicy enforcement (`None` when no policy source is configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::PolicyReport>,
}

/// One data plane worker's share of the traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Frames it read from its TAP queue.
    pub tap_rx_frames: u64,
    /// Datagrams it received on its UDP socket.
    pub udp_rx_datagrams: u64,
}

/// Pod IPAM on one router: its blocks, its reservations, the cluster's view.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IpamSection {
    /// The pod CIDR.
    pub cidr: String,
    /// The IPv6 pod CIDR of a dual-stack cluster (empty otherwise).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cidr6: String,
    /// On a dual-stack cluster, the IPv6 twin of each held block, in the order of `held`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held6: Vec<String>,
    /// The block size.
    pub block_prefix: u8,
    /// Whether traffic from pods to outside the pod CIDR is masqueraded.
    pub masquerade: bool,
    /// Blocks this host holds.
    pub held: Vec<String>,
    /// This host's reservations.
    pub reservations: Vec<crate::ipam::Reservation>,
    /// Reservations whose address lies in no block this host holds (reclaimed while the router
    /// was away): those pods may clash with another host's.
    pub lost: Vec<crate::ipam::Reservation>,
    /// Blocks the cluster took back from this host while it was unreachable for longer than the
    /// grace period.
    #[serde(default)]
    pub lost_blocks: Vec<String>,
    /// Whether an ADD can be served now.
    pub ready: bool,
    /// Why not, when not.
    #[serde(default)]
    pub reason: String,
    /// The cluster's view from the gossip layer (blocks per host, members, quorum).
    pub cluster: Option<ClusterIpam>,
}

/// One peer's gossiped record, as this router holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyRecord {
    /// Its name.
    pub name: String,
    /// Its nickname.
    pub nickname: String,
    /// The record's version (raised by its owner on every change).
    pub version: u64,
    /// The record carries its owner's signature (checked when it was received). Records of
    /// routers that do not sign yet have none; `--require-signed-records` refuses them.
    #[serde(default)]
    pub signed: bool,
    /// The connections it lists, in peer-name order.
    pub connections: Vec<TopologyConnection>,
}

/// One connection a peer's record lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyConnection {
    /// The peer at the other end.
    pub peer: String,
    /// Its nickname (empty when this router has no record of it).
    pub nickname: String,
    /// The data path is confirmed: only usable connections, listed by both ends, carry traffic.
    pub usable: bool,
}

/// One peer: a direct neighbour or a peer reached through relays.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerReport {
    /// Its name.
    pub name: String,
    /// Its nickname.
    pub nickname: String,
    /// Where its datagrams go (the neighbour's address; empty when reached through a relay).
    pub addr: String,
    /// `established` (direct, data path confirmed), `connected, data path down` (control
    /// connection up, UDP heartbeats unanswered), or `reachable` (through relays only).
    pub state: String,
    /// `direct`, or `via <relay nickname>` (the next hop of the shortest path).
    pub path: String,
    /// Its pod MTU (0 when unknown: not a direct neighbour).
    pub mtu: u32,
    /// Round-trip time of the last UDP heartbeat, in milliseconds (direct neighbours).
    pub rtt_ms: Option<f64>,
    /// Every UDP heartbeat round trip measured with this peer since the router started (kept
    /// across its reconnections), as a histogram; `None` before the first answer. Routers older
    /// than the field send none.
    #[serde(default)]
    pub rtt_histogram: Option<RttHistogram>,
    /// Frames sent.
    pub tx_frames: u64,
    /// Frame bytes sent.
    pub tx_bytes: u64,
    /// Datagrams sent.
    pub tx_datagrams: u64,
    /// Frames received.
    pub rx_frames: u64,
    /// Frame bytes received.
    pub rx_bytes: u64,
    /// Datagrams received.
    pub rx_datagrams: u64,
    /// Datagrams from this peer that we relayed on.
    pub relayed_datagrams: u64,
    /// Drops of this peer's traffic, by reason (zero counts left out).
    pub drops: BTreeMap<String, u64>,
    /// Data encryption with this neighbour: the AEAD the pair seals with, `aes-256-gcm` or
    /// `chacha20-poly1305` (`--cipher`), `trusted` (in clear by `--trusted-subnets`), or `none`
    /// (no secret, or not a neighbour).
    pub encryption: String,
    /// Why this neighbour uses the fast path or the sleeve (empty for peers reached by relay).
    #[serde(default)]
    pub fastpath: String,
    /// The key generation this router sends with (encrypted neighbours).
    pub key_epoch: Option<u8>,
    /// Rekeys completed with this neighbour.
    pub rekeys: u64,
    /// Fingerprint of the secret of the connection to this neighbour (encrypted clusters).
    #[serde(default)]
    pub secret: Option<String>,
    /// Seconds since the data key this router sends with was installed (the handshake's, or the
    /// last rekey's).
    #[serde(default)]
    pub key_age_secs: Option<u64>,
    /// The neighbour's wall clock minus ours, in milliseconds, measured from its hello (its
    /// one-way delay included). `None` for relayed peers and routers that do not send it.
    #[serde(default)]
    pub clock_offset_ms: Option<i64>,
}

/// Heartbeat round trips with one peer, bucketed as a Prometheus histogram
/// (`weft_peer_rtt_seconds`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RttHistogram {
    /// The buckets by ascending upper bound, cumulative (each counts the round trips at or below
    /// its bound); the `+Inf` bucket is [`count`](Self::count).
    pub buckets: Vec<RttBucket>,
    /// Round trips measured.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_secs: f64,
}

/// One bucket of an [`RttHistogram`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RttBucket {
    /// Upper bound, in seconds.
    pub le_secs: f64,
    /// Round trips at or below it.
    pub count: u64,
}

/// The cluster secrets of a router: fingerprints only, never a secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretsReport {
    /// Fingerprints of the accepted secrets, the preferred (used to dial) first.
    pub accepted: Vec<String>,
    /// Fingerprints of secrets removed from the file during this run: peers offering them are
    /// refused as retired.
    #[serde(default)]
    pub retired: Vec<String>,
    /// Why the secret file last failed to read or parse (the last good secrets stay in force).
    #[serde(default)]
    pub file_error: Option<String>,
    /// Rereads of the file that replaced the secrets.
    #[serde(default)]
    pub reloads: u64,
    /// Rereads of the file that failed.
    #[serde(default)]
    pub reload_errors: u64,
}

/// The kernel VXLAN fast path of a router.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FastPathReport {
    /// `on`, or `off: <why>`.
    pub state: String,
    /// The VXLAN device.
    pub device: String,
    /// Its VNI.
    pub vni: u32,
    /// Its UDP port.
    pub port: u16,
    /// Neighbours on the fast path now.
    pub peers: usize,
    /// Packets the device received (from fast-path peers).
    pub rx_packets: u64,
    /// Packets the device sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
}

/// One MAC table entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MacReport {
    /// The address.
    pub mac: String,
    /// "local" or the peer's name.
    pub location: String,
    /// Milliseconds since it was last seen.
    pub age_ms: u64,
}

/// The state of one address we dial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TargetState {
    /// A dial or handshake is under way.
    Connecting,
    /// Connected to this peer (possibly through the connection it dialled to us).
    Established {
        /// The peer's name.
        peer: String,
    },
    /// The last attempt failed; the next one is scheduled.
    Retrying {
        /// Milliseconds until the next attempt.
        next_attempt_in_ms: u64,
        /// Why the last attempt failed.
        last_error: String,
    },
    /// Not retried until the configuration changes.
    Failed {
        /// Why.
        reason: String,
    },
}

/// Status of one dial target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetStatus {
    /// The address dialled.
    pub addr: String,
    /// Its state.
    #[serde(flatten)]
    pub state: TargetState,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// Learnt from gossip (not in the seed list).
    #[serde(default)]
    pub discovered: bool,
}

/// Status of one live connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionStatus {
    /// The peer's name.
    pub peer: String,
    /// Its nickname.
    pub nickname: String,
    /// The remote address of the TCP connection.
    pub addr: String,
    /// True when we dialled.
    pub outbound: bool,
    /// The negotiated protocol version.
    pub version: u16,
    /// Seconds since the handshake completed.
    pub established_secs: u64,
    /// Fingerprint of the secret the connection was established with (encrypted clusters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// An address whose inbound connections we refused, for status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedStatus {
    /// The remote IP.
    pub addr: String,
    /// Why, the last time.
    pub reason: String,
    /// How many connections were refused.
    pub count: u64,
    /// Seconds since the last one.
    pub last_secs: u64,
}

/// One host's blocks, as we know them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostBlocks {
    /// The host's peer name (as `weft status` shows names).
    pub peer: String,
    /// Its nickname, if known.
    pub nickname: String,
    /// Blocks it holds.
    pub held: Vec<String>,
    /// Blocks it is claiming (not yet agreed).
    pub pending: Vec<String>,
    /// Whether it is reachable now.
    pub reachable: bool,
    /// Seconds since it was last reachable (0 when reachable).
    pub unreachable_secs: u64,
}

/// The cluster's IPAM view from the mesh, as `weft status ipam` shows it (the gossip layer's
/// `IpamStatus`, blocks written `A.B.C.D/N`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIpam {
    /// The pod CIDR.
    pub cidr: String,
    /// The block size.
    pub block_prefix: u8,
    /// Blocks this host holds.
    pub held: Vec<String>,
    /// Every known host's blocks (this one included).
    pub hosts: Vec<HostBlocks>,
    /// Peers counted for majorities.
    pub members: usize,
    /// Agreeing peers a claim or reclaim needs.
    pub quorum: usize,
    /// Members reachable now (this host included).
    pub reachable: usize,
    /// Free blocks left in the CIDR.
    pub free_blocks: u64,
    /// Grace period before an unreachable host's blocks are reclaimed, seconds.
    pub grace_secs: u64,
    /// Blocks this host held until the cluster reclaimed them while it was unreachable (it then
    /// started a new incarnation): addresses in them must no longer be used.
    #[serde(default)]
    pub lost: Vec<String>,
    /// This host's incarnation (bumped when it finds itself reclaimed, or after a clean leave).
    #[serde(default)]
    pub incarnation: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer_json() -> serde_json::Value {
        serde_json::json!({
            "name": "00:02", "nickname": "h2", "addr": "10.0.0.2:6784", "state": "established",
            "path": "direct", "mtu": 1410, "rtt_ms": 0.3, "tx_frames": 0, "tx_bytes": 0,
            "tx_datagrams": 0, "rx_frames": 0, "rx_bytes": 0, "rx_datagrams": 0,
            "relayed_datagrams": 0, "drops": {}, "encryption": "none", "rekeys": 0,
        })
    }

    /// A router older than the histogram sends none: its peers still parse.
    #[test]
    fn peers_without_an_rtt_histogram_parse() {
        let p: PeerReport = serde_json::from_value(peer_json()).unwrap();
        assert_eq!(p.rtt_histogram, None);
    }

    #[test]
    fn rtt_histograms_round_trip() {
        let h = RttHistogram {
            buckets: vec![
                RttBucket {
                    le_secs: 0.00005,
                    count: 2,
                },
                RttBucket {
                    le_secs: 0.0001,
                    count: 5,
                },
            ],
            count: 6,
            sum_secs: 0.0009,
        };
        let mut v = peer_json();
        v["rtt_histogram"] = serde_json::to_value(&h).unwrap();
        assert_eq!(
            v["rtt_histogram"]["buckets"][1],
            serde_json::json!({"le_secs": 0.0001, "count": 5})
        );
        let p: PeerReport = serde_json::from_value(v).unwrap();
        assert_eq!(p.rtt_histogram, Some(h));
    }
}
