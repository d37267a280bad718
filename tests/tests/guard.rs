//! The port guard end to end: pods attached through upstream `cnitool`, one of them forging
//! frames with a packet socket (the CAP_NET_RAW a container runtime grants), receivers on the
//! same host and on another host capturing with packet sockets of their own. Nothing forged
//! arrives, the forger's drop counter and the per-reason counters move by exactly what was
//! sent, the honest pods are never dropped and keep pinging throughout; DEL removes the port's
//! elements; a port attached by hand passes; the guard survives a router restart with its
//! counters.
//!
//! The frames and the packet sockets are in `weft_tests::frames` (tests/src/frames.rs).
//!
//! Needs root, `cnitool`, `nft` and the release `weft` and `weft-cni` binaries, like
//! tests/tests/cni.rs.

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::thread;
use std::time::Duration;
use weft_lab::testbed::{ping, Cluster};
use weft_lab::{poll_until, Host, PodSpec};
use weft_tests::cni::CniPod;
use weft_tests::frames::{
    arp, eth, icmp6, link_local, mark, send_frames, udp4, Sniffer, BROADCAST,
};
use weft_tests::guarded::{add_pod as add, cni_cluster, guard, port_drops, Guarded};

// ---------------------------------------------------------------------------------------------
// The cluster and the pods.
// ---------------------------------------------------------------------------------------------

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
    let (mut c, hosts, cni, nets) = cni_cluster("wgf", 2, &[]);
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
    let (mut c, hosts, cni, nets) = cni_cluster("wgh", 1, &[]);
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
