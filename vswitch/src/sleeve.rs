//! Sleeve sizing: how much of the underlay MTU the encapsulation takes, and so the pod MTU.
//!
//! A pod frame of `mtu + 14` bytes (Ethernet header, no FCS) travels as one record of a sleeve
//! datagram: IP header + UDP header + sleeve header + 2-byte record length + frame. The pod MTU is
//! therefore the underlay MTU minus [`overhead`]. `docs/wire-format.md` has the table.

use crate::wire::{ethernet, sleeve};

/// IPv4 (20) + UDP (8) header bytes.
pub const IPV4_UDP_LEN: usize = 28;
/// IPv6 (40) + UDP (8) header bytes.
pub const IPV6_UDP_LEN: usize = 48;

/// Bytes between the underlay MTU and the pod MTU: IP/UDP, sleeve header, record length and the
/// inner Ethernet header.
pub const fn overhead(ipv6_underlay: bool) -> usize {
    let ip = if ipv6_underlay {
        IPV6_UDP_LEN
    } else {
        IPV4_UDP_LEN
    };
    ip + sleeve::HEADER_LEN + sleeve::FRAME_PREFIX_LEN + ethernet::HEADER_LEN
}

/// The pod (inner IP) MTU for an underlay MTU; `None` if the underlay is too small to carry the
/// 1280 bytes IPv6 requires.
pub fn pod_mtu(underlay_mtu: u32, ipv6_underlay: bool) -> Option<u32> {
    let mtu = underlay_mtu.checked_sub(overhead(ipv6_underlay) as u32)?;
    (mtu >= 1280).then_some(mtu)
}

/// Largest UDP payload a sleeve datagram may have on an underlay with this MTU.
pub fn max_datagram(underlay_mtu: u32, ipv6_underlay: bool) -> usize {
    let ip = if ipv6_underlay {
        IPV6_UDP_LEN
    } else {
        IPV4_UDP_LEN
    };
    (underlay_mtu as usize).saturating_sub(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_mtu_for_common_underlays() {
        assert_eq!(overhead(false), 64);
        assert_eq!(pod_mtu(1500, false), Some(1436));
        assert_eq!(pod_mtu(1500, true), Some(1416));
        assert_eq!(pod_mtu(9000, false), Some(8936));
        assert_eq!(pod_mtu(1300, false), None);
        // A full-size pod frame fits exactly in one datagram.
        let frame = 1436 + 14;
        assert_eq!(
            sleeve::HEADER_LEN + sleeve::FRAME_PREFIX_LEN + frame,
            max_datagram(1500, false)
        );
    }
}
