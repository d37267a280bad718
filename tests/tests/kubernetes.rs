//! `weft router --kubernetes` against the fake API server of `weft_kube::fake` (no real API
//! server can run here; docs/kubernetes.md says what that leaves untested). The fake listens in
//! a namespace of its own on the underlay, as an API server reachable from every host would,
//! and serves Nodes, Namespaces, Pods and a NetworkPolicy in the shape a real one returns.
//!
//! Three routers started with `--kubernetes --kubeconfig` and no `--peer` and no
//! `--ipam-init-peers`: they find each other through the Nodes and wait for a majority of the
//! three before claiming blocks; the policy from the API is enforced on pods attached through
//! cnitool with their identity; a label changed in the API changes who gets in; a Node added to
//! the API is dialled and forgotten when deleted; a Node deleted from the API (its router dead) is
//! forgotten and its pod-address blocks are taken back at once, far inside the 30-minute grace
//! period.
//!
//! Needs root, `cnitool`, `nft` and the release `weft` and `weft-cni` binaries.

use serde_json::json;
use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::time::Duration;
use weft_kube::fake::{Fake, Options};
use weft_kube::Kind;
use weft_lab::testbed::{ping, weft_bin, Cluster};
use weft_lab::{in_netns, poll_until, Host, Signal};
use weft_tests::cni::{add_pod_with_identity, Cni, CniPod};

const API_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 240);
const POD_CIDR: &str = "10.32.0.0/12";

/// The fake API server in namespace `ns` at [`API_IP`], on a thread of its own (its runtime
/// lives as long as the returned sender).
fn fake_in(ns: &str) -> (Fake, mpsc::Sender<()>) {
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        in_netns(&ns, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let fake = Fake::start_on((API_IP, 0).into(), Options::default()).await;
                tx.send(fake).unwrap();
                // Serve until the test ends.
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            });
        })
        .unwrap();
    });
    (rx.recv_timeout(Duration::from_secs(10)).unwrap(), stop_tx)
}

fn node(name: &str, ip: Ipv4Addr) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"addresses": [
            {"type": "InternalIP", "address": ip.to_string()},
            {"type": "Hostname", "address": name}
        ]}
    })
}

fn pod(ns: &str, name: &str, labels: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    })
}

fn expect(c: &Cluster, from: &CniPod, to: &CniPod, want: bool) {
    let ok = poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let got = ping(&c.lab, &from.ns, to.ip, 1).is_ok_and(|p| p.received == 1);
        (got == want).then_some(())
    });
    assert!(
        ok.is_some(),
        "{} -> {} should be {}\nsource host: {:?}\n{:#?}\n{}\n{}",
        from.ns,
        to.ns,
        if want { "allowed" } else { "denied" },
        c.status(&from.host).map(|r| r.policy.map(|p| p.mesh_pods)),
        c.status(&to.host).ok().and_then(|r| r.policy),
        c.lab
            .exec_ok(
                &to.host.ns,
                &["nft", "list", "table", "inet", "weft_policy"]
            )
            .unwrap_or_default(),
        c.router_log(&to.host) + "\n--- source host ---\n" + &c.router_log(&from.host)
    );
}

