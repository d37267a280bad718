//! The per-packet path: one dedicated OS thread, no tokio, no allocation per packet.
//!
//! The thread `poll`s the TAP port and the UDP socket together and works on whichever is ready:
//!
//! * **TAP side** ([`TapSide`]): reads a batch of frames from the TAP port, takes the forwarding
//!   decisions for the whole batch under one lock of the switch, cuts TCP super-frames into
//!   segments ([`vswitch::offload::Segmenter`]), packs the frames into one sleeve datagram per
//!   (next hop, destination) and sends them.
//! * **UDP side** ([`UdpSide`]): receives a batch of datagrams (`recvmmsg`, with UDP GRO when the
//!   kernel merges), checks each one, learns source MACs, joins in-order TCP segments of one flow
//!   into super-frames ([`vswitch::offload::Coalescer`]) and writes the frames to the TAP port.
//!
//! One thread rather than one per side: a frame written to the TAP port is often answered
//! before the write returns (the pod's reply goes through the bridge in the writer's context),
//! and the same thread then finds the answer without a wake-up; every wake-up saved is tens of
//! microseconds of round-trip time (`docs/performance.md`, "Latency").
//!
//! The TAP port has the virtio-net header and the TSO offloads on ([`crate::sys::tap`]): one read
//! or write moves up to 64 KiB. The datagrams for one (next hop, destination) pair leave with one
//! `sendmsg` per batch (UDP GSO, `UDP_SEGMENT`). Segments for one sleeve peer are cut straight
//! into their datagram; between peers that announced it in their heartbeat answers they travel
//! with partial TCP checksums (sleeve flag `FLAG_CSUM_PARTIAL`), which the receiver hands on to
//! its kernel unverified. Together that is what makes the sleeve fast (`docs/performance.md`).
//!
//! Buffers are allocated once when the thread starts. The peer table is read lock-free
//! ([`arc_swap`]); the MAC table sits behind a mutex taken once per batch (TAP side) or once per
//! datagram (UDP side). The control plane changes both from the tokio side.

use crate::sys::{self, tap::Tap};
use arc_swap::ArcSwap;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vswitch::offload::{self, Coalescer, OffloadError, Pushed, Segmenter, VnetHdr, VNET_HDR_LEN};
use vswitch::session::{self, EncryptedDatagram, HEADROOM};
use vswitch::wire::icmp::{self, TooBig};
use vswitch::wire::sleeve::{self, SleeveDatagram, SleeveHeader, SleeveKind};
use vswitch::{CryptoError, Decision, DropReason, PeerName, Session, Switch};

/// Frames read from the TAP port per batch.
const TAP_BATCH: usize = 64;
/// Bytes reserved per TAP frame buffer: a virtio-net header and the largest super-frame.
const FRAME_BUF: usize = VNET_HDR_LEN + offload::MAX_SUPER_FRAME;
/// Datagrams received per `recvmmsg`.
const UDP_BATCH: usize = 32;
/// Bytes per receive buffer (a GRO batch can fill 64 KiB).
const UDP_BUF: usize = 65_536;
/// How long the thread blocks before it checks whether it should stop.
const WAKE: Duration = Duration::from_millis(200);

/// True if the offload `name` (`tso`, `gro` or `udp-gso`) is listed in the environment variable
/// `WEFT_BENCH_DISABLE` (comma-separated): a switch for measuring each technique on its own
/// (`docs/performance.md`), not meant for production.
pub fn disabled(name: &str) -> bool {
    std::env::var("WEFT_BENCH_DISABLE").is_ok_and(|v| v.split(',').any(|s| s.trim() == name))
}

thread_local! {
    static PACKET_PATH: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True on a data plane thread once its buffers are allocated: from then on it runs the
/// per-packet path, which must not allocate (the allocation guard test counts what allocates
/// while this is true).
pub fn on_packet_path() -> bool {
    PACKET_PATH.try_with(|c| c.get()).unwrap_or(false)
}

/// Why the data plane dropped something. Each has a counter in [`Counters::drops`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The switch refused the frame (see [`DropReason`]).
    Switch(DropReason),
    /// A datagram whose sleeve header does not parse.
    MalformedDatagram,
    /// A datagram of another sleeve version.
    UnsupportedVersion,
    /// A frame record running past the end of its datagram, or empty.
    TruncatedRecord,
    /// A received frame larger than this host's pod MTU allows.
    OversizeFrame,
    /// A datagram from a peer we have no connection with.
    UnknownPeer,
    /// A datagram for another peer arriving at a host that does not relay it (unused today:
    /// every host relays).
    NotForUs,
    /// A frame from a local pod too large for the overlay path (the sender got ICMP when allowed).
    TooBig,
    /// The UDP send failed.
    SendError,
    /// Writing to the TAP port failed.
    TapWriteError,
    /// A relayed datagram whose hop budget ran out (a routing loop, or a path longer than 8).
    TtlExpired,
    /// A datagram to relay towards a peer we have no route to.
    NoRoute,
    /// An encrypted datagram refused (see [`CryptoError`]).
    Crypto(CryptoError),
    /// A datagram in clear from a peer whose traffic must be encrypted.
    Unencrypted,
    /// A frame from the TAP port whose virtio-net header or super-frame could not be handled
    /// (see [`OffloadError`]).
    Offload,
}

