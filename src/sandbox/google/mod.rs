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

// Error answers are whole responses, built at most once per request: boxing them buys nothing.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{lock, Api, Sandbox};

mod batch;
mod fields;
mod list_query;

const SCOPE: &str = "https://www.googleapis.com/auth/calendar.events";
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

/// An injected failure in Google's error shape (no `Retry-After`: Google does not promise one).
pub fn fault(status: StatusCode) -> Response {
    let (domain, reason, message) = match status.as_u16() {
        403 | 429 => ("usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
        500 => ("global", "backendError", "Backend Error"),
        503 => ("global", "backendError", "The service is currently unavailable."),
        400 => ("global", "badRequest", "Bad Request"),
        401 => return auth_error(),
        404 => ("global", "notFound", "Not Found"),
        409 => ("global", "conflict", "Conflict"),
        410 => ("global", "deleted", "Resource has been deleted"),
        412 => ("global", "conditionNotMet", "Precondition Failed"),
        _ => ("global", "backendError", "Backend Error"),
    };
    error(status, domain, reason, message, None)
}

/// Google's error envelope: `{"error":{"errors":[…],"code":N,"message":…}}`.
fn error(
    status: StatusCode,
    domain: &str,
    reason: &str,
    message: &str,
    location: Option<(&str, &str)>,
) -> Response {
    let mut item = json!({"domain": domain, "reason": reason, "message": message});
    if let Some((kind, at)) = location {
        item["locationType"] = json!(kind);
        item["location"] = json!(at);
    }
    // the charset is set here too: injected faults do not pass through the routes' layer
    utf8_header(
        (
            status,
            Json(json!({"error": {"errors": [item], "code": status.as_u16(), "message": message}})),
        )
            .into_response(),
    )
}

fn auth_error() -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "global",
        "authError",
        "Invalid Credentials",
        Some(("header", "Authorization")),
    );
    r.headers_mut().insert(
        "www-authenticate",
        axum::http::HeaderValue::from_static(
            "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
        ),
    );
    r
}

fn bad_request(reason: &str, message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "global", reason, message, None)
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "global", "notFound", "Not Found", None)
}

/// `application/x-www-form-urlencoded` pairs (also query strings), in order.
fn form_pairs(text: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(text.as_bytes()).into_owned().collect()
}

fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": code, "error_description": description})),
    )
        .into_response()
}

async fn token(AxState(sandbox): AxState<Arc<Sandbox>>, body: Bytes) -> Response {
    let form = form_pairs(&String::from_utf8_lossy(&body));
    let a = &sandbox.accounts;
    match param(&form, "grant_type") {
        Some("refresh_token") => {}
        Some(other) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("Invalid grant_type: {other}"),
            )
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Invalid grant_type: ",
            )
        }
    }
    if param(&form, "client_id") != Some(a.google_client_id.as_str())
        || param(&form, "client_secret") != Some(a.google_client_secret.as_str())
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The OAuth client was not found.",
        );
    }
    let Some(refresh) = param(&form, "refresh_token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: refresh_token",
        );
    };
    if refresh != a.google_refresh_token || sandbox.faults(Api::Google).revoke_refresh_tokens {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Token has been expired or revoked.",
        );
    }
    let access = format!("ya29.sandbox-{:032x}", rand::random::<u128>());
    let lifetime = a.google_token_seconds;
    {
        let mut state = lock(&sandbox.google);
        state
            .tokens
            .insert(access.clone(), Instant::now() + Duration::from_secs(lifetime));
        state.tokens_issued += 1;
    }
    Json(json!({
        "access_token": access,
        "expires_in": lifetime,
        "scope": SCOPE,
        "token_type": "Bearer",
    }))
    .into_response()
}

/// Checks the bearer token; `Err` is the 401 answer.
fn authorize(sandbox: &Sandbox, headers: &HeaderMap) -> Result<(), Response> {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "global",
            "required",
            "Login Required.",
            Some(("header", "Authorization")),
        ));
    };
    let expire_all = sandbox.take_token_expiry();
    let mut state = lock(&sandbox.google);
    if expire_all {
        state.tokens.clear();
    }
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .unwrap_or_default();
    match state.tokens.get(token) {
        Some(until) if *until > Instant::now() => Ok(()),
        _ => Err(auth_error()),
    }
}

