//! `timeline_builder`: one event per timeline item, mirrored, and moved with the wedding date.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::api::{without, Call};
use super::external_ids::{event_mapping_id, mapping_ids, timeline_prefix};
use super::{truncate, Fail};
use crate::adapters::crm::{self, Change};

const EVENT_READ_ONLY: &[&str] = &[
    "links", "id", "created", "modified", "hidden", "startUtc", "endUtc", "readOnly",
];

impl Call<'_> {
    /// Moves the wedding's timeline events to `date`, keeping their times and lengths (every
    /// timeline item starts on the wedding date; one may end the next day).
    pub(super) async fn redate_timeline(
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
            self.put(&format!("/event/{id}"), merged, "PUT /event/{id}")
                .await?;
        }
        Ok(())
    }

    /// `timeline_builder`: the job's events mirror the timeline items.
    pub(super) async fn timeline(&self, change: &Change, job_id: &str) -> Result<(), Fail> {
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
                        self.put(&format!("/event/{id}"), merged, "PUT /event/{id}")
                            .await?;
                    }
                }
                None => {
                    fields["externalMappings"] = json!([{"id": mapping, "url": url}]);
                    self.post("/event", &fields, "POST /event").await?;
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

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tave_event_descriptions_are_escaped_html() {
        assert_eq!(escape_html("a<b>&c"), "a&lt;b&gt;&amp;c");
    }
}
