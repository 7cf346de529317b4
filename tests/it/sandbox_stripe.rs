//! Contract tests of the Stripe adapter against the Stripe sandbox: customer per wedding, metadata
//! within Stripe's limits, idempotency keys, Stripe's retry signals.

use fieldsync::adapters::outcome::Outcome;
use fieldsync::adapters::stripe::Stripe;
use fieldsync_dev::sandbox::{Api, Running};
use serde_json::{json, Value};

use crate::support::crm::{client, credentials, json as body_json, sandbox, wedding, Events, TIMEOUT};

const WEDDING: &str = "7d3c3a52-8f0e-4c1e-9a57-6c1f4f4b8f02";

fn adapter(running: &Running, key: &str) -> Stripe {
    let config = json!({"secret_key": key, "base_url": format!("{}/stripe/v1", running.url())});
    Stripe::from_config(&config, &credentials(running)).unwrap()
}

fn customers(running: &Running) -> Vec<Value> {
    running.state()["stripe"]["customers"].as_array().unwrap().clone()
}

fn guests(adults: u32) -> Value {
    json!({"adults": adults, "children": 14, "infants": 3})
}

#[tokio::test]
async fn one_customer_per_wedding_carries_the_fields_and_replays_change_nothing() {
    let running = sandbox().await;
    let stripe = adapter(&running, "sk_test_sandbox");
    let http = client();
    let w = wedding(WEDDING);
    let mut events = Events::default();

    let guest = events.payload("field.updated", "guest_count_matrix", "f-guests", guests(120), &w);
    assert!(matches!(
        stripe.deliver(&http, &guest, TIMEOUT).await,
        Outcome::Delivered { status: 200 }
    ));
    let venue =
        json!({"name": "Syon Park", "formatted_address": "London TW8 8JF, UK", "place_id": "ChIJsyon"});
    let venue = events.payload("field.updated", "venue_selector", "f-venue", venue, &w);
    let budget = json!({"category": "Photography", "budgeted_amount": 250000, "actual_amount": 275000, "currency": "GBP", "payment_status": "deposit_paid"});
    let budget = events.payload("field.created", "budget_category", "f-budget", budget, &w);
    let date = events.payload("field.updated", "wedding_date", "f-date", json!("2027-07-03"), &w);
    for p in [&venue, &budget, &date] {
        assert_eq!(
            stripe.deliver(&http, p, TIMEOUT).await,
            Outcome::Delivered { status: 200 }
        );
    }

    let all = customers(&running);
    assert_eq!(all.len(), 1, "one customer per wedding: {all:#?}");
    let c = &all[0];
    assert_eq!(c["name"], "Amara & Tom");
    let m = &c["metadata"];
    assert_eq!(m["fieldsync_wedding_id"], WEDDING);
    assert_eq!(m["guests_total"], "137");
    assert_eq!(m["guests_adults"], "120");
    assert_eq!(m["venue_name"], "Syon Park");
    assert_eq!(m["venue_place_id"], "ChIJsyon");
    assert_eq!(m["budget_photography_budgeted"], "250000");
    assert_eq!(m["budget_photography_status"], "deposit_paid");
    assert_eq!(m["wedding_date"], "2027-07-03");

    // a replay (answer lost, or a restart with an empty cache) changes nothing and creates nothing
    let replayed_before = replayed(&running);
    assert_eq!(
        stripe.deliver(&http, &guest, TIMEOUT).await,
        Outcome::Delivered { status: 200 }
    );
    let restarted = adapter(&running, "sk_test_sandbox");
    assert_eq!(
        restarted.deliver(&http, &guest, TIMEOUT).await,
        Outcome::Delivered { status: 200 }
    );
    assert_eq!(
        replayed(&running),
        replayed_before + 2,
        "Stripe answered the replays from its saved results"
    );
    assert_eq!(customers(&running).len(), 1);

    // a later change reaches the same customer; deleting the budget field unsets its keys
    let more = events.payload("field.updated", "guest_count_matrix", "f-guests", guests(130), &w);
    assert_eq!(
        restarted.deliver(&http, &more, TIMEOUT).await,
        Outcome::Delivered { status: 200 }
    );
    let gone = events.payload(
        "field.deleted",
        "budget_category",
        "f-budget",
        json!({"category": "Photography"}),
        &w,
    );
    assert_eq!(
        restarted.deliver(&http, &gone, TIMEOUT).await,
        Outcome::Delivered { status: 200 }
    );
    let all = customers(&running);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["metadata"]["guests_total"], "147");
    assert!(
        all[0]["metadata"].get("budget_photography_budgeted").is_none(),
        "{:#?}",
        all[0]["metadata"]
    );

    // two weddings, two customers
    let other = wedding("9e1c3a52-8f0e-4c1e-9a57-6c1f4f4b8f03");
    let p = events.payload(
        "field.updated",
        "guest_count_matrix",
        "f-guests",
        guests(50),
        &other,
    );
    assert_eq!(
        stripe.deliver(&http, &p, TIMEOUT).await,
        Outcome::Delivered { status: 200 }
    );
    assert_eq!(customers(&running).len(), 2);
}

fn replayed(running: &Running) -> usize {
    running
        .exchanges(Api::Stripe)
        .iter()
        .filter(|e| e.response_headers.get("idempotent-replayed").is_some())
        .count()
}

