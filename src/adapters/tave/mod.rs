//! The VSCO Workspace (formerly Tave) adapter (`integration_type = 'tave'`), REST API v2
//! (../shared/CRM_APIS.md §1).
//!
//! Integration config ([`TaveConfig`]):
//! `{"api_key": <secret>, "base_url": "https://workspace.vsco.co/api/v2",
//!   "external_url": "https://fieldsync.invalid/weddings/{wedding_id}",
//!   "custom_fields": {"adults": "…", "children": "…", "infants": "…", "dietary_notes": "…",
//!                     "dietary_prefix": "Dietary: ", "budget_prefix": "Budget: "},
//!   "job_type_id": "<ulid>", "event_type_id": "<ulid>", "timeout_ms": 15000}` and the common
//! keys; only `api_key` is required, any other key is refused.
//!
//! # Mapping (upsert mode: one job per wedding)
//! - The job is found by `GET /job?externalMappingId=<wedding id>`, else created with
//!   `POST /job/-/worksheet` (name = couple names, `eventDate`, the external mapping, and the
//!   wedding's venue as a location contact), which Tave creates all or nothing.
//! - `guest_count_matrix` → `guestCount` (total) and custom fields for adults, children, infants;
//!   `wedding_date` → `eventDate`; `budget_category` → one `Money` custom field per category and
//!   `leadMaxBudget` = the sum of the job's budget fields; `dietary_matrix` → one `Number` custom
//!   field per requirement and a `TextBox` for the notes; all written read-merge-write
//!   (`GET /job/{id}`, change only these, `PUT` without read-only properties; no `PUT` when
//!   nothing changed).
//! - `venue_selector` → a location contact linked to the job by a job-contact whose external
//!   mapping is `<wedding>:venue`; updated in place.
//! - `timeline_builder` → one Event per timeline item, external mapping `<wedding>:tl:<item key>`,
//!   mirrored (created, moved, deleted); a new `wedding_date` moves these events with it.
//! - `field.deleted` clears what the field set.
//!
//! # Idempotency
//! Tave has no idempotency keys, so every entity the adapter creates carries an external mapping
//! and is looked up before it is created: a replay or a restart after a crash finds the job,
//! events, links and custom fields it made before. Custom fields are studio-wide and found by name
//! (creation serialised within this adapter; the oldest wins when a name repeats; a `400` on
//! `customFields` drops the cached ids and is tried once more, for a field deleted in Tave). The one gap
//! the API leaves is the address book, which has no `externalMappingId` filter: a venue contact
//! created by a delivery that died before linking it is found again by paging through the address
//! book newest first (`sortBy=created desc`) down to the job's creation time (a venue contact of
//! a job cannot be older than the job) and matching our external mapping on the contact.
//!
//! # Assumptions (labelled [U]/[G] in CRM_APIS.md)
//! - `MoneyAmount` is in whole units of the studio's currency: minor units are divided by the
//!   currency's exponent (2, or 0/3 for the ISO 4217 exceptions) and rounded half away from zero.
//! - `PUT /job/{id}` writes `customFields` (an integrator fell back to the web service for this).
//! - The venue's formatted address goes to `streetAddress` (the Places result has no split parts
//!   we can trust); `place_id` and coordinates are read-only in Tave and are not sent.
//! - A deleted `budget_category` names its category in the event's `old_value` (REPLICA IDENTITY
//!   FULL); failing that, the category this adapter last saw for the field.
//!
//! # Layout
//! This file holds the adapter type, its config, delivery and the classification of answers;
//! `api` the HTTP calls, `job` finding and writing the job, `mapping` the field types onto it,
//! `custom_fields` the studio's custom fields, `venue` and `timeline` their field types, and
//! `external_ids` the external mapping ids everything is found again by.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::crm::{self, Answer, Change};
use super::outcome::{redact_url, Outcome};
use super::{config, AdapterError, Payload};
use crate::credentials::Credentials;
use crate::events::IntegrationType;
use crate::secret::Secret;

mod api;
mod custom_fields;
mod external_ids;
mod job;
mod mapping;
mod timeline;
mod venue;

use api::Call;
use custom_fields::{CustomFieldNames, Names};
pub use external_ids::{event_mapping_id, job_mapping_id, venue_mapping_id};
pub use mapping::whole_units;

/// Requests per second and burst when the integration's config sets no `rate_limit_per_second`.
/// The quota is undocumented [U]; one integrator paced at one request per 500 ms [S].
pub const DEFAULT_RATE: (f64, u32) = (2.0, 4);

const API: &str = "VSCO Workspace";
const DEFAULT_BASE: &str = "https://workspace.vsco.co/api/v2";
const DEFAULT_EXTERNAL_URL: &str = "https://fieldsync.invalid/weddings/{wedding_id}";

