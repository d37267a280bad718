//! The seed list and leaving: `POST /v1/connect`, `POST /v1/forget` ([`SeedRequest`] ->
//! [`SeedAnswer`]) and `POST /v1/leave` ([`LeaveRequest`] -> [`LeaveAnswer`]).

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
