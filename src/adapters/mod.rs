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

    const HOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    /// Every key the README and the module docs give for each type, with the common keys.
    fn documented() -> Vec<(&'static str, serde_json::Value)> {
        let ulid = "01h35ccwymj5ctckp8px1azhg6";
        vec![
            (
                "webhook",
                serde_json::json!({"url": "https://example.com/hook", "secret": HOOK_SECRET,
                    "secrets": ["whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"], "timeout_ms": 15000}),
            ),
            (
                "tave",
                serde_json::json!({"api_key": "k", "base_url": "https://workspace.vsco.co/api/v2",
                    "external_url": "https://fieldsync.invalid/weddings/{wedding_id}",
                    "custom_fields": {"adults": "A", "children": "C", "infants": "I", "dietary_notes": "D",
                        "dietary_prefix": "Diet: ", "budget_prefix": "Budget: "},
                    "job_type_id": ulid, "event_type_id": ulid, "timeout_ms": 15000}),
            ),
            (
                "google_calendar",
                serde_json::json!({"client_id": "c.apps.googleusercontent.com", "client_secret": "s",
                    "refresh_token": "r", "calendar_id": "primary",
                    "base_url": "https://www.googleapis.com/calendar/v3",
                    "token_url": "https://oauth2.googleapis.com/token", "timeout_ms": 15000}),
            ),
            (
                "stripe",
                serde_json::json!({"secret_key": "sk_test_1", "base_url": "https://api.stripe.com/v1"}),
            ),
            (
                "lightblue",
                serde_json::json!({"api_key": "k", "url": "https://online.lightbluesoftware.com/api.php",
                    "source": "fieldsync"}),
            ),
            (
                "honeybook",
                serde_json::json!({"url": "https://hooks.zapier.com/hooks/catch/1/abc/", "secret": HOOK_SECRET,
                    "secrets": [HOOK_SECRET], "timeout_ms": 15000}),
            ),
        ]
    }

    fn built(kind: &str, config: serde_json::Value) -> Result<Adapter, AdapterError> {
        Adapter::build(&integration(kind, config, true), &Credentials::default())
    }

    #[test]
    fn every_documented_key_of_every_adapter_is_accepted() {
        let types: Vec<&str> = documented().iter().map(|(kind, _)| *kind).collect();
        assert_eq!(types.len(), IntegrationType::ALL.len());
        for (kind, mut config) in documented() {
            config["rate_limit_per_second"] = serde_json::json!(2.5);
            config["burst"] = serde_json::json!(5);
            config["field_types"] = serde_json::json!(["wedding_date"]);
            if let Err(e) = built(kind, config.clone()) {
                panic!("{kind}: {e}");
            }
            assert_eq!(rate_limit(&integration(kind, config, true)), Some((2.5, 5)));
        }
    }

    #[test]
    fn an_unknown_key_is_refused_naming_it_the_type_and_the_accepted_keys() {
        for (kind, mut config) in documented() {
            config["colour"] = serde_json::json!("sk_live_colourful");
            let e = built(kind, config).err().expect("refused").to_string();
            let expect =
                format!("integration config: \"colour\" is not a key of a {kind} integration (accepted: ");
            assert!(e.starts_with(&expect), "{e}");
            assert!(e.contains("rate_limit_per_second, burst, field_types)"), "{e}");
            assert!(!e.contains("sk_live"), "{e}");
        }
        let e = built(
            "tave",
            serde_json::json!({"api_key": "k", "custom_fields": {"adultz": "A"}}),
        )
        .err()
        .expect("refused")
        .to_string();
        assert!(e.contains("\"custom_fields.adultz\" is not a key of a tave integration (accepted in custom_fields: adults, children"), "{e}");
    }

    #[test]
    fn a_wrong_type_names_the_key_and_the_type_never_the_value() {
        let secret = "sk_live_51HxWrongPlace";
        for (kind, config) in documented() {
            let keys = config.as_object().unwrap().keys().cloned();
            for key in keys.chain(config::COMMON_KEYS.map(String::from)) {
                let mut wrong = config.clone();
                wrong[key.as_str()] = serde_json::json!([{"value": secret}]);
                let e = built(kind, wrong).err().expect("refused").to_string();
                assert!(e.contains(&key) && !e.contains(secret), "{kind}.{key}: {e}");
            }
        }
        let e = built(
            "stripe",
            serde_json::json!({"secret_key": "sk_test_1", "base_url": 42}),
        )
        .err()
        .expect("refused")
        .to_string();
        assert_eq!(
            e,
            "integration config: base_url must be a string (in a stripe integration)"
        );
    }
}
