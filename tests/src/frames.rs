//! Raw frames from inside a pod: builders for the Ethernet, IPv4/UDP, ARP and ICMPv6 frames the
//! tests forge, a packet-socket sender ([`send_frames`], and [`Flooder`] for a paced stream on
//! its own thread) and a capture of marked frames ([`Sniffer`]). Used by tests/tests/guard.rs
//! (forged frames) and tests/tests/floods.rs (storms).
//!
//! Every socket is opened inside the pod's namespace by [`in_netns`], on a thread of its own,
//! and bound to the pod's `eth0`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};
use weft_lab::in_netns;

/// Marks a test frame, followed by the frame's kind: inside the UDP or ICMPv6 payload (the
/// kernel trims what follows an IP packet), after the ARP message.
pub const MARK: &[u8; 8] = b"WEFTMARK";
/// The broadcast MAC address.
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// The IPv6 link-local address the kernel derives from `mac` (EUI-64).
pub fn link_local(m: [u8; 6]) -> Ipv6Addr {
    let w = |a: u8, b: u8| u16::from_be_bytes([a, b]);
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        w(m[0] ^ 2, m[1]),
        w(m[2], 0xff),
        w(0xfe, m[3]),
        w(m[4], m[5]),
    )
}

/// The mark of `kind`.
pub fn mark(kind: u8) -> Vec<u8> {
    let mut m = MARK.to_vec();
    m.push(kind);
    m
}

/// An Ethernet frame.
pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// IPv4 + UDP (no UDP checksum).
pub fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let total = (20 + 8 + data.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let sum = h
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(data);
    h
}

/// Ethernet/IPv4 ARP (the mark goes after it).
pub fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa.octets());
    a
}

/// IPv6 + ICMPv6 (hop limit 255, checksum left 0: only the bridge looks at these).
pub fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(body.len() as u16).to_be_bytes());
    p.extend_from_slice(&[58, 255]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(body);
    p
}

/// A packet socket bound to nothing, with the address of `eth0` to send to. Call inside the
/// pod's namespace.
fn open_sender() -> (i32, libc::sockaddr_ll) {
    // SAFETY: plain socket calls; `sll` is a local the kernel only reads from.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = libc::if_nametoindex(c"eth0".as_ptr()) as i32;
        sll.sll_halen = 6;
        (fd, sll)
    }
}

/// Sends `f` on `fd` to `sll`; false when the socket's buffer is full (`ENOBUFS`).
fn send_one(fd: i32, sll: &libc::sockaddr_ll, f: &[u8]) -> bool {
    // SAFETY: `f` and `sll` outlive the call, which only reads them.
    let sent = unsafe {
        libc::sendto(
            fd,
            f.as_ptr().cast(),
            f.len(),
            0,
            (sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if sent == f.len() as isize {
        return true;
    }
    let e = std::io::Error::last_os_error();
    assert_eq!(e.raw_os_error(), Some(libc::ENOBUFS), "sendto: {e}");
    false
}

fn close(fd: i32) {
    // SAFETY: `fd` is a socket this module opened and nothing uses it after this.
    unsafe { libc::close(fd) };
}

/// Sends `frames` from `ns`'s `eth0` with a packet socket.
pub fn send_frames(ns: &str, frames: Vec<Vec<u8>>) {
    in_netns(ns, move || {
        let (fd, sll) = open_sender();
        for f in &frames {
            assert!(send_one(fd, &sll, f), "sendto: no buffer space");
        }
        close(fd);
    })
    .unwrap();
}

/// A stream of frames written from a pod's `eth0` at a steady rate, on its own thread inside
/// the pod's namespace, until it has sent `count` frames.
#[derive(Debug)]
pub struct Flooder {
    handle: thread::JoinHandle<(u64, Duration)>,
}

impl Flooder {
    /// Starts sending `count` frames at `pps` a second from `ns`; `frame(i)` builds the `i`-th.
    /// A frame the socket has no buffer for is retried, so exactly `count` leave.
    pub fn start(
        ns: &str,
        count: u64,
        pps: u64,
        frame: impl Fn(u64) -> Vec<u8> + Send + 'static,
    ) -> Flooder {
        let ns = ns.to_owned();
        let handle = thread::spawn(move || {
            in_netns(&ns, move || {
                let (fd, sll) = open_sender();
                let start = Instant::now();
                let mut sent = 0;
                while sent < count {
                    let due = (start.elapsed().as_secs_f64() * pps as f64) as u64;
                    if sent >= due {
                        thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    while sent < due.min(count) {
                        let f = frame(sent);
                        if send_one(fd, &sll, &f) {
                            sent += 1;
                        } else {
                            thread::sleep(Duration::from_micros(200));
                        }
                    }
                }
                close(fd);
                (sent, start.elapsed())
            })
            .unwrap()
        });
        Flooder { handle }
    }

    /// Whether the last frame has left.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Waits for the last frame: how many were sent and how long it took.
    pub fn join(self) -> (u64, Duration) {
        self.handle.join().unwrap()
    }
}

/// A capture of the marked frames arriving at `ns`'s `eth0`, until [`Sniffer::stop`].
#[derive(Debug)]
pub struct Sniffer {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Vec<u8>>,
}

impl Sniffer {
    /// Starts capturing (returns once the socket is bound).
    pub fn start(ns: &str) -> Sniffer {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, bound) = mpsc::channel();
        let (ns, flag) = (ns.to_owned(), stop.clone());
        let handle = thread::spawn(move || in_netns(&ns, move || capture(&flag, ready)).unwrap());
        bound.recv_timeout(Duration::from_secs(5)).unwrap();
        Sniffer { stop, handle }
    }

    /// The kinds of the marked frames seen.
    pub fn stop(self) -> Vec<u8> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

fn capture(stop: &AtomicBool, ready: mpsc::Sender<()>) -> Vec<u8> {
    let mut seen = Vec::new();
    // SAFETY: plain socket calls on a descriptor this function owns; `sll`, `tv`, `buf` and
    // `from` outlive every call that reads or writes them.
    unsafe {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto));
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = libc::if_nametoindex(c"eth0".as_ptr()) as i32;
        let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        assert_eq!(libc::bind(fd, (&raw const sll).cast(), len), 0);
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        let tvlen = std::mem::size_of::<libc::timeval>() as u32;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            tvlen,
        );
        // A storm must not overflow the capture: 4 MiB of receive buffer.
        let rcvbuf: i32 = 4 << 20;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const rcvbuf).cast(),
            std::mem::size_of::<i32>() as u32,
        );
        let _ = ready.send(());
        let mut buf = vec![0u8; 65536];
        loop {
            let mut from: libc::sockaddr_ll = std::mem::zeroed();
            let mut from_len = len;
            let n = libc::recvfrom(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&raw mut from).cast(),
                &mut from_len,
            );
            if n <= 0 {
                // Stopped and nothing left in the buffer (a read waits 100 ms at most).
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                continue;
            }
            // Only what arrives (the pod's own replies quote the marks too).
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let f = &buf[..n as usize];
            if let Some(i) = f.windows(MARK.len()).position(|w| w == MARK) {
                if let Some(kind) = f.get(i + MARK.len()) {
                    seen.push(*kind);
                }
            }
        }
        libc::close(fd);
    }
    seen
}
