//! The NetworkPolicy end-to-end harness (issue 13), after the upstream Kubernetes NetworkPolicy
//! e2e suite: a 3-host cluster of real routers, namespaces x, y, z with pods a, b, c in each
//! (attached through `cnitool` with the `CNI_ARGS` kubelet passes), servers in every pod, and a
//! prober that fills truth tables from real traffic.
//!
//! * [`Netpol`] (this file): the cluster and its pods; `objects.rs`: the Namespace and Pod
//!   manifests, the policies the cases write into every router's `--policy-dir`, pods added and
//!   deleted; `round.rs`: [`Netpol::observe`] and [`Netpol::expect_eventually`].
//! * [`truth`]: [`Reachability`] and [`Expectation`], the tables, printed upstream's way.
//! * [`serve`], [`probe`], [`conn`]: the servers, the prober, background traffic.
//! * [`manifest`]: the manifests and the atomic writes into the policy directories.
//!
//! Placement: h1 runs x/a, y/b, z/c; h2 x/b, y/c, z/a; h3 x/c, y/a, z/b, so every namespace has a
//! pod on every host and the tables hold same-host and cross-host pairs alike. A namespace `out`
//! on the underlay (10.200.0.250 and .251, not a host) stands for addresses outside the pod
//! network.

pub mod conn;
pub mod manifest;
mod objects;
pub mod probe;
mod round;
pub mod serve;
mod sock;
pub mod truth;

pub use round::Round;
pub use truth::{Expectation, Kind, Protocol, Reachability};

use crate::cni::{cnitool_container_id, weft_networks, Cni, CniPod};
use anyhow::{ensure, Result};
use manifest::PolicyDirs;
use serve::Server;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};
use weft_lab::testbed::{weft_bin, Cluster};
use weft_lab::{in_netns, Host};

/// The cluster's pod CIDR.
pub const POD_CIDR: &str = "10.32.0.0/12";
/// The namespaces of the test cluster.
pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
/// (namespace, pod, host index): where each pod runs.
pub const PLACEMENT: [(&str, &str, usize); 9] = [
    ("x", "a", 0),
    ("y", "b", 0),
    ("z", "c", 0),
    ("x", "b", 1),
    ("y", "c", 1),
    ("z", "a", 1),
    ("x", "c", 2),
    ("y", "a", 2),
    ("z", "b", 2),
];
/// The addresses of the namespace `out` on the underlay.
pub const OUTSIDE_IPS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(10, 200, 0, 250),
    Ipv4Addr::new(10, 200, 0, 251),
];
/// How long a router may take to apply a change of its policy directory (it promises 2 s).
pub const SETTLE: Duration = Duration::from_millis(2500);
/// How long [`Netpol::expect_eventually`] waits by default.
pub const DEADLINE: Duration = Duration::from_secs(20);
const SECRET: &str = "the weft netpol secret, long enough\n";

/// The data path between hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPath {
    /// The kernel VXLAN fast path (the default without a secret).
    FastPath,
    /// The UDP sleeve without encryption (`--no-fastpath`).
    PlainSleeve,
    /// The encrypted sleeve (`--secret-file`).
    EncryptedSleeve,
}

impl DataPath {
    /// What `weft status` shows as a peer's path.
    pub fn status_path(self) -> &'static str {
        match self {
            DataPath::FastPath => "fast path",
            _ => "direct",
        }
    }
}

/// Whether this `weft` binary has `router --policy-dir` (NetworkPolicy enforcement).
pub fn policy_supported(weft: &Path) -> bool {
    std::process::Command::new(weft)
        .args(["router", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--policy-dir"))
}

/// Whether the kernel has SCTP (probed with a `socket()` call in a lab namespace).
pub fn sctp_available(ns: &str) -> bool {
    in_netns(ns, || sock::available(sock::SCTP)).unwrap_or(false)
}

/// `CNI_ARGS` as kubelet (through containerd) passes them for pod `namespace/name`.
pub fn cni_args(namespace: &str, name: &str, netns: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};\
         K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID=00000000-0000-4000-8000-{:012x}",
        cnitool_container_id(&format!("/run/netns/{netns}")),
        netns.len() * 7919 + name.len()
    )
}

/// A pod of the test cluster.
#[derive(Debug)]
pub struct NetpolPod {
    /// Its Kubernetes namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its labels, as its manifest says.
    pub labels: BTreeMap<String, String>,
    /// Index of its host.
    pub host: usize,
    /// The attachment (address, network namespace).
    pub cni: CniPod,
    _server: Server,
}

