//! Unit tests of the IPAM types and state machine (the multi-host simulation is `tests/ipam_sim.rs`).

use super::*;
use crate::PeerName;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn cfg(init_peers: usize) -> IpamConfig {
    IpamConfig {
        cidr: "10.32.0.0/12".parse().unwrap(),
        block_prefix: 24,
        grace: Duration::from_secs(60),
        init_peers,
        state_file: None,
    }
}

#[test]
fn config_is_checked_and_blocks_enumerate_the_cidr() {
    let c = cfg(1);
    assert!(c.validate().is_ok());
    assert_eq!(c.block_count(), 4096);
    assert_eq!(c.block(0).unwrap().to_string(), "10.32.0.0/24");
    assert_eq!(c.block(4095).unwrap().to_string(), "10.47.255.0/24");
    assert_eq!(c.block(4096), None);
    assert!(c.is_block("10.40.1.0/24".parse().unwrap()));
    assert!(!c.is_block("10.48.0.0/24".parse().unwrap()));
    assert!(!c.is_block("10.32.0.0/25".parse().unwrap()));
    let mut bad = cfg(1);
    bad.block_prefix = 8;
    assert!(bad.validate().unwrap_err().contains("does not fit"));
    bad.block_prefix = 33;
    assert!(bad.validate().is_err());
    bad.block_prefix = 32;
    bad.cidr = "10.0.0.0/8".parse().unwrap();
    assert!(bad.validate().unwrap_err().contains("2^20"));
    assert!(cfg(0).validate().is_err());
}

