//! The daemon's local API: HTTP/1 on the Unix socket `<state-dir>/weft.sock`, JSON bodies.
//!
//! `GET /v1/status` returns a [`crate::status::Report`]; `GET /v1/macs` the MAC table;
//! `POST /v1/connect` and `POST /v1/forget` with `{"addr": "ADDR[:PORT]"}` change the seed
//! list. Anything
//! that can open the socket (root, by its mode) can read them, e.g.
//! `curl --unix-socket /run/weft/weft.sock http://weft/v1/status`. The CLI uses [`get`].

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The socket's file name inside the state directory.
pub const SOCKET_NAME: &str = "weft.sock";

/// The socket path for a state directory.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// Performs `GET path` against the daemon that owns `state_dir` and decodes the JSON answer.
pub fn get<T: DeserializeOwned>(state_dir: &Path, path: &str) -> Result<T> {
    request(state_dir, "GET", path, None)
}

/// Performs `POST path` with a JSON body and decodes the JSON answer.
pub fn post<B: serde::Serialize, T: DeserializeOwned>(
    state_dir: &Path,
    path: &str,
    body: &B,
) -> Result<T> {
    let body = serde_json::to_string(body)?;
    request(state_dir, "POST", path, Some(&body))
}

fn request<T: DeserializeOwned>(
    state_dir: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<T> {
    let sock = socket_path(state_dir);
    let mut s = UnixStream::connect(&sock).with_context(|| {
        format!(
            "cannot reach the weft router at {} (is `weft router --state-dir {}` running?)",
            sock.display(),
            state_dir.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    match body {
        None => write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: weft\r\nAccept: application/json\r\n\r\n"
        )?,
        Some(b) => write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: weft\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )?,
    }
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .context("reading the router's answer")?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("the router sent a malformed HTTP answer")?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("the router answered {status}: {body}");
    }
    serde_json::from_str(body).context("decoding the router's answer")
}
