//! The tokio driver: dials the seed list, accepts connections, runs the handshake and heartbeats,
//! and reports peers coming and going. All decisions are taken by [`crate::mesh`], the gossip core
//! and the IPAM state machine ([`crate::ipam::Ipam`]); this module only moves bytes, keeps time and
//! writes the IPAM state file.

use crate::core::{GossipCore, Output};
use crate::ipam::{Block, ClaimState, Ipam, IpamError, IpamOut, IpamState, IpamStatus};
use crate::mesh::{self, Admitted, ConnId, Mesh};
use crate::proto::{self, Hello, Message};
use crate::secure::{self, DataKeys, Handshake, Mode, Secret, Transport};
use crate::topology::{ConnEntry, PeerRecord};
use crate::{Error, PeerName};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
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
    /// The cluster secret: with it every connection is authenticated and encrypted (Noise), and
    /// each peer gets data keys.
    pub secret: Option<Arc<Secret>>,
    /// Cluster IPAM (`--pod-cidr`): off when `None`.
    pub ipam: Option<crate::ipam::IpamConfig>,
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
            secret: None,
            ipam: None,
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
            block_prefix: self.ipam.as_ref().map(|i| i.block_prefix),
        }
    }
}

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
    /// Data keys from the handshake (encrypted clusters only).
    pub keys: Option<DataKeys>,
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
        /// [`Message::Rekey`], [`Message::RekeyAck`] or [`Message::Probe`].
        msg: Message,
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
}

