//! What the cases change: the policy files in every router's directory, the Namespace and Pod
//! manifests ([`CLUSTER_FILE`]), and pods attached and deleted while policies are in force.

use super::manifest::{self, CLUSTER_FILE};
use super::{cni_args, Netpol};
use anyhow::{ensure, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Instant;

impl Netpol {
    /// Writes the Namespace and Pod manifests of `pods` (namespace, name, labels) into
    /// [`CLUSTER_FILE`].
    pub(super) fn write_cluster(
        &mut self,
        pods: &[(String, String, BTreeMap<String, String>)],
    ) -> Result<()> {
        let mut docs: Vec<Value> = self
            .namespace_labels
            .iter()
            .map(|(n, l)| manifest::namespace(n, l))
            .collect();
        docs.extend(
            pods.iter()
                .map(|(ns, n, l)| manifest::pod(ns, n, l, self.sctp)),
        );
        if let Some(d) = &self.dirs {
            d.write(CLUSTER_FILE, &manifest::yaml_stream(&docs)?)?;
        }
        self.changed = Instant::now();
        Ok(())
    }

    fn current_objects(&self) -> Vec<(String, String, BTreeMap<String, String>)> {
        self.pods
            .iter()
            .map(|p| (p.namespace.clone(), p.name.clone(), p.labels.clone()))
            .collect()
    }

    /// Writes policy file `file` into every router's directory: a YAML stream of `docs` for
    /// `.yaml`/`.yml`, the single document as JSON for `.json`.
    pub fn write_policy(&mut self, file: &str, docs: &[Value]) -> Result<()> {
        let text = if file.ends_with(".json") {
            ensure!(docs.len() == 1, "a .json policy file holds one document");
            serde_json::to_string_pretty(&docs[0])?
        } else {
            manifest::yaml_stream(docs)?
        };
        let dirs = self
            .dirs
            .as_ref()
            .context("the routers do not enforce policy")?;
        dirs.write(file, &text)?;
        self.changed = Instant::now();
        Ok(())
    }

    /// Removes policy file `file` from every directory.
    pub fn remove_policy(&mut self, file: &str) -> Result<()> {
        if let Some(d) = &self.dirs {
            d.remove(file)?;
        }
        self.changed = Instant::now();
        Ok(())
    }

    /// Removes every policy file (all but the cluster file).
    pub fn clear_policies(&mut self) -> Result<()> {
        let files = match &self.dirs {
            Some(d) => d.files()?,
            None => Vec::new(),
        };
        for f in files.iter().filter(|f| f.as_str() != CLUSTER_FILE) {
            self.remove_policy(f)?;
        }
        Ok(())
    }

    /// Gives pod `id` these labels (rewrites its manifest).
    pub fn set_labels(&mut self, id: &str, labels: BTreeMap<String, String>) -> Result<()> {
        let p = self
            .pods
            .iter_mut()
            .find(|p| p.id() == id)
            .with_context(|| format!("no pod {id}"))?;
        p.labels = labels;
        let objects = self.current_objects();
        self.write_cluster(&objects)
    }

    /// Adds pod `namespace/name` on host index `host`: its manifest first (as the API server has
    /// the Pod before kubelet runs the CNI ADD), then the attachment and its servers.
    pub fn add_pod(
        &mut self,
        namespace: &str,
        name: &str,
        host: usize,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        let mut objects = self.current_objects();
        objects.push((namespace.into(), name.into(), labels.clone()));
        self.write_cluster(&objects)?;
        self.attach(namespace, name, host, labels)
    }

    /// Deletes pod `id`: `cnitool del`, its namespace, then its manifest.
    pub fn delete_pod(&mut self, id: &str) -> Result<()> {
        let i = self
            .pods
            .iter()
            .position(|p| p.id() == id)
            .with_context(|| format!("no pod {id}"))?;
        let p = self.pods.remove(i);
        let h = self.hosts[p.host].clone();
        let args = cni_args(&p.namespace, &p.name, &p.cni.ns);
        let out = self.cni.cnitool(
            &self.c.lab,
            &h,
            "del",
            &self.nets[p.host],
            &p.cni.ns,
            &[("CNI_ARGS", &args)],
        )?;
        ensure!(out.success(), "cnitool del {id}: {out}");
        let ns = p.cni.ns.clone();
        drop(p);
        self.c.lab.remove_netns(&ns)?;
        let objects = self.current_objects();
        self.write_cluster(&objects)
    }
}
