//! `weft router`: the host daemon. Sets up the bridge and the TAP port, starts the data plane
//! threads and the control plane (and pod IPAM, [`crate::ipam`], with `--pod-cidr`), serves the
//! local API, and tears down what it owns on exit.

use crate::dataplane::{Dataplane, Fabric, PeerCounters, PeerEntry, Reason, Shared};
use crate::fastpath::{FastPath, FastPathConfig, PathMode, PeerPath, ProbePolicy, SetupOutcome};
use crate::ipam::{self, Ipam};
use crate::ipam_api::{AllocateRequest, Attachment, GcRequest, IpamReport};
use crate::netlink::{LinkCounters, Netlink};
use crate::status::{MacReport, PeerReport, Report};
use crate::sys::tap::Tap;
use crate::{api, metrics, state};
use anyhow::{bail, Context, Result};
use axum::extract::State;
use axum::routing::{get, post};
use axum::Json;
use gossip::driver::{self, Event, Gossip, PeerInfo, RoutesSnapshot};
use gossip::proto::Message;
use gossip::secure::Secret;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use vswitch::{Fdb, Key, Location, PeerName, RekeyPolicy, Session, Switch};

/// The default control (TCP) and data (UDP) port.
pub const DEFAULT_PORT: u16 = 6783;
/// MTU given to the TAP port: large, so that a frame too big for the overlay still reaches the
/// router, which counts it and answers with ICMP, instead of being dropped by the bridge unseen.
const TAP_MTU: u32 = 65_000;

/// Everything `weft router` is told.
#[derive(Debug, Clone)]
pub struct Config {
    /// Nickname (default: the host name).
    pub nickname: String,
    /// Control and data address.
    pub listen: SocketAddr,
    /// Seed peers.
    pub peers: Vec<SocketAddr>,
    /// State directory.
    pub state_dir: PathBuf,
    /// Bridge name.
    pub bridge: String,
    /// TAP port name.
    pub tap: String,
    /// Pod MTU override.
    pub mtu: Option<u32>,
    /// MAC table size cap.
    pub fdb_capacity: usize,
    /// MAC entry lifetime.
    pub mac_max_age: Duration,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// The cluster secret: encryption on.
    pub secret: Option<Arc<Secret>>,
    /// Networks whose hosts exchange data unencrypted (both ends must be inside).
    pub trusted_subnets: Vec<Cidr>,
    /// When data keys are replaced.
    pub rekey: RekeyPolicy,
    /// Use the kernel VXLAN fast path with peers where it works (clusters without a secret).
    pub fastpath: bool,
    /// The fast path's VXLAN network identifier.
    pub vni: u32,
    /// The fast path's UDP port.
    pub vxlan_port: u16,
    /// Pod IPAM (`--pod-cidr`), off when `None`.
    pub ipam: Option<IpamOptions>,
    /// How long the data plane thread polls after its last packet before it sleeps
    /// (`--busy-poll-us`).
    pub busy_poll: Duration,
}

/// The IPAM flags of `weft router`.
#[derive(Debug, Clone)]
pub struct IpamOptions {
    /// The pod CIDR.
    pub cidr: gossip::ipam::Block,
    /// The block size (validated against the CIDR).
    pub block_prefix: u8,
    /// How long a host may be unreachable before its blocks are reclaimed.
    pub grace: Duration,
    /// The cluster size to assume; `None`: 1 + the seeds that are not this host's addresses.
    pub init_peers: Option<usize>,
    /// Masquerade traffic from pods to outside the pod CIDR.
    pub masquerade: bool,
}

/// An IP network, `ADDR/LEN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length.
    pub len: u8,
}

impl std::str::FromStr for Cidr {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Cidr> {
        let (a, l) = s
            .split_once('/')
            .with_context(|| format!("{s:?} is not ADDR/LEN"))?;
        let addr: IpAddr = a
            .parse()
            .with_context(|| format!("{a:?} is not an IP address"))?;
        let len: u8 = l
            .parse()
            .with_context(|| format!("{l:?} is not a prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            bail!("prefix length {len} is more than {max}");
        }
        Ok(Cidr { addr, len })
    }
}

impl Cidr {
    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn bits(ip: IpAddr) -> u128 {
            match ip {
                IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
                IpAddr::V6(v) => u128::from(v),
            }
        }
        if self.addr.is_ipv4() != ip.is_ipv4() {
            return false;
        }
        // IPv4 addresses sit in the top 32 bits, so both families count bits from the top.
        let len = u32::from(self.len);
        if len == 0 {
            return true;
        }
        let mask = u128::MAX << (128 - len);
        bits(self.addr) & mask == bits(ip) & mask
    }
}

/// Parses `ADDR[:PORT]` (an IP, `IP:PORT`, `[IPv6]:PORT` or `host[:port]`), with
/// [`DEFAULT_PORT`] when no port is given.
pub fn parse_addr(s: &str) -> Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    let with_port = if s.contains(':') {
        s.to_string()
    } else {
        format!("{s}:{DEFAULT_PORT}")
    };
    with_port
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {s:?}"))?
        .next()
        .with_context(|| format!("{s:?} resolves to no address"))
}

/// The default nickname: the host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "weft".into())
}

/// A peer we have a control connection with.
struct Neighbor {
    info: PeerInfo,
    /// The UDP path answers heartbeats.
    usable: bool,
    /// The data encryption session (encrypted clusters, unless the path is trusted).
    session: Option<Arc<Mutex<Session>>>,
    /// A rekey we proposed and await the answer to: epoch, key material, when sent.
    rekey: Option<(u8, [u8; 32], Instant)>,
    /// Rekeys completed with this neighbour.
    rekeys: u64,
}

