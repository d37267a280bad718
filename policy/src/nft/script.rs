//! [`transaction`]: the one `nft -f` script from one [`Ruleset`] to another, in an order nft
//! accepts within one kernel transaction: new counters, sets and chains first; then the chains
//! to rewrite or delete are flushed (which drops their references); then elements, chains and
//! sets that are gone are deleted; recreated definitions and new elements are added; rules are
//! written; counters that are gone go last (after the map elements naming them).

use super::{Ruleset, Set, TABLE};
use std::collections::BTreeSet;
use std::fmt::Write;

/// At most this many elements per `add element`/`delete element` line.
const CHUNK: usize = 512;

/// The `nft -f` script that takes the kernel from `from` (`None`: no table) to `to`, as one
/// transaction. Empty when there is nothing to do.
pub fn transaction(from: Option<&Ruleset>, to: &Ruleset) -> String {
    let empty = Ruleset::default();
    let mut s = String::new();
    let from = match from {
        Some(f) => f,
        None => {
            // The table may or may not exist: declare it, delete it, start over.
            let _ = writeln!(
                s,
                "table inet {TABLE}\ndelete table inet {TABLE}\nadd table inet {TABLE}"
            );
            &empty
        }
    };
    let t = format!("inet {TABLE}");

    let sets_new: Vec<&String> = to
        .sets
        .keys()
        .filter(|n| !from.sets.contains_key(*n))
        .collect();
    let sets_gone: Vec<&String> = from
        .sets
        .keys()
        .filter(|n| !to.sets.contains_key(*n))
        .collect();
    let sets_redefined: BTreeSet<&String> = to
        .sets
        .iter()
        .filter(|(n, set)| {
            from.sets
                .get(*n)
                .is_some_and(|f| f.definition() != set.definition())
        })
        .map(|(n, _)| n)
        .collect();
    let chains_new: Vec<&String> = to
        .chains
        .keys()
        .filter(|n| !from.chains.contains_key(*n))
        .collect();
    let chains_gone: Vec<&String> = from
        .chains
        .keys()
        .filter(|n| !to.chains.contains_key(*n))
        .collect();
    let chains_rebased: Vec<&String> = to
        .chains
        .iter()
        .filter(|(n, c)| from.chains.get(*n).is_some_and(|f| f.base != c.base))
        .map(|(n, _)| n)
        .collect();
    // Rewritten: changed content, or a reference to a set that is recreated.
    let chains_rewritten: Vec<&String> = to
        .chains
        .iter()
        .filter(|(n, c)| {
            from.chains.get(*n).is_some_and(|f| {
                f.base == c.base
                    && (f.fingerprint != c.fingerprint
                        || sets_redefined.iter().any(|set| mentions(&c.rules, set)))
            })
        })
        .map(|(n, _)| n)
        .collect();

    // 1. New definitions.
    for c in to.counters.difference(&from.counters) {
        let _ = writeln!(s, "add counter {t} {c}");
    }
    for n in &sets_new {
        define_set(&mut s, &t, n, &to.sets[*n]);
    }
    for n in &chains_new {
        define_chain(&mut s, &t, n, to);
    }
    // 2. Drop the references of the chains that change or go.
    for n in chains_rewritten
        .iter()
        .chain(&chains_gone)
        .chain(&chains_rebased)
    {
        let _ = writeln!(s, "flush chain {t} {n}");
    }
    // 3. Deletions.
    for (n, set) in &to.sets {
        let Some(f) = from.sets.get(n) else { continue };
        if sets_redefined.contains(n) {
            continue;
        }
        let gone: Vec<&str> = f
            .elements
            .difference(&set.elements)
            .map(|e| key_of(e))
            .collect();
        elements(&mut s, "delete", &t, n, &gone);
    }
    for n in chains_gone.iter().chain(&chains_rebased) {
        let _ = writeln!(s, "delete chain {t} {n}");
    }
    for n in sets_gone.iter().chain(sets_redefined.iter()) {
        let what = if from.sets[*n].data_type.is_some() {
            "map"
        } else {
            "set"
        };
        let _ = writeln!(s, "delete {what} {t} {n}");
    }
    // 4. Recreated definitions.
    for n in &sets_redefined {
        define_set(&mut s, &t, n, &to.sets[*n]);
    }
    for n in &chains_rebased {
        define_chain(&mut s, &t, n, to);
    }
    // 5. New elements.
    for (n, set) in &to.sets {
        let added: Vec<&str> = match from.sets.get(n) {
            Some(f) if !sets_redefined.contains(n) => set
                .elements
                .difference(&f.elements)
                .map(String::as_str)
                .collect(),
            _ => set.elements.iter().map(String::as_str).collect(),
        };
        elements(&mut s, "add", &t, n, &added);
    }
    // 6. Rules.
    for n in chains_new
        .iter()
        .chain(&chains_rewritten)
        .chain(&chains_rebased)
    {
        for r in &to.chains[*n].rules {
            let _ = writeln!(s, "add rule {t} {n} {r}");
        }
    }
    // 7. Counters no map names any more.
    for c in from.counters.difference(&to.counters) {
        let _ = writeln!(s, "delete counter {t} {c}");
    }
    s
}

/// Whether a rule of `rules` names set `set` (`@set` followed by a non-name character).
fn mentions(rules: &[String], set: &str) -> bool {
    let needle = format!("@{set}");
    rules.iter().any(|r| {
        r.match_indices(&needle).any(|(i, _)| {
            r[i + needle.len()..]
                .chars()
                .next()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'))
        })
    })
}

fn define_set(s: &mut String, t: &str, name: &str, set: &Set) {
    let what = if set.data_type.is_some() {
        "map"
    } else {
        "set"
    };
    let _ = writeln!(s, "add {what} {t} {name} {{ {} }}", set.definition());
}

fn define_chain(s: &mut String, t: &str, name: &str, to: &Ruleset) {
    match &to.chains[name].base {
        Some(b) => {
            let _ = writeln!(
                s,
                "add chain {t} {name} {{ type filter hook {} priority {}; policy accept; }}",
                b.hook, b.priority
            );
        }
        None => {
            let _ = writeln!(s, "add chain {t} {name}");
        }
    }
}

/// The key of an element (a map element is `key : "data"`).
fn key_of(e: &str) -> &str {
    e.split_once(" : ").map_or(e, |(k, _)| k)
}

fn elements(s: &mut String, verb: &str, t: &str, set: &str, els: &[&str]) {
    for chunk in els.chunks(CHUNK) {
        let _ = writeln!(s, "{verb} element {t} {set} {{ {} }}", chunk.join(", "));
    }
}
