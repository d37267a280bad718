//! Tests of the encrypted sleeve as a whole: the reference datagrams, tampering, replay and
//! reordering through an `Opener` (the rekey hand-off between two `Session`s is in
//! `rekey_tests.rs`). Every test with keys runs once per AEAD (`_with(aead)`).

use super::*;
use crate::wire::sleeve::{push_frame, PeerName, SleeveDatagram, SleeveHeader, SleeveKind};
use proptest::prelude::*;
use std::time::{Duration, Instant};

pub(super) const A: PeerName = PeerName(0x0102030405060708);
pub(super) const B: PeerName = PeerName(0x1112131415161718);

/// The ARP request of `docs/wire-format.md`'s example.
#[rustfmt::skip]
const ARP: [u8; 42] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x0a, 0x20, 0x00, 0x01, 0x08, 0x06,
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x0a, 0x20, 0x00, 0x01,
    0x0a, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x20, 0x00, 0x02,
];

/// That frame from A to B, sealed with key 00 01 .. 1f, epoch 1, counter 42. Computed with an
/// independent ChaCha20-Poly1305 (Python's `cryptography`), not with this code; it is the example
/// in `docs/encryption.md`.
#[rustfmt::skip]
const VECTOR: [u8; 89] = [
    0x01, 0x01, 0x08, 0x01, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x11, 0x12, 0x13, 0x14,
    0x15, 0x16, 0x17, 0x18, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0xfe, 0x7b, 0x54,
    0x75, 0x85, 0xcd, 0xb2, 0x01, 0x2f, 0x60, 0x74, 0x4a, 0x0d, 0xf0, 0xa0, 0xc9, 0x0b, 0x47, 0x1a,
    0x78, 0x1e, 0xc6, 0xf3, 0xc3, 0x74, 0xe7, 0x3e, 0xd7, 0x92, 0xed, 0x63, 0x75, 0x40, 0x90, 0x8f,
    0xf0, 0x88, 0x82, 0x28, 0x0d, 0x5d, 0x49, 0x5f, 0x23, 0x8c, 0xdf, 0xd9, 0x41, 0x5d, 0xf4, 0x20,
    0x65, 0x21, 0x50, 0x84, 0x57, 0xc4, 0xcb, 0xea, 0x96,
];

/// The same datagram sealed with AES-256-GCM under the same key, epoch and counter, also computed
/// with Python's `cryptography`.
#[rustfmt::skip]
const AES_VECTOR: [u8; 89] = [
    0x01, 0x01, 0x08, 0x01, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x11, 0x12, 0x13, 0x14,
    0x15, 0x16, 0x17, 0x18, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x38, 0xef, 0x18,
    0x88, 0xb2, 0xb7, 0x09, 0xcc, 0x43, 0xc3, 0x67, 0x57, 0xca, 0x18, 0xed, 0x69, 0xee, 0x6f, 0x7f,
    0x07, 0x86, 0xcd, 0x1e, 0x58, 0xab, 0x0d, 0xca, 0xa3, 0xc6, 0x55, 0xda, 0x51, 0x92, 0x9a, 0x27,
    0x0d, 0x56, 0x83, 0x75, 0x3e, 0x55, 0xe8, 0xaa, 0x2f, 0xf7, 0x4b, 0x7a, 0x8c, 0x8f, 0xdd, 0xba,
    0xbb, 0x0a, 0x4f, 0x65, 0xaf, 0x25, 0xf9, 0xc6, 0x49,
];

/// Each AEAD with its reference datagram.
const VECTORS: [(Aead, [u8; 89]); 2] = [
    (Aead::ChaCha20Poly1305, VECTOR),
    (Aead::Aes256Gcm, AES_VECTOR),
];

fn vector_key(aead: Aead) -> Key {
    let mut k = [0u8; KEY_LEN];
    for (i, b) in k.iter_mut().enumerate() {
        *b = i as u8;
    }
    Key::for_aead(aead, k)
}

fn grace() -> Duration {
    RekeyPolicy::DEFAULT_GRACE
}

/// Builds a plain datagram with `frames` at `buf[HEADROOM..]`; returns its length.
pub(super) fn plain(buf: &mut [u8], header: SleeveHeader, frames: &[&[u8]]) -> usize {
    let p = &mut buf[HEADROOM..];
    let mut len = header.emit(p).unwrap();
    for f in frames {
        len = push_frame(p, len, f).unwrap();
    }
    len
}

