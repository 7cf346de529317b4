//! Sandbox of Google Calendar API v3 (events, `calendars.get`) and the OAuth2 token endpoint,
//! mounted under `/google`: `POST /oauth2/token`,
//! `/calendar/v3/calendars/{calendarId}[/events[/{eventId}]]`, `POST /batch/calendar/v3`.
//!
//! Facts reproduced (../shared/CRM_APIS.md §4, the v3 discovery document): bearer tokens issued by
//! the token endpoint (`invalid_client`, `invalid_grant`, `unsupported_grant_type`), 401 `authError`
//! with `WWW-Authenticate`; client-supplied ids `^[a-v0-9]{5,1024}$`; 409 `duplicate` (cancelled
//! events included); `start`/`end` required; 400 `timeRangeEmpty`; an `etag` on every event, new on
//! every write; `If-Match` → 412 `conditionNotMet`; PATCH merges (arrays replaced, `null` deletes);
//! PUT replaces; DELETE → 204 then 410 `deleted`; deleted events stay as `status: "cancelled"`
//! tombstones (GET returns them, lists show them with `showDeleted=true` or a `syncToken`);
//! the `events.list` filters and orderings ([`list_query`]: extended properties AND-ed, as the
//! discovery document says, time bounds, `updatedMin`, `q`, `orderBy`); partial responses with
//! `fields` ([`fields`]); batch requests ([`batch`]); paging with
//! `nextPageToken`, and `nextSyncToken` on the last page only; 410 `fullSyncRequired` for a sync
//! token the sandbox no longer knows ([`State::invalidate_sync_tokens`]); push channels
//! (`events/watch`, `channels/stop`) that POST `sync` first, then `exists` after every change of
//! their calendar, with the `X-Goog-*` headers.
//!
//! Assumptions (not documented by Google, chosen here): any calendarId names a calendar, created
//! on first use, `primary` included, each one separate; error messages for a bad id, a missing or
//! malformed time, and a bad time zone (`invalid`/`required` reasons) follow what the live API has
//! been seen to answer; time zones are checked by shape (Area/Location, `UTC`, `Etc/…`), not
//! against the tz database; end before start is checked when both times can be compared (offsets,
//! or local times in the same zone); `sequence` grows when start, end or status change; push
//! channels accept http addresses (Google requires https) and a new channel lives 7 days unless
//! it asks for less; failed notifications are not retried; list parameters the sandbox has no
//! use for (`timeZone`, `maxAttendees`, `showHiddenInvitations`, …) are accepted and ignored;
//! a calendar's `timeZone` is `UTC`.
//!
//! Invariant: events are never removed from a calendar, only cancelled; `changed` is the sandbox's
//! write counter at an event's last write, which the sync tokens compare against.
//!
//! Layout: this file holds the state, the routes, the `fields` and charset layers and
//! `calendars.get`; `auth` the token endpoint and the bearer check, `errors` the error envelope,
//! `events` the event methods, `validate` what a stored event must be, `resource` how it is
//! stored, `list` (with `list_query`) `events.list`, `push` the watch channels, `batch` batch
//! requests and `fields` partial responses.

// Error answers are whole responses, built at most once per request: boxing them buys nothing.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};

use super::Sandbox;

mod auth;
mod batch;
mod errors;
mod events;
mod fields;
mod list;
mod list_query;
mod push;
mod resource;
mod validate;

use auth::{authorize, token};
pub use errors::fault;
use errors::{bad_request, error, not_found};
use events::{delete_event, get_event, insert, patch, update};
use list::list;
use push::{stop, watch};
pub use validate::valid_event_id;

const OWNER_EMAIL: &str = "sandbox-owner@fieldsync.test";

/// The Google sandbox's records, shown under `"google"` in `GET /_sandbox/state`.
#[derive(Debug, Default, Serialize)]
pub struct State {
    /// Calendars by the id they were first used with.
    pub calendars: BTreeMap<String, Calendar>,
    /// Access tokens the token endpoint issued.
    pub tokens_issued: u64,
    /// Live access tokens and when they expire.
    #[serde(skip)]
    tokens: HashMap<String, Instant>,
    /// Every write bumps it; sync tokens and etags derive from it.
    #[serde(skip)]
    writes: u64,
    /// Sync tokens of an older epoch are answered with 410 `fullSyncRequired`.
    #[serde(skip)]
    sync_epoch: u64,
    #[serde(skip)]
    last_etag: u64,
    /// Push channels opened with `events/watch` and not stopped.
    pub channels: Vec<Channel>,
}

