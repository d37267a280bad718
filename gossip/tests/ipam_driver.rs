//! The IPAM through the real driver: gossip instances on 127.0.0.1 over TCP.

use gossip::driver::{Config, Gossip, TargetState};
use gossip::ipam::{Block, IpamConfig, IpamError};
use gossip::PeerName;
use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

fn ipam(cidr: &str, init_peers: usize, state_file: Option<PathBuf>) -> IpamConfig {
    IpamConfig {
        cidr: cidr.parse().unwrap(),
        block_prefix: 24,
        grace: Duration::from_secs(1800),
        init_peers,
        state_file,
    }
}

fn cfg(name: u64, ipam: Option<IpamConfig>, seeds: &[&Gossip]) -> Config {
    let mut c = Config::new(
        PeerName(name),
        name * 100,
        format!("h{name}"),
        "127.0.0.1:0".parse().unwrap(),
    );
    c.heartbeat = Duration::from_millis(100);
    c.dead_after = Duration::from_millis(600);
    c.ipam = ipam;
    c.seeds = seeds.iter().map(|g| g.local_addr()).collect();
    c
}

async fn start(c: Config) -> Gossip {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    Gossip::start(c, tx).await.unwrap()
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `secs` seconds.
async fn poll<T, F: Future<Output = Option<T>>>(secs: u64, what: &str, f: impl Fn() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "weft-ipam-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_starting_together_agree_on_distinct_blocks() {
    let dir = temp_dir("three");
    let cidr = "10.32.0.0/22";
    let g1 = start(cfg(1, Some(ipam(cidr, 3, Some(dir.join("1.json")))), &[])).await;
    let g2 = start(cfg(
        2,
        Some(ipam(cidr, 3, Some(dir.join("2.json")))),
        &[&g1],
    ))
    .await;
    let g3 = start(cfg(
        3,
        Some(ipam(cidr, 3, Some(dir.join("3.json")))),
        &[&g2],
    ))
    .await;
    let gs = [g1.clone(), g2.clone(), g3.clone()];
    // All claim at once, twice each on one host (the second waits for the first).
    let t = Duration::from_secs(20);
    let (a, b, c, d) = tokio::join!(
        g1.ipam_claim(t),
        g2.ipam_claim(t),
        g3.ipam_claim(t),
        g3.ipam_claim(t)
    );
    let blocks: Vec<Block> = [a, b, c, d].into_iter().map(|r| r.unwrap()).collect();
    let distinct: BTreeSet<Block> = blocks.iter().copied().collect();
    assert_eq!(distinct.len(), 4, "{blocks:?}");
    assert_eq!(g3.ipam_blocks().len(), 2);
    // The CIDR has 4 blocks: the next claim finds none.
    assert_eq!(
        g1.ipam_claim(t).await.unwrap_err(),
        IpamError::Exhausted(cidr.parse().unwrap())
    );
    // Everyone's status agrees.
    poll(10, "statuses to agree", || async {
        gs.iter()
            .all(|g| {
                let s = g.ipam_status().unwrap();
                s.members == 3
                    && s.quorum == 2
                    && s.reachable == 3
                    && s.free_blocks == 0
                    && s.hosts.iter().map(|h| h.held.len()).sum::<usize>() == 4
            })
            .then_some(())
    })
    .await;
    // A release frees the block for the others.
    let freed = g3.ipam_blocks()[0];
    g3.ipam_release(freed);
    assert_eq!(
        poll(10, "a block for host 1", || async {
            g1.ipam_claim(Duration::from_secs(2)).await.ok()
        })
        .await,
        freed
    );
    // A restarted host keeps its blocks (state file).
    let held2 = g2.ipam_blocks();
    g2.shutdown().await;
    let g2 = start(cfg(
        2,
        Some(ipam(cidr, 3, Some(dir.join("2.json")))),
        &[&g1],
    ))
    .await;
    assert_eq!(g2.ipam_blocks(), held2);
    // A clean leave: its block is free again at once for the others.
    g2.ipam_leave(Duration::from_secs(5)).await;
    assert!(g2.ipam_blocks().is_empty());
    poll(10, "the leave to be seen", || async {
        let s = g1.ipam_status().unwrap();
        (s.members == 2 && s.free_blocks == 1).then_some(())
    })
    .await;
    assert_eq!(g1.ipam_claim(t).await.unwrap(), held2[0]);
    for g in [&g1, &g2, &g3] {
        g.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn without_a_majority_a_claim_times_out_with_no_quorum() {
    let g = start(cfg(1, Some(ipam("10.32.0.0/16", 3, None)), &[])).await;
    let e = g.ipam_claim(Duration::from_millis(300)).await.unwrap_err();
    assert_eq!(e, IpamError::NoQuorum { have: 1, need: 2 });
    assert!(e.retryable());
    let s = g.ipam_status().unwrap();
    assert!(s.hosts[0].pending.is_empty(), "the claim was withdrawn");
    // IPAM off: disabled.
    let off = start(cfg(2, None, &[])).await;
    assert_eq!(
        off.ipam_claim(Duration::from_millis(10)).await,
        Err(IpamError::Disabled)
    );
    assert!(off.ipam_status().is_none());
}

async fn refusal(g: &Gossip) -> String {
    poll(10, "the connection to be refused", || async {
        g.targets().first().and_then(|t| match &t.state {
            TargetState::Retrying { last_error, .. } => Some(last_error.clone()),
            TargetState::Failed { reason } => Some(reason.clone()),
            _ => None,
        })
    })
    .await
}

#[tokio::test]
async fn a_peer_with_another_pod_cidr_or_none_is_refused_with_a_clear_message() {
    let g1 = start(cfg(1, Some(ipam("10.32.0.0/12", 1, None)), &[])).await;
    let g2 = start(cfg(2, Some(ipam("10.48.0.0/12", 1, None)), &[&g1])).await;
    let e = refusal(&g2).await;
    assert!(
        e.contains("IPAM mismatch") && e.contains("10.32.0.0/12") && e.contains("10.48.0.0/12"),
        "{e}"
    );
    let g3 = start(cfg(3, None, &[&g1])).await;
    let e = refusal(&g3).await;
    assert!(e.contains("10.32.0.0/12") && e.contains("no IPAM"), "{e}");
    let mut other_size = ipam("10.32.0.0/12", 1, None);
    other_size.block_prefix = 26;
    let g4 = start(cfg(4, Some(other_size), &[&g1])).await;
    let e = refusal(&g4).await;
    assert!(e.contains("/26") && e.contains("/24"), "{e}");
    assert!(g1.connections().is_empty());
    // The refusing side records why, too.
    poll(10, "the refusal on the listening side", || async {
        g1.refused_peers()
            .iter()
            .any(|r| r.reason.contains("IPAM mismatch"))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_unreadable_state_file_stops_the_start_with_a_clear_error() {
    let dir = temp_dir("bad");
    let path = dir.join("ipam.json");
    std::fs::write(&path, b"{not json").unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let e = Gossip::start(cfg(1, Some(ipam("10.32.0.0/12", 1, Some(path))), &[]), tx)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("does not parse") && e.contains("ipam.json"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_host_is_reclaimed_after_the_grace_period_and_learns_it_on_return() {
    let dir = temp_dir("reclaim");
    let cidr = "10.32.0.0/16";
    let conf = |n: u64| {
        let mut c = ipam(cidr, 3, Some(dir.join(format!("{n}.json"))));
        c.grace = Duration::from_secs(1);
        Some(c)
    };
    let g1 = start(cfg(1, conf(1), &[])).await;
    let g2 = start(cfg(2, conf(2), &[&g1])).await;
    let g3 = start(cfg(3, conf(3), &[&g1, &g2])).await;
    let t = Duration::from_secs(20);
    let (a, b, c) = tokio::join!(g1.ipam_claim(t), g2.ipam_claim(t), g3.ipam_claim(t));
    let (_, _, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    g3.shutdown().await;
    // Unreachable for longer than the grace period: the two others reclaim it.
    let s = poll(15, "host 3 to be reclaimed", || async {
        let s = g1.ipam_status().unwrap();
        (s.members == 2).then_some(s)
    })
    .await;
    assert_eq!(s.free_blocks, 256 - 2);
    assert!(s.hosts.iter().all(|h| !h.held.contains(&c)));
    // It comes back from its state file: it finds out, starts anew, and reports the loss.
    let g3 = start(cfg(3, conf(3), &[&g1])).await;
    poll(15, "host 3 to learn it was reclaimed", || async {
        let s = g3.ipam_status().unwrap();
        (s.incarnation == 1).then_some(())
    })
    .await;
    assert!(g3.ipam_blocks().is_empty());
    assert_eq!(g3.ipam_lost(), vec![c]);
    poll(15, "host 3 to count again", || async {
        (g1.ipam_status().unwrap().members == 3).then_some(())
    })
    .await;
    assert!(g3.ipam_claim(t).await.is_ok());
    for g in [&g1, &g2, &g3] {
        g.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(dir);
}
