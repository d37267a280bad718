//! The local API server: the routes of `<state-dir>/weft.sock` (the contract is the `weft-api`
//! crate), the socket's claim at start, and how refusals become HTTP answers.

use super::*;
use crate::ipam::{self, Ipam};
use anyhow::{bail, Context, Result};
use axum::extract::State;
use axum::routing::{get, post};
use axum::Json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use weft_api as api;
use weft_api::control::{LeaveAnswer, LeaveRequest, SeedAnswer, SeedRequest};
use weft_api::ipam::{AllocateRequest, Attachment, GcRequest, IpamReport};

/// Refuses to start when another router answers on this state directory's socket, and removes
/// a stale socket file otherwise.
pub(super) fn claim_socket(state_dir: &std::path::Path) -> Result<PathBuf> {
    let path = api::socket_path(state_dir);
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        bail!(
            "another weft router is running with state directory {} (its socket {} answers)",
            state_dir.display(),
            path.display()
        );
    }
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::info!("removed the stale API socket {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    Ok(path)
}

pub(super) async fn serve_api(
    listener: tokio::net::UnixListener,
    daemon: Arc<Daemon>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    async fn seed(
        d: Arc<Daemon>,
        req: SeedRequest,
        f: fn(&Daemon, SocketAddr) -> SeedAnswer,
    ) -> Result<Json<SeedAnswer>, (axum::http::StatusCode, String)> {
        let addr = tokio::task::spawn_blocking(move || parse_addr(&req.addr))
            .await
            .map_err(|e| (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| (axum::http::StatusCode::BAD_REQUEST, format!("{e:#}")))?;
        Ok(Json(f(&d, addr)))
    }
    let app = axum::Router::new()
        .route(
            "/v1/status",
            get(|State(d): State<Arc<Daemon>>| async move {
                d.refresh_guard().await;
                Json(d.report())
            }),
        )
        .route(
            "/v1/macs",
            get(|State(d): State<Arc<Daemon>>| async move { Json(d.macs()) }),
        )
        .route(
            "/v1/connect",
            post(
                |State(d): State<Arc<Daemon>>, Json(req): Json<SeedRequest>| {
                    seed(d, req, Daemon::connect)
                },
            ),
        )
        .route(
            "/v1/forget",
            post(
                |State(d): State<Arc<Daemon>>, Json(req): Json<SeedRequest>| {
                    seed(d, req, Daemon::forget)
                },
            ),
        )
        .route("/v1/ipam", get(ipam_report))
        .route("/v1/ipam/allocate", post(ipam_allocate))
        .route("/v1/ipam/release", post(ipam_release))
        .route("/v1/ipam/gc", post(ipam_gc))
        .route("/v1/ports/guard", post(guard_port))
        .route("/v1/leave", post(leave))
        .route("/v1/trace", post(trace))
        .route("/v1/trace/report", post(trace_report))
        .route(
            "/v1/reload",
            post(|State(d): State<Arc<Daemon>>| async move {
                let a = tokio::task::spawn_blocking(move || d.reload())
                    .await
                    .unwrap_or_default();
                Json(a)
            }),
        )
        .with_state(daemon);
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::error!("API server stopped: {e}");
    }
}

/// A failed API request: answered with the error's HTTP status and an
/// [`weft_api::ipam::ApiError`] body.
#[derive(Debug)]
struct ApiFailure(ipam::Error);

impl From<ipam::Error> for ApiFailure {
    fn from(e: ipam::Error) -> ApiFailure {
        ApiFailure(e)
    }
}

impl axum::response::IntoResponse for ApiFailure {
    fn into_response(self) -> axum::response::Response {
        let (status, body) = self.0.to_api();
        let status = axum::http::StatusCode::from_u16(status)
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(body)).into_response()
    }
}

type ApiResult<T> = std::result::Result<Json<T>, ApiFailure>;

