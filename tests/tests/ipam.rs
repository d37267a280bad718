//! Pod IPAM through the router's API, with real routers: concurrent allocations on three hosts,
//! idempotence, release, garbage collection, a restart that keeps every reservation and gateway,
//! masquerading of pod traffic leaving the pod CIDR (and none between pods), and `weft leave`.
//!
//! The API is driven directly (as `weft-cni` does). Needs root (network namespaces) and the `weft`
//! binary (`scripts/test.sh` builds it).

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use weft_api::ipam::{
    AllocateRequest, Allocation, Attachment, GcAnswer, GcRequest, IpamReport, ReleaseAnswer,
};
use weft_api::status::Report;
use weft_api::{self as api, Error};
use weft_lab::testbed::{http_get, weft_bin, Cluster};
use weft_lab::{poll_until, Host, PodSpec, Signal};

const CIDR: &str = "10.32.0.0/12";

/// The IPv4 address `ip` (these tests run an IPv4 pod CIDR).
fn v4(ip: std::net::IpAddr) -> Ipv4Addr {
    match ip {
        std::net::IpAddr::V4(a) => a,
        std::net::IpAddr::V6(a) => panic!("an IPv6 address {a} from an IPv4 pod CIDR"),
    }
}

fn cidr() -> gossip::ipam::Block {
    CIDR.parse().unwrap()
}

fn cluster(tag: &str) -> Cluster {
    assert!(
        weft_lab::require_root(),
        "these tests need root and iproute2"
    );
    Cluster::new(tag, weft_bin().unwrap()).unwrap()
}

fn att(id: &str) -> Attachment {
    Attachment {
        container_id: id.into(),
        ifname: "eth0".into(),
    }
}

