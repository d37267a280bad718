//! `weft`: the Weft host daemon and its command-line tools.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;
use weft::{api, daemon, demo, status};

#[derive(Parser, Debug)]
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
        /// What to show: everything (default), peers, connections, targets, or the MAC table.
        #[arg(value_parser = ["all", "peers", "connections", "targets", "macs"], default_value = "all")]
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
    /// Build a throwaway 3-host cluster of network namespaces, test it, and remove it.
    Demo {
        /// Keep the cluster up after the checks until Ctrl-C.
        #[arg(long)]
        keep: bool,
    },
}

#[derive(clap::Args, Debug)]
struct RouterArgs {
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
    /// Seconds a MAC address is remembered without traffic.
    #[arg(long, default_value_t = 300)]
    mac_age: u64,
    /// File holding the cluster secret: turns encryption on (every peer needs the same one).
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
    /// Never use the kernel VXLAN fast path (always the sleeve).
    #[arg(long)]
    no_fastpath: bool,
    /// VXLAN network identifier of the fast path (the same on every host).
    #[arg(long, default_value_t = weft::fastpath::DEFAULT_VNI)]
    vni: u32,
    /// UDP port of the fast path (the same on every host).
    #[arg(long, default_value_t = weft::fastpath::DEFAULT_PORT)]
    vxlan_port: u16,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:6782).
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// Log filter (also RUST_LOG), e.g. "info" or "weft=debug".
    #[arg(long, default_value = "info")]
    log: String,
}

fn router(a: RouterArgs) -> Result<()> {
    let filter = std::env::var("RUST_LOG").unwrap_or(a.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
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
    let secret = match &a.secret_file {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading the secret file {}", path.display()))?;
            let s = gossip::secure::Secret::from_bytes(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Some(std::sync::Arc::new(s))
        }
        None => None,
    };
    let trusted_subnets = a
        .trusted_subnets
        .iter()
        .map(|c| c.parse())
        .collect::<Result<Vec<daemon::Cidr>>>()?;
    let rekey = vswitch::RekeyPolicy {
        max_age: Duration::from_secs(a.rekey_after.max(1)),
        max_packets: a.rekey_after_packets.max(1),
        ..Default::default()
    };
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
        metrics: a.metrics,
        secret,
        trusted_subnets,
        rekey,
        fastpath: !a.no_fastpath,
        vni: a.vni,
        vxlan_port: a.vxlan_port,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(daemon::run(cfg))
}

fn seed(state_dir: &std::path::Path, path: &str, addr: String) -> Result<()> {
    let a: daemon::SeedAnswer = api::post(state_dir, path, &daemon::SeedRequest { addr })?;
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

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Router(a) => router(a),
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
                    "peers" | "connections" | "targets" => v[&what].clone(),
                    _ => v,
                };
                println!("{}", serde_json::to_string_pretty(&part)?);
            } else {
                let text = match what.as_str() {
                    "peers" => report.render_peers(),
                    "connections" => report.render_connections(),
                    "targets" => report.render_targets(),
                    _ => report.render(),
                };
                print!("{}", text.trim_start_matches('\n'));
            }
            Ok(())
        }
        Command::Connect { addr, state_dir } => seed(&state_dir, "/v1/connect", addr),
        Command::Forget { addr, state_dir } => seed(&state_dir, "/v1/forget", addr),
        Command::Demo { keep } => demo::run(demo::Options { keep }),
    }
}
