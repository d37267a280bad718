//! Links: listing them, the host bridge and its ports (attachment, isolation, hairpin, learned
//! addresses), veth pairs, MAC addresses, deleting links, and their counters.

use crate::error::{Context, Result};
use crate::Netlink;
use crate::{errno, BridgePortState, InfoKind};
use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{
    InfoBridge, InfoBridgePort, InfoData, InfoKind as NlInfoKind, InfoPortData, InfoVeth,
    LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage, State,
};
use rtnetlink::{LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth};
use std::os::fd::{AsFd, AsRawFd};

/// What the router needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// Index of the bridge it is a port of.
    pub controller: Option<u32>,
    /// Administratively up.
    pub up: bool,
    /// Loopback.
    pub loopback: bool,
    /// Operationally up (it has a carrier).
    pub oper_up: bool,
    /// MAC address (`None` for links without a 6-byte one).
    pub mac: Option<[u8; 6]>,
    /// The link kind (`veth`, `bridge`, ...), if it has one.
    pub kind: Option<InfoKind>,
    /// Its state as a bridge port, if it is one.
    pub port_state: Option<BridgePortState>,
}

pub(crate) fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: String::new(),
        mtu: 0,
        controller: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        loopback: msg.header.flags.contains(LinkFlags::Loopback),
        oper_up: false,
        mac: None,
        kind: None,
        port_state: None,
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => info.name = n.clone(),
            LinkAttribute::Mtu(m) => info.mtu = *m,
            LinkAttribute::Controller(c) => info.controller = Some(*c),
            LinkAttribute::OperState(s) => info.oper_up = *s == State::Up,
            LinkAttribute::Address(mac) => info.mac = <[u8; 6]>::try_from(mac.as_slice()).ok(),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        NlLinkInfo::Kind(k) => info.kind = Some(k.clone()),
                        NlLinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                            info.port_state = port.iter().find_map(|p| match p {
                                InfoBridgePort::State(s) => Some(*s),
                                _ => None,
                            })
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    info
}
/// Interface counters: the kernel's 64-bit statistics of a link (`ip -s link`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Received packets with errors.
    pub rx_errors: u64,
    /// Packets that could not be sent because of errors.
    pub tx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Packets dropped on transmit (for a VXLAN device: mostly frames with no destination).
    pub tx_dropped: u64,
}

impl Netlink {
    /// Every link.
    pub async fn links(&self) -> Result<Vec<LinkInfo>> {
        let msgs: Vec<LinkMessage> = self.handle.link().get().execute().try_collect().await?;
        Ok(msgs.iter().map(link_info).collect())
    }

    /// The link called `name`, if it exists.
    pub async fn link(&self, name: &str) -> Result<Option<LinkInfo>> {
        Ok(self.links().await?.into_iter().find(|l| l.name == name))
    }

    /// Finds or creates the bridge `name`, sets its MTU and brings it up. Returns its index.
    pub async fn ensure_bridge(&self, name: &str, mtu: u32) -> Result<u32> {
        if self.link(name).await?.is_none() {
            let created = self
                .handle
                .link()
                .add(LinkBridge::new(name).mtu(mtu).build())
                .execute()
                .await;
            // Another process may have created it at the same moment (a CNI ADD): that is fine.
            if let Err(e) = created {
                if self.link(name).await?.is_none() {
                    return Err(e).with_context(|| format!("creating bridge {name}"));
                }
            }
        }
        let link = self
            .link(name)
            .await?
            .with_context(|| format!("bridge {name} vanished"))?;
        self.set(LinkUnspec::new_with_index(link.index).mtu(mtu).up().build())
            .await
            .with_context(|| format!("configuring bridge {name}"))?;
        Ok(link.index)
    }