/// Allocates an address for `id`, asking again while the router says "try again later" or does
/// not answer in time (allocation is idempotent, so asking again is safe). Bounded by 90 s.
fn allocate(dir: &Path, id: &str) -> Result<Allocation> {
    let req = AllocateRequest {
        attachment: att(id),
        netns: format!("/var/run/netns/{id}"),
        pod: None,
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let last = match api::call(
            dir,
            "POST",
            "/v1/ipam/allocate",
            Some(&req),
            Duration::from_secs(30),
        ) {
            Ok(a) => return Ok(a),
            Err(Error::Refused { answer, .. }) if answer.retry => answer.error,
            Err(e @ Error::Unreachable { .. }) => e.to_string(),
            Err(e) => bail!("allocating for {id}: {e}"),
        };
        if Instant::now() > deadline {
            bail!("allocating for {id}: still failing after 90 s: {last}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn release(dir: &Path, id: &str) -> ReleaseAnswer {
    api::post(dir, "/v1/ipam/release", &att(id)).unwrap()
}

fn report(dir: &Path) -> IpamReport {
    api::get(dir, "/v1/ipam").unwrap()
}

/// `(address, prefix length)` of every IPv4 address on `dev` in `ns`.
fn addresses(c: &Cluster, ns: &str, dev: &str) -> Vec<(Ipv4Addr, u8)> {
    let out = c
        .lab
        .exec_ok(ns, &["ip", "-j", "-4", "addr", "show", "dev", dev])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut got = Vec::new();
    for link in v.as_array().unwrap() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            let ip: Ipv4Addr = a["local"].as_str().unwrap().parse().unwrap();
            got.push((ip, a["prefixlen"].as_u64().unwrap() as u8));
        }
    }
    got
}

fn held(c: &Cluster, h: &Host) -> Vec<gossip::ipam::Block> {
    let r: Report = c.status(h).unwrap();
    r.ipam
        .expect("IPAM section in the status")
        .held
        .iter()
        .map(|b| b.parse().unwrap())
        .collect()
}

/// Every held block's gateway is on the bridge with the pod CIDR's prefix length, and nothing
/// else inside the pod CIDR is.
fn assert_gateways(c: &Cluster, h: &Host) {
    let blocks = held(c, h);
    assert!(!blocks.is_empty(), "{} holds no block", h.name);
    let want: BTreeSet<(Ipv4Addr, u8)> = blocks
        .iter()
        .map(|b| (v4(weft::ipam::gateway(*b)), 12))
        .collect();
    let have: BTreeSet<(Ipv4Addr, u8)> = addresses(c, &h.ns, "weft")
        .into_iter()
        .filter(|(ip, _)| cidr().contains(*ip))
        .collect();
    assert_eq!(have, want, "gateway addresses on {}'s bridge", h.name);
}

fn nft_table_exists(c: &Cluster, ns: &str) -> bool {
    c.lab
        .exec(ns, &["nft", "list", "table", "ip", "weft"])
        .unwrap()
        .status
        .success()
}

/// Starts `n` routers at the same moment with IPAM on (`--ipam-init-peers n`) and waits for the
/// full mesh.
fn ipam_cluster(c: &mut Cluster, n: u8, extra: &[&str]) -> Vec<Host> {
    let hosts: Vec<Host> = (1..=n)
        .map(|i| c.add_host(&format!("h{i}")).unwrap())
        .collect();
    let peers = n.to_string();
    let mut args = vec!["--pod-cidr", CIDR, "--ipam-init-peers", &peers];
    args.extend_from_slice(extra);
    c.start_routers_together(&hosts, &args).unwrap();
    for h in &hosts {
        c.wait_peers(h, hosts.len() - 1, Duration::from_secs(20))
            .unwrap();
    }
    hosts
}

#[test]
fn concurrent_allocations_on_three_hosts_are_distinct_and_survive_a_restart() {
    let mut c = cluster("wia");
    let hosts = ipam_cluster(&mut c, 3, &[]);
    let dirs: Vec<PathBuf> = hosts.iter().map(|h| c.state_dir(h)).collect();

    // 50 ADDs at once on every host.
    let started = Instant::now();
    let threads: Vec<_> = dirs
        .iter()
        .enumerate()
        .flat_map(|(hi, dir)| {
            (0..50).map(move |i| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    let id = format!("h{}-c{i:02}", hi + 1);
                    allocate(&dir, &id).map(|a| (hi, id, a))
                })
            })
        })
        .collect();
    let mut by_host: Vec<BTreeMap<String, Allocation>> = vec![BTreeMap::new(); 3];
    for t in threads {
        let (hi, id, a) = t.join().unwrap().unwrap();
        by_host[hi].insert(id, a);
    }
    eprintln!("150 allocations in {:?}", started.elapsed());

    let all: Vec<Ipv4Addr> = by_host
        .iter()
        .flat_map(|m| m.values().map(|a| v4(a.address)))
        .collect();
    let distinct: BTreeSet<Ipv4Addr> = all.iter().copied().collect();
    assert_eq!(distinct.len(), 150, "addresses handed out twice: {all:?}");
    for (hi, h) in hosts.iter().enumerate() {
        let blocks = held(&c, h);
        for a in by_host[hi].values() {
            assert!(cidr().contains(a.address), "{a:?} outside {CIDR}");
            assert_eq!(a.prefix_len, 12);
            assert_eq!(a.cidr, CIDR);
            let b = blocks
                .iter()
                .find(|b| b.contains(a.address))
                .unwrap_or_else(|| panic!("{a:?} is in none of {}'s blocks {blocks:?}", h.name));
            assert_eq!(a.gateway, weft::ipam::gateway(*b));
            assert!(a.address != b.base() && a.address != a.gateway);
            assert!(a.mtu >= 1280 && a.bridge == "weft", "{a:?}");
        }
        assert_gateways(&c, h);
        let r = report(&dirs[hi]);
        assert!(r.ready, "{} not ready: {}", h.name, r.reason);
        assert_eq!(r.reservations.len(), 50);
        assert!(nft_table_exists(&c, &h.ns));
    }
    // No two hosts hold the same block.
    let blocks: Vec<_> = hosts.iter().flat_map(|h| held(&c, h)).collect();
    let unique: BTreeSet<_> = blocks.iter().collect();
    assert_eq!(unique.len(), blocks.len(), "a block held twice: {blocks:?}");

    // The same attachment again: the same address.
    let first = &by_host[0]["h1-c07"];
    assert_eq!(allocate(&dirs[0], "h1-c07").unwrap(), *first);

    // Release frees the address; the next allocation (the lowest free one) reuses it.
    assert!(release(&dirs[0], "h1-c07").released);
    assert!(!release(&dirs[0], "h1-c07").released);
    assert!(!report(&dirs[0])
        .reservations
        .iter()
        .any(|r| r.attachment == att("h1-c07")));
    let reused = allocate(&dirs[0], "h1-new").unwrap();
    assert_eq!(reused.address, first.address, "the freed address is reused");

    // Garbage collection keeps only what is listed.
    let keep: Vec<Attachment> = (0..10).map(|i| att(&format!("h2-c{i:02}"))).collect();
    let gc: GcAnswer =
        api::post(&dirs[1], "/v1/ipam/gc", &GcRequest { keep: keep.clone() }).unwrap();
    assert_eq!(gc.released.len(), 40);
    let left: BTreeSet<Attachment> = report(&dirs[1])
        .reservations
        .into_iter()
        .map(|r| r.attachment)
        .collect();
    assert_eq!(left, keep.into_iter().collect());

    // Bad requests: malformed JSON is a 400 that says do not retry.
    match api::call::<_, Allocation>(
        &dirs[0],
        "POST",
        "/v1/ipam/allocate",
        Some(&serde_json::json!({"container": 1})),
        Duration::from_secs(5),
    ) {
        Err(Error::Refused { status, answer }) => {
            assert_eq!(status, 400);
            assert!(!answer.retry);
        }
        other => panic!("malformed request answered {other:?}"),
    }

    // A restart (SIGTERM, then start again) keeps every reservation and the gateways; the
    // masquerade table stays too (pods keep reaching the outside while the router restarts).
    let h3 = &hosts[2];
    let before = report(&dirs[2]).reservations;
    let gw_before = addresses(&c, &h3.ns, "weft");
    c.stop_router(h3, Signal::SIGTERM, Duration::from_secs(15))
        .unwrap();
    assert_eq!(
        addresses(&c, &h3.ns, "weft"),
        gw_before,
        "the gateways stay while the router is down"
    );
    assert!(
        nft_table_exists(&c, &h3.ns),
        "the masquerade table stays while the router is down"
    );
    c.restart_router(h3).unwrap();
    assert_eq!(report(&dirs[2]).reservations, before);
    c.wait_peers(h3, 2, Duration::from_secs(20)).unwrap();
    let again = allocate(&dirs[2], "h3-c11").unwrap();
    assert_eq!(again, by_host[2]["h3-c11"]);
    assert_gateways(&c, h3);
    assert!(nft_table_exists(&c, &h3.ns));
    let st = c.status(h3).unwrap().ipam.unwrap();
    assert!(st.lost.is_empty(), "lost after a restart: {:?}", st.lost);
    let text = c.status(h3).unwrap().render_ipam();
    eprintln!("{text}");
    assert!(text.contains("Reservations: 50"), "{text}");
    let log = c.router_log(h3);
    assert!(
        !log.contains("LOST") && !log.contains("its block is not held"),
        "the restart lost or removed something:\n{log}"
    );
}

