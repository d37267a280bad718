//! Dual-stack and IPv6-only pods (issue 14), on an IPv6-only underlay, pods added through
//! upstream `cnitool`.
//!
//! Dual stack: routers with two `--pod-cidr` (10.32.0.0/12 and fd10:32::/48). Each ADD result
//! carries both addresses (the IPv6 one mapped from the IPv4 one), both gateways and both default
//! routes; every pod reaches every other over both families on the plain sleeve, the encrypted
//! sleeve and the kernel VXLAN fast path, and through a relay when a direct path is cut; hosts
//! reach pods over IPv6; pod to pod is never translated, pod to outside is masqueraded (`table
//! ip6 weft`); CHECK verifies the IPv6 address and route, DEL frees both; NetworkPolicy judges
//! both families.
//!
//! IPv6-only: one `--pod-cidr fd10:32::/48`, /64 blocks agreed through the mesh, the same
//! traffic on the encrypted sleeve and the fast path.
//!
//! Needs root, nftables, cnitool and the release `weft` and `weft-cni` binaries
//! (`scripts/test.sh`).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};
use weft_lab::testbed::{ping, tcp_transfer_between, weft_bin, Cluster};
use weft_lab::{poll_until, Host};
use weft_tests::cni::{weft_networks, Cni, CniPod};
use weft_tests::net::{fetch, relayed_around_a_cut, serve_once};

const CIDR4: &str = "10.32.0.0/12";
const CIDR6: &str = "fd10:32::/48";
const SECRET: &str = "the weft test secret, long enough\n";

fn cluster(tag: &str) -> Cluster {
    assert!(
        weft_lab::require_root(),
        "these tests need root and iproute2"
    );
    let mut c = Cluster::new(tag, weft_bin().unwrap()).unwrap();
    c.lab.ipv6_only_underlay().unwrap();
    c
}

/// Three dual-stack IPAM hosts with `extra` router flags (and a cluster secret when `secret`),
/// one cnitool pod each.
fn dual_cluster(
    tag: &str,
    extra: &[&str],
    secret: bool,
) -> (Cluster, Vec<Host>, Cni, Vec<String>, Vec<CniPod>) {
    let mut c = cluster(tag);
    let secret_file = c.lab.dir().join("secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let secret_file = secret_file.display().to_string();
    let mut args = vec![
        "--pod-cidr",
        CIDR4,
        "--pod-cidr",
        CIDR6,
        "--ipam-init-peers",
        "3",
    ];
    args.extend_from_slice(extra);
    if secret {
        args.extend_from_slice(&["--secret-file", &secret_file]);
    }
    let hosts = c.full_mesh(3, &[&args[..], &args[..], &args[..]]).unwrap();
    let cni = Cni::new(&c.lab).unwrap();
    let nets = weft_networks(&c, &cni, &hosts);
    let mut pods = Vec::new();
    for (h, net) in hosts.iter().zip(&nets) {
        let ns = c.lab.add_netns(&format!("{}-p1", h.name)).unwrap();
        pods.push(cni.cnitool_add(&c.lab, h, net, &ns).unwrap());
    }
    (c, hosts, cni, nets, pods)
}

/// The IPv6 address mapped from `v4` (fd10:32:: plus its offset in 10.32.0.0/12).
fn mapped(v4: std::net::Ipv4Addr) -> Ipv6Addr {
    let offset = u32::from(v4) - u32::from(std::net::Ipv4Addr::new(10, 32, 0, 0));
    Ipv6Addr::from(u128::from("fd10:32::".parse::<Ipv6Addr>().unwrap()) + u128::from(offset))
}

fn wait_ping(c: &Cluster, from_ns: &str, to: IpAddr) -> bool {
    poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
        ping(&c.lab, from_ns, to, 1)
            .ok()
            .filter(|p| p.received == 1)
    })
    .is_some()
}

