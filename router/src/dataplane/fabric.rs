//! The router's side of the fabric: its peer entry ([`PeerEntry`]: the engine's view of a peer
//! plus the router's per-peer data, counters and encryption session) and [`Fabric`], the
//! engine's fabric over those entries. Routes, broadcast trees and lookups live in
//! [`vswitch::engine::fabric`].

use super::PeerCounters;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use vswitch::engine::Peer;
use vswitch::{PeerName, Session};

/// What the data plane needs to forward: the peers, the next hop to each, and the broadcast
/// trees ([`vswitch::engine::Fabric`] over [`PeerEntry`]). Built by the control plane from the
/// topology and replaced as a whole when it changes.
pub type Fabric = vswitch::engine::Fabric<PeerEntry>;

/// A peer the data plane knows: directly connected, or reachable through a relay.
#[derive(Debug, Clone)]
pub struct PeerEntry {
    /// Its name.
    pub name: PeerName,
    /// Where its sleeve datagrams go when it is a direct neighbour.
    pub udp_addr: Option<SocketAddr>,
    /// Its counters.
    pub counters: Arc<PeerCounters>,
    /// The encryption session with this neighbour (encrypted clusters, untrusted paths).
    pub session: Option<Arc<Mutex<Session>>>,
    /// This neighbour is reached through the kernel VXLAN fast path: broadcasts and unknown
    /// unicast reach it through the VXLAN device's flood list, so the sleeve must not flood to it.
    pub fast: bool,
}

impl Peer for PeerEntry {
    fn name(&self) -> PeerName {
        self.name
    }

    fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    fn fast(&self) -> bool {
        self.fast
    }

    fn encrypts(&self) -> bool {
        self.session.is_some()
    }

    fn aead(&self) -> Option<vswitch::Aead> {
        self.session
            .as_ref()
            .and_then(|s| s.lock().unwrap_or_else(|p| p.into_inner()).aead())
    }
}
