//! Sandbox of VSCO Workspace (formerly Tave) API v2 and the legacy New Lead API, after
//! ../shared/CRM_APIS.md §1 and the vendor's OpenAPI document.
//!
//! Served under `/tave`: the REST API at `/api/v2/…` (`/job`, `/job/{id}`, `POST /job/-/worksheet`,
//! `GET /job/{jobId}/worksheet`, `/address-book`, `/job-contact`, `/event`, `/custom-field`, each
//! with `/{id}`), the New Lead API at `/webservice/create-lead/{studioId}`.
//!
//! What it reproduces [V]: `X-API-KEY` or bearer auth (401 `Error` otherwise); singular paths;
//! lowercase ULID ids; `created`/`modified` (bumped on every write); `links.self.href` and
//! `managerHref`; the collection envelope with `page`/`pageSize` (10..=100)/`sortBy`; 201 on create,
//! 200 on get and update, 204 on delete; 400 `validation-error` with a per-field `detail` object;
//! `externalMappings` (id 1..64, url 12..255) that cannot be changed once set; custom-field values
//! that are strings naming a known custom field; Event's `additionalProperties: false`; read-only
//! address fields (`latitude`, `longitude`, `googlePlaceId`, `timezone`); a worksheet that creates
//! a job with its contacts and events all or nothing; 429 `quota-limit` with `Retry-After` (through
//! the fault injection in `super`); New Lead API answering exactly `OK`.
//!
//! Assumptions, where the vendor documents nothing ([U]/[G] in CRM_APIS.md):
//! - An unknown id answers 404 with the `Error` shape (`type: "unknown"`, `title: "Not Found"`).
//! - `PUT` merges: keys absent from the body keep their values; a present `customFields` array
//!   replaces the job's values. Read-only properties sent on `POST`/`PUT` are ignored.
//! - Unknown properties of a Job or a contact are ignored (only Event and Address are closed).
//! - A Job's `name` is limited to 255 characters like every other name in the spec.
//! - Linking the same contact to the same job twice is a validation error on `contactId`.
//! - Deleting a job deletes its events and job-contact links; deleting a contact its links.
//! - An empty collection has `totalPages: 0` (`totalItems / pageSize`, rounded up).
//! - New Lead API errors answer 400 (bad or missing fields), 403 (wrong `SecretKey`) or 404
//!   (unknown studio) with a plain-text body `Error: <reason>`: clients only check for `OK`.
//! - `managerHref` points at `https://workspace.vsco.co/app/…/{id}` (shape not documented).
//!
//! Layout: this file routes, authenticates and answers; `kind` describes each resource,
//! `collection` serves lists, `validate` (with `contacts`, `events`, `custom_fields`) checks
//! what is written, `entities` stores it, `jobs` serves the worksheet and `lead` the New Lead API.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State as Shared;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{lock, Sandbox};

mod collection;
mod contacts;
mod custom_fields;
mod entities;
mod events;
mod jobs;
mod kind;
mod lead;
mod validate;

use collection::list;
use entities::{create, delete, update};
use jobs::{create_worksheet, worksheet};
use kind::Kind;
use lead::{create_lead, lead_fields};

/// Everything the studio holds, as full API objects (`GET /_sandbox/state` under `"tave"`).
#[derive(Debug, Default, Serialize)]
pub struct State {
    pub jobs: Vec<Value>,
    pub contacts: Vec<Value>,
    pub job_contacts: Vec<Value>,
    pub events: Vec<Value>,
    pub custom_fields: Vec<Value>,
    pub leads: Vec<Value>,
    /// The last write timestamp given out: each write gets a later one.
    #[serde(skip)]
    last_stamp: Option<chrono::DateTime<chrono::Utc>>,
}

pub fn routes() -> Router<Arc<Sandbox>> {
    Router::new()
        .route("/api/v2/*rest", any(api))
        .route("/webservice/create-lead/:studio", post(create_lead))
        .route("/webservice/create-lead", get(lead_fields))
}

/// An injected fault in the API's own shape: 429 is `quota-limit` with `Retry-After`.
pub fn fault(status: StatusCode, retry_after: u64) -> Response {
    if status == StatusCode::TOO_MANY_REQUESTS {
        let mut r = error(
            status,
            "quota-limit",
            "Too Many Requests",
            "Exceeded request quota, see Retry-After header",
        );
        r.headers_mut().insert(
            header::RETRY_AFTER,
            retry_after.to_string().parse().expect("digits"),
        );
        return r;
    }
    let title = status.canonical_reason().unwrap_or("Error");
    error(status, "unknown", title, "injected failure")
}

type Obj = Map<String, Value>;
/// A validation error's `detail`: property path → message.
type Detail = BTreeMap<String, String>;

