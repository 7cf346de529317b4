//! The `/metrics` page: the counters as recorded (`crate::metrics`), and gauges read from the
//! daemon's state at each scrape.

use metrics::gauge;

use crate::dispatch::DispatchStatus;
use crate::source::health::SlotHealth;
use crate::source::progress::SourceSnapshot;
use crate::store::QueueSummary;

/// The text exposition: counters as recorded, gauges from the state passed in.
pub fn render(
    source: &SourceSnapshot,
    slot: Option<&SlotHealth>,
    dispatch: Option<&DispatchStatus>,
    disk: Option<&crate::store::disk::DiskWatch>,
    queue: Option<&QueueSummary>,
) -> String {
    let handle = crate::telemetry::metrics::install();
    let now_ms = chrono::Utc::now().timestamp_millis();
    gauge!("fieldsync_replication_connected").set(f64::from(u8::from(source.connected)));
    gauge!("fieldsync_replication_received_lsn").set(source.received_lsn.0 as f64);
    gauge!("fieldsync_replication_durable_lsn").set(source.durable_lsn.0 as f64);
    gauge!("fieldsync_replication_confirmed_lsn").set(source.confirmed_lsn.0 as f64);
    gauge!("fieldsync_replication_reconnects").set(source.reconnects as f64);
    if source.last_message_unix_ms > 0 {
        gauge!("fieldsync_replication_last_message_age_seconds")
            .set((now_ms - source.last_message_unix_ms).max(0) as f64 / 1000.0);
    }
    gauge!("fieldsync_replication_stalled").set(f64::from(u8::from(source.stalled.is_some())));
    if let Some(latency) = source.heartbeat_latency_seconds {
        gauge!("fieldsync_heartbeat_latency_seconds").set(latency);
    }
    for reason in crate::source::progress::PAUSE_REASONS {
        let on = source.capture_paused.contains(&reason);
        gauge!("fieldsync_capture_paused", "reason" => reason).set(f64::from(u8::from(on)));
    }
    if let Some(d) = disk {
        gauge!("fieldsync_queue_disk_bytes").set(d.bytes() as f64);
        gauge!("fieldsync_queue_max_disk_bytes").set(d.max_bytes() as f64);
    }
    if let Some(s) = slot {
        gauge!("fieldsync_replication_lag_bytes").set(s.lag_bytes as f64);
        if let Some(safe) = s.safe_wal_size {
            gauge!("fieldsync_slot_safe_wal_size_bytes").set(safe as f64);
        }
        for status in ["reserved", "extended", "unreserved", "lost"] {
            let on = s.wal_status.as_deref() == Some(status);
            gauge!("fieldsync_slot_wal_status", "status" => status).set(f64::from(u8::from(on)));
        }
    }
    if let Some(d) = dispatch {
        gauge!("fieldsync_deliveries_in_flight").set(d.in_flight as f64);
        for i in &d.integrations {
            let id = i.id.clone();
            gauge!("fieldsync_queue_depth", "integration" => id.clone()).set(i.queued as f64);
            gauge!("fieldsync_queue_oldest_age_seconds", "integration" => id.clone())
                .set(i.oldest_age_seconds.unwrap_or(0.0));
            gauge!("fieldsync_dead_letters", "integration" => id.clone()).set(i.dead_letters as f64);
            gauge!("fieldsync_integration_in_flight", "integration" => id.clone()).set(i.in_flight as f64);
            gauge!("fieldsync_integration_rate_limited_seconds", "integration" => id.clone())
                .set(i.rate_limited_seconds);
            let disabled = i.disabled.is_some() || i.config_error.is_some();
            gauge!("fieldsync_integration_disabled", "integration" => id.clone())
                .set(f64::from(u8::from(disabled)));
            gauge!("fieldsync_integration_paused", "integration" => id.clone())
                .set(f64::from(u8::from(i.paused_since.is_some())));
            for state in crate::dispatch::limits::BreakerState::LABELS {
                gauge!("fieldsync_circuit_open", "integration" => id.clone(), "state" => state)
                    .set(f64::from(u8::from(i.breaker == state)));
            }
        }
    }
    if let Some(q) = queue {
        gauge!("fieldsync_queue_records").set(q.held as f64);
        gauge!("fieldsync_queue_oldest_record_age_seconds").set(q.oldest_record_age_seconds.unwrap_or(0.0));
        metrics::counter!("fieldsync_queue_records_removed_total").absolute(q.removed);
    }
    if let Some(rss) = rss_bytes() {
        gauge!("fieldsync_process_resident_memory_bytes").set(rss as f64);
    }
    handle.render()
}

/// This process's resident set size (Linux).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}
