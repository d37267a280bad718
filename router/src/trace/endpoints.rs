//! `weft trace`'s endpoints: what was asked ([`Target`]: a pod, an address, a MAC), the flow
//! ([`Flow`]), and where an endpoint is in a [`Snapshot`]: this host's reservations, the mesh's
//! pod lists, the IPAM blocks, the MAC table.

use super::{bad, LocalPod, Snapshot, TraceError};
use std::net::IpAddr;
use vswitch::engine::Peer;
use vswitch::{Location, MacAddr, PeerName};
use weft_api::trace::TraceEndpoint;
use weft_policy::reference::Protocol;
use weft_policy::PodKey;

/// What the trace is asked about: a pod, an address, a MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `namespace/name`.
    Pod(PodKey),
    /// An IP address (either family).
    Addr(IpAddr),
    /// A MAC address.
    Mac(MacAddr),
}

impl std::str::FromStr for Target {
    type Err = TraceError;
    fn from_str(s: &str) -> Result<Target, TraceError> {
        if let Ok(a) = s.parse::<IpAddr>() {
            return Ok(Target::Addr(a));
        }
        if let Ok(m) = s.parse::<MacAddr>() {
            return Ok(Target::Mac(m));
        }
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Target::Pod(PodKey {
                    namespace: ns.into(),
                    name: name.into(),
                }))
            }
            _ => Err(bad(format!(
                "{s:?} is neither a pod (namespace/name), an IP address nor a MAC address"
            ))),
        }
    }
}

/// The flow traced: a protocol and, for TCP and UDP, a destination port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// The protocol.
    pub protocol: Protocol,
    /// The destination port (0 when none was given).
    pub port: u16,
}

impl Flow {
    /// From the request's `proto` (empty: `tcp` with a port, else `icmp`) and `port`.
    pub fn parse(proto: &str, port: Option<u16>) -> Result<Flow, TraceError> {
        let protocol = match proto {
            "" if port.is_some() => Protocol::Tcp,
            "" | "icmp" => Protocol::Other(1),
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => {
                return Err(bad(format!(
                    "unknown protocol {other:?} (tcp, udp or icmp)"
                )))
            }
        };
        Ok(Flow {
            protocol,
            port: port.unwrap_or(0),
        })
    }

    pub(super) fn describe(&self) -> String {
        match self.protocol {
            Protocol::Tcp => format!("tcp/{}", self.port),
            Protocol::Udp => format!("udp/{}", self.port),
            _ => "icmp".into(),
        }
    }
}

/// An endpoint found.
#[derive(Debug, Clone, Default)]
pub(super) struct Found {
    pub(super) pod: Option<PodKey>,
    pub(super) addr: Option<IpAddr>,
    pub(super) mac: Option<MacAddr>,
    pub(super) host: Option<PeerName>,
    pub(super) found_by: String,
}

impl<P: Peer> Snapshot<'_, P> {
    /// The first pod of the mesh's lists for which `f` is true, with its address `want` when it
    /// has it, else its first one.
    fn mesh_pod(
        &self,
        want: Option<IpAddr>,
        f: impl Fn(&PodKey, &[IpAddr]) -> bool,
    ) -> Option<(PeerName, PodKey, IpAddr)> {
        self.mesh_pods.iter().find_map(|(h, k, addrs)| {
            let a = want
                .filter(|w| addrs.contains(w))
                .or_else(|| addrs.first().copied())?;
            f(k, addrs).then(|| (*h, k.clone(), a))
        })
    }

    /// Where `t` is: this host's reservations first, then the mesh's pod lists, the IPAM blocks
    /// (addresses) or the MAC table (MACs).
    pub(super) fn locate(&self, t: &Target) -> Found {
        // A local pod found by one of its addresses is shown with that one, else its first.
        let want = match t {
            Target::Addr(a) => Some(*a),
            _ => None,
        };
        let local = |p: &LocalPod| Found {
            pod: p.pod.clone(),
            addr: want
                .filter(|w| p.addrs.contains(w))
                .or_else(|| p.addrs.first().copied()),
            mac: p.mac,
            host: Some(self.me),
            found_by: "local reservation".into(),
        };
        let mesh = |(h, k, a): (PeerName, PodKey, IpAddr)| Found {
            pod: Some(k),
            addr: Some(a),
            host: Some(h),
            found_by: "gossiped pod list".into(),
            ..Found::default()
        };
        let unknown = |f: Found| Found {
            found_by: "unknown".into(),
            ..f
        };
        match t {
            Target::Pod(k) => {
                if let Some(p) = self.local_pods.iter().find(|p| p.pod.as_ref() == Some(k)) {
                    return local(p);
                }
                self.mesh_pod(None, |key, _| key == k)
                    .map(mesh)
                    .unwrap_or_else(|| {
                        unknown(Found {
                            pod: Some(k.clone()),
                            ..Found::default()
                        })
                    })
            }
            Target::Addr(a) => {
                if let Some(p) = self.local_pods.iter().find(|p| p.addrs.contains(a)) {
                    return local(p);
                }
                if let Some(m) = self.mesh_pod(Some(*a), |_, addrs| addrs.contains(a)) {
                    return mesh(m);
                }
                match self.blocks.iter().find(|(b, _)| b.contains(*a)) {
                    Some((b, h)) => Found {
                        addr: Some(*a),
                        host: Some(*h),
                        found_by: format!("IPAM block {b}"),
                        ..Found::default()
                    },
                    None => unknown(Found {
                        addr: Some(*a),
                        ..Found::default()
                    }),
                }
            }
            Target::Mac(m) => {
                if let Some(p) = self.local_pods.iter().find(|p| p.mac == Some(*m)) {
                    return local(p);
                }
                let host = match self.macs.get(m) {
                    Some(Location::Local) => Some(self.me),
                    Some(Location::Peer(p)) => Some(*p),
                    None => None,
                };
                let f = Found {
                    mac: Some(*m),
                    host,
                    found_by: "MAC table".into(),
                    ..Found::default()
                };
                if host.is_some() {
                    f
                } else {
                    unknown(f)
                }
            }
        }
    }

    pub(super) fn endpoint(&self, query: &str, f: &Found) -> TraceEndpoint {
        TraceEndpoint {
            query: query.into(),
            pod: f.pod.as_ref().map(|k| k.to_string()),
            addr: f.addr.map(|a| a.to_string()),
            mac: f.mac.map(|m| m.to_string()),
            host: f.host.map(|h| h.to_string()).unwrap_or_default(),
            host_nickname: f.host.map(|h| self.nick(h)).unwrap_or_default(),
            local: f.host == Some(self.me),
            found_by: f.found_by.clone(),
        }
    }
}
