//! Counting fields: `guest_count_matrix` and `dietary_matrix`.
//!
//! Counts are non-negative integers; a missing count is absent from the normalised form (never 0) but
//! adds 0 to a total. Totals are summed with checked arithmetic (`count_range` on overflow). Dietary
//! `notes` are personal data: they are copied into the normalised form and nowhere else.

use serde_json::{json, Map, Value};

use super::numbers::count;
use super::report::{join, member, safe_key, Report};
use super::{Context, Rules};

const GUESTS: [(&str, &str, &str); 3] = [
    ("adults", "adult", "adults"),
    ("children", "child", "children"),
    ("infants", "infant", "infants"),
];

/// `{"adults", "children", "infants", "total", "breakdown"}`.
pub(super) fn guest_count_matrix(
    value: &Value,
    ctx: &Context,
    rules: &Rules,
    out: &mut Report,
) -> Option<Value> {
    let obj = out.object(value, "")?;
    let before = out.error_count();
    let mut normalized = Map::new();
    let mut parts = Vec::new();
    let mut total: Option<u64> = Some(0);
    for (key, one, many) in GUESTS {
        let Some(raw) = member(obj, key) else { continue };
        let Some(n) = count(raw, key, out) else { continue };
        total = total.and_then(|t| t.checked_add(n));
        normalized.insert(key.to_owned(), json!(n));
        parts.push(format!("{n} {}", if n == 1 { one } else { many }));
    }
    let Some(total) = total else {
        out.error(
            "",
            "count_range",
            "the guest total is too large to be a count".to_owned(),
        );
        return None;
    };
    if out.error_count() > before {
        return None;
    }
    if total > u64::from(rules.venue_capacity_warning) {
        out.warn(
            "",
            "venue_capacity_bound",
            "the guest total is above the configured venue capacity warning bound".to_owned(),
        );
    }
    if ctx.venue_capacity.is_some_and(|cap| total > u64::from(cap)) {
        out.warn(
            "",
            "over_venue_capacity",
            "the guest total is above the venue's estimated capacity".to_owned(),
        );
    }
    let breakdown = if total == 0 {
        "no guests".to_owned()
    } else {
        parts.join(", ")
    };
    normalized.insert("total".to_owned(), json!(total));
    normalized.insert("breakdown".to_owned(), json!(breakdown));
    Some(Value::Object(normalized))
}

/// Dietary requirement keys the app's form builder knows.
pub(super) const DIETARY_KEYS: [&str; 9] = [
    "vegetarian",
    "vegan",
    "gluten_free",
    "halal",
    "kosher",
    "nut_allergy",
    "dairy_free",
    "shellfish_allergy",
    "other",
];

/// Keys of a dietary matrix that are never counts: the notes, and totals a form may carry (they
/// would count the same guests twice).
const NOT_COUNTS: [&str; 3] = ["notes", "total", "total_requirements"];

/// `{"counts": {...}, "total_requirements", "notes"}`.
pub(super) fn dietary_matrix(value: &Value, ctx: &Context, out: &mut Report) -> Option<Value> {
    let obj = out.object(value, "")?;
    let before = out.error_count();
    let mut counts = Map::new();
    let mut total: Option<u64> = Some(0);
    for (key, raw) in obj {
        if NOT_COUNTS.contains(&key.as_str()) || raw.is_null() {
            continue;
        }
        let known = DIETARY_KEYS.contains(&key.as_str());
        if !known && !raw.is_number() {
            continue; // unknown non-numeric keys are ignored
        }
        let path = join("", safe_key(key));
        let Some(n) = count(raw, &path, out) else { continue };
        total = total.and_then(|t| t.checked_add(n));
        counts.insert(key.clone(), json!(n));
    }
    let notes = out.opt_string(obj, "notes", "");
    let Some(total) = total else {
        out.error(
            "",
            "count_range",
            "the sum of dietary requirements is too large to be a count".to_owned(),
        );
        return None;
    };
    if out.error_count() > before {
        return None;
    }
    if ctx.guest_total.is_some_and(|guests| total > u64::from(guests)) {
        out.warn(
            "",
            "exceeds_guest_total",
            "the sum of dietary requirements is above the wedding's guest total".to_owned(),
        );
    }
    let mut normalized = Map::new();
    normalized.insert("counts".to_owned(), Value::Object(counts));
    normalized.insert("total_requirements".to_owned(), json!(total));
    if let Ok(Some(notes)) = notes {
        normalized.insert("notes".to_owned(), Value::String(notes));
    }
    Some(Value::Object(normalized))
}
