//! Capture benchmark: `fieldsync` against `pg_recvlogical`, same cluster, same workload, same run.
//!
//! First, commit-to-durable latency (p50/p99) at steady 1,000 and 5,000 changes/s. Then, for each
//! workload (1-row and 100-row transactions of form-field-like rows with jsonb values),
//! logical slots are created *before* the workload, so both consumers drain the same WAL, three times
//! each, alternately (medians compared):
//! (a) `pg_recvlogical` with pgoutput to /dev/null, until `--endpos`; (b) the fieldsync binary
//! capturing rows into its fsynced sled queue (`[events] enabled = false`); (c) the same with
//! field-sync events built; each until the last transaction is durable. Prints median rows/s, the
//! ratios b/a and c/a, fieldsync's peak RSS, and the queue's bytes on disk per change of (b) and (c)
//! (the directory once the process stopped, over the rows captured).
//!
//! Run: `cargo bench --bench capture` (env BENCH_ROWS overrides the 200,000 rows per workload).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fieldsync::config::Config;
use fieldsync::lsn::Lsn;
use fieldsync::source::progress::SourceStatus;
use fieldsync::source::stream::Source;
use fieldsync_dev::devdb::{Cluster, ClusterOptions};
use fieldsync_dev::process::Spawned;
use fieldsync_dev::rss::peak_rss_kib;

const ORG: &str = "00000000-0000-0000-0000-0000000000be";
const WEDDING: &str = "00000000-0000-0000-0000-0000000000b0";

fn main() {
    let rows: u64 = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // synchronous_commit on, as in production: otherwise commits reach the walsender only on the WAL
    // writer's next round and the latency figures would measure that delay.
    let cluster = Cluster::start(ClusterOptions {
        settings: vec![("synchronous_commit".into(), "on".into())],
        ..ClusterOptions::default()
    })
    .expect("start PostgreSQL");
    cluster.apply_default_schema("postgres").expect("apply schema");
    cluster
        .psql(
            "postgres",
            &format!(
                "INSERT INTO organizations (id, name) VALUES ('{ORG}', 'Bench');
                 INSERT INTO weddings (id, organization_id, couple_names) VALUES ('{WEDDING}', '{ORG}', 'K & L');"
            ),
        )
        .unwrap();

    println!(
        "fieldsync capture benchmark: {rows} rows per workload, fsync on, PostgreSQL {}",
        server_version(&cluster)
    );
    // Latency first, on a quiet cluster: after the bulk workloads autovacuum competes for the CPUs.
    // Then again with retention removing what is older than a second, as it does all day.
    for removal in [false, true] {
        for rate in [1_000u64, 5_000] {
            let (p, n, removed) = runtime.block_on(latency(&cluster, rate, Duration::from_secs(5), removal));
            println!(
                "commit-to-durable at {rate:>5}/s{}: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({n} transactions{})",
                if removal { ", removal running" } else { "" },
                p[0], p[1], p[2], p[3],
                if removal { format!(", {removed} records removed meanwhile") } else { String::new() }
            );
        }
    }
    println!(
        "{:<22} {:>16} {:>16} {:>6} {:>18} {:>6}",
        "workload", "pg_recvlogical", "fieldsync rows", "ratio", "fieldsync+events", "ratio"
    );
    for txn_rows in [1u64, 100] {
        let t = throughput(&cluster, rows, txn_rows);
        println!(
            "{:<22} {:>12.0} r/s {:>12.0} r/s {:>6.2} {:>14.0} r/s {:>6.2}   (fieldsync peak RSS {} MiB; on disk {} B/change rows, {} B/change events)",
            format!("{txn_rows}-row transactions"),
            t.reference,
            t.capture,
            t.capture / t.reference,
            t.events,
            t.events / t.reference,
            t.rss_kib / 1024,
            t.disk_per_row[0],
            t.disk_per_row[1]
        );
    }
}

fn server_version(cluster: &Cluster) -> String {
    cluster
        .psql("postgres", "SHOW server_version")
        .unwrap()
        .trim()
        .to_owned()
}

