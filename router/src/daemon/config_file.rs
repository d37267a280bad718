//! The configuration file (`/etc/weft/weft.toml`, or `--config FILE`): every `weft router`
//! option, keyed by its flag's name (`pod-cidr = "10.32.0.0/12"`, `peer = ["192.0.2.1"]`,
//! `no-fastpath = true`). Precedence: flags, then the environment (`WEFT_<NAME>`, e.g.
//! `WEFT_POD_CIDR`), then the file, then the defaults.
//!
//! The file is turned into the flags it stands for and parsed by the same parser as the command
//! line ([`file_args`]), so a value is checked by exactly the rules of its flag. An unknown key is
//! refused with the closest valid one; a value of the wrong shape names the key, the value and
//! what would be valid. `config-version = 1` may be given; another version is refused.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

/// Where the router looks for its configuration when `--config` is not given (a missing file
/// there is not an error).
pub const DEFAULT_PATH: &str = "/etc/weft/weft.toml";
/// The configuration format this version reads.
pub const CONFIG_VERSION: i64 = 1;
/// Keys of the file that are not flags.
const META_KEYS: [&str; 1] = ["config-version"];
/// Flags the file cannot set (they say where the file is, or are not router options).
const NOT_IN_FILE: [&str; 3] = ["config", "help", "version"];

/// Where an option's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env,
    /// The configuration file.
    File,
    /// The built-in default.
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Flag => "flag",
            Source::Env => "environment",
            Source::File => "file",
            Source::Default => "default",
        })
    }
}

/// The environment variable of a flag: `WEFT_` and the name in capitals, `-` as `_`.
pub fn env_name(long: &str) -> String {
    format!("WEFT_{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// `cmd` with an environment variable on every long option that has none ([`env_name`]).
pub fn with_env(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| match a.get_long() {
        Some(long) if a.get_env().is_none() && !NOT_IN_FILE.contains(&long) => {
            let name = env_name(long);
            a.env(name)
        }
        _ => a,
    })
}

/// Reads and parses the file at `path`.
pub fn read(path: &Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the configuration {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a configuration's text.
pub fn parse(text: &str) -> Result<toml::Table, String> {
    text.parse::<toml::Table>().map_err(|e| e.to_string())
}

/// The valid key closest to `key` (same letters with `_` for `-`, or a small edit distance).
fn closest<'a>(key: &str, valid: &[&'a str]) -> Option<&'a str> {
    let dashed = key.replace('_', "-").to_ascii_lowercase();
    if let Some(v) = valid.iter().find(|v| **v == dashed) {
        return Some(v);
    }
    valid
        .iter()
        .map(|v| (edit_distance(&dashed, v), *v))
        .filter(|(d, v)| *d <= 2.max(v.len() / 4))
        .min()
        .map(|(_, v)| v)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn scalar(key: &str, v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "key `{key}`: {other} is not a single value (a string, a number or true/false)"
        )),
    }
}

