//! Host keys on real connections (loopback, with a secret): a hello binds the peer's name to its
//! key over the connection, so a member cannot take a live peer's name with another key, and an
//! unsigned hello is refused where signatures are required.

use super::tests::target_error;
use super::*;
use crate::secure::Keyring;
use crate::sign::HostKey;
use crate::PeerName;
use std::time::Duration;
use tokio::sync::mpsc;

const SECRET: &str = "a cluster secret of some length";

fn key() -> Arc<HostKey> {
    Arc::new(HostKey::from_pkcs8(&HostKey::generate_pkcs8().unwrap()).unwrap())
}

fn cfg(name: PeerName, uid: u64, key: Option<Arc<HostKey>>) -> Config {
    let mut c = Config::new(name, uid, format!("u{uid}"), "127.0.0.1:0".parse().unwrap());
    c.heartbeat = Duration::from_millis(100);
    c.dead_after = Duration::from_millis(600);
    c.secrets = Some(Keyring::parse(SECRET.as_bytes()).unwrap());
    c.host_key = key;
    c
}

async fn start(c: Config) -> (Gossip, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Gossip::start(c, tx).await.unwrap(), rx)
}

async fn wait_connected(g: &Gossip, nickname: &str) {
    for _ in 0..250 {
        if g.connections().iter().any(|c| c.nickname == nickname) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{nickname} never connected: {:?}", g.connections());
}

#[tokio::test]
async fn a_live_peers_name_cannot_be_taken_with_another_key() {
    let (ka, kb) = (key(), key());
    let (ga, _rxa) = start(cfg(ka.derived_name(), 1, Some(ka.clone()))).await;
    // b runs under a name from before host keys: bound to its key by its first hello.
    let legacy = PeerName(0x00b0_0b00_0b00_0b00);
    let mut cb = cfg(legacy, 2, Some(kb.clone()));
    cb.seeds = vec![ga.local_addr()];
    let (gb, _rxb) = start(cb).await;
    wait_connected(&ga, "u2").await;

    // A member with the secret says it is b, from a new run, with its own key: refused, and
    // b's connection stays.
    let mut cm = cfg(legacy, 3, Some(key()));
    cm.seeds = vec![ga.local_addr()];
    let (gm, _rxm) = start(cm).await;
    let err = target_error(&gm).await;
    assert!(err.contains("bound to another host key"), "{err}");
    // The same without a key (as an older router would): refused too.
    let mut cu = cfg(legacy, 4, None);
    cu.seeds = vec![ga.local_addr()];
    let (gu, _rxu) = start(cu).await;
    let err = target_error(&gu).await;
    assert!(err.contains("hello is unsigned"), "{err}");
    let conns = ga.connections();
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert_eq!(conns[0].nickname, "u2", "b was not pushed off");

    // b itself reconnecting (a new run, the same key) is welcome.
    gb.shutdown().await;
    let mut cb2 = cfg(legacy, 5, Some(kb));
    cb2.seeds = vec![ga.local_addr()];
    let (_gb2, _rx) = start(cb2).await;
    wait_connected(&ga, "u5").await;
    gm.shutdown().await;
    gu.shutdown().await;
}

#[tokio::test]
async fn a_new_hosts_name_is_its_keys_even_if_taken_first() {
    let (ka, kx) = (key(), key());
    let x = kx.derived_name();
    let (ga, _rxa) = start(cfg(ka.derived_name(), 1, Some(ka.clone()))).await;
    // A member takes x's name (derived from x's key) before x ever connected.
    let mut cm = cfg(x, 2, Some(key()));
    cm.seeds = vec![ga.local_addr()];
    let (gm, _rxm) = start(cm).await;
    wait_connected(&ga, "u2").await;
    gm.shutdown().await;
    // x with its own key gets its name, and the member cannot come back under it.
    let mut cx = cfg(x, 3, Some(kx));
    cx.seeds = vec![ga.local_addr()];
    let (_gx, _rxx) = start(cx).await;
    wait_connected(&ga, "u3").await;
    let mut cm = cfg(x, 4, Some(key()));
    cm.seeds = vec![ga.local_addr()];
    let (gm, _rxm) = start(cm).await;
    let err = target_error(&gm).await;
    assert!(err.contains("bound to another host key"), "{err}");
}

#[tokio::test]
async fn an_unsigned_hello_is_refused_when_signatures_are_required() {
    let ka = key();
    let mut ca = cfg(ka.derived_name(), 1, Some(ka));
    ca.require_signed = true;
    let (ga, _rxa) = start(ca).await;
    let mut cu = cfg(PeerName(0x77), 2, None);
    cu.seeds = vec![ga.local_addr()];
    let (gu, _rxu) = start(cu).await;
    let err = target_error(&gu).await;
    assert!(err.contains("does not sign"), "{err}");
    assert!(ga.connections().is_empty());
}
