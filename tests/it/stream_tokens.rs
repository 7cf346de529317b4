//! Stream tokens scoped to an organisation or a wedding (`fieldsync token`): a real daemon, real
//! PostgreSQL, the CLI binary minting, an HTTP client reading the live stream.

use std::time::Duration;

use fieldsync::token::{Grant, Signer};

use crate::dispatch::{edit, read_sse, seed, wedding, ORG};
use crate::support::cluster_with_schema;
use crate::support::daemon::{self, sql};

const OTHER_ORG: &str = "0d000000-0000-4000-8000-00000000000b";

/// `fieldsync token` with `config`: (exit code, the token, stderr).
fn mint(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let (code, out, err) = daemon::cli("token", config, args);
    (code, out.trim().to_owned(), err)
}

/// A token for all of `ORG`, signed with `key`, expiring `ttl` seconds from now (negative: past).
fn signed(key: &[u8; 32], ttl: i64) -> String {
    Signer::new(key).sign(&Grant {
        organization: ORG.to_owned(),
        wedding: None,
        exp: chrono::Utc::now().timestamp() + ttl,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_token_opens_its_organisation_or_wedding_only_and_bad_or_expired_ones_get_401() {
    let cluster = cluster_with_schema();
    let db = sql(&cluster).await;
    seed(&db, 3, "http://127.0.0.1:9/unused").await;
    db.batch_execute(&format!(
        "INSERT INTO organizations (id, name) VALUES ('{OTHER_ORG}', 'Another Studio');
         INSERT INTO weddings (id, organization_id, couple_names)
           VALUES ('0d000000-0000-4000-a000-0000000000b1', '{OTHER_ORG}', 'Other Couple');"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("stream.key");
    std::fs::write(&key_file, fieldsync::credentials::generate_key() + "\n").unwrap();
    let key = fieldsync::credentials::parse_key(std::fs::read_to_string(&key_file).unwrap().trim()).unwrap();
    // no shared stream_token: scoped tokens alone turn the stream on
    let http = format!("stream_signing_key_file = \"{}\"\n", key_file.display());
    let toml = daemon::config_toml(&cluster, &dir.path().join("q"), 0)
        .replace("[http]\n", &format!("[http]\n{http}"));
    let config = dir.path().join("fieldsync.toml");
    std::fs::write(&config, &toml).unwrap();
    let d = daemon::start(&toml).await;
    let stream =
        |org: &str, query: &str| format!("http://{}/events/stream?organization={org}{query}", d.http_addr);
    let client = reqwest::Client::new();

    // minted by the CLI, as an app's backend would
    let (code, org_token, said) = mint(&config, &["--organization", ORG, "--ttl", "1h"]);
    assert_eq!(code, 0, "{said}");
    assert!(org_token.starts_with("fst1."), "{org_token}");
    assert!(said.contains(ORG) && said.contains("until"), "{said}");
    let (code, wedding_token, said) = mint(&config, &["--organization", ORG, "--wedding", &wedding(0)]);
    assert_eq!(code, 0, "{said}");

    // the organisation's token reads its events, all weddings
    let open = |token: &str| client.get(stream(ORG, "")).bearer_auth(token).send();
    let mut live = open(&org_token).await.unwrap();
    assert_eq!(live.status(), 200);
    // a wedding's token, in the query as a browser's EventSource sends it, reads that wedding only
    let mut one = client
        .get(stream(ORG, &format!("&access_token={wedding_token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    edit(&db, 41, 30, 3, 3).await;
    let all = read_sse(&mut live, 20).await;
    assert!(all
        .iter()
        .all(|(_, _, data)| data["data"]["organization_id"] == ORG));
    let weddings: std::collections::BTreeSet<&str> = all
        .iter()
        .filter_map(|(_, _, data)| data["data"]["wedding_id"].as_str())
        .collect();
    assert!(weddings.len() > 1, "{weddings:?}");
    let mine = read_sse(&mut one, 3).await;
    assert!(mine
        .iter()
        .all(|(_, _, data)| data["data"]["wedding_id"] == wedding(0).as_str()));

    // another organisation's stream, another wedding: 403, saying which
    let other = client
        .get(stream(OTHER_ORG, ""))
        .bearer_auth(&org_token)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);
    assert!(other.text().await.unwrap().contains("another organisation"));
    let other_wedding = client
        .get(stream(ORG, &format!("&wedding={}", wedding(1))))
        .bearer_auth(&wedding_token)
        .send()
        .await
        .unwrap();
    assert_eq!(other_wedding.status(), 403);

    // tampered, expired, signed with another key, missing: 401, each saying why
    let mut tampered = org_token.clone().into_bytes();
    let at = tampered.len() - 3;
    tampered[at] = if tampered[at] == b'x' { b'y' } else { b'x' };
    for (token, says) in [
        (String::from_utf8(tampered).unwrap(), "does not verify"),
        (signed(&key, -1), "expired"),
        (signed(&[9; 32], 3600), "does not verify"),
        ("not-a-token".to_owned(), "wrong bearer token"),
    ] {
        let refused = open(&token).await.unwrap();
        assert_eq!(refused.status(), 401, "{token}");
        let body = refused.text().await.unwrap();
        assert!(body.contains(says), "{token}: {body}");
    }
    let none = client.get(stream(ORG, "")).send().await.unwrap();
    assert_eq!(none.status(), 401);

    // a stream opened with a token ends when the token expires, with an `expired` message
    let mut ending = open(&signed(&key, 2)).await.unwrap();
    assert_eq!(ending.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(30), async {
        let mut text = String::new();
        while let Some(chunk) = ending.chunk().await.unwrap() {
            text += &String::from_utf8_lossy(&chunk);
        }
        text
    })
    .await
    .expect("the stream ends when its token expires");
    assert!(text.contains("event: expired"), "{text}");

    // without a key, the CLI says how to make one
    let bare = dir.path().join("bare.toml");
    std::fs::write(&bare, daemon::config_toml(&cluster, &dir.path().join("q2"), 0)).unwrap();
    let (code, _, said) = mint(&bare, &["--organization", ORG]);
    assert_eq!(code, 2);
    assert!(said.contains("fieldsync secret keygen"), "{said}");
    d.stop().await.unwrap();
}
