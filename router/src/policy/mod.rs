//! NetworkPolicy on this host: the sources ([`dir`], the Kubernetes API), the cluster state
//! they feed ([`weft_policy::Cluster`]), the pod addresses the mesh carries (each router lists
//! its pods' identities and addresses in its gossip record), the compile, and the kernel
//! ([`apply`]): one `nft -f` transaction from the ruleset in force to the new one, only when
//! something changed.
//!
//! Nothing is applied before every source has been read once (an empty state would lift every
//! isolation). At start the ruleset the previous run left is read back from the kernel and the
//! first transaction goes from it ([`weft_policy::nft::from_json`]): no flush, no gap. Other
//! hosts' pod addresses, which the mesh takes a moment to bring back, come from the last run's
//! copy (`<state-dir>/policy-addresses.json`) for [`ADDRESS_CACHE_FOR`] after start.

pub mod apply;
pub mod denials;
pub mod dir;

use crate::ipam::Ipam;
use gossip::driver::Gossip;
use gossip::topology::PodEntry;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weft_api::policy::{PodPolicy, PolicyReport, SourceReport};
use weft_policy::model::Direction;
use weft_policy::nft::{Ruleset, Verdict};
use weft_policy::{Cluster, HostRules, Object, PodKey};

/// How often the sources are looked at and the inputs compared.
pub const ROUND: Duration = Duration::from_millis(500);
/// How long after start the previous run's copy of other hosts' pod addresses is used for pods
/// the mesh has not brought back yet.
pub const ADDRESS_CACHE_FOR: Duration = Duration::from_secs(60);
/// The copy of the pod addresses in the state directory.
pub const ADDRESS_FILE: &str = "policy-addresses.json";

/// The status name of the directory source at `path`.
fn dir_source(path: &std::path::Path) -> String {
    format!("dir:{}", path.display())
}

/// Where policies, pods and namespaces come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyOptions {
    /// `--policy-dir`.
    pub dir: Option<PathBuf>,
    /// `--kubernetes`.
    pub kubernetes: bool,
    /// `--kubeconfig` (else in-cluster configuration, or `KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
}

