//! `weft router`'s start and main loop: the bridge and TAP port, the data plane thread, the
//! gossip mesh, IPAM, the API server, the periodic rounds, and tearing down on exit.

use super::server::{claim_socket, serve_api};
use super::*;
use crate::dataplane::{Dataplane, Shared};
use crate::fastpath::{FastPath, FastPathConfig, SetupOutcome};
use crate::ipam::{self, Ipam};
use crate::sys::tap::Tap;
use crate::{metrics, state};
use anyhow::{bail, Context, Result};
use axum::routing::get;
use gossip::driver::{self, Gossip};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use vswitch::{Fdb, Switch};
use weft_netlink::Netlink;

/// MTU given to the TAP port: large, so that a frame too big for the overlay still reaches the
/// router, which counts it and answers with ICMP, instead of being dropped by the bridge unseen.
const TAP_MTU: u32 = 65_000;

/// Runs the router until SIGINT or SIGTERM.
pub async fn run(cfg: Config) -> Result<()> {
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("creating state directory {}", cfg.state_dir.display()))?;
    let sock_path = claim_socket(&cfg.state_dir)?;
    let host_key = Arc::new(state::load_or_create_host_key(&cfg.state_dir)?);
    let name = state::load_or_create_peer_name(&cfg.state_dir, &host_key)?;
    let uid = rand::random::<u64>();

    let nl = Netlink::connect()?;
    let ipv6 = cfg.listen.is_ipv6();
    let underlay_mtu = nl
        .underlay_mtu(cfg.listen.ip())
        .await
        .context("finding the underlay MTU (is --listen an address of this host?)")?;
    // With a secret, each datagram also carries the encryption overhead.
    let crypto = if cfg.secrets.is_some() {
        vswitch::session::OVERHEAD as u32
    } else {
        0
    };
    let computed = vswitch::sleeve::pod_mtu(underlay_mtu, ipv6)
        .and_then(|m| m.checked_sub(crypto))
        .filter(|m| *m >= 1280)
        .with_context(|| {
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
    let max_datagram = pod_mtu as usize + vswitch::sleeve::overhead(ipv6) + crypto as usize
        - if ipv6 {
            vswitch::sleeve::IPV6_UDP_LEN
        } else {
            vswitch::sleeve::IPV4_UDP_LEN
        };

    let bridge_index = nl
        .ensure_bridge(&cfg.bridge, pod_mtu)
        .await
        .with_context(|| format!("setting up bridge {}", cfg.bridge))?;
    // A pod sending from many MACs must not make the kernel hold them all (docs/fastpath.md).
    if let Err(e) = nl
        .set_bridge_max_learned(bridge_index, cfg.kernel_max_macs)
        .await
    {
        tracing::warn!("cannot cap what bridge {} learns: {e:#}", cfg.bridge);
    }
    let taps = Tap::open_queues(&cfg.tap, cfg.workers, !crate::dataplane::disabled("tso"))
        .with_context(|| format!("creating TAP device {}", cfg.tap))?;
    if let Err(e) = nl.attach(&cfg.tap, bridge_index, TAP_MTU).await {
        tracing::debug!("TAP MTU {TAP_MTU} refused ({e:#}); using the pod MTU");
        nl.attach(&cfg.tap, bridge_index, pod_mtu).await?;
    }
    let sockets = crate::dataplane::bind_sockets(cfg.listen, cfg.workers)
        .with_context(|| format!("binding UDP {}", cfg.listen))?;

    // The kernel fast path: only without a secret (VXLAN does not encrypt), and with a concrete
    // underlay address for the VXLAN device to use.
    let device = fastpath_device(&cfg.bridge);
    let (fast, fast_off) = if cfg.secrets.is_some() {
        if let Ok(Some((link, _))) = nl.vxlan(&device).await {
            let _ = nl.delete_link(link.index).await;
            tracing::info!("removed the VXLAN device {device} left from a run without a secret");
        }
        (None, Some("off: the cluster is encrypted".to_string()))
    } else if !cfg.fastpath {
        if let Ok(Some((link, _))) = nl.vxlan(&device).await {
            let _ = nl.delete_link(link.index).await;
        }
        (None, Some("off: --no-fastpath".to_string()))
    } else if cfg.listen.ip().is_unspecified() {
        (None, Some("off: --listen names no address".to_string()))
    } else {
        let mut fcfg = FastPathConfig::new(cfg.listen.ip(), pod_mtu);
        fcfg.device = device.clone();
        fcfg.vni = cfg.vni;
        fcfg.port = cfg.vxlan_port;
        fcfg.bridge = cfg.bridge.clone();
        fcfg.max_learned = cfg.kernel_max_macs;
        // Frames must never pass between the TAP port and the VXLAN port inside the host.
        nl.set_port_isolated(&cfg.tap, true)
            .await
            .context("isolating the TAP port")?;
        // The fast path's periodic reads filter by port, which needs a strict connection; one
        // of its own also keeps them from queueing behind the daemon's other requests.
        let fast_nl = Netlink::connect_strict().context("opening the fast path's netlink")?;
        match FastPath::setup(&fast_nl, fcfg).await {
            Ok(fp) => {
                if fp.outcome() != SetupOutcome::Created {
                    // After a crash: every peer starts on the sleeve again.
                    let _ = fp.reconcile(&[], &[]).await;
                }
                tracing::info!(device = %device, outcome = ?fp.outcome(), "fast path ready");
                (Some(fp), None)
            }
            Err(e) => {
                tracing::warn!("fast path unavailable: {e:#}");
                (None, Some(format!("off: {e:#}")))
            }
        }
    };

    let switch = Switch::new(Fdb::new(cfg.fdb_capacity, cfg.mac_max_age));
    let mut shared = Shared::new(name, pod_mtu, max_datagram, cfg.secrets.is_some(), switch)
        .with_workers(cfg.workers);
    if fast.is_some() {
        shared.vxlan = Some((cfg.vni, cfg.vxlan_port));
    }
    shared.busy_poll = cfg.busy_poll;
    let shared = Arc::new(shared);
    let dataplane =
        Dataplane::start(shared.clone(), taps, sockets).context("starting the data plane")?;

    // With --kubernetes: the Nodes are the peers, and their number the cluster size the first
    // block agreement waits for.
    let kube = if cfg.policy.kubernetes {
        let client = kubernetes::client(cfg.policy.kubeconfig.as_deref()).await?;
        let nodes = kubernetes::first_nodes(&client).await?;
        let peers = kubernetes::node_peers(&nodes, &cfg.nickname, cfg.listen);
        tracing::info!(
            nodes = nodes.len(),
            "kubernetes: {} node(s), {} peer(s) to dial",
            nodes.len(),
            peers.values().flatten().count()
        );
        Some((client, nodes.len(), peers))
    } else {
        None
    };

    // The seed list: --peer flags plus what `weft connect` added earlier (kept in the state
    // directory; `weft forget` removes entries).
    let mut seeds = state::load_seeds(&cfg.state_dir).unwrap_or_else(|e| {
        tracing::warn!("ignoring the saved seed list: {e:#}");
        Vec::new()
    });
    let node_seeds = kube.iter().flat_map(|(_, _, p)| p.values().flatten());
    for p in cfg.peers.iter().chain(node_seeds) {
        if !seeds.contains(p) {
            seeds.push(*p);
        }
    }
    state::save_seeds(&cfg.state_dir, &seeds)?;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut gcfg = driver::Config::new(name, uid, cfg.nickname.clone(), cfg.listen);
    gcfg.pod_mtu = pod_mtu;
    gcfg.seeds = seeds.clone();
    gcfg.secrets = cfg.secrets.clone();
    gcfg.host_key = Some(host_key.clone());
    gcfg.require_signed = cfg.require_signed_records;
    let hardware_aes = hardware_aes();
    gcfg.ciphers = gossip::cipher::offer(cfg.cipher, hardware_aes);
    if cfg.secrets.is_some() {
        tracing::info!(
            cipher = %cfg.cipher,
            hardware_aes,
            offer = %gossip::cipher::offer_names(&gcfg.ciphers).join(","),
            "sleeve AEAD"
        );
        if cfg.cipher == gossip::cipher::CipherSetting::Pinned(vswitch::Aead::Aes256Gcm)
            && !hardware_aes
        {
            tracing::warn!("--cipher aes-256-gcm on a CPU without AES instructions: AES-256-GCM runs in software here, slower than chacha20-poly1305 (auto would choose that)");
        }
    }
    if let Some(o) = &cfg.ipam {
        ipam::validate(o.cidr, o.block_prefix)?;
        let init_peers = match (o.init_peers, &kube) {
            (Some(n), _) => n.max(1),
            (None, Some((_, nodes, _))) => (*nodes).max(1),
            (None, None) => {
                let own = nl.local_addresses().await.unwrap_or_default();
                let mut others: Vec<IpAddr> = seeds
                    .iter()
                    .map(|s| s.ip())
                    .filter(|ip| !own.contains(ip) && *ip != cfg.listen.ip())
                    .collect();
                others.sort();
                others.dedup();
                1 + others.len()
            }
        };
        gcfg.pod_cidr6 = o.dual.map(|d| d.cidr6);
        tracing::info!(
            cidr = %o.cidr,
            cidr6 = ?o.dual.map(|d| d.cidr6),
            block_prefix = o.block_prefix,
            init_peers,
            grace_secs = o.grace.as_secs(),
            "pod IPAM on"
        );
        gcfg.ipam = Some(gossip::ipam::IpamConfig {
            cidr: o.cidr,
            block_prefix: o.block_prefix,
            grace: o.grace,
            init_peers,
            state_file: Some(cfg.state_dir.join(ipam::IPAM_STATE_FILE)),
        });
    }
    let gossip = Gossip::start(gcfg, tx)
        .await
        .with_context(|| format!("listening on TCP {}", cfg.listen))?;

    let ipam = match &cfg.ipam {
        Some(o) => {
            let i = Ipam::open(
                ipam::Settings {
                    cidr: o.cidr,
                    dual: o.dual,
                    block_prefix: o.block_prefix,
                    masquerade: o.masquerade,
                    state_dir: cfg.state_dir.clone(),
                    bridge: cfg.bridge.clone(),
                    pod_mtu,
                    flood_limit: o.flood_limit,
                },
                gossip.clone(),
                nl.clone(),
            )?;
            i.setup_host().await?;
            i.reconcile_bridge(true)
                .await
                .context("giving the bridge its gateway addresses")?;
            Some(Arc::new(i))
        }
        None => None,
    };

    let policy = match (&ipam, cfg.policy.enabled()) {
        (_, false) => None,
        (None, true) => bail!(
            "NetworkPolicy (--policy-dir, --kubernetes) needs pod IPAM (--pod-cidr): \
             pods are known by the identity weft-cni gives their reservations"
        ),
        (Some(i), true) => {
            let p = crate::policy::Policy::start(cfg.policy.clone(), cfg.state_dir.clone())
                .await
                .context("starting NetworkPolicy")?;
            tokio::spawn(p.clone().run(i.clone(), gossip.clone()));
            Some(p)
        }
    };

    let daemon = Arc::new(Daemon {
        cfg: cfg.clone(),
        name,
        uid,
        underlay_mtu,
        started: Instant::now(),
        shared: shared.clone(),
        dataplane,
        gossip: gossip.clone(),
        neighbors: Mutex::new(HashMap::new()),
        recent: Mutex::new(HashMap::new()),
        counters: Mutex::new(HashMap::new()),
        seeds: Mutex::new(seeds),
        heartbeat_seq: std::sync::atomic::AtomicU64::new(1),
        nl: nl.clone(),
        fast: tokio::sync::Mutex::new(fast),
        fast_off,
        fast_peers: Mutex::new(HashMap::new()),
        fast_stats: Mutex::new(None),
        bridge_index,
        kernel_fdb: Mutex::new(Default::default()),
        ipam,
        policy,
        leave: tokio::sync::Notify::new(),
        leaving: std::sync::atomic::AtomicBool::new(false),
        secret_file: Mutex::new(Default::default()),
        config_peers: Mutex::new(cfg.peers.clone()),
        log_filter: Mutex::new(cfg.log.clone()),
        live: Default::default(),
    });

    if let (Some((client, _, peers)), Some(p)) = (kube, &daemon.policy) {
        tokio::spawn(kubernetes::run(daemon.clone(), p.clone(), client, peers));
    }

    let listener = tokio::net::UnixListener::bind(&sock_path)
        .with_context(|| format!("binding the API socket {}", sock_path.display()))?;
    // Whoever can connect controls this host's part of the cluster: owner only, whatever the
    // umask (docs/security.md, "The local API socket").
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting the API socket {}", sock_path.display()))?;
    }
    let (api_stop, api_stopped) = tokio::sync::watch::channel(false);
    let api_task = tokio::spawn(serve_api(listener, daemon.clone(), api_stopped));
    if let Some(addr) = cfg.metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics address {addr}"))?;
        let d = daemon.clone();
        let app = axum::Router::new().route(
            "/metrics",
            get(move || {
                let d = d.clone();
                async move {
                    d.refresh_guard().await;
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        metrics::render(&d.report()),
                    )
                }
            }),
        );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("metrics server stopped: {e}");
            }
        });
    }

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
    let mut hup = signal(SignalKind::hangup())?;
    let mut secret_ticks = tokio::time::interval(Duration::from_secs(1));
    let mut ageing = tokio::time::interval(Duration::from_secs(5));
    let mut liveness = tokio::time::interval(Duration::from_millis(200));
    let mut ipam_ticks = tokio::time::interval(Duration::from_secs(2));
    let mut ticks = 0u64;
    // The kernel's tables (bridge, fast path) are read and written in a task of their own, so
    // that netlink never delays heartbeats, gossip or the API.
    let kernel_task = tokio::spawn(daemon.clone().kernel_task());
    let mut ipam_rounds = 0u64;
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => daemon.on_event(ev),
                None => break,
            },
            _ = liveness.tick() => {
                ticks += 1;
                daemon.heartbeat_round(ticks.is_multiple_of(5));
                daemon.rekey_round();
            }
            _ = ageing.tick() => {
                shared.switch().fdb_mut().expire(Instant::now());
            }
            _ = ipam_ticks.tick() => {
                ipam_rounds += 1;
                daemon.ipam_round(ipam_rounds.is_multiple_of(15)).await;
            }
            _ = secret_ticks.tick() => daemon.reload_secrets(false),
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reading the configuration again");
                let d = daemon.clone();
                tokio::task::spawn_blocking(move || d.reload());
            }
            _ = daemon.leave.notified() => break,
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down");
    // The API stops taking requests and finishes those under way (the answer to `weft leave`
    // among them), for at most 5 s.
    let _ = api_stop.send(true);
    if tokio::time::timeout(Duration::from_secs(5), api_task)
        .await
        .is_err()
    {
        tracing::warn!("API requests still running after 5 s; stopping anyway");
    }
    // Bridge addresses, reservations, the masquerade table and the port guard stay (pods keep
    // working, outbound too, and stay guarded across a restart; the next start replaces the
    // masquerade table atomically and reconciles the guard). `weft leave` removes them.
    kernel_task.abort();
    let _ = kernel_task.await;
    gossip.shutdown().await;
    if let Some(fp) = daemon.fast.lock().await.take() {
        if let Err(e) = fp.teardown(&nl).await {
            tracing::warn!("removing the VXLAN device: {e:#}");
        }
    }
    let d = daemon.clone();
    tokio::task::spawn_blocking(move || d.dataplane.stop()).await?;
    let _ = std::fs::remove_file(&sock_path);
    Ok(())
}
