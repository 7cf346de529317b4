//! Delivery state in sled, next to the change queue (same database, flushed with it). The
//! dispatcher is its only writer; this floor knows nothing of adapters or scheduling.
//!
//! Trees:
//! - `dl_state`: `integration id ‖ 0x00 ‖ event key` → one byte, the final state of a delivery
//!   (`d` delivered, `s` superseded, `x` dead letter). A delivery listed by its event's record and
//!   absent here is pending. Entries below the floor are removed (they are all final).
//! - `dl_dead`: same key → [`DeadLetter`] JSON, kept until requeued and delivered, or until a
//!   later change of its field is sent (then it is superseded: the dispatcher's order barrier).
//! - `dl_meta`: `floor` → event key: every delivery of an event before it is final;
//!   `disabled/<integration id>` → [`Disabled`] JSON; `log_entries` → u64 BE, the log's entries.
//! - `dl_log`: chunks of [`LogEntry`] JSON lines, keyed by the time of their newest entry (unix
//!   micros, u64 BE, then a sequence number), pruned by age and by count, oldest chunk first
//!   (history is bounded by configuration, never by how much was delivered).
//!
//! Final states and log entries are buffered in memory and written by [`DeliveryStore::persist`]:
//! about once a second, and at once when a delivery must not leave before them (the engine's
//! order barrier). A final state below the new floor is not written at all, and the buffered log
//! entries take one sled write. After a crash a delivered event may be sent again (at least once;
//! receivers dedupe on the stable id), never lost, and never after a later change of its field.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::chunk::{pieces, CHUNK_BYTES};
use super::cipher::{SealedTree, Sealer};
use super::record::EventId;
use super::StoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Final {
    Delivered,
    Superseded,
    Dead,
}

impl Final {
    fn byte(self) -> u8 {
        match self {
            Final::Delivered => b'd',
            Final::Superseded => b's',
            Final::Dead => b'x',
        }
    }
}

/// A delivery that ran out of attempts or was rejected for good.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub integration_id: String,
    pub event_id: EventId,
    pub wedding_id: Option<String>,
    pub field_id: Option<String>,
    pub attempts: u32,
    pub status: Option<u16>,
    pub error: String,
    pub failed_at: String,
    /// Requeued from the CLI and waiting to be delivered again.
    #[serde(default)]
    pub requeued: bool,
    /// The envelope's JSON as stored (what is sent): the dead letter's own copy, so a requeue
    /// works after retention removed its record. Absent in dead letters written before it was
    /// kept (the record is read instead); not shown by the operator views.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<String>,
    /// Its record's commit time, Unix microseconds (with `envelope`).
    #[serde(default)]
    pub commit_time: i64,
}

impl DeadLetter {
    /// Whether a requeue asking for these (an integration's, these event ids, or all when `None`)
    /// sends this one again (one not already requeued).
    pub fn requeue_matches(&self, integration: Option<&str>, events: Option<&[EventId]>) -> bool {
        !self.requeued
            && integration.map_or(true, |i| i == self.integration_id)
            && events.map_or(true, |ids| ids.contains(&self.event_id))
    }
}

/// An integration disabled by its endpoint (410), until its configuration changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Disabled {
    pub reason: String,
    pub config_fingerprint: u64,
    pub at: String,
}

/// What one entry of the delivery log records: the one list of these labels, for the log, the
/// metrics, the HTTP answers and the admin views.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogOutcome {
    Delivered,
    Retry,
    Dead,
    Superseded,
    Disabled,
    Requeued,
}

impl LogOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            LogOutcome::Delivered => "delivered",
            LogOutcome::Retry => "retry",
            LogOutcome::Dead => "dead",
            LogOutcome::Superseded => "superseded",
            LogOutcome::Disabled => "disabled",
            LogOutcome::Requeued => "requeued",
        }
    }
}

/// Now, as the delivery store records times (RFC 3339, microseconds, UTC).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// One attempt (or a decision without one: superseded, dead, requeued), as the log keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub at: String,
    pub integration_id: String,
    pub event_id: EventId,
    pub wedding_id: Option<String>,
    pub attempt: u32,
    pub outcome: LogOutcome,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: Option<f64>,
}

#[derive(Clone)]
pub struct DeliveryStore {
    db: sled::Db,
    state: sled::Tree,
    dead: SealedTree,
    meta: sled::Tree,
    log: SealedTree,
    /// Entries written to `log` (counted on open, then kept up to date).
    log_entries: Arc<AtomicU64>,
    pending: Arc<Mutex<Pending>>,
}

