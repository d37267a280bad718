//! Tests of the network-namespace lab itself (`weft_lab`).
//!
//! They need root and iproute2; without them each test prints a note and passes. Every lab they
//! build is torn down on drop, and each test checks that nothing with its prefix is left behind.

use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use weft_lab::{self as lab, Lab, PodSpec, Signal};

/// True if the lab can run here; otherwise prints why the test is skipped.
fn root(test: &str) -> bool {
    if lab::require_root() {
        true
    } else {
        eprintln!("skipping {test}: needs root and the `ip` command");
        false
    }
}

/// Namespaces whose names carry `prefix`.
fn namespaces_with(prefix: &str) -> Vec<String> {
    lab::list_netns()
        .expect("ip netns list")
        .into_iter()
        .filter(|ns| ns.starts_with(prefix))
        .collect()
}

/// Asserts that a dropped lab left neither namespaces nor its directory.
fn assert_gone(prefix: &str, dir: &Path) {
    assert_eq!(namespaces_with(prefix), Vec::<String>::new());
    assert!(!dir.exists(), "{} still exists", dir.display());
}

/// Whether `pid` is a live (not zombie) `sleep`; false once it died, even if the PID has been
/// recycled since.
fn sleep_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "<pid> (<comm>) <state> ..."
    let comm_ok = stat.contains("(sleep)");
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    comm_ok && state != Some("Z")
}

/// Pings until answered, for at most 10 s (ARP and bridge ports settle in well under that,
/// unless the machine is loaded).
fn pings(lab: &Lab, ns: &str, to: Ipv4Addr) -> bool {
    lab::poll_until(Duration::from_secs(10), Duration::ZERO, || {
        lab.ping(ns, to).unwrap().then_some(())
    })
    .is_some()
}

/// Two hosts; two pods on host 1.
fn cluster(tag: &str) -> (Lab, lab::Host, lab::Host, lab::Pod, lab::Pod) {
    let mut lab = Lab::new(tag).unwrap();
    let h1 = lab.add_host("h1").unwrap();
    let h2 = lab.add_host("h2").unwrap();
    let p1 = lab
        .add_pod(
            &h1,
            "p1",
            PodSpec::new(Ipv4Addr::new(10, 32, 1, 1), 12, 1500).with_mac([2, 0, 0, 0, 1, 1]),
        )
        .unwrap();
    let p2 = lab
        .add_pod(
            &h1,
            "p2",
            PodSpec::new(Ipv4Addr::new(10, 32, 1, 2), 12, 1500),
        )
        .unwrap();
    (lab, h1, h2, p1, p2)
}

#[test]
fn hosts_and_pods_can_ping() {
    if !root("hosts_and_pods_can_ping") {
        return;
    }
    let (lab, h1, h2, p1, p2) = cluster("wtping");
    let (prefix, dir) = (lab.prefix().to_owned(), lab.dir().to_owned());
    assert!(prefix.starts_with("wtping") && prefix.len() == "wtping".len() + 6);
    assert_eq!(dir, PathBuf::from(format!("/tmp/weft-lab-{prefix}")));
    assert!(dir.is_dir());
    assert_eq!(h1.ns, format!("{prefix}-h1"));
    assert_eq!((h1.index, h2.index), (1, 2));
    assert_eq!(h1.underlay_ip, Ipv4Addr::new(10, 200, 0, 11));
    assert_eq!(h2.underlay_ip, Ipv4Addr::new(10, 200, 0, 12));
    assert_eq!(p1.ns, format!("{prefix}-h1-p1"));
    assert_eq!(p1.host_if, "vh1p1");
    assert_eq!(p1.mac, [2, 0, 0, 0, 1, 1]);
    assert_eq!(lab.mac(&p2.ns, "eth0").unwrap(), p2.mac);
    assert_eq!(namespaces_with(&prefix).len(), 5);

    // The pods' host ends are ports of the bridge `weft` on host 1.
    let ports = lab
        .exec_ok(&h1.ns, &["ip", "-o", "link", "show", "master", "weft"])
        .unwrap();
    assert!(
        ports.contains("vh1p1@") && ports.contains("vh1p2@"),
        "{ports}"
    );

    assert!(pings(&lab, &h1.ns, h2.underlay_ip), "h1 -> h2 underlay");
    assert!(pings(&lab, &h2.ns, h1.underlay_ip), "h2 -> h1 underlay");
    let before = lab.link_stats(&p2.ns, "eth0").unwrap();
    assert!(pings(&lab, &p1.ns, p2.ip), "p1 -> p2 on h1's bridge");
    assert!(pings(&lab, &p2.ns, p1.ip), "p2 -> p1 on h1's bridge");
    let after = lab.link_stats(&p2.ns, "eth0").unwrap();
    assert!(
        after.rx_packets >= before.rx_packets + 2,
        "{before:?} -> {after:?}"
    );
    assert!(
        after.tx_packets >= before.tx_packets + 2,
        "{before:?} -> {after:?}"
    );
    assert!(after.rx_bytes > before.rx_bytes);

    drop(lab);
    assert_gone(&prefix, &dir);
}

