//! HTTP endpoints of the dispatcher, on the `[http]` listener: `GET /deliveries` (per-integration
//! status), `GET /deliveries/dead` (dead letters), `GET /deliveries/log` (attempts) and
//! `POST /deliveries/requeue`, `POST /deliveries/pause` and `POST /deliveries/resume`; and the
//! store's operator actions, `POST /queue/reencrypt`. The `fieldsync deliveries` and
//! `fieldsync reencrypt` commands call them on the running daemon.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{authorize, Peer};
use super::AppState;
use crate::config::Role;
use crate::ops::{self, OpsError};
use crate::store::record::{EventId, ParseEventIdError};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/deliveries", get(status))
        .route("/deliveries/dead", get(dead))
        .route("/deliveries/log", get(log))
        .route("/deliveries/requeue", post(requeue))
        .route(
            "/deliveries/pause",
            post(|st, peer, headers, req| pause(st, peer, headers, req, true)),
        )
        .route(
            "/deliveries/resume",
            post(|st, peer, headers, req| pause(st, peer, headers, req, false)),
        )
        .route("/audit", get(audit))
        .route("/queue/reencrypt", post(reencrypt))
}

/// An operator action's error as an HTTP answer.
fn failed(e: OpsError) -> Response {
    let status = match e {
        OpsError::Disabled | OpsError::NotRunning => StatusCode::SERVICE_UNAVAILABLE,
        OpsError::UnknownIntegration(_) => StatusCode::NOT_FOUND,
        OpsError::Stopped | OpsError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, format!("{e}\n")).into_response()
}

fn answer<T: Serialize>(r: Result<T, OpsError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => failed(e),
    }
}

fn bad_request(e: ParseEventIdError) -> Response {
    (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
}

async fn status(State(st): State<AppState>) -> Response {
    answer(st.ops().status().await)
}

#[derive(Deserialize)]
struct ReadQuery {
    integration: Option<String>,
    event: Option<String>,
    last: Option<usize>,
}

fn filter(q: ReadQuery) -> Result<(ops::Filter, Option<usize>), ParseEventIdError> {
    let event = q.event.as_deref().map(str::parse::<EventId>).transpose()?;
    Ok((
        ops::Filter {
            integration: q.integration,
            event,
        },
        q.last,
    ))
}

type PeerExt = Option<Extension<Peer>>;

/// The answer refusing a read of personal data without a token (once tokens are configured).
fn may_read(st: &AppState, peer: PeerExt, headers: &HeaderMap, what: &str) -> Option<Response> {
    authorize(st, headers, peer.map(|p| p.0), Role::Read, what, None)
        .err()
        .map(IntoResponse::into_response)
}

async fn dead(
    State(st): State<AppState>,
    peer: PeerExt,
    headers: HeaderMap,
    Query(q): Query<ReadQuery>,
) -> Response {
    if let Some(refused) = may_read(&st, peer, &headers, "reading dead letters") {
        return refused;
    }
    match filter(q) {
        Ok((f, _)) => answer(st.ops().dead_letters(&f)),
        Err(e) => bad_request(e),
    }
}

async fn log(
    State(st): State<AppState>,
    peer: PeerExt,
    headers: HeaderMap,
    Query(q): Query<ReadQuery>,
) -> Response {
    if let Some(refused) = may_read(&st, peer, &headers, "reading the delivery log") {
        return refused;
    }
    match filter(q) {
        Ok((f, last)) => answer(st.ops().log(&f, last.unwrap_or(50))),
        Err(e) => bad_request(e),
    }
}

/// `POST /deliveries/requeue` body: every dead letter, or those of one integration, or these ids.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RequeueRequest {
    pub integration_id: Option<String>,
    pub event_ids: Option<Vec<EventId>>,
}

async fn requeue(
    State(st): State<AppState>,
    peer: PeerExt,
    headers: HeaderMap,
    Json(req): Json<RequeueRequest>,
) -> Response {
    match authorize(
        &st,
        &headers,
        peer.map(|p| p.0),
        Role::Operate,
        "requeue",
        req.integration_id.as_deref(),
    ) {
        Ok(actor) => answer(st.ops().requeue(&actor, req.integration_id, req.event_ids).await),
        Err(refused) => refused.into_response(),
    }
}

/// `POST /queue/reencrypt`: seals everything held under the current key (operate).
async fn reencrypt(State(st): State<AppState>, peer: PeerExt, headers: HeaderMap) -> Response {
    match authorize(&st, &headers, peer.map(|p| p.0), Role::Operate, "reencrypt", None) {
        Ok(actor) => answer(st.ops().reencrypt(&actor).await),
        Err(refused) => refused.into_response(),
    }
}

#[derive(Deserialize)]
struct AuditQuery {
    last: Option<usize>,
}

/// `GET /audit?last=N`: the newest operator actions (default 50), oldest first.
async fn audit(
    State(st): State<AppState>,
    peer: PeerExt,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    if let Some(refused) = may_read(&st, peer, &headers, "reading the audit trail") {
        return refused;
    }
    answer(st.ops().audit(q.last.unwrap_or(50)))
}

/// `POST /deliveries/pause` and `/deliveries/resume` body.
#[derive(Debug, Deserialize, Serialize)]
pub struct PauseRequest {
    pub integration_id: String,
}

async fn pause(
    State(st): State<AppState>,
    peer: PeerExt,
    headers: HeaderMap,
    Json(req): Json<PauseRequest>,
    pause: bool,
) -> Response {
    let action = if pause { "pause" } else { "resume" };
    match authorize(
        &st,
        &headers,
        peer.map(|p| p.0),
        Role::Operate,
        action,
        Some(&req.integration_id),
    ) {
        Ok(actor) => answer(
            st.ops()
                .pause(&actor, &req.integration_id, pause)
                .await
                .map(|changed| serde_json::json!({"paused": pause, "changed": changed})),
        ),
        Err(refused) => refused.into_response(),
    }
}
