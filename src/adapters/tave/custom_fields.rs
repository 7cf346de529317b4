//! Studio-wide job custom fields: their configured names, and the cache of ids found by name
//! (created when missing, one at a time).

use serde::Deserialize;
use serde_json::{json, Value};

use super::api::Call;
use super::{shape_error, Fail};
use crate::adapters::AdapterError;

/// Config `custom_fields`: the names to use instead of the defaults.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CustomFieldNames {
    adults: Option<String>,
    children: Option<String>,
    infants: Option<String>,
    dietary_notes: Option<String>,
    dietary_prefix: Option<String>,
    budget_prefix: Option<String>,
}

/// Custom field names (config `custom_fields` overrides the defaults).
#[derive(Clone, Debug)]
pub(super) struct Names {
    pub(super) adults: String,
    pub(super) children: String,
    pub(super) infants: String,
    pub(super) dietary_notes: String,
    pub(super) dietary_prefix: String,
    pub(super) budget_prefix: String,
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

impl Names {
    /// The defaults with config `custom_fields` applied.
    pub(super) fn from_config(c: CustomFieldNames) -> Result<Names, AdapterError> {
        let mut names = Names::default();
        for (key, given, slot) in [
            ("adults", c.adults, &mut names.adults),
            ("children", c.children, &mut names.children),
            ("infants", c.infants, &mut names.infants),
            ("dietary_notes", c.dietary_notes, &mut names.dietary_notes),
            ("dietary_prefix", c.dietary_prefix, &mut names.dietary_prefix),
            ("budget_prefix", c.budget_prefix, &mut names.budget_prefix),
        ] {
            let Some(name) = given else { continue };
            if name.trim().is_empty() || name.chars().count() > 255 {
                return Err(AdapterError::config(
                    &format!("custom_fields.{key}"),
                    "must be a custom field name of 1 to 255 characters",
                ));
            }
            *slot = name;
        }
        Ok(names)
    }
}

impl Call<'_> {
    /// Names of the custom fields the job has values for.
    pub(super) async fn job_field_names(&self, job: &Value) -> Result<Vec<String>, Fail> {
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
    pub(super) async fn know_fields_of(&self, job: &Value) -> Result<(), Fail> {
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
    pub(super) async fn field_id(
        &self,
        name: &str,
        kind: &str,
        create: bool,
    ) -> Result<Option<String>, Fail> {
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
        let made = self.post("/custom-field", &body, "POST /custom-field").await?;
        let Some(id) = made["id"].as_str() else {
            return Err(Fail::Outcome(shape_error("POST /custom-field")));
        };
        let mut cache = self.tave.cache();
        cache.field_ids.insert(name.to_owned(), id.to_owned());
        cache.field_names.insert(id.to_owned(), name.to_owned());
        Ok(Some(id.to_owned()))
    }
}
