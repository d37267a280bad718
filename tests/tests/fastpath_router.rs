//! The kernel VXLAN fast path as the router drives it: chosen per peer by probes, carrying the
//! traffic while the router's own counters stay still, falling back to the sleeve when the VXLAN
//! port is blocked and returning when it clears, mixing with hosts that refuse it, and surviving
//! a SIGKILL without leaving a second device behind.
//!
//! Needs root, iperf3, nftables and the `weft` binary (`scripts/test.sh`).

use std::net::Ipv4Addr;
use std::time::Duration;
use weft_api::status::Report;
use weft_lab::testbed::{ping, tcp_transfer_paced, weft_bin, Cluster};
use weft_lab::{poll_until, Host, Pod, Signal};

fn cluster(tag: &str) -> Cluster {
    assert!(
        weft_lab::require_root(),
        "these tests need root and iproute2"
    );
    Cluster::new(tag, weft_bin().unwrap()).unwrap()
}

fn pod_ip(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 32, host, 1)
}

fn hosts(c: &mut Cluster, n: u8, args: &[&[&str]]) -> Vec<Host> {
    c.full_mesh(n, args).unwrap()
}

fn path(r: &Report, nick: &str) -> String {
    r.peers
        .iter()
        .find(|p| p.nickname == nick)
        .map(|p| p.path.clone())
        .unwrap_or_default()
}

fn wait_path(c: &Cluster, h: &Host, peer: &str, want: &str, timeout: Duration) -> Duration {
    c.wait_path(h, peer, want, timeout).unwrap().1
}

fn iperf(c: &mut Cluster, from: &Pod, to: &Pod, secs: u32) -> f64 {
    let server = c
        .lab
        .spawn(
            &to.ns,
            std::path::Path::new("/usr/bin/iperf3"),
            &["-s"],
            "iperf-server",
        )
        .unwrap();
    // Wait until the server listens, then run the client once.
    poll_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let o = c.lab.exec(&to.ns, &["ss", "-Hltn", "sport = :5201"]).ok()?;
        (!String::from_utf8_lossy(&o.stdout).trim().is_empty()).then_some(())
    })
    .expect("iperf3 server listening");
    let out = c
        .lab
        .exec(
            &from.ns,
            &[
                "iperf3",
                "-c",
                &to.ip.to_string(),
                "-t",
                &secs.to_string(),
                "-J",
            ],
        )
        .unwrap();
    c.lab.kill(server, Signal::SIGTERM).unwrap();
    let _ = c.lab.wait_exit(server, Duration::from_secs(5));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| {
            panic!(
                "iperf3 failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stdout)
            )
        })
        / 1e9
}

#[test]
fn pod_traffic_takes_the_kernel_path_and_not_the_router() {
    let mut c = cluster("wfk");
    let hs = hosts(&mut c, 2, &[]);
    let a = c.add_pod(&hs[0], "p1", pod_ip(1)).unwrap();
    let b = c.add_pod(&hs[1], "p1", pod_ip(2)).unwrap();
    let t = wait_path(&c, &hs[0], "h2", "fast path", Duration::from_secs(20));
    wait_path(&c, &hs[1], "h1", "fast path", Duration::from_secs(20));
    eprintln!("fast path chosen after {t:?}");
    assert_eq!(ping(&c.lab, &a.ns, b.ip, 3).unwrap().received, 3);
    let before = c.status(&hs[0]).unwrap();
    let vx_before = c.lab.link_stats(&hs[0].ns, "weft-vxlan").unwrap();
    let gbits = iperf(&mut c, &a, &b, 10);
    let after = c.status(&hs[0]).unwrap();
    // The kernel's own counters; the status copies them about once a second (checked below).
    let vx_after = c.lab.link_stats(&hs[0].ns, "weft-vxlan").unwrap();
    let vx_packets = vx_after.tx_packets - vx_before.tx_packets;
    let router_frames = after.counters["tap_rx_frames"] - before.counters["tap_rx_frames"];
    let router_datagrams = after.counters["udp_tx_datagrams"] - before.counters["udp_tx_datagrams"];
    eprintln!("iperf3 10 s: {gbits:.2} Gbit/s; VXLAN tx {vx_packets} packets; router {router_frames} frames from the TAP, {router_datagrams} datagrams sent");
    assert!(
        vx_packets > 50_000,
        "the VXLAN device carried only {vx_packets} packets"
    );
    let reported = poll_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let st = c.status(&hs[0]).ok()?;
        (st.fastpath.tx_packets - before.fastpath.tx_packets > 50_000).then_some(())
    });
    assert!(
        reported.is_some(),
        "the status never counted the VXLAN packets"
    );
    // The router sees at most stray broadcasts and its own heartbeats.
    assert!(
        router_frames < 200,
        "the router read {router_frames} frames from the bridge"
    );
    assert!(
        router_datagrams < 200,
        "the router sent {router_datagrams} datagrams"
    );
}

