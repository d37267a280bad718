//! `weft`: the Weft host daemon and its command-line tools.

#![deny(unsafe_code)]

mod cli_docs;

use anyhow::{Context, Result};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Subcommand};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;
use weft::daemon::config_file::{self, Source};
use weft::{daemon, demo};
use weft_api as api;
use weft_api::status;

#[derive(clap::Parser, Debug)]
#[command(
    name = "weft",
    version,
    about = "Weft: an overlay network for container clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// `weft router` has many flags; the enum is parsed once, so its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run the host daemon.
    Router(RouterArgs),
    /// Show the local router's peers, connections and counters.
    Status {
        /// State directory of the router to ask.
        #[arg(long, default_value = "/run/weft")]
        state_dir: PathBuf,
        /// Print the raw JSON report.
        #[arg(long)]
        json: bool,
        /// What to show: everything (default), peers, connections, targets, the MAC table, or
        /// pod IPAM (blocks per host and this host's reservations), or NetworkPolicy (sources,
        /// and the policies selecting each local pod with its counters), or the topology (every
        /// peer's gossiped connections as this router holds them).
        #[arg(value_parser = ["all", "peers", "connections", "targets", "macs", "ipam", "policy", "topology"], default_value = "all")]
        what: String,
    },
    /// Add an address to the local router's seed list (kept across restarts) and dial it.
    Connect {
        /// ADDR[:PORT]
        addr: String,
        /// State directory of the router.
        #[arg(long, default_value = "/run/weft")]
        state_dir: PathBuf,
    },
    /// Remove an address from the local router's seed list and stop dialling it.
    Forget {
        /// ADDR[:PORT]
        addr: String,
        /// State directory of the router.
        #[arg(long, default_value = "/run/weft")]
        state_dir: PathBuf,
    },
    /// Read the router's configuration again (its flags and environment, the configuration file
    /// as it is now) and apply what can change without a restart: peers, the log filter, the
    /// policy directory (and the secret file's contents); say what needs a restart. SIGHUP
    /// does the same.
    Reload {
        /// State directory of the router.
        #[arg(long, default_value = "/run/weft")]
        state_dir: PathBuf,
    },
    /// Leave the cluster for good: hand this host's pod-address blocks back, remove the bridge's
    /// gateway addresses and the masquerade table, and stop the router.
    Leave {
        /// Leave even though pods on this host still hold addresses (they lose them).
        #[arg(long)]
        force: bool,
        /// State directory of the router.
        #[arg(long, default_value = "/run/weft")]
        state_dir: PathBuf,
    },
    /// The configuration file: `weft config check` validates it and prints the effective
    /// configuration with where each value came from.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Check this host and its peers (kernel features, sysctls, CNI configuration, devices of
    /// other overlays, ports and MTU to each peer) and print each problem with its fix. Only
    /// reads. Exit code 1 when a check fails (warnings do not fail).
    Doctor {
        /// State directory of the local router (peer checks need it running).
        #[arg(long, default_value = "/run/weft")]
        state_dir: PathBuf,
        /// The container runtime's CNI configuration directory.
        #[arg(long, default_value = "/etc/cni/net.d")]
        cni_conf_dir: PathBuf,
        /// Print the checks as JSON (weft_api::doctor::Report).
        #[arg(long)]
        json: bool,
    },
    /// Explain the path a packet from FROM to TO would take, as this host's router sees it: where
    /// each end is, the bridge or the path between hosts (fast path, sleeve, relay; encryption,
    /// MTU), and the NetworkPolicy verdicts at egress and ingress with the policies deciding.
    Trace {
        /// The source: a pod (namespace/name), an IP address (IPv4 or IPv6) or a MAC address.
        from: String,
        /// The destination, in the same forms.
        to: String,
        /// The protocol (default: tcp with --port, else icmp).
        #[arg(long, value_parser = ["tcp", "udp", "icmp"])]
        proto: Option<String>,
        /// The destination port (TCP, UDP).
        #[arg(long)]
        port: Option<u16>,
        /// Also send a real probe, marked, from inside the source pod's network namespace, and
        /// report every hop it was seen at (on this host and its neighbours) with timings, and
        /// whether that is the path explained. Run on the source pod's host.
        #[arg(long)]
        live: bool,
        /// Print the answer as JSON (weft_api::trace::TraceAnswer).
        #[arg(long)]
        json: bool,
        /// State directory of the router to ask.
        #[arg(long, default_value = "/run/weft")]
        state_dir: PathBuf,
    },
    /// Build a throwaway 3-host cluster of network namespaces, test it, and remove it.
    Demo {
        /// Keep the cluster up after the checks until Ctrl-C.
        #[arg(long)]
        keep: bool,
    },
    /// Print the shell completion script (for packagers; docs/install.md).
    #[command(hide = true)]
    Completions {
        /// The shell.
        shell: cli_docs::Shell,
    },
    /// Print the manual page, or write one page per command into a directory (for packagers).
    #[command(hide = true)]
    Man {
        /// Write weft.8, weft-router.8, ... here instead of the top page to stdout.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigAction {
    /// Validate the configuration (file, environment) and print the effective one, each value
    /// with where it came from: flag, environment, file or default.
    Check {
        /// The configuration file (default: /etc/weft/weft.toml, if it exists).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
struct RouterArgs {
    /// The configuration file: every option below, keyed by its flag's name (default:
    /// /etc/weft/weft.toml, if it exists). Flags and WEFT_* variables take precedence.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Nickname shown to other peers (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Underlay address for control (TCP) and data (UDP): ADDR or ADDR:PORT.
    #[arg(long, default_value = "0.0.0.0:6783")]
    listen: String,
    /// A peer to connect to, ADDR[:PORT]; repeat for more.
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// Directory for the API socket and persistent state.
    #[arg(long, default_value = "/run/weft")]
    state_dir: PathBuf,
    /// The host bridge pods attach to.
    #[arg(long, default_value = "weft")]
    bridge: String,
    /// The router's TAP port on the bridge (default: <bridge>-tap).
    #[arg(long)]
    tap: Option<String>,
    /// Pod MTU (default: computed from the underlay MTU).
    #[arg(long)]
    mtu: Option<u32>,
    /// Most MAC addresses remembered at once.
    #[arg(long, default_value_t = 8192)]
    max_macs: usize,
    /// Most MAC addresses the kernel learns: the bridge's learned entries and the fast path's
    /// VXLAN device's table each (0: no cap; needs Linux 6.8 for the bridge).
    #[arg(long, default_value_t = weft::fastpath::DEFAULT_MAX_LEARNED)]
    kernel_max_macs: u32,
    /// Seconds a MAC address is remembered without traffic.
    #[arg(long, default_value_t = 300)]
    mac_age: u64,
    /// File holding the cluster secrets, one per line (the first is used to dial, all are
    /// accepted; `#` starts a comment line): turns encryption on. Reread when it changes and on
    /// SIGHUP.
    #[arg(long, env = "WEFT_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// Networks (CIDR, comma-separated) whose hosts exchange data unencrypted; the control
    /// channel stays authenticated and encrypted.
    #[arg(long, value_delimiter = ',')]
    trusted_subnets: Vec<String>,
    /// Seconds after which data keys are replaced (encrypted clusters).
    #[arg(long, default_value_t = 120)]
    rekey_after: u64,
    /// Datagrams after which data keys are replaced (encrypted clusters).
    #[arg(long, default_value_t = 1 << 32)]
    rekey_after_packets: u64,
    /// The AEAD sealing data to each peer (encrypted clusters): auto (AES-256-GCM with peers
    /// that also have AES hardware, ChaCha20-Poly1305 otherwise), aes-256-gcm or
    /// chacha20-poly1305 (a peer that cannot use the pinned one is refused).
    #[arg(long, default_value = "auto")]
    cipher: gossip::cipher::CipherSetting,
    /// Never use the kernel VXLAN fast path (always the sleeve).
    #[arg(long)]
    no_fastpath: bool,
    /// Refuse gossip and IPAM records that their owner did not sign (set it once every router of
    /// the cluster runs a version that signs: docs/security.md).
    #[arg(long)]
    require_signed_records: bool,
    /// VXLAN network identifier of the fast path (the same on every host).
    #[arg(long, default_value_t = weft::fastpath::DEFAULT_VNI)]
    vni: u32,
    /// UDP port of the fast path (the same on every host).
    #[arg(long, default_value_t = weft::fastpath::DEFAULT_PORT)]
    vxlan_port: u16,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:6782).
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// The cluster's pod CIDR (the same on every host): turns pod IPAM on. IPv4 or IPv6; give it
    /// twice, an IPv4 and an IPv6 CIDR (e.g. 10.32.0.0/12 and fd10:32::/48), for dual-stack pods.
    #[arg(long, env = "WEFT_POD_CIDR", value_delimiter = ',')]
    pod_cidr: Vec<String>,
    /// Prefix length of the blocks the pod CIDR is split into, one or more per host (default:
    /// 24, or the CIDR's prefix + 2 when the CIDR is a /23 or smaller).
    #[arg(long)]
    pod_block_prefix: Option<u8>,
    /// How long a host may be unreachable before the cluster takes its blocks back (90s, 15m,
    /// 1h, ...).
    #[arg(long, default_value = "30m")]
    ipam_grace: String,
    /// The cluster size to assume before the peers are known: no block is claimed until a
    /// majority of it agrees (default: 1 + the --peer addresses that are not this host's).
    /// Kubernetes installs should pass the node count.
    #[arg(long)]
    ipam_init_peers: Option<usize>,
    /// Do not masquerade traffic from pods to addresses outside the pod CIDR.
    #[arg(long)]
    no_masquerade: bool,
    /// Frames a second each pod port (attached by weft-cni) may send to broadcast and multicast
    /// destinations (ARP requests, neighbour solicitations, ...); the rest is dropped in the
    /// kernel and counted (`flood_limit`). 0: no limit.
    #[arg(long, default_value_t = weft::guard::rules::FloodLimit::DEFAULT.pps)]
    flood_limit: u32,
    /// Frames over the flood limit let through at once after a quiet period (0: as many as
    /// --flood-limit).
    #[arg(long, default_value_t = weft::guard::rules::FloodLimit::DEFAULT.burst)]
    flood_burst: u32,
    /// Keep the data plane thread polling for this many microseconds after its last packet
    /// before it sleeps (0 to 10000): lower sleeve latency for request/response traffic, paid
    /// for with up to one spinning core while packets come. Off (0) by default.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    busy_poll_us: u64,
    /// Data plane workers: threads, each with its own queue of the TAP port and its own UDP
    /// socket on the listen port (SO_REUSEPORT). A flow stays on one worker. `auto`: half the
    /// cores this process may run on (the other half is left to the pods and the kernel's share
    /// of the traffic), at least 1 and at most 8.
    #[arg(long, default_value = "auto", value_parser = weft::daemon::config::parse_workers)]
    workers: usize,
    /// Enforce Kubernetes NetworkPolicy from the manifests in this directory (`*.yaml`, `*.yml`,
    /// `*.json`: Namespace, Pod and NetworkPolicy objects; every host given the same content;
    /// changes picked up within 2 s). Needs --pod-cidr.
    #[arg(long, env = "WEFT_POLICY_DIR")]
    policy_dir: Option<PathBuf>,
    /// Enforce Kubernetes NetworkPolicy from the cluster's API (in-cluster config or
    /// KUBECONFIG): Pods, Namespaces, NetworkPolicies and Nodes are watched. Needs --pod-cidr.
    #[arg(long)]
    kubernetes: bool,
    /// The kubeconfig for --kubernetes (default: the in-cluster configuration, or KUBECONFIG).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Log filter (also RUST_LOG), e.g. "info" or "weft=debug".
    #[arg(long, default_value = "info")]
    log: String,
}

fn router(a: RouterArgs) -> Result<()> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{fmt, reload, EnvFilter};
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = rust_log.clone().unwrap_or(a.log.clone());
    let (filter, handle) = reload::Layer::new(EnvFilter::new(filter));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            fmt::layer()
                .with_target(false)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
    let mut cfg = build_config(a)?;
    // `weft reload` and SIGHUP: the same command line and environment, the file as it is then.
    let argv: Vec<OsString> = std::env::args_os().collect();
    cfg.reloader = Some(daemon::Reloader {
        config: std::sync::Arc::new(move || {
            let (cli, _) = parse_cli(argv.clone()).map_err(|e| e.render().to_string())?;
            match cli.command {
                Command::Router(a) => build_config(a).map_err(|e| format!("{e:#}")),
                _ => Err("not a router command line".into()),
            }
        }),
        set_log: std::sync::Arc::new(move |f: &str| {
            if rust_log.is_some() {
                return Err("RUST_LOG is set and wins over --log".into());
            }
            let filter = EnvFilter::try_new(f).map_err(|e| format!("--log {f:?}: {e}"))?;
            handle.reload(filter).map_err(|e| e.to_string())
        }),
    });
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(daemon::run(cfg))
}

