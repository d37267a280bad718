//! The CNI plugin and cluster IPAM end to end, driven the way a container runtime drives them:
//! upstream `cnitool` (ADD, CHECK, DEL through libcni) and, where the exact CNI error code
//! matters or cnitool has no verb (STATUS, GC), the `weft-cni` binary run directly with the `CNI_*`
//! environment and a config on stdin. Hosts and pods are network namespaces of a
//! [`weft_lab::Lab`]; every host runs a real `weft router` with `--pod-cidr`.
//!
//! Needs root, `cnitool`, Debian's `containernetworking-plugins`, iperf3 and the release `weft`
//! and `weft-cni` binaries: `sudo bash scripts/test.sh -p weft-tests --test cni` sets all of that
//! up.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use weft_api::ipam::IpamReport;
use weft_lab::testbed::{ping, weft_bin, Cluster};
use weft_lab::{poll_until, Host, Signal};
use weft_tests::cni::{cnitool_container_id, Cni, CniOutput, CniPod};
use weft_tests::net::{fetch, serve_once};

const POD_CIDR: &str = "10.32.0.0/12";

fn cluster(tag: &str) -> Cluster {
    assert!(
        weft_lab::require_root(),
        "these tests need root and iproute2"
    );
    Cluster::new(tag, weft_bin().unwrap()).unwrap()
}

/// A cluster of one host whose router runs IPAM on [`POD_CIDR`] by itself.
fn one_host(tag: &str) -> (Cluster, Host) {
    let mut c = cluster(tag);
    let h1 = c.add_host("h1").unwrap();
    c.start_router(
        &h1,
        &[],
        &["--pod-cidr", POD_CIDR, "--ipam-init-peers", "1"],
    )
    .unwrap();
    (c, h1)
}

/// A full mesh of `n` routers started with `args`, a CNI harness, each host's `weft` conflist
/// (by network name) and each router's IPAM report once it is ready to serve ADDs.
fn cni_mesh(
    tag: &str,
    args: &[&str],
    n: u8,
) -> (Cluster, Vec<Host>, Cni, Vec<String>, Vec<IpamReport>) {
    let mut c = cluster(tag);
    let hosts = c.full_mesh(n, &vec![args; n as usize]).unwrap();
    let cni = Cni::new(&c.lab).unwrap();
    let nets: Vec<String> = hosts
        .iter()
        .map(|h| conflist(&c, &cni, h, "weft", &[]))
        .collect();
    let ready = hosts
        .iter()
        .map(|h| wait_ipam_ready(&c, h, Duration::from_secs(30)))
        .collect();
    (c, hosts, cni, nets, ready)
}

/// `(address, prefix length)` of `A.B.C.D/N`.
fn parse_cidr(cidr: &str) -> (Ipv4Addr, u8) {
    let (a, n) = cidr.split_once('/').unwrap();
    (a.parse().unwrap(), n.parse().unwrap())
}

fn in_cidr(ip: Ipv4Addr, cidr: &str) -> bool {
    let (base, len) = parse_cidr(cidr);
    block_of(ip, len) == base
}

/// The first address of the `/len` block holding `ip`.
fn block_of(ip: Ipv4Addr, len: u8) -> Ipv4Addr {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Ipv4Addr::from(u32::from(ip) & mask)
}

/// Waits until `host`'s router says it can serve an ADD.
fn wait_ipam_ready(c: &Cluster, host: &Host, timeout: Duration) -> IpamReport {
    let mut last = None;
    let r = poll_until(timeout, Duration::from_millis(100), || {
        let r = c.ipam(host);
        let ok = r.as_ref().is_ok_and(|r| r.ready);
        last = Some(r.map_err(|e| format!("{e:#}")));
        ok.then(|| last.clone().unwrap().unwrap())
    });
    r.unwrap_or_else(|| {
        panic!(
            "{}'s IPAM not ready after {timeout:?}: {last:?}; log:\n{}",
            host.name,
            c.router_log(host)
        )
    })
}

/// Writes `host`'s conflist `name` whose first plugin is `weft-cni` for that host's router,
/// followed by `more`; returns the network name.
fn conflist(c: &Cluster, cni: &Cni, host: &Host, name: &str, more: &[Value]) -> String {
    let mut plugins = vec![Cni::weft_plugin(&c.state_dir(host))];
    plugins.extend(more.iter().cloned());
    cni.write_conflist(host, name, plugins).unwrap()
}

/// A new pod namespace `<prefix>-<host>-<name>`; returns its name.
fn pod_netns(c: &mut Cluster, host: &Host, name: &str) -> String {
    c.lab.add_netns(&format!("{}-{name}", host.name)).unwrap()
}

/// `cnitool add` of a new pod `name` on `host`; panics with both outputs if it fails.
fn add(
    c: &mut Cluster,
    cni: &Cni,
    host: &Host,
    net: &str,
    name: &str,
    env: &[(&str, &str)],
) -> CniPod {
    let ns = pod_netns(c, host, name);
    let out = cni.cnitool(&c.lab, host, "add", net, &ns, env).unwrap();
    assert!(
        out.success(),
        "cnitool add {name} on {} failed: {out}\nrouter log:\n{}",
        host.name,
        c.router_log(host)
    );
    let id = cnitool_container_id(&format!("/run/netns/{ns}"));
    CniPod::from_result(host, &ns, &id, "eth0", out.json().unwrap()).unwrap()
}

fn cnitool(c: &Cluster, cni: &Cni, pod: &CniPod, cmd: &str, net: &str) -> CniOutput {
    cni.cnitool(&c.lab, &pod.host, cmd, net, &pod.ns, &[])
        .unwrap()
}

fn wait_ping(c: &Cluster, from_ns: &str, to: Ipv4Addr, timeout: Duration) -> bool {
    poll_until(timeout, Duration::from_millis(20), || {
        ping(&c.lab, from_ns, to, 1)
            .ok()
            .filter(|p| p.received == 1)
    })
    .is_some()
}

