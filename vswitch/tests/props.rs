//! Property tests: every format round-trips through emit and parse, and no decoder, builder or
//! switching entry point panics on arbitrary bytes.

use proptest::collection::vec;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};
use vswitch::fdb::{Fdb, Location};
use vswitch::switch::{Decision, Switch};
use vswitch::wire::checksum;
use vswitch::wire::ethernet::{self, EtherType, EthernetFrame, EthernetRepr, MacAddr};
use vswitch::wire::icmp::{self, too_big_reply, TooBig};
use vswitch::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use vswitch::wire::ipv6::{Ipv6Packet, Ipv6Repr};
use vswitch::wire::sleeve::{self, push_frame, PeerName, SleeveDatagram, SleeveHeader, SleeveKind};
use vswitch::wire::Error;

fn mac() -> impl Strategy<Value = MacAddr> {
    any::<[u8; 6]>().prop_map(MacAddr)
}

fn unicast_mac() -> impl Strategy<Value = MacAddr> {
    any::<[u8; 6]>().prop_map(|mut b| {
        b[0] &= 0xfe;
        b[5] |= 1; // never all zeroes
        MacAddr(b)
    })
}

/// A unicast IPv4 address: first octet 1..=223 except 127.
fn unicast_v4() -> impl Strategy<Value = [u8; 4]> {
    (1u8..223, any::<[u8; 3]>())
        .prop_map(|(a, r)| [if a == 127 { 10 } else { a }, r[0], r[1], r[2]])
}

/// A unicast IPv6 address whose first byte is `first` (0xfd: unique local, 0x20: global).
fn unicast_v6(first: u8) -> impl Strategy<Value = [u8; 16]> {
    any::<[u8; 16]>().prop_map(move |mut a| {
        a[0] = first;
        a
    })
}

fn kind() -> impl Strategy<Value = SleeveKind> {
    prop_oneof![
        Just(SleeveKind::Frames),
        Just(SleeveKind::Heartbeat),
        Just(SleeveKind::HeartbeatAck),
    ]
}

fn header() -> impl Strategy<Value = SleeveHeader> {
    (kind(), any::<u8>(), 1..=u64::MAX, any::<u64>()).prop_map(|(kind, ttl, src, dst)| {
        SleeveHeader {
            kind,
            ttl,
            src: PeerName(src),
            dst: PeerName(dst),
        }
    })
}

fn ipv4_repr() -> impl Strategy<Value = Ipv4Repr> {
    (
        any::<[u8; 4]>(),
        any::<[u8; 4]>(),
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<bool>(),
        0usize..=65_515,
    )
        .prop_map(
            |(src, dst, protocol, ttl, tos, dont_frag, payload_len)| Ipv4Repr {
                src_addr: Ipv4Addr::from(src),
                dst_addr: Ipv4Addr::from(dst),
                protocol,
                ttl,
                tos,
                dont_frag,
                payload_len,
            },
        )
}

fn ipv6_repr() -> impl Strategy<Value = Ipv6Repr> {
    (
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<u8>(),
        any::<u8>(),
        0usize..=65_535,
    )
        .prop_map(|(src, dst, next_header, hop_limit, payload_len)| Ipv6Repr {
            src_addr: Ipv6Addr::from(src),
            dst_addr: Ipv6Addr::from(dst),
            next_header,
            hop_limit,
            payload_len,
        })
}

/// Touches every accessor of every view that accepts `bytes`.
fn decode_everything(bytes: &[u8]) {
    if let Ok(f) = EthernetFrame::new_checked(bytes) {
        let _ = (f.dst(), f.src(), f.ethertype(), f.payload().len());
        let _ = EthernetRepr::parse(&f);
    }
    if let Ok(d) = SleeveDatagram::new_checked(bytes) {
        let _ = (d.header(), d.body().len());
        for f in d.frames() {
            let _ = f.map(<[u8]>::len);
        }
    }
    if let Ok(p) = Ipv4Packet::new_checked(bytes) {
        let _ = (
            p.version(),
            p.header_len(),
            p.tos(),
            p.total_len(),
            p.ident(),
        );
        let _ = (
            p.dont_frag(),
            p.more_frags(),
            p.frag_offset(),
            p.ttl(),
            p.protocol(),
        );
        let _ = (
            p.checksum(),
            p.src_addr(),
            p.dst_addr(),
            p.verify_checksum(),
        );
        let _ = (p.header().len(), p.payload().len(), p.packet().len());
        let _ = Ipv4Repr::parse(&p);
    }
    if let Ok(p) = Ipv6Packet::new_checked(bytes) {
        let _ = (
            p.version(),
            p.traffic_class(),
            p.flow_label(),
            p.payload_len(),
        );
        let _ = (p.next_header(), p.hop_limit(), p.src_addr(), p.dst_addr());
        let _ = (p.payload().len(), p.packet().len(), p.upper_layer());
        let _ = Ipv6Repr::parse(&p);
    }
}

