//! The demo's live view: each captured change as it becomes durable, numbered, and under that
//! number each delivery attempt to each integration as the dispatcher logs it, with its
//! commit-to-CRM latency. The demo keeps it going whenever it waits, and after the script until
//! Ctrl-C, so a person's own edits show the same way.
//!
//! Captures come from the queue: the records after the last one shown, read whenever the durable
//! watermark moves. Deliveries come from the dispatcher's delivery log, read at least every
//! [`POLL`]. The log is buffered in memory until the next floor save; `read_log` writes the buffer
//! first, so an entry shows within a poll of being logged.
//!
//! Log entries have no sequence number; an entry is known by what it says (time, integration,
//! event, attempt, outcome). The view keeps the keys of the newest window it read and prints the
//! entries not among them; when a whole window is new it reads a larger one, so none is skipped.
//! A chunk written by a floor save can land just after a read that missed it: its entries then
//! show one poll late (out of time order), never twice.
//!
//! Commit->CRM is the log entry's time minus the record's commit time (both to the microsecond);
//! the request time is measured.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use fieldsync::store::deliveries::{DeliveryStore, LogEntry, LogOutcome};
use fieldsync::store::record::{ChangeRecord, ColumnValue, EventId};
use fieldsync::store::{Durable, Store, StoreError};

/// How often the delivery log is read when the durable watermark does not move.
pub(super) const POLL: Duration = Duration::from_millis(100);

/// How many of the newest log entries a read looks at first.
const WINDOW: usize = 256;

/// How much of an error a line shows.
const ERROR_CHARS: usize = 96;

/// What tells log entries apart: time, integration, event, attempt, outcome.
type LogKey = (String, String, EventId, u32, LogOutcome);

pub(super) struct LiveView {
    queue: Store,
    store: DeliveryStore,
    durable: watch::Receiver<Durable>,
    /// The queue's watermark channel closed: the daemon stopped.
    closed: bool,
    /// The newest record shown.
    last: Option<EventId>,
    /// The changes shown: their number and commit time (unix micros).
    changes: HashMap<EventId, (usize, i64)>,
    /// The keys of the log window last read.
    seen: HashSet<LogKey>,
    /// Integration id -> integration type.
    names: HashMap<String, String>,
    /// Per integration type, what the view has shown.
    systems: BTreeMap<String, System>,
}

#[derive(Default)]
struct System {
    delivered: usize,
    /// Commit->CRM of each delivery whose commit time is known, ms.
    delivered_ms: Vec<f64>,
    retries: usize,
    dead: usize,
    superseded: usize,
}

impl LiveView {
    pub(super) fn new(queue: &Store) -> Result<LiveView, StoreError> {
        Ok(LiveView {
            queue: queue.clone(),
            store: queue.deliveries()?,
            durable: queue.durable(),
            closed: false,
            last: None,
            changes: HashMap::new(),
            seen: HashSet::new(),
            names: HashMap::new(),
            systems: BTreeMap::new(),
        })
    }

    /// How many changes were captured (and shown) so far.
    pub(super) fn captured(&self) -> usize {
        self.changes.len()
    }

