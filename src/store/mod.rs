//! The durable queue: captured changes in sled, and the durable watermark that alone may be
//! confirmed to PostgreSQL.
//!
//! # Key layout (sled trees)
//! - `changes`: chunks (see [`chunk`]). Key: the id of the chunk's first record,
//!   `commit_lsn (u64 BE) ‖ index (u32 BE)`, so chunks sort in commit order; value: records as
//!   JSON lines ([`record::ChangeRecord`]), in commit order, then in transaction order.
//! - `meta`: `head` → [`Head`] as JSON (the newest stored transaction and totals);
//!   `confirmed` → u64 BE, the highest LSN ever confirmed to PostgreSQL;
//!   `removed` → [`retention::Removed`] as JSON (what retention removed so far).
//!
//! # Invariants
//! - Records are staged as they arrive and written out in chunks of at most [`chunk::CHUNK_BYTES`]
//!   (a large transaction is never held in memory), but they are *visible* only once `meta/head`
//!   names a commit LSN at or after theirs. `head` is written after the chunks, so sled's log order
//!   makes a durable head imply durable records. On open, anything past the head (a half-received
//!   transaction) is removed.
//! - Transactions arrive in commit-LSN order, so a transaction whose commit LSN is not past the
//!   head is a replay and is not stored again (ids are stable: commit LSN + index).
//! - The durable watermark advances only after `Db::flush` returns for everything written before
//!   the flush began. Writes and flushes are grouped: the capture loop writes one chunk and one
//!   head per network read, and one background flusher flushes whatever has been written since
//!   its last flush, so a burst of small transactions costs one sled write and one fsync.

pub mod audit;
pub mod chunk;
pub mod cipher;
pub mod context;
pub mod deliveries;
pub mod disk;
pub mod event;
pub mod flusher;
pub mod keys;
pub mod record;
pub mod retention;
mod writer;

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::lsn::Lsn;
use cipher::{SealedTree, Sealer};
use flusher::Flusher;
pub use flusher::{Durable, LatencySamples};
use record::{ChangeRecord, EventId, TxnRecord};
pub use writer::QueueWriter;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "queue at {path} is in use by another process (is `fieldsync run` already running with this [queue] path?)"
    )]
    Locked { path: String },
    #[error("cannot open queue at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: sled::Error,
    },
    #[error("queue storage error: {0}")]
    Storage(#[from] sled::Error),
    #[error("queue flush failed, nothing after {durable} is confirmed: {source}")]
    FlushFailed {
        durable: Lsn,
        #[source]
        source: sled::Error,
    },
    #[error("corrupt queue entry {what}: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("transaction at {commit_lsn} is not after the queue head {head}: replays must be skipped")]
    OutOfOrder { commit_lsn: Lsn, head: Lsn },
    #[error(
        "{what} is encrypted under key {id}, which no configured key matches: set [queue] encryption_key_file, \
         or list the key's file in [queue] old_encryption_key_files (`fieldsync secret key-id FILE` prints a key's id)"
    )]
    MissingKey { id: cipher::KeyId, what: String },
}

impl StoreError {
    /// The storage under the queue failed a write or a flush (a full filesystem, an I/O error).
    /// sled then fails every later write of this open database, so the queue must be opened again
    /// once the cause is fixed; nothing past the durable watermark was confirmed.
    pub fn is_write_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Storage(sled::Error::Io(_))
                | StoreError::FlushFailed {
                    source: sled::Error::Io(_),
                    ..
                }
        )
    }

    /// A write failure for lack of space (ENOSPC, or a disk quota).
    pub fn is_out_of_space(&self) -> bool {
        match self {
            StoreError::Storage(sled::Error::Io(e))
            | StoreError::FlushFailed {
                source: sled::Error::Io(e),
                ..
            } => {
                matches!(
                    e.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                ) || matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
            }
            _ => false,
        }
    }
}

/// The newest stored transaction and running totals, kept under `meta/head`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub last: Option<TxnRecord>,
    pub total_records: u64,
    pub total_txns: u64,
}

