//! The port guard end to end: pods attached through upstream `cnitool`, one of them forging
//! frames with a packet socket (the CAP_NET_RAW a container runtime grants), receivers on the
//! same host and on another host capturing with packet sockets of their own. Nothing forged
//! arrives, the forger's drop counter and the per-reason counters move by exactly what was
//! sent, the honest pods are never dropped and keep pinging throughout; DEL removes the port's
//! elements; a port attached by hand passes; the guard survives a router restart with its
//! counters.
//!
//! Needs root, `cnitool`, `nft` and the release `weft` and `weft-cni` binaries, like
//! tests/tests/cni.rs.

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;
use weft_api::guard::GuardReport;
use weft_lab::testbed::{ping, weft_bin, Cluster};
use weft_lab::{in_netns, poll_until, Host, PodSpec};
use weft_tests::cni::{Cni, CniPod};

const POD_CIDR: &str = "10.32.0.0/12";
/// Marks a test frame, followed by the frame's kind: inside the UDP or ICMPv6 payload (the
/// kernel trims what follows an IP packet), after the ARP message.
const MARK: &[u8; 8] = b"WEFTMARK";
const BROADCAST: [u8; 6] = [0xff; 6];

// ---------------------------------------------------------------------------------------------
// The cluster and the pods.
// ---------------------------------------------------------------------------------------------

/// `n` routers with IPAM, a CNI harness and each host's `weft` network.
fn cni_cluster(tag: &str, n: u8) -> (Cluster, Vec<Host>, Cni, Vec<String>) {
    assert!(weft_lab::require_root(), "these tests need root");
    let mut c = Cluster::new(tag, weft_bin().unwrap()).unwrap();
    let peers = n.to_string();
    let args = ["--pod-cidr", POD_CIDR, "--ipam-init-peers", &peers];
    let hosts = c.full_mesh(n, &vec![&args[..]; n as usize]).unwrap();
    let cni = Cni::new(&c.lab).unwrap();
    let nets = hosts
        .iter()
        .map(|h| {
            let plugins = vec![Cni::weft_plugin(&c.state_dir(h))];
            cni.write_conflist(h, "weft", plugins).unwrap()
        })
        .collect();
    for h in &hosts {
        let ready = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
            c.ipam(h).ok().filter(|r| r.ready)
        });
        assert!(ready.is_some(), "{}:\n{}", h.name, c.router_log(h));
    }
    (c, hosts, cni, nets)
}

/// The container id cnitool gives an attachment (tests/tests/cni.rs explains it).
fn cnitool_container_id(netns_path: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA512, netns_path.as_bytes());
    let hex: String = d.as_ref()[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("cnitool-{hex}")
}

/// A pod attached by `cnitool add`, with its MAC.
struct Guarded {
    pod: CniPod,
    mac: [u8; 6],
}

fn add(c: &mut Cluster, cni: &Cni, host: &Host, net: &str, name: &str) -> Guarded {
    let ns = c.lab.add_netns(&format!("{}-{name}", host.name)).unwrap();
    let out = cni.cnitool(&c.lab, host, "add", net, &ns, &[]).unwrap();
    assert!(out.success(), "{out}\n{}", c.router_log(host));
    let id = cnitool_container_id(&format!("/run/netns/{ns}"));
    let pod = CniPod::from_result(host, &ns, &id, "eth0", out.json().unwrap()).unwrap();
    let mac = c.lab.mac(&ns, "eth0").unwrap();
    Guarded { pod, mac }
}

fn guard(c: &Cluster, host: &Host) -> GuardReport {
    c.status(host).unwrap().guard.expect("a guard section")
}

/// `(dropped packets, port name)` of `pod`'s port, if guarded.
fn port_drops(c: &Cluster, pod: &CniPod) -> Option<(u64, String)> {
    guard(c, &pod.host)
        .ports
        .into_iter()
        .find(|p| p.attachment.container_id == pod.container_id)
        .map(|p| (p.dropped_packets, p.port.name))
}

fn assert_pings(c: &Cluster, from: &CniPod, to: Ipv4Addr) {
    let ok = poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        ping(&c.lab, &from.ns, to, 1)
            .ok()
            .filter(|p| p.received == 1)
    });
    assert!(ok.is_some(), "{} cannot reach {to}", from.ns);
}

fn nft_list(c: &Cluster, host: &Host, what: &[&str]) -> String {
    let mut args = vec!["nft", "list"];
    args.extend_from_slice(what);
    let out = c.lab.exec(&host.ns, &args).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Frames.
// ---------------------------------------------------------------------------------------------

/// The IPv6 link-local address the kernel derives from `mac` (EUI-64).
fn link_local(m: [u8; 6]) -> Ipv6Addr {
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
fn mark(kind: u8) -> Vec<u8> {
    let mut m = MARK.to_vec();
    m.push(kind);
    m
}

/// An Ethernet frame.
fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// IPv4 + UDP (no UDP checksum).
fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
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
fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa.octets());
    a
}

