//! The gossip mesh end to end: discovery from one seed, relaying around a blocked underlay
//! link, a killed router forgotten and rejoining, the seed list at run time, metrics.
//!
//! Needs root (network namespaces) and the `weft` binary (`scripts/test.sh` builds it).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use weft_api::status::Report;
use weft_lab::testbed::{http_get, tcp_transfer_paced, weft_bin, Cluster};
use weft_lab::{poll_until, Host, Pod, Signal};

/// These tests are about the mesh and the sleeve: the kernel fast path stays off.
const SLEEVE: &[&str] = &["--no-fastpath"];

fn pod_ip(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 32, host, 1)
}

fn cluster(tag: &str) -> Cluster {
    assert!(
        weft_lab::require_root(),
        "these tests need root and iproute2"
    );
    Cluster::new(tag, weft_bin().unwrap()).unwrap()
}

fn wait_ping(c: &Cluster, from: &Pod, to: Ipv4Addr, timeout: Duration) -> bool {
    weft_lab::testbed::wait_ping(&c.lab, from, to, timeout)
}

/// Waits until `host` sees `peer` (by nickname) with the given path, e.g. "direct" or "via h2".
fn wait_path(c: &Cluster, host: &Host, peer: &str, path: &str, timeout: Duration) -> Report {
    c.wait_path(host, peer, path, timeout).unwrap().0
}

#[test]
fn five_hosts_seeded_as_a_chain_form_a_full_mesh() {
    let mut c = cluster("wmc");
    let hosts = c.chain(5, SLEEVE).unwrap();
    for h in &hosts {
        let r = poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
            let r = c.status(h).ok()?;
            let direct = r
                .peers
                .iter()
                .filter(|p| p.state == "established" && p.path == "direct")
                .count();
            (direct == 4).then_some(r)
        });
        assert!(
            r.is_some(),
            "{} did not connect to all 4 others:\n{}",
            h.name,
            c.status(h).unwrap().render()
        );
    }
    let pods: Vec<Pod> = hosts
        .iter()
        .map(|h| c.add_pod(h, "p1", pod_ip(h.index)).unwrap())
        .collect();
    for a in &pods {
        for b in &pods {
            if a.ns != b.ns {
                assert!(
                    wait_ping(&c, a, b.ip, Duration::from_secs(5)),
                    "{} cannot reach {}",
                    a.ns,
                    b.ip
                );
            }
        }
    }
}

fn block_rules(a: Ipv4Addr, b: Ipv4Addr) -> String {
    format!(
        "table bridge weftblock {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    ip saddr {a} ip daddr {b} drop\n    ip saddr {b} ip daddr {a} drop\n  }}\n}}\n"
    )
}