#[test]
fn records_round_trip_compactly() {
    let mut r = IpamRecord::new(PeerName(7), "h".into());
    r.incarnation = 2;
    r.version = 9;
    let b: Block = "10.32.4.0/24".parse().unwrap();
    r.claims.insert(b, Claim { seq: 8, held: true });
    r.votes.insert(b, (PeerName(7), 8));
    r.reclaim_votes.insert(PeerName(3), 1);
    r.reclaimed.insert(PeerName(4), 0);
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains(r#"["10.32.4.0/24",8,true]"#), "{json}");
    assert_eq!(serde_json::from_str::<IpamRecord>(&json).unwrap(), r);
    let msg = IpamMsg::Records {
        records: vec![r.clone()],
    };
    let json = serde_json::to_string(&msg).unwrap();
    assert_eq!(serde_json::from_str::<IpamMsg>(&json).unwrap(), msg);
}

/// The text form of blocks, records and states is what routers of other versions read and
/// what state files hold: it must stay byte for byte what it is.
#[test]
fn serialized_forms_are_stable() {
    let b: Block = "10.32.0.0/27".parse().unwrap();
    assert_eq!(serde_json::to_string(&b).unwrap(), r#""10.32.0.0/27""#);
    assert_eq!(
        serde_json::from_str::<Block>(r#""10.32.0.0/27""#).unwrap(),
        b
    );
    let mut r = IpamRecord::new(PeerName(7), "h".into());
    r.incarnation = 2;
    r.version = 9;
    // Keys in map order: address first, then prefix length.
    for (i, s) in ["10.32.1.0/24", "10.32.0.0/25", "10.32.0.0/24", "9.0.0.0/8"]
        .iter()
        .enumerate()
    {
        let b: Block = s.parse().unwrap();
        r.claims.insert(
            b,
            Claim {
                seq: i as u64,
                held: i % 2 == 0,
            },
        );
        r.votes.insert(b, (PeerName(7), i as u64));
    }
    r.reclaim_votes.insert(PeerName(3), 1);
    r.reclaimed.insert(PeerName(4), 0);
    let want = concat!(
        r#"{"name":7,"nick":"h","inc":2,"ver":9,"#,
        r#""claims":[["9.0.0.0/8",3,false],["10.32.0.0/24",2,true],["10.32.0.0/25",1,false],["10.32.1.0/24",0,true]],"#,
        r#""votes":[["9.0.0.0/8",7,3],["10.32.0.0/24",7,2],["10.32.0.0/25",7,1],["10.32.1.0/24",7,0]],"#,
        r#""reclaim":[[3,1]],"reclaimed":[[4,0]],"left":false}"#
    );
    assert_eq!(serde_json::to_string(&r).unwrap(), want);
    assert_eq!(serde_json::from_str::<IpamRecord>(want).unwrap(), r);
    let st = IpamState {
        cidr: "10.32.0.0/12".parse().unwrap(),
        block_prefix: 27,
        records: vec![],
        lost: vec![
            b,
            "0.0.0.0/0".parse().unwrap(),
            "10.32.0.5/32".parse().unwrap(),
        ],
    };
    let want = r#"{"cidr":"10.32.0.0/12","block_prefix":27,"records":[],"lost":["10.32.0.0/27","0.0.0.0/0","10.32.0.5/32"]}"#;
    assert_eq!(serde_json::to_string(&st).unwrap(), want);
    assert_eq!(serde_json::from_str::<IpamState>(want).unwrap(), st);
}

#[test]
fn parsing_refuses_host_bits_bad_prefixes_and_other_forms() {
    for bad in [
        "10.32.0.1/27",
        "10.32.0.0/33",
        "10.32.0.0/",
        "10.32.0.0",
        "/27",
        "10.32.0/27",
        "10.32.0.0/-1",
        "10.32.0.0/27/1",
        " 10.32.0.0/27",
        "fd00::1/64",
        "fd00::/129",
        "[fd00::]/64",
        "fd00::",
        "",
    ] {
        let e = bad.parse::<Block>().unwrap_err();
        assert_eq!(e, BadBlock(bad.to_string()));
        assert_eq!(
            e.to_string(),
            format!("{bad:?} is not a prefix with its host bits zero, A.B.C.D/N or x:y::/N")
        );
        let json = serde_json::to_string(bad).unwrap();
        let e = serde_json::from_str::<Block>(&json)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a prefix"), "{e}");
    }
    let b = Block::new("10.32.0.9".parse::<std::net::Ipv4Addr>().unwrap(), 27).unwrap();
    assert_eq!(b.to_string(), "10.32.0.0/27");
    assert_eq!(
        Block::new("10.32.0.9".parse::<std::net::Ipv4Addr>().unwrap(), 33),
        None
    );
    assert_eq!(b.size(), 32);
    assert!(b.contains("10.32.0.31".parse::<std::net::Ipv4Addr>().unwrap()));
    assert!(!b.contains("10.32.0.32".parse::<std::net::Ipv4Addr>().unwrap()));
    assert!(!b.contains("10.31.255.255".parse::<std::net::Ipv4Addr>().unwrap()));
    assert_eq!(b.nth(31), Some("10.32.0.31".parse().unwrap()));
    assert_eq!(b.nth(32), None);
    let all: Block = "0.0.0.0/0".parse().unwrap();
    assert_eq!(all.size(), 1 << 32);
    assert!(all.contains("255.255.255.255".parse::<std::net::Ipv4Addr>().unwrap()));
}

fn rec(name: u64, votes_against: &[u64]) -> IpamRecord {
    let mut r = IpamRecord::new(PeerName(name), String::new());
    for v in votes_against {
        r.reclaim_votes.insert(PeerName(*v), 0);
    }
    r
}

#[test]
fn reclaim_needs_a_majority_of_unsuspected_voters() {
    let set = |rs: Vec<IpamRecord>, init| {
        let m: BTreeMap<PeerName, IpamRecord> = rs.into_iter().map(|r| (r.name, r)).collect();
        reclaimed_set(&m, init)
            .into_iter()
            .map(|p| p.0)
            .collect::<Vec<_>>()
    };
    // 1 and 2 vote against 3: reclaimed.
    assert_eq!(set(vec![rec(1, &[3]), rec(2, &[3]), rec(3, &[])], 3), [3]);
    // 3, alone, votes against both: nothing.
    assert!(set(vec![rec(1, &[]), rec(2, &[]), rec(3, &[1, 2])], 3).is_empty());
    // Both sides vote: the majority side wins, the minority's votes do not count.
    assert_eq!(
        set(vec![rec(1, &[3]), rec(2, &[3]), rec(3, &[1, 2])], 3),
        [3]
    );
    // Each alone voted against the others: nobody.
    assert!(set(vec![rec(1, &[2, 3]), rec(2, &[1, 3]), rec(3, &[1, 2])], 3).is_empty());
    // Two hosts: never.
    assert!(set(vec![rec(1, &[2]), rec(2, &[])], 2).is_empty());
    // A vote for an older incarnation does not count.
    let mut three = rec(3, &[]);
    three.incarnation = 1;
    assert!(set(vec![rec(1, &[3]), rec(2, &[3]), three.clone()], 3).is_empty());
    // An assertion by anyone is a fact.
    let mut one = rec(1, &[]);
    one.reclaimed.insert(PeerName(3), 1);
    assert_eq!(set(vec![one, rec(2, &[]), three], 3), [3]);
}

#[test]
fn a_lone_host_holds_at_once_and_the_next_claim_takes_another_block() {
    let now = Instant::now();
    let mut a = Ipam::new(PeerName(1), "a".into(), cfg(1), None, now).unwrap();
    let (b1, out) = a.claim(now).unwrap();
    assert_eq!(out.first(), Some(&IpamOut::Persist));
    assert_eq!(a.claim_state(b1), ClaimState::Held);
    let (b2, _) = a.claim(now).unwrap();
    assert_ne!(b1, b2);
    assert_eq!(a.held().len(), 2);
    assert_eq!(a.free_blocks(), 4094);
    a.release(now, b1);
    assert_eq!(a.held(), vec![b2]);
    assert_eq!(a.claim_state(b1), ClaimState::Gone);
}

#[test]
fn with_init_peers_a_lone_host_waits_and_withdraws() {
    let now = Instant::now();
    let mut a = Ipam::new(PeerName(1), "a".into(), cfg(3), None, now).unwrap();
    let (b, _) = a.claim(now).unwrap();
    assert_eq!(a.claim_state(b), ClaimState::Pending);
    assert_eq!(a.quorum(), (1, 2));
    // Asking again returns the same pending claim.
    assert_eq!(a.claim(now).unwrap().0, b);
    a.withdraw(now, b);
    assert_eq!(a.claim_state(b), ClaimState::Gone);
    assert!(a.own().votes.is_empty());
}

#[test]
fn exhausted_when_every_block_is_held() {
    let now = Instant::now();
    let mut c = cfg(1);
    c.cidr = "10.32.0.0/23".parse().unwrap();
    let mut a = Ipam::new(PeerName(1), "a".into(), c.clone(), None, now).unwrap();
    a.claim(now).unwrap();
    a.claim(now).unwrap();
    assert_eq!(a.claim(now).unwrap_err(), IpamError::Exhausted(c.cidr));
}

#[test]
fn state_for_another_cidr_is_ignored_and_a_left_record_restarts_as_a_new_incarnation() {
    let now = Instant::now();
    let mut a = Ipam::new(PeerName(1), "a".into(), cfg(1), None, now).unwrap();
    a.claim(now).unwrap();
    a.leave(now);
    let st = a.state();
    let b = Ipam::new(PeerName(1), "a".into(), cfg(1), Some(st.clone()), now).unwrap();
    assert_eq!(b.own().incarnation, 1);
    assert!(!b.own().left);
    let mut other = cfg(1);
    other.cidr = "10.64.0.0/12".parse().unwrap();
    let c = Ipam::new(PeerName(1), "a".into(), other, Some(st), now).unwrap();
    assert_eq!(c.own().incarnation, 0);
}

/// Regression (fuzz target `ipam_records`): a neighbour sending our own record at version
/// `u64::MAX` made us adopt it and add one (a panic with overflow checks; in release, version 0,
/// older than every copy, sent back and forth for ever). Records beyond [`MAX_STAMP`] are refused,
/// from neighbours and from the state file.
#[test]
fn records_at_the_end_of_the_stamp_range_are_refused() {
    let now = Instant::now();
    let mut a = Ipam::new(PeerName(1), "a".into(), cfg(3), None, now).unwrap();
    a.connected(now, PeerName(2));
    let before = a.own().stamp();
    let msg: IpamMsg = serde_json::from_str(
        r#"{"kind":"records","records":[{"name":1,"inc":0,"ver":18446744073709551615}]}"#,
    )
    .unwrap();
    a.on_message(now, PeerName(2), msg);
    assert_eq!(a.own().stamp(), before);
    let mut far = IpamRecord::new(PeerName(3), "c".into());
    far.incarnation = MAX_STAMP + 1;
    // Accepted: within MAX_STAMP and within the jump a first copy may make (ipam::checks). A
    // first copy at MAX_STAMP itself is refused by that jump check.
    let mut near = IpamRecord::new(PeerName(4), "d".into());
    near.version = 1 << 20;
    a.on_message(
        now,
        PeerName(2),
        IpamMsg::Records {
            records: vec![far.clone(), near.clone()],
        },
    );
    assert!(a.records().get(&PeerName(3)).is_none());
    assert_eq!(a.records().get(&PeerName(4)), Some(&near));
    // The state file: the same rule.
    let mut st = a.state();
    let mut ours = a.own().clone();
    ours.version = u64::MAX;
    st.records.retain(|r| r.name != PeerName(1));
    st.records.push(ours);
    st.records.push(far);
    let b = Ipam::new(PeerName(1), "a".into(), cfg(3), Some(st), now).unwrap();
    assert_eq!(b.own().stamp(), (0, 1));
    assert!(b.records().get(&PeerName(3)).is_none());
    assert!(b.records().get(&PeerName(4)).is_some());
}

#[test]
fn blocks_convert_to_and_from_ipnet() {
    use ipnet::IpNet;
    let b: Block = "10.32.0.0/27".parse().unwrap();
    let net: IpNet = b.into();
    assert_eq!(net, "10.32.0.0/27".parse::<IpNet>().unwrap());
    assert_eq!(b.net(), net);
    assert_eq!(Block::try_from(net), Ok(b));
    assert_eq!(
        b.network(),
        "10.32.0.0".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(
        (b.base(), b.prefix()),
        ("10.32.0.0".parse::<std::net::IpAddr>().unwrap(), 27)
    );
    // Host bits set: refused, in either family.
    for s in ["10.32.0.1/27", "fd00::1/64"] {
        let net: IpNet = s.parse().unwrap();
        assert_eq!(Block::try_from(net), Err(BadBlock(s.to_string())));
    }
    // The debug form is the one of the former struct.
    assert_eq!(format!("{b:?}"), "Block { base: 10.32.0.0, prefix: 27 }");
}

/// The IPv4 block type as it was before it wrapped `IpNet`, as the reference for the one now.
mod before_ipnet {
    use std::net::Ipv4Addr;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    pub struct Block {
        pub base: Ipv4Addr,
        pub prefix: u8,
    }

    impl Block {
        pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Block> {
            if prefix > 32 {
                return None;
            }
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            Some(Block {
                base: Ipv4Addr::from(u32::from(addr) & mask),
                prefix,
            })
        }

        pub fn parse(s: &str) -> Option<Block> {
            let (a, n) = s.split_once('/')?;
            let addr: Ipv4Addr = a.parse().ok()?;
            let b = Block::new(addr, n.parse().ok()?)?;
            (b.base == addr).then_some(b)
        }

        pub fn contains(&self, ip: Ipv4Addr) -> bool {
            let size = 1u64 << (32 - self.prefix);
            let off = u32::from(ip).wrapping_sub(u32::from(self.base)) as u64;
            u32::from(ip) >= u32::from(self.base) && off < size
        }
    }
}

proptest::proptest! {
    #[test]
    fn blocks_behave_as_before_ipnet(
        a in proptest::prelude::any::<u32>(),
        p in 0u8..40,
        b in proptest::prelude::any::<u32>(),
        q in 0u8..33,
        ip in proptest::prelude::any::<u32>(),
        junk in "[0-9./+ a-f:-]{0,20}",
    ) {
        let (a, b, ip) = (std::net::Ipv4Addr::from(a), std::net::Ipv4Addr::from(b), std::net::Ipv4Addr::from(ip));
        let old = before_ipnet::Block::new(a, p);
        let new = Block::new(a, p);
        proptest::prop_assert_eq!(old.is_some(), new.is_some());
        if let (Some(old), Some(new)) = (old, new) {
            proptest::prop_assert_eq!((std::net::IpAddr::from(old.base), old.prefix), (new.base(), new.prefix()));
            let text = format!("{}/{}", old.base, old.prefix);
            proptest::prop_assert_eq!(new.to_string(), text.clone());
            proptest::prop_assert_eq!(serde_json::to_string(&new).unwrap(), format!("{text:?}"));
            proptest::prop_assert_eq!(old.contains(ip), new.contains(ip));
            let other_old = before_ipnet::Block::new(b, q).unwrap();
            let other = Block::new(b, q).unwrap();
            proptest::prop_assert_eq!(old.cmp(&other_old), new.cmp(&other));
        }
        for s in [format!("{a}/{p}"), format!("{a}/{q}"), junk] {
            let old = before_ipnet::Block::parse(&s);
            // IPv6 prefixes parse now; every IPv4 text parses as before.
            let new = s.parse::<Block>().ok().filter(|b| !b.is_ipv6());
            proptest::prop_assert_eq!(old.map(|o| (std::net::IpAddr::from(o.base), o.prefix)), new.map(|n| (n.base(), n.prefix())));
        }
    }
}

#[test]
fn ipv6_blocks_parse_enumerate_and_serialize() {
    let b: Block = "fd10:32::/64".parse().unwrap();
    assert!(b.is_ipv6());
    assert_eq!(b.family_bits(), 128);
    assert_eq!(b.to_string(), "fd10:32::/64");
    // Any text form of the address, written back in the canonical one.
    let long: Block = "fd10:0032:0000:0000:0000:0000:0000:0000/64"
        .parse()
        .unwrap();
    assert_eq!(long, b);
    assert_eq!(serde_json::to_string(&b).unwrap(), r#""fd10:32::/64""#);
    assert_eq!(
        serde_json::from_str::<Block>(r#""fd10:32::/64""#).unwrap(),
        b
    );
    assert_eq!(b.size(), u64::MAX, "2^64 addresses, capped");
    assert_eq!(b.nth(1), Some("fd10:32::1".parse().unwrap()));
    assert_eq!(
        b.nth(u64::MAX),
        Some("fd10:32::ffff:ffff:ffff:ffff".parse().unwrap())
    );
    assert!(b.contains(
        "fd10:32::ffff:ffff:ffff:ffff"
            .parse::<std::net::IpAddr>()
            .unwrap()
    ));
    assert!(!b.contains("fd10:32:0:1::".parse::<std::net::IpAddr>().unwrap()));
    assert!(!b.contains("10.32.0.1".parse::<std::net::Ipv4Addr>().unwrap()));
    let small: Block = "fd10:32::100/120".parse().unwrap();
    assert_eq!(small.size(), 256);
    assert_eq!(small.nth(255), Some("fd10:32::1ff".parse().unwrap()));
    assert_eq!(small.nth(256), None);
    // Blocks of a CIDR, in order; IPv4 the same way.
    let cfg = IpamConfig {
        cidr: "fd10:32::/48".parse().unwrap(),
        block_prefix: 64,
        ..cfg(1)
    };
    assert_eq!(cfg.validate(), Ok(()));
    assert_eq!(cfg.block_count(), 1 << 16);
    assert_eq!(cfg.block(0), Some("fd10:32::/64".parse().unwrap()));
    assert_eq!(cfg.block(1), Some("fd10:32:0:1::/64".parse().unwrap()));
    assert_eq!(
        cfg.block(0xffff),
        Some("fd10:32:0:ffff::/64".parse().unwrap())
    );
    assert_eq!(cfg.block(0x10000), None);
    assert!(cfg.is_block("fd10:32:0:7::/64".parse().unwrap()));
    assert!(!cfg.is_block("fd10:33::/64".parse().unwrap()));
    assert!(!cfg.is_block("10.32.0.0/24".parse().unwrap()));
    let too_many = IpamConfig {
        block_prefix: 80,
        ..cfg.clone()
    };
    assert!(too_many.validate().unwrap_err().contains("2^20 blocks"));
    let outside = IpamConfig {
        block_prefix: 129,
        ..cfg
    };
    assert!(outside.validate().is_err());
}

proptest::proptest! {
    /// A CIDR's blocks tile it: block i is inside, of the block size, distinct from block i + 1,
    /// and the address arithmetic agrees with ipnet's subnets, for both families.
    #[test]
    fn blocks_tile_the_cidr(
        v6 in proptest::bool::ANY,
        raw in proptest::prelude::any::<u128>(),
        cidr_len in 0u8..=100,
        extra in 0u8..=20,
        i in proptest::prelude::any::<u64>(),
    ) {
        let (addr, bits): (std::net::IpAddr, u8) = if v6 {
            (std::net::Ipv6Addr::from(raw).into(), 128)
        } else {
            (std::net::Ipv4Addr::from(raw as u32).into(), 32)
        };
        let cidr_len = cidr_len % (bits - 1);
        let block_prefix = (cidr_len + extra).min(bits);
        let c = IpamConfig { cidr: Block::new(addr, cidr_len).unwrap(), block_prefix, ..cfg(1) };
        let i = i % c.block_count();
        let b = c.block(i).unwrap();
        proptest::prop_assert!(c.is_block(b));
        proptest::prop_assert_eq!(b.prefix(), block_prefix);
        let want = c.cidr.net().subnets(block_prefix).unwrap().nth(i as usize).unwrap();
        proptest::prop_assert_eq!(b.net(), want);
        if i + 1 < c.block_count() {
            proptest::prop_assert_ne!(c.block(i + 1).unwrap(), b);
        }
    }
}
