//! The `[http]` listener: `/healthz` (process alive), `/readyz` (replication connected, queue
//! writable, slot not lost; the reasons when not), `/metrics` (Prometheus), `/status`
//! (replication positions, queue summary, slot health) and `/queue` (summary and the newest
//! records' metadata, never field values).
//!
//! # Hostile clients
//! The listener runs its own accept loop (axum's `serve` has no timeouts), so every connection is
//! bounded in time and number, and the process keeps file descriptors for PostgreSQL, deliveries
//! and the queue however many clients connect:
//! - a request head must be complete within `[http] header_read_timeout` of the connection's start
//!   (or of the first byte of a later request on a kept-alive connection): idle and half-sent
//!   connections (slowloris) are closed after it;
//! - a kept-alive connection with no request in progress is closed after `[http] idle_timeout`;
//! - at most `[http] max_connections` are open (by default derived from the open-file limit,
//!   [`derived_max_connections`]). A connection past the cap takes the place of the longest-idle
//!   connection (one with no request in progress: idle, or still sending its head), so a flood
//!   of idle connections cannot lock out `/healthz`; when every connection is busy, the new one
//!   gets a best-effort 503 and is closed at once, never held;
//! - at most `[http] max_streams` live streams (see [`live`]) are open; past it, 503.

pub mod auth;
pub mod deliveries;
pub mod live;
mod metrics_page;
mod server;

pub use server::{
    bind, derived_max_connections, nofile_limit, raise_nofile_limit, serve, Limits, LISTEN_BACKLOG,
    MAX_DERIVED_CONNECTIONS, MIN_DERIVED_CONNECTIONS, RESERVED_FDS,
};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Semaphore};

use crate::source::progress::SourceStatus;
use crate::store::record::{ChangeRecord, EventId, Op};
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub queue: Store,
    pub source: Arc<SourceStatus>,
    pub slot: Arc<crate::source::health::SlotWatch>,
    /// The dispatcher's command channel; `None` when dispatch is disabled.
    pub dispatch: Option<tokio::sync::mpsc::Sender<crate::dispatch::Command>>,
    /// The store's size on disk and its bound (`None` where no daemon measures it).
    pub disk: Option<crate::store::disk::DiskWatch>,
    pub stream_token: Option<crate::secret::Secret<String>>,
    /// Bearer tokens of the endpoints that act or show personal data (`auth`).
    pub tokens: Arc<Vec<crate::config::Credential>>,
    /// Checks stream tokens scoped to an organisation or a wedding.
    pub stream_signer: Option<Arc<crate::token::Signer>>,
    /// Turns true on shutdown: open live streams end, so the server can stop.
    pub shutdown: watch::Receiver<bool>,
    /// One permit per open live stream (`[http] max_streams`).
    pub streams: Arc<Semaphore>,
    pub max_streams: u32,
}

impl AppState {
    /// Operator actions and reads, through this daemon's dispatcher.
    pub fn ops(&self) -> crate::ops::Ops {
        crate::ops::Ops::online(self.queue.clone(), self.dispatch.clone())
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/queue", get(queue_view))
        .route("/events/stream", get(live::stream))
        .merge(deliveries::routes())
        .with_state(state)
}

async fn metrics(State(st): State<AppState>) -> Response {
    let dispatch = st.ops().status().await.ok();
    let slot = st.slot.latest().and_then(Result::ok);
    let queue = st.queue.summary().ok();
    let body = metrics_page::render(
        &st.source.snapshot(),
        slot.as_ref(),
        dispatch.as_ref(),
        st.disk.as_ref(),
        queue.as_ref(),
    );
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        body,
    )
        .into_response()
}

