//! What the CRM adapters share: the event read as a change of one wedding, one HTTP exchange with
//! its transport failure classified, and the wedding-day timeline as dated items.
//!
//! Each adapter maps a [`Change`] onto its API and classifies that API's answers itself (each API
//! signals rate limits, conflicts and bad input its own way); what is common is here.

use std::time::Duration;

use bytes::Bytes;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

use super::outcome::{classify_transport, retry_after, Outcome};
use super::Payload;
use crate::events::{Envelope, EventKind, WeddingContext};

/// A field-sync event as an adapter reads it.
#[derive(Debug)]
pub struct Change {
    /// The event id (stable across retries and restarts): the base of idempotency keys.
    pub id: String,
    pub kind: EventKind,
    pub field_type: String,
    pub field_id: String,
    pub wedding: WeddingContext,
    /// The validated, normalised value; `None` when the field was deleted.
    pub value: Option<Value>,
    /// The value before the change, as the app wrote it (for a delete: what to clear).
    pub old_value: Option<Value>,
}

impl Change {
    /// Reads the payload's envelope. An event that cannot be synced (no wedding, a value that
    /// failed validation) is rejected: retrying cannot fix it, and the rules it broke are named.
    pub fn read(payload: &Payload) -> Result<Change, Outcome> {
        let envelope: Envelope = serde_json::from_slice(&payload.body)
            .map_err(|e| reject(format!("the queued event is not a field-sync envelope ({e})")))?;
        let d = envelope.data;
        let wedding = d.wedding.ok_or_else(|| {
            reject("the event has no wedding context (its wedding row is unknown)".to_owned())
        })?;
        if !d.valid {
            let rules: Vec<String> = d
                .errors
                .iter()
                .map(|e| format!("{} ({})", e.path, e.rule))
                .collect();
            return Err(reject(format!(
                "the {} value failed validation: {}; fix it in the app and it is sent again",
                d.field_type,
                rules.join(", ")
            )));
        }
        let value = match envelope.kind {
            EventKind::Deleted => None,
            _ => d.normalized.or(d.new_value),
        };
        Ok(Change {
            id: payload.id.to_string(),
            kind: envelope.kind,
            field_type: d.field_type,
            field_id: d.field_id.unwrap_or_default(),
            wedding,
            value,
            old_value: d.old_value,
        })
    }

    /// A string member of the value.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.value.as_ref()?.get(key)?.as_str()
    }

    /// The wedding date a `wedding_date` value holds (normalised: `{"date": …}`).
    pub fn date(&self) -> Option<&str> {
        let v = self.value.as_ref()?;
        v.get("date").unwrap_or(v).as_str()
    }

    /// An integer member of the value.
    pub fn int(&self, key: &str) -> Option<i64> {
        self.value.as_ref()?.get(key)?.as_i64()
    }
}

pub fn reject(error: String) -> Outcome {
    Outcome::Reject { status: None, error }
}

/// A whole HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON of the expected shape; anything else is the API answering garbage, which
    /// is retried (a proxy or an outage page) and named.
    pub fn json<T: serde::de::DeserializeOwned>(&self, api: &str) -> Result<T, Outcome> {
        serde_json::from_slice(&self.body).map_err(|e| Outcome::Retry {
            status: Some(self.status.as_u16()),
            error: format!(
                "{api} answered {} with a body that is not the documented JSON ({e})",
                self.status
            ),
            after: None,
            endpoint_fault: true,
        })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        retry_after(&self.headers)
    }
}

/// Sends one request and reads the whole answer; no answer at all is classified here.
pub async fn exchange(request: reqwest::RequestBuilder, timeout: Duration) -> Result<Answer, Outcome> {
    let answer = request
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| classify_transport(&e, timeout))?;
    let status = answer.status();
    let headers = answer.headers().clone();
    let body = answer
        .bytes()
        .await
        .map_err(|e| classify_transport(&e, timeout))?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// A server error (5xx) of an API: retried, counts against the endpoint.
