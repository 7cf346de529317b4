//! The replication session loop: connect, make sure the slot exists, stream from the right
//! position, feed capture, confirm only what the queue made durable, reconnect with capped
//! backoff after transient failures, stop cleanly on shutdown.
//!
//! Start position: the larger of the queue's stored head/confirmed position and the slot's
//! `confirmed_flush_lsn`. Transactions PostgreSQL sends again anyway are recognised by capture.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rand::Rng;
use tokio::sync::watch;

use super::conn::{ReplicationConnection, SnapshotAction};
use super::error::SourceError;
use super::progress::{Progress, SourceStatus};
use super::wire::ReplicationMessage;
use crate::capture::{Capture, CaptureError, Step};
use crate::check::quote_literal;
use crate::config::{Config, SnapshotMode};
use crate::lsn::Lsn;
use crate::pgoutput::{self, DecodeError};
use crate::store::{SnapshotState, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot decode the pgoutput message at {lsn}: {source}")]
    Decode {
        lsn: Lsn,
        #[source]
        source: DecodeError,
    },
    #[error("replication slot {slot:?} does not exist and [replication] create_slot is false; fix: SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput');")]
    SlotMissing { slot: String },
    #[error("replication slot {slot:?} {problem}; fix: {fix}")]
    SlotUnusable {
        slot: String,
        problem: String,
        fix: String,
    },
    #[error("initial snapshot failed: {0} (the next start takes it again)")]
    Snapshot(String),
}

impl StreamError {
    /// The queue's write failure (a full filesystem) behind this error, if that is what it is.
    pub fn into_write_failure(self) -> Result<StoreError, StreamError> {
        match self {
            StreamError::Store(e) | StreamError::Capture(CaptureError::Store(e)) if e.is_write_failure() => {
                Ok(e)
            }
            other => Err(other),
        }
    }

    /// Transient errors are retried with backoff; everything else stops the daemon.
    pub fn is_transient(&self) -> bool {
        match self {
            StreamError::Source(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// How long a session must have streamed before the reconnect backoff starts over.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);
/// Upper bound for the goodbye exchange on shutdown.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Source {
    config: Arc<Config>,
    queue: Store,
    status: Arc<SourceStatus>,
    capture: Capture,
    progress: Progress,
    /// True while dispatch backpressure (policy `pause`) asks not to read the stream.
    pause: watch::Receiver<bool>,
    /// True while the queue is at its disk bound (`[queue] max_disk`, see `store::disk`).
    disk_full: watch::Receiver<bool>,
}

impl Source {
    pub fn new(config: Arc<Config>, queue: Store, status: Arc<SourceStatus>) -> Result<Source, StreamError> {
        let events = crate::events::EventBuilder::new(&config, queue.context()?);
        let capture = Capture::new(&config, queue.writer()?, events);
        let head_end = queue.head()?.last.map_or(Lsn::ZERO, |t| t.end_lsn);
        let progress = Progress::new(queue.confirmed()?.max(head_end));
        Ok(Source {
            config,
            queue,
            status,
            capture,
            progress,
            pause: watch::channel(false).1,
            disk_full: watch::channel(false).1,
        })
    }

    /// Stops reading the stream while `pause` is true (status updates go on, so the server keeps
    /// the connection and the WAL).
    pub fn with_pause(mut self, pause: watch::Receiver<bool>) -> Source {
        self.pause = pause;
        self
    }

    /// Stops reading the stream while the queue is at its disk bound; either reason pauses.
    pub fn with_disk_bound(mut self, full: watch::Receiver<bool>) -> Source {
        self.disk_full = full;
        self
    }

    /// Streams until `shutdown` turns true (Ok) or a definite error (Err).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), StreamError> {
        let rc = self.config.replication.clone();
        let mut backoff = rc.reconnect_backoff_min;
        loop {
            let started = Instant::now();
            let result = self.session(&mut shutdown).await;
            self.status.set_connected(false);
            self.capture.reset()?;
            match result {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() => {
                    if started.elapsed() >= HEALTHY_SESSION {
                        backoff = rc.reconnect_backoff_min;
                    }
                    let delay = jittered(backoff);
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "replication connection lost; reconnecting");
                    self.status.record_reconnect(e.to_string());
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(rc.reconnect_backoff_max);
                }
                Err(e) => {
                    tracing::error!(error = %e, "replication stopped by a definite error");
                    return Err(e);
                }
            }
        }
    }

    async fn session(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), StreamError> {
        if *shutdown.borrow() {
            return Ok(());
        }
        let rc = self.config.replication.clone();
        let mut conn = ReplicationConnection::connect(&self.config.postgres).await?;
        let system = conn.identify_system().await?;
        let position = self.slot_position(&mut conn).await?;
        let slot_confirmed = match (self.snapshot_needed()?, position) {
            (Need::Resume, _) | (Need::First, None) => {
                super::snapshot::take(&mut conn, &self.config, &self.queue, &mut self.capture).await?
            }
            (_, Some(lsn)) => lsn,
            (_, None) => self.create_slot(&mut conn).await?,
        };
        let start = self.progress.confirmed().max(slot_confirmed);
        let mut stream = conn.start_replication(&rc.slot, start, &rc.publication).await?;
        self.progress.observe_received(start);
        self.status.set_connected(true);
        tracing::info!(slot = %rc.slot, publication = %rc.publication, start = %start, server_wal = %system.xlogpos, "replication started");

        let mut ticker = tokio::time::interval(rc.status_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(1024);
        let (mut pause, mut disk_full) = (self.pause.clone(), self.disk_full.clone());
        // without a sender (no dispatcher, or it ended) a pause can no longer change
        let (mut pause_open, mut disk_open) = (true, true);
        loop {
            let (backpressure, full) = (*pause.borrow_and_update(), *disk_full.borrow_and_update());
            self.status.set_paused(backpressure, full);
            let paused = backpressure || full;
            tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    self.goodbye(stream).await;
                    return Ok(());
                }
                changed = pause.changed(), if pause_open => pause_open = changed.is_ok(),
                changed = disk_full.changed(), if disk_open => disk_open = changed.is_ok(),
                read = stream.next_batch(&mut batch), if !paused => {
                    read?;
                    let mut reply = false;
                    for msg in batch.drain(..) {
                        match msg {
                            ReplicationMessage::XLogData { wal_start, wal_end, data, .. } => {
                                self.progress.observe_received(wal_end);
                                self.apply(wal_start, &data)?;
                            }
                            ReplicationMessage::Keepalive { wal_end, reply_requested, .. } => {
                                self.progress.observe_received(wal_end);
                                reply |= reply_requested;
                            }
                        }
                    }
                    self.capture.sync()?;
                    self.status.touch(unix_ms_now());
                    if reply {
                        self.send_status(&mut stream).await?;
                    }
                }
                _ = ticker.tick() => self.send_status(&mut stream).await?,
            }
        }
    }

