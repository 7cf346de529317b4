//! Retention: delivered, confirmed records older than `[queue] retention` leave the queue and the
//! directory stops growing; what an integration still needs stays; the live stream replays within
//! the window and answers `gone` past it; a dead letter is requeued from its own copy.

use std::time::{Duration, Instant};

use fieldsync::store::record::EventId;
use fieldsync_dev::receiver::{Faults, Receiver};

use crate::dispatch::{converge, db_state, dispatch_toml, edit, read_sse, seed, ORG, SECRET};
use crate::support::daemon::{self, sql};
use crate::support::{cluster_with_schema, wait_for_async, Cluster};

const DEADLINE: Duration = Duration::from_secs(180);
/// `[queue] max_disk` of these tests: the soak stays well under it.
const MAX_DISK: u64 = 256 << 20;
const SECOND_INTEGRATION: &str = "0d000000-0000-4000-8000-0000000000e2";

/// The daemon in this process with `[queue] retention`; `http` goes to `[http]`, `extra` after
/// `[dispatch]`'s fast retries.
async fn start(
    cluster: &Cluster,
    retention: &str,
    max_attempts: u32,
    http: &str,
    extra: &str,
) -> (tempfile::TempDir, fieldsync::app::Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let toml = daemon::config_toml(cluster, &dir.path().join("q"), 0)
        .replace(
            "cache_capacity_mb = 32\n",
            &format!("cache_capacity_mb = 32\nretention = \"{retention}\"\nmax_disk = {MAX_DISK}\n"),
        )
        .replace("[http]\n", &format!("[http]\n{http}"))
        + &dispatch_toml(max_attempts)
        + extra;
    (dir, daemon::start(&toml).await)
}

/// Waits until retention has removed everything (all delivered, confirmed and older than it).
async fn drained(d: &fieldsync::app::Daemon) {
    wait_for_async(DEADLINE, "retention to remove every record", || async {
        d.queue.summary().unwrap().held == 0
    })
    .await;
}

/// `n` updates of random values of the working set, `per_txn` rows per transaction.
async fn update(db: &tokio_postgres::Client, n: usize, per_txn: usize, per_second: f64) {
    let mut pace = tokio::time::interval(Duration::from_secs_f64(per_txn as f64 / per_second));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..n / per_txn {
        pace.tick().await;
        db.execute(
            &format!(
                "UPDATE form_field_values
                    SET value = jsonb_build_object('adults', (random() * 300)::int, 'children', 2, 'infants', 1),
                        updated_at = now()
                  WHERE id IN (SELECT id FROM form_field_values ORDER BY random() LIMIT {per_txn})"
            ),
            &[],
        )
        .await
        .unwrap();
    }
}