impl NetpolPod {
    /// `namespace/name`, its name in the tables.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Its address.
    pub fn ip(&self) -> Ipv4Addr {
        self.cni.ip
    }
}

/// An address outside the pod network, served in the namespace `out`.
#[derive(Debug)]
pub struct Outside {
    /// Its name in the tables (`out/250`).
    pub name: String,
    /// Its address.
    pub ip: Ipv4Addr,
    _server: Server,
}

/// The test cluster; see the module docs. Servers stop when it is dropped, then the lab goes.
#[derive(Debug)]
pub struct Netpol {
    /// The pods, in creation order.
    pub pods: Vec<NetpolPod>,
    /// The outside addresses.
    pub outside: Vec<Outside>,
    /// Every router's policy directory, when the routers enforce policy.
    pub dirs: Option<PolicyDirs>,
    /// The kinds probed pod to pod: TCP, UDP (and SCTP when available) on 80 and 81.
    pub kinds: Vec<Kind>,
    /// Whether SCTP is probed.
    pub sctp: bool,
    /// The data path between hosts.
    pub path: DataPath,
    /// The hosts h1, h2, h3.
    pub hosts: Vec<Host>,
    namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    nets: Vec<String>,
    settled: Option<Expectation>,
    changed: Instant,
    /// The CNI runtime emulator.
    pub cni: Cni,
    /// The lab and its routers.
    pub c: Cluster,
}

impl Netpol {
    /// Builds the cluster: 3 routers on `path` with IPAM (and `--policy-dir` when `enforce`),
    /// `extra` router flags, the Namespace and Pod manifests, the 9 pods and their servers, and
    /// the outside namespace.
    pub fn start(tag: &str, path: DataPath, enforce: bool, extra: &[&str]) -> Result<Netpol> {
        let mut c = Cluster::new(tag, weft_bin()?)?;
        let hosts: Vec<Host> = (1..=3)
            .map(|i| c.add_host(&format!("h{i}")))
            .collect::<Result<_>>()?;
        let sctp = sctp_available(&hosts[0].ns);
        if !sctp {
            eprintln!("netpol: no SCTP in this kernel (socket() refused): SCTP is not probed");
        }
        let mut kinds = Vec::new();
        for port in serve::PORTS {
            kinds.extend([Kind::tcp(port), Kind::udp(port)]);
            if sctp {
                kinds.push(Kind::sctp(port));
            }
        }
        kinds.sort();
        let dirs = enforce
            .then(|| {
                PolicyDirs::new(
                    hosts
                        .iter()
                        .map(|h| c.lab.dir().join(format!("policy-{}", h.name)))
                        .collect(),
                )
            })
            .transpose()?;
        let secret = c.lab.dir().join("secret");
        std::fs::write(&secret, SECRET)?;
        let secret = secret.display().to_string();
        let mut base = vec!["--pod-cidr", POD_CIDR, "--ipam-init-peers", "3"];
        match path {
            DataPath::FastPath => {}
            DataPath::PlainSleeve => base.push("--no-fastpath"),
            DataPath::EncryptedSleeve => base.extend(["--secret-file", secret.as_str()]),
        }
        base.extend_from_slice(extra);
        let dir_args: Vec<String> = match &dirs {
            Some(d) => d.dirs().iter().map(|p| p.display().to_string()).collect(),
            None => Vec::new(),
        };
        let args: Vec<Vec<&str>> = (0..hosts.len())
            .map(|i| {
                let mut a = base.clone();
                if let Some(d) = dir_args.get(i) {
                    a.extend(["--policy-dir", d.as_str()]);
                }
                a
            })
            .collect();
        let namespace_labels = NAMESPACES
            .iter()
            .map(|n| (n.to_string(), BTreeMap::new()))
            .collect();
        let mut np = Netpol {
            pods: Vec::new(),
            outside: Vec::new(),
            dirs,
            kinds,
            sctp,
            path,
            hosts: hosts.clone(),
            namespace_labels,
            nets: Vec::new(),
            settled: None,
            changed: Instant::now(),
            cni: Cni::new(&c.lab)?,
            c,
        };
        let plan: Vec<_> = PLACEMENT
            .iter()
            .map(|(ns, p, _)| (ns.to_string(), p.to_string(), pod_labels(p)))
            .collect();
        np.write_cluster(&plan)?;
        // Start the routers the way `Cluster::full_mesh` does, each with its own directory.
        for (i, h) in hosts.iter().enumerate() {
            let seeds: Vec<&Host> = hosts[..i].iter().collect();
            np.c.start_router(h, &seeds, &args[i])?;
        }
        for h in &hosts {
            np.c.wait_peers(h, hosts.len() - 1, Duration::from_secs(20))?;
            for p in hosts.iter().filter(|p| p.name != h.name) {
                np.c.wait_path(h, &p.name, path.status_path(), Duration::from_secs(30))?;
            }
        }
        np.nets = weft_networks(&np.c, &np.cni, &hosts);
        for (ns, pod, host) in PLACEMENT {
            np.attach(ns, pod, host, pod_labels(pod))?;
        }
        np.add_outside()?;
        Ok(np)
    }

