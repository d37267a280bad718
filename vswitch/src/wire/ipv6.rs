//! IPv6 headers (RFC 8200): a checked view, a walk over extension headers to the upper-layer
//! protocol, and a minimal [`Ipv6Repr`], enough to answer oversized packets with ICMPv6.

use super::{Error, Result};
use core::net::Ipv6Addr;

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;
/// Next-header value of ICMPv6.
pub const NEXT_HEADER_ICMPV6: u8 = 58;

const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AUTH: u8 = 51;
const DEST_OPTS: u8 = 60;
const MOBILITY: u8 = 135;
const HIP: u8 = 139;
const SHIM6: u8 = 140;

/// A checked view of an IPv6 packet.
///
/// [`Ipv6Packet::new_checked`] guarantees: the version is 6 and the fixed header plus the payload
/// length fit in the buffer (the buffer may be longer, as with Ethernet padding). After that no
/// accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// Where the upper-layer header of an IPv6 packet starts, found by [`Ipv6Packet::upper_layer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// The next-header value after the extension headers (58 for ICMPv6).
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the payload.
    pub offset: usize,
    /// False for a fragment other than the first: then no upper-layer header is present and
    /// `offset` points at fragment data.
    pub first_fragment: bool,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buffer` after checking the version and the payload length against it.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(Error::Malformed);
        }
        let payload_len = usize::from(u16::from_be_bytes([b[4], b[5]]));
        if HEADER_LEN + payload_len > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Ipv6Packet { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The version field (always 6 once checked).
    pub fn version(&self) -> u8 {
        self.b()[0] >> 4
    }

    /// The traffic class (DSCP and ECN).
    pub fn traffic_class(&self) -> u8 {
        (self.b()[0] << 4) | (self.b()[1] >> 4)
    }

    /// The 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        let b = self.b();
        u32::from_be_bytes([0, b[1] & 0x0f, b[2], b[3]])
    }

    /// The payload length field: bytes after the fixed header, extension headers included.
    pub fn payload_len(&self) -> usize {
        usize::from(u16::from_be_bytes([self.b()[4], self.b()[5]]))
    }

    /// The next-header field of the fixed header.
    pub fn next_header(&self) -> u8 {
        self.b()[6]
    }

    /// The hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.b()[7]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(addr(&self.b()[8..24]))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(addr(&self.b()[24..40]))
    }

    /// The payload: extension headers and upper-layer data, as long as the payload length says.
    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..HEADER_LEN + self.payload_len()]
    }

    /// The packet: fixed header and payload, without anything after the payload length.
    pub fn packet(&self) -> &[u8] {
        &self.b()[..HEADER_LEN + self.payload_len()]
    }

    /// Walks the extension headers (hop-by-hop, routing, fragment, destination options,
    /// authentication, mobility, HIP, shim6) to the upper-layer protocol. Stops at a fragment
    /// header of a non-first fragment. Fails with [`Error::Truncated`] if an extension header
    /// runs past the payload.
    pub fn upper_layer(&self) -> Result<UpperLayer> {
        let payload = self.payload();
        let mut protocol = self.next_header();
        let mut offset = 0usize;
        loop {
            let len = match protocol {
                HOP_BY_HOP | ROUTING | DEST_OPTS | MOBILITY | HIP | SHIM6 => {
                    let h = payload.get(offset..offset + 2).ok_or(Error::Truncated)?;
                    (usize::from(h[1]) + 1) * 8
                }
                AUTH => {
                    let h = payload.get(offset..offset + 2).ok_or(Error::Truncated)?;
                    (usize::from(h[1]) + 2) * 4
                }
                FRAGMENT => 8,
                _ => {
                    return Ok(UpperLayer {
                        protocol,
                        offset,
                        first_fragment: true,
                    })
                }
            };
            let h = payload.get(offset..offset + len).ok_or(Error::Truncated)?;
            let next = h[0];
            offset += len;
            if protocol == FRAGMENT && u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                return Ok(UpperLayer {
                    protocol: next,
                    offset,
                    first_fragment: false,
                });
            }
            protocol = next;
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

fn addr(b: &[u8]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    a
}

/// The IPv6 header fields this crate reads and writes. Emitted headers have traffic class and
/// flow label 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Next header of the fixed header.
    pub next_header: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl Ipv6Repr {
    /// Reads the fields of a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv6Packet<T>) -> Self {
        Ipv6Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            hop_limit: packet.hop_limit(),
            payload_len: packet.payload_len(),
        }
    }

    /// Bytes of the header [`Ipv6Repr::emit`] writes.
    pub fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the 40-byte fixed header at the start of `buf`; returns [`HEADER_LEN`]. Fails with
    /// [`Error::Malformed`] if the payload length exceeds 65535 bytes (no jumbograms).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = u16::try_from(self.payload_len).map_err(|_| Error::Malformed)?;
        let h = buf.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall)?;
        h[0] = 0x60;
        h[1..4].fill(0);
        h[4..6].copy_from_slice(&len.to_be_bytes());
        h[6] = self.next_header;
        h[7] = self.hop_limit;
        h[8..24].copy_from_slice(&self.src_addr.octets());
        h[24..40].copy_from_slice(&self.dst_addr.octets());
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::checksum;

    /// An ICMPv6 echo request captured from `ping -6 -s 56 fd00::2` (Linux), without its Ethernet
    /// header.
    pub(crate) const PING6: [u8; 104] = [
        0x60, 0x05, 0xd8, 0x27, 0x00, 0x40, 0x3a, 0x40, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x80, 0x00, 0x6b, 0x31, 0x1c,
        0x56, 0x00, 0x01, 0xdb, 0x22, 0x05, 0x6b, 0x00, 0x00, 0x00, 0x00, 0x5b, 0x97, 0x03, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a,
        0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29,
        0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37,
    ];

    /// An MLDv2 report captured on the same link: hop-by-hop options (router alert) then ICMPv6
    /// type 143, from :: to ff02::16. Without its Ethernet header.
    pub(crate) const MLD_REPORT: [u8; 76] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x24, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x16, 0x3a, 0x00, 0x05, 0x02, 0x00,
        0x00, 0x01, 0x00, 0x8f, 0x00, 0x6f, 0x89, 0x00, 0x00, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00,
        0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0x00, 0x00,
        0x01,
    ];

    fn icmpv6_verifies(p: &Ipv6Packet<&[u8]>, ul: UpperLayer) -> bool {
        let upper = &p.payload()[ul.offset..];
        let s = checksum::combine(&[
            checksum::pseudo_header_v6(
                &p.src_addr(),
                &p.dst_addr(),
                NEXT_HEADER_ICMPV6,
                upper.len() as u32,
            ),
            checksum::sum(upper),
        ]);
        checksum::finish(s) == 0
    }

    #[test]
    fn parses_captured_ping() {
        let p = Ipv6Packet::new_checked(&PING6[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0);
        assert_eq!(p.flow_label(), 0x5d827);
        assert_eq!(p.payload_len(), 64);
        assert_eq!(p.next_header(), NEXT_HEADER_ICMPV6);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), "fd00::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "fd00::2".parse::<Ipv6Addr>().unwrap());
        let ul = p.upper_layer().unwrap();
        assert_eq!(
            ul,
            UpperLayer {
                protocol: NEXT_HEADER_ICMPV6,
                offset: 0,
                first_fragment: true
            }
        );
        assert_eq!(p.payload()[0], 128); // echo request
        assert!(icmpv6_verifies(&p, ul));
    }

    #[test]
    fn walks_hop_by_hop_to_icmpv6() {
        let p = Ipv6Packet::new_checked(&MLD_REPORT[..]).unwrap();
        let ul = p.upper_layer().unwrap();
        assert_eq!(ul.protocol, NEXT_HEADER_ICMPV6);
        assert_eq!(ul.offset, 8);
        assert_eq!(p.payload()[ul.offset], 143);
        assert!(icmpv6_verifies(&p, ul));
    }

    #[test]
    fn stops_at_non_first_fragment() {
        // Fixed header, then a fragment header (offset 8 bytes) carrying ICMPv6 data.
        let mut b = PING6;
        b[6] = FRAGMENT;
        b[40..48].copy_from_slice(&[NEXT_HEADER_ICMPV6, 0, 0x00, 0x08, 0, 0, 0, 1]);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            p.upper_layer().unwrap(),
            UpperLayer {
                protocol: NEXT_HEADER_ICMPV6,
                offset: 8,
                first_fragment: false
            }
        );
        // The first fragment (offset 0) is walked through.
        b[43] = 0x01; // M flag only
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.upper_layer().unwrap().offset, 8);
        assert!(p.upper_layer().unwrap().first_fragment);
    }

    #[test]
    fn truncated_extension_header_is_an_error() {
        let mut b = PING6;
        b[6] = DEST_OPTS;
        b[41] = 200; // claims 1608 bytes
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.upper_layer().unwrap_err(), Error::Truncated);
        let mut b = PING6;
        b[6] = AUTH;
        b[4..6].copy_from_slice(&1u16.to_be_bytes());
        let p = Ipv6Packet::new_checked(&b[..41]).unwrap();
        assert_eq!(p.upper_layer().unwrap_err(), Error::Truncated);
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(
            Ipv6Packet::new_checked(&PING6[..39]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Ipv6Packet::new_checked(&PING6[..103]).unwrap_err(),
            Error::Truncated
        );
        let mut b = PING6;
        b[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn repr_round_trips() {
        let p = Ipv6Packet::new_checked(&PING6[..]).unwrap();
        let repr = Ipv6Repr::parse(&p);
        let mut out = [0u8; 40];
        assert_eq!(repr.emit(&mut out), Ok(40));
        // Same bytes except the traffic class and flow label, which emit zeroes.
        assert_eq!(out[4..], PING6[4..40]);
        assert_eq!(out[..4], [0x60, 0, 0, 0]);
        let back = Ipv6Repr::parse(
            &Ipv6Packet::new_checked(&[&out[..], &PING6[40..]].concat()[..]).unwrap(),
        );
        assert_eq!(back, repr);
        assert_eq!(
            Ipv6Repr {
                payload_len: 65_536,
                ..repr
            }
            .emit(&mut out),
            Err(Error::Malformed)
        );
        assert_eq!(repr.emit(&mut out[..39]), Err(Error::BufferTooSmall));
    }
}
