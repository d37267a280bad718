//! The NetworkPolicy cases, adapted from the upstream Kubernetes e2e suite
//! (`test/e2e/network/netpol/network_policy.go`): each writes its policies, builds the expected
//! tables by hand (from everything allowed, marking what the policy denies) and waits for the
//! traffic to match. [`run_all`] empties the policy directory between cases and reports every
//! failing case with its differing cells, not only the first.
//!
//! Conventions of the expectations: a pod always reaches itself (its own address never leaves its
//! namespace); a host always reaches its own pods, and other hosts are treated like any other
//! source (Kubernetes only exempts the node a pod runs on); replies to an allowed connection
//! always pass, whatever the replying side's policies (so a row of an ingress-isolated pod stays
//! allowed). There is no DNS in these clusters, so egress deny needs no DNS exception.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Instant;
use weft_tests::netpol::manifest::network_policy;
use weft_tests::netpol::{Expectation, Kind, Netpol, Protocol, DEADLINE, OUTSIDE_IPS};

/// One case: a name and what it does.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Its name in the report.
    pub name: &'static str,
    /// Writes policies and checks the traffic; the error holds the tables and the cells.
    pub run: fn(&mut Netpol) -> Result<(), String>,
}

/// Every case, in the order they run.
pub const CASES: &[Case] = &[
    Case {
        name: "no policy: all allowed",
        run: no_policy,
    },
    Case {
        name: "default deny ingress in x",
        run: deny_ingress_x,
    },
    Case {
        name: "default deny egress in x",
        run: deny_egress_x,
    },
    Case {
        name: "allow all ingress in x",
        run: allow_all_ingress_x,
    },
    Case {
        name: "x/a only from pod=b of x",
        run: from_pod_b,
    },
    Case {
        name: "x/a only from namespace y",
        run: from_namespace_y,
    },
    Case {
        name: "pod AND namespace vs OR",
        run: and_vs_or,
    },
    Case {
        name: "matchExpressions",
        run: match_expressions,
    },
    Case {
        name: "ipBlock with except",
        run: ip_block,
    },
    Case {
        name: "numeric port 80",
        run: port_80,
    },
    Case {
        name: "named ports",
        run: named_ports,
    },
    Case {
        name: "endPort ranges",
        run: end_port,
    },
    Case {
        name: "protocol UDP only",
        run: udp_only,
    },
    Case {
        name: "policies add up",
        run: policies_add_up,
    },
    Case {
        name: "egress to namespace y",
        run: egress_to_y,
    },
    Case {
        name: "labels change under policy",
        run: labels_change,
    },
    Case {
        name: "pods added and deleted under policy",
        run: pods_come_and_go,
    },
];