fn assert_pings(c: &Cluster, from: &CniPod, to: Ipv4Addr) {
    assert!(
        wait_ping(c, &from.ns, to, Duration::from_secs(10)),
        "{} ({}, on {}) cannot reach {to}\n{} log:\n{}",
        from.ns,
        from.ip,
        from.host.name,
        from.host.name,
        c.router_log(&from.host)
    );
}

/// The reserved addresses of `host`, by container id.
fn reservations(c: &Cluster, host: &Host) -> BTreeMap<String, Ipv4Addr> {
    c.ipam(host)
        .unwrap()
        .reservations
        .into_iter()
        .map(|r| match r.address {
            std::net::IpAddr::V4(a) => (r.attachment.container_id, a),
            std::net::IpAddr::V6(a) => panic!("an IPv6 address {a} from an IPv4 pod CIDR"),
        })
        .collect()
}

/// Every reservation of every live host, checked to be distinct: returns address -> (host,
/// container id).
fn all_reservations(c: &Cluster, hosts: &[Host]) -> BTreeMap<Ipv4Addr, (String, String)> {
    let mut all = BTreeMap::new();
    for h in hosts {
        for (id, ip) in reservations(c, h) {
            if let Some(prev) = all.insert(ip, (h.name.clone(), id.clone())) {
                panic!(
                    "{ip} is reserved twice: by {prev:?} and by ({}, {id})",
                    h.name
                );
            }
        }
    }
    all
}

/// Checks what ADD did inside the pod and on the host: the address and default route the result
/// gave, the router's MTU, and the host end on the router's bridge in hairpin mode.
fn assert_wired(c: &Cluster, pod: &CniPod) {
    let lab = &c.lab;
    let ipam = c.ipam(&pod.host).unwrap();
    let addr: Value = serde_json::from_str(
        &lab.exec_ok(&pod.ns, &["ip", "-j", "addr", "show", "dev", &pod.ifname])
            .unwrap(),
    )
    .unwrap();
    let has_addr = addr[0]["addr_info"].as_array().unwrap().iter().any(|a| {
        a["local"] == json!(pod.ip.to_string()) && a["prefixlen"] == json!(pod.prefix_len)
    });
    assert!(
        has_addr,
        "{} lacks {}/{}: {addr}",
        pod.ns, pod.ip, pod.prefix_len
    );
    assert_eq!(addr[0]["mtu"], json!(ipam.mtu), "pod MTU: {addr}");
    let gw = pod.gateway.expect("the result names a gateway");
    let routes = lab
        .exec_ok(&pod.ns, &["ip", "-j", "route", "show", "default"])
        .unwrap();
    let routes: Value = serde_json::from_str(&routes).unwrap();
    assert_eq!(routes[0]["gateway"], json!(gw.to_string()), "{routes}");
    let host_ifs = pod.host_ifaces();
    assert_eq!(host_ifs.len(), 1, "one host interface in {}", pod.result);
    let link = lab
        .exec_ok(
            &pod.host.ns,
            &["ip", "-d", "-j", "link", "show", "dev", &host_ifs[0]],
        )
        .unwrap();
    let link: Value = serde_json::from_str(&link).unwrap();
    assert_eq!(link[0]["master"], json!(ipam.bridge), "{link}");
    assert_eq!(
        link[0]["linkinfo"]["info_slave_data"]["hairpin"],
        json!(true),
        "hairpin mode: {link}"
    );
}

const IPAM_3: &[&str] = &["--pod-cidr", POD_CIDR, "--ipam-init-peers", "3"];

/// The harness itself, with nothing of Weft in the loop: cnitool runs the standard `bridge` and
/// `host-local` plugins in a lab host, through the same `CNI_PATH` and `NETCONFPATH` the Weft
/// tests use. When this passes and a Weft test fails, the failure is Weft's.
#[test]
fn harness_drives_cnitool_with_the_standard_plugins() {
    let mut c = cluster("wch");
    let h1 = c.add_host("h1").unwrap();
    let cni = Cni::new(&c.lab).unwrap();
    for p in ["bridge", "host-local"] {
        cni.link_system_plugin(p).unwrap();
    }
    for p in ["weft-cni", "portmap", "bandwidth", "tuning"] {
        assert!(cni.bin_dir().join(p).is_file(), "{p} in CNI_PATH");
    }
    let data = c.lab.dir().join("host-local");
    let net = cni
        .write_conflist(
            &h1,
            "std",
            vec![json!({
                "type": "bridge", "bridge": "cnitest0", "isGateway": true,
                "ipam": {"type": "host-local", "subnet": "10.99.0.0/24",
                         "dataDir": data.display().to_string()}
            })],
        )
        .unwrap();
    let ns = pod_netns(&mut c, &h1, "p1");
    let out = cni
        .cnitool(&c.lab, &h1, "add", &net, &ns, &[])
        .unwrap()
        .ok()
        .unwrap();
    let pod = CniPod::from_result(&h1, &ns, "x", "eth0", out.json().unwrap()).unwrap();
    assert!(in_cidr(pod.ip, "10.99.0.0/24"), "{}", pod.result);
    assert!(c.lab.ping(&h1.ns, pod.ip).unwrap(), "host reaches the pod");
    cni.cnitool(&c.lab, &h1, "check", &net, &ns, &[])
        .unwrap()
        .ok()
        .unwrap();
    cni.cnitool(&c.lab, &h1, "del", &net, &ns, &[])
        .unwrap()
        .ok()
        .unwrap();
    let links = c.lab.exec_ok(&ns, &["ip", "-o", "link"]).unwrap();
    assert!(!links.contains("eth0"), "DEL removed eth0: {links}");
    // The plugin binary answers VERSION through the runner too.
    let v = cni
        .run_plugin(&c.lab, &h1, &[("CNI_COMMAND", "VERSION")], b"{}")
        .unwrap()
        .ok()
        .unwrap();
    assert!(v.stdout.contains("1.0.0"), "{v}");
}

