//! The throwaway cluster itself: it starts configured for logical replication, the default schema and
//! DBA setup apply (twice), restarts keep data and port, and dropping it leaves nothing behind.

use std::time::Duration;

use fieldsync::pg::connect_sql;

use crate::support::{cluster, cluster_with_schema, Cluster, ClusterOptions, HbaAuth, StopMode, TlsFiles};

fn psql(c: &Cluster, sql: &str) -> String {
    c.psql("postgres", sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}\n{}", c.log_tail(30)))
        .trim()
        .to_owned()
}

#[test]
fn a_started_cluster_is_configured_for_logical_replication() {
    let c = cluster();
    assert_eq!(psql(&c, "SHOW wal_level"), "logical");
    assert_eq!(psql(&c, "SHOW max_replication_slots"), "16");
    assert_eq!(psql(&c, "SHOW port"), c.port().to_string());
    assert_eq!(psql(&c, "SHOW fsync"), "off");
    assert_eq!(c.host(), "127.0.0.1");
    assert!(c.data_dir().join("PG_VERSION").is_file());
    assert!(c.bin_dir().join("initdb").is_file());
    assert_eq!(
        c.url("postgres", "postgres"),
        format!("postgres://postgres@127.0.0.1:{}/postgres", c.port())
    );
}

#[test]
fn default_schema_and_setup_apply_twice() {
    let c = cluster_with_schema();
    c.apply_default_schema("postgres")
        .expect("second run of schema and setup is idempotent");
    let tables = psql(
        &c,
        "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = 'fieldsync'",
    );
    assert_eq!(
        tables,
        "form_field_values,organization_integrations,organizations,weddings"
    );
    let identities = psql(
        &c,
        "SELECT string_agg(relname || '=' || relreplident::text, ',' ORDER BY relname) FROM pg_class \
         WHERE relname IN ('form_field_values', 'weddings', 'organization_integrations')",
    );
    assert_eq!(
        identities,
        "form_field_values=f,organization_integrations=f,weddings=f"
    );
    let publishes = psql(
        &c,
        "SELECT concat_ws(',', pubinsert, pubupdate, pubdelete, pubtruncate) FROM pg_publication \
         WHERE pubname = 'fieldsync'",
    );
    assert_eq!(publishes, "t,t,t,t");
}

#[test]
fn one_row_per_wedding_field_is_enforced() {
    let c = cluster_with_schema();
    let duplicate = c.psql(
        "postgres",
        "INSERT INTO organizations (id, name) VALUES ('00000000-0000-0000-0000-000000000001', 'Org');
         INSERT INTO weddings (id, organization_id, couple_names)
             VALUES ('00000000-0000-0000-0000-000000000002', '00000000-0000-0000-0000-000000000001', 'A & B');
         INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
             SELECT '00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000002',
                    '00000000-0000-0000-0000-000000000003', 'text', '\"x\"'
             FROM generate_series(1, 2);",
    );
    let err = duplicate
        .expect_err("a second value for the same wedding field is rejected")
        .to_string();
    assert!(err.contains("form_field_values_wedding_field_key"), "{err}");
}

#[tokio::test]
async fn fieldsync_role_can_replicate_and_select_but_not_insert() {
    let c = tokio::task::spawn_blocking(cluster_with_schema).await.unwrap();
    assert_eq!(
        psql(
            &c,
            "SELECT rolreplication AND rolcanlogin FROM pg_roles WHERE rolname = 'fieldsync'"
        ),
        "t"
    );

    let client = connect_sql(&c.target("fieldsync", None, "postgres"))
        .await
        .expect("fieldsync connects");
    let rows = client
        .query("SELECT count(*) FROM form_field_values", &[])
        .await
        .expect("select allowed");
    assert_eq!(rows[0].get::<_, i64>(0), 0);
    let err = client
        .execute("INSERT INTO organizations (name) VALUES ('nope')", &[])
        .await
        .expect_err("insert must be denied");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{err}"
    );
    let other = client.execute("CREATE TABLE fieldsync_owned (x int)", &[]).await;
    assert!(other.is_err(), "the role must not create tables in public");
}

