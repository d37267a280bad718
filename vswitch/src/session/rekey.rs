//! The key schedule of one peer pair: when to rekey, and the hand-off to new keys.
//!
//! The control plane runs the handshake; this module only decides and installs. A rekey replaces
//! both directions' keys with a new epoch (the same number in both directions):
//!
//! 1. Either side sees [`Session::rekey_due`] and starts a handshake as initiator, proposing
//!    [`Session::next_epoch`].
//! 2. The responder, before it answers, calls [`Session::install_as_responder`]: it accepts the
//!    new epoch on receive at once (the old one still opens) but keeps sending with the old key,
//!    because the initiator may not have the new keys yet.
//! 3. The initiator receives the answer and calls [`Session::install_as_initiator`]: it accepts
//!    the new epoch on receive and sends with the new key at once, since the responder already
//!    holds the matching receive key.
//! 4. The responder's first datagram that opens under the new epoch proves the initiator has
//!    switched: its receive side makes the new key current (the old one stays for
//!    [`RekeyPolicy::grace`] so stragglers still open) and its send side switches too.
//!    [`Session::confirm`] does the same on an explicit confirmation from the control plane,
//!    for an initiator with nothing to send.
//! 5. The initiator's first datagram under the new epoch from the responder does the same on its
//!    receive side. After the grace period the old receive keys are dropped on both sides.
//!
//! No datagram is lost to the switch: each side sends with a key only once the other holds it,
//! and each keeps the old receive key until the grace period after the peer stopped using it.

use super::key::Key;
use super::open::{KeyEpochs, Opener};
use super::seal::Sealer;
use super::CryptoError;
use core::fmt;
use core::ops::Range;
use std::time::{Duration, Instant};

/// When a session's keys must be replaced, and how long an old receive key lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RekeyPolicy {
    /// Rekey once the send key is this old.
    pub max_age: Duration,
    /// Rekey once the send key has sealed this many datagrams.
    pub max_packets: u64,
    /// How long a receive key keeps opening datagrams after the peer switched away from it; also
    /// how long a responder waits for the initiator's first datagram under new keys before a
    /// rekey is due again.
    pub grace: Duration,
}

impl RekeyPolicy {
    /// Two minutes, as WireGuard does: bounds how much traffic one key protects and how far
    /// back a compromised key reaches.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(120);
    /// 2^32 datagrams: far below any ChaCha20-Poly1305 limit, and about 70 minutes at 1 million
    /// datagrams per second, so age is normally what triggers.
    pub const DEFAULT_MAX_PACKETS: u64 = 1 << 32;
    /// Ten seconds: far longer than any datagram stays in flight or queued.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
}

impl Default for RekeyPolicy {
    fn default() -> Self {
        RekeyPolicy {
            max_age: Self::DEFAULT_MAX_AGE,
            max_packets: Self::DEFAULT_MAX_PACKETS,
            grace: Self::DEFAULT_GRACE,
        }
    }
}

/// A send key the responder holds back until the initiator is known to have switched.
pub(super) struct Pending {
    pub(super) epoch: u8,
    pub(super) key: Key,
    pub(super) since: Instant,
}

/// Both directions of an encrypted peer pair, with its rekey state machine. Single-owner: a data
/// plane that seals and opens on different threads keeps it behind one lock taken per batch.
///
/// A session may be without a send key (nothing is sealed, [`CryptoError::NoSendKey`]) or
/// without any key at all ([`Session::empty`]: nothing opens either) until the keys of a new
/// control connection are handed over (`handover.rs`).
pub struct Session {
    pub(super) policy: RekeyPolicy,
    pub(super) sealer: Option<Sealer>,
    pub(super) opener: Option<Opener>,
    pub(super) pending: Option<Pending>,
    pub(super) latest: u8,
}

impl Session {
    /// A session with the keys of the first handshake, numbered `epoch` (both sides must agree).
    pub fn new(now: Instant, epoch: u8, send: Key, recv: Key, policy: RekeyPolicy) -> Session {
        Session {
            policy,
            sealer: Some(Sealer::new(now, epoch, send)),
            opener: Some(Opener::new(epoch, recv, policy.grace)),
            pending: None,
            latest: epoch,
        }
    }