/// The running daemon, as the API handlers see it.
struct Daemon {
    cfg: Config,
    name: PeerName,
    uid: u64,
    underlay_mtu: u32,
    started: Instant,
    shared: Arc<Shared>,
    dataplane: Dataplane,
    gossip: Gossip,
    neighbors: Mutex<HashMap<PeerName, Neighbor>>,
    /// Counters of every peer ever seen, so a reconnection keeps counting.
    counters: Mutex<HashMap<PeerName, Arc<PeerCounters>>>,
    /// The seed list, as persisted in the state directory.
    seeds: Mutex<Vec<SocketAddr>>,
    nl: Netlink,
    /// The kernel VXLAN fast path, when on.
    fast: tokio::sync::Mutex<Option<FastPath>>,
    /// Why the fast path is off, when it is.
    fast_off: Option<String>,
    /// The path choice per neighbour.
    fast_peers: Mutex<HashMap<PeerName, FastPeer>>,
    /// The VXLAN device's counters, refreshed every second.
    fast_stats: Mutex<Option<LinkCounters>>,
    heartbeat_seq: std::sync::atomic::AtomicU64,
    /// Pod IPAM, when on.
    ipam: Option<Arc<Ipam>>,
    /// Set by `weft leave`: the main loop exits.
    leave: tokio::sync::Notify,
    /// `weft leave` is under way or done: no more IPAM reconciling.
    leaving: std::sync::atomic::AtomicBool,
}

/// The fast-path state of one neighbour.
struct FastPeer {
    ip: IpAddr,
    uid: u64,
    path: PeerPath,
    /// The neighbour's last report of how old our last probe at it was, and when it came.
    report: Option<(Duration, Instant)>,
    /// Why the neighbour is where it is, for status.
    reason: String,
}

impl FastPeer {
    fn new(ip: IpAddr, uid: u64) -> FastPeer {
        FastPeer {
            ip,
            uid,
            path: PeerPath::new(),
            report: None,
            reason: "probing".into(),
        }
    }

    fn fast(&self) -> bool {
        self.path.mode() == PathMode::Fast
    }
}

