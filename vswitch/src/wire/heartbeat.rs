//! The body of the sleeve heartbeat and of its answer (sleeve kinds
//! [`Heartbeat`](super::SleeveKind::Heartbeat) and [`HeartbeatAck`](super::SleeveKind::HeartbeatAck)),
//! the bytes after the 20-byte sleeve header (all integers big-endian):
//!
//! ```text
//!  0                                  8                                 16       17
//! +-----------------------------------+---------------------------------+--------+
//! |     sequence number (64 bits)     |  sender's send time, µs (64)    |  caps  |
//! +-----------------------------------+---------------------------------+--------+
//! ```
//!
//! The answer echoes the sequence number and the send time, so the sender reads its round-trip
//! time off its own clock. The 17th byte is optional: zero in a heartbeat, the answering peer's
//! capabilities ([`Caps`]) in the answer. Builds before it send and answer the first 16 bytes
//! only; a heartbeat without the byte is answered without it. `docs/wire-format.md` is the
//! reference.

use super::{Error, Result};

/// Bytes of a body without the capability byte (what every build sends and reads).
pub const BODY_LEN: usize = 16;
/// Bytes of a body with the capability byte.
pub const CAPS_BODY_LEN: usize = BODY_LEN + 1;

/// The capability bits of a heartbeat answer's 17th byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Caps(pub u8);

impl Caps {
    /// No capabilities (what a heartbeat carries, and what an answer without the byte means).
    pub const NONE: Caps = Caps(0);
    /// Takes frames datagrams flagged
    /// [`FLAG_CSUM_PARTIAL`](super::sleeve::FLAG_CSUM_PARTIAL).
    pub const CSUM_PARTIAL: Caps = Caps(0x01);
    /// Takes frames datagrams with a lane
    /// ([`LANE_MASK`](super::sleeve::LANE_MASK)) in their flags.
    pub const LANES: Caps = Caps(0x02);

    /// True if every bit of `other` is set here.
    pub fn contains(self, other: Caps) -> bool {
        self.0 & other.0 == other.0
    }
}

/// A checked view of a heartbeat (or answer) body: at least [`BODY_LEN`] bytes.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> HeartbeatPacket<T> {
    /// Checks that `buffer` (the bytes after the sleeve header) holds a whole body.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < BODY_LEN {
            return Err(Error::Truncated);
        }
        Ok(HeartbeatPacket { buffer })
    }

    fn u64_at(&self, at: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buffer.as_ref()[at..at + 8]);
        u64::from_be_bytes(b)
    }

    /// The sender's sequence number.
    pub fn seq(&self) -> u64 {
        self.u64_at(0)
    }

    /// The sender's send time, in microseconds of its own clock.
    pub fn sent_us(&self) -> u64 {
        self.u64_at(8)
    }

    /// The capability byte, `None` for a 16-byte body.
    pub fn caps(&self) -> Option<Caps> {
        self.buffer.as_ref().get(BODY_LEN).map(|&b| Caps(b))
    }
}

/// The fields of a heartbeat (or answer) body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatRepr {
    /// Sequence number.
    pub seq: u64,
    /// Send time in microseconds of the heartbeat's sender.
    pub sent_us: u64,
    /// The capability byte; `None` for the 16-byte body of builds before it.
    pub caps: Option<Caps>,
}

impl HeartbeatRepr {
    /// Reads a checked body.
    pub fn parse<T: AsRef<[u8]>>(packet: &HeartbeatPacket<T>) -> Self {
        HeartbeatRepr {
            seq: packet.seq(),
            sent_us: packet.sent_us(),
            caps: packet.caps(),
        }
    }

    /// The body of the answer to this heartbeat from a peer with capabilities `ours`: the same
    /// sequence number and send time, and `ours` only if the heartbeat had the capability byte
    /// (an older build would not expect it).
    pub fn answer(&self, ours: Caps) -> Self {
        HeartbeatRepr {
            caps: self.caps.map(|_| ours),
            ..*self
        }
    }

