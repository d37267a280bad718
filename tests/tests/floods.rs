//! Floods from a pod (issue #17, part 4), the router's side; the kernel's side of a flood of MACs
//! is tests/tests/macflood.rs. A pod writes frames with a packet socket on its own thread inside
//! its namespace (`weft_tests::frames::Flooder`):
//!
//! * from a hand-attached pod, over the sleeve: frames from a new random source MAC each, then
//!   frames to thousands of distinct multicast groups. The router's MAC table stops at its cap
//!   and counts evictions, its RSS stays bounded, multicast destinations leave no state, the
//!   other pods' pings go on;
//! * from a pod attached through `cnitool` (so under the port guard), with a small
//!   `--flood-limit`: a broadcast ARP storm and a burst to many multicast groups. What gets
//!   through stays within the rate and its burst, everything beyond is dropped and counted for
//!   the port and for `flood_limit`, on its own host and across hosts (the fast path: the limit
//!   sits on the bridge port), and the other pods' ARP and pings keep working.
//!
//! Figures (ping times during the flood, frames the router read) are printed; rerun with
//! `--nocapture` to read them. Needs root, `cnitool`, `nft` and the release `weft` and
//! `weft-cni` binaries.

use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;
use weft_api::status::Report;
use weft_lab::testbed::{ping, weft_bin, Cluster, PingStats};
use weft_lab::{poll_until, Host};
use weft_tests::cni::CniPod;
use weft_tests::frames::{arp, eth, mark, udp4, Flooder, Sniffer, BROADCAST};
use weft_tests::guarded::{add_pod, cni_cluster, guard, port_drops};

/// The floods share two cores: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Most RSS a router may reach during a flood, in KiB (as in tests/tests/macflood.rs).
const RSS_LIMIT_KIB: u64 = 48 * 1024;
/// The router's MAC table cap in the sleeve test (`--max-macs`).
const MAX_MACS: u64 = 1024;
/// Most pings between the honest pods that may go unanswered during a flood, in percent.
const MAX_PING_LOSS_PCT: u32 = 10;

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn counter(r: &Report, name: &str) -> u64 {
    r.counters.get(name).copied().unwrap_or(0)
}

/// Pings `to` from `ns` `count` times (0.2 s apart) while `meanwhile` runs.
fn pinging<T>(
    c: &Cluster,
    ns: &str,
    to: Ipv4Addr,
    count: u32,
    meanwhile: impl FnOnce() -> T,
) -> (PingStats, T) {
    thread::scope(|s| {
        let pings = s.spawn(|| ping(&c.lab, ns, to, count).unwrap());
        let t = meanwhile();
        (pings.join().unwrap(), t)
    })
}