impl PolicyOptions {
    /// Whether any source is configured.
    pub fn enabled(&self) -> bool {
        self.dir.is_some() || self.kubernetes
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One source's state, for status.
#[derive(Debug, Default, Clone)]
struct SourceState {
    synced: bool,
    ok: bool,
    last_sync: Option<Instant>,
    errors: Vec<String>,
}

/// Every pod's addresses, by pod.
pub type Addresses = BTreeMap<PodKey, Vec<IpAddr>>;

/// A compile's inputs: the cluster's generation, the pod addresses, the local pods.
type Inputs = (u64, BTreeMap<PodKey, Vec<IpAddr>>, BTreeSet<PodKey>);

/// What the compile and the kernel last got.
#[derive(Debug, Default)]
struct Applied {
    /// The ruleset in force (as written, or read back at start).
    ruleset: Option<Ruleset>,
    /// The rules it was written from.
    rules: Option<HostRules>,
    /// The inputs of the last compile, to skip compiles that would change nothing.
    inputs: Option<Inputs>,
    /// The pods last listed in our gossip record.
    gossiped: Option<Vec<PodEntry>>,
}

#[derive(Debug, Default)]
struct Stats {
    applied: u64,
    apply_errors: u64,
    last_error: Option<String>,
    last_transaction_lines: u64,
    last_compile_ms: f64,
    ruleset_lines: u64,
    counters: BTreeMap<(IpAddr, Direction, Verdict), (u64, u64)>,
}

/// NetworkPolicy enforcement on this host.
#[derive(Debug)]
pub struct Policy {
    opts: PolicyOptions,
    state_dir: PathBuf,
    started: Instant,
    /// The cluster as the sources describe it, and its generation (raised on every change).
    cluster: Mutex<(Arc<Cluster>, u64)>,
    sources: Mutex<BTreeMap<String, SourceState>>,
    /// The previous run's pod addresses, used for [`ADDRESS_CACHE_FOR`] after start.
    cached_addresses: BTreeMap<PodKey, Vec<IpAddr>>,
    applied: tokio::sync::Mutex<Applied>,
    stats: Mutex<Stats>,
    wake: tokio::sync::Notify,
    denials: Arc<denials::Denials>,
    /// A new policy directory from a reload, for the task to take.
    new_dir: Mutex<Option<PathBuf>>,
    /// The directory in force.
    dir: Mutex<Option<PathBuf>>,
    /// The pod addresses of the last compile, for naming pods in status.
    last_addresses: Mutex<BTreeMap<PodKey, Vec<IpAddr>>>,
}

impl Policy {
    /// Policy with the sources of `opts`; turns bridge netfilter on and reads back the ruleset
    /// a previous run left.
    pub async fn start(opts: PolicyOptions, state_dir: PathBuf) -> anyhow::Result<Arc<Policy>> {
        tokio::task::spawn_blocking(apply::enable_bridge_netfilter).await??;
        let ruleset = tokio::task::spawn_blocking(apply::read_table).await?;
        if ruleset.is_some() {
            tracing::info!(
                "policy: the previous run's ruleset stays in force until the sources are read"
            );
        }
        let cached_addresses = std::fs::read_to_string(state_dir.join(ADDRESS_FILE))
            .ok()
            .and_then(|t| serde_json::from_str::<Vec<(PodKey, Vec<IpAddr>)>>(&t).ok())
            .map(|v| v.into_iter().collect())
            .unwrap_or_default();
        let mut sources = BTreeMap::new();
        if let Some(d) = &opts.dir {
            sources.insert(dir_source(d), SourceState::default());
        }
        if opts.kubernetes {
            sources.insert("kubernetes".to_string(), SourceState::default());
        }
        Ok(Arc::new(Policy {
            opts: opts.clone(),
            state_dir,
            started: Instant::now(),
            cluster: Mutex::new((Arc::new(Cluster::new()), 0)),
            sources: Mutex::new(sources),
            cached_addresses,
            applied: tokio::sync::Mutex::new(Applied {
                ruleset,
                ..Applied::default()
            }),
            stats: Mutex::new(Stats::default()),
            wake: tokio::sync::Notify::new(),
            last_addresses: Mutex::new(BTreeMap::new()),
            new_dir: Mutex::new(None),
            dir: Mutex::new(opts.dir.clone()),
            denials: {
                let d = Arc::new(denials::Denials::default());
                denials::start(d.clone());
                d
            },
        }))
    }

    /// The task that reads the directory source and keeps the kernel in step, every
    /// [`ROUND`] and whenever woken.
    pub async fn run(self: Arc<Self>, ipam: Arc<Ipam>, gossip: Gossip) {
        let mut dir = self.opts.dir.clone().map(dir::DirSource::new);
        let mut tick = tokio::time::interval(ROUND);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
            }
            if let Some(new) = lock(&self.new_dir).take() {
                // A reload named another directory (`set_dir` has renamed its source): its
                // first read replaces the old one's objects.
                dir = Some(dir::DirSource::new(new));
            }
            if let Some(mut d) = dir.take() {
                let (d2, poll) = tokio::task::spawn_blocking(move || {
                    let p = d.poll();
                    (d, p)
                })
                .await
                .expect("the directory reader does not panic");
                let name = dir_source(d2.path());
                let errors = d2.errors();
                match poll {
                    dir::Poll::Changed(objects) => self.replace_source(&name, &objects, errors),
                    dir::Poll::Unchanged => self.note_source(&name, errors),
                }
                dir = Some(d2);
            }
            self.sync(&ipam, &gossip).await;
        }
    }