/// The daemon's configuration from the parsed options, every value checked (files read).
fn build_config(a: RouterArgs) -> Result<daemon::Config> {
    let listen = daemon::parse_addr(&a.listen)?;
    let peers = a
        .peers
        .iter()
        .map(|p| daemon::parse_addr(p))
        .collect::<Result<Vec<_>>>()?;
    let tap = a.tap.unwrap_or_else(|| {
        let mut t = format!("{}-tap", a.bridge);
        t.truncate(15);
        t
    });
    let secrets = match &a.secret_file {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading the secret file {}", path.display()))?;
            let k = gossip::secure::Keyring::parse(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Some(k)
        }
        None => None,
    };
    let trusted_subnets = a
        .trusted_subnets
        .iter()
        .map(|c| {
            c.parse::<ipnet::IpNet>()
                .with_context(|| format!("--trusted-subnets {c:?}: not a prefix ADDR/LEN"))
        })
        .collect::<Result<Vec<_>>>()?;
    let rekey = vswitch::RekeyPolicy {
        max_age: Duration::from_secs(a.rekey_after.max(1)),
        max_packets: a.rekey_after_packets.max(1),
        ..Default::default()
    };
    let ipam = match pod_cidrs(&a.pod_cidr)? {
        None => None,
        Some((cidr, dual)) => {
            let block_prefix = a
                .pod_block_prefix
                .unwrap_or_else(|| weft::ipam::default_block_prefix(cidr));
            weft::ipam::validate(cidr, block_prefix)?;
            let grace = weft::ipam::parse_duration(&a.ipam_grace).context("--ipam-grace")?;
            if a.ipam_init_peers == Some(0) {
                anyhow::bail!("--ipam-init-peers must be 1 or more");
            }
            Some(daemon::IpamOptions {
                cidr,
                dual,
                block_prefix,
                grace,
                init_peers: a.ipam_init_peers,
                masquerade: !a.no_masquerade,
                flood_limit: weft::guard::rules::FloodLimit::from_flags(
                    a.flood_limit,
                    a.flood_burst,
                ),
            })
        }
    };
    if ipam.is_none() && (a.pod_block_prefix.is_some() || a.ipam_init_peers.is_some()) {
        anyhow::bail!("--pod-block-prefix and --ipam-init-peers need --pod-cidr");
    }
    let policy = weft::policy::PolicyOptions {
        dir: a.policy_dir.clone(),
        kubernetes: a.kubernetes,
        kubeconfig: a.kubeconfig.clone(),
    };
    if a.kubeconfig.is_some() && !a.kubernetes {
        anyhow::bail!("--kubeconfig needs --kubernetes");
    }
    if a.kubernetes && a.policy_dir.is_some() {
        anyhow::bail!(
            "--policy-dir and --kubernetes are two sources of the same objects: choose one"
        );
    }
    if ipam.is_none() && policy.enabled() {
        anyhow::bail!(
            "--policy-dir and --kubernetes need --pod-cidr (pods are known by the identity weft-cni gives their reservations)"
        );
    }
    let cfg = daemon::Config {
        nickname: a.name.unwrap_or_else(daemon::hostname),
        listen,
        peers,
        state_dir: a.state_dir,
        bridge: a.bridge,
        tap,
        mtu: a.mtu,
        fdb_capacity: a.max_macs,
        mac_max_age: Duration::from_secs(a.mac_age),
        kernel_max_macs: a.kernel_max_macs,
        metrics: a.metrics,
        secrets,
        secret_file: a.secret_file.clone(),
        trusted_subnets,
        rekey,
        cipher: a.cipher,
        fastpath: !a.no_fastpath,
        require_signed_records: a.require_signed_records,
        vni: a.vni,
        vxlan_port: a.vxlan_port,
        ipam,
        policy,
        busy_poll: Duration::from_micros(a.busy_poll_us),
        workers: a.workers,
        log: a.log.clone(),
        reloader: None,
    };
    Ok(cfg)
}

