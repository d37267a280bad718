//! `weft trace --live`, the daemon's part: arming this host and its neighbours for a probe
//! (`POST /v1/trace` with `live`), the neighbours' arms and reports on the control channel
//! ([`Message::TraceArm`], [`Message::TraceReport`], only on connections of
//! [`gossip::proto::TRACE_VERSION`] or later), the kernel's view of the probe (a table
//! `inet weft_trace` that logs the probe's packets to [`LOG_GROUP`] while a probe is armed, and
//! a thread reading that group), and the collection once the prober says it sent
//! (`POST /v1/trace/report`). The pure parts are in [`crate::trace::live`] and
//! [`crate::trace::watch`].

use super::*;
use crate::trace::live::{self as pure, Answer, HostAnswer};
use crate::trace::watch::Watch;
use gossip::proto::{Message, TRACE_VERSION};
use gossip::trace::{Arm, Report, Signature, CUT_NOTE, ICMP, MAX_WINDOW_MS};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use weft_api::trace::{LiveReportRequest, LiveTrace, TraceAnswer, TraceRequest};

/// The netfilter log group the trace table logs to (the policy's is 8).
pub const LOG_GROUP: u16 = 9;
/// The trace table (family `inet`).
pub const TABLE: &str = "weft_trace";
/// How long the hosts watch after arming.
pub const WINDOW: Duration = Duration::from_millis(2000);
/// How long after the window the answers of the neighbours are awaited.
const GRACE: Duration = Duration::from_millis(1500);
/// How long the neighbours' confirmations that they watch are awaited before the probe goes.
const ARM_WAIT: Duration = Duration::from_millis(1500);
/// How long after the prober's report this host's own events are taken, at least: the kernel
/// hands each logged packet over at once, but the thread reading the log may not have run yet
/// (with no neighbour to wait for, the report comes a few hundred microseconds after the reply).
const KERNEL_SETTLE: Duration = Duration::from_millis(500);
/// Our own live traces awaiting their report, at most.
const MAX_PENDING: usize = 4;

/// One of our live traces, armed, awaiting the prober's report.
#[derive(Debug)]
pub(crate) struct Pending {
    answer: TraceAnswer,
    armed_at: Instant,
    /// Neighbours armed.
    asked: Vec<Asked>,
    /// Hosts not asked, and why.
    not_asked: Vec<(String, String)>,
}

/// A neighbour asked to watch.
#[derive(Debug)]
struct Asked {
    name: PeerName,
    nickname: String,
    clock_offset_ms: Option<i64>,
    /// It confirmed it watches ([`Message::TraceArmed`]).
    armed: bool,
    /// Its report, once it came.
    report: Option<Report>,
}

/// The state of live traces in the daemon.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pending: Mutex<HashMap<u64, Pending>>,
    /// The kernel log reader started (or failed to, with the reason).
    reader: std::sync::OnceLock<Result<(), String>>,
}

