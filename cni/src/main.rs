//! `weft-cni`: Weft's CNI plugin (CNI spec 1.1; configurations of version 0.4.0, 1.0.0 and
//! 1.1.0). It attaches pods to the local `weft router`'s bridge with a veth pair and an address
//! the router hands out (cluster IPAM over the router's API socket).
//!
//! The runtime runs the plugin with the operation in `CNI_COMMAND` and the network configuration
//! on stdin; results and errors go to stdout as JSON, and nothing else does (the optional
//! `logFile` gets the log). Modules:
//!
//! * [`env`] and [`config`]: the inputs, checked (error codes 4, 6, 7, 1); [`version`]: the CNI
//!   versions spoken (these, [`result`] and [`error`] are the library, `lib.rs`);
//! * [`commands`]: ADD, DEL, CHECK, STATUS and GC;
//! * [`netns`]: entering the pod's namespace with a [`weft_netlink::Netlink`] connection;
//! * [`router`]: the router's IPAM endpoints;
//! * [`result`]: CNI results per version; [`names`]: the host end's name; [`error`]: CNI errors;
//!   [`log`]: the optional log.
//!
//! `docs/cni.md` is the reference: configuration, results, error codes, what changes on the host.

#![forbid(unsafe_code)]

mod commands;
mod log;
mod names;
mod netns;
mod router;

// The pure modules live in the library (`lib.rs`), where the fuzz targets reach them too; these
// names keep `crate::config` and friends working in the binary's own modules.
use weft_cni::{config, env, error, result, version};

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::process::ExitCode;

use env::Env;
use error::{Failure, INVALID_ENV, IO_FAILURE};
use version::{Version, LATEST, SUPPORTED_VERSIONS};

/// What the plugin prints on stdout (nothing: `None`) and its exit status.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    stdout: Option<String>,
    exit_code: u8,
}

impl Reply {
    fn ok(stdout: Option<String>) -> Reply {
        Reply {
            stdout,
            exit_code: 0,
        }
    }

    fn failed(f: &Failure, version: &str) -> Reply {
        Reply {
            stdout: Some(f.to_json(version)),
            exit_code: 1,
        }
    }
}

/// The answer to VERSION.
fn version_answer(stdin: &[u8]) -> String {
    // The answer follows the version the runtime asked in, when it is one we speak.
    let asked = version::version_hint(stdin).map_or(LATEST, Version::as_str);
    serde_json::json!({"cniVersion": asked, "supportedVersions": SUPPORTED_VERSIONS}).to_string()
}

/// Handles one invocation.
fn dispatch(env: &Env, stdin: &[u8]) -> Reply {
    let command = env.command.as_deref();
    if command == Some("VERSION") {
        return Reply::ok(Some(version_answer(stdin)));
    }
    let known = matches!(command, Some("ADD" | "DEL" | "CHECK" | "STATUS" | "GC"));
    let hint = version::version_hint(stdin).map_or(LATEST, Version::as_str);
    if !known {
        let f = match command {
            None => Failure::new(INVALID_ENV, "CNI_COMMAND is not set").details(
                "weft-cni is a CNI plugin: a container runtime runs it with CNI_COMMAND set \
                 (e.g. CNI_COMMAND=VERSION)",
            ),
            Some(other) => Failure::new(INVALID_ENV, format!("unknown CNI_COMMAND {other:?}"))
                .details("CNI_COMMAND must be one of ADD, DEL, CHECK, STATUS, GC, VERSION"),
        };
        return Reply::failed(&f, hint);
    }
    let cfg = match config::parse(stdin) {
        Ok(cfg) => cfg,
        Err(f) => return Reply::failed(&f, hint),
    };
    if let Some(path) = &cfg.log_file {
        log::open(path);
    }
    let version = cfg.version.as_str();
    let outcome = match command {
        Some("ADD") => commands::add(env, &cfg).map(Some),
        Some("DEL") => commands::del(env, &cfg).map(|()| None),
        Some("CHECK") => commands::check(env, &cfg).map(|()| None),
        Some("STATUS") => commands::status(&cfg).map(|()| None),
        _ => commands::gc(&cfg).map(|()| None),
    };
    match outcome {
        Ok(out) => {
            log::line(&format!(
                "{} {}/{}: ok",
                command.unwrap_or_default(),
                env.container_id.as_deref().unwrap_or("-"),
                env.ifname.as_deref().unwrap_or("-")
            ));
            Reply::ok(out)
        }
        Err(f) => {
            log::line(&format!(
                "{} {}/{}: {f}",
                command.unwrap_or_default(),
                env.container_id.as_deref().unwrap_or("-"),
                env.ifname.as_deref().unwrap_or("-")
            ));
            Reply::failed(&f, version)
        }
    }
}

