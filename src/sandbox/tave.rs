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

use super::{lock, ulid, Sandbox};

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

fn error(status: StatusCode, kind: &str, title: &str, detail: &str) -> Response {
    let body = json!({"type": kind, "title": title, "detail": detail, "status": status.as_u16()});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn invalid(detail: Detail) -> Response {
    let body = json!({
        "type": "validation-error",
        "title": "Validation Error",
        "detail": detail,
        "status": 400,
    });
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn invalid_one(field: &str, message: &str) -> Response {
    invalid(Detail::from([(field.to_owned(), message.to_owned())]))
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

fn ok(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The resources the sandbox serves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Job,
    Contact,
    JobContact,
    Event,
    CustomField,
}

impl Kind {
    fn parse(segment: &str) -> Option<Kind> {
        Some(match segment {
            "job" => Kind::Job,
            "address-book" => Kind::Contact,
            "job-contact" => Kind::JobContact,
            "event" => Kind::Event,
            "custom-field" => Kind::CustomField,
            _ => return None,
        })
    }

    fn segment(self) -> &'static str {
        match self {
            Kind::Job => "job",
            Kind::Contact => "address-book",
            Kind::JobContact => "job-contact",
            Kind::Event => "event",
            Kind::CustomField => "custom-field",
        }
    }

    fn collection(self) -> &'static str {
        match self {
            Kind::Job => "job-collection",
            Kind::Contact => "addressbook-collection",
            Kind::JobContact => "jobcontact-collection",
            Kind::Event => "event-collection",
            Kind::CustomField => "customfield-collection",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::Job => "job",
            Kind::Contact => "contact",
            Kind::JobContact => "job contact",
            Kind::Event => "event",
            Kind::CustomField => "custom field",
        }
    }

    fn list(self, st: &State) -> &Vec<Value> {
        match self {
            Kind::Job => &st.jobs,
            Kind::Contact => &st.contacts,
            Kind::JobContact => &st.job_contacts,
            Kind::Event => &st.events,
            Kind::CustomField => &st.custom_fields,
        }
    }

    fn list_mut(self, st: &mut State) -> &mut Vec<Value> {
        match self {
            Kind::Job => &mut st.jobs,
            Kind::Contact => &mut st.contacts,
            Kind::JobContact => &mut st.job_contacts,
            Kind::Event => &mut st.events,
            Kind::CustomField => &mut st.custom_fields,
        }
    }

    /// Properties sortable with `sortBy` (the spec's lists, the ones we store).
    fn sortable(self) -> &'static [&'static str] {
        match self {
            Kind::Job => &[
                "id",
                "modified",
                "created",
                "name",
                "eventDate",
                "guestCount",
                "bookingDate",
                "closed",
                "stage",
            ],
            Kind::Contact => &["id", "modified", "created", "name", "kind"],
            Kind::JobContact => &["id", "modified", "created"],
            Kind::Event | Kind::CustomField => &["id", "modified", "created", "name"],
        }
    }

    /// Read-only properties: ignored when sent (assumption).
    fn read_only(self) -> &'static [&'static str] {
        match self {
            Kind::Job => &[
                "title",
                "accountBalance",
                "creditBalance",
                "totalCost",
                "totalProfit",
                "totalRevenue",
                "jobTypeName",
                "leadSourceName",
                "leadStatusName",
                "closedReasonName",
                "workflowName",
                "sample",
                "staleDate",
                "primarySessionId",
                "nextInteractionDate",
                "nextInteractionItem",
                "previousInteractionDate",
                "previousInteractionItem",
                "lastClientActivity",
                "leadStatusChangedAt",
                "customNumber",
            ],
            Kind::Contact => &[
                "accountBalance",
                "creditBalance",
                "totalCost",
                "totalRevenue",
                "anonymized",
                "customNumber",
                "notes",
            ],
            Kind::JobContact => &["roleKinds"],
            Kind::Event => &["startUtc", "endUtc", "readOnly"],
            Kind::CustomField => &[],
        }
    }
}

