//! The tokio driver: dials the seed list, accepts connections, runs the handshake and heartbeats,
//! and reports peers coming and going. All decisions are taken by [`crate::mesh`], the gossip core
//! and the IPAM state machine ([`crate::ipam::Ipam`]); this module only moves bytes, keeps time and
//! writes the IPAM state file.
//!
//! The code, by job:
//!
//! - [`handle`]: [`Gossip`], the handle the router holds: start, dial, status, shutdown;
//! - [`status`]: what the driver reports ([`Event`], [`PeerInfo`]) and shows ([`TargetStatus`],
//!   [`ConnectionStatus`], [`RoutesSnapshot`], ...);
//! - [`targets`]: the addresses we dial (seeds and peers learnt from gossip) and their connectors;
//! - [`conn`]: accepting connections and the task that runs each one (handshake, heartbeats,
//!   reading and writing messages);
//! - [`codec`]: the preamble, the Noise handshake and the framing of messages;
//! - [`rotate`]: a new set of secrets: closing connections on a removed secret, re-handshaking
//!   the ones we dialled on a secret that is no longer preferred;
//! - [`tick`]: the timers of the gossip core and of IPAM;
//! - [`ipam`]: the IPAM calls of [`Gossip`] and carrying out what the IPAM state machine asks;
//! - [`ipam_store`]: the IPAM state file.
//!
//! This file holds the configuration and the state the tasks share.

#[cfg(test)]
mod cipher_tests;
mod codec;
mod conn;
mod handle;
mod ipam;
mod ipam_store;
#[cfg(test)]
mod key_tests;
mod rotate;
pub mod status;
mod targets;
#[cfg(test)]
mod tests;
mod tick;

pub use handle::Gossip;
pub use status::{
    ConnectionStatus, Event, PeerInfo, RefusedStatus, RoutesSnapshot, TargetState, TargetStatus,
};

use crate::core::{GossipCore, Output};
use crate::ipam::Ipam;
use crate::mesh::{ConnId, Mesh};
use crate::proto::{self, Hello, Message};
use crate::secure::{Fingerprint, Keyring};
use crate::PeerName;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use targets::discover;
use tokio::sync::{mpsc, Notify};

/// What the driver needs to know about this peer.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our stable name.
    pub name: PeerName,
    /// Our run id.
    pub uid: u64,
    /// Our nickname (host name).
    pub nickname: String,
    /// Where to listen for control connections.
    pub listen: SocketAddr,
    /// The UDP port we receive sleeve datagrams on.
    pub udp_port: u16,
    /// Our pod MTU.
    pub pod_mtu: u32,
    /// Addresses to dial.
    pub seeds: Vec<SocketAddr>,
    /// How often to send a heartbeat.
    pub heartbeat: Duration,
    /// Silence after which a connection is declared dead.
    pub dead_after: Duration,
    /// Time allowed for the TCP connect plus the hello exchange.
    pub handshake_timeout: Duration,
    /// Most control connections open at once (handshaking or established); more are refused.
    pub max_connections: usize,
    /// Inbound connections accepted per second, sustained.
    pub accept_rate: f64,
    /// Inbound connections accepted in a burst above the rate.
    pub accept_burst: f64,
    /// The cluster secrets (the first preferred, all accepted): with them every connection is
    /// authenticated and encrypted (Noise), and each peer gets data keys. Replaced at run time by
    /// [`Gossip::set_secrets`]; whether there are secrets at all cannot change.
    pub secrets: Option<Keyring>,
    /// Cluster IPAM (`--pod-cidr`): off when `None`.
    pub ipam: Option<crate::ipam::IpamConfig>,
    /// The dual-stack IPv6 pod CIDR (a second `--pod-cidr`), told to peers in the hello, which
    /// must agree ([`proto::Hello::pod_cidr6`]).
    pub pod_cidr6: Option<crate::ipam::Block>,
    /// The host's key: our topology and IPAM records are signed with it ([`crate::sign`]).
    pub host_key: Option<Arc<crate::sign::HostKey>>,
    /// Refuse unsigned records (`--require-signed-records`).
    pub require_signed: bool,
    /// The AEADs we offer for the sleeve, in our order of preference ([`crate::cipher::offer`]);
    /// with secrets, each connection's data keys are bound to the one chosen with the peer.
    pub ciphers: Vec<vswitch::Aead>,
}

impl Config {
    /// Defaults: heartbeat every second, dead after 4 s of silence, 5 s handshake, at most 1024
    /// connections, inbound accepted at 50/s with bursts of 100.
    pub fn new(name: PeerName, uid: u64, nickname: String, listen: SocketAddr) -> Self {
        Config {
            name,
            uid,
            nickname,
            listen,
            udp_port: listen.port(),
            pod_mtu: 0,
            seeds: Vec::new(),
            heartbeat: Duration::from_secs(1),
            dead_after: Duration::from_secs(4),
            handshake_timeout: Duration::from_secs(5),
            max_connections: 1024,
            accept_rate: 50.0,
            accept_burst: 100.0,
            secrets: None,
            ipam: None,
            pod_cidr6: None,
            host_key: None,
            require_signed: false,
            ciphers: crate::cipher::offer(crate::cipher::CipherSetting::Auto, false),
        }
    }

