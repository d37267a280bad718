//! An IPv6-only underlay (issue 14): hosts with only fd00:200::/64 addresses, routers listening
//! on `[addr]` and seeded with `[addr]:6783`, carrying IPv4 pod traffic through the sleeve
//! (plain and encrypted), the kernel VXLAN fast path over IPv6, and a relay when the direct path
//! between two hosts is cut; pods with (hand-given) IPv6 addresses talking across hosts on the
//! sleeve and the fast path, each neighbour solicitation reaching every remote pod once, and
//! ICMPv6 Packet Too Big for a pod whose MTU is too large.
//!
//! Needs root, nftables and the `weft` binary (`scripts/test.sh`).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use weft_api::status::Report;
use weft_lab::testbed::{ping, tcp_transfer_paced, wait_ping, weft_bin, Cluster};
use weft_lab::{Host, Pod};

const SLEEVE: &[&str] = &["--no-fastpath"];
const SECRET: &str = "the weft test secret, long enough\n";

fn cluster(tag: &str) -> Cluster {
    assert!(
        weft_lab::require_root(),
        "these tests need root and iproute2"
    );
    let mut c = Cluster::new(tag, weft_bin().unwrap()).unwrap();
    c.lab.ipv6_only_underlay().unwrap();
    c
}

fn pod_ip(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 32, host, 1)
}

fn pods(c: &mut Cluster, hosts: &[Host]) -> Vec<Pod> {
    hosts
        .iter()
        .map(|h| c.add_pod(h, "p1", pod_ip(h.index)).unwrap())
        .collect()
}

/// Every peer of `r` is reached at an IPv6 address (or through a relay), on the sleeve's port.
fn assert_ipv6_peers(host: &Host, r: &Report) {
    assert!(
        r.listen.starts_with('['),
        "{} listens on {}",
        host.name,
        r.listen
    );
    for p in &r.peers {
        if p.addr.is_empty() {
            continue; // reached through a relay
        }
        let a: std::net::SocketAddr = p
            .addr
            .parse()
            .unwrap_or_else(|e| panic!("{}: peer address {:?}: {e}", host.name, p.addr));
        assert!(
            matches!(a.ip(), IpAddr::V6(_)),
            "{} reaches {} at {}",
            host.name,
            p.nickname,
            p.addr
        );
    }
}

