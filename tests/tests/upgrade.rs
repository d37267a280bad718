//! A rolling upgrade from an older weft (issue 16): three hosts with cluster IPAM, once encrypted
//! and once plain (the fast path), start on the old binary (`$WEFT_OLD_BIN`, built by
//! `scripts/upgrade-test.sh` from a pinned commit), pods attach through `cnitool`, then the routers are replaced one by one by this build on their
//! state directories. After each step every host is connected again, the pods keep their
//! addresses and reach each other, new pods get addresses nobody else has, and the new routers
//! refuse nothing (unsigned records from the old ones are accepted and counted). At the end every
//! record is signed, and a router restarted with `--require-signed-records` still has the mesh.
//!
//! `scripts/test.sh` (CI) and `scripts/upgrade-test.sh` build the older router and set
//! `WEFT_OLD_BIN`; without it (a partial `cargo test`, a shallow clone without the pinned commit)
//! the test says so and passes.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;
use weft_lab::testbed::{ping, weft_bin, Cluster};
use weft_lab::{poll_until, Host};
use weft_tests::cni::{Cni, CniPod};
use weft_tests::guarded::POD_CIDR;

const SECRET: &str = "an upgrade test secret of some length\n";

fn old_bin() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("WEFT_OLD_BIN")?);
    assert!(p.exists(), "WEFT_OLD_BIN={} does not exist", p.display());
    Some(p)
}

fn wait_mesh(c: &Cluster, hosts: &[Host]) {
    for h in hosts {
        c.wait_peers(h, hosts.len() - 1, Duration::from_secs(30))
            .unwrap();
    }
}

fn add_pod(c: &mut Cluster, cni: &Cni, host: &Host, net: &str, name: &str) -> CniPod {
    let ns = c.lab.add_netns(&format!("{}-{name}", host.name)).unwrap();
    cni.cnitool_add(&c.lab, host, net, &ns)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.router_log(host)))
}

/// Every pod reaches every other (3 pings each way, one lost allowed for ARP).
fn all_talk(c: &Cluster, pods: &[CniPod]) {
    for a in pods {
        for b in pods {
            if a.ns == b.ns {
                continue;
            }
            let got = poll_until(Duration::from_secs(10), Duration::from_millis(200), || {
                let s = ping(&c.lab, &a.ns, b.ip, 3).ok()?;
                (s.received >= 2).then_some(())
            });
            assert!(
                got.is_some(),
                "{} ({}) cannot reach {} ({})",
                a.ns,
                a.ip,
                b.ns,
                b.ip
            );
        }
    }
}

fn distinct(pods: &[CniPod]) {
    let ips: BTreeSet<Ipv4Addr> = pods.iter().map(|p| p.ip).collect();
    assert_eq!(ips.len(), pods.len(), "duplicate pod addresses: {pods:?}");
}

/// On a router of this build: no connection refused for its host key, no record refused for a
/// bad signature or a wrong key. (Unsigned records are accepted from old routers, or refused when they are a copy,
/// stripped by an old router, of a signing owner's record newer than ours: the owner's own copy
/// arrives too.)
/// With hosts `..=upgraded` on this build and the rest on the old one: a pair of new routers
/// seals with what `--cipher auto` chooses here, a pair with an old router with
/// ChaCha20-Poly1305 (the old router offers nothing else).
fn ciphers_as_negotiated(c: &Cluster, hosts: &[Host], upgraded: usize) {
    let new = |name: &str| hosts[..=upgraded].iter().any(|h| h.name == name);
    for h in hosts {
        let r = c.status(h).unwrap();
        for p in &r.peers {
            let want = if new(&h.name) && new(&p.nickname) {
                weft_lab::testbed::auto_cipher()
            } else {
                "chacha20-poly1305"
            };
            // An old router shows what it always showed.
            assert_eq!(p.encryption, want, "{} -> {}", h.name, p.nickname);
        }
    }
}

fn refused_nothing(c: &Cluster, h: &Host) {
    let r = c.status(h).unwrap();
    let refused: Vec<(&String, &u64)> = r
        .rejected_records
        .iter()
        .filter(|(k, v)| **v > 0 && !k.contains("unsigned"))
        .collect();
    assert!(refused.is_empty(), "{}: {refused:?}", h.name);
    // Connections refused for their key (simultaneous dials, refused as duplicates, are not).
    let keyed: Vec<_> = (r.refused.iter())
        .filter(|x| {
            ["host key", "signature", "does not sign"]
                .iter()
                .any(|w| x.reason.contains(w))
        })
        .collect();
    assert!(keyed.is_empty(), "{}: {keyed:?}", h.name);
}

