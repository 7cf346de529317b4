//! Order across crashes. The bug this pins down: a `field.created` superseded by its
//! `field.deleted`, the delete sent, kill -9 before the superseded state was stored; after the
//! restart the create was sent after the delete and the field came back to life at the receiver.
//!
//! Here the same fields are inserted, updated and deleted in transactions of 1 to 5 changes over 20
//! weddings while a webhook receiver (verifying, deduplicating, applying in arrival order) and the
//! Stripe and Tave sandboxes are slow and failing, so that deliveries coalesce; the daemon is killed
//! with kill -9 at random moments. Every target ends with the database's values, and no wedding's
//! events first reach the receiver out of commit order.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fieldsync::store::deliveries::LogOutcome;
use fieldsync_dev::receiver::{Faults, Receiver};
use fieldsync_dev::sandbox::{Api, Faults as SandboxFaults};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::dispatch::{converge, dispatch_toml, SECRET};
use crate::support::daemon::{sql, DaemonProcess, Workdir};
use crate::support::{cluster_with_schema, wait_for_async};

const DEADLINE: Duration = Duration::from_secs(240);
const ORG: &str = "0e000000-0000-4000-8000-000000000001";
const WEDDINGS: usize = 20;
const KILLS: usize = 16;
const WEBHOOK: &str = "0e000000-0000-4000-8000-0000000000e1";
const STRIPE: &str = "0e000000-0000-4000-8000-0000000000e2";
const TAVE: &str = "0e000000-0000-4000-8000-0000000000e3";

fn wedding(n: usize) -> String {
    format!("0e000000-0000-4000-8000-{n:012x}")
}

/// The two fields of each wedding: its guest counts and its photography budget.
const FIELDS: [(&str, &str); 2] = [("guests", "guest_count_matrix"), ("budget", "budget_category")];

fn field(wedding: usize, name: &str) -> String {
    let n = FIELDS.iter().position(|(f, _)| *f == name).unwrap();
    format!("0e000000-0000-4000-9000-{:012x}", wedding * 16 + n)
}

fn value(name: &str, n: u64) -> Value {
    match name {
        "guests" => json!({"adults": n, "children": 2, "infants": 1}),
        _ => json!({"category": "Photography", "budgeted_amount": n * 100, "currency": "GBP"}),
    }
}

/// Random transactions of 1 to 5 changes (a quarter of them deletes) of the wedding fields, until
/// `stop`; a small pause between transactions lets deliveries of a wedding pile up and coalesce.
async fn write_until(db: tokio_postgres::Client, stop: Arc<AtomicBool>) -> usize {
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let mut transactions = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut sql = String::from("BEGIN;");
        for _ in 0..rng.gen_range(1..=5) {
            let w = rng.gen_range(0..WEDDINGS);
            let (name, field_type) = FIELDS[rng.gen_range(0..FIELDS.len())];
            let f = field(w, name);
            if rng.gen_bool(0.25) {
                sql += &format!(
                    "DELETE FROM form_field_values WHERE wedding_id = '{}' AND field_id = '{f}';",
                    wedding(w)
                );
            } else {
                sql += &format!(
                    "INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
                     VALUES ('{ORG}', '{}', '{f}', '{field_type}', '{}')
                     ON CONFLICT (wedding_id, field_id) DO UPDATE SET value = EXCLUDED.value, updated_at = now();",
                    wedding(w),
                    value(name, rng.gen_range(1..300))
                );
            }
        }
        sql += "COMMIT;";
        db.batch_execute(&sql).await.unwrap();
        transactions += 1;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..15))).await;
    }
    transactions
}

/// (wedding, field name) → the value the database holds.
async fn db_fields(db: &tokio_postgres::Client) -> BTreeMap<(usize, &'static str), Value> {
    let mut out = BTreeMap::new();
    for w in 0..WEDDINGS {
        for (name, _) in FIELDS {
            let row = db
                .query_opt(
                    "SELECT value::text FROM form_field_values WHERE wedding_id = $1::text::uuid AND field_id = $2::text::uuid",
                    &[&wedding(w), &field(w, name)],
                )
                .await
                .unwrap();
            if let Some(row) = row {
                out.insert((w, name), serde_json::from_str(row.get::<_, &str>(0)).unwrap());
            }
        }
    }
    out
}

