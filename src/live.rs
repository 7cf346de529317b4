//! The live stream: `GET /events/stream?organization=ID[&wedding=ID]`, Server-Sent Events of the
//! field-sync events of one organisation (optionally one wedding), for UIs that want changes as
//! they are committed. Authenticated with `Authorization: Bearer <[http] stream_token>`.
//!
//! Each message is `id: <event id>`, `event: <type>`, `data: <envelope JSON>`. A client that
//! reconnects with `Last-Event-ID` (browsers do this by themselves) gets every later event from
//! the durable queue, then live ones: no gap, no repeat. Only durable events are streamed.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use crate::http::AppState;
use crate::queue::record::{ChangeRecord, EventId};
use crate::queue::Queue;

const READ_BATCH: usize = 256;

#[derive(Deserialize)]
pub struct StreamParams {
    organization: Option<String>,
    wedding: Option<String>,
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from response times.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn stream(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<StreamParams>,
) -> Response {
    let Some(token) = &st.stream_token else {
        return (
            StatusCode::NOT_FOUND,
            "the live stream is off: set [http] stream_token to enable it\n",
        )
            .into_response();
    };
    let offered = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !offered.is_some_and(|o| same(o.as_bytes(), token.expose().as_bytes())) {
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Bearer")],
            "missing or wrong bearer token\n",
        )
            .into_response();
    }
    let Some(organization) = p.organization else {
        return (StatusCode::BAD_REQUEST, "organization=<id> is required\n").into_response();
    };
    let after = match headers
        .get("last-event-id")
        .map(|v| v.to_str().map(str::parse::<EventId>))
    {
        None => None,
        Some(Ok(Ok(id))) => Some(id),
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                "Last-Event-ID is not an event id (16 hex digits, ':', 8 hex digits)\n",
            )
                .into_response()
        }
    };
    // without Last-Event-ID the stream starts at the newest durable record: live events only
    let start = match after {
        Some(id) => Some(id),
        None => match st.queue.last_records(1) {
            Ok(last) => last.first().map(|r| r.id),
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        },
    };
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(feed(
        st.queue.clone(),
        start,
        organization,
        p.wedding,
        tx,
        st.shutdown.clone(),
    ));
    let events = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Sends the matching events after `after`, then waits for more, until the client goes away.
async fn feed(
    queue: Queue,
    mut after: Option<EventId>,
    organization: String,
    wedding: Option<String>,
    tx: mpsc::Sender<Event>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut durable = queue.durable();
    loop {
        let records = match queue.records_after(after, READ_BATCH) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("live stream stops: {e}");
                return;
            }
        };
        let full = records.len() == READ_BATCH;
        for r in records {
            after = Some(r.id);
            if let Some(event) = matching(&r, &organization, wedding.as_deref()) {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        }
        if !full {
            tokio::select! {
                changed = durable.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}

fn matching(r: &ChangeRecord, organization: &str, wedding: Option<&str>) -> Option<Event> {
    let e = r.event.as_ref()?;
    if e.data.organization_id.as_deref() != Some(organization) {
        return None;
    }
    if wedding.is_some_and(|w| e.data.wedding_id.as_deref() != Some(w)) {
        return None;
    }
    let kind = serde_json::to_value(e.kind).ok()?;
    Event::default()
        .id(r.id.to_string())
        .event(kind.as_str().unwrap_or("field"))
        .json_data(e)
        .ok()
}