const COMMON_READ_ONLY: [&str; 5] = ["links", "id", "created", "modified", "hidden"];

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
            Some(_) => ok(StatusCode::OK, &worksheet(st, id)),
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
                _ => error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "unknown",
                    "Method Not Allowed",
                    "use GET or POST",
                ),
            }
        }
        (m, [segment, id]) if Kind::parse(segment).is_some() => {
            let kind = Kind::parse(segment).expect("checked");
            let Some(index) = position(st, kind, id) else {
                return not_found(kind.title());
            };
            match m {
                Method::GET => ok(StatusCode::OK, &kind.list(st)[index]),
                Method::PUT => match parse_body(&body) {
                    Ok(b) => update(st, kind, index, b),
                    Err(r) => *r,
                },
                Method::DELETE => {
                    delete(st, kind, id);
                    StatusCode::NO_CONTENT.into_response()
                }
                _ => error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "unknown",
                    "Method Not Allowed",
                    "use GET, PUT or DELETE",
                ),
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

fn list(st: &State, kind: Kind, query: &[(String, String)]) -> Response {
    let mut detail = Detail::new();
    let get = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.as_str());
    let int = |k: &str, default: i64, detail: &mut Detail| match get(k) {
        None => default,
        Some(v) => v.parse::<i64>().unwrap_or_else(|_| {
            detail.insert(k.to_owned(), "must be an integer".to_owned());
            default
        }),
    };
    let page = int("page", 1, &mut detail);
    if page < 1 {
        detail.insert("page".into(), "must be at least 1".into());
    }
    let size = int("pageSize", 100, &mut detail);
    if !(10..=100).contains(&size) {
        detail.insert("pageSize".into(), "must be between 10 and 100".into());
    }
    let boolean = |k: &str, detail: &mut Detail| match get(k) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => {
            detail.insert(k.to_owned(), "must be a boolean".to_owned());
            false
        }
    };
    let include_closed = boolean("includeClosed", &mut detail);
    let _ = boolean("includeHidden", &mut detail);
    let sort = get("sortBy").unwrap_or("id");
    let (sort_key, descending) = match sort.split_once(' ') {
        Some((k, "desc")) => (k, true),
        Some((k, "asc")) => (k, false),
        Some(_) => ("", false),
        None => (sort, false),
    };
    if !kind.sortable().contains(&sort_key) {
        detail.insert(
            "sortBy".into(),
            format!(
                "must be one of {} with an optional asc or desc",
                kind.sortable().join(", ")
            ),
        );
    }
    if kind == Kind::CustomField {
        if let Some(v) = get("canApplyTo") {
            if !["job", "contact"].contains(&v.to_ascii_lowercase().as_str()) {
                detail.insert("canApplyTo".into(), "must be job or contact".into());
            }
        }
        for (_, v) in query.iter().filter(|(k, _)| k == "kind" || k == "kind[]") {
            if !CUSTOM_FIELD_KINDS.iter().any(|k| k.eq_ignore_ascii_case(v)) {
                detail.insert("kind".into(), "is not a custom field kind".into());
            }
        }
    }
    if let Some(v) = get("externalMappingId") {
        if v.chars().count() > 64 {
            detail.insert("externalMappingId".into(), "must be at most 64 characters".into());
        }
    }
    if !detail.is_empty() {
        return invalid(detail);
    }
    let kinds: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "kind" || k == "kind[]")
        .map(|(_, v)| v.to_ascii_lowercase())
        .collect();
    let mut items: Vec<&Value> = kind
        .list(st)
        .iter()
        .filter(|v| {
            let eq = |k: &str, field: &str| get(k).map_or(true, |want| v[field] == want);
            let mapped = get("externalMappingId").map_or(true, |want| {
                v["externalMappings"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|e| e["id"] == want))
            });
            let open = include_closed || kind != Kind::Job || v["closed"] != true;
            let email = get("email").map_or(true, |want| {
                v["email"].as_str().is_some_and(|e| e.eq_ignore_ascii_case(want))
            });
            let applies = get("canApplyTo").map_or(true, |want| {
                v["canApplyTo"]
                    .as_str()
                    .is_some_and(|c| c.eq_ignore_ascii_case(want))
            });
            let of_kind = kind != Kind::CustomField
                || kinds.is_empty()
                || kinds.contains(&v["kind"].as_str().unwrap_or_default().to_ascii_lowercase());
            mapped
                && open
                && email
                && applies
                && of_kind
                && eq("jobId", "jobId")
                && eq("contactId", "contactId")
        })
        .collect();
    items.sort_by(|a, b| {
        let o = compare(&a[sort_key], &b[sort_key]).then_with(|| compare(&a["id"], &b["id"]));
        if descending {
            o.reverse()
        } else {
            o
        }
    });
    let total = items.len() as i64;
    let page_items: Vec<Value> = items
        .into_iter()
        .skip(((page - 1) * size) as usize)
        .take(size as usize)
        .cloned()
        .collect();
    ok(
        StatusCode::OK,
        &json!({
            "type": kind.collection(),
            "meta": {
                "currentPage": page,
                "totalPages": (total + size - 1) / size,
                "totalItems": total,
                "rows": size,
            },
            "items": page_items,
        }),
    )
}

fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or_default()
            .total_cmp(&y.as_f64().unwrap_or_default()),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
        (Value::Null, _) => std::cmp::Ordering::Less,
        (_, Value::Null) => std::cmp::Ordering::Greater,
        _ => std::cmp::Ordering::Equal,
    }
}

