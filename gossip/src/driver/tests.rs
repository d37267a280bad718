//! Tests of the driver with real TCP on loopback (IPAM through the driver: `tests/ipam_driver.rs`).

use super::*;
use crate::proto::Message;
use crate::secure::Keyring;
use crate::PeerName;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

fn cfg(name: u64) -> Config {
    let mut c = Config::new(
        PeerName(name),
        name * 100,
        format!("h{name}"),
        "127.0.0.1:0".parse().unwrap(),
    );
    c.heartbeat = Duration::from_millis(100);
    c.dead_after = Duration::from_millis(600);
    c
}

/// The next peer event (up or down), skipping topology notifications.
async fn next_event(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("event within 5 s")
            .expect("channel open");
        if e != Event::Topology {
            return e;
        }
    }
}

fn no_peer_went_down(rx: &mut mpsc::UnboundedReceiver<Event>) {
    while let Ok(e) = rx.try_recv() {
        assert!(!matches!(e, Event::Down { .. }), "{e:?}");
    }
}

#[tokio::test]
async fn two_peers_connect_and_see_each_other_leave() {
    let (tx1, mut rx1) = mpsc::unbounded_channel();
    let (tx2, mut rx2) = mpsc::unbounded_channel();
    let g1 = Gossip::start(cfg(1), tx1).await.unwrap();
    let mut c2 = cfg(2);
    c2.seeds = vec![g1.local_addr()];
    let g2 = Gossip::start(c2, tx2).await.unwrap();
    let Event::Up(p) = next_event(&mut rx1).await else {
        panic!()
    };
    assert_eq!(p.name, PeerName(2));
    assert!(!p.outbound);
    let Event::Up(p) = next_event(&mut rx2).await else {
        panic!()
    };
    assert_eq!(p.name, PeerName(1));
    assert_eq!(
        g2.targets()[0].state,
        TargetState::Established {
            peer: PeerName(1).to_string()
        }
    );
    assert_eq!(g1.connections().len(), 1);
    g2.shutdown().await;
    let Event::Down { name, reason } = next_event(&mut rx1).await else {
        panic!()
    };
    assert_eq!(name, PeerName(2));
    assert!(reason.contains("closing"), "{reason}");
}

#[tokio::test]
async fn self_connection_fails_once_and_is_not_retried() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let g = Gossip::start(cfg(1), tx).await.unwrap();
    g.connect(g.local_addr());
    let mut state = None;
    for _ in 0..100 {
        let t = g.targets();
        if matches!(t[0].state, TargetState::Failed { .. }) {
            state = Some(t[0].clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let state = state.expect("target fails");
    assert!(format!("{:?}", state.state).contains("self"));
    assert!(g.connections().is_empty());
}

#[tokio::test]
async fn garbage_on_the_control_port_closes_only_that_connection() {
    let (tx1, mut rx1) = mpsc::unbounded_channel();
    let (tx2, _rx2) = mpsc::unbounded_channel();
    let g1 = Gossip::start(cfg(1), tx1).await.unwrap();
    let mut c2 = cfg(2);
    c2.seeds = vec![g1.local_addr()];
    let _g2 = Gossip::start(c2, tx2).await.unwrap();
    assert!(matches!(next_event(&mut rx1).await, Event::Up(_)));
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0xff, 0xff, 0xff, 0xff, 1, 2][..],
    ] {
        let mut s = TcpStream::connect(g1.local_addr()).await.unwrap();
        s.write_all(junk).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
    }
    // The real peer is still connected after its heartbeats kept flowing.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(g1.connections().len(), 1);
    no_peer_went_down(&mut rx1);
}

