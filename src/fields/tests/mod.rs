//! Unit tests of field checking: one file per field family, plus the cross-cutting guarantees here
//! (privacy of issues, null, pass-through, panic-freedom on arbitrary JSON).

mod counts;
mod dates;
mod generic;
mod money;
mod timeline;
mod venue;

use chrono::NaiveDate;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

/// "Today" for every test: 1 May 2026.
pub(super) fn rules() -> Rules {
    Rules::new(NaiveDate::from_ymd_opt(2026, 5, 1).expect("valid date"))
}

pub(super) fn run(field_type: &str, value: Value) -> Checked {
    check(
        &FieldType::parse(field_type),
        &value,
        &Context::default(),
        &rules(),
    )
}

/// Asserts the value is valid without warnings and returns its normalised form.
pub(super) fn ok(field_type: &str, value: Value) -> Value {
    let checked = run(field_type, value);
    assert!(checked.valid, "expected valid, got {:?}", checked.errors);
    assert!(
        checked.warnings.is_empty(),
        "unexpected warnings {:?}",
        checked.warnings
    );
    checked.normalized.expect("valid means normalized")
}

/// Asserts the value is invalid and returns its errors as `(path, rule)`.
pub(super) fn bad(field_type: &str, value: Value) -> Vec<(String, &'static str)> {
    let checked = run(field_type, value);
    assert!(!checked.valid, "expected invalid, got {:?}", checked.normalized);
    assert!(checked.normalized.is_none());
    assert!(!checked.errors.is_empty());
    checked.errors.iter().map(|i| (i.path.clone(), i.rule)).collect()
}

pub(super) fn err(path: &str, rule: &'static str) -> Vec<(String, &'static str)> {
    vec![(path.to_owned(), rule)]
}

pub(super) fn warning_rules(checked: &Checked) -> Vec<&'static str> {
    checked.warnings.iter().map(|i| i.rule).collect()
}

const ALL_TYPES: [&str; 14] = [
    "guest_count_matrix",
    "wedding_date",
    "venue_selector",
    "timeline_builder",
    "budget_category",
    "dietary_matrix",
    "text",
    "number",
    "date",
    "email",
    "phone",
    "select",
    "checkbox",
    "custom_colour_picker",
];

#[test]
fn field_type_names_round_trip_and_unknown_names_pass_through_as_other() {
    for name in ALL_TYPES {
        assert_eq!(FieldType::parse(name).as_str(), name);
        assert_eq!(FieldType::parse(name).to_string(), name);
    }
    assert_eq!(FieldType::parse("wedding_date"), FieldType::WeddingDate);
    assert_eq!(
        FieldType::parse("Wedding_Date"),
        FieldType::Other("Wedding_Date".to_owned())
    );
    assert_eq!(FieldType::parse(""), FieldType::Other(String::new()));
    let t: FieldType = serde_json::from_value(json!("dietary_matrix")).expect("deserialize");
    assert_eq!(t, FieldType::DietaryMatrix);
    assert_eq!(
        serde_json::to_value(FieldType::Other("x".into())).expect("serialize"),
        json!("x")
    );
}

#[test]
fn priorities_follow_field_types_md_and_sort_most_urgent_first() {
    for name in ["wedding_date", "venue_selector", "guest_count_matrix"] {
        assert_eq!(
            FieldType::parse(name).default_priority(),
            Priority::Critical,
            "{name}"
        );
    }
    for name in ["timeline_builder", "budget_category", "dietary_matrix"] {
        assert_eq!(
            FieldType::parse(name).default_priority(),
            Priority::Important,
            "{name}"
        );
    }
    for name in [
        "text",
        "number",
        "date",
        "email",
        "phone",
        "select",
        "checkbox",
        "anything_else",
    ] {
        assert_eq!(
            FieldType::parse(name).default_priority(),
            Priority::Optional,
            "{name}"
        );
    }
    assert!(Priority::Critical < Priority::Important && Priority::Important < Priority::Optional);
    assert_eq!(
        serde_json::to_value(Priority::Important).expect("serialize"),
        json!("important")
    );
}

#[test]
fn rules_default_to_warning_on_past_dates_and_a_bound_of_500() {
    let r = rules();
    assert_eq!(r.past_wedding_date, PastDatePolicy::Warn);
    assert_eq!(r.venue_capacity_warning, 500);
    assert!(Rules::today_utc().today.year_ce().1 >= 2024);
}

use chrono::Datelike;

#[test]
fn a_cleared_field_is_valid_and_normalises_to_null_for_every_type() {
    for name in ALL_TYPES {
        let checked = run(name, Value::Null);
        assert!(checked.valid, "{name}");
        assert_eq!(checked.normalized, Some(Value::Null), "{name}");
        assert!(checked.errors.is_empty() && checked.warnings.is_empty(), "{name}");
    }
}

#[test]
fn an_unknown_field_type_passes_its_value_through_unchanged() {
    let value = json!({"anything": [1, "two", {"three": null}]});
    assert_eq!(ok("custom_colour_picker", value.clone()), value);
}

