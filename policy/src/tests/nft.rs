//! `nft::transaction` at the model level: a strict applier of the scripts (every command must
//! be valid where it stands, as nft checks them in order within one transaction: nothing added
//! twice, nothing deleted that is absent or still referenced, every reference defined), and
//! properties: applying `transaction(from, to)` to `from` gives `to`; pods changing elsewhere
//! only change elements.

use super::props::{scenario, Scenario, HOSTS};
use crate::nft::{self, transaction, BaseChain, Chain, Ruleset, Set};
use crate::{compile, PodKey};
use proptest::prelude::*;
use std::collections::BTreeSet;

fn strip<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    line.strip_prefix(prefix)
}

fn braces(s: &str) -> (&str, &str) {
    let (name, rest) = s
        .split_once(" { ")
        .unwrap_or_else(|| panic!("no braces: {s}"));
    (
        name,
        rest.strip_suffix(" }")
            .unwrap_or_else(|| panic!("unclosed: {s}")),
    )
}

fn references(rule: &str) -> (Vec<String>, Vec<String>) {
    let toks: Vec<&str> = rule.split_whitespace().collect();
    let sets = toks
        .iter()
        .filter_map(|t| t.strip_prefix('@'))
        .map(str::to_string)
        .collect();
    let chains = toks
        .windows(2)
        .filter(|w| w[0] == "jump" || w[0] == "goto")
        .map(|w| w[1].to_string())
        .collect();
    (sets, chains)
}

