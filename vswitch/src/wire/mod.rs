//! Checked wire formats. Every format has a `Packet<T: AsRef<[u8]>>`-style view with
//! `new_checked`; once checked, no accessor panics. Formats with fields to write also have a
//! `Repr` with `parse` and `emit`.
//!
//! [`ethernet`] and [`sleeve`] are on every frame's path; [`heartbeat`] is the body of the
//! sleeve's liveness probes; [`vxlan`] is the header of frames handed to a peer's kernel VXLAN
//! device; [`ipv4`], [`ipv6`], [`icmp`] and [`checksum`] exist to answer frames too big for the
//! overlay with ICMP.

pub mod checksum;
pub mod ethernet;
pub mod flow;
pub mod heartbeat;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod sleeve;
pub mod vxlan;

pub use ethernet::{EtherType, EthernetFrame, EthernetRepr, MacAddr};
pub use flow::FlowRepr;
pub use heartbeat::{Caps, HeartbeatPacket, HeartbeatRepr};
pub use icmp::{too_big_reply, TooBig};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Packet, Ipv6Repr};
pub use sleeve::{PeerName, SleeveDatagram, SleeveHeader, SleeveKind};
pub use vxlan::{VxlanPacket, VxlanRepr};

/// Why bytes could not be parsed. Cheap and `Copy`: used on the per-packet path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the format requires.
    #[error("truncated")]
    Truncated,
    /// A field holds a value the format does not allow.
    #[error("malformed")]
    Malformed,
    /// The format's version is not one this build speaks.
    #[error("unsupported version")]
    UnsupportedVersion,
    /// The output buffer is too small for what was to be emitted.
    #[error("buffer too small")]
    BufferTooSmall,
}

/// Result alias for wire parsing.
pub type Result<T> = core::result::Result<T, Error>;
