//! Truth tables, as the upstream Kubernetes NetworkPolicy e2e suite keeps them: a
//! [`Reachability`] says, for every (from, to) pair, whether a connection is allowed, printed with
//! the sources as rows, the destinations as columns, `.` for allowed and `X` for denied.
//!
//! A [`Expectation`] is a whole round: one pod-to-pod table per probe [`Kind`] (protocol and
//! port), a table from the hosts to the pods (TCP 80) and one from the pods to the addresses
//! outside the pod network (TCP 80). Expected tables are written by hand in the tests (start from
//! everything allowed, mark what a case denies); observed ones come from the prober.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

/// A transport protocol the servers answer on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP: the server writes its token and closes.
    Tcp,
    /// UDP: the server answers each datagram with its token.
    Udp,
    /// SCTP (one-to-one sockets), only where the kernel has it.
    Sctp,
}

impl Protocol {
    /// `TCP`, `UDP`, `SCTP`, as Kubernetes spells it.
    pub fn k8s(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// What one probe tries: a protocol and a destination port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kind {
    /// The protocol.
    pub protocol: Protocol,
    /// The destination port.
    pub port: u16,
}

impl Kind {
    /// TCP to `port`.
    pub const fn tcp(port: u16) -> Kind {
        Kind {
            protocol: Protocol::Tcp,
            port,
        }
    }

    /// UDP to `port`.
    pub const fn udp(port: u16) -> Kind {
        Kind {
            protocol: Protocol::Udp,
            port,
        }
    }

    /// SCTP to `port`.
    pub const fn sctp(port: u16) -> Kind {
        Kind {
            protocol: Protocol::Sctp,
            port,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.protocol.k8s(), self.port)
    }
}

/// The namespace part of a pod's name `ns/pod` (the whole name for a host or an outside address).
pub fn namespace_of(name: &str) -> &str {
    name.split_once('/').map_or(name, |(ns, _)| ns)
}

/// Who may reach whom: a table of booleans indexed by source and destination names.
///
/// A name is the same in both lists when it is the same endpoint; such a cell (a pod to itself)
/// stays allowed whatever the helpers do: a pod's traffic to its own address never leaves its
/// namespace, so no policy can see it (upstream expects the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reachability {
    from: Vec<String>,
    to: Vec<String>,
    cells: Vec<bool>,
}

impl Reachability {
    /// A table of `from` x `to` with every cell `allowed`.
    pub fn new(from: &[String], to: &[String], allowed: bool) -> Reachability {
        let mut r = Reachability {
            from: from.to_vec(),
            to: to.to_vec(),
            cells: vec![allowed; from.len() * to.len()],
        };
        r.keep_self();
        r
    }

    /// The sources (rows).
    pub fn from_names(&self) -> &[String] {
        &self.from
    }

    /// The destinations (columns).
    pub fn to_names(&self) -> &[String] {
        &self.to
    }

    fn index(&self, from: &str, to: &str) -> usize {
        let f = self.from.iter().position(|n| n == from);
        let t = self.to.iter().position(|n| n == to);
        match (f, t) {
            (Some(f), Some(t)) => f * self.to.len() + t,
            _ => panic!(
                "no cell {from} -> {to} in a table of {:?} -> {:?}",
                self.from, self.to
            ),
        }
    }

    fn keep_self(&mut self) {
        for i in 0..self.from.len() {
            if let Some(j) = self.to.iter().position(|t| *t == self.from[i]) {
                self.cells[i * self.to.len() + j] = true;
            }
        }
    }

    /// Whether `from` may reach `to`.
    pub fn get(&self, from: &str, to: &str) -> bool {
        self.cells[self.index(from, to)]
    }

    /// Sets one cell (a pod to itself stays allowed).
    pub fn set(&mut self, from: &str, to: &str, allowed: bool) {
        let i = self.index(from, to);
        self.cells[i] = allowed || from == to;
    }

    /// `from` may reach `to`.
    pub fn allow(&mut self, from: &str, to: &str) {
        self.set(from, to, true);
    }

    /// `from` may not reach `to`.
    pub fn deny(&mut self, from: &str, to: &str) {
        self.set(from, to, false);
    }

    fn set_where(&mut self, allowed: bool, pred: impl Fn(&str, &str) -> bool) {
        for f in self.from.clone() {
            for t in self.to.clone() {
                if pred(&f, &t) {
                    self.set(&f, &t, allowed);
                }
            }
        }
    }

    /// Nobody reaches `to`.
    pub fn deny_all_to(&mut self, to: &str) {
        self.set_where(false, |_, t| t == to);
    }

    /// Everybody reaches `to`.
    pub fn allow_all_to(&mut self, to: &str) {
        self.set_where(true, |_, t| t == to);
    }

    /// `from` reaches nobody.
    pub fn deny_all_from(&mut self, from: &str) {
        self.set_where(false, |f, _| f == from);
    }

    /// Nobody reaches a pod of namespace `ns`.
    pub fn deny_all_to_ns(&mut self, ns: &str) {
        self.set_where(false, |_, t| namespace_of(t) == ns);
    }

    /// No pod of namespace `ns` reaches anybody.
    pub fn deny_all_from_ns(&mut self, ns: &str) {
        self.set_where(false, |f, _| namespace_of(f) == ns);
    }

    /// Every pod of namespace `from_ns` reaches `to`.
    pub fn allow_from_ns_to(&mut self, from_ns: &str, to: &str) {
        self.set_where(true, |f, t| namespace_of(f) == from_ns && t == to);
    }

