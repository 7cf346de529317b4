//! Push channels: `events/watch` opens one (answered with a `sync` notification), `channels/stop`
//! closes it, and every write to its calendar POSTs `exists` with the `X-Goog-*` headers.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

use super::auth::authorize;
use super::errors::{bad_request, error};
use super::{finish, parse_body, Channel, State};
use crate::sandbox::{lock, Sandbox};

/// A new channel's lifetime when the request sets none [G: the reference names no default here].
const CHANNEL_DAYS: i64 = 7;

pub(super) async fn watch(
    AxState(sandbox): AxState<Arc<Sandbox>>,
    Path(calendar): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    finish((|| {
        authorize(&sandbox, &headers)?;
        let body = parse_body(&body)?;
        let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
        let id = text("id")
            .filter(|i| !i.is_empty() && i.len() <= 64)
            .ok_or_else(|| bad_request("required", "Channel id must be set, at most 64 characters."))?;
        if !matches!(text("type").as_deref(), Some("web_hook" | "webhook")) {
            return Err(bad_request("invalid", "Invalid channel type: use web_hook."));
        }
        let address = text("address")
            .filter(|a| a.starts_with("https://") || a.starts_with("http://"))
            .ok_or_else(|| bad_request("required", "Channel address must be an https URL."))?;
        let now = chrono::Utc::now().timestamp_millis();
        let expiration = match body.get("expiration") {
            Some(Value::String(t)) => t.parse::<i64>().ok(),
            Some(Value::Number(n)) => n.as_i64(),
            _ => None,
        }
        .filter(|e| *e > now)
        .unwrap_or(now + CHANNEL_DAYS * 86_400_000);
        let mut state = lock(&sandbox.google);
        if state.channels.iter().any(|c| c.id == id) {
            return Err(bad_request("duplicate", &format!("Channel id {id} not unique")));
        }
        let resource_id = format!("r{:024x}", rand::random::<u128>() >> 32);
        state.channels.push(Channel {
            id: id.clone(),
            resource_id: resource_id.clone(),
            calendar: calendar.clone(),
            address,
            token: text("token"),
            expiration,
            messages: 0,
        });
        send_notification(&mut state, &id, "sync");
        let mut answer = json!({
            "kind": "api#channel",
            "id": id,
            "resourceId": resource_id,
            "resourceUri": resource_uri(&calendar),
            "expiration": expiration.to_string(),
        });
        if let Some(t) = text("token") {
            answer["token"] = json!(t);
        }
        Ok(Json(answer).into_response())
    })())
}

pub(super) async fn stop(
    AxState(sandbox): AxState<Arc<Sandbox>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    finish((|| {
        authorize(&sandbox, &headers)?;
        let body = parse_body(&body)?;
        let (id, resource) = (body["id"].as_str(), body["resourceId"].as_str());
        let mut state = lock(&sandbox.google);
        let before = state.channels.len();
        state
            .channels
            .retain(|c| !(Some(c.id.as_str()) == id && Some(c.resource_id.as_str()) == resource));
        if state.channels.len() == before {
            return Err(error(
                StatusCode::NOT_FOUND,
                "global",
                "notFound",
                &format!("Channel '{}' not found", id.unwrap_or_default()),
                None,
            ));
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    })())
}

fn resource_uri(calendar: &str) -> String {
    format!("https://www.googleapis.com/calendar/v3/calendars/{calendar}/events?alt=json")
}

/// Notifies every live channel of `calendar` (called with the state locked, after a write).
pub(super) fn notify(state: &mut State, calendar: &str, what: &str) {
    let now = chrono::Utc::now().timestamp_millis();
    let ids: Vec<String> = state
        .channels
        .iter()
        .filter(|c| c.calendar == calendar && c.expiration > now)
        .map(|c| c.id.clone())
        .collect();
    for id in ids {
        send_notification(state, &id, what);
    }
}

/// One bodiless POST with the `X-Goog-*` headers, sent in the background; the receiver's answer
/// is not used (Google's retries of failed notifications are not reproduced).
fn send_notification(state: &mut State, channel: &str, what: &str) {
    let Some(c) = state.channels.iter_mut().find(|c| c.id == channel) else {
        return;
    };
    c.messages += 1;
    let expiration = chrono::DateTime::from_timestamp_millis(c.expiration)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let mut request = reqwest::Client::new()
        .post(&c.address)
        .header("X-Goog-Channel-ID", &c.id)
        .header("X-Goog-Channel-Expiration", expiration)
        .header("X-Goog-Resource-ID", &c.resource_id)
        .header("X-Goog-Resource-URI", resource_uri(&c.calendar))
        .header("X-Goog-Resource-State", what)
        .header("X-Goog-Message-Number", c.messages.to_string())
        .header("content-length", "0");
    if let Some(t) = &c.token {
        request = request.header("X-Goog-Channel-Token", t);
    }
    tokio::spawn(async move {
        let _ = request.timeout(Duration::from_secs(10)).send().await;
    });
}
