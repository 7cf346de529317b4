//! guest_count_matrix and dietary_matrix.

use serde_json::json;

use super::{bad, err, ok, rules, run, warning_rules};
use crate::fields::{check, Context, FieldType, Rules};

const GUESTS: &str = "guest_count_matrix";
const DIET: &str = "dietary_matrix";

#[test]
fn guest_counts_normalise_with_total_and_breakdown() {
    let n = ok(GUESTS, json!({"adults": 120, "children": 14, "infants": 3}));
    assert_eq!(
        n,
        json!({"adults": 120, "children": 14, "infants": 3, "total": 137,
               "breakdown": "120 adults, 14 children, 3 infants"})
    );
}

#[test]
fn one_of_each_guest_is_written_in_the_singular() {
    let n = ok(GUESTS, json!({"adults": 1, "children": 1, "infants": 1}));
    assert_eq!(n["breakdown"], json!("1 adult, 1 child, 1 infant"));
}

#[test]
fn zero_guests_read_no_guests_whether_counted_or_absent() {
    assert_eq!(
        ok(GUESTS, json!({})),
        json!({"total": 0, "breakdown": "no guests"})
    );
    let n = ok(GUESTS, json!({"adults": 0, "children": 0}));
    assert_eq!(
        n,
        json!({"adults": 0, "children": 0, "total": 0, "breakdown": "no guests"})
    );
}

#[test]
fn missing_guest_counts_are_absent_not_zero_but_add_nothing_to_the_total() {
    let n = ok(GUESTS, json!({"adults": 90, "infants": null}));
    assert_eq!(n, json!({"adults": 90, "total": 90, "breakdown": "90 adults"}));
    let n = ok(GUESTS, json!({"children": 2, "infants": 0}));
    assert_eq!(n["breakdown"], json!("2 children, 0 infants"));
}

#[test]
fn unknown_guest_keys_are_ignored_and_integral_floats_accepted() {
    let n = ok(GUESTS, json!({"adults": 100.0, "pets": "two dogs", "total": 5}));
    assert_eq!(n, json!({"adults": 100, "total": 100, "breakdown": "100 adults"}));
}

#[test]
fn negative_fractional_and_non_numeric_guest_counts_are_errors_naming_the_key() {
    assert_eq!(
        bad(GUESTS, json!({"adults": -1})),
        err("adults", "non_negative_integer")
    );
    assert_eq!(
        bad(GUESTS, json!({"children": 2.5})),
        err("children", "non_negative_integer")
    );
    assert_eq!(
        bad(GUESTS, json!({"infants": "3"})),
        err("infants", "non_negative_integer")
    );
    assert_eq!(
        bad(GUESTS, json!({"adults": true})),
        err("adults", "non_negative_integer")
    );
    let both = bad(GUESTS, json!({"adults": -1, "children": [1]}));
    assert_eq!(both.len(), 2);
}

#[test]
fn a_guest_matrix_that_is_not_an_object_is_a_type_error() {
    assert_eq!(bad(GUESTS, json!([120, 14])), err("", "type"));
    assert_eq!(bad(GUESTS, json!(137)), err("", "type"));
    assert_eq!(bad(GUESTS, json!("137")), err("", "type"));
}

#[test]
fn guest_counts_too_large_to_add_up_are_a_count_range_error() {
    assert_eq!(
        bad(GUESTS, json!({"adults": 1e300})),
        err("adults", "count_range")
    );
    assert_eq!(
        bad(GUESTS, json!({"adults": u64::MAX, "children": 1})),
        err("", "count_range")
    );
}

