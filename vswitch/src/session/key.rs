//! Key material and the AEADs behind it.
//!
//! [`Aead`] names the two AEADs a sleeve can seal with (the control plane negotiates one per
//! neighbour pair: `gossip::cipher`). [`Key`] holds the 32 bytes the handshake produced for one
//! direction of one epoch, with the AEAD they are for; it zeroes them on drop and never prints
//! them. `Cipher` is the expanded key (`ring`) that sealers and openers keep: one `LessSafeKey`
//! whichever the AEAD, so sealing and opening take no branch of ours per datagram (`ring`
//! dispatches on the algorithm inside).

use super::format::{nonce, ENCRYPTED_HEADER_LEN, TAG_LEN};
use core::fmt;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use zeroize::Zeroizing;

/// Bytes of a key (both AEADs take 256-bit keys).
pub const KEY_LEN: usize = 32;

/// The AEAD a sleeve session seals with. Both have a 96-bit nonce and a 128-bit tag, so the
/// datagram layout is the same; only the keys and the bytes differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Aead {
    /// ChaCha20-Poly1305 (RFC 8439): fast in software everywhere; the default without AES
    /// hardware and what routers from before the negotiation use.
    ChaCha20Poly1305,
    /// AES-256-GCM: faster where the CPU has AES and carry-less multiply instructions.
    Aes256Gcm,
}

impl Aead {
    /// Every AEAD, in the order of the fallback (ChaCha20-Poly1305 first).
    pub const ALL: [Aead; 2] = [Aead::ChaCha20Poly1305, Aead::Aes256Gcm];

    /// The name used on the wire, in flags, config files and status: `chacha20-poly1305` or
    /// `aes-256-gcm`.
    pub const fn name(self) -> &'static str {
        match self {
            Aead::ChaCha20Poly1305 => "chacha20-poly1305",
            Aead::Aes256Gcm => "aes-256-gcm",
        }
    }

    /// The AEAD of a name ([`Aead::name`]); `None` for any other.
    pub fn from_name(name: &str) -> Option<Aead> {
        Aead::ALL.into_iter().find(|a| a.name() == name)
    }

    fn algorithm(self) -> &'static ring::aead::Algorithm {
        match self {
            Aead::ChaCha20Poly1305 => &CHACHA20_POLY1305,
            Aead::Aes256Gcm => &AES_256_GCM,
        }
    }
}

impl fmt::Display for Aead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A 32-byte key for one direction of one epoch, as the control plane's handshake produced it,
/// and the AEAD it is for. The bytes are zeroed when the key is dropped (`zeroize`), and `Debug`
/// does not show them.
///
/// Rust may leave copies of a value it moves; a key is taken by value once and then only
/// borrowed, to keep those to the handshake's own buffers, which the caller should zero.
pub struct Key(Zeroizing<[u8; KEY_LEN]>, Aead);

impl Key {
    /// Wraps raw key bytes for ChaCha20-Poly1305 (what every router before the negotiation
    /// uses).
    pub fn new(bytes: [u8; KEY_LEN]) -> Key {
        Key::for_aead(Aead::ChaCha20Poly1305, bytes)
    }

    /// Wraps raw key bytes for `aead`.
    pub fn for_aead(aead: Aead, bytes: [u8; KEY_LEN]) -> Key {
        Key(Zeroizing::new(bytes), aead)
    }

    /// Copies a ChaCha20-Poly1305 key out of a slice of exactly [`KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Key> {
        if bytes.len() != KEY_LEN {
            return None;
        }
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        k.copy_from_slice(bytes);
        Some(Key(k, Aead::ChaCha20Poly1305))
    }

    /// The AEAD the key is for.
    pub fn aead(&self) -> Aead {
        self.1
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({}, ..)", self.1)
    }
}

/// An expanded key of either AEAD.
///
/// `ring` keeps its own copy of the key and does not zero it on drop; `Drop` here overwrites that
/// copy in place with an all-zero key and passes it through `black_box` so the store is not
/// optimised away. That is as far as safe Rust can go; see `docs/encryption.md`.
pub(crate) struct Cipher {
    key: LessSafeKey,
    aead: Aead,
}

impl Cipher {
    pub(crate) fn new(key: &Key) -> Cipher {
        Cipher {
            key: LessSafeKey::new(expand(key.1, &key.0)),
            aead: key.1,
        }
    }