/// A UDP path whose heartbeats have not been answered for this long is unusable.
const UDP_DEAD_AFTER_MS: u64 = 3500;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Daemon {
    fn counters_for(&self, name: PeerName) -> Arc<PeerCounters> {
        lock(&self.counters).entry(name).or_default().clone()
    }

    /// Where a neighbour's datagrams go: the address its heartbeats come from when known (a
    /// peer behind NAT), else the address it announced.
    fn udp_addr(&self, n: &Neighbor) -> SocketAddr {
        let observed = *lock(&self.counters_for(n.info.name).observed_addr);
        observed.unwrap_or(n.info.udp_addr)
    }

    /// Routes over the gossiped topology (only usable connections carry traffic).
    fn routes_view(&self) -> RoutesSnapshot {
        self.gossip.routes()
    }

    /// Rebuilds the data plane's fabric from the current routes and neighbours.
    fn publish_fabric(&self) {
        let view = self.routes_view();
        // Every neighbour is known to the data plane (its heartbeats must be answered before
        // its path is confirmed), but only usable ones get an address to send frames to.
        let fast: std::collections::HashSet<PeerName> = lock(&self.fast_peers)
            .iter()
            .filter(|(_, p)| p.fast())
            .map(|(n, _)| *n)
            .collect();
        let mut entries: Vec<PeerEntry> = {
            let neighbors = lock(&self.neighbors);
            neighbors
                .values()
                .map(|n| PeerEntry {
                    name: n.info.name,
                    udp_addr: n.usable.then(|| self.udp_addr(n)),
                    counters: self.counters_for(n.info.name),
                    session: n.session.clone(),
                    fast: fast.contains(&n.info.name),
                })
                .collect()
        };
        // Peers reached through relays: no address, no session. (Fabric::new keeps the first
        // entry of a name, so neighbours come first.)
        for (name, _) in &view.peers {
            entries.push(PeerEntry {
                name: *name,
                udp_addr: None,
                counters: self.counters_for(*name),
                session: None,
                fast: false,
            });
        }
        let fabric = Fabric::new(entries, &view.next_hops, &view.children);
        self.shared.fabric.store(Arc::new(fabric));
    }

    fn on_event(&self, ev: Event) {
        match ev {
            Event::Up(info) => {
                if info.pod_mtu != self.shared.pod_mtu {
                    tracing::warn!(
                        peer = %info.name,
                        "peer {} uses pod MTU {}, we use {}: frames above the smaller one are dropped",
                        info.nickname, info.pod_mtu, self.shared.pod_mtu
                    );
                }
                let name = info.name;
                let addr = info.udp_addr;
                let session = match &info.keys {
                    Some(k) if !self.trusted(addr.ip()) => {
                        Some(Arc::new(Mutex::new(Session::new(
                            Instant::now(),
                            0,
                            Key::new(k.send),
                            Key::new(k.recv),
                            self.cfg.rekey,
                        ))))
                    }
                    _ => None,
                };
                // A new connection starts unconfirmed: traffic flows once a UDP heartbeat is
                // answered (within milliseconds on a working path).
                lock(&self.neighbors).insert(
                    name,
                    Neighbor {
                        info,
                        usable: false,
                        session,
                        rekey: None,
                        rekeys: 0,
                    },
                );
                *lock(&self.counters_for(name).observed_addr) = None;
                self.send_heartbeat(name, addr);
                self.publish_fabric();
            }
            Event::Down { name, .. } => {
                lock(&self.neighbors).remove(&name);
                self.publish_fabric();
            }
            Event::Control { from, msg } => self.on_rekey(from, msg),
            Event::Topology => {
                self.publish_fabric();
                // MACs behind peers that are no longer reachable at all are forgotten.
                let reachable: std::collections::HashSet<PeerName> = self
                    .shared
                    .fabric
                    .load()
                    .entries()
                    .iter()
                    .map(|e| e.name)
                    .collect();
                let mut sw = self.shared.switch();
                let gone: Vec<PeerName> = sw
                    .fdb()
                    .entries()
                    .into_iter()
                    .filter_map(|(_, loc, _)| match loc {
                        Location::Peer(p) if !reachable.contains(&p) => Some(p),
                        _ => None,
                    })
                    .collect();
                for p in gone {
                    let forgotten = sw.fdb_mut().forget_peer(p);
                    tracing::debug!(peer = %p, forgotten, "forgot the MACs of an unreachable peer");
                }
            }
        }
    }

    fn send_heartbeat(&self, name: PeerName, addr: SocketAddr) {
        let seq = self.heartbeat_seq.fetch_add(1, Relaxed);
        let session = lock(&self.neighbors)
            .get(&name)
            .and_then(|n| n.session.clone());
        if let Err(e) = self
            .dataplane
            .send_heartbeat(name, addr, seq, session.as_deref())
        {
            tracing::debug!(peer = %name, "UDP heartbeat not sent: {e}");
        }
    }

    /// Whether data to `peer_ip` may go unencrypted: both ends are inside a trusted subnet.
    fn trusted(&self, peer_ip: IpAddr) -> bool {
        let t = &self.cfg.trusted_subnets;
        t.iter().any(|c| c.contains(self.cfg.listen.ip())) && t.iter().any(|c| c.contains(peer_ip))
    }

    /// Handles the rekey messages of the control channel (see docs/encryption.md).
    fn on_rekey(&self, from: PeerName, msg: Message) {
        if let Message::Probe { age_ms } = msg {
            if let Some(p) = lock(&self.fast_peers).get_mut(&from) {
                p.report = age_ms.map(|a| (Duration::from_millis(a), Instant::now()));
            }
            return;
        }
        let Some(secret) = &self.cfg.secret else {
            return;
        };
        let now = Instant::now();
        let mut neighbors = lock(&self.neighbors);
        let Some(n) = neighbors.get_mut(&from) else {
            return;
        };
        let Some(session) = n.session.clone() else {
            return;
        };
        match msg {
            Message::Rekey { epoch, material } => {
                let Some(material) = unhex32(&material) else {
                    tracing::warn!(peer = %from, "malformed rekey material");
                    return;
                };
                let keys = gossip::secure::derive_data_keys(&material, secret, false);
                let installed = lock(&session).install_as_responder(
                    now,
                    epoch,
                    Key::new(keys.send),
                    Key::new(keys.recv),
                );
                match installed {
                    Ok(()) => {
                        n.rekeys += 1;
                        self.gossip.send_to(from, Message::RekeyAck { epoch });
                    }
                    Err(e) => tracing::warn!(peer = %from, epoch, "rekey refused: {e:?}"),
                }
            }
            Message::RekeyAck { epoch } => {
                let Some((e, material, _)) = n.rekey else {
                    return;
                };
                if e != epoch {
                    return;
                }
                n.rekey = None;
                let keys = gossip::secure::derive_data_keys(&material, secret, true);
                match lock(&session).install_as_initiator(
                    now,
                    epoch,
                    Key::new(keys.send),
                    Key::new(keys.recv),
                ) {
                    Ok(()) => {
                        n.rekeys += 1;
                        tracing::debug!(peer = %from, epoch, "rekeyed");
                    }
                    Err(e) => tracing::warn!(peer = %from, epoch, "rekey not installed: {e:?}"),
                }
            }
            _ => {}
        }
    }

    /// Proposes new data keys to neighbours whose keys are due (we are the initiator towards the
    /// peers we dialled), and retires old receive keys.
    fn rekey_round(&self) {
        let now = Instant::now();
        let mut neighbors = lock(&self.neighbors);
        for n in neighbors.values_mut() {
            let Some(session) = n.session.clone() else {
                continue;
            };
            let mut s = lock(&session);
            s.retire_expired(now);
            if !n.info.outbound || !s.rekey_due(now) {
                continue;
            }
            if n.rekey
                .is_some_and(|(_, _, sent)| now.duration_since(sent) < Duration::from_secs(5))
            {
                continue;
            }
            let epoch = s.next_epoch();
            drop(s);
            let material: [u8; 32] = rand::random();
            if self.gossip.send_to(
                n.info.name,
                Message::Rekey {
                    epoch,
                    material: hex(&material),
                },
            ) {
                n.rekey = Some((epoch, material, now));
            }
        }
    }

    /// Once a second: probes the VXLAN path to every neighbour, tells each how old its last
    /// probe here is, and moves neighbours between the sleeve and the fast path.
    async fn fastpath_round(&self) {
        let guard = self.fast.lock().await;
        let Some(fp) = guard.as_ref() else {
            return;
        };
        let now = Instant::now();
        let view = self.routes_view();
        let neigh: Vec<(PeerName, String, IpAddr, u64, bool)> = lock(&self.neighbors)
            .values()
            .map(|n| {
                (
                    n.info.name,
                    n.info.nickname.clone(),
                    n.info.udp_addr.ip(),
                    n.info.uid,
                    n.usable,
                )
            })
            .collect();
        // The fast path carries our floods only to direct neighbours: while any peer is reached
        // through a relay (whose VXLAN copy would not be passed on), everybody stays on the
        // sleeve.
        let full_mesh = view
            .peers
            .iter()
            .all(|(p, _)| neigh.iter().any(|n| n.0 == *p && n.4));
        for n in &neigh {
            let _ = fp.send_probe(self.dataplane.socket(), n.2);
        }
        let ips: Vec<IpAddr> = neigh.iter().map(|n| n.2).collect();
        let ages = fp
            .probe_ages(&ips)
            .await
            .unwrap_or_else(|_| vec![None; ips.len()]);
        for (n, age) in neigh.iter().zip(&ages) {
            let age_ms = age.map(|a| a.as_millis().min(u128::from(u64::MAX)) as u64);
            self.gossip.send_to(n.0, Message::Probe { age_ms });
        }
        let policy = ProbePolicy::default();
        let (mut to_fast, mut to_sleeve) = (Vec::new(), Vec::new());
        {
            let mut fps = lock(&self.fast_peers);
            fps.retain(|name, p| {
                let keep = neigh.iter().any(|n| n.0 == *name);
                if !keep && p.fast() {
                    to_sleeve.push((*name, "gone".to_string(), p.ip));
                }
                keep
            });
            for ((name, nick, ip, uid, usable), age) in neigh.iter().zip(&ages) {
                let p = fps.entry(*name).or_insert_with(|| FastPeer::new(*ip, *uid));
                if p.uid != *uid || p.ip != *ip {
                    if p.fast() {
                        to_sleeve.push((*name, nick.clone(), p.ip));
                    }
                    *p = FastPeer::new(*ip, *uid);
                }
                let outbound = p.report.map(|(a, at)| a.saturating_add(at.elapsed()));
                let eligible = full_mesh && *usable;
                let inbound = if eligible { *age } else { None };
                if let Some(mode) = p.path.observe(&policy, now, inbound, outbound) {
                    match mode {
                        PathMode::Fast => to_fast.push((*name, nick.clone(), *ip)),
                        PathMode::Sleeve => to_sleeve.push((*name, nick.clone(), *ip)),
                    }
                }
                let fresh = |a: Option<Duration>| a.is_some_and(|a| a < policy.max_age);
                p.reason = match (p.fast(), eligible, fresh(*age), fresh(outbound)) {
                    (true, ..) => "VXLAN probes answered both ways".into(),
                    (false, false, ..) if !full_mesh => "sleeve: relays in use".into(),
                    (false, false, ..) => "sleeve: UDP path not confirmed".into(),
                    (false, true, true, true) => "sleeve: probes good, waiting to confirm".into(),
                    (false, true, false, _) => "sleeve: no VXLAN probe from the peer".into(),
                    (false, true, true, false) if p.report.is_none() => {
                        "sleeve: the peer reports no fast path".into()
                    }
                    (false, true, true, false) => "sleeve: our VXLAN probes do not arrive".into(),
                };
            }
        }
        for (name, nick, ip) in &to_fast {
            match fp.add_peer(*ip).await {
                Ok(()) => {
                    // The bridge relearns the peer's MACs on the VXLAN port.
                    self.shared.switch().fdb_mut().forget_peer(*name);
                    let _ = self.nl.flush_port_fdb(&self.cfg.tap).await;
                    tracing::info!(peer = %name, nickname = %nick, "fast path (kernel VXLAN) in use");
                }
                Err(e) => tracing::warn!(peer = %name, "could not program the fast path: {e:#}"),
            }
        }
        if !to_fast.is_empty() || !to_sleeve.is_empty() {
            self.publish_fabric();
        }
        for (name, nick, ip) in &to_sleeve {
            if let Err(e) = fp.remove_peer(*ip).await {
                tracing::warn!(peer = %name, "could not remove the fast path: {e:#}");
            }
            tracing::warn!(peer = %name, nickname = %nick, "back on the sleeve: the VXLAN path stopped answering");
        }
        // A fast-path peer whose frames still came over the sleeve (it switched later than we
        // did, or briefly fell back) taught the bridge its MACs on the TAP port, which pulls our
        // unicast back through user space. Forget those and let the bridge relearn them on the
        // VXLAN port.
        let fast_names: std::collections::HashSet<PeerName> = lock(&self.fast_peers)
            .iter()
            .filter(|(_, p)| p.fast())
            .map(|(n, _)| *n)
            .collect();
        let stale: Vec<PeerName> = {
            let sw = self.shared.switch();
            let mut v: Vec<PeerName> = sw
                .fdb()
                .entries()
                .into_iter()
                .filter_map(|(_, loc, _)| match loc {
                    Location::Peer(p) if fast_names.contains(&p) => Some(p),
                    _ => None,
                })
                .collect();
            v.sort();
            v.dedup();
            v
        };
        if !stale.is_empty() {
            {
                let mut sw = self.shared.switch();
                for p in &stale {
                    sw.fdb_mut().forget_peer(*p);
                }
            }
            let _ = self.nl.flush_port_fdb(&self.cfg.tap).await;
        }
        let fast_ips: Vec<IpAddr> = lock(&self.fast_peers)
            .values()
            .filter(|p| p.fast())
            .map(|p| p.ip)
            .collect();
        if let Err(e) = fp.reconcile(&fast_ips, &[]).await {
            tracing::debug!("fast path reconcile: {e:#}");
        }
        if let Ok(st) = fp.stats().await {
            *lock(&self.fast_stats) = Some(st);
        }
    }

    /// Sends heartbeats to every neighbour (when `send`) and re-evaluates which UDP paths work.
    fn heartbeat_round(&self, send: bool) {
        let now = self.shared.now_ms();
        let mut changed = false;
        let mut flips = Vec::new();
        let targets: Vec<(PeerName, SocketAddr)> = {
            let mut neighbors = lock(&self.neighbors);
            for n in neighbors.values_mut() {
                let last = self.counters_for(n.info.name).last_ack_ms.load(Relaxed);
                let usable = last > 0 && now.saturating_sub(last) < UDP_DEAD_AFTER_MS;
                if usable != n.usable {
                    n.usable = usable;
                    changed = true;
                    flips.push((n.info.name, usable));
                    if usable {
                        tracing::info!(peer = %n.info.name, nickname = %n.info.nickname, "UDP path confirmed");
                    } else {
                        tracing::warn!(peer = %n.info.name, nickname = %n.info.nickname, "UDP path lost: no heartbeat answer for {UDP_DEAD_AFTER_MS} ms");
                    }
                }
            }
            neighbors
                .values()
                .map(|n| (n.info.name, self.udp_addr(n)))
                .collect()
        };
        for (peer, usable) in flips {
            self.gossip.set_usable(peer, usable);
        }
        if changed {
            self.publish_fabric();
        }
        if send {
            for (name, addr) in targets {
                self.send_heartbeat(name, addr);
            }
        }
    }

    fn save_seeds(&self, seeds: &[SocketAddr]) {
        if let Err(e) = state::save_seeds(&self.cfg.state_dir, seeds) {
            tracing::warn!("could not persist the seed list: {e:#}");
        }
    }

    fn connect(&self, addr: SocketAddr) -> SeedAnswer {
        let mut seeds = lock(&self.seeds);
        let added = !seeds.contains(&addr);
        if added {
            seeds.push(addr);
            self.save_seeds(&seeds);
        }
        self.gossip.connect(addr);
        SeedAnswer {
            addr: addr.to_string(),
            changed: added,
            seeds: seeds.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn forget(&self, addr: SocketAddr) -> SeedAnswer {
        let mut seeds = lock(&self.seeds);
        let before = seeds.len();
        seeds.retain(|s| *s != addr);
        let removed = seeds.len() != before;
        if removed {
            self.save_seeds(&seeds);
        }
        let stopped = self.gossip.forget(addr);
        SeedAnswer {
            addr: addr.to_string(),
            changed: removed || stopped,
            seeds: seeds.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn peer_reports(&self) -> Vec<PeerReport> {
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
                let encryption = match (n, session) {
                    (Some(_), Some(_)) => "chacha20-poly1305",
                    (Some(_), None) if self.cfg.secret.is_some() => "trusted",
                    _ => "none",
                };
                PeerReport {
                    name: name.to_string(),
                    nickname: nick(name),
                    addr: n.map(|n| self.udp_addr(n).to_string()).unwrap_or_default(),
                    state,
                    path,
                    mtu: n
                        .map(|n| n.info.pod_mtu.min(self.shared.pod_mtu))
                        .unwrap_or(0),
                    rtt_ms: (n.is_some() && rtt_us > 0).then_some(rtt_us as f64 / 1000.0),
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
                    fastpath: match (&self.fast_off, n) {
                        (_, None) => String::new(),
                        (Some(off), Some(_)) => off.clone(),
                        (None, Some(_)) => lock(&self.fast_peers)
                            .get(&name)
                            .map(|p| p.reason.clone())
                            .unwrap_or_else(|| "probing".into()),
                    },
                    key_epoch: session.map(|s| lock(s).send_epoch()),
                    rekeys: n.map(|n| n.rekeys).unwrap_or(0),
                }
            })
            .collect();
        out.sort_by(|a, b| a.nickname.cmp(&b.nickname).then(a.name.cmp(&b.name)));
        out
    }

    fn report(&self) -> Report {
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
            targets: self.gossip.targets(),
            connections: self.gossip.connections(),
            refused_connections: self.gossip.refused_connections(),
            refused: self.gossip.refused_peers(),
            encrypted: self.cfg.secret.is_some(),
            fastpath: match &self.fast_off {
                Some(off) => crate::status::FastPathReport {
                    state: off.clone(),
                    ..Default::default()
                },
                None => {
                    let st = lock(&self.fast_stats).unwrap_or_default();
                    crate::status::FastPathReport {
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
            drops,
            fdb,
            ipam: self.ipam.as_ref().map(|i| {
                let (ready, reason) = i.readiness();
                crate::status::IpamSection {
                    cidr: i.cidr().to_string(),
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
                    cluster: self.gossip.ipam_status(),
                }
            }),
        }
    }

    /// Every 2 s: the bridge's gateways follow the held blocks (checked against the kernel even
    /// without a change when `full`); lost reservations are logged.
    async fn ipam_round(&self, full: bool) {
        let Some(i) = &self.ipam else {
            return;
        };
        if self.leaving.load(Relaxed) {
            return;
        }
        if let Err(e) = i.reconcile_bridge(full).await {
            tracing::warn!("updating the bridge's gateway addresses: {e:#}");
        }
        i.check_lost();
    }

    /// `weft leave`: hands the blocks back, removes the gateways and the masquerade table, and
    /// stops the router.
    async fn leave(&self, force: bool) -> Result<LeaveAnswer, ipam::Error> {
        let mut answer = LeaveAnswer::default();
        if let Some(i) = &self.ipam {
            let n = i.begin_leave(force).await?;
            self.leaving.store(true, Relaxed);
            answer.blocks = i.held().iter().map(|b| b.to_string()).collect();
            answer.reservations_dropped = n;
            self.gossip.ipam_leave(Duration::from_secs(10)).await;
            let internal = |e: anyhow::Error| ipam::Error::Internal(format!("{e:#}"));
            i.clear_bridge().await.map_err(internal)?;
            i.remove_masquerade().await.map_err(internal)?;
            i.clear().await.map_err(internal)?;
        }
        self.leaving.store(true, Relaxed);
        tracing::info!(
            blocks = answer.blocks.len(),
            "left the cluster: blocks handed back, gateways and masquerade removed; stopping"
        );
        self.leave.notify_one();
        Ok(answer)
    }

    fn macs(&self) -> Vec<MacReport> {
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

/// Body of `POST /v1/connect` and `/v1/forget`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedRequest {
    /// `ADDR[:PORT]`.
    pub addr: String,
}

/// Answer to `POST /v1/connect` and `/v1/forget`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedAnswer {
    /// The address, normalised.
    pub addr: String,
    /// Whether the seed list (or the dial targets) changed.
    pub changed: bool,
    /// The seed list now.
    pub seeds: Vec<String>,
}

/// Body of `POST /v1/leave`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LeaveRequest {
    /// Leave even though pods still hold addresses (they lose them).
    #[serde(default)]
    pub force: bool,
}

/// Answer to `POST /v1/leave`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LeaveAnswer {
    /// The blocks handed back.
    pub blocks: Vec<String>,
    /// Reservations dropped (with `--force`).
    pub reservations_dropped: usize,
}

/// Refuses to start when another router answers on this state directory's socket, and removes
/// a stale socket file otherwise.
fn claim_socket(state_dir: &std::path::Path) -> Result<PathBuf> {
    let path = api::socket_path(state_dir);
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        bail!(
            "another weft router is running with state directory {} (its socket {} answers)",
            state_dir.display(),
            path.display()
        );
    }
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::info!("removed the stale API socket {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    Ok(path)
}

/// Runs the router until SIGINT or SIGTERM.
pub async fn run(cfg: Config) -> Result<()> {
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("creating state directory {}", cfg.state_dir.display()))?;
    let sock_path = claim_socket(&cfg.state_dir)?;
    let name = state::load_or_create_peer_name(&cfg.state_dir)?;
    let uid = rand::random::<u64>();

    let nl = Netlink::connect()?;
    let ipv6 = cfg.listen.is_ipv6();
    let underlay_mtu = nl
        .underlay_mtu(cfg.listen.ip())
        .await
        .context("finding the underlay MTU (is --listen an address of this host?)")?;
    // With a secret, each datagram also carries the encryption overhead.
    let crypto = if cfg.secret.is_some() {
        vswitch::session::OVERHEAD as u32
    } else {
        0
    };
    let computed = vswitch::sleeve::pod_mtu(underlay_mtu, ipv6)
        .and_then(|m| m.checked_sub(crypto))
        .filter(|m| *m >= 1280)
        .with_context(|| {
            format!("the underlay MTU {underlay_mtu} is too small to carry 1280-byte pod packets")
        })?;
    let pod_mtu = match cfg.mtu {
        Some(m) if m > computed => {
            tracing::warn!(
                "--mtu {m} exceeds the {computed} the underlay MTU {underlay_mtu} allows: \
                 sleeve datagrams may not fit the underlay"
            );
            m
        }
        Some(m) if m < 576 => bail!("--mtu {m} is below the 576 bytes IPv4 requires"),
        Some(m) => m,
        None => computed,
    };
    let max_datagram = pod_mtu as usize + vswitch::sleeve::overhead(ipv6) + crypto as usize
        - if ipv6 {
            vswitch::sleeve::IPV6_UDP_LEN
        } else {
            vswitch::sleeve::IPV4_UDP_LEN
        };

    let bridge_index = nl
        .ensure_bridge(&cfg.bridge, pod_mtu)
        .await
        .with_context(|| format!("setting up bridge {}", cfg.bridge))?;
    let tap = Tap::open_with_offloads(&cfg.tap, !crate::dataplane::disabled("tso"))
        .with_context(|| format!("creating TAP device {}", cfg.tap))?;
    if let Err(e) = nl.attach(&cfg.tap, bridge_index, TAP_MTU).await {
        tracing::debug!("TAP MTU {TAP_MTU} refused ({e:#}); using the pod MTU");
        nl.attach(&cfg.tap, bridge_index, pod_mtu).await?;
    }
    let socket =
        UdpSocket::bind(cfg.listen).with_context(|| format!("binding UDP {}", cfg.listen))?;

    // The kernel fast path: only without a secret (VXLAN does not encrypt), and with a concrete
    // underlay address for the VXLAN device to use.
    let device = fastpath_device(&cfg.bridge);
    let (fast, fast_off) = if cfg.secret.is_some() {
        if let Ok(Some((link, _))) = nl.vxlan(&device).await {
            let _ = nl.delete_link(link.index).await;
            tracing::info!("removed the VXLAN device {device} left from a run without a secret");
        }
        (None, Some("off: the cluster is encrypted".to_string()))
    } else if !cfg.fastpath {
        if let Ok(Some((link, _))) = nl.vxlan(&device).await {
            let _ = nl.delete_link(link.index).await;
        }
        (None, Some("off: --no-fastpath".to_string()))
    } else if cfg.listen.ip().is_unspecified() {
        (None, Some("off: --listen names no address".to_string()))
    } else {
        let mut fcfg = FastPathConfig::new(cfg.listen.ip(), pod_mtu);
        fcfg.device = device.clone();
        fcfg.vni = cfg.vni;
        fcfg.port = cfg.vxlan_port;
        fcfg.bridge = cfg.bridge.clone();
        // Frames must never pass between the TAP port and the VXLAN port inside the host.
        nl.set_port_isolated(&cfg.tap, true)
            .await
            .context("isolating the TAP port")?;
        match FastPath::setup(&nl, fcfg).await {
            Ok(fp) => {
                if fp.outcome() != SetupOutcome::Created {
                    // After a crash: every peer starts on the sleeve again.
                    let _ = fp.reconcile(&[], &[]).await;
                }
                tracing::info!(device = %device, outcome = ?fp.outcome(), "fast path ready");
                (Some(fp), None)
            }
            Err(e) => {
                tracing::warn!("fast path unavailable: {e:#}");
                (None, Some(format!("off: {e:#}")))
            }
        }
    };

    let switch = Switch::new(Fdb::new(cfg.fdb_capacity, cfg.mac_max_age));
    let mut shared = Shared::new(name, pod_mtu, max_datagram, cfg.secret.is_some(), switch);
    if fast.is_some() {
        shared.vxlan = Some((cfg.vni, cfg.vxlan_port));
    }
    shared.busy_poll = cfg.busy_poll;
    let shared = Arc::new(shared);
    let dataplane =
        Dataplane::start(shared.clone(), tap, socket).context("starting the data plane")?;

    // The seed list: --peer flags plus what `weft connect` added earlier (kept in the state
    // directory; `weft forget` removes entries).
    let mut seeds = state::load_seeds(&cfg.state_dir).unwrap_or_else(|e| {
        tracing::warn!("ignoring the saved seed list: {e:#}");
        Vec::new()
    });
    for p in &cfg.peers {
        if !seeds.contains(p) {
            seeds.push(*p);
        }
    }
    state::save_seeds(&cfg.state_dir, &seeds)?;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut gcfg = driver::Config::new(name, uid, cfg.nickname.clone(), cfg.listen);
    gcfg.pod_mtu = pod_mtu;
    gcfg.seeds = seeds.clone();
    gcfg.secret = cfg.secret.clone();
    if let Some(o) = &cfg.ipam {
        ipam::validate(o.cidr, o.block_prefix)?;
        let init_peers = match o.init_peers {
            Some(n) => n.max(1),
            None => {
                let own = nl.local_addresses().await.unwrap_or_default();
                let mut others: Vec<IpAddr> = seeds
                    .iter()
                    .map(|s| s.ip())
                    .filter(|ip| !own.contains(ip) && *ip != cfg.listen.ip())
                    .collect();
                others.sort();
                others.dedup();
                1 + others.len()
            }
        };
        tracing::info!(
            cidr = %o.cidr,
            block_prefix = o.block_prefix,
            init_peers,
            grace_secs = o.grace.as_secs(),
            "pod IPAM on"
        );
        gcfg.ipam = Some(gossip::ipam::IpamConfig {
            cidr: o.cidr,
            block_prefix: o.block_prefix,
            grace: o.grace,
            init_peers,
            state_file: Some(cfg.state_dir.join(ipam::IPAM_STATE_FILE)),
        });
    }
    let gossip = Gossip::start(gcfg, tx)
        .await
        .with_context(|| format!("listening on TCP {}", cfg.listen))?;

    let ipam = match &cfg.ipam {
        Some(o) => {
            let i = Ipam::open(
                ipam::Settings {
                    cidr: o.cidr,
                    block_prefix: o.block_prefix,
                    masquerade: o.masquerade,
                    state_dir: cfg.state_dir.clone(),
                    bridge: cfg.bridge.clone(),
                    pod_mtu,
                },
                gossip.clone(),
                nl.clone(),
            )?;
            i.setup_host().await?;
            i.reconcile_bridge(true)
                .await
                .context("giving the bridge its gateway addresses")?;
            Some(Arc::new(i))
        }
        None => None,
    };

    let daemon = Arc::new(Daemon {
        cfg: cfg.clone(),
        name,
        uid,
        underlay_mtu,
        started: Instant::now(),
        shared: shared.clone(),
        dataplane,
        gossip: gossip.clone(),
        neighbors: Mutex::new(HashMap::new()),
        counters: Mutex::new(HashMap::new()),
        seeds: Mutex::new(seeds),
        heartbeat_seq: std::sync::atomic::AtomicU64::new(1),
        nl: nl.clone(),
        fast: tokio::sync::Mutex::new(fast),
        fast_off,
        fast_peers: Mutex::new(HashMap::new()),
        fast_stats: Mutex::new(None),
        ipam,
        leave: tokio::sync::Notify::new(),
        leaving: std::sync::atomic::AtomicBool::new(false),
    });

    let listener = tokio::net::UnixListener::bind(&sock_path)
        .with_context(|| format!("binding the API socket {}", sock_path.display()))?;
    let (api_stop, api_stopped) = tokio::sync::watch::channel(false);
    let api_task = tokio::spawn(serve_api(listener, daemon.clone(), api_stopped));
    if let Some(addr) = cfg.metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics address {addr}"))?;
        let d = daemon.clone();
        let app = axum::Router::new().route(
            "/metrics",
            get(move || {
                let d = d.clone();
                async move {
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        metrics::render(&d.report()),
                    )
                }
            }),
        );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("metrics server stopped: {e}");
            }
        });
    }

    tracing::info!(
        name = %name,
        nickname = %cfg.nickname,
        listen = %cfg.listen,
        pod_mtu,
        underlay_mtu,
        "weft router started"
    );

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut ageing = tokio::time::interval(Duration::from_secs(5));
    let mut liveness = tokio::time::interval(Duration::from_millis(200));
    let mut probes = tokio::time::interval(Duration::from_secs(1));
    let mut ipam_ticks = tokio::time::interval(Duration::from_secs(2));
    let mut ticks = 0u64;
    let mut ipam_rounds = 0u64;
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => daemon.on_event(ev),
                None => break,
            },
            _ = liveness.tick() => {
                ticks += 1;
                daemon.heartbeat_round(ticks.is_multiple_of(5));
                daemon.rekey_round();
            }
            _ = ageing.tick() => {
                shared.switch().fdb_mut().expire(Instant::now());
            }
            _ = probes.tick() => daemon.fastpath_round().await,
            _ = ipam_ticks.tick() => {
                ipam_rounds += 1;
                daemon.ipam_round(ipam_rounds.is_multiple_of(15)).await;
            }
            _ = daemon.leave.notified() => break,
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down");
    // The API stops taking requests and finishes those under way (the answer to `weft leave`
    // among them), for at most 5 s.
    let _ = api_stop.send(true);
    if tokio::time::timeout(Duration::from_secs(5), api_task)
        .await
        .is_err()
    {
        tracing::warn!("API requests still running after 5 s; stopping anyway");
    }
    // Bridge addresses, reservations and the masquerade table stay (pods keep working, outbound
    // too, across a restart; the next start replaces the table atomically). `weft leave` removes
    // them.
    gossip.shutdown().await;
    if let Some(fp) = daemon.fast.lock().await.take() {
        if let Err(e) = fp.teardown(&nl).await {
            tracing::warn!("removing the VXLAN device: {e:#}");
        }
    }
    let d = daemon.clone();
    tokio::task::spawn_blocking(move || d.dataplane.stop()).await?;
    let _ = std::fs::remove_file(&sock_path);
    Ok(())
}

