//! Hostile integration rows: whoever can write `organization_integrations` (the app, a tenant's
//! settings page, an SQL injection in the app) must not be able to make the daemon send its own
//! secrets, or any file it can read, to a host of their choosing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fieldsync_dev::receiver::Receiver;
use serde_json::{json, Value};

use crate::dispatch::{converge, dispatch_toml, seed, wedding, SECRET};
use crate::support::daemon::{self, sql, DaemonProcess, Workdir};
use crate::support::{cluster_with_schema, wait_for_async};

const DEADLINE: Duration = Duration::from_secs(60);

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A TCP listener on loopback that counts the connections made to it (and answers none).
async fn outside_host() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (url, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_pointing_at_the_daemons_own_secrets_or_another_host_are_config_errors_nothing_is_sent_and_the_store_is_private(
) {
    let cluster = cluster_with_schema();
    let receiver = Receiver::start(SECRET).await;
    let db = sql(&cluster).await;
    let work = Workdir::new(&cluster);
    let (outside, hits) = outside_host().await;
    // the daemon's configuration: an admin password, a key file and a directory of row secrets
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("stripe"), "sk_test_allowed").unwrap();
    let key_file = dir.path().join("fieldsync.key");
    std::fs::write(&key_file, fieldsync::credentials::generate_key()).unwrap();
    let admin_password = "admin-password-never-sent-anywhere";
    let mut toml = std::fs::read_to_string(&work.config).unwrap();
    toml += &format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\nuser = \"dba\"\npassword = \"{admin_password}\"\n{}secrets_key_file = \"{}\"\nsecret_dir = \"{}\"\n",
        dispatch_toml(3),
        key_file.display(),
        secrets.display()
    );
    std::fs::write(&work.config, toml).unwrap();
    seed(&db, 1, &receiver.url()).await;
    let hostile = [
        // the admin password
        json!({"secret_key": {"env": "FIELDSYNC__ADMIN__PASSWORD"}}),
        // the key that decrypts every fsenc1 secret, through a path that climbs out of secret_dir
        json!({"secret_key": {"file": secrets.join("..").join("fieldsync.key")}, "base_url": "https://api.stripe.com/v1"}),
        // an allowed secret, to another host
        json!({"secret_key": {"file": secrets.join("stripe")}, "base_url": outside}),
    ];
    for config in &hostile {
        db.execute(
            "INSERT INTO organization_integrations (organization_id, integration_type, config)
             SELECT id, 'stripe', $1::text::jsonb FROM organizations",
            &[&config.to_string()],
        )
        .await
        .unwrap();
    }
    let child = DaemonProcess::spawn_with_env(
        &work.config,
        work.http,
        &work.log,
        &[("FIELDSYNC__ADMIN__PASSWORD", admin_password)],
    );
    wait_for_async(DEADLINE, "the daemon to answer", || async {
        child.status().is_some()
    })
    .await;

    // when: a guest count changes, which every integration of the organisation takes
    db.execute(
        "INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
         SELECT organization_id, id, gen_random_uuid(), 'guest_count_matrix', '{\"adults\": 80, \"children\": 4, \"infants\": 1}'
         FROM weddings WHERE id = $1::text::uuid",
        &[&wedding(0)],
    )
    .await
    .unwrap();
    converge(&db, &receiver).await;

    // then: each hostile row is a config error naming its key, and the outside host saw nothing
    let status: Value = {
        let (_, body) = daemon::http_get(work.http, "/deliveries").unwrap();
        serde_json::from_str(&body).unwrap()
    };
    let errors: Vec<String> = status["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["integration_type"] == "stripe")
        .map(|i| i["config_error"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(errors.len(), 3, "{status}");
    let named = |key: &str, rule: &str| {
        errors
            .iter()
            .any(|e| e.contains(&format!(": {key} ")) && e.contains(rule))
    };
    assert!(named("secret_key", "secret_env_prefix"), "{errors:?}");
    assert!(named("secret_key", "secret_dir"), "{errors:?}");
    assert!(named("base_url", "allowed_base_urls"), "{errors:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a request went to the row's host");
    child.terminate();
    let log = std::fs::read_to_string(&work.log).unwrap();
    assert!(
        !log.contains(admin_password) && !log.contains("sk_test_allowed"),
        "a secret reached the log"
    );
    // and what the daemon stored is its own: directories 0700, files 0600
    let mut dirs = vec![work.queue.clone()];
    while let Some(dir) = dirs.pop() {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_and_contexts_that_cannot_be_passed_on_exactly_are_invalid_events_naming_the_rule() {
    let crate::dispatch::Setup {
        receiver,
        db,
        d,
        _dir,
        _cluster,
    } = crate::dispatch::setup(2, 3, "", "").await;
    let insert = |w: String, f: String, value: String| {
        let db = &db;
        async move {
            db.execute(
                &format!(
                    "INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
                     VALUES ('{}', '{w}', '{f}', 'number', $1::text::jsonb)",
                    crate::dispatch::ORG
                ),
                &[&value],
            )
            .await
            .unwrap();
        }
    };
    let field = crate::dispatch::field;
    // given: values a double or a JSON reader would change silently, in wedding 0
    let deep = "[".repeat(200) + &"]".repeat(200);
    let bad = [
        (field(0), deep, "json_depth"),
        (field(1), "1e400".to_owned(), "number_range"),
        (field(2), "1e-400".to_owned(), "number_range"),
        (
            field(3),
            "123456789012345678901234567890".to_owned(),
            "number_range",
        ),
        (
            field(4),
            "3.14159265358979323846264".to_owned(),
            "number_precision",
        ),
    ];
    for (f, value, _) in &bad {
        insert(wedding(0), f.clone(), value.clone()).await;
    }
    // and wedding 1 in no time zone on Earth, on no day of the calendar
    db.batch_execute(&format!(
        "UPDATE weddings SET timezone = 'Mars/Olympus_Mons', wedding_date = 'infinity' WHERE id = '{}'",
        wedding(1)
    ))
    .await
    .unwrap();
    insert(wedding(1), field(5), "7".to_owned()).await;
    // when: afterwards, an ordinary value
    insert(wedding(0), field(6), "8".to_owned()).await;

    // then: every event reaches the receiver; the bad ones are invalid and name their rule
    wait_for_async(DEADLINE, "seven events at the receiver", || async {
        receiver.stats().accepted >= 7
    })
    .await;
    let by_field: std::collections::HashMap<String, Value> = receiver
        .accepted()
        .into_iter()
        .filter_map(|a| Some((a.field_id?, a.body["data"].clone())))
        .collect();
    let rules = |data: &Value| -> Vec<String> {
        data["errors"]
            .as_array()
            .map(|e| {
                e.iter()
                    .map(|i| i["rule"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    for (f, _, rule) in &bad {
        let data = &by_field[f];
        assert_eq!(data["valid"], false, "{rule}: {data}");
        assert_eq!(rules(data), [*rule], "{data}");
        assert!(
            data["new_value"].is_null(),
            "nothing changed silently is passed on: {data}"
        );
    }
    let on_mars = &by_field[&field(5)];
    assert_eq!(on_mars["valid"], false);
    assert_eq!(
        rules(on_mars),
        ["wedding_date_range", "iana_time_zone"],
        "{on_mars}"
    );
    let fine = &by_field[&field(6)];
    assert_eq!(fine["valid"], true, "{fine}");
    assert_eq!(fine["new_value"], 8);
    assert_eq!(
        daemon::http_get(d.http_addr, "/healthz").map(|(code, _)| code),
        Some(200)
    );
    d.stop().await.unwrap();
}
