//! Configuration: TOML file → environment overrides → `RawConfig` (serde, unknown keys denied) →
//! checked `Config` (durations, addresses, parsed URL, named errors).
//!
//! Every key is documented with its default in `config.example.toml`, which a unit test parses.
//!
//! Layers, in order (later wins): the defaults (named consts in [`raw`]), the TOML file, then
//! `FIELDSYNC__<SECTION>__<KEY>` environment variables ([`env`]). Within `[postgres]`, the `tls`,
//! `ca_file`, `connect_timeout`, `application_name` and `password` keys override what the URL says.
//!
//! Invariants:
//! - every error names where the bad value came from (file or variable), the key, and how to fix it;
//! - no error, `Debug` output or [`Config::redacted`] rendering ever contains a password: the URL text
//!   is never echoed, and passwords live in [`Secret`](crate::secret::Secret)s.

pub mod dispatch;
mod error;
mod load;
pub mod mapping;
mod pgurl;
mod redact;
pub mod size;
mod tls;
mod validate;

pub mod env;
pub mod raw;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::pg::PgTarget;

pub use dispatch::{Backpressure, DispatchConfig};
pub use error::ConfigError;
pub use mapping::{DatePolicy, EventsConfig, Mapping, PriorityName, SnapshotMode};
use mapping::{RawEvents, RawMapping};
pub use pgurl::percent_encode;
pub use raw::RawConfig;

/// The checked configuration the daemon runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub postgres: PgTarget,
    pub replication: ReplicationConfig,
    pub capture: CaptureConfig,
    pub queue: QueueConfig,
    pub http: HttpConfig,
    /// `None` when `[admin] listen` is not set.
    pub admin: Option<AdminConfig>,
    /// How long the audit trail of operator actions is kept (`[admin] audit_retention`).
    pub audit_retention: std::time::Duration,
    pub log: LogConfig,
    pub mapping: Mapping,
    pub events: EventsConfig,
    pub dispatch: DispatchConfig,
    /// `[mapping]` and `[events]` as written, for `fieldsync config`.
    pub(crate) raw_mapping: RawMapping,
    pub(crate) raw_events: RawEvents,
    /// `[dispatch]` as written, for `fieldsync config`.
    pub(crate) raw_dispatch: dispatch::RawDispatch,
}

#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    /// Logical replication slot name (created with `pgoutput` when missing and `create_slot`).
    pub slot: String,
    /// Publication that lists the captured tables.
    pub publication: String,
    pub create_slot: bool,
    /// How often a standby status update is sent even when nothing changed.
    pub status_interval: Duration,
    /// Reconnect backoff: first delay, doubled up to `reconnect_backoff_max`, with jitter.
    pub reconnect_backoff_min: Duration,
    pub reconnect_backoff_max: Duration,
    /// How often the slot's lag, `wal_status` and `safe_wal_size` are read (metrics, `/readyz`).
    pub slot_check_interval: Duration,
    /// A stalled stream is detected within this (heartbeats every half of it).
    pub heartbeat_interval: Duration,
    /// What to do with an invalidated slot (`wal_status = lost`).
    pub on_slot_lost: SlotLostPolicy,
}

/// An invalidated slot cannot stream the changes whose WAL was removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotLostPolicy {
    /// Stop with the command that fixes it (drop the slot; a fresh snapshot re-syncs).
    Error,
    /// Drop it, create a fresh slot and take a fresh snapshot (re-sync of the current rows).
    Recreate,
}

/// A schema-qualified table name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// Tables whose row changes are captured; rows of other tables are ignored even when the
    /// publication sends them.
    pub tables: Vec<TableName>,
}

#[derive(Clone, Debug)]
pub struct QueueConfig {
    pub path: PathBuf,
    /// sled page cache size; bounds the queue's memory.
    pub cache_capacity_bytes: u64,
    /// The store's size on disk at which capture stops reading WAL (`[queue] max_disk`).
    pub max_disk_bytes: u64,
    /// A record leaves the queue once it is confirmed, every delivery of it is final, and it is
    /// older than this (also the live stream's replay window).
    pub retention: std::time::Duration,
    /// The key that seals stored values (`[queue] encryption_key_file`), and its file.
    pub encryption_key: Option<KeyFile>,
    /// Earlier keys that still open values (`[queue] old_encryption_key_files`).
    pub old_encryption_keys: Vec<KeyFile>,
}

