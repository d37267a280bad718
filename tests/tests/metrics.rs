//! The metrics and their documentation (issue 16, part 4): docs/metrics.md lists every family
//! the router can emit (name, type, labels, when it appears); these tests hold the router, the
//! doc and the Grafana dashboard together.
//!
//! * `a_real_scrape_matches_the_documented_families` (root): a 2-host cluster with `--metrics`
//!   inside each host namespace, IPAM, a secret file, an empty `--policy-dir` and one pod
//!   attached through `cnitool`; each router's `/metrics` is read from inside its namespace and
//!   parsed with a strict parser of the Prometheus text format (`prom_text_format_parser`):
//!   every family is documented with its type and labels, every family the doc says this set-up
//!   shows is there, and the heartbeat round-trip histograms are well formed.
//! * `the_dashboard_uses_only_documented_metrics` (no root): every metric name in the PromQL of
//!   deploy/grafana/weft.json is a documented family (histograms with `_bucket`, `_sum`,
//!   `_count`), and the labels its selectors name are the family's.
//! * `conditional_families_match_the_doc_too` (no root): the families that test cannot set up,
//!   rendered by the router's renderer from a made-up report, checked the same way.
//! * `the_doc_tables_parse` (no root): the doc's tables are well formed.
//!
//! The first needs root, `cnitool`, `nft` and the release `weft` and `weft-cni` binaries.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use weft_lab::poll_until;
use weft_lab::testbed::http_get;

/// One family as docs/metrics.md lists it.
#[derive(Debug, Clone)]
struct Family {
    kind: String,
    labels: BTreeSet<String>,
    when: Vec<String>,
}

/// The conditions of the doc's `when` column that the scrape test sets up: the families that
/// depend on these only must be in its scrape.
const SET_UP: [&str; 7] = [
    "always", "peers", "seeds", "ipam", "secret", "policy", "pods",
];
/// The conditions it does not set up (the doc says why).
const NOT_SET_UP: [&str; 3] = ["fastpath", "kernel", "dropped"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn strip_ticks(s: &str) -> &str {
    s.trim().trim_matches('`')
}

/// The families of docs/metrics.md: every table row whose first cell is a backticked name
/// starting with `weft_`.
fn documented() -> BTreeMap<String, Family> {
    let text = std::fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(row) = line.strip_prefix("| `weft_") else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').collect();
        assert!(cells.len() >= 5, "a short row: {line}");
        let name = format!("weft_{}", strip_ticks(cells[0]));
        let kind = cells[1].trim().to_string();
        assert!(
            ["counter", "gauge", "histogram"].contains(&kind.as_str()),
            "{name}: type {kind:?}"
        );
        let labels: BTreeSet<String> = match cells[2].trim() {
            "-" => BTreeSet::new(),
            l => l.split(',').map(|l| strip_ticks(l).to_string()).collect(),
        };
        let when: Vec<String> = cells[3]
            .split(',')
            .map(|w| strip_ticks(w).to_string())
            .collect();
        for w in &when {
            assert!(
                SET_UP.contains(&w.as_str()) || NOT_SET_UP.contains(&w.as_str()),
                "{name}: unknown condition {w:?} (add it to the legend and to this test)"
            );
        }
        if kind == "histogram" {
            assert!(labels.contains("le"), "{name}: a histogram has `le`");
        }
        let f = Family { kind, labels, when };
        assert!(out.insert(name.clone(), f).is_none(), "{name} twice");
    }
    out
}

#[test]
fn the_doc_tables_parse() {
    let doc = documented();
    assert!(doc.len() > 60, "only {} families found", doc.len());
    for name in doc.keys() {
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{name}"
        );
    }
    for (name, f) in &doc {
        if f.kind == "counter" {
            assert!(name.ends_with("_total"), "counter {name} without _total");
        }
    }
}

/// The documented family a sample or PromQL name belongs to: itself, or a histogram's series.
fn family_of<'a>(doc: &'a BTreeMap<String, Family>, name: &str) -> Option<(&'a str, &'a Family)> {
    if let Some((k, f)) = doc.get_key_value(name) {
        return Some((k, f));
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|s| {
        let base = name.strip_suffix(s)?;
        let (k, f) = doc.get_key_value(base)?;
        (f.kind == "histogram").then_some((k.as_str(), f))
    })
}