/// A sealed datagram with one frame tagged by `n`.
fn sealed(sealer: &mut Sealer, n: u32) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let frame = n.to_be_bytes();
    let len = plain(&mut buf, SleeveHeader::frames(A, B), &[&frame]);
    let total = sealer.seal_in_place(&mut buf, len).unwrap();
    buf.truncate(total);
    buf
}

/// Opens `d` and returns the tag of its one frame.
fn open_one(opener: &mut Opener, now: Instant, mut d: Vec<u8>) -> Result<u32, CryptoError> {
    let r = opener.open_in_place(now, &mut d)?;
    let dg = SleeveDatagram::new_checked(&d[r]).unwrap();
    let f = dg.frames().next().unwrap().unwrap();
    Ok(u32::from_be_bytes(f.try_into().unwrap()))
}

#[test]
fn error_indices_match_all() {
    for (i, e) in CryptoError::ALL.iter().enumerate() {
        assert_eq!(e.index(), i);
        assert!(!e.as_str().is_empty());
    }
}

#[test]
fn seals_the_reference_vectors() {
    for (aead, vector) in VECTORS {
        let now = Instant::now();
        let mut sealer = Sealer::new(now, 1, vector_key(aead));
        sealer.skip_counters(42);
        let mut buf = [0u8; 128];
        let len = plain(&mut buf, SleeveHeader::frames(A, B), &[&ARP]);
        assert_eq!(len, 64);
        let total = sealer.seal_in_place(&mut buf, len).unwrap();
        assert_eq!(total, len + OVERHEAD);
        assert_eq!(&buf[..total], &vector[..], "{aead}");
        assert_eq!(sealer.sealed(), 43);
        assert_eq!(sealer.aead(), aead);
    }
}

#[test]
fn opens_the_reference_vectors() {
    for (aead, vector) in VECTORS {
        opens_the_reference_vector(aead, vector);
    }
}

#[test]
fn a_key_for_the_other_aead_opens_nothing() {
    let now = Instant::now();
    for (aead, vector) in VECTORS {
        let other = Aead::ALL.into_iter().find(|a| *a != aead).unwrap();
        let mut opener = Opener::new(1, vector_key(other), grace());
        let mut buf = vector;
        assert_eq!(
            opener.open_in_place(now, &mut buf),
            Err(CryptoError::AuthFailed),
            "{aead} datagram, {other} key"
        );
        // The window did not move: the right key still opens it.
        let mut opener = Opener::new(1, vector_key(aead), grace());
        let mut buf = vector;
        assert!(opener.open_in_place(now, &mut buf).is_ok());
    }
}

fn opens_the_reference_vector(aead: Aead, vector: [u8; 89]) {
    let now = Instant::now();
    let mut opener = Opener::new(1, vector_key(aead), grace());
    let mut buf = vector;
    let r = opener.open_in_place(now, &mut buf).unwrap();
    assert_eq!(r, HEADROOM..VECTOR.len() - TAG_LEN);
    let d = SleeveDatagram::new_checked(&buf[r]).unwrap();
    assert_eq!(d.header(), SleeveHeader::frames(A, B));
    let frames: Vec<_> = d.frames().collect();
    assert_eq!(frames, vec![Ok(&ARP[..])]);
    assert_eq!(opener.highest_counter(), Some(42));
    // Once only.
    let mut again = vector;
    assert_eq!(
        opener.open_in_place(now, &mut again),
        Err(CryptoError::Replayed)
    );
}

#[test]
fn relays_may_change_the_ttl() {
    for (aead, vector) in VECTORS {
        relays_may_change_the_ttl_with(aead, vector);
    }
}

fn relays_may_change_the_ttl_with(aead: Aead, vector: [u8; 89]) {
    let now = Instant::now();
    let mut opener = Opener::new(1, vector_key(aead), grace());
    let mut buf = vector;
    let mut d = EncryptedDatagram::new_checked(&mut buf[..]).unwrap();
    assert_eq!((d.epoch(), d.counter()), (1, 42));
    d.set_ttl(3);
    let r = opener.open_in_place(now, &mut buf).unwrap();
    assert_eq!(
        SleeveDatagram::new_checked(&buf[r]).unwrap().header().ttl,
        3
    );
}