proptest! {
    #[test]
    fn sleeve_header_round_trips(h in header(), body in vec(any::<u8>(), 0..64)) {
        let mut buf = vec![0u8; sleeve::HEADER_LEN + body.len()];
        prop_assert_eq!(h.emit(&mut buf), Ok(sleeve::HEADER_LEN));
        buf[sleeve::HEADER_LEN..].copy_from_slice(&body);
        let d = SleeveDatagram::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(d.header(), h);
        prop_assert_eq!(d.body(), &body[..]);
    }

    #[test]
    fn sleeve_frames_round_trip(
        src in 1..=u64::MAX,
        dst in any::<u64>(),
        frames in vec(vec(any::<u8>(), 1..300), 0..8),
    ) {
        let h = SleeveHeader::frames(PeerName(src), PeerName(dst));
        let mut buf = vec![0u8; 4096];
        let mut len = h.emit(&mut buf).unwrap();
        for f in &frames {
            len = push_frame(&mut buf, len, f).unwrap();
        }
        let d = SleeveDatagram::new_checked(&buf[..len]).unwrap();
        prop_assert_eq!(d.header(), h);
        let parsed: Vec<Vec<u8>> = d.frames().map(|f| f.unwrap().to_vec()).collect();
        prop_assert_eq!(parsed, frames);
    }

    #[test]
    fn push_frame_never_overflows(
        cap in 0usize..128,
        start in 0usize..160,
        frame in vec(any::<u8>(), 0..200),
    ) {
        let mut buf = vec![0u8; cap];
        match push_frame(&mut buf, start, &frame) {
            Ok(end) => {
                prop_assert_eq!(end, start + 2 + frame.len());
                prop_assert!(end <= cap);
            }
            Err(e) => prop_assert!(e == Error::BufferTooSmall || e == Error::Malformed),
        }
    }

    #[test]
    fn ethernet_repr_round_trips(
        dst in mac(),
        src in mac(),
        ethertype in any::<u16>(),
        payload in vec(any::<u8>(), 0..32),
    ) {
        let repr = EthernetRepr { dst, src, ethertype: EtherType::from(ethertype) };
        let mut buf = vec![0u8; ethernet::HEADER_LEN + payload.len()];
        repr.emit(&mut buf).unwrap();
        buf[ethernet::HEADER_LEN..].copy_from_slice(&payload);
        let f = EthernetFrame::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(EthernetRepr::parse(&f), repr);
        prop_assert_eq!(f.payload(), &payload[..]);
    }

    #[test]
    fn ipv4_repr_round_trips(repr in ipv4_repr()) {
        let mut buf = vec![0u8; 20 + repr.payload_len];
        prop_assert_eq!(repr.emit(&mut buf), Ok(20));
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        prop_assert!(p.verify_checksum());
        prop_assert_eq!(Ipv4Repr::parse(&p), Ok(repr));
    }

    #[test]
    fn ipv6_repr_round_trips(repr in ipv6_repr()) {
        let mut buf = vec![0u8; 40 + repr.payload_len];
        prop_assert_eq!(repr.emit(&mut buf), Ok(40));
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(Ipv6Repr::parse(&p), repr);
    }

    #[test]
    fn decoders_never_panic(bytes in vec(any::<u8>(), 0..200)) {
        decode_everything(&bytes);
    }

    #[test]
    fn decoders_never_panic_on_plausible_headers(
        first in prop_oneof![Just(0x45u8), Just(0x46), Just(0x4f), Just(0x60), Just(0x01)],
        mut bytes in vec(any::<u8>(), 0..200),
    ) {
        // Random bytes rarely pass the version check; start some with a valid first byte.
        if let Some(b) = bytes.first_mut() {
            *b = first;
        }
        decode_everything(&bytes);
    }

    #[test]
    fn too_big_reply_never_panics(
        dst in mac(),
        src in mac(),
        ethertype in prop_oneof![Just(0x0800u16), Just(0x86dd), any::<u16>()],
        first in prop_oneof![Just(0x45u8), Just(0x60), any::<u8>()],
        mut rest in vec(any::<u8>(), 0..1600),
        mtu in any::<u32>(),
        out_len in prop_oneof![Just(icmp::MAX_REPLY_LEN), 0usize..700],
    ) {
        if let Some(b) = rest.first_mut() {
            *b = first;
        }
        let mut frame = Vec::with_capacity(14 + rest.len());
        frame.extend_from_slice(&dst.0);
        frame.extend_from_slice(&src.0);
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(&rest);
        let mut out = vec![0u8; out_len];
        match too_big_reply(&frame, mtu, &mut out) {
            Ok(TooBig::Reply(n)) => prop_assert!(n <= out_len && n <= icmp::MAX_REPLY_LEN),
            Ok(TooBig::NoReply) => {}
            Err(e) => {
                prop_assert_eq!(e, Error::BufferTooSmall);
                prop_assert!(out_len < icmp::MAX_REPLY_LEN);
            }
        }
        // Arbitrary bytes, no Ethernet structure at all.
        let _ = too_big_reply(&rest, mtu, &mut out);
    }

    #[test]
    fn ipv4_df_packets_get_valid_replies(
        src in unicast_v4(),
        dst in unicast_v4(),
        protocol in prop_oneof![Just(6u8), Just(17), Just(47)],
        payload in vec(any::<u8>(), 0..1600),
        mtu in 576u32..9000,
        emac in unicast_mac(),
        smac in unicast_mac(),
    ) {
        let repr = Ipv4Repr {
            src_addr: Ipv4Addr::from(src),
            dst_addr: Ipv4Addr::from(dst),
            protocol,
            ttl: 64,
            tos: 0,
            dont_frag: true,
            payload_len: payload.len(),
        };
        let mut frame = vec![0u8; 14 + 20 + payload.len()];
        EthernetRepr { dst: emac, src: smac, ethertype: EtherType::Ipv4 }.emit(&mut frame).unwrap();
        repr.emit(&mut frame[14..]).unwrap();
        frame[34..].copy_from_slice(&payload);
        let mut out = [0u8; icmp::MAX_REPLY_LEN];
        let Ok(TooBig::Reply(n)) = too_big_reply(&frame, mtu, &mut out) else {
            return Err(TestCaseError::fail("no reply"));
        };
        let quoted = (20 + payload.len()).min(icmp::IPV4_QUOTE_MAX);
        prop_assert_eq!(n, 14 + 20 + 8 + quoted);
        let e = EthernetFrame::new_checked(&out[..n]).unwrap();
        prop_assert_eq!((e.dst(), e.src()), (smac, emac));
        let ip = Ipv4Packet::new_checked(e.payload()).unwrap();
        prop_assert!(ip.verify_checksum());
        prop_assert_eq!((ip.src_addr(), ip.dst_addr()), (repr.dst_addr, repr.src_addr));
        prop_assert!(checksum::verify(ip.payload()));
        prop_assert_eq!(&ip.payload()[8..], &frame[14..14 + quoted]);
        // Without DF: no reply.
        frame[14 + 6] = 0;
        frame[14 + 10..14 + 12].fill(0);
        let c = checksum::checksum(&frame[14..34]);
        frame[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
        prop_assert_eq!(too_big_reply(&frame, mtu, &mut out), Ok(TooBig::NoReply));
    }

    #[test]
    fn ipv6_packets_get_valid_replies(
        src in unicast_v6(0xfd),
        dst in unicast_v6(0x20),
        payload in vec(any::<u8>(), 0..1600),
        mtu in 1280u32..9000,
    ) {
        let repr = Ipv6Repr {
            src_addr: Ipv6Addr::from(src),
            dst_addr: Ipv6Addr::from(dst),
            next_header: 17,
            hop_limit: 64,
            payload_len: payload.len(),
        };
        let mut frame = vec![0u8; 14 + 40 + payload.len()];
        EthernetRepr {
            dst: MacAddr([2, 0, 0, 0, 0, 2]),
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            ethertype: EtherType::Ipv6,
        }
        .emit(&mut frame)
        .unwrap();
        repr.emit(&mut frame[14..]).unwrap();
        frame[54..].copy_from_slice(&payload);
        let mut out = [0u8; icmp::MAX_REPLY_LEN];
        let Ok(TooBig::Reply(n)) = too_big_reply(&frame, mtu, &mut out) else {
            return Err(TestCaseError::fail("no reply"));
        };
        let quoted = (40 + payload.len()).min(icmp::IPV6_QUOTE_MAX);
        prop_assert_eq!(n, 14 + 40 + 8 + quoted);
        prop_assert!(n - 14 <= 1280);
        let ip = Ipv6Packet::new_checked(&out[14..n]).unwrap();
        prop_assert_eq!((ip.src_addr(), ip.dst_addr()), (repr.dst_addr, repr.src_addr));
        let pseudo = checksum::pseudo_header_v6(
            &ip.src_addr(),
            &ip.dst_addr(),
            58,
            ip.payload().len() as u32,
        );
        let total = checksum::combine(&[pseudo, checksum::sum(ip.payload())]);
        prop_assert_eq!(checksum::finish(total), 0);
        prop_assert_eq!(&ip.payload()[4..8], &mtu.to_be_bytes()[..]);
    }

    #[test]
    fn switch_never_panics(
        frames in vec((any::<bool>(), 0u64..4, vec(any::<u8>(), 0..40)), 0..64),
    ) {
        let t0 = Instant::now();
        let mut sw = Switch::new(Fdb::new(8, Duration::from_secs(5)));
        for (i, (local, peer, frame)) in frames.iter().enumerate() {
            let now = t0 + Duration::from_secs(i as u64);
            let d = if *local {
                sw.from_local(now, frame)
            } else {
                let d = sw.from_peer(now, PeerName(peer + 1), frame);
                prop_assert!(matches!(d, Decision::Deliver | Decision::Drop(_)));
                d
            };
            if frame.len() < 14 {
                prop_assert!(matches!(d, Decision::Drop(_)));
            }
            prop_assert!(sw.stats().entries <= 8);
        }
    }

    #[test]
    fn fdb_stays_consistent(
        ops in vec((0u8..4, 0u8..32, 0u64..3, 0u64..20), 0..200),
    ) {
        let cap = 16;
        let t0 = Instant::now();
        let mut fdb = Fdb::new(cap, Duration::from_secs(30));
        let mut now = t0;
        for (op, m, peer, dt) in ops {
            now += Duration::from_secs(dt);
            let mac = MacAddr([2, 0, 0, 0, 0, m]);
            let loc = if peer == 0 { Location::Local } else { Location::Peer(PeerName(peer)) };
            match op {
                0 | 1 => {
                    fdb.learn(now, mac, loc);
                    // What was just learned is always found.
                    prop_assert_eq!(fdb.lookup(now, mac), Some(loc));
                }
                2 => {
                    fdb.expire(now);
                    for (_, _, seen) in fdb.entries() {
                        prop_assert!(now.duration_since(seen) <= Duration::from_secs(30));
                    }
                }
                _ => {
                    fdb.forget_peer(PeerName(peer));
                    prop_assert!(fdb.entries().iter().all(|e| e.1 != Location::Peer(PeerName(peer))));
                }
            }
            let entries = fdb.entries();
            prop_assert!(entries.len() <= cap);
            prop_assert_eq!(entries.len(), fdb.stats().entries);
            let mut macs: Vec<_> = entries.iter().map(|e| e.0).collect();
            macs.sort();
            macs.dedup();
            prop_assert_eq!(macs.len(), entries.len());
        }
    }
}
