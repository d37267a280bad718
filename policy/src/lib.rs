//! Weft's NetworkPolicy compiler: a pure library (no I/O, no threads, no clock) that takes the
//! cluster's objects (namespaces, pods, `networking.k8s.io/v1` NetworkPolicies) and the pod
//! addresses the mesh knows, and returns what one host must enforce for its local pods, as an
//! nftables ruleset and as the smallest transaction from the ruleset in force to the new one.
//!
//! * [`object`]: the objects a source delivers ([`Object`], Kubernetes' own types from
//!   `k8s-openapi`) and their keys.
//! * [`manifest`]: YAML/JSON documents (a `--policy-dir` file) to objects.
//! * [`model`]: the validated cluster state ([`Cluster`]); an invalid object is refused with an
//!   [`Error`] and the previous state stays.
//! * [`reference`](mod@reference): the reference evaluator, straight from the Kubernetes definitions: may this
//!   endpoint reach that one on this port?
//! * [`compile`](mod@compile): cluster + addresses + local pods -> [`HostRules`].
//! * [`nft`]: [`HostRules`] -> the ruleset of `table inet weft_policy`, and the transaction from
//!   one ruleset to another.
#![deny(unsafe_code)]

pub mod compile;
mod error;
pub mod manifest;
pub mod model;
pub mod nft;
pub mod object;
pub mod reference;
mod validate;

pub use compile::{compile, HostRules};
pub use error::Error;
pub use k8s_openapi;
pub use model::Cluster;
#[cfg(test)]
mod tests;

pub use object::{Object, ObjectKey, PodKey};