/// Applies `script` to `state` (`None`: no table), strictly.
pub fn apply(state: Option<&Ruleset>, script: &str) -> Ruleset {
    let mut exists = state.is_some();
    let mut r = state.cloned().unwrap_or_default();
    let t = "inet weft_policy ";
    let rule_refs = |r: &Ruleset| -> (BTreeSet<String>, BTreeSet<String>) {
        let (mut sets, mut chains) = (BTreeSet::new(), BTreeSet::new());
        for c in r.chains.values() {
            for rule in &c.rules {
                let (s, ch) = references(rule);
                sets.extend(s);
                chains.extend(ch);
            }
        }
        (sets, chains)
    };
    for line in script.lines() {
        if line == "table inet weft_policy" || line == "add table inet weft_policy" {
            exists = true;
            continue;
        }
        if line == "delete table inet weft_policy" {
            assert!(exists);
            exists = false;
            r = Ruleset::default();
            continue;
        }
        assert!(exists, "no table for {line}");
        let line_t = line.replacen(t, "", 1);
        if let Some(name) = strip(&line_t, "add counter ") {
            assert!(r.counters.insert(name.to_string()), "counter {name} twice");
        } else if let Some(rest) = strip(&line_t, "add set ").or(strip(&line_t, "add map ")) {
            let is_map = line_t.starts_with("add map");
            let (name, def) = braces(rest);
            assert!(!r.sets.contains_key(name), "set {name} twice");
            let interval = def.ends_with(" flags interval;");
            let ty = def
                .trim_end_matches(" flags interval;")
                .strip_prefix("type ")
                .unwrap();
            let ty = ty.strip_suffix(';').unwrap();
            let (key_type, data_type) = match ty.split_once(" : ") {
                Some((k, d)) => (k.to_string(), Some(d.to_string())),
                None => (ty.to_string(), None),
            };
            assert_eq!(is_map, data_type.is_some());
            r.sets.insert(
                name.into(),
                Set {
                    key_type,
                    data_type,
                    interval,
                    elements: BTreeSet::new(),
                },
            );
        } else if let Some(rest) = strip(&line_t, "add chain ") {
            let (name, base) = match rest.split_once(" { ") {
                None => (rest, None),
                Some((name, def)) => {
                    let w: Vec<&str> = def.split_whitespace().collect();
                    assert_eq!(&w[..3], ["type", "filter", "hook"]);
                    assert_eq!(&w[6..], ["policy", "accept;", "}"]);
                    let priority = w[5].trim_end_matches(';').parse().unwrap();
                    (
                        name,
                        Some(BaseChain {
                            hook: w[3].to_string(),
                            priority,
                        }),
                    )
                }
            };
            assert!(!r.chains.contains_key(name), "chain {name} twice");
            r.chains.insert(
                name.into(),
                Chain {
                    base,
                    fingerprint: String::new(),
                    rules: vec![],
                },
            );
        } else if let Some(name) = strip(&line_t, "flush chain ") {
            r.chains
                .get_mut(name)
                .unwrap_or_else(|| panic!("flush {name}"))
                .rules
                .clear();
        } else if let Some(name) = strip(&line_t, "delete chain ") {
            let c = r
                .chains
                .get(name)
                .unwrap_or_else(|| panic!("delete chain {name}"));
            assert!(c.rules.is_empty(), "delete non-empty chain {name}");
            assert!(
                !rule_refs(&r).1.contains(name),
                "delete referenced chain {name}"
            );
            r.chains.remove(name);
        } else if let Some(name) = strip(&line_t, "delete set ").or(strip(&line_t, "delete map ")) {
            let s = r
                .sets
                .get(name)
                .unwrap_or_else(|| panic!("delete set {name}"));
            assert_eq!(s.data_type.is_some(), line_t.starts_with("delete map"));
            assert!(
                !rule_refs(&r).0.contains(name),
                "delete referenced set {name}"
            );
            r.sets.remove(name);
        } else if let Some(name) = strip(&line_t, "delete counter ") {
            let named = r
                .sets
                .values()
                .flat_map(|s| &s.elements)
                .any(|e| e.ends_with(&format!(": \"{name}\"")));
            assert!(!named, "delete counter {name} a map names");
            assert!(r.counters.remove(name), "delete counter {name}");
        } else if let Some(rest) = strip(&line_t, "add element ") {
            let (name, els) = braces(rest);
            let counters = r.counters.clone();
            let s = r
                .sets
                .get_mut(name)
                .unwrap_or_else(|| panic!("no set {name}"));
            for e in els.split(", ") {
                if s.data_type.is_some() {
                    let (k, c) = e.split_once(" : ").unwrap();
                    assert!(counters.contains(c.trim_matches('"')), "{e}: no counter");
                    assert!(
                        !s.elements.iter().any(|x| x.starts_with(&format!("{k} : "))),
                        "{name}: key {k} twice"
                    );
                }
                assert!(s.elements.insert(e.to_string()), "{name}: {e} twice");
            }
        } else if let Some(rest) = strip(&line_t, "delete element ") {
            let (name, els) = braces(rest);
            let s = r
                .sets
                .get_mut(name)
                .unwrap_or_else(|| panic!("no set {name}"));
            for k in els.split(", ") {
                let found = s
                    .elements
                    .iter()
                    .find(|e| *e == k || e.starts_with(&format!("{k} : ")))
                    .cloned();
                assert!(s
                    .elements
                    .remove(&found.unwrap_or_else(|| panic!("{name}: no {k}"))));
            }
        } else if let Some(rest) = strip(&line_t, "add rule ") {
            let (chain, rule) = rest.split_once(' ').unwrap();
            let (sets, chains) = references(rule);
            for s in sets {
                assert!(r.sets.contains_key(&s), "rule names missing set {s}");
            }
            for c in chains {
                assert!(r.chains.contains_key(&c), "rule names missing chain {c}");
            }
            r.chains
                .get_mut(chain)
                .unwrap_or_else(|| panic!("no chain {chain}"))
                .rules
                .push(rule.to_string());
        } else {
            panic!("unknown command {line}");
        }
    }
    for c in r.chains.values_mut() {
        let first = c.rules.first().cloned().unwrap_or_default();
        c.fingerprint = first
            .strip_prefix("continue comment \"weft-policy fp=")
            .and_then(|s| s.split(' ').next())
            .unwrap_or_default()
            .to_string();
    }
    r
}

