//! `events.insert`, `get`, `update` (PUT replaces), `patch` (merges) and `delete`: ids, `If-Match`
//! → 412 `conditionNotMet`, `If-None-Match` → 304, 409 `duplicate` (cancelled events included),
//! and DELETE as cancellation (204, then 410 `deleted`).

use std::sync::Arc;

use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::auth::authorize;
use super::errors::{bad_request, deleted, error, not_found};
use super::resource::{find, merge, store, strip_nulls_map, writable};
use super::validate::{new_event_id, valid_event_id, validate};
use super::{finish, parse_body, Answer};
use crate::sandbox::{lock, Sandbox};

fn precondition(headers: &HeaderMap, event: &Value) -> Result<(), Response> {
    let Some(want) = headers.get("if-match").and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let have = event["etag"].as_str().unwrap_or_default();
    if want.trim() == "*" || want.split(',').any(|w| w.trim() == have) {
        return Ok(());
    }
    Err(error(
        StatusCode::PRECONDITION_FAILED,
        "global",
        "conditionNotMet",
        "Precondition Failed",
        Some(("header", "If-Match")),
    ))
}

/// The fields a write would store, `null`s dropped, once they pass the API's checks.
fn checked(mut fields: Map<String, Value>) -> Result<Map<String, Value>, Response> {
    strip_nulls_map(&mut fields);
    validate(&Value::Object(fields.clone()))?;
    Ok(fields)
}

pub(super) async fn insert(
    AxState(sandbox): AxState<Arc<Sandbox>>,
    Path(calendar): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    finish((|| {
        authorize(&sandbox, &headers)?;
        let body = parse_body(&body)?;
        let id = match body.get("id") {
            None | Some(Value::Null) => new_event_id(),
            Some(Value::String(id)) if valid_event_id(id) => id.clone(),
            Some(_) => return Err(bad_request("invalid", "Invalid resource id value.")),
        };
        let fields = checked(writable(&body))?;
        let mut state = lock(&sandbox.google);
        if find(&state, &calendar, &id).is_some() {
            return Err(error(
                StatusCode::CONFLICT,
                "global",
                "duplicate",
                "The requested identifier already exists.",
                None,
            ));
        }
        let event = store(&mut state, &calendar, &id, fields, None);
        Ok(Json(event).into_response())
    })())
}

pub(super) async fn get_event(
    AxState(sandbox): AxState<Arc<Sandbox>>,
    Path((calendar, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    finish((|| {
        authorize(&sandbox, &headers)?;
        let state = lock(&sandbox.google);
        let event = find(&state, &calendar, &id).ok_or_else(not_found)?;
        let none_match = headers.get("if-none-match").and_then(|v| v.to_str().ok());
        if none_match.is_some_and(|w| w.split(',').any(|w| w.trim() == event["etag"])) {
            return Ok(StatusCode::NOT_MODIFIED.into_response());
        }
        Ok(Json(event).into_response())
    })())
}

/// PUT and PATCH: the new fields from the stored event and the body.
fn write(
    sandbox: &Sandbox,
    calendar: &str,
    id: &str,
    headers: &HeaderMap,
    body: &Bytes,
    patch: bool,
) -> Answer {
    authorize(sandbox, headers)?;
    let body = parse_body(body)?;
    let mut state = lock(&sandbox.google);
    let existing = find(&state, calendar, id).ok_or_else(not_found)?;
    precondition(headers, &existing)?;
    let fields = if patch {
        let mut merged = Value::Object(writable(&existing));
        merge(&mut merged, &Value::Object(writable(&body)));
        match merged {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    } else {
        writable(&body)
    };
    let fields = checked(fields)?;
    let event = store(&mut state, calendar, id, fields, Some(&existing));
    Ok(Json(event).into_response())
}

pub(super) async fn update(
    AxState(sandbox): AxState<Arc<Sandbox>>,
    Path((calendar, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    finish(write(&sandbox, &calendar, &id, &headers, &body, false))
}

pub(super) async fn patch(
    AxState(sandbox): AxState<Arc<Sandbox>>,
    Path((calendar, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    finish(write(&sandbox, &calendar, &id, &headers, &body, true))
}

pub(super) async fn delete_event(
    AxState(sandbox): AxState<Arc<Sandbox>>,
    Path((calendar, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    finish((|| {
        authorize(&sandbox, &headers)?;
        let mut state = lock(&sandbox.google);
        let existing = find(&state, &calendar, &id).ok_or_else(not_found)?;
        if existing["status"] == "cancelled" {
            return Err(deleted());
        }
        precondition(&headers, &existing)?;
        let mut fields = writable(&existing);
        fields.insert("status".into(), json!("cancelled"));
        store(&mut state, &calendar, &id, fields, Some(&existing));
        Ok(StatusCode::NO_CONTENT.into_response())
    })())
}
