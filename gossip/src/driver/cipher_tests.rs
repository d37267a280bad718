//! The sleeve's AEAD on real connections (loopback, with a secret): both ends reach the same
//! choice from their offers and get matching keys for it; a router offering nothing (as one from
//! before the negotiation: its hello has no list) gets ChaCha20-Poly1305;
//! two pins that cannot meet are refused with both offers named.

use super::tests::target_error;
use super::*;
use crate::secure::Keyring;
use crate::PeerName;
use std::time::Duration;
use tokio::sync::mpsc;
use vswitch::Aead::{self, Aes256Gcm as Aes, ChaCha20Poly1305 as ChaCha};

const SECRET: &str = "a cluster secret of some length";

fn cfg(name: u64, ciphers: &[Aead]) -> Config {
    let mut c = Config::new(
        PeerName(name),
        name * 100,
        format!("h{name}"),
        "127.0.0.1:0".parse().unwrap(),
    );
    c.secrets = Some(Keyring::parse(SECRET.as_bytes()).unwrap());
    c.ciphers = ciphers.to_vec();
    c
}

async fn up(rx: &mut mpsc::UnboundedReceiver<Event>) -> PeerInfo {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("event within 5 s")
            .expect("channel open");
        if let Event::Up(p) = e {
            return p;
        }
    }
}

#[tokio::test]
async fn both_ends_choose_the_same_aead_and_matching_keys() {
    let auto_hw = [Aes, ChaCha];
    let auto_sw = [ChaCha, Aes];
    for (ours, theirs, want) in [
        (&auto_hw[..], &auto_hw[..], Aes),
        (&auto_hw[..], &auto_sw[..], ChaCha),
        (&auto_sw[..], &auto_hw[..], ChaCha),
        (&[ChaCha][..], &auto_hw[..], ChaCha),
        (&[Aes][..], &auto_sw[..], Aes),
        (&auto_hw[..], &[][..], ChaCha),
    ] {
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        let g1 = Gossip::start(cfg(1, ours), tx1).await.unwrap();
        let mut c2 = cfg(2, theirs);
        c2.seeds = vec![g1.local_addr()];
        let g2 = Gossip::start(c2, tx2).await.unwrap();
        let (p1, p2) = (up(&mut rx1).await, up(&mut rx2).await);
        let (k1, k2) = (p1.keys.unwrap(), p2.keys.unwrap());
        assert_eq!((k1.aead, k2.aead), (want, want), "{ours:?} / {theirs:?}");
        assert_eq!((k1.send, k1.recv), (k2.recv, k2.send));
        g2.shutdown().await;
        g1.shutdown().await;
    }
}

#[tokio::test]
async fn pins_that_cannot_meet_are_refused_naming_both() {
    for (ours, theirs) in [(&[Aes][..], &[ChaCha][..]), (&[Aes][..], &[][..])] {
        let (tx1, _rx1) = mpsc::unbounded_channel();
        let g1 = Gossip::start(cfg(1, ours), tx1).await.unwrap();
        let (tx2, _rx2) = mpsc::unbounded_channel();
        let mut c2 = cfg(2, theirs);
        c2.seeds = vec![g1.local_addr()];
        let g2 = Gossip::start(c2, tx2).await.unwrap();
        let err = target_error(&g2).await;
        assert!(err.contains("no cipher in common"), "{err}");
        assert!(
            err.contains("aes-256-gcm") && err.contains("chacha20-poly1305"),
            "{err}"
        );
        assert!(g1.connections().is_empty() && g2.connections().is_empty());
        g2.shutdown().await;
        g1.shutdown().await;
    }
}
