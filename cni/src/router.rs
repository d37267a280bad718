//! Calls to the local router's IPAM and port guard endpoints (`weft_api::ipam`,
//! `weft_api::guard`) through `weft_api::call`, with the router's failures turned into CNI
//! errors: no answer, or an answer that says "retry", is code 11 (the runtime tries again later);
//! any other refusal is code 100 with the router's words.

use crate::error::{Failure, ROUTER_PROTOCOL, ROUTER_REFUSED, TRY_AGAIN_LATER};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;
use weft_api::guard::{GuardAnswer, GuardRequest};
use weft_api::ipam::{
    AllocateRequest, Allocation, Attachment, GcAnswer, GcRequest, IpamReport, ReleaseAnswer,
};
use weft_api::{self as api, Error};

/// How long to wait for an allocation: the router may have to agree on a new block with its
/// peers first.
const ALLOCATE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for the other calls.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The CNI error for a failed call.
pub fn failure(what: &str, e: Error) -> Failure {
    match e {
        Error::Unreachable { .. } => Failure::new(
            TRY_AGAIN_LATER,
            format!("{what}: the weft router does not answer"),
        )
        .details(e.to_string()),
        Error::Refused { ref answer, .. } if answer.retry => {
            Failure::new(TRY_AGAIN_LATER, format!("{what}: {}", answer.error))
                .details(e.to_string())
        }
        Error::Refused { ref answer, .. } => {
            Failure::new(ROUTER_REFUSED, format!("{what}: {}", answer.error)).details(e.to_string())
        }
        // `Malformed`, and the router-side variants `call` never returns.
        _ => Failure::new(
            ROUTER_PROTOCOL,
            format!("{what}: cannot understand the router"),
        )
        .details(e.to_string()),
    }
}

fn post<B: Serialize, T: DeserializeOwned>(
    state_dir: &Path,
    path: &str,
    body: &B,
    timeout: Duration,
    what: &str,
) -> Result<T, Failure> {
    api::call(state_dir, "POST", path, Some(body), timeout).map_err(|e| failure(what, e))
}

/// `POST /v1/ipam/allocate`.
pub fn allocate(state_dir: &Path, req: &AllocateRequest) -> Result<Allocation, Failure> {
    post(
        state_dir,
        "/v1/ipam/allocate",
        req,
        ALLOCATE_TIMEOUT,
        "allocating an address",
    )
}

/// `POST /v1/ports/guard`.
pub fn guard(state_dir: &Path, req: &GuardRequest) -> Result<GuardAnswer, Failure> {
    post(
        state_dir,
        "/v1/ports/guard",
        req,
        TIMEOUT,
        "guarding the pod's port",
    )
}

/// `POST /v1/ipam/release`.
pub fn release(state_dir: &Path, a: &Attachment) -> Result<ReleaseAnswer, Failure> {
    post(
        state_dir,
        "/v1/ipam/release",
        a,
        TIMEOUT,
        "releasing the address",
    )
}

/// `POST /v1/ipam/gc`.
pub fn gc(state_dir: &Path, keep: Vec<Attachment>) -> Result<GcAnswer, Failure> {
    post(
        state_dir,
        "/v1/ipam/gc",
        &GcRequest { keep },
        TIMEOUT,
        "collecting stale addresses",
    )
}

/// `GET /v1/ipam`.
pub fn report(state_dir: &Path) -> Result<IpamReport, Failure> {
    api::call(state_dir, "GET", "/v1/ipam", None::<&()>, TIMEOUT)
        .map_err(|e| failure("asking the router for its reservations", e))
}

#[cfg(test)]
mod tests {
    //! The error mapping, against a fake router: a Unix socket in a temporary directory that
    //! answers each connection with a canned HTTP response.

    use super::*;
    use crate::error::{ROUTER_PROTOCOL, ROUTER_REFUSED, TRY_AGAIN_LATER};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    use std::thread;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("weft-cni-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Serves one request on `<dir>/weft.sock` with `status` and `body`; returns the request.
    fn fake(dir: &Path, status: &str, body: &str) -> thread::JoinHandle<String> {
        let listener = UnixListener::bind(api::socket_path(dir)).unwrap();
        let answer = format!(
            "HTTP/1.0 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head and the body its Content-Length announces.
            loop {
                let n = s.read(&mut buf).unwrap();
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).into_owned();
                if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if rest.len() >= len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            s.write_all(answer.as_bytes()).unwrap();
            String::from_utf8_lossy(&req).into_owned()
        })
    }

    fn attachment() -> Attachment {
        Attachment {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn answers_map_to_cni_codes() {
        let cases = [
            (
                "503 Service Unavailable",
                r#"{"error":"no block agreed yet","retry":true}"#,
                TRY_AGAIN_LATER,
            ),
            (
                "409 Conflict",
                r#"{"error":"the pod CIDR is exhausted","retry":false}"#,
                ROUTER_REFUSED,
            ),
            ("404 Not Found", "no such route", ROUTER_REFUSED),
            ("200 OK", "not json", ROUTER_PROTOCOL),
        ];
        for (i, (status, body, code)) in cases.into_iter().enumerate() {
            let dir = temp_dir(&format!("map{i}"));
            let server = fake(&dir, status, body);
            let e = release(&dir, &attachment()).unwrap_err();
            let req = server.join().unwrap();
            assert!(
                req.starts_with("POST /v1/ipam/release HTTP/1.0\r\n"),
                "{req}"
            );
            assert!(
                req.ends_with(r#"{"container_id":"c1","ifname":"eth0"}"#),
                "{req}"
            );
            assert_eq!(e.code, code, "{status}: {e}");
            if code == ROUTER_REFUSED && body.starts_with('{') {
                assert!(e.msg.contains("exhausted"), "{e}");
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn a_good_answer_decodes() {
        let dir = temp_dir("ok");
        let server = fake(
            &dir,
            "200 OK",
            r#"{"address":"10.32.0.2","prefix_len":12,"gateway":"10.32.0.1",
                "cidr":"10.32.0.0/12","mtu":1436,"bridge":"weft"}"#,
        );
        let a = allocate(
            &dir,
            &AllocateRequest {
                attachment: attachment(),
                netns: "/run/netns/p".into(),
                pod: None,
            },
        )
        .unwrap();
        server.join().unwrap();
        assert_eq!(a.address, std::net::Ipv4Addr::new(10, 32, 0, 2));
        assert_eq!((a.prefix_len, a.mtu, a.bridge.as_str()), (12, 1436, "weft"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_socket_is_try_again_later() {
        let dir = temp_dir("none");
        let e = report(&dir).unwrap_err();
        assert_eq!(e.code, TRY_AGAIN_LATER, "{e}");
        assert!(e.details.contains("weft.sock"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
