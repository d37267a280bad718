//! Clusters whose pods are attached through upstream `cnitool` and so sit behind the port guard
//! (and its flood limit): routers with IPAM, a CNI harness, one `weft` network per host
//! ([`cni_cluster`]), and pods added with their MAC ([`add_pod`]). Used by tests/tests/guard.rs
//! and tests/tests/floods.rs. Attachments are named as cnitool names them
//! `weft_tests::cni::cnitool_container_id`.

use crate::cni::{Cni, CniPod};
use std::time::Duration;
use weft_api::guard::GuardReport;
use weft_lab::testbed::{weft_bin, Cluster};
use weft_lab::{poll_until, Host};

/// The pod CIDR of these clusters.
pub const POD_CIDR: &str = "10.32.0.0/12";

/// `n` routers with IPAM (and `extra` arguments each), a CNI harness and each host's `weft`
/// network, every router ready to serve an ADD.
pub fn cni_cluster(tag: &str, n: u8, extra: &[&str]) -> (Cluster, Vec<Host>, Cni, Vec<String>) {
    assert!(weft_lab::require_root(), "these tests need root");
    let mut c = Cluster::new(tag, weft_bin().unwrap()).unwrap();
    let peers = n.to_string();
    let mut args = vec!["--pod-cidr", POD_CIDR, "--ipam-init-peers", &peers];
    args.extend_from_slice(extra);
    let hosts = c.full_mesh(n, &vec![&args[..]; n as usize]).unwrap();
    let cni = Cni::new(&c.lab).unwrap();
    let nets = hosts
        .iter()
        .map(|h| {
            let plugins = vec![Cni::weft_plugin(&c.state_dir(h))];
            cni.write_conflist(h, "weft", plugins).unwrap()
        })
        .collect();
    for h in &hosts {
        let ready = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
            c.ipam(h).ok().filter(|r| r.ready)
        });
        assert!(ready.is_some(), "{}:\n{}", h.name, c.router_log(h));
    }
    (c, hosts, cni, nets)
}

/// A pod attached by `cnitool add`, with its MAC.
#[derive(Debug)]
pub struct Guarded {
    /// The pod.
    pub pod: CniPod,
    /// Its MAC address.
    pub mac: [u8; 6],
}

/// Attaches a pod named `name` on `host` through `cnitool add` on network `net`.
pub fn add_pod(c: &mut Cluster, cni: &Cni, host: &Host, net: &str, name: &str) -> Guarded {
    let ns = c.lab.add_netns(&format!("{}-{name}", host.name)).unwrap();
    let pod = cni
        .cnitool_add(&c.lab, host, net, &ns)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.router_log(host)));
    let mac = c.lab.mac(&ns, "eth0").unwrap();
    Guarded { pod, mac }
}

/// The guard section of `host`'s status.
pub fn guard(c: &Cluster, host: &Host) -> GuardReport {
    c.status(host).unwrap().guard.expect("a guard section")
}

/// `(dropped packets, port name)` of `pod`'s port, if guarded.
pub fn port_drops(c: &Cluster, pod: &CniPod) -> Option<(u64, String)> {
    guard(c, &pod.host)
        .ports
        .into_iter()
        .find(|p| p.attachment.container_id == pod.container_id)
        .map(|p| (p.dropped_packets, p.port.name))
}
