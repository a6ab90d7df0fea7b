//! The admin HTTP server (axum): probes, metrics, status and operator requests.
//!
//! | route | answer |
//! |---|---|
//! | `GET /livez` | 200 `ok` whenever this runtime answers; never tied to peers or the map |
//! | `GET /readyz` | 200 `{"ready":true}` when [`NodeStatus::ready`], else 503 `{"ready":false,"reason":…}` |
//! | `GET /metrics` | OpenMetrics text, see [`super::metrics`] |
//! | `GET /v1/status` | the whole [`NodeStatus`] as JSON |
//! | `GET /v1/partitions` | [`PartitionsView`]: partitions and members |
//! | `POST /v1/nodes/{id}/drain`, `…/undrain` | [`NodeActionDone`] 200; else [`ErrorBody`] with 400 bad id, 404 unknown node, 409 rejected, 503 no leader or shutting down, 504 no answer in time |
//! | `POST /v1/partitions/{partition}/force-primary` (JSON [`ForcePrimaryRequest`]) | [`ForcePrimaryDone`] 200 once the map applied it; else [`ErrorBody`] with 400 bad partition/body or `confirm` not exactly [`FORCE_PRIMARY_CONFIRMATION`], 404 unknown node or partition, 409 rejected by the map (e.g. the partition has a primary), 503 no leader or shutting down, 504 no answer in time |
//! | `GET /v1/wan` | the WAN gateway's [`WanStatus`]; 404 [`ErrorBody`] when this node runs no gateway |
//! | `POST /v1/wan/targets` (JSON [`WanTargetSpec`]), `DELETE /v1/wan/targets/{site}`, `POST /v1/wan/targets/{site}/repair` | [`WanActionDone`] 200; else [`ErrorBody`] with 400 invalid, 404 unknown site, 409 already a target, 503 no gateway or shutting down, 504 no answer in time |
//!
//! Handlers only read the latest published snapshot and send requests over a bounded channel
//! with a deadline, so a stuck shell can make a drain time out but can never stall a probe.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::metrics::{NodeMetrics, OPENMETRICS_CONTENT_TYPE};
use super::status::{
    AdminRequest, AdminRequestError, AdminRequestSender, MemberStatus, NodeStatus, PartitionStatus,
    ReplicaRole, StatusHub,
};
use super::wan::{WanAdminError, WanAdminRequest, WanHub, WanStatus, WanTargetSpec};
use crate::transport::TransportStats;

/// What the admin server reads and where it sends operator requests.
#[derive(Debug, Clone)]
pub struct AdminContext {
    pub hub: StatusHub,
    /// The WAN gateway's status and requests (empty when this node runs no gateway).
    pub wan: WanHub,
    pub requests: AdminRequestSender,
    /// The node's QUIC transport counters, exported as `tern_transport_*_total` when present.
    pub transport_stats: Option<Arc<TransportStats>>,
}

/// Bounds of the admin server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLimits {
    /// How long a drain/undrain waits for the shell to queue and answer it. A drain answers
    /// once the partition map commits it (milliseconds; a Raft election fits well inside).
    pub request_timeout_ms: u64,
    /// How long [`AdminServer::shutdown`] lets open connections finish before it aborts them.
    pub shutdown_grace_ms: u64,
}

impl Default for AdminLimits {
    fn default() -> Self {
        Self {
            request_timeout_ms: 10_000,
            shutdown_grace_ms: 5_000,
        }
    }
}

/// `GET /v1/partitions`: the partition part of [`NodeStatus`] plus the members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionsView {
    pub node_id: u64,
    pub map_version: u64,
    pub map_leader: Option<u64>,
    pub partitions: Vec<PartitionStatus>,
    pub members: Vec<MemberStatus>,
}

/// `GET /readyz` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Body of a successful drain/undrain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeActionDone {
    pub node_id: u64,
    /// `drain` or `undrain`.
    pub action: String,
}

/// Body of a successful WAN gateway request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WanActionDone {
    pub site: String,
    /// `add_target`, `remove_target` or `repair`.
    pub action: String,
}

/// Body of every admin error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable, machine-readable: `bad_node_id`, `unknown_node`, `no_leader`, `rejected`,
    /// `bad_partition`, `not_confirmed`, `unknown_partition`,
    /// `shutting_down`, `timeout`, `not_found`, `internal`; for the WAN routes also
    /// `no_gateway`, `bad_request`, `invalid_target`, `unknown_site`, `already_target`.
    pub code: String,
    /// For people.
    pub error: String,
}

