//! The google adapter (being built).

use std::time::Duration;

use super::outcome::Outcome;
use super::{AdapterError, Payload};
use crate::credentials::Credentials;

pub struct Google {}

impl Google {
    pub fn from_config(
        _config: &serde_json::Value,
        _credentials: &Credentials,
    ) -> Result<Google, AdapterError> {
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
