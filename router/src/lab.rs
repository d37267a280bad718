//! A network-namespace lab: throwaway virtual clusters for the integration tests and `weft demo`.
//!
//! A [`Lab`] builds a small cluster out of Linux network namespaces on one machine:
//!
//! ```text
//!   <prefix>-ul           the underlay "switch": bridge `ul`, one port per host (named after it)
//!   <prefix>-<host>       a host: `eth0` = 10.200.0.<10+index>/24 on the underlay, a pod bridge
//!   <prefix>-<host>-<pod> a pod: `eth0` with the pod's address, its peer `v<host><pod>` on the
//!                         host's pod bridge (default `weft`)
//! ```
//!
//! The prefix is the caller's tag plus six random hex digits, so several labs (and several test
//! binaries) can run at once; every namespace and file the lab makes carries it, and its logs live
//! in `/tmp/weft-lab-<prefix>/`. Every link is created *inside* a namespace the lab made: the lab
//! never touches the root network namespace.
//!
//! The lab is test and demo tooling, so it drives the `ip` and `nft` commands (iproute2, nftables)
//! rather than netlink; a failing command becomes an error carrying its command line and stderr.
//!
//! Cleanup: dropping a [`Lab`] (also during a panic unwind) kills and reaps every process it
//! spawned, deletes its namespaces and removes its directory. Each live lab is also recorded in a
//! process-global registry so that [`cleanup_all`] (called by the handler that
//! [`install_signal_cleanup`] installs) can tear everything down when the process is interrupted.
//! Leftovers of a process that died without any chance to clean up (SIGKILL) can be removed with
//! [`cleanup_stale`].
//!
//! Setting `WEFT_LAB_KEEP=1` keeps the lab directory (the process logs) after the lab is dropped.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard, Once, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::kill as send_signal;
use nix::unistd::Pid;

/// The signals [`Lab::kill`] sends (re-exported from `nix`, so that callers need not depend on it).
pub use nix::sys::signal::Signal;

/// Name of the underlay bridge inside the underlay namespace `<prefix>-ul`.
pub const UNDERLAY_BRIDGE: &str = "ul";
/// Suffix of the underlay namespace: `<prefix>-ul`.
pub const UNDERLAY_NS_SUFFIX: &str = "ul";
/// The default pod bridge inside each host namespace.
pub const DEFAULT_POD_BRIDGE: &str = "weft";
/// MTU of the underlay links.
pub const UNDERLAY_MTU: u32 = 1500;
/// Prefix length of the underlay network 10.200.0.0/24.
pub const UNDERLAY_PREFIX_LEN: u8 = 24;
/// Linux limit on interface names (`IFNAMSIZ - 1`).
pub const MAX_IFNAME_LEN: usize = 15;
/// The most hosts a lab can hold (underlay addresses 10.200.0.11 ..= 10.200.0.254).
pub const MAX_HOSTS: usize = 244;

/// Directory under which `ip netns` keeps its namespace handles.
const NETNS_RUN_DIR: &str = "/run/netns";
/// Name of the file in the lab directory that records the owning process.
const OWNER_FILE: &str = "owner";

// ---------------------------------------------------------------------------------------------
// The process-global registry of live labs.
// ---------------------------------------------------------------------------------------------

/// What [`cleanup_all`] must undo for one live lab.
#[derive(Debug)]
struct Tracked {
    /// Namespaces in creation order (deleted in reverse).
    namespaces: Vec<String>,
    /// PIDs of spawned children that have not been reaped yet. A PID stays in this list until
    /// it is reaped (under the registry lock), so it can never name a recycled, foreign process.
    pids: Vec<u32>,
    /// The lab directory.
    dir: PathBuf,
}

/// Live labs by prefix. Creating namespaces, spawning, reaping and cleaning up all happen under
/// this lock, so a signal-triggered [`cleanup_all`] never races a half-registered resource.
static REGISTRY: Mutex<BTreeMap<String, Tracked>> = Mutex::new(BTreeMap::new());

fn registry() -> MutexGuard<'static, BTreeMap<String, Tracked>> {
    // A panic while holding the lock leaves the map consistent (every mutation is one step), so
    // poisoning is ignored: cleanup must keep working during a panic.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Public types.
// ---------------------------------------------------------------------------------------------

/// A host of the lab: a namespace with `eth0` on the underlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The host's name; also the name of its port on the underlay bridge.
    pub name: String,
    /// The host's namespace, `<prefix>-<name>`.
    pub ns: String,
    /// The address of `eth0`: 10.200.0.<10 + index>/24.
    pub underlay_ip: Ipv4Addr,
    /// 1 for the first host, 2 for the second, ...
    pub index: u8,
}

/// How to build a pod: see [`Lab::add_pod`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    /// Address of the pod's `eth0`.
    pub ip: Ipv4Addr,
    /// Prefix length of that address.
    pub prefix_len: u8,
    /// MAC address of the pod's `eth0`; `None` lets the kernel pick a random one.
    pub mac: Option<[u8; 6]>,
    /// MTU of both ends of the pod's veth pair.
    pub mtu: u32,
    /// The bridge in the host namespace the host end is attached to (created if missing).
    pub bridge: String,
}

