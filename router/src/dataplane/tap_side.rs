//! The TAP side of the data plane thread: reads batches of frames from the TAP port, completes
//! checksums the virtio-net header leaves partial, takes the switch's decisions under one lock
//! per batch, cuts TCP super-frames into segments and sends each frame where the engine's fabric
//! says ([`vswitch::engine::Fabric::unicast_route`]): back to the pod as ICMP "too big", to a
//! fast-path peer's kernel VXLAN device, into the datagram for one sleeve peer, or down our
//! broadcast tree.

use super::encap::{vxlan_send, Encap};
use super::{Fabric, Io, Ports, Reason, Shared, WorkerCounters};
use crate::sys::tap::Tap;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use vswitch::engine::Engine;
use vswitch::offload::{self, OffloadError, Segmenter, VnetHdr, VNET_HDR_LEN};
use vswitch::wire::icmp::{self, TooBig};
use vswitch::wire::vxlan;
use vswitch::{Decision, PeerName};

/// Frames read from the TAP port per batch.
const TAP_BATCH: usize = 64;
/// Bytes reserved per TAP frame buffer: a virtio-net header and the largest super-frame.
const FRAME_BUF: usize = VNET_HDR_LEN + offload::MAX_SUPER_FRAME;

/// The TAP side of the data plane thread, with its buffers: reads frames from the TAP port and
/// sends each on its way.
pub(super) struct TapSide<'a> {
    shared: &'a Shared,
    mine: &'a WorkerCounters,
    tap: &'a Tap,
    frames: Vec<u8>,
    lens: [usize; TAP_BATCH],
    hdrs: [VnetHdr; TAP_BATCH],
    decisions: [Decision; TAP_BATCH],
    segment: Vec<u8>,
    out: TapOut<'a>,
    /// When a TAP read error was last logged.
    last_error_log: Option<Instant>,
}

impl<'a> TapSide<'a> {
    pub(super) fn new(ports: Ports<'a>) -> Self {
        let Ports {
            shared, mine, tap, ..
        } = ports;
        TapSide {
            shared,
            mine,
            tap,
            frames: vec![0u8; TAP_BATCH * FRAME_BUF],
            lens: [0usize; TAP_BATCH],
            hdrs: [VnetHdr::NONE; TAP_BATCH],
            decisions: [Decision::Flood; TAP_BATCH],
            segment: vec![0u8; FRAME_BUF],
            last_error_log: None,
            out: TapOut {
                shared,
                tap,
                icmp_buf: vec![0u8; 2048],
                vxlan_buf: vec![0u8; vxlan::HEADER_LEN + FRAME_BUF],
                engine: shared.engine(),
                encap: Encap {
                    shared,
                    io: Io {
                        tap: None,
                        socket: ports.socket,
                        state: ports.state,
                    },
                    lane: ports.index,
                    pending: HashMap::default(),
                },
            },
        }
    }

