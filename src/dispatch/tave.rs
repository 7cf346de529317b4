//! The VSCO Workspace (formerly Tave) adapter (`integration_type = 'tave'`), REST API v2
//! (../shared/CRM_APIS.md §1).
//!
//! Integration config:
//! `{"api_key": <secret>, "base_url": "https://workspace.vsco.co/api/v2",
//!   "external_url": "https://fieldsync.invalid/weddings/{wedding_id}",
//!   "custom_fields": {"adults": "…", "children": "…", "infants": "…", "dietary_notes": "…",
//!                     "dietary_prefix": "Dietary: ", "budget_prefix": "Budget: "},
//!   "job_type_id": "<ulid>", "event_type_id": "<ulid>", "timeout_ms": 15000}`; only `api_key` is
//! required.
//!
//! # Mapping (upsert mode: one job per wedding)
//! - The job is found by `GET /job?externalMappingId=<wedding id>`, else created with
//!   `POST /job/-/worksheet` (name = couple names, `eventDate`, the external mapping, and the
//!   wedding's venue as a location contact), which Tave creates all or nothing.
//! - `guest_count_matrix` → `guestCount` (total) and custom fields for adults, children, infants;
//!   `wedding_date` → `eventDate`; `budget_category` → one `Money` custom field per category and
//!   `leadMaxBudget` = the sum of the job's budget fields; `dietary_matrix` → one `Number` custom
//!   field per requirement and a `TextBox` for the notes; all written read-merge-write
//!   (`GET /job/{id}`, change only these, `PUT` without read-only properties; no `PUT` when
//!   nothing changed).
//! - `venue_selector` → a location contact linked to the job by a job-contact whose external
//!   mapping is `<wedding>:venue`; updated in place.
//! - `timeline_builder` → one Event per timeline item, external mapping `<wedding>:tl:<item key>`,
//!   mirrored (created, moved, deleted); a new `wedding_date` moves these events with it.
//! - `field.deleted` clears what the field set.
//!
//! # Idempotency
//! Tave has no idempotency keys, so every entity the adapter creates carries an external mapping
//! and is looked up before it is created: a replay or a restart after a crash finds the job,
//! events, links and custom fields it made before. Custom fields are studio-wide and found by name
//! (creation serialised within this adapter; the oldest wins when a name repeats; a `400` on
//! `customFields` drops the cached ids and is tried once more, for a field deleted in Tave). The one gap
//! the API leaves is the address book, which has no `externalMappingId` filter: a venue contact
//! created by a delivery that died before linking it is found again by paging through the address
//! book newest first (`sortBy=created desc`) down to the job's creation time (a venue contact of
//! a job cannot be older than the job) and matching our external mapping on the contact.
//!
//! # Assumptions (labelled [U]/[G] in CRM_APIS.md)
//! - `MoneyAmount` is in whole units of the studio's currency: minor units are divided by the
//!   currency's exponent (2, or 0/3 for the ISO 4217 exceptions) and rounded half away from zero.
//! - `PUT /job/{id}` writes `customFields` (an integrator fell back to the web service for this).
//! - The venue's formatted address goes to `streetAddress` (the Places result has no split parts
//!   we can trust); `place_id` and coordinates are read-only in Tave and are not sent.
//! - A deleted `budget_category` names its category in the event's `old_value` (REPLICA IDENTITY
//!   FULL); failing that, the category this adapter last saw for the field.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::crm::{self, Answer, Change};
use super::outcome::{redact_url, Outcome};
use super::{AdapterError, Payload};
use crate::credentials::Credentials;
use crate::secret::Secret;

/// The field types this adapter takes by default (FIELD_TYPES.md); `config.field_types` narrows them.
pub const FIELD_TYPES: &[&str] = &[
    "guest_count_matrix",
    "wedding_date",
    "venue_selector",
    "timeline_builder",
    "budget_category",
    "dietary_matrix",
];

/// Requests per second and burst when the integration's config sets no `rate_limit_per_second`.
/// The quota is undocumented [U]; one integrator paced at one request per 500 ms [S].
pub const DEFAULT_RATE: (f64, u32) = (2.0, 4);

const API: &str = "VSCO Workspace";
const DEFAULT_BASE: &str = "https://workspace.vsco.co/api/v2";
const DEFAULT_EXTERNAL_URL: &str = "https://fieldsync.invalid/weddings/{wedding_id}";
/// Read-only properties of a Job (the spec's `readOnly`), left out of every `PUT`.
const JOB_READ_ONLY: &[&str] = &[
    "links",
    "id",
    "created",
    "modified",
    "title",
    "accountBalance",
    "creditBalance",
    "totalCost",
    "totalProfit",
    "totalRevenue",
    "jobTypeName",
    "leadSourceName",
    "leadStatusName",
    "closedReasonName",
    "workflowName",
    "sample",
    "staleDate",
    "primarySessionId",
    "nextInteractionDate",
    "nextInteractionItem",
    "previousInteractionDate",
    "previousInteractionItem",
    "lastClientActivity",
    "leadStatusChangedAt",
    "customNumber",
    "events",
    "contacts",
];
const EVENT_READ_ONLY: &[&str] = &[
    "links", "id", "created", "modified", "hidden", "startUtc", "endUtc", "readOnly",
];
const CONTACT_READ_ONLY: &[&str] = &[
    "links",
    "id",
    "created",
    "modified",
    "hidden",
    "accountBalance",
    "creditBalance",
    "totalCost",
    "totalRevenue",
    "anonymized",
    "customNumber",
    "notes",
];
const NAME_KEYS: &[&str] = &[
    "adults",
    "children",
    "infants",
    "dietary_notes",
    "dietary_prefix",
    "budget_prefix",
];

/// Custom field names (config `custom_fields` overrides the defaults).
#[derive(Clone, Debug)]
struct Names {
    adults: String,
    children: String,
    infants: String,
    dietary_notes: String,
    dietary_prefix: String,
    budget_prefix: String,
}

