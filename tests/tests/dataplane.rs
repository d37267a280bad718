//! The sleeve data path end to end: real `weft router` processes in host namespaces, pods on
//! their bridges, traffic between pods on different hosts.
//!
//! Needs root (network namespaces). Build the router first (`cargo build --release -p weft`);
//! `scripts/test.sh` does.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use weft_api::status::{MacReport, Report};
use weft_lab::testbed::{ping, tcp_transfer, weft_bin, Cluster};
use weft_lab::{in_netns, poll_until, Host, Pod, Signal};

fn pod_ip(host: u8, pod: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 32, host, pod)
}

/// `n` hosts in a full mesh (each seeded with every earlier one), one pod each.
fn mesh(tag: &str, n: u8) -> (Cluster, Vec<Host>, Vec<Pod>) {
    assert!(
        weft_lab::require_root(),
        "these tests need root and iproute2"
    );
    let mut c = Cluster::new(tag, weft_bin().unwrap()).unwrap();
    // These tests are about the sleeve: keep the kernel fast path out of the way.
    let args: Vec<&[&str]> = vec![&["--no-fastpath"]; usize::from(n)];
    let hosts = c.full_mesh(n, &args).unwrap();
    let pods = hosts
        .iter()
        .map(|h| c.add_pod(h, "p1", pod_ip(h.index, 1)).unwrap())
        .collect();
    (c, hosts, pods)
}

fn peer<'a>(r: &'a Report, nickname: &str) -> &'a weft_api::status::PeerReport {
    r.peers
        .iter()
        .find(|p| p.nickname == nickname)
        .unwrap_or_else(|| panic!("{} has no peer {nickname}: {:?}", r.nickname, r.peers))
}

fn wait_ping(c: &Cluster, from: &Pod, to: Ipv4Addr, timeout: Duration) -> bool {
    weft_lab::testbed::wait_ping(&c.lab, from, to, timeout)
}

#[test]
fn pods_on_different_hosts_ping_and_move_100_mb_intact() {
    let (c, hosts, pods) = mesh("wdp", 3);
    for (a, b) in [(0, 1), (1, 2), (2, 0)] {
        let p = ping(&c.lab, &pods[a].ns, pods[b].ip, 3).unwrap();
        assert_eq!(p.received, 3, "{} -> {}: {p:?}", pods[a].name, pods[b].ip);
    }
    let t = tcp_transfer(&pods[0], &pods[1], 100 << 20, Duration::from_secs(60)).unwrap();
    assert!(t.intact(), "{t:?}");
    // The bytes went over the sleeve between h1 and h2.
    let r1 = c.status(&hosts[0]).unwrap();
    assert!(
        peer(&r1, "h2").tx_bytes > 100 << 20,
        "{:?}",
        peer(&r1, "h2")
    );
    eprintln!("100 MiB h1 -> h2: {:.2} Gbit/s", t.gbits());
}

#[test]
fn arp_resolves_across_hosts() {
    let (c, _hosts, pods) = mesh("wda", 2);
    assert!(wait_ping(&c, &pods[0], pods[1].ip, Duration::from_secs(5)));
    let neigh = c
        .lab
        .exec_ok(
            &pods[0].ns,
            &["ip", "neigh", "show", &pods[1].ip.to_string()],
        )
        .unwrap();
    let mac = weft_lab::format_mac(&pods[1].mac);
    assert!(
        neigh.contains(&mac),
        "ARP entry {neigh:?} does not name {mac}"
    );
}

#[test]
fn learned_macs_are_sent_to_one_peer_only() {
    let (c, hosts, pods) = mesh("wdl", 3);
    // No IPv6 in the pods and hosts: neighbour discovery and MLD would be flooded in the middle
    // of the measurement.
    for ns in pods
        .iter()
        .map(|p| &p.ns)
        .chain(hosts.iter().map(|h| &h.ns))
    {
        c.lab
            .sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
            .unwrap();
    }
    // Learn: the first ping floods the ARP request and teaches every router where the pods are.
    assert!(wait_ping(&c, &pods[0], pods[1].ip, Duration::from_secs(5)));
    let before1 = c.status(&hosts[0]).unwrap();
    let before3 = c.status(&hosts[2]).unwrap();
    let p = ping(&c.lab, &pods[0].ns, pods[1].ip, 30).unwrap();
    assert_eq!(p.received, 30);
    // h1's window must enclose h3's: h1 first before, last after.
    let after3 = c.status(&hosts[2]).unwrap();
    let after1 = c.status(&hosts[0]).unwrap();
    let to_h2 = peer(&after1, "h2").tx_frames - peer(&before1, "h2").tx_frames;
    let to_h3 = peer(&after1, "h3").tx_frames - peer(&before1, "h3").tx_frames;
    let h3_got = peer(&after3, "h1").rx_frames - peer(&before3, "h1").rx_frames;
    let flooded = after1.counters["flooded_frames"] - before1.counters["flooded_frames"];
    let unicast = after1.counters["unicast_frames"] - before1.counters["unicast_frames"];
    // The 30 echo requests are unicast to h2 alone; h3 gets at most the frames that were flooded
    // (the pods' own multicast, if any slipped in).
    assert!(unicast >= 30, "only {unicast} unicast frames");
    assert!(to_h2 >= 30, "h2 got {to_h2} frames");
    assert!(
        to_h3 <= flooded,
        "h1 sent {to_h3} frames to h3 but flooded only {flooded}"
    );
    assert!(
        h3_got <= flooded,
        "h3 received {h3_got} frames but h1 flooded only {flooded}"
    );
}

