//! What the driver reports to the router ([`Event`], with [`PeerInfo`] for a peer that came up)
//! and what it shows in status pages: dial targets, connections, refused addresses, routes.

use crate::proto::Message;
use crate::secure::{DataKeys, Secret};
use crate::PeerName;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

/// A connected peer, as the data plane needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its stable name.
    pub name: PeerName,
    /// Its run id.
    pub uid: u64,
    /// Its nickname.
    pub nickname: String,
    /// The remote end of the control connection.
    pub tcp_addr: SocketAddr,
    /// Where to send its sleeve datagrams.
    pub udp_addr: SocketAddr,
    /// Its pod MTU.
    pub pod_mtu: u32,
    /// The negotiated protocol version.
    pub version: u16,
    /// True when we dialled.
    pub outbound: bool,
    /// This end's id of the control connection (control messages name the connection they came
    /// on with it; [`crate::driver::Gossip::send_on`] sends on it).
    pub conn: u64,
    /// Data keys from the handshake (encrypted clusters only).
    pub keys: Option<DataKeys>,
    /// The secret the handshake used (encrypted clusters only): rekeys on this connection derive
    /// their keys with it.
    pub secret: Option<Arc<Secret>>,
    /// The peer's wall clock minus ours, in milliseconds, when its hello arrived (its one-way
    /// delay included: a few milliseconds on a LAN). `None` from routers that do not send it.
    pub clock_offset_ms: Option<i64>,
}

/// What the driver reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A peer connected (or reconnected: the info may have changed).
    Up(PeerInfo),
    /// A peer's last connection closed.
    Down {
        /// The peer.
        name: PeerName,
        /// Why.
        reason: String,
    },
    /// The topology (and so the routes) changed.
    Topology,
    /// A rekey or fast-path probe message from a connected peer, for the data plane.
    Control {
        /// The peer.
        from: PeerName,
        /// [`Message::Rekey`], [`Message::RekeyAck`], [`Message::Handover`],
        /// [`Message::HandoverAck`], [`Message::Probe`], [`Message::TraceArm`],
        /// [`Message::TraceArmed`] or [`Message::TraceReport`].
        msg: Message,
        /// The connection it came on ([`PeerInfo::conn`]).
        conn: u64,
        /// The secret of the connection it came on (a rekey's keys derive with it).
        secret: Option<Arc<Secret>>,
    },
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

/// The routes of the data plane, as computed from the gossiped topology.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutesSnapshot {
    /// Peers reachable over usable connections, other than us, with their nicknames.
    pub peers: Vec<(PeerName, String)>,
    /// Next hop (a neighbour) for each reachable peer.
    pub next_hops: Vec<(PeerName, PeerName)>,
    /// For each broadcast source (us included), the neighbours its broadcasts go to from here.
    pub children: Vec<(PeerName, Vec<PeerName>)>,
    /// Every peer in the topology (reachable over control connections), with its nickname.
    pub known: Vec<(PeerName, String)>,
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
