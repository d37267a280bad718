//! The receive decision: what the data plane does with one datagram from the UDP socket.
//!
//! [`Engine::inspect`] looks at the datagram as it arrived: it parses the sleeve header (plain
//! or encrypted), finds the neighbour that sent it (by source address, else by the source it
//! names) and applies the encryption rules. [`Engine::decide`] takes the plain datagram (opened
//! by the caller with that neighbour's session if it was sealed) and returns the [`Action`]:
//!
//! * not for us and not a broadcast: relay it to the next hop with its ttl decremented
//!   (written in place), or drop it when the ttl is spent or there is no route;
//! * a heartbeat for us (at least the 16-byte body): answer it, the answer written in place,
//!   with our capability byte if the heartbeat had one; a heartbeat answer for us: its round-trip
//!   time and the peer's capabilities; either kind not for us, or too short: ignored;
//! * frames: deliver them here; a broadcast with hops left is first passed, ttl decremented,
//!   to the source's broadcast-tree children.

use super::{Discard, Engine, Fabric, Peer, OUR_CAPS};
use crate::engine::fabric::Children;
use crate::session::{self, EncryptedDatagram};
use crate::wire::heartbeat::{Caps, HeartbeatPacket, HeartbeatRepr};
use crate::wire::sleeve::{self, Frames, SleeveDatagram, SleeveHeader, SleeveKind};
use std::net::SocketAddr;
use std::time::Instant;

/// The first look at a received datagram ([`Engine::inspect`]).
#[derive(Debug)]
pub enum Inspected<'f, P> {
    /// In clear, and acceptable: [`Engine::decide`] on the whole datagram.
    Plain {
        /// Its header.
        header: SleeveHeader,
    },
    /// Encrypted: open it with `hop`'s session, then [`Engine::decide`] on the plain datagram.
    Sealed {
        /// Its (clear) header.
        header: SleeveHeader,
        /// The neighbour that sent it, whose session opens it.
        hop: &'f P,
    },
    /// Refused.
    Drop {
        /// Why.
        reason: Discard,
        /// The peer whose counters count it too, if any.
        peer: Option<&'f P>,
    },
}

/// What to do with a received datagram ([`Engine::decide`]).
#[derive(Debug)]
pub enum Action<'f, P> {
    /// Frames for this host, or a broadcast: send the datagram (its ttl already decremented in
    /// place when `flood` is not empty) to each of `flood` first, then deliver its frames
    /// ([`Delivery`]).
    Deliver {
        /// The peer that put it on the overlay.
        origin: &'f P,
        /// The broadcast-tree children to pass it to (empty for unicast, or no hops left).
        flood: Children<'f, P>,
    },
    /// For another peer: send the datagram (ttl decremented in place) to `hop` at `addr`.
    Relay {
        /// The peer that put it on the overlay.
        origin: &'f P,
        /// The next hop.
        hop: &'f P,
        /// Its address.
        addr: SocketAddr,
    },
    /// A heartbeat for us: send the first `len` bytes of the datagram (the answer, written in
    /// place) back to `to`, sealed with `origin`'s session if it has one, and remember `to` as
    /// the address `origin`'s heartbeats come from (behind NAT not the one it announced).
    Answer {
        /// The peer that sent the heartbeat.
        origin: &'f P,
        /// Where it came from.
        to: SocketAddr,
        /// Bytes of the answer.
        len: usize,
    },
    /// An answer to one of our heartbeats.
    Ack {
        /// The peer that answered.
        origin: &'f P,
        /// Round-trip time in microseconds.
        rtt_us: u64,
        /// Its capabilities ([`Caps::NONE`] from builds that answer without the byte).
        caps: Caps,
    },
    /// Nothing to do: a heartbeat or answer not for us, or too short.
    Ignore,
    /// Refused.
    Drop {
        /// Why.
        reason: Discard,
        /// The peer whose counters count it too, if any.
        peer: Option<&'f P>,
    },
}

