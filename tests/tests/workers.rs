//! Two data plane workers (`--workers 2`): each flow stays in order, the work spreads over both
//! workers, their counters add up to the host's, and rekeying and fast-path changes under load
//! lose nothing.
//!
//! Needs root (network namespaces), nftables and the `weft` binary (`scripts/test.sh`).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use weft_api::status::Report;
use weft_lab::testbed::{weft_bin, Cluster, Transfer};
use weft_lab::{in_netns, poll_until, Host, Pod};

const SECRET: &str = "the weft test secret, long enough\n";

fn cluster(tag: &str) -> Cluster {
    assert!(
        weft_lab::require_root(),
        "these tests need root and iproute2"
    );
    Cluster::new(tag, weft_bin().unwrap()).unwrap()
}

/// Two hosts with the same router arguments plus `--workers 2`, and one pod each.
fn pair(c: &mut Cluster, args: &[&str]) -> (Vec<Host>, Pod, Pod) {
    let mut all = vec!["--workers", "2"];
    all.extend_from_slice(args);
    let hs = c.full_mesh(2, &[&all, &all]).unwrap();
    let p1 = c
        .add_pod(&hs[0], "p1", Ipv4Addr::new(10, 32, 1, 1))
        .unwrap();
    let p2 = c
        .add_pod(&hs[1], "p1", Ipv4Addr::new(10, 32, 2, 1))
        .unwrap();
    (hs, p1, p2)
}

/// Datagrams per flow in the ordering test, and the flows (distinct source ports).
const PER_FLOW: u32 = 3000;
const FLOWS: u16 = 16;
const FIRST_PORT: u16 = 41000;
const SINK_PORT: u16 = 7000;