#[test]
fn every_bit_flip_outside_the_ttl_is_rejected() {
    for (aead, vector) in VECTORS {
        every_bit_flip_outside_the_ttl_is_rejected_with(aead, vector);
    }
}

fn every_bit_flip_outside_the_ttl_is_rejected_with(aead: Aead, vector: [u8; 89]) {
    let now = Instant::now();
    let mut opener = Opener::new(1, vector_key(aead), grace());
    let mut rejected = 0;
    for byte in 0..vector.len() {
        for bit in 0..8 {
            let mut b = vector;
            b[byte] ^= 1 << bit;
            let got = opener.open_in_place(now, &mut b);
            if byte == 2 {
                // The ttl is not authenticated: relays rewrite it.
                assert!(got.is_ok(), "ttl bit {bit}");
                opener = Opener::new(1, vector_key(aead), grace());
                continue;
            }
            let ok = match byte {
                0 => got == Err(CryptoError::Malformed),
                // Flag 0x02 (partial checksums) is valid, so authentication catches it.
                3 => matches!(got, Err(CryptoError::Malformed | CryptoError::AuthFailed)),
                // Some kinds are valid (1 ^ 2 = 3), so authentication catches them.
                1 => matches!(got, Err(CryptoError::Malformed | CryptoError::AuthFailed)),
                // Another epoch selects no key (or, with one installed, the wrong one).
                20 => got == Err(CryptoError::UnknownKey),
                _ => got == Err(CryptoError::AuthFailed),
            };
            assert!(ok, "byte {byte} bit {bit}: {got:?}");
            rejected += 1;
        }
    }
    assert_eq!(rejected, (vector.len() - 1) * 8);
    // None of them moved the window: the genuine datagram still opens.
    let mut b = vector;
    assert!(opener.open_in_place(now, &mut b).is_ok());
}

#[test]
fn truncated_and_foreign_datagrams_are_malformed() {
    for (aead, vector) in VECTORS {
        truncated_and_foreign_datagrams_are_malformed_with(aead, vector);
    }
}

fn truncated_and_foreign_datagrams_are_malformed_with(aead: Aead, vector: [u8; 89]) {
    let now = Instant::now();
    let mut opener = Opener::new(1, vector_key(aead), grace());
    for len in 0..MIN_ENCRYPTED_LEN {
        let mut b = vector;
        assert_eq!(
            opener.open_in_place(now, &mut b[..len]),
            Err(CryptoError::Malformed)
        );
    }
    // Cut the tag short: still long enough to parse, but the tag is now other bytes.
    let mut b = vector;
    assert_eq!(
        opener.open_in_place(now, &mut b[..vector.len() - 1]),
        Err(CryptoError::AuthFailed)
    );
    // A plain datagram is not an encrypted one.
    let mut buf = [0u8; 128];
    let len = plain(&mut buf, SleeveHeader::frames(A, B), &[&ARP]);
    assert_eq!(
        opener.open_in_place(now, &mut buf[HEADROOM..HEADROOM + len]),
        Err(CryptoError::Malformed)
    );
}

#[test]
fn round_trips_several_frames_and_other_kinds() {
    for aead in Aead::ALL {
        round_trips_several_frames_and_other_kinds_with(aead);
    }
}

fn round_trips_several_frames_and_other_kinds_with(aead: Aead) {
    let now = Instant::now();
    let mut sealer = Sealer::new(now, 7, Key::for_aead(aead, [5; KEY_LEN]));
    let mut opener = Opener::new(7, Key::for_aead(aead, [5; KEY_LEN]), grace());
    let frames: [&[u8]; 3] = [&ARP, &[1, 2, 3], &[0xee; 1400]];
    let mut buf = vec![0u8; 2048];
    let len = plain(&mut buf, SleeveHeader::frames(A, B), &frames);
    let before = buf[HEADROOM..HEADROOM + len].to_vec();
    let total = sealer.seal_in_place(&mut buf, len).unwrap();
    assert_ne!(&buf[HEADROOM..HEADROOM + len], &before[..]);
    let r = opener.open_in_place(now, &mut buf[..total]).unwrap();
    assert_eq!(&buf[r.clone()], &before[..]);
    let d = SleeveDatagram::new_checked(&buf[r]).unwrap();
    let got: Vec<_> = d.frames().map(|f| f.unwrap().to_vec()).collect();
    assert_eq!(got, frames.map(|f| f.to_vec()));

    // A heartbeat with an empty body: the smallest datagram.
    let mut buf = [0u8; 64];
    let h = SleeveHeader {
        kind: SleeveKind::Heartbeat,
        ..SleeveHeader::frames(A, B)
    };
    let len = h.emit(&mut buf[HEADROOM..]).unwrap();
    let total = sealer.seal_in_place(&mut buf, len).unwrap();
    assert_eq!(total, MIN_ENCRYPTED_LEN);
    let r = opener.open_in_place(now, &mut buf[..total]).unwrap();
    let d = SleeveDatagram::new_checked(&buf[r]).unwrap();
    assert_eq!(d.header(), h);
    assert!(d.body().is_empty());
}