fn config_toml(
    cluster: &Cluster,
    slot: &str,
    queue: &std::path::Path,
    http: Option<std::net::SocketAddr>,
) -> String {
    format!(
        "[postgres]\nurl = \"{}\"\ntls = \"disable\"\n[replication]\nslot = \"{slot}\"\n[queue]\npath = \"{}\"\n[http]\nlisten = \"{}\"\n",
        cluster.url("postgres", "postgres"),
        queue.display(),
        http.map_or("127.0.0.1:0".to_string(), |a| a.to_string()),
    )
}

/// Measurement rounds per tool: the two run alternately over the same WAL (one slot each per
/// round, all created before the workload) and the medians are compared, so a slow moment of the
/// machine does not decide the ratio.
const ROUNDS: usize = 3;

/// Generates `rows` rows in transactions of `txn_rows` rows, with every slot created first, and
/// drains them with pg_recvlogical, fieldsync capturing rows only, and fieldsync with events.
fn throughput(cluster: &Cluster, rows: u64, txn_rows: u64) -> Throughput {
    let legs = ["ref", "rows", "events"];
    let slots: Vec<Vec<String>> = (0..ROUNDS)
        .map(|r| {
            legs.iter()
                .map(|leg| format!("bench_{leg}_{txn_rows}_{r}"))
                .collect()
        })
        .collect();
    for slot in slots.iter().flatten() {
        cluster
            .psql(
                "postgres",
                &format!("SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"),
            )
            .unwrap();
    }
    let txns = rows / txn_rows;
    cluster
        .psql(
            "postgres",
            &format!(
                "SET synchronous_commit = off;
                 DO $$ BEGIN FOR t IN 1..{txns} LOOP
                   INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value, updated_by)
                   SELECT '{ORG}', '{WEDDING}', gen_random_uuid(), 'guest_count_matrix',
                          jsonb_build_object('adults', 100 + i, 'children', i % 15, 'infants', i % 4),
                          '00000000-0000-0000-0000-0000000000aa'
                   FROM generate_series(1, {txn_rows}) i;
                   COMMIT;
                 END LOOP; END $$;"
            ),
        )
        .unwrap();
    let end: Lsn = cluster
        .psql("postgres", "SELECT pg_current_wal_lsn()")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (mut reference, mut capture, mut events, mut rss) = (Vec::new(), Vec::new(), Vec::new(), 0);
    let mut disk_per_row = [0; 2];
    for round in &slots {
        reference.push(recvlogical(cluster, &round[0], end, rows));
        let rows_only = fieldsync_run(cluster, &round[1], rows, false);
        capture.push(rows_only.rate);
        let with_events = fieldsync_run(cluster, &round[2], rows, true);
        events.push(with_events.rate);
        rss = rss.max(rows_only.rss_kib).max(with_events.rss_kib);
        disk_per_row = [rows_only.disk_bytes / rows, with_events.disk_bytes / rows];
    }
    for slot in slots.iter().flatten() {
        cluster
            .psql("postgres", &format!("SELECT pg_drop_replication_slot('{slot}')"))
            .unwrap();
    }
    Throughput {
        reference: median(reference),
        capture: median(capture),
        events: median(events),
        rss_kib: rss,
        disk_per_row,
    }
}

/// Median rows/s of each leg over the same WAL, fieldsync's largest peak RSS, and the queue's
/// bytes on disk per change (rows only, with events) in the last round.
struct Throughput {
    reference: f64,
    capture: f64,
    events: f64,
    rss_kib: u64,
    disk_per_row: [u64; 2],
}

/// One fieldsync leg: rows/s, peak RSS in KiB, the queue's size on disk once stopped.
struct Run {
    rate: f64,
    rss_kib: u64,
    disk_bytes: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (a) the reference: pg_recvlogical with pgoutput to /dev/null, until `end`; rows/s.
fn recvlogical(cluster: &Cluster, slot: &str, end: Lsn, rows: u64) -> f64 {
    let started = Instant::now();
    let status = Command::new(cluster.bin_dir().join("pg_recvlogical"))
        .args([
            "-d",
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                cluster.port()
            ),
        ])
        .args(["--slot", slot, "--start", "--no-loop", "-f", "/dev/null"])
        .args([
            "-E",
            &end.to_string(),
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=fieldsync",
        ])
        .status()
        .expect("run pg_recvlogical");
    assert!(status.success(), "pg_recvlogical failed");
    rows as f64 / started.elapsed().as_secs_f64()
}

