//! The Google Calendar adapter (`integration_type = 'google_calendar'`): mirrors a wedding's
//! timeline, date and venue into one calendar.
//!
//! Integration config ([`GoogleConfig`]): `{"client_id": "…", "client_secret": <secret>,
//! "refresh_token": <secret>, "calendar_id": "primary", "base_url":
//! "https://www.googleapis.com/calendar/v3", "token_url": "https://oauth2.googleapis.com/token",
//! "timeout_ms": 15000}` and the common keys; any other key is refused. Secrets are plain
//! strings or `{"env"|"file"|"encrypted": …}` references (crate::credentials).
//!
//! # Mapping
//! - `timeline_builder`: one timed event per timeline item on the wedding date, local wall-clock
//!   `dateTime` with the wedding's IANA `timeZone`; items no longer in the timeline are deleted.
//! - `wedding_date`: one all-day event; the timeline events move to the new date, keeping their
//!   local times.
//! - `venue_selector`: `location` of every event of the wedding.
//!
//! Every event carries `extendedProperties.private` `fieldsync_wedding`, `fieldsync_kind`
//! (`timeline` | `wedding_date`) and `fieldsync_item` (the timeline item's stable key), and has a
//! deterministic id, base32hex of SHA-256 over (wedding id, kind, key): a replayed insert answers
//! 409 `duplicate`, and the adapter then updates the existing event (GET, then PUT with
//! `If-Match`; a 412 re-fetches and re-applies, a bounded number of times). A cancelled event with
//! our id is revived by the update (`status: "confirmed"`).
//!
//! # Auth
//! An access token is cached until a minute before it expires; one refresh at a time (a tokio
//! mutex, the cache itself behind a std mutex never held across an await). A 401 from the calendar
//! drops the token, refreshes once and repeats the request. `invalid_grant` or `invalid_client`
//! from the token endpoint disable the integration until its config changes.
//!
//! No error string or log line carries a secret, a token or the couple's data.
//!
//! # Layout
//! This file holds the adapter type, its config, delivery and the classification of answers;
//! `token` the OAuth access token, `api` the calendar HTTP calls, `upsert` the idempotent writes
//! (409/412 handling), `mapping` the field types as events and `ids` the deterministic event ids.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use serde_json::Value;

use super::crm::{self, Answer, Change};
use super::outcome::{redact_url, Outcome};
use super::{config, AdapterError, Payload};
use crate::credentials::Credentials;
use crate::events::IntegrationType;
use crate::secret::Secret;

mod api;
mod ids;
mod mapping;
mod token;
mod upsert;

use api::Call;
pub use ids::event_id;
use token::Token;

/// Requests per second and burst when the integration's config sets no `rate_limit_per_second`.
pub const DEFAULT_RATE: (f64, u32) = (5.0, 10);

const API: &str = "Google Calendar";
const DEFAULT_BASE: &str = "https://www.googleapis.com/calendar/v3";
const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// The wait after `quotaExceeded` (Google: "back off, can be hours").
const QUOTA_WAIT: Duration = Duration::from_secs(600);
const KIND_TIMELINE: &str = "timeline";
const KIND_DATE: &str = "wedding_date";

pub struct Google {
    /// Boxed: the adapter enum stays small.
    s: Box<Settings>,
    token: Mutex<Option<Token>>,
    refreshing: tokio::sync::Mutex<()>,
}

/// A Google Calendar integration's own config keys (no `Debug`: it holds secrets).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleConfig {
    client_id: Option<String>,
    client_secret: Option<Value>,
    refresh_token: Option<Value>,
    calendar_id: Option<String>,
    base_url: Option<String>,
    token_url: Option<String>,
    timeout_ms: Option<u64>,
}

/// The checked config.
struct Settings {
    client_id: String,
    client_secret: Secret<String>,
    refresh_token: Secret<String>,
    calendar_id: String,
    base: Url,
    token_url: Url,
    timeout: Option<Duration>,
}