#[test]
fn seal_refuses_bad_input_and_leaves_it_alone() {
    for aead in Aead::ALL {
        seal_refuses_bad_input_and_leaves_it_alone_with(aead);
    }
}

fn seal_refuses_bad_input_and_leaves_it_alone_with(aead: Aead) {
    let now = Instant::now();
    let mut sealer = Sealer::new(now, 0, Key::for_aead(aead, [1; KEY_LEN]));
    let mut buf = [0u8; 80];
    let len = plain(&mut buf, SleeveHeader::frames(A, B), &[&[9; 10]]);
    let orig = buf;
    // No room for the tag.
    assert_eq!(
        sealer.seal_in_place(&mut buf[..HEADROOM + len + TAG_LEN - 1], len),
        Err(CryptoError::BufferTooSmall)
    );
    assert_eq!(
        sealer.seal_in_place(&mut buf, usize::MAX),
        Err(CryptoError::BufferTooSmall)
    );
    // Not a plain datagram: too short, flags set, unknown kind.
    assert_eq!(
        sealer.seal_in_place(&mut buf, 19),
        Err(CryptoError::Malformed)
    );
    for (at, value) in [(3, 1), (1, 0), (0, 2)] {
        let mut b = orig;
        b[HEADROOM + at] = value;
        let before = b;
        assert_eq!(
            sealer.seal_in_place(&mut b, len),
            Err(CryptoError::Malformed)
        );
        assert_eq!(b, before);
    }
    assert_eq!(buf, orig);
    assert_eq!(sealer.sealed(), 0, "failures use no counter");
}

#[test]
fn counters_never_repeat_and_run_out() {
    for aead in Aead::ALL {
        counters_never_repeat_and_run_out_with(aead);
    }
}

fn counters_never_repeat_and_run_out_with(aead: Aead) {
    let now = Instant::now();
    let mut sealer = Sealer::new(now, 0, Key::for_aead(aead, [1; KEY_LEN]));
    let a = sealed(&mut sealer, 1);
    let b = sealed(&mut sealer, 1);
    let ca = EncryptedDatagram::new_checked(&a[..]).unwrap().counter();
    let cb = EncryptedDatagram::new_checked(&b[..]).unwrap().counter();
    assert_eq!((ca, cb), (0, 1));
    assert_ne!(a[ENCRYPTED_HEADER_LEN..], b[ENCRYPTED_HEADER_LEN..]);

    sealer.skip_counters(COUNTER_LIMIT - 1);
    let last = sealed(&mut sealer, 2);
    assert_eq!(
        EncryptedDatagram::new_checked(&last[..]).unwrap().counter(),
        COUNTER_LIMIT - 1
    );
    let mut buf = [0u8; 64];
    let len = plain(&mut buf, SleeveHeader::frames(A, B), &[&[1]]);
    assert_eq!(
        sealer.seal_in_place(&mut buf, len),
        Err(CryptoError::CounterExhausted)
    );
    // The receiver takes the last counter like any other.
    let mut opener = Opener::new(0, Key::for_aead(aead, [1; KEY_LEN]), grace());
    assert_eq!(open_one(&mut opener, now, last), Ok(2));
    // A new key starts again at 0.
    sealer.install(now, 1, Key::for_aead(aead, [2; KEY_LEN]));
    assert_eq!(sealer.seal_in_place(&mut buf, len), Ok(len + OVERHEAD));
    assert_eq!(sealer.sealed(), 1);
}