/// Resets, runs every case, prints the timings; panics at the end listing every failure.
pub fn run_all(np: &mut Netpol, cases: &[Case]) {
    let mut failures = Vec::new();
    let mut timings = Vec::new();
    for case in cases {
        let t = Instant::now();
        let reset = np
            .clear_policies()
            .map_err(|e| format!("{e:#}"))
            .and_then(|()| {
                let all = np.all_allowed();
                np.expect_eventually(&all, DEADLINE).map(drop)
            });
        let result = reset
            .map_err(|e| format!("resetting to no policy: {e}"))
            .and_then(|()| (case.run)(np));
        let secs = t.elapsed().as_secs_f64();
        match &result {
            Ok(()) => eprintln!(
                "netpol {:?}: case {:?} passed in {secs:.1} s",
                np.path, case.name
            ),
            Err(e) => {
                eprintln!(
                    "netpol {:?}: case {:?} FAILED in {secs:.1} s:\n{e}",
                    np.path, case.name
                );
                failures.push(format!("{}: {}", case.name, first_lines(e)));
            }
        }
        timings.push((case.name, secs, result.is_ok()));
    }
    eprintln!("netpol {:?}: | case | s | result |", np.path);
    for (name, secs, ok) in &timings {
        eprintln!(
            "| {name} | {secs:.1} | {} |",
            if *ok { "pass" } else { "FAIL" }
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed on {:?}:\n{}",
        failures.len(),
        cases.len(),
        np.path,
        failures.join("\n")
    );
}

/// The differing cells of an error message (the lines after the tables), at most 20.
fn first_lines(e: &str) -> String {
    let cells = e.split("differing cells ---\n").nth(1).unwrap_or(e);
    cells.lines().take(20).collect::<Vec<_>>().join("\n    ")
}

/// A NetworkPolicy `name` in `ns`.
pub fn pol(ns: &str, name: &str, spec: Value) -> Value {
    network_policy(ns, name, spec)
}

fn labels(k: &str, v: &str) -> Value {
    json!({"matchLabels": {k: v}})
}

fn write(np: &mut Netpol, file: &str, docs: &[Value]) -> Result<(), String> {
    np.write_policy(file, docs).map_err(|e| format!("{e:#}"))
}

fn check(np: &mut Netpol, step: &str, e: &Expectation) -> Result<(), String> {
    np.expect_eventually(e, DEADLINE)
        .map(drop)
        .map_err(|m| format!("{step}: {m}"))
}

/// The pods of namespace `ns`.
fn pods_of(np: &Netpol, ns: &str) -> Vec<String> {
    np.pod_names()
        .into_iter()
        .filter(|p| p.starts_with(&format!("{ns}/")))
        .collect()
}

/// Marks every host but its own as denied to each of `pods` (ingress-isolated pods).
fn remote_hosts_denied(np: &Netpol, e: &mut Expectation, pods: &[String]) {
    for p in pods {
        np.deny_remote_hosts_to(e, p);
    }
}

fn no_policy(np: &mut Netpol) -> Result<(), String> {
    let e = np.all_allowed();
    check(np, "no policy", &e)
}

fn deny_ingress_x(np: &mut Netpol) -> Result<(), String> {
    write(
        np,
        "x-deny-ingress.yaml",
        &[pol(
            "x",
            "deny-ingress",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        )],
    )?;
    let mut e = np.all_allowed();
    // x's pods still reach everybody: replies to their own connections pass.
    e.each(|t| t.deny_all_to_ns("x"));
    // Each host still reaches its own pod of x; the others do not.
    remote_hosts_denied(np, &mut e, &pods_of(np, "x"));
    check(np, "deny ingress in x", &e)
}

fn deny_egress_x(np: &mut Netpol) -> Result<(), String> {
    write(
        np,
        "x-deny-egress.json",
        &[pol(
            "x",
            "deny-egress",
            json!({"podSelector": {}, "policyTypes": ["Egress"]}),
        )],
    )?;
    let mut e = np.all_allowed();
    // Everybody still reaches x's pods (their replies pass), hosts included.
    e.each(|t| t.deny_all_from_ns("x"));
    e.outside.deny_all_from_ns("x");
    check(np, "deny egress in x", &e)
}

fn allow_all_ingress_x(np: &mut Netpol) -> Result<(), String> {
    let deny = pol(
        "x",
        "deny-ingress",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    );
    let allow = pol(
        "x",
        "allow-all-ingress",
        json!({"podSelector": {}, "ingress": [{}]}),
    );
    write(np, "x-allow-all.yaml", &[deny, allow])?;
    let e = np.all_allowed();
    check(np, "deny and allow-all ingress in x", &e)
}

/// Upstream "should enforce policy to allow traffic only from a pod in the same namespace".
fn from_pod_b(np: &mut Netpol) -> Result<(), String> {
    write(
        np,
        "x-a.yaml",
        &[pol(
            "x",
            "allow-b",
            json!({"podSelector": labels("pod", "a"), "ingress": [{"from": [{"podSelector": labels("pod", "b")}]}]}),
        )],
    )?;
    let mut e = np.all_allowed();
    e.each(|t| {
        t.deny_all_to("x/a");
        t.allow("x/b", "x/a");
    });
    remote_hosts_denied(np, &mut e, &["x/a".into()]);
    check(np, "x/a from pod=b", &e)
}

fn from_namespace_y(np: &mut Netpol) -> Result<(), String> {
    write(
        np,
        "x-a.json",
        &[pol(
            "x",
            "allow-y",
            json!({"podSelector": labels("pod", "a"), "ingress": [{"from": [{"namespaceSelector": labels("ns", "y")}]}]}),
        )],
    )?;
    let mut e = np.all_allowed();
    e.each(|t| {
        t.deny_all_to("x/a");
        t.allow_from_ns_to("y", "x/a");
    });
    remote_hosts_denied(np, &mut e, &["x/a".into()]);
    check(np, "x/a from namespace y", &e)
}

fn and_vs_or(np: &mut Netpol) -> Result<(), String> {
    let and = json!([{"namespaceSelector": labels("ns", "y"), "podSelector": labels("pod", "b")}]);
    write(
        np,
        "x-a.yaml",
        &[pol(
            "x",
            "and",
            json!({"podSelector": labels("pod", "a"), "ingress": [{"from": and}]}),
        )],
    )?;
    let mut e = np.all_allowed();
    e.each(|t| {
        t.deny_all_to("x/a");
        t.allow("y/b", "x/a");
    });
    remote_hosts_denied(np, &mut e, &["x/a".into()]);
    check(np, "one peer: namespace y AND pod=b", &e)?;
    let or = json!([{"namespaceSelector": labels("ns", "y")}, {"podSelector": labels("pod", "b")}]);
    write(
        np,
        "x-a.yaml",
        &[pol(
            "x",
            "and",
            json!({"podSelector": labels("pod", "a"), "ingress": [{"from": or}]}),
        )],
    )?;
    let mut e = np.all_allowed();
    e.each(|t| {
        t.deny_all_to("x/a");
        t.allow_from_ns_to("y", "x/a");
        t.allow("x/b", "x/a");
    });
    remote_hosts_denied(np, &mut e, &["x/a".into()]);
    check(np, "two peers: namespace y OR pod=b of x", &e)
}

fn expr(key: &str, op: &str, values: &[&str]) -> Value {
    if values.is_empty() {
        json!({"key": key, "operator": op})
    } else {
        json!({"key": key, "operator": op, "values": values})
    }
}

fn match_expressions(np: &mut Netpol) -> Result<(), String> {
    // In / NotIn: x/a and x/b take only namespace y (ns NotIn [x, z]).
    let spec = json!({
        "podSelector": {"matchExpressions": [expr("pod", "In", &["a", "b"])]},
        "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [expr("ns", "NotIn", &["x", "z"])]}}]}],
    });
    write(np, "x-mx.yaml", &[pol("x", "in-notin", spec)])?;
    let mut e = np.all_allowed();
    e.each(|t| {
        for p in ["x/a", "x/b"] {
            t.deny_all_to(p);
            t.allow_from_ns_to("y", p);
        }
    });
    remote_hosts_denied(np, &mut e, &["x/a".into(), "x/b".into()]);
    check(np, "pod In [a, b] from ns NotIn [x, z]", &e)?;
    // Exists / DoesNotExist: every pod of x (pod Exists) takes pods without a `pod` label (none)
    // and pods c of any labelled namespace (ns Exists); a policy on `nolabel Exists` selects
    // nobody and changes nothing.
    let spec = json!({
        "podSelector": {"matchExpressions": [expr("pod", "Exists", &[])]},
        "ingress": [{"from": [
            {"podSelector": {"matchExpressions": [expr("pod", "DoesNotExist", &[])]}},
            {"namespaceSelector": {"matchExpressions": [expr("ns", "Exists", &[])]}, "podSelector": labels("pod", "c")},
        ]}],
    });
    let nobody = json!({"podSelector": {"matchExpressions": [expr("nolabel", "Exists", &[])]}, "policyTypes": ["Ingress", "Egress"]});
    write(
        np,
        "x-mx.yaml",
        &[pol("x", "exists", spec), pol("x", "nobody", nobody)],
    )?;
    let mut e = np.all_allowed();
    let x = pods_of(np, "x");
    e.each(|t| {
        t.deny_all_to_ns("x");
        for p in &x {
            for ns in ["x", "y", "z"] {
                t.allow(&format!("{ns}/c"), p);
            }
        }
    });
    remote_hosts_denied(np, &mut e, &x);
    check(
        np,
        "pod Exists from pod DoesNotExist or (ns Exists and pod=c)",
        &e,
    )
}

fn in_cidr(ip: Ipv4Addr, base: Ipv4Addr, len: u8) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(base) & mask
}

