//! Tests of the rekey hand-off between two `Session`s (A and B, as after the first handshake):
//! when a rekey is due, overlapping epochs, confirmation, retried and wrapping epochs. Every test
//! runs once per AEAD (`_with(aead)`); the helpers serve `handover_tests.rs` too.

use super::tests::{plain, A, B};
use super::*;
use crate::wire::sleeve::{SleeveDatagram, SleeveHeader};
use std::time::{Duration, Instant};

/// Two sessions, A and B, as after the first handshake: epoch 0.
pub(super) fn pair(aead: Aead, now: Instant, policy: RekeyPolicy) -> (Session, Session) {
    let a = Session::new(
        now,
        0,
        Key::for_aead(aead, [0xab; KEY_LEN]),
        Key::for_aead(aead, [0xba; KEY_LEN]),
        policy,
    );
    let b = Session::new(
        now,
        0,
        Key::for_aead(aead, [0xba; KEY_LEN]),
        Key::for_aead(aead, [0xab; KEY_LEN]),
        policy,
    );
    (a, b)
}

pub(super) fn seal_s(s: &mut Session, n: u32) -> Vec<u8> {
    let mut buf = vec![0u8; 64];
    let frame = n.to_be_bytes();
    let len = plain(&mut buf, SleeveHeader::frames(A, B), &[&frame]);
    let total = s.seal_in_place(&mut buf, len).unwrap();
    buf.truncate(total);
    buf
}

pub(super) fn open_s(s: &mut Session, now: Instant, mut d: Vec<u8>) -> Result<u32, CryptoError> {
    let r = s.open_in_place(now, &mut d)?;
    let dg = SleeveDatagram::new_checked(&d[r]).unwrap();
    let f = dg.frames().next().unwrap().unwrap();
    Ok(u32::from_be_bytes(f.try_into().unwrap()))
}

pub(super) fn epoch_of(d: &[u8]) -> u8 {
    EncryptedDatagram::new_checked(d).unwrap().epoch()
}

pub(super) fn short_policy() -> RekeyPolicy {
    RekeyPolicy {
        max_age: Duration::from_secs(5),
        max_packets: 100,
        grace: Duration::from_secs(2),
    }
}

#[test]
fn rekey_is_due_by_age_or_packets() {
    for aead in Aead::ALL {
        rekey_is_due_by_age_or_packets_with(aead);
    }
}

fn rekey_is_due_by_age_or_packets_with(aead: Aead) {
    let t0 = Instant::now();
    let (mut a, _) = pair(aead, t0, short_policy());
    assert!(!a.rekey_due(t0));
    assert!(!a.rekey_due(t0 + Duration::from_millis(4999)));
    assert!(a.rekey_due(t0 + Duration::from_secs(5)));
    let (mut a2, _) = pair(aead, t0, short_policy());
    for n in 0..99 {
        seal_s(&mut a2, n);
    }
    assert!(!a2.rekey_due(t0));
    seal_s(&mut a2, 99);
    assert!(a2.rekey_due(t0));
    // A new send key resets both.
    let t1 = t0 + Duration::from_secs(6);
    a.install_as_initiator(
        t1,
        a.next_epoch(),
        Key::for_aead(aead, [1; 32]),
        Key::for_aead(aead, [2; 32]),
    )
    .unwrap();
    assert!(!a.rekey_due(t1));
    assert_eq!(a.send_epoch(), Some(1));
}

#[test]
fn default_policy() {
    let p = RekeyPolicy::default();
    assert_eq!(p.max_age, Duration::from_secs(120));
    assert_eq!(p.max_packets, 1 << 32);
    assert_eq!(p.grace, Duration::from_secs(10));
}

/// The whole hand-off with datagrams in flight both ways: nothing is lost, old-epoch datagrams
/// open during the grace period and not after.
#[test]
fn rekey_with_overlapping_epochs_loses_nothing() {
    for aead in Aead::ALL {
        rekey_with_overlapping_epochs_loses_nothing_with(aead);
    }
}

