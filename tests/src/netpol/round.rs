//! Probing rounds: [`Netpol::observe`] fills every table from real traffic at once, and
//! [`Netpol::expect_eventually`] probes until the tables are the expected ones.

use super::probe::{self, Outcome, Probe};
use super::{Expectation, Kind, Netpol, SETTLE};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// One probing round: the tables, the wrong answers, the source addresses the servers saw
/// (TCP/80, by (from, to)), how long it took.
#[derive(Debug, Clone)]
pub struct Round {
    /// What got through.
    pub tables: Expectation,
    /// Answers from the wrong endpoint, or connections accepted and then silent.
    pub anomalies: Vec<String>,
    /// The source address each TCP/80 server saw.
    pub seen: BTreeMap<(String, String), Ipv4Addr>,
    /// The round's duration.
    pub took: Duration,
}

impl Netpol {
    /// One probing round over every pair and kind, all at once.
    pub fn observe(&self) -> Round {
        let start = Instant::now();
        let tcp80 = Kind::tcp(80);
        let probe_to = |kind: Kind, ip: Ipv4Addr, token: String| Probe { kind, ip, token };
        // One (namespace, probes, cells) per source; a cell says which table a probe fills.
        let mut sources: Vec<(String, Vec<Probe>, Vec<Cell>)> = Vec::new();
        for from in &self.pods {
            let (mut probes, mut cells) = (Vec::new(), Vec::new());
            for k in &self.kinds {
                for to in &self.pods {
                    probes.push(probe_to(*k, to.ip(), to.id()));
                    cells.push(Cell::new(Table::Pods(*k), from.id(), to.id()));
                }
            }
            for o in &self.outside {
                probes.push(probe_to(tcp80, o.ip, o.name.clone()));
                cells.push(Cell::new(Table::Outside, from.id(), o.name.clone()));
            }
            sources.push((from.cni.ns.clone(), probes, cells));
        }
        for h in &self.hosts {
            let probes = self.pods.iter().map(|to| probe_to(tcp80, to.ip(), to.id()));
            let cells = self
                .pods
                .iter()
                .map(|to| Cell::new(Table::Hosts, h.name.clone(), to.id()));
            sources.push((h.ns.clone(), probes.collect(), cells.collect()));
        }
        let (jobs, cells): (Vec<_>, Vec<_>) =
            sources.into_iter().map(|(ns, p, c)| ((ns, p), c)).unzip();
        let outcomes = probe::probe_all(jobs, probe::TIMEOUT);
        let mut tables = self.all_allowed();
        let mut anomalies = Vec::new();
        let mut seen = BTreeMap::new();
        for (cell, out) in cells
            .into_iter()
            .flatten()
            .zip(outcomes.into_iter().flatten())
        {
            let (kind, table) = match cell.table {
                Table::Pods(k) => (k, tables.pods.get_mut(&k).expect("a probed kind")),
                Table::Hosts => (tcp80, &mut tables.hosts),
                Table::Outside => (tcp80, &mut tables.outside),
            };
            table.set(&cell.from, &cell.to, out.reached());
            match out {
                Outcome::Reached(ip) if kind == tcp80 => {
                    seen.insert((cell.from, cell.to), ip);
                }
                Outcome::Wrong(why) => {
                    anomalies.push(format!("{kind} {} -> {}: {why}", cell.from, cell.to))
                }
                _ => {}
            }
        }
        Round {
            tables,
            anomalies,
            seen,
            took: start.elapsed(),
        }
    }

    /// Probes until the observed tables equal `expected` (and no probe got a wrong answer), for
    /// at most `deadline`. When `expected` is what was already observed before the last change,
    /// only a round started [`SETTLE`] after that change counts (else a router that ignored the
    /// change would pass). The error holds both tables and the differing cells.
    pub fn expect_eventually(
        &mut self,
        expected: &Expectation,
        deadline: Duration,
    ) -> Result<Round, String> {
        let start = Instant::now();
        let not_before = if self.settled.as_ref() == Some(expected) {
            self.changed + SETTLE
        } else {
            start
        };
        let mut rounds = 0;
        loop {
            let began = Instant::now();
            let r = self.observe();
            rounds += 1;
            let diff = expected.diff(&r.tables);
            if diff.is_empty() && r.anomalies.is_empty() && began >= not_before {
                eprint!("{}", r.tables.render_denials());
                self.settled = Some(expected.clone());
                return Ok(r);
            }
            if start.elapsed() >= deadline {
                self.settled = None;
                let mut msg = format!(
                    "after {rounds} rounds in {:.1} s:\n--- expected ---\n{}--- observed ---\n{}--- {} differing cells ---\n",
                    start.elapsed().as_secs_f64(),
                    expected.render(),
                    r.tables.render(),
                    diff.len()
                );
                for d in diff.iter().chain(&r.anomalies) {
                    msg.push_str(d);
                    msg.push('\n');
                }
                return Err(msg);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Which table of an [`Expectation`] a probe fills.
#[derive(Debug, Clone, Copy)]
enum Table {
    Pods(Kind),
    Hosts,
    Outside,
}

/// Where a probe's outcome goes.
#[derive(Debug)]
struct Cell {
    table: Table,
    from: String,
    to: String,
}

impl Cell {
    fn new(table: Table, from: String, to: String) -> Cell {
        Cell { table, from, to }
    }
}
