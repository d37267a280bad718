//! Control messages past the framing: the body of every `gossip::proto::Message`, decoded and
//! then handed where the driver hands it: hellos to version negotiation, the IPAM check and the
//! mesh's admission rules; gossip to the sans-IO core (`gossip::core::GossipCore`) of peer 1.
//! The input is lines: `m<p><json>` a message from peer `p` (a digit), `C<p>`/`D<p>` a connection
//! up or down, `U<p>`/`u<p>` its data path usable or not, `t`/`T` time passing (0.1 s, 3 s).
//! Nothing may panic, and after every step:
//!
//! * everything the core sends goes to a connected peer, in messages within its size bound
//!   (a small one here, 1 KiB, so that splitting is exercised);
//! * our record is ours and lists exactly our connections;
//! * every route's next hop is a connected peer; every reachable peer is in the view.
#![no_main]

use gossip::core::{GossipCore, Output};
use gossip::mesh::Mesh;
use gossip::proto::{self, Hello, Message};
use gossip::topology::{ConnEntry, PeerRecord};
use gossip::PeerName;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const ME: PeerName = PeerName(1);
const MAX_BYTES: usize = 1024;

fn hello() -> Hello {
    Hello {
        protocol: proto::PROTOCOL.into(),
        min_version: proto::MIN_VERSION,
        max_version: proto::MAX_VERSION,
        name: ME.0,
        uid: 100,
        nickname: "me".into(),
        udp_port: 6783,
        pod_mtu: 1376,
        pod_cidr: None,
        pod_cidr6: None,
        block_prefix: None,
        key: None,
        sig: None,
        time_ms: None,
        ciphers: Vec::new(),
    }
}

fn peer(digit: Option<&u8>) -> Option<PeerName> {
    let d = *digit?;
    d.is_ascii_digit().then(|| PeerName(u64::from(d - b'0')))
}

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut core = GossipCore::new(
        PeerRecord::new(ME, 100, 1000, "me"),
        7,
        Duration::from_secs(1),
        now,
    )
    .with_max_message_bytes(MAX_BYTES);
    let mut mesh = Mesh::new(ME, 100);
    let ours = hello();
    let mut connected: BTreeSet<PeerName> = BTreeSet::new();
    for (id, line) in data.split(|b| *b == b'\n').take(64).enumerate() {
        let Some((&op, rest)) = line.split_first() else {
            continue;
        };
        let p = peer(rest.first());
        let out = match (op, p) {
            (b'm', Some(from)) => match proto::decode_body(&rest[1..]) {
                Ok(Message::Gossip(g)) if connected.contains(&from) => {
                    core.on_message(now, from, g)
                }
                Ok(Message::Hello(h)) => {
                    if proto::negotiate(&ours, &h).is_ok() && ours.check_ipam(&h).is_ok() {
                        if mesh.admit(id as u64, &h, id % 2 == 0).is_ok() {
                            assert_ne!(h.peer_name(), ME);
                            assert!(!h.peer_name().is_broadcast());
                        }
                    }
                    let _ = h.describe_ipam();
                    Vec::new()
                }
                Ok(other) => {
                    // Whatever decodes encodes to a frame that decodes to it again.
                    let framed = proto::encode(&other);
                    let len = proto::decode_len(framed[..4].try_into().unwrap());
                    if len.is_ok() {
                        assert_eq!(proto::decode_body(&framed[4..]).unwrap(), other);
                    }
                    Vec::new()
                }
                Err(_) => Vec::new(),
            },
            (b'C', Some(to)) => {
                let addr = SocketAddr::from(([10, 0, 0, to.0 as u8], 6783));
                let entry = ConnEntry {
                    peer: to,
                    addr,
                    usable: false,
                };
                if to != ME && !to.is_broadcast() {
                    connected.insert(to);
                }
                core.connected(now, to, entry)
            }
            (b'D', Some(to)) => {
                connected.remove(&to);
                core.disconnected(now, to)
            }
            (b'U' | b'u', Some(to)) => core.set_usable(now, to, op == b'U'),
            (b't', _) => {
                now += Duration::from_millis(100);
                core.tick(now)
            }
            (b'T', _) => {
                now += Duration::from_secs(3);
                core.tick(now)
            }
            _ => continue,
        };
        check(&core, &connected, &out);
    }
});

fn check(core: &GossipCore, connected: &BTreeSet<PeerName>, out: &[Output]) {
    for o in out {
        if let Output::Send { to, msg } = o {
            assert!(connected.contains(to), "sent to {to}, not connected");
            let len = serde_json::to_vec(msg).unwrap().len();
            assert_eq!(len, msg.json_len());
            assert!(len <= MAX_BYTES, "{} message of {len} bytes", msg.kind());
        }
    }
    let t = core.topology();
    assert_eq!(t.ours().name, ME);
    let listed: BTreeSet<PeerName> = t.ours().conns.iter().map(|c| c.peer).collect();
    assert_eq!(&listed, connected);
    let routes = core.routes();
    for dst in routes.reachable() {
        assert!(t.get(dst).is_some(), "{dst} reachable but not in the view");
        if let Some(hop) = routes.next_hop(dst) {
            assert!(
                connected.contains(&hop),
                "next hop {hop} to {dst} is not connected"
            );
        }
    }
}
