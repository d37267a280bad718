//! Cluster IPAM: the pod CIDR split into per-host blocks, agreed through the mesh with no central
//! store.
//!
//! This module owns which host holds which block: the public types, and [`Ipam`], a sans-IO state
//! machine (messages and `now` in, messages to send out; it never sleeps, spawns, logs or touches
//! files) that the tokio driver ([`crate::driver`]) feeds. Addresses inside a block are the
//! holding host's business (the router's reservations), not this module's. `docs/ipam.md`
//! describes the protocol and argues why two hosts never hold the same block.
//!
//! - [`block`]: [`Block`], a prefix of the pod CIDR, and its text form.
//! - [`config`]: [`IpamConfig`] (the CIDR and the block size) and [`IpamError`].
//! - [`record`]: what peers exchange and persist: [`IpamRecord`], [`IpamMsg`], [`IpamState`].
//! - [`machine`]: the [`Ipam`] state machine, its construction, queries and the claim calls.
//! - [`rules`]: the agreement rules: votes, claims won or lost, reclaims ([`reclaimed_set`]).
//! - [`sync`]: flooding, anti-entropy and acknowledgements between neighbours.
//! - [`status`]: what `weft status` shows ([`IpamStatus`]).
//! - [`checks`]: what a received record must pass, and the counters of what was refused
//!   ([`IpamRejects`]).

pub mod block;
pub mod checks;
pub mod config;
pub mod machine;
pub mod record;
pub mod rules;
#[cfg(test)]
mod signing_tests;
pub mod status;
pub mod sync;
#[cfg(test)]
mod tests;

pub use block::{BadBlock, Block};
pub use checks::IpamRejects;
pub use config::{IpamConfig, IpamError};
pub use machine::{ClaimState, Ipam, IpamOut};
pub use record::{Claim, IpamMsg, IpamRecord, IpamState, MAX_STAMP};
pub use rules::reclaimed_set;
pub use status::{HostBlocks, IpamStatus};
pub use sync::{CHUNK_BYTES, DIGEST_INTERVAL, OTHERS_PERSIST_DELAY};
