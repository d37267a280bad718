//! The kernel VXLAN device of the fast path: its parameters, reading them back from an existing
//! device, and creating one. Its forwarding entries are in [`crate::fdb`].

use crate::error::{Context, Result};
use crate::link::link_info;
use crate::Netlink;
use crate::{InfoKind, LinkInfo};
use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{
    InfoData, InfoVxlan, LinkAttribute, LinkInfo as NlLinkInfo, LinkMessage,
};
use rtnetlink::LinkVxlan;
use std::net::IpAddr;

/// The parameters of a VXLAN device that Weft sets, and compares with what the kernel reports
/// for an existing device before reusing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanParams {
    /// VXLAN network identifier (24 bits).
    pub vni: u32,
    /// UDP destination port (also the port the device listens on).
    pub port: u16,
    /// Source address of the outer packets (`None`: chosen by routing).
    pub local: Option<IpAddr>,
    /// Default remote or multicast group (`None`: only the forwarding database decides).
    pub remote: Option<IpAddr>,
    /// Whether the device learns "source MAC -> outer source address" from received packets.
    pub learning: bool,
    /// Lifetime in seconds of learned (and dynamic) forwarding entries.
    pub ageing: u32,
    /// UDP checksums on transmitted IPv4 packets (IPv6 always carries them).
    pub udp_csum: bool,
    /// Netlink notifications for unknown destination MACs.
    pub l2miss: bool,
    /// Netlink notifications for unknown destination IP addresses.
    pub l3miss: bool,
    /// Metadata (external, flow-based) mode.
    pub collect_metadata: bool,
    /// Most forwarding entries the device holds (`IFLA_VXLAN_LIMIT`, `maxaddress`; 0: no
    /// limit). Permanent ones count too: at the limit the device learns nothing new, and adding
    /// an entry fails with `ENOSPC`.
    pub limit: u32,
}

impl VxlanParams {
    fn from_info(infos: &[InfoVxlan]) -> VxlanParams {
        let mut p = VxlanParams {
            vni: 0,
            port: 0,
            local: None,
            remote: None,
            learning: false,
            ageing: 0,
            udp_csum: false,
            l2miss: false,
            l3miss: false,
            collect_metadata: false,
            limit: 0,
        };
        for i in infos {
            match i {
                InfoVxlan::Id(v) => p.vni = *v,
                InfoVxlan::Port(v) => p.port = *v,
                InfoVxlan::Local(a) if !a.is_unspecified() => p.local = Some((*a).into()),
                InfoVxlan::Local6(a) if !a.is_unspecified() => p.local = Some((*a).into()),
                InfoVxlan::Group(a) if !a.is_unspecified() => p.remote = Some((*a).into()),
                InfoVxlan::Group6(a) if !a.is_unspecified() => p.remote = Some((*a).into()),
                InfoVxlan::Learning(v) => p.learning = *v,
                InfoVxlan::Ageing(v) => p.ageing = *v,
                InfoVxlan::UDPCsum(v) => p.udp_csum = *v,
                InfoVxlan::L2Miss(v) => p.l2miss = *v,
                InfoVxlan::L3Miss(v) => p.l3miss = *v,
                InfoVxlan::CollectMetadata(v) => p.collect_metadata = *v,
                InfoVxlan::Limit(v) => p.limit = *v,
                _ => {}
            }
        }
        p
    }
}

impl Netlink {
    /// The link message of `name`, if it exists.
    async fn link_message(&self, name: &str) -> Result<Option<LinkMessage>> {
        let msgs: Vec<LinkMessage> = self.handle.link().get().execute().try_collect().await?;
        Ok(msgs.into_iter().find(|m| link_info(m).name == name))
    }

    /// The link `name` with its VXLAN parameters: `None` if there is no such link,
    /// `Some((link, None))` if it is not a VXLAN device.
    pub async fn vxlan(&self, name: &str) -> Result<Option<(LinkInfo, Option<VxlanParams>)>> {
        let Some(msg) = self.link_message(name).await? else {
            return Ok(None);
        };
        let mut params = None;
        for a in &msg.attributes {
            if let LinkAttribute::LinkInfo(infos) = a {
                let is_vxlan = infos
                    .iter()
                    .any(|i| matches!(i, NlLinkInfo::Kind(InfoKind::Vxlan)));
                for i in infos {
                    if let (true, NlLinkInfo::Data(InfoData::Vxlan(data))) = (is_vxlan, i) {
                        params = Some(VxlanParams::from_info(data));
                    }
                }
            }
        }
        Ok(Some((link_info(&msg), params)))
    }

    /// Creates the VXLAN device `name` with `params` and MTU `mtu` (down, attached to nothing).
    /// Returns its index.
    pub async fn add_vxlan(&self, name: &str, params: &VxlanParams, mtu: u32) -> Result<u32> {
        let mut b = LinkVxlan::new(name, params.vni)
            .port(params.port)
            .learning(params.learning)
            .ageing(params.ageing)
            .udp_csum(params.udp_csum)
            .l2miss(params.l2miss)
            .l3miss(params.l3miss)
            .collect_metadata(params.collect_metadata)
            .limit(params.limit)
            .mtu(mtu);
        match params.local {
            Some(IpAddr::V4(a)) => b = b.local(a),
            Some(IpAddr::V6(a)) => {
                b = b
                    .local6(a)
                    .udp_zero_csum6_tx(false)
                    .udp_zero_csum6_rx(false)
            }
            None => {}
        }
        match params.remote {
            Some(IpAddr::V4(a)) => b = b.remote(a),
            Some(IpAddr::V6(a)) => b = b.remote6(a),
            None => {}
        }
        self.handle
            .link()
            .add(b.build())
            .execute()
            .await
            .with_context(|| format!("creating VXLAN device {name}"))?;
        let link = self
            .link(name)
            .await?
            .with_context(|| format!("VXLAN device {name} vanished"))?;
        Ok(link.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn vxlan_params_are_read_back() {
        let p = VxlanParams::from_info(&[
            InfoVxlan::Id(0x7765),
            InfoVxlan::Port(6784),
            InfoVxlan::Local(Ipv4Addr::new(10, 200, 0, 11)),
            InfoVxlan::Group(Ipv4Addr::UNSPECIFIED),
            InfoVxlan::Learning(true),
            InfoVxlan::Ageing(300),
            InfoVxlan::UDPCsum(true),
            InfoVxlan::Ttl(0),
            InfoVxlan::Limit(4096),
        ]);
        assert_eq!(p.limit, 4096);
        assert_eq!(p.vni, 0x7765);
        assert_eq!(p.port, 6784);
        assert_eq!(p.local, Some(IpAddr::V4(Ipv4Addr::new(10, 200, 0, 11))));
        assert_eq!(p.remote, None, "0.0.0.0 means no default remote");
        assert!(p.learning && p.udp_csum && !p.l2miss && !p.collect_metadata);
    }
}