/// Written at the next [`DeliveryStore::persist`].
#[derive(Default)]
struct Pending {
    finals: HashMap<Vec<u8>, Final>,
    /// Log entries as JSON lines, oldest first.
    log: Vec<u8>,
}

static LOG_SEQ: AtomicU32 = AtomicU32::new(0);
const LOG_ENTRIES: &[u8] = b"log_entries";

fn key(integration: &str, id: EventId) -> Vec<u8> {
    let mut k = Vec::with_capacity(integration.len() + 13);
    k.extend_from_slice(integration.as_bytes());
    k.push(0);
    k.extend_from_slice(&id.key());
    k
}

fn split_key(k: &[u8]) -> Option<(String, EventId)> {
    let cut = k.len().checked_sub(13)?;
    if k[cut] != 0 {
        return None;
    }
    Some((
        String::from_utf8(k[..cut].to_vec()).ok()?,
        EventId::from_key(&k[cut + 1..])?,
    ))
}

/// Entries in a log chunk (JSON lines, each ending in a newline).
fn lines_in(chunk: &[u8]) -> u64 {
    chunk.iter().filter(|b| **b == b'\n').count() as u64
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what: what.to_owned(),
        reason: e.to_string(),
    }
}

impl DeliveryStore {
    pub fn open(db: &sled::Db, sealer: &Sealer) -> Result<DeliveryStore, StoreError> {
        let log = SealedTree::open(db, "dl_log", sealer)?;
        let meta = db.open_tree("dl_meta")?;
        // kept under `dl_meta/log_entries`; a store written before it is counted once
        let entries = match meta
            .get(LOG_ENTRIES)?
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
        {
            Some(n) => u64::from_be_bytes(n),
            None => {
                let mut n = 0;
                for item in log.iter() {
                    n += lines_in(&item?.1);
                }
                meta.insert(LOG_ENTRIES, &n.to_be_bytes())?;
                n
            }
        };
        Ok(DeliveryStore {
            db: db.clone(),
            state: db.open_tree("dl_state")?,
            dead: SealedTree::open(db, "dl_dead", sealer)?,
            meta,
            log,
            log_entries: Arc::new(AtomicU64::new(entries)),
            pending: Arc::default(),
        })
    }

