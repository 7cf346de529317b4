//! Field types onto the job: `eventDate`, `guestCount`, `leadMaxBudget` and the custom field
//! values of guests, budget and dietary requirements.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::api::Call;
use super::{truncate, Fail};
use crate::adapters::crm::{self, Change};

impl Call<'_> {
    /// Sets the job properties and custom fields the change maps to.
    pub(super) async fn job_fields(&self, change: &Change, job: &mut Value) -> Result<(), Fail> {
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
}

/// Minor units to whole units of the currency (MoneyAmount's unit is an assumption, see the
/// adapter's module docs).
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tave_money_is_whole_units_of_the_currency() {
        assert_eq!(whole_units(250_000, Some("GBP")), 2500);
        assert_eq!(whole_units(250_050, None), 2501);
        assert_eq!(whole_units(-150, Some("usd")), -2);
        assert_eq!(whole_units(5000, Some("JPY")), 5000);
        assert_eq!(whole_units(1500, Some("KWD")), 2);
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
