//! Engine tests: byte arrays in, actions out. No sockets, no namespaces.
//!
//! The fabric of most tests, seen from peer 1 ("me"):
//!
//! * 2 (A) and 3 (B): sleeve neighbours; 4 (F): a neighbour on the kernel fast path;
//! * 5 (R): reached through B only; 6 (S): a neighbour we have a session with.
//! * Broadcast trees: ours to A, B, F and S (F is left out: fast); A's to B and F; R's to A.

use super::*;
use crate::wire::{Caps, Error};
use proptest::prelude::*;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
struct P {
    name: PeerName,
    addr: Option<SocketAddr>,
    fast: bool,
    enc: bool,
    tag: &'static str,
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
const A: PeerName = PeerName(2);
const B: PeerName = PeerName(3);
const F: PeerName = PeerName(4);
const R: PeerName = PeerName(5);
const S: PeerName = PeerName(6);

fn addr(last: u8) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, last), 6783))
}

fn peer(name: PeerName, a: Option<u8>) -> P {
    P {
        name,
        addr: a.map(addr),
        fast: false,
        enc: false,
        tag: "",
    }
}

fn fabric() -> Fabric<P> {
    let entries = vec![
        peer(A, Some(2)),
        peer(B, Some(3)),
        P {
            fast: true,
            ..peer(F, Some(4))
        },
        peer(R, None),
        P {
            enc: true,
            ..peer(S, Some(6))
        },
    ];
    Fabric::new(
        entries,
        &[(A, A), (B, B), (F, F), (R, B), (S, S)],
        &[(ME, vec![A, B, F, S]), (A, vec![B, F]), (R, vec![A])],
    )
}

fn engine(encrypted: bool) -> (Engine, Instant) {
    let epoch = Instant::now();
    (Engine::new(ME, encrypted, epoch), epoch)
}

/// A plain sleeve datagram: version 1, `kind`, `ttl`, no flags, `src`, `dst`, then `body`.
fn dgram(kind: u8, ttl: u8, src: u64, dst: u64, body: &[u8]) -> Vec<u8> {
    let mut d = vec![1, kind, ttl, 0];
    d.extend_from_slice(&src.to_be_bytes());
    d.extend_from_slice(&dst.to_be_bytes());
    d.extend_from_slice(body);
    d
}

/// One frames record of three bytes.
const RECORD: [u8; 5] = [0x00, 0x03, 0xaa, 0xbb, 0xcc];

fn names<'f>(c: impl Iterator<Item = (&'f P, SocketAddr)>) -> Vec<(PeerName, SocketAddr)> {
    c.map(|(p, a)| (p.name, a)).collect()
}

/// `inspect` then `decide`, as the router does for a datagram in clear.
fn receive<'f>(
    e: &Engine,
    f: &'f Fabric<P>,
    d: &mut [u8],
    from: SocketAddr,
    now: Instant,
) -> Action<'f, P> {
    match e.inspect(f, d, from) {
        Inspected::Plain { header } => e.decide(f, header, d, from, now),
        other => panic!("not plain: {other:?}"),
    }
}

fn dropped(a: &Action<'_, P>) -> Option<(Discard, Option<PeerName>)> {
    match a {
        Action::Drop { reason, peer } => Some((*reason, peer.map(|p| p.name))),
        _ => None,
    }
}

#[test]
fn fabric_routes_and_trees() {
    let f = fabric();
    assert_eq!(f.entries().len(), 5);
    assert_eq!(f.next_hop(R).map(|(p, a)| (p.name, a)), Some((B, addr(3))));
    assert_eq!(f.next_hop(A).map(|(p, a)| (p.name, a)), Some((A, addr(2))));
    assert!(f.next_hop(PeerName(9)).is_none());
    // Fast-path neighbours never get sleeve floods; relayed peers are no children.
    assert_eq!(
        names(f.children(ME)),
        vec![(A, addr(2)), (B, addr(3)), (S, addr(6))]
    );
    assert_eq!(names(f.children(A)), vec![(B, addr(3))]);
    assert!(f.children(B).is_empty());
    let (e, _) = engine(false);
    assert_eq!(names(e.flood(&f)), names(f.children(ME)));
    assert!(f.is_neighbour(A) && !f.is_neighbour(R) && !f.is_neighbour(PeerName(9)));
    assert_eq!(f.by_addr(addr(3)).map(|p| p.name), Some(B));
    // By address first, by name for a sender whose address we do not know.
    assert_eq!(f.sender(addr(3), A).map(|p| p.name), Some(B));
    assert_eq!(f.sender(addr(99), A).map(|p| p.name), Some(A));
    assert!(f.sender(addr(99), PeerName(9)).is_none());
}