#[derive(Default)]
struct Cache {
    /// wedding id → job id.
    jobs: HashMap<String, String>,
    /// Job custom fields: name → id, and id → name.
    field_ids: HashMap<String, String>,
    field_names: HashMap<String, String>,
    /// (wedding id, field id) → the budget category last delivered for it.
    budget_categories: HashMap<(String, String), String>,
}

/// A Tave integration's own config keys (no `Debug`: it holds the API key).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaveConfig {
    api_key: Option<Value>,
    base_url: Option<String>,
    /// The `url` of the external mappings; `{wedding_id}` is filled in.
    external_url: Option<String>,
    custom_fields: Option<CustomFieldNames>,
    job_type_id: Option<String>,
    event_type_id: Option<String>,
    timeout_ms: Option<u64>,
}

pub struct Tave {
    base: String,
    api_key: Secret<String>,
    external_url: String,
    names: Box<Names>,
    job_type_id: Option<String>,
    event_type_id: Option<String>,
    timeout: Option<Duration>,
    cache: Box<Mutex<Cache>>,
    /// Serialises the find-or-create of studio-wide custom fields across weddings.
    creating_fields: tokio::sync::Mutex<()>,
}

/// An API call that did not succeed: the outcome to report, or a 404 the caller may handle.
enum Fail {
    NotFound,
    Outcome(Outcome),
}

impl From<Outcome> for Fail {
    fn from(o: Outcome) -> Fail {
        Fail::Outcome(o)
    }
}

type Obj = Map<String, Value>;

fn ulid_like(s: &str) -> bool {
    s.len() == 26 && s.chars().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
}

