//! Custom fields: the kinds a field can be and the checks on the values a job or contact holds.

use serde_json::Value;

use super::{Detail, State};

pub(super) const CUSTOM_FIELD_KINDS: [&str; 9] = [
    "TextField",
    "TextBox",
    "DropDown",
    "Number",
    "Decimal",
    "Money",
    "Date",
    "Time",
    "Checkbox",
];

pub(super) fn custom_field_values(st: &State, v: &Value, applies: &str, prefix: &str, detail: &mut Detail) {
    let Some(items) = v.as_array() else {
        if !v.is_null() {
            detail.insert(format!("{prefix}customFields"), "must be an array".to_owned());
        }
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let path = format!("{prefix}customFields[{i}]");
        let Some(field_id) = item.get("fieldId").and_then(Value::as_str) else {
            detail.insert(format!("{path}.fieldId"), "is required".to_owned());
            continue;
        };
        let known = st
            .custom_fields
            .iter()
            .any(|f| f["id"] == field_id && f["canApplyTo"] == applies);
        if !known {
            detail.insert(
                format!("{path}.fieldId"),
                format!("is not a custom field that applies to {applies}"),
            );
        }
        match item.get("value") {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(_) => {
                detail.insert(format!("{path}.value"), "must be a string or null".to_owned());
            }
        }
    }
}
