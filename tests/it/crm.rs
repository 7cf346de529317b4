//! End to end, from edits in PostgreSQL to the CRM sandboxes: one wedding connected to every
//! adapter ends right in every sandbox's state; kill -9 during deliveries leaves no duplicate
//! record anywhere; no configured secret appears in the daemon's logs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use fieldsync_dev::receiver::Receiver;
use fieldsync_dev::sandbox::{Api, Faults, Running};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::support::daemon::{http_get, sql, DaemonProcess, Workdir};
use crate::support::{cluster_with_schema, Cluster};

const DEADLINE: Duration = Duration::from_secs(180);
const ORG: &str = "0c000000-0000-4000-8000-000000000001";
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const HONEYBOOK_SECRET: &str = "whsec_bm90LWEtcmVhbC1zZWNyZXQtanVzdC1hLXRlc3Q=";

fn wedding(n: usize) -> String {
    format!("0c000000-0000-4000-8000-{:012x}", 0x100 + n)
}

fn field(wedding: usize, name: &str) -> String {
    let n = ["guests", "venue", "timeline", "budget", "date", "diet"]
        .iter()
        .position(|f| *f == name)
        .unwrap();
    format!("0c000000-0000-4000-9000-{:012x}", wedding * 16 + n)
}

/// A cluster seeded with the organisation, `weddings` weddings and one integration per adapter
/// (credentials as file references and encrypted values), the sandboxes, a webhook receiver
/// and a daemon configuration for them.
struct World {
    db: tokio_postgres::Client,
    sandbox: Running,
    receiver: Receiver,
    work: Workdir,
    /// Every secret configured anywhere, to look for in the logs.
    secrets: Vec<String>,
    _dir: tempfile::TempDir,
    _cluster: Cluster,
}