/// A JSON answer.
fn reply(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The API's `Error` object.
fn error(status: StatusCode, kind: &str, title: &str, detail: &str) -> Response {
    let body = json!({"type": kind, "title": title, "detail": detail, "status": status.as_u16()});
    reply(status, &body)
}

/// A `validation-error`: its `detail` names each property path with its message.
fn invalid(detail: Detail) -> Response {
    let body = json!({
        "type": "validation-error",
        "title": "Validation Error",
        "detail": detail,
        "status": 400,
    });
    reply(StatusCode::BAD_REQUEST, &body)
}

fn invalid_one(field: &str, message: &str) -> Response {
    invalid(Detail::from([(field.to_owned(), message.to_owned())]))
}

fn method_not_allowed(hint: &str) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "unknown",
        "Method Not Allowed",
        hint,
    )
}

fn not_found(what: &str) -> Response {
    // [U] the spec declares no 404; the Error shape is our choice.
    error(
        StatusCode::NOT_FOUND,
        "unknown",
        "Not Found",
        &format!("{what} not found"),
    )
}

fn authorized(sandbox: &Sandbox, headers: &HeaderMap) -> bool {
    let key = &sandbox.accounts.tave_api_key;
    let header_is = |name: header::HeaderName, prefix: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix(prefix))
            .is_some_and(|v| v == key)
    };
    header_is(header::HeaderName::from_static("x-api-key"), "") || header_is(header::AUTHORIZATION, "Bearer ")
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    form_pairs(uri.query().unwrap_or_default())
}

/// `application/x-www-form-urlencoded` pairs.
fn form_pairs(text: &str) -> Vec<(String, String)> {
    let mut url = reqwest::Url::parse("http://sandbox.invalid/").expect("static url");
    url.set_query(Some(text));
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The first value of `key` among query or form pairs.
fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A write timestamp: UTC with milliseconds, strictly after every earlier one, so `modified`
/// always moves and `sortBy=modified desc` has no ties.
fn stamp(st: &mut State) -> String {
    let now = chrono::Utc::now();
    // whole milliseconds, as written: two writes in one millisecond must not print alike
    let now = now - chrono::Duration::nanoseconds(i64::from(now.timestamp_subsec_nanos() % 1_000_000));
    let at = match st.last_stamp {
        Some(last) if last >= now => last + chrono::Duration::milliseconds(1),
        _ => now,
    };
    st.last_stamp = Some(at);
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn api(
    Shared(sandbox): Shared<Arc<Sandbox>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&sandbox, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "unknown",
            "Unauthorized",
            "API key is missing or invalid",
        );
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let base = format!("http://{host}/tave/api/v2");
    let rest = uri.path().strip_prefix("/api/v2/").unwrap_or_default();
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let mut st = lock(&sandbox.tave);
    let st = &mut *st;
    match (method.clone(), segments.as_slice()) {
        (Method::POST, ["job", "-", "worksheet"]) => match parse_body(&body) {
            Ok(b) => create_worksheet(st, &base, b),
            Err(r) => *r,
        },
        (Method::GET, ["job", id, "worksheet"]) => match find(st, Kind::Job, id) {
            Some(_) => reply(StatusCode::OK, &worksheet(st, id)),
            None => not_found("job"),
        },
        (m, [segment]) if Kind::parse(segment).is_some() => {
            let kind = Kind::parse(segment).expect("checked");
            match m {
                Method::GET => list(st, kind, &query_pairs(&uri)),
                Method::POST => match parse_body(&body) {
                    Ok(b) => create(st, &base, kind, b),
                    Err(r) => *r,
                },
                _ => method_not_allowed("use GET or POST"),
            }
        }
        (m, [segment, id]) if Kind::parse(segment).is_some() => {
            let kind = Kind::parse(segment).expect("checked");
            let Some(index) = position(st, kind, id) else {
                return not_found(kind.title());
            };
            match m {
                Method::GET => reply(StatusCode::OK, &kind.list(st)[index]),
                Method::PUT => match parse_body(&body) {
                    Ok(b) => update(st, kind, index, b),
                    Err(r) => *r,
                },
                Method::DELETE => {
                    delete(st, kind, id);
                    StatusCode::NO_CONTENT.into_response()
                }
                _ => method_not_allowed("use GET, PUT or DELETE"),
            }
        }
        _ => not_found("resource"),
    }
}

fn parse_body(body: &Bytes) -> Result<Obj, Box<Response>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(Box::new(invalid_one("body", "must be a JSON object"))),
        Err(_) => Err(Box::new(invalid_one("body", "is not valid JSON"))),
    }
}

fn position(st: &State, kind: Kind, id: &str) -> Option<usize> {
    kind.list(st).iter().position(|v| v["id"] == id)
}

fn find<'a>(st: &'a State, kind: Kind, id: &str) -> Option<&'a Value> {
    position(st, kind, id).map(|i| &kind.list(st)[i])
}
