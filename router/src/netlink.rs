//! Link configuration through rtnetlink, for the router and the CNI plugin: links (with their
//! bridge port state), the host bridge, the router's TAP port on it, the underlay MTU, IPv4
//! addresses (the bridge's are the IPAM gateways), veth pairs, IPv4 default routes, and the
//! kernel VXLAN device of the fast path (its creation, bridge port flags, forwarding database
//! and counters; [`crate::fastpath`] decides what goes in them). A [`Netlink`] works in the
//! network namespace of the thread that opened it: the router's own (the host), or a pod's for
//! the CNI plugin, which opens one on a thread that entered the pod's namespace.

use anyhow::{bail, Context, Result};
use futures_util::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoBridgePort, InfoData, InfoPortData, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags,
    LinkInfo as NlLinkInfo, LinkMessage, State,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan,
    RouteMessageBuilder,
};
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

/// A link's kind and a bridge port's state, as the kernel reports them.
pub use rtnetlink::packet_route::link::{BridgePortState, InfoKind};

/// The errno of a refusal by the kernel (`ENODEV`, `EEXIST`, ...), if `e` is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

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

fn link_info(msg: &LinkMessage) -> LinkInfo {
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

/// An IPv4 default route of the main routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRoute {
    /// The gateway, if it has one.
    pub gateway: Option<Ipv4Addr>,
    /// The output interface, if it names one.
    pub oif: Option<u32>,
}

/// The main routing table's number (`RT_TABLE_MAIN`).
const MAIN_TABLE: u8 = 254;

/// A netlink connection (its I/O task runs on the current tokio runtime).
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens the connection, in the calling thread's network namespace; its I/O task is spawned
    /// on the current tokio runtime.
    pub fn connect() -> Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

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

    /// Adds the IPv4 default route via `gateway` out of the link with index `index`, in the
    /// main table; an existing default route is an error.
    pub async fn add_default_route(&self, index: u32, gateway: Ipv4Addr) -> Result<()> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .gateway(gateway)
            .output_interface(index)
            .build();
        self.handle
            .route()
            .add(route)
            .execute()
            .await
            .with_context(|| format!("adding the default route via {gateway} on link {index}"))
    }

    /// The IPv4 default routes of the main table.
    pub async fn default_routes(&self) -> Result<Vec<DefaultRoute>> {
        let msgs: Vec<_> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .context("listing routes")?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.destination_prefix_length == 0 && m.header.table == MAIN_TABLE)
            .map(|m| {
                let mut route = DefaultRoute {
                    gateway: None,
                    oif: None,
                };
                for a in &m.attributes {
                    match a {
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => route.gateway = Some(*g),
                        RouteAttribute::Oif(i) => route.oif = Some(*i),
                        _ => {}
                    }
                }
                route
            })
            .collect())
    }

    /// The MTU of the interface that holds `ip`; for an unspecified address, the smallest MTU of
    /// the up, non-loopback interfaces (1500 if there is none).
    pub async fn underlay_mtu(&self, ip: IpAddr) -> Result<u32> {
        let links = self.links().await?;
        if ip.is_unspecified() {
            return Ok(links
                .iter()
                .filter(|l| l.up && !l.loopback && l.mtu > 0)
                .map(|l| l.mtu)
                .min()
                .unwrap_or(1500));
        }
        let addrs: Vec<_> = self.handle.address().get().execute().try_collect().await?;
        for a in addrs {
            let holds = a.attributes.iter().any(|attr| {
                matches!(attr, AddressAttribute::Address(x) | AddressAttribute::Local(x) if *x == ip)
            });
            if holds {
                if let Some(l) = links.iter().find(|l| l.index == a.header.index) {
                    return Ok(l.mtu);
                }
            }
        }
        bail!("no interface in this network namespace has the address {ip}")
    }

    /// Every address of this network namespace (any interface, both families).
    pub async fn local_addresses(&self) -> Result<Vec<IpAddr>> {
        let addrs: Vec<AddressMessage> =
            self.handle.address().get().execute().try_collect().await?;
        let mut out: Vec<IpAddr> = addrs
            .iter()
            .flat_map(|a| a.attributes.iter())
            .filter_map(|attr| match attr {
                AddressAttribute::Address(x) | AddressAttribute::Local(x) => Some(*x),
                _ => None,
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The IPv4 addresses of the link with index `index`, with their prefix lengths.
    pub async fn ipv4_addresses(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
        let addrs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await?;
        let mut out = Vec::new();
        for a in addrs.iter().filter(|a| a.header.index == index) {
            if a.header.family != AddressFamily::Inet {
                continue;
            }
            // IFA_LOCAL is the interface's own address (IFA_ADDRESS differs only on
            // point-to-point links).
            let local = a.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Local(IpAddr::V4(x)) => Some(*x),
                _ => None,
            });
            let addr = local.or_else(|| {
                a.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Address(IpAddr::V4(x)) => Some(*x),
                    _ => None,
                })
            });
            if let Some(x) = addr {
                out.push((x, a.header.prefix_len));
            }
        }
        Ok(out)
    }

    /// Adds `ip/prefix_len` to the link with index `index`; an address already there is fine.
    pub async fn add_ipv4_address(&self, index: u32, ip: Ipv4Addr, prefix_len: u8) -> Result<()> {
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(ip), prefix_len)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("adding {ip}/{prefix_len} to link {index}")),
        }
    }

    /// Removes `ip/prefix_len` from the link with index `index`; an address already gone is
    /// fine.
    pub async fn del_ipv4_address(&self, index: u32, ip: Ipv4Addr, prefix_len: u8) -> Result<()> {
        let addrs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(IpAddr::V4(ip))
            .execute()
            .try_collect()
            .await?;
        for a in addrs
            .into_iter()
            .filter(|a| a.header.index == index && a.header.prefix_len == prefix_len)
        {
            match self.handle.address().del(a).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("removing {ip}/{prefix_len} from link {index}"))
                }
            }
        }
        Ok(())
    }
}

