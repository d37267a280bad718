//! `weft-cni`: Weft's CNI plugin, at its first stage: it answers `VERSION` only.
//!
//! A container runtime runs the plugin with the operation in the `CNI_COMMAND` environment
//! variable (and, for the operations on a container, the network configuration on stdin). At
//! this stage the plugin:
//!
//! - answers `VERSION` with the CNI versions it speaks and exits 0;
//! - answers the other operations of the spec (`ADD`, `DEL`, `CHECK`, `STATUS`, `GC`) with a CNI
//!   error object, code 100 (a plugin-specific code: the spec's well-known codes do not cover
//!   "not implemented"), and exits 1;
//! - answers a missing or unknown `CNI_COMMAND` with error code 4 ("invalid necessary
//!   environment variables") and exits 1.
//!
//! Results and errors go to stdout as JSON, as the CNI spec requires. Wiring pods to the Weft
//! bridge (`ADD`, `DEL`, ...) comes in a later stage.

use std::io::Write as _;
use std::process::ExitCode;

use serde::Serialize;

/// The CNI version this plugin's own output follows.
const CNI_VERSION: &str = "1.1.0";
/// The CNI versions the plugin accepts.
const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// CNI error code: invalid necessary environment variables, such as `CNI_COMMAND`.
const CODE_INVALID_ENV: u32 = 4;
/// Plugin-specific error code (the spec reserves 0-99): the operation is not implemented yet.
const CODE_NOT_IMPLEMENTED: u32 = 100;

/// The answer to `VERSION`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionResult {
    cni_version: &'static str,
    supported_versions: [&'static str; 3],
}

/// A CNI error result.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CniError {
    cni_version: &'static str,
    code: u32,
    msg: String,
    details: String,
}

/// What the plugin prints on stdout and its exit status.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    stdout: String,
    exit_code: u8,
}

impl Reply {
    fn error(code: u32, msg: String, details: String) -> Reply {
        let err = CniError {
            cni_version: CNI_VERSION,
            code,
            msg,
            details,
        };
        Reply {
            stdout: to_json(&err),
            exit_code: 1,
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain structs always serialize")
}

/// Handles one invocation, given the value of `CNI_COMMAND` (`None` if unset or not UTF-8).
fn dispatch(command: Option<&str>) -> Reply {
    match command {
        Some("VERSION") => Reply {
            stdout: to_json(&VersionResult {
                cni_version: CNI_VERSION,
                supported_versions: SUPPORTED_VERSIONS,
            }),
            exit_code: 0,
        },
        Some(cmd @ ("ADD" | "DEL" | "CHECK" | "STATUS" | "GC")) => Reply::error(
            CODE_NOT_IMPLEMENTED,
            format!("weft-cni: {cmd} is not implemented yet"),
            "this build of weft-cni only answers VERSION".to_owned(),
        ),
        Some(other) => Reply::error(
            CODE_INVALID_ENV,
            format!("weft-cni: unknown CNI_COMMAND {other:?}"),
            "CNI_COMMAND must be one of ADD, DEL, CHECK, STATUS, GC, VERSION".to_owned(),
        ),
        None => Reply::error(
            CODE_INVALID_ENV,
            "weft-cni: CNI_COMMAND is not set".to_owned(),
            "weft-cni is a CNI plugin: a container runtime runs it with CNI_COMMAND set \
             (e.g. CNI_COMMAND=VERSION)"
                .to_owned(),
        ),
    }
}

fn main() -> ExitCode {
    let command = std::env::var("CNI_COMMAND").ok();
    let reply = dispatch(command.as_deref());
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{}", reply.stdout)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    ExitCode::from(reply.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(reply: &Reply) -> Value {
        serde_json::from_str(&reply.stdout).unwrap()
    }

    #[test]
    fn version_lists_supported_versions() {
        let reply = dispatch(Some("VERSION"));
        assert_eq!(reply.exit_code, 0);
        assert_eq!(
            reply.stdout,
            r#"{"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}"#
        );
    }

    #[test]
    fn known_commands_are_not_implemented_yet() {
        for cmd in ["ADD", "DEL", "CHECK", "STATUS", "GC"] {
            let reply = dispatch(Some(cmd));
            assert_eq!(reply.exit_code, 1);
            let v = parse(&reply);
            assert_eq!(v["cniVersion"], json!("1.1.0"));
            assert_eq!(v["code"], json!(100));
            assert_eq!(
                v["msg"],
                json!(format!("weft-cni: {cmd} is not implemented yet"))
            );
            assert!(v["details"].is_string());
        }
    }

    #[test]
    fn missing_or_unknown_command_is_code_4() {
        for cmd in [None, Some(""), Some("add"), Some("FROB")] {
            let reply = dispatch(cmd);
            assert_eq!(reply.exit_code, 1, "{cmd:?}");
            let v = parse(&reply);
            assert_eq!(v["code"], json!(4), "{cmd:?}");
            assert_eq!(v["cniVersion"], json!("1.1.0"));
            let obj = v.as_object().unwrap();
            let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["cniVersion", "code", "details", "msg"]);
        }
    }
}
