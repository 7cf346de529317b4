//! Slot health, watched over ordinary SQL connections:
//! - every `slot_check_interval`: how far the server's WAL is ahead of what the slot has
//!   confirmed (lag bytes), the slot's `wal_status` and `safe_wal_size` (how much more WAL may
//!   be written before the slot is lost), and whether a process holds it;
//! - every half `heartbeat_interval`: a heartbeat, a non-transactional logical message
//!   (`pg_logical_emit_message(false, 'fieldsync_heartbeat', <Unix µs>)`) that comes back
//!   through the replication stream. Its round trip is the ingestion latency; one not back after
//!   half the interval means the stream is stalled (a connection silently blocked, a walsender
//!   stuck), so a stall shows within `heartbeat_interval`.
//!
//! Shown in `/metrics`, `/status` and `/readyz`.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::lsn::Lsn;
use crate::pg::PgTarget;

/// How soon a slot that does not exist yet is looked for again.
const MISSING_SLOT_RECHECK: Duration = Duration::from_millis(200);

/// The prefix of heartbeat messages.
pub const HEARTBEAT_PREFIX: &str = "fieldsync_heartbeat";

/// Writes a heartbeat every half `interval` until `shutdown`; `status` learns when each was
/// written and, from the stream, when it came back.
pub async fn heartbeat(
    target: PgTarget,
    interval: Duration,
    status: std::sync::Arc<crate::source::progress::SourceStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    status.heartbeat_started(interval / 2);
    let mut client: Option<tokio_postgres::Client> = None;
    loop {
        if client.as_ref().map_or(true, |c| c.is_closed()) {
            client = crate::pg::connect_sql(&target).await.ok();
        }
        if let Some(c) = &client {
            let now = chrono::Utc::now().timestamp_micros();
            let sent = c
                .execute(
                    "SELECT pg_logical_emit_message(false, $1, $2)",
                    &[&HEARTBEAT_PREFIX, &now.to_string()],
                )
                .await;
            match sent {
                Ok(_) => status.heartbeat_sent(now),
                Err(e) => {
                    tracing::warn!("cannot write a heartbeat: {e}");
                    client = None;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval / 2) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SlotHealth {
    pub slot: String,
    /// `pg_current_wal_lsn() - confirmed_flush_lsn`.
    pub lag_bytes: u64,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    pub safe_wal_size: Option<i64>,
    pub active: bool,
    pub checked_unix_ms: i64,
}

/// The newest observation, or why there is none.
#[derive(Default)]
pub struct SlotWatch {
    latest: Mutex<Option<Result<SlotHealth, String>>>,
}

impl SlotWatch {
    pub fn latest(&self) -> Option<Result<SlotHealth, String>> {
        self.latest.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, v: Result<SlotHealth, String>) {
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
    }

    /// Observes the slot every `interval` until `shutdown`.
    pub async fn run(
        &self,
        target: PgTarget,
        slot: String,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut client: Option<tokio_postgres::Client> = None;
        loop {
            if client.as_ref().map_or(true, |c| c.is_closed()) {
                client = match crate::pg::connect_sql(&target).await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        self.set(Err(format!("cannot connect to read the slot's health: {e}")));
                        None
                    }
                };
            }
            // a slot not made yet (the source makes it when it connects) is looked for again soon,
            // so that /readyz is right within moments of a first start
            let mut wait = interval;
            if let Some(c) = &client {
                let observed = match observe(c, &slot).await {
                    Ok(Some(health)) => Ok(health),
                    Ok(None) => {
                        wait = wait.min(MISSING_SLOT_RECHECK);
                        Err(format!(
                            "slot {} does not exist (fieldsync creates it when it starts replication)",
                            crate::secret::quoted(&slot)
                        ))
                    }
                    Err(e) => {
                        client = None;
                        Err(e)
                    }
                };
                self.set(observed);
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}

/// The slot's health, `None` when there is no such slot.
async fn observe(c: &tokio_postgres::Client, slot: &str) -> Result<Option<SlotHealth>, String> {
    let rows = c
        .query(
            "SELECT pg_current_wal_lsn()::text, confirmed_flush_lsn::text, wal_status, safe_wal_size, active
               FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| format!("reading pg_replication_slots: {e}"))?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let lsn = |i: usize| -> Option<Lsn> { row.get::<_, Option<String>>(i)?.parse().ok() };
    let current = lsn(0).unwrap_or(Lsn::ZERO);
    let confirmed = lsn(1).unwrap_or(current);
    Ok(Some(SlotHealth {
        slot: slot.to_owned(),
        lag_bytes: current.0.saturating_sub(confirmed.0),
        wal_status: row.get(2),
        safe_wal_size: row.get(3),
        active: row.get(4),
        checked_unix_ms: chrono::Utc::now().timestamp_millis(),
    }))
}