/// The ADD result of `p` holds both families on the pod's interface, both gateways and both
/// default routes, and the IPv6 address is the one mapped from the IPv4 address.
fn assert_dual_result(p: &CniPod) {
    let ip6 = p
        .ip6
        .unwrap_or_else(|| panic!("no IPv6 address: {}", p.result));
    assert_eq!(ip6, mapped(p.ip), "{}", p.result);
    let ips = p.result["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 2, "{}", p.result);
    let v6 = ips
        .iter()
        .find(|i| i["address"].as_str().unwrap().contains(':'))
        .unwrap();
    assert_eq!(v6["address"], format!("{ip6}/48"));
    assert_eq!(v6["interface"], 1);
    let gw6: Ipv6Addr = v6["gateway"].as_str().unwrap().parse().unwrap();
    assert_eq!(gw6, mapped(p.gateway.unwrap()));
    let routes: Vec<&str> = p.result["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["dst"].as_str().unwrap())
        .collect();
    assert_eq!(routes, ["0.0.0.0/0", "::/0"], "{}", p.result);
}

/// Every pod reaches every other over both families, and a checksummed transfer crosses from the
/// first pod to the last over IPv6.
fn pods_talk_both_families(c: &Cluster, pods: &[CniPod]) {
    for a in pods {
        for b in pods {
            if a.ns == b.ns {
                continue;
            }
            for to in [IpAddr::V4(b.ip), IpAddr::V6(b.ip6.unwrap())] {
                assert!(
                    wait_ping(c, &a.ns, to),
                    "{} ({} on {}) cannot reach {to}\n{}",
                    a.ns,
                    a.ip,
                    a.host.name,
                    c.router_log(&a.host)
                );
            }
        }
    }
    let (from, to) = (&pods[0], &pods[pods.len() - 1]);
    for (addr, mib) in [(IpAddr::V4(to.ip), 2), (IpAddr::V6(to.ip6.unwrap()), 8)] {
        let t = tcp_transfer_between(
            &from.ns,
            &to.ns,
            addr,
            mib << 20,
            Duration::from_secs(1),
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(t.intact(), "{addr}: {t:?}");
    }
}

#[test]
fn dual_stack_pods_on_the_plain_sleeve() {
    let (mut c, hosts, cni, nets, pods) = dual_cluster("wds", &["--no-fastpath"], false);
    for p in &pods {
        assert_dual_result(p);
    }
    // The router lists both addresses of each reservation, and the bridge has both gateways.
    for (h, p) in hosts.iter().zip(&pods) {
        let r = c.ipam(h).unwrap();
        assert_eq!(r.cidr6, CIDR6);
        let res = r.reservations.iter().find(|r| r.address == p.ip).unwrap();
        assert_eq!(res.ipv6, p.ip6);
        let gw6 = mapped(p.gateway.unwrap());
        let addrs = c
            .lab
            .exec_ok(&h.ns, &["ip", "-6", "addr", "show", "dev", "weft"])
            .unwrap();
        assert!(addrs.contains(&format!("{gw6}/48")), "{}: {addrs}", h.name);
        let status = c.status(h).unwrap();
        let text = status.render_ipam_summary();
        assert!(text.contains("IPv6 pod CIDR fd10:32::/48"), "{text}");
        let text = status.render_ipam();
        assert!(
            text.contains(&format!("{} {}", p.ip, p.ip6.unwrap())),
            "{text}"
        );
    }
    // No duplicate address detection: the pod's IPv6 address is usable (not tentative) at once.
    let flags = c
        .lab
        .exec_ok(&pods[0].ns, &["ip", "-6", "addr", "show", "dev", "eth0"])
        .unwrap();
    assert!(!flags.contains("tentative"), "{flags}");

    pods_talk_both_families(&c, &pods);

    // A new pod announces itself with an unsolicited neighbour advertisement to all nodes
    // (IPv6's gratuitous ARP), which reaches a pod on another host.
    c.lab
        .nft(
            &pods[1].ns,
            "table ip6 na {\n  counter unsolicited {}\n  chain input {\n    type filter hook input priority 0; policy accept;\n    icmpv6 type nd-neighbor-advert ip6 daddr ff02::1 counter name unsolicited\n  }\n}\n",
        )
        .unwrap();
    let ns = c.lab.add_netns("h1-p2").unwrap();
    let late = cni.cnitool_add(&c.lab, &hosts[0], &nets[0], &ns).unwrap();
    assert_dual_result(&late);
    let seen = poll_until(Duration::from_secs(5), Duration::from_millis(20), || {
        c.lab
            .nft_counter(&pods[1].ns, "ip6", "na", "unsolicited")
            .ok()
            .filter(|n| *n > 0)
    });
    assert!(
        seen.is_some(),
        "no unsolicited neighbour advertisement reached h2's pod"
    );

    // `weft trace` over IPv6: the static path by address, and a live ICMPv6 probe whose hops
    // h1's kernel and sleeve and h3's sleeve and kernel report, both ways.
    let (a6, b6) = (
        pods[0].ip6.unwrap().to_string(),
        pods[2].ip6.unwrap().to_string(),
    );
    let bin = weft_bin().unwrap();
    let dir = c.state_dir(&hosts[0]);
    let out = c
        .lab
        .exec_ok(
            &hosts[0].ns,
            &[
                bin.to_str().unwrap(),
                "trace",
                &a6,
                &b6,
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
    assert_eq!(t.outcome, "delivered", "{t:#?}");
    assert_eq!(t.to.addr.as_deref(), Some(b6.as_str()));
    let l = t.live.expect("a live part");
    assert!(l.rtt_us.is_some(), "{l:#?}");
    let has = |host: &str, point: &str, dir: &str| {
        l.hops
            .iter()
            .any(|h| h.host == host && h.point == point && h.direction == dir)
    };
    for (host, point, dir) in [
        ("h1", "kernel", "probe"),
        ("h1", "sleeve out", "probe"),
        ("h3", "sleeve in", "probe"),
        ("h3", "kernel", "probe"),
        ("h3", "sleeve out", "reply"),
        ("h1", "sleeve in", "reply"),
    ] {
        assert!(has(host, point, dir), "no {point} {dir} on {host}: {l:#?}");
    }

    // Hosts reach their own pods and other hosts' pods over both families.
    for h in &hosts {
        for p in &pods {
            for to in [IpAddr::V4(p.ip), IpAddr::V6(p.ip6.unwrap())] {
                assert!(
                    wait_ping(&c, &h.ns, to),
                    "host {} cannot reach {to}",
                    h.name
                );
            }
        }
    }

    // Pod to pod over IPv6: not translated. Pod to outside: masqueraded.
    nat_only_to_outside(
        &hosts,
        (&pods[0].ns, pods[0].ip6.unwrap()),
        (&pods[2].ns, pods[2].ip6.unwrap()),
    );

    // CHECK passes, then fails once the IPv6 address is gone; DEL frees both addresses.
    for (p, net) in pods.iter().zip(&nets) {
        let out = cni
            .cnitool(&c.lab, &p.host, "check", net, &p.ns, &[])
            .unwrap();
        assert!(out.success(), "CHECK of {}: {out}", p.ns);
    }
    let victim = &pods[1];
    let cidr = format!("{}/48", victim.ip6.unwrap());
    c.lab
        .exec_ok(
            &victim.ns,
            &["ip", "-6", "addr", "del", &cidr, "dev", "eth0"],
        )
        .unwrap();
    let out = cni
        .cnitool(&c.lab, &victim.host, "check", &nets[1], &victim.ns, &[])
        .unwrap();
    assert!(
        !out.success(),
        "CHECK passed without the IPv6 address: {out}"
    );
    assert!(
        out.to_string().contains(&victim.ip6.unwrap().to_string()),
        "{out}"
    );
    let out = cni
        .cnitool(&c.lab, &victim.host, "del", &nets[1], &victim.ns, &[])
        .unwrap();
    assert!(out.success(), "DEL: {out}");
    assert!(c.ipam(&victim.host).unwrap().reservations.is_empty());
    // Its host's bridge keeps both gateways (the block is still held).
    let addrs = c
        .lab
        .exec_ok(
            &victim.host.ns,
            &["ip", "-6", "addr", "show", "dev", "weft"],
        )
        .unwrap();
    assert!(
        addrs.contains(&format!("{}/48", mapped(victim.gateway.unwrap()))),
        "{addrs}"
    );
}

#[test]
fn dual_stack_pods_on_the_encrypted_sleeve_and_through_a_relay() {
    let (c, hosts, _cni, _nets, pods) = dual_cluster("wde", &["--no-fastpath"], true);
    for h in &hosts {
        let r = c.status(h).unwrap();
        assert!(
            r.peers.iter().all(|p| p.encryption != "none"),
            "{:?}",
            r.peers
        );
    }
    pods_talk_both_families(&c, &pods);

    // Cut h1-h3 on the underlay: both families go through h2.
    relayed_around_a_cut(
        &c,
        &hosts,
        (&pods[0].ns, &pods[2].ns),
        &[IpAddr::V4(pods[2].ip), IpAddr::V6(pods[2].ip6.unwrap())],
    );
}

#[test]
fn dual_stack_pods_on_the_fast_path() {
    let (c, hosts, _cni, _nets, pods) = dual_cluster("wdf", &[], false);
    for h in &hosts {
        for p in hosts.iter().filter(|p| p.name != h.name) {
            c.wait_path(h, &p.name, "fast path", Duration::from_secs(30))
                .unwrap();
        }
    }
    let stats = |c: &Cluster| c.lab.link_stats(&hosts[0].ns, "weft-vxlan").unwrap();
    let (before, vx_before) = (c.status(&hosts[0]).unwrap(), stats(&c));
    pods_talk_both_families(&c, &pods);
    let (after, vx_after) = (c.status(&hosts[0]).unwrap(), stats(&c));
    // The IPv6 transfer went through the kernel's VXLAN device, not the router.
    let vx = vx_after.tx_bytes - vx_before.tx_bytes;
    let sleeve: u64 = after.peers.iter().map(|p| p.tx_bytes).sum::<u64>()
        - before.peers.iter().map(|p| p.tx_bytes).sum::<u64>();
    assert!(vx > 8 << 20, "the VXLAN device sent {vx} bytes");
    assert!(
        sleeve < vx / 100,
        "the router sent {sleeve} bytes while VXLAN sent {vx}"
    );
}

/// Pod `a` (on h1) to pod `b` over IPv6 keeps `a`'s address (a one-shot server in `b` sees it);
/// `a` to another host's underlay address (h2's, outside every pod CIDR) is masqueraded to h1's.
fn nat_only_to_outside(hosts: &[Host], (a_ns, a): (&str, Ipv6Addr), (b_ns, b): (&str, Ipv6Addr)) {
    let to_pod = SocketAddr::new(IpAddr::V6(b), 7001);
    let server = serve_once(b_ns, to_pod, b"pod", Duration::from_secs(15));
    assert_eq!(fetch(a_ns, to_pod), "pod");
    assert_eq!(
        server.join().unwrap().ip(),
        IpAddr::V6(a),
        "pod to pod over IPv6 is not translated"
    );
    let outside = SocketAddr::new(IpAddr::V6(hosts[1].underlay_ip6.unwrap()), 7002);
    let server = serve_once(&hosts[1].ns, outside, b"host", Duration::from_secs(15));
    assert_eq!(fetch(a_ns, outside), "host");
    assert_eq!(
        server.join().unwrap().ip(),
        IpAddr::V6(hosts[0].underlay_ip6.unwrap()),
        "pod to outside over IPv6 is masqueraded to the host's address"
    );
}

/// Whether one ping from `from_ns` to `to` is answered within a second.
fn answers(c: &Cluster, from_ns: &str, to: IpAddr) -> bool {
    ping(&c.lab, from_ns, to, 1).is_ok_and(|p| p.received == 1)
}

#[test]
fn network_policy_covers_both_families() {
    let mut c = cluster("wdp");
    let dir = c.lab.dir().join("policy");
    std::fs::create_dir_all(&dir).unwrap();
    let pods_yaml = ["a", "b", "c"]
        .iter()
        .map(|n| {
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {n}, namespace: x, labels: {{app: {n}}}}}\nspec: {{containers: [{{name: main, image: none}}]}}\n"
            )
        })
        .collect::<String>();
    std::fs::write(
        dir.join("00-cluster.yaml"),
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: x}}\n{pods_yaml}"),
    )
    .unwrap();
    let d = dir.display().to_string();
    let args = [
        "--pod-cidr",
        CIDR4,
        "--pod-cidr",
        CIDR6,
        "--ipam-init-peers",
        "2",
        "--no-fastpath",
        "--policy-dir",
        &d,
    ];
    let hosts = c.full_mesh(2, &[&args[..], &args[..]]).unwrap();
    let cni = Cni::new(&c.lab).unwrap();
    let nets = weft_networks(&c, &cni, &hosts);
    let add = |c: &mut Cluster, h: usize, name: &str| {
        weft_tests::cni::add_pod_with_identity(c, &cni, &hosts[h], &nets[h], "x", name)
    };
    let a = add(&mut c, 0, "a");
    let b = add(&mut c, 1, "b");
    let cc = add(&mut c, 0, "c");
    let (b4, b6) = (IpAddr::V4(b.ip), IpAddr::V6(b.ip6.unwrap()));
    for from in [&a, &cc] {
        for to in [b4, b6] {
            assert!(
                wait_ping(&c, &from.ns, to),
                "{} cannot reach {to} without policy",
                from.ns
            );
        }
    }
    // Only x/a may reach x/b: over IPv6 as over IPv4 (the pods' identities carry both addresses).
    std::fs::write(
        dir.join(".p.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: only-a, namespace: x}\nspec:\n  podSelector: {matchLabels: {app: b}}\n  policyTypes: [Ingress]\n  ingress: [{from: [{podSelector: {matchLabels: {app: a}}}]}]\n",
    )
    .unwrap();
    std::fs::rename(dir.join(".p.yaml"), dir.join("p.yaml")).unwrap();
    for to in [b6, b4] {
        let denied = poll_until(Duration::from_secs(15), Duration::from_millis(100), || {
            (!answers(&c, &cc.ns, to)).then_some(())
        });
        assert!(
            denied.is_some(),
            "x/c still reaches x/b at {to} under the policy"
        );
        assert!(answers(&c, &a.ns, to), "x/a no longer reaches x/b at {to}");
    }
    // x/c stays denied over IPv6 (the verdict was not a lost ping).
    assert!(!answers(&c, &cc.ns, b6));
}

/// A pod of an IPv6-only pod network, from its ADD result.
struct Pod6 {
    host: Host,
    ns: String,
    ip: Ipv6Addr,
    gateway: Ipv6Addr,
}

/// An IPv6-only pod network (`--pod-cidr fd10:32::/48` alone, /64 blocks agreed through the
/// mesh) on 3 hosts, on the data path `path`: each cnitool result has one IPv6 address and the `::/0`
/// route, no IPv4 address is on the pod, every pod reaches every other (ping and a checksummed
/// transfer), hosts reach pods, pod to outside is masqueraded and pod to pod is not, a relay
/// carries pods around a cut link (plain), CHECK passes and DEL frees the address.
fn ipv6_only(tag: &str, path: Path) {
    let fast = path == Path::Fast;
    let mut c = cluster(tag);
    let secret = c.lab.dir().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let secret = secret.display().to_string();
    let mut args = vec!["--pod-cidr", CIDR6, "--ipam-init-peers", "3"];
    match path {
        Path::Plain => args.push("--no-fastpath"),
        Path::Encrypted => args.extend_from_slice(&["--no-fastpath", "--secret-file", &secret]),
        Path::Fast => {}
    }
    let hosts = c.full_mesh(3, &[&args[..], &args[..], &args[..]]).unwrap();
    if fast {
        for h in &hosts {
            for p in hosts.iter().filter(|p| p.name != h.name) {
                c.wait_path(h, &p.name, "fast path", Duration::from_secs(30))
                    .unwrap();
            }
        }
    }
    let cni = Cni::new(&c.lab).unwrap();
    let nets = weft_networks(&c, &cni, &hosts);
    let mut pods = Vec::new();
    for (h, net) in hosts.iter().zip(&nets) {
        let ns = c.lab.add_netns(&format!("{}-p1", h.name)).unwrap();
        let out = cni.cnitool(&c.lab, h, "add", net, &ns, &[]).unwrap();
        assert!(out.success(), "ADD on {}: {out}", h.name);
        let r = out.json().unwrap();
        let ips = r["ips"].as_array().unwrap();
        assert_eq!(ips.len(), 1, "{r}");
        let (addr, len) = ips[0]["address"].as_str().unwrap().split_once('/').unwrap();
        assert_eq!(len, "48", "{r}");
        assert_eq!(ips[0]["interface"], 1, "{r}");
        let ip: Ipv6Addr = addr.parse().unwrap();
        let gateway: Ipv6Addr = ips[0]["gateway"].as_str().unwrap().parse().unwrap();
        assert_eq!(r["routes"][0]["dst"], "::/0", "{r}");
        assert_eq!(r["routes"].as_array().unwrap().len(), 1, "{r}");
        // In a /64 block of the CIDR, the gateway being the block's second address.
        let block = u128::from(ip) & !((1u128 << 64) - 1);
        assert_eq!(u128::from(gateway), block + 1, "{r}");
        assert!(u128::from(ip) >= block + 2, "{r}");
        let v4 = c
            .lab
            .exec_ok(&ns, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
            .unwrap();
        assert!(
            v4.trim().is_empty(),
            "an IPv4 address on an IPv6-only pod: {v4}"
        );
        pods.push((
            Pod6 {
                host: h.clone(),
                ns,
                ip,
                gateway,
            },
            net.clone(),
        ));
    }
    for (a, _) in &pods {
        for (b, _) in &pods {
            if a.ns != b.ns {
                assert!(
                    wait_ping(&c, &a.ns, IpAddr::V6(b.ip)),
                    "{} cannot reach {}\n{}",
                    a.ns,
                    b.ip,
                    c.router_log(&a.host)
                );
            }
        }
        for h in &hosts {
            assert!(
                wait_ping(&c, &h.ns, IpAddr::V6(a.ip)),
                "host {} cannot reach {}",
                h.name,
                a.ip
            );
        }
    }
    let (p0, p2) = (&pods[0].0, &pods[2].0);
    let vx = |c: &Cluster| {
        c.lab
            .link_stats(&hosts[0].ns, "weft-vxlan")
            .map(|s| s.tx_bytes)
    };
    let vx_before = vx(&c);
    let t = tcp_transfer_between(
        &p0.ns,
        &p2.ns,
        IpAddr::V6(p2.ip),
        8 << 20,
        Duration::from_secs(1),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(t.intact(), "{t:?}");
    if fast {
        // The transfer went through the kernel's VXLAN device.
        let sent = vx(&c).unwrap() - vx_before.unwrap();
        assert!(sent > 8 << 20, "the VXLAN device sent {sent} bytes");
    }
    nat_only_to_outside(&hosts, (&p0.ns, p0.ip), (&p2.ns, p2.ip));
    // No IPv4 masquerade table is left on an IPv6-only host, and the bridge has the IPv6
    // gateway.
    let tables = c
        .lab
        .exec_ok(&hosts[0].ns, &["nft", "list", "tables"])
        .unwrap();
    assert!(
        tables.contains("table ip6 weft") && !tables.contains("table ip weft\n"),
        "{tables}"
    );
    let br = c
        .lab
        .exec_ok(&hosts[0].ns, &["ip", "-6", "addr", "show", "dev", "weft"])
        .unwrap();
    assert!(br.contains(&format!("{}/48", p0.gateway)), "{br}");
    for (p, net) in &pods {
        let out = cni
            .cnitool(&c.lab, &p.host, "check", net, &p.ns, &[])
            .unwrap();
        assert!(out.success(), "CHECK of {}: {out}", p.ns);
    }
    if path == Path::Plain {
        relayed_around_a_cut(&c, &hosts, (&p0.ns, &p2.ns), &[IpAddr::V6(p2.ip)]);
    }
    let (p, net) = &pods[1];
    let out = cni
        .cnitool(&c.lab, &p.host, "del", net, &p.ns, &[])
        .unwrap();
    assert!(out.success(), "DEL: {out}");
    assert!(c.ipam(&p.host).unwrap().reservations.is_empty());
}

/// The data path an IPv6-only test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// The sleeve in clear, and a relay around a cut link.
    Plain,
    /// The encrypted sleeve.
    Encrypted,
    /// The kernel VXLAN fast path.
    Fast,
}

#[test]
fn ipv6_only_pods_on_the_plain_sleeve_and_through_a_relay() {
    ipv6_only("wop", Path::Plain);
}

#[test]
fn ipv6_only_pods_on_the_encrypted_sleeve() {
    ipv6_only("wos", Path::Encrypted);
}

#[test]
fn ipv6_only_pods_on_the_fast_path() {
    ipv6_only("wof", Path::Fast);
}

/// Adds a pod to `ns` on `h` with cnitool, retrying while the ADD fails (a block being agreed
/// answers "try again"), for at most 60 s; returns the pod's IPv6 address.
fn add6_retrying(c: &Cluster, cni: &Cni, h: &Host, net: &str, ns: &str) -> Ipv6Addr {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = cni.cnitool(&c.lab, h, "add", net, ns, &[]).unwrap();
        if out.success() {
            let r = out.json().unwrap();
            let a = r["ips"][0]["address"].as_str().unwrap();
            return a.split_once('/').unwrap().0.parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "ADD in {ns} on {} kept failing: {out}\n{}",
            h.name,
            c.router_log(h)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every reservation of `hosts`, checked: no address twice, and no /`block` block with the
/// addresses of two hosts. Returns how many blocks each host's addresses span.
fn assert_no_sharing6(c: &Cluster, hosts: &[Host], block: u8) -> Vec<usize> {
    let mut seen = std::collections::BTreeMap::new();
    let mut owner = std::collections::BTreeMap::new();
    let mut spans = Vec::new();
    for h in hosts {
        let mut blocks = std::collections::BTreeSet::new();
        for r in c.ipam(h).unwrap().reservations {
            let IpAddr::V6(a) = r.address else {
                panic!("{} reserved {} on an IPv6-only network", h.name, r.address)
            };
            if let Some(prev) = seen.insert(a, h.name.clone()) {
                panic!("{a} is reserved by {prev} and by {}", h.name);
            }
            let b = u128::from(a) >> (128 - u32::from(block));
            let o = owner.entry(b).or_insert_with(|| h.name.clone());
            assert_eq!(
                *o, h.name,
                "a /{block} block holds pods of {o} and {}",
                h.name
            );
            blocks.insert(b);
        }
        spans.push(blocks.len());
    }
    spans
}

/// The IPAM concurrency test for an IPv6-only pod network: 3 routers started together on a
/// small IPv6 CIDR in /123 blocks (30 pod addresses each), 36 ADDs per host, 4 at a time per
/// host, so every host claims several blocks while the others do; then h1 cut off from h2 and
/// h3, 31 more ADDs on the majority side (a new block needs the majority) and 4 on h1 (from its
/// held blocks), and a heal: no address is ever reserved twice, no block holds two hosts' pods,
/// and pods reach each other across hosts.
#[test]
fn ipv6_only_concurrent_adds_and_a_partition_never_share_an_address() {
    const BLOCK: u8 = 123;
    let mut c = cluster("woc");
    let hosts: Vec<Host> = (1..=3)
        .map(|i| c.add_host(&format!("h{i}")).unwrap())
        .collect();
    let mut jobs: Vec<Vec<String>> = Vec::new();
    for h in &hosts {
        jobs.push(
            (0..36)
                .map(|i| c.lab.add_netns(&format!("{}-a{i:02}", h.name)).unwrap())
                .collect(),
        );
    }
    let block = BLOCK.to_string();
    c.start_routers_together(
        &hosts,
        &[
            "--pod-cidr",
            "fd10:32::/104",
            "--pod-block-prefix",
            &block,
            "--ipam-init-peers",
            "3",
            "--no-fastpath",
        ],
    )
    .unwrap();
    let cni = Cni::new(&c.lab).unwrap();
    let nets = weft_networks(&c, &cni, &hosts);
    let first: Vec<Vec<Ipv6Addr>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..hosts.len())
            .flat_map(|h| (0..4).map(move |t| (h, t)))
            .map(|(h, t)| {
                let (c, cni, hosts, nets, jobs) = (&c, &cni, &hosts, &nets, &jobs);
                s.spawn(move || {
                    (jobs[h].iter().skip(t).step_by(4))
                        .map(|ns| add6_retrying(c, cni, &hosts[h], &nets[h], ns))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|j| j.join().unwrap()).collect()
    });
    assert_eq!(first.iter().map(Vec::len).sum::<usize>(), 108);
    let spans = assert_no_sharing6(&c, &hosts, BLOCK);
    assert!(spans.iter().all(|n| *n >= 2), "blocks per host: {spans:?}");

    // Partition h1 from h2 and h3.
    let u: Vec<Ipv6Addr> = hosts.iter().map(|h| h.underlay_ip6.unwrap()).collect();
    c.lab
        .nft(
            c.lab.underlay_ns(),
            &format!(
                "table bridge weftpart {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    ip6 saddr {} ip6 daddr {{ {}, {} }} drop\n    ip6 saddr {{ {}, {} }} ip6 daddr {} drop\n  }}\n}}\n",
                u[0], u[1], u[2], u[1], u[2], u[0]
            ),
        )
        .unwrap();
    c.wait_peers(&hosts[0], 0, Duration::from_secs(30)).unwrap();
    c.wait_peers(&hosts[1], 1, Duration::from_secs(30)).unwrap();
    for i in 0..31 {
        let ns = c.lab.add_netns(&format!("h2-b{i:02}")).unwrap();
        add6_retrying(&c, &cni, &hosts[1], &nets[1], &ns);
    }
    for i in 0..4 {
        let ns = c.lab.add_netns(&format!("h1-b{i:02}")).unwrap();
        add6_retrying(&c, &cni, &hosts[0], &nets[0], &ns);
    }
    c.lab
        .nft(c.lab.underlay_ns(), "delete table bridge weftpart\n")
        .unwrap();
    for h in &hosts {
        c.wait_peers(h, 2, Duration::from_secs(30)).unwrap();
    }
    assert_no_sharing6(&c, &hosts, BLOCK);
    // The first pod of each host (thread 0's first, in `jobs[h][0]`) reaches the first of
    // every other.
    let firsts: Vec<Ipv6Addr> = (0..hosts.len()).map(|h| first[h * 4][0]).collect();
    for (i, from) in jobs.iter().enumerate() {
        for (j, to) in firsts.iter().enumerate() {
            if i != j {
                assert!(
                    wait_ping(&c, &from[0], IpAddr::V6(*to)),
                    "{} cannot reach {to}",
                    from[0]
                );
            }
        }
    }
}
