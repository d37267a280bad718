//! The sending half: one key, one counter.

use super::format::{self, ENCRYPTED_HEADER_LEN, HEADROOM, TAG_LEN};
use super::key::{Aead, Cipher, Key};
use super::CryptoError;
use crate::wire::sleeve::HEADER_LEN;
use core::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The number of datagrams one send key may seal: counters `0 .. COUNTER_LIMIT`. The last 64-bit
/// value is never used, so the counter cannot wrap. A [`RekeyPolicy`](super::RekeyPolicy) asks
/// for a new key long before.
pub const COUNTER_LIMIT: u64 = u64::MAX;

/// Seals datagrams with the send key of the current epoch. Each datagram takes the next counter,
/// so no nonce repeats under a key.
pub struct Sealer {
    cipher: Arc<Cipher>,
    epoch: u8,
    counter: u64,
    installed: Instant,
}

impl Sealer {
    /// A sealer for `key`, known to the peer as `epoch`, starting at counter 0. `now` is when
    /// the key was installed, for [`Sealer::age`].
    pub fn new(now: Instant, epoch: u8, key: Key) -> Sealer {
        Sealer {
            cipher: Arc::new(Cipher::new(&key)),
            epoch,
            counter: 0,
            installed: now,
        }
    }

    /// Takes the next counter and a handle on the key, to seal one datagram later with
    /// [`SealTicket::seal_in_place`]: the data plane takes the ticket under the lock that
    /// guards the session and seals outside it, so that workers sealing for one peer do not wait
    /// for each other's encryption. A ticket that is never used leaves a gap in the counters,
    /// which the peer's replay window tolerates. [`CryptoError::CounterExhausted`] when the key
    /// has sealed [`COUNTER_LIMIT`] datagrams.
    pub fn ticket(&mut self) -> Result<SealTicket, CryptoError> {
        if self.counter == COUNTER_LIMIT {
            return Err(CryptoError::CounterExhausted);
        }
        let counter = self.counter;
        self.counter += 1;
        Ok(SealTicket {
            cipher: self.cipher.clone(),
            epoch: self.epoch,
            counter,
        })
    }

    /// Encrypts a plain datagram in place.
    ///
    /// `buf[HEADROOM .. HEADROOM + plain_len]` holds a plain sleeve datagram (header with flags
    /// 0, then the body) and `buf` has at least [`TAG_LEN`] bytes after it. On success
    /// `buf[.. plain_len + OVERHEAD]` is the encrypted datagram and its length is returned.
    ///
    /// Errors: [`CryptoError::BufferTooSmall`] when `buf` is too short,
    /// [`CryptoError::Malformed`] when the plain header does not parse (flags must be 0),
    /// [`CryptoError::CounterExhausted`] when the key has sealed [`COUNTER_LIMIT`] datagrams. On
    /// error `buf` is unchanged.
    ///
    /// [`OVERHEAD`]: super::OVERHEAD
    pub fn seal_in_place(
        &mut self,
        buf: &mut [u8],
        plain_len: usize,
    ) -> Result<usize, CryptoError> {
        check_plain(buf, plain_len)?;
        self.ticket()?.seal_in_place(buf, plain_len)
    }

    /// Switches to a new send key: call once the peer holds the matching receive key. The old key
    /// is zeroed; the counter starts again at 0.
    pub fn install(&mut self, now: Instant, epoch: u8, key: Key) {
        self.cipher = Arc::new(Cipher::new(&key));
        self.epoch = epoch;
        self.counter = 0;
        self.installed = now;
    }

    /// The AEAD of the current send key.
    pub fn aead(&self) -> Aead {
        self.cipher.aead()
    }

    /// The epoch of the current send key.
    pub fn epoch(&self) -> u8 {
        self.epoch
    }

    /// Datagrams sealed under the current key (also the next counter).
    pub fn sealed(&self) -> u64 {
        self.counter
    }

    /// How long the current key has been in use.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.installed)
    }

    /// Test hook: pretend `used` counters are gone, to reach [`COUNTER_LIMIT`] quickly.
    #[cfg(test)]
    pub(crate) fn skip_counters(&mut self, used: u64) {
        self.counter = used;
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("aead", &self.cipher.aead())
            .field("epoch", &self.epoch)
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

/// One counter under one send key, taken with [`Sealer::ticket`]: seals exactly one datagram.
/// The key stays alive (and is zeroed when dropped) as long as a ticket holds it, even if the
/// session has moved to a new key meanwhile.
pub struct SealTicket {
    cipher: Arc<Cipher>,
    epoch: u8,
    counter: u64,
}

impl SealTicket {
    /// Encrypts a plain datagram in place under this ticket's key and counter, as
    /// [`Sealer::seal_in_place`] describes (same buffer layout, same errors but
    /// [`CryptoError::CounterExhausted`], which the ticket's taking already reported).
    pub fn seal_in_place(self, buf: &mut [u8], plain_len: usize) -> Result<usize, CryptoError> {
        let (end, total) = check_plain(buf, plain_len)?;
        let clear = format::write_clear(buf, self.epoch, self.counter);
        let aad = format::associated_data(&clear);
        let Some(tag) = self
            .cipher
            .seal(self.counter, &aad, &mut buf[ENCRYPTED_HEADER_LEN..end])
        else {
            // Unreachable for any datagram (the AEAD takes up to 256 GiB); undo the header move
            // so the error leaves `buf` as it was.
            format::restore_plain_header(buf);
            return Err(CryptoError::Malformed);
        };
        buf[end..total].copy_from_slice(&tag);
        Ok(total)
    }

    /// The counter this ticket seals under.
    pub fn counter(&self) -> u64 {
        self.counter
    }
}

impl fmt::Debug for SealTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealTicket")
            .field("epoch", &self.epoch)
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

/// Checks a buffer for sealing: the plain datagram's end and the sealed datagram's length, or
/// [`CryptoError::BufferTooSmall`] / [`CryptoError::Malformed`].
fn check_plain(buf: &[u8], plain_len: usize) -> Result<(usize, usize), CryptoError> {
    let end = HEADROOM
        .checked_add(plain_len)
        .ok_or(CryptoError::BufferTooSmall)?;
    let total = end
        .checked_add(TAG_LEN)
        .ok_or(CryptoError::BufferTooSmall)?;
    if buf.len() < total {
        return Err(CryptoError::BufferTooSmall);
    }
    if plain_len < HEADER_LEN || !format::plain_header_ok(&buf[HEADROOM..end]) {
        return Err(CryptoError::Malformed);
    }
    Ok((end, total))
}
