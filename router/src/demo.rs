//! `weft demo`: builds a throwaway cluster on this machine, proves pods on different hosts reach
//! each other through real `weft router` processes, prints what it measured, and removes
//! everything it made, also on Ctrl-C or failure.
//!
//! The cluster: an underlay "switch" namespace, three host namespaces on it (h1, h2, h3), a
//! `weft router` in each (h2 seeded with h1, h3 with h1 and h2), and two pods per host on the
//! router's bridge. Every name carries a per-run prefix, so two demos can run at once. Without a
//! secret the routers put each pair on the kernel VXLAN fast path once its probes pass; the demo
//! waits for that before measuring.

use anyhow::{bail, Result};
use std::io::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use weft_api::status::Report;
use weft_lab::testbed::{ping, tcp_transfer, weft_bin, Cluster, PingStats, Transfer};
use weft_lab::{self as lab, Host, Pod};

/// Options of `weft demo`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Keep the cluster running after the checks until Ctrl-C.
    pub keep: bool,
}

const TRANSFER_BYTES: u64 = 32 << 20;

struct Step {
    n: usize,
    total: usize,
    start: Instant,
}

impl Step {
    fn begin(n: usize, total: usize, what: &str) -> Step {
        print!("[{n}/{total}] {what:<44}");
        let _ = std::io::stdout().flush();
        Step {
            n,
            total,
            start: Instant::now(),
        }
    }

    fn progress(&self) {
        print!(".");
        let _ = std::io::stdout().flush();
    }

    fn done(self, note: &str) {
        let _ = (self.n, self.total);
        println!(" {note} ({:.1} s)", self.start.elapsed().as_secs_f64());
    }
}

struct Row {
    from: String,
    to: String,
    ping: Option<PingStats>,
    transfer: Option<Transfer>,
    path: String,
}

fn path_between(reports: &[Report], from: &Host, to: &Host) -> String {
    reports
        .iter()
        .find(|r| r.nickname == from.name)
        .and_then(|r| r.peers.iter().find(|p| p.nickname == to.name))
        .map(|p| match p.path.as_str() {
            "fast path" => format!("kernel VXLAN fast path {} -> {}", from.name, to.name),
            "direct" => format!("sleeve, direct {} -> {}", from.name, to.name),
            other => format!("sleeve {} -> {} {other}", from.name, to.name),
        })
        .unwrap_or_else(|| "no route".into())
}

