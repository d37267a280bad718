//! The lab itself: hosts, pods and extra namespaces, the processes spawned in them, and tearing
//! them down when the [`Lab`] is dropped.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::cleanup::*;
use crate::util::*;
use anyhow::{anyhow, bail, ensure, Context as _, Result};
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
pub(crate) const NETNS_RUN_DIR: &str = "/run/netns";
/// Name of the file in the lab directory that records the owning process.
pub(crate) const OWNER_FILE: &str = "owner";

// ---------------------------------------------------------------------------------------------
// The process-global registry of live labs.
// ---------------------------------------------------------------------------------------------

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
    /// The address of `eth0`: 10.200.0.<10 + index>/24. In a lab with an IPv6-only underlay
    /// ([`Lab::ipv6_only_underlay`]) it is not configured: use [`Host::underlay_addr`].
    pub underlay_ip: Ipv4Addr,
    /// In a lab with an IPv6-only underlay, the IPv6 address of `eth0`:
    /// fd00:200::<10 + index>/64 (the last group is the IPv4 address's last byte, in decimal
    /// digits read as hex, e.g. fd00:200::11 for 10.200.0.11).
    pub underlay_ip6: Option<Ipv6Addr>,
    /// 1 for the first host, 2 for the second, ...
    pub index: u8,
}

impl Host {
    /// The address other hosts reach this one at: `underlay_ip6` when set (a dual-stack host's
    /// too), else `underlay_ip`.
    pub fn underlay_addr(&self) -> IpAddr {
        match self.underlay_ip6 {
            Some(a) => IpAddr::V6(a),
            None => IpAddr::V4(self.underlay_ip),
        }
    }
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
pub(crate) struct Proc {
    pub(crate) child: Child,
    /// Set once the child has been reaped; the PID is no longer ours from then on.
    pub(crate) status: Option<ExitStatus>,
    pub(crate) ns: String,
    pub(crate) log_name: String,
}

/// A throwaway virtual cluster made of network namespaces; see the [crate docs](crate).
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
    /// Which underlay addresses the hosts added from now on get ([`Lab::underlay_family`]).
    family: UnderlayFamily,
}

/// Which underlay addresses a host gets on `eth0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderlayFamily {
    /// 10.200.0.<10 + index>/24 only (the default).
    V4,
    /// fd00:200::<10 + index>/64 only.
    V6,
    /// Both.
    Dual,
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
            family: UnderlayFamily::V4,
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

    /// Makes the underlay IPv6-only: the hosts added from now on get fd00:200::<10 + index>/64
    /// on `eth0` (without duplicate address detection, so usable at once) and no IPv4 address.
    /// Multicast snooping is off on the underlay bridge, so neighbour discovery needs no querier.
    pub fn ipv6_only_underlay(&mut self) -> Result<()> {
        ensure!(
            self.hosts.is_empty(),
            "choose the underlay's family before adding hosts"
        );
        self.underlay_family(UnderlayFamily::V6)
    }

    /// Sets which underlay addresses the hosts added from now on get (a lab may mix hosts of
    /// both families: a mesh reached over IPv4 and IPv6 at once). Multicast snooping is turned
    /// off on the underlay bridge for the IPv6 ones, as in [`Lab::ipv6_only_underlay`].
    pub fn underlay_family(&mut self, family: UnderlayFamily) -> Result<()> {
        if family != UnderlayFamily::V4 {
            let ul = self.underlay_ns.clone();
            ip(&[
                "-n",
                &ul,
                "link",
                "set",
                UNDERLAY_BRIDGE,
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ])?;
        }
        self.family = family;
        Ok(())
    }

    /// Adds a host: namespace `<prefix>-<name>` with `lo` up and `eth0` (MTU 1500, up) at
    /// 10.200.0.<10 + index>/24 (or its IPv6 counterpart, see [`Lab::ipv6_only_underlay`]), whose veth peer, named `name`, is a port of the underlay bridge.
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
        let underlay_ip6 = (self.family != UnderlayFamily::V4).then(|| {
            let last = u16::from_str_radix(&(10 + index).to_string(), 16).expect("decimal digits");
            Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, last)
        });
        if let Some(a) = underlay_ip6 {
            let cidr = format!("{a}/64");
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0", "nodad"])?;
        }
        if self.family != UnderlayFamily::V6 {
            let cidr = format!("{underlay_ip}/{UNDERLAY_PREFIX_LEN}");
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
        }
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
            underlay_ip6,
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

    /// The packets an nftables named counter in a lab namespace has counted
    /// (`nft list counter FAMILY TABLE NAME`).
    pub fn nft_counter(&self, ns: &str, family: &str, table: &str, name: &str) -> Result<u64> {
        let out = self.exec_ok(ns, &["nft", "list", "counter", family, table, name])?;
        out.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no packet count in {out}"))
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
