//! `weft doctor` against a real 2-host cluster (routers with IPAM, NetworkPolicy and the fast
//! path): every check that a host namespace can break is broken on purpose inside one lab
//! namespace, doctor must report it (FAIL, or WARN where that is the level) with a fix and the
//! exit code that goes with it, and then report OK once it is fixed. Kernel features cannot be
//! taken away inside a namespace (modules are the machine's): they must be OK here, and their
//! judging is unit-tested on made-up trees (`weft::doctor::gather::tests`). Clock skew is not
//! measured (a skip, see docs/decisions.md).
//!
//! Needs root, nftables and the release `weft` binary.

use std::path::{Path, PathBuf};
use std::time::Duration;
use weft_api::doctor::{Report, Status};
use weft_lab::testbed::{weft_bin, Cluster};
use weft_lab::{poll_until, Host, Signal};

const POD_CIDR: &str = "10.32.0.0/12";

const WEFT_CONFLIST: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "weft",
  "plugins": [{"type": "weft-cni", "stateDir": "/run/weft"}, {"type": "portmap"}]
}"#;

const FLANNEL_CONFLIST: &str = r#"{
  "cniVersion": "0.3.1",
  "name": "cbr0",
  "plugins": [{"type": "flannel", "delegate": {"isDefaultGateway": true}}, {"type": "portmap"}]
}"#;

struct Doc {
    c: Cluster,
    weft: PathBuf,
    h1: Host,
    h2: Host,
}

impl Doc {
    fn cni_dir(&self, h: &Host) -> PathBuf {
        self.c.lab.dir().join(format!("cni-{}", h.name))
    }

    /// Runs `weft doctor --json` inside `h`'s namespace; checks the exit code against the
    /// report.
    fn run(&self, h: &Host) -> Report {
        let (r, code) = self.c.doctor(h, &self.cni_dir(h)).unwrap();
        assert_eq!(
            code,
            Some(r.exit_code()),
            "exit code against the report:\n{}",
            r.render()
        );
        r
    }

