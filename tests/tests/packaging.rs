//! The Debian package (`scripts/package-deb.sh`, no root needed): built from the release binaries
//! this suite already uses, then read back with `dpkg-deb --info` and `--contents`, extracted into
//! a temporary root, and checked there: the unit passes `systemd-analyze verify --root` with its
//! commands and man pages resolvable, the example configuration passes the packaged
//! `weft config check`, the completions and man pages are not empty, the binaries run, the
//! example CNI conflist is the Kubernetes manifest's.
//!
//! Each step is one command that ends by itself (no polling); the temporary directory is removed
//! when the test ends, passed or failed.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use weft_lab::testbed::weft_bin;

/// Every file (or link) the package must hold.
const FILES: [&str; 18] = [
    "./usr/bin/weft",
    "./usr/lib/cni/weft-cni",
    "./opt/cni/bin/weft-cni -> /usr/lib/cni/weft-cni",
    "./lib/systemd/system/weft.service",
    "./etc/weft/weft.toml",
    "./usr/share/bash-completion/completions/weft",
    "./usr/share/zsh/vendor-completions/_weft",
    "./usr/share/fish/vendor_completions.d/weft.fish",
    "./usr/share/man/man8/weft.8.gz",
    "./usr/share/man/man8/weft-router.8.gz",
    "./usr/share/man/man8/weft-status.8.gz",
    "./usr/share/man/man8/weft-config-check.8.gz",
    "./usr/share/man/man8/weft-doctor.8.gz",
    "./usr/share/man/man8/weft-reload.8.gz",
    "./usr/share/man/man8/weft-leave.8.gz",
    "./usr/share/man/man8/weft-trace.8.gz",
    "./usr/share/doc/weft/copyright",
    "./usr/share/doc/weft/examples/10-weft.conflist",
];

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// Runs `cmd` under `timeout` (so a hung tool fails the test instead of stalling it) and
/// returns its output; panics when it cannot be started.
fn run(cmd: &mut Command) -> Output {
    let mut t = Command::new("timeout");
    t.arg("120").arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => t.env(k, v),
            None => t.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        t.current_dir(d);
    }
    t.output()
        .unwrap_or_else(|e| panic!("running {:?}: {e}", cmd.get_program()))
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `[workspace.package]` version of the root Cargo.toml.
fn workspace_version() -> String {
    let text = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let section = text.split("[workspace.package]").nth(1).unwrap();
    let line = section
        .lines()
        .find(|l| l.trim_start().starts_with("version"))
        .unwrap();
    line.split('"').nth(1).unwrap().to_string()
}

#[test]
fn the_debian_package_installs_a_working_weft() {
    let weft = weft_bin().expect("the release weft (cargo build --release --workspace --bins)");
    let bin_dir = weft.parent().unwrap().to_path_buf();
    let tmp = TempDir(std::env::temp_dir().join(format!("weft-packaging-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&tmp.0);
    std::fs::create_dir_all(&tmp.0).unwrap();

    // Build.
    let deb = ok(Command::new("bash")
        .arg(repo().join("scripts/package-deb.sh"))
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--out")
        .arg(tmp.0.join("out")));
    let deb = PathBuf::from(deb.trim());
    let arch = ok(Command::new("dpkg").arg("--print-architecture"));
    let version = workspace_version();
    assert_eq!(
        deb.file_name().unwrap().to_string_lossy(),
        format!("weft_{version}_{}.deb", arch.trim())
    );

    // The control fields and the conffile.
    let info = ok(Command::new("dpkg-deb").arg("--info").arg(&deb));
    for field in [
        "Package: weft".to_string(),
        format!("Version: {version}"),
        format!("Architecture: {}", arch.trim()),
    ] {
        assert!(info.contains(&field), "no {field:?} in:\n{info}");
    }
    let depends = info
        .lines()
        .find(|l| l.trim_start().starts_with("Depends:"))
        .unwrap_or_else(|| panic!("no Depends in:\n{info}"));
    for dep in ["nftables", "libc6", "procps"] {
        assert!(depends.contains(dep), "{depends}");
    }
    let ctrl = tmp.0.join("control");
    ok(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&ctrl));
    let conffiles = std::fs::read_to_string(ctrl.join("conffiles")).unwrap();
    assert_eq!(conffiles, "/etc/weft/weft.toml\n");

    // Every file, owned by root.
    let contents = ok(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for f in FILES {
        let line = contents
            .lines()
            .find(|l| l.ends_with(&format!(" {f}")))
            .unwrap_or_else(|| panic!("no {f} in the package:\n{contents}"));
        assert!(line.contains("root/root"), "{line}");
    }

    // Extracted into a root of its own.
    let root = tmp.0.join("root");
    ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let weft = root.join("usr/bin/weft");

    let check = ok(Command::new(&weft)
        .args(["config", "check", "--config"])
        .arg(root.join("etc/weft/weft.toml")));
    assert!(
        check.contains("state-dir = \"/run/weft\"  # file"),
        "{check}"
    );
    // The commented examples are valid too: every `# key = value` line switched on at once (the
    // secret file pointed at one that exists).
    let secret = tmp.0.join("secret");
    std::fs::write(&secret, "an-example-secret-of-enough-bytes\n").unwrap();
    let example = std::fs::read_to_string(root.join("etc/weft/weft.toml")).unwrap();
    let mut on = 0;
    let all: String = example
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(kv) if kv.split_once(" = ").is_some_and(|(k, _)| is_key(k)) => {
                on += 1;
                kv.replace("/etc/weft/secret", &secret.to_string_lossy()) + "\n"
            }
            _ => format!("{l}\n"),
        })
        .collect();
    assert!(on >= 5, "only {on} commented examples in:\n{example}");
    let all_on = tmp.0.join("all-on.toml");
    std::fs::write(&all_on, &all).unwrap();
    let check = ok(Command::new(&weft)
        .args(["config", "check", "--config"])
        .arg(&all_on));
    assert!(
        check.contains("pod-cidr = [\"10.32.0.0/12\"]  # file"),
        "{check}"
    );

    for c in [
        "usr/share/bash-completion/completions/weft",
        "usr/share/zsh/vendor-completions/_weft",
        "usr/share/fish/vendor_completions.d/weft.fish",
    ] {
        let text = std::fs::read_to_string(root.join(c)).unwrap();
        assert!(text.contains("state-dir") && text.contains("status"), "{c}");
    }
    let man8 = root.join("usr/share/man/man8");
    for page in std::fs::read_dir(&man8).unwrap() {
        let page = page.unwrap().path();
        let text = ok(Command::new("gzip").arg("-dc").arg(&page));
        assert!(
            text.contains(".TH") && text.contains(".SH NAME"),
            "{page:?}"
        );
    }

    // The example conflist is the one the Kubernetes manifest installs.
    let example =
        std::fs::read_to_string(root.join("usr/share/doc/weft/examples/10-weft.conflist"));
    let example: serde_json::Value = serde_json::from_str(&example.unwrap()).unwrap();
    let manifest = std::fs::read_to_string(repo().join("deploy/kubernetes/weft.yaml")).unwrap();
    let in_manifest = serde_yaml::Deserializer::from_str(&manifest)
        .filter_map(|d| serde_yaml::Value::deserialize(d).ok())
        .find(|d| d["kind"].as_str() == Some("ConfigMap"))
        .and_then(|d| d["data"]["10-weft.conflist"].as_str().map(str::to_string))
        .expect("the ConfigMap's conflist");
    let in_manifest: serde_json::Value = serde_json::from_str(&in_manifest).unwrap();
    assert_eq!(example, in_manifest);

    let cni = ok(Command::new(root.join("usr/lib/cni/weft-cni")).env("CNI_COMMAND", "VERSION"));
    assert!(cni.contains("supportedVersions"), "{cni}");

    verify_unit(&root, &weft);
}

/// A configuration key: lowercase words joined by `-`.
fn is_key(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '-')
}

