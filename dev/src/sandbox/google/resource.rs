//! The event resource as stored: server-owned fields set on every write (a new `etag`, `updated`,
//! `sequence` when start, end or status change), PATCH merge semantics, and `null` as absent.

use serde_json::{json, Map, Value};

use super::push::notify;
use super::{calendar_email, now_millis, State};

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
pub(super) fn merge(target: &mut Value, patch: &Value) {
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
pub(super) fn writable(body: &Value) -> Map<String, Value> {
    let mut m = body.as_object().cloned().unwrap_or_default();
    for k in READ_ONLY {
        m.remove(*k);
    }
    m
}

/// The stored event `id` of `calendar`, cancelled or not.
pub(super) fn find(state: &State, calendar: &str, id: &str) -> Option<Value> {
    state
        .calendars
        .get(calendar)?
        .events
        .iter()
        .find(|e| e["id"] == id)
        .cloned()
}

/// Stores a new version of an event (server fields set), returning it.
pub(super) fn store(
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

pub(super) fn strip_nulls_map(m: &mut Map<String, Value>) {
    let mut v = Value::Object(std::mem::take(m));
    strip_nulls(&mut v);
    if let Value::Object(o) = v {
        *m = o;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