    /// How many deliveries were shown so far, to every integration.
    pub(super) fn deliveries_shown(&self) -> usize {
        self.systems.values().map(|s| s.delivered).sum()
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Waits until the durable watermark moves or [`POLL`] passes, then prints what is new.
    /// Cancel-safe: it prints only after its one wait.
    pub(super) async fn step(&mut self) -> Result<(), StoreError> {
        if self.closed {
            tokio::time::sleep(POLL).await;
        } else if let Ok(Err(_)) = tokio::time::timeout(POLL, self.durable.changed()).await {
            self.closed = true;
        }
        self.print_new()
    }

    /// Prints the changes captured and the delivery attempts logged since the last call.
    pub(super) fn print_new(&mut self) -> Result<(), StoreError> {
        self.print_captured()?;
        self.print_deliveries()
    }

    fn print_captured(&mut self) -> Result<(), StoreError> {
        loop {
            let records = self.queue.records_after(self.last, 1000)?;
            if records.is_empty() {
                return Ok(());
            }
            let now = unix_micros();
            for r in &records {
                let n = self.changes.len() + 1;
                let ms = (now - r.commit_time).max(0) as f64 / 1000.0;
                println!(
                    "  {:>4} captured {:<9} {:<32} {}  ({ms:.1} ms after commit)",
                    format!("#{n}"),
                    r.op.as_str(),
                    format!("{}.{}", r.schema, r.table),
                    summary(r)
                );
                self.changes.insert(r.id, (n, r.commit_time));
                self.last = Some(r.id);
            }
        }
    }

    fn print_deliveries(&mut self) -> Result<(), StoreError> {
        let mut last = WINDOW;
        let window = loop {
            let got = self.store.read_log(None, None, last)?;
            if got.len() < last || got.iter().any(|e| self.seen.contains(&key(e))) {
                break got;
            }
            last *= 2;
        };
        let mut new: Vec<&LogEntry> = window.iter().filter(|e| !self.seen.contains(&key(e))).collect();
        // within one poll, each change's attempts together, in time order
        new.sort_by(|a, b| (a.event_id, &a.at).cmp(&(b.event_id, &b.at)));
        if new.iter().any(|e| !self.changes.contains_key(&e.event_id)) {
            // the dispatcher sends durable records only: this one became durable since the
            // captures were read, and is shown first
            self.print_captured()?;
        }
        for e in new {
            self.print_entry(e)?;
        }
        self.seen = window.iter().map(key).collect();
        Ok(())
    }

    fn print_entry(&mut self, e: &LogEntry) -> Result<(), StoreError> {
        let name = self.name(&e.integration_id)?;
        let (number, commit_time) = match self.changes.get(&e.event_id) {
            Some(&(n, t)) => (format!("#{n}"), Some(t)),
            None => (
                e.event_id.to_string(),
                self.queue.record(e.event_id)?.map(|r| r.commit_time),
            ),
        };
        let system = self.systems.entry(name.clone()).or_default();
        let request = e
            .latency_ms
            .map(|ms| format!(" (request {ms:.1} ms)"))
            .unwrap_or_default();
        let detail = match e.outcome {
            LogOutcome::Delivered => {
                let after = commit_time
                    .zip(at_micros(&e.at))
                    .map(|(commit, at)| (at - commit).max(0) as f64 / 1000.0);
                system.delivered += 1;
                system.delivered_ms.extend(after);
                let after = after.map_or("?".into(), |ms| format!("{ms:.1}"));
                format!("delivered    commit->CRM {after} ms{request}")
            }
            LogOutcome::Retry => {
                system.retries += 1;
                format!("retry        attempt {}: {}{request}", e.attempt, problem(e))
            }
            LogOutcome::Dead => {
                system.dead += 1;
                format!("dead letter  {}", problem(e))
            }
            LogOutcome::Superseded => {
                system.superseded += 1;
                "superseded   a newer value of the field replaces it".into()
            }
            LogOutcome::Requeued => "requeued     from the dead letters".into(),
            other => format!("{:<12} {}", other.as_str(), problem(e)),
        };
        println!("  {number:>4}   -> {name:<15} {detail}");
        Ok(())
    }

    /// The integration's type, or its id when it is not known.
    fn name(&mut self, id: &str) -> Result<String, StoreError> {
        if !self.names.contains_key(id) {
            self.names = (self.queue.context()?.integrations()?.into_iter())
                .map(|(id, i)| (id, i.integration_type))
                .collect();
        }
        Ok(self.names.get(id).cloned().unwrap_or_else(|| id.to_owned()))
    }

    /// Prints commit->CRM per system (those of `order` first, in that order), as shown so far.
    pub(super) fn print_summary(&self, order: &[&str]) {
        println!("commit->CRM latency per system, over the deliveries shown:");
        let others = self.systems.keys().filter(|k| !order.contains(&k.as_str()));
        for name in order.iter().copied().chain(others.map(String::as_str)) {
            let empty = System::default();
            let s = self.systems.get(name).unwrap_or(&empty);
            let mut ms = s.delivered_ms.clone();
            ms.sort_by(f64::total_cmp);
            let (median, max) = match ms.len() {
                0 => ("-".into(), "-".into()),
                n => (
                    format!("{:.0}", (ms[(n - 1) / 2] + ms[n / 2]) / 2.0),
                    format!("{:.0}", ms[n - 1]),
                ),
            };
            let mut also = Vec::new();
            for (count, what) in [
                (s.retries, "retries"),
                (s.dead, "dead letters"),
                (s.superseded, "superseded"),
            ] {
                if count > 0 {
                    also.push(format!("{what}: {count}"));
                }
            }
            let also = if also.is_empty() {
                String::new()
            } else {
                format!("   ({})", also.join(", "))
            };
            println!(
                "   {name:<15} {:>3} delivered   median {median:>5} ms   max {max:>5} ms{also}",
                s.delivered
            );
        }
    }
}

fn key(e: &LogEntry) -> LogKey {
    (
        e.at.clone(),
        e.integration_id.clone(),
        e.event_id,
        e.attempt,
        e.outcome,
    )
}

/// Status and error, short: the error's first line without the hint after a `; ` (`fieldsync
/// deliveries dead` shows it all), cut at [`ERROR_CHARS`].
fn problem(e: &LogEntry) -> String {
    let error = e.error.as_deref().map(|err| {
        let line = err.lines().next().unwrap_or("");
        let line = line.split("; ").next().unwrap_or(line);
        match line.char_indices().nth(ERROR_CHARS) {
            Some((cut, _)) => format!("{}…", &line[..cut]),
            None => line.to_owned(),
        }
    });
    match (e.status, error) {
        (Some(status), Some(error)) => format!("{status} {error}"),
        (Some(status), None) => status.to_string(),
        (None, Some(error)) => error,
        (None, None) => String::new(),
    }
}

fn at_micros(at: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(at)
        .ok()
        .map(|t| t.timestamp_micros())
}

fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A short description: the changed columns of an update, or the row's key facts.
fn summary(r: &ChangeRecord) -> String {
    let text = |row: &fieldsync::store::record::Row, col: &str| match row.get(col) {
        Some(ColumnValue::Text(t)) => t.clone(),
        Some(ColumnValue::Null) => "null".into(),
        Some(ColumnValue::Unchanged) => "(unchanged)".into(),
        Some(ColumnValue::Withheld) => "(withheld)".into(),
        None => String::new(),
    };
    if let Some(e) = &r.event {
        // a field change is stored once, in its event
        let value = |v: &Option<serde_json::Value>| v.as_ref().map_or("null".into(), |v| v.to_string());
        let d = &e.data;
        return match (&d.old_value, &d.new_value) {
            (Some(_), Some(_)) => format!(
                "{}: {} -> {}",
                d.field_type,
                value(&d.old_value),
                value(&d.new_value)
            ),
            (_, Some(_)) => format!("{} = {}", d.field_type, value(&d.new_value)),
            _ => format!("removed {}", d.field_type),
        };
    }
    match (&r.old, &r.new) {
        (Some(old), Some(new)) => {
            let changed: Vec<String> = new
                .iter()
                .filter(|(k, v)| old.get(*k) != Some(v) && *k != "updated_at")
                .map(|(k, _)| format!("{k}: {} -> {}", text(old, k), text(new, k)))
                .collect();
            changed.join(", ")
        }
        (_, Some(new)) if r.table == "organization_integrations" => text(new, "integration_type"),
        (_, Some(new)) if r.table == "form_field_values" => {
            format!("{} = {}", text(new, "field_type"), text(new, "value"))
        }
        (_, Some(new)) => new
            .get("name")
            .or(new.get("couple_names"))
            .map(|_| {
                let key = if new.contains_key("name") {
                    "name"
                } else {
                    "couple_names"
                };
                text(new, key)
            })
            .unwrap_or_default(),
        (Some(old), None) => format!("removed {}", text(old, "field_type")),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_short_and_name_the_status() {
        let e = LogEntry {
            at: "2027-06-19T13:00:00.123Z".into(),
            integration_id: "i".into(),
            event_id: EventId {
                commit_lsn: fieldsync::lsn::Lsn(1),
                index: 0,
            },
            wedding_id: None,
            attempt: 2,
            outcome: LogOutcome::Retry,
            status: Some(503),
            error: Some(format!("{}\nsecond line", "é".repeat(100))),
            latency_ms: Some(1.0),
        };
        assert_eq!(problem(&e), format!("503 {}…", "é".repeat(ERROR_CHARS)));
        let e = LogEntry {
            status: None,
            error: Some("adults (non_negative_integer); fix it in the app".into()),
            ..e
        };
        assert_eq!(problem(&e), "adults (non_negative_integer)");
        assert_eq!(at_micros(&e.at), Some(1_813_410_000_123_000));
    }
}