/// A 32-byte key read from a file (`fieldsync secret keygen` makes one).
#[derive(Clone, Debug)]
pub struct KeyFile {
    pub path: PathBuf,
    pub key: crate::secret::Secret<[u8; 32]>,
}

/// The SQL admin port.
#[derive(Clone, Debug)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// `[admin] user` (an `operate` user) first, then `[admin] users`.
    pub users: Vec<Credential>,
    /// Connections held at once, logged in or not (`53300` past it).
    pub max_connections: usize,
    /// Clear text off loopback was allowed explicitly.
    pub allow_plaintext_off_loopback: bool,
    /// TLS for the port: with it, a startup packet in clear is refused.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// The certificate and key files, as configured.
    pub tls_files: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// From connect to logged in; a slower connection is closed.
    pub auth_timeout: std::time::Duration,
    /// The longest query string (`54000` past it).
    pub max_query_bytes: usize,
}

#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// The live event stream's bearer token, for every organisation.
    pub stream_token: Option<crate::secret::Secret<String>>,
    /// The key of stream tokens scoped to an organisation or a wedding (`fieldsync token`). The
    /// live stream is off when neither this nor `stream_token` is set.
    pub stream_signing_key: Option<crate::secret::Secret<[u8; 32]>>,
    /// Where that key was read from.
    pub stream_signing_key_file: Option<std::path::PathBuf>,
    /// A request head must be complete within this, from the connection's start (or from the
    /// first byte of a later request on a kept-alive connection).
    pub header_read_timeout: std::time::Duration,
    /// A kept-alive connection with no request in progress is closed after this.
    pub idle_timeout: std::time::Duration,
    /// Open connections at most; `None`: derived from the open-file limit when the server starts.
    pub max_connections: Option<u32>,
    /// Open live streams at most.
    pub max_streams: u32,
    /// Bearer tokens of the endpoints that act or show personal data.
    pub tokens: Vec<Credential>,
    /// TLS for the port (`tls_cert_file`, `tls_key_file`); `None`: HTTP in clear.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// The certificate and key files, as configured.
    pub tls_files: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Clear text off loopback was allowed explicitly.
    pub allow_plaintext_off_loopback: bool,
}

/// What an operator may do: read the views, or also act (requeue, pause, resume).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Operate,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
        }
    }
}

/// An admin user and its password, or an HTTP bearer token, with its role.
#[derive(Clone, Debug)]
pub struct Credential {
    pub name: String,
    pub secret: crate::secret::Secret<String>,
    pub role: Role,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    /// An `EnvFilter` directive such as `info` or `fieldsync=debug`.
    pub level: String,
    pub format: LogFormat,
}

impl Config {
    /// Reads the TOML file at `path`, applies the process environment's `FIELDSYNC__*` overrides and
    /// checks the result. A missing file is an error.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_file(path)?;
        let mut config = Config::from_toml_str(&text, &path.display().to_string(), env::process_env()?)?;
        config.dispatch.config_file = Some(path.to_owned());
        Ok(config)
    }

    /// Like [`Config::load`] with a path; with `None`, the defaults plus environment overrides.
    pub fn load_or_default(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(path) => Config::load(path),
            None => Config::from_toml_str("", "defaults", env::process_env()?),
        }
    }

    /// Parses `text` (named `source_name` in errors), applies the `FIELDSYNC__*` overrides found in
    /// `env` (other variables are ignored) and checks the result. Never reads the process env.
    pub fn from_toml_str(
        text: &str,
        source_name: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        load::load(text, source_name, env)
    }

    /// The effective configuration as TOML, every password replaced by `***`: what
    /// `fieldsync config` prints. Parsing it back gives the same configuration (password aside).
    pub fn redacted(&self) -> String {
        redact::render(self)
    }
}

impl Default for Config {
    /// The documented defaults, without any environment override.
    fn default() -> Config {
        RawConfig::default()
            .into_config()
            .expect("the built-in defaults are valid (pinned by a unit test)")
    }
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ConfigError::NotFound {
            path: path.to_owned(),
        },
        _ => ConfigError::Unreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        },
    })
}