/// Ready when replication is connected, the queue takes writes and is under its disk bound, and
/// the slot is not lost.
async fn readyz(State(st): State<AppState>) -> Response {
    let mut reasons = Vec::new();
    let source = st.source.snapshot();
    if !source.connected {
        reasons.push(match source.last_error {
            Some(e) => format!("replication is not connected: {e}"),
            None => "replication is not connected yet".to_owned(),
        });
    }
    if let Some(stalled) = source.stalled {
        reasons.push(stalled);
    }
    if let Some(failed) = source.storage_error {
        reasons.push(failed);
    }
    if let Some(full) = st.disk.as_ref().and_then(|d| d.reason()) {
        reasons.push(full);
    }
    if let Err(e) = st.queue.probe_write() {
        reasons.push(format!("the queue does not take writes: {e}"));
    }
    match st.slot.latest() {
        Some(Ok(h)) if h.wal_status.as_deref() == Some("lost") => reasons.push(format!(
            "slot {} is lost (wal_status = lost): the WAL it needed was removed; see the README on invalidated slots",
            h.slot
        )),
        Some(Err(e)) => reasons.push(e),
        _ => {}
    }
    if reasons.is_empty() {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "not ready", "reasons": reasons})),
        )
            .into_response()
    }
}

/// The store's size on disk and its bound, for `/status` and `/queue`.
fn disk_json(st: &AppState) -> serde_json::Value {
    match &st.disk {
        Some(d) => {
            serde_json::json!({"disk_bytes": d.bytes(), "max_disk_bytes": d.max_bytes(), "full": d.is_full()})
        }
        None => serde_json::Value::Null,
    }
}

async fn status(State(st): State<AppState>) -> Response {
    match st.queue.summary() {
        Ok(queue) => {
            let slot = st.slot.latest().map(|s| match s {
                Ok(h) => serde_json::to_value(h).unwrap_or_default(),
                Err(e) => serde_json::json!({ "error": e }),
            });
            Json(serde_json::json!({"source": st.source.snapshot(), "queue": queue, "slot": slot, "disk": disk_json(&st)}))
                .into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
struct QueueParams {
    last: Option<usize>,
}

/// What `/queue` and `fieldsync queue` show of a record: where and what, not the values.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordSummary {
    pub id: EventId,
    pub table: String,
    pub op: Op,
    pub commit_time: i64,
    pub origin: Option<String>,
    pub columns: Vec<String>,
}

impl From<&ChangeRecord> for RecordSummary {
    fn from(r: &ChangeRecord) -> Self {
        let row = r.new.as_ref().or(r.old.as_ref());
        RecordSummary {
            id: r.id,
            table: format!("{}.{}", r.schema, r.table),
            op: r.op,
            commit_time: r.commit_time,
            origin: r.origin.clone(),
            columns: row.map(|row| row.keys().cloned().collect()).unwrap_or_default(),
        }
    }
}

async fn queue_view(State(st): State<AppState>, Query(p): Query<QueueParams>) -> Response {
    let last = p.last.unwrap_or(10).min(1000);
    let result = st.queue.summary().and_then(|summary| {
        let records: Vec<RecordSummary> = st
            .queue
            .last_records(last)?
            .iter()
            .map(RecordSummary::from)
            .collect();
        Ok(serde_json::json!({"summary": summary, "disk": disk_json(&st), "last_records": records}))
    });
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A plain HTTP/1.0 GET on a loopback listener: `(status, body)`. Used by `fieldsync queue` to ask a
/// running daemon, and by tests and benchmarks, without an HTTP client dependency.
pub fn get_local(
    addr: SocketAddr,
    path: &str,
    timeout: std::time::Duration,
) -> std::io::Result<(u16, String)> {
    request_local(addr, "GET", path, None, None, None, timeout)
}

trait ReadWrite: std::io::Read + std::io::Write {}

impl<T: std::io::Read + std::io::Write> ReadWrite for T {}

/// [`get_local`] with any method, an optional JSON body and an optional bearer token.
pub fn request_local(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
    bearer: Option<&str>,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    timeout: std::time::Duration,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let tcp = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    let mut stream: Box<dyn ReadWrite> = match tls {
        None => Box::new(tcp),
        Some(config) => {
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let conn = rustls::ClientConnection::new(config, name)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
    };
    let auth = bearer.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    match json {
        Some(body) => write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?,
        None => write!(stream, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n")?,
    }
    let mut bytes = Vec::new();
    if let Err(e) = stream.read_to_end(&mut bytes) {
        // a TLS peer that closes without close_notify, after its answer: the answer stands
        if e.kind() != std::io::ErrorKind::UnexpectedEof || bytes.is_empty() {
            return Err(e);
        }
    }
    let response = String::from_utf8_lossy(&bytes).into_owned();
    let malformed = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP response");
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(malformed)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(malformed)?;
    Ok((status, body.to_owned()))
}
