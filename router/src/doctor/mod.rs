//! `weft doctor`: checks this host and its peers and says what to fix.
//!
//! Two halves: [`judge`], pure functions from facts to [`Check`]s (every level decided there,
//! unit-tested without the system), and [`gather`], the reading layer. [`run`] ties them
//! together in this order: the local router, kernel features, sysctls, the CNI configuration,
//! devices of other overlays, the underlay MTU, the MTU of the pods' ports, then per peer TCP (a real connect from this
//! host), UDP and VXLAN (what the router's own heartbeats and probes see: a third party gets no
//! answer from the sleeve) and the pod MTU, and last the clock (skipped: nothing measures it).
//!
//! Doctor only reads: it changes no link, address, route, sysctl or rule, and creates no
//! device, in the namespace it runs in or anywhere else (docs/decisions.md, "weft doctor").

pub mod gather;
pub mod judge;

use judge::{Context, Feature};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use weft_api::doctor::{Check, Report};
use weft_api::status;

/// Default sleeve (control and data) port, for targets written without one.
pub const DEFAULT_PORT: u16 = 6783;

/// What to check.
#[derive(Debug, Clone)]
pub struct Options {
    /// The local router's state directory (its API socket).
    pub state_dir: PathBuf,
    /// The CNI configuration directory.
    pub cni_conf_dir: PathBuf,
    /// Where /proc, /sys, /dev and /lib/modules are read from (`/`).
    pub root: PathBuf,
    /// How long a TCP probe waits for a peer.
    pub probe_timeout: Duration,
}

impl Options {
    /// The defaults: `/run/weft`, `/etc/cni/net.d`, `/`, 2 s.
    pub fn new(state_dir: PathBuf, cni_conf_dir: PathBuf) -> Options {
        Options {
            state_dir,
            cni_conf_dir,
            root: PathBuf::from("/"),
            probe_timeout: Duration::from_secs(2),
        }
    }
}

/// What the checks need to know about the local router's report.
fn context(r: &status::Report) -> Context {
    let fast_on = r.fastpath.state == "on";
    let mut ports = Vec::new();
    if let Some(a) = judge::socket_addr(&r.listen, DEFAULT_PORT) {
        ports.push(a.port());
    }
    if fast_on && r.fastpath.port != 0 {
        ports.push(r.fastpath.port);
    }
    Context {
        router: true,
        ipam: r.ipam.is_some(),
        pod_cidr: r.ipam.as_ref().and_then(|i| i.cidr.parse().ok()),
        policy: r.policy.is_some(),
        own_links: [&r.bridge, &r.tap, &r.fastpath.device]
            .into_iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect(),
        ports,
        fastpath_off: (!fast_on).then(|| r.fastpath.state.clone()),
    }
}

