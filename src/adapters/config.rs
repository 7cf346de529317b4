//! Integration configs: the jsonb `config` of an integration row, read into its adapter's serde
//! struct (`WebhookConfig`, `TaveConfig`, …), which refuses unknown keys
//! (`#[serde(deny_unknown_fields)]`), and into [`Common`], the keys every integration takes.
//!
//! serde's `flatten` and `deny_unknown_fields` do not combine, so [`parse`] splits the common keys
//! off first and reads the rest into the adapter's struct.
//!
//! A config value may be a secret or personal data, and serde_json's errors quote the value they
//! met (`invalid type: string "sk_live_…"`). Configs are therefore read through `Strict`, a
//! deserializer over the `serde_json::Value` whose error type keeps only where (the key path) and
//! what was expected: an error can name a key, never a value.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::AdapterError;
use crate::events::IntegrationType;
use crate::secret::quoted;

/// The keys of [`Common`], which every integration takes besides its adapter's own.
pub const COMMON_KEYS: [&str; 3] = ["rate_limit_per_second", "burst", "field_types"];

/// The keys every integration takes, whatever its type.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Common {
    /// The token bucket's rate; the adapter's default when absent, none when 0.
    pub rate_limit_per_second: Option<f64>,
    /// The token bucket's size; the rate rounded up when absent.
    pub burst: Option<u32>,
    /// The field types the integration takes; its type's defaults when absent (read when capture
    /// fans events out, `crate::events::routing`).
    pub field_types: Option<Vec<String>>,
}

/// Reads a `kind` integration's config: the common keys, and the adapter's own into `T`. A
/// missing (null) config is an empty one.
pub fn parse<T: DeserializeOwned>(
    kind: IntegrationType,
    config: &Value,
) -> Result<(Common, T), AdapterError> {
    if !matches!(config, Value::Object(_) | Value::Null) {
        return Err(AdapterError::config(
            "config",
            &format!("must be a JSON object of keys (a {} integration)", kind.as_str()),
        ));
    }
    let common = read(config, true).map_err(|e| e.for_integration(kind))?;
    let own = read(config, false).map_err(|e| e.for_integration(kind))?;
    Ok((common, own))
}

/// The common keys of a config; `None` when they do not read (the adapter reports why).
pub fn common(config: &Value) -> Option<Common> {
    read(config, true).ok()
}

/// Reads the common keys of an object (`common`), or all the others, into `T`.
fn read<T: DeserializeOwned>(object: &Value, common: bool) -> Result<T, KeyError> {
    let entries = object
        .as_object()
        .into_iter()
        .flatten()
        .filter(move |(k, _)| COMMON_KEYS.contains(&k.as_str()) == common);
    T::deserialize(Keys(entries))
}

/// A config error that holds no value: the key path and what was wrong.
#[derive(Debug)]
struct KeyError {
    /// Outermost first: keys, and `[i]` for array items.
    path: Vec<String>,
    why: Why,
}

#[derive(Debug)]
enum Why {
    /// A key the struct does not have, and the keys it has.
    Unknown {
        key: String,
        accepted: &'static [&'static str],
    },
    /// A value of another type (or out of range); serde's name of what was expected.
    Expected(String),
    Missing,
    /// Any other error of a type's own checks (its text may quote the value, so it is dropped).
    Invalid,
}

impl KeyError {
    fn new(why: Why) -> KeyError {
        KeyError {
            path: Vec::new(),
            why,
        }
    }

    fn under(mut self, segment: String) -> KeyError {
        self.path.insert(0, segment);
        self
    }

    fn path(&self) -> String {
        let mut out = String::new();
        for segment in &self.path {
            if !out.is_empty() && !segment.starts_with('[') {
                out.push('.');
            }
            out.push_str(segment);
        }
        out
    }

