//! The `fieldsync` command line. Library errors are mapped to exit codes here:
//! 0 success, 1 runtime failure, 2 bad configuration, 3 database prerequisites not met.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fieldsync::app::{AppError, Daemon};
use fieldsync::config::Config;
use fieldsync::http::RecordSummary;
use fieldsync::queue::{Queue, QueueError};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    match Queue::open(&config.queue.path, config.queue.cache_capacity_bytes) {
        Ok(queue) => match print_queue(&queue, last) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        // The daemon holds the queue: ask it over HTTP instead.
        Err(QueueError::Locked { .. }) => match fetch_from_daemon(config.http.listen, last) {
            Ok(body) => {
                println!("{body}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "error: the queue at {} is in use and the daemon at http://{} did not answer: {e}",
                    display(&config.queue.path),
                    config.http.listen
                );
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn print_queue(queue: &Queue, last: usize) -> Result<(), QueueError> {
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
fn fetch_from_daemon(addr: std::net::SocketAddr, last: usize) -> std::io::Result<String> {
    match fieldsync::http::get_local(
        addr,
        &format!("/queue?last={last}"),
        std::time::Duration::from_secs(10),
    )? {
        (200, body) => Ok(body),
        (status, _) => Err(std::io::Error::other(format!("HTTP {status}"))),
    }
}
