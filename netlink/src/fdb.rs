//! Forwarding databases (`bridge fdb`): the bridges' learned tables and the VXLAN device's own
//! "MAC -> remote" table, read and written with raw neighbour requests.
//!
//! Reading a whole table costs in proportion to everything every bridge learned; the router's
//! periodic work uses the narrow reads instead: one port's entries ([`Netlink::fdb_port_entries`],
//! filtered by the kernel on a [`Netlink::connect_strict`] connection), one MAC
//! ([`Netlink::bridge_fdb_get`]), and one request for every dynamic entry of a VXLAN device
//! pointing at a remote ([`Netlink::vxlan_fdb_flush_dst`]).

use crate::error::{Context, Result};
use crate::Netlink;
use futures_util::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{
    DefaultNla, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use std::io;
use std::net::IpAddr;
use std::time::Duration;

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

/// `NLM_F_BULK` (linux/netlink.h): a delete request that removes every matching entry.
const NLM_F_BULK: u16 = 0x200;
/// `NDA_NDM_STATE_MASK` (linux/neighbour.h): which `ndm_state` bits a bulk delete compares.
const NDA_NDM_STATE_MASK: u16 = 16;
/// `NUD_NOARP | NUD_PERMANENT`: the states of entries added as static or permanent.
const NUD_STATIC: u16 = 0x40 | 0x80;

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

    /// Sends one request that answers with neighbour messages (a dump, or a get) and collects
    /// them; a refusal is an [`io::Error`] with the kernel's errno.
    async fn request_neighbours(
        &self,
        msg: NeighbourMessage,
        flags: u16,
    ) -> io::Result<Vec<NeighbourMessage>> {
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNeighbour(msg));
        req.header.flags = NLM_F_REQUEST | flags;
        let mut responses = self
            .handle
            .clone()
            .request(req)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut out = Vec::new();
        while let Some(m) = responses.next().await {
            match m.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => out.push(n),
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(io::Error::from_raw_os_error(-code.get()));
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// The entries of one port or device `ifindex`: what its bridge learned or was told about
    /// that port, and the device's own table (for a VXLAN device: its forwarding entries).
    ///
    /// On a [`Netlink::connect_strict`] connection the kernel sends only those (it still walks
    /// the bridge's table, but nothing else crosses the socket); on another connection it ignores
    /// the filter and sends everything, and the entries are filtered here.
    pub async fn fdb_port_entries(&self, ifindex: u32) -> Result<Vec<FdbEntry>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = ifindex;
        let msgs = self
            .request_neighbours(msg, NLM_F_DUMP)
            .await
            .with_context(|| format!("reading the forwarding entries of link {ifindex}"))?;
        Ok(msgs
            .iter()
            .filter_map(fdb_entry)
            .filter(|e| e.ifindex == ifindex)
            .collect())
    }

    /// The entry for `mac` in the table of the bridge that `port` belongs to (`bridge fdb get
    /// MAC dev PORT`), wherever it points (its `ifindex` says which port), or `None`. One hash
    /// lookup in the kernel, whatever the size of the table.
    pub async fn bridge_fdb_get(&self, port: u32, mac: [u8; 6]) -> Result<Option<FdbEntry>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = port;
        msg.header.flags = NeighbourFlags::Controller;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        match self.request_neighbours(msg, 0).await {
            Ok(msgs) => Ok(msgs.iter().find_map(fdb_entry)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e).context("looking up a bridge forwarding entry"),
        }
    }

    /// Makes the bridge's entry for `mac` a static one on `port` (`bridge fdb replace MAC dev
    /// PORT master static`), creating it if needed. A static entry never ages out, survives a
    /// flush of the port and does not count against the bridge's cap on learned entries; the
    /// bridge still refreshes its age (`updated`) when frames from `mac` arrive on `port`.
    /// Creating or converting it resets that age.
    pub async fn bridge_fdb_pin(&self, port: u32, mac: [u8; 6]) -> Result<()> {
        let msg = fdb_message(port, mac, None, FdbTable::Bridge, NeighbourState::Noarp);
        self.request_ack(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .context("pinning a bridge forwarding entry")
    }

    /// Deletes, in one request, every dynamic (learned or set as not permanent) entry of the
    /// VXLAN device `ifindex` that points at `dst` (`bridge fdb flush dev DEV self dst DST
    /// nopermanent`, Linux 6.5+). Permanent entries and the flood entry stay. Fails with
    /// `EOPNOTSUPP` or `EINVAL` on kernels without bulk deletion for VXLAN.
    pub async fn vxlan_fdb_flush_dst(&self, ifindex: u32, dst: IpAddr) -> Result<()> {
        let mut msg = fdb_message(
            ifindex,
            [0; 6],
            Some(dst),
            FdbTable::Device,
            NeighbourState::None,
        );
        // No MAC: every entry matching the rest.
        msg.attributes
            .retain(|a| !matches!(a, NeighbourAttribute::LinkLayerAddress(_)));
        msg.attributes
            .push(NeighbourAttribute::Other(DefaultNla::new(
                NDA_NDM_STATE_MASK,
                NUD_STATIC.to_ne_bytes().to_vec(),
            )));
        self.request_ack(RouteNetlinkMessage::DelNeighbour(msg), NLM_F_BULK)
            .await
            .with_context(|| format!("deleting the VXLAN forwarding entries to {dst}"))
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
}
