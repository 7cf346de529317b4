//! The wedding's job: found by external mapping or created as a worksheet, then written
//! read-merge-write.

use serde_json::{json, Value};

use super::api::{without, Call};
use super::external_ids::{job_mapping_id, venue_mapping_id};
use super::{shape_error, truncate, vanished, Fail, API};
use crate::adapters::crm::{self, Change};
use crate::adapters::outcome::Outcome;

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

impl Call<'_> {
    pub(super) async fn apply(&self, change: &Change) -> Result<(), Fail> {
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
        let body = without(&job, JOB_READ_ONLY);
        match self.put(&format!("/job/{job_id}"), body, "PUT /job/{id}").await {
            Err(Fail::NotFound) => {
                self.tave.cache().jobs.remove(&change.wedding.id);
                Err(Fail::Outcome(vanished(
                    "no longer has the wedding's job; looking it up again",
                )))
            }
            other => other.map(|_| ()),
        }
    }

    /// The wedding's job: cached id, else `externalMappingId` lookup, else a new worksheet.
    pub(super) async fn job(&self, change: &Change) -> Result<Value, Fail> {
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
                        return Err(Fail::Outcome(vanished(
                            "listed the wedding's job but it was gone when read; looking it up again",
                        )))
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
        let mut job = self
            .post("/job/-/worksheet", &body, "POST /job/-/worksheet")
            .await?;
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
}