/// Acceptance 1: cnitool ADD on 3 hosts, pods ping each other across hosts at the addresses CNI
/// returned; the host reaches pods; pod-to-pod is not translated and pod-to-outside is
/// masqueraded; CHECK passes and then fails once the address is removed by hand; DEL frees the
/// address, a repeated DEL and a DEL after the netns is gone succeed.
#[test]
fn cnitool_add_check_del_on_three_hosts() {
    let (mut c, hosts, cni, nets, ready) = cni_mesh("wca", IPAM_3, 3);
    for r in &ready {
        assert_eq!(r.cidr, POD_CIDR);
    }
    let mut pods = Vec::new();
    for (h, net) in hosts.iter().zip(&nets) {
        for name in ["p1", "p2"] {
            pods.push(add(&mut c, &cni, h, net, name, &[]));
        }
    }
    let ips: BTreeSet<Ipv4Addr> = pods.iter().map(|p| p.ip).collect();
    assert_eq!(ips.len(), pods.len(), "distinct addresses: {ips:?}");
    for p in &pods {
        assert!(in_cidr(p.ip, POD_CIDR), "{} outside {POD_CIDR}", p.ip);
        assert_eq!(p.prefix_len, 12, "the whole pod CIDR is one segment");
        assert_ne!(p.gateway, Some(p.ip));
        assert_wired(&c, p);
        assert_eq!(
            reservations(&c, &p.host).get(&p.container_id),
            Some(&p.ip),
            "{} reserves {} for {}",
            p.host.name,
            p.ip,
            p.container_id
        );
    }
    all_reservations(&c, &hosts);

    // Every pod reaches every other pod; the hosts reach their own pods and the others'.
    for a in &pods {
        for b in &pods {
            if a.ns != b.ns {
                assert_pings(&c, a, b.ip);
            }
        }
    }
    for h in &hosts {
        for p in [&pods[0], &pods[5]] {
            assert!(
                wait_ping(&c, &h.ns, p.ip, Duration::from_secs(10)),
                "host {} cannot reach pod {}",
                h.name,
                p.ip
            );
        }
    }

    // Pod to pod: the server sees the pod's own address. Pod to a host outside the pod CIDR:
    // masqueraded to the pod's host's address.
    let (a, b) = (&pods[0], &pods[2]);
    let server = serve_once(
        &b.ns,
        SocketAddr::from((b.ip, 7001)),
        b"pod",
        Duration::from_secs(15),
    );
    assert_eq!(fetch(&a.ns, SocketAddr::from((b.ip, 7001))), "pod");
    assert_eq!(
        server.join().unwrap().ip(),
        a.ip,
        "pod-to-pod is not translated"
    );
    let h2 = &hosts[1];
    let server = serve_once(
        &h2.ns,
        SocketAddr::from((h2.underlay_ip, 7002)),
        b"host",
        Duration::from_secs(15),
    );
    assert_eq!(
        fetch(&a.ns, SocketAddr::from((h2.underlay_ip, 7002))),
        "host"
    );
    assert_eq!(
        server.join().unwrap().ip(),
        hosts[0].underlay_ip,
        "pod-to-outside is masqueraded to the host's address"
    );

    // CHECK passes, then fails once the address is gone.
    for (i, p) in pods.iter().enumerate() {
        let out = cnitool(&c, &cni, p, "check", &nets[i / 2]);
        assert!(out.success(), "CHECK of {}: {out}", p.ns);
    }
    let victim = &pods[1];
    let cidr = format!("{}/{}", victim.ip, victim.prefix_len);
    c.lab
        .exec_ok(&victim.ns, &["ip", "addr", "del", &cidr, "dev", "eth0"])
        .unwrap();
    let out = cnitool(&c, &cni, victim, "check", &nets[0]);
    assert!(!out.success(), "CHECK passed without the address: {out}");

    // DEL frees the address and removes the host end; a second DEL succeeds.
    let host_if = victim.host_ifaces()[0].clone();
    for round in 0..2 {
        let out = cnitool(&c, &cni, victim, "del", &nets[0]);
        assert!(out.success(), "DEL #{round} of {}: {out}", victim.ns);
        assert!(
            !reservations(&c, &victim.host).contains_key(&victim.container_id),
            "{} still reserved after DEL",
            victim.ip
        );
        let links = c
            .lab
            .exec_ok(&victim.host.ns, &["ip", "-o", "link"])
            .unwrap();
        assert!(
            !links.contains(&format!(" {host_if}@")),
            "{host_if} left on the host: {links}"
        );
    }

    // DEL after the runtime already deleted the netns.
    let gone = &pods[3];
    c.lab.remove_netns(&gone.ns).unwrap();
    let out = cnitool(&c, &cni, gone, "del", &nets[1]);
    assert!(out.success(), "DEL without a netns: {out}");
    assert!(!reservations(&c, &gone.host).contains_key(&gone.container_id));
    let out = cnitool(&c, &cni, gone, "del", &nets[1]);
    assert!(out.success(), "repeated DEL without a netns: {out}");
}

/// One pending ADD: the host, the container id and the pod's namespace.
type Job = (Host, String, String);

/// Makes the namespaces of `n` pods named `<tag>NN` on each host.
fn make_jobs(c: &mut Cluster, hosts: &[Host], tag: &str, n: usize) -> Vec<Job> {
    let mut jobs = Vec::new();
    for h in hosts {
        for i in 0..n {
            let ns = pod_netns(c, h, &format!("{tag}{i:02}"));
            jobs.push((h.clone(), format!("{}-{tag}{i:02}", h.name), ns));
        }
    }
    jobs
}

