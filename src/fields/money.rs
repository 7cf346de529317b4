//! `budget_category`: one line of the wedding budget, amounts in minor units (pence, cents).
//!
//! Amounts are i64 minor units and may be negative (a refund or credit). The variance is computed with
//! checked arithmetic: amounts near i64::MAX whose difference does not fit are the error
//! `amount_range`, never an overflow. Floats are accepted for an amount only when integral and exact.
//! The currency is trimmed and upper-cased (Stripe writes `gbp`) and must be a listed ISO 4217 code.

use serde_json::{json, Map, Value};

use super::currency::is_iso4217;
use super::numbers::{read_i64, IntProblem};
use super::report::{member, subject, Report};

const DEFAULT_CURRENCY: &str = "GBP";

pub(super) fn budget_category(value: &Value, out: &mut Report) -> Option<Value> {
    let obj = out.object(value, "")?;
    let before = out.error_count();
    let mut normalized = Map::new();

    match member(obj, "category") {
        None => out.error("category", "required", "`category` is required".to_owned()),
        Some(Value::String(s)) if s.trim().is_empty() => {
            out.error("category", "required", "`category` must not be empty".to_owned())
        }
        Some(Value::String(s)) => put(&mut normalized, "category", json!(s.trim())),
        Some(other) => out.wrong_type("category", "a string", other),
    }
    let budgeted = amount(obj, "budgeted_amount", &mut normalized, out);
    let actual = amount(obj, "actual_amount", &mut normalized, out);
    if let (Some(budgeted), Some(actual)) = (budgeted, actual) {
        match actual.checked_sub(budgeted) {
            Some(variance) => put(&mut normalized, "variance", json!(variance)),
            None => out.error(
                "",
                "amount_range",
                "the variance (actual minus budgeted) is outside the supported amount range".to_owned(),
            ),
        }
    }
    currency(obj, &mut normalized, out);
    if let Some(raw) = member(obj, "percentage_of_total") {
        match raw.as_f64() {
            Some(p) if p.is_finite() && (0.0..=100.0).contains(&p) => {
                put(&mut normalized, "percentage_of_total", raw.clone())
            }
            Some(_) => out.error(
                "percentage_of_total",
                "percentage_range",
                "`percentage_of_total` must be between 0 and 100".to_owned(),
            ),
            None => out.wrong_type("percentage_of_total", "a number", raw),
        }
    }
    if let Ok(Some(status)) = out.opt_string(obj, "payment_status", "") {
        put(&mut normalized, "payment_status", json!(status.trim()));
    }
    match member(obj, "vendor_id") {
        None => {}
        Some(Value::String(id)) => put(&mut normalized, "vendor_id", json!(id.trim())),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
            put(&mut normalized, "vendor_id", json!(n.to_string()))
        }
        Some(other) => out.wrong_type("vendor_id", "a string", other),
    }

    if out.error_count() > before {
        return None;
    }
    Some(Value::Object(normalized))
}

fn put(map: &mut Map<String, Value>, key: &str, value: Value) {
    map.insert(key.to_owned(), value);
}

/// An optional amount in minor units; copied into `normalized` when valid.
fn amount(
    obj: &Map<String, Value>,
    key: &str,
    normalized: &mut Map<String, Value>,
    out: &mut Report,
) -> Option<i64> {
    let raw = member(obj, key)?;
    let who = subject(key);
    match read_i64(raw) {
        Ok(n) => {
            put(normalized, key, json!(n));
            Some(n)
        }
        Err(IntProblem::NotNumber) => {
            out.wrong_type(key, "an integer amount in minor units", raw);
            None
        }
        Err(IntProblem::Fractional) => {
            out.error(
                key,
                "integer_amount",
                format!("{who} must be a whole number of minor units (pence, cents)"),
            );
            None
        }
        Err(IntProblem::TooLarge | IntProblem::Negative) => {
            out.error(
                key,
                "amount_range",
                format!("{who} is outside the supported amount range"),
            );
            None
        }
    }
}

fn currency(obj: &Map<String, Value>, normalized: &mut Map<String, Value>, out: &mut Report) {
    let code = match out.opt_string(obj, "currency", "") {
        Ok(None) => DEFAULT_CURRENCY.to_owned(),
        Ok(Some(text)) => text.trim().to_ascii_uppercase(),
        Err(()) => return,
    };
    if is_iso4217(&code) {
        put(normalized, "currency", json!(code));
    } else {
        out.error(
            "currency",
            "iso4217_currency",
            "`currency` must be an ISO 4217 currency code".to_owned(),
        );
    }
}
