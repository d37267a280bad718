//! The port guard (anti-spoofing) between `weft-cni` and the router, and its status.
//!
//! * `POST /v1/ports/guard` [`GuardRequest`] -> [`GuardAnswer`]: the plugin names the host end of
//!   a pod's veth pair and the pod's MAC address, after it created the pair and before the host
//!   end joins the bridge. The attachment must hold a reservation (`POST /v1/ipam/allocate`
//!   first); the addresses the port may use come from that reservation, never from the request.
//!   From then on the bridge accepts from that port only what the pod may send (docs/security.md).
//!   Repeating the call replaces the port's previous entry (a new veth pair after a retried ADD).
//! * Releasing the reservation (`POST /v1/ipam/release`, `POST /v1/ipam/gc`) removes the guard.
//!
//! The status report carries a [`GuardReport`]: the guarded ports with their drop counters, and
//! the drops by reason.

use crate::ipam::Attachment;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A guarded bridge port, as kept with its reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    /// The host end of the pod's veth pair (a port of the bridge).
    pub name: String,
    /// The pod's MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
}

/// `POST /v1/ports/guard`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardRequest {
    /// The attachment whose reservation gives the port its addresses.
    #[serde(flatten)]
    pub attachment: Attachment,
    /// The port and the pod's MAC address.
    pub port: Port,
}

/// `POST /v1/ports/guard` answer: what the port may use as source from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardAnswer {
    /// The port.
    pub port: Port,
    /// Allowed IPv4 sources (and ARP senders).
    pub ipv4: Vec<Ipv4Addr>,
    /// Allowed IPv6 sources (and neighbour advertisement targets): the link-local address
    /// derived from the MAC address (EUI-64) and, later, the reserved IPv6 addresses.
    pub ipv6: Vec<Ipv6Addr>,
}

/// One guarded port in the status report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardedPort {
    /// Whose port it is.
    #[serde(flatten)]
    pub attachment: Attachment,
    /// The port and the pod's MAC address.
    pub port: Port,
    /// The pod's address (its IPv4 one on a dual-stack cluster).
    pub address: std::net::IpAddr,
    /// Its IPv6 address on a dual-stack cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<std::net::Ipv6Addr>,
    /// Frames from the pod that the guard dropped.
    pub dropped_packets: u64,
    /// Their bytes.
    pub dropped_bytes: u64,
}

/// The `guard` section of the status report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardReport {
    /// `on`, or what went wrong with the nftables table.
    pub state: String,
    /// The guarded ports.
    pub ports: Vec<GuardedPort>,
    /// Drops by reason, on every guarded port (see docs/security.md for the reasons).
    pub drops: BTreeMap<String, u64>,
    /// The flood limit of every guarded port, frames a second to broadcast and multicast
    /// destinations (0: no limit; `flood_limit` in `drops` counts what it dropped).
    #[serde(default)]
    pub flood_limit_pps: u32,
    /// Its burst.
    #[serde(default)]
    pub flood_limit_burst: u32,
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_reservation_without_a_port_reads_and_writes_as_before() {
        let old = r#"{"container_id":"c","ifname":"eth0","address":"10.32.0.2","netns":"/x"}"#;
        let r: crate::ipam::Reservation = serde_json::from_str(old).unwrap();
        assert_eq!(r.port, None);
        assert_eq!(serde_json::to_string(&r).unwrap(), old);
        let with: crate::ipam::Reservation = serde_json::from_str(
            r#"{"container_id":"c","ifname":"eth0","address":"10.32.0.2","port":{"name":"vw0123456789","mac":"02:00:00:00:00:01"}}"#,
        )
        .unwrap();
        assert_eq!(with.port.unwrap().name, "vw0123456789");
    }
}
