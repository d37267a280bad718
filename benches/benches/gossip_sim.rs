//! Topology gossip at scale: the deterministic simulator of `gossip/tests/sim.rs` run with 100,
//! 300 and 1000 peers on sparse random graphs (each peer connects to 3 random earlier ones, so the
//! mean degree is about 6).
//!
//! Run with `cargo bench -p weft-benches --bench gossip_sim` (add `-- 100 300` to pick sizes, and
//! `signed` to run each size twice: as before, and with every peer signing its records and
//! verifying everyone else's, which is what routers do from host keys on).
//! It prints one markdown table per measurement; `docs/gossip.md` holds a copy.
//!
//! Scenarios, all in simulated rounds of 100 ms (one hop of latency), anti-entropy every second:
//!
//! - **cold start**: every peer starts and all connections come up at the same instant; rounds
//!   until every view holds every peer's current record;
//! - **link down / link up**: one connection (whose loss does not split the mesh) closes, then
//!   comes back; rounds and bytes until all views agree again;
//! - **join**: a new peer connects to 3 random peers of the converged mesh;
//! - **idle**: bytes per peer per second once converged (anti-entropy summaries only).
//!
//! Bytes are JSON plus the 4-byte frame of every message. "full-state broadcast" is what one
//! change would cost if every other peer received the whole topology once (the cheapest possible
//! full-state scheme: over a spanning tree, no flooding) — the yardstick for deltas.

// `sim.rs` allows dead code itself: the bench uses part of it, the tests another part.
#[path = "../../gossip/tests/sim.rs"]
mod sim;

use gossip::routes::Routes;
use gossip::topology::{ConnEntry, PeerRecord};
use sim::{Sim, SimConfig, Traffic};
use std::time::Instant;

const DEGREE_K: usize = 3;
const MAX_ROUNDS: u64 = 500;

struct Row {
    n: usize,
    signed: bool,
    cold_rounds: u64,
    cold_bytes_per_peer: u64,
    cold_wall_ms: u128,
    down_rounds: u64,
    down: Traffic,
    up_rounds: u64,
    up: Traffic,
    join_rounds: u64,
    join: Traffic,
    full_state: u64,
    idle_per_peer_per_s: f64,
    view_bytes: usize,
    heap_bytes: usize,
    routes_us: f64,
    trees_us: f64,
    links: usize,
}

/// Rough heap footprint of one peer's records: the structs, their connection lists and
/// nicknames, plus about 40 bytes of map overhead per record (the cached routes come on top:
/// O(N + E) words).
fn heap_estimate(sim: &Sim, i: usize) -> usize {
    sim.core(i)
        .topology()
        .records()
        .map(|r| {
            std::mem::size_of::<PeerRecord>()
                + 40
                + r.conns.capacity() * std::mem::size_of::<ConnEntry>()
                + r.nickname.capacity()
        })
        .sum()
}

/// Microseconds to compute peer `i`'s data-plane routes, and then every source's broadcast
/// children (what a router does after each topology change).
fn time_routes(sim: &Sim, i: usize) -> (f64, f64) {
    let topology = sim.core(i).topology();
    let reps = 5;
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(Routes::compute(topology));
    }
    let compute = t.elapsed().as_secs_f64() * 1e6 / reps as f64;
    let t = Instant::now();
    for _ in 0..reps {
        let routes = Routes::compute(topology);
        for src in routes.reachable() {
            std::hint::black_box(routes.broadcast_children(src));
        }
    }
    let all = t.elapsed().as_secs_f64() * 1e6 / reps as f64;
    (compute, all)
}

