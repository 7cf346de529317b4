//! The HoneyBook adapter (`integration_type = 'honeybook'`). HoneyBook has no public API; its
//! supported route in is Zapier (CRM_APIS.md §2). The adapter posts each change as a flat JSON
//! record to a Zapier catch hook, shaped for HoneyBook's "Create Project" and "Create Client"
//! actions, signed like our generic webhook (Standard Webhooks headers, `webhook-id` = the event
//! id for deduplication in the Zap).
//!
//! Limit: create only. Zapier's HoneyBook actions create records; nothing comes back (no ids) and
//! nothing can be updated, so a later change arrives as another record for the Zap to route.
//!
//! Config ([`HoneyBookConfig`], a webhook's keys): `{"url":
//! "https://hooks.zapier.com/hooks/catch/<id>/<key>/", "secret": <whsec_ secret or reference>}`,
//! optionally `secrets` and `timeout_ms` as for a webhook, and the common keys.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::crm::{self, Change};
use super::webhook::{Webhook, WebhookConfig};
use super::{config, AdapterError, Payload};
use crate::credentials::Credentials;
use crate::events::{EventKind, IntegrationType};

/// A HoneyBook integration's own config keys: a webhook's (`url` must be a Zapier catch hook).
pub type HoneyBookConfig = WebhookConfig;

/// Requests per second and burst when the integration's config sets no `rate_limit_per_second`
/// (Zapier's catch hooks take bursts but count tasks; keep a steady pace).
pub const DEFAULT_RATE: (f64, u32) = (5.0, 10);

pub struct HoneyBook {
    hook: Webhook,
}

impl HoneyBook {
    pub fn from_config(config: &Value, credentials: &Credentials) -> Result<HoneyBook, AdapterError> {
        let (_, c): (_, HoneyBookConfig) = config::parse(IntegrationType::HoneyBook, config)?;
        if let Some(url) = c.url.as_deref().and_then(|u| reqwest::Url::parse(u).ok()) {
            credentials.check_url("url", &url, &["hooks.zapier.com"])?;
        }
        Ok(HoneyBook {
            hook: Webhook::new(c, credentials)?,
        })
    }

    /// The hook URL without its key (the last path segment of `/hooks/catch/<id>/<key>/`), which
    /// lets anyone post to the Zap.
    pub fn endpoint(&self) -> String {
        redact_hook(&self.hook.endpoint())
    }

    pub async fn deliver(
        &self,
        client: &reqwest::Client,
        payload: &Payload,
        timeout: Duration,
    ) -> super::outcome::Outcome {
        let change = match Change::read(payload) {
            Ok(c) => c,
            Err(outcome) => return outcome,
        };
        let flat = Payload {
            id: payload.id,
            body: serde_json::to_vec(&record(&change))
                .expect("JSON values serialize")
                .into(),
        };
        self.hook.deliver(client, &flat, timeout).await
    }
}

/// The flat record: scalar fields only, named for the Zap's HoneyBook action inputs.
fn record(c: &Change) -> Value {
    let w = &c.wedding;
    let mut r = Map::new();
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            r.insert(k.to_owned(), v);
        }
    };
    put("fieldsync_event_id", json!(c.id));
    put("wedding_id", json!(w.id));
    put(
        "change",
        json!(format!(
            "{} {}",
            c.field_type,
            match c.kind {
                EventKind::Created => "created",
                EventKind::Updated => "updated",
                EventKind::Deleted => "deleted",
            }
        )),
    );
    put(
        "project_name",
        json!(w.couple_names.as_ref().map(|n| format!("{n} wedding"))),
    );
    put("project_type", json!("Wedding"));
    put("client_full_name", json!(w.couple_names));
    put("company_name", json!(w.organization_name));
    put("project_date", json!(w.wedding_date));
    put(
        "project_location",
        json!(w.venue.as_ref().and_then(crm::venue_line)),
    );
    put("timezone", json!(w.timezone));
    put("guest_count", json!(w.guest_total));
    let v = c.value.as_ref();
    match c.field_type.as_str() {
        "guest_count_matrix" => {
            put("guest_count", v.map_or(Value::Null, |v| v["total"].clone()));
            put(
                "guest_breakdown",
                v.map_or(Value::Null, |v| v["breakdown"].clone()),
            );
        }
        "wedding_date" => put("project_date", json!(c.date())),
        "venue_selector" => put("project_location", json!(v.and_then(crm::venue_line))),
        _ => {}
    }
    Value::Object(r)
}

fn redact_hook(url: &str) -> String {
    match url.find("/hooks/catch/") {
        Some(at) => {
            let (base, rest) = url.split_at(at + "/hooks/catch/".len());
            let id = rest.split('/').next().unwrap_or_default();
            format!("{base}{id}/***/")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hook_key_is_not_shown() {
        assert_eq!(
            super::redact_hook("https://hooks.zapier.com/hooks/catch/123456/abcdef/"),
            "https://hooks.zapier.com/hooks/catch/123456/***/"
        );
        assert_eq!(
            super::redact_hook("https://hooks.zapier.com/other"),
            "https://hooks.zapier.com/other"
        );
    }
}