    fn for_integration(self, kind: IntegrationType) -> AdapterError {
        let kind = kind.as_str();
        let path = self.path();
        match self.why {
            Why::Unknown { key, accepted } if path.is_empty() => AdapterError {
                key: quoted(&key),
                why: format!(
                    "is not a key of a {kind} integration (accepted: {})",
                    [accepted, &COMMON_KEYS[..]].concat().join(", ")
                ),
            },
            Why::Unknown { key, accepted } => AdapterError {
                key: quoted(&format!("{path}.{key}")),
                why: format!(
                    "is not a key of a {kind} integration (accepted in {path}: {})",
                    accepted.join(", ")
                ),
            },
            Why::Expected(what) => AdapterError {
                key: path,
                why: format!("must be {} (in a {kind} integration)", plain(&what)),
            },
            Why::Missing => AdapterError {
                key: path,
                why: format!("is missing (in a {kind} integration)"),
            },
            Why::Invalid => AdapterError {
                key: path,
                why: format!("has a value a {kind} integration cannot take"),
            },
        }
    }
}

/// serde's names of the expected types, as an operator reads them.
fn plain(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" => format!("a whole number of 0 or more ({expected})"),
        "i8" | "i16" | "i32" | "i64" => format!("a whole number ({expected})"),
        "f32" | "f64" => "a number".to_owned(),
        "a sequence" => "an array".to_owned(),
        s if s.starts_with("struct ") => "an object".to_owned(),
        s => s.to_owned(),
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.why {
            Why::Unknown { key, .. } => write!(f, "{} is not a known key", quoted(key)),
            Why::Expected(what) => write!(f, "{} must be {}", self.path(), plain(what)),
            Why::Missing => write!(f, "{} is missing", self.path()),
            Why::Invalid => write!(f, "{} has a value it cannot take", self.path()),
        }
    }
}

impl std::error::Error for KeyError {}

/// Every way serde reports an error, without the value it met.
impl de::Error for KeyError {
    fn custom<T: fmt::Display>(_: T) -> KeyError {
        KeyError::new(Why::Invalid)
    }

    fn invalid_type(_: de::Unexpected, expected: &dyn de::Expected) -> KeyError {
        KeyError::new(Why::Expected(expected.to_string()))
    }

    fn invalid_value(_: de::Unexpected, expected: &dyn de::Expected) -> KeyError {
        KeyError::new(Why::Expected(expected.to_string()))
    }

    fn invalid_length(_: usize, expected: &dyn de::Expected) -> KeyError {
        KeyError::new(Why::Expected(expected.to_string()))
    }

    fn unknown_field(key: &str, accepted: &'static [&'static str]) -> KeyError {
        KeyError::new(Why::Unknown {
            key: key.to_owned(),
            accepted,
        })
    }

    fn missing_field(key: &'static str) -> KeyError {
        KeyError::new(Why::Missing).under(key.to_owned())
    }
}

/// A config value, read with [`KeyError`]s.
struct Strict<'a>(&'a Value);

impl<'de> de::Deserializer<'de> for Strict<'_> {
    type Error = KeyError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => visitor.visit_u64(u),
                (_, Some(i), _) => visitor.visit_i64(i),
                (_, _, Some(f)) => visitor.visit_f64(f),
                _ => Err(KeyError::new(Why::Invalid)),
            },
            Value::String(s) => visitor.visit_str(s),
            Value::Array(items) => visitor.visit_seq(Items(items.iter().enumerate())),
            Value::Object(map) => visitor.visit_map(Entries::new(map.iter())),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, KeyError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// Some of an object's entries, read as a whole object.
struct Keys<I>(I);

impl<'de, 'a, I: Iterator<Item = (&'a String, &'a Value)>> de::Deserializer<'de> for Keys<I> {
    type Error = KeyError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        visitor.visit_map(Entries::new(self.0))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

struct Entries<'a, I> {
    entries: I,
    value: Option<(&'a str, &'a Value)>,
}

impl<I> Entries<'_, I> {
    fn new(entries: I) -> Self {
        Entries { entries, value: None }
    }
}

