//! Offloads between the TAP port and the sleeve: the virtio-net header a TAP opened with
//! `IFF_VNET_HDR` puts before every frame, checksum completion for frames the kernel left with a
//! partial checksum, TCP segmentation of super-frames (GSO) and coalescing of TCP segments into
//! super-frames (GRO).
//!
//! With TSO on, the kernel hands the TAP reader TCP super-frames of up to 64 KiB: one Ethernet,
//! IP and TCP header followed by many MSS worth of payload, described by a [`VnetHdr`]. The sleeve
//! carries frames no larger than the pod MTU, so [`Segmenter`] cuts a super-frame into ordinary
//! segments (fixing lengths, IPv4 identification and header checksum, sequence numbers, flags
//! and computing each TCP checksum), each of which then crosses the overlay as before. On the
//! receiving host [`Coalescer`] joins consecutive in-order segments of one TCP flow back into one
//! super-frame written to the TAP with a GSO header, so the pod's kernel handles one 64 KiB
//! packet instead of forty-five.
//!
//! UDP the same way (`udp.rs`): with USO on, the kernel hands the TAP reader UDP super-frames
//! (`GSO_UDP_L4`, from a pod sending with `UDP_SEGMENT`) that [`Segmenter`] cuts into datagrams,
//! and [`UdpCoalescer`] joins the datagrams of one UDP flow, all of one size, into a `UDP_L4`
//! super-frame for the receiving TAP.
//!
//! Pure and allocation-free: the caller owns every buffer ([`Coalescer::new`] allocates its one
//! buffer up front). No I/O, no time, no logging.

use crate::wire::checksum;

mod udp;
pub use udp::{UdpCoalescer, MAX_UDP_SEGMENTS};

/// Bytes of `struct virtio_net_hdr` (without `num_buffers`): what the TAP reads and writes
/// before each frame with the default `TUNSETVNETHDRSZ`.
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is partial.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksums were verified.
pub const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_ECN`: the ECN bit that may accompany a GSO type.
const GSO_ECN: u8 = 0x80;
/// Largest super-frame this module builds or accepts (Ethernet header with one VLAN tag plus
/// the largest IPv4 total length).
pub const MAX_SUPER_FRAME: usize = 18 + 65_535;

/// Why an offloaded frame could not be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// Shorter than the virtio-net header, or than the headers it describes.
    #[error("truncated frame or virtio-net header")]
    Truncated,
    /// A virtio-net header field holds a value this module does not accept.
    #[error("malformed virtio-net header")]
    BadHeader,
    /// A GSO type this router does not enable (UDP fragmentation offload).
    #[error("unsupported GSO type")]
    UnsupportedGso,
    /// A GSO frame that is not the TCP or UDP over IPv4/IPv6 (no extension headers) its type
    /// claims.
    #[error("GSO frame is not the plain TCP or UDP its type claims")]
    WrongProtocol,
    /// The output buffer cannot hold the segment.
    #[error("buffer too small")]
    BufferTooSmall,
}

/// The GSO type of a virtio-net header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoType {
    /// Not a super-frame.
    None,
    /// TCP over IPv4 (`VIRTIO_NET_HDR_GSO_TCPV4`).
    TcpV4,
    /// UDP fragmentation offload (`VIRTIO_NET_HDR_GSO_UDP`); never enabled here.
    Udp,
    /// TCP over IPv6 (`VIRTIO_NET_HDR_GSO_TCPV6`).
    TcpV6,
    /// UDP segmentation offload (`VIRTIO_NET_HDR_GSO_UDP_L4`); never enabled here.
    UdpL4,
}

impl GsoType {
    fn from_u8(v: u8) -> Option<GsoType> {
        Some(match v & !GSO_ECN {
            0 => GsoType::None,
            1 => GsoType::TcpV4,
            3 => GsoType::Udp,
            4 => GsoType::TcpV6,
            5 => GsoType::UdpL4,
            _ => return None,
        })
    }

    fn to_u8(self) -> u8 {
        match self {
            GsoType::None => 0,
            GsoType::TcpV4 => 1,
            GsoType::Udp => 3,
            GsoType::TcpV6 => 4,
            GsoType::UdpL4 => 5,
        }
    }
}

/// A parsed `struct virtio_net_hdr` (little-endian fields, as a TAP with `TUNSETVNETLE` or on a
/// little-endian host writes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM` and/or `F_DATA_VALID`.
    pub flags: u8,
    /// What kind of super-frame, if any.
    pub gso_type: GsoType,
    /// The ECN bit of the GSO type (the sender saw CWR on the super-frame).
    pub ecn: bool,
    /// Bytes of headers (Ethernet + IP + transport), a hint.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts, from the start of the frame.
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum goes.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// The header of a frame that needs nothing done to it.
    pub const NONE: VnetHdr = VnetHdr {
        flags: 0,
        gso_type: GsoType::None,
        ecn: false,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Parses the first [`VNET_HDR_LEN`] bytes of `buf`, checking every field.
    pub fn parse(buf: &[u8]) -> Result<VnetHdr, OffloadError> {
        let b = buf.get(..VNET_HDR_LEN).ok_or(OffloadError::Truncated)?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let flags = b[0];
        if flags & !(F_NEEDS_CSUM | F_DATA_VALID) != 0 {
            return Err(OffloadError::BadHeader);
        }
        let gso_type = GsoType::from_u8(b[1]).ok_or(OffloadError::BadHeader)?;
        let h = VnetHdr {
            flags,
            gso_type,
            ecn: b[1] & GSO_ECN != 0,
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        };
        if gso_type != GsoType::None && h.gso_size == 0 {
            return Err(OffloadError::BadHeader);
        }
        Ok(h)
    }

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), OffloadError> {
        let b = buf
            .get_mut(..VNET_HDR_LEN)
            .ok_or(OffloadError::BufferTooSmall)?;
        b[0] = self.flags;
        b[1] = self.gso_type.to_u8() | if self.ecn { GSO_ECN } else { 0 };
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        Ok(())
    }

    /// True if the frame needs its checksum completed ([`complete_checksum`]).
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }
}