fn same(a: &Ruleset, b: &Ruleset) {
    assert_eq!(a, b);
    for (n, c) in &a.chains {
        assert_eq!(c.rules, b.chains[n].rules, "chain {n}");
    }
}

fn host_ruleset(s: &Scenario, host: usize) -> Ruleset {
    let local: BTreeSet<PodKey> = s
        .hosts
        .iter()
        .filter(|(_, h)| **h == host)
        .map(|(k, _)| k.clone())
        .collect();
    nft::ruleset(&compile(&s.cluster, &s.addresses, &local))
}

#[test]
fn a_ruleset_to_itself_is_empty() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..8 {
        let s = scenario().new_tree(&mut runner).unwrap().current();
        let r = host_ruleset(&s, 0);
        assert_eq!(transaction(Some(&r), &r), "");
        same(&apply(None, &transaction(None, &r)), &r);
        // From the kernel's view (fingerprints, no rule text): still nothing to do.
        let mut kernel = r.clone();
        for c in kernel.chains.values_mut() {
            c.rules.clear();
        }
        assert_eq!(transaction(Some(&kernel), &r), "");
    }
}

#[test]
fn a_changed_set_type_is_recreated_and_its_chains_rewritten() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let s = scenario().new_tree(&mut runner).unwrap().current();
    let to = host_ruleset(&s, 0);
    let mut from = to.clone();
    from.sets.get_mut("egress_isolated_v4").unwrap().interval = true;
    let script = transaction(Some(&from), &to);
    assert!(
        script.contains("flush chain inet weft_policy egress\n"),
        "{script}"
    );
    same(&apply(Some(&from), &script), &to);
}

use proptest::strategy::ValueTree;

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn transaction_takes_one_ruleset_to_the_other(a in scenario(), b in scenario(), h in 0..HOSTS) {
        let (ra, rb) = (host_ruleset(&a, h), host_ruleset(&b, h));
        same(&apply(Some(&ra), &transaction(Some(&ra), &rb)), &rb);
        same(&apply(None, &transaction(None, &rb)), &rb);
        // The same from the kernel's view of `ra` (no rule text, as from_json gives).
        let mut kernel = apply(Some(&ra), "");
        for c in kernel.chains.values_mut() {
            c.rules.clear();
        }
        let script = transaction(Some(&kernel), &rb);
        prop_assert_eq!(&apply(Some(&ra), &script), &rb);
    }

    #[test]
    fn pods_changing_elsewhere_change_only_elements(s in scenario(), seed in any::<u64>()) {
        let before = host_ruleset(&s, 0);
        // Remote pods: relabel one, remove one, add one; local pods stay as they are.
        let mut after = s.clone();
        let remote: Vec<PodKey> = s.hosts.iter().filter(|(k, h)| **h != 0 && s.cluster.pod(k).is_some()).map(|(k, _)| k.clone()).collect();
        if let Some(k) = remote.get(seed as usize % remote.len().max(1)) {
            let mut pod = after.cluster.pod(k).unwrap().clone();
            pod.labels = [("app".to_string(), if seed % 2 == 0 { "a" } else { "b" }.to_string())].into();
            after.cluster.set_pod_for_tests(k.clone(), pod);
        }
        if let Some(k) = remote.get((seed / 7) as usize % remote.len().max(1)) {
            after.cluster.delete(&crate::ObjectKey::Pod(k.clone()));
            after.addresses.remove(k);
        }
        let new = PodKey { namespace: "ns1".into(), name: "new".into() };
        after.cluster.set_pod_for_tests(new.clone(), crate::model::PodState {
            labels: [("role".to_string(), "a".to_string())].into(),
            ..Default::default()
        });
        after.addresses.insert(new.clone(), vec!["10.0.0.77".parse().unwrap()]);
        after.hosts.insert(new, 1);
        let after = host_ruleset(&after, 0);
        let script = transaction(Some(&before), &after);
        for line in script.lines() {
            prop_assert!(line.contains(" element "), "not an element change: {}\n{}", line, script);
        }
        same(&apply(Some(&before), &script), &after);
    }
}
