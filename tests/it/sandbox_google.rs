//! Contract tests of the Google Calendar adapter against its sandbox: the adapter delivers real
//! normalised events and the tests read the sandbox's state; sandbox-only checks pin the API rules
//! the sandbox reproduces (../shared/CRM_APIS.md §4, §8); every exchange is checked against the
//! vendor's discovery document.

use std::sync::Arc;
use std::time::Duration;

use fieldsync::adapters::google::{event_id, Google};
use fieldsync::adapters::outcome::Outcome;
use fieldsync::adapters::Payload;
use fieldsync_dev::sandbox::{Accounts, Api, Faults, Running};
use serde_json::{json, Value};

use crate::support::crm::{wedding, Events};
use crate::support::spec;

const W: &str = "7d3c3a52-8f0e-4c1e-9a57-6c1f4f4b8f02";
const KEW: &str = "Kew Gardens, Richmond, London TW9 3AE, UK";

async fn sandbox() -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    fieldsync_dev::sandbox::spawn(listener, Accounts::default()).unwrap()
}

fn config(running: &Running) -> Value {
    let a = Accounts::default();
    json!({
        "client_id": a.google_client_id,
        "client_secret": a.google_client_secret,
        "refresh_token": a.google_refresh_token,
        "base_url": format!("{}/google/calendar/v3", running.url()),
        "token_url": format!("{}/google/oauth2/token", running.url()),
    })
}

fn adapter(running: &Running) -> Google {
    Google::from_config(&config(running), &crate::support::crm::credentials(running)).expect("valid config")
}

async fn deliver(g: &Google, p: &Payload) -> Outcome {
    g.deliver(&reqwest::Client::new(), p, Duration::from_secs(10))
        .await
}