fn seed(state_dir: &std::path::Path, path: &str, addr: String) -> Result<()> {
    let a: api::control::SeedAnswer =
        api::post(state_dir, path, &api::control::SeedRequest { addr })?;
    let verb = if path.ends_with("connect") {
        "added"
    } else {
        "removed"
    };
    if a.changed {
        println!("{verb} {}", a.addr);
    } else {
        println!(
            "{} was {}",
            a.addr,
            if verb == "added" {
                "already a seed"
            } else {
                "not a seed"
            }
        );
    }
    println!(
        "seeds: {}",
        if a.seeds.is_empty() {
            "none".into()
        } else {
            a.seeds.join(" ")
        }
    );
    Ok(())
}

/// One `--pod-cidr`, checked (a prefix with host bits set names the network meant).
fn pod_cidr(c: &str) -> Result<gossip::ipam::Block> {
    c.trim().parse().with_context(|| {
        let meant = c.trim().split_once('/').and_then(|(a, n)| {
            gossip::ipam::Block::new(a.parse::<std::net::IpAddr>().ok()?, n.parse().ok()?)
        });
        match meant {
            Some(b) => format!("--pod-cidr {c:?} has host bits set: did you mean {b}?"),
            None => format!("--pod-cidr {c:?} (e.g. 10.32.0.0/12, or fd10:32::/48 beside it)"),
        }
    })
}