#[test]
fn reordering_within_the_window_and_duplicates() {
    for aead in Aead::ALL {
        reordering_within_the_window_and_duplicates_with(aead);
    }
}

fn reordering_within_the_window_and_duplicates_with(aead: Aead) {
    let now = Instant::now();
    let mut sealer = Sealer::new(now, 0, Key::for_aead(aead, [3; KEY_LEN]));
    let mut opener = Opener::new(0, Key::for_aead(aead, [3; KEY_LEN]), grace());
    let all: Vec<Vec<u8>> = (0..REPLAY_WINDOW as u32 + 10)
        .map(|n| sealed(&mut sealer, n))
        .collect();
    // The newest arrives first, then a window's worth of older ones backwards.
    let newest = all.len() - 1;
    assert_eq!(
        open_one(&mut opener, now, all[newest].clone()),
        Ok(newest as u32)
    );
    for n in (newest + 1 - REPLAY_WINDOW as usize..newest).rev() {
        assert_eq!(open_one(&mut opener, now, all[n].clone()), Ok(n as u32));
    }
    // Everything again: duplicates inside the window, too old below it.
    for (n, d) in all.iter().enumerate() {
        let want = if n + REPLAY_WINDOW as usize <= newest {
            CryptoError::TooOld
        } else {
            CryptoError::Replayed
        };
        assert_eq!(open_one(&mut opener, now, d.clone()), Err(want), "{n}");
    }
}

#[test]
fn forgeries_do_not_move_the_window() {
    for aead in Aead::ALL {
        forgeries_do_not_move_the_window_with(aead);
    }
}

fn forgeries_do_not_move_the_window_with(aead: Aead) {
    let now = Instant::now();
    let mut sealer = Sealer::new(now, 0, Key::for_aead(aead, [3; KEY_LEN]));
    let mut opener = Opener::new(0, Key::for_aead(aead, [3; KEY_LEN]), grace());
    let first = sealed(&mut sealer, 0);
    // A forgery far ahead, with a tag under another key.
    let mut other = Sealer::new(now, 0, Key::for_aead(aead, [4; KEY_LEN]));
    other.skip_counters(1 << 40);
    let forged = sealed(&mut other, 9);
    assert_eq!(
        open_one(&mut opener, now, forged.clone()),
        Err(CryptoError::AuthFailed)
    );
    assert_eq!(opener.highest_counter(), None);
    // If it had slid the window, counter 0 would now be too old.
    assert_eq!(open_one(&mut opener, now, first), Ok(0));
}

#[test]
fn unknown_epochs_are_refused() {
    for aead in Aead::ALL {
        unknown_epochs_are_refused_with(aead);
    }
}

fn unknown_epochs_are_refused_with(aead: Aead) {
    let now = Instant::now();
    let mut sealer = Sealer::new(now, 2, Key::for_aead(aead, [3; KEY_LEN]));
    let mut opener = Opener::new(1, Key::for_aead(aead, [3; KEY_LEN]), grace());
    assert_eq!(
        open_one(&mut opener, now, sealed(&mut sealer, 0)),
        Err(CryptoError::UnknownKey)
    );
}

// ----- Rekeying -----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// open(seal(x)) == x for any header and frames.
    #[test]
    fn seal_open_round_trip(
        src in 1u64..,
        dst in any::<u64>(),
        ttl in any::<u8>(),
        kind in prop_oneof![Just(SleeveKind::Frames), Just(SleeveKind::Heartbeat), Just(SleeveKind::HeartbeatAck)],
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..6),
        key in any::<[u8; 32]>(),
        epoch in any::<u8>(),
        aead in proptest::sample::select(Aead::ALL.to_vec()),
    ) {
        let now = Instant::now();
        let mut sealer = Sealer::new(now, epoch, Key::for_aead(aead, key));
        let mut opener = Opener::new(epoch, Key::for_aead(aead, key), grace());
        let header = SleeveHeader { kind, ttl, src: PeerName(src), dst: PeerName(dst) };
        let mut buf = vec![0u8; 2048];
        let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        let len = plain(&mut buf, header, &refs);
        let before = buf[HEADROOM..HEADROOM + len].to_vec();
        let total = sealer.seal_in_place(&mut buf, len).unwrap();
        prop_assert_eq!(total, len + OVERHEAD);
        let d = EncryptedDatagram::new_checked(&buf[..total]).unwrap();
        prop_assert_eq!(d.header(), header);
        prop_assert_eq!((d.epoch(), d.counter()), (epoch, 0));
        let r = opener.open_in_place(now, &mut buf[..total]).unwrap();
        prop_assert_eq!(&buf[r], &before[..]);
    }

    /// No input makes open panic, and none opens without the key.
    #[test]
    fn open_never_panics_on_garbage(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..200),
        aead in proptest::sample::select(Aead::ALL.to_vec()),
    ) {
        let mut opener = Opener::new(bytes.get(20).copied().unwrap_or(0), Key::for_aead(aead, [9; 32]), grace());
        prop_assert!(opener.open_in_place(Instant::now(), &mut bytes).is_err());
    }
}