/// Waits for `f`, sampling the RSS of `pids` every 100 ms: the most seen of each, in KiB.
fn rss_while(f: &Flooder, pids: [u32; 2]) -> [u64; 2] {
    let mut max = [0u64; 2];
    loop {
        for (m, p) in max.iter_mut().zip(pids) {
            *m = (*m).max(rss_kib(p));
        }
        if f.is_finished() {
            return max;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn assert_few_lost(what: &str, p: &PingStats) {
    println!(
        "{what}: {}/{} answered, rtt min/avg/max {:.2}/{:.2}/{:.2} ms",
        p.received, p.sent, p.min_ms, p.avg_ms, p.max_ms
    );
    assert!(
        p.sent > 0 && (p.sent - p.received) * 100 <= p.sent * MAX_PING_LOSS_PCT,
        "{what}: {}/{} answered",
        p.received,
        p.sent
    );
}

/// A locally administered unicast MAC from `i` (never the same for two `i` below 2^32).
fn random_mac(i: u64) -> [u8; 6] {
    let x = (i as u32).wrapping_mul(0x9e37_79b1).to_be_bytes();
    [0x06, 0x42, x[0], x[1], x[2], x[3]]
}

/// The multicast MAC of group `i` (01:00:5e and 23 bits).
fn group_mac(i: u64) -> [u8; 6] {
    [
        0x01,
        0,
        0x5e,
        (i >> 16) as u8 & 0x7f,
        (i >> 8) as u8,
        i as u8,
    ]
}

fn group_ip(i: u64) -> Ipv4Addr {
    Ipv4Addr::new(239, (i >> 16) as u8 & 0x7f, (i >> 8) as u8, i as u8)
}

#[test]
fn source_macs_and_groups_from_a_hand_attached_pod_stay_bounded_in_the_router() {
    assert!(weft_lab::require_root(), "these tests need root");
    let _one = one_at_a_time();
    let mut c = Cluster::new("wfs", weft_bin().unwrap()).unwrap();
    let max = MAX_MACS.to_string();
    let args = ["--no-fastpath", "--max-macs", &max];
    let hosts = c.full_mesh(2, &[&args, &args]).unwrap();
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let ip = |n: u8| Ipv4Addr::new(10, 40, 0, n);
    let flooder = c.add_pod(h1, "f", ip(1)).unwrap();
    let a = c.add_pod(h1, "a", ip(2)).unwrap();
    let b = c.add_pod(h2, "b", ip(3)).unwrap();
    assert!(weft_lab::testbed::wait_ping(
        &c.lab,
        &a,
        b.ip,
        Duration::from_secs(15)
    ));
    let pids = [h1, h2].map(|h| c.router_pid(h).unwrap());
    let before = [h1, h2].map(|h| c.status(h).unwrap());

    // (a) A new source MAC in every frame, broadcast so that the bridge passes each to the TAP
    // port: 30,000 frames in 2 s.
    let sent_macs = 30_000;
    let (pings, (rss_max, (sent, took))) = pinging(&c, &a.ns, b.ip, 15, || {
        let storm = Flooder::start(&flooder.ns, sent_macs, 15_000, |i| {
            eth(BROADCAST, random_mac(i), 0x88b6, &[0u8; 46])
        });
        (rss_while(&storm, pids), storm.join())
    });
    assert_eq!(sent, sent_macs);
    assert_few_lost("a -> b during the MAC flood", &pings);
    let after = [h1, h2].map(|h| c.status(h).unwrap());
    for i in 0..2 {
        let (b4, af) = (&before[i], &after[i]);
        let evicted = af.fdb["evictions"] - b4.fdb["evictions"];
        println!(
            "{}: MAC table {} of {}, {evicted} evictions, RSS max {} KiB, TAP frames read {} \
             ({} frames sent in {took:?})",
            hosts[i].name,
            af.fdb["entries"],
            af.fdb["capacity"],
            rss_max[i],
            counter(af, "tap_rx_frames") - counter(b4, "tap_rx_frames"),
            sent,
        );
        assert_eq!(af.fdb["capacity"], MAX_MACS);
        assert!(af.fdb["entries"] <= MAX_MACS, "{:?}", af.fdb);
        assert!(
            af.fdb["entries"] >= MAX_MACS - 16,
            "not at its cap: {:?}",
            af.fdb
        );
        // Every new MAC beyond the cap evicts one; at least half the frames reached the router
        // on h1 and crossed to h2 (the rest may be lost in queues, which is allowed).
        assert!(evicted >= sent / 2 - MAX_MACS, "{evicted} evictions");
        assert!(evicted <= sent, "{evicted} evictions for {sent} MACs");
        assert!(rss_max[i] <= RSS_LIMIT_KIB, "RSS {} KiB", rss_max[i]);
    }
    // The honest pods' MACs are still known (learned again by their next frames).
    assert!(weft_lab::testbed::wait_ping(
        &c.lab,
        &a,
        b.ip,
        Duration::from_secs(10)
    ));

    // (c) Multicast to 20,000 distinct groups from the flooder's own MAC: nothing per group.
    let before = [h1, h2].map(|h| c.status(h).unwrap());
    let groups = 20_000;
    let (fmac, fip) = (flooder.mac, flooder.ip);
    let (pings, (rss_max, (sent, _))) = pinging(&c, &a.ns, b.ip, 10, || {
        let storm = Flooder::start(&flooder.ns, groups, 10_000, move |i| {
            eth(
                group_mac(i),
                fmac,
                0x0800,
                &udp4(fip, group_ip(i), 9, 9, &mark(9)),
            )
        });
        (rss_while(&storm, pids), storm.join())
    });
    assert_few_lost("a -> b during the multicast flood", &pings);
    // Let the last frames cross.
    thread::sleep(Duration::from_millis(500));
    let after = [h1, h2].map(|h| c.status(h).unwrap());
    let d = |i: usize, k: &str| counter(&after[i], k) - counter(&before[i], k);
    println!(
        "multicast: {sent} sent, h1 read {} from the TAP and flooded {}, h2 wrote {} to its TAP; \
         MAC tables {} and {}; RSS max {:?} KiB",
        d(0, "tap_rx_frames"),
        d(0, "flooded_frames"),
        d(1, "tap_tx_frames"),
        after[0].fdb["entries"],
        after[1].fdb["entries"],
        rss_max
    );
    assert!(d(0, "tap_rx_frames") >= sent / 2, "h1 read too few");
    assert!(d(0, "flooded_frames") >= sent / 2, "h1 flooded too few");
    assert!(d(0, "flooded_frames") <= d(0, "tap_rx_frames"));
    assert!(d(1, "tap_tx_frames") <= d(0, "flooded_frames") + 200);
    for i in 0..2 {
        // No entry per group: the tables hold what they held (the cap) and evict nothing new
        // for destinations.
        assert!(after[i].fdb["entries"] <= MAX_MACS);
        assert!(
            after[i].fdb["evictions"] - before[i].fdb["evictions"] <= 16,
            "multicast destinations evicted entries: {:?}",
            after[i].fdb
        );
        assert!(rss_max[i] <= RSS_LIMIT_KIB, "RSS {} KiB", rss_max[i]);
    }
    // The bridge keeps no state per group either (its multicast database is fed by IGMP, not
    // by traffic).
    let mdb = c.lab.exec_ok(&h1.ns, &["bridge", "mdb", "show"]).unwrap();
    assert!(mdb.lines().count() < 50, "bridge mdb:\n{mdb}");
}

/// Drops for `flood_limit` on `host`, once the counters have settled.
fn flood_drops(c: &Cluster, host: &Host) -> u64 {
    let mut last = u64::MAX;
    let settled = poll_until(Duration::from_secs(5), Duration::from_millis(300), || {
        let now = guard(c, host).drops["flood_limit"];
        let same = now == last;
        last = now;
        same.then_some(now)
    });
    settled.expect("the flood_limit counter keeps moving")
}

fn drops_of(c: &Cluster, pod: &CniPod) -> u64 {
    port_drops(c, pod).expect("a guarded port").0
}

#[test]
fn an_arp_storm_and_a_group_burst_from_a_guarded_pod_stay_within_the_flood_limit() {
    let _one = one_at_a_time();
    let (pps, burst) = (200u64, 100u64);
    let limit = [
        "--flood-limit".to_owned(),
        pps.to_string(),
        "--flood-burst".to_owned(),
        burst.to_string(),
    ];
    let extra: Vec<&str> = limit.iter().map(String::as_str).collect();
    let (mut c, hosts, cni, nets) = cni_cluster("wfl", 2, &extra);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let storm_pod = add_pod(&mut c, &cni, h1, &nets[0], "s");
    let a = add_pod(&mut c, &cni, h1, &nets[0], "a");
    let b = add_pod(&mut c, &cni, h2, &nets[1], "b");
    let g = guard(&c, h1);
    assert_eq!((g.flood_limit_pps, g.flood_limit_burst), (200, 100));
    assert!(c
        .status(h1)
        .unwrap()
        .render()
        .contains("flood limit 200/s burst 100"));
    let answered = poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        ping(&c.lab, &a.pod.ns, b.pod.ip, 1)
            .ok()
            .filter(|p| p.received == 1)
    });
    assert!(answered.is_some(), "a cannot reach b");
    let before = flood_drops(&c, h1);

    // (b) Broadcast ARP requests from the pod's own MAC and address (the guard lets each one
    // pass) for addresses nobody has: 10,000 in 2 s. Meanwhile a forgets its neighbours and
    // pings b: its own ARP must get through.
    let sniffers = [Sniffer::start(&a.pod.ns), Sniffer::start(&b.pod.ns)];
    let (smac, sip) = (storm_pod.mac, storm_pod.pod.ip);
    let storm = Flooder::start(&storm_pod.pod.ns, 10_000, 5_000, move |i| {
        let target = Ipv4Addr::new(10, 47, (i >> 8) as u8, i as u8);
        let req = [arp(1, smac, sip, [0; 6], target), mark(1)].concat();
        eth(BROADCAST, smac, 0x0806, &req)
    });
    c.lab
        .exec_ok(&a.pod.ns, &["ip", "neigh", "flush", "all"])
        .unwrap();
    let (pings, (sent, took)) = pinging(&c, &a.pod.ns, b.pod.ip, 10, || storm.join());
    assert_few_lost("a -> b during the ARP storm", &pings);
    thread::sleep(Duration::from_millis(300));
    let seen: Vec<usize> = sniffers
        .map(|s| s.stop().iter().filter(|k| **k == 1).count())
        .into();
    let dropped = flood_drops(&c, h1) - before;
    let passed = sent - dropped.min(sent);
    let most = burst + (pps as f64 * (took.as_secs_f64() + 0.5)) as u64;
    let least = (pps as f64 * took.as_secs_f64() * 0.5) as u64;
    println!(
        "ARP storm: {sent} sent in {took:?}, {dropped} dropped for flood_limit, {passed} passed \
         (allowed {least}..={most}); seen by a pod on the same host {}, on the other host {}",
        seen[0], seen[1]
    );
    assert!(passed <= most, "{passed} passed, more than {most}");
    assert!(passed >= least, "{passed} passed, fewer than {least}");
    // Only the storm's port dropped anything, and exactly what the reason counted.
    assert_eq!(drops_of(&c, &storm_pod.pod), dropped);
    assert_eq!(drops_of(&c, &a.pod), 0);
    assert_eq!(drops_of(&c, &b.pod), 0);
    let others: u64 = (guard(&c, h1).drops.iter())
        .filter(|(k, _)| *k != "flood_limit")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(others, 0, "{:?}", guard(&c, h1).drops);
    // What arrives, on the same host and across hosts, is what passed (or less: a capture may
    // miss a frame, the sleeve may lose one), never more.
    // (`passed` may be a few low: the pod's own kernel multicasts count in the drops too.)
    assert!(seen[0] as u64 <= passed + 10 && seen[0] as u64 >= passed * 9 / 10);
    assert!(seen[1] as u64 <= passed + 10 && seen[1] as u64 >= passed / 2);

    // A burst to 3,000 distinct multicast groups as fast as the socket goes: the same limit.
    let before = flood_drops(&c, h1);
    thread::sleep(Duration::from_millis(1000 * burst / pps + 200));
    let storm = Flooder::start(&storm_pod.pod.ns, 3_000, 1_000_000, move |i| {
        eth(
            group_mac(i),
            smac,
            0x0800,
            &udp4(sip, group_ip(i), 9, 9, &mark(2)),
        )
    });
    let (sent, took) = storm.join();
    let dropped = flood_drops(&c, h1) - before;
    let passed = sent - dropped.min(sent);
    let most = burst + (pps as f64 * (took.as_secs_f64() + 0.5)) as u64;
    println!("group burst: {sent} sent in {took:?}, {dropped} dropped, {passed} passed");
    assert!(passed <= most && passed >= burst / 2, "{passed} passed");

    // The storm over, the flooding pod itself gets ARP through again.
    let answered = poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
        ping(&c.lab, &storm_pod.pod.ns, b.pod.ip, 1)
            .ok()
            .filter(|p| p.received == 1)
    });
    assert!(
        answered.is_some(),
        "the storm's pod cannot reach b afterwards"
    );
}
