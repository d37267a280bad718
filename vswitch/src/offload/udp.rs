//! Receive-side GRO for UDP: [`UdpCoalescer`] joins consecutive datagrams of one UDP flow, all of
//! one payload size but the last, into one super-frame that the kernel takes from a TAP writer
//! with `gso_type` `UDP_L4` (and cuts again where it must: at the latest when the pod's socket
//! reads them, unless it asked for UDP GRO itself). One TAP write, one pass through the bridge and
//! the veth, instead of one per datagram. The sending side (USO) is in
//! [`Segmenter`](super::Segmenter).

use super::{
    checksum, ip_len_matches, l4_checksum_ok, pseudo_sum, set_ip_len, udp_layout, GsoType, Pushed,
    SuperFrame, VnetHdr, F_DATA_VALID, F_NEEDS_CSUM, PROTO_UDP, UDP_HEADER_LEN,
};

/// The most datagrams one super-frame carries (the kernel's `UDP_MAX_SEGMENTS` is 128 since
/// Linux 5.x; 64 keeps clear of older limits).
pub const MAX_UDP_SEGMENTS: u16 = 64;

/// Joins datagrams of one UDP flow into a `UDP_L4` super-frame.
///
/// Datagrams merge when they belong to the same flow (same Ethernet header, IP header apart from
/// length, identification and checksum, same ports), have the same payload size (the last may be
/// shorter, and ends the super-frame), and a checksum that verifies (or none, over IPv4). The
/// result carries a virtio-net header with `gso_type` `UDP_L4`, `gso_size` and `F_NEEDS_CSUM`
/// with the pseudo-header sum in the checksum field, as the kernel expects from a TAP writer.
#[derive(Debug)]
pub struct UdpCoalescer {
    held: SuperFrame,
}

impl Default for UdpCoalescer {
    fn default() -> Self {
        UdpCoalescer::new()
    }
}

impl UdpCoalescer {
    /// A coalescer with room for one [`MAX_SUPER_FRAME`](super::MAX_SUPER_FRAME) (allocated
    /// here, once).
    pub fn new() -> UdpCoalescer {
        UdpCoalescer {
            held: SuperFrame::new(PROTO_UDP),
        }
    }

    /// Datagrams in the held super-frame (0: none held).
    pub fn segments(&self) -> u16 {
        self.held.segments
    }

    /// Offers `frame`. [`Pushed::Refused`] means the caller must first [`take`](Self::take) the
    /// held super-frame (order matters) and then write `frame` itself.
    pub fn push(&mut self, frame: &[u8]) -> Pushed {
        let Some(l) = udp_layout(frame) else {
            return Pushed::Refused;
        };
        let u = l.l4;
        let payload = frame.len() - l.payload;
        let udp_len = usize::from(u16::from_be_bytes([frame[u + 4], frame[u + 5]]));
        if payload == 0
            || !ip_len_matches(frame, &l)
            || udp_len != frame.len() - u
            || !self.held.may_join(frame, &l, payload, MAX_UDP_SEGMENTS)
        {
            return Pushed::Refused;
        }
        // Only datagrams whose checksum verifies are merged: the kernel computes the merged
        // datagrams' checksums afresh, which would hide a corrupted one. IPv4 may go without a
        // checksum (0); IPv6 may not.
        let field = u16::from_be_bytes([frame[u + 6], frame[u + 7]]);
        if (field != 0 || l.v6) && (field == 0 || !l4_checksum_ok(frame, &l)) {
            return Pushed::Refused;
        }
        self.held.hold(frame, l, payload);
        Pushed::Held
    }