#[test]
fn a_blocked_vxlan_port_moves_the_pair_to_the_sleeve_and_back() {
    let mut c = cluster("wfb");
    let hs = hosts(&mut c, 2, &[]);
    let a = c.add_pod(&hs[0], "p1", pod_ip(1)).unwrap();
    let b = c.add_pod(&hs[1], "p1", pod_ip(2)).unwrap();
    wait_path(&c, &hs[0], "h2", "fast path", Duration::from_secs(20));
    wait_path(&c, &hs[1], "h1", "fast path", Duration::from_secs(20));
    let (a2, b2) = (a.clone(), b.clone());
    let transfer = std::thread::spawn(move || {
        tcp_transfer_paced(
            &a2,
            &b2,
            48 << 20,
            Duration::from_secs(30),
            Duration::from_secs(120),
        )
    });
    std::thread::sleep(Duration::from_secs(2));
    let ul = c.lab.underlay_ns().to_string();
    c.lab
        .nft(&ul, "table bridge weftvx {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n    udp dport 6784 drop\n  }\n}\n")
        .unwrap();
    let t = wait_path(&c, &hs[0], "h2", "direct", Duration::from_secs(15));
    wait_path(&c, &hs[1], "h1", "direct", Duration::from_secs(15));
    eprintln!("moved to the sleeve after {t:?}");
    assert!(
        ping(&c.lab, &a.ns, b.ip, 3).unwrap().received >= 2,
        "the sleeve carries the pair"
    );
    c.lab.nft(&ul, "delete table bridge weftvx\n").unwrap();
    let t = wait_path(&c, &hs[0], "h2", "fast path", Duration::from_secs(20));
    eprintln!("back on the fast path after {t:?}");
    let t = transfer.join().unwrap().unwrap();
    assert!(t.intact(), "{t:?}");
}

#[test]
fn a_host_without_the_fast_path_mixes_with_hosts_that_use_it() {
    let mut c = cluster("wfm");
    let hs = hosts(&mut c, 3, &[&["--no-fastpath"]]);
    let pods: Vec<Pod> = hs
        .iter()
        .map(|h| c.add_pod(h, "p1", pod_ip(h.index)).unwrap())
        .collect();
    wait_path(&c, &hs[1], "h3", "fast path", Duration::from_secs(20));
    wait_path(&c, &hs[2], "h2", "fast path", Duration::from_secs(20));
    for a in &pods {
        for b in &pods {
            if a.ns != b.ns {
                assert_eq!(
                    ping(&c.lab, &a.ns, b.ip, 2).unwrap().received,
                    2,
                    "{} -> {}",
                    a.ns,
                    b.ip
                );
            }
        }
    }
    // Pairs with h1 stay on the sleeve, on both ends, and say why.
    let r1 = c.status(&hs[0]).unwrap();
    assert_eq!(r1.fastpath.state, "off: --no-fastpath");
    assert_eq!(path(&r1, "h2"), "direct");
    for h in &hs[1..] {
        let r = c.status(h).unwrap();
        assert_eq!(path(&r, "h1"), "direct", "{}", h.name);
        let why = &r
            .peers
            .iter()
            .find(|p| p.nickname == "h1")
            .unwrap()
            .fastpath;
        assert!(why.starts_with("sleeve"), "{why}");
    }
}

fn arp_count(c: &Cluster, pod: &Pod) -> u64 {
    weft_lab::testbed::arp_requests(&c.lab, pod).unwrap()
}

