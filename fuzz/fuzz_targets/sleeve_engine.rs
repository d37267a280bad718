//! The sleeve engine (`vswitch::engine`) as the router's receive path drives it, over the fixed
//! fabric of its unit tests seen from peer 1: sleeve neighbours 2 and 3, fast-path neighbour 4,
//! peer 5 behind 3, neighbour 6 with an encryption session. The first input byte picks the
//! source address (10.0.0.x), whether the cluster is encrypted and whether neighbour 6 seals the
//! rest first (with the session's key, as it would, under the AEAD bit 0x20 picks); the rest is the
//! datagram.
//!
//! `inspect`, opening with the session, `decide` and the walk over the delivered frames must
//! never panic, and:
//!
//! * a relay goes to a direct neighbour and changes the ttl byte only, by one;
//! * a broadcast passed on goes to direct, non-fast-path neighbours, ttl minus one, nothing else
//!   changed; delivered frames lie inside the datagram and are at most the frame limit;
//! * a heartbeat answer is a heartbeat ack from us to the heartbeat's sender, no longer than the
//!   heartbeat;
//! * datagrams in clear from the neighbour with a session, and sealed ones from a neighbour
//!   without, are refused; in an encrypted cluster nothing from an unknown sender gets in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};
use vswitch::engine::{Action, Delivery, Discard, Engine, Fabric, Inspected, Peer};
use vswitch::session::{Aead, Key, Opener, Sealer, HEADROOM, TAG_LEN};
use vswitch::wire::sleeve::{SleeveDatagram, SleeveKind, HEADER_LEN};
use vswitch::wire::PeerName;

#[derive(Debug)]
struct P {
    name: PeerName,
    addr: Option<SocketAddr>,
    fast: bool,
    enc: bool,
}

impl Peer for P {
    fn name(&self) -> PeerName {
        self.name
    }
    fn udp_addr(&self) -> Option<SocketAddr> {
        self.addr
    }
    fn fast(&self) -> bool {
        self.fast
    }
    fn encrypts(&self) -> bool {
        self.enc
    }
}

const ME: PeerName = PeerName(1);
const S: PeerName = PeerName(6);
const KEY: [u8; 32] = [0x6b; 32];
const MAX_FRAME: usize = 1500;

fn addr(last: u8) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, last), 6783))
}

fn fabric() -> Fabric<P> {
    let p = |n: u64, a: Option<u8>, fast: bool, enc: bool| P {
        name: PeerName(n),
        addr: a.map(addr),
        fast,
        enc,
    };
    let (a, b, f, r, s) = (PeerName(2), PeerName(3), PeerName(4), PeerName(5), S);
    Fabric::new(
        vec![
            p(2, Some(2), false, false),
            p(3, Some(3), false, false),
            p(4, Some(4), true, false),
            p(5, None, false, false),
            p(6, Some(6), false, true),
        ],
        &[(a, a), (b, b), (f, f), (r, b), (s, s)],
        &[(ME, vec![a, b, f, s]), (a, vec![b, f]), (r, vec![a])],
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, plain)) = data.split_first() else {
        return;
    };
    let from = addr(ctl & 7);
    let encrypted = ctl & 0x08 != 0;
    let seal = ctl & 0x10 != 0;
    // Neighbour 6's session seals with either AEAD.
    let aead = if ctl & 0x20 != 0 {
        Aead::Aes256Gcm
    } else {
        Aead::ChaCha20Poly1305
    };
    let now = Instant::now();
    let engine = Engine::new(ME, encrypted, now - Duration::from_secs(1));
    let fabric = fabric();

    // What arrives: the plain bytes, or the same sealed by neighbour 6's session.
    let mut dgram = if seal && SleeveDatagram::new_checked(plain).is_ok() {
        let mut sealer = Sealer::new(now, 0, Key::for_aead(aead, KEY));
        let mut buf = vec![0u8; HEADROOM + plain.len() + TAG_LEN];
        buf[HEADROOM..HEADROOM + plain.len()].copy_from_slice(plain);
        let n = sealer.seal_in_place(&mut buf, plain.len()).expect("seal");
        buf.truncate(n);
        buf
    } else {
        plain.to_vec()
    };

    let (header, range) = match engine.inspect(&fabric, &dgram, from) {
        Inspected::Drop { reason, peer } => {
            match reason {
                Discard::Unencrypted => assert!(peer.is_some_and(|p| p.enc)),
                Discard::NoSession => assert!(peer.is_some_and(|p| !p.enc)),
                _ => {}
            }
            return;
        }
        Inspected::Plain { header } => {
            let sender = fabric.sender(from, header.src);
            assert!(sender.is_none_or(|p| !p.enc));
            assert!(!encrypted || sender.is_some());
            (header, 0..dgram.len())
        }
        Inspected::Sealed { header, hop } => {
            assert!(hop.enc);
            let mut opener = Opener::new(0, Key::for_aead(aead, KEY), Duration::from_secs(10));
            let Ok(range) = opener.open_in_place(now, &mut dgram) else {
                return;
            };
            assert_eq!(&dgram[range.clone()], plain);
            (header, range)
        }
    };
    let plain = &mut dgram[range];
    let before = plain.to_vec();
    match engine.decide(&fabric, header, plain, from, now) {
        Action::Relay { hop, addr, .. } => {
            assert_eq!(hop.addr, Some(addr));
            assert!(fabric.is_neighbour(hop.name));
            assert_eq!(plain[2], before[2] - 1);
            assert_eq!(&plain[..2], &before[..2]);
            assert_eq!(&plain[3..], &before[3..]);
        }
        Action::Deliver { flood, .. } => {
            let mut passed_on = false;
            for (kid, a) in flood {
                passed_on = true;
                assert_eq!(kid.addr, Some(a));
                assert!(!kid.fast);
            }
            if passed_on {
                assert_eq!(plain[2], before[2] - 1);
            } else {
                assert_eq!(plain[2], before[2]);
            }
            assert_eq!(&plain[..2], &before[..2]);
            assert_eq!(&plain[3..], &before[3..]);
            let start = plain.as_ptr() as usize;
            let end = start + plain.len();
            if let Some(frames) = Delivery::new(plain, MAX_FRAME) {
                for f in frames.flatten() {
                    assert!(f.len() <= MAX_FRAME && !f.is_empty());
                    let p = f.as_ptr() as usize;
                    assert!(p >= start + HEADER_LEN && p + f.len() <= end);
                }
            }
        }
        Action::Answer { origin, to, len } => {
            assert_eq!(to, from);
            assert!(len <= before.len());
            let answer = SleeveDatagram::new_checked(&plain[..len]).expect("a sleeve datagram");
            let h = answer.header();
            assert_eq!(
                (h.kind, h.src, h.dst),
                (SleeveKind::HeartbeatAck, ME, origin.name)
            );
        }
        Action::Ack { .. } | Action::Ignore | Action::Drop { .. } => {}
    }
});
