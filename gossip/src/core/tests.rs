//! Unit tests of the gossip core (the mesh simulation is `tests/sim.rs`).

use super::*;
use crate::topology::tests::{addr, conn, rec};
use crate::topology::{ConnEntry, PeerRecord, SUMMARY_BUCKETS};
use crate::PeerName;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

fn core(name: u64, now: Instant) -> GossipCore {
    GossipCore::new(rec(name, 100, &[]), name, SEC, now)
}

fn entry(peer: u64) -> ConnEntry {
    conn(peer, true)
}

fn sends(out: &[Output]) -> Vec<(PeerName, &GossipMsg)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { to, msg } => Some((*to, msg)),
            Output::Changed => None,
        })
        .collect()
}

fn records_of(msg: &GossipMsg) -> &[PeerRecord] {
    match msg {
        GossipMsg::Full { records, .. } | GossipMsg::Delta { records } => records,
        _ => &[],
    }
}

#[test]
fn message_json_shapes() {
    let m = GossipMsg::Summary {
        summary: 7,
        count: 3,
    };
    assert_eq!(
        serde_json::to_string(&m).unwrap(),
        r#"{"kind":"summary","summary":7,"count":3}"#
    );
    let m = GossipMsg::Digest {
        buckets: vec![4],
        entries: vec![DigestEntry {
            name: PeerName(9),
            uid: 8,
            version: 7,
        }],
    };
    assert_eq!(
        serde_json::to_string(&m).unwrap(),
        r#"{"kind":"digest","buckets":[4],"entries":[[9,8,7]]}"#
    );
    let m = GossipMsg::Request {
        names: vec![PeerName(1), PeerName(2)],
    };
    assert_eq!(
        serde_json::to_string(&m).unwrap(),
        r#"{"kind":"request","names":[1,2]}"#
    );
    for m in [
        m,
        GossipMsg::Full {
            part: 0,
            parts: 1,
            records: vec![rec(1, 2, &[3])],
        },
        GossipMsg::Buckets {
            hashes: vec![1; 64],
        },
    ] {
        let bytes = serde_json::to_vec(&m).unwrap();
        assert_eq!(bytes.len(), m.json_len());
        assert_eq!(serde_json::from_slice::<GossipMsg>(&bytes).unwrap(), m);
    }
}

#[test]
fn connect_sends_full_state_and_tells_the_others() {
    let now = Instant::now();
    let mut c = core(1, now);
    let out = c.connected(now, PeerName(2), entry(2));
    let s = sends(&out);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, PeerName(2));
    assert!(matches!(
        s[0].1,
        GossipMsg::Full {
            part: 0,
            parts: 1,
            ..
        }
    ));
    assert_eq!(records_of(s[0].1)[0].conns, vec![entry(2)]);
    assert_eq!(out.last(), Some(&Output::Changed));

    let later = now + SEC;
    let out = c.connected(later, PeerName(3), entry(3));
    let s = sends(&out);
    assert_eq!(s.len(), 2, "full state to 3, our new record to 2");
    assert!(s
        .iter()
        .any(|(to, m)| *to == PeerName(2) && matches!(m, GossipMsg::Delta { .. })));
    // Reconnecting a peer in our view: bucket hashes instead of a full state, no change.
    c.on_message(
        later,
        PeerName(3),
        GossipMsg::Delta {
            records: vec![rec(3, 1, &[1])],
        },
    );
    let out = c.connected(later, PeerName(3), entry(3));
    let s = sends(&out);
    assert_eq!(s.len(), 1);
    assert!(matches!(s[0].1, GossipMsg::Buckets { .. }));
    assert!(!out.contains(&Output::Changed));
    // Never to ourselves.
    assert!(c.connected(now, PeerName(1), entry(1)).is_empty());
}