/// IPv6 + ICMPv6 (hop limit 255, checksum left 0: only the bridge looks at these).
fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(body.len() as u16).to_be_bytes());
    p.extend_from_slice(&[58, 255]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(body);
    p
}

/// Sends `frames` from `ns`'s `eth0` with a packet socket.
fn send_frames(ns: &str, frames: Vec<Vec<u8>>) {
    in_netns(ns, move || {
        // SAFETY: plain socket calls on a descriptor this closure owns; the address and frame
        // buffers outlive the calls that read them.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = libc::if_nametoindex(c"eth0".as_ptr()) as i32;
            sll.sll_halen = 6;
            for f in &frames {
                let sent = libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&raw const sll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(
                    sent,
                    f.len() as isize,
                    "{}",
                    std::io::Error::last_os_error()
                );
            }
            libc::close(fd);
        }
    })
    .unwrap();
}

/// A capture of the marked frames arriving at `ns`'s `eth0`, until [`Sniffer::stop`].
struct Sniffer {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Vec<u8>>,
}

impl Sniffer {
    fn start(ns: &str) -> Sniffer {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, bound) = mpsc::channel();
        let (ns, flag) = (ns.to_owned(), stop.clone());
        let handle = thread::spawn(move || in_netns(&ns, move || capture(&flag, ready)).unwrap());
        bound.recv_timeout(Duration::from_secs(5)).unwrap();
        Sniffer { stop, handle }
    }

    /// The kinds of the marked frames seen.
    fn stop(self) -> Vec<u8> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

