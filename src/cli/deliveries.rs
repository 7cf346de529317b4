//! `fieldsync deliveries` and `fieldsync queue`: through the running daemon's HTTP port when it
//! holds the store, else on the store directly.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use super::{load, ConfigArg};
use crate::config::Config;
use crate::ops::{Filter, Ops, OpsError};
use crate::serve::http::deliveries::{PauseRequest, RequeueRequest};
use crate::serve::http::RecordSummary;
use crate::store::record::{EventId, ParseEventIdError};
use crate::store::{Store, StoreError};

#[derive(Subcommand)]
pub(super) enum Deliveries {
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

pub(super) async fn queue_view(arg: ConfigArg, last: usize) -> ExitCode {
    let config = match load(&arg) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match crate::app::open_store(&config.queue) {
        Ok(queue) => match print_queue(&queue, last, &config.queue) {
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

/// `fieldsync deliveries`: asks the running daemon over HTTP; without one, acts on the store
/// through [`crate::ops`] (reads, and for requeue, pause and resume, writes that the next start
/// acts on).
pub(super) async fn deliveries(arg: ConfigArg, what: Deliveries) -> ExitCode {
    match Action::parse(what) {
        Ok(action) => act(arg, action).await,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `fieldsync reencrypt`: seals what the store holds under the current key, in the daemon or on
/// the store.
pub(super) async fn reencrypt(arg: ConfigArg) -> ExitCode {
    act(arg, Action::Reencrypt).await
}

/// `fieldsync audit`: the newest operator actions, from the daemon or the store.
pub(super) async fn audit(arg: ConfigArg, last: usize) -> ExitCode {
    act(arg, Action::Audit(last)).await
}

async fn act(arg: ConfigArg, action: Action) -> ExitCode {
    let config = match load(&arg) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match crate::app::open_store(&config.queue) {
        Ok(store) => match action.offline(Ops::offline(store)).await {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e @ OpsError::UnknownIntegration(_)) => {
                eprintln!("error: {e} (the store knows the integrations of the daemon's last run)");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        Err(StoreError::Locked { .. }) => {
            let (method, path, body) = action.request();
            ask_daemon(&config, method, &path, body.as_deref())
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// A `deliveries` command with its arguments checked.
enum Action {
    Status,
    Dead(Filter),
    Log(Filter, usize),
    Requeue(RequeueRequest),
    Pause(String, bool),
    Audit(usize),
    Reencrypt,
}

impl Action {
    fn parse(what: Deliveries) -> Result<Action, ParseEventIdError> {
        Ok(match what {
            Deliveries::Status => Action::Status,
            Deliveries::Dead { integration } => Action::Dead(Filter {
                integration,
                event: None,
            }),
            Deliveries::Log {
                integration,
                event,
                last,
            } => Action::Log(
                Filter {
                    integration,
                    event: event.as_deref().map(str::parse).transpose()?,
                },
                last,
            ),
            Deliveries::Requeue {
                integration,
                event_ids,
            } => {
                let ids = event_ids
                    .iter()
                    .map(|s| s.parse())
                    .collect::<Result<Vec<EventId>, _>>()?;
                Action::Requeue(RequeueRequest {
                    integration_id: integration,
                    event_ids: (!ids.is_empty()).then_some(ids),
                })
            }
            Deliveries::Pause { integration } => Action::Pause(integration, true),
            Deliveries::Resume { integration } => Action::Pause(integration, false),
        })
    }

    /// The running daemon's endpoint for it: method, path and body.
    fn request(self) -> (&'static str, String, Option<String>) {
        let query = |f: &Filter, last: Option<usize>| {
            let pairs = [
                ("integration", f.integration.clone()),
                ("event", f.event.map(|e| e.to_string())),
                ("last", last.map(|n| n.to_string())),
            ];
            let q: Vec<String> = pairs
                .iter()
                .filter_map(|(k, v)| {
                    v.as_ref()
                        .map(|v| format!("{k}={}", crate::config::percent_encode(v)))
                })
                .collect();
            if q.is_empty() {
                String::new()
            } else {
                format!("?{}", q.join("&"))
            }
        };
        match self {
            Action::Status => ("GET", "/deliveries".to_owned(), None),
            Action::Dead(f) => ("GET", format!("/deliveries/dead{}", query(&f, None)), None),
            Action::Log(f, last) => ("GET", format!("/deliveries/log{}", query(&f, Some(last))), None),
            Action::Audit(last) => ("GET", format!("/audit?last={last}"), None),
            Action::Reencrypt => ("POST", "/queue/reencrypt".to_owned(), None),
            Action::Requeue(req) => (
                "POST",
                "/deliveries/requeue".to_owned(),
                Some(serde_json::json!(req).to_string()),
            ),
            Action::Pause(integration, pause) => (
                "POST",
                format!("/deliveries/{}", if pause { "pause" } else { "resume" }),
                Some(
                    serde_json::json!(PauseRequest {
                        integration_id: integration
                    })
                    .to_string(),
                ),
            ),
        }
    }

    /// Runs it on a store no daemon holds; the answer as the daemon's endpoint would give it.
    async fn offline(self, ops: Ops) -> Result<String, OpsError> {
        let json = |v: serde_json::Value| serde_json::to_string_pretty(&v).expect("serializes");
        Ok(match self {
            Action::Status => json(serde_json::json!(ops.status().await?)),
            Action::Dead(f) => json(serde_json::json!(ops.dead_letters(&f)?)),
            Action::Log(f, last) => json(serde_json::json!(ops.log(&f, last)?)),
            Action::Audit(last) => json(serde_json::json!(ops.audit(last)?)),
            Action::Reencrypt => json(serde_json::json!(ops.reencrypt(&crate::ops::Actor::cli()).await?)),
            Action::Requeue(req) => json(serde_json::json!(
                ops.requeue(&crate::ops::Actor::cli(), req.integration_id, req.event_ids)
                    .await?
            )),
            Action::Pause(integration, pause) => {
                let changed = ops.pause(&crate::ops::Actor::cli(), &integration, pause).await?;
                json(serde_json::json!({"paused": pause, "changed": changed}))
            }
        })
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn print_queue(queue: &Store, last: usize, config: &crate::config::QueueConfig) -> Result<(), StoreError> {
    let s = queue.summary()?;
    println!("records:       {} held, {} removed", s.held, s.removed);
    if let Some(age) = s.oldest_record_age_seconds {
        println!("oldest record: {age:.1} s old");
    }
    println!("transactions:  {}", s.transactions);
    if let Ok(bytes) = crate::store::disk::dir_bytes(&config.path) {
        println!(
            "disk bytes:    {bytes} ({} of [queue] max_disk {})",
            crate::store::disk::show(bytes),
            crate::store::disk::show(config.max_disk_bytes)
        );
    }
    println!(
        "durable LSN:   {} (commit {})",
        s.durable.end_lsn, s.durable.commit_lsn
    );
    println!("confirmed LSN: {}", s.confirmed);
    let e = &s.encryption;
    let others: Vec<String> = e
        .held
        .keys
        .iter()
        .filter(|k| Some(**k) != e.key)
        .map(ToString::to_string)
        .collect();
    println!(
        "encryption:    {}{}{}",
        e.key
            .map_or_else(|| "off (values in clear)".to_owned(), |k| format!("on, key {k}")),
        if others.is_empty() {
            String::new()
        } else {
            format!("; values still under {}", others.join(", "))
        },
        if e.held.plain && e.key.is_some() {
            "; some values still in clear"
        } else {
            ""
        },
    );
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
    // the configuration's own token: an `operate` one to act, any to read
    let token = config
        .http
        .tokens
        .iter()
        .find(|t| method == "GET" || t.role == crate::config::Role::Operate)
        .map(|t| t.secret.expose().as_str());
    // with TLS on, the daemon's own certificate (the configuration names it) is the one trusted
    let tls = match &config.http.tls_files {
        Some((cert, _)) => match crate::pg::pinned_client_config(cert) {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("error: [http] tls_cert_file: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    match crate::serve::http::request_local(
        config.http.listen,
        method,
        path,
        body,
        token,
        tls,
        Duration::from_secs(10),
    ) {
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
