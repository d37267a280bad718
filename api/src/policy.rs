//! The `policy` section of the status report: NetworkPolicy enforcement on this host (its
//! sources, the ruleset in force, and per local pod the policies that select it with its
//! connection counters). `weft status policy` prints it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One source of policies, pods and namespaces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceReport {
    /// `dir:<path>` or `kubernetes`.
    pub name: String,
    /// Whether the last read or sync worked.
    pub ok: bool,
    /// Seconds since the last successful read or sync (`None`: never).
    pub last_sync_secs_ago: Option<u64>,
    /// What is wrong, by file or kind (empty when all is well). The last good state stays in
    /// force while there are errors.
    pub errors: Vec<String>,
    /// Objects in force from this source, by kind.
    pub objects: BTreeMap<String, u64>,
}

/// One local pod under policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPolicy {
    /// `namespace/name`, or empty for a pod attached without an identity.
    pub pod: String,
    /// Its address.
    pub address: String,
    /// Policies (`namespace/name`) selecting it for ingress; empty: not isolated for ingress.
    pub ingress: Vec<String>,
    /// Policies selecting it for egress; empty: not isolated for egress.
    pub egress: Vec<String>,
    /// New connections to it that were allowed, while isolated.
    pub allowed_in: u64,
    /// New connections from it that were allowed, while isolated.
    pub allowed_out: u64,
    /// Packets to it that no policy allowed (dropped).
    pub dropped_in: u64,
    /// Packets from it that no policy allowed (dropped).
    pub dropped_out: u64,
}

/// The `policy` section of the status report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyReport {
    /// `on`, or what went wrong applying the ruleset (the previous one stays in force).
    pub state: String,
    /// The sources.
    pub sources: Vec<SourceReport>,
    /// Policies, namespaces and pods known (whole cluster).
    pub policies: u64,
    /// Namespaces known.
    pub namespaces: u64,
    /// Pods known (whole cluster), and how many of them have an address.
    pub pods: u64,
    /// Pods with an address (from the mesh or the source).
    pub pods_with_address: u64,
    /// Pods with an identity each host lists in its gossip record, by host (nickname), this
    /// one included: how this host learns other hosts' pods.
    #[serde(default)]
    pub mesh_pods: BTreeMap<String, u64>,
    /// Rulesets applied since start (each one `nft -f` transaction).
    pub applied: u64,
    /// Failed applications.
    pub apply_errors: u64,
    /// Lines of the last transaction (a pod coming or going changes set elements only).
    pub last_transaction_lines: u64,
    /// Milliseconds the last compile took.
    pub last_compile_ms: f64,
    /// Lines of the ruleset in force.
    pub ruleset_lines: u64,
    /// The local pods.
    pub local_pods: Vec<PodPolicy>,
    /// Packets denied, by direction (`ingress`, `egress`), on this host.
    pub dropped: BTreeMap<String, u64>,
    /// The latest denials read from the kernel's log (newest last, at most 20): who, to whom,
    /// protocol and port, which direction denied.
    pub recent_denials: Vec<String>,
}

impl PolicyReport {
    /// The one-line summary in `weft status`.
    pub fn summary(&self) -> String {
        let bad = self.sources.iter().filter(|s| !s.ok).count();
        format!(
            "  policy: {}, {} policies, {} pod(s) known, {} local, {} packet(s) denied{}",
            self.state,
            self.policies,
            self.pods,
            self.local_pods.len(),
            self.dropped.values().sum::<u64>(),
            if bad > 0 {
                format!(", {bad} source(s) with errors (weft status policy)")
            } else {
                String::new()
            }
        )
    }

    /// `weft status policy`.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "policy: {} ({} policies, {} namespaces, {} pods; {} ruleset lines, applied {} time(s), {} failure(s), last compile {:.1} ms)",
            self.state,
            self.policies,
            self.namespaces,
            self.pods,
            self.ruleset_lines,
            self.applied,
            self.apply_errors,
            self.last_compile_ms
        );
        let _ = writeln!(out, "sources:");
        for s in &self.sources {
            let age = s
                .last_sync_secs_ago
                .map_or("never".to_string(), |a| format!("{a} s ago"));
            let _ = writeln!(
                out,
                "  {:<40} {} (last read {age})",
                s.name,
                if s.ok { "ok" } else { "ERRORS" }
            );
            for e in &s.errors {
                let _ = writeln!(out, "    {e}");
            }
        }
        let _ = writeln!(
            out,
            "{:<32} {:<16} {:<28} {:<28} {:>9} {:>9} {:>9} {:>9}",
            "POD",
            "ADDRESS",
            "INGRESS POLICIES",
            "EGRESS POLICIES",
            "IN OK",
            "IN DENY",
            "OUT OK",
            "OUT DENY"
        );
        let list = |v: &[String]| {
            if v.is_empty() {
                "(not isolated)".to_string()
            } else {
                v.join(",")
            }
        };
        for p in &self.local_pods {
            let _ = writeln!(
                out,
                "{:<32} {:<16} {:<28} {:<28} {:>9} {:>9} {:>9} {:>9}",
                if p.pod.is_empty() {
                    "(no identity)"
                } else {
                    &p.pod
                },
                p.address,
                list(&p.ingress),
                list(&p.egress),
                p.allowed_in,
                p.dropped_in,
                p.allowed_out,
                p.dropped_out
            );
        }
        if !self.recent_denials.is_empty() {
            let _ = writeln!(out, "recent denials (newest last):");
            for d in &self.recent_denials {
                let _ = writeln!(out, "  {d}");
            }
        }
        out
    }
}