impl Reason {
    /// Every reason, in counter order.
    pub const ALL: [Reason; 26] = [
        Reason::Switch(DropReason::Truncated),
        Reason::Switch(DropReason::LinkLocal),
        Reason::Switch(DropReason::BadSource),
        Reason::Switch(DropReason::LocalDestination),
        Reason::Switch(DropReason::NotForUs),
        Reason::MalformedDatagram,
        Reason::UnsupportedVersion,
        Reason::TruncatedRecord,
        Reason::OversizeFrame,
        Reason::UnknownPeer,
        Reason::NotForUs,
        Reason::TooBig,
        Reason::SendError,
        Reason::TapWriteError,
        Reason::TtlExpired,
        Reason::NoRoute,
        Reason::Crypto(CryptoError::ALL[0]),
        Reason::Crypto(CryptoError::ALL[1]),
        Reason::Crypto(CryptoError::ALL[2]),
        Reason::Crypto(CryptoError::ALL[3]),
        Reason::Crypto(CryptoError::ALL[4]),
        Reason::Crypto(CryptoError::ALL[5]),
        Reason::Crypto(CryptoError::ALL[6]),
        Reason::Crypto(CryptoError::ALL[7]),
        Reason::Unencrypted,
        Reason::Offload,
    ];

    fn index(self) -> usize {
        match self {
            Reason::Switch(r) => r.index(),
            Reason::MalformedDatagram => 5,
            Reason::UnsupportedVersion => 6,
            Reason::TruncatedRecord => 7,
            Reason::OversizeFrame => 8,
            Reason::UnknownPeer => 9,
            Reason::NotForUs => 10,
            Reason::TooBig => 11,
            Reason::SendError => 12,
            Reason::TapWriteError => 13,
            Reason::TtlExpired => 14,
            Reason::NoRoute => 15,
            Reason::Crypto(e) => 16 + e.index(),
            Reason::Unencrypted => 24,
            Reason::Offload => 25,
        }
    }

    /// Stable snake_case name for status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Switch(r) => r.as_str(),
            Reason::MalformedDatagram => "malformed_datagram",
            Reason::UnsupportedVersion => "unsupported_version",
            Reason::TruncatedRecord => "truncated_record",
            Reason::OversizeFrame => "oversize_frame",
            Reason::UnknownPeer => "unknown_peer",
            Reason::NotForUs => "datagram_not_for_us",
            Reason::TooBig => "too_big",
            Reason::SendError => "send_error",
            Reason::TapWriteError => "tap_write_error",
            Reason::TtlExpired => "ttl_expired",
            Reason::NoRoute => "no_route",
            Reason::Crypto(e) => match e {
                CryptoError::Malformed => "crypto_malformed",
                CryptoError::UnknownKey => "crypto_unknown_key",
                CryptoError::AuthFailed => "crypto_auth_failed",
                CryptoError::Replayed => "crypto_replayed",
                CryptoError::TooOld => "crypto_too_old",
                CryptoError::CounterExhausted => "crypto_counter_exhausted",
                CryptoError::BufferTooSmall => "crypto_buffer_too_small",
                CryptoError::EpochInUse => "crypto_epoch_in_use",
            },
            Reason::Unencrypted => "unencrypted",
            Reason::Offload => "offload_error",
        }
    }
}

/// Host-wide data plane counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames read from the TAP port.
    pub tap_rx_frames: AtomicU64,
    /// Bytes read from the TAP port.
    pub tap_rx_bytes: AtomicU64,
    /// Frames written to the TAP port.
    pub tap_tx_frames: AtomicU64,
    /// Bytes written to the TAP port.
    pub tap_tx_bytes: AtomicU64,
    /// TCP super-frames read from the TAP port (counted in `tap_rx_frames` too).
    pub tap_rx_gso_frames: AtomicU64,
    /// Segments cut from those super-frames.
    pub tap_rx_gso_segments: AtomicU64,
    /// Of those, segments sent to a sleeve peer with the TCP checksum left partial
    /// (`FLAG_CSUM_PARTIAL`).
    pub tx_csum_partial_segments: AtomicU64,
    /// Super-frames written to the TAP port, each made of several received segments.
    pub tap_tx_gso_frames: AtomicU64,
    /// Segments joined into those super-frames.
    pub tap_tx_gso_segments: AtomicU64,
    /// Datagrams received.
    pub udp_rx_datagrams: AtomicU64,
    /// Datagrams sent.
    pub udp_tx_datagrams: AtomicU64,
    /// `sendmsg` calls that sent several datagrams at once (UDP GSO).
    pub udp_tx_gso_sends: AtomicU64,
    /// Frames sent to every peer (broadcast, multicast, unknown unicast).
    pub flooded_frames: AtomicU64,
    /// Frames sent to one known peer.
    pub unicast_frames: AtomicU64,
    /// ICMP "fragmentation needed" / "packet too big" replies sent to local pods.
    pub icmp_too_big_sent: AtomicU64,
    /// Datagrams forwarded on behalf of other peers (this host as a relay).
    pub relayed_datagrams: AtomicU64,
    /// UDP heartbeats answered.
    pub heartbeats_answered: AtomicU64,
    /// Frames for a fast-path peer that reached the router anyway (the bridge still had the
    /// destination on the TAP port) and were handed to the peer's kernel VXLAN device.
    pub vxlan_handoff_frames: AtomicU64,
    /// Drops, indexed like [`Reason::ALL`].
    pub drops: [AtomicU64; Reason::ALL.len()],
}

