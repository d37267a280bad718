//! The Weft host daemon as a library: the `weft` binary is a thin CLI over these modules.
//!
//! * [`daemon`]: `weft router`, wiring everything below together.
//! * [`dataplane`]: the per-packet threads between the TAP port and the UDP socket.
//! * [`netlink`]: bridge and TAP configuration through rtnetlink.
//! * [`ipam`] and [`ipam_api`]: pod addresses (reservations, gateways, masquerading) and the
//!   JSON the CNI plugin speaks.
//! * [`sys`]: the few system calls that need `unsafe` (TAP, poll, socket buffers).
//! * [`api`] and [`status`]: the local API socket and what `weft status` shows.
//! * [`state`]: the state directory.
//! * [`lab`] and [`demo`]: throwaway clusters of network namespaces for tests and `weft demo`.

#![deny(unsafe_code)]

pub mod api;
pub mod daemon;
pub mod dataplane;
pub mod demo;
pub mod error;
pub mod fastpath;
pub mod ipam;
pub mod ipam_api;
pub mod lab;
pub mod metrics;
pub mod netlink;
pub mod state;
pub mod status;
#[allow(unsafe_code)]
pub mod sys;
pub mod testbed;

pub use error::Error;