/// A PromQL expression's metric names, each with the label names of its selector (if any).
/// String literals are skipped, so label values never pass for names.
fn promql_metrics(expr: &str) -> Vec<(String, Vec<String>)> {
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let skip_string = |i: usize| -> usize {
        let q = b[i];
        let mut j = i + 1;
        while j < b.len() && b[j] != q {
            j += if b[j] == b'\\' { 2 } else { 1 };
        }
        j + 1
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i = skip_string(i);
        } else if ident(c) && (i == 0 || !ident(b[i - 1])) {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            if !word.starts_with("weft_") {
                continue;
            }
            let mut labels = Vec::new();
            if b.get(i) == Some(&b'{') {
                i += 1;
                let mut name = String::new();
                while i < b.len() && b[i] != b'}' {
                    match b[i] {
                        b'"' | b'\'' | b'`' => i = skip_string(i),
                        c if ident(c) => {
                            name.push(c as char);
                            i += 1;
                        }
                        b'=' | b'!' | b'~' if !name.is_empty() => {
                            labels.push(std::mem::take(&mut name));
                            i += 1;
                        }
                        _ => i += 1,
                    }
                }
            }
            out.push((word.to_string(), labels));
        } else {
            i += 1;
        }
    }
    out
}

/// Every string under the key `expr` or `query` in the dashboard (panel targets, template
/// variables).
fn dashboard_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::Object(q)) => {
                        if let Some(serde_json::Value::String(s)) = q.get("query") {
                            out.push(s.clone());
                        }
                    }
                    _ => dashboard_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

#[test]
fn promql_names_and_labels_are_extracted() {
    let got = promql_metrics(
        r#"histogram_quantile(0.99, sum by (le, nickname) (rate(weft_peer_rtt_seconds_bucket{instance=~"$instance",nickname!="weft_x"}[5m]))) / weft_info"#,
    );
    assert_eq!(
        got,
        [
            (
                "weft_peer_rtt_seconds_bucket".to_string(),
                vec!["instance".to_string(), "nickname".to_string()]
            ),
            ("weft_info".to_string(), vec![])
        ]
    );
}

