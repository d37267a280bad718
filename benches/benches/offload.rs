//! Criterion benches of the TAP offloads in `vswitch::offload` at the sizes the sleeve meets: a
//! 64 KiB TCP super-frame cut into segments for a 1436-byte pod MTU (GSO), the same segments
//! joined back into one super-frame (GRO), the same two over IPv6 (1416-byte pod MTU on an IPv6
//! underlay), and completing a partial checksum. Throughput is in
//! bytes of TCP payload.
//!
//! Run with `cargo bench -p weft-benches --bench offload`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use vswitch::offload::{complete_checksum, Coalescer, GsoType, Pushed, Segmenter, VnetHdr};
use vswitch::wire::checksum;

/// The pod MTU on a 1500-byte IPv4 underlay.
const POD_MTU: usize = 1436;
/// TCP payload per segment: MTU less IPv4 (20) and TCP with timestamps (32).
const MSS: usize = POD_MTU - 20 - 32;
/// A super-frame's payload: as many whole segments as fit in 64 KiB.
const PAYLOAD: usize = (65_535 - 20 - 32) / MSS * MSS;

/// A TCP/IPv4 super-frame (Ethernet, IPv4, TCP with timestamps) carrying `PAYLOAD` bytes, with
/// the pseudo-header sum in its checksum field as the kernel leaves it.
fn super_frame() -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = 20 + 32 + PAYLOAD;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ]);
    f.extend_from_slice(&[10, 32, 1, 1, 10, 32, 2, 1]);
    let c = checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&[
        0x30, 0x39, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 1, 0x80, 0x18, 1, 0,
    ]);
    f.extend_from_slice(&[0, 0, 0, 0, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    f.extend((0..PAYLOAD).map(|i| (i * 13) as u8));
    f
}

/// The pod MTU on a 1500-byte IPv6 underlay.
const POD_MTU6: usize = 1416;
/// TCP payload per segment over IPv6: MTU less IPv6 (40) and TCP with timestamps (32).
const MSS6: usize = POD_MTU6 - 40 - 32;
/// An IPv6 super-frame's payload: as many whole segments as fit in 64 KiB.
const PAYLOAD6: usize = (65_535 - 32) / MSS6 * MSS6;

/// A TCP/IPv6 super-frame (Ethernet, IPv6, TCP with timestamps) carrying `PAYLOAD6` bytes, with
/// the pseudo-header sum in its checksum field as the kernel leaves it.
fn super_frame6() -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
    let len = 32 + PAYLOAD6;
    f.extend_from_slice(&[0x60, 0, 0, 0, (len >> 8) as u8, len as u8, 6, 64]);
    let (src, dst): (std::net::Ipv6Addr, std::net::Ipv6Addr) = (
        "fd10:32::2".parse().unwrap(),
        "fd10:32::103".parse().unwrap(),
    );
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&[
        0x30, 0x39, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 1, 0x80, 0x18, 1, 0,
    ]);
    f.extend_from_slice(&[0, 0, 0, 0, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    f.extend((0..PAYLOAD6).map(|i| (i * 13) as u8));
    f
}

fn gso_header() -> VnetHdr {
    VnetHdr {
        flags: vswitch::offload::F_NEEDS_CSUM,
        gso_type: GsoType::TcpV4,
        ecn: false,
        hdr_len: 66,
        gso_size: MSS as u16,
        csum_start: 34,
        csum_offset: 16,
    }
}

fn offloads(c: &mut Criterion) {
    let big = super_frame();
    let hdr = gso_header();
    let mut g = c.benchmark_group("offload");
    g.throughput(Throughput::Bytes(PAYLOAD as u64));

    let mut out = vec![0u8; 2048];
    let mut segments = Vec::new();
    let mut seg = Segmenter::new(&hdr, &big).unwrap();
    while let Some(n) = seg.next_into(&mut out).unwrap() {
        assert!(n <= POD_MTU + 14);
        segments.push(out[..n].to_vec());
    }
    assert_eq!(segments.len(), PAYLOAD / MSS);
    g.bench_function("gso_split_64k_into_1436_mtu", |b| {
        b.iter(|| {
            let mut seg = Segmenter::new(&hdr, black_box(&big)).unwrap();
            let mut n = 0;
            while let Some(len) = seg.next_into(&mut out).unwrap() {
                n += black_box(len);
            }
            n
        })
    });

    // The same split with the TCP checksums left partial (sleeve flag FLAG_CSUM_PARTIAL).
    g.bench_function("gso_split_64k_into_1436_mtu_partial_csum", |b| {
        b.iter(|| {
            let mut seg = Segmenter::new(&hdr, black_box(&big))
                .unwrap()
                .leave_checksum_partial();
            let mut n = 0;
            while let Some(len) = seg.next_into(&mut out).unwrap() {
                n += black_box(len);
            }
            n
        })
    });

    let mut partial = Vec::new();
    let mut seg = Segmenter::new(&hdr, &big).unwrap().leave_checksum_partial();
    while let Some(n) = seg.next_into(&mut out).unwrap() {
        partial.push(out[..n].to_vec());
    }
    let mut gro = Coalescer::new();
    // Merging them unverified, as a receiver of a flagged datagram does.
    g.bench_function("gro_merge_1436_mtu_into_64k_partial_csum", |b| {
        b.iter(|| {
            for s in &partial {
                assert_eq!(gro.push_partial(black_box(s)), Pushed::Held);
            }
            gro.take().map(|f| f.len())
        })
    });

    g.bench_function("gro_merge_1436_mtu_into_64k", |b| {
        b.iter(|| {
            for s in &segments {
                assert_eq!(gro.push(black_box(s)), Pushed::Held);
            }
            gro.take().map(|f| f.len())
        })
    });

    // IPv6: a 64 KiB super-frame cut for the pod MTU of a 1500-byte IPv6 underlay.
    let big6 = super_frame6();
    let hdr6 = VnetHdr {
        flags: vswitch::offload::F_NEEDS_CSUM,
        gso_type: GsoType::TcpV6,
        ecn: false,
        hdr_len: 86,
        gso_size: MSS6 as u16,
        csum_start: 54,
        csum_offset: 16,
    };
    let mut segments6 = Vec::new();
    let mut seg = Segmenter::new(&hdr6, &big6).unwrap();
    while let Some(n) = seg.next_into(&mut out).unwrap() {
        assert!(n <= POD_MTU6 + 14);
        segments6.push(out[..n].to_vec());
    }
    assert_eq!(segments6.len(), PAYLOAD6 / MSS6);
    g.bench_function("gso_split_64k_ipv6_into_1416_mtu", |b| {
        b.iter(|| {
            let mut seg = Segmenter::new(&hdr6, black_box(&big6)).unwrap();
            let mut n = 0;
            while let Some(len) = seg.next_into(&mut out).unwrap() {
                n += black_box(len);
            }
            n
        })
    });
    g.bench_function("gro_merge_ipv6_1416_mtu_into_64k", |b| {
        b.iter(|| {
            for s in &segments6 {
                assert_eq!(gro.push(black_box(s)), Pushed::Held);
            }
            gro.take().map(|f| f.len())
        })
    });

    let mut frame = big.clone();
    let csum = VnetHdr {
        gso_type: GsoType::None,
        ..hdr
    };
    g.bench_function("complete_checksum_64k", |b| {
        b.iter(|| complete_checksum(black_box(&csum), &mut frame).unwrap())
    });
    g.finish();
}

criterion_group!(benches, offloads);
criterion_main!(benches);