/// Runs `f` with a new netlink connection on a new single-threaded tokio runtime, blocking the
/// calling thread until it finishes. The socket belongs to the calling thread's network
/// namespace, so together with [`crate::lab::in_netns`] this configures links inside a namespace
/// from code that is not async (tests, tools).
pub fn block_on<T, F, Fut>(f: F) -> Result<T>
where
    F: FnOnce(Netlink) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a tokio runtime")?;
    rt.block_on(async move {
        let nl = Netlink::connect()?;
        f(nl).await
    })
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
                _ => {}
            }
        }
        p
    }
}

/// Which forwarding database an entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FdbTable {
    /// The device's own table (`bridge fdb ... self`): for a VXLAN device, "MAC -> remote".
    Device,
    /// The table of the bridge the device is a port of (`bridge fdb ... master`).
    Bridge,
}

/// One entry of a forwarding database (`bridge fdb show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    /// The port (or device) the entry is on.
    pub ifindex: u32,
    /// The MAC address; all zeros for a VXLAN flood entry.
    pub mac: [u8; 6],
    /// For a VXLAN device entry: the remote's address.
    pub dst: Option<IpAddr>,
    /// Which table.
    pub table: FdbTable,
    /// Added as permanent or static (never ages, never moved by learning).
    pub permanent: bool,
    /// Added by the kernel itself: a bridge's own port addresses.
    pub local: bool,
    /// How long ago the entry was last refreshed (learned again or updated), if the kernel says.
    pub updated: Option<Duration>,
}

fn fdb_entry(msg: &NeighbourMessage) -> Option<FdbEntry> {
    let mut mac = None;
    let mut dst = None;
    let mut updated = None;
    for a in &msg.attributes {
        match a {
            NeighbourAttribute::LinkLayerAddress(l) => mac = <[u8; 6]>::try_from(&l[..]).ok(),
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => dst = Some((*v4).into()),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                dst = Some((*v6).into())
            }
            // AF_BRIDGE messages carry the remote's address without saying its family.
            NeighbourAttribute::Destination(NeighbourAddress::Other(raw)) => {
                dst = match raw.len() {
                    4 => <[u8; 4]>::try_from(&raw[..]).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(&raw[..]).ok().map(IpAddr::from),
                    _ => None,
                }
            }
            // Clock ticks of USER_HZ = 100 per second.
            NeighbourAttribute::CacheInfo(c) => {
                updated = Some(Duration::from_millis(u64::from(c.updated) * 10))
            }
            _ => {}
        }
    }
    // A device reports its own entries with NTF_SELF; a bridge reports its table's entries
    // without it (naming itself in NDA_MASTER instead).
    let table = if msg.header.flags.contains(NeighbourFlags::Own) {
        FdbTable::Device
    } else {
        FdbTable::Bridge
    };
    let state = msg.header.state;
    Some(FdbEntry {
        ifindex: msg.header.ifindex,
        mac: mac?,
        dst,
        table,
        permanent: matches!(state, NeighbourState::Permanent | NeighbourState::Noarp),
        // The bridge reports its own port addresses as permanent entries of its table.
        local: table == FdbTable::Bridge && state == NeighbourState::Permanent,
        updated,
    })
}

