//! The CNI runtime emulator of the CNI tests: [`Cni`] drives the plugin the way a container
//! runtime does, with upstream `cnitool` (or the `weft-cni` binary itself, with the `CNI_*`
//! environment and a config on stdin) run inside a host namespace, a `CNI_PATH` holding
//! `weft-cni` and the standard `portmap`, `bandwidth` and `tuning` plugins, and one conflist per
//! host pointing at that host's router.

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use weft_lab::testbed::{weft_bin, Cluster};
use weft_lab::{poll_until, Host, Lab};

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
    /// The IPv6 address from the result's `ips`, on a dual-stack cluster.
    pub ip6: Option<std::net::Ipv6Addr>,
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

    /// `cnitool add` of network `net` in the existing namespace `netns` on `host`: the pod as
    /// the result describes it, or an error carrying cnitool's output.
    pub fn cnitool_add(&self, lab: &Lab, host: &Host, net: &str, netns: &str) -> Result<CniPod> {
        let out = self.cnitool(lab, host, "add", net, netns, &[])?;
        ensure!(
            out.success(),
            "cnitool add {net} {netns} on {}: {out}",
            host.name
        );
        let id = cnitool_container_id(&format!("/run/netns/{netns}"));
        CniPod::from_result(host, netns, &id, "eth0", out.json()?)
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
    /// Reads a CNI result: the first IPv4 entry of `ips` (and the first IPv6 one).
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
        let ip6 = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|i| {
                i["address"]
                    .as_str()?
                    .split_once('/')?
                    .0
                    .parse::<std::net::Ipv6Addr>()
                    .ok()
            });
        Ok(CniPod {
            ip6,
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

/// The container id cnitool gives an attachment: `cnitool-` and the first 10 bytes of the
/// SHA-512 of the netns path, in hex.
pub fn cnitool_container_id(netns_path: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA512, netns_path.as_bytes());
    let hex: String = d.as_ref()[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("cnitool-{hex}")
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

/// A new namespace on `host` attached through `cnitool add` on network `net` with the identity
/// `ns/name` in `CNI_ARGS` (`IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=name`, as kubelet
/// passes it); panics with the router's log when the ADD fails.
pub fn add_pod_with_identity(
    c: &mut Cluster,
    cni: &Cni,
    host: &Host,
    net: &str,
    ns: &str,
    name: &str,
) -> CniPod {
    let netns = c
        .lab
        .add_netns(&format!("{}-{ns}-{name}", host.name))
        .unwrap();
    let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}");
    let out = cni
        .cnitool(&c.lab, host, "add", net, &netns, &[("CNI_ARGS", &args)])
        .unwrap();
    assert!(out.success(), "{out}\n{}", c.router_log(host));
    let id = cnitool_container_id(&format!("/run/netns/{netns}"));
    CniPod::from_result(host, &netns, &id, "eth0", out.json().unwrap()).unwrap()
}

/// Writes one network `weft` per host (weft-cni alone, pointing at that host's router) and
/// waits until each router's IPAM can serve an ADD; panics with the router's log if one is not
/// ready within 30 s. Returns the networks' names, in the order of `hosts`.
pub fn weft_networks(c: &Cluster, cni: &Cni, hosts: &[Host]) -> Vec<String> {
    let nets = hosts
        .iter()
        .map(|h| {
            cni.write_conflist(h, "weft", vec![Cni::weft_plugin(&c.state_dir(h))])
                .unwrap()
        })
        .collect();
    for h in hosts {
        poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
            c.ipam(h).ok().filter(|r| r.ready)
        })
        .unwrap_or_else(|| panic!("{} IPAM not ready:\n{}", h.name, c.router_log(h)));
    }
    nets
}