#[test]
fn checked_serialises_with_valid_normalized_errors_and_warnings() {
    let checked = run("guest_count_matrix", json!({"adults": -1}));
    let json = serde_json::to_value(&checked).expect("serialize");
    assert_eq!(json["valid"], json!(false));
    assert_eq!(json["normalized"], Value::Null);
    assert_eq!(json["errors"][0]["path"], json!("adults"));
    assert_eq!(json["errors"][0]["rule"], json!("non_negative_integer"));
    assert!(json["warnings"].as_array().is_some_and(Vec::is_empty));
}

const SECRET: &str = "Zebra-Secret-42";

/// Inputs that produce errors or warnings while carrying distinctive personal values.
fn leaky_inputs() -> Vec<(&'static str, Value)> {
    vec![
        (
            "guest_count_matrix",
            json!({"adults": SECRET, "children": -987654321, "infants": 98765.4321}),
        ),
        ("guest_count_matrix", json!(SECRET)),
        ("guest_count_matrix", json!({"adults": 987654321})),
        ("wedding_date", json!(SECRET)),
        ("wedding_date", json!("1987-06-54")),
        ("wedding_date", json!("1987-02-29")),
        ("wedding_date", json!("1987-06-19")),
        ("date", json!(SECRET)),
        (
            "venue_selector",
            json!({"name": SECRET, "website": SECRET, "phone_number": SECRET, "rating": 987654321,
                   "price_level": 987654321, "estimated_capacity": -987654321, "types": SECRET,
                   "geometry": {"location": {"lat": 987654321.5, "lng": SECRET}}}),
        ),
        (
            "venue_selector",
            json!({"name": 987654321, "formatted_address": ["Zebra-Secret-42"]}),
        ),
        (
            "timeline_builder",
            json!({"events": [{"time": SECRET, "title": SECRET, "duration": -987654321,
                               "vendor_assignments": [{"name": SECRET}], "description": 987654321}]}),
        ),
        (
            "timeline_builder",
            json!({"events": [{"time": "23:00", "duration": 987654321}]}),
        ),
        (
            "budget_category",
            json!({"category": SECRET, "currency": SECRET, "budgeted_amount": 98765.4321,
                   "actual_amount": SECRET, "percentage_of_total": 987654321, "vendor_id": [SECRET]}),
        ),
        (
            "budget_category",
            json!({"category": SECRET, "budgeted_amount": -987654321, "actual_amount": i64::MAX}),
        ),
        (
            "dietary_matrix",
            json!({"vegan": SECRET, "Zebra-Secret-42": -1, "ZebraSecret": -2, "notes": SECRET,
                   "halal": -987654321}),
        ),
        ("dietary_matrix", json!({"vegan": 987654321, "notes": [SECRET]})),
        ("email", json!(SECRET)),
        ("email", json!("Zebra-Secret-42@nowhere")),
        ("phone", json!(SECRET)),
        ("phone", json!("+98765432101234567")),
        ("number", json!(SECRET)),
        ("checkbox", json!(SECRET)),
        ("text", json!([SECRET])),
        ("select", json!({"choice": SECRET})),
    ]
}

#[test]
fn no_issue_message_or_path_ever_contains_the_offending_value() {
    let ctx = Context {
        guest_total: Some(1),
        venue_capacity: Some(1),
    };
    let strict = Rules {
        past_wedding_date: PastDatePolicy::Error,
        ..rules()
    };
    for (field_type, value) in leaky_inputs() {
        for rules in [rules(), strict.clone()] {
            let checked = check(&FieldType::parse(field_type), &value, &ctx, &rules);
            assert!(
                !checked.errors.is_empty() || !checked.warnings.is_empty(),
                "{field_type}: no issue"
            );
            for issue in checked.errors.iter().chain(&checked.warnings) {
                for text in [&issue.path, &issue.message] {
                    for needle in ["Zebra", "Secret", "987654", "98765", "1987", "nowhere"] {
                        assert!(!text.contains(needle), "{field_type}: {issue:?} leaks {needle}");
                    }
                }
            }
        }
    }
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[0-9:+ @.a-z-]{0,12}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    let keys = prop_oneof![
        Just("adults".to_owned()),
        Just("events".to_owned()),
        Just("time".to_owned()),
        Just("duration".to_owned()),
        Just("name".to_owned()),
        Just("geometry".to_owned()),
        Just("location".to_owned()),
        Just("lat".to_owned()),
        Just("budgeted_amount".to_owned()),
        Just("actual_amount".to_owned()),
        Just("currency".to_owned()),
        Just("vegan".to_owned()),
        Just("notes".to_owned()),
        any::<String>(),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn checking_arbitrary_json_never_panics_and_keeps_its_invariants(value in any_json()) {
        let ctx = Context { guest_total: Some(10), venue_capacity: Some(10) };
        for name in ALL_TYPES {
            let checked = check(&FieldType::parse(name), &value, &ctx, &rules());
            prop_assert_eq!(checked.valid, checked.errors.is_empty());
            prop_assert_eq!(checked.valid, checked.normalized.is_some());
        }
    }
}
