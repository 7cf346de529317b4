//! The dispatcher task: reads durable records, keeps the per-(integration, wedding) queues, starts
//! deliveries within the limits and records what each came to. One task owns all of this state;
//! deliveries run as their own tasks and report back over a channel.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use super::limits::{backoff, Breaker, TokenBucket};
use super::order::{DeadFields, Unflushed};
use super::scheduler::{Entry, Lanes, WaitState};
use super::Queued;
use crate::adapters::outcome::Outcome;
use crate::adapters::{rate_limit, Adapter, Payload};
use crate::config::{Backpressure, DispatchConfig};
use crate::credentials::Credentials;
use crate::events::context::Integration;
use crate::events::ContextStore;
use crate::lsn::Lsn;
use crate::store::deliveries::{
    now_rfc3339, DeadLetter, DeliveryStore, Disabled, Final, LogEntry, LogOutcome,
};
use crate::store::record::EventId;
use crate::store::{Store, StoreError};

/// Records read from the queue per step.
const READ_BATCH: usize = 512;
/// How often integration configs are re-read, the floor and final states saved (and flushed) and
/// the log pruned.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// How long a clean stop waits for deliveries in flight.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why a [`Command`] got no answer.
#[derive(Debug, thiserror::Error)]
pub enum Unanswered {
    #[error("dispatch is disabled ([dispatch] enabled = false)")]
    Disabled,
    #[error("the dispatcher has stopped")]
    Stopped,
}

