//! Delivery to a Standard Webhooks receiver over loopback HTTP, from edits in PostgreSQL: every
//! request verifies (with the receiver's independent verifier), the receiver's applied state ends
//! equal to the database's, per-wedding order holds through failures, outages, kill -9 and dead
//! letters, and the live SSE stream resumes without gaps.

use std::collections::BTreeMap;
use std::time::Duration;

use fieldsync::store::record::EventId;
use fieldsync_dev::receiver::{Faults, Receiver};
use rand::{Rng, SeedableRng};

use crate::support::daemon::{self, sql, DaemonProcess, Workdir};
use crate::support::{cluster_with_schema, wait_for_async, Cluster};

const DEADLINE: Duration = Duration::from_secs(180);
pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub(crate) const ORG: &str = "0d000000-0000-4000-8000-000000000001";
pub(crate) const INTEGRATION: &str = "0d000000-0000-4000-8000-0000000000e1";

/// Fast retries and a short timeout, so failure paths finish in seconds.
pub(crate) fn dispatch_toml(max_attempts: u32) -> String {
    format!(
        r#"
[dispatch]
request_timeout = "400ms"
retry_base = "20ms"
retry_cap = "400ms"
max_attempts = {max_attempts}
breaker_failures = 5
breaker_cooldown = "200ms"
"#
    )
}

pub(crate) fn wedding(n: usize) -> String {
    format!("0d000000-0000-4000-8000-{n:012x}")
}

pub(crate) fn field(n: usize) -> String {
    format!("0d000000-0000-4000-9000-{n:012x}")
}

/// The organisation, `weddings` weddings and the webhook integration pointing at `url`.
pub(crate) async fn seed(db: &tokio_postgres::Client, weddings: usize, url: &str) {
    db.batch_execute(&format!(
        "INSERT INTO organizations (id, name) VALUES ('{ORG}', 'Hooked Weddings');
         INSERT INTO organization_integrations (id, organization_id, integration_type, config, is_active)
           VALUES ('{INTEGRATION}', '{ORG}', 'webhook', '{{\"url\": \"{url}\", \"secret\": \"{SECRET}\"}}', true);"
    ))
    .await
    .unwrap();
    for w in 0..weddings {
        db.execute(
            &format!(
                "INSERT INTO weddings (id, organization_id, couple_names) VALUES ('{}', '{ORG}', 'Couple {w}')",
                wedding(w)
            ),
            &[],
        )
        .await
        .unwrap();
    }
}

/// One new `number` field of wedding `w`.
pub(crate) async fn add_field(db: &tokio_postgres::Client, w: &str) {
    db.execute(
        "INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
         SELECT organization_id, id, gen_random_uuid(), 'number', '7' FROM weddings WHERE id = $1::text::uuid",
        &[&w],
    )
    .await
    .unwrap();
}

/// `n` random edits (upserts and some deletes) of `fields` fields of `weddings` weddings, some in
/// multi-row transactions.
pub(crate) async fn edit(db: &tokio_postgres::Client, seed: u64, n: usize, weddings: usize, fields: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut done = 0;
    while done < n {
        let rows = if rng.gen_bool(0.2) { rng.gen_range(2..6) } else { 1 };
        let mut sql = String::from("BEGIN;");
        for _ in 0..rows {
            let (w, f) = (
                wedding(rng.gen_range(0..weddings)),
                field(rng.gen_range(0..fields)),
            );
            if rng.gen_bool(0.1) {
                sql +=
                    &format!("DELETE FROM form_field_values WHERE wedding_id = '{w}' AND field_id = '{f}';");
            } else {
                let adults: u32 = rng.gen_range(0..300);
                sql += &format!(
                    "INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
                     VALUES ('{ORG}', '{w}', '{f}', 'guest_count_matrix',
                             '{{\"adults\": {adults}, \"children\": 2, \"infants\": 1}}')
                     ON CONFLICT (wedding_id, field_id) DO UPDATE SET value = EXCLUDED.value, updated_at = now();"
                );
            }
        }
        sql += "COMMIT;";
        db.batch_execute(&sql).await.unwrap();
        done += rows;
    }
}