impl PodSpec {
    /// A pod at `ip/prefix_len` with the given MTU, a random MAC, on the bridge `weft`.
    pub fn new(ip: Ipv4Addr, prefix_len: u8, mtu: u32) -> PodSpec {
        PodSpec {
            ip,
            prefix_len,
            mac: None,
            mtu,
            bridge: DEFAULT_POD_BRIDGE.to_owned(),
        }
    }

    /// The same spec with a fixed MAC address.
    pub fn with_mac(mut self, mac: [u8; 6]) -> PodSpec {
        self.mac = Some(mac);
        self
    }

    /// The same spec on another bridge of the host namespace.
    pub fn with_bridge(mut self, bridge: &str) -> PodSpec {
        self.bridge = bridge.to_owned();
        self
    }
}

/// A pod of the lab: a namespace with `eth0`, its veth peer on a host's bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// The pod's name.
    pub name: String,
    /// The pod's namespace, `<prefix>-<host>-<name>`.
    pub ns: String,
    /// Address of the pod's `eth0`.
    pub ip: Ipv4Addr,
    /// Prefix length of that address.
    pub prefix_len: u8,
    /// MAC address of the pod's `eth0`, as read back from the kernel.
    pub mac: [u8; 6],
    /// The host end of the veth pair, in the host namespace: `v<host><name>` cut to 15 chars.
    pub host_if: String,
    /// The host's name.
    pub host: String,
    /// The host's namespace.
    pub host_ns: String,
    /// The bridge `host_if` is attached to.
    pub bridge: String,
}

/// Handle of a process spawned by [`Lab::spawn`]; only meaningful for the lab that returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcId(usize);

/// Interface counters, as `ip -s link` reports them (the kernel's 64-bit statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Packets dropped on transmit.
    pub tx_dropped: u64,
}

/// A process the lab spawned.
#[derive(Debug)]
struct Proc {
    child: Child,
    /// Set once the child has been reaped; the PID is no longer ours from then on.
    status: Option<ExitStatus>,
    ns: String,
    log_name: String,
}

/// A throwaway virtual cluster made of network namespaces; see the [module docs](self).
///
/// Dropping it kills (SIGKILL, by PID) and reaps every process it spawned, kills whatever else
/// still runs inside its namespaces (descendants of those processes), deletes every namespace it
/// created and removes its directory, also during a panic unwind.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    dir: PathBuf,
    underlay_ns: String,
    /// Namespaces in creation order (mirrors the registry entry).
    namespaces: Vec<String>,
    hosts: Vec<Host>,
    pods: Vec<Pod>,
    procs: Vec<Proc>,
}

// ---------------------------------------------------------------------------------------------
// The lab.
// ---------------------------------------------------------------------------------------------

impl Lab {
    /// Creates a lab whose prefix is `tag` plus six random hex digits (e.g. `wt3fa9c1`): its
    /// directory `/tmp/weft-lab-<prefix>/` and the underlay namespace `<prefix>-ul` with the
    /// bridge `ul` up.
    ///
    /// `tag` may hold ASCII letters, digits, `-` and `_` (at most 16 characters).
    pub fn new(tag: &str) -> Result<Lab> {
        check_name("lab tag", tag)?;
        ensure!(
            tag.len() <= 16,
            "lab tag {tag:?} is longer than 16 characters"
        );
        let prefix = format!("{tag}{:06x}", rand::random::<u32>() & 0xff_ffff);
        let dir = std::env::temp_dir().join(format!("weft-lab-{prefix}"));
        fs::create_dir(&dir)
            .with_context(|| format!("creating lab directory {}", dir.display()))?;
        registry().insert(
            prefix.clone(),
            Tracked {
                namespaces: Vec::new(),
                pids: Vec::new(),
                dir: dir.clone(),
            },
        );
        // From here on, dropping `lab` undoes whatever was done.
        let mut lab = Lab {
            underlay_ns: format!("{prefix}-{UNDERLAY_NS_SUFFIX}"),
            prefix,
            dir,
            namespaces: Vec::new(),
            hosts: Vec::new(),
            pods: Vec::new(),
            procs: Vec::new(),
        };
        fs::write(lab.dir.join(OWNER_FILE), owner_record()?)
            .with_context(|| format!("writing {}", lab.dir.join(OWNER_FILE).display()))?;
        let ul = lab.underlay_ns.clone();
        lab.create_netns(&ul)?;
        ip(&["-n", &ul, "link", "add", UNDERLAY_BRIDGE, "type", "bridge"])?;
        ip(&["-n", &ul, "link", "set", UNDERLAY_BRIDGE, "up"])?;
        Ok(lab)
    }

    /// The per-run prefix every namespace and file of this lab carries.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The lab's directory, `/tmp/weft-lab-<prefix>/` (process logs, scratch files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The underlay namespace, `<prefix>-ul`, holding the bridge `ul`.
    pub fn underlay_ns(&self) -> &str {
        &self.underlay_ns
    }

