//! NetworkPolicy input from a `--policy-dir` file or the kernel: any bytes as a YAML and as a
//! JSON manifest (`weft_policy::manifest::parse`), then what parses into the cluster model (every
//! object validated) and through the compiler and the ruleset writer with every pod local; and as
//! the kernel's JSON listing (`nft::from_json`). Nothing may panic; a ruleset read back from text
//! is written again without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::{BTreeMap, BTreeSet};
use weft_policy::{compile, manifest, nft, Cluster};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(rs) = nft::from_json(text) {
        let _ = nft::transaction(Some(&rs), &rs);
    }
    for file in ["f.yaml", "f.json"] {
        let Ok(objects) = manifest::parse(file, text) else {
            continue;
        };
        let mut c = Cluster::new();
        if c.replace_all(&objects).is_err() {
            continue;
        }
        let addresses: BTreeMap<_, _> = c
            .pods()
            .keys()
            .enumerate()
            .map(|(i, k)| (k.clone(), vec![std::net::IpAddr::from([10, 32, (i / 256) as u8, i as u8])]))
            .collect();
        let local: BTreeSet<_> = c.pods().keys().cloned().collect();
        let rules = compile(&c, &addresses, &local);
        let rs = nft::ruleset(&rules);
        let script = nft::transaction(None, &rs);
        assert!(script.contains(nft::TABLE));
    }
});
