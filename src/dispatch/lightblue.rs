//! The lightblue adapter (being built).

use std::time::Duration;

use super::outcome::Outcome;
use super::{AdapterError, Payload};
use crate::credentials::Credentials;

/// The field types this adapter takes by default (FIELD_TYPES.md); `config.field_types` narrows them.
pub const FIELD_TYPES: &[&str] = &[
    "guest_count_matrix",
    "wedding_date",
    "venue_selector",
    "dietary_matrix",
];

/// Requests per second and burst when the integration's config sets no `rate_limit_per_second`.
pub const DEFAULT_RATE: (f64, u32) = (2.0, 4);

pub struct LightBlue {}

impl LightBlue {
    pub fn from_config(
        _config: &serde_json::Value,
        _credentials: &Credentials,
    ) -> Result<LightBlue, AdapterError> {
        Err(AdapterError::config("integration_type", "has no adapter yet"))
    }

    pub async fn deliver(
        &self,
        _client: &reqwest::Client,
        _payload: &Payload,
        _timeout: Duration,
    ) -> Outcome {
        unreachable!("never built")
    }

    pub fn endpoint(&self) -> String {
        String::new()
    }
}