const CUSTOM_FIELD_KINDS: [&str; 9] = [
    "TextField",
    "TextBox",
    "DropDown",
    "Number",
    "Decimal",
    "Money",
    "Date",
    "Time",
    "Checkbox",
];

/// Checks `body` as a `kind` written over `existing` (a PUT) or new (a POST) and returns the
/// properties to store. Errors go to `detail` under `prefix` + property name.
fn check(
    st: &State,
    kind: Kind,
    body: &Obj,
    existing: Option<&Value>,
    prefix: &str,
    detail: &mut Detail,
) -> Obj {
    let mut out = Obj::new();
    let err = |detail: &mut Detail, field: &str, message: &str| {
        detail.insert(format!("{prefix}{field}"), message.to_owned());
    };
    for (key, value) in body {
        if COMMON_READ_ONLY.contains(&key.as_str()) || kind.read_only().contains(&key.as_str()) {
            continue;
        }
        let problem = match (kind, key.as_str()) {
            (_, "externalMappings") => external_mappings(value, existing),
            (Kind::Job | Kind::Contact, "customFields") => {
                let applies = if kind == Kind::Job { "Job" } else { "Contact" };
                custom_field_values(st, value, applies, prefix, detail);
                None
            }
            (Kind::Job, "name") => string(value, 255, true),
            (
                Kind::Job,
                "eventDate"
                | "bookingDate"
                | "closedDate"
                | "completedDate"
                | "fulfillmentDate"
                | "inquiryDate"
                | "leadDecisionExpectedByDate",
            ) => date(value),
            (Kind::Job, "guestCount") => integer(value, 0, 99_999_999_999),
            (Kind::Job, "leadMaxBudget") => integer(value, -99_999_999_999, 99_999_999_999),
            (Kind::Job, "leadRating") => integer(value, 1, 5),
            (Kind::Job, "stage") => one_of(value, &["lead", "booked", "fulfillment", "completed"], false),
            (Kind::Job, "leadConfidence") => one_of(value, &["low", "medium", "high"], true),
            (Kind::Job, "closed" | "webLead" | "pinned") => boolean(value),
            (Kind::Job, "leadNotes") => string(value, 1_000_000_000, true),
            (Kind::Job, k) if k.ends_with("Id") => ulid_ref(value),
            (Kind::Contact, _) => contact_property(key, value, body),
            (Kind::Job, _) => continue, // unknown properties of a Job are ignored (assumption)
            (Kind::Event, k) => event_property(st, k, value),
            (Kind::JobContact, "jobId") => reference(st, Kind::Job, value),
            (Kind::JobContact, "contactId") => reference(st, Kind::Contact, value),
            (Kind::JobContact, "client") => boolean(value),
            (Kind::JobContact, "jobRoles") => ulid_list(value),
            (Kind::JobContact, _) => continue,
            (Kind::CustomField, "name") => string(value, 255, true),
            (Kind::CustomField, "canApplyTo") => one_of(value, &["Job", "Contact"], false),
            (Kind::CustomField, "kind") => one_of(value, &CUSTOM_FIELD_KINDS, false),
            (Kind::CustomField, "clientAccess") => one_of(value, &["None", "Visible", "Editable"], false),
            (Kind::CustomField, "clientLabel") => string(value, 255, true),
            (Kind::CustomField, "token") => string(value, 128, true),
            (Kind::CustomField, "choices") => match value {
                Value::Null => None,
                Value::Array(a) if a.iter().all(Value::is_string) => None,
                _ => Some("must be an array of strings".to_owned()),
            },
            (Kind::CustomField, _) => continue,
        };
        match problem {
            Some(message) if message == CONTINUE => continue,
            Some(message) => err(detail, key, &message),
            None => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    let present =
        |k: &str| body.get(k).is_some_and(|v| !v.is_null()) || existing.is_some_and(|e| !e[k].is_null());
    match kind {
        Kind::Contact => {
            let kind_now = body
                .get("kind")
                .or_else(|| existing.map(|e| &e["kind"]))
                .and_then(Value::as_str);
            match kind_now {
                Some("location" | "company") if !present("name") => err(detail, "name", "is required"),
                Some(_) => {}
                None => err(detail, "kind", "is required"),
            }
            if let (Some(e), Some(k)) = (existing, body.get("kind")) {
                if e["kind"] != *k {
                    err(detail, "kind", "can not be changed");
                }
            }
        }
        Kind::JobContact => {
            for k in ["jobId", "contactId"] {
                if !present(k) {
                    err(detail, k, "is required");
                }
            }
            let job = body.get("jobId").or_else(|| existing.map(|e| &e["jobId"]));
            let contact = body
                .get("contactId")
                .or_else(|| existing.map(|e| &e["contactId"]));
            let duplicate = st.job_contacts.iter().any(|l| {
                Some(&l["jobId"]) == job
                    && Some(&l["contactId"]) == contact
                    && existing.map_or(true, |e| e["id"] != l["id"])
            });
            if duplicate {
                err(detail, "contactId", "is already linked to this job");
            }
        }
        Kind::CustomField => {
            if !present("name") {
                err(detail, "name", "is required");
            }
        }
        Kind::Event => {
            let get = |k: &str| {
                body.get(k)
                    .or_else(|| existing.map(|e| &e[k]))
                    .and_then(Value::as_str)
            };
            if let (Some(s), Some(e)) = (get("startDate"), get("endDate")) {
                let start = (s, get("startTime").unwrap_or("00:00:00"));
                let end = (e, get("endTime").unwrap_or("23:59:59"));
                if end < start {
                    err(detail, "endDate", "must not be before the start");
                }
            }
        }
        Kind::Job => {}
    }
    out
}

/// A marker for "ignore this property" from the per-kind property checks.
const CONTINUE: &str = "\u{0}ignore";

fn string(v: &Value, max: usize, nullable: bool) -> Option<String> {
    match v {
        Value::Null if nullable => None,
        Value::String(s) if s.chars().count() > max => Some(format!("must be at most {max} characters")),
        Value::String(_) => None,
        _ => Some("must be a string".to_owned()),
    }
}

fn integer(v: &Value, min: i64, max: i64) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Number(n) if n.as_i64().is_some_and(|i| (min..=max).contains(&i)) => None,
        _ => Some(format!("must be an integer from {min} to {max}")),
    }
}

