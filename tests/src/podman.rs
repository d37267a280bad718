//! The container image (`scripts/build-image.sh`) and podman, for `tests/tests/image.rs`: the
//! image's OCI archive, built once per pair of release binaries and kept under the target
//! directory, and a podman of the test's own (storage root in a temporary directory, vfs driver,
//! cgroupfs, runc, file events, k8s-file logs: no daemon, no systemd, nothing global), with
//! containers that are removed when dropped.

use anyhow::{bail, ensure, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use weft_lab::testbed::weft_bin;
use weft_lab::Host;

/// How long one podman command may take (a `load` or a `run` copies the image's 130 MiB with the
/// vfs driver; a few seconds on a loaded machine).
pub const PODMAN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long building the image may take: mmdebstrap downloads and installs about 120 Debian
/// packages (90 s here), then podman imports and saves the root.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(600);
/// The limits the containers get. Podman's defaults (1048576 files and 4194304 processes) are
/// above the sandbox's own and cannot be raised without `CAP_SYS_RESOURCE`: runc fails with
/// "error setting rlimits for ready process: ... operation not permitted".
const ULIMITS: [&str; 2] = ["nofile=4096:4096", "nproc=4096:4096"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// Runs `cmd` with stdin closed, killing it after `timeout`; its output, or an error naming the
/// command when it cannot start or runs too long.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Result<Output> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    // Drain both pipes on threads so that a chatty command cannot block on a full pipe.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not end within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    })
}

/// [`run_bounded`], and an error with both outputs unless the command succeeded; its stdout.
pub fn run_ok(cmd: Command, timeout: Duration) -> Result<String> {
    let what = format!("{cmd:?}");
    let out = run_bounded(cmd, timeout)?;
    ensure!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first 16 hex digits of the SHA-256 of `files`, in order.
fn hash_files(files: &[PathBuf]) -> Result<String> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for f in files {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        ctx.update(&(bytes.len() as u64).to_le_bytes());
        ctx.update(&bytes);
    }
    Ok(ctx
        .finish()
        .as_ref()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The image's OCI archive for the release `weft` and `weft-cni` next to [`weft_bin`]:
/// `<target>/weft-image/weft-<hash>.oci.tar`, named by a hash of both binaries and of
/// `scripts/build-image.sh`, built by that script when missing (its Debian root is kept in the
/// same directory, so that a new binary costs an import, not a new root). Older archives there
/// are removed. Returns the archive and how long getting it took.
pub fn image_archive() -> Result<(PathBuf, Duration)> {
    let start = Instant::now();
    let weft = weft_bin()?.canonicalize()?;
    let bin_dir = weft
        .parent()
        .context("weft has no directory")?
        .to_path_buf();
    let script = repo().join("scripts/build-image.sh");
    let key = hash_files(&[weft.clone(), bin_dir.join("weft-cni"), script.clone()])?;
    let cache = bin_dir
        .parent()
        .context("the release directory has no parent")?
        .join("weft-image");
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let archive = cache.join(format!("weft-{key}.oci.tar"));
    if archive.is_file() {
        return Ok((archive, start.elapsed()));
    }
    for e in std::fs::read_dir(&cache)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("weft-") && name.ends_with(".oci.tar") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .arg("--out")
        .arg(&archive)
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--cache")
        .arg(&cache);
    run_ok(cmd, BUILD_TIMEOUT).context("building the image (scripts/build-image.sh)")?;
    ensure!(
        archive.is_file(),
        "build-image.sh wrote no {}",
        archive.display()
    );
    Ok((archive, start.elapsed()))
}

/// Podman with a storage root of its own under `/tmp/weft-podman-<pid>`, removed (after every
/// container in it) when dropped. Roots left by test processes that died are cleaned up first.
#[derive(Debug)]
pub struct Podman {
    dir: PathBuf,
}

impl Podman {
    /// A new podman root, with containers that run under `--runtime runc`; an error saying what to install when podman or runc is missing.
    pub fn new() -> Result<Podman> {
        for (tool, arg) in [("podman", "--version"), ("runc", "--version")] {
            let ok = Command::new(tool)
                .arg(arg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            ensure!(
                ok,
                "{tool} is not installed: run `sudo bash scripts/setup.sh` (it installs podman, \
                 runc and mmdebstrap for the container image test)"
            );
        }
        Self::clean_stale();
        let dir = std::env::temp_dir().join(format!("weft-podman-{}", std::process::id()));
        let p = Podman { dir };
        p.remove_all();
        std::fs::create_dir_all(&p.dir).with_context(|| format!("creating {}", p.dir.display()))?;
        Ok(p)
    }

    /// Removes the roots whose test process is gone, with their containers.
    fn clean_stale() {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("weft-podman-") else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                Podman { dir: e.path() }.remove_all();
            }
        }
    }

    /// Removes every container of this root, then the root.
    fn remove_all(&self) {
        if self.dir.exists() {
            let mut c = self.command();
            c.args(["rm", "--all", "--force", "--time", "10"]);
            let _ = run_bounded(c, PODMAN_TIMEOUT);
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// `podman` with this root's global options.
    pub fn command(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
                // crun 1.8 refuses this machine's hybrid cgroup hierarchy ("cgroups in hybrid
                // mode not supported"); runc takes it.
                "--runtime",
                "runc",
            ]);
        c
    }

    /// `podman <args>`: its stdout, or an error with its output.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let mut c = self.command();
        c.args(args);
        run_ok(c, PODMAN_TIMEOUT)
    }

    /// Loads an OCI archive; the image's name.
    pub fn load(&self, archive: &Path) -> Result<String> {
        let mut c = self.command();
        c.arg("load").arg("--quiet").arg("--input").arg(archive);
        let out = run_ok(c, PODMAN_TIMEOUT)?;
        // "Loaded image: localhost/weft:0.1.0" (or "Loaded image(s): ...").
        out.lines()
            .find_map(|l| l.split_once(": ").map(|(_, n)| n.trim().to_string()))
            .with_context(|| format!("no image name in podman load's output: {out:?}"))
    }

    /// `podman run --rm` of `image` with the test's limits and `args` (options, then the image,
    /// then its arguments, as podman takes them): its stdout. Without a network: podman's default
    /// one is a bridge (`cni-podman0`) with firewall rules in the root network namespace.
    pub fn run_rm(&self, args: &[&str]) -> Result<String> {
        let mut c = self.command();
        c.args([
            "run",
            "--rm",
            "--network",
            "none",
            "--log-driver",
            "k8s-file",
        ]);
        for u in ULIMITS {
            c.args(["--ulimit", u]);
        }
        c.args(args);
        run_ok(c, PODMAN_TIMEOUT)
    }

    /// Starts a detached container named `name` from `image` in `host`'s network namespace, as
    /// the DaemonSet runs the router on a node (host network, privileged, the node's modules):
    /// `mounts` are `host path:container path` bind mounts, `args` go to the image's entrypoint.
    pub fn start_in_host(
        &self,
        host: &Host,
        name: &str,
        image: &str,
        mounts: &[(&Path, &str)],
        args: &[String],
    ) -> Result<Container<'_>> {
        let mut c = self.command();
        c.args([
            "run",
            "--detach",
            "--name",
            name,
            "--log-driver",
            "k8s-file",
        ])
        .arg(format!("--network=ns:/run/netns/{}", host.ns))
        .arg("--privileged");
        // The node's modules, for modprobe (as the DaemonSet mounts them), when it has any.
        if Path::new("/lib/modules").is_dir() {
            c.args(["--volume", "/lib/modules:/lib/modules:ro"]);
        }
        for u in ULIMITS {
            c.args(["--ulimit", u]);
        }
        for (from, to) in mounts {
            c.arg("--volume").arg(format!("{}:{to}", from.display()));
        }
        c.arg(image).args(args);
        // The guard exists before the start, so that a container that was created but failed
        // to start is removed too.
        let container = Container {
            podman: self,
            name: name.to_string(),
        };
        run_ok(c, PODMAN_TIMEOUT)?;
        Ok(container)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// A container, removed (`podman rm --force`: SIGTERM, then SIGKILL after 10 s) when dropped.
#[derive(Debug)]
pub struct Container<'a> {
    podman: &'a Podman,
    /// Its name.
    pub name: String,
}

impl Container<'_> {
    /// `podman exec <container> <args>`: its stdout.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let mut c = self.podman.command();
        c.arg("exec").arg(&self.name).args(args);
        run_ok(c, PODMAN_TIMEOUT)
    }

    /// Its log so far (stdout and stderr), or why it cannot be had.
    pub fn logs(&self) -> String {
        let mut c = self.podman.command();
        c.arg("logs").arg(&self.name);
        match run_bounded(c, PODMAN_TIMEOUT) {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("(no log: {e:#})"),
        }
    }

    /// Its state as podman sees it (`running`, `exited`, ...).
    pub fn state(&self) -> Result<String> {
        let mut c = self.podman.command();
        c.args(["inspect", "--format", "{{.State.Status}}"])
            .arg(&self.name);
        Ok(run_ok(c, PODMAN_TIMEOUT)?.trim().to_string())
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let mut c = self.podman.command();
        c.args(["rm", "--force", "--time", "10"]).arg(&self.name);
        let _ = run_bounded(c, PODMAN_TIMEOUT);
    }
}
