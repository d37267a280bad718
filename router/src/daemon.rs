//! `weft router`: the host daemon. Sets up the bridge and the TAP port, starts the data plane
//! threads and the control plane, serves the local API, and tears down what it owns on exit.

use crate::dataplane::{Dataplane, PeerCounters, PeerEntry, PeerTable, Reason, Shared};
use crate::netlink::Netlink;
use crate::status::{MacReport, PeerReport, Report};
use crate::sys::tap::Tap;
use crate::{api, state};
use anyhow::{bail, Context, Result};
use axum::extract::State;
use axum::routing::get;
use axum::Json;
use gossip::driver::{self, Event, Gossip, PeerInfo};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use vswitch::{Fdb, Location, PeerName, Switch};

/// The default control (TCP) and data (UDP) port.
pub const DEFAULT_PORT: u16 = 6783;
/// MTU given to the TAP port: large, so that a frame too big for the overlay still reaches the
/// router, which counts it and answers with ICMP, instead of being dropped by the bridge unseen.
const TAP_MTU: u32 = 65_000;

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

struct PeerState {
    info: PeerInfo,
    counters: Arc<PeerCounters>,
}

/// The running daemon, as the API handlers see it.
struct Daemon {
    cfg: Config,
    name: PeerName,
    uid: u64,
    underlay_mtu: u32,
    started: Instant,
    shared: Arc<Shared>,
    gossip: Gossip,
    peers: Mutex<HashMap<PeerName, PeerState>>,
    /// Counters of every peer ever seen, so a reconnection keeps counting.
    counters: Mutex<HashMap<PeerName, Arc<PeerCounters>>>,
}

impl Daemon {
    fn publish_peers(&self, peers: &HashMap<PeerName, PeerState>) {
        let entries = peers
            .values()
            .map(|p| PeerEntry {
                name: p.info.name,
                udp_addr: p.info.udp_addr,
                counters: p.counters.clone(),
            })
            .collect();
        self.shared.peers.store(Arc::new(PeerTable::new(entries)));
    }

    fn on_event(&self, ev: Event) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        match ev {
            Event::Up(info) => {
                let counters = self
                    .counters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(info.name)
                    .or_default()
                    .clone();
                if info.pod_mtu != self.shared.pod_mtu {
                    tracing::warn!(
                        peer = %info.name,
                        "peer {} uses pod MTU {}, we use {}: frames above the smaller one are dropped",
                        info.nickname, info.pod_mtu, self.shared.pod_mtu
                    );
                }
                peers.insert(info.name, PeerState { info, counters });
                self.publish_peers(&peers);
            }
            Event::Down { name, .. } => {
                peers.remove(&name);
                self.publish_peers(&peers);
                let forgotten = self.shared.switch().fdb_mut().forget_peer(name);
                tracing::debug!(peer = %name, forgotten, "forgot the MACs of a departed peer");
            }
        }
    }

    fn report(&self) -> Report {
        let c = &self.shared.counters;
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let mut peer_reports: Vec<PeerReport> = peers
            .values()
            .map(|p| PeerReport {
                name: p.info.name.to_string(),
                nickname: p.info.nickname.clone(),
                addr: p.info.udp_addr.to_string(),
                state: "established".into(),
                path: "sleeve".into(),
                mtu: p.info.pod_mtu.min(self.shared.pod_mtu),
                tx_frames: p.counters.tx_frames.load(Relaxed),
                tx_bytes: p.counters.tx_bytes.load(Relaxed),
                tx_datagrams: p.counters.tx_datagrams.load(Relaxed),
                rx_frames: p.counters.rx_frames.load(Relaxed),
                rx_bytes: p.counters.rx_bytes.load(Relaxed),
                rx_datagrams: p.counters.rx_datagrams.load(Relaxed),
            })
            .collect();
        drop(peers);
        peer_reports.sort_by(|a, b| a.nickname.cmp(&b.nickname).then(a.name.cmp(&b.name)));
        let counters: BTreeMap<String, u64> = [
            ("tap_rx_frames", &c.tap_rx_frames),
            ("tap_rx_bytes", &c.tap_rx_bytes),
            ("tap_tx_frames", &c.tap_tx_frames),
            ("tap_tx_bytes", &c.tap_tx_bytes),
            ("udp_rx_datagrams", &c.udp_rx_datagrams),
            ("udp_tx_datagrams", &c.udp_tx_datagrams),
            ("unicast_frames", &c.unicast_frames),
            ("flooded_frames", &c.flooded_frames),
            ("icmp_too_big_sent", &c.icmp_too_big_sent),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.load(Relaxed)))
        .collect();
        let drops = Reason::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), c.drops_for(*r)))
            .collect();
        let fs = self.shared.switch().stats();
        let fdb = [
            ("entries", fs.entries as u64),
            ("capacity", self.cfg.fdb_capacity as u64),
            ("evictions", fs.evictions),
            ("expirations", fs.expirations),
            ("moves", fs.moves),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Report {
            version: env!("CARGO_PKG_VERSION").into(),
            name: self.name.to_string(),
            nickname: self.cfg.nickname.clone(),
            uid: format!("{:016x}", self.uid),
            listen: self.cfg.listen.to_string(),
            bridge: self.cfg.bridge.clone(),
            tap: self.cfg.tap.clone(),
            underlay_mtu: self.underlay_mtu,
            pod_mtu: self.shared.pod_mtu,
            uptime_secs: self.started.elapsed().as_secs(),
            peers: peer_reports,
            targets: self.gossip.targets(),
            connections: self.gossip.connections(),
            counters,
            drops,
            fdb,
        }
    }

    fn macs(&self) -> Vec<MacReport> {
        let now = Instant::now();
        let sw = self.shared.switch();
        let mut out: Vec<MacReport> = sw
            .fdb()
            .entries()
            .into_iter()
            .map(|(mac, loc, seen)| MacReport {
                mac: mac.to_string(),
                location: match loc {
                    Location::Local => "local".into(),
                    Location::Peer(p) => p.to_string(),
                },
                age_ms: now.saturating_duration_since(seen).as_millis() as u64,
            })
            .collect();
        out.sort_by(|a, b| a.mac.cmp(&b.mac));
        out
    }
}

