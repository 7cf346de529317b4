//! Events: the closed property set (`additionalProperties: false`) and time normalisation.

use serde_json::Value;

use super::contacts::{address, phone};
use super::validate::{boolean, date, one_of, reference, string, time, ulid_ref, uri};
use super::{Kind, State};

const EVENT_PROPERTIES: [&str; 17] = [
    "allDay",
    "channel",
    "confirmed",
    "descriptionHtml",
    "endDate",
    "endTime",
    "galleryId",
    "jobId",
    "location",
    "name",
    "phoneNumber",
    "startDate",
    "startTime",
    "timezoneName",
    "timezoneId",
    "typeId",
    "virtualUrl",
];

pub(super) fn event_property(st: &State, key: &str, v: &Value) -> Option<String> {
    match key {
        "allDay" | "confirmed" => boolean(v),
        "channel" => one_of(v, &["InPerson", "Phone", "Virtual"], false),
        "descriptionHtml" => string(v, 1_073_741_824, true),
        "startDate" | "endDate" => date(v),
        "startTime" | "endTime" => time(v),
        "name" => string(v, 255, true),
        "timezoneName" => match v {
            Value::Null => None,
            Value::String(s) if s == "UTC" || (s.contains('/') && !s.contains(' ')) => None,
            _ => Some("must be an approved timezone name".to_owned()),
        },
        "jobId" if !v.is_null() => reference(st, Kind::Job, v),
        "galleryId" | "timezoneId" | "typeId" | "jobId" => ulid_ref(v),
        "virtualUrl" => uri(v),
        "location" => match v {
            Value::Null => None,
            Value::Object(o) => o.iter().find_map(|(k, v)| match k.as_str() {
                "id" => ulid_ref(v),
                "address" => address(v),
                _ => Some(format!("{k} is not a property of the location")),
            }),
            _ => Some("must be an object".to_owned()),
        },
        "phoneNumber" => phone(v),
        _ if EVENT_PROPERTIES.contains(&key) => None,
        _ => Some("is not a property of Event (additionalProperties: false)".to_owned()),
    }
}

pub(super) fn normal_time(t: &str) -> String {
    if t.len() == 5 {
        format!("{t}:00")
    } else {
        t.to_owned()
    }
}
