//! A pod that floods frames from random source MACs (issue #17, part 3), with and without the
//! kernel fast path: three hosts with real routers, a pod on h1 sending from a new MAC in every
//! frame for 10 s while the pods on h2 and h3 ping each other. What must hold, in both modes:
//! no control connection drops and no UDP path is declared lost, no pair leaves the path it was
//! on, the pings keep flowing, every router's RSS stays under [`RSS_LIMIT_KIB`], and the
//! bridges learn at most their cap. The figures (RSS, CPU, learned entries) are printed; rerun
//! with `--nocapture` to read them (docs/fastpath.md, "A flood of MACs").
//!
//! `MACFLOOD_BASELINE=1` measures a router without `--kernel-max-macs` (the base commit's, with
//! `WEFT_BIN`): the flag is left out, the kernel's tables are counted with `bridge fdb show`,
//! and what goes wrong is printed instead of failing the test.
//!
//! Needs root, `python3` (the flooder: an `AF_PACKET` socket in the pod) and the `weft` binary
//! (`cargo build --release -p weft`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};
use weft_api::status::Report;
use weft_lab::testbed::{weft_bin, Cluster};
use weft_lab::{Host, Signal};

/// How long the flood lasts.
const FLOOD_SECS: u32 = 10;
/// Frames per second the flooder sends (each from a new source MAC).
const FLOOD_PPS: u32 = 20_000;
/// The cap given to the routers (`--kernel-max-macs`): small enough that the flood fills it
/// many times over.
const CAP: u32 = 4096;
/// Most RSS a router may reach during the flood, in KiB.
const RSS_LIMIT_KIB: u64 = 48 * 1024;
/// Most pings between h2 and h3 that may go unanswered during the flood, in percent.
const MAX_PING_LOSS_PCT: u32 = 10;

