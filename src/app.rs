//! Wiring: checks prerequisites before anything is written, opens the queue, serves HTTP and
//! runs the replication source until shutdown.
//!
//! A queue that fails a write or a flush (a full filesystem) does not stop the daemon: capture and
//! delivery stop (nothing past the durable position is confirmed), the HTTP and admin ports go on
//! answering (`/readyz` not ready, with the reason), and the daemon tries a write next to the queue
//! with backoff, logging the error at each step. sled fails every write of a database that once
//! failed one, so when space is back [`Daemon::run_until`] ends with [`Ended::ReopenQueue`] and
//! `fieldsync run` executes itself again in place (same process id): the queue is opened afresh,
//! as after a crash, and replication resumes from the confirmed position.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::check::{self, CheckResult};
use crate::config::Config;
use crate::credentials::Credentials;
use crate::dispatch::Dispatcher;
use crate::serve::http::{self, AppState};
use crate::source::health::SlotWatch;
use crate::source::progress::SourceStatus;
use crate::source::stream::{Source, StreamError};
use crate::store::disk::DiskWatch;
use crate::store::{Store, StoreError};

/// The first wait after a queue write failure; it doubles up to [`STORAGE_RETRY_MAX`].
const STORAGE_RETRY_MIN: std::time::Duration = std::time::Duration::from_secs(1);
const STORAGE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(60);
/// Bytes written (and removed) next to the queue to see whether it can write again.
const SPACE_PROBE_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("prerequisite failed: {}: {}{}", .0.name, .0.detail, .0.fix.as_ref().map(|f| format!("\n  fix: {f}")).unwrap_or_default())]
    Preflight(CheckResult),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr} ({key}): {source}")]
    Listen {
        key: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("http server failed: {0}")]
    Http(std::io::Error),
    #[error("replication task ended abnormally: {0}")]
    Task(String),
    #[error("dispatcher stopped: {0}")]
    Dispatch(StoreError),
    #[error("integration secrets: {0}")]
    Credentials(String),
}

/// How [`Daemon::run_until`] ended without an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Stopped on request.
    Stopped,
    /// The queue failed a write and can write again: it must be opened afresh (see the module
    /// documentation); `fieldsync run` executes itself again.
    ReopenQueue,
}

/// A running daemon.
pub struct Daemon {
    pub http_addr: SocketAddr,
    /// The SQL admin port, when `[admin] listen` is set.
    pub admin_addr: Option<SocketAddr>,
    pub queue: Store,
    pub status: Arc<SourceStatus>,
    /// The store's size on disk and its bound.
    pub disk: DiskWatch,
    queue_path: std::path::PathBuf,
    shutdown: watch::Sender<bool>,
    /// Stops capture and delivery only (the ports go on answering).
    work_stop: watch::Sender<bool>,
    source: JoinHandle<Result<(), StreamError>>,
    http: JoinHandle<std::io::Result<()>>,
    dispatch: Option<JoinHandle<Result<(), StoreError>>>,
}