#[test]
fn a_blocked_underlay_link_is_relayed_around_and_recovers() {
    let mut c = cluster("wmr");
    let hosts = c.full_mesh(3, &[SLEEVE; 3]).unwrap();
    wait_path(&c, &hosts[0], "h3", "direct", Duration::from_secs(10));
    let a = c.add_pod(&hosts[0], "p1", pod_ip(1)).unwrap();
    let b = c.add_pod(&hosts[2], "p1", pod_ip(3)).unwrap();
    assert!(wait_ping(&c, &a, b.ip, Duration::from_secs(5)));

    // A transfer runs across the whole change: direct, relayed through h2, direct again.
    let (a2, b2) = (a.clone(), b.clone());
    let transfer = std::thread::spawn(move || {
        tcp_transfer_paced(
            &a2,
            &b2,
            48 << 20,
            Duration::from_secs(25),
            Duration::from_secs(90),
        )
    });
    std::thread::sleep(Duration::from_secs(2));
    let relayed_before = c.status(&hosts[1]).unwrap().counters["relayed_datagrams"];
    let ul = c.lab.underlay_ns().to_string();
    c.lab
        .nft(
            &ul,
            &block_rules(hosts[0].underlay_ip, hosts[2].underlay_ip),
        )
        .unwrap();
    let blocked_at = Instant::now();
    wait_path(&c, &hosts[0], "h3", "via h2", Duration::from_secs(10));
    wait_path(&c, &hosts[2], "h1", "via h2", Duration::from_secs(10));
    eprintln!("relayed after {:?}", blocked_at.elapsed());
    assert!(
        wait_ping(&c, &a, b.ip, Duration::from_secs(5)),
        "no ping through the relay"
    );
    let relayed = c.status(&hosts[1]).unwrap().counters["relayed_datagrams"];
    assert!(relayed > relayed_before, "h2 relayed nothing");

    c.lab.nft(&ul, "delete table bridge weftblock\n").unwrap();
    let unblocked_at = Instant::now();
    wait_path(&c, &hosts[0], "h3", "direct", Duration::from_secs(30));
    // h3's replies too: it confirms its own path to h1.
    wait_path(&c, &hosts[2], "h1", "direct", Duration::from_secs(30));
    eprintln!("direct again after {:?}", unblocked_at.elapsed());

    let t = transfer.join().unwrap().unwrap();
    assert!(t.intact(), "{t:?}");
    // Once direct, h2 stops relaying.
    let r1 = c.status(&hosts[1]).unwrap().counters["relayed_datagrams"];
    assert!(wait_ping(&c, &a, b.ip, Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(500));
    let r2 = c.status(&hosts[1]).unwrap().counters["relayed_datagrams"];
    assert_eq!(r1, r2, "h2 still relays after the direct path recovered");
}

#[test]
fn a_killed_router_is_forgotten_and_rejoins_with_a_new_run_id() {
    let mut c = cluster("wmk");
    let hosts = c.full_mesh(3, &[SLEEVE; 3]).unwrap();
    let a = c.add_pod(&hosts[0], "p1", pod_ip(1)).unwrap();
    let b = c.add_pod(&hosts[2], "p1", pod_ip(3)).unwrap();
    assert!(wait_ping(&c, &a, b.ip, Duration::from_secs(5)));
    let uid_before = c.status(&hosts[2]).unwrap().uid;

    c.kill_router(&hosts[2], Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    for h in &hosts[..2] {
        c.wait_peers(h, 1, Duration::from_secs(10)).unwrap();
    }
    eprintln!("forgotten after {:?}", killed.elapsed());

    c.restart_router(&hosts[2]).unwrap();
    for h in &hosts {
        c.wait_peers(h, 2, Duration::from_secs(15)).unwrap();
    }
    assert_ne!(c.status(&hosts[2]).unwrap().uid, uid_before, "a new run id");
    wait_path(&c, &hosts[0], "h3", "direct", Duration::from_secs(10));
    assert!(wait_ping(&c, &a, b.ip, Duration::from_secs(10)));
}

#[test]
fn connect_and_forget_change_the_seed_list_at_run_time() {
    let mut c = cluster("wms");
    let h1 = c.add_host("h1").unwrap();
    let h2 = c.add_host("h2").unwrap();
    c.start_router(&h1, &[], SLEEVE).unwrap();
    c.start_router(&h2, &[], SLEEVE).unwrap();
    let weft = weft_bin().unwrap();
    let state = c.state_dir(&h2);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&weft)
            .args(args)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let target = h1.underlay_ip.to_string();
    let out = run(&["connect", &target]);
    assert!(out.contains("added"), "{out}");
    c.wait_peers(&h2, 1, Duration::from_secs(10)).unwrap();
    let seeds = std::fs::read_to_string(state.join("seeds")).unwrap();
    assert!(seeds.contains(&format!("{target}:6783")), "{seeds}");
    assert!(run(&["connect", &target]).contains("already"));

    let out = run(&["forget", &target]);
    assert!(out.contains("removed"), "{out}");
    let seeds = std::fs::read_to_string(state.join("seeds")).unwrap();
    assert!(!seeds.contains(&target), "{seeds}");
    assert!(c.status(&h2).unwrap().targets.is_empty());
    // The established connection stays: forget only stops dialling.
    assert_eq!(c.status(&h2).unwrap().peers.len(), 1);

    // A bad address is refused with a clear message.
    let out = std::process::Command::new(&weft)
        .args(["connect", "not an address", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("resolve"));
}

#[test]
fn metrics_endpoint_serves_the_status_figures() {
    let mut c = cluster("wmp");
    let h1 = c.add_host("h1").unwrap();
    let h2 = c.add_host("h2").unwrap();
    let metrics = format!("{}:9101", h1.underlay_ip);
    c.start_router(&h1, &[], &["--metrics", &metrics, "--no-fastpath"])
        .unwrap();
    c.start_router(&h2, &[&h1], SLEEVE).unwrap();
    c.wait_peers(&h1, 1, Duration::from_secs(10)).unwrap();
    let page = http_get(&h1.ns, &metrics, "/metrics").unwrap();
    assert!(
        page.starts_with("HTTP/1.0 200") || page.starts_with("HTTP/1.1 200"),
        "{page}"
    );
    assert!(
        page.contains("weft_peers{state=\"established\"} 1"),
        "{page}"
    );
    assert!(page.contains("weft_peer_tx_frames_total{peer="), "{page}");
    assert!(page.contains("nickname=\"h2\""), "{page}");
    assert!(page.contains("# TYPE weft_drops_total counter"), "{page}");
}

fn arp_count(c: &Cluster, pod: &Pod) -> u64 {
    weft_lab::testbed::arp_requests(&c.lab, pod).unwrap()
}

#[test]
fn every_pod_gets_each_broadcast_exactly_once() {
    let mut c = cluster("wmb");
    let hosts = c.chain(4, SLEEVE).unwrap();
    for h in &hosts {
        c.wait_peers(h, 3, Duration::from_secs(20)).unwrap();
    }
    // Broadcast trees agree only once every router holds every record.
    c.wait_converged(&hosts, Duration::from_secs(20)).unwrap();
    // Every record is signed by its owner, and no router refused one.
    for h in &hosts {
        let r = c.status(h).unwrap();
        assert!(r.topology.iter().all(|t| t.signed), "{:?}", r.topology);
        let refused: u64 = r.rejected_records.values().sum();
        assert_eq!(refused, 0, "{:?}", r.rejected_records);
    }
    let sender = c.add_pod(&hosts[0], "tx", pod_ip(1)).unwrap();
    let mut pods = vec![c
        .add_pod(&hosts[0], "p2", Ipv4Addr::new(10, 32, 1, 2))
        .unwrap()];
    for h in &hosts[1..] {
        pods.push(c.add_pod(h, "p1", pod_ip(h.index)).unwrap());
    }
    for p in &pods {
        weft_lab::testbed::count_arp_requests(&c.lab, p, Ipv4Addr::new(10, 32, 200, 200)).unwrap();
    }
    // ARP for an address nobody has: the kernel broadcasts a request once a second, 3 times.
    let _ = c.lab.exec(
        &sender.ns,
        &["ping", "-n", "-c", "1", "-W", "4", "10.32.200.200"],
    );
    let counts = poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
        let counts: Vec<u64> = pods.iter().map(|p| arp_count(&c, p)).collect();
        (counts[0] >= 3).then_some(counts)
    })
    .expect("the local pod saw the requests");
    std::thread::sleep(Duration::from_millis(300));
    let counts_after: Vec<u64> = pods.iter().map(|p| arp_count(&c, p)).collect();
    // The pod on the sender's own bridge is the reference: every remote pod saw exactly as many.
    assert!(
        counts_after.iter().all(|n| *n == counts_after[0]),
        "broadcasts seen per pod (local first): {counts_after:?} (earlier {counts:?})"
    );
}
