//! Weft's Kubernetes source: it lists and watches the objects the router needs (namespaces,
//! pods, `networking.k8s.io/v1` NetworkPolicies and nodes) through `kube`'s
//! [`watcher`](kube::runtime::watcher), and hands them over as [`Event`]s in
//! [`weft_policy`]'s vocabulary ([`Object`](weft_policy::Object),
//! [`ObjectKey`](weft_policy::ObjectKey)).
//!
//! * [`run`] / [`Source`]: four watchers, one per [`Kind`], until the receiver is dropped.
//!   A (re)list arrives as one [`Event::Synced`] with every object of the kind; watch events
//!   arrive one by one as [`Event::Applied`] / [`Event::Deleted`]; a failing list or watch is
//!   reported as [`Event::Error`] and retried with backoff. A watch that breaks resumes from the
//!   last resourceVersion seen (bookmarks included); only a `410 Gone` makes it relist.
//! * [`client_from_env`]: the in-cluster configuration or `KUBECONFIG`.
//! * [`NodeAddrs`]: a node's `InternalIP` addresses (the router's mesh peers).
//! * `fake` (cargo feature `fake`): an in-process API server that speaks list and watch as a
//!   real one does, with controls for tests (compaction, broken watches, failures, counters).
//!
//! The design and what was and was not tested: `docs/kubernetes.md` ("The cluster's API").
#![deny(unsafe_code)]

mod backoff;
mod client;
mod error;
mod kind;
mod nodes;
mod source;

#[cfg(feature = "fake")]
pub mod fake;

pub use client::{client_from_env, client_from_kubeconfig};
pub use error::Error;
pub use kind::Kind;
/// The `kube` client crate, for callers that hold a [`kube::Client`].
pub use kube;
pub use nodes::{list_nodes, NodeAddrs};
pub use source::{run, Event, Source};

/// Whether this build can reach an API server over HTTPS: the workspace's `kube` entry has
/// `rustls-tls` with the `ring` provider. Set it to `false` if that feature is ever dropped,
/// and [`client_from_env`] refuses `https` servers with [`Error::TlsUnavailable`].
pub(crate) const TLS: bool = true;
