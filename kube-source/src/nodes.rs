//! A node's addresses, as the router's mesh peers.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node;

/// A node's name and its `InternalIP` addresses (`status.addresses`), in the order the node
/// reports them, without duplicates. The router uses them as mesh peers: a node that appears
/// adds peers, a node that goes away forgets them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeAddrs {
    /// `metadata.name` (empty if absent).
    pub name: String,
    /// The addresses of type `InternalIP` that parse as IP addresses (IPv4 and IPv6 on a
    /// dual-stack node). Hostnames, `ExternalIP` and unparsable entries are left out.
    pub internal_ips: Vec<IpAddr>,
}

impl NodeAddrs {
    /// The addresses of `node` (pure: reads `metadata.name` and `status.addresses`).
    pub fn from_node(node: &Node) -> NodeAddrs {
        let mut internal_ips = Vec::new();
        let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
        for address in addresses.into_iter().flatten() {
            if address.type_ != "InternalIP" {
                continue;
            }
            match address.address.trim().parse::<IpAddr>() {
                Ok(ip) if !internal_ips.contains(&ip) => internal_ips.push(ip),
                Ok(_) => {}
                Err(_) => tracing::debug!(
                    node = node.metadata.name.as_deref().unwrap_or(""),
                    address = address.address,
                    "InternalIP that is not an IP address, ignored"
                ),
            }
        }
        NodeAddrs {
            name: node.metadata.name.clone().unwrap_or_default(),
            internal_ips,
        }
    }
}

impl From<&Node> for NodeAddrs {
    fn from(node: &Node) -> NodeAddrs {
        NodeAddrs::from_node(node)
    }
}

/// Every node's addresses, from one list (the router's start: its first peers, and the cluster
/// size that its first pod-address block agreement needs).
///
/// # Errors
///
/// [`crate::Error::List`] when the list fails.
pub async fn list_nodes(client: &kube::Client) -> Result<Vec<NodeAddrs>, crate::Error> {
    let api: kube::Api<Node> = kube::Api::all(client.clone());
    let list = api
        .list(&Default::default())
        .await
        .map_err(|source| crate::Error::List {
            kind: "Node",
            source,
        })?;
    Ok(list.items.iter().map(NodeAddrs::from_node).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};

    fn node(addresses: Option<&[(&str, &str)]>) -> Node {
        let mut node = Node::default();
        node.metadata.name = Some("worker-1".into());
        node.status = Some(NodeStatus {
            addresses: addresses.map(|a| {
                a.iter()
                    .map(|(t, a)| NodeAddress {
                        type_: t.to_string(),
                        address: a.to_string(),
                    })
                    .collect()
            }),
            ..NodeStatus::default()
        });
        node
    }

    #[test]
    fn internal_ips_only_in_order_without_duplicates() {
        let n = node(Some(&[
            ("Hostname", "worker-1"),
            ("ExternalIP", "203.0.113.7"),
            ("InternalIP", "10.0.0.11"),
            ("InternalIP", "fd00::11"),
            ("InternalIP", "10.0.0.11"),
            ("InternalIP", "not-an-ip"),
            ("InternalDNS", "worker-1.internal"),
        ]));
        let addrs = NodeAddrs::from_node(&n);
        assert_eq!(addrs.name, "worker-1");
        assert_eq!(
            addrs.internal_ips,
            vec![
                "10.0.0.11".parse::<IpAddr>().unwrap(),
                "fd00::11".parse().unwrap()
            ]
        );
    }

    #[test]
    fn no_status_or_no_addresses_is_empty() {
        assert!(NodeAddrs::from_node(&node(None)).internal_ips.is_empty());
        assert!(NodeAddrs::from_node(&node(Some(&[])))
            .internal_ips
            .is_empty());
        let bare = Node::default();
        assert_eq!(NodeAddrs::from_node(&bare), NodeAddrs::default());
    }
}