fn boolean(v: &Value) -> Option<String> {
    (!v.is_boolean() && !v.is_null()).then(|| "must be a boolean".to_owned())
}

fn one_of(v: &Value, allowed: &[&str], nullable: bool) -> Option<String> {
    match v {
        Value::Null if nullable => None,
        Value::String(s) if allowed.contains(&s.as_str()) => None,
        _ => Some(format!("must be one of {}", allowed.join(", "))),
    }
}

fn date(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) if s.len() == 10 && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() => None,
        _ => Some("must be a date (YYYY-MM-DD)".to_owned()),
    }
}

fn time(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s)
            if chrono::NaiveTime::parse_from_str(s, "%H:%M:%S").is_ok()
                || chrono::NaiveTime::parse_from_str(s, "%H:%M").is_ok() =>
        {
            None
        }
        _ => Some("must be a 24-hour time (HH:MM:SS)".to_owned()),
    }
}

fn is_ulid(s: &str) -> bool {
    s.len() == 26 && s.chars().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
}

fn ulid_ref(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) if is_ulid(s) => None,
        _ => Some("must be a lowercase ULID".to_owned()),
    }
}

fn ulid_list(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Array(a) if a.iter().all(|i| i.is_null() || ulid_ref(i).is_none()) => None,
        _ => Some("must be an array of ULIDs".to_owned()),
    }
}

fn reference(st: &State, kind: Kind, v: &Value) -> Option<String> {
    match v.as_str() {
        Some(id) if find(st, kind, id).is_some() => None,
        Some(_) => Some(format!("is not a known {}", kind.title())),
        None => Some("must be a ULID".to_owned()),
    }
}