    /// Reads one batch of frames from the TAP port and sends each on its way. False if there
    /// was nothing to read.
    pub(super) fn batch(&mut self) -> bool {
        let (shared, tap, mine) = (self.shared, self.tap, self.mine);
        let TapSide {
            frames,
            lens,
            hdrs,
            decisions,
            segment,
            out,
            last_error_log,
            ..
        } = self;
        let c = &shared.counters;
        // Where the frame starts in each buffer: after the virtio-net header, if the TAP has one.
        let skip = if tap.vnet_hdr() { VNET_HDR_LEN } else { 0 };
        // Leave TCP checksums of segments for sleeve peers partial (`FLAG_CSUM_PARTIAL`).
        let elide = shared.csum_elide;
        let mut n = 0;
        for (buf, len) in frames.chunks_mut(FRAME_BUF).zip(lens.iter_mut()) {
            match tap.read(buf) {
                Ok(0) => break,
                Ok(l) => {
                    *len = l;
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // A broken TAP port stays readable to `poll`: pause briefly so the socket
                    // side keeps being served without a busy loop, and say so once a second.
                    let now = Instant::now();
                    if last_error_log
                        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
                    {
                        tracing::warn!("reading the TAP port: {e}");
                        *last_error_log = Some(now);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                    break;
                }
            }
        }
        if n == 0 {
            return false;
        }
        // The virtio-net headers: complete partial checksums now, so that every path below
        // (sleeve, fast-path handoff, ICMP quotes) sees finished frames; super-frames are cut
        // later, per destination.
        for i in 0..n {
            let buf = &mut frames[i * FRAME_BUF..i * FRAME_BUF + lens[i]];
            hdrs[i] = VnetHdr::NONE;
            if skip == 0 {
                continue;
            }
            let checked = VnetHdr::parse(buf).and_then(|h| {
                let frame = buf.get_mut(skip..).ok_or(OffloadError::Truncated)?;
                if h.gso_type == offload::GsoType::None && h.needs_csum() {
                    offload::complete_checksum(&h, frame)?;
                }
                Ok(h)
            });
            match checked {
                Ok(h) => hdrs[i] = h,
                Err(_) => lens[i] = 0,
            }
        }
        let now = Instant::now();
        {
            let mut sw = shared.switch();
            for i in 0..n {
                if lens[i] >= skip {
                    let frame = &frames[i * FRAME_BUF + skip..i * FRAME_BUF + lens[i]];
                    decisions[i] = sw.from_local(now, frame);
                }
            }
        }
        let fabric = shared.fabric.load();
        for i in 0..n {
            if lens[i] < skip || lens[i] == 0 {
                c.drop(Reason::Offload);
                continue;
            }
            let frame = &frames[i * FRAME_BUF + skip..i * FRAME_BUF + lens[i]];
            c.tap_rx_frames.fetch_add(1, Relaxed);
            mine.tap_rx_frames.fetch_add(1, Relaxed);
            c.tap_rx_bytes.fetch_add(frame.len() as u64, Relaxed);
            let decision = decisions[i];
            if let Decision::Drop(r) = decision {
                c.drop(Reason::Switch(r));
                continue;
            }
            if hdrs[i].gso_type == offload::GsoType::None {
                out.frame(&fabric, decision, frame);
                continue;
            }
            let mut segments = match Segmenter::new(&hdrs[i], frame) {
                Ok(s) => s,
                Err(_) => {
                    c.drop(Reason::Offload);
                    continue;
                }
            };
            c.tap_rx_gso_frames.fetch_add(1, Relaxed);
            // A unicast to a sleeve peer: cut each segment straight into its datagram, with
            // the TCP checksum left partial (the peer completes it, or its kernel does).
            let need = segments.max_segment_len();
            if need <= shared.max_frame() {
                if let Some(route) = fabric.sleeve_route(decision) {
                    let (hop, addr, dst) = (route.hop, route.addr, route.dst);
                    // Only to a direct neighbour that said it takes the flag: a relay or an
                    // older build would drop the datagram.
                    let partial = elide
                        && segments.is_tcp()
                        && route.is_direct()
                        && dst.counters.takes_csum_partial.load(Relaxed);
                    if partial {
                        segments = segments.leave_checksum_partial();
                    }
                    for _ in 0..segments.count() {
                        let mut failed = false;
                        let fill = |buf: &mut [u8]| match segments.next_into(buf) {
                            Ok(Some(len)) => Some(len),
                            _ => {
                                failed = true;
                                None
                            }
                        };
                        let pushed = out.encap.push_with(
                            hop,
                            addr,
                            &dst.counters,
                            dst.name,
                            need,
                            partial,
                            fill,
                        );
                        if !pushed {
                            c.drop(if failed {
                                Reason::Offload
                            } else {
                                Reason::TooBig
                            });
                            break;
                        }
                        c.tap_rx_gso_segments.fetch_add(1, Relaxed);
                        c.unicast_frames.fetch_add(1, Relaxed);
                        if partial {
                            c.tx_csum_partial_segments.fetch_add(1, Relaxed);
                        }
                    }
                    continue;
                }
            }
            loop {
                match segments.next_into(segment) {
                    Ok(Some(len)) => {
                        c.tap_rx_gso_segments.fetch_add(1, Relaxed);
                        out.frame(&fabric, decision, &segment[..len]);
                    }
                    Ok(None) => break,
                    Err(_) => {
                        c.drop(Reason::Offload);
                        break;
                    }
                }
            }
        }
        out.encap.flush_all();
        // Forget datagram buffers of neighbours that left.
        if out.encap.pending.len() > 2 * fabric.entries().len() + 8 {
            out.encap
                .pending
                .retain(|(hop, _), _| fabric.is_neighbour(*hop));
        }
        true
    }
}

/// Where the TAP side sends frames, with its buffers.
struct TapOut<'a> {
    shared: &'a Shared,
    tap: &'a Tap,
    encap: Encap<'a>,
    icmp_buf: Vec<u8>,
    vxlan_buf: Vec<u8>,
    engine: Engine,
}

