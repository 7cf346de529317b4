//! WAL positions and the one rule for what may be confirmed to PostgreSQL.
//!
//! - `received`: the furthest position the server told us about (XLogData, keepalives, commits).
//! - `durable`: the end LSN of the newest transaction whose records are flushed in the queue.
//! - `confirmed`: what was last reported as flushed. Monotonic.
//!
//! Rule: while a transaction is open or written records await a flush, only `durable` may be
//! confirmed. When idle, everything received is either durable or not ours (other tables, empty
//! transactions, replays), so `received` may be confirmed and WAL is not pinned by idle tables.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::lsn::Lsn;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    received: Lsn,
    durable: Lsn,
    confirmed: Lsn,
}

impl Progress {
    /// Starts with everything at `start`: the position replication resumes from.
    pub fn new(start: Lsn) -> Progress {
        Progress {
            received: start,
            durable: start,
            confirmed: start,
        }
    }

    pub fn received(&self) -> Lsn {
        self.received
    }

    pub fn confirmed(&self) -> Lsn {
        self.confirmed
    }

    pub fn observe_received(&mut self, lsn: Lsn) {
        self.received = self.received.max(lsn);
    }

    pub fn observe_durable(&mut self, lsn: Lsn) {
        self.durable = self.durable.max(lsn);
        self.received = self.received.max(self.durable);
    }

    /// The position to report as flushed now. `idle`: no transaction open and nothing written
    /// awaits a flush.
    pub fn confirm(&mut self, idle: bool) -> Lsn {
        let candidate = if idle {
            self.received.max(self.durable)
        } else {
            self.durable
        };
        self.confirmed = self.confirmed.max(candidate);
        debug_assert!(self.received >= self.durable);
        self.confirmed
    }
}

/// What the source is doing, shared with the HTTP status endpoint.
#[derive(Default)]
pub struct SourceStatus {
    received: AtomicU64,
    durable: AtomicU64,
    confirmed: AtomicU64,
    connected: AtomicBool,
    reconnects: AtomicU64,
    last_message_unix_ms: AtomicI64,
    last_error: Mutex<Option<String>>,
    heartbeat: Heartbeat,
    /// Capture is not reading WAL because the dispatcher is backpressured (policy `pause`).
    paused_backpressure: AtomicBool,
    /// Capture is not reading WAL because the queue reached `[queue] max_disk`.
    paused_max_disk: AtomicBool,
    /// The queue failed a write or a flush (a full filesystem): what, where and how to fix it.
    storage_error: Mutex<Option<String>>,
}

/// Why capture may stop reading WAL, as `fieldsync_capture_paused{reason}` names them.
pub const PAUSE_REASONS: [&str; 3] = ["backpressure", "max_disk", "storage_error"];

/// The heartbeat's bookkeeping (see `source::health`): when the oldest heartbeat not yet seen
/// in the stream was written, and the newest ingestion latency.
#[derive(Default)]
struct Heartbeat {
    /// Unix microseconds of the oldest heartbeat written and not yet received; 0 when none waits.
    pending_since: AtomicI64,
    latency_micros: AtomicI64,
    /// A heartbeat older than this is overdue: the stream is stalled. 0: heartbeats are off.
    overdue_after_ms: AtomicI64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SourceSnapshot {
    pub connected: bool,
    pub received_lsn: Lsn,
    pub durable_lsn: Lsn,
    pub confirmed_lsn: Lsn,
    pub reconnects: u64,
    pub last_message_unix_ms: i64,
    pub last_error: Option<String>,
    /// Commit-to-received time of the newest heartbeat, seconds.
    pub heartbeat_latency_seconds: Option<f64>,
    /// Why the stream counts as stalled: a heartbeat written that long ago has not come back.
    pub stalled: Option<String>,
    /// Why capture is not reading WAL now (of [`PAUSE_REASONS`]); empty while it reads.
    pub capture_paused: Vec<&'static str>,
    /// The queue's write failure, while it lasts.
    pub storage_error: Option<String>,
}

impl SourceStatus {
    pub fn record_positions(&self, received: Lsn, durable: Lsn, confirmed: Lsn) {
        self.received.store(received.0, Ordering::Relaxed);
        self.durable.store(durable.0, Ordering::Relaxed);
        self.confirmed.store(confirmed.0, Ordering::Relaxed);
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        if connected {
            *self.last_error.lock().expect("status lock") = None;
        }
    }

    pub fn record_reconnect(&self, error: String) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().expect("status lock") = Some(error);
    }