impl Head {
    fn commit_lsn(&self) -> Option<Lsn> {
        self.last.as_ref().map(|t| t.commit_lsn)
    }
}

/// Lines scanned per [`Store::records_with_deliveries`] call, so a long stretch of records
/// without deliveries does not hold the dispatcher for long.
pub const SCAN_LINES: usize = 16_384;

/// What [`Store::records_with_deliveries`] found, each record as its reader parsed it.
#[derive(Debug)]
pub struct DeliveryBatch<T> {
    pub records: Vec<T>,
    /// The last record scanned (with deliveries or not).
    pub scanned_to: Option<EventId>,
    /// Stopped at a limit: there may be more.
    pub more: bool,
}

/// A point-in-time summary for the CLI view and `/status`.
#[derive(Clone, Debug, Serialize)]
pub struct QueueSummary {
    /// Records ever stored.
    pub records: u64,
    /// Records still held (stored and not removed by retention).
    pub held: u64,
    /// Records removed by retention.
    pub removed: u64,
    /// Age of the oldest record held, in seconds (its commit time to now).
    pub oldest_record_age_seconds: Option<f64>,
    pub transactions: u64,
    pub durable: Durable,
    pub confirmed: Lsn,
    pub last_transaction: Option<TxnRecord>,
    /// Encryption at rest: the key new values are sealed with, and what the store may hold.
    pub encryption: Encryption,
}

/// Encryption at rest, as `fieldsync queue` and `/status` show it.
#[derive(Clone, Debug, Serialize)]
pub struct Encryption {
    /// The key new values are sealed with (`None`: they are stored in clear).
    pub key: Option<cipher::KeyId>,
    /// Keys that may have sealed a stored value, and whether some may be in clear: more than the
    /// current key means `fieldsync reencrypt` has work to do.
    pub held: keys::KeyRecord,
}

/// What [`Store::reencrypt`] did.
#[derive(Clone, Debug, Serialize)]
pub struct Reencrypted {
    /// Values sealed again under the current key (or opened, with encryption off).
    pub rewritten: u64,
    pub key: Option<cipher::KeyId>,
}

/// Handle on the open queue. Cheap to clone; one [`QueueWriter`] at a time writes.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    changes: SealedTree,
    meta: sled::Tree,
    sealer: Sealer,
    flusher: Arc<Flusher>,
    deliveries: deliveries::DeliveryStore,
    _stop: Arc<StopFlusherOnDrop>,
}

/// Dropped with the last [`Store`] handle: stops the flusher after its final flush.
struct StopFlusherOnDrop(Arc<Flusher>);

impl Drop for StopFlusherOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

const HEAD: &[u8] = b"head";
const SNAPSHOT: &[u8] = b"snapshot";

/// Progress of the initial snapshot, kept under `meta/snapshot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotState {
    Started,
    Done,
}
const CONFIRMED: &[u8] = b"confirmed";

/// The store holds personal data: its directory is `0700` and every file in it `0600` (files sled
/// creates later inherit the daemon's umask, which `fieldsync run` sets to `077`).
fn restrict(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}

impl Store {
    /// Opens (or creates) an unencrypted queue: see [`Store::open_sealed`].
    pub fn open(path: &Path, cache_capacity_bytes: u64) -> Result<Store, StoreError> {
        Store::open_sealed(path, cache_capacity_bytes, Sealer::default())
    }

