//! `weft router --kubernetes`: the cluster's API as the source of policies, pods, namespaces and
//! peers ([`weft_kube`]). At start one list of the Nodes gives the first peers and the cluster
//! size for the first block agreement ([`first_nodes`]); then the watchers' events go to the
//! policy engine (Namespaces, Pods, NetworkPolicies) and to the mesh (Nodes: a new node's
//! InternalIP is dialled, a deleted node is forgotten and its pod-address blocks are taken back
//! as soon as it is unreachable, without waiting for `--ipam-grace`).

use super::Daemon;
use crate::policy::Policy;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_kube::kube;
use weft_kube::{Event, Kind, NodeAddrs};
use weft_policy::{Cluster, Object, ObjectKey};

/// The policy source's name in status.
pub const SOURCE: &str = "kubernetes";
/// How long the start waits for the first list of Nodes.
const FIRST_LIST: Duration = Duration::from_secs(60);

/// The client for `--kubernetes` (`--kubeconfig`, else in-cluster or `KUBECONFIG`).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client> {
    Ok(match kubeconfig {
        Some(p) => weft_kube::client_from_kubeconfig(p).await?,
        None => weft_kube::client_from_env().await?,
    })
}

/// The Nodes at start, retried for up to a minute (the API server may come up after the network).
pub async fn first_nodes(client: &kube::Client) -> Result<Vec<NodeAddrs>> {
    let deadline = Instant::now() + FIRST_LIST;
    loop {
        match weft_kube::list_nodes(client).await {
            Ok(n) => return Ok(n),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!("listing the cluster's nodes: {e}; trying again");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e).context("listing the cluster's nodes"),
        }
    }
}

/// The control address of each node other than this one (same address family as `listen`, or
/// either family when `listen` is `[::]`; the same port: every router of a cluster listens on the
/// same one).
pub fn node_peers(
    nodes: &[NodeAddrs],
    me: &str,
    listen: SocketAddr,
) -> BTreeMap<String, Vec<SocketAddr>> {
    let dual = matches!(listen.ip(), IpAddr::V6(a) if a.is_unspecified());
    nodes
        .iter()
        .filter(|n| n.name != me && !n.internal_ips.contains(&listen.ip()))
        .map(|n| {
            let addrs = n
                .internal_ips
                .iter()
                // A router on `[::]` speaks both families: the node's first address of either.
                .filter(|ip| ip.is_ipv4() == listen.is_ipv4() || dual)
                .take(1)
                .map(|ip| SocketAddr::new(*ip, listen.port()))
                .collect();
            (n.name.clone(), addrs)
        })
        .collect()
}