#[test]
fn deltas_follow_the_owners_tree_and_not_back() {
    // We are 2 in the line 1 - 2 - 3 - 4 (plus 5 hanging off 2).
    let now = Instant::now();
    let mut c = core(2, now);
    for p in [1, 3, 5] {
        c.connected(now, PeerName(p), entry(p));
    }
    let out = c.on_message(
        now,
        PeerName(3),
        GossipMsg::Delta {
            records: vec![
                rec(1, 1, &[2]),
                rec(3, 1, &[2, 4]),
                rec(4, 1, &[3]),
                rec(5, 1, &[2]),
            ],
        },
    );
    assert!(out.contains(&Output::Changed));
    let mut got: BTreeMap<PeerName, Vec<PeerName>> = BTreeMap::new();
    for (to, m) in sends(&out) {
        for r in records_of(m) {
            got.entry(to).or_default().push(r.name);
        }
    }
    // 3's and 4's records go to 1 and 5 (our children in their trees); 1's record goes to 5
    // (not back to 3, who sent it... and 3 is our child in 1's tree, but the sender); 5's to 1.
    assert_eq!(
        got[&PeerName(1)],
        vec![PeerName(3), PeerName(4), PeerName(5)]
    );
    assert_eq!(
        got[&PeerName(5)],
        vec![PeerName(1), PeerName(3), PeerName(4)]
    );
    assert!(!got.contains_key(&PeerName(3)));
    // The same again changes nothing and sends nothing.
    let out = c.on_message(
        now,
        PeerName(1),
        GossipMsg::Delta {
            records: vec![rec(3, 1, &[2, 4])],
        },
    );
    assert!(out.is_empty());
}

#[test]
fn stale_self_goes_back_to_everyone() {
    let now = Instant::now();
    let mut c = core(1, now);
    c.connected(now, PeerName(2), entry(2));
    c.connected(now, PeerName(3), entry(3));
    let mut stale = rec(1, 500, &[7]);
    stale.uid = 42;
    let out = c.on_message(
        now,
        PeerName(2),
        GossipMsg::Delta {
            records: vec![stale],
        },
    );
    let s = sends(&out);
    assert_eq!(s.len(), 2);
    for (_, m) in s {
        let r = &records_of(m)[0];
        assert_eq!((r.name, r.version, r.uid), (PeerName(1), 501, 1000));
    }
}

#[test]
fn disconnect_forgets_what_becomes_unreachable() {
    let now = Instant::now();
    let mut c = core(1, now);
    c.connected(now, PeerName(2), entry(2));
    c.on_message(
        now,
        PeerName(2),
        GossipMsg::Full {
            part: 0,
            parts: 1,
            records: vec![rec(2, 1, &[1, 3]), rec(3, 1, &[2])],
        },
    );
    assert_eq!(c.topology().len(), 3);
    assert_eq!(c.routes().next_hop(PeerName(3)), Some(PeerName(2)));
    let out = c.disconnected(now, PeerName(2));
    assert_eq!(out, vec![Output::Changed], "nobody left to tell");
    assert_eq!(c.topology().len(), 1);
    assert_eq!(c.routes().next_hop(PeerName(3)), None);
    assert_eq!(c.stats().forgotten, 2);
    assert_eq!(c.last_change(), Some(now));
}

#[test]
fn full_state_defers_gc_to_the_last_part() {
    let now = Instant::now();
    let mut c = core(1, now);
    c.connected(now, PeerName(2), entry(2));
    // Part 0 holds 3, whose link to 2 only part 1 confirms.
    let full = |part, records| GossipMsg::Full {
        part,
        parts: 2,
        records,
    };
    c.on_message(now, PeerName(2), full(0, vec![rec(3, 1, &[2])]));
    assert_eq!(c.topology().len(), 2, "kept until the last part");
    c.on_message(now, PeerName(2), full(1, vec![rec(2, 1, &[1, 3])]));
    assert_eq!(c.topology().len(), 3);
}

