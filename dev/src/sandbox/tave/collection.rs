//! Collection reads (`GET /{resource}`): filters, `sortBy`, paging and the collection envelope.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::custom_fields::CUSTOM_FIELD_KINDS;
use super::{invalid, param, reply, Detail, Kind, State};

pub(super) fn list(st: &State, kind: Kind, query: &[(String, String)]) -> Response {
    let mut detail = Detail::new();
    let get = |k: &str| param(query, k);
    let int = |k: &str, default: i64, detail: &mut Detail| match get(k) {
        None => default,
        Some(v) => v.parse::<i64>().unwrap_or_else(|_| {
            detail.insert(k.to_owned(), "must be an integer".to_owned());
            default
        }),
    };
    let page = int("page", 1, &mut detail);
    if page < 1 {
        detail.insert("page".into(), "must be at least 1".into());
    }
    let size = int("pageSize", 100, &mut detail);
    if !(10..=100).contains(&size) {
        detail.insert("pageSize".into(), "must be between 10 and 100".into());
    }
    let boolean = |k: &str, detail: &mut Detail| match get(k) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => {
            detail.insert(k.to_owned(), "must be a boolean".to_owned());
            false
        }
    };
    let include_closed = boolean("includeClosed", &mut detail);
    let _ = boolean("includeHidden", &mut detail);
    let sort = get("sortBy").unwrap_or("id");
    let (sort_key, descending) = match sort.split_once(' ') {
        Some((k, "desc")) => (k, true),
        Some((k, "asc")) => (k, false),
        Some(_) => ("", false),
        None => (sort, false),
    };
    if !kind.sortable().contains(&sort_key) {
        detail.insert(
            "sortBy".into(),
            format!(
                "must be one of {} with an optional asc or desc",
                kind.sortable().join(", ")
            ),
        );
    }
    if kind == Kind::CustomField {
        if let Some(v) = get("canApplyTo") {
            if !["job", "contact"].contains(&v.to_ascii_lowercase().as_str()) {
                detail.insert("canApplyTo".into(), "must be job or contact".into());
            }
        }
        for (_, v) in query.iter().filter(|(k, _)| k == "kind" || k == "kind[]") {
            if !CUSTOM_FIELD_KINDS.iter().any(|k| k.eq_ignore_ascii_case(v)) {
                detail.insert("kind".into(), "is not a custom field kind".into());
            }
        }
    }
    if let Some(v) = get("externalMappingId") {
        if v.chars().count() > 64 {
            detail.insert("externalMappingId".into(), "must be at most 64 characters".into());
        }
    }
    if !detail.is_empty() {
        return invalid(detail);
    }
    let kinds: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "kind" || k == "kind[]")
        .map(|(_, v)| v.to_ascii_lowercase())
        .collect();
    let mut items: Vec<&Value> = kind
        .list(st)
        .iter()
        .filter(|v| {
            let eq = |k: &str, field: &str| get(k).map_or(true, |want| v[field] == want);
            let mapped = get("externalMappingId").map_or(true, |want| {
                v["externalMappings"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|e| e["id"] == want))
            });
            let open = include_closed || kind != Kind::Job || v["closed"] != true;
            let email = get("email").map_or(true, |want| {
                v["email"].as_str().is_some_and(|e| e.eq_ignore_ascii_case(want))
            });
            let applies = get("canApplyTo").map_or(true, |want| {
                v["canApplyTo"]
                    .as_str()
                    .is_some_and(|c| c.eq_ignore_ascii_case(want))
            });
            let of_kind = kind != Kind::CustomField
                || kinds.is_empty()
                || kinds.contains(&v["kind"].as_str().unwrap_or_default().to_ascii_lowercase());
            mapped
                && open
                && email
                && applies
                && of_kind
                && eq("jobId", "jobId")
                && eq("contactId", "contactId")
        })
        .collect();
    items.sort_by(|a, b| {
        let o = compare(&a[sort_key], &b[sort_key]).then_with(|| compare(&a["id"], &b["id"]));
        if descending {
            o.reverse()
        } else {
            o
        }
    });
    let total = items.len() as i64;
    let page_items: Vec<Value> = items
        .into_iter()
        .skip(((page - 1) * size) as usize)
        .take(size as usize)
        .cloned()
        .collect();
    reply(
        StatusCode::OK,
        &json!({
            "type": kind.collection(),
            "meta": {
                "currentPage": page,
                "totalPages": (total + size - 1) / size,
                "totalItems": total,
                "rows": size,
            },
            "items": page_items,
        }),
    )
}

fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or_default()
            .total_cmp(&y.as_f64().unwrap_or_default()),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
        (Value::Null, _) => std::cmp::Ordering::Less,
        (_, Value::Null) => std::cmp::Ordering::Greater,
        _ => std::cmp::Ordering::Equal,
    }
}