#[test]
fn fabric_ignores_unknown_names_relay_hops_and_duplicates() {
    let first = P {
        tag: "first",
        ..peer(A, Some(2))
    };
    let f = Fabric::new(
        vec![first, peer(A, Some(7)), peer(R, None), peer(B, None)],
        // A route through a peer without an address, and names nobody knows.
        &[(R, B), (PeerName(9), A), (A, PeerName(9))],
        &[(ME, vec![A, B, PeerName(9)])],
    );
    assert_eq!(f.entries().len(), 3);
    assert_eq!(f.get(A).unwrap().tag, "first");
    assert!(f.next_hop(R).is_none());
    assert!(f.next_hop(A).is_none(), "no route given");
    assert_eq!(names(f.children(ME)), vec![(A, addr(2))]);
    // `direct`: everyone its own next hop, our floods to all, in the order given.
    let d = Fabric::direct(ME, vec![peer(B, Some(3)), peer(A, Some(2))]);
    assert_eq!(d.next_hop(B).map(|(p, _)| p.name), Some(B));
    assert_eq!(names(d.children(ME)), vec![(B, addr(3)), (A, addr(2))]);
    assert!(Fabric::<P>::default().entries().is_empty());
}

#[test]
fn unicast_routes_for_local_frames() {
    use crate::switch::Decision;
    let f = fabric();
    let r = f.unicast_route(Decision::Unicast(A)).unwrap();
    assert!(r.is_direct() && !r.is_fast());
    let r = f.unicast_route(Decision::Unicast(R)).unwrap();
    assert_eq!((r.hop.name, r.addr, r.dst.name), (B, addr(3), R));
    assert!(!r.is_direct() && !r.is_fast());
    let r = f.unicast_route(Decision::Unicast(F)).unwrap();
    assert!(r.is_fast());
    assert!(f.sleeve_route(Decision::Unicast(F)).is_none());
    assert!(f.sleeve_route(Decision::Unicast(A)).is_some());
    assert!(f.unicast_route(Decision::Flood).is_none());
    assert!(f.unicast_route(Decision::Unicast(PeerName(9))).is_none());
}

