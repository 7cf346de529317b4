//! `venue_selector`: a Google Places result reduced to the venue facts the CRMs need.
//!
//! `name` is the only required key; unknown keys are ignored. Coordinates come from
//! `geometry.location` and must come as a pair within range. The venue phone is a business number
//! that Places may give in national format, so a phone that cannot be made E.164 is kept as trimmed text
//! with an `e164_phone` *warning* rather than making the whole venue invalid.

use serde_json::{json, Map, Value};

use super::generic::e164;
use super::numbers::{count, read_u64};
use super::report::{join, kind, member, subject, Report};

/// `(Places type, venue kind)`, checked in the order of the result's `types`.
const KINDS: [(&str, &str); 10] = [
    ("church", "religious"),
    ("place_of_worship", "religious"),
    ("mosque", "religious"),
    ("synagogue", "religious"),
    ("hindu_temple", "religious"),
    ("hotel", "hotel"),
    ("lodging", "hotel"),
    ("restaurant", "restaurant"),
    ("park", "outdoor"),
    ("banquet_hall", "banquet_hall"),
];

pub(super) fn venue_selector(value: &Value, out: &mut Report) -> Option<Value> {
    let obj = out.object(value, "")?;
    let before = out.error_count();
    let mut normalized = Map::new();

    match member(obj, "name") {
        None => out.error("name", "required", "`name` is required".to_owned()),
        Some(Value::String(s)) if s.trim().is_empty() => {
            out.error("name", "required", "`name` must not be empty".to_owned())
        }
        Some(Value::String(s)) => put(&mut normalized, "name", json!(s.trim())),
        Some(other) => out.wrong_type("name", "a string", other),
    }
    for key in ["formatted_address", "place_id"] {
        if let Ok(Some(s)) = out.opt_string(obj, key, "") {
            put(&mut normalized, key, json!(s.trim()));
        }
    }
    coordinates(obj, &mut normalized, out);
    phone(obj, &mut normalized, out);
    if let Ok(Some(site)) = out.opt_string(obj, "website", "") {
        match http_url(&site) {
            Some(url) => put(&mut normalized, "website", json!(url)),
            None => out.error(
                "website",
                "http_url",
                "`website` must be an http or https URL".to_owned(),
            ),
        }
    }
    put(&mut normalized, "kind", json!(venue_kind(obj, out)));
    if let Some(raw) = member(obj, "estimated_capacity") {
        if let Some(n) = count(raw, "estimated_capacity", out) {
            put(&mut normalized, "estimated_capacity", json!(n));
        }
    }
    rating(obj, &mut normalized, out);
    price_level(obj, &mut normalized, out);

    if out.error_count() > before {
        return None;
    }
    Some(Value::Object(normalized))
}

fn put(map: &mut Map<String, Value>, key: &str, value: Value) {
    map.insert(key.to_owned(), value);
}

fn coordinates(obj: &Map<String, Value>, normalized: &mut Map<String, Value>, out: &mut Report) {
    let Some(geometry) = member(obj, "geometry") else {
        return;
    };
    let Some(geometry) = out.object(geometry, "geometry") else {
        return;
    };
    let Some(location) = member(geometry, "location") else {
        return;
    };
    let Some(location) = out.object(location, "geometry.location") else {
        return;
    };
    let lat = coordinate(location, "lat", 90.0, "latitude_range", out);
    let lng = coordinate(location, "lng", 180.0, "longitude_range", out);
    match (lat, lng) {
        (Some(Some(lat)), Some(Some(lng))) => {
            put(normalized, "lat", json!(lat));
            put(normalized, "lng", json!(lng));
        }
        (Some(None), Some(Some(_))) => required_pair(out, "lat"),
        (Some(Some(_)), Some(None)) => required_pair(out, "lng"),
        _ => {}
    }
}

fn required_pair(out: &mut Report, key: &str) {
    let path = join("geometry.location", key);
    out.error(
        &path,
        "required",
        format!(
            "{} is required when the other coordinate is given",
            subject(&path)
        ),
    );
}

/// `None` when invalid (issue reported), `Some(None)` when absent.
fn coordinate(
    location: &Map<String, Value>,
    key: &str,
    bound: f64,
    rule: &'static str,
    out: &mut Report,
) -> Option<Option<f64>> {
    let path = join("geometry.location", key);
    let Some(raw) = member(location, key) else {
        return Some(None);
    };
    match raw.as_f64() {
        Some(x) if x.is_finite() && (-bound..=bound).contains(&x) => Some(Some(x)),
        Some(_) => {
            out.error(
                &path,
                rule,
                format!("{} must be between -{bound} and {bound}", subject(&path)),
            );
            None
        }
        None => {
            out.wrong_type(&path, "a number", raw);
            None
        }
    }
}

fn phone(obj: &Map<String, Value>, normalized: &mut Map<String, Value>, out: &mut Report) {
    for key in ["international_phone_number", "phone_number"] {
        let Ok(Some(text)) = out.opt_string(obj, key, "") else {
            continue;
        };
        match e164(&text) {
            Ok(number) => put(normalized, "phone", json!(number)),
            Err(_) => {
                out.warn(
                    key,
                    "e164_phone",
                    format!("`{key}` could not be written in E.164 form; kept as text"),
                );
                put(normalized, "phone", json!(text.trim()));
            }
        }
        return;
    }
}

/// A trimmed http(s) URL with a non-empty host and no whitespace, scheme lower-cased.
pub(super) fn http_url(text: &str) -> Option<String> {
    let text = text.trim();
    let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
    let scheme = ["https://", "http://"]
        .into_iter()
        .find(|s| lower.starts_with(s))?;
    let rest = text.get(scheme.len()..)?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let clean = rest.chars().all(|c| !c.is_whitespace() && !c.is_control());
    (clean && !host.is_empty()).then(|| format!("{scheme}{rest}"))
}

fn venue_kind(obj: &Map<String, Value>, out: &mut Report) -> &'static str {
    let Some(types) = member(obj, "types") else {
        return "other";
    };
    let Value::Array(types) = types else {
        out.wrong_type("types", "an array of strings", types);
        return "other";
    };
    types
        .iter()
        .filter_map(Value::as_str)
        .find_map(|t| KINDS.iter().find(|(place, _)| *place == t).map(|(_, kind)| *kind))
        .unwrap_or("other")
}

fn rating(obj: &Map<String, Value>, normalized: &mut Map<String, Value>, out: &mut Report) {
    let Some(raw) = member(obj, "rating") else { return };
    match raw.as_f64() {
        Some(r) if r.is_finite() && (0.0..=5.0).contains(&r) => put(normalized, "rating", raw.clone()),
        Some(_) => out.error(
            "rating",
            "rating_range",
            "`rating` must be between 0 and 5".to_owned(),
        ),
        None => out.wrong_type("rating", "a number", raw),
    }
}

fn price_level(obj: &Map<String, Value>, normalized: &mut Map<String, Value>, out: &mut Report) {
    let Some(raw) = member(obj, "price_level") else {
        return;
    };
    if !raw.is_number() {
        return out.error(
            "price_level",
            "type",
            format!("`price_level` must be a number, found {}", kind(raw)),
        );
    }
    match read_u64(raw) {
        Ok(p) if p <= 4 => put(normalized, "price_level", json!(p)),
        _ => out.error(
            "price_level",
            "price_level_range",
            "`price_level` must be a whole number from 0 to 4".to_owned(),
        ),
    }
}