/// The `--pod-cidr` values: none (no IPAM), one CIDR of either family (agreed in blocks), or an
/// IPv4 and an IPv6 one (dual stack, either order: the IPv4 one is agreed in blocks, the IPv6
/// one is mapped from it).
fn pod_cidrs(
    given: &[String],
) -> Result<Option<(gossip::ipam::Block, Option<weft::ipam::DualStack>)>> {
    let cidrs = given
        .iter()
        .map(|c| pod_cidr(c))
        .collect::<Result<Vec<_>>>()?;
    let (v6, v4): (Vec<_>, Vec<_>) = cidrs.iter().partition(|c| c.is_ipv6());
    match (v4.as_slice(), v6.as_slice()) {
        ([], []) => Ok(None),
        ([c], []) => Ok(Some((*c, None))),
        ([c4], [c6]) => Ok(Some((*c4, Some(weft::ipam::DualStack::new(*c4, *c6)?)))),
        ([], [c6]) => Ok(Some((*c6, None))),
        _ => anyhow::bail!(
            "--pod-cidr is given at most once per family (one IPv4 and one IPv6 CIDR), not {}",
            given.join(", ")
        ),
    }
}

fn main() -> Result<()> {
    let cli = match parse_cli(std::env::args_os().collect()) {
        Ok((cli, _)) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Router(a) => router(a),
        Command::Config {
            action: ConfigAction::Check { config },
        } => config_check(config),
        Command::Status {
            state_dir,
            json,
            what,
        } => {
            if what == "macs" {
                let macs: Vec<status::MacReport> = api::get(&state_dir, "/v1/macs")?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&macs)?);
                } else {
                    println!("{:<18} {:<20} AGE", "MAC", "LOCATION");
                    for m in macs {
                        println!(
                            "{:<18} {:<20} {:.1} s",
                            m.mac,
                            m.location,
                            m.age_ms as f64 / 1000.0
                        );
                    }
                }
                return Ok(());
            }
            let report: status::Report = api::get(&state_dir, "/v1/status")?;
            if json {
                let v = serde_json::to_value(&report)?;
                let part = match what.as_str() {
                    "peers" | "connections" | "targets" | "ipam" | "policy" | "topology" => {
                        v[&what].clone()
                    }
                    _ => v,
                };
                println!("{}", serde_json::to_string_pretty(&part)?);
            } else {
                let text = match what.as_str() {
                    "peers" => report.render_peers(),
                    "connections" => report.render_connections(),
                    "targets" => report.render_targets(),
                    "ipam" => report.render_ipam(),
                    "policy" => report.render_policy(),
                    "topology" => report.render_topology(),
                    _ => report.render(),
                };
                print!("{}", text.trim_start_matches('\n'));
            }
            Ok(())
        }
        Command::Connect { addr, state_dir } => seed(&state_dir, "/v1/connect", addr),
        Command::Forget { addr, state_dir } => seed(&state_dir, "/v1/forget", addr),
        Command::Reload { state_dir } => {
            let a: api::control::ReloadAnswer = api::call(
                &state_dir,
                "POST",
                "/v1/reload",
                None::<&()>,
                Duration::from_secs(30),
            )?;
            if let Some(e) = &a.error {
                anyhow::bail!("the configuration was not reloaded: {e}");
            }
            println!(
                "applied: {}",
                if a.applied.is_empty() {
                    "nothing changed".to_string()
                } else {
                    a.applied.join(", ")
                }
            );
            if !a.needs_restart.is_empty() {
                println!(
                    "needs a restart (the running values stay): {}",
                    a.needs_restart.join(", ")
                );
            }
            Ok(())
        }
        Command::Leave { force, state_dir } => {
            // Handing the blocks back waits up to 10 s for a peer to hear it.
            let a: api::control::LeaveAnswer = api::call(
                &state_dir,
                "POST",
                "/v1/leave",
                Some(&api::control::LeaveRequest { force }),
                Duration::from_secs(30),
            )?;
            println!(
                "left the cluster: {} block(s) handed back{}; the router is stopping",
                a.blocks.len(),
                if a.reservations_dropped > 0 {
                    format!(", {} reservation(s) dropped", a.reservations_dropped)
                } else {
                    String::new()
                }
            );
            Ok(())
        }
        Command::Doctor {
            state_dir,
            cni_conf_dir,
            json,
        } => {
            let report = weft::doctor::run(&weft::doctor::Options::new(state_dir, cni_conf_dir));
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            std::process::exit(report.exit_code());
        }
        Command::Trace {
            from,
            to,
            proto,
            port,
            live,
            json,
            state_dir,
        } => {
            let req = api::trace::TraceRequest {
                from,
                to,
                proto: proto.unwrap_or_default(),
                port,
                live,
            };
            let mut t: api::trace::TraceAnswer = api::post(&state_dir, "/v1/trace", &req)?;
            if let Some(l) = t.live.clone() {
                // Armed: send the probe, then ask for what the hosts saw of it.
                let sent = match weft::probe::send(&l) {
                    Ok(s) => s,
                    Err(e) => weft::probe::Sent {
                        sent_at_us: weft::trace::watch::wall_us(),
                        rtt_us: None,
                        note: Some(format!("the probe was not sent: {e:#}")),
                    },
                };
                let report = api::trace::LiveReportRequest {
                    id: l.id,
                    sent_at_us: sent.sent_at_us,
                    rtt_us: sent.rtt_us,
                    note: sent.note,
                };
                t = api::post(&state_dir, "/v1/trace/report", &report)?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                print!("{}", api::trace::render(&t));
            }
            Ok(())
        }
        Command::Demo { keep } => demo::run(demo::Options { keep }),
        Command::Completions { shell } => {
            cli_docs::completions(cli_command(), shell, &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir: None } => {
            Ok(cli_docs::man_page(cli_command(), &mut std::io::stdout())?)
        }
        Command::Man { dir: Some(dir) } => {
            for page in cli_docs::man_pages(cli_command(), &dir)? {
                println!("{}", page.display());
            }
            Ok(())
        }
    }
}

