//! Key material and the AEAD behind it.
//!
//! [`Key`] holds the 32 bytes the handshake produced for one direction of one epoch; it zeroes
//! them on drop and never prints them. `Cipher` is the expanded ChaCha20-Poly1305 key (`ring`)
//! that sealers and openers keep.

use super::format::{nonce, ENCRYPTED_HEADER_LEN, TAG_LEN};
use core::fmt;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use zeroize::Zeroizing;

/// Bytes of a ChaCha20-Poly1305 key.
pub const KEY_LEN: usize = 32;

/// A 32-byte key for one direction of one epoch, as the control plane's handshake produced it.
/// The bytes are zeroed when the key is dropped (`zeroize`), and `Debug` does not show them.
///
/// Rust may leave copies of a value it moves; a key is taken by value once and then only
/// borrowed, to keep those to the handshake's own buffers, which the caller should zero.
pub struct Key(Zeroizing<[u8; KEY_LEN]>);

impl Key {
    /// Wraps raw key bytes.
    pub fn new(bytes: [u8; KEY_LEN]) -> Key {
        Key(Zeroizing::new(bytes))
    }

    /// Copies a key out of a slice of exactly [`KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Key> {
        if bytes.len() != KEY_LEN {
            return None;
        }
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        k.copy_from_slice(bytes);
        Some(Key(k))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// An expanded ChaCha20-Poly1305 key.
///
/// `ring` keeps its own copy of the key and does not zero it on drop; `Drop` here overwrites that
/// copy in place with an all-zero key and passes it through `black_box` so the store is not
/// optimised away. That is as far as safe Rust can go; see `docs/encryption.md`.
pub(crate) struct Cipher {
    key: LessSafeKey,
}

impl Cipher {
    pub(crate) fn new(key: &Key) -> Cipher {
        Cipher {
            key: LessSafeKey::new(expand(&key.0)),
        }
    }

    /// Encrypts `body` in place and returns the tag. `None` only for a body longer than
    /// ChaCha20-Poly1305 allows (256 GiB), which no datagram is.
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
        self.key = LessSafeKey::new(expand(&[0u8; KEY_LEN]));
        core::hint::black_box(&self.key);
    }
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher(ChaCha20-Poly1305)")
    }
}

fn expand(bytes: &[u8; KEY_LEN]) -> UnboundKey {
    // The only error `UnboundKey::new` has is a key of the wrong length, which the array rules
    // out; its `Result` is a formality here.
    match UnboundKey::new(&CHACHA20_POLY1305, bytes) {
        Ok(k) => k,
        Err(_) => unreachable!("a 32-byte ChaCha20-Poly1305 key is always accepted"),
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
        let c = Cipher::new(&Key::new([3; KEY_LEN]));
        let aad = [9u8; ENCRYPTED_HEADER_LEN];
        let mut buf = *b"hello, sleeve...................";
        let tag = c.seal(1, &aad, &mut buf[..16]).unwrap();
        buf[16..].copy_from_slice(&tag);
        assert!(!c.open(2, &aad, &mut buf.clone()), "another counter");
        assert!(c.open(1, &aad, &mut buf));
        assert_eq!(&buf[..16], b"hello, sleeve...");
    }
}