impl Daemon {
    /// Checks prerequisites (writing nothing when they fail), then opens the queue (refused,
    /// before anything is written, when it needs a key the configuration lacks) and starts.
    pub async fn start(config: Config) -> Result<Daemon, AppError> {
        check::preflight(&config).await.map_err(AppError::Preflight)?;
        // before any task records a metric: handles taken earlier would record nowhere
        crate::telemetry::metrics::install();
        let queue = open_store(&config.queue)?;
        let listener = http::bind(config.http.listen).map_err(|source| AppError::Listen {
            key: "[http] listen",
            addr: config.http.listen,
            source,
        })?;
        let admin_listener =
            match &config.admin {
                Some(a) => Some(tokio::net::TcpListener::bind(a.listen).await.map_err(|source| {
                    AppError::Listen {
                        key: "[admin] listen",
                        addr: a.listen,
                        source,
                    }
                })?),
                None => None,
            };
        let http_addr = listener.local_addr().map_err(AppError::Http)?;
        let status = Arc::new(SourceStatus::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (work_stop, work_rx) = watch::channel(false);
        let disk = DiskWatch::start(&config.queue.path, config.queue.max_disk_bytes);
        let mut source = Source::new(Arc::new(config.clone()), queue.clone(), status.clone())?
            .with_disk_bound(disk.full());
        let (commands, dispatch) = if config.dispatch.enabled {
            let credentials = match &config.dispatch.secrets_key_file {
                Some(path) => {
                    Credentials::from_key_file(path).map_err(|e| AppError::Credentials(e.to_string()))?
                }
                None => Credentials::default(),
            }
            .with_trust(config.dispatch.trust());
            let (dispatcher, pause) =
                Dispatcher::new(config.dispatch.clone(), queue.clone(), Arc::new(credentials))?;
            source = source.with_pause(pause);
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            (Some(tx), Some(tokio::spawn(dispatcher.run(rx, work_rx.clone()))))
        } else {
            (None, None)
        };
        tokio::spawn(crate::store::audit::run(
            queue.audit()?,
            config.audit_retention,
            shutdown_rx.clone(),
        ));
        tokio::spawn(crate::store::retention::run(
            queue.clone(),
            config.queue.retention,
            config.dispatch.enabled,
            shutdown_rx.clone(),
        ));
        let slot = Arc::new(SlotWatch::default());
        tokio::spawn({
            let (slot, target, name) = (
                slot.clone(),
                config.postgres.clone(),
                config.replication.slot.clone(),
            );
            let (every, stop) = (config.replication.slot_check_interval, shutdown_rx.clone());
            async move { slot.run(target, name, every, stop).await }
        });
        tokio::spawn(crate::source::health::heartbeat(
            config.postgres.clone(),
            config.replication.heartbeat_interval,
            status.clone(),
            shutdown_rx.clone(),
        ));
        let state = AppState {
            queue: queue.clone(),
            slot,
            source: status.clone(),
            dispatch: commands,
            disk: Some(disk.clone()),
            stream_token: config.http.stream_token.clone(),
            tokens: Arc::new(config.http.tokens.clone()),
            stream_signer: config
                .http
                .stream_signing_key
                .as_ref()
                .map(|k| Arc::new(crate::token::Signer::new(k.expose()))),
            shutdown: shutdown_rx.clone(),
            streams: Arc::new(tokio::sync::Semaphore::new(config.http.max_streams as usize)),
            max_streams: config.http.max_streams,
        };
        let admin_addr = match (admin_listener, &config.admin) {
            (Some(listener), Some(admin)) => {
                let addr = listener.local_addr().map_err(AppError::Http)?;
                if !addr.ip().is_loopback() {
                    tracing::warn!(admin = %addr, "the admin port has no TLS: off loopback, its results cross the network in clear (the password does not: SCRAM)");
                }
                let views = Arc::new(crate::serve::admin::Views {
                    state: state.clone(),
                    slot: config.replication.slot.clone(),
                    publication: config.replication.publication.clone(),
                    started_at: chrono::Utc::now(),
                    runtime: tokio::runtime::Handle::current(),
                });
                tokio::spawn(crate::serve::admin::serve(
                    listener,
                    views,
                    admin.users.clone(),
                    crate::serve::admin::Limits::from(admin),
                    admin.tls.clone(),
                    shutdown_rx.clone(),
                ));
                Some(addr)
            }
            _ => None,
        };
        let limits = http::Limits::from_config(&config.http);
        let http = tokio::spawn(http::serve(
            listener,
            state,
            shutdown_rx.clone(),
            limits,
            config.http.tls.clone(),
        ));
        let source = tokio::spawn(source.run(work_rx));
        match admin_addr {
            Some(admin) => tracing::info!(http = %http_addr, %admin, "fieldsync started"),
            None => tracing::info!(http = %http_addr, "fieldsync started"),
        }
        Ok(Daemon {
            http_addr,
            admin_addr,
            queue,
            status,
            disk,
            queue_path: config.queue.path.clone(),
            shutdown,
            work_stop,
            source,
            http,
            dispatch,
        })
    }

    /// Asks every task to stop and waits: the source flushes the queue and confirms it first.
    pub async fn stop(self) -> Result<(), AppError> {
        let _ = self.shutdown.send(true);
        let _ = self.work_stop.send(true);
        self.run_until(std::future::pending()).await.map(|_| ())
    }

    /// Runs until `signal` resolves (then stops cleanly), the source ends by itself (a definite
    /// error), or the queue failed a write and can write again ([`Ended::ReopenQueue`]).
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<Ended, AppError> {
        tokio::pin!(signal);
        let mut dispatch = self.dispatch.take();
        let mut dispatch_result = None;
        // a stop asked for before (see `stop`) counts as requested
        let mut requested = *self.shutdown.borrow();
        let result = {
            let dispatch_ended = async {
                match &mut dispatch {
                    Some(d) => d.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut self.source => r,
                d = dispatch_ended => {
                    // the dispatcher only ends early on a storage error: stop capture too
                    dispatch_result = Some(d);
                    let _ = self.work_stop.send(true);
                    (&mut self.source).await
                }
                _ = &mut signal => {
                    tracing::info!("shutdown requested");
                    requested = true;
                    let _ = self.work_stop.send(true);
                    (&mut self.source).await
                }
            }
        };
        let _ = self.work_stop.send(true);
        if dispatch_result.is_none() {
            if let Some(d) = dispatch {
                dispatch_result = Some(d.await);
            }
        }
        // a write failure of the queue, from either: wait for space, serving, then reopen
        let (result, dispatch_result, failure) = take_write_failure(result, dispatch_result);
        let ended = match failure {
            Some(e) if !requested => self.wait_until_writable(&e, &mut signal).await,
            Some(e) => return self.finish(Err(AppError::Store(e))).await,
            None => Ended::Stopped,
        };
        match dispatch_result {
            Some(Ok(Err(e))) => return self.finish(Err(AppError::Dispatch(e))).await,
            Some(Err(e)) => return self.finish(Err(AppError::Task(e.to_string()))).await,
            _ => {}
        }
        let result = match result {
            Ok(r) => r.map(|()| ended).map_err(AppError::from),
            Err(e) => Err(AppError::Task(e.to_string())),
        };
        self.finish(result).await
    }

    /// Stops serving and answers `result`.
    async fn finish(mut self, result: Result<Ended, AppError>) -> Result<Ended, AppError> {
        let _ = self.shutdown.send(true);
        let _ = (&mut self.http).await;
        result
    }

    /// Capture and delivery have stopped on a queue write failure: tells the operator (log at each
    /// backoff step, `/readyz`) and tries a write next to the queue until one succeeds
    /// ([`Ended::ReopenQueue`]) or `signal` resolves ([`Ended::Stopped`]).
    async fn wait_until_writable(
        &self,
        e: &StoreError,
        signal: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Ended {
        let path = self.queue_path.display().to_string();
        let durable = self.queue.durable().borrow().end_lsn;
        let fix = if e.is_out_of_space() {
            "free space on that filesystem or grow it"
        } else {
            "check the disk and the filesystem (dmesg)"
        };
        let reason = format!(
            "the queue at {path} cannot write ({e}); capture and delivery stopped, nothing past {durable} is confirmed; fix: {fix}; fieldsync retries and reopens the queue when writes work again"
        );
        self.status.set_storage_error(Some(reason));
        let mut delay = STORAGE_RETRY_MIN;
        loop {
            tracing::error!(
                path = %path,
                error = %e,
                durable = %durable,
                retry_in_s = delay.as_secs(),
                "the queue cannot write: capture and delivery stopped, nothing past the durable position is confirmed; fix: {fix}"
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = signal.as_mut() => {
                    tracing::info!("shutdown requested");
                    return Ended::Stopped;
                }
            }
            let dir = self.queue_path.clone();
            match tokio::task::spawn_blocking(move || probe_space(&dir)).await {
                Ok(Ok(())) => {
                    tracing::info!(path = %path, "the queue's filesystem takes writes again: reopening the queue");
                    return Ended::ReopenQueue;
                }
                Ok(Err(probe)) => tracing::debug!(error = %probe, "the space probe failed"),
                Err(join) => tracing::debug!(error = %join, "the space probe task failed"),
            }
            delay = (delay * 2).min(STORAGE_RETRY_MAX);
        }
    }
}

type SourceResult = Result<Result<(), StreamError>, tokio::task::JoinError>;
type DispatchResult = Option<Result<Result<(), StoreError>, tokio::task::JoinError>>;

/// Takes out a queue write failure of the source or the dispatcher, leaving the rest.
fn take_write_failure(
    source: SourceResult,
    dispatch: DispatchResult,
) -> (SourceResult, DispatchResult, Option<StoreError>) {
    let (source, from_source) = match source {
        Ok(Err(e)) => match e.into_write_failure() {
            Ok(failure) => (Ok(Ok(())), Some(failure)),
            Err(e) => (Ok(Err(e)), None),
        },
        other => (other, None),
    };
    let (dispatch, from_dispatch) = match dispatch {
        Some(Ok(Err(e))) if e.is_write_failure() => (None, Some(e)),
        other => (other, None),
    };
    (source, dispatch, from_source.or(from_dispatch))
}

/// Writes, syncs and removes a file of [`SPACE_PROBE_BYTES`] in the queue's directory.
fn probe_space(dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join("space-probe");
    let result = std::fs::File::create(&path).and_then(|mut f| {
        f.write_all(&vec![0u8; SPACE_PROBE_BYTES])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&path);
    result
}

/// Opens (or creates) the queue `[queue]` configures, its values sealed under its keys.
pub fn open_store(q: &crate::config::QueueConfig) -> Result<Store, StoreError> {
    let old: Vec<&[u8; 32]> = q.old_encryption_keys.iter().map(|k| k.key.expose()).collect();
    let current = q.encryption_key.as_ref().map(|k| k.key.expose());
    let sealer = crate::store::cipher::Sealer::new(current, &old);
    Store::open_sealed(&q.path, q.cache_capacity_bytes, sealer)
}