/// Sends a command to the dispatcher (`None`: dispatch is disabled) and waits for its answer.
pub async fn ask<T>(
    dispatcher: Option<&mpsc::Sender<Command>>,
    cmd: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, Unanswered> {
    let tx = dispatcher.ok_or(Unanswered::Disabled)?;
    let (reply, rx) = oneshot::channel();
    tx.send(cmd(reply)).await.map_err(|_| Unanswered::Stopped)?;
    rx.await.map_err(|_| Unanswered::Stopped)
}

/// Requests from the HTTP endpoints, the admin port and the CLI.
pub enum Command {
    Status(oneshot::Sender<DispatchStatus>),
    /// Requeue dead letters (all, or of one integration, or these event ids); answers how many.
    Requeue {
        integration: Option<String>,
        events: Option<Vec<EventId>>,
        reply: oneshot::Sender<usize>,
    },
    /// Pause (true) or resume (false) an integration's deliveries; answers whether that changed
    /// anything (`None`: no such integration).
    Pause {
        integration: String,
        pause: bool,
        reply: oneshot::Sender<Option<bool>>,
    },
    /// The deliveries waiting in memory, per integration and wedding in delivery order.
    Waiting(oneshot::Sender<Vec<WaitingDelivery>>),
}

/// A delivery the dispatcher holds: queued, waiting for a retry, or in flight.
#[derive(Clone, Debug, Serialize)]
pub struct WaitingDelivery {
    pub integration_id: String,
    pub event_id: EventId,
    pub wedding_id: Option<String>,
    pub field_id: Option<String>,
    pub priority: &'static str,
    pub state: WaitState,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub waiting_seconds: f64,
    pub requeued: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct DispatchStatus {
    pub in_flight: usize,
    /// The newest record the dispatcher has read.
    pub read_position: Option<EventId>,
    pub integrations: Vec<IntegrationStatus>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct IntegrationStatus {
    pub id: String,
    pub integration_type: String,
    pub endpoint: Option<String>,
    /// Why the integration cannot be used as configured (no values).
    pub config_error: Option<String>,
    pub disabled: Option<String>,
    /// Paused by an operator since then (RFC 3339): deliveries wait, nothing is sent.
    pub paused_since: Option<String>,
    pub breaker: &'static str,
    /// Deliveries waiting in memory (more may wait in the queue when backpressured).
    pub queued: usize,
    pub in_flight: usize,
    pub backpressured: bool,
    pub backpressure_hits: u64,
    pub delivered: u64,
    pub retries: u64,
    pub superseded: u64,
    pub dead: u64,
    /// Dead letters held now (`dead` counts those made since the start).
    pub dead_letters: usize,
    /// How long the oldest queued delivery has waited, seconds.
    pub oldest_age_seconds: Option<f64>,
    /// Time asked to wait by the target's own rate-limit signals since the start, seconds.
    pub rate_limited_seconds: f64,
}

struct Integ {
    id: Arc<str>,
    kind: String,
    adapter: Result<Arc<Adapter>, String>,
    fingerprint: u64,
    /// The per-wedding queues and their rules ([`super::scheduler`]).
    lanes: Lanes<Arc<Payload>>,
    /// Backpressured: records after this position (up to the reader's) are not loaded.
    overflow: Option<Option<EventId>>,
    breaker: Breaker,
    bucket: Option<TokenBucket>,
    /// No start before then (rate limit or open breaker).
    blocked_until: Option<Instant>,
    disabled: Option<String>,
    /// Paused by an operator since then (RFC 3339).
    paused: Option<String>,
    stats: IntegrationStatus,
    /// Final states not yet flushed that a later delivery must not overtake ([`super::order`]).
    unflushed: Unflushed,
    /// Dead letters a later change of their field supersedes when it is sent.
    dead_fields: DeadFields,
}

/// A delivery picked to start once the round's flush (if any) is done.
struct Start {
    integration: Arc<str>,
    adapter: Arc<Adapter>,
    wedding: Arc<str>,
    payload: Arc<Payload>,
}

/// A wedding waiting for a retry: (when, integration, wedding).
type Retry = (Instant, Arc<str>, Arc<str>);

struct Done {
    integration: Arc<str>,
    wedding: Arc<str>,
    outcome: Outcome,
    latency: Duration,
}

pub struct Dispatcher {
    cfg: DispatchConfig,
    queue: Store,
    context: ContextStore,
    store: DeliveryStore,
    client: reqwest::Client,
    credentials: Arc<Credentials>,
    integrations: HashMap<Arc<str>, Integ>,
    /// Round-robin start for fairness between integrations.
    order: Vec<Arc<str>>,
    read_pos: Option<EventId>,
    /// [`crate::store::Durable::deliveries`] when the reader last reached the durable end; the
    /// queue is read again only when it grows (after a start, it is read to the end once).
    read_deliveries: Option<u64>,
    in_flight: usize,
    timers: BinaryHeap<Reverse<Retry>>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    pause: watch::Sender<bool>,
}

fn fingerprint(i: &Integration) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    i.integration_type.hash(&mut h);
    i.config.to_string().hash(&mut h);
    i.is_active.hash(&mut h);
    h.finish()
}

/// The id just before `id`, so that reading "after" it starts at `id`.
fn before(id: EventId) -> EventId {
    match id.index.checked_sub(1) {
        Some(index) => EventId { index, ..id },
        None => EventId {
            commit_lsn: Lsn(id.commit_lsn.0.saturating_sub(1)),
            index: u32::MAX,
        },
    }
}

fn next(id: EventId) -> EventId {
    match id.index.checked_add(1) {
        Some(index) => EventId { index, ..id },
        None => EventId {
            commit_lsn: Lsn(id.commit_lsn.0 + 1),
            index: 0,
        },
    }
}

impl Dispatcher {
    /// Builds the dispatcher and the receiver of its pause signal (true while backpressure with
    /// the `pause` policy asks capture to stop reading).
    pub fn new(
        cfg: DispatchConfig,
        queue: Store,
        credentials: Arc<Credentials>,
    ) -> Result<(Dispatcher, watch::Receiver<bool>), StoreError> {
        let context = queue.context()?;
        let store = queue.deliveries()?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(cfg.max_in_flight)
            .connect_timeout(cfg.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("fieldsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds with a fixed configuration");
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (pause, pause_rx) = watch::channel(false);
        Ok((
            Dispatcher {
                cfg,
                queue,
                context,
                store,
                client,
                credentials,
                integrations: HashMap::new(),
                order: Vec::new(),
                read_pos: None,
                read_deliveries: None,
                in_flight: 0,
                timers: BinaryHeap::new(),
                done_tx,
                done_rx,
                pause,
            },
            pause_rx,
        ))
    }

    /// Runs until `shutdown` turns true, then waits a little for deliveries in flight.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        self.read_pos = self.store.floor()?.map(before);
        self.load_requeued()?;
        let mut durable = self.queue.durable();
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let more = self.read()?;
            self.reload_overflow()?;
            self.wake_due(Instant::now());
            self.pump(Instant::now())?;
            let wake = self.next_wake();
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => break,
                Some(done) = self.done_rx.recv() => {
                    self.finish(done)?;
                    while let Ok(done) = self.done_rx.try_recv() {
                        self.finish(done)?;
                    }
                }
                Some(cmd) = commands.recv() => self.command(cmd)?,
                _ = housekeeping.tick() => self.housekeeping()?,
                _ = durable.changed(), if !more => {}
                _ = tokio::time::sleep_until(wake.into()), if !more => {}
                _ = std::future::ready(()), if more => {}
            }
        }
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        while self.in_flight > 0 {
            match tokio::time::timeout_at(deadline, self.done_rx.recv()).await {
                Ok(Some(done)) => self.finish(done)?,
                _ => break,
            }
        }
        self.persist(true)?;
        Ok(())
    }

    fn next_wake(&self) -> Instant {
        let mut wake = Instant::now() + HOUSEKEEPING;
        if let Some(Reverse((at, _, _))) = self.timers.peek() {
            wake = wake.min(*at);
        }
        for i in self.integrations.values() {
            if let (Some(at), true) = (i.blocked_until, i.lanes.has_ready()) {
                wake = wake.min(at);
            }
        }
        wake
    }

    // ---- reading -------------------------------------------------------------------------

    /// Reads the next durable records that have deliveries; true when there may be more.
    fn read(&mut self) -> Result<bool, StoreError> {
        let staged = self.queue.durable().borrow().deliveries;
        if self.read_deliveries.is_some_and(|seen| seen >= staged) {
            return Ok(false);
        }
        let batch = self
            .queue
            .records_with_deliveries(self.read_pos, READ_BATCH, Queued::from_line)?;
        for r in &batch.records {
            let prev = self.read_pos;
            self.read_pos = Some(r.id);
            self.offer_record(r, prev, None)?;
        }
        if batch.scanned_to.is_some() {
            self.read_pos = batch.scanned_to;
        }
        if !batch.more {
            self.read_deliveries = Some(staged);
        }
        Ok(batch.more)
    }

    /// Offers a record's deliveries to its integrations (or to `only` one). `prev` is the read
    /// position before it, where an integration that is full resumes reading.
    fn offer_record(
        &mut self,
        r: &Queued,
        prev: Option<EventId>,
        only: Option<&Arc<str>>,
    ) -> Result<(), StoreError> {
        let mut payload: Option<Arc<Payload>> = None;
        for target in &r.deliveries {
            if only.is_some_and(|o| **o != **target) {
                continue;
            }
            let id = self.integration(target)?;
            let bound = self.cfg.max_queued_per_integration;
            let integ = self.integrations.get_mut(&id).expect("just ensured");
            if only.is_none() && integ.overflow.is_some() {
                continue;
            }
            if self.store.is_final(&id, r.id)? {
                continue;
            }
            if integ.lanes.queued() >= bound {
                integ.overflow = Some(prev);
                integ.stats.backpressure_hits += 1;
                tracing::warn!(integration = %id, queued = integ.lanes.queued(), "deliveries backpressured: later events wait in the queue ([dispatch] max_queued_per_integration)");
                if self.cfg.backpressure == Backpressure::Pause {
                    self.pause.send_replace(true);
                }
                continue;
            }
            let payload = payload
                .get_or_insert_with(|| {
                    Arc::new(Payload {
                        id: r.id,
                        body: r.body.clone(),
                    })
                })
                .clone();
            push(integ, r, payload, false);
        }
        Ok(())
    }

    /// Reads again for integrations that were backpressured and have drained to half the bound.
    fn reload_overflow(&mut self) -> Result<(), StoreError> {
        let bound = self.cfg.max_queued_per_integration;
        let waiting: Vec<Arc<str>> = self
            .integrations
            .values()
            .filter(|i| i.overflow.is_some() && i.lanes.queued() <= bound / 2)
            .map(|i| i.id.clone())
            .collect();
        for id in waiting {
            let after = self.integrations[&id].overflow.flatten();
            let batch = self
                .queue
                .records_with_deliveries(after, READ_BATCH, Queued::from_line)?;
            self.integrations.get_mut(&id).expect("listed").overflow = None;
            let reader = self.read_pos;
            let behind_reader = |id: EventId| reader.is_some_and(|p| id <= p);
            let mut prev = after;
            let mut stopped = false;
            for r in &batch.records {
                if !behind_reader(r.id) {
                    // the shared reader takes it from here
                    stopped = true;
                    break;
                }
                self.offer_record(r, prev, Some(&id))?;
                if self.integrations[&id].overflow.is_some() {
                    stopped = true;
                    break;
                }
                prev = Some(r.id);
            }
            // every line up to the scan's end was offered (or had nothing for anyone)
            if let (false, true, Some(scanned)) = (stopped, batch.more, batch.scanned_to) {
                if behind_reader(scanned) {
                    self.integrations.get_mut(&id).expect("listed").overflow = Some(Some(scanned));
                }
            }
        }
        if self.cfg.backpressure == Backpressure::Pause && *self.pause.borrow() {
            let still = self.integrations.values().any(|i| i.overflow.is_some());
            if !still {
                self.pause.send_replace(false);
            }
        }
        Ok(())
    }

    /// Dead letters requeued before a restart go to their weddings' queues; the others that a
    /// later change may still supersede are indexed.
    fn load_requeued(&mut self) -> Result<(), StoreError> {
        for d in self.store.dead_letters()? {
            if d.requeued {
                self.requeue_one(&d)?;
            } else {
                let id = self.integration(&d.integration_id)?;
                let (wedding, field) = dead_key(&d);
                let integ = self.integrations.get_mut(&id).expect("just ensured");
                integ.dead_fields.add(&wedding, field.as_ref(), d.event_id);
            }
        }
        Ok(())
    }

    fn requeue_one(&mut self, d: &DeadLetter) -> Result<bool, StoreError> {
        // the dead letter's own copy; older dead letters have none and read their record
        let q = match &d.envelope {
            Some(envelope) => Queued::from_envelope(d.event_id, envelope, d.commit_time).ok(),
            None => self
                .queue
                .record(d.event_id)?
                .as_ref()
                .and_then(Queued::from_record),
        };
        let Some(q) = q else {
            return Ok(false);
        };
        let id = self.integration(&d.integration_id)?;
        let payload = Arc::new(Payload {
            id: q.id,
            body: q.body.clone(),
        });
        let integ = self.integrations.get_mut(&id).expect("just ensured");
        push(integ, &q, payload, true);
        Ok(true)
    }

    /// The integration's in-memory state, created on first sight.
    fn integration(&mut self, id: &str) -> Result<Arc<str>, StoreError> {
        if let Some((k, _)) = self.integrations.get_key_value(id) {
            return Ok(k.clone());
        }
        let id: Arc<str> = Arc::from(id);
        let row = self.context.integrations()?.remove(&*id);
        let mut integ = Integ {
            id: id.clone(),
            kind: String::new(),
            adapter: Err(String::new()),
            fingerprint: 0,
            lanes: Lanes::default(),
            overflow: None,
            breaker: Breaker::new(self.cfg.breaker_failures, self.cfg.breaker_cooldown),
            bucket: None,
            blocked_until: None,
            disabled: None,
            paused: self.store.paused(&id)?,
            stats: IntegrationStatus {
                id: id.to_string(),
                ..Default::default()
            },
            unflushed: Unflushed::default(),
            dead_fields: DeadFields::default(),
        };
        configure(&mut integ, row.as_ref(), &self.cfg, &self.credentials);
        if let Some(d) = self.store.disabled(&id)? {
            if d.config_fingerprint == integ.fingerprint {
                integ.disabled = Some(d.reason);
                integ.lanes.set_disabled(true);
            } else {
                self.store.set_disabled(&id, None)?;
            }
        }
        self.integrations.insert(id.clone(), integ);
        self.order.push(id.clone());
        Ok(id)
    }

    // ---- starting deliveries -------------------------------------------------------------

    /// Starts what may start now. Deliveries that must not overtake an unflushed final state
    /// ([`super::order`]) leave after one flush for the whole round.
    fn pump(&mut self, now: Instant) -> Result<(), StoreError> {
        if self.order.is_empty() {
            return Ok(());
        }
        self.order.rotate_left(1);
        let mut starts = Vec::new();
        let mut flush = false;
        for id in self.order.clone() {
            if self.in_flight >= self.cfg.max_in_flight {
                break;
            }
            let integ = self.integrations.get_mut(&id).expect("ordered ids exist");
            let adapter = match (&integ.adapter, &integ.disabled, &integ.paused) {
                (Ok(a), None, None) => a.clone(),
                _ => continue,
            };
            while self.in_flight < self.cfg.max_in_flight {
                if integ.blocked_until.is_some_and(|t| t > now) || !integ.lanes.has_ready() {
                    break;
                }
                integ.blocked_until = None;
                match integ.breaker.allow(now) {
                    Ok(()) => {}
                    Err(until) => {
                        integ.blocked_until = until;
                        break;
                    }
                }
                if let Some(bucket) = &mut integ.bucket {
                    if let Err(wait) = bucket.take(now) {
                        integ.blocked_until = Some(now + wait);
                        integ.breaker.on_not_sent();
                        break;
                    }
                }
                let Some(picked) = integ.lanes.pick() else {
                    integ.breaker.on_not_sent();
                    continue;
                };
                flush |= settle_skipped(
                    integ,
                    &self.store,
                    &picked.wedding,
                    picked.superseded,
                    picked.id,
                    picked.field.as_ref(),
                )?;
                self.in_flight += 1;
                starts.push(Start {
                    integration: integ.id.clone(),
                    adapter: adapter.clone(),
                    wedding: picked.wedding,
                    payload: picked.payload,
                });
            }
        }
        if flush {
            // the decisions only: raising the floor (a scan of the final states) waits for the
            // once-a-second housekeeping, off the delivery path
            self.persist(false)?;
            crate::telemetry::metrics::order_flush();
        }
        for start in starts {
            let done = self.done_tx.clone();
            let client = self.client.clone();
            let timeout = self.cfg.request_timeout;
            tokio::spawn(async move {
                let started = Instant::now();
                let outcome = start.adapter.deliver(&client, &start.payload, timeout).await;
                let _ = done.send(Done {
                    integration: start.integration,
                    wedding: start.wedding,
                    outcome,
                    latency: started.elapsed(),
                });
            });
        }
        Ok(())
    }

    fn wake_due(&mut self, now: Instant) {
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Reverse((at, integration, wedding)) = self.timers.pop().expect("peeked");
            if let Some(integ) = self.integrations.get_mut(&integration) {
                integ.lanes.wake(&wedding, at);
            }
        }
    }

    // ---- results -------------------------------------------------------------------------

    fn finish(&mut self, done: Done) -> Result<(), StoreError> {
        self.in_flight -= 1;
        let now = Instant::now();
        let Some(integ) = self.integrations.get_mut(&done.integration) else {
            return Ok(());
        };
        let Some(entry) = integ.lanes.landed(&done.wedding) else {
            return Ok(());
        };
        entry.last_status = done.outcome.status();
        let (id, attempt, queued_at) = (entry.id, entry.attempts, entry.queued_at);
        let latency_ms = Some(done.latency.as_secs_f64() * 1000.0);
        let mut log = LogEntry {
            at: now_rfc3339(),
            integration_id: done.integration.to_string(),
            event_id: id,
            wedding_id: wedding_id(&done.wedding),
            attempt,
            // set by the outcome below
            outcome: LogOutcome::Retry,
            status: done.outcome.status(),
            error: done.outcome.error().map(str::to_owned),
            latency_ms,
        };
        let mut reopened = false;
        match done.outcome {
            Outcome::Delivered { .. } => {
                reopened = integ.breaker.on_answer();
                log.outcome = LogOutcome::Delivered;
                integ.stats.delivered += 1;
                let e = integ.lanes.finish(&done.wedding);
                integ.unflushed.settled(&done.wedding, e.field.as_ref(), false);
                let now_micros = chrono::Utc::now().timestamp_micros();
                crate::telemetry::metrics::delivered_after(
                    &done.integration,
                    (now_micros - e.commit_time) as f64 / 1e6,
                );
                self.store.set_final(&done.integration, id, Final::Delivered)?;
                if e.requeued {
                    self.store.remove_dead(&done.integration, id)?;
                }
            }
            Outcome::Retry {
                after,
                endpoint_fault,
                ref error,
                status,
            } => {
                if endpoint_fault {
                    integ.breaker.on_failure(now);
                } else {
                    reopened = integ.breaker.on_answer();
                    if let Some(wait) = after {
                        integ.stats.rate_limited_seconds += wait.as_secs_f64();
                    }
                }
                let expired = attempt >= self.cfg.max_attempts || queued_at.elapsed() >= self.cfg.max_age;
                if expired {
                    log.outcome = LogOutcome::Dead;
                    dead(integ, &self.store, &done.wedding, status, error)?;
                } else {
                    log.outcome = LogOutcome::Retry;
                    integ.stats.retries += 1;
                    let at = now + backoff(attempt, self.cfg.retry_base, self.cfg.retry_cap, after);
                    integ.lanes.retry(&done.wedding, at);
                    self.timers
                        .push(Reverse((at, done.integration.clone(), done.wedding.clone())));
                }
            }
            Outcome::Reject { status, ref error } => {
                reopened = integ.breaker.on_answer();
                log.outcome = LogOutcome::Dead;
                dead(integ, &self.store, &done.wedding, status, error)?;
            }
            Outcome::Disable { ref error, .. } => {
                integ.breaker.on_answer();
                log.outcome = LogOutcome::Disabled;
                tracing::error!(integration = %done.integration, "{error}");
                integ.disabled = Some(error.clone());
                integ.lanes.set_disabled(true);
                self.store.set_disabled(
                    &done.integration,
                    Some(&Disabled {
                        reason: error.clone(),
                        config_fingerprint: integ.fingerprint,
                        at: now_rfc3339(),
                    }),
                )?;
            }
        }
        self.store.log(&log)?;
        crate::telemetry::metrics::delivery(&done.integration, log.outcome);
        if reopened {
            // the endpoint answers again: weddings waiting for a retry go now, in order
            wake(integ);
        }
        Ok(())
    }

    // ---- housekeeping and commands -------------------------------------------------------

    fn housekeeping(&mut self) -> Result<(), StoreError> {
        let rows = self.context.integrations()?;
        for integ in self.integrations.values_mut() {
            let row = rows.get(&*integ.id);
            let fp = row.map_or(0, fingerprint);
            if fp == integ.fingerprint {
                continue;
            }
            configure(integ, row, &self.cfg, &self.credentials);
            if integ.disabled.take().is_some() {
                tracing::info!(integration = %integ.id, "integration re-enabled: its configuration changed");
                self.store.set_disabled(&integ.id, None)?;
                integ.lanes.set_disabled(false);
            }
            wake(integ);
        }
        // deliveries to integrations that were deactivated or deleted are dead letters
        let gone: Vec<Arc<str>> = self
            .integrations
            .values()
            .filter(|i| i.lanes.queued() > 0 && rows.get(&*i.id).map_or(true, |r| !r.is_active))
            .map(|i| i.id.clone())
            .collect();
        for id in gone {
            let integ = self.integrations.get_mut(&id).expect("listed");
            let weddings: Vec<Arc<str>> = integ.lanes.weddings().cloned().collect();
            for w in weddings {
                while integ.lanes.idle_head(&w) {
                    dead(
                        integ,
                        &self.store,
                        &w,
                        None,
                        "the integration was deactivated or deleted",
                    )?;
                }
            }
        }
        self.persist(true)?;
        self.store
            .prune_log(self.cfg.log_retention, self.cfg.log_max_entries)?;
        Ok(())
    }

    /// Makes every final state decided so far durable, and with `raise_floor` the floor: every
    /// delivery of an event before it is final.
    fn persist(&mut self, raise_floor: bool) -> Result<(), StoreError> {
        let floor = if raise_floor { self.floor() } else { None };
        self.store.persist(floor)?;
        for integ in self.integrations.values_mut() {
            integ.unflushed.clear();
        }
        Ok(())
    }

    fn floor(&self) -> Option<EventId> {
        let mut floor = next(self.read_pos?);
        for i in self.integrations.values() {
            if let Some(first) = i.lanes.first_pending() {
                floor = floor.min(first);
            }
            if let Some(after) = i.overflow {
                floor = floor.min(after.map_or(
                    EventId {
                        commit_lsn: Lsn(0),
                        index: 0,
                    },
                    next,
                ));
            }
        }
        Some(floor)
    }

    fn command(&mut self, cmd: Command) -> Result<(), StoreError> {
        match cmd {
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Requeue {
                integration,
                events,
                reply,
            } => {
                let store = self.store.clone();
                let requeued =
                    store.requeue(integration.as_deref(), events.as_deref(), |d| self.requeue_one(d))?;
                for d in &requeued {
                    let (wedding, field) = dead_key(d);
                    if let Some(integ) = self.integrations.get_mut(&*d.integration_id) {
                        integ.dead_fields.remove(&wedding, field.as_ref(), d.event_id);
                    }
                }
                let _ = reply.send(requeued.len());
            }
            Command::Pause {
                integration,
                pause,
                reply,
            } => {
                let _ = reply.send(self.pause(&integration, pause)?);
            }
            Command::Waiting(reply) => {
                let _ = reply.send(self.waiting());
            }
        }
        Ok(())
    }

    fn pause(&mut self, integration: &str, pause: bool) -> Result<Option<bool>, StoreError> {
        if !self.integrations.contains_key(integration)
            && !self.context.integrations()?.contains_key(integration)
        {
            return Ok(None);
        }
        let id = self.integration(integration)?;
        let integ = self.integrations.get_mut(&id).expect("just ensured");
        if integ.paused.is_some() == pause {
            return Ok(Some(false));
        }
        if pause {
            let at = now_rfc3339();
            self.store.set_paused(&id, Some(&at))?;
            integ.paused = Some(at);
            tracing::info!(integration = %id, "integration paused by an operator: its deliveries wait");
        } else {
            self.store.set_paused(&id, None)?;
            integ.paused = None;
            tracing::info!(integration = %id, "integration resumed by an operator");
            wake(integ);
        }
        Ok(Some(true))
    }

    fn waiting(&self) -> Vec<WaitingDelivery> {
        let mut out = Vec::new();
        let mut ids: Vec<&Arc<str>> = self.integrations.keys().collect();
        ids.sort();
        for id in ids {
            for (wedding, entries) in self.integrations[id].lanes.waiting() {
                for (e, state) in entries {
                    out.push(WaitingDelivery {
                        integration_id: id.to_string(),
                        event_id: e.id,
                        wedding_id: wedding_id(wedding),
                        field_id: e.field.as_deref().map(str::to_owned),
                        priority: e.priority.as_str(),
                        state,
                        attempts: e.attempts,
                        last_status: e.last_status,
                        waiting_seconds: e.queued_at.elapsed().as_secs_f64(),
                        requeued: e.requeued,
                    });
                }
            }
        }
        out
    }

    fn status(&self) -> DispatchStatus {
        let mut integrations: Vec<IntegrationStatus> = self
            .integrations
            .values()
            .map(|i| IntegrationStatus {
                integration_type: i.kind.clone(),
                endpoint: i.adapter.as_ref().ok().map(|a| a.endpoint()),
                config_error: i.adapter.as_ref().err().cloned(),
                disabled: i.disabled.clone(),
                paused_since: i.paused.clone(),
                breaker: i.breaker.state().as_str(),
                queued: i.lanes.queued(),
                in_flight: i.lanes.in_flight(),
                backpressured: i.overflow.is_some(),
                dead_letters: self.store.dead_count(&i.id),
                oldest_age_seconds: i
                    .lanes
                    .heads()
                    .map(|e| e.queued_at.elapsed().as_secs_f64())
                    .reduce(f64::max),
                ..i.stats.clone()
            })
            .collect();
        integrations.sort_by(|a, b| a.id.cmp(&b.id));
        DispatchStatus {
            in_flight: self.in_flight,
            read_position: self.read_pos,
            integrations,
        }
    }
}