/// Decodes a JSON body; malformed JSON is a 400.
fn body<T: serde::de::DeserializeOwned>(b: &[u8]) -> std::result::Result<T, ipam::Error> {
    api::check::decode(b).map_err(|e| ipam::Error::BadRequest(e.0))
}

fn ipam_of(d: &Daemon) -> std::result::Result<Arc<Ipam>, ipam::Error> {
    d.ipam
        .clone()
        .ok_or(ipam::Error::Cluster(gossip::ipam::IpamError::Disabled))
}

async fn ipam_report(State(d): State<Arc<Daemon>>) -> Json<IpamReport> {
    Json(match &d.ipam {
        Some(i) => i.report(),
        None => IpamReport {
            ready: false,
            reason: gossip::ipam::IpamError::Disabled.to_string(),
            cidr: String::new(),
            cidr6: String::new(),
            bridge: d.cfg.bridge.clone(),
            mtu: d.shared.pod_mtu,
            reservations: Vec::new(),
        },
    })
}

async fn ipam_allocate(
    State(d): State<Arc<Daemon>>,
    b: axum::body::Bytes,
) -> ApiResult<weft_api::ipam::Allocation> {
    let req: AllocateRequest = body(&b)?;
    let i = ipam_of(&d)?;
    Ok(Json(i.allocate(req.attachment, req.netns, req.pod).await?))
}

async fn ipam_release(
    State(d): State<Arc<Daemon>>,
    b: axum::body::Bytes,
) -> ApiResult<weft_api::ipam::ReleaseAnswer> {
    let a: Attachment = body(&b)?;
    let i = ipam_of(&d)?;
    Ok(Json(i.release(&a).await?))
}

async fn ipam_gc(
    State(d): State<Arc<Daemon>>,
    b: axum::body::Bytes,
) -> ApiResult<weft_api::ipam::GcAnswer> {
    let req: GcRequest = body(&b)?;
    let i = ipam_of(&d)?;
    Ok(Json(i.gc(&req.keep).await?))
}

/// How long CNI ADD waits for the new pod's policies to be in the kernel.
const POLICY_SYNC_TIMEOUT: Duration = Duration::from_secs(5);

async fn guard_port(
    State(d): State<Arc<Daemon>>,
    b: axum::body::Bytes,
) -> ApiResult<weft_api::guard::GuardAnswer> {
    let req: weft_api::guard::GuardRequest = body(&b)?;
    let i = ipam_of(&d)?;
    let answer = i.guard_port(req).await?;
    // The pod's port joins the bridge after this answer: its policies go in first.
    if let Some(p) = &d.policy {
        if tokio::time::timeout(POLICY_SYNC_TIMEOUT, p.sync_now(&i, &d.gossip))
            .await
            .is_err()
        {
            tracing::warn!("policy: the ruleset for a new pod was not applied within {POLICY_SYNC_TIMEOUT:?}; it follows within a round");
        }
    }
    Ok(Json(answer))
}

async fn trace(
    State(d): State<Arc<Daemon>>,
    b: axum::body::Bytes,
) -> ApiResult<weft_api::trace::TraceAnswer> {
    let req: weft_api::trace::TraceRequest = body(&b)?;
    let answer = tokio::task::spawn_blocking(move || {
        if req.live {
            d.trace_live(&req)
        } else {
            d.trace(&req)
        }
    })
    .await
    .map_err(|e| ipam::Error::Internal(format!("trace: {e}")))?;
    Ok(Json(answer?))
}

async fn trace_report(
    State(d): State<Arc<Daemon>>,
    b: axum::body::Bytes,
) -> ApiResult<weft_api::trace::TraceAnswer> {
    let req: weft_api::trace::LiveReportRequest = body(&b)?;
    Ok(Json(d.trace_report(&req).await?))
}

async fn leave(State(d): State<Arc<Daemon>>, b: axum::body::Bytes) -> ApiResult<LeaveAnswer> {
    let req: LeaveRequest =
        api::check::decode_or_default(&b).map_err(|e| ipam::Error::BadRequest(e.0))?;
    Ok(Json(d.leave(req.force).await?))
}