/// The unit against the package: its commands exist there, its flags are the router's, its
/// runtime directory is the configuration's state directory; then `systemd-analyze verify`.
fn verify_unit(root: &Path, weft: &Path) {
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/weft.service")).unwrap();
    let key = |k: &str| -> Vec<&str> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .collect()
    };
    assert_eq!(key("Type"), ["exec"]);
    let exec = key("ExecStart");
    assert_eq!(exec.len(), 1);
    let argv: Vec<&str> = exec[0].split_whitespace().collect();
    assert_eq!(argv[..2], ["/usr/bin/weft", "router"]);
    assert!(root.join(argv[0].trim_start_matches('/')).is_file());
    let help = ok(Command::new(weft).args(["router", "--help"]));
    for flag in argv.iter().filter(|a| a.starts_with("--")) {
        let listed = help
            .lines()
            .any(|l| l.split_whitespace().any(|w| w == *flag));
        assert!(listed, "weft router has no {flag}");
    }
    let config = argv
        .iter()
        .skip_while(|a| **a != "--config")
        .nth(1)
        .unwrap();
    assert!(root.join(config.trim_start_matches('/')).is_file());
    let toml = std::fs::read_to_string(root.join("etc/weft/weft.toml")).unwrap();
    assert_eq!(key("RuntimeDirectory"), ["weft"]);
    assert!(toml.contains("\nstate-dir = \"/run/weft\"\n"));
    assert_eq!(key("RuntimeDirectoryPreserve"), ["yes"]);
    assert_eq!(key("ExecReload"), ["/bin/kill -HUP $MAINPID"]);

    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("no systemd-analyze here: the unit was only checked by the parse above");
        return;
    }
    // What verify resolves under --root besides the package: the targets and slices the unit is
    // ordered against (the host's), and /bin/kill (procps, a dependency). The man pages of
    // Documentation= are looked up by `man` through MANPATH, in the package.
    let units = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    let host_units = std::fs::read_dir("/usr/lib/systemd/system")
        .into_iter()
        .flatten();
    for entry in host_units.flatten() {
        let p = entry.path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".target") || name.ends_with(".slice") {
            // Copied, links followed: the host's absolute links would point out of the root.
            if let Ok(bytes) = std::fs::read(&p) {
                std::fs::write(units.join(&name), bytes).unwrap();
            }
        }
    }
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/kill", root.join("bin/kill")).unwrap();
    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("weft.service")
        .env("MANPATH", root.join("usr/share/man")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on an unknown key or a bad value, with a warning naming the file.
    let complaints: Vec<&str> = stderr.lines().filter(|l| l.contains("weft")).collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

/// The unit's typos are caught: the same verify on a unit with a misspelt key complains.
#[test]
fn verify_catches_a_misspelt_key() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("no systemd-analyze here");
        return;
    }
    let tmp = TempDir(std::env::temp_dir().join(format!("weft-unit-typo-{}", std::process::id())));
    std::fs::create_dir_all(&tmp.0).unwrap();
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/weft.service")).unwrap();
    let bad = tmp.0.join("weft-typo.service");
    std::fs::write(&bad, unit.replace("\nType=exec", "\nTyp=exec")).unwrap();
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&bad));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Unknown key") && stderr.contains("Typ"),
        "{stderr}"
    );
}
