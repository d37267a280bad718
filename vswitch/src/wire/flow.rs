//! The flow of an IP packet whose capture may be cut short (a netfilter log copies only the
//! first bytes): addresses, transport protocol and ports, read from the IPv4 or IPv6 header and
//! the first four bytes of a TCP, UDP or SCTP header. Unlike [`super::Ipv4Packet`], the length
//! fields are not held against the buffer, since the rest of the packet is not there.

use super::{Error, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IANA protocol numbers with ports at the start of their header.
const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;

/// What a packet's headers say about its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowRepr {
    /// The source address.
    pub src: IpAddr,
    /// The destination address.
    pub dst: IpAddr,
    /// The transport protocol (IPv4 protocol, or IPv6 next header without extension headers).
    pub protocol: u8,
    /// Source and destination ports, for TCP, UDP and SCTP when the capture holds them (never
    /// for a non-first IPv4 fragment).
    pub ports: Option<(u16, u16)>,
}

impl FlowRepr {
    /// Reads the flow of the IP packet at the start of `b` (IPv4 or IPv6 by its version).
    pub fn parse(b: &[u8]) -> Result<FlowRepr> {
        let first = *b.first().ok_or(Error::Truncated)?;
        let (src, dst, protocol, transport, fragment): (IpAddr, IpAddr, u8, usize, bool) =
            match first >> 4 {
                4 => {
                    if b.len() < 20 {
                        return Err(Error::Truncated);
                    }
                    let ihl = usize::from(first & 0x0f) * 4;
                    if ihl < 20 {
                        return Err(Error::Malformed);
                    }
                    let frag_offset = u16::from_be_bytes([b[6], b[7]]) & 0x1fff;
                    (
                        Ipv4Addr::new(b[12], b[13], b[14], b[15]).into(),
                        Ipv4Addr::new(b[16], b[17], b[18], b[19]).into(),
                        b[9],
                        ihl,
                        frag_offset != 0,
                    )
                }
                6 => {
                    if b.len() < 40 {
                        return Err(Error::Truncated);
                    }
                    let addr = |o: usize| {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(&b[o..o + 16]);
                        IpAddr::from(Ipv6Addr::from(a))
                    };
                    (addr(8), addr(24), b[6], 40, false)
                }
                _ => return Err(Error::Malformed),
            };
        let ports = match protocol {
            TCP | UDP | SCTP if !fragment => b.get(transport..transport + 4).map(|p| {
                (
                    u16::from_be_bytes([p[0], p[1]]),
                    u16::from_be_bytes([p[2], p[3]]),
                )
            }),
            _ => None,
        };
        Ok(FlowRepr {
            src,
            dst,
            protocol,
            ports,
        })
    }

    /// The protocol's name for people (`tcp`, `udp`, `sctp`, `icmp`, `icmpv6`, or the number).
    pub fn protocol_name(&self) -> String {
        match self.protocol {
            TCP => "tcp".into(),
            UDP => "udp".into(),
            SCTP => "sctp".into(),
            1 => "icmp".into(),
            58 => "icmpv6".into(),
            n => n.to_string(),
        }
    }
}

/// The identifier of the ICMP (or ICMPv6) echo request or reply at the start of the IP packet
/// `b` (`weft trace --live` marks its ICMP probes with it); `None` for anything else or a
/// capture cut before it.
pub fn echo_id(b: &[u8]) -> Option<u16> {
    let first = *b.first()?;
    let (protocol, transport, types) = match first >> 4 {
        4 if b.len() >= 20 => (b[9], usize::from(first & 0x0f) * 4, (1u8, [8u8, 0u8])),
        6 if b.len() >= 40 => (b[6], 40, (58, [128, 129])),
        _ => return None,
    };
    if protocol != types.0 || transport < 20 {
        return None;
    }
    let h = b.get(transport..transport + 6)?;
    types
        .1
        .contains(&h[0])
        .then(|| u16::from_be_bytes([h[4], h[5]]))
}

impl std::fmt::Display for FlowRepr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ports {
            Some((s, d)) => write!(
                f,
                "{} {}:{s} -> {}:{d}",
                self.protocol_name(),
                self.src,
                self.dst
            ),
            None => write!(f, "{} {} -> {}", self.protocol_name(), self.src, self.dst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An IPv4 TCP SYN from 10.32.0.2:40000 to 10.32.1.3:80, cut after the ports (as a log with
    /// a short copy range delivers it).
    const V4_TCP: [u8; 24] = [
        0x45, 0x00, 0x00, 0x3c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 10, 32, 0, 2, 10,
        32, 1, 3, 0x9c, 0x40, 0x00, 0x50,
    ];

    #[test]
    fn echo_ids_of_requests_and_replies_only() {
        let mut b = vec![
            0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 1, 0, 0, 10, 32, 0, 2, 10, 32, 1, 3,
        ];
        b.extend_from_slice(&[8, 0, 0, 0, 0x12, 0x34, 0, 1]);
        assert_eq!(echo_id(&b), Some(0x1234));
        b[20] = 0;
        assert_eq!(echo_id(&b), Some(0x1234));
        b[20] = 3;
        assert_eq!(echo_id(&b), None);
        b[20] = 8;
        assert_eq!(echo_id(&b[..24]), None);
        b[9] = 6;
        assert_eq!(echo_id(&b), None);
        assert_eq!(echo_id(&[]), None);
        assert_eq!(echo_id(&[0x41; 30]), None);
    }

    #[test]
    fn a_cut_tcp_packet_gives_its_flow() {
        let f = FlowRepr::parse(&V4_TCP).unwrap();
        assert_eq!(f.to_string(), "tcp 10.32.0.2:40000 -> 10.32.1.3:80");
        // Without the ports, the addresses still.
        let f = FlowRepr::parse(&V4_TCP[..20]).unwrap();
        assert_eq!(f.ports, None);
        assert_eq!(f.to_string(), "tcp 10.32.0.2 -> 10.32.1.3");
        // A later fragment has no transport header.
        let mut frag = V4_TCP;
        frag[7] = 0x10;
        assert_eq!(FlowRepr::parse(&frag).unwrap().ports, None);
    }

    #[test]
    fn ipv6_udp_and_bad_input() {
        let mut b = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        b.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&"fd00::3".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&[0x00, 0x35, 0x00, 0x51]);
        let f = FlowRepr::parse(&b).unwrap();
        assert_eq!(f.to_string(), "udp fd00::2:53 -> fd00::3:81");
        assert_eq!(FlowRepr::parse(&[]), Err(Error::Truncated));
        assert_eq!(FlowRepr::parse(&[0x45; 10]), Err(Error::Truncated));
        assert_eq!(FlowRepr::parse(&[0x44; 24]), Err(Error::Malformed));
        assert_eq!(FlowRepr::parse(&[0x55; 24]), Err(Error::Malformed));
        assert_eq!(FlowRepr::parse(&b[..39]), Err(Error::Truncated));
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_without_panic(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(f) = FlowRepr::parse(&b) {
                prop_assert_eq!(f.src.is_ipv4(), b[0] >> 4 == 4);
                let _ = f.to_string();
            }
        }
    }
}
