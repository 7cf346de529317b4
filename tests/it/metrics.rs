//! Prometheus metrics of a running daemon (a child process, so the counters are its own): while
//! it runs, deliveries count up with their commit-to-delivered latency, dead letters appear when
//! the receiver rejects a wedding, and the replication lag grows while capture is paused by
//! backpressure and falls once it reads again. `/readyz` says ready, with reasons when not.

use std::time::Duration;

use fieldsync_dev::receiver::{Faults, Receiver};

use crate::dispatch::{add_field, edit, seed, wedding, INTEGRATION, SECRET};
use crate::support::daemon::{http_get, sql, DaemonProcess, Workdir};
use crate::support::{cluster_with_schema, wait_for_async};

const DEADLINE: Duration = Duration::from_secs(120);

/// `/metrics`, once the daemon answers.
fn try_scrape(daemon: &DaemonProcess) -> Option<String> {
    http_get(daemon.http, "/metrics")
        .filter(|(code, _)| *code == 200)
        .map(|(_, body)| body)
}

fn scrape(daemon: &DaemonProcess) -> String {
    try_scrape(daemon).expect("the daemon answers /metrics")
}

/// The sum of a series' samples whose labels include all of `labels`; `None` when it has none.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, sample)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
        if series_name != name
            || !labels
                .iter()
                .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")))
        {
            continue;
        }
        *found.get_or_insert(0.0) += sample.parse::<f64>().unwrap_or(0.0);
    }
    found
}

async fn wait_metric(
    daemon: &DaemonProcess,
    what: &str,
    name: &str,
    labels: &[(&str, &str)],
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let mut last = None;
    wait_for_async(DEADLINE, what, || {
        last = try_scrape(daemon).and_then(|text| value(&text, name, labels));
        let hit = last.is_some_and(&ok);
        async move { hit }
    })
    .await;
    last.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_deliveries_dead_letters_and_a_paused_stream() {
    let cluster = cluster_with_schema();
    let receiver = Receiver::start(SECRET).await;
    let db = sql(&cluster).await;
    let work = Workdir::new(&cluster);
    db.batch_execute("SELECT pg_create_logical_replication_slot('fieldsync', 'pgoutput')")
        .await
        .unwrap();
    seed(&db, 3, &receiver.url()).await;
    let toml = std::fs::read_to_string(&work.config).unwrap().replace(
        "[replication]\n",
        "[replication]\nslot_check_interval = \"100ms\"\n",
    ) + "
[dispatch]
request_timeout = \"500ms\"
retry_base = \"20ms\"
retry_cap = \"50ms\"
max_attempts = 2
max_queued_per_integration = 20
backpressure = \"pause\"
";
    std::fs::write(&work.config, toml).unwrap();
    let daemon = DaemonProcess::spawn(&work.config, work.http, &work.log);
    let delivered = [("integration", INTEGRATION), ("outcome", "delivered")];

    // deliveries count up, each with its latency from commit
    edit(&db, 1, 40, 2, 3).await;
    let first = wait_metric(
        &daemon,
        "deliveries",
        "fieldsync_deliveries_total",
        &delivered,
        |v| v > 0.0,
    )
    .await;
    edit(&db, 2, 40, 2, 3).await;
    wait_metric(
        &daemon,
        "more deliveries",
        "fieldsync_deliveries_total",
        &delivered,
        |v| v > first,
    )
    .await;
    // changes counted as captured (deliveries alone may run ahead of the count read once)
    wait_metric(
        &daemon,
        "the edits' changes counted as captured",
        "fieldsync_changes_total",
        &[("table", "public.form_field_values")],
        |v| v >= 40.0,
    )
    .await;
    let text = scrape(&daemon);
    let timed = value(
        &text,
        "fieldsync_delivery_latency_seconds_count",
        &[("integration", INTEGRATION)],
    );
    assert!(timed.is_some_and(|n| n > 0.0), "latency histogram: {text}");
    assert_eq!(value(&text, "fieldsync_replication_connected", &[]), Some(1.0));
    assert_eq!(
        value(&text, "fieldsync_dead_letters", &[("integration", INTEGRATION)]),
        Some(0.0)
    );
    let (code, ready) = http_get(daemon.http, "/readyz").unwrap();
    assert_eq!(code, 200, "{ready}");

    // a wedding the receiver rejects becomes a dead letter
    receiver.set_faults(Faults {
        reject_wedding: Some(wedding(2)),
        ..Faults::default()
    });
    add_field(&db, &wedding(2)).await;
    wait_metric(
        &daemon,
        "a dead letter",
        "fieldsync_dead_letters",
        &[("integration", INTEGRATION)],
        |v| v >= 1.0,
    )
    .await;
    receiver.set_faults(Faults::default());

    // with the receiver away, backpressure pauses capture: the lag grows while writes go on
    receiver.pause().await;
    edit(&db, 3, 200, 2, 60).await;
    let paused = wait_metric(
        &daemon,
        "lag while paused",
        "fieldsync_replication_lag_bytes",
        &[],
        |v| v > 0.0,
    )
    .await;
    edit(&db, 4, 200, 2, 60).await;
    let grown = wait_metric(
        &daemon,
        "the lag to grow",
        "fieldsync_replication_lag_bytes",
        &[],
        |v| v > paused,
    )
    .await;
    assert!(grown > paused);
    let (_, status) = http_get(daemon.http, "/deliveries").unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(
        status["integrations"][0]["backpressure_hits"].as_u64() > Some(0),
        "capture was paused by backpressure: {status}"
    );

    // back: the stream is read again and the lag falls
    receiver.resume().await;
    wait_metric(
        &daemon,
        "the lag to fall",
        "fieldsync_replication_lag_bytes",
        &[],
        |v| v < grown / 2.0,
    )
    .await;
    assert!(daemon.terminate().success());
}

/// The alert rules and the dashboard name only series fieldsync exports.
#[test]
fn operator_files_name_only_exported_series() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // the series are named where they are recorded and on the /metrics page
    let exporter: String = [
        "src/telemetry/metrics.rs",
        "src/serve/http/metrics_page.rs",
        "src/serve/http/mod.rs",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(root.join(f)).unwrap())
    .collect();
    for file in ["deploy/prometheus-alerts.yml", "deploy/grafana-dashboard.json"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut names = 0;
        for (at, _) in text.match_indices("fieldsync_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
            assert!(
                exporter.contains(&format!("\"{base}\"")),
                "{file} names {name}, which fieldsync does not export"
            );
            names += 1;
        }
        assert!(names >= 8, "{file} names {names} series");
    }
}
