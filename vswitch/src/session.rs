//! The encrypted sleeve: sealing and opening datagrams with per-peer keys, the replay window and
//! the key schedule (rekeying). Pure and sans-IO like the rest of the crate: keys come from the
//! control plane's handshake, time is passed in, nothing here sleeps, spawns or logs.
//!
//! An encrypted datagram is a plain sleeve datagram whose body has been encrypted and
//! authenticated with the AEAD of its key ([`Aead`]: ChaCha20-Poly1305 or AES-256-GCM, `ring`),
//! with the header left in clear so that relays can
//! route it and decrement its ttl without holding any key:
//!
//! ```text
//! | sleeve header (20, flags bit 0 set) | epoch (1) | counter (8) | ciphertext of body | tag (16) |
//! ```
//!
//! That is [`OVERHEAD`] (25) bytes more than the plain datagram. One AEAD operation covers the whole
//! body, however many frame records it holds. `docs/encryption.md` is the reference: the byte
//! layout, the associated data, the nonce, the rekey sequence and the benchmark behind the choice
//! of `ring`.
//!
//! The pieces:
//!
//! - [`Sealer`]: the send key of the current epoch and its counter;
//!   [`Sealer::seal_in_place`] turns a plain datagram into an encrypted one without allocating.
//! - [`Opener`]: the receive keys (current, the next one being handed over, the previous one in
//!   its grace period), each with a [`ReplayWindow`]; [`Opener::open_in_place`] turns an encrypted
//!   datagram back into a plain one that [`SleeveDatagram`](crate::wire::SleeveDatagram) parses.
//! - [`Session`]: both halves plus a [`RekeyPolicy`]: says when a rekey is due and performs the
//!   hand-off to new keys without losing traffic; also the hand-over to the keys of a new control
//!   connection ([`Session::handover_as_dialler`], [`Session::handover_as_listener`]).
//! - [`EncryptedDatagram`]: a checked view of the clear parts, for relays.
//!
//! Buffers are laid out so that neither direction moves the body: the plain datagram sits
//! [`HEADROOM`] bytes into the buffer, exactly where the encrypted body goes.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use vswitch::session::{Key, Opener, Sealer, HEADROOM, TAG_LEN};
//! use vswitch::wire::sleeve::{push_frame, PeerName, SleeveDatagram, SleeveHeader};
//!
//! let now = Instant::now();
//! let mut sealer = Sealer::new(now, 0, Key::new([7; 32]));
//! let mut opener = Opener::new(0, Key::new([7; 32]), Duration::from_secs(10));
//!
//! // Build the plain datagram HEADROOM bytes in, leaving TAG_LEN bytes free after it.
//! let mut buf = [0u8; 128];
//! let plain = &mut buf[HEADROOM..];
//! let len = SleeveHeader::frames(PeerName(1), PeerName(2)).emit(plain).unwrap();
//! let len = push_frame(plain, len, b"an ethernet frame").unwrap();
//! assert!(buf.len() >= HEADROOM + len + TAG_LEN);
//! let sent = sealer.seal_in_place(&mut buf, len).unwrap();
//!
//! // On the receiving host: open, then parse the plain datagram as usual.
//! let range = opener.open_in_place(now, &mut buf[..sent]).unwrap();
//! let d = SleeveDatagram::new_checked(&buf[range]).unwrap();
//! assert_eq!(d.frames().next(), Some(Ok(&b"an ethernet frame"[..])));
//! ```

mod format;
mod handover;
mod key;
mod open;
mod rekey;
mod replay;
mod seal;

pub use format::{
    is_encrypted, EncryptedDatagram, COUNTER_LEN, ENCRYPTED_HEADER_LEN, EPOCH_LEN, FLAG_ENCRYPTED,
    HEADROOM, MIN_ENCRYPTED_LEN, OVERHEAD, TAG_LEN,
};
pub use handover::Handover;
pub use key::{Aead, Key, KEY_LEN};
pub use open::{KeyEpochs, OpenTicket, Opener};
pub use rekey::{RekeyPolicy, Session};
pub use replay::{ReplayWindow, REPLAY_WINDOW};
pub use seal::{SealTicket, Sealer, COUNTER_LIMIT};

/// Why a datagram could not be sealed or opened, or a key not installed. Cheap and `Copy`: the
/// router counts drops per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum CryptoError {
    /// Not a well-formed encrypted datagram (too short, wrong version, kind or flags, source 0);
    /// or, when sealing, the plain datagram is not a valid sleeve datagram.
    #[error("malformed encrypted datagram")]
    Malformed,
    /// No live receive key has the datagram's epoch: never installed, or retired after its grace
    /// period.
    #[error("no key for this epoch")]
    UnknownKey,
    /// The tag did not verify: corrupted, forged, or sealed under another key.
    #[error("authentication failed")]
    AuthFailed,
    /// Authentic, but its counter was already accepted: a duplicate or a replay.
    #[error("replayed")]
    Replayed,
    /// Authentic, but its counter is below the replay window: too late to tell whether it is a
    /// replay.
    #[error("too old")]
    TooOld,
    /// The send key has used every counter it may; nothing more can be sealed until a rekey.
    #[error("counter exhausted")]
    CounterExhausted,
    /// The buffer passed to seal has no room for the tag, or is shorter than the stated length.
    #[error("buffer too small")]
    BufferTooSmall,
    /// A key install named an epoch that a live key already has.
    #[error("epoch in use")]
    EpochInUse,
    /// Nothing can be sealed yet: the only keys this side holds are those of a new control
    /// connection, and the peer has not shown that it holds them (a handover in progress).
    #[error("no send key yet")]
    NoSendKey,
}

impl CryptoError {
    /// Every reason, for iterating counters.
    pub const ALL: [CryptoError; 9] = [
        CryptoError::Malformed,
        CryptoError::UnknownKey,
        CryptoError::AuthFailed,
        CryptoError::Replayed,
        CryptoError::TooOld,
        CryptoError::CounterExhausted,
        CryptoError::BufferTooSmall,
        CryptoError::EpochInUse,
        CryptoError::NoSendKey,
    ];

    /// A stable snake_case name for status output and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            CryptoError::Malformed => "malformed",
            CryptoError::UnknownKey => "unknown_key",
            CryptoError::AuthFailed => "auth_failed",
            CryptoError::Replayed => "replayed",
            CryptoError::TooOld => "too_old",
            CryptoError::CounterExhausted => "counter_exhausted",
            CryptoError::BufferTooSmall => "buffer_too_small",
            CryptoError::EpochInUse => "epoch_in_use",
            CryptoError::NoSendKey => "no_send_key",
        }
    }

    /// Index into a `[_; CryptoError::ALL.len()]` counter array.
    pub fn index(&self) -> usize {
        *self as usize
    }
}

#[cfg(test)]
mod handover_tests;
#[cfg(test)]
mod rekey_tests;
#[cfg(test)]
mod tests;
