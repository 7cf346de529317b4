//! Sandbox of the Stripe API v1, for what fieldsync uses: customers and their metadata.
//!
//! Faithful to the documented rules (CRM_APIS.md §5): secret-key auth (Bearer or Basic),
//! form-encoded bodies with bracket keys, unknown parameters refused, metadata merge and unset
//! (`metadata[k]=` removes a key, `metadata=` removes all) within 50 keys, 40-character keys and
//! 500-character values, and the idempotency layer: the first answer to an `Idempotency-Key` is
//! saved and replayed (with `Idempotent-Replayed: true`), a reuse with other parameters is a 400
//! `idempotency_error`, validation failures are not saved. Rate limits (injected) answer 429
//! before the idempotency layer, as Stripe's limiters do. Every answer carries `Request-Id` and
//! `Stripe-Version`, POSTs echo their `Idempotency-Key`; `expand[]`/`expand[N]` of customer
//! properties is accepted (nothing here is expandable into an object) and other paths refused;
//! lists page newest first with `limit`, `starting_after`/`ending_before` and `has_more`, search
//! with `page`/`next_page`, as the official libraries' auto-paging expects.
//!
//! Assumptions (not documented by Stripe): search is immediately consistent here (Stripe's
//! is eventually consistent, about a minute); `Stripe-Should-Retry: true` is sent on injected
//! 5xx; the concurrent same-key 409 is not reproduced (requests are served one at a time);
//! `Original-Request` (the first answer's `Request-Id`) is sent on answers to keyed POSTs; the
//! default `Stripe-Version` is [`DEFAULT_VERSION`]; search page tokens are `page_<offset>`.

// Error answers are whole responses, built at most once per request: boxing them buys nothing.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{lock, Sandbox};

mod search;

const MAX_KEYS: usize = 50;
const MAX_KEY_CHARS: usize = 40;
const MAX_VALUE_CHARS: usize = 500;

#[derive(Debug, Default, Serialize)]
pub struct State {
    /// Customers in creation order (deleted ones are removed, as Stripe's list does).
    pub customers: Vec<Value>,
    /// How many idempotency keys are saved.
    pub idempotency_keys: usize,
    #[serde(skip)]
    saved: HashMap<String, Saved>,
}

#[derive(Debug)]
struct Saved {
    fingerprint: String,
    status: StatusCode,
    body: Value,
    /// The `Request-Id` of the first answer, sent as `Original-Request` on replays.
    request_id: String,
}

type Params = Vec<(String, String)>;

pub fn routes() -> Router<Arc<Sandbox>> {
    Router::new()
        .route("/v1/customers", post(create).get(list))
        .route("/v1/customers/search", get(search))
        .route("/v1/customers/:id", post(update).get(retrieve).delete(delete))
        .layer(axum::middleware::from_fn(stripe_headers))
}

/// The API version answers name when the request names none (an account's default version).
const DEFAULT_VERSION: &str = "2025-09-30.clover";

/// The headers Stripe puts on every answer: `Request-Id`, `Stripe-Version` (the one requested,
/// else the account's) and, on POSTs that sent one, the `Idempotency-Key` echoed.
async fn stripe_headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let version = request
        .headers()
        .get("stripe-version")
        .cloned()
        .unwrap_or(HeaderValue::from_static(DEFAULT_VERSION));
    let key = (request.method() == Method::POST)
        .then(|| request.headers().get("idempotency-key").cloned())
        .flatten();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if !headers.contains_key("request-id") {
        headers.insert("request-id", request_id().parse().expect("ascii"));
    }
    headers.insert("stripe-version", version);
    if let Some(key) = key {
        headers.insert("idempotency-key", key);
    }
    response
}

/// An error in Stripe's envelope.
fn error(status: StatusCode, kind: &str, code: Option<&str>, message: &str, param: Option<&str>) -> Response {
    let mut e = json!({"type": kind, "message": message});
    if let Some(c) = code {
        e["code"] = json!(c);
    }
    if let Some(p) = param {
        e["param"] = json!(p);
    }
    let mut r = (status, Json(json!({ "error": e }))).into_response();
    r.headers_mut()
        .insert("request-id", request_id().parse().expect("ascii"));
    r
}

fn request_id() -> String {
    format!("req_{}", &super::ulid()[12..])
}

pub fn fault(status: StatusCode) -> Response {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return error(
            status,
            "invalid_request_error",
            Some("rate_limit"),
            "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests.",
            None,
        );
    }
    let mut r = error(
        status,
        "api_error",
        None,
        "An unknown error occurred while processing your request.",
        None,
    );
    if status.is_server_error() {
        r.headers_mut()
            .insert("stripe-should-retry", "true".parse().expect("ascii"));
    }
    r
}

