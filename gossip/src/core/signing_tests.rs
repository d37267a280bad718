//! Signed topology records through the core: a member holding the cluster secret cannot
//! replace another peer's record, and a forgery believed before the owner's key was known gives
//! way to the owner's record.

use super::{GossipCore, GossipMsg};
use crate::sign::{verify, HostKey, SignedRecord, TOPOLOGY_DOMAIN};
use crate::topology::{ConnEntry, PeerRecord};
use crate::PeerName;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLOCK_MS: u64 = 1_700_000_000_000;

fn key() -> Arc<HostKey> {
    Arc::new(HostKey::from_pkcs8(&HostKey::generate_pkcs8().unwrap()).unwrap())
}

fn conn(peer: PeerName) -> ConnEntry {
    ConnEntry {
        peer,
        addr: "10.0.0.9:6783".parse().unwrap(),
        usable: true,
    }
}

fn record(name: PeerName, version: u64, conns: &[PeerName], key: Option<&HostKey>) -> PeerRecord {
    let mut r = PeerRecord::new(name, 7, version, "h");
    r.conns = conns.iter().map(|p| conn(*p)).collect();
    r.conns.sort();
    if let Some(k) = key {
        r.sign(k);
    }
    r
}

fn delta(records: Vec<PeerRecord>) -> GossipMsg {
    GossipMsg::Delta { records }
}

/// Our core (signing with `ka`) connected to `b`, holding `b`'s and `x`'s signed records.
fn setup(ka: &Arc<HostKey>, kb: &HostKey, kx: &HostKey, now: Instant) -> GossipCore {
    let (a, b, x) = (ka.derived_name(), kb.derived_name(), kx.derived_name());
    let mut c = GossipCore::new(
        PeerRecord::new(a, 1, CLOCK_MS, "a"),
        1,
        Duration::from_secs(1),
        now,
    )
    .with_wall_clock(CLOCK_MS, now)
    .with_host_key(ka.clone());
    c.connected(now, b, conn(b));
    let rb = record(b, CLOCK_MS, &[a, x], Some(kb));
    let rx = record(x, CLOCK_MS, &[b], Some(kx));
    c.on_message(now, b, delta(vec![rb, rx]));
    assert!(c.topology().get(x).is_some(), "x is reachable through b");
    c
}

#[test]
fn our_record_is_signed_on_every_change() {
    let now = Instant::now();
    let (ka, kb, kx) = (key(), key(), key());
    let c = setup(&ka, &kb, &kx, now);
    let ours = c.topology().ours();
    assert_eq!(ours.conns.len(), 1, "the change of connections is in it");
    assert_eq!(ours.key, Some(ka.public()));
    let sig = ours.sig.expect("signed");
    assert!(verify(
        &ka.public(),
        TOPOLOGY_DOMAIN,
        &ours.signed_body(),
        &sig
    ));
    // It survives the JSON round trip a receiver makes.
    let back: PeerRecord = serde_json::from_slice(&serde_json::to_vec(ours).unwrap()).unwrap();
    assert_eq!(back.signed_body(), ours.signed_body());
}

#[test]
fn a_member_cannot_replace_another_peers_record() {
    let now = Instant::now();
    let (ka, kb, kx) = (key(), key(), key());
    let mut c = setup(&ka, &kb, &kx, now);
    let (b, x) = (kb.derived_name(), kx.derived_name());
    let genuine = c.topology().get(x).unwrap().clone();

    // b, holding the secret, writes x's record with its own key, with x's key and a body
    // changed after signing, and without a signature: all refused and counted.
    let with_b_key = record(x, CLOCK_MS + 5, &[b], Some(&kb));
    let mut tampered = record(x, CLOCK_MS + 5, &[b], Some(&kx));
    tampered.nickname = "changed".into();
    let unsigned = record(x, CLOCK_MS + 5, &[b], None);
    c.on_message(now, b, delta(vec![with_b_key, tampered, unsigned]));
    let s = c.stats();
    assert_eq!(
        (
            s.rejected_wrong_key,
            s.rejected_signature,
            s.rejected_unsigned
        ),
        (1, 1, 1)
    );
    assert_eq!(c.topology().get(x), Some(&genuine), "x's record untouched");

    // x's own next record passes.
    c.on_message(
        now,
        b,
        delta(vec![record(x, CLOCK_MS + 1, &[b], Some(&kx))]),
    );
    assert_eq!(c.topology().get(x).unwrap().version, CLOCK_MS + 1);
}