/// Upstream "should allow ingress access from a CIDR with except" and the egress form: the
/// ingress CIDR is the /24 holding x/a (h1's block, as IPAM gave it), except y/b's /32.
fn ip_block(np: &mut Netpol) -> Result<(), String> {
    let base = np.observe();
    let net = np.pod("x/a").ip();
    let net = Ipv4Addr::from(u32::from(net) & 0xffff_ff00);
    let except = np.pod("y/b").ip();
    if !in_cidr(except, net, 24) {
        eprintln!("note: y/b ({except}) is not in x/a's /24 {net}: the except clause excepts nothing in it");
    }
    let spec = json!({
        "podSelector": labels("pod", "b"),
        "ingress": [{"from": [{"ipBlock": {"cidr": format!("{net}/24"), "except": [format!("{except}/32")]}}]}],
    });
    write(np, "x-b-cidr.yaml", &[pol("x", "cidr", spec)])?;
    let mut e = np.all_allowed();
    let inside = |ip: Ipv4Addr| in_cidr(ip, net, 24) && ip != except;
    let pods: Vec<(String, Ipv4Addr)> = np.pods.iter().map(|p| (p.id(), p.ip())).collect();
    e.each(|t| {
        t.deny_all_to("x/b");
        for (p, ip) in &pods {
            if inside(*ip) {
                t.allow(p, "x/b");
            }
        }
    });
    // The hosts by the source address x/b saw from them without a policy.
    let own = np.hosts[np.pod("x/b").host].name.clone();
    for h in np.host_names() {
        let src = base.seen.get(&(h.clone(), "x/b".to_string())).copied();
        eprintln!("x/b sees {h} as {src:?}");
        let allowed = h == own || src.is_some_and(inside);
        e.hosts.set(&h, "x/b", allowed);
    }
    check(np, &format!("x/b from {net}/24 except {except}/32"), &e)?;
    np.remove_policy("x-b-cidr.yaml")
        .map_err(|e| format!("{e:#}"))?;
    let [allowed, excepted] = OUTSIDE_IPS;
    let spec = json!({
        "podSelector": labels("pod", "a"),
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.200.0.0/24", "except": [format!("{excepted}/32")]}}]}],
    });
    write(np, "x-a-cidr.yaml", &[pol("x", "egress-cidr", spec)])?;
    let mut e = np.all_allowed();
    e.each(|t| t.deny_all_from("x/a"));
    e.outside
        .deny("x/a", &format!("out/{}", excepted.octets()[3]));
    e.outside
        .allow("x/a", &format!("out/{}", allowed.octets()[3]));
    check(
        np,
        "x/a egress to 10.200.0.0/24 except one outside address",
        &e,
    )
}

