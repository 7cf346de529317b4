//! The Stripe adapter (`integration_type = 'stripe'`): one customer per wedding, whose metadata
//! carries the wedding context and the guest, date, venue and budget fields (update-only sync of
//! customer metadata; CRM_APIS.md §5, FIELD_TYPES.md).
//!
//! - The customer is found by `metadata['fieldsync_wedding_id']` (customer search), else created
//!   with only that key under the `Idempotency-Key` `fieldsync-customer-<wedding id>`, so a
//!   repeated create within Stripe's 24-hour key window returns the first customer, and after it
//!   the search finds it.
//! - Each event is one `POST /v1/customers/{id}` (form-encoded), its `Idempotency-Key` derived
//!   from the event id; its parameters depend only on the event, so a replay is answered from
//!   Stripe's saved result.
//! - Stripe's metadata limits are enforced before sending: at most 50 keys on the customer after
//!   the change, keys of at most 40 characters, values of at most 500 (longer text is cut).
//! - `Stripe-Should-Retry` decides when present; else 429, 409 and 5xx are retried, 401 and 403
//!   hold the integration (fix the key), other 4xx are dead letters naming Stripe's error code.
//!
//! Config ([`StripeConfig`]): `{"secret_key": <secret reference>, "base_url":
//! "https://api.stripe.com/v1"}` and the common keys; any other key is refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::crm::{self, Answer, Change};
use super::outcome::{redact_url, Outcome};
use super::{config, AdapterError, Payload};
use crate::credentials::Credentials;
use crate::events::IntegrationType;
use crate::secret::Secret;

/// Requests per second and burst when the integration's config sets no `rate_limit_per_second`
/// (Stripe allows 100 writes per second live, 25 in its sandbox; each event takes two requests).
pub const DEFAULT_RATE: (f64, u32) = (20.0, 20);

const MAX_KEYS: usize = 50;
const MAX_KEY_CHARS: usize = 40;
const MAX_VALUE_CHARS: usize = 500;
const WEDDING_KEY: &str = "fieldsync_wedding_id";

/// A Stripe integration's own config keys (no `Debug`: it holds the secret key).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeConfig {
    secret_key: Option<Value>,
    base_url: Option<String>,
}

pub struct Stripe {
    base: String,
    key: Secret<String>,
    /// Wedding id → customer id, as found or created.
    customers: Mutex<HashMap<String, String>>,
}

impl Stripe {
    pub fn from_config(config: &Value, credentials: &Credentials) -> Result<Stripe, AdapterError> {
        let (_, c): (_, StripeConfig) = config::parse(IntegrationType::Stripe, config)?;
        let base = match c.base_url {
            None => "https://api.stripe.com/v1".to_owned(),
            Some(u) if reqwest::Url::parse(&u).is_ok() => u.trim_end_matches('/').to_owned(),
            Some(_) => {
                return Err(AdapterError::config(
                    "base_url",
                    "must be a URL such as https://api.stripe.com/v1",
                ))
            }
        };
        let url = reqwest::Url::parse(&base).expect("checked above");
        credentials.check_url("base_url", &url, &["api.stripe.com"])?;
        let key = credentials.resolve_required(
            "secret_key",
            c.secret_key.as_ref(),
            "set config.secret_key to a reference to the Stripe secret key ({\"env\": \"FIELDSYNC_SECRET_STRIPE\"}) with customer write access",
        )?;
        Ok(Stripe {
            base,
            key,
            customers: Mutex::default(),
        })
    }

    pub fn endpoint(&self) -> String {
        redact_url(&self.base)
    }

    pub async fn deliver(&self, client: &reqwest::Client, payload: &Payload, timeout: Duration) -> Outcome {
        match self.sync(client, payload, timeout).await {
            Ok(status) => Outcome::Delivered { status },
            Err(outcome) => outcome,
        }
    }