/// A running admin server. Dropping it stops the server in the background;
/// [`shutdown`](Self::shutdown) stops it and waits (bounded) for it to finish.
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    shutdown_grace: Duration,
}

impl AdminServer {
    /// The bound address (with the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in flight finish (at most `shutdown_grace_ms`), then
    /// returns.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            match tokio::time::timeout(self.shutdown_grace, &mut task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(err))) => tracing::warn!(%err, "admin HTTP server ended with an error"),
                Ok(Err(err)) => tracing::warn!(%err, "admin HTTP server task failed"),
                Err(_) => {
                    tracing::warn!(
                        "admin HTTP connections still open after the grace period; closing them"
                    );
                    task.abort();
                }
            }
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// [`start_with_limits`] with [`AdminLimits::default`].
pub fn start(addr: SocketAddr, ctx: AdminContext) -> std::io::Result<AdminServer> {
    start_with_limits(addr, ctx, AdminLimits::default())
}

/// Binds `addr` now (so a taken port is an error here, not a log line later) and serves on the
/// current tokio runtime. Must be called from within a tokio runtime.
pub fn start_with_limits(
    addr: SocketAddr,
    ctx: AdminContext,
    limits: AdminLimits,
) -> std::io::Result<AdminServer> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|err| std::io::Error::other(format!("admin HTTP needs a tokio runtime: {err}")))?;
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let listener = {
        let _entered = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let router = router(ctx, limits);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = runtime.spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                // Either an explicit stop or the handle was dropped.
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%local_addr, "admin HTTP listening");
    Ok(AdminServer {
        local_addr,
        stop: Some(stop),
        task: Some(task),
        shutdown_grace: Duration::from_millis(limits.shutdown_grace_ms),
    })
}

#[derive(Debug, Clone)]
struct AppState {
    hub: StatusHub,
    wan: WanHub,
    requests: AdminRequestSender,
    metrics: Arc<NodeMetrics>,
    request_timeout: Duration,
}

/// The routes, for embedding or for tests that drive the service without a socket.
pub fn router(ctx: AdminContext, limits: AdminLimits) -> Router {
    let state = AppState {
        metrics: Arc::new(NodeMetrics::new(
            ctx.hub.clone(),
            ctx.wan.clone(),
            ctx.transport_stats,
        )),
        hub: ctx.hub,
        wan: ctx.wan,
        requests: ctx.requests,
        request_timeout: Duration::from_millis(limits.request_timeout_ms),
    };
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/partitions", get(partitions))
        .route("/v1/nodes/{id}/drain", post(drain))
        .route("/v1/nodes/{id}/undrain", post(undrain))
        .route(
            "/v1/partitions/{partition}/force-primary",
            post(force_primary),
        )
        .route("/v1/wan", get(wan_status))
        .route("/v1/wan/targets", post(wan_add_target))
        .route("/v1/wan/targets/{site}", delete(wan_remove_target))
        .route("/v1/wan/targets/{site}/repair", post(wan_repair))
        .fallback(not_found)
        .with_state(state)
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    let status = state.hub.get();
    if status.ready {
        let body = Readiness {
            ready: true,
            reason: None,
        };
        (StatusCode::OK, axum::Json(body)).into_response()
    } else {
        let body = Readiness {
            ready: false,
            reason: Some(not_ready_reason(&status)),
        };
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

/// Partitions listed in a not-ready reason at most; the rest are counted.
const REASON_PARTITIONS_MAX: usize = 8;

/// Why a node is not ready, in one short line, from what the snapshot shows.
pub fn not_ready_reason(status: &NodeStatus) -> String {
    if status.node_id == 0 {
        return "starting: no status published yet".to_owned();
    }
    if status.map_version == 0 {
        return "no partition map yet".to_owned();
    }
    let behind: Vec<u16> = status
        .partitions
        .iter()
        .filter(|p| {
            p.replicas
                .iter()
                .any(|r| r.node_id == status.node_id && r.role == ReplicaRole::Backup && !r.in_sync)
        })
        .map(|p| p.partition)
        .collect();
    if behind.is_empty() {
        return "replicas catching up".to_owned();
    }
    let shown: Vec<String> = behind
        .iter()
        .take(REASON_PARTITIONS_MAX)
        .map(u16::to_string)
        .collect();
    let more = behind.len().saturating_sub(REASON_PARTITIONS_MAX);
    let tail = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!(
        "{} backup replica(s) catching up: partitions {}{tail}",
        behind.len(),
        shown.join(", ")
    )
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "encoding the metrics failed".to_owned(),
        ),
    }
}

