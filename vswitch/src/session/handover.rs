//! Handing a session over to the keys of a new control connection (a re-handshake onto another
//! secret, a redial, a simultaneous dial), without a datagram lost or refused.
//!
//! Each end of the new connection derives the same pair of keys from its handshake, but the two
//! ends learn of the connection at different moments, and may not even agree that it replaced
//! one (one end may have seen the old connection close first, or had no session yet). The
//! invariant kept: **at any moment, each end can open whatever the other end seals with**. So
//! the new keys are run like a rekey whose roles are fixed by the connection's direction:
//!
//! 1. The dialler, as soon as the connection is up, calls [`Session::handover_as_dialler`]: it
//!    accepts the new keys on receive under an epoch it chooses (not live on its side), keeps
//!    sending with whatever it sent with before (nothing, in a session without keys), and tells
//!    the listener the epoch over the new connection.
//! 2. The listener, on that message, calls [`Session::handover_as_listener`]: it accepts the new
//!    epoch on receive (its old receive keys keep opening) and sends with the new key at once,
//!    since the dialler holds it. It answers over the connection.
//! 3. The dialler switches to the new send key on the first datagram that opens under the new
//!    epoch or on the answer ([`Session::confirm`]), whichever comes first; its old receive key
//!    stays for the grace period, for datagrams sealed before the listener switched.
//!
//! A hand-over drops no receive key the peer may be sending with: a `next` key of an earlier
//! hand-over or rekey that the peer has not been seen using yet becomes current (the current one
//! previous, for the grace period) rather than being replaced. This matters when two new
//! connections follow each other (a re-handshake in one direction, then a redial in the other).
//!
//! An end that had no session for the peer starts from [`Session::empty`]; an epoch the dialler
//! chose that the listener holds as current or next (the two ends were out of step, so those
//! keys are not what the dialler sends with) makes the listener start over with the new keys
//! alone ([`Handover::Fresh`]).

use super::key::Key;
use super::rekey::{Pending, Session};
use super::seal::Sealer;
use super::Opener;
use std::time::Instant;

/// What [`Session::handover_as_listener`] did with the old keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// The old receive keys keep opening alongside the new ones (until the dialler's first
    /// datagram under the new epoch, then for the grace period).
    Overlap,
    /// The session holds the new keys only: it had none, or its current receive epoch was the
    /// one the dialler chose.
    Fresh,
}

impl Session {
    /// On the dialler of a new control connection, as soon as it is up: the connection's keys are
    /// accepted on receive under the returned epoch, which the listener must be told; sending
    /// goes on with the old key (or stays impossible, without one) until the listener is known to
    /// hold the new keys: its first datagram under the epoch, or [`Session::confirm`].
    pub fn handover_as_dialler(&mut self, now: Instant, send: Key, recv: Key) -> u8 {
        let epoch = self.next_epoch();
        match &mut self.opener {
            // `next_epoch` is never a live epoch: the install cannot be refused.
            Some(o) => o.put_next_keeping(now, epoch, recv),
            None => self.opener = Some(Opener::new(epoch, recv, self.policy.grace)),
        }
        self.pending = Some(Pending {
            epoch,
            key: send,
            since: now,
        });
        self.latest = epoch;
        epoch
    }

    /// On the listener of a new control connection, when the dialler has said under which epoch
    /// it accepts the connection's keys: they are accepted on receive (next to the old keys) and
    /// sent with at once.
    pub fn handover_as_listener(
        &mut self,
        now: Instant,
        epoch: u8,
        send: Key,
        recv: Key,
    ) -> Handover {
        let how = match &mut self.opener {
            None => {
                self.opener = Some(Opener::new(epoch, recv, self.policy.grace));
                Handover::Fresh
            }
            Some(o) if o.epochs().current == epoch || o.epochs().next == Some(epoch) => {
                *self = Session::new(now, epoch, send, recv, self.policy);
                return Handover::Fresh;
            }
            Some(o) => {
                if o.epochs().previous == Some(epoch) {
                    o.forget_previous();
                }
                o.put_next_keeping(now, epoch, recv);
                Handover::Overlap
            }
        };
        match &mut self.sealer {
            Some(s) => s.install(now, epoch, send),
            None => self.sealer = Some(Sealer::new(now, epoch, send)),
        }
        self.pending = None;
        self.latest = epoch;
        how
    }
}
