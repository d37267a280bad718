//! The sleeve datagram: what Weft puts inside UDP between hosts.
//!
//! Every datagram starts with a 20-byte header (all integers big-endian):
//!
//! ```text
//!  0        1        2        3
//! +--------+--------+--------+--------+
//! | version|  kind  |  ttl   | flags  |
//! +--------+--------+--------+--------+
//! |      source peer name (64 bits)    |
//! |                                    |
//! +------------------------------------+
//! |   destination peer name (64 bits)  |   0 = broadcast
//! |                                    |
//! +------------------------------------+
//! | body ...
//! ```
//!
//! For `kind` = [`SleeveKind::Frames`] the body is one or more frame records, each a 16-bit length
//! followed by that many bytes of Ethernet frame; the records fill the datagram exactly. Other kinds
//! carry a body that their owner (the router's liveness probes) defines. The `flags` byte may hold
//! [`FLAG_CSUM_PARTIAL`] and a lane ([`LANE_MASK`]) on frames datagrams (bit `0x01` belongs to
//! the encrypted format).
//! `docs/wire-format.md` is the reference.

use super::{Error, Result};
use core::fmt;

/// The only header version this build speaks.
pub const VERSION: u8 = 1;
/// Bytes of the sleeve header.
pub const HEADER_LEN: usize = 20;
/// Bytes before each frame in a `Frames` datagram.
pub const FRAME_PREFIX_LEN: usize = 2;
/// Hop budget a sender puts in `ttl`; each relay decrements it and drops at zero.
pub const DEFAULT_TTL: u8 = 8;
/// Bit of the `flags` byte (frames datagrams only): every TCP segment in the datagram carries a
/// partial checksum, the pseudo-header sum in place of the TCP checksum (as a virtio-net
/// `F_NEEDS_CSUM` frame does). The underlay's UDP checksum (plain) or the AEAD tag (encrypted)
/// covers the bytes instead; the receiver completes the checksum or lets its kernel do it. Bit
/// `0x01` is the session layer's encrypted flag, which a plain datagram never carries.
pub const FLAG_CSUM_PARTIAL: u8 = 0x02;
/// Bits of the `flags` byte (frames datagrams only) that hold the datagram's lane, 0 to 15: which
/// of the sender's data plane workers sent it. The receiver hands every datagram of one lane to
/// one of its workers (lane modulo its workers), so the frames of one flow, which one sending
/// worker carries, stay in order while different flows are received on different cores. Sent
/// non-zero only to peers that announced [`Caps::LANES`](super::heartbeat::Caps::LANES): older
/// builds refuse unknown flag bits.
pub const LANE_MASK: u8 = 0xf0;
/// The lowest bit of the lane in the `flags` byte.
pub const LANE_SHIFT: u32 = 4;
/// Lanes there are (a worker numbered `n` sends on lane `n % LANES`).
pub const LANES: usize = 16;

/// A peer's stable 64-bit name. Zero is reserved: as a destination it means "every peer".
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PeerName(pub u64);

impl PeerName {
    /// The broadcast destination.
    pub const BROADCAST: PeerName = PeerName(0);

    /// True for the broadcast destination.
    pub fn is_broadcast(&self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0.to_be_bytes();
        write!(
            f,
            "{:02x}{:02x}:{:02x}{:02x}:{:02x}{:02x}:{:02x}{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]
        )
    }
}

impl fmt::Debug for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl core::str::FromStr for PeerName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let hex: String = s.chars().filter(|c| *c != ':').collect();
        if hex.len() != 16 {
            return Err(Error::Malformed);
        }
        u64::from_str_radix(&hex, 16)
            .map(PeerName)
            .map_err(|_| Error::Malformed)
    }
}

/// What a sleeve datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SleeveKind {
    /// Ethernet frame records.
    Frames,
    /// A liveness probe on the UDP path; the receiver answers with `HeartbeatAck`.
    Heartbeat,
    /// The answer to a `Heartbeat`.
    HeartbeatAck,
}

impl SleeveKind {
    fn from_u8(v: u8) -> Result<Self> {
        match v {
            1 => Ok(SleeveKind::Frames),
            2 => Ok(SleeveKind::Heartbeat),
            3 => Ok(SleeveKind::HeartbeatAck),
            _ => Err(Error::Malformed),
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            SleeveKind::Frames => 1,
            SleeveKind::Heartbeat => 2,
            SleeveKind::HeartbeatAck => 3,
        }
    }
}

