//! The validated cluster state the compiler and the reference evaluator read: namespaces with
//! labels, pods with labels and named ports, policies in a checked form (selectors parsed,
//! CIDRs parsed, ports in range). [`Cluster::upsert`] refuses an invalid object and keeps what
//! it had. The checks themselves live in `validate.rs`.
//!
//! Namespaces: every namespace carries `kubernetes.io/metadata.name=<name>` (added when the object
//! lacks it, as the API server does). A namespace with pods but no Namespace object is taken to
//! exist with that label only.

use crate::reference::Protocol;
use crate::validate;
use crate::{Error, Object, ObjectKey, PodKey};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// The label the API server puts on every namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A parsed label selector (`matchLabels` and `matchExpressions`, ANDed). Empty: everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    /// `matchLabels`.
    pub match_labels: Labels,
    /// `matchExpressions`.
    pub expressions: Vec<Requirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub operator: Operator,
    /// The values (empty for `Exists`/`DoesNotExist`).
    pub values: BTreeSet<String>,
}

/// A selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    /// The label is present with one of the values.
    In,
    /// The label is absent or has none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl Selector {
    /// Whether `labels` satisfy the selector.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    Operator::In => value.is_some_and(|v| r.values.contains(v)),
                    Operator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                }
            })
    }

    /// Whether the selector is empty (selects everything).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.expressions.is_empty()
    }
}

/// A pod as the compiler sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodState {
    /// Its labels.
    pub labels: Labels,
    /// Its containers' ports (`spec.containers[].ports[]`).
    pub ports: Vec<ContainerPort>,
    /// `status.podIPs` (or `status.podIP`), parsed.
    pub status_addresses: Vec<IpAddr>,
}

impl PodState {
    /// The port number a named port resolves to on this pod for `protocol`.
    pub fn resolve(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.protocol == protocol && p.name.as_deref() == Some(name))
            .map(|p| p.port)
    }
}

/// A container port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    /// Its name, if any.
    pub name: Option<String>,
    /// `containerPort`.
    pub port: u16,
    /// TCP, UDP or SCTP.
    pub protocol: Protocol,
}

/// A validated NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `spec.podSelector` (pods of `namespace`).
    pub pod_selector: Selector,
    /// The ingress rules when the policy is of type Ingress (`Some(vec![])`: deny all).
    pub ingress: Option<Vec<Rule>>,
    /// The egress rules when the policy is of type Egress.
    pub egress: Option<Vec<Rule>>,
}

impl Policy {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The rules of one direction, if the policy is of that type.
    pub fn rules(&self, direction: Direction) -> Option<&[Rule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }
}

/// A direction of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Connections towards the selected pods.
    Ingress,
    /// Connections from the selected pods.
    Egress,
}

/// One ingress or egress rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `from`/`to`; `None` (absent or empty): every peer.
    pub peers: Option<Vec<Peer>>,
    /// `ports`; `None` (absent or empty): every port of every protocol.
    pub ports: Option<Vec<PolicyPort>>,
}

/// One peer of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Pods chosen by labels.
    Pods {
        /// `namespaceSelector`; `None`: the policy's own namespace.
        namespaces: Option<Selector>,
        /// `podSelector` (empty when absent: all pods of the namespaces).
        pods: Selector,
    },
    /// `ipBlock`.
    IpBlock {
        /// `cidr`.
        cidr: IpNet,
        /// `except`, each inside `cidr`.
        except: Vec<IpNet>,
    },
}

/// One entry of `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyPort {
    /// TCP (the default), UDP or SCTP.
    pub protocol: Protocol,
    /// `None`: every port of the protocol.
    pub port: Option<PortRef>,
}

/// A port or a port range, or a named port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    /// `port` (and `endPort`): first and last, inclusive.
    Range(u16, u16),
    /// A named port, resolved from the destination pod's container ports.
    Named(String),
}

/// Everything the compiler needs to know about the cluster, apart from pod addresses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cluster {
    /// Namespace objects' labels (with the name label).
    namespaces: BTreeMap<String, Labels>,
    pods: BTreeMap<PodKey, PodState>,
    /// By (namespace, name).
    policies: BTreeMap<(String, String), Policy>,
}

/// A checked object, ready to be stored.
#[derive(Debug)]
pub(crate) enum Checked {
    Namespace(String, Labels),
    Pod(PodKey, PodState),
    Policy(Policy),
    Node,
}

impl Cluster {
    /// An empty cluster.
    pub fn new() -> Cluster {
        Cluster::default()
    }

    /// Adds or replaces an object. An invalid object is refused (naming the field) and the
    /// previous version of it, if any, stays in force. Nodes are accepted and ignored.
    pub fn upsert(&mut self, object: &Object) -> Result<(), Error> {
        let checked = validate::check(object)?;
        self.store(checked);
        Ok(())
    }

