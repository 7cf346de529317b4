//! The checks the API makes on an event before it stores it: client-supplied ids, `start`/`end`
//! (date or dateTime, time zones by shape, `timeRangeEmpty`), `status`, extended properties.

use axum::response::Response;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde_json::Value;

use super::errors::{bad_request, time_range_empty};

/// A client-supplied event id: base32hex characters, 5 to 1024 of them.
pub fn valid_event_id(id: &str) -> bool {
    (5..=1024).contains(&id.len()) && id.bytes().all(|b| matches!(b, b'a'..=b'v' | b'0'..=b'9'))
}

pub(super) fn new_event_id() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let v = rand::random::<u128>();
    (0..26)
        .map(|i| ALPHABET[((v >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// A time zone name by shape: `UTC`, `GMT`, `Etc/…` or `Area/Location[/…]` with a known area.
fn valid_time_zone(tz: &str) -> bool {
    const AREAS: &[&str] = &[
        "Africa",
        "America",
        "Antarctica",
        "Arctic",
        "Asia",
        "Atlantic",
        "Australia",
        "Europe",
        "Indian",
        "Pacific",
        "Etc",
    ];
    if matches!(tz, "UTC" | "GMT") {
        return true;
    }
    let mut parts = tz.split('/');
    let area = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    AREAS.contains(&area)
        && !rest.is_empty()
        && rest.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+'))
        })
}

/// A point in time for comparing start and end: an instant, a local time in a zone, or a date.
#[derive(PartialEq)]
enum When {
    Instant(DateTime<chrono::FixedOffset>),
    Local(NaiveDateTime, Option<String>),
    Date(NaiveDate),
}

/// Checks one of `start`/`end`; the error is the 400 answer.
fn read_time(event: &Value, which: &str) -> Result<When, Response> {
    let invalid = || bad_request("invalid", &format!("Invalid {which} time."));
    let t = match event.get(which) {
        None | Some(Value::Null) => return Err(bad_request("required", &format!("Missing {which} time."))),
        Some(t) if t.is_object() => t,
        Some(_) => return Err(invalid()),
    };
    let tz = match t.get("timeZone") {
        None | Some(Value::Null) => None,
        Some(Value::String(z)) if valid_time_zone(z) => Some(z.clone()),
        Some(_) => {
            return Err(bad_request(
                "invalid",
                &format!("Invalid time zone definition for {which} time."),
            ))
        }
    };
    let date = t.get("date").filter(|v| !v.is_null());
    let date_time = t.get("dateTime").filter(|v| !v.is_null());
    match (date, date_time) {
        (Some(d), None) => {
            let d = d.as_str().ok_or_else(invalid)?;
            NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map(When::Date)
                .map_err(|_| invalid())
        }
        (None, Some(dt)) => {
            let dt = dt.as_str().ok_or_else(invalid)?;
            if let Ok(at) = DateTime::parse_from_rfc3339(dt) {
                return Ok(When::Instant(at));
            }
            let local = NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S%.f").map_err(|_| invalid())?;
            if tz.is_none() {
                return Err(bad_request(
                    "required",
                    &format!("Missing time zone definition for {which} time."),
                ));
            }
            Ok(When::Local(local, tz))
        }
        _ => Err(invalid()),
    }
}

/// The checks the API makes on an event it is about to store.
pub(super) fn validate(event: &Value) -> Result<(), Response> {
    let start = read_time(event, "start")?;
    let end = read_time(event, "end")?;
    let empty = match (&start, &end) {
        (When::Date(s), When::Date(e)) => e <= s,
        (When::Instant(s), When::Instant(e)) => e < s,
        (When::Local(s, sz), When::Local(e, ez)) if sz == ez => e < s,
        (When::Date(_), _) | (_, When::Date(_)) => {
            return Err(bad_request(
                "invalid",
                "Start and end times must either both be date or both be dateTime.",
            ))
        }
        _ => false,
    };
    if empty {
        return Err(time_range_empty(None));
    }
    if let Some(status) = event.get("status") {
        if !matches!(status.as_str(), Some("confirmed" | "tentative" | "cancelled")) {
            return Err(bad_request("invalid", "Invalid value for: status"));
        }
    }
    if let Some(ext) = event.get("extendedProperties").filter(|v| !v.is_null()) {
        let ok = ext.as_object().is_some_and(|o| {
            o.iter().all(|(k, v)| {
                matches!(k.as_str(), "private" | "shared")
                    && (v.is_null() || v.as_object().is_some_and(|m| m.values().all(|x| x.is_string())))
            })
        });
        if !ok {
            return Err(bad_request("invalid", "Invalid extended properties."));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_event_ids_are_base32hex_of_5_to_1024() {
        assert!(valid_event_id("abcde01234"));
        assert!(!valid_event_id("abcd"));
        assert!(!valid_event_id("abcdw12345"));
        assert!(!valid_event_id("ABCDE12345"));
        assert!(valid_event_id(&new_event_id()));
    }

    #[test]
    fn google_time_zones_are_checked_by_shape() {
        assert!(valid_time_zone("Europe/London"));
        assert!(valid_time_zone("America/Argentina/Buenos_Aires"));
        assert!(valid_time_zone("UTC"));
        assert!(!valid_time_zone("Mars/Olympus"));
        assert!(!valid_time_zone("Europe/"));
    }
}