    fn apply(&mut self, lsn: Lsn, data: &Bytes) -> Result<(), StreamError> {
        let msg = pgoutput::decode(data).map_err(|source| StreamError::Decode { lsn, source })?;
        if let pgoutput::Message::Message(m) = &msg {
            if !m.transactional && m.prefix == super::health::HEARTBEAT_PREFIX {
                if let Some(sent) = std::str::from_utf8(&m.content).ok().and_then(|t| t.parse().ok()) {
                    self.status
                        .heartbeat_received(sent, chrono::Utc::now().timestamp_micros());
                }
            }
        }
        if let Step::Committed { end_lsn, .. } = self.capture.apply(msg, lsn)? {
            self.progress.observe_received(end_lsn);
        }
        Ok(())
    }

    /// Reports the confirmable position (see [`Progress::confirm`]) and remembers it.
    async fn send_status(&mut self, stream: &mut super::wire::ReplicationStream) -> Result<(), StreamError> {
        let durable = self.queue.durable().borrow().end_lsn;
        self.progress.observe_durable(durable);
        let idle = !self.capture.in_transaction() && !self.queue.has_pending();
        let flush = self.progress.confirm(idle);
        let received = self.progress.received();
        stream.send_status(received, flush, flush, false).await?;
        self.queue.save_confirmed(flush)?;
        self.status.record_positions(received, durable, flush);
        Ok(())
    }

