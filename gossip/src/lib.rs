//! Weft's control plane.
//!
//! Peers talk over TCP (port 6783 by default). This crate owns what they say and what they make of
//! it: the message formats and their framing ([`proto`]), the pure handshake and connection rules
//! ([`mesh`]), the sleeve's AEAD per neighbour pair ([`cipher`]), the topology gossip ([`core`]), the cluster IPAM agreement ([`ipam`]), and a thin
//! tokio driver ([`driver`]) that dials seeds, accepts connections, runs the handshake and
//! heartbeats, and reports peers coming and going as [`driver::Event`]s.
//!
//! The pure parts take bytes and decisions in and return results; they never sleep, spawn or log.
//! Only the driver does I/O.
#![forbid(unsafe_code)]

pub mod cipher;
pub mod core;
pub mod driver;
pub mod ipam;
pub mod mesh;
pub mod proto;
pub mod routes;
pub mod secure;
pub mod sign;
pub mod topology;
pub mod trace;

pub use vswitch::PeerName;

/// Everything that can go wrong in the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A message's length prefix exceeds [`proto::MAX_MESSAGE_LEN`].
    #[error("message of {0} bytes exceeds the {max} byte limit", max = proto::MAX_MESSAGE_LEN)]
    MessageTooLarge(usize),
    /// A message body that does not decode.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The other side is not a Weft peer (wrong protocol tag).
    #[error("not a weft peer (protocol tag {0:?})")]
    NotWeft(String),
    /// No protocol version both sides speak.
    #[error("incompatible protocol versions: we speak {our_min}..={our_max}, the peer speaks {their_min}..={their_max}")]
    IncompatibleVersion {
        /// Lowest version we speak.
        our_min: u16,
        /// Highest version we speak.
        our_max: u16,
        /// Lowest version the peer speaks.
        their_min: u16,
        /// Highest version the peer speaks.
        their_max: u16,
    },
    /// We connected to ourselves (the seed list names one of our own addresses).
    #[error("connection to self (this address is our own)")]
    SelfConnection,
    /// Another peer uses our name (a copied state directory?).
    #[error("peer name {0} collision: another host uses our name (copied state directory?)")]
    NameCollision(PeerName),
    /// We already have a connection to this peer that wins the tie-break.
    #[error("duplicate connection to {0}; keeping the other one")]
    Duplicate(PeerName),
    /// The first message was not a hello, or a hello came twice.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// The peer failed to prove it holds the cluster secret.
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// One side has a secret and the other has not.
    #[error("encryption mismatch: we run {ours}, the peer runs {theirs}")]
    EncryptionMismatch {
        /// Our mode.
        ours: &'static str,
        /// The peer's mode.
        theirs: &'static str,
    },
    /// The peer runs IPAM with another pod CIDR or block size, or one side runs it and the
    /// other does not.
    #[error("IPAM mismatch: we run {ours}, the peer runs {theirs}; every host needs the same --pod-cidr and block size")]
    IpamMismatch {
        /// Our setting.
        ours: String,
        /// The peer's setting.
        theirs: String,
    },
    /// No AEAD both sides offer for the sleeve (a `--cipher` pin the peer cannot meet: another
    /// pin, or a router older than the negotiation, which seals with ChaCha20-Poly1305 only).
    #[error("no cipher in common: this host offers {ours}, the peer offers {theirs} (see --cipher; routers before the negotiation offer chacha20-poly1305 only)")]
    NoCommonCipher {
        /// Our offer, in preference order.
        ours: String,
        /// The peer's offer.
        theirs: String,
    },
    /// The peer's hello names a peer whose host key we know, with another key or without one.
    #[error("peer name {name} is bound to another host key: {why} (a host impersonating it, or its host-key file was replaced: docs/security.md)")]
    WrongHostKey {
        /// The name the hello claims.
        name: PeerName,
        /// What was wrong.
        why: &'static str,
    },
    /// The peer's hello carries a signature that does not verify over this connection.
    #[error("the peer's hello signature does not verify for this connection")]
    BadHelloSignature,
    /// The peer's hello is unsigned and we require signatures (`--require-signed-records`).
    #[error("the peer does not sign (a router of an older version?) and --require-signed-records is set")]
    UnsignedHello,
    /// The IPAM configuration is unusable.
    #[error("bad IPAM configuration: {0}")]
    IpamConfig(String),
    /// The peer closed the connection or went silent.
    #[error("{0}")]
    Closed(String),
    /// The peer said goodbye.
    #[error("peer closed the connection: {0}")]
    Goodbye(String),
    /// An I/O error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Errors after which dialling the same address again is pointless until something changes
    /// (the operator fixes the configuration): the connector stops retrying in a loop.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Error::SelfConnection
                | Error::NameCollision(_)
                | Error::IncompatibleVersion { .. }
                | Error::NotWeft(_)
        )
    }
}
