//! Dispatch: delivers each queued field-sync event to every integration it was fanned out to.
//!
//! # Flow
//! Capture decides, when it queues an event, which integrations it goes to: its organisation's
//! active integrations with an adapter that take its field type ([`crate::events::accepts`]). The ids travel in
//! the event's record (`deliveries`), so delivery state exists from the moment the event is
//! durable. The [`Dispatcher`] reads durable records in commit order and keeps, per integration,
//! one first-in first-out queue per wedding with at most one delivery in flight; many weddings
//! are in flight at once. Final states (delivered, superseded, dead) go to the delivery store
//! ([`crate::store::deliveries`]).
//!
//! # Rules
//! - Order per (integration, wedding): the next event of a wedding waits for the previous one's
//!   final state. A failing wedding delays only itself.
//! - Coalescing: when several undelivered events of the same (integration, wedding, field) wait,
//!   only the newest is sent; the others are recorded as superseded.
//! - Priority: a wedding whose next event is critical goes before important, before optional,
//!   when an integration has more ready weddings than it may start.
//! - Retries: exponential backoff with full jitter ([`limits::backoff`]); the target's own signal
//!   (`Retry-After`) wins; after `max_attempts` or `max_age` a delivery becomes a dead letter.
//! - Each integration has a token bucket (its API's published limit, or its config's
//!   `rate_limit_per_second`) and a circuit breaker on its endpoint; when the breaker closes
//!   again, the waiting weddings are retried at once, in order.
//! - Backpressure: at most `max_queued_per_integration` deliveries per integration are held in
//!   memory; past it they wait in the durable queue and are read again when the integration has
//!   drained (`alert`), and with `pause` the replication stream is not read meanwhile.

pub mod crm;
mod engine;
pub mod google;
pub mod honeybook;
pub mod lightblue;
pub mod limits;
mod order;
pub mod outcome;
pub mod stripe;
pub mod tave;
pub mod webhook;

use std::time::Duration;

use bytes::Bytes;

use crate::config::PriorityName;
use crate::credentials::{CredentialError, Credentials};
use crate::events::context::Integration;
use crate::events::IntegrationType;
use crate::store::record::{ChangeRecord, EventId};
pub use engine::{
    ask, now_rfc3339, Command, DispatchStatus, Dispatcher, IntegrationStatus, Unanswered, WaitState,
};
use outcome::Outcome;

/// A queued event as the dispatcher needs it: where it goes, what orders it, and the bytes sent.
#[derive(Debug)]
pub struct Queued {
    pub id: EventId,
    pub wedding_id: Option<String>,
    pub field_id: Option<String>,
    pub priority: PriorityName,
    pub deliveries: Vec<String>,
    /// The commit time, Unix microseconds (for the commit-to-delivered latency).
    pub commit_time: i64,
    /// The envelope's JSON, exactly as stored.
    pub body: Bytes,
}

#[derive(serde::Deserialize)]
struct StoredLine<'a> {
    #[serde(borrow)]
    event: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    deliveries: Vec<String>,
    #[serde(default)]
    commit_time: i64,
}

#[derive(serde::Deserialize)]
struct EnvelopeKeys {
    data: EnvelopeKeyData,
}

#[derive(serde::Deserialize)]
struct EnvelopeKeyData {
    wedding_id: Option<String>,
    field_id: Option<String>,
    priority: PriorityName,
}

impl Queued {
    /// From a stored record line, without building its row images or re-serializing its event:
    /// the envelope's bytes are sent as they were stored. `None` for a record without an event.
    pub fn from_line(id: EventId, line: &[u8]) -> Result<Option<Queued>, serde_json::Error> {
        let stored: StoredLine = serde_json::from_slice(line)?;
        let Some(event) = stored.event else {
            return Ok(None);
        };
        let keys: EnvelopeKeys = serde_json::from_str(event.get())?;
        Ok(Some(Queued {
            id,
            wedding_id: keys.data.wedding_id,
            field_id: keys.data.field_id,
            priority: keys.data.priority,
            deliveries: stored.deliveries,
            commit_time: stored.commit_time,
            body: Bytes::copy_from_slice(event.get().as_bytes()),
        }))
    }

    /// From a decoded record (a requeued dead letter).
    pub fn from_record(r: &ChangeRecord) -> Option<Queued> {
        let e = r.event.as_ref()?;
        Some(Queued {
            id: r.id,
            wedding_id: e.data.wedding_id.clone(),
            field_id: e.data.field_id.clone(),
            priority: e.data.priority,
            deliveries: r.deliveries.clone(),
            commit_time: r.commit_time,
            body: Bytes::from(serde_json::to_vec(e).expect("envelopes serialize")),
        })
    }
}

/// What is sent: the event id and the envelope's JSON bytes.
#[derive(Debug)]
pub struct Payload {
    pub id: EventId,
    pub body: Bytes,
}

/// A configured integration that cannot be used as configured. Names the key, never its value.
#[derive(Debug, thiserror::Error)]
#[error("integration config: {key} {why}")]
pub struct AdapterError {
    pub key: String,
    pub why: String,
}

impl AdapterError {
    pub fn config(key: &str, why: &str) -> AdapterError {
        AdapterError {
            key: key.to_owned(),
            why: why.to_owned(),
        }
    }
}

impl From<CredentialError> for AdapterError {
    fn from(e: CredentialError) -> AdapterError {
        match e {
            CredentialError::Missing { key, hint } => AdapterError {
                key,
                why: format!("is missing: {hint}"),
            },
            CredentialError::Invalid { key, why } => AdapterError { key, why },
        }
    }
}

