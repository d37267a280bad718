//! Manifests: the YAML and JSON documents of a `--policy-dir` directory, to [`Object`]s.
//! Several documents per file (`---`), `kind: List` with `items`, unknown kinds ignored, unused
//! fields ignored as the API would store them.

use crate::{Error, Object};
use serde::Deserialize;
use serde_json::Value;

/// Whether a directory entry is read: `*.yaml`, `*.yml`, `*.json`, not hidden.
pub fn is_manifest(file_name: &str) -> bool {
    !file_name.starts_with('.')
        && [".yaml", ".yml", ".json"]
            .iter()
            .any(|e| file_name.ends_with(e))
}

/// The objects of one file. Any document that does not parse fails the whole file.
///
/// A `.json` file is one JSON value; any other file is YAML with `---` between documents
/// (empty documents are skipped). Each document is an object with `apiVersion` and `kind`; a
/// `kind: List` contributes its `items`.
pub fn parse(file: &str, text: &str) -> Result<Vec<Object>, Error> {
    let fail = |index: usize, reason: String| Error::Parse {
        file: file.to_string(),
        index,
        reason,
    };
    let mut documents = Vec::new();
    if file.ends_with(".json") {
        let v: Value = serde_json::from_str(text).map_err(|e| fail(1, e.to_string()))?;
        documents.push(v);
    } else {
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let v = serde_yaml::Value::deserialize(doc).map_err(|e| fail(i + 1, e.to_string()))?;
            let v: Value = serde_json::to_value(v).map_err(|e| fail(i + 1, e.to_string()))?;
            documents.push(v);
        }
    }
    let mut objects = Vec::new();
    for (i, v) in documents.into_iter().enumerate() {
        if v.is_null() {
            continue;
        }
        collect(v, &mut objects).map_err(|reason| fail(i + 1, reason))?;
    }
    Ok(objects)
}

/// Adds the object(s) of one document (or of one `List` item).
fn collect(v: Value, out: &mut Vec<Object>) -> Result<(), String> {
    let Some(map) = v.as_object() else {
        return Err("not an object with apiVersion and kind".to_string());
    };
    let field = |name: &str| match map.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(format!("missing {name}")),
    };
    let kind = field("kind")?;
    field("apiVersion")?;
    fn typed<T: serde::de::DeserializeOwned>(kind: &str, v: Value) -> Result<T, String> {
        serde_json::from_value(v).map_err(|e| format!("{kind}: {e}"))
    }
    match kind.as_str() {
        "Namespace" => out.push(Object::Namespace(typed(&kind, v)?)),
        "Pod" => out.push(Object::Pod(typed(&kind, v)?)),
        "NetworkPolicy" => out.push(Object::NetworkPolicy(typed(&kind, v)?)),
        "Node" => out.push(Object::Node(typed(&kind, v)?)),
        "List" => match map.get("items") {
            Some(Value::Array(items)) => {
                for item in items.clone() {
                    collect(item, out)?;
                }
            }
            None | Some(Value::Null) => {}
            Some(_) => return Err("List: items is not a list".to_string()),
        },
        _ => {}
    }
    Ok(())
}