#[test]
fn routers_follow_the_cluster_api() {
    assert!(weft_lab::require_root(), "this test needs root");
    let mut c = Cluster::new("k8s", weft_bin().unwrap()).unwrap();
    let hosts: Vec<Host> = (1..=3)
        .map(|i| c.add_host(&format!("h{i}")).unwrap())
        .collect();

    // The API server's namespace on the underlay.
    let api_ns = c.lab.add_netns("api").unwrap();
    let ul = c.lab.underlay_ns().to_owned();
    c.lab
        .exec_ok(
            &api_ns,
            &[
                "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "api", "netns", &ul,
            ],
        )
        .unwrap();
    c.lab
        .exec_ok(
            &api_ns,
            &["ip", "addr", "add", &format!("{API_IP}/24"), "dev", "eth0"],
        )
        .unwrap();
    c.lab
        .exec_ok(&api_ns, &["ip", "link", "set", "eth0", "up"])
        .unwrap();
    c.lab
        .exec_ok(&api_ns, &["ip", "link", "set", "lo", "up"])
        .unwrap();
    c.lab
        .exec_ok(
            &ul,
            &[
                "ip",
                "link",
                "set",
                "api",
                "master",
                weft_lab::UNDERLAY_BRIDGE,
                "up",
            ],
        )
        .unwrap();
    let (fake, _stop) = fake_in(&api_ns);
    for h in &hosts {
        fake.apply_json(node(&h.name, h.underlay_ip));
    }
    for ns in ["x", "y"] {
        fake.apply_json(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}}));
    }
    fake.apply_json(pod("x", "a", json!({"app": "a"})));
    fake.apply_json(pod("y", "b", json!({"app": "b", "role": "client"})));
    fake.apply_json(pod("y", "c", json!({"app": "c"})));
    // x/a takes connections only from pods labelled role=client, in any namespace.
    fake.apply_json(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "clients-only", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"app": "a"}},
                 "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}}]}]}
    }));
    let kubeconfig = c.lab.dir().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    let kc = kubeconfig.to_str().unwrap().to_owned();

    // No --peer, no --ipam-init-peers: the Nodes say both.
    for h in &hosts {
        c.start_router(
            h,
            &[],
            &["--pod-cidr", POD_CIDR, "--kubernetes", "--kubeconfig", &kc],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
    for h in &hosts {
        let log = c.router_log(h);
        assert!(
            log.contains("kubernetes: 3 node(s), 2 peer(s) to dial"),
            "{log}"
        );
        assert!(log.contains("init_peers=3"), "{log}");
    }
    let cni = Cni::new(&c.lab).unwrap();
    let nets: Vec<String> = weft_tests::cni::weft_networks(&c, &cni, &hosts);
    let a = add_pod_with_identity(&mut c, &cni, &hosts[0], &nets[0], "x", "a");
    let b = add_pod_with_identity(&mut c, &cni, &hosts[1], &nets[1], "y", "b");
    let cc = add_pod_with_identity(&mut c, &cni, &hosts[2], &nets[2], "y", "c");
    expect(&c, &b, &a, true);
    expect(&c, &cc, &a, false);
    expect(&c, &a, &cc, true);
    let r = c.status(&hosts[0]).unwrap().policy.unwrap();
    let src = r
        .sources
        .iter()
        .find(|s| s.name == "kubernetes")
        .expect("the source");
    assert!(src.ok, "{r:#?}");

    // Labels change in the API: c becomes a client, b stops being one.
    fake.apply_json(pod("y", "c", json!({"app": "c", "role": "client"})));
    fake.apply_json(pod("y", "b", json!({"app": "b"})));
    expect(&c, &cc, &a, true);
    expect(&c, &b, &a, false);

    // A Node joins the cluster: every router dials it (it has no router yet: the dial fails and
    // is retried, as for any seed).
    fake.apply_json(node("h4", Ipv4Addr::new(10, 200, 0, 14)));
    let dialled = poll_until(Duration::from_secs(15), Duration::from_millis(100), || {
        let t = c.status(&hosts[0]).ok()?.targets;
        t.iter().any(|t| t.addr == "10.200.0.14:6783").then_some(())
    });
    assert!(
        dialled.is_some(),
        "{:#?}",
        c.status(&hosts[0]).map(|r| r.targets)
    );
    fake.delete(Kind::Node, "", "h4");
    let gone = poll_until(Duration::from_secs(15), Duration::from_millis(100), || {
        let t = c.status(&hosts[0]).ok()?.targets;
        (!t.iter().any(|t| t.addr == "10.200.0.14:6783")).then_some(())
    });
    assert!(gone.is_some(), "a deleted Node is no longer dialled");

    // h3 dies and its Node is deleted: forgotten, its blocks taken back at once.
    let h3 = hosts[2].clone();
    let h3_blocks = c.status(&h3).unwrap().ipam.unwrap().held;
    assert!(!h3_blocks.is_empty());
    c.kill_router(&h3, Signal::SIGKILL).unwrap();
    fake.delete(Kind::Node, "", "h3");
    let reclaimed = poll_until(Duration::from_secs(60), Duration::from_millis(250), || {
        let r = c.status(&hosts[0]).ok()?;
        let cl = r.ipam?.cluster?;
        let h3_holds = cl
            .hosts
            .iter()
            .any(|h| h.nickname == "h3" && !h.held.is_empty());
        (!h3_holds && cl.members == 2).then_some(cl)
    });
    assert!(
        reclaimed.is_some(),
        "h3's blocks {h3_blocks:?} not taken back:\n{:#?}\n{}",
        c.status(&hosts[0]).ok().and_then(|r| r.ipam),
        c.router_log(&hosts[0])
    );
    let log = c.router_log(&hosts[0]);
    assert!(log.contains("node h3 was deleted"), "{log}");
    let targets = c.status(&hosts[0]).unwrap().targets;
    assert!(
        !targets
            .iter()
            .any(|t| t.addr.starts_with(&h3.underlay_ip.to_string())),
        "h3 is no longer dialled: {targets:?}"
    );
    // The others keep talking (c went with h3).
    expect(&c, &a, &b, true);
}