/// The refusal of a request without the secret key (`Authorization: Bearer`, or Basic with the
/// key as user name).
fn unauthorized(sandbox: &Sandbox, headers: &HeaderMap) -> Option<Response> {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            if let Some(token) = v.strip_prefix("Bearer ") {
                return Some(token.trim().to_owned());
            }
            let basic = v.strip_prefix("Basic ")?;
            let decoded =
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, basic.trim()).ok()?;
            let text = String::from_utf8(decoded).ok()?;
            Some(text.split(':').next().unwrap_or("").to_owned())
        });
    match given {
        None => Some(error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            None,
        )),
        Some(key) if key == sandbox.accounts.stripe_secret_key => None,
        Some(key) => {
            let tail: String = key.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
            Some(error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                None,
                &format!("Invalid API Key provided: sk_****{tail}"),
                None,
            ))
        }
    }
}

fn parse_form(body: &Bytes) -> Params {
    form_urlencoded::parse(body).into_owned().collect()
}

/// Runs a POST through the idempotency layer.
fn idempotent(
    sandbox: &Sandbox,
    headers: &HeaderMap,
    fingerprint: String,
    run: impl FnOnce(&mut State) -> (StatusCode, Value, bool),
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut state = lock(&sandbox.stripe);
    if let Some(key) = &key {
        if key.len() > 255 {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                "Idempotency keys can be up to 255 characters long.",
                None,
            );
        }
        if let Some(saved) = state.saved.get(key) {
            if saved.fingerprint != fingerprint {
                let mut r = error(
                    StatusCode::BAD_REQUEST,
                    "idempotency_error",
                    None,
                    &format!("Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."),
                    None,
                );
                r.headers_mut()
                    .insert("stripe-should-retry", "false".parse().expect("ascii"));
                return r;
            }
            let mut r = (saved.status, Json(saved.body.clone())).into_response();
            r.headers_mut()
                .insert("idempotent-replayed", "true".parse().expect("ascii"));
            r.headers_mut()
                .insert("original-request", saved.request_id.parse().expect("ascii"));
            return r;
        }
    }
    let (status, body, save) = run(&mut state);
    let id = request_id();
    let has_key = key.is_some();
    if let (Some(key), true) = (key, save) {
        state.saved.insert(
            key,
            Saved {
                fingerprint,
                status,
                body: body.clone(),
                request_id: id.clone(),
            },
        );
        state.idempotency_keys = state.saved.len();
    }
    let mut r = (status, Json(body)).into_response();
    r.headers_mut().insert("request-id", id.parse().expect("ascii"));
    if has_key {
        r.headers_mut()
            .insert("original-request", id.parse().expect("ascii"));
    }
    r
}

fn fingerprint(method: &Method, path: &str, params: &Params) -> String {
    let mut sorted = params.clone();
    sorted.sort();
    format!("{method} {path} {sorted:?}")
}

/// A validation failure: an error body, not saved by the idempotency layer.
fn invalid(message: &str, param: &str) -> (StatusCode, Value, bool) {
    (
        StatusCode::BAD_REQUEST,
        json!({"error": {"type": "invalid_request_error", "code": "parameter_invalid", "message": message, "param": param}}),
        false,
    )
}

/// The customer properties Stripe can expand. None of them holds an object in the sandbox, so
/// expanding one changes nothing; another path is refused as Stripe refuses it.
const EXPANDABLE: &[&str] = &[
    "cash_balance",
    "default_source",
    "discount.coupon",
    "invoice_credit_balance",
    "invoice_settings.default_payment_method",
    "sources",
    "subscriptions",
    "tax",
    "tax_ids",
    "test_clock",
];

/// `expand[]=x` or `expand[0]=x` (the official libraries send either form): `None` when `name`
/// is no expand parameter, else whether `value` can be expanded.
fn expand_param(name: &str, value: &str) -> Option<Result<(), (StatusCode, Value, bool)>> {
    let index = name.strip_prefix("expand[")?.strip_suffix(']')?;
    if !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if EXPANDABLE.contains(&value) {
        return Some(Ok(()));
    }
    Some(Err((
        StatusCode::BAD_REQUEST,
        json!({"error": {"type": "invalid_request_error",
            "message": format!("This property cannot be expanded ({value}).")}}),
        false,
    )))
}

/// Refuses query parameters other than `allowed` and valid `expand[]` entries.
fn check_query(raw: Option<&str>, allowed: &[&str]) -> Result<Params, Response> {
    let params: Params = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    for (name, value) in &params {
        match expand_param(name, value) {
            Some(Ok(())) => continue,
            Some(Err((status, body, _))) => return Err((status, Json(body)).into_response()),
            None if allowed.contains(&name.split('[').next().unwrap_or_default()) => continue,
            None => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some("parameter_unknown"),
                    &format!("Received unknown parameter: {name}"),
                    Some(name),
                ))
            }
        }
    }
    Ok(params)
}