    /// The hosts added so far, in order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The pods currently in the lab.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// Every namespace the lab currently owns, in creation order.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Adds a host: namespace `<prefix>-<name>` with `lo` up and `eth0` (MTU 1500, up) at
    /// 10.200.0.<10 + index>/24, whose veth peer, named `name`, is a port of the underlay bridge.
    ///
    /// `name` must be a valid interface name (at most 15 characters of ASCII letters, digits,
    /// `-`, `_`) and must not be `ul`.
    pub fn add_host(&mut self, name: &str) -> Result<Host> {
        check_name("host name", name)?;
        check_ifname(name).context("a host's name is also its underlay port's name")?;
        ensure!(
            name != UNDERLAY_BRIDGE,
            "host name {name:?} is reserved for the underlay"
        );
        ensure!(
            self.hosts.iter().all(|h| h.name != name),
            "lab {} already has a host {name:?}",
            self.prefix
        );
        ensure!(
            self.hosts.len() < MAX_HOSTS,
            "a lab holds at most {MAX_HOSTS} hosts"
        );
        let index = u8::try_from(self.hosts.len() + 1).expect("MAX_HOSTS fits in u8");
        let underlay_ip = Ipv4Addr::new(10, 200, 0, 10 + index);
        let ns = format!("{}-{name}", self.prefix);
        self.create_netns(&ns)?;
        let ul = self.underlay_ns.as_str();
        let mtu = UNDERLAY_MTU.to_string();
        ip(&[
            "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", name, "netns", ul,
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "mtu", &mtu, "up"])?;
        let cidr = format!("{underlay_ip}/{UNDERLAY_PREFIX_LEN}");
        ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&[
            "-n",
            ul,
            "link",
            "set",
            name,
            "master",
            UNDERLAY_BRIDGE,
            "mtu",
            &mtu,
            "up",
        ])?;
        let host = Host {
            name: name.to_owned(),
            ns,
            underlay_ip,
            index,
        };
        self.hosts.push(host.clone());
        Ok(host)
    }

    /// Adds a pod to `host`: namespace `<prefix>-<host>-<name>` with `lo` up and `eth0` at
    /// `spec.ip/spec.prefix_len` (MAC `spec.mac` if given, MTU `spec.mtu`), whose veth peer
    /// `v<host><name>` (cut to 15 characters; must be unique on the host) is attached to the
    /// bridge `spec.bridge` in the host namespace. The bridge is created (and set up) if missing.
    pub fn add_pod(&mut self, host: &Host, name: &str, spec: PodSpec) -> Result<Pod> {
        check_name("pod name", name)?;
        check_ifname(&spec.bridge).context("pod bridge")?;
        ensure!(
            self.hosts.iter().any(|h| h == host),
            "{host:?} is not a host of lab {}",
            self.prefix
        );
        ensure!(
            spec.prefix_len <= 32,
            "prefix length {} is over 32",
            spec.prefix_len
        );
        let ns = format!("{}-{}-{name}", self.prefix, host.name);
        let host_if = host_if_name(&host.name, name);
        if link_exists(&host.ns, &host_if)? {
            bail!(
                "interface {host_if:?} already exists in {}: pod names on host {:?} must stay \
                 unique when `v<host><pod>` is cut to {MAX_IFNAME_LEN} characters",
                host.ns,
                host.name
            );
        }
        if !link_exists(&host.ns, &spec.bridge)? {
            ip(&[
                "-n",
                &host.ns,
                "link",
                "add",
                &spec.bridge,
                "type",
                "bridge",
            ])?;
            ip(&["-n", &host.ns, "link", "set", &spec.bridge, "up"])?;
        }
        self.create_netns(&ns)?;
        let mtu = spec.mtu.to_string();
        ip(&[
            "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &host_if, "netns",
            &host.ns,
        ])?;
        if let Some(mac) = spec.mac {
            ip(&[
                "-n",
                &ns,
                "link",
                "set",
                "eth0",
                "address",
                &format_mac(&mac),
            ])?;
        }
        ip(&["-n", &ns, "link", "set", "eth0", "mtu", &mtu, "up"])?;
        let cidr = format!("{}/{}", spec.ip, spec.prefix_len);
        ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&[
            "-n",
            &host.ns,
            "link",
            "set",
            &host_if,
            "master",
            &spec.bridge,
            "mtu",
            &mtu,
            "up",
        ])?;
        let mac = read_mac(&ns, "eth0")?;
        let pod = Pod {
            name: name.to_owned(),
            ns,
            ip: spec.ip,
            prefix_len: spec.prefix_len,
            mac,
            host_if,
            host: host.name.clone(),
            host_ns: host.ns.clone(),
            bridge: spec.bridge,
        };
        self.pods.push(pod.clone());
        Ok(pod)
    }

    /// Adds an empty namespace `<prefix>-<name>` with only `lo` (up), e.g. for a container
    /// runtime's view of a pod before a CNI plugin wires it. Returns the namespace's name.
    pub fn add_netns(&mut self, name: &str) -> Result<String> {
        check_name("namespace name", name)?;
        let ns = format!("{}-{name}", self.prefix);
        self.create_netns(&ns)?;
        Ok(ns)
    }

    /// Removes a pod: kills the processes running in its namespace, deletes its veth pair and
    /// then the namespace.
    pub fn remove_pod(&mut self, pod: &Pod) -> Result<()> {
        ensure!(
            self.pods.iter().any(|p| p.ns == pod.ns),
            "{} is not a pod of lab {}",
            pod.ns,
            self.prefix
        );
        // Also forgets the pod.
        self.remove_netns(&pod.ns)
    }

    /// Removes a namespace this lab created (see [`Lab::add_netns`]): kills the processes spawned
    /// in it, deletes its `eth0` (if any, so that a veth peer elsewhere vanishes at once rather
    /// than when the kernel gets round to it) and deletes the namespace.
    pub fn remove_netns(&mut self, ns: &str) -> Result<()> {
        ensure!(
            self.namespaces.iter().any(|n| n == ns),
            "{ns} is not a namespace of lab {}",
            self.prefix
        );
        let ids: Vec<ProcId> = (0..self.procs.len())
            .map(ProcId)
            .filter(|&id| self.procs[id.0].ns == ns && self.procs[id.0].status.is_none())
            .collect();
        for id in ids {
            self.kill(id, Signal::SIGKILL)?;
        }
        kill_netns_pids(ns);
        if link_exists(ns, "eth0")? {
            ip(&["-n", ns, "link", "del", "eth0"])?;
        }
        let mut reg = registry();
        run_ok(Command::new("ip").args(["netns", "del", ns]))?;
        if let Some(t) = reg.get_mut(&self.prefix) {
            t.namespaces.retain(|n| n != ns);
        }
        drop(reg);
        self.namespaces.retain(|n| n != ns);
        self.pods.retain(|p| p.ns != ns);
        Ok(())
    }

    /// Runs `ip netns exec <ns> <args...>` and waits for it. A non-zero exit is not an error;
    /// see [`Lab::exec_ok`]. `ns` must belong to this lab.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Result<Output> {
        self.check_own_ns(ns)?;
        ensure!(!args.is_empty(), "exec in {ns}: no command given");
        run(Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null()))
    }

    /// Like [`Lab::exec`], but a non-zero exit is an error (carrying the command and its
    /// stderr). Returns stdout.
    pub fn exec_ok(&self, ns: &str, args: &[&str]) -> Result<String> {
        self.check_own_ns(ns)?;
        ensure!(!args.is_empty(), "exec in {ns}: no command given");
        let out = run_ok(
            Command::new("ip")
                .args(["netns", "exec", ns])
                .args(args)
                .stdin(Stdio::null()),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sends one ping (`ping -c 1 -W 1`) from `ns` to `to`; true if it was answered.
    pub fn ping(&self, ns: &str, to: Ipv4Addr) -> Result<bool> {
        let to = to.to_string();
        Ok(self
            .exec(ns, &["ping", "-n", "-q", "-c", "1", "-W", "1", &to])?
            .status
            .success())
    }

    /// Sets a sysctl inside a lab namespace (`sysctl -qw key=value`).
    pub fn sysctl(&self, ns: &str, key: &str, value: &str) -> Result<()> {
        self.exec_ok(ns, &["sysctl", "-qw", &format!("{key}={value}")])
            .map(drop)
    }

    /// Starts `ip netns exec <ns> <program> <args...>` with stdin from /dev/null and stdout and
    /// stderr appended to `<dir>/<log_name>.log`. `ip netns exec` execs the program, so the
    /// child's PID is the program's PID.
    pub fn spawn<S: AsRef<OsStr>>(
        &mut self,
        ns: &str,
        program: &Path,
        args: &[S],
        log_name: &str,
    ) -> Result<ProcId> {
        self.check_own_ns(ns)?;
        let path = self.log_path(log_name)?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let line = command_line(&cmd);
        let mut reg = registry();
        let tracked = reg
            .get_mut(&self.prefix)
            .ok_or_else(|| anyhow!("lab {} has been torn down by cleanup_all", self.prefix))?;
        let child = cmd.spawn().with_context(|| format!("starting `{line}`"))?;
        tracked.pids.push(child.id());
        drop(reg);
        self.procs.push(Proc {
            child,
            status: None,
            ns: ns.to_owned(),
            log_name: log_name.to_owned(),
        });
        Ok(ProcId(self.procs.len() - 1))
    }

    /// The PID of a spawned process, or `None` once it has been reaped (or for a foreign id).
    pub fn pid(&self, id: ProcId) -> Option<u32> {
        self.procs
            .get(id.0)
            .filter(|p| p.status.is_none())
            .map(|p| p.child.id())
    }

    /// Sends `signal` to a process this lab spawned (by PID) and, for SIGKILL, waits for it and
    /// reaps it. Fails if the process has already been reaped.
    pub fn kill(&mut self, id: ProcId, signal: Signal) -> Result<()> {
        let prefix = self.prefix.clone();
        let p = self.proc_mut(id)?;
        let mut reg = registry();
        if p.status.is_some() {
            bail!("process {} ({}) has already exited", id.0, p.log_name);
        }
        // Unreaped, so the PID is still our child's (maybe a zombie): signalling it is safe.
        let pid = p.child.id();
        send_signal(Pid::from_raw(pid as i32), signal)
            .with_context(|| format!("sending {signal} to {pid} ({})", p.log_name))?;
        if signal == Signal::SIGKILL {
            let status = p
                .child
                .wait()
                .with_context(|| format!("waiting for {pid}"))?;
            reaped(&mut reg, &prefix, p, status);
        }
        Ok(())
    }

    /// Whether a spawned process is still running (reaps it if it has exited).
    pub fn is_running(&mut self, id: ProcId) -> bool {
        self.try_reap(id).is_ok_and(|status| status.is_none())
    }

    /// Waits up to `timeout` for a spawned process to exit; its exit status, or `None` if it is
    /// still running at the deadline.
    pub fn wait_exit(&mut self, id: ProcId, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_reap(id)? {
                return Ok(Some(status));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            thread::sleep((deadline - now).min(Duration::from_millis(10)));
        }
    }

    /// The path of the log `<dir>/<log_name>.log`.
    pub fn log_path(&self, log_name: &str) -> Result<PathBuf> {
        ensure!(
            !log_name.is_empty() && !log_name.starts_with('.') && !log_name.contains('/'),
            "invalid log name {log_name:?}"
        );
        Ok(self.dir.join(format!("{log_name}.log")))
    }

    /// The contents of the log `<dir>/<log_name>.log`, or "" if there is none.
    pub fn log(&self, log_name: &str) -> String {
        self.log_path(log_name)
            .ok()
            .and_then(|path| fs::read(path).ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Loads an nftables ruleset inside a lab namespace (`nft -f -`, the ruleset on stdin).
    pub fn nft(&self, ns: &str, ruleset: &str) -> Result<()> {
        self.check_own_ns(ns)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let line = command_line(&cmd);
        let mut child = cmd.spawn().with_context(|| format!("starting `{line}`"))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let written = stdin.write_all(ruleset.as_bytes());
        drop(stdin);
        let out = child
            .wait_with_output()
            .with_context(|| format!("waiting for `{line}`"))?;
        check_output(&line, &out)?;
        written.with_context(|| format!("writing the ruleset to `{line}`"))
    }

    /// The counters of interface `ifname` in namespace `ns` (`ip -j -s link show`).
    pub fn link_stats(&self, ns: &str, ifname: &str) -> Result<LinkStats> {
        self.check_own_ns(ns)?;
        let v = link_json(ns, ifname, true)?;
        let stats = v
            .get("stats64")
            .or_else(|| v.get("stats"))
            .ok_or_else(|| anyhow!("no statistics for {ifname} in {ns}: {v}"))?;
        let get = |dir: &str, key: &str| -> Result<u64> {
            stats
                .get(dir)
                .and_then(|d| d.get(key))
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| anyhow!("no {dir}.{key} for {ifname} in {ns}: {stats}"))
        };
        Ok(LinkStats {
            rx_packets: get("rx", "packets")?,
            tx_packets: get("tx", "packets")?,
            rx_bytes: get("rx", "bytes")?,
            tx_bytes: get("tx", "bytes")?,
            rx_dropped: get("rx", "dropped")?,
            tx_dropped: get("tx", "dropped")?,
        })
    }

    /// The MAC address of interface `ifname` in namespace `ns`.
    pub fn mac(&self, ns: &str, ifname: &str) -> Result<[u8; 6]> {
        self.check_own_ns(ns)?;
        read_mac(ns, ifname)
    }

    // -- internals ------------------------------------------------------------------------------

    /// Creates namespace `ns` (registered first, under the registry lock, so that no signal can
    /// leave it behind) and sets its `lo` up.
    fn create_netns(&mut self, ns: &str) -> Result<()> {
        ensure!(
            !self.namespaces.iter().any(|n| n == ns),
            "lab {} already has a namespace {ns}",
            self.prefix
        );
        {
            let mut reg = registry();
            let tracked = reg
                .get_mut(&self.prefix)
                .ok_or_else(|| anyhow!("lab {} has been torn down by cleanup_all", self.prefix))?;
            run_ok(Command::new("ip").args(["netns", "add", ns]))?;
            tracked.namespaces.push(ns.to_owned());
        }
        self.namespaces.push(ns.to_owned());
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn check_own_ns(&self, ns: &str) -> Result<()> {
        let own = ns
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|rest| !rest.is_empty());
        ensure!(
            own && !ns.contains('/'),
            "namespace {ns:?} does not belong to lab {} (names start with \"{}-\")",
            self.prefix,
            self.prefix
        );
        Ok(())
    }

    fn proc_mut(&mut self, id: ProcId) -> Result<&mut Proc> {
        let prefix = &self.prefix;
        self.procs
            .get_mut(id.0)
            .ok_or_else(|| anyhow!("lab {prefix} has no process {}", id.0))
    }

    /// The exit status if the process has exited (reaping it), `None` while it runs.
    fn try_reap(&mut self, id: ProcId) -> Result<Option<ExitStatus>> {
        let prefix = self.prefix.clone();
        let p = self.proc_mut(id)?;
        if let Some(status) = p.status {
            return Ok(Some(status));
        }
        let mut reg = registry();
        let pid = p.child.id();
        match p
            .child
            .try_wait()
            .with_context(|| format!("waiting for {pid}"))?
        {
            Some(status) => {
                reaped(&mut reg, &prefix, p, status);
                Ok(Some(status))
            }
            None => Ok(None),
        }
    }

    /// Prints the tail of every log, for a test that is failing.
    fn dump_logs(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        paths.sort();
        for path in paths {
            let text = fs::read(&path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            let mut msg = format!(
                "---- lab {}: last {} lines of {} ----\n",
                self.prefix,
                tail.len(),
                path.display()
            );
            for l in tail {
                let _ = writeln!(msg, "{l}");
            }
            eprint!("{msg}");
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if thread::panicking() {
            self.dump_logs();
        }
        let mut reg = registry();
        for p in &mut self.procs {
            if p.status.is_none() {
                // Unreaped, so the PID still names our child: kill it, then reap it.
                let _ = send_signal(Pid::from_raw(p.child.id() as i32), Signal::SIGKILL);
                if let Ok(status) = p.child.wait() {
                    p.status = Some(status);
                }
            }
        }
        // Without an entry, cleanup_all already removed the namespaces and the directory.
        if let Some(tracked) = reg.remove(&self.prefix) {
            teardown(&tracked.namespaces, &tracked.dir);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Free functions.
// ---------------------------------------------------------------------------------------------

/// Runs `f` on a new, dedicated OS thread that first enters the network namespace `ns` (the
/// handle `/run/netns/<ns>`), and returns its result. Sockets `f` opens live in that namespace.
///
/// `setns` changes only the calling thread, which is why `f` never runs on the caller's thread
/// (nor on an async runtime's worker). Note that `/sys` still shows the caller's namespace. A
/// panic in `f` is propagated to the caller.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    ensure!(
        !ns.is_empty() && !ns.contains('/') && ns != "." && ns != "..",
        "invalid namespace name {ns:?}"
    );
    let path = Path::new(NETNS_RUN_DIR).join(ns);
    let handle = thread::Builder::new()
        .name("weft-lab-netns".to_owned())
        .spawn(move || -> Result<T> {
            let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            setns(&file, CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering network namespace {}", path.display()))?;
            Ok(f())
        })
        .context("spawning a thread")?;
    match handle.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Kills every process and deletes every namespace and directory of every live [`Lab`] in this
/// process. Meant for signal handlers (see [`install_signal_cleanup`]); the labs are unusable
/// afterwards (dropping them is still fine).
pub fn cleanup_all() {
    let mut reg = registry();
    for (_, tracked) in std::mem::take(&mut *reg) {
        for &pid in &tracked.pids {
            // Not yet reaped, so still our child: safe to signal. The zombies are reaped when
            // (if) the owning Lab is dropped.
            let _ = send_signal(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        teardown(&tracked.namespaces, &tracked.dir);
    }
}

/// Starts a thread that, on SIGINT, SIGTERM or SIGHUP, runs [`cleanup_all`] and exits the process
/// with status 130. Calling it again does nothing.
pub fn install_signal_cleanup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("weft lab: cannot install signal handlers: {e}");
                return;
            }
        };
        let spawned = thread::Builder::new()
            .name("weft-lab-signals".to_owned())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    eprintln!("weft lab: got signal {signal}, cleaning up");
                    cleanup_all();
                    std::process::exit(130);
                }
            });
        if let Err(e) = spawned {
            eprintln!("weft lab: cannot start the signal thread: {e}");
        }
    });
}

/// Calls `f` every `interval` until it returns `Some` (returned) or `timeout` has passed
/// (`None`). `f` is called at least once, and once more at the deadline.
pub fn poll_until<T>(
    timeout: Duration,
    interval: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::sleep(interval.min(deadline - now));
    }
}

