//! Reading the kernel's table back: [`from_json`] turns `nft -j list table inet weft_policy`
//! into a [`Ruleset`] (sets and maps with their elements as [`super::ruleset`] writes them,
//! chains with their base hook and the fingerprint of their rules, counters), and
//! [`counters_from_json`] reads the per-pod counters for status.

use super::{
    parse_counter_name, BaseChain, Chain, Ruleset, Set, Verdict, FINGERPRINT_PREFIX, TABLE,
};
use crate::model::Direction;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The entries of `nft -j` output that belong to our table, as (kind, object).
fn entries(json: &str) -> Option<Vec<(String, serde_json::Map<String, Value>)>> {
    let v: Value = serde_json::from_str(json).ok()?;
    let mut out = Vec::new();
    for item in v.get("nftables")?.as_array()? {
        let Some(obj) = item.as_object() else {
            continue;
        };
        for (kind, body) in obj {
            let Some(body) = body.as_object() else {
                continue;
            };
            let family = body.get("family").and_then(Value::as_str);
            let table = if kind == "table" {
                body.get("name")
            } else {
                body.get("table")
            };
            if family == Some("inet") && table.and_then(Value::as_str) == Some(TABLE) {
                out.push((kind.clone(), body.clone()));
            }
        }
    }
    Some(out)
}

/// The ruleset in force, from `nft -j list table inet weft_policy` (for reconciling at start).
/// `None` when the text is not such a listing or has no table `inet weft_policy`.
pub fn from_json(json: &str) -> Option<Ruleset> {
    let entries = entries(json)?;
    if !entries.iter().any(|(k, _)| k == "table") {
        return None;
    }
    let mut r = Ruleset::default();
    let mut fingerprints = BTreeMap::new();
    for (kind, body) in entries {
        let name = body
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match kind.as_str() {
            "counter" => {
                r.counters.insert(name);
            }
            "set" | "map" => {
                let key_type = match body.get("type") {
                    Some(Value::String(t)) => t.clone(),
                    Some(Value::Array(ts)) => ts
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" . "),
                    _ => String::new(),
                };
                let data_type = body.get("map").and_then(Value::as_str).map(str::to_string);
                let interval = match body.get("flags") {
                    Some(Value::Array(f)) => f.iter().any(|x| x == "interval"),
                    Some(Value::String(f)) => f == "interval",
                    _ => false,
                };
                let elements = body
                    .get("elem")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(element)
                    .collect();
                r.sets.insert(
                    name,
                    Set {
                        key_type,
                        data_type,
                        interval,
                        elements,
                    },
                );
            }
            "chain" => {
                let base = match (
                    body.get("hook").and_then(Value::as_str),
                    body.get("prio").and_then(Value::as_i64),
                ) {
                    (Some(hook), Some(prio)) => Some(BaseChain {
                        hook: hook.to_string(),
                        priority: i32::try_from(prio).unwrap_or_default(),
                    }),
                    _ => None,
                };
                r.chains.insert(
                    name,
                    Chain {
                        base,
                        fingerprint: String::new(),
                        rules: Vec::new(),
                    },
                );
            }
            "rule" => {
                let comment = body
                    .get("comment")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if let Some(rest) = comment.strip_prefix(FINGERPRINT_PREFIX) {
                    let chain = body
                        .get("chain")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let fp = rest.split(' ').next().unwrap_or_default();
                    fingerprints
                        .entry(chain.to_string())
                        .or_insert_with(|| fp.to_string());
                }
            }
            _ => {}
        }
    }
    for (chain, fp) in fingerprints {
        if let Some(c) = r.chains.get_mut(&chain) {
            c.fingerprint = fp;
        }
    }
    Some(r)
}

/// One element of a set or map as [`super::ruleset`] writes it.
fn element(v: &Value) -> Option<String> {
    Some(match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(kv) if kv.len() == 2 => {
            format!("{} : \"{}\"", element(&kv[0])?, kv[1].as_str()?)
        }
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                format!("{}/{}", element(p.get("addr")?)?, p.get("len")?.as_u64()?)
            } else if let Some(Value::Array(r)) = o.get("range") {
                format!("{}-{}", element(r.first()?)?, element(r.get(1)?)?)
            } else if let Some(Value::Array(c)) = o.get("concat") {
                c.iter()
                    .map(element)
                    .collect::<Option<Vec<_>>>()?
                    .join(" . ")
            } else if let Some(e) = o.get("elem") {
                element(e.get("val")?)?
            } else {
                return None;
            }
        }
        _ => return None,
    })
}

/// The per-pod counters, from `nft -j list counters table inet weft_policy` (or the table's
/// listing): (address, direction, verdict) -> (packets, bytes).
pub fn counters_from_json(json: &str) -> BTreeMap<(IpAddr, Direction, Verdict), (u64, u64)> {
    let mut out = BTreeMap::new();
    for (kind, body) in entries(json).unwrap_or_default() {
        if kind != "counter" {
            continue;
        }
        let Some(key) = body
            .get("name")
            .and_then(Value::as_str)
            .and_then(parse_counter_name)
        else {
            continue;
        };
        let n = |f: &str| body.get(f).and_then(Value::as_u64).unwrap_or_default();
        out.insert(key, (n("packets"), n("bytes")));
    }
    out
}
