//! Sending: the datagrams being filled per (next hop, destination) ([`Pending`], [`Encap`]),
//! sealing them with the hop's session, UDP GSO batches, relaying a plain datagram
//! ([`forward`]) and the hand-off of a frame to a fast-path peer's kernel VXLAN device
//! ([`vxlan_send`]).

use super::{Io, PeerCounters, PeerEntry, Reason, Shared};
use crate::sys;
use foldhash::HashMap;
use quinn_udp::{Transmit, UdpSocketState};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vswitch::session::{self, HEADROOM};
use vswitch::wire::sleeve::{self, SleeveHeader};
use vswitch::wire::vxlan::VxlanRepr;
use vswitch::{PeerName, Session};

/// Bytes of sealed datagrams one UDP GSO send carries at most (the UDP length field's limit,
/// less room for headers).
const GSO_BYTES: usize = 65_000;
/// Datagrams one UDP GSO send carries at most (the kernel's `UDP_MAX_SEGMENTS` is 64 or more).
const GSO_SEGMENTS: usize = 64;

/// Datagrams for a (next hop, destination) pair: finished ones back to back at the start of
/// `buf`, sent together with one `sendmsg` and `UDP_SEGMENT` (all the same size but the last,
/// as UDP GSO requires), then the plain datagram being filled, built `HEADROOM` bytes after them
/// when it will be sealed in place.
pub(super) struct Pending {
    next_hop: SocketAddr,
    counters: Arc<PeerCounters>,
    session: Option<Arc<Mutex<Session>>>,
    header: SleeveHeader,
    buf: Box<[u8]>,
    /// Bytes of finished (sealed) datagrams at the start of `buf`.
    ready: usize,
    /// How many there are, and the size of the first.
    ready_count: usize,
    seg_size: usize,
    ready_frames: u64,
    ready_bytes: u64,
    /// Where the plain datagram being filled starts.
    start: usize,
    /// Its length.
    len: usize,
    frames: u64,
    bytes: u64,
    /// Its TCP segments carry partial checksums (`sleeve::FLAG_CSUM_PARTIAL` is set).
    partial: bool,
}

impl Pending {
    fn reset(&mut self) {
        let pre = if self.session.is_some() { HEADROOM } else { 0 };
        self.start = self.ready + pre;
        self.len = self.header.emit(&mut self.buf[self.start..]).unwrap_or(0);
        self.frames = 0;
        self.bytes = 0;
        self.partial = false;
    }
}

/// Packs frames into datagrams and sends them.
pub(super) struct Encap<'a> {
    pub(super) shared: &'a Shared,
    pub(super) io: Io<'a>,
    /// This worker's lane ([`sleeve::LANE_MASK`]), put on datagrams to neighbours that take
    /// lanes.
    pub(super) lane: usize,
    pub(super) pending: HashMap<(PeerName, PeerName), Pending>,
}

