//! The Google Calendar adapter (`integration_type = 'google_calendar'`): mirrors a wedding's
//! timeline, date and venue into one calendar.
//!
//! Integration config: `{"client_id": "…", "client_secret": <secret>, "refresh_token": <secret>,
//! "calendar_id": "primary", "base_url": "https://www.googleapis.com/calendar/v3",
//! "token_url": "https://oauth2.googleapis.com/token", "timeout_ms": 15000}`; secrets are plain
//! strings or `{"env"|"file"|"encrypted": …}` references (crate::credentials).
//!
//! # Mapping
//! - `timeline_builder`: one timed event per timeline item on the wedding date, local wall-clock
//!   `dateTime` with the wedding's IANA `timeZone`; items no longer in the timeline are deleted.
//! - `wedding_date`: one all-day event; the timeline events move to the new date, keeping their
//!   local times.
//! - `venue_selector`: `location` of every event of the wedding.
//!
//! Every event carries `extendedProperties.private` `fieldsync_wedding`, `fieldsync_kind`
//! (`timeline` | `wedding_date`) and `fieldsync_item` (the timeline item's stable key), and has a
//! deterministic id, base32hex of SHA-256 over (wedding id, kind, key): a replayed insert answers
//! 409 `duplicate`, and the adapter then updates the existing event (GET, then PUT with
//! `If-Match`; a 412 re-fetches and re-applies, a bounded number of times). A cancelled event with
//! our id is revived by the update (`status: "confirmed"`).
//!
//! # Auth
//! An access token is cached until a minute before it expires; one refresh at a time (a tokio
//! mutex, the cache itself behind a std mutex never held across an await). A 401 from the calendar
//! drops the token, refreshes once and repeats the request. `invalid_grant` or `invalid_client`
//! from the token endpoint disable the integration until its config changes.
//!
//! No error string or log line carries a secret, a token or the couple's data.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, NaiveDateTime};
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};

use super::crm::{self, Answer, Change};
use super::outcome::{redact_url, Outcome};
use super::{AdapterError, Payload};
use crate::credentials::Credentials;
use crate::events::EventKind;
use crate::secret::Secret;

/// The field types this adapter takes by default (FIELD_TYPES.md); `config.field_types` narrows them.
pub const FIELD_TYPES: &[&str] = &["wedding_date", "venue_selector", "timeline_builder"];

/// Requests per second and burst when the integration's config sets no `rate_limit_per_second`.
pub const DEFAULT_RATE: (f64, u32) = (5.0, 10);

const API: &str = "Google Calendar";
const DEFAULT_BASE: &str = "https://www.googleapis.com/calendar/v3";
const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// A token is refreshed this long before Google says it expires.
const EARLY_REFRESH: Duration = Duration::from_secs(60);
/// How often an update is re-applied after 412 `conditionNotMet` before the delivery is retried.
const MAX_REAPPLY: usize = 4;
/// The wait after `quotaExceeded` (Google: "back off, can be hours").
const QUOTA_WAIT: Duration = Duration::from_secs(600);
const KIND_TIMELINE: &str = "timeline";
const KIND_DATE: &str = "wedding_date";

struct Token {
    value: Secret<String>,
    until: Instant,
}

pub struct Google {
    /// Boxed: the adapter enum stays small.
    s: Box<Settings>,
    token: Mutex<Option<Token>>,
    refreshing: tokio::sync::Mutex<()>,
}

/// The checked config.
struct Settings {
    client_id: String,
    client_secret: Secret<String>,
    refresh_token: Secret<String>,
    calendar_id: String,
    base: Url,
    token_url: Url,
    timeout: Option<Duration>,
}

fn config_url(config: &serde_json::Value, key: &str, default: &str) -> Result<Url, AdapterError> {
    let text = match config.get(key) {
        None | Some(Value::Null) => default,
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(AdapterError::config(key, "must be a string URL")),
    };
    let url = Url::parse(text.trim_end_matches('/'))
        .map_err(|e| AdapterError::config(key, &format!("is not a URL ({e}): use the default {default}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(AdapterError::config(
            key,
            &format!("must be an https URL (default {default})"),
        ));
    }
    Ok(url)
}

