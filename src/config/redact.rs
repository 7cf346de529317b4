//! Renders a checked [`Config`] back to TOML for `fieldsync config`: every key with its effective
//! value, the URL rebuilt from its parts without the password, and `password = "***"` when one is
//! set. These render-only structs are separate from the raw ones so that nothing that can be
//! serialized ever holds a password.

use std::time::Duration;

use serde::Serialize;

use crate::config::pgurl::percent_encode;
use crate::config::{Config, LogFormat};
use crate::pg::{PgTarget, TlsMode};

const HEADER: &str = "# fieldsync: effective configuration (defaults, file, then FIELDSYNC__* environment \
                      overrides); passwords are shown as ***\n\n";

#[derive(Serialize)]
struct Rendered<'a> {
    postgres: Postgres<'a>,
    replication: Replication<'a>,
    capture: Capture,
    queue: Queue,
    http: Http<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    admin: Option<Admin<'a>>,
    log: Log<'a>,
    mapping: &'a crate::config::mapping::RawMapping,
    events: &'a crate::config::mapping::RawEvents,
    dispatch: &'a crate::config::dispatch::RawDispatch,
}

#[derive(Serialize)]
struct Postgres<'a> {
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'static str>,
    tls: TlsMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_file: Option<String>,
    #[serde(with = "humantime_serde")]
    connect_timeout: Duration,
    application_name: &'a str,
}

#[derive(Serialize)]
struct Replication<'a> {
    slot: &'a str,
    publication: &'a str,
    create_slot: bool,
    #[serde(with = "humantime_serde")]
    status_interval: Duration,
    #[serde(with = "humantime_serde")]
    reconnect_backoff_min: Duration,
    #[serde(with = "humantime_serde")]
    reconnect_backoff_max: Duration,
    #[serde(with = "humantime_serde")]
    slot_check_interval: Duration,
    #[serde(with = "humantime_serde")]
    heartbeat_interval: Duration,
    on_slot_lost: &'a str,
}

#[derive(Serialize)]
struct Capture {
    tables: Vec<String>,
}

#[derive(Serialize)]
struct Queue {
    path: String,
    cache_capacity_mb: u64,
    #[serde(with = "humantime_serde")]
    retention: Duration,
    encryption_key_file: String,
    old_encryption_key_files: Vec<String>,
}

#[derive(Serialize)]
struct Http<'a> {
    listen: String,
    stream_token: &'static str,
    stream_signing_key_file: String,
    #[serde(with = "humantime_serde")]
    header_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    idle_timeout: Duration,
    max_connections: u32,
    max_streams: u32,
    tokens: Vec<Shown<'a>>,
    tls_cert_file: String,
    tls_key_file: String,
    allow_plaintext_off_loopback: bool,
}

#[derive(Serialize)]
struct Admin<'a> {
    listen: String,
    user: &'a str,
    password: &'static str,
    max_connections: usize,
    #[serde(with = "humantime_serde")]
    auth_timeout: Duration,
    max_query_bytes: usize,
    users: Vec<Shown<'a>>,
    #[serde(with = "humantime_serde")]
    audit_retention: Duration,
    allow_plaintext_off_loopback: bool,
    tls_cert_file: String,
    tls_key_file: String,
}

/// An admin user or an HTTP token, its secret shown as `***`.
#[derive(Serialize)]
struct Shown<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'static str>,
    role: &'static str,
}

#[derive(Serialize)]
struct Log<'a> {
    level: &'a str,
    format: LogFormat,
}

