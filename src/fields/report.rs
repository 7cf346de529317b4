//! Collecting issues while checking a value, and the small readers every field family shares.
//!
//! Invariant: every message is built from fixed text, a path and [`kind`] (the JSON kind of what was
//! found), never from the value itself. Paths use schema key names and array indices only; a
//! caller-chosen key goes through [`safe_key`] first.

use serde_json::{Map, Value};

use super::{Checked, Issue};

/// Errors and warnings found so far.
#[derive(Debug, Default)]
pub(super) struct Report {
    errors: Vec<Issue>,
    warnings: Vec<Issue>,
}

impl Report {
    pub(super) fn error(&mut self, path: &str, rule: &'static str, message: String) {
        self.errors.push(Issue {
            path: path.to_owned(),
            rule,
            message,
        });
    }

    pub(super) fn warn(&mut self, path: &str, rule: &'static str, message: String) {
        self.warnings.push(Issue {
            path: path.to_owned(),
            rule,
            message,
        });
    }

    /// Number of errors so far, to tell whether a sub-check added any.
    pub(super) fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// The final outcome: `normalized` is kept only when there is no error.
    pub(super) fn finish(self, normalized: Option<Value>) -> Checked {
        let valid = self.errors.is_empty() && normalized.is_some();
        Checked {
            valid,
            normalized: if valid { normalized } else { None },
            errors: self.errors,
            warnings: self.warnings,
        }
    }

    /// The value as an object, or a `type` error at `path`.
    pub(super) fn object<'a>(&mut self, value: &'a Value, path: &str) -> Option<&'a Map<String, Value>> {
        match value {
            Value::Object(map) => Some(map),
            other => {
                self.error(
                    path,
                    "type",
                    format!("{} must be an object, found {}", subject(path), kind(other)),
                );
                None
            }
        }
    }

    /// An optional string member: `Ok(None)` when missing or null, `Err(())` (and a `type` error) when
    /// it is something else than a string.
    pub(super) fn opt_string(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        prefix: &str,
    ) -> Result<Option<String>, ()> {
        match member(obj, key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => {
                let path = join(prefix, key);
                self.error(
                    &path,
                    "type",
                    format!("{} must be a string, found {}", subject(&path), kind(other)),
                );
                Err(())
            }
        }
    }

    /// A `type` error for a value that must be of `expected` kind.
    pub(super) fn wrong_type(&mut self, path: &str, expected: &str, found: &Value) {
        self.error(
            path,
            "type",
            format!("{} must be {expected}, found {}", subject(path), kind(found)),
        );
    }
}

/// A member that is present and not null.
pub(super) fn member<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// `prefix.key`, or `key` at the top level.
pub(super) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// `prefix[i]`.
pub(super) fn index(prefix: &str, i: usize) -> String {
    format!("{prefix}[{i}]")
}

/// How a message names a path.
pub(super) fn subject(path: &str) -> String {
    if path.is_empty() {
        "the value".to_owned()
    } else {
        format!("`{path}`")
    }
}

/// The JSON kind of a value, for messages ("found a string").
pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A caller-chosen key as it may appear in a path: kept when it looks like a snake_case schema name
/// (lower-case ASCII letters and `_`, at most 40 characters), else `<key>`.
pub(super) fn safe_key(key: &str) -> &str {
    let identifier =
        !key.is_empty() && key.len() <= 40 && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if identifier {
        key
    } else {
        "<key>"
    }
}
