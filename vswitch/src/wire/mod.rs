//! Checked wire formats. Every format has a `Packet<T: AsRef<[u8]>>`-style view with
//! `new_checked`; once checked, no accessor panics.

pub mod ethernet;
pub mod icmp;
pub mod sleeve;

pub use ethernet::{EtherType, EthernetFrame, MacAddr};
pub use sleeve::{PeerName, SleeveHeader, SleeveKind};

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
