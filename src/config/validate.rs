//! [`RawConfig`] → [`Config`]: parses the URL, addresses and table names, and checks every
//! constraint. Each error names `section.key`, where the value came from, and what would be valid.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::load::Origins;
use crate::config::pgurl;
use crate::config::raw::{
    self, RawAdmin, RawCapture, RawConfig, RawCredential, RawHttp, RawLog, RawPostgres, RawQueue,
    RawReplication,
};
use crate::config::{
    AdminConfig, CaptureConfig, Config, ConfigError, Credential, HttpConfig, KeyFile, LogConfig, QueueConfig,
    ReplicationConfig, Role, TableName,
};
use crate::pg::{PgTarget, TlsMode};
use crate::secret::quoted;

/// Longer than any sensible retention: a typo such as `24000h` more likely.
const MAX_RETENTION: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// PostgreSQL's identifier limit (NAMEDATALEN - 1); longer names are silently truncated by the server.
pub const MAX_IDENTIFIER_BYTES: usize = 63;
/// The smallest `[queue] max_disk`: sled's files take about a megabyte before any record.
const MIN_MAX_DISK: u64 = 1 << 20;
/// The words a log filter may use alone.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// The largest `[http] max_connections` accepted.
pub const MAX_HTTP_CONNECTIONS: u32 = 1_000_000;

impl RawConfig {
    /// Checks the values as they stand (no file, no environment).
    pub fn into_config(self) -> Result<Config, ConfigError> {
        self.check(&Origins::default())
    }

    pub(crate) fn check(self, origins: &Origins) -> Result<Config, ConfigError> {
        let c = Checker { origins };
        let err = |key: &str, message: String| c.err(key, message);
        let capture = c.capture(self.capture)?;
        let mapping = super::mapping::check_mapping(&self.mapping, &err)?;
        let events = super::mapping::check_events(&self.events, &err)?;
        let dispatch = super::dispatch::check_dispatch(&self.dispatch, &err)?;
        Ok(Config {
            postgres: c.postgres(self.postgres)?,
            replication: c.replication(self.replication)?,
            capture,
            queue: c.queue(self.queue)?,
            http: c.http(self.http)?,
            audit_retention: c.audit_retention(&self.admin)?,
            admin: c.admin(self.admin)?,
            log: c.log(self.log)?,
            mapping,
            events,
            raw_mapping: self.mapping,
            raw_events: self.events,
            dispatch,
            raw_dispatch: self.dispatch,
        })
    }
}

/// Whether `name` is a valid replication slot name: 1..=63 of `[a-z0-9_]`.
pub fn is_valid_slot_name(name: &str) -> bool {
    (1..=MAX_IDENTIFIER_BYTES).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `schema.table`, or `table` meaning `public.table`. Names are taken literally (case-sensitive).
pub fn parse_table_name(text: &str) -> Result<TableName, String> {
    let parts: Vec<&str> = text.split('.').collect();
    let (schema, name) = match parts.as_slice() {
        [name] => ("public", *name),
        [schema, name] => (*schema, *name),
        _ => ("", ""),
    };
    let fits = |part: &str| !part.trim().is_empty() && part.len() <= MAX_IDENTIFIER_BYTES;
    if !fits(schema) || !fits(name) {
        return Err(format!(
            "{} is not a table name: use \"schema.table\" or \"table\" (meaning public.table), each \
             part 1 to {MAX_IDENTIFIER_BYTES} bytes",
            quoted(text)
        ));
    }
    Ok(TableName {
        schema: schema.to_owned(),
        name: name.to_owned(),
    })
}

struct Checker<'a> {
    origins: &'a Origins,
}

