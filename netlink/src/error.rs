//! The crate's one error type, and the `context` helpers its modules use to say what they were
//! doing when the kernel refused.

use std::io;

/// A netlink operation that failed. Its `Display` says what was being done; its
/// [`source`](std::error::Error::source) chain ends with what the kernel (or the socket) said.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The netlink exchange failed or the kernel refused the request.
    #[error(transparent)]
    Kernel(#[from] rtnetlink::Error),
    /// A socket or runtime error (opening the socket, a refusal read as an errno).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A link or address the operation needs does not exist.
    #[error("{0}")]
    NotFound(String),
    /// What was being done when `source` happened.
    #[error("{what}")]
    Context {
        /// The operation, for a person ("creating bridge weft").
        what: String,
        /// Why it failed.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// The errno of the kernel's refusal, if this error (or the one it wraps) is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel(e) => crate::errno(e),
            Error::Io(e) => e.raw_os_error(),
            Error::NotFound(_) => None,
            Error::Context { source, .. } => source.errno(),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds what was being done to an error, or turns a missing value into [`Error::NotFound`].
pub(crate) trait Context<T> {
    /// With a fixed description.
    fn context(self, what: &str) -> Result<T>;
    /// With a description made only on failure.
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: &str) -> Result<T> {
        self.with_context(|| what.to_owned())
    }
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Context {
            what: what(),
            source: Box::new(e.into()),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: &str) -> Result<T> {
        self.ok_or_else(|| Error::NotFound(what.to_owned()))
    }
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.ok_or_else(|| Error::NotFound(what()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_kernel_errno_at_the_end_of_the_chain() {
        let refused: std::result::Result<(), io::Error> =
            Err(io::Error::from_raw_os_error(libc::EEXIST));
        let e = refused.context("adding an address").unwrap_err();
        assert_eq!(e.to_string(), "adding an address");
        assert_eq!(e.errno(), Some(libc::EEXIST));
        let inner = std::error::Error::source(&e).unwrap();
        assert!(inner.to_string().contains("exists"), "{inner}");
        let missing = None::<u32>
            .with_context(|| "no link eth9".into())
            .unwrap_err();
        assert!(matches!(missing, Error::NotFound(ref m) if m == "no link eth9"));
        assert_eq!(missing.errno(), None);
    }
}