#[tokio::test]
async fn rate_limits_server_errors_and_should_retry_are_honoured() {
    let running = sandbox().await;
    let stripe = adapter(&running, "sk_test_sandbox");
    let http = client();
    let w = wedding(WEDDING);
    let mut events = Events::default();
    let p = events.payload("field.updated", "guest_count_matrix", "f", guests(100), &w);

    running.fail_next(Api::Stripe, 1, 429);
    match stripe.deliver(&http, &p, TIMEOUT).await {
        Outcome::Retry {
            status: Some(429),
            endpoint_fault: false,
            ..
        } => {}
        other => panic!("429 is a rate limit to wait out: {other:?}"),
    }
    running.fail_next(Api::Stripe, 1, 503);
    match stripe.deliver(&http, &p, TIMEOUT).await {
        Outcome::Retry {
            status: Some(503),
            endpoint_fault: true,
            ..
        } => {}
        other => panic!("503 with Stripe-Should-Retry: true is retried: {other:?}"),
    }
    assert_eq!(
        stripe.deliver(&http, &p, TIMEOUT).await,
        Outcome::Delivered { status: 200 }
    );
    assert_eq!(customers(&running).len(), 1);
}

#[tokio::test]
async fn a_wrong_key_holds_the_integration_without_showing_the_key() {
    let running = sandbox().await;
    let stripe = adapter(&running, "sk_test_wrong_key_4242");
    let p = Events::default().payload(
        "field.updated",
        "wedding_date",
        "f",
        json!("2027-06-19"),
        &wedding(WEDDING),
    );
    match stripe.deliver(&client(), &p, TIMEOUT).await {
        Outcome::Disable { status: 401, error } => {
            assert!(error.contains("config.secret_key"), "{error}");
            assert!(!error.contains("sk_test_wrong_key"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert!(customers(&running).is_empty());
}

#[tokio::test]
async fn metadata_limits_are_enforced_before_sending() {
    let running = sandbox().await;
    let stripe = adapter(&running, "sk_test_sandbox");
    let http = client();
    let w = wedding(WEDDING);
    let mut events = Events::default();
    let first = events.payload("field.updated", "wedding_date", "f", json!("2027-06-19"), &w);
    assert_eq!(
        stripe.deliver(&http, &first, TIMEOUT).await,
        Outcome::Delivered { status: 200 }
    );
    let id = customers(&running)[0]["id"].as_str().unwrap().to_owned();

    // the studio's own keys fill the customer up to 47 (3 are ours)
    let own: Vec<(String, String)> = (0..44)
        .map(|i| (format!("metadata[studio_{i}]"), "x".into()))
        .collect();
    let r = http
        .post(format!("{}/stripe/v1/customers/{id}", running.url()))
        .bearer_auth("sk_test_sandbox")
        .form(&own)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sent_before = running.exchanges(Api::Stripe).len();
    let budget = json!({"category": "Flowers", "budgeted_amount": 90000, "actual_amount": 85000, "currency": "GBP", "payment_status": "quoted"});
    let budget = events.payload("field.created", "budget_category", "f-b", budget, &w);
    match stripe.deliver(&http, &budget, TIMEOUT).await {
        Outcome::Reject { error, .. } => assert!(
            error.contains("51 metadata keys") && error.contains("50"),
            "{error}"
        ),
        other => panic!("{other:?}"),
    }
    let posts = running.exchanges(Api::Stripe)[sent_before..]
        .iter()
        .filter(|e| e.method == "POST")
        .count();
    assert_eq!(posts, 0, "nothing over the limit was sent");

    // and the sandbox enforces them as Stripe does
    for (params, param) in [
        (
            vec![(format!("metadata[{}]", "k".repeat(41)), "v".to_owned())],
            "metadata[kkkk",
        ),
        (
            vec![("metadata[long]".to_owned(), "v".repeat(501))],
            "metadata[long]",
        ),
        (
            (0..10)
                .map(|i| (format!("metadata[more_{i}]"), "v".to_owned()))
                .collect(),
            "metadata",
        ),
        (vec![("colour".to_owned(), "blue".to_owned())], "colour"),
    ] {
        let r = http
            .post(format!("{}/stripe/v1/customers/{id}", running.url()))
            .bearer_auth("sk_test_sandbox")
            .form(&params)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let body = body_json(r).await;
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(
            body["error"]["param"].as_str().unwrap().starts_with(param),
            "{body}"
        );
    }
}

#[tokio::test]
async fn the_sandbox_replays_keys_and_refuses_them_with_other_parameters() {
    let running = sandbox().await;
    let http = client();
    let post = |params: Vec<(&'static str, &'static str)>, key: &'static str| {
        http.post(format!("{}/stripe/v1/customers", running.url()))
            .basic_auth("sk_test_sandbox", Some(""))
            .header("idempotency-key", key)
            .form(&params)
            .send()
    };
    let a = post(vec![("name", "A")], "k1").await.unwrap();
    assert_eq!(a.status(), 200);
    let a = body_json(a).await;
    let again = post(vec![("name", "A")], "k1").await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again = body_json(again).await;
    assert_eq!(again["id"], a["id"]);
    let other = post(vec![("name", "B")], "k1").await.unwrap();
    assert_eq!(other.status(), 400);
    assert_eq!(other.headers()["stripe-should-retry"], "false");
    let other = body_json(other).await;
    assert_eq!(other["error"]["type"], "idempotency_error");
    // a validation failure is not saved: the same key works once the request is fixed
    let bad = post(vec![("colour", "x")], "k2").await.unwrap();
    assert_eq!(bad.status(), 400);
    let fixed = post(vec![("name", "C")], "k2").await.unwrap();
    assert_eq!(fixed.status(), 200);
    assert_eq!(customers(&running).len(), 2);
    let unauth = http
        .get(format!("{}/stripe/v1/customers", running.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), 401);
}