/// Completes a partial checksum as `hdr` describes (`F_NEEDS_CSUM`): the ones' complement sum
/// from `csum_start` to the end of the frame, which includes the pseudo-header sum the kernel
/// left in the checksum field, inverted and stored at `csum_start + csum_offset`.
pub fn complete_checksum(hdr: &VnetHdr, frame: &mut [u8]) -> Result<(), OffloadError> {
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > frame.len() || start > frame.len() {
        return Err(OffloadError::Truncated);
    }
    let c = checksum::finish(fast_sum(&frame[start..]));
    // UDP transmits a computed zero as all ones; for TCP both are the same sum.
    let c = if c == 0 { 0xffff } else { c };
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// The virtio-net header that describes `frame`'s TCP checksum as partial (`F_NEEDS_CSUM`,
/// `csum_start` at the TCP header, `csum_offset` 16), or `None` if `frame` is not a TCP/IPv4 or
/// TCP/IPv6 frame this module parses. With [`complete_checksum`] it finishes a segment that
/// [`Segmenter::leave_checksum_partial`] left partial.
pub fn tcp_partial_hdr(frame: &[u8]) -> Option<VnetHdr> {
    let l = tcp_layout(frame)?;
    Some(VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: u16::try_from(l.l4).ok()?,
        csum_offset: 16,
        ..VnetHdr::NONE
    })
}

/// The ones' complement sum of `data` (as [`checksum::sum`]), 8 bytes at a time. The sum does
/// not depend on byte order (RFC 1071, 2.B): words are added in the host's order and the folded
/// result swapped to big-endian once.
pub fn fast_sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let v = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        acc += (v & 0xffff_ffff) + (v >> 32);
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // After folding, acc fits in 16 bits.
    let folded = acc as u16;
    let main = if cfg!(target_endian = "little") {
        folded.swap_bytes()
    } else {
        folded
    };
    // The remainder starts at a multiple of 8, so at an even offset: its sum adds as it is.
    checksum::combine(&[u32::from(main), checksum::sum(words.remainder())])
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const UDP_HEADER_LEN: usize = 8;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_URG: u8 = 0x20;
const TCP_CWR: u8 = 0x80;

/// Where the headers of a TCP or UDP frame are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct L4Layout {
    v6: bool,
    /// The IP protocol: TCP (6) or UDP (17).
    proto: u8,
    /// Offset of the IP header.
    ip: usize,
    /// Offset of the TCP or UDP header.
    l4: usize,
    /// Offset of the payload (end of the headers).
    payload: usize,
}

/// Finds the IP and TCP headers of a TCP/IPv4 or TCP/IPv6 frame (one optional VLAN tag, no IPv6
/// extension headers, no IPv4 fragments). Checks only what it needs to read safely.
fn tcp_layout(frame: &[u8]) -> Option<L4Layout> {
    let (v6, ip, tcp) = ip_layout(frame, PROTO_TCP)?;
    let doff = usize::from(*frame.get(tcp + 12)? >> 4) * 4;
    if doff < 20 || frame.len() < tcp + doff {
        return None;
    }
    Some(L4Layout {
        v6,
        proto: PROTO_TCP,
        ip,
        l4: tcp,
        payload: tcp + doff,
    })
}

/// The same for a UDP/IPv4 or UDP/IPv6 frame: the payload follows the 8-byte UDP header.
fn udp_layout(frame: &[u8]) -> Option<L4Layout> {
    let (v6, ip, udp) = ip_layout(frame, PROTO_UDP)?;
    if frame.len() < udp + UDP_HEADER_LEN {
        return None;
    }
    Some(L4Layout {
        v6,
        proto: PROTO_UDP,
        ip,
        l4: udp,
        payload: udp + UDP_HEADER_LEN,
    })
}

/// Whether the frame is IPv6, and the offsets of its IP header and of the header of `proto`
/// after it, for IPv4 or IPv6 carrying `proto` (one optional VLAN tag, no IPv6 extension
/// headers, no IPv4 fragments).
fn ip_layout(frame: &[u8], proto: u8) -> Option<(bool, usize, usize)> {
    let be16 = |i: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*frame.get(i)?, *frame.get(i + 1)?]))
    };
    let (ethertype, ip) = match be16(12)? {
        ETHERTYPE_VLAN => (be16(16)?, 18),
        t => (t, 14),
    };
    match ethertype {
        ETHERTYPE_IPV4 => {
            let vihl = *frame.get(ip)?;
            let ihl = usize::from(vihl & 0x0f) * 4;
            if vihl >> 4 != 4 || ihl < 20 || *frame.get(ip + 9)? != proto {
                return None;
            }
            // No fragments: MF clear and offset zero.
            if be16(ip + 6)? & 0x3fff != 0 {
                return None;
            }
            Some((false, ip, ip + ihl))
        }
        ETHERTYPE_IPV6 => {
            if *frame.get(ip)? >> 4 != 6 || *frame.get(ip + 6)? != proto {
                return None;
            }
            Some((true, ip, ip + 40))
        }
        _ => None,
    }
}

/// The partial sum of the pseudo-header for a TCP segment or UDP datagram (header and payload)
/// of `tcp_len` bytes.
fn pseudo_sum(frame: &[u8], l: &L4Layout, tcp_len: usize) -> u32 {
    let addrs = if l.v6 {
        &frame[l.ip + 8..l.ip + 40]
    } else {
        &frame[l.ip + 12..l.ip + 20]
    };
    let len = (tcp_len as u32).to_be_bytes();
    checksum::combine(&[
        checksum::sum(addrs),
        checksum::sum(&len),
        u32::from(l.proto),
    ])
}