/// `weft trace --live` on the one upgraded host (h1): the older routers (h2, h3) are not asked
/// (they would close the connection on a message they do not know), h1's own hops show, and
/// the mesh stays as it was.
fn live_trace_skips_old_routers(c: &Cluster, hosts: &[Host], pods: &[CniPod]) {
    let bin = weft_bin().unwrap();
    let dir = c.state_dir(&hosts[0]);
    let (from, to) = (pods[0].ip.to_string(), pods[1].ip.to_string());
    let out = c
        .lab
        .exec_ok(
            &hosts[0].ns,
            &[
                bin.to_str().unwrap(),
                "trace",
                &from,
                &to,
                "--live",
                "--json",
                "--state-dir",
                dir.to_str().unwrap(),
            ],
        )
        .unwrap();
    let t: weft_api::trace::TraceAnswer =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    eprintln!("{}", weft_api::trace::render(&t));
    let l = t.live.expect("a live part");
    for h in &hosts[1..] {
        let st = l.hosts.iter().find(|x| x.host == h.name).unwrap();
        assert!(
            st.status
                .starts_with("not asked: its router speaks protocol version"),
            "{l:#?}"
        );
    }
    assert!(
        l.hops
            .iter()
            .any(|h| h.host == hosts[0].name && h.direction == "probe"),
        "{l:#?}"
    );
    wait_mesh(c, hosts);
    for h in hosts {
        refused_nothing(c, h);
    }
}

#[test]
fn a_rolling_upgrade_of_an_encrypted_cluster() {
    rolling_upgrade("wue", true);
}

#[test]
fn a_rolling_upgrade_of_a_plain_cluster_on_the_fast_path() {
    rolling_upgrade("wup", false);
}

/// The whole upgrade, with or without a cluster secret (without one, pods talk over the kernel
/// VXLAN fast path between old and new routers alike).
fn rolling_upgrade(tag: &str, encrypted: bool) {
    let Some(old) = old_bin() else {
        eprintln!("WEFT_OLD_BIN is not set: skipped (run scripts/upgrade-test.sh)");
        return;
    };
    assert!(weft_lab::require_root(), "this test needs root");
    let new = weft_bin().unwrap();
    let mut c = Cluster::new(tag, old).unwrap();
    let secret = c.lab.dir().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let secret = secret.display().to_string();
    let hosts: Vec<Host> = (1..=3)
        .map(|i| c.add_host(&format!("h{i}")).unwrap())
        .collect();
    let mut args = vec!["--pod-cidr", POD_CIDR, "--ipam-init-peers", "3"];
    if encrypted {
        args.extend(["--secret-file", secret.as_str()]);
    }
    c.start_routers_together(&hosts, &args).unwrap();
    wait_mesh(&c, &hosts);
    let cni = Cni::new(&c.lab).unwrap();
    let nets: Vec<String> = hosts
        .iter()
        .map(|h| {
            cni.write_conflist(h, "weft", vec![Cni::weft_plugin(&c.state_dir(h))])
                .unwrap()
        })
        .collect();
    for h in &hosts {
        let ready = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
            c.ipam(h).ok().filter(|r| r.ready)
        });
        assert!(ready.is_some(), "{}:\n{}", h.name, c.router_log(h));
    }
    let mut pods: Vec<CniPod> = (0..3)
        .map(|i| add_pod(&mut c, &cni, &hosts[i], &nets[i], "a"))
        .collect();
    all_talk(&c, &pods);
    let names: Vec<String> = hosts.iter().map(|h| c.status(h).unwrap().name).collect();

    // One router at a time, on its own state directory.
    for (i, h) in hosts.iter().enumerate() {
        c.upgrade_router(h, new.clone(), &[]).unwrap();
        wait_mesh(&c, &hosts);
        let r = c.status(h).unwrap();
        assert_eq!(r.name, names[i], "{} kept its peer name", h.name);
        let step = format!("b{i}");
        for (j, other) in hosts.iter().enumerate() {
            pods.push(add_pod(&mut c, &cni, other, &nets[j], &step));
        }
        distinct(&pods);
        all_talk(&c, &pods);
        for up in &hosts[..=i] {
            refused_nothing(&c, up);
        }
        if encrypted {
            ciphers_as_negotiated(&c, &hosts, i);
        }
        if i == 0 {
            live_trace_skips_old_routers(&c, &hosts, &pods);
        }
    }

    // All on this build: every record signed (once each owner's next change went out), nothing
    // refused, and requiring signatures keeps the mesh.
    c.wait_converged(&hosts, Duration::from_secs(30)).unwrap();
    for h in &hosts {
        let signed = poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
            let r = c.status(h).ok()?;
            r.topology.iter().all(|t| t.signed).then_some(())
        });
        assert!(
            signed.is_some(),
            "{}: {:?}",
            h.name,
            c.status(h).unwrap().topology
        );
    }
    c.upgrade_router(&hosts[0], new, &["--require-signed-records"])
        .unwrap();
    wait_mesh(&c, &hosts);
    for h in &hosts {
        refused_nothing(&c, h);
    }
    all_talk(&c, &pods);
    eprintln!(
        "upgrade ({}): 3 hosts, {} pods, all reachable after each of the 3 steps",
        if encrypted { "encrypted" } else { "plain" },
        pods.len()
    );
}
