//! `weft`: the Weft host daemon and its command-line tools.

use anyhow::Result;
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
        /// What to show: everything (default) or the MAC table.
        #[arg(value_parser = ["all", "macs"], default_value = "all")]
        what: String,
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
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(daemon::run(cfg))
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
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(())
        }
        Command::Demo { keep } => demo::run(demo::Options { keep }),
    }
}