/// The partial sum of the TCP segment or UDP datagram that ends `frame` (laid out as `l`): its
/// pseudo-header and all of its bytes, checksum field included.
fn l4_sum(frame: &[u8], l: &L4Layout) -> u32 {
    checksum::combine(&[
        pseudo_sum(frame, l, frame.len() - l.l4),
        fast_sum(&frame[l.l4..]),
    ])
}

/// True if the TCP or UDP checksum that ends `frame` verifies.
fn l4_checksum_ok(frame: &[u8], l: &L4Layout) -> bool {
    let sum = l4_sum(frame, l);
    sum == 0xffff || checksum::finish(sum) == 0
}

/// True if `frame` has the Ethernet header and the IP header of `held` (laid out as `l`), but for
/// the fields that differ between the packets of one flow (length, IPv4 identification and
/// checksum), and the same ports: what the coalescers require before merging.
fn same_headers(held: &[u8], frame: &[u8], l: &L4Layout) -> bool {
    let (ip, l4) = (l.ip, l.l4);
    // Ethernet header (and VLAN tag).
    if held[..ip] != frame[..ip] {
        return false;
    }
    let ip_same = if l.v6 {
        // Version, traffic class, flow label; next header, hop limit, addresses.
        held[ip..ip + 4] == frame[ip..ip + 4] && held[ip + 6..l4] == frame[ip + 6..l4]
    } else {
        // Version/IHL, TOS; flags/fragment, TTL, protocol; addresses and options.
        held[ip..ip + 2] == frame[ip..ip + 2]
            && held[ip + 6..ip + 10] == frame[ip + 6..ip + 10]
            && held[ip + 12..l4] == frame[ip + 12..l4]
    };
    ip_same && held[l4..l4 + 4] == frame[l4..l4 + 4]
}

/// True if the IP length field of `frame` says the packet ends where the frame does.
fn ip_len_matches(frame: &[u8], l: &L4Layout) -> bool {
    if l.v6 {
        usize::from(u16::from_be_bytes([frame[l.ip + 4], frame[l.ip + 5]])) + 40
            == frame.len() - l.ip
    } else {
        usize::from(u16::from_be_bytes([frame[l.ip + 2], frame[l.ip + 3]])) == frame.len() - l.ip
    }
}

/// Sets the IP length field for a frame whose IP packet is `ip_len` bytes (IPv4 total length,
/// with the header checksum recomputed; IPv6 payload length).
fn set_ip_len(frame: &mut [u8], l: &L4Layout, ip_len: usize) {
    if l.v6 {
        let pl = (ip_len - 40) as u16;
        frame[l.ip + 4..l.ip + 6].copy_from_slice(&pl.to_be_bytes());
    } else {
        frame[l.ip + 2..l.ip + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        fix_ipv4_checksum(frame, l);
    }
}

fn fix_ipv4_checksum(frame: &mut [u8], l: &L4Layout) {
    frame[l.ip + 10..l.ip + 12].fill(0);
    let c = checksum::checksum(&frame[l.ip..l.l4]);
    frame[l.ip + 10..l.ip + 12].copy_from_slice(&c.to_be_bytes());
}

/// Cuts a TCP super-frame into segments of at most `gso_size` payload bytes, or a UDP
/// super-frame (USO, `GSO_UDP_L4`) into datagrams of at most `gso_size` payload bytes, one at a
/// time into caller buffers.
///
/// ```
/// # use vswitch::offload::{Segmenter, VnetHdr};
/// # fn demo(hdr: &VnetHdr, super_frame: &[u8]) -> Result<(), vswitch::offload::OffloadError> {
/// let mut seg = Segmenter::new(hdr, super_frame)?;
/// let mut out = [0u8; 1514];
/// while let Some(len) = seg.next_into(&mut out)? {
///     let segment = &out[..len]; // an ordinary Ethernet frame with correct checksums
/// #   let _ = segment;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Segmenter<'a> {
    frame: &'a [u8],
    layout: L4Layout,
    gso_size: usize,
    /// Payload bytes already emitted.
    done: usize,
    /// Segments already emitted.
    index: u16,
    seq: u32,
    ipv4_id: u16,
    flags: u8,
    /// Leave each TCP checksum partial (pseudo-header sum only) instead of computing it.
    partial: bool,
}