fn fdb_message(
    ifindex: u32,
    mac: [u8; 6],
    dst: Option<IpAddr>,
    table: FdbTable,
    state: NeighbourState,
) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = ifindex;
    msg.header.state = state;
    msg.header.flags = match table {
        FdbTable::Device => NeighbourFlags::Own,
        FdbTable::Bridge => NeighbourFlags::Controller,
    };
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    if let Some(ip) = dst {
        msg.attributes
            .push(NeighbourAttribute::Destination(match ip {
                IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
                IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
            }));
    }
    msg
}

impl Netlink {
    /// Sends one request and waits for its acknowledgement; a refusal is an [`io::Error`] with
    /// the kernel's errno (so callers can tell `ENOENT` or `EEXIST` apart).
    async fn request_ack(&self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut responses = self
            .handle
            .clone()
            .request(req)
            .map_err(|e| io::Error::other(e.to_string()))?;
        while let Some(m) = responses.next().await {
            if let NetlinkPayload::Error(e) = m.payload {
                if let Some(code) = e.code {
                    return Err(io::Error::from_raw_os_error(-code.get()));
                }
            }
        }
        Ok(())
    }

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

    /// Every forwarding database entry of this namespace: the bridges' tables and the devices'
    /// own tables (`bridge fdb show`).
    pub async fn fdb_entries(&self) -> Result<Vec<FdbEntry>> {
        let msgs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .context("reading the forwarding database")?;
        Ok(msgs.iter().filter_map(fdb_entry).collect())
    }

    /// Adds `dst` to the remotes of `mac` in the own table of the VXLAN device `ifindex`
    /// (`bridge fdb append`), as a permanent entry; nothing happens if it is already there.
    /// Meant for the all-zeros MAC, whose remotes all receive a copy of every flooded frame.
    pub async fn vxlan_fdb_append(&self, ifindex: u32, mac: [u8; 6], dst: IpAddr) -> Result<()> {
        let msg = fdb_message(
            ifindex,
            mac,
            Some(dst),
            FdbTable::Device,
            NeighbourState::Permanent,
        );
        self.request_ack(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_APPEND,
        )
        .await
        .with_context(|| format!("appending {dst} to the VXLAN flood list"))
    }

    /// Creates or replaces the entry `mac -> dst` in the own table of the VXLAN device `ifindex`
    /// (`bridge fdb replace`). A permanent entry never ages and is never moved by the device's
    /// learning; a dynamic one ages like a learned entry and moves when traffic from `mac`
    /// arrives from another remote.
    pub async fn vxlan_fdb_replace(
        &self,
        ifindex: u32,
        mac: [u8; 6],
        dst: IpAddr,
        permanent: bool,
    ) -> Result<()> {
        let state = if permanent {
            NeighbourState::Permanent
        } else {
            NeighbourState::Reachable
        };
        let msg = fdb_message(ifindex, mac, Some(dst), FdbTable::Device, state);
        self.request_ack(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .with_context(|| format!("setting a VXLAN forwarding entry to {dst}"))
    }

    /// Deletes a forwarding entry: `mac` on `ifindex` in `table`; with `dst`, only that remote
    /// of it (for a VXLAN entry with several remotes, such as the flood entry). Returns false if
    /// there was no such entry.
    pub async fn fdb_delete(
        &self,
        ifindex: u32,
        mac: [u8; 6],
        dst: Option<IpAddr>,
        table: FdbTable,
    ) -> Result<bool> {
        let msg = fdb_message(ifindex, mac, dst, table, NeighbourState::None);
        match self
            .request_ack(RouteNetlinkMessage::DelNeighbour(msg), 0)
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e).context("deleting a forwarding entry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::neighbour::NeighbourCacheInfo;
    use std::net::Ipv4Addr;

    fn bridge_msg(
        flags: NeighbourFlags,
        state: NeighbourState,
        dst: Option<Vec<u8>>,
    ) -> NeighbourMessage {
        let mut m = fdb_message(7, [2, 0, 0, 0, 0, 1], None, FdbTable::Device, state);
        m.header.flags = flags;
        if let Some(raw) = dst {
            m.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Other(
                    raw,
                )));
        }
        m
    }

