//! The fake's data: the objects, one revision counter for the whole store (as etcd's), the
//! history of changes since the last compaction, the open watches, list pages, counters.
//!
//! Everything is behind one mutex, and every change is pushed into the open watches' queues
//! while it is held, so a watch sees changes in revision order, and a bookmark never overtakes
//! a change it covers.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::Kind;

/// What one watch stream is sent: a line of JSON, or the order to break abruptly.
#[derive(Debug)]
pub(crate) enum Frame {
    Line(String),
    Break,
}

/// An open watch.
#[derive(Debug)]
pub(crate) struct OpenWatch {
    pub(crate) id: u64,
    pub(crate) kind: Kind,
    pub(crate) bookmarks: bool,
    pub(crate) tx: mpsc::UnboundedSender<Frame>,
}

/// One change, kept for watches that resume from an older revision.
#[derive(Debug, Clone)]
struct Change {
    revision: u64,
    kind: Kind,
    type_: &'static str,
    object: Value,
}

/// The rest of a paged list, for its `continue` token.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) kind: Kind,
    pub(crate) revision: u64,
    pub(crate) items: Vec<Value>,
}

/// What the fake served for one kind (one path), for tests to assert on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// List requests that start a list (no `continue` token): the first list and each relist.
    pub lists: u64,
    /// All list requests, continuation pages included.
    pub list_pages: u64,
    /// Watch requests.
    pub watches: u64,
    /// The `resourceVersion` of each watch request, in order (empty when absent).
    pub watch_versions: Vec<String>,
    /// Watches answered with `410 Expired` (their version was compacted away).
    pub expired: u64,
    /// BOOKMARK events sent.
    pub bookmarks: u64,
    /// Requests answered with an injected failure ([`super::Fake::fail`]).
    pub failed: u64,
}

/// How a watch starts.
#[derive(Debug)]
pub(crate) enum WatchStart {
    /// Registered: this id, with these frames already queued.
    Open(u64, mpsc::UnboundedReceiver<Frame>),
    /// The version is older than the compaction point: send this 410 ERROR line and end.
    Expired(String),
}

#[derive(Debug, Default)]
pub(crate) struct Store {
    revision: u64,
    compacted: u64,
    objects: BTreeMap<Kind, BTreeMap<(String, String), Value>>,
    history: Vec<Change>,
    watches: Vec<OpenWatch>,
    next_id: u64,
    pages: HashMap<String, Page>,
    pub(crate) stats: BTreeMap<Kind, Stats>,
    pub(crate) failures: BTreeMap<Kind, u16>,
}