/// Every event of the primary calendar, cancelled ones included.
fn events(running: &Running) -> Vec<Value> {
    running.state()["google"]["calendars"]["primary"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn live(running: &Running) -> Vec<Value> {
    events(running)
        .into_iter()
        .filter(|e| e["status"] == "confirmed")
        .collect()
}

/// The live event of a timeline item, by its key.
fn item(running: &Running, key: &str) -> Option<Value> {
    live(running)
        .into_iter()
        .find(|e| e["extendedProperties"]["private"]["fieldsync_item"] == key)
}

fn timeline(items: &[(&str, i64, &str)]) -> Value {
    let events: Vec<Value> = items
        .iter()
        .map(|(time, duration, title)| json!({"time": time, "duration": duration, "title": title, "category": "reception"}))
        .collect();
    json!({ "events": events })
}

fn day() -> Value {
    timeline(&[
        ("13:00", 45, "Ceremony"),
        ("21:00", 30, "First dance"),
        ("23:30", 60, "Last dance"),
    ])
}

/// Asserts every exchange so far matches the discovery document (methods, query parameters,
/// request and answer bodies).
fn conforms(running: &Running) {
    let checker = spec::google();
    let exchanges = running.exchanges(Api::Google);
    assert!(!exchanges.is_empty());
    let violations: Vec<String> = exchanges.iter().flat_map(|e| checker.check(e)).collect();
    assert!(violations.is_empty(), "{violations:#?}");
    // the checker does read these exchanges: an unknown property in a body is flagged
    if let Some(e) = exchanges
        .iter()
        .find(|e| e.method == "POST" && e.path.ends_with("/events"))
    {
        let mut bad = e.clone();
        let mut body: Value = serde_json::from_slice(&bad.request_body).unwrap();
        body["colour"] = json!("red");
        bad.request_body = body.to_string().into();
        assert!(!checker.check(&bad).is_empty(), "the checker saw nothing wrong");
    }
}

#[tokio::test]
async fn a_timeline_becomes_one_event_per_item_in_the_weddings_zone_at_the_venue() {
    let running = sandbox().await;
    let g = adapter(&running);
    let w = wedding(W);
    let p = Events::default().payload("field.created", "timeline_builder", "f-tl", day(), &w);

    assert_eq!(deliver(&g, &p).await, Outcome::Delivered { status: 200 });

    assert_eq!(live(&running).len(), 3);
    let ceremony = item(&running, "ceremony").expect("ceremony event");
    assert_eq!(ceremony["summary"], "Ceremony · Amara & Tom");
    assert_eq!(
        ceremony["start"],
        json!({"dateTime": "2027-06-19T13:00:00", "timeZone": "Europe/London"})
    );
    assert_eq!(
        ceremony["end"],
        json!({"dateTime": "2027-06-19T13:45:00", "timeZone": "Europe/London"})
    );
    assert_eq!(ceremony["location"], KEW);
    assert_eq!(ceremony["extendedProperties"]["private"]["fieldsync_wedding"], W);
    assert_eq!(ceremony["id"], event_id(W, "timeline", "ceremony"));
    let last = item(&running, "last-dance").expect("last dance");
    assert_eq!(
        last["end"]["dateTime"], "2027-06-20T00:30:00",
        "an item crossing midnight ends the next day"
    );
    assert_eq!(running.state()["google"]["tokens_issued"], 1);
    conforms(&running);
}

#[tokio::test]
async fn updates_move_add_and_remove_items_and_follow_venue_and_date_changes() {
    let running = sandbox().await;
    let g = adapter(&running);
    let mut w = wedding(W);
    let mut ev = Events::default();
    let created = ev.payload("field.created", "timeline_builder", "f-tl", day(), &w);
    assert_eq!(deliver(&g, &created).await, Outcome::Delivered { status: 200 });

    // given the ceremony moved, the first dance removed and speeches added
    let changed = timeline(&[
        ("14:00", 45, "Ceremony"),
        ("19:00", 30, "Speeches"),
        ("23:30", 60, "Last dance"),
    ]);
    let updated = ev.payload("field.updated", "timeline_builder", "f-tl", changed, &w);
    assert_eq!(deliver(&g, &updated).await, Outcome::Delivered { status: 200 });
    let keys: Vec<Value> = live(&running)
        .iter()
        .map(|e| e["extendedProperties"]["private"]["fieldsync_item"].clone())
        .collect();
    assert_eq!(keys, [json!("ceremony"), json!("last-dance"), json!("speeches")]);
    assert_eq!(
        item(&running, "ceremony").unwrap()["start"]["dateTime"],
        "2027-06-19T14:00:00"
    );
    let removed = events(&running)
        .into_iter()
        .find(|e| e["id"] == event_id(W, "timeline", "first-dance"))
        .unwrap();
    assert_eq!(removed["status"], "cancelled");

    // when the venue changes, every event of the wedding moves there
    let venue = json!({"name": "Syon Park", "formatted_address": "Brentford TW8 8JF, UK"});
    w["venue"] = venue.clone();
    let moved = ev.payload("field.updated", "venue_selector", "f-venue", venue, &w);
    assert_eq!(deliver(&g, &moved).await, Outcome::Delivered { status: 200 });
    for e in live(&running) {
        assert_eq!(e["location"], "Syon Park, Brentford TW8 8JF, UK", "{e}");
    }

    // when the wedding date changes, an all-day event appears and the timeline follows
    w["wedding_date"] = json!("2027-07-03");
    let date = ev.payload("field.updated", "wedding_date", "f-date", json!("2027-07-03"), &w);
    assert_eq!(deliver(&g, &date).await, Outcome::Delivered { status: 200 });
    let all_day = live(&running)
        .into_iter()
        .find(|e| e["id"] == event_id(W, "wedding_date", "wedding_date"))
        .expect("all-day event");
    assert_eq!(all_day["start"], json!({"date": "2027-07-03"}));
    assert_eq!(all_day["end"], json!({"date": "2027-07-04"}));
    assert_eq!(all_day["summary"], "Wedding · Amara & Tom");
    assert_eq!(
        item(&running, "ceremony").unwrap()["start"],
        json!({"dateTime": "2027-07-03T14:00:00", "timeZone": "Europe/London"})
    );
    assert_eq!(
        item(&running, "last-dance").unwrap()["end"]["dateTime"],
        "2027-07-04T00:30:00"
    );

    // when the timeline is deleted its events go, and the all-day event stays
    let gone = ev.payload("field.deleted", "timeline_builder", "f-tl", Value::Null, &w);
    assert_eq!(deliver(&g, &gone).await, Outcome::Delivered { status: 200 });
    let left: Vec<Value> = live(&running).iter().map(|e| e["id"].clone()).collect();
    assert_eq!(left, [json!(all_day["id"])]);
    let no_date = ev.payload("field.deleted", "wedding_date", "f-date", Value::Null, &w);
    assert_eq!(deliver(&g, &no_date).await, Outcome::Delivered { status: 200 });
    assert!(live(&running).is_empty());
    conforms(&running);
}

#[tokio::test]
async fn replayed_deliveries_create_no_duplicate_events_and_revive_deleted_ones() {
    let running = sandbox().await;
    let g = adapter(&running);
    let w = wedding(W);
    let p = Events::default().payload("field.created", "timeline_builder", "f-tl", day(), &w);
    assert_eq!(deliver(&g, &p).await, Outcome::Delivered { status: 200 });
    let first = events(&running);

    // the same payload again (a retry after a lost answer): nothing is written
    assert_eq!(deliver(&g, &p).await, Outcome::Delivered { status: 200 });
    assert_eq!(events(&running), first, "no new event and no etag change");

    // a replay after someone deleted an event in the calendar revives it
    let token = token(&running).await;
    let id = event_id(W, "timeline", "ceremony");
    let (status, _) = call(
        &running,
        &token,
        "DELETE",
        &format!("/calendars/primary/events/{id}"),
        None,
        &[],
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(deliver(&g, &p).await, Outcome::Delivered { status: 200 });
    assert_eq!(events(&running).len(), 3);
    assert_eq!(live(&running).len(), 3);
    conforms(&running);
}

#[tokio::test]
async fn an_event_the_list_does_not_show_is_found_by_its_id_after_409_duplicate() {
    let running = sandbox().await;
    let g = adapter(&running);
    // given an event with our id but none of our properties (an older version, or list lag)
    let token = token(&running).await;
    let id = event_id(W, "timeline", "ceremony");
    let made = json!({"id": id, "summary": "hand-made", "start": {"dateTime": "2027-06-19T09:00:00Z"}, "end": {"dateTime": "2027-06-19T10:00:00Z"}});
    let (status, _) = call(
        &running,
        &token,
        "POST",
        "/calendars/primary/events",
        Some(made),
        &[],
    )
    .await;
    assert_eq!(status, 200);

    let p = Events::default().payload("field.created", "timeline_builder", "f-tl", day(), &wedding(W));
    assert_eq!(deliver(&g, &p).await, Outcome::Delivered { status: 200 });

    assert_eq!(events(&running).len(), 3);
    let ceremony = item(&running, "ceremony").expect("taken over");
    assert_eq!(ceremony["summary"], "Ceremony · Amara & Tom");
    let statuses: Vec<u16> = running
        .exchanges(Api::Google)
        .iter()
        .filter(|e| e.method == "POST" && e.path.ends_with("/events"))
        .map(|e| e.status)
        .collect();
    assert!(statuses.contains(&409), "{statuses:?}");
    conforms(&running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_etag_is_refetched_and_the_update_reapplied() {
    let running = sandbox().await;
    let g = Arc::new(adapter(&running));
    let w = wedding(W);
    let mut ev = Events::default();
    let created = ev.payload("field.created", "timeline_builder", "f-tl", day(), &w);
    assert_eq!(deliver(&g, &created).await, Outcome::Delivered { status: 200 });
    let lists = |r: &Running| {
        r.exchanges(Api::Google)
            .iter()
            .filter(|e| e.method == "GET" && e.path.ends_with("/events"))
            .count()
    };
    let before = lists(&running);

    // given every answer is slow, and the ceremony changes in the calendar between the adapter's
    // list and its update
    running.set_faults(Faults {
        api: Some(Api::Google),
        latency_ms: 300,
        ..Faults::default()
    });
    let changed = timeline(&[
        ("14:00", 45, "Ceremony"),
        ("21:00", 30, "First dance"),
        ("23:30", 60, "Last dance"),
    ]);
    let updated = ev.payload("field.updated", "timeline_builder", "f-tl", changed, &w);
    let delivery = {
        let g = g.clone();
        tokio::spawn(async move { deliver(&g, &updated).await })
    };
    crate::support::wait_for_async(Duration::from_secs(10), "the adapter's list", || {
        let n = lists(&running);
        async move { n > before }
    })
    .await;
    edit_stored_event(&running, &event_id(W, "timeline", "ceremony"), |e| {
        e["summary"] = json!("edited by hand");
        e["etag"] = json!("\"1\"");
    });

    assert_eq!(delivery.await.unwrap(), Outcome::Delivered { status: 200 });
    let ceremony = item(&running, "ceremony").unwrap();
    assert_eq!(ceremony["start"]["dateTime"], "2027-06-19T14:00:00");
    assert_eq!(ceremony["summary"], "Ceremony · Amara & Tom");
    let puts: Vec<u16> = running
        .exchanges(Api::Google)
        .iter()
        .filter(|e| e.method == "PUT")
        .map(|e| e.status)
        .collect();
    assert_eq!(puts, [412, 200], "one stale write, re-fetched and re-applied");
    conforms(&running);
}

/// Delivers `payload` with every answer slow and, once the adapter has listed the wedding's
/// events, gives the live event of timeline item `key` a new etag (an edit in the calendar).
async fn deliver_while_edited(running: &Running, g: &Arc<Google>, payload: Payload, key: &str) -> Outcome {
    let lists = |r: &Running| {
        r.exchanges(Api::Google)
            .iter()
            .filter(|e| e.method == "GET" && e.path.ends_with("/events"))
            .count()
    };
    let before = lists(running);
    running.set_faults(Faults {
        api: Some(Api::Google),
        latency_ms: 300,
        ..Faults::default()
    });
    let delivery = {
        let g = g.clone();
        tokio::spawn(async move { deliver(&g, &payload).await })
    };
    crate::support::wait_for_async(Duration::from_secs(10), "the adapter's list", || {
        let n = lists(running);
        async move { n > before }
    })
    .await;
    edit_stored_event(running, &event_id(W, "timeline", key), |e| {
        e["etag"] = json!("\"1\"")
    });
    let outcome = delivery.await.unwrap();
    running.clear_faults();
    outcome
}

/// The statuses the sandbox answered to `method` requests, in order.
fn statuses(running: &Running, method: &str) -> Vec<u16> {
    running
        .exchanges(Api::Google)
        .iter()
        .filter(|e| e.method == method)
        .map(|e| e.status)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_etags_on_venue_updates_and_removals_are_refetched_and_reapplied() {
    let running = sandbox().await;
    let g = Arc::new(adapter(&running));
    let mut w = wedding(W);
    let mut ev = Events::default();
    let created = ev.payload("field.created", "timeline_builder", "f-tl", day(), &w);
    assert_eq!(deliver(&g, &created).await, Outcome::Delivered { status: 200 });

    // given the ceremony changes in the calendar while a new venue is written to every event
    let venue = json!({"name": "Syon Park", "formatted_address": "Brentford TW8 8JF, UK"});
    w["venue"] = venue.clone();
    let moved = ev.payload("field.updated", "venue_selector", "f-venue", venue, &w);
    let outcome = deliver_while_edited(&running, &g, moved, "ceremony").await;

    // then its stale write is re-read and re-applied
    assert_eq!(outcome, Outcome::Delivered { status: 200 });
    let puts = statuses(&running, "PUT");
    assert_eq!(puts.iter().filter(|s| **s == 412).count(), 1, "{puts:?}");
    assert_eq!(puts.iter().filter(|s| **s == 200).count(), 3, "{puts:?}");
    for e in live(&running) {
        assert_eq!(e["location"], "Syon Park, Brentford TW8 8JF, UK", "{e}");
    }

    // given the same while the timeline is deleted, then the stale delete is re-read and repeated
    let gone = ev.payload("field.deleted", "timeline_builder", "f-tl", Value::Null, &w);
    let outcome = deliver_while_edited(&running, &g, gone, "last-dance").await;
    assert_eq!(outcome, Outcome::Delivered { status: 200 });
    let deletes = statuses(&running, "DELETE");
    assert_eq!(deletes.iter().filter(|s| **s == 412).count(), 1, "{deletes:?}");
    assert_eq!(deletes.iter().filter(|s| **s == 204).count(), 3, "{deletes:?}");
    assert!(live(&running).is_empty());
    conforms(&running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_for_many_weddings_share_one_token_refresh() {
    let running = sandbox().await;
    let g = Arc::new(adapter(&running));
    let mut ev = Events::default();
    let weddings: Vec<String> = (0..6)
        .map(|i| format!("7d3c3a52-8f0e-4c1e-9a57-6c1f4f4b8f1{i}"))
        .collect();
    let deliveries: Vec<_> = weddings
        .iter()
        .map(|id| {
            let p = ev.payload("field.created", "timeline_builder", "f-tl", day(), &wedding(id));
            let g = g.clone();
            tokio::spawn(async move { deliver(&g, &p).await })
        })
        .collect();
    for d in deliveries {
        assert_eq!(d.await.unwrap(), Outcome::Delivered { status: 200 });
    }
    assert_eq!(
        running.state()["google"]["tokens_issued"],
        1,
        "one refresh for all"
    );
    assert_eq!(live(&running).len(), 3 * weddings.len());
    conforms(&running);
}

#[tokio::test]
async fn rate_limits_and_backend_errors_are_retried_then_delivered() {
    let running = sandbox().await;
    let g = adapter(&running);
    let w = wedding(W);
    let mut ev = Events::default();
    let first = ev.payload("field.created", "timeline_builder", "f-tl", day(), &w);
    assert_eq!(deliver(&g, &first).await, Outcome::Delivered { status: 200 });

    running.fail_next(Api::Google, 1, 403);
    let venue = json!({"name": "Syon Park", "formatted_address": "Brentford TW8 8JF, UK"});
    let p = ev.payload("field.updated", "venue_selector", "f-venue", venue, &w);
    match deliver(&g, &p).await {
        Outcome::Retry {
            status,
            after,
            endpoint_fault,
            ..
        } => {
            assert_eq!(status, Some(403));
            assert_eq!(after, None, "exponential backoff: no fixed wait");
            assert!(!endpoint_fault, "a rate limit is not an outage");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(deliver(&g, &p).await, Outcome::Delivered { status: 200 });

    // a backend error is retried and counts against the endpoint
    running.fail_next(Api::Google, 1, 500);
    assert!(matches!(
        deliver(&g, &p).await,
        Outcome::Retry {
            status: Some(500),
            endpoint_fault: true,
            ..
        }
    ));
    assert_eq!(deliver(&g, &p).await, Outcome::Delivered { status: 200 });
    assert_eq!(
        item(&running, "ceremony").unwrap()["location"],
        "Syon Park, Brentford TW8 8JF, UK"
    );
    conforms(&running);
}

#[tokio::test]
async fn expired_tokens_are_refreshed_once_and_revoked_refresh_tokens_disable() {
    let running = sandbox().await;
    let g = adapter(&running);
    let w = wedding(W);
    let mut ev = Events::default();
    let p = ev.payload("field.created", "timeline_builder", "f-tl", day(), &w);
    assert_eq!(deliver(&g, &p).await, Outcome::Delivered { status: 200 });
    assert_eq!(running.state()["google"]["tokens_issued"], 1);

    // when every token stops working, the adapter refreshes once and carries on
    running.set_faults(Faults {
        api: Some(Api::Google),
        expire_tokens: true,
        ..Faults::default()
    });
    let changed = timeline(&[("14:00", 45, "Ceremony")]);
    let p = ev.payload("field.updated", "timeline_builder", "f-tl", changed, &w);
    assert_eq!(deliver(&g, &p).await, Outcome::Delivered { status: 200 });
    assert_eq!(running.state()["google"]["tokens_issued"], 2);
    assert_eq!(live(&running).len(), 1);
    let refused: Vec<u16> = running
        .exchanges(Api::Google)
        .iter()
        .map(|e| e.status)
        .filter(|s| *s == 401)
        .collect();
    assert_eq!(refused, [401]);

    // when the refresh token is revoked too, the integration is disabled until re-authorised
    running.set_faults(Faults {
        api: Some(Api::Google),
        expire_tokens: true,
        revoke_refresh_tokens: true,
        ..Faults::default()
    });
    match deliver(&g, &p).await {
        Outcome::Disable { status, error } => {
            assert_eq!(status, 400);
            assert!(
                error.contains("re-authorisation") && error.contains("refresh_token"),
                "{error}"
            );
            let a = Accounts::default();
            for secret in [&a.google_client_secret, &a.google_refresh_token] {
                assert!(!error.contains(secret.as_str()), "{error}");
            }
        }
        other => panic!("{other:?}"),
    }
    conforms(&running);
}

#[tokio::test]
async fn a_wrong_client_secret_disables_and_an_unknown_calendar_is_rejected() {
    let running = sandbox().await;
    let w = wedding(W);
    let p = Events::default().payload("field.created", "timeline_builder", "f-tl", day(), &w);
    let mut bad = config(&running);
    bad["client_secret"] = json!("not-the-secret");
    let g = Google::from_config(&bad, &crate::support::crm::credentials(&running)).unwrap();
    match deliver(&g, &p).await {
        Outcome::Disable { status: 401, error } => {
            assert!(
                error.contains("client_secret") && !error.contains("not-the-secret"),
                "{error}"
            )
        }
        other => panic!("{other:?}"),
    }
    // an assumption of the sandbox: any calendar id exists, so a 404 is injected here
    let g = adapter(&running);
    assert_eq!(deliver(&g, &p).await, Outcome::Delivered { status: 200 });
    running.fail_next(Api::Google, 1, 404);
    match deliver(&g, &p).await {
        Outcome::Reject {
            status: Some(404),
            error,
        } => assert!(error.contains("config.calendar_id"), "{error}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn bad_requests_are_answered_like_google_and_rejected_by_the_adapter() {
    let running = sandbox().await;
    let token = token(&running).await;
    let start = json!({"dateTime": "2027-06-19T13:00:00", "timeZone": "Europe/London"});
    let end = json!({"dateTime": "2027-06-19T12:00:00", "timeZone": "Europe/London"});

    let (status, body) = call(
        &running,
        &token,
        "POST",
        "/calendars/primary/events",
        Some(json!({"id": "Not-Base32", "start": start, "end": start})),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": {"errors": [{"domain": "global", "reason": "invalid", "message": "Invalid resource id value."}], "code": 400, "message": "Invalid resource id value."}})
    );
    let (status, body) = call(
        &running,
        &token,
        "POST",
        "/calendars/primary/events",
        Some(json!({"start": start, "end": end})),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": {"errors": [{"domain": "calendar", "reason": "timeRangeEmpty", "message": "The specified time range is empty."}], "code": 400, "message": "The specified time range is empty."}})
    );
    let (status, body) = call(
        &running,
        &token,
        "POST",
        "/calendars/primary/events",
        Some(json!({"start": start})),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["errors"][0]["reason"], "required");

    // the adapter rejects what Google rejects, without the couple's data
    let g = adapter(&running);
    let mut w = wedding(W);
    w["timezone"] = json!("Mars/Olympus");
    let p = Events::default().payload("field.created", "timeline_builder", "f-tl", day(), &w);
    match deliver(&g, &p).await {
        Outcome::Reject {
            status: Some(400),
            error,
        } => {
            assert!(error.contains("invalid"), "{error}");
            assert!(!error.contains("Amara"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    conforms(&running);
}

// ---- sandbox-only checks (CRM_APIS.md §8) -----------------------------------------------------

/// An access token from the sandbox's token endpoint.
async fn token(running: &Running) -> String {
    let a = Accounts::default();
    let (status, body) = token_call(
        running,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &a.google_client_id),
            ("client_secret", &a.google_client_secret),
            ("refresh_token", &a.google_refresh_token),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], a.google_token_seconds);
    body["access_token"].as_str().unwrap().to_owned()
}

async fn token_call(running: &Running, form: &[(&str, &str)]) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/google/oauth2/token", running.url()))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null),
    )
}

/// One request below `/calendar/v3`; the answer's status and JSON body (null if none).
async fn call(
    running: &Running,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let url = format!("{}/google/calendar/v3{path}", running.url());
    let mut r = reqwest::Client::new()
        .request(method.parse().unwrap(), url)
        .bearer_auth(token);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    if let Some(b) = body {
        r = r.header("content-type", "application/json").body(b.to_string());
    }
    let answer = r.send().await.unwrap();
    let status = answer.status().as_u16();
    (
        status,
        serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap_or(Value::Null),
    )
}

fn timed(id: &str, hour: u32) -> Value {
    json!({
        "id": id,
        "summary": "s",
        "description": "d",
        "start": {"dateTime": format!("2027-06-19T{hour:02}:00:00+01:00")},
        "end": {"dateTime": format!("2027-06-19T{:02}:00:00+01:00", hour + 1)},
        "attendees": [{"email": "a@example.com"}, {"email": "b@example.com"}],
        "extendedProperties": {"private": {"keep": "1", "drop": "2"}},
    })
}

#[tokio::test]
async fn sandbox_deletes_leave_tombstones_and_answer_410_the_second_time() {
    let running = sandbox().await;
    let t = token(&running).await;
    let (s, made) = call(
        &running,
        &t,
        "POST",
        "/calendars/primary/events",
        Some(timed("evt00001", 10)),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(made["kind"], "calendar#event");
    assert_eq!(made["iCalUID"], "evt00001@google.com");
    assert!(made["etag"].as_str().unwrap().starts_with('"'));
    let (s, dup) = call(
        &running,
        &t,
        "POST",
        "/calendars/primary/events",
        Some(timed("evt00001", 10)),
        &[],
    )
    .await;
    assert_eq!(s, 409);
    assert_eq!(
        dup,
        json!({"error": {"errors": [{"domain": "global", "reason": "duplicate", "message": "The requested identifier already exists."}], "code": 409, "message": "The requested identifier already exists."}})
    );
    assert_eq!(
        call(
            &running,
            &t,
            "DELETE",
            "/calendars/primary/events/evt00001",
            None,
            &[]
        )
        .await
        .0,
        204
    );
    let (s, again) = call(
        &running,
        &t,
        "DELETE",
        "/calendars/primary/events/evt00001",
        None,
        &[],
    )
    .await;
    assert_eq!(s, 410);
    assert_eq!(again["error"]["errors"][0]["reason"], "deleted");
    let (s, got) = call(
        &running,
        &t,
        "GET",
        "/calendars/primary/events/evt00001",
        None,
        &[],
    )
    .await;
    assert_eq!((s, got["status"].clone()), (200, json!("cancelled")));
    assert_eq!(
        call(
            &running,
            &t,
            "POST",
            "/calendars/primary/events",
            Some(timed("evt00001", 10)),
            &[]
        )
        .await
        .0,
        409,
        "a cancelled id stays taken"
    );
    let (s, missing) = call(
        &running,
        &t,
        "GET",
        "/calendars/primary/events/nosuchevent",
        None,
        &[],
    )
    .await;
    assert_eq!(
        (s, missing["error"]["errors"][0]["reason"].clone()),
        (404, json!("notFound"))
    );
    let (_, listed) = call(&running, &t, "GET", "/calendars/primary/events", None, &[]).await;
    assert_eq!(listed["kind"], "calendar#events");
    assert_eq!(listed["items"], json!([]));
    let (_, listed) = call(
        &running,
        &t,
        "GET",
        "/calendars/primary/events?showDeleted=true",
        None,
        &[],
    )
    .await;
    assert_eq!(listed["items"][0]["status"], "cancelled");
    conforms(&running);
}

#[tokio::test]
async fn sandbox_patch_merges_put_replaces_and_if_match_guards_both() {
    let running = sandbox().await;
    let t = token(&running).await;
    let (_, made) = call(
        &running,
        &t,
        "POST",
        "/calendars/primary/events",
        Some(timed("evt00002", 10)),
        &[],
    )
    .await;
    let etag = made["etag"].as_str().unwrap().to_owned();

    let patch = json!({"attendees": [{"email": "c@example.com"}], "extendedProperties": {"private": {"drop": null, "new": "3"}}});
    let (s, patched) = call(
        &running,
        &t,
        "PATCH",
        "/calendars/primary/events/evt00002",
        Some(patch.clone()),
        &[("if-match", &etag)],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        patched["attendees"],
        json!([{"email": "c@example.com"}]),
        "arrays are replaced"
    );
    assert_eq!(
        patched["extendedProperties"]["private"],
        json!({"keep": "1", "new": "3"}),
        "null deletes a key"
    );
    assert_eq!(patched["description"], "d", "fields not sent are kept");
    assert_ne!(patched["etag"], made["etag"], "every write changes the etag");

    let (s, stale) = call(
        &running,
        &t,
        "PATCH",
        "/calendars/primary/events/evt00002",
        Some(patch),
        &[("if-match", &etag)],
    )
    .await;
    assert_eq!(s, 412);
    assert_eq!(
        stale,
        json!({"error": {"errors": [{"domain": "global", "reason": "conditionNotMet", "message": "Precondition Failed", "locationType": "header", "location": "If-Match"}], "code": 412, "message": "Precondition Failed"}})
    );
    assert_eq!(
        call(
            &running,
            &t,
            "DELETE",
            "/calendars/primary/events/evt00002",
            None,
            &[("if-match", &etag)]
        )
        .await
        .0,
        412
    );

    let replace = json!({"summary": "only", "start": {"date": "2027-06-19"}, "end": {"date": "2027-06-20"}});
    let (s, put) = call(
        &running,
        &t,
        "PUT",
        "/calendars/primary/events/evt00002",
        Some(replace),
        &[("if-match", patched["etag"].as_str().unwrap())],
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        put.get("description").is_none() && put.get("extendedProperties").is_none(),
        "PUT replaces: {put}"
    );
    assert_eq!(put["created"], made["created"]);
    assert_eq!(put["sequence"], 1, "moving the event bumps its sequence");
    conforms(&running);
}

#[tokio::test]
async fn sandbox_sync_tokens_come_on_the_last_page_and_return_changes_with_deletions() {
    let running = sandbox().await;
    let t = token(&running).await;
    for (i, id) in ["evt00003", "evt00004", "evt00005"].iter().enumerate() {
        call(
            &running,
            &t,
            "POST",
            "/calendars/primary/events",
            Some(timed(id, 10 + i as u32)),
            &[],
        )
        .await;
    }
    let (_, page1) = call(
        &running,
        &t,
        "GET",
        "/calendars/primary/events?maxResults=2",
        None,
        &[],
    )
    .await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    assert!(page1.get("nextSyncToken").is_none());
    let next = page1["nextPageToken"].as_str().unwrap();
    let (_, page2) = call(
        &running,
        &t,
        "GET",
        &format!("/calendars/primary/events?maxResults=2&pageToken={next}"),
        None,
        &[],
    )
    .await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    assert!(page2.get("nextPageToken").is_none());
    let sync = page2["nextSyncToken"].as_str().unwrap().to_owned();
    let q = |s: &str| s.replace('=', "%3D").replace('+', "%2B").replace('/', "%2F");

    call(
        &running,
        &t,
        "PATCH",
        "/calendars/primary/events/evt00003",
        Some(json!({"summary": "changed"})),
        &[],
    )
    .await;
    call(
        &running,
        &t,
        "DELETE",
        "/calendars/primary/events/evt00004",
        None,
        &[],
    )
    .await;
    let (s, changes) = call(
        &running,
        &t,
        "GET",
        &format!("/calendars/primary/events?syncToken={}", q(&sync)),
        None,
        &[],
    )
    .await;
    assert_eq!(s, 200);
    let got: Vec<(Value, Value)> = changes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].clone(), e["status"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            (json!("evt00003"), json!("confirmed")),
            (json!("evt00004"), json!("cancelled"))
        ]
    );
    assert!(changes["nextSyncToken"].is_string());

    fieldsync_dev::sandbox::lock(&running.sandbox.google).invalidate_sync_tokens();
    let (s, gone) = call(
        &running,
        &t,
        "GET",
        &format!("/calendars/primary/events?syncToken={}", q(&sync)),
        None,
        &[],
    )
    .await;
    assert_eq!(s, 410);
    assert_eq!(gone["error"]["errors"][0]["reason"], "fullSyncRequired");
    conforms(&running);
}

#[tokio::test]
async fn sandbox_token_endpoint_and_bearer_auth_fail_like_google() {
    let running = sandbox().await;
    let a = Accounts::default();
    let (s, body) = token_call(
        &running,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &a.google_client_id),
            ("client_secret", "wrong"),
            ("refresh_token", &a.google_refresh_token),
        ],
    )
    .await;
    assert_eq!((s, body["error"].clone()), (401, json!("invalid_client")));
    let (s, body) = token_call(
        &running,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &a.google_client_id),
            ("client_secret", &a.google_client_secret),
            ("refresh_token", "wrong"),
        ],
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        body,
        json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
    );
    let (s, body) = token_call(
        &running,
        &[
            ("grant_type", "password"),
            ("client_id", &a.google_client_id),
            ("client_secret", &a.google_client_secret),
        ],
    )
    .await;
    assert_eq!((s, body["error"].clone()), (400, json!("unsupported_grant_type")));

    let answer = reqwest::Client::new()
        .get(format!(
            "{}/google/calendar/v3/calendars/primary/events",
            running.url()
        ))
        .bearer_auth("ya29.not-issued")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    assert!(answer.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    let body: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"error": {"errors": [{"domain": "global", "reason": "authError", "message": "Invalid Credentials", "locationType": "header", "location": "Authorization"}], "code": 401, "message": "Invalid Credentials"}})
    );
    let t = token(&running).await;
    assert_eq!(
        call(&running, &t, "GET", "/calendars/primary/events", None, &[])
            .await
            .0,
        200
    );
    running.set_faults(Faults {
        api: Some(Api::Google),
        expire_tokens: true,
        ..Faults::default()
    });
    assert_eq!(
        call(&running, &t, "GET", "/calendars/primary/events", None, &[])
            .await
            .0,
        401,
        "expired tokens stop working"
    );
}

/// A receiver of push notifications: the `X-Goog-*` headers of every POST, in arrival order.
async fn notification_sink() -> (String, Arc<std::sync::Mutex<Vec<axum::http::HeaderMap>>>) {
    let seen: Arc<std::sync::Mutex<Vec<axum::http::HeaderMap>>> = Arc::default();
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post({
            let seen = seen.clone();
            move |headers: axum::http::HeaderMap| async move {
                seen.lock().unwrap().push(headers);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/notify", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen)
}

fn states(seen: &std::sync::Mutex<Vec<axum::http::HeaderMap>>, channel: &str) -> Vec<(String, String)> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|h| h["x-goog-channel-id"] == channel)
        .map(|h| {
            let v = |k: &str| h[k].to_str().unwrap().to_owned();
            (v("x-goog-resource-state"), v("x-goog-message-number"))
        })
        .collect()
}

#[tokio::test]
async fn sandbox_push_channels_send_sync_then_exists_until_stopped() {
    let running = sandbox().await;
    let t = token(&running).await;
    let (address, seen) = notification_sink().await;
    let mut resources = Vec::new();
    for id in ["channel-a", "channel-b"] {
        let watch = json!({"id": id, "type": "web_hook", "address": address, "token": "our-own-secret"});
        let (s, channel) = call(
            &running,
            &t,
            "POST",
            "/calendars/primary/events/watch",
            Some(watch),
            &[],
        )
        .await;
        assert_eq!(s, 200, "{channel}");
        assert_eq!(channel["kind"], "api#channel");
        assert!(channel["expiration"].is_string(), "int64 as a string: {channel}");
        resources.push(channel["resourceId"].as_str().unwrap().to_owned());
    }
    let wait = |channel: &'static str, n: usize| {
        let seen = seen.clone();
        crate::support::wait_for_async(Duration::from_secs(10), "notifications", move || {
            let got = states(&seen, channel).len();
            async move { got >= n }
        })
    };
    wait("channel-a", 1).await;
    call(
        &running,
        &t,
        "POST",
        "/calendars/primary/events",
        Some(timed("evt00006", 10)),
        &[],
    )
    .await;
    wait("channel-a", 2).await;
    assert_eq!(
        states(&seen, "channel-a"),
        [
            ("sync".to_owned(), "1".to_owned()),
            ("exists".to_owned(), "2".to_owned())
        ]
    );
    let first = seen.lock().unwrap()[0].clone();
    assert_eq!(first["x-goog-channel-token"], "our-own-secret");
    assert!(first.contains_key("x-goog-resource-id") && first.contains_key("x-goog-channel-expiration"));

    // when channel a stops, only b hears of the next change
    let stop = json!({"id": "channel-a", "resourceId": resources[0]});
    assert_eq!(
        call(&running, &t, "POST", "/channels/stop", Some(stop.clone()), &[])
            .await
            .0,
        204
    );
    assert_eq!(
        call(&running, &t, "POST", "/channels/stop", Some(stop), &[])
            .await
            .0,
        404
    );
    call(
        &running,
        &t,
        "DELETE",
        "/calendars/primary/events/evt00006",
        None,
        &[],
    )
    .await;
    wait("channel-b", 3).await;
    assert_eq!(states(&seen, "channel-a").len(), 2);
    conforms(&running);
}

#[tokio::test]
async fn events_the_calendar_cannot_place_are_rejected_without_a_write() {
    let running = sandbox().await;
    let g = adapter(&running);
    let mut ev = Events::default();
    let mut undated = wedding(W);
    undated["wedding_date"] = Value::Null;
    let p = ev.payload("field.created", "timeline_builder", "f-tl", day(), &undated);
    match deliver(&g, &p).await {
        Outcome::Reject { status: None, error } => assert!(error.contains("no date"), "{error}"),
        other => panic!("{other:?}"),
    }
    let p = ev.payload(
        "field.created",
        "text",
        "f-colour",
        json!("Blue and gold"),
        &wedding(W),
    );
    match deliver(&g, &p).await {
        Outcome::Reject { error, .. } => assert!(error.contains("config.field_types"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert!(
        running.exchanges(Api::Google).is_empty(),
        "rejected before any request"
    );
}

/// Changes an event in the sandbox's state behind the API's back, as an edit in Google's UI would.
fn edit_stored_event(running: &Running, id: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut state = fieldsync_dev::sandbox::lock(&running.sandbox.google);
    let event = state
        .calendars
        .get_mut("primary")
        .unwrap()
        .events
        .iter_mut()
        .find(|e| e["id"] == id)
        .unwrap();
    edit(event);
}