#[test]
fn restart_keeps_data_and_port() {
    let mut c = cluster();
    let port = c.port();
    psql(&c, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42);");
    c.restart().unwrap_or_else(|e| panic!("restart: {e}"));
    assert_eq!(c.port(), port);
    assert_eq!(psql(&c, "SELECT x FROM kept"), "42");

    c.stop(StopMode::Immediate).expect("immediate stop");
    assert!(
        c.psql("postgres", "SELECT 1").is_err(),
        "a stopped cluster refuses connections"
    );
    c.start_again()
        .unwrap_or_else(|e| panic!("start after crash: {e}"));
    assert_eq!(psql(&c, "SELECT x FROM kept"), "42");
    assert_eq!(psql(&c, "SHOW port"), port.to_string());
}

#[test]
fn settings_apply_after_a_restart() {
    let mut c = cluster();
    c.set_settings(&[("wal_sender_timeout", "5s"), ("application_name", "it's")])
        .unwrap();
    c.restart()
        .unwrap_or_else(|e| panic!("restart: {e}\n{}", c.log_tail(30)));
    assert_eq!(psql(&c, "SHOW wal_sender_timeout"), "5s");
}

#[test]
fn dropping_a_cluster_stops_it_and_removes_its_directory() {
    let c = cluster();
    let dir = c.data_dir().to_owned();
    let port = c.port();
    drop(c);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts"
    );
}

#[test]
fn two_clusters_run_at_once_on_different_ports() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(cluster);
        let b = s.spawn(cluster);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
    psql(&a, "CREATE TABLE only_in_a (x int)");
    assert_eq!(
        psql(&b, "SELECT count(*) FROM pg_class WHERE relname = 'only_in_a'"),
        "0"
    );
}

#[tokio::test]
async fn scram_cluster_requires_the_right_password() {
    let opts = ClusterOptions {
        auth: HbaAuth::ScramSha256,
        superuser_password: "s3cret:/@pw".into(),
        ..ClusterOptions::default()
    };
    let c = tokio::task::spawn_blocking(move || Cluster::start(opts))
        .await
        .unwrap()
        .expect("start");
    assert_eq!(psql(&c, "SELECT 1"), "1");
    assert!(c.url("postgres", "postgres").contains(":s3cret%3A%2F%40pw@"));
    let ok = connect_sql(&c.target("postgres", None, "postgres"))
        .await
        .expect("right password");
    let method = ok.query_one(
        "SELECT left(rolpassword, 13) FROM pg_authid WHERE rolname = 'postgres'",
        &[],
    );
    assert_eq!(method.await.unwrap().get::<_, String>(0), "SCRAM-SHA-256");
    let wrong = connect_sql(&c.target("postgres", Some("wrong"), "postgres")).await;
    assert!(wrong.is_err(), "a wrong password is refused");
}

#[tokio::test]
async fn md5_cluster_stores_md5_passwords() {
    let opts = ClusterOptions {
        auth: HbaAuth::Md5,
        ..ClusterOptions::default()
    };
    let c = tokio::task::spawn_blocking(move || Cluster::start(opts))
        .await
        .unwrap()
        .expect("start");
    psql(&c, "CREATE ROLE app LOGIN PASSWORD 'app-pw'");
    assert_eq!(
        psql(
            &c,
            "SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'app'"
        ),
        "md5"
    );
    let app = connect_sql(&c.target("app", Some("app-pw"), "postgres"))
        .await
        .expect("md5 login");
    assert_eq!(
        app.query_one("SELECT current_user", &[])
            .await
            .unwrap()
            .get::<_, String>(0),
        "app"
    );
}

#[tokio::test]
async fn tls_cluster_serves_encrypted_connections() {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let tls = TlsFiles {
        cert_pem: key.cert.pem(),
        key_pem: key.key_pair.serialize_pem(),
    };
    let opts = ClusterOptions {
        ssl: Some(tls),
        ..ClusterOptions::default()
    };
    let c = tokio::task::spawn_blocking(move || Cluster::start(opts))
        .await
        .unwrap()
        .expect("start");
    let target = c.target("postgres", None, "postgres");
    assert_eq!(target.tls, fieldsync::pg::TlsMode::Require);
    assert_eq!(target.connect_timeout, Duration::from_secs(10));
    let client = connect_sql(&target).await.expect("tls connect");
    let row = client
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
}