impl Engine {
    /// The first look at `dgram`, received from `from`: its header, and whether it is acceptable
    /// in clear or must be opened with a neighbour's session. See the module documentation.
    pub fn inspect<'f, P: Peer>(
        &self,
        fabric: &'f Fabric<P>,
        dgram: &[u8],
        from: SocketAddr,
    ) -> Inspected<'f, P> {
        let drop = |reason, peer| Inspected::Drop { reason, peer };
        let sealed = session::is_encrypted(dgram);
        let header = if sealed {
            match EncryptedDatagram::new_checked(dgram) {
                Ok(d) => d.header(),
                Err(_) => return drop(Discard::Malformed, None),
            }
        } else {
            match SleeveDatagram::new_checked(dgram) {
                Ok(d) => d.header(),
                Err(crate::wire::Error::UnsupportedVersion) => {
                    return drop(Discard::UnsupportedVersion, None)
                }
                Err(_) => return drop(Discard::Malformed, None),
            }
        };
        let hop = fabric.sender(from, header.src);
        if sealed {
            match hop {
                None => drop(Discard::UnknownPeer, None),
                Some(hop) if !hop.encrypts() => drop(Discard::NoSession, Some(hop)),
                Some(hop) => Inspected::Sealed { header, hop },
            }
        } else {
            match hop {
                Some(hop) if hop.encrypts() => drop(Discard::Unencrypted, Some(hop)),
                None if self.encrypted => drop(Discard::UnknownPeer, None),
                _ => Inspected::Plain { header },
            }
        }
    }

    /// What to do with the plain datagram `plain` whose header [`inspect`](Self::inspect)
    /// returned, received from `from` at `now`. May rewrite `plain`: the ttl of what is passed
    /// on, the answer to a heartbeat.
    pub fn decide<'f, P: Peer>(
        &self,
        fabric: &'f Fabric<P>,
        header: SleeveHeader,
        plain: &mut [u8],
        from: SocketAddr,
        now: Instant,
    ) -> Action<'f, P> {
        let Some(origin) = fabric.get(header.src) else {
            return Action::Drop {
                reason: Discard::UnknownPeer,
                peer: None,
            };
        };
        let for_us = header.dst == self.me;
        if !for_us && !header.dst.is_broadcast() {
            if header.ttl <= 1 {
                return Action::Drop {
                    reason: Discard::TtlExpired,
                    peer: Some(origin),
                };
            }
            sleeve::set_ttl(plain, header.ttl - 1);
            return match fabric.next_hop(header.dst) {
                Some((hop, addr)) => Action::Relay { origin, hop, addr },
                None => Action::Drop {
                    reason: Discard::NoRoute,
                    peer: Some(origin),
                },
            };
        }
        match header.kind {
            SleeveKind::Frames => {}
            SleeveKind::Heartbeat => return self.answer(header, origin, plain, from, for_us),
            SleeveKind::HeartbeatAck => {
                let body = plain.get(sleeve::HEADER_LEN..).unwrap_or_default();
                return match HeartbeatPacket::new_checked(body) {
                    Ok(p) if for_us => Action::Ack {
                        origin,
                        rtt_us: self.clock_us(now).saturating_sub(p.sent_us()),
                        caps: p.caps().unwrap_or(Caps::NONE),
                    },
                    _ => Action::Ignore,
                };
            }
        }
        let mut flood = Children::none();
        if header.dst.is_broadcast() && header.ttl > 1 {
            // Passed down the source's broadcast tree before it is delivered here.
            let kids = fabric.children(header.src);
            if !kids.is_empty() {
                sleeve::set_ttl(plain, header.ttl - 1);
                flood = kids;
            }
        }
        Action::Deliver { origin, flood }
    }

    /// Answers the heartbeat in `plain` in place; see [`Action::Answer`].
    fn answer<'f, P: Peer>(
        &self,
        header: SleeveHeader,
        origin: &'f P,
        plain: &mut [u8],
        from: SocketAddr,
        for_us: bool,
    ) -> Action<'f, P> {
        let (head, body) = plain.split_at_mut(sleeve::HEADER_LEN.min(plain.len()));
        let Ok(p) = HeartbeatPacket::new_checked(&*body) else {
            return Action::Ignore;
        };
        if !for_us {
            return Action::Ignore;
        }
        let reply = SleeveHeader {
            kind: SleeveKind::HeartbeatAck,
            ttl: 1,
            src: self.me,
            dst: header.src,
        };
        let answer = HeartbeatRepr::parse(&p).answer(OUR_CAPS);
        match (reply.emit(head), answer.emit(body)) {
            (Ok(h), Ok(b)) => Action::Answer {
                origin,
                to: from,
                len: h + b,
            },
            _ => Action::Ignore,
        }
    }
}

/// The frames of a datagram to deliver, checked record by record: yields each frame, or why a
/// record is refused. A record running past the end (or empty) ends the walk
/// ([`Discard::TruncatedRecord`]); a frame larger than the host takes is skipped
/// ([`Discard::OversizeFrame`]).
#[derive(Debug, Clone)]
pub struct Delivery<'a> {
    frames: Frames<'a>,
    max_frame: usize,
    csum_partial: bool,
}

impl<'a> Delivery<'a> {
    /// The frames of the plain frames datagram `plain`, each at most `max_frame` bytes. `None` if
    /// its header does not parse.
    pub fn new(plain: &'a [u8], max_frame: usize) -> Option<Self> {
        let d = SleeveDatagram::new_checked(plain).ok()?;
        let csum_partial = d.csum_partial();
        Some(Delivery {
            frames: d.into_frames(),
            max_frame,
            csum_partial,
        })
    }

    /// Its TCP segments carry partial checksums (`FLAG_CSUM_PARTIAL`): not verified on the way
    /// (the UDP checksum or the AEAD tag covered them), completed by the receiving kernel.
    pub fn csum_partial(&self) -> bool {
        self.csum_partial
    }
}

impl<'a> Iterator for Delivery<'a> {
    type Item = Result<&'a [u8], Discard>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(match self.frames.next()? {
            Err(_) => Err(Discard::TruncatedRecord),
            Ok(f) if f.len() > self.max_frame => Err(Discard::OversizeFrame),
            Ok(f) => Ok(f),
        })
    }
}