impl Google {
    pub fn from_config(
        config: &serde_json::Value,
        credentials: &Credentials,
    ) -> Result<Google, AdapterError> {
        let client_id =
            match config.get("client_id") {
                Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
                Some(_) => {
                    return Err(AdapterError::config(
                        "client_id",
                        "must be the OAuth client id string (…apps.googleusercontent.com)",
                    ))
                }
                None => return Err(AdapterError::config(
                    "client_id",
                    "is missing: set config.client_id to the OAuth client id from the Google Cloud console",
                )),
            };
        let client_secret = credentials.require(
            config,
            "client_secret",
            "set config.client_secret to the OAuth client's secret (or an env/file/encrypted reference)",
        )?;
        let refresh_token = credentials.require(
            config,
            "refresh_token",
            "set config.refresh_token to the refresh token from the calendar owner's consent (or a reference)",
        )?;
        let calendar_id = match config.get("calendar_id") {
            None | Some(Value::Null) => "primary".to_owned(),
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
            Some(_) => {
                return Err(AdapterError::config(
                    "calendar_id",
                    "must be a calendar id string (\"primary\" or the calendar's id)",
                ))
            }
        };
        let timeout = config
            .get("timeout_ms")
            .and_then(Value::as_u64)
            .map(Duration::from_millis);
        Ok(Google {
            s: Box::new(Settings {
                client_id,
                client_secret,
                refresh_token,
                calendar_id,
                base: config_url(config, "base_url", DEFAULT_BASE)?,
                token_url: config_url(config, "token_url", DEFAULT_TOKEN_URL)?,
                timeout,
            }),
            token: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn endpoint(&self) -> String {
        redact_url(self.s.base.as_str())
    }

    pub async fn deliver(
        &self,
        client: &reqwest::Client,
        payload: &Payload,
        default_timeout: Duration,
    ) -> Outcome {
        let change = match Change::read(payload) {
            Ok(c) => c,
            Err(outcome) => return outcome,
        };
        let call = Call {
            g: self,
            client,
            timeout: self.s.timeout.unwrap_or(default_timeout),
        };
        let done = match change.field_type.as_str() {
            "timeline_builder" => call.timeline(&change).await,
            "wedding_date" => call.wedding_date(&change).await,
            "venue_selector" => call.venue(&change).await,
            other => Err(crm::reject(format!(
                "google_calendar does not take {other} fields (it takes {}): remove it from config.field_types",
                FIELD_TYPES.join(", ")
            ))),
        };
        match done {
            Ok(()) => Outcome::Delivered { status: 200 },
            Err(outcome) => outcome,
        }
    }

    fn cached_token(&self) -> Option<Secret<String>> {
        let token = lock(&self.token);
        token
            .as_ref()
            .filter(|t| t.until > Instant::now() + EARLY_REFRESH)
            .map(|t| t.value.clone())
    }

    /// Drops the cached token if it is still the one that was refused.
    fn drop_token(&self, refused: &Secret<String>) {
        let mut token = lock(&self.token);
        if token.as_ref().is_some_and(|t| t.value == *refused) {
            *token = None;
        }
    }

    async fn access_token(
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

/// Google's error `reason` and `message`, when the body is its error envelope.
fn error_reason(answer: &Answer) -> (Option<String>, Option<String>) {
    let v: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
    let first = &v["error"]["errors"][0];
    let text = |x: &Value| x.as_str().map(|s| s.chars().take(200).collect::<String>());
    (
        text(&first["reason"]),
        text(&first["message"]).or_else(|| text(&v["error"]["message"])),
    )
}

/// An answer the operation did not expect, classified (Google's "Handle API errors" table).
fn classify(answer: &Answer, calendar_id: &str, what: &str) -> Outcome {
    let status = answer.status.as_u16();
    let (reason, message) = error_reason(answer);
    let reason = reason.as_deref();
    let detail = format!(
        "{} {}",
        reason.unwrap_or("no reason"),
        message.as_deref().map(|m| format!("({m})")).unwrap_or_default()
    );
    match status {
        403 | 429 => match reason {
            Some("quotaExceeded") => Outcome::Retry {
                status: Some(status),
                error: format!("{API} usage limits exceeded (quotaExceeded): waiting before the next attempt"),
                after: Some(answer.retry_after().unwrap_or(QUOTA_WAIT)),
                endpoint_fault: false,
            },
            Some("rateLimitExceeded" | "userRateLimitExceeded") | None => {
                crm::rate_limited(API, answer, None)
            }
            Some(_) => Outcome::Reject {
                status: Some(status),
                error: format!(
                    "{API} refused the {what} ({status} {detail}): check that the authorised account can write config.calendar_id"
                ),
            },
        },
        401 => Outcome::Retry {
            status: Some(status),
            error: format!("{API} refused a freshly refreshed access token (401 {detail})"),
            after: None,
            endpoint_fault: false,
        },
        404 => Outcome::Reject {
            status: Some(status),
            error: format!(
                "{API} has no calendar {calendar_id:?} for the authorised account (404): fix config.calendar_id"
            ),
        },
        500..=599 => crm::server_error(API, answer),
        _ => Outcome::Reject {
            status: Some(status),
            error: format!("{API} rejected the {what} ({status} {detail})"),
        },
    }
}

/// The deterministic event id: base32hex (RFC 4648 §7, lowercase) of SHA-256 over the parts,
/// first 160 bits, 32 characters.
pub fn event_id(wedding_id: &str, kind: &str, key: &str) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let mut input = Vec::new();
    for part in [wedding_id, kind, key] {
        input.extend_from_slice(part.as_bytes());
        input.push(0);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    let bytes = &digest.as_ref()[..20];
    let mut out = String::with_capacity(32);
    for chunk in bytes.chunks(5) {
        let v = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        for i in (0..8).rev() {
            out.push(ALPHABET[((v >> (i * 5)) & 31) as usize] as char);
        }
    }
    out
}

/// What a write came to.
enum Written {
    Done,
    /// 412: the etag was stale.
    Stale,
    /// 404 for the event: it is not there (any more).
    Missing,
    /// 409 on insert: the id exists.
    Duplicate,
}

/// One delivery's calls.
struct Call<'a> {
    g: &'a Google,
    client: &'a reqwest::Client,
    timeout: Duration,
}

impl Call<'_> {
    fn events_url(&self, event: Option<&str>) -> Url {
        let mut url = self.g.s.base.clone();
        {
            let mut path = url.path_segments_mut().expect("checked: a base URL");
            path.pop_if_empty()
                .extend(["calendars", self.g.s.calendar_id.as_str(), "events"]);
            if let Some(id) = event {
                path.push(id);
            }
        }
        url
    }

    /// One request with the bearer token; a 401 refreshes the token once and repeats it.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Answer, Outcome> {
        let mut refreshed = false;
        loop {
            let token = self.g.access_token(self.client, self.timeout).await?;
            let mut request = self
                .client
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose());
            if let Some(body) = body {
                request = request
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(body).expect("JSON values serialize"));
            }
            if let Some(etag) = if_match {
                request = request.header("if-match", etag);
            }
            let answer = crm::exchange(request, self.timeout).await?;
            if answer.status == StatusCode::UNAUTHORIZED && !refreshed {
                self.g.drop_token(&token);
                refreshed = true;
                continue;
            }
            return Ok(answer);
        }
    }