#[tokio::test]
async fn a_chain_of_seeds_becomes_a_full_mesh_through_gossip() {
    let mut gs = Vec::new();
    let mut rxs = Vec::new();
    for i in 1..=4u64 {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut c = cfg(i);
        if let Some(prev) = gs.last() {
            c.seeds = vec![Gossip::local_addr(prev)];
        }
        gs.push(Gossip::start(c, tx).await.unwrap());
        rxs.push(rx);
    }
    // Every peer connects to and knows every other one (records arrive after the connections:
    // both are waited for, up to 10 s on a loaded machine).
    let mut ok = false;
    for _ in 0..400 {
        if gs
            .iter()
            .all(|g| g.connections().len() == 3 && g.routes().known.len() == 3)
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        ok,
        "(connections, known): {:?}",
        gs.iter()
            .map(|g| (g.connections().len(), g.routes().known.len()))
            .collect::<Vec<_>>()
    );
    // The discovered targets are marked as such.
    assert!(gs.iter().any(|g| g.targets().iter().any(|t| t.discovered)));
}

fn with_secret(mut c: Config, s: &str) -> Config {
    c.secrets = Some(Keyring::parse(s.as_bytes()).unwrap());
    c
}

pub(super) async fn target_error(g: &Gossip) -> String {
    for _ in 0..200 {
        if let Some(t) = g.targets().first() {
            match &t.state {
                TargetState::Retrying { last_error, .. } => return last_error.clone(),
                TargetState::Failed { reason } => return reason.clone(),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no failure: {:?}", g.targets());
}

#[tokio::test]
async fn peers_with_the_same_secret_connect_and_share_data_keys() {
    let (tx1, mut rx1) = mpsc::unbounded_channel();
    let (tx2, mut rx2) = mpsc::unbounded_channel();
    let g1 = Gossip::start(with_secret(cfg(1), "a cluster secret of some length"), tx1)
        .await
        .unwrap();
    let mut c2 = with_secret(cfg(2), "a cluster secret of some length");
    c2.seeds = vec![g1.local_addr()];
    let _g2 = Gossip::start(c2, tx2).await.unwrap();
    let Event::Up(p1) = next_event(&mut rx1).await else {
        panic!()
    };
    let Event::Up(p2) = next_event(&mut rx2).await else {
        panic!()
    };
    let (k1, k2) = (p1.keys.unwrap(), p2.keys.unwrap());
    assert_eq!(k1.send, k2.recv);
    assert_eq!(k1.recv, k2.send);
    // Control messages flow (gossip, rekey) through the encrypted channel.
    assert!(g1.send_to(PeerName(2), Message::RekeyAck { epoch: 3 }));
    loop {
        match next_any(&mut rx2).await {
            Event::Control { from, msg, .. } => {
                assert_eq!(from, PeerName(1));
                assert_eq!(msg, Message::RekeyAck { epoch: 3 });
                break;
            }
            _ => continue,
        }
    }
    // The handover travels on the connection named, and says which one it came on.
    assert_eq!(p1.version, crate::proto::MAX_VERSION);
    assert!(g1.send_on(p1.conn, Message::Handover { epoch: 4 }));
    assert!(!g1.send_on(p1.conn + 1000, Message::Handover { epoch: 5 }));
    loop {
        match next_any(&mut rx2).await {
            Event::Control { msg, conn, .. } => {
                assert_eq!(msg, Message::Handover { epoch: 4 });
                assert_eq!(conn, p2.conn);
                break;
            }
            _ => continue,
        }
    }
}

async fn next_any(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("event within 5 s")
        .expect("channel open")
}

#[tokio::test]
async fn a_wrong_secret_or_no_secret_is_refused_with_a_clear_reason() {
    let (tx1, _rx1) = mpsc::unbounded_channel();
    let g1 = Gossip::start(with_secret(cfg(1), "a cluster secret of some length"), tx1)
        .await
        .unwrap();
    for (c2, want) in [
        (
            with_secret(cfg(2), "another secret, also long"),
            "authentication failed",
        ),
        (cfg(3), "encryption mismatch"),
    ] {
        let (tx2, _rx2) = mpsc::unbounded_channel();
        let mut c2 = c2;
        c2.seeds = vec![g1.local_addr()];
        let g2 = Gossip::start(c2, tx2).await.unwrap();
        let err = target_error(&g2).await;
        assert!(err.contains(want), "{err}");
        assert!(g1.connections().is_empty());
        // The refusing side records it too, once per address.
        let mut seen = false;
        for _ in 0..100 {
            if g1.refused_peers().iter().any(|r| r.reason.contains(want)) {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(seen, "{:?}", g1.refused_peers());
        g2.shutdown().await;
    }
}

#[tokio::test]
async fn connection_limit_refuses_extra_connections() {
    let (tx1, mut rx1) = mpsc::unbounded_channel();
    let (tx2, _rx2) = mpsc::unbounded_channel();
    let mut c1 = cfg(1);
    c1.max_connections = 1;
    let g1 = Gossip::start(c1, tx1).await.unwrap();
    let mut c2 = cfg(2);
    c2.seeds = vec![g1.local_addr()];
    let _g2 = Gossip::start(c2, tx2).await.unwrap();
    assert!(matches!(next_event(&mut rx1).await, Event::Up(_)));
    // A third party gets closed at once, without even a hello.
    let mut s = TcpStream::connect(g1.local_addr()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
        .await
        .expect("closed promptly")
        .ok();
    assert!(buf.is_empty(), "no hello for a refused connection");
    assert_eq!(g1.refused_connections(), 1);
    assert_eq!(g1.connections().len(), 1);
}

#[tokio::test]
async fn simultaneous_dials_leave_one_connection() {
    let (tx1, mut rx1) = mpsc::unbounded_channel();
    let (tx2, mut rx2) = mpsc::unbounded_channel();
    let g1 = Gossip::start(cfg(1), tx1).await.unwrap();
    let g2 = Gossip::start(cfg(2), tx2).await.unwrap();
    g1.connect(g2.local_addr());
    g2.connect(g1.local_addr());
    assert!(matches!(next_event(&mut rx1).await, Event::Up(_)));
    assert!(matches!(next_event(&mut rx2).await, Event::Up(_)));
    let mut ok = false;
    for _ in 0..100 {
        let est = |g: &Gossip| {
            g.targets()
                .iter()
                .all(|t| matches!(t.state, TargetState::Established { .. }))
        };
        if g1.connections().len() == 1 && g2.connections().len() == 1 && est(&g1) && est(&g2) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "{:?} {:?}", g1.targets(), g2.targets());
    // No flapping: nobody went down.
    no_peer_went_down(&mut rx1);
}

fn keys(lines: &[&str]) -> Keyring {
    Keyring::parse(lines.join("\n").as_bytes()).unwrap()
}

/// Polls `f` every 20 ms for up to 5 s.
async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn rotating_the_secret_re_handshakes_without_a_disconnection() {
    const OLD: &str = "the old cluster secret, long";
    const NEW: &str = "the new cluster secret, long";
    let fp = |s: &str| crate::secure::Fingerprint::of(s.as_bytes()).to_string();
    let (tx1, mut rx1) = mpsc::unbounded_channel();
    let (tx2, mut rx2) = mpsc::unbounded_channel();
    let g1 = Gossip::start(with_secret(cfg(1), OLD), tx1).await.unwrap();
    let mut c2 = with_secret(cfg(2), OLD);
    c2.seeds = vec![g1.local_addr()];
    let g2 = Gossip::start(c2, tx2).await.unwrap();
    assert!(matches!(next_event(&mut rx1).await, Event::Up(_)));
    assert!(matches!(next_event(&mut rx2).await, Event::Up(_)));
    let on = |g: &Gossip, s: &str| {
        let c = g.connections();
        c.len() == 1 && c[0].secret.as_deref() == Some(&fp(s))
    };
    assert!(on(&g1, OLD) && on(&g2, OLD));

    // Step 1: the new secret second everywhere: nothing changes.
    g1.set_secrets(keys(&[OLD, NEW])).unwrap();
    g2.set_secrets(keys(&[OLD, NEW])).unwrap();
    // Step 2: first on the listener: the pair stays on the dialler's choice (no flapping) ...
    g1.set_secrets(keys(&[NEW, OLD])).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(on(&g1, OLD) && on(&g2, OLD));
    // ... then on the dialler, which re-handshakes; the peer never goes down.
    g2.set_secrets(keys(&[NEW, OLD])).unwrap();
    assert!(
        eventually(|| on(&g1, NEW) && on(&g2, NEW)).await,
        "{:?} {:?}",
        g1.connections(),
        g2.connections()
    );
    let Event::Up(p) = next_event(&mut rx1).await else {
        panic!("the new connection comes up on the listener")
    };
    assert_eq!(p.secret.unwrap().fingerprint().to_string(), fp(NEW));
    // Step 3: the old secret goes; the connection, on the new one, stays.
    g1.set_secrets(keys(&[NEW])).unwrap();
    g2.set_secrets(keys(&[NEW])).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(on(&g1, NEW) && on(&g2, NEW));
    no_peer_went_down(&mut rx1);
    no_peer_went_down(&mut rx2);
    assert_eq!(
        g1.secret_fingerprints().1.len(),
        1,
        "the old one is retired"
    );

    // A host that kept only the old secret is refused, and both sides say why.
    let (tx3, _rx3) = mpsc::unbounded_channel();
    let mut c3 = with_secret(cfg(3), OLD);
    c3.seeds = vec![g1.local_addr()];
    let g3 = Gossip::start(c3, tx3).await.unwrap();
    let err = target_error(&g3).await;
    assert!(
        err.contains("does not accept our secret") && err.contains(&fp(OLD)),
        "{err}"
    );
    assert!(
        eventually(|| g1
            .refused_peers()
            .iter()
            .any(|r| r.reason.contains("retired secret") && r.reason.contains(&fp(OLD))))
        .await,
        "{:?}",
        g1.refused_peers()
    );
    g3.shutdown().await;
}

#[tokio::test]
async fn re_handshakes_are_never_seen_as_the_peer_going_down() {
    // The listener reads the dialler's hello on the new connection and the goodbye on the old
    // one at about the same time; either order must give a replacement, not a Down then an Up.
    const A: &str = "the first cluster secret, long";
    const B: &str = "the second cluster secret, long";
    let (tx1, mut rx1) = mpsc::unbounded_channel();
    let (tx2, mut rx2) = mpsc::unbounded_channel();
    let g1 = Gossip::start(with_secret(cfg(1), A), tx1).await.unwrap();
    let mut c2 = with_secret(cfg(2), A);
    c2.seeds = vec![g1.local_addr()];
    let g2 = Gossip::start(c2, tx2).await.unwrap();
    assert!(matches!(next_event(&mut rx1).await, Event::Up(_)));
    assert!(matches!(next_event(&mut rx2).await, Event::Up(_)));
    g1.set_secrets(keys(&[A, B])).unwrap();
    for round in 0..10 {
        let order: &[&str] = if round % 2 == 0 { &[B, A] } else { &[A, B] };
        g2.set_secrets(keys(order)).unwrap();
        for rx in [&mut rx1, &mut rx2] {
            match next_event(rx).await {
                Event::Up(p) => assert_eq!(
                    p.secret.unwrap().fingerprint(),
                    crate::secure::Fingerprint::of(order[0].as_bytes())
                ),
                e => panic!("round {round}: {e:?}"),
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    no_peer_went_down(&mut rx1);
    no_peer_went_down(&mut rx2);
}

#[tokio::test]
async fn a_removed_secret_closes_its_connections() {
    const A: &str = "secret a, long enough here";
    const B: &str = "secret b, long enough here";
    let (tx1, mut rx1) = mpsc::unbounded_channel();
    let (tx2, _rx2) = mpsc::unbounded_channel();
    let g1 = Gossip::start(with_secret(cfg(1), &format!("{B}\n{A}")), tx1)
        .await
        .unwrap();
    let mut c2 = with_secret(cfg(2), A);
    c2.seeds = vec![g1.local_addr()];
    let _g2 = Gossip::start(c2, tx2).await.unwrap();
    assert!(matches!(next_event(&mut rx1).await, Event::Up(_)));
    g1.set_secrets(keys(&[B])).unwrap();
    let Event::Down { reason, .. } = next_event(&mut rx1).await else {
        panic!("the connection on the removed secret closes")
    };
    assert!(reason.contains("closed locally"), "{reason}");
    // Without secrets at start, none can be set later.
    let (tx, _rx) = mpsc::unbounded_channel();
    let plain = Gossip::start(cfg(4), tx).await.unwrap();
    assert!(plain.set_secrets(keys(&[A])).is_err());
}
