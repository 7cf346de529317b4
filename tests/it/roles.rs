//! Roles and the audit trail on a real daemon: admin users `read` and `operate` over the
//! PostgreSQL protocol, HTTP bearer tokens of both roles, and the `audit` view, `/audit` and
//! `fieldsync audit` showing every action and refusal, who and from where, never a field value.

use std::net::SocketAddr;

use fieldsync_dev::receiver::Receiver;

use crate::dispatch::{dispatch_toml, edit, seed, INTEGRATION, SECRET};
use crate::support::cluster_with_schema;
use crate::support::daemon::{self, config_toml, sql, OPERATOR_TOKEN};

const OPERATOR: (&str, &str) = ("dba", "correct horse battery staple");
const READER: (&str, &str) = ("viewer", "read only, twelve plus");
const READ_TOKEN: &str = "test-reader-token-0123456789abcdefgh";

async fn connect(admin: SocketAddr, (user, password): (&str, &str)) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host={} port={} user={user} password='{password}' dbname=fieldsync connect_timeout=10",
            admin.ip(),
            admin.port()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .expect("logs in");
    tokio::spawn(conn);
    client
}

/// A POST to an acting endpoint with `token` (if any): (status, body).
async fn post(http: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(format!("http://{http}{path}"))
        .header("content-type", "application/json")
        .body(format!("{{\"integration_id\": \"{INTEGRATION}\"}}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_gets_42501_and_403_an_operator_acts_and_the_audit_trail_shows_both() {
    let cluster = cluster_with_schema();
    let receiver = Receiver::start(SECRET).await;
    let db = sql(&cluster).await;
    seed(&db, 2, &receiver.url()).await;
    let dir = tempfile::tempdir().unwrap();
    // the shared configuration's operator token, and a reader's beside it
    let operator_only = "role = \"operate\" }]";
    let toml = config_toml(&cluster, &dir.path().join("q"), 0).replacen(
        operator_only,
        &format!("role = \"operate\" }}, {{ name = \"dashboard\", token = \"{READ_TOKEN}\", role = \"read\" }}]"),
        1,
    ) + &format!(
        "\n[admin]\nlisten = \"127.0.0.1:0\"\nuser = \"{}\"\npassword = \"{}\"\nusers = [{{ name = \"{}\", password = \"{}\", role = \"read\" }}]\n",
        OPERATOR.0, OPERATOR.1, READER.0, READER.1
    ) + &dispatch_toml(2);
    let d = daemon::start(&toml).await;
    // what the CLI reads: the same configuration, with the port the daemon took
    let config = dir.path().join("fieldsync.toml");
    let at = format!("listen = \"{}\"", d.http_addr);
    std::fs::write(&config, toml.replacen("listen = \"127.0.0.1:0\"", &at, 1)).unwrap();
    let admin = d.admin_addr.unwrap();
    edit(&db, 51, 10, 2, 2).await;

    // the admin port: a reader reads the views but gets 42501 on an action; an operator acts
    let reader = connect(admin, READER).await;
    assert!(!reader
        .simple_query("SELECT * FROM integrations")
        .await
        .unwrap()
        .is_empty());
    let denied = reader
        .simple_query(&format!("SELECT pause('{INTEGRATION}')"))
        .await
        .unwrap_err();
    let denied = denied.as_db_error().expect("an SQL error");
    assert_eq!(denied.code().code(), "42501", "{denied:?}");
    assert!(denied.message().contains("role read"), "{}", denied.message());
    let operator = connect(admin, OPERATOR).await;
    let paused = operator
        .query_one(&format!("SELECT pause('{INTEGRATION}')"), &[])
        .await
        .unwrap();
    assert_eq!(paused.get::<_, String>(0), "paused");

    // HTTP: no token 401, a read token 403, the operator's token acts
    let (code, body) = post(d.http_addr, "/deliveries/resume", None).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("bearer token"), "{body}");
    let (code, body) = post(d.http_addr, "/deliveries/resume", Some("not-a-configured-token")).await;
    assert_eq!(code, 401, "{body}");
    let (code, body) = post(d.http_addr, "/deliveries/resume", Some(READ_TOKEN)).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("needs role operate"), "{body}");
    let (code, body) = post(d.http_addr, "/deliveries/resume", Some(OPERATOR_TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    // reads of personal data take a reader's token once tokens are configured
    let dead = |token: Option<&'static str>| {
        let mut req = reqwest::Client::new().get(format!("http://{}/deliveries/dead", d.http_addr));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(dead(None).await, 401);
    assert_eq!(dead(Some(READ_TOKEN)).await, 200);

    // the trail, in the admin view: who, how, from where, what, the result, in order
    let rows = reader
        .query(
            "SELECT actor, role, via, client, action, integration_id, result FROM audit ORDER BY at",
            &[],
        )
        .await
        .unwrap();
    let seen: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(2), r.get(4), r.get(6)))
        .collect();
    let expect = [
        (
            "viewer",
            "admin",
            "pause",
            "denied: user \"viewer\" has role read",
        ),
        ("dba", "admin", "pause", "ok: paused"),
        (
            "dashboard",
            "http",
            "resume",
            "denied: token \"dashboard\" has role read: resume needs role operate",
        ),
        ("test-operator", "http", "resume", "ok: resumed"),
    ];
    assert_eq!(seen.len(), expect.len(), "{seen:?}");
    for ((actor, via, action, result), want) in seen.iter().zip(expect) {
        assert_eq!(
            (actor.as_str(), via.as_str(), action.as_str()),
            (want.0, want.1, want.2)
        );
        assert_eq!(result, want.3);
    }
    for r in &rows {
        assert!(r
            .get::<_, Option<String>>(3)
            .is_some_and(|c| c.starts_with("127.0.0.1:")));
        assert_eq!(r.get::<_, Option<String>>(5).as_deref(), Some(INTEGRATION));
    }

    // the same trail from the CLI (through the running daemon, with the config's read token)
    let (code, out, err) = daemon::cli("audit", &config, &["--last", "2"]);
    assert_eq!(code, 0, "{err}");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["actor"], "test-operator");
    assert_eq!(entries[1]["result"], "ok: resumed");
    d.stop().await.unwrap();
}