/// The command line with a `WEFT_*` variable for every router option.
fn cli_command() -> clap::Command {
    Cli::command().mut_subcommand("router", config_file::with_env)
}

/// Parses `argv`; for `weft router`, adds what the configuration file says for the options no
/// flag or variable set, and says which ids came from the file.
fn parse_cli(mut argv: Vec<OsString>) -> Result<(Cli, BTreeSet<String>), clap::Error> {
    let m = cli_command().try_get_matches_from(&argv)?;
    let mut from_file = BTreeSet::new();
    let m = match m.subcommand() {
        Some(("router", sub)) => {
            let explicit = sub.get_one::<PathBuf>("config").cloned();
            let path = explicit
                .clone()
                .unwrap_or_else(|| PathBuf::from(config_file::DEFAULT_PATH));
            if explicit.is_none() && !path.exists() {
                m
            } else {
                let fail =
                    |msg: String| cli_command().error(clap::error::ErrorKind::InvalidValue, msg);
                let table = config_file::read(&path).map_err(fail)?;
                let router_cmd = cli_command()
                    .find_subcommand("router")
                    .expect("the router command")
                    .clone();
                let given = |id: &str| {
                    matches!(
                        sub.value_source(id),
                        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                    )
                };
                let extra = config_file::file_args(&router_cmd, &table, given)
                    .map_err(|e| fail(format!("{}: {e}", path.display())))?;
                from_file.extend(extra.keys().cloned());
                argv.extend(extra.into_values().flatten());
                cli_command().try_get_matches_from(&argv).map_err(|e| {
                    fail(format!(
                        "{}: {}",
                        path.display(),
                        e.render().to_string().trim_start_matches("error: ").trim()
                    ))
                })?
            }
        }
        _ => m,
    };
    Ok((Cli::from_arg_matches(&m)?, from_file))
}

