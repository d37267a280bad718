//! `weft router`: the host daemon. Sets up the bridge and the TAP port, starts the data plane
//! thread and the control plane (and pod IPAM, [`crate::ipam`], with `--pod-cidr`), serves the
//! local API, and tears down what it owns on exit.
//!
//! * [`config`]: the configuration and its parsers.
//! * `start`: [`run`], the start and the main loop.
//! * this module: the [`Daemon`] state and what the control plane's events do to the data plane
//!   (neighbours, sessions, the fabric, heartbeats, seeds).
//! * `rekey`, `report`, `server`, `secrets`: rekeying, status reports, the API server, rereading
//!   the secret file.
//! * `trace`: `POST /v1/trace`, the daemon's state handed to [`crate::trace`].
//! * `live`: `weft trace --live`: arming this host and its neighbours, the kernel's trace
//!   table and log, the reports (`POST /v1/trace/report`).
//! * the fast path's round is beside the fast path ([`crate::fastpath::round`]).

pub mod config;
pub mod config_file;
mod kubernetes;
mod live;
mod rekey;
mod reload;
mod report;
mod secrets;
mod server;
mod start;
mod trace;

pub use config::*;
pub use start::run;

use crate::dataplane::{Dataplane, Fabric, PeerCounters, PeerEntry, Shared};
use crate::fastpath::{FastPath, PathMode, PeerPath};
use crate::ipam::{self, Ipam};
use crate::state;
use anyhow::Result;
use gossip::driver::{Event, Gossip, PeerInfo, RoutesSnapshot};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vswitch::{Location, PeerName, Session};
use weft_api::control::{LeaveAnswer, SeedAnswer};
use weft_netlink::{LinkCounters, Netlink};

/// A peer we have a control connection with.
pub(crate) struct Neighbor {
    pub(crate) info: PeerInfo,
    /// The UDP path answers heartbeats.
    pub(crate) usable: bool,
    /// The data encryption session (encrypted clusters, unless the path is trusted).
    pub(crate) session: Option<Arc<Mutex<Session>>>,
    /// A rekey we proposed and await the answer to: epoch, key material, when sent, and the
    /// secret of the connection it went on.
    pub(crate) rekey: Option<(u8, [u8; 32], Instant, Arc<gossip::secure::Secret>)>,
    /// Rekeys completed with this neighbour.
    pub(crate) rekeys: u64,
}

/// The session of a neighbour whose last connection went down, kept for
/// [`KEEP_SESSION_AFTER_DOWN`] so that a new connection of the same run hands over from it (one
/// end may see the old connection close just before the new one comes up, while the other end
/// sees a replacement and keeps sending with the old keys).
pub(crate) struct Recent {
    uid: u64,
    udp_addr: SocketAddr,
    session: Arc<Mutex<Session>>,
    rekeys: u64,
    at: Instant,
}

/// How long the session of a neighbour gone down is kept for a new connection to hand over from.
pub(crate) const KEEP_SESSION_AFTER_DOWN: Duration = Duration::from_secs(2);

/// What a new connection keeps from the previous one of the same run of the peer.
struct Kept {
    /// It replaced a live connection (not one gone down).
    live: bool,
    /// The UDP path was confirmed (only when the new connection replaced a live one).
    usable: bool,
    rekeys: u64,
    session: Option<Arc<Mutex<Session>>>,
}

