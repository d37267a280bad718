//! A synthetic cluster of any size, for the benches (`benches/benches/policy.rs`) and the
//! large-cluster test: `namespaces` namespaces of `pods` pods each, `policies` policies per
//! namespace (each selecting a tenth of the namespace's pods, for ingress from frontends, from an
//! app of other teams' namespaces and from an ipBlock with an exception, on a numeric and a named
//! port; egress to a database app anywhere and to outside addresses on 443), every
//! `local_every`-th pod on this host.

use crate::{Object, PodKey};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The objects, the pods' addresses and this host's pods.
#[derive(Debug, Clone)]
pub struct Synthetic {
    /// Namespaces, pods and policies.
    pub objects: Vec<Object>,
    /// Every pod's address (10.1.0.0 upwards).
    pub addresses: BTreeMap<PodKey, Vec<IpAddr>>,
    /// This host's pods.
    pub local: BTreeSet<PodKey>,
}

impl Synthetic {
    /// The cluster described in the module documentation.
    pub fn new(namespaces: usize, pods: usize, policies: usize, local_every: usize) -> Synthetic {
        let mut objects = Vec::new();
        let mut addresses = BTreeMap::new();
        let mut local = BTreeSet::new();
        for n in 0..namespaces {
            let ns: Namespace = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("ns{n}"), "labels": {"team": format!("t{}", n % 5)}}
            }))
            .expect("a namespace");
            objects.push(Object::Namespace(ns));
            for p in 0..pods {
                let i = n * pods + p;
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("p{p}"), "namespace": format!("ns{n}"),
                                 "labels": {"app": format!("app{}", p % 10), "role": if p % 3 == 0 { "frontend" } else { "backend" }}},
                    "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]}
                }))
                .expect("a pod");
                objects.push(Object::Pod(pod));
                let k = PodKey {
                    namespace: format!("ns{n}"),
                    name: format!("p{p}"),
                };
                let a = IpAddr::from([
                    10,
                    (1 + i / 65536) as u8,
                    (i / 256 % 256) as u8,
                    (i % 256) as u8,
                ]);
                addresses.insert(k.clone(), vec![a]);
                if i.is_multiple_of(local_every.max(1)) {
                    local.insert(k);
                }
            }
            for j in 0..policies {
                let pol: NetworkPolicy = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("pol{j}"), "namespace": format!("ns{n}")},
                    "spec": {
                        "podSelector": {"matchLabels": {"app": format!("app{}", j % 10)}},
                        "policyTypes": ["Ingress", "Egress"],
                        "ingress": [{"from": [
                            {"podSelector": {"matchLabels": {"role": "frontend"}}},
                            {"namespaceSelector": {"matchLabels": {"team": format!("t{}", j % 5)}},
                             "podSelector": {"matchLabels": {"app": "app1"}}},
                            {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}],
                            "ports": [{"port": 80}, {"port": "http"}]}],
                        "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "app0"}}}],
                                    "ports": [{"port": 5432}]},
                                   {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}],
                                    "ports": [{"port": 443}]}]
                    }
                }))
                .expect("a policy");
                objects.push(Object::NetworkPolicy(pol));
            }
        }
        Synthetic {
            objects,
            addresses,
            local,
        }
    }

    /// The addresses after one pod (`ns0/p1`) took a new address, as when it is deleted and
    /// created again on another host: the change a pod coming or going makes to the inputs.
    pub fn addresses_after_one_pod_moved(&self) -> BTreeMap<PodKey, Vec<IpAddr>> {
        let mut more = self.addresses.clone();
        more.insert(
            PodKey {
                namespace: "ns0".into(),
                name: "p1".into(),
            },
            vec![IpAddr::from([10, 250, 0, 1])],
        );
        more
    }
}
