//! Operator actions and reads on deliveries, in one place: status, what waits, dead letters, the
//! delivery log, requeue, pause and resume. The HTTP endpoints (`crate::serve::http::deliveries`), the
//! SQL admin port (`crate::serve::admin`) and the command line (`crate::cli`, online through the HTTP
//! endpoints, offline on the store) all call these.
//!
//! Online, actions go through the running dispatcher, which owns the queues in memory; offline
//! (no daemon holds the store), they are written to the store and the next start acts on them.

use tokio::sync::mpsc;

use crate::config::Role;
use crate::dispatch::{self, Command, DispatchStatus, Unanswered};
use crate::store::audit::AuditEntry;
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

/// Who takes an operator action, as the audit trail records it.
#[derive(Clone, Debug)]
pub struct Actor {
    /// The admin user, the HTTP token's name, or `cli`.
    pub name: String,
    pub role: Role,
    /// `admin`, `http` or `cli`.
    pub via: &'static str,
    /// The client's address.
    pub from: Option<String>,
}

impl Actor {
    /// The command line acting on the store of a stopped daemon (whoever can read its directory).
    pub fn cli() -> Actor {
        Actor {
            name: "cli".to_owned(),
            role: Role::Operate,
            via: "cli",
            from: None,
        }
    }
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
        actor: &Actor,
        integration: Option<String>,
        events: Option<Vec<EventId>>,
    ) -> Result<Requeued, OpsError> {
        let named: Vec<String> = events.iter().flatten().map(ToString::to_string).collect();
        let result = self.requeue_unrecorded(integration.clone(), events).await;
        let outcome = match &result {
            Ok(r) => format!("ok: {} requeued", r.requeued),
            Err(e) => format!("failed: {e}"),
        };
        self.record(actor, "requeue", integration, named, outcome);
        result
    }

    async fn requeue_unrecorded(
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
    pub async fn pause(&self, actor: &Actor, integration: &str, pause: bool) -> Result<bool, OpsError> {
        let result = self.pause_unrecorded(integration, pause).await;
        let outcome = match (&result, pause) {
            (Ok(true), true) => "ok: paused".to_owned(),
            (Ok(false), true) => "ok: already paused".to_owned(),
            (Ok(true), false) => "ok: resumed".to_owned(),
            (Ok(false), false) => "ok: not paused".to_owned(),
            (Err(e), _) => format!("failed: {e}"),
        };
        let action = if pause { "pause" } else { "resume" };
        self.record(actor, action, Some(integration.to_owned()), Vec::new(), outcome);
        result
    }

    /// Seals everything the store holds under the current key (see [`Store::reencrypt`]), on a
    /// blocking thread; capture and delivery go on meanwhile.
    pub async fn reencrypt(&self, actor: &Actor) -> Result<crate::store::Reencrypted, OpsError> {
        let store = self.store.clone();
        let result = tokio::task::spawn_blocking(move || store.reencrypt())
            .await
            .unwrap_or_else(|join| {
                Err(StoreError::Corrupt {
                    what: "re-encryption".to_owned(),
                    reason: format!("the task failed: {join}"),
                })
            })
            .map_err(OpsError::from);
        let outcome = match &result {
            Ok(r) => match r.key {
                Some(k) => format!("ok: {} values sealed under key {k}", r.rewritten),
                None => format!("ok: {} values stored in clear (no encryption key)", r.rewritten),
            },
            Err(e) => format!("failed: {e}"),
        };
        self.record(actor, "reencrypt", None, Vec::new(), outcome);
        result
    }

    /// Records an action refused for lack of a role.
    pub fn refused(&self, actor: &Actor, action: &str, integration: Option<String>, why: &str) {
        self.record(actor, action, integration, Vec::new(), format!("denied: {why}"));
    }

    /// The newest `last` entries of the audit trail, oldest first.
    pub fn audit(&self, last: usize) -> Result<Vec<AuditEntry>, OpsError> {
        Ok(self.store.audit()?.newest(last.min(MAX_LOG_READ))?)
    }

    /// Writes an audit entry; an entry that cannot be written is logged (the action is done).
    fn record(
        &self,
        actor: &Actor,
        action: &str,
        integration: Option<String>,
        events: Vec<String>,
        result: String,
    ) {
        let entry = AuditEntry {
            at: now_rfc3339(),
            actor: actor.name.clone(),
            role: actor.role.as_str().to_owned(),
            via: actor.via.to_owned(),
            from: actor.from.clone(),
            action: action.to_owned(),
            integration,
            events,
            result,
        };
        if let Err(e) = self.store.audit().and_then(|trail| trail.record(&entry)) {
            tracing::error!(action, actor = %actor.name, "the audit trail cannot record an operator action: {e}");
        }
    }

    async fn pause_unrecorded(&self, integration: &str, pause: bool) -> Result<bool, OpsError> {
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
