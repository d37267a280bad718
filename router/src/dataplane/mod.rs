//! The per-packet path: one dedicated OS thread per worker (`--workers`), no tokio, no
//! allocation per packet.
//!
//! Each worker has its own queue of the TAP port and its own UDP socket on the listen port
//! ([`Tap::open_queues`], [`bind_sockets`]). The kernel hands a worker the frames of the flows
//! its TAP queue is given (by an eBPF program hashing addresses and ports) and the datagrams of
//! the lanes its socket is given (by a classic BPF program reading the sleeve header's lane, the
//! sending worker's number): a flow is carried by one worker on each host, in order
//! (`sys::steer`, docs/decisions.md "Cores"). The workers share [`Shared`]; a neighbour's
//! session is locked only to take a counter or record one, the AEAD work runs outside the lock.
//!
//! Each worker `poll`s its TAP queue and its UDP socket together and works on whichever is ready:
//!
//! * **TAP side** (`tap_side.rs`): reads a batch of frames from the TAP port, takes the forwarding
//!   decisions for the whole batch under one lock of the switch, cuts TCP super-frames into
//!   segments ([`vswitch::offload::Segmenter`]), packs the frames into one sleeve datagram per
//!   (next hop, destination) and sends them.
//! * **UDP side** (`udp_side.rs`): receives a batch of datagrams (`recvmmsg`, with UDP GRO when the
//!   kernel merges), checks each one, learns source MACs, joins in-order TCP segments of one flow
//!   into super-frames ([`vswitch::offload::Coalescer`]) and writes the frames to the TAP port.
//!
//! The protocol decisions are not taken here but by the sleeve engine
//! ([`vswitch::engine`]): which neighbour sent a datagram, whether it must be encrypted, relay
//! or deliver, the broadcast trees, heartbeats and their answers, where a local frame goes. The
//! files of this module move bytes and carry out what the engine answers:
//!
//! * this file: [`Shared`] (the state the control plane shares with the thread), [`Dataplane`]
//!   (start, stop, heartbeats) and the thread's loop;
//! * `counters.rs`: [`Reason`], [`Counters`], [`PeerCounters`], [`RttHistogram`];
//! * `fabric.rs`: [`PeerEntry`] and [`Fabric`] (the engine's fabric over the router's entries);
//! * `encap.rs`: datagrams being filled per (next hop, destination), sealing, the sends;
//! * `tap_side.rs` and `udp_side.rs`: the two sides of the loop.
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

mod counters;
mod encap;
mod fabric;
mod tap_side;
mod udp_side;

pub use counters::{Counters, PeerCounters, Reason, RttHistogram, WorkerCounters, RTT_BOUNDS_US};
pub use fabric::{Fabric, PeerEntry};