/// A URL of the config (or its default), which must be Google's own host unless the daemon allows
/// another base.
fn config_url(
    key: &str,
    given: Option<&str>,
    default: &str,
    credentials: &Credentials,
) -> Result<Url, AdapterError> {
    let text = given.unwrap_or(default);
    let url = Url::parse(text.trim_end_matches('/'))
        .map_err(|e| AdapterError::config(key, &format!("is not a URL ({e}): use the default {default}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(AdapterError::config(
            key,
            &format!("must be an https URL (default {default})"),
        ));
    }
    let host = Url::parse(default).expect("a valid default");
    credentials.check_url(key, &url, &[host.host_str().expect("a host")])?;
    Ok(url)
}

impl Google {
    pub fn from_config(config: &Value, credentials: &Credentials) -> Result<Google, AdapterError> {
        let (_, c): (_, GoogleConfig) = config::parse(IntegrationType::GoogleCalendar, config)?;
        let client_id =
            match c.client_id {
                Some(s) if !s.trim().is_empty() => s.trim().to_owned(),
                Some(_) => {
                    return Err(AdapterError::config(
                        "client_id",
                        "must be the OAuth client id string (…apps.googleusercontent.com)",
                    ))
                }
                None => return Err(AdapterError::config(
                    "client_id",
                    "is missing: set config.client_id to the OAuth client id from the Google Cloud console",
                )),
            };
        let client_secret = credentials.resolve_required(
            "client_secret",
            c.client_secret.as_ref(),
            "set config.client_secret to the OAuth client's secret (or an env/file/encrypted reference)",
        )?;
        let refresh_token = credentials.resolve_required(
            "refresh_token",
            c.refresh_token.as_ref(),
            "set config.refresh_token to the refresh token from the calendar owner's consent (or a reference)",
        )?;
        let calendar_id = match c.calendar_id {
            None => "primary".to_owned(),
            Some(s) if !s.trim().is_empty() => s.trim().to_owned(),
            Some(_) => {
                return Err(AdapterError::config(
                    "calendar_id",
                    "must be a calendar id string (\"primary\" or the calendar's id)",
                ))
            }
        };
        Ok(Google {
            s: Box::new(Settings {
                client_id,
                client_secret,
                refresh_token,
                calendar_id,
                base: config_url("base_url", c.base_url.as_deref(), DEFAULT_BASE, credentials)?,
                token_url: config_url(
                    "token_url",
                    c.token_url.as_deref(),
                    DEFAULT_TOKEN_URL,
                    credentials,
                )?,
                timeout: c.timeout_ms.map(Duration::from_millis),
            }),
            token: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn endpoint(&self) -> String {
        redact_url(self.s.base.as_str())
    }

    pub async fn deliver(
        &self,
        client: &reqwest::Client,
        payload: &Payload,
        default_timeout: Duration,
    ) -> Outcome {
        let change = match Change::read(payload) {
            Ok(c) => c,
            Err(outcome) => return outcome,
        };
        let call = Call {
            g: self,
            client,
            timeout: self.s.timeout.unwrap_or(default_timeout),
        };
        let done = match change.field_type.as_str() {
            "timeline_builder" => call.timeline(&change).await,
            "wedding_date" => call.wedding_date(&change).await,
            "venue_selector" => call.venue(&change).await,
            other => Err(crm::reject(format!(
                "google_calendar does not take {other} fields (it takes {}): remove it from config.field_types",
                crate::events::IntegrationType::GoogleCalendar.default_field_types().unwrap_or_default().join(", ")
            ))),
        };
        match done {
            Ok(()) => Outcome::Delivered { status: 200 },
            Err(outcome) => outcome,
        }
    }
}

/// Google's error `reason` and `message`, when the body is its error envelope.
fn error_reason(answer: &Answer) -> (Option<String>, Option<String>) {
    let v: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
    let first = &v["error"]["errors"][0];
    let text = |x: &Value| x.as_str().map(|s| s.chars().take(200).collect::<String>());
    (
        text(&first["reason"]),
        text(&first["message"]).or_else(|| text(&v["error"]["message"])),
    )
}

/// An answer the operation did not expect, classified (Google's "Handle API errors" table).
fn classify(answer: &Answer, calendar_id: &str, what: &str) -> Outcome {
    let status = answer.status.as_u16();
    let (reason, message) = error_reason(answer);
    let reason = reason.as_deref();
    let detail = format!(
        "{} {}",
        reason.unwrap_or("no reason"),
        message.as_deref().map(|m| format!("({m})")).unwrap_or_default()
    );
    match status {
        403 | 429 => match reason {
            Some("quotaExceeded") => Outcome::Retry {
                status: Some(status),
                error: format!("{API} usage limits exceeded (quotaExceeded): waiting before the next attempt"),
                after: Some(answer.retry_after().unwrap_or(QUOTA_WAIT)),
                endpoint_fault: false,
            },
            Some("rateLimitExceeded" | "userRateLimitExceeded") | None => {
                crm::rate_limited(API, answer, None)
            }
            Some(_) => Outcome::Reject {
                status: Some(status),
                error: format!(
                    "{API} refused the {what} ({status} {detail}): check that the authorised account can write config.calendar_id"
                ),
            },
        },
        401 => Outcome::Retry {
            status: Some(status),
            error: format!("{API} refused a freshly refreshed access token (401 {detail})"),
            after: None,
            endpoint_fault: false,
        },
        404 => Outcome::Reject {
            status: Some(status),
            error: format!(
                "{API} has no calendar {calendar_id:?} for the authorised account (404): fix config.calendar_id"
            ),
        },
        500..=599 => crm::server_error(API, answer),
        _ => Outcome::Reject {
            status: Some(status),
            error: format!("{API} rejected the {what} ({status} {detail})"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use reqwest::header::HeaderMap;
    use reqwest::StatusCode;
    use serde_json::json;

    pub(super) fn answer(status: u16, body: Value) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        }
    }

    fn google_error(status: u16, reason: &str, message: &str) -> Answer {
        answer(
            status,
            json!({"error": {"errors": [{"domain": "usageLimits", "reason": reason, "message": message}], "code": status, "message": message}}),
        )
    }

    #[test]
    fn google_rate_limits_back_off_and_quota_waits_long() {
        for (status, reason) in [
            (403, "rateLimitExceeded"),
            (403, "userRateLimitExceeded"),
            (429, "rateLimitExceeded"),
        ] {
            match classify(
                &google_error(status, reason, "Rate Limit Exceeded"),
                "primary",
                "x",
            ) {
                Outcome::Retry {
                    after,
                    endpoint_fault,
                    ..
                } => {
                    assert_eq!(after, None, "exponential backoff, no fixed wait");
                    assert!(!endpoint_fault);
                }
                other => panic!("{other:?}"),
            }
        }
        match classify(
            &google_error(403, "quotaExceeded", "Calendar usage limits exceeded."),
            "primary",
            "x",
        ) {
            Outcome::Retry { after, .. } => assert_eq!(after, Some(QUOTA_WAIT)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn google_bad_requests_and_unknown_calendars_are_rejected_with_the_reason() {
        match classify(
            &google_error(400, "timeRangeEmpty", "The specified time range is empty."),
            "primary",
            "event insert",
        ) {
            Outcome::Reject { error, .. } => assert!(error.contains("timeRangeEmpty"), "{error}"),
            other => panic!("{other:?}"),
        }
        match classify(
            &google_error(404, "notFound", "Not Found"),
            "team@example.com",
            "event list",
        ) {
            Outcome::Reject { error, .. } => assert!(error.contains("config.calendar_id"), "{error}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(&answer(503, json!({})), "primary", "x"),
            Outcome::Retry {
                endpoint_fault: true,
                ..
            }
        ));
    }

    #[test]
    fn google_config_errors_name_the_key_never_the_secret() {
        let creds = Credentials::default();
        let e = Google::from_config(
            &json!({"client_secret": "s3cr3t-value", "refresh_token": "r3fr3sh"}),
            &creds,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("client_id"), "{e}");
        let e = Google::from_config(
            &json!({"client_id": "c", "client_secret": "s3cr3t-value"}),
            &creds,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("refresh_token") && !e.contains("s3cr3t"), "{e}");
        let e = Google::from_config(
            &json!({"client_id": "c", "client_secret": "s3cr3t-value", "refresh_token": "r", "base_url": "ftp://x"}),
            &creds,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("base_url") && !e.contains("s3cr3t"), "{e}");
        let ok = Google::from_config(
            &json!({"client_id": "c", "client_secret": "s", "refresh_token": "r"}),
            &creds,
        )
        .unwrap();
        assert_eq!(ok.s.calendar_id, "primary");
        assert_eq!(ok.endpoint(), DEFAULT_BASE);
    }
}
