//! Network namespaces and links: entering `CNI_NETNS` and configuring veths, addresses and
//! routes through rtnetlink.
//!
//! A netlink socket belongs to the namespace of the thread that opens it, so work inside the
//! pod's namespace runs on a dedicated OS thread ([`in_netns`]) that enters the namespace with
//! `setns` and then opens its own socket on a small current-thread tokio runtime; the thread ends
//! with the work, so no thread of ours is ever left in (or returned from) a foreign namespace.
//! Host-side work ([`in_host`]) runs the same way on the calling thread, which stays in the
//! namespace the runtime started the plugin in.

use crate::error::{Failure, BAD_NETNS, IO_FAILURE, LINK_FAILURE};
use futures_util::TryStreamExt;
use nix::sched::{setns, CloneFlags};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    BridgePortState, InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage, State,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{
    Handle, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};
use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::thread;

/// What the plugin needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// MAC address.
    pub mac: Option<[u8; 6]>,
    /// MTU.
    pub mtu: u32,
    /// Index of the bridge it is a port of.
    pub controller: Option<u32>,
    /// Administratively up.
    pub up: bool,
    /// Operationally up (carrier).
    pub oper_up: bool,
    /// Its state as a bridge port, if it is one.
    pub port_state: Option<BridgePortState>,
    /// Whether hairpin mode is on (bridge ports only).
    pub hairpin: bool,
    /// The link kind (`veth`, `bridge`, ...).
    pub kind: Option<InfoKind>,
}

fn link_of(msg: &LinkMessage) -> Link {
    let mut l = Link {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        controller: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        oper_up: false,
        port_state: None,
        hairpin: false,
        kind: None,
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Mtu(m) => l.mtu = *m,
            LinkAttribute::Controller(c) => l.controller = Some(*c),
            LinkAttribute::OperState(s) => l.oper_up = *s == State::Up,
            LinkAttribute::Address(mac) => l.mac = <[u8; 6]>::try_from(mac.as_slice()).ok(),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => l.kind = Some(k.clone()),
                        LinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                            for p in port {
                                match p {
                                    InfoBridgePort::State(s) => l.port_state = Some(*s),
                                    InfoBridgePort::HairpinMode(h) => l.hairpin = *h,
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    l
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

fn nl_failure(what: String, e: rtnetlink::Error) -> Failure {
    Failure::new(LINK_FAILURE, what).details(e.to_string())
}

/// Whether a netlink error is "no such device" (the link is already gone).
fn is_enodev(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -nix::libc::ENODEV)
}

/// A netlink connection in the namespace of the thread that made it.
#[derive(Debug, Clone)]
pub struct Nl {
    handle: Handle,
}

impl Nl {
    /// Every link.
    pub async fn links(&self) -> Result<Vec<Link>, Failure> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_failure("listing links".into(), e))?;
        Ok(msgs.iter().map(link_of).collect())
    }

    /// The link called `name`, if any.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, Failure> {
        Ok(self.links().await?.into_iter().find(|l| l.name == name))
    }

    /// Creates the veth pair `name` (here) / `peer` (in the namespace `peer_ns`), both with
    /// `mtu`, both down.
    pub async fn create_veth(
        &self,
        name: &str,
        peer: &str,
        mtu: u32,
        peer_ns: &File,
    ) -> Result<(), Failure> {
        let peer_msg = LinkUnspec::new_with_name(peer)
            .mtu(mtu)
            .setns_by_fd(peer_ns.as_raw_fd())
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
            .map_err(|e| nl_failure(format!("creating the veth pair {name}/{peer}"), e))
    }

    /// Sets `msg` (an `RTM_SETLINK`).
    async fn set(&self, msg: LinkMessage, what: String) -> Result<(), Failure> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| nl_failure(what, e))
    }

    /// Brings link `index` up.
    pub async fn up(&self, index: u32, name: &str) -> Result<(), Failure> {
        self.set(
            LinkUnspec::new_with_index(index).up().build(),
            format!("bringing {name} up"),
        )
        .await
    }

    /// Sets the MAC address of link `index`.
    pub async fn set_mac(&self, index: u32, name: &str, mac: [u8; 6]) -> Result<(), Failure> {
        self.set(
            LinkUnspec::new_with_index(index)
                .address(mac.to_vec())
                .build(),
            format!("setting the MAC address of {name}"),
        )
        .await
    }

    /// Makes link `index` a port of the bridge `bridge` with hairpin mode on, and brings it up.
    pub async fn attach(&self, index: u32, name: &str, bridge: u32) -> Result<(), Failure> {
        self.set(
            LinkUnspec::new_with_index(index).controller(bridge).build(),
            format!("attaching {name} to the bridge"),
        )
        .await?;
        self.handle
            .link()
            .set_port(LinkBridgePort::new(index).hairpin(true).build())
            .execute()
            .await
            .map_err(|e| nl_failure(format!("turning hairpin mode on for {name}"), e))?;
        self.up(index, name).await
    }

    /// Deletes link `index`; a link already gone is not an error.
    pub async fn delete(&self, index: u32, name: &str) -> Result<(), Failure> {
        match self.handle.link().del(index).execute().await {
            Err(e) if !is_enodev(&e) => Err(nl_failure(format!("deleting {name}"), e)),
            _ => Ok(()),
        }
    }

    /// Adds `addr/prefix_len` to link `index`.
    pub async fn add_address(
        &self,
        index: u32,
        name: &str,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), Failure> {
        self.handle
            .address()
            .add(index, IpAddr::V4(addr), prefix_len)
            .execute()
            .await
            .map_err(|e| nl_failure(format!("adding {addr}/{prefix_len} to {name}"), e))
    }

    /// The IPv4 addresses of link `index`, with their prefix lengths.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, Failure> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_failure("listing addresses".into(), e))?;
        let mut out = Vec::new();
        for m in msgs.iter().filter(|m| m.header.index == index) {
            for a in &m.attributes {
                if let AddressAttribute::Address(IpAddr::V4(ip)) = a {
                    out.push((*ip, m.header.prefix_len));
                }
            }
        }
        Ok(out)
    }

    /// Adds the default route via `gateway` out of link `index`.
    pub async fn add_default_route(
        &self,
        index: u32,
        name: &str,
        gateway: Ipv4Addr,
    ) -> Result<(), Failure> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .gateway(gateway)
            .output_interface(index)
            .build();
        self.handle.route().add(route).execute().await.map_err(|e| {
            nl_failure(
                format!("adding the default route via {gateway} on {name}"),
                e,
            )
        })
    }

    /// The IPv4 default routes of the main table: (gateway, output interface).
    pub async fn default_routes(&self) -> Result<Vec<(Option<Ipv4Addr>, Option<u32>)>, Failure> {
        let msgs: Vec<_> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_failure("listing routes".into(), e))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.destination_prefix_length == 0 && m.header.table == 254)
            .map(|m| {
                let mut gw = None;
                let mut oif = None;
                for a in &m.attributes {
                    match a {
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(*g),
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        _ => {}
                    }
                }
                (gw, oif)
            })
            .collect())
    }
}

