//! OAuth access tokens: refreshed from the integration's refresh token, cached until a minute
//! before they expire, one refresh at a time; the token endpoint's refusals classified.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Google;
use crate::adapters::crm::{self, Answer};
use crate::adapters::outcome::Outcome;
use crate::secret::Secret;

/// A token is refreshed this long before Google says it expires.
const EARLY_REFRESH: Duration = Duration::from_secs(60);

pub(super) struct Token {
    value: Secret<String>,
    until: Instant,
}

impl Google {
    fn cached_token(&self) -> Option<Secret<String>> {
        let token = lock(&self.token);
        token
            .as_ref()
            .filter(|t| t.until > Instant::now() + EARLY_REFRESH)
            .map(|t| t.value.clone())
    }

    /// Drops the cached token if it is still the one that was refused.
    pub(super) fn drop_token(&self, refused: &Secret<String>) {
        let mut token = lock(&self.token);
        if token.as_ref().is_some_and(|t| t.value == *refused) {
            *token = None;
        }
    }

    pub(super) async fn access_token(
        &self,
        client: &reqwest::Client,
        timeout: Duration,
    ) -> Result<Secret<String>, Outcome> {
        if let Some(t) = self.cached_token() {
            return Ok(t);
        }
        let _one_at_a_time = self.refreshing.lock().await;
        if let Some(t) = self.cached_token() {
            return Ok(t);
        }
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", self.s.client_id.as_str()),
            ("client_secret", self.s.client_secret.expose().as_str()),
            ("refresh_token", self.s.refresh_token.expose().as_str()),
        ];
        let answer = crm::exchange(client.post(self.s.token_url.clone()).form(&form), timeout).await?;
        let fresh = token_answer(&answer)?;
        tracing::debug!(expires_in = fresh.1.as_secs(), "google access token refreshed");
        *lock(&self.token) = Some(Token {
            value: fresh.0.clone(),
            until: Instant::now() + fresh.1,
        });
        Ok(fresh.0)
    }
}

/// The token cache's lock; a panicked holder leaves a usable (at worst stale) token.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The token endpoint's answer: the token and its lifetime, or what to do.
fn token_answer(answer: &Answer) -> Result<(Secret<String>, Duration), Outcome> {
    #[derive(serde::Deserialize)]
    struct Granted {
        access_token: String,
        expires_in: Option<u64>,
    }
    let status = answer.status.as_u16();
    if answer.status.is_success() {
        let g: Granted = answer.json("the Google token endpoint")?;
        return Ok((
            Secret::new(g.access_token),
            Duration::from_secs(g.expires_in.unwrap_or(3599)),
        ));
    }
    let code = serde_json::from_slice::<Value>(&answer.body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned));
    Err(match (status, code.as_deref()) {
        (_, Some("invalid_grant")) => Outcome::Disable {
            status,
            error: "Google refused the refresh token (invalid_grant: expired or revoked): the integration needs re-authorisation; put the calendar owner's new refresh token in config.refresh_token".to_owned(),
        },
        (_, Some("invalid_client" | "unauthorized_client")) => Outcome::Disable {
            status,
            error: "Google refused the OAuth client (invalid_client): fix config.client_id and config.client_secret".to_owned(),
        },
        (403 | 429, _) => crm::rate_limited("the Google token endpoint", answer, None),
        (500..=599, _) => crm::server_error("the Google token endpoint", answer),
        (400..=499, code) => Outcome::Disable {
            status,
            error: format!(
                "the Google token endpoint answered {status} ({}): check config.token_url, client_id and client_secret",
                code.unwrap_or("no OAuth error code")
            ),
        },
        _ => Outcome::Retry {
            status: Some(status),
            error: format!("the Google token endpoint answered {status}"),
            after: None,
            endpoint_fault: true,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::google::tests::answer;
    use serde_json::json;

    #[test]
    fn google_token_errors_disable_with_the_fix() {
        let grant = answer(
            400,
            json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."}),
        );
        match token_answer(&grant) {
            Err(Outcome::Disable { error, .. }) => assert!(error.contains("re-authorisation"), "{error}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        let client = answer(401, json!({"error": "invalid_client"}));
        match token_answer(&client) {
            Err(Outcome::Disable { error, .. }) => assert!(error.contains("config.client_secret"), "{error}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
