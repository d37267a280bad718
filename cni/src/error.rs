//! The plugin's one error type: a CNI error (code, message, details), as the spec prints it.
//!
//! Codes 1-99 are the spec's well-known ones; 100 and up are Weft's (listed in `docs/cni.md`).

use serde::Serialize;
use std::fmt;

/// Incompatible CNI version.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// Unsupported field in the network configuration.
#[allow(dead_code)]
pub const UNSUPPORTED_FIELD: u32 = 2;
/// The container (its reservation or interface) is unknown.
pub const UNKNOWN_CONTAINER: u32 = 3;
/// Invalid necessary environment variables (`CNI_COMMAND`, `CNI_CONTAINERID`, ...).
pub const INVALID_ENV: u32 = 4;
/// I/O failure (reading stdin, writing a sysctl, ...).
pub const IO_FAILURE: u32 = 5;
/// The configuration on stdin is not JSON, or a part of it cannot be decoded.
pub const DECODE_FAILURE: u32 = 6;
/// The configuration is JSON but not a valid weft-cni configuration.
pub const INVALID_CONFIG: u32 = 7;
/// Try again later: the router does not answer, or says to retry.
pub const TRY_AGAIN_LATER: u32 = 11;
/// STATUS: the plugin cannot serve ADD now.
pub const NOT_AVAILABLE: u32 = 50;
/// The router refused the request for good (pod CIDR exhausted, IPAM off, ...).
pub const ROUTER_REFUSED: u32 = 100;
/// `CNI_NETNS` cannot be entered (it does not exist, or is not a network namespace).
pub const BAD_NETNS: u32 = 101;
/// Creating or configuring a link, address or route failed.
pub const LINK_FAILURE: u32 = 102;
/// CHECK: the attachment exists but differs from what it should be.
pub const CHECK_MISMATCH: u32 = 103;
/// The router's answer could not be understood (a router of another version?).
pub const ROUTER_PROTOCOL: u32 = 104;

/// A CNI error: what the plugin prints on stdout when an operation fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The CNI error code.
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// More details (may be empty).
    pub details: String,
}

impl Failure {
    /// A failure with an empty `details`.
    pub fn new(code: u32, msg: impl Into<String>) -> Failure {
        Failure {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// The same failure with `details`.
    pub fn details(mut self, details: impl Into<String>) -> Failure {
        self.details = details.into();
        self
    }

    /// The error object in the spec's form, for configuration version `version`.
    pub fn to_json(&self, version: &str) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            details: &'a str,
        }
        serde_json::to_string(&Wire {
            cni_version: version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        })
        .expect("strings always serialize")
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}
