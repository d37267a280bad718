//! The receiving half: up to three keys, each with its own replay window.

use super::format::{self, EncryptedDatagram, ENCRYPTED_HEADER_LEN, HEADROOM, TAG_LEN};
use super::key::{Cipher, Key};
use super::replay::ReplayWindow;
use super::CryptoError;
use core::fmt;
use core::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One receive key. Counters are per key, so each has its own window.
struct Slot {
    epoch: u8,
    cipher: Arc<Cipher>,
    window: ReplayWindow,
}

impl Slot {
    fn new(epoch: u8, key: &Key) -> Slot {
        Slot {
            epoch,
            cipher: Arc::new(Cipher::new(key)),
            window: ReplayWindow::new(),
        }
    }
}

/// Which slot an epoch selected.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Current,
    Next,
    Previous,
}

/// The epochs an [`Opener`] holds keys for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyEpochs {
    /// The key the peer used before its last switch, kept for stragglers until its grace period
    /// ends.
    pub previous: Option<u8>,
    /// The key the peer is sending with, as far as this side has seen.
    pub current: u8,
    /// A key installed by a rekey that the peer has not used yet.
    pub next: Option<u8>,
}

/// Opens datagrams from one peer. Holds the current receive key, at most one `next` key (installed
/// by a rekey, promoted to current by the first datagram that authenticates under it) and at most
/// one `previous` key (the current key before that promotion, kept for `grace` so datagrams sealed
/// just before the peer switched still open).
pub struct Opener {
    current: Slot,
    next: Option<Slot>,
    previous: Option<(Slot, Instant)>,
    grace: Duration,
}

impl Opener {
    /// An opener for the peer's key of `epoch`. `grace` is how long a key stays usable after the
    /// peer has switched away from it.
    pub fn new(epoch: u8, key: Key, grace: Duration) -> Opener {
        Opener {
            current: Slot::new(epoch, &key),
            next: None,
            previous: None,
            grace,
        }
    }