fn only_ingress_ports(
    np: &mut Netpol,
    step: &str,
    ports: Value,
    open: &[Kind],
) -> Result<(), String> {
    let spec = json!({"podSelector": labels("pod", "a"), "ingress": [{"ports": ports}]});
    write(np, "x-a-ports.yaml", &[pol("x", "ports", spec)])?;
    let mut e = np.all_allowed();
    e.except(|k| open.contains(&k), |t| t.deny_all_to("x/a"));
    if !open.contains(&Kind::tcp(80)) {
        remote_hosts_denied(np, &mut e, &["x/a".into()]);
    }
    check(np, step, &e)
}

fn port_80(np: &mut Netpol) -> Result<(), String> {
    // No protocol: TCP, the API's default.
    only_ingress_ports(
        np,
        "ingress to x/a on port 80 only",
        json!([{"port": 80}]),
        &[Kind::tcp(80)],
    )
}

fn named_ports(np: &mut Netpol) -> Result<(), String> {
    let ports = json!([{"port": "serve-80-tcp"}, {"protocol": "UDP", "port": "serve-81-udp"}]);
    only_ingress_ports(
        np,
        "ingress to x/a on serve-80-tcp and serve-81-udp",
        ports,
        &[Kind::tcp(80), Kind::udp(81)],
    )
}

fn end_port(np: &mut Netpol) -> Result<(), String> {
    let ports = json!([{"protocol": "TCP", "port": 80, "endPort": 81}]);
    only_ingress_ports(
        np,
        "ingress to x/a on TCP 80-81",
        ports,
        &[Kind::tcp(80), Kind::tcp(81)],
    )?;
    let ports = json!([{"protocol": "TCP", "port": 81, "endPort": 81}]);
    only_ingress_ports(np, "ingress to x/a on TCP 81-81", ports, &[Kind::tcp(81)])
}

fn udp_only(np: &mut Netpol) -> Result<(), String> {
    let open: Vec<Kind> = np
        .kinds
        .iter()
        .copied()
        .filter(|k| k.protocol == Protocol::Udp)
        .collect();
    only_ingress_ports(
        np,
        "ingress to x/a on UDP, any port",
        json!([{"protocol": "UDP"}]),
        &open,
    )
}