    /// Finishes the held super-frame and returns it with its virtio-net header in front (ready
    /// for one TAP write), or `None` if nothing is held. A single held datagram goes out as it
    /// came, with `F_DATA_VALID` (its checksum was verified).
    pub fn take(&mut self) -> Option<&[u8]> {
        self.held.take(|frame, l, segments, gso_size| {
            if segments == 1 {
                return VnetHdr {
                    flags: F_DATA_VALID,
                    ..VnetHdr::NONE
                };
            }
            let len = frame.len();
            set_ip_len(frame, l, len - l.ip);
            let u = l.l4;
            frame[u + 4..u + 6].copy_from_slice(&((len - u) as u16).to_be_bytes());
            // The partial checksum: the pseudo-header sum for the whole length, folded, not
            // inverted; the kernel adjusts it to each datagram's length when it cuts.
            let pseudo = !checksum::finish(pseudo_sum(frame, l, len - u));
            frame[u + 6..u + 8].copy_from_slice(&pseudo.to_be_bytes());
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GsoType::UdpL4,
                ecn: false,
                hdr_len: (u + UDP_HEADER_LEN) as u16,
                gso_size: gso_size as u16,
                csum_start: u as u16,
                csum_offset: 6,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ip_len_matches, Segmenter, VNET_HDR_LEN};
    use super::*;
    use proptest::prelude::*;

    /// An Ethernet + IPv4 (or IPv6) + UDP frame from port 5000 to 6000 with `payload`, checksums
    /// complete.
    fn datagram(v6: bool, payload: &[u8], id: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        let udp_len = 8 + payload.len();
        if v6 {
            f[12..14].copy_from_slice(&[0x86, 0xdd]);
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
            ip[6] = 17;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            ip[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            f.extend_from_slice(&ip);
        } else {
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&id.to_be_bytes());
            ip[8] = 64;
            ip[9] = 17;
            ip[12..16].copy_from_slice(&[10, 32, 1, 1]);
            ip[16..20].copy_from_slice(&[10, 32, 2, 1]);
            let c = checksum::checksum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        let l4 = f.len();
        f.extend_from_slice(&5000u16.to_be_bytes());
        f.extend_from_slice(&6000u16.to_be_bytes());
        f.extend_from_slice(&(udp_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        let l = udp_layout(&f).unwrap();
        let c = checksum::finish(checksum::combine(&[
            pseudo_sum(&f, &l, udp_len),
            checksum::sum(&f[l4..]),
        ]));
        f[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn verifies(f: &[u8]) -> bool {
        let l = udp_layout(f).unwrap();
        let sum =
            checksum::combine(&[pseudo_sum(f, &l, f.len() - l.l4), checksum::sum(&f[l.l4..])]);
        checksum::finish(sum) == 0 && ip_len_matches(f, &l)
    }

    #[test]
    fn the_header_of_a_merged_super_frame() {
        let mut c = UdpCoalescer::new();
        for i in 0..3u8 {
            assert_eq!(c.push(&datagram(false, &[i; 100], 7)), Pushed::Held);
        }
        let out = c.take().unwrap().to_vec();
        // NEEDS_CSUM, UDP_L4, hdr_len 42, gso_size 100, csum_start 34, csum_offset 6.
        assert_eq!(out[..10], [1, 5, 42, 0, 100, 0, 34, 0, 6, 0]);
        let f = &out[VNET_HDR_LEN..];
        assert_eq!(f.len(), 42 + 300);
        // IPv4 total length and UDP length cover all three payloads.
        assert_eq!(f[16..18], (20u16 + 8 + 300).to_be_bytes());
        assert_eq!(f[38..40], (8u16 + 300).to_be_bytes());
        assert!(checksum::verify(&f[14..34]));
        assert_eq!(c.segments(), 0);
        assert!(c.take().is_none());
    }

    #[test]
    fn what_does_not_merge() {
        let mut c = UdpCoalescer::new();
        assert_eq!(c.push(&datagram(false, &[1; 100], 1)), Pushed::Held);
        // Larger than the first: refused.
        assert_eq!(c.push(&datagram(false, &[1; 101], 1)), Pushed::Refused);
        // Another flow: refused.
        let mut other = datagram(false, &[1; 100], 1);
        other[34] ^= 1;
        assert_eq!(c.push(&other), Pushed::Refused);
        // A corrupted one: refused.
        let mut bad = datagram(false, &[1; 100], 1);
        bad[60] ^= 0xff;
        assert_eq!(c.push(&bad), Pushed::Refused);
        // Shorter: joins and ends the super-frame.
        assert_eq!(c.push(&datagram(false, &[1; 50], 1)), Pushed::Held);
        assert_eq!(c.push(&datagram(false, &[1; 50], 1)), Pushed::Refused);
        assert_eq!(c.segments(), 2);
        // A lone datagram goes out as it came, marked valid.
        c.take();
        let one = datagram(true, &[3; 10], 0);
        assert_eq!(c.push(&one), Pushed::Held);
        let out = c.take().unwrap();
        assert_eq!(out[0], F_DATA_VALID);
        assert_eq!(out[VNET_HDR_LEN..], one[..]);
        // IPv6 without a checksum: refused; IPv4 without one: taken.
        let mut none6 = datagram(true, &[3; 10], 0);
        none6[14 + 40 + 6..14 + 40 + 8].fill(0);
        assert_eq!(c.push(&none6), Pushed::Refused);
        let mut none4 = datagram(false, &[3; 10], 0);
        none4[40..42].fill(0);
        assert_eq!(c.push(&none4), Pushed::Held);
    }

    #[test]
    fn a_udp_super_frame_shorter_than_a_tcp_header_is_cut() {
        // Two datagrams of one byte: 44 bytes of super-frame, less than the TCP header the
        // segmenter once read from every super-frame (found by the property test below).
        let f = datagram(false, &[7, 8], 1);
        assert_eq!(f.len(), 44);
        let hdr = VnetHdr {
            gso_type: GsoType::UdpL4,
            gso_size: 1,
            ..VnetHdr::NONE
        };
        let mut seg = Segmenter::new(&hdr, &f).unwrap();
        let mut out = [0u8; 64];
        let mut payloads = Vec::new();
        while let Some(n) = seg.next_into(&mut out).unwrap() {
            assert!(verifies(&out[..n]));
            payloads.push(out[42..n].to_vec());
        }
        assert_eq!(payloads, [vec![7], vec![8]]);
    }

    proptest! {
        /// Datagrams merged and cut again (as the kernel would, with our own segmenter) come
        /// back as they were, with verifying checksums.
        #[test]
        fn merged_then_cut_gives_the_datagrams_back(
            v6 in any::<bool>(),
            size in 1usize..1400,
            count in 1usize..20,
            last in 1usize..1400,
        ) {
            let last = last.min(size);
            let mut sent = Vec::new();
            for i in 0..count {
                let n = if i + 1 == count { last } else { size };
                sent.push(datagram(v6, &vec![i as u8; n], 100 + i as u16));
            }
            let mut c = UdpCoalescer::new();
            for d in &sent {
                prop_assert_eq!(c.push(d), Pushed::Held);
            }
            let out = c.take().unwrap().to_vec();
            let hdr = VnetHdr::parse(&out).unwrap();
            let frame = &out[VNET_HDR_LEN..];
            if count == 1 {
                prop_assert_eq!(frame, &sent[0][..]);
                return Ok(());
            }
            let mut seg = Segmenter::new(&hdr, frame).unwrap();
            prop_assert!(!seg.is_tcp());
            let mut buf = vec![0u8; 2048];
            let mut got = Vec::new();
            while let Some(n) = seg.next_into(&mut buf).unwrap() {
                prop_assert!(verifies(&buf[..n]));
                got.push(buf[..n].to_vec());
            }
            prop_assert_eq!(got.len(), sent.len());
            for (g, s) in got.iter().zip(&sent) {
                let l = udp_layout(s).unwrap();
                // Headers equal but for the IPv4 identification and checksum, which the
                // segmenter numbers from the first datagram's.
                prop_assert_eq!(&g[l.l4..], &s[l.l4..]);
                prop_assert_eq!(&g[..l.ip + 4], &s[..l.ip + 4]);
            }
        }
    }
}
