//! A cluster of real `weft router` processes on a [`Lab`]: what the integration tests and
//! `weft demo` build on. Starts routers in host namespaces, asks them for status through their API
//! sockets (path-bound Unix sockets work from any network namespace), attaches pods with the MTU
//! the router computed, and moves data between pods.
//!
//! [`Cni`] drives the CNI plugin the way a container runtime does: upstream `cnitool` (or the
//! `weft-cni` binary itself, with the `CNI_*` environment and a config on stdin) run inside a host
//! namespace, with a `CNI_PATH` holding `weft-cni` and the standard `portmap`, `bandwidth` and
//! `tuning` plugins, and one conflist per host pointing at that host's router.

use crate::api;
use crate::ipam_api::IpamReport;
use crate::lab::{in_netns, poll_until, Host, Lab, Pod, PodSpec, ProcId, Signal};
use crate::status::Report;
use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Finds the `weft` binary: `$WEFT_BIN`, else next to the running executable (or one directory
/// up, for test binaries in `target/<profile>/deps/`).
pub fn weft_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("WEFT_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    if exe.file_name().is_some_and(|n| n == "weft") {
        return Ok(exe);
    }
    let dir = exe.parent().context("executable has no directory")?;
    [dir.join("weft"), dir.join("../weft")]
        .into_iter()
        .find(|c| c.is_file())
        .with_context(|| {
            format!(
                "cannot find the weft binary near {}; build it (cargo build --release -p weft) or set WEFT_BIN",
                exe.display()
            )
        })
}

#[derive(Debug)]
struct RouterProc {
    id: ProcId,
    args: Vec<String>,
    state_dir: PathBuf,
}

/// A lab plus the routers running in its hosts.
#[derive(Debug)]
pub struct Cluster {
    /// The namespaces.
    pub lab: Lab,
    weft: PathBuf,
    routers: HashMap<String, RouterProc>,
}

impl Cluster {
    /// A new, empty cluster whose names start with `tag`.
    pub fn new(tag: &str, weft: PathBuf) -> Result<Cluster> {
        Ok(Cluster {
            lab: Lab::new(tag)?,
            weft,
            routers: HashMap::new(),
        })
    }

    /// Adds a host namespace on the underlay.
    pub fn add_host(&mut self, name: &str) -> Result<Host> {
        self.lab.add_host(name)
    }

    /// The state directory of `host`'s router.
    pub fn state_dir(&self, host: &Host) -> PathBuf {
        self.lab.dir().join(format!("state-{}", host.name))
    }

    /// Starts `weft router` in `host`, seeded with `peers`, plus `extra` arguments, and waits
    /// until its API answers.
    pub fn start_router(&mut self, host: &Host, peers: &[&Host], extra: &[&str]) -> Result<()> {
        let args = self.router_args(host, peers, extra);
        self.spawn_router(host, args, self.state_dir(host))
    }