/// The packets of ICMP echo requests from `saddr` that reached namespace `ns`'s input hook, by
/// an nftables counter installed with [`count_echo_from`].
fn echo_count(c: &Cluster, ns: &str, name: &str) -> u64 {
    c.lab.nft_counter(ns, "ip", "weftcount", name).unwrap()
}

/// Counts, in `ns`, echo requests coming from each of `sources` (counter `from_<i>`).
fn count_echo_from(c: &Cluster, ns: &str, sources: &[Ipv4Addr]) {
    let mut counters = String::new();
    let mut rules = String::new();
    for (i, s) in sources.iter().enumerate() {
        counters.push_str(&format!("  counter from_{i} {{ }}\n"));
        rules.push_str(&format!(
            "    icmp type echo-request ip saddr {s} counter name \"from_{i}\"\n"
        ));
    }
    c.lab
        .nft(
            ns,
            &format!(
                "table ip weftcount {{\n{counters}  chain in {{\n    type filter hook input priority 0; policy accept;\n{rules}  }}\n}}\n"
            ),
        )
        .unwrap();
}

#[test]
fn pods_leaving_the_pod_cidr_are_masqueraded_and_pod_traffic_is_not() {
    let mut c = cluster("wim");
    let hosts = ipam_cluster(&mut c, 2, &[]);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let mut pods = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let a = allocate(&c.state_dir(h), &format!("pod{i}")).unwrap();
        let pod = c
            .lab
            .add_pod(h, "p1", PodSpec::new(v4(a.address), a.prefix_len, a.mtu))
            .unwrap();
        c.lab
            .exec_ok(
                &pod.ns,
                &[
                    "ip",
                    "route",
                    "add",
                    "default",
                    "via",
                    &a.gateway.to_string(),
                ],
            )
            .unwrap();
        pods.push((pod, a));
    }
    let (p1, a1) = &pods[0];
    let (p2, a2) = &pods[1];

    // Pod to pod across hosts: the pod's own source address arrives.
    count_echo_from(&c, &p2.ns, &[v4(a1.address), h1.underlay_ip]);
    assert!(
        weft_lab::testbed::wait_ping(&c.lab, p1, a2.address, Duration::from_secs(15)),
        "pod on h1 cannot reach the pod on h2"
    );
    assert!(echo_count(&c, &p2.ns, "from_0") >= 1, "pod source not kept");
    assert_eq!(
        echo_count(&c, &p2.ns, "from_1"),
        0,
        "pod traffic was masqueraded"
    );

    // Host to pod: the host's gateway address (inside the pod CIDR) arrives untranslated.
    count_echo_from(&c, &p1.ns, &[v4(a2.gateway)]);
    let reached = poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
        c.lab.ping(&h2.ns, v4(a1.address)).ok().filter(|ok| *ok)
    });
    assert!(reached.is_some(), "h2 cannot reach the pod on h1");
    assert!(echo_count(&c, &p1.ns, "from_0") >= 1);

    // Pod to outside the pod CIDR (h2's underlay address): translated to h1's address.
    count_echo_from(&c, &h2.ns, &[h1.underlay_ip, v4(a1.address)]);
    assert!(
        weft_lab::testbed::wait_ping(&c.lab, p1, h2.underlay_ip, Duration::from_secs(10)),
        "pod on h1 cannot reach h2's underlay address: {}",
        c.router_log(h1)
    );
    assert!(echo_count(&c, &h2.ns, "from_0") >= 1, "not masqueraded");
    assert_eq!(
        echo_count(&c, &h2.ns, "from_1"),
        0,
        "the pod address leaked"
    );
    let rules = c
        .lab
        .exec_ok(&h1.ns, &["nft", "list", "table", "ip", "weft"])
        .unwrap();
    assert!(rules.contains("masquerade"), "{rules}");
}