    /// Replaces the whole cluster state with `objects` (the directory source). Invalid objects
    /// keep the previous state in force; they are reported with the source's other errors.
    fn replace_source(&self, source: &str, objects: &[Object], mut errors: Vec<String>) {
        let result = {
            let mut c = lock(&self.cluster);
            let mut next = (*c.0).clone();
            let r = next.replace_all(objects);
            if r.is_ok() {
                c.0 = Arc::new(next);
                c.1 += 1;
            }
            r
        };
        if let Err(invalid) = &result {
            errors.extend(invalid.iter().map(|e| e.to_string()));
            tracing::warn!(
                source,
                errors = ?errors,
                "policy: invalid objects; the last good state stays in force"
            );
        } else if !errors.is_empty() {
            tracing::warn!(source, errors = ?errors, "policy: files that do not parse keep their last good objects");
        }
        let mut s = lock(&self.sources);
        let st = s.entry(source.to_string()).or_default();
        st.ok = errors.is_empty();
        st.errors = errors;
        if result.is_ok() {
            st.synced = true;
            st.last_sync = Some(Instant::now());
        }
    }

    fn note_source(&self, source: &str, errors: Vec<String>) {
        let mut s = lock(&self.sources);
        let st = s.entry(source.to_string()).or_default();
        if st.errors != errors {
            if !errors.is_empty() {
                tracing::warn!(source, errors = ?errors, "policy: source errors");
            }
            st.ok = errors.is_empty();
            st.errors = errors;
        }
    }

    /// The policy directory in force.
    pub fn dir(&self) -> Option<PathBuf> {
        lock(&self.dir).clone()
    }

    /// Switches to another policy directory, from a reload.
    ///
    /// The status names the new directory as soon as this returns (so `weft status` right
    /// after `weft reload` tells the truth), not yet read: no last sync. The old directory's
    /// objects stay in force until the new one is read, so the source keeps counting as synced
    /// if the old one was: pods added meanwhile still meet the policies in force.
    pub fn set_dir(&self, dir: PathBuf) {
        let old = lock(&self.dir).replace(dir.clone());
        let mut s = lock(&self.sources);
        let synced = old
            .and_then(|o| s.remove(&dir_source(&o)))
            .is_some_and(|st| st.synced);
        s.insert(
            dir_source(&dir),
            SourceState {
                synced,
                ..SourceState::default()
            },
        );
        drop(s);
        *lock(&self.new_dir) = Some(dir);
        self.wake.notify_one();
    }

    /// Applies a change of the cluster state made by a source that sends events (Kubernetes).
    pub fn update(&self, source: &str, f: impl FnOnce(&mut Cluster) -> Result<(), Vec<String>>) {
        let result = {
            let mut c = lock(&self.cluster);
            let mut next = (*c.0).clone();
            let r = f(&mut next);
            // Valid parts of a change apply; the invalid objects are refused by the cluster.
            c.0 = Arc::new(next);
            c.1 += 1;
            r
        };
        let mut s = lock(&self.sources);
        let st = s.entry(source.to_string()).or_default();
        match result {
            Ok(()) => {
                st.ok = true;
                st.errors.clear();
            }
            Err(e) => {
                tracing::warn!(source, errors = ?e, "policy: invalid objects refused");
                st.ok = false;
                st.errors = e;
            }
        }
        st.last_sync = Some(Instant::now());
        drop(s);
        self.wake.notify_one();
    }

    /// Marks a source as synced (its first full list is in).
    pub fn set_synced(&self, source: &str, ok: bool, error: Option<String>) {
        let mut s = lock(&self.sources);
        let st = s.entry(source.to_string()).or_default();
        st.synced |= ok;
        if let Some(e) = error {
            st.ok = false;
            st.errors = vec![e];
        }
        drop(s);
        self.wake.notify_one();
    }

    fn all_synced(&self) -> bool {
        lock(&self.sources).values().all(|s| s.synced)
    }

    /// Compiles and applies now (CNI ADD calls this before the pod's port joins the bridge, so
    /// that the pod's first packet already meets its policies).
    pub async fn sync_now(&self, ipam: &Ipam, gossip: &Gossip) {
        self.sync(ipam, gossip).await;
    }

