//! The `fieldsync` command line: parsing, and the mapping of library errors to exit codes
//! (0 success, 1 runtime failure, 2 bad configuration, 3 database prerequisites not met).
//! `deliveries.rs`: the `deliveries` and `queue` commands, online (through the running daemon's
//! HTTP port) or offline (on the store). `secret.rs`: keys and encrypted secrets. `token.rs`:
//! stream tokens.

use std::path::PathBuf;
use std::process::ExitCode;

mod deliveries;
mod secret;
mod token;

use clap::{Parser, Subcommand};

use crate::app::{AppError, Daemon, Ended};
use crate::config::Config;
use deliveries::{audit, deliveries, queue_view, reencrypt, Deliveries};
use secret::{secret, SecretCommand};
use token::{token, TokenArgs};

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
    /// Show what the queue holds: counts, durable LSN, the newest records.
    Queue {
        #[command(flatten)]
        config: ConfigArg,
        /// How many of the newest records to list.
        #[arg(long, default_value_t = 10)]
        last: usize,
    },
    /// Integration secrets: make a key, encrypt a secret for an integration's config.
    Secret {
        #[command(subcommand)]
        what: SecretCommand,
    },
    /// The audit trail: the newest operator actions (requeue, pause, resume, and those refused),
    /// who took them, from where, and the result.
    Audit {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, default_value_t = 50)]
        last: usize,
    },
    /// Seal everything the queue holds under [queue] encryption_key_file (after a key rotation,
    /// or once encryption is turned on); then the old keys may leave the configuration.
    Reencrypt(ConfigArg),
    /// Print a signed, expiring token that opens one organisation's (or one wedding's) live
    /// stream, for an app's backend to hand to a browser.
    Token(TokenArgs),
    /// Deliveries to integrations: status, dead letters, the attempt log, requeue.
    Deliveries {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        what: Deliveries,
    },
}

/// Runs a command on a multi-threaded runtime, under the owner-only umask: the store and
/// anything else the daemon writes hold personal data. Also the development binary's entry.
pub fn block_on(command: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    // SAFETY: umask(2) only sets this process's file mode creation mask.
    unsafe { libc::umask(0o077) };
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(command),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}

/// Parses the arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    block_on(async move {
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
            Command::Deliveries { config, what } => deliveries(config, what).await,
            Command::Secret { what } => secret(what),
            Command::Token(args) => token(args),
            Command::Audit { config, last } => audit(config, last).await,
            Command::Reencrypt(config) => reencrypt(config).await,
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
    crate::telemetry::logs::init_logging(&config.log);
    // before anything opens descriptors: the HTTP connection cap is derived from this limit
    crate::serve::http::raise_nofile_limit();
    let daemon = match Daemon::start(config).await {
        Ok(d) => d,
        Err(e) => return report(e),
    };
    match daemon.run_until(shutdown_signal()).await {
        Ok(Ended::Stopped) => ExitCode::SUCCESS,
        Ok(Ended::ReopenQueue) => reexec(),
        Err(e) => report(e),
    }
}

/// Runs this command again in this process (same pid, same arguments): the queue is opened afresh
/// after a write failure (see `crate::app`). Returns only when that fails.
fn reexec() -> ExitCode {
    use std::os::unix::process::CommandExt;
    tracing::info!("executing fieldsync again in place to reopen the queue");
    let error = match std::env::current_exe() {
        Ok(exe) => std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .exec(),
        Err(e) => e,
    };
    report(AppError::Task(format!(
        "cannot execute fieldsync again to reopen the queue: {error}"
    )))
}

fn report(e: AppError) -> ExitCode {
    eprintln!("error: {e}");
    tracing::error!(error = %e, "fieldsync stopped");
    match e {
        AppError::Preflight(_) => ExitCode::from(3),
        // the configuration lacks a key the store needs
        AppError::Store(crate::store::StoreError::MissingKey { .. }) => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
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
    let report = crate::check::run(&config).await;
    print!("{report}");
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}