    /// Which reasons hold capture now (see [`PAUSE_REASONS`]).
    pub fn set_paused(&self, backpressure: bool, max_disk: bool) {
        self.paused_backpressure.store(backpressure, Ordering::Relaxed);
        self.paused_max_disk.store(max_disk, Ordering::Relaxed);
    }

    /// The queue cannot write (`Some`: what, where, how to fix), or writes again (`None`).
    pub fn set_storage_error(&self, error: Option<String>) {
        *self.storage_error.lock().expect("status lock") = error;
    }

    pub fn touch(&self, unix_ms: i64) {
        self.last_message_unix_ms.store(unix_ms, Ordering::Relaxed);
    }

    /// Heartbeats are written every half of `overdue_after`; one not received after that long
    /// marks the stream as stalled.
    pub fn heartbeat_started(&self, overdue_after: std::time::Duration) {
        let ms = i64::try_from(overdue_after.as_millis()).unwrap_or(i64::MAX);
        self.heartbeat.overdue_after_ms.store(ms, Ordering::Relaxed);
    }

    pub fn heartbeat_sent(&self, unix_micros: i64) {
        let _ = self.heartbeat.pending_since.compare_exchange(
            0,
            unix_micros,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// A heartbeat written at `sent` (Unix microseconds) came through the stream at `now`.
    pub fn heartbeat_received(&self, sent: i64, now: i64) {
        self.heartbeat
            .latency_micros
            .store((now - sent).max(0), Ordering::Relaxed);
        let pending = self.heartbeat.pending_since.load(Ordering::Relaxed);
        if pending != 0 && sent >= pending {
            let _ = self.heartbeat.pending_since.compare_exchange(
                pending,
                0,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn stalled(&self, now_micros: i64) -> Option<String> {
        let overdue_ms = self.heartbeat.overdue_after_ms.load(Ordering::Relaxed);
        let pending = self.heartbeat.pending_since.load(Ordering::Relaxed);
        if overdue_ms == 0 || pending == 0 {
            return None;
        }
        let waited_ms = (now_micros - pending) / 1000;
        (waited_ms > overdue_ms).then(|| {
            format!(
                "replication stream stalled: a heartbeat written {:.1} s ago has not come through the stream (overdue after {:.1} s)",
                waited_ms as f64 / 1000.0,
                overdue_ms as f64 / 1000.0
            )
        })
    }

    pub fn snapshot(&self) -> SourceSnapshot {
        let latency = self.heartbeat.latency_micros.load(Ordering::Relaxed);
        let storage_error = self.storage_error.lock().expect("status lock").clone();
        SourceSnapshot {
            connected: self.connected.load(Ordering::Relaxed),
            received_lsn: Lsn(self.received.load(Ordering::Relaxed)),
            durable_lsn: Lsn(self.durable.load(Ordering::Relaxed)),
            confirmed_lsn: Lsn(self.confirmed.load(Ordering::Relaxed)),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            last_message_unix_ms: self.last_message_unix_ms.load(Ordering::Relaxed),
            last_error: self.last_error.lock().expect("status lock").clone(),
            heartbeat_latency_seconds: (latency > 0).then(|| latency as f64 / 1e6),
            stalled: self.stalled(chrono::Utc::now().timestamp_micros()),
            capture_paused: PAUSE_REASONS
                .into_iter()
                .zip([
                    self.paused_backpressure.load(Ordering::Relaxed),
                    self.paused_max_disk.load(Ordering::Relaxed),
                    storage_error.is_some(),
                ])
                .filter_map(|(reason, on)| on.then_some(reason))
                .collect(),
            storage_error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_transaction_confirms_only_the_durable_position() {
        let mut p = Progress::new(Lsn(100));
        p.observe_received(Lsn(500));
        assert_eq!(p.confirm(false), Lsn(100));
        p.observe_durable(Lsn(300));
        assert_eq!(p.confirm(false), Lsn(300));
    }

    #[test]
    fn an_idle_stream_confirms_what_it_received_so_idle_tables_do_not_pin_wal() {
        let mut p = Progress::new(Lsn(100));
        p.observe_received(Lsn(900));
        assert_eq!(p.confirm(true), Lsn(900));
    }

    #[test]
    fn the_confirmed_position_never_moves_backwards() {
        let mut p = Progress::new(Lsn(100));
        p.observe_received(Lsn(900));
        assert_eq!(p.confirm(true), Lsn(900));
        // a new transaction opens; durable is still behind what was confirmed while idle
        p.observe_durable(Lsn(200));
        assert_eq!(p.confirm(false), Lsn(900));
        p.observe_received(Lsn(50));
        assert_eq!(p.received(), Lsn(900));
    }
}
