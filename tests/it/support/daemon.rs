//! Running fieldsync in tests: in-process (`Daemon`) when a test needs its handles, or as the real
//! `fieldsync` binary when a test kills it or measures its memory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use fieldsync::app::Daemon;
use fieldsync::config::Config;
use fieldsync::store::record::ChangeRecord;
use fieldsync::store::Store;

use super::Cluster;

/// The `operate` bearer token of the HTTP endpoints in [`config_toml`] (`[http] tokens`).
pub const OPERATOR_TOKEN: &str = "test-operator-token-0123456789abcdef";

/// The `[http] tokens` line that configures [`OPERATOR_TOKEN`].
pub fn operator_token_toml() -> String {
    format!("tokens = [{{ name = \"test-operator\", token = \"{OPERATOR_TOKEN}\", role = \"operate\" }}]\n")
}

/// The store key of [`config_toml`]: every test daemon encrypts its store unless a test says
/// otherwise (`[queue] encryption_key_file`, see [`test_key_line`]).
pub const TEST_KEY: [u8; 32] = *b"fieldsync-test-store-key-32bytes";

/// The `[queue]` line that sets [`TEST_KEY`] (its file is written once per test process).
pub fn test_key_line() -> String {
    format!("encryption_key_file = \"{}\"\n", test_key_file().display())
}

pub fn test_key_file() -> &'static Path {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let name = format!("fieldsync-test-store-{}.key", std::process::id());
        write_key(&std::env::temp_dir(), &name, &TEST_KEY)
    })
}

/// The key a test rotates to from [`TEST_KEY`].
pub const ROTATED_KEY: [u8; 32] = *b"fieldsync-test-rotated-key-32byt";

/// Writes `key` to a file under `dir` for `[queue] encryption_key_file`.
pub fn write_key(dir: &Path, name: &str, key: &[u8; 32]) -> PathBuf {
    use base64::Engine;
    let path = dir.join(name);
    std::fs::write(&path, base64::engine::general_purpose::STANDARD.encode(key)).unwrap();
    path
}

/// Opens the queue at `path` as a test reads it: values sealed under [`TEST_KEY`] or
/// [`ROTATED_KEY`] open, and nothing new is sealed (the daemon's next start sees the same keys).
pub fn open_queue(path: &Path) -> Result<Store, fieldsync::store::StoreError> {
    let sealer = fieldsync::store::cipher::Sealer::new(None, &[&TEST_KEY, &ROTATED_KEY]);
    Store::open_sealed(path, 16 << 20, sealer)
}

/// A configuration for `cluster` as superuser `postgres`, fast status updates and reconnects, an
/// operator's HTTP token ([`OPERATOR_TOKEN`]) and a store encrypted under [`TEST_KEY`].
pub fn config_toml(cluster: &Cluster, queue: &Path, http_port: u16) -> String {
    format!(
        r#"
[postgres]
url = "{url}"
tls = "disable"

[replication]
status_interval = "100ms"
reconnect_backoff_min = "50ms"
reconnect_backoff_max = "1s"

[queue]
path = "{queue}"
cache_capacity_mb = 32
{key}
[http]
listen = "127.0.0.1:{http_port}"
{tokens}"#,
        url = cluster.url("postgres", "postgres"),
        queue = queue.display(),
        key = test_key_line(),
        tokens = operator_token_toml(),
    )
}

pub fn config(toml: &str) -> Config {
    Config::from_toml_str(toml, "test config", std::iter::empty::<(String, String)>())
        .unwrap_or_else(|e| panic!("test config is invalid: {e}"))
}

/// Starts the daemon in this process, its logs in the test's captured output.
pub async fn start(toml: &str) -> Daemon {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
    let daemon = Daemon::start(config(toml))
        .await
        .unwrap_or_else(|e| panic!("daemon did not start: {e}"));
    // The slot is created when the source first connects: changes before that are not captured.
    super::wait_for_async(Duration::from_secs(30), "replication to start", || async {
        daemon.status.snapshot().connected
    })
    .await;
    daemon
}

/// Starts the daemon in this process on `cluster`, its queue in a new temporary directory.
pub async fn start_on(cluster: &Cluster) -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(&config_toml(cluster, &dir.path().join("q"), 0)).await;
    (dir, daemon)
}

/// The `fieldsync` slot's `confirmed_flush_lsn`.
pub async fn slot_confirmed(db: &tokio_postgres::Client) -> fieldsync::lsn::Lsn {
    let row = db
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'fieldsync'",
            &[],
        )
        .await
        .unwrap();
    row.get::<_, String>(0).parse().unwrap()
}