    fn hello(&self) -> Hello {
        Hello {
            protocol: proto::PROTOCOL.into(),
            min_version: proto::MIN_VERSION,
            max_version: proto::MAX_VERSION,
            name: self.name.0,
            uid: self.uid,
            nickname: self.nickname.clone(),
            udp_port: self.udp_port,
            pod_mtu: self.pod_mtu,
            pod_cidr: self.ipam.as_ref().map(|i| i.cidr),
            pod_cidr6: self.pod_cidr6,
            block_prefix: self.ipam.as_ref().map(|i| i.block_prefix),
            key: None,
            sig: None,
            time_ms: None,
            ciphers: crate::cipher::offer_names(&self.ciphers),
        }
    }
}

struct ConnRecord {
    peer: Option<PeerInfo>,
    close: Arc<Notify>,
    /// Set before `close` is notified when a newer connection replaced this one: the goodbye
    /// says so ([`proto::GOODBYE_REPLACED`]).
    replaced: Arc<std::sync::atomic::AtomicBool>,
    since: Instant,
    tx: mpsc::Sender<Message>,
    /// When we last dialled to replace this connection with one on the preferred secret.
    rehandshake_at: Option<Instant>,
}

struct TargetRecord {
    state: TargetState,
    failures: u32,
    next_at: Option<Instant>,
    stop: Arc<Notify>,
    /// The peer gossip told us about, for a discovered target.
    discovered: Option<PeerName>,
}

struct Inner {
    mesh: Mesh,
    core: GossipCore,
    /// Gossip messages dropped because a connection's queue was full (anti-entropy repairs).
    gossip_dropped: u64,
    conns: HashMap<ConnId, ConnRecord>,
    targets: HashMap<SocketAddr, TargetRecord>,
    next_id: ConnId,
    /// Cluster IPAM, when configured.
    ipam: Option<Ipam>,
    /// When the IPAM reachability was last refreshed from the topology.
    ipam_reach_at: Option<Instant>,
}

struct Shared {
    cfg: Config,
    /// Connections open now (handshaking or established).
    open: AtomicUsize,
    /// Inbound connections refused by the limits.
    refused: AtomicU64,
    /// Inbound connections refused after they spoke (handshake failures), per remote IP.
    refused_peers: Mutex<HashMap<std::net::IpAddr, (String, u64, Instant)>>,
    inner: Mutex<Inner>,
    events: mpsc::UnboundedSender<Event>,
    shutdown: Notify,
    /// Woken whenever the IPAM state machine has run.
    ipam_changed: Notify,
    /// Serializes `ipam_claim` callers: one claim at a time per host.
    ipam_claim_lock: tokio::sync::Mutex<()>,
    /// The secrets in force (`cfg.secrets` until [`Gossip::set_secrets`]).
    keyring: Mutex<Option<Keyring>>,
    /// Fingerprints of secrets removed from the keyring during this run, to say so when a peer
    /// still offers one.
    retired: Mutex<Vec<Fingerprint>>,
}

impl Inner {
    /// The ids of the connections the mesh holds as current.
    fn mesh_ids(&self) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(id, c)| {
                c.peer
                    .as_ref()
                    .and_then(|p| self.mesh.get(p.name))
                    .is_some_and(|m| m.id == **id)
            })
            .map(|(id, _)| *id)
            .collect()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The secrets in force now.
    fn keyring(&self) -> Option<Keyring> {
        self.keyring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_target(
        &self,
        addr: SocketAddr,
        state: TargetState,
        failures: u32,
        next_at: Option<Instant>,
    ) {
        if let Some(t) = self.lock().targets.get_mut(&addr) {
            t.state = state;
            t.failures = failures;
            t.next_at = next_at;
        }
    }
}

/// Carries out what the gossip core asked for. Called with the lock held.
fn dispatch(shared: &Arc<Shared>, inner: &mut Inner, out: Vec<Output>) {
    let mut changed = false;
    for o in out {
        match o {
            Output::Send { to, msg } => {
                let sent = inner
                    .mesh
                    .get(to)
                    .and_then(|c| inner.conns.get(&c.id))
                    .map(|c| c.tx.try_send(Message::Gossip(msg)).is_ok());
                if sent != Some(true) {
                    inner.gossip_dropped += 1;
                }
            }
            Output::Changed => changed = true,
        }
    }
    if changed {
        discover(shared, inner);
        let _ = shared.events.send(Event::Topology);
    }
}
