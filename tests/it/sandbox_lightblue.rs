//! Contract tests of the Light Blue adapter against the Light Blue sandbox: the contact-form line
//! protocol, `ID` + `Source` deduplication, its error codes.

use fieldsync::adapters::lightblue::LightBlue;
use fieldsync::adapters::outcome::Outcome;
use fieldsync_dev::sandbox::{Accounts, Api, Running};
use serde_json::{json, Value};

use crate::support::crm::{client, credentials, sandbox, wedding, Events, TIMEOUT};

fn adapter(running: &Running, key: &str) -> LightBlue {
    let config = json!({"api_key": key, "url": format!("{}/lightblue/api.php", running.url())});
    LightBlue::from_config(&config, &credentials(running)).unwrap()
}

fn inbox(running: &Running) -> Vec<Value> {
    running.state()["lightblue"]["inbox"].as_array().unwrap().clone()
}

#[tokio::test]
async fn each_change_lands_once_in_the_inbox_and_a_repeat_counts_as_delivered() {
    let running = sandbox().await;
    let lb = adapter(&running, "sandbox-lightblue-key");
    let http = client();
    let w = wedding("7d3c3a52-8f0e-4c1e-9a57-6c1f4f4b8f02");
    let mut events = Events::default();
    let guests = events.payload(
        "field.updated",
        "guest_count_matrix",
        "f",
        json!({"adults": 120, "children": 14, "infants": 3}),
        &w,
    );
    let diet = events.payload(
        "field.updated",
        "dietary_matrix",
        "d",
        json!({"vegetarian": 12, "vegan": 4, "notes": "one coeliac guest"}),
        &w,
    );
    assert_eq!(
        lb.deliver(&http, &guests, TIMEOUT).await,
        Outcome::Delivered { status: 200 }
    );
    assert_eq!(
        lb.deliver(&http, &diet, TIMEOUT).await,
        Outcome::Delivered { status: 200 }
    );
    // the answer was lost: the same event again is Light Blue's -4, which is delivered
    assert_eq!(
        lb.deliver(&http, &guests, TIMEOUT).await,
        Outcome::Delivered { status: 200 }
    );

    let items = inbox(&running);
    assert_eq!(items.len(), 2, "{items:#?}");
    assert_eq!(running.state()["lightblue"]["duplicates"], 1);
    let first = &items[0];
    assert_eq!(first["ContactNameFull"], "Amara & Tom");
    assert_eq!(first["Source"], "fieldsync");
    let message = first["Message"].as_str().unwrap();
    assert!(
        message.contains("2027-06-19") && message.contains("Kew Gardens"),
        "{message}"
    );
    assert!(
        message.contains("137") && message.contains("120 adults, 14 children, 3 infants"),
        "{message}"
    );
    let diet = items[1]["Message"].as_str().unwrap();
    assert!(
        diet.contains("vegetarian 12") && diet.contains("vegan 4") && diet.contains("one coeliac guest"),
        "{diet}"
    );
}

#[tokio::test]
async fn light_blue_codes_map_to_outcomes() {
    let running = sandbox().await;
    let http = client();
    let p = Events::default().payload(
        "field.updated",
        "wedding_date",
        "f",
        json!("2027-06-19"),
        &wedding("w1"),
    );

    match adapter(&running, "not-the-key").deliver(&http, &p, TIMEOUT).await {
        Outcome::Disable { error, .. } => {
            assert!(
                error.contains("config.api_key") && !error.contains("not-the-key"),
                "{error}"
            )
        }
        other => panic!("{other:?}"),
    }
    running.fail_next(Api::Lightblue, 1, 502);
    let lb = adapter(&running, "sandbox-lightblue-key");
    assert!(matches!(
        lb.deliver(&http, &p, TIMEOUT).await,
        Outcome::Retry {
            endpoint_fault: true,
            ..
        }
    ));
    // Light Blue documents no rate limit; a 429 from a proxy in front of it waits, not counted
    // against the endpoint
    running.fail_next(Api::Lightblue, 1, 429);
    assert!(matches!(
        lb.deliver(&http, &p, TIMEOUT).await,
        Outcome::Retry {
            status: Some(429),
            endpoint_fault: false,
            ..
        }
    ));
    assert_eq!(
        lb.deliver(&http, &p, TIMEOUT).await,
        Outcome::Delivered { status: 200 }
    );

    // the sandbox's own line protocol
    let post = |form: Vec<(&'static str, &'static str)>| {
        let url = format!("{}/lightblue/api.php", running.url());
        let http = http.clone();
        async move {
            http.post(url)
                .form(&form)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        post(vec![("Key", "sandbox-lightblue-key"), ("Type", "order")]).await,
        "-3\rInvalid type"
    );
    assert_eq!(
        post(vec![
            ("key", "sandbox-lightblue-key"),
            ("type", "contact form"),
            ("Colour", "blue")
        ])
        .await,
        "-3\rNo valid parameters"
    );
    let once = vec![
        ("key", "sandbox-lightblue-key"),
        ("type", "contact form"),
        ("Message", "hi"),
        ("ID", "7"),
        ("Source", "site"),
    ];
    assert_eq!(post(once.clone()).await, "0");
    assert_eq!(post(once).await, "-4\rDuplicate request");
}

#[tokio::test]
async fn https_is_required_when_the_account_says_so() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = fieldsync_dev::sandbox::spawn(
        listener,
        Accounts {
            lightblue_require_https: true,
            ..Accounts::default()
        },
    )
    .unwrap();
    let p = Events::default().payload(
        "field.updated",
        "wedding_date",
        "f",
        json!("2027-06-19"),
        &wedding("w1"),
    );
    match adapter(&running, "sandbox-lightblue-key")
        .deliver(&client(), &p, TIMEOUT)
        .await
    {
        Outcome::Reject { error, .. } => {
            assert!(error.contains("HTTPS") && error.contains("config.url"), "{error}")
        }
        other => panic!("{other:?}"),
    }
    assert!(inbox(&running).is_empty());
}
