//! The configuration as written: one serde struct per TOML section, every key optional with its
//! default as a named const below. Unknown keys are denied (`deny_unknown_fields`); values are only
//! type-checked here, constraints are checked when turning a [`RawConfig`] into a
//! [`Config`](super::Config) (`validate.rs`).
//!
//! Keys of `[postgres]` that may also come from the URL (`password`, `tls`, `ca_file`,
//! `connect_timeout`, `application_name`) are `Option`s: `None` means "whatever the URL says, else the
//! default".
//!
//! Raw structs have no `Debug`: the URL may hold a password.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::{DeserializeOwned, Visitor};
use serde::Deserialize;

use crate::config::LogFormat;
use crate::pg::TlsMode;
use crate::secret::Secret;

pub const DEFAULT_POSTGRES_URL: &str = "postgres://fieldsync@127.0.0.1:5432/postgres";
/// Used when neither `postgres.tls` nor the URL's `sslmode` is set.
pub const DEFAULT_TLS: TlsMode = TlsMode::Prefer;
pub const DEFAULT_PORT: u16 = 5432;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_APPLICATION_NAME: &str = "fieldsync";

pub const DEFAULT_SLOT: &str = "fieldsync";
pub const DEFAULT_PUBLICATION: &str = "fieldsync";
pub const DEFAULT_CREATE_SLOT: bool = true;
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(500);
pub const DEFAULT_RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(30);
pub const DEFAULT_SLOT_CHECK_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

pub const DEFAULT_TABLES: &[&str] = &[
    "public.organizations",
    "public.weddings",
    "public.form_field_values",
    "public.organization_integrations",
];

pub const DEFAULT_QUEUE_PATH: &str = "./fieldsync-data";
pub const DEFAULT_CACHE_CAPACITY_MB: u64 = 64;
pub const DEFAULT_MAX_DISK: &str = "10GiB";

pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9187";
/// A request's head must be complete this long after the connection opened (or after its first
/// byte on a kept-alive connection): slowloris clients are closed after it.
pub const DEFAULT_HTTP_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A kept-alive connection with no request in progress is closed after this long.
pub const DEFAULT_HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// 0: derived at start from the open-file limit (see `crate::serve::http::limits`).
pub const DEFAULT_HTTP_MAX_CONNECTIONS: u32 = 0;
pub const DEFAULT_HTTP_MAX_STREAMS: u32 = 32;

pub const DEFAULT_LOG_LEVEL: &str = "info";
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Text;

/// The whole file. A missing section means all of its defaults.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    pub postgres: RawPostgres,
    pub replication: RawReplication,
    pub capture: RawCapture,
    pub queue: RawQueue,
    pub http: RawHttp,
    pub admin: RawAdmin,
    pub log: RawLog,
    pub mapping: super::mapping::RawMapping,
    pub events: super::mapping::RawEvents,
    pub dispatch: super::dispatch::RawDispatch,
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPostgres {
    /// A `postgres://` URL or a libpq `key=value` string.
    pub url: String,
    /// Overrides the URL's password.
    pub password: Option<Secret<String>>,
    /// Overrides the URL's `sslmode`.
    pub tls: Option<TlsMode>,
    /// Overrides the URL's `sslrootcert`.
    pub ca_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    pub application_name: Option<String>,
}