/// A client-supplied event id: base32hex characters, 5 to 1024 of them.
pub fn valid_event_id(id: &str) -> bool {
    (5..=1024).contains(&id.len()) && id.bytes().all(|b| matches!(b, b'a'..=b'v' | b'0'..=b'9'))
}

fn new_event_id() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let v = rand::random::<u128>();
    (0..26)
        .map(|i| ALPHABET[((v >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// A time zone name by shape: `UTC`, `GMT`, `Etc/…` or `Area/Location[/…]` with a known area.
fn valid_time_zone(tz: &str) -> bool {
    const AREAS: &[&str] = &[
        "Africa",
        "America",
        "Antarctica",
        "Arctic",
        "Asia",
        "Atlantic",
        "Australia",
        "Europe",
        "Indian",
        "Pacific",
        "Etc",
    ];
    if matches!(tz, "UTC" | "GMT") {
        return true;
    }
    let mut parts = tz.split('/');
    let area = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    AREAS.contains(&area)
        && !rest.is_empty()
        && rest.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+'))
        })
}

/// A point in time for comparing start and end: an instant, a local time in a zone, or a date.
#[derive(PartialEq)]
enum When {
    Instant(DateTime<chrono::FixedOffset>),
    Local(NaiveDateTime, Option<String>),
    Date(NaiveDate),
}

/// Checks one of `start`/`end`; the error is the 400 answer.
fn read_time(event: &Value, which: &str) -> Result<When, Response> {
    let invalid = || bad_request("invalid", &format!("Invalid {which} time."));
    let t = match event.get(which) {
        None | Some(Value::Null) => return Err(bad_request("required", &format!("Missing {which} time."))),
        Some(t) if t.is_object() => t,
        Some(_) => return Err(invalid()),
    };
    let tz = match t.get("timeZone") {
        None | Some(Value::Null) => None,
        Some(Value::String(z)) if valid_time_zone(z) => Some(z.clone()),
        Some(_) => {
            return Err(bad_request(
                "invalid",
                &format!("Invalid time zone definition for {which} time."),
            ))
        }
    };
    let date = t.get("date").filter(|v| !v.is_null());
    let date_time = t.get("dateTime").filter(|v| !v.is_null());
    match (date, date_time) {
        (Some(d), None) => {
            let d = d.as_str().ok_or_else(invalid)?;
            NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map(When::Date)
                .map_err(|_| invalid())
        }
        (None, Some(dt)) => {
            let dt = dt.as_str().ok_or_else(invalid)?;
            if let Ok(at) = DateTime::parse_from_rfc3339(dt) {
                return Ok(When::Instant(at));
            }
            let local = NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S%.f").map_err(|_| invalid())?;
            if tz.is_none() {
                return Err(bad_request(
                    "required",
                    &format!("Missing time zone definition for {which} time."),
                ));
            }
            Ok(When::Local(local, tz))
        }
        _ => Err(invalid()),
    }
}

/// The checks the API makes on an event it is about to store.
fn validate(event: &Value) -> Result<(), Response> {
    let start = read_time(event, "start")?;
    let end = read_time(event, "end")?;
    let empty = match (&start, &end) {
        (When::Date(s), When::Date(e)) => e <= s,
        (When::Instant(s), When::Instant(e)) => e < s,
        (When::Local(s, sz), When::Local(e, ez)) if sz == ez => e < s,
        (When::Date(_), _) | (_, When::Date(_)) => {
            return Err(bad_request(
                "invalid",
                "Start and end times must either both be date or both be dateTime.",
            ))
        }
        _ => false,
    };
    if empty {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "calendar",
            "timeRangeEmpty",
            "The specified time range is empty.",
            None,
        ));
    }
    if let Some(status) = event.get("status") {
        if !matches!(status.as_str(), Some("confirmed" | "tentative" | "cancelled")) {
            return Err(bad_request("invalid", "Invalid value for: status"));
        }
    }
    if let Some(ext) = event.get("extendedProperties").filter(|v| !v.is_null()) {
        let ok = ext.as_object().is_some_and(|o| {
            o.iter().all(|(k, v)| {
                matches!(k.as_str(), "private" | "shared")
                    && (v.is_null() || v.as_object().is_some_and(|m| m.values().all(|x| x.is_string())))
            })
        });
        if !ok {
            return Err(bad_request("invalid", "Invalid extended properties."));
        }
    }
    Ok(())
}

