//! Configuration: TOML file → environment overrides → `RawConfig` (serde, unknown keys denied) →
//! checked `Config` (durations, addresses, parsed URL, named errors).
//!
//! Every key is documented with its default in `config.example.toml`, which a unit test parses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::pg::PgTarget;

/// The checked configuration the daemon runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub postgres: PgTarget,
    pub replication: ReplicationConfig,
    pub capture: CaptureConfig,
    pub queue: QueueConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
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
}

#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
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