/// Each wedding's Stripe customer has the database's guest counts and budget in its metadata, and
/// none of a deleted field.
fn check_stripe(state: &Value, want: &BTreeMap<(usize, &str), Value>) -> Result<(), String> {
    let customers = state["stripe"]["customers"].as_array().unwrap();
    for w in 0..WEDDINGS {
        let found: Vec<&Value> = customers
            .iter()
            .filter(|c| c["metadata"]["fieldsync_wedding_id"] == wedding(w).as_str())
            .collect();
        let [c] = found.as_slice() else {
            return Err(format!("stripe: {} customers for wedding {w}", found.len()));
        };
        let m = &c["metadata"];
        let guests = want
            .get(&(w, "guests"))
            .map(|v| (v["adults"].as_u64().unwrap() + 3).to_string());
        let budget = want.get(&(w, "budget")).map(|v| v["budgeted_amount"].to_string());
        for (key, expect) in [("guests_total", guests), ("budget_photography_budgeted", budget)] {
            let got = m[key].as_str().filter(|s| !s.is_empty());
            if got != expect.as_deref() {
                return Err(format!(
                    "stripe: wedding {w} metadata {key} is {got:?}, the database says {expect:?}"
                ));
            }
        }
    }
    Ok(())
}

/// Each wedding's Tave job has the database's guest total and photography budget, and neither
/// when the field was deleted.
fn check_tave(state: &Value, want: &BTreeMap<(usize, &str), Value>) -> Result<(), String> {
    let t = &state["tave"];
    let budget_field = t["custom_fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "Budget: Photography")
        .map(|f| f["id"].clone());
    for w in 0..WEDDINGS {
        let jobs: Vec<&Value> = t["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| {
                j["externalMappings"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|m| m["id"] == wedding(w).as_str()))
            })
            .collect();
        let [job] = jobs.as_slice() else {
            return Err(format!("tave: {} jobs for wedding {w}", jobs.len()));
        };
        let guests = want
            .get(&(w, "guests"))
            .map(|v| v["adults"].as_u64().unwrap() + 3);
        if job["guestCount"].as_u64() != guests {
            return Err(format!(
                "tave: wedding {w} guestCount {}, the database says {guests:?}",
                job["guestCount"]
            ));
        }
        let budget = want
            .get(&(w, "budget"))
            .map(|v| v["budgeted_amount"].as_u64().unwrap() / 100);
        let got = budget_field.as_ref().and_then(|id| {
            job["customFields"]
                .as_array()?
                .iter()
                .find(|v| v["fieldId"] == *id)
                .and_then(|v| v["value"].as_u64().or_else(|| v["value"].as_str()?.parse().ok()))
        });
        if got != budget {
            return Err(format!(
                "tave: wedding {w} photography budget {got:?}, the database says {budget:?}"
            ));
        }
    }
    Ok(())
}