impl Counters {
    fn drop(&self, r: Reason) {
        self.drops[r.index()].fetch_add(1, Relaxed);
    }

    /// The drop counter for `r`.
    pub fn drops_for(&self, r: Reason) -> u64 {
        self.drops[r.index()].load(Relaxed)
    }
}

/// Per-peer counters and link state; they survive the peer's reconnections.
#[derive(Debug, Default)]
pub struct PeerCounters {
    /// Frames sent to the peer.
    pub tx_frames: AtomicU64,
    /// Frame bytes sent to the peer.
    pub tx_bytes: AtomicU64,
    /// Datagrams sent to the peer (or to the relay that leads to it).
    pub tx_datagrams: AtomicU64,
    /// Frames received from the peer.
    pub rx_frames: AtomicU64,
    /// Frame bytes received from the peer.
    pub rx_bytes: AtomicU64,
    /// Datagrams received from the peer (directly or relayed).
    pub rx_datagrams: AtomicU64,
    /// Datagrams from this peer that we forwarded on to others (we were its relay).
    pub relayed_datagrams: AtomicU64,
    /// Drops of traffic from this peer, indexed like [`Reason::ALL`].
    pub drops: [AtomicU64; Reason::ALL.len()],
    /// When the last UDP heartbeat answer arrived, in ms since [`Shared::epoch`] (0: never).
    pub last_ack_ms: AtomicU64,
    /// Round-trip time of the last UDP heartbeat, in microseconds.
    pub rtt_us: AtomicU64,
    /// The source address this peer's UDP heartbeats arrive from (behind NAT it differs from
    /// the address it announced).
    pub observed_addr: Mutex<Option<SocketAddr>>,
    /// Its last heartbeat answer said it takes `FLAG_CSUM_PARTIAL` datagrams (builds older than
    /// the flag answer without the capability byte and drop flagged datagrams).
    pub takes_csum_partial: AtomicBool,
}

impl PeerCounters {
    /// The drop counter for `r`.
    pub fn drops_for(&self, r: Reason) -> u64 {
        self.drops[r.index()].load(Relaxed)
    }
}

/// A peer the data plane knows: directly connected, or reachable through a relay.
#[derive(Debug, Clone)]
pub struct PeerEntry {
    /// Its name.
    pub name: PeerName,
    /// Where its sleeve datagrams go when it is a direct neighbour.
    pub udp_addr: Option<SocketAddr>,
    /// Its counters.
    pub counters: Arc<PeerCounters>,
    /// The encryption session with this neighbour (encrypted clusters, untrusted paths).
    pub session: Option<Arc<Mutex<Session>>>,
    /// This neighbour is reached through the kernel VXLAN fast path: broadcasts and unknown
    /// unicast reach it through the VXLAN device's flood list, so the sleeve must not flood to it.
    pub fast: bool,
}

/// What the data plane needs to forward: the peers, the next hop to each, and the broadcast
/// trees. Built by the control plane from the topology and replaced as a whole when it changes.
#[derive(Debug, Default)]
pub struct Fabric {
    /// Reachable peers, sorted by name.
    entries: Vec<PeerEntry>,
    /// For each entry (same index), the index of the direct neighbour that leads to it.
    next_hop: Vec<Option<usize>>,
    /// Broadcast trees: for a source, the indices of the neighbours we forward its broadcasts to.
    children: HashMap<PeerName, Vec<usize>>,
    /// Neighbours by the address their datagrams come from.
    by_addr: HashMap<SocketAddr, usize>,
}

