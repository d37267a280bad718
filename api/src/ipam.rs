//! The pod-address API between `weft-cni` and the router: the JSON bodies of the `/v1/ipam/*`
//! endpoints on the router's socket (`<state-dir>/weft.sock`, see [`crate::client`]).
//!
//! * `POST /v1/ipam/allocate` [`AllocateRequest`] -> [`Allocation`]. Idempotent: the same
//!   attachment (container id + interface name) gets the same address again.
//! * `POST /v1/ipam/release` [`Attachment`] -> [`ReleaseAnswer`]. Releasing what is not reserved
//!   succeeds with `released: false`.
//! * `POST /v1/ipam/gc` [`GcRequest`] -> [`GcAnswer`]: releases every reservation not listed.
//! * `GET /v1/ipam` -> [`IpamReport`]: readiness (for CNI STATUS) and every reservation (for
//!   CHECK).
//!
//! Failures answer with an HTTP error status and an [`ApiError`](crate::ApiError) body.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv6Addr};

/// One pod interface, as the container runtime names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Attachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

/// A pod's identity, from `K8S_POD_NAMESPACE` and `K8S_POD_NAME` in `CNI_ARGS` (as kubelet
/// passes them): what NetworkPolicy selects pods by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodRef {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
}

/// `POST /v1/ipam/allocate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocateRequest {
    /// Who the address is for.
    #[serde(flatten)]
    pub attachment: Attachment,
    /// `CNI_NETNS`, kept with the reservation for operators (not interpreted).
    #[serde(default)]
    pub netns: String,
    /// The pod's identity, when the runtime gave one (`None`: the pod belongs to no namespace
    /// and no policy selects it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
}

/// An address handed to a pod, and how the pod is to be wired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The pod's address: IPv4, or IPv6 on an IPv6-only pod network.
    pub address: IpAddr,
    /// Its prefix length: the whole pod CIDR's, since every pod is on one L2 segment.
    pub prefix_len: u8,
    /// The default gateway: the host bridge's address in the pod's block.
    pub gateway: IpAddr,
    /// The pod CIDR, `A.B.C.D/N`.
    pub cidr: String,
    /// The pod MTU the router computed.
    pub mtu: u32,
    /// The bridge to attach the host end to.
    pub bridge: String,
    /// The pod's IPv6 address on a dual-stack cluster (a second, IPv6 `--pod-cidr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Assignment>,
}

impl Allocation {
    /// Every address of the pod: `address` first, then IPv6 on a dual-stack cluster.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut v = vec![self.address];
        v.extend(self.ipv6.as_ref().map(|s| IpAddr::V6(s.address)));
        v
    }
}

/// A pod's IPv6 address on a dual-stack cluster. It is mapped from the pod's IPv4 address (the
/// IPv6 pod CIDR's first address plus the IPv4 address's offset in the IPv4 pod CIDR), so the
/// IPv4 agreement makes it unique too, and a pod gets both addresses or neither.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv6Assignment {
    /// The pod's IPv6 address.
    pub address: Ipv6Addr,
    /// Its prefix length: the IPv6 pod CIDR's.
    pub prefix_len: u8,
    /// The IPv6 default gateway: the bridge's IPv6 address in the pod's block.
    pub gateway: Ipv6Addr,
    /// The IPv6 pod CIDR.
    pub cidr: String,
}

/// A reservation, as `GET /v1/ipam` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Who holds it.
    #[serde(flatten)]
    pub attachment: Attachment,
    /// The address: IPv4, or IPv6 on an IPv6-only pod network.
    pub address: IpAddr,
    /// The netns path given at ADD.
    #[serde(default)]
    pub netns: String,
    /// The guarded bridge port of the pod (`POST /v1/ports/guard`), once ADD has registered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<crate::guard::Port>,
    /// The pod's identity given at ADD, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// The IPv6 address on a dual-stack cluster (mapped from `address`, see [`Ipv6Assignment`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
}

impl Reservation {
    /// Every address of the pod: `address` first, then IPv6 on a dual-stack cluster.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut v = vec![self.address];
        v.extend(self.ipv6.map(IpAddr::V6));
        v
    }
}

/// `POST /v1/ipam/release` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseAnswer {
    /// Whether a reservation existed (and is now gone).
    pub released: bool,
}

/// `POST /v1/ipam/gc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRequest {
    /// Attachments still in use; every other reservation is released.
    pub keep: Vec<Attachment>,
}

/// `POST /v1/ipam/gc` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcAnswer {
    /// What was released.
    pub released: Vec<Reservation>,
}

/// `GET /v1/ipam`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamReport {
    /// Whether an ADD can be served now (an address is free in a held block, or a new block can be
    /// agreed).
    pub ready: bool,
    /// Why not, when not ready.
    #[serde(default)]
    pub reason: String,
    /// The pod CIDR (empty when IPAM is off).
    pub cidr: String,
    /// The IPv6 pod CIDR on a dual-stack cluster (empty otherwise).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cidr6: String,
    /// The bridge pods attach to.
    pub bridge: String,
    /// The pod MTU.
    pub mtu: u32,
    /// This host's reservations.
    pub reservations: Vec<Reservation>,
}
