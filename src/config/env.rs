//! Environment overrides: `FIELDSYNC__<SECTION>__<KEY>=value` replaces `key` in `[section]`.
//!
//! The value is read as a TOML value when it is one (`32`, `true`, `["public.a"]`, `"quoted"`),
//! otherwise as a plain string (`10s`, `postgres://...`). When a value read as TOML does not fit the
//! key (`1234` for a password), the loader retries it as the plain string.
//!
//! Any variable with the prefix must name a known section and key: a typo is an error naming the
//! variable, not a silently ignored setting. Values are never echoed in errors.

use std::ffi::OsString;

use crate::config::raw;
use crate::config::ConfigError;

/// Variables starting with this are configuration overrides.
pub const PREFIX: &str = "FIELDSYNC__";

/// One override, its names checked against the known sections and keys.
#[derive(Clone, Debug)]
pub struct Override {
    /// The variable's name, for error messages.
    pub var: String,
    pub section: &'static str,
    pub key: &'static str,
    /// The value read as TOML, or as a string when it is not TOML.
    pub value: toml::Value,
    /// The value exactly as given, for the retry as a string.
    pub text: String,
}

/// The overrides among `vars`, sorted by variable name; other variables are ignored.
pub fn overrides(vars: impl IntoIterator<Item = (String, String)>) -> Result<Vec<Override>, ConfigError> {
    let mut found = Vec::new();
    for (var, text) in vars {
        let Some(rest) = var.strip_prefix(PREFIX) else {
            continue;
        };
        let (section, key) = match rest.split("__").collect::<Vec<_>>().as_slice() {
            [section, key] if !section.is_empty() && !key.is_empty() => {
                (section.to_ascii_lowercase(), key.to_ascii_lowercase())
            }
            _ => {
                return Err(ConfigError::Env {
                    name: var,
                    message: format!(
                        "expected the form {PREFIX}<SECTION>__<KEY>, e.g. {PREFIX}POSTGRES__URL or \
                         {PREFIX}QUEUE__CACHE_CAPACITY_MB"
                    ),
                })
            }
        };
        let origin = format!("environment variable {var}");
        let Some(section) = raw::sections().iter().copied().find(|s| *s == section) else {
            return Err(ConfigError::UnknownSection {
                origin,
                section,
                expected: raw::sections().join(", "),
            });
        };
        let keys = raw::section_keys(section).unwrap_or_default();
        let Some(key) = keys.iter().copied().find(|k| *k == key) else {
            let section = section.to_owned();
            return Err(ConfigError::UnknownKey {
                origin,
                section,
                key,
                expected: keys.join(", "),
            });
        };
        let value = parse_value(&text);
        found.push(Override {
            var,
            section,
            key,
            value,
            text,
        });
    }
    found.sort_by(|a, b| a.var.cmp(&b.var));
    Ok(found)
}

/// `text` as a TOML value (integer, float, bool, array, inline table, quoted string) when it is
/// exactly one, else as a string. Dates stay strings: no key takes one.
pub fn parse_value(text: &str) -> toml::Value {
    let as_string = || toml::Value::String(text.to_owned());
    // A newline could smuggle in a second key; such text is not one value.
    if text.contains(['\n', '\r']) {
        return as_string();
    }
    match toml::from_str::<toml::Table>(&format!("v = {text}")) {
        Ok(mut table) if table.len() == 1 => match table.remove("v") {
            Some(toml::Value::Datetime(_)) | None => as_string(),
            Some(value) => value,
        },
        _ => as_string(),
    }
}

/// The process environment as `(name, value)` pairs. Variables whose name is not UTF-8 are
/// skipped (they cannot carry the prefix); a prefixed variable whose value is not UTF-8 is an error.
pub fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    from_os(std::env::vars_os())
}

fn from_os(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (name, value) in vars {
        let Ok(name) = name.into_string() else { continue };
        match value.into_string() {
            Ok(value) => out.push((name, value)),
            Err(_) if name.starts_with(PREFIX) => {
                return Err(ConfigError::Env {
                    name,
                    message: "the value is not valid UTF-8".into(),
                })
            }
            Err(_) => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn values_are_toml_when_they_parse_and_strings_otherwise() {
        assert_eq!(parse_value("32"), toml::Value::Integer(32));
        assert_eq!(parse_value("false"), toml::Value::Boolean(false));
        assert_eq!(
            parse_value(r#"["public.a", "b"]"#),
            toml::Value::Array(vec!["public.a".into(), "b".into()])
        );
        assert_eq!(parse_value(r#""quoted""#), toml::Value::String("quoted".into()));
        for plain in [
            "10s",
            "postgres://u@h/db",
            "127.0.0.1:9187",
            "",
            "host=h user=u",
            "2024-01-01",
        ] {
            assert_eq!(parse_value(plain), toml::Value::String(plain.into()), "{plain:?}");
        }
        assert_eq!(parse_value("1\nw = 2"), toml::Value::String("1\nw = 2".into()));
    }

    #[test]
    fn other_variables_are_ignored_and_ours_are_matched_case_insensitively() {
        let found = overrides(vars(&[
            ("PATH", "/bin"),
            ("FIELDSYNC_LOG", "x"),
            ("FIELDSYNC__QUEUE__CACHE_CAPACITY_MB", "32"),
            ("FIELDSYNC__log__level", "debug"),
        ]))
        .unwrap();
        let names: Vec<_> = found.iter().map(|o| (o.section, o.key)).collect();
        assert_eq!(names, [("queue", "cache_capacity_mb"), ("log", "level")]);
    }

    #[test]
    fn a_malformed_variable_name_is_an_error_naming_it() {
        for name in [
            "FIELDSYNC__QUEUE",
            "FIELDSYNC__QUEUE__PATH__X",
            "FIELDSYNC____PATH",
        ] {
            let err = overrides(vars(&[(name, "x")])).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn a_non_utf8_value_is_an_error_only_for_our_variables() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![0xff, 0xfe]);
        let ok = from_os([(OsString::from("OTHER"), bad.clone())]).unwrap();
        assert!(ok.is_empty());
        let err = from_os([(OsString::from("FIELDSYNC__LOG__LEVEL"), bad)]).unwrap_err();
        assert!(err.to_string().contains("FIELDSYNC__LOG__LEVEL"), "{err}");
    }
}