#[test]
fn the_dashboard_uses_only_documented_metrics() {
    let doc = documented();
    let path = repo().join("deploy/grafana/weft.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut queries = Vec::new();
    dashboard_queries(&dash, &mut queries);
    assert!(queries.len() >= 15, "only {} queries", queries.len());
    let mut used = BTreeSet::new();
    for q in &queries {
        for (name, labels) in promql_metrics(q) {
            let Some((family, f)) = family_of(&doc, &name) else {
                panic!("{name} (in {q:?}) is not documented in docs/metrics.md");
            };
            for l in &labels {
                assert!(
                    f.labels.contains(l) || l == "instance" || l == "job",
                    "{name}{{{l}=...}} (in {q:?}): {family} has no label {l}"
                );
            }
            used.insert(family.to_string());
        }
    }
    // The panels the issue asks for each have their metric.
    for family in [
        "weft_peers",
        "weft_peer_path",
        "weft_peer_tx_bytes_total",
        "weft_fastpath_tx_bytes_total",
        "weft_drops_total",
        "weft_peer_rtt_seconds",
        "weft_ipam_held_blocks",
        "weft_ipam_ready",
        "weft_guard_dropped_total",
        "weft_policy_dropped_total",
        "weft_policy_source_ok",
        "weft_secret_file_ok",
        "weft_secret_accepted",
    ] {
        assert!(used.contains(family), "no panel shows {family}");
    }
}

/// The families the scrape test cannot set up (a drop of a peer's traffic, the fast path's
/// VXLAN table, which an encrypted cluster does not have), rendered from a made-up report by
/// the router's own renderer and checked against the doc the same way.
#[test]
fn conditional_families_match_the_doc_too() {
    let doc = documented();
    let report: weft_api::status::Report = serde_json::from_value(serde_json::json!({
        "version": "0.1.0", "name": "00:01", "nickname": "h1", "uid": "1",
        "listen": "10.0.0.1:6783", "bridge": "weft", "tap": "vethwe", "underlay_mtu": 1500,
        "pod_mtu": 1410, "uptime_secs": 9,
        "peers": [{
            "name": "00:02", "nickname": "h2", "addr": "10.0.0.2:6784",
            "state": "connected, data path down", "path": "none", "mtu": 1410, "rtt_ms": null,
            "tx_frames": 0, "tx_bytes": 0, "tx_datagrams": 0, "rx_frames": 0, "rx_bytes": 0,
            "rx_datagrams": 0, "relayed_datagrams": 0,
            "drops": {"crypto_auth_failed": 3, "no_route": 1},
            "encryption": "none", "rekeys": 0,
        }],
        "targets": [], "connections": [], "refused_connections": 0, "refused": [],
        "encrypted": false, "counters": {}, "drops": {},
        "fdb": {"entries": 1, "capacity": 8192, "evictions": 0, "expirations": 0, "moves": 0},
        "kernel_fdb": {
            "bridge_full_rounds": 0, "rounds_late": 0, "bridge_learned": 3,
            "bridge_max_learned": 8192, "vxlan_entries": 2, "vxlan_max": 8192,
        },
        "fastpath": {"state": "on", "device": "vxlan-weft", "vni": 7, "port": 8472, "peers": 1,
                     "rx_packets": 1, "tx_packets": 1, "rx_bytes": 1, "tx_bytes": 1},
    }))
    .unwrap();
    let page = weft::metrics::render(&report);
    let seen = check_page("made-up", &page, &doc);
    for (name, f) in &doc {
        if f.when.iter().any(|w| NOT_SET_UP.contains(&w.as_str())) {
            assert!(seen.contains(name), "{name} not rendered from\n{page}");
        }
    }
}

// The scrape of real routers.

const METRICS_PORT: u16 = 9102;

/// `GET /metrics` from inside `host`'s namespace: the body, after checking the status line and
/// the content type.
fn scrape(host: &weft_lab::Host) -> String {
    let addr = format!("{}:{METRICS_PORT}", host.underlay_ip);
    let page = http_get(&host.ns, &addr, "/metrics").unwrap();
    let (head, body) = page.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_string()
}

/// Checks one router's page against the doc; returns the families it holds.
fn check_page(host: &str, body: &str, doc: &BTreeMap<String, Family>) -> BTreeSet<String> {
    use prom_text_format_parser::{Scrape, Type, ValueType};
    let scrape = match Scrape::parse(body) {
        Ok(s) => s,
        Err(e) => panic!("{host}: the page does not parse: {e:?}\n{body}"),
    };
    let mut seen = BTreeSet::new();
    for m in &scrape.metrics {
        assert!(
            seen.insert(m.name.clone()),
            "{host}: {} twice (its samples are not together)",
            m.name
        );
        let Some(f) = doc.get(&m.name) else {
            panic!("{host}: {} is not in docs/metrics.md", m.name);
        };
        let kind = match m.kind {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
            Type::Histogram => "histogram",
            other => panic!("{host}: {} is {other:?}", m.name),
        };
        assert_eq!(kind, f.kind, "{host}: the type of {}", m.name);
        assert!(m.help_desc.is_some(), "{host}: {} has no HELP", m.name);
        assert!(!m.samples.is_empty(), "{host}: {} has no sample", m.name);
        for s in &m.samples {
            let labels: BTreeSet<String> = s.labels.iter().map(|l| l.key.clone()).collect();
            let mut want = f.labels.clone();
            if s.value.value_type != ValueType::Sample {
                want.remove("le"); // a histogram's _sum and _count
            }
            assert_eq!(labels, want, "{host}: the labels of {}", m.name);
        }
    }
    seen
}

/// The histogram of each peer on a page: (peer nickname, cumulative buckets by bound, count).
type Histograms = BTreeMap<String, (Vec<(f64, f64)>, f64)>;

fn rtt_histograms(body: &str) -> Histograms {
    use prom_text_format_parser::{Scrape, ValueType};
    let scrape = Scrape::parse(body).unwrap();
    let m = scrape
        .metrics
        .iter()
        .find(|m| m.name == "weft_peer_rtt_seconds")
        .expect("weft_peer_rtt_seconds");
    let mut out = Histograms::new();
    for s in &m.samples {
        let label = |k: &str| {
            s.labels
                .iter()
                .find(|l| l.key == k)
                .map(|l| l.value.clone())
        };
        let e = out.entry(label("nickname").unwrap()).or_default();
        match s.value.value_type {
            ValueType::Sample => {
                let le = label("le").unwrap();
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                e.0.push((le, s.value.value.as_f64()));
            }
            ValueType::Count => e.1 = s.value.value.as_f64(),
            ValueType::Sum => assert!(s.value.value.as_f64() > 0.0),
        }
    }
    out
}

/// A directory of this test's own, removed when dropped (also when the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let d = std::env::temp_dir().join(format!("weft-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_real_scrape_matches_the_documented_families() {
    let doc = documented();
    let tmp = TempDir::new();
    let secret = tmp.0.join("secret");
    std::fs::write(&secret, "the weft metrics test secret, long enough\n").unwrap();
    let policies = tmp.0.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let (secret, policies) = (secret.display().to_string(), policies.display().to_string());
    let listen = format!("0.0.0.0:{METRICS_PORT}"); // inside each host's namespace
    let (mut c, hosts, cni, nets) = weft_tests::guarded::cni_cluster(
        "wmet",
        2,
        &[
            "--metrics",
            &listen,
            "--secret-file",
            &secret,
            "--policy-dir",
            &policies,
        ],
    );
    // A pod on h1, for the per-pod families (port guard, policy).
    let _pod = weft_tests::guarded::add_pod(&mut c, &cni, &hosts[0], &nets[0], "p1");
    // Wait for a few heartbeat answers each way, and for the policy source to be read.
    for h in &hosts {
        let ok = poll_until(Duration::from_secs(20), Duration::from_millis(200), || {
            let r = c.status(h).ok()?;
            let answered = r
                .peers
                .iter()
                .all(|p| p.rtt_histogram.as_ref().is_some_and(|hist| hist.count >= 3));
            let policy = r.policy.as_ref()?.sources.iter().all(|s| s.ok);
            (answered && policy && !r.peers.is_empty()).then_some(())
        });
        assert!(ok.is_some(), "{}:\n{}", h.name, c.router_log(h));
    }

    let mut present = BTreeSet::new();
    for h in &hosts {
        let body = scrape(h);
        println!(
            "{}: {} bytes, {} lines",
            h.name,
            body.len(),
            body.lines().count()
        );
        present.extend(check_page(&h.name, &body, &doc));

        // One round-trip histogram per neighbour, well formed, with the answers so far.
        let hists = rtt_histograms(&body);
        let other = hosts.iter().find(|o| o.name != h.name).unwrap();
        assert_eq!(
            hists.keys().collect::<Vec<_>>(),
            [&other.name],
            "{}: {hists:?}",
            h.name
        );
        for (peer, (buckets, count)) in &hists {
            assert_eq!(buckets.len(), 15, "{peer}: 14 bounds and +Inf");
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{peer}: bounds rise, counts never fall: {buckets:?}"
            );
            assert_eq!(buckets[0].0, 0.00005);
            assert_eq!(buckets[13].0, 1.0);
            let inf = buckets.last().unwrap();
            assert!(
                inf.0.is_infinite() && inf.1 == *count,
                "{peer}: {buckets:?}"
            );
            assert!(*count >= 3.0, "{peer}: {count} round trips");
            // Namespaces on one machine answer within a second.
            assert_eq!(buckets[13].1, *count, "{peer}: {buckets:?}");
        }
    }

    // Every family the doc says this set-up shows is there.
    let missing: Vec<&String> = doc
        .iter()
        .filter(|(_, f)| f.when.iter().all(|w| SET_UP.contains(&w.as_str())))
        .map(|(n, _)| n)
        .filter(|n| !present.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but in neither scrape: {missing:?}"
    );
    let conditional: Vec<&String> = doc
        .iter()
        .filter(|(n, f)| {
            !present.contains(*n) && f.when.iter().any(|w| NOT_SET_UP.contains(&w.as_str()))
        })
        .map(|(n, _)| n)
        .collect();
    println!(
        "{} families documented, {} scraped; not set up here: {conditional:?}",
        doc.len(),
        present.len()
    );
}
