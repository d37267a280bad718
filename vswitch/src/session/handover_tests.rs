//! Tests of the hand-over to a new control connection's keys (`handover.rs`): in every ordering
//! the two ends can open what the other seals, old and new keys overlap with a replay window
//! each, and the old keys go after the grace period. Each test runs once per AEAD.

use super::rekey_tests::{epoch_of, open_s, pair, seal_s, short_policy};
use super::*;
use std::time::{Duration, Instant};

/// The new connection's keys, as the dialler (A) and the listener (B) derive them.
fn conn_keys(aead: Aead, seed: u8) -> ((Key, Key), (Key, Key)) {
    let (a2b, b2a) = ([seed; KEY_LEN], [seed ^ 0xff; KEY_LEN]);
    let k = |b| Key::for_aead(aead, b);
    ((k(a2b), k(b2a)), (k(b2a), k(a2b)))
}

/// Whatever each side seals now opens on the other side.
fn each_opens_the_other(a: &mut Session, b: &mut Session, now: Instant, tag: u32) {
    let d = seal_s(a, tag);
    assert_eq!(open_s(b, now, d), Ok(tag), "B opens what A seals");
    let d = seal_s(b, tag + 1);
    assert_eq!(open_s(a, now, d), Ok(tag + 1), "A opens what B seals");
}

#[test]
fn a_replacement_seen_by_both_ends_loses_nothing() {
    for aead in Aead::ALL {
        a_replacement_seen_by_both_ends_loses_nothing_with(aead);
    }
}

fn a_replacement_seen_by_both_ends_loses_nothing_with(aead: Aead) {
    let t0 = Instant::now();
    let policy = short_policy();
    let (mut a, mut b) = pair(aead, t0, policy);
    // In flight under the old keys, both ways, from before the new connection.
    let a_old: Vec<_> = (0..4).map(|n| seal_s(&mut a, n)).collect();
    let b_old: Vec<_> = (100..104).map(|n| seal_s(&mut b, n)).collect();
    let b_stragglers: Vec<_> = (104..106).map(|n| seal_s(&mut b, n)).collect();

    // A (the dialler) is up first: it accepts the new keys but keeps sending the old ones.
    let ((a_send, a_recv), (b_send, b_recv)) = conn_keys(aead, 0x31);
    let epoch = a.handover_as_dialler(t0, a_send, a_recv);
    assert_eq!(epoch, 1, "not a live epoch of A");
    assert_eq!(a.send_epoch(), Some(0));
    assert_eq!(a.pending_send_epoch(), Some(1));
    let a_still_old = seal_s(&mut a, 4);
    assert_eq!(epoch_of(&a_still_old), 0);
    // Before B hears of the epoch, everything still opens both ways.
    each_opens_the_other(&mut a, &mut b, t0, 10);

    // B gets the epoch: it keeps its old receive key and sends with the new one at once.
    assert_eq!(
        b.handover_as_listener(t0, epoch, b_send, b_recv),
        Handover::Overlap
    );
    assert_eq!(b.send_epoch(), Some(1));
    let b_new = seal_s(&mut b, 200);
    assert_eq!(epoch_of(&b_new), 1);
    // A's old datagrams, in flight or sealed since, open at B.
    for (n, d) in a_old.iter().enumerate() {
        assert_eq!(open_s(&mut b, t0, d.clone()), Ok(n as u32));
    }
    assert_eq!(open_s(&mut b, t0, a_still_old), Ok(4));
    // B's old datagrams still open at A, and its first new one switches A's sending.
    for (n, d) in b_old.iter().enumerate() {
        assert_eq!(open_s(&mut a, t0, d.clone()), Ok(100 + n as u32));
    }
    assert_eq!(open_s(&mut a, t0, b_new), Ok(200));
    assert_eq!(a.send_epoch(), Some(1));
    assert_eq!(a.pending_send_epoch(), None);
    each_opens_the_other(&mut a, &mut b, t0, 20);

    // A late datagram under the old key opens within the grace period, once.
    let in_grace = t0 + policy.grace - Duration::from_millis(1);
    let late = b_stragglers[0].clone();
    assert_eq!(open_s(&mut a, in_grace, late.clone()), Ok(104));
    assert_eq!(open_s(&mut a, in_grace, late), Err(CryptoError::Replayed));
    // After it, the old keys are gone on both sides.
    let after = t0 + policy.grace;
    let late = b_stragglers[1].clone();
    assert_eq!(open_s(&mut a, after, late), Err(CryptoError::UnknownKey));
    b.retire_expired(after);
    assert_eq!(b.recv_epochs().unwrap().previous, None);
    assert_eq!(a.recv_epochs().unwrap().previous, None);
    each_opens_the_other(&mut a, &mut b, after, 30);
}

