//! The UDP side of the data plane thread: receives batches of datagrams (`recvmmsg`, UDP GRO),
//! asks the sleeve engine what each one is ([`vswitch::engine::Engine::inspect`], then
//! [`decide`](vswitch::engine::Engine::decide) once an encrypted one is opened with the
//! sender's session) and carries that out: relays, broadcast-tree forwarding, heartbeat answers,
//! heartbeat answers' round-trip times and capabilities, and delivery of the frames (switch,
//! TCP segment coalescing, checksum completion, TAP writes). Counts every drop.

use super::counters::count;
use super::encap::forward;
use super::{disabled, Fabric, Io, PeerEntry, Ports, Reason, Shared};
use crate::sys::tap::Tap;
use quinn_udp::RecvMeta;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;
use vswitch::engine::{Action, Delivery, Discard, Engine, Inspected};
use vswitch::offload::{self, Coalescer, Pushed, UdpCoalescer, VNET_HDR_LEN};
use vswitch::session::{self, HEADROOM};
use vswitch::wire::{Caps, SleeveDatagram};
use vswitch::{CryptoError, Decision};

/// Datagrams received per `recvmmsg`.
const UDP_BATCH: usize = 32;
/// Bytes per receive buffer (a GRO batch can fill 64 KiB).
const UDP_BUF: usize = 65_536;

/// The UDP side of the data plane thread, with its buffers: receives datagrams and delivers,
/// relays or answers them.
pub(super) struct UdpSide<'a> {
    ports: Ports<'a>,
    storage: Vec<u8>,
    metas: [RecvMeta; UDP_BATCH],
    rx: Rx,
}

impl<'a> UdpSide<'a> {
    pub(super) fn new(ports: Ports<'a>) -> Self {
        UdpSide {
            ports,
            storage: vec![0u8; UDP_BATCH * UDP_BUF],
            metas: [RecvMeta::default(); UDP_BATCH],
            rx: Rx {
                engine: ports.shared.engine(),
                deliver: Vec::with_capacity(UDP_BUF / 16),
                scratch: vec![0u8; HEADROOM + UDP_BUF + session::TAG_LEN].into_boxed_slice(),
                gro: (ports.tap.vnet_hdr() && !disabled("gro")).then(Coalescer::new),
                udp_gro: (ports.tap.uso() && !disabled("udp-gro")).then(UdpCoalescer::new),
            },
        }
    }

    /// Receives one batch of datagrams (`recvmmsg`) and handles each. False if there was
    /// nothing to receive.
    pub(super) fn batch(&mut self) -> bool {
        let Ports {
            shared,
            tap,
            socket,
            state,
            ..
        } = self.ports;
        let UdpSide {
            storage, metas, rx, ..
        } = self;
        let c = &shared.counters;
        let mut chunks = storage.chunks_mut(UDP_BUF);
        let mut iovs: [IoSliceMut<'_>; UDP_BATCH] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        let n = match state.recv(socket.into(), &mut iovs, metas) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) => {
                // A pending socket error (an ICMP error for an earlier send): reported once.
                tracing::warn!("receiving: {e}");
                return true;
            }
        };
        let fabric = shared.fabric.load();
        let io = Io {
            tap: Some(tap),
            socket,
            state,
        };
        // One clock reading and one add to each counter per batch, not per datagram.
        let now = Instant::now();
        let mut datagrams = 0;
        for (meta, iov) in metas.iter().zip(iovs.iter_mut()).take(n) {
            let stride = meta.stride.max(1);
            for dgram in iov[..meta.len].chunks_mut(stride) {
                datagrams += 1;
                receive(shared, &fabric, &io, dgram, meta.addr, now, rx);
            }
        }
        c.udp_rx_datagrams.fetch_add(datagrams, Relaxed);
        self.ports
            .mine
            .udp_rx_datagrams
            .fetch_add(datagrams, Relaxed);
        flush_gro(shared, tap, rx);
        true
    }
}

/// Writes the super-frames the coalescers hold, if any, to the TAP port (TCP's, then UDP's:
/// they hold different flows).
fn flush_gro(shared: &Shared, tap: &Tap, rx: &mut Rx) {
    if let Some(gro) = rx.gro.as_mut() {
        let segments = u64::from(gro.segments());
        write_super_frame(shared, tap, gro.take(), segments);
    }
    if let Some(gro) = rx.udp_gro.as_mut() {
        let segments = u64::from(gro.segments());
        write_super_frame(shared, tap, gro.take(), segments);
    }
}