fn mappings(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    (
                        m["id"].as_str().unwrap_or_default().to_owned(),
                        m["url"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// External mappings: shape, lengths, and "these objects can not be updated" once set.
fn external_mappings(v: &Value, existing: Option<&Value>) -> Option<String> {
    match v {
        Value::Null => {}
        Value::Array(items) => {
            for m in items {
                let id = m.get("id").and_then(Value::as_str);
                let url = m.get("url").and_then(Value::as_str);
                match (id, url) {
                    (Some(id), Some(url)) => {
                        if !(1..=64).contains(&id.chars().count()) {
                            return Some("id must be 1 to 64 characters".to_owned());
                        }
                        if !(12..=255).contains(&url.chars().count()) {
                            return Some("url must be 12 to 255 characters".to_owned());
                        }
                        if reqwest::Url::parse(url).is_err() {
                            return Some("url must be a URI".to_owned());
                        }
                    }
                    _ => return Some("each mapping needs a string id and url".to_owned()),
                }
            }
        }
        _ => return Some("must be an array of mappings".to_owned()),
    }
    if let Some(e) = existing {
        let before = mappings(&e["externalMappings"]);
        if !before.is_empty() && before != mappings(v) {
            return Some("can not be updated once set".to_owned());
        }
    }
    None
}

fn custom_field_values(st: &State, v: &Value, applies: &str, prefix: &str, detail: &mut Detail) {
    let Some(items) = v.as_array() else {
        if !v.is_null() {
            detail.insert(format!("{prefix}customFields"), "must be an array".to_owned());
        }
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let path = format!("{prefix}customFields[{i}]");
        let Some(field_id) = item.get("fieldId").and_then(Value::as_str) else {
            detail.insert(format!("{path}.fieldId"), "is required".to_owned());
            continue;
        };
        let known = st
            .custom_fields
            .iter()
            .any(|f| f["id"] == field_id && f["canApplyTo"] == applies);
        if !known {
            detail.insert(
                format!("{path}.fieldId"),
                format!("is not a custom field that applies to {applies}"),
            );
        }
        match item.get("value") {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(_) => {
                detail.insert(format!("{path}.value"), "must be a string or null".to_owned());
            }
        }
    }
}

const EVENT_PROPERTIES: [&str; 17] = [
    "allDay",
    "channel",
    "confirmed",
    "descriptionHtml",
    "endDate",
    "endTime",
    "galleryId",
    "jobId",
    "location",
    "name",
    "phoneNumber",
    "startDate",
    "startTime",
    "timezoneName",
    "timezoneId",
    "typeId",
    "virtualUrl",
];

fn event_property(st: &State, key: &str, v: &Value) -> Option<String> {
    match key {
        "allDay" | "confirmed" => boolean(v),
        "channel" => one_of(v, &["InPerson", "Phone", "Virtual"], false),
        "descriptionHtml" => string(v, 1_073_741_824, true),
        "startDate" | "endDate" => date(v),
        "startTime" | "endTime" => time(v),
        "name" => string(v, 255, true),
        "timezoneName" => match v {
            Value::Null => None,
            Value::String(s) if s == "UTC" || (s.contains('/') && !s.contains(' ')) => None,
            _ => Some("must be an approved timezone name".to_owned()),
        },
        "jobId" if !v.is_null() => reference(st, Kind::Job, v),
        "galleryId" | "timezoneId" | "typeId" | "jobId" => ulid_ref(v),
        "virtualUrl" => match v {
            Value::Null => None,
            Value::String(s) if reqwest::Url::parse(s).is_ok() => None,
            _ => Some("must be a URI".to_owned()),
        },
        "location" => match v {
            Value::Null => None,
            Value::Object(o) => o.iter().find_map(|(k, v)| match k.as_str() {
                "id" => ulid_ref(v),
                "address" => address(v),
                _ => Some(format!("{k} is not a property of the location")),
            }),
            _ => Some("must be an object".to_owned()),
        },
        "phoneNumber" => phone(v),
        _ if EVENT_PROPERTIES.contains(&key) => None,
        _ => Some("is not a property of Event (additionalProperties: false)".to_owned()),
    }
}

/// Address is closed (`additionalProperties: false`); its geo fields are read-only (ignored).
fn address(v: &Value) -> Option<String> {
    let o = match v {
        Value::Null => return None,
        Value::Object(o) => o,
        _ => return Some("must be an object".to_owned()),
    };
    for (k, v) in o {
        let problem = match k.as_str() {
            "links" | "id" | "created" | "modified" | "hidden" | "name" | "latitude" | "longitude"
            | "googlePlaceId" | "timezone" => None,
            "streetAddress" => string(v, 512, true),
            "village" | "city" | "state" | "postalCode" => string(v, 255, true),
            "country" => string(v, 2, true),
            _ => Some("is not a property of Address".to_owned()),
        };
        if let Some(p) = problem {
            return Some(format!("{k} {p}"));
        }
    }
    None
}

fn phone(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Object(o) => match o.get("e164") {
            None | Some(Value::Null) => None,
            Some(Value::String(s))
                if s.starts_with('+')
                    && s.len() <= 24
                    && s[1..].split('x').next().is_some_and(|d| {
                        (2..=15).contains(&d.len())
                            && d.chars().all(|c| c.is_ascii_digit())
                            && !d.starts_with('0')
                    }) =>
            {
                None
            }
            _ => Some("e164 must be an E.164 number".to_owned()),
        },
        _ => Some("must be a phone object".to_owned()),
    }
}

fn contact_property(key: &str, v: &Value, body: &Obj) -> Option<String> {
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or_default();
    match key {
        "kind" => one_of(v, &["person", "company", "location"], false),
        "name" if kind == "person" => Some(CONTINUE.to_owned()), // read-only on a person
        "name" => string(v, 255, false),
        "firstName" | "lastName" | "maidenName" => string(v, 48, true),
        "email" => match v {
            Value::Null => None,
            Value::String(s) if s.contains('@') && s.len() <= 255 => None,
            _ => Some("must be an email address".to_owned()),
        },
        "address" | "mailingAddress" => address(v),
        "phone" | "tollFree" | "cellPhone" | "homePhone" | "workPhone" | "fax" => phone(v),
        "url" => match v {
            Value::Null => None,
            Value::String(s) if reqwest::Url::parse(s).is_ok() => None,
            _ => Some("must be a URI".to_owned()),
        },
        "brandId" | "vendorRoleId" => ulid_ref(v),
        "privacyOptIn" | "requireStrictPrivacy" | "previousClient" | "pinned" => boolean(v),
        _ => Some(CONTINUE.to_owned()), // other properties are ignored (assumption)
    }
}

/// Defaults a new entity of `kind` gets.
fn defaults(kind: Kind) -> Obj {
    let v = match kind {
        Kind::Job => json!({
            "stage": "lead", "closed": false, "webLead": false, "customFields": [],
            "externalMappings": [], "guestCount": null, "eventDate": null, "leadMaxBudget": null,
            "name": null,
        }),
        Kind::Contact => json!({"customFields": [], "externalMappings": [], "address": null}),
        Kind::JobContact => json!({"client": false, "jobRoles": [], "externalMappings": [], "roleKinds": []}),
        Kind::Event => json!({
            "allDay": false, "channel": "InPerson", "confirmed": false, "externalMappings": [],
            "startDate": null, "startTime": null, "endDate": null, "endTime": null, "jobId": null,
        }),
        Kind::CustomField => {
            json!({"canApplyTo": "Job", "kind": "TextField", "clientAccess": "None", "choices": null})
        }
    };
    match v {
        Value::Object(o) => o,
        _ => unreachable!("defaults are objects"),
    }
}

/// Stores a new entity built from checked properties.
fn insert(st: &mut State, base: &str, kind: Kind, props: Obj) -> Value {
    let id = ulid();
    let now = stamp(st);
    let mut o = defaults(kind);
    o.extend(props);
    o.insert("id".into(), json!(id));
    o.insert("created".into(), json!(now));
    o.insert("modified".into(), json!(now));
    if kind != Kind::Job {
        o.insert("hidden".into(), json!(false)); // Job has no `hidden` in the spec
    }
    let manager = format!("https://workspace.vsco.co/app/{}/{id}", kind.segment());
    o.insert(
        "links".into(),
        json!({"self": {"href": format!("{base}/{}/{id}", kind.segment()), "managerHref": manager}}),
    );
    derive(st, kind, &mut o);
    let v = Value::Object(o);
    kind.list_mut(st).push(v.clone());
    v
}

/// Computed read-only properties.
fn derive(st: &State, kind: Kind, o: &mut Obj) {
    match kind {
        Kind::Job => {
            let title = o
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| "Untitled job".to_owned());
            o.insert("title".into(), json!(title));
        }
        Kind::JobContact => {
            let kind = o
                .get("contactId")
                .and_then(Value::as_str)
                .and_then(|id| find(st, Kind::Contact, id))
                .map(|c| c["kind"].clone())
                .unwrap_or(Value::Null);
            let client = o.get("client") == Some(&Value::Bool(true));
            let roles = if client {
                json!(["client"])
            } else if kind == "location" {
                json!([])
            } else {
                json!(["subject"])
            };
            o.insert("roleKinds".into(), roles);
        }
        Kind::Event => {
            for (date, time, utc) in [
                ("startDate", "startTime", "startUtc"),
                ("endDate", "endTime", "endUtc"),
            ] {
                // The studio's zone is UTC in the sandbox; zone conversion is not emulated.
                let at = match (
                    o.get(date).and_then(Value::as_str),
                    o.get(time).and_then(Value::as_str),
                ) {
                    (Some(d), Some(t)) => json!(format!("{d}T{}Z", normal_time(t))),
                    _ => Value::Null,
                };
                o.insert(utc.into(), at);
            }
            for t in ["startTime", "endTime"] {
                if let Some(s) = o.get(t).and_then(Value::as_str) {
                    let n = normal_time(s);
                    o.insert(t.into(), json!(n));
                }
            }
        }
        Kind::Contact | Kind::CustomField => {}
    }
    if let Some(Value::Object(a)) = o.get_mut("address") {
        for k in ["latitude", "longitude", "googlePlaceId", "timezone", "name"] {
            a.remove(k);
        }
    }
}

fn normal_time(t: &str) -> String {
    if t.len() == 5 {
        format!("{t}:00")
    } else {
        t.to_owned()
    }
}

fn create(st: &mut State, base: &str, kind: Kind, body: Obj) -> Response {
    let mut detail = Detail::new();
    let props = check(st, kind, &body, None, "", &mut detail);
    if !detail.is_empty() {
        return invalid(detail);
    }
    ok(StatusCode::CREATED, &insert(st, base, kind, props))
}

fn update(st: &mut State, kind: Kind, index: usize, body: Obj) -> Response {
    let mut detail = Detail::new();
    let existing = kind.list(st)[index].clone();
    let props = check(st, kind, &body, Some(&existing), "", &mut detail);
    if !detail.is_empty() {
        return invalid(detail);
    }
    let Value::Object(mut o) = existing else {
        unreachable!("entities are objects")
    };
    o.extend(props);
    o.insert("modified".into(), json!(stamp(st)));
    derive(st, kind, &mut o);
    let v = Value::Object(o);
    kind.list_mut(st)[index] = v.clone();
    ok(StatusCode::OK, &v)
}

fn delete(st: &mut State, kind: Kind, id: &str) {
    kind.list_mut(st).retain(|v| v["id"] != id);
    match kind {
        Kind::Job => {
            st.events.retain(|e| e["jobId"] != id);
            st.job_contacts.retain(|l| l["jobId"] != id);
        }
        Kind::Contact => st.job_contacts.retain(|l| l["contactId"] != id),
        Kind::CustomField => {
            for v in st.jobs.iter_mut().chain(st.contacts.iter_mut()) {
                if let Some(Value::Array(values)) = v.get_mut("customFields") {
                    values.retain(|f| f["fieldId"] != id);
                }
            }
        }
        Kind::JobContact | Kind::Event => {}
    }
}

/// `POST /job/-/worksheet`: a job with its contacts and events, all checked before any is made.
fn create_worksheet(st: &mut State, base: &str, mut body: Obj) -> Response {
    let mut detail = Detail::new();
    let events = body.remove("events").unwrap_or(Value::Null);
    let contacts = body.remove("contacts").unwrap_or(Value::Null);
    let job = check(st, Kind::Job, &body, None, "", &mut detail);
    let as_list = |v: &Value, name: &str, detail: &mut Detail| -> Vec<Obj> {
        match v {
            Value::Null => Vec::new(),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .filter_map(|(i, item)| match item {
                    Value::Object(o) => Some(o.clone()),
                    _ => {
                        detail.insert(format!("{name}[{i}]"), "must be an object".to_owned());
                        None
                    }
                })
                .collect(),
            _ => {
                detail.insert(name.to_owned(), "must be an array".to_owned());
                Vec::new()
            }
        }
    };
    let events = as_list(&events, "events", &mut detail);
    let contacts = as_list(&contacts, "contacts", &mut detail);
    let mut checked_events = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let mut e = e.clone();
        e.remove("jobId"); // the new job's
        checked_events.push(check(
            st,
            Kind::Event,
            &e,
            None,
            &format!("events[{i}]."),
            &mut detail,
        ));
    }
    let mut checked_contacts = Vec::new();
    for (i, c) in contacts.iter().enumerate() {
        let prefix = format!("contacts[{i}].");
        let Some(Value::Object(contact)) = c.get("contact") else {
            detail.insert(format!("{prefix}contact"), "is required".to_owned());
            continue;
        };
        let contact = check(
            st,
            Kind::Contact,
            contact,
            None,
            &format!("{prefix}contact."),
            &mut detail,
        );
        let mut link = Obj::new();
        for (k, v) in c {
            let problem = match k.as_str() {
                "externalMappings" => external_mappings(v, None),
                "client" | "attendingAllEvents" | "attendingAllSessions" => boolean(v),
                "jobRoles" => ulid_list(v),
                _ => continue,
            };
            match problem {
                Some(p) => {
                    detail.insert(format!("{prefix}{k}"), p);
                }
                None => {
                    link.insert(k.clone(), v.clone());
                }
            }
        }
        checked_contacts.push((contact, link));
    }
    if !detail.is_empty() {
        return invalid(detail);
    }
    let job = insert(st, base, Kind::Job, job);
    let job_id = job["id"].as_str().expect("ids are strings").to_owned();
    for (contact, mut link) in checked_contacts {
        let contact = insert(st, base, Kind::Contact, contact);
        link.insert("jobId".into(), json!(job_id));
        link.insert("contactId".into(), contact["id"].clone());
        for k in ["attendingAllEvents", "attendingAllSessions"] {
            link.remove(k);
        }
        insert(st, base, Kind::JobContact, link);
    }
    for mut e in checked_events {
        e.insert("jobId".into(), json!(job_id));
        insert(st, base, Kind::Event, e);
    }
    ok(StatusCode::CREATED, &worksheet(st, &job_id))
}

