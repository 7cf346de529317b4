//! timeline_builder.

use serde_json::{json, Value};

use super::{bad, err, ok};

const T: &str = "timeline_builder";

fn events(list: Value) -> Value {
    json!({ "events": list })
}

#[test]
fn the_example_timeline_is_sorted_timed_and_finds_ceremony_and_reception() {
    let n = ok(
        T,
        events(json!([
            {"time": "23:30", "duration": 60, "title": "Last dance", "category": "reception"},
            {"time": "13:00", "duration": 45, "title": "Ceremony", "description": "", "category": "ceremony",
             "vendor_assignments": ["photographer"], "colour": "gold"},
        ])),
    );
    assert_eq!(
        n,
        json!({
            "items": [
                {"time": "13:00", "end": "13:45", "duration": 45, "ends_next_day": false, "title": "Ceremony",
                 "description": "", "category": "ceremony", "vendor_assignments": ["photographer"]},
                {"time": "23:30", "end": "00:30", "duration": 60, "ends_next_day": true, "title": "Last dance",
                 "category": "reception"},
            ],
            "total_duration": 105,
            "ceremony_time": "13:00",
            "reception_time": "23:30",
        })
    );
}

#[test]
fn an_item_crossing_midnight_ends_the_next_day_at_wall_clock_time() {
    let item = |time: &str, duration: u64| {
        let n = ok(T, events(json!([{"time": time, "duration": duration}])));
        (
            n["items"][0]["end"].clone(),
            n["items"][0]["ends_next_day"].clone(),
        )
    };
    assert_eq!(item("22:00", 60), (json!("23:00"), json!(false)));
    assert_eq!(item("23:00", 59), (json!("23:59"), json!(false)));
    assert_eq!(item("23:00", 60), (json!("00:00"), json!(true)));
    assert_eq!(item("23:59", 1), (json!("00:00"), json!(true)));
    assert_eq!(item("00:00", 1440), (json!("00:00"), json!(true)));
    assert_eq!(item("22:30", 240), (json!("02:30"), json!(true)));
}

#[test]
fn duration_defaults_to_sixty_minutes() {
    let n = ok(
        T,
        events(json!([{"time": "18:00"}, {"time": "19:00", "duration": null}])),
    );
    assert_eq!(n["items"][0]["duration"], json!(60));
    assert_eq!(n["items"][1]["end"], json!("20:00"));
    assert_eq!(n["total_duration"], json!(120));
}

#[test]
fn items_at_the_same_time_keep_their_order() {
    let n = ok(
        T,
        events(json!([
            {"time": "15:00", "title": "b"}, {"time": "14:00", "title": "a"},
            {"time": "15:00", "title": "c"}, {"time": "15:00", "title": "d"},
        ])),
    );
    let titles: Vec<&Value> = n["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| &i["title"])
        .collect();
    assert_eq!(titles, [&json!("a"), &json!("b"), &json!("c"), &json!("d")]);
}

#[test]
fn ceremony_and_reception_are_found_by_category_or_title_case_insensitively() {
    let n = ok(
        T,
        events(json!([
            {"time": "17:00", "title": "Drinks", "category": " RECEPTION "},
            {"time": "12:00", "title": "Civil CEREMONY at the town hall"},
            {"time": "14:00", "title": "Ceremony blessing", "category": "ceremony"},
            {"time": "11:00", "title": "Wedding Reception prep"},
        ])),
    );
    assert_eq!(n["ceremony_time"], json!("12:00"));
    assert_eq!(n["reception_time"], json!("11:00"));
    let none = ok(T, events(json!([{"time": "09:00", "title": "Hair and make-up"}])));
    assert_eq!(
        (none["ceremony_time"].clone(), none["reception_time"].clone()),
        (Value::Null, Value::Null)
    );
}

#[test]
fn an_empty_timeline_is_valid_with_no_items() {
    assert_eq!(
        ok(T, events(json!([]))),
        json!({"items": [], "total_duration": 0, "ceremony_time": null, "reception_time": null})
    );
}

#[test]
fn unicode_titles_and_descriptions_are_kept_verbatim() {
    let n = ok(
        T,
        events(json!([{"time": "16:00", "title": "Première danse 💃", "description": "Ταγκό"}])),
    );
    assert_eq!(n["items"][0]["title"], json!("Première danse 💃"));
    assert_eq!(n["items"][0]["description"], json!("Ταγκό"));
}

#[test]
fn times_must_be_hh_mm_within_the_day() {
    for time in [
        "25:00",
        "24:00",
        "12:60",
        "9:00",
        "09:00:00",
        "noon",
        "",
        "１２:００",
    ] {
        assert_eq!(
            bad(T, events(json!([{"time": time}]))),
            err("events[0].time", "hh_mm_time"),
            "{time}"
        );
    }
    assert_eq!(
        ok(T, events(json!([{"time": "00:00"}, {"time": "23:59"}])))["items"][1]["time"],
        json!("23:59")
    );
    assert_eq!(
        bad(T, events(json!([{"time": 1300}]))),
        err("events[0].time", "type")
    );
    assert_eq!(
        bad(T, events(json!([{"title": "No time"}]))),
        err("events[0].time", "required")
    );
}

#[test]
fn durations_must_be_whole_positive_minutes_up_to_a_day() {
    let with = |d: Value| events(json!([{"time": "10:00"}, {"time": "11:00", "duration": d}]));
    assert_eq!(
        bad(T, with(json!(0))),
        err("events[1].duration", "positive_duration")
    );
    assert_eq!(
        bad(T, with(json!(-30))),
        err("events[1].duration", "positive_duration")
    );
    assert_eq!(
        bad(T, with(json!(1.5))),
        err("events[1].duration", "positive_duration")
    );
    assert_eq!(
        bad(T, with(json!(1441))),
        err("events[1].duration", "duration_range")
    );
    assert_eq!(
        bad(T, with(json!(u64::MAX))),
        err("events[1].duration", "duration_range")
    );
    assert_eq!(bad(T, with(json!("60"))), err("events[1].duration", "type"));
}

#[test]
fn issue_paths_use_the_input_index_and_every_bad_item_is_reported() {
    let errors = bad(
        T,
        events(json!([{"time": "20:00"}, {"time": "25:00"}, "oops", {"time": "08:00", "title": 5}])),
    );
    assert_eq!(
        errors,
        [
            ("events[1].time".to_owned(), "hh_mm_time"),
            ("events[2]".to_owned(), "type"),
            ("events[3].title".to_owned(), "type"),
        ]
    );
}

#[test]
fn vendor_assignments_must_be_a_list_of_strings() {
    let with = |v: Value| events(json!([{"time": "10:00", "vendor_assignments": v}]));
    assert_eq!(
        ok(T, with(json!([])))["items"][0]["vendor_assignments"],
        json!([])
    );
    assert_eq!(
        bad(T, with(json!("photographer"))),
        err("events[0].vendor_assignments", "type")
    );
    assert_eq!(
        bad(T, with(json!(["dj", 4]))),
        err("events[0].vendor_assignments[1]", "type")
    );
}

#[test]
fn a_timeline_without_an_events_list_is_invalid() {
    assert_eq!(bad(T, json!({})), err("events", "required"));
    assert_eq!(
        bad(T, json!({"events": {"time": "10:00"}})),
        err("events", "type")
    );
    assert_eq!(bad(T, json!([{"time": "10:00"}])), err("", "type"));
    assert_eq!(bad(T, json!("13:00 ceremony")), err("", "type"));
}