/// Sets an IPv4 sysctl of interface `ifname` in the calling thread's network namespace
/// (`/proc/sys/net` shows the namespace of the thread that opens it).
pub fn set_if_sysctl(ifname: &str, key: &str, value: &str) -> Result<(), Failure> {
    let path = format!("/proc/sys/net/ipv4/conf/{ifname}/{key}");
    std::fs::write(&path, value).map_err(|e| {
        Failure::new(IO_FAILURE, format!("writing {value} to {path}")).details(e.to_string())
    })
}

fn block_on<T, F, Fut>(f: F) -> Result<T, Failure>
where
    F: FnOnce(Nl) -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(IO_FAILURE, "starting a tokio runtime").details(e.to_string()))?;
    rt.block_on(async move {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| {
            Failure::new(IO_FAILURE, "opening a netlink socket").details(e.to_string())
        })?;
        tokio::spawn(conn);
        f(Nl { handle }).await
    })
}

/// Runs `f` with a netlink connection in the calling thread's (the host's) namespace.
pub fn in_host<T, F, Fut>(f: F) -> Result<T, Failure>
where
    F: FnOnce(Nl) -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    block_on(f)
}

/// The host's network namespace (the calling thread's), to move links into it.
pub fn host_ns() -> Result<File, Failure> {
    File::open("/proc/thread-self/ns/net").map_err(|e| {
        Failure::new(IO_FAILURE, "opening /proc/thread-self/ns/net").details(e.to_string())
    })
}

/// An opened `CNI_NETNS`.
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
    file: File,
}

impl Netns {
    /// Opens the namespace at `path`.
    pub fn open(path: &Path) -> Result<Netns, Failure> {
        let file = File::open(path).map_err(|e| {
            Failure::new(
                BAD_NETNS,
                format!("cannot open the network namespace {}", path.display()),
            )
            .details(e.to_string())
        })?;
        Ok(Netns {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Runs `f` with a netlink connection inside this namespace, on a new OS thread that enters
    /// it (and ends when `f` is done).
    pub fn run<T, F, Fut>(&self, f: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(Nl) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let file = self.file.try_clone().map_err(|e| {
            Failure::new(IO_FAILURE, "duplicating the namespace handle").details(e.to_string())
        })?;
        let path = self.path.clone();
        let handle = thread::Builder::new()
            .name("weft-cni-netns".into())
            .spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| {
                    Failure::new(
                        BAD_NETNS,
                        format!("{} is not a network namespace", path.display()),
                    )
                    .details(format!("setns: {e}"))
                })?;
                block_on(f)
            })
            .map_err(|e| Failure::new(IO_FAILURE, "spawning a thread").details(e.to_string()))?;
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}