#[test]
fn usable_changes_reach_routes() {
    let now = Instant::now();
    let mut c = core(1, now);
    c.connected(now, PeerName(2), conn(2, false));
    let mut r2 = rec(2, 1, &[]);
    r2.conns = vec![conn(1, true)];
    c.on_message(now, PeerName(2), GossipMsg::Delta { records: vec![r2] });
    assert_eq!(c.routes().next_hop(PeerName(2)), None);
    let out = c.set_usable(now + SEC, PeerName(2), true);
    assert_eq!(sends(&out).len(), 1);
    assert_eq!(c.routes().next_hop(PeerName(2)), Some(PeerName(2)));
    assert!(c.set_usable(now, PeerName(2), true).is_empty());
    assert!(c.set_usable(now, PeerName(9), true).is_empty());
}

/// We are 1, connected to 2 and 4; 3 hangs off 2.
fn one_with_two_and_four(now: Instant) -> GossipCore {
    let mut c = core(1, now);
    c.connected(now, PeerName(2), entry(2));
    c.connected(now, PeerName(4), entry(4));
    c.on_message(
        now,
        PeerName(4),
        GossipMsg::Delta {
            records: vec![rec(4, 1, &[1])],
        },
    );
    c.on_message(
        now,
        PeerName(2),
        GossipMsg::Delta {
            records: vec![rec(2, 1, &[1])],
        },
    );
    c
}

#[test]
fn a_record_ahead_of_its_link_waits_in_limbo() {
    let now = Instant::now();
    let mut c = one_with_two_and_four(now);
    // 3's record arrives before 2's record that lists 3: unreachable, collected.
    let out = c.on_message(
        now,
        PeerName(2),
        GossipMsg::Delta {
            records: vec![rec(3, 1, &[2])],
        },
    );
    assert!(sends(&out).is_empty());
    assert!(c.topology().get(PeerName(3)).is_none());
    // 2's new record links it: 3 comes back and both go on to 4.
    let out = c.on_message(
        now,
        PeerName(2),
        GossipMsg::Delta {
            records: vec![rec(2, 2, &[1, 3])],
        },
    );
    assert_eq!(c.topology().len(), 4);
    assert_eq!(c.stats().restored, 1);
    let s = sends(&out);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, PeerName(4));
    let names: Vec<PeerName> = records_of(s[0].1).iter().map(|r| r.name).collect();
    assert_eq!(names, vec![PeerName(2), PeerName(3)]);
    // Limbo expires: a record left there too long is gone for good.
    let mut c = one_with_two_and_four(now);
    c.on_message(
        now,
        PeerName(2),
        GossipMsg::Delta {
            records: vec![rec(3, 1, &[2])],
        },
    );
    c.tick(now + 3 * SEC);
    c.on_message(
        now + 3 * SEC,
        PeerName(2),
        GossipMsg::Delta {
            records: vec![rec(2, 2, &[1, 3])],
        },
    );
    assert!(c.topology().get(PeerName(3)).is_none());
}

#[test]
fn a_batch_is_merged_and_passed_on_together() {
    let now = Instant::now();
    let mut c = one_with_two_and_four(now);
    let batch = vec![
        (
            PeerName(2),
            GossipMsg::Delta {
                records: vec![rec(3, 1, &[2])],
            },
        ),
        (
            PeerName(2),
            GossipMsg::Delta {
                records: vec![rec(2, 2, &[1, 3])],
            },
        ),
    ];
    let out = c.on_messages(now, batch);
    let s = sends(&out);
    assert_eq!(s.len(), 1, "one message to 4 with both records");
    assert_eq!(records_of(s[0].1).len(), 2);
    assert_eq!(c.stats().restored, 0, "no detour through limbo");
    assert_eq!(out.last(), Some(&Output::Changed));
}

