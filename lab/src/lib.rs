//! A network-namespace lab: throwaway virtual clusters for the integration tests and `weft demo`.
//!
//! A [`Lab`] builds a small cluster out of Linux network namespaces on one machine:
//!
//! ```text
//!   <prefix>-ul           the underlay "switch": bridge `ul`, one port per host (named after it)
//!   <prefix>-<host>       a host: `eth0` = 10.200.0.<10+index>/24 on the underlay, a pod bridge
//!   <prefix>-<host>-<pod> a pod: `eth0` with the pod's address, its peer `v<host><pod>` on the
//!                         host's pod bridge (default `weft`)
//! ```
//!
//! The prefix is the caller's tag plus six random hex digits, so several labs (and several test
//! binaries) can run at once; every namespace and file the lab makes carries it, and its logs live
//! in `/tmp/weft-lab-<prefix>/`. Every link is created *inside* a namespace the lab made: the lab
//! never touches the root network namespace.
//!
//! The lab is test and demo tooling, so it drives the `ip` and `nft` commands (iproute2, nftables)
//! rather than netlink; a failing command becomes an error carrying its command line and stderr.
//!
//! Cleanup: dropping a [`Lab`] (also during a panic unwind) kills and reaps every process it
//! spawned, deletes its namespaces and removes its directory. Each live lab is also recorded in a
//! process-global registry so that [`cleanup_all`] (called by the handler that
//! [`install_signal_cleanup`] installs) can tear everything down when the process is interrupted.
//! Leftovers of a process that died without any chance to clean up (SIGKILL) can be removed with
//! [`cleanup_stale`].
//!
//! Setting `WEFT_LAB_KEEP=1` keeps the lab directory (the process logs) after the lab is dropped.
//!
//! Modules: [`Lab`] and its parts (this crate's root), cleanup of live and stale labs, helpers
//! ([`in_netns`], [`poll_until`], ...), and [`testbed`]: a cluster of real `weft router`
//! processes on a lab, with pod traffic helpers. Used by `weft demo`, the integration tests
//! (`tests/`) and the benches. Like a test harness it reports with `anyhow` (a decision in
//! `docs/decisions.md`).
#![deny(unsafe_code)]

mod cleanup;
mod lab;
pub mod testbed;
mod util;

pub use cleanup::{cleanup_all, cleanup_stale, install_signal_cleanup, list_netns};
pub use lab::*;
pub use util::{format_mac, host_if_name, in_netns, parse_mac, poll_until, require_root};