impl Default for RawPostgres {
    fn default() -> Self {
        RawPostgres {
            url: DEFAULT_POSTGRES_URL.to_owned(),
            password: None,
            tls: None,
            ca_file: None,
            connect_timeout: None,
            application_name: None,
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawReplication {
    pub slot: String,
    pub publication: String,
    pub create_slot: bool,
    #[serde(with = "humantime_serde")]
    pub status_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_backoff_min: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_backoff_max: Duration,
    #[serde(with = "humantime_serde")]
    pub slot_check_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    pub on_slot_lost: String,
}

impl Default for RawReplication {
    fn default() -> Self {
        RawReplication {
            slot: DEFAULT_SLOT.to_owned(),
            publication: DEFAULT_PUBLICATION.to_owned(),
            create_slot: DEFAULT_CREATE_SLOT,
            status_interval: DEFAULT_STATUS_INTERVAL,
            reconnect_backoff_min: DEFAULT_RECONNECT_BACKOFF_MIN,
            reconnect_backoff_max: DEFAULT_RECONNECT_BACKOFF_MAX,
            slot_check_interval: DEFAULT_SLOT_CHECK_INTERVAL,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            on_slot_lost: "error".to_owned(),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawCapture {
    /// `schema.table`, or `table` for `public.table`. Exact catalog names, case-sensitive.
    pub tables: Vec<String>,
}

impl Default for RawCapture {
    fn default() -> Self {
        RawCapture {
            tables: DEFAULT_TABLES.iter().map(|t| (*t).to_owned()).collect(),
        }
    }
}

/// How long a record stays in the queue after it is confirmed and delivered.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawQueue {
    pub path: PathBuf,
    pub cache_capacity_mb: u64,
    pub max_disk: super::size::RawSize,
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Key file (32 bytes, base64: `fieldsync secret keygen`) that seals stored values; empty: the
    /// store is not encrypted.
    pub encryption_key_file: String,
    /// Earlier keys' files: values sealed under them still open (`fieldsync reencrypt` moves
    /// them to the current key).
    pub old_encryption_key_files: Vec<String>,
}

impl Default for RawQueue {
    fn default() -> Self {
        RawQueue {
            path: PathBuf::from(DEFAULT_QUEUE_PATH),
            cache_capacity_mb: DEFAULT_CACHE_CAPACITY_MB,
            max_disk: super::size::RawSize::Text(DEFAULT_MAX_DISK.to_owned()),
            retention: DEFAULT_RETENTION,
            encryption_key_file: String::new(),
            old_encryption_key_files: Vec::new(),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawHttp {
    /// Parsed as a `SocketAddr` when checked, so the error can name the key.
    pub listen: String,
    /// Bearer token of the live event stream (`/events/stream`), every organisation's; empty: none.
    pub stream_token: crate::secret::Secret<String>,
    /// Key file (32 bytes, base64: `fieldsync secret keygen`) that signs stream tokens scoped to
    /// one organisation or wedding (`fieldsync token`); empty: no scoped tokens.
    pub stream_signing_key_file: String,
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Open HTTP connections at most; 0 derives the cap from the open-file limit at start.
    pub max_connections: u32,
    /// Open live streams (`/events/stream`) at most; past it, 503 with `Retry-After`.
    pub max_streams: u32,
    /// Bearer tokens of the endpoints that act (`operate`) or show personal data (`read`).
    pub tokens: Vec<RawCredential>,
    /// PEM certificate (chain) and private key: with both set the port serves HTTPS only.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// Off loopback, the daemon refuses to serve HTTP in clear unless this is true.
    pub allow_plaintext_off_loopback: bool,
}

/// An admin user (`[admin] users`) or an HTTP bearer token (`[http] tokens`): a name (what the
/// audit trail records), the secret, and a role (`read` or `operate`).
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawCredential {
    pub name: String,
    /// An admin user's password.
    pub password: crate::secret::Secret<String>,
    /// An HTTP bearer token.
    pub token: crate::secret::Secret<String>,
    pub role: String,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            listen: DEFAULT_HTTP_LISTEN.to_owned(),
            stream_token: crate::secret::Secret::default(),
            stream_signing_key_file: String::new(),
            header_read_timeout: DEFAULT_HTTP_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_HTTP_IDLE_TIMEOUT,
            max_connections: DEFAULT_HTTP_MAX_CONNECTIONS,
            max_streams: DEFAULT_HTTP_MAX_STREAMS,
            tokens: Vec::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            allow_plaintext_off_loopback: false,
        }
    }
}

/// `[admin]`: the SQL admin port (off unless `listen` is set).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: String,
    pub user: String,
    pub password: crate::secret::Secret<String>,
    /// Connections held at once, logged in or not.
    pub max_connections: usize,
    /// From connect to logged in.
    #[serde(with = "humantime_serde")]
    pub auth_timeout: Duration,
    /// The longest query string.
    pub max_query_bytes: usize,
    /// More users, each with a role; `user` is an `operate` user.
    pub users: Vec<RawCredential>,
    /// How long the audit trail of operator actions is kept.
    #[serde(with = "humantime_serde")]
    pub audit_retention: Duration,
    /// Off loopback, the daemon refuses to serve the admin port (results in clear) unless this is
    /// true.
    pub allow_plaintext_off_loopback: bool,
    /// PEM certificate (chain) and private key: with both set the port takes TLS only.
    pub tls_cert_file: String,
    pub tls_key_file: String,
}

/// A year: operator actions are looked back on for incidents and audits.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The admin port's defaults (`crate::serve::admin::limits` applies them).
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Shorter than PostgreSQL's `authentication_timeout` (60 s): the SCRAM exchange takes
/// milliseconds and psql asks for a password before it connects, not during the exchange, so
/// only a stalled or hostile client waits this long, holding one of the connection slots.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// 64 KiB: a hand-written admin query is a few hundred bytes; this leaves room for a generated
/// `IN (...)` list of a thousand event ids (~30 KiB) while keeping a query's text, its tokens and
/// its plan small.
pub const DEFAULT_MAX_QUERY_BYTES: usize = 64 * 1024;

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: String::new(),
            user: "fieldsync".to_owned(),
            password: crate::secret::Secret::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            max_query_bytes: DEFAULT_MAX_QUERY_BYTES,
            users: Vec::new(),
            audit_retention: DEFAULT_AUDIT_RETENTION,
            allow_plaintext_off_loopback: false,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLog {
    pub level: String,
    pub format: LogFormat,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: DEFAULT_LOG_LEVEL.to_owned(),
            format: DEFAULT_LOG_FORMAT,
        }
    }
}

/// The section names, in file order.
pub fn sections() -> &'static [&'static str] {
    field_names::<RawConfig>()
}

/// The keys a section accepts, or `None` for an unknown section. Taken from the serde derives, so
/// this list cannot drift from the structs.
pub fn section_keys(section: &str) -> Option<&'static [&'static str]> {
    Some(match section {
        "postgres" => field_names::<RawPostgres>(),
        "replication" => field_names::<RawReplication>(),
        "capture" => field_names::<RawCapture>(),
        "queue" => field_names::<RawQueue>(),
        "http" => field_names::<RawHttp>(),
        "admin" => field_names::<RawAdmin>(),
        "log" => field_names::<RawLog>(),
        "mapping" => field_names::<super::mapping::RawMapping>(),
        "events" => field_names::<super::mapping::RawEvents>(),
        "dispatch" => field_names::<super::dispatch::RawDispatch>(),
        _ => return None,
    })
}

/// The field names a derived `Deserialize` struct passes to `deserialize_struct`.
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    // The probe always errors after recording the names; the error carries no information.
    let _ = T::deserialize(FieldNameProbe(&mut fields));
    fields
}

struct FieldNameProbe<'a>(&'a mut &'static [&'static str]);

impl<'de> serde::Deserializer<'de> for FieldNameProbe<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("field name probe"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(serde::de::Error::custom("field name probe"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}
