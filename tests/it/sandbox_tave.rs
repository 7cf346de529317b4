//! Contract tests of the tave adapter against its sandbox: given the sandbox and an adapter, when
//! field-sync events are delivered, then the studio's state (not the requests) is what the
//! mapping says; plus the sandbox's own checklist behaviour (CRM_APIS.md §8).

use std::time::Duration;

use fieldsync::adapters::outcome::Outcome;
use fieldsync::adapters::tave::Tave;
use fieldsync::adapters::Payload;
use fieldsync::credentials::Credentials;
use fieldsync_dev::sandbox::{Accounts, Api, Faults, Running};
use serde_json::{json, Value};

use crate::support::crm::{wedding, Events};

const KEY: &str = "sandbox-tave-api-key";
const WEDDING: &str = "7d3c3a52-8f0e-4c1e-9a57-6c1f4f4b8f02";
const TIMEOUT: Duration = Duration::from_secs(10);

async fn sandbox() -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    fieldsync_dev::sandbox::spawn(listener, Accounts::default()).unwrap()
}

fn adapter(running: &Running, key: &str) -> Tave {
    let config = json!({"api_key": key, "base_url": format!("{}/tave/api/v2", running.url())});
    Tave::from_config(&config, &crate::support::crm::credentials(running)).unwrap()
}

async fn deliver(tave: &Tave, payload: &Payload) -> Outcome {
    tave.deliver(&reqwest::Client::new(), payload, TIMEOUT).await
}

async fn delivered(tave: &Tave, payload: &Payload) {
    let outcome = deliver(tave, payload).await;
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
}

fn tave_state(running: &Running) -> Value {
    running.state()["tave"].clone()
}

fn count(running: &Running, list: &str) -> usize {
    tave_state(running)[list].as_array().map_or(0, Vec::len)
}

fn only_job(running: &Running) -> Value {
    let jobs = tave_state(running)["jobs"].as_array().cloned().unwrap();
    assert_eq!(jobs.len(), 1, "one job per wedding: {jobs:?}");
    jobs[0].clone()
}