    /// Bytes [`emit`](Self::emit) writes: [`BODY_LEN`] or [`CAPS_BODY_LEN`].
    pub fn buffer_len(&self) -> usize {
        if self.caps.is_some() {
            CAPS_BODY_LEN
        } else {
            BODY_LEN
        }
    }

    /// Writes the body at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.buffer_len();
        let out = buf.get_mut(..len).ok_or(Error::BufferTooSmall)?;
        out[..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..BODY_LEN].copy_from_slice(&self.sent_us.to_be_bytes());
        if let Some(c) = self.caps {
            out[BODY_LEN] = c.0;
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Sequence 7, sent at 0x0102030405060708 µs, with the capability byte (zero: a heartbeat).
    const HEARTBEAT: [u8; 17] = [
        0, 0, 0, 0, 0, 0, 0, 7, // seq
        1, 2, 3, 4, 5, 6, 7, 8,    // sent_us
        0x00, // caps
    ];

    #[test]
    fn parses_and_emits_the_sample() {
        let p = HeartbeatPacket::new_checked(&HEARTBEAT[..]).unwrap();
        let r = HeartbeatRepr::parse(&p);
        assert_eq!(
            r,
            HeartbeatRepr {
                seq: 7,
                sent_us: 0x0102_0304_0506_0708,
                caps: Some(Caps::NONE)
            }
        );
        let mut out = [0xffu8; 20];
        assert_eq!(r.emit(&mut out), Ok(17));
        assert_eq!(out[..17], HEARTBEAT);
        assert_eq!(out[17..], [0xff; 3], "nothing written past the body");
    }

    #[test]
    fn old_sixteen_byte_bodies() {
        let p = HeartbeatPacket::new_checked(&HEARTBEAT[..16]).unwrap();
        assert_eq!(p.caps(), None);
        let r = HeartbeatRepr::parse(&p);
        assert_eq!(r.buffer_len(), 16);
        // Answered without the byte, whatever we can do.
        let a = r.answer(Caps::CSUM_PARTIAL);
        assert_eq!(a.caps, None);
        let mut out = [0u8; 16];
        assert_eq!(a.emit(&mut out), Ok(16));
        assert_eq!(out, HEARTBEAT[..16]);
    }

    #[test]
    fn answer_carries_our_caps_and_echoes_the_rest() {
        let r = HeartbeatRepr::parse(&HeartbeatPacket::new_checked(&HEARTBEAT[..]).unwrap());
        let mut out = [0u8; 17];
        r.answer(Caps::CSUM_PARTIAL).emit(&mut out).unwrap();
        assert_eq!(out[..16], HEARTBEAT[..16]);
        assert_eq!(out[16], 0x01);
        // Longer bodies: the 17th byte is the capability byte, the rest ignored.
        let mut long = [0u8; 20];
        long[..17].copy_from_slice(&out);
        let p = HeartbeatPacket::new_checked(&long[..]).unwrap();
        assert_eq!(p.caps(), Some(Caps::CSUM_PARTIAL));
        assert!(p.caps().unwrap().contains(Caps::CSUM_PARTIAL));
        assert!(!Caps(0x02).contains(Caps::CSUM_PARTIAL));
    }

    #[test]
    fn rejects_short_bodies_and_buffers() {
        assert_eq!(
            HeartbeatPacket::new_checked(&HEARTBEAT[..15]).unwrap_err(),
            Error::Truncated
        );
        let r = HeartbeatRepr {
            seq: 1,
            sent_us: 2,
            caps: Some(Caps::NONE),
        };
        assert_eq!(r.emit(&mut [0u8; 16]), Err(Error::BufferTooSmall));
    }

    proptest! {
        #[test]
        fn parse_emit_round_trips(seq: u64, sent_us: u64, caps: Option<u8>) {
            let r = HeartbeatRepr { seq, sent_us, caps: caps.map(Caps) };
            let mut buf = [0u8; CAPS_BODY_LEN];
            let n = r.emit(&mut buf).unwrap();
            let p = HeartbeatPacket::new_checked(&buf[..n]).unwrap();
            prop_assert_eq!(HeartbeatRepr::parse(&p), r);
        }
    }
}