/// A job with its events and contacts (JobWorksheet).
fn worksheet(st: &State, job_id: &str) -> Value {
    let mut job = find(st, Kind::Job, job_id).cloned().unwrap_or_default();
    let events: Vec<Value> = st
        .events
        .iter()
        .filter(|e| e["jobId"] == job_id)
        .cloned()
        .collect();
    let contacts: Vec<Value> = st
        .job_contacts
        .iter()
        .filter(|l| l["jobId"] == job_id)
        .map(|l| {
            let contact = l["contactId"]
                .as_str()
                .and_then(|id| find(st, Kind::Contact, id))
                .cloned()
                .unwrap_or(Value::Null);
            let mut w = Obj::new();
            for k in [
                "links",
                "id",
                "created",
                "modified",
                "hidden",
                "externalMappings",
                "client",
                "jobRoles",
                "roleKinds",
            ] {
                w.insert(k.into(), l[k].clone());
            }
            w.insert("contact".into(), contact);
            Value::Object(w)
        })
        .collect();
    if let Value::Object(o) = &mut job {
        o.insert("events".into(), Value::Array(events));
        o.insert("contacts".into(), Value::Array(contacts));
    }
    job
}

/// The New Lead API's field list (`GET …/create-lead?list-fields=true&StudioID&SecretKey`).
const LEAD_FIELDS: [(&str, &str, bool, &str); 11] = [
    ("FirstName", "First Name", true, "Text"),
    ("LastName", "Last Name", false, "Text"),
    ("Email", "Email", false, "Email"),
    ("HomePhone", "Home Phone", false, "Phone"),
    ("MobilePhone", "Mobile Phone", false, "Phone"),
    ("WorkPhone", "Work Phone", false, "Phone"),
    ("Source", "Source", false, "Text"),
    ("EventDate", "Event Date", false, "Date"),
    ("JobType", "Job Type", true, "Text"),
    ("Brand", "Brand", false, "Text"),
    ("Message", "Message", false, "Text"),
];