    /// Saves the log's entry count. Written after the chunks it counts: a crash between the two
    /// leaves it off by the chunks of one write, which only moves the count bound by that much.
    fn save_log_entries(&self) -> Result<(), StoreError> {
        self.meta.insert(LOG_ENTRIES, &self.log_entries().to_be_bytes())?;
        Ok(())
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_final(&self, integration: &str, id: EventId) -> Result<bool, StoreError> {
        let k = key(integration, id);
        Ok(self.pending().finals.contains_key(&k) || self.state.contains_key(k)?)
    }

    pub fn set_final(&self, integration: &str, id: EventId, state: Final) -> Result<(), StoreError> {
        self.pending().finals.insert(key(integration, id), state);
        Ok(())
    }

    pub fn floor(&self) -> Result<Option<EventId>, StoreError> {
        Ok(self.meta.get("floor")?.and_then(|v| EventId::from_key(&v)))
    }

    /// Writes what is buffered (final states at or above `floor` only, in one atomic batch),
    /// raises the floor (when given) and forgets the final states below it, for every
    /// integration; then flushes, so that every decision buffered so far survives a crash.
    pub fn persist(&self, floor: Option<EventId>) -> Result<(), StoreError> {
        let (finals, log) = {
            let mut p = self.pending();
            (std::mem::take(&mut p.finals), std::mem::take(&mut p.log))
        };
        let mut batch = sled::Batch::default();
        for (k, state) in finals {
            if floor.map_or(true, |f| split_key(&k).is_some_and(|(_, id)| id >= f)) {
                batch.insert(k, &[state.byte()]);
            }
        }
        self.state.apply_batch(batch)?;
        self.write_log(log)?;
        if let Some(floor) = floor {
            if self.floor()?.map_or(true, |old| old < floor) {
                self.raise_floor(floor)?;
            }
        }
        self.db.flush()?;
        Ok(())
    }

    fn raise_floor(&self, floor: EventId) -> Result<(), StoreError> {
        self.meta.insert("floor", &floor.key())?;
        let mut batch = sled::Batch::default();
        for item in self.state.iter() {
            let (k, _) = item?;
            if split_key(&k).is_some_and(|(_, id)| id < floor) {
                batch.remove(k);
            }
        }
        self.state.apply_batch(batch)?;
        Ok(())
    }

    /// Removes a dead letter that a later change of its field supersedes (sending it again would
    /// put an older value after a newer one); durable at the next [`DeliveryStore::persist`].
    pub fn supersede_dead(&self, integration: &str, id: EventId) -> Result<(), StoreError> {
        self.set_final(integration, id, Final::Superseded)?;
        self.remove_dead(integration, id)
    }

    pub fn put_dead(&self, d: &DeadLetter) -> Result<(), StoreError> {
        self.dead.insert(
            key(&d.integration_id, d.event_id),
            &serde_json::to_vec(d).expect("dead letters serialize"),
        )?;
        Ok(())
    }

    pub fn remove_dead(&self, integration: &str, id: EventId) -> Result<(), StoreError> {
        self.dead.remove(key(integration, id))?;
        Ok(())
    }

    /// Requeues the dead letters a request matches ([`DeadLetter::requeue_matches`]): each one
    /// `take` accepts (the running dispatcher queues it; offline, the next start will) is marked
    /// requeued and logged as such. Answers the dead letters requeued.
    pub fn requeue(
        &self,
        integration: Option<&str>,
        events: Option<&[EventId]>,
        mut take: impl FnMut(&DeadLetter) -> Result<bool, StoreError>,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let mut requeued = Vec::new();
        for mut d in self.dead_letters()? {
            if !d.requeue_matches(integration, events) || !take(&d)? {
                continue;
            }
            d.requeued = true;
            self.put_dead(&d)?;
            self.log(&LogEntry {
                at: now_rfc3339(),
                integration_id: d.integration_id.clone(),
                event_id: d.event_id,
                wedding_id: d.wedding_id.clone(),
                attempt: 0,
                outcome: LogOutcome::Requeued,
                status: None,
                error: None,
                latency_ms: None,
            })?;
            requeued.push(d);
        }
        Ok(requeued)
    }

    /// How many dead letters an integration has now.
    pub fn dead_count(&self, integration: &str) -> usize {
        let mut prefix = integration.as_bytes().to_vec();
        prefix.push(0);
        self.dead.raw().scan_prefix(prefix).count()
    }

    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.dead
            .iter()
            .map(|item| {
                let (k, v) = item?;
                serde_json::from_slice(&v)
                    .map_err(|e| corrupt(&format!("dead letter {:?}", split_key(&k)), e))
            })
            .collect()
    }