/// Applies form parameters to a customer; an error names the parameter.
fn apply(customer: &mut Value, params: &Params) -> Result<(), (StatusCode, Value, bool)> {
    let mut metadata: Map<String, Value> = customer["metadata"].as_object().cloned().unwrap_or_default();
    for (name, value) in params {
        if let Some(expand) = expand_param(name, value) {
            expand?;
            continue;
        }
        if let Some(rest) = name.strip_prefix("metadata[") {
            let Some(key) = rest
                .strip_suffix(']')
                .filter(|k| !k.contains('[') && !k.contains(']'))
            else {
                return Err(invalid("Metadata keys may not contain `[` or `]`.", name));
            };
            if key.chars().count() > MAX_KEY_CHARS {
                return Err(invalid("Metadata keys can have at most 40 characters.", name));
            }
            if value.chars().count() > MAX_VALUE_CHARS {
                return Err(invalid("Metadata values can have at most 500 characters.", name));
            }
            if value.is_empty() {
                metadata.remove(key);
            } else {
                metadata.insert(key.to_owned(), json!(value));
            }
            continue;
        }
        match name.as_str() {
            "metadata" if value.is_empty() => metadata.clear(),
            "name" | "email" | "description" | "phone" => {
                customer[name.as_str()] = if value.is_empty() {
                    Value::Null
                } else {
                    json!(value)
                };
            }
            _ => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    json!({"error": {"type": "invalid_request_error", "code": "parameter_unknown",
                        "message": format!("Received unknown parameter: {name}"), "param": name}}),
                    false,
                ))
            }
        }
    }
    if metadata.len() > MAX_KEYS {
        return Err(invalid("You can have at most 50 metadata keys.", "metadata"));
    }
    customer["metadata"] = Value::Object(metadata);
    Ok(())
}

async fn create(
    axum::extract::State(sandbox): axum::extract::State<Arc<Sandbox>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = unauthorized(&sandbox, &headers) {
        return r;
    }
    let params = parse_form(&body);
    let fp = fingerprint(&Method::POST, "/v1/customers", &params);
    idempotent(&sandbox, &headers, fp, |state| {
        let mut customer = json!({
            "id": format!("cus_{}", &super::ulid()[10..]),
            "object": "customer",
            "created": chrono::Utc::now().timestamp(),
            "livemode": false,
            "name": null, "email": null, "description": null, "phone": null,
            "balance": 0, "currency": null, "delinquent": false,
            "invoice_prefix": super::ulid()[18..].to_uppercase(),
            "metadata": {},
            "address": null, "shipping": null, "default_source": null, "discount": null,
            "invoice_settings": {"custom_fields": null, "default_payment_method": null,
                "footer": null, "rendering_options": null},
            "next_invoice_sequence": 1, "preferred_locales": [], "tax_exempt": "none",
            "test_clock": null,
        });
        if let Err(e) = apply(&mut customer, &params) {
            return e;
        }
        state.customers.push(customer.clone());
        (StatusCode::OK, customer, true)
    })
}

async fn update(
    axum::extract::State(sandbox): axum::extract::State<Arc<Sandbox>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = unauthorized(&sandbox, &headers) {
        return r;
    }
    let params = parse_form(&body);
    let fp = fingerprint(&Method::POST, &format!("/v1/customers/{id}"), &params);
    idempotent(&sandbox, &headers, fp, |state| {
        let Some(customer) = state.customers.iter_mut().find(|c| c["id"] == id.as_str()) else {
            return no_such_customer(&id);
        };
        let mut changed = customer.clone();
        if let Err(e) = apply(&mut changed, &params) {
            return e;
        }
        *customer = changed.clone();
        (StatusCode::OK, changed, true)
    })
}

fn no_such_customer(id: &str) -> (StatusCode, Value, bool) {
    (
        StatusCode::NOT_FOUND,
        json!({"error": {"type": "invalid_request_error", "code": "resource_missing",
            "message": format!("No such customer: '{id}'"), "param": "id"}}),
        true,
    )
}

async fn retrieve(
    axum::extract::State(sandbox): axum::extract::State<Arc<Sandbox>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Some(r) = unauthorized(&sandbox, &headers) {
        return r;
    }
    if let Err(r) = check_query(raw.as_deref(), &[]) {
        return r;
    }
    let state = lock(&sandbox.stripe);
    match state.customers.iter().find(|c| c["id"] == id.as_str()) {
        Some(c) => Json(c.clone()).into_response(),
        None => {
            let (status, body, _) = no_such_customer(&id);
            (status, Json(body)).into_response()
        }
    }
}

