//! The API's one error enum, [`Error`] (why a call to the router failed), and [`ApiError`], the
//! body of every failed request.

use serde::{Deserialize, Serialize};
use std::io;
use std::path::PathBuf;

/// Why a request to the router's socket failed.
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
}

/// The body of every failed `/v1/ipam/*` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong, for a person.
    pub error: String,
    /// Whether trying again later can succeed (CNI error 11).
    pub retry: bool,
}