fn run(n: usize, seed: u64, signed: bool) -> Row {
    let cfg = SimConfig {
        seed,
        signed,
        ..SimConfig::default()
    };
    // One extra peer stays alone until the join.
    let mut sim = Sim::new(cfg, n + 1);
    let wall = Instant::now();
    sim.connect_sparse_first(n, DEGREE_K);
    let links = sim.links();
    let cold_rounds = sim
        .run_until_converged(MAX_ROUNDS)
        .expect("cold start converges");
    let cold_bytes_per_peer = sim.traffic.bytes / n as u64;
    let cold_wall_ms = wall.elapsed().as_millis();
    sim.settle(MAX_ROUNDS).expect("settles");

    let (a, b) = sim.removable_link().expect("a redundant link");
    let before = sim.traffic.clone();
    sim.disconnect(a, b);
    let down_rounds = sim.run_until_converged(MAX_ROUNDS).expect("converges");
    sim.settle(MAX_ROUNDS).expect("settles");
    let down = sim.traffic.since(&before);
    let full_state = sim.full_state_bytes(a) * (n as u64 - 1);

    let before = sim.traffic.clone();
    sim.connect(a, b);
    let up_rounds = sim.run_until_converged(MAX_ROUNDS).expect("converges");
    sim.settle(MAX_ROUNDS).expect("settles");
    let up = sim.traffic.since(&before);

    let before = sim.traffic.clone();
    let rounds_before = sim.round;
    for _ in 0..50 {
        sim.step();
    }
    let idle = sim.traffic.since(&before);
    let seconds = (sim.round - rounds_before) as f64 * sim.cfg.round.as_secs_f64();
    let idle_per_peer_per_s = idle.bytes as f64 / n as f64 / seconds;
    let view_bytes = sim.mean_view_bytes();
    let heap_bytes = (0..n).map(|i| heap_estimate(&sim, i)).sum::<usize>() / n;
    let (routes_us, trees_us) = time_routes(&sim, 0);

    let before = sim.traffic.clone();
    let newcomer = n;
    for p in sim.random_peers(n, DEGREE_K) {
        sim.connect(newcomer, p);
    }
    let join_rounds = sim.run_until_converged(MAX_ROUNDS).expect("converges");
    sim.settle(MAX_ROUNDS).expect("settles");
    let join = sim.traffic.since(&before);

    Row {
        n,
        cold_rounds,
        cold_bytes_per_peer,
        cold_wall_ms,
        down_rounds,
        down,
        up_rounds,
        up,
        join_rounds,
        join,
        full_state,
        idle_per_peer_per_s,
        view_bytes,
        heap_bytes,
        routes_us,
        trees_us,
        links,
        signed,
    }
}

/// The row's label: N, and whether the peers signed their records.
fn label(r: &Row) -> String {
    if r.signed {
        format!("{} signed", r.n)
    } else {
        r.n.to_string()
    }
}

fn kib(bytes: u64) -> String {
    if bytes < 10 * 1024 {
        format!("{bytes} B")
    } else if bytes < 10 * 1024 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `signed`: each size runs twice, without and with record signatures.
    let signed = args.iter().any(|a| a == "signed");
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() {
        vec![100, 300, 1000]
    } else {
        sizes
    };
    let started = Instant::now();
    let modes: &[bool] = if signed { &[false, true] } else { &[false] };
    let rows: Vec<Row> = sizes
        .iter()
        .flat_map(|&n| modes.iter().map(move |&s| (n, s)))
        .map(|(n, s)| {
            let r = run(n, 1, s);
            eprintln!(
                "N = {n}: simulated in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            r
        })
        .collect();

    println!("\nConvergence (rounds of 100 ms; anti-entropy every 1 s)\n");
    println!("| N | links | cold start | link down | link up | join |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            label(r),
            r.links,
            r.cold_rounds,
            r.down_rounds,
            r.up_rounds,
            r.join_rounds
        );
    }

    println!("\nBytes for one topology change (all peers, until settled)\n");
    println!(
        "| N | link down: total | per peer | of which anti-entropy | full-state broadcast | ratio | link up: total | per peer | join: total | per peer |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let n = r.n as u64;
        println!(
            "| {} | {} | {} | {} | {} | {:.0}x | {} | {} | {} | {} |",
            label(r),
            kib(r.down.bytes),
            kib(r.down.bytes / n),
            kib(r.down.anti_entropy_bytes()),
            kib(r.full_state),
            r.full_state as f64 / r.down.bytes.max(1) as f64,
            kib(r.up.bytes),
            kib(r.up.bytes / n),
            kib(r.join.bytes),
            kib(r.join.bytes / (n + 1)),
        );
    }

    println!("\nCold start, steady state, memory and route computation (per peer)\n");
    println!(
        "| N | cold start bytes | idle bytes per s | view (JSON) | view (heap, approx.) | routes | routes + all trees | cold start wall time (all peers) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} B | {} | {} | {:.0} µs | {:.0} µs | {} ms |",
            label(r),
            kib(r.cold_bytes_per_peer),
            r.idle_per_peer_per_s,
            kib(r.view_bytes as u64),
            kib(r.heap_bytes as u64),
            r.routes_us,
            r.trees_us,
            r.cold_wall_ms
        );
    }

    println!("\nMessages by kind for one link down\n");
    for r in &rows {
        let kinds: Vec<String> = r
            .down
            .by_kind
            .iter()
            .map(|(k, (m, b))| format!("{k} {m} ({})", kib(*b)))
            .collect();
        println!("- N = {}: {}", label(r), kinds.join(", "));
    }
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
}
