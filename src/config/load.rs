//! The loading pipeline: TOML text → table → environment overrides merged in → [`RawConfig`]
//! (one section, then one key at a time, so a type error names `section.key` and where the value
//! came from) → checked [`Config`].
//!
//! Unknown sections and keys are rejected before serde sees them, with the section named; serde's
//! own `deny_unknown_fields` stays as a backstop.

use std::collections::HashMap;

use serde::de::DeserializeOwned;

use crate::config::env;
use crate::config::raw::{self, RawConfig};
use crate::config::{Config, ConfigError};

/// Where a key's value came from.
#[derive(Clone, Debug)]
pub(crate) enum Origin {
    /// The TOML text, by its source name (usually the file's path).
    File(String),
    /// An environment variable, with its text as given (for the retry as a string).
    Env { var: String, text: String },
}

/// The origin of every key that was set (`section.key` → origin); unset keys are defaults.
#[derive(Clone, Debug, Default)]
pub(crate) struct Origins {
    keys: HashMap<String, Origin>,
}

impl Origins {
    /// How to name the source of `key` in an error message.
    pub(crate) fn label(&self, key: &str) -> String {
        match self.keys.get(key) {
            Some(Origin::File(name)) => name.clone(),
            Some(Origin::Env { var, .. }) => format!("environment variable {var}"),
            None => "defaults".to_owned(),
        }
    }

    /// Whether `key` was set by the file or the environment.
    pub(crate) fn is_set(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    fn get(&self, key: &str) -> Option<&Origin> {
        self.keys.get(key)
    }
}

pub(super) fn load(
    text: &str,
    source_name: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let mut doc = parse_document(text, source_name)?;
    let mut origins = Origins::default();
    for (section, value) in &doc {
        let Some(keys) = raw::section_keys(section) else {
            return Err(ConfigError::UnknownSection {
                origin: source_name.to_owned(),
                section: section.clone(),
                expected: raw::sections().join(", "),
            });
        };
        let Some(table) = value.as_table() else {
            return Err(ConfigError::Invalid {
                origin: source_name.to_owned(),
                key: section.clone(),
                message: format!("must be a section: write [{section}] with its keys on the lines below"),
            });
        };
        for key in table.keys() {
            if !keys.contains(&key.as_str()) {
                return Err(ConfigError::UnknownKey {
                    origin: source_name.to_owned(),
                    section: section.clone(),
                    key: key.clone(),
                    expected: keys.join(", "),
                });
            }
            origins
                .keys
                .insert(format!("{section}.{key}"), Origin::File(source_name.to_owned()));
        }
    }
    for o in env::overrides(env)? {
        let section = doc
            .entry(o.section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(table) = section {
            table.insert(o.key.to_owned(), o.value);
        }
        origins.keys.insert(
            format!("{}.{}", o.section, o.key),
            Origin::Env {
                var: o.var,
                text: o.text,
            },
        );
    }
    let raw = RawConfig {
        postgres: section(&mut doc, "postgres", &origins)?,
        replication: section(&mut doc, "replication", &origins)?,
        capture: section(&mut doc, "capture", &origins)?,
        queue: section(&mut doc, "queue", &origins)?,
        http: section(&mut doc, "http", &origins)?,
        admin: section(&mut doc, "admin", &origins)?,
        log: section(&mut doc, "log", &origins)?,
        mapping: section(&mut doc, "mapping", &origins)?,
        events: section(&mut doc, "events", &origins)?,
        dispatch: section(&mut doc, "dispatch", &origins)?,
    };
    raw.check(&origins)
}

fn parse_document(text: &str, source_name: &str) -> Result<toml::Table, ConfigError> {
    toml::from_str::<toml::Table>(text).map_err(|e| {
        // The toml crate's Display quotes the offending line, which may hold a password: build the
        // message from the position and the bare message instead.
        let at = e.span().map_or(0, |span| span.start).min(text.len());
        let before = text.get(..at).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigError::Syntax {
            source_name: source_name.to_owned(),
            line,
            column,
            message: e.message().trim_end().to_owned(),
        }
    })
}

/// Deserializes `[name]` from `doc`, key by key first so that a bad value is reported with its key.
fn section<T: DeserializeOwned + Default>(
    doc: &mut toml::Table,
    name: &str,
    origins: &Origins,
) -> Result<T, ConfigError> {
    let Some(toml::Value::Table(mut table)) = doc.remove(name) else {
        return Ok(T::default());
    };
    for (key, value) in table.iter_mut() {
        let full = format!("{name}.{key}");
        let Err(err) = one_key::<T>(key, value.clone()) else {
            continue;
        };
        if let Some(Origin::Env { text, .. }) = origins.get(&full) {
            let as_string = toml::Value::String(text.clone());
            if !value.is_str() && one_key::<T>(key, as_string.clone()).is_ok() {
                *value = as_string;
                continue;
            }
        }
        return Err(ConfigError::Invalid {
            origin: origins.label(&full),
            message: describe(&full, &err),
            key: full,
        });
    }
    T::deserialize(toml::Value::Table(table)).map_err(|err| ConfigError::Invalid {
        origin: origins.label(name),
        key: name.to_owned(),
        message: describe(name, &err),
    })
}

/// Deserializes a section holding only `key` (the others take their defaults).
fn one_key<T: DeserializeOwned>(key: &str, value: toml::Value) -> Result<T, toml::de::Error> {
    let mut table = toml::Table::new();
    table.insert(key.to_owned(), value);
    T::deserialize(toml::Value::Table(table))
}

/// serde's message for `key`, without values that may be secret, plus a hint on the expected form.
fn describe(key: &str, err: &toml::de::Error) -> String {
    if matches!(key, "postgres.url" | "postgres.password") {
        return "must be a string".to_owned();
    }
    let message = err.message().trim_end();
    let hint = match key {
        "postgres.connect_timeout"
        | "replication.status_interval"
        | "replication.reconnect_backoff_min"
        | "replication.reconnect_backoff_max"
        | "replication.slot_check_interval"
        | "replication.heartbeat_interval"
        | "queue.retention" => r#"use a duration such as "500ms", "10s" or "2m""#,
        "capture.tables" => r#"use an array of "schema.table" strings, e.g. ["public.weddings"]"#,
        "queue.cache_capacity_mb" => "use a whole number of megabytes greater than 0, e.g. 64",
        "replication.create_slot" => "use true or false",
        _ => return message.to_owned(),
    };
    format!("{message}: {hint}")
}
