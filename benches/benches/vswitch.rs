//! Criterion benches of the per-frame work in `vswitch`: the forwarding decision, MAC learning at
//! the table's cap, sleeve encapsulation and decapsulation at realistic frame sizes, and the ICMP
//! too-big reply (ICMPv4 and ICMPv6).
//!
//! Run with `cargo bench -p weft-benches`; add `-- --warm-up-time 1 --measurement-time 2` for a
//! quick pass.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::{Duration, Instant};
use vswitch::fdb::{Fdb, Location};
use vswitch::switch::{Decision, Switch};
use vswitch::wire::icmp::{self, too_big_reply};
use vswitch::wire::ipv4::Ipv4Repr;
use vswitch::wire::ipv6::Ipv6Repr;
use vswitch::wire::sleeve::{push_frame, PeerName, SleeveDatagram, SleeveHeader};
use vswitch::wire::MacAddr;

/// Frame sizes: a minimal frame, a full frame on a 1500-byte underlay, a jumbo on 9000.
const SIZES: [usize; 3] = [64, 1400, 8950];

fn mac(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([0x02, 0x00, b[0], b[1], b[2], b[3]])
}

fn frame(dst: MacAddr, src: MacAddr, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}

/// A switch whose table holds 1000 entries: 999 MACs behind 9 peers and one local MAC.
fn switch_with_1000_entries(now: Instant) -> Switch {
    let mut sw = Switch::new(Fdb::new(Fdb::DEFAULT_CAPACITY, Fdb::DEFAULT_MAX_AGE));
    for n in 1..1000 {
        let peer = PeerName(u64::from(n % 9) + 1);
        sw.fdb_mut().learn(now, mac(n), Location::Peer(peer));
    }
    sw.fdb_mut().learn(now, mac(0), Location::Local);
    assert_eq!(sw.stats().entries, 1000);
    sw
}

fn switching(c: &mut Criterion) {
    let now = Instant::now();
    let mut g = c.benchmark_group("switch");
    g.throughput(Throughput::Elements(1));

    let mut sw = switch_with_1000_entries(now);
    let to_peer = frame(mac(500), mac(0), 64);
    assert_eq!(
        sw.from_local(now, &to_peer),
        Decision::Unicast(PeerName(500 % 9 + 1))
    );
    g.bench_function("from_local_known_unicast", |b| {
        b.iter(|| sw.from_local(now, black_box(&to_peer)))
    });

    let mut sw = switch_with_1000_entries(now);
    let from_peer = frame(mac(0), mac(500), 64);
    let peer = PeerName(500 % 9 + 1);
    assert_eq!(sw.from_peer(now, peer, &from_peer), Decision::Deliver);
    g.bench_function("from_peer", |b| {
        b.iter(|| sw.from_peer(now, black_box(peer), black_box(&from_peer)))
    });
    g.finish();
}

fn learning(c: &mut Criterion) {
    let now = Instant::now();
    let mut g = c.benchmark_group("fdb");
    g.throughput(Throughput::Elements(1));

    // A full table: every new MAC evicts one.
    let cap = Fdb::DEFAULT_CAPACITY;
    let mut fdb = Fdb::new(cap, Duration::from_secs(300));
    for n in 0..cap as u32 {
        fdb.learn(now, mac(n), Location::Local);
    }
    let mut next = cap as u32;
    g.bench_function("learn_new_at_cap", |b| {
        b.iter(|| {
            next = next.wrapping_add(1);
            fdb.learn(now, black_box(mac(next)), Location::Peer(PeerName(1)))
        })
    });

    let mut fdb = Fdb::new(cap, Duration::from_secs(300));
    for n in 0..1000 {
        fdb.learn(now, mac(n), Location::Local);
    }
    g.bench_function("learn_refresh", |b| {
        b.iter(|| fdb.learn(now, black_box(mac(500)), Location::Local))
    });
    g.bench_function("lookup_hit", |b| {
        b.iter(|| fdb.lookup(now, black_box(mac(500))))
    });
    g.finish();
}

fn sleeve(c: &mut Criterion) {
    let header = SleeveHeader::frames(PeerName(1), PeerName(2));

    let mut g = c.benchmark_group("sleeve_encap");
    for size in SIZES {
        let f = frame(mac(1), mac(2), size);
        let mut buf = vec![0u8; 9000];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &f, |b, f| {
            b.iter(|| {
                let len = header.emit(&mut buf).unwrap();
                push_frame(&mut buf, len, black_box(f)).unwrap()
            })
        });
    }
    g.finish();

    // Decapsulation is zero-copy (checks the header, then slices each record), so its time does
    // not grow with the frame size and the byte throughput is nominal.
    let mut g = c.benchmark_group("sleeve_decap");
    for size in SIZES {
        let f = frame(mac(1), mac(2), size);
        let mut buf = vec![0u8; 9000];
        let len = header.emit(&mut buf).unwrap();
        let len = push_frame(&mut buf, len, &f).unwrap();
        let datagram = &buf[..len];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &datagram, |b, d| {
            b.iter(|| {
                let d = SleeveDatagram::new_checked(black_box(*d)).unwrap();
                let mut bytes = 0;
                for f in d.frames() {
                    bytes += black_box(f.unwrap()).len();
                }
                bytes
            })
        });
    }
    g.finish();
}

fn too_big(c: &mut Criterion) {
    // A 1500-byte IPv4 UDP packet with DF, as a pod on a 1500-MTU interface sends it.
    let mut f = frame(mac(1), mac(2), 14 + 1500);
    Ipv4Repr {
        src_addr: [10, 32, 0, 1].into(),
        dst_addr: [10, 32, 0, 2].into(),
        protocol: 17,
        ttl: 64,
        tos: 0,
        dont_frag: true,
        payload_len: 1480,
    }
    .emit(&mut f[14..])
    .unwrap();
    let mut out = [0u8; icmp::MAX_REPLY_LEN];
    let mut g = c.benchmark_group("icmp");
    g.throughput(Throughput::Elements(1));
    g.bench_function("too_big_reply_ipv4_1500", |b| {
        b.iter(|| too_big_reply(black_box(&f), 1436, &mut out).unwrap())
    });
    // The same for IPv6: a 1500-byte UDP packet from a pod, answered with Packet Too Big
    // (its checksum covers the 1232 bytes of the offending packet that the reply quotes).
    let mut f6 = frame(mac(1), mac(2), 14 + 1500);
    f6[12..14].copy_from_slice(&[0x86, 0xdd]);
    Ipv6Repr {
        src_addr: "fd10:32::2".parse().unwrap(),
        dst_addr: "fd10:32::3".parse().unwrap(),
        next_header: 17,
        hop_limit: 64,
        payload_len: 1460,
    }
    .emit(&mut f6[14..])
    .unwrap();
    assert!(matches!(
        too_big_reply(&f6, 1416, &mut out).unwrap(),
        vswitch::wire::icmp::TooBig::Reply(_)
    ));
    g.bench_function("too_big_reply_ipv6_1500", |b| {
        b.iter(|| too_big_reply(black_box(&f6), 1416, &mut out).unwrap())
    });
    g.finish();
}

criterion_group!(benches, switching, learning, sleeve, too_big);
criterion_main!(benches);
