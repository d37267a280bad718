//! The seed list, leaving and reloading: `POST /v1/connect`, `POST /v1/forget` ([`SeedRequest`]
//! -> [`SeedAnswer`]), `POST /v1/leave` ([`LeaveRequest`] -> [`LeaveAnswer`]) and
//! `POST /v1/reload` (-> [`ReloadAnswer`]).

use serde::{Deserialize, Serialize};

/// Body of `POST /v1/connect` and `/v1/forget`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedRequest {
    /// `ADDR[:PORT]`.
    pub addr: String,
}

/// Answer to `POST /v1/connect` and `/v1/forget`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedAnswer {
    /// The address, normalised.
    pub addr: String,
    /// Whether the seed list (or the dial targets) changed.
    pub changed: bool,
    /// The seed list now.
    pub seeds: Vec<String>,
}

/// Body of `POST /v1/leave`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LeaveRequest {
    /// Leave even though pods still hold addresses (they lose them).
    #[serde(default)]
    pub force: bool,
}

/// Answer to `POST /v1/leave`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LeaveAnswer {
    /// The blocks handed back.
    pub blocks: Vec<String>,
    /// Reservations dropped (with `--force`).
    pub reservations_dropped: usize,
}

/// Answer to `POST /v1/reload` (also what SIGHUP logs): the configuration (flags, environment,
/// file) read again and what of it took effect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadAnswer {
    /// What changed and was applied (`peer`, `log`, `policy-dir`, `secret file reread`).
    pub applied: Vec<String>,
    /// Options whose new value takes a restart, by flag name; the old values stay in force.
    pub needs_restart: Vec<String>,
    /// Why the configuration could not be read (then nothing changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