/// (wedding, field) → value, as the database has it now.
pub(crate) async fn db_state(db: &tokio_postgres::Client) -> BTreeMap<(String, String), serde_json::Value> {
    db.query(
        "SELECT wedding_id::text, field_id::text, value::text FROM form_field_values",
        &[],
    )
    .await
    .unwrap()
    .into_iter()
    .map(|r| {
        let v: String = r.get(2);
        ((r.get(0), r.get(1)), serde_json::from_str(&v).unwrap())
    })
    .collect()
}

pub(crate) async fn converge(db: &tokio_postgres::Client, receiver: &Receiver) {
    let want = db_state(db).await;
    assert!(!want.is_empty());
    wait_for_async(
        DEADLINE,
        "the receiver's state to equal the database's",
        || async { receiver.final_state() == want },
    )
    .await;
    let stats = receiver.stats();
    assert_eq!(stats.bad_signatures, 0, "every request verifies: {stats:?}");
    assert_eq!(
        receiver.order_violations(),
        Vec::<String>::new(),
        "per-wedding commit order"
    );
}

/// A receiver, a cluster with the organisation, `weddings` weddings and the webhook integration
/// pointing at the receiver, and the daemon in this process (see [`start_with`]).
pub(crate) struct Setup {
    pub(crate) receiver: Receiver,
    pub(crate) db: tokio_postgres::Client,
    pub(crate) d: fieldsync::app::Daemon,
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) _cluster: Cluster,
}

pub(crate) async fn setup(weddings: usize, max_attempts: u32, http: &str, dispatch: &str) -> Setup {
    let cluster = cluster_with_schema();
    let receiver = Receiver::start(SECRET).await;
    let db = sql(&cluster).await;
    seed(&db, weddings, &receiver.url()).await;
    let (_dir, d) = start_with(&cluster, max_attempts, http, dispatch).await;
    Setup {
        receiver,
        db,
        d,
        _dir,
        _cluster: cluster,
    }
}

/// The daemon in this process; `http` is added to the `[http]` section, `dispatch` to `[dispatch]`.
async fn start_with(
    cluster: &Cluster,
    max_attempts: u32,
    http: &str,
    dispatch: &str,
) -> (tempfile::TempDir, fieldsync::app::Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let toml = daemon::config_toml(cluster, &dir.path().join("q"), 0)
        .replace("[http]\n", &format!("[http]\n{http}"))
        + &dispatch_toml(max_attempts)
        + dispatch;
    (dir, daemon::start(&toml).await)
}

