//! Issue #17 part 4, long runs: pod churn (attach through `cnitool`, talk, detach, again and
//! again) and peer churn (a router leaving and rejoining), with each router's resident memory
//! and open file descriptors sampled at intervals. After a warm-up, neither may grow beyond the
//! bounds below (docs/testing.md gives them with the figures of the long runs); after the churn
//! the hosts hold the same links, nftables tables and reservations as before it. The pod churn
//! runs with low MAC-table limits, so that the tables that follow the pods' MACs reach their
//! steady state within a long run (see the comment there).
//!
//! CI runs the short versions. `WEFT_SOAK_CYCLES=N` sets the number of pod cycles (CI: 100) and
//! `WEFT_SOAK_PEER_CYCLES=N` that of peer cycles (CI: 20). Needs root, nftables and cnitool
//! (`scripts/test.sh`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use weft_lab::testbed::{ping, weft_bin, Cluster};
use weft_lab::{poll_until, Host, Signal};
use weft_tests::chaos::{host_snapshot, proc_sample, ProcSample};
use weft_tests::cni::{weft_networks, Cni};

/// Growth of a router's resident memory allowed after the warm-up, in KiB.
const RSS_BOUND_KIB: u64 = 4 * 1024;
/// Growth of a router's open file descriptors allowed after the warm-up.
const FD_BOUND: usize = 4;

fn cycles(var: &str, ci: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ci)
}

fn cluster(tag: &str) -> Cluster {
    assert!(weft_lab::require_root(), "these tests need root");
    Cluster::new(tag, weft_bin().unwrap()).unwrap()
}

/// Samples of one router, taken every few cycles.
#[derive(Debug, Default)]
struct Samples {
    taken: Vec<(usize, ProcSample)>,
}

impl Samples {
    fn take(&mut self, c: &Cluster, h: &Host, cycle: usize) {
        let pid = c.router_pid(h).expect("router running");
        self.taken.push((cycle, proc_sample(pid).unwrap()));
    }

    /// Asserts that no sample after `warm` cycles exceeds the first one at or after `warm` by
    /// more than the bounds; prints the series.
    fn check(&self, who: &str, warm: usize) {
        let series: Vec<String> = self
            .taken
            .iter()
            .map(|(n, s)| format!("{n}:{}K/{}", s.rss_kib, s.fds))
            .collect();
        eprintln!("{who} (cycle:rss/fds): {}", series.join(" "));
        let base = self
            .taken
            .iter()
            .find(|(n, _)| *n >= warm)
            .map(|(_, s)| *s)
            .expect("a sample after the warm-up");
        let (max_rss, max_fds) = self
            .taken
            .iter()
            .filter(|(n, _)| *n >= warm)
            .fold((0, 0), |(r, f), (_, s)| (r.max(s.rss_kib), f.max(s.fds)));
        eprintln!(
            "{who}: after warm-up at cycle {warm}: RSS {} -> max {} KiB (+{}), fds {} -> max {}",
            base.rss_kib,
            max_rss,
            max_rss - base.rss_kib.min(max_rss),
            base.fds,
            max_fds
        );
        assert!(
            max_rss <= base.rss_kib + RSS_BOUND_KIB,
            "{who}: RSS grew from {} to {max_rss} KiB: {series:?}",
            base.rss_kib
        );
        assert!(
            max_fds <= base.fds + FD_BOUND,
            "{who}: fds grew from {} to {max_fds}: {series:?}",
            base.fds
        );
    }
}

fn reservations(c: &Cluster, h: &Host) -> BTreeMap<String, std::net::IpAddr> {
    c.ipam(h)
        .unwrap()
        .reservations
        .into_iter()
        .map(|r| (r.attachment.container_id, r.address))
        .collect()
}