fn policies_add_up(np: &mut Netpol) -> Result<(), String> {
    let from_y_80 = pol(
        "x",
        "y-on-80",
        json!({"podSelector": labels("pod", "a"), "ingress": [{"from": [{"namespaceSelector": labels("ns", "y")}], "ports": [{"port": 80}]}]}),
    );
    let from_b = pol(
        "x",
        "from-b",
        json!({"podSelector": labels("pod", "a"), "ingress": [{"from": [{"podSelector": labels("pod", "b")}]}]}),
    );
    write(np, "x-a-two.yml", &[from_y_80, from_b])?;
    let mut e = np.all_allowed();
    e.each(|t| {
        t.deny_all_to("x/a");
        t.allow("x/b", "x/a");
    });
    e.only(|k| k == Kind::tcp(80), |t| t.allow_from_ns_to("y", "x/a"));
    remote_hosts_denied(np, &mut e, &["x/a".into()]);
    check(np, "x/a: from y on TCP 80, plus from pod=b on all", &e)
}

fn egress_to_y(np: &mut Netpol) -> Result<(), String> {
    let spec = json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": labels("ns", "y")}]}]});
    write(np, "x-egress.yaml", &[pol("x", "to-y", spec)])?;
    let mut e = np.all_allowed();
    let x = pods_of(np, "x");
    e.each(|t| {
        for p in &x {
            t.deny_all_from(p);
            t.allow_from_to_ns(p, "y");
        }
    });
    e.outside.deny_all_from_ns("x");
    check(np, "x egress to namespace y only", &e)
}

fn label(v: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("pod".to_string(), v.to_string())])
}

fn labels_change(np: &mut Netpol) -> Result<(), String> {
    let result = from_pod_b(np).and_then(|()| {
        np.set_labels("x/b", label("b-old"))
            .map_err(|e| format!("{e:#}"))?;
        np.set_labels("x/c", label("b"))
            .map_err(|e| format!("{e:#}"))?;
        let mut e = np.all_allowed();
        e.each(|t| {
            t.deny_all_to("x/a");
            t.allow("x/c", "x/a");
        });
        remote_hosts_denied(np, &mut e, &["x/a".into()]);
        check(np, "x/b relabelled pod=b-old, x/c relabelled pod=b", &e)
    });
    let restore = np
        .set_labels("x/b", label("b"))
        .and_then(|()| np.set_labels("x/c", label("c")))
        .map_err(|e| format!("restoring labels: {e:#}"));
    result.and(restore)
}

fn pods_come_and_go(np: &mut Netpol) -> Result<(), String> {
    let spec =
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": labels("pod", "b")}]}]});
    write(np, "x-from-b.yaml", &[pol("x", "from-b", spec)])?;
    let expect = |np: &Netpol| {
        let mut e = np.all_allowed();
        let x = pods_of(np, "x");
        let bs: Vec<String> = np
            .pods
            .iter()
            .filter(|p| p.namespace == "x" && p.labels.get("pod").is_some_and(|v| v == "b"))
            .map(|p| p.id())
            .collect();
        e.each(|t| {
            t.deny_all_to_ns("x");
            for b in &bs {
                for p in &x {
                    t.allow(b, p);
                }
            }
        });
        remote_hosts_denied(np, &mut e, &x);
        e
    };
    let e = expect(np);
    check(np, "x from pod=b", &e)?;
    // x/d, labelled pod=b, on h3: it reaches x's pods, and x/b reaches it.
    np.add_pod("x", "d", 2, label("b"))
        .map_err(|e| format!("{e:#}"))?;
    let d_ip = np.pod("x/d").ip();
    let e = expect(np);
    let step = check(np, "x/d (pod=b) added on h3", &e);
    np.delete_pod("x/d").map_err(|e| format!("{e:#}"))?;
    step?;
    // z/e on h3 may get x/d's old address: it must not inherit x/d's rights.
    np.add_pod("z", "e", 2, label("e"))
        .map_err(|e| format!("{e:#}"))?;
    let e_ip = np.pod("z/e").ip();
    eprintln!(
        "x/d had {d_ip}, z/e got {e_ip}{}",
        if d_ip == e_ip { " (the same)" } else { "" }
    );
    let e = expect(np);
    let step = check(np, "x/d deleted, z/e added on h3", &e);
    np.delete_pod("z/e").map_err(|e| format!("{e:#}"))?;
    step
}