#[test]
fn a_guest_total_above_the_bound_or_the_venue_capacity_is_a_warning_only() {
    let ctx = Context {
        guest_total: None,
        venue_capacity: Some(150),
    };
    let checked = check(
        &FieldType::GuestCountMatrix,
        &json!({"adults": 151}),
        &ctx,
        &rules(),
    );
    assert!(checked.valid);
    assert_eq!(warning_rules(&checked), ["over_venue_capacity"]);
    assert_eq!(checked.warnings[0].path, "");

    let checked = check(
        &FieldType::GuestCountMatrix,
        &json!({"adults": 501}),
        &ctx,
        &rules(),
    );
    assert_eq!(
        warning_rules(&checked),
        ["venue_capacity_bound", "over_venue_capacity"]
    );
    assert_eq!(checked.normalized.expect("valid")["total"], json!(501));

    let at_bounds = Context {
        guest_total: None,
        venue_capacity: Some(500),
    };
    let checked = check(
        &FieldType::GuestCountMatrix,
        &json!({"adults": 500}),
        &at_bounds,
        &rules(),
    );
    assert!(checked.warnings.is_empty());

    let lower = Rules {
        venue_capacity_warning: 100,
        ..rules()
    };
    let checked = check(
        &FieldType::GuestCountMatrix,
        &json!({"adults": 101}),
        &Context::default(),
        &lower,
    );
    assert_eq!(warning_rules(&checked), ["venue_capacity_bound"]);
}

#[test]
fn dietary_counts_are_summed_and_notes_kept() {
    let n = ok(
        DIET,
        json!({"vegetarian": 12, "vegan": 4, "gluten_free": 3, "halal": 2, "kosher": 0, "nut_allergy": 1,
               "notes": "one coeliac guest"}),
    );
    assert_eq!(
        n,
        json!({"counts": {"vegetarian": 12, "vegan": 4, "gluten_free": 3, "halal": 2, "kosher": 0,
                          "nut_allergy": 1},
               "total_requirements": 22, "notes": "one coeliac guest"})
    );
}

#[test]
fn every_known_dietary_key_is_counted_and_missing_ones_are_absent() {
    let n = ok(DIET, json!({"dairy_free": 1, "shellfish_allergy": 2, "other": 3}));
    assert_eq!(
        n,
        json!({"counts": {"dairy_free": 1, "shellfish_allergy": 2, "other": 3}, "total_requirements": 6})
    );
    assert_eq!(
        ok(DIET, json!({})),
        json!({"counts": {}, "total_requirements": 0})
    );
}

#[test]
fn unknown_numeric_dietary_keys_count_and_unknown_other_keys_are_ignored() {
    let n = ok(
        DIET,
        json!({"pescatarian": 2, "lactose_intolerant": 1, "colour": "blue", "flags": [1]}),
    );
    assert_eq!(
        n,
        json!({"counts": {"pescatarian": 2, "lactose_intolerant": 1}, "total_requirements": 3})
    );
}

#[test]
fn bad_dietary_counts_are_errors_and_odd_keys_are_not_echoed_in_paths() {
    assert_eq!(
        bad(DIET, json!({"vegan": -1})),
        err("vegan", "non_negative_integer")
    );
    assert_eq!(
        bad(DIET, json!({"halal": "two"})),
        err("halal", "non_negative_integer")
    );
    assert_eq!(
        bad(DIET, json!({"pescatarian": 1.5})),
        err("pescatarian", "non_negative_integer")
    );
    assert_eq!(
        bad(DIET, json!({"Ünïcode key": -3})),
        err("<key>", "non_negative_integer")
    );
    assert_eq!(bad(DIET, json!({"notes": 42})), err("notes", "type"));
    assert_eq!(bad(DIET, json!(["vegan"])), err("", "type"));
    assert_eq!(
        bad(DIET, json!({"vegan": u64::MAX, "halal": 1})),
        err("", "count_range")
    );
}

#[test]
fn dietary_requirements_above_the_guest_total_are_a_warning() {
    let ctx = Context {
        guest_total: Some(10),
        venue_capacity: None,
    };
    let checked = check(
        &FieldType::DietaryMatrix,
        &json!({"vegan": 6, "halal": 5}),
        &ctx,
        &rules(),
    );
    assert!(checked.valid);
    assert_eq!(warning_rules(&checked), ["exceeds_guest_total"]);
    let checked = check(
        &FieldType::DietaryMatrix,
        &json!({"vegan": 6, "halal": 4}),
        &ctx,
        &rules(),
    );
    assert!(checked.warnings.is_empty());
    assert!(
        run(DIET, json!({"vegan": 6000})).warnings.is_empty(),
        "no guest total, no warning"
    );
}