impl<'a> Segmenter<'a> {
    /// Checks that `frame` is the TCP or UDP super-frame `hdr` describes.
    pub fn new(hdr: &VnetHdr, frame: &'a [u8]) -> Result<Segmenter<'a>, OffloadError> {
        let layout = match hdr.gso_type {
            GsoType::TcpV4 | GsoType::TcpV6 => {
                let layout = tcp_layout(frame).ok_or(OffloadError::WrongProtocol)?;
                if layout.v6 != (hdr.gso_type == GsoType::TcpV6) {
                    return Err(OffloadError::WrongProtocol);
                }
                layout
            }
            // USO: either family, the datagram's payload cut in `gso_size` pieces.
            GsoType::UdpL4 => udp_layout(frame).ok_or(OffloadError::WrongProtocol)?,
            GsoType::None => return Err(OffloadError::BadHeader),
            // UFO (IP fragmentation of one datagram) is not taken: the TAP never offers it.
            GsoType::Udp => return Err(OffloadError::UnsupportedGso),
        };
        let t = layout.l4;
        // The sequence number and flags of a TCP super-frame (a UDP one has neither, and may be
        // shorter than a TCP header).
        let (seq, flags) = if layout.proto == PROTO_TCP {
            let seq = u32::from_be_bytes([frame[t + 4], frame[t + 5], frame[t + 6], frame[t + 7]]);
            (seq, frame[t + 13])
        } else {
            (0, 0)
        };
        Ok(Segmenter {
            frame,
            layout,
            gso_size: usize::from(hdr.gso_size),
            done: 0,
            index: 0,
            seq,
            ipv4_id: u16::from_be_bytes([frame[layout.ip + 4], frame[layout.ip + 5]]),
            flags,
            partial: false,
        })
    }

    /// Leaves each segment's TCP checksum partial, as a virtio-net `F_NEEDS_CSUM` frame carries
    /// it: the checksum field holds the pseudo-header sum (folded, not inverted) and the rest is
    /// not summed. For a receiver that knows it (a Weft peer told by the sleeve flag
    /// `FLAG_CSUM_PARTIAL`), never for the kernel or anyone else: it saves a pass over every byte.
    pub fn leave_checksum_partial(mut self) -> Self {
        self.partial = self.is_tcp();
        self
    }

    /// True for a TCP super-frame, false for a UDP one (USO), whose datagrams always get
    /// complete checksums ([`leave_checksum_partial`](Self::leave_checksum_partial) does not
    /// apply).
    pub fn is_tcp(&self) -> bool {
        self.layout.proto == PROTO_TCP
    }

    /// How many segments the super-frame makes.
    pub fn count(&self) -> usize {
        let payload = self.frame.len() - self.layout.payload;
        payload.div_ceil(self.gso_size).max(1)
    }

    /// The largest segment, headers included.
    pub fn max_segment_len(&self) -> usize {
        self.layout.payload + self.gso_size.min(self.frame.len() - self.layout.payload)
    }

    /// Writes the next segment into `out` and returns its length, or `None` when all are out.
    pub fn next_into(&mut self, out: &mut [u8]) -> Result<Option<usize>, OffloadError> {
        let l = self.layout;
        let total = self.frame.len() - l.payload;
        if usize::from(self.index) >= self.count() {
            return Ok(None);
        }
        let chunk = (total - self.done).min(self.gso_size);
        let len = l.payload + chunk;
        let out = out.get_mut(..len).ok_or(OffloadError::BufferTooSmall)?;
        out[..l.payload].copy_from_slice(&self.frame[..l.payload]);
        out[l.payload..].copy_from_slice(&self.frame[l.payload + self.done..][..chunk]);
        let last = self.done + chunk >= total;
        // IP: length, and for IPv4 the identification and header checksum.
        if !l.v6 {
            let id = self.ipv4_id.wrapping_add(self.index);
            out[l.ip + 4..l.ip + 6].copy_from_slice(&id.to_be_bytes());
        }
        set_ip_len(out, &l, len - l.ip);
        if self.is_tcp() {
            self.tcp_finish(out, last);
        } else {
            udp_finish(out, &l);
        }
        self.done += chunk;
        self.index += 1;
        Ok(Some(len))
    }

    /// The TCP header of the segment in `out` (the next one, `last` or not): sequence number,
    /// flags (FIN and PSH only on the last, CWR only on the first), checksum.
    fn tcp_finish(&self, out: &mut [u8], last: bool) {
        let l = self.layout;
        let t = l.l4;
        let seq = self.seq.wrapping_add(self.done as u32);
        out[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = self.flags;
        if !last {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        if self.index > 0 {
            flags &= !TCP_CWR;
        }
        out[t + 13] = flags;
        let c = if self.partial {
            // Folded, not inverted: what `complete_checksum` finishes.
            !checksum::finish(pseudo_sum(out, &l, out.len() - t))
        } else {
            out[t + 16..t + 18].fill(0);
            checksum::finish(l4_sum(out, &l))
        };
        out[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
    }
}

/// Sets the UDP length of the datagram that is `frame` and computes its checksum (0 is sent as
/// `ffff`, as RFC 768 and RFC 8200 require).
fn udp_finish(frame: &mut [u8], l: &L4Layout) {
    let u = l.l4;
    let udp_len = (frame.len() - u) as u16;
    frame[u + 4..u + 6].copy_from_slice(&udp_len.to_be_bytes());
    frame[u + 6..u + 8].fill(0);
    let c = match checksum::finish(l4_sum(frame, l)) {
        0 => 0xffff,
        c => c,
    };
    frame[u + 6..u + 8].copy_from_slice(&c.to_be_bytes());
}

/// What [`Coalescer::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Appended to (or started) the held super-frame.
    Held,
    /// Not taken: the caller writes the held super-frame ([`Coalescer::take`]) if any, then
    /// this frame as it is.
    Refused,
}

/// Joins consecutive in-order TCP segments of one flow into one super-frame (receive-side GRO).
///
/// Segments merge when they belong to the same flow (same Ethernet header, IP header apart from
/// length, identification and checksum, ports, acknowledgment, window and TCP options), follow
/// each other in sequence, carry only ACK (PSH ends the super-frame), have verified checksums
/// and, all but the last, the same payload size. The result carries a virtio-net header with
/// `gso_type` TCPV4/TCPV6, `gso_size` and `F_NEEDS_CSUM` with the pseudo-header sum in the
/// checksum field, as the kernel expects from a TAP writer.
#[derive(Debug)]
pub struct Coalescer {
    held: SuperFrame,
    next_seq: u32,
    /// The first held segment's checksum is partial (not verified, not complete).
    first_partial: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer::new()
    }
}

impl Coalescer {
    /// A coalescer with room for one [`MAX_SUPER_FRAME`] (allocated here, once).
    pub fn new() -> Coalescer {
        Coalescer {
            held: SuperFrame::new(PROTO_TCP),
            next_seq: 0,
            first_partial: false,
        }
    }

    /// Segments in the held super-frame (0: none held).
    pub fn segments(&self) -> u16 {
        self.held.segments
    }

    /// Offers `frame`. [`Pushed::Refused`] means the caller must first [`take`](Self::take) the
    /// held super-frame (order matters) and then write `frame` itself.
    pub fn push(&mut self, frame: &[u8]) -> Pushed {
        self.offer(frame, false)
    }

    /// Offers a TCP segment whose checksum field holds only the pseudo-header sum (see
    /// [`Segmenter::leave_checksum_partial`]): it is not verified (the caller vouches for the
    /// bytes: the sleeve's UDP checksum or AEAD tag covered them), and a lone segment goes out
    /// with `F_NEEDS_CSUM` instead of `F_DATA_VALID`. Otherwise as [`push`](Self::push).
    pub fn push_partial(&mut self, frame: &[u8]) -> Pushed {
        self.offer(frame, true)
    }

    fn offer(&mut self, frame: &[u8], partial: bool) -> Pushed {
        let Some(l) = tcp_layout(frame) else {
            return Pushed::Refused;
        };
        let t = l.l4;
        let payload = frame.len() - l.payload;
        let flags = frame[t + 13];
        let ip_len_ok = ip_len_matches(frame, &l);
        if payload == 0
            || !ip_len_ok
            || flags & !(TCP_ACK | TCP_PSH) != 0
            || flags & TCP_ACK == 0
            || flags & (TCP_SYN | TCP_FIN | TCP_RST | TCP_URG) != 0
        {
            return Pushed::Refused;
        }
        let seq = u32::from_be_bytes([frame[t + 4], frame[t + 5], frame[t + 6], frame[t + 7]]);
        if !self.held.may_join(frame, &l, payload, u16::MAX)
            || (self.held.segments > 0 && (seq != self.next_seq || !self.same_tcp_fields(frame)))
        {
            return Pushed::Refused;
        }
        // Only segments whose checksum verifies are merged: the merged frame's checksum is
        // trusted by the receiving kernel. Partial ones are not checked (nor checkable).
        if !partial && !l4_checksum_ok(frame, &l) {
            return Pushed::Refused;
        }
        if self.held.segments == 0 {
            self.first_partial = partial;
        } else {
            // The flags of the last segment (PSH) go to the super-frame.
            self.held.buf[VNET_HDR_LEN + t + 13] = flags;
        }
        self.held.hold(frame, l, payload);
        self.next_seq = seq.wrapping_add(payload as u32);
        if flags & TCP_PSH != 0 {
            self.held.closed = true;
        }
        Pushed::Held
    }

    /// The TCP fields that must match the held segments' (the headers and ports are
    /// [`SuperFrame::may_join`]'s): acknowledgment, data offset; window; urgent pointer and
    /// options.
    fn same_tcp_fields(&self, frame: &[u8]) -> bool {
        let held = self.held.frame();
        let l = &self.held.layout;
        let t = l.l4;
        held[t + 8..t + 13] == frame[t + 8..t + 13]
            && held[t + 14..t + 16] == frame[t + 14..t + 16]
            && held[t + 18..l.payload] == frame[t + 18..l.payload]
    }

    /// Finishes the held super-frame and returns it with its virtio-net header in front (ready
    /// for one TAP write), or `None` if nothing is held. A single held segment goes out as it
    /// came, with `F_DATA_VALID` (its checksum was verified).
    pub fn take(&mut self) -> Option<&[u8]> {
        let first_partial = self.first_partial;
        self.held.take(|frame, l, segments, gso_size| {
            let len = frame.len();
            if segments == 1 && first_partial {
                // The checksum field already holds the pseudo-header sum for this length.
                return VnetHdr {
                    flags: F_NEEDS_CSUM,
                    csum_start: l.l4 as u16,
                    csum_offset: 16,
                    ..VnetHdr::NONE
                };
            }
            if segments == 1 {
                return VnetHdr {
                    flags: F_DATA_VALID,
                    ..VnetHdr::NONE
                };
            }
            set_ip_len(frame, l, len - l.ip);
            let t = l.l4;
            // The partial checksum: the pseudo-header sum, folded, not inverted.
            let pseudo = !checksum::finish(pseudo_sum(frame, l, len - t));
            frame[t + 16..t + 18].copy_from_slice(&pseudo.to_be_bytes());
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: if l.v6 { GsoType::TcpV6 } else { GsoType::TcpV4 },
                ecn: false,
                hdr_len: l.payload as u16,
                gso_size: gso_size as u16,
                csum_start: t as u16,
                csum_offset: 16,
            }
        })
    }
}

/// The super-frame a coalescer is building: `VNET_HDR_LEN` bytes of header room, then the first
/// frame whole and the payloads of the others after it.
#[derive(Debug)]
struct SuperFrame {
    buf: Box<[u8]>,
    /// Frame bytes held (after the header room); 0 when nothing is held.
    len: usize,
    layout: L4Layout,
    segments: u16,
    /// The payload size of the first frame, which the others may not exceed.
    gso_size: usize,
    /// No more frames may join (the last was short, or the coalescer said so).
    closed: bool,
}

impl SuperFrame {
    /// Room for one [`MAX_SUPER_FRAME`], allocated here, once.
    fn new(proto: u8) -> SuperFrame {
        SuperFrame {
            buf: vec![0u8; VNET_HDR_LEN + MAX_SUPER_FRAME].into_boxed_slice(),
            len: 0,
            layout: L4Layout {
                v6: false,
                proto,
                ip: 0,
                l4: 0,
                payload: 0,
            },
            segments: 0,
            gso_size: 0,
            closed: false,
        }
    }