/// (Re)builds an integration's adapter and limits from its row.
fn configure(integ: &mut Integ, row: Option<&Integration>, cfg: &DispatchConfig, credentials: &Credentials) {
    integ.fingerprint = row.map_or(0, fingerprint);
    integ.breaker = Breaker::new(cfg.breaker_failures, cfg.breaker_cooldown);
    match row {
        Some(r) => {
            integ.kind = r.integration_type.clone();
            integ.adapter = Adapter::build(r, credentials).map(Arc::new).map_err(|e| {
                tracing::error!(integration = %integ.id, "{e}; its deliveries wait until the configuration is fixed");
                e.to_string()
            });
            integ.bucket = rate_limit(r).map(|(rate, burst)| TokenBucket::new(rate, burst, Instant::now()));
        }
        None => integ.adapter = Err("the integration no longer exists".to_owned()),
    }
}

/// A dead letter's wedding queue key and field, as the engine keys its queues.
fn dead_key(d: &DeadLetter) -> (Arc<str>, Option<Arc<str>>) {
    (
        Arc::from(d.wedding_id.as_deref().unwrap_or("")),
        d.field_id.as_deref().map(Arc::from),
    )
}

fn wedding_id(key: &str) -> Option<String> {
    (!key.is_empty()).then(|| key.to_owned())
}