pub(super) fn render(config: &Config) -> String {
    let pg = &config.postgres;
    let r = &config.replication;
    let rendered = Rendered {
        postgres: Postgres {
            url: url_without_password(pg),
            password: pg.password.as_ref().map(|_| "***"),
            tls: pg.tls,
            ca_file: pg.ca_file.as_ref().map(|p| p.to_string_lossy().into_owned()),
            connect_timeout: pg.connect_timeout,
            application_name: &pg.application_name,
        },
        replication: Replication {
            slot: &r.slot,
            publication: &r.publication,
            create_slot: r.create_slot,
            status_interval: r.status_interval,
            reconnect_backoff_min: r.reconnect_backoff_min,
            reconnect_backoff_max: r.reconnect_backoff_max,
            slot_check_interval: r.slot_check_interval,
            heartbeat_interval: r.heartbeat_interval,
            on_slot_lost: match r.on_slot_lost {
                crate::config::SlotLostPolicy::Error => "error",
                crate::config::SlotLostPolicy::Recreate => "recreate",
            },
        },
        capture: Capture {
            tables: config.capture.tables.iter().map(ToString::to_string).collect(),
        },
        queue: Queue {
            path: config.queue.path.to_string_lossy().into_owned(),
            cache_capacity_mb: config.queue.cache_capacity_bytes / (1024 * 1024),
            retention: config.queue.retention,
            encryption_key_file: config
                .queue
                .encryption_key
                .as_ref()
                .map(|k| k.path.to_string_lossy().into_owned())
                .unwrap_or_default(),
            old_encryption_key_files: config
                .queue
                .old_encryption_keys
                .iter()
                .map(|k| k.path.to_string_lossy().into_owned())
                .collect(),
        },
        http: Http {
            listen: config.http.listen.to_string(),
            stream_token: if config.http.stream_token.is_some() {
                "***"
            } else {
                ""
            },
            stream_signing_key_file: config
                .http
                .stream_signing_key_file
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            header_read_timeout: config.http.header_read_timeout,
            idle_timeout: config.http.idle_timeout,
            max_connections: config.http.max_connections.unwrap_or(0),
            max_streams: config.http.max_streams,
            tokens: config
                .http
                .tokens
                .iter()
                .map(|t| Shown {
                    name: &t.name,
                    password: None,
                    token: Some("***"),
                    role: t.role.as_str(),
                })
                .collect(),
            tls_cert_file: file(&config.http.tls_files, 0),
            tls_key_file: file(&config.http.tls_files, 1),
            allow_plaintext_off_loopback: config.http.allow_plaintext_off_loopback,
        },
        admin: config.admin.as_ref().map(|a| Admin {
            listen: a.listen.to_string(),
            user: &a.users[0].name,
            password: "***",
            max_connections: a.max_connections,
            auth_timeout: a.auth_timeout,
            max_query_bytes: a.max_query_bytes,
            users: a.users[1..]
                .iter()
                .map(|u| Shown {
                    name: &u.name,
                    password: Some("***"),
                    token: None,
                    role: u.role.as_str(),
                })
                .collect(),
            audit_retention: config.audit_retention,
            allow_plaintext_off_loopback: a.allow_plaintext_off_loopback,
            tls_cert_file: file(&a.tls_files, 0),
            tls_key_file: file(&a.tls_files, 1),
        }),
        log: Log {
            level: &config.log.level,
            format: config.log.format,
        },
        mapping: &config.raw_mapping,
        events: &config.raw_events,
        dispatch: &config.raw_dispatch,
    };
    match toml::to_string(&rendered) {
        Ok(body) => format!("{HEADER}{body}"),
        Err(e) => format!("# cannot render the configuration: {e}\n"),
    }
}

/// `postgres://user@host:port/dbname`, parts percent-encoded, IPv6 hosts in brackets.
pub(super) fn url_without_password(pg: &PgTarget) -> String {
    let host = if pg.host.contains(':') {
        format!("[{}]", pg.host)
    } else {
        percent_encode(&pg.host)
    };
    format!(
        "postgres://{}@{}:{}/{}",
        percent_encode(&pg.user),
        host,
        pg.port,
        percent_encode(&pg.dbname)
    )
}

/// The certificate (`0`) or key (`1`) file of a port's TLS, or empty.
fn file(files: &Option<(std::path::PathBuf, std::path::PathBuf)>, which: usize) -> String {
    files
        .as_ref()
        .map(|(cert, key)| if which == 0 { cert } else { key }.to_string_lossy().into_owned())
        .unwrap_or_default()
}
