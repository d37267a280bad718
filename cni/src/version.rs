//! The CNI versions weft-cni speaks, and finding the version a configuration asks for (errors
//! and results follow it). Its own module so that the configuration and the result, which both
//! need it, do not import each other.

use serde_json::Value;

/// The CNI versions the plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];
/// The newest, used for output that has no configuration to follow (VERSION, early errors).
pub const LATEST: &str = "1.1.0";
/// A CNI version the plugin speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// 0.4.0: results carry `ips[].version`.
    V0_4_0,
    /// 1.0.0.
    V1_0_0,
    /// 1.1.0: interfaces may carry `mtu`; STATUS and GC.
    V1_1_0,
}

impl Version {
    /// Parses one of [`SUPPORTED_VERSIONS`].
    pub fn parse(s: &str) -> Option<Version> {
        match s {
            "0.4.0" => Some(Version::V0_4_0),
            "1.0.0" => Some(Version::V1_0_0),
            "1.1.0" => Some(Version::V1_1_0),
            _ => None,
        }
    }

    /// The version as the spec writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }
}

/// The `cniVersion` of a configuration, if it is one weft-cni speaks: errors about a
/// configuration that does not parse still answer in its version when possible.
pub fn version_hint(stdin: &[u8]) -> Option<Version> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    Version::parse(v.get("cniVersion")?.as_str()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_hint_reads_what_it_can() {
        assert_eq!(
            version_hint(br#"{"cniVersion":"0.4.0"}"#),
            Some(Version::V0_4_0)
        );
        assert_eq!(version_hint(br#"{"cniVersion":"9.9.9"}"#), None);
        assert_eq!(version_hint(b"nonsense"), None);
    }
}