/// Appends an event to its wedding's queue.
fn push(integ: &mut Integ, event: &Queued, payload: Arc<Payload>, requeued: bool) {
    let mut entry = Entry::new(
        payload.id,
        event.field_id.as_deref(),
        event.priority,
        payload,
        Instant::now(),
    );
    entry.commit_time = event.commit_time;
    entry.requeued = requeued;
    integ.lanes.push(event.wedding_id.as_deref().unwrap_or(""), entry);
}

/// The endpoint answers again, or the integration was reconfigured or resumed: weddings waiting
/// for a retry go now, in order.
fn wake(integ: &mut Integ) {
    integ.blocked_until = None;
    integ.lanes.wake_all();
}

/// Records what the scheduler skipped to pick event `id` of (`wedding`, `field`): the older
/// values of its field it superseded, and the dead letters of that field it supersedes. True when
/// the pick may not leave before the final states decided so far are durable ([`super::order`]).
fn settle_skipped(
    integ: &mut Integ,
    store: &DeliveryStore,
    wedding: &Arc<str>,
    skipped: Vec<Entry<Arc<Payload>>>,
    id: EventId,
    field: Option<&Arc<str>>,
) -> Result<bool, StoreError> {
    for e in skipped {
        integ.unflushed.settled(wedding, e.field.as_ref(), true);
        store.set_final(&integ.id, e.id, Final::Superseded)?;
        if e.requeued {
            store.remove_dead(&integ.id, e.id)?;
        }
        superseded(integ, store, wedding, e.id, e.attempts, None)?;
    }
    let mut flush = integ.unflushed.blocks(wedding, field);
    for dead in integ.dead_fields.take_older(wedding, field, id) {
        store.supersede_dead(&integ.id, dead)?;
        let why = format!("a dead letter superseded by the later change {id} of its field");
        superseded(integ, store, wedding, dead, 0, Some(why))?;
        flush = true;
    }
    Ok(flush)
}