impl Fabric {
    /// Builds a fabric. `routes` maps a destination to its next hop (a direct neighbour, i.e. an
    /// entry with an address); `children` gives, per broadcast source (ourselves included), the
    /// neighbours to forward to. Names not among `entries` are ignored; of two entries with one
    /// name, the first is kept.
    pub fn new(
        mut entries: Vec<PeerEntry>,
        routes: &[(PeerName, PeerName)],
        children: &[(PeerName, Vec<PeerName>)],
    ) -> Self {
        entries.sort_by_key(|e| e.name);
        entries.dedup_by_key(|e| e.name);
        let index = |n: PeerName| entries.binary_search_by_key(&n, |e| e.name).ok();
        let direct = |i: usize| entries[i].udp_addr.is_some();
        let mut next_hop = vec![None; entries.len()];
        for (dst, hop) in routes {
            if let (Some(d), Some(h)) = (index(*dst), index(*hop)) {
                if direct(h) {
                    next_hop[d] = Some(h);
                }
            }
        }
        let children = children
            .iter()
            .map(|(src, kids)| {
                let kids = kids
                    .iter()
                    .filter_map(|k| index(*k))
                    .filter(|&i| direct(i) && !entries[i].fast)
                    .collect();
                (*src, kids)
            })
            .collect();
        let by_addr = entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Some((e.udp_addr?, i)))
            .collect();
        Fabric {
            entries,
            next_hop,
            children,
            by_addr,
        }
    }

    /// A fabric of direct neighbours only: each is its own next hop, and our broadcasts go to
    /// all of them.
    pub fn direct(me: PeerName, entries: Vec<PeerEntry>) -> Self {
        let names: Vec<PeerName> = entries.iter().map(|e| e.name).collect();
        let routes: Vec<_> = names.iter().map(|n| (*n, *n)).collect();
        Fabric::new(entries, &routes, &[(me, names)])
    }

    /// The entry for `name`.
    pub fn get(&self, name: PeerName) -> Option<&PeerEntry> {
        self.index(name).map(|i| &self.entries[i])
    }

    fn index(&self, name: PeerName) -> Option<usize> {
        self.entries.binary_search_by_key(&name, |e| e.name).ok()
    }

    /// The direct neighbour that leads to `dst`, with its address.
    pub fn next_hop(&self, dst: PeerName) -> Option<(&PeerEntry, SocketAddr)> {
        let hop = &self.entries[self.next_hop[self.index(dst)?]?];
        Some((hop, hop.udp_addr?))
    }

    /// The neighbours a broadcast from `src` is forwarded to.
    pub fn children(&self, src: PeerName) -> impl Iterator<Item = (&PeerEntry, SocketAddr)> {
        self.children
            .get(&src)
            .map(|v| v.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|&i| Some((&self.entries[i], self.entries[i].udp_addr?)))
    }

    /// All entries, sorted by name.
    pub fn entries(&self) -> &[PeerEntry] {
        &self.entries
    }

    /// The neighbour whose datagrams come from `addr`.
    pub fn by_addr(&self, addr: SocketAddr) -> Option<&PeerEntry> {
        self.by_addr.get(&addr).map(|&i| &self.entries[i])
    }
}

/// State shared between the data plane thread and the control plane.
#[derive(Debug)]
pub struct Shared {
    /// Our peer name.
    pub me: PeerName,
    /// The pod MTU: frames up to `pod_mtu + 14` bytes cross the overlay.
    pub pod_mtu: u32,
    /// The largest sleeve datagram we send, as it goes on the wire.
    pub max_datagram: usize,
    /// The cluster has a secret: datagrams reserve room for encryption.
    pub encrypted: bool,
    /// The kernel fast path's VNI and UDP port, when it is on.
    pub vxlan: Option<(u32, u16)>,
    /// The switch.
    pub switch: Mutex<Switch>,
    /// Reachable peers, routes and broadcast trees.
    pub fabric: ArcSwap<Fabric>,
    /// Host-wide counters.
    pub counters: Counters,
    /// Send several datagrams per `sendmsg` with UDP GSO when the kernel can (on unless
    /// `WEFT_BENCH_DISABLE` lists `udp-gso`).
    pub udp_gso: bool,
    /// Leave TCP checksums of segments for sleeve peers that take it partial (on unless
    /// `WEFT_BENCH_DISABLE` lists `csum-elide`).
    pub csum_elide: bool,
    /// How long the data plane thread keeps polling without sleeping after its last work
    /// (`weft router --busy-poll`; zero: it sleeps as soon as there is nothing to do).
    pub busy_poll: Duration,
    /// Time zero for the millisecond timestamps in [`PeerCounters`].
    pub epoch: Instant,
    running: AtomicBool,
}

impl Shared {
    /// New shared state.
    pub fn new(
        me: PeerName,
        pod_mtu: u32,
        max_datagram: usize,
        encrypted: bool,
        switch: Switch,
    ) -> Self {
        Shared {
            me,
            pod_mtu,
            max_datagram,
            encrypted,
            vxlan: None,
            switch: Mutex::new(switch),
            fabric: ArcSwap::from_pointee(Fabric::default()),
            counters: Counters::default(),
            udp_gso: !disabled("udp-gso"),
            csum_elide: !disabled("csum-elide"),
            busy_poll: Duration::ZERO,
            epoch: Instant::now(),
            running: AtomicBool::new(true),
        }
    }

    /// Locks the switch (a poisoned lock is taken over: the switch has no invariants a panic
    /// mid-decision could break).
    pub fn switch(&self) -> MutexGuard<'_, Switch> {
        self.switch.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn max_frame(&self) -> usize {
        self.pod_mtu as usize + vswitch::wire::ethernet::HEADER_LEN
    }

    /// The largest plain sleeve datagram: the wire maximum less the encryption overhead.
    fn max_plain(&self) -> usize {
        if self.encrypted {
            self.max_datagram - session::OVERHEAD
        } else {
            self.max_datagram
        }
    }

    /// Milliseconds since [`Shared::epoch`] (at least 1, so that 0 can mean "never").
    pub fn now_ms(&self) -> u64 {
        (self.epoch.elapsed().as_millis() as u64).max(1)
    }
}

/// Length of a heartbeat body: a sequence number and the sender's send time in microseconds.
const HEARTBEAT_BODY: usize = 16;
/// A 17th heartbeat body byte: zero in a heartbeat, the answering peer's capabilities
/// (`CAP_*`) in the answer. Builds before it answer with the first 16 bytes only.
const HEARTBEAT_CAPS_BODY: usize = HEARTBEAT_BODY + 1;
/// Capability: takes frames datagrams flagged `sleeve::FLAG_CSUM_PARTIAL`.
const CAP_CSUM_PARTIAL: u8 = 0x01;

