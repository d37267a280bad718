//! ChaCha20-Poly1305 from `ring` against RustCrypto's `chacha20poly1305`, and `ring`'s
//! AES-256-GCM beside them: seal and open in place at a minimal frame (64 B), a full frame on a
//! 1500-byte underlay (1400 B) and a maximal UDP payload (64 KiB). The first result chose the
//! implementation behind `vswitch::session`; see `docs/encryption.md` for the table, and
//! `docs/performance.md` for the two AEADs the sleeve negotiates.
//!
//! Both are called the way the sleeve uses them: one in-place operation per datagram with a
//! detached 16-byte tag and 29 bytes of associated data (the sleeve header with its ttl zeroed,
//! the key epoch and the counter). Open includes checking the tag.
//!
//! Run with `cargo bench -p weft-benches --bench aead -- --warm-up-time 1 --measurement-time 3`.
//! Two more groups: `aead/ring/21x64` compares one AEAD per datagram with one per frame for a
//! datagram of 21 small frames, and `session` measures `vswitch::session` itself (seal, and open
//! with the replay window) at the same sizes as above. The groups with `aes-256-gcm` in their
//! name are the same measurements with AES-256-GCM (`aead/ring/aes-256-gcm`,
//! `session/aes-256-gcm`); the others are ChaCha20-Poly1305.
//!
//! `aead/aws-lc/aes-256-gcm` (only with `--features aws-lc`) is AWS-LC's AES-256-GCM beside
//! ring's, to see whether a faster implementation exists for the sleeve's sizes.
//!
//! `handoff` is what the data plane workers (`--workers`) pay to share one neighbour's session:
//! taking a seal ticket under the session's lock (alone, and while another thread takes tickets
//! from the same session as fast as it can), and opening a 1400-byte datagram in the three steps
//! the workers use (ticket under the lock, AEAD outside, counter recorded under the lock) beside
//! `Session::open_in_place` in one.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vswitch::session::{Aead, Key, Opener, RekeyPolicy, Sealer, Session, HEADROOM};
use vswitch::wire::sleeve::{push_frame, PeerName, SleeveHeader};

/// Plaintext sizes.
const SIZES: [usize; 3] = [64, 1400, 65536];
const KEY: [u8; 32] = [0x42; 32];
const AAD: [u8; 29] = [0x17; 29];
const TAG_LEN: usize = 16;