    /// Clean stop: drop a half-received transaction, flush what is written, confirm it, end the copy.
    async fn goodbye(&mut self, mut stream: super::wire::ReplicationStream) {
        if let Err(e) = self.capture.reset() {
            tracing::warn!(error = %e, "could not discard a partly received transaction; the next start removes it");
        }
        let queue = self.queue.clone();
        match tokio::task::spawn_blocking(move || queue.flush_blocking()).await {
            Ok(Ok(durable)) => tracing::info!(durable = %durable.end_lsn, "queue flushed"),
            Ok(Err(e)) => tracing::error!(error = %e, "final queue flush failed"),
            Err(e) => tracing::error!(error = %e, "final queue flush task failed"),
        }
        let bye = async {
            self.send_status(&mut stream).await?;
            stream.finish().await.map_err(StreamError::from)
        };
        match tokio::time::timeout(GOODBYE_TIMEOUT, bye).await {
            Ok(Ok(())) => tracing::info!(confirmed = %self.progress.confirmed(), "replication stopped"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "replication goodbye failed; the slot resumes from the last confirmed position")
            }
            Err(_) => tracing::warn!("replication goodbye timed out"),
        }
    }

    /// Whether an initial snapshot must be taken now.
    fn snapshot_needed(&self) -> Result<Need, StreamError> {
        if self.config.events.snapshot == SnapshotMode::Never {
            return Ok(Need::No);
        }
        Ok(match self.queue.snapshot_state()? {
            Some(SnapshotState::Started) => Need::Resume,
            Some(SnapshotState::Done) => Need::No,
            // a first start with an empty queue; a slot made beforehand is taken as the start
            None if self.queue.head()?.last.is_none() => Need::First,
            None => Need::No,
        })
    }

    async fn create_slot(&mut self, conn: &mut ReplicationConnection) -> Result<Lsn, StreamError> {
        let rc = &self.config.replication;
        if !rc.create_slot {
            return Err(StreamError::SlotMissing {
                slot: rc.slot.clone(),
            });
        }
        let created = conn.create_slot(&rc.slot, SnapshotAction::NoExport).await?;
        tracing::info!(slot = %rc.slot, consistent_point = %created.consistent_point, "replication slot created");
        Ok(created.consistent_point)
    }

    /// The slot's `confirmed_flush_lsn`, or `None` when it does not exist; checks it is usable.
    async fn slot_position(&mut self, conn: &mut ReplicationConnection) -> Result<Option<Lsn>, StreamError> {
        let rc = &self.config.replication;
        let rows = conn
            .simple_query(&format!(
                "SELECT plugin, database, confirmed_flush_lsn, wal_status FROM pg_replication_slots WHERE slot_name = {}",
                quote_literal(&rc.slot)
            ))
            .await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let unusable = |problem: String, fix: String| StreamError::SlotUnusable {
            slot: rc.slot.clone(),
            problem,
            fix,
        };
        if field(0) != "pgoutput" {
            return Err(unusable(
                format!("uses output plugin {:?}, not pgoutput", field(0)),
                format!(
                    "choose another [replication] slot, or SELECT pg_drop_replication_slot('{}');",
                    rc.slot
                ),
            ));
        }
        if field(1) != self.config.postgres.dbname {
            return Err(unusable(
                format!(
                    "belongs to database {:?}, not {:?}",
                    field(1),
                    self.config.postgres.dbname
                ),
                "choose another [replication] slot name for this database".into(),
            ));
        }
        if field(3) == "lost" && rc.on_slot_lost == crate::config::SlotLostPolicy::Recreate {
            // a fresh snapshot replaces the slot (snapshot::take drops it and creates a new one);
            // without snapshots the slot is dropped here and created again at the current WAL
            tracing::warn!(
                slot = %rc.slot,
                "the slot was invalidated (wal_status = lost); on_slot_lost = recreate: dropping it for a fresh slot and snapshot"
            );
            if self.config.events.snapshot == SnapshotMode::Never {
                conn.simple_query(&format!(
                    "SELECT pg_drop_replication_slot({})",
                    quote_literal(&rc.slot)
                ))
                .await?;
            } else {
                self.queue.set_snapshot_state(SnapshotState::Started)?;
            }
            return Ok(None);
        }
        if field(3) == "lost" {
            return Err(unusable(
                "was invalidated (wal_status = lost): the WAL it needed was removed".into(),
                format!(
                    "SELECT pg_drop_replication_slot('{}'); then restart fieldsync (changes made while the slot was lost are not captured; a fresh snapshot is needed)",
                    rc.slot
                ),
            ));
        }
        Ok(Some(field(2).parse().unwrap_or(Lsn::ZERO)))
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Need {
    No,
    /// First start: no slot, empty queue.
    First,
    /// A snapshot was started and not finished.
    Resume,
}

/// Full jitter over the upper half: between `d/2` and `d`.
fn jittered(d: Duration) -> Duration {
    let half = d / 2;
    half + Duration::from_micros(rand::thread_rng().gen_range(0..=half.as_micros() as u64))
}

fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