    /// `from` reaches every pod of namespace `to_ns`.
    pub fn allow_from_to_ns(&mut self, from: &str, to_ns: &str) {
        self.set_where(true, |f, t| f == from && namespace_of(t) == to_ns);
    }

    /// The table, upstream's way: a header of destinations, one row per source.
    pub fn render(&self, title: &str) -> String {
        let width = self.from.iter().map(String::len).max().unwrap_or(1).max(4);
        let mut s = format!("{title}\n{:width$}", "-");
        for t in &self.to {
            let _ = write!(s, " {t:>5}");
        }
        s.push('\n');
        for (i, f) in self.from.iter().enumerate() {
            let _ = write!(s, "{f:width$}");
            for j in 0..self.to.len() {
                let c = if self.cells[i * self.to.len() + j] {
                    '.'
                } else {
                    'X'
                };
                let _ = write!(s, " {c:>5}");
            }
            s.push('\n');
        }
        s
    }

    /// The cells where `observed` differs, as `from -> to: expected X, got .` lines prefixed with
    /// `what`. Tables over different names differ in every way: that is one line.
    pub fn diff(&self, observed: &Reachability, what: &str) -> Vec<String> {
        if self.from != observed.from || self.to != observed.to {
            return vec![format!(
                "{what}: the tables are over different endpoints: {:?} -> {:?} vs {:?} -> {:?}",
                self.from, self.to, observed.from, observed.to
            )];
        }
        let mark = |b: bool| if b { "." } else { "X" };
        let mut out = Vec::new();
        for (i, f) in self.from.iter().enumerate() {
            for (j, t) in self.to.iter().enumerate() {
                let (e, o) = (
                    self.cells[i * self.to.len() + j],
                    observed.cells[i * self.to.len() + j],
                );
                if e != o {
                    out.push(format!(
                        "{what} {f} -> {t}: expected {}, got {}",
                        mark(e),
                        mark(o)
                    ));
                }
            }
        }
        out
    }
}

/// One round's worth of tables: pod to pod per [`Kind`], hosts to pods, pods to outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// Pod to pod, one table per kind probed.
    pub pods: BTreeMap<Kind, Reachability>,
    /// Host namespaces to pods, TCP 80.
    pub hosts: Reachability,
    /// Pods to the addresses outside the pod network, TCP 80.
    pub outside: Reachability,
}

impl Expectation {
    /// Applies `f` to every pod-to-pod table.
    pub fn each(&mut self, f: impl Fn(&mut Reachability)) -> &mut Self {
        self.pods.values_mut().for_each(f);
        self
    }

    /// Applies `f` to the pod-to-pod tables whose kind `which` selects.
    pub fn only(
        &mut self,
        which: impl Fn(Kind) -> bool,
        f: impl Fn(&mut Reachability),
    ) -> &mut Self {
        for (k, r) in &mut self.pods {
            if which(*k) {
                f(r);
            }
        }
        self
    }

    /// Applies `f` to the pod-to-pod tables of every kind but those `which` selects.
    pub fn except(
        &mut self,
        which: impl Fn(Kind) -> bool,
        f: impl Fn(&mut Reachability),
    ) -> &mut Self {
        self.only(|k| !which(k), f)
    }

    /// Every differing cell of every table.
    pub fn diff(&self, observed: &Expectation) -> Vec<String> {
        let mut out = Vec::new();
        for (k, e) in &self.pods {
            match observed.pods.get(k) {
                Some(o) => out.extend(e.diff(o, &k.to_string())),
                None => out.push(format!("{k}: not probed")),
            }
        }
        out.extend(self.hosts.diff(&observed.hosts, "host TCP/80"));
        out.extend(self.outside.diff(&observed.outside, "outside TCP/80"));
        out
    }

    /// The tables that deny something, rendered (for a log that stays readable).
    pub fn render_denials(&self) -> String {
        let mut s = String::new();
        let denies = |r: &Reachability| r.cells.iter().any(|c| !c);
        for (k, r) in self.pods.iter().filter(|(_, r)| denies(r)) {
            s.push_str(&r.render(&format!("{k}:")));
        }
        if denies(&self.hosts) {
            s.push_str(&self.hosts.render("hosts -> pods, TCP/80:"));
        }
        if denies(&self.outside) {
            s.push_str(&self.outside.render("pods -> outside, TCP/80:"));
        }
        s
    }

    /// Every table, rendered.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (k, r) in &self.pods {
            s.push_str(&r.render(&format!("{k}:")));
        }
        s.push_str(&self.hosts.render("hosts -> pods, TCP/80:"));
        s.push_str(&self.outside.render("pods -> outside, TCP/80:"));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn self_stays_allowed_and_diffs_name_cells() {
        let pods = names(&["x/a", "x/b", "y/a"]);
        let mut e = Reachability::new(&pods, &pods, true);
        e.deny_all_to_ns("x");
        assert!(e.get("x/a", "x/a"));
        assert!(!e.get("x/b", "x/a"));
        assert!(e.get("x/a", "y/a"));
        e.allow_from_ns_to("y", "x/b");
        assert!(e.get("y/a", "x/b"));
        let all = Reachability::new(&pods, &pods, true);
        let d = e.diff(&all, "TCP/80");
        assert_eq!(
            d,
            vec![
                "TCP/80 x/a -> x/b: expected X, got .",
                "TCP/80 x/b -> x/a: expected X, got .",
                "TCP/80 y/a -> x/a: expected X, got ."
            ]
        );
        let shown = e.render("TCP/80:");
        assert!(shown.contains("x/b      X     .     ."), "{shown}");
    }
}
