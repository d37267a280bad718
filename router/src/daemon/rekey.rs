//! Rekeying the data sessions: proposing new key material to each encrypted neighbour on the
//! control channel when a session is old or has carried enough packets, and answering proposals;
//! and the listener's half of handing a session over to a new connection's keys
//! ([`Message::Handover`]). Only messages that came on the neighbour's current connection count.
//! Every key keeps the AEAD the pair chose on that connection (`gossip::cipher`).

use super::*;
use gossip::proto::Message;
use std::time::{Duration, Instant};
use vswitch::{Key, PeerName};

impl Daemon {
    /// Handles the rekey and handover messages of the control channel, which came on connection
    /// `conn` (see docs/encryption.md).
    pub(super) fn on_rekey(
        &self,
        from: PeerName,
        msg: Message,
        conn: u64,
        conn_secret: Option<Arc<gossip::secure::Secret>>,
    ) {
        if let Message::Probe { age_ms } = msg {
            if let Some(p) = lock(&self.fast_peers).get_mut(&from) {
                p.report = age_ms.map(|a| (Duration::from_millis(a), Instant::now()));
            }
            return;
        }
        // Keys derive with the secret of the connection the proposal came on (the rekey's
        // initiator used the same one: its proposal went on that connection).
        let Some(secret) = conn_secret else {
            return;
        };
        let now = Instant::now();
        let mut neighbors = lock(&self.neighbors);
        let Some(n) = neighbors.get_mut(&from) else {
            return;
        };
        // A message from a connection since replaced concerns keys no longer in play.
        if n.info.conn != conn {
            tracing::debug!(peer = %from, "ignoring a key message from a replaced connection");
            return;
        }
        let Some(session) = n.session.clone() else {
            return;
        };
        match msg {
            Message::Handover { epoch } => {
                let Some(k) = n.info.keys.as_ref().filter(|_| !n.info.outbound) else {
                    return;
                };
                let (send, recv) = session_keys(k);
                let how = lock(&session).handover_as_listener(now, epoch, send, recv);
                self.gossip.send_on(conn, Message::HandoverAck { epoch });
                tracing::info!(peer = %from, epoch, ?how, "data keys of the new connection installed");
                let addr = self.udp_addr(n);
                drop(neighbors);
                self.send_heartbeat(from, addr);
            }
            Message::HandoverAck { epoch } => {
                let confirmed = {
                    let mut s = lock(&session);
                    s.pending_send_epoch() == Some(epoch) && s.confirm(now)
                };
                if confirmed {
                    tracing::debug!(peer = %from, epoch, "sending with the new connection's keys");
                    let addr = self.udp_addr(n);
                    drop(neighbors);
                    self.send_heartbeat(from, addr);
                }
            }
            Message::Rekey { epoch, material } => {
                let Some(material) = unhex32(&material) else {
                    tracing::warn!(peer = %from, "malformed rekey material");
                    return;
                };
                let keys =
                    gossip::secure::derive_data_keys(&material, &secret, false).bind(pair_aead(n));
                let (send, recv) = session_keys(&keys);
                let installed = lock(&session).install_as_responder(now, epoch, send, recv);
                match installed {
                    Ok(()) => {
                        n.rekeys += 1;
                        self.gossip.send_to(from, Message::RekeyAck { epoch });
                    }
                    Err(e) => tracing::warn!(peer = %from, epoch, "rekey refused: {e:?}"),
                }
            }
            Message::RekeyAck { epoch } => {
                let Some((e, material, _, ref ours)) = n.rekey else {
                    return;
                };
                if e != epoch {
                    return;
                }
                let keys =
                    gossip::secure::derive_data_keys(&material, ours, true).bind(pair_aead(n));
                n.rekey = None;
                let (send, recv) = session_keys(&keys);
                match lock(&session).install_as_initiator(now, epoch, send, recv) {
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
    pub(super) fn rekey_round(&self) {
        let now = Instant::now();
        lock(&self.recent).retain(|_, r| now.duration_since(r.at) < KEEP_SESSION_AFTER_DOWN);
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
                .as_ref()
                .is_some_and(|(_, _, sent, _)| now.duration_since(*sent) < Duration::from_secs(5))
            {
                continue;
            }
            let epoch = s.next_epoch();
            drop(s);
            let material: [u8; 32] = rand::random();
            let Some(secret) = n.info.secret.clone() else {
                continue;
            };
            if self.gossip.send_to(
                n.info.name,
                Message::Rekey {
                    epoch,
                    material: hex(&material),
                },
            ) {
                n.rekey = Some((epoch, material, now, secret));
            }
        }
    }
}

/// The session keys of a pair's data keys, for the AEAD they are bound to.
pub(super) fn session_keys(k: &gossip::secure::DataKeys) -> (Key, Key) {
    (Key::for_aead(k.aead, k.send), Key::for_aead(k.aead, k.recv))
}

/// The AEAD the pair chose on its current connection: rekeys keep it (ChaCha20-Poly1305 for a
/// neighbour without keys, which has no session to rekey either).
fn pair_aead(n: &Neighbor) -> vswitch::Aead {
    n.info
        .keys
        .as_ref()
        .map_or(vswitch::Aead::ChaCha20Poly1305, |k| k.aead)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let b = [7u8; 32];
        assert_eq!(unhex32(&hex(&b)), Some(b));
        assert_eq!(unhex32("zz"), None);
    }
}