/// Writes a coalescer's super-frame of `segments` frames (with its virtio-net header) to the TAP
/// port and counts it.
fn write_super_frame(shared: &Shared, tap: &Tap, buf: Option<&[u8]>, segments: u64) {
    let c = &shared.counters;
    let Some(buf) = buf else {
        return;
    };
    match tap.write_raw(buf) {
        Ok(_) => {
            c.tap_tx_frames.fetch_add(1, Relaxed);
            c.tap_tx_bytes
                .fetch_add((buf.len() - VNET_HDR_LEN) as u64, Relaxed);
            if segments > 1 {
                c.tap_tx_gso_frames.fetch_add(1, Relaxed);
                c.tap_tx_gso_segments.fetch_add(segments, Relaxed);
            }
        }
        Err(_) => c.drop(Reason::TapWriteError),
    }
}

/// Buffers of the UDP side, allocated once.
struct Rx {
    /// The sleeve engine.
    engine: Engine,
    /// Frames to deliver from the current datagram: (offset, length).
    deliver: Vec<(usize, usize)>,
    /// Where a datagram is re-sealed for the next hop.
    scratch: Box<[u8]>,
    /// Joins TCP segments into super-frames (when the TAP port takes them).
    gro: Option<Coalescer>,
    /// Joins UDP datagrams of one flow into super-frames (when the TAP port takes them: USO).
    udp_gro: Option<UdpCoalescer>,
}

/// Handles one received datagram: opens it if it is encrypted, relays it if it is for others,
/// answers heartbeats, and learns and delivers its frames if it is for us; the engine decides
/// which. `now`: when its batch was received.
fn receive(
    shared: &Shared,
    fabric: &Fabric,
    io: &Io<'_>,
    dgram: &mut [u8],
    from: SocketAddr,
    now: Instant,
    rx: &mut Rx,
) {
    let c = &shared.counters;
    let engine = rx.engine;
    let discard = |reason: Discard, peer: Option<&PeerEntry>| match peer {
        Some(p) => count(c, &p.counters, reason.into()),
        None => c.drop(reason.into()),
    };
    let (header, plain): (_, &mut [u8]) = match engine.inspect(fabric, dgram, from) {
        Inspected::Drop { reason, peer } => return discard(reason, peer),
        Inspected::Plain { header } => (header, dgram),
        Inspected::Sealed { header, hop } => {
            let Some(s) = &hop.session else {
                return count(c, &hop.counters, Reason::Crypto(CryptoError::UnknownKey));
            };
            match open(s, now, dgram) {
                Ok(range) => (header, &mut dgram[range]),
                Err(e) => return count(c, &hop.counters, Reason::Crypto(e)),
            }
        }
    };
    // Counts a datagram passed on for `origin` (relayed, or down a broadcast tree).
    let relayed = |origin: &PeerEntry, sent: Result<(), Reason>| match sent {
        Ok(()) => {
            origin.counters.relayed_datagrams.fetch_add(1, Relaxed);
            c.relayed_datagrams.fetch_add(1, Relaxed);
        }
        Err(r) => c.drop(r),
    };
    match engine.decide(fabric, header, plain, from, now) {
        Action::Drop { reason, peer } => discard(reason, peer),
        Action::Ignore => {}
        Action::Relay { origin, hop, addr } => {
            if shared.watch.on() {
                watch_relay(shared, plain, origin, hop);
            }
            relayed(origin, forward(io, hop, addr, plain, &mut rx.scratch));
        }
        Action::Answer { origin, to, len } => {
            // Answered at once, to where it came from (through NAT, that is not the announced
            // address), and that address remembered.
            if forward(io, origin, to, &mut plain[..len], &mut rx.scratch).is_ok() {
                c.heartbeats_answered.fetch_add(1, Relaxed);
            }
            let mut seen = origin
                .counters
                .observed_addr
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // Kept in its canonical form: an IPv4 peer reaching a socket bound to `[::]` comes
            // from ::ffff:a.b.c.d (the daemon maps it back when it sends).
            let to = SocketAddr::new(to.ip().to_canonical(), to.port());
            if *seen != Some(to) {
                *seen = Some(to);
            }
        }
        Action::Ack {
            origin,
            rtt_us,
            caps,
        } => {
            let oc = &origin.counters;
            oc.rtt_us.store(rtt_us, Relaxed);
            oc.rtt.observe(rtt_us);
            oc.last_ack_ms.store(shared.now_ms(), Relaxed);
            oc.takes_csum_partial
                .store(caps.contains(Caps::CSUM_PARTIAL), Relaxed);
            oc.takes_lanes.store(caps.contains(Caps::LANES), Relaxed);
        }
        Action::Deliver { origin, flood } => {
            // A broadcast goes down the source's tree before it is delivered here.
            for (next, addr) in flood {
                relayed(origin, forward(io, next, addr, plain, &mut rx.scratch));
            }
            deliver(shared, io, origin, plain, now, rx);
        }
    }
}