#[test]
fn old_and_new_keys_keep_a_replay_window_each() {
    for aead in Aead::ALL {
        old_and_new_keys_keep_a_replay_window_each_with(aead);
    }
}

fn old_and_new_keys_keep_a_replay_window_each_with(aead: Aead) {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(aead, t0, short_policy());
    let ((a_send, a_recv), (b_send, b_recv)) = conn_keys(aead, 0x42);
    let epoch = a.handover_as_dialler(t0, a_send, a_recv);
    b.handover_as_listener(t0, epoch, b_send, b_recv);
    // Counter 0 under the old key and counter 0 under the new key are different datagrams.
    let new0 = seal_s(&mut b, 2); // B's first datagram under the new key: counter 0
    let old_at_b = seal_s(&mut a, 3); // A still sends old: counter 0 of A's old key
    assert_eq!(open_s(&mut b, t0, old_at_b.clone()), Ok(3));
    assert_eq!(open_s(&mut b, t0, old_at_b), Err(CryptoError::Replayed));
    assert_eq!(open_s(&mut a, t0, new0.clone()), Ok(2));
    assert_eq!(open_s(&mut a, t0, new0), Err(CryptoError::Replayed));
    // A's old receive key (B's old send key) has its own window: counter 0 under it is new.
    let (_, mut b2) = pair(aead, t0, short_policy());
    let b_old0 = seal_s(&mut b2, 4);
    assert_eq!(open_s(&mut a, t0, b_old0.clone()), Ok(4));
    assert_eq!(open_s(&mut a, t0, b_old0), Err(CryptoError::Replayed));
}

#[test]
fn the_dialler_switches_on_the_answer_without_traffic() {
    for aead in Aead::ALL {
        the_dialler_switches_on_the_answer_without_traffic_with(aead);
    }
}

fn the_dialler_switches_on_the_answer_without_traffic_with(aead: Aead) {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(aead, t0, short_policy());
    let ((a_send, a_recv), (b_send, b_recv)) = conn_keys(aead, 0x53);
    let epoch = a.handover_as_dialler(t0, a_send, a_recv);
    b.handover_as_listener(t0, epoch, b_send, b_recv);
    assert!(a.confirm(t0), "the listener's answer");
    assert_eq!(a.send_epoch(), Some(epoch));
    let d = seal_s(&mut a, 7);
    assert_eq!(epoch_of(&d), epoch);
    assert_eq!(open_s(&mut b, t0, d), Ok(7));
    assert_eq!(b.recv_epochs().unwrap().current, epoch);
    assert_eq!(b.recv_epochs().unwrap().previous, Some(0));
}

#[test]
fn a_first_connection_hands_over_from_empty_sessions() {
    for aead in Aead::ALL {
        a_first_connection_hands_over_from_empty_sessions_with(aead);
    }
}

fn a_first_connection_hands_over_from_empty_sessions_with(aead: Aead) {
    let t0 = Instant::now();
    let policy = short_policy();
    let (mut a, mut b) = (Session::empty(policy), Session::empty(policy));
    let mut buf = [0u8; 64];
    assert_eq!(
        a.seal_in_place(&mut buf, 20),
        Err(CryptoError::NoSendKey),
        "nothing to seal with yet"
    );
    assert!(!a.rekey_due(t0 + policy.max_age));
    let ((a_send, a_recv), (b_send, b_recv)) = conn_keys(aead, 0x64);
    let epoch = a.handover_as_dialler(t0, a_send, a_recv);
    assert_eq!(epoch, 0);
    assert_eq!(a.send_epoch(), None, "A waits for B");
    assert_eq!(
        b.handover_as_listener(t0, epoch, b_send, b_recv),
        Handover::Fresh
    );
    let d = seal_s(&mut b, 1);
    assert_eq!(open_s(&mut a, t0, d), Ok(1));
    assert_eq!(a.send_epoch(), Some(0), "B's first datagram is the proof");
    each_opens_the_other(&mut a, &mut b, t0, 2);
}