fn capture(stop: &AtomicBool, ready: mpsc::Sender<()>) -> Vec<u8> {
    let mut seen = Vec::new();
    // SAFETY: as in `send_frames`; `buf` and `from` outlive every `recvfrom` into them.
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
        let _ = ready.send(());
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
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
            // Only what arrives (the pod's own replies quote the marks too).
            if n <= 0 || from.sll_pkttype == libc::PACKET_OUTGOING {
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

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

/// The honest control frame: the forger's own MAC and address, to a victim.
const HONEST: u8 = 0;
/// The kind with a multicast Ethernet source.
const MULTICAST_SOURCE: u8 = 7;

/// Every forged kind a pod may try, with the reason its drop is counted under; the kinds are
/// the marks of [`forged_frames`].
const FORGED: [(u8, &str, &str); 8] = [
    (1, "source_mac", "another pod's MAC as Ethernet source"),
    (2, "ipv4_source", "another pod's IPv4 address as source"),
    (
        3,
        "arp_sender",
        "an ARP reply claiming another pod's address",
    ),
    (
        4,
        "arp_sender",
        "a gratuitous ARP for another pod's address",
    ),
    (5, "router_advert", "an IPv6 router advertisement"),
    (6, "dhcp_server", "a DHCP server reply"),
    (7, "multicast_source", "a multicast Ethernet source"),
    (8, "nd_target", "a neighbour advertisement for another pod"),
];

/// The forged frames of `me` aimed at `victims` (each victim: MAC and address), with the kind
/// each carries as mark: unicast kinds once per victim, broadcast and multicast kinds once.
fn forged_frames(me: &Guarded, victims: &[(&Guarded, &Guarded)]) -> Vec<(u8, Vec<u8>)> {
    let (mac, ip) = (me.mac, me.pod.ip);
    let mut out = Vec::new();
    // (victim, the other pod whose identity is stolen)
    for (v, other) in victims {
        let (vm, vip) = (v.mac, v.pod.ip);
        let (them, their_ip) = (other.mac, other.pod.ip);
        let udp = |src: Ipv4Addr, kind: u8| udp4(src, vip, 9, 9, &mark(kind));
        out.push((1, eth(vm, them, 0x0800, &udp(their_ip, 1))));
        out.push((2, eth(vm, mac, 0x0800, &udp(their_ip, 2))));
        let reply = [arp(2, mac, their_ip, vm, vip), mark(3)].concat();
        out.push((3, eth(vm, mac, 0x0806, &reply)));
        // The gratuitous ARP: sender and target both the stolen address, to everyone.
        let garp = [arp(1, mac, their_ip, [0; 6], their_ip), mark(4)].concat();
        out.push((4, eth(BROADCAST, mac, 0x0806, &garp)));
        let group = [0x01, 0, 0x5e, 0, 0, 0xfb];
        out.push((7, eth(vm, group, 0x0800, &udp(ip, 7))));
        // NA: flags router|solicited|override, the stolen link-local as target.
        let mut na = vec![136, 0, 0, 0, 0xe0, 0, 0, 0];
        na.extend_from_slice(&link_local(them).octets());
        na.extend_from_slice(&mark(8));
        let na = icmp6(link_local(mac), link_local(vm), &na);
        out.push((8, eth(vm, mac, 0x86dd, &na)));
    }
    // RA to all nodes: hop limit 64, lifetime 1800 s, a source link-layer address option.
    let mut ra = vec![
        134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1,
    ];
    ra.extend_from_slice(&mac);
    ra.extend_from_slice(&mark(5));
    let all_nodes = "ff02::1".parse().unwrap();
    let ra = icmp6(link_local(mac), all_nodes, &ra);
    out.push((5, eth([0x33, 0x33, 0, 0, 0, 1], mac, 0x86dd, &ra)));
    // A DHCP server reply from the pod's own address: BOOTREPLY, offering the first victim's.
    let mut dhcp = vec![2, 1, 6, 0];
    dhcp.resize(236, 0);
    dhcp[16..20].copy_from_slice(&victims[0].0.pod.ip.octets());
    dhcp.extend_from_slice(&[99, 130, 83, 99, 53, 1, 2, 255]);
    dhcp.extend_from_slice(&mark(6));
    let reply = udp4(ip, Ipv4Addr::BROADCAST, 67, 68, &dhcp);
    out.push((6, eth(BROADCAST, mac, 0x0800, &reply)));
    out
}

/// A pod forges every kind of frame at a pod on its own host and one on another host: none
/// arrives, while honest frames from the same pod do and honest pods keep pinging.
#[test]
fn forged_frames_are_dropped_on_the_own_host_and_across_hosts() {
    let (mut c, hosts, cni, nets) = cni_cluster("wgf", 2);
    let forger = add(&mut c, &cni, &hosts[0], &nets[0], "forger");
    let near = add(&mut c, &cni, &hosts[0], &nets[0], "near");
    let far = add(&mut c, &cni, &hosts[1], &nets[1], "far");
    for (a, b) in [(&forger, &near), (&forger, &far), (&near, &far)] {
        assert_pings(&c, &a.pod, b.pod.ip);
        assert_pings(&c, &b.pod, a.pod.ip);
    }
    let before = port_drops(&c, &forger.pod).expect("the forger's port is guarded");
    let reasons_before = guard(&c, &hosts[0]).drops;

    let sniffers = [Sniffer::start(&near.pod.ns), Sniffer::start(&far.pod.ns)];
    let frames = forged_frames(&forger, &[(&near, &far), (&far, &near)]);
    // The bridge drops a multicast source itself, before any hook: those are not counted.
    let counted = frames.iter().filter(|f| f.0 != MULTICAST_SOURCE).count() as u64;
    let honest = [&near, &far].map(|v| {
        let udp = udp4(forger.pod.ip, v.pod.ip, 9, 9, &mark(HONEST));
        eth(v.mac, forger.mac, 0x0800, &udp)
    });
    // Honest pods ping each other while the forger sends, twice over.
    let pinged = thread::scope(|s| {
        let pinger = s.spawn(|| ping(&c.lab, &near.pod.ns, far.pod.ip, 15).unwrap());
        for _ in 0..2 {
            send_frames(&forger.pod.ns, frames.iter().map(|f| f.1.clone()).collect());
            send_frames(&forger.pod.ns, honest.to_vec());
            thread::sleep(Duration::from_millis(500));
        }
        pinger.join().unwrap()
    });
    thread::sleep(Duration::from_millis(500));
    let seen: Vec<Vec<u8>> = sniffers.map(Sniffer::stop).into();

    assert_eq!(
        pinged.received, pinged.sent,
        "honest pings lost: {pinged:?}"
    );
    for (who, kinds) in ["near", "far"].iter().zip(&seen) {
        let forged_seen: Vec<&u8> = kinds.iter().filter(|k| **k != HONEST).collect();
        assert!(
            forged_seen.is_empty(),
            "forged frames reached {who}: {forged_seen:?} (kinds: {FORGED:?})"
        );
        assert_eq!(
            kinds.iter().filter(|k| **k == HONEST).count(),
            2,
            "{who} did not get the forger's two honest frames: {seen:?}, {:?}",
            guard(&c, &hosts[0])
        );
    }

    // The forger's counter moved by exactly what it forged; each reason by its share.
    let drops = poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
        port_drops(&c, &forger.pod).filter(|d| d.0 >= before.0 + 2 * counted)
    })
    .unwrap_or_else(|| {
        panic!(
            "the forger's counter stays at {:?}",
            port_drops(&c, &forger.pod)
        )
    });
    assert_eq!(
        drops.0,
        before.0 + 2 * counted,
        "frames of the forger's kernel were dropped"
    );
    let reasons = guard(&c, &hosts[0]).drops;
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for (kind, _) in frames.iter().filter(|f| f.0 != MULTICAST_SOURCE) {
        let reason = FORGED.iter().find(|f| f.0 == *kind).unwrap().1;
        *expected.entry(reason).or_default() += 2;
    }
    for (reason, n) in expected {
        let moved = reasons[reason] - reasons_before.get(reason).copied().unwrap_or(0);
        assert_eq!(moved, n, "reason {reason}: {reasons:?}");
    }
    for v in [&near, &far] {
        assert_eq!(
            port_drops(&c, &v.pod).unwrap().0,
            0,
            "an honest pod was dropped"
        );
    }
    // Honest traffic from the forger still flows.
    assert_pings(&c, &forger.pod, near.pod.ip);
    assert_pings(&c, &forger.pod, far.pod.ip);

    // DEL removes the port's elements and counter.
    let port = drops.1;
    assert!(nft_list(&c, &hosts[0], &["set", "bridge", "weft_guard", "ports"]).contains(&port));
    let out = cni
        .cnitool(&c.lab, &hosts[0], "del", &nets[0], &forger.pod.ns, &[])
        .unwrap();
    assert!(out.success(), "{out}");
    assert_eq!(port_drops(&c, &forger.pod), None);
    let table = nft_list(&c, &hosts[0], &["table", "bridge", "weft_guard"]);
    assert!(!table.contains(&port), "{port} left in\n{table}");
    assert!(table.contains(&port_drops(&c, &near.pod).unwrap().1));
    assert_pings(&c, &near.pod, far.pod.ip);
}