/// Runs the demo.
pub fn run(opts: Options) -> Result<()> {
    if !lab::require_root() {
        bail!("weft demo builds network namespaces: run it as root (and install iproute2)");
    }
    for tool in ["ping", "ip"] {
        if std::process::Command::new(tool).arg("-V").output().is_err() {
            bail!("weft demo needs `{tool}` (apt-get install iproute2 iputils-ping)");
        }
    }
    lab::install_signal_cleanup();
    let weft = weft_bin()?;
    let mut c = Cluster::new("wd", weft)?;
    println!(
        "weft demo: a throwaway 3-host cluster in network namespaces (prefix {}, logs in {})",
        c.lab.prefix(),
        c.lab.dir().display()
    );
    let total = 5;

    let s = Step::begin(1, total, "underlay switch and hosts h1 h2 h3");
    let hosts: Vec<Host> = (1..=3)
        .map(|i| {
            s.progress();
            c.add_host(&format!("h{i}"))
        })
        .collect::<Result<_>>()?;
    s.done("done");

    let s = Step::begin(2, total, "a weft router in each host");
    for (i, h) in hosts.iter().enumerate() {
        let seeds: Vec<&Host> = hosts[..i].iter().collect();
        c.start_router(h, &seeds, &[])?;
        s.progress();
    }
    for h in &hosts {
        c.wait_peers(h, hosts.len() - 1, Duration::from_secs(15))?;
    }
    s.done("full mesh of 3 routers");

    let s = Step::begin(3, total, "two pods per host");
    let mut pods: Vec<(Host, Pod)> = Vec::new();
    for h in &hosts {
        for p in 1..=2u8 {
            let pod = c.add_pod(h, &format!("p{p}"), Ipv4Addr::new(10, 32, h.index, p))?;
            pods.push((h.clone(), pod));
            s.progress();
        }
    }
    let mtu = c.status(&hosts[0])?.pod_mtu;
    // Without a secret the routers move each pair to the kernel VXLAN fast path once its probes
    // have passed for a few seconds; wait for that, so the figures below are the fast path's.
    let settled = lab::poll_until(Duration::from_secs(15), Duration::from_millis(250), || {
        let reports: Vec<Report> = hosts.iter().filter_map(|h| c.status(h).ok()).collect();
        let all_fast = reports.len() == hosts.len()
            && reports
                .iter()
                .all(|r| r.fastpath.state == "on" && r.peers.iter().all(|p| p.path == "fast path"));
        let any_on = reports.iter().any(|r| r.fastpath.state == "on");
        (all_fast || !any_on).then_some(all_fast)
    });
    let note = match settled {
        Some(true) => "fast path (kernel VXLAN) between all hosts",
        Some(false) => "sleeve between all hosts",
        None => "paths still settling",
    };
    s.done(&format!("6 pods in 10.32.0.0/12, pod MTU {mtu}, {note}"));

    let mut rows = Vec::new();
    for (i, (ha, a)) in pods.iter().enumerate() {
        for (hb, b) in pods.iter().skip(i + 1) {
            if ha.name != hb.name {
                rows.push((ha.clone(), a.clone(), hb.clone(), b.clone()));
            }
        }
    }
    let s = Step::begin(
        4,
        total,
        &format!("ping, {} pod pairs across hosts", rows.len()),
    );
    let mut pings = Vec::new();
    for (_, a, _, b) in &rows {
        pings.push(ping(&c.lab, &a.ns, b.ip, 5).ok());
        s.progress();
    }
    let ok = pings
        .iter()
        .flatten()
        .filter(|p| p.received == p.sent)
        .count();
    s.done(&format!("{ok}/{} pairs answered every ping", rows.len()));

    let s = Step::begin(
        5,
        total,
        &format!("TCP, {} MiB per pair, checksummed", TRANSFER_BYTES >> 20),
    );
    let mut transfers = Vec::new();
    for (_, a, _, b) in &rows {
        transfers.push(tcp_transfer(a, b, TRANSFER_BYTES, Duration::from_secs(60)).ok());
        s.progress();
    }
    let intact = transfers.iter().flatten().filter(|t| t.intact()).count();
    s.done(&format!("{intact}/{} transfers intact", rows.len()));

    let reports: Vec<Report> = hosts.iter().map(|h| c.status(h)).collect::<Result<_>>()?;
    let table: Vec<Row> = rows
        .iter()
        .zip(pings)
        .zip(transfers)
        .map(|(((ha, a, hb, b), ping), transfer)| Row {
            from: format!("{}/{} {}", ha.name, a.name, a.ip),
            to: format!("{}/{} {}", hb.name, b.name, b.ip),
            ping,
            transfer,
            path: path_between(&reports, ha, hb),
        })
        .collect();
    print_table(&table);
    println!();
    for r in &reports {
        let (tx, rx): (u64, u64) = r
            .peers
            .iter()
            .fold((0, 0), |(t, x), p| (t + p.tx_frames, x + p.rx_frames));
        let drops: u64 = r.drops.values().sum();
        println!(
            "router {} ({}): {} peers, {} frames out, {} frames in, {} drops",
            r.nickname,
            r.name,
            r.peers.len(),
            tx,
            rx,
            drops
        );
    }
    let failed = table
        .iter()
        .filter(|r| {
            let pinged = r.ping.is_some_and(|p| p.received == p.sent);
            let moved = r.transfer.is_some_and(|t| t.intact());
            !(pinged && moved)
        })
        .count();

    if opts.keep {
        println!("\nThe cluster stays up until Ctrl-C. Try:");
        println!(
            "  weft status --state-dir {}",
            c.state_dir(&hosts[0]).display()
        );
        println!("  ip netns exec {} ping {}", pods[0].1.ns, pods[2].1.ip);
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    print!("\nremoving the cluster ...");
    let _ = std::io::stdout().flush();
    drop(c);
    println!(" done");
    if failed > 0 {
        bail!("{failed} pod pair(s) failed");
    }
    Ok(())
}

fn print_table(rows: &[Row]) {
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            let rtt = match r.ping {
                Some(p) if p.received > 0 => format!(
                    "{:.3} ms ({:.3}/{:.3}){}",
                    p.avg_ms,
                    p.min_ms,
                    p.max_ms,
                    if p.received < p.sent {
                        format!(" {}/{} lost", p.sent - p.received, p.sent)
                    } else {
                        String::new()
                    }
                ),
                _ => "FAIL".into(),
            };
            let tput = match r.transfer {
                Some(t) if t.intact() => format!("{:.2} Gbit/s", t.gbits()),
                Some(_) => "FAIL (corrupt)".into(),
                None => "FAIL".into(),
            };
            [r.from.clone(), r.to.clone(), rtt, tput, r.path.clone()]
        })
        .collect();
    let header = ["FROM", "TO", "RTT avg (min/max)", "TCP THROUGHPUT", "PATH"];
    let mut w = header.map(str::len);
    for c in &cells {
        for (i, s) in c.iter().enumerate() {
            w[i] = w[i].max(s.len());
        }
    }
    println!();
    let line = |c: [&str; 5]| {
        println!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        )
    };
    line(header);
    for c in &cells {
        line([&c[0], &c[1], &c[2], &c[3], &c[4]]);
    }
}
