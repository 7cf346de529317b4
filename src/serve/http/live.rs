//! The live stream: `GET /events/stream?organization=ID[&wedding=ID]`, Server-Sent Events of the
//! field-sync events of one organisation (optionally one wedding), for UIs that want changes as
//! they are committed. Authenticated with a bearer token (`Authorization: Bearer …`):
//! - `[http] stream_token` opens every organisation's stream (for the app's backend);
//! - a stream token ([`crate::token`], made by `fieldsync token` under `[http]
//!   stream_signing_key_file`) opens one organisation's stream, or one wedding's, until it
//!   expires. Browsers' `EventSource` cannot set headers, so a stream token may also come as
//!   `access_token=` in the query (the shared `stream_token` may not: URLs end up in histories
//!   and proxy logs). A token that does not verify or has expired gets 401; a valid one for
//!   another organisation or wedding, 403. When the token expires, an open stream sends
//!   `event: expired` (with the `last_event_id` to resume from) and ends.
//!
//! Each message is `id: <event id>`, `event: <type>`, `data: <envelope JSON>`. A client that
//! reconnects with `Last-Event-ID` (browsers do this by themselves) gets every later event from
//! the durable queue, then live ones: no gap, no repeat. Only durable events are streamed.
//!
//! The queue holds records for `[queue] retention` after they are delivered: a `Last-Event-ID`
//! whose later events have left it (or a reader that fell that far behind) gets one last message,
//! `event: gone`, whose data names the position asked for, the newest removed and the oldest
//! held, and says how to resync (read the current state again, then reconnect without
//! `Last-Event-ID`); then the stream ends. Never a silent gap.
//!
//! A replay is read from the queue as the client consumes it: one batch of at most
//! [`READ_BATCH`] records when the previous batch is taken, so a
//! stream holds at most one batch and hyper's write buffer (about 400 KiB) however long the
//! replay, and a slow reader slows only its own reads. At most `[http] max_streams` streams are
//! open; past it the answer is 503 with `Retry-After`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;
use tokio::sync::{watch, OwnedSemaphorePermit};

use super::auth::{bearer, same};
use super::AppState;
use crate::store::record::{ChangeRecord, EventId};
use crate::store::Store;

/// Records read from the queue at a time, per stream.
pub const READ_BATCH: usize = 128;
/// Seconds a client refused for too many streams is asked to wait.
const RETRY_AFTER_SECS: u64 = 5;

#[derive(Deserialize)]
pub struct StreamParams {
    organization: Option<String>,
    wedding: Option<String>,
    access_token: Option<String>,
}

/// Who may read a stream: every organisation, or what a stream token grants.
enum Reader {
    Everything,
    Granted(crate::token::Grant),
}

fn unauthorized(why: String) -> Response {
    (StatusCode::UNAUTHORIZED, [("www-authenticate", "Bearer")], why).into_response()
}

/// The reader the request's token names, or why it is refused (401).
fn authenticate(st: &AppState, headers: &HeaderMap, query_token: Option<&str>) -> Result<Reader, String> {
    let bearer = bearer(headers);
    let offered = bearer.or(query_token);
    let Some(offered) = offered else {
        return Err(
            "a bearer token is required (Authorization: Bearer <token>, or access_token=<stream token>)\n"
                .to_owned(),
        );
    };
    if let Some(token) = &st.stream_token {
        if bearer.is_some() && same(offered.as_bytes(), token.expose().as_bytes()) {
            return Ok(Reader::Everything);
        }
    }
    match &st.stream_signer {
        Some(signer) if offered.starts_with(crate::token::PREFIX) => {
            let now = chrono::Utc::now().timestamp();
            signer
                .verify(offered, now)
                .map(Reader::Granted)
                .map_err(|e| format!("{e}\n"))
        }
        _ => Err("wrong bearer token\n".to_owned()),
    }
}

