//! IPv4 headers (RFC 791): a checked view and a minimal [`Ipv4Repr`], enough to recognise a
//! packet that is too big for the overlay and to emit the header of the ICMP reply.

use super::checksum;
use super::{Error, Result};
use core::net::Ipv4Addr;

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;
/// Protocol number of ICMPv4.
pub const PROTOCOL_ICMP: u8 = 1;

const FLAG_DF: u8 = 0x40;
const FLAG_MF: u8 = 0x20;

/// A checked view of an IPv4 packet.
///
/// [`Ipv4Packet::new_checked`] guarantees: the version is 4, the header length is at least 20
/// bytes and fits in the buffer, and the total length covers the header and fits in the buffer
/// (the buffer may be longer, as with Ethernet padding). After that no accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` after checking the header and length fields against it.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(Error::Malformed);
        }
        let header_len = usize::from(b[0] & 0x0f) * 4;
        if header_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if header_len > b.len() {
            return Err(Error::Truncated);
        }
        let total_len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if total_len < header_len {
            return Err(Error::Malformed);
        }
        if total_len > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Ipv4Packet { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The version field (always 4 once checked).
    pub fn version(&self) -> u8 {
        self.b()[0] >> 4
    }

    /// Header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[0] & 0x0f) * 4
    }

    /// The type-of-service byte (DSCP and ECN).
    pub fn tos(&self) -> u8 {
        self.b()[1]
    }

    /// The total length field: header plus payload, in bytes.
    pub fn total_len(&self) -> usize {
        usize::from(u16::from_be_bytes([self.b()[2], self.b()[3]]))
    }

    /// The identification field.
    pub fn ident(&self) -> u16 {
        u16::from_be_bytes([self.b()[4], self.b()[5]])
    }

    /// The Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.b()[6] & FLAG_DF != 0
    }

    /// The More Fragments flag.
    pub fn more_frags(&self) -> bool {
        self.b()[6] & FLAG_MF != 0
    }

    /// The fragment offset, in bytes (the field counts 8-byte units).
    pub fn frag_offset(&self) -> u16 {
        (u16::from_be_bytes([self.b()[6], self.b()[7]]) & 0x1fff) << 3
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.b()[8]
    }

    /// The protocol of the payload (1 for ICMP).
    pub fn protocol(&self) -> u8 {
        self.b()[9]
    }

    /// The header checksum field.
    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.b()[10], self.b()[11]])
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }

    /// True if the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(self.header())
    }

    /// The header, options included.
    pub fn header(&self) -> &[u8] {
        &self.b()[..self.header_len()]
    }

    /// The payload: from the end of the header to the total length.
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..self.total_len()]
    }

    /// The packet: header and payload, without anything after the total length.
    pub fn packet(&self) -> &[u8] {
        &self.b()[..self.total_len()]
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// The IPv4 header fields this crate reads and writes. Emitted headers carry no options,
/// identification 0 and no fragmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: u8,
    /// Time to live.
    pub ttl: u8,
    /// Type-of-service byte.
    pub tos: u8,
    /// The Don't Fragment flag.
    pub dont_frag: bool,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl Ipv4Repr {
    /// Reads the fields of a checked packet. Fails with [`Error::Malformed`] if the header
    /// checksum is wrong. Options are skipped; fragmentation fields other than DF are ignored.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Result<Self> {
        if !packet.verify_checksum() {
            return Err(Error::Malformed);
        }
        Ok(Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            ttl: packet.ttl(),
            tos: packet.tos(),
            dont_frag: packet.dont_frag(),
            payload_len: packet.payload().len(),
        })
    }

    /// Bytes of the header [`Ipv4Repr::emit`] writes.
    pub fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the 20-byte header, checksum included, at the start of `buf`; returns
    /// [`HEADER_LEN`]. Fails with [`Error::Malformed`] if the total length exceeds 65535 bytes.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let total = u16::try_from(HEADER_LEN + self.payload_len).map_err(|_| Error::Malformed)?;
        let h = buf.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall)?;
        h[0] = 0x45;
        h[1] = self.tos;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[4..6].fill(0);
        h[6] = if self.dont_frag { FLAG_DF } else { 0 };
        h[7] = 0;
        h[8] = self.ttl;
        h[9] = self.protocol;
        h[10..12].fill(0);
        h[12..16].copy_from_slice(&self.src_addr.octets());
        h[16..20].copy_from_slice(&self.dst_addr.octets());
        let c = checksum::checksum(h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An ICMP echo request captured from `ping -M do -s 56 10.32.0.2` (Linux, DF set), without
    /// its Ethernet header.
    pub(crate) const PING: [u8; 84] = [
        0x45, 0x00, 0x00, 0x54, 0x00, 0x00, 0x40, 0x00, 0x40, 0x01, 0x26, 0x67, 0x0a, 0x20, 0x00,
        0x01, 0x0a, 0x20, 0x00, 0x02, 0x08, 0x00, 0x58, 0xbb, 0x1c, 0x55, 0x00, 0x01, 0xda, 0x22,
        0x05, 0x6b, 0x00, 0x00, 0x00, 0x00, 0xe1, 0x8d, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
        0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e,
        0x2f, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37,
    ];

    #[test]
    fn parses_captured_ping() {
        let p = Ipv4Packet::new_checked(&PING[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 84);
        assert!(p.dont_frag() && !p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), PROTOCOL_ICMP);
        assert_eq!(p.checksum(), 0x2667);
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 32, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 32, 0, 2));
        assert_eq!(p.payload().len(), 64);
        assert_eq!(p.payload()[0], 8); // echo request
                                       // The ICMP checksum of the captured payload verifies too.
        assert!(checksum::verify(p.payload()));
    }

    #[test]
    fn ignores_trailing_padding() {
        let mut padded = PING.to_vec();
        padded.extend_from_slice(&[0; 6]);
        let p = Ipv4Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.packet(), &PING[..]);
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(
            Ipv4Packet::new_checked(&PING[..19]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Ipv4Packet::new_checked(&PING[..83]).unwrap_err(),
            Error::Truncated
        );
        let mut b = PING;
        b[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            Error::Malformed
        );
        let mut b = PING;
        b[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            Error::Malformed
        );
        let mut b = PING;
        b[0] = 0x4f; // 60-byte header in a packet whose total length is 84: fine
        assert!(Ipv4Packet::new_checked(&b[..]).is_ok());
        let mut b = PING;
        b[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            Error::Malformed
        );
        let b = [0x4f; 40]; // header length 60 in a 40-byte buffer
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn repr_round_trips_captured_header() {
        let p = Ipv4Packet::new_checked(&PING[..]).unwrap();
        let repr = Ipv4Repr::parse(&p).unwrap();
        assert_eq!(repr.payload_len, 64);
        let mut out = [0u8; 20];
        assert_eq!(repr.emit(&mut out), Ok(20));
        // The capture has identification 0, so the emitted header is byte for byte the same.
        assert_eq!(out, PING[..20]);
    }

    #[test]
    fn repr_rejects_bad_checksum_and_oversize() {
        let mut b = PING;
        b[11] ^= 1;
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&p).unwrap_err(), Error::Malformed);
        let repr = Ipv4Repr {
            src_addr: Ipv4Addr::LOCALHOST,
            dst_addr: Ipv4Addr::LOCALHOST,
            protocol: 17,
            ttl: 1,
            tos: 0,
            dont_frag: false,
            payload_len: 65_516,
        };
        assert_eq!(repr.emit(&mut [0; 20]), Err(Error::Malformed));
        assert_eq!(
            Ipv4Repr {
                payload_len: 0,
                ..repr
            }
            .emit(&mut [0; 19]),
            Err(Error::BufferTooSmall)
        );
    }
}
