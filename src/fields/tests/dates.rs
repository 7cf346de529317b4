//! wedding_date and the generic date.

use serde_json::json;

use super::{bad, err, ok, rules, warning_rules};
use crate::fields::{check, Context, FieldType, PastDatePolicy, Rules};

const WD: &str = "wedding_date";

#[test]
fn a_wedding_date_gets_its_weekday_and_season() {
    assert_eq!(
        ok(WD, json!("2027-06-19")),
        json!({"date": "2027-06-19", "weekday": "saturday", "season": "summer", "in_past": false})
    );
    assert_eq!(ok(WD, json!(" 2026-12-25 "))["weekday"], json!("friday"));
}

#[test]
fn seasons_follow_northern_hemisphere_months_at_their_boundaries() {
    for (date, season) in [
        ("2027-02-28", "winter"),
        ("2027-03-01", "spring"),
        ("2027-05-31", "spring"),
        ("2027-06-01", "summer"),
        ("2027-08-31", "summer"),
        ("2027-09-01", "autumn"),
        ("2027-11-30", "autumn"),
        ("2027-12-01", "winter"),
        ("2028-01-15", "winter"),
    ] {
        assert_eq!(ok(WD, json!(date))["season"], json!(season), "{date}");
    }
}

#[test]
fn the_29th_of_february_is_valid_only_in_a_leap_year() {
    assert_eq!(ok(WD, json!("2028-02-29"))["weekday"], json!("tuesday"));
    assert_eq!(ok("date", json!("2400-02-29")), json!("2400-02-29"));
    assert_eq!(bad(WD, json!("2027-02-29")), err("", "iso_date"));
    assert_eq!(bad(WD, json!("2100-02-29")), err("", "iso_date"));
    assert_eq!(bad("date", json!("2027-02-29")), err("", "iso_date"));
}

#[test]
fn loose_or_impossible_date_strings_are_iso_date_errors() {
    for text in [
        "2027-6-19",
        "19/06/2027",
        "2027-06-19T10:00:00Z",
        "2027-13-01",
        "2027-00-10",
        "2027-06-00",
        "2027-06-32",
        "2027-04-31",
        "0000-01-01",
        "+2027-06-19",
        "",
        "２０２７-06-19",
    ] {
        assert_eq!(bad(WD, json!(text)), err("", "iso_date"), "{text}");
    }
}

#[test]
fn a_date_that_is_not_a_string_is_a_type_error() {
    assert_eq!(bad(WD, json!(20270619)), err("", "type"));
    assert_eq!(bad(WD, json!({"date": "2027-06-19"})), err("", "type"));
    assert_eq!(bad("date", json!(true)), err("", "type"));
}

fn with_policy(policy: PastDatePolicy) -> Rules {
    Rules {
        past_wedding_date: policy,
        ..rules()
    }
}

#[test]
fn a_past_wedding_date_is_allowed_warned_or_refused_per_policy() {
    let past = json!("2026-04-30");
    let ctx = Context::default();

    let allowed = check(
        &FieldType::WeddingDate,
        &past,
        &ctx,
        &with_policy(PastDatePolicy::Allow),
    );
    assert!(allowed.valid && allowed.warnings.is_empty());
    assert_eq!(allowed.normalized.expect("valid")["in_past"], json!(true));

    let warned = check(
        &FieldType::WeddingDate,
        &past,
        &ctx,
        &with_policy(PastDatePolicy::Warn),
    );
    assert!(warned.valid);
    assert_eq!(warning_rules(&warned), ["past_date"]);

    let refused = check(
        &FieldType::WeddingDate,
        &past,
        &ctx,
        &with_policy(PastDatePolicy::Error),
    );
    assert!(!refused.valid && refused.normalized.is_none());
    assert_eq!(refused.errors[0].rule, "past_date");
}

#[test]
fn today_is_not_in_the_past() {
    let n = ok(WD, json!("2026-05-01"));
    assert_eq!(n["in_past"], json!(false));
}

#[test]
fn the_generic_date_type_is_validated_but_never_judged_past() {
    assert_eq!(ok("date", json!("1990-01-01")), json!("1990-01-01"));
    assert_eq!(ok("date", json!(" 2027-01-01\n")), json!("2027-01-01"));
    assert_eq!(bad("date", json!("01-01-2027")), err("", "iso_date"));
}
