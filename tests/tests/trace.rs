//! `weft trace` end to end: three hosts (h1 and h2 on the kernel fast path, h3 with
//! `--no-fastpath` so that h1 reaches it through the sleeve), pods attached through `cnitool`
//! with identities, a `--policy-dir` with a policy that isolates one pod. The traces must name
//! the path and the policy, and the path they claim must be the one the packets take: the
//! fast path's VXLAN counters, the sleeve's per-peer counters, or the relay's relayed datagrams
//! move when pinging along it.
//!
//! `weft trace --live` is checked on each of those paths (and the encrypted sleeve): the hops
//! the hosts report seeing the marked probe at must be the path's (kernel hooks between pod
//! ports and the VXLAN device or the TAP port, the sleeve's seal and delivery, the relay).
//!
//! Needs root, `cnitool`, `nft` and the release `weft` and `weft-cni` binaries.

use std::net::Ipv4Addr;
use std::time::Duration;
use weft_api::trace::{HopKind, LiveTrace, TraceAnswer};
use weft_lab::testbed::{ping, weft_bin, Cluster};
use weft_lab::{poll_until, Host, Signal};
use weft_tests::cni::{add_pod_with_identity, CniPod};
use weft_tests::guarded::{cni_cluster, POD_CIDR};

const OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Namespace
metadata: {name: y}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: x, labels: {app: c}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: isolate-c, namespace: x}
spec:
  podSelector: {matchLabels: {app: c}}
  ingress: []
"#;

/// `weft trace` on `host` with `args`, as JSON.
fn trace(c: &Cluster, host: &Host, args: &[&str]) -> TraceAnswer {
    let out = trace_cmd(c, host, args, true);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn trace_cmd(c: &Cluster, host: &Host, args: &[&str], json: bool) -> String {
    let bin = weft_bin().unwrap();
    let dir = c.state_dir(host);
    let mut cmd = vec![bin.to_str().unwrap(), "trace"];
    cmd.extend_from_slice(args);
    cmd.extend_from_slice(&["--state-dir", dir.to_str().unwrap()]);
    if json {
        cmd.push("--json");
    }
    c.lab.exec_ok(&host.ns, &cmd).unwrap()
}

/// `weft trace --live` on `host`: the static answer with the probe's hops.
fn live(c: &Cluster, host: &Host, args: &[&str]) -> (TraceAnswer, LiveTrace) {
    let mut a = args.to_vec();
    a.push("--live");
    let t = trace(c, host, &a);
    let l = t
        .live
        .clone()
        .unwrap_or_else(|| panic!("no live part: {t:#?}"));
    eprintln!("{}", weft_api::trace::render(&t));
    (t, l)
}

/// The (host, point, direction) of each live hop whose detail contains `needle` ("" for all).
fn seen<'a>(l: &'a LiveTrace, needle: &str) -> Vec<(&'a str, &'a str, &'a str)> {
    l.hops
        .iter()
        .filter(|h| h.detail.contains(needle))
        .map(|h| (h.host.as_str(), h.point.as_str(), h.direction.as_str()))
        .collect()
}

/// Whether `l` has a hop on `host` at `point` in `direction` whose detail contains `needle`.
fn has(l: &LiveTrace, host: &str, point: &str, direction: &str, needle: &str) -> bool {
    l.hops.iter().any(|h| {
        h.host == host && h.point == point && h.direction == direction && h.detail.contains(needle)
    })
}

fn kinds(t: &TraceAnswer) -> Vec<HopKind> {
    t.hops.iter().map(|h| h.kind).collect()
}

/// Pings `to` from `from` until one answer comes back (10 s at most), then `n` more.
fn pings(c: &Cluster, from: &CniPod, to: Ipv4Addr, n: u32) {
    let ok = poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
        ping(&c.lab, &from.ns, to, 1)
            .ok()
            .filter(|p| p.received == 1)
    });
    assert!(ok.is_some(), "{} cannot reach {to}", from.ns);
    let p = ping(&c.lab, &from.ns, to, n).unwrap();
    assert!(p.received >= n - 1, "{p:?}");
}