/// Every pod pings every other, and one checksummed transfer crosses from the first to the last.
fn pods_talk(c: &Cluster, pods: &[Pod]) {
    for a in pods {
        for b in pods {
            if a.ns != b.ns {
                assert!(
                    wait_ping(&c.lab, a, b.ip, Duration::from_secs(10)),
                    "{} cannot reach {}",
                    a.ns,
                    b.ip
                );
            }
        }
    }
    let t = tcp_transfer_paced(
        &pods[0],
        &pods[pods.len() - 1],
        8 << 20,
        Duration::from_secs(2),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(t.intact(), "{t:?}");
}

#[test]
fn the_sleeve_carries_pods_over_an_ipv6_only_underlay() {
    let mut c = cluster("w6s");
    let hosts = c.full_mesh(3, &[SLEEVE; 3]).unwrap();
    for h in &hosts {
        let r = c.status(h).unwrap();
        assert_ipv6_peers(h, &r);
        // 20 bytes more of outer header than over IPv4: 1500 - 40 - 8 - sleeve overhead.
        assert!(r.pod_mtu < 1500 - 48, "pod MTU {} on {}", r.pod_mtu, h.name);
    }
    let ps = pods(&mut c, &hosts);
    let (tx, rx) = (&hosts[0], &hosts[2]);
    let (tx0, rx0) = (
        c.status(tx).unwrap().counters,
        c.status(rx).unwrap().counters,
    );
    pods_talk(&c, &ps);
    let (tx1, rx1) = (
        c.status(tx).unwrap().counters,
        c.status(rx).unwrap().counters,
    );
    let delta = |a: &Counters, b: &Counters, k: &str| b[k] - a[k];
    let sent = delta(&tx0, &tx1, "udp_tx_datagrams");
    assert!(sent > 1000, "h1's sleeve sent {sent} datagrams");
    // The offloads work over IPv6 as over IPv4: TCP super-frames read from the TAP, UDP GSO
    // sends, and super-frames rebuilt on the receiving side.
    for (what, n) in [
        (
            "h1 tap_rx_gso_frames",
            delta(&tx0, &tx1, "tap_rx_gso_frames"),
        ),
        ("h1 udp_tx_gso_sends", delta(&tx0, &tx1, "udp_tx_gso_sends")),
        (
            "h3 tap_tx_gso_frames",
            delta(&rx0, &rx1, "tap_tx_gso_frames"),
        ),
    ] {
        assert!(n > 0, "{what} did not move: {tx1:?} {rx1:?}");
    }
}

type Counters = std::collections::BTreeMap<String, u64>;

#[test]
fn the_encrypted_sleeve_works_over_an_ipv6_only_underlay() {
    let mut c = cluster("w6e");
    let secret = c.lab.dir().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let s = secret.display().to_string();
    let args: &[&str] = &["--no-fastpath", "--secret-file", &s];
    let hosts = c.full_mesh(2, &[args, args]).unwrap();
    for h in &hosts {
        let r = c.status(h).unwrap();
        assert_ipv6_peers(h, &r);
        for p in &r.peers {
            assert!(
                !p.encryption.is_empty() && p.encryption != "none",
                "{} talks to {} in clear",
                h.name,
                p.nickname
            );
        }
    }
    let ps = pods(&mut c, &hosts);
    pods_talk(&c, &ps);
}

#[test]
fn the_fast_path_runs_vxlan_over_an_ipv6_underlay() {
    let mut c = cluster("w6f");
    let hosts = c.full_mesh(2, &[]).unwrap();
    for (h, peer) in [(&hosts[0], "h2"), (&hosts[1], "h1")] {
        c.wait_path(h, peer, "fast path", Duration::from_secs(30))
            .unwrap();
    }
    let ps = pods(&mut c, &hosts);
    assert_eq!(ping(&c.lab, &ps[0].ns, ps[1].ip, 3).unwrap().received, 3);
    // The device is VXLAN over IPv6: its local address is h1's.
    let link = c
        .lab
        .exec_ok(
            &hosts[0].ns,
            &["ip", "-d", "-o", "link", "show", "weft-vxlan"],
        )
        .unwrap();
    let local = hosts[0].underlay_ip6.unwrap().to_string();
    assert!(
        link.contains(&format!("local {local}")),
        "weft-vxlan is not bound to {local}: {link}"
    );
    let stats = |c: &Cluster| c.lab.link_stats(&hosts[0].ns, "weft-vxlan").unwrap();
    let (before, vx_before) = (c.status(&hosts[0]).unwrap(), stats(&c));
    pods_talk(&c, &ps);
    let (after, vx_after) = (c.status(&hosts[0]).unwrap(), stats(&c));
    // Bytes, not packets: the device sends TSO super-packets of up to 64 KiB.
    let vx = vx_after.tx_bytes - vx_before.tx_bytes;
    let sleeve: u64 = after.peers.iter().map(|p| p.tx_bytes).sum::<u64>()
        - before.peers.iter().map(|p| p.tx_bytes).sum::<u64>();
    assert!(
        vx > 8 << 20,
        "the VXLAN device sent {vx} bytes of an 8 MiB transfer"
    );
    assert!(
        sleeve < vx / 100,
        "the router sent {sleeve} bytes while VXLAN sent {vx}"
    );
}

#[test]
fn a_cut_ipv6_link_is_relayed_around() {
    let mut c = cluster("w6r");
    let hosts = c.full_mesh(3, &[SLEEVE; 3]).unwrap();
    let ps = pods(&mut c, &hosts);
    assert!(wait_ping(&c.lab, &ps[0], ps[2].ip, Duration::from_secs(10)));
    weft_tests::net::relayed_around_a_cut(
        &c,
        &hosts,
        (&ps[0].ns, &ps[2].ns),
        &[IpAddr::V4(ps[2].ip)],
    );
}

/// Gives `pod` the IPv6 address fd10:32::<host>:<n>/64, usable at once (no duplicate address
/// detection).
fn add_ipv6(c: &Cluster, pod: &Pod, host: u8, n: u8) -> String {
    let a = format!("fd10:32::{host}:{n}");
    c.lab
        .exec_ok(
            &pod.ns,
            &[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{a}/64"),
                "dev",
                "eth0",
                "nodad",
            ],
        )
        .unwrap();
    a
}

fn ping6(c: &Cluster, from: &Pod, to: &str, args: &[&str]) -> String {
    let mut argv = vec!["ping", "-6", "-n", "-c", "2", "-i", "0.2", "-W", "1"];
    argv.extend_from_slice(args);
    argv.push(to);
    let out = c.lab.exec(&from.ns, &argv).unwrap();
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// Pings `to` from `from` until two pings in a row are answered (at most 10 s).
fn wait_ping6(c: &Cluster, from: &Pod, to: &str) {
    let ok = weft_lab::poll_until(Duration::from_secs(10), Duration::from_millis(200), || {
        ping6(c, from, to, &[])
            .contains(" 0% packet loss")
            .then_some(())
    });
    assert!(ok.is_some(), "{}", ping6(c, from, to, &[]));
}

#[test]
fn pods_speak_ipv6_across_hosts_and_oversized_packets_get_packet_too_big() {
    let mut c = cluster("w6p");
    let hosts = c.full_mesh(2, &[SLEEVE; 2]).unwrap();
    let pod_mtu = c.status(&hosts[0]).unwrap().pod_mtu;
    let ps = pods(&mut c, &hosts);
    let a6 = add_ipv6(&c, &ps[0], 1, 1);
    let b6 = add_ipv6(&c, &ps[1], 2, 1);
    // Neighbour discovery crosses the hosts (its multicast is flooded like a broadcast).
    wait_ping6(&c, &ps[0], &b6);
    assert!(ping6(&c, &ps[1], &a6, &[]).contains(" 0% packet loss"));

    // A pod whose interface MTU is larger than the overlay allows (a misconfiguration) sends
    // 3000-byte packets: the router answers with ICMPv6 Packet Too Big carrying the pod MTU.
    let big = c
        .lab
        .add_pod(
            &hosts[0],
            "big",
            weft_lab::PodSpec::new(Ipv4Addr::new(10, 32, 1, 50), 12, 9000),
        )
        .unwrap();
    add_ipv6(&c, &big, 1, 50);
    assert!(ping6(&c, &big, &b6, &[]).contains(" 0% packet loss"));
    let before = c.status(&hosts[0]).unwrap();
    let text = ping6(&c, &big, &b6, &["-M", "do", "-s", "3000"]);
    assert!(
        text.contains(&format!("mtu={pod_mtu}"))
            || text.contains(&format!("mtu = {pod_mtu}"))
            || text.contains("Packet too big"),
        "{text}"
    );
    let after = c.status(&hosts[0]).unwrap();
    assert!(
        after.counters["icmp_too_big_sent"] > before.counters["icmp_too_big_sent"],
        "{:?}",
        after.counters
    );
    // The pod's kernel learned the path MTU: the route to the other pod now carries it.
    let route = c
        .lab
        .exec_ok(&big.ns, &["ip", "-6", "route", "get", &b6])
        .unwrap();
    assert!(route.contains(&format!("mtu {pod_mtu}")), "{route}");
    // And large packets now get through, fragmented by the sender to fit.
    assert!(
        ping6(&c, &big, &b6, &["-s", "3000"]).contains(" 0% packet loss"),
        "no large ping after Packet Too Big"
    );
}

#[test]
fn pods_speak_ipv6_over_the_fast_path_on_an_ipv6_underlay() {
    let mut c = cluster("w6q");
    let hosts = c.full_mesh(2, &[]).unwrap();
    c.wait_path(&hosts[0], "h2", "fast path", Duration::from_secs(30))
        .unwrap();
    let ps = pods(&mut c, &hosts);
    let a6 = add_ipv6(&c, &ps[0], 1, 1);
    let b6 = add_ipv6(&c, &ps[1], 2, 1);
    let vx_before = c.lab.link_stats(&hosts[0].ns, "weft-vxlan").unwrap();
    wait_ping6(&c, &ps[0], &b6);
    assert!(ping6(&c, &ps[1], &a6, &[]).contains(" 0% packet loss"));
    let vx_after = c.lab.link_stats(&hosts[0].ns, "weft-vxlan").unwrap();
    assert!(
        vx_after.tx_packets >= vx_before.tx_packets + 4,
        "the pings did not cross the VXLAN device"
    );
}

/// Counts, in `pod`, the neighbour solicitations for `target` that reach its `eth0` (they go to
/// the target's solicited-node multicast group, flooded like a broadcast).
fn count_solicitations(c: &Cluster, pod: &Pod, group: &str) {
    c.lab
        .nft(
            &pod.ns,
            &format!(
                "table netdev weftnd {{\n  counter ns {{ }}\n  chain in {{\n    type filter hook ingress device \"eth0\" priority 0; policy accept;\n    ip6 daddr {group} icmpv6 type nd-neighbor-solicit counter name \"ns\"\n  }}\n}}\n"
            ),
        )
        .unwrap();
}

fn solicitations(c: &Cluster, pod: &Pod) -> u64 {
    c.lab
        .nft_counter(&pod.ns, "netdev", "weftnd", "ns")
        .unwrap()
}

#[test]
fn each_neighbour_solicitation_reaches_every_remote_pod_exactly_once() {
    let mut c = cluster("w6n");
    let hosts = c.full_mesh(3, &[SLEEVE; 3]).unwrap();
    let sender = c.add_pod(&hosts[0], "tx", pod_ip(1)).unwrap();
    add_ipv6(&c, &sender, 1, 9);
    let mut ps = vec![c
        .add_pod(&hosts[0], "p2", Ipv4Addr::new(10, 32, 1, 2))
        .unwrap()];
    ps.extend(pods(&mut c, &hosts[1..]));
    // fd10:32::c8:c8 is nobody's: its solicited-node group is ff02::1:ffc8:c8.
    for p in &ps {
        count_solicitations(&c, p, "ff02::1:ffc8:c8");
    }
    // The kernel multicasts the solicitation 3 times, a second apart, then gives up.
    let _ = ping6(&c, &sender, "fd10:32::c8:c8", &["-c", "1", "-W", "4"]);
    let first = weft_lab::poll_until(Duration::from_secs(6), Duration::from_millis(100), || {
        let n = solicitations(&c, &ps[0]);
        (n >= 3).then_some(n)
    })
    .expect("the pod on the sender's bridge saw the solicitations");
    let counts = weft_lab::poll_until(Duration::from_secs(3), Duration::from_millis(100), || {
        let counts: Vec<u64> = ps.iter().map(|p| solicitations(&c, p)).collect();
        counts.iter().all(|n| *n == first).then_some(counts)
    });
    assert!(
        counts.is_some(),
        "solicitations seen per pod (local first): {:?}",
        ps.iter().map(|p| solicitations(&c, p)).collect::<Vec<_>>()
    );
}

#[test]
fn doctor_checks_an_ipv6_underlay() {
    let mut c = cluster("w6d");
    let hosts = c.full_mesh(2, &[]).unwrap();
    c.wait_path(&hosts[0], "h2", "fast path", Duration::from_secs(30))
        .unwrap();
    let (r, _) = c.doctor(&hosts[0], &c.lab.dir().join("cni")).unwrap();
    println!("{}", r.render());
    for name in [
        "mtu.underlay",
        "mtu.pods",
        "peer.h2.tcp",
        "peer.h2.udp",
        "peer.h2.vxlan",
        "peer.h2.mtu",
    ] {
        let check = r
            .get(name)
            .unwrap_or_else(|| panic!("no check {name}:\n{}", r.render()));
        assert_eq!(
            check.status,
            weft_api::doctor::Status::Ok,
            "{name}:\n{}",
            r.render()
        );
    }
}

/// A mesh mixing the families: h1 has only IPv4 on the underlay, h3 only IPv6, h2 both and
/// listens on `[::]` (one socket of each kind for both families). h2 reaches h1 over IPv4 and
/// h3 over IPv6 (and shows each by its own address, not as ::ffff:a.b.c.d); h1 and h3, which
/// share no family, reach each other through h2: pods on all three ping each other and a
/// checksummed transfer crosses from h1's pod to h3's, relayed by h2.
#[test]
fn a_mesh_mixes_hosts_reached_over_ipv4_and_ipv6() {
    use weft_lab::UnderlayFamily;
    assert!(weft_lab::require_root(), "these tests need root");
    let mut c = Cluster::new("w6x", weft_bin().unwrap()).unwrap();
    let host = |c: &mut Cluster, name: &str, f: UnderlayFamily| {
        c.lab.underlay_family(f).unwrap();
        c.add_host(name).unwrap()
    };
    let h1 = host(&mut c, "h1", UnderlayFamily::V4);
    let h2 = host(&mut c, "h2", UnderlayFamily::Dual);
    let h3 = host(&mut c, "h3", UnderlayFamily::V6);
    c.start_router(&h1, &[], SLEEVE).unwrap();
    c.start_router(&h3, &[], SLEEVE).unwrap();
    c.start_router(&h2, &[&h1, &h3], &["--no-fastpath", "--listen", "[::]"])
        .unwrap();
    c.wait_peers(&h2, 2, Duration::from_secs(15)).unwrap();
    let r = c.status(&h2).unwrap();
    let addr = |nick: &str| {
        r.peers
            .iter()
            .find(|p| p.nickname == nick)
            .map(|p| p.addr.clone())
            .unwrap_or_default()
    };
    assert!(addr("h1").starts_with("10.200.0.11:"), "{:?}", r.peers);
    assert!(addr("h3").starts_with("[fd00:200::13]:"), "{:?}", r.peers);
    c.wait_path(&h1, "h3", "via h2", Duration::from_secs(20))
        .unwrap();
    c.wait_path(&h3, "h1", "via h2", Duration::from_secs(20))
        .unwrap();
    let hosts = [h1, h2, h3];
    let ps = pods(&mut c, &hosts);
    let relayed = c.status(&hosts[1]).unwrap().counters["relayed_datagrams"];
    pods_talk(&c, &ps);
    let after = c.status(&hosts[1]).unwrap().counters["relayed_datagrams"];
    assert!(
        after > relayed + 1000,
        "h2 relayed {} datagrams",
        after - relayed
    );
}
