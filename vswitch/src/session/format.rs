//! The encrypted sleeve datagram: layout constants, the checked view relays use, and the
//! associated data and nonce both directions build.
//!
//! ```text
//!  0        1        2        3
//! +--------+--------+--------+--------+
//! | version|  kind  |  ttl   | flags  |   flags = 0x01 (encrypted)
//! +--------+--------+--------+--------+
//! |      source peer name (64 bits)    |
//! +------------------------------------+
//! |   destination peer name (64 bits)  |
//! +--------+---------------------------+
//! | epoch  |  counter (64 bits) ...    |   bytes 20, 21-28
//! +--------+---------------------------+
//! | ciphertext of the body ...         |   bytes 29 .. len-16
//! +------------------------------------+
//! | tag (128 bits)                     |   last 16 bytes
//! +------------------------------------+
//! ```

use crate::wire::sleeve::{self, SleeveHeader, HEADER_LEN, VERSION};
use crate::wire::{Error, Result};

/// Bit of the sleeve header's `flags` byte that marks an encrypted datagram.
pub const FLAG_ENCRYPTED: u8 = 0x01;
/// Bytes of the key epoch field.
pub const EPOCH_LEN: usize = 1;
/// Bytes of the counter field.
pub const COUNTER_LEN: usize = 8;
/// Bytes of the Poly1305 tag at the end of an encrypted datagram.
pub const TAG_LEN: usize = 16;
/// Bytes in clear before the ciphertext: the sleeve header, the epoch and the counter (29).
pub const ENCRYPTED_HEADER_LEN: usize = HEADER_LEN + EPOCH_LEN + COUNTER_LEN;
/// Offset of the plain datagram in a buffer passed to `seal_in_place`, and of the plain datagram
/// `open_in_place` leaves behind (9): the epoch and counter fit in front of it, so the body never
/// moves.
pub const HEADROOM: usize = EPOCH_LEN + COUNTER_LEN;
/// Bytes an encrypted datagram has beyond the plain one (25): epoch, counter and tag. The pod MTU
/// must be this much smaller when encryption is on.
pub const OVERHEAD: usize = HEADROOM + TAG_LEN;
/// The shortest encrypted datagram: a header, an empty body and a tag (45 bytes).
pub const MIN_ENCRYPTED_LEN: usize = ENCRYPTED_HEADER_LEN + TAG_LEN;

const EPOCH_AT: usize = HEADER_LEN;
const COUNTER_AT: usize = HEADER_LEN + EPOCH_LEN;
const TTL_AT: usize = 2;
const FLAGS_AT: usize = 3;

/// True when `datagram` has the encrypted flag set: the receive path's dispatch between
/// [`SleeveDatagram`](crate::wire::SleeveDatagram) and [`EncryptedDatagram`] or an
/// [`Opener`](super::Opener). False for anything shorter than a flags byte.
pub fn is_encrypted(datagram: &[u8]) -> bool {
    datagram
        .get(FLAGS_AT)
        .is_some_and(|f| f & FLAG_ENCRYPTED != 0)
}

/// A checked view of an encrypted sleeve datagram's clear parts: what a relay needs to route it
/// (header, ttl) and what an [`Opener`](super::Opener) needs to pick the key (epoch, counter).
/// Checking it proves nothing about authenticity.
#[derive(Debug, Clone, Copy)]
pub struct EncryptedDatagram<T: AsRef<[u8]>> {
    buffer: T,
    header: SleeveHeader,
}