/// Runs all `jobs` at once, each by running `weft-cni` directly (the retry-on-error-11 loop
/// needs the CNI error code, which cnitool does not print). Every ADD must succeed within
/// `patience`, except on `may_defer` hosts, where an ADD still answering 11 is handed back as
/// deferred.
fn add_concurrently(
    c: &Cluster,
    cni: &Cni,
    confs: &BTreeMap<String, Value>,
    jobs: Vec<Job>,
    patience: Duration,
    may_defer: &[&Host],
) -> (Vec<CniPod>, Vec<Job>) {
    let lab = &c.lab;
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(h, id, ns)| {
                s.spawn(move || cni.try_add_direct(lab, h, id, ns, &confs[&h.name], patience))
            })
            .collect();
        handles.into_iter().map(|j| j.join().unwrap()).collect()
    });
    let mut pods = Vec::new();
    let mut deferred = Vec::new();
    for ((h, id, ns), r) in jobs.into_iter().zip(results) {
        match r {
            Ok(Ok(p)) => pods.push(p),
            Ok(Err(_)) if may_defer.iter().any(|d| **d == h) => deferred.push((h, id, ns)),
            Ok(Err(out)) => panic!(
                "ADD of {id} on {} kept answering 11 for {patience:?}: {out}\nlog:\n{}",
                h.name,
                c.router_log(&h)
            ),
            Err(e) => panic!("{e:#}\nlog of {}:\n{}", h.name, c.router_log(&h)),
        }
    }
    (pods, deferred)
}

/// Checks that no address is used twice, that the results agree with the reservations, and that
/// no `/block_len` block has addresses of two hosts.
fn assert_no_sharing(c: &Cluster, hosts: &[Host], pods: &[CniPod], block_len: u8) {
    let all = all_reservations(c, hosts);
    let ips: BTreeSet<Ipv4Addr> = pods.iter().map(|p| p.ip).collect();
    assert_eq!(ips.len(), pods.len(), "two pods share an address");
    for p in pods {
        assert!(in_cidr(p.ip, POD_CIDR), "{} outside {POD_CIDR}", p.ip);
        assert_eq!(
            all.get(&p.ip),
            Some(&(p.host.name.clone(), p.container_id.clone())),
            "{} of {} is not reserved for it",
            p.ip,
            p.container_id
        );
    }
    assert_eq!(all.len(), pods.len(), "reservations without a pod: {all:?}");
    let mut owner: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
    for p in pods {
        let b = block_of(p.ip, block_len);
        let o = *owner.entry(b).or_insert(&p.host.name);
        assert_eq!(
            o, p.host.name,
            "block {b}/{block_len} has pods of {o} and {}",
            p.host.name
        );
    }
}

/// Acceptance 2: 50 concurrent ADDs per host on 3 hosts whose routers started at the same moment
/// (small blocks, so every host needs several); then a partition between h1 and the others,
/// more ADDs on both sides, a heal: no two pods ever share an address, and pods reach each other.
#[test]
fn concurrent_adds_and_a_partition_never_share_an_address() {
    const BLOCK: u8 = 27;
    let mut c = cluster("wcc");
    let hosts: Vec<Host> = (1..=3)
        .map(|i| c.add_host(&format!("h{i}")).unwrap())
        .collect();
    let cni = Cni::new(&c.lab).unwrap();
    let confs: BTreeMap<String, Value> = hosts
        .iter()
        .map(|h| {
            let conf = cni.plugin_conf("weft", Cni::weft_plugin(&c.state_dir(h)));
            (h.name.clone(), conf)
        })
        .collect();
    let block = BLOCK.to_string();
    let args = [
        "--pod-cidr",
        POD_CIDR,
        "--pod-block-prefix",
        block.as_str(),
        "--ipam-init-peers",
        "3",
    ];
    // The namespaces first, so that the ADDs start right after the routers.
    let jobs = make_jobs(&mut c, &hosts, "a", 50);
    c.start_routers_together(&hosts, &args).unwrap();
    let start = Instant::now();
    let (mut pods, deferred) =
        add_concurrently(&c, &cni, &confs, jobs, Duration::from_secs(90), &[]);
    assert!(deferred.is_empty());
    eprintln!(
        "150 concurrent ADDs done {:?} after the routers started",
        start.elapsed()
    );
    assert_eq!(pods.len(), 150);
    assert_no_sharing(&c, &hosts, &pods, BLOCK);
    for h in &hosts {
        let blocks: BTreeSet<Ipv4Addr> = pods
            .iter()
            .filter(|p| p.host == *h)
            .map(|p| block_of(p.ip, BLOCK))
            .collect();
        assert!(blocks.len() >= 2, "{} has 50 pods in {blocks:?}", h.name);
    }
    for h in &hosts {
        c.wait_peers(h, 2, Duration::from_secs(20)).unwrap();
    }
    let firsts: Vec<CniPod> = hosts
        .iter()
        .map(|h| pods.iter().find(|p| p.host == *h).unwrap().clone())
        .collect();
    let lasts: Vec<CniPod> = hosts
        .iter()
        .map(|h| pods.iter().rev().find(|p| p.host == *h).unwrap().clone())
        .collect();
    for a in &firsts {
        for b in firsts.iter().chain(&lasts) {
            if a.host != b.host {
                assert_pings(&c, a, b.ip);
            }
        }
    }

    // Partition h1 from h2 and h3.
    let (u1, u2, u3) = (
        hosts[0].underlay_ip,
        hosts[1].underlay_ip,
        hosts[2].underlay_ip,
    );
    let ul = c.lab.underlay_ns().to_owned();
    c.lab
        .nft(
            &ul,
            &format!(
                "table bridge weftpart {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    ip saddr {u1} ip daddr {{ {u2}, {u3} }} drop\n    ip saddr {{ {u2}, {u3} }} ip daddr {u1} drop\n  }}\n}}\n"
            ),
        )
        .unwrap();
    c.wait_peers(&hosts[0], 0, Duration::from_secs(30)).unwrap();
    c.wait_peers(&hosts[1], 1, Duration::from_secs(30)).unwrap();
    c.wait_peers(&hosts[2], 1, Duration::from_secs(30)).unwrap();
    // The majority side can claim blocks; the minority side serves from the blocks it holds, and
    // may have to wait ("try again later") once they are full.
    let jobs = make_jobs(&mut c, &hosts, "b", 20);
    let (more, deferred) = add_concurrently(
        &c,
        &cni,
        &confs,
        jobs,
        Duration::from_secs(20),
        &[&hosts[0]],
    );
    eprintln!(
        "during the partition: {} ADDs done, {} on h1 deferred",
        more.len(),
        deferred.len()
    );
    pods.extend(more);
    assert_no_sharing(&c, &hosts, &pods, BLOCK);

    c.lab.nft(&ul, "delete table bridge weftpart\n").unwrap();
    for h in &hosts {
        c.wait_peers(h, 2, Duration::from_secs(30)).unwrap();
    }
    for (h, id, ns) in &deferred {
        let p = cni
            .add_direct(&c.lab, h, id, ns, &confs[&h.name], Duration::from_secs(30))
            .unwrap();
        pods.push(p);
    }
    assert_eq!(pods.len(), 150 + 60);
    assert_no_sharing(&c, &hosts, &pods, BLOCK);
    let news: Vec<CniPod> = hosts
        .iter()
        .map(|h| pods.iter().rev().find(|p| p.host == *h).unwrap().clone())
        .collect();
    for a in firsts.iter().chain(&news) {
        for b in firsts.iter().chain(&news) {
            if a.host != b.host {
                assert_pings(&c, a, b.ip);
            }
        }
    }
}

