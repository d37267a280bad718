//! `weft-cni` as a runtime runs it: the binary with real `CNI_*` variables and a configuration on
//! stdin. First the bad inputs, which need no router; then ADD, CHECK, DEL, STATUS and GC
//! against a real `weft router --pod-cidr` in a lab host namespace, with the pod's namespace
//! made by the lab (the plugin runs inside the host namespace through `ip netns exec`).
//!
//! The namespace tests need root and the `weft` binary (`cargo build -p weft` into the same
//! target directory, or `WEFT_BIN`); without root they print a note and pass.

use serde_json::{json, Value};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use weft_api::ipam::IpamReport;
use weft_lab::testbed::{weft_bin, Cluster};
use weft_lab::{poll_until, Host, Lab, ProcId};

const PLUGIN: &str = env!("CARGO_BIN_EXE_weft-cni");
const POD_CIDR: &str = "10.32.0.0/12";

/// What one run of the plugin printed and returned.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// The CNI error code, asserting the run failed with a well-formed error object.
    fn error_code(&self) -> u64 {
        assert_ne!(self.code, 0, "expected a failure: {self:?}");
        let v = self.json();
        for k in ["cniVersion", "code", "msg"] {
            assert!(v.get(k).is_some(), "error without {k}: {self:?}");
        }
        v["code"].as_u64().unwrap()
    }

    fn msg(&self) -> String {
        self.json()["msg"].as_str().unwrap_or_default().to_owned()
    }

    #[track_caller]
    fn assert_ok(&self) {
        assert_eq!(self.code, 0, "expected success: {self:?}");
    }
}

