//! A new set of secrets ([`super::Gossip::set_secrets`]) and what it does to live connections:
//!
//! - a connection on a secret the keyring no longer accepts is closed (its dialler redials with
//!   a secret it holds, and is let in only if we accept it);
//! - a connection we dialled on a secret that is accepted but no longer preferred is
//!   re-handshaken: we dial the same address again with the preferred secret, and once that
//!   connection is admitted it replaces the old one ([`crate::mesh::Mesh::admit`]: a redial in
//!   the same direction wins), so the data path always has a session. Only the dialler does
//!   this: a pair whose two ends prefer different secrets (mid-rotation) stays on the dialler's
//!   choice instead of flapping.
//!
//! [`reconcile`] runs on every change and every few seconds from the timer (a re-handshake that
//! failed, because the peer does not accept our preferred secret yet, is retried every
//! [`REHANDSHAKE_RETRY`]).

use super::conn::{run_conn, Outcome};
use super::Shared;
use crate::secure::{keyring, Keyring};
use crate::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// How long after a re-handshake attempt another one is made for the same connection.
pub(super) const REHANDSHAKE_RETRY: Duration = Duration::from_secs(10);

/// Installs a new keyring, remembering the secrets it drops as retired, and reconciles the
/// connections. Returns the fingerprints retired by this change.
pub(super) fn set_keyring(shared: &Arc<Shared>, new: Keyring) -> Vec<crate::secure::Fingerprint> {
    let old = shared
        .keyring
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .replace(new.clone());
    let dropped: Vec<_> = old
        .map(|o| o.fingerprints())
        .unwrap_or_default()
        .into_iter()
        .filter(|f| !new.accepts(*f))
        .collect();
    {
        let mut retired = shared.retired.lock().unwrap_or_else(|p| p.into_inner());
        retired.retain(|f| !new.accepts(*f));
        for f in &dropped {
            if !retired.contains(f) {
                retired.push(*f);
            }
        }
    }
    tracing::info!(
        preferred = %new.preferred().fingerprint(),
        accepted = %keyring::list(new.fingerprints()),
        retired = %keyring::list(dropped.iter().copied()),
        "cluster secrets changed"
    );
    reconcile(shared, true);
    dropped
}

/// Closes connections on secrets no longer accepted and re-handshakes the ones we dialled on a
/// secret no longer preferred (at most every [`REHANDSHAKE_RETRY`] per connection, unless
/// `changed`).
pub(super) fn reconcile(shared: &Arc<Shared>, changed: bool) {
    let Some(keys) = shared.keyring() else {
        return;
    };
    let preferred = keys.preferred().fingerprint();
    let now = Instant::now();
    let mut dial: Vec<SocketAddr> = Vec::new();
    let mut inner = shared.lock();
    let current: Vec<_> = inner.mesh_ids();
    for (id, c) in inner.conns.iter_mut() {
        let Some(p) = &c.peer else { continue };
        let Some(fp) = p.secret.as_ref().map(|s| s.fingerprint()) else {
            continue;
        };
        if !keys.accepts(fp) {
            tracing::warn!(peer = %p.name, nickname = %p.nickname, "closing the connection: its secret (fingerprint {fp}) is no longer accepted");
            c.close.notify_one();
            continue;
        }
        let due = changed
            || c.rehandshake_at
                .is_none_or(|t| now.duration_since(t) >= REHANDSHAKE_RETRY);
        if fp != preferred && p.outbound && current.contains(id) && due {
            tracing::info!(peer = %p.name, nickname = %p.nickname, "re-handshaking: the connection uses secret {fp}, the preferred one is {preferred}");
            c.rehandshake_at = Some(now);
            dial.push(p.tcp_addr);
        }
    }
    drop(inner);
    for addr in dial {
        let shared = shared.clone();
        tokio::spawn(async move {
            let stream =
                tokio::time::timeout(shared.cfg.handshake_timeout, TcpStream::connect(addr))
                    .await
                    .map_err(|_| Error::Closed("connect timed out".into()))
                    .and_then(|r| r.map_err(Error::Io));
            let outcome = match stream {
                Ok(s) => run_conn(&shared, s, addr, true).await,
                Err(e) => Outcome::Refused(e),
            };
            if let Outcome::Refused(e) = outcome {
                tracing::warn!(%addr, "re-handshake with the preferred secret failed, the connection stays on its secret: {e}");
            }
        });
    }
}
