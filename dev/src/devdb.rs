//! Throwaway PostgreSQL clusters for tests, benchmarks and `fieldsync-dev demo`.
//!
//! A [`Cluster`] owns a fresh `initdb` directory under a unique temp dir, a server listening on a
//! free loopback port, and its log file. Dropping it stops the server (`immediate`) and deletes the
//! directory; drop never panics.
//!
//! Invariants and choices:
//! - The server is configured for logical replication (`wal_level=logical`, 16 slots and senders) and
//!   for speed, not durability (`fsync=off`, `synchronous_commit=off`, `full_page_writes=off`): the
//!   tests prove fieldsync's durability, not PostgreSQL's.
//! - It listens on `127.0.0.1` only; the Unix socket lives in the data directory so clusters never
//!   collide on `/var/run/postgresql`. The chosen port is written into `fieldsync.conf` (included from
//!   `postgresql.conf`), so a restart, even by hand with `pg_ctl`, keeps it.
//! - PostgreSQL refuses to run as root. When the process runs as root (CI), `initdb` and `pg_ctl` run
//!   as the `postgres` OS user through `runuser`, and the temp dir is chowned to that user. `psql`
//!   always talks TCP, so it may run as anyone.
//! - `pg_hba.conf` is rewritten: local socket connections are trusted (the owner bootstraps passwords
//!   through them); TCP connections from 127.0.0.1 use the method asked for in [`ClusterOptions`].
//! - Server binaries come from `FIELDSYNC_PG_BIN`, else `/usr/lib/postgresql/15/bin`, else the highest
//!   `/usr/lib/postgresql/*/bin`, else `pg_config --bindir`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fieldsync::check::{quote_ident, quote_literal};
use fieldsync::config::percent_encode;
use fieldsync::pg::{PgTarget, TlsMode};
use fieldsync::secret::Secret;

/// The default wedding schema (`sql/schema.sql`), carried by the binary.
pub const SCHEMA_SQL: &str = include_str!("../../sql/schema.sql");
/// The DBA setup (`sql/setup.sql`): publication, replica identity, least-privilege role.
pub const SETUP_SQL: &str = include_str!("../../sql/setup.sql");

const HOST: &str = "127.0.0.1";
const PORT_ATTEMPTS: usize = 8;
const PG_CTL_TIMEOUT_SECS: &str = "60";

/// Authentication method for TCP connections from 127.0.0.1 (`pg_hba.conf`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HbaAuth {
    /// No password asked.
    Trust,
    /// Cleartext password.
    Password,
    /// MD5 challenge; passwords are stored as MD5 (`password_encryption=md5`).
    Md5,
    /// SCRAM-SHA-256; passwords are stored as SCRAM verifiers.
    ScramSha256,
}

impl HbaAuth {
    fn hba_method(self) -> &'static str {
        match self {
            HbaAuth::Trust => "trust",
            HbaAuth::Password => "password",
            HbaAuth::Md5 => "md5",
            HbaAuth::ScramSha256 => "scram-sha-256",
        }
    }
}

/// A server certificate and its private key, both PEM.
#[derive(Clone)]
pub struct TlsFiles {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert_pem", &"…")
            .field("key_pem", &"***")
            .finish()
    }
}

/// How to set up a [`Cluster`].
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub auth: HbaAuth,
    /// Serve TLS with this certificate (`ssl=on`).
    pub ssl: Option<TlsFiles>,
    /// Extra `postgresql.conf` settings, applied after the defaults (so they override them).
    pub settings: Vec<(String, String)>,
    /// Password of the `postgres` superuser; set only when `auth` is not `Trust`.
    pub superuser_password: String,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            auth: HbaAuth::Trust,
            ssl: None,
            settings: Vec::new(),
            superuser_password: "fieldsync-dev".to_owned(),
        }
    }
}

/// How to stop the server (`pg_ctl stop -m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnect clients, checkpoint, shut down cleanly.
    Fast,
    /// Quit at once, as after a crash; the next start runs recovery.
    Immediate,
}

