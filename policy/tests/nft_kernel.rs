//! The generated nftables text against the real `nft` (1.0.6 on the CI machine) and kernel,
//! inside a network namespace of its own: a full ruleset, then transactions (pods coming,
//! going and changing labels, a policy changing), the kernel's listing read back with
//! `from_json` and compared with the ruleset meant, and a reconcile after a "restart".
//!
//! Needs root, `ip` and `nft` (skipped with a note otherwise): `cargo test -p weft-policy --test
//! nft_kernel`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use weft_policy::{compile, manifest, nft, Cluster, PodKey};

/// A network namespace deleted on drop, even when the test fails.
#[derive(Debug)]
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        Netns::named("k")
    }

    fn named(tag: &str) -> Netns {
        let name = format!("wpol{}{tag}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {name}");
        Netns(name)
    }

    /// Runs `nft -f -` with `script` in the namespace.
    fn nft_f(&self, script: &str) -> Result<(), String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn list_json(&self) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.0,
                "nft",
                "-j",
                "list",
                "table",
                "inet",
                nft::TABLE,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

const OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {team: a}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: "db", namespace: prod}
spec:
  podSelector: {matchLabels: {role: db}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - ipBlock: {cidr: 172.17.0.0/16, except: [172.17.1.0/24, 172.17.3.0/25]}
    - ipBlock: {cidr: "fd00:1::/48", except: ["fd00:1::/64"]}
    - namespaceSelector: {matchLabels: {team: a}}
      podSelector: {matchLabels: {role: frontend}}
    ports: [{protocol: TCP, port: 6379}, {protocol: UDP, port: 5000, endPort: 5010}, {protocol: SCTP}, {port: redis}]
  - {}
  egress:
  - to: [{podSelector: {}}]
    ports: [{port: http}, {port: dns, protocol: UDP}]
  - to: [{ipBlock: {cidr: 0.0.0.0/0}}, {ipBlock: {cidr: "::/0"}}]
    ports: [{port: 443}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: prod}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
"#;

fn pod(name: &str, labels: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: prod, labels: {{{labels}}}}}\nspec:\n  containers:\n  - name: c\n    ports: [{{name: redis, containerPort: 6379}}, {{name: http, containerPort: 8080}}, {{name: dns, containerPort: 53, protocol: UDP}}]\n"
    )
}

type PodSpec<'a> = (&'a str, &'a str, &'a [&'a str]);

fn build(pods: &[PodSpec<'_>], local: &[&str]) -> nft::Ruleset {
    let mut text = OBJECTS.to_string();
    let mut addresses: BTreeMap<PodKey, Vec<IpAddr>> = BTreeMap::new();
    for (name, labels, addrs) in pods {
        text.push_str(&pod(name, labels));
        let k = PodKey {
            namespace: "prod".into(),
            name: name.to_string(),
        };
        addresses.insert(k, addrs.iter().map(|a| a.parse().unwrap()).collect());
    }
    let mut cluster = Cluster::new();
    cluster
        .replace_all(&manifest::parse("k.yaml", &text).unwrap())
        .unwrap();
    let local: BTreeSet<PodKey> = local
        .iter()
        .map(|n| PodKey {
            namespace: "prod".into(),
            name: n.to_string(),
        })
        .collect();
    nft::ruleset(&compile(&cluster, &addresses, &local))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

#[test]
fn nft_accepts_the_ruleset_and_the_transactions() {
    if !is_root() {
        eprintln!("skipped: not root");
        return;
    }
    let ns = Netns::new();
    let first = build(
        &[
            ("db", "role: db", &["10.0.0.1", "fd00::1"]),
            ("web", "role: frontend", &["10.0.0.2"]),
        ],
        &["db", "web"],
    );
    let script = nft::transaction(None, &first);
    ns.nft_f(&script)
        .unwrap_or_else(|e| panic!("{e}\n{script}"));
    let read = nft::from_json(&ns.list_json()).expect("the table");
    assert_eq!(
        read, first,
        "the kernel's listing reads back as the ruleset written"
    );
    assert_eq!(nft::transaction(Some(&read), &first), "");

    // A pod comes (local), one changes labels, one goes: elements and counters only.
    let second = build(
        &[
            ("db", "role: db", &["10.0.0.1", "fd00::1"]),
            ("web", "role: other", &["10.0.0.2"]),
            ("db2", "role: db", &["10.0.0.3"]),
        ],
        &["db", "db2"],
    );
    let script = nft::transaction(Some(&first), &second);
    assert!(
        !script.contains("flush chain") && !script.contains("add rule"),
        "{script}"
    );
    ns.nft_f(&script)
        .unwrap_or_else(|e| panic!("{e}\n{script}"));
    let read = nft::from_json(&ns.list_json()).unwrap();
    assert_eq!(read, second);

    // Everything selected goes: policy chains and their sets go.
    let third = build(&[("web", "role: frontend", &["10.0.0.2"])], &[]);
    let script = nft::transaction(Some(&read), &third);
    ns.nft_f(&script)
        .unwrap_or_else(|e| panic!("{e}\n{script}"));
    assert_eq!(nft::from_json(&ns.list_json()).unwrap(), third);

    // And back, from the kernel's view (a router restart).
    let read = nft::from_json(&ns.list_json()).unwrap();
    let script = nft::transaction(Some(&read), &first);
    ns.nft_f(&script)
        .unwrap_or_else(|e| panic!("{e}\n{script}"));
    assert_eq!(nft::from_json(&ns.list_json()).unwrap(), first);

    // Counters read back for status.
    let counters = nft::counters_from_json(&ns.list_json());
    assert_eq!(counters.len(), 3 * 4, "{counters:?}");

    // A full reload over an existing table, and the removal (twice: idempotent).
    ns.nft_f(&nft::transaction(None, &second)).unwrap();
    assert_eq!(nft::from_json(&ns.list_json()).unwrap(), second);
    ns.nft_f(&nft::remove()).unwrap();
    ns.nft_f(&nft::remove()).unwrap();
}

/// The synthetic 10,000-pod cluster (100 namespaces, 1,000 policies, 213 local pods): how long
/// the kernel takes to load the first ruleset and the transaction for one pod moving to another address. Prints the
/// figures (docs/policy.md); asserts only that the kernel takes both and lists what was meant.
#[test]
fn ten_thousand_pods_in_the_kernel() {
    if !is_root() {
        eprintln!("skipped: not root");
        return;
    }
    use std::time::Instant;
    use weft_policy::synthetic::Synthetic;
    let s = Synthetic::new(100, 100, 10, 47);
    let mut cluster = Cluster::new();
    cluster.replace_all(&s.objects).unwrap();
    let rs = nft::ruleset(&compile(&cluster, &s.addresses, &s.local));
    // One pod moves to another host (the change a pod coming or going makes).
    let more = s.addresses_after_one_pod_moved();
    let rs2 = nft::ruleset(&compile(&cluster, &more, &s.local));
    let ns = Netns::named("big");
    let first = nft::transaction(None, &rs);
    let t = Instant::now();
    ns.nft_f(&first).unwrap();
    let load = t.elapsed();
    let step = nft::transaction(Some(&rs), &rs2);
    let t = Instant::now();
    ns.nft_f(&step).unwrap();
    let one = t.elapsed();
    println!(
        "10k pods, 1k policies: first ruleset {} lines loaded in {load:?}; one pod moved, {} lines, in {one:?}",
        first.lines().count(),
        step.lines().count()
    );
    let back = nft::from_json(&ns.list_json()).expect("the table");
    assert_eq!(back.sets.len(), rs2.sets.len());
}