async fn serve_api(
    listener: tokio::net::UnixListener,
    daemon: Arc<Daemon>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    async fn seed(
        d: Arc<Daemon>,
        req: SeedRequest,
        f: fn(&Daemon, SocketAddr) -> SeedAnswer,
    ) -> Result<Json<SeedAnswer>, (axum::http::StatusCode, String)> {
        let addr = tokio::task::spawn_blocking(move || parse_addr(&req.addr))
            .await
            .map_err(|e| (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| (axum::http::StatusCode::BAD_REQUEST, format!("{e:#}")))?;
        Ok(Json(f(&d, addr)))
    }
    let app = axum::Router::new()
        .route(
            "/v1/status",
            get(|State(d): State<Arc<Daemon>>| async move { Json(d.report()) }),
        )
        .route(
            "/v1/macs",
            get(|State(d): State<Arc<Daemon>>| async move { Json(d.macs()) }),
        )
        .route(
            "/v1/connect",
            post(
                |State(d): State<Arc<Daemon>>, Json(req): Json<SeedRequest>| {
                    seed(d, req, Daemon::connect)
                },
            ),
        )
        .route(
            "/v1/forget",
            post(
                |State(d): State<Arc<Daemon>>, Json(req): Json<SeedRequest>| {
                    seed(d, req, Daemon::forget)
                },
            ),
        )
        .route("/v1/ipam", get(ipam_report))
        .route("/v1/ipam/allocate", post(ipam_allocate))
        .route("/v1/ipam/release", post(ipam_release))
        .route("/v1/ipam/gc", post(ipam_gc))
        .route("/v1/leave", post(leave))
        .with_state(daemon);
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::error!("API server stopped: {e}");
    }
}