    /// The command line of `host`'s router: name, listen address, state directory, `peers` as
    /// seeds, then `extra`.
    fn router_args(&self, host: &Host, peers: &[&Host], extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "router".into(),
            "--name".into(),
            host.name.clone(),
            "--listen".into(),
            host.underlay_ip.to_string(),
            "--state-dir".into(),
            self.state_dir(host).display().to_string(),
        ];
        for p in peers {
            args.push("--peer".into());
            args.push(p.underlay_ip.to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// The process id of `host`'s router, while it runs.
    pub fn router_pid(&self, host: &Host) -> Option<u32> {
        self.lab.pid(self.routers.get(&host.name)?.id)
    }

    fn spawn_router(&mut self, host: &Host, args: Vec<String>, state_dir: PathBuf) -> Result<()> {
        self.spawn_router_nowait(host, args, state_dir)?;
        self.wait_api(host)
    }

    fn spawn_router_nowait(
        &mut self,
        host: &Host,
        args: Vec<String>,
        state_dir: PathBuf,
    ) -> Result<()> {
        let log = format!("router-{}", host.name);
        let id = self.lab.spawn(&host.ns, &self.weft, &args, &log)?;
        self.routers.insert(
            host.name.clone(),
            RouterProc {
                id,
                args,
                state_dir,
            },
        );
        Ok(())
    }

    /// Waits until `host`'s router answers on its API socket.
    fn wait_api(&self, host: &Host) -> Result<()> {
        let state_dir = self.state_dir(host);
        let up = poll_until(Duration::from_secs(15), Duration::from_millis(50), || {
            api::get::<Report>(&state_dir, "/v1/status").ok()
        });
        if up.is_none() {
            bail!(
                "router on {} did not come up; its log:\n{}",
                host.name,
                self.router_log(host)
            );
        }
        Ok(())
    }

    /// Starts the routers of `hosts` at the same moment: every host is seeded with all the others
    /// and gets the same `extra` arguments; all processes are spawned before waiting for any API.
    pub fn start_routers_together(&mut self, hosts: &[Host], extra: &[&str]) -> Result<()> {
        for h in hosts {
            let peers: Vec<&Host> = hosts.iter().filter(|p| p.name != h.name).collect();
            let args = self.router_args(h, &peers, extra);
            self.spawn_router_nowait(h, args, self.state_dir(h))?;
        }
        for h in hosts {
            self.wait_api(h)?;
        }
        Ok(())
    }

    /// Sends `signal` to `host`'s router and waits up to `timeout` for it to exit (so that it can
    /// be started again with [`Cluster::restart_router`]).
    pub fn stop_router(&mut self, host: &Host, signal: Signal, timeout: Duration) -> Result<()> {
        let id = self
            .routers
            .get(&host.name)
            .with_context(|| format!("no router on {}", host.name))?
            .id;
        if self.lab.pid(id).is_none() {
            return Ok(());
        }
        self.lab.kill(id, signal)?;
        if self.lab.wait_exit(id, timeout)?.is_none() {
            bail!(
                "the router on {} did not exit within {timeout:?} of {signal}; its log:\n{}",
                host.name,
                self.router_log(host)
            );
        }
        Ok(())
    }

    /// `host`'s pod-address report (`GET /v1/ipam`): readiness and every reservation.
    pub fn ipam(&self, host: &Host) -> Result<IpamReport> {
        api::get(&self.state_dir(host), "/v1/ipam")
    }

    /// Sends `signal` to `host`'s router (SIGKILL also reaps it).
    pub fn kill_router(&mut self, host: &Host, signal: Signal) -> Result<()> {
        let r = self
            .routers
            .get(&host.name)
            .with_context(|| format!("no router on {}", host.name))?;
        self.lab.kill(r.id, signal)
    }

    /// Starts `host`'s router again with the arguments it had.
    pub fn restart_router(&mut self, host: &Host) -> Result<()> {
        let r = self
            .routers
            .remove(&host.name)
            .with_context(|| format!("no router on {}", host.name))?;
        self.spawn_router(host, r.args, r.state_dir)
    }

    /// The router's log so far.
    pub fn router_log(&self, host: &Host) -> String {
        self.lab.log(&format!("router-{}", host.name))
    }

    /// `host`'s router status.
    pub fn status(&self, host: &Host) -> Result<Report> {
        api::get(&self.state_dir(host), "/v1/status")
    }

    /// Waits until `host`'s router has exactly `n` peers, all established (data path
    /// confirmed).
    pub fn wait_peers(&self, host: &Host, n: usize, timeout: Duration) -> Result<Report> {
        let mut last = None;
        let r = poll_until(timeout, Duration::from_millis(50), || {
            let r = self.status(host).ok()?;
            let established = r.peers.iter().filter(|p| p.state == "established").count();
            last = Some((r.peers.len(), established));
            (r.peers.len() == n && established == n).then_some(r)
        });
        r.with_context(|| {
            format!(
                "{} has {:?} (peers, established), not {n}, after {timeout:?}; its log:\n{}",
                host.name,
                last,
                self.router_log(host)
            )
        })
    }

    /// Adds `n` hosts named h1..hn, starts a router in each seeded with every earlier host
    /// (`args[i]` are the extra arguments of host i, none when missing), and waits until every
    /// router has all the others as established peers.
    pub fn full_mesh(&mut self, n: u8, args: &[&[&str]]) -> Result<Vec<Host>> {
        let hosts: Vec<Host> = (1..=n)
            .map(|i| self.add_host(&format!("h{i}")))
            .collect::<Result<_>>()?;
        for (i, h) in hosts.iter().enumerate() {
            let seeds: Vec<&Host> = hosts[..i].iter().collect();
            self.start_router(h, &seeds, args.get(i).copied().unwrap_or(&[]))?;
        }
        for h in &hosts {
            self.wait_peers(h, hosts.len() - 1, Duration::from_secs(15))?;
        }
        Ok(hosts)
    }

    /// Adds `n` hosts seeded as a chain (each router knows only the previous host) with the same
    /// extra arguments, without waiting for them to connect.
    pub fn chain(&mut self, n: u8, args: &[&str]) -> Result<Vec<Host>> {
        let hosts: Vec<Host> = (1..=n)
            .map(|i| self.add_host(&format!("h{i}")))
            .collect::<Result<_>>()?;
        for (i, h) in hosts.iter().enumerate() {
            let seed: Vec<&Host> = hosts[..i].iter().rev().take(1).collect();
            self.start_router(h, &seed, args)?;
        }
        Ok(hosts)
    }

    /// Waits until `host` reports the peer with nickname `peer` on `path` (`direct`, `fast
    /// path`, `via h2`, ...); returns the report and how long it took. The error names the last
    /// state seen and carries the router's log.
    pub fn wait_path(
        &self,
        host: &Host,
        peer: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<(Report, Duration)> {
        let start = Instant::now();
        let mut last = None;
        let r = poll_until(timeout, Duration::from_millis(50), || {
            let r = self.status(host).ok()?;
            let p = r.peers.iter().find(|p| p.nickname == peer).cloned();
            last = p
                .as_ref()
                .map(|p| format!("{} / {} ({})", p.state, p.path, p.fastpath));
            (p?.path == path).then_some(r)
        });
        match r {
            Some(r) => Ok((r, start.elapsed())),
            None => bail!(
                "{} never saw {peer} with path {path:?} within {timeout:?} (last: {last:?}); log:\n{}",
                host.name,
                self.router_log(host)
            ),
        }
    }

    /// Adds a pod with `ip`/12 to `host`, with the MTU its router computed.
    pub fn add_pod(&mut self, host: &Host, name: &str, ip: Ipv4Addr) -> Result<Pod> {
        let mtu = self.status(host)?.pod_mtu;
        self.lab.add_pod(host, name, PodSpec::new(ip, 12, mtu))
    }
}

/// `GET path` over HTTP/1.0 to `addr` from inside namespace `ns`: the whole answer, head and
/// body (the metrics page, say).
pub fn http_get(ns: &str, addr: &str, path: &str) -> Result<String> {
    let (addr, request) = (
        addr.to_string(),
        format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n"),
    );
    in_netns(ns, move || -> Result<String> {
        let mut s = TcpStream::connect(&addr).with_context(|| format!("connecting to {addr}"))?;
        s.write_all(request.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })?
}

/// Result of one ping run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PingStats {
    /// Replies received.
    pub received: u32,
    /// Requests sent.
    pub sent: u32,
    /// Round-trip times in milliseconds.
    pub min_ms: f64,
    /// Average round trip.
    pub avg_ms: f64,
    /// Longest round trip.
    pub max_ms: f64,
}

/// Pings `to` from namespace `ns` `count` times, 0.2 s apart.
pub fn ping(lab: &Lab, ns: &str, to: Ipv4Addr, count: u32) -> Result<PingStats> {
    let out = lab.exec(
        ns,
        &[
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            &to.to_string(),
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_ping(&text).with_context(|| format!("unexpected ping output: {text}"))
}

fn parse_ping(text: &str) -> Option<PingStats> {
    let summary = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = summary.split(',').map(|p| {
        p.split_whitespace()
            .next()
            .and_then(|n| n.parse::<u32>().ok())
    });
    let sent = nums.next()??;
    let received = nums.next()??;
    let (mut min_ms, mut avg_ms, mut max_ms) = (f64::NAN, f64::NAN, f64::NAN);
    if let Some(rtt) = text
        .lines()
        .find(|l| l.starts_with("rtt") || l.starts_with("round-trip"))
    {
        let vals: Vec<f64> = rtt
            .split('=')
            .nth(1)?
            .trim()
            .split(['/', ' '])
            .filter_map(|v| v.parse().ok())
            .collect();
        if vals.len() >= 3 {
            (min_ms, avg_ms, max_ms) = (vals[0], vals[1], vals[2]);
        }
    }
    Some(PingStats {
        received,
        sent,
        min_ms,
        avg_ms,
        max_ms,
    })
}

/// Pings `to` from `from` once every 10 ms until one answer comes, for at most `timeout`.
pub fn wait_ping(lab: &Lab, from: &Pod, to: Ipv4Addr, timeout: Duration) -> bool {
    poll_until(timeout, Duration::from_millis(10), || {
        ping(lab, &from.ns, to, 1).ok().filter(|p| p.received == 1)
    })
    .is_some()
}

/// Installs, in `pod`'s namespace, an nftables counter of the ARP requests for `target` that
/// reach its `eth0` (to count how often a broadcast arrives); read it with [`arp_requests`].
pub fn count_arp_requests(lab: &Lab, pod: &Pod, target: Ipv4Addr) -> Result<()> {
    lab.nft(
        &pod.ns,
        &format!(
            "table netdev weftcount {{\n  counter arpreq {{ }}\n  chain in {{\n    type filter hook ingress device \"eth0\" priority 0; policy accept;\n    arp operation request arp daddr ip {target} counter name \"arpreq\"\n  }}\n}}\n"
        ),
    )
}

/// The count of [`count_arp_requests`] in `pod`.
pub fn arp_requests(lab: &Lab, pod: &Pod) -> Result<u64> {
    let out = lab.exec_ok(
        &pod.ns,
        &["nft", "list", "counter", "netdev", "weftcount", "arpreq"],
    )?;
    out.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no packet count in {out}"))
}

/// Result of a TCP transfer between two pods.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transfer {
    /// Bytes sent.
    pub bytes: u64,
    /// Seconds from connect to the receiver's last byte.
    pub secs: f64,
    /// FNV-1a of what was sent.
    pub sent_hash: u64,
    /// FNV-1a of what was received.
    pub received_hash: u64,
    /// Bytes received.
    pub received: u64,
}

impl Transfer {
    /// Throughput in Gbit/s.
    pub fn gbits(&self) -> f64 {
        self.received as f64 * 8.0 / self.secs / 1e9
    }

    /// Everything arrived, unchanged.
    pub fn intact(&self) -> bool {
        self.received == self.bytes && self.sent_hash == self.received_hash
    }
}

fn fnv(mut h: u64, data: &[u8]) -> u64 {
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

const FNV_INIT: u64 = 0xcbf2_9ce4_8422_2325;

/// Sends `bytes` of pseudo-random data over TCP from pod `from` to pod `to` (port 5201), hashing
/// both ends. Bounded: gives up after `timeout`.
pub fn tcp_transfer(from: &Pod, to: &Pod, bytes: u64, timeout: Duration) -> Result<Transfer> {
    tcp_transfer_paced(from, to, bytes, Duration::ZERO, timeout)
}

/// Like [`tcp_transfer`], but spreads the sending over at least `spread` (so that a transfer can
/// run across a change of the network).
pub fn tcp_transfer_paced(
    from: &Pod,
    to: &Pod,
    bytes: u64,
    spread: Duration,
    timeout: Duration,
) -> Result<Transfer> {
    let addr = SocketAddr::from((to.ip, 5201));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server_ns = to.ns.clone();
    let server = std::thread::spawn(move || {
        in_netns(&server_ns, move || -> Result<(u64, u64, Instant)> {
            let l = TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            let _ = ready_tx.send(());
            let deadline = Instant::now() + timeout;
            let (mut s, _) = loop {
                match l.accept() {
                    Ok(c) => break c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        ensure!(
                            Instant::now() < deadline,
                            "no connection within {timeout:?}"
                        );
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            s.set_nonblocking(false)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            let mut buf = vec![0u8; 256 * 1024];
            let (mut n, mut h) = (0u64, FNV_INIT);
            loop {
                let r = s.read(&mut buf)?;
                if r == 0 {
                    break;
                }
                h = fnv(h, &buf[..r]);
                n += r as u64;
                ensure!(
                    Instant::now() < deadline,
                    "transfer did not finish within {timeout:?}"
                );
            }
            Ok((n, h, Instant::now()))
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("receiver did not start")?;
    let client_ns = from.ns.clone();
    let (sent_hash, start) = in_netns(&client_ns, move || -> Result<(u64, Instant)> {
        let start = Instant::now();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_write_timeout(Some(Duration::from_secs(30)))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let (mut left, mut h) = (bytes, FNV_INIT);
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            // Vary the data between chunks so a dropped or repeated chunk changes the hash.
            buf[0] = buf[0].wrapping_add(1);
            s.write_all(&buf[..n])?;
            h = fnv(h, &buf[..n]);
            left -= n as u64;
            if !spread.is_zero() {
                let due = spread.mul_f64((bytes - left) as f64 / bytes as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        s.shutdown(std::net::Shutdown::Write)?;
        Ok((h, start))
    })??;
    let (received, received_hash, end) = server
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))???;
    Ok(Transfer {
        bytes,
        secs: end.duration_since(start).as_secs_f64(),
        sent_hash,
        received_hash,
        received,
    })
}

// ---------------------------------------------------------------------------------------------
// CNI: cnitool and the plugin binary, run the way a container runtime runs them.
// ---------------------------------------------------------------------------------------------

/// Where the standard CNI plugins are found when `$CNI_PATH` is not set (Debian's
/// `containernetworking-plugins`).
pub const SYSTEM_CNI_DIR: &str = "/usr/lib/cni";
/// Where `scripts/setup.sh` puts `cnitool` when `$CNITOOL` is not set.
pub const DEFAULT_CNITOOL: &str = "/usr/local/bin/cnitool";
/// The standard plugins [`Cni::new`] links next to `weft-cni`.
pub const CHAINED_PLUGINS: [&str; 3] = ["portmap", "bandwidth", "tuning"];
/// The CNI version of the configs the tests write: the newest that cnitool 1.1.2 (libcni 1.1)
/// and Debian's plugins 1.1.1 speak.
pub const TEST_CNI_VERSION: &str = "1.0.0";
/// How long one cnitool or plugin run may take before it is killed and reported.
pub const CNI_RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Finds `weft-cni`: `$WEFT_CNI_BIN`, else next to the `weft` binary (see [`weft_bin`]).
pub fn weft_cni_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("WEFT_CNI_BIN") {
        return Ok(PathBuf::from(p));
    }
    let weft = weft_bin()?;
    let p = weft.with_file_name("weft-cni");
    ensure!(
        p.is_file(),
        "cannot find weft-cni at {}; build it (cargo build --release -p weft-cni) or set WEFT_CNI_BIN",
        p.display()
    );
    Ok(p)
}

/// Finds upstream `cnitool`: `$CNITOOL`, else [`DEFAULT_CNITOOL`], else on `PATH`.
pub fn cnitool_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("CNITOOL") {
        return Ok(PathBuf::from(p));
    }
    let default = PathBuf::from(DEFAULT_CNITOOL);
    if default.is_file() {
        return Ok(default);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("cnitool"))
        .find(|p| p.is_file())
        .context(
            "cannot find cnitool: run `sudo bash scripts/setup.sh` (it builds it into \
             /usr/local/bin) or set CNITOOL",
        )
}

/// What one run of `cnitool` or of a plugin printed, and how it exited.
#[derive(Debug, Clone)]
pub struct CniOutput {
    /// The command line, for messages.
    pub command: String,
    /// The exit status.
    pub status: ExitStatus,
    /// Standard output (a CNI result or error object for the plugin; the result for cnitool).
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CniOutput {
    /// Whether the command exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Standard output as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.stdout)
            .with_context(|| format!("`{}` printed no JSON: {self}", self.command))
    }

    /// The `code` of the CNI error object on stdout, if the run failed with one.
    pub fn error_code(&self) -> Option<u64> {
        if self.success() {
            return None;
        }
        serde_json::from_str::<Value>(&self.stdout)
            .ok()?
            .get("code")?
            .as_u64()
    }

    /// Fails unless the command exited 0; the error carries both outputs.
    pub fn ok(self) -> Result<CniOutput> {
        ensure!(self.success(), "`{}` failed: {self}", self.command);
        Ok(self)
    }
}

impl std::fmt::Display for CniOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; stdout: {}; stderr: {}",
            self.status,
            self.stdout.trim(),
            self.stderr.trim()
        )
    }
}

/// A pod attached through CNI: its namespace and what the ADD result said.
#[derive(Debug, Clone, PartialEq)]
pub struct CniPod {
    /// The host it is on.
    pub host: Host,
    /// The pod's namespace (a lab namespace, see [`Lab::add_netns`]).
    pub ns: String,
    /// `CNI_CONTAINERID` of the attachment.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// The address from the result's `ips`.
    pub ip: Ipv4Addr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The gateway from the result's `ips`.
    pub gateway: Option<Ipv4Addr>,
    /// The whole ADD result.
    pub result: Value,
}

impl CniPod {
    /// The host-side interfaces of the result (those without a `sandbox`), by name.
    pub fn host_ifaces(&self) -> Vec<String> {
        self.result["interfaces"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| {
                i.get("sandbox")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
            })
            .filter_map(|i| i["name"].as_str().map(str::to_owned))
            .collect()
    }
}

/// The container-runtime side of a lab: a `CNI_PATH` directory in the lab directory holding
/// symlinks to `weft-cni` and the [`CHAINED_PLUGINS`], one `NETCONFPATH` per host, and runners
/// for `cnitool` and for the plugin itself, both executed inside a host namespace.
///
/// cnitool (libcni) caches ADD results under `/var/lib/cni/results/<network>-<id>-<ifname>` (it
/// has no option for another directory); the network names carry the lab prefix, and dropping the
/// `Cni` removes that lab's cache files.
#[derive(Debug)]
pub struct Cni {
    prefix: String,
    root: PathBuf,
    bin_dir: PathBuf,
    cnitool: PathBuf,
    plugin: PathBuf,
}

/// libcni's result cache.
const LIBCNI_RESULTS: &str = "/var/lib/cni/results";

impl Cni {
    /// Makes `<lab dir>/cni/bin` with `weft-cni` ([`weft_cni_bin`]) and the standard plugins
    /// from `$CNI_PATH` (its first directory that has them) or [`SYSTEM_CNI_DIR`].
    pub fn new(lab: &Lab) -> Result<Cni> {
        let root = lab.dir().join("cni");
        let bin_dir = root.join("bin");
        std::fs::create_dir_all(&bin_dir)
            .with_context(|| format!("creating {}", bin_dir.display()))?;
        let plugin = weft_cni_bin()?;
        let cnitool = cnitool_bin()?;
        let link = bin_dir.join("weft-cni");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&plugin, &link)
            .with_context(|| format!("linking {} to {}", link.display(), plugin.display()))?;
        let cni = Cni {
            prefix: lab.prefix().to_owned(),
            root,
            bin_dir,
            cnitool,
            plugin,
        };
        for name in CHAINED_PLUGINS {
            cni.link_system_plugin(name).context(
                "install containernetworking-plugins (scripts/setup.sh does) or set CNI_PATH",
            )?;
        }
        Ok(cni)
    }

    /// The `CNI_PATH` directory.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The `weft-cni` binary used.
    pub fn plugin_bin(&self) -> &Path {
        &self.plugin
    }

    /// A network name unique to this lab: `<prefix>-<name>` (libcni's cache files carry it).
    pub fn net_name(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// `host`'s `NETCONFPATH`, `<lab dir>/cni/<host>/net.d`.
    pub fn conf_dir(&self, host: &Host) -> PathBuf {
        self.root.join(&host.name).join("net.d")
    }

    /// The `weft-cni` entry of a config for the router with state directory `state_dir`.
    pub fn weft_plugin(state_dir: &Path) -> Value {
        json!({"type": "weft-cni", "stateDir": state_dir.display().to_string()})
    }

    /// Writes `<conf dir of host>/<net>.conflist`: network [`Cni::net_name`]`(name)` at
    /// [`TEST_CNI_VERSION`] with `plugins`, and returns the network's full name (what cnitool
    /// takes).
    pub fn write_conflist(&self, host: &Host, name: &str, plugins: Vec<Value>) -> Result<String> {
        let net = self.net_name(name);
        let dir = self.conf_dir(host);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let conf = json!({"cniVersion": TEST_CNI_VERSION, "name": net, "plugins": plugins});
        let path = dir.join(format!("{net}.conflist"));
        std::fs::write(&path, serde_json::to_vec_pretty(&conf)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(net)
    }

    /// A single-plugin network config for running `weft-cni` directly: `plugin` plus the
    /// `cniVersion` and `name` keys a runtime adds.
    pub fn plugin_conf(&self, name: &str, mut plugin: Value) -> Value {
        plugin["cniVersion"] = json!(TEST_CNI_VERSION);
        plugin["name"] = json!(self.net_name(name));
        plugin
    }

    /// Runs `cnitool <cmd> <net> /run/netns/<netns>` inside `host`'s namespace, with `CNI_PATH`,
    /// `NETCONFPATH` and `env` (e.g. `CAP_ARGS`, `CNI_IFNAME`). A failure of cnitool is not an
    /// error here: look at [`CniOutput::success`].
    pub fn cnitool(
        &self,
        lab: &Lab,
        host: &Host,
        cmd: &str,
        net: &str,
        netns: &str,
        env: &[(&str, &str)],
    ) -> Result<CniOutput> {
        own_ns(lab, &host.ns)?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &host.ns])
            .arg(&self.cnitool)
            .args([cmd, net])
            .arg(Path::new("/run/netns").join(netns));
        clear_cni_env(&mut c);
        c.env("CNI_PATH", &self.bin_dir)
            .env("NETCONFPATH", self.conf_dir(host));
        for (k, v) in env {
            c.env(k, v);
        }
        run_bounded(c, None, CNI_RUN_TIMEOUT)
    }

    /// Runs `weft-cni` itself inside `host`'s namespace with exactly the `CNI_*` variables in
    /// `env` (none inherited) and `stdin` as its config, as a runtime does.
    pub fn run_plugin(
        &self,
        lab: &Lab,
        host: &Host,
        env: &[(&str, &str)],
        stdin: &[u8],
    ) -> Result<CniOutput> {
        own_ns(lab, &host.ns)?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &host.ns]).arg(&self.plugin);
        clear_cni_env(&mut c);
        for (k, v) in env {
            c.env(k, v);
        }
        run_bounded(c, Some(stdin.to_vec()), CNI_RUN_TIMEOUT)
    }

    /// The `CNI_*` environment of an operation on a container: command, container id, netns
    /// path, interface name and `CNI_PATH`.
    pub fn op_env(
        &self,
        command: &str,
        container_id: &str,
        netns: &str,
        ifname: &str,
    ) -> Vec<(String, String)> {
        vec![
            ("CNI_COMMAND".into(), command.into()),
            ("CNI_CONTAINERID".into(), container_id.into()),
            ("CNI_NETNS".into(), format!("/run/netns/{netns}")),
            ("CNI_IFNAME".into(), ifname.into()),
            ("CNI_PATH".into(), self.bin_dir.display().to_string()),
        ]
    }

    /// Runs `weft-cni` with `command` on container `container_id` (netns `netns`, interface
    /// `eth0`) and the network config `conf`.
    pub fn plugin_op(
        &self,
        lab: &Lab,
        host: &Host,
        command: &str,
        container_id: &str,
        netns: &str,
        conf: &Value,
    ) -> Result<CniOutput> {
        let env = self.op_env(command, container_id, netns, "eth0");
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.run_plugin(lab, host, &env, &serde_json::to_vec(conf)?)
    }

    /// ADDs a pod by running `weft-cni` directly with container id `container_id` and `conf`,
    /// retrying with a bounded backoff (up to `patience` in all) while it answers error 11 (try
    /// again later). Any other failure is an error.
    pub fn add_direct(
        &self,
        lab: &Lab,
        host: &Host,
        container_id: &str,
        netns: &str,
        conf: &Value,
        patience: Duration,
    ) -> Result<CniPod> {
        self.try_add_direct(lab, host, container_id, netns, conf, patience)?
            .map_err(|out| {
                anyhow!(
                    "ADD of {container_id} on {} still answered \"try again later\" after \
                     {patience:?}: {out}",
                    host.name
                )
            })
    }

    /// Like [`Cni::add_direct`], but running out of patience while the plugin answers error 11
    /// is not an error: the last answer comes back as `Ok(Err(output))`.
    pub fn try_add_direct(
        &self,
        lab: &Lab,
        host: &Host,
        container_id: &str,
        netns: &str,
        conf: &Value,
        patience: Duration,
    ) -> Result<std::result::Result<CniPod, CniOutput>> {
        let deadline = Instant::now() + patience;
        let mut backoff = Duration::from_millis(50);
        loop {
            let out = self.plugin_op(lab, host, "ADD", container_id, netns, conf)?;
            if out.success() {
                let pod = CniPod::from_result(host, netns, container_id, "eth0", out.json()?)?;
                return Ok(Ok(pod));
            }
            ensure!(
                out.error_code() == Some(11),
                "ADD of {container_id} on {} failed: {out}",
                host.name
            );
            if Instant::now() + backoff >= deadline {
                return Ok(Err(out));
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Links another plugin of `$CNI_PATH` / [`SYSTEM_CNI_DIR`] (e.g. `bridge`, `host-local`)
    /// into [`Cni::bin_dir`].
    pub fn link_system_plugin(&self, name: &str) -> Result<()> {
        let system: Vec<PathBuf> = match std::env::var_os("CNI_PATH") {
            Some(p) => std::env::split_paths(&p).collect(),
            None => vec![PathBuf::from(SYSTEM_CNI_DIR)],
        };
        let from = system
            .iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .with_context(|| format!("no CNI plugin {name} in {system:?}"))?;
        let to = self.bin_dir.join(name);
        let _ = std::fs::remove_file(&to);
        std::os::unix::fs::symlink(&from, &to)
            .with_context(|| format!("linking {} to {}", to.display(), from.display()))
    }
}

impl Drop for Cni {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(LIBCNI_RESULTS) else {
            return;
        };
        let ours = format!("{}-", self.prefix);
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&ours) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

impl CniPod {
    /// Reads a CNI result: the first IPv4 entry of `ips`.
    pub fn from_result(
        host: &Host,
        ns: &str,
        container_id: &str,
        ifname: &str,
        result: Value,
    ) -> Result<CniPod> {
        let ip = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|i| {
                let (addr, len) = i["address"].as_str()?.split_once('/')?;
                Some((addr.parse::<Ipv4Addr>().ok()?, len.parse::<u8>().ok()?, i))
            })
            .ok_or_else(|| anyhow!("no IPv4 address in the CNI result {result}"))?;
        let gateway = ip.2["gateway"].as_str().and_then(|g| g.parse().ok());
        Ok(CniPod {
            host: host.clone(),
            ns: ns.to_owned(),
            container_id: container_id.to_owned(),
            ifname: ifname.to_owned(),
            ip: ip.0,
            prefix_len: ip.1,
            gateway,
            result,
        })
    }
}

/// Removes every `CNI_*` variable (and cnitool's `NETCONFPATH` and `CAP_ARGS`) the test process
/// may have inherited, so each run sees exactly what the test sets.
fn clear_cni_env(c: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CNI_") || k == "NETCONFPATH" || k == "CAP_ARGS" {
            c.env_remove(k.as_ref());
        }
    }
}

fn own_ns(lab: &Lab, ns: &str) -> Result<()> {
    ensure!(
        lab.namespaces().iter().any(|n| n == ns),
        "{ns} is not a namespace of lab {}",
        lab.prefix()
    );
    Ok(())
}

/// Runs `cmd` with `stdin`, collecting stdout and stderr; kills it (by PID) if it is still
/// running after `timeout`.
fn run_bounded(mut cmd: Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Result<CniOutput> {
    let line = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {line}"))?;
    let writer = child.stdin.take().zip(stdin).map(|(mut pipe, data)| {
        std::thread::spawn(move || {
            // A plugin may exit without reading its config: ignore the broken pipe.
            let _ = pipe.write_all(&data);
        })
    });
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = read(Box::new(child.stdout.take().expect("stdout is piped")));
    let err = read(Box::new(child.stderr.take().expect("stderr is piped")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{line} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = out.join().map_err(|_| anyhow!("stdout reader panicked"))?;
    let stderr = err.join().map_err(|_| anyhow!("stderr reader panicked"))?;
    Ok(CniOutput {
        command: line,
        status,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ping_output() {
        let text = "PING 10.32.0.2 (10.32.0.2) 56(84) bytes of data.\n\n--- 10.32.0.2 ping statistics ---\n3 packets transmitted, 2 received, 33.3333% packet loss, time 407ms\nrtt min/avg/max/mdev = 0.274/0.402/0.623/0.156 ms\n";
        let p = parse_ping(text).unwrap();
        assert_eq!((p.sent, p.received), (3, 2));
        assert_eq!((p.min_ms, p.avg_ms, p.max_ms), (0.274, 0.402, 0.623));
        let lost = "1 packets transmitted, 0 received, 100% packet loss, time 0ms\n";
        let p = parse_ping(lost).unwrap();
        assert_eq!(p.received, 0);
        assert!(p.avg_ms.is_nan());
    }
}