fn main() -> ExitCode {
    let env = Env::from_process();
    let mut stdin = Vec::new();
    // A runtime always gives a configuration on stdin; a person at a terminal trying VERSION
    // should not have to type one.
    let input = std::io::stdin();
    let read = if input.is_terminal() {
        Ok(0)
    } else {
        input.lock().read_to_end(&mut stdin)
    };
    let reply = match read {
        Ok(_) => dispatch(&env, &stdin),
        Err(e) => Reply::failed(
            &Failure::new(IO_FAILURE, "cannot read the configuration from stdin")
                .details(e.to_string()),
            LATEST,
        ),
    };
    if let Some(out) = &reply.stdout {
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, "{out}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::from(reply.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn env(cmd: Option<&str>) -> Env {
        Env {
            command: cmd.map(str::to_owned),
            ..Env::default()
        }
    }

    fn parse(reply: &Reply) -> Value {
        serde_json::from_str(reply.stdout.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn version_lists_supported_versions() {
        let reply = dispatch(&env(Some("VERSION")), b"");
        assert_eq!(reply.exit_code, 0);
        assert_eq!(
            reply.stdout.as_deref(),
            Some(r#"{"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}"#)
        );
        let reply = dispatch(&env(Some("VERSION")), br#"{"cniVersion":"0.4.0"}"#);
        assert_eq!(parse(&reply)["cniVersion"], "0.4.0");
    }

    #[test]
    fn missing_or_unknown_command_is_code_4() {
        for cmd in [None, Some("add"), Some("FROB")] {
            let reply = dispatch(&env(cmd), b"");
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

    #[test]
    fn errors_follow_the_configuration_version() {
        // A decodable version but an invalid configuration: the error is in that version.
        let reply = dispatch(&env(Some("ADD")), br#"{"cniVersion":"0.4.0"}"#);
        let v = parse(&reply);
        assert_eq!(
            (v["code"].clone(), v["cniVersion"].clone()),
            (json!(7), json!("0.4.0"))
        );
        // Missing environment variables after a good configuration: code 4, naming them.
        let cfg =
            br#"{"cniVersion":"1.0.0","name":"weft","type":"weft-cni","stateDir":"/nonexistent"}"#;
        for cmd in ["ADD", "DEL", "CHECK"] {
            let v = parse(&dispatch(&env(Some(cmd)), cfg));
            assert_eq!(v["code"], 4, "{cmd}");
            assert_eq!(v["cniVersion"], "1.0.0", "{cmd}");
            assert!(
                v["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
                "{cmd}: {v}"
            );
        }
        let reply = dispatch(&env(Some("STATUS")), b"{not json");
        assert_eq!(parse(&reply)["code"], 6);
        let reply = dispatch(
            &env(Some("STATUS")),
            br#"{"cniVersion":"0.2.0","name":"x"}"#,
        );
        assert_eq!(parse(&reply)["code"], 1);
    }

    #[test]
    fn error_json_has_the_spec_fields() {
        let f = Failure::new(11, "try later").details("why");
        let v: Value = serde_json::from_str(&f.to_json("1.0.0")).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion": "1.0.0", "code": 11, "msg": "try later", "details": "why"})
        );
    }
}