/// A failed API request: answered with the error's HTTP status and an
/// [`crate::ipam_api::ApiError`] body.
#[derive(Debug)]
struct ApiFailure(ipam::Error);

impl From<ipam::Error> for ApiFailure {
    fn from(e: ipam::Error) -> ApiFailure {
        ApiFailure(e)
    }
}

impl axum::response::IntoResponse for ApiFailure {
    fn into_response(self) -> axum::response::Response {
        let (status, body) = self.0.to_api();
        let status = axum::http::StatusCode::from_u16(status)
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(body)).into_response()
    }
}

type ApiResult<T> = std::result::Result<Json<T>, ApiFailure>;

/// Decodes a JSON body; malformed JSON is a 400.
fn body<T: serde::de::DeserializeOwned>(b: &[u8]) -> std::result::Result<T, ipam::Error> {
    serde_json::from_slice(b).map_err(|e| ipam::Error::BadRequest(e.to_string()))
}

fn ipam_of(d: &Daemon) -> std::result::Result<Arc<Ipam>, ipam::Error> {
    d.ipam
        .clone()
        .ok_or(ipam::Error::Cluster(gossip::ipam::IpamError::Disabled))
}

async fn ipam_report(State(d): State<Arc<Daemon>>) -> Json<IpamReport> {
    Json(match &d.ipam {
        Some(i) => i.report(),
        None => IpamReport {
            ready: false,
            reason: gossip::ipam::IpamError::Disabled.to_string(),
            cidr: String::new(),
            bridge: d.cfg.bridge.clone(),
            mtu: d.shared.pod_mtu,
            reservations: Vec::new(),
        },
    })
}

