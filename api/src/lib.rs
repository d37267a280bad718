//! The contract of the Weft router's local API: HTTP/1 with JSON bodies on the Unix socket
//! `<state-dir>/weft.sock`. Both sides use this crate: the router serves these types, and the
//! `weft` CLI and the `weft-cni` plugin call it through [`client`]. It depends on neither the
//! router nor the gossip crate, so the plugin links only this and `weft-netlink`.
//!
//! | endpoint | request | answer |
//! |---|---|---|
//! | `GET /v1/status` | | [`status::Report`] |
//! | `GET /v1/macs` | | `Vec<`[`status::MacReport`]`>` |
//! | `POST /v1/connect`, `POST /v1/forget` | [`control::SeedRequest`] | [`control::SeedAnswer`] |
//! | `POST /v1/leave` | [`control::LeaveRequest`] | [`control::LeaveAnswer`] |
//! | `POST /v1/reload` | | [`control::ReloadAnswer`] |
//! | `POST /v1/ipam/allocate` | [`ipam::AllocateRequest`] | [`ipam::Allocation`] |
//! | `POST /v1/ipam/release` | [`ipam::Attachment`] | [`ipam::ReleaseAnswer`] |
//! | `POST /v1/ipam/gc` | [`ipam::GcRequest`] | [`ipam::GcAnswer`] |
//! | `GET /v1/ipam` | | [`ipam::IpamReport`] |
//! | `POST /v1/ports/guard` | [`guard::GuardRequest`] | [`guard::GuardAnswer`] |
//! | `POST /v1/trace` | [`trace::TraceRequest`] | [`trace::TraceAnswer`] |
//! | `POST /v1/trace/report` | [`trace::LiveReportRequest`] | [`trace::TraceAnswer`] |
//!
//! `weft doctor --json` prints a [`doctor::Report`] (no endpoint: the CLI makes the checks).
//!
//! A failed request answers with an HTTP error status and an [`ApiError`] body; what makes a
//! request body bad (HTTP 400) is decided in [`check`]. Fields are added
//! with `#[serde(default)]` so that a CLI or plugin of one version reads a router of the next.
#![deny(unsafe_code)]

pub mod check;
pub mod client;
pub mod control;
pub mod doctor;
mod error;
pub mod guard;
pub mod ipam;
pub mod policy;
pub mod status;
pub mod trace;

pub use client::{call, get, post, socket_path, SOCKET_NAME};
pub use error::{ApiError, Error};