/// Whether the lab can run here: the effective user is root and the `ip` command works.
pub fn require_root() -> bool {
    effective_uid() == Some(0)
        && Command::new("ip")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Removes what labs of dead processes left behind (e.g. after a SIGKILL, when no cleanup could
/// run): for every `/tmp/weft-lab-<prefix>/` whose owning process is gone, kills the processes
/// still inside the namespaces `<prefix>-*`, deletes those namespaces and the directory. Labs of
/// live processes are never touched. Returns the prefixes cleaned.
pub fn cleanup_stale() -> Result<Vec<String>> {
    let tmp = std::env::temp_dir();
    let mut cleaned = Vec::new();
    let live: Vec<String> = registry().keys().cloned().collect();
    for entry in fs::read_dir(&tmp).with_context(|| format!("listing {}", tmp.display()))? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(prefix) = name.strip_prefix("weft-lab-") else {
            continue;
        };
        if prefix.is_empty() || live.iter().any(|l| l == prefix) {
            continue;
        }
        // No owner file yet means the lab is being created right now: leave it alone.
        let Ok(owner) = fs::read_to_string(entry.path().join(OWNER_FILE)) else {
            continue;
        };
        if owner_alive(&owner) {
            continue;
        }
        for ns in list_netns()? {
            if ns
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('-'))
            {
                kill_netns_pids(&ns);
                let _ = run_ok(Command::new("ip").args(["netns", "del", &ns]));
            }
        }
        let _ = fs::remove_dir_all(entry.path());
        cleaned.push(prefix.to_owned());
    }
    Ok(cleaned)
}

