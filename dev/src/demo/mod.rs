//! `fieldsync-dev demo`: the whole path on a throwaway PostgreSQL, for a newcomer.
//!
//! Starts a private cluster with `sql/schema.sql` and `sql/setup.sql`, the CRM sandboxes, and the
//! daemon; the studio connects Tave, Google Calendar, Stripe, Light Blue and HoneyBook (the
//! sandboxes, credentials by file reference); a few scripted wedding edits follow (and some that
//! must *not* be captured: a rolled-back transaction, an unpublished table), then Tave goes down
//! and comes back, and a value that fails validation becomes a dead letter. A live view
//! ([`live_view`]) prints each captured change as it becomes durable, with its commit-to-durable
//! time, and each delivery attempt to each integration as it happens, with its commit-to-CRM
//! latency; the demo shows what each CRM holds once delivered and, after the script, the latency
//! per system. Then the view keeps going so the person can make their own edits with psql, until
//! Ctrl-C; the cluster, the queue and the sandboxes are removed on exit.

use std::future::Future;
use std::time::Duration;

use crate::devdb::{Cluster, ClusterOptions, DevDbError};
use fieldsync::app::{AppError, Daemon};
use fieldsync::config::Config;
use fieldsync::store::StoreError;

mod live_view;

use live_view::LiveView;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("throwaway PostgreSQL: {0}")]
    DevDb(#[from] DevDbError),
    #[error(transparent)]
    App(#[from] AppError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("demo configuration: {0}")]
    Config(String),
    #[error("scripted edit failed: {0}")]
    Sql(String),
    #[error("{0}")]
    Timeout(String),
    #[error("cannot create a temporary directory: {0}")]
    Io(#[from] std::io::Error),
}

/// The scripted edits: what a couple and their planner might do in the app, and how many row
/// changes each leaves in the queue.
const SCRIPT: &[(&str, &str, usize)] = &[
    ("the planner's studio signs up", "INSERT INTO organizations (id, name, timezone) VALUES ('0a000000-0000-4000-8000-000000000001', 'Petals & Vows', 'Europe/London')", 1),
    ("a wedding is created", "INSERT INTO weddings (id, organization_id, couple_names, wedding_date, timezone) VALUES ('0b000000-0000-4000-8000-000000000001', '0a000000-0000-4000-8000-000000000001', 'Amara & Tom', '2027-06-19', 'Europe/London')", 1),
    ("the couple answer the guest-count question", "INSERT INTO form_field_values (id, organization_id, wedding_id, field_id, field_type, value) VALUES ('0f000000-0000-4000-8000-000000000001', '0a000000-0000-4000-8000-000000000001', '0b000000-0000-4000-8000-000000000001', '0c000000-0000-4000-8000-000000000001', 'guest_count_matrix', '{\"adults\": 120, \"children\": 14, \"infants\": 3}')", 1),
    ("they change the guest count", "UPDATE form_field_values SET value = '{\"adults\": 128, \"children\": 12, \"infants\": 3}', updated_at = now() WHERE id = '0f000000-0000-4000-8000-000000000001'", 1),
    ("they pick a venue", "UPDATE weddings SET venue = '{\"name\": \"Kew Gardens\", \"formatted_address\": \"Richmond, London TW9 3AE, UK\"}', updated_at = now() WHERE id = '0b000000-0000-4000-8000-000000000001'", 1),
    ("an edit that is rolled back (never captured)", "BEGIN; UPDATE weddings SET couple_names = 'typo' WHERE id = '0b000000-0000-4000-8000-000000000001'; ROLLBACK", 0),
    ("a table outside the publication changes (never captured)", "CREATE TABLE IF NOT EXISTS app_sessions (id serial, seen timestamptz); INSERT INTO app_sessions (seen) VALUES (now())", 0),
    ("the timeline is added and the guest count changed again in one transaction", "BEGIN; INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value) VALUES ('0a000000-0000-4000-8000-000000000001', '0b000000-0000-4000-8000-000000000001', gen_random_uuid(), 'timeline_builder', '{\"events\": [{\"time\": \"13:00\", \"duration\": 45, \"title\": \"Ceremony\"}, {\"time\": \"18:30\", \"duration\": 120, \"title\": \"Dinner\"}]}'); UPDATE form_field_values SET value = '{\"adults\": 130, \"children\": 12, \"infants\": 3}', updated_at = now() WHERE id = '0f000000-0000-4000-8000-000000000001'; COMMIT", 2),
];

/// The integrations the studio connects, all pointing at the sandboxes.
const INTEGRATIONS: [&str; 5] = ["tave", "google_calendar", "stripe", "lightblue", "honeybook"];

/// How long the demo waits for a capture or a delivery before it gives up.
const DEADLINE: Duration = Duration::from_secs(30);

/// Runs the demo until `stop` resolves; with `exit_after_script`, returns once the script is shown.
pub async fn run(exit_after_script: bool, stop: impl Future<Output = ()>) -> Result<(), DemoError> {
    println!("fieldsync demo: starting a throwaway PostgreSQL with sql/schema.sql and sql/setup.sql ...");
    let cluster = tokio::task::spawn_blocking(|| -> Result<Cluster, DevDbError> {
        // synchronous_commit on: with it off, a commit reaches the walsender only on the WAL
        // writer's next round (wal_writer_delay), which would show as latency that is not ours.
        let cluster = Cluster::start(ClusterOptions {
            settings: vec![("synchronous_commit".into(), "on".into())],
            ..ClusterOptions::default()
        })?;
        cluster.apply_default_schema("postgres")?;
        Ok(cluster)
    })
    .await
    .map_err(|e| DemoError::Config(e.to_string()))??;
    let dir = tempfile::Builder::new().prefix("fieldsync-demo-").tempdir()?;
    let sandbox = crate::sandbox::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        crate::sandbox::Accounts::default(),
    )?;
    let admin_password = format!("{:032x}", rand::random::<u128>());
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets)?;
    // the integration rows reference secret files in `secrets` and the sandboxes' URL, which the
    // daemon's configuration must allow (a row alone cannot point elsewhere)
    let toml = format!(
        "[postgres]\nurl = \"{}\"\ntls = \"disable\"\n[queue]\npath = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\nuser = \"fieldsync\"\npassword = \"{admin_password}\"\n\
         [dispatch]\nretry_base = \"200ms\"\nretry_cap = \"1s\"\nbreaker_cooldown = \"1s\"\nmax_attempts = 50\n\
         secret_dir = \"{}\"\nallowed_base_urls = [\"{}/\"]\n",
        cluster.url("postgres", "postgres"),
        dir.path().join("queue").display(),
        secrets.display(),
        sandbox.url(),
    );
    let config = Config::from_toml_str(&toml, "demo", std::iter::empty::<(String, String)>())
        .map_err(|e| DemoError::Config(e.to_string()))?;
    let target = config.postgres.clone();
    let daemon = Daemon::start(config).await?;
    wait_until(Duration::from_secs(30), "replication to start", || {
        daemon.status.snapshot().connected
    })
    .await?;
    println!(
        "capturing from slot \"fieldsync\", publication \"fieldsync\"; queue in {}",
        dir.path().display()
    );
    println!();

    let db = fieldsync::pg::connect_sql(&target)
        .await
        .map_err(|e| DemoError::Sql(e.to_string()))?;
    let mut view = LiveView::new(&daemon.queue)?;
    let connect = integrations_sql(&sandbox, &secrets)?;
    let mut expected = 0;
    for (n, (what, sql, captures)) in SCRIPT.iter().enumerate() {
        println!("-- {what}");
        db.batch_execute(sql)
            .await
            .map_err(|e| DemoError::Sql(format!("{what}: {e}")))?;
        expected += captures;
        captured(&mut view, expected).await?;
        if n == 0 {
            println!(
                "-- the studio connects Tave, Google Calendar, Stripe, Light Blue and HoneyBook (sandboxes at {})",
                sandbox.url()
            );
            db.batch_execute(&connect)
                .await
                .map_err(|e| DemoError::Sql(format!("connecting the integrations: {e}")))?;
            expected += INTEGRATIONS.len();
            captured(&mut view, expected).await?;
        }
    }
    println!(
        "{} changes captured: rolled-back work and unpublished tables left nothing behind.",
        view.captured()
    );
    delivered(&daemon, &mut view).await?;
    println!();
    print_crms(&sandbox.state());
    println!();
    outage_and_invalid_value(&daemon, &sandbox, &db, &mut view).await?;
    // the dead letters of the other integrations
    delivered(&daemon, &mut view).await?;
    println!();
    view.print_summary(&INTEGRATIONS);
    println!();
    let admin = daemon.admin_addr.expect("the demo configures the admin port");
    admin_view(admin, &admin_password).await?;
    println!();
    println!("try it yourself:");
    println!("  psql '{}'", cluster.url("postgres", "postgres"));
    println!("    UPDATE form_field_values SET value = '{{\"adults\": 90}}' WHERE field_type = 'guest_count_matrix';");
    println!(
        "  PGPASSWORD={admin_password} psql -h {} -p {} -U fieldsync     (the admin port)",
        admin.ip(),
        admin.port()
    );
    println!("    SELECT * FROM status;  SELECT * FROM dead_letters;  SELECT pause('<integration_id>');");
    println!("  curl http://{}/status", daemon.http_addr);
    println!("  curl 'http://{}/queue?last=5'", daemon.http_addr);
    println!("  curl http://{}/deliveries", daemon.http_addr);
    println!("  curl {}/_sandbox/state", sandbox.url());
    println!("  curl http://{}/metrics     (Prometheus)", daemon.http_addr);
    if exit_after_script {
        return Ok(daemon.stop().await?);
    }
    println!("watching for changes (captures and deliveries show as they happen); Ctrl-C stops the demo and removes everything it created.");
    let shown = view.deliveries_shown();
    tokio::pin!(stop);
    while !view.is_closed() {
        tokio::select! {
            _ = &mut stop => break,
            step = view.step() => step?,
        }
    }
    if view.deliveries_shown() > shown {
        println!();
        view.print_summary(&INTEGRATIONS);
    }
    daemon.stop().await?;
    println!("demo stopped; the throwaway cluster and queue are removed.");
    Ok(())
}