use crate::sys::{self, tap::Tap};
use arc_swap::ArcSwap;
use encap::seal_and_send;
use quinn_udp::UdpSocketState;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tap_side::TapSide;
use udp_side::UdpSide;
use vswitch::engine::{Engine, HEARTBEAT_LEN};
use vswitch::session::{self, HEADROOM};
use vswitch::{PeerName, Session, Switch};

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
    /// Each worker's share ([`Shared::with_workers`] sets how many there are).
    pub workers: Box<[WorkerCounters]>,
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
    /// Live traces armed (`weft trace --live`): the thread records what it does with a marked
    /// frame; one relaxed load per frame when none is.
    pub watch: crate::trace::watch::Watch,
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
            workers: Box::new([WorkerCounters::default()]),
            udp_gso: !disabled("udp-gso"),
            csum_elide: !disabled("csum-elide"),
            busy_poll: Duration::ZERO,
            epoch: Instant::now(),
            watch: Default::default(),
            running: AtomicBool::new(true),
        }
    }

    /// Sets the number of data plane workers (at least 1).
    pub fn with_workers(mut self, n: usize) -> Self {
        self.workers = (0..n.max(1)).map(|_| WorkerCounters::default()).collect();
        self
    }

    /// Locks the switch (a poisoned lock is taken over: the switch has no invariants a panic
    /// mid-decision could break).
    pub fn switch(&self) -> MutexGuard<'_, Switch> {
        self.switch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sleeve engine for this host.
    fn engine(&self) -> Engine {
        Engine::new(self.me, self.encrypted, self.epoch)
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

/// The running data plane workers, and the socket the control plane sends heartbeats on (the
/// first worker's).
#[derive(Debug)]
pub struct Dataplane {
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    state: Arc<UdpSocketState>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Dataplane {
    /// Starts one worker thread per (TAP queue, UDP socket) pair; `taps` and `sockets` are as
    /// many as [`Shared::workers`] (see [`Tap::open_queues`] and [`bind_sockets`]).
    pub fn start(
        shared: Arc<Shared>,
        taps: Vec<Tap>,
        sockets: Vec<UdpSocket>,
    ) -> io::Result<Dataplane> {
        if taps.is_empty() || taps.len() != sockets.len() || taps.len() != shared.workers.len() {
            return Err(io::Error::other(format!(
                "{} TAP queues and {} sockets for {} workers",
                taps.len(),
                sockets.len(),
                shared.workers.len()
            )));
        }
        let mut first = None;
        let mut threads = Vec::with_capacity(taps.len());
        for (index, (tap, socket)) in taps.into_iter().zip(sockets).enumerate() {
            let state = Arc::new(UdpSocketState::new((&socket).into())?);
            sys::force_socket_buffers(socket.as_fd(), 8 << 20)?;
            let socket = Arc::new(socket);
            if first.is_none() {
                first = Some((socket.clone(), state.clone()));
            }
            let ws = shared.clone();
            let name = if index == 0 {
                "weft-dataplane".to_string()
            } else {
                format!("weft-dataplane{index}")
            };
            let thread = std::thread::Builder::new()
                .name(name)
                .spawn(move || worker(&ws, index, &tap, &socket, &state));
            match thread {
                Ok(t) => threads.push(t),
                Err(e) => {
                    shared.running.store(false, Relaxed);
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(e);
                }
            }
        }
        let (socket, state) = first.expect("at least one worker");
        Ok(Dataplane {
            shared,
            socket,
            state,
            threads: Mutex::new(threads),
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
        let mut buf = [0u8; HEADROOM + HEARTBEAT_LEN + session::TAG_LEN];
        let n = self
            .shared
            .engine()
            .heartbeat(peer, seq, Instant::now(), &mut buf[HEADROOM..])
            .map_err(io::Error::other)?;
        let io = Io {
            tap: None,
            socket: &self.socket,
            state: &self.state,
        };
        seal_and_send(&io, session, &mut buf, n, addr)
            .map_err(|e| io::Error::other(format!("{e:?}")))
    }

    /// The UDP socket (for the fast path's probes, sent from the sleeve's port).
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Stops the workers and waits for them.
    pub fn stop(&self) {
        self.shared.running.store(false, Relaxed);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Binds the UDP sockets of `n` workers to `addr`: one socket as before for one worker; for
/// more, `n` sockets sharing the port (`SO_REUSEPORT`), with a program that hands each datagram
/// to the socket of its lane ([`sys::steer::attach_lane_steering`]): the sending worker's
/// number, modulo `n`. Datagrams without a lane (from older builds, heartbeats) reach the first.
pub fn bind_sockets(addr: SocketAddr, n: usize) -> io::Result<Vec<UdpSocket>> {
    if n <= 1 {
        return Ok(vec![UdpSocket::bind(addr)?]);
    }
    let domain = socket2::Domain::for_address(addr);
    let sockets = (0..n)
        .map(|_| {
            let s =
                socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
            if addr.is_ipv6() {
                // As std binds it: `[::]` takes IPv4 too.
                s.set_only_v6(false)?;
            }
            s.set_reuse_port(true)?;
            s.bind(&addr.into())?;
            Ok(s.into())
        })
        .collect::<io::Result<Vec<UdpSocket>>>()?;
    if let Err(e) = sys::steer::attach_lane_steering(sockets[0].as_fd(), n as u32) {
        tracing::warn!(
            "UDP lane steering unavailable ({e}): each neighbour's datagrams reach one worker"
        );
    }
    Ok(sockets)
}

/// What both sides of the data plane thread work with.
#[derive(Clone, Copy)]
struct Ports<'a> {
    shared: &'a Shared,
    /// This worker's number, from 0 (its lane).
    index: usize,
    /// This worker's counters.
    mine: &'a WorkerCounters,
    tap: &'a Tap,
    socket: &'a UdpSocket,
    state: &'a UdpSocketState,
}

/// The devices the data plane thread writes to.
struct Io<'a> {
    tap: Option<&'a Tap>,
    socket: &'a UdpSocket,
    state: &'a UdpSocketState,
}

/// The data plane thread: both sides, driven by one `poll` of the TAP port and the socket.
///
/// After any work it looks again at once, without sleeping: a frame written to the TAP port is
/// often answered before the write returns (a pod's ARP or ping reply goes through the bridge
/// in the writer's context), and that answer leaves without a thread wake-up. With a busy-poll
/// budget ([`Shared::busy_poll`]) it keeps looking for that long after the last work before it
/// sleeps, which saves the wake-up for an answer from another host at the price of a spinning
/// core.
fn worker(shared: &Shared, index: usize, tap: &Tap, socket: &UdpSocket, state: &UdpSocketState) {
    let ports = Ports {
        shared,
        index,
        mine: &shared.workers[index],
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