    async fn sync(
        &self,
        client: &reqwest::Client,
        payload: &Payload,
        timeout: Duration,
    ) -> Result<u16, Outcome> {
        let change = Change::read(payload)?;
        let mut params = metadata(&change)?;
        if let Some(names) = change.wedding.couple_names.as_deref() {
            params.push(("name".to_owned(), names.to_owned()));
        }
        let customer = self.customer(client, &change.wedding.id, timeout).await?;

        // 50 keys at most once the change is merged into what the customer holds
        let current = self
            .send(client.get(format!("{}/customers/{customer}", self.base)), timeout)
            .await;
        let current = self
            .answer_for(&change.wedding.id, current)?
            .json::<Value>("Stripe")?;
        let mut keys: std::collections::BTreeSet<&str> = current["metadata"]
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        for (name, value) in &params {
            if let Some(key) = name.strip_prefix("metadata[").and_then(|k| k.strip_suffix(']')) {
                if value.is_empty() {
                    keys.remove(key);
                } else {
                    keys.insert(key);
                }
            }
        }
        if keys.len() > MAX_KEYS {
            return Err(crm::reject(format!(
                "the customer would hold {} metadata keys and Stripe allows {MAX_KEYS}: remove unused keys in Stripe or narrow config.field_types",
                keys.len()
            )));
        }

        let request = client
            .post(format!("{}/customers/{customer}", self.base))
            .header("idempotency-key", format!("fieldsync-{}", change.id))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&params));
        let answer = self.send(request, timeout).await;
        Ok(self.answer_for(&change.wedding.id, answer)?.status.as_u16())
    }

    /// The wedding's customer: cached, else found by search, else created idempotently.
    async fn customer(
        &self,
        client: &reqwest::Client,
        wedding: &str,
        timeout: Duration,
    ) -> Result<String, Outcome> {
        if let Some(id) = self.cached(wedding) {
            return Ok(id);
        }
        let query = format!("metadata['{WEDDING_KEY}']:'{}'", wedding.replace('\'', "\\'"));
        let found = self
            .send(
                client
                    .get(format!("{}/customers/search", self.base))
                    .query(&[("query", query)]),
                timeout,
            )
            .await;
        let found: Value = self.answer_for(wedding, found)?.json("Stripe")?;
        let id = match found["data"][0]["id"].as_str() {
            Some(id) => id.to_owned(),
            None => {
                let params = vec![(format!("metadata[{WEDDING_KEY}]"), wedding.to_owned())];
                let request = client
                    .post(format!("{}/customers", self.base))
                    .header("idempotency-key", format!("fieldsync-customer-{wedding}"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form(&params));
                let created = self.send(request, timeout).await;
                let created: Value = self.answer_for(wedding, created)?.json("Stripe")?;
                created["id"]
                    .as_str()
                    .ok_or_else(|| garbage("a created customer without an id"))?
                    .to_owned()
            }
        };
        self.customers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(wedding.to_owned(), id.clone());
        Ok(id)
    }

    fn cached(&self, wedding: &str) -> Option<String> {
        self.customers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(wedding)
            .cloned()
    }

    async fn send(&self, request: reqwest::RequestBuilder, timeout: Duration) -> Result<Answer, Outcome> {
        crm::exchange(
            request
                .bearer_auth(self.key.expose())
                .header("stripe-version", "2024-06-20"),
            timeout,
        )
        .await
    }

    /// A successful answer, or the outcome its failure means. A missing customer (deleted in
    /// Stripe) is forgotten and looked up again on the retry.
    fn answer_for(&self, wedding: &str, answer: Result<Answer, Outcome>) -> Result<Answer, Outcome> {
        let answer = answer?;
        if answer.status.is_success() {
            return Ok(answer);
        }
        let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        let e = &body["error"];
        let what = format!(
            "Stripe answered {} ({}{}{})",
            answer.status,
            e["type"].as_str().unwrap_or("no error type"),
            e["code"]
                .as_str()
                .map(|c| format!(", code {c}"))
                .unwrap_or_default(),
            e["param"]
                .as_str()
                .map(|p| format!(", param {p}"))
                .unwrap_or_default(),
        );
        let should_retry = answer
            .headers
            .get("stripe-should-retry")
            .and_then(|v| v.to_str().ok())
            .map(|v| v == "true");
        let code = answer.status.as_u16();
        if code == 404 && e["code"] == "resource_missing" {
            self.customers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(wedding);
            return Err(Outcome::Retry {
                status: Some(code),
                error: format!("{what}: the wedding's customer is gone; it is looked up again"),
                after: None,
                endpoint_fault: false,
            });
        }
        Err(match (should_retry, code) {
            (Some(false), _) => crm::reject(format!("{what}; Stripe-Should-Retry: false")),
            (_, 401) => Outcome::Disable {
                status: code,
                error: format!("{what}: the secret key is not valid; fix config.secret_key"),
            },
            (_, 403) => Outcome::Disable {
                status: code,
                error: format!("{what}: the key may not write customers; give it that permission"),
            },
            (_, 429) => crm::rate_limited("Stripe", &answer, None),
            (Some(true), _) | (_, 409) | (_, 500..=599) => Outcome::Retry {
                status: Some(code),
                error: what,
                after: answer.retry_after(),
                endpoint_fault: code >= 500,
            },
            _ => crm::reject(what),
        })
    }
}

fn garbage(what: &str) -> Outcome {
    Outcome::Retry {
        status: None,
        error: format!("Stripe answered {what}"),
        after: None,
        endpoint_fault: true,
    }
}

