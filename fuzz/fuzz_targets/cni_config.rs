//! The network configuration a container runtime gives `weft-cni` on stdin, `prevResult`
//! included, and the `CNI_*` variables: arbitrary bytes must be refused with a CNI error code,
//! never a panic. What parses holds: the version is one the plugin speaks, the error JSON is
//! valid, and a `prevResult` prints in every version and reads back as itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use weft_cni::config;
use weft_cni::env::Env;
use weft_cni::result::CniResult;
use weft_cni::version::{self, Version, SUPPORTED_VERSIONS};

const VERSIONS: [Version; 3] = [Version::V0_4_0, Version::V1_0_0, Version::V1_1_0];

fuzz_target!(|data: &[u8]| {
    let hint = version::version_hint(data);
    match config::parse(data) {
        Ok(cfg) => {
            assert!(SUPPORTED_VERSIONS.contains(&cfg.version.as_str()));
            assert_eq!(hint, Some(cfg.version));
            assert!(!cfg.state_dir.as_os_str().is_empty());
            assert!(cfg.mtu.is_none_or(|m| (68..=65535).contains(&m)));
            if let Some(prev) = &cfg.prev_result {
                round_trip(prev);
            }
        }
        Err(f) => {
            assert!(matches!(f.code, 1 | 6 | 7), "code {}", f.code);
            let v: Value = serde_json::from_str(&f.to_json(Version::V1_1_0.as_str())).unwrap();
            assert_eq!(v["code"], f.code);
        }
    }
    // Any JSON value as a prevResult on its own.
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        if let Ok(r) = CniResult::from_value(&v) {
            round_trip(&r);
        }
    }
    // The same bytes as the variables (split at NUL): checked, never trusted.
    if let Ok(s) = std::str::from_utf8(data) {
        let mut parts = s
            .split('\0')
            .map(|p| Some(p.to_owned()).filter(|p| !p.is_empty()));
        let env = Env {
            command: parts.next().flatten(),
            container_id: parts.next().flatten(),
            netns: parts.next().flatten(),
            ifname: parts.next().flatten(),
            args: parts.next().flatten(),
        };
        // CNI_ARGS: a pod identity that passes is a Kubernetes name pair.
        if let Ok(Some(pod)) = env.pod() {
            assert!(!pod.namespace.is_empty() && !pod.name.is_empty());
            assert!(pod.check().is_ok());
        }
        if let Ok(id) = env.container_id() {
            assert!(!id.is_empty() && !id.contains('/'));
        }
        if let Ok(name) = env.ifname() {
            assert!((1..=15).contains(&name.len()) && !name.contains('/'));
        }
        let _ = env.netns();
    }
});

/// A result prints in every version and reads back as itself (an interface's MTU only from
/// 1.1.0 on).
fn round_trip(r: &CniResult) {
    for v in VERSIONS {
        let printed = r.to_value(v);
        let back = CniResult::from_value(&printed).expect("a printed result reads back");
        let mut expected = r.clone();
        if v < Version::V1_1_0 {
            for i in &mut expected.interfaces {
                i.mtu = None;
            }
        }
        expected.dns = Some(r.dns.clone().unwrap_or_else(|| serde_json::json!({})));
        assert_eq!(back, expected, "{v:?}");
    }
}