#[test]
fn an_arp_broadcast_reaches_each_remote_pod_exactly_once_on_the_fast_path() {
    let mut c = cluster("wfa");
    let hs = hosts(&mut c, 3, &[]);
    let sender = c.add_pod(&hs[0], "tx", pod_ip(1)).unwrap();
    let mut pods = vec![c
        .add_pod(&hs[0], "p2", Ipv4Addr::new(10, 32, 1, 2))
        .unwrap()];
    for h in &hs[1..] {
        pods.push(c.add_pod(h, "p1", pod_ip(h.index)).unwrap());
    }
    for (h, peers) in [
        (&hs[0], ["h2", "h3"]),
        (&hs[1], ["h1", "h3"]),
        (&hs[2], ["h1", "h2"]),
    ] {
        for p in peers {
            wait_path(&c, h, p, "fast path", Duration::from_secs(20));
        }
    }
    for p in &pods {
        weft_lab::testbed::count_arp_requests(&c.lab, p, Ipv4Addr::new(10, 32, 200, 200)).unwrap();
    }
    let _ = c.lab.exec(
        &sender.ns,
        &["ping", "-n", "-c", "1", "-W", "4", "10.32.200.200"],
    );
    poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
        (arp_count(&c, &pods[0]) >= 3).then_some(())
    })
    .expect("the local pod saw the requests");
    std::thread::sleep(Duration::from_millis(300));
    let counts: Vec<u64> = pods.iter().map(|p| arp_count(&c, p)).collect();
    assert!(
        counts.iter().all(|n| *n == counts[0]),
        "per pod (local first): {counts:?}"
    );
}

/// The flood entries (all-zero MAC) of `bridge fdb show` output.
fn flood_entries(fdb: &str) -> Vec<&str> {
    fdb.lines()
        .filter(|l| l.starts_with("00:00:00:00:00:00"))
        .collect()
}

#[test]
fn a_killed_router_leaves_exactly_one_vxlan_device_and_a_consistent_fdb() {
    let mut c = cluster("wfr");
    let hs = hosts(&mut c, 2, &[]);
    let a = c.add_pod(&hs[0], "p1", pod_ip(1)).unwrap();
    let b = c.add_pod(&hs[1], "p1", pod_ip(2)).unwrap();
    wait_path(&c, &hs[0], "h2", "fast path", Duration::from_secs(20));
    c.kill_router(&hs[0], Signal::SIGKILL).unwrap();
    c.restart_router(&hs[0]).unwrap();
    c.wait_peers(&hs[0], 1, Duration::from_secs(15)).unwrap();
    wait_path(&c, &hs[0], "h2", "fast path", Duration::from_secs(20));
    let links = c
        .lab
        .exec_ok(&hs[0].ns, &["ip", "-o", "link", "show", "type", "vxlan"])
        .unwrap();
    assert_eq!(links.lines().count(), 1, "{links}");
    // The status says "fast path" once the flood entry is written; poll all the same, in case
    // the path went back and forth meanwhile.
    let read_fdb = || {
        c.lab
            .exec_ok(&hs[0].ns, &["bridge", "fdb", "show", "dev", "weft-vxlan"])
            .unwrap()
    };
    let fdb = poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
        Some(read_fdb()).filter(|f| flood_entries(f).len() == 1)
    })
    .unwrap_or_else(read_fdb);
    let floods = flood_entries(&fdb);
    assert_eq!(floods.len(), 1, "one flood entry, to h2: {fdb}");
    assert!(floods[0].contains(&hs[1].underlay_ip.to_string()), "{fdb}");
    assert_eq!(ping(&c.lab, &a.ns, b.ip, 3).unwrap().received, 3);
    // A clean stop removes the device.
    c.kill_router(&hs[0], Signal::SIGTERM).unwrap();
    let gone = poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
        let l = c
            .lab
            .exec_ok(&hs[0].ns, &["ip", "-o", "link", "show", "type", "vxlan"])
            .ok()?;
        l.trim().is_empty().then_some(())
    });
    assert!(gone.is_some(), "the VXLAN device outlived a clean stop");
}
