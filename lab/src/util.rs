//! Helpers of the lab: running code inside a namespace, polling with a deadline, names and MAC
//! addresses, and the `ip` commands the lab runs (with their command lines in errors).

use std::fs::File;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::cleanup::*;
use crate::lab::*;
use anyhow::{anyhow, bail, ensure, Context as _, Result};
use nix::sched::{setns, CloneFlags};

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

/// Names: ASCII letters, digits, `-` and `_`, not starting with `-`.
pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
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

pub(crate) fn check_ifname(name: &str) -> Result<()> {
    ensure!(
        !name.is_empty() && name.len() <= MAX_IFNAME_LEN,
        "interface name {name:?} is {} characters long; Linux allows at most {MAX_IFNAME_LEN}",
        name.len()
    );
    Ok(())
}

/// The command line of `cmd`, for error messages.
pub(crate) fn command_line(cmd: &Command) -> String {
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
pub(crate) fn run(cmd: &mut Command) -> Result<Output> {
    let line = command_line(cmd);
    cmd.output().with_context(|| format!("running `{line}`"))
}

/// Runs `cmd` to completion; a non-zero exit is an error carrying the command line and stderr.
pub(crate) fn run_ok(cmd: &mut Command) -> Result<Output> {
    let line = command_line(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{line}`"))?;
    check_output(&line, &out)?;
    Ok(out)
}

pub(crate) fn check_output(line: &str, out: &Output) -> Result<()> {
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
pub(crate) fn ip(args: &[&str]) -> Result<String> {
    let out = run_ok(Command::new("ip").args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn link_exists(ns: &str, ifname: &str) -> Result<bool> {
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
pub(crate) fn link_json(ns: &str, ifname: &str, stats: bool) -> Result<serde_json::Value> {
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

pub(crate) fn read_mac(ns: &str, ifname: &str) -> Result<[u8; 6]> {
    let v = link_json(ns, ifname, false)?;
    let s = v
        .get("address")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| anyhow!("no address for {ifname} in {ns}: {v}"))?;
    parse_mac(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

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
