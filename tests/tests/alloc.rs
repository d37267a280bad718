//! Regression guard: the per-packet path does not allocate.
//!
//! Runs the router's data plane thread in this process (TAP port on a bridge with a pod, in a
//! host namespace), with a counting global allocator that counts what the data plane thread
//! allocates once its buffers exist (`weft::dataplane::on_packet_path`). A fake peer in a second
//! namespace sends sleeve datagrams carrying ICMP echo requests to the pod; the pod's replies come
//! back through its TAP side. After a warm-up (first datagram buffers per peer, MAC learning),
//! a thousand round trips must allocate nothing. Then bursts of in-order TCP segments go to the
//! pod, which the receive side joins into super-frames (GRO) before the TAP write, and the pod's
//! resets come back: that path must allocate nothing either. Not timed.
//!
//! The encrypted sleeve is checked the same way, once per AEAD: the fake peer seals its echo
//! requests with a session whose keys match the data plane's and opens the replies.
//!
//! Needs root (network namespaces).

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vswitch::session::HEADROOM;
use vswitch::wire::sleeve::{push_frame, SleeveDatagram, SleeveHeader};
use vswitch::{Aead, Fdb, Key, PeerName, RekeyPolicy, Session, Switch};
use weft::dataplane::{Dataplane, Fabric, PeerCounters, PeerEntry, Shared};
use weft::sys::tap::Tap;
use weft_lab::{in_netns, Lab, PodSpec};

struct Counting;

static PACKET_PATH_ALLOCS: AtomicU64 = AtomicU64::new(0);

/// The count is global to the process: the tests take turns, so that one's warm-up does not
/// land in the other's measurement.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

// SAFETY: every method forwards to the system allocator unchanged; counting has no effect on
// the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if weft::dataplane::on_packet_path() {
            PACKET_PATH_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if weft::dataplane::on_packet_path() {
            PACKET_PATH_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract for `realloc` is passed on as it is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame with an ICMP echo request from `src` to `dst`.
fn echo_request(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    seq: u16,
) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(&[0x5a; 56]);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4_frame(src_mac, dst_mac, src, dst, 1, &icmp)
}

/// An Ethernet frame with a TCP segment (ACK, `payload` at `seq`) from `src`:40000 to `dst`:9.
fn tcp_segment(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    seq: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut tcp = vec![0x9c, 0x40, 0, 9];
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    tcp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&tcp);
    let c = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    ipv4_frame(src_mac, dst_mac, src, dst, 6, &tcp)
}

/// An Ethernet frame carrying an IPv4 packet (DF, TTL 64, checksummed) with protocol `proto`
/// and payload `l4`.
fn ipv4_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    l4: &[u8],
) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

/// The lab both tests use: hosts h1 and h2, the data plane of "h1" started on a thread inside
/// h1's namespace (its threads inherit it) with one sleeve peer, "h2" (`session`: encrypted), and
/// a pod on h1's bridge that answers the remote address 10.32.2.1 at MAC 02:77:00:00:00:99 without
/// asking for it.
struct Setup {
    lab: Lab,
    h2: weft_lab::Host,
    h1_addr: SocketAddr,
    peer_addr: SocketAddr,
    dp: Dataplane,
    shared: Arc<Shared>,
    pod: weft_lab::Pod,
}

const ME: PeerName = PeerName(1);
const PEER: PeerName = PeerName(2);
const REMOTE_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x99];
const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(10, 32, 2, 1);