fn status_op(c: &Cluster, cni: &Cni, host: &Host, conf: &Value) -> CniOutput {
    let env = [
        ("CNI_COMMAND", "STATUS"),
        ("CNI_PATH", cni.bin_dir().to_str().unwrap()),
    ];
    cni.run_plugin(&c.lab, host, &env, &serde_json::to_vec(conf).unwrap())
        .unwrap()
}

/// Acceptance 3: GC releases the reservations of attachments the runtime no longer lists;
/// STATUS succeeds while the router serves and answers 50 once it is stopped (and ADD 11).
#[test]
fn gc_releases_unlisted_attachments_and_status_follows_the_router() {
    let (mut c, h1) = one_host("wcg");
    let cni = Cni::new(&c.lab).unwrap();
    let mut conf = cni.plugin_conf("weft", Cni::weft_plugin(&c.state_dir(&h1)));
    conf["cniVersion"] = json!("1.1.0");
    let ready = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        status_op(&c, &cni, &h1, &conf).success().then_some(())
    });
    assert!(
        ready.is_some(),
        "STATUS never succeeded: {}",
        status_op(&c, &cni, &h1, &conf)
    );

    let mut pods = Vec::new();
    for name in ["ga", "gb", "gc"] {
        let ns = pod_netns(&mut c, &h1, name);
        let p = cni
            .add_direct(&c.lab, &h1, name, &ns, &conf, Duration::from_secs(20))
            .unwrap();
        pods.push(p);
    }
    assert_eq!(reservations(&c, &h1).len(), 3);

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ga", "ifname": "eth0"}]);
    let env = [
        ("CNI_COMMAND", "GC"),
        ("CNI_PATH", cni.bin_dir().to_str().unwrap()),
    ];
    let out = cni
        .run_plugin(&c.lab, &h1, &env, &serde_json::to_vec(&gc).unwrap())
        .unwrap();
    assert!(out.success(), "GC: {out}");
    let left = reservations(&c, &h1);
    assert_eq!(
        left.keys().collect::<Vec<_>>(),
        vec!["ga"],
        "GC keeps only the listed attachment"
    );
    assert_eq!(left["ga"], pods[0].ip);
    // The runtime's DEL of a collected attachment still succeeds.
    let out = cni
        .plugin_op(&c.lab, &h1, "DEL", "gb", &pods[1].ns, &conf)
        .unwrap();
    assert!(out.success(), "DEL after GC: {out}");

    // The router stops: STATUS 50, ADD 11 (try again later).
    c.stop_router(&h1, Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();
    let out = status_op(&c, &cni, &h1, &conf);
    assert_eq!(out.error_code(), Some(50), "STATUS without a router: {out}");
    let ns = pod_netns(&mut c, &h1, "gd");
    let out = cni.plugin_op(&c.lab, &h1, "ADD", "gd", &ns, &conf).unwrap();
    assert_eq!(out.error_code(), Some(11), "ADD without a router: {out}");

    c.restart_router(&h1).unwrap();
    let back = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        status_op(&c, &cni, &h1, &conf).success().then_some(())
    });
    assert!(
        back.is_some(),
        "STATUS after the restart: {}",
        status_op(&c, &cni, &h1, &conf)
    );
    assert_eq!(reservations(&c, &h1).get("ga"), Some(&pods[0].ip));
}