/// Refuses to start when another router answers on this state directory's socket, and removes
/// a stale socket file otherwise.
fn claim_socket(state_dir: &std::path::Path) -> Result<PathBuf> {
    let path = api::socket_path(state_dir);
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        bail!(
            "another weft router is running with state directory {} (its socket {} answers)",
            state_dir.display(),
            path.display()
        );
    }
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::info!("removed the stale API socket {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    Ok(path)
}

/// Runs the router until SIGINT or SIGTERM.
pub async fn run(cfg: Config) -> Result<()> {
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("creating state directory {}", cfg.state_dir.display()))?;
    let sock_path = claim_socket(&cfg.state_dir)?;
    let name = state::load_or_create_peer_name(&cfg.state_dir)?;
    let uid = rand::random::<u64>();

    let nl = Netlink::connect()?;
    let ipv6 = cfg.listen.is_ipv6();
    let underlay_mtu = nl
        .underlay_mtu(cfg.listen.ip())
        .await
        .context("finding the underlay MTU (is --listen an address of this host?)")?;
    let computed = vswitch::sleeve::pod_mtu(underlay_mtu, ipv6).with_context(|| {
        format!("the underlay MTU {underlay_mtu} is too small to carry 1280-byte pod packets")
    })?;
    let pod_mtu = match cfg.mtu {
        Some(m) if m > computed => {
            tracing::warn!(
                "--mtu {m} exceeds the {computed} the underlay MTU {underlay_mtu} allows: \
                 sleeve datagrams may not fit the underlay"
            );
            m
        }
        Some(m) if m < 576 => bail!("--mtu {m} is below the 576 bytes IPv4 requires"),
        Some(m) => m,
        None => computed,
    };
    let max_datagram = pod_mtu as usize + vswitch::sleeve::overhead(ipv6)
        - if ipv6 {
            vswitch::sleeve::IPV6_UDP_LEN
        } else {
            vswitch::sleeve::IPV4_UDP_LEN
        };

    let bridge_index = nl
        .ensure_bridge(&cfg.bridge, pod_mtu)
        .await
        .with_context(|| format!("setting up bridge {}", cfg.bridge))?;
    let tap = Tap::open(&cfg.tap).with_context(|| format!("creating TAP device {}", cfg.tap))?;
    if let Err(e) = nl.attach(&cfg.tap, bridge_index, TAP_MTU).await {
        tracing::debug!("TAP MTU {TAP_MTU} refused ({e:#}); using the pod MTU");
        nl.attach(&cfg.tap, bridge_index, pod_mtu).await?;
    }
    let socket =
        UdpSocket::bind(cfg.listen).with_context(|| format!("binding UDP {}", cfg.listen))?;

    let switch = Switch::new(Fdb::new(cfg.fdb_capacity, cfg.mac_max_age));
    let shared = Arc::new(Shared::new(name, pod_mtu, max_datagram, switch));
    let dataplane =
        Dataplane::start(shared.clone(), tap, socket).context("starting the data plane")?;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut gcfg = driver::Config::new(name, uid, cfg.nickname.clone(), cfg.listen);
    gcfg.pod_mtu = pod_mtu;
    gcfg.seeds = cfg.peers.clone();
    let gossip = Gossip::start(gcfg, tx)
        .await
        .with_context(|| format!("listening on TCP {}", cfg.listen))?;

    let daemon = Arc::new(Daemon {
        cfg: cfg.clone(),
        name,
        uid,
        underlay_mtu,
        started: Instant::now(),
        shared: shared.clone(),
        gossip: gossip.clone(),
        peers: Mutex::new(HashMap::new()),
        counters: Mutex::new(HashMap::new()),
    });

    let listener = tokio::net::UnixListener::bind(&sock_path)
        .with_context(|| format!("binding the API socket {}", sock_path.display()))?;
    let app = axum::Router::new()
        .route(
            "/v1/status",
            get(|State(d): State<Arc<Daemon>>| async move { Json(d.report()) }),
        )
        .route(
            "/v1/macs",
            get(|State(d): State<Arc<Daemon>>| async move { Json(d.macs()) }),
        )
        .with_state(daemon.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("API server stopped: {e}");
        }
    });

    tracing::info!(
        name = %name,
        nickname = %cfg.nickname,
        listen = %cfg.listen,
        pod_mtu,
        underlay_mtu,
        "weft router started"
    );

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut ageing = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => daemon.on_event(ev),
                None => break,
            },
            _ = ageing.tick() => {
                shared.switch().fdb_mut().expire(Instant::now());
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down");
    gossip.shutdown().await;
    tokio::task::spawn_blocking(move || dataplane.stop()).await?;
    let _ = std::fs::remove_file(&sock_path);
    Ok(())
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
}