fn rekey_with_overlapping_epochs_loses_nothing_with(aead: Aead) {
    let t0 = Instant::now();
    let policy = short_policy();
    let (mut a, mut b) = pair(aead, t0, policy);
    let t1 = t0 + policy.max_age;
    assert!(a.rekey_due(t1) && b.rekey_due(t1));

    // In flight from before the rekey, both ways.
    let a_old: Vec<_> = (0..5).map(|n| seal_s(&mut a, n)).collect();
    let b_old: Vec<_> = (100..105).map(|n| seal_s(&mut b, n)).collect();

    // A initiates with epoch 1; B installs before answering.
    let epoch = a.next_epoch();
    assert_eq!(epoch, 1);
    let (ab, ba) = ([0x11; KEY_LEN], [0x22; KEY_LEN]);
    b.install_as_responder(t1, epoch, Key::for_aead(aead, ba), Key::for_aead(aead, ab))
        .unwrap();
    assert_eq!(b.send_epoch(), Some(0), "B waits for A");
    assert_eq!(b.pending_send_epoch(), Some(1));
    assert!(!b.rekey_due(t1), "B is waiting for A's first datagram");
    let b_still_old = seal_s(&mut b, 105);
    assert_eq!(epoch_of(&b_still_old), 0);

    // A gets the answer and switches its sending at once.
    a.install_as_initiator(t1, epoch, Key::for_aead(aead, ab), Key::for_aead(aead, ba))
        .unwrap();
    assert_eq!(a.send_epoch(), Some(1));
    let a_new: Vec<_> = (5..10).map(|n| seal_s(&mut a, n)).collect();
    assert_eq!(epoch_of(&a_new[0]), 1);

    // B receives old and new from A interleaved: all open. The first new one switches B's
    // sending.
    assert_eq!(open_s(&mut b, t1, a_old[0].clone()), Ok(0));
    assert_eq!(open_s(&mut b, t1, a_new[0].clone()), Ok(5));
    assert_eq!(b.send_epoch(), Some(1));
    assert_eq!(b.pending_send_epoch(), None);
    assert_eq!(
        b.recv_epochs().unwrap(),
        KeyEpochs {
            previous: Some(0),
            current: 1,
            next: None
        }
    );
    for (n, d) in a_old.iter().enumerate().skip(1) {
        assert_eq!(open_s(&mut b, t1, d.clone()), Ok(n as u32));
    }
    for (n, d) in a_new.iter().enumerate().skip(1) {
        assert_eq!(open_s(&mut b, t1, d.clone()), Ok(n as u32 + 5));
    }

    // A receives B's old ones (its current key) and then B's first new one.
    for (n, d) in b_old.iter().enumerate() {
        assert_eq!(open_s(&mut a, t1, d.clone()), Ok(100 + n as u32));
    }
    let b_new = seal_s(&mut b, 200);
    assert_eq!(epoch_of(&b_new), 1);
    assert_eq!(open_s(&mut a, t1, b_new), Ok(200));
    assert_eq!(a.recv_epochs().unwrap().current, 1);
    assert_eq!(a.recv_epochs().unwrap().previous, Some(0));

    // A straggler of the old epoch within the grace period still opens...
    let in_grace = t1 + policy.grace - Duration::from_millis(1);
    assert_eq!(open_s(&mut a, in_grace, b_still_old.clone()), Ok(105));
    // ... and not after it; nor does a replay in between.
    let b_old_replay = b_old[0].clone();
    assert_eq!(
        open_s(&mut a, in_grace, b_old_replay.clone()),
        Err(CryptoError::Replayed)
    );
    let after = t1 + policy.grace;
    assert_eq!(
        open_s(&mut a, after, b_old_replay),
        Err(CryptoError::UnknownKey)
    );
    assert_eq!(a.recv_epochs().unwrap().previous, None);
    b.retire_expired(after);
    assert_eq!(b.recv_epochs().unwrap().previous, None);
    assert_eq!(
        open_s(&mut b, after, a_old[0].clone()),
        Err(CryptoError::UnknownKey)
    );

    // Traffic carries on under epoch 1, and the next rekey is epoch 2.
    assert_eq!(open_s(&mut b, after, seal_s(&mut a, 11)), Ok(11));
    assert_eq!(open_s(&mut a, after, seal_s(&mut b, 12)), Ok(12));
    assert_eq!((a.next_epoch(), b.next_epoch()), (2, 2));
}

#[test]
fn responder_switches_on_explicit_confirmation() {
    for aead in Aead::ALL {
        responder_switches_on_explicit_confirmation_with(aead);
    }
}

fn responder_switches_on_explicit_confirmation_with(aead: Aead) {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(aead, t0, short_policy());
    b.install_as_responder(
        t0,
        1,
        Key::for_aead(aead, [3; 32]),
        Key::for_aead(aead, [4; 32]),
    )
    .unwrap();
    a.install_as_initiator(
        t0,
        1,
        Key::for_aead(aead, [4; 32]),
        Key::for_aead(aead, [3; 32]),
    )
    .unwrap();
    assert!(b.confirm(t0));
    assert!(!b.confirm(t0), "only once");
    assert_eq!(b.send_epoch(), Some(1));
    // A opens B's new datagrams with its `next` key.
    assert_eq!(open_s(&mut a, t0, seal_s(&mut b, 1)), Ok(1));
    assert_eq!(a.recv_epochs().unwrap().current, 1);
}

#[test]
fn an_unconfirmed_responder_asks_for_a_rekey_after_the_grace_period() {
    for aead in Aead::ALL {
        an_unconfirmed_responder_asks_for_a_rekey_after_the_grace_period_with(aead);
    }
}

