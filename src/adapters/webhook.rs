//! The generic webhook adapter (`integration_type = 'webhook'`), Standard Webhooks 1.0:
//! `webhook-id` is the event id (stable across retries), `webhook-timestamp` the attempt's Unix
//! seconds, `webhook-signature` one `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` per secret
//! (several while a secret is rotated), keyed with the base64-decoded bytes after `whsec_`.
//!
//! Integration config ([`WebhookConfig`]): `{"url": "https://…", "secret": "whsec_…",
//! "secrets": ["whsec_…"], "timeout_ms": 15000}` and the common `rate_limit_per_second`,
//! `burst`, `field_types`; only `url` and one secret are required, any other key is refused.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::hmac;
use serde::Deserialize;
use serde_json::Value;

use super::outcome::{classify_http, classify_transport, redact_url, Outcome};
use super::{config, AdapterError, Payload};
use crate::credentials::Credentials;
use crate::events::IntegrationType;

/// A webhook integration's own config keys (no `Debug`: it holds secrets).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The receiver, http(s).
    pub(super) url: Option<String>,
    /// The `whsec_…` signing secret, or a reference to one.
    secret: Option<Value>,
    /// More secrets, while one is rotated: each request is signed with every one.
    secrets: Option<Vec<Value>>,
    timeout_ms: Option<u64>,
}

pub struct Webhook {
    url: reqwest::Url,
    keys: Vec<hmac::Key>,
    timeout: Option<Duration>,
}

impl Webhook {
    pub fn from_config(config: &Value, credentials: &Credentials) -> Result<Webhook, AdapterError> {
        let (_, c) = config::parse(IntegrationType::Webhook, config)?;
        Webhook::new(c, credentials)
    }

    /// The adapter of a read config (a webhook's, or a HoneyBook integration's).
    pub(super) fn new(c: WebhookConfig, credentials: &Credentials) -> Result<Webhook, AdapterError> {
        let url = c.url.ok_or_else(|| {
            AdapterError::config("url", "is missing: set config.url to the receiver's https URL")
        })?;
        let url = reqwest::Url::parse(&url).map_err(|e| {
            AdapterError::config("url", &format!("is not a URL ({e}): use https://host/path"))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(AdapterError::config(
                "url",
                &format!(
                    "has scheme {:?}: use https (or http on a private network)",
                    url.scheme()
                ),
            ));
        }
        let mut secrets = Vec::new();
        secrets.extend(credentials.resolve("secret", c.secret.as_ref())?);
        for (i, item) in c.secrets.iter().flatten().enumerate() {
            secrets.extend(credentials.resolve(&format!("secrets[{i}]"), Some(item))?);
        }
        if secrets.is_empty() {
            return Err(AdapterError::config(
                "secret",
                "is missing: set config.secret to a whsec_… signing secret (24 to 64 random bytes, base64), or a reference to one",
            ));
        }
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                signing_key(s.expose())
                    .map_err(|why| AdapterError::config(&format!("secret #{}", i + 1), why))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let timeout = c.timeout_ms.map(Duration::from_millis);
        Ok(Webhook { url, keys, timeout })
    }

    pub fn endpoint(&self) -> String {
        redact_url(self.url.as_str())
    }

    /// The `webhook-signature` header: one `v1,` signature per secret, space-separated.
    pub fn signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut content = Vec::with_capacity(id.len() + body.len() + 24);
        content.extend_from_slice(id.as_bytes());
        content.push(b'.');
        content.extend_from_slice(timestamp.to_string().as_bytes());
        content.push(b'.');
        content.extend_from_slice(body);
        self.keys
            .iter()
            .map(|k| format!("v1,{}", STANDARD.encode(hmac::sign(k, &content).as_ref())))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub async fn deliver(
        &self,
        client: &reqwest::Client,
        payload: &Payload,
        default_timeout: Duration,
    ) -> Outcome {
        let id = payload.id.to_string();
        let timestamp = chrono::Utc::now().timestamp();
        let timeout = self.timeout.unwrap_or(default_timeout);
        let request = client
            .post(self.url.clone())
            .timeout(timeout)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", self.signature(&id, timestamp, &payload.body))
            .body(payload.body.clone());
        match request.send().await {
            Ok(answer) => classify_http(answer.status(), answer.headers()),
            Err(e) => classify_transport(&e, timeout),
        }
    }
}

/// The HMAC key of a `whsec_` secret. The error says what is wrong, never the secret.
fn signing_key(secret: &str) -> Result<hmac::Key, &'static str> {
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or("does not start with whsec_ (Standard Webhooks secret format)")?;
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|_| "is not base64 after whsec_")?;
    if !(24..=64).contains(&bytes.len()) {
        return Err("must decode to 24 to 64 bytes");
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(config: serde_json::Value) -> Result<Webhook, AdapterError> {
        Webhook::from_config(&config, &Credentials::default())
    }

    #[test]
    fn signs_the_published_standard_webhooks_test_vector() {
        let w = webhook(serde_json::json!({
            "url": "https://example.com/hook",
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        }))
        .unwrap();
        assert_eq!(
            w.signature(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn rotation_signs_with_every_secret() {
        let w = webhook(serde_json::json!({
            "url": "https://example.com/hook",
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "secrets": ["whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]
        }))
        .unwrap();
        let sig = w.signature(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        let parts: Vec<&str> = sig.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(parts[1].starts_with("v1,") && parts[1] != parts[0]);
    }

    #[test]
    fn bad_configs_name_the_key_and_never_the_secret() {
        let cases = [
            (
                serde_json::json!({"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
                "url",
            ),
            (
                serde_json::json!({"url": "ftp://x/y", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
                "url",
            ),
            (serde_json::json!({"url": "https://x/y"}), "secret"),
            (
                serde_json::json!({"url": "https://x/y", "secret": "hunter2-plain"}),
                "whsec_",
            ),
            (
                serde_json::json!({"url": "https://x/y", "secret": "whsec_!!notbase64!!"}),
                "base64",
            ),
            (
                serde_json::json!({"url": "https://x/y", "secret": "whsec_c2hvcnQ="}),
                "24 to 64",
            ),
        ];
        for (config, expect) in cases {
            let e = webhook(config.clone()).err().expect("rejected").to_string();
            assert!(e.contains(expect), "{config}: {e}");
            for secret in [
                "hunter2-plain",
                "!!notbase64!!",
                "c2hvcnQ=",
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ] {
                assert!(!e.contains(secret), "{e}");
            }
        }
    }
}