/// (b) the fieldsync binary, fsynced queue, from process start until the last row is durable.
fn fieldsync_run(cluster: &Cluster, slot: &str, rows: u64, events: bool) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config_path = dir.path().join("fieldsync.toml");
    std::fs::write(
        &config_path,
        config_toml(cluster, slot, &dir.path().join("queue"), Some(http)),
    )
    .unwrap();
    let started = Instant::now();
    let mut child = Spawned::new(
        Command::new(env!("CARGO_BIN_EXE_fieldsync"))
            .args(["run", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .env("FIELDSYNC__EVENTS__ENABLED", events.to_string())
            .stdin(Stdio::null())
            .spawn()
            .expect("start fieldsync"),
    );
    loop {
        assert!(child.running(), "fieldsync exited early");
        if let Ok((200, body)) = fieldsync::serve::http::get_local(http, "/status", Duration::from_secs(5)) {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let durable = v.pointer("/queue/durable/commit_lsn").and_then(|l| l.as_str());
            let last = v
                .pointer("/queue/last_transaction/commit_lsn")
                .and_then(|l| l.as_str());
            if v.pointer("/queue/records").and_then(|r| r.as_u64()) == Some(rows)
                && durable.is_some()
                && durable == last
            {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    let rss_kib = peak_rss_kib(child.id());
    assert!(child.terminate().unwrap().success(), "fieldsync stops cleanly");
    Run {
        rate,
        rss_kib,
        disk_bytes: fieldsync::store::disk::dir_bytes(&dir.path().join("queue")).unwrap(),
    }
}

/// Streams live while a client commits 1-row transactions at `rate`/s; returns p50, p99, p99.9 and
/// max in ms, the number of transactions, and the records retention removed meanwhile (with
/// `removal`: retention removes what is older than 1 s, positions confirmed every 100 ms so that
/// records may go).
async fn latency(cluster: &Cluster, rate: u64, duration: Duration, removal: bool) -> ([f64; 4], usize, u64) {
    let dir = tempfile::tempdir().unwrap();
    let slot = format!("bench_lat_{rate}_{removal}");
    // the rows of earlier legs are not read again as a snapshot: only the live stream is measured
    let mut toml =
        config_toml(cluster, &slot, &dir.path().join("queue"), None) + "[events]\nsnapshot = \"never\"\n";
    if removal {
        toml = toml.replace("[replication]\n", "[replication]\nstatus_interval = \"100ms\"\n");
    }
    let cfg =
        Config::from_toml_str(&toml, "bench", std::iter::empty::<(String, String)>()).expect("bench config");
    let queue = fieldsync::app::open_store(&cfg.queue).unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let status = Arc::new(SourceStatus::default());
    let source = Source::new(Arc::new(cfg.clone()), queue.clone(), status.clone()).unwrap();
    let task = tokio::spawn(source.run(stop_rx.clone()));
    if removal {
        let retention =
            fieldsync::store::retention::run(queue.clone(), Duration::from_secs(1), false, stop_rx);
        tokio::spawn(retention);
    }
    while !status.snapshot().connected {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let client = fieldsync::pg::connect_sql(&cfg.postgres).await.unwrap();
    client.batch_execute("SET synchronous_commit = on").await.unwrap();
    let insert = client
        .prepare(&format!(
            "INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
             VALUES ('{ORG}', '{WEDDING}', gen_random_uuid(), 'number', to_jsonb($1::int))"
        ))
        .await
        .unwrap();
    queue.latency_samples().take();
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = rate * duration.as_secs();
    for i in 0..total {
        tick.tick().await;
        client.execute(&insert, &[&(i as i32)]).await.unwrap();
    }
    let target = queue.head().unwrap().total_records;
    while queue.summary().unwrap().records < target || queue.has_pending() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut samples = queue.latency_samples().take();
    let removed = queue.summary().unwrap().removed;
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    cluster
        .psql("postgres", &format!("SELECT pg_drop_replication_slot('{slot}')"))
        .unwrap();
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    (
        [pct(0.50), pct(0.99), pct(0.999), pct(1.0)],
        samples.len(),
        removed,
    )
}
