//! The `fieldsync` command line. Library errors are mapped to exit codes here:
//! 0 success, 1 runtime failure, 2 bad configuration, 3 database prerequisites not met.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fieldsync::app::{AppError, Daemon};
use fieldsync::config::Config;
use fieldsync::http::deliveries::RequeueRequest;
use fieldsync::http::RecordSummary;
use fieldsync::store::record::EventId;
use fieldsync::store::{Store, StoreError};

/// glibc's allocator returns and refaults the memory sled's page churn frees and takes again;
/// mimalloc keeps capture's allocation cost flat (see bench/capture.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "fieldsync",
    version,
    about = "Change capture from PostgreSQL to wedding CRMs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// TOML configuration file; without it, defaults plus FIELDSYNC__SECTION__KEY variables.
    #[arg(long, short, env = "FIELDSYNC_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Capture changes until SIGINT or SIGTERM.
    Run(ConfigArg),
    /// Check the configuration and the database's prerequisites, with the fix for each failure.
    Check(ConfigArg),
    /// Print the effective configuration (passwords redacted).
    Config(ConfigArg),
    /// The whole capture path on a throwaway PostgreSQL: scripted wedding edits, then a live view.
    Demo {
        /// Stop after the scripted edits instead of watching for your own.
        #[arg(long)]
        exit_after_script: bool,
    },
    /// Show what the queue holds: counts, durable LSN, the newest records.
    Queue {
        #[command(flatten)]
        config: ConfigArg,
        /// How many of the newest records to list.
        #[arg(long, default_value_t = 10)]
        last: usize,
    },
    /// Serve the CRM API sandboxes (Tave, Google Calendar, Stripe, Light Blue, a Zapier catch hook).
    Sandbox {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8099")]
        listen: std::net::SocketAddr,
        /// JSON file with the credentials the sandboxes accept (default: the documented test values).
        #[arg(long)]
        accounts: Option<PathBuf>,
    },
    /// Integration secrets: make a key, encrypt a secret for an integration's config.
    Secret {
        #[command(subcommand)]
        what: SecretCommand,
    },
    /// Deliveries to integrations: status, dead letters, the attempt log, requeue.
    Deliveries {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        what: Deliveries,
    },
}

#[derive(Subcommand)]
enum Deliveries {
    /// Per integration: queued, in flight, delivered, retries, dead letters, breaker.
    Status,
    /// List dead letters.
    Dead {
        #[arg(long)]
        integration: Option<String>,
    },
    /// The newest delivery attempts.
    Log {
        #[arg(long)]
        integration: Option<String>,
        #[arg(long)]
        event: Option<String>,
        #[arg(long, default_value_t = 50)]
        last: usize,
    },
    /// Deliver dead letters again: all, those of one integration, or these event ids.
    Requeue {
        #[arg(long)]
        integration: Option<String>,
        event_ids: Vec<String>,
    },
    /// Stop sending to an integration (its deliveries wait, in order) until `resume`.
    Pause { integration: String },
    /// Send to a paused integration again.
    Resume { integration: String },
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Print a new random key (32 bytes, base64) for [dispatch] secrets_key_file.
    Keygen,
    /// Read a secret from standard input and print {"encrypted": "fsenc1:…"} for an integration's config.
    Encrypt {
        /// The key file ([dispatch] secrets_key_file).
        #[arg(long)]
        key_file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // the store and anything else the daemon writes hold personal data: owner only
    // SAFETY: umask(2) only sets this process's file mode creation mask.
    unsafe { libc::umask(0o077) };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Run(c) => run(c).await,
            Command::Check(c) => check(c).await,
            Command::Config(c) => match load(&c) {
                Ok(config) => {
                    print!("{}", config.redacted());
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            },
            Command::Queue { config, last } => queue_view(config, last).await,
            Command::Deliveries { config, what } => deliveries(config, what),
            Command::Sandbox { listen, accounts } => sandbox(listen, accounts.as_deref()).await,
            Command::Secret { what } => secret(what),
            Command::Demo { exit_after_script } => {
                match fieldsync::demo::run(exit_after_script, shutdown_signal()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::from(1)
                    }
                }
            }
        }
    })
}