/// An adapter's default rate limit (`None`: unlimited).
fn default_rate(kind: IntegrationType) -> Option<(f64, u32)> {
    match kind {
        IntegrationType::Webhook => None,
        IntegrationType::Tave => Some(tave::DEFAULT_RATE),
        IntegrationType::GoogleCalendar => Some(google::DEFAULT_RATE),
        IntegrationType::Stripe => Some(stripe::DEFAULT_RATE),
        IntegrationType::HoneyBook => Some(honeybook::DEFAULT_RATE),
        IntegrationType::LightBlue => Some(lightblue::DEFAULT_RATE),
    }
}

/// One integration's adapter, built from its row.
pub enum Adapter {
    Webhook(webhook::Webhook),
    Tave(tave::Tave),
    Google(google::Google),
    Stripe(stripe::Stripe),
    HoneyBook(honeybook::HoneyBook),
    LightBlue(lightblue::LightBlue),
}

impl Adapter {
    pub fn build(i: &Integration, credentials: &Credentials) -> Result<Adapter, AdapterError> {
        let c = &i.config;
        let Some(kind) = IntegrationType::parse(&i.integration_type) else {
            return Err(AdapterError::config(
                "integration_type",
                &format!(
                    "{} has no adapter (known: {})",
                    crate::secret::quoted(&i.integration_type),
                    IntegrationType::names()
                ),
            ));
        };
        Ok(match kind {
            IntegrationType::Webhook => Adapter::Webhook(webhook::Webhook::from_config(c, credentials)?),
            IntegrationType::Tave => Adapter::Tave(tave::Tave::from_config(c, credentials)?),
            IntegrationType::GoogleCalendar => Adapter::Google(google::Google::from_config(c, credentials)?),
            IntegrationType::Stripe => Adapter::Stripe(stripe::Stripe::from_config(c, credentials)?),
            IntegrationType::HoneyBook => {
                Adapter::HoneyBook(honeybook::HoneyBook::from_config(c, credentials)?)
            }
            IntegrationType::LightBlue => {
                Adapter::LightBlue(lightblue::LightBlue::from_config(c, credentials)?)
            }
        })
    }

    pub async fn deliver(&self, client: &reqwest::Client, payload: &Payload, timeout: Duration) -> Outcome {
        match self {
            Adapter::Webhook(a) => a.deliver(client, payload, timeout).await,
            Adapter::Tave(a) => a.deliver(client, payload, timeout).await,
            Adapter::Google(a) => a.deliver(client, payload, timeout).await,
            Adapter::Stripe(a) => a.deliver(client, payload, timeout).await,
            Adapter::HoneyBook(a) => a.deliver(client, payload, timeout).await,
            Adapter::LightBlue(a) => a.deliver(client, payload, timeout).await,
        }
    }

    /// The endpoint, for status and logs (no query, no credentials).
    pub fn endpoint(&self) -> String {
        match self {
            Adapter::Webhook(a) => a.endpoint(),
            Adapter::Tave(a) => a.endpoint(),
            Adapter::Google(a) => a.endpoint(),
            Adapter::Stripe(a) => a.endpoint(),
            Adapter::HoneyBook(a) => a.endpoint(),
            Adapter::LightBlue(a) => a.endpoint(),
        }
    }
}

/// The integration's own rate limit from its config (`rate_limit_per_second`, `burst`), else the
/// adapter's default (its API's published or observed limit; none for a generic webhook).
pub fn rate_limit(i: &Integration) -> Option<(f64, u32)> {
    let Some(rate) = i.config.get("rate_limit_per_second").and_then(|r| r.as_f64()) else {
        return IntegrationType::parse(&i.integration_type).and_then(default_rate);
    };
    let burst = i
        .config
        .get("burst")
        .and_then(|b| b.as_u64())
        .map_or(rate.ceil() as u32, |b| b as u32);
    (rate > 0.0).then_some((rate, burst.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn integration(kind: &str, config: serde_json::Value, active: bool) -> Integration {
        Integration::for_test(kind, config, active)
    }

    #[test]
    fn rate_limit_comes_from_the_config() {
        let i = integration("webhook", serde_json::json!({"rate_limit_per_second": 2.5}), true);
        assert_eq!(rate_limit(&i), Some((2.5, 3)));
        let i = integration(
            "webhook",
            serde_json::json!({"rate_limit_per_second": 10, "burst": 50}),
            true,
        );
        assert_eq!(rate_limit(&i), Some((10.0, 50)));
        assert_eq!(
            rate_limit(&integration("webhook", serde_json::json!({}), true)),
            None
        );
    }

    #[test]
    fn a_stored_line_gives_the_envelope_bytes_as_stored_and_its_ordering_keys() {
        let line = br#"{"id":"0000000000000010:00000001","old":null,"new":{"value":"{\"a\": 1}"},"event":{"type":"field.created","data":{"wedding_id":"w1","field_id":"f1","priority":"critical","new_value":{"a":1}}},"deliveries":["i1"]}"#;
        let id: EventId = "0000000000000010:00000001".parse().unwrap();
        let q = Queued::from_line(id, line).unwrap().unwrap();
        assert_eq!(
            &q.body[..],
            br#"{"type":"field.created","data":{"wedding_id":"w1","field_id":"f1","priority":"critical","new_value":{"a":1}}}"#
        );
        assert_eq!(
            (q.wedding_id.as_deref(), q.field_id.as_deref()),
            (Some("w1"), Some("f1"))
        );
        assert_eq!(q.priority, PriorityName::Critical);
        assert_eq!(q.deliveries, ["i1"]);
        assert!(Queued::from_line(id, br#"{"id":"x","new":{}}"#)
            .unwrap()
            .is_none());
        assert!(Queued::from_line(id, b"{not json").is_err());
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = Adapter::build(
            &integration("fax", serde_json::json!({}), true),
            &Credentials::default(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("\"fax\" has no adapter"), "{e}");
    }
}