impl<'de, 'a, I: Iterator<Item = (&'a String, &'a Value)>> MapAccess<'de> for Entries<'a, I> {
    type Error = KeyError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, KeyError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some((key, value));
        seed.deserialize(de::value::StrDeserializer::<KeyError>::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, KeyError> {
        let (key, value) = self.value.take().ok_or(KeyError::new(Why::Invalid))?;
        seed.deserialize(Strict(value))
            .map_err(|e| e.under(key.to_owned()))
    }
}

struct Items<'a>(std::iter::Enumerate<std::slice::Iter<'a, Value>>);

impl<'de> SeqAccess<'de> for Items<'_> {
    type Error = KeyError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, KeyError> {
        let Some((i, value)) = self.0.next() else {
            return Ok(None);
        };
        seed.deserialize(Strict(value))
            .map(Some)
            .map_err(|e| e.under(format!("[{i}]")))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Own {
        name: Option<String>,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        count: Option<u32>,
    }

    fn error(config: Value) -> String {
        parse::<Own>(IntegrationType::Tave, &config)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn common_keys_are_the_fields_of_common() {
        match read::<Common>(&json!({"colour": 1}), false).err().map(|e| e.why) {
            Some(Why::Unknown { accepted, .. }) => assert_eq!(accepted, COMMON_KEYS),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn common_and_own_keys_are_read_apart() {
        let (common, own) = parse::<Own>(
            IntegrationType::Tave,
            &json!({"name": "n", "burst": 3, "field_types": ["wedding_date"], "inner": {"count": 2}}),
        )
        .unwrap();
        assert_eq!(common.burst, Some(3));
        assert_eq!(common.field_types.unwrap(), ["wedding_date"]);
        assert_eq!(own.name.as_deref(), Some("n"));
        assert_eq!(own.inner.unwrap().count, Some(2));
        let (common, own) = parse::<Own>(IntegrationType::Tave, &Value::Null).unwrap();
        assert!(common.rate_limit_per_second.is_none() && own.name.is_none());
    }

    #[test]
    fn unknown_keys_are_named_with_the_accepted_ones() {
        assert_eq!(
            error(json!({"name": "n", "colour": "sk_live_123"})),
            "integration config: \"colour\" is not a key of a tave integration \
             (accepted: name, inner, rate_limit_per_second, burst, field_types)"
        );
        assert_eq!(
            error(json!({"inner": {"colour": 1}})),
            "integration config: \"inner.colour\" is not a key of a tave integration (accepted in inner: count)"
        );
    }

    #[test]
    fn wrong_types_name_the_key_and_the_type_never_the_value() {
        let secret = "sk_live_51HxSecretValue";
        for (config, expect) in [
            (
                json!({"name": [secret]}),
                "integration config: name must be a string (in a tave integration)",
            ),
            (
                json!({"inner": {"count": secret}}),
                "integration config: inner.count must be a whole number of 0 or more (u32) (in a tave integration)",
            ),
            (
                json!({"inner": secret}),
                "integration config: inner must be an object (in a tave integration)",
            ),
            (
                json!({"rate_limit_per_second": secret}),
                "integration config: rate_limit_per_second must be a number (in a tave integration)",
            ),
            (
                json!({"burst": -1}),
                "integration config: burst must be a whole number of 0 or more (u32) (in a tave integration)",
            ),
            (
                json!({"field_types": ["wedding_date", {"key": secret}]}),
                "integration config: field_types[1] must be a string (in a tave integration)",
            ),
            (
                json!({"field_types": secret}),
                "integration config: field_types must be an array (in a tave integration)",
            ),
            (
                json!([secret]),
                "integration config: config must be a JSON object of keys (a tave integration)",
            ),
        ] {
            assert_eq!(error(config), expect);
        }
    }

    #[test]
    fn the_common_keys_of_a_broken_config_are_left_to_the_adapter() {
        assert!(common(&json!({"burst": "x"})).is_none());
        assert_eq!(common(&json!({"burst": 2, "other": 1})).unwrap().burst, Some(2));
    }
}