#[test]
fn failures_are_explained() {
    if !root("failures_are_explained") {
        return;
    }
    let mut lab = Lab::new("wterr").unwrap();
    let (prefix, dir) = (lab.prefix().to_owned(), lab.dir().to_owned());
    let h1 = lab.add_host("h1").unwrap();

    let err = format!("{:#}", lab.add_host("host-name-too-long").unwrap_err());
    assert!(err.contains("at most 15"), "{err}");
    let err = format!("{:#}", lab.add_host("h1").unwrap_err());
    assert!(err.contains("already has a host"), "{err}");
    assert!(lab.add_host("ul").is_err());
    assert!(lab.add_host("h/1").is_err());

    // A failing command reports its command line and stderr.
    let err = format!(
        "{:#}",
        lab.exec_ok(&h1.ns, &["ip", "link", "show", "dev", "nope0"])
            .unwrap_err()
    );
    assert!(err.contains("ip link show dev nope0"), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    // exec itself does not fail on a non-zero exit.
    let out = lab.exec(&h1.ns, &["false"]).unwrap();
    assert!(!out.status.success());
    // Only the lab's own namespaces are reachable.
    assert!(lab.exec("some-other-ns", &["true"]).is_err());

    // Pod host ends that collide after truncation to 15 characters are refused.
    let spec = PodSpec::new(Ipv4Addr::new(10, 32, 0, 1), 12, 1500);
    let pod = lab.add_pod(&h1, "pod-number-1a", spec.clone()).unwrap();
    assert_eq!(pod.host_if, "vh1pod-number-1");
    let err = format!("{:#}", lab.add_pod(&h1, "pod-number-1b", spec).unwrap_err());
    assert!(err.contains("vh1pod-number-1"), "{err}");

    drop(lab);
    assert_gone(&prefix, &dir);
}

#[test]
fn remove_pod_deletes_its_namespace_and_veth() {
    if !root("remove_pod_deletes_its_namespace_and_veth") {
        return;
    }
    let (mut lab, h1, _h2, p1, p2) = cluster("wtrm");
    lab.remove_pod(&p1).unwrap();
    assert!(!lab::list_netns().unwrap().contains(&p1.ns));
    let links = lab.exec_ok(&h1.ns, &["ip", "-o", "link"]).unwrap();
    assert!(!links.contains("vh1p1@"), "{links}");
    assert!(links.contains("vh1p2@"), "{links}");
    assert!(lab.remove_pod(&p1).is_err());
    assert_eq!(lab.pods(), std::slice::from_ref(&p2));
    // The name is free again at once.
    let again = lab
        .add_pod(&h1, "p1", PodSpec::new(p1.ip, 12, 1500))
        .unwrap();
    assert!(pings(&lab, &again.ns, p2.ip));
    assert_eq!(lab.pods().len(), 2);
}

#[test]
fn in_netns_runs_in_the_namespace() {
    if !root("in_netns_runs_in_the_namespace") {
        return;
    }
    let mut lab = Lab::new("wtin").unwrap();
    let h1 = lab.add_host("h1").unwrap();
    let ours = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let ip = h1.underlay_ip;
    let (theirs, bound) = lab::in_netns(&h1.ns, move || {
        let link = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        // The host's underlay address exists only inside its namespace.
        let bound = std::net::UdpSocket::bind((ip, 0)).is_ok();
        (link, bound)
    })
    .unwrap();
    assert_ne!(ours, theirs);
    assert!(bound, "could not bind {ip} inside {}", h1.ns);
    // The caller's thread is untouched.
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
        ours
    );
    assert!(std::net::UdpSocket::bind((ip, 0)).is_err());
    // The same namespace, entered twice, is the same namespace.
    let again = lab::in_netns(&h1.ns, || {
        std::fs::read_link("/proc/thread-self/ns/net").unwrap()
    })
    .unwrap();
    assert_eq!(again, theirs);
    assert!(lab::in_netns("weft-no-such-namespace", || ()).is_err());
}

