//! Packets logged by nftables `log group N` rules, read from the kernel's netfilter log
//! (NFLOG): the router reads NetworkPolicy denials there. A [`NflogListener`] is a blocking
//! netlink socket bound to one group in the network namespace of the thread that opened it;
//! read it from a dedicated thread.

use crate::error::Context;
use crate::{Error, Result};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigMode, PacketNla, ULogMessage,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

/// One logged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The rule's `prefix`.
    pub prefix: String,
    /// The start of the packet from its network header (at most the copy range).
    pub payload: Vec<u8>,
    /// The interfaces it came in and goes out by (indexes; 0: none). For a bridged packet these
    /// are the bridge, and `phys_in` / `phys_out` the bridge ports.
    pub dev_in: u32,
    /// See `dev_in`.
    pub dev_out: u32,
    /// The bridge port it came in by (bridged packets with br_netfilter; 0: none).
    pub phys_in: u32,
    /// The bridge port it goes out by (0: none).
    pub phys_out: u32,
}

/// A socket bound to one log group.
#[derive(Debug)]
pub struct NflogListener {
    socket: Socket,
    buf: Vec<u8>,
}

/// Bytes of each packet copied to us: enough for an IPv6 header and a transport header.
pub const COPY_RANGE: u32 = 128;

impl NflogListener {
    /// Binds to log group `group` (for IPv4 and IPv6 packets), copying the first
    /// [`COPY_RANGE`] bytes of each.
    pub fn bind(group: u16) -> Result<NflogListener> {
        let what = || format!("binding to netfilter log group {group}");
        let mut socket = Socket::new(NETLINK_NETFILTER).with_context(what)?;
        socket.bind_auto().with_context(what)?;
        let mut l = NflogListener {
            socket,
            buf: vec![0; 65536],
        };
        l.request(config_request(
            NetfilterProtoFamily::IPv4,
            group,
            vec![
                ConfigCmd::Bind.into(),
                ConfigMode::new_packet(COPY_RANGE).into(),
            ],
        ))
        .with_context(what)?;
        Ok(l)
    }

    fn request(&mut self, msg: NetlinkMessage<NetfilterMessage>) -> Result<()> {
        let mut buf = vec![0; msg.header.length as usize];
        msg.serialize(&mut buf[..]);
        self.socket.send(&buf, 0)?;
        let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
        let reply = NetlinkMessage::<NetfilterMessage>::deserialize(&self.buf[..n])
            .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        match reply.payload {
            NetlinkPayload::Error(e) if e.code.is_some() => Err(Error::Io(e.to_io())),
            _ => Ok(()),
        }
    }

    /// Waits for the next batch of logged packets (blocking).
    pub fn recv(&mut self) -> Result<Vec<Logged>> {
        let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < n {
            let Ok(msg) = NetlinkMessage::<NetfilterMessage>::deserialize(&self.buf[offset..n])
            else {
                break;
            };
            let len = msg.header.length as usize;
            if let NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
                ..
            }) = msg.payload
            {
                let mut l = Logged {
                    prefix: String::new(),
                    payload: Vec::new(),
                    dev_in: 0,
                    dev_out: 0,
                    phys_in: 0,
                    phys_out: 0,
                };
                for nla in nlas {
                    match nla {
                        PacketNla::Prefix(p) => l.prefix = p.to_string_lossy().into_owned(),
                        PacketNla::Payload(p) => l.payload = p,
                        PacketNla::IfIndexInDev(i) => l.dev_in = i,
                        PacketNla::IfIndexOutDev(i) => l.dev_out = i,
                        PacketNla::IfIndexPhysInDev(i) => l.phys_in = i,
                        PacketNla::IfIndexPhysOutDev(i) => l.phys_out = i,
                        _ => {}
                    }
                }
                out.push(l);
            }
            if len == 0 {
                break;
            }
            offset += len.next_multiple_of(4);
        }
        Ok(out)
    }
}