/// The running daemon, as the API handlers see it.
pub(crate) struct Daemon {
    pub(crate) cfg: Config,
    pub(crate) name: PeerName,
    pub(crate) uid: u64,
    pub(crate) underlay_mtu: u32,
    pub(crate) started: Instant,
    pub(crate) shared: Arc<Shared>,
    pub(crate) dataplane: Dataplane,
    pub(crate) gossip: Gossip,
    pub(crate) neighbors: Mutex<HashMap<PeerName, Neighbor>>,
    /// Sessions of neighbours gone down in the last [`KEEP_SESSION_AFTER_DOWN`].
    pub(crate) recent: Mutex<HashMap<PeerName, Recent>>,
    /// Counters of every peer ever seen, so a reconnection keeps counting.
    pub(crate) counters: Mutex<HashMap<PeerName, Arc<PeerCounters>>>,
    /// The seed list, as persisted in the state directory.
    pub(crate) seeds: Mutex<Vec<SocketAddr>>,
    pub(crate) nl: Netlink,
    /// The kernel VXLAN fast path, when on.
    pub(crate) fast: tokio::sync::Mutex<Option<FastPath>>,
    /// Why the fast path is off, when it is.
    pub(crate) fast_off: Option<String>,
    /// The path choice per neighbour.
    pub(crate) fast_peers: Mutex<HashMap<PeerName, FastPeer>>,
    /// The VXLAN device's counters, refreshed every second.
    pub(crate) fast_stats: Mutex<Option<LinkCounters>>,
    /// The bridge's index, for reading its learned-entry count.
    pub(crate) bridge_index: u32,
    /// The kernel's forwarding tables, as the status shows them (`kernel_fdb`).
    pub(crate) kernel_fdb: Mutex<KernelFdb>,
    pub(crate) heartbeat_seq: std::sync::atomic::AtomicU64,
    /// Pod IPAM, when on.
    pub(crate) ipam: Option<Arc<Ipam>>,
    /// NetworkPolicy, when a source is configured (needs IPAM).
    pub(crate) policy: Option<Arc<crate::policy::Policy>>,
    /// Set by `weft leave`: the main loop exits.
    pub(crate) leave: tokio::sync::Notify,
    /// `weft leave` is under way or done: no more IPAM reconciling.
    pub(crate) leaving: std::sync::atomic::AtomicBool,
    /// The secret file as last reread.
    pub(crate) secret_file: Mutex<secrets::SecretFile>,
    /// The `--peer` list in force (what a reload compares with).
    pub(crate) config_peers: Mutex<Vec<SocketAddr>>,
    /// The log filter in force.
    pub(crate) log_filter: Mutex<String>,
    /// Live traces (`weft trace --live`) under way.
    pub(crate) live: live::Live,
}

/// The fast-path state of one neighbour.
pub(crate) struct FastPeer {
    pub(crate) ip: IpAddr,
    pub(crate) uid: u64,
    pub(crate) path: PeerPath,
    /// The neighbour's last report of how old our last probe at it was, and when it came.
    pub(crate) report: Option<(Duration, Instant)>,
    /// Why the neighbour is where it is, for status.
    pub(crate) reason: String,
    /// Whether the kernel's entries for the fast path to it are written (after the switch to
    /// the fast path, before the flood entry is in, it is not yet fast).
    pub(crate) programmed: bool,
}

impl FastPeer {
    pub(crate) fn new(ip: IpAddr, uid: u64) -> FastPeer {
        FastPeer {
            ip,
            uid,
            path: PeerPath::new(),
            report: None,
            reason: "probing".into(),
            programmed: false,
        }
    }

    /// Whether its traffic takes the fast path: chosen, and written into the kernel.
    pub(crate) fn fast(&self) -> bool {
        self.path.mode() == PathMode::Fast && self.programmed
    }
}

/// What the router last saw of the kernel's forwarding tables.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KernelFdb {
    /// The bridge's learned entries and cap, when the kernel reports them.
    pub(crate) bridge: Option<(u32, u32)>,
    /// Rounds in which the bridge was at its cap.
    pub(crate) bridge_full_rounds: u64,
    /// Entries in the VXLAN device's table, when the fast path is on.
    pub(crate) vxlan_entries: Option<usize>,
    /// Fast path rounds cut off by their deadline.
    pub(crate) rounds_late: u64,
}

/// A UDP path whose heartbeats have not been answered for this long is unusable.
pub(crate) const UDP_DEAD_AFTER_MS: u64 = 3500;

/// A UDP path whose last heartbeat answer is this old is in doubt: until it is answered again or
/// declared unusable, it gets a heartbeat every liveness round (200 ms) instead of every second,
/// so that random loss on the underlay does not pass for a dead path (at 20 % loss each way,
/// three heartbeats in a row go unanswered about once every 20 s; eleven, hardly ever).
pub(crate) const UDP_SUSPECT_AFTER_MS: u64 = 1500;