/// The names of all network namespaces (`ip netns list`).
pub fn list_netns() -> Result<Vec<String>> {
    let out = run_ok(Command::new("ip").args(["netns", "list"]))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// The host end of a pod's veth pair: `v<host><pod>` cut to 15 characters.
pub fn host_if_name(host: &str, pod: &str) -> String {
    format!("v{host}{pod}")
        .chars()
        .take(MAX_IFNAME_LEN)
        .collect()
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// Parses a MAC address written as `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let part = parts.next().filter(|p| p.len() == 2);
        *byte = part
            .and_then(|p| u8::from_str_radix(p, 16).ok())
            .ok_or_else(|| anyhow!("invalid MAC address {s:?}"))?;
    }
    ensure!(parts.next().is_none(), "invalid MAC address {s:?}");
    Ok(mac)
}

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

/// Records that `p` has been reaped: its PID leaves the registry (caller holds the lock).
fn reaped(reg: &mut BTreeMap<String, Tracked>, prefix: &str, p: &mut Proc, status: ExitStatus) {
    let pid = p.child.id();
    p.status = Some(status);
    if let Some(t) = reg.get_mut(prefix) {
        t.pids.retain(|&x| x != pid);
    }
}

/// Deletes namespaces (newest first) and a lab directory, reporting but not failing on errors.
fn teardown(namespaces: &[String], dir: &Path) {
    for ns in namespaces.iter().rev() {
        kill_netns_pids(ns);
        if let Err(e) = run_ok(Command::new("ip").args(["netns", "del", ns])) {
            eprintln!("weft lab: {e:#}");
        }
    }
    if std::env::var_os("WEFT_LAB_KEEP").is_some_and(|v| !v.is_empty() && v != "0") {
        eprintln!("weft lab: keeping {}", dir.display());
    } else if let Err(e) = fs::remove_dir_all(dir) {
        eprintln!("weft lab: removing {}: {e}", dir.display());
    }
}