    /// The frame bytes held.
    fn frame(&self) -> &[u8] {
        &self.buf[VNET_HDR_LEN..VNET_HDR_LEN + self.len]
    }

    /// Whether `frame` (laid out as `l`, with `payload` bytes of payload) may join what is held:
    /// anything may start a super-frame; to join, it must be of the same flow and layout, no
    /// larger than the first, and keep the super-frame within its limits and `max_segments`.
    fn may_join(&self, frame: &[u8], l: &L4Layout, payload: usize, max_segments: u16) -> bool {
        self.segments == 0
            || !(self.closed
                || *l != self.layout
                || payload > self.gso_size
                || self.segments >= max_segments
                || self.len + payload > MAX_SUPER_FRAME
                || self.len + payload - l.ip > 65_535
                || !same_headers(self.frame(), frame, l))
    }

    /// Adds `frame`: whole as the first, its payload after the others'. A payload shorter than
    /// the first closes the super-frame.
    fn hold(&mut self, frame: &[u8], l: L4Layout, payload: usize) {
        let held = &mut self.buf[VNET_HDR_LEN..];
        if self.segments == 0 {
            held[..frame.len()].copy_from_slice(frame);
            self.len = frame.len();
            self.layout = l;
            self.gso_size = payload;
            self.closed = false;
        } else {
            held[self.len..self.len + payload].copy_from_slice(&frame[l.payload..]);
            self.len += payload;
        }
        self.segments += 1;
        if payload < self.gso_size {
            self.closed = true;
        }
    }