    pub fn disabled(&self, integration: &str) -> Result<Option<Disabled>, StoreError> {
        match self.meta.get(format!("disabled/{integration}"))? {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).map_err(|e| corrupt(&format!("disabled/{integration}"), e))?,
            )),
            None => Ok(None),
        }
    }

    pub fn set_disabled(&self, integration: &str, d: Option<&Disabled>) -> Result<(), StoreError> {
        let k = format!("disabled/{integration}");
        match d {
            Some(d) => self.meta.insert(k, serde_json::to_vec(d).expect("serializes"))?,
            None => self.meta.remove(k)?,
        };
        Ok(())
    }

    /// When an operator paused the integration (RFC 3339), if paused.
    pub fn paused(&self, integration: &str) -> Result<Option<String>, StoreError> {
        match self.meta.get(format!("paused/{integration}"))? {
            Some(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            None => Ok(None),
        }
    }

    pub fn set_paused(&self, integration: &str, since: Option<&str>) -> Result<(), StoreError> {
        let k = format!("paused/{integration}");
        match since {
            Some(at) => self.meta.insert(k, at.as_bytes())?,
            None => self.meta.remove(k)?,
        };
        Ok(())
    }

    /// Appends an entry to the log (written with the next floor, or when the log is read).
    pub fn log(&self, e: &LogEntry) -> Result<(), StoreError> {
        let mut p = self.pending();
        serde_json::to_writer(&mut p.log, e).expect("log entries serialize");
        p.log.push(b'\n');
        Ok(())
    }

    /// Writes buffered log lines in chunks of at most [`CHUNK_BYTES`] (whole lines), keyed by now
    /// (the time of their newest entry), in one sled write.
    ///
    /// Bounded chunks matter: a second of deliveries is about a megabyte of lines, and sled keeps
    /// a leaf (up to 16 entries) past 128 KiB in a blob file that it rewrites whole and frees
    /// late. One value per second made the directory grow under steady churn
    /// (`retention::soak_…`: 76, 87, 92, 105 MiB over four quarters of a million updates).
    fn write_log(&self, lines: Vec<u8>) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let micros = chrono::Utc::now().timestamp_micros().max(0) as u64;
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for piece in pieces(&lines, CHUNK_BYTES) {
            let mut k = [0u8; 12];
            k[..8].copy_from_slice(&micros.to_be_bytes());
            k[8..].copy_from_slice(&LOG_SEQ.fetch_add(1, Ordering::Relaxed).to_be_bytes());
            n += lines_in(piece);
            batch.insert(&k, self.log.seal(piece));
        }
        self.log.raw().apply_batch(batch)?;
        self.log_entries.fetch_add(n, Ordering::Relaxed);
        self.save_log_entries()
    }

    /// The newest `last` log entries matching the filters, oldest first.
    pub fn read_log(
        &self,
        integration: Option<&str>,
        event: Option<EventId>,
        last: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let mut out = Vec::new();
        for e in self.log_newest_first()? {
            if out.len() >= last {
                break;
            }
            let e = e?;
            if integration.map_or(true, |i| i == e.integration_id)
                && event.map_or(true, |id| id == e.event_id)
            {
                out.push(e);
            }
        }
        out.reverse();
        Ok(out)
    }

    /// The log, newest entry first (buffered entries included), read one chunk at a time.
    pub fn log_newest_first(&self) -> Result<impl Iterator<Item = Result<LogEntry, StoreError>>, StoreError> {
        let buffered = std::mem::take(&mut self.pending().log);
        self.write_log(buffered)?;
        Ok(self
            .log
            .iter()
            .rev()
            .flat_map(|item| -> Vec<Result<LogEntry, StoreError>> {
                match item {
                    Err(e) => vec![Err(e)],
                    Ok((_, chunk)) => chunk
                        .split(|b| *b == b'\n')
                        .rev()
                        .filter(|l| !l.is_empty())
                        .map(|line| {
                            serde_json::from_slice(line).map_err(|e| corrupt("delivery log entry", e))
                        })
                        .collect(),
                }
            }))
    }

    /// Entries in the log (written; buffered ones not yet).
    pub fn log_entries(&self) -> u64 {
        self.log_entries.load(Ordering::Relaxed)
    }

    /// Removes log chunks, oldest first, while their newest entry is older than `retention` or
    /// the log holds more than `max_entries`; returns how many entries left.
    pub fn prune_log(&self, retention: std::time::Duration, max_entries: u64) -> Result<u64, StoreError> {
        let now = chrono::Utc::now().timestamp_micros().max(0) as u64;
        let cutoff = now.saturating_sub(retention.as_micros() as u64).to_be_bytes();
        let mut removed = 0;
        for item in self.log.iter() {
            let (k, chunk) = item?;
            if k.get(..8).is_some_and(|t| t >= &cutoff[..]) && self.log_entries() <= max_entries {
                break;
            }
            self.log.remove(k)?;
            let n = lines_in(&chunk);
            let _ = self
                .log_entries
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |e| {
                    Some(e.saturating_sub(n))
                });
            removed += n;
        }
        if removed > 0 {
            self.save_log_entries()?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;

    fn id(lsn: u64, index: u32) -> EventId {
        EventId {
            commit_lsn: Lsn(lsn),
            index,
        }
    }

    fn store() -> (tempfile::TempDir, DeliveryStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        (dir, DeliveryStore::open(&db, &Sealer::default()).unwrap())
    }

    #[test]
    fn final_states_are_per_integration_and_forgotten_below_the_floor() {
        let (_d, s) = store();
        s.set_final("a", id(10, 0), Final::Delivered).unwrap();
        s.set_final("a", id(20, 0), Final::Superseded).unwrap();
        s.set_final("ab", id(10, 0), Final::Dead).unwrap();
        assert!(s.is_final("a", id(10, 0)).unwrap());
        assert!(!s.is_final("b", id(10, 0)).unwrap());
        s.persist(Some(id(15, 0))).unwrap();
        assert!(!s.is_final("a", id(10, 0)).unwrap() && !s.is_final("ab", id(10, 0)).unwrap());
        assert_eq!(s.state.len(), 1, "final states below the floor are never written");
        assert!(s.is_final("a", id(20, 0)).unwrap());
        s.persist(Some(id(5, 0))).unwrap();
        assert_eq!(s.floor().unwrap(), Some(id(15, 0)), "the floor never goes back");
    }

    fn dead_letter(integration: &str, event_id: EventId) -> DeadLetter {
        DeadLetter {
            integration_id: integration.to_owned(),
            event_id,
            wedding_id: Some("w1".into()),
            field_id: Some("f1".into()),
            attempts: 3,
            status: Some(400),
            error: "rejected".into(),
            failed_at: String::new(),
            requeued: false,
            envelope: None,
            commit_time: 0,
        }
    }

    #[test]
    fn persist_writes_buffered_final_states_even_before_there_is_a_floor() {
        let (_d, s) = store();
        s.set_final("a", id(10, 0), Final::Superseded).unwrap();
        assert!(s.state.is_empty(), "buffered");
        s.persist(None).unwrap();
        assert_eq!(
            s.state.get(key("a", id(10, 0))).unwrap().as_deref(),
            Some(&b"s"[..])
        );
        assert_eq!(s.floor().unwrap(), None);
    }

    #[test]
    fn a_superseded_dead_letter_leaves_the_dead_letters_and_is_final() {
        let (_d, s) = store();
        s.put_dead(&dead_letter("a", id(10, 0))).unwrap();
        s.put_dead(&dead_letter("a", id(20, 0))).unwrap();
        s.supersede_dead("a", id(10, 0)).unwrap();
        let left: Vec<EventId> = s.dead_letters().unwrap().iter().map(|d| d.event_id).collect();
        assert_eq!(left, [id(20, 0)]);
        assert!(s.is_final("a", id(10, 0)).unwrap());
    }

    #[test]
    fn requeue_matches_what_was_asked_and_not_yet_requeued() {
        let mut d = dead_letter("a", id(10, 0));
        assert!(d.requeue_matches(None, None));
        assert!(d.requeue_matches(Some("a"), Some(&[id(10, 0)])));
        assert!(!d.requeue_matches(Some("b"), None));
        assert!(!d.requeue_matches(None, Some(&[id(11, 0)])));
        d.requeued = true;
        assert!(!d.requeue_matches(None, None));
    }

    fn log_entry(integration: &str, event_id: EventId) -> LogEntry {
        LogEntry {
            at: String::new(),
            integration_id: integration.to_owned(),
            event_id,
            wedding_id: None,
            attempt: 1,
            outcome: LogOutcome::Delivered,
            status: Some(200),
            error: None,
            latency_ms: Some(1.0),
        }
    }

    #[test]
    fn log_reads_newest_matching_entries_oldest_first() {
        let (_d, s) = store();
        for n in 0..5u32 {
            s.log(&log_entry(if n % 2 == 0 { "a" } else { "b" }, id(1, n)))
                .unwrap();
        }
        let got: Vec<u32> = s
            .read_log(Some("a"), None, 2)
            .unwrap()
            .iter()
            .map(|e| e.event_id.index)
            .collect();
        assert_eq!(got, [2, 4]);
        assert_eq!(s.read_log(None, Some(id(1, 3)), 10).unwrap().len(), 1);
        assert_eq!(s.log_entries(), 5);
        assert_eq!(s.prune_log(HOUR, 5).unwrap(), 0);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(
            s.prune_log(std::time::Duration::ZERO, 5).unwrap(),
            5,
            "one chunk, by age"
        );
        assert!(s.read_log(None, None, 10).unwrap().is_empty());
        assert_eq!(s.log_entries(), 0);
    }

    const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

    #[test]
    fn the_log_keeps_at_most_its_entry_cap_dropping_whole_chunks_oldest_first() {
        let (_d, s) = store();
        for chunk in 1..=4u64 {
            for i in 0..3 {
                s.log(&log_entry("a", id(chunk, i))).unwrap();
            }
            s.persist(None).unwrap();
        }
        assert_eq!(s.log_entries(), 12);
        assert_eq!(s.prune_log(HOUR, 7).unwrap(), 6, "two whole chunks");
        let left: Vec<u64> = s
            .read_log(None, None, 100)
            .unwrap()
            .iter()
            .map(|e| e.event_id.commit_lsn.0)
            .collect();
        assert_eq!(left, [3, 3, 3, 4, 4, 4]);
        assert_eq!(
            DeliveryStore::open(&s.db, &Sealer::default())
                .unwrap()
                .log_entries(),
            6,
            "kept across an open"
        );
        s.meta.remove(LOG_ENTRIES).unwrap();
        assert_eq!(
            DeliveryStore::open(&s.db, &Sealer::default())
                .unwrap()
                .log_entries(),
            6,
            "a store without the count is counted once"
        );
    }
}
