//! Idempotent writes of our events: upsert (insert, or after 409 `duplicate` update the event
//! there), modify and remove, each re-reading and re-applying after 412 `conditionNotMet` a
//! bounded number of times, and writing nothing when the calendar already says it.

use serde_json::Value;

use super::api::{Call, Written};
use super::API;
use crate::adapters::outcome::Outcome;

/// How often an update is re-applied after 412 `conditionNotMet` before the delivery is retried.
const MAX_REAPPLY: usize = 4;

impl Call<'_> {
    /// Makes the event with `desired["id"]` look like `desired`: insert, or update the one there
    /// (`known`, from a list), re-reading it after 409 or 412.
    pub(super) async fn upsert(&self, desired: &Value, known: Option<&Value>) -> Result<(), Outcome> {
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
    pub(super) async fn modify(
        &self,
        event: &Value,
        change: impl Fn(&mut Value) -> bool,
    ) -> Result<(), Outcome> {
        self.reapply(event, |existing| {
            let mut next = writable(existing);
            change(&mut next).then_some(Op::Put(next))
        })
        .await
    }

    /// Deletes a live event of ours; already gone is fine.
    pub(super) async fn remove(&self, event: &Value) -> Result<(), Outcome> {
        self.reapply(event, |_| Some(Op::Delete)).await
    }

    /// The conditional-write loop of `modify` and `remove`: `op` decides, from the event as last
    /// read, what to write (nothing: done); the write carries that version's etag, and a 412
    /// re-reads the event and decides again. An event that is cancelled or gone needs nothing.
    async fn reapply(&self, event: &Value, op: impl Fn(&Value) -> Option<Op>) -> Result<(), Outcome> {
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        let mut current = Some(event.clone());
        for _ in 0..MAX_REAPPLY {
            let Some(existing) = current.take().filter(|e| e["status"] != "cancelled") else {
                return Ok(());
            };
            let etag = existing["etag"].as_str();
            let written = match op(&existing) {
                None => return Ok(()),
                Some(Op::Put(next)) => self.put(&id, &next, etag).await?,
                Some(Op::Delete) => self.delete(&id, etag).await?,
            };
            match written {
                Written::Stale => current = self.get(&id).await?,
                _ => return Ok(()),
            }
        }
        Err(kept_changing())
    }
}

/// A conditional write of an existing event.
enum Op {
    Put(Value),
    Delete,
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