    /// One round: our pods into our gossip record, the inputs gathered, compiled and applied if
    /// they changed.
    async fn sync(&self, ipam: &Ipam, gossip: &Gossip) {
        let mut applied = self.applied.lock().await;
        // Our pods, as the mesh will list them.
        let reservations = ipam.reservations();
        let mut ours: Vec<PodEntry> = reservations
            .iter()
            .filter_map(|r| {
                let p = r.pod.as_ref()?;
                Some(PodEntry {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    addrs: r.addresses(),
                })
            })
            .collect();
        ours.sort();
        if applied.gossiped.as_ref() != Some(&ours) {
            let left_out = gossip.set_pods(ours.clone());
            if left_out > 0 {
                tracing::warn!(
                    left_out,
                    "policy: {left_out} pod(s) do not fit this host's gossip record; other hosts cannot select them by label"
                );
            }
            applied.gossiped = Some(ours.clone());
        }
        if !self.all_synced() {
            return;
        }
        let local: BTreeSet<PodKey> = ours
            .iter()
            .map(|p| PodKey {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
            })
            .collect();
        let (cluster, generation) = {
            let c = lock(&self.cluster);
            (c.0.clone(), c.1)
        };
        let addresses = self.addresses(&cluster, gossip);
        let cluster = with_bare_pods(cluster, &addresses);
        let inputs = (generation, addresses, local);
        if applied.inputs.as_ref() == Some(&inputs) && applied.rules.is_some() {
            return;
        }
        let (generation, addresses, local) = inputs;
        let (rules, ruleset, ms) = {
            let (cluster, addresses, local) = (cluster.clone(), addresses.clone(), local.clone());
            tokio::task::spawn_blocking(move || {
                let t = Instant::now();
                let rules = weft_policy::compile(&cluster, &addresses, &local);
                let ruleset = weft_policy::nft::ruleset(&rules);
                (rules, ruleset, t.elapsed().as_secs_f64() * 1000.0)
            })
            .await
            .expect("the compiler does not panic")
        };
        let changed = applied.ruleset.as_ref() != Some(&ruleset);
        if changed {
            let script = weft_policy::nft::transaction(applied.ruleset.as_ref(), &ruleset);
            let lines = script.lines().count() as u64;
            let s2 = script.clone();
            let r = tokio::task::spawn_blocking(move || apply::run(&s2))
                .await
                .expect("nft runner does not panic");
            match r {
                Ok(()) => {
                    let mut st = lock(&self.stats);
                    st.last_compile_ms = ms;
                    st.applied += 1;
                    st.last_error = None;
                    st.last_transaction_lines = lines;
                    st.ruleset_lines = weft_policy::nft::transaction(None, &ruleset)
                        .lines()
                        .count() as u64;
                    tracing::info!(lines, compile_ms = ms, "policy: ruleset applied");
                    applied.ruleset = Some(ruleset);
                }
                Err(e) => {
                    {
                        let mut st = lock(&self.stats);
                        st.last_compile_ms = ms;
                        st.apply_errors += 1;
                        st.last_error = Some(format!("{e:#}"));
                    }
                    tracing::error!(
                        "policy: applying the ruleset failed, the previous one stays: {e:#}"
                    );
                    // Read back what the kernel holds, so the next try starts from the truth.
                    applied.ruleset = tokio::task::spawn_blocking(apply::read_table)
                        .await
                        .ok()
                        .flatten();
                    applied.inputs = None;
                    return;
                }
            }
        }
        self.save_addresses(&addresses);
        lock(&self.last_addresses).clone_from(&addresses);
        applied.rules = Some(rules);
        applied.inputs = Some((generation, addresses, local));
    }

