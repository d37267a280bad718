//! The pure rules of the mesh: which connections to keep, and how long to wait before dialling
//! again. No I/O and no clock: the driver passes facts in and acts on the answers.

use crate::proto::Hello;
use crate::{Error, PeerName};
use std::collections::HashMap;
use std::time::Duration;

/// Identifies one TCP connection inside the driver.
pub type ConnId = u64;

/// What the mesh knows about a live, handshaken connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn {
    /// The driver's id for it.
    pub id: ConnId,
    /// The remote peer's run id.
    pub uid: u64,
    /// True when we dialled.
    pub outbound: bool,
}

/// The live connections, one per remote peer.
#[derive(Debug)]
pub struct Mesh {
    ours: PeerName,
    our_uid: u64,
    conns: HashMap<PeerName, Conn>,
}

/// What [`Mesh::admit`] decided for a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// A new peer.
    New,
    /// The peer had another connection, which the new one replaces: the driver closes `old`.
    Replaces {
        /// The connection to close.
        old: ConnId,
    },
}

impl Mesh {
    /// An empty mesh for the peer `ours` in its run `our_uid`.
    pub fn new(ours: PeerName, our_uid: u64) -> Self {
        Mesh {
            ours,
            our_uid,
            conns: HashMap::new(),
        }
    }

    /// Decides whether a connection whose handshake just completed is kept.
    ///
    /// Refused: a connection to ourselves (same name and run id), another host with our name, and
    /// a duplicate that loses the tie-break. Between two live connections to the same peer in the
    /// same run, the one dialled by the peer with the lower name wins, so both ends keep the same
    /// one. A connection from a new run of the peer (another uid) always replaces the old one.
    pub fn admit(&mut self, id: ConnId, hello: &Hello, outbound: bool) -> Result<Admitted, Error> {
        let theirs = hello.peer_name();
        if theirs == self.ours {
            return Err(if hello.uid == self.our_uid {
                Error::SelfConnection
            } else {
                Error::NameCollision(theirs)
            });
        }
        if theirs.is_broadcast() {
            return Err(Error::Protocol("peer name 0 is reserved"));
        }
        let new = Conn {
            id,
            uid: hello.uid,
            outbound,
        };
        let Some(old) = self.conns.get(&theirs) else {
            self.conns.insert(theirs, new);
            return Ok(Admitted::New);
        };
        let keep_new = if old.uid != hello.uid || old.outbound == outbound {
            // The peer restarted, or we (or it) redialled: the newer connection is the live one.
            true
        } else {
            // Simultaneous dials: keep the one dialled by the lower name.
            (self.ours < theirs) == outbound
        };
        if keep_new {
            let old_id = old.id;
            self.conns.insert(theirs, new);
            Ok(Admitted::Replaces { old: old_id })
        } else {
            Err(Error::Duplicate(theirs))
        }
    }

    /// Forgets connection `id`; returns the peer if it was that peer's current connection (the
    /// peer is now disconnected).
    pub fn remove(&mut self, peer: PeerName, id: ConnId) -> bool {
        if self.conns.get(&peer).is_some_and(|c| c.id == id) {
            self.conns.remove(&peer);
            true
        } else {
            false
        }
    }

    /// The live connection to `peer`.
    pub fn get(&self, peer: PeerName) -> Option<&Conn> {
        self.conns.get(&peer)
    }

    /// Number of connected peers.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True when no peer is connected.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

/// First retry delay after a failed dial.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Delay before dial attempt number `failures` (1 after the first failure): doubling from
/// [`BACKOFF_INITIAL`] up to [`BACKOFF_MAX`], scaled by `jitter` in `[0.8, 1.2]` so that peers
/// that failed together do not retry in lockstep. `unit` in `[0, 1)` picks the jitter.
pub fn backoff(failures: u32, unit: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = BACKOFF_INITIAL.saturating_mul(1u32 << exp).min(BACKOFF_MAX);
    let jitter = 0.8 + 0.4 * unit.clamp(0.0, 1.0);
    base.mul_f64(jitter).min(BACKOFF_MAX.mul_f64(1.2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Hello, MAX_VERSION, MIN_VERSION, PROTOCOL};

    fn hello(name: u64, uid: u64) -> Hello {
        Hello {
            protocol: PROTOCOL.into(),
            min_version: MIN_VERSION,
            max_version: MAX_VERSION,
            name,
            uid,
            nickname: String::new(),
            udp_port: 6783,
            pod_mtu: 1436,
            pod_cidr: None,
            pod_cidr6: None,
            block_prefix: None,
            key: None,
            sig: None,
            time_ms: None,
            ciphers: Vec::new(),
        }
    }

    #[test]
    fn refuses_self_and_collisions() {
        let mut m = Mesh::new(PeerName(5), 99);
        assert!(matches!(
            m.admit(1, &hello(5, 99), true),
            Err(Error::SelfConnection)
        ));
        assert!(matches!(
            m.admit(2, &hello(5, 7), false),
            Err(Error::NameCollision(_))
        ));
        assert!(m.is_empty());
    }

    #[test]
    fn simultaneous_dials_resolve_the_same_way_on_both_ends() {
        // Peer 1 and peer 2 dial each other at once. Connection "a" is dialled by 1, "b" by 2.
        for order in [[true, false], [false, true]] {
            let mut one = Mesh::new(PeerName(1), 10);
            let mut two = Mesh::new(PeerName(2), 20);
            // On peer 1, "a" is outbound and "b" inbound; on peer 2 the reverse.
            let mut kept_one = None;
            let mut kept_two = None;
            for first_is_a in order {
                let (id, out_on_one) = if first_is_a {
                    (100, true)
                } else {
                    (200, false)
                };
                if one.admit(id, &hello(2, 20), out_on_one).is_ok() {
                    kept_one = Some(id);
                }
                if two.admit(id, &hello(1, 10), !out_on_one).is_ok() {
                    kept_two = Some(id);
                }
            }
            assert_eq!(
                one.get(PeerName(2)).unwrap().id,
                100,
                "lower name's dial wins"
            );
            assert_eq!(two.get(PeerName(1)).unwrap().id, 100);
            assert!(kept_one.is_some() && kept_two.is_some());
        }
    }

    #[test]
    fn restarted_peer_replaces_old_connection() {
        let mut m = Mesh::new(PeerName(1), 10);
        assert_eq!(m.admit(1, &hello(2, 20), false).unwrap(), Admitted::New);
        assert_eq!(
            m.admit(2, &hello(2, 21), false).unwrap(),
            Admitted::Replaces { old: 1 }
        );
        assert!(
            !m.remove(PeerName(2), 1),
            "the replaced connection no longer counts"
        );
        assert!(m.remove(PeerName(2), 2));
        assert!(m.is_empty());
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        assert_eq!(backoff(1, 0.5), Duration::from_millis(500));
        assert_eq!(backoff(2, 0.5), Duration::from_secs(1));
        assert_eq!(backoff(3, 0.5), Duration::from_secs(2));
        assert_eq!(backoff(40, 0.5), BACKOFF_MAX);
        assert!(backoff(40, 1.0) <= Duration::from_secs(12));
        assert!(backoff(1, 0.0) >= Duration::from_millis(400));
    }
}