    /// The AEAD.
    pub(crate) fn aead(&self) -> Aead {
        self.aead
    }

    /// Encrypts `body` in place and returns the tag. `None` only for a body longer than the
    /// AEAD allows (64 GiB for AES-256-GCM, 256 GiB for ChaCha20-Poly1305), which no datagram is.
    pub(crate) fn seal(
        &self,
        counter: u64,
        aad: &[u8; ENCRYPTED_HEADER_LEN],
        body: &mut [u8],
    ) -> Option<[u8; TAG_LEN]> {
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce(counter)),
                Aad::from(aad),
                body,
            )
            .ok()?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Some(out)
    }

    /// Checks the tag at the end of `body_and_tag` and decrypts the rest in place; returns false
    /// (with the buffer's contents unspecified) when the tag does not verify.
    pub(crate) fn open(
        &self,
        counter: u64,
        aad: &[u8; ENCRYPTED_HEADER_LEN],
        body_and_tag: &mut [u8],
    ) -> bool {
        self.key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce(counter)),
                Aad::from(aad),
                body_and_tag,
            )
            .is_ok()
    }
}

impl Drop for Cipher {
    fn drop(&mut self) {
        self.key = LessSafeKey::new(expand(self.aead, &[0u8; KEY_LEN]));
        core::hint::black_box(&self.key);
    }
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cipher({})", self.aead)
    }
}

fn expand(aead: Aead, bytes: &[u8; KEY_LEN]) -> UnboundKey {
    // The only error `UnboundKey::new` has is a key of the wrong length, which the array rules
    // out (both AEADs take 32 bytes); its `Result` is a formality here.
    match UnboundKey::new(aead.algorithm(), bytes) {
        Ok(k) => k,
        Err(_) => unreachable!("a 32-byte key is always accepted by both AEADs"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_key_bytes() {
        let k = Key::new([0xab; KEY_LEN]);
        let text = format!("{k:?} {:?}", Cipher::new(&k));
        assert!(!text.contains("ab") && !text.contains("171"), "{text}");
    }

    #[test]
    fn from_slice_wants_exactly_32_bytes() {
        assert!(Key::from_slice(&[1; 32]).is_some());
        assert!(Key::from_slice(&[1; 31]).is_none());
        assert!(Key::from_slice(&[1; 33]).is_none());
    }

    #[test]
    fn seal_then_open() {
        for aead in Aead::ALL {
            let c = Cipher::new(&Key::for_aead(aead, [3; KEY_LEN]));
            assert_eq!(c.aead(), aead);
            let aad = [9u8; ENCRYPTED_HEADER_LEN];
            let mut buf = *b"hello, sleeve...................";
            let tag = c.seal(1, &aad, &mut buf[..16]).unwrap();
            buf[16..].copy_from_slice(&tag);
            assert!(
                !c.open(2, &aad, &mut buf.clone()),
                "{aead}: another counter"
            );
            assert!(c.open(1, &aad, &mut buf), "{aead}");
            assert_eq!(&buf[..16], b"hello, sleeve...");
        }
    }

    #[test]
    fn the_same_key_bytes_under_the_other_aead_do_not_open() {
        let aad = [9u8; ENCRYPTED_HEADER_LEN];
        let chacha = Cipher::new(&Key::for_aead(Aead::ChaCha20Poly1305, [3; KEY_LEN]));
        let aes = Cipher::new(&Key::for_aead(Aead::Aes256Gcm, [3; KEY_LEN]));
        let mut buf = *b"hello, sleeve...................";
        let tag = chacha.seal(1, &aad, &mut buf[..16]).unwrap();
        buf[16..].copy_from_slice(&tag);
        assert!(!aes.open(1, &aad, &mut buf.clone()));
        let mut buf = *b"hello, sleeve...................";
        let tag = aes.seal(1, &aad, &mut buf[..16]).unwrap();
        buf[16..].copy_from_slice(&tag);
        assert!(!chacha.open(1, &aad, &mut buf.clone()));
        assert!(aes.open(1, &aad, &mut buf));
    }

    #[test]
    fn names_round_trip() {
        for a in Aead::ALL {
            assert_eq!(Aead::from_name(a.name()), Some(a));
            assert_eq!(a.to_string(), a.name());
        }
        assert_eq!(Aead::from_name("aes-128-gcm"), None);
    }
}
