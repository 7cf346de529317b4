//! The filters and orderings of `events.list` (discovery document, `events.list` parameters):
//! `privateExtendedProperty`/`sharedExtendedProperty` (`name=value`, AND-ed), `timeMin` (exclusive
//! bound on an event's end), `timeMax` (exclusive bound on its start), `updatedMin`, `iCalUID`,
//! `eventTypes`, `q` (every term in summary, description, location, attendees' or the organizer's
//! name or email), and `orderBy` (`startTime` only with `singleEvents=true`, `updated`).
//!
//! Assumptions [G]: a local `dateTime` with a `timeZone` and an all-day `date` are read as UTC
//! (the sandbox has no time-zone database and its calendars are in UTC); the sandbox does not
//! expand recurring events, so `singleEvents=true` returns them as stored; a malformed time
//! bound is a 400 `badRequest`, as the live API has been seen to answer.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::Value;

use super::errors::time_range_empty;
use super::{bad_request, param, Response};

pub(super) enum Order {
    StartTime,
    Updated,
}

#[derive(Default)]
pub(super) struct Filter {
    private: Vec<(String, String)>,
    shared: Vec<(String, String)>,
    time_min: Option<DateTime<Utc>>,
    time_max: Option<DateTime<Utc>>,
    updated_min: Option<DateTime<Utc>>,
    ical_uid: Option<String>,
    event_types: Vec<String>,
    terms: Vec<String>,
    pub(super) order: Option<Order>,
}

fn constraints(q: &[(String, String)], name: &str) -> Result<Vec<(String, String)>, Response> {
    q.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| match v.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            None => Err(bad_request("invalid", "Invalid extended property constraint.")),
        })
        .collect()
}

/// An RFC 3339 bound with its mandatory offset.
fn bound(q: &[(String, String)], name: &str) -> Result<Option<DateTime<Utc>>, Response> {
    match param(q, name) {
        None => Ok(None),
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| bad_request("badRequest", "Bad Request")),
    }
}

impl Filter {
    pub(super) fn parse(q: &[(String, String)], single_events: bool) -> Result<Filter, Response> {
        let time_min = bound(q, "timeMin")?;
        let time_max = bound(q, "timeMax")?;
        if let (Some(min), Some(max)) = (time_min, time_max) {
            if min >= max {
                return Err(time_range_empty(Some(("parameter", "timeMax"))));
            }
        }
        let order = match param(q, "orderBy") {
            None => None,
            Some("startTime") if single_events => Some(Order::StartTime),
            Some("startTime") => {
                return Err(bad_request(
                    "badRequest",
                    "The requested ordering is not available for the particular query.",
                ))
            }
            Some("updated") => Some(Order::Updated),
            Some(_) => return Err(bad_request("invalid", "Invalid value for: orderBy")),
        };
        Ok(Filter {
            private: constraints(q, "privateExtendedProperty")?,
            shared: constraints(q, "sharedExtendedProperty")?,
            time_min,
            time_max,
            updated_min: bound(q, "updatedMin")?,
            ical_uid: param(q, "iCalUID").map(str::to_owned),
            event_types: q
                .iter()
                .filter(|(k, _)| k == "eventTypes")
                .map(|(_, v)| v.clone())
                .collect(),
            terms: param(q, "q")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_lowercase)
                .collect(),
            order,
        })
    }

    /// With `updatedMin`, events cancelled since then are listed whatever `showDeleted` says.
    pub(super) fn lists_deleted(&self) -> bool {
        self.updated_min.is_some()
    }

    pub(super) fn matches(&self, e: &Value) -> bool {
        let props = |kind: &str, wanted: &[(String, String)]| {
            wanted
                .iter()
                .all(|(k, v)| e["extendedProperties"][kind][k].as_str() == Some(v.as_str()))
        };
        props("private", &self.private)
            && props("shared", &self.shared)
            && self
                .time_min
                .map_or(true, |min| time_of(&e["end"]).is_some_and(|end| end > min))
            && self
                .time_max
                .map_or(true, |max| time_of(&e["start"]).is_some_and(|start| start < max))
            && self.updated_min.map_or(true, |min| {
                e["updated"]
                    .as_str()
                    .and_then(|u| DateTime::parse_from_rfc3339(u).ok())
                    .is_some_and(|u| u >= min)
            })
            && self
                .ical_uid
                .as_ref()
                .map_or(true, |uid| e["iCalUID"].as_str() == Some(uid.as_str()))
            && (self.event_types.is_empty()
                || self
                    .event_types
                    .iter()
                    .any(|t| e["eventType"].as_str() == Some(t.as_str())))
            && self.matches_terms(e)
    }

    fn matches_terms(&self, e: &Value) -> bool {
        if self.terms.is_empty() {
            return true;
        }
        let mut text = String::new();
        let mut add = |v: &Value| {
            if let Some(s) = v.as_str() {
                text.push_str(&s.to_lowercase());
                text.push('\n');
            }
        };
        for k in ["summary", "description", "location"] {
            add(&e[k]);
        }
        for person in e["attendees"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(std::iter::once(&e["organizer"]))
        {
            add(&person["displayName"]);
            add(&person["email"]);
        }
        self.terms.iter().all(|t| text.contains(t.as_str()))
    }

    pub(super) fn sort(&self, events: &mut [&Value]) {
        match self.order {
            Some(Order::StartTime) => events.sort_by_key(|e| time_of(&e["start"])),
            Some(Order::Updated) => events.sort_by(|a, b| {
                let t = |e: &Value| e["updated"].as_str().unwrap_or_default().to_owned();
                t(a).cmp(&t(b))
            }),
            None => {}
        }
    }
}

/// The instant of an `EventDateTime` (local times and dates read as UTC).
fn time_of(t: &Value) -> Option<DateTime<Utc>> {
    if let Some(dt) = t["dateTime"].as_str() {
        if let Ok(at) = DateTime::parse_from_rfc3339(dt) {
            return Some(at.with_timezone(&Utc));
        }
        return NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .map(|l| l.and_utc());
    }
    let date = NaiveDate::parse_from_str(t["date"].as_str()?, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}
