//! `venue_selector`: the wedding's venue as a location contact linked to the job.

use serde_json::{json, Value};

use super::api::{without, Call};
use super::external_ids::{mapping_ids, venue_mapping_id};
use super::{shape_error, truncate, Fail};
use crate::adapters::crm::Change;

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

impl Call<'_> {
    /// A location contact for a normalised venue (`None` without a name).
    pub(super) fn venue_contact(&self, venue: &Value, wedding_id: &str) -> Option<Value> {
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
    pub(super) async fn venue(&self, change: &Change, job: &Value) -> Result<(), Fail> {
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
            None => self.post("/address-book", &desired, "POST /address-book").await?,
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
        self.post("/job-contact", &body, "POST /job-contact")
            .await
            .map(|_| ())
    }

    /// A venue contact of this wedding that was created but never linked (a delivery that died
    /// between the two requests): the address book has no external-mapping filter, so it is
    /// paged newest first, down to the job's creation.
    async fn orphan_contact(&self, key: &str, job: &Value) -> Result<Option<Value>, Fail> {
        let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok();
        let since = time(&job["created"]);
        let newest_first = [("sortBy", "created desc".to_owned())];
        let mut page = 1u64;
        loop {
            let (items, last) = self
                .page("/address-book", &newest_first, page, "GET /address-book")
                .await?;
            for c in items {
                if mapping_ids(&c).any(|id| id == key) {
                    return Ok(Some(c));
                }
                if let (Some(at), Some(since)) = (time(&c["created"]), since) {
                    if at < since {
                        return Ok(None);
                    }
                }
            }
            if last {
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
        self.put(&format!("/address-book/{id}"), merged, "PUT /address-book/{id}")
            .await
            .map(|_| ())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tave_phone_numbers_pass_only_as_e164() {
        assert_eq!(e164("+44 20 8332 5655").as_deref(), Some("+442083325655"));
        assert_eq!(e164("020 8332 5655"), None);
    }
}