/// The fields of a sleeve header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SleeveHeader {
    /// What the body holds.
    pub kind: SleeveKind,
    /// Hops left.
    pub ttl: u8,
    /// The peer that put the frames on the overlay.
    pub src: PeerName,
    /// The peer they are for, or [`PeerName::BROADCAST`].
    pub dst: PeerName,
}

impl SleeveHeader {
    /// A header for frames from `src` to `dst` with the default hop budget.
    pub fn frames(src: PeerName, dst: PeerName) -> Self {
        SleeveHeader {
            kind: SleeveKind::Frames,
            ttl: DEFAULT_TTL,
            src,
            dst,
        }
    }

    /// Writes the header at the start of `buf`; returns [`HEADER_LEN`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let out = buf.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall)?;
        out[0] = VERSION;
        out[1] = self.kind.to_u8();
        out[2] = self.ttl;
        out[3] = 0;
        out[4..12].copy_from_slice(&self.src.0.to_be_bytes());
        out[12..20].copy_from_slice(&self.dst.0.to_be_bytes());
        Ok(HEADER_LEN)
    }
}

/// A checked view of a sleeve datagram. `new_checked` validates the header; frame records are
/// validated one by one as [`SleeveDatagram::frames`] walks them.
#[derive(Debug, Clone, Copy)]
pub struct SleeveDatagram<T: AsRef<[u8]>> {
    buffer: T,
    header: SleeveHeader,
}

impl<T: AsRef<[u8]>> SleeveDatagram<T> {
    /// Checks the header: length, version, kind, flags (none, or [`FLAG_CSUM_PARTIAL`] and a lane
    /// on a frames datagram).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] != VERSION {
            return Err(Error::UnsupportedVersion);
        }
        let kind = SleeveKind::from_u8(b[1])?;
        let allowed = if kind == SleeveKind::Frames {
            FLAG_CSUM_PARTIAL | LANE_MASK
        } else {
            0
        };
        if b[3] & !allowed != 0 {
            return Err(Error::Malformed);
        }
        let src = PeerName(u64::from_be_bytes(b[4..12].try_into().unwrap_or([0; 8])));
        let dst = PeerName(u64::from_be_bytes(b[12..20].try_into().unwrap_or([0; 8])));
        if src.is_broadcast() {
            return Err(Error::Malformed);
        }
        let header = SleeveHeader {
            kind,
            ttl: b[2],
            src,
            dst,
        };
        Ok(SleeveDatagram { buffer, header })
    }

    /// The parsed header.
    pub fn header(&self) -> SleeveHeader {
        self.header
    }

    /// True if the TCP segments in this frames datagram carry partial checksums
    /// ([`FLAG_CSUM_PARTIAL`]).
    pub fn csum_partial(&self) -> bool {
        self.buffer.as_ref()[3] & FLAG_CSUM_PARTIAL != 0
    }

    /// The bytes after the header.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// The frame records of a `Frames` datagram. Yields `Err(Truncated)` once (and then stops) if
    /// a record claims more bytes than remain, or `Err(Malformed)` for an empty record.
    pub fn frames(&self) -> Frames<'_> {
        Frames {
            rest: self.body(),
            failed: false,
        }
    }

    /// The whole datagram.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<'a> SleeveDatagram<&'a [u8]> {
    /// The frame records, borrowing the buffer rather than the view (see
    /// [`SleeveDatagram::frames`]).
    pub fn into_frames(self) -> Frames<'a> {
        Frames {
            rest: &self.buffer[HEADER_LEN..],
            failed: false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SleeveDatagram<T> {
    /// Rewrites the hop budget in place (relays decrement it).
    pub fn set_ttl(&mut self, ttl: u8) {
        set_ttl(self.buffer.as_mut(), ttl);
        self.header.ttl = ttl;
    }
}

/// Iterator over the frame records of a `Frames` datagram.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        if self.rest.len() < FRAME_PREFIX_LEN {
            self.failed = true;
            return Some(Err(Error::Truncated));
        }
        let len = usize::from(u16::from_be_bytes([self.rest[0], self.rest[1]]));
        if len == 0 {
            self.failed = true;
            return Some(Err(Error::Malformed));
        }
        let Some(frame) = self.rest.get(FRAME_PREFIX_LEN..FRAME_PREFIX_LEN + len) else {
            self.failed = true;
            return Some(Err(Error::Truncated));
        };
        self.rest = &self.rest[FRAME_PREFIX_LEN + len..];
        Some(Ok(frame))
    }
}

