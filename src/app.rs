//! Wiring: checks prerequisites before anything is written, opens the queue, serves HTTP and
//! runs the replication source until shutdown.

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
use crate::store::{Store, StoreError};

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

/// A running daemon.
pub struct Daemon {
    pub http_addr: SocketAddr,
    /// The SQL admin port, when `[admin] listen` is set.
    pub admin_addr: Option<SocketAddr>,
    pub queue: Store,
    pub status: Arc<SourceStatus>,
    shutdown: watch::Sender<bool>,
    source: JoinHandle<Result<(), StreamError>>,
    http: JoinHandle<std::io::Result<()>>,
    dispatch: Option<JoinHandle<Result<(), StoreError>>>,
}

impl Daemon {
    /// Checks prerequisites (writing nothing when they fail), then opens the queue and starts.
    pub async fn start(config: Config) -> Result<Daemon, AppError> {
        check::preflight(&config).await.map_err(AppError::Preflight)?;
        // before any task records a metric: handles taken earlier would record nowhere
        crate::telemetry::metrics::install();
        let queue = Store::open(&config.queue.path, config.queue.cache_capacity_bytes)?;
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
        let mut source = Source::new(Arc::new(config.clone()), queue.clone(), status.clone())?;
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
            (
                Some(tx),
                Some(tokio::spawn(dispatcher.run(rx, shutdown_rx.clone()))),
            )
        } else {
            (None, None)
        };
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
            stream_token: config.http.stream_token.clone(),
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
                    admin.user.clone(),
                    admin.password.clone(),
                    crate::serve::admin::Limits::from(admin),
                    shutdown_rx.clone(),
                ));
                Some(addr)
            }
            _ => None,
        };
        let limits = http::Limits::from_config(&config.http);
        let http = tokio::spawn(http::serve(listener, state, shutdown_rx.clone(), limits));
        let source = tokio::spawn(source.run(shutdown_rx));
        match admin_addr {
            Some(admin) => tracing::info!(http = %http_addr, %admin, "fieldsync started"),
            None => tracing::info!(http = %http_addr, "fieldsync started"),
        }
        Ok(Daemon {
            http_addr,
            admin_addr,
            queue,
            status,
            shutdown,
            source,
            http,
            dispatch,
        })
    }

    /// Asks every task to stop and waits: the source flushes the queue and confirms it first.
    pub async fn stop(self) -> Result<(), AppError> {
        let _ = self.shutdown.send(true);
        self.run_until(std::future::pending()).await
    }

    /// Runs until `signal` resolves (then stops cleanly) or the source ends by itself (a definite
    /// error).
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), AppError> {
        tokio::pin!(signal);
        let mut dispatch = self.dispatch.take();
        let dispatch_ended = async {
            match &mut dispatch {
                Some(d) => d.await,
                None => std::future::pending().await,
            }
        };
        let mut dispatch_result = None;
        let result = tokio::select! {
            r = &mut self.source => r,
            d = dispatch_ended => {
                // the dispatcher only ends early on a storage error: stop everything
                dispatch_result = Some(d);
                let _ = self.shutdown.send(true);
                (&mut self.source).await
            }
            _ = &mut signal => {
                tracing::info!("shutdown requested");
                let _ = self.shutdown.send(true);
                (&mut self.source).await
            }
        };
        let _ = self.shutdown.send(true);
        let _ = (&mut self.http).await;
        if dispatch_result.is_none() {
            if let Some(d) = dispatch {
                dispatch_result = Some(d.await);
            }
        }
        match dispatch_result {
            Some(Ok(Err(e))) => return Err(AppError::Dispatch(e)),
            Some(Err(e)) => return Err(AppError::Task(e.to_string())),
            _ => {}
        }
        match result {
            Ok(r) => r.map_err(AppError::from),
            Err(e) => Err(AppError::Task(e.to_string())),
        }
    }
}
