//! The fake's HTTP side: cluster-wide list and watch of the four kinds, answered in the real
//! server's shapes (lists with `kind`/`apiVersion`-less items, newline-delimited watch events,
//! `Status` objects for errors).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use futures_util::stream;
use serde_json::{json, Value};

use super::store::{Frame, Page, WatchStart};
use super::Shared;
use crate::Kind;

/// How long a watch lasts without `timeoutSeconds` (the real server picks 30 to 60 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// A `Status` object as the API server sends for errors.
pub(crate) fn status_json(code: u16, message: &str, kind: Kind) -> Value {
    let reason = match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        410 => "Expired",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    };
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if code != 410 {
        let group = match kind {
            Kind::NetworkPolicy => "networking.k8s.io",
            _ => "",
        };
        status["details"] = json!({ "group": group, "kind": kind.plural() });
    }
    status
}

fn respond(code: u16, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    response
}

fn error(code: u16, message: &str, kind: Kind) -> Response {
    respond(
        code,
        Body::from(status_json(code, message, kind).to_string()),
    )
}

/// Decodes `a=b&c=d` with percent-escapes and `+` (form encoding, as kube sends).
fn query(raw: Option<&str>) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    raw.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Every request: route by path, then list or watch.
pub(crate) async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let path = request.uri().path().trim_end_matches('/');
    let Some(kind) = Kind::from_path(path) else {
        // The real server answers unknown paths with a plain-text 404.
        let mut response = Response::new(Body::from("404 page not found\n"));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    };
    if request.method() != Method::GET {
        return error(
            405,
            &format!("{} is not supported by the fake", request.method()),
            kind,
        );
    }
    let params = query(request.uri().query());
    let watch = matches!(params.get("watch").map(String::as_str), Some("true" | "1"));
    for selector in ["labelSelector", "fieldSelector"] {
        if params.get(selector).is_some_and(|s| !s.is_empty()) {
            return error(
                400,
                &format!("the fake API server does not support {selector}"),
                kind,
            );
        }
    }
    if watch {
        watch_kind(shared, kind, &params)
    } else {
        list_kind(&shared, kind, &params)
    }
}

fn injected_failure(shared: &Shared, kind: Kind, verb: &str) -> Option<Response> {
    let mut store = shared.store();
    let code = *store.failures.get(&kind)?;
    store.stats(kind).failed += 1;
    let message =
        match code {
            403 => {
                format!(
            "{} is forbidden: User \"system:serviceaccount:kube-system:weft\" cannot {verb} \
             resource \"{}\" in API group \"{}\" at the cluster scope",
            kind.plural(),
            kind.plural(),
            if kind == Kind::NetworkPolicy { "networking.k8s.io" } else { "" },
        )
            }
            _ => format!("fake failure injected for {} ({verb})", kind.plural()),
        };
    Some(error(code, &message, kind))
}

fn list_kind(shared: &Shared, kind: Kind, params: &HashMap<String, String>) -> Response {
    let token = params.get("continue").filter(|t| !t.is_empty());
    {
        let mut store = shared.store();
        let stats = store.stats(kind);
        stats.list_pages += 1;
        if token.is_none() {
            stats.lists += 1;
        }
    }
    if let Some(failure) = injected_failure(shared, kind, "list") {
        return failure;
    }
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => None,
        Some(Ok(0)) => None,
        Some(Ok(l)) => Some(l),
        Some(Err(_)) => return error(400, "limit: invalid value", kind),
    };
    let mut store = shared.store();
    let (revision, mut items) = match token {
        Some(token) => match store.take_page(token) {
            Some(page) if page.kind == kind => (page.revision, page.items),
            _ => {
                return error(
                    410,
                    "The provided continue parameter is too old to display a consistent list \
                     result. You can start a new list without the continue parameter, or use \
                     the continue token in this response to retrieve the remainder of the \
                     results. Continuing with the provided token results in an inconsistent \
                     list - objects that were created, modified, or deleted between the time \
                     the first chunk was returned and now may show up in the list.",
                    kind,
                )
            }
        },
        None => (store.revision(), store.list(kind)),
    };
    let mut metadata = json!({ "resourceVersion": revision.to_string() });
    if let Some(limit) = limit.filter(|l| items.len() > *l) {
        let rest = items.split_off(limit);
        metadata["remainingItemCount"] = json!(rest.len());
        metadata["continue"] = json!(store.keep_page(Page {
            kind,
            revision,
            items: rest
        }));
    }
    drop(store);
    let items: Vec<String> = items.iter().map(Value::to_string).collect();
    // Fields in the real server's order (serde_json's maps would sort them).
    let body = format!(
        "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{metadata},\"items\":[{}]}}\n",
        kind.name(),
        kind.api_version(),
        items.join(",")
    );
    respond(200, Body::from(body))
}

/// Removes the watch from the store when its response ends, however it ends.
#[derive(Debug)]
struct WatchGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.shared.store().close_watch(self.id);
    }
}

fn watch_kind(shared: Arc<Shared>, kind: Kind, params: &HashMap<String, String>) -> Response {
    {
        let mut store = shared.store();
        let stats = store.stats(kind);
        stats.watches += 1;
        stats
            .watch_versions
            .push(params.get("resourceVersion").cloned().unwrap_or_default());
    }
    if let Some(failure) = injected_failure(&shared, kind, "watch") {
        return failure;
    }
    let version = match params.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => None,
        Some(v) => match v.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => return error(400, &format!("invalid resource version: {v}"), kind),
        },
    };
    let timeout = match params.get("timeoutSeconds").map(|t| t.parse::<u64>()) {
        None => DEFAULT_WATCH_TIMEOUT,
        Some(Ok(t)) => Duration::from_secs(t),
        Some(Err(_)) => return error(400, "timeoutSeconds: invalid value", kind),
    };
    let bookmarks = params
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let start = shared.store().watch(kind, version, bookmarks);
    let (id, rx) = match start {
        WatchStart::Open(id, rx) => (id, rx),
        // As the real server: 200, one ERROR event, end of the stream.
        WatchStart::Expired(line) => return respond(200, Body::from(line)),
    };
    let guard = WatchGuard { shared, id };
    let deadline = tokio::time::Instant::now() + timeout;
    let body = stream::unfold(Some((rx, guard)), move |state| async move {
        let (mut rx, guard) = state?;
        let frame = tokio::select! {
            frame = rx.recv() => frame,
            () = tokio::time::sleep_until(deadline) => None,
        };
        match frame {
            Some(Frame::Line(line)) => Some((Ok(line), Some((rx, guard)))),
            Some(Frame::Break) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "fake: watch broken",
                )),
                None,
            )),
            // The timeout: the stream ends cleanly, as the real server's does.
            None => None,
        }
    });
    respond(200, Body::from_stream(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = query(Some(
            "watch=true&resourceVersion=12&labelSelector=app%3Dweb+x&x",
        ));
        assert_eq!(q["watch"], "true");
        assert_eq!(q["resourceVersion"], "12");
        assert_eq!(q["labelSelector"], "app=web x");
        assert_eq!(q["x"], "");
        assert!(query(None).is_empty());
        assert_eq!(query(Some("a=%4"))["a"], "%4");
    }
}
