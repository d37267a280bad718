//! Signed IPAM records: a member holding the cluster secret cannot write another host's claims,
//! votes or departure, and a host that lost its state adopts only a copy of its record it signed.

use super::{Block, Claim, Ipam, IpamConfig, IpamMsg, IpamOut, IpamRecord};
use crate::sign::{verify, HostKey, SignedRecord, IPAM_DOMAIN};
use crate::PeerName;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn cfg() -> IpamConfig {
    IpamConfig {
        cidr: "10.32.0.0/12".parse().unwrap(),
        block_prefix: 24,
        grace: Duration::from_secs(60),
        init_peers: 1,
        state_file: None,
    }
}

fn key() -> Arc<HostKey> {
    Arc::new(HostKey::from_pkcs8(&HostKey::generate_pkcs8().unwrap()).unwrap())
}

fn record(k: &HostKey, version: u64, block: Option<&str>, sign: Option<&HostKey>) -> IpamRecord {
    let mut r = IpamRecord::new(k.derived_name(), "h".into());
    r.version = version;
    if let Some(b) = block {
        let b: Block = b.parse().unwrap();
        r.claims.insert(
            b,
            Claim {
                seq: version,
                held: true,
            },
        );
    }
    if let Some(s) = sign {
        r.sign(s);
    }
    r
}

fn msg(records: Vec<IpamRecord>) -> IpamMsg {
    IpamMsg::Records { records }
}

fn ipam(k: &Arc<HostKey>, now: Instant) -> Ipam {
    Ipam::new(k.derived_name(), "a".into(), cfg(), None, now)
        .unwrap()
        .with_host_key(k.clone())
}

#[test]
fn our_record_is_signed_and_every_change_too() {
    let now = Instant::now();
    let ka = key();
    let mut a = ipam(&ka, now);
    let check = |r: &IpamRecord| {
        r.key == Some(ka.public())
            && verify(&ka.public(), IPAM_DOMAIN, &r.signed_body(), &r.sig.unwrap())
    };
    assert!(check(a.own()));
    let (_, out) = a.claim(now).unwrap();
    assert!(check(a.own()), "after a claim");
    let sent: Vec<&IpamRecord> = out
        .iter()
        .filter_map(|o| match o {
            IpamOut::Send {
                msg: IpamMsg::Records { records },
                ..
            } => Some(records),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(sent.iter().all(|r| check(r)));
    // The wire form keeps what was signed.
    let back: IpamRecord = serde_json::from_slice(&serde_json::to_vec(a.own()).unwrap()).unwrap();
    assert_eq!(back, *a.own());
}

#[test]
fn a_member_cannot_write_another_hosts_record() {
    let now = Instant::now();
    let (ka, kb, kx) = (key(), key(), key());
    let (b, x) = (kb.derived_name(), kx.derived_name());
    let mut a = ipam(&ka, now);
    a.connected(now, b);
    a.on_message(
        now,
        b,
        msg(vec![record(&kx, 3, Some("10.32.5.0/24"), Some(&kx))]),
    );
    let genuine = a.records()[&x].clone();

    // b drops x's claim (a record saying x left, or holds nothing) three ways.
    let mut left = record(&kx, 9, None, None);
    left.left = true;
    let mut with_b_key = left.clone();
    with_b_key.sign(&kb);
    let mut tampered = record(&kx, 9, Some("10.32.5.0/24"), Some(&kx));
    tampered.left = true;
    a.on_message(now, b, msg(vec![left, with_b_key, tampered]));
    let r = a.rejects();
    assert_eq!((r.unsigned, r.wrong_key, r.signature), (1, 1, 1));
    assert_eq!(a.records()[&x], genuine, "x's claim stands");

    // x's own next record passes, relayed by b.
    a.on_message(now, b, msg(vec![record(&kx, 4, None, Some(&kx))]));
    assert_eq!(a.records()[&x].version, 4);
}

#[test]
fn a_forged_copy_of_our_record_is_not_adopted_after_a_lost_state() {
    let now = Instant::now();
    let (ka, kb) = (key(), key());
    let b = kb.derived_name();
    // A new start without a state file: the first newer copy of our record is adopted only if
    // we signed it.
    let mut a = ipam(&ka, now);
    a.connected(now, b);
    let mut forged = IpamRecord::new(ka.derived_name(), "a".into());
    forged.version = 50;
    forged.left = true;
    forged.sign(&kb);
    a.on_message(now, b, msg(vec![forged]));
    assert_eq!(a.rejects().forged_own, 1);
    assert!(!a.own().left);
    assert!(a.own().version > 50, "ours outdoes it");

    // Our own signed copy from before the lost state is adopted.
    let mut a = ipam(&ka, now);
    a.connected(now, b);
    let mut ours = record(&ka, 70, Some("10.32.9.0/24"), None);
    ours.nickname = "a".into();
    ours.sign(&ka);
    a.on_message(now, b, msg(vec![ours]));
    assert_eq!(a.rejects().forged_own, 0);
    assert_eq!(a.own().held().len(), 1, "its claim is ours again");
}

#[test]
fn unsigned_records_of_unbound_names_pass_unless_required() {
    let now = Instant::now();
    let (ka, kb) = (key(), key());
    let b = kb.derived_name();
    let legacy = IpamRecord::new(PeerName(0x77), "old".into());
    let mut a = ipam(&ka, now);
    a.connected(now, b);
    a.on_message(now, b, msg(vec![legacy.clone()]));
    assert_eq!(a.rejects().unsigned_accepted, 1);
    assert!(a.records().contains_key(&PeerName(0x77)));

    let mut strict = ipam(&ka, now).with_require_signed(true);
    strict.connected(now, b);
    strict.on_message(now, b, msg(vec![legacy]));
    assert_eq!(strict.rejects().unsigned, 1);
    assert!(!strict.records().contains_key(&PeerName(0x77)));
}