/// Fields the server owns: whatever a client sends for them is ignored.
const READ_ONLY: &[&str] = &[
    "kind",
    "etag",
    "id",
    "htmlLink",
    "created",
    "updated",
    "creator",
    "organizer",
    "iCalUID",
    "sequence",
];

fn html_link(calendar: &str, id: &str) -> String {
    use base64::Engine;
    let eid =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{id} {}", calendar_email(calendar)));
    format!("https://www.google.com/calendar/event?eid={eid}")
}

fn calendar_email(calendar: &str) -> String {
    if calendar == "primary" {
        OWNER_EMAIL.to_owned()
    } else {
        calendar.to_owned()
    }
}

/// Removes `null` members (a PUT or insert with `null` means absent).
fn strip_nulls(v: &mut Value) {
    if let Value::Object(m) = v {
        m.retain(|_, x| !x.is_null());
        for x in m.values_mut() {
            strip_nulls(x);
        }
    }
}

/// Patch semantics: objects merge, arrays and scalars replace, `null` deletes.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else if let Some(existing) = t.get_mut(k).filter(|e| e.is_object() && v.is_object()) {
                    merge(existing, v);
                } else {
                    let mut v = v.clone();
                    strip_nulls(&mut v);
                    t.insert(k.clone(), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// The client's writable fields of a request body.
fn writable(body: &Value) -> Map<String, Value> {
    let mut m = body.as_object().cloned().unwrap_or_default();
    for k in READ_ONLY {
        m.remove(*k);
    }
    m
}

fn parse_body(body: &Bytes) -> Result<Value, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => Ok(v),
        _ => Err(bad_request("parseError", "Parse Error")),
    }
}

/// Stores a new version of an event (server fields set), returning it.
fn store(
    state: &mut State,
    calendar: &str,
    id: &str,
    mut fields: Map<String, Value>,
    previous: Option<&Value>,
) -> Value {
    let now = now_millis();
    let etag = state.next_etag();
    state.writes += 1;
    let writes = state.writes;
    let email = calendar_email(calendar);
    let status = fields
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("confirmed")
        .to_owned();
    let sequence = match previous {
        None => 0,
        Some(p) => {
            let seq = p.get("sequence").and_then(Value::as_i64).unwrap_or(0);
            let moved = p.get("start") != fields.get("start")
                || p.get("end") != fields.get("end")
                || p["status"].as_str() != Some(status.as_str());
            seq + i64::from(moved)
        }
    };
    fields.insert("kind".into(), json!("calendar#event"));
    fields.insert("etag".into(), json!(etag));
    fields.insert("id".into(), json!(id));
    fields.insert("status".into(), json!(status));
    fields.insert("htmlLink".into(), json!(html_link(calendar, id)));
    let created = previous
        .and_then(|p| p.get("created").cloned())
        .unwrap_or_else(|| json!(now));
    fields.insert("created".into(), created);
    fields.insert("updated".into(), json!(now));
    fields.insert("creator".into(), json!({"email": email, "self": true}));
    fields.insert("organizer".into(), json!({"email": email, "self": true}));
    fields.insert("iCalUID".into(), json!(format!("{id}@google.com")));
    fields.insert("sequence".into(), json!(sequence));
    fields.entry("eventType").or_insert_with(|| json!("default"));
    fields
        .entry("reminders")
        .or_insert_with(|| json!({"useDefault": true}));
    let event = Value::Object(fields);
    notify(state, calendar, "exists");
    let cal = state.calendar(calendar);
    cal.changed.insert(id.to_owned(), writes);
    match cal.events.iter_mut().find(|e| e["id"] == id) {
        Some(slot) => *slot = event.clone(),
        None => cal.events.push(event.clone()),
    }
    event
}