impl Daemon {
    /// `POST /v1/trace` with `live`: the static trace, then the probe's mark chosen and this
    /// host and its neighbours armed for it. The answer's `live` says what to send from where.
    pub(super) fn trace_live(&self, req: &TraceRequest) -> Result<TraceAnswer, crate::Error> {
        let mut answer = self.trace(req)?;
        let bad = |s: &str| crate::Error::BadRequest(format!("--live: {s}"));
        if !answer.from.local {
            return Err(bad(
                "the source must be a pod on this host (run it on the source's host)",
            ));
        }
        let src: std::net::IpAddr = answer
            .from
            .addr
            .as_deref()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| bad("the source's address is not known"))?;
        let dst: std::net::IpAddr = answer
            .to
            .addr
            .as_deref()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| bad("the destination's address is not known"))?;
        let netns = self
            .ipam
            .as_ref()
            .map(|i| i.reservations())
            .unwrap_or_default()
            .into_iter()
            .find(|r| r.addresses().contains(&src))
            .map(|r| r.netns)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad("the source's reservation has no network namespace"))?;
        let proto_name = answer.flow.split('/').next().unwrap_or("icmp").to_string();
        let proto = gossip::trace::protocol(&proto_name)
            .ok_or_else(|| bad("the probe is ICMP, TCP or UDP"))?;
        let port = match (proto, req.port) {
            (ICMP, _) => None,
            (_, Some(p)) => Some(p),
            (_, None) => return Err(bad("a TCP or UDP probe needs --port")),
        };
        let key = match proto {
            ICMP => rand::random::<u16>(),
            _ => rand::random_range(33_000..60_000),
        };
        let signature = Signature {
            src,
            dst,
            proto,
            key,
            port,
        };
        let id: u64 = rand::random::<u64>() >> 11; // exact in JSON numbers
        if lock(&self.live.pending).len() >= MAX_PENDING {
            return Err(bad(
                "too many live traces under way; try again in a few seconds",
            ));
        }
        let now = Instant::now();
        // Our own window also covers the wait for the neighbours' confirmations.
        self.shared
            .watch
            .arm(id, signature, WINDOW + ARM_WAIT, now)
            .map_err(|e| bad(&e.to_string()))?;
        let kernel = self.start_trace_log().and_then(|()| {
            apply_table(&self.shared.watch).map_err(|e| format!("the trace table: {e}"))
        });
        let mut notes = Vec::new();
        if let Err(e) = kernel {
            notes.push(format!("this host's kernel hops are not seen: {e}"));
        }
        // Arm every neighbour that speaks the version.
        let arm = Arm {
            id,
            signature,
            window_ms: WINDOW.as_millis() as u32,
        };
        let neighbours: Vec<_> = lock(&self.neighbors)
            .values()
            .map(|n| (n.info.clone(), n.info.version))
            .collect();
        let (ok, older) = pure::split_by_version(neighbours, TRACE_VERSION);
        let mut not_asked: Vec<(String, String)> = older
            .into_iter()
            .map(|(i, why)| (i.nickname, why))
            .collect();
        let conns: Vec<u64> = ok.iter().map(|i| i.conn).collect();
        let asked: Vec<Asked> = ok
            .into_iter()
            .map(|i| Asked {
                name: i.name,
                nickname: i.nickname,
                clock_offset_ms: i.clock_offset_ms,
                armed: false,
                report: None,
            })
            .collect();
        for (name, nick) in self.routes_view().peers {
            if name != self.name
                && !asked.iter().any(|a| a.name == name)
                && !not_asked.iter().any(|n| n.0 == nick)
            {
                not_asked.push((
                    nick,
                    "no direct connection (reached through a relay)".into(),
                ));
            }
        }
        answer.live = Some(LiveTrace {
            id,
            netns,
            src: src.to_string(),
            dst: dst.to_string(),
            proto: proto_name,
            key,
            port,
            window_ms: arm.window_ms,
            hops: Vec::new(),
            hosts: Vec::new(),
            rtt_us: None,
            observed: String::new(),
            matched: None,
            notes,
        });
        lock(&self.live.pending).insert(
            id,
            Pending {
                answer: answer.clone(),
                armed_at: now,
                asked,
                not_asked,
            },
        );
        for conn in conns {
            self.gossip.send_on(conn, Message::TraceArm(arm.clone()));
        }
        // The probe goes once every neighbour watches (or said it will not), or after ARM_WAIT.
        // This runs on a blocking thread of the API server.
        let waited = Instant::now();
        loop {
            let ready = lock(&self.live.pending)
                .get(&id)
                .is_none_or(|t| t.asked.iter().all(|a| a.armed || a.report.is_some()));
            if ready || waited.elapsed() >= ARM_WAIT {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(answer)
    }

    /// `POST /v1/trace/report`: waits for the neighbours' reports (or the window and its grace),
    /// then merges them with this host's and compares the path with the static trace's.
    pub(super) async fn trace_report(
        &self,
        req: &LiveReportRequest,
    ) -> Result<TraceAnswer, crate::Error> {
        let unknown = || crate::Error::BadRequest(format!("no live trace {} under way", req.id));
        let settled = Instant::now() + KERNEL_SETTLE;
        let deadline = {
            let p = lock(&self.live.pending);
            p.get(&req.id).ok_or_else(unknown)?.armed_at + ARM_WAIT + WINDOW + GRACE
        };
        loop {
            let done = {
                let p = lock(&self.live.pending);
                let t = p.get(&req.id).ok_or_else(unknown)?;
                t.asked.iter().all(|a| a.report.is_some())
            };
            let now = Instant::now();
            if (done && now >= settled) || now >= deadline.max(settled) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t = lock(&self.live.pending)
            .remove(&req.id)
            .ok_or_else(unknown)?;
        let local = self.shared.watch.take(req.id);
        let watch = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || apply_table(&watch.watch)).await;
        let mut answers = vec![HostAnswer {
            host: self.cfg.nickname.clone(),
            clock_offset_ms: None,
            answer: Answer::Report(Report {
                id: req.id,
                note: local.as_ref().filter(|l| l.1).map(|_| CUT_NOTE.into()),
                events: local.map(|l| l.0).unwrap_or_default(),
            }),
        }];
        for a in t.asked {
            let answer = match (a.report, a.armed) {
                (Some(r), _) => Answer::Report(r),
                (None, true) => Answer::Silent,
                (None, false) => Answer::NotAsked("it did not confirm the arm in time".into()),
            };
            answers.push(HostAnswer {
                host: a.nickname,
                clock_offset_ms: a.clock_offset_ms,
                answer,
            });
        }
        for (nick, why) in t.not_asked {
            answers.push(HostAnswer {
                host: nick,
                clock_offset_ms: None,
                answer: Answer::NotAsked(why),
            });
        }
        let mut names: BTreeMap<String, String> = self
            .routes_view()
            .known
            .into_iter()
            .map(|(n, nick)| (n.to_string(), nick))
            .collect();
        names.insert(self.name.to_string(), self.cfg.nickname.clone());
        let (hops, hosts) = pure::merge(req.sent_at_us, &answers, &names);
        let mut answer = t.answer;
        let predicted = pure::predicted(&answer.hops);
        if let Some(l) = answer.live.as_mut() {
            l.observed = pure::observed(&hops).to_string();
            l.matched = Some(l.observed == predicted);
            l.hops = hops;
            l.hosts = hosts;
            l.rtt_us = req.rtt_us;
            if let Some(n) = &req.note {
                l.notes.push(format!("prober: {n}"));
            }
            if l.hosts.len() > 1 {
                l.notes.push(
                    "times on other hosts are their wall clocks against the prober's: only as good as the clocks (offsets shown)".into(),
                );
            }
            if l.matched == Some(false) {
                l.notes.push(format!(
                    "the static trace predicts {predicted}; the probe was seen on {}",
                    l.observed
                ));
            }
        }
        Ok(answer)
    }

    /// Forgets live traces whose prober never reported (called every liveness tick): their
    /// watch and kernel rules go once the window and its grace are long past.
    pub(super) fn expire_live(&self) {
        let stale = WINDOW + ARM_WAIT + GRACE + Duration::from_secs(5);
        lock(&self.live.pending).retain(|_, t| t.armed_at.elapsed() < stale);
        if self.shared.watch.on() && self.shared.watch.expire(Instant::now(), stale) {
            let shared = self.shared.clone();
            tokio::task::spawn_blocking(move || apply_table(&shared.watch));
        }
    }

    /// A neighbour's [`Message::TraceArm`] or [`Message::TraceReport`], which came on `conn`.
    pub(super) fn on_trace_message(&self, from: PeerName, msg: Message, conn: u64) {
        match msg {
            Message::TraceArm(arm) => self.on_trace_arm(arm, conn),
            Message::TraceArmed { id } => {
                let mut p = lock(&self.live.pending);
                if let Some(a) = p
                    .get_mut(&id)
                    .and_then(|t| t.asked.iter_mut().find(|a| a.name == from))
                {
                    a.armed = true;
                }
            }
            Message::TraceReport(report) => {
                let mut p = lock(&self.live.pending);
                let slot = p
                    .get_mut(&report.id)
                    .and_then(|t| t.asked.iter_mut().find(|a| a.name == from));
                match slot {
                    Some(a) if a.report.is_none() => a.report = Some(report.bounded()),
                    _ => {
                        tracing::debug!(peer = %from, id = report.id, "ignoring a trace report nobody awaits")
                    }
                }
            }
            _ => {}
        }
    }

    /// Arms this host for a neighbour's probe and answers on `conn` once the window closes
    /// (at once, with the reason, when refused).
    fn on_trace_arm(&self, arm: Arm, conn: u64) {
        let refuse = |why: String| {
            self.gossip.send_on(
                conn,
                Message::TraceReport(Report {
                    id: arm.id,
                    events: Vec::new(),
                    note: Some(format!("refused: {why}")),
                }),
            );
        };
        if let Err(e) = arm.signature.check() {
            return refuse(e.into());
        }
        let window = Duration::from_millis(u64::from(arm.window_ms.min(MAX_WINDOW_MS)));
        if let Err(e) = self
            .shared
            .watch
            .arm(arm.id, arm.signature, window, Instant::now())
        {
            return refuse(e.to_string());
        }
        let reader = self.start_trace_log();
        let (shared, gossip, id) = (self.shared.clone(), self.gossip.clone(), arm.id);
        tokio::spawn(async move {
            let w = shared.clone();
            let table = tokio::task::spawn_blocking(move || apply_table(&w.watch))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            let note = reader
                .and(table)
                .err()
                .map(|e| format!("kernel hops not seen: {e}"));
            gossip.send_on(conn, Message::TraceArmed { id });
            tokio::time::sleep(window).await;
            let (events, cut) = shared.watch.take(id).unwrap_or_default();
            let w = shared.clone();
            let _ = tokio::task::spawn_blocking(move || apply_table(&w.watch)).await;
            let note = note.or_else(|| cut.then(|| CUT_NOTE.to_string()));
            gossip.send_on(
                conn,
                Message::TraceReport(Report { id, events, note }.bounded()),
            );
        });
    }

    /// Starts the thread that reads the trace table's log group, once.
    fn start_trace_log(&self) -> Result<(), String> {
        self.live
            .reader
            .get_or_init(|| {
                let l = weft_netlink::nflog::NflogListener::bind(LOG_GROUP)
                    .map_err(|e| e.to_string())?;
                let shared = self.shared.clone();
                let names = (
                    self.cfg.bridge.clone(),
                    self.cfg.tap.clone(),
                    super::config::fastpath_device(&self.cfg.bridge),
                );
                std::thread::Builder::new()
                    .name("weft-trace-log".into())
                    .spawn(move || read_log(l, &shared, &names))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .clone()
    }
}

/// Reads the trace table's log and records each packet against the armed traces.
fn read_log(
    mut l: weft_netlink::nflog::NflogListener,
    shared: &Shared,
    (bridge, tap, vxlan): &(String, String, String),
) {
    let name = |i: u32| {
        (i != 0)
            .then(|| nix::net::if_::if_indextoname(i).ok())
            .flatten()
            .map(|c| c.to_string_lossy().into_owned())
    };
    loop {
        let batch = match l.recv() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("trace: reading the kernel log stopped: {e}");
                return;
            }
        };
        for p in batch {
            let into = name(if p.phys_in != 0 { p.phys_in } else { p.dev_in });
            let out = name(if p.phys_out != 0 {
                p.phys_out
            } else {
                p.dev_out
            });
            shared.watch.observe_ip(&p.payload, "kernel", || {
                pure::kernel_detail(into.as_deref(), out.as_deref(), |n| {
                    pure::device_class(n, bridge, tap, vxlan)
                })
            });
        }
    }
}

/// Makes the kernel's trace table match the armed traces: one rule per direction of each,
/// on the forward hook (bridged pod traffic passes it with br_netfilter), or no table when none
/// is armed. `queue-threshold 1`: the kernel hands each logged packet over at once (by default
/// it batches for up to a second, which would be the hop's time).
fn apply_table(watch: &Watch) -> anyhow::Result<()> {
    let sigs = watch.signatures();
    let mut script = format!("table inet {TABLE}\ndelete table inet {TABLE}\n");
    if !sigs.is_empty() {
        script.push_str(&format!(
            "table inet {TABLE} {{\n  chain forward {{\n    type filter hook forward priority -300; policy accept;\n"
        ));
        for s in &sigs {
            for reverse in [false, true] {
                script.push_str(&format!(
                    "    {} log group {LOG_GROUP} prefix \"weft-trace\" queue-threshold 1\n",
                    s.nft_match(reverse)
                ));
            }
        }
        script.push_str("  }\n}\n");
    }
    crate::ipam::nft(&script)
}