/// Counts and logs a delivery superseded by a later change of its field.
fn superseded(
    integ: &mut Integ,
    store: &DeliveryStore,
    wedding: &str,
    event_id: EventId,
    attempt: u32,
    error: Option<String>,
) -> Result<(), StoreError> {
    integ.stats.superseded += 1;
    crate::telemetry::metrics::delivery(&integ.id, LogOutcome::Superseded);
    store.log(&LogEntry {
        at: now_rfc3339(),
        integration_id: integ.id.to_string(),
        event_id,
        wedding_id: wedding_id(wedding),
        attempt,
        outcome: LogOutcome::Superseded,
        status: None,
        error,
        latency_ms: None,
    })
}

/// The head of a wedding's queue becomes a dead letter; the wedding goes on with its next event.
fn dead(
    integ: &mut Integ,
    store: &DeliveryStore,
    wedding: &Arc<str>,
    status: Option<u16>,
    error: &str,
) -> Result<(), StoreError> {
    let e = integ.lanes.finish(wedding);
    integ.unflushed.settled(wedding, e.field.as_ref(), true);
    integ.dead_fields.add(wedding, e.field.as_ref(), e.id);
    integ.stats.dead += 1;
    tracing::warn!(integration = %integ.id, event = %e.id, attempts = e.attempts, "delivery is a dead letter: {error}");
    store.set_final(&integ.id, e.id, Final::Dead)?;
    store.put_dead(&DeadLetter {
        integration_id: integ.id.to_string(),
        event_id: e.id,
        wedding_id: wedding_id(wedding),
        field_id: e.field.as_deref().map(str::to_owned),
        attempts: e.attempts,
        status: status.or(e.last_status),
        error: error.to_owned(),
        failed_at: now_rfc3339(),
        requeued: false,
        envelope: Some(String::from_utf8_lossy(&e.payload.body).into_owned()),
        commit_time: e.commit_time,
    })?;
    Ok(())
}
