//! Address-book contacts: their properties, addresses and phone numbers.

use serde_json::Value;

use super::validate::{boolean, one_of, string, ulid_ref, uri, CONTINUE};
use super::Obj;

pub(super) fn address(v: &Value) -> Option<String> {
    let o = match v {
        Value::Null => return None,
        Value::Object(o) => o,
        _ => return Some("must be an object".to_owned()),
    };
    for (k, v) in o {
        let problem = match k.as_str() {
            "links" | "id" | "created" | "modified" | "hidden" | "name" | "latitude" | "longitude"
            | "googlePlaceId" | "timezone" => None,
            "streetAddress" => string(v, 512, true),
            "village" | "city" | "state" | "postalCode" => string(v, 255, true),
            "country" => string(v, 2, true),
            _ => Some("is not a property of Address".to_owned()),
        };
        if let Some(p) = problem {
            return Some(format!("{k} {p}"));
        }
    }
    None
}

pub(super) fn phone(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Object(o) => match o.get("e164") {
            None | Some(Value::Null) => None,
            Some(Value::String(s))
                if s.starts_with('+')
                    && s.len() <= 24
                    && s[1..].split('x').next().is_some_and(|d| {
                        (2..=15).contains(&d.len())
                            && d.chars().all(|c| c.is_ascii_digit())
                            && !d.starts_with('0')
                    }) =>
            {
                None
            }
            _ => Some("e164 must be an E.164 number".to_owned()),
        },
        _ => Some("must be a phone object".to_owned()),
    }
}

pub(super) fn contact_property(key: &str, v: &Value, body: &Obj) -> Option<String> {
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or_default();
    match key {
        "kind" => one_of(v, &["person", "company", "location"], false),
        "name" if kind == "person" => Some(CONTINUE.to_owned()), // read-only on a person
        "name" => string(v, 255, false),
        "firstName" | "lastName" | "maidenName" => string(v, 48, true),
        "email" => match v {
            Value::Null => None,
            Value::String(s) if s.contains('@') && s.len() <= 255 => None,
            _ => Some("must be an email address".to_owned()),
        },
        "address" | "mailingAddress" => address(v),
        "phone" | "tollFree" | "cellPhone" | "homePhone" | "workPhone" | "fax" => phone(v),
        "url" => uri(v),
        "brandId" | "vendorRoleId" => ulid_ref(v),
        "privacyOptIn" | "requireStrictPrivacy" | "previousClient" | "pinned" => boolean(v),
        _ => Some(CONTINUE.to_owned()), // other properties are ignored (assumption)
    }
}
