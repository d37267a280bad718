//! A cluster of real `weft router` processes on a [`Lab`]: what the integration tests and
//! `weft demo` build on. Starts routers in host namespaces, asks them for status through their API
//! sockets (path-bound Unix sockets work from any network namespace), attaches pods with the MTU
//! the router computed, and moves data between pods.
//!
//! The CNI runtime emulator the CNI tests drive the plugin with is in the test suite
//! (`tests/src/cni.rs`), not here: nothing but the tests uses it.

use crate::{in_netns, poll_until, Host, Lab, Pod, PodSpec, ProcId, Signal};
use anyhow::{bail, ensure, Context, Result};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use weft_api as api;
use weft_api::ipam::IpamReport;
use weft_api::status::Report;

/// The AEAD two routers on `--cipher auto` choose on this machine, as `weft status` names it:
/// `aes-256-gcm` when the CPU has AES instructions (the features the router checks),
/// `chacha20-poly1305` otherwise.
pub fn auto_cipher() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    let hw = std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("pclmulqdq");
    #[cfg(target_arch = "aarch64")]
    let hw = std::arch::is_aarch64_feature_detected!("aes");
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let hw = false;
    if hw {
        "aes-256-gcm"
    } else {
        "chacha20-poly1305"
    }
}

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
    /// Hosts whose router runs another binary ([`Cluster::upgrade_router`]).
    binaries: HashMap<String, PathBuf>,
    routers: HashMap<String, RouterProc>,
}

