//! HTTP endpoints of the dispatcher, on the `[http]` listener: `GET /deliveries` (per-integration
//! status), `GET /deliveries/dead` (dead letters), `GET /deliveries/log` (attempts) and
//! `POST /deliveries/requeue`, `POST /deliveries/pause` and `POST /deliveries/resume`. The
//! `fieldsync deliveries` CLI calls them on the running daemon.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::AppState;
use crate::dispatch::{Command, Unanswered};
use crate::store::record::EventId;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/deliveries", get(status))
        .route("/deliveries/dead", get(dead))
        .route("/deliveries/log", get(log))
        .route("/deliveries/requeue", post(requeue))
        .route("/deliveries/pause", post(|st, req| pause(st, req, true)))
        .route("/deliveries/resume", post(|st, req| pause(st, req, false)))
}

fn failed(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
}

pub(crate) async fn ask<T>(
    st: &AppState,
    cmd: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, Response> {
    crate::dispatch::ask(st.dispatch.as_ref(), cmd)
        .await
        .map_err(|e| match e {
            Unanswered::Disabled => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
            Unanswered::Stopped => failed(e),
        })
}

async fn status(State(st): State<AppState>) -> Response {
    match ask(&st, Command::Status).await {
        Ok(s) => Json(s).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct Filter {
    integration: Option<String>,
    event: Option<String>,
    last: Option<usize>,
}

fn event_filter(f: &Filter) -> Result<Option<EventId>, crate::store::record::ParseEventIdError> {
    f.event.as_deref().map(str::parse).transpose()
}

fn bad_request(e: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
}

async fn dead(State(st): State<AppState>, Query(f): Query<Filter>) -> Response {
    let event = match event_filter(&f) {
        Ok(e) => e,
        Err(e) => return bad_request(e),
    };
    match st.queue.deliveries().and_then(|s| s.dead_letters()) {
        Ok(list) => Json(
            list.into_iter()
                .filter(|d| f.integration.as_ref().map_or(true, |i| *i == d.integration_id))
                .filter(|d| event.map_or(true, |e| e == d.event_id))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => failed(e),
    }
}

async fn log(State(st): State<AppState>, Query(f): Query<Filter>) -> Response {
    let event = match event_filter(&f) {
        Ok(e) => e,
        Err(e) => return bad_request(e),
    };
    let last = f.last.unwrap_or(50).min(10_000);
    match st
        .queue
        .deliveries()
        .and_then(|s| s.read_log(f.integration.as_deref(), event, last))
    {
        Ok(list) => Json(list).into_response(),
        Err(e) => failed(e),
    }
}

/// `POST /deliveries/requeue` body: every dead letter, or those of one integration, or these ids.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RequeueRequest {
    pub integration_id: Option<String>,
    pub event_ids: Option<Vec<EventId>>,
}

async fn requeue(State(st): State<AppState>, Json(req): Json<RequeueRequest>) -> Response {
    let answer = ask(&st, |reply| Command::Requeue {
        integration: req.integration_id,
        events: req.event_ids,
        reply,
    })
    .await;
    match answer {
        Ok(Ok(n)) => Json(serde_json::json!({"requeued": n})).into_response(),
        Ok(Err(e)) => bad_request(e),
        Err(r) => r,
    }
}

/// `POST /deliveries/pause` and `/deliveries/resume` body.
#[derive(Debug, Deserialize, Serialize)]
pub struct PauseRequest {
    pub integration_id: String,
}

async fn pause(State(st): State<AppState>, Json(req): Json<PauseRequest>, pause: bool) -> Response {
    let answer = ask(&st, |reply| Command::Pause {
        integration: req.integration_id,
        pause,
        reply,
    })
    .await;
    match answer {
        Ok(Ok(changed)) => Json(serde_json::json!({"paused": pause, "changed": changed})).into_response(),
        Ok(Err(e)) => (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
        Err(r) => r,
    }
}