#[test]
fn spawned_processes_are_killed_and_reaped() {
    if !root("spawned_processes_are_killed_and_reaped") {
        return;
    }
    let mut lab = Lab::new("wtproc").unwrap();
    let (prefix, dir) = (lab.prefix().to_owned(), lab.dir().to_owned());
    let h1 = lab.add_host("h1").unwrap();

    let sleeper = lab
        .spawn(&h1.ns, Path::new("sleep"), &["60"], "sleep")
        .unwrap();
    let pid = lab.pid(sleeper).unwrap();
    assert!(lab.is_running(sleeper));
    // The PID is the program's own, and it runs in the host's namespace.
    // (`ip netns exec` needs a moment before it execs the program.)
    let comm = lab::poll_until(Duration::from_secs(5), Duration::from_millis(5), || {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        (comm == "sleep\n").then_some(comm)
    });
    assert!(comm.is_some(), "{pid} never became `sleep`");
    let host_ns = lab::in_netns(&h1.ns, || {
        std::fs::read_link("/proc/thread-self/ns/net").unwrap()
    })
    .unwrap();
    let proc_ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_eq!(proc_ns, host_ns);

    let started = Instant::now();
    lab.kill(sleeper, Signal::SIGKILL).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!lab.is_running(sleeper));
    assert_eq!(lab.pid(sleeper), None, "reaped, so no PID any more");
    let status = lab
        .wait_exit(sleeper, Duration::ZERO)
        .unwrap()
        .expect("exited");
    assert_eq!(status.signal(), Some(9));
    assert!(lab.kill(sleeper, Signal::SIGTERM).is_err());

    // SIGTERM, then wait_exit; output goes to the log.
    let script = [
        "-c",
        "echo started; echo oops >&2; trap 'kill $!; echo bye; exit 3' TERM; sleep 60 & wait",
    ];
    let sh = lab.spawn(&h1.ns, Path::new("sh"), &script, "sh").unwrap();
    assert!(
        lab::poll_until(Duration::from_secs(5), Duration::from_millis(10), || {
            lab.log("sh").contains("oops").then_some(())
        })
        .is_some()
    );
    assert_eq!(lab.wait_exit(sh, Duration::from_millis(50)).unwrap(), None);
    lab.kill(sh, Signal::SIGTERM).unwrap();
    let status = lab.wait_exit(sh, Duration::from_secs(5)).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(3));
    assert_eq!(lab.log("sh"), "started\noops\nbye\n");
    assert_eq!(lab.log("no-such-log"), "");

    // A process still running when the lab is dropped is killed and reaped, and so is a
    // grandchild (a shell's background job).
    let left = lab
        .spawn(&h1.ns, Path::new("sleep"), &["60"], "left")
        .unwrap();
    let left_pid = lab.pid(left).unwrap();
    let pid_file = lab.dir().join("grandchild.pid");
    let script = format!("sleep 60 & echo $! > {}; wait", pid_file.display());
    lab.spawn(&h1.ns, Path::new("sh"), &["-c", &script], "parent")
        .unwrap();
    let grandchild = lab::poll_until(Duration::from_secs(5), Duration::from_millis(5), || {
        let text = std::fs::read_to_string(&pid_file).ok()?;
        text.trim().parse::<u32>().ok()
    })
    .expect("the shell wrote its job's PID");
    assert!(
        lab::poll_until(Duration::from_secs(5), Duration::from_millis(5), || {
            sleep_alive(grandchild).then_some(())
        })
        .is_some()
    );
    drop(lab);
    assert!(!sleep_alive(left_pid), "sleep {left_pid} survived the lab");
    assert!(
        !sleep_alive(grandchild),
        "sleep {grandchild} survived the lab"
    );
    assert_gone(&prefix, &dir);
}

