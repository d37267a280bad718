//! The kernel VXLAN fast path (`weft::fastpath`) on its own: hosts and pods in network
//! namespaces, `FastPath` run inside the host namespaces, no `weft router` process. What is
//! checked: pods on two hosts talk through the kernel only (ping, counters, iperf3); a broadcast
//! reaches each remote host exactly once and never crosses from the VXLAN port to the TAP port;
//! setup after a crash reuses the device; the FDB follows set/remove/reconcile; teardown; and the
//! probe notices a firewall that drops the VXLAN port, and its removal.
//!
//! Needs root (network namespaces), `iperf3`, `arping` and `nft`.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weft::fastpath::{
    probe_mac, FastPath, FastPathConfig, PathMode, PeerPath, ProbePolicy, Reconciled, SetupOutcome,
    DEFAULT_DEVICE, FLOOD_MAC,
};
use weft_lab::{in_netns, poll_until, Host, Lab, Pod, PodSpec};
use weft_netlink::{block_on, FdbTable, LinkCounters, Netlink};

/// The pod MTU the router would compute for a 1500-byte IPv4 underlay.
const POD_MTU: u32 = 1436;

fn lab(tag: &str) -> Lab {
    assert!(
        weft_lab::require_root(),
        "these tests need root and iproute2"
    );
    Lab::new(tag).unwrap()
}

fn ip(h: &Host) -> IpAddr {
    IpAddr::V4(h.underlay_ip)
}

fn pod(lab: &mut Lab, h: &Host, n: u8) -> Pod {
    let addr = Ipv4Addr::new(10, 32, h.index, n);
    lab.add_pod(h, &format!("p{n}"), PodSpec::new(addr, 12, POD_MTU))
        .unwrap()
}