/// How many deliveries of `integration` the delivery log records as superseded (coalesced).
fn superseded(queue: &std::path::Path, integration: &str) -> usize {
    let queue = crate::support::daemon::open_queue(queue).unwrap();
    let log = queue
        .deliveries()
        .unwrap()
        .read_log(Some(integration), None, usize::MAX)
        .unwrap();
    log.iter().filter(|e| e.outcome == LogOutcome::Superseded).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_deliveries_coalesce_never_sends_an_older_value_after_a_newer_one() {
    let cluster = cluster_with_schema();
    let sandbox = crate::support::crm::sandbox().await;
    let receiver = Receiver::start(SECRET).await;
    // failing and slow: a wedding's changes wait behind retries and coalesce
    receiver.set_faults(Faults {
        error_rate: 0.2,
        rate_limit_rate: 0.05,
        retry_after_secs: 1,
        latency: Duration::from_millis(10),
        ..Faults::default()
    });
    for api in [Api::Stripe, Api::Tave] {
        sandbox.set_faults(SandboxFaults {
            api: Some(api),
            error_rate: 0.2,
            status: Some(500),
            latency_ms: 10,
            ..SandboxFaults::default()
        });
    }
    let db = sql(&cluster).await;
    let work = Workdir::new(&cluster);
    let accounts = &sandbox.sandbox.accounts;
    let base = sandbox.url();
    let integrations = [
        (
            WEBHOOK,
            "webhook",
            json!({"url": receiver.url(), "secret": SECRET}),
        ),
        (
            STRIPE,
            "stripe",
            json!({"secret_key": accounts.stripe_secret_key, "base_url": format!("{base}/stripe/v1")}),
        ),
        (
            TAVE,
            "tave",
            json!({"api_key": accounts.tave_api_key, "base_url": format!("{base}/tave/api/v2")}),
        ),
    ];
    // the slot exists before the first write, so every change is streamed
    db.batch_execute("SELECT pg_create_logical_replication_slot('fieldsync', 'pgoutput')")
        .await
        .unwrap();
    let integrations = integrations
        .into_iter()
        .map(|(id, kind, config)| (Some(id), kind, config))
        .collect();
    crate::support::crm::seed(
        &db,
        ORG,
        integrations,
        &(0..WEDDINGS).map(wedding).collect::<Vec<_>>(),
    )
    .await;
    let mut toml = std::fs::read_to_string(&work.config).unwrap();
    toml += &dispatch_toml(10_000);
    toml += &format!("allowed_base_urls = [\"{base}/\"]\n");
    std::fs::write(&work.config, toml).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until(sql(&cluster).await, stop.clone()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    for _ in 0..KILLS {
        let child = DaemonProcess::spawn(&work.config, work.http, &work.log);
        let before = receiver.stats().requests;
        wait_for_async(DEADLINE, "deliveries to flow after a start", || async {
            receiver.stats().requests > before
        })
        .await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..700))).await;
        child.kill9();
    }
    stop.store(true, Ordering::Relaxed);
    let transactions = writer.await.unwrap();
    assert!(transactions > 100, "{transactions} transactions");

    let child = DaemonProcess::spawn(&work.config, work.http, &work.log);
    sandbox.clear_faults();
    receiver.set_faults(Faults::default());
    // the receiver: the database's values (deleted fields absent), first arrivals in commit order
    converge(&db, &receiver).await;
    let want = db_fields(&db).await;
    let start = Instant::now();
    loop {
        let state = sandbox.state();
        match check_stripe(&state, &want).and_then(|()| check_tave(&state, &want)) {
            Ok(()) => break,
            Err(e) => assert!(
                start.elapsed() < DEADLINE,
                "the sandboxes did not reach the database's values: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.terminate();
    // the deliveries did coalesce, for every target
    for integration in [WEBHOOK, STRIPE, TAVE] {
        let n = superseded(&work.queue, integration);
        assert!(
            n > 0,
            "no delivery to {integration} was superseded: the test did not exercise coalescing"
        );
    }
}

/// One upsert of field `f` of wedding `w` of the dispatch tests' organisation.
async fn set_guests(db: &tokio_postgres::Client, w: &str, f: &str, adults: u32) {
    db.execute(
        &format!(
            "INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
             VALUES ('{}', '{w}', '{f}', 'guest_count_matrix', '{{\"adults\": {adults}, \"children\": 2, \"infants\": 1}}')
             ON CONFLICT (wedding_id, field_id) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            crate::dispatch::ORG
        ),
        &[],
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_superseded_once_a_later_change_of_its_field_is_sent_and_requeue_never_sends_it() {
    let crate::dispatch::Setup {
        receiver,
        db,
        d,
        _dir,
        _cluster,
    } = crate::dispatch::setup(1, 2, "", "").await;
    let (w, guests, venue) = (
        crate::dispatch::wedding(0),
        crate::dispatch::field(0),
        crate::dispatch::field(1),
    );
    let dead = |d: &fieldsync::app::Daemon| -> Vec<Value> {
        let (_, body) = crate::support::daemon::http_get(d.http_addr, "/deliveries/dead").unwrap();
        serde_json::from_str(&body).unwrap()
    };
    // given: two fields of the wedding are rejected for good
    receiver.set_faults(Faults {
        reject_wedding: Some(w.clone()),
        ..Faults::default()
    });
    set_guests(&db, &w, &guests, 100).await;
    set_guests(&db, &w, &venue, 5).await;
    wait_for_async(DEADLINE, "two dead letters", || async { dead(&d).len() == 2 }).await;
    // when: the receiver is fixed and a later change of one of the fields is delivered
    receiver.set_faults(Faults::default());
    set_guests(&db, &w, &guests, 120).await;
    wait_for_async(DEADLINE, "the later change to arrive", || async {
        receiver.final_state().len() == 1
    })
    .await;
    // then: that field's dead letter is gone (superseded); the other one stays and is requeued
    let left = dead(&d);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["field_id"], venue.as_str());
    let answer: Value = crate::support::daemon::requeue_all(d.http_addr).await;
    assert_eq!(answer["requeued"], 1);
    // (a requeued dead letter is the one event that arrives after later ones of its wedding)
    let want = crate::dispatch::db_state(&db).await;
    wait_for_async(DEADLINE, "the receiver to hold the database's values", || async {
        receiver.final_state() == want
    })
    .await;
    let got = receiver.final_state();
    assert_eq!(
        got[&(w.clone(), guests.clone())]["adults"],
        120,
        "the old value never followed the new one"
    );
    let log = d.queue.deliveries().unwrap().read_log(None, None, 100).unwrap();
    assert!(log.iter().any(|e| e.outcome == LogOutcome::Superseded
        && e.error.as_deref().is_some_and(|m| m.contains("dead letter"))));
    d.stop().await.unwrap();
}
