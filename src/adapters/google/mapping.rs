//! The field types as calendar events: `timeline_builder` one timed event per item,
//! `wedding_date` one all-day event (and the timeline moved to it), `venue_selector` the
//! `location` of every event of the wedding.

use std::collections::HashSet;

use chrono::{NaiveDate, NaiveDateTime};
use serde_json::{json, Value};

use super::api::Call;
use super::ids::event_id;
use super::{KIND_DATE, KIND_TIMELINE};
use crate::adapters::crm::{self, Change};
use crate::adapters::outcome::Outcome;
use crate::events::EventKind;

impl Call<'_> {
    pub(super) async fn timeline(&self, change: &Change) -> Result<(), Outcome> {
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
        let ours = |e: &&Value| is_kind(e, KIND_TIMELINE) && e["status"] != "cancelled";
        let Some((items, zone)) = items else {
            for e in existing.iter().filter(ours) {
                self.remove(e).await?;
            }
            return Ok(());
        };
        let mut keep = HashSet::new();
        for item in &items {
            let mut desired = desired(
                change,
                KIND_TIMELINE,
                &item.key,
                &item.title,
                json!({"dateTime": local(item.start), "timeZone": zone}),
                json!({"dateTime": local(item.end), "timeZone": zone}),
            );
            if let Some(d) = &item.description {
                desired["description"] = json!(d);
            }
            let id = desired["id"].as_str().unwrap_or_default().to_owned();
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

    pub(super) async fn wedding_date(&self, change: &Change) -> Result<(), Outcome> {
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
        let mut desired = desired(
            change,
            KIND_DATE,
            KIND_DATE,
            "Wedding",
            json!({"date": date.to_string()}),
            json!({"date": next.to_string()}),
        );
        desired["transparency"] = json!("transparent");
        self.upsert(&desired, known).await?;
        for e in existing.iter().filter(|e| is_kind(e, KIND_TIMELINE)) {
            self.modify(e, |ev| move_to(ev, date)).await?;
        }
        Ok(())
    }

    pub(super) async fn venue(&self, change: &Change) -> Result<(), Outcome> {
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

/// One event of ours as the calendar should have it: the deterministic id, `title · couple` as
/// the summary, our private properties (wedding, kind, key) and the venue as its location.
fn desired(change: &Change, kind: &str, key: &str, title: &str, start: Value, end: Value) -> Value {
    let w = &change.wedding;
    let mut event = json!({
        "id": event_id(&w.id, kind, key),
        "status": "confirmed",
        "summary": format!("{title} · {}", couple(change)),
        "start": start,
        "end": end,
        "extendedProperties": {"private": {
            "fieldsync_wedding": w.id,
            "fieldsync_kind": kind,
            "fieldsync_item": key,
        }},
    });
    if let Some(l) = w.venue.as_ref().and_then(crm::venue_line) {
        event["location"] = json!(l);
    }
    event
}

/// Is this one of our events of `kind` (by its private `fieldsync_kind`)?
fn is_kind(event: &Value, kind: &str) -> bool {
    event["extendedProperties"]["private"]["fieldsync_kind"] == kind
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

#[cfg(test)]
mod tests {
    use super::*;

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