fn deliveries_status(d: &fieldsync::app::Daemon) -> serde_json::Value {
    let (code, body) = daemon::http_get(d.http_addr, "/deliveries").expect("daemon answers");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_edits_reach_the_webhook_receiver_signed_and_in_order() {
    let Setup {
        receiver,
        db,
        d,
        _dir,
        _cluster,
    } = setup(5, 10_000, "", "").await;

    edit(&db, 1, 200, 5, 4).await;
    converge(&db, &receiver).await;

    let first = &receiver.accepted()[0].body;
    assert_eq!(
        first.pointer("/data/organization_id").and_then(|v| v.as_str()),
        Some(ORG)
    );
    assert!(
        first.pointer("/data/wedding/couple_names").is_some(),
        "the context travels: {first}"
    );
    let status = deliveries_status(&d);
    let integ = &status["integrations"][0];
    assert_eq!(integ["id"], INTEGRATION);
    assert_eq!(integ["breaker"], "closed");
    assert!(integ["delivered"].as_u64().unwrap() > 0, "{status}");
    // the log shows the attempts, without values
    let (_, log) = daemon::http_get(d.http_addr, "/deliveries/log?last=5").unwrap();
    let log: Vec<serde_json::Value> = serde_json::from_str(&log).unwrap();
    assert_eq!(log.len(), 5);
    assert!(log.iter().all(|e| e["integration_id"] == INTEGRATION), "{log:?}");
    for e in &log {
        // superseded deliveries were never attempted; every attempt has its latency and status
        let attempted = e["outcome"] != "superseded";
        assert_eq!(e["latency_ms"].is_number(), attempted, "{e}");
        assert_eq!(e["status"] == 200, attempted, "{e}");
    }
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_receiver_still_ends_with_the_databases_state_in_order() {
    let Setup {
        receiver,
        db,
        d,
        _dir,
        _cluster,
    } = setup(20, 10_000, "", "").await;
    receiver.set_faults(Faults {
        error_rate: 0.3,
        rate_limit_rate: 0.05,
        retry_after_secs: 1,
        timeout_rate: 0.03,
        hang: Duration::from_millis(700),
        ..Faults::default()
    });

    edit(&db, 2, 600, 20, 5).await;
    converge(&db, &receiver).await;
    let stats = receiver.stats();
    assert!(
        stats.answered_500 > 20 && stats.answered_429 > 0 && stats.hung > 0,
        "{stats:?}"
    );
    let status = deliveries_status(&d);
    assert!(
        status["integrations"][0]["retries"].as_u64().unwrap() > 20,
        "{status}"
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_while_the_receiver_is_down_and_all_arrive_in_order_when_it_is_back() {
    let Setup {
        receiver,
        db,
        d,
        _dir,
        _cluster,
    } = setup(10, 10_000, "", "").await;

    receiver.pause().await;
    edit(&db, 3, 300, 10, 4).await;
    wait_for_async(DEADLINE, "the breaker to open", || async {
        deliveries_status(&d)["integrations"][0]["breaker"] != "closed"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await; // stay down through a few probes
    assert_eq!(receiver.stats().accepted, 0);
    receiver.resume().await;
    converge(&db, &receiver).await;
    d.stop().await.unwrap();
}

/// The receiver refuses wedding 0's events with a 400; after `n` edits of `weddings` weddings' fields
/// every other wedding has arrived and wedding 0's deliveries are dead letters. Answers wedding 0's
/// id and the dead letters as `/deliveries/dead` lists them.
async fn dead_letters_of_one_wedding(
    receiver: &Receiver,
    db: &tokio_postgres::Client,
    d: &fieldsync::app::Daemon,
    n: usize,
    weddings: usize,
) -> (String, Vec<serde_json::Value>) {
    let blocked = wedding(0);
    receiver.set_faults(Faults {
        reject_wedding: Some(blocked.clone()),
        ..Faults::default()
    });
    edit(db, 4, n, weddings, 3).await;
    daemon::caught_up(db, d).await;
    let others: BTreeMap<_, _> = db_state(db)
        .await
        .into_iter()
        .filter(|((w, _), _)| *w != blocked)
        .collect();
    wait_for_async(DEADLINE, "the other weddings to arrive", || async {
        let got = receiver.final_state();
        others.iter().all(|(k, v)| got.get(k) == Some(v))
    })
    .await;
    wait_for_async(
        DEADLINE,
        "the blocked wedding's deliveries to be dead letters",
        || async { deliveries_status(d)["integrations"][0]["queued"] == 0 },
    )
    .await;
    let (_, dead) = daemon::http_get(d.http_addr, "/deliveries/dead").unwrap();
    let dead: Vec<serde_json::Value> = serde_json::from_str(&dead).unwrap();
    assert!(!dead.is_empty());
    (blocked, dead)
}

/// After a requeue: the receiver's state equals the database's and no dead letter is left.
async fn requeued_ones_delivered(
    db: &tokio_postgres::Client,
    receiver: &Receiver,
    d: &fieldsync::app::Daemon,
) {
    converge(db, receiver).await;
    wait_for_async(DEADLINE, "requeued dead letters to be cleared", || async {
        daemon::http_get(d.http_addr, "/deliveries/dead")
            .unwrap()
            .1
            .trim()
            == "[]"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_for_one_wedding_stops_only_it_dead_letters_it_and_requeue_delivers_it() {
    let Setup {
        receiver,
        db,
        d,
        _dir,
        _cluster,
    } = setup(4, 3, "", "").await;
    let (blocked, dead) = dead_letters_of_one_wedding(&receiver, &db, &d, 120, 4).await;
    assert!(receiver.final_state().keys().all(|(w, _)| *w != blocked));
    for l in &dead {
        assert_eq!(l["wedding_id"], blocked.as_str());
        assert_eq!(l["attempts"], 3);
        assert_eq!(l["status"], 400);
        assert!(l["error"].as_str().unwrap().contains("400"), "{l}");
    }

    // the receiver is fixed; requeue from the CLI against the running daemon
    receiver.set_faults(Faults::default());
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "[http]\nlisten = \"{}\"\n{}[queue]\npath = \"{}\"\n",
            d.http_addr,
            daemon::operator_token_toml(),
            _dir.path().join("q").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(daemon::binary())
        .args(["deliveries", "--config"])
        .arg(config.path())
        .arg("requeue")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["requeued"], dead.len());
    requeued_ones_delivered(&db, &receiver, &d).await;
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_delivery_under_load_delivers_every_event_at_least_once_and_applies_it_once() {
    let cluster = cluster_with_schema();
    let receiver = Receiver::start(SECRET).await;
    receiver.set_faults(Faults {
        latency: Duration::from_millis(5),
        ..Faults::default()
    });
    let db = sql(&cluster).await;
    let work = Workdir::new(&cluster);
    // the slot exists before the first write, so every change is streamed (no snapshot)
    db.batch_execute("SELECT pg_create_logical_replication_slot('fieldsync', 'pgoutput')")
        .await
        .unwrap();
    let mut toml = std::fs::read_to_string(&work.config).unwrap();
    toml += &dispatch_toml(10_000);
    std::fs::write(&work.config, toml).unwrap();
    seed(&db, 30, &receiver.url()).await;

    // every change inserts a new field, so none is coalesced: each event must reach the receiver
    let writer = {
        let db = sql(&cluster).await;
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(5);
            for n in 0..3000usize {
                let w = wedding(rng.gen_range(0..30));
                db.execute(
                    &format!(
                        "INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
                         VALUES ('{ORG}', '{w}', '{}', 'number', to_jsonb({n}))",
                        field(n)
                    ),
                    &[],
                )
                .await
                .unwrap();
                if n % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for _ in 0..6 {
        let child = DaemonProcess::spawn(&work.config, work.http, &work.log);
        let before = receiver.stats().accepted;
        wait_for_async(DEADLINE, "deliveries to flow after a start", || async {
            receiver.stats().accepted > before || writer.is_finished()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..600))).await;
        child.kill9();
    }
    writer.await.unwrap();
    let child = DaemonProcess::spawn(&work.config, work.http, &work.log);
    converge(&db, &receiver).await;
    child.terminate();

    // every event of the queue that lists the integration reached the receiver
    let records = daemon::read_queue(&work.queue);
    let sent: std::collections::HashSet<String> = receiver.accepted().into_iter().map(|a| a.id).collect();
    let events: Vec<EventId> = records
        .iter()
        .filter(|r| r.deliveries.iter().any(|i| i == INTEGRATION))
        .map(|r| r.id)
        .collect();
    assert!(events.len() >= 3000, "{} events", events.len());
    let missing: Vec<&EventId> = events
        .iter()
        .filter(|id| !sent.contains(&id.to_string()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} events never reached the receiver: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let stats = receiver.stats();
    assert_eq!(
        stats.accepted as usize,
        events.len(),
        "each applied once: {stats:?}"
    );
}

/// One SSE message: (id, event type, data).
pub(crate) fn sse_messages(text: &str) -> Vec<(String, String, serde_json::Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut id = None;
            let mut kind = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ").or_else(|| line.strip_prefix("id:")) {
                    id = Some(v.to_owned());
                } else if let Some(v) = line
                    .strip_prefix("event: ")
                    .or_else(|| line.strip_prefix("event:"))
                {
                    kind = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ").or_else(|| line.strip_prefix("data:")) {
                    data += v;
                }
            }
            Some((id?, kind?, serde_json::from_str(&data).ok()?))
        })
        .collect()
}

/// Reads the stream until `n` messages arrived.
pub(crate) async fn read_sse(
    resp: &mut reqwest::Response,
    n: usize,
) -> Vec<(String, String, serde_json::Value)> {
    let mut text = String::new();
    tokio::time::timeout(DEADLINE, async {
        while sse_messages(&text).len() < n {
            let chunk = resp.chunk().await.unwrap().expect("stream stays open");
            text += &String::from_utf8_lossy(&chunk);
        }
    })
    .await
    .expect("SSE messages in time");
    sse_messages(&text).into_iter().take(n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_delivers_events_and_resumes_from_last_event_id_without_gaps() {
    let cluster = cluster_with_schema();
    let db = sql(&cluster).await;
    seed(&db, 3, "http://127.0.0.1:9/unused").await;
    let (_dir, d) = start_with(&cluster, 10_000, "stream_token = \"s3cret-token\"\n", "").await;
    let url = format!("http://{}/events/stream?organization={ORG}", d.http_addr);
    let client = reqwest::Client::new();

    let denied = client.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(denied.status(), 401);

    let mut live = client.get(&url).bearer_auth("s3cret-token").send().await.unwrap();
    assert_eq!(live.status(), 200);
    edit(&db, 6, 30, 3, 3).await;
    let first = read_sse(&mut live, 10).await;
    drop(live);
    assert!(first
        .iter()
        .all(|(_, kind, data)| kind.starts_with("field.") && data["data"]["organization_id"] == ORG));

    // more edits while disconnected, then resume after the 5th message
    edit(&db, 7, 30, 3, 3).await;
    daemon::caught_up(&db, &d).await;
    let all: Vec<String> = daemon::event_ids(&d);
    let resume_at = &first[4].0;
    let expected: Vec<&String> = all.iter().skip_while(|id| *id != resume_at).skip(1).collect();
    let mut resumed = client
        .get(&url)
        .bearer_auth("s3cret-token")
        .header("last-event-id", resume_at)
        .send()
        .await
        .unwrap();
    let got = read_sse(&mut resumed, expected.len()).await;
    let got_ids: Vec<&String> = got.iter().map(|(id, _, _)| id).collect();
    assert_eq!(got_ids, expected, "no gap, no repeat after Last-Event-ID");
    assert_eq!(&first[5].0, got_ids[0]);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_bound_deliveries_wait_in_the_queue_and_drain_in_order_when_the_receiver_is_back() {
    let Setup {
        receiver,
        db,
        d,
        _dir,
        _cluster,
    } = setup(10, 10_000, "", "max_queued_per_integration = 40\n").await;

    receiver.pause().await;
    edit(&db, 8, 400, 10, 40).await;
    wait_for_async(DEADLINE, "backpressure to be reported", || async {
        let s = deliveries_status(&d);
        s["integrations"][0]["backpressured"] == true
            && s["integrations"][0]["queued"].as_u64().unwrap() <= 40
    })
    .await;
    assert!(
        deliveries_status(&d)["integrations"][0]["backpressure_hits"]
            .as_u64()
            .unwrap()
            > 0
    );
    receiver.resume().await;
    converge(&db, &receiver).await;
    wait_for_async(DEADLINE, "backpressure to clear", || async {
        deliveries_status(&d)["integrations"][0]["backpressured"] == false
    })
    .await;
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_disables_the_integration_until_its_config_changes() {
    let Setup {
        receiver,
        db,
        d,
        _dir,
        _cluster,
    } = setup(3, 10_000, "", "").await;
    receiver.set_faults(Faults {
        gone: true,
        ..Faults::default()
    });

    edit(&db, 9, 40, 3, 3).await;
    wait_for_async(DEADLINE, "the integration to be disabled", || async {
        deliveries_status(&d)["integrations"][0]["disabled"].is_string()
    })
    .await;
    let answered = receiver.stats().answered_410;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.stats().answered_410,
        answered,
        "nothing is sent while disabled"
    );

    // the app points the integration at the endpoint again (any config change re-enables it)
    receiver.set_faults(Faults::default());
    db.batch_execute(&format!(
        "UPDATE organization_integrations SET config = config || '{{\"timeout_ms\": 1000}}' WHERE id = '{INTEGRATION}'"
    ))
    .await
    .unwrap();
    converge(&db, &receiver).await;
    assert!(deliveries_status(&d)["integrations"][0]["disabled"].is_null());
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_pause_policy_capture_stops_reading_while_an_integration_is_over_its_bound() {
    let dispatch = "max_queued_per_integration = 20\nbackpressure = \"pause\"\n";
    let Setup {
        receiver,
        db,
        d,
        _dir,
        _cluster,
    } = setup(5, 10_000, "", dispatch).await;

    receiver.pause().await;
    edit(&db, 10, 100, 5, 30).await;
    wait_for_async(DEADLINE, "backpressure to be reported", || async {
        deliveries_status(&d)["integrations"][0]["backpressured"] == true
    })
    .await;
    // capture is paused: new commits are not stored
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stored = d.queue.summary().unwrap().records;
    edit(&db, 11, 50, 5, 30).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        d.queue.summary().unwrap().records,
        stored,
        "nothing is read while paused"
    );

    receiver.resume().await;
    converge(&db, &receiver).await;
    assert!(d.queue.summary().unwrap().records > stored);
    d.stop().await.unwrap();
}

/// `fieldsync deliveries` with its config: (exit code, stdout, stderr).
fn cli(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    daemon::cli("deliveries", config, args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_the_cli_reads_dead_letters_requeues_and_pauses_and_the_next_start_acts_on_it() {
    let Setup {
        receiver,
        db,
        d,
        _dir,
        _cluster,
    } = setup(3, 2, "", "").await;
    let (blocked, online_dead) = dead_letters_of_one_wedding(&receiver, &db, &d, 40, 3).await;
    d.stop().await.unwrap();

    // the daemon is stopped: the CLI works on the store
    let config = _dir.path().join("cli.toml");
    std::fs::write(
        &config,
        format!(
            "[queue]\npath = \"{}\"\n{}",
            _dir.path().join("q").display(),
            daemon::test_key_line()
        ),
    )
    .unwrap();
    let (code, out, err) = cli(&config, &["dead", "--integration", INTEGRATION]);
    assert_eq!(code, 0, "{err}");
    let offline_dead: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(
        offline_dead, online_dead,
        "offline and online read the same dead letters"
    );
    let (code, _, err) = cli(&config, &["status"]);
    assert_eq!(code, 1);
    assert!(err.contains("the daemon is not running"), "{err}");
    let (code, _, err) = cli(&config, &["pause", "no-such-integration"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no integration with id \"no-such-integration\""),
        "{err}"
    );
    let (code, _, err) = cli(&config, &["requeue", "not-an-event-id"]);
    assert_eq!(code, 2, "{err}");

    let (code, out, err) = cli(&config, &["pause", INTEGRATION]);
    assert_eq!(code, 0, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer, serde_json::json!({"paused": true, "changed": true}));
    let (code, out, err) = cli(&config, &["requeue", "--integration", INTEGRATION]);
    assert_eq!(code, 0, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["requeued"], online_dead.len());
    assert_eq!(answer["note"], "sent when the daemon next starts");
    let (_, out, _) = cli(&config, &["log", "--last", "1000"]);
    let log: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(
        log.iter().filter(|e| e["outcome"] == "requeued").count(),
        online_dead.len(),
        "an offline requeue is logged like an online one"
    );

    // the next start: paused, so the requeued dead letters wait; resumed, they are delivered
    receiver.set_faults(Faults::default());
    let toml = daemon::config_toml(&_cluster, &_dir.path().join("q"), 0) + &dispatch_toml(2);
    let d = daemon::start(&toml).await;
    wait_for_async(DEADLINE, "the requeued dead letters to wait, paused", || async {
        deliveries_status(&d)["integrations"][0]["queued"] == online_dead.len()
    })
    .await;
    let status = deliveries_status(&d);
    assert!(status["integrations"][0]["paused_since"].is_string(), "{status}");
    assert_eq!(status["integrations"][0]["in_flight"], 0, "{status}");
    assert!(receiver.final_state().keys().all(|(w, _)| *w != blocked));
    let std::net::SocketAddr::V4(http) = d.http_addr else {
        panic!("IPv4 listener")
    };
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"{http}\"\n{}[queue]\npath = \"{}\"\n",
            daemon::operator_token_toml(),
            _dir.path().join("q").display()
        ),
    )
    .unwrap();
    let (code, out, err) = cli(&config, &["resume", INTEGRATION]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!({"paused": false, "changed": true})
    );
    requeued_ones_delivered(&db, &receiver, &d).await;
    d.stop().await.unwrap();
}