    /// Caps the number of entries the bridge with index `bridge` learns
    /// (`IFLA_BR_FDB_MAX_LEARNED`, Linux 6.8+; 0: no cap). At the cap the bridge learns no new
    /// MAC (frames to unknown MACs are flooded) until entries age out; entries it has keep being
    /// refreshed and moved, and static or local ones do not count. On an older kernel the
    /// request succeeds but sets nothing: [`Netlink::bridge_fdb_learned`] then reports `None`.
    pub async fn set_bridge_max_learned(&self, bridge: u32, max: u32) -> Result<()> {
        let msg = LinkMessageBuilder::<LinkBridge>::new_with_info_kind(NlInfoKind::Bridge)
            .index(bridge)
            .append_info_data(InfoBridge::FdbMaxLearned(max))
            .build();
        // RTM_NEWLINK on the existing link: RTM_SETLINK ignores the link kind's attributes.
        self.handle
            .link()
            .change(msg)
            .execute()
            .await
            .with_context(|| format!("capping the learned entries of bridge {bridge} at {max}"))
    }

    /// How many entries the bridge with index `bridge` has learned, and its cap (0: none), as
    /// the kernel reports them (`IFLA_BR_FDB_N_LEARNED`, `IFLA_BR_FDB_MAX_LEARNED`); `None` on a
    /// kernel that does not.
    pub async fn bridge_fdb_learned(&self, bridge: u32) -> Result<Option<(u32, u32)>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .match_index(bridge)
            .execute()
            .try_collect()
            .await
            .with_context(|| format!("reading bridge {bridge}"))?;
        let (mut n, mut max) = (None, None);
        for a in msgs.iter().flat_map(|m| &m.attributes) {
            if let LinkAttribute::LinkInfo(infos) = a {
                for i in infos {
                    if let NlLinkInfo::Data(InfoData::Bridge(data)) = i {
                        for d in data {
                            match d {
                                InfoBridge::FdbNLearned(v) => n = Some(*v),
                                InfoBridge::FdbMaxLearned(v) => max = Some(*v),
                                _ => {}
                            }
                        }
                    }
                }
            }
        }
        Ok(n.zip(max))
    }

    /// Makes `port` a port of the bridge `bridge`, sets its MTU and brings it up.
    pub async fn attach(&self, port: &str, bridge: u32, mtu: u32) -> Result<()> {
        let link = self
            .link(port)
            .await?
            .with_context(|| format!("no link {port}"))?;
        self.set(LinkUnspec::new_with_index(link.index).mtu(mtu).build())
            .await
            .with_context(|| format!("setting MTU {mtu} on {port}"))?;
        self.set(
            LinkUnspec::new_with_index(link.index)
                .controller(bridge)
                .up()
                .build(),
        )
        .await
        .with_context(|| format!("attaching {port} to the bridge"))?;
        Ok(())
    }

    async fn set(&self, msg: LinkMessage) -> Result<()> {
        self.handle.link().set(msg).execute().await?;
        Ok(())
    }

    /// Brings the link with index `index` up.
    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.set(LinkUnspec::new_with_index(index).up().build())
            .await
            .with_context(|| format!("bringing link {index} up"))
    }

    /// Sets the MAC address of the link with index `index`. Setting the address it already has
    /// is not a no-op: with `arp_notify` on, the kernel sends a gratuitous ARP for it.
    pub async fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<()> {
        self.set(
            LinkUnspec::new_with_index(index)
                .address(mac.to_vec())
                .build(),
        )
        .await
        .with_context(|| format!("setting the MAC address of link {index}"))
    }

    /// Creates the veth pair `name` (in this namespace) / `peer` (created straight in the
    /// network namespace `peer_ns`), both ends with MTU `mtu` and down.
    pub async fn create_veth(
        &self,
        name: &str,
        peer: &str,
        mtu: u32,
        peer_ns: &impl AsFd,
    ) -> Result<()> {
        let peer_msg = LinkUnspec::new_with_name(peer)
            .mtu(mtu)
            .setns_by_fd(peer_ns.as_fd().as_raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(name.to_owned())
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .with_context(|| format!("creating the veth pair {name}/{peer}"))
    }

    /// Deletes the link with index `index`.
    pub async fn delete_link(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .with_context(|| format!("deleting link {index}"))
    }

    /// Deletes the link with index `index`; a link already gone is not an error.
    pub async fn delete_link_if_present(&self, index: u32) -> Result<()> {
        match self.handle.link().del(index).execute().await {
            Err(e) if errno(&e) != Some(libc::ENODEV) => {
                Err(e).with_context(|| format!("deleting link {index}"))
            }
            _ => Ok(()),
        }
    }

    async fn port_index(&self, port: &str) -> Result<u32> {
        Ok(self
            .link(port)
            .await?
            .with_context(|| format!("no link {port}"))?
            .index)
    }

    /// Turns bridge port isolation (`IFLA_BRPORT_ISOLATED`) on or off for `port`: isolated
    /// ports of a bridge never forward frames to one another (they still reach, and are reached
    /// from, every port that is not isolated).
    pub async fn set_port_isolated(&self, port: &str, on: bool) -> Result<()> {
        self.set_bridge_port(
            port,
            |b| b.isolated(on),
            || format!("setting isolation {on}"),
        )
        .await
    }

    /// Turns hairpin mode (`IFLA_BRPORT_MODE`) on or off for the bridge port `port`: with it
    /// on, the bridge may send a frame back out of the port it came in on (a pod reaching
    /// itself through a service address).
    pub async fn set_port_hairpin(&self, port: &str, on: bool) -> Result<()> {
        self.set_bridge_port(
            port,
            |b| b.hairpin(on),
            || format!("setting hairpin mode {on}"),
        )
        .await
    }

    /// Removes every entry the bridge learned on `port` (dynamic entries; static and local ones
    /// stay), so that frames to those MACs are flooded until the bridge learns them again.
    pub async fn flush_port_fdb(&self, port: &str) -> Result<()> {
        self.set_bridge_port(
            port,
            |b| b.fdb_flush(),
            || "flushing the learned addresses".to_string(),
        )
        .await
    }

    /// Sets bridge port attributes of `port` (`set` adds them to the message); `what` names the
    /// change in the error.
    async fn set_bridge_port(
        &self,
        port: &str,
        set: impl FnOnce(LinkMessageBuilder<LinkBridgePort>) -> LinkMessageBuilder<LinkBridgePort>,
        what: impl FnOnce() -> String,
    ) -> Result<()> {
        let index = self.port_index(port).await?;
        self.handle
            .link()
            .set_port(set(LinkBridgePort::new(index)).build())
            .execute()
            .await
            .with_context(|| format!("{} on bridge port {port}", what()))
    }

    /// The counters of the link with index `index`.
    pub async fn link_counters(&self, index: u32) -> Result<LinkCounters> {
        let msgs: Vec<LinkMessage> = self.handle.link().get().execute().try_collect().await?;
        let msg = msgs
            .iter()
            .find(|m| m.header.index == index)
            .with_context(|| format!("no link with index {index}"))?;
        let mut counters = None;
        for a in &msg.attributes {
            match a {
                LinkAttribute::Stats64(s) => {
                    counters = Some(LinkCounters {
                        rx_packets: s.rx_packets,
                        tx_packets: s.tx_packets,
                        rx_bytes: s.rx_bytes,
                        tx_bytes: s.tx_bytes,
                        rx_errors: s.rx_errors,
                        tx_errors: s.tx_errors,
                        rx_dropped: s.rx_dropped,
                        tx_dropped: s.tx_dropped,
                    })
                }
                LinkAttribute::Stats(s) if counters.is_none() => {
                    counters = Some(LinkCounters {
                        rx_packets: s.rx_packets.into(),
                        tx_packets: s.tx_packets.into(),
                        rx_bytes: s.rx_bytes.into(),
                        tx_bytes: s.tx_bytes.into(),
                        rx_errors: s.rx_errors.into(),
                        tx_errors: s.tx_errors.into(),
                        rx_dropped: s.rx_dropped.into(),
                        tx_dropped: s.tx_dropped.into(),
                    })
                }
                _ => {}
            }
        }
        counters.with_context(|| format!("link {index} reports no statistics"))
    }
}