impl Encap<'_> {
    /// Appends `frame` to the datagram for `dst` going through the neighbour `hop`; `counters`
    /// are those of the peer the traffic is accounted to.
    pub(super) fn push(
        &mut self,
        hop: &PeerEntry,
        addr: SocketAddr,
        counters: &Arc<PeerCounters>,
        dst: PeerName,
        frame: &[u8],
    ) {
        let fill = |out: &mut [u8]| {
            out.get_mut(..frame.len())?.copy_from_slice(frame);
            Some(frame.len())
        };
        if !self.push_with(hop, addr, counters, dst, frame.len(), false, fill) {
            self.shared.counters.drop(Reason::TooBig);
        }
    }

    /// Appends one frame of at most `need` bytes, written by `fill` straight into the datagram
    /// for `dst` (no copy in between): `fill` gets the room after the record's length prefix and
    /// returns the frame's length, or `None` to write nothing. `partial`: the frame is a TCP
    /// segment with a partial checksum, which only a datagram flagged `FLAG_CSUM_PARTIAL` may
    /// carry (and such a datagram carries no complete TCP checksum). False if no frame was
    /// appended (`fill` refused, or the frame cannot fit in an empty datagram).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn push_with(
        &mut self,
        hop: &PeerEntry,
        addr: SocketAddr,
        counters: &Arc<PeerCounters>,
        dst: PeerName,
        need: usize,
        partial: bool,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        let max = self.shared.max_plain();
        let me = self.shared.me;
        let p = self.pending.entry((hop.name, dst)).or_insert_with(|| {
            let mut p = Pending {
                next_hop: addr,
                counters: counters.clone(),
                session: hop.session.clone(),
                header: SleeveHeader::frames(me, dst),
                buf: vec![0u8; GSO_BYTES + HEADROOM + max + session::TAG_LEN].into_boxed_slice(),
                ready: 0,
                ready_count: 0,
                seg_size: 0,
                ready_frames: 0,
                ready_bytes: 0,
                start: 0,
                len: 0,
                frames: 0,
                bytes: 0,
                partial: false,
            };
            p.reset();
            p
        });
        // The neighbour may have moved, or been given a new session, since this entry was made:
        // what was built for the old ones goes out first.
        let same_session = match (&p.session, &hop.session) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if p.next_hop != addr || !Arc::ptr_eq(&p.counters, counters) || !same_session {
            close(self.shared, &self.io, p);
            send_ready(self.shared, &self.io, p);
            p.next_hop = addr;
            p.counters = counters.clone();
            p.session = hop.session.clone();
            p.reset();
        }
        if need == 0 || need > usize::from(u16::MAX) {
            return false;
        }
        if p.frames > 0 && p.partial != partial {
            close(self.shared, &self.io, p);
        }
        if p.len + sleeve::FRAME_PREFIX_LEN + need > max {
            close(self.shared, &self.io, p);
            if p.len + sleeve::FRAME_PREFIX_LEN + need > max {
                return false;
            }
        }
        if p.frames == 0 {
            p.partial = partial;
            sleeve::set_csum_partial(&mut p.buf[p.start..], partial);
            let lanes = hop.counters.takes_lanes.load(Relaxed);
            sleeve::set_lane(&mut p.buf[p.start..], if lanes { self.lane } else { 0 });
        }
        let datagram = &mut p.buf[p.start..p.start + max];
        match sleeve::push_frame_with(datagram, p.len, |out| fill(out).filter(|&n| n <= need)) {
            Ok(len) => {
                p.bytes += (len - p.len - sleeve::FRAME_PREFIX_LEN) as u64;
                p.len = len;
                p.frames += 1;
                true
            }
            Err(_) => false,
        }
    }

    pub(super) fn flush_all(&mut self) {
        for p in self.pending.values_mut() {
            close(self.shared, &self.io, p);
            send_ready(self.shared, &self.io, p);
            // The next datagram starts at the front of the buffer again.
            p.reset();
        }
    }
}

/// Finishes the datagram being filled: seals it (when the hop has a session) and queues it
/// behind the finished ones, sending those first or after as UDP GSO requires.
fn close(shared: &Shared, io: &Io<'_>, p: &mut Pending) {
    if p.frames == 0 {
        return;
    }
    let wire = match &p.session {
        Some(s) => seal(s, &mut p.buf[p.ready..], p.len),
        None => Ok(p.len),
    };
    let w = match wire {
        Ok(w) => w,
        Err(e) => {
            shared.counters.drop(Reason::Crypto(e));
            p.reset();
            return;
        }
    };
    if p.ready_count > 0 && w > p.seg_size {
        // Larger than the datagrams before it: they go alone, this one starts a new batch.
        let at = p.ready;
        send_ready(shared, io, p);
        p.buf.copy_within(at..at + w, 0);
    }
    if p.ready_count == 0 {
        p.seg_size = w;
    }
    p.ready += w;
    p.ready_count += 1;
    p.ready_frames += p.frames;
    p.ready_bytes += p.bytes;
    let max_segments = if !shared.udp_gso {
        1
    } else {
        io.state.max_gso_segments().clamp(1, GSO_SEGMENTS)
    };
    let room = HEADROOM + shared.max_plain() + session::TAG_LEN;
    if w < p.seg_size || p.ready_count >= max_segments || p.ready + room > GSO_BYTES {
        send_ready(shared, io, p);
    }
    p.reset();
}

/// Sends the finished datagrams: one `sendmsg`, with `UDP_SEGMENT` when there are several. The
/// caller resets the datagram being filled if it was built behind them.
fn send_ready(shared: &Shared, io: &Io<'_>, p: &mut Pending) {
    if p.ready_count == 0 {
        return;
    }
    let segment = (p.ready_count > 1).then_some(p.seg_size);
    match send_segments(io.socket, io.state, p.next_hop, &p.buf[..p.ready], segment) {
        Ok(()) => {
            let n = p.ready_count as u64;
            p.counters.tx_datagrams.fetch_add(n, Relaxed);
            p.counters.tx_frames.fetch_add(p.ready_frames, Relaxed);
            p.counters.tx_bytes.fetch_add(p.ready_bytes, Relaxed);
            shared.counters.udp_tx_datagrams.fetch_add(n, Relaxed);
            if n > 1 {
                shared.counters.udp_tx_gso_sends.fetch_add(1, Relaxed);
            }
        }
        Err(_) => shared.counters.drop(Reason::SendError),
    }
    p.ready = 0;
    p.ready_count = 0;
    p.ready_frames = 0;
    p.ready_bytes = 0;
}