#[test]
fn an_epoch_the_listener_still_receives_under_starts_it_over() {
    for aead in Aead::ALL {
        an_epoch_the_listener_still_receives_under_starts_it_over_with(aead);
    }
}

fn an_epoch_the_listener_still_receives_under_starts_it_over_with(aead: Aead) {
    // The listener's keys are out of step with the dialler's: A had no session (it saw the old
    // connection close before the new one came up), B kept its old one at epoch 0.
    let t0 = Instant::now();
    let policy = short_policy();
    let (_, mut b) = pair(aead, t0, policy);
    let mut a = Session::empty(policy);
    let ((a_send, a_recv), (b_send, b_recv)) = conn_keys(aead, 0x75);
    let epoch = a.handover_as_dialler(t0, a_send, a_recv);
    assert_eq!(epoch, 0);
    assert_eq!(
        b.handover_as_listener(t0, epoch, b_send, b_recv),
        Handover::Fresh
    );
    assert_eq!(b.recv_epochs().unwrap().previous, None);
    each_opens_the_other(&mut b, &mut a, t0, 1);
}

#[test]
fn an_epoch_in_the_listeners_grace_period_replaces_the_straggler_key() {
    for aead in Aead::ALL {
        an_epoch_in_the_listeners_grace_period_replaces_the_straggler_key_with(aead);
    }
}

fn an_epoch_in_the_listeners_grace_period_replaces_the_straggler_key_with(aead: Aead) {
    let t0 = Instant::now();
    let policy = short_policy();
    let (mut a, mut b) = pair(aead, t0, policy);
    // A rekey to epoch 1, completed both ways: both hold 0 as previous.
    let (ab, ba) = ([0x11; KEY_LEN], [0x22; KEY_LEN]);
    b.install_as_responder(t0, 1, Key::for_aead(aead, ba), Key::for_aead(aead, ab))
        .unwrap();
    a.install_as_initiator(t0, 1, Key::for_aead(aead, ab), Key::for_aead(aead, ba))
        .unwrap();
    each_opens_the_other(&mut a, &mut b, t0, 1);
    // A then saw the connection close and starts from nothing (B kept its session): as an
    // empty dialler it proposes epoch 0, B's key in its grace period.
    let mut a = Session::empty(policy);
    let ((a_send, a_recv), (b_send, b_recv)) = conn_keys(aead, 0x86);
    assert_eq!(a.handover_as_dialler(t0, a_send, a_recv), 0);
    assert_eq!(b.recv_epochs().unwrap().previous, Some(0));
    // B's previous key (epoch 0) gives way; its current one stays.
    assert_eq!(
        b.handover_as_listener(t0, 0, b_send, b_recv),
        Handover::Overlap
    );
    assert_eq!(
        b.recv_epochs().unwrap(),
        KeyEpochs {
            previous: None,
            current: 1,
            next: Some(0)
        }
    );
    each_opens_the_other(&mut b, &mut a, t0, 10);
}

#[test]
fn simultaneous_dials_end_on_the_winners_keys_in_either_order() {
    for aead in Aead::ALL {
        simultaneous_dials_end_on_the_winners_keys_in_either_order_with(aead);
    }
}