/// The flags the file stands for, per key, for the keys of `table` that `given` (set by a flag
/// or the environment) does not already decide. `router` is the `weft router` command.
pub fn file_args(
    router: &clap::Command,
    table: &toml::Table,
    given: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, Vec<OsString>>, String> {
    let args: BTreeMap<&str, &clap::Arg> = router
        .get_arguments()
        .filter_map(|a| Some((a.get_long()?, a)))
        .filter(|(l, _)| !NOT_IN_FILE.contains(l))
        .collect();
    let valid: Vec<&str> = args.keys().copied().chain(META_KEYS).collect();
    let mut out = BTreeMap::new();
    for (key, value) in table {
        if key == "config-version" {
            match value.as_integer() {
                Some(CONFIG_VERSION) => continue,
                _ => {
                    return Err(format!(
                        "config-version = {value}: this weft reads configuration version {CONFIG_VERSION}"
                    ))
                }
            }
        }
        let Some(arg) = args.get(key.as_str()) else {
            return Err(match closest(key, &valid) {
                Some(c) => format!("unknown key `{key}`: did you mean `{c}`?"),
                None => format!(
                    "unknown key `{key}` (valid keys are the `weft router` flags' names: {})",
                    valid.join(", ")
                ),
            });
        };
        if given(arg.get_id().as_str()) {
            continue;
        }
        let flag = format!("--{key}");
        let takes_value = arg.get_action().takes_values();
        let mut argv: Vec<OsString> = Vec::new();
        if !takes_value {
            match value.as_bool() {
                Some(true) => argv.push(flag.into()),
                Some(false) => {}
                None => return Err(format!("key `{key}`: {value} is not true or false")),
            }
        } else if let Some(list) = value.as_array() {
            let many = matches!(arg.get_action(), clap::ArgAction::Append)
                || arg.get_value_delimiter().is_some();
            if !many {
                return Err(format!("key `{key}`: takes one value, not a list"));
            }
            for v in list {
                argv.push(format!("{flag}={}", scalar(key, v)?).into());
            }
        } else {
            argv.push(format!("{flag}={}", scalar(key, value)?).into());
        }
        out.insert(arg.get_id().to_string(), argv);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> clap::Command {
        clap::Command::new("router")
            .arg(clap::Arg::new("config").long("config"))
            .arg(clap::Arg::new("pod_cidr").long("pod-cidr"))
            .arg(
                clap::Arg::new("peers")
                    .long("peer")
                    .action(clap::ArgAction::Append),
            )
            .arg(
                clap::Arg::new("no_fastpath")
                    .long("no-fastpath")
                    .action(clap::ArgAction::SetTrue),
            )
            .arg(clap::Arg::new("mtu").long("mtu"))
    }

    fn args(text: &str) -> Result<BTreeMap<String, Vec<OsString>>, String> {
        file_args(&cmd(), &parse(text).unwrap(), |_| false)
    }

    #[test]
    fn keys_become_the_flags_they_name() {
        let a = args("config-version = 1\npod-cidr = \"10.32.0.0/12\"\npeer = [\"a\", \"b\"]\nno-fastpath = true\nmtu = 1400\n").unwrap();
        assert_eq!(
            a["pod_cidr"],
            vec![OsString::from("--pod-cidr=10.32.0.0/12")]
        );
        assert_eq!(
            a["peers"],
            vec![OsString::from("--peer=a"), "--peer=b".into()]
        );
        assert_eq!(a["no_fastpath"], vec![OsString::from("--no-fastpath")]);
        assert_eq!(a["mtu"], vec![OsString::from("--mtu=1400")]);
        assert!(args("no-fastpath = false").unwrap()["no_fastpath"].is_empty());
        // What a flag or the environment set is left to them.
        let a = file_args(&cmd(), &parse("mtu = 1400").unwrap(), |id| id == "mtu").unwrap();
        assert!(a.is_empty());
    }

    #[test]
    fn typos_and_wrong_shapes_are_named() {
        assert_eq!(
            args("pod_cidr = \"x\"").unwrap_err(),
            "unknown key `pod_cidr`: did you mean `pod-cidr`?"
        );
        assert_eq!(
            args("pod-cdir = \"x\"").unwrap_err(),
            "unknown key `pod-cdir`: did you mean `pod-cidr`?"
        );
        assert!(args("zzz = 1").unwrap_err().contains("valid keys"));
        assert!(args("config = \"x\"")
            .unwrap_err()
            .contains("unknown key `config`"));
        assert_eq!(
            args("mtu = [1, 2]").unwrap_err(),
            "key `mtu`: takes one value, not a list"
        );
        assert!(args("no-fastpath = \"yes\"")
            .unwrap_err()
            .contains("not true or false"));
        assert!(args("mtu = {a = 1}")
            .unwrap_err()
            .contains("not a single value"));
        assert!(args("config-version = 2")
            .unwrap_err()
            .contains("version 1"));
        assert!(parse("mtu = ").is_err());
    }

    #[test]
    fn every_flag_gets_an_environment_variable() {
        let c = with_env(cmd());
        let env: Vec<String> = c
            .get_arguments()
            .filter_map(|a| Some(a.get_env()?.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(
            env,
            ["WEFT_POD_CIDR", "WEFT_PEER", "WEFT_NO_FASTPATH", "WEFT_MTU"]
        );
    }
}