impl<T: AsRef<[u8]>> EncryptedDatagram<T> {
    /// Checks the clear parts: at least [`MIN_ENCRYPTED_LEN`] bytes ([`Error::Truncated`]),
    /// version 1 ([`Error::UnsupportedVersion`]), a known kind, flags [`FLAG_ENCRYPTED`] plus
    /// only what a plain header allows (`FLAG_CSUM_PARTIAL` on frames) and a non-zero source
    /// ([`Error::Malformed`]).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < MIN_ENCRYPTED_LEN {
            return Err(Error::Truncated);
        }
        if b[0] != VERSION {
            return Err(Error::UnsupportedVersion);
        }
        if b[FLAGS_AT] & FLAG_ENCRYPTED == 0 {
            return Err(Error::Malformed);
        }
        // The clear header is a plain sleeve header but for the flag: let the plain parser check
        // kind and source, so the two formats cannot drift apart.
        let mut plain = [0u8; HEADER_LEN];
        plain.copy_from_slice(&b[..HEADER_LEN]);
        plain[FLAGS_AT] &= !FLAG_ENCRYPTED;
        let header = sleeve::SleeveDatagram::new_checked(&plain[..])?.header();
        Ok(EncryptedDatagram { buffer, header })
    }

    /// The clear sleeve header.
    pub fn header(&self) -> SleeveHeader {
        self.header
    }

    /// The key epoch the datagram was sealed under.
    pub fn epoch(&self) -> u8 {
        self.buffer.as_ref()[EPOCH_AT]
    }

    /// The sender's counter for this datagram (the nonce).
    pub fn counter(&self) -> u64 {
        let mut c = [0u8; COUNTER_LEN];
        c.copy_from_slice(&self.buffer.as_ref()[COUNTER_AT..ENCRYPTED_HEADER_LEN]);
        u64::from_be_bytes(c)
    }

    /// The encrypted body, without the tag.
    pub fn ciphertext(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[ENCRYPTED_HEADER_LEN..b.len() - TAG_LEN]
    }

    /// The 16-byte tag.
    pub fn tag(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[b.len() - TAG_LEN..]
    }

    /// The whole datagram.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The associated data the tag covers: the clear header, epoch and counter with the ttl byte
    /// set to zero.
    pub fn associated_data(&self) -> [u8; ENCRYPTED_HEADER_LEN] {
        let mut clear = [0u8; ENCRYPTED_HEADER_LEN];
        clear.copy_from_slice(&self.buffer.as_ref()[..ENCRYPTED_HEADER_LEN]);
        associated_data(&clear)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EncryptedDatagram<T> {
    /// Rewrites the hop budget in place (relays decrement it). The ttl is outside the associated
    /// data, so this does not break the tag.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[TTL_AT] = ttl;
        self.header.ttl = ttl;
    }
}

/// The associated data for the clear part of an encrypted datagram: the same bytes with the ttl
/// zeroed.
pub(crate) fn associated_data(clear: &[u8; ENCRYPTED_HEADER_LEN]) -> [u8; ENCRYPTED_HEADER_LEN] {
    let mut aad = *clear;
    aad[TTL_AT] = 0;
    aad
}

/// The 96-bit ChaCha20-Poly1305 nonce for a counter: four zero bytes, then the counter
/// big-endian. Keys are per direction and per epoch, so the counter alone makes it unique.
pub(crate) fn nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

/// Writes the clear fields of an encrypted datagram at the start of `buf`: moves the plain header
/// from `buf[HEADROOM..]` to the front, sets the encrypted flag and writes epoch and counter.
/// The caller has checked that `buf` holds at least [`ENCRYPTED_HEADER_LEN`] bytes and that the
/// plain header is valid.
pub(crate) fn write_clear(buf: &mut [u8], epoch: u8, counter: u64) -> [u8; ENCRYPTED_HEADER_LEN] {
    buf.copy_within(HEADROOM..HEADROOM + HEADER_LEN, 0);
    buf[FLAGS_AT] |= FLAG_ENCRYPTED;
    buf[EPOCH_AT] = epoch;
    buf[COUNTER_AT..ENCRYPTED_HEADER_LEN].copy_from_slice(&counter.to_be_bytes());
    let mut clear = [0u8; ENCRYPTED_HEADER_LEN];
    clear.copy_from_slice(&buf[..ENCRYPTED_HEADER_LEN]);
    clear
}

/// Turns the clear part of an opened datagram back into a plain header right before the body:
/// moves the header to `buf[HEADROOM..]` and clears the encrypted flag.
pub(crate) fn restore_plain_header(buf: &mut [u8]) {
    buf.copy_within(..HEADER_LEN, HEADROOM);
    buf[HEADROOM + FLAGS_AT] &= !FLAG_ENCRYPTED;
}