async fn world(weddings: usize) -> World {
    let cluster = cluster_with_schema();
    let sandbox = crate::support::crm::sandbox().await;
    let receiver = Receiver::start(WEBHOOK_SECRET).await;
    let db = sql(&cluster).await;
    let work = Workdir::new(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let accounts = &sandbox.sandbox.accounts;

    let key_text = fieldsync::credentials::generate_key();
    let key = fieldsync::credentials::parse_key(&key_text).unwrap();
    let key_file = dir.path().join("fieldsync.key");
    std::fs::write(&key_file, format!("{key_text}\n")).unwrap();
    let file_ref = |name: &str, secret: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{secret}\n")).unwrap();
        json!({ "file": path })
    };
    let sealed = |secret: &str| json!({ "encrypted": fieldsync::credentials::encrypt(&key, secret) });
    let base = sandbox.url();
    let integrations = [
        (
            "tave",
            json!({"api_key": file_ref("tave", &accounts.tave_api_key), "base_url": format!("{base}/tave/api/v2")}),
        ),
        (
            "google_calendar",
            json!({"client_id": accounts.google_client_id, "client_secret": sealed(&accounts.google_client_secret),
                   "refresh_token": sealed(&accounts.google_refresh_token),
                   "base_url": format!("{base}/google/calendar/v3"), "token_url": format!("{base}/google/oauth2/token")}),
        ),
        (
            "stripe",
            json!({"secret_key": sealed(&accounts.stripe_secret_key), "base_url": format!("{base}/stripe/v1")}),
        ),
        (
            "webhook",
            json!({"url": receiver.url(), "secret": file_ref("webhook", WEBHOOK_SECRET)}),
        ),
        (
            "lightblue",
            json!({"api_key": file_ref("lightblue", &accounts.lightblue_key), "url": format!("{base}/lightblue/api.php")}),
        ),
        (
            "honeybook",
            json!({"url": format!("{base}/zapier/hooks/catch/{}/{}/", accounts.zapier_hook_id, accounts.zapier_hook_key),
                   "secret": sealed(HONEYBOOK_SECRET)}),
        ),
    ];
    let secrets = vec![
        key_text,
        accounts.tave_api_key.clone(),
        accounts.google_client_secret.clone(),
        accounts.google_refresh_token.clone(),
        accounts.stripe_secret_key.clone(),
        accounts.lightblue_key.clone(),
        WEBHOOK_SECRET.to_owned(),
        HONEYBOOK_SECRET.to_owned(),
    ];

    // the slot exists before the first write, so every change is streamed
    db.batch_execute("SELECT pg_create_logical_replication_slot('fieldsync', 'pgoutput')")
        .await
        .unwrap();
    let weddings: Vec<String> = (0..weddings).map(wedding).collect();
    let integrations = integrations
        .into_iter()
        .map(|(kind, config)| (None, kind, config))
        .collect();
    crate::support::crm::seed(&db, ORG, integrations, &weddings).await;
    let mut toml = std::fs::read_to_string(&work.config).unwrap();
    toml += &format!(
        "
[dispatch]
request_timeout = \"2s\"
retry_base = \"20ms\"
retry_cap = \"500ms\"
max_attempts = 10000
breaker_failures = 20
breaker_cooldown = \"200ms\"
secrets_key_file = \"{}\"
secret_dir = \"{}\"
allowed_base_urls = [\"{base}/\"]
",
        key_file.display(),
        dir.path().display(),
    );
    std::fs::write(&work.config, toml).unwrap();
    World {
        db,
        sandbox,
        receiver,
        work,
        secrets,
        _dir: dir,
        _cluster: cluster,
    }
}

/// Upserts one field value.
async fn set(db: &tokio_postgres::Client, w: usize, name: &str, field_type: &str, value: Value) {
    db.execute(
        "INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
         VALUES ($1::text::uuid, $2::text::uuid, $3::text::uuid, $4, $5::text::jsonb)
         ON CONFLICT (wedding_id, field_id) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
        &[
            &ORG,
            &wedding(w),
            &field(w, name),
            &field_type,
            &value.to_string(),
        ],
    )
    .await
    .unwrap();
}

fn guests(adults: u32) -> Value {
    json!({"adults": adults, "children": 14, "infants": 3})
}

fn venue(name: &str, address: &str) -> Value {
    json!({"name": name, "formatted_address": address, "place_id": format!("ChIJ{}", name.replace(' ', "")), "types": ["park"]})
}

fn timeline(items: &[(&str, &str, u32)]) -> Value {
    json!({"events": items.iter().map(|(title, time, minutes)| json!({"time": time, "duration": minutes, "title": title})).collect::<Vec<_>>()})
}

fn budget(budgeted: u64) -> Value {
    json!({"category": "Photography", "budgeted_amount": budgeted, "actual_amount": 275000, "currency": "GBP", "payment_status": "deposit_paid"})
}

/// Polls `check` until it passes; on the deadline, fails with its last complaint.
async fn settle(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        let last = match check() {
            Ok(()) => return,
            Err(e) => e,
        };
        assert!(
            start.elapsed() < DEADLINE,
            "{what} not reached after {:?}: {last}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What one wedding's fields say, as each system should show it.
struct Want<'a> {
    wedding: String,
    guests_total: u64,
    venue: &'a str,
    /// (title, local start HH:MM) of the timeline items that exist.
    timeline: &'a [(&'a str, &'a str)],
    budgeted: u64,
}

fn check_stripe(state: &Value, want: &Want) -> Result<(), String> {
    let customers: Vec<&Value> = state["stripe"]["customers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["metadata"]["fieldsync_wedding_id"] == want.wedding.as_str())
        .collect();
    let [c] = customers.as_slice() else {
        return Err(format!("stripe: {} customers for the wedding", customers.len()));
    };
    let m = &c["metadata"];
    let expect = [
        ("guests_total", want.guests_total.to_string()),
        ("venue_name", want.venue.to_owned()),
        ("budget_photography_budgeted", want.budgeted.to_string()),
        ("wedding_date", "2027-06-19".to_owned()),
    ];
    for (k, v) in expect {
        if m[k] != v.as_str() {
            return Err(format!("stripe: metadata {k} is {} not {v}", m[k]));
        }
    }
    Ok(())
}

/// Every integration has nothing queued or in flight, and no dead letters.
fn drained(http: std::net::SocketAddr) -> Result<(), String> {
    let (code, body) = http_get(http, "/deliveries").ok_or("the daemon does not answer")?;
    if code != 200 {
        return Err(format!("/deliveries answered {code}"));
    }
    let status: Value = serde_json::from_str(&body).unwrap();
    for i in status["integrations"].as_array().unwrap() {
        if i["dead"] != 0 || !i["config_error"].is_null() || !i["disabled"].is_null() {
            panic!("{} failed: {i}", i["integration_type"]);
        }
        if i["queued"] != 0 || i["in_flight"] != 0 {
            return Err(format!("{} still has deliveries: {i}", i["integration_type"]));
        }
    }
    Ok(())
}

/// The receiver's applied state equals the database's field values.
async fn check_webhook(db: &tokio_postgres::Client, receiver: &Receiver) -> Result<(), String> {
    let want: BTreeMap<(String, String), Value> = db
        .query(
            "SELECT wedding_id::text, field_id::text, value::text FROM form_field_values",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                (r.get(0), r.get(1)),
                serde_json::from_str(r.get::<_, &str>(2)).unwrap(),
            )
        })
        .collect();
    if receiver.final_state() == want {
        Ok(())
    } else {
        Err("webhook: the receiver's state differs from the database's".into())
    }
}

fn no_secret_in(log: &Path, secrets: &[String]) {
    let text = std::fs::read_to_string(log).unwrap();
    assert!(text.lines().count() > 5, "the daemon logged: {text}");
    for s in secrets {
        assert!(
            !text.contains(s.as_str()),
            "a configured secret appears in the daemon's log"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_wedding_ends_right_in_every_connected_system() {
    let w = world(1).await;
    let child = DaemonProcess::spawn(&w.work.config, w.work.http, &w.work.log);
    let db = &w.db;
    set(db, 0, "guests", "guest_count_matrix", guests(120)).await;
    set(
        db,
        0,
        "venue",
        "venue_selector",
        venue("Kew Gardens", "Richmond, London TW9 3AE, UK"),
    )
    .await;
    set(
        db,
        0,
        "timeline",
        "timeline_builder",
        timeline(&[
            ("Ceremony", "13:00", 45),
            ("Photos", "14:00", 60),
            ("Dinner", "18:00", 120),
        ]),
    )
    .await;
    set(db, 0, "budget", "budget_category", budget(250_000)).await;
    set(db, 0, "date", "wedding_date", json!("2027-06-19")).await;
    let first = Want {
        wedding: wedding(0),
        guests_total: 137,
        venue: "Kew Gardens",
        timeline: &[("Ceremony", "13:00"), ("Photos", "14:00"), ("Dinner", "18:00")],
        budgeted: 250_000,
    };
    settle("the first values in every system", || {
        drained(w.work.http)?;
        check_all(&w.sandbox.state(), &first)
    })
    .await;
    check_webhook(db, &w.receiver).await.unwrap();

    // a guest-count change, a venue change, timeline edits (move, delete, add) and a budget change
    set(db, 0, "guests", "guest_count_matrix", guests(150)).await;
    set(
        db,
        0,
        "venue",
        "venue_selector",
        venue("Syon Park", "London TW8 8JF, UK"),
    )
    .await;
    set(
        db,
        0,
        "timeline",
        "timeline_builder",
        timeline(&[
            ("Ceremony", "13:30", 45),
            ("Dinner", "18:00", 120),
            ("First dance", "20:00", 30),
        ]),
    )
    .await;
    set(db, 0, "budget", "budget_category", budget(300_000)).await;
    let last = Want {
        wedding: wedding(0),
        guests_total: 167,
        venue: "Syon Park",
        timeline: &[
            ("Ceremony", "13:30"),
            ("Dinner", "18:00"),
            ("First dance", "20:00"),
        ],
        budgeted: 300_000,
    };
    settle("the edited values in every system", || {
        drained(w.work.http)?;
        check_all(&w.sandbox.state(), &last)
    })
    .await;
    check_webhook(db, &w.receiver).await.unwrap();

    // the insert-only systems got each change as a record of its own
    let state = w.sandbox.state();
    let inbox = state["lightblue"]["inbox"].as_array().unwrap();
    assert!(
        inbox
            .iter()
            .any(|m| m["Message"].as_str().unwrap().contains("Guest count: 167")),
        "{inbox:#?}"
    );
    let caught = &state["zapier"]["hooks"]["123456/sandboxhook"];
    assert!(
        caught
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["body"]["guest_count"] == 167),
        "{caught:#?}"
    );

    assert!(child.terminate().success());
    no_secret_in(&w.work.log, &w.secrets);
}

fn check_all(state: &Value, want: &Want) -> Result<(), String> {
    check_tave(state, want)?;
    check_google(state, want)?;
    check_stripe(state, want)?;
    Ok(())
}

/// One job for the wedding, with the guest total and breakdown, the budget, one linked venue
/// contact and one event per timeline item at its local time.
fn check_tave(state: &Value, want: &Want) -> Result<(), String> {
    let t = &state["tave"];
    let list = |k: &str| t[k].as_array().unwrap().clone();
    let jobs: Vec<Value> = list("jobs")
        .into_iter()
        .filter(|j| {
            j["externalMappings"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["id"] == want.wedding.as_str()))
        })
        .collect();
    let [job] = jobs.as_slice() else {
        return Err(format!("tave: {} jobs for the wedding", jobs.len()));
    };
    if job["guestCount"] != want.guests_total {
        return Err(format!(
            "tave: guestCount {} not {}",
            job["guestCount"], want.guests_total
        ));
    }
    if job["eventDate"] != "2027-06-19" {
        return Err(format!("tave: eventDate {}", job["eventDate"]));
    }
    if job["leadMaxBudget"] != want.budgeted / 100 {
        return Err(format!(
            "tave: leadMaxBudget {} not {}",
            job["leadMaxBudget"],
            want.budgeted / 100
        ));
    }
    let field_id = |name: &str| {
        list("custom_fields")
            .into_iter()
            .find(|f| f["name"] == name)
            .and_then(|f| f["id"].as_str().map(str::to_owned))
    };
    let adults = field_id("Guests: adults").ok_or("tave: no adults custom field")?;
    let value = job["customFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["fieldId"] == adults.as_str())
        .map(|v| v["value"].clone());
    let want_adults = (want.guests_total - 17).to_string();
    if value != Some(json!(want_adults)) {
        return Err(format!("tave: adults custom field {value:?} not {want_adults}"));
    }
    let links: Vec<Value> = list("job_contacts")
        .into_iter()
        .filter(|l| l["jobId"] == job["id"])
        .collect();
    let venues: Vec<Value> = list("contacts")
        .into_iter()
        .filter(|c| c["kind"] == "location" && links.iter().any(|l| l["contactId"] == c["id"]))
        .collect();
    match venues.as_slice() {
        [v] if v["name"] == want.venue => {}
        other => {
            return Err(format!(
                "tave: venue contacts {:?}",
                other.iter().map(|c| &c["name"]).collect::<Vec<_>>()
            ))
        }
    }
    let mut events: Vec<(String, String)> = list("events")
        .into_iter()
        .filter(|e| e["jobId"] == job["id"])
        .map(|e| {
            (
                e["name"].as_str().unwrap_or("").to_owned(),
                e["startTime"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    events.sort();
    let mut expected: Vec<(String, String)> = want
        .timeline
        .iter()
        .map(|(title, at)| ((*title).to_owned(), format!("{at}:00")))
        .collect();
    expected.sort();
    if events != expected {
        return Err(format!("tave: events {events:?} not {expected:?}"));
    }
    Ok(())
}

/// One live calendar event per timeline item, at its local time in the wedding's zone, with the
/// venue as location; removed items cancelled.
fn check_google(state: &Value, want: &Want) -> Result<(), String> {
    let events = state["google"]["calendars"]["primary"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut live: Vec<(String, String)> = Vec::new();
    for e in &events {
        let private = &e["extendedProperties"]["private"];
        if private["fieldsync_wedding"] != want.wedding.as_str()
            || private["fieldsync_kind"] != "timeline"
            || e["status"] == "cancelled"
        {
            continue;
        }
        if e["start"]["timeZone"] != "Europe/London" {
            return Err(format!("google: event in zone {}", e["start"]["timeZone"]));
        }
        if !e["location"].as_str().unwrap_or("").contains(want.venue) {
            return Err(format!("google: location {} lacks {}", e["location"], want.venue));
        }
        let title = e["summary"]
            .as_str()
            .unwrap_or("")
            .split(" · ")
            .next()
            .unwrap_or("")
            .to_owned();
        live.push((title, e["start"]["dateTime"].as_str().unwrap_or("").to_owned()));
    }
    live.sort();
    let mut expected: Vec<(String, String)> = want
        .timeline
        .iter()
        .map(|(title, at)| ((*title).to_owned(), format!("2027-06-19T{at}:00")))
        .collect();
    expected.sort();
    if live != expected {
        return Err(format!("google: events {live:?} not {expected:?}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_deliveries_to_every_adapter_leaves_no_duplicate_anywhere() {
    const WEDDINGS: usize = 6;
    let w = world(WEDDINGS).await;
    for api in [Api::Tave, Api::Google, Api::Stripe, Api::Lightblue, Api::Zapier] {
        // slow answers widen the window in which a kill lands between a request and its record
        w.sandbox.set_faults(Faults {
            api: Some(api),
            latency_ms: 15,
            error_rate: 0.05,
            status: Some(503),
            ..Faults::default()
        });
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut child = DaemonProcess::spawn(&w.work.config, w.work.http, &w.work.log);
    let mut wants = Vec::new();
    for round in 0..4 {
        for n in 0..WEDDINGS {
            let adults = rng.gen_range(50..200);
            set(&w.db, n, "guests", "guest_count_matrix", guests(adults)).await;
            set(
                &w.db,
                n,
                "venue",
                "venue_selector",
                venue(&format!("Hall {round}"), "London, UK"),
            )
            .await;
            let start = format!("{:02}:00", 12 + round);
            set(
                &w.db,
                n,
                "timeline",
                "timeline_builder",
                timeline(&[("Ceremony", &start, 45), ("Dinner", "18:00", 90)]),
            )
            .await;
            set(
                &w.db,
                n,
                "budget",
                "budget_category",
                budget(100_000 + round as u64),
            )
            .await;
            if round == 3 {
                wants.push(adults);
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..400))).await;
        child.kill9();
        child = DaemonProcess::spawn(&w.work.config, w.work.http, &w.work.log);
    }
    let timeline_last = [("Ceremony", "15:00"), ("Dinner", "18:00")];
    w.sandbox.clear_faults();
    settle("every wedding's last values in every system", || {
        drained(w.work.http)?;
        let state = w.sandbox.state();
        for (n, adults) in wants.iter().enumerate() {
            check_all(
                &state,
                &Want {
                    wedding: wedding(n),
                    guests_total: u64::from(*adults) + 17,
                    venue: "Hall 3",
                    timeline: &timeline_last,
                    budgeted: 100_003,
                },
            )?;
        }
        Ok(())
    })
    .await;
    check_webhook(&w.db, &w.receiver).await.unwrap();
    let state = w.sandbox.state();
    let count = |api: &str, list: &str, keep: &dyn Fn(&Value) -> bool| {
        state[api][list]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| keep(v))
            .count()
    };
    // Tave: one job and one venue contact per wedding (none orphaned), one event per item, each
    // custom field once
    assert_eq!(count("tave", "jobs", &|_| true), WEDDINGS);
    assert_eq!(count("tave", "contacts", &|c| c["kind"] == "location"), WEDDINGS);
    assert_eq!(count("tave", "events", &|_| true), WEDDINGS * timeline_last.len());
    let names: Vec<&str> = state["tave"]["custom_fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let unique: std::collections::HashSet<&&str> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "custom fields made twice: {names:?}");
    // Google: one event per item ever inserted (deterministic ids), cancelled ones included
    let events = state["google"]["calendars"]["primary"]["events"]
        .as_array()
        .unwrap();
    assert_eq!(events.len(), WEDDINGS * timeline_last.len(), "{events:#?}");
    // one Stripe customer per wedding
    assert_eq!(state["stripe"]["customers"].as_array().unwrap().len(), WEDDINGS);
    // the kills did land between requests and their records: deliveries were sent again, and
    // answered from Stripe's saved results
    let replayed = w
        .sandbox
        .exchanges(Api::Stripe)
        .iter()
        .filter(|e| e.response_headers.contains_key("idempotent-replayed"))
        .count();
    assert!(replayed > 0, "no delivery was interrupted by a kill");
    // Light Blue: every submission once (repeats were answered -4 and not filed again)
    let inbox = state["lightblue"]["inbox"].as_array().unwrap();
    let ids: std::collections::HashSet<&str> = inbox.iter().map(|m| m["ID"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), inbox.len(), "no Light Blue submission filed twice");
    child.terminate();
    no_secret_in(&w.work.log, &w.secrets);
}