fn an_unconfirmed_responder_asks_for_a_rekey_after_the_grace_period_with(aead: Aead) {
    let t0 = Instant::now();
    let policy = short_policy();
    let (_, mut b) = pair(aead, t0, policy);
    let t1 = t0 + policy.max_age;
    b.install_as_responder(
        t1,
        1,
        Key::for_aead(aead, [3; 32]),
        Key::for_aead(aead, [4; 32]),
    )
    .unwrap();
    assert!(!b.rekey_due(t1 + policy.grace - Duration::from_millis(1)));
    assert!(b.rekey_due(t1 + policy.grace));
    // B starts over as initiator with a fresh epoch: the unused `next` key is replaced.
    let t2 = t1 + policy.grace;
    assert_eq!(b.next_epoch(), 2);
    b.install_as_initiator(
        t2,
        2,
        Key::for_aead(aead, [5; 32]),
        Key::for_aead(aead, [6; 32]),
    )
    .unwrap();
    assert_eq!(b.send_epoch(), Some(2));
    assert_eq!(b.pending_send_epoch(), None);
    assert_eq!(
        b.recv_epochs().unwrap(),
        KeyEpochs {
            previous: None,
            current: 0,
            next: Some(2)
        }
    );
}

#[test]
fn a_retried_handshake_replaces_the_unused_key() {
    for aead in Aead::ALL {
        a_retried_handshake_replaces_the_unused_key_with(aead);
    }
}

fn a_retried_handshake_replaces_the_unused_key_with(aead: Aead) {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(aead, t0, short_policy());
    // B answered a first attempt whose answer A never received.
    b.install_as_responder(
        t0,
        1,
        Key::for_aead(aead, [3; 32]),
        Key::for_aead(aead, [4; 32]),
    )
    .unwrap();
    // A retries the same epoch with a new handshake (new keys); B installs them instead.
    assert_eq!(a.next_epoch(), 1);
    b.install_as_responder(
        t0,
        1,
        Key::for_aead(aead, [5; 32]),
        Key::for_aead(aead, [6; 32]),
    )
    .unwrap();
    a.install_as_initiator(
        t0,
        1,
        Key::for_aead(aead, [6; 32]),
        Key::for_aead(aead, [5; 32]),
    )
    .unwrap();
    assert_eq!(open_s(&mut b, t0, seal_s(&mut a, 7)), Ok(7));
    assert_eq!(b.send_epoch(), Some(1));
    assert_eq!(open_s(&mut a, t0, seal_s(&mut b, 8)), Ok(8));
}

#[test]
fn live_epochs_cannot_be_installed_again() {
    for aead in Aead::ALL {
        live_epochs_cannot_be_installed_again_with(aead);
    }
}

fn live_epochs_cannot_be_installed_again_with(aead: Aead) {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(aead, t0, short_policy());
    assert_eq!(
        a.install_as_initiator(
            t0,
            0,
            Key::for_aead(aead, [1; 32]),
            Key::for_aead(aead, [1; 32])
        ),
        Err(CryptoError::EpochInUse)
    );
    assert_eq!(a.send_epoch(), Some(0), "nothing changed");
    b.install_as_responder(
        t0,
        1,
        Key::for_aead(aead, [3; 32]),
        Key::for_aead(aead, [4; 32]),
    )
    .unwrap();
    a.install_as_initiator(
        t0,
        1,
        Key::for_aead(aead, [4; 32]),
        Key::for_aead(aead, [3; 32]),
    )
    .unwrap();
    open_s(&mut b, t0, seal_s(&mut a, 1)).unwrap();
    // Epoch 0 is in its grace period on B.
    assert_eq!(
        b.install_as_responder(
            t0,
            0,
            Key::for_aead(aead, [1; 32]),
            Key::for_aead(aead, [1; 32])
        ),
        Err(CryptoError::EpochInUse)
    );
    let later = t0 + short_policy().grace;
    b.retire_expired(later);
    assert_eq!(
        b.install_as_responder(
            later,
            0,
            Key::for_aead(aead, [1; 32]),
            Key::for_aead(aead, [1; 32])
        ),
        Ok(())
    );
}

#[test]
fn epochs_wrap() {
    for aead in Aead::ALL {
        epochs_wrap_with(aead);
    }
}

fn epochs_wrap_with(aead: Aead) {
    let t0 = Instant::now();
    let (mut a, _) = pair(aead, t0, short_policy());
    // A never hears from its peer, so its current receive key stays at epoch 0: after wrapping,
    // the proposal skips it.
    for e in 1..=300u32 {
        let epoch = a.next_epoch();
        let want = if e < 256 { e as u8 } else { (e + 1) as u8 };
        assert_eq!(epoch, want);
        a.install_as_initiator(
            t0,
            epoch,
            Key::for_aead(aead, [1; 32]),
            Key::for_aead(aead, [2; 32]),
        )
        .unwrap();
    }
}

#[test]
fn debug_output_has_no_key_bytes() {
    for aead in Aead::ALL {
        debug_output_has_no_key_bytes_with(aead);
    }
}

fn debug_output_has_no_key_bytes_with(aead: Aead) {
    let t0 = Instant::now();
    let (a, _) = pair(aead, t0, short_policy());
    let text = format!("{a:?}");
    assert!(text.contains("Session"), "{text}");
    assert!(!text.contains("171") && !text.contains("ab, "), "{text}");
}