#[test]
fn a_forgery_believed_before_the_key_was_known_gives_way() {
    let now = Instant::now();
    let (ka, kb, kx, ky) = (key(), key(), key(), key());
    let mut c = setup(&ka, &kb, &kx, now);
    let (b, y) = (kb.derived_name(), ky.derived_name());
    // b speaks for y (a name nobody has seen a key for) with a version a day ahead: an
    // unsigned record of an unbound name is what an older router sends, so it is believed.
    let rb = record(
        b,
        CLOCK_MS + 1,
        &[ka.derived_name(), kx.derived_name(), y],
        Some(&kb),
    );
    let day = 24 * 3600 * 1000 - 1;
    c.on_message(
        now,
        b,
        delta(vec![rb, record(y, CLOCK_MS + day, &[b], None)]),
    );
    assert_eq!(c.topology().get(y).unwrap().version, CLOCK_MS + day);
    assert_eq!(c.stats().unsigned_accepted, 1);
    // y's own record, far older, signed with the key y's name derives from: it replaces the
    // forgery, and y's name is bound from now on.
    c.on_message(now, b, delta(vec![record(y, CLOCK_MS, &[b], Some(&ky))]));
    let held = c.topology().get(y).unwrap();
    assert_eq!((held.version, held.key), (CLOCK_MS, Some(ky.public())));
    c.on_message(now, b, delta(vec![record(y, CLOCK_MS + day, &[b], None)]));
    assert_eq!(c.topology().get(y).unwrap().version, CLOCK_MS);
    assert_eq!(c.stats().rejected_unsigned, 1);
}

#[test]
fn unsigned_records_are_refused_when_signatures_are_required() {
    let now = Instant::now();
    let (ka, kb) = (key(), key());
    let (a, b) = (ka.derived_name(), kb.derived_name());
    let mut c = GossipCore::new(
        PeerRecord::new(a, 1, CLOCK_MS, "a"),
        1,
        Duration::from_secs(1),
        now,
    )
    .with_host_key(ka.clone())
    .with_require_signed(true);
    c.connected(now, b, conn(b));
    c.on_message(now, b, delta(vec![record(b, CLOCK_MS, &[a], None)]));
    assert_eq!(c.stats().rejected_unsigned, 1);
    assert!(c.topology().get(b).is_none());
    c.on_message(now, b, delta(vec![record(b, CLOCK_MS, &[a], Some(&kb))]));
    assert!(c.topology().get(b).is_some());
}

#[test]
fn legacy_names_are_bound_by_their_owners_record() {
    let now = Instant::now();
    let (ka, kb, kl) = (key(), key(), key());
    let (a, b) = (ka.derived_name(), kb.derived_name());
    let legacy = PeerName(0x1234_5678);
    let mut c = GossipCore::new(
        PeerRecord::new(a, 1, CLOCK_MS, "a"),
        1,
        Duration::from_secs(1),
        now,
    )
    .with_host_key(ka.clone());
    c.connected(now, legacy, conn(legacy));
    c.connected(now, b, conn(b));
    // The legacy host's own record, on its own connection: its key is bound.
    c.on_message(
        now,
        legacy,
        delta(vec![record(legacy, CLOCK_MS, &[a, b], Some(&kl))]),
    );
    c.on_message(
        now,
        b,
        delta(vec![record(b, CLOCK_MS, &[a, legacy], Some(&kb))]),
    );
    // b then writes the legacy host's record with b's key: refused.
    c.on_message(
        now,
        b,
        delta(vec![record(legacy, CLOCK_MS + 9, &[a, b], Some(&kb))]),
    );
    assert_eq!(c.stats().rejected_wrong_key, 1);
    assert_eq!(c.topology().get(legacy).unwrap().version, CLOCK_MS);
}
