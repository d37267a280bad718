//! The Internet checksum (RFC 1071): the 16-bit ones' complement of the ones' complement sum of
//! 16-bit big-endian words, used by the IPv4 header, ICMPv4 and (with a pseudo-header) ICMPv6.
//!
//! Sums are accumulated in a `u32` and folded at the end, so partial sums over several pieces
//! (pseudo-header, header, payload) can be added with [`combine`] before [`finish`].

use core::net::Ipv6Addr;

/// The ones' complement sum of `data` as big-endian 16-bit words, not yet folded or inverted. An
/// odd trailing byte is padded with a zero byte, so only the last piece of a sum may be odd-sized.
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    fold64(acc)
}

/// Adds partial sums from [`sum`] (or [`pseudo_header_v6`]).
pub fn combine(sums: &[u32]) -> u32 {
    fold64(sums.iter().map(|s| u64::from(*s)).sum())
}

/// Folds a partial sum to 16 bits and inverts it: the value to write into a checksum field.
pub fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// The checksum of `data` alone (IPv4 header, ICMPv4 message).
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data))
}

/// True if `data`, whose checksum field is filled in, sums to all ones (the checksum verifies).
pub fn verify(data: &[u8]) -> bool {
    fold(sum(data)) == 0xffff
}

/// The partial sum of the IPv6 pseudo-header (RFC 8200 section 8.1) for an upper-layer packet of
/// `upper_len` bytes with the given next header.
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, upper_len: u32) -> u32 {
    let len = upper_len.to_be_bytes();
    combine(&[
        sum(&src.octets()),
        sum(&dst.octets()),
        sum(&len),
        u32::from(next_header),
    ])
}

fn fold64(mut acc: u64) -> u32 {
    while acc > 0xffff_ffff {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    // After the loop acc fits in 32 bits.
    acc as u32
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    // After the loop s fits in 16 bits.
    s as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commonly used worked example: UDP with DF, 192.168.0.1 -> 192.168.0.199, checksum 0xb861.
    const IPV4_HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn ipv4_header_checksum() {
        assert!(verify(&IPV4_HEADER));
        let mut h = IPV4_HEADER;
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), 0xb861);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(
            combine(&[sum(&[0x12, 0x34]), sum(&[0x56])]),
            sum(&[0x12, 0x34, 0x56])
        );
    }

    #[test]
    fn folds_carries() {
        assert_eq!(checksum(&[0xff, 0xff, 0x00, 0x01]), !0x0001);
        assert_eq!(checksum(&[]), 0xffff);
        // Many words: the carry folding must not overflow.
        let big = vec![0xffu8; 200_000];
        assert_eq!(checksum(&big), 0x0000);
    }
}