fn lead_error(status: StatusCode, why: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain")],
        format!("Error: {why}"),
    )
        .into_response()
}

async fn create_lead(
    Shared(sandbox): Shared<Arc<Sandbox>>,
    axum::extract::Path(studio): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let accounts = &sandbox.accounts;
    if studio != accounts.tave_studio_id {
        return lead_error(StatusCode::NOT_FOUND, "unknown studio");
    }
    let fields = form_pairs(&String::from_utf8_lossy(&body));
    let get = |k: &str| {
        fields
            .iter()
            .find(|(f, _)| f == k)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    if get("SecretKey") != Some(accounts.tave_lead_secret.as_str()) {
        return lead_error(StatusCode::FORBIDDEN, "invalid SecretKey");
    }
    for required in ["FirstName", "JobType"] {
        if get(required).is_none() {
            return lead_error(
                StatusCode::BAD_REQUEST,
                &format!("The {required} field is required"),
            );
        }
    }
    let notify = !headers
        .get("x-tave-no-email-notification")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let kept: Obj = fields
        .iter()
        .filter(|(k, _)| k != "SecretKey")
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let mut st = lock(&sandbox.tave);
    let received = stamp(&mut st);
    st.leads.push(json!({
        "id": ulid(),
        "studioId": studio,
        "fields": kept,
        "emailNotification": notify,
        "received": received,
    }));
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/html")], "OK").into_response()
}

async fn lead_fields(Shared(sandbox): Shared<Arc<Sandbox>>, uri: Uri) -> Response {
    let q = query_pairs(&uri);
    let get = |k: &str| q.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
    if get("list-fields") != Some("true") {
        return lead_error(
            StatusCode::BAD_REQUEST,
            "post a lead to /webservice/create-lead/{StudioID}",
        );
    }
    if get("StudioID") != Some(sandbox.accounts.tave_studio_id.as_str()) {
        return lead_error(StatusCode::NOT_FOUND, "unknown studio");
    }
    if get("SecretKey") != Some(sandbox.accounts.tave_lead_secret.as_str()) {
        return lead_error(StatusCode::FORBIDDEN, "invalid SecretKey");
    }
    let mut list: Vec<Value> = LEAD_FIELDS
        .iter()
        .map(|(name, label, required, kind)| {
            json!({"name": name, "label": label, "required": required, "desc": "", "type": kind})
        })
        .collect();
    for f in lock(&sandbox.tave)
        .custom_fields
        .iter()
        .filter(|f| f["canApplyTo"] == "Job")
    {
        let token = f["token"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| f["name"].as_str().unwrap_or_default().replace(' ', ""));
        let kind = match f["kind"].as_str() {
            Some("Number" | "Decimal" | "Money") => "Numeric",
            Some("Date") => "Date",
            _ => "Text",
        };
        list.push(json!({"name": format!("CF-{token}"), "label": f["name"], "required": false, "desc": "", "type": kind}));
    }
    ok(StatusCode::OK, &Value::Array(list))
}
