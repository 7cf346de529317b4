//! The Light Blue adapter (`integration_type = 'lightblue'`): each change is one contact-form
//! submission to Light Blue's API, landing in the studio's Inbox, where a person files it into
//! the shoot (Light Blue has no read, update or delete API; CRM_APIS.md §3).
//!
//! The submission carries `ID` = the event id and `Source`, so Light Blue answers a repeat with
//! `-4` (duplicate), which counts as delivered. The answer is parsed as Light Blue's lines
//! separated by CR: the code, then a message. `0` and `-4` are delivered; `-20` (HTTPS
//! required) and `-3` (invalid type or parameters) are dead letters naming the fix; other codes
//! are dead letters with Light Blue's message.
//!
//! Config ([`LightBlueConfig`]): `{"api_key": <secret reference>, "url":
//! "https://online.lightbluesoftware.com/api.php", "source": "fieldsync"}` and the common keys;
//! any other key is refused.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::crm::{self, Change};
use super::outcome::{redact_url, Outcome};
use super::{config, AdapterError, Payload};
use crate::credentials::Credentials;
use crate::events::IntegrationType;
use crate::secret::Secret;

/// Requests per second and burst when the integration's config sets no `rate_limit_per_second`
/// (Light Blue publishes no limit; a contact form is not meant for bursts).
pub const DEFAULT_RATE: (f64, u32) = (2.0, 4);

/// A Light Blue integration's own config keys (no `Debug`: it holds the API key).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LightBlueConfig {
    api_key: Option<Value>,
    url: Option<String>,
    /// `Source` of each submission, with `ID` what Light Blue deduplicates on.
    source: Option<String>,
}

pub struct LightBlue {
    url: reqwest::Url,
    key: Secret<String>,
    source: String,
}

impl LightBlue {
    pub fn from_config(config: &Value, credentials: &Credentials) -> Result<LightBlue, AdapterError> {
        let (_, c): (_, LightBlueConfig) = config::parse(IntegrationType::LightBlue, config)?;
        let url = c
            .url
            .as_deref()
            .unwrap_or("https://online.lightbluesoftware.com/api.php");
        let url = reqwest::Url::parse(url).map_err(|_| {
            AdapterError::config(
                "url",
                "must be a URL such as https://online.lightbluesoftware.com/api.php",
            )
        })?;
        credentials.check_url("url", &url, &["online.lightbluesoftware.com"])?;
        let key = credentials.resolve_required(
            "api_key",
            c.api_key.as_ref(),
            "set config.api_key to a reference to the Light Blue API key (Preferences › Integrations › API & Zapier)",
        )?;
        let source = c.source.unwrap_or_else(|| "fieldsync".to_owned());
        Ok(LightBlue { url, key, source })
    }

    pub fn endpoint(&self) -> String {
        redact_url(self.url.as_str())
    }

    pub async fn deliver(&self, client: &reqwest::Client, payload: &Payload, timeout: Duration) -> Outcome {
        let change = match Change::read(payload) {
            Ok(c) => c,
            Err(outcome) => return outcome,
        };
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("key", self.key.expose())
                .append_pair("type", "contact form")
                .append_pair("Source", &self.source)
                .append_pair("SourceAPIVersion", "1")
                .append_pair("ID", &change.id)
                .append_pair("Message", &message(&change));
            if let Some(names) = change.wedding.couple_names.as_deref() {
                form.append_pair("ContactNameFull", names);
            }
            form.finish()
        };
        let request = client
            .post(self.url.clone())
            .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
            .body(body);
        let answer = match crm::exchange(request, timeout).await {
            Ok(a) => a,
            Err(outcome) => return outcome,
        };
        if answer.status.is_server_error() {
            return crm::server_error("Light Blue", &answer);
        }
        if answer.status.as_u16() == 429 {
            return crm::rate_limited("Light Blue", &answer, None);
        }
        let text = String::from_utf8_lossy(&answer.body);
        let mut lines = text.split(['\r', '\n']).filter(|l| !l.trim().is_empty());
        let code = lines.next().and_then(|l| l.trim().parse::<i32>().ok());
        let said = lines.next().unwrap_or("").trim();
        let status = answer.status.as_u16();
        match code {
            Some(0) | Some(-4) if answer.status.is_success() => Outcome::Delivered { status },
            Some(-20) => crm::reject(
                "Light Blue requires HTTPS (-20): set config.url to its https:// address".to_owned(),
            ),
            Some(-3) => crm::reject(format!(
                "Light Blue refused the submission (-3 {said:?}): invalid type or no valid parameters"
            )),
            Some(-1) => Outcome::Disable {
                status,
                error: format!("Light Blue refused the key (-1 {said:?}): fix config.api_key"),
            },
            Some(other) => crm::reject(format!("Light Blue answered code {other} ({said:?})")),
            None => Outcome::Retry {
                status: Some(status),
                error: format!(
                    "Light Blue answered HTTP {status} without a status line (not its API's answer)"
                ),
                after: None,
                endpoint_fault: true,
            },
        }
    }
}

/// The message a person reads in Light Blue's Inbox.
fn message(c: &Change) -> String {
    let w = &c.wedding;
    let mut head = format!(
        "Wedding of {}",
        w.couple_names.as_deref().unwrap_or("(names not set)")
    );
    if let Some(date) = &w.wedding_date {
        head.push_str(&format!(" on {date}"));
    }
    if let Some(venue) = w.venue.as_ref().and_then(crm::venue_line) {
        head.push_str(&format!(" at {venue}"));
    }
    let v = c.value.as_ref();
    let body = match (c.field_type.as_str(), v) {
        (_, None) => format!("{} was removed.", label(&c.field_type)),
        ("guest_count_matrix", Some(v)) => format!(
            "Guest count: {} ({}).",
            v["total"],
            v["breakdown"].as_str().unwrap_or("")
        ),
        ("wedding_date", Some(_)) => format!("Wedding date: {}.", c.date().unwrap_or("")),
        ("venue_selector", Some(v)) => format!("Venue: {}.", crm::venue_line(v).unwrap_or_default()),
        ("dietary_matrix", Some(v)) => {
            let counts: Vec<String> = v["counts"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(_, n)| n.as_u64() != Some(0))
                        .map(|(k, n)| format!("{} {n}", k.replace('_', " ")))
                        .collect()
                })
                .unwrap_or_default();
            let mut s = format!(
                "Dietary requirements: {}.",
                if counts.is_empty() {
                    "none".to_owned()
                } else {
                    counts.join(", ")
                }
            );
            if let Some(notes) = v["notes"].as_str() {
                s.push_str(&format!(" Notes: {notes}"));
            }
            s
        }
        (other, Some(v)) => format!("{}: {v}", label(other)),
    };
    format!("{head}. {body}")
}

fn label(field_type: &str) -> String {
    let words = field_type.replace('_', " ");
    let mut chars = words.chars();
    chars
        .next()
        .map(|f| f.to_uppercase().collect::<String>() + chars.as_str())
        .unwrap_or_default()
}