/// The header a sealer accepts: checked by the plain parser, which also requires flags 0.
pub(crate) fn plain_header_ok(plain: &[u8]) -> bool {
    sleeve::SleeveDatagram::new_checked(plain).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::sleeve::{PeerName, SleeveKind};

    #[rustfmt::skip]
    const CLEAR: [u8; MIN_ENCRYPTED_LEN] = [
        0x01, 0x01, 0x07, 0x01, // version, kind=frames, ttl=7, flags=encrypted
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // src
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, // dst
        0x05, // epoch
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, // counter 258
        // empty body, then the tag
        0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
        0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf,
    ];

    #[test]
    fn view_reads_clear_fields() {
        let d = EncryptedDatagram::new_checked(&CLEAR[..]).unwrap();
        let h = d.header();
        assert_eq!(h.kind, SleeveKind::Frames);
        assert_eq!(h.ttl, 7);
        assert_eq!(h.src, PeerName(0x0102030405060708));
        assert_eq!(h.dst, PeerName(0x1112131415161718));
        assert_eq!(d.epoch(), 5);
        assert_eq!(d.counter(), 258);
        assert!(d.ciphertext().is_empty());
        assert_eq!(d.tag(), &CLEAR[29..]);
        assert_eq!(d.as_bytes(), &CLEAR[..]);
        let aad = d.associated_data();
        assert_eq!(aad[2], 0);
        assert_eq!(aad[..2], CLEAR[..2]);
        assert_eq!(aad[3..], CLEAR[3..29]);
        assert!(is_encrypted(&CLEAR));
        assert!(!is_encrypted(&CLEAR[..3]));
    }

    #[test]
    fn view_rejects_bad_clear_parts() {
        assert_eq!(
            EncryptedDatagram::new_checked(&CLEAR[..MIN_ENCRYPTED_LEN - 1]).unwrap_err(),
            Error::Truncated
        );
        let cases: [(usize, u8, Error); 6] = [
            (0, 2, Error::UnsupportedVersion),
            (1, 0, Error::Malformed),
            (1, 4, Error::Malformed),
            (3, 0, Error::Malformed),
            (3, 5, Error::Malformed),
            (3, 0x09, Error::Malformed),
        ];
        for (at, value, err) in cases {
            let mut b = CLEAR;
            b[at] = value;
            assert_eq!(
                EncryptedDatagram::new_checked(&b[..]).unwrap_err(),
                err,
                "byte {at} = {value:#x}"
            );
        }
        // The plain header's checksum flag may ride along with the encrypted one.
        let mut b = CLEAR;
        b[3] = 0x03;
        assert!(EncryptedDatagram::new_checked(&b[..]).is_ok());
        // So may a lane.
        b[3] = 0xa3;
        assert!(EncryptedDatagram::new_checked(&b[..]).is_ok());
        let mut b = CLEAR;
        b[4..12].fill(0);
        assert_eq!(
            EncryptedDatagram::new_checked(&b[..]).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn relay_rewrites_ttl_only() {
        let mut b = CLEAR;
        let mut d = EncryptedDatagram::new_checked(&mut b[..]).unwrap();
        let aad = d.associated_data();
        d.set_ttl(6);
        assert_eq!(d.header().ttl, 6);
        assert_eq!(d.associated_data(), aad);
        assert_eq!(b[2], 6);
        assert_eq!(b[..2], CLEAR[..2]);
        assert_eq!(b[3..], CLEAR[3..]);
    }

    #[test]
    fn nonce_is_counter_big_endian() {
        assert_eq!(
            nonce(0x0102030405060708),
            [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
        );
    }

    #[test]
    fn clear_header_moves_and_back() {
        let mut buf = [0u8; 40];
        let h = SleeveHeader::frames(PeerName(9), PeerName(10));
        h.emit(&mut buf[HEADROOM..]).unwrap();
        let plain: [u8; HEADER_LEN] = buf[HEADROOM..HEADROOM + HEADER_LEN].try_into().unwrap();
        let clear = write_clear(&mut buf, 3, 0x0a0b);
        assert_eq!(&buf[..ENCRYPTED_HEADER_LEN], &clear[..]);
        assert_eq!(buf[3], FLAG_ENCRYPTED);
        assert_eq!(buf[20], 3);
        assert_eq!(buf[21..29], [0, 0, 0, 0, 0, 0, 0x0a, 0x0b]);
        restore_plain_header(&mut buf);
        assert_eq!(buf[HEADROOM..HEADROOM + HEADER_LEN], plain);
    }
}