fn nonce_bytes(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

fn ring_aead(c: &mut Criterion) {
    let ring_key = |a| LessSafeKey::new(UnboundKey::new(a, &KEY).unwrap());
    aead_with(c, "aead/ring", &ring_key(&CHACHA20_POLY1305));
    aead_with(c, "aead/ring/aes-256-gcm", &ring_key(&AES_256_GCM));
}

/// AWS-LC's AES-256-GCM (through `aws-lc-rs`, the same API as ring's), which has AVX-512 code
/// where ring's fastest is VAES on AVX2 registers: does a faster library exist for the sleeve's
/// sizes? Only with `--features aws-lc` (it builds AWS-LC's C code, so CI does not):
/// `cargo bench -p weft-benches --features aws-lc --bench aead -- '^aead/(ring|aws-lc)/aes-256-gcm'`.
#[cfg(feature = "aws-lc")]
fn aws_lc_aead(c: &mut Criterion) {
    use aws_lc_rs::aead as lc;
    let key = lc::LessSafeKey::new(lc::UnboundKey::new(&lc::AES_256_GCM, &KEY).unwrap());
    aead_with(c, "aead/aws-lc/aes-256-gcm", &key);
}

#[cfg(not(feature = "aws-lc"))]
fn aws_lc_aead(_: &mut Criterion) {}

/// An AEAD used the way the sleeve uses it: in place, with a detached tag.
trait InPlace {
    fn seal(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN];
    /// Opens `buf` (ciphertext and tag) in place; the plaintext's length.
    fn open(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> usize;
}

impl InPlace for LessSafeKey {
    fn seal(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let n = Nonce::assume_unique_for_key(nonce);
        let tag = self.seal_in_place_separate_tag(n, Aad::from(aad), buf);
        tag.unwrap().as_ref().try_into().unwrap()
    }
    fn open(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> usize {
        let n = Nonce::assume_unique_for_key(nonce);
        self.open_in_place(n, Aad::from(aad), buf).unwrap().len()
    }
}

impl InPlace for ChaCha20Poly1305 {
    fn seal(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let tag = self.encrypt_inout_detached(&nonce.into(), aad, buf.into());
        tag.unwrap().into()
    }
    fn open(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> usize {
        let (body, tag) = buf.split_at_mut(buf.len() - TAG_LEN);
        let tag = (&*tag).try_into().unwrap();
        self.decrypt_inout_detached(&nonce.into(), aad, (&mut *body).into(), tag)
            .unwrap();
        body.len()
    }
}

#[cfg(feature = "aws-lc")]
impl InPlace for aws_lc_rs::aead::LessSafeKey {
    fn seal(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        use aws_lc_rs::aead as lc;
        let n = lc::Nonce::assume_unique_for_key(nonce);
        let tag = self.seal_in_place_separate_tag(n, lc::Aad::from(aad), buf);
        tag.unwrap().as_ref().try_into().unwrap()
    }
    fn open(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> usize {
        use aws_lc_rs::aead as lc;
        let n = lc::Nonce::assume_unique_for_key(nonce);
        self.open_in_place(n, lc::Aad::from(aad), buf)
            .unwrap()
            .len()
    }
}

fn aead_with(c: &mut Criterion, group: &str, key: &impl InPlace) {
    let mut g = c.benchmark_group(group);
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0xa5u8; size];
        let mut counter = 0u64;
        g.bench_with_input(BenchmarkId::new("seal", size), &size, |b, _| {
            b.iter(|| {
                counter += 1;
                key.seal(nonce_bytes(counter), black_box(&AAD), &mut buf)
            })
        });

        // Open the same sealed datagram again and again: decrypting in place destroys the
        // ciphertext, so each iteration gets a fresh copy, made outside the timed part.
        let mut sealed = vec![0xa5u8; size + TAG_LEN];
        let nonce = nonce_bytes(7);
        let tag = key.seal(nonce, &AAD, &mut sealed[..size]);
        sealed[size..].copy_from_slice(&tag);
        g.bench_with_input(BenchmarkId::new("open", size), &size, |b, _| {
            b.iter_batched_ref(
                || sealed.clone(),
                |work| key.open(nonce, black_box(&AAD), work),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn rustcrypto_aead(c: &mut Criterion) {
    aead_with(c, "aead/rustcrypto", &ChaCha20Poly1305::new(&KEY.into()));
}

/// One AEAD operation per datagram against one per frame, for a datagram of 21 small frames
/// (64 bytes each, 1386 bytes of records): what batching frames under one tag saves.
fn amortised(c: &mut Criterion) {
    const FRAMES: usize = 21;
    const FRAME: usize = 64;
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &KEY).unwrap());
    let mut g = c.benchmark_group("aead/ring/21x64");
    g.throughput(Throughput::Bytes((FRAMES * FRAME) as u64));
    let mut body = vec![0xa5u8; FRAMES * (FRAME + 2)];
    let mut counter = 0u64;
    g.bench_function("per_frame", |b| {
        b.iter(|| {
            for record in body.chunks_mut(FRAME + 2) {
                counter += 1;
                let nonce = Nonce::assume_unique_for_key(nonce_bytes(counter));
                let tag = key
                    .seal_in_place_separate_tag(nonce, Aad::from(black_box(&AAD)), record)
                    .unwrap();
                let _ = black_box(tag);
            }
        })
    });
    g.bench_function("per_datagram", |b| {
        b.iter(|| {
            counter += 1;
            let nonce = Nonce::assume_unique_for_key(nonce_bytes(counter));
            key.seal_in_place_separate_tag(nonce, Aad::from(black_box(&AAD)), &mut body)
                .unwrap()
        })
    });
    g.finish();
}

/// A frames datagram whose plain form is `size` bytes (header and records), laid out for
/// sealing, and that length.
fn datagram(size: usize) -> (Vec<u8>, usize) {
    let mut buf = vec![0u8; HEADROOM + size + TAG_LEN];
    let plain = &mut buf[HEADROOM..];
    let mut len = SleeveHeader::frames(PeerName(1), PeerName(2))
        .emit(plain)
        .unwrap();
    let frame = vec![0x5au8; 60_000];
    while len < size {
        let room = (size - len).saturating_sub(2).clamp(1, frame.len());
        len = push_frame(plain, len, &frame[..room]).unwrap();
    }
    (buf, len)
}

/// `vswitch::session` itself: header checks, the header move, the AEAD, and on open the replay
/// window. Sizes are of the plain datagram.
fn session(c: &mut Criterion) {
    session_with(c, "session", Aead::ChaCha20Poly1305);
    session_with(c, "session/aes-256-gcm", Aead::Aes256Gcm);
}

fn session_with(c: &mut Criterion, group: &str, aead: Aead) {
    let now = Instant::now();
    let mut g = c.benchmark_group(group);
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let (template, plain_len) = datagram(size);
        let mut sealer = Sealer::new(now, 1, Key::for_aead(aead, KEY));
        g.bench_with_input(BenchmarkId::new("seal", size), &size, |b, _| {
            b.iter_batched_ref(
                || template.clone(),
                |buf| sealer.seal_in_place(buf, plain_len).unwrap(),
                BatchSize::SmallInput,
            )
        });

        // Every open needs a fresh counter: each input is sealed in the (untimed) setup.
        let mut sealer = Sealer::new(now, 1, Key::for_aead(aead, KEY));
        let mut opener = Opener::new(1, Key::for_aead(aead, KEY), Duration::from_secs(10));
        g.bench_with_input(BenchmarkId::new("open", size), &size, |b, _| {
            b.iter_batched_ref(
                || {
                    let mut buf = template.clone();
                    let n = sealer.seal_in_place(&mut buf, plain_len).unwrap();
                    buf.truncate(n);
                    buf
                },
                |buf| opener.open_in_place(now, buf).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// A session of both directions under one key (what a worker shares with the others).
fn shared_session() -> Arc<Mutex<Session>> {
    let k = || Key::for_aead(Aead::Aes256Gcm, KEY);
    let s = Session::new(Instant::now(), 1, k(), k(), RekeyPolicy::default());
    Arc::new(Mutex::new(s))
}

fn handoff(c: &mut Criterion) {
    let mut g = c.benchmark_group("handoff");
    let session = shared_session();
    g.bench_function("seal_ticket", |b| {
        b.iter(|| black_box(session.lock().unwrap().ticket().unwrap()))
    });
    // Another thread takes tickets from the same session meanwhile (the other core).
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (session, stop) = (session.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                black_box(session.lock().unwrap().ticket().unwrap());
            }
        })
    };
    g.bench_function("seal_ticket_contended", |b| {
        b.iter(|| black_box(session.lock().unwrap().ticket().unwrap()))
    });
    stop.store(true, Ordering::Relaxed);
    let _ = other.join();

    // Opening 1400 bytes: in one step under the lock, and in the workers' three steps.
    g.throughput(Throughput::Bytes(1400));
    let (template, plain_len) = datagram(1400);
    let now = Instant::now();
    let mut sealer = Sealer::new(now, 1, Key::for_aead(Aead::Aes256Gcm, KEY));
    let sealed = |sealer: &mut Sealer| {
        let mut buf = template.clone();
        let n = sealer.seal_in_place(&mut buf, plain_len).unwrap();
        buf.truncate(n);
        buf
    };
    let one = shared_session();
    g.bench_function("open_1400_one_step", |b| {
        b.iter_batched_ref(
            || sealed(&mut sealer),
            |buf| one.lock().unwrap().open_in_place(now, buf).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let three = shared_session();
    g.bench_function("open_1400_three_steps", |b| {
        b.iter_batched_ref(
            || sealed(&mut sealer),
            |buf| {
                let t = three.lock().unwrap().open_ticket(now, buf).unwrap();
                let r = t.open_in_place(buf).unwrap();
                three.lock().unwrap().finish_open(now, &t).unwrap();
                r
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    ring_aead,
    aws_lc_aead,
    rustcrypto_aead,
    amortised,
    session,
    handoff
);
criterion_main!(benches);