/// h1's VXLAN device's sent packets and its sleeve frames sent to `peer`.
fn counters(c: &Cluster, h1: &Host, peer: &str) -> (u64, u64) {
    let r = c.status(h1).unwrap();
    let p = r.peers.iter().find(|p| p.nickname == peer).unwrap();
    (r.fastpath.tx_packets, p.tx_frames)
}

#[test]
fn traces_name_the_path_and_the_policy_the_packets_take() {
    let dir = std::env::temp_dir().join(format!("weft-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("objects.yaml"), OBJECTS).unwrap();
    let d = dir.to_string_lossy().into_owned();
    let (mut c, hosts, cni, nets) = cni_cluster("trc", 3, &["--policy-dir", &d]);
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    // h3 without the fast path: h1 reaches it through the sleeve.
    c.stop_router(h3, Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();
    c.start_router(
        h3,
        &[h1, h2],
        &[
            "--pod-cidr",
            POD_CIDR,
            "--ipam-init-peers",
            "3",
            "--policy-dir",
            &d,
            "--no-fastpath",
        ],
    )
    .unwrap();
    let ready = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        c.ipam(h3).ok().filter(|r| r.ready)
    });
    assert!(ready.is_some(), "{}", c.router_log(h3));
    c.wait_path(h1, &h2.name, "fast path", Duration::from_secs(30))
        .unwrap();
    c.wait_path(h1, &h3.name, "direct", Duration::from_secs(30))
        .unwrap();

    let a = add_pod_with_identity(&mut c, &cni, h1, &nets[0], "x", "a");
    let cc = add_pod_with_identity(&mut c, &cni, h1, &nets[0], "x", "c");
    let b = add_pod_with_identity(&mut c, &cni, h2, &nets[1], "y", "b");
    let d3 = add_pod_with_identity(&mut c, &cni, h3, &nets[2], "y", "d");

    // Wait until h1 knows every pod from the mesh and its policy inputs are in.
    let known = poll_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let on =
            |pod: &str, host: &Host| trace(&c, h1, &["x/a", pod]).to.host_nickname == host.name;
        (on("y/b", h2) && on("y/d", h3)).then_some(())
    });
    assert!(
        known.is_some(),
        "h1 never learned y/b and y/d from the mesh"
    );

    // Two pods on one host: the bridge; x/c isolated for ingress by x/isolate-c.
    let t = trace(&c, h1, &["x/a", "x/c", "--port", "80"]);
    assert_eq!(
        kinds(&t),
        [HopKind::Egress, HopKind::Bridge, HopKind::Ingress],
        "{t:#?}"
    );
    assert_eq!(t.outcome, "denied by policy at ingress");
    assert_eq!(t.hops[2].policies, ["x/isolate-c"]);
    assert!(t.from.local && t.to.local);
    // ... and the kernel agrees: a cannot reach c.
    let denied = poll_until(Duration::from_secs(10), Duration::from_millis(200), || {
        ping(&c.lab, &a.ns, cc.ip, 1)
            .is_ok_and(|p| p.received == 0)
            .then_some(())
    });
    assert!(denied.is_some(), "x/a still reaches x/c");
    let text = trace_cmd(&c, h1, &["x/a", "x/c"], false);
    eprintln!("{text}");
    assert!(
        text.contains("bridge") && text.contains("x/isolate-c"),
        "{text}"
    );

    // Pods on two hosts on the fast path: the VXLAN device carries the pings.
    let t = trace(&c, h1, &["x/a", "y/b"]);
    eprintln!("{}", trace_cmd(&c, h1, &["x/a", "y/b"], false));
    assert_eq!(
        kinds(&t),
        [
            HopKind::Egress,
            HopKind::FastPath,
            HopKind::Ingress,
            HopKind::Deliver
        ],
        "{t:#?}"
    );
    assert_eq!(t.hops[1].to.as_deref(), Some(h2.name.as_str()));
    assert_eq!(t.hops[1].encryption.as_deref(), Some("none"));
    assert_eq!(t.outcome, "delivered");
    assert_eq!(t.to.addr, Some(b.ip.to_string()));
    let (vx0, sl0) = counters(&c, h1, &h2.name);
    pings(&c, &a, b.ip, 10);
    // The status copies the VXLAN device's counters about once a second, later under load.
    let moved = poll_until(Duration::from_secs(15), Duration::from_millis(200), || {
        let (vx, sl) = counters(&c, h1, &h2.name);
        (vx >= vx0 + 10).then_some(sl - sl0)
    });
    let sleeve_frames = moved.expect("the VXLAN device's tx counter moves");
    assert!(
        sleeve_frames < 5,
        "{sleeve_frames} frames went through the sleeve"
    );

    // To h3 (no fast path there): the sleeve, with the reason, in clear.
    let t = trace(&c, h1, &["x/a", &d3.ip.to_string()]);
    eprintln!(
        "{}",
        trace_cmd(&c, h1, &["x/a", &d3.ip.to_string(), "--port", "443"], false)
    );
    assert_eq!(t.hops[1].kind, HopKind::Sleeve, "{t:#?}");
    assert_eq!(t.hops[1].to.as_deref(), Some(h3.name.as_str()));
    assert!(
        t.hops[1].reason.as_deref().is_some_and(|r| !r.is_empty()),
        "{t:#?}"
    );
    assert_eq!(t.to.pod.as_deref(), Some("y/d"));
    let (_, sl0) = counters(&c, h1, &h3.name);
    pings(&c, &a, d3.ip, 10);
    let (_, sl) = counters(&c, h1, &h3.name);
    assert!(sl >= sl0 + 10, "sleeve frames to h3: {sl0} -> {sl}");

    // Asked on h3, which is neither end's host: it says so.
    let t = trace(&c, h3, &["x/a", "y/b"]);
    eprintln!("{}", trace_cmd(&c, h3, &["x/a", "y/b"], false));
    assert_eq!(t.outcome, "partial", "{t:#?}");
    assert!(t.notes.iter().any(|n| n.contains("neither")), "{t:#?}");

    // An unknown endpoint is an error with the reason.
    let bin = weft_bin().unwrap();
    let sd = c.state_dir(h1);
    let out = c
        .lab
        .exec(
            &h1.ns,
            &[
                bin.to_str().unwrap(),
                "trace",
                "x/a",
                "not-an-endpoint",
                "--state-dir",
                sd.to_str().unwrap(),
            ],
        )
        .unwrap();
    assert!(!out.status.success());

    // h1 and h3 cut apart on the underlay (the lab's switch): h2 relays, and the trace says so.
    let ul = c.lab.underlay_ns().to_string();
    let (i1, i3) = (h1.underlay_ip, h3.underlay_ip);
    c.lab
        .nft(
            &ul,
            &format!(
                "table bridge weftblock {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    ip saddr {i1} ip daddr {i3} drop\n    ip saddr {i3} ip daddr {i1} drop\n  }}\n}}\n"
            ),
        )
        .unwrap();
    c.wait_path(
        h1,
        &h3.name,
        &format!("via {}", h2.name),
        Duration::from_secs(30),
    )
    .unwrap();
    // Both ends route through h2 before pods talk: h3's replies must take the relay too.
    c.wait_path(
        h3,
        &h1.name,
        &format!("via {}", h2.name),
        Duration::from_secs(30),
    )
    .unwrap();
    let t = trace(&c, h1, &["x/a", "y/d"]);
    eprintln!("{}", trace_cmd(&c, h1, &["x/a", "y/d"], false));
    assert_eq!(
        kinds(&t),
        [
            HopKind::Egress,
            HopKind::Sleeve,
            HopKind::Relay,
            HopKind::Ingress,
            HopKind::Deliver
        ],
        "{t:#?}"
    );
    assert_eq!(t.hops[1].to.as_deref(), Some(h2.name.as_str()));
    assert_eq!(t.hops[2].host, h2.name);
    assert_eq!(t.hops[2].to.as_deref(), Some(h3.name.as_str()));
    let relayed = |c: &Cluster| c.status(h2).unwrap().counters["relayed_datagrams"];
    let r0 = relayed(&c);
    pings(&c, &a, d3.ip, 10);
    let r = relayed(&c);
    assert!(r >= r0 + 10, "h2 relayed {r0} -> {r}");
    // Live, through the relay: h1 seals it for h3 via h2, h2 passes it on; h3, cut off from
    // h1, is not asked (said so), but the relay's hops show.
    let (_, l) = live(&c, h1, &["x/a", "y/d"]);
    assert_eq!(l.observed, "relay", "{l:#?}");
    assert_eq!(l.matched, Some(true), "{l:#?}");
    assert!(l.rtt_us.is_some(), "{l:#?}");
    assert!(
        has(
            &l,
            &h1.name,
            "sleeve out",
            "probe",
            &format!("via {}", h2.name)
        ),
        "{l:#?}"
    );
    assert!(has(&l, &h2.name, "relay", "probe", &h3.name), "{l:#?}");
    assert!(has(&l, &h2.name, "relay", "reply", &h1.name), "{l:#?}");
    assert!(
        l.hosts
            .iter()
            .any(|h| h.host == h3.name && h.status.starts_with("not asked")),
        "{l:#?}"
    );
    c.lab.nft(&ul, "delete table bridge weftblock\n").unwrap();

    // `--live` on the other paths, once h1 reaches h3 directly and h2 on the fast path again
    // (run here rather than beside each static trace: with them before the cut, the relay
    // stage's first pings failed in 4 of 6 runs; see docs/testing.md).
    c.wait_path(h1, &h3.name, "direct", Duration::from_secs(30))
        .unwrap();
    c.wait_path(h1, &h2.name, "fast path", Duration::from_secs(30))
        .unwrap();
    // And the way back: the replies take the same paths.
    c.wait_path(h3, &h1.name, "direct", Duration::from_secs(30))
        .unwrap();
    c.wait_path(h2, &h1.name, "fast path", Duration::from_secs(30))
        .unwrap();
    pings(&c, &a, d3.ip, 1);
    pings(&c, &a, b.ip, 1);
    // Live, on the bridge: h1's kernel sees the probe go from a's port to c's, and no reply
    // (x/isolate-c drops it at ingress).
    let (_, l) = live(&c, h1, &["x/a", "x/c"]);
    assert_eq!(l.observed, "bridge", "{l:#?}");
    assert_eq!(l.matched, Some(true), "{l:#?}");
    assert!(has(&l, &h1.name, "kernel", "probe", "pod "), "{l:#?}");
    assert!(l.hops.iter().all(|h| h.direction == "probe"), "{l:#?}");
    assert_eq!(l.rtt_us, None, "{l:#?}");
    assert!(!seen(&l, "-> pod").is_empty(), "{l:#?}");
    // Live, on the fast path: both kernels see the probe and the reply cross the VXLAN device,
    // the sleeve sees nothing.
    let (_, l) = live(&c, h1, &["x/a", "y/b"]);
    assert_eq!(l.observed, "fast path", "{l:#?}");
    assert_eq!(l.matched, Some(true), "{l:#?}");
    assert!(l.rtt_us.is_some(), "{l:#?}");
    for (host, dir, needle) in [
        (&h1.name, "probe", "-> vxlan"),
        (&h2.name, "probe", "vxlan "),
        (&h2.name, "reply", "-> vxlan"),
        (&h1.name, "reply", "vxlan "),
    ] {
        assert!(
            has(&l, host, "kernel", dir, needle),
            "{host} {dir} {needle}: {l:#?}"
        );
    }
    assert!(
        !l.hops.iter().any(|h| h.point.starts_with("sleeve")),
        "{l:#?}"
    );
    assert!(
        l.hosts
            .iter()
            .any(|h| h.host == h2.name && h.status == "answered"),
        "{l:#?}"
    );
    // TCP to a closed port: the RST comes back, the source port is the mark.
    let (_, l) = live(&c, h1, &["x/a", "y/b", "--port", "81"]);
    assert_eq!(l.proto, "tcp");
    assert!(l.rtt_us.is_some(), "{l:#?}");
    assert!(has(&l, &h2.name, "kernel", "reply", "-> vxlan"), "{l:#?}");
    // Live, on the sleeve in clear: h1 seals it for h3, h3 takes it in and hands it to the pod.
    let (_, l) = live(&c, h1, &["x/a", "y/d"]);
    assert_eq!(l.observed, "sleeve", "{l:#?}");
    assert_eq!(l.matched, Some(true), "{l:#?}");
    assert!(l.rtt_us.is_some(), "{l:#?}");
    assert!(has(&l, &h1.name, "kernel", "probe", "-> tap"), "{l:#?}");
    assert!(has(&l, &h1.name, "sleeve out", "probe", "plain"), "{l:#?}");
    assert!(has(&l, &h3.name, "sleeve in", "probe", &h1.name), "{l:#?}");
    assert!(has(&l, &h3.name, "kernel", "probe", "tap "), "{l:#?}");
    assert!(has(&l, &h3.name, "sleeve out", "reply", ""), "{l:#?}");
    assert!(has(&l, &h1.name, "sleeve in", "reply", ""), "{l:#?}");
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With a secret: the sleeve, encrypted; the remote pod found by its IPAM block (no policy
/// source, so no pod lists in the mesh), and the pings cross the sleeve to that peer.
#[test]
fn an_encrypted_cluster_is_traced_through_the_sleeve() {
    let secret = std::env::temp_dir().join(format!("weft-trace-secret-{}", std::process::id()));
    std::fs::write(&secret, "the weft trace test secret, long enough\n").unwrap();
    let s = secret.to_string_lossy().into_owned();
    let (mut c, hosts, cni, nets) = cni_cluster("trs", 2, &["--secret-file", &s]);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    c.wait_path(h1, &h2.name, "direct", Duration::from_secs(30))
        .unwrap();
    let a = add_pod_with_identity(&mut c, &cni, h1, &nets[0], "x", "a");
    let b = add_pod_with_identity(&mut c, &cni, h2, &nets[1], "y", "b");
    let t = trace(&c, h1, &["x/a", &b.ip.to_string(), "--port", "80"]);
    eprintln!(
        "{}",
        trace_cmd(&c, h1, &["x/a", &b.ip.to_string(), "--port", "80"], false)
    );
    assert_eq!(t.flow, "tcp/80");
    assert!(t.to.found_by.starts_with("IPAM block"), "{t:#?}");
    assert_eq!(t.to.host_nickname, h2.name);
    let hop = &t.hops[1];
    assert_eq!(hop.kind, HopKind::Sleeve, "{t:#?}");
    let enc = hop.encryption.as_deref();
    assert!(
        matches!(enc, Some("aes-256-gcm" | "chacha20-poly1305")),
        "{enc:?}"
    );
    assert!(hop.reason.as_deref().is_some_and(|r| !r.is_empty()));
    assert_eq!(t.outcome, "delivered");
    let (_, sl0) = counters(&c, h1, &h2.name);
    pings(&c, &a, b.ip, 10);
    let (_, sl) = counters(&c, h1, &h2.name);
    assert!(sl >= sl0 + 10, "sleeve frames to h2: {sl0} -> {sl}");
    // Live, on the encrypted sleeve: sealed on h1, opened on h2, and back.
    let (_, l) = live(&c, h1, &["x/a", &b.ip.to_string()]);
    assert_eq!(l.observed, "sleeve", "{l:#?}");
    assert_eq!(l.matched, Some(true), "{l:#?}");
    assert!(l.rtt_us.is_some(), "{l:#?}");
    assert!(
        has(&l, &h1.name, "sleeve out", "probe", "encrypted"),
        "{l:#?}"
    );
    assert!(has(&l, &h2.name, "sleeve in", "probe", &h1.name), "{l:#?}");
    assert!(
        has(&l, &h2.name, "sleeve out", "reply", "encrypted"),
        "{l:#?}"
    );
    assert!(has(&l, &h1.name, "sleeve in", "reply", &h2.name), "{l:#?}");
    // Hop times are after the send and in order of the way.
    let t_out = l
        .hops
        .iter()
        .find(|h| h.point == "sleeve out")
        .unwrap()
        .at_us;
    let t_in = l
        .hops
        .iter()
        .find(|h| h.point == "sleeve in")
        .unwrap()
        .at_us;
    assert!(t_out >= -1000 && t_in >= t_out, "{l:#?}");
    drop(c);
    let _ = std::fs::remove_file(&secret);
}
