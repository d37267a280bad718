//! The configuration file through the `weft` binary (no root needed): `weft config check` prints
//! each value with its source, flags and variables win over the file, the file over defaults;
//! typos, bad values and another format version are refused naming the key.

use std::process::Command;
use weft_lab::testbed::weft_bin;

fn dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("weft-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn check(file: &str, env: &[(&str, &str)]) -> (bool, String) {
    let d = dir();
    let path = d.join(format!("{}.toml", file.len()));
    std::fs::write(&path, file).unwrap();
    let mut c = Command::new(weft_bin().unwrap());
    c.args(["config", "check", "--config"]).arg(&path);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_effective_configuration_says_where_each_value_came_from() {
    let file = "config-version = 1\nlisten = \"10.0.0.1\"\npeer = [\"10.0.0.2\", \"10.0.0.3\"]\nmtu = 1300\npod-cidr = \"10.32.0.0/12\"\nno-fastpath = true\n";
    let (ok, text) = check(file, &[("WEFT_MTU", "1400")]);
    assert!(ok, "{text}");
    for line in [
        "listen = \"10.0.0.1\"  # file",
        "peer = [\"10.0.0.2\", \"10.0.0.3\"]  # file",
        "mtu = \"1400\"  # environment",
        "no-fastpath = true  # file",
        "max-macs = \"8192\"  # default",
        "pod-cidr = \"10.32.0.0/12\"  # file",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

#[test]
fn typos_bad_values_and_other_versions_are_refused_naming_the_key() {
    let (ok, text) = check("pod_cidr = \"10.32.0.0/12\"\n", &[]);
    assert!(
        !ok && text.contains("unknown key `pod_cidr`: did you mean `pod-cidr`?"),
        "{text}"
    );
    let (ok, text) = check("mtu = \"abc\"\n", &[]);
    assert!(
        !ok && text.contains("invalid value 'abc' for '--mtu"),
        "{text}"
    );
    let (ok, text) = check("config-version = 2\n", &[]);
    assert!(!ok && text.contains("configuration version 1"), "{text}");
    let (ok, text) = check("pod-cidr = \"10.32.0.1/12\"\n", &[]);
    assert!(!ok && text.contains("did you mean 10.32.0.0/12"), "{text}");
    let (ok, text) = check("secret-file = \"/nonexistent/weft-secret\"\n", &[]);
    assert!(!ok && text.contains("/nonexistent/weft-secret"), "{text}");
    let (ok, text) = check("listen = \n", &[]);
    assert!(!ok && text.contains(".toml"), "{text}");
}