#[test]
fn a_mac_that_moves_to_another_host_is_followed_within_a_second() {
    let (mut c, hosts, pods) = mesh("wdm", 3);
    let mac = [0x02, 0x77, 0, 0, 0, 0x42];
    let ip = pod_ip(9, 9);
    let spec = weft_lab::PodSpec::new(ip, 12, c.status(&hosts[1]).unwrap().pod_mtu).with_mac(mac);
    let mover = c.lab.add_pod(&hosts[1], "mv", spec.clone()).unwrap();
    assert!(wait_ping(&c, &pods[0], ip, Duration::from_secs(5)));
    let h2 = c.status(&hosts[1]).unwrap().name;
    let h3 = c.status(&hosts[2]).unwrap().name;
    let location = |c: &Cluster| -> Option<String> {
        let macs: Vec<MacReport> = weft_api::get(&c.state_dir(&hosts[0]), "/v1/macs").ok()?;
        macs.into_iter()
            .find(|m| m.mac == weft_lab::format_mac(&mac))
            .map(|m| m.location)
    };
    assert_eq!(location(&c).as_deref(), Some(h2.as_str()));

    // The pod moves to h3 with its MAC and address, and says something (as a CNI ADD's
    // gratuitous ARP would): h1 must follow at once, not after the old entry ages out.
    c.lab.remove_pod(&mover).unwrap();
    let moved = c.lab.add_pod(&hosts[2], "mv", spec).unwrap();
    let start = Instant::now();
    let _ = ping(&c.lab, &moved.ns, pods[0].ip, 1);
    let followed = poll_until(Duration::from_secs(1), Duration::from_millis(10), || {
        (location(&c).as_deref() == Some(h3.as_str())).then_some(())
    });
    assert!(
        followed.is_some(),
        "h1 still has {:?} after 1 s",
        location(&c)
    );
    eprintln!("move followed after {:?}", start.elapsed());
    let p = ping(&c.lab, &pods[0].ns, ip, 3).unwrap();
    assert_eq!(p.received, 3, "{p:?}");
}

#[test]
fn traffic_resumes_after_the_router_is_killed_and_restarted() {
    let (mut c, hosts, pods) = mesh("wdk", 2);
    assert!(wait_ping(&c, &pods[0], pods[1].ip, Duration::from_secs(5)));
    let name_before = c.status(&hosts[1]).unwrap().name;
    c.kill_router(&hosts[1], Signal::SIGKILL).unwrap();
    c.wait_peers(&hosts[0], 0, Duration::from_secs(10)).unwrap();
    c.restart_router(&hosts[1]).unwrap();
    c.wait_peers(&hosts[0], 1, Duration::from_secs(15)).unwrap();
    assert_eq!(
        c.status(&hosts[1]).unwrap().name,
        name_before,
        "the peer name is kept"
    );
    assert!(
        wait_ping(&c, &pods[0], pods[1].ip, Duration::from_secs(10)),
        "no ping after restart; h2 log:\n{}",
        c.router_log(&hosts[1])
    );
    let t = tcp_transfer(&pods[1], &pods[0], 10 << 20, Duration::from_secs(30)).unwrap();
    assert!(t.intact());
}

fn sleeve_header(kind: u8, src: u64, dst: u64) -> Vec<u8> {
    let mut v = vec![1, kind, 8, 0];
    v.extend_from_slice(&src.to_be_bytes());
    v.extend_from_slice(&dst.to_be_bytes());
    v
}