/// Appends one frame record to a datagram being built in `buf`, whose first `len` bytes are
/// already written (header and earlier records). Returns the new length, or
/// [`Error::BufferTooSmall`] (and writes nothing) when the record does not fit in `buf`.
pub fn push_frame(buf: &mut [u8], len: usize, frame: &[u8]) -> Result<usize> {
    u16::try_from(frame.len()).map_err(|_| Error::BufferTooSmall)?;
    if frame.is_empty() {
        return Err(Error::Malformed);
    }
    if buf.len() < len + FRAME_PREFIX_LEN + frame.len() {
        return Err(Error::BufferTooSmall);
    }
    push_frame_with(buf, len, |out| {
        out[..frame.len()].copy_from_slice(frame);
        Some(frame.len())
    })
}

/// Appends one frame record whose frame `fill` writes in place: it gets all the room after the
/// record's length prefix and returns the frame's length, or `None` to append nothing. Returns
/// the datagram's new length; [`Error::Malformed`] for no frame or an empty one, and
/// [`Error::BufferTooSmall`] when there is no room for a prefix or `fill` claims more than it
/// was given (or more than a record can say). On an error the prefix is not written and `len`
/// stays the datagram's length.
pub fn push_frame_with(
    buf: &mut [u8],
    len: usize,
    fill: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> Result<usize> {
    let room = buf
        .get_mut(len..)
        .filter(|r| r.len() >= FRAME_PREFIX_LEN)
        .ok_or(Error::BufferTooSmall)?;
    let (prefix, out) = room.split_at_mut(FRAME_PREFIX_LEN);
    let max = out.len();
    let n = fill(out).ok_or(Error::Malformed)?;
    if n == 0 {
        return Err(Error::Malformed);
    }
    let flen = u16::try_from(n)
        .ok()
        .filter(|_| n <= max)
        .ok_or(Error::BufferTooSmall)?;
    prefix.copy_from_slice(&flen.to_be_bytes());
    Ok(len + FRAME_PREFIX_LEN + n)
}

/// Rewrites the hop budget in the header at the start of `datagram` (the writing side of
/// [`SleeveHeader::ttl`], for a datagram whose header was parsed before, e.g. from its encrypted
/// form). Does nothing to a buffer shorter than a header.
pub fn set_ttl(datagram: &mut [u8], ttl: u8) {
    if datagram.len() < HEADER_LEN {
        return;
    }
    datagram[2] = ttl;
}

/// Sets or clears [`FLAG_CSUM_PARTIAL`] in the header at the start of `datagram` (the writing
/// side of [`SleeveDatagram::csum_partial`]). Does nothing to a buffer shorter than a header.
pub fn set_csum_partial(datagram: &mut [u8], on: bool) {
    if datagram.len() < HEADER_LEN {
        return;
    }
    if on {
        datagram[3] |= FLAG_CSUM_PARTIAL;
    } else {
        datagram[3] &= !FLAG_CSUM_PARTIAL;
    }
}

/// Puts the lane `lane % LANES` into a frames datagram's header (nothing for a shorter buffer).
/// Lane 0 is what a datagram without lanes has.
pub fn set_lane(datagram: &mut [u8], lane: usize) {
    if let Some(flags) = datagram.get_mut(3) {
        *flags = (*flags & !LANE_MASK) | (((lane % LANES) as u8) << LANE_SHIFT);
    }
}

/// The lane of a datagram, plain or encrypted (0 for anything shorter than a flags byte).
pub fn lane(datagram: &[u8]) -> usize {
    datagram
        .get(3)
        .map_or(0, |f| usize::from((f & LANE_MASK) >> LANE_SHIFT))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frames datagram from peer 0x0102030405060708 to broadcast, with two records.
    const SAMPLE: [u8; 29] = [
        0x01, 0x01, 0x08, 0x00, // version, kind=frames, ttl=8, flags
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // src
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // dst = broadcast
        0x00, 0x03, 0xaa, 0xbb, 0xcc, // record 1
        0x00, 0x02, 0xdd, 0xee, // record 2
    ];

    #[test]
    fn parses_sample() {
        let d = SleeveDatagram::new_checked(&SAMPLE[..]).unwrap();
        let h = d.header();
        assert_eq!(h.kind, SleeveKind::Frames);
        assert_eq!(h.ttl, 8);
        assert_eq!(h.src, PeerName(0x0102030405060708));
        assert!(h.dst.is_broadcast());
        let frames: Vec<_> = d.frames().collect();
        assert_eq!(
            frames,
            vec![Ok(&[0xaa, 0xbb, 0xcc][..]), Ok(&[0xdd, 0xee][..])]
        );
    }

    #[test]
    fn emits_sample() {
        let mut buf = [0u8; 64];
        let h = SleeveHeader::frames(PeerName(0x0102030405060708), PeerName::BROADCAST);
        let mut len = h.emit(&mut buf).unwrap();
        len = push_frame(&mut buf, len, &[0xaa, 0xbb, 0xcc]).unwrap();
        len = push_frame(&mut buf, len, &[0xdd, 0xee]).unwrap();
        assert_eq!(&buf[..len], &SAMPLE[..]);
    }

    #[test]
    fn rejects_bad_headers() {
        let mut b = SAMPLE;
        b[0] = 2;
        assert_eq!(
            SleeveDatagram::new_checked(&b[..]).unwrap_err(),
            Error::UnsupportedVersion
        );
        let mut b = SAMPLE;
        b[1] = 9;
        assert_eq!(
            SleeveDatagram::new_checked(&b[..]).unwrap_err(),
            Error::Malformed
        );
        let mut b = SAMPLE;
        b[3] = 1;
        assert_eq!(
            SleeveDatagram::new_checked(&b[..]).unwrap_err(),
            Error::Malformed
        );
        let mut b = SAMPLE;
        b[4..12].fill(0);
        assert_eq!(
            SleeveDatagram::new_checked(&b[..]).unwrap_err(),
            Error::Malformed
        );
        assert_eq!(
            SleeveDatagram::new_checked(&SAMPLE[..19]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn csum_partial_flag() {
        assert!(!SleeveDatagram::new_checked(&SAMPLE[..])
            .unwrap()
            .csum_partial());
        let mut b = SAMPLE;
        b[3] = 0x02;
        let d = SleeveDatagram::new_checked(&b[..]).unwrap();
        assert!(d.csum_partial());
        assert_eq!(
            d.header(),
            SleeveDatagram::new_checked(&SAMPLE[..]).unwrap().header()
        );
        assert_eq!(d.frames().count(), 2);
        // Unknown bits, and the flag on anything but frames, are malformed.
        for flags in [0x04, 0x06, 0x08, 0x03] {
            b[3] = flags;
            assert_eq!(
                SleeveDatagram::new_checked(&b[..]).unwrap_err(),
                Error::Malformed
            );
        }
        let mut hb = [0u8; 20];
        hb[..20].copy_from_slice(&SAMPLE[..20]);
        hb[1] = 2; // heartbeat
        assert!(SleeveDatagram::new_checked(&hb[..]).is_ok());
        hb[3] = 0x02;
        assert_eq!(
            SleeveDatagram::new_checked(&hb[..]).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn truncated_record_stops_iteration() {
        let d = SleeveDatagram::new_checked(&SAMPLE[..27]).unwrap();
        let frames: Vec<_> = d.frames().collect();
        assert_eq!(
            frames,
            vec![Ok(&[0xaa, 0xbb, 0xcc][..]), Err(Error::Truncated)]
        );
    }

    #[test]
    fn push_frame_with_writes_in_place_and_refuses_bad_lengths() {
        let mut buf = [0u8; HEADER_LEN + 8];
        let len = HEADER_LEN;
        // The frame written by `fill`, behind its 2-byte length.
        let end = push_frame_with(&mut buf, len, |out| {
            assert_eq!(out.len(), 6);
            out[..3].copy_from_slice(&[7, 8, 9]);
            Some(3)
        });
        assert_eq!(end, Ok(HEADER_LEN + 5));
        assert_eq!(&buf[HEADER_LEN..HEADER_LEN + 5], &[0, 3, 7, 8, 9]);
        // Nothing, an empty frame, or more than the room: refused, the prefix left alone.
        let mut buf = [0u8; HEADER_LEN + 8];
        assert_eq!(
            push_frame_with(&mut buf, len, |_| None),
            Err(Error::Malformed)
        );
        assert_eq!(
            push_frame_with(&mut buf, len, |_| Some(0)),
            Err(Error::Malformed)
        );
        assert_eq!(
            push_frame_with(&mut buf, len, |_| Some(7)),
            Err(Error::BufferTooSmall)
        );
        assert_eq!(&buf[HEADER_LEN..HEADER_LEN + 2], &[0, 0]);
        // No room for a prefix at all.
        assert_eq!(
            push_frame_with(&mut buf, HEADER_LEN + 7, |_| Some(1)),
            Err(Error::BufferTooSmall)
        );
    }

    #[test]
    fn lanes_ride_in_the_flags_of_frames_datagrams_only() {
        let mut b = SAMPLE;
        set_csum_partial(&mut b, true);
        set_lane(&mut b, 5);
        assert_eq!(b[3], 0x50 | FLAG_CSUM_PARTIAL);
        assert_eq!(lane(&b), 5);
        let d = SleeveDatagram::new_checked(&b[..]).unwrap();
        assert!(d.csum_partial());
        set_lane(&mut b, 17);
        assert_eq!(lane(&b), 1);
        set_lane(&mut b, 0);
        assert_eq!(b[3], FLAG_CSUM_PARTIAL);
        // Another kind with a lane is refused.
        let mut h = SAMPLE;
        h[1] = 2; // heartbeat
        set_lane(&mut h, 3);
        assert_eq!(
            SleeveDatagram::new_checked(&h[..]).err(),
            Some(Error::Malformed)
        );
        assert_eq!(lane(&[]), 0);
    }

    #[test]
    fn set_csum_partial_is_what_csum_partial_reads() {
        let mut b = SAMPLE;
        set_csum_partial(&mut b, true);
        assert_eq!(b[3], FLAG_CSUM_PARTIAL);
        assert!(SleeveDatagram::new_checked(&b[..]).unwrap().csum_partial());
        set_csum_partial(&mut b, false);
        assert_eq!(b, SAMPLE);
        // Too short for a header: untouched.
        let mut short = [0u8; 4];
        set_csum_partial(&mut short, true);
        assert_eq!(short, [0; 4]);
    }

    #[test]
    fn set_ttl_rewrites_the_third_byte_only() {
        let mut b = SAMPLE;
        set_ttl(&mut b, 3);
        assert_eq!(b[2], 3);
        b[2] = SAMPLE[2];
        assert_eq!(b, SAMPLE);
        let mut d = SleeveDatagram::new_checked(&mut b[..]).unwrap();
        d.set_ttl(7);
        assert_eq!(d.header().ttl, 7);
        assert_eq!(b[2], 7);
        let mut short = [0u8; 4];
        set_ttl(&mut short, 1);
        assert_eq!(short, [0; 4]);
    }

    #[test]
    fn push_frame_refuses_overflow() {
        let mut buf = [0u8; 24];
        let len = SleeveHeader::frames(PeerName(1), PeerName(2))
            .emit(&mut buf)
            .unwrap();
        assert_eq!(
            push_frame(&mut buf, len, &[1, 2, 3]),
            Err(Error::BufferTooSmall)
        );
        assert_eq!(push_frame(&mut buf, len, &[1, 2]), Ok(24));
    }

    /// The example in `docs/wire-format.md`: one ARP request broadcast by peer
    /// 0102:0304:0506:0708.
    #[test]
    fn docs_example_parses() {
        #[rustfmt::skip]
        const DOC: [u8; 64] = [
            0x01, 0x01, 0x08, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x0a, 0x20,
            0x00, 0x01, 0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x0a, 0x20,
            0x00, 0x01, 0x0a, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x20, 0x00, 0x02,
        ];
        let d = SleeveDatagram::new_checked(&DOC[..]).unwrap();
        assert_eq!(
            d.header(),
            SleeveHeader::frames("0102:0304:0506:0708".parse().unwrap(), PeerName::BROADCAST)
        );
        let frames: Vec<_> = d.frames().collect::<Result<_>>().unwrap();
        assert_eq!(frames.len(), 1);
        let f = crate::wire::EthernetFrame::new_checked(frames[0]).unwrap();
        assert!(f.dst().is_broadcast());
        assert_eq!(f.src().to_string(), "02:00:0a:20:00:01");
        assert_eq!(f.ethertype(), crate::wire::EtherType::Arp);
        assert_eq!(f.payload().len(), 28);
        // And emitting the same header and frame gives the same bytes.
        let mut buf = [0u8; 64];
        let len = d.header().emit(&mut buf).unwrap();
        assert_eq!(push_frame(&mut buf, len, frames[0]), Ok(64));
        assert_eq!(buf, DOC);
    }

    #[test]
    fn peer_name_text_round_trips() {
        let p = PeerName(0x0102030405060708);
        assert_eq!(p.to_string(), "0102:0304:0506:0708");
        assert_eq!("0102:0304:0506:0708".parse::<PeerName>().unwrap(), p);
    }
}
