//! The network configuration on stdin: version negotiation and the fields weft-cni reads.
//!
//! Syntax errors are code 6 (decode failure); well-formed JSON with a missing or ill-typed field
//! is code 7 (invalid network configuration); a `cniVersion` the plugin does not speak is code 1.
//! Unknown fields are ignored, as the spec allows.

use crate::error::{Failure, DECODE_FAILURE, INCOMPATIBLE_VERSION, INVALID_CONFIG};
use crate::result::CniResult;
use crate::version::{Version, SUPPORTED_VERSIONS};
use serde_json::{Map, Value};
use std::path::PathBuf;
use weft_api::ipam::Attachment;

/// The state directory of the router when the configuration does not name one.
pub const DEFAULT_STATE_DIR: &str = "/run/weft";

/// What weft-cni reads from the network configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `cniVersion`: results and errors follow it.
    pub version: Version,
    /// `name`: the network's name.
    pub name: String,
    /// `stateDir`: the router's state directory, holding its socket `weft.sock`.
    pub state_dir: PathBuf,
    /// `mtu`: overrides the pod MTU the router computed.
    pub mtu: Option<u32>,
    /// `logFile`: where to append a log of what the plugin does (none: quiet).
    pub log_file: Option<PathBuf>,
    /// `dns`: copied into the ADD result when no `prevResult` carries one.
    pub dns: Option<Value>,
    /// `prevResult`: the previous plugin's result in a chain (ADD), or the result of the ADD
    /// (CHECK, DEL).
    pub prev_result: Option<CniResult>,
    /// `cni.dev/valid-attachments` (GC).
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// Parses the configuration for an operation that needs one.
pub fn parse(stdin: &[u8]) -> Result<Config, Failure> {
    let value: Value = serde_json::from_slice(stdin).map_err(|e| {
        Failure::new(
            DECODE_FAILURE,
            "the network configuration on stdin is not valid JSON",
        )
        .details(e.to_string())
    })?;
    let Value::Object(obj) = value else {
        return Err(Failure::new(
            DECODE_FAILURE,
            "the network configuration on stdin is not a JSON object",
        ));
    };
    let version = match obj.get("cniVersion") {
        None => {
            return Err(Failure::new(
                INVALID_CONFIG,
                "the network configuration has no cniVersion",
            )
            .details(format!("weft-cni speaks {}", SUPPORTED_VERSIONS.join(", "))))
        }
        Some(Value::String(s)) => Version::parse(s).ok_or_else(|| {
            Failure::new(
                INCOMPATIBLE_VERSION,
                format!("weft-cni does not speak CNI version {s:?}"),
            )
            .details(format!(
                "supported versions: {}",
                SUPPORTED_VERSIONS.join(", ")
            ))
        })?,
        Some(other) => {
            return Err(Failure::new(
                INVALID_CONFIG,
                format!("cniVersion must be a string, not {other}"),
            ))
        }
    };
    let name = string_field(&obj, "name")?
        .ok_or_else(|| Failure::new(INVALID_CONFIG, "the network configuration has no name"))?;
    let state_dir = string_field(&obj, "stateDir")?.unwrap_or_else(|| DEFAULT_STATE_DIR.into());
    if state_dir.is_empty() {
        return Err(Failure::new(INVALID_CONFIG, "stateDir is empty"));
    }
    let mtu = match obj.get("mtu") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let mtu = v
                .as_u64()
                .filter(|m| (68..=65535).contains(m))
                .ok_or_else(|| {
                    Failure::new(
                        INVALID_CONFIG,
                        format!("mtu must be a number from 68 to 65535, not {v}"),
                    )
                })?;
            Some(u32::try_from(mtu).expect("checked range"))
        }
    };
    let log_file = string_field(&obj, "logFile")?
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let dns = match obj.get("dns") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(v) => {
            return Err(Failure::new(
                INVALID_CONFIG,
                format!("dns must be an object, not {v}"),
            ))
        }
    };
    let prev_result = match obj.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            CniResult::from_value(v)
                .map_err(|e| Failure::new(DECODE_FAILURE, "cannot decode prevResult").details(e))?,
        ),
    };
    let valid_attachments = match obj.get("cni.dev/valid-attachments") {
        None | Some(Value::Null) => None,
        Some(v) => Some(attachments(v)?),
    };
    Ok(Config {
        version,
        name,
        state_dir: PathBuf::from(state_dir),
        mtu,
        log_file,
        dns,
        prev_result,
        valid_attachments,
    })
}