    fn fail(&self, answer: &Answer, what: &str) -> Outcome {
        classify(answer, &self.g.s.calendar_id, what)
    }

    /// Every event of the wedding, cancelled ones included.
    async fn wedding_events(&self, wedding_id: &str) -> Result<Vec<Value>, Outcome> {
        let mut events = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut url = self.events_url(None);
            url.query_pairs_mut()
                .append_pair(
                    "privateExtendedProperty",
                    &format!("fieldsync_wedding={wedding_id}"),
                )
                .append_pair("showDeleted", "true")
                .append_pair("maxResults", "2500");
            if let Some(p) = &page {
                url.query_pairs_mut().append_pair("pageToken", p);
            }
            let answer = self.send(Method::GET, url, None, None).await?;
            if !answer.status.is_success() {
                return Err(self.fail(&answer, "event list"));
            }
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Events {
                #[serde(default)]
                items: Vec<Value>,
                next_page_token: Option<String>,
            }
            let list: Events = answer.json(API)?;
            events.extend(list.items);
            match list.next_page_token {
                Some(p) if !p.is_empty() => page = Some(p),
                _ => return Ok(events),
            }
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Value>, Outcome> {
        let answer = self
            .send(Method::GET, self.events_url(Some(id)), None, None)
            .await?;
        match answer.status.as_u16() {
            200 => answer.json(API).map(Some),
            404 => Ok(None),
            _ => Err(self.fail(&answer, "event read")),
        }
    }

    async fn insert(&self, event: &Value) -> Result<Written, Outcome> {
        let answer = self
            .send(Method::POST, self.events_url(None), Some(event), None)
            .await?;
        match answer.status.as_u16() {
            200 => answer.json::<Value>(API).map(|_| Written::Done),
            409 => Ok(Written::Duplicate),
            _ => Err(self.fail(&answer, "event insert")),
        }
    }

    async fn put(&self, id: &str, event: &Value, etag: Option<&str>) -> Result<Written, Outcome> {
        let answer = self
            .send(Method::PUT, self.events_url(Some(id)), Some(event), etag)
            .await?;
        match answer.status.as_u16() {
            200 => answer.json::<Value>(API).map(|_| Written::Done),
            412 => Ok(Written::Stale),
            404 => Ok(Written::Missing),
            _ => Err(self.fail(&answer, "event update")),
        }
    }

    async fn delete(&self, id: &str, etag: Option<&str>) -> Result<Written, Outcome> {
        let answer = self
            .send(Method::DELETE, self.events_url(Some(id)), None, etag)
            .await?;
        match answer.status.as_u16() {
            200 | 204 | 404 | 410 => Ok(Written::Done),
            412 => Ok(Written::Stale),
            _ => Err(self.fail(&answer, "event delete")),
        }
    }

    /// Makes the event with `desired["id"]` look like `desired`: insert, or update the one there
    /// (`known`, from a list), re-reading it after 409 or 412.
    async fn upsert(&self, desired: &Value, known: Option<&Value>) -> Result<(), Outcome> {
        let id = desired["id"].as_str().unwrap_or_default();
        let mut current = known.cloned();
        for _ in 0..MAX_REAPPLY {
            match current.take() {
                None => match self.insert(desired).await? {
                    Written::Duplicate => {
                        current = Some(self.get(id).await?.ok_or_else(|| vanished(id))?);
                    }
                    _ => return Ok(()),
                },
                Some(existing) => {
                    if same_event(&existing, desired) {
                        return Ok(());
                    }
                    match self.put(id, desired, existing["etag"].as_str()).await? {
                        Written::Done => return Ok(()),
                        Written::Missing => current = None,
                        _ => current = self.get(id).await?,
                    }
                }
            }
        }
        Err(kept_changing())
    }

    /// Applies `change` to a live event of ours (cancelled ones are left alone), re-reading and
    /// re-applying after 412.
    async fn modify(&self, event: &Value, change: impl Fn(&mut Value) -> bool) -> Result<(), Outcome> {
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        let mut current = Some(event.clone());
        for _ in 0..MAX_REAPPLY {
            let Some(existing) = current.take().filter(|e| e["status"] != "cancelled") else {
                return Ok(());
            };
            let mut next = writable(&existing);
            if !change(&mut next) {
                return Ok(());
            }
            match self.put(&id, &next, existing["etag"].as_str()).await? {
                Written::Done | Written::Missing => return Ok(()),
                _ => current = self.get(&id).await?,
            }
        }
        Err(kept_changing())
    }

    /// Deletes a live event of ours; already gone is fine.
    async fn remove(&self, event: &Value) -> Result<(), Outcome> {
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        let mut current = Some(event.clone());
        for _ in 0..MAX_REAPPLY {
            let Some(existing) = current.take().filter(|e| e["status"] != "cancelled") else {
                return Ok(());
            };
            match self.delete(&id, existing["etag"].as_str()).await? {
                Written::Stale => current = self.get(&id).await?,
                _ => return Ok(()),
            }
        }
        Err(kept_changing())
    }

    async fn timeline(&self, change: &Change) -> Result<(), Outcome> {
        let w = &change.wedding;
        // what cannot be placed is rejected before any request
        let items = match change.value.as_ref() {
            Some(value) => {
                let date = crm::wedding_date(w).ok_or_else(|| {
                    crm::reject("the wedding has no date, so its timeline cannot be placed in the calendar: set the date in the app, then requeue this delivery (fieldsync deliveries requeue)".to_owned())
                })?;
                Some((crm::timeline_items(value, date), time_zone(change)?))
            }
            None => None,
        };
        let existing = self.wedding_events(&w.id).await?;
        let ours = |e: &&Value| {
            e["extendedProperties"]["private"]["fieldsync_kind"] == KIND_TIMELINE
                && e["status"] != "cancelled"
        };
        let Some((items, zone)) = items else {
            for e in existing.iter().filter(ours) {
                self.remove(e).await?;
            }
            return Ok(());
        };
        let location = w.venue.as_ref().and_then(crm::venue_line);
        let mut keep = HashSet::new();
        for item in &items {
            let id = event_id(&w.id, KIND_TIMELINE, &item.key);
            let mut desired = json!({
                "id": id,
                "status": "confirmed",
                "summary": format!("{} · {}", item.title, couple(change)),
                "start": {"dateTime": local(item.start), "timeZone": zone},
                "end": {"dateTime": local(item.end), "timeZone": zone},
                "extendedProperties": {"private": {
                    "fieldsync_wedding": w.id,
                    "fieldsync_kind": KIND_TIMELINE,
                    "fieldsync_item": item.key,
                }},
            });
            if let Some(d) = &item.description {
                desired["description"] = json!(d);
            }
            if let Some(l) = &location {
                desired["location"] = json!(l);
            }
            let known = existing.iter().find(|e| e["id"] == id);
            self.upsert(&desired, known).await?;
            keep.insert(id);
        }
        for e in existing.iter().filter(ours) {
            if !keep.contains(e["id"].as_str().unwrap_or_default()) {
                self.remove(e).await?;
            }
        }
        Ok(())
    }

    async fn wedding_date(&self, change: &Change) -> Result<(), Outcome> {
        let w = &change.wedding;
        let id = event_id(&w.id, KIND_DATE, KIND_DATE);
        let date = match change.value {
            None => None,
            Some(_) => Some(
                change
                    .date()
                    .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                    .ok_or_else(|| crm::reject("the wedding_date value has no ISO date".to_owned()))?,
            ),
        };
        let existing = self.wedding_events(&w.id).await?;
        let known = existing.iter().find(|e| e["id"] == id);
        let Some(date) = date else {
            if let Some(e) = known {
                self.remove(e).await?;
            }
            return Ok(());
        };
        let next = date.succ_opt().unwrap_or(date);
        let mut desired = json!({
            "id": id,
            "status": "confirmed",
            "summary": format!("Wedding · {}", couple(change)),
            "start": {"date": date.to_string()},
            "end": {"date": next.to_string()},
            "transparency": "transparent",
            "extendedProperties": {"private": {
                "fieldsync_wedding": w.id,
                "fieldsync_kind": KIND_DATE,
                "fieldsync_item": KIND_DATE,
            }},
        });
        if let Some(l) = w.venue.as_ref().and_then(crm::venue_line) {
            desired["location"] = json!(l);
        }
        self.upsert(&desired, known).await?;
        for e in existing
            .iter()
            .filter(|e| e["extendedProperties"]["private"]["fieldsync_kind"] == KIND_TIMELINE)
        {
            self.modify(e, |ev| move_to(ev, date)).await?;
        }
        Ok(())
    }

    async fn venue(&self, change: &Change) -> Result<(), Outcome> {
        let location = match change.kind {
            EventKind::Deleted => None,
            _ => change.value.as_ref().and_then(crm::venue_line),
        };
        for e in self.wedding_events(&change.wedding.id).await? {
            self.modify(&e, |ev| {
                if ev.get("location").and_then(Value::as_str) == location.as_deref() {
                    return false;
                }
                match &location {
                    Some(l) => ev["location"] = json!(l),
                    None => {
                        if let Some(m) = ev.as_object_mut() {
                            m.remove("location");
                        }
                    }
                }
                true
            })
            .await?;
        }
        Ok(())
    }
}

fn vanished(id: &str) -> Outcome {
    Outcome::Retry {
        status: Some(404),
        error: format!("{API} said event {id} exists (409) but could not read it (404); trying again later"),
        after: None,
        endpoint_fault: false,
    }
}

fn kept_changing() -> Outcome {
    Outcome::Retry {
        status: Some(412),
        error: format!(
            "{API} event kept changing while it was updated ({MAX_REAPPLY} conditional writes failed); trying again later"
        ),
        after: None,
        endpoint_fault: false,
    }
}

fn couple(change: &Change) -> &str {
    change.wedding.couple_names.as_deref().unwrap_or("Wedding")
}

fn time_zone(change: &Change) -> Result<String, Outcome> {
    change.wedding.timezone.clone().ok_or_else(|| {
        crm::reject("the wedding has no time zone (nor its organisation): set one in the app so its timeline lands at the right local times, then requeue this delivery".to_owned())
    })
}

fn local(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// Moves a timed event to `date`, keeping its local times (and its length); false when it is
/// already there.
fn move_to(event: &mut Value, date: NaiveDate) -> bool {
    let read = |which: &str| {
        event[which]["dateTime"]
            .as_str()
            .and_then(|s| NaiveDateTime::parse_from_str(s.get(..19)?, "%Y-%m-%dT%H:%M:%S").ok())
            .map(|t| {
                (
                    t,
                    event[which]["dateTime"].as_str().unwrap_or_default()[19..].to_owned(),
                )
            })
    };
    let (Some((start, start_rest)), Some((end, end_rest))) = (read("start"), read("end")) else {
        return false;
    };
    let shift = date.signed_duration_since(start.date());
    if shift.is_zero() {
        return false;
    }
    event["start"]["dateTime"] = json!(format!("{}{start_rest}", local(start + shift)));
    event["end"]["dateTime"] = json!(format!("{}{end_rest}", local(end + shift)));
    true
}

/// The fields a client may send back in an update.
fn writable(event: &Value) -> Value {
    let mut e = event.clone();
    if let Some(m) = e.as_object_mut() {
        for k in [
            "kind",
            "etag",
            "htmlLink",
            "created",
            "updated",
            "creator",
            "organizer",
            "iCalUID",
            "sequence",
        ] {
            m.remove(k);
        }
    }
    e
}

/// Does the calendar's event already say what we would write?
fn same_event(existing: &Value, desired: &Value) -> bool {
    let Some(want) = desired.as_object() else {
        return false;
    };
    ["description", "location"]
        .iter()
        .all(|k| existing.get(*k) == want.get(*k))
        && want.iter().all(|(k, v)| match k.as_str() {
            "start" | "end" => ["date", "dateTime", "timeZone"]
                .iter()
                .all(|f| existing[k].get(*f) == v.get(*f)),
            "extendedProperties" => existing[k]["private"] == v["private"],
            _ => existing.get(k) == Some(v),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use reqwest::header::HeaderMap;

    fn answer(status: u16, body: Value) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        }
    }

    fn google_error(status: u16, reason: &str, message: &str) -> Answer {
        answer(
            status,
            json!({"error": {"errors": [{"domain": "usageLimits", "reason": reason, "message": message}], "code": status, "message": message}}),
        )
    }

    #[test]
    fn google_event_ids_are_deterministic_base32hex() {
        let a = event_id("w1", KIND_TIMELINE, "ceremony");
        assert_eq!(a, event_id("w1", KIND_TIMELINE, "ceremony"));
        assert_ne!(a, event_id("w1", KIND_TIMELINE, "ceremony-2"));
        assert_ne!(a, event_id("w2", KIND_TIMELINE, "ceremony"));
        assert_eq!(a.len(), 32);
        assert!(crate::sandbox::google::valid_event_id(&a), "{a}");
    }

    #[test]
    fn google_rate_limits_back_off_and_quota_waits_long() {
        for (status, reason) in [
            (403, "rateLimitExceeded"),
            (403, "userRateLimitExceeded"),
            (429, "rateLimitExceeded"),
        ] {
            match classify(
                &google_error(status, reason, "Rate Limit Exceeded"),
                "primary",
                "x",
            ) {
                Outcome::Retry {
                    after,
                    endpoint_fault,
                    ..
                } => {
                    assert_eq!(after, None, "exponential backoff, no fixed wait");
                    assert!(!endpoint_fault);
                }
                other => panic!("{other:?}"),
            }
        }
        match classify(
            &google_error(403, "quotaExceeded", "Calendar usage limits exceeded."),
            "primary",
            "x",
        ) {
            Outcome::Retry { after, .. } => assert_eq!(after, Some(QUOTA_WAIT)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn google_bad_requests_and_unknown_calendars_are_rejected_with_the_reason() {
        match classify(
            &google_error(400, "timeRangeEmpty", "The specified time range is empty."),
            "primary",
            "event insert",
        ) {
            Outcome::Reject { error, .. } => assert!(error.contains("timeRangeEmpty"), "{error}"),
            other => panic!("{other:?}"),
        }
        match classify(
            &google_error(404, "notFound", "Not Found"),
            "team@example.com",
            "event list",
        ) {
            Outcome::Reject { error, .. } => assert!(error.contains("config.calendar_id"), "{error}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(&answer(503, json!({})), "primary", "x"),
            Outcome::Retry {
                endpoint_fault: true,
                ..
            }
        ));
    }

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

    #[test]
    fn google_config_errors_name_the_key_never_the_secret() {
        let creds = Credentials::default();
        let e = Google::from_config(
            &json!({"client_secret": "s3cr3t-value", "refresh_token": "r3fr3sh"}),
            &creds,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("client_id"), "{e}");
        let e = Google::from_config(
            &json!({"client_id": "c", "client_secret": "s3cr3t-value"}),
            &creds,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("refresh_token") && !e.contains("s3cr3t"), "{e}");
        let e = Google::from_config(
            &json!({"client_id": "c", "client_secret": "s3cr3t-value", "refresh_token": "r", "base_url": "ftp://x"}),
            &creds,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("base_url") && !e.contains("s3cr3t"), "{e}");
        let ok = Google::from_config(
            &json!({"client_id": "c", "client_secret": "s", "refresh_token": "r"}),
            &creds,
        )
        .unwrap();
        assert_eq!(ok.s.calendar_id, "primary");
        assert_eq!(ok.endpoint(), DEFAULT_BASE);
    }

    #[test]
    fn google_moving_keeps_local_times_and_crossing_midnight() {
        let mut e = json!({"start": {"dateTime": "2027-06-19T23:30:00", "timeZone": "Europe/London"},
                           "end": {"dateTime": "2027-06-20T00:30:00", "timeZone": "Europe/London"}});
        assert!(move_to(&mut e, NaiveDate::from_ymd_opt(2027, 7, 3).unwrap()));
        assert_eq!(e["start"]["dateTime"], "2027-07-03T23:30:00");
        assert_eq!(e["end"]["dateTime"], "2027-07-04T00:30:00");
        assert!(!move_to(&mut e, NaiveDate::from_ymd_opt(2027, 7, 3).unwrap()));
    }
}