/// Acceptance 4: a router stopped with SIGTERM, and one killed with SIGKILL, comes back with
/// every reservation, the pods keep their addresses and reach each other again, CHECK passes,
/// and a new ADD does not reuse a reserved address.
#[test]
fn router_restart_keeps_addresses_and_connectivity() {
    let ipam_2: &[&str] = &["--pod-cidr", POD_CIDR, "--ipam-init-peers", "2"];
    let (mut c, hosts, cni, nets, _) = cni_mesh("wcr", ipam_2, 2);
    let mut pods = Vec::new();
    for (h, net) in hosts.iter().zip(&nets) {
        for name in ["p1", "p2"] {
            pods.push(add(&mut c, &cni, h, net, name, &[]));
        }
    }
    assert_pings(&c, &pods[0], pods[2].ip);
    let before: Vec<_> = hosts.iter().map(|h| reservations(&c, h)).collect();

    for (round, signal) in [Signal::SIGTERM, Signal::SIGKILL].into_iter().enumerate() {
        c.stop_router(&hosts[0], signal, Duration::from_secs(10))
            .unwrap();
        c.restart_router(&hosts[0]).unwrap();
        for h in &hosts {
            c.wait_peers(h, 1, Duration::from_secs(20)).unwrap();
        }
        let after: Vec<_> = hosts.iter().map(|h| reservations(&c, h)).collect();
        assert_eq!(after, before, "reservations after {signal}");
        for (i, p) in pods.iter().enumerate() {
            assert_wired(&c, p);
            let out = cnitool(&c, &cni, p, "check", &nets[i / 2]);
            assert!(out.success(), "CHECK of {} after {signal}: {out}", p.ns);
        }
        for a in &pods {
            for b in &pods {
                if a.ns != b.ns {
                    assert_pings(&c, a, b.ip);
                }
            }
        }
        // A new pod gets a new address.
        let p = add(&mut c, &cni, &hosts[0], &nets[0], &format!("n{round}"), &[]);
        let taken: BTreeSet<Ipv4Addr> = before.iter().flat_map(|r| r.values().copied()).collect();
        assert!(!taken.contains(&p.ip), "{} reused after {signal}", p.ip);
        assert_pings(&c, &p, pods[3].ip);
        let out = cnitool(&c, &cni, &p, "del", &nets[0]);
        assert!(out.success(), "{out}");
    }
}

