//! `fieldsync check` and `fieldsync run` on a bad configuration or an unprepared database: one
//! clear message naming the key or the fix, a non-zero exit, and nothing written. And the product's
//! command line carries no development commands.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::daemon::{binary, config_toml, free_port};
use crate::support::{cluster, cluster_with_schema, Cluster, ClusterOptions};

fn fieldsync(args: &[&str], config: &Path) -> Output {
    Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run fieldsync")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(cluster: &Cluster, extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let toml = config_toml(cluster, &dir.path().join("queue"), free_port()) + extra;
        std::fs::write(dir.path().join("fieldsync.toml"), toml).unwrap();
        Setup { dir }
    }
    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("fieldsync.toml")
    }
    fn queue_exists(&self) -> bool {
        self.dir.path().join("queue").exists()
    }
}

#[test]
fn an_unknown_key_is_named_and_nothing_is_written() {
    let cluster = cluster_with_schema();
    let s = Setup::new(&cluster, "\n[queue_settings]\nfoo = 1\n");
    for cmd in ["check", "run"] {
        let out = fieldsync(&[cmd], &s.config());
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("queue_settings"),
            "{cmd} names the key: {}",
            stderr(&out)
        );
    }
    assert!(!s.queue_exists());
}

#[test]
fn a_wrong_wal_level_fails_check_and_run_with_the_fix() {
    let cluster = crate::support::Cluster::start(ClusterOptions {
        settings: vec![("wal_level".into(), "replica".into())],
        ..ClusterOptions::default()
    })
    .unwrap();
    cluster
        .apply_default_schema("postgres")
        .unwrap_or_else(|e| panic!("{e}"));
    let s = Setup::new(&cluster, "");
    let out = fieldsync(&["check"], &s.config());
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("ALTER SYSTEM SET wal_level = logical"),
        "{}",
        stdout(&out)
    );
    let out = fieldsync(&["run"], &s.config());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("wal_level"), "{}", stderr(&out));
    assert!(!s.queue_exists(), "run wrote nothing");
    let slots = cluster
        .psql("postgres", "SELECT count(*) FROM pg_replication_slots")
        .unwrap();
    assert_eq!(slots.trim(), "0");
}

#[test]
fn a_missing_publication_fails_run_with_the_create_publication_fix() {
    let cluster = cluster();
    cluster
        .psql_file(
            "postgres",
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/schema.sql")),
        )
        .unwrap();
    let s = Setup::new(&cluster, "");
    let out = fieldsync(&["run"], &s.config());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("CREATE PUBLICATION"), "{}", stderr(&out));
    assert!(!s.queue_exists(), "run wrote nothing");
}

#[test]
fn check_passes_on_a_prepared_database_and_config_hides_the_password() {
    let cluster = cluster_with_schema();
    let s = Setup::new(&cluster, "");
    let out = fieldsync(&["check"], &s.config());
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let secret = "pa55-w0rd-secret";
    std::fs::write(
        s.config(),
        std::fs::read_to_string(s.config()).unwrap().replace(
            "url = \"postgres://postgres@",
            &format!("url = \"postgres://postgres:{secret}@"),
        ),
    )
    .unwrap();
    let out = fieldsync(&["config"], &s.config());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stdout(&out).contains(secret) && stdout(&out).contains("***"),
        "{}",
        stdout(&out)
    );
}

/// The development commands live in the dev crate's `fieldsync-dev`, not in the product.
#[test]
fn the_product_binary_has_no_development_commands() {
    let out = Command::new(binary()).arg("--help").output().unwrap();
    let help = stdout(&out);
    assert!(out.status.success(), "{help}{}", stderr(&out));
    // the subcommand names: the first word of each line under `Commands:`
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(commands.contains(&"run"), "no command list in:\n{help}");
    for command in ["sandbox", "demo"] {
        assert!(!commands.contains(&command), "{command} listed in:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_sealed_under_a_key_the_config_lacks_is_refused_at_start_naming_the_key_id() {
    use crate::support::daemon::{
        sql, test_key_file, write_key, DaemonProcess, Workdir, ROTATED_KEY, TEST_KEY,
    };
    let cluster = cluster_with_schema();
    let work = Workdir::new(&cluster);
    let db = sql(&cluster).await;
    let daemon = DaemonProcess::spawn(&work.config, work.http, &work.log);
    db.batch_execute("INSERT INTO organizations (id, name) VALUES (gen_random_uuid(), 'Sealed Studio')")
        .await
        .unwrap();
    crate::support::wait_for(std::time::Duration::from_secs(30), "the row to be stored", || {
        daemon.stored_records().is_some_and(|n| n >= 1)
    });
    assert!(daemon.terminate().success());
    let toml = std::fs::read_to_string(&work.config).unwrap();
    let key_line = format!("encryption_key_file = \"{}\"", test_key_file().display());
    let other = write_key(work.dir(), "other.key", &ROTATED_KEY);
    let id = fieldsync::store::cipher::KeyId::of(&TEST_KEY).to_string();
    for (what, line) in [
        ("no key", String::new()),
        (
            "another key",
            format!("encryption_key_file = \"{}\"", other.display()),
        ),
    ] {
        std::fs::write(&work.config, toml.replace(&key_line, &line)).unwrap();
        let out = fieldsync(&["run"], &work.config);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr(&out));
        let e = stderr(&out);
        assert!(
            e.contains(&id) && e.contains("encryption_key_file"),
            "{what}: {e}"
        );
        assert!(
            !e.contains(&std::fs::read_to_string(test_key_file()).unwrap()),
            "{e}"
        );
    }
    // refused before writing: no value and no key record under the other key
    let held = crate::support::daemon::open_queue(&work.queue)
        .unwrap()
        .summary()
        .unwrap()
        .encryption
        .held;
    assert_eq!(
        held.keys.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [id.clone()]
    );
    // the right key, as an old one beside a new current key, opens it again
    std::fs::write(
        &work.config,
        toml.replace(
            &key_line,
            &format!(
                "encryption_key_file = \"{}\"\nold_encryption_key_files = [\"{}\"]",
                other.display(),
                test_key_file().display()
            ),
        ),
    )
    .unwrap();
    let daemon = DaemonProcess::spawn(&work.config, work.http, &work.log);
    crate::support::wait_for(std::time::Duration::from_secs(30), "the daemon to serve", || {
        daemon.stored_records().is_some_and(|n| n >= 1)
    });
    assert!(daemon.terminate().success());
}