struct ConnRecord {
    peer: Option<PeerInfo>,
    close: Arc<Notify>,
    since: Instant,
    tx: mpsc::Sender<Message>,
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
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
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

/// A running control plane.
#[derive(Clone)]
pub struct Gossip {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl Gossip {
    /// Binds the listener and starts dialling the seeds. Peers are reported on `events`.
    pub async fn start(cfg: Config, events: mpsc::UnboundedSender<Event>) -> Result<Gossip, Error> {
        let listener = TcpListener::bind(cfg.listen).await?;
        let local_addr = listener.local_addr()?;
        let seeds = cfg.seeds.clone();
        let version = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1)
            .max(1);
        let ours = PeerRecord::new(cfg.name, cfg.uid, version, cfg.nickname.clone());
        let ipam = match &cfg.ipam {
            Some(icfg) => {
                let state = match &icfg.state_file {
                    Some(path) => load_ipam_state(path)?,
                    None => None,
                };
                Some(
                    Ipam::new(
                        cfg.name,
                        cfg.nickname.clone(),
                        icfg.clone(),
                        state,
                        Instant::now(),
                    )
                    .map_err(Error::IpamConfig)?,
                )
            }
            None => None,
        };
        let core = GossipCore::new(
            ours,
            cfg.uid,
            crate::core::DEFAULT_ANTI_ENTROPY_INTERVAL,
            Instant::now(),
        );
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                mesh: Mesh::new(cfg.name, cfg.uid),
                core,
                gossip_dropped: 0,
                conns: HashMap::new(),
                targets: HashMap::new(),
                next_id: 1,
                ipam,
                ipam_reach_at: None,
            }),
            cfg,
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            refused_peers: Mutex::new(HashMap::new()),
            events,
            shutdown: Notify::new(),
            ipam_changed: Notify::new(),
            ipam_claim_lock: tokio::sync::Mutex::new(()),
        });
        {
            // Persist the loaded state at once (its version moved on).
            let mut inner = shared.lock();
            if let Some(out) = inner.ipam.as_mut().map(|i| i.tick(Instant::now())) {
                dispatch_ipam(&shared, &mut inner, out);
            }
        }
        let g = Gossip { shared, local_addr };
        tokio::spawn(accept_loop(g.shared.clone(), listener));
        tokio::spawn(tick_loop(g.shared.clone()));
        for s in seeds {
            g.connect(s);
        }
        Ok(g)
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Adds `addr` to the dial targets (no-op if present; a failed target is retried at once).
    pub fn connect(&self, addr: SocketAddr) {
        add_target(&self.shared, addr, None);
    }

    /// Removes `addr` from the dial targets; an established connection to it stays up.
    pub fn forget(&self, addr: SocketAddr) -> bool {
        match self.shared.lock().targets.remove(&addr) {
            Some(t) => {
                t.stop.notify_one();
                true
            }
            None => false,
        }
    }

    /// The dial targets and their states.
    pub fn targets(&self) -> Vec<TargetStatus> {
        let now = Instant::now();
        let inner = self.shared.lock();
        let mut out: Vec<_> = inner
            .targets
            .iter()
            .map(|(addr, t)| {
                let mut state = t.state.clone();
                if let (
                    TargetState::Retrying {
                        next_attempt_in_ms, ..
                    },
                    Some(at),
                ) = (&mut state, t.next_at)
                {
                    *next_attempt_in_ms = at.saturating_duration_since(now).as_millis() as u64;
                }
                TargetStatus {
                    addr: addr.to_string(),
                    state,
                    failures: t.failures,
                    discovered: t.discovered.is_some(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.addr.cmp(&b.addr));
        out
    }

    /// The live connections.
    pub fn connections(&self) -> Vec<ConnectionStatus> {
        let inner = self.shared.lock();
        let mut out: Vec<_> = inner
            .conns
            .values()
            .filter_map(|c| {
                let p = c.peer.as_ref()?;
                inner.mesh.get(p.name)?;
                Some(ConnectionStatus {
                    peer: p.name.to_string(),
                    nickname: p.nickname.clone(),
                    addr: p.tcp_addr.to_string(),
                    outbound: p.outbound,
                    version: p.version,
                    established_secs: c.since.elapsed().as_secs(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.peer.cmp(&b.peer));
        out
    }

    /// Sends a control message to the connected `peer`; false if it is not connected or its
    /// queue is full.
    pub fn send_to(&self, peer: PeerName, msg: Message) -> bool {
        let inner = self.shared.lock();
        inner
            .mesh
            .get(peer)
            .and_then(|c| inner.conns.get(&c.id))
            .is_some_and(|c| c.tx.try_send(msg).is_ok())
    }

    /// Addresses whose inbound connections we refused after they spoke (failed handshakes).
    pub fn refused_peers(&self) -> Vec<RefusedStatus> {
        let refused = self
            .shared
            .refused_peers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = refused
            .iter()
            .map(|(ip, (reason, count, last))| RefusedStatus {
                addr: ip.to_string(),
                reason: reason.clone(),
                count: *count,
                last_secs: last.elapsed().as_secs(),
            })
            .collect();
        out.sort_by(|a, b| a.addr.cmp(&b.addr));
        out
    }

    /// Tells the gossip core whether the data path to the connected `peer` works.
    pub fn set_usable(&self, peer: PeerName, usable: bool) {
        let mut inner = self.shared.lock();
        let out = inner.core.set_usable(Instant::now(), peer, usable);
        dispatch(&self.shared, &mut inner, out);
    }

    /// The data plane routes over the current topology.
    pub fn routes(&self) -> RoutesSnapshot {
        let inner = self.shared.lock();
        let topo = inner.core.topology();
        let routes = inner.core.routes();
        let me = topo.our_name();
        let nick = |p: PeerName| topo.get(p).map(|r| r.nickname.clone()).unwrap_or_default();
        let reachable: Vec<PeerName> = routes
            .reachable()
            .into_iter()
            .filter(|p| *p != me)
            .collect();
        let next_hops = reachable
            .iter()
            .filter_map(|p| Some((*p, routes.next_hop(*p)?)))
            .collect();
        let children = std::iter::once(me)
            .chain(reachable.iter().copied())
            .map(|src| (src, routes.broadcast_children(src)))
            .filter(|(_, kids)| !kids.is_empty())
            .collect();
        RoutesSnapshot {
            peers: reachable.iter().map(|p| (*p, nick(*p))).collect(),
            next_hops,
            children,
            known: topo
                .records()
                .filter(|r| r.name != me)
                .map(|r| (r.name, r.nickname.clone()))
                .collect(),
        }
    }

    /// Gossip counters: messages sent by kind, records, and messages dropped on full queues.
    pub fn gossip_stats(&self) -> (crate::core::Stats, usize, u64) {
        let inner = self.shared.lock();
        (
            inner.core.stats().clone(),
            inner.core.topology().len(),
            inner.gossip_dropped,
        )
    }

    /// Inbound connections refused by the connection limit or the accept rate limit.
    pub fn refused_connections(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Blocks of the pod CIDR this host holds (agreed by a majority). Empty when IPAM is off.
    pub fn ipam_blocks(&self) -> Vec<crate::ipam::Block> {
        self.shared
            .lock()
            .ipam
            .as_ref()
            .map(|i| i.held())
            .unwrap_or_default()
    }

    /// Blocks this host lost because the cluster reclaimed them while it was unreachable for
    /// longer than the grace period (addresses in them must not be used any more).
    pub fn ipam_lost(&self) -> Vec<crate::ipam::Block> {
        self.shared
            .lock()
            .ipam
            .as_ref()
            .map(|i| i.lost().to_vec())
            .unwrap_or_default()
    }

    /// Claims one more block and returns it once a majority of the cluster has agreed, or an
    /// error when that cannot happen within `timeout` (the claim is then withdrawn).
    ///
    /// Callers are served one at a time: each call claims a new block, so a caller that waited
    /// should check whether it still needs one.
    pub async fn ipam_claim(
        &self,
        timeout: Duration,
    ) -> Result<crate::ipam::Block, crate::ipam::IpamError> {
        if self.shared.cfg.ipam.is_none() {
            return Err(IpamError::Disabled);
        }
        let _one_at_a_time = self.shared.ipam_claim_lock.lock().await;
        let deadline = Instant::now() + timeout;
        let mut current: Option<Block> = None;
        loop {
            let changed = self.shared.ipam_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut inner = self.shared.lock();
                let Some(ipam) = inner.ipam.as_mut() else {
                    return Err(IpamError::Disabled);
                };
                let now = Instant::now();
                let b = match current {
                    Some(b) => b,
                    None => {
                        let (b, out) = ipam.claim(now)?;
                        current = Some(b);
                        dispatch_ipam(&self.shared, &mut inner, out);
                        b
                    }
                };
                let ipam = inner.ipam.as_mut().expect("checked above");
                match ipam.claim_state(b) {
                    ClaimState::Held => return Ok(b),
                    ClaimState::Pending if now >= deadline => {
                        let (have, need) = ipam.quorum();
                        let out = ipam.withdraw(now, b);
                        let held = ipam.claim_state(b) == ClaimState::Held;
                        dispatch_ipam(&self.shared, &mut inner, out);
                        if held {
                            return Ok(b);
                        }
                        return Err(IpamError::NoQuorum { have, need });
                    }
                    ClaimState::Pending => {}
                    // Someone else won it: try another block.
                    ClaimState::Gone => {
                        current = None;
                        if now >= deadline {
                            let (have, need) = ipam.quorum();
                            return Err(IpamError::NoQuorum { have, need });
                        }
                        continue;
                    }
                }
            }
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200));
            let _ = tokio::time::timeout(wait, changed).await;
        }
    }

    /// Hands a block back to the cluster at once (the caller no longer uses any address in it).
    pub fn ipam_release(&self, block: crate::ipam::Block) {
        let mut inner = self.shared.lock();
        if let Some(out) = inner
            .ipam
            .as_mut()
            .map(|i| i.release(Instant::now(), block))
        {
            dispatch_ipam(&self.shared, &mut inner, out);
        }
    }

    /// Leaves the cluster cleanly: hands every block back, tells the peers this host is gone for
    /// good (so it no longer counts for majorities) and waits up to `timeout` for a neighbour to
    /// have heard it.
    pub async fn ipam_leave(&self, timeout: Duration) {
        {
            let mut inner = self.shared.lock();
            let Some(out) = inner.ipam.as_mut().map(|i| i.leave(Instant::now())) else {
                return;
            };
            dispatch_ipam(&self.shared, &mut inner, out);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.shared.ipam_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let inner = self.shared.lock();
                let acked = inner.ipam.as_ref().is_some_and(|i| i.leave_acked());
                if acked || inner.mesh.is_empty() || Instant::now() >= deadline {
                    return;
                }
            }
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200));
            let _ = tokio::time::timeout(wait, changed).await;
        }
    }

    /// What `weft status` shows about IPAM; `None` when IPAM is off.
    pub fn ipam_status(&self) -> Option<IpamStatus> {
        let inner = self.shared.lock();
        inner.ipam.as_ref().map(|i| i.status(Instant::now()))
    }

    /// Says goodbye on every connection and stops dialling.
    pub async fn shutdown(&self) {
        self.shared.shutdown.notify_waiters();
        let closes: Vec<_> = {
            let inner = self.shared.lock();
            for t in inner.targets.values() {
                t.stop.notify_one();
            }
            inner.conns.values().map(|c| c.close.clone()).collect()
        };
        for c in closes {
            c.notify_one();
        }
        // Give the connection tasks a moment to flush their goodbyes.
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline && !self.shared.lock().conns.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Adds a dial target and starts its connector (a failed one is restarted).
fn add_target(shared: &Arc<Shared>, addr: SocketAddr, discovered: Option<PeerName>) {
    let mut inner = shared.lock();
    if let Some(t) = inner.targets.get_mut(&addr) {
        if discovered.is_none() {
            // An operator's `connect` makes a discovered target a seed.
            t.discovered = None;
        }
        if !matches!(t.state, TargetState::Failed { .. }) {
            return;
        }
        t.stop.notify_one();
    }
    start_target(shared, &mut inner, addr, discovered);
}

/// Records a new dial target and starts its connector. Called with the lock held.
fn start_target(
    shared: &Arc<Shared>,
    inner: &mut Inner,
    addr: SocketAddr,
    discovered: Option<PeerName>,
) {
    let stop = Arc::new(Notify::new());
    inner.targets.insert(
        addr,
        TargetRecord {
            state: TargetState::Connecting,
            failures: 0,
            next_at: None,
            stop: stop.clone(),
            discovered,
        },
    );
    tokio::spawn(connector(shared.clone(), addr, stop));
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

/// Carries out what the IPAM state machine asked for, in order: persisting its state comes
/// before sending anything that reflects it. Called with the lock held.
fn dispatch_ipam(shared: &Arc<Shared>, inner: &mut Inner, out: Vec<IpamOut>) {
    for o in out {
        match o {
            IpamOut::Persist => {
                let (Some(path), Some(ipam)) = (
                    shared.cfg.ipam.as_ref().and_then(|c| c.state_file.as_ref()),
                    inner.ipam.as_ref(),
                ) else {
                    continue;
                };
                if let Err(e) = save_ipam_state(path, &ipam.state()) {
                    tracing::error!(path = %path.display(), "cannot save the IPAM state: {e}");
                }
            }
            IpamOut::Send { to, msg } => {
                let sent = inner
                    .mesh
                    .get(to)
                    .and_then(|c| inner.conns.get(&c.id))
                    .map(|c| c.tx.try_send(Message::Ipam(msg)).is_ok());
                if sent != Some(true) {
                    // Anti-entropy repairs it.
                    inner.gossip_dropped += 1;
                }
            }
        }
    }
    shared.ipam_changed.notify_waiters();
}

/// Reads a persisted IPAM state; `None` when the file does not exist.
fn load_ipam_state(path: &std::path::Path) -> Result<Option<IpamState>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::IpamConfig(format!(
                "the IPAM state file {} does not parse ({e}); move it away to start afresh \
                 (this host then forgets its blocks and votes)",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::IpamConfig(format!(
            "cannot read the IPAM state file {}: {e}",
            path.display()
        ))),
    }
}

/// Writes the IPAM state atomically: a temporary file, fsync, rename, fsync of the directory.
fn save_ipam_state(path: &std::path::Path, state: &IpamState) -> std::io::Result<()> {
    use std::io::Write;
    let json = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Dials every peer the topology names that we have no connection with (full mesh), and stops
/// dialling discovered peers that left the topology.
fn discover(shared: &Arc<Shared>, inner: &mut Inner) {
    let topo = inner.core.topology();
    let me = topo.our_name();
    let mut wanted: Vec<(PeerName, SocketAddr)> = Vec::new();
    for r in topo.records() {
        if r.name == me || inner.mesh.get(r.name).is_some() {
            continue;
        }
        let already = inner.targets.values().any(|t| t.discovered == Some(r.name));
        if already {
            continue;
        }
        // Where others reach it: the first address another peer reports for it.
        let addr = topo
            .records()
            .filter(|o| o.name != r.name)
            .find_map(|o| o.conn(r.name).map(|c| c.addr));
        if let Some(addr) = addr {
            if !inner.targets.contains_key(&addr) {
                wanted.push((r.name, addr));
            }
        }
    }
    let gone: Vec<SocketAddr> = inner
        .targets
        .iter()
        .filter(|(_, t)| t.discovered.is_some_and(|p| topo.get(p).is_none()))
        .map(|(a, _)| *a)
        .collect();
    for a in gone {
        if let Some(t) = inner.targets.remove(&a) {
            t.stop.notify_one();
        }
    }
    for (peer, addr) in wanted {
        tracing::info!(peer = %peer, %addr, "dialling a peer learnt from gossip");
        start_target(shared, inner, addr, Some(peer));
    }
}

/// Drives the gossip core's timers (anti-entropy, hold-downs).
async fn tick_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = shared.shutdown.notified() => return,
            _ = tick.tick() => {
                let mut inner = shared.lock();
                let now = Instant::now();
                let out = inner.core.tick(now);
                dispatch(&shared, &mut inner, out);
                if inner.ipam.is_some() {
                    let refresh = inner
                        .ipam_reach_at
                        .is_none_or(|t| now.duration_since(t) >= Duration::from_millis(500));
                    let out = if refresh {
                        inner.ipam_reach_at = Some(now);
                        let reachable = crate::routes::Routes::compute_connections(
                            inner.core.topology(),
                        )
                        .reachable()
                        .into_iter()
                        .collect();
                        inner.ipam.as_mut().map(|i| i.set_reachable(now, reachable))
                    } else {
                        inner.ipam.as_mut().map(|i| i.tick(now))
                    };
                    if let Some(mut out) = out {
                        if refresh {
                            if let Some(i) = inner.ipam.as_mut() {
                                out.extend(i.tick(now));
                            }
                        }
                        dispatch_ipam(&shared, &mut inner, out);
                    }
                }
            }
        }
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut tokens = shared.cfg.accept_burst;
    let mut last = Instant::now();
    let mut refused_logged: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shared.shutdown.notified() => return,
            r = listener.accept() => match r {
                Ok((stream, addr)) => {
                    let now = Instant::now();
                    tokens = (tokens + now.duration_since(last).as_secs_f64() * shared.cfg.accept_rate)
                        .min(shared.cfg.accept_burst);
                    last = now;
                    let open = shared.open.load(Ordering::Relaxed);
                    if tokens < 1.0 || open >= shared.cfg.max_connections {
                        shared.refused.fetch_add(1, Ordering::Relaxed);
                        if refused_logged.is_none_or(|t| now.duration_since(t) > Duration::from_secs(10)) {
                            tracing::warn!(%addr, open, "refusing inbound connections: accept rate or connection limit reached");
                            refused_logged = Some(now);
                        }
                        drop(stream);
                        continue;
                    }
                    tokens -= 1.0;
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        if let Err(e) = run_conn(&shared, stream, addr, false).await.into_result() {
                            // Logged once per address and reason, not once per attempt.
                            let reason = e.to_string();
                            let mut refused = shared
                                .refused_peers
                                .lock()
                                .unwrap_or_else(|p| p.into_inner());
                            let entry = refused
                                .entry(addr.ip())
                                .or_insert_with(|| (String::new(), 0, Instant::now()));
                            if entry.0 != reason {
                                tracing::warn!(%addr, "inbound connection refused: {reason}");
                                entry.0 = reason;
                            }
                            entry.1 += 1;
                            entry.2 = Instant::now();
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// How a connection ended.
enum Outcome {
    /// It failed before the handshake completed.
    Refused(Error),
    /// It was established, then ended for this reason.
    Ended(Error),
}

impl Outcome {
    fn into_result(self) -> Result<(), Error> {
        match self {
            Outcome::Refused(e) => Err(e),
            Outcome::Ended(_) => Ok(()),
        }
    }
}

async fn connector(shared: Arc<Shared>, addr: SocketAddr, stop: Arc<Notify>) {
    let mut failures = 0u32;
    let mut last_logged = String::new();
    loop {
        shared.set_target(addr, TargetState::Connecting, failures, None);
        let attempt = async {
            let stream =
                tokio::time::timeout(shared.cfg.handshake_timeout, TcpStream::connect(addr))
                    .await
                    .map_err(|_| Error::Closed("connect timed out".into()))
                    .and_then(|r| r.map_err(Error::Io));
            match stream {
                // A task of its own: stopping the connector (forget, shutdown) must not cut an
                // established connection without its goodbye.
                Ok(s) => {
                    let shared = shared.clone();
                    tokio::spawn(async move { run_conn(&shared, s, addr, true).await })
                        .await
                        .unwrap_or_else(|e| Outcome::Refused(Error::Closed(e.to_string())))
                }
                Err(e) => Outcome::Refused(e),
            }
        };
        let outcome = tokio::select! {
            _ = stop.notified() => return,
            o = attempt => o,
        };
        let err = match outcome {
            Outcome::Ended(e) => {
                failures = 0;
                e
            }
            Outcome::Refused(Error::Duplicate(peer)) => {
                // The peer's own connection to us won the tie-break: that is our link to it.
                shared.set_target(
                    addr,
                    TargetState::Established {
                        peer: peer.to_string(),
                    },
                    0,
                    None,
                );
                failures = 0;
                loop {
                    tokio::select! {
                        _ = stop.notified() => return,
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                    if shared.lock().mesh.get(peer).is_none() {
                        break;
                    }
                }
                continue;
            }
            Outcome::Refused(e) if e.is_permanent() => {
                tracing::warn!(%addr, "not dialling again: {e}");
                shared.set_target(
                    addr,
                    TargetState::Failed {
                        reason: e.to_string(),
                    },
                    failures + 1,
                    None,
                );
                stop.notified().await;
                return;
            }
            Outcome::Refused(e) => {
                failures += 1;
                e
            }
        };
        let reason = err.to_string();
        if reason != last_logged {
            tracing::warn!(%addr, "connection failed: {reason}");
            last_logged = reason.clone();
        } else {
            tracing::debug!(%addr, "connection failed again: {reason}");
        }
        let delay = mesh::backoff(failures.max(1), rand::random::<f64>());
        shared.set_target(
            addr,
            TargetState::Retrying {
                next_attempt_in_ms: delay.as_millis() as u64,
                last_error: reason,
            },
            failures,
            Some(Instant::now() + delay),
        );
        tokio::select! {
            _ = stop.notified() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// How messages are framed on one connection: length prefix, then JSON in clear or sealed by
/// the Noise transport.
#[derive(Clone)]
enum Codec {
    Plain,
    Noise(Arc<Mutex<Transport>>),
}

impl Codec {
    fn encode(&self, msg: &Message) -> Result<Vec<u8>, Error> {
        match self {
            Codec::Plain => Ok(proto::encode(msg)),
            Codec::Noise(t) => {
                let json = serde_json::to_vec(msg).map_err(|e| Error::Malformed(e.to_string()))?;
                let sealed = t.lock().unwrap_or_else(|p| p.into_inner()).seal(&json)?;
                Ok(frame(&sealed))
            }
        }
    }

    async fn read(&self, rd: &mut OwnedReadHalf) -> Result<Message, Error> {
        match self {
            Codec::Plain => {
                let body = read_frame(rd, proto::MAX_MESSAGE_LEN).await?;
                proto::decode_body(&body)
            }
            Codec::Noise(t) => {
                let sealed = read_frame(rd, secure::NOISE_MAX).await?;
                let json = t.lock().unwrap_or_else(|p| p.into_inner()).open(&sealed)?;
                proto::decode_body(&json)
            }
        }
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

async fn read_frame(rd: &mut OwnedReadHalf, max: usize) -> Result<Vec<u8>, Error> {
    let mut prefix = [0u8; 4];
    rd.read_exact(&mut prefix).await?;
    let len = proto::decode_len(prefix)?;
    if len > max {
        return Err(Error::MessageTooLarge(len));
    }
    let mut body = vec![0u8; len];
    rd.read_exact(&mut body).await?;
    Ok(body)
}

/// The preamble and, with a secret, the Noise handshake: returns the message codec and the data
/// keys.
async fn secure_channel(
    shared: &Shared,
    rd: &mut OwnedReadHalf,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    outbound: bool,
) -> Result<(Codec, Option<DataKeys>), Error> {
    let mode = if shared.cfg.secret.is_some() {
        Mode::Noise
    } else {
        Mode::Plain
    };
    wr.write_all(&secure::preamble(mode)).await?;
    let mut pre = [0u8; 8];
    rd.read_exact(&mut pre).await?;
    let theirs = secure::parse_preamble(pre)?;
    if theirs != mode {
        return Err(Error::EncryptionMismatch {
            ours: mode.describe(),
            theirs: theirs.describe(),
        });
    }
    let Some(secret) = &shared.cfg.secret else {
        return Ok((Codec::Plain, None));
    };
    let mut hs = Handshake::new(secret, outbound)?;
    let closed = |_| {
        Error::AuthFailed(
            "the peer closed the connection during the handshake: it has a different secret".into(),
        )
    };
    if outbound {
        wr.write_all(&frame(&hs.write()?)).await?;
        let m2 = read_frame(rd, 1024).await.map_err(closed)?;
        hs.read(&m2)?;
    } else {
        let m1 = read_frame(rd, 1024).await?;
        hs.read(&m1)?;
        wr.write_all(&frame(&hs.write()?)).await?;
    }
    let (t, keys) = hs.finish(secret)?;
    Ok((Codec::Noise(Arc::new(Mutex::new(t))), Some(keys)))
}

/// Counts a connection as open for as long as it lives.
struct OpenGuard<'a>(&'a AtomicUsize);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn run_conn(
    shared: &Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    outbound: bool,
) -> Outcome {
    shared.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(&shared.open);
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let ours = shared.cfg.hello();
    let handshake = async {
        let (codec, keys) = secure_channel(shared, &mut rd, &mut wr, outbound).await?;
        wr.write_all(&codec.encode(&Message::Hello(ours.clone()))?)
            .await?;
        match codec.read(&mut rd).await? {
            Message::Hello(h) => Ok((h, codec, keys)),
            Message::Goodbye { reason } => Err(Error::Goodbye(reason)),
            _ => Err(Error::Protocol("expected hello")),
        }
    };
    let (theirs, codec, keys) =
        match tokio::time::timeout(shared.cfg.handshake_timeout, handshake).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return Outcome::Refused(e),
            Err(_) => return Outcome::Refused(Error::Closed("handshake timed out".into())),
        };
    let version = match proto::negotiate(&ours, &theirs) {
        Ok(v) => v,
        Err(e) => return refuse(&mut wr, &codec, e).await,
    };
    if let Err(e) = ours.check_ipam(&theirs) {
        return refuse(&mut wr, &codec, e).await;
    }
    let name = theirs.peer_name();
    let info = PeerInfo {
        name,
        uid: theirs.uid,
        nickname: theirs.nickname.clone(),
        tcp_addr: addr,
        udp_addr: SocketAddr::new(addr.ip(), theirs.udp_port),
        pod_mtu: theirs.pod_mtu,
        version,
        outbound,
        keys,
    };
    let close = Arc::new(Notify::new());
    let (tx, mut rx) = mpsc::channel::<Message>(1024);
    // Where other peers can reach this one: the address we dialled, or its address as seen
    // with the port it listens on.
    let dial_addr = if outbound {
        addr
    } else {
        SocketAddr::new(addr.ip(), theirs.udp_port)
    };
    let admitted = (|| {
        let mut inner = shared.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        match inner.mesh.admit(id, &theirs, outbound) {
            Ok(Admitted::New) => {}
            Ok(Admitted::Replaces { old }) => {
                if let Some(c) = inner.conns.get(&old) {
                    c.close.notify_one();
                }
            }
            Err(e) => return Err(e),
        }
        inner.conns.insert(
            id,
            ConnRecord {
                peer: Some(info.clone()),
                close: close.clone(),
                since: Instant::now(),
                tx: tx.clone(),
            },
        );
        if outbound {
            if let Some(t) = inner.targets.get_mut(&addr) {
                t.state = TargetState::Established {
                    peer: name.to_string(),
                };
                t.failures = 0;
                t.next_at = None;
            }
        }
        let _ = shared.events.send(Event::Up(info.clone()));
        let entry = ConnEntry {
            peer: name,
            addr: dial_addr,
            usable: false,
        };
        let out = inner.core.connected(Instant::now(), name, entry);
        dispatch(shared, &mut inner, out);
        if let Some(out) = inner
            .ipam
            .as_mut()
            .map(|i| i.connected(Instant::now(), name))
        {
            dispatch_ipam(shared, &mut inner, out);
        }
        Ok(id)
    })();
    let id = match admitted {
        Ok(id) => id,
        Err(e) => return refuse(&mut wr, &codec, e).await,
    };
    tracing::info!(peer = %name, nickname = %info.nickname, %addr, outbound, "connected");

    // Writes go through a task of their own so that a heartbeat never interrupts a read.
    let heartbeat = shared.cfg.heartbeat;
    let wcodec = codec.clone();
    let writer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(heartbeat);
        loop {
            let msg = tokio::select! {
                m = rx.recv() => match m { Some(m) => m, None => break },
                _ = tick.tick() => Message::Heartbeat,
            };
            let last = matches!(msg, Message::Goodbye { .. });
            let Ok(bytes) = wcodec.encode(&msg) else {
                break;
            };
            if wr.write_all(&bytes).await.is_err() || last {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });

    let reason = loop {
        let msg = tokio::select! {
            _ = close.notified() => {
                let _ = tx.send(Message::Goodbye { reason: "closing".into() }).await;
                break Error::Closed("closed locally".into());
            }
            m = tokio::time::timeout(shared.cfg.dead_after, codec.read(&mut rd)) => m,
        };
        match msg {
            Err(_) => {
                break Error::Closed(format!(
                    "no heartbeat for {} ms",
                    shared.cfg.dead_after.as_millis()
                ))
            }
            Ok(Err(Error::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break Error::Closed("connection closed by peer".into())
            }
            Ok(Err(e)) => {
                let _ = tx
                    .send(Message::Goodbye {
                        reason: e.to_string(),
                    })
                    .await;
                break e;
            }
            Ok(Ok(Message::Heartbeat)) => {}
            Ok(Ok(Message::Gossip(g))) => {
                let mut inner = shared.lock();
                let out = inner.core.on_message(Instant::now(), name, g);
                dispatch(shared, &mut inner, out);
            }
            Ok(Ok(Message::Ipam(m))) => {
                let mut inner = shared.lock();
                if let Some(out) = inner
                    .ipam
                    .as_mut()
                    .map(|i| i.on_message(Instant::now(), name, m))
                {
                    dispatch_ipam(shared, &mut inner, out);
                }
            }
            Ok(Ok(Message::Goodbye { reason })) => break Error::Goodbye(reason),
            Ok(Ok(
                msg @ (Message::Rekey { .. } | Message::RekeyAck { .. } | Message::Probe { .. }),
            )) => {
                let _ = shared.events.send(Event::Control { from: name, msg });
            }
            Ok(Ok(Message::Hello(_))) => {
                let e = Error::Protocol("second hello");
                let _ = tx
                    .send(Message::Goodbye {
                        reason: e.to_string(),
                    })
                    .await;
                break e;
            }
        }
    };
    drop(tx);
    {
        let mut inner = shared.lock();
        // Dropping the record drops the last sender: the writer flushes and ends.
        inner.conns.remove(&id);
        if inner.mesh.remove(name, id) {
            tracing::info!(peer = %name, "disconnected: {reason}");
            let _ = shared.events.send(Event::Down {
                name,
                reason: reason.to_string(),
            });
            let out = inner.core.disconnected(Instant::now(), name);
            dispatch(shared, &mut inner, out);
            if let Some(out) = inner
                .ipam
                .as_mut()
                .map(|i| i.disconnected(Instant::now(), name))
            {
                dispatch_ipam(shared, &mut inner, out);
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), writer).await;
    Outcome::Ended(reason)
}

async fn refuse(wr: &mut tokio::net::tcp::OwnedWriteHalf, codec: &Codec, e: Error) -> Outcome {
    if let Ok(bytes) = codec.encode(&Message::Goodbye {
        reason: e.to_string(),
    }) {
        let _ = wr.write_all(&bytes).await;
    }
    let _ = wr.shutdown().await;
    Outcome::Refused(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: u64) -> Config {
        let mut c = Config::new(
            PeerName(name),
            name * 100,
            format!("h{name}"),
            "127.0.0.1:0".parse().unwrap(),
        );
        c.heartbeat = Duration::from_millis(100);
        c.dead_after = Duration::from_millis(600);
        c
    }

    /// The next peer event (up or down), skipping topology notifications.
    async fn next_event(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
        loop {
            let e = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("event within 5 s")
                .expect("channel open");
            if e != Event::Topology {
                return e;
            }
        }
    }

    fn no_peer_went_down(rx: &mut mpsc::UnboundedReceiver<Event>) {
        while let Ok(e) = rx.try_recv() {
            assert!(!matches!(e, Event::Down { .. }), "{e:?}");
        }
    }

    #[tokio::test]
    async fn two_peers_connect_and_see_each_other_leave() {
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        let g1 = Gossip::start(cfg(1), tx1).await.unwrap();
        let mut c2 = cfg(2);
        c2.seeds = vec![g1.local_addr()];
        let g2 = Gossip::start(c2, tx2).await.unwrap();
        let Event::Up(p) = next_event(&mut rx1).await else {
            panic!()
        };
        assert_eq!(p.name, PeerName(2));
        assert!(!p.outbound);
        let Event::Up(p) = next_event(&mut rx2).await else {
            panic!()
        };
        assert_eq!(p.name, PeerName(1));
        assert_eq!(
            g2.targets()[0].state,
            TargetState::Established {
                peer: PeerName(1).to_string()
            }
        );
        assert_eq!(g1.connections().len(), 1);
        g2.shutdown().await;
        let Event::Down { name, reason } = next_event(&mut rx1).await else {
            panic!()
        };
        assert_eq!(name, PeerName(2));
        assert!(reason.contains("closing"), "{reason}");
    }

    #[tokio::test]
    async fn self_connection_fails_once_and_is_not_retried() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let g = Gossip::start(cfg(1), tx).await.unwrap();
        g.connect(g.local_addr());
        let mut state = None;
        for _ in 0..100 {
            let t = g.targets();
            if matches!(t[0].state, TargetState::Failed { .. }) {
                state = Some(t[0].clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let state = state.expect("target fails");
        assert!(format!("{:?}", state.state).contains("self"));
        assert!(g.connections().is_empty());
    }

    #[tokio::test]
    async fn garbage_on_the_control_port_closes_only_that_connection() {
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let (tx2, _rx2) = mpsc::unbounded_channel();
        let g1 = Gossip::start(cfg(1), tx1).await.unwrap();
        let mut c2 = cfg(2);
        c2.seeds = vec![g1.local_addr()];
        let _g2 = Gossip::start(c2, tx2).await.unwrap();
        assert!(matches!(next_event(&mut rx1).await, Event::Up(_)));
        for junk in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            &[0xff, 0xff, 0xff, 0xff, 1, 2][..],
        ] {
            let mut s = TcpStream::connect(g1.local_addr()).await.unwrap();
            s.write_all(junk).await.unwrap();
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
        }
        // The real peer is still connected after its heartbeats kept flowing.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(g1.connections().len(), 1);
        no_peer_went_down(&mut rx1);
    }

    #[tokio::test]
    async fn a_chain_of_seeds_becomes_a_full_mesh_through_gossip() {
        let mut gs = Vec::new();
        let mut rxs = Vec::new();
        for i in 1..=4u64 {
            let (tx, rx) = mpsc::unbounded_channel();
            let mut c = cfg(i);
            if let Some(prev) = gs.last() {
                c.seeds = vec![Gossip::local_addr(prev)];
            }
            gs.push(Gossip::start(c, tx).await.unwrap());
            rxs.push(rx);
        }
        let mut ok = false;
        for _ in 0..200 {
            if gs.iter().all(|g| g.connections().len() == 3) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            ok,
            "{:?}",
            gs.iter().map(|g| g.connections().len()).collect::<Vec<_>>()
        );
        // Every peer knows every other one, and the discovered targets are marked as such.
        for g in &gs {
            assert_eq!(g.routes().known.len(), 3);
        }
        assert!(gs.iter().any(|g| g.targets().iter().any(|t| t.discovered)));
    }

    fn with_secret(mut c: Config, s: &str) -> Config {
        c.secret = Some(Arc::new(Secret::from_bytes(s.as_bytes()).unwrap()));
        c
    }

    async fn target_error(g: &Gossip) -> String {
        for _ in 0..200 {
            if let Some(t) = g.targets().first() {
                match &t.state {
                    TargetState::Retrying { last_error, .. } => return last_error.clone(),
                    TargetState::Failed { reason } => return reason.clone(),
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no failure: {:?}", g.targets());
    }

    #[tokio::test]
    async fn peers_with_the_same_secret_connect_and_share_data_keys() {
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        let g1 = Gossip::start(with_secret(cfg(1), "a cluster secret of some length"), tx1)
            .await
            .unwrap();
        let mut c2 = with_secret(cfg(2), "a cluster secret of some length");
        c2.seeds = vec![g1.local_addr()];
        let _g2 = Gossip::start(c2, tx2).await.unwrap();
        let Event::Up(p1) = next_event(&mut rx1).await else {
            panic!()
        };
        let Event::Up(p2) = next_event(&mut rx2).await else {
            panic!()
        };
        let (k1, k2) = (p1.keys.unwrap(), p2.keys.unwrap());
        assert_eq!(k1.send, k2.recv);
        assert_eq!(k1.recv, k2.send);
        // Control messages flow (gossip, rekey) through the encrypted channel.
        assert!(g1.send_to(PeerName(2), Message::RekeyAck { epoch: 3 }));
        loop {
            match next_any(&mut rx2).await {
                Event::Control { from, msg } => {
                    assert_eq!(from, PeerName(1));
                    assert_eq!(msg, Message::RekeyAck { epoch: 3 });
                    break;
                }
                _ => continue,
            }
        }
    }

    async fn next_any(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("event within 5 s")
            .expect("channel open")
    }

    #[tokio::test]
    async fn a_wrong_secret_or_no_secret_is_refused_with_a_clear_reason() {
        let (tx1, _rx1) = mpsc::unbounded_channel();
        let g1 = Gossip::start(with_secret(cfg(1), "a cluster secret of some length"), tx1)
            .await
            .unwrap();
        for (c2, want) in [
            (
                with_secret(cfg(2), "another secret, also long"),
                "authentication failed",
            ),
            (cfg(3), "encryption mismatch"),
        ] {
            let (tx2, _rx2) = mpsc::unbounded_channel();
            let mut c2 = c2;
            c2.seeds = vec![g1.local_addr()];
            let g2 = Gossip::start(c2, tx2).await.unwrap();
            let err = target_error(&g2).await;
            assert!(err.contains(want), "{err}");
            assert!(g1.connections().is_empty());
            // The refusing side records it too, once per address.
            let mut seen = false;
            for _ in 0..100 {
                if g1.refused_peers().iter().any(|r| r.reason.contains(want)) {
                    seen = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(seen, "{:?}", g1.refused_peers());
            g2.shutdown().await;
        }
    }

    #[tokio::test]
    async fn connection_limit_refuses_extra_connections() {
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let (tx2, _rx2) = mpsc::unbounded_channel();
        let mut c1 = cfg(1);
        c1.max_connections = 1;
        let g1 = Gossip::start(c1, tx1).await.unwrap();
        let mut c2 = cfg(2);
        c2.seeds = vec![g1.local_addr()];
        let _g2 = Gossip::start(c2, tx2).await.unwrap();
        assert!(matches!(next_event(&mut rx1).await, Event::Up(_)));
        // A third party gets closed at once, without even a hello.
        let mut s = TcpStream::connect(g1.local_addr()).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
            .await
            .expect("closed promptly")
            .ok();
        assert!(buf.is_empty(), "no hello for a refused connection");
        assert_eq!(g1.refused_connections(), 1);
        assert_eq!(g1.connections().len(), 1);
    }

    #[tokio::test]
    async fn simultaneous_dials_leave_one_connection() {
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        let g1 = Gossip::start(cfg(1), tx1).await.unwrap();
        let g2 = Gossip::start(cfg(2), tx2).await.unwrap();
        g1.connect(g2.local_addr());
        g2.connect(g1.local_addr());
        assert!(matches!(next_event(&mut rx1).await, Event::Up(_)));
        assert!(matches!(next_event(&mut rx2).await, Event::Up(_)));
        let mut ok = false;
        for _ in 0..100 {
            let est = |g: &Gossip| {
                g.targets()
                    .iter()
                    .all(|t| matches!(t.state, TargetState::Established { .. }))
            };
            if g1.connections().len() == 1 && g2.connections().len() == 1 && est(&g1) && est(&g2) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ok, "{:?} {:?}", g1.targets(), g2.targets());
        // No flapping: nobody went down.
        no_peer_went_down(&mut rx1);
    }
}
