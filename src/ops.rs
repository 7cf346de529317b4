//! Operator actions and reads on deliveries, in one place: status, what waits, dead letters, the
//! delivery log, requeue, pause and resume. The HTTP endpoints (`crate::serve::http::deliveries`), the
//! SQL admin port (`crate::serve::admin`) and the command line (`crate::cli`, online through the HTTP
//! endpoints, offline on the store) all call these.
//!
//! Online, actions go through the running dispatcher, which owns the queues in memory; offline
//! (no daemon holds the store), they are written to the store and the next start acts on them.

use tokio::sync::mpsc;

use crate::dispatch::{self, Command, DispatchStatus, Unanswered};
use crate::store::deliveries::{now_rfc3339, DeadLetter, LogEntry};
use crate::store::record::EventId;
use crate::store::{Store, StoreError};

pub use crate::dispatch::WaitingDelivery;

/// The most log entries one read returns.
pub const MAX_LOG_READ: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("dispatch is disabled ([dispatch] enabled = false)")]
    Disabled,
    #[error("the dispatcher has stopped")]
    Stopped,
    #[error("the daemon is not running: no delivery status (dead letters and the log are readable)")]
    NotRunning,
    #[error("no integration with id {0:?}")]
    UnknownIntegration(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Unanswered> for OpsError {
    fn from(e: Unanswered) -> OpsError {
        match e {
            Unanswered::Disabled => OpsError::Disabled,
            Unanswered::Stopped => OpsError::Stopped,
        }
    }
}

/// Which dead letters or log entries: all, or those of one integration and/or one event.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub integration: Option<String>,
    pub event: Option<EventId>,
}

impl Filter {
    fn admits(&self, integration: &str, event: EventId) -> bool {
        self.integration.as_deref().map_or(true, |i| i == integration)
            && self.event.map_or(true, |e| e == event)
    }
}

/// What a requeue did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Requeued {
    pub requeued: usize,
    /// Offline: when the requeued dead letters will be sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
}

#[derive(Clone)]
enum Daemon {
    /// In the daemon: its dispatcher's channel (`None`: dispatch is disabled).
    Running(Option<mpsc::Sender<Command>>),
    /// No daemon holds the store.
    Offline,
}

/// Operator actions on one store.
#[derive(Clone)]
pub struct Ops {
    store: Store,
    daemon: Daemon,
}

impl Ops {
    /// Inside the running daemon.
    pub fn online(store: Store, dispatcher: Option<mpsc::Sender<Command>>) -> Ops {
        Ops {
            store,
            daemon: Daemon::Running(dispatcher),
        }
    }

    /// On a store no daemon holds.
    pub fn offline(store: Store) -> Ops {
        Ops {
            store,
            daemon: Daemon::Offline,
        }
    }

    async fn ask<T>(
        &self,
        cmd: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> Command,
    ) -> Result<T, OpsError> {
        match &self.daemon {
            Daemon::Running(tx) => Ok(dispatch::ask(tx.as_ref(), cmd).await?),
            Daemon::Offline => Err(OpsError::NotRunning),
        }
    }

    /// Whether the daemon runs with dispatch enabled.
    pub fn dispatching(&self) -> bool {
        matches!(self.daemon, Daemon::Running(Some(_)))
    }

    /// Per integration: queued, in flight, delivered, retries, dead letters, breaker.
    pub async fn status(&self) -> Result<DispatchStatus, OpsError> {
        self.ask(Command::Status).await
    }

    /// The deliveries the dispatcher holds, per integration and wedding in delivery order.
    pub async fn waiting(&self) -> Result<Vec<WaitingDelivery>, OpsError> {
        self.ask(Command::Waiting).await
    }

    pub fn dead_letters(&self, filter: &Filter) -> Result<Vec<DeadLetter>, OpsError> {
        let mut list = self.store.deliveries()?.dead_letters()?;
        list.retain(|d| filter.admits(&d.integration_id, d.event_id));
        // the copy kept for a requeue holds field values: not part of the listing
        for d in &mut list {
            d.envelope = None;
        }
        Ok(list)
    }

    /// The newest `last` log entries that match (at most [`MAX_LOG_READ`]), oldest first.
    pub fn log(&self, filter: &Filter, last: usize) -> Result<Vec<LogEntry>, OpsError> {
        Ok(self.store.deliveries()?.read_log(
            filter.integration.as_deref(),
            filter.event,
            last.min(MAX_LOG_READ),
        )?)
    }

    /// Delivers dead letters again: all, those of one integration, or these event ids (of that
    /// integration when one is named). Naming an integration that nothing knows is an error rather
    /// than a count of 0.
    pub async fn requeue(
        &self,
        integration: Option<String>,
        events: Option<Vec<EventId>>,
    ) -> Result<Requeued, OpsError> {
        let answer = match self.daemon {
            Daemon::Running(_) => Requeued {
                requeued: self
                    .ask(|reply| Command::Requeue {
                        integration: integration.clone(),
                        events,
                        reply,
                    })
                    .await?,
                note: None,
            },
            Daemon::Offline => {
                let store = self.store.deliveries()?;
                let n = store
                    .requeue(integration.as_deref(), events.as_deref(), |_| Ok(true))?
                    .len();
                // the marks and their log lines, durably
                store.persist(None)?;
                Requeued {
                    requeued: n,
                    note: Some("sent when the daemon next starts"),
                }
            }
        };
        if let Some(id) = integration.filter(|_| answer.requeued == 0) {
            if !self.known_integration(&id).await? {
                return Err(OpsError::UnknownIntegration(id));
            }
        }
        Ok(answer)
    }

    /// Pauses (`true`) or resumes an integration: while paused its deliveries wait, in order, and
    /// nothing is sent. Answers whether that changed anything.
    pub async fn pause(&self, integration: &str, pause: bool) -> Result<bool, OpsError> {
        if let Daemon::Running(_) = self.daemon {
            return self
                .ask(|reply| Command::Pause {
                    integration: integration.to_owned(),
                    pause,
                    reply,
                })
                .await?
                .ok_or_else(|| OpsError::UnknownIntegration(integration.to_owned()));
        }
        if !self.store.context()?.integrations()?.contains_key(integration) {
            return Err(OpsError::UnknownIntegration(integration.to_owned()));
        }
        let store = self.store.deliveries()?;
        let changed = store.paused(integration)?.is_some() != pause;
        if changed {
            store.set_paused(integration, pause.then(now_rfc3339).as_deref())?;
            store.persist(None)?;
        }
        Ok(changed)
    }

    /// Configured, known to the dispatcher, or holding dead letters.
    async fn known_integration(&self, id: &str) -> Result<bool, OpsError> {
        if self.store.context()?.integrations()?.contains_key(id) {
            return Ok(true);
        }
        if self.dispatching() && self.status().await?.integrations.iter().any(|i| i.id == id) {
            return Ok(true);
        }
        Ok(self
            .store
            .deliveries()?
            .dead_letters()?
            .iter()
            .any(|d| d.integration_id == id))
    }
}
