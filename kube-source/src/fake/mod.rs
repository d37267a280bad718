//! A fake Kubernetes API server, in process, on `127.0.0.1` with an ephemeral port, for tests
//! of the source and of the router (cargo feature `fake`).
//!
//! It serves what `kube`'s watcher uses, cluster-wide, for the four [`Kind`]s:
//! `GET /api/v1/pods`, `/api/v1/namespaces`, `/api/v1/nodes` and
//! `/apis/networking.k8s.io/v1/networkpolicies`, as lists (`limit`/`continue` paging
//! supported) and as watches (`watch=true`, `resourceVersion`, `allowWatchBookmarks`,
//! `timeoutSeconds`). Label and field selectors are refused unless empty (400). One revision
//! counter numbers every change of every kind, as etcd's does; a watch resumes from any
//! version since the last [`Fake::compact`] and gets an ERROR event with a `410 Expired`
//! status for an older one. Deletion is immediate (as with a zero grace period).
//!
//! Test controls: [`Fake::apply`], [`Fake::delete`], [`Fake::compact`],
//! [`Fake::break_watches`], [`Fake::send_bookmarks`] (also sent every
//! [`Options::bookmark_interval`]), [`Fake::fail`] (answer a kind's requests with an error
//! status), [`Fake::set_reachable`] (close every connection and refuse new ones), and
//! [`Fake::stats`] (lists, watches and their versions, per kind).

mod http;
mod store;

pub mod fixtures;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_policy::Object;

pub use store::Stats;

use crate::Kind;

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often every watch that allows bookmarks gets one (the real server: about a
    /// minute). `None`: only on [`Fake::send_bookmarks`].
    pub bookmark_interval: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bookmark_interval: Some(Duration::from_millis(200)),
        }
    }
}

/// What the server's tasks share with the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    store: Mutex<store::Store>,
    reachable: AtomicBool,
    /// Bumped to close every open connection.
    disconnect: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn store(&self) -> MutexGuard<'_, store::Store> {
        // A test that panicked while holding the lock must not hide its own failure.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake API server; it stops when dropped.
#[derive(Debug)]
pub struct Fake {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.shared.disconnect.send_modify(|n| *n += 1);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The JSON of an object, with its `kind` and `apiVersion`.
fn object_json(obj: &Object) -> Value {
    let value = match obj {
        Object::Namespace(o) => serde_json::to_value(o),
        Object::Pod(o) => serde_json::to_value(o),
        Object::NetworkPolicy(o) => serde_json::to_value(o),
        Object::Node(o) => serde_json::to_value(o),
    };
    value.expect("k8s-openapi objects serialize")
}

impl Fake {
    /// Starts a fake with the default [`Options`] on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound (a test tool: it fails the test loudly).
    pub async fn start() -> Fake {
        Fake::start_with(Options::default()).await
    }

    /// Starts a fake with `options`.
    ///
    /// # Panics
    ///
    /// As [`Fake::start`].
    pub async fn start_with(options: Options) -> Fake {
        Fake::start_on(([127, 0, 0, 1], 0).into(), options).await
    }

    /// Starts a fake listening on `addr` (e.g. an address of a test network namespace the
    /// calling thread entered, so that routers in other namespaces can reach it).
    ///
    /// # Panics
    ///
    /// If `addr` cannot be bound.
    pub async fn start_on(addr: SocketAddr, options: Options) -> Fake {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("fake API server: bind {addr}: {e}"));
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            store: Mutex::default(),
            reachable: AtomicBool::new(true),
            disconnect: watch::Sender::new(0),
        });
        let mut tasks = vec![tokio::spawn(serve(listener, shared.clone()))];
        if let Some(interval) = options.bookmark_interval {
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    shared.store().bookmarks();
                }
            }));
        }
        Fake {
            addr,
            shared,
            tasks,
        }
    }

    /// A kubeconfig (YAML) that points `kubectl`-style clients at this fake, without
    /// authentication: what a router started with `--kubeconfig` reads.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\n",
            self.url()
        )
    }

    /// The base URL, `http://ADDR:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A `kube` client for this fake (plain HTTP, no authentication).
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("fake URL"));
        crate::client::client_from_config(config).expect("a client for the fake")
    }

    /// Creates or replaces an object; returns its new resourceVersion.
    pub fn apply(&self, obj: &Object) -> u64 {
        self.apply_json(object_json(obj))
    }

    /// Creates or replaces an object given as JSON (with `kind`); returns its new
    /// resourceVersion. The server fills `resourceVersion`, and on creation `uid`,
    /// `creationTimestamp` and `generation` when absent; it keeps `uid` and
    /// `creationTimestamp` on replacement and bumps `generation` when `spec` changes.
    ///
    /// # Panics
    ///
    /// If `obj` is not of one of the four kinds or has no name.
    pub fn apply_json(&self, obj: Value) -> u64 {
        self.shared.store().apply(obj)
    }

    /// Deletes an object (`namespace` empty for namespaces and nodes); returns the deletion's
    /// resourceVersion, or `None` if there was no such object.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Option<u64> {
        self.shared.store().delete(kind, namespace, name)
    }

    /// The stored object, as a watch would send it.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        self.shared.store().get(kind, namespace, name)
    }

    /// The current revision (the resourceVersion of the last change).
    pub fn revision(&self) -> u64 {
        self.shared.store().revision()
    }

    /// Forgets the history up to the current revision, as etcd's compaction: a watch resuming
    /// from an older version then gets `410 Expired`, and must relist.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Breaks every open watch stream abruptly (the connection closes in the middle of the
    /// chunked response, as when a connection is lost).
    pub fn break_watches(&self) {
        self.shared.store().break_watches(None);
    }

    /// Sends a BOOKMARK with the current revision to every open watch that allows them.
    pub fn send_bookmarks(&self) {
        self.shared.store().bookmarks();
    }

    /// Answers every list and watch of `kind` with this HTTP status (and a matching `Status`
    /// body: 403 Forbidden, 500 InternalError, ...) until called with `None`. Open watches
    /// are left alone.
    pub fn fail(&self, kind: Kind, code: Option<u16>) {
        let mut store = self.shared.store();
        match code {
            Some(code) => store.failures.insert(kind, code),
            None => store.failures.remove(&kind),
        };
    }

    /// `false`: closes every open connection and closes new ones at once without an answer
    /// (the API server is unreachable); `true`: serves again.
    pub fn set_reachable(&self, reachable: bool) {
        self.shared.reachable.store(reachable, Ordering::SeqCst);
        if !reachable {
            // Unregister the watches now, so that no change made after this call reaches
            // them while their connections are being closed.
            self.shared.store().break_watches(None);
            self.shared.disconnect.send_modify(|n| *n += 1);
        }
    }

    /// What was served for `kind` so far.
    pub fn stats(&self, kind: Kind) -> Stats {
        self.shared.store().stats(kind).clone()
    }

    /// How many watches of `kind` are open now.
    pub fn open_watches(&self, kind: Kind) -> usize {
        self.shared.store().open_watches(kind)
    }
}

/// Accepts connections and serves each with HTTP/1.1 until it ends or is cut.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let router = axum::Router::new()
        .fallback(http::handle)
        .with_state(shared.clone());
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        if !shared.reachable.load(Ordering::SeqCst) {
            drop(socket);
            continue;
        }
        let service = TowerToHyperService::new(router.clone());
        let mut disconnect = shared.disconnect.subscribe();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service);
            tokio::select! {
                _ = connection => {}
                _ = disconnect.changed() => {}
            }
        });
    }
}
