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

    pub fn touch(&self, unix_ms: i64) {
        self.last_message_unix_ms.store(unix_ms, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> SourceSnapshot {
        SourceSnapshot {
            connected: self.connected.load(Ordering::Relaxed),
            received_lsn: Lsn(self.received.load(Ordering::Relaxed)),
            durable_lsn: Lsn(self.durable.load(Ordering::Relaxed)),
            confirmed_lsn: Lsn(self.confirmed.load(Ordering::Relaxed)),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            last_message_unix_ms: self.last_message_unix_ms.load(Ordering::Relaxed),
            last_error: self.last_error.lock().expect("status lock").clone(),
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
