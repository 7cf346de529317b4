//! `[dispatch]`: how events are delivered to the organisations' integrations (retries, limits,
//! dead letters, backpressure, the delivery log).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[dispatch]` as written. Flat keys, so each can be overridden by `FIELDSYNC__DISPATCH__<KEY>`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawDispatch {
    pub enabled: bool,
    pub max_in_flight: usize,
    pub max_queued_per_integration: usize,
    pub backpressure: String,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_cap: Duration,
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    pub breaker_failures: u32,
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
    #[serde(with = "humantime_serde")]
    pub log_retention: Duration,
    pub log_max_entries: u64,
    pub secrets_key_file: String,
    pub secret_env_prefix: String,
    pub secret_dir: String,
    pub allowed_base_urls: Vec<String>,
}

impl Default for RawDispatch {
    fn default() -> Self {
        RawDispatch {
            enabled: true,
            max_in_flight: 2_000,
            max_queued_per_integration: 20_000,
            backpressure: "alert".to_owned(),
            request_timeout: Duration::from_secs(15),
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(600),
            max_attempts: 15,
            max_age: Duration::from_secs(72 * 3600),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            log_retention: Duration::from_secs(7 * 24 * 3600),
            log_max_entries: 1_000_000,
            secrets_key_file: String::new(),
            secret_env_prefix: crate::credentials::DEFAULT_ENV_PREFIX.to_owned(),
            secret_dir: String::new(),
            allowed_base_urls: Vec::new(),
        }
    }
}

/// What happens when an integration's queued deliveries reach `max_queued_per_integration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backpressure {
    /// Keep capturing; deliveries past the bound wait in the durable queue (not in memory) and the
    /// integration is reported as backpressured.
    Alert,
    /// Stop reading the replication stream until the integration is back under the bound;
    /// PostgreSQL keeps the WAL meanwhile.
    Pause,
}

#[derive(Clone, Debug)]
pub struct DispatchConfig {
    pub enabled: bool,
    pub max_in_flight: usize,
    pub max_queued_per_integration: usize,
    pub backpressure: Backpressure,
    pub request_timeout: Duration,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    pub max_attempts: u32,
    pub max_age: Duration,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    pub log_retention: Duration,
    /// The delivery log keeps at most this many entries (the oldest go first).
    pub log_max_entries: u64,
    /// The key of integration secrets written `{"encrypted": …}` (`fieldsync secret keygen`).
    pub secrets_key_file: Option<std::path::PathBuf>,
    /// `{"env": NAME}` references may name only variables starting with it.
    pub secret_env_prefix: String,
    /// `{"file": PATH}` references must lie under it (resolved); `None`: refused.
    pub secret_dir: Option<std::path::PathBuf>,
    /// Bases adapters may send to besides their services' own hosts (sandboxes, proxies).
    pub allowed_base_urls: Vec<reqwest::Url>,
    /// The configuration file it was read from (never readable through a secret reference).
    pub config_file: Option<std::path::PathBuf>,
}

impl DispatchConfig {
    /// What integration rows may point at ([`crate::credentials::Trust`]).
    pub fn trust(&self) -> crate::credentials::Trust {
        crate::credentials::Trust {
            env_prefix: self.secret_env_prefix.clone(),
            secret_dir: self.secret_dir.clone(),
            protected: self
                .secrets_key_file
                .iter()
                .chain(&self.config_file)
                .cloned()
                .collect(),
            allowed_urls: self.allowed_base_urls.clone(),
        }
    }
}

