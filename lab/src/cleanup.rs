//! Cleaning up: the process-global registry of live labs (so that an interrupted process can
//! tear down what it made), the signal handler that does it, and the removal of leftovers of
//! processes that died without a chance to clean up.

use std::collections::BTreeMap;
use std::fs::{self};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Mutex, MutexGuard, Once, PoisonError};
use std::thread;

use crate::lab::*;
use crate::util::*;
use anyhow::{anyhow, Context as _, Result};
use nix::sys::signal::kill as send_signal;
use nix::unistd::Pid;

/// What [`cleanup_all`] must undo for one live lab.
#[derive(Debug)]
pub(crate) struct Tracked {
    /// Namespaces in creation order (deleted in reverse).
    pub(crate) namespaces: Vec<String>,
    /// PIDs of spawned children that have not been reaped yet. A PID stays in this list until
    /// it is reaped (under the registry lock), so it can never name a recycled, foreign process.
    pub(crate) pids: Vec<u32>,
    /// The lab directory.
    pub(crate) dir: PathBuf,
}

/// Live labs by prefix. Creating namespaces, spawning, reaping and cleaning up all happen under
/// this lock, so a signal-triggered [`cleanup_all`] never races a half-registered resource.
static REGISTRY: Mutex<BTreeMap<String, Tracked>> = Mutex::new(BTreeMap::new());

pub(crate) fn registry() -> MutexGuard<'static, BTreeMap<String, Tracked>> {
    // A panic while holding the lock leaves the map consistent (every mutation is one step), so
    // poisoning is ignored: cleanup must keep working during a panic.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
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

/// Records that `p` has been reaped: its PID leaves the registry (caller holds the lock).
pub(crate) fn reaped(
    reg: &mut BTreeMap<String, Tracked>,
    prefix: &str,
    p: &mut Proc,
    status: ExitStatus,
) {
    let pid = p.child.id();
    p.status = Some(status);
    if let Some(t) = reg.get_mut(prefix) {
        t.pids.retain(|&x| x != pid);
    }
}

/// Deletes namespaces (newest first) and a lab directory, reporting but not failing on errors.
pub(crate) fn teardown(namespaces: &[String], dir: &Path) {
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
pub(crate) fn kill_netns_pids(ns: &str) {
    if let Ok(out) = run_ok(Command::new("ip").args(["netns", "pids", ns])) {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = send_signal(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// The effective UID, from `/proc/self/status` (the `Uid:` line: real, effective, ...).
pub(crate) fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The start time of process `pid` (field 22 of `/proc/<pid>/stat`), which tells a live
/// process from a recycled PID.
pub(crate) fn start_time(pid: &str) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19).map(str::to_owned)
}

/// `"<pid> <start time>"` of this process, written to the lab directory.
pub(crate) fn owner_record() -> Result<String> {
    let pid = std::process::id().to_string();
    let start = start_time(&pid).ok_or_else(|| anyhow!("cannot read /proc/{pid}/stat"))?;
    Ok(format!("{pid} {start}\n"))
}

pub(crate) fn owner_alive(record: &str) -> bool {
    let mut fields = record.split_whitespace();
    match (fields.next(), fields.next()) {
        (Some(pid), Some(start)) => start_time(pid).is_some_and(|s| s == start),
        // Unreadable: assume it is alive rather than destroy someone else's lab.
        _ => true,
    }
}