    fn store(&mut self, checked: Checked) {
        match checked {
            Checked::Namespace(name, labels) => {
                self.namespaces.insert(name, labels);
            }
            Checked::Pod(key, pod) => {
                self.pods.insert(key, pod);
            }
            Checked::Policy(p) => {
                self.policies
                    .insert((p.namespace.clone(), p.name.clone()), p);
            }
            Checked::Node => {}
        }
    }

    /// Removes an object; removing what is not there is not an error.
    pub fn delete(&mut self, key: &ObjectKey) {
        match key {
            ObjectKey::Namespace(n) => {
                self.namespaces.remove(n);
            }
            ObjectKey::Pod(p) => {
                self.pods.remove(p);
            }
            ObjectKey::NetworkPolicy { namespace, name } => {
                self.policies.remove(&(namespace.clone(), name.clone()));
            }
            ObjectKey::Node(_) => {}
        }
    }

    /// Replaces the whole state with `objects` (a relist, or a directory read again): every
    /// object is checked first; on the first invalid one the state is left as it was and the
    /// errors of all invalid objects are returned.
    pub fn replace_all(&mut self, objects: &[Object]) -> Result<(), Vec<Error>> {
        let mut checked = Vec::with_capacity(objects.len());
        let mut errors = Vec::new();
        for o in objects {
            match validate::check(o) {
                Ok(c) => checked.push(c),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut fresh = Cluster::new();
        for c in checked {
            fresh.store(c);
        }
        *self = fresh;
        Ok(())
    }

    /// The addresses the pod objects themselves carry (`status.podIPs`), for a source that has
    /// them; the compiler also takes addresses from the mesh.
    pub fn status_addresses(&self) -> BTreeMap<PodKey, Vec<IpAddr>> {
        self.pods
            .iter()
            .filter(|(_, p)| !p.status_addresses.is_empty())
            .map(|(k, p)| (k.clone(), p.status_addresses.clone()))
            .collect()
    }

    /// The names of the policies that select `pod` for ingress and for egress.
    pub fn selecting(&self, pod: &PodKey) -> (Vec<String>, Vec<String>) {
        let (mut ingress, mut egress) = (Vec::new(), Vec::new());
        let Some(state) = self.pods.get(pod) else {
            return (ingress, egress);
        };
        for p in self.policies_in(&pod.namespace) {
            if p.pod_selector.matches(&state.labels) {
                if p.ingress.is_some() {
                    ingress.push(p.key());
                }
                if p.egress.is_some() {
                    egress.push(p.key());
                }
            }
        }
        (ingress, egress)
    }

    /// Whether `pod` is isolated for ingress and for egress (selected by at least one policy of
    /// that type).
    pub fn isolation(&self, pod: &PodKey) -> (bool, bool) {
        let (i, e) = self.selecting(pod);
        (!i.is_empty(), !e.is_empty())
    }

    /// Counts for status: (namespaces, pods, policies). Namespaces count those with an object
    /// and those that only have pods.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut names: BTreeSet<&str> = self.namespaces.keys().map(String::as_str).collect();
        names.extend(self.pods.keys().map(|k| k.namespace.as_str()));
        (names.len(), self.pods.len(), self.policies.len())
    }

    /// The labels of namespace `name`: its object's (with the name label), or only the name
    /// label when there is no object.
    pub fn namespace_labels(&self, name: &str) -> Labels {
        match self.namespaces.get(name) {
            Some(l) => l.clone(),
            None => Labels::from([(NAMESPACE_NAME_LABEL.to_string(), name.to_string())]),
        }
    }

    /// Names of the namespaces that have a Namespace object.
    pub fn namespace_objects(&self) -> Vec<String> {
        self.namespaces.keys().cloned().collect()
    }

    /// Names of the namespaces with an object or with pods.
    pub fn namespace_names(&self) -> BTreeSet<&str> {
        let mut names: BTreeSet<&str> = self.namespaces.keys().map(String::as_str).collect();
        names.extend(self.pods.keys().map(|k| k.namespace.as_str()));
        names
    }

    /// Sets a pod's state directly (tests only).
    #[cfg(test)]
    pub(crate) fn set_pod_for_tests(&mut self, key: PodKey, pod: PodState) {
        self.pods.insert(key, pod);
    }

    /// A pod.
    pub fn pod(&self, key: &PodKey) -> Option<&PodState> {
        self.pods.get(key)
    }

    /// All pods.
    pub fn pods(&self) -> &BTreeMap<PodKey, PodState> {
        &self.pods
    }

    /// All policies, by namespace then name.
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values()
    }

    /// The policies of one namespace.
    pub fn policies_in<'a>(&'a self, namespace: &str) -> impl Iterator<Item = &'a Policy> {
        let ns = namespace.to_string();
        self.policies
            .range((ns.clone(), String::new())..)
            .take_while(move |((n, _), _)| *n == ns)
            .map(|(_, p)| p)
    }
}