#[test]
fn leave_refuses_with_reservations_then_hands_everything_back() {
    let mut c = cluster("wil");
    let h = c.add_host("h1").unwrap();
    let dir = c.state_dir(&h);
    let weft = weft_bin().unwrap();
    let args: Vec<String> = [
        "router",
        "--name",
        "h1",
        "--listen",
        &h.underlay_ip.to_string(),
        "--state-dir",
        &dir.display().to_string(),
        "--pod-cidr",
        "10.40.0.0/16",
        "--pod-block-prefix",
        "26",
        "--ipam-grace",
        "90s",
        "--metrics",
        &format!("{}:9102", h.underlay_ip),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let id = c.lab.spawn(&h.ns, &weft, &args, "router-h1").unwrap();
    poll_until(Duration::from_secs(15), Duration::from_millis(50), || {
        api::get::<Report>(&dir, "/v1/status").ok()
    })
    .with_context(|| c.lab.log("router-h1"))
    .unwrap();

    // Alone (no seeds: init peers 1), the host claims a block by itself; /26 blocks fill up, so
    // 70 addresses need two.
    let mut got = BTreeSet::new();
    for i in 0..70 {
        got.insert(v4(allocate(&dir, &format!("c{i}")).unwrap().address));
    }
    assert_eq!(got.len(), 70);
    let r: Report = api::get(&dir, "/v1/status").unwrap();
    let st = r.ipam.unwrap();
    assert_eq!(st.held.len(), 2, "{:?}", st.held);
    let blocks: Vec<gossip::ipam::Block> = st.held.iter().map(|b| b.parse().unwrap()).collect();
    for b in &blocks {
        let std::net::IpAddr::V4(base) = b.base() else {
            panic!("an IPv6 block {b}")
        };
        assert!(!got.contains(&base) && !got.contains(&v4(weft::ipam::gateway(*b))));
    }
    // The first block filled completely: 62 addresses, its last one included (unless it is the
    // pod CIDR's last address).
    let full = blocks
        .iter()
        .find(|b| got.iter().filter(|ip| b.contains(**ip)).count() >= 61)
        .expect("one block filled up");
    let last = full.nth(63).unwrap();
    let std::net::IpAddr::V4(last) = last else {
        panic!("an IPv6 block {full}")
    };
    if last != Ipv4Addr::new(10, 40, 255, 255) {
        assert!(got.contains(&last), "a block's last address is usable");
    }
    let gws: Vec<(Ipv4Addr, u8)> = addresses(&c, &h.ns, "weft")
        .into_iter()
        .filter(|(ip, _)| ip.octets()[..2] == [10, 40])
        .collect();
    assert_eq!(gws.len(), 2, "{gws:?}");

    // The figures are in the metrics too.
    let addr = format!("{}:9102", h.underlay_ip);
    let page = http_get(&h.ns, &addr, "/metrics").unwrap();
    for line in [
        "weft_ipam_reservations 70",
        "weft_ipam_held_blocks 2",
        "weft_ipam_lost_reservations 0",
        "weft_ipam_ready 1",
        "weft_ipam_free_blocks 1022",
    ] {
        assert!(page.contains(line), "no {line:?} in\n{page}");
    }

    let leave = |force: bool| {
        let mut cmd = std::process::Command::new(&weft);
        cmd.arg("leave").arg("--state-dir").arg(&dir);
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    };
    let refused = leave(false);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("409") && err.contains("--force"), "{err}");
    assert_eq!(
        report(&dir).reservations.len(),
        70,
        "a refused leave changes nothing"
    );

    let out = leave(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = c
        .lab
        .wait_exit(id, Duration::from_secs(15))
        .unwrap()
        .unwrap_or_else(|| panic!("the router did not exit: {}", c.lab.log("router-h1")));
    assert!(
        status.success(),
        "exit {status:?}: {}",
        c.lab.log("router-h1")
    );
    let left: Vec<_> = addresses(&c, &h.ns, "weft")
        .into_iter()
        .filter(|(ip, _)| ip.octets()[..2] == [10, 40])
        .collect();
    assert!(left.is_empty(), "gateways left on the bridge: {left:?}");
    assert!(!nft_table_exists(&c, &h.ns));
    let guard = (c
        .lab
        .exec(&h.ns, &["nft", "list", "table", "bridge", "weft_guard"]))
    .unwrap()
    .status;
    assert!(!guard.success(), "weft leave left the port guard's table");
    assert!(!dir.join("reservations.json").exists());
}

#[test]
fn reservations_in_a_block_reclaimed_while_away_are_reported_lost() {
    let mut c = cluster("wir");
    let hosts = ipam_cluster(&mut c, 3, &["--ipam-grace", "3s"]);
    let h3 = &hosts[2];
    let dir3 = c.state_dir(h3);
    let a = allocate(&dir3, "away").unwrap();
    let block = held(&c, h3)[0];
    assert!(block.contains(a.address));

    // h3 vanishes for longer than the grace period: the others take its block back.
    c.stop_router(h3, Signal::SIGKILL, Duration::from_secs(10))
        .unwrap();
    let reclaimed = poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let st = c.status(&hosts[0]).ok()?.ipam?.cluster?;
        let still = st.hosts.iter().any(|h| h.held.contains(&block.to_string()));
        (!still).then_some(st)
    });
    assert!(
        reclaimed.is_some(),
        "h1 never reclaimed {block}: {}",
        c.status(&hosts[0]).unwrap().render_ipam()
    );

    // Back again: the reservation is kept, but reported as lost, loudly.
    c.restart_router(h3).unwrap();
    let st = poll_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let st = c.status(h3).ok()?.ipam?;
        (!st.lost.is_empty()).then_some(st)
    })
    .unwrap_or_else(|| {
        panic!(
            "h3 does not report the lost reservation:\n{}\n{}",
            c.status(h3).unwrap().render_ipam(),
            c.router_log(h3)
        )
    });
    assert_eq!(st.lost.len(), 1);
    assert_eq!(st.lost[0].address, a.address);
    assert!(!st.held.contains(&block.to_string()));
    let text = c.status(h3).unwrap().render_ipam();
    assert!(text.contains("LOST"), "{text}");
    // The log line comes from the router's IPAM round (every 2 s), which may trail the status.
    let logged = poll_until(Duration::from_secs(10), Duration::from_millis(200), || {
        c.router_log(h3).contains("LOST ADDRESS").then_some(())
    });
    assert!(logged.is_some(), "{}", c.router_log(h3));
    assert_eq!(report(&dir3).reservations.len(), 1);
    // The bridge no longer carries the reclaimed block's gateway.
    let gw = weft::ipam::gateway(block);
    let gone = poll_until(Duration::from_secs(10), Duration::from_millis(200), || {
        (!addresses(&c, &h3.ns, "weft")
            .iter()
            .any(|(ip, _)| *ip == gw))
        .then_some(())
    });
    assert!(gone.is_some(), "{gw} still on h3's bridge");
    // An ADD for the same attachment again (the runtime recreating the pod) gets an address in a
    // block h3 holds now (the old one only if h3 won the same block back), and nothing is lost
    // any more.
    let fresh = allocate(&dir3, "away").unwrap();
    let st = c.status(h3).unwrap().ipam.unwrap();
    assert!(st.lost.is_empty(), "{:?}", st.lost);
    assert!(st.held.iter().any(|b| b
        .parse::<gossip::ipam::Block>()
        .unwrap()
        .contains(fresh.address)));
}

/// The API socket takes every request without authentication: the router makes it the owner's
/// only (0600) whatever its umask (docs/security.md, "The local API socket").
#[test]
fn the_api_socket_is_for_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mut c = cluster("wsk");
    let hosts = ipam_cluster(&mut c, 1, &[]);
    let sock = weft_api::socket_path(&c.state_dir(&hosts[0]));
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} has mode {mode:o}", sock.display());
}