/// The value of the job custom field named `name`.
fn custom(running: &Running, job: &Value, name: &str) -> Option<String> {
    let state = tave_state(running);
    let id = state["custom_fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)?["id"]
        .clone();
    job["customFields"]
        .as_array()?
        .iter()
        .find(|v| v["fieldId"] == id)?["value"]
        .as_str()
        .map(str::to_owned)
}

fn events_by_name(running: &Running) -> Vec<(String, String, String)> {
    let mut e: Vec<(String, String, String)> = tave_state(running)["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["startTime"].as_str().unwrap().to_owned(),
                e["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    e.sort();
    e
}

/// A raw call to the sandbox's API: (status, JSON body or `Null`).
async fn call(running: &Running, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("{}/tave/api/v2{path}", running.url());
    let mut r = client
        .request(method.parse().unwrap(), url)
        .header("X-API-KEY", KEY);
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&b).unwrap());
    }
    let answer = r.send().await.unwrap();
    let status = answer.status().as_u16();
    let bytes = answer.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Scenarios that call the sandbox directly and send invalid requests on purpose: only the
/// sandbox's answers are held to the spec.
const PROBES: &[&str] = &[
    "answers_auth_404_and_faults_in_its_error_shapes",
    "pages_within_the_documented_limits",
    "external_mappings_cannot_change_once_set",
    "worksheet_creates_everything_or_nothing",
];

/// Each scenario runs as its own test on a fresh sandbox, and all of them again for the spec check.
macro_rules! scenarios {
    ($($test:ident => $scenario:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $test() {
                $scenario(&sandbox().await).await;
            }
        )*

        /// Every request the adapter sent and every answer the sandbox gave, in all scenarios,
        /// against the vendor's OpenAPI document.
        #[tokio::test]
        async fn sandbox_tave_every_exchange_matches_the_vendor_spec() {
            let Some(spec) = crate::support::spec::vsco() else {
                return;
            };
            let mut violations = Vec::new();
            let mut checked = 0;
            $(
                let running = sandbox().await;
                $scenario(&running).await;
                for e in running.exchanges(Api::Tave) {
                    checked += 1;
                    let probe = PROBES.contains(&stringify!($scenario));
                    for v in spec.check(&e) {
                        if probe && v.contains(" request") {
                            continue; // a probe sends invalid requests on purpose
                        }
                        violations.push(format!("{}: {v}", stringify!($scenario)));
                    }
                }
            )*
            assert!(checked > 100, "only {checked} exchanges");
            assert!(violations.is_empty(), "{} violations:\n{}", violations.len(), violations.join("\n"));
        }
    };
}

scenarios! {
    sandbox_tave_first_event_creates_the_job_with_its_fields => first_event_creates_the_job_with_its_fields,
    sandbox_tave_updates_guest_count_date_venue_timeline_budget_and_dietary => updates_guest_count_date_venue_timeline_budget_and_dietary,
    sandbox_tave_replayed_delivery_creates_nothing_twice => replayed_delivery_creates_nothing_twice,
    sandbox_tave_venue_contact_orphaned_by_a_crash_is_adopted_not_duplicated => venue_contact_orphaned_by_a_crash_is_adopted_not_duplicated,
    sandbox_tave_rate_limit_is_retried_after_the_servers_delay => rate_limit_is_retried_after_the_servers_delay,
    sandbox_tave_wrong_key_disables_without_showing_it => wrong_key_disables_without_showing_it,
    sandbox_tave_validation_error_is_a_dead_letter_naming_the_field => validation_error_is_a_dead_letter_naming_the_field,
    sandbox_tave_answers_auth_404_and_faults_in_its_error_shapes => answers_auth_404_and_faults_in_its_error_shapes,
    sandbox_tave_pages_within_the_documented_limits => pages_within_the_documented_limits,
    sandbox_tave_external_mappings_cannot_change_once_set => external_mappings_cannot_change_once_set,
    sandbox_tave_worksheet_creates_everything_or_nothing => worksheet_creates_everything_or_nothing,
    sandbox_tave_new_lead_api_answers_ok_and_stores_the_lead => new_lead_api_answers_ok_and_stores_the_lead,
    sandbox_tave_concurrent_weddings_share_one_set_of_custom_fields => concurrent_weddings_share_one_set_of_custom_fields,
    sandbox_tave_a_custom_field_deleted_in_tave_is_made_again => a_custom_field_deleted_in_tave_is_made_again,
    sandbox_tave_a_job_deleted_in_tave_is_looked_up_again_and_recreated => a_job_deleted_in_tave_is_looked_up_again_and_recreated,
    sandbox_tave_server_errors_and_outages_are_retried_against_the_endpoint => server_errors_and_outages_are_retried_against_the_endpoint,
}

fn guests(adults: u32, children: u32, infants: u32) -> Value {
    json!({"adults": adults, "children": children, "infants": infants})
}

async fn first_event_creates_the_job_with_its_fields(running: &Running) {
    let tave = adapter(running, KEY);
    let w = wedding(WEDDING);
    let mut events = Events::default();
    delivered(
        &tave,
        &events.payload(
            "field.created",
            "guest_count_matrix",
            "f-guests",
            guests(120, 14, 3),
            &w,
        ),
    )
    .await;

    let job = only_job(running);
    assert_eq!(job["name"], "Amara & Tom");
    assert_eq!(job["eventDate"], "2027-06-19");
    assert_eq!(job["guestCount"], 137);
    assert_eq!(job["externalMappings"][0]["id"], WEDDING);
    assert_eq!(custom(running, &job, "Guests: adults").as_deref(), Some("120"));
    assert_eq!(custom(running, &job, "Guests: children").as_deref(), Some("14"));
    assert_eq!(custom(running, &job, "Guests: infants").as_deref(), Some("3"));
    // the wedding's venue came with the worksheet, linked to the job
    let state = tave_state(running);
    assert_eq!(state["contacts"][0]["kind"], "location");
    assert_eq!(state["contacts"][0]["name"], "Kew Gardens");
    assert_eq!(state["job_contacts"][0]["jobId"], job["id"]);
    assert_eq!(state["job_contacts"][0]["contactId"], state["contacts"][0]["id"]);
}

async fn updates_guest_count_date_venue_timeline_budget_and_dietary(running: &Running) {
    let tave = adapter(running, KEY);
    let mut w = wedding(WEDDING);
    let mut ev = Events::default();
    delivered(
        &tave,
        &ev.payload(
            "field.created",
            "guest_count_matrix",
            "f-guests",
            guests(120, 14, 3),
            &w,
        ),
    )
    .await;
    let job_id = only_job(running)["id"].clone();

    // guest count
    delivered(
        &tave,
        &ev.payload(
            "field.updated",
            "guest_count_matrix",
            "f-guests",
            guests(100, 10, 0),
            &w,
        ),
    )
    .await;
    let job = only_job(running);
    assert_eq!(
        (job["id"].clone(), job["guestCount"].clone()),
        (job_id.clone(), json!(110))
    );
    assert_eq!(custom(running, &job, "Guests: infants").as_deref(), Some("0"));

    // date
    delivered(
        &tave,
        &ev.payload("field.updated", "wedding_date", "f-date", json!("2027-07-03"), &w),
    )
    .await;
    assert_eq!(only_job(running)["eventDate"], "2027-07-03");

    // venue: updated in place
    let contact_id = tave_state(running)["contacts"][0]["id"].clone();
    let venue = json!({"name": "Syon Park", "formatted_address": "London Road, Brentford TW8 8JF, UK",
        "phone_number": "+44 20 8560 0882", "website": "https://www.syonpark.co.uk", "types": ["park"]});
    delivered(
        &tave,
        &ev.payload("field.updated", "venue_selector", "f-venue", venue, &w),
    )
    .await;
    let state = tave_state(running);
    assert_eq!(
        (count(running, "contacts"), count(running, "job_contacts")),
        (1, 1)
    );
    assert_eq!(state["contacts"][0]["id"], contact_id);
    assert_eq!(state["contacts"][0]["name"], "Syon Park");
    assert_eq!(
        state["contacts"][0]["address"]["streetAddress"],
        "London Road, Brentford TW8 8JF, UK"
    );
    assert_eq!(state["contacts"][0]["phone"]["e164"], "+442085600882");
    let no_phone = json!({"name": "Syon Park", "formatted_address": "London Road, Brentford TW8 8JF, UK"});
    delivered(
        &tave,
        &ev.payload("field.updated", "venue_selector", "f-venue", no_phone, &w),
    )
    .await;
    let state = tave_state(running);
    assert_eq!(
        state["contacts"][0]["phone"],
        Value::Null,
        "a venue's removed phone is removed"
    );
    assert_eq!(state["contacts"][0]["id"], contact_id);

    // timeline: add, move, delete
    let timeline = json!({"events": [
        {"time": "13:00", "duration": 45, "title": "Ceremony", "category": "ceremony"},
        {"time": "23:30", "duration": 60, "title": "Last dance", "category": "reception"}
    ]});
    delivered(
        &tave,
        &ev.payload("field.created", "timeline_builder", "f-tl", timeline, &w),
    )
    .await;
    let added = events_by_name(running);
    assert_eq!(added.len(), 2);
    assert_eq!(
        (added[0].0.as_str(), added[0].1.as_str()),
        ("Ceremony", "13:00:00")
    );
    let events = tave_state(running)["events"].clone();
    let last = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "Last dance")
        .unwrap()
        .clone();
    assert_eq!(last["timezoneName"], "Europe/London");
    assert_eq!(last["jobId"], job_id);
    assert_eq!(
        (last["startDate"].as_str(), last["endDate"].as_str()),
        (Some("2027-06-19"), Some("2027-06-20"))
    );
    assert_eq!(
        last["externalMappings"][0]["id"],
        format!("{WEDDING}:tl:last-dance")
    );
    let moved = json!({"events": [
        {"time": "14:00", "duration": 45, "title": "Ceremony", "category": "ceremony"},
        {"time": "23:30", "duration": 60, "title": "Last dance", "category": "reception"}
    ]});
    delivered(
        &tave,
        &ev.payload("field.updated", "timeline_builder", "f-tl", moved, &w),
    )
    .await;
    let after_move = events_by_name(running);
    assert_eq!(after_move[0].1, "14:00:00");
    assert_eq!(after_move[0].2, added[0].2, "a moved item keeps its event");
    // a new wedding date moves the timeline's events with it
    delivered(
        &tave,
        &ev.payload("field.updated", "wedding_date", "f-date", json!("2027-07-10"), &w),
    )
    .await;
    let state = tave_state(running);
    let last = state["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "Last dance")
        .unwrap();
    assert_eq!(
        (last["startDate"].as_str(), last["endDate"].as_str()),
        (Some("2027-07-10"), Some("2027-07-11"))
    );
    assert_eq!(last["startTime"], "23:30:00");
    assert_eq!(only_job(running)["eventDate"], "2027-07-10");
    w["wedding_date"] = json!("2027-07-10");
    let fewer = json!({"events": [{"time": "14:00", "duration": 45, "title": "Ceremony"}]});
    delivered(
        &tave,
        &ev.payload("field.updated", "timeline_builder", "f-tl", fewer, &w),
    )
    .await;
    assert_eq!(events_by_name(running).len(), 1);

    // budget: one field per category, leadMaxBudget the sum in whole units
    let photo = json!({"category": "Photography", "budgeted_amount": 250000, "actual_amount": 275000, "currency": "GBP"});
    let flowers = json!({"category": "Flowers", "budgeted_amount": 120050, "currency": "GBP"});
    delivered(
        &tave,
        &ev.payload("field.created", "budget_category", "f-b1", photo, &w),
    )
    .await;
    delivered(
        &tave,
        &ev.payload("field.created", "budget_category", "f-b2", flowers, &w),
    )
    .await;
    let job = only_job(running);
    assert_eq!(
        custom(running, &job, "Budget: Photography").as_deref(),
        Some("2500")
    );
    assert_eq!(custom(running, &job, "Budget: Flowers").as_deref(), Some("1201"));
    assert_eq!(job["leadMaxBudget"], 3701);
    // a delete carries the old value: a restarted adapter (no memory) still clears the category
    let restarted = adapter(running, KEY);
    let old_flowers = json!({"category": "Flowers", "budgeted_amount": 120050, "currency": "GBP"});
    delivered(
        &restarted,
        &ev.payload("field.deleted", "budget_category", "f-b2", old_flowers, &w),
    )
    .await;
    let job = only_job(running);
    assert_eq!(custom(running, &job, "Budget: Flowers"), None);
    assert_eq!(job["leadMaxBudget"], 2500);

    // dietary: counts and notes; a requirement no longer listed is cleared
    let diet = json!({"vegetarian": 12, "vegan": 4, "notes": "one coeliac guest"});
    delivered(
        &tave,
        &ev.payload("field.created", "dietary_matrix", "f-diet", diet, &w),
    )
    .await;
    let job = only_job(running);
    assert_eq!(
        custom(running, &job, "Dietary: vegetarian").as_deref(),
        Some("12")
    );
    assert_eq!(
        custom(running, &job, "Dietary notes").as_deref(),
        Some("one coeliac guest")
    );
    delivered(
        &tave,
        &ev.payload(
            "field.updated",
            "dietary_matrix",
            "f-diet",
            json!({"vegetarian": 10}),
            &w,
        ),
    )
    .await;
    let job = only_job(running);
    assert_eq!(
        custom(running, &job, "Dietary: vegetarian").as_deref(),
        Some("10")
    );
    assert_eq!(custom(running, &job, "Dietary: vegan"), None);
    assert_eq!(custom(running, &job, "Dietary notes"), None);

    // deletes clear what the field set
    delivered(
        &tave,
        &ev.payload("field.deleted", "guest_count_matrix", "f-guests", Value::Null, &w),
    )
    .await;
    delivered(
        &tave,
        &ev.payload("field.deleted", "timeline_builder", "f-tl", Value::Null, &w),
    )
    .await;
    delivered(
        &tave,
        &ev.payload("field.deleted", "venue_selector", "f-venue", Value::Null, &w),
    )
    .await;
    let job = only_job(running);
    assert_eq!(job["guestCount"], Value::Null);
    assert_eq!(custom(running, &job, "Guests: adults"), None);
    assert_eq!(count(running, "events"), 0);
    assert_eq!(
        (count(running, "contacts"), count(running, "job_contacts")),
        (0, 0)
    );
}

async fn replayed_delivery_creates_nothing_twice(running: &Running) {
    let w = wedding(WEDDING);
    let mut ev = Events::default();
    let payloads = [
        ev.payload(
            "field.created",
            "guest_count_matrix",
            "f-guests",
            guests(120, 14, 3),
            &w,
        ),
        ev.payload(
            "field.created",
            "venue_selector",
            "f-venue",
            json!({"name": "Kew Gardens", "formatted_address": "Richmond, London TW9 3AE, UK"}),
            &w,
        ),
        ev.payload(
            "field.created",
            "timeline_builder",
            "f-tl",
            json!({"events": [{"time": "13:00", "title": "Ceremony"}, {"time": "15:00", "title": "Photos"}]}),
            &w,
        ),
        ev.payload(
            "field.created",
            "budget_category",
            "f-b1",
            json!({"category": "Photography", "budgeted_amount": 250000}),
            &w,
        ),
        ev.payload(
            "field.created",
            "dietary_matrix",
            "f-diet",
            json!({"vegan": 2}),
            &w,
        ),
    ];
    let first = adapter(running, KEY);
    for p in &payloads {
        delivered(&first, p).await;
    }
    let before = tave_state(running);
    let modified = only_job(running)["modified"].clone();
    // a retry after a lost answer (same adapter, cached ids) and a restart (new adapter, no cache)
    for tave in [&first, &adapter(running, KEY)] {
        for p in &payloads {
            delivered(tave, p).await;
        }
    }
    let after = tave_state(running);
    for list in ["jobs", "contacts", "job_contacts", "events", "custom_fields"] {
        assert_eq!(
            after[list].as_array().unwrap().len(),
            before[list].as_array().unwrap().len(),
            "{list} after replays"
        );
    }
    assert_eq!(count(running, "jobs"), 1);
    assert_eq!(count(running, "events"), 2);
    assert_eq!(count(running, "contacts"), 1);
    assert_eq!(only_job(running)["modified"], modified, "a replay writes nothing");
}

async fn venue_contact_orphaned_by_a_crash_is_adopted_not_duplicated(running: &Running) {
    let tave = adapter(running, KEY);
    let mut w = wedding(WEDDING);
    w["venue"] = Value::Null;
    let mut ev = Events::default();
    delivered(
        &tave,
        &ev.payload(
            "field.created",
            "guest_count_matrix",
            "f-guests",
            guests(2, 0, 0),
            &w,
        ),
    )
    .await;
    assert_eq!(count(running, "contacts"), 0);
    // a delivery created the contact and died before linking it
    let orphan = json!({"kind": "location", "name": "Kew Gardens",
        "externalMappings": [{"id": format!("{WEDDING}:venue"), "url": format!("https://fieldsync.invalid/weddings/{WEDDING}")}]});
    let (status, made) = call(running, "POST", "/address-book", Some(orphan)).await;
    assert_eq!(status, 201);
    // other contacts created since must not hide it
    for i in 0..3 {
        let other = json!({"kind": "person", "firstName": format!("P{i}")});
        assert_eq!(call(running, "POST", "/address-book", Some(other)).await.0, 201);
    }
    let venue = json!({"name": "Kew Gardens", "formatted_address": "Richmond, London TW9 3AE, UK"});
    delivered(
        &tave,
        &ev.payload("field.created", "venue_selector", "f-venue", venue, &w),
    )
    .await;
    let state = tave_state(running);
    assert_eq!(count(running, "contacts"), 4, "no second venue contact");
    assert_eq!(count(running, "job_contacts"), 1);
    assert_eq!(state["job_contacts"][0]["contactId"], made["id"]);
}

async fn rate_limit_is_retried_after_the_servers_delay(running: &Running) {
    let tave = adapter(running, KEY);
    let w = wedding(WEDDING);
    let p = Events::default().payload("field.created", "wedding_date", "f-date", json!("2027-06-19"), &w);
    running.set_faults(Faults {
        api: Some(Api::Tave),
        fail_next: 1,
        status: Some(429),
        retry_after_secs: Some(7),
        ..Faults::default()
    });
    match deliver(&tave, &p).await {
        Outcome::Retry {
            after,
            endpoint_fault,
            status,
            ..
        } => {
            assert_eq!(after, Some(Duration::from_secs(7)));
            assert_eq!(status, Some(429));
            assert!(!endpoint_fault);
        }
        other => panic!("{other:?}"),
    }
    delivered(&tave, &p).await;
    assert_eq!(only_job(running)["eventDate"], "2027-06-19");
}

async fn wrong_key_disables_without_showing_it(running: &Running) {
    let tave = adapter(running, "not-the-key-31337");
    let w = wedding(WEDDING);
    let p = Events::default().payload("field.created", "wedding_date", "f-date", json!("2027-06-19"), &w);
    match deliver(&tave, &p).await {
        Outcome::Disable { status, error } => {
            assert_eq!(status, 401);
            assert!(error.contains("config.api_key"), "{error}");
            assert!(!error.contains("not-the-key-31337"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(count(running, "jobs"), 0);
}

async fn validation_error_is_a_dead_letter_naming_the_field(running: &Running) {
    let tave = adapter(running, KEY);
    let mut w = wedding(WEDDING);
    w["timezone"] = json!("Mars Standard Time");
    let p = Events::default().payload(
        "field.created",
        "timeline_builder",
        "f-tl",
        json!({"events": [{"time": "13:00", "title": "Ceremony"}]}),
        &w,
    );
    match deliver(&tave, &p).await {
        Outcome::Reject {
            status: Some(400),
            error,
        } => {
            assert!(
                error.contains("timezoneName: must be an approved timezone name"),
                "{error}"
            );
            assert!(!error.contains("Mars"), "our values stay out: {error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(count(running, "events"), 0);
}

async fn answers_auth_404_and_faults_in_its_error_shapes(running: &Running) {
    let client = reqwest::Client::new();
    let answer = client
        .get(format!("{}/tave/api/v2/job", running.url()))
        .header("X-API-KEY", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    assert_eq!(answer.headers()["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"type": "unknown", "title": "Unauthorized", "detail": "API key is missing or invalid", "status": 401})
    );
    let bearer = client
        .get(format!("{}/tave/api/v2/job", running.url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);

    let (status, body) = call(running, "GET", "/job/01h35ccwymj5ctckp8px1azhg6", None).await;
    assert_eq!(
        (status, body["status"].clone(), body["type"].clone()),
        (404, json!(404), json!("unknown"))
    );

    running.set_faults(Faults {
        api: Some(Api::Tave),
        fail_next: 1,
        status: Some(429),
        retry_after_secs: Some(3),
        ..Faults::default()
    });
    let answer = client
        .get(format!("{}/tave/api/v2/job", running.url()))
        .header("X-API-KEY", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 429);
    assert_eq!(answer.headers()["retry-after"], "3");
    let body: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert_eq!(
        (body["type"].as_str(), body["status"].as_u64()),
        (Some("quota-limit"), Some(429))
    );
}

async fn pages_within_the_documented_limits(running: &Running) {
    for i in 0..25 {
        let (status, _) = call(
            running,
            "POST",
            "/job",
            Some(json!({"name": format!("Job {i:02}")})),
        )
        .await;
        assert_eq!(status, 201);
    }
    for bad in ["pageSize=9", "pageSize=101", "page=0", "sortBy=colour"] {
        let (status, body) = call(running, "GET", &format!("/job?{bad}"), None).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["type"], "validation-error");
        let field = bad.split('=').next().unwrap();
        assert!(body["detail"][field].is_string(), "{bad}: {body}");
    }
    let (status, page) = call(running, "GET", "/job?pageSize=10&page=3&sortBy=name", None).await;
    assert_eq!(status, 200);
    assert_eq!(page["type"], "job-collection");
    assert_eq!(
        page["meta"],
        json!({"currentPage": 3, "totalPages": 3, "totalItems": 25, "rows": 10})
    );
    assert_eq!(page["items"].as_array().unwrap().len(), 5);
    assert_eq!(page["items"][0]["name"], "Job 20");
    let (_, newest) = call(running, "GET", "/job?pageSize=10&sortBy=modified%20desc", None).await;
    assert_eq!(newest["items"][0]["name"], "Job 24");
    // a PUT bumps modified, and the job moves to the top
    let first = page["items"][0]["id"].as_str().unwrap().to_owned();
    let (_, before) = call(running, "GET", &format!("/job/{first}"), None).await;
    let (status, after) = call(
        running,
        "PUT",
        &format!("/job/{first}"),
        Some(json!({"guestCount": 5, "title": "ignored"})),
    )
    .await;
    assert_eq!(status, 200);
    assert!(after["modified"].as_str() > before["modified"].as_str());
    assert_eq!(after["title"], "Job 20", "read-only fields are ignored");
    let (_, newest) = call(running, "GET", "/job?sortBy=modified%20desc", None).await;
    assert_eq!(newest["items"][0]["id"], first.as_str());
}

async fn external_mappings_cannot_change_once_set(running: &Running) {
    let mapping = json!([{"id": "w-1", "url": "https://example.com/w/1"}]);
    let (status, job) = call(
        running,
        "POST",
        "/job",
        Some(json!({"name": "A", "externalMappings": mapping})),
    )
    .await;
    assert_eq!(status, 201);
    let id = job["id"].as_str().unwrap();
    assert!(id.len() == 26 && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    assert!(job["links"]["self"]["href"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/job/{id}")));
    let other = json!([{"id": "w-2", "url": "https://example.com/w/2"}]);
    let (status, body) = call(
        running,
        "PUT",
        &format!("/job/{id}"),
        Some(json!({"externalMappings": other})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["detail"]["externalMappings"].is_string(), "{body}");
    let (status, _) = call(
        running,
        "PUT",
        &format!("/job/{id}"),
        Some(json!({"externalMappings": mapping, "guestCount": 3})),
    )
    .await;
    assert_eq!(status, 200, "sending them unchanged is fine");
    let (_, found) = call(running, "GET", "/job?externalMappingId=w-1", None).await;
    assert_eq!(found["meta"]["totalItems"], 1);
    let (status, body) = call(
        running,
        "POST",
        "/job",
        Some(json!({"externalMappings": [{"id": "", "url": "https://x.example/"}]})),
    )
    .await;
    assert_eq!(
        (status, body["detail"]["externalMappings"].is_string()),
        (400, true)
    );
    let (status, body) = call(
        running,
        "POST",
        "/job",
        Some(json!({"externalMappings": [{"id": "a", "url": "http://x.io"}]})),
    )
    .await;
    assert_eq!(
        (status, body["detail"]["externalMappings"].is_string()),
        (400, true),
        "url under 12 characters"
    );
    // custom field values are strings naming a known field
    let (_, field) = call(
        running,
        "POST",
        "/custom-field",
        Some(json!({"name": "Colour", "kind": "TextField"})),
    )
    .await;
    let bad = json!({"customFields": [{"fieldId": field["id"], "value": 3}, {"fieldId": "01h35ccwymj5ctckp8px1azhg6", "value": "x"}]});
    let (status, body) = call(running, "PUT", &format!("/job/{id}"), Some(bad)).await;
    assert_eq!(status, 400);
    assert!(body["detail"]["customFields[0].value"].is_string(), "{body}");
    assert!(body["detail"]["customFields[1].fieldId"].is_string(), "{body}");
    let (status, body) = call(
        running,
        "POST",
        "/job",
        Some(json!({"name": "x".repeat(256), "eventDate": "19/06/2027"})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["detail"]["name"].is_string() && body["detail"]["eventDate"].is_string(),
        "{body}"
    );
    let (status, _) = call(running, "DELETE", &format!("/job/{id}"), None).await;
    assert_eq!(status, 204);
    assert_eq!(call(running, "GET", &format!("/job/{id}"), None).await.0, 404);
}

async fn worksheet_creates_everything_or_nothing(running: &Running) {
    let good_contact = json!({"contact": {"kind": "location", "name": "Kew Gardens"}, "client": false});
    let bad = json!({
        "name": "A & B",
        "contacts": [good_contact],
        "events": [{"name": "Ceremony", "startDate": "2027-06-19", "colour": "blue"}],
    });
    let (status, body) = call(running, "POST", "/job/-/worksheet", Some(bad)).await;
    assert_eq!(status, 400);
    assert!(body["detail"]["events[0].colour"].is_string(), "{body}");
    for list in ["jobs", "contacts", "job_contacts", "events"] {
        assert_eq!(count(running, list), 0, "{list} rolled back");
    }
    let good = json!({
        "name": "A & B",
        "contacts": [good_contact],
        "events": [{"name": "Ceremony", "startDate": "2027-06-19", "startTime": "13:00"}],
    });
    let (status, made) = call(running, "POST", "/job/-/worksheet", Some(good)).await;
    assert_eq!(status, 201);
    let id = made["id"].as_str().unwrap();
    assert_eq!(made["events"][0]["jobId"], id);
    assert_eq!(made["contacts"][0]["contact"]["name"], "Kew Gardens");
    let (status, sheet) = call(running, "GET", &format!("/job/{id}/worksheet"), None).await;
    assert_eq!(status, 200);
    assert_eq!(sheet["events"][0]["startTime"], "13:00:00");
    let (_, links) = call(running, "GET", &format!("/job-contact?jobId={id}"), None).await;
    assert_eq!(links["type"], "jobcontact-collection");
    assert_eq!(links["meta"]["totalItems"], 1);
}

async fn new_lead_api_answers_ok_and_stores_the_lead(running: &Running) {
    let accounts = Accounts::default();
    let client = reqwest::Client::new();
    let post = |studio: &str, body: String| {
        client
            .post(format!("{}/tave/webservice/create-lead/{studio}", running.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("X-Tave-No-Email-Notification", "true")
            .body(body)
            .send()
    };
    let secret = &accounts.tave_lead_secret;
    let ok = post(
        &accounts.tave_studio_id,
        format!("SecretKey={secret}&FirstName=Amara&LastName=Okafor&JobType=Wedding&Email=a%40b.example"),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "OK");
    let lead = tave_state(running)["leads"][0].clone();
    assert_eq!(lead["fields"]["Email"], "a@b.example");
    assert_eq!(lead["emailNotification"], false);
    assert!(lead["fields"].get("SecretKey").is_none());
    for (studio, body) in [
        (
            accounts.tave_studio_id.as_str(),
            format!("SecretKey={secret}&FirstName=Amara"),
        ),
        (
            accounts.tave_studio_id.as_str(),
            "SecretKey=wrong&FirstName=A&JobType=Wedding".to_owned(),
        ),
        (
            "nostudio",
            format!("SecretKey={secret}&FirstName=A&JobType=Wedding"),
        ),
    ] {
        let answer = post(studio, body).await.unwrap();
        assert!(answer.status().is_client_error());
        assert_ne!(answer.text().await.unwrap(), "OK");
    }
    assert_eq!(count(running, "leads"), 1);
    let fields: Value = serde_json::from_slice(
        &client
            .get(format!(
                "{}/tave/webservice/create-lead?list-fields=true&StudioID={}&SecretKey={secret}",
                running.url(),
                accounts.tave_studio_id
            ))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    let job_type = fields
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "JobType")
        .unwrap();
    assert_eq!(job_type["required"], true);
}

async fn concurrent_weddings_share_one_set_of_custom_fields(running: &Running) {
    let tave = adapter(running, KEY);
    let mut ev = Events::default();
    let weddings: Vec<Value> = (0..4)
        .map(|i| wedding(&format!("7d3c3a52-8f0e-4c1e-9a57-6c1f4f4b8f1{i}")))
        .collect();
    let payloads: Vec<Payload> = weddings
        .iter()
        .map(|w| {
            ev.payload(
                "field.created",
                "guest_count_matrix",
                "f-guests",
                guests(10, 2, 1),
                w,
            )
        })
        .collect();
    let outcomes = futures_util::future::join_all(payloads.iter().map(|p| deliver(&tave, p))).await;
    for o in outcomes {
        assert!(matches!(o, Outcome::Delivered { .. }), "{o:?}");
    }
    assert_eq!(count(running, "jobs"), 4);
    assert_eq!(
        count(running, "custom_fields"),
        3,
        "adults, children, infants once each"
    );
}

async fn a_job_deleted_in_tave_is_looked_up_again_and_recreated(running: &Running) {
    let tave = adapter(running, KEY);
    let w = wedding(WEDDING);
    let mut ev = Events::default();
    delivered(
        &tave,
        &ev.payload(
            "field.created",
            "guest_count_matrix",
            "f-guests",
            guests(2, 0, 0),
            &w,
        ),
    )
    .await;
    let first = only_job(running)["id"].as_str().unwrap().to_owned();
    assert_eq!(
        call(running, "DELETE", &format!("/job/{first}"), None).await.0,
        204
    );
    delivered(
        &tave,
        &ev.payload(
            "field.updated",
            "guest_count_matrix",
            "f-guests",
            guests(3, 0, 0),
            &w,
        ),
    )
    .await;
    let job = only_job(running);
    assert_ne!(job["id"], first.as_str());
    assert_eq!(job["guestCount"], 3);
}

async fn server_errors_and_outages_are_retried_against_the_endpoint(running: &Running) {
    let tave = adapter(running, KEY);
    let w = wedding(WEDDING);
    let p = Events::default().payload("field.created", "wedding_date", "f-date", json!("2027-06-19"), &w);
    running.fail_next(Api::Tave, 1, 503);
    match deliver(&tave, &p).await {
        Outcome::Retry {
            status: Some(503),
            endpoint_fault: true,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    delivered(&tave, &p).await;
    // nothing listens here: no answer at all
    let gone = Tave::from_config(
        &json!({"api_key": KEY, "base_url": "http://127.0.0.1:9/tave/api/v2"}),
        &Credentials::default().allowing(&["http://127.0.0.1:9/".to_owned()]),
    )
    .unwrap();
    assert!(matches!(
        deliver(&gone, &p).await,
        Outcome::Retry {
            status: None,
            endpoint_fault: true,
            ..
        }
    ));
}

async fn a_custom_field_deleted_in_tave_is_made_again(running: &Running) {
    let tave = adapter(running, KEY);
    let w = wedding(WEDDING);
    let mut ev = Events::default();
    delivered(
        &tave,
        &ev.payload(
            "field.created",
            "guest_count_matrix",
            "f-guests",
            guests(2, 1, 0),
            &w,
        ),
    )
    .await;
    let state = tave_state(running);
    let adults = state["custom_fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "Guests: adults")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        call(running, "DELETE", &format!("/custom-field/{adults}"), None)
            .await
            .0,
        204
    );
    delivered(
        &tave,
        &ev.payload(
            "field.updated",
            "guest_count_matrix",
            "f-guests",
            guests(4, 1, 0),
            &w,
        ),
    )
    .await;
    let job = only_job(running);
    assert_eq!(custom(running, &job, "Guests: adults").as_deref(), Some("4"));
    assert_eq!(count(running, "custom_fields"), 3);
}