impl Cluster {
    /// A new, empty cluster whose names start with `tag`.
    pub fn new(tag: &str, weft: PathBuf) -> Result<Cluster> {
        Ok(Cluster {
            lab: Lab::new(tag)?,
            weft,
            binaries: HashMap::new(),
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
            "--state-dir".into(),
            self.state_dir(host).display().to_string(),
        ];
        // The host's underlay address, unless `extra` names another `--listen`. An IPv6
        // underlay in two of the spellings operators type: `[addr]` here, `[addr]:port` for
        // the seeds.
        if !extra.contains(&"--listen") {
            args.push("--listen".into());
            args.push(match host.underlay_addr() {
                IpAddr::V6(a) => format!("[{a}]"),
                a => a.to_string(),
            });
        }
        for p in peers {
            args.push("--peer".into());
            args.push(match p.underlay_addr() {
                IpAddr::V6(a) => format!("[{a}]:6783"),
                a => a.to_string(),
            });
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
        let bin = self.binaries.get(&host.name).unwrap_or(&self.weft).clone();
        let id = self.lab.spawn(&host.ns, &bin, &args, &log)?;
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
        Ok(api::get(&self.state_dir(host), "/v1/ipam")?)
    }

    /// Sends `signal` to `host`'s router (SIGKILL also reaps it).
    pub fn kill_router(&mut self, host: &Host, signal: Signal) -> Result<()> {
        let r = self
            .routers
            .get(&host.name)
            .with_context(|| format!("no router on {}", host.name))?;
        self.lab.kill(r.id, signal)
    }

    /// Runs `host`'s router from `bin` (another version) from its next start on.
    pub fn set_router_binary(&mut self, host: &Host, bin: PathBuf) {
        self.binaries.insert(host.name.clone(), bin);
    }

    /// Upgrades (or downgrades) `host`'s router in place, as a package manager would: stops it
    /// with SIGTERM, then starts `bin` on the same state directory with the arguments it had plus
    /// `extra`, and waits until its API answers.
    pub fn upgrade_router(&mut self, host: &Host, bin: PathBuf, extra: &[&str]) -> Result<()> {
        self.stop_router(host, Signal::SIGTERM, Duration::from_secs(15))?;
        self.set_router_binary(host, bin);
        let r = self
            .routers
            .remove(&host.name)
            .with_context(|| format!("no router on {}", host.name))?;
        let mut args = r.args;
        args.extend(extra.iter().map(|s| s.to_string()));
        self.spawn_router(host, args, r.state_dir)
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
        Ok(api::get(&self.state_dir(host), "/v1/status")?)
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

    /// Waits until every router of `hosts` holds the same topology: a record of each of them
    /// listing every other as a usable connection. Only then do they all compute the same routes
    /// and broadcast trees (a router's own peers can be established before the others have
    /// heard so).
    pub fn wait_converged(&self, hosts: &[Host], timeout: Duration) -> Result<()> {
        let want: std::collections::BTreeSet<&str> =
            hosts.iter().map(|h| h.name.as_str()).collect();
        let mut last = String::new();
        let done = poll_until(timeout, Duration::from_millis(50), || {
            for h in hosts {
                let r = self.status(h).ok()?;
                for other in hosts {
                    let rec = r.topology.iter().find(|t| t.nickname == other.name);
                    let usable: std::collections::BTreeSet<&str> = rec
                        .iter()
                        .flat_map(|t| t.connections.iter())
                        .filter(|c| c.usable)
                        .map(|c| c.nickname.as_str())
                        .collect();
                    let mut expected = want.clone();
                    expected.remove(other.name.as_str());
                    if usable != expected {
                        last = format!(
                            "{} sees {} with usable {:?}; its topology: {:?}",
                            h.name, other.name, usable, r.topology
                        );
                        return None;
                    }
                }
            }
            Some(())
        });
        done.with_context(|| format!("no common topology after {timeout:?}: {last}"))
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
        self.wait_converged(&hosts, Duration::from_secs(15))?;
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

    /// Runs `weft doctor --json` inside `host`'s namespace against its router, with CNI
    /// configurations read from `cni_conf_dir`: the report and the exit code.
    pub fn doctor(
        &self,
        host: &Host,
        cni_conf_dir: &std::path::Path,
    ) -> Result<(weft_api::doctor::Report, Option<i32>)> {
        let weft = self.weft.display().to_string();
        let sd = self.state_dir(host).display().to_string();
        let cni = cni_conf_dir.display().to_string();
        let out = self.lab.exec(
            &host.ns,
            &[
                &weft,
                "doctor",
                "--state-dir",
                &sd,
                "--cni-conf-dir",
                &cni,
                "--json",
            ],
        )?;
        let r = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "doctor's JSON does not parse: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        Ok((r, out.status.code()))
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

/// Pings `to` (either family) from namespace `ns` `count` times, 0.2 s apart.
pub fn ping(lab: &Lab, ns: &str, to: impl Into<IpAddr>, count: u32) -> Result<PingStats> {
    let to: IpAddr = to.into();
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
pub fn wait_ping(lab: &Lab, from: &Pod, to: impl Into<IpAddr>, timeout: Duration) -> bool {
    let to: IpAddr = to.into();
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
    lab.nft_counter(&pod.ns, "netdev", "weftcount", "arpreq")
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
    tcp_transfer_between(&from.ns, &to.ns, IpAddr::V4(to.ip), bytes, spread, timeout)
}

/// Like [`tcp_transfer_paced`], between namespaces `from_ns` and `to_ns`, to `to` (an address of
/// `to_ns`, either family).
pub fn tcp_transfer_between(
    from_ns: &str,
    to_ns: &str,
    to: IpAddr,
    bytes: u64,
    spread: Duration,
    timeout: Duration,
) -> Result<Transfer> {
    let addr = SocketAddr::new(to, 5201);
    tcp_transfer_on_port(from_ns, to_ns, addr, bytes, spread, timeout)
}

/// Like [`tcp_transfer_between`], to the address and port `addr` (several transfers to one pod
/// at once each take their own port).
pub fn tcp_transfer_on_port(
    from_ns: &str,
    to_ns: &str,
    addr: SocketAddr,
    bytes: u64,
    spread: Duration,
    timeout: Duration,
) -> Result<Transfer> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server_ns = to_ns.to_owned();
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
            // The whole budget, not less: under loss, TCP in the pods may back off for tens of
            // seconds between two segments (a retransmission lost several times over), and the
            // transfer is bounded by `timeout` as a whole anyway.
            s.set_read_timeout(Some(timeout))?;
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
    let client_ns = from_ns.to_owned();
    let sent_hash = in_netns(&client_ns, move || -> Result<(u64, Instant)> {
        let start = Instant::now();
        // The whole budget: under heavy loss on the underlay the SYN may need several tries.
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_write_timeout(Some(timeout))?;
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
    })?;
    let received = server
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))
        .and_then(|r| r?);
    // Either end's failure names the other's too: a sender's "Broken pipe" is the receiver
    // having given up, and the receiver says why.
    let (sent_hash, start, (received, received_hash, end)) = match (sent_hash, received) {
        (Ok((h, s)), Ok(r)) => (h, s, r),
        (Err(e), Ok(_)) => return Err(e.context("sender")),
        (Ok(_), Err(e)) => return Err(e.context("receiver")),
        (Err(s), Err(r)) => anyhow::bail!("sender: {s:#}; receiver: {r:#}"),
    };
    Ok(Transfer {
        bytes,
        secs: end.duration_since(start).as_secs_f64(),
        sent_hash,
        received_hash,
        received,
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