    /// Attaches pod `namespace/name` on host `host` through `cnitool add` with its `CNI_ARGS`,
    /// and starts its servers. Its manifest must already be written.
    fn attach(
        &mut self,
        namespace: &str,
        name: &str,
        host: usize,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        let h = self.hosts[host].clone();
        let netns = self
            .c
            .lab
            .add_netns(&format!("{}-{namespace}-{name}", h.name))?;
        let args = cni_args(namespace, name, &netns);
        let out = self.cni.cnitool(
            &self.c.lab,
            &h,
            "add",
            &self.nets[host],
            &netns,
            &[("CNI_ARGS", &args)],
        )?;
        ensure!(
            out.success(),
            "cnitool add {namespace}/{name} on {}: {out}\nrouter log:\n{}",
            h.name,
            self.c.router_log(&h)
        );
        let id = cnitool_container_id(&format!("/run/netns/{netns}"));
        let cni = CniPod::from_result(&h, &netns, &id, "eth0", out.json()?)?;
        let server = Server::start(
            &netns,
            &format!("{namespace}/{name}"),
            Ipv4Addr::UNSPECIFIED,
            self.sctp,
        )?;
        self.pods.push(NetpolPod {
            namespace: namespace.into(),
            name: name.into(),
            labels,
            host,
            cni,
            _server: server,
        });
        Ok(())
    }

    /// The namespace `out` on the underlay bridge with [`OUTSIDE_IPS`], a server on each.
    fn add_outside(&mut self) -> Result<()> {
        let lab = &mut self.c.lab;
        let ns = lab.add_netns("out")?;
        let ul = lab.underlay_ns().to_owned();
        lab.exec_ok(
            &ns,
            &[
                "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "out", "netns", &ul,
            ],
        )?;
        lab.exec_ok(&ns, &["ip", "link", "set", "eth0", "up"])?;
        for ip in OUTSIDE_IPS {
            lab.exec_ok(
                &ns,
                &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            )?;
        }
        lab.exec_ok(
            &ul,
            &[
                "ip",
                "link",
                "set",
                "out",
                "master",
                weft_lab::UNDERLAY_BRIDGE,
                "up",
            ],
        )?;
        for ip in OUTSIDE_IPS {
            let name = format!("out/{}", ip.octets()[3]);
            let server = Server::start(&ns, &name, ip, false)?;
            self.outside.push(Outside {
                name,
                ip,
                _server: server,
            });
        }
        Ok(())
    }

    /// The pod `ns/name`.
    pub fn pod(&self, id: &str) -> &NetpolPod {
        self.pods
            .iter()
            .find(|p| p.id() == id)
            .unwrap_or_else(|| panic!("no pod {id}"))
    }

    /// The pods' names, `ns/name`, in order.
    pub fn pod_names(&self) -> Vec<String> {
        self.pods.iter().map(NetpolPod::id).collect()
    }

    /// The hosts' names.
    pub fn host_names(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.name.clone()).collect()
    }

    /// Whether the routers enforce policy (they were started with `--policy-dir`).
    pub fn enforcing(&self) -> bool {
        self.dirs.is_some()
    }

    /// Everything allowed, over the current pods.
    pub fn all_allowed(&self) -> Expectation {
        let pods = self.pod_names();
        let outside: Vec<String> = self.outside.iter().map(|o| o.name.clone()).collect();
        Expectation {
            pods: self
                .kinds
                .iter()
                .map(|k| (*k, Reachability::new(&pods, &pods, true)))
                .collect(),
            hosts: Reachability::new(&self.host_names(), &pods, true),
            outside: Reachability::new(&pods, &outside, true),
        }
    }

    /// Denies, in `e.hosts`, every host but its own to `pod` (for a pod isolated for ingress:
    /// only its own node may always reach it).
    pub fn deny_remote_hosts_to(&self, e: &mut Expectation, pod: &str) {
        let own = self.hosts[self.pod(pod).host].name.clone();
        for h in self.host_names() {
            if h != own {
                e.hosts.deny(&h, pod);
            }
        }
    }
}

/// The labels of pod `name`: `pod=<name>`.
pub fn pod_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("pod".to_string(), name.to_string())])
}