#[test]
fn pod_churn_leaves_memory_fds_and_hosts_as_they_were() {
    let n = cycles("WEFT_SOAK_CYCLES", 100);
    let warm = (n / 5).max(10);
    let every = (n / 20).max(5);
    let mut c = cluster("wsp");
    // Every cycle's pod has a new MAC, which the routers remember for --mac-age and the kernel's
    // bridge and VXLAN tables for 300 s, up to --kernel-max-macs; the router reads the VXLAN
    // table every round, so its memory follows that table's size. 30 s and a cap of 256 let
    // every table reach its steady state within a long run instead of growing by an entry a
    // cycle for five minutes and hiding a leak behind it.
    let args: &[&str] = &[
        "--pod-cidr",
        "10.32.0.0/12",
        "--ipam-init-peers",
        "2",
        "--mac-age",
        "30",
        "--kernel-max-macs",
        "256",
    ];
    let hosts = c.full_mesh(2, &[args, args]).unwrap();
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let cni = Cni::new(&c.lab).unwrap();
    let nets = weft_networks(&c, &cni, &hosts);
    let ns = c.lab.add_netns("h2-fixed").unwrap();
    let fixed = cni.cnitool_add(&c.lab, h2, &nets[1], &ns).unwrap();
    let snap = host_snapshot(&c.lab, &h1.ns).unwrap();
    let before = reservations(&c, h1);
    let (mut s1, mut s2) = (Samples::default(), Samples::default());
    let start = Instant::now();
    for i in 0..n {
        if i % every == 0 {
            s1.take(&c, h1, i);
            s2.take(&c, h2, i);
        }
        let ns = c.lab.add_netns(&format!("h1-c{i}")).unwrap();
        let p = cni.cnitool_add(&c.lab, h1, &nets[0], &ns).unwrap();
        let talked = poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
            ping(&c.lab, &p.ns, fixed.ip, 1)
                .ok()
                .filter(|r| r.received == 1)
        });
        assert!(
            talked.is_some(),
            "cycle {i}: {} cannot reach {}",
            p.ip,
            fixed.ip
        );
        let out = cni.cnitool(&c.lab, h1, "del", &nets[0], &ns, &[]).unwrap();
        assert!(out.success(), "cycle {i}: DEL {out}");
        c.lab.remove_netns(&ns).unwrap();
    }
    s1.take(&c, h1, n);
    s2.take(&c, h2, n);
    eprintln!(
        "{n} pod cycles in {:.1} s ({:.0} ms each)",
        start.elapsed().as_secs_f64(),
        start.elapsed().as_secs_f64() * 1000.0 / n as f64
    );
    for h in &hosts {
        let r = c.status(h).unwrap();
        eprintln!("{}: fdb {:?}, kernel fdb {:?}", h.name, r.fdb, r.kernel_fdb);
    }
    s1.check("h1 (churning)", warm);
    s2.check("h2", warm);
    assert_eq!(reservations(&c, h1), before, "reservations left behind");
    assert_eq!(
        host_snapshot(&c.lab, &h1.ns).unwrap(),
        snap,
        "links or rules left behind"
    );
}

#[test]
fn peer_churn_leaves_the_others_memory_and_fds_as_they_were() {
    let n = cycles("WEFT_SOAK_PEER_CYCLES", 20);
    let warm = (n / 5).max(4);
    let every = (n / 20).max(1);
    let mut c = cluster("wsq");
    let hosts = c.full_mesh(3, &[]).unwrap();
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    let p1 = c.add_pod(h1, "p1", Ipv4Addr::new(10, 32, 1, 1)).unwrap();
    let p3 = c.add_pod(h3, "p1", Ipv4Addr::new(10, 32, 3, 1)).unwrap();
    let (mut s1, mut s2) = (Samples::default(), Samples::default());
    let start = Instant::now();
    for i in 0..n {
        if i % every == 0 {
            s1.take(&c, h1, i);
            s2.take(&c, h2, i);
        }
        let signal = if i % 2 == 0 {
            Signal::SIGTERM
        } else {
            Signal::SIGKILL
        };
        c.stop_router(h3, signal, Duration::from_secs(10)).unwrap();
        c.wait_peers(h1, 1, Duration::from_secs(20)).unwrap();
        c.restart_router(h3).unwrap();
        for h in &hosts {
            c.wait_peers(h, 2, Duration::from_secs(20)).unwrap();
        }
        let back = poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
            ping(&c.lab, &p1.ns, p3.ip, 1)
                .ok()
                .filter(|r| r.received == 1)
        });
        assert!(back.is_some(), "cycle {i}: h3's pod unreachable");
    }
    s1.take(&c, h1, n);
    s2.take(&c, h2, n);
    eprintln!("{n} peer cycles in {:.1} s", start.elapsed().as_secs_f64());
    s1.check("h1", warm);
    s2.check("h2", warm);
}
