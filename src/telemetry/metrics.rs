//! Prometheus metrics at `/metrics` on the `[http]` listener. Names start with `fieldsync_`;
//! labels are bounded (integration ids, table names of the publication, operations, outcomes,
//! known field types). Counters and the latency histogram are recorded where things happen, by
//! every floor, so this module imports none of them; gauges are read from the daemon's own state
//! at each scrape by the `/metrics` page (`crate::serve::http::metrics_page`), so they are never stale.
//!
//! The README lists every series.

use std::sync::OnceLock;

use metrics::{counter, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Commit-to-delivered latency buckets, seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 15.0, 60.0, 300.0, 3600.0,
];

/// Installs the process-wide recorder once; later calls return the same handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("fieldsync_delivery_latency_seconds".into()),
                LATENCY_BUCKETS,
            )
            .expect("fixed buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // another recorder (a test harness) may already be installed: then these metrics are
        // recorded there and /metrics shows only the scrape-time gauges of this handle
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The counter of captured row changes of one table and operation.
pub fn changes_counter(table: &str, op: &'static str) -> metrics::Counter {
    counter!("fieldsync_changes_total", "table" => table.to_owned(), "op" => op)
}

/// One event whose value failed validation.
pub fn invalid_event(field_type: &str) {
    let known = crate::fields::FieldType::parse(field_type);
    let label = match known {
        crate::fields::FieldType::Other(_) => "other".to_owned(),
        t => t.as_str().to_owned(),
    };
    counter!("fieldsync_invalid_events_total", "field_type" => label).increment(1);
}

/// One delivery attempt's outcome (`delivered`, `retry`, `dead`, `disabled`, `superseded`).
pub fn delivery(integration: &str, outcome: crate::store::deliveries::LogOutcome) {
    counter!("fieldsync_deliveries_total", "integration" => integration.to_owned(), "outcome" => outcome.as_str())
        .increment(1);
}

/// One flush of final states that deliveries had to wait for (the order barrier).
pub fn order_flush() {
    counter!("fieldsync_dispatch_order_flushes_total").increment(1);
}

/// The time from an event's commit to its delivery.
pub fn delivered_after(integration: &str, seconds: f64) {
    histogram!("fieldsync_delivery_latency_seconds", "integration" => integration.to_owned())
        .record(seconds.max(0.0));
}
