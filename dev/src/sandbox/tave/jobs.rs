//! Jobs with their contacts and events: the worksheet (`POST /job/-/worksheet`, `GET /job/{id}/worksheet`).

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::entities::insert;
use super::validate::{boolean, check, external_mappings, ulid_list};
use super::{find, invalid, reply, Detail, Kind, Obj, State};

/// `POST /job/-/worksheet`: a job with its contacts and events, all checked before any is made.
pub(super) fn create_worksheet(st: &mut State, base: &str, mut body: Obj) -> Response {
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
    reply(StatusCode::CREATED, &worksheet(st, &job_id))
}

/// A job with its events and contacts (JobWorksheet).
pub(super) fn worksheet(st: &State, job_id: &str) -> Value {
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