async fn status(State(state): State<AppState>) -> axum::Json<NodeStatus> {
    axum::Json(state.hub.get())
}

async fn partitions(State(state): State<AppState>) -> axum::Json<PartitionsView> {
    let status = state.hub.get();
    axum::Json(PartitionsView {
        node_id: status.node_id,
        map_version: status.map_version,
        map_leader: status.map_leader,
        partitions: status.partitions,
        members: status.members,
    })
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route".to_owned(),
    )
}

#[derive(Debug, Clone, Copy)]
enum NodeAction {
    Drain,
    Undrain,
}

impl NodeAction {
    fn name(self) -> &'static str {
        match self {
            Self::Drain => "drain",
            Self::Undrain => "undrain",
        }
    }
}

async fn drain(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    node_action(state, &id, NodeAction::Drain).await
}

async fn undrain(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    node_action(state, &id, NodeAction::Undrain).await
}

/// Sends the request to the shell and waits for its answer, both within one deadline.
async fn node_action(state: AppState, id: &str, action: NodeAction) -> Response {
    let node_id = match id.parse::<u64>() {
        Ok(n) if n != 0 => n,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_node_id",
                format!("node id must be a positive integer, got {id:?}"),
            );
        }
    };
    let (reply, answer) = oneshot::channel();
    let request = match action {
        NodeAction::Drain => AdminRequest::Drain { node_id, reply },
        NodeAction::Undrain => AdminRequest::Undrain { node_id, reply },
    };
    let exchange = async {
        state
            .requests
            .send(request)
            .await
            .map_err(|_| AdminRequestError::ShuttingDown)?;
        // The shell dropping the reply sender means it stopped before answering.
        answer.await.map_err(|_| AdminRequestError::ShuttingDown)?
    };
    match tokio::time::timeout(state.request_timeout, exchange).await {
        Ok(Ok(())) => (
            StatusCode::OK,
            axum::Json(NodeActionDone {
                node_id,
                action: action.name().to_owned(),
            }),
        )
            .into_response(),
        Ok(Err(err)) => admin_error(err),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "no answer to {} of node {node_id} within {} ms; it may still take effect",
                action.name(),
                state.request_timeout.as_millis()
            ),
        ),
    }
}

fn admin_error(err: AdminRequestError) -> Response {
    let (status, code) = match &err {
        AdminRequestError::UnknownNode(_) => (StatusCode::NOT_FOUND, "unknown_node"),
        AdminRequestError::UnknownPartition(_) => (StatusCode::NOT_FOUND, "unknown_partition"),
        AdminRequestError::NoLeader => (StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
        AdminRequestError::Rejected(_) => (StatusCode::CONFLICT, "rejected"),
        AdminRequestError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
    };
    error(status, code, err.to_string())
}

/// The exact sentence `POST /v1/partitions/{p}/force-primary` needs in `confirm`: forcing a
/// primary gives up the writes only the lost primary held, and nobody should do that by typo.
pub const FORCE_PRIMARY_CONFIRMATION: &str = "I accept possible loss of acknowledged writes";

/// Body of `POST /v1/partitions/{partition}/force-primary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForcePrimaryRequest {
    /// The node to become primary.
    pub node: u64,
    /// Must be [`FORCE_PRIMARY_CONFIRMATION`], exactly.
    pub confirm: String,
}

/// Body of a successful force-primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForcePrimaryDone {
    pub partition: u16,
    /// The partition's primary now.
    pub node_id: u64,
}

