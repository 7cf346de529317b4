//! `fieldsync-dev`: the development commands that are not part of the product, `sandbox` (the CRM
//! API sandboxes on one port) and `demo` (the whole path on a throwaway PostgreSQL).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use fieldsync_dev::sandbox::{self, Accounts};

#[derive(Parser)]
#[command(
    name = "fieldsync-dev",
    version,
    about = "fieldsync's development tools: the CRM API sandboxes and the demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole capture path on a throwaway PostgreSQL: scripted wedding edits, then a live view.
    Demo {
        /// Stop after the scripted edits instead of watching for your own.
        #[arg(long)]
        exit_after_script: bool,
    },
    /// Serve the CRM API sandboxes (Tave, Google Calendar, Stripe, Light Blue, a Zapier catch hook).
    Sandbox {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8099")]
        listen: SocketAddr,
        /// JSON file with the credentials the sandboxes accept (default: the documented test values).
        #[arg(long)]
        accounts: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // the demo's daemon writes a store as the product's would
    fieldsync::cli::block_on(async move {
        match cli.command {
            Command::Sandbox { listen, accounts } => serve_sandboxes(listen, accounts.as_deref()).await,
            Command::Demo { exit_after_script } => {
                match fieldsync_dev::demo::run(exit_after_script, fieldsync::cli::shutdown_signal()).await {
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

async fn serve_sandboxes(listen: SocketAddr, accounts: Option<&Path>) -> ExitCode {
    let accounts = match accounts {
        None => Accounts::default(),
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
    let running = match sandbox::spawn(listener, accounts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    println!("sandboxes listening on {}: /tave/api/v2, /tave/webservice/create-lead/{{studioId}}, /google/calendar/v3, /google/oauth2/token, /stripe/v1, /lightblue/api.php, /zapier/hooks/catch/{{id}}/{{key}}/; state at /_sandbox/state", running.url());
    fieldsync::cli::shutdown_signal().await;
    ExitCode::SUCCESS
}
