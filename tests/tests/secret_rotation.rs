//! Rolling a new cluster secret through a running cluster (issue 17, part 2), end to end: three
//! hosts, a TCP stream and a ping between pods on different hosts through the three steps of
//! docs/operations.md ("Rotating the secret"), a secret file that fails to parse, and a host
//! that kept only the retired secret.
//!
//! Needs root (network namespaces) and the `weft` binary (`scripts/test.sh`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use weft_api::status::Report;
use weft_lab::testbed::{tcp_transfer_paced, weft_bin, Cluster};
use weft_lab::{poll_until, Host, Signal};

const OLD: &str = "the old weft test secret, long enough";
const NEW: &str = "the new weft test secret, long enough";

/// Replaces a secret file the way an operator should: a new file renamed over the old one, so
/// that the router never reads half of it.
fn write_secrets(path: &Path, lines: &[&str]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!("# weft cluster secrets\n{}\n", lines.join("\n")),
    )
    .unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Polls until every host's status satisfies `f` (20 s at most).
fn on_every_host(c: &Cluster, hs: &[Host], what: &str, f: impl Fn(&Report) -> bool) {
    let ok = poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
        hs.iter()
            .all(|h| c.status(h).is_ok_and(|r| f(&r)))
            .then_some(())
    });
    if ok.is_none() {
        let states: Vec<String> = hs
            .iter()
            .map(|h| {
                format!(
                    "{}: {:?} {:?}",
                    h.name,
                    c.status(h).ok().map(|r| r.secrets),
                    c.status(h).ok().map(|r| r.connections)
                )
            })
            .collect();
        panic!("not every host reached: {what}\n{}", states.join("\n"));
    }
}

fn accepted(r: &Report) -> Vec<String> {
    r.secrets
        .as_ref()
        .map(|s| s.accepted.clone())
        .unwrap_or_default()
}

/// Every connection and every peer of the report is on the secret `fp`.
fn all_on(r: &Report, fp: &str) -> bool {
    r.connections.len() == 2
        && r.connections
            .iter()
            .all(|c| c.secret.as_deref() == Some(fp))
        && r.peers.iter().all(|p| p.secret.as_deref() == Some(fp))
}

