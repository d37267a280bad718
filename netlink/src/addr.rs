//! Addresses and routes: the underlay's MTU and addresses, a link's addresses (the bridge's are
//! the IPAM gateways; IPv6 ones are added without duplicate address detection), and default
//! routes (a pod's of both families, and the host's IPv4 ones).

use crate::errno;
use crate::error::Error;
use crate::error::{Context, Result};
use crate::Netlink;
use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::RouteMessageBuilder;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
    /// Adds the default route of `gateway`'s family (`0.0.0.0/0` or `::/0`) via `gateway` out
    /// of the link with index `index`, in the main table; an existing default route is an error.
    pub async fn add_default_route(&self, index: u32, gateway: IpAddr) -> Result<()> {
        let any = match gateway {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let route = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(any, 0)
            .and_then(|b| b.gateway(gateway))
            // A zero-length prefix and a gateway of its own family are always valid.
            .expect("a default route message")
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

    /// The IPv6 default routes of the main table: (gateway, output interface).
    pub async fn default_routes6(&self) -> Result<Vec<(Option<Ipv6Addr>, Option<u32>)>> {
        let msgs: Vec<_> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .context("listing IPv6 routes")?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.destination_prefix_length == 0 && m.header.table == MAIN_TABLE)
            .map(|m| {
                let (mut gw, mut oif) = (None, None);
                for a in &m.attributes {
                    match a {
                        RouteAttribute::Gateway(RouteAddress::Inet6(g)) => gw = Some(*g),
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        _ => {}
                    }
                }
                (gw, oif)
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
        Ok(self
            .link_addresses(index)
            .await?
            .into_iter()
            .filter_map(|(ip, len)| match ip {
                IpAddr::V4(x) => Some((x, len)),
                IpAddr::V6(_) => None,
            })
            .collect())
    }

    /// The addresses of both families of the link with index `index`, with their prefix
    /// lengths (IPv6 link-local ones included).
    pub async fn link_addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>> {
        let addrs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await?;
        Ok(addrs
            .iter()
            .filter(|a| a.header.index == index)
            .filter(|a| matches!(a.header.family, AddressFamily::Inet | AddressFamily::Inet6))
            .filter_map(|a| Some((own_address(a)?, a.header.prefix_len)))
            .collect())
    }

    /// Adds `ip/prefix_len` to the link with index `index`; an address already there is fine.
    pub async fn add_ipv4_address(&self, index: u32, ip: Ipv4Addr, prefix_len: u8) -> Result<()> {
        self.add_address(index, IpAddr::V4(ip), prefix_len).await
    }

    /// Adds `ip/prefix_len` to the link with index `index`; an address already there is fine.
    /// An IPv6 address is added with `IFA_F_NODAD` (`ip addr add ... nodad`): it is usable at
    /// once, without the second or more of duplicate address detection, because the cluster's
    /// IPAM already made it unique.
    pub async fn add_address(&self, index: u32, ip: IpAddr, prefix_len: u8) -> Result<()> {
        let mut req = self.handle.address().add(index, ip, prefix_len);
        if ip.is_ipv6() {
            let m = req.message_mut();
            m.header.flags |= AddressHeaderFlags::Nodad;
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("adding {ip}/{prefix_len} to link {index}")),
        }
    }

    /// Removes `ip/prefix_len` from the link with index `index`; an address already gone is
    /// fine.
    pub async fn del_ipv4_address(&self, index: u32, ip: Ipv4Addr, prefix_len: u8) -> Result<()> {
        self.del_address(index, IpAddr::V4(ip), prefix_len).await
    }

    /// Removes `ip/prefix_len` (either family) from the link with index `index`; an address
    /// already gone is fine.
    pub async fn del_address(&self, index: u32, ip: IpAddr, prefix_len: u8) -> Result<()> {
        let addrs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(ip)
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