pub(super) fn check_dispatch(
    raw: &RawDispatch,
    err: &dyn Fn(&str, String) -> super::ConfigError,
) -> Result<DispatchConfig, super::ConfigError> {
    let backpressure = match raw.backpressure.as_str() {
        "alert" => Backpressure::Alert,
        "pause" => Backpressure::Pause,
        other => {
            return Err(err(
                "dispatch.backpressure",
                format!(
                    "{} is not a policy: use \"alert\" (keep capturing) or \"pause\" (stop reading WAL)",
                    crate::secret::quoted(other)
                ),
            ))
        }
    };
    let positive = |key: &str, v: usize| {
        if v == 0 {
            Err(err(key, "must be at least 1".to_owned()))
        } else {
            Ok(())
        }
    };
    positive("dispatch.max_in_flight", raw.max_in_flight)?;
    positive(
        "dispatch.max_queued_per_integration",
        raw.max_queued_per_integration,
    )?;
    positive("dispatch.max_attempts", raw.max_attempts as usize)?;
    positive("dispatch.breaker_failures", raw.breaker_failures as usize)?;
    for (key, d) in [
        ("dispatch.request_timeout", raw.request_timeout),
        ("dispatch.retry_base", raw.retry_base),
        ("dispatch.retry_cap", raw.retry_cap),
        ("dispatch.max_age", raw.max_age),
        ("dispatch.breaker_cooldown", raw.breaker_cooldown),
    ] {
        if d.is_zero() {
            return Err(err(key, "must be longer than 0 (e.g. \"1s\")".to_owned()));
        }
    }
    if raw.retry_cap < raw.retry_base {
        return Err(err(
            "dispatch.retry_cap",
            format!(
                "{:?} is shorter than dispatch.retry_base ({:?}): the cap bounds the backoff from above",
                raw.retry_cap, raw.retry_base
            ),
        ));
    }
    let secrets_key_file =
        (!raw.secrets_key_file.is_empty()).then(|| std::path::PathBuf::from(&raw.secrets_key_file));
    if let Some(path) = &secrets_key_file {
        crate::credentials::Credentials::from_key_file(path)
            .map_err(|e| err("dispatch.secrets_key_file", e.to_string()))?;
    }
    let prefix = &raw.secret_env_prefix;
    if prefix.is_empty()
        || prefix.starts_with("FIELDSYNC__")
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(err(
            "dispatch.secret_env_prefix",
            format!(
                "{} must be a non-empty prefix of capitals, digits and _ (not FIELDSYNC__, the daemon's own settings), e.g. \"FIELDSYNC_SECRET_\"",
                crate::secret::excerpt(prefix, 40)
            ),
        ));
    }
    let secret_dir = match raw.secret_dir.as_str() {
        "" => None,
        dir => Some(
            std::fs::canonicalize(dir)
                .ok()
                .filter(|d| d.is_dir())
                .ok_or_else(|| {
                    err(
                        "dispatch.secret_dir",
                        format!("{} is not a directory", crate::secret::excerpt(dir, 80)),
                    )
                })?,
        ),
    };
    let mut allowed_base_urls = Vec::new();
    for base in &raw.allowed_base_urls {
        let url = reqwest::Url::parse(base)
            .ok()
            .filter(|u| {
                matches!(u.scheme(), "http" | "https") && u.username().is_empty() && u.password().is_none()
            })
            .ok_or_else(|| {
                err(
                    "dispatch.allowed_base_urls",
                    format!(
                        "{} is not an http(s) URL without user or password, e.g. \"http://127.0.0.1:8080/\"",
                        crate::secret::excerpt(base, 80)
                    ),
                )
            })?;
        allowed_base_urls.push(url);
    }
    Ok(DispatchConfig {
        enabled: raw.enabled,
        max_in_flight: raw.max_in_flight,
        max_queued_per_integration: raw.max_queued_per_integration,
        backpressure,
        request_timeout: raw.request_timeout,
        retry_base: raw.retry_base,
        retry_cap: raw.retry_cap,
        max_attempts: raw.max_attempts,
        max_age: raw.max_age,
        breaker_failures: raw.breaker_failures,
        breaker_cooldown: raw.breaker_cooldown,
        log_retention: raw.log_retention,
        log_max_entries: raw.log_max_entries,
        secrets_key_file,
        secret_env_prefix: raw.secret_env_prefix.clone(),
        secret_dir,
        allowed_base_urls,
        config_file: None,
    })
}