#[test]
fn a_new_secret_rolls_through_a_running_cluster_without_losing_traffic() {
    assert!(
        weft_lab::require_root(),
        "these tests need root and iproute2"
    );
    let mut c = Cluster::new("wsr", weft_bin().unwrap()).unwrap();
    let files: Vec<PathBuf> = (1..=3)
        .map(|i| c.lab.dir().join(format!("secret-h{i}")))
        .collect();
    for f in &files {
        write_secrets(f, &[OLD]);
    }
    let args: Vec<Vec<String>> = files
        .iter()
        .map(|f| vec!["--secret-file".into(), f.display().to_string()])
        .collect();
    let args: Vec<Vec<&str>> = args
        .iter()
        .map(|a| a.iter().map(String::as_str).collect())
        .collect();
    let args: Vec<&[&str]> = args.iter().map(Vec::as_slice).collect();
    let hs = c.full_mesh(3, &args).unwrap();
    let p1 = c
        .add_pod(&hs[0], "p1", Ipv4Addr::new(10, 32, 1, 1))
        .unwrap();
    let p2 = c
        .add_pod(&hs[1], "p2", Ipv4Addr::new(10, 32, 2, 1))
        .unwrap();
    let p3 = c
        .add_pod(&hs[2], "p3", Ipv4Addr::new(10, 32, 3, 1))
        .unwrap();
    assert!(weft_lab::testbed::wait_ping(
        &c.lab,
        &p1,
        p3.ip,
        Duration::from_secs(10)
    ));
    let old_fp = accepted(&c.status(&hs[0]).unwrap())[0].clone();
    on_every_host(&c, &hs, "all on the old secret", |r| all_on(r, &old_fp));

    // The stream (p1 -> p2) runs through all three steps; pings (p1 -> p3, every 100 ms) are
    // counted step by step.
    let (from, to) = (p1.clone(), p2.clone());
    let stream = std::thread::spawn(move || {
        tcp_transfer_paced(
            &from,
            &to,
            24 << 20,
            Duration::from_secs(20),
            Duration::from_secs(60),
        )
    });
    let refused_before: Vec<u64> = hs.iter().map(|h| refused(&c.status(h).unwrap())).collect();
    let mut lost = Vec::new();

    // Step 1: the new secret second everywhere. Nothing reconnects.
    let ping = Pinger::start(&p1.ns, p3.ip);
    for f in &files {
        write_secrets(f, &[OLD, NEW]);
    }
    on_every_host(&c, &hs, "step 1: both secrets accepted", |r| {
        accepted(r).len() == 2
    });
    lost.push(ping.stop());
    let new_fp = accepted(&c.status(&hs[0]).unwrap())[1].clone();
    assert_ne!(new_fp, old_fp);
    for h in &hs {
        assert!(
            all_on(&c.status(h).unwrap(), &old_fp),
            "step 1 changes no connection"
        );
    }
    // Step 2: the new secret first everywhere: every connection is re-handshaken onto it.
    let ping = Pinger::start(&p1.ns, p3.ip);
    for f in &files {
        write_secrets(f, &[NEW, OLD]);
    }
    on_every_host(&c, &hs, "step 2: every connection on the new secret", |r| {
        accepted(r).first() == Some(&new_fp) && all_on(r, &new_fp)
    });
    lost.push(ping.stop());
    // Step 3: the old secret goes; it is listed as retired.
    let ping = Pinger::start(&p1.ns, p3.ip);
    for f in &files {
        write_secrets(f, &[NEW]);
    }
    on_every_host(&c, &hs, "step 3: only the new secret", |r| {
        accepted(r) == [new_fp.clone()]
            && r.secrets
                .as_ref()
                .is_some_and(|s| s.retired == [old_fp.clone()])
            && all_on(r, &new_fp)
    });
    lost.push(ping.stop());

    let t = stream.join().unwrap().unwrap();
    assert!(t.intact(), "the stream survived the rotation: {t:?}");
    let refused_during: Vec<u64> = hs
        .iter()
        .zip(&refused_before)
        .map(|(h, before)| refused(&c.status(h).unwrap()) - before)
        .collect();
    eprintln!(
        "rotation: pings sent and lost per step {lost:?}; datagrams refused per host {refused_during:?}"
    );
    // The data session is handed over to each new connection's keys, both ends able to open
    // what the other sends at every moment (docs/decisions.md, "Rotating the secret"): no ping
    // is lost to a switch; one is allowed per step for the underlay's own hazards.
    for (step, (sent, missing)) in lost.iter().enumerate() {
        assert!(
            *sent >= 5 && *missing <= 1,
            "step {}: {missing} of {sent} pings lost",
            step + 1
        );
    }
    for (h, n) in hs.iter().zip(&refused_during) {
        let r = c.status(h).unwrap();
        assert!(
            r.peers.iter().all(|p| p.state == "established"),
            "{:?}",
            r.peers
        );
        // Nothing is sealed under a key the receiver does not hold (0 in every run so far).
        assert!(
            *n == 0,
            "{}: datagrams refused during the rotation: {:?}",
            h.name,
            r.drops
        );
    }

    // A file that does not parse changes nothing and says why.
    write_secrets(&files[1], &[NEW, "too short"]);
    let r = poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let r = c.status(&hs[1]).ok()?;
        r.secrets.as_ref()?.file_error.is_some().then_some(r)
    })
    .expect("h2 reports the bad secret file");
    let s = r.secrets.unwrap();
    assert!(s.file_error.as_deref().unwrap().contains("line 3"), "{s:?}");
    assert_eq!(s.accepted, std::slice::from_ref(&new_fp));
    assert_eq!(r.connections.len(), 2);

    // A host that kept only the old secret cannot rejoin, and both sides say why.
    c.stop_router(&hs[2], Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();
    write_secrets(&files[2], &[OLD]);
    c.restart_router(&hs[2]).unwrap();
    let err = poll_until(Duration::from_secs(15), Duration::from_millis(100), || {
        c.status(&hs[2])
            .ok()?
            .targets
            .iter()
            .find_map(|t| match &t.state {
                weft_api::status::TargetState::Retrying { last_error, .. } => {
                    Some(last_error.clone())
                }
                _ => None,
            })
    })
    .expect("h3 reports its refusal");
    assert!(
        err.contains("does not accept our secret") && err.contains(&old_fp),
        "{err}"
    );
    let refused = poll_until(Duration::from_secs(15), Duration::from_millis(100), || {
        let r = c.status(&hs[0]).ok()?;
        r.refused
            .iter()
            .find(|x| x.reason.contains("retired secret"))
            .cloned()
    })
    .expect("h1 says h3 offered a retired secret");
    assert!(
        refused.reason.contains(&old_fp) && refused.reason.contains(&new_fp),
        "{refused:?}"
    );
    assert!(c.status(&hs[2]).unwrap().peers.is_empty(), "h3 stays out");
}

/// Datagrams a host refused for their key: sealed under a key it does not hold (or no longer
/// holds), or below the replay window.
fn refused(r: &Report) -> u64 {
    ["crypto_unknown_key", "crypto_auth_failed", "crypto_too_old"]
        .iter()
        .map(|k| r.drops.get(*k).copied().unwrap_or(0))
        .sum()
}

/// A ping every 100 ms from a pod's namespace, until stopped (killed if the test fails first).
struct Pinger(Option<std::process::Child>);

impl Pinger {
    fn start(ns: &str, ip: Ipv4Addr) -> Pinger {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "ping", "-n", "-i", "0.1", "-W", "1"])
            .arg(ip.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Pinger(Some(child))
    }

    /// Stops it (SIGINT to its PID: `ip netns exec` execs ping) a second after the last ping
    /// that counts, and returns how many pings count and how many of them were lost: the
    /// sequence numbers missing below the highest answered one, so that the pings in flight
    /// when it stops do not count.
    fn stop(mut self) -> (u32, u32) {
        std::thread::sleep(Duration::from_secs(1));
        let child = self.0.take().unwrap();
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let seqs: std::collections::BTreeSet<u32> = text
            .lines()
            .filter(|l| l.contains("bytes from"))
            .filter_map(|l| {
                l.split("icmp_seq=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        let highest = seqs.last().copied().unwrap_or(0);
        let missing = (1..=highest).filter(|s| !seqs.contains(s)).count() as u32;
        (highest, missing)
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