impl Default for Names {
    fn default() -> Names {
        Names {
            adults: "Guests: adults".into(),
            children: "Guests: children".into(),
            infants: "Guests: infants".into(),
            dietary_notes: "Dietary notes".into(),
            dietary_prefix: "Dietary: ".into(),
            budget_prefix: "Budget: ".into(),
        }
    }
}

#[derive(Default)]
struct Cache {
    /// wedding id → job id.
    jobs: HashMap<String, String>,
    /// Job custom fields: name → id, and id → name.
    field_ids: HashMap<String, String>,
    field_names: HashMap<String, String>,
    /// (wedding id, field id) → the budget category last delivered for it.
    budget_categories: HashMap<(String, String), String>,
}

pub struct Tave {
    base: String,
    api_key: Secret<String>,
    external_url: String,
    names: Box<Names>,
    job_type_id: Option<String>,
    event_type_id: Option<String>,
    timeout: Option<Duration>,
    cache: Box<Mutex<Cache>>,
    /// Serialises the find-or-create of studio-wide custom fields across weddings.
    creating_fields: tokio::sync::Mutex<()>,
}

/// An API call that did not succeed: the outcome to report, or a 404 the caller may handle.
enum Fail {
    NotFound,
    Outcome(Outcome),
}

impl From<Outcome> for Fail {
    fn from(o: Outcome) -> Fail {
        Fail::Outcome(o)
    }
}

type Obj = Map<String, Value>;

fn ulid_like(s: &str) -> bool {
    s.len() == 26 && s.chars().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
}

impl Tave {
    pub fn from_config(config: &Value, credentials: &Credentials) -> Result<Tave, AdapterError> {
        let api_key = credentials.require(
            config,
            "api_key",
            "set config.api_key to a VSCO Workspace API key with Read/Write permission (Settings › API), e.g. {\"env\": \"TAVE_API_KEY\"}",
        )?;
        let text = |key: &str| -> Result<Option<&str>, AdapterError> {
            match config.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(AdapterError::config(key, "must be a string")),
            }
        };
        let base = text("base_url")?
            .unwrap_or(DEFAULT_BASE)
            .trim_end_matches('/')
            .to_owned();
        match reqwest::Url::parse(&base) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => {
                return Err(AdapterError::config(
                    "base_url",
                    "is not an http(s) URL: use https://workspace.vsco.co/api/v2 (the default) or a sandbox's …/tave/api/v2",
                ))
            }
        }
        let external_url = text("external_url")?.unwrap_or(DEFAULT_EXTERNAL_URL).to_owned();
        let sample = external_url.replace("{wedding_id}", "00000000-0000-0000-0000-000000000000");
        if !(12..=255).contains(&sample.chars().count()) || reqwest::Url::parse(&sample).is_err() {
            return Err(AdapterError::config(
                "external_url",
                "must be a URL of 12 to 255 characters once {wedding_id} is filled in (Tave's externalMappings url)",
            ));
        }
        let mut names = Names::default();
        match config.get("custom_fields") {
            None | Some(Value::Null) => {}
            Some(Value::Object(o)) => {
                for (k, v) in o {
                    let name = v
                        .as_str()
                        .filter(|s| !s.trim().is_empty() && s.chars().count() <= 255);
                    let Some(name) = name else {
                        return Err(AdapterError::config(
                            &format!("custom_fields.{k}"),
                            "must be a custom field name of 1 to 255 characters",
                        ));
                    };
                    let slot = match k.as_str() {
                        "adults" => &mut names.adults,
                        "children" => &mut names.children,
                        "infants" => &mut names.infants,
                        "dietary_notes" => &mut names.dietary_notes,
                        "dietary_prefix" => &mut names.dietary_prefix,
                        "budget_prefix" => &mut names.budget_prefix,
                        _ => {
                            return Err(AdapterError::config(
                                &format!("custom_fields.{k}"),
                                &format!("is not a known name: use one of {}", NAME_KEYS.join(", ")),
                            ))
                        }
                    };
                    *slot = name.to_owned();
                }
            }
            Some(_) => {
                return Err(AdapterError::config(
                    "custom_fields",
                    "must be an object of custom field names",
                ))
            }
        }
        let id = |key: &str| -> Result<Option<String>, AdapterError> {
            match text(key)? {
                None => Ok(None),
                Some(s) if ulid_like(s) => Ok(Some(s.to_owned())),
                Some(_) => Err(AdapterError::config(
                    key,
                    "must be a lowercase ULID (the id of the type in VSCO Workspace)",
                )),
            }
        };
        Ok(Tave {
            base,
            api_key,
            external_url,
            names: Box::new(names),
            job_type_id: id("job_type_id")?,
            event_type_id: id("event_type_id")?,
            timeout: config
                .get("timeout_ms")
                .and_then(Value::as_u64)
                .map(Duration::from_millis),
            cache: Box::default(),
            creating_fields: tokio::sync::Mutex::new(()),
        })
    }

    pub fn endpoint(&self) -> String {
        redact_url(&self.base)
    }

    pub async fn deliver(&self, client: &reqwest::Client, payload: &Payload, timeout: Duration) -> Outcome {
        let change = match Change::read(payload) {
            Ok(c) => c,
            Err(o) => return o,
        };
        if !FIELD_TYPES.contains(&change.field_type.as_str()) {
            return crm::reject(format!(
                "the tave adapter does not map field type {}: remove it from config.field_types",
                change.field_type
            ));
        }
        let call = Call {
            tave: self,
            client,
            timeout: self.timeout.unwrap_or(timeout),
        };
        match call.apply(&change).await {
            Ok(()) => Outcome::Delivered { status: 200 },
            Err(Fail::Outcome(o)) => o,
            Err(Fail::NotFound) => Outcome::Retry {
                status: Some(404),
                error: format!("{API} answered 404 for an entity that was just found; retrying"),
                after: None,
                endpoint_fault: false,
            },
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn external(&self, wedding_id: &str) -> String {
        self.external_url.replace("{wedding_id}", wedding_id)
    }
}

/// A hex digest prefix, for external mapping ids that would pass 64 characters.
fn short_hash(text: &str, chars: usize) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..chars]
        .to_owned()
}