/// `metadata` of an object, created if absent.
fn meta(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

fn str_field(obj: &Value, field: &str) -> String {
    obj["metadata"][field]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// One watch event line, `{"type":...,"object":...}`, fields in the real server's order.
pub(crate) fn event_line(type_: &str, object: &Value) -> String {
    format!("{{\"type\":\"{type_}\",\"object\":{object}}}\n")
}

impl Store {
    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    pub(crate) fn stats(&mut self, kind: Kind) -> &mut Stats {
        self.stats.entry(kind).or_default()
    }

    pub(crate) fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let key = (namespace.to_string(), name.to_string());
        self.objects.get(&kind)?.get(&key).cloned()
    }

    /// Creates or replaces an object as the API server would: a new resourceVersion, uid and
    /// creationTimestamp kept from the stored object (or made up), generation bumped when the
    /// spec changes, the namespace name label. Returns the new revision.
    pub(crate) fn apply(&mut self, mut obj: Value) -> u64 {
        let kind = obj["kind"]
            .as_str()
            .and_then(Kind::from_name)
            .unwrap_or_else(|| panic!("fake: apply of an object of unknown kind: {obj}"));
        obj["apiVersion"] = json!(kind.api_version());
        let name = str_field(&obj, "name");
        assert!(!name.is_empty(), "fake: apply of a {kind} without a name");
        let namespace = if kind.namespaced() {
            let ns = str_field(&obj, "namespace");
            if ns.is_empty() {
                meta(&mut obj).insert("namespace".into(), json!("default"));
                "default".to_string()
            } else {
                ns
            }
        } else {
            meta(&mut obj).remove("namespace");
            String::new()
        };
        self.revision += 1;
        let revision = self.revision;
        let key = (namespace, name.clone());
        let old = self.objects.get(&kind).and_then(|m| m.get(&key)).cloned();
        let m = meta(&mut obj);
        match &old {
            Some(old) => {
                for field in ["uid", "creationTimestamp"] {
                    m.insert(field.into(), old["metadata"][field].clone());
                }
                if let Some(generation) = old["metadata"]["generation"].as_u64() {
                    let bump = old.get("spec") != obj.get("spec");
                    meta(&mut obj).insert("generation".into(), json!(generation + bump as u64));
                }
            }
            None => {
                if !m.contains_key("uid") {
                    m.insert("uid".into(), json!(uid(revision)));
                }
                if !m.contains_key("creationTimestamp") {
                    let now = k8s_openapi::jiff::Timestamp::now().as_second();
                    let now = k8s_openapi::jiff::Timestamp::from_second(now).expect("now");
                    m.insert("creationTimestamp".into(), json!(now.to_string()));
                }
                if matches!(kind, Kind::Pod | Kind::NetworkPolicy) {
                    m.entry("generation").or_insert(json!(1));
                }
            }
        }
        let m = meta(&mut obj);
        m.insert("resourceVersion".into(), json!(revision.to_string()));
        if kind == Kind::Namespace {
            let labels = m.entry("labels").or_insert_with(|| json!({}));
            labels["kubernetes.io/metadata.name"] = json!(name);
        }
        let type_ = if old.is_some() { "MODIFIED" } else { "ADDED" };
        self.objects
            .entry(kind)
            .or_default()
            .insert(key, obj.clone());
        self.record(kind, type_, obj);
        revision
    }

    /// Deletes an object at once (as with a zero grace period); the DELETED event carries the
    /// last state with the deletion's resourceVersion. Returns the revision, `None` if absent.
    pub(crate) fn delete(&mut self, kind: Kind, namespace: &str, name: &str) -> Option<u64> {
        let key = (namespace.to_string(), name.to_string());
        let mut obj = self.objects.get_mut(&kind)?.remove(&key)?;
        self.revision += 1;
        meta(&mut obj).insert("resourceVersion".into(), json!(self.revision.to_string()));
        self.record(kind, "DELETED", obj);
        Some(self.revision)
    }

    /// Keeps a change in the history and sends it to the kind's open watches.
    fn record(&mut self, kind: Kind, type_: &'static str, object: Value) {
        let line = event_line(type_, &object);
        self.watches
            .retain(|w| w.kind != kind || w.tx.send(Frame::Line(line.clone())).is_ok());
        self.history.push(Change {
            revision: self.revision,
            kind,
            type_,
            object,
        });
    }

    /// The current objects of a kind in key order (as etcd lists them), without `kind` and
    /// `apiVersion` (as the real server's list items).
    pub(crate) fn list(&self, kind: Kind) -> Vec<Value> {
        let Some(objects) = self.objects.get(&kind) else {
            return Vec::new();
        };
        objects
            .values()
            .map(|o| {
                let mut o = o.clone();
                if let Some(o) = o.as_object_mut() {
                    o.remove("kind");
                    o.remove("apiVersion");
                }
                o
            })
            .collect()
    }

    /// Keeps the rest of a paged list; returns its `continue` token.
    pub(crate) fn keep_page(&mut self, page: Page) -> String {
        self.next_id += 1;
        // Real tokens are opaque base64; this one is opaque enough.
        let token = format!("fakecontinue{}x{}", page.revision, self.next_id);
        self.pages.insert(token.clone(), page);
        token
    }

    pub(crate) fn take_page(&mut self, token: &str) -> Option<Page> {
        self.pages.remove(token)
    }

    /// Starts a watch of `kind` from `version` (`None`: from now, with the current objects as
    /// ADDED events first, as for an unset or "0" resourceVersion).
    pub(crate) fn watch(
        &mut self,
        kind: Kind,
        version: Option<u64>,
        bookmarks: bool,
    ) -> WatchStart {
        let (tx, rx) = mpsc::unbounded_channel();
        match version {
            Some(v) if v < self.compacted => {
                self.stats(kind).expired += 1;
                let status = super::http::status_json(
                    410,
                    &format!("too old resource version: {v} ({})", self.compacted),
                    kind,
                );
                return WatchStart::Expired(event_line("ERROR", &status));
            }
            Some(v) => {
                for change in self
                    .history
                    .iter()
                    .filter(|c| c.kind == kind && c.revision > v)
                {
                    let _ = tx.send(Frame::Line(event_line(change.type_, &change.object)));
                }
            }
            None => {
                for obj in self.objects.get(&kind).into_iter().flat_map(|m| m.values()) {
                    let _ = tx.send(Frame::Line(event_line("ADDED", obj)));
                }
            }
        }
        self.next_id += 1;
        let id = self.next_id;
        self.watches.push(OpenWatch {
            id,
            kind,
            bookmarks,
            tx,
        });
        WatchStart::Open(id, rx)
    }

    pub(crate) fn close_watch(&mut self, id: u64) {
        self.watches.retain(|w| w.id != id);
    }

    /// Sends a BOOKMARK with the current revision to every watch that asked for them.
    pub(crate) fn bookmarks(&mut self) {
        let revision = self.revision.to_string();
        let mut sent = Vec::new();
        self.watches.retain(|w| {
            if !w.bookmarks {
                return true;
            }
            let object = json!({
                "kind": w.kind.name(),
                "apiVersion": w.kind.api_version(),
                "metadata": { "resourceVersion": revision },
            });
            let ok =
                w.tx.send(Frame::Line(event_line("BOOKMARK", &object)))
                    .is_ok();
            if ok {
                sent.push(w.kind);
            }
            ok
        });
        for kind in sent {
            self.stats(kind).bookmarks += 1;
        }
    }

    /// Breaks every open watch (of `kind`, or all).
    pub(crate) fn break_watches(&mut self, kind: Option<Kind>) {
        self.watches.retain(|w| {
            if kind.is_none_or(|k| k == w.kind) {
                let _ = w.tx.send(Frame::Break);
                false
            } else {
                true
            }
        });
    }

    pub(crate) fn open_watches(&self, kind: Kind) -> usize {
        self.watches.iter().filter(|w| w.kind == kind).count()
    }

    /// Forgets the history up to now: a watch from an older version gets 410, and so does a
    /// list continued from an older snapshot.
    pub(crate) fn compact(&mut self) {
        self.compacted = self.revision;
        self.history.clear();
        let compacted = self.compacted;
        self.pages.retain(|_, p| p.revision >= compacted);
    }
}

/// A made-up uid, unique in this fake, in the usual form.
fn uid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}
