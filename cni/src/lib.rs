//! The pure part of `weft-cni`: what the plugin reads and prints, without netlink, namespaces or
//! the router's socket. The binary (`main.rs`) uses it for every input; it is a library so that
//! the fuzz targets (`fuzz/fuzz_targets/cni_config.rs`) reach the same parsers the runtime feeds.
//!
//! * [`config::parse`]: the network configuration on stdin, `prevResult` included (error codes
//!   6, 7 and 1);
//! * [`result::CniResult`]: CNI results per version, [`CniResult::from_value`](result::CniResult::from_value)
//!   for a `prevResult`;
//! * [`env::Env`]: the `CNI_*` variables, checked (code 4);
//! * [`version`]: the versions spoken; [`error`]: CNI errors.
//!
//! With default features off (`plugin`), the crate builds without `weft-netlink`, `tokio` and
//! `nix`, which only the binary needs.

#![forbid(unsafe_code)]

pub mod config;
pub mod env;
pub mod error;
pub mod result;
pub mod version;