/// The job's external mapping id: the wedding id (hashed past 64 characters).
pub fn job_mapping_id(wedding_id: &str) -> String {
    if (1..=64).contains(&wedding_id.len()) {
        wedding_id.to_owned()
    } else {
        format!("w-{}", short_hash(wedding_id, 40))
    }
}

/// The prefix of every other mapping id of a wedding: `<wedding>:` (hashed past 36 characters).
fn wedding_prefix(wedding_id: &str) -> String {
    if wedding_id.len() <= 36 {
        format!("{wedding_id}:")
    } else {
        format!("w-{}:", short_hash(wedding_id, 24))
    }
}

/// The venue link's external mapping id.
pub fn venue_mapping_id(wedding_id: &str) -> String {
    format!("{}venue", wedding_prefix(wedding_id))
}

fn timeline_prefix(wedding_id: &str) -> String {
    format!("{}tl:", wedding_prefix(wedding_id))
}

/// A timeline event's external mapping id: `<wedding>:tl:<item key>`, at most 64 characters.
pub fn event_mapping_id(wedding_id: &str, key: &str) -> String {
    let prefix = timeline_prefix(wedding_id);
    if prefix.len() + key.len() <= 64 {
        format!("{prefix}{key}")
    } else {
        format!("{prefix}#{}", short_hash(key, 63 - prefix.len()))
    }
}