/// Sends the plain datagram at `buf[HEADROOM..HEADROOM + len]`: sealed in place with `session`
/// if there is one, in clear otherwise. `buf` has room for the tag after the datagram.
pub(super) fn seal_and_send(
    io: &Io<'_>,
    session: Option<&Mutex<Session>>,
    buf: &mut [u8],
    len: usize,
    to: SocketAddr,
) -> Result<(), Reason> {
    let wire = match session {
        Some(s) => {
            let n = seal(s, buf, len).map_err(Reason::Crypto)?;
            &buf[..n]
        }
        None => &buf[HEADROOM..HEADROOM + len],
    };
    send(io.socket, io.state, to, wire).map_err(|_| Reason::SendError)
}

/// Seals the plain datagram at `buf[HEADROOM..HEADROOM + len]` in place with `session`'s send
/// key. The session is locked only to take the counter ([`Session::ticket`]); the encryption runs
/// outside the lock, so workers sending to one peer, and the worker receiving from it, do not
/// wait for each other's AEAD work.
fn seal(
    session: &Mutex<Session>,
    buf: &mut [u8],
    len: usize,
) -> Result<usize, vswitch::CryptoError> {
    let ticket = session.lock().unwrap_or_else(|p| p.into_inner()).ticket()?;
    ticket.seal_in_place(buf, len)
}

/// Sends `frame` VXLAN-encapsulated (RFC 7348, [`vswitch::wire::vxlan`]) to a peer's kernel
/// VXLAN device, built in `buf`.
pub(super) fn vxlan_send(
    socket: &UdpSocket,
    state: &UdpSocketState,
    buf: &mut [u8],
    vni: u32,
    to: SocketAddr,
    frame: &[u8],
) -> io::Result<()> {
    let len = VxlanRepr { vni }
        .encapsulate(frame, buf)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    send(socket, state, to, &buf[..len])
}

/// Sends one datagram, waiting for socket buffer space rather than dropping when it is full.
fn send(socket: &UdpSocket, state: &UdpSocketState, to: SocketAddr, data: &[u8]) -> io::Result<()> {
    send_segments(socket, state, to, data, None)
}

/// Sends `data` as one datagram, or with `segment` as datagrams of that size (UDP GSO), waiting
/// for socket buffer space rather than dropping when it is full.
fn send_segments(
    socket: &UdpSocket,
    state: &UdpSocketState,
    to: SocketAddr,
    data: &[u8],
    segment: Option<usize>,
) -> io::Result<()> {
    let t = Transmit {
        destination: to,
        ecn: None,
        contents: data,
        segment_size: segment,
        src_ip: None,
    };
    for _ in 0..50 {
        match state.try_send(socket.into(), &t) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                sys::wait_writable(socket.as_fd(), Duration::from_millis(20))?;
            }
            other => return other,
        }
    }
    Err(io::ErrorKind::WouldBlock.into())
}

/// Forwards the plain datagram `plain` to the neighbour `hop` at `addr`: as it is when the hop
/// needs no encryption, else copied into `scratch` and sealed with the hop's session. Its lane
/// is cleared first if the hop does not take lanes.
pub(super) fn forward(
    io: &Io<'_>,
    hop: &PeerEntry,
    addr: SocketAddr,
    plain: &mut [u8],
    scratch: &mut [u8],
) -> Result<(), Reason> {
    // The lane it came with goes on (the datagrams of one lane stay in order through the relay
    // too), unless the next hop does not take lanes.
    if sleeve::lane(plain) != 0 && !hop.counters.takes_lanes.load(Relaxed) {
        sleeve::set_lane(plain, 0);
    }
    let plain = &*plain;
    match &hop.session {
        None => send(io.socket, io.state, addr, plain).map_err(|_| Reason::SendError),
        Some(s) => {
            let buf = scratch
                .get_mut(..HEADROOM + plain.len() + session::TAG_LEN)
                .ok_or(Reason::TooBig)?;
            buf[HEADROOM..HEADROOM + plain.len()].copy_from_slice(plain);
            seal_and_send(io, Some(s), buf, plain.len(), addr)
        }
    }
}
