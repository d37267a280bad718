//! NetworkPolicy as the router runs it (the end-to-end truth tables are tests/tests/netpol.rs):
//! pods attached through `cnitool` with `K8S_POD_NAMESPACE`/`K8S_POD_NAME`, a `--policy-dir`
//! on each of two routers; then what an operator sees and what must not break: `weft status
//! policy` names the policies selecting a pod and counts its denials (the latest denials with
//! the pods' names), a manifest that does not parse leaves the last good state in force and is
//! reported, a router restart keeps the ruleset in the kernel throughout (reconciled, not
//! rebuilt), and `weft leave` removes the table.
//!
//! Needs root, `cnitool`, `nft` and the release `weft` and `weft-cni` binaries.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use weft_api::policy::PolicyReport;
use weft_lab::testbed::{ping, Cluster};
use weft_lab::{poll_until, Host, Signal};
use weft_tests::cni::{add_pod_with_identity, CniPod};
use weft_tests::guarded::cni_cluster;

fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

const OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: x}}
---
apiVersion: v1
kind: Namespace
metadata: {name: y, labels: {team: y}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec: {containers: [{name: c, image: none, ports: [{name: http, containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: x, labels: {app: c}}
spec: {containers: [{name: c, image: none}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: y, labels: {app: b}}
spec: {containers: [{name: c, image: none}]}
"#;

/// Pods of x take connections only from namespace y.
const ONLY_FROM_Y: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-from-y, namespace: x}
spec:
  podSelector: {}
  ingress:
    - from: [{namespaceSelector: {matchLabels: {team: y}}}]
"#;

fn reaches(c: &Cluster, from: &CniPod, to: Ipv4Addr) -> bool {
    ping(&c.lab, &from.ns, to, 1).is_ok_and(|p| p.received == 1)
}

/// Polls until `from` reaches `to` (or, with `want` false, until it does not), 15 s at most.
fn expect(c: &Cluster, from: &CniPod, to: &CniPod, want: bool) {
    let ok = poll_until(Duration::from_secs(15), Duration::from_millis(100), || {
        (reaches(c, from, to.ip) == want).then_some(())
    });
    assert!(
        ok.is_some(),
        "{} -> {} should be {}\n{}",
        from.ns,
        to.ns,
        if want { "allowed" } else { "denied" },
        c.router_log(&to.host)
    );
}

fn policy(c: &Cluster, h: &Host) -> PolicyReport {
    c.status(h).unwrap().policy.expect("a policy section")
}

fn table_exists(c: &Cluster, h: &Host) -> bool {
    c.lab
        .exec(&h.ns, &["nft", "list", "table", "inet", "weft_policy"])
        .is_ok_and(|o| o.status.success())
}

#[test]
fn status_bad_files_restart_and_leave() {
    let tmp = tempdir();
    let dirs: Vec<PathBuf> = (1..=2).map(|i| tmp.join(format!("h{i}"))).collect();
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
        write(d, "objects.yaml", OBJECTS);
    }
    let d1 = dirs[0].to_string_lossy().into_owned();
    let d2 = dirs[1].to_string_lossy().into_owned();
    // Each router its own directory (same content), as every host of a cluster would have.
    let (mut c, hosts, cni, nets) = {
        let (mut c, hosts, cni, nets) = cni_cluster("polr", 2, &[]);
        for (h, d) in hosts.iter().zip([&d1, &d2]) {
            c.stop_router(h, Signal::SIGTERM, Duration::from_secs(10))
                .unwrap();
            let peers: Vec<&Host> = hosts.iter().filter(|p| p.name != h.name).collect();
            c.start_router(
                h,
                &peers,
                &[
                    "--pod-cidr",
                    weft_tests::guarded::POD_CIDR,
                    "--ipam-init-peers",
                    "2",
                    "--policy-dir",
                    d,
                ],
            )
            .unwrap();
        }
        (c, hosts, cni, nets)
    };
    let (h1, h2) = (&hosts[0], &hosts[1]);
    for h in &hosts {
        let ready = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
            c.ipam(h).ok().filter(|r| r.ready)
        });
        assert!(ready.is_some(), "{}", c.router_log(h));
    }
    let a = add_pod_with_identity(&mut c, &cni, h1, &nets[0], "x", "a");
    let cc = add_pod_with_identity(&mut c, &cni, h1, &nets[0], "x", "c");
    let b = add_pod_with_identity(&mut c, &cni, h2, &nets[1], "y", "b");
    // No policy: everyone reaches everyone.
    expect(&c, &cc, &a, true);
    expect(&c, &b, &a, true);

    for d in &dirs {
        write(d, "policy.yaml", ONLY_FROM_Y);
    }
    expect(&c, &cc, &a, false);
    expect(&c, &b, &a, true);
    expect(&c, &a, &b, true);
    // The operator's view: which policy isolates a, its denials, who was denied.
    let r = policy(&c, h1);
    let pa = r
        .local_pods
        .iter()
        .find(|p| p.pod == "x/a")
        .expect("x/a listed");
    assert_eq!(pa.ingress, vec!["x/only-from-y".to_string()]);
    assert!(pa.egress.is_empty());
    let denied = poll_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let r = policy(&c, h1);
        let pa = r.local_pods.iter().find(|p| p.pod == "x/a")?.clone();
        (pa.dropped_in > 0
            && r.recent_denials
                .iter()
                .any(|d| d.contains("ingress denied") && d.contains("(x/c -> x/a)")))
        .then_some(r)
    });
    assert!(denied.is_some(), "{:#?}", policy(&c, h1));
    let text = c
        .lab
        .exec_ok(
            &h1.ns,
            &[
                weft_lab::testbed::weft_bin().unwrap().to_str().unwrap(),
                "status",
                "--state-dir",
                c.state_dir(h1).to_str().unwrap(),
                "policy",
            ],
        )
        .unwrap();
    assert!(
        text.contains("x/only-from-y") && text.contains("x/a"),
        "{text}"
    );

    // A file cut in the middle: reported, the last good state stays.
    write(
        &dirs[0],
        "policy.yaml",
        &ONLY_FROM_Y[..ONLY_FROM_Y.len() / 2],
    );
    write(&dirs[0], "broken.yaml", "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: bad, namespace: x}\nspec: {podSelector: {matchExpressions: [{key: a, operator: Near}]}}\n");
    let reported = poll_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let r = policy(&c, h1);
        (r.sources.iter().any(|s| !s.ok && s.errors.len() >= 2)).then_some(r)
    });
    assert!(reported.is_some(), "{:#?}", policy(&c, h1));
    expect(&c, &cc, &a, false);
    expect(&c, &b, &a, true);

    // A restart: the table stays in the kernel while the router is down, and after.
    std::fs::remove_file(dirs[0].join("broken.yaml")).unwrap();
    write(&dirs[0], "policy.yaml", ONLY_FROM_Y);
    let applied_before = policy(&c, h1).applied;
    assert!(applied_before >= 1);
    c.stop_router(h1, Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();
    assert!(table_exists(&c, h1), "the ruleset outlives the router");
    assert!(
        !reaches(&c, &cc, a.ip),
        "still enforced while the router is down"
    );
    c.restart_router(h1).unwrap();
    let up = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        c.status(h1)
            .ok()
            .and_then(|r| r.policy)
            .filter(|p| p.sources.iter().all(|s| s.ok))
    });
    assert!(up.is_some(), "{}", c.router_log(h1));
    expect(&c, &cc, &a, false);
    expect(&c, &b, &a, true);
    let log = c.router_log(h1);
    assert!(
        log.contains("previous run's ruleset stays in force"),
        "{log}"
    );

    // Leave: the table goes with the rest.
    c.lab
        .exec_ok(
            &h1.ns,
            &[
                weft_lab::testbed::weft_bin().unwrap().to_str().unwrap(),
                "leave",
                "--force",
                "--state-dir",
                c.state_dir(h1).to_str().unwrap(),
            ],
        )
        .unwrap();
    let gone = poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
        (!table_exists(&c, h1)).then_some(())
    });
    assert!(gone.is_some(), "weft leave removes table inet weft_policy");
    drop(c);
    let _ = std::fs::remove_dir_all(&tmp);
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("weft-policy-router-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