fn string_field(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, Failure> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Failure::new(
            INVALID_CONFIG,
            format!("{key} must be a string, not {other}"),
        )),
    }
}

fn attachments(v: &Value) -> Result<Vec<Attachment>, Failure> {
    let bad = |why: String| {
        Failure::new(
            INVALID_CONFIG,
            "cni.dev/valid-attachments must be a list of {\"containerID\", \"ifname\"}",
        )
        .details(why)
    };
    let list = v.as_array().ok_or_else(|| bad(format!("got {v}")))?;
    list.iter()
        .map(|a| {
            let field = |k: &str| {
                a.get(k)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .ok_or_else(|| bad(format!("entry {a} has no string {k}")))
            };
            Ok(Attachment {
                container_id: field("containerID")?,
                ifname: field("ifname")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::INVALID_CONFIG;

    fn parse_str(s: &str) -> Result<Config, Failure> {
        parse(s.as_bytes())
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse_str(r#"{"cniVersion":"1.0.0","name":"weft","type":"weft-cni"}"#).unwrap();
        assert_eq!(c.version, Version::V1_0_0);
        assert_eq!(c.name, "weft");
        assert_eq!(c.state_dir, PathBuf::from("/run/weft"));
        assert_eq!(c.mtu, None);
        assert_eq!(c.log_file, None);
        assert!(c.prev_result.is_none());
        assert!(c.valid_attachments.is_none());
    }

    #[test]
    fn options_and_unknown_fields() {
        let c = parse_str(
            r#"{"cniVersion":"1.1.0","name":"n","type":"weft-cni","stateDir":"/tmp/x",
                "mtu":1400,"logFile":"/tmp/l","frobnicate":{"a":1},"args":{"labels":{}},
                "dns":{"nameservers":["10.0.0.10"]},
                "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(c.version, Version::V1_1_0);
        assert_eq!(c.state_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(c.log_file, Some(PathBuf::from("/tmp/l")));
        assert_eq!(c.dns.unwrap()["nameservers"][0], "10.0.0.10");
        assert_eq!(
            c.valid_attachments.unwrap(),
            vec![Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }]
        );
    }

    #[test]
    fn every_supported_version_parses() {
        for v in SUPPORTED_VERSIONS {
            let c = parse_str(&format!(r#"{{"cniVersion":"{v}","name":"n"}}"#)).unwrap();
            assert_eq!(c.version.as_str(), v);
        }
    }

    #[test]
    fn bad_input_gets_the_right_code() {
        let code = |s: &str| parse_str(s).unwrap_err().code;
        assert_eq!(code("{"), DECODE_FAILURE);
        assert_eq!(code(""), DECODE_FAILURE);
        assert_eq!(code("[1]"), DECODE_FAILURE);
        assert_eq!(
            code(r#"{"cniVersion":"0.3.1","name":"n"}"#),
            INCOMPATIBLE_VERSION
        );
        assert_eq!(
            code(r#"{"cniVersion":"2.0.0","name":"n"}"#),
            INCOMPATIBLE_VERSION
        );
        assert_eq!(code(r#"{"name":"n"}"#), INVALID_CONFIG);
        assert_eq!(code(r#"{"cniVersion":1,"name":"n"}"#), INVALID_CONFIG);
        assert_eq!(code(r#"{"cniVersion":"1.0.0"}"#), INVALID_CONFIG);
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"n","mtu":"9000"}"#),
            INVALID_CONFIG
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"n","mtu":20}"#),
            INVALID_CONFIG
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"n","stateDir":7}"#),
            INVALID_CONFIG
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"n","stateDir":""}"#),
            INVALID_CONFIG
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":7}}"#),
            DECODE_FAILURE
        );
        assert_eq!(
            code(
                r#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"ifname":"e"}]}"#
            ),
            INVALID_CONFIG
        );
        let e = parse_str(r#"{"cniVersion":"0.3.1","name":"n"}"#).unwrap_err();
        assert!(e.msg.contains("0.3.1"), "{e}");
        assert!(e.details.contains("0.4.0, 1.0.0, 1.1.0"), "{e}");
    }
}
