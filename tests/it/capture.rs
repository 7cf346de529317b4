//! Capture acceptance: row changes of the published tables reach the queue in commit order with
//! old and new values; nothing else does; schema changes and TOASTed values are handled; idle
//! publications do not pin WAL; PostgreSQL restarts are survived.

use std::time::Duration;

use fieldsync::store::record::{ChangeRecord, ColumnValue, OldImage, Op};
use fieldsync::store::Store;

use crate::support::daemon::{self, sql};
use crate::support::{cluster_with_schema, wait_for_async};

const DEADLINE: Duration = Duration::from_secs(60);

async fn wait_for_records(queue: &Store, n: usize) -> Vec<ChangeRecord> {
    let start = std::time::Instant::now();
    loop {
        let records = queue.records_after(None, usize::MAX).unwrap();
        if records.len() >= n {
            return records;
        }
        if start.elapsed() > DEADLINE {
            let seen: Vec<_> = records
                .iter()
                .take(10)
                .map(|r| (r.id.to_string(), r.table.clone(), r.op))
                .collect();
            panic!(
                "timed out waiting for {n} durable records; the queue holds {} (first: {seen:?})",
                records.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn text<'a>(row: &'a Option<fieldsync::store::record::Row>, col: &str) -> &'a ColumnValue {
    row.as_ref()
        .and_then(|r| r.get(col))
        .unwrap_or_else(|| panic!("column {col} missing in {row:?}"))
}

/// The daemon with `[events] enabled = false`: every record keeps its row images (with events on,
/// a field row's change is stored once, in its event: see
/// `a_field_change_is_stored_once_in_its_event_and_context_rows_keep_their_images`).
async fn start_rows_only(cluster: &crate::support::Cluster) -> (tempfile::TempDir, fieldsync::app::Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let toml = daemon::config_toml(cluster, &dir.path().join("q"), 0) + "\n[events]\nenabled = false\n";
    (dir, daemon::start(&toml).await)
}

const ORG: &str = "00000000-0000-0000-0000-00000000000a";
const WEDDING: &str = "00000000-0000-0000-0000-0000000000b1";

fn seed_sql() -> String {
    format!(
        "INSERT INTO organizations (id, name, timezone) VALUES ('{ORG}', 'Studio Ölrún', 'Europe/London');
         INSERT INTO weddings (id, organization_id, couple_names, wedding_date, timezone)
           VALUES ('{WEDDING}', '{ORG}', 'Ana & Bea', '2027-06-19', 'Europe/London');"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_changes_of_published_tables_reach_the_queue_in_commit_order_with_old_and_new_values() {
    let cluster = cluster_with_schema();
    let (_dir, d) = start_rows_only(&cluster).await;
    let db = sql(&cluster).await;
    db.batch_execute("CREATE TABLE unpublished (x int)")
        .await
        .unwrap();
    db.batch_execute(&seed_sql()).await.unwrap();
    db.batch_execute(&format!(
        "INSERT INTO form_field_values (id, organization_id, wedding_id, field_id, field_type, value)
           VALUES ('00000000-0000-0000-0000-0000000000f1', '{ORG}', '{WEDDING}', gen_random_uuid(), 'guest_count_matrix',
                   '{{\"adults\": 100, \"children\": 10, \"infants\": 2}}');
         UPDATE form_field_values SET value = '{{\"adults\": 120, \"children\": 14, \"infants\": 3}}'
           WHERE id = '00000000-0000-0000-0000-0000000000f1';
         INSERT INTO unpublished VALUES (1), (2);"
    ))
    .await
    .unwrap();
    // A separate query: BEGIN inside a multi-statement query would make it all one transaction.
    db.batch_execute(&format!(
        "BEGIN; INSERT INTO weddings (organization_id, couple_names) VALUES ('{ORG}', 'rolled back'); ROLLBACK;"
    ))
    .await
    .unwrap();
    db.batch_execute(&format!(
        "DELETE FROM form_field_values WHERE id = '00000000-0000-0000-0000-0000000000f1';
         INSERT INTO organization_integrations (organization_id, integration_type) VALUES ('{ORG}', 'webhook');
         TRUNCATE organization_integrations;"
    ))
    .await
    .unwrap();

    let records = wait_for_records(&d.queue, 7).await;
    let shape: Vec<(&str, Op)> = records.iter().map(|r| (r.table.as_str(), r.op)).collect();
    assert_eq!(
        shape,
        vec![
            ("organizations", Op::Insert),
            ("weddings", Op::Insert),
            ("form_field_values", Op::Insert),
            ("form_field_values", Op::Update),
            ("form_field_values", Op::Delete),
            ("organization_integrations", Op::Insert),
            ("organization_integrations", Op::Truncate),
        ]
    );
    assert!(
        records.windows(2).all(|w| w[0].id < w[1].id),
        "ids follow commit order"
    );
    assert_eq!(
        text(&records[0].new, "name"),
        &ColumnValue::Text("Studio Ölrún".into())
    );
    let update = &records[3];
    assert_eq!(update.identity, Some(OldImage::Full));
    assert_eq!(
        text(&update.old, "value"),
        &ColumnValue::Text(r#"{"adults": 100, "infants": 2, "children": 10}"#.into())
    );
    assert_eq!(
        text(&update.new, "value"),
        &ColumnValue::Text(r#"{"adults": 120, "infants": 3, "children": 14}"#.into())
    );
    let delete = &records[4];
    assert!(delete.new.is_none());
    assert_eq!(
        text(&delete.old, "field_type"),
        &ColumnValue::Text("guest_count_matrix".into())
    );
    assert!(records.iter().all(|r| r.schema == "public"));
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_drop_column_mid_stream_are_followed() {
    let cluster = cluster_with_schema();
    let (_dir, d) = daemon::start_on(&cluster).await;
    let db = sql(&cluster).await;
    db.batch_execute(&seed_sql()).await.unwrap();
    db.batch_execute(&format!(
        "ALTER TABLE weddings ADD COLUMN dress_code text;
         INSERT INTO weddings (organization_id, couple_names, dress_code) VALUES ('{ORG}', 'C & D', 'black tie');
         ALTER TABLE weddings DROP COLUMN dress_code;
         INSERT INTO weddings (organization_id, couple_names) VALUES ('{ORG}', 'E & F');"
    ))
    .await
    .unwrap();
    let records = wait_for_records(&d.queue, 4).await;
    let with = records[2].new.as_ref().unwrap();
    assert_eq!(
        with.get("dress_code"),
        Some(&ColumnValue::Text("black tie".into()))
    );
    let without = records[3].new.as_ref().unwrap();
    assert!(!without.contains_key("dress_code"));
    assert_eq!(
        without.get("couple_names"),
        Some(&ColumnValue::Text("E & F".into()))
    );
    d.stop().await.unwrap();
}

/// A jsonb value large and random enough to be stored out of line (TOAST) even after compression.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_change_is_stored_once_in_its_event_and_context_rows_keep_their_images() {
    let cluster = cluster_with_schema();
    let (_dir, d) = daemon::start_on(&cluster).await;
    let db = sql(&cluster).await;
    db.batch_execute(&seed_sql()).await.unwrap();
    db.batch_execute(&format!(
        "INSERT INTO form_field_values (id, organization_id, wedding_id, field_id, field_type, value)
           VALUES ('00000000-0000-0000-0000-0000000000f2', '{ORG}', '{WEDDING}', gen_random_uuid(), 'number', '140');
         UPDATE form_field_values SET value = '150' WHERE id = '00000000-0000-0000-0000-0000000000f2';
         DELETE FROM form_field_values WHERE id = '00000000-0000-0000-0000-0000000000f2';"
    ))
    .await
    .unwrap();
    let records = wait_for_records(&d.queue, 5).await;
    assert_eq!(
        text(&records[1].new, "couple_names"),
        &ColumnValue::Text("Ana & Bea".into()),
        "a context row keeps its image"
    );
    let values: Vec<(Option<serde_json::Value>, Option<serde_json::Value>)> = records[2..]
        .iter()
        .map(|r| {
            assert_eq!((&r.old, &r.new), (&None, &None), "no row image beside the event");
            let e = r.event.as_ref().expect("a field row's record has its event");
            assert_eq!(e.data.event_id, r.id);
            (e.data.old_value.clone(), e.data.new_value.clone())
        })
        .collect();
    let n = |v: i64| Some(serde_json::json!(v));
    assert_eq!(values, [(None, n(140)), (n(140), n(150)), (n(150), None)]);
    d.stop().await.unwrap();
}

fn large_json_sql() -> &'static str {
    "(SELECT jsonb_build_object('notes', string_agg(md5(i::text || random()::text), '')) FROM generate_series(1, 400) i)"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_toasted_value_is_carried_under_full_identity_and_marked_unchanged_under_default() {
    let cluster = cluster_with_schema();
    let (_dir, d) = start_rows_only(&cluster).await;
    let db = sql(&cluster).await;
    db.batch_execute(&seed_sql()).await.unwrap();
    db.batch_execute(&format!(
        "INSERT INTO form_field_values (id, organization_id, wedding_id, field_id, field_type, value)
           VALUES ('00000000-0000-0000-0000-0000000000f2', '{ORG}', '{WEDDING}', gen_random_uuid(), 'text', {});
         UPDATE form_field_values SET updated_at = now() + interval '1 minute' WHERE id = '00000000-0000-0000-0000-0000000000f2';
         ALTER TABLE form_field_values REPLICA IDENTITY DEFAULT;
         UPDATE form_field_values SET updated_at = now() + interval '2 minutes' WHERE id = '00000000-0000-0000-0000-0000000000f2';",
        large_json_sql()
    ))
    .await
    .unwrap();
    let stored: String = db
        .query_one(
            "SELECT value::text FROM form_field_values WHERE id = '00000000-0000-0000-0000-0000000000f2'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        stored.len() > 8 * 1024,
        "the value must be large enough to be TOASTed"
    );
    let records = wait_for_records(&d.queue, 5).await;
    let full = &records[3];
    assert_eq!(full.identity, Some(OldImage::Full));
    assert_eq!(
        text(&full.new, "value"),
        &ColumnValue::Text(stored.clone()),
        "full identity carries the value"
    );
    let default = &records[4];
    assert_eq!(
        default.identity, None,
        "DEFAULT identity with an unchanged key sends no old image"
    );
    assert_eq!(text(&default.new, "value"), &ColumnValue::Unchanged, "never NULL");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_writes_to_other_tables_keep_the_slot_advancing_while_the_publication_is_idle() {
    let cluster = cluster_with_schema();
    let (_dir, d) = daemon::start_on(&cluster).await;
    let db = sql(&cluster).await;
    db.batch_execute("CREATE TABLE busy (id bigserial primary key, payload text)")
        .await
        .unwrap();
    let confirmed = || daemon::slot_confirmed(&db);
    let before = confirmed().await;
    for _ in 0..20 {
        db.batch_execute("INSERT INTO busy (payload) SELECT repeat('x', 200) FROM generate_series(1, 2000)")
            .await
            .unwrap();
    }
    let target: String = db
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let target: fieldsync::lsn::Lsn = target.parse().unwrap();
    assert!(
        target.0 - before.0 > 1 << 20,
        "the workload wrote over 1 MiB of WAL"
    );
    wait_for_async(
        DEADLINE,
        "confirmed_flush_lsn to pass the unrelated writes",
        || async { confirmed().await >= target },
    )
    .await;
    assert_eq!(
        d.queue.summary().unwrap().records,
        0,
        "no record of unpublished tables"
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_stream_is_survived_without_loss_or_duplicates() {
    let mut cluster = cluster_with_schema();
    let (_dir, d) = start_rows_only(&cluster).await;
    let db = sql(&cluster).await;
    db.batch_execute(&seed_sql()).await.unwrap();
    let insert_fields = |from: usize, to: usize| {
        format!(
            "INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
               SELECT '{ORG}', '{WEDDING}', gen_random_uuid(), 'number', to_jsonb(i) FROM generate_series({from}, {to}) i"
        )
    };
    for chunk in 0..10 {
        db.batch_execute(&insert_fields(chunk * 100 + 1, chunk * 100 + 100))
            .await
            .unwrap();
    }
    drop(db);
    cluster
        .restart()
        .unwrap_or_else(|e| panic!("restart failed: {e}"));
    let db = sql(&cluster).await;
    for chunk in 10..20 {
        db.batch_execute(&insert_fields(chunk * 100 + 1, chunk * 100 + 100))
            .await
            .unwrap();
    }
    let records = wait_for_records(&d.queue, 2 + 2000).await;
    assert_eq!(records.len(), 2002, "nothing lost, nothing twice");
    let mut values: Vec<i64> = records[2..]
        .iter()
        .map(|r| match text(&r.new, "value") {
            ColumnValue::Text(t) => t.parse().unwrap(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert!(values.windows(2).all(|w| w[0] < w[1]), "commit order kept");
    values.dedup();
    assert_eq!(values.len(), 2000);
    assert!(
        d.status.snapshot().reconnects >= 1,
        "the daemon reconnected by itself"
    );
    d.stop().await.unwrap();
}