/// Runs the plugin (inside `ns` if given) with `vars` as its only `CNI_*` variables.
fn run(ns: Option<&str>, vars: &[(&str, &str)], stdin: &str) -> Out {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, PLUGIN]);
            c
        }
        None => Command::new(PLUGIN),
    };
    for k in [
        "CNI_COMMAND",
        "CNI_CONTAINERID",
        "CNI_NETNS",
        "CNI_IFNAME",
        "CNI_ARGS",
        "CNI_PATH",
    ] {
        cmd.env_remove(k);
    }
    cmd.envs(vars.iter().copied())
        .env("CNI_PATH", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("running weft-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn conf(version: &str, state_dir: &Path) -> String {
    json!({"cniVersion": version, "name": "weft", "type": "weft-cni",
           "stateDir": state_dir})
    .to_string()
}

fn root() -> bool {
    let ok = weft_lab::require_root();
    if !ok {
        eprintln!("note: not root (or no iproute2): skipping a network-namespace test");
    }
    ok
}

fn empty_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "weft-cni-test-{tag}-{}-{:x}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

// ---------------------------------------------------------------------------------------------
// Bad input: no router, no namespace needed.
// ---------------------------------------------------------------------------------------------

#[test]
fn version_answers_without_a_config() {
    let out = run(None, &[("CNI_COMMAND", "VERSION")], "");
    out.assert_ok();
    assert_eq!(
        out.json(),
        json!({"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]})
    );
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn malformed_stdin_is_code_6() {
    for cmd in ["ADD", "DEL", "CHECK", "STATUS", "GC"] {
        let out = run(
            None,
            &[
                ("CNI_COMMAND", cmd),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", "/run/netns/x"),
            ],
            "{\"cniVersion\": \"1.0.0\",",
        );
        assert_eq!(out.error_code(), 6, "{cmd}: {out:?}");
    }
}

#[test]
fn unknown_version_is_code_1() {
    let out = run(
        None,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/run/netns/x"),
        ],
        r#"{"cniVersion":"0.3.1","name":"weft","type":"weft-cni"}"#,
    );
    assert_eq!(out.error_code(), 1, "{out:?}");
    assert!(out.msg().contains("0.3.1"), "{out:?}");
}

#[test]
fn missing_variables_are_code_4_and_named() {
    let dir = empty_dir("env");
    let cfg = conf("1.0.0", &dir);
    let full = [
        ("CNI_CONTAINERID", "c1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", "/run/netns/x"),
    ];
    let out = run(None, &[], &cfg);
    assert_eq!(out.error_code(), 4);
    assert!(out.msg().contains("CNI_COMMAND"), "{out:?}");
    for (cmd, needed) in [
        ("ADD", &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"][..]),
        ("CHECK", &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"][..]),
        ("DEL", &["CNI_CONTAINERID", "CNI_IFNAME"][..]),
    ] {
        for missing in needed {
            let mut vars: Vec<(&str, &str)> =
                full.iter().copied().filter(|(k, _)| k != missing).collect();
            vars.push(("CNI_COMMAND", cmd));
            let out = run(None, &vars, &cfg);
            assert_eq!(out.error_code(), 4, "{cmd} without {missing}: {out:?}");
            assert!(
                out.msg().contains(missing),
                "{cmd} without {missing}: {out:?}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn status_without_a_router_is_code_50_and_logged() {
    let dir = empty_dir("status");
    let log = dir.join("cni.log");
    let mut cfg: Value = serde_json::from_str(&conf("1.1.0", &dir)).unwrap();
    cfg["logFile"] = json!(log);
    let out = run(None, &[("CNI_COMMAND", "STATUS")], &cfg.to_string());
    assert_eq!(out.error_code(), 50, "{out:?}");
    assert!(out.msg().contains("does not answer"), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("STATUS") && logged.contains("error 50"),
        "{logged}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn gc_without_a_router_is_code_11() {
    let dir = empty_dir("gc");
    // GC asks the router first and touches no link when it does not answer.
    let gc = json!({"cniVersion": "1.1.0", "name": "weft", "type": "weft-cni",
                    "stateDir": dir, "cni.dev/valid-attachments": []});
    let out = run(None, &[("CNI_COMMAND", "GC")], &gc.to_string());
    assert_eq!(out.error_code(), 11, "{out:?}");
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// With namespaces.
// ---------------------------------------------------------------------------------------------

/// ADD of container `c1` as `eth0` in the namespace `pod`, run in `host_ns` with `conf`: it
/// must answer 11 (try again later) and leave no `eth0` in the pod.
fn add_answers_11_and_leaves_nothing(lab: &Lab, host_ns: &str, pod: &str, conf: &str) {
    let out = run(
        Some(host_ns),
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", &format!("/run/netns/{pod}")),
        ],
        conf,
    );
    assert_eq!(out.error_code(), 11, "{out:?}");
    let links = lab.exec_ok(pod, &["ip", "-o", "link"]).unwrap();
    assert!(!links.contains("eth0"), "{links}");
}

#[test]
fn add_and_del_without_a_router_are_code_11() {
    if !root() {
        return;
    }
    let mut lab = Lab::new("cnino").unwrap();
    let host = lab.add_host("h1").unwrap();
    let pod = lab.add_netns("p1").unwrap();
    let dir = empty_dir("norouter");
    add_answers_11_and_leaves_nothing(&lab, &host.ns, &pod, &conf("1.0.0", &dir));
    // DEL removes what it can, then the release fails: code 11, so that the runtime retries.
    let out = run(
        Some(&host.ns),
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ],
        &conf("1.0.0", &dir),
    );
    assert_eq!(out.error_code(), 11, "{out:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A cluster of one host whose router serves pod addresses.
struct Setup {
    c: Cluster,
    host: Host,
    state_dir: PathBuf,
}

fn setup(tag: &str) -> Setup {
    let mut c = Cluster::new(tag, weft_bin().unwrap()).unwrap();
    let host = c.add_host("h1").unwrap();
    c.start_router(
        &host,
        &[],
        &["--pod-cidr", POD_CIDR, "--ipam-init-peers", "1"],
    )
    .unwrap();
    let state_dir = c.state_dir(&host);
    let ready = poll_until(Duration::from_secs(20), Duration::from_millis(50), || {
        ipam(&state_dir).filter(|r| r.ready)
    });
    assert!(
        ready.is_some(),
        "IPAM never got ready: {:?}; log:\n{}",
        ipam(&state_dir),
        c.router_log(&host)
    );
    Setup { c, host, state_dir }
}

fn ipam(state_dir: &Path) -> Option<IpamReport> {
    weft_api::get(state_dir, "/v1/ipam").ok()
}

impl Setup {
    fn conf(&self, version: &str) -> String {
        conf(version, &self.state_dir)
    }

    fn op(&self, cmd: &str, cid: &str, netns: Option<&str>, stdin: &str) -> Out {
        let path = netns.map(|n| format!("/run/netns/{n}"));
        let mut vars = vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", cid),
            ("CNI_IFNAME", "eth0"),
        ];
        if let Some(p) = &path {
            vars.push(("CNI_NETNS", p));
        }
        run(Some(&self.host.ns), &vars, stdin)
    }

    fn reserved(&self, cid: &str) -> Option<std::net::IpAddr> {
        ipam(&self.state_dir)?
            .reservations
            .into_iter()
            .find(|r| r.attachment.container_id == cid)
            .map(|r| r.address)
    }

    fn host_links(&self) -> String {
        self.c
            .lab
            .exec_ok(&self.host.ns, &["ip", "-o", "link"])
            .unwrap()
    }

    fn with_prev(&self, version: &str, prev: &Value) -> String {
        let mut v: Value = serde_json::from_str(&self.conf(version)).unwrap();
        v["prevResult"] = prev.clone();
        v.to_string()
    }

    fn tcpdump(&mut self) -> ProcId {
        let ns = self.host.ns.clone();
        let id = self
            .c
            .lab
            .spawn(
                &ns,
                Path::new("tcpdump"),
                &["-i", "weft", "-n", "-e", "-l", "-U", "arp"],
                "tcpdump",
            )
            .unwrap();
        // tcpdump says so on stderr (into the same log) once it listens.
        let lab = &self.c.lab;
        let up = poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
            lab.log("tcpdump").contains("listening on").then_some(())
        });
        assert!(up.is_some(), "tcpdump: {}", lab.log("tcpdump"));
        id
    }
}

#[test]
fn add_check_del_against_a_real_router() {
    if !root() {
        return;
    }
    let mut s = setup("cniadd");
    let pod = s.c.lab.add_netns("p1").unwrap();
    let _dump = s.tcpdump();
    let mtu = s.c.status(&s.host).unwrap().pod_mtu;

    let out = s.op("ADD", "c1", Some(&pod), &s.conf("1.0.0"));
    out.assert_ok();
    let r = out.json();
    assert_eq!(r["cniVersion"], "1.0.0");
    let addr = s.reserved("c1").expect("a reservation for c1");
    let ifs = r["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 2, "{r}");
    let host_if = ifs[0]["name"].as_str().unwrap().to_owned();
    assert!(host_if.starts_with("vw") && host_if.len() == 12, "{r}");
    assert!(ifs[0].get("sandbox").is_none(), "{r}");
    assert_eq!(ifs[1]["name"], "eth0");
    assert_eq!(ifs[1]["sandbox"], format!("/run/netns/{pod}"));
    let pod_mac = ifs[1]["mac"].as_str().unwrap().to_owned();
    let ip = &r["ips"][0];
    assert_eq!(ip["address"], format!("{addr}/12"), "{r}");
    assert_eq!(ip["interface"], 1);
    assert!(ip.get("version").is_none());
    let gw = ip["gateway"].as_str().unwrap().to_owned();
    assert_eq!(r["routes"], json!([{"dst": "0.0.0.0/0", "gw": gw}]));
    assert_eq!(r["dns"], json!({}));

    // The pod: eth0 up with the address and the MTU, the default route.
    let lab = &s.c.lab;
    let link: Value = serde_json::from_str(
        &lab.exec_ok(&pod, &["ip", "-j", "-d", "addr", "show", "eth0"])
            .unwrap(),
    )
    .unwrap();
    let link = &link[0];
    assert_eq!(link["mtu"], mtu, "{link}");
    assert_eq!(link["address"], pod_mac.as_str(), "{link}");
    assert!(
        link["flags"].as_array().unwrap().contains(&json!("UP")),
        "{link}"
    );
    let v4: Vec<&Value> = link["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .collect();
    assert_eq!(v4.len(), 1, "{link}");
    assert_eq!(v4[0]["local"], addr.to_string());
    assert_eq!(v4[0]["prefixlen"], 12);
    let sysctl = lab
        .exec_ok(&pod, &["cat", "/proc/sys/net/ipv4/conf/eth0/arp_notify"])
        .unwrap();
    assert_eq!(sysctl.trim(), "1");
    let routes = lab
        .exec_ok(&pod, &["ip", "route", "show", "default"])
        .unwrap();
    assert!(
        routes.contains(&format!("default via {gw} dev eth0")),
        "{routes}"
    );

    // The host end: on the bridge, hairpin on, up, same MTU.
    let host: Value = serde_json::from_str(
        &lab.exec_ok(&s.host.ns, &["ip", "-j", "-d", "link", "show", &host_if])
            .unwrap(),
    )
    .unwrap();
    let host = &host[0];
    assert_eq!(host["master"], "weft", "{host}");
    assert_eq!(host["mtu"], mtu, "{host}");
    assert_eq!(host["operstate"], "UP", "{host}");
    assert_eq!(
        host["linkinfo"]["info_slave_data"]["hairpin"], true,
        "{host}"
    );

    // The gratuitous ARP reached the bridge: an ARP from the pod's MAC announcing its own
    // address.
    let garp = format!("Request who-has {addr} tell {addr}");
    let seen = poll_until(Duration::from_secs(5), Duration::from_millis(50), || {
        lab.log("tcpdump")
            .lines()
            .any(|l| l.starts_with_mac(&pod_mac) && l.contains(&garp))
            .then_some(())
    });
    assert!(seen.is_some(), "no gratuitous ARP: {}", lab.log("tcpdump"));

    // The pod reaches its gateway (the bridge's address).
    let ping = lab
        .exec(&pod, &["ping", "-c", "1", "-W", "2", &gw])
        .unwrap();
    assert!(ping.status.success(), "{ping:?}");

    // CHECK with the ADD's result: fine, in every version.
    let prev = r.clone();
    s.op("CHECK", "c1", Some(&pod), &s.with_prev("1.0.0", &prev))
        .assert_ok();
    // CHECK without prevResult: invalid configuration.
    assert_eq!(
        s.op("CHECK", "c1", Some(&pod), &s.conf("1.0.0"))
            .error_code(),
        7
    );
    // CHECK with a prevResult that disagrees with the router.
    let mut wrong = prev.clone();
    wrong["ips"][0]["address"] = json!("10.47.255.254/12");
    let out = s.op("CHECK", "c1", Some(&pod), &s.with_prev("1.0.0", &wrong));
    assert_eq!(out.error_code(), 103, "{out:?}");
    // CHECK after the address was taken away.
    lab.exec_ok(&pod, &["ip", "addr", "flush", "dev", "eth0"])
        .unwrap();
    let out = s.op("CHECK", "c1", Some(&pod), &s.with_prev("1.0.0", &prev));
    assert_eq!(out.error_code(), 103, "{out:?}");
    assert!(out.msg().contains("does not have"), "{out:?}");

    // DEL: the pair and the reservation are gone; DEL again is fine.
    s.op("DEL", "c1", Some(&pod), &s.with_prev("1.0.0", &prev))
        .assert_ok();
    assert!(s.reserved("c1").is_none());
    assert!(!s.host_links().contains(&host_if), "{}", s.host_links());
    assert!(!lab
        .exec_ok(&pod, &["ip", "-o", "link"])
        .unwrap()
        .contains("eth0"));
    s.op("DEL", "c1", Some(&pod), &s.conf("1.0.0")).assert_ok();
    // CHECK now: the router knows nothing of c1.
    let out = s.op("CHECK", "c1", Some(&pod), &s.with_prev("1.0.0", &prev));
    assert_eq!(out.error_code(), 3, "{out:?}");

    // STATUS: ready, no output.
    let out = run(
        Some(&s.host.ns),
        &[("CNI_COMMAND", "STATUS")],
        &s.conf("1.1.0"),
    );
    out.assert_ok();
    assert!(out.stdout.is_empty(), "{out:?}");
}

trait StartsWithMac {
    fn starts_with_mac(&self, mac: &str) -> bool;
}

impl StartsWithMac for &str {
    /// `tcpdump -e` lines carry the source MAC after the timestamp.
    fn starts_with_mac(&self, mac: &str) -> bool {
        self.split_whitespace().nth(1) == Some(mac)
    }
}

#[test]
fn versions_chains_and_del_without_netns() {
    if !root() {
        return;
    }
    let mut s = setup("cniver");
    for (i, version) in ["0.4.0", "1.1.0"].into_iter().enumerate() {
        let pod = s.c.lab.add_netns(&format!("v{i}")).unwrap();
        let cid = format!("ver{i}");
        // Behind another plugin: its result comes first, ours is appended.
        let prev = json!({
            "cniVersion": version,
            "interfaces": [{"name": "other0", "mac": "02:00:00:00:00:09"}],
            "ips": [{"address": "192.0.2.9/24", "interface": 0}],
            "dns": {"nameservers": ["192.0.2.53"]}
        });
        let out = s.op("ADD", &cid, Some(&pod), &s.with_prev(version, &prev));
        out.assert_ok();
        let r = out.json();
        assert_eq!(r["cniVersion"], version);
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 3, "{r}");
        assert_eq!(r["interfaces"][0]["name"], "other0");
        assert_eq!(r["ips"][1]["interface"], 2, "{r}");
        assert_eq!(r["dns"]["nameservers"][0], "192.0.2.53");
        if version == "0.4.0" {
            assert_eq!(r["ips"][0]["version"], "4", "{r}");
            assert_eq!(r["ips"][1]["version"], "4", "{r}");
            assert!(r["interfaces"][2].get("mtu").is_none(), "{r}");
        } else {
            assert!(r["ips"][1].get("version").is_none(), "{r}");
            assert!(r["interfaces"][2]["mtu"].as_u64().is_some(), "{r}");
        }
        s.op("CHECK", &cid, Some(&pod), &s.with_prev(version, &r))
            .assert_ok();
        // The namespace goes away first (the runtime deleted the sandbox): DEL still succeeds,
        // removes the host end and the reservation.
        let host_if = r["interfaces"][1]["name"].as_str().unwrap().to_owned();
        s.c.lab.remove_netns(&pod).unwrap();
        s.op("DEL", &cid, Some(&pod), &s.conf(version)).assert_ok();
        assert!(s.reserved(&cid).is_none());
        assert!(!s.host_links().contains(&host_if));
    }
}

#[test]
fn failures_leave_nothing_behind() {
    if !root() {
        return;
    }
    let mut s = setup("cnifail");
    // A namespace that does not exist: a clear error before anything is reserved.
    let out = s.op("ADD", "gone", Some("no-such-netns-weft"), &s.conf("1.0.0"));
    assert_eq!(out.error_code(), 101, "{out:?}");
    assert!(out.msg().contains("no-such-netns-weft"), "{out:?}");
    assert!(s.reserved("gone").is_none());

    // A failure midway: the pod already has a default route, so adding ours fails after the
    // veth pair and the address exist. Everything is undone.
    let pod = s.c.lab.add_netns("busy").unwrap();
    let lab = &s.c.lab;
    lab.exec_ok(
        &pod,
        &[
            "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
        ],
    )
    .unwrap();
    lab.exec_ok(&pod, &["ip", "addr", "add", "192.0.2.1/24", "dev", "d0"])
        .unwrap();
    lab.exec_ok(&pod, &["ip", "link", "set", "d0", "up"])
        .unwrap();
    lab.exec_ok(
        &pod,
        &["ip", "route", "add", "default", "via", "192.0.2.254"],
    )
    .unwrap();
    let before = s.host_links();
    let out = s.op("ADD", "busy", Some(&pod), &s.conf("1.0.0"));
    assert_eq!(out.error_code(), 102, "{out:?}");
    assert!(out.msg().contains("default route"), "{out:?}");
    assert!(s.reserved("busy").is_none(), "{:?}", ipam(&s.state_dir));
    assert_eq!(s.host_links().lines().count(), before.lines().count());
    assert!(!lab
        .exec_ok(&pod, &["ip", "-o", "link"])
        .unwrap()
        .contains("eth0"));

    // An interface name already taken in the pod: refused before anything is reserved.
    lab.exec_ok(
        &pod,
        &[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "d2",
        ],
    )
    .unwrap();
    let out = s.op("ADD", "busy", Some(&pod), &s.conf("1.0.0"));
    assert_eq!(out.error_code(), 102, "{out:?}");
    assert!(s.reserved("busy").is_none());
}

#[test]
fn gc_keeps_only_valid_attachments() {
    if !root() {
        return;
    }
    let mut s = setup("cnigc");
    let mut host_ifs = Vec::new();
    for cid in ["keep", "drop"] {
        let pod = s.c.lab.add_netns(cid).unwrap();
        let out = s.op("ADD", cid, Some(&pod), &s.conf("1.1.0"));
        out.assert_ok();
        host_ifs.push(
            out.json()["interfaces"][0]["name"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let gc = json!({"cniVersion": "1.1.0", "name": "weft", "type": "weft-cni",
                    "stateDir": s.state_dir,
                    "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]});
    let out = run(Some(&s.host.ns), &[("CNI_COMMAND", "GC")], &gc.to_string());
    out.assert_ok();
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(s.reserved("keep").is_some());
    assert!(s.reserved("drop").is_none());
    let links = s.host_links();
    assert!(links.contains(&host_ifs[0]), "{links}");
    assert!(!links.contains(&host_ifs[1]), "{links}");
    // GC without the list is refused rather than treating everything as stale.
    let out = run(Some(&s.host.ns), &[("CNI_COMMAND", "GC")], &s.conf("1.1.0"));
    assert_eq!(out.error_code(), 7, "{out:?}");
    assert!(s.reserved("keep").is_some());
}

#[test]
fn a_router_that_is_not_ready_says_so() {
    if !root() {
        return;
    }
    // A router waiting for a second peer before it splits the pod CIDR never gets ready alone.
    let mut c = Cluster::new("cniwait", weft_bin().unwrap()).unwrap();
    let host = c.add_host("h1").unwrap();
    c.start_router(
        &host,
        &[],
        &["--pod-cidr", POD_CIDR, "--ipam-init-peers", "2"],
    )
    .unwrap();
    let state_dir = c.state_dir(&host);
    let report = ipam(&state_dir).expect("GET /v1/ipam answers");
    assert!(!report.ready, "{report:?}");
    let out = run(
        Some(&host.ns),
        &[("CNI_COMMAND", "STATUS")],
        &conf("1.1.0", &state_dir),
    );
    assert_eq!(out.error_code(), 50, "{out:?}");
    assert!(out.msg().contains(&report.reason), "{out:?} vs {report:?}");
    let pod = c.lab.add_netns("p1").unwrap();
    add_answers_11_and_leaves_nothing(&c.lab, &host.ns, &pod, &conf("1.0.0", &state_dir));
}
