//! Storing entities: defaults, ids and links, computed read-only properties, and the generic
//! create, update and delete of every resource.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::super::ulid;
use super::events::normal_time;
use super::validate::check;
use super::{find, invalid, reply, stamp, Detail, Kind, Obj, State};

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
pub(super) fn insert(st: &mut State, base: &str, kind: Kind, props: Obj) -> Value {
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

pub(super) fn create(st: &mut State, base: &str, kind: Kind, body: Obj) -> Response {
    let mut detail = Detail::new();
    let props = check(st, kind, &body, None, "", &mut detail);
    if !detail.is_empty() {
        return invalid(detail);
    }
    reply(StatusCode::CREATED, &insert(st, base, kind, props))
}

pub(super) fn update(st: &mut State, kind: Kind, index: usize, body: Obj) -> Response {
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
    reply(StatusCode::OK, &v)
}

pub(super) fn delete(st: &mut State, kind: Kind, id: &str) {
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