    #[test]
    fn fdb_entries_are_decoded() {
        // A VXLAN entry as an AF_BRIDGE dump reports it: NTF_SELF, the address as raw bytes.
        let m = bridge_msg(
            NeighbourFlags::Own,
            NeighbourState::Reachable,
            Some(vec![10, 200, 0, 12]),
        );
        let e = fdb_entry(&m).unwrap();
        assert_eq!(e.table, FdbTable::Device);
        assert_eq!(e.dst, Some(IpAddr::V4(Ipv4Addr::new(10, 200, 0, 12))));
        assert_eq!((e.ifindex, e.mac), (7, [2, 0, 0, 0, 0, 1]));
        assert!(!e.permanent && !e.local && e.updated.is_none());
        let v6 = bridge_msg(
            NeighbourFlags::Own,
            NeighbourState::Permanent,
            Some(vec![0xfd; 16]),
        );
        assert!(fdb_entry(&v6).unwrap().dst.is_some_and(|d| d.is_ipv6()));
        let odd = bridge_msg(
            NeighbourFlags::Own,
            NeighbourState::Permanent,
            Some(vec![1, 2]),
        );
        assert_eq!(fdb_entry(&odd).unwrap().dst, None);
        // A bridge entry: no NTF_SELF; a port's own address is permanent.
        let b = bridge_msg(NeighbourFlags::empty(), NeighbourState::Permanent, None);
        let e = fdb_entry(&b).unwrap();
        assert!(e.table == FdbTable::Bridge && e.local && e.permanent);
        let mut learned = bridge_msg(NeighbourFlags::empty(), NeighbourState::Reachable, None);
        let mut ci = NeighbourCacheInfo::parse(&[0u8; 16]).unwrap();
        ci.updated = 150;
        learned.attributes.push(NeighbourAttribute::CacheInfo(ci));
        let e = fdb_entry(&learned).unwrap();
        assert!(!e.local && !e.permanent);
        assert_eq!(e.updated, Some(Duration::from_millis(1500)));
        // No MAC, no entry.
        let mut none = NeighbourMessage::default();
        none.header.flags = NeighbourFlags::Own;
        assert!(fdb_entry(&none).is_none());
    }

    #[test]
    fn fdb_requests_carry_the_table_and_the_remote() {
        let ip = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 12));
        let m = fdb_message(
            3,
            [0; 6],
            Some(ip),
            FdbTable::Device,
            NeighbourState::Permanent,
        );
        assert_eq!(m.header.family, AddressFamily::Bridge);
        assert_eq!(m.header.flags, NeighbourFlags::Own);
        assert!(m
            .attributes
            .contains(&NeighbourAttribute::Destination(NeighbourAddress::Inet(
                Ipv4Addr::new(10, 200, 0, 12)
            ))));
        let b = fdb_message(3, [2; 6], None, FdbTable::Bridge, NeighbourState::None);
        assert_eq!(b.header.flags, NeighbourFlags::Controller);
        assert_eq!(b.attributes.len(), 1);
    }

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
        ]);
        assert_eq!(p.vni, 0x7765);
        assert_eq!(p.port, 6784);
        assert_eq!(p.local, Some(IpAddr::V4(Ipv4Addr::new(10, 200, 0, 11))));
        assert_eq!(p.remote, None, "0.0.0.0 means no default remote");
        assert!(p.learning && p.udp_csum && !p.l2miss && !p.collect_metadata);
    }
}