async fn delete(
    axum::extract::State(sandbox): axum::extract::State<Arc<Sandbox>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unauthorized(&sandbox, &headers) {
        return r;
    }
    let mut state = lock(&sandbox.stripe);
    let before = state.customers.len();
    state.customers.retain(|c| c["id"] != id.as_str());
    if state.customers.len() == before {
        let (status, body, _) = no_such_customer(&id);
        return (status, Json(body)).into_response();
    }
    Json(json!({"id": id, "object": "customer", "deleted": true})).into_response()
}

/// The `limit` parameter: 1 to 100, 10 when absent.
fn limit(params: &Params) -> Result<usize, Response> {
    let Some((_, text)) = params.iter().find(|(k, _)| k == "limit") else {
        return Ok(10);
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=100).contains(&n) => Ok(n),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("parameter_invalid_integer"),
            "This value must be between 1 and 100.",
            Some("limit"),
        )),
    }
}

fn get_param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `GET /v1/customers`: newest first, `limit`, cursor paging with `starting_after` /
/// `ending_before` and `has_more`, filtered by `email`.
async fn list(
    axum::extract::State(sandbox): axum::extract::State<Arc<Sandbox>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Some(r) = unauthorized(&sandbox, &headers) {
        return r;
    }
    let allowed = [
        "limit",
        "email",
        "starting_after",
        "ending_before",
        "created",
        "test_clock",
    ];
    let params = match check_query(raw.as_deref(), &allowed) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let limit = match limit(&params) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let state = lock(&sandbox.stripe);
    let email = get_param(&params, "email");
    let shown = |c: &&Value| email.map_or(true, |e| c["email"].as_str() == Some(e));
    let newest_first: Vec<&Value> = state.customers.iter().rev().collect();
    let cursor = |param: &str| -> Result<Option<usize>, Response> {
        let Some(id) = get_param(&params, param) else {
            return Ok(None);
        };
        match newest_first.iter().position(|c| c["id"] == id) {
            Some(i) => Ok(Some(i)),
            None => {
                let (status, mut body, _) = no_such_customer(id);
                body["error"]["param"] = json!(param);
                Err((status, Json(body)).into_response())
            }
        }
    };
    let (after, before) = match (cursor("starting_after"), cursor("ending_before")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let (data, has_more): (Vec<&Value>, bool) = match (after, before) {
        (_, Some(at)) => {
            let head: Vec<&Value> = newest_first[..at].iter().copied().filter(shown).collect();
            let from = head.len().saturating_sub(limit);
            (head[from..].to_vec(), from > 0)
        }
        (at, None) => {
            let from = at.map_or(0, |i| i + 1);
            let rest: Vec<&Value> = newest_first[from..].iter().copied().filter(shown).collect();
            (rest.iter().take(limit).copied().collect(), rest.len() > limit)
        }
    };
    let data: Vec<Value> = data.into_iter().cloned().collect();
    Json(json!({"object": "list", "url": "/v1/customers", "has_more": has_more, "data": data}))
        .into_response()
}

/// `GET /v1/customers/search`: `query` in the search language ([`search`]; other forms are a 400
/// with the reason), paged with `limit`, `page` and `next_page`.
async fn search(
    axum::extract::State(sandbox): axum::extract::State<Arc<Sandbox>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Some(r) = unauthorized(&sandbox, &headers) {
        return r;
    }
    let params = match check_query(raw.as_deref(), &["query", "limit", "page"]) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let limit = match limit(&params) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let offset = match get_param(&params, "page") {
        None => 0,
        Some(token) => match token.strip_prefix("page_").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    None,
                    "Invalid page token.",
                    Some("page"),
                )
            }
        },
    };
    let query = match search::Query::parse(get_param(&params, "query").unwrap_or("")) {
        Ok(q) => q,
        Err(why) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("parameter_invalid_string"),
                &format!("Invalid search query: {why}."),
                Some("query"),
            )
        }
    };
    let state = lock(&sandbox.stripe);
    let matching: Vec<&Value> = state
        .customers
        .iter()
        .rev()
        .filter(|c| query.matches(c))
        .collect();
    let data: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|c| (*c).clone())
        .collect();
    let has_more = matching.len() > offset + limit;
    Json(json!({
        "object": "search_result",
        "url": "/v1/customers/search",
        "has_more": has_more,
        "next_page": if has_more { json!(format!("page_{}", offset + limit)) } else { Value::Null },
        "data": data,
    }))
    .into_response()
}
