//! Sandbox of Light Blue's contact-form API (`POST api.php`, `POST apiCheck.php`).
//!
//! Faithful to the documented line protocol (CRM_APIS.md §3): a key-value form body; `key` and
//! `type` required (names case-insensitive, as Light Blue's own plugins send `Key`/`Type`);
//! `type` must be `contact form`; the answer is HTTP 200 with `code` then CR then a message:
//! `0` success, `-3` invalid type or no valid parameters, `-4` duplicate request (the same `ID`
//! and `Source` again), `-20` HTTPS required. Accepted submissions land in the inbox (the state).
//!
//! Assumptions (undocumented): a wrong key answers `-1` with a message; the success body is
//! `0` alone; HTTPS is judged by `X-Forwarded-Proto` when `lightblue_require_https` is set.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{lock, Sandbox};

#[derive(Debug, Default, Serialize)]
pub struct State {
    /// Accepted submissions, each as its parameters (the key left out).
    pub inbox: Vec<Value>,
    /// Answers given with `-4` (repeats of an `ID` and `Source`).
    pub duplicates: usize,
    #[serde(skip)]
    seen: HashSet<(String, String)>,
}

/// Parameters the API documents (contact fields, the message and the advanced ones).
const KNOWN: &[&str] = &[
    "message",
    "contactnamefull",
    "contactnamefirst",
    "contactnamelast",
    "contactnamemaiden",
    "contactrole",
    "contacttitle",
    "contactdateofbirth",
    "contactsource",
    "contacttag",
    "contactmailinglist",
    "contactemail",
    "contactphonehome",
    "contactphonework",
    "contactphonemobile",
    "contactphone",
    "contactphonetype",
    "contactwebsite",
    "source",
    "sourceapiversion",
    "id",
    "dateformat",
    "decimalseparator",
];

pub fn routes() -> Router<Arc<Sandbox>> {
    Router::new()
        .route("/api.php", post(submit))
        .route("/apiCheck.php", post(check))
}

fn lines(code: i32, message: &str) -> Response {
    let body = if message.is_empty() {
        code.to_string()
    } else {
        format!("{code}\r{message}")
    };
    (
        StatusCode::OK,
        [("content-type", "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

pub fn fault(status: StatusCode) -> Response {
    (status, "Service temporarily unavailable").into_response()
}

fn params(body: &Bytes) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn get<'a>(p: &'a [(String, String)], name: &str) -> Option<&'a str> {
    p.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn https_refused(sandbox: &Sandbox, headers: &HeaderMap) -> bool {
    sandbox.accounts.lightblue_require_https
        && headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) != Some("https")
}

async fn submit(AxState(sandbox): AxState<Arc<Sandbox>>, headers: HeaderMap, body: Bytes) -> Response {
    if https_refused(&sandbox, &headers) {
        return lines(-20, "API requests must be sent over HTTPS");
    }
    let p = params(&body);
    if get(&p, "key") != Some(sandbox.accounts.lightblue_key.as_str()) {
        return lines(-1, "Invalid API key");
    }
    if !get(&p, "type").is_some_and(|t| t.eq_ignore_ascii_case("contact form")) {
        return lines(-3, "Invalid type");
    }
    let mut record = Map::new();
    for (k, v) in &p {
        let lower = k.to_ascii_lowercase();
        if KNOWN.contains(&lower.as_str()) {
            record.insert(k.clone(), Value::String(v.clone()));
        }
    }
    let has_content = record.keys().any(|k| {
        !matches!(
            k.to_ascii_lowercase().as_str(),
            "source" | "sourceapiversion" | "id" | "dateformat" | "decimalseparator"
        )
    });
    if !has_content {
        return lines(-3, "No valid parameters");
    }
    let mut state = lock(&sandbox.lightblue);
    if let (Some(id), Some(source)) = (get(&p, "id"), get(&p, "source")) {
        if !state.seen.insert((id.to_owned(), source.to_owned())) {
            state.duplicates += 1;
            return lines(-4, "Duplicate request");
        }
    }
    state.inbox.push(Value::Object(record));
    lines(0, "")
}

async fn check(AxState(sandbox): AxState<Arc<Sandbox>>, headers: HeaderMap, body: Bytes) -> Response {
    if https_refused(&sandbox, &headers) {
        return lines(-20, "API requests must be sent over HTTPS");
    }
    match get(&params(&body), "key") {
        Some(k) if k == sandbox.accounts.lightblue_key => lines(0, ""),
        _ => lines(-1, "Invalid API key"),
    }
}
