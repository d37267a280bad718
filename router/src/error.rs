//! The router library's one error enum: what the local API client and the pod-address
//! manager report. Everything else in this crate is daemon and tooling code that reports with
//! `anyhow` context.

use crate::ipam_api::ApiError;
use gossip::ipam::IpamError;
use std::io;
use std::path::PathBuf;

/// Why a request to the router's socket failed, or why the router refused an IPAM request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing answered: no socket, nobody listening, or no answer within the timeout. Trying
    /// again later may work.
    #[error(
        "cannot reach the weft router at {} (is `weft router --state-dir {}` running?): {source}",
        socket.display(),
        state_dir.display()
    )]
    Unreachable {
        /// The socket tried.
        socket: PathBuf,
        /// The state directory it belongs to.
        state_dir: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The router answered with an error status. A body that is not an [`ApiError`] (an
    /// endpoint this router does not have, say) becomes one with its text and `retry: false`.
    #[error("the router answered {status}: {}", answer.error)]
    Refused {
        /// The HTTP status code.
        status: u16,
        /// What the router said.
        answer: ApiError,
    },
    /// The router answered something that is not the expected HTTP or JSON.
    #[error("the router sent a malformed answer: {0}")]
    Malformed(String),
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
            Error::Refused { status, answer } => return (*status, answer.clone()),
            Error::Internal(_) | Error::Unreachable { .. } | Error::Malformed(_) => (500, false),
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
