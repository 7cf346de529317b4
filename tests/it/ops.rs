//! Running the daemon as an operator does: logs without secrets or field values, the queue view
//! while running and after, and a clean stop that confirms what it stored.

use std::process::Command;
use std::time::Duration;

use fieldsync::lsn::Lsn;

use crate::support::daemon::{binary, free_port, read_queue, DaemonProcess};
use crate::support::{wait_for, Cluster, ClusterOptions, HbaAuth};

const PASSWORD: &str = "s3cret-Pa55word-for-logs";
const MARKER: &str = "Marker-Value-Never-In-Logs";

#[test]
fn logs_hold_no_password_or_field_value_and_sigterm_confirms_everything_stored() {
    let mut cluster = Cluster::start(ClusterOptions {
        auth: HbaAuth::ScramSha256,
        superuser_password: PASSWORD.into(),
        ..ClusterOptions::default()
    })
    .unwrap();
    cluster.apply_default_schema("postgres").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let queue_path = dir.path().join("queue");
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config_path = dir.path().join("fieldsync.toml");
    std::fs::write(
        &config_path,
        format!(
            "[postgres]\nurl = \"postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres\"\ntls = \"disable\"\n\
             [replication]\nstatus_interval = \"100ms\"\nreconnect_backoff_min = \"50ms\"\nreconnect_backoff_max = \"500ms\"\n\
             [queue]\npath = \"{}\"\n[http]\nlisten = \"{http}\"\n",
            cluster.port(),
            queue_path.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("fieldsync.log");
    let mut daemon = DaemonProcess::spawn(&config_path, http, &log);
    let connected =
        |d: &DaemonProcess| d.status().and_then(|s| s.pointer("/source/connected")?.as_bool()) == Some(true);
    wait_for(Duration::from_secs(30), "the daemon to stream", || {
        assert!(
            daemon.try_wait().is_none(),
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        connected(&daemon)
    });

    let write = |cluster: &Cluster, value: &str| {
        cluster
            .psql(
                "postgres",
                &format!(
                    "INSERT INTO organizations (id, name) VALUES (gen_random_uuid(), '{value}');
                     INSERT INTO organizations (id, name) VALUES (gen_random_uuid(), 'second {value}');"
                ),
            )
            .unwrap()
    };
    write(&cluster, MARKER);
    wait_for(Duration::from_secs(30), "2 records", || {
        daemon.stored_records() == Some(2)
    });
    // An error path too: PostgreSQL restarts, the daemon logs the lost connection and reconnects.
    cluster.restart().unwrap();
    wait_for(Duration::from_secs(30), "a reconnect", || {
        daemon
            .status()
            .and_then(|s| s.pointer("/source/reconnects")?.as_u64())
            .unwrap_or(0)
            >= 1
            && connected(&daemon)
    });
    write(&cluster, MARKER);
    wait_for(Duration::from_secs(30), "4 records", || {
        daemon.stored_records() == Some(4)
    });

    let queue_view = || {
        let out = Command::new(binary())
            .args(["queue", "--config"])
            .arg(&config_path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // the queue view asks the running daemon
    let view = queue_view();
    assert!(
        view.contains("\"records\":4") && view.contains("public.organizations"),
        "{view}"
    );
    assert!(!view.contains(MARKER), "the queue view shows no values: {view}");

    assert!(daemon.terminate().success(), "clean exit on SIGTERM");
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("replication stopped"), "{logs}");
    assert!(!logs.contains(PASSWORD), "a password reached the logs:\n{logs}");
    assert!(!logs.contains(MARKER), "a field value reached the logs:\n{logs}");

    // the last status update confirmed everything stored
    let records = read_queue(&queue_path);
    assert_eq!(records.len(), 4);
    let confirmed: Lsn = cluster
        .psql(
            "postgres",
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'fieldsync'",
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        confirmed > records[3].commit_lsn,
        "confirmed {confirmed} covers the last commit {}",
        records[3].commit_lsn
    );

    // and the view reads the stopped daemon's queue directly
    let view = queue_view();
    assert!(
        view.contains("records:       4") && view.contains("insert"),
        "{view}"
    );
}