/// Acceptance 5: a host gone (router killed, namespace deleted) longer than the grace period has
/// its block reclaimed and reused by another host; a /26 of /28 blocks leaves no other choice,
/// and the block is not reused before the grace period has passed.
#[test]
fn a_removed_hosts_block_is_reclaimed_after_the_grace_period() {
    const CIDR: &str = "10.32.0.0/26";
    const BLOCK: u8 = 28;
    const GRACE: Duration = Duration::from_secs(5);
    let mut c = cluster("wcg5");
    let args: &[&str] = &[
        "--pod-cidr",
        CIDR,
        "--pod-block-prefix",
        "28",
        "--ipam-grace",
        "5s",
        "--ipam-init-peers",
        "3",
    ];
    let hosts = c.full_mesh(3, &[args; 3]).unwrap();
    let cni = Cni::new(&c.lab).unwrap();
    let confs: Vec<Value> = hosts
        .iter()
        .map(|h| cni.plugin_conf("weft", Cni::weft_plugin(&c.state_dir(h))))
        .collect();
    let mut first = Vec::new();
    for (h, conf) in hosts.iter().zip(&confs) {
        let ns = pod_netns(&mut c, h, "p0");
        let id = format!("{}-p0", h.name);
        let p = cni
            .add_direct(&c.lab, h, &id, &ns, conf, Duration::from_secs(30))
            .unwrap();
        assert!(in_cidr(p.ip, CIDR), "{} outside {CIDR}", p.ip);
        first.push(p);
    }
    let gone_block = block_of(first[2].ip, BLOCK);
    assert_ne!(block_of(first[0].ip, BLOCK), gone_block);
    assert_ne!(block_of(first[1].ip, BLOCK), gone_block);

    // h3 disappears for good.
    c.stop_router(&hosts[2], Signal::SIGKILL, Duration::from_secs(5))
        .unwrap();
    let killed = Instant::now();
    c.lab.remove_netns(&hosts[2].ns).unwrap();
    for h in &hosts[..2] {
        c.wait_peers(h, 1, Duration::from_secs(20)).unwrap();
    }

    // h2 adds pods until one lands in h3's old block: it must fill the rest of the CIDR first.
    // Once the CIDR is full the router refuses ADDs (the pod CIDR has no free block) until h3's
    // block is reclaimed; like a kubelet, the test retries the same ADD meanwhile.
    let mut reused = None;
    let mut added = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 1..=64 {
        let ns = pod_netns(&mut c, &hosts[1], &format!("r{i:02}"));
        let id = format!("h2-r{i:02}");
        let p = loop {
            let out = cni
                .plugin_op(&c.lab, &hosts[1], "ADD", &id, &ns, &confs[1])
                .unwrap();
            if out.success() {
                break CniPod::from_result(&hosts[1], &ns, &id, "eth0", out.json().unwrap())
                    .unwrap();
            }
            let full = out.error_code() == Some(11) || out.stdout.contains("no free block");
            assert!(
                full && Instant::now() < deadline,
                "ADD of {id} on h2: {out}\nh2 log:\n{}",
                c.router_log(&hosts[1])
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(in_cidr(p.ip, CIDR), "{} outside {CIDR}", p.ip);
        let hit = block_of(p.ip, BLOCK) == gone_block;
        added.push(p);
        if hit {
            reused = Some(killed.elapsed());
            break;
        }
    }
    let after = reused.unwrap_or_else(|| {
        panic!(
            "h2 never got an address of h3's block {gone_block}/{BLOCK}; h2 log:\n{}",
            c.router_log(&hosts[1])
        )
    });
    eprintln!(
        "h3's block reused {after:?} after h3 was killed, {} ADDs on h2",
        added.len()
    );
    // The routers sample reachability every 0.5 s, so "gone" starts up to that long before the
    // kill; a second of slack keeps the check about the grace period, not the sampling.
    assert!(
        after >= GRACE - Duration::from_secs(1),
        "reused {after:?} after the kill, before the {GRACE:?} grace period"
    );
    let live = &hosts[..2];
    let mut pods: Vec<CniPod> = first[..2].to_vec();
    pods.extend(added.iter().cloned());
    assert_no_sharing(&c, live, &pods, BLOCK);
    assert_pings(&c, added.last().unwrap(), first[0].ip);
}

fn iperf_bps(c: &Cluster, from: &CniPod, server: Ipv4Addr, reverse: bool) -> f64 {
    let server = server.to_string();
    let mut args = vec![
        "iperf3",
        "-c",
        &server,
        "-t",
        "4",
        "-O",
        "1",
        "--connect-timeout",
        "5000",
        "-J",
    ];
    if reverse {
        args.push("-R");
    }
    let out = c.lab.exec(&from.ns, &args).unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| {
            panic!(
                "iperf3 from {} failed ({}): {}",
                from.ns,
                out.status,
                String::from_utf8_lossy(&out.stdout)
            )
        })
}

/// Acceptance 6: `weft-cni` first in a conflist, followed by `portmap`, `bandwidth` and `tuning`:
/// a host port reaches a server in the pod from another host; the bandwidth limit holds in both
/// directions (iperf3), while a pod without it goes far faster; tuning's sysctl is applied.
#[test]
fn portmap_bandwidth_and_tuning_chained_after_weft_cni() {
    const LIMIT: u64 = 50_000_000;
    let mut c = cluster("wcp");
    let ipam_2: &[&str] = &["--pod-cidr", POD_CIDR, "--ipam-init-peers", "2"];
    let hosts = c.full_mesh(2, &[ipam_2; 2]).unwrap();
    let cni = Cni::new(&c.lab).unwrap();
    let chain = [
        json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}),
        json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
        json!({"type": "tuning", "sysctl": {"net.core.somaxconn": "1234"}}),
    ];
    let net1 = conflist(&c, &cni, &hosts[0], "chain", &chain);
    let net2 = conflist(&c, &cni, &hosts[1], "chain", &chain);
    for h in &hosts {
        wait_ipam_ready(&c, h, Duration::from_secs(30));
    }
    let caps = json!({
        "portMappings": [{"hostPort": 8080, "containerPort": 8000, "protocol": "tcp"}],
        "bandwidth": {"ingressRate": LIMIT, "ingressBurst": 4_000_000,
                      "egressRate": LIMIT, "egressBurst": 4_000_000}
    })
    .to_string();
    let limited = add(
        &mut c,
        &cni,
        &hosts[0],
        &net1,
        "web",
        &[("CAP_ARGS", &caps)],
    );
    let free = add(&mut c, &cni, &hosts[0], &net1, "free", &[]);
    let sink = add(&mut c, &cni, &hosts[1], &net2, "sink", &[]);
    // CHECK through the whole chain cannot pass with Debian's plugins 1.1.1 (the same happens
    // with the reference `bridge` plugin in place of weft-cni): portmap looks for an IPv6 rule
    // an IPv4-only pod never had (containernetworking/plugins#819), and bandwidth crashes on a
    // pod without a limit (#1221). So weft-cni's own CHECK runs as libcni would run it first in
    // the chain: with the chain's final result as prevResult.
    for (p, h) in [
        (&limited, &hosts[0]),
        (&free, &hosts[0]),
        (&sink, &hosts[1]),
    ] {
        let mut conf = cni.plugin_conf("chain", Cni::weft_plugin(&c.state_dir(h)));
        conf["prevResult"] = p.result.clone();
        let out = cni
            .plugin_op(&c.lab, h, "CHECK", &p.container_id, &p.ns, &conf)
            .unwrap();
        assert!(
            out.success(),
            "weft-cni CHECK of {} after the chain: {out}",
            p.ns
        );
    }
    let somaxconn = c
        .lab
        .exec_ok(&limited.ns, &["sysctl", "-n", "net.core.somaxconn"])
        .unwrap();
    assert_eq!(somaxconn.trim(), "1234", "tuning's sysctl in the pod");
    assert_pings(&c, &limited, sink.ip);

    // portmap: h2 connects to h1's address, port 8080, and reaches the pod's port 8000.
    let server = serve_once(
        &limited.ns,
        SocketAddr::from(([0, 0, 0, 0], 8000)),
        b"weft pod",
        Duration::from_secs(20),
    );
    let got = fetch(&hosts[1].ns, SocketAddr::from((hosts[0].underlay_ip, 8080)));
    assert_eq!(got, "weft pod", "the host port reaches the pod");
    server.join().unwrap();

    // bandwidth: iperf3 to a pod on h2, both directions.
    let srv = c
        .lab
        .spawn(
            &sink.ns,
            std::path::Path::new("iperf3"),
            &["-s"],
            "iperf-sink",
        )
        .unwrap();
    poll_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let o = c
            .lab
            .exec(&sink.ns, &["ss", "-Hltn", "sport = :5201"])
            .ok()?;
        (!String::from_utf8_lossy(&o.stdout).trim().is_empty()).then_some(())
    })
    .expect("iperf3 server listening");
    let limit = LIMIT as f64;
    let mut seen = Vec::new();
    for reverse in [false, true] {
        let way = if reverse {
            "into the pod"
        } else {
            "out of the pod"
        };
        let slow = iperf_bps(&c, &limited, sink.ip, reverse);
        let fast = iperf_bps(&c, &free, sink.ip, reverse);
        seen.push(format!(
            "{way}: limited {:.1} Mbit/s, free {:.1} Mbit/s",
            slow / 1e6,
            fast / 1e6
        ));
        assert!(
            slow < 1.2 * limit,
            "{way}: {slow} bit/s over the 50 Mbit/s limit"
        );
        assert!(
            slow > 0.5 * limit,
            "{way}: {slow} bit/s, far under the limit"
        );
        assert!(
            fast > 3.0 * limit,
            "{way}: the unlimited pod only did {fast} bit/s"
        );
    }
    eprintln!("{}", seen.join("; "));
    c.lab.kill(srv, Signal::SIGTERM).unwrap();
    let _ = c.lab.wait_exit(srv, Duration::from_secs(5));

    // DEL through the whole chain.
    for (p, net, env) in [
        (&limited, &net1, vec![("CAP_ARGS", caps.as_str())]),
        (&free, &net1, vec![]),
        (&sink, &net2, vec![]),
    ] {
        let out = cni
            .cnitool(&c.lab, &p.host, "del", net, &p.ns, &env)
            .unwrap();
        assert!(out.success(), "DEL of {} through the chain: {out}", p.ns);
    }
    let rules = c
        .lab
        .exec_ok(&hosts[0].ns, &["iptables-save", "-t", "nat"])
        .unwrap();
    assert!(
        !rules.contains("8080"),
        "portmap's rule outlived DEL: {rules}"
    );
}