/// Sends `PER_FLOW` numbered datagrams on each of `FLOWS` flows from `from` to `to`, the flows
/// interleaved, paced so that a receiver keeps up; returns, per source port, the sequence
/// numbers in the order they arrived.
fn numbered_flows(from: &Pod, to: &Pod) -> BTreeMap<u16, Vec<u32>> {
    let sink = SocketAddr::from((to.ip, SINK_PORT));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let ns = to.ns.clone();
    let receiver = std::thread::spawn(move || {
        in_netns(&ns, move || {
            let s = UdpSocket::bind(sink).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut got: BTreeMap<u16, Vec<u32>> = BTreeMap::new();
            let mut buf = [0u8; 64];
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut quiet_since: Option<Instant> = None;
            let total = u64::from(PER_FLOW) * u64::from(FLOWS);
            let mut n = 0u64;
            while Instant::now() < deadline && n < total {
                match s.recv_from(&mut buf) {
                    Ok((4, src)) => {
                        let seq = u32::from_be_bytes(buf[..4].try_into().unwrap());
                        got.entry(src.port()).or_default().push(seq);
                        n += 1;
                        quiet_since = None;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        // Two seconds without a datagram once some came: the sender is done.
                        let q = *quiet_since.get_or_insert_with(Instant::now);
                        if n > 0 && q.elapsed() > Duration::from_secs(2) {
                            break;
                        }
                    }
                }
            }
            got
        })
        .unwrap()
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let ns = from.ns.clone();
    in_netns(&ns, move || {
        let socks: Vec<UdpSocket> = (0..FLOWS)
            .map(|i| UdpSocket::bind(("0.0.0.0", FIRST_PORT + i)).unwrap())
            .collect();
        for seq in 0..PER_FLOW {
            for s in &socks {
                s.send_to(&seq.to_be_bytes(), sink).unwrap();
            }
            if seq % 5 == 4 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    })
    .unwrap();
    receiver.join().unwrap()
}

/// Each worker's `tap_rx_frames` and `udp_rx_datagrams`.
fn per_worker(r: &Report) -> (Vec<u64>, Vec<u64>) {
    assert_eq!(r.workers.len(), 2, "{:?}", r.workers);
    let tap: Vec<u64> = r.workers.iter().map(|w| w.tap_rx_frames).collect();
    let udp: Vec<u64> = r.workers.iter().map(|w| w.udp_rx_datagrams).collect();
    (tap, udp)
}

/// `h`'s status once its workers' counters add up to the host's. The host's and the workers'
/// counters are read one after the other, so a heartbeat landing between the reads can make
/// one report disagree; with the test's traffic stopped, one of the reads within 5 s must agree.
fn status_that_adds_up(c: &Cluster, h: &Host) -> Report {
    let adds_up = |r: &Report| {
        let (tap, udp) = per_worker(r);
        tap.iter().sum::<u64>() == r.counters["tap_rx_frames"]
            && udp.iter().sum::<u64>() == r.counters["udp_rx_datagrams"]
    };
    poll_until(Duration::from_secs(5), Duration::from_millis(50), || {
        c.status(h).ok().filter(adds_up)
    })
    .unwrap_or_else(|| {
        let r = c.status(h).unwrap();
        panic!(
            "{}: the workers' counters do not add up: {:?} against {:?}",
            h.name, r.workers, r.counters
        )
    })
}

#[test]
fn two_workers_keep_every_flow_in_order_and_share_the_flows() {
    let mut c = cluster("wkr");
    let (hs, p1, p2) = pair(&mut c, &["--no-fastpath"]);
    assert!(weft_lab::testbed::wait_ping(
        &c.lab,
        &p1,
        p2.ip,
        Duration::from_secs(20)
    ));
    let before = status_that_adds_up(&c, &hs[0]);
    let got = numbered_flows(&p1, &p2);
    let mut received = 0usize;
    for (port, seqs) in &got {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "flow from port {port} reordered or duplicated"
        );
        received += seqs.len();
    }
    let sent = PER_FLOW as usize * FLOWS as usize;
    eprintln!(
        "{received} of {sent} datagrams arrived, on {} flows",
        got.len()
    );
    assert_eq!(got.len(), FLOWS as usize, "flows seen: {:?}", got.keys());
    assert!(received * 10 >= sent * 9, "{received} of {sent} arrived");

    // Both of the sending host's workers read some of the flows from their TAP queue.
    let r1 = status_that_adds_up(&c, &hs[0]);
    let (tap, _) = per_worker(&r1);
    let (tap0, _) = per_worker(&before);
    let read: Vec<u64> = tap.iter().zip(&tap0).map(|(a, b)| a - b).collect();
    eprintln!("frames read per worker on the sender: {read:?}");
    assert!(
        read.iter().all(|&n| n >= u64::from(PER_FLOW)),
        "a worker read less than one flow: {read:?}"
    );
    // The receiving host's workers each received some of them: the lanes of the sender's two
    // workers reach its two sockets.
    let r2 = status_that_adds_up(&c, &hs[1]);
    let (_, udp) = per_worker(&r2);
    eprintln!("datagrams received per worker on the receiver: {udp:?}");
    assert!(
        udp.iter().all(|&n| n >= u64::from(PER_FLOW)),
        "a worker received less than one flow: {udp:?}"
    );
}

/// Runs `n` TCP transfers of `bytes` each from `from` to `to` at once, on ports 5301 and up.
fn parallel_transfers(from: &Pod, to: &Pod, n: u16, bytes: u64) -> Vec<Transfer> {
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (from_ns, to_ns, ip) = (from.ns.clone(), to.ns.clone(), to.ip);
            std::thread::spawn(move || {
                weft_lab::testbed::tcp_transfer_on_port(
                    &from_ns,
                    &to_ns,
                    SocketAddr::from((ip, 5301 + i)),
                    bytes,
                    Duration::from_secs(6),
                    Duration::from_secs(90),
                )
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect()
}

#[test]
fn rekeying_under_load_on_two_workers_loses_nothing() {
    let mut c = cluster("wkk");
    let s = c.lab.dir().join("secret");
    std::fs::write(&s, SECRET).unwrap();
    let s = s.display().to_string();
    let (hs, p1, p2) = pair(&mut c, &["--secret-file", &s, "--rekey-after", "1"]);
    for t in parallel_transfers(&p1, &p2, 4, 24 << 20) {
        assert!(t.intact(), "{t:?}");
    }
    let r1 = status_that_adds_up(&c, &hs[0]);
    let r2 = status_that_adds_up(&c, &hs[1]);
    for r in [&r1, &r2] {
        assert!(r.peers[0].rekeys >= 3, "{:?}", r.peers[0]);
        let lost: u64 = ["crypto_unknown_key", "crypto_auth_failed", "crypto_too_old"]
            .iter()
            .map(|k| r.drops[*k])
            .sum();
        assert_eq!(lost, 0, "datagrams lost to rekeying: {:?}", r.drops);
    }
    let (tap, _) = per_worker(&r1);
    eprintln!("frames read per worker on the sender: {tap:?}");
    assert!(tap.iter().all(|&n| n > 0), "{tap:?}");
}

#[test]
fn the_fast_path_going_and_coming_under_load_on_two_workers_loses_nothing() {
    let mut c = cluster("wkf");
    let (hs, p1, p2) = pair(&mut c, &[]);
    let wait_path = |c: &Cluster, want: &str| {
        for (h, peer) in [(&hs[0], "h2"), (&hs[1], "h1")] {
            c.wait_path(h, peer, want, Duration::from_secs(30)).unwrap();
        }
    };
    wait_path(&c, "fast path");
    let ul = c.lab.underlay_ns().to_string();
    let (from, to) = (p1.clone(), p2.clone());
    let load = std::thread::spawn(move || parallel_transfers(&from, &to, 4, 48 << 20));
    // While the transfers run: the VXLAN port blocked (the pair moves to the sleeve), then
    // opened again (back to the fast path).
    std::thread::sleep(Duration::from_millis(500));
    c.lab
        .nft(
            &ul,
            "table bridge weftvx {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n    udp dport 6784 drop\n  }\n}\n",
        )
        .unwrap();
    wait_path(&c, "direct");
    c.lab.nft(&ul, "delete table bridge weftvx\n").unwrap();
    wait_path(&c, "fast path");
    for t in load.join().unwrap() {
        assert!(t.intact(), "{t:?}");
    }
    for h in &hs {
        status_that_adds_up(&c, h);
    }
}
