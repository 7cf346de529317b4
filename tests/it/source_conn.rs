//! The replication connection against a real PostgreSQL: each authentication method, TLS modes,
//! replication commands, the CopyBoth stream and error classification of real server errors.

use std::time::Duration;

use fieldsync::lsn::Lsn;
use fieldsync::pg::{PgTarget, TlsMode};
use fieldsync::source::conn::{ReplicationConnection, SnapshotAction};
use fieldsync::source::error::SourceError;
use fieldsync::source::wire::{ReplicationMessage, ReplicationStream};

use crate::support::{pki, wait_for, Cluster, ClusterOptions, HbaAuth, TlsFiles};

const DEADLINE: Duration = Duration::from_secs(30);
const PASSWORD: &str = "s3cret wörd";

fn start(auth: HbaAuth, ssl: Option<TlsFiles>) -> Cluster {
    let opts = ClusterOptions {
        auth,
        ssl,
        ..ClusterOptions::default()
    };
    Cluster::start(opts).unwrap_or_else(|e| panic!("dev cluster did not start: {e}"))
}

fn psql(cluster: &Cluster, sql: &str) -> String {
    cluster
        .psql("postgres", sql)
        .unwrap_or_else(|e| panic!("psql failed: {e}\n{}", cluster.log_tail(30)))
}

/// A role `app` that may open replication connections, with [`PASSWORD`] stored as the cluster's
/// `password_encryption` says.
fn create_app_role(cluster: &Cluster) {
    psql(
        cluster,
        &format!("CREATE ROLE app LOGIN REPLICATION PASSWORD '{PASSWORD}';"),
    );
}

async fn connect(target: &PgTarget) -> ReplicationConnection {
    ReplicationConnection::connect(target)
        .await
        .unwrap_or_else(|e| panic!("connect failed: {e}"))
}

async fn scalar(conn: &mut ReplicationConnection, sql: &str) -> Option<String> {
    let rows = conn
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.into_iter()
        .next()
        .and_then(|row| row.into_iter().next())
        .flatten()
}

fn write_ca(dir: &tempfile::TempDir, pem: &str) -> std::path::PathBuf {
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, pem).unwrap();
    path
}

#[tokio::test]
async fn trust_connection_identifies_the_system_and_stays_usable_after_an_error() {
    let cluster = start(HbaAuth::Trust, None);
    let mut conn = connect(&cluster.target("postgres", None, "postgres")).await;

    assert!(
        conn.server_major_version().is_some_and(|v| v >= 15),
        "{:?}",
        conn.server_version()
    );
    assert_eq!(conn.auth_mechanism(), "none");
    assert!(!conn.is_tls());
    let app = scalar(
        &mut conn,
        "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()",
    );
    assert_eq!(app.await.as_deref(), Some("fieldsync-test"));

    let id = conn.identify_system().await.expect("IDENTIFY_SYSTEM");
    assert!(
        !id.system_id.is_empty() && id.system_id.bytes().all(|b| b.is_ascii_digit()),
        "{id:?}"
    );
    assert_eq!(id.timeline, 1);
    assert!(id.xlogpos > Lsn::ZERO);
    assert_eq!(id.dbname.as_deref(), Some("postgres"));

    let err = conn.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(err.code(), Some("22012"), "{err}");
    assert!(!err.is_transient());
    assert_eq!(scalar(&mut conn, "SELECT NULL::text").await, None);
    assert_eq!(
        scalar(&mut conn, "SELECT 'still usable'").await.as_deref(),
        Some("still usable")
    );
}

#[tokio::test]
async fn unix_socket_connection_needs_no_tls() {
    let cluster = start(HbaAuth::Trust, None);
    let mut target = cluster.target("postgres", None, "postgres");
    target.host = cluster.data_dir().to_string_lossy().into_owned();
    target.tls = TlsMode::Require; // libpq semantics: never TLS on a Unix socket
    let mut conn = connect(&target).await;
    assert!(!conn.is_tls());
    let family = scalar(
        &mut conn,
        "SELECT coalesce(client_addr::text, 'local') FROM pg_stat_activity WHERE pid = pg_backend_pid()",
    );
    assert_eq!(family.await.as_deref(), Some("local"));
}

/// Connects to `target`, which must fail with the reason `why`; returns the error.
async fn connect_err(target: &PgTarget, why: &str) -> SourceError {
    ReplicationConnection::connect(target).await.err().expect(why)
}

