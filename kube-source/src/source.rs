//! The source: one `kube` watcher per [`Kind`], their events mapped to [`Event`]s.
//!
//! The watcher lists (in pages of 500), then watches from the list's resourceVersion with
//! bookmarks on. When a watch ends or breaks it resumes from the last resourceVersion it saw
//! (an event's or a bookmark's); only a `410 Gone` (the version was compacted away) makes it
//! list again. Each list becomes one [`Event::Synced`]: the objects of its pages are buffered
//! until the list is complete, so the consumer never sees half a list.

use std::fmt::Debug;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weft_policy::{Object, ObjectKey, PodKey};

use crate::Kind;

/// What the source tells its consumer.
// `Applied` is large (a Pod is about 2 KiB inline), but it is the consumer's vocabulary and
// events only pass through a bounded channel: boxing would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The complete current list of one kind, after the first list or a relist: the consumer
    /// replaces all its objects of that kind with these (an object it had that is not here was
    /// deleted meanwhile).
    Synced {
        /// The kind listed.
        kind: Kind,
        /// Every object of that kind.
        objects: Vec<Object>,
    },
    /// An object was added or changed (a watch event after the kind's first [`Event::Synced`]).
    Applied(Object),
    /// An object was deleted (a watch event), by key.
    Deleted(ObjectKey),
    /// Listing or watching one kind fails; the watcher keeps retrying with backoff (0.8 s
    /// doubling to 30 s, from 0.8 s again after two minutes without failures). The message is for status output; the error stands until the next
    /// event of that kind. A `410 Gone` is not reported: it is the normal signal to relist.
    Error {
        /// The kind whose watcher failed.
        kind: Kind,
        /// What failed, for humans.
        message: String,
    },
}

/// The source, to start on a runtime: `Source::new(client).spawn(tx)`.
#[derive(Clone)]
pub struct Source {
    client: Client,
}

impl Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("default_namespace", &self.client.default_namespace())
            .finish_non_exhaustive()
    }
}

impl Source {
    /// A source reading from `client`'s cluster.
    pub fn new(client: Client) -> Source {
        Source { client }
    }

    /// Starts the four watchers on the current runtime; the task ends when `tx`'s receiver is
    /// dropped.
    pub fn spawn(self, tx: mpsc::Sender<Event>) -> JoinHandle<()> {
        tokio::spawn(run(self.client, tx))
    }
}

/// Lists and watches namespaces, pods, NetworkPolicies and nodes cluster-wide, concurrently,
/// sending [`Event`]s to `tx`; returns when the receiver is dropped.
///
/// Needs `get`, `list` and `watch` on `namespaces`, `pods`, `nodes` (core group) and
/// `networkpolicies` (`networking.k8s.io`). Forbidden kinds are reported as [`Event::Error`]
/// and retried; the others go on.
pub async fn run(client: Client, tx: mpsc::Sender<Event>) {
    tokio::join!(
        watch_kind::<Namespace>(client.clone(), tx.clone()),
        watch_kind::<Pod>(client.clone(), tx.clone()),
        watch_kind::<NetworkPolicy>(client.clone(), tx.clone()),
        watch_kind::<Node>(client, tx),
    );
}

/// A k8s-openapi type the source watches.
trait Watched:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static
{
    const KIND: Kind;
    fn into_object(self) -> Object;
}

impl Watched for Namespace {
    const KIND: Kind = Kind::Namespace;
    fn into_object(self) -> Object {
        Object::Namespace(self)
    }
}

impl Watched for Pod {
    const KIND: Kind = Kind::Pod;
    fn into_object(self) -> Object {
        Object::Pod(self)
    }
}

impl Watched for NetworkPolicy {
    const KIND: Kind = Kind::NetworkPolicy;
    fn into_object(self) -> Object {
        Object::NetworkPolicy(self)
    }
}

impl Watched for Node {
    const KIND: Kind = Kind::Node;
    fn into_object(self) -> Object {
        Object::Node(self)
    }
}

/// The key of an object of kind `kind` from its metadata (a missing name or namespace reads as
/// empty).
pub(crate) fn key_of(kind: Kind, namespace: Option<&str>, name: Option<&str>) -> ObjectKey {
    let name = name.unwrap_or_default().to_string();
    let namespace = namespace.unwrap_or_default().to_string();
    match kind {
        Kind::Namespace => ObjectKey::Namespace(name),
        Kind::Pod => ObjectKey::Pod(PodKey { namespace, name }),
        Kind::NetworkPolicy => ObjectKey::NetworkPolicy { namespace, name },
        Kind::Node => ObjectKey::Node(name),
    }
}

/// Turns the watcher's events into [`Event`]s: buffers a list until it is complete.
#[derive(Debug)]
struct Mapper<K> {
    listing: Option<Vec<Object>>,
    _kind: std::marker::PhantomData<K>,
}