    /// Authenticates and decrypts an encrypted datagram in place, and returns the range of `buf`
    /// that now holds the plain sleeve datagram (header with flags 0, then the body), ready for
    /// [`SleeveDatagram::new_checked`](crate::wire::SleeveDatagram::new_checked). The range
    /// starts at [`HEADROOM`] and is [`OVERHEAD`](super::OVERHEAD) bytes shorter than `buf`.
    ///
    /// In order: the clear parts are checked ([`CryptoError::Malformed`]), the epoch picks a key
    /// ([`CryptoError::UnknownKey`]), the tag is verified ([`CryptoError::AuthFailed`]), and only
    /// then the counter is checked against and recorded in that key's window
    /// ([`CryptoError::Replayed`], [`CryptoError::TooOld`]). The first datagram that authenticates
    /// under the `next` key makes it current and starts the old current key's grace period. On
    /// error the contents of `buf` are unspecified and nothing in the opener changed, except that
    /// keys whose grace period is over at `now` are dropped.
    pub fn open_in_place(
        &mut self,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<Range<usize>, CryptoError> {
        let ticket = self.ticket(now, buf)?;
        let range = ticket.open_in_place(buf)?;
        self.finish(now, &ticket)?;
        Ok(range)
    }

    /// The first step of [`Opener::open_in_place`] split in three, so that the data plane
    /// decrypts outside the lock that guards the session: checks the clear parts and picks the
    /// key by epoch. Decrypt with [`OpenTicket::open_in_place`] (no lock), then record the
    /// counter with [`Opener::finish`] (under the lock again). Errors as `open_in_place`'s first
    /// two steps.
    pub fn ticket(&mut self, now: Instant, buf: &[u8]) -> Result<OpenTicket, CryptoError> {
        self.retire_expired(now);
        let d = EncryptedDatagram::new_checked(buf).map_err(|_| CryptoError::Malformed)?;
        let epoch = d.epoch();
        let which = self.find(epoch).ok_or(CryptoError::UnknownKey)?;
        Ok(OpenTicket {
            cipher: self.slot(which)?.cipher.clone(),
            epoch,
            counter: d.counter(),
        })
    }

    /// The last step: records the counter of a datagram `ticket` opened in its key's window
    /// ([`CryptoError::Replayed`], [`CryptoError::TooOld`]), and makes a `next` key current on
    /// its first datagram. [`CryptoError::UnknownKey`] if the key was replaced since the ticket
    /// was taken.
    pub fn finish(&mut self, now: Instant, ticket: &OpenTicket) -> Result<(), CryptoError> {
        let which = self.find(ticket.epoch).ok_or(CryptoError::UnknownKey)?;
        let slot = self.slot(which)?;
        if !Arc::ptr_eq(&slot.cipher, &ticket.cipher) {
            return Err(CryptoError::UnknownKey);
        }
        slot.window.accept(ticket.counter)?;
        if which == Which::Next {
            self.promote(now);
        }
        Ok(())
    }

    fn slot(&mut self, which: Which) -> Result<&mut Slot, CryptoError> {
        match which {
            Which::Current => Ok(&mut self.current),
            Which::Next => self.next.as_mut().ok_or(CryptoError::UnknownKey),
            Which::Previous => self
                .previous
                .as_mut()
                .map(|(s, _)| s)
                .ok_or(CryptoError::UnknownKey),
        }
    }

    /// Installs the peer's key for a new epoch as `next`, replacing any `next` not yet used (a
    /// retried handshake). Datagrams of the current epoch keep opening as before.
    /// [`CryptoError::EpochInUse`] if the current or previous key has this epoch.
    pub fn install_next(&mut self, epoch: u8, key: Key) -> Result<(), CryptoError> {
        if epoch == self.current.epoch
            || self
                .previous
                .as_ref()
                .is_some_and(|(s, _)| s.epoch == epoch)
        {
            return Err(CryptoError::EpochInUse);
        }
        self.put_next(epoch, key);
        Ok(())
    }

    /// Installs `next` without the check: the caller knows `epoch` is not live.
    pub(super) fn put_next(&mut self, epoch: u8, key: Key) {
        self.next = Some(Slot::new(epoch, &key));
    }

    /// Installs `next` for a hand-over (the caller knows `epoch` is not current or previous)
    /// without dropping a `next` key of another epoch, which the peer may be sending with
    /// already: that key becomes current and the current one previous, for the grace period
    /// from `now`. Only a key in its grace period (stragglers) can go.
    pub(super) fn put_next_keeping(&mut self, now: Instant, epoch: u8, key: Key) {
        if let Some(n) = self.next.take().filter(|n| n.epoch != epoch) {
            let old = core::mem::replace(&mut self.current, n);
            self.previous = Some((old, now + self.grace));
        }
        self.put_next(epoch, key);
    }

    /// Drops the previous key now, whatever its grace period (its epoch is about to be reused).
    pub fn forget_previous(&mut self) {
        self.previous = None;
    }

    /// Drops the previous key once its grace period is over (`open_in_place` does this too; call
    /// it from a timer so an idle peer's old key does not linger).
    pub fn retire_expired(&mut self, now: Instant) {
        if self
            .previous
            .as_ref()
            .is_some_and(|(_, until)| now >= *until)
        {
            self.previous = None;
        }
    }

    /// The epochs of the keys held.
    pub fn epochs(&self) -> KeyEpochs {
        KeyEpochs {
            previous: self.previous.as_ref().map(|(s, _)| s.epoch),
            current: self.current.epoch,
            next: self.next.as_ref().map(|s| s.epoch),
        }
    }

    /// The highest counter accepted under the current key.
    pub fn highest_counter(&self) -> Option<u64> {
        self.current.window.highest()
    }

    fn find(&self, epoch: u8) -> Option<Which> {
        if self.current.epoch == epoch {
            Some(Which::Current)
        } else if self.next.as_ref().is_some_and(|s| s.epoch == epoch) {
            Some(Which::Next)
        } else if self
            .previous
            .as_ref()
            .is_some_and(|(s, _)| s.epoch == epoch)
        {
            Some(Which::Previous)
        } else {
            None
        }
    }

    /// The peer has switched to `next`: it becomes current, and current becomes previous for the
    /// grace period. A key still in an earlier grace period is dropped.
    fn promote(&mut self, now: Instant) {
        if let Some(next) = self.next.take() {
            let old = core::mem::replace(&mut self.current, next);
            self.previous = Some((old, now + self.grace));
        }
    }
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("epochs", &self.epochs())
            .field("window", &self.current.window)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

/// One received datagram's key and counter, taken with [`Opener::ticket`]: decrypts that
/// datagram without the opener, then goes back to [`Opener::finish`].
pub struct OpenTicket {
    cipher: Arc<Cipher>,
    epoch: u8,
    counter: u64,
}

impl OpenTicket {
    /// Verifies the tag and decrypts `buf` (the datagram the ticket was taken for) in place;
    /// returns the range holding the plain datagram, as [`Opener::open_in_place`] does.
    /// [`CryptoError::AuthFailed`] if the tag does not verify; [`CryptoError::Malformed`] if
    /// `buf` is not the datagram the ticket was taken for.
    pub fn open_in_place(&self, buf: &mut [u8]) -> Result<Range<usize>, CryptoError> {
        let d = EncryptedDatagram::new_checked(&*buf).map_err(|_| CryptoError::Malformed)?;
        if (d.epoch(), d.counter()) != (self.epoch, self.counter) {
            return Err(CryptoError::Malformed);
        }
        let aad = d.associated_data();
        if !self
            .cipher
            .open(self.counter, &aad, &mut buf[ENCRYPTED_HEADER_LEN..])
        {
            return Err(CryptoError::AuthFailed);
        }
        format::restore_plain_header(buf);
        Ok(HEADROOM..buf.len() - TAG_LEN)
    }
}

impl fmt::Debug for OpenTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenTicket")
            .field("epoch", &self.epoch)
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}
