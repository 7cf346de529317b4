//! Field-sync events on the default schema: the guest-count change with totals and wedding context
//! (also for a wedding created before the first start), loop suppression by replication origin,
//! and an initial snapshot with concurrent writes that rebuilds exactly the database's state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fieldsync::events::{Envelope, EventKind};
use fieldsync::store::Store;
use rand::{Rng, SeedableRng};

use crate::support::daemon::{self, caught_up, sql};
use crate::support::{cluster_with_schema, wait_for_async};

const DEADLINE: Duration = Duration::from_secs(120);
const ORG: &str = "0e000000-0000-4000-8000-000000000001";
const WEDDING: &str = "0e000000-0000-4000-8000-0000000000a1";
const FIELD: &str = "0e000000-0000-4000-8000-0000000000f1";

fn events(queue: &Store) -> Vec<Envelope> {
    queue
        .records_after(None, usize::MAX)
        .unwrap()
        .into_iter()
        .filter_map(|r| r.event)
        .collect()
}

async fn wait_for_events(queue: &Store, n: usize) -> Vec<Envelope> {
    wait_for_async(DEADLINE, &format!("{n} events"), || async {
        events(queue).len() >= n
    })
    .await;
    events(queue)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_count_change_is_one_updated_event_with_totals_and_the_context_of_a_wedding_older_than_the_daemon(
) {
    let cluster = cluster_with_schema();
    let db = sql(&cluster).await;
    // all of this exists before fieldsync first starts
    db.batch_execute(&format!(
        "INSERT INTO organizations (id, name, timezone) VALUES ('{ORG}', 'Petals & Vows', 'Europe/London');
         INSERT INTO weddings (id, organization_id, couple_names, wedding_date, venue)
           VALUES ('{WEDDING}', '{ORG}', 'Amara & Tom', '2031-06-21', '{{\"name\": \"Kew Gardens\"}}');
         INSERT INTO form_field_values (id, organization_id, wedding_id, field_id, field_type, value)
           VALUES ('{FIELD}', '{ORG}', '{WEDDING}', gen_random_uuid(), 'guest_count_matrix',
                   '{{\"adults\": 120, \"children\": 14, \"infants\": 3}}');"
    ))
    .await
    .unwrap();
    let (_dir, d) = daemon::start_on(&cluster).await;

    db.batch_execute(&format!(
        "UPDATE form_field_values SET value = '{{\"adults\": 128, \"children\": 12, \"infants\": 3}}',
           updated_by = '0e000000-0000-4000-8000-0000000000cc' WHERE id = '{FIELD}'"
    ))
    .await
    .unwrap();
    let all = wait_for_events(&d.queue, 2).await;
    assert_eq!(all.len(), 2, "{all:#?}");
    let snap = &all[0];
    assert_eq!(snap.kind, EventKind::Created);
    assert!(
        snap.data.snapshot,
        "the pre-existing value comes from the initial snapshot"
    );

    let e = &all[1];
    assert_eq!(e.kind, EventKind::Updated);
    assert!(!e.data.snapshot);
    assert_eq!(e.data.field_type, "guest_count_matrix");
    assert_eq!(
        e.data.old_value,
        Some(serde_json::json!({"adults": 120, "children": 14, "infants": 3}))
    );
    assert_eq!(
        e.data.new_value,
        Some(serde_json::json!({"adults": 128, "children": 12, "infants": 3}))
    );
    assert!(e.data.valid, "{:?}", e.data.errors);
    let n = e.data.normalized.as_ref().unwrap();
    assert_eq!(n["total"], 143);
    assert_eq!(n["breakdown"], "128 adults, 12 children, 3 infants");
    assert_eq!(
        e.data.user_id.as_deref(),
        Some("0e000000-0000-4000-8000-0000000000cc")
    );
    assert_eq!(serde_json::to_value(e.data.priority).unwrap(), "critical");
    let w = e.data.wedding.as_ref().expect("wedding context");
    assert_eq!(w.couple_names.as_deref(), Some("Amara & Tom"));
    assert_eq!(w.wedding_date.as_deref(), Some("2031-06-21"));
    assert_eq!(
        w.timezone.as_deref(),
        Some("Europe/London"),
        "the organisation's zone when the wedding has none"
    );
    assert_eq!(w.organization_name.as_deref(), Some("Petals & Vows"));
    assert_eq!(w.venue.as_ref().unwrap()["name"], "Kew Gardens");
    assert_eq!(
        w.guest_total,
        Some(137),
        "learnt from the snapshot's guest count, before this change"
    );
    let json = serde_json::to_value(e).unwrap();
    assert_eq!(json["type"], "field.updated");
    assert_eq!(
        json["data"]["event_id"],
        serde_json::to_value(e.data.event_id).unwrap()
    );

    // the couple renames themselves and moves the date: later events carry the new context
    db.batch_execute(&format!(
        "UPDATE weddings SET couple_names = 'Amara & Tom Okafor', wedding_date = '2031-07-05' WHERE id = '{WEDDING}';
         UPDATE form_field_values SET value = '{{\"adults\": 130}}' WHERE id = '{FIELD}';"
    ))
    .await
    .unwrap();
    let all = wait_for_events(&d.queue, 3).await;
    let w = all[2].data.wedding.as_ref().unwrap();
    assert_eq!(w.couple_names.as_deref(), Some("Amara & Tom Okafor"));
    assert_eq!(w.wedding_date.as_deref(), Some("2031-07-05"));
    assert_eq!(
        w.guest_total,
        Some(143),
        "the total learnt from the previous change"
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_under_the_fieldsync_origin_yields_no_event_and_one_without_it_does() {
    let cluster = cluster_with_schema();
    let (_dir, d) = daemon::start_on(&cluster).await;
    let db = sql(&cluster).await;
    db.batch_execute(&format!(
        "INSERT INTO organizations (id, name) VALUES ('{ORG}', 'Loop Studio');
         INSERT INTO weddings (id, organization_id, couple_names) VALUES ('{WEDDING}', '{ORG}', 'C & D');"
    ))
    .await
    .unwrap();
    // fieldsync's own write-back: under its replication origin
    let writer = sql(&cluster).await;
    writer
        .batch_execute(&format!(
            "SELECT pg_replication_origin_create('fieldsync');
             SELECT pg_replication_origin_session_setup('fieldsync');
             INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
               VALUES ('{ORG}', '{WEDDING}', gen_random_uuid(), 'text', '\"from the CRM\"');"
        ))
        .await
        .unwrap();
    // the app's own write
    db.batch_execute(&format!(
        "INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
           VALUES ('{ORG}', '{WEDDING}', gen_random_uuid(), 'text', '\"from the app\"')"
    ))
    .await
    .unwrap();
    caught_up(&db, &d).await;
    let records = d.queue.records_after(None, usize::MAX).unwrap();
    let fields: Vec<_> = records
        .iter()
        .filter(|r| r.table == "form_field_values")
        .collect();
    assert_eq!(
        fields.len(),
        2,
        "both rows are captured: {:?}",
        records
            .iter()
            .map(|r| (&r.table, r.op, &r.origin))
            .collect::<Vec<_>>()
    );
    assert_eq!(fields[0].origin.as_deref(), Some("fieldsync"));
    assert!(fields[0].event.is_none(), "no event for fieldsync's own write");
    let e = fields[1].event.as_ref().expect("an event for the app's write");
    assert_eq!(e.data.new_value, Some(serde_json::json!("from the app")));
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_50000_values_with_concurrent_writes_rebuilds_the_database_state_each_value_once() {
    let cluster = cluster_with_schema();
    let db = sql(&cluster).await;
    db.batch_execute(&format!(
        "INSERT INTO organizations (id, name) VALUES ('{ORG}', 'Big Studio');
         INSERT INTO weddings (id, organization_id, couple_names)
           SELECT ('0e000000-0000-4000-8000-' || lpad(w::text, 12, '0'))::uuid, '{ORG}', 'couple ' || w
           FROM generate_series(1, 100) w;
         INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
           SELECT '{ORG}', ('0e000000-0000-4000-8000-' || lpad((1 + i % 100)::text, 12, '0'))::uuid,
                  gen_random_uuid(), 'number', to_jsonb(i)
           FROM generate_series(1, 50000) i;"
    ))
    .await
    .unwrap();

    // writes that run while the daemon starts and takes its snapshot
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let w = sql(&cluster).await;
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(42);
            let mut n: i64 = 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let sql = match rng.gen_range(0..10) {
                    0 => format!(
                        "INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
                           VALUES ('{ORG}', '0e000000-0000-4000-8000-000000000001', gen_random_uuid(), 'number', '{n}')"
                    ),
                    1 => "DELETE FROM form_field_values WHERE id = (SELECT id FROM form_field_values ORDER BY random() LIMIT 1)"
                        .to_string(),
                    _ => format!(
                        "UPDATE form_field_values SET value = '{n}'
                           WHERE id = (SELECT id FROM form_field_values ORDER BY random() LIMIT 1)"
                    ),
                };
                w.batch_execute(&sql).await.unwrap();
            }
        })
    };
    let (_dir, d) = daemon::start_on(&cluster).await;
    // keep writing a little after streaming started, then stop
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    caught_up(&db, &d).await;

    // replay the events into a state: (wedding, field) → value
    let mut state: BTreeMap<(String, String), serde_json::Value> = BTreeMap::new();
    let mut last_seen: BTreeMap<(String, String), serde_json::Value> = BTreeMap::new();
    let all = events(&d.queue);
    let snapshot_events = all.iter().filter(|e| e.data.snapshot).count();
    for e in &all {
        let key = (
            e.data.wedding_id.clone().unwrap(),
            e.data.field_id.clone().unwrap(),
        );
        match e.kind {
            EventKind::Deleted => {
                assert!(
                    state.remove(&key).is_some(),
                    "a delete of a field never created: {key:?}"
                );
            }
            EventKind::Created | EventKind::Updated => {
                let value = e.data.new_value.clone().unwrap();
                assert_ne!(
                    last_seen.get(&key),
                    Some(&value),
                    "the same value twice for {key:?}"
                );
                if e.kind == EventKind::Created {
                    assert!(!state.contains_key(&key), "created twice: {key:?}");
                }
                last_seen.insert(key.clone(), value.clone());
                state.insert(key, value);
            }
        }
    }
    let rows = db
        .query(
            "SELECT wedding_id::text, field_id::text, value::text FROM form_field_values",
            &[],
        )
        .await
        .unwrap();
    let expected: BTreeMap<(String, String), serde_json::Value> = rows
        .iter()
        .map(|r| {
            (
                (r.get(0), r.get(1)),
                serde_json::from_str(r.get::<_, &str>(2)).unwrap(),
            )
        })
        .collect();
    assert_eq!(state.len(), expected.len());
    assert!(
        state == expected,
        "the state built from events equals the database's"
    );
    assert!(snapshot_events >= 49_000, "{snapshot_events} snapshot events");
    assert!(
        all.len() > snapshot_events,
        "concurrent writes were streamed after the snapshot"
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_interrupted_by_kill_9_is_taken_again_on_restart_without_gap_or_double() {
    use crate::support::daemon::{read_queue, DaemonProcess, Workdir};
    let cluster = cluster_with_schema();
    let db = sql(&cluster).await;
    db.batch_execute(&format!(
        "INSERT INTO organizations (id, name) VALUES ('{ORG}', 'Interrupted Studio');
         INSERT INTO weddings (id, organization_id, couple_names) VALUES ('{WEDDING}', '{ORG}', 'E & F');
         INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
           SELECT '{ORG}', '{WEDDING}', gen_random_uuid(), 'number', to_jsonb(i) FROM generate_series(1, 150000) i;"
    ))
    .await
    .unwrap();
    let work = Workdir::new(&cluster);
    let (queue_path, config_path, log, http) = (&work.queue, &work.config, &work.log, work.http);

    // killed while the snapshot is being read: the slot exists, the snapshot is not done. On a
    // loaded machine the kill can land after the snapshot finished: then the slot and the queue
    // go and the start is tried again. A slot still being created is listed too, but a kill then
    // takes it away with its walsender (seen once: the restart found no slot to replace), so the
    // kill waits for a slot with a consistent point
    let slots = || async {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_replication_slots
                  WHERE slot_name = 'fieldsync' AND confirmed_flush_lsn IS NOT NULL",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n
    };
    for tries in 1.. {
        let first = DaemonProcess::spawn(config_path, http, log);
        wait_for_async(DEADLINE, "the snapshot to start", || async { slots().await == 1 }).await;
        first.kill9();
        let state = crate::support::daemon::open_queue(queue_path)
            .and_then(|q| q.snapshot_state())
            .unwrap();
        if state == Some(fieldsync::store::SnapshotState::Started) {
            break;
        }
        assert!(
            tries < 5,
            "the kill never landed during the snapshot in {tries} tries"
        );
        wait_for_async(DEADLINE, "the slot of the finished try to go", || async {
            let _ = db
                .batch_execute("SELECT pg_drop_replication_slot('fieldsync')")
                .await;
            slots().await == 0
        })
        .await;
        std::fs::remove_dir_all(queue_path).unwrap();
    }
    db.batch_execute(
        "UPDATE form_field_values SET value = '-1' WHERE value = '7';
         DELETE FROM form_field_values WHERE value = '8';",
    )
    .await
    .unwrap();

    let mut second = DaemonProcess::spawn(config_path, http, log);
    crate::support::wait_for(DEADLINE, "the restarted daemon to stream", || {
        assert!(
            second.try_wait().is_none(),
            "{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        second
            .status()
            .and_then(|s| s.pointer("/source/connected")?.as_bool())
            == Some(true)
    });
    assert!(second.terminate().success());
    let logs = std::fs::read_to_string(log).unwrap();
    assert!(
        logs.contains("taking it again from a new slot"),
        "the kill interrupted the snapshot:\n{logs}"
    );
    assert_eq!(logs.matches("initial snapshot stored").count(), 1, "{logs}");

    let events: Vec<Envelope> = read_queue(queue_path)
        .into_iter()
        .filter_map(|r| r.event)
        .collect();
    let mut state: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for e in &events {
        let key = e.data.field_id.clone().unwrap();
        assert!(
            state
                .insert(key.clone(), e.data.new_value.clone().unwrap())
                .is_none(),
            "{key} twice"
        );
    }
    let rows = db
        .query("SELECT field_id::text, value::text FROM form_field_values", &[])
        .await
        .unwrap();
    let expected: BTreeMap<String, serde_json::Value> = rows
        .iter()
        .map(|r| (r.get(0), serde_json::from_str(r.get::<_, &str>(1)).unwrap()))
        .collect();
    assert_eq!(state.len(), 149_999);
    assert!(state == expected, "the retaken snapshot equals the database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_events_disabled_rows_are_captured_without_events() {
    let cluster = cluster_with_schema();
    let dir = tempfile::tempdir().unwrap();
    let toml = daemon::config_toml(&cluster, &dir.path().join("q"), 0) + "\n[events]\nenabled = false\n";
    let d = daemon::start(&toml).await;
    let db = sql(&cluster).await;
    db.batch_execute(&format!(
        "INSERT INTO organizations (id, name) VALUES ('{ORG}', 'Rows Only');
         INSERT INTO weddings (id, organization_id, couple_names) VALUES ('{WEDDING}', '{ORG}', 'G & H');
         INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
           VALUES ('{ORG}', '{WEDDING}', gen_random_uuid(), 'number', '7');"
    ))
    .await
    .unwrap();
    caught_up(&db, &d).await;
    let records = d.queue.records_after(None, usize::MAX).unwrap();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.event.is_none()));
    d.stop().await.unwrap();
}
