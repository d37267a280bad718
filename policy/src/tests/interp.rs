//! An interpreter of the generated [`Ruleset`]: evaluates its chains and sets on a synthetic
//! packet of a new connection, the way the kernel would (base chains of a hook in priority
//! order, jump/goto/return, accept ends a base chain, drop is final, a counter map lookup that
//! misses breaks the rule). It understands exactly the rule forms `nft::ruleset` writes and
//! panics on anything else, so a rule the interpreter does not know cannot slip through.

use crate::nft::{Ruleset, Set};
use crate::reference::Protocol;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A packet of a new connection.
#[derive(Debug, Clone, Copy)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Debug, Clone)]
enum Match {
    /// `ct state new`.
    CtNew,
    /// `ct state established,related`: never, for a new connection.
    CtEstablished,
    /// `ip saddr @set` (v6 = `ip6`; dst = `daddr`).
    Addr { v6: bool, dst: bool, set: String },
    /// `ip daddr . meta l4proto . th dport @set`.
    Named { v6: bool, set: String },
    /// `meta l4proto . th dport @set`.
    Ports { set: String },
}

#[derive(Debug, Clone)]
enum Verdict {
    None,
    Accept,
    Drop,
    Continue,
    Jump(String),
    Goto(String),
}

#[derive(Debug, Clone)]
struct Rule {
    matches: Vec<Match>,
    /// `counter name ip saddr map @m`: (v6, dst, map).
    counter: Option<(bool, bool, String)>,
    verdict: Verdict,
}

/// A set's elements, parsed once.
#[derive(Debug, Default)]
struct Parsed {
    addrs: Vec<(bool, u128, u128)>,
    ports: Vec<(u8, u16, u16)>,
    named: Vec<((bool, u128), u8, u16)>,
    map: Vec<((bool, u128), String)>,
}

fn parse_set(s: &Set) -> Parsed {
    let mut p = Parsed::default();
    for e in &s.elements {
        if s.data_type.is_some() {
            let (k, c) = e.split_once(" : ").unwrap();
            p.map.push((addr_value(k), c.trim_matches('"').to_string()));
        } else if s.key_type == "inet_proto . inet_service" {
            p.ports.push(port_element(e));
        } else if s.key_type.ends_with(" . inet_proto . inet_service") {
            let mut parts = e.split(" . ");
            let a = addr_value(parts.next().unwrap());
            let proto = proto_value(parts.next().unwrap());
            let port: u16 = parts.next().unwrap().parse().unwrap();
            assert!(parts.next().is_none());
            p.named.push((a, proto, port));
        } else {
            let (v6, lo, hi) = addr_element(e);
            assert_eq!(
                v6,
                s.key_type == "ipv6_addr",
                "element {e} in a {} set",
                s.key_type
            );
            assert!(
                s.interval || lo == hi,
                "range {e} in a set without flags interval"
            );
            p.addrs.push((v6, lo, hi));
        }
    }
    if s.interval {
        // nft refuses overlapping intervals.
        let mut a = p.addrs.clone();
        a.sort();
        for w in a.windows(2) {
            assert!(w[0].2 < w[1].1, "overlap {w:?}");
        }
        let mut ports = p.ports.clone();
        ports.sort();
        for w in ports.windows(2) {
            assert!(w[0].0 != w[1].0 || w[0].2 < w[1].1, "overlap {w:?}");
        }
    }
    p
}

/// A parsed ruleset.
#[derive(Debug)]
pub struct Interp<'r> {
    rs: &'r Ruleset,
    chains: BTreeMap<String, Vec<Rule>>,
    sets: BTreeMap<String, Parsed>,
    /// Counters incremented so far.
    pub counts: BTreeMap<String, u64>,
}

fn family(tok: &str) -> bool {
    match tok {
        "ip" => false,
        "ip6" => true,
        t => panic!("family {t}"),
    }
}

fn side(tok: &str) -> bool {
    match tok {
        "saddr" => false,
        "daddr" => true,
        t => panic!("address {t}"),
    }
}

fn set_ref(tok: &str) -> String {
    tok.strip_prefix('@')
        .unwrap_or_else(|| panic!("set reference {tok}"))
        .to_string()
}

