//! The router library's one error enum: why the pod-address manager refused a request, and
//! the API answer (status and [`ApiError`] body) each reason gets. Everything else in this crate
//! is daemon code that reports with `anyhow` context.

use gossip::ipam::IpamError;
use weft_api::ApiError;

/// Why the router refused an IPAM request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An IPAM request that is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The cluster refused or could not yet give a block.
    #[error(transparent)]
    Cluster(#[from] IpamError),
    /// Something on this host failed (the reservations file, netlink, nft).
    #[error("{0}")]
    Internal(String),
    /// `weft leave` while pods still hold addresses, or an ADD while leaving.
    #[error("{0}")]
    Busy(String),
}

impl Error {
    /// The HTTP status and body the API answers with.
    pub fn to_api(&self) -> (u16, ApiError) {
        let (status, retry) = match self {
            Error::BadRequest(_) => (400, false),
            Error::Cluster(e) if e.retryable() => (503, true),
            Error::Cluster(IpamError::Disabled) => (501, false),
            Error::Cluster(_) => (507, false),
            Error::Busy(_) => (409, false),
            Error::Internal(_) => (500, false),
        };
        (
            status,
            ApiError {
                error: self.to_string(),
                retry,
            },
        )
    }
}