/// Replaces every object of `kind` in `cluster` with `objects`; the invalid ones are refused
/// (and reported), the rest apply.
fn replace_kind(cluster: &mut Cluster, kind: Kind, objects: &[Object]) -> Result<(), Vec<String>> {
    let keep: BTreeSet<ObjectKey> = objects.iter().map(Object::key).collect();
    let present: Vec<ObjectKey> = match kind {
        Kind::Namespace => cluster
            .namespace_objects()
            .into_iter()
            .map(ObjectKey::Namespace)
            .collect(),
        Kind::Pod => cluster.pods().keys().cloned().map(ObjectKey::Pod).collect(),
        Kind::NetworkPolicy => cluster
            .policies()
            .map(|p| ObjectKey::NetworkPolicy {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
            })
            .collect(),
        Kind::Node => Vec::new(),
    };
    for k in present.into_iter().filter(|k| !keep.contains(k)) {
        cluster.delete(&k);
    }
    let errors: Vec<String> = objects
        .iter()
        .filter_map(|o| cluster.upsert(o).err().map(|e| e.to_string()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Consumes the source's events until it stops.
pub async fn run(
    d: Arc<Daemon>,
    policy: Arc<Policy>,
    client: kube::Client,
    mut known: BTreeMap<String, Vec<SocketAddr>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let _source = weft_kube::Source::new(client).spawn(tx);
    let mut synced: BTreeSet<&'static str> = BTreeSet::new();
    let me = d.cfg.nickname.clone();
    let listen = d.cfg.listen;
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Synced {
                kind: Kind::Node,
                objects,
            } => {
                let nodes: Vec<NodeAddrs> = objects
                    .iter()
                    .filter_map(|o| match o {
                        Object::Node(n) => Some(NodeAddrs::from_node(n)),
                        _ => None,
                    })
                    .collect();
                let now = node_peers(&nodes, &me, listen);
                for (name, addrs) in &known {
                    if !now.contains_key(name) {
                        node_gone(&d, name, addrs);
                    }
                }
                for (name, addrs) in &now {
                    node_seen(&d, name, addrs);
                }
                known = now;
            }
            Event::Applied(Object::Node(n)) => {
                let n = NodeAddrs::from_node(&n);
                let now = node_peers(std::slice::from_ref(&n), &me, listen);
                for (name, addrs) in now {
                    if let Some(old) = known.get(&name) {
                        let gone: Vec<SocketAddr> =
                            old.iter().filter(|a| !addrs.contains(a)).copied().collect();
                        for a in gone {
                            d.forget(a);
                        }
                    }
                    node_seen(&d, &name, &addrs);
                    known.insert(name, addrs);
                }
            }
            Event::Deleted(ObjectKey::Node(name)) => {
                if let Some(addrs) = known.remove(&name) {
                    node_gone(&d, &name, &addrs);
                }
            }
            Event::Synced { kind, objects } => {
                policy.update(SOURCE, |c| replace_kind(c, kind, &objects));
                synced.insert(kind.name());
                if synced.len() == 3 {
                    policy.set_synced(SOURCE, true, None);
                }
            }
            Event::Applied(o) => {
                policy.update(SOURCE, |c| c.upsert(&o).map_err(|e| vec![e.to_string()]))
            }
            Event::Deleted(k) => policy.update(SOURCE, |c| {
                c.delete(&k);
                Ok(())
            }),
            Event::Error { kind, message } => {
                tracing::warn!(kind = kind.name(), "kubernetes: {message}");
                policy.set_synced(SOURCE, false, Some(format!("{}: {message}", kind.name())));
            }
        }
    }
    tracing::warn!("kubernetes: the source stopped");
}

fn node_seen(d: &Daemon, name: &str, addrs: &[SocketAddr]) {
    for a in addrs {
        if d.connect(*a).changed {
            tracing::info!(node = name, "kubernetes: node {name} is a peer at {a}");
        }
    }
    // A node deleted and created again (same name) is a live host again.
    d.gossip.ipam_set_deleted_by_nickname(name, false);
}

fn node_gone(d: &Daemon, name: &str, addrs: &[SocketAddr]) {
    for a in addrs {
        d.forget(*a);
    }
    let peers = d.gossip.ipam_set_deleted_by_nickname(name, true);
    tracing::info!(
        node = name,
        peers = peers.len(),
        "kubernetes: node {name} was deleted: forgotten, its pod-address blocks are taken back once it is unreachable"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_become_peers_of_the_same_family_and_port_but_not_this_host() {
        let n = |name: &str, ips: &[&str]| NodeAddrs {
            name: name.into(),
            internal_ips: ips.iter().map(|i| i.parse::<IpAddr>().unwrap()).collect(),
        };
        let nodes = [
            n("h1", &["10.0.0.1"]),
            n("h2", &["fd00::2", "10.0.0.2"]),
            n("h3", &["10.0.0.3", "10.0.0.33"]),
            n("h4", &["fd00::4"]),
        ];
        let p = node_peers(&nodes, "h1", "10.0.0.1:6783".parse().unwrap());
        assert_eq!(p.len(), 3);
        assert_eq!(
            p["h2"],
            vec!["10.0.0.2:6783".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            p["h3"],
            vec!["10.0.0.3:6783".parse::<SocketAddr>().unwrap()]
        );
        assert!(p["h4"].is_empty());
        // The same host under another name (its address is ours) is not a peer either.
        let p = node_peers(&nodes, "other", "10.0.0.1:6783".parse().unwrap());
        assert!(!p.contains_key("h1"));
        // A router on `[::]` dials each node at its first address, of either family.
        let p = node_peers(&nodes, "h1", "[::]:6783".parse().unwrap());
        assert_eq!(
            p["h2"],
            vec!["[fd00::2]:6783".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            p["h3"],
            vec!["10.0.0.3:6783".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            p["h4"],
            vec!["[fd00::4]:6783".parse::<SocketAddr>().unwrap()]
        );
    }
}