async fn sandbox(listen: std::net::SocketAddr, accounts: Option<&Path>) -> ExitCode {
    let accounts = match accounts {
        None => fieldsync::sandbox::Accounts::default(),
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
        {
            Ok(a) => a,
            Err(e) => {
                eprintln!("error: --accounts {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    let running = match fieldsync::sandbox::spawn(listener, accounts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    println!("sandboxes listening on {}: /tave/api/v2, /tave/webservice/create-lead/{{studioId}}, /google/calendar/v3, /google/oauth2/token, /stripe/v1, /lightblue/api.php, /zapier/hooks/catch/{{id}}/{{key}}/; state at /_sandbox/state", running.url());
    shutdown_signal().await;
    ExitCode::SUCCESS
}

fn secret(what: SecretCommand) -> ExitCode {
    use fieldsync::credentials;
    match what {
        SecretCommand::Keygen => {
            println!("{}", credentials::generate_key());
            ExitCode::SUCCESS
        }
        SecretCommand::Encrypt { key_file } => {
            let key = match std::fs::read_to_string(&key_file)
                .map_err(|e| e.to_string())
                .and_then(|t| credentials::parse_key(t.trim()))
            {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("error: --key-file {}: {e}", key_file.display());
                    return ExitCode::from(2);
                }
            };
            let mut plain = String::new();
            if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut plain) {
                eprintln!("error: cannot read the secret from standard input: {e}");
                return ExitCode::from(1);
            }
            let plain = plain.trim_end_matches(['\n', '\r']);
            if plain.is_empty() {
                eprintln!("error: standard input is empty: pipe the secret in (e.g. printf %s \"$KEY\" | fieldsync secret encrypt --key-file …)");
                return ExitCode::from(2);
            }
            println!(
                "{}",
                serde_json::json!({ "encrypted": credentials::encrypt(&key, plain) })
            );
            ExitCode::SUCCESS
        }
    }
}

fn load(arg: &ConfigArg) -> Result<Config, ExitCode> {
    Config::load_or_default(arg.config.as_deref()).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

async fn run(arg: ConfigArg) -> ExitCode {
    let config = match load(&arg) {
        Ok(c) => c,
        Err(code) => return code,
    };
    fieldsync::telemetry::init_logging(&config.log);
    // before anything opens descriptors: the HTTP connection cap is derived from this limit
    fieldsync::http::raise_nofile_limit();
    let daemon = match Daemon::start(config).await {
        Ok(d) => d,
        Err(e) => return report(e),
    };
    match daemon.run_until(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(e),
    }
}

fn report(e: AppError) -> ExitCode {
    eprintln!("error: {e}");
    tracing::error!(error = %e, "fieldsync stopped");
    match e {
        AppError::Preflight(_) => ExitCode::from(3),
        _ => ExitCode::from(1),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn check(arg: ConfigArg) -> ExitCode {
    let config = match load(&arg) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let report = fieldsync::check::run(&config).await;
    print!("{report}");
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

async fn queue_view(arg: ConfigArg, last: usize) -> ExitCode {
    let config = match load(&arg) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match Store::open(&config.queue.path, config.queue.cache_capacity_bytes) {
        Ok(queue) => match print_queue(&queue, last) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        // The daemon holds the queue: ask it over HTTP instead.
        Err(StoreError::Locked { .. }) => ask_daemon(&config, "GET", &format!("/queue?last={last}"), None),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// `fieldsync deliveries`: asks the running daemon; without one, reads (and, for requeue, marks)
/// the delivery store directly, and the next start sends what was requeued.
fn deliveries(arg: ConfigArg, what: Deliveries) -> ExitCode {
    let config = match load(&arg) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let query = |pairs: &[(&str, &Option<String>)]| {
        let q: Vec<String> = pairs
            .iter()
            .filter_map(|(k, v)| {
                v.as_ref()
                    .map(|v| format!("{k}={}", fieldsync::config::percent_encode(v)))
            })
            .collect();
        if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        }
    };
    let pause_body = |integration: &String| {
        let req = fieldsync::http::deliveries::PauseRequest {
            integration_id: integration.clone(),
        };
        Some(serde_json::to_string(&req).expect("serializes"))
    };
    let (method, path, body) = match &what {
        Deliveries::Pause { integration } => {
            ("POST", "/deliveries/pause".to_owned(), pause_body(integration))
        }
        Deliveries::Resume { integration } => {
            ("POST", "/deliveries/resume".to_owned(), pause_body(integration))
        }
        Deliveries::Status => ("GET", "/deliveries".to_owned(), None),
        Deliveries::Dead { integration } => (
            "GET",
            format!("/deliveries/dead{}", query(&[("integration", integration)])),
            None,
        ),
        Deliveries::Log {
            integration,
            event,
            last,
        } => (
            "GET",
            format!(
                "/deliveries/log{}",
                query(&[
                    ("integration", integration),
                    ("event", event),
                    ("last", &Some(last.to_string()))
                ])
            ),
            None,
        ),
        Deliveries::Requeue {
            integration,
            event_ids,
        } => {
            let ids: Result<Vec<EventId>, _> = event_ids.iter().map(|s| s.parse()).collect();
            let ids = match ids {
                Ok(ids) => ids,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let req = RequeueRequest {
                integration_id: integration.clone(),
                event_ids: (!ids.is_empty()).then_some(ids),
            };
            (
                "POST",
                "/deliveries/requeue".to_owned(),
                Some(serde_json::to_string(&req).expect("serializes")),
            )
        }
    };
    match Store::open(&config.queue.path, config.queue.cache_capacity_bytes) {
        Ok(queue) => match offline_deliveries(&queue, what) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        Err(StoreError::Locked { .. }) => ask_daemon(&config, method, &path, body.as_deref()),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn offline_deliveries(queue: &Store, what: Deliveries) -> Result<String, StoreError> {
    let store = queue.deliveries()?;
    let json = |v: serde_json::Value| serde_json::to_string_pretty(&v).expect("serializes");
    Ok(match what {
        Deliveries::Status => {
            "the daemon is not running: no delivery status (dead letters and the log are readable)".to_owned()
        }
        Deliveries::Dead { integration } => json(serde_json::json!(store
            .dead_letters()?
            .into_iter()
            .filter(|d| integration.as_ref().map_or(true, |i| *i == d.integration_id))
            .collect::<Vec<_>>())),
        Deliveries::Log {
            integration,
            event,
            last,
        } => {
            let event = event.and_then(|e| e.parse().ok());
            json(serde_json::json!(store.read_log(
                integration.as_deref(),
                event,
                last
            )?))
        }
        Deliveries::Requeue {
            integration,
            event_ids,
        } => {
            let events: Option<Vec<EventId>> =
                (!event_ids.is_empty()).then(|| event_ids.iter().filter_map(|e| e.parse().ok()).collect());
            let mut n = 0;
            for mut d in store.dead_letters()? {
                if d.requeue_matches(integration.as_deref(), events.as_deref()) {
                    d.requeued = true;
                    store.put_dead(&d)?;
                    n += 1;
                }
            }
            queue.flush_blocking()?;
            format!("{{\"requeued\": {n}, \"note\": \"sent when the daemon next starts\"}}")
        }
        Deliveries::Pause { integration } => set_paused(queue, &integration, true)?,
        Deliveries::Resume { integration } => set_paused(queue, &integration, false)?,
    })
}

/// Pauses or resumes an integration in the store; the daemon reads it when it starts.
fn set_paused(queue: &Store, integration: &str, pause: bool) -> Result<String, StoreError> {
    if !queue.context()?.integrations()?.contains_key(integration) {
        return Ok(format!(
            "no integration with id {integration:?} (as of the daemon's last run)"
        ));
    }
    let store = queue.deliveries()?;
    let changed = store.paused(integration)?.is_some() != pause;
    let since = fieldsync::dispatch::now_rfc3339();
    if changed {
        store.set_paused(integration, pause.then_some(since.as_str()))?;
        queue.flush_blocking()?;
    }
    Ok(serde_json::json!({"paused": pause, "changed": changed}).to_string())
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn print_queue(queue: &Store, last: usize) -> Result<(), StoreError> {
    let s = queue.summary()?;
    println!("records:       {}", s.records);
    println!("transactions:  {}", s.transactions);
    println!(
        "durable LSN:   {} (commit {})",
        s.durable.end_lsn, s.durable.commit_lsn
    );
    println!("confirmed LSN: {}", s.confirmed);
    let records = queue.last_records(last)?;
    if !records.is_empty() {
        println!("newest records:");
        for r in &records {
            let r = RecordSummary::from(r);
            println!(
                "  {}  {:<8} {:<40} columns: {}",
                r.id,
                format!("{:?}", r.op).to_lowercase(),
                r.table,
                r.columns.join(",")
            );
        }
    }
    Ok(())
}

/// Asks the running daemon for its queue view.
/// The queue is held by the running daemon: asks it over HTTP and prints its answer.
fn ask_daemon(config: &Config, method: &str, path: &str, body: Option<&str>) -> ExitCode {
    match fieldsync::http::request_local(config.http.listen, method, path, body, Duration::from_secs(10)) {
        Ok((200, body)) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("error: the daemon answered {status}: {}", body.trim());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!(
                "error: the queue at {} is in use and the daemon at http://{} did not answer: {e}",
                display(&config.queue.path),
                config.http.listen
            );
            ExitCode::from(1)
        }
    }
}