fn parse_rule(text: &str) -> Rule {
    let mut r = Rule {
        matches: Vec::new(),
        counter: None,
        verdict: Verdict::None,
    };
    if text.starts_with("continue comment \"") {
        r.verdict = Verdict::Continue;
        return r;
    }
    if text.starts_with("limit rate 10/second burst 20 packets log group 8 prefix \"weft-policy ") {
        return r;
    }
    let t: Vec<&str> = text.split_whitespace().collect();
    let mut i = 0;
    while i < t.len() {
        match t[i] {
            "ct" => {
                assert_eq!(t[i + 1], "state");
                r.matches.push(match t[i + 2] {
                    "new" => Match::CtNew,
                    "established,related" => Match::CtEstablished,
                    s => panic!("ct state {s}"),
                });
                i += 3;
            }
            "ip" | "ip6" => {
                let v6 = family(t[i]);
                let dst = side(t[i + 1]);
                if t[i + 2] == "." {
                    assert!(dst, "{text}");
                    assert_eq!(
                        &t[i + 3..i + 8],
                        ["meta", "l4proto", ".", "th", "dport"],
                        "{text}"
                    );
                    r.matches.push(Match::Named {
                        v6,
                        set: set_ref(t[i + 8]),
                    });
                    i += 9;
                } else {
                    r.matches.push(Match::Addr {
                        v6,
                        dst,
                        set: set_ref(t[i + 2]),
                    });
                    i += 3;
                }
            }
            "meta" => {
                assert_eq!(
                    &t[i..i + 5],
                    ["meta", "l4proto", ".", "th", "dport"],
                    "{text}"
                );
                r.matches.push(Match::Ports {
                    set: set_ref(t[i + 5]),
                });
                i += 6;
            }
            "counter" => {
                assert_eq!(t[i + 1], "name");
                assert_eq!(t[i + 4], "map");
                r.counter = Some((family(t[i + 2]), side(t[i + 3]), set_ref(t[i + 5])));
                i += 6;
            }
            "accept" | "drop" | "jump" | "goto" => {
                r.verdict = match t[i] {
                    "accept" => Verdict::Accept,
                    "drop" => Verdict::Drop,
                    "jump" => Verdict::Jump(t[i + 1].to_string()),
                    _ => Verdict::Goto(t[i + 1].to_string()),
                };
                i += if matches!(t[i], "jump" | "goto") {
                    2
                } else {
                    1
                };
                assert_eq!(i, t.len(), "verdict not last: {text}");
            }
            tok => panic!("unknown token {tok} in {text}"),
        }
    }
    r
}

fn addr_value(s: &str) -> (bool, u128) {
    match s
        .parse::<IpAddr>()
        .unwrap_or_else(|_| panic!("address {s}"))
    {
        IpAddr::V4(a) => (false, u32::from(a).into()),
        IpAddr::V6(a) => (true, a.into()),
    }
}

fn addr_of(a: IpAddr) -> (bool, u128) {
    match a {
        IpAddr::V4(a) => (false, u32::from(a).into()),
        IpAddr::V6(a) => (true, a.into()),
    }
}

/// An address element: address, prefix or range, as (v6, first, last).
fn addr_element(e: &str) -> (bool, u128, u128) {
    if let Some((a, len)) = e.split_once('/') {
        let (v6, a) = addr_value(a);
        let bits = if v6 { 128 } else { 32 };
        let len: u32 = len.parse().unwrap();
        let host = 1u128.checked_shl(bits - len).map_or(u128::MAX, |b| b - 1);
        assert_eq!(a & host, 0, "prefix with host bits {e}");
        (v6, a, a | host)
    } else if let Some((a, b)) = e.split_once('-') {
        let ((v6, a), (v6b, b)) = (addr_value(a), addr_value(b));
        assert!(v6 == v6b && a < b, "range {e}");
        (v6, a, b)
    } else {
        let (v6, a) = addr_value(e);
        (v6, a, a)
    }
}

fn proto_value(s: &str) -> u8 {
    match s {
        "tcp" => 6,
        "udp" => 17,
        "sctp" => 132,
        n => n.parse().unwrap_or_else(|_| panic!("protocol {n}")),
    }
}

fn port_element(e: &str) -> (u8, u16, u16) {
    let (p, ports) = e
        .split_once(" . ")
        .unwrap_or_else(|| panic!("port element {e}"));
    let (a, b) = match ports.split_once('-') {
        Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
        None => (ports.parse().unwrap(), ports.parse().unwrap()),
    };
    assert!(a <= b, "{e}");
    (proto_value(p), a, b)
}

