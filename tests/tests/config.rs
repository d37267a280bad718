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
        "pod-cidr = [\"10.32.0.0/12\"]  # file",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

#[test]
fn the_cipher_comes_from_the_file_the_environment_or_the_default() {
    let (ok, text) = check("config-version = 1\n", &[]);
    assert!(
        ok && text.contains("cipher = \"auto\"  # default"),
        "{text}"
    );
    let (ok, text) = check("cipher = \"aes-256-gcm\"\n", &[]);
    assert!(
        ok && text.contains("cipher = \"aes-256-gcm\"  # file"),
        "{text}"
    );
    let (ok, text) = check(
        "cipher = \"aes-256-gcm\"\n",
        &[("WEFT_CIPHER", "chacha20-poly1305")],
    );
    assert!(
        ok && text.contains("cipher = \"chacha20-poly1305\"  # environment"),
        "{text}"
    );
    let (ok, text) = check("cipher = \"aes-128-gcm\"\n", &[]);
    assert!(
        !ok && text.contains("aes-128-gcm")
            && text.contains("auto, aes-256-gcm or chacha20-poly1305"),
        "{text}"
    );
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
    let (ok, text) = check("pod-cidr = \"fd10:32::1/48\"\n", &[]);
    assert!(!ok && text.contains("did you mean fd10:32::/48"), "{text}");
    // An IPv6 pod CIDR alone (an IPv6-only pod network) is taken; beside an IPv4 one (dual
    // stack) too, as a list; two of one family, or an IPv6 CIDR too small for the IPv4 one's
    // addresses, are refused.
    let (ok, text) = check("pod-cidr = \"fd10:32::/48\"\n", &[]);
    assert!(ok, "{text}");
    let (ok, text) = check("pod-cidr = [\"10.32.0.0/12\", \"fd10:32::/48\"]\n", &[]);
    assert!(ok, "{text}");
    let (ok, text) = check("pod-cidr = [\"10.32.0.0/12\", \"10.48.0.0/12\"]\n", &[]);
    assert!(!ok && text.contains("at most once per family"), "{text}");
    let (ok, text) = check("pod-cidr = [\"10.32.0.0/12\", \"fd10:32::/120\"]\n", &[]);
    assert!(
        !ok && text.contains("is smaller than 10.32.0.0/12"),
        "{text}"
    );
    let (ok, text) = check("secret-file = \"/nonexistent/weft-secret\"\n", &[]);
    assert!(!ok && text.contains("/nonexistent/weft-secret"), "{text}");
    let (ok, text) = check("listen = \n", &[]);
    assert!(!ok && text.contains(".toml"), "{text}");
}

/// `weft reload` (and SIGHUP) on a running router: a peer added in the file is dialled, the log
/// filter and the policy directory change, an option that needs a restart is named and keeps
/// its value. Needs root (a lab cluster).
#[test]
fn reload_applies_peers_log_and_policy_dir_and_names_the_rest() {
    use std::time::Duration;
    use weft_lab::testbed::Cluster;
    use weft_lab::{poll_until, Signal};
    assert!(weft_lab::require_root(), "this test needs root");
    let mut c = Cluster::new("reload", weft_bin().unwrap()).unwrap();
    let h1 = c.add_host("h1").unwrap();
    let h2 = c.add_host("h2").unwrap();
    let d = c.lab.dir().to_path_buf();
    let (pol_a, pol_b) = (d.join("pol-a"), d.join("pol-b"));
    std::fs::create_dir_all(&pol_a).unwrap();
    std::fs::create_dir_all(&pol_b).unwrap();
    let file = d.join("weft.toml");
    let write = |text: String| {
        let tmp = d.join(".weft.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    write(format!(
        "pod-cidr = \"10.32.0.0/12\"\npolicy-dir = \"{}\"\nlog = \"info\"\n",
        pol_a.display()
    ));
    let f = file.to_str().unwrap().to_owned();
    c.start_router(&h2, &[], &["--pod-cidr", "10.32.0.0/12"])
        .unwrap();
    c.start_router(&h1, &[], &["--config", &f]).unwrap();
    write(format!(
        "pod-cidr = \"10.32.0.0/12\"\npolicy-dir = \"{}\"\nlog = \"debug\"\npeer = [\"{}\"]\nmtu = 1300\n",
        pol_b.display(),
        h2.underlay_ip
    ));
    let state = c.state_dir(&h1);
    let reload = |c: &Cluster| {
        let weft = weft_bin().unwrap();
        let argv = [
            weft.to_str().unwrap(),
            "reload",
            "--state-dir",
            state.to_str().unwrap(),
        ];
        c.lab.exec(&h1.ns, &argv).unwrap()
    };
    let out = reload(&c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.contains(&format!("peer {}:6783 added", h2.underlay_ip)),
        "{out}"
    );
    assert!(out.contains("log debug"), "{out}");
    assert!(
        out.contains(&format!("policy-dir {}", pol_b.display())),
        "{out}"
    );
    assert!(
        out.contains("needs a restart (the running values stay): mtu"),
        "{out}"
    );
    let meshed = poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let r = c.status(&h1).ok()?;
        r.peers.iter().any(|p| p.nickname == "h2").then_some(r)
    });
    assert!(meshed.is_some(), "{}", c.router_log(&h1));
    // The status names the new directory as soon as the reload has answered...
    let pol_b_name = format!("dir:{}", pol_b.display());
    let r = c.status(&h1).unwrap();
    let src = r.policy.unwrap().sources;
    assert!(src.len() == 1 && src[0].name == pol_b_name, "{src:?}");
    assert_ne!(r.pod_mtu, 1300, "the mtu needs a restart");
    // ...and says when it has been read.
    let read = poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let src = c.status(&h1).ok()?.policy?.sources;
        src.iter()
            .any(|s| s.name == pol_b_name && s.ok && s.last_sync_secs_ago.is_some())
            .then_some(())
    });
    assert!(read.is_some(), "{}", c.router_log(&h1));
    // SIGHUP does the same: the peer removed from the file is forgotten.
    write(format!(
        "pod-cidr = \"10.32.0.0/12\"\npolicy-dir = \"{}\"\nlog = \"debug\"\n",
        pol_b.display()
    ));
    c.kill_router(&h1, Signal::SIGHUP).unwrap();
    let forgotten = poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let log = c.router_log(&h1);
        log.contains(&format!("peer {}:6783 removed", h2.underlay_ip))
            .then_some(())
    });
    assert!(forgotten.is_some(), "{}", c.router_log(&h1));
    // A broken file changes nothing and says why.
    write("mtu = \"abc\"\n".into());
    let out = reload(&c);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && text.contains("abc"), "{text}");
}