    /// Every pod address known: the sources' own (`status.podIPs`, which win), the mesh's (every
    /// host's record, ours included), and for a while after start the previous run's copy.
    fn addresses(&self, cluster: &Cluster, gossip: &Gossip) -> BTreeMap<PodKey, Vec<IpAddr>> {
        let mut out: BTreeMap<PodKey, Vec<IpAddr>> = BTreeMap::new();
        if self.started.elapsed() < ADDRESS_CACHE_FOR {
            out.extend(self.cached_addresses.clone());
        }
        let (_, pods) = gossip.pods();
        for (_, entries) in pods {
            for p in entries {
                out.insert(
                    PodKey {
                        namespace: p.namespace,
                        name: p.name,
                    },
                    p.addrs,
                );
            }
        }
        // The API's own record of a pod's addresses is authoritative: a host cannot claim
        // another pod's identity for addresses the API gives elsewhere. A manifest's `status`
        // in a policy directory is not (it is ignored, as the API would overwrite it).
        if self.opts.kubernetes {
            out.extend(cluster.status_addresses());
        }
        out
    }

    fn save_addresses(&self, addresses: &BTreeMap<PodKey, Vec<IpAddr>>) {
        let list: Vec<(&PodKey, &Vec<IpAddr>)> = addresses.iter().collect();
        let path = self.state_dir.join(ADDRESS_FILE);
        let tmp = path.with_extension("json.tmp");
        let r = serde_json::to_vec(&list)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = r {
            tracing::debug!("policy: saving {}: {e}", path.display());
        }
    }

    /// What the last compile evaluated, for `weft trace`: the cluster (with a bare pod for every
    /// identity known only by its address, as compiled) and the pod addresses; `None` before
    /// every source has been read once (nothing of ours is enforced yet).
    pub fn inputs(&self) -> Option<(Arc<Cluster>, Addresses)> {
        if !self.all_synced() {
            return None;
        }
        let cluster = lock(&self.cluster).0.clone();
        let addresses = lock(&self.last_addresses).clone();
        Some((with_bare_pods(cluster, &addresses), addresses))
    }

    /// Reads the counters again (for status and metrics).
    pub async fn refresh(&self) {
        let c = tokio::task::spawn_blocking(apply::read_counters)
            .await
            .unwrap_or_default();
        lock(&self.stats).counters = c;
    }

    /// Removes the table (`weft leave`).
    pub async fn remove(&self) -> anyhow::Result<()> {
        let mut applied = self.applied.lock().await;
        tokio::task::spawn_blocking(apply::remove).await??;
        *applied = Applied::default();
        Ok(())
    }

    /// The latest denials, with the pods' names where the addresses are pods'.
    fn recent_denials(&self) -> Vec<String> {
        let names: BTreeMap<IpAddr, String> = lock(&self.last_addresses)
            .iter()
            .flat_map(|(k, addrs)| addrs.iter().map(move |a| (*a, k.to_string())))
            .collect();
        let name = |a: &IpAddr| names.get(a).cloned().unwrap_or_else(|| "-".into());
        self.denials
            .latest()
            .into_iter()
            .map(|d| {
                format!(
                    "{} s ago, {} denied: {} ({} -> {})",
                    d.at.elapsed().as_secs(),
                    d.direction,
                    d.flow,
                    name(&d.flow.src),
                    name(&d.flow.dst)
                )
            })
            .collect()
    }