#[test]
fn a_lab_dropped_during_a_panic_cleans_up() {
    if !root("a_lab_dropped_during_a_panic_cleans_up") {
        return;
    }
    let mut seen: Option<(String, PathBuf, u32)> = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut lab = Lab::new("wtpanic").unwrap();
        let h1 = lab.add_host("h1").unwrap();
        lab.add_host("h2").unwrap();
        lab.add_pod(
            &h1,
            "p1",
            PodSpec::new(Ipv4Addr::new(10, 32, 0, 1), 12, 1500),
        )
        .unwrap();
        let id = lab
            .spawn(&h1.ns, Path::new("sleep"), &["60"], "sleep")
            .unwrap();
        seen = Some((
            lab.prefix().to_owned(),
            lab.dir().to_owned(),
            lab.pid(id).unwrap(),
        ));
        assert_eq!(namespaces_with(lab.prefix()).len(), 4);
        panic!("deliberate panic with a live lab");
    }));
    assert!(result.is_err());
    let (prefix, dir, pid) = seen.expect("the lab was built");
    assert_gone(&prefix, &dir);
    assert!(!sleep_alive(pid), "the sleep {pid} survived the panic");
}

#[test]
fn nft_rules_apply_inside_a_host() {
    if !root("nft_rules_apply_inside_a_host") {
        return;
    }
    let (lab, h1, h2, _p1, _p2) = cluster("wtnft");
    assert!(pings(&lab, &h1.ns, h2.underlay_ip));
    lab.nft(
        &h2.ns,
        "table inet weftlab {\n\
         \tchain input {\n\
         \t\ttype filter hook input priority 0; policy accept;\n\
         \t\tip protocol icmp drop\n\
         \t}\n\
         }\n",
    )
    .unwrap();
    assert!(
        !lab.ping(&h1.ns, h2.underlay_ip).unwrap(),
        "ICMP is dropped"
    );
    let rules = lab.exec_ok(&h2.ns, &["nft", "list", "ruleset"]).unwrap();
    assert!(rules.contains("weftlab"), "{rules}");
    // The rules live in h2's namespace only.
    let h1_rules = lab.exec_ok(&h1.ns, &["nft", "list", "ruleset"]).unwrap();
    assert!(!h1_rules.contains("weftlab"), "{h1_rules}");
    // A bad ruleset is an error that says why.
    let err = format!("{:#}", lab.nft(&h2.ns, "this is not nft\n").unwrap_err());
    assert!(err.contains("nft -f -"), "{err}");
}