/// Whether a neighbour gets a heartbeat this liveness round: on the second's round (`second`),
/// and on every round while its path is in doubt (the last answer, at `last_ack_ms`, is between
/// [`UDP_SUSPECT_AFTER_MS`] and [`UDP_DEAD_AFTER_MS`] old; 0 means never answered).
pub(crate) fn heartbeat_due(second: bool, last_ack_ms: u64, now_ms: u64) -> bool {
    let age = now_ms.saturating_sub(last_ack_ms);
    second || (last_ack_ms > 0 && (UDP_SUSPECT_AFTER_MS..UDP_DEAD_AFTER_MS).contains(&age))
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
        self.wire_addr(observed.unwrap_or(n.info.udp_addr))
    }

    /// `addr` as the UDP socket sends to it: on a socket bound to `[::]` (both families), an
    /// IPv4 address goes out as its IPv4-mapped IPv6 form (::ffff:a.b.c.d); anywhere else
    /// unchanged.
    pub(crate) fn wire_addr(&self, addr: SocketAddr) -> SocketAddr {
        match (self.cfg.listen.ip(), addr.ip()) {
            (IpAddr::V6(l), IpAddr::V4(a)) if l.is_unspecified() => {
                SocketAddr::new(IpAddr::V6(a.to_ipv6_mapped()), addr.port())
            }
            _ => addr,
        }
    }

    /// Routes over the gossiped topology (only usable connections carry traffic).
    pub(crate) fn routes_view(&self) -> RoutesSnapshot {
        self.gossip.routes()
    }

    /// Rebuilds the data plane's fabric from the current routes and neighbours.
    pub(crate) fn publish_fabric(&self) {
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
                let kept = self.replaced_connection(&info);
                let (live, usable, rekeys, old) = match kept {
                    Some(k) => (k.live, k.usable, k.rekeys, k.session),
                    None => (false, false, 0, None),
                };
                let session = match &info.keys {
                    Some(k) if !self.trusted(addr.ip()) => {
                        Some(self.connection_session(&info, k, old))
                    }
                    _ => None,
                };
                // A new connection starts unconfirmed: traffic flows once a UDP heartbeat is
                // answered (within milliseconds on a working path). One that replaced the
                // connection of the same run keeps the confirmed path and the rekey count.
                lock(&self.neighbors).insert(
                    name,
                    Neighbor {
                        info,
                        usable,
                        session,
                        rekey: None,
                        rekeys,
                    },
                );
                if !live {
                    *lock(&self.counters_for(name).observed_addr) = None;
                }
                self.send_heartbeat(name, addr);
                self.publish_fabric();
            }
            Event::Down { name, .. } => {
                let gone = lock(&self.neighbors).remove(&name);
                let now = Instant::now();
                let mut recent = lock(&self.recent);
                recent.retain(|_, r| now.duration_since(r.at) < KEEP_SESSION_AFTER_DOWN);
                if let Some((n, session)) = gone.and_then(|n| n.session.clone().map(|s| (n, s))) {
                    let recent_session = Recent {
                        uid: n.info.uid,
                        udp_addr: n.info.udp_addr,
                        session,
                        rekeys: n.rekeys,
                        at: now,
                    };
                    recent.insert(name, recent_session);
                }
                drop(recent);
                self.publish_fabric();
            }
            Event::Control {
                from,
                msg,
                conn,
                secret,
            } => match msg {
                msg @ (gossip::proto::Message::TraceArm(_)
                | gossip::proto::Message::TraceArmed { .. }
                | gossip::proto::Message::TraceReport(_)) => self.on_trace_message(from, msg, conn),
                msg => self.on_rekey(from, msg, conn, secret),
            },
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

    /// What the new connection in `info` keeps from the previous connection of the same run of
    /// that neighbour (a re-handshake onto the preferred secret, a simultaneous dial, a redial):
    /// when it replaced a live one, its confirmed path, rekey count and session; when that one
    /// went down less than [`KEEP_SESSION_AFTER_DOWN`] ago, its session and rekey count. The
    /// session is handed over to the new connection's keys ([`Daemon::connection_session`]).
    fn replaced_connection(&self, info: &PeerInfo) -> Option<Kept> {
        let same = |uid: u64, udp: SocketAddr| uid == info.uid && udp == info.udp_addr;
        let kept = {
            let neighbors = lock(&self.neighbors);
            match neighbors.get(&info.name) {
                Some(n) if same(n.info.uid, n.info.udp_addr) => Some(Kept {
                    live: true,
                    usable: n.usable,
                    rekeys: n.rekeys,
                    session: n.session.clone(),
                }),
                Some(_) => None,
                None => lock(&self.recent)
                    .remove(&info.name)
                    .filter(|r| same(r.uid, r.udp_addr) && r.at.elapsed() < KEEP_SESSION_AFTER_DOWN)
                    .map(|r| Kept {
                        live: false,
                        usable: false,
                        rekeys: r.rekeys,
                        session: Some(r.session),
                    }),
            }
        }?;
        tracing::info!(
            peer = %info.name,
            nickname = %info.nickname,
            secret = %info.secret.as_ref().map(|s| s.fingerprint().to_string()).unwrap_or_default(),
            live = kept.live,
            "connection replaced; the data session is handed over to its keys"
        );
        Some(kept)
    }

    /// The data session of a new connection with keys `k`. With a peer of protocol version 1,
    /// a new session on the keys at once (the peer does the same). From
    /// [`gossip::proto::HANDOVER_VERSION`], the session kept from the previous connection (or an
    /// empty one) is handed over to the keys without a datagram refused: the dialler accepts
    /// them under an epoch it sends on the connection and keeps sending with its old keys; the
    /// listener installs them on that message ([`Daemon::on_rekey`]); see `vswitch`'s
    /// `session/handover.rs` and docs/decisions.md.
    fn connection_session(
        &self,
        info: &PeerInfo,
        k: &gossip::secure::DataKeys,
        old: Option<Arc<Mutex<Session>>>,
    ) -> Arc<Mutex<Session>> {
        let now = Instant::now();
        let (send, recv) = rekey::session_keys(k);
        if info.version < gossip::proto::HANDOVER_VERSION {
            return Arc::new(Mutex::new(Session::new(now, 0, send, recv, self.cfg.rekey)));
        }
        let session = old.unwrap_or_else(|| Arc::new(Mutex::new(Session::empty(self.cfg.rekey))));
        if info.outbound {
            let epoch = lock(&session).handover_as_dialler(now, send, recv);
            if !self
                .gossip
                .send_on(info.conn, gossip::proto::Message::Handover { epoch })
            {
                tracing::warn!(peer = %info.name, "could not send the key handover: the connection is gone");
            }
        }
        session
    }

    fn send_heartbeat(&self, name: PeerName, addr: SocketAddr) {
        let addr = self.wire_addr(addr);
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
        t.iter().any(|c| c.contains(&self.cfg.listen.ip()))
            && t.iter().any(|c| c.contains(&peer_ip))
    }

    /// Sends heartbeats to every neighbour (when `send`; to those whose path is in doubt on every
    /// round, see [`heartbeat_due`]) and re-evaluates which UDP paths work.
    fn heartbeat_round(&self, send: bool) {
        self.expire_live();
        let now = self.shared.now_ms();
        let mut changed = false;
        let mut flips = Vec::new();
        let mut targets: Vec<(PeerName, SocketAddr)> = Vec::new();
        {
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
                if heartbeat_due(send, last, now) {
                    targets.push((n.info.name, self.udp_addr(n)));
                }
            }
        }
        for (peer, usable) in flips {
            self.gossip.set_usable(peer, usable);
        }
        if changed {
            self.publish_fabric();
        }
        for (name, addr) in targets {
            self.send_heartbeat(name, addr);
        }
    }

    fn save_seeds(&self, seeds: &[SocketAddr]) {
        if let Err(e) = state::save_seeds(&self.cfg.state_dir, seeds) {
            tracing::warn!("could not persist the seed list: {e:#}");
        }
    }

    pub(crate) fn connect(&self, addr: SocketAddr) -> SeedAnswer {
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

    pub(crate) fn forget(&self, addr: SocketAddr) -> SeedAnswer {
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

    /// Reads the port guard's counters again, for a status report.
    pub(crate) async fn refresh_guard(&self) {
        if let Some(i) = &self.ipam {
            i.refresh_guard().await;
        }
        if let Some(p) = &self.policy {
            p.refresh().await;
        }
    }

    /// `weft leave`: hands the blocks back, removes the gateways, the masquerade table, the
    /// port guard and the policy table, and stops the router.
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
            i.remove_guard().await.map_err(internal)?;
            if let Some(p) = &self.policy {
                p.remove().await.map_err(internal)?;
            }
            i.clear().await.map_err(internal)?;
        }
        self.leaving.store(true, Relaxed);
        tracing::info!(
            blocks = answer.blocks.len(),
            "left the cluster: blocks handed back, gateways, masquerade, port guard and policy removed; stopping"
        );
        self.leave.notify_one();
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_go_every_round_only_while_a_path_is_in_doubt() {
        let now = 100_000;
        // The second's round: everyone, answered or not.
        assert!(heartbeat_due(true, 0, now));
        assert!(heartbeat_due(true, now - 10_000, now));
        // Other rounds: a fresh answer, none yet, or a path already declared dead: nothing.
        assert!(!heartbeat_due(false, now - 900, now));
        assert!(!heartbeat_due(false, 0, now));
        assert!(!heartbeat_due(false, now - UDP_DEAD_AFTER_MS, now));
        // In doubt: every round.
        assert!(heartbeat_due(false, now - UDP_SUSPECT_AFTER_MS, now));
        assert!(heartbeat_due(false, now - UDP_DEAD_AFTER_MS + 1, now));
    }
}
