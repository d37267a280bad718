//! The addresses we dial: seeds, operator `connect`s and peers learnt from gossip (full mesh),
//! each with a connector task that dials, retries with backoff and records its state.

use super::conn::{run_conn, Outcome};
use super::{Inner, Shared, TargetRecord, TargetState};
use crate::mesh;
use crate::{Error, PeerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Adds a dial target and starts its connector (a failed one is restarted).
pub(super) fn add_target(shared: &Arc<Shared>, addr: SocketAddr, discovered: Option<PeerName>) {
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
pub(super) fn start_target(
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

/// Dials every peer the topology names that we have no connection with (full mesh), and stops
/// dialling discovered peers that left the topology.
pub(super) fn discover(shared: &Arc<Shared>, inner: &mut Inner) {
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

pub(super) async fn connector(shared: Arc<Shared>, addr: SocketAddr, stop: Arc<Notify>) {
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
            Outcome::Refused(Error::Duplicate(peer)) | Outcome::Replaced(peer) => {
                // The peer's own connection to us won the tie-break, or a newer connection
                // (a re-handshake) replaced ours: that is our link to it.
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