/// The running data plane thread, and the socket the control plane sends heartbeats on.
#[derive(Debug)]
pub struct Dataplane {
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    state: Arc<UdpSocketState>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Dataplane {
    /// Starts the data plane thread over the given TAP port and UDP socket.
    pub fn start(shared: Arc<Shared>, tap: Tap, socket: UdpSocket) -> io::Result<Dataplane> {
        let state = Arc::new(UdpSocketState::new((&socket).into())?);
        sys::force_socket_buffers(socket.as_fd(), 8 << 20)?;
        let tap = Arc::new(tap);
        let socket = Arc::new(socket);
        let thread = {
            let (shared, tap, socket, state) =
                (shared.clone(), tap.clone(), socket.clone(), state.clone());
            std::thread::Builder::new()
                .name("weft-dataplane".into())
                .spawn(move || worker(&shared, &tap, &socket, &state))?
        };
        Ok(Dataplane {
            shared,
            socket,
            state,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Sends a UDP heartbeat to the neighbour `peer` at `addr` (sealed with its session, if
    /// any); its answer updates the peer's `last_ack_ms`, `rtt_us` and `observed_addr`.
    pub fn send_heartbeat(
        &self,
        peer: PeerName,
        addr: SocketAddr,
        seq: u64,
        session: Option<&Mutex<Session>>,
    ) -> io::Result<()> {
        let mut buf = [0u8; HEADROOM + sleeve::HEADER_LEN + HEARTBEAT_CAPS_BODY + session::TAG_LEN];
        let header = SleeveHeader {
            kind: SleeveKind::Heartbeat,
            ttl: 1,
            src: self.shared.me,
            dst: peer,
        };
        let plain = &mut buf[HEADROOM..];
        let n = header.emit(plain).map_err(io::Error::other)?;
        let sent_us = self.shared.epoch.elapsed().as_micros() as u64;
        plain[n..n + 8].copy_from_slice(&seq.to_be_bytes());
        plain[n + 8..n + 16].copy_from_slice(&sent_us.to_be_bytes());
        let io = Io {
            tap: None,
            socket: &self.socket,
            state: &self.state,
        };
        seal_and_send(
            &io,
            session,
            &mut buf,
            sleeve::HEADER_LEN + HEARTBEAT_CAPS_BODY,
            addr,
        )
        .map_err(|e| io::Error::other(format!("{e:?}")))
    }

    /// The UDP socket (for the fast path's probes, sent from the sleeve's port).
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Stops the thread and waits for it.
    pub fn stop(&self) {
        self.shared.running.store(false, Relaxed);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// Bytes of sealed datagrams one UDP GSO send carries at most (the UDP length field's limit,
/// less room for headers).
const GSO_BYTES: usize = 65_000;
/// Datagrams one UDP GSO send carries at most (the kernel's `UDP_MAX_SEGMENTS` is 64 or more).
const GSO_SEGMENTS: usize = 64;

/// Datagrams for a (next hop, destination) pair: finished ones back to back at the start of
/// `buf`, sent together with one `sendmsg` and `UDP_SEGMENT` (all the same size but the last,
/// as UDP GSO requires), then the plain datagram being filled, built `HEADROOM` bytes after them
/// when it will be sealed in place.
struct Pending {
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
struct Encap<'a> {
    shared: &'a Shared,
    io: Io<'a>,
    pending: HashMap<(PeerName, PeerName), Pending>,
}

impl Encap<'_> {
    /// Appends `frame` to the datagram for `dst` going through the neighbour `hop`; `counters`
    /// are those of the peer the traffic is accounted to.
    fn push(
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
    fn push_with(
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

    fn flush_all(&mut self) {
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
        Some(s) => s
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .seal_in_place(&mut p.buf[p.ready..], p.len),
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
fn seal_and_send(
    io: &Io<'_>,
    session: Option<&Mutex<Session>>,
    buf: &mut [u8],
    len: usize,
    to: SocketAddr,
) -> Result<(), Reason> {
    let wire = match session {
        Some(s) => {
            let n = s
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .seal_in_place(buf, len)
                .map_err(Reason::Crypto)?;
            &buf[..n]
        }
        None => &buf[HEADROOM..HEADROOM + len],
    };
    send(io.socket, io.state, to, wire).map_err(|_| Reason::SendError)
}

/// Bytes of the VXLAN header (RFC 7348).
const VXLAN_HEADER: usize = 8;

/// Sends `frame` VXLAN-encapsulated (RFC 7348: flags with the I bit, 24-bit VNI) to a peer's
/// kernel VXLAN device.
fn vxlan_send(
    socket: &UdpSocket,
    state: &UdpSocketState,
    buf: &mut [u8],
    vni: u32,
    to: SocketAddr,
    frame: &[u8],
) -> io::Result<()> {
    let out = buf
        .get_mut(..VXLAN_HEADER + frame.len())
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    out[..VXLAN_HEADER].fill(0);
    out[0] = 0x08;
    out[4..7].copy_from_slice(&vni.to_be_bytes()[1..4]);
    out[VXLAN_HEADER..].copy_from_slice(frame);
    send(socket, state, to, out)
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

/// The TAP side of the data plane thread, with its buffers: reads frames from the TAP port and
/// sends each on its way.
struct TapSide<'a> {
    shared: &'a Shared,
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

/// What both sides of the data plane thread work with.
#[derive(Clone, Copy)]
struct Ports<'a> {
    shared: &'a Shared,
    tap: &'a Tap,
    socket: &'a UdpSocket,
    state: &'a UdpSocketState,
}

impl<'a> TapSide<'a> {
    fn new(ports: Ports<'a>) -> Self {
        let Ports { shared, tap, .. } = ports;
        TapSide {
            shared,
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
                vxlan_buf: vec![0u8; VXLAN_HEADER + FRAME_BUF],
                encap: Encap {
                    shared,
                    io: Io {
                        tap: None,
                        socket: ports.socket,
                        state: ports.state,
                    },
                    pending: HashMap::new(),
                },
            },
        }
    }

    /// Reads one batch of frames from the TAP port and sends each on its way. False if there
    /// was nothing to read.
    fn batch(&mut self) -> bool {
        let (shared, tap) = (self.shared, self.tap);
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
                if let Some((hop, addr, dst)) = TapOut::sleeve_route(&fabric, decision) {
                    // Only to a direct neighbour that said it takes the flag: a relay or an
                    // older build would drop the datagram.
                    let partial = elide
                        && hop.name == dst.name
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
                .retain(|(hop, _), _| fabric.get(*hop).is_some_and(|e| e.udp_addr.is_some()));
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
}

impl TapOut<'_> {
    /// Where `decision` sends a frame when that is one peer: the neighbour it goes to, its
    /// address and the destination peer. `None` for the flood tree (broadcast, multicast,
    /// unknown unicast, or a peer we can no longer reach).
    fn unicast_route(
        fabric: &Fabric,
        decision: Decision,
    ) -> Option<(&PeerEntry, SocketAddr, &PeerEntry)> {
        let Decision::Unicast(p) = decision else {
            return None;
        };
        let (hop, addr) = fabric.next_hop(p)?;
        Some((hop, addr, fabric.get(p)?))
    }

    /// True if a frame on `route` goes to the destination's kernel VXLAN device (a direct
    /// neighbour on the fast path) rather than through the sleeve.
    fn is_fast((hop, _, dst): (&PeerEntry, SocketAddr, &PeerEntry)) -> bool {
        hop.fast && hop.name == dst.name
    }

    /// Where `decision` sends a frame when that is one sleeve peer (not the kernel VXLAN fast
    /// path, not the flood tree): the neighbour, its address and the destination peer.
    fn sleeve_route(
        fabric: &Fabric,
        decision: Decision,
    ) -> Option<(&PeerEntry, SocketAddr, &PeerEntry)> {
        Self::unicast_route(fabric, decision).filter(|&r| !Self::is_fast(r))
    }

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
        match Self::unicast_route(fabric, decision) {
            Some(r @ (_, addr, dst)) if Self::is_fast(r) => {
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
            Some((hop, addr, dst)) => {
                c.unicast_frames.fetch_add(1, Relaxed);
                self.encap.push(hop, addr, &dst.counters, dst.name, frame);
            }
            None => {
                // Broadcast, multicast, unknown unicast, or a MAC behind a peer we can no
                // longer reach: down our broadcast tree.
                c.flooded_frames.fetch_add(1, Relaxed);
                for (hop, addr) in fabric.children(shared.me) {
                    self.encap
                        .push(hop, addr, &hop.counters, PeerName::BROADCAST, frame);
                }
            }
        }
    }
}

/// The UDP side of the data plane thread, with its buffers: receives datagrams and delivers,
/// relays or answers them.
struct UdpSide<'a> {
    ports: Ports<'a>,
    storage: Vec<u8>,
    metas: [RecvMeta; UDP_BATCH],
    rx: Rx,
}

impl<'a> UdpSide<'a> {
    fn new(ports: Ports<'a>) -> Self {
        UdpSide {
            ports,
            storage: vec![0u8; UDP_BATCH * UDP_BUF],
            metas: [RecvMeta::default(); UDP_BATCH],
            rx: Rx {
                deliver: Vec::with_capacity(UDP_BUF / 16),
                scratch: vec![0u8; HEADROOM + UDP_BUF + session::TAG_LEN].into_boxed_slice(),
                gro: (ports.tap.vnet_hdr() && !disabled("gro")).then(Coalescer::new),
            },
        }
    }

    /// Receives one batch of datagrams (`recvmmsg`) and handles each. False if there was
    /// nothing to receive.
    fn batch(&mut self) -> bool {
        let Ports {
            shared,
            tap,
            socket,
            state,
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
        for (meta, iov) in metas.iter().zip(iovs.iter_mut()).take(n) {
            let stride = meta.stride.max(1);
            for dgram in iov[..meta.len].chunks_mut(stride) {
                c.udp_rx_datagrams.fetch_add(1, Relaxed);
                receive(shared, &fabric, &io, dgram, meta.addr, rx);
            }
        }
        flush_gro(shared, tap, rx);
        true
    }
}

/// The data plane thread: both sides, driven by one `poll` of the TAP port and the socket.
///
/// After any work it looks again at once, without sleeping: a frame written to the TAP port is
/// often answered before the write returns (a pod's ARP or ping reply goes through the bridge
/// in the writer's context), and that answer leaves without a thread wake-up. With a busy-poll
/// budget ([`Shared::busy_poll`]) it keeps looking for that long after the last work before it
/// sleeps, which saves the wake-up for an answer from another host at the price of a spinning
/// core.
fn worker(shared: &Shared, tap: &Tap, socket: &UdpSocket, state: &UdpSocketState) {
    let ports = Ports {
        shared,
        tap,
        socket,
        state,
    };
    let mut tap_side = TapSide::new(ports);
    let mut udp_side = UdpSide::new(ports);
    PACKET_PATH.with(|c| c.set(true));
    let mut ready = [true, true];
    let mut last_work = Instant::now();
    while shared.running.load(Relaxed) {
        let mut worked = false;
        if ready[1] {
            worked |= udp_side.batch();
        }
        if ready[0] {
            worked |= tap_side.batch();
        }
        let timeout = if worked {
            if !shared.busy_poll.is_zero() {
                last_work = Instant::now();
            }
            Duration::ZERO
        } else if !shared.busy_poll.is_zero() && last_work.elapsed() < shared.busy_poll {
            Duration::ZERO
        } else {
            WAKE
        };
        if timeout.is_zero() && !worked {
            // Busy-polling: let whatever else wants this core (a pod's process woken by what
            // we delivered, the other side of the conversation) run first.
            std::thread::yield_now();
        }
        ready = match sys::wait_readable([tap.as_fd(), socket.as_fd()], timeout) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("polling the TAP port and the UDP socket: {e}");
                std::thread::sleep(WAKE);
                [true, true]
            }
        };
    }
}

/// Writes the super-frame the coalescer holds, if any, to the TAP port.
fn flush_gro(shared: &Shared, tap: &Tap, rx: &mut Rx) {
    let c = &shared.counters;
    let Some(gro) = rx.gro.as_mut() else {
        return;
    };
    let segments = u64::from(gro.segments());
    let Some(buf) = gro.take() else {
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

/// The devices the data plane thread writes to.
struct Io<'a> {
    tap: Option<&'a Tap>,
    socket: &'a UdpSocket,
    state: &'a UdpSocketState,
}

/// Buffers of the UDP side, allocated once.
struct Rx {
    /// Frames to deliver from the current datagram: (offset, length).
    deliver: Vec<(usize, usize)>,
    /// Where a datagram is re-sealed for the next hop.
    scratch: Box<[u8]>,
    /// Joins TCP segments into super-frames (when the TAP port takes them).
    gro: Option<Coalescer>,
}

fn count(shared: &Shared, peer: &PeerCounters, r: Reason) {
    peer.drops[r.index()].fetch_add(1, Relaxed);
    shared.counters.drop(r);
}

/// Forwards the plain datagram `plain` to the neighbour `hop` at `addr`: as it is when the hop
/// needs no encryption, else copied into `scratch` and sealed with the hop's session.
fn forward(
    io: &Io<'_>,
    hop: &PeerEntry,
    addr: SocketAddr,
    plain: &[u8],
    scratch: &mut [u8],
) -> Result<(), Reason> {
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

/// Handles one received datagram: opens it if it is encrypted, relays it if it is for others,
/// answers heartbeats, and learns and delivers its frames if it is for us.
fn receive(
    shared: &Shared,
    fabric: &Fabric,
    io: &Io<'_>,
    dgram: &mut [u8],
    from: SocketAddr,
    rx: &mut Rx,
) {
    let c = &shared.counters;
    // Which neighbour sent it: the one at its source address, else the one it names as source
    // (a neighbour whose address we have not confirmed yet).
    let h = if session::is_encrypted(dgram) {
        match EncryptedDatagram::new_checked(&*dgram) {
            Ok(d) => d.header(),
            Err(_) => return c.drop(Reason::MalformedDatagram),
        }
    } else {
        match SleeveDatagram::new_checked(&*dgram) {
            Ok(d) => d.header(),
            Err(vswitch::wire::Error::UnsupportedVersion) => {
                return c.drop(Reason::UnsupportedVersion)
            }
            Err(_) => return c.drop(Reason::MalformedDatagram),
        }
    };
    let hop = fabric.by_addr(from).or_else(|| fabric.get(h.src));
    let plain: &mut [u8] = if session::is_encrypted(dgram) {
        let Some(hop) = hop else {
            return c.drop(Reason::UnknownPeer);
        };
        let Some(s) = &hop.session else {
            return count(
                shared,
                &hop.counters,
                Reason::Crypto(CryptoError::UnknownKey),
            );
        };
        let opened = s
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .open_in_place(Instant::now(), dgram);
        match opened {
            Ok(range) => &mut dgram[range],
            Err(e) => return count(shared, &hop.counters, Reason::Crypto(e)),
        }
    } else {
        if let Some(hop) = hop {
            if hop.session.is_some() {
                return count(shared, &hop.counters, Reason::Unencrypted);
            }
        } else if shared.encrypted {
            return c.drop(Reason::UnknownPeer);
        }
        dgram
    };
    let Some(origin) = fabric.get(h.src) else {
        return c.drop(Reason::UnknownPeer);
    };
    let oc = &origin.counters;
    let for_us = h.dst == shared.me;
    if !for_us && !h.dst.is_broadcast() {
        // Relay towards the destination.
        if h.ttl <= 1 {
            return count(shared, oc, Reason::TtlExpired);
        }
        plain[2] = h.ttl - 1;
        match fabric.next_hop(h.dst) {
            Some((next, addr)) => match forward(io, next, addr, plain, &mut rx.scratch) {
                Ok(()) => {
                    oc.relayed_datagrams.fetch_add(1, Relaxed);
                    c.relayed_datagrams.fetch_add(1, Relaxed);
                }
                Err(r) => c.drop(r),
            },
            None => count(shared, oc, Reason::NoRoute),
        }
        return;
    }
    match h.kind {
        SleeveKind::Frames => {}
        SleeveKind::Heartbeat => {
            // Answer at once, to where it came from (through NAT, that is not the announced
            // address), and remember that address.
            if plain.len() >= sleeve::HEADER_LEN + HEARTBEAT_BODY && for_us {
                let reply = SleeveHeader {
                    kind: SleeveKind::HeartbeatAck,
                    ttl: 1,
                    src: shared.me,
                    dst: h.src,
                };
                // A heartbeat with the capability byte gets ours back.
                let body = if plain.len() >= sleeve::HEADER_LEN + HEARTBEAT_CAPS_BODY {
                    plain[sleeve::HEADER_LEN + HEARTBEAT_BODY] = CAP_CSUM_PARTIAL;
                    HEARTBEAT_CAPS_BODY
                } else {
                    HEARTBEAT_BODY
                };
                if reply.emit(plain).is_ok()
                    && forward(
                        io,
                        origin,
                        from,
                        &plain[..sleeve::HEADER_LEN + body],
                        &mut rx.scratch,
                    )
                    .is_ok()
                {
                    c.heartbeats_answered.fetch_add(1, Relaxed);
                }
                let mut seen = oc.observed_addr.lock().unwrap_or_else(|p| p.into_inner());
                if *seen != Some(from) {
                    *seen = Some(from);
                }
            }
            return;
        }
        SleeveKind::HeartbeatAck => {
            if plain.len() >= sleeve::HEADER_LEN + HEARTBEAT_BODY && for_us {
                let b = &plain[sleeve::HEADER_LEN..];
                let sent_us = u64::from_be_bytes(b[8..16].try_into().unwrap_or_default());
                let now_us = shared.epoch.elapsed().as_micros() as u64;
                oc.rtt_us.store(now_us.saturating_sub(sent_us), Relaxed);
                oc.last_ack_ms.store(shared.now_ms(), Relaxed);
                let caps = b.get(HEARTBEAT_BODY).copied().unwrap_or(0);
                oc.takes_csum_partial
                    .store(caps & CAP_CSUM_PARTIAL != 0, Relaxed);
            }
            return;
        }
    }
    if h.dst.is_broadcast() && h.ttl > 1 {
        // Pass it down the source's broadcast tree before delivering it here.
        let mut kids = fabric.children(h.src).peekable();
        if kids.peek().is_some() {
            plain[2] = h.ttl - 1;
            for (next, addr) in kids {
                match forward(io, next, addr, plain, &mut rx.scratch) {
                    Ok(()) => {
                        oc.relayed_datagrams.fetch_add(1, Relaxed);
                        c.relayed_datagrams.fetch_add(1, Relaxed);
                    }
                    Err(r) => c.drop(r),
                }
            }
        }
    }
    oc.rx_datagrams.fetch_add(1, Relaxed);
    let Ok(d) = SleeveDatagram::new_checked(&*plain) else {
        return;
    };
    // Its TCP segments carry partial checksums: not verified here (the UDP checksum or the AEAD
    // tag covered them), completed by the pod's kernel or, for a frame written alone, here.
    let partial = d.csum_partial();
    let max_frame = shared.max_frame() + 4; // room for one VLAN tag
    let base = plain.as_ptr() as usize;
    rx.deliver.clear();
    {
        let now = Instant::now();
        let mut sw = shared.switch();
        for rec in d.frames() {
            let frame = match rec {
                Ok(f) => f,
                Err(_) => {
                    count(shared, oc, Reason::TruncatedRecord);
                    break;
                }
            };
            if frame.len() > max_frame {
                count(shared, oc, Reason::OversizeFrame);
                continue;
            }
            match sw.from_peer(now, h.src, frame) {
                Decision::Drop(r) => count(shared, oc, Reason::Switch(r)),
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
            // Keep the order: what the coalescer holds goes first.
            flush_gro(shared, tap, rx);
        }
        if partial {
            if let Some(h) = offload::tcp_partial_hdr(frame) {
                if offload::complete_checksum(&h, frame).is_err() {
                    count(shared, oc, Reason::Offload);
                    continue;
                }
            }
        }
        let frame = &*frame;
        match tap.write(frame) {
            Ok(_) => {
                c.tap_tx_frames.fetch_add(1, Relaxed);
                c.tap_tx_bytes.fetch_add(len as u64, Relaxed);
            }
            Err(_) => c.drop(Reason::TapWriteError),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_indices_match_all() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        let names: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len(), "names are unique");
    }
}