async fn ipam_allocate(
    State(d): State<Arc<Daemon>>,
    b: axum::body::Bytes,
) -> ApiResult<crate::ipam_api::Allocation> {
    let req: AllocateRequest = body(&b)?;
    let i = ipam_of(&d)?;
    Ok(Json(i.allocate(req.attachment, req.netns).await?))
}

async fn ipam_release(
    State(d): State<Arc<Daemon>>,
    b: axum::body::Bytes,
) -> ApiResult<crate::ipam_api::ReleaseAnswer> {
    let a: Attachment = body(&b)?;
    let i = ipam_of(&d)?;
    Ok(Json(i.release(&a).await?))
}

async fn ipam_gc(
    State(d): State<Arc<Daemon>>,
    b: axum::body::Bytes,
) -> ApiResult<crate::ipam_api::GcAnswer> {
    let req: GcRequest = body(&b)?;
    let i = ipam_of(&d)?;
    Ok(Json(i.gc(&req.keep).await?))
}

async fn leave(State(d): State<Arc<Daemon>>, b: axum::body::Bytes) -> ApiResult<LeaveAnswer> {
    let req: LeaveRequest = if b.is_empty() {
        LeaveRequest::default()
    } else {
        body(&b)?
    };
    Ok(Json(d.leave(req.force).await?))
}