/// Why a throwaway cluster could not be set up or driven.
#[derive(Debug, thiserror::Error)]
pub enum DevDbError {
    #[error("no PostgreSQL server binaries found (looked in {looked}); run scripts/ensure-postgres.sh")]
    NoBinaries { looked: String },
    #[error("running as root, but there is no `postgres` OS user to run the server as")]
    NoPostgresUser,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("server did not start on port {port}: {reason}\n--- server log (tail) ---\n{log}")]
    Start { port: u16, reason: String, log: String },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DevDbError {
    let what = what.into();
    move |source| DevDbError::Io { what, source }
}

/// A running (or stopped) throwaway PostgreSQL cluster. See the module docs.
pub struct Cluster {
    // Field order matters for Drop: the server is stopped in `Drop::drop`, then `dir` is removed.
    bin_dir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    auth: HbaAuth,
    tls: bool,
    superuser_password: Secret<String>,
    /// uid/gid the server runs as when we are root.
    run_as: Option<(libc::uid_t, libc::gid_t)>,
    running: bool,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Creates, configures and starts a new cluster; blocks until it accepts connections.
    pub fn start(opts: ClusterOptions) -> Result<Cluster, DevDbError> {
        let bin_dir = find_bin_dir()?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let run_as = if unsafe { libc::geteuid() } == 0 {
            Some(postgres_user()?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("fieldsync-pg-")
            .tempdir()
            .map_err(io_err("cannot create a temp dir for the cluster"))?;
        if let Some((uid, gid)) = run_as {
            chown(dir.path(), uid, gid)?;
        }
        let data_dir = dir.path().join("data");
        let log_file = dir.path().join("postgres.log");
        let mut cluster = Cluster {
            bin_dir,
            data_dir,
            log_file,
            port: 0,
            auth: opts.auth,
            tls: opts.ssl.is_some(),
            superuser_password: Secret::new(opts.superuser_password.clone()),
            run_as,
            running: false,
            dir,
        };
        cluster.init(&opts)?;
        cluster.start_on_free_port()?;
        if cluster.auth != HbaAuth::Trust {
            // Through the Unix socket, which pg_hba trusts, since TCP already wants the password.
            let sql = format!(
                "ALTER ROLE postgres PASSWORD {};",
                quote_literal(cluster.superuser_password.expose())
            );
            let socket_dir = cluster.data_dir.to_string_lossy().into_owned();
            let port = cluster.port.to_string();
            cluster.psql_via(&["-h", &socket_dir, "-p", &port], "postgres", &sql)?;
        }
        tracing::debug!(port = cluster.port, dir = %cluster.dir.path().display(), "dev cluster started");
        Ok(cluster)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &str {
        HOST
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// `postgres://user[:password]@127.0.0.1:port/db`. The password is included for the `postgres`
    /// superuser when the cluster asks for one; other roles' passwords are not known here.
    pub fn url(&self, user: &str, db: &str) -> String {
        let password = match self.default_password(user) {
            Some(pw) => format!(":{}", percent_encode(pw)),
            None => String::new(),
        };
        format!(
            "postgres://{}{}@{}:{}/{}",
            percent_encode(user),
            password,
            HOST,
            self.port,
            percent_encode(db)
        )
    }

    /// A connection target for `user` on `db`: TLS `require` when the cluster serves TLS, else
    /// `disable`. With `password` `None`, the superuser's password is used for `postgres`.
    pub fn target(&self, user: &str, password: Option<&str>, db: &str) -> PgTarget {
        let password = password.or_else(|| self.default_password(user));
        PgTarget {
            host: HOST.to_owned(),
            port: self.port,
            user: user.to_owned(),
            password: password.map(|p| Secret::new(p.to_owned())),
            dbname: db.to_owned(),
            tls: if self.tls {
                TlsMode::Require
            } else {
                TlsMode::Disable
            },
            ca_file: None,
            connect_timeout: Duration::from_secs(10),
            application_name: "fieldsync-test".to_owned(),
        }
    }

    /// Runs `sql` with psql as `postgres` over TCP (stops at the first error) and returns its
    /// unaligned, tuples-only output. The script goes through stdin, so psql variables and backslash
    /// commands work as in a file.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, DevDbError> {
        let port = self.port.to_string();
        self.psql_via(&["-h", HOST, "-p", &port], db, sql)
    }

    /// Runs the SQL file at `path` like [`Cluster::psql`].
    pub fn psql_file(&self, db: &str, path: &Path) -> Result<String, DevDbError> {
        let sql = fs::read_to_string(path).map_err(io_err(format!("cannot read {}", path.display())))?;
        self.psql(db, &sql)
    }

    /// `CREATE DATABASE name`.
    pub fn create_database(&self, name: &str) -> Result<(), DevDbError> {
        self.psql("postgres", &format!("CREATE DATABASE {};", quote_ident(name)))
            .map(drop)
    }

    /// Applies `sql/schema.sql` then `sql/setup.sql` to `db`; both are idempotent.
    pub fn apply_default_schema(&self, db: &str) -> Result<(), DevDbError> {
        self.psql(db, SCHEMA_SQL)?;
        self.psql(db, SETUP_SQL)?;
        Ok(())
    }

    /// Stops the server; the data directory stays for [`Cluster::start_again`].
    pub fn stop(&mut self, mode: StopMode) -> Result<(), DevDbError> {
        let mode = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        self.pg_ctl(&["stop", "-m", mode])?;
        self.running = false;
        Ok(())
    }

    /// Starts the server again on the same directory and port.
    pub fn start_again(&mut self) -> Result<(), DevDbError> {
        let from = log_len(&self.log_file);
        if let Err(e) = self.pg_ctl(&["start", "-l", &self.log_file.to_string_lossy()]) {
            return Err(DevDbError::Start {
                port: self.port,
                reason: e.to_string(),
                log: self.log_since(from),
            });
        }
        self.running = true;
        Ok(())
    }

    /// Fast stop, then start again.
    pub fn restart(&mut self) -> Result<(), DevDbError> {
        self.stop(StopMode::Fast)?;
        self.start_again()
    }

    /// Appends settings to `postgresql.auto.conf` (which overrides `postgresql.conf`). The caller
    /// restarts or reloads as the settings require.
    pub fn set_settings(&mut self, settings: &[(&str, &str)]) -> Result<(), DevDbError> {
        let path = self.data_dir.join("postgresql.auto.conf");
        let mut text = String::new();
        for (name, value) in settings {
            text.push_str(&conf_line(name, value));
        }
        append(&path, &text)?;
        if let Some((uid, gid)) = self.run_as {
            chown(&path, uid, gid)?;
        }
        Ok(())
    }

    /// The last `lines` lines of the server log, for test failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read(&self.log_file).map(|b| String::from_utf8_lossy(&b).into_owned());
        match text {
            Ok(text) => {
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("(no server log at {}: {e})", self.log_file.display()),
        }
    }

    fn default_password(&self, user: &str) -> Option<&str> {
        (self.auth != HbaAuth::Trust && user == "postgres").then(|| self.superuser_password.expose().as_str())
    }

    fn init(&self, opts: &ClusterOptions) -> Result<(), DevDbError> {
        let data = self.data_dir.to_string_lossy().into_owned();
        let initdb = self.bin_dir.join("initdb");
        let args = [
            "-D",
            &data,
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ];
        run(self.server_command(&initdb, &args), None)?;

        let mut conf = String::new();
        for (name, value) in [
            ("wal_level", "logical"),
            ("max_replication_slots", "16"),
            ("max_wal_senders", "16"),
            ("listen_addresses", HOST),
            ("unix_socket_directories", &data),
            ("fsync", "off"),
            ("synchronous_commit", "off"),
            ("full_page_writes", "off"),
            ("shared_buffers", "128MB"),
            ("max_connections", "100"),
            ("wal_sender_timeout", "60s"),
            ("log_line_prefix", "%m [%p] %q%u@%d "),
        ] {
            conf.push_str(&conf_line(name, value));
        }
        match opts.auth {
            HbaAuth::Md5 => conf.push_str(&conf_line("password_encryption", "md5")),
            HbaAuth::ScramSha256 => conf.push_str(&conf_line("password_encryption", "scram-sha-256")),
            HbaAuth::Trust | HbaAuth::Password => {}
        }
        if let Some(tls) = &opts.ssl {
            self.write_owned("server.crt", &tls.cert_pem, 0o644)?;
            self.write_owned("server.key", &tls.key_pem, 0o600)?;
            conf.push_str(&conf_line("ssl", "on"));
            conf.push_str(&conf_line("ssl_cert_file", "server.crt"));
            conf.push_str(&conf_line("ssl_key_file", "server.key"));
        }
        for (name, value) in &opts.settings {
            conf.push_str(&conf_line(name, value));
        }
        self.write_owned("fieldsync.conf", &conf, 0o600)?;
        append(
            &self.data_dir.join("postgresql.conf"),
            "\n# fieldsync devdb settings (port and extras); see dev/src/devdb.rs\ninclude 'fieldsync.conf'\ninclude 'fieldsync-port.conf'\n",
        )?;

        let method = opts.auth.hba_method();
        let hba = format!(
            "# written by fieldsync devdb\n\
             local all all trust\n\
             local replication all trust\n\
             host all all 127.0.0.1/32 {method}\n\
             host replication all 127.0.0.1/32 {method}\n"
        );
        self.write_owned("pg_hba.conf", &hba, 0o600)
    }

    /// Starts on a free port, retrying with another one when the port was taken meanwhile.
    fn start_on_free_port(&mut self) -> Result<(), DevDbError> {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port()?;
            self.write_owned(
                "fieldsync-port.conf",
                &conf_line("port", &self.port.to_string()),
                0o600,
            )?;
            match self.start_again() {
                Ok(()) => return Ok(()),
                Err(DevDbError::Start { port, reason, log }) if address_in_use(&log) => {
                    tracing::debug!(port, "dev cluster port taken, retrying with another");
                    last = Some(DevDbError::Start { port, reason, log });
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt was made"))
    }

    fn write_owned(&self, name: &str, contents: &str, mode: u32) -> Result<(), DevDbError> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.data_dir.join(name);
        fs::write(&path, contents).map_err(io_err(format!("cannot write {}", path.display())))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(io_err(format!("cannot chmod {}", path.display())))?;
        if let Some((uid, gid)) = self.run_as {
            chown(&path, uid, gid)?;
        }
        Ok(())
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<String, DevDbError> {
        let data = self.data_dir.to_string_lossy().into_owned();
        let mut all = vec!["-D", &data, "-w", "-t", PG_CTL_TIMEOUT_SECS];
        all.extend_from_slice(args);
        run(self.server_command(&self.bin_dir.join("pg_ctl"), &all), None)
    }

    /// A command for a server binary, run as `postgres` through `runuser` when we are root.
    fn server_command(&self, program: &Path, args: &[&str]) -> Command {
        let mut cmd = match self.run_as {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("LC_ALL", "C")
            .env_remove("PGDATA");
        cmd
    }

    fn psql_via(&self, conn: &[&str], db: &str, sql: &str) -> Result<String, DevDbError> {
        let mut cmd = Command::new(self.bin_dir.join("psql"));
        cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-q", "-A", "-t"])
            .args(conn)
            .args(["-U", "postgres", "-d", db, "-f", "-"])
            .env("LC_ALL", "C")
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGAPPNAME", "fieldsync-devdb")
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS")
            .env_remove("PGSSLMODE");
        match self.default_password("postgres") {
            Some(pw) => cmd.env("PGPASSWORD", pw),
            None => cmd.env_remove("PGPASSWORD"),
        };
        run(cmd, Some(sql))
    }

    fn log_since(&self, from: u64) -> String {
        match fs::read(&self.log_file) {
            Ok(bytes) => {
                let from = usize::try_from(from).unwrap_or(0).min(bytes.len());
                String::from_utf8_lossy(&bytes[from..]).into_owned()
            }
            Err(_) => self.log_tail(40),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running || self.data_dir.join("postmaster.pid").exists() {
            if let Err(e) = self.pg_ctl(&["stop", "-m", "immediate"]) {
                tracing::warn!(error = %e, dir = %self.dir.path().display(), "cannot stop dev cluster");
                kill_postmaster(&self.data_dir);
            }
        }
        // `dir` (a TempDir) removes the directory when the fields drop, ignoring errors.
    }
}

/// Last resort when `pg_ctl stop` failed: SIGQUIT the postmaster named in `postmaster.pid`.
fn kill_postmaster(data_dir: &Path) {
    let pid = fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|t| {
            t.lines()
                .next()
                .and_then(|l| l.trim().parse::<libc::pid_t>().ok())
        });
    if let Some(pid) = pid.filter(|p| *p > 0) {
        // SAFETY: kill has no memory-safety preconditions; a stale pid at worst gets an error back.
        unsafe {
            libc::kill(pid, libc::SIGQUIT);
        }
    }
}

/// Runs `cmd` to completion, feeding `stdin` if given; returns stdout or an error carrying stderr.
fn run(mut cmd: Command, stdin: Option<&str>) -> Result<String, DevDbError> {
    // Program and arguments only: the environment may hold PGPASSWORD.
    let shown = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(io_err(format!("cannot run {shown}")))?;
    // Write stdin on another thread so a chatty child cannot deadlock us on a full stdout pipe.
    let writer = match (stdin, child.stdin.take()) {
        (Some(text), Some(mut pipe)) => {
            let text = text.to_owned();
            Some(std::thread::spawn(move || pipe.write_all(text.as_bytes())))
        }
        _ => None,
    };
    let out = child
        .wait_with_output()
        .map_err(io_err(format!("cannot wait for {shown}")))?;
    let write_result = writer.map(|w| w.join());
    if !out.status.success() {
        return Err(DevDbError::Command {
            command: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    if let Some(Ok(Err(e))) = write_result {
        return Err(DevDbError::Io {
            what: format!("cannot write the script to {shown}"),
            source: e,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn find_bin_dir() -> Result<PathBuf, DevDbError> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let mut looked = Vec::new();
    if let Some(dir) = std::env::var_os("FIELDSYNC_PG_BIN") {
        let dir = PathBuf::from(dir);
        if has_initdb(&dir) {
            return Ok(dir);
        }
        looked.push(format!("FIELDSYNC_PG_BIN={}", dir.display()));
    }
    let preferred = PathBuf::from("/usr/lib/postgresql/15/bin");
    if has_initdb(&preferred) {
        return Ok(preferred);
    }
    looked.push("/usr/lib/postgresql/*/bin".to_owned());
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_initdb(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&dir) {
            return Ok(dir);
        }
        looked.push(format!("pg_config --bindir ({})", dir.display()));
    } else {
        looked.push("pg_config --bindir (not found)".to_owned());
    }
    Err(DevDbError::NoBinaries {
        looked: looked.join(", "),
    })
}

fn postgres_user() -> Result<(libc::uid_t, libc::gid_t), DevDbError> {
    // SAFETY: the name is a valid NUL-terminated string; getpwnam returns null or a pointer to a static
    // record we read immediately (the process is not expected to call getpw* concurrently with this).
    unsafe {
        let pw = libc::getpwnam(c"postgres".as_ptr());
        if pw.is_null() {
            return Err(DevDbError::NoPostgresUser);
        }
        Ok(((*pw).pw_uid, (*pw).pw_gid))
    }
}

fn chown(path: &Path, uid: libc::uid_t, gid: libc::gid_t) -> Result<(), DevDbError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(io_err(format!("cannot chown {} to postgres", path.display())))
}

fn append(path: &Path, text: &str) -> Result<(), DevDbError> {
    let mut file = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_err(format!("cannot open {}", path.display())))?;
    file.write_all(text.as_bytes())
        .map_err(io_err(format!("cannot write {}", path.display())))
}

fn free_port() -> Result<u16, DevDbError> {
    let listener = std::net::TcpListener::bind((HOST, 0)).map_err(io_err("cannot bind 127.0.0.1:0"))?;
    let addr = listener
        .local_addr()
        .map_err(io_err("cannot read the bound address"))?;
    Ok(addr.port())
}

fn log_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn address_in_use(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("could not create any TCP/IP sockets")
}

/// `name = 'value'` for postgresql.conf; a value already in single quotes is kept as written.
fn conf_line(name: &str, value: &str) -> String {
    if value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'') {
        format!("{name} = {value}\n")
    } else {
        format!("{name} = '{}'\n", value.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_values_are_quoted_once() {
        assert_eq!(conf_line("wal_level", "logical"), "wal_level = 'logical'\n");
        assert_eq!(conf_line("x", "'already'"), "x = 'already'\n");
        assert_eq!(conf_line("x", "it's"), "x = 'it''s'\n");
    }
}
