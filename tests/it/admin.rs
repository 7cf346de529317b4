//! The SQL admin port against real clients: `psql` (simple protocol) reads every view, requeues a
//! dead letter, pauses and resumes an integration, and gets SQLSTATEs for bad statements while the
//! daemon carries on; tokio-postgres (extended protocol: Parse/Describe/Bind/Execute, binary
//! results, `$n` parameters) sees typed columns and parameters; a pause survives a restart.

use std::net::SocketAddr;
use std::time::Duration;

use fieldsync_dev::receiver::{Faults, Receiver};
use tokio_postgres::types::Type;

use crate::dispatch::{add_field, dispatch_toml, edit, seed, wedding, INTEGRATION, SECRET};
use crate::support::daemon::{self, config_toml, sql};
use crate::support::{cluster_with_schema, wait_for_async};

const DEADLINE: Duration = Duration::from_secs(60);
const USER: &str = "dba";
const PASSWORD: &str = "correct horse battery staple";

struct Psql {
    ok: bool,
    out: String,
    err: String,
}

/// One statement through `psql -c` (unaligned, tuples only, errors verbose: with their SQLSTATE).
async fn psql(bin: &std::path::Path, admin: SocketAddr, statement: &str) -> Psql {
    let out = tokio::process::Command::new(bin.join("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "VERBOSITY=verbose",
        ])
        .args([
            "-h",
            &admin.ip().to_string(),
            "-p",
            &admin.port().to_string(),
            "-U",
            USER,
            "-d",
            "fieldsync",
        ])
        .args(["-c", statement])
        .env("PGPASSWORD", PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .await
        .expect("psql runs");
    Psql {
        ok: out.status.success(),
        out: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        err: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    }
}

async fn psql_ok(bin: &std::path::Path, admin: SocketAddr, statement: &str) -> String {
    let r = psql(bin, admin, statement).await;
    assert!(r.ok, "{statement}: {}", r.err);
    r.out
}

async fn driver(admin: SocketAddr, password: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host={} port={} user={USER} password='{password}' dbname=fieldsync connect_timeout=10",
            admin.ip(),
            admin.port()
        ),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    Ok(client)
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

fn admin_toml() -> String {
    format!("\n[admin]\nlisten = \"127.0.0.1:0\"\nuser = \"{USER}\"\npassword = \"{PASSWORD}\"\n")
        + &dispatch_toml(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_a_driver_read_the_views_requeue_pause_and_resume() {
    let cluster = cluster_with_schema();
    let bin = cluster.bin_dir().to_path_buf();
    let receiver = Receiver::start(SECRET).await;
    let db = sql(&cluster).await;
    seed(&db, 3, &receiver.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(&cluster, &dir.path().join("q"), 0) + &admin_toml();
    let d = daemon::start(&toml).await;
    let admin = d.admin_addr.expect("the admin port is configured");

    // a wrong password or user is refused like PostgreSQL refuses it
    let Err(refused) = driver(admin, "not the password").await else {
        panic!("a wrong password was accepted")
    };
    assert_eq!(refused.code().map(|c| c.code()), Some("28P01"), "{refused}");

    // the extended protocol: typed parameters and columns, binary results
    let client = driver(admin, PASSWORD)
        .await
        .expect("the driver logs in with SCRAM");
    edit(&db, 7, 6, 2, 2).await;
    let by_id = client
        .prepare("SELECT integration_id, state, delivered, oldest_age_seconds, paused_since FROM integrations WHERE integration_id = $1")
        .await
        .unwrap();
    assert_eq!(by_id.params(), [Type::TEXT]);
    let types: Vec<Type> = by_id.columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(
        types,
        [
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::FLOAT8,
            Type::TIMESTAMPTZ
        ]
    );
    wait_for_async(
        DEADLINE,
        "deliveries counted in the integrations view",
        || async {
            let row = client.query_opt(&by_id, &[&INTEGRATION]).await.unwrap();
            row.is_some_and(|r| r.get::<_, i64>(2) >= 1)
        },
    )
    .await;
    let newest = client
        .query(
            "SELECT event_id, attempt, latency_ms FROM deliveries WHERE outcome = $1 LIMIT $2",
            &[&"delivered", &2i64],
        )
        .await
        .unwrap();
    assert!(!newest.is_empty() && newest.len() <= 2);
    assert!(newest
        .iter()
        .all(|r| r.get::<_, i64>(1) >= 1 && r.get::<_, Option<f64>>(2).is_some()));

    // a rejected wedding becomes a dead letter
    receiver.set_faults(Faults {
        reject_wedding: Some(wedding(2)),
        ..Faults::default()
    });
    add_field(&db, &wedding(2)).await;
    wait_for_async(DEADLINE, "a dead letter", || async {
        count(&client, "SELECT count(*) FROM dead_letters").await == 1
    })
    .await;

    // psql reads each view
    assert_eq!(
        psql_ok(&bin, admin, "SELECT connected, slot, publication FROM status").await,
        "t|fieldsync|fieldsync"
    );
    assert_eq!(
        psql_ok(
            &bin,
            admin,
            "SELECT integration_id, integration_type, state FROM integrations"
        )
        .await,
        format!("{INTEGRATION}|webhook|active")
    );
    let waiting = psql_ok(
        &bin,
        admin,
        "SELECT count(*) FROM queue WHERE state <> 'in_flight'",
    )
    .await;
    assert!(waiting.parse::<u64>().is_ok(), "{waiting}");
    assert_eq!(
        psql_ok(
            &bin,
            admin,
            "SELECT wedding_id, status, requeued FROM dead_letters WHERE integration_id LIKE '0d%'"
        )
        .await,
        format!("{}|400|f", wedding(2))
    );
    let outcomes = psql_ok(
        &bin,
        admin,
        "SELECT outcome, count(*) FROM deliveries GROUP BY outcome ORDER BY outcome",
    )
    .await;
    assert!(
        outcomes.contains("dead|1") && outcomes.contains("delivered|"),
        "{outcomes}"
    );

    // bad statements get PostgreSQL errors with their SQLSTATE, and nothing else changes
    for (statement, sqlstate, words) in [
        (
            "SELECT nope FROM dead_letters",
            "42703",
            "column \"nope\" does not exist",
        ),
        (
            "SELECT * FROM weddings",
            "42P01",
            "relation \"weddings\" does not exist",
        ),
        ("UPDATE dead_letters SET status = 200", "25006", "read-only"),
        ("SELEKT 1", "42601", "syntax error"),
        ("SELECT pause('no-such-integration')", "42704", "no integration"),
        (
            "SELECT count(*) FROM deliveries WHERE at > 'last tuesday'",
            "22007",
            "timestamp",
        ),
    ] {
        let r = psql(&bin, admin, statement).await;
        assert!(!r.ok, "{statement} should fail");
        assert!(
            r.err.contains(&format!("ERROR:  {sqlstate}:")) && r.err.contains(words),
            "{statement}: {}",
            r.err
        );
    }
    let err = client.query("SELECT nope FROM status", &[]).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42703"));
    assert_eq!(
        count(&client, "SELECT count(*) FROM status WHERE connected").await,
        1,
        "the connection carries on"
    );

    // requeue: the receiver takes it now
    receiver.set_faults(Faults::default());
    assert_eq!(
        psql_ok(
            &bin,
            admin,
            "SELECT requeue(integration_id, event_id) FROM dead_letters"
        )
        .await,
        "1"
    );
    wait_for_async(DEADLINE, "the requeued dead letter delivered", || async {
        count(&client, "SELECT count(*) FROM dead_letters").await == 0
    })
    .await;
    assert!(receiver
        .accepted()
        .iter()
        .any(|a| a.wedding_id.as_deref() == Some(wedding(2).as_str())));
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM deliveries WHERE outcome = 'requeued'"
        )
        .await,
        1
    );

    // pause: changes wait in the queue view, unsent; resume sends them
    assert_eq!(
        psql_ok(&bin, admin, &format!("SELECT pause('{INTEGRATION}')")).await,
        "paused"
    );
    assert_eq!(
        psql_ok(&bin, admin, &format!("SELECT pause('{INTEGRATION}')")).await,
        "already paused"
    );
    let accepted = receiver.stats().accepted;
    edit(&db, 8, 4, 2, 2).await;
    wait_for_async(DEADLINE, "paused deliveries in the queue view", || async {
        count(
            &client,
            "SELECT count(*) FROM queue WHERE state = 'queued' AND attempts = 0",
        )
        .await
            >= 1
    })
    .await;
    assert_eq!(
        count(&client, "SELECT count(*) FROM queue WHERE attempts > 0").await,
        0
    );
    assert_eq!(
        receiver.stats().accepted,
        accepted,
        "nothing is sent while paused"
    );
    assert_eq!(
        psql_ok(
            &bin,
            admin,
            "SELECT state, paused_since IS NOT NULL FROM integrations"
        )
        .await,
        "paused|t"
    );

    // the pause is kept across a restart
    drop(client);
    d.stop().await.unwrap();
    let d = daemon::start(&toml).await;
    let admin = d.admin_addr.unwrap();
    assert_eq!(
        psql_ok(&bin, admin, "SELECT state FROM integrations").await,
        "paused"
    );
    assert_eq!(
        psql_ok(&bin, admin, &format!("SELECT resume('{INTEGRATION}')")).await,
        "resumed"
    );
    let client = driver(admin, PASSWORD).await.unwrap();
    wait_for_async(DEADLINE, "the held deliveries sent after resume", || async {
        receiver.stats().accepted > accepted && count(&client, "SELECT count(*) FROM queue").await == 0
    })
    .await;
    assert_eq!(
        psql_ok(&bin, admin, "SELECT state FROM integrations").await,
        "active"
    );
    d.stop().await.unwrap();
}