fn form(params: &[(String, String)]) -> String {
    let mut f = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        f.append_pair(k, v);
    }
    f.finish()
}

/// The metadata parameters of a change: set on create/update, unset (empty value) on delete.
fn metadata(change: &Change) -> Result<Vec<(String, String)>, Outcome> {
    // the wedding context travels with every change; the change's own field wins below
    let mut out = vec![(WEDDING_KEY.to_owned(), change.wedding.id.clone())];
    for (key, value) in [
        ("wedding_date", &change.wedding.wedding_date),
        ("wedding_timezone", &change.wedding.timezone),
    ] {
        if let Some(v) = value {
            out.push((key.to_owned(), v.clone()));
        }
    }
    let v = change.value.as_ref();
    let text = |key: &str| v.and_then(|v| v.get(key)).map(value_text).unwrap_or_default();
    match change.field_type.as_str() {
        "guest_count_matrix" => {
            for (key, from) in [
                ("guests_total", "total"),
                ("guests_adults", "adults"),
                ("guests_children", "children"),
                ("guests_infants", "infants"),
            ] {
                out.push((key.to_owned(), text(from)));
            }
        }
        "wedding_date" => {
            out.retain(|(k, _)| k != "wedding_date");
            out.push((
                "wedding_date".to_owned(),
                change.date().unwrap_or_default().to_owned(),
            ));
        }
        "venue_selector" => {
            out.push(("venue_name".to_owned(), text("name")));
            out.push(("venue_address".to_owned(), text("formatted_address")));
            out.push(("venue_place_id".to_owned(), text("place_id")));
        }
        "budget_category" => {
            let category = v
                .or(change.old_value.as_ref())
                .and_then(|v| v.get("category"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    crm::reject("the budget field has no category to name its metadata keys".to_owned())
                })?;
            let mut base = format!("budget_{}", crm::slug(category).replace('-', "_"));
            base.truncate(MAX_KEY_CHARS - "_budgeted".len());
            for (suffix, from) in [
                ("budgeted", "budgeted_amount"),
                ("actual", "actual_amount"),
                ("currency", "currency"),
                ("status", "payment_status"),
            ] {
                out.push((format!("{base}_{suffix}"), text(from)));
            }
        }
        other => {
            return Err(crm::reject(format!(
            "field type {other} has no place in Stripe customer metadata; leave it out of config.field_types"
        )))
        }
    }
    out.into_iter()
        .map(|(key, mut value)| {
            if key.chars().count() > MAX_KEY_CHARS {
                return Err(crm::reject(format!(
                    "metadata key {key} is longer than Stripe's 40 characters"
                )));
            }
            if value.chars().count() > MAX_VALUE_CHARS {
                value = value.chars().take(MAX_VALUE_CHARS - 1).collect::<String>() + "…";
            }
            Ok((format!("metadata[{key}]"), value))
        })
        .collect()
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EventKind, WeddingContext};

    fn change(field_type: &str, value: Option<Value>, old: Option<Value>) -> Change {
        Change {
            id: "0000000001600100:00000000".into(),
            kind: if value.is_some() {
                EventKind::Updated
            } else {
                EventKind::Deleted
            },
            field_type: field_type.into(),
            field_id: "f1".into(),
            wedding: WeddingContext {
                id: "w1".into(),
                ..Default::default()
            },
            value,
            old_value: old,
        }
    }

    #[test]
    fn budget_keys_fit_stripe_limits_and_a_delete_unsets_them() {
        let long = "Photography and videography of the whole weekend";
        let set = metadata(&change(
            "budget_category",
            Some(serde_json::json!({"category": long, "budgeted_amount": 250000, "currency": "GBP"})),
            None,
        ))
        .unwrap();
        assert!(
            set.iter()
                .all(|(k, _)| k.len() <= "metadata[]".len() + MAX_KEY_CHARS),
            "{set:?}"
        );
        assert!(set
            .iter()
            .any(|(k, v)| k.ends_with("_budgeted]") && v == "250000"));
        let unset = metadata(&change(
            "budget_category",
            None,
            Some(serde_json::json!({"category": long})),
        ))
        .unwrap();
        assert!(unset
            .iter()
            .filter(|(k, _)| k.contains("budget_"))
            .all(|(_, v)| v.is_empty()));
        assert_eq!(unset.len(), set.len());
    }

    #[test]
    fn long_values_are_cut_to_500_characters() {
        let address = "x".repeat(800);
        let set = metadata(&change(
            "venue_selector",
            Some(serde_json::json!({"name": "Hall", "formatted_address": address})),
            None,
        ))
        .unwrap();
        let (_, v) = set.iter().find(|(k, _)| k == "metadata[venue_address]").unwrap();
        assert_eq!(v.chars().count(), MAX_VALUE_CHARS);
    }
}