#[test]
fn relays_with_ttl_minus_one_to_the_next_hop() {
    let (e, now) = engine(false);
    let f = fabric();
    let mut d = dgram(1, 8, 2, 5, &RECORD);
    let before = d.clone();
    match receive(&e, &f, &mut d, addr(2), now) {
        Action::Relay {
            origin,
            hop,
            addr: a,
        } => {
            assert_eq!((origin.name, hop.name, a), (A, B, addr(3)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d[2], 7);
    assert_eq!(d[..2], before[..2]);
    assert_eq!(d[3..], before[3..]);
    // Heartbeats for others are relayed like anything else.
    let mut hb = dgram(2, 2, 2, 5, &[0; 17]);
    assert!(matches!(
        receive(&e, &f, &mut hb, addr(2), now),
        Action::Relay { .. }
    ));
    assert_eq!(hb[2], 1);
}

#[test]
fn ttl_expiry_and_no_route_count_on_the_origin() {
    let (e, now) = engine(false);
    let f = fabric();
    for ttl in [0, 1] {
        let mut d = dgram(1, ttl, 2, 5, &RECORD);
        let a = receive(&e, &f, &mut d, addr(2), now);
        assert_eq!(dropped(&a), Some((Discard::TtlExpired, Some(A))));
        assert_eq!(d[2], ttl, "left alone");
    }
    // From B (named R, relayed through B) to nobody we know.
    let mut d = dgram(1, 8, 5, 9, &RECORD);
    let a = receive(&e, &f, &mut d, addr(3), now);
    assert_eq!(dropped(&a), Some((Discard::NoRoute, Some(R))));
}

#[test]
fn unknown_peers() {
    let (e, now) = engine(false);
    let f = fabric();
    // Plain cluster: a stranger's datagram passes the first look, but its source is unknown.
    let mut d = dgram(1, 8, 9, 1, &RECORD);
    let a = receive(&e, &f, &mut d, addr(99), now);
    assert_eq!(dropped(&a), Some((Discard::UnknownPeer, None)));
    // From a neighbour's address but naming a stranger as source.
    let mut d = dgram(1, 8, 9, 1, &RECORD);
    let a = receive(&e, &f, &mut d, addr(2), now);
    assert_eq!(dropped(&a), Some((Discard::UnknownPeer, None)));
    // Encrypted cluster: refused at the first look.
    let (e, _) = engine(true);
    let d = dgram(1, 8, 9, 1, &RECORD);
    assert!(matches!(
        e.inspect(&f, &d, addr(99)),
        Inspected::Drop {
            reason: Discard::UnknownPeer,
            peer: None
        }
    ));
    // But a known neighbour without a session may still send in clear.
    assert!(matches!(
        e.inspect(&f, &d, addr(2)),
        Inspected::Plain { .. }
    ));
}

/// The clear parts of an encrypted datagram from `src` to us (flags 0x01), an epoch, a counter
/// and a tag's worth of bytes: 45 bytes, the shortest there is.
fn sealed(src: u64, version: u8) -> Vec<u8> {
    let mut d = dgram(1, 8, src, 1, &[0; 25]);
    d[0] = version;
    d[3] = 0x01;
    d
}

#[test]
fn encrypted_versus_plain() {
    let (e, _) = engine(true);
    let f = fabric();
    // Sealed from a neighbour with a session: open it with that session.
    match e.inspect(&f, &sealed(6, 1), addr(6)) {
        Inspected::Sealed { header, hop } => {
            assert_eq!(
                (header.src, header.dst, header.ttl, hop.name),
                (S, ME, 8, S)
            );
        }
        other => panic!("{other:?}"),
    }
    // Sealed from a neighbour without one, or from nobody we know.
    let no_key = e.inspect(&f, &sealed(2, 1), addr(2));
    assert!(matches!(
        no_key,
        Inspected::Drop {
            reason: Discard::NoSession,
            peer: Some(P { name: A, .. })
        }
    ));
    assert!(matches!(
        e.inspect(&f, &sealed(9, 1), addr(99)),
        Inspected::Drop {
            reason: Discard::UnknownPeer,
            peer: None
        }
    ));
    // In clear from a neighbour that must encrypt: refused and counted on it, whichever
    // source it names; the neighbour is the one at the address.
    for src in [6, 2] {
        let d = dgram(1, 8, src, 1, &RECORD);
        assert!(matches!(
            e.inspect(&f, &d, addr(6)),
            Inspected::Drop {
                reason: Discard::Unencrypted,
                peer: Some(P { name: S, .. })
            }
        ));
    }
    // An unconfirmed address: the neighbour it names.
    let d = dgram(1, 8, 6, 1, &RECORD);
    assert!(matches!(
        e.inspect(&f, &d, addr(77)),
        Inspected::Drop {
            reason: Discard::Unencrypted,
            ..
        }
    ));
}

#[test]
fn malformed_and_unsupported_versions() {
    let (e, _) = engine(false);
    let f = fabric();
    let drop_reason = |d: &[u8]| match e.inspect(&f, d, addr(2)) {
        Inspected::Drop { reason, peer: None } => Some(reason),
        _ => None,
    };
    let good = dgram(1, 8, 2, 1, &RECORD);
    assert_eq!(drop_reason(&good[..19]), Some(Discard::Malformed));
    let mut v2 = good.clone();
    v2[0] = 2;
    assert_eq!(drop_reason(&v2), Some(Discard::UnsupportedVersion));
    let mut kind = good.clone();
    kind[1] = 9;
    assert_eq!(drop_reason(&kind), Some(Discard::Malformed));
    // Encrypted: every header fault is "malformed", a wrong version too.
    assert_eq!(drop_reason(&sealed(2, 2)), Some(Discard::Malformed));
    assert_eq!(drop_reason(&sealed(2, 1)[..44]), Some(Discard::Malformed));
}

#[test]
fn broadcasts_go_down_the_tree_before_delivery() {
    let (e, now) = engine(false);
    let f = fabric();
    let mut d = dgram(1, 8, 2, 0, &RECORD);
    match receive(&e, &f, &mut d, addr(2), now) {
        Action::Deliver { origin, flood } => {
            assert_eq!(origin.name, A);
            // F is on the fast path: its kernel floods reach it, the sleeve's must not.
            assert_eq!(names(flood), vec![(B, addr(3))]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d[2], 7);
    // No hops left: delivered, not passed on, ttl untouched.
    let mut d = dgram(1, 1, 2, 0, &RECORD);
    match receive(&e, &f, &mut d, addr(2), now) {
        Action::Deliver { flood, .. } => assert!(flood.is_empty()),
        other => panic!("{other:?}"),
    }
    assert_eq!(d[2], 1);
    // A source with no children here (we are a leaf of its tree).
    let mut d = dgram(1, 8, 3, 0, &RECORD);
    match receive(&e, &f, &mut d, addr(3), now) {
        Action::Deliver { flood, .. } => assert!(flood.is_empty()),
        other => panic!("{other:?}"),
    }
    assert_eq!(d[2], 8);
    // Unicast for us: delivered, never passed on.
    let mut d = dgram(1, 8, 2, 1, &RECORD);
    match receive(&e, &f, &mut d, addr(2), now) {
        Action::Deliver { origin, flood } => {
            assert_eq!(origin.name, A);
            assert!(flood.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d[2], 8);
}

/// A heartbeat from A (peer 2) to us (peer 1): sequence 5, sent at 0x1122 µs, capability byte 0.
#[rustfmt::skip]
const HEARTBEAT: [u8; 37] = [
    0x01, 0x02, 0x01, 0x00, // version, kind = heartbeat, ttl 1, flags
    0, 0, 0, 0, 0, 0, 0, 2, // src
    0, 0, 0, 0, 0, 0, 0, 1, // dst
    0, 0, 0, 0, 0, 0, 0, 5, // seq
    0, 0, 0, 0, 0, 0, 0x11, 0x22, // sent_us
    0x00, // capability byte
];

/// Our answer to it: kind = answer, from us to A, the body echoed, our capabilities.
#[rustfmt::skip]
const ANSWER: [u8; 37] = [
    0x01, 0x03, 0x01, 0x00,
    0, 0, 0, 0, 0, 0, 0, 1,
    0, 0, 0, 0, 0, 0, 0, 2,
    0, 0, 0, 0, 0, 0, 0, 5,
    0, 0, 0, 0, 0, 0, 0x11, 0x22,
    0x03, // CSUM_PARTIAL | LANES
];

#[test]
fn heartbeats_are_answered_in_place_with_our_capabilities() {
    let (e, now) = engine(false);
    let f = fabric();
    let mut d = HEARTBEAT;
    // From an address NAT rewrote: answered there, and that address remembered.
    match receive(&e, &f, &mut d, addr(200), now) {
        Action::Answer { origin, to, len } => {
            assert_eq!((origin.name, to, len), (A, addr(200), 37));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d, ANSWER);
}

#[test]
fn old_sixteen_byte_heartbeats_get_sixteen_bytes_back() {
    let (e, now) = engine(false);
    let f = fabric();
    let mut d = HEARTBEAT[..36].to_vec();
    match receive(&e, &f, &mut d, addr(2), now) {
        Action::Answer { len, .. } => assert_eq!(len, 36),
        other => panic!("{other:?}"),
    }
    assert_eq!(d[..], ANSWER[..36]);
    // A longer body: the 17th byte is the capability byte, the rest not sent back.
    let mut d = HEARTBEAT.to_vec();
    d.extend_from_slice(&[0xee; 3]);
    match receive(&e, &f, &mut d, addr(2), now) {
        Action::Answer { len, .. } => assert_eq!(len, 37),
        other => panic!("{other:?}"),
    }
    assert_eq!(d[..37], ANSWER[..]);
}

#[test]
fn heartbeats_not_for_us_or_too_short_are_ignored() {
    let (e, now) = engine(false);
    let f = fabric();
    let mut short = HEARTBEAT[..35].to_vec();
    assert!(matches!(
        receive(&e, &f, &mut short, addr(2), now),
        Action::Ignore
    ));
    assert_eq!(short[..], HEARTBEAT[..35], "untouched");
    // To broadcast: neither relayed nor answered.
    let mut bcast = HEARTBEAT;
    bcast[12..20].fill(0);
    assert!(matches!(
        receive(&e, &f, &mut bcast, addr(2), now),
        Action::Ignore
    ));
    // For someone else with ttl 1: spent.
    let mut other = HEARTBEAT;
    other[19] = 5;
    let a = receive(&e, &f, &mut other, addr(2), now);
    assert_eq!(dropped(&a), Some((Discard::TtlExpired, Some(A))));
}

#[test]
fn heartbeat_answers_give_rtt_and_capabilities() {
    let (e, epoch) = engine(false);
    let f = fabric();
    let now = epoch + Duration::from_micros(0x1122 + 700);
    let mut ack = ANSWER;
    // The answer as A would send it to us.
    ack[4..12].copy_from_slice(&2u64.to_be_bytes());
    ack[12..20].copy_from_slice(&1u64.to_be_bytes());
    match receive(&e, &f, &mut ack, addr(2), now) {
        Action::Ack {
            origin,
            rtt_us,
            caps,
        } => {
            assert_eq!((origin.name, rtt_us, caps), (A, 700, OUR_CAPS));
        }
        other => panic!("{other:?}"),
    }
    // An old build's 16-byte answer: no capabilities.
    match receive(&e, &f, &mut ack[..36].to_vec(), addr(2), now) {
        Action::Ack { caps, .. } => assert_eq!(caps, Caps::NONE),
        other => panic!("{other:?}"),
    }
    // A clock that went backwards reads as zero, not as a huge time.
    match receive(&e, &f, &mut ack.to_vec(), addr(2), epoch) {
        Action::Ack { rtt_us, .. } => assert_eq!(rtt_us, 0),
        other => panic!("{other:?}"),
    }
    // Too short, or to broadcast: ignored.
    assert!(matches!(
        receive(&e, &f, &mut ack[..35].to_vec(), addr(2), now),
        Action::Ignore
    ));
    let mut bcast = ack;
    bcast[12..20].fill(0);
    assert!(matches!(
        receive(&e, &f, &mut bcast, addr(2), now),
        Action::Ignore
    ));
}

#[test]
fn heartbeats_are_written_with_a_zero_capability_byte() {
    let (e, epoch) = engine(false);
    let mut buf = [0xffu8; 40];
    let n = e
        .heartbeat(
            PeerName(2),
            5,
            epoch + Duration::from_micros(0x1122),
            &mut buf,
        )
        .unwrap();
    assert_eq!(n, HEARTBEAT_LEN);
    // HEARTBEAT is from 2 to 1; this one is from 1 to 2.
    let mut want = HEARTBEAT;
    want[4..12].copy_from_slice(&1u64.to_be_bytes());
    want[12..20].copy_from_slice(&2u64.to_be_bytes());
    assert_eq!(buf[..37], want);
    assert_eq!(buf[37..], [0xff; 3]);
    assert_eq!(
        e.heartbeat(PeerName(2), 5, epoch, &mut [0u8; 36]),
        Err(Error::BufferTooSmall)
    );
}

#[test]
fn delivery_walks_records() {
    // Two records, then one claiming more than is left.
    let mut body = RECORD.to_vec();
    body.extend_from_slice(&[0x00, 0x01, 0xdd]);
    body.extend_from_slice(&[0x00, 0x09, 0xee]);
    let mut d = dgram(1, 8, 2, 1, &body);
    let got: Vec<_> = Delivery::new(&d, 3).unwrap().collect();
    assert_eq!(
        got,
        vec![
            Ok(&[0xaa, 0xbb, 0xcc][..]),
            Ok(&[0xdd][..]),
            Err(Discard::TruncatedRecord)
        ]
    );
    // Frames over the limit are skipped, the walk goes on.
    let got: Vec<_> = Delivery::new(&d, 2).unwrap().collect();
    assert_eq!(got[0], Err(Discard::OversizeFrame));
    assert_eq!(got[1], Ok(&[0xdd][..]));
    assert!(!Delivery::new(&d, 3).unwrap().csum_partial());
    d[3] = 0x02;
    assert!(Delivery::new(&d, 3).unwrap().csum_partial());
    // An empty record ends the walk too.
    let d = dgram(1, 8, 2, 1, &[0x00, 0x00, 0xaa]);
    let got: Vec<_> = Delivery::new(&d, 3).unwrap().collect();
    assert_eq!(got, vec![Err(Discard::TruncatedRecord)]);
    assert!(Delivery::new(&d[..19], 3).is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever arrives, from wherever: no panic, and a relay changes the ttl byte only.
    #[test]
    fn receive_never_panics_and_relays_change_only_the_ttl(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..80),
        kind in 1u8..4,
        ttl: u8,
        src in 0u64..8,
        dst in 0u64..8,
        from in 0u8..8,
        encrypted: bool,
    ) {
        let (e, now) = engine(encrypted);
        let f = fabric();
        if bytes.len() >= 20 && bytes[0] % 2 == 0 {
            // Half of the long inputs get a valid header.
            bytes[..4].copy_from_slice(&[1, kind, ttl, 0]);
            bytes[4..12].copy_from_slice(&src.to_be_bytes());
            bytes[12..20].copy_from_slice(&dst.to_be_bytes());
        }
        let before = bytes.clone();
        if let Inspected::Plain { header } = e.inspect(&f, &bytes, addr(from)) {
            let action = e.decide(&f, header, &mut bytes, addr(from), now);
            if let Action::Relay { hop, .. } = action {
                prop_assert!(hop.addr.is_some());
                prop_assert_eq!(bytes[2], before[2] - 1);
                prop_assert_eq!(&bytes[..2], &before[..2]);
                prop_assert_eq!(&bytes[3..], &before[3..]);
            }
        }
    }
}