/// Runs every check.
pub fn run(opts: &Options) -> Report {
    let mut checks = Vec::new();
    let state_dir = opts.state_dir.display().to_string();
    let answer: Result<status::Report, String> =
        weft_api::get(&opts.state_dir, "/v1/status").map_err(|e| e.to_string());
    checks.push(judge::router(
        answer.as_ref().map_err(|e| e.as_str()),
        &state_dir,
    ));
    let report = answer.ok();
    let ctx = report.as_ref().map(context).unwrap_or_else(|| Context {
        ports: vec![DEFAULT_PORT, crate::fastpath::DEFAULT_PORT],
        ..Context::default()
    });

    let links = gather::links();
    let kinds: Vec<String> = links
        .as_ref()
        .map(|l| l.iter().map(|l| l.fact.kind.clone()).collect())
        .unwrap_or_default();
    for f in Feature::ALL {
        let presence = gather::feature(&opts.root, f, &kinds);
        checks.push(judge::kernel(f, &presence, &ctx));
    }

    checks.push(judge::ip_forward(
        gather::read(&opts.root, "/proc/sys/net/ipv4/ip_forward").as_deref(),
    ));
    checks.push(judge::bridge_nf_call_iptables(
        gather::read(&opts.root, "/proc/sys/net/bridge/bridge-nf-call-iptables").as_deref(),
        &ctx,
    ));

    let files = gather::cni_files(&opts.cni_conf_dir);
    checks.push(judge::cni_order(
        &opts.cni_conf_dir.display().to_string(),
        files.as_deref(),
        &ctx,
    ));

    match &links {
        Ok(l) => {
            let facts: Vec<judge::LinkFact> = l.iter().map(|l| l.fact.clone()).collect();
            checks.extend(judge::foreign_links(&facts, &ctx));
        }
        Err(e) => checks.push(Check::new(
            "links",
            weft_api::doctor::Status::Skip,
            format!("cannot list links: {e:#}"),
        )),
    }

    if let Some(r) = &report {
        let listen = judge::socket_addr(&r.listen, DEFAULT_PORT);
        let now = match (&links, listen) {
            (Ok(l), Some(a)) => gather::underlay(l, a.ip()),
            _ => None,
        };
        checks.push(judge::underlay_mtu(
            now.as_ref().map(|(d, m)| (d.as_str(), *m)),
            r.underlay_mtu,
            r.pod_mtu,
        ));
        if let Ok(l) = &links {
            let ports = gather::bridge_ports(l, &r.bridge, &[&r.tap, &r.fastpath.device]);
            checks.push(judge::pod_ports(&r.bridge, &ports, r.pod_mtu, &ctx));
        }
        checks.extend(peers(r, &ctx, opts.probe_timeout));
    }
    checks.push(judge::clock(
        report.as_ref().map(|r| r.peers.as_slice()).unwrap_or(&[]),
    ));
    Report::new(checks)
}