impl TapOut<'_> {
    /// Sends one frame (no larger than a segment) from a local pod as `decision` says: ICMP
    /// "too big" back to the pod, the fast-path peer's VXLAN device, one peer, or the flood tree.
    fn frame(&mut self, fabric: &Fabric, decision: Decision, frame: &[u8]) {
        let shared = self.shared;
        let c = &shared.counters;
        if frame.len() > shared.max_frame() {
            c.drop(Reason::TooBig);
            if let Ok(TooBig::Reply(len)) =
                icmp::too_big_reply(frame, shared.pod_mtu, &mut self.icmp_buf)
            {
                if self.tap.write(&self.icmp_buf[..len]).is_ok() {
                    c.icmp_too_big_sent.fetch_add(1, Relaxed);
                }
            }
            return;
        }
        let watch = &shared.watch;
        match fabric.unicast_route(decision) {
            Some(r) if r.is_fast() => {
                let (addr, dst) = (r.addr, r.dst);
                if watch.on() {
                    watch.observe_frame(frame, "tap in", || {
                        format!("handed to the VXLAN device for {}", dst.name)
                    });
                }
                // The peer is on the fast path: hand the frame to its kernel VXLAN device,
                // so that its bridge learns our pod's MAC on the VXLAN port and answers
                // there; our own bridge then learns the peer's MAC there too.
                c.unicast_frames.fetch_add(1, Relaxed);
                if let Some((vni, port)) = shared.vxlan {
                    let to = SocketAddr::new(addr.ip(), port);
                    let io = &self.encap.io;
                    if vxlan_send(io.socket, io.state, &mut self.vxlan_buf, vni, to, frame).is_ok()
                    {
                        c.vxlan_handoff_frames.fetch_add(1, Relaxed);
                        dst.counters.tx_frames.fetch_add(1, Relaxed);
                        dst.counters.tx_bytes.fetch_add(frame.len() as u64, Relaxed);
                    } else {
                        c.drop(Reason::SendError);
                    }
                }
            }
            Some(r) => {
                c.unicast_frames.fetch_add(1, Relaxed);
                if watch.on() {
                    watch.observe_frame(frame, "sleeve out", || {
                        let sealed = if r.hop.session.is_some() {
                            "encrypted"
                        } else {
                            "plain"
                        };
                        if r.hop.name == r.dst.name {
                            format!("to {}, {sealed}", r.dst.name)
                        } else {
                            format!("to {} via {}, {sealed}", r.dst.name, r.hop.name)
                        }
                    });
                }
                self.encap
                    .push(r.hop, r.addr, &r.dst.counters, r.dst.name, frame);
            }
            None => {
                // Broadcast, multicast, unknown unicast, or a MAC behind a peer we can no
                // longer reach: down our broadcast tree.
                c.flooded_frames.fetch_add(1, Relaxed);
                for (hop, addr) in self.engine.flood(fabric) {
                    self.encap
                        .push(hop, addr, &hop.counters, PeerName::BROADCAST, frame);
                }
            }
        }
    }
}