    /// A session without keys: nothing seals ([`CryptoError::NoSendKey`]) or opens
    /// ([`CryptoError::UnknownKey`]) until keys are installed (either install, or a handover).
    /// The first epoch it proposes is 0.
    pub fn empty(policy: RekeyPolicy) -> Session {
        Session {
            policy,
            sealer: None,
            opener: None,
            pending: None,
            latest: u8::MAX,
        }
    }

    /// Seals a plain datagram in place with the current send key; see
    /// [`Sealer::seal_in_place`]. [`CryptoError::NoSendKey`] while there is none (the peer has
    /// not yet shown it holds the only keys this side has).
    pub fn seal_in_place(
        &mut self,
        buf: &mut [u8],
        plain_len: usize,
    ) -> Result<usize, CryptoError> {
        match &mut self.sealer {
            Some(s) => s.seal_in_place(buf, plain_len),
            None => Err(CryptoError::NoSendKey),
        }
    }

    /// The next counter under the current send key, to seal with outside the session's lock;
    /// see [`Sealer::ticket`]. [`CryptoError::NoSendKey`] while there is none.
    pub fn ticket(&mut self) -> Result<super::SealTicket, CryptoError> {
        match &mut self.sealer {
            Some(s) => s.ticket(),
            None => Err(CryptoError::NoSendKey),
        }
    }

