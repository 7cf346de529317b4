//! `fieldsync deliveries` and `fieldsync queue`: through the running daemon's HTTP port when it
//! holds the store, else on the store directly.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use super::{load, ConfigArg};
use crate::config::Config;
use crate::http::deliveries::RequeueRequest;
use crate::http::RecordSummary;
use crate::store::record::EventId;
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
pub(super) fn deliveries(arg: ConfigArg, what: Deliveries) -> ExitCode {
    let config = match load(&arg) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let query = |pairs: &[(&str, &Option<String>)]| {
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
    let pause_body = |integration: &String| {
        let req = crate::http::deliveries::PauseRequest {
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
    let since = crate::dispatch::now_rfc3339();
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
    match crate::http::request_local(config.http.listen, method, path, body, Duration::from_secs(10)) {
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
