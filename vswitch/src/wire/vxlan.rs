//! The VXLAN header (RFC 7348), what the router puts in front of a frame it hands to a peer's
//! kernel VXLAN device (the fast path), and in front of the fast path's probes:
//!
//! ```text
//!  0        1        2        3
//! +--------+--------+--------+--------+
//! | flags  |        reserved          |   flags = 0x08 (I: the VNI is valid)
//! +--------+--------+--------+--------+
//! |   VNI (24 bits)          |reserved|
//! +--------+--------+--------+--------+
//! | Ethernet frame ...
//! ```
//!
//! Reserved bits are sent as zero and, as the RFC asks, ignored on receipt.

use super::{Error, Result};

/// Bytes of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The I flag: the VNI field is valid.
pub const FLAG_VNI: u8 = 0x08;
/// The largest VXLAN network identifier (24 bits).
pub const VNI_MAX: u32 = 0x00ff_ffff;

/// A checked view of a VXLAN datagram (the UDP payload).
#[derive(Debug, Clone, Copy)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Checks that `buffer` holds a whole header with the I flag set.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] & FLAG_VNI == 0 {
            return Err(Error::Malformed);
        }
        Ok(VxlanPacket { buffer })
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// The VXLAN network identifier.
    pub fn vni(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[4], b[5], b[6]])
    }

    /// The encapsulated Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

/// The fields of a VXLAN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanRepr {
    /// The VXLAN network identifier, at most [`VNI_MAX`].
    pub vni: u32,
}

impl VxlanRepr {
    /// Reads a checked header.
    pub fn parse<T: AsRef<[u8]>>(packet: &VxlanPacket<T>) -> Self {
        VxlanRepr { vni: packet.vni() }
    }

    /// Writes the 8-byte header at the start of `buf`; returns [`HEADER_LEN`].
    /// [`Error::Malformed`] for a VNI wider than 24 bits.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        if self.vni > VNI_MAX {
            return Err(Error::Malformed);
        }
        let out = buf.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall)?;
        let v = self.vni.to_be_bytes();
        out.copy_from_slice(&[FLAG_VNI, 0, 0, 0, v[1], v[2], v[3], 0]);
        Ok(HEADER_LEN)
    }

    /// Writes the header and `frame` behind it at the start of `buf`; returns the datagram's
    /// length. Writes nothing if `buf` is too small.
    pub fn encapsulate(&self, frame: &[u8], buf: &mut [u8]) -> Result<usize> {
        let out = buf
            .get_mut(..HEADER_LEN + frame.len())
            .ok_or(Error::BufferTooSmall)?;
        self.emit(out)?;
        out[HEADER_LEN..].copy_from_slice(frame);
        Ok(out.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// VNI 0x7765 (Weft's default) in front of a two-byte payload.
    const SAMPLE: [u8; 10] = [0x08, 0, 0, 0, 0x00, 0x77, 0x65, 0, 0xaa, 0xbb];

    #[test]
    fn parses_and_emits_the_sample() {
        let p = VxlanPacket::new_checked(&SAMPLE[..]).unwrap();
        assert_eq!(p.flags(), FLAG_VNI);
        assert_eq!(p.vni(), 0x7765);
        assert_eq!(p.payload(), &[0xaa, 0xbb]);
        let mut out = [0xffu8; 10];
        assert_eq!(
            VxlanRepr::parse(&p).encapsulate(&[0xaa, 0xbb], &mut out),
            Ok(10)
        );
        assert_eq!(out, SAMPLE);
    }

    #[test]
    fn full_width_vni() {
        let mut out = [0u8; 8];
        VxlanRepr { vni: 0xab_cdef }.emit(&mut out).unwrap();
        assert_eq!(out, [0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
        assert_eq!(
            VxlanRepr { vni: VNI_MAX + 1 }.emit(&mut out),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn rejects_short_or_unflagged_headers_and_small_buffers() {
        assert_eq!(
            VxlanPacket::new_checked(&SAMPLE[..7]).unwrap_err(),
            Error::Truncated
        );
        let mut b = SAMPLE;
        b[0] = 0;
        assert_eq!(
            VxlanPacket::new_checked(&b[..]).unwrap_err(),
            Error::Malformed
        );
        // Reserved bits are ignored.
        b[0] = 0xff;
        b[7] = 0xff;
        assert_eq!(VxlanPacket::new_checked(&b[..]).unwrap().vni(), 0x7765);
        let mut small = [0u8; 9];
        assert_eq!(
            VxlanRepr { vni: 1 }.encapsulate(&[1, 2], &mut small),
            Err(Error::BufferTooSmall)
        );
        assert_eq!(small, [0; 9], "nothing written");
    }

    proptest! {
        #[test]
        fn parse_emit_round_trips(vni in 0..=VNI_MAX, payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let r = VxlanRepr { vni };
            let mut buf = [0u8; HEADER_LEN + 64];
            let n = r.encapsulate(&payload, &mut buf).unwrap();
            let p = VxlanPacket::new_checked(&buf[..n]).unwrap();
            prop_assert_eq!(VxlanRepr::parse(&p), r);
            prop_assert_eq!(p.payload(), &payload[..]);
        }
    }
}