/// `weft config check`: the effective router configuration, each value with its source.
fn config_check(config: Option<PathBuf>) -> Result<()> {
    let mut argv: Vec<OsString> = vec!["weft".into(), "router".into()];
    if let Some(c) = &config {
        argv.push("--config".into());
        argv.push(c.into());
    }
    let (cli, from_file) = match parse_cli(argv.clone()) {
        Ok(x) => x,
        Err(e) => e.exit(),
    };
    let Command::Router(a) = cli.command else {
        unreachable!("parsed as weft router");
    };
    // Every value is checked as the router would (files read, prefixes parsed).
    build_config(a).context("the configuration is not valid")?;
    // Sources, from a second parse that keeps the matches.
    let m = cli_command()
        .try_get_matches_from(argv.iter().cloned().chain(
            // The same file values again, for their sources.
            std::iter::empty(),
        ))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let sub = m.subcommand_matches("router").expect("router");
    let router_cmd = cli_command().find_subcommand("router").unwrap().clone();
    let path = config.unwrap_or_else(|| PathBuf::from(config_file::DEFAULT_PATH));
    let table = if path.exists() {
        config_file::read(&path).map_err(|e| anyhow::anyhow!(e))?
    } else {
        Default::default()
    };
    println!("# weft router configuration: {}", path.display());
    println!("config-version = {}", config_file::CONFIG_VERSION);
    for arg in router_cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if ["config", "help"].contains(&long) {
            continue;
        }
        let id = arg.get_id().as_str();
        let source = if from_file.contains(id) {
            Source::File
        } else {
            match sub.value_source(id) {
                Some(ValueSource::CommandLine) => Source::Flag,
                Some(ValueSource::EnvVariable) => Source::Env,
                _ => Source::Default,
            }
        };
        let values: Vec<String> = if source == Source::File {
            match &table[long] {
                toml::Value::Array(a) => a.iter().map(toml_text).collect(),
                v => vec![toml_text(v)],
            }
        } else {
            sub.get_raw(id)
                .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
                .unwrap_or_default()
        };
        let takes_value = arg.get_action().takes_values();
        let many = matches!(arg.get_action(), clap::ArgAction::Append)
            || arg.get_value_delimiter().is_some();
        let text = if !takes_value {
            if values.is_empty() || values == ["false"] {
                "false".to_string()
            } else {
                "true".to_string()
            }
        } else if many {
            format!(
                "[{}]",
                values
                    .iter()
                    .map(|v| format!("{v:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else if let Some(v) = values.first() {
            format!("{v:?}")
        } else {
            println!("# {long} (unset)");
            continue;
        };
        println!("{long} = {text}  # {source}");
    }
    Ok(())
}

/// A file value as text (strings without their quotes).
fn toml_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
