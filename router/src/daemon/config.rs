//! The router's configuration ([`Config`], as `weft router`'s flags fill it) and the small parsers
//! it needs: peer addresses, the node name, the fast path's device name.

use anyhow::{bail, Context, Result};
use gossip::secure::Secret;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use vswitch::RekeyPolicy;

/// The default control (TCP) and data (UDP) port.
pub const DEFAULT_PORT: u16 = 6783;

/// Everything `weft router` is told.
#[derive(Debug, Clone)]
pub struct Config {
    /// Nickname (default: the host name).
    pub nickname: String,
    /// Control and data address.
    pub listen: SocketAddr,
    /// Seed peers.
    pub peers: Vec<SocketAddr>,
    /// State directory.
    pub state_dir: PathBuf,
    /// Bridge name.
    pub bridge: String,
    /// TAP port name.
    pub tap: String,
    /// Pod MTU override.
    pub mtu: Option<u32>,
    /// MAC table size cap.
    pub fdb_capacity: usize,
    /// MAC entry lifetime.
    pub mac_max_age: Duration,
    /// Cap on the MACs the kernel learns: the bridge's learned entries and the VXLAN device's
    /// table (0: no cap).
    pub kernel_max_macs: u32,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// The cluster secret: encryption on.
    pub secret: Option<Arc<Secret>>,
    /// Networks whose hosts exchange data unencrypted (both ends must be inside).
    pub trusted_subnets: Vec<Cidr>,
    /// When data keys are replaced.
    pub rekey: RekeyPolicy,
    /// Use the kernel VXLAN fast path with peers where it works (clusters without a secret).
    pub fastpath: bool,
    /// The fast path's VXLAN network identifier.
    pub vni: u32,
    /// The fast path's UDP port.
    pub vxlan_port: u16,
    /// Pod IPAM (`--pod-cidr`), off when `None`.
    pub ipam: Option<IpamOptions>,
    /// How long the data plane thread polls after its last packet before it sleeps
    /// (`--busy-poll-us`).
    pub busy_poll: Duration,
}

/// The IPAM flags of `weft router`.
#[derive(Debug, Clone)]
pub struct IpamOptions {
    /// The pod CIDR.
    pub cidr: gossip::ipam::Block,
    /// The block size (validated against the CIDR).
    pub block_prefix: u8,
    /// How long a host may be unreachable before its blocks are reclaimed.
    pub grace: Duration,
    /// The cluster size to assume; `None`: 1 + the seeds that are not this host's addresses.
    pub init_peers: Option<usize>,
    /// Masquerade traffic from pods to outside the pod CIDR.
    pub masquerade: bool,
}

/// An IP network, `ADDR/LEN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length.
    pub len: u8,
}

impl std::str::FromStr for Cidr {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Cidr> {
        let (a, l) = s
            .split_once('/')
            .with_context(|| format!("{s:?} is not ADDR/LEN"))?;
        let addr: IpAddr = a
            .parse()
            .with_context(|| format!("{a:?} is not an IP address"))?;
        let len: u8 = l
            .parse()
            .with_context(|| format!("{l:?} is not a prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            bail!("prefix length {len} is more than {max}");
        }
        Ok(Cidr { addr, len })
    }
}

impl Cidr {
    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn bits(ip: IpAddr) -> u128 {
            match ip {
                IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
                IpAddr::V6(v) => u128::from(v),
            }
        }
        if self.addr.is_ipv4() != ip.is_ipv4() {
            return false;
        }
        // IPv4 addresses sit in the top 32 bits, so both families count bits from the top.
        let len = u32::from(self.len);
        if len == 0 {
            return true;
        }
        let mask = u128::MAX << (128 - len);
        bits(self.addr) & mask == bits(ip) & mask
    }
}

/// Parses `ADDR[:PORT]` (an IP, `IP:PORT`, `[IPv6]:PORT` or `host[:port]`), with
/// [`DEFAULT_PORT`] when no port is given.
pub fn parse_addr(s: &str) -> Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    let with_port = if s.contains(':') {
        s.to_string()
    } else {
        format!("{s}:{DEFAULT_PORT}")
    };
    with_port
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {s:?}"))?
        .next()
        .with_context(|| format!("{s:?} resolves to no address"))
}

/// The default nickname: the host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "weft".into())
}

/// The VXLAN device's name for a bridge: `weft-vxlan` for the default bridge.
pub fn fastpath_device(bridge: &str) -> String {
    if bridge == crate::fastpath::DEFAULT_BRIDGE {
        crate::fastpath::DEFAULT_DEVICE.to_string()
    } else {
        let mut d = format!("{bridge}-vx");
        d.truncate(15);
        d
    }
}

/// The unspecified IPv4 address on the default port.
pub fn default_listen() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            parse_addr("10.0.0.1").unwrap(),
            "10.0.0.1:6783".parse().unwrap()
        );
        assert_eq!(
            parse_addr("10.0.0.1:7000").unwrap(),
            "10.0.0.1:7000".parse().unwrap()
        );
        assert_eq!(
            parse_addr("[fd00::1]:7000").unwrap(),
            "[fd00::1]:7000".parse().unwrap()
        );
        assert_eq!(
            parse_addr("fd00::1").unwrap(),
            "[fd00::1]:6783".parse().unwrap()
        );
        assert!(parse_addr("no-such-host.invalid").is_err());
    }

    #[test]
    fn cidrs_contain_what_they_should() {
        let c: Cidr = "10.200.0.0/24".parse().unwrap();
        assert!(c.contains("10.200.0.13".parse().unwrap()));
        assert!(!c.contains("10.200.1.13".parse().unwrap()));
        assert!(!c.contains("fd00::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0".parse::<Cidr>().is_err());
    }
}