/// The integration rows: each adapter's sandbox URL and its credentials as file references (the
/// files in the demo's directory hold the sandboxes' documented test credentials).
fn integrations_sql(sandbox: &crate::sandbox::Running, dir: &std::path::Path) -> Result<String, DemoError> {
    let a = &sandbox.sandbox.accounts;
    let secret = |name: &str, value: &str| -> Result<serde_json::Value, DemoError> {
        let path = dir.join(name);
        std::fs::write(&path, value)?;
        Ok(serde_json::json!({ "file": path }))
    };
    let base = sandbox.url();
    let configs = [
        serde_json::json!({"base_url": format!("{base}/tave/api/v2"), "api_key": secret("tave.key", &a.tave_api_key)?}),
        serde_json::json!({"base_url": format!("{base}/google/calendar/v3"), "token_url": format!("{base}/google/oauth2/token"),
            "client_id": a.google_client_id, "client_secret": secret("google.secret", &a.google_client_secret)?,
            "refresh_token": secret("google.refresh", &a.google_refresh_token)?}),
        serde_json::json!({"base_url": format!("{base}/stripe/v1"), "secret_key": secret("stripe.key", &a.stripe_secret_key)?}),
        serde_json::json!({"url": format!("{base}/lightblue/api.php"), "api_key": secret("lightblue.key", &a.lightblue_key)?}),
        serde_json::json!({"url": format!("{base}/zapier/hooks/catch/{}/{}/", a.zapier_hook_id, a.zapier_hook_key),
            "secret": secret("zapier.secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?}),
    ];
    Ok(INTEGRATIONS
        .iter()
        .zip(configs)
        .map(|(kind, config)| {
            format!(
                "INSERT INTO organization_integrations (organization_id, integration_type, config) VALUES ('0a000000-0000-4000-8000-000000000001', '{kind}', '{}');",
                config.to_string().replace('\'', "''")
            )
        })
        .collect())
}

/// A JSON endpoint of the daemon (`Null` when it does not answer).
async fn daemon_json(daemon: &Daemon, path: &str) -> serde_json::Value {
    let url = format!("http://{}{path}", daemon.http_addr);
    match reqwest::get(&url).await {
        Ok(r) => r
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

/// Tave goes down while the guest count changes (the others are not held up, Tave gets it once
/// back), then a value that fails validation becomes a dead letter that names the rule.
async fn outage_and_invalid_value(
    daemon: &Daemon,
    sandbox: &crate::sandbox::Running,
    db: &tokio_postgres::Client,
    view: &mut LiveView,
) -> Result<(), DemoError> {
    let guests = |adults: i64| {
        format!("UPDATE form_field_values SET value = '{{\"adults\": {adults}, \"children\": 12, \"infants\": 3}}', updated_at = now() WHERE id = '0f000000-0000-4000-8000-000000000001'")
    };
    println!("-- Tave is down (its sandbox answers 503) when the couple change the guest count again");
    sandbox.set_faults(crate::sandbox::Faults {
        api: Some(crate::sandbox::Api::Tave),
        error_rate: 1.0,
        status: Some(503),
        ..Default::default()
    });
    db.batch_execute(&guests(140))
        .await
        .map_err(|e| DemoError::Sql(e.to_string()))?;
    let next = view.captured() + 1;
    captured(view, next).await?;
    let held = until(view, || async move {
        let status = daemon_json(daemon, "/deliveries").await;
        let tave = status["integrations"]
            .as_array()
            .and_then(|all| all.iter().find(|i| i["integration_type"] == "tave").cloned())
            .unwrap_or_default();
        if tave["retries"].as_u64() >= Some(2) {
            Ok(tave)
        } else {
            Err("Tave's outage was not retried".to_owned())
        }
    })
    .await?;
    println!(
        "   Tave: {} retries so far, breaker {}; the other systems are not held up",
        held["retries"], held["breaker"]
    );
    sandbox.clear_faults();
    delivered(daemon, view).await?;
    let job = sandbox.state()["tave"]["jobs"][0].clone();
    println!(
        "   Tave is back: guestCount {} arrived once it answered",
        job["guestCount"]
    );

    println!("-- a value the app should not have accepted: adults = -3");
    db.batch_execute(&guests(-3))
        .await
        .map_err(|e| DemoError::Sql(e.to_string()))?;
    let next = view.captured() + 1;
    captured(view, next).await?;
    let dead = until(view, || async move {
        let dead = daemon_json(daemon, "/deliveries/dead").await;
        dead.as_array()
            .and_then(|d| d.first().cloned())
            .ok_or_else(|| "the invalid value did not become a dead letter".to_owned())
    })
    .await?;
    println!(
        "   dead letter, nothing sent to the CRMs: {}",
        dead["error"].as_str().unwrap_or("")
    );
    Ok(())
}

/// What a DBA sees through the admin port: each integration's state and counts.
async fn admin_view(admin: std::net::SocketAddr, password: &str) -> Result<(), DemoError> {
    let failed = |e: tokio_postgres::Error| DemoError::Sql(format!("admin port: {e}"));
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host={} port={} user=fieldsync password={password} dbname=fieldsync",
            admin.ip(),
            admin.port()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .map_err(failed)?;
    tokio::spawn(conn);
    let query = "SELECT integration_type, state, delivered, retries, dead_letters FROM integrations ORDER BY integration_type";
    println!(
        "-- the DBA asks the admin port (psql -h {} -p {} -U fieldsync):",
        admin.ip(),
        admin.port()
    );
    println!("   fieldsync=> {query};");
    println!(
        "   {:<16} {:<8} {:>9} {:>7} {:>12}",
        "integration_type", "state", "delivered", "retries", "dead_letters"
    );
    for row in client.query(query, &[]).await.map_err(failed)? {
        println!(
            "   {:<16} {:<8} {:>9} {:>7} {:>12}",
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, i64>(2),
            row.get::<_, i64>(3),
            row.get::<_, i64>(4)
        );
    }
    Ok(())
}

/// Keeps the live view going until `count` changes in all were captured.
async fn captured(view: &mut LiveView, count: usize) -> Result<(), DemoError> {
    let start = std::time::Instant::now();
    view.print_new()?;
    while view.captured() < count {
        if start.elapsed() > DEADLINE {
            return Err(DemoError::Timeout(format!(
                "only {} of {count} changes were captured",
                view.captured()
            )));
        }
        view.step().await?;
    }
    Ok(())
}

/// Keeps the live view going until `check` answers `Ok`; its last `Err` says what did not happen.
async fn until<T, F, Fut>(view: &mut LiveView, mut check: F) -> Result<T, DemoError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = std::time::Instant::now();
    loop {
        match check().await {
            Ok(answer) => {
                view.print_new()?;
                return Ok(answer);
            }
            Err(missing) if start.elapsed() > DEADLINE => return Err(DemoError::Timeout(missing)),
            Err(_) => view.step().await?,
        }
    }
}

/// Keeps the live view going until every integration has delivered what it was given.
async fn delivered(daemon: &Daemon, view: &mut LiveView) -> Result<(), DemoError> {
    until(view, || async move {
        let status = daemon_json(daemon, "/deliveries").await;
        let integrations = status["integrations"].as_array().cloned().unwrap_or_default();
        let done = integrations.len() == INTEGRATIONS.len()
            && integrations
                .iter()
                .all(|i| i["queued"] == 0 && i["in_flight"] == 0 && i["delivered"].as_u64() > Some(0));
        if done {
            Ok(())
        } else {
            Err(format!(
                "deliveries did not finish: {}",
                serde_json::Value::Array(integrations)
            ))
        }
    })
    .await
}

/// What each CRM sandbox holds now.
fn print_crms(state: &serde_json::Value) {
    let items = |v: &serde_json::Value| v.as_array().cloned().unwrap_or_default();
    println!("delivered; what each CRM holds now:");
    for job in items(&state["tave"]["jobs"]) {
        let events: Vec<String> = items(&state["tave"]["events"])
            .iter()
            .filter(|e| e["jobId"] == job["id"])
            .map(|e| {
                format!(
                    "{} {}",
                    e["name"].as_str().unwrap_or(""),
                    e["startTime"].as_str().unwrap_or("")
                )
            })
            .collect();
        println!(
            "   Tave job {}: eventDate {}, guestCount {}, events [{}]",
            job["name"],
            job["eventDate"],
            job["guestCount"],
            events.join(", ")
        );
    }
    for e in items(&state["google"]["calendars"]["primary"]["events"]) {
        println!(
            "   Google Calendar: {} at {} {} ({})",
            e["summary"],
            e["start"]["dateTime"]
                .as_str()
                .or(e["start"]["date"].as_str())
                .unwrap_or(""),
            e["start"]["timeZone"].as_str().unwrap_or(""),
            e["location"].as_str().unwrap_or("no location")
        );
    }
    for c in items(&state["stripe"]["customers"]) {
        let m = &c["metadata"];
        println!(
            "   Stripe customer {} {}: guests_total {}, wedding_date {}",
            c["id"].as_str().unwrap_or(""),
            c["name"],
            m["guests_total"],
            m["wedding_date"]
        );
    }
    println!(
        "   Light Blue inbox: {} submissions",
        items(&state["lightblue"]["inbox"]).len()
    );
    let caught: usize = state["zapier"]["hooks"]
        .as_object()
        .map_or(0, |h| h.values().map(|v| items(v).len()).sum());
    println!("   HoneyBook (Zapier catch hook): {caught} records");
}

async fn wait_until(deadline: Duration, what: &str, mut f: impl FnMut() -> bool) -> Result<(), DemoError> {
    let start = std::time::Instant::now();
    while !f() {
        if start.elapsed() > deadline {
            return Err(DemoError::Timeout(format!("timed out waiting for {what}")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