/// An ordinary SQL connection to the cluster as `postgres`.
pub async fn sql(cluster: &Cluster) -> tokio_postgres::Client {
    fieldsync::pg::connect_sql(&cluster.target("postgres", None, "postgres"))
        .await
        .unwrap_or_else(|e| panic!("sql connection failed: {e}"))
}

/// Every durable record of the queue at `path` (the daemon must not hold it).
pub fn read_queue(path: &Path) -> Vec<ChangeRecord> {
    let queue = open_queue(path).unwrap_or_else(|e| panic!("cannot open queue: {e}"));
    queue
        .records_after(None, usize::MAX)
        .unwrap_or_else(|e| panic!("cannot read queue: {e}"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A plain HTTP/1.0 GET; `None` when nothing answers.
/// A GET with [`OPERATOR_TOKEN`] (the open endpoints ignore it).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    fieldsync::serve::http::request_local(
        addr,
        "GET",
        path,
        None,
        Some(OPERATOR_TOKEN),
        None,
        Duration::from_secs(5),
    )
    .ok()
}

/// The `fieldsync` binary running as a child process, its stderr appended to a log file.
pub struct DaemonProcess {
    child: Child,
    pub http: SocketAddr,
}

impl DaemonProcess {
    pub fn spawn(config_path: &Path, http: SocketAddr, log: &Path) -> DaemonProcess {
        DaemonProcess::spawn_with_env(config_path, http, log, &[])
    }

    /// Like [`DaemonProcess::spawn`], with these environment variables set for the daemon.
    pub fn spawn_with_env(
        config_path: &Path,
        http: SocketAddr,
        log: &Path,
        env: &[(&str, &str)],
    ) -> DaemonProcess {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("daemon log file");
        let child = Command::new(binary())
            .args(["run", "--config"])
            .arg(config_path)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn fieldsync");
        DaemonProcess { child, http }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `/status` as JSON, once the daemon answers.
    pub fn status(&self) -> Option<serde_json::Value> {
        let (code, body) = http_get(self.http, "/status")?;
        if code != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    pub fn stored_records(&self) -> Option<u64> {
        self.status()?.pointer("/queue/records")?.as_u64()
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The process's peak resident set size so far, in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(mut self) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("wait for fieldsync")
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fieldsync"))
}

/// `fieldsync <command> --config <config> <args>`, as an operator runs it: (exit code, stdout,
/// stderr).
pub fn cli(command: &str, config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary())
        .args([command, "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A directory with a configuration for `cluster`, the queue and the log of a child daemon.
pub struct Workdir {
    _dir: tempfile::TempDir,
    pub queue: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub http: SocketAddr,
}

impl Workdir {
    /// The directory holding the queue, the config and the log.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    pub fn new(cluster: &Cluster) -> Workdir {
        let dir = tempfile::tempdir().unwrap();
        let queue = dir.path().join("queue");
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.path().join("fieldsync.toml");
        std::fs::write(&config, config_toml(cluster, &queue, http.port())).unwrap();
        let log = dir.path().join("fieldsync.log");
        Workdir {
            _dir: dir,
            queue,
            config,
            log,
            http,
        }
    }
}

/// Waits until everything committed so far is confirmed (captured and durable, or not ours).
pub async fn caught_up(db: &tokio_postgres::Client, d: &fieldsync::app::Daemon) {
    // the insert position: with asynchronous commit the write position may lag behind commits
    let target: String = db
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let target: fieldsync::lsn::Lsn = target.parse().unwrap();
    super::wait_for_async(
        Duration::from_secs(120),
        "the daemon to confirm the current WAL position",
        || async { d.status.snapshot().confirmed_lsn >= target },
    )
    .await;
}

/// The ids of the queued records that carry an event, in commit order.
pub fn event_ids(d: &fieldsync::app::Daemon) -> Vec<String> {
    d.queue
        .records_after(None, usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|r| r.event.is_some())
        .map(|r| r.id.to_string())
        .collect()
}

/// `POST /deliveries/requeue` of every dead letter; the daemon's JSON answer.
pub async fn requeue_all(http: SocketAddr) -> serde_json::Value {
    let answer = reqwest::Client::new()
        .post(format!("http://{http}/deliveries/requeue"))
        .bearer_auth(OPERATOR_TOKEN)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&answer).unwrap()
}
