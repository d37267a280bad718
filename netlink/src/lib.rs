//! Weft's netlink wrapper, shared by the router and the CNI plugin: links (with their bridge port
//! state), the host bridge, the router's TAP port on it, veth pairs ([`link`]); addresses, the
//! underlay MTU and IPv4 default routes ([`addr`]); and, apart, the kernel VXLAN device of the
//! fast path ([`vxlan`]), the forwarding databases ([`fdb`]), and the packets nftables rules log
//! to a netfilter log group ([`nflog`], the router reads NetworkPolicy denials there).
//!
//! A [`Netlink`] works in the network namespace of the thread that opened it: the router's own
//! (the host), or a pod's for the CNI plugin, which opens one on a thread that entered the pod's
//! namespace. Every call is one or a few rtnetlink requests; errors say what was being done and
//! end with what the kernel said ([`Error`]).
#![deny(unsafe_code)]

pub mod addr;
mod error;
pub mod fdb;
pub mod link;
pub mod nflog;
pub mod vxlan;

pub use addr::DefaultRoute;
pub use error::{Error, Result};
pub use fdb::{FdbEntry, FdbTable};
pub use link::{LinkCounters, LinkInfo};
/// A link's kind and a bridge port's state, as the kernel reports them.
pub use rtnetlink::packet_route::link::{BridgePortState, InfoKind};
pub use vxlan::VxlanParams;

use error::Context;
use rtnetlink::Handle;
use std::future::Future;

/// The errno of a refusal by the kernel (`ENODEV`, `EEXIST`, ...), if `e` is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// A netlink connection (its I/O task runs on the current tokio runtime).
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens the connection, in the calling thread's network namespace; its I/O task is spawned
    /// on the current tokio runtime.
    pub fn connect() -> Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// Like [`Netlink::connect`], with strict checking of requests (`NETLINK_GET_STRICT_CHK`):
    /// the kernel then honours the filters of dump requests (a forwarding database dump for one
    /// port, [`Netlink::fdb_port_entries`]) instead of ignoring them, and refuses what it does
    /// not understand. A connection of its own also keeps one user's long dumps from queueing
    /// behind another's.
    pub fn connect_strict() -> Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection_with_strict_check()
            .context("opening a strict netlink socket")?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }
}

/// Runs `f` with a new netlink connection on a new single-threaded tokio runtime, blocking the
/// calling thread until it finishes. The socket belongs to the calling thread's network
/// namespace, so together with a thread that entered a namespace (`weft_lab::in_netns`) this
/// configures links inside it from code that is not async (the CNI plugin, tests, tools).
pub fn block_on<T, E, F, Fut>(f: F) -> std::result::Result<T, E>
where
    E: From<Error>,
    F: FnOnce(Netlink) -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a tokio runtime")?;
    rt.block_on(async move {
        let nl = Netlink::connect()?;
        f(nl).await
    })
}