#[test]
fn garbage_datagrams_are_counted_and_dropped_while_traffic_continues() {
    let (c, hosts, pods) = mesh("wdg", 3);
    assert!(wait_ping(&c, &pods[0], pods[1].ip, Duration::from_secs(5)));
    let h1 = c.status(&hosts[0]).unwrap();
    let h2_name: u64 =
        u64::from_str_radix(&c.status(&hosts[1]).unwrap().name.replace(':', ""), 16).unwrap();
    let h1_name: u64 = u64::from_str_radix(&h1.name.replace(':', ""), 16).unwrap();
    let target = SocketAddr::from((hosts[0].underlay_ip, 6783));

    let mut junk: Vec<Vec<u8>> = vec![
        b"hello, is this weft?".to_vec(),       // malformed header
        vec![],                                 // empty
        vec![2; 40],                            // wrong version
        sleeve_header(1, 0xdead_beef, h1_name), // unknown peer
    ];
    let mut truncated = sleeve_header(1, h2_name, h1_name);
    truncated.extend_from_slice(&[0x05, 0xdc, 1, 2, 3]); // claims 1500 bytes, has 3
    junk.push(truncated);
    let mut oversize = sleeve_header(1, h2_name, h1_name);
    oversize.extend_from_slice(&3000u16.to_be_bytes());
    oversize.extend(std::iter::repeat_n(0x02, 3000));
    junk.push(oversize);
    let mut random = 0x1234_5678_9abc_def0u64;
    for _ in 0..200 {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        let len = (random % 1400) as usize;
        junk.push((0..len).map(|i| (random >> (i % 56)) as u8).collect());
    }

    // A steady ping runs while h3 sprays h1's data port.
    let lab_ns = pods[0].ns.clone();
    let to = pods[1].ip;
    let pinger = std::thread::spawn(move || {
        std::process::Command::new("ip")
            .args([
                "netns", "exec", &lab_ns, "ping", "-n", "-q", "-c", "40", "-i", "0.05", "-W", "2",
            ])
            .arg(to.to_string())
            .output()
            .unwrap()
    });
    in_netns(&hosts[2].ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..5 {
            for j in &junk {
                s.send_to(j, target).unwrap();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .unwrap();
    let out = pinger.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(" 0% packet loss"), "{text}");

    let after = c.status(&hosts[0]).unwrap();
    for reason in [
        "malformed_datagram",
        "unsupported_version",
        "unknown_peer",
        "truncated_record",
        "oversize_frame",
    ] {
        assert!(after.drops[reason] >= 5, "{reason}: {:?}", after.drops);
    }
    assert_eq!(after.peers.len(), 2, "no peer was lost");
}

#[test]
fn a_frame_too_big_for_the_overlay_gets_icmp_frag_needed() {
    let (mut c, hosts, pods) = mesh("wdt", 2);
    let pod_mtu = c.status(&hosts[0]).unwrap().pod_mtu;
    // A pod whose interface MTU is larger than the overlay allows (a misconfiguration).
    let big = c
        .lab
        .add_pod(
            &hosts[0],
            "big",
            weft_lab::PodSpec::new(pod_ip(1, 50), 12, 9000),
        )
        .unwrap();
    assert!(wait_ping(&c, &big, pods[1].ip, Duration::from_secs(5)));
    let out = c
        .lab
        .exec(
            &big.ns,
            &[
                "ping",
                "-n",
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "1",
                "-M",
                "do",
                "-s",
                "3000",
                &pods[1].ip.to_string(),
            ],
        )
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(&format!("mtu = {pod_mtu}")) || text.contains("Frag needed"),
        "{text}"
    );
    let r = c.status(&hosts[0]).unwrap();
    assert!(r.counters["icmp_too_big_sent"] >= 1, "{:?}", r.counters);
    assert!(r.drops["too_big"] >= 1);
    // The kernel learned the path MTU: the next large ping is fragmented to fit and gets through.
    let p = ping(&c.lab, &big.ns, pods[1].ip, 1);
    assert!(p.is_ok());
    let out = c
        .lab
        .exec(
            &big.ns,
            &[
                "ping",
                "-n",
                "-c",
                "1",
                "-W",
                "2",
                "-s",
                "3000",
                &pods[1].ip.to_string(),
            ],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A host-wide counter from `weft status`.
fn counter(c: &Cluster, h: &Host, name: &str) -> u64 {
    c.status(h)
        .unwrap()
        .counters
        .get(name)
        .copied()
        .unwrap_or(0)
}

/// Asserts that no router of `hosts` dropped a frame for an offload error (a super-frame it
/// could not cut, a segment it could not complete).
fn no_offload_errors(c: &Cluster, hosts: &[Host]) {
    for h in hosts {
        let r = c.status(h).unwrap();
        assert_eq!(
            r.drops.get("offload_error").copied(),
            Some(0),
            "{}: {:?}",
            r.nickname,
            r.drops
        );
    }
}

#[test]
fn a_64_mib_transfer_crosses_as_super_frames_intact() {
    let (c, hosts, pods) = mesh("wgso", 2);
    assert!(wait_ping(&c, &pods[0], pods[1].ip, Duration::from_secs(10)));
    let t = tcp_transfer(&pods[0], &pods[1], 64 << 20, Duration::from_secs(60)).unwrap();
    assert!(t.intact(), "{t:?}");
    // The sender's TAP handed over TCP super-frames, cut into segments...
    let gso = counter(&c, &hosts[0], "tap_rx_gso_frames");
    let segments = counter(&c, &hosts[0], "tap_rx_gso_segments");
    assert!(
        gso > 0 && segments > gso,
        "{gso} super-frames, {segments} segments"
    );
    // ...sent several datagrams per system call (UDP GSO)...
    assert!(counter(&c, &hosts[0], "udp_tx_gso_sends") > 0);
    // ...with their TCP checksums left partial (sleeve flag FLAG_CSUM_PARTIAL: the underlay's
    // UDP checksum covers them; the receiving pod's kernel completes or trusts them)...
    let partial = counter(&c, &hosts[0], "tx_csum_partial_segments");
    assert!(
        partial > 0 && partial <= segments,
        "{partial} partial of {segments} segments"
    );
    // ...and the receiver joined segments into super-frames again.
    let joined = counter(&c, &hosts[1], "tap_tx_gso_frames");
    assert!(joined > 0, "the receiver wrote no super-frame");
    no_offload_errors(&c, &hosts[1..]);
    eprintln!(
        "64 MiB h1 -> h2: {:.2} Gbit/s; {gso} super-frames read, {joined} written",
        t.gbits()
    );
}

#[test]
fn udp_with_partial_checksums_crosses_intact() {
    // With checksum offload on the TAP port, a pod's UDP datagrams reach the router with a
    // partial checksum (virtio-net NEEDS_CSUM); the router completes it, or the receiving pod's
    // kernel drops the datagram.
    let (c, _hosts, pods) = mesh("wudp", 2);
    assert!(wait_ping(&c, &pods[0], pods[1].ip, Duration::from_secs(10)));
    let to = SocketAddr::from((pods[1].ip, 7777));
    let rx = in_netns(&pods[1].ns, move || UdpSocket::bind(to))
        .unwrap()
        .unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let tx = in_netns(&pods[0].ns, || UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    let payload: Vec<u8> = (0..1200u32).map(|i| (i * 31 + 7) as u8).collect();
    let mut buf = [0u8; 2048];
    let mut received = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.is_none() && Instant::now() < deadline {
        tx.send_to(&payload, to).unwrap();
        if let Ok((n, _)) = rx.recv_from(&mut buf) {
            received = Some(buf[..n].to_vec());
        }
    }
    assert_eq!(
        received.as_deref(),
        Some(&payload[..]),
        "no intact UDP datagram arrived"
    );
}

#[test]
fn a_pods_udp_gso_crosses_as_super_frames_on_both_hosts() {
    // A pod sending with UDP_SEGMENT hands its kernel one super-frame per send; with USO on the
    // TAP port the router reads it whole and cuts it (USO), and the receiving router joins the
    // datagrams of the flow into one super-frame again (UDP GRO) for its TAP port.
    let (c, hosts, pods) = mesh("wuso", 2);
    assert!(wait_ping(&c, &pods[0], pods[1].ip, Duration::from_secs(10)));
    const SEG: usize = 1200;
    const PER_SEND: usize = 12;
    const SENDS: usize = 200;
    let to = SocketAddr::from((pods[1].ip, 7788));
    let rx = in_netns(&pods[1].ns, move || UdpSocket::bind(to))
        .unwrap()
        .unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let receiver = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut quiet = 0;
        while Instant::now() < deadline && got.len() < SENDS * PER_SEND && quiet < 5 {
            match rx.recv_from(&mut buf) {
                Ok((n, _)) => {
                    quiet = 0;
                    // Every byte of a datagram after its number is the number's low byte.
                    let tag = u32::from_be_bytes(buf[..4].try_into().unwrap());
                    let intact = n == SEG && buf[4..n].iter().all(|&b| b == tag as u8);
                    got.push((tag, intact));
                }
                Err(_) => quiet += 1,
            }
        }
        got
    });
    let tx = in_netns(&pods[0].ns, || UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    weft_tests::net::set_udp_segment(&tx, SEG as u16).unwrap();
    let mut send = vec![0u8; SEG * PER_SEND];
    for s in 0..SENDS {
        for (i, d) in send.chunks_mut(SEG).enumerate() {
            let tag = (s * PER_SEND + i) as u32;
            d.fill(tag as u8);
            d[..4].copy_from_slice(&tag.to_be_bytes());
        }
        tx.send_to(&send, to).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let got = receiver.join().unwrap();
    let sent = SENDS * PER_SEND;
    assert!(got.iter().all(|&(_, ok)| ok), "a datagram arrived damaged");
    assert!(
        got.windows(2).all(|w| w[0].0 < w[1].0),
        "datagrams reordered or duplicated"
    );
    assert!(
        got.len() * 10 >= sent * 9,
        "{} of {sent} arrived",
        got.len()
    );
    // The sender's router read UDP super-frames and cut them...
    let gso = counter(&c, &hosts[0], "tap_rx_gso_frames");
    let segments = counter(&c, &hosts[0], "tap_rx_gso_segments");
    assert!(
        gso >= SENDS as u64 / 2 && segments >= gso * 2,
        "{gso} super-frames, {segments} datagrams"
    );
    // ...and the receiver's wrote them to its TAP port joined again.
    let joined = counter(&c, &hosts[1], "tap_tx_gso_frames");
    assert!(joined > 0, "the receiver wrote no super-frame");
    no_offload_errors(&c, &hosts);
    eprintln!(
        "{} of {sent} datagrams; {gso} super-frames read ({segments} datagrams), {joined} written",
        got.len()
    );
}

/// The names of a process's threads (`/proc/<pid>/task/*/comm`).
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn busy_polling_routers_carry_traffic_on_one_data_plane_thread_each() {
    // Out of range: refused before anything starts, naming the flag.
    let out = std::process::Command::new(weft_bin().unwrap())
        .args(["router", "--busy-poll-us", "20000"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--busy-poll-us"), "{err}");

    assert!(weft_lab::require_root(), "this test needs root");
    let mut c = Cluster::new("wbusy", weft_bin().unwrap()).unwrap();
    let args: Vec<&[&str]> = vec![&["--no-fastpath", "--busy-poll-us", "300"]; 2];
    let hosts = c.full_mesh(2, &args).unwrap();
    let pods: Vec<Pod> = hosts
        .iter()
        .map(|h| c.add_pod(h, "p1", pod_ip(h.index, 1)).unwrap())
        .collect();
    assert!(wait_ping(&c, &pods[0], pods[1].ip, Duration::from_secs(10)));
    let p = ping(&c.lab, &pods[1].ns, pods[0].ip, 20).unwrap();
    assert_eq!(p.received, 20, "{p:?}");
    let t = tcp_transfer(&pods[0], &pods[1], 32 << 20, Duration::from_secs(60)).unwrap();
    assert!(t.intact(), "{t:?}");
    // Both directions of each router run on its one data plane thread.
    for h in &hosts {
        let names = thread_names(c.router_pid(h).unwrap());
        let dataplane = names.iter().filter(|n| *n == "weft-dataplane").count();
        assert_eq!(dataplane, 1, "{}: threads {names:?}", h.name);
    }
}

/// User plus system CPU time of a process so far, in clock ticks (`/proc/<pid>/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn a_broken_tap_port_neither_spins_nor_stops_the_socket_side() {
    let (c, hosts, pods) = mesh("wbrk", 2);
    assert!(wait_ping(&c, &pods[0], pods[1].ip, Duration::from_secs(10)));
    // Someone deletes h1's TAP device under the running router: reads now fail for good.
    c.lab
        .exec_ok(&hosts[0].ns, &["ip", "link", "del", "weft-tap"])
        .unwrap();
    let pid = c.router_pid(&hosts[0]).unwrap();
    let answered = counter(&c, &hosts[0], "heartbeats_answered");
    // The socket side still answers h2's heartbeats (one a second)...
    assert!(
        poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
            (counter(&c, &hosts[0], "heartbeats_answered") >= answered + 3).then_some(())
        })
        .is_some(),
        "h1 stopped answering heartbeats"
    );
    // ...and the thread does not spin on the broken port: well under half a core over 2 s
    // (a busy loop takes all of one).
    // USER_HZ: 100 on every Linux architecture this runs on.
    let ticks_per_s = 100;
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    assert!(
        used < ticks_per_s,
        "h1's router used {used} ticks in 2 s ({ticks_per_s} per second)"
    );
    // It says what is wrong, once a second rather than once per poll.
    let log = c.lab.log("router-h1");
    let warnings = log.matches("reading the TAP port").count();
    assert!((1..=10).contains(&warnings), "{warnings} warnings:\n{log}");
}