    /// Opens a datagram in place; see [`Opener::open_in_place`]. A datagram that opens under the
    /// epoch a responder holds back its send key for also switches sending to that key.
    pub fn open_in_place(
        &mut self,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<Range<usize>, CryptoError> {
        let ticket = self.open_ticket(now, buf)?;
        let range = ticket.open_in_place(buf)?;
        self.finish_open(now, &ticket)?;
        Ok(range)
    }

    /// The key for a received datagram, to decrypt it outside the session's lock; see
    /// [`Opener::ticket`]. [`CryptoError::UnknownKey`] while there is no receive key.
    pub fn open_ticket(
        &mut self,
        now: Instant,
        buf: &[u8],
    ) -> Result<super::OpenTicket, CryptoError> {
        let opener = self.opener.as_mut().ok_or(CryptoError::UnknownKey)?;
        opener.ticket(now, buf)
    }

    /// Records a datagram opened with `ticket`; see [`Opener::finish`]. Switches sending to a
    /// held-back key as [`Session::open_in_place`] says.
    pub fn finish_open(
        &mut self,
        now: Instant,
        ticket: &super::OpenTicket,
    ) -> Result<(), CryptoError> {
        let opener = self.opener.as_mut().ok_or(CryptoError::UnknownKey)?;
        opener.finish(now, ticket)?;
        let current = opener.epochs().current;
        if self.pending.as_ref().is_some_and(|p| p.epoch == current) {
            self.confirm(now);
        }
        Ok(())
    }

    /// True when the send key has reached [`RekeyPolicy::max_age`] or
    /// [`RekeyPolicy::max_packets`], unless this side is a responder still within
    /// [`RekeyPolicy::grace`] of installing new keys (the initiator's first datagram under them
    /// is on its way). Stays true until new keys are installed: the control plane paces retries.
    pub fn rekey_due(&self, now: Instant) -> bool {
        let waiting = self
            .pending
            .as_ref()
            .is_some_and(|p| now.saturating_duration_since(p.since) < self.policy.grace);
        let Some(sealer) = &self.sealer else {
            return false;
        };
        !waiting
            && (sealer.age(now) >= self.policy.max_age
                || sealer.sealed() >= self.policy.max_packets)
    }

    /// The epoch an initiator proposes for the next keys (it carries it in the handshake, and the
    /// responder installs under that number): one past the latest installed here, skipping the
    /// epochs of live receive keys after the `u8` wraps.
    pub fn next_epoch(&self) -> u8 {
        let mut epoch = self.latest.wrapping_add(1);
        let next = self.opener.as_ref().and_then(|o| o.epochs().next);
        while self.epoch_live(epoch) || next == Some(epoch) {
            epoch = epoch.wrapping_add(1);
        }
        epoch
    }

    /// Whether a receive key of `epoch` is current or in its grace period.
    pub(super) fn epoch_live(&self, epoch: u8) -> bool {
        self.opener
            .as_ref()
            .map(Opener::epochs)
            .is_some_and(|live| epoch == live.current || live.previous == Some(epoch))
    }

    /// Installs new keys on the initiator, after the responder's answer: receive accepts `epoch`
    /// (and still the old epoch, until the peer switches), send switches at once.
    /// [`CryptoError::EpochInUse`] if a receive key of `epoch` is current or in its grace period;
    /// nothing changes then.
    pub fn install_as_initiator(
        &mut self,
        now: Instant,
        epoch: u8,
        send: Key,
        recv: Key,
    ) -> Result<(), CryptoError> {
        self.install_recv(epoch, recv)?;
        self.install_send(now, epoch, send);
        self.pending = None;
        self.latest = epoch;
        Ok(())
    }

    /// Installs new keys on the responder, before it answers: receive accepts `epoch` at once,
    /// send keeps the old key until the initiator's first datagram under `epoch` opens (or
    /// [`Session::confirm`]). [`CryptoError::EpochInUse`] as for the initiator.
    pub fn install_as_responder(
        &mut self,
        now: Instant,
        epoch: u8,
        send: Key,
        recv: Key,
    ) -> Result<(), CryptoError> {
        self.install_recv(epoch, recv)?;
        self.pending = Some(Pending {
            epoch,
            key: send,
            since: now,
        });
        self.latest = epoch;
        Ok(())
    }

    /// Switches sending to the held-back key, on the control plane's word that the initiator has
    /// the new keys. Returns whether there was a key to switch to.
    pub fn confirm(&mut self, now: Instant) -> bool {
        match self.pending.take() {
            Some(p) => {
                self.install_send(now, p.epoch, p.key);
                true
            }
            None => false,
        }
    }

    /// The receive key of `epoch`: the next key, or the first key of an empty session.
    fn install_recv(&mut self, epoch: u8, recv: Key) -> Result<(), CryptoError> {
        match &mut self.opener {
            Some(o) => o.install_next(epoch, recv),
            None => {
                self.opener = Some(Opener::new(epoch, recv, self.policy.grace));
                Ok(())
            }
        }
    }

    fn install_send(&mut self, now: Instant, epoch: u8, send: Key) {
        match &mut self.sealer {
            Some(s) => s.install(now, epoch, send),
            None => self.sealer = Some(Sealer::new(now, epoch, send)),
        }
    }

    /// Drops receive keys whose grace period is over; call from a timer.
    pub fn retire_expired(&mut self, now: Instant) {
        if let Some(o) = &mut self.opener {
            o.retire_expired(now);
        }
    }

    /// The epoch datagrams are sealed with; `None` while there is no send key.
    pub fn send_epoch(&self) -> Option<u8> {
        self.sealer.as_ref().map(Sealer::epoch)
    }

    /// The AEAD datagrams are sealed with (that of the current send key); `None` while there is
    /// no send key.
    pub fn aead(&self) -> Option<super::Aead> {
        self.sealer.as_ref().map(Sealer::aead)
    }

    /// The epoch of the send key held back until the initiator switches, if any.
    pub fn pending_send_epoch(&self) -> Option<u8> {
        self.pending.as_ref().map(|p| p.epoch)
    }

    /// The epochs datagrams can be opened under; `None` for a session without keys.
    pub fn recv_epochs(&self) -> Option<KeyEpochs> {
        self.opener.as_ref().map(Opener::epochs)
    }

    /// The sending half, for its counters; `None` while there is no send key.
    pub fn sealer(&self) -> Option<&Sealer> {
        self.sealer.as_ref()
    }

    /// The receiving half; `None` for a session without keys.
    pub fn opener(&self) -> Option<&Opener> {
        self.opener.as_ref()
    }

    /// The policy in force.
    pub fn policy(&self) -> RekeyPolicy {
        self.policy
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("policy", &self.policy)
            .field("sealer", &self.sealer)
            .field("opener", &self.opener)
            .field("pending_send_epoch", &self.pending_send_epoch())
            .field("latest", &self.latest)
            .finish()
    }
}