/// Runs `f` in `host`'s namespace with a netlink connection, without touching the fast path.
fn on_host<T, F, Fut>(host: &Host, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(Netlink) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>>,
{
    in_netns(&host.ns, move || block_on(f))
        .unwrap()
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Runs `f` in `host`'s namespace with its fast path set up (created, or reused as after a
/// restart) with `cfg`.
fn with_cfg<T, F, Fut>(host: &Host, cfg: FastPathConfig, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(FastPath, Netlink) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>>,
{
    on_host(host, move |nl| async move {
        let fp = FastPath::setup(&nl, cfg).await?;
        f(fp, nl).await
    })
}

/// [`with_cfg`] with the default configuration for `host`.
fn with_fp<T, F, Fut>(host: &Host, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(FastPath, Netlink) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>>,
{
    with_cfg(host, FastPathConfig::new(ip(host), POD_MTU), f)
}

/// Makes every pair of `hosts` fast-path peers of each other.
fn full_mesh(hosts: &[Host]) {
    for h in hosts {
        let peers: Vec<IpAddr> = hosts.iter().filter(|o| *o != h).map(ip).collect();
        with_fp(h, move |fp, _| async move {
            for p in peers {
                fp.add_peer(p).await?;
            }
            Ok(())
        });
    }
}

fn stats(h: &Host) -> LinkCounters {
    with_fp(h, |fp, _| async move { fp.stats().await })
}

fn fdb(h: &Host) -> Vec<([u8; 6], IpAddr)> {
    with_fp(h, |fp, _| async move { fp.fdb().await })
}

fn ping(lab: &Lab, from: &Pod, to: Ipv4Addr, count: u32) -> u32 {
    weft_lab::testbed::ping(lab, &from.ns, to, count)
        .unwrap()
        .received
}

/// The `ip -d -j link show` objects of the VXLAN devices in `ns`.
fn vxlan_devices(lab: &Lab, ns: &str) -> Vec<serde_json::Value> {
    let out = lab
        .exec_ok(ns, &["ip", "-d", "-j", "link", "show", "type", "vxlan"])
        .unwrap();
    serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap()
}

/// Whether bridge port `dev` in `ns` is isolated.
fn isolated(lab: &Lab, ns: &str, dev: &str) -> bool {
    let out = lab
        .exec_ok(ns, &["ip", "-d", "-j", "link", "show", "dev", dev])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["linkinfo"]["info_slave_data"]["isolated"]
        .as_bool()
        .unwrap_or_else(|| panic!("no isolation flag for {dev}: {v}"))
}

fn addr(a: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 200, 0, a))
}

#[test]
fn pods_on_two_hosts_talk_through_the_kernel_only() {
    let mut lab = lab("wfpk");
    let h1 = lab.add_host("h1").unwrap();
    let h2 = lab.add_host("h2").unwrap();
    let p1 = pod(&mut lab, &h1, 1);
    let p2 = pod(&mut lab, &h2, 1);
    let hosts = [h1.clone(), h2.clone()];
    // No fast path yet and no router: nothing connects the bridges.
    with_fp(&h1, |_, _| async { Ok(()) });
    with_fp(&h2, |_, _| async { Ok(()) });
    assert_eq!(ping(&lab, &p1, p2.ip, 1), 0);
    assert!(isolated(&lab, &h1.ns, DEFAULT_DEVICE));

    full_mesh(&hosts);
    let before = stats(&h1);
    assert_eq!(ping(&lab, &p1, p2.ip, 3), 3, "p1 -> p2 over VXLAN");
    assert_eq!(ping(&lab, &p2, p1.ip, 3), 3, "p2 -> p1 over VXLAN");
    let after = stats(&h1);
    assert!(
        after.tx_packets >= before.tx_packets + 6 && after.rx_packets >= before.rx_packets + 6,
        "{before:?} -> {after:?}"
    );
    // The device learned where each pod is; the bridge learned it on the VXLAN port.
    assert!(fdb(&h1).contains(&(p2.mac, ip(&h2))), "{:?}", fdb(&h1));
    assert!(fdb(&h2).contains(&(p1.mac, ip(&h1))), "{:?}", fdb(&h2));
    let learned_on_vxlan = |h: &Host, mac: [u8; 6]| {
        on_host(h, move |nl| async move {
            let vx = nl.link(DEFAULT_DEVICE).await?.unwrap().index;
            Ok(nl
                .fdb_entries()
                .await?
                .iter()
                .any(|e| e.table == FdbTable::Bridge && e.ifindex == vx && e.mac == mac))
        })
    };
    assert!(learned_on_vxlan(&h1, p2.mac));

    // 10 s of iperf3 between the pods.
    let server = lab
        .spawn(
            &p2.ns,
            Path::new("iperf3"),
            &["-s", "-1", "-B", &p2.ip.to_string()],
            "iperf3-server",
        )
        .unwrap();
    let listening = poll_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let out = lab
            .exec_ok(&p2.ns, &["ss", "-Hltn", "sport = :5201"])
            .ok()?;
        (!out.trim().is_empty()).then_some(())
    });
    assert!(listening.is_some(), "iperf3 server did not start");
    let before = stats(&h1);
    let out = lab
        .exec_ok(
            &p1.ns,
            &["iperf3", "-c", &p2.ip.to_string(), "-t", "10", "-J"],
        )
        .unwrap();
    let after = stats(&h1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    let bytes = v["end"]["sum_received"]["bytes"].as_u64().unwrap();
    eprintln!(
        "iperf3 p1 -> p2 over the kernel VXLAN fast path: {:.2} Gbit/s ({bytes} bytes in 10 s)",
        bps / 1e9
    );
    assert!(bytes > 0);
    assert!(
        after.tx_bytes - before.tx_bytes >= bytes,
        "the VXLAN device carried {} bytes of a {bytes}-byte stream",
        after.tx_bytes - before.tx_bytes
    );
    let _ = lab.wait_exit(server, Duration::from_secs(5));

    // Taking h2 off the fast path cuts the pods apart (there is no sleeve here), removes every
    // entry pointing to h2, and makes h1's bridge forget what it learned on the VXLAN port.
    // A late datagram from h2 (the end of the iperf3 stream, a pod's IPv6 solicitation) would
    // be learned again at once: h1 drops h2's VXLAN traffic while the removal is checked.
    let h2ip = ip(&h2);
    lab.nft(
        &h1.ns,
        "table inet fpquiet {\n  chain input {\n    type filter hook input priority 0;\n    udp dport 6784 drop\n  }\n}\n",
    )
    .unwrap();
    with_fp(&h1, move |fp, _| async move { fp.remove_peer(h2ip).await });
    assert!(
        fdb(&h1).iter().all(|(_, dst)| *dst != h2ip),
        "{:?}",
        fdb(&h1)
    );
    assert!(!learned_on_vxlan(&h1, p2.mac));
    lab.nft(&h1.ns, "delete table inet fpquiet").unwrap();
    assert_eq!(ping(&lab, &p1, p2.ip, 1), 0);
    // h2 has not decided yet and still sends over VXLAN: h1 learns p2 again (and here, with the
    // path intact, even answers over it). The next reconcile removes what was learned.
    assert_eq!(ping(&lab, &p2, p1.ip, 1), 1);
    assert!(fdb(&h1).contains(&(p2.mac, h2ip)));
    assert!(learned_on_vxlan(&h1, p2.mac));
    let done = with_fp(&h1, |fp, _| async move { fp.reconcile(&[], &[]).await });
    assert!(
        done.macs_removed >= 1 && done.peers_removed == 0,
        "{done:?}"
    );
    assert!(
        fdb(&h1).iter().all(|(_, dst)| *dst != h2ip),
        "{:?}",
        fdb(&h1)
    );
    assert!(!learned_on_vxlan(&h1, p2.mac));
}

/// nftables counters of ARP requests for each of `targets`, on ingress of `dev` in `ns`.
fn count_arp(lab: &Lab, ns: &str, dev: &str, targets: &[Ipv4Addr]) {
    let mut rules = String::new();
    for t in targets {
        rules.push_str(&format!(
            "    arp operation request arp daddr ip {t} counter\n"
        ));
    }
    lab.nft(
        ns,
        &format!(
            "table netdev fpcount {{\n  chain in {{\n    type filter hook ingress device {dev} priority 0;\n{rules}  }}\n}}\n"
        ),
    )
    .unwrap();
}

/// The packets counted by [`count_arp`] for `target`.
fn arp_count(lab: &Lab, ns: &str, target: Ipv4Addr) -> u64 {
    let out = lab
        .exec_ok(
            ns,
            &["nft", "-j", "list", "chain", "netdev", "fpcount", "in"],
        )
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let target = target.to_string();
    for item in v["nftables"].as_array().unwrap() {
        let Some(expr) = item["rule"]["expr"].as_array() else {
            continue;
        };
        if expr.iter().any(|e| e["match"]["right"] == target.as_str()) {
            return expr
                .iter()
                .find_map(|e| e["counter"]["packets"].as_u64())
                .unwrap();
        }
    }
    panic!("no counter for {target} in {ns}: {out}");
}

/// Sends one ARP request for `target` from `pod` (nobody has that address).
fn arp_broadcast(lab: &Lab, pod: &Pod, target: Ipv4Addr) {
    let out = lab
        .exec(
            &pod.ns,
            &[
                "arping",
                "-c",
                "1",
                "-w",
                "1",
                "-i",
                "eth0",
                &target.to_string(),
            ],
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ARPING") || out.status.success(),
        "arping failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_broadcast_reaches_each_remote_host_exactly_once() {
    let mut lab = lab("wfpb");
    let hosts: Vec<Host> = (1..=3)
        .map(|i| lab.add_host(&format!("h{i}")).unwrap())
        .collect();
    let pods: Vec<Pod> = hosts.iter().map(|h| pod(&mut lab, h, 1)).collect();
    // Stand-in for the router's TAP port: a veth `weft-tap` on the bridge, isolated as the
    // router will isolate its TAP; what the router would read arrives at its peer `tapsink`.
    for h in &hosts {
        for cmd in [
            "ip link add weft-tap type veth peer name tapsink",
            "sysctl -qw net.ipv6.conf.tapsink.disable_ipv6=1",
            "sysctl -qw net.ipv6.conf.weft-tap.disable_ipv6=1",
            "ip link set weft-tap master weft up",
            "ip link set tapsink up",
        ] {
            let args: Vec<&str> = cmd.split(' ').collect();
            lab.exec_ok(&h.ns, &args).unwrap();
        }
        on_host(h, |nl| async move {
            Ok(nl.set_port_isolated("weft-tap", true).await?)
        });
        assert!(isolated(&lab, &h.ns, "weft-tap"));
    }
    full_mesh(&hosts);
    let (t1, t2) = (Ipv4Addr::new(10, 32, 99, 1), Ipv4Addr::new(10, 32, 99, 2));
    for (h, p) in hosts.iter().zip(&pods) {
        count_arp(&lab, &p.ns, "eth0", &[t1, t2]);
        count_arp(&lab, &h.ns, "tapsink", &[t1, t2]);
    }

    arp_broadcast(&lab, &pods[0], t1);
    std::thread::sleep(Duration::from_millis(300));
    for p in &pods[1..] {
        assert_eq!(arp_count(&lab, &p.ns, t1), 1, "copies at {}", p.ns);
    }
    assert_eq!(arp_count(&lab, &pods[0].ns, t1), 0, "echoed to the sender");
    // The local router gets its one copy (to send to sleeve peers only); the remote routers
    // get none: VXLAN -> TAP is blocked by isolation, so nothing can loop or be sent twice.
    assert_eq!(arp_count(&lab, &hosts[0].ns, t1), 1);
    for h in &hosts[1..] {
        assert_eq!(
            arp_count(&lab, &h.ns, t1),
            0,
            "leaked to the TAP of {}",
            h.ns
        );
    }

    // Control: without isolation on h2's TAP port, the frame from the VXLAN port reaches it
    // (and a router would send it on: the duplicate that isolation prevents).
    on_host(&hosts[1], |nl| async move {
        Ok(nl.set_port_isolated("weft-tap", false).await?)
    });
    arp_broadcast(&lab, &pods[0], t2);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(arp_count(&lab, &hosts[1].ns, t2), 1);
    assert_eq!(arp_count(&lab, &hosts[2].ns, t2), 0);
    for p in &pods[1..] {
        assert_eq!(arp_count(&lab, &p.ns, t2), 1, "copies at {}", p.ns);
    }
}

#[test]
fn setup_after_a_crash_reuses_the_device_and_reconcile_fixes_the_fdb() {
    let mut lab = lab("wfpr");
    let h = lab.add_host("h1").unwrap();
    pod(&mut lab, &h, 1);
    let (a, b, c) = (addr(50), addr(51), addr(52));
    let (m1, m2, m3, m4) = (
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 0, 2],
        [2, 0, 0, 0, 0, 3],
        [2, 0, 0, 0, 0, 4],
    );
    // First run: created; then "crash" (drop without teardown).
    let (index, first) = with_fp(&h, move |fp, _| async move {
        assert_eq!(fp.outcome(), SetupOutcome::Created);
        fp.add_peer(a).await?;
        fp.add_peer(b).await?;
        fp.set_mac(m1, a).await?;
        fp.set_mac(m2, b).await?;
        Ok((fp.index(), fp.fdb().await?))
    });
    assert_eq!(
        first,
        vec![(FLOOD_MAC, a), (FLOOD_MAC, b), (m1, a), (m2, b)]
    );
    // Second run: the same device, the same entries.
    let (index2, outcome, second) = with_fp(&h, |fp, _| async move {
        Ok((fp.index(), fp.outcome(), fp.fdb().await?))
    });
    assert_eq!(
        (index2, outcome, &second),
        (index, SetupOutcome::Reused, &first)
    );
    assert_eq!(vxlan_devices(&lab, &h.ns).len(), 1);
    assert!(isolated(&lab, &h.ns, DEFAULT_DEVICE));

    // The router now wants peers a and c: b's flood entry and MAC go, c's appear; m4 points to
    // a peer that is not wanted and is ignored.
    let now = with_fp(&h, move |fp, _| async move {
        let first = fp.reconcile(&[a, c], &[(m1, a), (m3, c), (m4, b)]).await?;
        let again = fp.reconcile(&[a, c], &[(m1, a), (m3, c), (m4, b)]).await?;
        Ok((fp.fdb().await?, fp.peers().await?, first, again))
    });
    let expected = Reconciled {
        peers_added: 1,
        peers_removed: 1,
        macs_set: 1,
        macs_removed: 1,
        entries: 0,
    };
    // `entries` is what the round read, not a change: the second read sees the flood entry
    // (one, for two peers), m1 and m3.
    assert_eq!(now.3.entries, 3);
    let changes = |r: Reconciled| Reconciled { entries: 0, ..r };
    assert_eq!(
        (changes(now.2), changes(now.3)),
        (expected, Reconciled::default())
    );
    assert_eq!(
        now.0,
        vec![(FLOOD_MAC, a), (FLOOD_MAC, c), (m1, a), (m3, c)]
    );
    assert_eq!(now.1, vec![a, c]);

    // A device with other parameters (here another VNI) is replaced, never duplicated.
    let mut cfg = FastPathConfig::new(ip(&h), POD_MTU);
    cfg.vni = 0x1234;
    let (index3, outcome, fdb3) = with_cfg(&h, cfg, |fp, _| async move {
        Ok((fp.index(), fp.outcome(), fp.fdb().await?))
    });
    assert_eq!(outcome, SetupOutcome::Recreated);
    assert_ne!(index3, index);
    assert!(fdb3.is_empty(), "{fdb3:?}");
    let devs = vxlan_devices(&lab, &h.ns);
    assert_eq!(devs.len(), 1);
    assert_eq!(devs[0]["linkinfo"]["info_data"]["id"], 0x1234);
    assert_eq!(devs[0]["mtu"], POD_MTU);
    assert_eq!(devs[0]["master"], "weft");
    assert!(isolated(&lab, &h.ns, DEFAULT_DEVICE));
}

#[test]
fn set_mac_follows_a_move_and_remove_peer_cleans_up() {
    let mut lab = lab("wfpm");
    let h = lab.add_host("h1").unwrap();
    pod(&mut lab, &h, 1);
    let (a, b) = (addr(60), addr(61));
    let (m, n) = ([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 1, 2]);
    let steps = with_fp(&h, move |fp, _| async move {
        let mut steps = Vec::new();
        fp.add_peer(a).await?;
        fp.add_peer(b).await?;
        fp.add_peer(b).await?; // idempotent
        fp.set_mac(m, a).await?;
        fp.set_mac(n, a).await?;
        steps.push(fp.fdb().await?);
        fp.set_mac(m, b).await?; // m moved to b
        steps.push(fp.fdb().await?);
        fp.remove_peer(a).await?;
        fp.remove_peer(a).await?; // idempotent
        steps.push(fp.fdb().await?);
        fp.remove_mac(m).await?;
        fp.remove_mac(m).await?; // idempotent
        steps.push(fp.fdb().await?);
        // Bad input is refused before it reaches the kernel.
        assert!(fp.set_mac(FLOOD_MAC, b).await.is_err());
        assert!(fp.set_mac([0xff; 6], b).await.is_err());
        assert!(fp.add_peer(fp.config().local).await.is_err());
        assert!(fp.add_peer("fd00::1".parse()?).await.is_err());
        Ok(steps)
    });
    assert_eq!(
        steps[0],
        vec![(FLOOD_MAC, a), (FLOOD_MAC, b), (m, a), (n, a)]
    );
    assert_eq!(
        steps[1],
        vec![(FLOOD_MAC, a), (FLOOD_MAC, b), (m, b), (n, a)]
    );
    assert_eq!(steps[2], vec![(FLOOD_MAC, b), (m, b)]);
    assert_eq!(steps[3], vec![(FLOOD_MAC, b)]);
}

#[test]
fn teardown_removes_the_device() {
    let mut lab = lab("wfpt");
    let h = lab.add_host("h1").unwrap();
    pod(&mut lab, &h, 1);
    let gone = with_fp(&h, |fp, nl| async move {
        fp.add_peer(addr(70)).await?;
        fp.teardown(&nl).await?;
        Ok(nl.link(DEFAULT_DEVICE).await?.is_none())
    });
    assert!(gone);
    assert!(vxlan_devices(&lab, &h.ns).is_empty());
    // The bridge and the pod's port are untouched.
    lab.exec_ok(&h.ns, &["ip", "link", "show", "dev", "weft"])
        .unwrap();
}

/// Sends a probe from `from` to `to` every 100 ms until dropped.
struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    fn start(from: &Host, to: &Host) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let (ns, local, peer) = (from.ns.clone(), ip(from), ip(to));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            in_netns(&ns, move || {
                block_on(|nl| async move {
                    let fp = FastPath::setup(&nl, FastPathConfig::new(local, POD_MTU)).await?;
                    let socket = UdpSocket::bind((local, 0))?;
                    while !flag.load(Ordering::Relaxed) {
                        fp.send_probe(&socket, peer)?;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Ok::<_, anyhow::Error>(())
                })
                .unwrap()
            })
            .unwrap()
        });
        Prober {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn probe_age(at: &Host, from: &Host) -> Option<Duration> {
    let peer = ip(from);
    with_fp(at, move |fp, _| async move { fp.probe_age(peer).await })
}

#[test]
fn the_probe_notices_a_blocked_vxlan_port_and_its_recovery() {
    let mut lab = lab("wfpp");
    let h1 = lab.add_host("h1").unwrap();
    let h2 = lab.add_host("h2").unwrap();
    let p1 = pod(&mut lab, &h1, 1);
    let p2 = pod(&mut lab, &h2, 1);
    full_mesh(&[h1.clone(), h2.clone()]);
    let local1 = ip(&h1);
    let _probes = (Prober::start(&h1, &h2), Prober::start(&h2, &h1));
    let policy = ProbePolicy {
        interval: Duration::from_millis(100),
        max_age: Duration::from_millis(600),
        promote_after: Duration::from_millis(500),
    };
    // h1's decision about h2: inbound = h2's probes seen at h1, outbound = h1's probes seen at h2
    // (which h2's router would report to h1).
    let mut path = PeerPath::new();
    let mut wait_for = |mode: PathMode, timeout: Duration| -> Duration {
        let start = Instant::now();
        poll_until(timeout, policy.interval, || {
            let inbound = probe_age(&h1, &h2);
            let outbound = probe_age(&h2, &h1);
            path.observe(&policy, Instant::now(), inbound, outbound);
            (path.mode() == mode).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "no {mode:?} within {timeout:?}: h1 sees h2's probes {:?} ago, h2 sees h1's {:?} ago",
                probe_age(&h1, &h2),
                probe_age(&h2, &h1)
            )
        });
        start.elapsed()
    };

    lab.nft(
        &p2.ns,
        "table netdev fpcount {\n  chain in {\n    type filter hook ingress device eth0 priority 0;\n    ether type 0x88b5 counter\n  }\n}\n",
    )
    .unwrap();
    let t = wait_for(PathMode::Fast, Duration::from_secs(10));
    eprintln!("fast path confirmed after {t:?}");
    // Fresh: a probe every 100 ms (slack for a loaded machine).
    let age = probe_age(&h2, &h1);
    assert!(age.is_some_and(|a| a < Duration::from_secs(2)), "{age:?}");
    // The probes reached no pod: h2's bridge learned the probe MAC, then dropped the frame.
    let counted = lab
        .exec_ok(
            &p2.ns,
            &["nft", "-j", "list", "chain", "netdev", "fpcount", "in"],
        )
        .unwrap();
    assert!(counted.contains(r#""packets": 0"#), "{counted}");
    let learned = with_fp(&h2, move |fp, nl| async move {
        let entries = nl.fdb_entries().await?;
        Ok(entries.into_iter().find(|e| {
            e.ifindex == fp.index() && e.table == FdbTable::Bridge && e.mac == probe_mac(local1)
        }))
    });
    // Learned from a probe, then pinned by `probe_ages` as a static entry (it survives port
    // flushes and the bridge's cap on learned entries; docs/fastpath.md).
    assert!(learned.is_some_and(|e| e.permanent && !e.local));
    let ages = with_fp(&h2, move |fp, _| async move {
        fp.probe_ages(&[local1, addr(99)]).await
    });
    assert!(ages[0].is_some() && ages[1].is_none(), "{ages:?}");

    // A firewall on h2 starts dropping the VXLAN port: h1 -> h2 fails (h2 -> h1 still works).
    lab.nft(
        &h2.ns,
        "table inet fpblock {\n  chain input {\n    type filter hook input priority 0;\n    udp dport 6784 drop\n  }\n}\n",
    )
    .unwrap();
    let t = wait_for(PathMode::Sleeve, Duration::from_secs(5));
    eprintln!("blocked VXLAN port noticed after {t:?}");
    // The other direction still works: h1 keeps hearing h2's probes (a generous bound: the
    // machine may be busy; the probes come every 100 ms).
    assert!(probe_age(&h1, &h2).is_some_and(|a| a < Duration::from_secs(2)));
    assert_eq!(ping(&lab, &p1, p2.ip, 1), 0, "h1 -> h2 is blocked");

    // The rule goes away: the path is confirmed again.
    lab.nft(&h2.ns, "delete table inet fpblock").unwrap();
    let t = wait_for(PathMode::Fast, Duration::from_secs(5));
    eprintln!("recovery confirmed after {t:?}");
    assert_eq!(ping(&lab, &p1, p2.ip, 3), 3);
}
