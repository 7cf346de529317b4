//! Checking a written entity: the per-kind property rules, the shared value checks, and the
//! validation-error `detail` they build (property path → message).

use serde_json::Value;

use super::contacts::contact_property;
use super::custom_fields::{custom_field_values, CUSTOM_FIELD_KINDS};
use super::events::event_property;
use super::{find, Detail, Kind, Obj, State};

const COMMON_READ_ONLY: [&str; 5] = ["links", "id", "created", "modified", "hidden"];

/// Checks `body` as a `kind` written over `existing` (a PUT) or new (a POST) and returns the
/// properties to store. Errors go to `detail` under `prefix` + property name.
pub(super) fn check(
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
pub(super) const CONTINUE: &str = "\u{0}ignore";

pub(super) fn string(v: &Value, max: usize, nullable: bool) -> Option<String> {
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

pub(super) fn boolean(v: &Value) -> Option<String> {
    (!v.is_boolean() && !v.is_null()).then(|| "must be a boolean".to_owned())
}

pub(super) fn one_of(v: &Value, allowed: &[&str], nullable: bool) -> Option<String> {
    match v {
        Value::Null if nullable => None,
        Value::String(s) if allowed.contains(&s.as_str()) => None,
        _ => Some(format!("must be one of {}", allowed.join(", "))),
    }
}

pub(super) fn uri(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) if reqwest::Url::parse(s).is_ok() => None,
        _ => Some("must be a URI".to_owned()),
    }
}

pub(super) fn date(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) if s.len() == 10 && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() => None,
        _ => Some("must be a date (YYYY-MM-DD)".to_owned()),
    }
}

pub(super) fn time(v: &Value) -> Option<String> {
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

pub(super) fn ulid_ref(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) if is_ulid(s) => None,
        _ => Some("must be a lowercase ULID".to_owned()),
    }
}

pub(super) fn ulid_list(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Array(a) if a.iter().all(|i| i.is_null() || ulid_ref(i).is_none()) => None,
        _ => Some("must be an array of ULIDs".to_owned()),
    }
}

pub(super) fn reference(st: &State, kind: Kind, v: &Value) -> Option<String> {
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
pub(super) fn external_mappings(v: &Value, existing: Option<&Value>) -> Option<String> {
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