/// Acceptance 7: bad input through the plugin binary gets the spec's error code as a JSON error
/// on stdout, and leaves nothing behind.
#[test]
fn bad_input_gets_the_right_error_code_and_leaves_nothing_behind() {
    let (mut c, h1) = one_host("wcx");
    wait_ipam_ready(&c, &h1, Duration::from_secs(30));
    let cni = Cni::new(&c.lab).unwrap();
    let conf = cni.plugin_conf("weft", Cni::weft_plugin(&c.state_dir(&h1)));
    let ns = pod_netns(&mut c, &h1, "p1");
    let links_before = c.lab.exec_ok(&h1.ns, &["ip", "-o", "link"]).unwrap();
    let names = |links: &str| -> BTreeSet<String> {
        links
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_owned())
            .collect()
    };
    let env = cni.op_env("ADD", "bad1", &ns, "eth0");
    let env_ref = |skip: &str| -> Vec<(&str, &str)> {
        env.iter()
            .filter(|(k, _)| k != skip)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    };
    let check = |what: &str, out: CniOutput, code: Option<u64>| {
        assert!(!out.success(), "{what}: succeeded: {out}");
        let v: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{what}: no JSON error on stdout ({e}): {out}"));
        assert!(v["msg"].is_string(), "{what}: error without msg: {out}");
        if let Some(code) = code {
            assert_eq!(v["code"].as_u64(), Some(code), "{what}: {out}");
        } else {
            assert!(v["code"].is_u64(), "{what}: error without code: {out}");
        }
    };

    let conf_bytes = serde_json::to_vec(&conf).unwrap();
    let out = cni
        .run_plugin(&c.lab, &h1, &env_ref(""), b"{\"cniVersion\": \"1.0.0\", ")
        .unwrap();
    check("malformed JSON", out, Some(6));
    let mut v9 = conf.clone();
    v9["cniVersion"] = json!("9.9.9");
    let out = cni
        .run_plugin(&c.lab, &h1, &env_ref(""), &serde_json::to_vec(&v9).unwrap())
        .unwrap();
    check("unknown cniVersion", out, Some(1));
    for var in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
        let out = cni
            .run_plugin(&c.lab, &h1, &env_ref(var), &conf_bytes)
            .unwrap();
        check(&format!("ADD without {var}"), out, Some(4));
    }
    let missing = format!("{}-nosuchpod", c.lab.prefix());
    let out = cni
        .plugin_op(&c.lab, &h1, "ADD", "bad2", &missing, &conf)
        .unwrap();
    check("ADD into a missing netns", out, None);

    let ipam = c.ipam(&h1).unwrap();
    assert!(
        ipam.reservations.is_empty(),
        "bad ADDs left reservations: {:?}",
        ipam.reservations
    );
    let links_after = c.lab.exec_ok(&h1.ns, &["ip", "-o", "link"]).unwrap();
    assert_eq!(
        names(&links_before),
        names(&links_after),
        "bad ADDs left interfaces on the host"
    );
    let pod_links = c.lab.exec_ok(&ns, &["ip", "-o", "link"]).unwrap();
    assert_eq!(names(&pod_links), BTreeSet::from(["lo".to_owned()]));

    // The same namespace and container id work once the input is right.
    let p = cni
        .add_direct(&c.lab, &h1, "bad1", &ns, &conf, Duration::from_secs(10))
        .unwrap();
    assert_eq!(reservations(&c, &h1).get("bad1"), Some(&p.ip));
}

/// The plugin also serves a CNI 0.4.0 network through cnitool, answering in that version, with
/// CHECK and DEL.
#[test]
fn a_cni_0_4_0_conflist_works_through_cnitool() {
    let (mut c, h1) = one_host("wcv");
    wait_ipam_ready(&c, &h1, Duration::from_secs(30));
    let cni = Cni::new(&c.lab).unwrap();
    let net = cni.net_name("old");
    let dir = cni.conf_dir(&h1);
    std::fs::create_dir_all(&dir).unwrap();
    let conf = json!({"cniVersion": "0.4.0", "name": net,
                      "plugins": [Cni::weft_plugin(&c.state_dir(&h1))]});
    std::fs::write(dir.join(format!("{net}.conflist")), conf.to_string()).unwrap();
    let pod = add(&mut c, &cni, &h1, &net, "p1", &[]);
    assert_eq!(pod.result["cniVersion"], json!("0.4.0"), "{}", pod.result);
    assert!(in_cidr(pod.ip, POD_CIDR), "{}", pod.result);
    assert!(
        c.lab.ping(&h1.ns, pod.ip).unwrap(),
        "the host reaches the pod"
    );
    let out = cnitool(&c, &cni, &pod, "check", &net);
    assert!(out.success(), "CHECK: {out}");
    let out = cnitool(&c, &cni, &pod, "del", &net);
    assert!(out.success(), "DEL: {out}");
    assert!(reservations(&c, &h1).is_empty());
}
