//! Adapters: one per external system, each turning a field-sync event into that system's API
//! calls and classifying the answer ([`outcome::Outcome`], the one place where errors are
//! classified). The delivery engine (`crate::dispatch`) decides when and in what order; an adapter
//! only knows how.
//!
//! - [`webhook`]: Standard Webhooks to any HTTPS endpoint. [`tave`]: Tave / VSCO Workspace jobs,
//!   custom fields and events. [`google`]: Google Calendar events. [`stripe`]: Stripe customer
//!   metadata. [`honeybook`]: HoneyBook through Zapier catch hooks. [`lightblue`]: Light Blue's
//!   booking API. [`crm`]: what the CRM adapters share (reading an event, answers).
//! - [`config`]: an integration's config read into its adapter's struct, which refuses unknown
//!   keys, and the keys every integration takes ([`config::Common`]).

pub mod config;
pub mod crm;
pub mod google;
pub mod honeybook;
pub mod lightblue;
pub mod outcome;
pub mod stripe;
pub mod tave;
pub mod webhook;

use std::time::Duration;

use bytes::Bytes;

use crate::credentials::{CredentialError, Credentials};
use crate::events::context::Integration;
use crate::events::IntegrationType;
use crate::store::record::EventId;
use outcome::Outcome;

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
    let common = config::common(&i.config).unwrap_or_default();
    let Some(rate) = common.rate_limit_per_second else {
        return IntegrationType::parse(&i.integration_type).and_then(default_rate);
    };
    let burst = common.burst.unwrap_or(rate.ceil() as u32);
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