impl<'r> Interp<'r> {
    /// Parses every chain of `rs`, checking that every set and chain a rule names exists with
    /// the right type.
    pub fn new(rs: &'r Ruleset) -> Interp<'r> {
        let mut chains = BTreeMap::new();
        for (name, c) in &rs.chains {
            let rules: Vec<Rule> = c.rules.iter().map(|r| parse_rule(r)).collect();
            for r in &rules {
                for m in &r.matches {
                    let (set, ty) = match m {
                        Match::Addr { v6, set, .. } => {
                            (set, if *v6 { "ipv6_addr" } else { "ipv4_addr" }.to_string())
                        }
                        Match::Named { v6, set } => (
                            set,
                            format!(
                                "{} . inet_proto . inet_service",
                                if *v6 { "ipv6_addr" } else { "ipv4_addr" }
                            ),
                        ),
                        Match::Ports { set } => (set, "inet_proto . inet_service".to_string()),
                        _ => continue,
                    };
                    let s = rs
                        .sets
                        .get(set)
                        .unwrap_or_else(|| panic!("chain {name}: no set {set}"));
                    assert_eq!(s.key_type, ty, "set {set}");
                    assert!(s.data_type.is_none());
                }
                if let Some((v6, _, m)) = &r.counter {
                    let s = rs.sets.get(m).unwrap_or_else(|| panic!("no map {m}"));
                    assert_eq!(s.data_type.as_deref(), Some("counter"));
                    assert_eq!(s.key_type, if *v6 { "ipv6_addr" } else { "ipv4_addr" });
                    for e in &s.elements {
                        let (_, c) = e.split_once(" : ").unwrap();
                        assert!(
                            rs.counters.contains(c.trim_matches('"')),
                            "map {m} names {c}"
                        );
                    }
                }
                if let Verdict::Jump(c) | Verdict::Goto(c) = &r.verdict {
                    assert!(rs.chains.contains_key(c), "no chain {c}");
                    assert!(rs.chains[c].base.is_none(), "jump to a base chain {c}");
                }
            }
            chains.insert(name.clone(), rules);
        }
        let sets = rs
            .sets
            .iter()
            .map(|(n, s)| (n.clone(), parse_set(s)))
            .collect();
        Interp {
            rs,
            chains,
            sets,
            counts: BTreeMap::new(),
        }
    }

    fn set(&self, name: &str) -> &Parsed {
        &self.sets[name]
    }

    fn in_addr_set(&self, name: &str, addr: IpAddr) -> bool {
        let (v6, a) = addr_of(addr);
        self.set(name)
            .addrs
            .iter()
            .any(|&(ev6, lo, hi)| ev6 == v6 && lo <= a && a <= hi)
    }

    fn matches(&self, m: &Match, p: &Packet) -> bool {
        let v6 = p.src.is_ipv6();
        match m {
            Match::CtNew => true,
            Match::CtEstablished => false,
            Match::Addr { v6: f, dst, set } => {
                *f == v6 && self.in_addr_set(set, if *dst { p.dst } else { p.src })
            }
            Match::Named { v6: f, set } => {
                *f == v6
                    && self.set(set).named.iter().any(|&(a, proto, port)| {
                        a == addr_of(p.dst) && proto == p.protocol.number() && port == p.port
                    })
            }
            Match::Ports { set } => {
                self.set(set).ports.iter().any(|&(proto, a, b)| {
                    proto == p.protocol.number() && a <= p.port && p.port <= b
                })
            }
        }
    }

    /// Runs one base chain: `true` if the packet goes on (accept or policy accept).
    fn run_base(&mut self, base: &str, p: &Packet) -> bool {
        let mut stack: Vec<(String, usize)> = vec![(base.to_string(), 0)];
        let mut steps = 0;
        while let Some((chain, i)) = stack.pop() {
            steps += 1;
            assert!(steps < 100_000, "loop");
            let rules = &self.chains[&chain];
            let Some(rule) = rules.get(i).cloned() else {
                continue; // end of chain: return (or the base policy, accept)
            };
            stack.push((chain.clone(), i + 1));
            if !rule.matches.iter().all(|m| self.matches(m, p)) {
                continue;
            }
            if let Some((v6, dst, map)) = &rule.counter {
                if *v6 != p.src.is_ipv6() {
                    continue;
                }
                let key = if *dst { p.dst } else { p.src };
                let hit = self
                    .set(map)
                    .map
                    .iter()
                    .find(|(k, _)| *k == addr_of(key))
                    .map(|(_, c)| c.clone());
                match hit {
                    Some(c) => *self.counts.entry(c).or_default() += 1,
                    None => continue, // a miss breaks the rule
                }
            }
            match rule.verdict {
                Verdict::None | Verdict::Continue => {}
                Verdict::Accept => return true,
                Verdict::Drop => return false,
                Verdict::Jump(c) => stack.push((c, 0)),
                Verdict::Goto(c) => {
                    stack.pop();
                    stack.push((c, 0));
                }
            }
        }
        true
    }

    /// Whether the packet passes the base chains of `hook` (in priority order).
    pub fn hook_allows(&mut self, hook: &str, p: &Packet) -> bool {
        let mut bases: Vec<(i32, String)> = self
            .rs
            .chains
            .iter()
            .filter_map(|(n, c)| {
                c.base
                    .as_ref()
                    .filter(|b| b.hook == hook)
                    .map(|b| (b.priority, n.clone()))
            })
            .collect();
        bases.sort();
        bases.into_iter().all(|(_, b)| self.run_base(&b, p))
    }
}