fn setup(
    tag: &str,
    pod_mtu: u32,
    max_datagram: usize,
    session: Option<Arc<Mutex<Session>>>,
) -> Setup {
    let mut lab = Lab::new(tag).unwrap();
    let h1 = lab.add_host("h1").unwrap();
    let h2 = lab.add_host("h2").unwrap();
    let peer_addr = SocketAddr::V4(SocketAddrV4::new(h2.underlay_ip, 6783));
    let h1_addr = SocketAddr::V4(SocketAddrV4::new(h1.underlay_ip, 6783));
    let encrypted = session.is_some();
    let (dp, shared) = in_netns(&h1.ns, move || {
        let tap = weft_netlink::block_on(|nl| async move {
            let bridge = nl.ensure_bridge("weft", pod_mtu).await?;
            let tap = Tap::open("weft-tap")?;
            nl.attach("weft-tap", bridge, 65_000).await?;
            Ok::<_, anyhow::Error>(tap)
        })
        .unwrap();
        let socket = UdpSocket::bind(h1_addr).unwrap();
        let shared = Arc::new(Shared::new(
            ME,
            pod_mtu,
            max_datagram,
            encrypted,
            Switch::new(Fdb::new(1024, Duration::from_secs(300))),
        ));
        shared.fabric.store(Arc::new(Fabric::direct(
            ME,
            vec![PeerEntry {
                name: PEER,
                udp_addr: Some(peer_addr),
                counters: Arc::new(PeerCounters::default()),
                session,
                fast: false,
            }],
        )));
        let dp = Dataplane::start(shared.clone(), vec![tap], vec![socket]).unwrap();
        (dp, shared)
    })
    .unwrap();
    let pod = lab
        .add_pod(
            &h1,
            "p1",
            PodSpec::new(Ipv4Addr::new(10, 32, 1, 1), 12, pod_mtu),
        )
        .unwrap();
    lab.exec_ok(
        &pod.ns,
        &[
            "ip",
            "neigh",
            "replace",
            &REMOTE_IP.to_string(),
            "lladdr",
            "02:77:00:00:00:99",
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    )
    .unwrap();
    Setup {
        lab,
        h2,
        h1_addr,
        peer_addr,
        dp,
        shared,
        pod,
    }
}

#[test]
fn the_per_packet_path_does_not_allocate() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    assert!(
        weft_lab::require_root(),
        "this test needs root and iproute2"
    );
    let pod_mtu = 1436u32;
    let Setup {
        lab: _lab, // dropped at the end: it removes the namespaces
        h2,
        h1_addr,
        peer_addr,
        dp,
        shared,
        pod,
    } = setup("wal", pod_mtu, pod_mtu as usize + 64 - 28, None);
    let (me, peer, remote_mac, remote_ip) = (ME, PEER, REMOTE_MAC, REMOTE_IP);

    // The fake peer: sends echo requests in sleeve datagrams, counts the replies that come back.
    let pod_mac = pod.mac;
    let pod_ip = pod.ip;
    let round_trips = move |n: u16, first: u16| -> u64 {
        let sock = UdpSocket::bind(peer_addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = vec![0u8; 65_536];
        let mut replies = 0u64;
        for seq in first..first + n {
            let frame = echo_request(remote_mac, pod_mac, remote_ip, pod_ip, seq);
            let mut dgram = vec![0u8; 2048];
            let mut len = SleeveHeader::frames(peer, me).emit(&mut dgram).unwrap();
            len = push_frame(&mut dgram, len, &frame).unwrap();
            sock.send_to(&dgram[..len], h1_addr).unwrap();
            // Wait for this request's reply (a unicast frame back to us) before the next one.
            while let Ok((n, _)) = sock.recv_from(&mut buf) {
                let Ok(d) = SleeveDatagram::new_checked(&buf[..n]) else {
                    continue;
                };
                let is_reply = d
                    .frames()
                    .flatten()
                    .any(|f| f.len() > 34 && f[12..14] == [0x08, 0x00] && f[23] == 1 && f[34] == 0);
                if is_reply {
                    replies += 1;
                    break;
                }
            }
        }
        replies
    };
    let warm = in_netns(&h2.ns, move || round_trips(50, 0)).unwrap();
    assert!(
        warm >= 45,
        "only {warm} of 50 warm-up echo replies came back"
    );
    let before = PACKET_PATH_ALLOCS.load(Ordering::Relaxed);
    let replies = in_netns(&h2.ns, move || round_trips(1000, 100)).unwrap();
    let allocs = PACKET_PATH_ALLOCS.load(Ordering::Relaxed) - before;

    // Bursts of 16 in-order TCP segments of one flow, each in its own datagram; the pod answers
    // each (joined) segment with a reset, as nothing listens on its port.
    let bursts = move |n: u32| -> u64 {
        let sock = UdpSocket::bind(peer_addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = vec![0u8; 65_536];
        let payload = [0x6bu8; 1000];
        let mut resets = 0u64;
        for b in 0..n {
            for i in 0..16u32 {
                let seq = (b * 16 + i) * 1000;
                let frame = tcp_segment(remote_mac, pod_mac, remote_ip, pod_ip, seq, &payload);
                let mut dgram = vec![0u8; 2048];
                let mut len = SleeveHeader::frames(peer, me).emit(&mut dgram).unwrap();
                len = push_frame(&mut dgram, len, &frame).unwrap();
                sock.send_to(&dgram[..len], h1_addr).unwrap();
            }
            while let Ok((n, _)) = sock.recv_from(&mut buf) {
                let Ok(d) = SleeveDatagram::new_checked(&buf[..n]) else {
                    continue;
                };
                let is_reset = d.frames().flatten().any(|f| {
                    f.len() >= 54 && f[12..14] == [0x08, 0x00] && f[23] == 6 && f[47] & 0x04 != 0
                });
                if is_reset {
                    resets += 1;
                    break;
                }
            }
        }
        resets
    };
    let warm = in_netns(&h2.ns, move || bursts(5)).unwrap();
    assert!(warm >= 4, "only {warm} of 5 warm-up bursts were answered");
    let before_tcp = PACKET_PATH_ALLOCS.load(Ordering::Relaxed);
    let answered = in_netns(&h2.ns, move || bursts(200)).unwrap();
    let tcp_allocs = PACKET_PATH_ALLOCS.load(Ordering::Relaxed) - before_tcp;
    let joined = shared.counters.tap_tx_gso_frames.load(Ordering::Relaxed);
    eprintln!("{answered} of 200 TCP bursts answered; {joined} super-frames written to the TAP");
    dp.stop();
    assert!(
        answered >= 190,
        "only {answered} of 200 TCP bursts were answered"
    );
    assert_eq!(
        tcp_allocs, 0,
        "the per-packet path allocated {tcp_allocs} times for 200 TCP bursts"
    );
    assert!(
        replies >= 990,
        "only {replies} of 1000 echo replies came back"
    );
    assert_eq!(
        allocs, 0,
        "the per-packet path allocated {allocs} times for {replies} round trips"
    );
}

/// The echo round trips through the encrypted sleeve, with each AEAD: sealing the replies and
/// opening the requests allocate nothing either.
#[test]
fn the_encrypted_per_packet_path_does_not_allocate() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    assert!(
        weft_lab::require_root(),
        "this test needs root and iproute2"
    );
    for (tag, aead) in [("wac", Aead::ChaCha20Poly1305), ("waa", Aead::Aes256Gcm)] {
        encrypted_round_trips(tag, aead);
    }
}

fn encrypted_round_trips(tag: &str, aead: Aead) {
    let (to_peer, to_me) = ([0x31u8; 32], [0x13u8; 32]);
    let now = Instant::now();
    let policy = RekeyPolicy::default();
    let key = |b| Key::for_aead(aead, b);
    let session = Arc::new(Mutex::new(Session::new(
        now,
        0,
        key(to_peer),
        key(to_me),
        policy,
    )));

    let pod_mtu = 1411u32;
    let Setup {
        lab: _lab, // dropped at the end: it removes the namespaces
        h2,
        h1_addr,
        peer_addr,
        dp,
        pod,
        ..
    } = setup(tag, pod_mtu, 1500 - 28, Some(session));
    let (me, peer, remote_mac, remote_ip) = (ME, PEER, REMOTE_MAC, REMOTE_IP);

    // The fake peer's half of the session: it sends with what h1 receives with, and back.
    let theirs = Arc::new(Mutex::new(Session::new(
        now,
        0,
        key(to_me),
        key(to_peer),
        policy,
    )));
    let (pod_mac, pod_ip) = (pod.mac, pod.ip);
    let round_trips = move |n: u16, first: u16| -> u64 {
        let mut s = theirs.lock().unwrap();
        let sock = UdpSocket::bind(peer_addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = vec![0u8; 65_536];
        let mut replies = 0u64;
        for seq in first..first + n {
            let frame = echo_request(remote_mac, pod_mac, remote_ip, pod_ip, seq);
            let mut dgram = vec![0u8; 2048];
            let plain = &mut dgram[HEADROOM..];
            let mut len = SleeveHeader::frames(peer, me).emit(plain).unwrap();
            len = push_frame(plain, len, &frame).unwrap();
            let total = s.seal_in_place(&mut dgram, len).unwrap();
            sock.send_to(&dgram[..total], h1_addr).unwrap();
            while let Ok((n, _)) = sock.recv_from(&mut buf) {
                let Ok(range) = s.open_in_place(Instant::now(), &mut buf[..n]) else {
                    continue;
                };
                let Ok(d) = SleeveDatagram::new_checked(&buf[range]) else {
                    continue;
                };
                let is_reply = d
                    .frames()
                    .flatten()
                    .any(|f| f.len() > 34 && f[12..14] == [0x08, 0x00] && f[23] == 1 && f[34] == 0);
                if is_reply {
                    replies += 1;
                    break;
                }
            }
        }
        replies
    };
    let round_trips = Arc::new(round_trips);
    let warm_up = round_trips.clone();
    let warm = in_netns(&h2.ns, move || warm_up(50, 0)).unwrap();
    assert!(
        warm >= 45,
        "{aead}: only {warm} of 50 warm-up echo replies came back"
    );
    let before = PACKET_PATH_ALLOCS.load(Ordering::Relaxed);
    let measured = round_trips.clone();
    let replies = in_netns(&h2.ns, move || measured(1000, 100)).unwrap();
    let allocs = PACKET_PATH_ALLOCS.load(Ordering::Relaxed) - before;
    dp.stop();
    assert!(
        replies >= 990,
        "{aead}: only {replies} of 1000 echo replies came back"
    );
    assert_eq!(
        allocs, 0,
        "{aead}: the encrypted per-packet path allocated {allocs} times for {replies} round trips"
    );
}
