//! An invalidated slot (its WAL removed past `max_slot_wal_keep_size`) under each
//! `[replication] on_slot_lost` policy: `error` stops before anything is written, with the command
//! that fixes it; `recreate` drops the slot, creates a fresh one and takes a fresh snapshot, so a
//! row changed while the slot was lost still reaches the queue.

use std::time::Duration;

use crate::support::daemon::{http_get, read_queue, sql, DaemonProcess, Workdir};
use crate::support::{wait_for, wait_for_async, Cluster, ClusterOptions};

const DEADLINE: Duration = Duration::from_secs(60);
const ORG: &str = "0e000000-0000-4000-8000-000000000001";
const WEDDING: &str = "0e000000-0000-4000-8000-000000000002";

fn cluster_with_a_small_slot_limit() -> Cluster {
    let c = Cluster::start(ClusterOptions {
        settings: vec![
            ("max_slot_wal_keep_size".into(), "1MB".into()),
            ("wal_keep_size".into(), "0".into()),
        ],
        ..ClusterOptions::default()
    })
    .unwrap_or_else(|e| panic!("dev cluster did not start: {e}"));
    c.apply_default_schema("postgres").unwrap();
    c
}

async fn add_field(db: &tokio_postgres::Client, field: &str, adults: u32) {
    db.execute(
        &format!(
            "INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
             VALUES ('{ORG}', '{WEDDING}', '{field}', 'guest_count_matrix', '{{\"adults\": {adults}}}')"
        ),
        &[],
    )
    .await
    .unwrap();
}

async fn wal_status(db: &tokio_postgres::Client) -> Option<String> {
    db.query_one(
        "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'fieldsync'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// WAL past the limit while nothing reads the slot, then a checkpoint removes what it needed.
async fn invalidate(db: &tokio_postgres::Client) {
    for _ in 0..4 {
        db.batch_execute("CREATE TEMP TABLE IF NOT EXISTS filler (n int); INSERT INTO filler SELECT generate_series(1, 1000); SELECT pg_switch_wal();")
            .await
            .unwrap();
    }
    wait_for_async(DEADLINE, "the slot to be lost", || async {
        db.batch_execute("CHECKPOINT").await.unwrap();
        let status = wal_status(db).await;
        status.as_deref() == Some("lost")
    })
    .await;
}

fn with_policy(work: &Workdir, policy: &str) {
    let toml = std::fs::read_to_string(&work.config).unwrap();
    let toml = match toml.find("on_slot_lost") {
        Some(_) => toml.replace(
            "on_slot_lost = \"error\"",
            &format!("on_slot_lost = \"{policy}\""),
        ),
        None => toml.replace(
            "[replication]\n",
            &format!("[replication]\non_slot_lost = \"{policy}\"\n"),
        ),
    };
    std::fs::write(&work.config, toml).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_slot_stops_with_the_fix_or_is_recreated_with_a_fresh_snapshot() {
    let cluster = cluster_with_a_small_slot_limit();
    let db = sql(&cluster).await;
    db.batch_execute(&format!(
        "INSERT INTO organizations (id, name) VALUES ('{ORG}', 'Lost & Found');
         INSERT INTO weddings (id, organization_id, couple_names) VALUES ('{WEDDING}', '{ORG}', 'A & B');"
    ))
    .await
    .unwrap();
    let work = Workdir::new(&cluster);
    with_policy(&work, "error");

    // a first run makes the slot and captures a change
    let daemon = DaemonProcess::spawn(&work.config, work.http, &work.log);
    add_field(&db, "0e000000-0000-4000-9000-000000000001", 100).await;
    wait_for(DEADLINE, "the change to be stored", || {
        daemon.stored_records().is_some_and(|n| n >= 3)
    });
    assert!(daemon.terminate().success());
    invalidate(&db).await;
    // a row changed while the slot is lost
    let missed = "0e000000-0000-4000-9000-000000000002";
    add_field(&db, missed, 120).await;

    // error: the daemon stops before streaming, exit code 3, with the command that fixes it
    let mut daemon = DaemonProcess::spawn(&work.config, work.http, &work.log);
    let mut code = None;
    wait_for(DEADLINE, "the daemon to stop on the lost slot", || {
        code = daemon.try_wait().map(|s| s.code());
        code.is_some()
    });
    assert_eq!(code.flatten(), Some(3));
    let log = std::fs::read_to_string(&work.log).unwrap();
    assert!(
        log.contains("invalidated") && log.contains("pg_drop_replication_slot"),
        "{log}"
    );

    // recreate: a fresh slot and a fresh snapshot bring the missed row
    with_policy(&work, "recreate");
    let daemon = DaemonProcess::spawn(&work.config, work.http, &work.log);
    wait_for(DEADLINE, "ready on a fresh slot", || {
        http_get(work.http, "/readyz").is_some_and(|(code, _)| code == 200)
    });
    let status = wal_status(&db).await;
    assert_ne!(status.as_deref(), Some("lost"));
    assert!(daemon.terminate().success());
    let snapshot_of_missed = read_queue(&work.queue).into_iter().any(|r| {
        r.event
            .as_ref()
            .is_some_and(|e| e.data.snapshot && e.data.field_id.as_deref() == Some(missed))
    });
    assert!(
        snapshot_of_missed,
        "the row changed while the slot was lost came with the fresh snapshot"
    );
    let log = std::fs::read_to_string(&work.log).unwrap();
    assert!(log.contains("on_slot_lost = recreate"), "{log}");
}
