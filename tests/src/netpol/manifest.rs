//! The Kubernetes objects the routers read from `--policy-dir`: the Namespace and Pod manifests
//! of the test cluster (one multi-document YAML file, [`CLUSTER_FILE`]) and the NetworkPolicies
//! the cases write, and [`PolicyDirs`], which writes the same file into every router's directory
//! atomically (a hidden temporary file, then a rename: a router never reads half a file).

use super::serve::{ECHO_PORT, PORTS};
use super::truth::Protocol;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The file holding every Namespace and Pod manifest.
pub const CLUSTER_FILE: &str = "00-cluster.yaml";

/// Every router's policy directory; each write goes to all of them.
#[derive(Debug, Clone)]
pub struct PolicyDirs {
    dirs: Vec<PathBuf>,
}

impl PolicyDirs {
    /// Creates the directories (if missing).
    pub fn new(dirs: Vec<PathBuf>) -> Result<PolicyDirs> {
        for d in &dirs {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(PolicyDirs { dirs })
    }

    /// The directories, one per router.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Writes `name` with `text` into every directory: `.<name>.tmp`, then a rename.
    pub fn write(&self, name: &str, text: &str) -> Result<()> {
        for d in &self.dirs {
            let tmp = d.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, d.join(name))
                .with_context(|| format!("renaming {} to {name}", tmp.display()))?;
        }
        Ok(())
    }

    /// Removes `name` from every directory (a missing file is fine).
    pub fn remove(&self, name: &str) -> Result<()> {
        for d in &self.dirs {
            match std::fs::remove_file(d.join(name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {name} from {}", d.display()))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The visible files of the first directory (they all hold the same).
    pub fn files(&self) -> Result<Vec<String>> {
        let Some(d) = self.dirs.first() else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = std::fs::read_dir(d)
            .with_context(|| format!("listing {}", d.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }
}

/// `docs` as one YAML stream, `---` between documents.
pub fn yaml_stream(docs: &[Value]) -> Result<String> {
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(d).context("YAML of a manifest")?);
    }
    Ok(out)
}

/// A Namespace labelled `ns=<name>` and `kubernetes.io/metadata.name=<name>` (the label the API
/// server sets on every namespace), plus `extra`.
pub fn namespace(name: &str, extra: &BTreeMap<String, String>) -> Value {
    let mut labels = json!({"ns": name, "kubernetes.io/metadata.name": name});
    for (k, v) in extra {
        labels[k] = json!(v);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    })
}

/// A Pod with `labels` and one container per served (port, protocol), the ports named as
/// upstream names them (`serve-80-tcp`, ...; SCTP ones only when `sctp`), plus the echo port.
pub fn pod(namespace: &str, name: &str, labels: &BTreeMap<String, String>, sctp: bool) -> Value {
    let mut protocols = vec![Protocol::Tcp, Protocol::Udp];
    if sctp {
        protocols.push(Protocol::Sctp);
    }
    let mut containers = Vec::new();
    for port in PORTS {
        for p in &protocols {
            let lower = p.k8s().to_ascii_lowercase();
            containers.push(json!({
                "name": format!("cont-{port}-{lower}"),
                "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
                "ports": [{
                    "name": format!("serve-{port}-{lower}"),
                    "containerPort": port,
                    "protocol": p.k8s(),
                }],
            }));
        }
    }
    containers.push(json!({
        "name": format!("cont-{ECHO_PORT}-tcp"),
        "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
        "ports": [{"name": "echo", "containerPort": ECHO_PORT, "protocol": "TCP"}],
    }));
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": namespace, "name": name, "labels": labels},
        "spec": {"containers": containers},
    })
}

/// A `networking.k8s.io/v1` NetworkPolicy `name` in `namespace` with `spec`.
pub fn network_policy(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": namespace, "name": name},
        "spec": spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reach_every_directory_whole_and_leave_no_temporary() {
        let root = std::env::temp_dir().join(format!("netpol-dirs-{}", std::process::id()));
        let dirs = PolicyDirs::new(vec![root.join("h1"), root.join("h2")]).unwrap();
        let pol = network_policy("x", "deny", json!({"podSelector": {}}));
        let text = yaml_stream(&[namespace("x", &BTreeMap::new()), pol]).unwrap();
        dirs.write("p.yaml", &text).unwrap();
        for d in dirs.dirs() {
            assert_eq!(std::fs::read_to_string(d.join("p.yaml")).unwrap(), text);
            let names: Vec<_> = std::fs::read_dir(d)
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert_eq!(names.len(), 1, "{names:?}");
        }
        assert_eq!(dirs.files().unwrap(), vec!["p.yaml".to_string()]);
        assert_eq!(text.matches("---\n").count(), 2);
        assert!(text.contains("kubernetes.io/metadata.name: x"), "{text}");
        dirs.remove("p.yaml").unwrap();
        dirs.remove("p.yaml").unwrap();
        assert!(dirs.files().unwrap().is_empty());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn pods_name_their_ports_as_upstream() {
        let p = pod(
            "x",
            "a",
            &BTreeMap::from([("pod".into(), "a".into())]),
            false,
        );
        let names: Vec<&str> = p["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["ports"][0]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "serve-80-tcp",
                "serve-80-udp",
                "serve-81-tcp",
                "serve-81-udp",
                "echo"
            ]
        );
    }
}