/// SIGKILLs whatever still runs inside a lab namespace (`ip netns pids`): descendants of the
/// lab's children, such as the background jobs of a spawned shell. Only a lab's processes run
/// in its namespaces, and a namespace with processes in it outlives `ip netns del`.
fn kill_netns_pids(ns: &str) {
    if let Ok(out) = run_ok(Command::new("ip").args(["netns", "pids", ns])) {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = send_signal(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// Names: ASCII letters, digits, `-` and `_`, not starting with `-`.
fn check_name(what: &str, name: &str) -> Result<()> {
    ensure!(
        !name.is_empty()
            && !name.starts_with('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "invalid {what} {name:?}: use ASCII letters, digits, '-' and '_' (not leading '-')"
    );
    Ok(())
}

fn check_ifname(name: &str) -> Result<()> {
    ensure!(
        !name.is_empty() && name.len() <= MAX_IFNAME_LEN,
        "interface name {name:?} is {} characters long; Linux allows at most {MAX_IFNAME_LEN}",
        name.len()
    );
    Ok(())
}

/// The command line of `cmd`, for error messages.
fn command_line(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        line.push(' ');
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'') {
            line.push_str(&format!("'{}'", arg.replace('\'', r"'\''")));
        } else {
            line.push_str(&arg);
        }
    }
    line
}

/// Runs `cmd` to completion, capturing stdout and stderr; fails only if it cannot start.
fn run(cmd: &mut Command) -> Result<Output> {
    let line = command_line(cmd);
    cmd.output().with_context(|| format!("running `{line}`"))
}

/// Runs `cmd` to completion; a non-zero exit is an error carrying the command line and stderr.
fn run_ok(cmd: &mut Command) -> Result<Output> {
    let line = command_line(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{line}`"))?;
    check_output(&line, &out)?;
    Ok(out)
}

fn check_output(line: &str, out: &Output) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let detail = if stderr.trim().is_empty() {
        stdout.trim().to_owned()
    } else {
        stderr.trim().to_owned()
    };
    bail!("`{line}` failed ({}): {detail}", out.status)
}

/// Runs `ip <args>` and returns its stdout.
fn ip(args: &[&str]) -> Result<String> {
    let out = run_ok(Command::new("ip").args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn link_exists(ns: &str, ifname: &str) -> Result<bool> {
    let out = run(Command::new("ip").args(["-n", ns, "-o", "link", "show", "dev", ifname]))?;
    if out.status.success() {
        return Ok(true);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("does not exist") {
        Ok(false)
    } else {
        bail!(
            "`ip -n {ns} -o link show dev {ifname}` failed ({}): {}",
            out.status,
            stderr.trim()
        )
    }
}

/// The JSON object `ip -j [-s] link show dev <ifname>` prints for one interface.
fn link_json(ns: &str, ifname: &str, stats: bool) -> Result<serde_json::Value> {
    let mut args = vec!["-n", ns, "-j"];
    if stats {
        args.push("-s");
    }
    args.extend(["link", "show", "dev", ifname]);
    let text = ip(&args)?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("parsing `ip {}` output {text:?}", args.join(" ")))?;
    v.get(0)
        .cloned()
        .ok_or_else(|| anyhow!("`ip {}` printed no interface", args.join(" ")))
}

fn read_mac(ns: &str, ifname: &str) -> Result<[u8; 6]> {
    let v = link_json(ns, ifname, false)?;
    let s = v
        .get("address")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| anyhow!("no address for {ifname} in {ns}: {v}"))?;
    parse_mac(s)
}

/// The effective UID, from `/proc/self/status` (the `Uid:` line: real, effective, ...).
fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The start time of process `pid` (field 22 of `/proc/<pid>/stat`), which tells a live
/// process from a recycled PID.
fn start_time(pid: &str) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19).map(str::to_owned)
}

/// `"<pid> <start time>"` of this process, written to the lab directory.
fn owner_record() -> Result<String> {
    let pid = std::process::id().to_string();
    let start = start_time(&pid).ok_or_else(|| anyhow!("cannot read /proc/{pid}/stat"))?;
    Ok(format!("{pid} {start}\n"))
}

fn owner_alive(record: &str) -> bool {
    let mut fields = record.split_whitespace();
    match (fields.next(), fields.next()) {
        (Some(pid), Some(start)) => start_time(pid).is_some_and(|s| s == start),
        // Unreadable: assume it is alive rather than destroy someone else's lab.
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_if_names_are_cut_to_15_chars() {
        assert_eq!(host_if_name("h1", "p1"), "vh1p1");
        assert_eq!(host_if_name("host1", "a-long-pod-name"), "vhost1a-long-po");
        assert_eq!(
            host_if_name("host1", "a-long-pod-name").len(),
            MAX_IFNAME_LEN
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("host name", "h1").is_ok());
        assert!(check_name("host name", "h_1-x").is_ok());
        assert!(check_name("host name", "").is_err());
        assert!(check_name("host name", "-h").is_err());
        assert!(check_name("host name", "h/1").is_err());
        assert!(check_name("host name", "h 1").is_err());
        assert!(check_ifname("exactly15chars_").is_ok());
        let err = check_ifname("sixteen_chars_xx").unwrap_err().to_string();
        assert!(err.contains("at most 15"), "{err}");
    }

    #[test]
    fn macs_round_trip() {
        let mac = [0x02, 0xab, 0x00, 0x10, 0xff, 0x01];
        assert_eq!(format_mac(&mac), "02:ab:00:10:ff:01");
        assert_eq!(parse_mac("02:ab:00:10:ff:01").unwrap(), mac);
        assert!(parse_mac("02:ab:00:10:ff").is_err());
        assert!(parse_mac("02:ab:00:10:ff:01:02").is_err());
        assert!(parse_mac("02:ab:00:10:ff:1").is_err());
        assert!(parse_mac("02:ab:00:10:ff:zz").is_err());
    }

    #[test]
    fn pod_spec_builder() {
        let spec = PodSpec::new(Ipv4Addr::new(10, 32, 0, 1), 12, 1376)
            .with_mac([2, 0, 0, 0, 0, 1])
            .with_bridge("br1");
        assert_eq!(spec.bridge, "br1");
        assert_eq!(spec.mac, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(
            PodSpec::new(Ipv4Addr::LOCALHOST, 8, 1500).bridge,
            DEFAULT_POD_BRIDGE
        );
    }

    #[test]
    fn poll_until_returns_early_or_gives_up() {
        let mut n = 0;
        let got = poll_until(Duration::from_secs(5), Duration::from_millis(1), || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(got, Some(3));
        let start = Instant::now();
        let none: Option<()> =
            poll_until(Duration::from_millis(30), Duration::from_millis(5), || None);
        assert!(none.is_none());
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn command_lines_are_quoted() {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", "x", "sh", "-c", "echo hi"]);
        assert_eq!(command_line(&cmd), "ip netns exec x sh -c 'echo hi'");
    }

    #[test]
    fn this_process_is_alive() {
        let record = owner_record().unwrap();
        assert!(owner_alive(&record));
        assert!(!owner_alive("999999999 1"));
    }
}