/// The checks of every peer and of every dial target that never became one; the TCP probes
/// run in parallel.
fn peers(r: &status::Report, ctx: &Context, timeout: Duration) -> Vec<Check> {
    let udp_port = judge::socket_addr(&r.listen, DEFAULT_PORT)
        .map(|a| a.port())
        .unwrap_or(DEFAULT_PORT);
    let vxlan_port = if r.fastpath.port != 0 {
        r.fastpath.port
    } else {
        crate::fastpath::DEFAULT_PORT
    };
    let direct: Vec<(String, Option<SocketAddr>, &status::PeerReport)> = r
        .peers
        .iter()
        .map(|p| {
            (
                judge::label(&p.nickname, &p.name),
                judge::socket_addr(&p.addr, DEFAULT_PORT),
                p,
            )
        })
        .collect();
    let targets: Vec<(SocketAddr, String)> = judge::failing_targets(&r.targets)
        .into_iter()
        .filter_map(|(a, why)| Some((judge::socket_addr(&a, DEFAULT_PORT)?, why)))
        .filter(|(a, _)| {
            !direct
                .iter()
                .any(|(_, d, _)| d.map(|d| d.ip()) == Some(a.ip()))
        })
        .collect();
    let addrs: Vec<SocketAddr> = direct
        .iter()
        .filter_map(|(_, a, _)| *a)
        .chain(targets.iter().map(|(a, _)| *a))
        .collect();
    let probes: Vec<judge::TcpProbe> = std::thread::scope(|s| {
        let handles: Vec<_> = addrs
            .iter()
            .map(|a| s.spawn(move || gather::tcp_probe(*a, timeout)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| judge::TcpProbe::Error("probe panicked".into()))
            })
            .collect()
    });
    let mut probes = probes.into_iter();
    let mut out = Vec::new();
    for (label, addr, p) in &direct {
        if let Some(a) = addr {
            if let Some(probe) = probes.next() {
                out.push(judge::peer_tcp(label, *a, &probe));
            }
        }
        out.push(judge::peer_udp(label, p, udp_port));
        if !p.addr.is_empty() {
            out.push(judge::peer_vxlan(label, p, ctx, vxlan_port));
            out.push(judge::peer_mtu(label, p, r.pod_mtu));
        }
    }
    for (a, why) in &targets {
        if let Some(probe) = probes.next() {
            out.push(judge::target_tcp(*a, why, &probe));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::doctor::Status;

    /// A status report as the router serves it, with `extra` fields merged in.
    fn report(extra: serde_json::Value) -> status::Report {
        let mut v = serde_json::json!({
            "version": "0.1.0", "name": "aa", "nickname": "h1", "uid": "1",
            "listen": "127.0.0.1:6783", "bridge": "weft", "tap": "weft-tap",
            "underlay_mtu": 1500, "pod_mtu": 1436, "uptime_secs": 5,
            "peers": [], "targets": [], "connections": [], "refused_connections": 0,
            "refused": [], "encrypted": false, "counters": {}, "drops": {}, "fdb": {},
            "fastpath": {"state": "on", "device": "weft-vxlan", "vni": 30565, "port": 6784,
                         "peers": 0, "rx_packets": 0, "tx_packets": 0, "rx_bytes": 0,
                         "tx_bytes": 0}
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn context_from_the_router_report() {
        let c = context(&report(serde_json::json!({})));
        assert!(c.router && !c.ipam && !c.policy);
        assert_eq!(c.ports, [6783, 6784]);
        assert_eq!(c.own_links, ["weft", "weft-tap", "weft-vxlan"]);
        assert_eq!(c.fastpath_off, None);
        let c = context(&report(serde_json::json!({
            "fastpath": {"state": "off: encrypted", "device": "", "vni": 0, "port": 0,
                         "peers": 0, "rx_packets": 0, "tx_packets": 0, "rx_bytes": 0,
                         "tx_bytes": 0},
            "ipam": {"cidr": "10.32.0.0/12", "block_prefix": 24, "masquerade": true,
                     "held": [], "reservations": [], "lost": [], "ready": true,
                     "cluster": null},
        })));
        assert!(c.ipam);
        assert_eq!(c.pod_cidr, Some("10.32.0.0/12".parse().unwrap()));
        assert_eq!(c.ports, [6783]);
        assert_eq!(c.own_links, ["weft", "weft-tap"]);
        assert_eq!(c.fastpath_off.as_deref(), Some("off: encrypted"));
    }

    #[test]
    fn peers_and_failing_targets_are_probed() {
        // A listening "peer" on loopback that speaks first like a router, and a target whose
        // port nobody listens on.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let up = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            use std::io::Write;
            let (mut s, _) = l.accept().unwrap();
            let _ = s.write_all(b"WEFT\x01\x00\x01\x00");
        });
        let down = {
            let t = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
            t.local_addr().unwrap()
        };
        let r = report(serde_json::json!({
            "peers": [{
                "name": "bb", "nickname": "h2", "addr": up.to_string(),
                "state": "established", "path": "fast path", "mtu": 1436, "rtt_ms": 0.2,
                "tx_frames": 0, "tx_bytes": 0, "tx_datagrams": 0, "rx_frames": 0,
                "rx_bytes": 0, "rx_datagrams": 0, "relayed_datagrams": 0, "drops": {},
                "encryption": "none", "fastpath": "VXLAN probes answered both ways",
                "key_epoch": null, "rekeys": 0
            }],
            "targets": [{"addr": down.to_string(), "state": "retrying",
                         "next_attempt_in_ms": 500, "last_error": "connection refused",
                         "failures": 4}]
        }));
        let checks = peers(&r, &context(&r), Duration::from_secs(2));
        server.join().unwrap();
        let names: Vec<(&str, Status)> =
            checks.iter().map(|c| (c.name.as_str(), c.status)).collect();
        let target = format!("peer.{down}.tcp");
        assert_eq!(
            names,
            [
                ("peer.h2.tcp", Status::Ok),
                ("peer.h2.udp", Status::Ok),
                ("peer.h2.vxlan", Status::Ok),
                ("peer.h2.mtu", Status::Ok),
                (target.as_str(), Status::Fail),
            ]
        );
        assert!(checks[4].found.contains("connection refused"));
    }
}