/// A push channel (`events/watch`): bodiless POSTs to `address` on every change of its calendar.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    pub id: String,
    pub resource_id: String,
    pub calendar: String,
    pub address: String,
    /// The client's own secret, echoed in `X-Goog-Channel-Token`.
    #[serde(skip)]
    token: Option<String>,
    /// Milliseconds since the epoch.
    pub expiration: i64,
    /// The last `X-Goog-Message-Number` sent.
    pub messages: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Calendar {
    /// Full event resources in insertion order, cancelled ones included.
    pub events: Vec<Value>,
    /// Per event id, the write counter at its last write.
    #[serde(skip)]
    changed: HashMap<String, u64>,
}

impl State {
    /// Every sync token issued so far becomes invalid (the next use answers 410 `fullSyncRequired`).
    pub fn invalidate_sync_tokens(&mut self) {
        self.sync_epoch += 1;
    }

    fn next_etag(&mut self) -> String {
        let micros = chrono::Utc::now().timestamp_micros().max(0) as u64 * 2;
        self.last_etag = micros.max(self.last_etag + 1);
        format!("\"{}\"", self.last_etag)
    }

    fn calendar(&mut self, id: &str) -> &mut Calendar {
        self.calendars.entry(id.to_owned()).or_default()
    }
}

pub fn routes() -> Router<Arc<Sandbox>> {
    let calendar = Router::new()
        .route("/calendar/v3/calendars/:calendar", get(get_calendar))
        .route("/calendar/v3/calendars/:calendar/events", get(list).post(insert))
        .route("/calendar/v3/calendars/:calendar/events/watch", post(watch))
        .route("/calendar/v3/channels/stop", post(stop))
        .route(
            "/calendar/v3/calendars/:calendar/events/:event",
            get(get_event).put(update).patch(patch).delete(delete_event),
        )
        .layer(axum::middleware::from_fn(partial_response));
    Router::new()
        .route("/oauth2/token", post(token))
        .route("/batch/calendar/v3", post(batch::batch))
        .merge(calendar)
        .layer(axum::middleware::map_response(utf8_json))
}

/// Google names the charset of its JSON answers: `application/json; charset=UTF-8`.
async fn utf8_json(response: Response) -> Response {
    utf8_header(response)
}

fn utf8_header(mut response: Response) -> Response {
    let json = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/json");
    if json {
        response.headers_mut().insert(
            "content-type",
            axum::http::HeaderValue::from_static("application/json; charset=UTF-8"),
        );
    }
    response
}

/// The `fields` parameter of every calendar method: a successful JSON answer keeps only the
/// selected members ([`fields`]).
async fn partial_response(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let query = request.uri().query().map(str::to_owned);
    with_fields(query.as_deref(), next.run(request)).await
}

/// Runs `answer` and trims it to the `fields` selection of `query`, if any.
async fn with_fields(query: Option<&str>, answer: impl std::future::Future<Output = Response>) -> Response {
    let selector = query.and_then(|q| param(&form_pairs(q), "fields").map(str::to_owned));
    let Some(selector) = selector else {
        return answer.await;
    };
    let selection = match fields::Selection::parse(&selector) {
        Ok(s) => s,
        Err(why) => {
            return error(
                StatusCode::BAD_REQUEST,
                "global",
                "invalidParameter",
                &format!("Invalid field selection {selector}: {why}"),
                Some(("parameter", "fields")),
            )
        }
    };
    let response = answer.await;
    if !response.status().is_success() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) => (parts.status, Json(selection.apply(&v))).into_response(),
        Err(_) => Response::from_parts(parts, axum::body::Body::from(bytes)),
    }
}

/// `application/x-www-form-urlencoded` pairs (also query strings), in order.
fn form_pairs(text: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(text.as_bytes()).into_owned().collect()
}

fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The calendar's id as Google shows it: `primary` is the owner's address.
fn calendar_email(calendar: &str) -> String {
    if calendar == "primary" {
        OWNER_EMAIL.to_owned()
    } else {
        calendar.to_owned()
    }
}

fn parse_body(body: &Bytes) -> Result<Value, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => Ok(v),
        _ => Err(bad_request("parseError", "Parse Error")),
    }
}

/// RFC 3339 UTC with milliseconds, as the API writes `created`/`updated`.
fn now_millis() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A handler's answer: `Err` is an error answer, returned early with `?`.
type Answer = Result<Response, Response>;

fn finish(r: Answer) -> Response {
    r.unwrap_or_else(|e| e)
}

/// `calendars.get`, which clients call to check their access: every calendar exists
/// (module assumption), owned by the sandbox's user, in UTC.
async fn get_calendar(
    AxState(sandbox): AxState<Arc<Sandbox>>,
    Path(calendar): Path<String>,
    headers: HeaderMap,
) -> Response {
    finish((|| {
        authorize(&sandbox, &headers)?;
        let id = calendar_email(&calendar);
        Ok(Json(json!({
            "kind": "calendar#calendar",
            "etag": format!("\"c{:x}\"", id.len()),
            "id": id,
            "summary": id,
            "timeZone": "UTC",
            "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]},
        }))
        .into_response())
    })())
}
