//! Why a configuration could not be loaded. Each message says what is wrong, where it came from
//! (file path, file name or environment variable) and how to fix it. No variant ever carries a
//! password or the text of a connection URL.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "config file {path} not found: create it (config.example.toml lists every key with its default) \
         or pass the path of an existing file"
    )]
    NotFound { path: PathBuf },

    #[error("cannot read config file {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },

    #[error("{source_name}: TOML syntax error at line {line}, column {column}: {message}")]
    Syntax {
        source_name: String,
        line: usize,
        column: usize,
        message: String,
    },

    #[error("{origin}: unknown section [{section}]: expected one of {expected}")]
    UnknownSection {
        origin: String,
        section: String,
        expected: String,
    },

    #[error("{origin}: unknown key \"{key}\" in [{section}]: expected one of {expected}")]
    UnknownKey {
        origin: String,
        section: String,
        key: String,
        expected: String,
    },

    /// A key whose value has the wrong type or breaks a constraint. `key` is `section.key`.
    #[error("{origin}: {key}: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },

    /// An environment variable with the `FIELDSYNC__` prefix that cannot be used as is.
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
}

impl ConfigError {
    /// The `section.key` the error is about, when it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}
