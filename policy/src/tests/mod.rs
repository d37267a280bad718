//! The crate's tests: literal cases per module, the ruleset interpreter, and the property
//! tests holding the compiler (through the generated nftables ruleset) to the reference
//! evaluator.

mod compile;
#[allow(dead_code)]
mod interp;
mod manifest;
mod model;
mod nft;
mod props;
mod reference;

use crate::{Cluster, Object, PodKey};

/// The objects of a YAML text (panics on error).
pub fn objects(yaml: &str) -> Vec<Object> {
    crate::manifest::parse("test.yaml", yaml).unwrap()
}

/// A cluster of the objects of a YAML text (panics on error).
pub fn cluster(yaml: &str) -> Cluster {
    let mut c = Cluster::new();
    c.replace_all(&objects(yaml)).unwrap();
    c
}

/// `namespace/name` to a key.
pub fn key(s: &str) -> PodKey {
    let (namespace, name) = s.split_once('/').unwrap();
    PodKey {
        namespace: namespace.into(),
        name: name.into(),
    }
}