    /// Opens (or creates) the queue, its values sealed by `sealer`, and removes any half-received
    /// transaction left by a crash. A store holding values under a key `sealer` lacks is refused
    /// before anything is written ([`StoreError::MissingKey`]).
    pub fn open_sealed(path: &Path, cache_capacity_bytes: u64, sealer: Sealer) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        restrict(path).map_err(|source| StoreError::Open {
            path: shown.clone(),
            source: sled::Error::Io(source),
        })?;
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity_bytes)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(None)
            .open()
            .map_err(|source| match &source {
                // sled reports a held lock file as an I/O error with this message
                sled::Error::Io(e) if e.to_string().contains("could not acquire lock") => {
                    StoreError::Locked { path: shown.clone() }
                }
                _ => StoreError::Open {
                    path: shown.clone(),
                    source,
                },
            })?;
        // and the files sled made just now
        restrict(path).map_err(|source| StoreError::Open {
            path: shown.clone(),
            source: sled::Error::Io(source),
        })?;
        let changes = SealedTree::open(&db, "changes", &sealer)?;
        let meta = db.open_tree("meta")?;
        keys::check(&db, &meta, &sealer, &shown)?;
        let head = read_head(&meta)?;
        retention::finish_removal(changes.raw(), &retention::read_removed(&meta)?)?;
        let removed = remove_after(&changes, head.commit_lsn())?;
        if removed > 0 {
            tracing::warn!(
                removed,
                "removed records of a transaction that was not fully received"
            );
        }
        db.flush()?;
        let durable = Durable {
            commit_lsn: head.commit_lsn().unwrap_or(Lsn::ZERO),
            end_lsn: head.last.as_ref().map_or(Lsn::ZERO, |t| t.end_lsn),
            deliveries: 0,
        };
        let flusher = Flusher::start(db.clone(), durable);
        let _stop = Arc::new(StopFlusherOnDrop(flusher.clone()));
        let deliveries = deliveries::DeliveryStore::open(&db, &sealer)?;
        Ok(Store {
            db,
            changes,
            meta,
            sealer,
            flusher,
            deliveries,
            _stop,
        })
    }

    /// The writer used by capture. Only one may be in use at a time.
    pub fn writer(&self) -> Result<QueueWriter, StoreError> {
        Ok(QueueWriter::new(self.clone(), read_head(&self.meta)?))
    }

    pub fn snapshot_state(&self) -> Result<Option<SnapshotState>, StoreError> {
        self.meta
            .get(SNAPSHOT)?
            .map(|v| serde_json::from_slice(&v).map_err(|e| corrupt("meta/snapshot", &e.to_string())))
            .transpose()
    }

    /// Records the snapshot's progress durably (flushed before returning).
    pub fn set_snapshot_state(&self, state: SnapshotState) -> Result<(), StoreError> {
        self.meta
            .insert(SNAPSHOT, serde_json::to_vec(&state).expect("state serializes"))?;
        self.db.flush()?;
        Ok(())
    }

    /// The delivery store (one per open queue: its buffers are shared by every handle).
    pub fn deliveries(&self) -> Result<deliveries::DeliveryStore, StoreError> {
        Ok(self.deliveries.clone())
    }

    /// The audit trail of operator actions, in the same database.
    pub fn audit(&self) -> Result<audit::AuditTrail, StoreError> {
        audit::AuditTrail::open(&self.db)
    }

    /// The wedding context store kept in the same database.
    pub fn context(&self) -> Result<context::ContextStore, StoreError> {
        context::ContextStore::open(&self.db, &self.sealer)
    }

    /// Watch the durable watermark: the newest transaction whose records are flushed.
    pub fn durable(&self) -> watch::Receiver<Durable> {
        self.flusher.subscribe()
    }

    /// True while something written is not yet flushed.
    pub fn has_pending(&self) -> bool {
        self.flusher.has_pending()
    }

    /// Flushes everything written so far and waits for the watermark to cover it.
    pub fn flush_blocking(&self) -> Result<Durable, StoreError> {
        self.flusher.flush_now()
    }

    /// Commit-to-durable latencies of recent transactions (for benchmarks and metrics).
    pub fn latency_samples(&self) -> &LatencySamples {
        self.flusher.latencies()
    }

    /// The highest LSN confirmed to PostgreSQL so far, as persisted.
    pub fn confirmed(&self) -> Result<Lsn, StoreError> {
        Ok(match self.meta.get(CONFIRMED)? {
            Some(v) => Lsn::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| corrupt("meta/confirmed", "not 8 bytes"))?,
            ),
            None => Lsn::ZERO,
        })
    }

    /// Records a confirmed LSN. Persisted with the next flush; never moves backwards.
    pub fn save_confirmed(&self, lsn: Lsn) -> Result<(), StoreError> {
        self.meta.fetch_and_update(CONFIRMED, |old| {
            let old = old
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .map_or(Lsn::ZERO, Lsn::from_be_bytes);
            Some(old.max(lsn).to_be_bytes().to_vec())
        })?;
        Ok(())
    }

    pub fn head(&self) -> Result<Head, StoreError> {
        read_head(&self.meta)
    }

    /// Writes and flushes a probe key: an error means the queue cannot make records durable.
    pub fn probe_write(&self) -> Result<(), StoreError> {
        self.meta
            .insert("probe", &chrono::Utc::now().timestamp_micros().to_be_bytes())?;
        self.meta.flush()?;
        Ok(())
    }

    pub fn summary(&self) -> Result<QueueSummary, StoreError> {
        let head = self.head()?;
        let removed = self.removed()?.records;
        let now = chrono::Utc::now().timestamp_micros();
        Ok(QueueSummary {
            records: head.total_records,
            held: head.total_records.saturating_sub(removed),
            removed,
            oldest_record_age_seconds: self.oldest_commit_time()?.map(|t| (now - t).max(0) as f64 / 1e6),
            transactions: head.total_txns,
            durable: *self.durable().borrow(),
            confirmed: self.confirmed()?,
            last_transaction: head.last,
            encryption: Encryption {
                key: self.sealer.current(),
                held: keys::read(&self.meta)?.unwrap_or_default(),
            },
        })
    }

    /// Seals every stored value under the current key (opens them all with encryption off), then
    /// records that no other key is needed: the older keys may then leave the configuration.
    /// Runs beside capture and delivery (each value is swapped only if unchanged meanwhile).
    pub fn reencrypt(&self) -> Result<Reencrypted, StoreError> {
        let mut rewritten = 0;
        for name in keys::SEALED_TREES {
            rewritten += SealedTree::open(&self.db, name, &self.sealer)?.reseal()?;
        }
        // the rewritten values durable before the record stops naming their old keys
        self.db.flush()?;
        let current = self.sealer.current();
        keys::write(
            &self.meta,
            &keys::KeyRecord {
                keys: current.into_iter().collect(),
                plain: current.is_none(),
            },
        )?;
        Ok(Reencrypted {
            rewritten,
            key: current,
        })
    }

    /// Durable records after `after` (exclusive), in commit order, at most `limit`.
    pub fn records_after(
        &self,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<ChangeRecord>, StoreError> {
        let mut out = Vec::new();
        self.visit_after(after, |id, line| {
            if out.len() >= limit {
                return Ok(false);
            }
            out.push(decode_record(&id, line)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Durable records after `after` that list deliveries (see `crate::dispatch`), at most
    /// `limit`, without decoding the others. Scans at most [`SCAN_LINES`] lines per call.
    pub fn records_with_deliveries<T, E: std::fmt::Display>(
        &self,
        after: Option<EventId>,
        limit: usize,
        parse: impl Fn(EventId, &[u8]) -> Result<Option<T>, E>,
    ) -> Result<DeliveryBatch<T>, StoreError> {
        let mut batch = DeliveryBatch {
            records: Vec::new(),
            scanned_to: None,
            more: false,
        };
        let mut scanned = 0;
        self.visit_after(after, |id, line| {
            if batch.records.len() >= limit || scanned >= SCAN_LINES {
                batch.more = true;
                return Ok(false);
            }
            scanned += 1;
            if chunk::has_deliveries(line) {
                let queued = parse(id, line).map_err(|e| corrupt(&format!("record {id}"), &e.to_string()))?;
                batch.records.extend(queued);
            }
            batch.scanned_to = Some(id);
            Ok(true)
        })?;
        Ok(batch)
    }

    /// Visits the durable record lines after `after`, in order, while `visit` returns true.
    fn visit_after(
        &self,
        after: Option<EventId>,
        mut visit: impl FnMut(EventId, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let visible = self.durable().borrow().commit_lsn;
        for item in self.changes.range(self.chunk_holding(after)?..) {
            let (_, chunk) = item?;
            for line in chunk::lines(&chunk) {
                let id = chunk::line_id(line).ok_or_else(|| corrupt("record line", "no id prefix"))?;
                if after.is_some_and(|a| id <= a) {
                    continue;
                }
                if id.commit_lsn > visible || !visit(id, line)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The key of the chunk holding `after` (where a read after it starts); empty for the start.
    fn chunk_holding(&self, after: Option<EventId>) -> Result<Vec<u8>, StoreError> {
        match after.map(|id| self.changes.raw().range(..=id.key()).next_back()) {
            Some(Some(item)) => Ok(item?.0.to_vec()),
            _ => Ok(Vec::new()),
        }
    }

    /// The durable record with this id, if any.
    pub fn record(&self, id: EventId) -> Result<Option<ChangeRecord>, StoreError> {
        let visible = self.durable().borrow().commit_lsn;
        if id.commit_lsn > visible {
            return Ok(None);
        }
        let Some(item) = self.changes.range(..=id.key()).next_back() else {
            return Ok(None);
        };
        let (_, chunk) = item?;
        for line in chunk::lines(&chunk) {
            if chunk::line_id(line) == Some(id) {
                return decode_record(&id, line).map(Some);
            }
        }
        Ok(None)
    }

    /// The newest `n` durable records, oldest first.
    pub fn last_records(&self, n: usize) -> Result<Vec<ChangeRecord>, StoreError> {
        let visible = self.durable().borrow().commit_lsn;
        let mut out = Vec::new();
        'chunks: for item in self.changes.iter().rev() {
            let (_, chunk) = item?;
            for line in chunk::lines(&chunk).rev() {
                let id = chunk::line_id(line).ok_or_else(|| corrupt("record line", "no id prefix"))?;
                if id.commit_lsn > visible {
                    continue;
                }
                if out.len() == n {
                    break 'chunks;
                }
                out.push(decode_record(&id, line)?);
            }
        }
        out.reverse();
        Ok(out)
    }
}

fn read_head(meta: &sled::Tree) -> Result<Head, StoreError> {
    match meta.get(HEAD)? {
        Some(v) => serde_json::from_slice(&v).map_err(|e| corrupt("meta/head", &e.to_string())),
        None => Ok(Head::default()),
    }
}

/// Removes every record committed after `head` (all of them when `None`): whole chunks past it,
/// and the tail of the chunk that straddles it. Returns how many records were removed.
fn remove_after(changes: &SealedTree, head: Option<Lsn>) -> Result<u64, StoreError> {
    let from = match head {
        Some(Lsn(u64::MAX)) => return Ok(0),
        Some(h) => EventId {
            commit_lsn: Lsn(h.0 + 1),
            index: 0,
        }
        .key()
        .to_vec(),
        None => Vec::new(),
    };
    let mut removed = 0;
    for item in changes.range(from.clone()..) {
        let (key, chunk) = item?;
        removed += chunk::lines(&chunk).count() as u64;
        changes.remove(key)?;
    }
    if let Some(item) = changes.range(..from).next_back() {
        let (key, chunk) = item?;
        let before = chunk::lines(&chunk).count() as u64;
        match chunk::retain(&chunk, |id| head.is_some_and(|h| id.commit_lsn <= h)) {
            Some(kept) if kept.len() == chunk.len() => {}
            Some(kept) => {
                removed += before - chunk::lines(&kept).count() as u64;
                changes.insert(key, &kept)?;
            }
            None => {
                removed += before;
                changes.remove(key)?;
            }
        }
    }
    Ok(removed)
}

fn decode_record(id: &EventId, bytes: &[u8]) -> Result<ChangeRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(&format!("record {id}"), &e.to_string()))
}

fn corrupt(what: &str, reason: &str) -> StoreError {
    StoreError::Corrupt {
        what: what.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests;
