//! budget_category.

use serde_json::{json, Value};

use super::{bad, err, ok};

const B: &str = "budget_category";

#[test]
fn the_example_budget_line_gets_its_variance() {
    let n = ok(
        B,
        json!({"category": "Photography", "budgeted_amount": 250000, "actual_amount": 275000, "currency": "GBP",
               "percentage_of_total": 12.5, "vendor_id": "v-1", "payment_status": "deposit_paid", "extra": 1}),
    );
    assert_eq!(
        n,
        json!({"category": "Photography", "budgeted_amount": 250000, "actual_amount": 275000, "currency": "GBP",
               "variance": 25000, "percentage_of_total": 12.5, "vendor_id": "v-1",
               "payment_status": "deposit_paid"})
    );
}

#[test]
fn missing_amounts_are_absent_and_the_currency_defaults_to_gbp() {
    assert_eq!(
        ok(B, json!({"category": "Flowers"})),
        json!({"category": "Flowers", "currency": "GBP"})
    );
    let n = ok(
        B,
        json!({"category": "Flowers", "budgeted_amount": 80000, "actual_amount": null}),
    );
    assert_eq!(
        n,
        json!({"category": "Flowers", "budgeted_amount": 80000, "currency": "GBP"})
    );
}

#[test]
fn an_underspend_has_a_negative_variance() {
    let n = ok(
        B,
        json!({"category": "Cake", "budgeted_amount": 50000, "actual_amount": 42000, "currency": "EUR"}),
    );
    assert_eq!(n["variance"], json!(-8000));
}

#[test]
fn currencies_are_trimmed_upper_cased_and_must_be_iso_4217() {
    assert_eq!(
        ok(B, json!({"category": "Venue", "currency": " usd "}))["currency"],
        json!("USD")
    );
    assert_eq!(
        ok(B, json!({"category": "Venue", "currency": "JPY"}))["currency"],
        json!("JPY")
    );
    for code in ["XYZ", "GB", "POUNDS", "", "£"] {
        assert_eq!(
            bad(B, json!({"category": "Venue", "currency": code})),
            err("currency", "iso4217_currency"),
            "{code}"
        );
    }
    assert_eq!(
        bad(B, json!({"category": "Venue", "currency": 826})),
        err("currency", "type")
    );
}

#[test]
fn amounts_near_i64_max_are_exact_and_an_overflowing_variance_is_an_amount_range_error() {
    let n = ok(
        B,
        json!({"category": "Rings", "budgeted_amount": i64::MAX, "actual_amount": i64::MAX}),
    );
    assert_eq!(
        (n["budgeted_amount"].clone(), n["variance"].clone()),
        (json!(i64::MAX), json!(0))
    );
    let n = ok(
        B,
        json!({"category": "Rings", "budgeted_amount": i64::MIN, "actual_amount": -1}),
    );
    assert_eq!(n["variance"], json!(i64::MAX));
    assert_eq!(
        bad(
            B,
            json!({"category": "Rings", "budgeted_amount": -1, "actual_amount": i64::MAX})
        ),
        err("", "amount_range")
    );
    assert_eq!(
        bad(
            B,
            json!({"category": "Rings", "budgeted_amount": 1, "actual_amount": i64::MIN})
        ),
        err("", "amount_range")
    );
    assert_eq!(
        bad(B, json!({"category": "Rings", "actual_amount": u64::MAX})),
        err("actual_amount", "amount_range")
    );
    assert_eq!(
        bad(B, json!({"category": "Rings", "budgeted_amount": 1e300})),
        err("budgeted_amount", "amount_range")
    );
    assert_eq!(
        bad(B, json!({"category": "Rings", "budgeted_amount": 9.3e18})),
        err("budgeted_amount", "amount_range")
    );
}

#[test]
fn amounts_must_be_whole_minor_units() {
    assert_eq!(
        ok(B, json!({"category": "Dress", "budgeted_amount": 150000.0}))["budgeted_amount"],
        json!(150000)
    );
    assert_eq!(
        bad(B, json!({"category": "Dress", "budgeted_amount": 1500.5})),
        err("budgeted_amount", "integer_amount")
    );
    assert_eq!(
        bad(B, json!({"category": "Dress", "actual_amount": "1500"})),
        err("actual_amount", "type")
    );
}

#[test]
fn the_category_is_a_required_non_empty_string_and_may_be_unicode() {
    assert_eq!(
        ok(B, json!({"category": " Fleurs & décor 🌸 "}))["category"],
        json!("Fleurs & décor 🌸")
    );
    assert_eq!(bad(B, json!({"budgeted_amount": 1})), err("category", "required"));
    assert_eq!(bad(B, json!({"category": ""})), err("category", "required"));
    assert_eq!(
        bad(B, json!({"category": ["Photography"]})),
        err("category", "type")
    );
    assert_eq!(bad(B, json!("Photography")), err("", "type"));
}

#[test]
fn percentage_vendor_and_status_are_checked_when_present() {
    let with = |key: &str, v: Value| {
        let mut line = json!({"category": "Music"});
        line[key] = v;
        line
    };
    assert_eq!(
        ok(B, with("percentage_of_total", json!(0)))["percentage_of_total"],
        json!(0)
    );
    assert_eq!(
        ok(B, with("percentage_of_total", json!(100)))["percentage_of_total"],
        json!(100)
    );
    assert_eq!(
        bad(B, with("percentage_of_total", json!(100.5))),
        err("percentage_of_total", "percentage_range")
    );
    assert_eq!(
        bad(B, with("percentage_of_total", json!(-1))),
        err("percentage_of_total", "percentage_range")
    );
    assert_eq!(
        bad(B, with("percentage_of_total", json!("12%"))),
        err("percentage_of_total", "type")
    );
    assert_eq!(
        ok(B, with("vendor_id", json!(12345)))["vendor_id"],
        json!("12345")
    );
    assert_eq!(
        bad(B, with("vendor_id", json!({"id": 1}))),
        err("vendor_id", "type")
    );
    assert_eq!(
        bad(B, with("payment_status", json!(true))),
        err("payment_status", "type")
    );
}

#[test]
fn every_bad_budget_key_is_reported_at_once() {
    let errors = bad(
        B,
        json!({"currency": "XYZ", "budgeted_amount": 0.5, "percentage_of_total": 200}),
    );
    let rules: Vec<&str> = errors.iter().map(|(_, rule)| *rule).collect();
    assert_eq!(
        rules,
        [
            "required",
            "integer_amount",
            "iso4217_currency",
            "percentage_range"
        ]
    );
}