impl Checker<'_> {
    fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origins.label(key),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn postgres(&self, raw: RawPostgres) -> Result<PgTarget, ConfigError> {
        let url = pgurl::parse(&raw.url).map_err(|m| self.err("postgres.url", m))?;
        let tls = raw.tls.or(url.sslmode).unwrap_or(raw::DEFAULT_TLS);
        let ca_key = if raw.ca_file.is_some() {
            "postgres.ca_file"
        } else {
            "postgres.url"
        };
        let ca_file = raw.ca_file.or(url.sslrootcert);
        if ca_file.is_some() && tls != TlsMode::VerifyFull {
            return Err(self.err(
                ca_key,
                "a CA file is only used with tls = \"verify-full\": set postgres.tls = \"verify-full\" \
                 (or sslmode=verify-full in the URL), or remove the CA file",
            ));
        }
        let connect_timeout = raw
            .connect_timeout
            .or(url.connect_timeout)
            .unwrap_or(raw::DEFAULT_CONNECT_TIMEOUT);
        self.positive("postgres.connect_timeout", connect_timeout)?;
        let application_name = raw
            .application_name
            .or(url.application_name)
            .unwrap_or_else(|| raw::DEFAULT_APPLICATION_NAME.to_owned());
        for (key, value) in [
            ("postgres.application_name", Some(&application_name)),
            ("postgres.user", Some(&url.user)),
            ("postgres.dbname", Some(&url.dbname)),
        ] {
            if let Some(v) = value.filter(|v| v.len() > MAX_IDENTIFIER_BYTES || v.contains(char::is_control))
            {
                return Err(self.err(
                    key,
                    format!(
                        "{} is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES} bytes or holds control characters",
                        quoted(v)
                    ),
                ));
            }
        }
        Ok(PgTarget {
            host: url.host,
            port: url.port,
            user: url.user,
            password: raw.password.or(url.password),
            dbname: url.dbname,
            tls,
            ca_file,
            connect_timeout,
            application_name,
        })
    }

    fn replication(&self, raw: RawReplication) -> Result<ReplicationConfig, ConfigError> {
        if !is_valid_slot_name(&raw.slot) {
            return Err(self.err(
                "replication.slot",
                format!(
                    "{} is not a valid slot name: use lowercase letters, digits and underscores, at \
                     most {MAX_IDENTIFIER_BYTES} characters",
                    quoted(&raw.slot)
                ),
            ));
        }
        if raw.publication.is_empty()
            || raw.publication.len() > MAX_IDENTIFIER_BYTES
            || raw.publication.contains('\0')
        {
            return Err(self.err(
                "replication.publication",
                format!(
                    "{} is not a valid publication name: use 1 to {MAX_IDENTIFIER_BYTES} bytes, as in \
                     CREATE PUBLICATION",
                    quoted(&raw.publication)
                ),
            ));
        }
        self.positive("replication.status_interval", raw.status_interval)?;
        self.positive("replication.slot_check_interval", raw.slot_check_interval)?;
        self.positive("replication.heartbeat_interval", raw.heartbeat_interval)?;
        let on_slot_lost = match raw.on_slot_lost.as_str() {
            "error" => super::SlotLostPolicy::Error,
            "recreate" => super::SlotLostPolicy::Recreate,
            other => {
                return Err(self.err(
                    "replication.on_slot_lost",
                    format!("{} is not a policy: use \"error\" (stop with the fix) or \"recreate\" (new slot and a fresh snapshot)", quoted(other)),
                ))
            }
        };
        self.positive("replication.reconnect_backoff_min", raw.reconnect_backoff_min)?;
        if raw.reconnect_backoff_max < raw.reconnect_backoff_min {
            // Blame the key that was set; a default is not the user's mistake.
            let key = if self.origins.is_set("replication.reconnect_backoff_max") {
                "replication.reconnect_backoff_max"
            } else {
                "replication.reconnect_backoff_min"
            };
            return Err(self.err(
                key,
                format!(
                    "reconnect_backoff_max ({}) must be at least reconnect_backoff_min ({})",
                    humantime_serde::re::humantime::format_duration(raw.reconnect_backoff_max),
                    humantime_serde::re::humantime::format_duration(raw.reconnect_backoff_min)
                ),
            ));
        }
        Ok(ReplicationConfig {
            slot: raw.slot,
            publication: raw.publication,
            create_slot: raw.create_slot,
            status_interval: raw.status_interval,
            reconnect_backoff_min: raw.reconnect_backoff_min,
            reconnect_backoff_max: raw.reconnect_backoff_max,
            slot_check_interval: raw.slot_check_interval,
            heartbeat_interval: raw.heartbeat_interval,
            on_slot_lost,
        })
    }

    fn capture(&self, raw: RawCapture) -> Result<CaptureConfig, ConfigError> {
        const KEY: &str = "capture.tables";
        if raw.tables.is_empty() {
            return Err(self.err(
                KEY,
                "is empty: list at least one table, e.g. [\"public.form_field_values\"]",
            ));
        }
        let mut seen = BTreeSet::new();
        let mut tables = Vec::with_capacity(raw.tables.len());
        for text in &raw.tables {
            let table = parse_table_name(text).map_err(|m| self.err(KEY, m))?;
            if !seen.insert(table.clone()) {
                return Err(self.err(KEY, format!("{table} is listed twice: list each table once")));
            }
            tables.push(table);
        }
        Ok(CaptureConfig { tables })
    }

    fn queue(&self, raw: RawQueue) -> Result<QueueConfig, ConfigError> {
        if raw.path.as_os_str().is_empty() {
            return Err(self.err("queue.path", "is empty: give the directory for the queue's files"));
        }
        const KEY: &str = "queue.cache_capacity_mb";
        if raw.cache_capacity_mb == 0 {
            return Err(self.err(
                KEY,
                "must be greater than 0 (megabytes of sled page cache), e.g. 64",
            ));
        }
        let cache_capacity_bytes = raw
            .cache_capacity_mb
            .checked_mul(1024 * 1024)
            .ok_or_else(|| self.err(KEY, format!("{} megabytes is too large", raw.cache_capacity_mb)))?;
        let max_disk_bytes = raw.max_disk.bytes().map_err(|e| self.err("queue.max_disk", e))?;
        if max_disk_bytes < MIN_MAX_DISK {
            return Err(self.err(
                "queue.max_disk",
                format!(
                    "{max_disk_bytes} bytes is below the 1MiB the queue needs to hold anything: give a size such as \"10GiB\""
                ),
            ));
        }
        if raw.retention > MAX_RETENTION {
            return Err(self.err(
                "queue.retention",
                format!(
                    "{:?} is longer than ten years: give a duration such as \"24h\" or \"7days\"",
                    raw.retention
                ),
            ));
        }
        let encryption_key = match raw.encryption_key_file.as_str() {
            "" => None,
            path => Some(self.key_file("queue.encryption_key_file", path)?),
        };
        let old_encryption_keys = raw
            .old_encryption_key_files
            .iter()
            .enumerate()
            .map(|(i, path)| self.key_file(&format!("queue.old_encryption_key_files[{i}]"), path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(QueueConfig {
            path: raw.path,
            cache_capacity_bytes,
            max_disk_bytes,
            retention: raw.retention,
            encryption_key,
            old_encryption_keys,
        })
    }

    /// A 32-byte key in base64 from `path`, for the config key `key`.
    fn key_file(&self, key: &str, path: &str) -> Result<KeyFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            self.err(
                key,
                format!("cannot read {path:?} ({e}): make one with `fieldsync secret keygen > {path}`"),
            )
        })?;
        let bytes = crate::credentials::parse_key(text.trim())
            .map_err(|why| self.err(key, format!("{path:?} {why}")))?;
        Ok(KeyFile {
            path: PathBuf::from(path),
            key: crate::secret::Secret::new(bytes),
        })
    }

    fn http(&self, raw: RawHttp) -> Result<HttpConfig, ConfigError> {
        let listen: SocketAddr = raw.listen.parse().map_err(|_| {
            self.err(
                "http.listen",
                format!(
                    "{:?} is not a socket address: use IP:port, e.g. \"127.0.0.1:9187\" or \"[::1]:9187\" \
                     (port 0 picks a free port)",
                    raw.listen
                ),
            )
        })?;
        let stream_token = Some(raw.stream_token)
            .filter(|t| !t.expose().is_empty())
            .map(|t| crate::secret::Secret::new(t.expose().clone()));
        let (tls, tls_files) = self.tls("http", &raw.tls_cert_file, &raw.tls_key_file, b"http/1.1")?;
        if !listen.ip().is_loopback() && tls.is_none() && !raw.allow_plaintext_off_loopback {
            return Err(self.err(
                "http.listen",
                format!(
                    "{listen} is off loopback and the port has no TLS: tokens and personal data would cross \
                     the network in clear; set http.tls_cert_file and http.tls_key_file, or \
                     http.allow_plaintext_off_loopback = true behind a TLS-terminating proxy"
                ),
            ));
        }
        let stream_signing_key = match raw.stream_signing_key_file.as_str() {
            "" => None,
            path => Some(self.key_file("http.stream_signing_key_file", path)?.key),
        };
        self.positive("http.header_read_timeout", raw.header_read_timeout)?;
        self.positive("http.idle_timeout", raw.idle_timeout)?;
        if raw.max_connections > MAX_HTTP_CONNECTIONS {
            return Err(self.err(
                "http.max_connections",
                format!(
                    "{} is more than {MAX_HTTP_CONNECTIONS}: each connection holds a file descriptor; \
                     use 0 to derive the cap from the open-file limit",
                    raw.max_connections
                ),
            ));
        }
        let max_connections = Some(raw.max_connections).filter(|&n| n > 0);
        if raw.max_streams == 0 {
            return Err(self.err(
                "http.max_streams",
                "must be at least 1 (open live streams at most), e.g. 32",
            ));
        }
        if let Some(n) = max_connections.filter(|&n| raw.max_streams >= n) {
            return Err(self.err(
                "http.max_streams",
                format!(
                    "{} is not below http.max_connections ({n}): streams would leave no connection \
                     for /healthz and the other endpoints",
                    raw.max_streams
                ),
            ));
        }
        Ok(HttpConfig {
            listen,
            stream_token,
            stream_signing_key,
            stream_signing_key_file: Some(raw.stream_signing_key_file)
                .filter(|p| !p.is_empty())
                .map(Into::into),
            header_read_timeout: raw.header_read_timeout,
            idle_timeout: raw.idle_timeout,
            max_connections,
            max_streams: raw.max_streams,
            tokens: self.credentials("http.tokens", raw.tokens, 32, |c| &c.token, "token")?,
            tls,
            tls_files,
            allow_plaintext_off_loopback: raw.allow_plaintext_off_loopback,
        })
    }

    /// `[admin] users` or `[http] tokens`: each named once, with a role, and a secret (`field`) at
    /// least `min_secret` characters long.
    fn credentials(
        &self,
        key: &str,
        raw: Vec<RawCredential>,
        min_secret: usize,
        secret: impl Fn(&RawCredential) -> &crate::secret::Secret<String>,
        field: &str,
    ) -> Result<Vec<Credential>, ConfigError> {
        let mut out: Vec<Credential> = Vec::new();
        for (i, c) in raw.iter().enumerate() {
            let at = format!("{key}[{i}]");
            if c.name.is_empty() || out.iter().any(|o| o.name == c.name) {
                return Err(self.err(
                    &format!("{at}.name"),
                    format!(
                        "{:?} must be a name of its own (the audit trail records it)",
                        c.name
                    ),
                ));
            }
            let role = match c.role.as_str() {
                "read" => Role::Read,
                "operate" => Role::Operate,
                other => {
                    return Err(self.err(
                        &format!("{at}.role"),
                        format!(
                            "{} is not a role: use \"read\" (the views and reads) or \"operate\" (also requeue, pause, resume)",
                            quoted(other)
                        ),
                    ))
                }
            };
            let other = if field == "password" {
                c.token.expose()
            } else {
                c.password.expose()
            };
            if !other.is_empty() {
                return Err(self.err(
                    &at,
                    format!(
                        "takes a {field}, not a {}",
                        if field == "password" { "token" } else { "password" }
                    ),
                ));
            }
            if secret(c).expose().chars().count() < min_secret {
                return Err(self.err(
                    &format!("{at}.{field}"),
                    format!("must be at least {min_secret} characters (fieldsync secret keygen prints one)"),
                ));
            }
            out.push(Credential {
                name: c.name.clone(),
                secret: secret(c).clone(),
                role,
            });
        }
        Ok(out)
    }

    /// `[section] tls_cert_file` and `tls_key_file`: both or neither, a certificate and its key.
    #[allow(clippy::type_complexity)]
    fn tls(
        &self,
        section: &str,
        cert: &str,
        key: &str,
        alpn: &[u8],
    ) -> Result<
        (
            Option<std::sync::Arc<rustls::ServerConfig>>,
            Option<(PathBuf, PathBuf)>,
        ),
        ConfigError,
    > {
        match (cert, key) {
            ("", "") => Ok((None, None)),
            ("", _) | (_, "") => Err(self.err(
                &format!(
                    "{section}.{}",
                    if cert.is_empty() {
                        "tls_cert_file"
                    } else {
                        "tls_key_file"
                    }
                ),
                format!("set both {section}.tls_cert_file and {section}.tls_key_file (PEM), or neither"),
            )),
            (cert, key) => {
                let config = super::tls::server_config(Path::new(cert), Path::new(key), alpn)
                    .map_err(|why| self.err(&format!("{section}.tls_cert_file"), why))?;
                Ok((Some(config), Some((PathBuf::from(cert), PathBuf::from(key)))))
            }
        }
    }

    /// `[admin] audit_retention`, checked whether or not the admin port is on (HTTP actions are
    /// audited too).
    fn audit_retention(&self, raw: &RawAdmin) -> Result<Duration, ConfigError> {
        if raw.audit_retention < Duration::from_secs(3600) {
            return Err(self.err(
                "admin.audit_retention",
                "must be at least 1h: the audit trail is what an incident review reads, e.g. \"365d\""
                    .to_owned(),
            ));
        }
        Ok(raw.audit_retention)
    }

    fn admin(&self, raw: RawAdmin) -> Result<Option<AdminConfig>, ConfigError> {
        if raw.listen.is_empty() {
            return Ok(None);
        }
        let listen: SocketAddr = raw.listen.parse().map_err(|_| {
            self.err(
                "admin.listen",
                format!(
                    "{:?} is not a socket address: use IP:port, e.g. \"127.0.0.1:6433\" (port 0 picks a free port)",
                    raw.listen
                ),
            )
        })?;
        if raw.user.is_empty() {
            return Err(self.err(
                "admin.user",
                "must not be empty when admin.listen is set".to_owned(),
            ));
        }
        if raw.password.expose().len() < 12 {
            return Err(self.err(
                "admin.password",
                "must be set, at least 12 characters, when admin.listen is set: put it in \
                 FIELDSYNC__ADMIN__PASSWORD rather than in the file"
                    .to_owned(),
            ));
        }
        if !(1..=10_000).contains(&raw.max_connections) {
            return Err(self.err(
                "admin.max_connections",
                format!("{} is not between 1 and 10000", raw.max_connections),
            ));
        }
        if raw.auth_timeout < std::time::Duration::from_millis(100)
            || raw.auth_timeout > std::time::Duration::from_secs(600)
        {
            return Err(self.err(
                "admin.auth_timeout",
                format!(
                    "{} is not between 100ms and 10m",
                    humantime_serde::re::humantime::format_duration(raw.auth_timeout)
                ),
            ));
        }
        if !(1024..=16 << 20).contains(&raw.max_query_bytes) {
            return Err(self.err(
                "admin.max_query_bytes",
                format!(
                    "{} is not between 1024 and 16777216 (16 MiB): longer statements take memory and time to tokenize, and the admin views need none that long",
                    raw.max_query_bytes
                ),
            ));
        }
        let (tls, tls_files) = self.tls("admin", &raw.tls_cert_file, &raw.tls_key_file, b"postgresql")?;
        if !listen.ip().is_loopback() && tls.is_none() && !raw.allow_plaintext_off_loopback {
            return Err(self.err(
                "admin.listen",
                format!(
                    "{listen} is off loopback and the admin port has no TLS: its results would cross the \
                     network in clear; set admin.tls_cert_file and admin.tls_key_file, or \
                     admin.allow_plaintext_off_loopback = true"
                ),
            ));
        }
        let mut users = vec![Credential {
            name: raw.user,
            secret: raw.password,
            role: Role::Operate,
        }];
        users.extend(self.credentials("admin.users", raw.users, 12, |c| &c.password, "password")?);
        if let Some(twice) = users
            .iter()
            .enumerate()
            .find_map(|(i, u)| users[..i].iter().find(|o| o.name == u.name))
        {
            return Err(self.err(
                "admin.users",
                format!(
                    "user {:?} is configured twice (admin.user is one of them): names must differ",
                    twice.name
                ),
            ));
        }
        Ok(Some(AdminConfig {
            listen,
            users,
            allow_plaintext_off_loopback: raw.allow_plaintext_off_loopback,
            tls,
            tls_files,
            max_connections: raw.max_connections,
            auth_timeout: raw.auth_timeout,
            max_query_bytes: raw.max_query_bytes,
        }))
    }

    fn log(&self, raw: RawLog) -> Result<LogConfig, ConfigError> {
        let invalid = |why: String| {
            self.err(
                "log.level",
                format!(
                    "{} {why}: use a level such as \"info\" or a filter such as \"fieldsync=debug,info\"",
                    quoted(&raw.level)
                ),
            )
        };
        if raw.level.trim().is_empty() {
            return Err(invalid("is empty".into()));
        }
        tracing_subscriber::EnvFilter::try_new(&raw.level)
            .map_err(|e| invalid(format!("is not a valid log filter ({e})")))?;
        // a bare word parses as a target name (logging nothing else): it must be a level
        if let Some(word) = raw
            .level
            .split(',')
            .map(str::trim)
            .find(|d| !d.contains(['=', '[', ':']) && !LEVELS.contains(&d.to_ascii_lowercase().as_str()))
        {
            return Err(invalid(format!(
                "names {} which is no level ({}); a target needs a level, as in \"fieldsync=debug\"",
                quoted(word),
                LEVELS.join(", ")
            )));
        }
        Ok(LogConfig {
            level: raw.level,
            format: raw.format,
        })
    }

    fn positive(&self, key: &str, value: Duration) -> Result<(), ConfigError> {
        if value.is_zero() {
            return Err(self.err(key, "must be greater than 0, e.g. \"1s\""));
        }
        Ok(())
    }
}
