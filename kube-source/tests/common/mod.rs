//! Helpers shared by the integration tests: bounded waits, a source on a fake, a raw HTTP/1.1
//! client that reads chunked watch streams line by line.
#![allow(dead_code)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use weft_kube::fake::{fixtures, Fake, Options};
use weft_kube::{Event, Kind, Source};
use weft_policy::Object;

/// The longest any single wait may take.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `f` every 10 ms until it is true; panics with `what` after [`DEADLINE`].
pub async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A fake with the four fixtures and a source reading from it.
#[derive(Debug)]
pub struct Harness {
    pub fake: Fake,
    pub rx: mpsc::Receiver<Event>,
    pub task: tokio::task::JoinHandle<()>,
    /// Every event received so far, in order.
    pub seen: Vec<Event>,
    /// Events received but not yet taken by [`Harness::next`].
    backlog: std::collections::VecDeque<Event>,
}

impl Harness {
    /// Starts the fake with `options`, applies the fixtures, starts the source and waits for
    /// the first `Synced` of every kind and for every watch to be open.
    pub async fn start(options: Options) -> Harness {
        let fake = Fake::start_with(options).await;
        for fixture in [
            fixtures::NAMESPACE,
            fixtures::POD,
            fixtures::NETWORK_POLICY,
            fixtures::NODE,
        ] {
            fake.apply_json(fixtures::json(fixture));
        }
        let mut h = Harness::spawn(fake);
        for kind in Kind::ALL {
            h.synced(kind).await;
        }
        h.wait_watching().await;
        h
    }

    /// Starts a source on `fake`, without waiting for anything.
    pub fn spawn(fake: Fake) -> Harness {
        let (tx, rx) = mpsc::channel(64);
        let task = Source::new(fake.client()).spawn(tx);
        Harness {
            fake,
            rx,
            task,
            seen: Vec::new(),
            backlog: Default::default(),
        }
    }

    /// Waits until every kind has an open watch.
    pub async fn wait_watching(&self) {
        wait_until("a watch of every kind", || {
            Kind::ALL.iter().all(|k| self.fake.open_watches(*k) == 1)
        })
        .await;
    }

    /// The first event not taken yet that satisfies `f` (those it passes stay for later
    /// calls; all are in `seen`).
    pub async fn next(&mut self, what: &str, f: impl Fn(&Event) -> bool) -> Event {
        if let Some(i) = self.backlog.iter().position(&f) {
            return self.backlog.remove(i).expect("in range");
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            let event = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; seen {:#?}", self.seen))
                .expect("the source ended");
            self.seen.push(event.clone());
            if f(&event) {
                return event;
            }
            self.backlog.push_back(event);
        }
    }

    /// The objects of the next `Synced` of `kind`.
    pub async fn synced(&mut self, kind: Kind) -> Vec<Object> {
        match self
            .next(
                &format!("Synced {kind}"),
                |e| matches!(e, Event::Synced { kind: k, .. } if *k == kind),
            )
            .await
        {
            Event::Synced { objects, .. } => objects,
            _ => unreachable!(),
        }
    }

    /// The next `Applied` of an object named `name`.
    pub async fn applied(&mut self, name: &str) -> Object {
        match self
            .next(
                &format!("Applied {name}"),
                |e| matches!(e, Event::Applied(o) if name_of(o) == name),
            )
            .await
        {
            Event::Applied(o) => o,
            _ => unreachable!(),
        }
    }
}

/// An object's `metadata.name`.
pub fn name_of(obj: &Object) -> &str {
    let meta = match obj {
        Object::Namespace(o) => &o.metadata,
        Object::Pod(o) => &o.metadata,
        Object::NetworkPolicy(o) => &o.metadata,
        Object::Node(o) => &o.metadata,
    };
    meta.name.as_deref().unwrap_or_default()
}

/// The sorted names of objects.
pub fn names(objects: &[Object]) -> Vec<String> {
    let mut names: Vec<String> = objects.iter().map(|o| name_of(o).to_string()).collect();
    names.sort();
    names
}

/// A pod JSON (kind and apiVersion included), in namespace `shop`.
pub fn pod_json(name: &str, labels: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": { "name": name, "namespace": "shop", "labels": labels },
        "spec": { "containers": [{ "name": "app", "image": "busybox" }] },
    })
}

/// A raw HTTP/1.1 GET with a plain TCP client: the status code, the headers (lower-case
/// names) and the body, read up to the end of the response.
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    stream: TcpStream,
    buf: Vec<u8>,
    chunked: bool,
    done: bool,
    pending: Vec<u8>,
}

impl RawResponse {
    pub async fn get(addr: std::net::SocketAddr, path_and_query: &str) -> RawResponse {
        let mut stream = TcpStream::connect(addr).await.expect("connect to the fake");
        let request = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n\
             User-Agent: raw-test\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = RawResponse {
            status: 0,
            headers: Vec::new(),
            stream,
            buf: Vec::new(),
            chunked: false,
            done: false,
            pending: Vec::new(),
        };
        let head_end = loop {
            if let Some(i) = response.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(
                response.fill().await,
                "connection closed before the headers"
            );
        };
        let head = String::from_utf8(response.buf[..head_end].to_vec()).unwrap();
        response.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        response.status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        for line in lines {
            let (k, v) = line.split_once(':').unwrap();
            response
                .headers
                .push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        response.chunked = response.header("transfer-encoding") == Some("chunked");
        response
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Reads more bytes; false at the end of the connection.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(DEADLINE, self.stream.read(&mut chunk))
            .await
            .expect("timed out reading from the fake")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next piece of the body (one chunk if chunked); `None` at its end.
    async fn next_piece(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        if !self.chunked {
            let len: usize = self.header("content-length").unwrap().parse().unwrap();
            while self.buf.len() < len {
                assert!(self.fill().await, "connection closed inside the body");
            }
            self.done = true;
            return Some(self.buf.drain(..len).collect());
        }
        let line_end = loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if !self.fill().await {
                return None;
            }
        };
        let size = std::str::from_utf8(&self.buf[..line_end]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        while self.buf.len() < line_end + 2 + size + 2 {
            assert!(self.fill().await, "connection closed inside a chunk");
        }
        let data: Vec<u8> = self.buf[line_end + 2..line_end + 2 + size].to_vec();
        self.buf.drain(..line_end + 2 + size + 2);
        if size == 0 {
            self.done = true;
            return None;
        }
        Some(data)
    }

    /// Whether the body ended with its proper end (the last chunk, or the whole length).
    pub fn ended_cleanly(&self) -> bool {
        self.done
    }

    /// The whole body.
    pub async fn body(&mut self) -> String {
        let mut body = Vec::new();
        while let Some(piece) = self.next_piece().await {
            body.extend(piece);
        }
        String::from_utf8(body).unwrap()
    }

    /// The next line of a streamed body (a watch event), without its newline; `None` when the
    /// stream ended cleanly.
    pub async fn next_line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return Some(String::from_utf8(line[..i].to_vec()).unwrap());
            }
            let piece = self.next_piece().await?;
            self.pending.extend(piece);
        }
    }
}