/// A port attached by hand (no CNI reservation) passes unchecked, next to guarded ones; the
/// guard and its counters survive a router restart.
#[test]
fn hand_attached_ports_pass_and_the_guard_survives_a_restart() {
    let (mut c, hosts, cni, nets) = cni_cluster("wgh", 1);
    let h = &hosts[0];
    let pod = add(&mut c, &cni, h, &nets[0], "p1");
    let hand_ip = Ipv4Addr::new(10, 47, 255, 10);
    let hand = c
        .lab
        .add_pod(
            h,
            "hand",
            PodSpec::new(hand_ip, 12, c.status(h).unwrap().pod_mtu),
        )
        .unwrap();
    assert_pings(&c, &pod.pod, hand_ip);
    let ok = poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        ping(&c.lab, &hand.ns, pod.pod.ip, 1)
            .ok()
            .filter(|p| p.received == 1)
    });
    assert!(
        ok.is_some(),
        "the hand-attached pod cannot reach the CNI pod"
    );
    let g = guard(&c, h);
    assert_eq!(g.state, "on");
    assert!(!g.ports.iter().any(|p| p.port.name == hand.host_if));

    // One forged frame, counted; then a restart keeps the table, the elements and the count.
    let udp = udp4(hand_ip, pod.pod.ip, 9, 9, &mark(1));
    let stolen = eth(BROADCAST, hand.mac, 0x0800, &udp);
    send_frames(&pod.pod.ns, vec![stolen.clone()]);
    let counted = poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
        port_drops(&c, &pod.pod).filter(|d| d.0 == 1)
    });
    assert!(counted.is_some(), "{:?}", port_drops(&c, &pod.pod));
    c.stop_router(h, weft_lab::Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();
    let table = nft_list(&c, h, &["table", "bridge", "weft_guard"]);
    assert!(table.contains(&counted.unwrap().1), "{table}");
    c.restart_router(h).unwrap();
    let back = poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
        c.status(h).ok().and_then(|_| port_drops(&c, &pod.pod))
    });
    assert_eq!(back.map(|d| d.0), Some(1), "{}", c.router_log(h));
    send_frames(&pod.pod.ns, vec![stolen]);
    let counted = poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
        port_drops(&c, &pod.pod).filter(|d| d.0 == 2)
    });
    assert!(counted.is_some(), "{:?}", port_drops(&c, &pod.pod));
    assert_pings(&c, &pod.pod, hand_ip);

    // `weft status --json` carries the count.
    let st: Value = serde_json::to_value(c.status(h).unwrap()).unwrap();
    assert_eq!(st["guard"]["ports"][0]["dropped_packets"], 2, "{st}");
}
