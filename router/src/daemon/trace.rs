//! `POST /v1/trace`, the thin part: takes a [`Snapshot`] of the daemon's state (the fabric the
//! data plane forwards with, the MAC table, the reservations, the mesh's pod lists and IPAM
//! blocks, the per-neighbour fast path reasons and MTUs, the policy inputs) and hands it to the
//! pure [`crate::trace::explain`].

use super::*;
use crate::trace::{self, Flow, LocalPod, PolicyView, Snapshot, TraceError};
use std::collections::BTreeMap;
use weft_api::trace::{TraceAnswer, TraceRequest};
use weft_policy::PodKey;

impl Daemon {
    /// The trace of `req` on this router's state now.
    pub(super) fn trace(&self, req: &TraceRequest) -> Result<TraceAnswer, TraceError> {
        let flow = Flow::parse(&req.proto, req.port)?;
        let fabric = self.shared.fabric.load_full();
        let now = Instant::now();
        let macs = {
            let sw = self.shared.switch();
            let fdb = sw.fdb();
            fdb.entries()
                .into_iter()
                .filter_map(|(mac, _, _)| Some((mac, fdb.lookup(now, mac)?)))
                .collect()
        };
        let view = self.routes_view();
        let mut nicknames: BTreeMap<PeerName, String> = view.known.into_iter().collect();
        nicknames.insert(self.name, self.cfg.nickname.clone());
        let (fast_reasons, peer_mtus) = {
            let neighbors = lock(&self.neighbors);
            for n in neighbors.values() {
                nicknames
                    .entry(n.info.name)
                    .or_insert_with(|| n.info.nickname.clone());
            }
            let reasons = neighbors
                .keys()
                .map(|p| (*p, self.fast_reason(*p)))
                .collect();
            let mtus = neighbors
                .values()
                .map(|n| (n.info.name, n.info.pod_mtu.min(self.shared.pod_mtu)))
                .collect();
            (reasons, mtus)
        };
        let local_pods = self
            .ipam
            .as_ref()
            .map(|i| i.reservations())
            .unwrap_or_default()
            .into_iter()
            .map(|r| LocalPod {
                addrs: r.addresses(),
                pod: r.pod.map(|p| PodKey {
                    namespace: p.namespace,
                    name: p.name,
                }),
                mac: r.port.and_then(|p| p.mac.parse().ok()),
            })
            .collect();
        let mesh_pods = self
            .gossip
            .pods()
            .1
            .into_iter()
            .flat_map(|(host, pods)| {
                pods.into_iter().map(move |p| {
                    let key = PodKey {
                        namespace: p.namespace,
                        name: p.name,
                    };
                    (host, key, p.addrs)
                })
            })
            .collect();
        let ipam = self.gossip.ipam_status();
        let mut blocks: Vec<(gossip::ipam::Block, PeerName)> = ipam
            .as_ref()
            .map(|st| {
                st.hosts
                    .iter()
                    .filter_map(|h| Some((h.peer.parse::<PeerName>().ok()?, &h.held)))
                    .flat_map(|(p, held)| held.iter().map(move |b| (*b, p)))
                    .collect()
            })
            .unwrap_or_default();
        // On a dual-stack cluster each block's IPv6 twin is its holder's too.
        if let Some(d) = self.ipam.as_ref().and_then(|i| i.dual()) {
            let twins: Vec<_> = (blocks.iter())
                .filter_map(|(b, p)| Some((d.block(*b)?, *p)))
                .collect();
            blocks.extend(twins);
        }
        let inputs = self.policy.as_ref().map(|p| p.inputs());
        let policy = match &inputs {
            None => PolicyView::Off,
            Some(None) => PolicyView::NotReady,
            Some(Some((cluster, addresses))) => PolicyView::On(cluster, addresses),
        };
        let snapshot = Snapshot {
            me: self.name,
            nicknames,
            bridge: self.cfg.bridge.clone(),
            pod_mtu: self.shared.pod_mtu,
            underlay_mtu: self.underlay_mtu,
            encrypted: self.cfg.secrets.is_some(),
            fabric: &fabric,
            macs,
            local_pods,
            mesh_pods,
            cidrs: self
                .ipam
                .as_ref()
                .map(|i| std::iter::once(i.cidr()).chain(i.cidr6()).collect())
                .unwrap_or_default(),
            blocks,
            fast_reasons,
            peer_mtus,
            policy,
        };
        trace::explain(&snapshot, &req.from, &req.to, flow)
    }
}