#[test]
fn tickets_sealed_out_of_order_open_once_each() {
    for aead in [Aead::ChaCha20Poly1305, Aead::Aes256Gcm] {
        tickets_sealed_out_of_order_open_once_each_with(aead);
    }
}

/// Workers take tickets in one order and seal (and send) in another: every datagram opens once,
/// and a key replaced after a ticket was taken still seals that ticket's datagram.
fn tickets_sealed_out_of_order_open_once_each_with(aead: Aead) {
    let now = Instant::now();
    let mut sealer = Sealer::new(now, 3, Key::for_aead(aead, [9; 32]));
    let mut opener = Opener::new(3, Key::for_aead(aead, [9; 32]), grace());
    let tickets: Vec<SealTicket> = (0..4).map(|_| sealer.ticket().unwrap()).collect();
    assert_eq!(
        tickets.iter().map(SealTicket::counter).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    // The sealer moves to another key; the tickets keep theirs.
    sealer.install(now, 4, Key::for_aead(aead, [5; 32]));
    let mut datagrams = Vec::new();
    for (n, t) in tickets.into_iter().enumerate().rev() {
        let mut buf = vec![0u8; 256];
        let frame = (n as u32).to_be_bytes();
        let len = plain(&mut buf, SleeveHeader::frames(A, B), &[&frame]);
        let total = t.seal_in_place(&mut buf, len).unwrap();
        buf.truncate(total);
        datagrams.push(buf);
    }
    for d in &datagrams {
        open_one(&mut opener, now, d.clone()).unwrap();
    }
    for d in datagrams {
        assert_eq!(open_one(&mut opener, now, d), Err(CryptoError::Replayed));
    }
}

#[test]
fn open_tickets_decrypt_apart_from_the_opener() {
    for aead in [Aead::ChaCha20Poly1305, Aead::Aes256Gcm] {
        let now = Instant::now();
        let mut sealer = Sealer::new(now, 1, Key::for_aead(aead, [4; 32]));
        let mut opener = Opener::new(1, Key::for_aead(aead, [4; 32]), grace());
        let mut a = sealed(&mut sealer, 1);
        let mut b = sealed(&mut sealer, 2);
        let ta = opener.ticket(now, &a).unwrap();
        let tb = opener.ticket(now, &b).unwrap();
        // A ticket opens only its own datagram.
        assert_eq!(
            tb.open_in_place(&mut a.clone()),
            Err(CryptoError::Malformed)
        );
        let ra = ta.open_in_place(&mut a).unwrap();
        let rb = tb.open_in_place(&mut b).unwrap();
        assert_eq!((ra.start, rb.start), (HEADROOM, HEADROOM));
        // Recorded in either order, each once.
        opener.finish(now, &tb).unwrap();
        opener.finish(now, &ta).unwrap();
        assert_eq!(opener.finish(now, &ta), Err(CryptoError::Replayed));
        // A forged datagram gets a ticket (the clear parts are fine) but does not open.
        let mut c = sealed(&mut sealer, 3);
        let last = c.len() - 1;
        c[last] ^= 1;
        let tc = opener.ticket(now, &c).unwrap();
        assert_eq!(tc.open_in_place(&mut c), Err(CryptoError::AuthFailed));
        // A ticket whose key was replaced meanwhile is refused.
        let d = sealed(&mut sealer, 4);
        let td = opener.ticket(now, &d).unwrap();
        let mut other = Opener::new(1, Key::for_aead(aead, [4; 32]), grace());
        assert_eq!(other.finish(now, &td), Err(CryptoError::UnknownKey));
    }
}