/// Minor units to whole units of the currency (MoneyAmount's unit is an assumption, see above).
pub fn whole_units(minor: i64, currency: Option<&str>) -> i64 {
    const ZERO: &[&str] = &[
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV",
        "XAF", "XOF", "XPF",
    ];
    const THREE: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
    let code = currency.unwrap_or("GBP").to_ascii_uppercase();
    let scale: i64 = if ZERO.contains(&code.as_str()) {
        1
    } else if THREE.contains(&code.as_str()) {
        1000
    } else {
        100
    };
    let half = scale / 2;
    if minor >= 0 {
        (minor + half) / scale
    } else {
        -((-minor + half) / scale)
    }
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn without(v: &Value, read_only: &[&str]) -> Obj {
    let mut o = v.as_object().cloned().unwrap_or_default();
    for k in read_only {
        o.remove(*k);
    }
    o
}

fn mapping_ids(v: &Value) -> impl Iterator<Item = &str> {
    v["externalMappings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str())
}

/// One delivery's calls.
struct Call<'a> {
    tave: &'a Tave,
    client: &'a reqwest::Client,
    timeout: Duration,
}

impl Call<'_> {
    /// One request; 2xx gives the JSON body (`Null` for 204), 404 gives `Fail::NotFound`, every
    /// other answer its outcome. `what` names the operation in messages (no ids, no values).
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value, Fail> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.tave.base))
            .header("x-api-key", self.tave.api_key.expose())
            .header("accept", "application/json");
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(b) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(b).expect("json values serialize"));
        }
        let answer = crm::exchange(request, self.timeout).await?;
        match answer.status.as_u16() {
            204 => Ok(Value::Null),
            200..=299 => {
                let v: Value = answer.json(API)?;
                if v.is_object() {
                    Ok(v)
                } else {
                    Err(not_documented(&answer, what))
                }
            }
            404 => Err(Fail::NotFound),
            _ => Err(Fail::Outcome(classify(&answer, what))),
        }
    }

    async fn get(&self, path: &str, query: &[(&str, String)], what: &str) -> Result<Value, Fail> {
        self.send(Method::GET, path, query, None, what).await
    }

    /// Every item of a collection, page by page (page parameters only past the first page).
    async fn list_all(&self, path: &str, query: &[(&str, String)], what: &str) -> Result<Vec<Value>, Fail> {
        let mut items = Vec::new();
        let mut page = 1u64;
        loop {
            let mut q = query.to_vec();
            if page > 1 {
                q.push(("page", page.to_string()));
                q.push(("pageSize", "100".to_owned()));
            }
            let answer = self.get(path, &q, what).await?;
            let Some(batch) = answer["items"].as_array() else {
                return Err(Fail::Outcome(shape_error(what)));
            };
            items.extend(batch.iter().cloned());
            let pages = answer["meta"]["totalPages"].as_u64().unwrap_or(1);
            if page >= pages || batch.is_empty() || page >= 1000 {
                return Ok(items);
            }
            page += 1;
        }
    }

    async fn apply(&self, change: &Change) -> Result<(), Fail> {
        let job = self.job(change).await?;
        let job_id = job["id"].as_str().unwrap_or_default().to_owned();
        match change.field_type.as_str() {
            "venue_selector" => self.venue(change, &job).await,
            "timeline_builder" => self.timeline(change, &job_id).await,
            _ => match self.update_job(change, job).await {
                Err(Fail::Outcome(Outcome::Reject {
                    status: Some(400),
                    error,
                })) if error.contains("customFields") => {
                    // a custom field deleted in Tave since it was cached: forget them, once
                    {
                        let mut cache = self.tave.cache();
                        cache.field_ids.clear();
                        cache.field_names.clear();
                    }
                    let job = self.job(change).await?;
                    self.update_job(change, job).await
                }
                other => other,
            },
        }
    }

    /// Read-merge-write of the job properties and custom fields the change maps to.
    async fn update_job(&self, change: &Change, mut job: Value) -> Result<(), Fail> {
        let job_id = job["id"].as_str().unwrap_or_default().to_owned();
        let before = job.clone();
        self.job_fields(change, &mut job).await?;
        if change.field_type == "wedding_date" {
            // the timeline's events move with the date (also on a replay, in case the
            // job was written and the delivery died before the events were)
            let date = job["eventDate"].as_str().and_then(|d| d.parse().ok());
            if let Some(date) = date {
                self.redate_timeline(&change.wedding.id, &job_id, date).await?;
            }
        }
        if job == before {
            return Ok(());
        }
        let body = Value::Object(without(&job, JOB_READ_ONLY));
        match self
            .send(
                Method::PUT,
                &format!("/job/{job_id}"),
                &[],
                Some(&body),
                "PUT /job/{id}",
            )
            .await
        {
            Err(Fail::NotFound) => {
                self.tave.cache().jobs.remove(&change.wedding.id);
                Err(Fail::Outcome(Outcome::Retry {
                    status: Some(404),
                    error: format!("{API} no longer has the wedding's job; looking it up again"),
                    after: None,
                    endpoint_fault: false,
                }))
            }
            other => other.map(|_| ()),
        }
    }

    /// The wedding's job: cached id, else `externalMappingId` lookup, else a new worksheet.
    async fn job(&self, change: &Change) -> Result<Value, Fail> {
        let wedding = &change.wedding.id;
        let cached = self.tave.cache().jobs.get(wedding).cloned();
        if let Some(id) = cached {
            match self.get(&format!("/job/{id}"), &[], "GET /job/{id}").await {
                Ok(job) => return Ok(job),
                Err(Fail::NotFound) => {
                    self.tave.cache().jobs.remove(wedding);
                }
                Err(e) => return Err(e),
            }
        }
        let query = [
            ("externalMappingId", job_mapping_id(wedding)),
            ("includeClosed", "true".to_owned()),
            ("sortBy", "created".to_owned()),
        ];
        let found = self.list_all("/job", &query, "GET /job").await?;
        let job = match found.into_iter().next() {
            // the entity itself, not its list form, is what is merged and written back
            Some(listed) => {
                let id = listed["id"].as_str().unwrap_or_default();
                match self.get(&format!("/job/{id}"), &[], "GET /job/{id}").await {
                    Err(Fail::NotFound) => {
                        return Err(Fail::Outcome(Outcome::Retry {
                            status: Some(404),
                            error: format!(
                            "{API} listed the wedding's job but it was gone when read; looking it up again"
                        ),
                            after: None,
                            endpoint_fault: false,
                        }))
                    }
                    other => other?,
                }
            }
            None => self.create_job(change).await?,
        };
        if let Some(id) = job["id"].as_str() {
            self.tave.cache().jobs.insert(wedding.clone(), id.to_owned());
        }
        Ok(job)
    }

    async fn create_job(&self, change: &Change) -> Result<Value, Fail> {
        let w = &change.wedding;
        let url = self.tave.external(&w.id);
        let name = w
            .couple_names
            .as_deref()
            .map(|n| truncate(n.trim(), 255))
            .filter(|n| !n.is_empty());
        let mut body = json!({
            "name": name.unwrap_or_else(|| "Wedding".to_owned()),
            "eventDate": crm::wedding_date(w).map(|d| d.to_string()),
            "externalMappings": [{"id": job_mapping_id(&w.id), "url": url}],
            "events": [],
            "contacts": [],
        });
        if let Some(t) = &self.tave.job_type_id {
            body["jobTypeId"] = json!(t);
        }
        let venue = match (change.field_type.as_str(), &change.value) {
            ("venue_selector", v) => v.clone(),
            _ => w.venue.clone(),
        };
        if let Some(contact) = venue.as_ref().and_then(|v| self.venue_contact(v, &w.id)) {
            body["contacts"] = json!([{
                "contact": contact,
                "client": false,
                "externalMappings": [{"id": venue_mapping_id(&w.id), "url": url}],
            }]);
        }
        let made = self
            .send(
                Method::POST,
                "/job/-/worksheet",
                &[],
                Some(&body),
                "POST /job/-/worksheet",
            )
            .await;
        let mut job = match made {
            Err(Fail::NotFound) => return Err(Fail::Outcome(shape_error("POST /job/-/worksheet"))),
            other => other?,
        };
        if !job["id"].is_string() {
            return Err(Fail::Outcome(shape_error("POST /job/-/worksheet")));
        }
        if let Some(o) = job.as_object_mut() {
            o.remove("events");
            o.remove("contacts");
        }
        tracing::info!(api = API, "created the wedding's job");
        Ok(job)
    }

    /// Sets the job properties and custom fields the change maps to.
    async fn job_fields(&self, change: &Change, job: &mut Value) -> Result<(), Fail> {
        let names = &self.tave.names;
        let mut values: BTreeMap<String, Option<String>> = BTreeMap::new();
        let v = change.value.as_ref().filter(|v| !v.is_null());
        match change.field_type.as_str() {
            "wedding_date" => {
                let date = change.date().map(str::to_owned);
                job["eventDate"] = json!(date);
            }
            "guest_count_matrix" => {
                job["guestCount"] = json!(v.and_then(|v| v["total"].as_i64()));
                for (key, name) in [
                    ("adults", &names.adults),
                    ("children", &names.children),
                    ("infants", &names.infants),
                ] {
                    values.insert(
                        name.clone(),
                        v.and_then(|v| v[key].as_i64()).map(|n| n.to_string()),
                    );
                }
            }
            "dietary_matrix" => {
                let prefix = &names.dietary_prefix;
                // clear requirements no longer listed, and everything on delete
                for name in self.job_field_names(job).await? {
                    if name.starts_with(prefix.as_str()) && name != names.dietary_notes {
                        values.insert(name, None);
                    }
                }
                if let Some(counts) = v.and_then(|v| v["counts"].as_object()) {
                    for (k, n) in counts {
                        values.insert(
                            truncate(&format!("{prefix}{k}"), 255),
                            n.as_i64().map(|n| n.to_string()),
                        );
                    }
                }
                values.insert(
                    names.dietary_notes.clone(),
                    v.and_then(|v| v["notes"].as_str()).map(str::to_owned),
                );
            }
            "budget_category" => {
                let key = (change.wedding.id.clone(), change.field_id.clone());
                let category = match v.and_then(|v| v["category"].as_str()) {
                    Some(c) => Some(c.to_owned()),
                    None => old_category(change.old_value.as_ref())
                        .or_else(|| self.tave.cache().budget_categories.get(&key).cloned()),
                };
                let Some(category) = category else {
                    return Err(Fail::Outcome(crm::reject(
                        "the deleted budget_category names no category (no old value): clear it in VSCO Workspace by hand".to_owned(),
                    )));
                };
                self.tave.cache().budget_categories.insert(key, category.clone());
                let amount = v
                    .and_then(|v| v["budgeted_amount"].as_i64())
                    .map(|m| whole_units(m, v.and_then(|v| v["currency"].as_str())).to_string());
                let name = truncate(&format!("{}{category}", names.budget_prefix), 255);
                values.insert(name, amount);
            }
            _ => {}
        }
        if values.is_empty() {
            return Ok(());
        }
        let mut current: Vec<Value> = job["customFields"].as_array().cloned().unwrap_or_default();
        for (name, value) in values {
            let kind = if name.starts_with(&names.budget_prefix) {
                "Money"
            } else if name == names.dietary_notes {
                "TextBox"
            } else {
                "Number"
            };
            let Some(id) = self.field_id(&name, kind, value.is_some()).await? else {
                continue; // nothing to clear
            };
            let slot = current.iter_mut().find(|f| f["fieldId"] == id.as_str());
            match slot {
                Some(f) if f["value"].as_str() == value.as_deref() => {}
                Some(f) => f["value"] = json!(value),
                None if value.is_none() => {}
                None => current.push(json!({"fieldId": id, "value": value})),
            }
        }
        // strip read-only parts of each value (id, created, modified, hidden)
        let current: Vec<Value> = current
            .into_iter()
            .map(|f| json!({"fieldId": f["fieldId"], "value": f["value"]}))
            .collect();
        job["customFields"] = Value::Array(current);
        if change.field_type == "budget_category" {
            self.know_fields_of(job).await?;
            let sum = self.budget_sum(job);
            job["leadMaxBudget"] = json!(sum);
        }
        Ok(())
    }

    /// The sum of the job's budget custom fields (whole units); `None` when there is none.
    fn budget_sum(&self, job: &Value) -> Option<i64> {
        let cache = self.tave.cache();
        let prefix = &self.tave.names.budget_prefix;
        let amounts: Vec<i64> = job["customFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| {
                f["fieldId"]
                    .as_str()
                    .and_then(|id| cache.field_names.get(id))
                    .is_some_and(|n| n.starts_with(prefix.as_str()))
            })
            .filter_map(|f| f["value"].as_str()?.trim().parse::<i64>().ok())
            .collect();
        (!amounts.is_empty()).then(|| amounts.iter().sum())
    }

    /// Names of the custom fields the job has values for.
    async fn job_field_names(&self, job: &Value) -> Result<Vec<String>, Fail> {
        self.know_fields_of(job).await?;
        let cache = self.tave.cache();
        Ok(job["customFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| cache.field_names.get(f["fieldId"].as_str()?).cloned())
            .collect())
    }

    /// Loads the custom field list when the job has a value of a field the cache does not know.
    async fn know_fields_of(&self, job: &Value) -> Result<(), Fail> {
        let unknown = {
            let cache = self.tave.cache();
            job["customFields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["fieldId"].as_str())
                .any(|id| !cache.field_names.contains_key(id))
        };
        self.load_fields(unknown).await
    }

    /// Refreshes the job custom field cache (when empty, or when `force`).
    async fn load_fields(&self, force: bool) -> Result<(), Fail> {
        if !force && !self.tave.cache().field_names.is_empty() {
            return Ok(());
        }
        let fields = self
            .list_all(
                "/custom-field",
                &[("canApplyTo", "job".to_owned())],
                "GET /custom-field",
            )
            .await?;
        let mut cache = self.tave.cache();
        cache.field_ids.clear();
        cache.field_names.clear();
        // oldest first (ids are ULIDs): when a name repeats, the oldest wins
        let mut fields: Vec<&Value> = fields.iter().filter(|f| f["canApplyTo"] == "Job").collect();
        fields.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        for f in fields {
            if let (Some(id), Some(name)) = (f["id"].as_str(), f["name"].as_str()) {
                cache.field_names.insert(id.to_owned(), name.to_owned());
                cache
                    .field_ids
                    .entry(name.to_owned())
                    .or_insert_with(|| id.to_owned());
            }
        }
        Ok(())
    }

    /// The id of the job custom field `name`, created when missing and `create` is set.
    async fn field_id(&self, name: &str, kind: &str, create: bool) -> Result<Option<String>, Fail> {
        if let Some(id) = self.tave.cache().field_ids.get(name) {
            return Ok(Some(id.clone()));
        }
        let _one_at_a_time = self.tave.creating_fields.lock().await;
        self.load_fields(true).await?;
        if let Some(id) = self.tave.cache().field_ids.get(name) {
            return Ok(Some(id.clone()));
        }
        if !create {
            return Ok(None);
        }
        let body = json!({"name": name, "kind": kind, "canApplyTo": "Job", "clientAccess": "None"});
        let made = self
            .send(
                Method::POST,
                "/custom-field",
                &[],
                Some(&body),
                "POST /custom-field",
            )
            .await;
        let made = match made {
            Err(Fail::NotFound) => return Err(Fail::Outcome(shape_error("POST /custom-field"))),
            other => other?,
        };
        let Some(id) = made["id"].as_str() else {
            return Err(Fail::Outcome(shape_error("POST /custom-field")));
        };
        let mut cache = self.tave.cache();
        cache.field_ids.insert(name.to_owned(), id.to_owned());
        cache.field_names.insert(id.to_owned(), name.to_owned());
        Ok(Some(id.to_owned()))
    }

    /// A location contact for a normalised venue (`None` without a name).
    fn venue_contact(&self, venue: &Value, wedding_id: &str) -> Option<Value> {
        let name = venue["name"]
            .as_str()
            .map(|n| truncate(n.trim(), 255))
            .filter(|n| !n.is_empty())?;
        let mut c = json!({
            "kind": "location",
            "name": name,
            "address": venue["formatted_address"].as_str().map(|a| json!({"streetAddress": truncate(a, 512)})),
            "url": venue["website"].as_str().filter(|u| reqwest::Url::parse(u).is_ok()),
            "externalMappings": [{"id": venue_mapping_id(wedding_id), "url": self.tave.external(wedding_id)}],
        });
        c["phone"] = Value::Null;
        if let Some(e164) = venue["phone"]
            .as_str()
            .or(venue["phone_number"].as_str())
            .and_then(e164)
        {
            c["phone"] = json!({"e164": e164});
        }
        Some(c)
    }

    /// `venue_selector`: the job's location contact, found by its link's external mapping.
    async fn venue(&self, change: &Change, job: &Value) -> Result<(), Fail> {
        let wedding = &change.wedding.id;
        let job_id = job["id"].as_str().unwrap_or_default().to_owned();
        let key = venue_mapping_id(wedding);
        let links = self
            .list_all(
                "/job-contact",
                &[("externalMappingId", key.clone()), ("jobId", job_id.clone())],
                "GET /job-contact",
            )
            .await?;
        let link = links.into_iter().next();
        let contact_id = link
            .as_ref()
            .and_then(|l| l["contactId"].as_str())
            .map(str::to_owned);
        let desired = change
            .value
            .as_ref()
            .filter(|v| !v.is_null())
            .and_then(|v| self.venue_contact(v, wedding));
        let Some(desired) = desired else {
            // cleared: the contact first, then its link (either may be gone already)
            if let Some(cid) = &contact_id {
                self.delete(&format!("/address-book/{cid}"), "DELETE /address-book/{id}")
                    .await?;
            }
            if let Some(lid) = link.as_ref().and_then(|l| l["id"].as_str()) {
                self.delete(&format!("/job-contact/{lid}"), "DELETE /job-contact/{id}")
                    .await?;
            }
            return Ok(());
        };
        if let Some(cid) = &contact_id {
            match self
                .get(&format!("/address-book/{cid}"), &[], "GET /address-book/{id}")
                .await
            {
                Ok(current) => return self.update_contact(&current, &desired).await,
                Err(Fail::NotFound) => {
                    // a link to a contact deleted by hand: drop it and link a new one
                    if let Some(lid) = link.as_ref().and_then(|l| l["id"].as_str()) {
                        self.delete(&format!("/job-contact/{lid}"), "DELETE /job-contact/{id}")
                            .await?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let contact = match self.orphan_contact(&key, job).await? {
            Some(orphan) => {
                self.update_contact(&orphan, &desired).await?;
                orphan
            }
            None => match self
                .send(
                    Method::POST,
                    "/address-book",
                    &[],
                    Some(&desired),
                    "POST /address-book",
                )
                .await
            {
                Err(Fail::NotFound) => return Err(Fail::Outcome(shape_error("POST /address-book"))),
                other => other?,
            },
        };
        let Some(cid) = contact["id"].as_str() else {
            return Err(Fail::Outcome(shape_error("POST /address-book")));
        };
        let body = json!({
            "jobId": job_id,
            "contactId": cid,
            "client": false,
            "externalMappings": [{"id": key, "url": self.tave.external(wedding)}],
        });
        match self
            .send(
                Method::POST,
                "/job-contact",
                &[],
                Some(&body),
                "POST /job-contact",
            )
            .await
        {
            Err(Fail::NotFound) => Err(Fail::Outcome(shape_error("POST /job-contact"))),
            other => other.map(|_| ()),
        }
    }

    /// A venue contact of this wedding that was created but never linked (a delivery that died
    /// between the two requests): the address book has no external-mapping filter, so it is
    /// paged newest first, down to the job's creation.
    async fn orphan_contact(&self, key: &str, job: &Value) -> Result<Option<Value>, Fail> {
        let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok();
        let since = time(&job["created"]);
        let mut page = 1u64;
        loop {
            let mut q = vec![("sortBy", "created desc".to_owned())];
            if page > 1 {
                q.push(("page", page.to_string()));
                q.push(("pageSize", "100".to_owned()));
            }
            let answer = self.get("/address-book", &q, "GET /address-book").await?;
            let Some(items) = answer["items"].as_array() else {
                return Err(Fail::Outcome(shape_error("GET /address-book")));
            };
            for c in items {
                if mapping_ids(c).any(|id| id == key) {
                    return Ok(Some(c.clone()));
                }
                if let (Some(at), Some(since)) = (time(&c["created"]), since) {
                    if at < since {
                        return Ok(None);
                    }
                }
            }
            let pages = answer["meta"]["totalPages"].as_u64().unwrap_or(1);
            if page >= pages || items.is_empty() || page >= 1000 {
                return Ok(None);
            }
            page += 1;
        }
    }

    async fn update_contact(&self, current: &Value, desired: &Value) -> Result<(), Fail> {
        let mut merged = without(current, CONTACT_READ_ONLY);
        let mut changed = false;
        for (k, v) in desired.as_object().into_iter().flatten() {
            if k == "externalMappings" {
                continue; // immutable once set; keep what is there
            }
            let same = match (k.as_str(), merged.get(k)) {
                ("address" | "phone", Some(have)) if v.is_object() => v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .all(|(ak, av)| have[ak.as_str()] == *av),
                (_, have) => have.unwrap_or(&Value::Null) == v,
            };
            if !same {
                changed = true;
                merged.insert(k.clone(), v.clone());
            }
        }
        if !changed {
            return Ok(());
        }
        if let Some(Value::Object(a)) = merged.get_mut("address") {
            for k in [
                "links",
                "id",
                "created",
                "modified",
                "hidden",
                "name",
                "latitude",
                "longitude",
                "googlePlaceId",
                "timezone",
            ] {
                a.remove(k);
            }
        }
        let id = current["id"].as_str().unwrap_or_default();
        self.send(
            Method::PUT,
            &format!("/address-book/{id}"),
            &[],
            Some(&Value::Object(merged)),
            "PUT /address-book/{id}",
        )
        .await
        .map(|_| ())
    }

    async fn delete(&self, path: &str, what: &str) -> Result<(), Fail> {
        match self.send(Method::DELETE, path, &[], None, what).await {
            Ok(_) | Err(Fail::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves the wedding's timeline events to `date`, keeping their times and lengths (every
    /// timeline item starts on the wedding date; one may end the next day).
    async fn redate_timeline(
        &self,
        wedding_id: &str,
        job_id: &str,
        date: chrono::NaiveDate,
    ) -> Result<(), Fail> {
        let prefix = timeline_prefix(wedding_id);
        let events = self
            .list_all("/event", &[("jobId", job_id.to_owned())], "GET /event")
            .await?;
        let day = |v: &Value| v.as_str().and_then(|d| d.parse::<chrono::NaiveDate>().ok());
        for e in events {
            if !mapping_ids(&e).any(|id| id.starts_with(&prefix)) {
                continue;
            }
            let (Some(start), end) = (day(&e["startDate"]), day(&e["endDate"])) else {
                continue;
            };
            if start == date {
                continue;
            }
            let mut merged = without(&e, EVENT_READ_ONLY);
            merged.insert("startDate".into(), json!(date.to_string()));
            if let Some(end) = end {
                merged.insert("endDate".into(), json!((date + (end - start)).to_string()));
            }
            let id = e["id"].as_str().unwrap_or_default();
            self.send(
                Method::PUT,
                &format!("/event/{id}"),
                &[],
                Some(&Value::Object(merged)),
                "PUT /event/{id}",
            )
            .await?;
        }
        Ok(())
    }

    /// `timeline_builder`: the job's events mirror the timeline items.
    async fn timeline(&self, change: &Change, job_id: &str) -> Result<(), Fail> {
        let w = &change.wedding;
        let items = match change.value.as_ref().filter(|v| !v.is_null()) {
            None => Vec::new(),
            Some(value) => {
                let Some(date) = crm::wedding_date(w) else {
                    return Err(Fail::Outcome(crm::reject(
                        "the wedding has no date, so its timeline cannot be placed: set the wedding date and the timeline is sent again with its next change".to_owned(),
                    )));
                };
                crm::timeline_items(value, date)
            }
        };
        let prefix = timeline_prefix(&w.id);
        let existing = self
            .list_all("/event", &[("jobId", job_id.to_owned())], "GET /event")
            .await?;
        let mut ours: HashMap<String, Vec<Value>> = HashMap::new();
        for e in existing {
            let id = mapping_ids(&e)
                .find(|id| id.starts_with(&prefix))
                .map(str::to_owned);
            if let Some(id) = id {
                ours.entry(id).or_default().push(e);
            }
        }
        let url = self.tave.external(&w.id);
        for item in &items {
            let mapping = event_mapping_id(&w.id, &item.key);
            let mut fields = json!({
                "jobId": job_id,
                "name": truncate(&item.title, 255),
                "startDate": item.start.date().to_string(),
                "startTime": item.start.time().format("%H:%M:%S").to_string(),
                "endDate": item.end.date().to_string(),
                "endTime": item.end.time().format("%H:%M:%S").to_string(),
                "allDay": false,
                "timezoneName": w.timezone,
                "descriptionHtml": item.description.as_deref().map(escape_html),
            });
            if let Some(t) = &self.tave.event_type_id {
                fields["typeId"] = json!(t);
            }
            match ours.remove(&mapping).map(|mut found| {
                found.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
                let first = found.remove(0);
                (first, found)
            }) {
                Some((current, duplicates)) => {
                    for d in duplicates {
                        let id = d["id"].as_str().unwrap_or_default();
                        self.delete(&format!("/event/{id}"), "DELETE /event/{id}").await?;
                    }
                    let mut merged = without(&current, EVENT_READ_ONLY);
                    let mut changed = false;
                    for (k, v) in fields.as_object().into_iter().flatten() {
                        if merged.get(k).unwrap_or(&Value::Null) != v {
                            merged.insert(k.clone(), v.clone());
                            changed = true;
                        }
                    }
                    if changed {
                        let id = current["id"].as_str().unwrap_or_default();
                        self.send(
                            Method::PUT,
                            &format!("/event/{id}"),
                            &[],
                            Some(&Value::Object(merged)),
                            "PUT /event/{id}",
                        )
                        .await?;
                    }
                }
                None => {
                    fields["externalMappings"] = json!([{"id": mapping, "url": url}]);
                    match self
                        .send(Method::POST, "/event", &[], Some(&fields), "POST /event")
                        .await
                    {
                        Err(Fail::NotFound) => return Err(Fail::Outcome(shape_error("POST /event"))),
                        other => other?,
                    };
                }
            }
        }
        for gone in ours.into_values().flatten() {
            let id = gone["id"].as_str().unwrap_or_default();
            self.delete(&format!("/event/{id}"), "DELETE /event/{id}").await?;
        }
        Ok(())
    }
}

/// The category of a deleted budget field, from the event's old value (the app's JSON, or the
/// JSON text of a text column).
fn old_category(old: Option<&Value>) -> Option<String> {
    let old = match old? {
        Value::String(s) => serde_json::from_str::<Value>(s).ok()?,
        other => other.clone(),
    };
    old["category"]
        .as_str()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
}

/// An E.164 number from a written phone number, when it is one.
fn e164(text: &str) -> Option<String> {
    let digits: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
        .collect();
    let rest = digits.strip_prefix('+')?;
    let ok =
        (2..=15).contains(&rest.len()) && rest.chars().all(|c| c.is_ascii_digit()) && !rest.starts_with('0');
    ok.then_some(digits)
}

fn shape_error(what: &str) -> Outcome {
    Outcome::Retry {
        status: None,
        error: format!("{API} answered {what} without the documented fields"),
        after: None,
        endpoint_fault: true,
    }
}

fn not_documented(answer: &Answer, what: &str) -> Fail {
    Fail::Outcome(Outcome::Retry {
        status: Some(answer.status.as_u16()),
        error: format!(
            "{API} answered {what} {} with a body that is not the documented JSON object",
            answer.status
        ),
        after: None,
        endpoint_fault: true,
    })
}

/// A failed answer: 429 waits, 401/403 disable until the key is fixed, 400 is a dead letter
/// naming the fields and the API's messages, 5xx retries, other statuses are dead letters.
fn classify(answer: &Answer, what: &str) -> Outcome {
    let status = answer.status;
    let code = status.as_u16();
    match status {
        StatusCode::TOO_MANY_REQUESTS => crm::rate_limited(API, answer, None),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Outcome::Disable {
            status: code,
            error: format!(
                "{API} refused the API key ({code}, \"API key is missing or invalid\"): fix config.api_key (a Read/Write key from Settings › API); the integration is held until its config changes"
            ),
        },
        StatusCode::BAD_REQUEST => {
            let body: Option<Value> = serde_json::from_slice(&answer.body).ok();
            let fields = body
                .as_ref()
                .filter(|b| b["type"] == "validation-error")
                .and_then(|b| b["detail"].as_object())
                .map(|d| {
                    d.iter()
                        .map(|(k, v)| {
                            let message = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
                            format!("{}: {}", truncate(k, 100), truncate(&message, 200))
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                });
            Outcome::Reject {
                status: Some(code),
                error: match fields {
                    Some(f) if !f.is_empty() => format!("{API} rejected {what} (400 validation-error): {f}"),
                    _ => format!("{API} rejected {what} (400)"),
                },
            }
        }
        s if s.is_server_error() => crm::server_error(API, answer),
        _ => Outcome::Reject {
            status: Some(code),
            error: format!("{API} answered {what} with {status}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tave(config: Value) -> Result<Tave, AdapterError> {
        Tave::from_config(&config, &Credentials::default())
    }

    #[test]
    fn tave_config_errors_name_the_key_and_never_the_secret() {
        let cases = [
            (json!({}), "api_key"),
            (
                json!({"api_key": "k-secret-1", "base_url": "ftp://x"}),
                "base_url",
            ),
            (
                json!({"api_key": "k-secret-1", "external_url": "x"}),
                "external_url",
            ),
            (
                json!({"api_key": "k-secret-1", "custom_fields": {"adultz": "A"}}),
                "custom_fields.adultz",
            ),
            (
                json!({"api_key": "k-secret-1", "custom_fields": {"adults": ""}}),
                "custom_fields.adults",
            ),
            (
                json!({"api_key": "k-secret-1", "job_type_id": "NOT-A-ULID"}),
                "job_type_id",
            ),
        ];
        for (config, key) in cases {
            let e = tave(config.clone()).err().expect("rejected").to_string();
            assert!(e.contains(key), "{config}: {e}");
            assert!(!e.contains("k-secret-1"), "{e}");
        }
        let t = tave(json!({"api_key": "k", "base_url": "http://127.0.0.1:1/tave/api/v2/"})).unwrap();
        assert_eq!(t.endpoint(), "http://127.0.0.1:1/tave/api/v2");
    }

    #[test]
    fn tave_mapping_ids_fit_64_characters_and_stay_stable() {
        let w = "7d3c3a52-8f0e-4c1e-9a57-6c1f4f4b8f02";
        assert_eq!(job_mapping_id(w), w);
        assert_eq!(venue_mapping_id(w), format!("{w}:venue"));
        assert_eq!(event_mapping_id(w, "ceremony"), format!("{w}:tl:ceremony"));
        let long = "a-very-long-timeline-item-title-that-goes-on-and-on";
        let id = event_mapping_id(w, long);
        assert!(id.len() <= 64 && id.starts_with(&format!("{w}:tl:#")), "{id}");
        assert_eq!(id, event_mapping_id(w, long));
        assert_ne!(id, event_mapping_id(w, &format!("{long}-2")));
        let huge = "w".repeat(100);
        assert!(job_mapping_id(&huge).len() <= 64);
        assert!(event_mapping_id(&huge, long).len() <= 64);
    }

    #[test]
    fn tave_money_is_whole_units_of_the_currency() {
        assert_eq!(whole_units(250_000, Some("GBP")), 2500);
        assert_eq!(whole_units(250_050, None), 2501);
        assert_eq!(whole_units(-150, Some("usd")), -2);
        assert_eq!(whole_units(5000, Some("JPY")), 5000);
        assert_eq!(whole_units(1500, Some("KWD")), 2);
    }

    #[test]
    fn tave_phone_numbers_pass_only_as_e164() {
        assert_eq!(e164("+44 20 8332 5655").as_deref(), Some("+442083325655"));
        assert_eq!(e164("020 8332 5655"), None);
        assert_eq!(escape_html("a<b>&c"), "a&lt;b&gt;&amp;c");
    }

    #[test]
    fn tave_validation_errors_keep_field_names_and_messages() {
        let answer = Answer {
            status: StatusCode::BAD_REQUEST,
            headers: Default::default(),
            body: bytes::Bytes::from_static(
                br#"{"type":"validation-error","title":"Validation Error","detail":{"name":"must be at most 255 characters"},"status":400}"#,
            ),
        };
        match classify(&answer, "PUT /job/{id}") {
            Outcome::Reject {
                status: Some(400),
                error,
            } => {
                assert!(error.contains("name: must be at most 255 characters"), "{error}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tave_deleted_budget_reads_the_category_from_the_old_value() {
        let old = json!({"category": " Flowers ", "budgeted_amount": 100});
        assert_eq!(old_category(Some(&old)).as_deref(), Some("Flowers"));
        let text = json!(r#"{"category": "Cake"}"#);
        assert_eq!(old_category(Some(&text)).as_deref(), Some("Cake"));
        assert_eq!(old_category(None), None);
    }
}