fn simultaneous_dials_end_on_the_winners_keys_in_either_order_with(aead: Aead) {
    let t0 = Instant::now();
    let policy = short_policy();
    // A dials B (the connection that wins) while B dials A (the loser). B saw its own
    // connection first in both orders.
    for a_saw_the_loser in [false, true] {
        let (mut a, mut b) = (Session::empty(policy), Session::empty(policy));
        let ((lb_send, lb_recv), (la_send, la_recv)) = conn_keys(aead, 0x97); // B dialled the loser
        let e_loser = b.handover_as_dialler(t0, lb_send, lb_recv);
        if a_saw_the_loser {
            // A is the loser's listener and got B's epoch before the winner came up.
            a.handover_as_listener(t0, e_loser, la_send, la_recv);
            each_opens_the_other(&mut a, &mut b, t0, 1);
        }
        let ((wa_send, wa_recv), (wb_send, wb_recv)) = conn_keys(aead, 0xa8); // A dialled the winner
        let e_winner = a.handover_as_dialler(t0, wa_send, wa_recv);
        b.handover_as_listener(t0, e_winner, wb_send, wb_recv);
        assert_eq!(b.send_epoch(), Some(e_winner));
        let d = seal_s(&mut b, 5);
        assert_eq!(open_s(&mut a, t0, d), Ok(5));
        assert_eq!(a.send_epoch(), Some(e_winner));
        each_opens_the_other(&mut a, &mut b, t0, 6);
        // Later rekeys work from there.
        let next = a.next_epoch();
        let (ab, ba) = ([0x11; KEY_LEN], [0x22; KEY_LEN]);
        b.install_as_responder(t0, next, Key::for_aead(aead, ba), Key::for_aead(aead, ab))
            .unwrap();
        a.install_as_initiator(t0, next, Key::for_aead(aead, ab), Key::for_aead(aead, ba))
            .unwrap();
        each_opens_the_other(&mut a, &mut b, t0, 8);
        assert_eq!(a.send_epoch(), Some(next));
        assert_eq!(b.send_epoch(), Some(next));
    }
}

#[test]
fn a_handover_on_top_of_an_unfinished_one_keeps_every_key_in_use() {
    for aead in Aead::ALL {
        a_handover_on_top_of_an_unfinished_one_keeps_every_key_in_use_with(aead);
    }
}

fn a_handover_on_top_of_an_unfinished_one_keeps_every_key_in_use_with(aead: Aead) {
    // Y re-handshakes (it dials C2); X, having seen C1 close, redials at once (it dials C3). X
    // installs C2's keys as listener and starts sending with them, then hands over to C3's as
    // dialler before Y was seen using C2's: Y may switch to C2's keys at any moment.
    let t0 = Instant::now();
    let policy = short_policy();
    let (mut x, mut y) = pair(aead, t0, policy);
    let ((y2_send, y2_recv), (x2_send, x2_recv)) = conn_keys(aead, 0xb9);
    let e2 = y.handover_as_dialler(t0, y2_send, y2_recv);
    x.handover_as_listener(t0, e2, x2_send, x2_recv);
    let x_on_c2 = seal_s(&mut x, 1);
    let y_still_old = seal_s(&mut y, 2);
    let ((x3_send, x3_recv), (y3_send, y3_recv)) = conn_keys(aead, 0xca);
    let e3 = x.handover_as_dialler(t0, x3_send, x3_recv);
    assert_ne!(e3, e2);
    // X still opens Y's old keys, and C2's once Y switches to them.
    assert_eq!(open_s(&mut x, t0, y_still_old), Ok(2));
    assert_eq!(open_s(&mut y, t0, x_on_c2), Ok(1));
    assert_eq!(
        y.send_epoch(),
        Some(e2),
        "X's datagram under C2's keys is Y's proof"
    );
    let y_on_c2 = seal_s(&mut y, 3);
    assert_eq!(open_s(&mut x, t0, y_on_c2), Ok(3));
    // Y gets C3's epoch: both end on C3's keys.
    y.handover_as_listener(t0, e3, y3_send, y3_recv);
    let y_on_c3 = seal_s(&mut y, 4);
    assert_eq!(epoch_of(&y_on_c3), e3);
    assert_eq!(open_s(&mut x, t0, y_on_c3), Ok(4));
    assert_eq!(x.send_epoch(), Some(e3));
    each_opens_the_other(&mut x, &mut y, t0, 5);
}
