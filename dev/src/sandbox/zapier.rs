//! Sandbox of a Zapier catch hook (`/hooks/catch/{id}/{key}/`), the supported route into
//! HoneyBook (its "Create Project" / "Create Client" actions): it records what it receives and
//! answers like Zapier, with no ids of the HoneyBook records, no reads and no updates.
//!
//! Assumptions (Zapier does not document them): an unknown hook answers 404 with a JSON error;
//! the success body is `{"attempt", "id", "request_id", "status": "success"}`; a repeated body is
//! recorded again (catch hooks do not deduplicate).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};

use super::{lock, Sandbox};

#[derive(Debug, Default, Serialize)]
pub struct State {
    /// Per hook (`id/key`), what it caught, oldest first.
    pub hooks: BTreeMap<String, Vec<Caught>>,
}

#[derive(Debug, Serialize)]
pub struct Caught {
    pub webhook_id: Option<String>,
    pub signed: bool,
    pub body: Value,
}

pub fn routes() -> Router<Arc<Sandbox>> {
    Router::new()
        .route("/hooks/catch/:id/:key", post(catch))
        .route("/hooks/catch/:id/:key/", post(catch))
}

pub fn fault(status: StatusCode) -> Response {
    (
        status,
        Json(json!({"status": "error", "message": "Service temporarily unavailable"})),
    )
        .into_response()
}

async fn catch(
    AxState(sandbox): AxState<Arc<Sandbox>>,
    Path((id, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if id != sandbox.accounts.zapier_hook_id || key != sandbox.accounts.zapier_hook_key {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"status": "error", "message": "Hook not found."})),
        )
            .into_response();
    }
    let body = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => v,
        Err(_) => Value::Object(
            form_urlencoded::parse(&body)
                .into_owned()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        ),
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    lock(&sandbox.zapier)
        .hooks
        .entry(format!("{id}/{key}"))
        .or_default()
        .push(Caught {
            webhook_id: header("webhook-id"),
            signed: header("webhook-signature").is_some(),
            body,
        });
    let attempt = super::ulid();
    Json(json!({"attempt": attempt, "id": super::ulid(), "request_id": attempt, "status": "success"}))
        .into_response()
}
