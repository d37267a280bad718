//! [`Gossip`], the handle of a running control plane: starts the listener, the timers and the
//! connectors, and answers the router's questions (targets, connections, routes, counters). Its
//! IPAM calls are in [`super::ipam`].

use super::conn::accept_loop;
use super::ipam::dispatch_ipam;
use super::ipam_store::load_ipam_state;
use super::targets::add_target;
use super::tick::tick_loop;
use super::{
    dispatch, Config, ConnectionStatus, Event, Inner, RefusedStatus, RoutesSnapshot, Shared,
    TargetState, TargetStatus,
};
use crate::core::GossipCore;
use crate::ipam::Ipam;
use crate::mesh::Mesh;
use crate::proto::Message;
use crate::topology::PeerRecord;
use crate::{Error, PeerName};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

/// A running control plane.
#[derive(Clone)]
pub struct Gossip {
    pub(super) shared: Arc<Shared>,
    pub(super) local_addr: SocketAddr,
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
        let cfg_secrets = cfg.secrets.clone();
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
                    .map_err(Error::IpamConfig)?
                    .with_require_signed(cfg.require_signed),
                )
            }
            None => None,
        };
        let core = GossipCore::new(
            ours,
            cfg.uid,
            crate::core::DEFAULT_ANTI_ENTROPY_INTERVAL,
            Instant::now(),
        )
        .with_wall_clock(version, Instant::now())
        .with_require_signed(cfg.require_signed);
        let (core, ipam) = match &cfg.host_key {
            Some(k) => (
                core.with_host_key(k.clone()),
                ipam.map(|i| i.with_host_key(k.clone())),
            ),
            None => (core, ipam),
        };
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
            keyring: Mutex::new(cfg_secrets),
            retired: Mutex::new(Vec::new()),
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
                    secret: p.secret.as_ref().map(|s| s.fingerprint().to_string()),
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

    /// Sends a control message on the connection `conn` ([`super::PeerInfo::conn`]), current or not;
    /// false if it has closed or its queue is full.
    pub fn send_on(&self, conn: u64, msg: Message) -> bool {
        let inner = self.shared.lock();
        inner
            .conns
            .get(&conn)
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

    /// Replaces the pods our record lists (see [`crate::core::GossipCore::set_pods`]); returns
    /// how many were left out because the record would not fit one message.
    pub fn set_pods(&self, pods: Vec<crate::topology::PodEntry>) -> usize {
        let mut inner = self.shared.lock();
        let (out, left_out) = inner.core.set_pods(Instant::now(), pods);
        dispatch(&self.shared, &mut inner, out);
        left_out
    }

    /// The pods every peer in our view lists (ours included), with the topology generation they
    /// were read at (unchanged generation: unchanged pods).
    pub fn pods(&self) -> (u64, Vec<(PeerName, Vec<crate::topology::PodEntry>)>) {
        let inner = self.shared.lock();
        let topo = inner.core.topology();
        let pods = topo
            .records()
            .filter(|r| !r.pods.is_empty())
            .map(|r| (r.name, r.pods.clone()))
            .collect();
        (topo.generation(), pods)
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

    /// Every record of the topology (ours included), as the owner last wrote it.
    pub fn topology_records(&self) -> Vec<crate::topology::PeerRecord> {
        let inner = self.shared.lock();
        inner.core.topology().records().cloned().collect()
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

    /// Replaces the cluster secrets (the first preferred, all accepted): connections on a secret
    /// no longer accepted close, the ones we dialled on a secret no longer preferred are
    /// re-handshaken ([`super::rotate`]). Refused without secrets at start (encryption cannot be
    /// turned on at run time). Returns the fingerprints this change retired.
    pub fn set_secrets(
        &self,
        keys: crate::secure::Keyring,
    ) -> Result<Vec<crate::secure::Fingerprint>, Error> {
        if self.shared.cfg.secrets.is_none() {
            return Err(Error::Malformed(
                "this router started without a secret; restart it to turn encryption on".into(),
            ));
        }
        Ok(super::rotate::set_keyring(&self.shared, keys))
    }

    /// The secrets in force, preferred first, and the ones retired during this run.
    pub fn secret_fingerprints(
        &self,
    ) -> (
        Vec<crate::secure::Fingerprint>,
        Vec<crate::secure::Fingerprint>,
    ) {
        let accepted = self
            .shared
            .keyring()
            .map(|k| k.fingerprints())
            .unwrap_or_default();
        let retired = self
            .shared
            .retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (accepted, retired)
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
