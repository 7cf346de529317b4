//! venue_selector.

use serde_json::{json, Value};

use super::{bad, err, ok, run, warning_rules};

const V: &str = "venue_selector";

fn kew() -> Value {
    json!({"name": "Kew Gardens", "formatted_address": "Richmond, London TW9 3AE, UK", "place_id": "ChIJ123",
           "geometry": {"location": {"lat": 51.4787, "lng": -0.2956}, "viewport": {}},
           "phone_number": "+44 20 8332 5655", "website": "https://www.kew.org",
           "types": ["park", "point_of_interest"], "estimated_capacity": 250, "rating": 4.7, "price_level": 3,
           "opening_hours": {"open_now": true}, "photos": [{"height": 100}]})
}

#[test]
fn a_places_result_normalises_to_the_venue_shape() {
    assert_eq!(
        ok(V, kew()),
        json!({"name": "Kew Gardens", "formatted_address": "Richmond, London TW9 3AE, UK", "place_id": "ChIJ123",
               "lat": 51.4787, "lng": -0.2956, "phone": "+442083325655", "website": "https://www.kew.org",
               "kind": "outdoor", "estimated_capacity": 250, "rating": 4.7, "price_level": 3})
    );
}

#[test]
fn a_venue_with_only_a_name_has_only_name_and_kind() {
    assert_eq!(
        ok(V, json!({"name": "  Église Saint-Étienne  "})),
        json!({"name": "Église Saint-Étienne", "kind": "other"})
    );
    assert_eq!(
        ok(V, json!({"name": "東京會舘", "types": null}))["name"],
        json!("東京會舘")
    );
}

#[test]
fn the_venue_kind_comes_from_the_first_type_that_maps() {
    for (types, kind) in [
        (json!(["church", "place_of_worship"]), "religious"),
        (json!(["mosque"]), "religious"),
        (json!(["lodging", "restaurant"]), "hotel"),
        (json!(["hotel"]), "hotel"),
        (json!(["point_of_interest", "restaurant", "hotel"]), "restaurant"),
        (json!(["park"]), "outdoor"),
        (json!(["banquet_hall"]), "banquet_hall"),
        (json!(["museum", "establishment"]), "other"),
        (json!([]), "other"),
        (json!([1, null, "park"]), "outdoor"),
    ] {
        assert_eq!(
            ok(V, json!({"name": "V", "types": types}))["kind"],
            json!(kind),
            "{types}"
        );
    }
    assert_eq!(
        bad(V, json!({"name": "V", "types": "park"})),
        err("types", "type")
    );
}

#[test]
fn a_venue_needs_a_non_empty_string_name() {
    assert_eq!(
        bad(V, json!({"formatted_address": "somewhere"})),
        err("name", "required")
    );
    assert_eq!(bad(V, json!({"name": "   "})), err("name", "required"));
    assert_eq!(bad(V, json!({"name": null})), err("name", "required"));
    assert_eq!(bad(V, json!({"name": 7})), err("name", "type"));
    assert_eq!(bad(V, json!("Kew Gardens")), err("", "type"));
}

#[test]
fn coordinates_must_be_in_range_and_come_as_a_pair() {
    let at =
        |lat: Value, lng: Value| json!({"name": "V", "geometry": {"location": {"lat": lat, "lng": lng}}});
    let n = ok(V, at(json!(-90), json!(180)));
    assert_eq!((n["lat"].clone(), n["lng"].clone()), (json!(-90.0), json!(180.0)));
    assert_eq!(
        bad(V, at(json!(90.5), json!(0))),
        err("geometry.location.lat", "latitude_range")
    );
    assert_eq!(
        bad(V, at(json!(0), json!(-180.01))),
        err("geometry.location.lng", "longitude_range")
    );
    assert_eq!(
        bad(V, at(json!("51.4"), json!(0))),
        err("geometry.location.lat", "type")
    );
    assert_eq!(
        bad(V, at(json!(51.4), Value::Null)),
        err("geometry.location.lng", "required")
    );
    assert_eq!(
        bad(V, json!({"name": "V", "geometry": []})),
        err("geometry", "type")
    );
    assert_eq!(
        bad(V, json!({"name": "V", "geometry": {"location": 3}})),
        err("geometry.location", "type")
    );
    let no_location = ok(V, json!({"name": "V", "geometry": {}}));
    assert!(no_location.get("lat").is_none() && no_location.get("lng").is_none());
}

#[test]
fn the_website_must_be_an_http_or_https_url() {
    let site = |w: &str| json!({"name": "V", "website": w});
    assert_eq!(
        ok(V, site("http://example.org/a?b#c"))["website"],
        json!("http://example.org/a?b#c")
    );
    assert_eq!(
        ok(V, site(" HTTPS://Example.org "))["website"],
        json!("https://Example.org")
    );
    for wrong in [
        "www.kew.org",
        "ftp://kew.org",
        "https://",
        "https:// kew.org",
        "javascript:alert(1)",
        "",
    ] {
        assert_eq!(bad(V, site(wrong)), err("website", "http_url"), "{wrong}");
    }
    assert_eq!(
        bad(V, json!({"name": "V", "website": ["https://kew.org"]})),
        err("website", "type")
    );
}

#[test]
fn a_national_format_venue_phone_is_kept_as_text_with_a_warning() {
    let checked = run(V, json!({"name": "V", "phone_number": " 020 8332 5655 "}));
    assert!(checked.valid);
    assert_eq!(warning_rules(&checked), ["e164_phone"]);
    assert_eq!(checked.warnings[0].path, "phone_number");
    assert_eq!(
        checked.normalized.expect("valid")["phone"],
        json!("020 8332 5655")
    );
    let n = ok(
        V,
        json!({"name": "V", "international_phone_number": "+44 20 8332 5655", "phone_number": "x"}),
    );
    assert_eq!(n["phone"], json!("+442083325655"));
    assert_eq!(
        bad(V, json!({"name": "V", "phone_number": 442083325655u64})),
        err("phone_number", "type")
    );
}

#[test]
fn rating_price_level_and_capacity_are_range_checked() {
    let with = |key: &str, v: Value| {
        let mut venue = json!({"name": "V"});
        venue[key] = v;
        venue
    };
    assert_eq!(ok(V, with("rating", json!(0)))["rating"], json!(0));
    assert_eq!(bad(V, with("rating", json!(5.1))), err("rating", "rating_range"));
    assert_eq!(bad(V, with("rating", json!("4.5"))), err("rating", "type"));
    assert_eq!(ok(V, with("price_level", json!(0)))["price_level"], json!(0));
    assert_eq!(
        bad(V, with("price_level", json!(5))),
        err("price_level", "price_level_range")
    );
    assert_eq!(
        bad(V, with("price_level", json!(1.5))),
        err("price_level", "price_level_range")
    );
    assert_eq!(
        bad(V, with("price_level", json!("$$"))),
        err("price_level", "type")
    );
    assert_eq!(
        ok(V, with("estimated_capacity", json!(0)))["estimated_capacity"],
        json!(0)
    );
    assert_eq!(
        bad(V, with("estimated_capacity", json!(-10))),
        err("estimated_capacity", "non_negative_integer")
    );
}

#[test]
fn optional_venue_strings_must_be_strings() {
    assert_eq!(
        bad(V, json!({"name": "V", "place_id": 12})),
        err("place_id", "type")
    );
    assert_eq!(
        bad(V, json!({"name": "V", "formatted_address": {"line1": "x"}})),
        err("formatted_address", "type")
    );
}
