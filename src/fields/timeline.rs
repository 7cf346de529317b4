//! `timeline_builder`: the wedding day's running order, `{"events": [...]}` in, sorted items out.
//!
//! Times are wall-clock `HH:MM` on the wedding date in the wedding's time zone (the zone itself travels
//! with the event's wedding context, not with the value). An item may run past midnight: `end` is then
//! the wall-clock time on the next day and `ends_next_day` is true. Durations are whole minutes from 1 to
//! 1440 so that "next day" is never ambiguous. Issue paths use the *input* index (`events[2].time`),
//! items are then sorted by start time with a stable sort.

use serde_json::{json, Map, Value};

use super::numbers::{read_u64, IntProblem};
use super::report::{index, join, member, subject, Report};

const MINUTES_PER_DAY: u64 = 24 * 60;
const DEFAULT_DURATION: u64 = 60;

struct Item {
    start: u64,
    duration: u64,
    fields: Map<String, Value>,
    ceremony: bool,
    reception: bool,
}

pub(super) fn timeline_builder(value: &Value, out: &mut Report) -> Option<Value> {
    let obj = out.object(value, "")?;
    let events = match member(obj, "events") {
        None => {
            out.error("events", "required", "`events` is required".to_owned());
            return None;
        }
        Some(Value::Array(events)) => events,
        Some(other) => {
            out.wrong_type("events", "an array", other);
            return None;
        }
    };
    let before = out.error_count();
    let mut items: Vec<Item> = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        if let Some(item) = read_item(event, &index("events", i), out) {
            items.push(item);
        }
    }
    if out.error_count() > before {
        return None;
    }
    items.sort_by_key(|item| item.start);
    let total_duration: u64 = items.iter().map(|item| item.duration).sum();
    let ceremony_time = items
        .iter()
        .find(|item| item.ceremony)
        .map(|item| hh_mm(item.start));
    let reception_time = items
        .iter()
        .find(|item| item.reception)
        .map(|item| hh_mm(item.start));
    let items: Vec<Value> = items.into_iter().map(|item| Value::Object(item.fields)).collect();
    Some(json!({
        "items": items,
        "total_duration": total_duration,
        "ceremony_time": ceremony_time,
        "reception_time": reception_time,
    }))
}

fn read_item(event: &Value, path: &str, out: &mut Report) -> Option<Item> {
    let obj = out.object(event, path)?;
    let before = out.error_count();
    let time_path = join(path, "time");
    let start = match member(obj, "time") {
        None => {
            out.error(
                &time_path,
                "required",
                format!("{} is required", subject(&time_path)),
            );
            None
        }
        Some(Value::String(text)) => {
            let start = parse_hh_mm(text.trim());
            if start.is_none() {
                out.error(
                    &time_path,
                    "hh_mm_time",
                    format!(
                        "{} must be a time written HH:MM between 00:00 and 23:59",
                        subject(&time_path)
                    ),
                );
            }
            start
        }
        Some(other) => {
            out.wrong_type(&time_path, "a time string (HH:MM)", other);
            None
        }
    };
    let duration = duration(obj, &join(path, "duration"), out);
    let title = out.opt_string(obj, "title", path);
    let description = out.opt_string(obj, "description", path);
    let category = out.opt_string(obj, "category", path);
    let vendors = vendor_assignments(obj, &join(path, "vendor_assignments"), out);
    let (Some(start), Some(duration)) = (start, duration) else {
        return None;
    };
    let (Ok(title), Ok(description), Ok(category), Ok(vendors)) = (title, description, category, vendors)
    else {
        return None;
    };
    if out.error_count() > before {
        return None;
    }

    let finish = start + duration;
    let mut fields = Map::new();
    fields.insert("time".to_owned(), json!(hh_mm(start)));
    fields.insert("end".to_owned(), json!(hh_mm(finish % MINUTES_PER_DAY)));
    fields.insert("duration".to_owned(), json!(duration));
    fields.insert("ends_next_day".to_owned(), json!(finish >= MINUTES_PER_DAY));
    let mentions = |word: &str| {
        category
            .as_deref()
            .is_some_and(|c| c.trim().eq_ignore_ascii_case(word))
            || title.as_deref().is_some_and(|t| t.to_lowercase().contains(word))
    };
    let (ceremony, reception) = (mentions("ceremony"), mentions("reception"));
    for (key, text) in [
        ("title", title),
        ("description", description),
        ("category", category),
    ] {
        if let Some(text) = text {
            fields.insert(key.to_owned(), Value::String(text));
        }
    }
    if let Some(vendors) = vendors {
        fields.insert("vendor_assignments".to_owned(), Value::Array(vendors));
    }
    Some(Item {
        start,
        duration,
        fields,
        ceremony,
        reception,
    })
}

/// Whole minutes from 1 to 1440; 60 when missing.
fn duration(obj: &Map<String, Value>, path: &str, out: &mut Report) -> Option<u64> {
    let Some(raw) = member(obj, "duration") else {
        return Some(DEFAULT_DURATION);
    };
    match read_u64(raw) {
        Ok(0) | Err(IntProblem::Negative | IntProblem::Fractional) => {
            out.error(
                path,
                "positive_duration",
                format!("{} must be a positive whole number of minutes", subject(path)),
            );
            None
        }
        Ok(minutes) if minutes <= MINUTES_PER_DAY => Some(minutes),
        Ok(_) | Err(IntProblem::TooLarge) => {
            out.error(
                path,
                "duration_range",
                format!("{} must be at most 1440 minutes (one day)", subject(path)),
            );
            None
        }
        Err(IntProblem::NotNumber) => {
            out.wrong_type(path, "a number of minutes", raw);
            None
        }
    }
}

/// An array of strings (vendor roles or ids); `Ok(None)` when missing.
fn vendor_assignments(
    obj: &Map<String, Value>,
    path: &str,
    out: &mut Report,
) -> Result<Option<Vec<Value>>, ()> {
    let Some(raw) = member(obj, "vendor_assignments") else {
        return Ok(None);
    };
    let Value::Array(list) = raw else {
        out.wrong_type(path, "an array of strings", raw);
        return Err(());
    };
    let mut ok = true;
    for (i, entry) in list.iter().enumerate() {
        if !entry.is_string() {
            out.wrong_type(&index(path, i), "a string", entry);
            ok = false;
        }
    }
    if ok {
        Ok(Some(list.clone()))
    } else {
        Err(())
    }
}

/// Minutes since midnight of a strict `HH:MM` in 00:00–23:59.
fn parse_hh_mm(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 5 || b[2] != b':' || ![0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit()) {
        return None;
    }
    let digit = |i: usize| u64::from(b[i] - b'0');
    let (hours, minutes) = (digit(0) * 10 + digit(1), digit(3) * 10 + digit(4));
    (hours < 24 && minutes < 60).then_some(hours * 60 + minutes)
}

fn hh_mm(minutes: u64) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}