pub fn server_error(api: &str, answer: &Answer) -> Outcome {
    Outcome::Retry {
        status: Some(answer.status.as_u16()),
        error: format!("{api} answered {} (server error)", answer.status),
        after: answer.retry_after(),
        endpoint_fault: true,
    }
}

/// A rate limit: retried after the API's own signal, not held against the endpoint.
pub fn rate_limited(api: &str, answer: &Answer, after: Option<Duration>) -> Outcome {
    Outcome::Retry {
        status: Some(answer.status.as_u16()),
        error: format!(
            "{api} rate limit ({}): waiting before the next attempt",
            answer.status
        ),
        after: after.or_else(|| answer.retry_after()),
        endpoint_fault: false,
    }
}

/// One item of the wedding-day timeline, dated.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineItem {
    /// Stable across edits of the item's time or duration: its title (or category) and, for
    /// repeated titles, the occurrence number. Moving an item keeps its key; renaming makes a
    /// new item (and the old one is removed).
    pub key: String,
    pub title: String,
    pub description: Option<String>,
    pub category: Option<String>,
    /// Local wall-clock start and end in the wedding's time zone.
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
}

/// The items of a normalised `timeline_builder` value on the wedding date. Items that cross
/// midnight end on the next day.
pub fn timeline_items(value: &Value, date: NaiveDate) -> Vec<TimelineItem> {
    let Some(items) = value.get("items").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut seen: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    items
        .iter()
        .filter_map(|item| {
            let time = NaiveTime::parse_from_str(item.get("time")?.as_str()?, "%H:%M").ok()?;
            let minutes = item.get("duration").and_then(Value::as_i64).unwrap_or(60);
            let text = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_owned);
            let category = text("category");
            let title = text("title")
                .or_else(|| category.clone())
                .unwrap_or_else(|| "Timeline item".to_owned());
            let base = slug(&title);
            let n = seen.entry(base.clone()).or_insert(0);
            *n += 1;
            let key = if *n == 1 { base } else { format!("{base}-{n}") };
            let start = date.and_time(time);
            Some(TimelineItem {
                key,
                title,
                description: text("description").filter(|d| !d.is_empty()),
                category,
                start,
                end: start + chrono::Duration::minutes(minutes),
            })
        })
        .collect()
}

/// Lowercase ASCII letters and digits, other runs as one `-`.
pub fn slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        out.push_str("item");
    }
    out
}

/// The wedding date, when the wedding has one.
pub fn wedding_date(w: &WeddingContext) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(w.wedding_date.as_deref()?, "%Y-%m-%d").ok()
}

/// The venue's one-line location: its formatted address, else its name.
pub fn venue_line(venue: &Value) -> Option<String> {
    let name = venue.get("name").and_then(Value::as_str);
    let address = venue.get("formatted_address").and_then(Value::as_str);
    match (name, address) {
        (Some(n), Some(a)) if !a.contains(n) => Some(format!("{n}, {a}")),
        (_, Some(a)) => Some(a.to_owned()),
        (Some(n), None) => Some(n.to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_keys_survive_moves_and_number_repeated_titles() {
        let date = NaiveDate::from_ymd_opt(2027, 6, 19).unwrap();
        let value = serde_json::json!({"items": [
            {"time": "13:00", "duration": 45, "title": "Ceremony"},
            {"time": "15:00", "title": "Photos"},
            {"time": "23:30", "duration": 60, "title": "Photos"}
        ]});
        let items = timeline_items(&value, date);
        let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["ceremony", "photos", "photos-2"]);
        assert_eq!(
            items[1].end,
            date.and_hms_opt(16, 0, 0).unwrap(),
            "default duration is 60 minutes"
        );
        assert_eq!(
            items[2].end,
            date.succ_opt().unwrap().and_hms_opt(0, 30, 0).unwrap()
        );
        let moved = serde_json::json!({"items": [{"time": "14:00", "duration": 45, "title": "Ceremony"}]});
        assert_eq!(timeline_items(&moved, date)[0].key, "ceremony");
    }

    #[test]
    fn slugs_are_lowercase_ascii_words() {
        assert_eq!(slug("First Dance!  (Band)"), "first-dance-band");
        assert_eq!(slug("***"), "item");
    }
}