pub async fn stream(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<StreamParams>,
) -> Response {
    if st.stream_token.is_none() && st.stream_signer.is_none() {
        return (
            StatusCode::NOT_FOUND,
            "the live stream is off: set [http] stream_token or stream_signing_key_file to enable it\n",
        )
            .into_response();
    }
    let reader = match authenticate(&st, &headers, p.access_token.as_deref()) {
        Ok(reader) => reader,
        Err(why) => return unauthorized(why),
    };
    let Some(organization) = p.organization else {
        return (StatusCode::BAD_REQUEST, "organization=<id> is required\n").into_response();
    };
    let (wedding, expires) = match reader {
        Reader::Everything => (p.wedding, None),
        Reader::Granted(grant) => match grant.allows(&organization, p.wedding.as_deref()) {
            Ok(wedding) => {
                let left = (grant.exp - chrono::Utc::now().timestamp()).max(0) as u64;
                (
                    wedding,
                    Some(tokio::time::Instant::now() + Duration::from_secs(left)),
                )
            }
            Err(e) => return (StatusCode::FORBIDDEN, format!("{e}\n")).into_response(),
        },
    };
    let Ok(permit) = st.streams.clone().try_acquire_owned() else {
        metrics::counter!("fieldsync_http_streams_refused_total").increment(1);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", RETRY_AFTER_SECS.to_string())],
            axum::Json(serde_json::json!({
                "error": format!(
                    "too many live streams: {} are open, the limit ([http] max_streams); retry after {RETRY_AFTER_SECS} s",
                    st.max_streams
                ),
                "limit": "[http] max_streams",
                "max_streams": st.max_streams,
                "retry_after_seconds": RETRY_AFTER_SECS,
            })),
        )
            .into_response();
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
    // without Last-Event-ID the stream starts at the newest durable record (or the newest removed
    // when retention emptied the queue): live events only
    let start = match after {
        Some(id) => Some(id),
        None => match st
            .queue
            .last_records(1)
            .and_then(|last| Ok(last.first().map(|r| r.id).or(st.queue.removed()?.last)))
        {
            Ok(start) => start,
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        },
    };
    let feed = Feed {
        queue: st.queue.clone(),
        after: start,
        organization,
        wedding,
        durable: st.queue.durable(),
        shutdown: st.shutdown.clone(),
        pending: VecDeque::new(),
        caught_up: false,
        ended: false,
        expires,
        _permit: permit,
    };
    let events = stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok::<_, Infallible>(event), feed))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// One stream's position: the matching events after `after`, read a batch at a time as the client
/// takes them, then live ones as they become durable.
struct Feed {
    queue: Store,
    after: Option<EventId>,
    organization: String,
    wedding: Option<String>,
    durable: watch::Receiver<crate::store::Durable>,
    shutdown: watch::Receiver<bool>,
    /// Matching events of the last batch read, not yet taken.
    pending: VecDeque<Event>,
    /// The last read reached the durable end of the queue: wait for more before reading again.
    caught_up: bool,
    /// `gone` or `expired` was sent: the stream ends once it is taken.
    ended: bool,
    /// When the stream token that opened the stream expires (the stream ends with `expired`).
    expires: Option<tokio::time::Instant>,
    /// The stream's place under `[http] max_streams`, given back when the stream is dropped.
    _permit: OwnedSemaphorePermit,
}

impl Feed {
    /// The next event; `None` ends the stream (shutdown, or a storage error).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if *self.shutdown.borrow() || self.ended {
                return None;
            }
            let expiry = async {
                match self.expires {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            if self.caught_up {
                tokio::select! {
                    changed = self.durable.changed() => changed.ok()?,
                    _ = self.shutdown.wait_for(|s| *s) => return None,
                    _ = expiry => {}
                }
            }
            if self.expires.is_some_and(|at| tokio::time::Instant::now() >= at) {
                self.ended = true;
                return Some(Event::default().event("expired").json_data(serde_json::json!({
                    "last_event_id": self.after.map(|a| a.to_string()),
                    "resync": "the stream token expired: reconnect with a new one and Last-Event-ID to go on",
                })).expect("JSON data"));
            }
            // read in place: a batch is mostly in sled's cache and takes well under a millisecond
            // (a blocking-pool thread per stream cost more memory, in per-thread allocator heaps,
            // than it saved)
            let read = self.queue.removed().and_then(|before| {
                let records = self.queue.records_after(self.after, READ_BATCH)?;
                Ok((before, records, self.queue.removed()?))
            });
            let (before, records, after) = match read {
                Ok(read) => read,
                Err(e) => {
                    tracing::error!("live stream stops: {e}");
                    return None;
                }
            };
            // records after our position left the queue before the read, or while it ran (ahead of
            // the first record it returned): the client cannot have them all
            let first = records.first().map(|r| r.id);
            let missed =
                |removed: Option<EventId>| removed.is_some_and(|l| self.after.map_or(true, |a| a < l));
            if missed(before.last) || (missed(after.last) && first.map_or(true, |f| after.last < Some(f))) {
                self.ended = true;
                return Some(self.gone(after.last));
            }
            self.caught_up = records.len() < READ_BATCH;
            for r in records {
                self.after = Some(r.id);
                if let Some(event) = matching(&r, &self.organization, self.wedding.as_deref()) {
                    self.pending.push_back(event);
                }
            }
        }
    }
}

impl Feed {
    /// The answer when the events after the client's position left the queue.
    fn gone(&self, removed_through: Option<EventId>) -> Event {
        let oldest_held = self.queue.oldest().ok().flatten().map(|(id, _)| id.to_string());
        Event::default()
            .event("gone")
            .json_data(serde_json::json!({
                "last_event_id": self.after.map(|a| a.to_string()),
                "removed_through": removed_through.map(|l| l.to_string()),
                "oldest_held": oldest_held,
                "resync": "the events after last_event_id have left the queue ([queue] retention): \
                           read the current state again, then reconnect without Last-Event-ID",
            }))
            .expect("json serializes")
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
