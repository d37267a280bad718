//! The router's configuration ([`Config`], as `weft router`'s flags fill it) and the small parsers
//! it needs: peer addresses, the node name, the fast path's device name.

use anyhow::{Context, Result};
use gossip::secure::Keyring;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;
use vswitch::RekeyPolicy;

/// Whether this CPU has the instructions AES-256-GCM is fast with: AES and carry-less multiply
/// on x86_64 (AES-NI, PCLMULQDQ), AES on aarch64; false elsewhere.
pub fn hardware_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

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
    /// The cluster secrets, as the secret file held them at start (the first preferred, all
    /// accepted): encryption on.
    pub secrets: Option<Keyring>,
    /// The secret file, reread when it changes and on SIGHUP.
    pub secret_file: Option<std::path::PathBuf>,
    /// Networks whose hosts exchange data unencrypted (both ends must be inside).
    pub trusted_subnets: Vec<IpNet>,
    /// When data keys are replaced.
    pub rekey: RekeyPolicy,
    /// The sleeve's AEAD: `auto` or pinned (`--cipher`).
    pub cipher: gossip::cipher::CipherSetting,
    /// Use the kernel VXLAN fast path with peers where it works (clusters without a secret).
    pub fastpath: bool,
    /// Refuse unsigned gossip and IPAM records.
    pub require_signed_records: bool,
    /// The fast path's VXLAN network identifier.
    pub vni: u32,
    /// The fast path's UDP port.
    pub vxlan_port: u16,
    /// Pod IPAM (`--pod-cidr`), off when `None`.
    pub ipam: Option<IpamOptions>,
    /// NetworkPolicy sources (none: no policy enforcement).
    pub policy: crate::policy::PolicyOptions,
    /// How long the data plane thread polls after its last packet before it sleeps
    /// (`--busy-poll-us`).
    pub busy_poll: Duration,
    /// Data plane workers (`--workers`), at least 1.
    pub workers: usize,
    /// The log filter (`--log`).
    pub log: String,
    /// How to read the configuration again and change the log filter (`weft reload`, SIGHUP);
    /// `None` where the router was not started from the command line.
    pub reloader: Option<Reloader>,
}

/// Reads the configuration as it is now (an error says why not).
pub type ReadConfig = dyn Fn() -> std::result::Result<Config, String> + Send + Sync;
/// Replaces the log filter (an error says why not).
pub type SetLog = dyn Fn(&str) -> std::result::Result<(), String> + Send + Sync;

/// Reads the configuration again (the same flags and environment, the file as it is now) and
/// changes the log filter: what `weft reload` and SIGHUP use.
#[derive(Clone)]
pub struct Reloader {
    /// The configuration as it reads now.
    pub config: std::sync::Arc<ReadConfig>,
    /// Replaces the log filter.
    pub set_log: std::sync::Arc<SetLog>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reloader")
    }
}

impl Config {
    /// The options whose value differs between `self` and `new` and that a running router
    /// cannot change (by flag name).
    pub fn needs_restart(&self, new: &Config) -> Vec<String> {
        let mut out = Vec::new();
        let mut cmp = |name: &str, a: String, b: String| {
            if a != b {
                out.push(name.to_owned());
            }
        };
        cmp("name", self.nickname.clone(), new.nickname.clone());
        cmp("listen", self.listen.to_string(), new.listen.to_string());
        cmp(
            "state-dir",
            format!("{:?}", self.state_dir),
            format!("{:?}", new.state_dir),
        );
        cmp("bridge", self.bridge.clone(), new.bridge.clone());
        cmp("tap", self.tap.clone(), new.tap.clone());
        cmp("mtu", format!("{:?}", self.mtu), format!("{:?}", new.mtu));
        cmp(
            "max-macs",
            self.fdb_capacity.to_string(),
            new.fdb_capacity.to_string(),
        );
        cmp(
            "mac-age",
            format!("{:?}", self.mac_max_age),
            format!("{:?}", new.mac_max_age),
        );
        cmp(
            "kernel-max-macs",
            self.kernel_max_macs.to_string(),
            new.kernel_max_macs.to_string(),
        );
        cmp(
            "metrics",
            format!("{:?}", self.metrics),
            format!("{:?}", new.metrics),
        );
        cmp(
            "secret-file",
            format!("{:?}", self.secret_file),
            format!("{:?}", new.secret_file),
        );
        cmp(
            "trusted-subnets",
            format!("{:?}", self.trusted_subnets),
            format!("{:?}", new.trusted_subnets),
        );
        cmp(
            "rekey-after",
            format!("{:?}", self.rekey),
            format!("{:?}", new.rekey),
        );
        cmp("cipher", self.cipher.to_string(), new.cipher.to_string());
        cmp(
            "no-fastpath",
            self.fastpath.to_string(),
            new.fastpath.to_string(),
        );
        cmp(
            "require-signed-records",
            self.require_signed_records.to_string(),
            new.require_signed_records.to_string(),
        );
        cmp("vni", self.vni.to_string(), new.vni.to_string());
        cmp(
            "vxlan-port",
            self.vxlan_port.to_string(),
            new.vxlan_port.to_string(),
        );
        cmp(
            "pod-cidr",
            format!("{:?}", self.ipam),
            format!("{:?}", new.ipam),
        );
        cmp(
            "busy-poll-us",
            format!("{:?}", self.busy_poll),
            format!("{:?}", new.busy_poll),
        );
        cmp("workers", self.workers.to_string(), new.workers.to_string());
        cmp(
            "kubernetes",
            format!("{:?}", (self.policy.kubernetes, &self.policy.kubeconfig)),
            format!("{:?}", (new.policy.kubernetes, &new.policy.kubeconfig)),
        );
        // A policy directory can change while policy is on; turning policy on or off (or the
        // directory source off) takes a restart.
        if self.policy.enabled() != new.policy.enabled()
            || self.policy.dir.is_some() != new.policy.dir.is_some()
        {
            out.push("policy-dir".to_owned());
        }
        out
    }
}