/// The flooder: Ethernet frames with a random locally administered unicast source and
/// destination, EtherType 0x88b6 (local experimental 2), at a steady rate.
const FLOODER: &str = r#"
import os, socket, sys, time
secs, pps = float(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
pad = bytes(46)
sent, start, batch = 0, time.monotonic(), max(1, pps // 100)
while True:
    now = time.monotonic() - start
    if now >= secs:
        break
    due = int(now * pps)
    while sent < due:
        for _ in range(batch):
            r = bytearray(os.urandom(12))
            r[0] = (r[0] & 0xfc) | 2
            r[6] = (r[6] & 0xfc) | 2
            s.send(bytes(r) + b"\x88\xb6" + pad)
            sent += 1
    time.sleep(0.005)
print("sent", sent, flush=True)
"#;

fn cluster(tag: &str) -> Cluster {
    assert!(
        weft_lab::require_root(),
        "these tests need root and iproute2"
    );
    Cluster::new(tag, weft_bin().unwrap()).unwrap()
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of a process so far, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which is in parentheses): utime is the 12th of them.
    let rest = s.rsplit_once(')').map(|r| r.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

fn paths(r: &Report) -> BTreeMap<String, String> {
    r.peers
        .iter()
        .map(|p| (p.nickname.clone(), format!("{} / {}", p.state, p.path)))
        .collect()
}

/// What one run saw, per host.
#[derive(Debug, Default)]
struct Figures {
    rss_before_kib: Vec<u64>,
    rss_max_kib: Vec<u64>,
    cpu_flood_s: Vec<f64>,
    cpu_after_s: Vec<f64>,
    bridge_learned_max: Vec<u64>,
    vxlan_entries_max: Vec<u64>,
    ping_sent: u32,
    ping_received: u32,
    /// What went wrong (a failure unless measuring the baseline).
    problems: Vec<String>,
}

/// Entries in `host`'s forwarding tables, counted with `bridge fdb show` (bridge `weft`, and the
/// VXLAN device's own table).
fn count_fdb(c: &Cluster, host: &Host) -> (u64, u64) {
    let lines = |args: &[&str]| {
        let out = c.lab.exec(&host.ns, args).unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count() as u64
    };
    (
        lines(&["bridge", "fdb", "show", "br", "weft"]),
        lines(&["bridge", "fdb", "show", "dev", "weft-vxlan", "self"]),
    )
}

fn flood(tag: &str, extra: &[&str], want_path: &str) -> Figures {
    let baseline = std::env::var_os("MACFLOOD_BASELINE").is_some();
    let cap = CAP.to_string();
    let mut args: Vec<&str> = if baseline {
        vec![]
    } else {
        vec!["--kernel-max-macs", &cap]
    };
    args.extend_from_slice(extra);
    let mut c = cluster(tag);
    let hosts: Vec<Host> = c.full_mesh(3, &[&args, &args, &args]).unwrap();
    let pods: Vec<_> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            c.add_pod(h, "p1", Ipv4Addr::new(10, 32, i as u8 + 1, 1))
                .unwrap()
        })
        .collect();
    for h in &hosts {
        for o in hosts.iter().filter(|o| o.name != h.name) {
            c.wait_path(h, &o.name, want_path, Duration::from_secs(20))
                .unwrap();
        }
    }
    // Let the pods on h2 and h3 learn each other before the flood.
    assert!(weft_lab::testbed::wait_ping(
        &c.lab,
        &pods[1],
        pods[2].ip,
        Duration::from_secs(5)
    ));
    let pids: Vec<u32> = hosts.iter().map(|h| c.router_pid(h).unwrap()).collect();
    let mut fig = Figures {
        rss_before_kib: pids.iter().map(|p| rss_kib(*p)).collect(),
        ..Default::default()
    };
    fig.rss_max_kib = fig.rss_before_kib.clone();
    fig.bridge_learned_max = vec![0; 3];
    fig.vxlan_entries_max = vec![0; 3];
    let cpu0: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();

    let env = Path::new("/usr/bin/env");
    let start = Instant::now();
    let flooder = c
        .lab
        .spawn(
            &pods[0].ns,
            env,
            &[
                "python3",
                "-c",
                FLOODER,
                &FLOOD_SECS.to_string(),
                &FLOOD_PPS.to_string(),
            ],
            "flooder",
        )
        .unwrap();
    let count = (FLOOD_SECS * 10).to_string();
    let pinger = c
        .lab
        .spawn(
            &pods[1].ns,
            Path::new("/usr/bin/ping"),
            &[
                "-n",
                "-q",
                "-i",
                "0.1",
                "-W",
                "1",
                "-c",
                &count,
                &pods[2].ip.to_string(),
            ],
            "ping",
        )
        .unwrap();
    let sample = |c: &Cluster, fig: &mut Figures, during: bool| {
        for (i, h) in hosts.iter().enumerate() {
            fig.rss_max_kib[i] = fig.rss_max_kib[i].max(rss_kib(pids[i]));
            let Ok(r) = c.status(h) else {
                fig.problems
                    .push(format!("{}'s router did not answer", h.name));
                continue;
            };
            let k = |n: &str| r.kernel_fdb.get(n).copied().unwrap_or(0);
            fig.bridge_learned_max[i] = fig.bridge_learned_max[i].max(k("bridge_learned"));
            fig.vxlan_entries_max[i] = fig.vxlan_entries_max[i].max(k("vxlan_entries"));
            for (peer, p) in paths(&r) {
                if p != format!("established / {want_path}") {
                    fig.problems.push(format!(
                        "{} sees {peer} as {p} {} the flood",
                        h.name,
                        if during { "during" } else { "after" },
                    ));
                }
            }
        }
    };
    while c.lab.is_running(pinger) {
        sample(&c, &mut fig, true);
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            start.elapsed() < Duration::from_secs(u64::from(FLOOD_SECS) + 15),
            "ping did not finish"
        );
    }
    let _ = c.lab.wait_exit(flooder, Duration::from_secs(5));
    if c.lab.is_running(flooder) {
        c.lab.kill(flooder, Signal::SIGKILL).unwrap();
    }
    let flood_end = Instant::now();
    if baseline {
        for (i, h) in hosts.iter().enumerate() {
            let (b, v) = count_fdb(&c, h);
            fig.bridge_learned_max[i] = b;
            fig.vxlan_entries_max[i] = v;
        }
    }
    let cpu1: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    // After the flood: three more seconds, in which the routers must calm down.
    while flood_end.elapsed() < Duration::from_secs(3) {
        sample(&c, &mut fig, false);
        std::thread::sleep(Duration::from_millis(500));
    }
    let cpu2: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let secs = |a: u64, b: u64| (b - a) as f64 / 100.0;
    fig.cpu_flood_s = (0..3).map(|i| secs(cpu0[i], cpu1[i])).collect();
    fig.cpu_after_s = (0..3).map(|i| secs(cpu1[i], cpu2[i])).collect();

    let ping_log = c.lab.log("ping");
    let summary = ping_log
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {ping_log}"));
    let mut nums = summary
        .split(',')
        .map(|p| p.split_whitespace().next().and_then(|n| n.parse().ok()));
    fig.ping_sent = nums.next().flatten().unwrap_or(0);
    fig.ping_received = nums.next().flatten().unwrap_or(0);
    let flood_log = c.lab.log("flooder");
    let mut problems = std::mem::take(&mut fig.problems);
    problems.dedup();
    let mut problem = |p: String| problems.push(p);
    for (i, h) in hosts.iter().enumerate() {
        let log = c.router_log(h);
        for bad in ["no heartbeat for", "UDP path lost", "back on the sleeve"] {
            if log.contains(bad) {
                problem(format!("{}'s router logged {bad:?}", h.name));
            }
        }
        if let Ok(r) = c.status(h) {
            // Every control connection is as old as the flood, or older: none dropped.
            for conn in &r.connections {
                if conn.established_secs < start.elapsed().as_secs().saturating_sub(1) {
                    problem(format!(
                        "{}'s connection to {} was re-established during the flood",
                        h.name, conn.nickname
                    ));
                }
            }
        }
        if fig.rss_max_kib[i] > RSS_LIMIT_KIB {
            problem(format!(
                "{}'s router reached {} KiB of RSS",
                h.name, fig.rss_max_kib[i]
            ));
        }
        if fig.bridge_learned_max[i] > u64::from(CAP) {
            problem(format!(
                "{}'s bridge learned {} entries, over the cap {CAP}",
                h.name, fig.bridge_learned_max[i]
            ));
        }
        if fig.vxlan_entries_max[i] > u64::from(CAP) {
            problem(format!(
                "{}'s VXLAN device held {} entries, over the cap {CAP}",
                h.name, fig.vxlan_entries_max[i]
            ));
        }
        // A core busy for seconds after the flood was the bug.
        if fig.cpu_after_s[i] > 1.5 {
            problem(format!(
                "{}'s router used {} s of CPU in the 3 s after the flood",
                h.name, fig.cpu_after_s[i]
            ));
        }
    }
    let lost_pct = 100 * (fig.ping_sent - fig.ping_received) / fig.ping_sent.max(1);
    if fig.ping_sent < FLOOD_SECS * 10 || lost_pct > MAX_PING_LOSS_PCT {
        problem(format!(
            "pings between h2 and h3 during the flood: {summary}"
        ));
    }
    println!("{tag}: flooder {}", flood_log.trim());
    println!("{tag}: {fig:?}");
    for p in &problems {
        println!("{tag}: PROBLEM {p}");
    }
    if baseline {
        return fig;
    }
    assert!(
        problems.is_empty(),
        "{tag}: {problems:#?}\nh1's log:\n{}",
        c.router_log(&hosts[0])
    );
    // The flood really filled h1's bridge (the flooder's MACs are learned on its port there).
    assert_eq!(
        fig.bridge_learned_max[0],
        u64::from(CAP),
        "h1's bridge never reached the cap: did the flood run? ({})",
        flood_log.trim()
    );
    // The pods still talk.
    assert!(weft_lab::testbed::wait_ping(
        &c.lab,
        &pods[1],
        pods[2].ip,
        Duration::from_secs(10)
    ));
    fig
}

#[test]
fn a_mac_flood_is_bounded_on_the_fast_path() {
    flood("mf-fast", &[], "fast path");
}

#[test]
fn a_mac_flood_is_bounded_on_the_sleeve() {
    flood("mf-sleeve", &["--no-fastpath"], "direct");
}