/// The directory's size through each quarter of the updates (the median of looks every 250 ms):
/// the last quarter's is at most 1.25× the first's. Updates come at a steady
/// `FIELDSYNC_SOAK_RATE` per second (default 4,000; what the store holds at a time follows the
/// rate, so a rate that varied with the machine's other load would move the curve).
/// `FIELDSYNC_SOAK_UPDATES` (a multiple of 200) sets the measured updates and
/// `FIELDSYNC_SOAK_WARMUP` the updates before the first quarter, unmeasured (defaults 120,000
/// each); the acceptance run is `FIELDSYNC_SOAK_WARMUP=0 FIELDSYNC_SOAK_UPDATES=1000000`. The
/// delivery log is history with its own bounds (`[dispatch] log_retention` and
/// `log_max_entries`), set short here too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_the_queue_directory_stops_growing_under_steady_churn_with_short_retention() {
    const WEDDINGS: usize = 200;
    const FIELDS: usize = 10;
    const PER_TXN: usize = 50;
    let setting = |name: &str, default: usize| -> usize {
        let n = std::env::var(name).map_or(default, |v| v.parse().expect("a number of updates"));
        assert_eq!(n % (4 * PER_TXN), 0, "{name} is a multiple of 200");
        n
    };
    let (warmup, updates) = (
        setting("FIELDSYNC_SOAK_WARMUP", 120_000),
        setting("FIELDSYNC_SOAK_UPDATES", 120_000),
    );
    let rate =
        std::env::var("FIELDSYNC_SOAK_RATE").map_or(4000.0, |v| v.parse().expect("updates per second"));
    let cluster = cluster_with_schema();
    let receiver = Receiver::start(SECRET).await;
    let db = sql(&cluster).await;
    seed(&db, WEDDINGS, &receiver.url()).await;
    db.batch_execute(&format!(
        "INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
         SELECT '{ORG}', w.id, ('0d000000-0000-4000-9000-' || lpad(to_hex(f), 12, '0'))::uuid,
                'guest_count_matrix', '{{\"adults\": 1, \"children\": 2, \"infants\": 1}}'
           FROM weddings w, generate_series(0, {FIELDS} - 1) f"
    ))
    .await
    .unwrap();
    let (dir, d) = start(
        &cluster,
        "1s",
        10_000,
        "",
        "log_retention = \"1s\"\nlog_max_entries = 10000\n",
    )
    .await;
    let queue = dir.path().join("q");

    update(&db, warmup, PER_TXN, rate).await;
    // sled's files jump by tens of MiB as it takes and gives back segments, so one look at the end
    // of a quarter can land on a peak: the directory is looked at every 250 ms through each quarter
    // and the quarter's size is the median of its looks
    let looks = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let looker = tokio::spawn({
        let (looks, queue) = (looks.clone(), queue.clone());
        async move {
            loop {
                // the daemon's own measure: every file, but a snapshot sled is still writing
                if let Ok(bytes) = fieldsync::store::disk::dir_bytes(&queue) {
                    looks.lock().unwrap().push(bytes);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    });
    let started = Instant::now();
    let mut curve = Vec::new();
    for quarter in 1..=4 {
        update(&db, updates / 4, PER_TXN, rate).await;
        daemon::caught_up(&db, &d).await;
        converge(&db, &receiver).await;
        drained(&d).await;
        let mut quarter_looks = std::mem::take(&mut *looks.lock().unwrap());
        quarter_looks.sort_unstable();
        let (median, peak) = (
            quarter_looks[quarter_looks.len() / 2],
            quarter_looks[quarter_looks.len() - 1],
        );
        let s = d.queue.summary().unwrap();
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        println!(
            "soak: after {:>7} updates ({:>5.1} s): queue directory {:>6.1} MiB (median of {} looks; peak {:.1}), {} records stored, {} removed, {} held",
            warmup + quarter * updates / 4,
            started.elapsed().as_secs_f64(),
            mib(median),
            quarter_looks.len(),
            mib(peak),
            s.records,
            s.removed,
            s.held
        );
        assert!(peak < MAX_DISK, "{peak} bytes on disk, past max_disk");
        assert!(d.disk.bytes() < MAX_DISK && !d.disk.is_full());
        curve.push(median);
    }
    looker.abort();
    let (quarter, end) = (curve[0], curve[3]);
    println!(
        "soak: last/first quarter = {:.2}; {:.0} bytes on disk per change at the end",
        end as f64 / quarter as f64,
        end as f64 / (warmup + updates) as f64
    );
    assert!(
        end as f64 <= 1.25 * quarter as f64,
        "the directory keeps growing: {curve:?} bytes (median) in each quarter",
    );
    assert!(receiver.stats().accepted > 0);
    assert_eq!(receiver.final_state(), db_state(&db).await);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_an_integration_still_needs_stay_until_it_is_back_then_all_arrive_in_order() {
    let cluster = cluster_with_schema();
    let down = Receiver::start(SECRET).await;
    let up = Receiver::start(SECRET).await;
    let db = sql(&cluster).await;
    seed(&db, 10, &down.url()).await;
    db.batch_execute(&format!(
        "INSERT INTO organization_integrations (id, organization_id, integration_type, config, is_active)
           VALUES ('{SECOND_INTEGRATION}', '{ORG}', 'webhook', '{{\"url\": \"{}\", \"secret\": \"{SECRET}\"}}', true);",
        up.url()
    ))
    .await
    .unwrap();
    // down before the daemon starts: not even the initial snapshot's events reach it
    down.pause().await;
    let (_dir, d) = start(&cluster, "1s", 10_000, "", "").await;

    edit(&db, 21, 400, 10, 4).await;
    converge(&db, &up).await;
    // several retention rounds pass over records that one integration delivered and one did not
    wait_for_async(DEADLINE, "records older than three retention periods", || async {
        d.queue
            .summary()
            .unwrap()
            .oldest_record_age_seconds
            .is_some_and(|age| age > 3.0)
    })
    .await;
    let held: Vec<EventId> = d
        .queue
        .records_after(None, usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|r| r.event.is_some())
        .map(|r| r.id)
        .collect();
    assert!(!held.is_empty());
    assert_eq!(down.stats().accepted, 0);

    down.resume().await;
    converge(&db, &down).await;
    // everything it received was still pending for it, so still held (a delivery superseded by a
    // later change of its field is final, and its record may go)
    for a in down.accepted() {
        let id: EventId = a.id.parse().unwrap();
        assert!(held.contains(&id), "{id} was needed and was removed");
    }
    drained(&d).await;
    assert!(d.queue.removed().unwrap().records >= held.len() as u64);
    d.stop().await.unwrap();
}

/// Reads a stream until it ends; its text.
async fn read_to_end(resp: &mut reqwest::Response) -> String {
    let mut text = String::new();
    tokio::time::timeout(DEADLINE, async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            text += &String::from_utf8_lossy(&chunk);
        }
    })
    .await
    .expect("the stream ends");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_replays_within_retention_and_answers_gone_past_it() {
    let cluster = cluster_with_schema();
    let db = sql(&cluster).await;
    seed(&db, 3, "http://127.0.0.1:9/unused").await;
    let (_dir, d) = start(
        &cluster,
        "4s",
        10_000,
        "stream_token = \"s3cret-token\"\n",
        "enabled = false\n",
    )
    .await;
    let url = format!("http://{}/events/stream?organization={ORG}", d.http_addr);
    let client = reqwest::Client::new();
    let connect = |last: Option<String>| {
        let mut req = client.get(&url).bearer_auth("s3cret-token");
        if let Some(last) = last {
            req = req.header("last-event-id", last);
        }
        req.send()
    };

    edit(&db, 31, 30, 3, 3).await;
    daemon::caught_up(&db, &d).await;
    let events: Vec<String> = daemon::event_ids(&d);
    let resume_at = events[4].clone();
    let mut within = connect(Some(resume_at.clone())).await.unwrap();
    assert_eq!(within.status(), 200);
    let got = read_sse(&mut within, events.len() - 5).await;
    let got: Vec<&String> = got.iter().map(|(id, _, _)| id).collect();
    assert_eq!(
        got,
        events[5..].iter().collect::<Vec<_>>(),
        "replayed within the window"
    );
    drop(within);

    let newest: EventId = events.last().unwrap().parse().unwrap();
    wait_for_async(DEADLINE, "retention to remove the events", || async {
        d.queue.removed().unwrap().last.is_some_and(|l| l >= newest)
    })
    .await;
    let mut past = connect(Some(resume_at.clone())).await.unwrap();
    assert_eq!(past.status(), 200);
    let text = read_to_end(&mut past).await;
    assert!(text.contains("event: gone"), "{text}");
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .expect("gone has data");
    let gone: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(gone["last_event_id"], resume_at.as_str(), "{gone}");
    assert!(
        gone["resync"].as_str().unwrap().contains("without Last-Event-ID"),
        "{gone}"
    );
    assert!(!text.contains("id: "), "no event after gone: {text}");

    // without Last-Event-ID a client starts live even though the queue was emptied
    let mut live = connect(None).await.unwrap();
    assert_eq!(live.status(), 200);
    edit(&db, 32, 5, 3, 3).await;
    let fresh = read_sse(&mut live, 1).await;
    assert!(fresh[0].0.parse::<EventId>().unwrap() > newest);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_whose_record_was_removed_is_still_delivered_when_requeued() {
    let cluster = cluster_with_schema();
    let receiver = Receiver::start(SECRET).await;
    let db = sql(&cluster).await;
    seed(&db, 4, &receiver.url()).await;
    let (_dir, d) = start(&cluster, "1s", 3, "", "").await;
    let blocked = crate::dispatch::wedding(0);
    receiver.set_faults(Faults {
        reject_wedding: Some(blocked.clone()),
        ..Faults::default()
    });

    edit(&db, 41, 120, 4, 3).await;
    daemon::caught_up(&db, &d).await;
    let dead = || async {
        let (_, body) = daemon::http_get(d.http_addr, "/deliveries/dead").unwrap();
        serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap()
    };
    wait_for_async(DEADLINE, "the blocked wedding's dead letters", || async {
        let (_, body) = daemon::http_get(d.http_addr, "/deliveries").unwrap();
        let s: serde_json::Value = serde_json::from_str(&body).unwrap();
        s["integrations"][0]["queued"] == 0 && !dead().await.is_empty()
    })
    .await;
    let ids: Vec<EventId> = dead()
        .await
        .iter()
        .map(|l| {
            assert!(l.get("envelope").is_none(), "the copy is not listed: {l}");
            l["event_id"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    wait_for_async(
        DEADLINE,
        "retention to remove the dead letters' records",
        || async { ids.iter().all(|id| d.queue.record(*id).unwrap().is_none()) },
    )
    .await;

    receiver.set_faults(Faults::default());
    let answer = daemon::requeue_all(d.http_addr).await;
    assert_eq!(answer["requeued"], ids.len(), "{answer}");
    converge(&db, &receiver).await;
    let delivered: Vec<String> = receiver.accepted().into_iter().map(|a| a.id).collect();
    for id in &ids {
        assert!(
            delivered.contains(&id.to_string()),
            "{id} delivered from its copy"
        );
    }
    d.stop().await.unwrap();
}