    /// Polls doctor on `h` until a check whose name `matches` has status `want` (15 s at most,
    /// 30 s for slow paths); returns that report. Panics with the last report and the logs.
    fn wait(&self, h: &Host, what: &str, matches: impl Fn(&str) -> bool, want: Status) -> Report {
        let mut last = None;
        let r = poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
            let r = self.run(h);
            let hit = r
                .checks
                .iter()
                .any(|c| matches(&c.name) && c.status == want);
            last = Some(r.clone());
            hit.then_some(r)
        });
        match r {
            Some(r) => {
                let c = r.checks.iter().find(|c| matches(&c.name)).unwrap();
                println!("{}: {} {}: {}", h.name, c.status.label(), c.name, c.found);
                if want == Status::Fail || want == Status::Warn {
                    assert!(!c.fix.is_empty(), "{} has no fix: {c:?}", c.name);
                    println!("    fix: {}", c.fix);
                }
                assert_eq!(r.exit_code(), i32::from(r.fail > 0));
                r
            }
            None => panic!(
                "{}: {what} never became {want:?}; last report:\n{}\nrouter logs:\n{}\n{}",
                h.name,
                last.map(|r| r.render()).unwrap_or_default(),
                self.c.router_log(&self.h1),
                self.c.router_log(&self.h2)
            ),
        }
    }

    /// Waits until the check `name` on `h` has `want`.
    fn expect(&self, h: &Host, name: &str, want: Status) -> Report {
        self.wait(h, name, |n| n == name, want)
    }

    fn nft(&self, h: &Host, ruleset: &str) {
        self.c.lab.nft(&h.ns, ruleset).unwrap();
    }

    /// Drops what `rule` matches on its way into `h` (an nftables table of the test's own).
    fn block(&self, h: &Host, rule: &str) {
        self.nft(
            h,
            &format!(
                "table inet doctor_test {{\n  chain input {{\n    type filter hook input priority -10; policy accept;\n    {rule}\n  }}\n}}\n"
            ),
        );
    }

    fn unblock(&self, h: &Host) {
        self.nft(h, "delete table inet doctor_test\n");
    }

    fn ip(&self, h: &Host, args: &[&str]) {
        let mut a = vec!["ip"];
        a.extend_from_slice(args);
        self.c.lab.exec_ok(&h.ns, &a).unwrap();
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn every_check_fails_on_purpose_and_passes_when_fixed() {
    assert!(weft_lab::require_root(), "this test needs root");
    let weft = weft_bin().unwrap();
    let mut c = Cluster::new("doc", weft.clone()).unwrap();
    let policy_dir = c.lab.dir().join("policy");
    std::fs::create_dir_all(&policy_dir).unwrap();
    let pd = policy_dir.display().to_string();
    let args: &[&str] = &[
        "--pod-cidr",
        POD_CIDR,
        "--ipam-init-peers",
        "2",
        "--policy-dir",
        &pd,
    ];
    let hosts = c.full_mesh(2, &[args, args]).unwrap();
    let (h1, h2) = (hosts[0].clone(), hosts[1].clone());
    c.wait_path(&h1, "h2", "fast path", Duration::from_secs(30))
        .unwrap();
    let mut d = Doc {
        c,
        weft,
        h1: h1.clone(),
        h2: h2.clone(),
    };
    for h in [&d.h1, &d.h2] {
        write(&d.cni_dir(h), "10-weft.conflist", WEFT_CONFLIST);
    }
    let (h1, h2) = (&h1, &h2);

    // Everything healthy: no failure on either host, every check there, the kernel's OK.
    for h in [h1, h2] {
        let peer = if h == h1 { "h2" } else { "h1" };
        let r = poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
            let r = d.run(h);
            (r.fail == 0 && r.warn == 0).then_some(r)
        })
        .unwrap_or_else(|| panic!("{} is not healthy:\n{}", h.name, d.run(h).render()));
        println!("{}:\n{}", h.name, r.render());
        for name in [
            "kernel.tun",
            "kernel.bridge",
            "kernel.vxlan",
            "kernel.br_netfilter",
            "kernel.nftables",
            "sysctl.ip_forward",
            "sysctl.bridge_nf_call_iptables",
            "cni.config_order",
            "links",
            "mtu.underlay",
            "mtu.pods",
            &format!("peer.{peer}.tcp"),
            &format!("peer.{peer}.udp"),
            &format!("peer.{peer}.vxlan"),
            &format!("peer.{peer}.mtu"),
        ] {
            let c = r
                .get(name)
                .unwrap_or_else(|| panic!("{}: no check {name}:\n{}", h.name, r.render()));
            assert_eq!(c.status, Status::Ok, "{}: {c:?}", h.name);
        }
        // One machine, one clock: the offset is the hello's one-way delay.
        let clock = r.get("clock").unwrap();
        assert_eq!(clock.status, Status::Ok, "{clock:?}");
        assert!(clock.found.contains(" ms "), "{clock:?}");
        assert_eq!(r.exit_code(), 0);
    }

    // ip_forward off inside h1.
    d.c.lab.sysctl(&h1.ns, "net.ipv4.ip_forward", "0").unwrap();
    let r = d.expect(h1, "sysctl.ip_forward", Status::Fail);
    assert_eq!(r.exit_code(), 1);
    // The human output: one line per check, the failure with its fix, exit code 1.
    let sd = d.c.state_dir(h1).display().to_string();
    let cni = d.cni_dir(h1).display().to_string();
    let weft = d.weft.display().to_string();
    let out =
        d.c.lab
            .exec(
                &h1.ns,
                &[&weft, "doctor", "--state-dir", &sd, "--cni-conf-dir", &cni],
            )
            .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("sysctl.ip_forward"))
        .unwrap();
    assert!(
        line.starts_with("FAIL") && line.contains("fix: sysctl -w net.ipv4.ip_forward=1"),
        "{line}"
    );
    assert_eq!(text.lines().count(), r.checks.len() + 1, "{text}");
    d.c.lab.sysctl(&h1.ns, "net.ipv4.ip_forward", "1").unwrap();
    d.expect(h1, "sysctl.ip_forward", Status::Ok);

    // bridge-nf-call-iptables off inside h1, whose router enforces NetworkPolicy.
    d.c.lab
        .sysctl(&h1.ns, "net.bridge.bridge-nf-call-iptables", "0")
        .unwrap();
    d.expect(h1, "sysctl.bridge_nf_call_iptables", Status::Fail);
    d.c.lab
        .sysctl(&h1.ns, "net.bridge.bridge-nf-call-iptables", "1")
        .unwrap();
    d.expect(h1, "sysctl.bridge_nf_call_iptables", Status::Ok);

    // Another network's configuration sorting before Weft's.
    let dir = d.cni_dir(h1);
    write(&dir, "05-flannel.conflist", FLANNEL_CONFLIST);
    let r = d.expect(h1, "cni.config_order", Status::Fail);
    assert!(r
        .get("cni.config_order")
        .unwrap()
        .found
        .contains("05-flannel.conflist"));
    std::fs::rename(
        dir.join("05-flannel.conflist"),
        dir.join("05-flannel.conflist.disabled"),
    )
    .unwrap();
    d.expect(h1, "cni.config_order", Status::Ok);

    // Devices of other overlays inside h1: flannel's VXLAN device (another overlay: a warning),
    // a cni0 bridge holding an address in the pod CIDR (a collision: a failure).
    d.ip(
        h1,
        &[
            "link",
            "add",
            "flannel.1",
            "type",
            "vxlan",
            "id",
            "1",
            "dstport",
            "8472",
            "dev",
            "eth0",
        ],
    );
    d.expect(h1, "links.flannel.1", Status::Warn);
    d.ip(h1, &["link", "delete", "flannel.1"]);
    d.expect(h1, "links", Status::Ok);
    d.ip(h1, &["link", "add", "cni0", "type", "bridge"]);
    d.ip(h1, &["addr", "add", "10.32.200.1/24", "dev", "cni0"]);
    d.expect(h1, "links.cni0", Status::Fail);
    d.ip(h1, &["link", "delete", "cni0"]);
    d.expect(h1, "links", Status::Ok);

    // TCP 6783 dropped on its way into h2: h1's probe times out. The mesh may lose the
    // connection h1 dialled; h2 is then probed as a dial target, by address.
    d.block(h2, "tcp dport 6783 drop");
    let h2_tcp = |n: &str| n == "peer.h2.tcp" || n == format!("peer.{}:6783.tcp", h2.underlay_ip);
    d.wait(h1, "h2's TCP check", h2_tcp, Status::Fail);
    d.unblock(h2);
    d.expect(h1, "peer.h2.tcp", Status::Ok);

    // UDP 6783 dropped into h2: heartbeats go unanswered both ways.
    d.block(h2, "udp dport 6783 drop");
    d.expect(h1, "peer.h2.udp", Status::Fail);
    d.unblock(h2);
    d.expect(h1, "peer.h2.udp", Status::Ok);
    d.expect(h1, "peer.h2.vxlan", Status::Ok);

    // UDP 6784 dropped into h2: the fast path's probes from h1 are lost, traffic stays on the
    // sleeve (a warning: it works, slower).
    d.block(h2, "udp dport 6784 drop");
    d.expect(h1, "peer.h2.vxlan", Status::Warn);
    d.unblock(h2);
    d.expect(h1, "peer.h2.vxlan", Status::Ok);
    d.c.wait_path(h1, "h2", "fast path", Duration::from_secs(30))
        .unwrap();
    let r = d.expect(h1, "peer.h2.vxlan", Status::Ok);
    assert!(
        r.get("peer.h2.vxlan").unwrap().found.contains("both ways"),
        "{}",
        r.render()
    );
    // What the TCP probes leave on the probed router: connections closed before a handshake.
    println!("h2's refused list: {:?}", d.c.status(h2).unwrap().refused);

    // MTU: h2's underlay lowered under its running router, then its router restarted on it (h2's
    // pods now use a smaller MTU than h1's), then the MTU restored and the router restarted.
    d.ip(h2, &["link", "set", "eth0", "mtu", "1400"]);
    d.expect(h2, "mtu.underlay", Status::Fail);
    d.c.stop_router(h2, Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();
    d.c.restart_router(h2).unwrap();
    d.expect(h2, "mtu.underlay", Status::Ok);
    let r = d.expect(h1, "peer.h2.mtu", Status::Fail);
    assert!(r.get("peer.h2.mtu").unwrap().found.contains("1336"));
    d.ip(h2, &["link", "set", "eth0", "mtu", "1500"]);
    d.c.stop_router(h2, Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();
    d.c.restart_router(h2).unwrap();
    d.expect(h1, "peer.h2.mtu", Status::Ok);
    d.expect(h2, "mtu.underlay", Status::Ok);

    // A pod attached by hand with MTU 9000 on h1's bridge: the fast path would drop its large
    // frames without a word. Removing it fixes it.
    let big =
        d.c.lab
            .add_pod(
                h1,
                "big",
                weft_lab::PodSpec::new(std::net::Ipv4Addr::new(10, 32, 1, 50), 12, 9000),
            )
            .unwrap();
    let r = d.expect(h1, "mtu.pods", Status::Fail);
    assert!(
        r.get("mtu.pods").unwrap().found.contains("(9000)"),
        "{}",
        r.render()
    );
    d.c.lab.remove_pod(&big).unwrap();
    d.expect(h1, "mtu.pods", Status::Ok);

    // Everything fixed: no failure or warning left on either host.
    for h in [h1, h2] {
        let r = poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
            let r = d.run(h);
            (r.fail == 0 && r.warn == 0).then_some(r)
        })
        .unwrap_or_else(|| panic!("{}:\n{}", h.name, d.run(h).render()));
        println!("{} at the end:\n{}", h.name, r.render());
    }
}