impl Tave {
    pub fn from_config(config: &Value, credentials: &Credentials) -> Result<Tave, AdapterError> {
        let (_, c): (_, TaveConfig) = config::parse(IntegrationType::Tave, config)?;
        let api_key = credentials.resolve_required(
            "api_key",
            c.api_key.as_ref(),
            "set config.api_key to a VSCO Workspace API key with Read/Write permission (Settings › API), e.g. {\"env\": \"TAVE_API_KEY\"}",
        )?;
        let base = c
            .base_url
            .as_deref()
            .unwrap_or(DEFAULT_BASE)
            .trim_end_matches('/')
            .to_owned();
        match reqwest::Url::parse(&base) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {
                credentials.check_url("base_url", &u, &["workspace.vsco.co", "tave.io"])?
            }
            _ => {
                return Err(AdapterError::config(
                    "base_url",
                    "is not an http(s) URL: use https://workspace.vsco.co/api/v2 (the default) or a sandbox's …/tave/api/v2",
                ))
            }
        }
        let external_url = c.external_url.unwrap_or_else(|| DEFAULT_EXTERNAL_URL.to_owned());
        let sample = external_url.replace("{wedding_id}", "00000000-0000-0000-0000-000000000000");
        if !(12..=255).contains(&sample.chars().count()) || reqwest::Url::parse(&sample).is_err() {
            return Err(AdapterError::config(
                "external_url",
                "must be a URL of 12 to 255 characters once {wedding_id} is filled in (Tave's externalMappings url)",
            ));
        }
        let names = Names::from_config(c.custom_fields.unwrap_or_default())?;
        let id = |key: &str, value: Option<String>| -> Result<Option<String>, AdapterError> {
            match value {
                None => Ok(None),
                Some(s) if ulid_like(&s) => Ok(Some(s)),
                Some(_) => Err(AdapterError::config(
                    key,
                    "must be a lowercase ULID (the id of the type in VSCO Workspace)",
                )),
            }
        };
        Ok(Tave {
            base,
            api_key,
            external_url,
            names: Box::new(names),
            job_type_id: id("job_type_id", c.job_type_id)?,
            event_type_id: id("event_type_id", c.event_type_id)?,
            timeout: c.timeout_ms.map(Duration::from_millis),
            cache: Box::default(),
            creating_fields: tokio::sync::Mutex::new(()),
        })
    }

    pub fn endpoint(&self) -> String {
        redact_url(&self.base)
    }

    pub async fn deliver(&self, client: &reqwest::Client, payload: &Payload, timeout: Duration) -> Outcome {
        let change = match Change::read(payload) {
            Ok(c) => c,
            Err(o) => return o,
        };
        if !crate::events::IntegrationType::Tave
            .default_field_types()
            .unwrap_or_default()
            .contains(&change.field_type.as_str())
        {
            return crm::reject(format!(
                "the tave adapter does not map field type {}: remove it from config.field_types",
                change.field_type
            ));
        }
        let call = Call {
            tave: self,
            client,
            timeout: self.timeout.unwrap_or(timeout),
        };
        match call.apply(&change).await {
            Ok(()) => Outcome::Delivered { status: 200 },
            Err(Fail::Outcome(o)) => o,
            Err(Fail::NotFound) => vanished("answered 404 for an entity that was just found; retrying"),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn external(&self, wedding_id: &str) -> String {
        self.external_url.replace("{wedding_id}", wedding_id)
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// A 404 for an entity that was there a moment ago (deleted in Tave meanwhile): retried, not
/// held against the endpoint. `what` follows the API's name in the message.
fn vanished(what: &str) -> Outcome {
    Outcome::Retry {
        status: Some(404),
        error: format!("{API} {what}"),
        after: None,
        endpoint_fault: false,
    }
}

fn shape_error(what: &str) -> Outcome {
    Outcome::Retry {
        status: None,
        error: format!("{API} answered {what} without the documented fields"),
        after: None,
        endpoint_fault: true,
    }
}

fn not_documented(answer: &Answer, what: &str) -> Fail {
    Fail::Outcome(Outcome::Retry {
        status: Some(answer.status.as_u16()),
        error: format!(
            "{API} answered {what} {} with a body that is not the documented JSON object",
            answer.status
        ),
        after: None,
        endpoint_fault: true,
    })
}

/// A failed answer: 429 waits, 401/403 disable until the key is fixed, 400 is a dead letter
/// naming the fields and the API's messages, 5xx retries, other statuses are dead letters.
fn classify(answer: &Answer, what: &str) -> Outcome {
    let status = answer.status;
    let code = status.as_u16();
    match status {
        StatusCode::TOO_MANY_REQUESTS => crm::rate_limited(API, answer, None),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Outcome::Disable {
            status: code,
            error: format!(
                "{API} refused the API key ({code}, \"API key is missing or invalid\"): fix config.api_key (a Read/Write key from Settings › API); the integration is held until its config changes"
            ),
        },
        StatusCode::BAD_REQUEST => {
            let body: Option<Value> = serde_json::from_slice(&answer.body).ok();
            let fields = body
                .as_ref()
                .filter(|b| b["type"] == "validation-error")
                .and_then(|b| b["detail"].as_object())
                .map(|d| {
                    d.iter()
                        .map(|(k, v)| {
                            let message = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
                            format!("{}: {}", truncate(k, 100), truncate(&message, 200))
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                });
            Outcome::Reject {
                status: Some(code),
                error: match fields {
                    Some(f) if !f.is_empty() => format!("{API} rejected {what} (400 validation-error): {f}"),
                    _ => format!("{API} rejected {what} (400)"),
                },
            }
        }
        s if s.is_server_error() => crm::server_error(API, answer),
        _ => Outcome::Reject {
            status: Some(code),
            error: format!("{API} answered {what} with {status}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tave(config: Value) -> Result<Tave, AdapterError> {
        Tave::from_config(
            &config,
            &Credentials::default().allowing(&["http://127.0.0.1:1/tave/".to_owned()]),
        )
    }

    #[test]
    fn tave_config_errors_name_the_key_and_never_the_secret() {
        let cases = [
            (json!({}), "api_key"),
            (
                json!({"api_key": "k-secret-1", "base_url": "ftp://x"}),
                "base_url",
            ),
            (
                json!({"api_key": "k-secret-1", "base_url": "http://127.0.0.1:2/tave/api/v2"}),
                "base_url",
            ),
            (
                json!({"api_key": "k-secret-1", "external_url": "x"}),
                "external_url",
            ),
            (
                json!({"api_key": "k-secret-1", "custom_fields": {"adultz": "A"}}),
                "custom_fields.adultz",
            ),
            (
                json!({"api_key": "k-secret-1", "custom_fields": {"adults": ""}}),
                "custom_fields.adults",
            ),
            (
                json!({"api_key": "k-secret-1", "job_type_id": "NOT-A-ULID"}),
                "job_type_id",
            ),
        ];
        for (config, key) in cases {
            let e = tave(config.clone()).err().expect("rejected").to_string();
            assert!(e.contains(key), "{config}: {e}");
            assert!(!e.contains("k-secret-1"), "{e}");
        }
        let t = tave(json!({"api_key": "k", "base_url": "http://127.0.0.1:1/tave/api/v2/"})).unwrap();
        assert_eq!(t.endpoint(), "http://127.0.0.1:1/tave/api/v2");
    }

    #[test]
    fn tave_validation_errors_keep_field_names_and_messages() {
        let answer = Answer {
            status: StatusCode::BAD_REQUEST,
            headers: Default::default(),
            body: bytes::Bytes::from_static(
                br#"{"type":"validation-error","title":"Validation Error","detail":{"name":"must be at most 255 characters"},"status":400}"#,
            ),
        };
        match classify(&answer, "PUT /job/{id}") {
            Outcome::Reject {
                status: Some(400),
                error,
            } => {
                assert!(error.contains("name: must be at most 255 characters"), "{error}")
            }
            other => panic!("{other:?}"),
        }
    }
}