/// The body is parsed here (not by axum's `Json`) so that every malformed one gets an
/// [`ErrorBody`]; nothing reaches the shell without the confirmation.
async fn force_primary(
    State(state): State<AppState>,
    Path(partition): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(partition) = partition.parse::<u16>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_partition",
            format!("partition must be an integer from 0 to 65535, got {partition:?}"),
        );
    };
    let request: ForcePrimaryRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("expected JSON {{\"node\": <id>, \"confirm\": \"…\"}}: {err}"),
            );
        }
    };
    if request.confirm != FORCE_PRIMARY_CONFIRMATION {
        return error(
            StatusCode::BAD_REQUEST,
            "not_confirmed",
            format!(
                "forcing a primary may lose acknowledged writes; \"confirm\" must be exactly \
                 {FORCE_PRIMARY_CONFIRMATION:?}"
            ),
        );
    }
    let node_id = request.node;
    if node_id == 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_node_id",
            "node id must be a positive integer, got 0".to_owned(),
        );
    }
    let (reply, answer) = oneshot::channel();
    let exchange = async {
        state
            .requests
            .send(AdminRequest::ForcePrimary {
                partition,
                node_id,
                reply,
            })
            .await
            .map_err(|_| AdminRequestError::ShuttingDown)?;
        answer.await.map_err(|_| AdminRequestError::ShuttingDown)?
    };
    match tokio::time::timeout(state.request_timeout, exchange).await {
        Ok(Ok(())) => (
            StatusCode::OK,
            axum::Json(ForcePrimaryDone { partition, node_id }),
        )
            .into_response(),
        Ok(Err(err)) => admin_error(err),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "no answer to force-primary of partition {partition} within {} ms; it may still \
                 take effect",
                state.request_timeout.as_millis()
            ),
        ),
    }
}

async fn wan_status(State(state): State<AppState>) -> Response {
    match state.wan.get() {
        Some(status) => (StatusCode::OK, axum::Json::<WanStatus>(status)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "no_gateway",
            WanAdminError::NoGateway.to_string(),
        ),
    }
}

/// The body is parsed here rather than by axum's `Json` extractor so that a malformed one
/// gets the same JSON [`ErrorBody`] as every other failure.
async fn wan_add_target(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let spec: WanTargetSpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("expected a JSON target {{\"site\", \"site_id\", \"addr\"}}: {err}"),
            );
        }
    };
    let site = spec.site.clone();
    wan_action(state, site, "add_target", |reply| {
        WanAdminRequest::AddTarget { spec, reply }
    })
    .await
}

async fn wan_remove_target(State(state): State<AppState>, Path(site): Path<String>) -> Response {
    wan_action(state, site.clone(), "remove_target", |reply| {
        WanAdminRequest::RemoveTarget { site, reply }
    })
    .await
}

async fn wan_repair(State(state): State<AppState>, Path(site): Path<String>) -> Response {
    wan_action(state, site.clone(), "repair", |reply| {
        WanAdminRequest::Repair { site, reply }
    })
    .await
}

/// Sends one request to the gateway host and waits for its answer, both within one deadline.
async fn wan_action(
    state: AppState,
    site: String,
    action: &'static str,
    request: impl FnOnce(oneshot::Sender<Result<(), WanAdminError>>) -> WanAdminRequest,
) -> Response {
    let Some(sender) = state.wan.sender() else {
        return wan_error(WanAdminError::NoGateway);
    };
    let (reply, answer) = oneshot::channel();
    let exchange = async {
        sender
            .send(request(reply))
            .await
            .map_err(|_| WanAdminError::ShuttingDown)?;
        // The gateway dropping the reply sender means it stopped before answering.
        answer.await.map_err(|_| WanAdminError::ShuttingDown)?
    };
    match tokio::time::timeout(state.request_timeout, exchange).await {
        Ok(Ok(())) => (
            StatusCode::OK,
            axum::Json(WanActionDone {
                site,
                action: action.to_owned(),
            }),
        )
            .into_response(),
        Ok(Err(err)) => wan_error(err),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "no answer to {action} of site {site:?} within {} ms; it may still take effect",
                state.request_timeout.as_millis()
            ),
        ),
    }
}

fn wan_error(err: WanAdminError) -> Response {
    let (status, code) = match &err {
        WanAdminError::NoGateway => (StatusCode::SERVICE_UNAVAILABLE, "no_gateway"),
        WanAdminError::UnknownSite(_) => (StatusCode::NOT_FOUND, "unknown_site"),
        WanAdminError::AlreadyTarget(_) => (StatusCode::CONFLICT, "already_target"),
        WanAdminError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_target"),
        WanAdminError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
    };
    error(status, code, err.to_string())
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    let body = ErrorBody {
        code: code.to_owned(),
        error: message,
    };
    (status, axum::Json(body)).into_response()
}