#[test]
fn cleanup_stale_removes_labs_of_dead_processes() {
    if !root("cleanup_stale_removes_labs_of_dead_processes") {
        return;
    }
    /// Removes the fake leftovers should the test fail half-way.
    struct Leftovers(String, PathBuf);
    impl Drop for Leftovers {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }

    // A live lab of this process must survive.
    let mut live = Lab::new("wtlive").unwrap();
    let h1 = live.add_host("h1").unwrap();

    // Fake the leftovers of a SIGKILLed process: a directory whose owner is dead, a namespace.
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let prefix = format!("wtstale{:06x}", std::process::id() & 0xff_ffff);
    let dir = std::env::temp_dir().join(format!("weft-lab-{prefix}"));
    let ns = format!("{prefix}-h1");
    let _guard = Leftovers(ns.clone(), dir.clone());
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("owner"), format!("{dead_pid} 1\n")).unwrap();
    let out = Command::new("ip")
        .args(["netns", "add", &ns])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let cleaned = lab::cleanup_stale().unwrap();
    assert!(cleaned.contains(&prefix), "{cleaned:?}");
    assert!(!cleaned.iter().any(|p| p == live.prefix()));
    assert_gone(&prefix, &dir);
    assert!(lab::list_netns().unwrap().contains(&h1.ns));
    assert!(live.dir().is_dir());
}

/// Not a test on its own: run by `signals_clean_up_every_lab` in a child process (the env var
/// selects it), it builds a lab, reports it and waits to be killed by a signal.
#[test]
fn signal_cleanup_helper() {
    if std::env::var_os("WEFT_LAB_SIGNAL_HELPER").is_none() {
        return;
    }
    lab::install_signal_cleanup();
    lab::install_signal_cleanup(); // idempotent
    let mut lab = Lab::new("wtsig").unwrap();
    let h1 = lab.add_host("h1").unwrap();
    lab.add_pod(
        &h1,
        "p1",
        PodSpec::new(Ipv4Addr::new(10, 32, 0, 1), 12, 1500),
    )
    .unwrap();
    let id = lab
        .spawn(&h1.ns, Path::new("sleep"), &["60"], "sleep")
        .unwrap();
    println!(
        "READY {} {} {}",
        lab.prefix(),
        lab.dir().display(),
        lab.pid(id).unwrap()
    );
    // Bounded: the parent signals at once, and gives up long before this.
    std::thread::sleep(Duration::from_secs(30));
    panic!("no signal arrived");
}

#[test]
fn signals_clean_up_every_lab() {
    use std::io::BufRead as _;
    /// Kills the helper (our own child, by PID) should this test fail half-way.
    struct Helper(std::process::Child);
    impl Drop for Helper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    if !root("signals_clean_up_every_lab") {
        return;
    }
    let mut helper = Helper(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "signal_cleanup_helper", "--nocapture"])
            .env("WEFT_LAB_SIGNAL_HELPER", "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = helper.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("READY ") {
                let _ = tx.send(rest.to_owned());
            }
        }
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the helper reports its lab");
    let fields: Vec<&str> = ready.split_whitespace().collect();
    let [prefix, dir, sleep_pid] = fields[..] else {
        panic!("bad report {ready:?}")
    };
    let sleep_pid: u32 = sleep_pid.parse().unwrap();
    assert_eq!(namespaces_with(prefix).len(), 3);
    assert!(
        lab::poll_until(Duration::from_secs(5), Duration::from_millis(5), || {
            sleep_alive(sleep_pid).then_some(())
        })
        .is_some()
    );

    let status = Command::new("kill")
        .args(["-TERM", &helper.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = lab::poll_until(Duration::from_secs(10), Duration::from_millis(10), || {
        helper.0.try_wait().unwrap()
    })
    .expect("the helper exits on SIGTERM");
    assert_eq!(exited.code(), Some(130));
    assert_gone(prefix, Path::new(dir));
    assert!(!sleep_alive(sleep_pid), "sleep {sleep_pid} survived");
}
