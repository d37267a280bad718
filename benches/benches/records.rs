//! What signed gossip records cost per record: signing our record (the compact JSON body plus an
//! Ed25519 signature), and checking a received one the way `gossip::sign::Verifier` does (body
//! again, then the signature), for a topology record with 3, 30 and 300 connections. The gossip
//! simulator (`--bench gossip_sim -- 100 300 signed`) gives the cost at mesh scale.
//!
//! Run with `cargo bench -p weft-benches --bench records -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use gossip::sign::{HostKey, SignedRecord, Verifier, TOPOLOGY_DOMAIN};
use gossip::topology::{ConnEntry, PeerRecord};
use gossip::PeerName;
use std::hint::black_box;

fn record(conns: u64) -> PeerRecord {
    let mut r = PeerRecord::new(PeerName(7), 1, 1_700_000_000_000, "host-7");
    r.conns = (1..=conns)
        .map(|p| ConnEntry {
            peer: PeerName(p + 100),
            addr: format!("10.0.{}.{}:6783", p / 250, p % 250 + 1)
                .parse()
                .unwrap(),
            usable: true,
        })
        .collect();
    r
}

fn bench(c: &mut Criterion) {
    let key = HostKey::from_pkcs8(&HostKey::generate_pkcs8().unwrap()).unwrap();
    let mut g = c.benchmark_group("record");
    for n in [3u64, 30, 300] {
        let mut r = record(n);
        r.name = key.derived_name();
        g.bench_with_input(BenchmarkId::new("sign", n), &r, |b, r| {
            b.iter(|| {
                let mut r = r.clone();
                r.sign(&key);
                black_box(r)
            })
        });
        let mut signed = r.clone();
        signed.sign(&key);
        g.bench_with_input(BenchmarkId::new("verify", n), &signed, |b, r| {
            b.iter(|| {
                let mut v = Verifier::new(true);
                let ok = v.check(
                    r.name,
                    r.key.as_ref(),
                    r.sig.as_ref(),
                    TOPOLOGY_DOMAIN,
                    || r.signed_body(),
                    false,
                );
                black_box(ok)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
