//! Link configuration through rtnetlink: the host bridge, the router's TAP port on it, and the
//! underlay MTU. Everything here runs in the router's own network namespace (the host).

use anyhow::{bail, Context, Result};
use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec};
use std::net::IpAddr;

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
}

fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: String::new(),
        mtu: 0,
        controller: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        loopback: msg.header.flags.contains(LinkFlags::Loopback),
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => info.name = n.clone(),
            LinkAttribute::Mtu(m) => info.mtu = *m,
            LinkAttribute::Controller(c) => info.controller = Some(*c),
            _ => {}
        }
    }
    info
}

/// A netlink connection (its I/O task runs on the current tokio runtime).
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens the connection.
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
}