impl<K: Watched> Mapper<K> {
    fn new() -> Self {
        Mapper {
            listing: None,
            _kind: std::marker::PhantomData,
        }
    }

    fn map(&mut self, event: Result<watcher::Event<K>, watcher::Error>) -> Option<Event> {
        match event {
            Ok(watcher::Event::Init) => {
                self.listing = Some(Vec::new());
                None
            }
            Ok(watcher::Event::InitApply(obj)) => {
                self.listing
                    .get_or_insert_with(Vec::new)
                    .push(obj.into_object());
                None
            }
            Ok(watcher::Event::InitDone) => Some(Event::Synced {
                kind: K::KIND,
                objects: self.listing.take().unwrap_or_default(),
            }),
            Ok(watcher::Event::Apply(obj)) => Some(Event::Applied(obj.into_object())),
            Ok(watcher::Event::Delete(obj)) => {
                let meta = obj.meta();
                Some(Event::Deleted(key_of(
                    K::KIND,
                    meta.namespace.as_deref(),
                    meta.name.as_deref(),
                )))
            }
            Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                tracing::debug!(kind = %K::KIND, "watch expired (410 Gone), relisting");
                None
            }
            Err(e) => {
                tracing::warn!(kind = %K::KIND, "watch failed, retrying: {e}");
                Some(Event::Error {
                    kind: K::KIND,
                    message: e.to_string(),
                })
            }
        }
    }
}

/// One kind's watcher, until the receiver is dropped.
async fn watch_kind<K: Watched>(client: Client, tx: mpsc::Sender<Event>) {
    let api = Api::<K>::all(client);
    let config = watcher::Config {
        bookmarks: true,
        ..watcher::Config::default()
    };
    let backoff = crate::backoff::WatchBackoff::default();
    let mut stream = std::pin::pin!(watcher(api, config).backoff(backoff));
    let mut mapper = Mapper::<K>::new();
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            () = tx.closed() => return,
        };
        let Some(event) = next else {
            // The watcher's stream does not end; if it ever does there is nothing to watch.
            tracing::error!(kind = %K::KIND, "watcher ended");
            return;
        };
        if let Some(event) = mapper.map(event) {
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        p
    }

    #[test]
    fn a_list_is_buffered_into_one_synced() {
        let mut m = Mapper::<Pod>::new();
        assert_eq!(m.map(Ok(watcher::Event::Init)), None);
        assert_eq!(m.map(Ok(watcher::Event::InitApply(pod("a", "x")))), None);
        assert_eq!(m.map(Ok(watcher::Event::InitApply(pod("b", "y")))), None);
        assert_eq!(
            m.map(Ok(watcher::Event::InitDone)),
            Some(Event::Synced {
                kind: Kind::Pod,
                objects: vec![Object::Pod(pod("a", "x")), Object::Pod(pod("b", "y"))],
            })
        );
        // An empty relist is an empty Synced (every pod is gone).
        assert_eq!(m.map(Ok(watcher::Event::Init)), None);
        assert_eq!(
            m.map(Ok(watcher::Event::InitDone)),
            Some(Event::Synced {
                kind: Kind::Pod,
                objects: vec![],
            })
        );
    }

    #[test]
    fn watch_events_and_errors() {
        let mut m = Mapper::<Pod>::new();
        assert_eq!(
            m.map(Ok(watcher::Event::Apply(pod("a", "x")))),
            Some(Event::Applied(Object::Pod(pod("a", "x"))))
        );
        assert_eq!(
            m.map(Ok(watcher::Event::Delete(pod("a", "x")))),
            Some(Event::Deleted(ObjectKey::Pod(PodKey {
                namespace: "a".into(),
                name: "x".into()
            })))
        );
        let gone: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 410, "reason": "Expired",
            "message": "too old resource version: 1 (5)"
        }))
        .unwrap();
        assert_eq!(m.map(Err(watcher::Error::WatchError(Box::new(gone)))), None);
        assert!(matches!(
            m.map(Err(watcher::Error::NoResourceVersion)),
            Some(Event::Error {
                kind: Kind::Pod,
                ..
            })
        ));
    }

    #[test]
    fn keys_from_metadata() {
        assert_eq!(
            key_of(Kind::Namespace, None, Some("prod")),
            ObjectKey::Namespace("prod".into())
        );
        assert_eq!(
            key_of(Kind::NetworkPolicy, Some("prod"), Some("deny")),
            ObjectKey::NetworkPolicy {
                namespace: "prod".into(),
                name: "deny".into()
            }
        );
        assert_eq!(
            key_of(Kind::Node, None, None),
            ObjectKey::Node(String::new())
        );
    }
}
