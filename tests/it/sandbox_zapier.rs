//! Contract tests of the HoneyBook adapter against the Zapier catch-hook sandbox: a signed, flat
//! record per change, create only.

use fieldsync::adapters::honeybook::HoneyBook;
use fieldsync::adapters::outcome::Outcome;
use fieldsync_dev::sandbox::Api;
use serde_json::json;

use crate::support::crm::{client, credentials, sandbox, wedding, Events, TIMEOUT};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test]
async fn each_change_is_one_signed_flat_record_for_the_zap() {
    let running = sandbox().await;
    let hook = format!("{}/zapier/hooks/catch/123456/sandboxhook/", running.url());
    let hb = HoneyBook::from_config(&json!({"url": hook, "secret": SECRET}), &credentials(&running)).unwrap();
    let http = client();
    let w = wedding("7d3c3a52-8f0e-4c1e-9a57-6c1f4f4b8f02");
    let mut events = Events::default();
    let guests = events.payload(
        "field.updated",
        "guest_count_matrix",
        "f",
        json!({"adults": 100, "children": 2, "infants": 1}),
        &w,
    );
    let venue = events.payload(
        "field.updated",
        "venue_selector",
        "v",
        json!({"name": "Syon Park", "formatted_address": "London TW8 8JF, UK"}),
        &w,
    );
    assert_eq!(
        hb.deliver(&http, &guests, TIMEOUT).await,
        Outcome::Delivered { status: 200 }
    );
    assert_eq!(
        hb.deliver(&http, &venue, TIMEOUT).await,
        Outcome::Delivered { status: 200 }
    );

    let state = running.state();
    let caught = state["zapier"]["hooks"]["123456/sandboxhook"].as_array().unwrap();
    assert_eq!(caught.len(), 2);
    let first = &caught[0];
    assert_eq!(first["signed"], true);
    assert_eq!(first["webhook_id"], guests.id.to_string());
    let record = &first["body"];
    assert!(
        record
            .as_object()
            .unwrap()
            .values()
            .all(|v| !v.is_object() && !v.is_array()),
        "flat: {record}"
    );
    assert_eq!(record["project_name"], "Amara & Tom wedding");
    assert_eq!(record["client_full_name"], "Amara & Tom");
    assert_eq!(record["project_date"], "2027-06-19");
    assert_eq!(record["guest_count"], 103);
    assert_eq!(record["change"], "guest_count_matrix updated");
    assert_eq!(
        caught[1]["body"]["project_location"],
        "Syon Park, London TW8 8JF, UK"
    );

    // an unknown hook, and Zapier failing
    let wrong = format!("{}/zapier/hooks/catch/123456/other/", running.url());
    let hb_wrong =
        HoneyBook::from_config(&json!({"url": wrong, "secret": SECRET}), &credentials(&running)).unwrap();
    assert!(matches!(
        hb_wrong.deliver(&http, &guests, TIMEOUT).await,
        Outcome::Retry {
            status: Some(404),
            ..
        }
    ));
    running.fail_next(Api::Zapier, 1, 503);
    assert!(matches!(
        hb.deliver(&http, &guests, TIMEOUT).await,
        Outcome::Retry {
            endpoint_fault: true,
            ..
        }
    ));
    running.fail_next(Api::Zapier, 1, 429);
    assert!(matches!(
        hb.deliver(&http, &guests, TIMEOUT).await,
        Outcome::Retry {
            status: Some(429),
            endpoint_fault: false,
            ..
        }
    ));
    // a replay is another record for the Zap (catch hooks do not deduplicate), with the same
    // webhook-id for the Zap to deduplicate on
    assert_eq!(
        hb.deliver(&http, &guests, TIMEOUT).await,
        Outcome::Delivered { status: 200 }
    );
    let state = running.state();
    let caught = state["zapier"]["hooks"]["123456/sandboxhook"].as_array().unwrap();
    assert_eq!(caught.len(), 3);
    assert_eq!(caught[2]["webhook_id"], caught[0]["webhook_id"]);
}
