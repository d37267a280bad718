//! Addresses and routes: the underlay's MTU and addresses, a link's IPv4 addresses (the
//! bridge's are the IPAM gateways), and IPv4 default routes (a pod's, and the host's).

use crate::errno;
use crate::error::Error;
use crate::error::{Context, Result};
use crate::Netlink;
use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::RouteMessageBuilder;
use std::net::{IpAddr, Ipv4Addr};

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

impl Netlink {
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
        Err(Error::NotFound(format!(
            "no interface in this network namespace has the address {ip}"
        )))
    }

    /// Every address of this network namespace with its interface index and prefix length
    /// (both families; the interface's own address, `IFA_LOCAL`, where it differs).
    pub async fn addresses(&self) -> Result<Vec<(u32, IpAddr, u8)>> {
        let addrs: Vec<AddressMessage> =
            self.handle.address().get().execute().try_collect().await?;
        Ok(addrs
            .iter()
            .filter_map(|a| Some((a.header.index, own_address(a)?, a.header.prefix_len)))
            .collect())
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
            if let Some(IpAddr::V4(x)) = own_address(a) {
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

/// An address message's own address: `IFA_LOCAL`, else `IFA_ADDRESS` (they differ only on
/// point-to-point links, where `IFA_ADDRESS` is the other end's).
fn own_address(a: &AddressMessage) -> Option<IpAddr> {
    let local = a.attributes.iter().find_map(|attr| match attr {
        AddressAttribute::Local(x) => Some(*x),
        _ => None,
    });
    local.or_else(|| {
        a.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Address(x) => Some(*x),
            _ => None,
        })
    })
}