/// RFC 3339 UTC with milliseconds, as the API writes `created`/`updated`.
fn now_millis() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn find(state: &State, calendar: &str, id: &str) -> Option<Value> {
    state
        .calendars
        .get(calendar)?
        .events
        .iter()
        .find(|e| e["id"] == id)
        .cloned()
}

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

type Answer = Result<Response, Response>;

fn finish(r: Answer) -> Response {
    r.unwrap_or_else(|e| e)
}

async fn insert(
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
        let mut fields = writable(&body);
        strip_nulls_map(&mut fields);
        validate(&Value::Object(fields.clone()))?;
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

fn strip_nulls_map(m: &mut Map<String, Value>) {
    let mut v = Value::Object(std::mem::take(m));
    strip_nulls(&mut v);
    if let Value::Object(o) = v {
        *m = o;
    }
}

async fn get_event(
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
    let mut fields = if patch {
        let mut merged = Value::Object(writable(&existing));
        merge(&mut merged, &Value::Object(writable(&body)));
        match merged {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    } else {
        writable(&body)
    };
    strip_nulls_map(&mut fields);
    validate(&Value::Object(fields.clone()))?;
    let event = store(&mut state, calendar, id, fields, Some(&existing));
    Ok(Json(event).into_response())
}

async fn update(
    AxState(sandbox): AxState<Arc<Sandbox>>,
    Path((calendar, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    finish(write(&sandbox, &calendar, &id, &headers, &body, false))
}

async fn patch(
    AxState(sandbox): AxState<Arc<Sandbox>>,
    Path((calendar, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    finish(write(&sandbox, &calendar, &id, &headers, &body, true))
}

async fn delete_event(
    AxState(sandbox): AxState<Arc<Sandbox>>,
    Path((calendar, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    finish((|| {
        authorize(&sandbox, &headers)?;
        let mut state = lock(&sandbox.google);
        let existing = find(&state, &calendar, &id).ok_or_else(not_found)?;
        if existing["status"] == "cancelled" {
            return Err(error(
                StatusCode::GONE,
                "global",
                "deleted",
                "Resource has been deleted",
                None,
            ));
        }
        precondition(&headers, &existing)?;
        let mut fields = writable(&existing);
        fields.insert("status".into(), json!("cancelled"));
        store(&mut state, &calendar, &id, fields, Some(&existing));
        Ok(StatusCode::NO_CONTENT.into_response())
    })())
}

/// A new channel's lifetime when the request sets none [G: the reference names no default here].
const CHANNEL_DAYS: i64 = 7;

async fn watch(
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

async fn stop(AxState(sandbox): AxState<Arc<Sandbox>>, headers: HeaderMap, body: Bytes) -> Response {
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
fn notify(state: &mut State, calendar: &str, what: &str) {
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

const MAX_PAGE: usize = 2500;
const DEFAULT_PAGE: usize = 250;

async fn list(
    AxState(sandbox): AxState<Arc<Sandbox>>,
    Path(calendar): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    finish((|| {
        authorize(&sandbox, &headers)?;
        let q = form_pairs(query.as_deref().unwrap_or_default());
        let bool_param = |k: &str| -> Result<bool, Response> {
            match param(&q, k) {
                None | Some("false") => Ok(false),
                Some("true") => Ok(true),
                Some(_) => Err(bad_request(
                    "invalidBoolean",
                    &format!("Invalid boolean value for {k}."),
                )),
            }
        };
        let show_deleted = bool_param("showDeleted")?;
        let page_size = match param(&q, "maxResults") {
            None => DEFAULT_PAGE,
            Some(n) => match n.parse::<usize>() {
                Ok(n) if n >= 1 => n.min(MAX_PAGE),
                _ => return Err(bad_request("invalid", "Invalid value for: maxResults")),
            },
        };
        let filter = list_query::Filter::parse(&q, bool_param("singleEvents")?)?;
        let state = lock(&sandbox.google);
        let since = match param(&q, "syncToken") {
            None => None,
            Some(token) => {
                let filtered = [
                    "iCalUID",
                    "orderBy",
                    "privateExtendedProperty",
                    "q",
                    "sharedExtendedProperty",
                    "timeMin",
                    "timeMax",
                    "updatedMin",
                ]
                .iter()
                .find(|k| param(&q, k).is_some());
                if let Some(k) = filtered {
                    return Err(bad_request(
                        "invalid",
                        &format!("Sync token cannot be used with the {k} parameter."),
                    ));
                }
                match parse_sync_token(token) {
                    Some((epoch, writes)) if epoch == state.sync_epoch && writes <= state.writes => {
                        Some(writes)
                    }
                    _ => {
                        return Err(error(
                            StatusCode::GONE,
                            "calendar",
                            "fullSyncRequired",
                            "Sync token is no longer valid, a full sync is required.",
                            Some(("parameter", "syncToken")),
                        ))
                    }
                }
            }
        };
        let offset = match param(&q, "pageToken") {
            None => 0,
            Some(t) => t
                .strip_prefix("pg")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| bad_request("invalid", "Invalid page token value."))?,
        };
        let empty = Calendar::default();
        let cal = state.calendars.get(&calendar).unwrap_or(&empty);
        let mut matching: Vec<&Value> = cal
            .events
            .iter()
            .filter(|e| match since {
                Some(w) => {
                    cal.changed
                        .get(e["id"].as_str().unwrap_or_default())
                        .copied()
                        .unwrap_or(0)
                        > w
                }
                None => show_deleted || filter.lists_deleted() || e["status"] != "cancelled",
            })
            .filter(|e| filter.matches(e))
            .collect();
        filter.sort(&mut matching);
        let page: Vec<Value> = matching
            .iter()
            .skip(offset)
            .take(page_size)
            .map(|e| (*e).clone())
            .collect();
        let mut answer = json!({
            "kind": "calendar#events",
            "etag": format!("\"p{:x}\"", state.last_etag),
            "summary": calendar_email(&calendar),
            "description": "",
            "updated": now_millis(),
            "timeZone": "UTC",
            "accessRole": "owner",
            "defaultReminders": [{"method": "popup", "minutes": 30}],
            "items": page,
        });
        if offset + page_size < matching.len() {
            answer["nextPageToken"] = json!(format!("pg{}", offset + page_size));
        } else {
            answer["nextSyncToken"] = json!(sync_token(state.sync_epoch, state.writes));
        }
        Ok(Json(answer).into_response())
    })())
}

fn sync_token(epoch: u64, writes: u64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("sync:{epoch}:{writes}"))
}

fn parse_sync_token(token: &str) -> Option<(u64, u64)> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(token).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let mut parts = text.strip_prefix("sync:")?.split(':');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_event_ids_are_base32hex_of_5_to_1024() {
        assert!(valid_event_id("abcde01234"));
        assert!(!valid_event_id("abcd"));
        assert!(!valid_event_id("abcdw12345"));
        assert!(!valid_event_id("ABCDE12345"));
        assert!(valid_event_id(&new_event_id()));
    }

    #[test]
    fn google_patch_merges_objects_replaces_arrays_and_null_deletes() {
        let mut t = json!({"a": [1, 2], "ext": {"private": {"k": "v", "x": "y"}}, "s": "keep"});
        merge(
            &mut t,
            &json!({"a": [3], "ext": {"private": {"k": null, "n": "m"}}}),
        );
        assert_eq!(
            t,
            json!({"a": [3], "ext": {"private": {"x": "y", "n": "m"}}, "s": "keep"})
        );
    }

    #[test]
    fn google_time_zones_are_checked_by_shape() {
        assert!(valid_time_zone("Europe/London"));
        assert!(valid_time_zone("America/Argentina/Buenos_Aires"));
        assert!(valid_time_zone("UTC"));
        assert!(!valid_time_zone("Mars/Olympus"));
        assert!(!valid_time_zone("Europe/"));
    }
}