/// Connects as `app` with its password and checks the authentication mechanism used.
async fn connects_as_app(cluster: &Cluster, mechanism: &str) {
    let mut conn = connect(&cluster.target("app", Some(PASSWORD), "postgres")).await;
    assert_eq!(conn.auth_mechanism(), mechanism);
    assert_eq!(
        scalar(&mut conn, "SELECT current_user").await.as_deref(),
        Some("app")
    );
}

/// How the server stored `app`'s password (md5 hash or SCRAM verifier).
fn stored_password(cluster: &Cluster) -> String {
    psql(cluster, "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
}

#[tokio::test]
async fn cleartext_password_authentication_succeeds() {
    let cluster = start(HbaAuth::Password, None);
    create_app_role(&cluster);
    connects_as_app(&cluster, "password").await;
}

#[tokio::test]
async fn md5_authentication_succeeds_against_an_md5_stored_password() {
    let cluster = start(HbaAuth::Md5, None);
    create_app_role(&cluster);
    assert!(stored_password(&cluster).starts_with("md5"));
    connects_as_app(&cluster, "md5").await;
}

#[tokio::test]
async fn scram_authentication_succeeds_and_a_wrong_or_missing_password_is_definite() {
    let cluster = start(HbaAuth::ScramSha256, None);
    create_app_role(&cluster);
    assert!(stored_password(&cluster).starts_with("SCRAM-SHA-256$"));
    connects_as_app(&cluster, "SCRAM-SHA-256").await;

    let wrong = "not-the-password";
    let err = ReplicationConnection::connect(&cluster.target("app", Some(wrong), "postgres"))
        .await
        .err();
    let err = err.expect("a wrong password must not connect");
    assert_eq!(err.code(), Some("28P01"), "{err}");
    assert!(!err.is_transient());
    assert!(err.fix_hint().is_some_and(|h| h.contains("pg_hba.conf")));
    assert!(
        !format!("{err} {err:?}").contains(wrong),
        "the error must not echo the password"
    );

    let mut target = cluster.target("app", None, "postgres");
    target.password = None;
    let err = connect_err(&target, "no password must not connect").await;
    assert!(matches!(err, SourceError::Auth(_)), "{err}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn missing_database_is_definite_with_its_name_in_the_hint() {
    let cluster = start(HbaAuth::Trust, None);
    let err = ReplicationConnection::connect(&cluster.target("postgres", None, "no_such_db"))
        .await
        .err();
    let err = err.expect("a missing database must not connect");
    assert_eq!(err.code(), Some("3D000"), "{err}");
    assert!(err.fix_hint().is_some_and(|h| h.contains("no_such_db")));
}

#[tokio::test]
async fn tls_require_encrypts_and_binds_scram_to_the_channel() {
    let pki = pki(&rcgen::PKCS_ECDSA_P256_SHA256);
    let cluster = start(HbaAuth::ScramSha256, Some(pki.server));
    create_app_role(&cluster);
    let target = cluster.target("app", Some(PASSWORD), "postgres");
    assert_eq!(target.tls, TlsMode::Require);
    let mut conn = connect(&target).await;
    assert!(conn.is_tls());
    assert_eq!(conn.auth_mechanism(), "SCRAM-SHA-256-PLUS");
    let ssl = scalar(
        &mut conn,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await;
    assert_eq!(ssl.as_deref(), Some("t"));
}

#[tokio::test]
async fn tls_verify_full_trusts_the_ca_file_and_rejects_another_ca() {
    // A SHA-384 CA signature makes channel binding hash the certificate with SHA-384.
    let pki_384 = pki(&rcgen::PKCS_ECDSA_P384_SHA384);
    let cluster = start(HbaAuth::ScramSha256, Some(pki_384.server));
    create_app_role(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let mut target = cluster.target("app", Some(PASSWORD), "postgres");
    target.tls = TlsMode::VerifyFull;
    target.ca_file = Some(write_ca(&dir, &pki_384.ca_pem));
    let mut conn = connect(&target).await;
    assert_eq!(conn.auth_mechanism(), "SCRAM-SHA-256-PLUS");
    let ssl = scalar(
        &mut conn,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await;
    assert_eq!(ssl.as_deref(), Some("t"));

    let other = tempfile::tempdir().unwrap();
    target.ca_file = Some(write_ca(&other, &pki(&rcgen::PKCS_ECDSA_P256_SHA256).ca_pem));
    let err = connect_err(&target, "an unknown CA must be refused").await;
    assert!(matches!(err, SourceError::Tls(_)), "{err}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn tls_require_fails_and_prefer_falls_back_when_the_server_has_no_tls() {
    let cluster = start(HbaAuth::Trust, None);
    let mut target = cluster.target("postgres", None, "postgres");
    target.tls = TlsMode::Require;
    let err = connect_err(&target, "require must not fall back").await;
    assert!(matches!(err, SourceError::Tls(_)), "{err}");
    assert!(!err.is_transient() && err.fix_hint().is_some());

    target.tls = TlsMode::Prefer;
    let mut conn = connect(&target).await;
    assert!(!conn.is_tls());
    assert_eq!(scalar(&mut conn, "SELECT 1").await.as_deref(), Some("1"));
}

/// Reads batches until `done` says the collected messages suffice, within [`DEADLINE`].
async fn collect_until(
    stream: &mut ReplicationStream,
    mut done: impl FnMut(&[ReplicationMessage]) -> bool,
) -> Vec<ReplicationMessage> {
    let mut all = Vec::new();
    let result = tokio::time::timeout(DEADLINE, async {
        while !done(&all) {
            stream
                .next_batch(&mut all)
                .await
                .unwrap_or_else(|e| panic!("stream failed: {e}"));
        }
    })
    .await;
    result.unwrap_or_else(|_| panic!("timed out; received {all:?}"));
    all
}

/// First bytes of the pgoutput messages in XLogData, in order.
fn pgoutput_tags(messages: &[ReplicationMessage]) -> Vec<char> {
    messages
        .iter()
        .filter_map(|m| match m {
            ReplicationMessage::XLogData { data, .. } => data.first().map(|b| *b as char),
            ReplicationMessage::Keepalive { .. } => None,
        })
        .collect()
}

/// `end_lsn` of the last pgoutput Commit: tag, flags, commit LSN, end LSN, timestamp.
fn last_commit_end(messages: &[ReplicationMessage]) -> Lsn {
    messages
        .iter()
        .rev()
        .find_map(|m| match m {
            ReplicationMessage::XLogData { data, .. } if data.first() == Some(&b'C') && data.len() >= 26 => {
                Some(Lsn(u64::from_be_bytes(data[10..18].try_into().unwrap())))
            }
            _ => None,
        })
        .expect("a commit message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_insert_arrives_and_confirmed_flush_advances_after_a_status_update() {
    let cluster = start(HbaAuth::Trust, None);
    psql(
        &cluster,
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION p FOR TABLE t;",
    );
    let mut conn = connect(&cluster.target("postgres", None, "postgres")).await;
    let slot = conn
        .create_slot("fs_slot", SnapshotAction::NoExport)
        .await
        .expect("create slot");
    assert_eq!(slot.slot_name, "fs_slot");
    assert_eq!(slot.snapshot_name, None);
    assert!(slot.consistent_point > Lsn::ZERO);
    let dup = conn
        .create_slot("fs_slot", SnapshotAction::NoExport)
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Some("42710"), "{dup}");

    let mut stream = conn
        .start_replication("fs_slot", slot.consistent_point, "p")
        .await
        .expect("start");
    psql(
        &cluster,
        "BEGIN; SELECT pg_logical_emit_message(true, 'fieldsync', 'origin'); \
         INSERT INTO t VALUES (1, 'hello'); COMMIT;",
    );
    let messages = collect_until(&mut stream, |m| pgoutput_tags(m).contains(&'C')).await;
    let tags: Vec<char> = pgoutput_tags(&messages)
        .into_iter()
        .filter(|t| *t != 'R')
        .collect();
    assert_eq!(tags, ['B', 'M', 'I', 'C'], "{messages:?}");
    let commit_end = last_commit_end(&messages);

    stream
        .send_status(commit_end, commit_end, commit_end, true)
        .await
        .expect("status update");
    // reply=true asks the walsender to answer with a keepalive at once.
    collect_until(&mut stream, |m| {
        m.iter()
            .any(|m| matches!(m, ReplicationMessage::Keepalive { .. }))
    })
    .await;
    wait_for(DEADLINE, "confirmed_flush_lsn to reach the commit", || {
        let lsn = psql(
            &cluster,
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'fs_slot'",
        );
        lsn.trim().parse::<Lsn>().is_ok_and(|lsn| lsn >= commit_end)
    });
    tokio::time::timeout(DEADLINE, stream.finish())
        .await
        .expect("finish in time")
        .expect("clean finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_slot_and_missing_publication_are_definite_errors_with_hints() {
    let cluster = start(HbaAuth::Trust, None);
    psql(&cluster, "CREATE TABLE t (id int PRIMARY KEY);");
    let target = cluster.target("postgres", None, "postgres");

    let conn = connect(&target).await;
    let err = conn
        .start_replication("no_slot", Lsn::ZERO, "p")
        .await
        .err()
        .expect("missing slot");
    assert_eq!(err.code(), Some("42704"), "{err}");
    assert!(
        err.fix_hint().is_some_and(|h| h.contains("no_slot")),
        "{:?}",
        err.fix_hint()
    );

    let mut conn = connect(&target).await;
    let slot = conn
        .create_slot("fs_slot", SnapshotAction::Export)
        .await
        .expect("create slot");
    assert!(slot.snapshot_name.is_some());
    let mut stream = conn
        .start_replication("fs_slot", Lsn::ZERO, "no_pub")
        .await
        .expect("start");
    // pgoutput looks the publication up when it decodes the first change.
    psql(&cluster, "INSERT INTO t VALUES (1);");
    let mut out = Vec::new();
    let err = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Err(e) = stream.next_batch(&mut out).await {
                return e;
            }
        }
    })
    .await
    .expect("an error in time");
    assert_eq!(err.code(), Some("42704"), "{err}");
    assert!(
        err.fix_hint()
            .is_some_and(|h| h.contains("CREATE PUBLICATION no_pub")),
        "{:?}",
        err.fix_hint()
    );
}

#[tokio::test]
async fn wal_level_replica_is_definite_with_the_alter_system_fix() {
    let opts = ClusterOptions {
        settings: vec![("wal_level".into(), "replica".into())],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(opts).unwrap_or_else(|e| panic!("dev cluster did not start: {e}"));
    let mut conn = connect(&cluster.target("postgres", None, "postgres")).await;
    let err = conn
        .create_slot("fs_slot", SnapshotAction::NoExport)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("55000"), "{err}");
    assert!(!err.is_transient());
    assert!(
        err.fix_hint().is_some_and(|h| h.contains("wal_level = logical")),
        "{:?}",
        err.fix_hint()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_cancelled_by_a_status_timer_lose_no_message() {
    const ROWS: usize = 50_000;
    let cluster = start(HbaAuth::Trust, None);
    psql(
        &cluster,
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION p FOR TABLE t;",
    );
    let mut conn = connect(&cluster.target("postgres", None, "postgres")).await;
    let slot = conn
        .create_slot("fs_slot", SnapshotAction::NoExport)
        .await
        .expect("create slot");
    let mut stream = conn
        .start_replication("fs_slot", slot.consistent_point, "p")
        .await
        .expect("start");
    psql(
        &cluster,
        &format!("INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, {ROWS}) g;"),
    );

    let mut timer = tokio::time::interval(Duration::from_millis(1));
    let (mut inserts, mut batch, mut received, mut cancelled_reads) = (0, Vec::new(), Lsn::ZERO, 0u64);
    let started = std::time::Instant::now();
    let finished = tokio::time::timeout(DEADLINE, async {
        loop {
            tokio::select! {
                result = stream.next_batch(&mut batch) => {
                    result.unwrap_or_else(|e| panic!("stream failed: {e}"));
                    for message in batch.drain(..) {
                        if let ReplicationMessage::XLogData { wal_end, data, .. } = &message {
                            received = received.max(*wal_end);
                            match data.first() {
                                Some(b'I') => inserts += 1,
                                Some(b'C') => return,
                                _ => {}
                            }
                        }
                    }
                }
                _ = timer.tick() => {
                    cancelled_reads += 1;
                    stream.send_status(received, Lsn::ZERO, Lsn::ZERO, false).await.expect("status update");
                }
            }
        }
    })
    .await;
    finished.unwrap_or_else(|_| panic!("timed out after {inserts} inserts"));
    let elapsed = started.elapsed();
    assert_eq!(inserts, ROWS);
    assert!(cancelled_reads > 0);
    eprintln!(
        "{ROWS} inserts in {elapsed:?} ({:.0} messages/s), {cancelled_reads} timer ticks",
        ROWS as f64 / elapsed.as_secs_f64()
    );
}
