//! The Weft host daemon as a library: the `weft` binary is a thin CLI over these modules.
//!
//! * [`daemon`]: `weft router`, wiring everything below together.
//! * [`dataplane`]: the per-packet thread between the TAP port and the UDP socket.
//! * [`fastpath`]: the kernel VXLAN fast path (device, probes, forwarding entries).
//! * [`ipam`]: pod addresses (reservations, gateways, masquerading) behind `weft-cni`.
//! * [`guard`]: anti-spoofing on the pods' bridge ports (nftables, bridge family).
//! * [`policy`]: Kubernetes NetworkPolicy (sources, the mesh's pod addresses, nftables).
//! * [`metrics`]: the Prometheus exposition of the status report.
//! * [`sys`]: the few system calls that need `unsafe` (TAP, poll, socket buffers).
//! * [`state`]: the state directory.
//! * [`trace`]: `weft trace`, the path between two endpoints explained from the router's state
//!   (pure; the daemon gathers the state).
//! * [`doctor`]: `weft doctor`, the host and peer checks (pure judging, thin gathering).
//! * [`demo`]: `weft demo`, on a lab of network namespaces (`weft-lab`).
//!
//! The API contract is the `weft-api` crate and netlink the `weft-netlink` crate, shared with
//! `weft-cni`; docs/architecture.md draws the crates and their allowed dependencies.

#![deny(unsafe_code)]

pub mod daemon;
pub mod dataplane;
pub mod demo;
pub mod doctor;
pub mod error;
pub mod fastpath;
pub mod guard;
pub mod ipam;
pub mod metrics;
pub mod policy;
pub mod probe;
pub mod state;
#[allow(unsafe_code)]
pub mod sys;
pub mod trace;

pub use error::Error;