/// Opens an encrypted datagram in place with `session`. The session is locked to pick the key
/// and again to record the counter; the decryption runs outside the lock, so that workers
/// receiving from one peer (on different lanes) and those sending to it do not wait for each
/// other's AEAD work.
fn open(
    session: &std::sync::Mutex<vswitch::Session>,
    now: Instant,
    dgram: &mut [u8],
) -> Result<std::ops::Range<usize>, CryptoError> {
    let lock = || session.lock().unwrap_or_else(|p| p.into_inner());
    let ticket = lock().open_ticket(now, dgram)?;
    let range = ticket.open_in_place(dgram)?;
    lock().finish_open(now, &ticket)?;
    Ok(range)
}

/// Records a relayed datagram's marked frames for the live traces armed.
fn watch_relay(shared: &Shared, plain: &[u8], origin: &PeerEntry, hop: &PeerEntry) {
    let Ok(d) = SleeveDatagram::new_checked(plain) else {
        return;
    };
    for frame in d.frames().map_while(Result::ok) {
        shared.watch.observe_frame(frame, "relay", || {
            format!("from {} passed on to {}", origin.name, hop.name)
        });
    }
}

/// Learns and delivers the frames of the plain datagram `plain` from `origin` to the TAP port.
fn deliver(
    shared: &Shared,
    io: &Io<'_>,
    origin: &PeerEntry,
    plain: &mut [u8],
    now: Instant,
    rx: &mut Rx,
) {
    let c = &shared.counters;
    let oc = &origin.counters;
    oc.rx_datagrams.fetch_add(1, Relaxed);
    let max_frame = shared.max_frame() + 4; // room for one VLAN tag
    let Some(frames) = Delivery::new(plain, max_frame) else {
        return;
    };
    // Its TCP segments carry partial checksums: not verified here (the UDP checksum or the AEAD
    // tag covered them), completed by the pod's kernel or, for a frame written alone, here.
    let partial = frames.csum_partial();
    let base = plain.as_ptr() as usize;
    rx.deliver.clear();
    {
        let mut sw = shared.switch();
        for rec in frames {
            let frame = match rec {
                Ok(f) => f,
                Err(d @ Discard::TruncatedRecord) => {
                    count(c, oc, d.into());
                    break;
                }
                Err(d) => {
                    count(c, oc, d.into());
                    continue;
                }
            };
            match sw.from_peer(now, origin.name, frame) {
                Decision::Drop(r) => count(c, oc, Reason::Switch(r)),
                _ => rx
                    .deliver
                    .push((frame.as_ptr() as usize - base, frame.len())),
            }
        }
    }
    let Some(tap) = io.tap else {
        return;
    };
    for i in 0..rx.deliver.len() {
        let (off, len) = rx.deliver[i];
        let frame = &mut plain[off..off + len];
        oc.rx_frames.fetch_add(1, Relaxed);
        oc.rx_bytes.fetch_add(len as u64, Relaxed);
        if let Some(gro) = rx.gro.as_mut() {
            let pushed = if partial {
                gro.push_partial(frame)
            } else {
                gro.push(frame)
            };
            if pushed == Pushed::Held {
                continue;
            }
        }
        if let Some(gro) = rx.udp_gro.as_mut() {
            if gro.push(frame) == Pushed::Held {
                continue;
            }
        }
        if rx.gro.is_some() || rx.udp_gro.is_some() {
            // Keep the order: what the coalescers hold goes first.
            flush_gro(shared, tap, rx);
        }
        if partial {
            if let Some(h) = offload::tcp_partial_hdr(frame) {
                if offload::complete_checksum(&h, frame).is_err() {
                    count(c, oc, Reason::Offload);
                    continue;
                }
            }
        }
        let frame = &*frame;
        if shared.watch.on() {
            shared.watch.observe_frame(frame, "sleeve in", || {
                format!("from {}, to the TAP port", origin.name)
            });
        }
        match tap.write(frame) {
            Ok(_) => {
                c.tap_tx_frames.fetch_add(1, Relaxed);
                c.tap_tx_bytes.fetch_add(len as u64, Relaxed);
            }
            Err(_) => c.drop(Reason::TapWriteError),
        }
    }
}