/// The VXLAN device's name for a bridge: `weft-vxlan` for the default bridge.
pub fn fastpath_device(bridge: &str) -> String {
    if bridge == crate::fastpath::DEFAULT_BRIDGE {
        crate::fastpath::DEFAULT_DEVICE.to_string()
    } else {
        let mut d = format!("{bridge}-vx");
        d.truncate(15);
        d
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The unspecified IPv4 address on the default port.
pub fn default_listen() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            parse_addr("10.0.0.1").unwrap(),
            "10.0.0.1:6783".parse().unwrap()
        );
        assert_eq!(
            parse_addr("10.0.0.1:7000").unwrap(),
            "10.0.0.1:7000".parse().unwrap()
        );
        assert_eq!(
            parse_addr("[fd00::1]:7000").unwrap(),
            "[fd00::1]:7000".parse().unwrap()
        );
        assert_eq!(
            parse_addr("fd00::1").unwrap(),
            "[fd00::1]:6783".parse().unwrap()
        );
        assert!(parse_addr("no-such-host.invalid").is_err());
    }

    #[test]
    fn cidrs_contain_what_they_should() {
        let c: Cidr = "10.200.0.0/24".parse().unwrap();
        assert!(c.contains("10.200.0.13".parse().unwrap()));
        assert!(!c.contains("10.200.1.13".parse().unwrap()));
        assert!(!c.contains("fd00::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0".parse::<Cidr>().is_err());
    }

    #[test]
    fn hex_round_trips() {
        let b = [7u8; 32];
        assert_eq!(unhex32(&hex(&b)), Some(b));
        assert_eq!(unhex32("zz"), None);
    }
}
