//! The daemon's local API: HTTP/1 on the Unix socket `<state-dir>/weft.sock`, JSON bodies.
//!
//! `GET /v1/status` returns a [`crate::status::Report`]; `GET /v1/macs` the MAC table;
//! `POST /v1/connect` and `POST /v1/forget` with `{"addr": "ADDR[:PORT]"}` change the seed
//! list; the `/v1/ipam/*` endpoints serve `weft-cni` ([`crate::ipam`]). Anything
//! that can open the socket (root, by its mode) can read them, e.g.
//! `curl --unix-socket /run/weft/weft.sock http://weft/v1/status`.
//!
//! This module is the client: the CLI uses [`get`] and [`post`], `weft-cni` uses [`call`] with its
//! own timeout. Their [`Error`] tells "the router does not answer" from "the router said no"
//! (with the router's [`ApiError`]), which the plugin turns into different CNI error codes.

use crate::error::{ApiError, Error};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The socket's file name inside the state directory.
pub const SOCKET_NAME: &str = "weft.sock";

/// How long [`get`] and [`post`] wait for the router to answer.
const CLI_TIMEOUT: Duration = Duration::from_secs(5);

/// The socket path for a state directory.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// Performs `GET path` against the daemon that owns `state_dir` and decodes the JSON answer.
pub fn get<T: DeserializeOwned>(state_dir: &Path, path: &str) -> Result<T, Error> {
    call(state_dir, "GET", path, None::<&()>, CLI_TIMEOUT)
}

/// Performs `POST path` with a JSON body and decodes the JSON answer.
pub fn post<B: Serialize, T: DeserializeOwned>(
    state_dir: &Path,
    path: &str,
    body: &B,
) -> Result<T, Error> {
    call(state_dir, "POST", path, Some(body), CLI_TIMEOUT)
}

/// Performs `method path` (with a JSON body if given) against the daemon that owns `state_dir`,
/// waiting at most `timeout` for each read and write, and decodes the JSON answer of a `200`.
pub fn call<B: Serialize, T: DeserializeOwned>(
    state_dir: &Path,
    method: &str,
    path: &str,
    body: Option<&B>,
    timeout: Duration,
) -> Result<T, Error> {
    let body = body
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| Error::Malformed(format!("encoding the request: {e}")))?;
    let sock = socket_path(state_dir);
    let unreachable = |source: io::Error| Error::Unreachable {
        socket: sock.clone(),
        state_dir: state_dir.to_path_buf(),
        source,
    };
    let mut s = UnixStream::connect(&sock).map_err(unreachable)?;
    s.set_read_timeout(Some(timeout)).map_err(unreachable)?;
    s.set_write_timeout(Some(timeout)).map_err(unreachable)?;
    let sent = match &body {
        None => write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: weft\r\nAccept: application/json\r\n\r\n"
        ),
        Some(b) => write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: weft\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ),
    };
    sent.map_err(unreachable)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(unreachable)?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        Error::Malformed(format!("no end of HTTP header in {:?}", truncate(&text)))
    })?;
    let status_line = head.lines().next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Malformed(format!("bad status line {status_line:?}")))?;
    if status != 200 {
        let answer = serde_json::from_str::<ApiError>(body).unwrap_or_else(|_| ApiError {
            error: if body.trim().is_empty() {
                status_line.to_owned()
            } else {
                format!("{status_line}: {}", truncate(body.trim()))
            },
            retry: false,
        });
        return Err(Error::Refused { status, answer });
    }
    serde_json::from_str(body)
        .map_err(|e| Error::Malformed(format!("decoding {:?}: {e}", truncate(body))))
}

/// At most 200 characters of `s`, for error messages.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