    /// Hands the held super-frame to `header` (the frame, its layout, how many frames it holds
    /// and their payload size), which fixes its headers and returns the virtio-net header; returns
    /// both together, ready for one TAP write, or `None` if nothing is held. Nothing is held
    /// afterwards.
    fn take(
        &mut self,
        header: impl FnOnce(&mut [u8], &L4Layout, u16, usize) -> VnetHdr,
    ) -> Option<&[u8]> {
        if self.segments == 0 {
            return None;
        }
        let (len, segments) = (self.len, self.segments);
        self.segments = 0;
        self.len = 0;
        let (hdr_room, frame) = self.buf.split_at_mut(VNET_HDR_LEN);
        let hdr = header(&mut frame[..len], &self.layout, segments, self.gso_size);
        hdr.emit(hdr_room).ok()?;
        Some(&self.buf[..VNET_HDR_LEN + len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnet_header_parses_and_emits() {
        // NEEDS_CSUM, TCPV4, hdr_len 66, gso_size 1448, csum_start 34, csum_offset 16.
        let bytes = [1u8, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0];
        let h = VnetHdr::parse(&bytes).unwrap();
        assert_eq!(
            h,
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GsoType::TcpV4,
                ecn: false,
                hdr_len: 66,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16,
            }
        );
        let mut out = [0u8; VNET_HDR_LEN];
        h.emit(&mut out).unwrap();
        assert_eq!(out, bytes);
        // ECN bit with TCPV6.
        let h = VnetHdr::parse(&[0, 0x84, 0, 0, 100, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!((h.gso_type, h.ecn), (GsoType::TcpV6, true));
    }

    #[test]
    fn vnet_header_rejects_bad_input() {
        assert_eq!(VnetHdr::parse(&[0; 9]), Err(OffloadError::Truncated));
        assert_eq!(
            VnetHdr::parse(&[4, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(OffloadError::BadHeader)
        );
        assert_eq!(
            VnetHdr::parse(&[0, 2, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(OffloadError::BadHeader)
        );
        // GSO without a segment size.
        assert_eq!(
            VnetHdr::parse(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(OffloadError::BadHeader)
        );
        assert_eq!(
            VnetHdr::NONE.emit(&mut [0u8; 4]),
            Err(OffloadError::BufferTooSmall)
        );
    }

    /// A TCP frame over IPv4 or IPv6 with the given payload, options (timestamps) and flags, and
    /// a correct checksum.
    fn tcp_frame(v6: bool, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        let opts = [1u8, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        let tcp_len = 20 + opts.len() + payload.len();
        if v6 {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(tcp_len as u16).to_be_bytes());
            f.extend_from_slice(&[PROTO_TCP, 64]);
            f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        } else {
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
            f.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
            f.extend_from_slice(&[
                0x12, 0x34, 0x40, 0, 64, PROTO_TCP, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
            ]);
            let c = checksum::checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
        let t = f.len();
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x50]);
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 7, 0x80, flags, 0x01, 0xf5, 0, 0, 0, 0]);
        f.extend_from_slice(&opts);
        f.extend_from_slice(payload);
        let l = tcp_layout(&f).unwrap();
        let sum = checksum::combine(&[pseudo_sum(&f, &l, f.len() - t), checksum::sum(&f[t..])]);
        f[t + 16..t + 18].copy_from_slice(&checksum::finish(sum).to_be_bytes());
        f
    }

    fn tcp_checksum_ok(f: &[u8]) -> bool {
        let l = tcp_layout(f).unwrap();
        let sum =
            checksum::combine(&[pseudo_sum(f, &l, f.len() - l.l4), checksum::sum(&f[l.l4..])]);
        checksum::finish(sum) == 0
    }

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    fn gso_hdr(v6: bool, gso_size: u16) -> VnetHdr {
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if v6 { GsoType::TcpV6 } else { GsoType::TcpV4 },
            ecn: false,
            hdr_len: 0,
            gso_size,
            csum_start: 0,
            csum_offset: 16,
        }
    }

    #[test]
    fn fast_sum_matches_sum() {
        for n in [0, 1, 2, 3, 4, 5, 7, 8, 1000, 1001, 65_535] {
            let d = payload(n);
            assert_eq!(
                checksum::finish(fast_sum(&d)),
                checksum::finish(checksum::sum(&d)),
                "{n}"
            );
        }
    }

    #[test]
    fn segments_a_super_frame_and_coalesces_it_back() {
        for v6 in [false, true] {
            let data = payload(10_000);
            let big = tcp_frame(v6, 1000, TCP_ACK | TCP_PSH, &data);
            let hdr = gso_hdr(v6, 1448);
            let mut seg = Segmenter::new(&hdr, &big).unwrap();
            assert_eq!(seg.count(), 7);
            let hl = tcp_layout(&big).unwrap().payload;
            assert_eq!(seg.max_segment_len(), hl + 1448);
            let mut out = vec![0u8; 2000];
            let mut got = Vec::new();
            while let Some(n) = seg.next_into(&mut out).unwrap() {
                got.push(out[..n].to_vec());
            }
            assert_eq!(got.len(), 7);
            let mut reassembled = Vec::new();
            for (i, s) in got.iter().enumerate() {
                let l = tcp_layout(s).unwrap();
                assert!(tcp_checksum_ok(s), "segment {i} checksum");
                if !v6 {
                    assert!(checksum::verify(&s[l.ip..l.l4]));
                    let total = u16::from_be_bytes([s[l.ip + 2], s[l.ip + 3]]) as usize;
                    assert_eq!(total, s.len() - l.ip);
                    let id = u16::from_be_bytes([s[l.ip + 4], s[l.ip + 5]]);
                    assert_eq!(id, 0x1234 + i as u16);
                } else {
                    let pl = u16::from_be_bytes([s[l.ip + 4], s[l.ip + 5]]) as usize;
                    assert_eq!(pl + 40, s.len() - l.ip);
                }
                let seq = u32::from_be_bytes(s[l.l4 + 4..l.l4 + 8].try_into().unwrap());
                assert_eq!(seq, 1000 + (i * 1448) as u32);
                let last = i == got.len() - 1;
                assert_eq!(s[l.l4 + 13] & TCP_PSH != 0, last);
                assert_eq!(
                    s.len() - l.payload,
                    if last { 10_000 - 6 * 1448 } else { 1448 }
                );
                reassembled.extend_from_slice(&s[l.payload..]);
            }
            assert_eq!(reassembled, data);

            // Back together.
            let mut gro = Coalescer::new();
            for s in &got {
                assert_eq!(gro.push(s), Pushed::Held);
            }
            assert_eq!(gro.segments(), 7);
            let merged = gro.take().unwrap().to_vec();
            assert_eq!(gro.take(), None);
            let h = VnetHdr::parse(&merged).unwrap();
            assert_eq!(h.gso_type, if v6 { GsoType::TcpV6 } else { GsoType::TcpV4 });
            assert_eq!(h.gso_size, 1448);
            assert!(h.needs_csum());
            let mut frame = merged[VNET_HDR_LEN..].to_vec();
            assert_eq!(frame.len(), big.len());
            complete_checksum(&h, &mut frame).unwrap();
            // Same as the original super-frame apart from the IPv4 identification (of the
            // first segment, which is the original's) and the checksum.
            assert!(tcp_checksum_ok(&frame));
            assert_eq!(frame, big);
        }
    }

    #[test]
    fn partial_checksums_segment_merge_and_complete() {
        for v6 in [false, true] {
            let data = payload(5_000);
            let big = tcp_frame(v6, 77, TCP_ACK, &data);
            let hdr = gso_hdr(v6, 1448);
            let full: Vec<Vec<u8>> = {
                let mut seg = Segmenter::new(&hdr, &big).unwrap();
                let mut out = vec![0u8; 2000];
                let mut v = Vec::new();
                while let Some(n) = seg.next_into(&mut out).unwrap() {
                    v.push(out[..n].to_vec());
                }
                v
            };
            let mut seg = Segmenter::new(&hdr, &big).unwrap().leave_checksum_partial();
            let mut out = vec![0u8; 2000];
            let mut partial = Vec::new();
            while let Some(n) = seg.next_into(&mut out).unwrap() {
                partial.push(out[..n].to_vec());
            }
            assert_eq!(partial.len(), 4);
            for (p, f) in partial.iter().zip(&full) {
                let l = tcp_layout(p).unwrap();
                // Only the checksum field differs: it holds the folded pseudo-header sum.
                assert_eq!(p[..l.l4 + 16], f[..l.l4 + 16]);
                assert_eq!(p[l.l4 + 18..], f[l.l4 + 18..]);
                let pseudo = !checksum::finish(pseudo_sum(p, &l, p.len() - l.l4));
                assert_eq!(p[l.l4 + 16..l.l4 + 18], pseudo.to_be_bytes());
                assert!(!tcp_checksum_ok(p));
                // Completing it as a virtio-net header describes gives the full segment.
                let h = tcp_partial_hdr(p).unwrap();
                assert_eq!(
                    (h.flags, h.csum_start, h.csum_offset),
                    (F_NEEDS_CSUM, l.l4 as u16, 16)
                );
                let mut done = p.clone();
                complete_checksum(&h, &mut done).unwrap();
                assert_eq!(&done, f);
            }
            // The coalescer refuses them as ordinary segments (the checksum does not verify)...
            let mut gro = Coalescer::new();
            assert_eq!(gro.push(&partial[0]), Pushed::Refused);
            // ...and merges them unverified when told they are partial.
            for p in &partial {
                assert_eq!(gro.push_partial(p), Pushed::Held);
            }
            let merged = gro.take().unwrap().to_vec();
            let h = VnetHdr::parse(&merged).unwrap();
            assert!(h.needs_csum());
            let mut frame = merged[VNET_HDR_LEN..].to_vec();
            complete_checksum(&h, &mut frame).unwrap();
            assert_eq!(frame, big);
            // A lone partial segment goes out with NEEDS_CSUM (not DATA_VALID) at its TCP header.
            assert_eq!(gro.push_partial(&partial[1]), Pushed::Held);
            let lone = gro.take().unwrap().to_vec();
            let h = VnetHdr::parse(&lone).unwrap();
            assert_eq!(h.gso_type, GsoType::None);
            assert_eq!(h.flags, F_NEEDS_CSUM);
            let mut frame = lone[VNET_HDR_LEN..].to_vec();
            complete_checksum(&h, &mut frame).unwrap();
            assert_eq!(frame, full[1]);
            // A verified lone segment still goes out with DATA_VALID.
            assert_eq!(gro.push(&full[1]), Pushed::Held);
            let lone = gro.take().unwrap().to_vec();
            assert_eq!(VnetHdr::parse(&lone).unwrap().flags, F_DATA_VALID);
        }
        assert_eq!(tcp_partial_hdr(&[0u8; 60]), None);
    }

    #[test]
    fn segmenter_keeps_fin_on_the_last_and_cwr_on_the_first() {
        let big = tcp_frame(false, 5, TCP_ACK | TCP_FIN | TCP_CWR, &payload(3000));
        let mut seg = Segmenter::new(&gso_hdr(false, 1000), &big).unwrap();
        let mut out = [0u8; 1200];
        let mut flags = Vec::new();
        while let Some(n) = seg.next_into(&mut out).unwrap() {
            let l = tcp_layout(&out[..n]).unwrap();
            flags.push(out[l.l4 + 13]);
        }
        assert_eq!(flags, [TCP_ACK | TCP_CWR, TCP_ACK, TCP_ACK | TCP_FIN]);
    }

    #[test]
    fn segmenter_rejects_bad_input() {
        let big = tcp_frame(false, 5, TCP_ACK, &payload(3000));
        assert_eq!(
            Segmenter::new(&gso_hdr(true, 1000), &big).unwrap_err(),
            OffloadError::WrongProtocol
        );
        // A TCP frame claimed as USO, and UFO, which is never taken.
        let udp = VnetHdr {
            gso_type: GsoType::UdpL4,
            ..gso_hdr(false, 1000)
        };
        assert_eq!(
            Segmenter::new(&udp, &big).unwrap_err(),
            OffloadError::WrongProtocol
        );
        let ufo = VnetHdr {
            gso_type: GsoType::Udp,
            ..gso_hdr(false, 1000)
        };
        assert_eq!(
            Segmenter::new(&ufo, &big).unwrap_err(),
            OffloadError::UnsupportedGso
        );
        assert_eq!(
            Segmenter::new(&gso_hdr(false, 1000), &big[..40]).unwrap_err(),
            OffloadError::WrongProtocol
        );
        let mut seg = Segmenter::new(&gso_hdr(false, 1000), &big).unwrap();
        assert_eq!(
            seg.next_into(&mut [0u8; 100]),
            Err(OffloadError::BufferTooSmall)
        );
    }

    #[test]
    fn completes_partial_checksums() {
        let mut f = tcp_frame(false, 1, TCP_ACK, &payload(333));
        let good = f.clone();
        let l = tcp_layout(&f).unwrap();
        let pseudo = !checksum::finish(pseudo_sum(&f, &l, f.len() - l.l4));
        f[l.l4 + 16..l.l4 + 18].copy_from_slice(&pseudo.to_be_bytes());
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: l.l4 as u16,
            csum_offset: 16,
            ..VnetHdr::NONE
        };
        complete_checksum(&h, &mut f).unwrap();
        assert_eq!(f, good);
        let h = VnetHdr {
            csum_start: 60_000,
            ..h
        };
        assert_eq!(complete_checksum(&h, &mut f), Err(OffloadError::Truncated));
    }

    #[test]
    fn coalescer_refuses_what_must_not_merge() {
        let a = tcp_frame(false, 100, TCP_ACK, &payload(1000));
        // Out of order.
        let mut gro = Coalescer::new();
        assert_eq!(gro.push(&a), Pushed::Held);
        assert_eq!(
            gro.push(&tcp_frame(false, 1200, TCP_ACK, &payload(1000))),
            Pushed::Refused
        );
        // Larger than the first.
        assert_eq!(
            gro.push(&tcp_frame(false, 1100, TCP_ACK, &payload(1001))),
            Pushed::Refused
        );
        // SYN, FIN, no payload.
        assert_eq!(
            gro.push(&tcp_frame(false, 1100, TCP_ACK | TCP_FIN, &payload(10))),
            Pushed::Refused
        );
        assert_eq!(
            gro.push(&tcp_frame(false, 1100, TCP_ACK, &[])),
            Pushed::Refused
        );
        // Bad checksum.
        let mut bad = tcp_frame(false, 1100, TCP_ACK, &payload(1000));
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        assert_eq!(gro.push(&bad), Pushed::Refused);
        // Another flow (other port).
        let mut other = tcp_frame(false, 1100, TCP_ACK, &payload(1000));
        other[34] = 0x99;
        let l = tcp_layout(&other).unwrap();
        other[l.l4 + 16..l.l4 + 18].fill(0);
        let sum = checksum::combine(&[
            pseudo_sum(&other, &l, other.len() - l.l4),
            checksum::sum(&other[l.l4..]),
        ]);
        other[l.l4 + 16..l.l4 + 18].copy_from_slice(&checksum::finish(sum).to_be_bytes());
        assert_eq!(gro.push(&other), Pushed::Refused);
        // Not TCP at all.
        assert_eq!(gro.push(&[0u8; 60]), Pushed::Refused);
        // The right next one merges; after a short one nothing more does.
        assert_eq!(
            gro.push(&tcp_frame(false, 1100, TCP_ACK, &payload(500))),
            Pushed::Held
        );
        assert_eq!(
            gro.push(&tcp_frame(false, 1600, TCP_ACK, &payload(500))),
            Pushed::Refused
        );
        assert_eq!(gro.segments(), 2);
        // One segment alone goes out unchanged, marked valid.
        let mut gro = Coalescer::new();
        assert_eq!(gro.push(&a), Pushed::Held);
        let out = gro.take().unwrap();
        assert_eq!(VnetHdr::parse(out).unwrap().flags, F_DATA_VALID);
        assert_eq!(&out[VNET_HDR_LEN..], &a[..]);
    }
}
