//! The legacy New Lead API (`/webservice/create-lead/{studioId}`): form posts answered `OK`.

use std::sync::Arc;

use axum::extract::State as Shared;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};

use super::super::{lock, ulid, Sandbox};
use super::{form_pairs, param, query_pairs, reply, stamp, Obj};

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

pub(super) async fn create_lead(
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
    let get = |k: &str| param(&fields, k).map(str::trim).filter(|v| !v.is_empty());
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

pub(super) async fn lead_fields(Shared(sandbox): Shared<Arc<Sandbox>>, uri: Uri) -> Response {
    let q = query_pairs(&uri);
    let get = |k: &str| param(&q, k);
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
    reply(StatusCode::OK, &Value::Array(list))
}