/// The IPAM flags of `weft router`.
#[derive(Debug, Clone)]
pub struct IpamOptions {
    /// The pod CIDR (the one blocks are agreed of).
    pub cidr: gossip::ipam::Block,
    /// A dual-stack cluster's IPv6 pod CIDR, and the mapping into it.
    pub dual: Option<crate::ipam::DualStack>,
    /// The block size (validated against the CIDR).
    pub block_prefix: u8,
    /// How long a host may be unreachable before its blocks are reclaimed.
    pub grace: Duration,
    /// The cluster size to assume; `None`: 1 + the seeds that are not this host's addresses.
    pub init_peers: Option<usize>,
    /// Masquerade traffic from pods to outside the pod CIDR.
    pub masquerade: bool,
    /// The flood limit of every guarded pod port (`None`: no limit).
    pub flood_limit: Option<crate::guard::rules::FloodLimit>,
}

/// Parses `ADDR[:PORT]` (an IP, `IP:PORT`, `[IPv6]`, `[IPv6]:PORT` or `host[:port]`), with
/// [`DEFAULT_PORT`] when no port is given.
pub fn parse_addr(s: &str) -> Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    // `[fd00::1]`: an IPv6 address in brackets without a port, as operators write it.
    if let Some(ip) = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<std::net::Ipv6Addr>().ok())
    {
        return Ok(SocketAddr::new(IpAddr::V6(ip), DEFAULT_PORT));
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

/// The most workers `--workers` takes.
pub const MAX_WORKERS: usize = 64;

/// Parses `--workers`: `auto` or a number from 1 to [`MAX_WORKERS`].
pub fn parse_workers(s: &str) -> Result<usize, String> {
    if s == "auto" {
        return Ok(auto_workers());
    }
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is neither auto nor a number of workers from 1 to {MAX_WORKERS}"
        )),
    }
}

/// `--workers auto`: half the cores this process may run on, at least 1 and at most 8.
pub fn auto_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).clamp(1, 8)
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
        // Every spelling an operator types for IPv6 (issue 14): bare, bracketed, with a port.
        for spelling in ["fd00::1", "[fd00::1]", "[fd00::1]:6783"] {
            assert_eq!(
                parse_addr(spelling).unwrap(),
                "[fd00::1]:6783".parse().unwrap(),
                "{spelling}"
            );
        }
        assert!(parse_addr("[fd00::1").is_err());
        assert!(parse_addr("[10.0.0.1]").is_err());
        assert!(parse_addr("no-such-host.invalid").is_err());
    }

    #[test]
    fn cidrs_contain_what_they_should() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let c: IpNet = "10.200.0.0/24".parse().unwrap();
        assert!(c.contains(&ip("10.200.0.13")));
        assert!(!c.contains(&ip("10.200.1.13")));
        assert!(!c.contains(&ip("fd00::1")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(&ip("1.2.3.4")));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains(&ip("fd12::1")));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("10.0.0.0".parse::<IpNet>().is_err());
    }

    #[test]
    fn workers_are_auto_or_a_number_in_range() {
        assert_eq!(super::parse_workers("3"), Ok(3));
        assert_eq!(super::parse_workers("auto"), Ok(super::auto_workers()));
        assert!((1..=8).contains(&super::auto_workers()));
        for bad in ["0", "65", "-1", "two", ""] {
            let e = super::parse_workers(bad).unwrap_err();
            assert!(e.contains("from 1 to 64"), "{e}");
        }
    }
}
