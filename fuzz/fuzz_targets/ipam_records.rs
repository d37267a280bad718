//! Cluster IPAM (`gossip::ipam`) fed what neighbours and the state file can hold: the input is
//! lines, the first an `IpamState` as the state file holds it (anything else: no state), each
//! further line an operation letter and, for messages, the JSON of an `IpamMsg` from neighbour 2
//! (`a`) or 3 (`b`), delivered once that neighbour is connected (`A`, `B`). Records, digests, requests and acks of any shape must never panic the state
//! machine, and after every step:
//!
//! * our record's (incarnation, version) never goes backwards;
//! * everything sent is to a neighbour, and fits in one control message (64 KiB);
//! * every claim we start is a block of the pod CIDR, and the free-block count stays within it;
//! * the state we would persist reads back from its JSON as itself.
#![no_main]

use gossip::ipam::{Ipam, IpamConfig, IpamMsg, IpamOut, IpamState};
use gossip::proto::{encode, Message, MAX_MESSAGE_LEN};
use gossip::PeerName;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const ME: PeerName = PeerName(1);
const A: PeerName = PeerName(2);
const B: PeerName = PeerName(3);

fn cfg() -> IpamConfig {
    IpamConfig {
        cidr: "10.32.0.0/16".parse().unwrap(),
        block_prefix: 24,
        grace: Duration::from_secs(60),
        init_peers: 3,
        state_file: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let state: Option<IpamState> = lines.next().and_then(|l| serde_json::from_slice(l).ok());
    let mut now = Instant::now();
    let Ok(mut ipam) = Ipam::new(ME, "me".into(), cfg(), state, now) else {
        return;
    };
    let mut neighbours = BTreeSet::new();
    let mut stamp = ipam.own().stamp();
    for line in lines.take(64) {
        let Some((&op, rest)) = line.split_first() else {
            continue;
        };
        let out = match op {
            b'a' | b'b' => {
                let from = if op == b'a' { A } else { B };
                // The driver delivers messages only on a connection it reported up.
                let Ok(msg) = serde_json::from_slice::<IpamMsg>(rest) else {
                    continue;
                };
                if !neighbours.contains(&from) {
                    continue;
                }
                ipam.on_message(now, from, msg)
            }
            b'A' | b'B' => {
                let peer = if op == b'A' { A } else { B };
                neighbours.insert(peer);
                ipam.connected(now, peer)
            }
            b'd' => {
                neighbours.remove(&B);
                ipam.disconnected(now, B)
            }
            b'r' => ipam.set_reachable(now, [A, B].into()),
            b'u' => ipam.set_reachable(now, BTreeSet::new()),
            b't' => {
                now += Duration::from_secs(1);
                ipam.tick(now)
            }
            b'T' => {
                now += Duration::from_secs(61);
                ipam.tick(now)
            }
            b'c' => match ipam.claim(now) {
                Ok((b, out)) => {
                    assert!(ipam.config().is_block(b), "claimed {b}");
                    out
                }
                Err(_) => Vec::new(),
            },
            b'w' => match ipam.own().claims.keys().next().copied() {
                Some(b) => ipam.withdraw(now, b),
                None => Vec::new(),
            },
            b'x' => match ipam.held().first().copied() {
                Some(b) => ipam.release(now, b),
                None => Vec::new(),
            },
            b'l' => ipam.leave(now),
            _ => continue,
        };
        for o in out {
            if let IpamOut::Send { to, msg } = o {
                assert!(neighbours.contains(&to), "sent to {to}, not a neighbour");
                let framed = encode(&Message::Ipam(msg));
                assert!(
                    framed.len() - 4 <= MAX_MESSAGE_LEN,
                    "{} bytes",
                    framed.len()
                );
            }
        }
        let now_stamp = ipam.own().stamp();
        assert!(now_stamp >= stamp, "{stamp:?} -> {now_stamp:?}");
        stamp = now_stamp;
        assert!(ipam.free_blocks() <= ipam.config().block_count());
        let _ = (ipam.quorum(), ipam.members(), ipam.status(now));
    }
    let state = ipam.state();
    let json = serde_json::to_vec(&state).unwrap();
    assert_eq!(serde_json::from_slice::<IpamState>(&json).unwrap(), state);
});