#[test]
fn own_changes_in_a_burst_are_held_down() {
    let t0 = Instant::now();
    let mut c = one_with_two_and_four(t0);
    // The connections above were made at t0: the first change went out, later ones wait.
    let out = c.connected(t0, PeerName(5), entry(5));
    assert_eq!(sends(&out).len(), 1, "only the full state to 5");
    let out = c.tick(t0 + Duration::from_millis(50));
    assert!(sends(&out).is_empty(), "still within the hold-down");
    let out = c.tick(t0 + Duration::from_millis(100));
    let s = sends(&out);
    assert_eq!(s.len(), 3, "our record to 2, 4 and 5");
    for (_, m) in s {
        assert_eq!(records_of(m)[0].conns.len(), 3);
    }
    // After a quiet period a change goes out at once.
    let out = c.disconnected(t0 + SEC, PeerName(5));
    assert_eq!(sends(&out).len(), 2);
}

/// Delivers messages between two cores until none are left; returns the messages sent.
fn exchange(a: &mut GossipCore, b: &mut GossipCore, now: Instant, first: Vec<Output>) -> usize {
    let an = a.topology().our_name();
    let bn = b.topology().our_name();
    let mut queue: Vec<(PeerName, PeerName, GossipMsg)> = first
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { to, msg } => Some((an, to, msg)),
            Output::Changed => None,
        })
        .collect();
    let mut n = 0;
    while !queue.is_empty() {
        let mut next = Vec::new();
        for (from, to, msg) in queue {
            if to != an && to != bn {
                continue;
            }
            n += 1;
            let core = if to == an { &mut *a } else { &mut *b };
            for o in core.on_message(now, from, msg) {
                if let Output::Send { to: t, msg } = o {
                    next.push((to, t, msg));
                }
            }
        }
        queue = next;
    }
    n
}

#[test]
fn anti_entropy_is_one_message_when_in_sync_and_repairs_otherwise() {
    let t0 = Instant::now();
    let mut a = core(1, t0);
    let mut b = core(2, t0);
    let out = a.connected(t0, PeerName(2), entry(2));
    let out_b = b.connected(t0, PeerName(1), entry(1));
    exchange(&mut a, &mut b, t0, out);
    exchange(&mut b, &mut a, t0, out_b);
    assert_eq!(a.topology().summary(), b.topology().summary());
    // In sync: the summary is the only message.
    let out = a.tick(t0 + 2 * SEC);
    assert_eq!(sends(&out).len(), 1);
    assert_eq!(exchange(&mut a, &mut b, t0, out), 1);
    assert!(a.tick(t0 + 2 * SEC).is_empty(), "not due again yet");
    // b learns of 3 (behind it) and 4 (gone: unreachable, dropped); a misses the delta.
    b.connected(t0, PeerName(3), entry(3));
    b.on_message(
        t0,
        PeerName(3),
        GossipMsg::Delta {
            records: vec![rec(3, 1, &[2]), rec(4, 1, &[])],
        },
    );
    assert_eq!(b.topology().len(), 3);
    assert_ne!(a.topology().summary(), b.topology().summary());
    let out = a.tick(t0 + 4 * SEC);
    let n = exchange(&mut a, &mut b, t0, out);
    assert!(n >= 4, "summary, buckets, digest, records: {n}");
    assert_eq!(a.topology().summary(), b.topology().summary());
    assert_eq!(a.topology().len(), 3);
    assert_eq!(a.routes().next_hop(PeerName(3)), Some(PeerName(2)));
}

