//! Weft's pure switching core.
//!
//! This crate owns everything a frame meets between the TAP port and the UDP socket that does not
//! need the operating system: checked wire formats ([`wire`]), the MAC table ([`fdb`]), the
//! forwarding decision ([`switch`]), the sleeve's protocol decisions ([`engine`]: receive, relay,
//! broadcast trees, heartbeats), the sleeve framing ([`sleeve`]) and its encryption
//! ([`session`]), and the TAP offloads (virtio-net header, GSO and GRO: [`offload`]). It does no I/O, never sleeps, spawns or logs: callers pass bytes and the current
//! time in and get decisions back.
#![forbid(unsafe_code)]

pub mod engine;
pub mod fdb;
pub mod offload;
pub mod session;
pub mod sleeve;
pub mod switch;
pub mod wire;

pub use fdb::{Fdb, Location};
pub use session::{Aead, CryptoError, Key, Opener, RekeyPolicy, Sealer, Session};
pub use switch::{Decision, DropReason, Switch};
pub use wire::{MacAddr, PeerName};