    /// The status section.
    pub fn report(&self, ipam: &Ipam, gossip: &Gossip) -> PolicyReport {
        let (cluster, _) = {
            let c = lock(&self.cluster);
            (c.0.clone(), c.1)
        };
        let st = lock(&self.stats);
        let (namespaces, pods, policies) = cluster.counts();
        let mut local_pods = Vec::new();
        let counters = &st.counters;
        // A dual-stack pod's counts are those of both its addresses.
        let count = |addrs: &[IpAddr], d: Direction, v: Verdict| -> u64 {
            addrs
                .iter()
                .map(|a| counters.get(&(*a, d, v)).map_or(0, |c| c.0))
                .sum()
        };
        for r in ipam.reservations() {
            let addr = r.address;
            let all = r.addresses();
            let mut p = PodPolicy {
                pod: r
                    .pod
                    .as_ref()
                    .map(|p| format!("{}/{}", p.namespace, p.name))
                    .unwrap_or_default(),
                address: addr.to_string(),
                ..PodPolicy::default()
            };
            if let Some(id) = &r.pod {
                let key = PodKey {
                    namespace: id.namespace.clone(),
                    name: id.name.clone(),
                };
                (p.ingress, p.egress) = cluster.selecting(&key);
            }
            p.allowed_in = count(&all, Direction::Ingress, Verdict::Allowed);
            p.allowed_out = count(&all, Direction::Egress, Verdict::Allowed);
            p.dropped_in = count(&all, Direction::Ingress, Verdict::Dropped);
            p.dropped_out = count(&all, Direction::Egress, Verdict::Dropped);
            local_pods.push(p);
        }
        let mut dropped = BTreeMap::new();
        dropped.insert(
            "ingress".to_string(),
            local_pods.iter().map(|p| p.dropped_in).sum(),
        );
        dropped.insert(
            "egress".to_string(),
            local_pods.iter().map(|p| p.dropped_out).sum(),
        );
        let sources = lock(&self.sources)
            .iter()
            .map(|(name, s)| SourceReport {
                name: name.clone(),
                ok: s.ok && s.synced,
                last_sync_secs_ago: s.last_sync.map(|t| t.elapsed().as_secs()),
                errors: if s.synced || !s.errors.is_empty() {
                    s.errors.clone()
                } else {
                    vec!["not read yet: the previous ruleset stays in force".into()]
                },
                objects: BTreeMap::new(),
            })
            .collect();
        let pods_with_address = lock(&self.last_addresses).len() as u64;
        let known = gossip.routes().known;
        let nick = |p: gossip::PeerName| {
            known
                .iter()
                .find(|(n, _)| *n == p)
                .map_or_else(|| "(this host)".to_string(), |(_, k)| k.clone())
        };
        let (_, by_peer) = gossip.pods();
        let mesh_pods = by_peer
            .into_iter()
            .map(|(p, pods)| (nick(p), pods.len() as u64))
            .collect();
        let recent_denials = self.recent_denials();
        PolicyReport {
            state: st.last_error.clone().unwrap_or_else(|| "on".into()),
            sources,
            policies: policies as u64,
            namespaces: namespaces as u64,
            pods: pods as u64,
            pods_with_address,
            mesh_pods,
            applied: st.applied,
            apply_errors: st.apply_errors,
            last_transaction_lines: st.last_transaction_lines,
            last_compile_ms: st.last_compile_ms,
            ruleset_lines: st.ruleset_lines,
            local_pods,
            dropped,
            recent_denials,
        }
    }
}

/// `cluster` with a pod without labels or ports for every identity that has an address but no
/// Pod object (a pod attached with `K8S_POD_NAMESPACE`/`K8S_POD_NAME` whose manifest the source
/// does not have): it is in its namespace, so namespace-wide selectors (`podSelector: {}`) and
/// namespace selectors pick it, as they would pick the real pod.
fn with_bare_pods(
    cluster: Arc<Cluster>,
    addresses: &BTreeMap<PodKey, Vec<IpAddr>>,
) -> Arc<Cluster> {
    let missing: Vec<&PodKey> = addresses
        .keys()
        .filter(|k| cluster.pod(k).is_none())
        .collect();
    if missing.is_empty() {
        return cluster;
    }
    let mut c = (*cluster).clone();
    for k in missing {
        let pod = weft_policy::k8s_openapi::api::core::v1::Pod {
            metadata: weft_policy::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                namespace: Some(k.namespace.clone()),
                name: Some(k.name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        if let Err(e) = c.upsert(&Object::Pod(pod)) {
            tracing::debug!("policy: pod {k} from the mesh: {e}");
        }
    }
    Arc::new(c)
}