#[test]
fn anti_entropy_pulls_newer_records() {
    // The line 1 - 2 - 3 - 4; a is 1, b is 2.
    let t0 = Instant::now();
    let mut a = core(1, t0);
    let mut b = core(2, t0);
    a.connected(t0, PeerName(2), entry(2));
    b.connected(t0, PeerName(1), entry(1));
    b.connected(t0, PeerName(3), entry(3));
    // a holds a newer record of 3 than b, b a newer one of 4: both flow.
    let (old3, new3) = (rec(3, 1, &[2, 4]), rec(3, 2, &[2, 4]));
    let (old4, new4) = (rec(4, 1, &[3]), rec(4, 2, &[3]));
    let b_ours = b.topology().ours().clone();
    let a_ours = a.topology().ours().clone();
    a.on_message(
        t0,
        PeerName(2),
        GossipMsg::Delta {
            records: vec![b_ours, new3.clone(), old4],
        },
    );
    b.on_message(
        t0,
        PeerName(3),
        GossipMsg::Delta {
            records: vec![a_ours, old3, new4.clone()],
        },
    );
    assert_eq!(a.topology().len(), 4);
    assert_eq!(b.topology().len(), 4);
    let out = a.tick(t0 + 2 * SEC);
    exchange(&mut a, &mut b, t0, out);
    assert_eq!(a.topology().get(PeerName(4)), Some(&new4));
    assert_eq!(b.topology().get(PeerName(3)), Some(&new3));
    assert_eq!(a.topology().summary(), b.topology().summary());
}

/// The line 1 - 2 - ... - n+1, without 1's record.
fn many_records(n: u64) -> Vec<PeerRecord> {
    (2..n + 2)
        .map(|i| {
            let conns: Vec<u64> = [i - 1, i + 1].into_iter().filter(|p| *p <= n + 1).collect();
            let mut r = rec(i, i * 7, &conns);
            r.nickname = "x".repeat((i % 50) as usize);
            r
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn chunking_respects_the_byte_limit(n in 1u64..300, max in 600usize..20_000) {
        let t0 = Instant::now();
        let mut c = GossipCore::new(rec(1, 1, &[]), 1, SEC, t0).with_max_message_bytes(max);
        c.connected(t0, PeerName(2), ConnEntry { peer: PeerName(2), addr: addr(2), usable: true });
        c.on_message(t0, PeerName(2), GossipMsg::Delta { records: many_records(n) });
        prop_assert_eq!(c.topology().len() as u64, n + 1);
        // A new peer gets the full state.
        let out = c.connected(t0, PeerName(1000), entry(1000));
        let mut seen = BTreeSet::new();
        let mut parts = Vec::new();
        for (_, m) in sends(&out) {
            prop_assert!(serde_json::to_vec(m).unwrap().len() <= max);
            if let GossipMsg::Full { part, parts: total, records } = m {
                parts.push((*part, *total));
                for r in records {
                    prop_assert!(seen.insert(r.name));
                }
            }
        }
        prop_assert_eq!(seen.len() as u64, n + 1);
        let total = parts.len() as u32;
        for (i, (part, t)) in parts.iter().enumerate() {
            prop_assert_eq!((*part, *t), (i as u32, total));
        }
        // Anti-entropy answers respect the limit too.
        let buckets = c.on_message(t0, PeerName(2), GossipMsg::Buckets { hashes: vec![0; SUMMARY_BUCKETS] });
        prop_assert!(!sends(&buckets).is_empty());
        let mut digested = 0;
        for (_, m) in sends(&buckets) {
            prop_assert!(serde_json::to_vec(m).unwrap().len() <= max);
            if let GossipMsg::Digest { entries, .. } = m {
                digested += entries.len();
            }
        }
        prop_assert_eq!(digested as u64, n + 1);
        let names: Vec<PeerName> = (0..n + 2).map(PeerName).collect();
        let out = c.on_message(t0, PeerName(2), GossipMsg::Request { names });
        let mut answered = 0;
        for (_, m) in sends(&out) {
            prop_assert!(serde_json::to_vec(m).unwrap().len() <= max);
            answered += records_of(m).len();
        }
        prop_assert_eq!(answered as u64, n + 1);
    }
}

#[test]
fn oversize_record_is_left_out() {
    let t0 = Instant::now();
    let mut c = GossipCore::new(rec(1, 1, &[]), 1, SEC, t0).with_max_message_bytes(300);
    for p in 2..20 {
        c.connected(t0, PeerName(p), entry(p));
    }
    let out = c.connected(t0, PeerName(30), entry(30));
    assert!(sends(&out).is_empty());
    assert!(c.stats().oversize > 0);
}
