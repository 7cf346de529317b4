//! An in-process Standard Webhooks receiver for integration tests and benchmarks: verifies every
//! request's `webhook-signature` (HMAC-SHA256 over `{id}.{timestamp}.{body}`), injects faults on
//! demand (500, 429 + `Retry-After`, slow-but-accepted, 400 for one wedding, 410, latency), dedupes
//! on `webhook-id`, and keeps what it accepted so a test can compare the applied state and the
//! per-wedding order with the source.
//!
//! Independent of the product on purpose (no `fieldsync::` items): it checks what the daemon sends
//! with its own verifier, so a signing bug cannot hide behind shared code.
//!
//! The server accepts connections itself and serves each with hyper's HTTP/1.1 connection, so that
//! [`Receiver::stop`] can close the listener *and* every open keep-alive connection at once: after
//! it returns, the receiver is down (connections refused), like a crashed endpoint.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// How far a `webhook-timestamp` may be from the receiver's clock, either way (as the reference
/// libraries do).
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// The path the receiver answers on; [`Receiver::url`] includes it.
pub const PATH: &str = "/hook";

const SECRET_PREFIX: &str = "whsec_";
const BIND_RETRY_FOR: Duration = Duration::from_secs(5);

type HmacSha256 = Hmac<Sha256>;

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

/// Why a request's signature was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// The named header (`webhook-id`, `webhook-timestamp` or `webhook-signature`) is absent
    /// (or not visible ASCII).
    MissingHeader(&'static str),
    /// The secret is not `whsec_` + base64 of a non-empty key.
    BadSecret,
    /// `webhook-timestamp` is not an integer number of Unix seconds.
    BadTimestamp,
    /// The timestamp is more than [`TOLERANCE_SECS`] before now.
    TooOld,
    /// The timestamp is more than [`TOLERANCE_SECS`] after now.
    TooNew,
    /// No `v1,` entry of `webhook-signature` matches the content.
    NoMatchingSignature,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::MissingHeader(name) => write!(f, "missing required header {name}"),
            VerifyError::BadSecret => f.write_str("secret is not whsec_ followed by a base64 key"),
            VerifyError::BadTimestamp => f.write_str("webhook-timestamp is not an integer"),
            VerifyError::TooOld => f.write_str("message timestamp too old"),
            VerifyError::TooNew => f.write_str("message timestamp too new"),
            VerifyError::NoMatchingSignature => f.write_str("no matching signature found"),
        }
    }
}

impl std::error::Error for VerifyError {}

/// The HMAC key of a `whsec_…` secret: the base64-decoded bytes after the prefix (the prefix is
/// optional, as in the reference libraries).
fn secret_key(secret: &str) -> Result<Vec<u8>, VerifyError> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    match BASE64.decode(encoded) {
        Ok(key) if !key.is_empty() => Ok(key),
        _ => Err(VerifyError::BadSecret),
    }
}

fn keyed_mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Verifies a Standard Webhooks request: the three headers' values (None when absent), the exact
/// body bytes, and the receiver's clock in Unix seconds. Any one of the space-separated `v1,`
/// signatures may match (key rotation); others (`v1a,`, unparsable) are skipped. The comparison
/// is constant-time (`Mac::verify_slice`).
pub fn verify(
    secret: &str,
    id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_unix: i64,
) -> Result<(), VerifyError> {
    let id = id.ok_or(VerifyError::MissingHeader("webhook-id"))?;
    let timestamp = timestamp.ok_or(VerifyError::MissingHeader("webhook-timestamp"))?;
    let signature = signature.ok_or(VerifyError::MissingHeader("webhook-signature"))?;
    let key = secret_key(secret)?;

    let sent: i64 = timestamp.parse().map_err(|_| VerifyError::BadTimestamp)?;
    if sent < now_unix.saturating_sub(TOLERANCE_SECS) {
        return Err(VerifyError::TooOld);
    }
    if sent > now_unix.saturating_add(TOLERANCE_SECS) {
        return Err(VerifyError::TooNew);
    }

    let mac = keyed_mac(&key, id, timestamp, body);
    let matched = signature
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| BASE64.decode(encoded).ok())
        .any(|candidate| mac.clone().verify_slice(&candidate).is_ok());
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

/// The `webhook-signature` value (`v1,<base64>`) for `id`, `timestamp` and `body` under `secret`;
/// panics on a malformed secret. For tests that need to send signed requests themselves.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = secret_key(secret).unwrap_or_else(|e| panic!("bad webhook secret: {e}"));
    let tag = keyed_mac(&key, id, &timestamp.to_string(), body)
        .finalize()
        .into_bytes();
    format!("v1,{}", BASE64.encode(tag))
}

/// The current time in Unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Receiver
// ---------------------------------------------------------------------------------------------

/// Faults the receiver injects. Rates are fractions of verified requests, drawn independently per
/// request from one uniform number: `[0, error_rate)` → 500, then `rate_limit_rate` → 429, then
/// `timeout_rate` → held for `hang` (the event is accepted when it arrives — its effect applies —
/// and the 200 comes late, like a receiver whose reply outlived the sender's timeout).
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Fraction answered 500.
    pub error_rate: f64,
    /// Fraction answered 429 with `Retry-After: {retry_after_secs}`.
    pub rate_limit_rate: f64,
    pub retry_after_secs: u64,
    /// Fraction held for `hang` before answering — and accepted.
    pub timeout_rate: f64,
    pub hang: Duration,
    /// Events whose `data.wedding_id` equals this are answered 400 `{"error":"…"}`.
    pub reject_wedding: Option<String>,
    /// Added to every answer (including 401s).
    pub latency: Duration,
    /// Answer 410 Gone to every verified request.
    pub gone: bool,
}

/// Counters since the receiver started. `requests` counts every request to [`PATH`].
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub requests: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub bad_signatures: u64,
    pub answered_500: u64,
    pub answered_429: u64,
    pub hung: u64,
    pub answered_400: u64,
    pub answered_410: u64,
}

/// The first acceptance of one `webhook-id`.
#[derive(Clone, Debug)]
pub struct Accepted {
    /// The `webhook-id` header.
    pub id: String,
    /// `data.wedding_id`, `data.field_id` and `type` of the envelope, when present as strings.
    pub wedding_id: Option<String>,
    pub field_id: Option<String>,
    pub kind: String,
    /// The whole envelope.
    pub body: Value,
    /// When it arrived (for end-to-end latency).
    pub at: std::time::SystemTime,
}

/// What the receiver has accepted, behind one mutex held only for bookkeeping.
#[derive(Default)]
struct Ledger {
    stats: Stats,
    seen: HashSet<String>,
    accepted: Vec<Accepted>,
    state: BTreeMap<(String, String), Value>,
    /// Per wedding, the highest event id accepted so far.
    high_water: HashMap<String, String>,
    violations: Vec<String>,
}

impl Ledger {
    fn accept(&mut self, event: Accepted) {
        self.stats.accepted += 1;
        self.seen.insert(event.id.clone());
        let data = event.body.get("data");
        if let (Some(wedding), Some(field)) = (&event.wedding_id, &event.field_id) {
            let key = (wedding.clone(), field.clone());
            if event.kind == "field.deleted" {
                self.state.remove(&key);
            } else {
                let value = data
                    .and_then(|d| d.get("new_value"))
                    .cloned()
                    .unwrap_or(Value::Null);
                self.state.insert(key, value);
            }
        }
        if let Some(wedding) = &event.wedding_id {
            let event_id = data
                .and_then(|d| d.get("event_id"))
                .and_then(Value::as_str)
                .unwrap_or(&event.id);
            match self.high_water.get_mut(wedding) {
                Some(high) if event_id < high.as_str() => self.violations.push(format!(
                    "wedding {wedding}: event {event_id} (webhook-id {}) accepted after event {high}",
                    event.id
                )),
                Some(high) => *high = event_id.to_owned(),
                None => {
                    self.high_water.insert(wedding.clone(), event_id.to_owned());
                }
            }
        }
        self.accepted.push(event);
    }
}

struct Shared {
    secret: String,
    faults: Mutex<Arc<Faults>>,
    ledger: Mutex<Ledger>,
}

impl Shared {
    fn count(&self, f: impl FnOnce(&mut Stats)) {
        let mut ledger = self.ledger.lock().unwrap();
        ledger.stats.requests += 1;
        f(&mut ledger.stats);
    }
}

/// A running accept loop: dropping `stop` (or sending on it) ends it.
struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    fn spawn(listener: TcpListener, router: Router) -> Server {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, router, stopped));
        Server { stop, task }
    }

    /// Closes the listener and every open connection, and waits until they are closed.
    async fn shut_down(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn accept_loop(listener: TcpListener, router: Router, mut stopped: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let service = TowerToHyperService::new(router.clone());
                    connections.spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                // Out of file descriptors and the like: let connections finish, then retry.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn bind(addr: SocketAddr) -> TcpListener {
    let start = Instant::now();
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && start.elapsed() < BIND_RETRY_FOR => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("webhook receiver could not bind {addr}: {e}"),
        }
    }
}

/// An in-process webhook endpoint at `http://{addr}/hook`. Start it inside a tokio runtime; its
/// tasks run there (so a test must not block that runtime's only thread while it sends).
/// Dropping it shuts the server down without waiting.
pub struct Receiver {
    shared: Arc<Shared>,
    addr: SocketAddr,
    router: Router,
    server: Mutex<Option<Server>>,
}

impl Receiver {
    /// Starts a receiver on 127.0.0.1 at a free port. Panics when `secret` is not `whsec_` +
    /// base64.
    pub async fn start(secret: &str) -> Receiver {
        Receiver::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), secret).await
    }

    /// Starts a receiver on `addr` — e.g. the address a stopped one returned — retrying for up to
    /// 5 s while the port is still in use.
    pub async fn start_on(addr: SocketAddr, secret: &str) -> Receiver {
        if let Err(e) = secret_key(secret) {
            panic!("webhook receiver: {e}");
        }
        let shared = Arc::new(Shared {
            secret: secret.to_owned(),
            faults: Mutex::new(Arc::new(Faults::default())),
            ledger: Mutex::new(Ledger::default()),
        });
        let router = Router::new().route(PATH, post(handle)).with_state(shared.clone());
        let listener = bind(addr).await;
        let addr = listener.local_addr().expect("listener address");
        let server = Server::spawn(listener, router.clone());
        Receiver {
            shared,
            addr,
            router,
            server: Mutex::new(Some(server)),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("http://{}{PATH}", self.addr)
    }

    /// Replaces the faults; applies to requests that arrive from now on.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = Arc::new(faults);
    }

    /// Stops accepting and closes every open connection (requests in flight get no answer); the
    /// port refuses connections once this returns. Returns the address for [`Receiver::start_on`].
    pub async fn stop(self) -> SocketAddr {
        self.pause().await;
        self.addr
    }

    /// Like [`Receiver::stop`] but keeps this receiver — its state, dedupe set and faults — so
    /// [`Receiver::resume`] can bring the same endpoint back. Does nothing when already down.
    pub async fn pause(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some(server) = server {
            server.shut_down().await;
        }
    }

    /// Binds the same address again after [`Receiver::pause`] (retrying for up to 5 s while the
    /// port is in use). Does nothing when already up.
    pub async fn resume(&self) {
        if self.server.lock().unwrap().is_some() {
            return;
        }
        let listener = bind(self.addr).await;
        let server = Server::spawn(listener, self.router.clone());
        *self.server.lock().unwrap() = Some(server);
    }

    pub fn stats(&self) -> Stats {
        self.shared.ledger.lock().unwrap().stats.clone()
    }

    /// The first acceptance of each `webhook-id`, in arrival order.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.shared.ledger.lock().unwrap().accepted.clone()
    }

    /// `(wedding_id, field_id)` → `data.new_value` after applying the accepted events in arrival
    /// order; `field.deleted` removes the key.
    pub fn final_state(&self) -> BTreeMap<(String, String), Value> {
        self.shared.ledger.lock().unwrap().state.clone()
    }

    /// One line per accepted event whose `data.event_id` (the `webhook-id` when absent) sorts
    /// before the highest event id accepted earlier for the same wedding.
    pub fn order_violations(&self) -> Vec<String> {
        self.shared.ledger.lock().unwrap().violations.clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Ok(mut server) = self.server.lock() {
            // Dropping the stop sender ends the accept loop, which closes its connections.
            server.take();
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn error_json(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let faults = shared.faults.lock().unwrap().clone();
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }

    let id = header_str(&headers, "webhook-id");
    let verified = verify(
        &shared.secret,
        id,
        header_str(&headers, "webhook-timestamp"),
        header_str(&headers, "webhook-signature"),
        &body,
        unix_now(),
    );
    if let Err(e) = verified {
        shared.count(|s| s.bad_signatures += 1);
        return error_json(StatusCode::UNAUTHORIZED, &e.to_string());
    }
    let id = id.unwrap_or_default();

    if faults.gone {
        shared.count(|s| s.answered_410 += 1);
        return error_json(StatusCode::GONE, "endpoint disabled");
    }
    let mut hang = false;
    let fault_rate = faults.error_rate + faults.rate_limit_rate + faults.timeout_rate;
    if fault_rate > 0.0 {
        let draw: f64 = rand::random();
        if draw < faults.error_rate {
            shared.count(|s| s.answered_500 += 1);
            return error_json(StatusCode::INTERNAL_SERVER_ERROR, "injected failure");
        }
        if draw < faults.error_rate + faults.rate_limit_rate {
            shared.count(|s| s.answered_429 += 1);
            let retry_after = faults.retry_after_secs.to_string();
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, retry_after)],
            )
                .into_response();
        }
        hang = draw < fault_rate;
    }

    let envelope: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            shared.count(|s| s.answered_400 += 1);
            return error_json(StatusCode::BAD_REQUEST, "body is not a JSON object");
        }
    };
    let data = envelope.get("data");
    let data_str = |key: &str| {
        data.and_then(|d| d.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let wedding_id = data_str("wedding_id");
    let rejected = faults.reject_wedding.is_some() && faults.reject_wedding == wedding_id;

    let status = {
        let mut guard = shared.ledger.lock().unwrap();
        let ledger = &mut *guard;
        ledger.stats.requests += 1;
        if hang {
            ledger.stats.hung += 1;
        }
        if rejected {
            ledger.stats.answered_400 += 1;
            StatusCode::BAD_REQUEST
        } else if ledger.seen.contains(id) {
            ledger.stats.duplicates += 1;
            StatusCode::OK
        } else {
            let kind = envelope
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let field_id = data_str("field_id");
            ledger.accept(Accepted {
                id: id.to_owned(),
                wedding_id: wedding_id.clone(),
                field_id,
                kind,
                body: envelope,
                at: std::time::SystemTime::now(),
            });
            StatusCode::OK
        }
    };

    if hang {
        tokio::time::sleep(faults.hang).await;
    }
    if status == StatusCode::BAD_REQUEST {
        let wedding = wedding_id.unwrap_or_default();
        return error_json(
            status,
            &format!("wedding {wedding} is not accepted by this endpoint"),
        );
    }
    status.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;

    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TS: &str = "1614265330";
    const VECTOR_NOW: i64 = 1614265330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn verify_vector(secret: &str, sig: &str, body: &[u8], now: i64) -> Result<(), VerifyError> {
        verify(secret, Some(VECTOR_ID), Some(VECTOR_TS), Some(sig), body, now)
    }

    #[test]
    fn published_vector_verifies() {
        assert_eq!(
            verify_vector(VECTOR_SECRET, VECTOR_SIG, VECTOR_BODY, VECTOR_NOW),
            Ok(())
        );
        // The prefix is optional, as in the reference libraries.
        let bare = VECTOR_SECRET.strip_prefix("whsec_").unwrap();
        assert_eq!(verify_vector(bare, VECTOR_SIG, VECTOR_BODY, VECTOR_NOW), Ok(()));
    }

    #[test]
    fn sign_reproduces_published_vector() {
        assert_eq!(
            sign(VECTOR_SECRET, VECTOR_ID, VECTOR_NOW, VECTOR_BODY),
            VECTOR_SIG
        );
    }

    #[test]
    fn any_listed_signature_may_match() {
        let bogus = "v1,Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE=";
        let list = format!("v1a,AAAA {bogus} v1,!!notbase64 {VECTOR_SIG}");
        assert_eq!(
            verify_vector(VECTOR_SECRET, &list, VECTOR_BODY, VECTOR_NOW),
            Ok(())
        );
        assert_eq!(
            verify_vector(VECTOR_SECRET, bogus, VECTOR_BODY, VECTOR_NOW),
            Err(VerifyError::NoMatchingSignature)
        );
        // The same signature under another scheme prefix does not count.
        let v2 = VECTOR_SIG.replacen("v1,", "v2,", 1);
        assert_eq!(
            verify_vector(VECTOR_SECRET, &v2, VECTOR_BODY, VECTOR_NOW),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn wrong_secret_or_tampered_content_fails() {
        let other_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSW";
        assert_eq!(
            verify_vector(other_secret, VECTOR_SIG, VECTOR_BODY, VECTOR_NOW),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            verify_vector(VECTOR_SECRET, VECTOR_SIG, br#"{"test": 2432232315}"#, VECTOR_NOW),
            Err(VerifyError::NoMatchingSignature)
        );
        let other_id = verify(
            VECTOR_SECRET,
            Some("msg_p5jXN8AQM9LWM0D4loKWxJeK"),
            Some(VECTOR_TS),
            Some(VECTOR_SIG),
            VECTOR_BODY,
            VECTOR_NOW,
        );
        assert_eq!(other_id, Err(VerifyError::NoMatchingSignature));
        // A timestamp written differently is different signed content.
        let padded = verify(
            VECTOR_SECRET,
            Some(VECTOR_ID),
            Some("01614265330"),
            Some(VECTOR_SIG),
            VECTOR_BODY,
            VECTOR_NOW,
        );
        assert_eq!(padded, Err(VerifyError::NoMatchingSignature));
    }

    #[test]
    fn timestamp_tolerance_is_five_minutes_each_way() {
        let at = |now| verify_vector(VECTOR_SECRET, VECTOR_SIG, VECTOR_BODY, now);
        assert_eq!(at(VECTOR_NOW + TOLERANCE_SECS), Ok(()));
        assert_eq!(at(VECTOR_NOW - TOLERANCE_SECS), Ok(()));
        assert_eq!(at(VECTOR_NOW + TOLERANCE_SECS + 1), Err(VerifyError::TooOld));
        assert_eq!(at(VECTOR_NOW - TOLERANCE_SECS - 1), Err(VerifyError::TooNew));
        let not_a_number = verify(
            VECTOR_SECRET,
            Some(VECTOR_ID),
            Some("16142653e3"),
            Some(VECTOR_SIG),
            VECTOR_BODY,
            VECTOR_NOW,
        );
        assert_eq!(not_a_number, Err(VerifyError::BadTimestamp));
    }

    #[test]
    fn missing_headers_and_bad_secret_are_named() {
        let (id, ts, sig) = (Some(VECTOR_ID), Some(VECTOR_TS), Some(VECTOR_SIG));
        let check = |secret, id, ts, sig| verify(secret, id, ts, sig, VECTOR_BODY, VECTOR_NOW);
        assert_eq!(
            check(VECTOR_SECRET, None, ts, sig),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
        assert_eq!(
            check(VECTOR_SECRET, id, None, sig),
            Err(VerifyError::MissingHeader("webhook-timestamp"))
        );
        assert_eq!(
            check(VECTOR_SECRET, id, ts, None),
            Err(VerifyError::MissingHeader("webhook-signature"))
        );
        assert_eq!(
            check("whsec_not base64!", id, ts, sig),
            Err(VerifyError::BadSecret)
        );
        assert_eq!(check("whsec_", id, ts, sig), Err(VerifyError::BadSecret));
        assert_eq!(
            VerifyError::MissingHeader("webhook-id").to_string(),
            "missing required header webhook-id"
        );
        assert_eq!(VerifyError::TooOld.to_string(), "message timestamp too old");
    }

    // ---- the server, through a minimal HTTP/1.1 client ----

    const SECRET: &str = "whsec_c2VjcmV0LWZvci10aGUtcmVjZWl2ZXItdGVzdHM=";

    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// One keep-alive HTTP/1.1 connection; enough of the protocol for the receiver's answers
    /// (which always carry `content-length`).
    struct Client {
        conn: BufReader<TcpStream>,
    }

    impl Client {
        async fn connect(addr: SocketAddr) -> std::io::Result<Client> {
            Ok(Client {
                conn: BufReader::new(TcpStream::connect(addr).await?),
            })
        }

        async fn post(&mut self, headers: &[(&str, String)], body: &[u8]) -> std::io::Result<Reply> {
            let mut request = format!(
                "POST {PATH} HTTP/1.1\r\nhost: receiver\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                body.len()
            );
            for (name, value) in headers {
                request.push_str(&format!("{name}: {value}\r\n"));
            }
            request.push_str("\r\n");
            let mut bytes = request.into_bytes();
            bytes.extend_from_slice(body);
            self.conn.get_mut().write_all(&bytes).await?;

            let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed");
            let mut line = String::new();
            if self.conn.read_line(&mut line).await? == 0 {
                return Err(eof());
            }
            let status: u16 = line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad status line {line:?}"));
            let mut headers = Vec::new();
            loop {
                line.clear();
                if self.conn.read_line(&mut line).await? == 0 {
                    return Err(eof());
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').expect("header line");
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
            let length: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map(|(_, v)| v.parse().expect("content-length"))
                .expect("the receiver always sends content-length");
            let mut body = vec![0; length];
            self.conn.read_exact(&mut body).await?;
            Ok(Reply {
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        }

        /// Posts `body` signed with `secret` as webhook `id`, timestamped now.
        async fn send(&mut self, secret: &str, id: &str, body: &[u8]) -> std::io::Result<Reply> {
            let ts = unix_now();
            let headers = [
                ("webhook-id", id.to_owned()),
                ("webhook-timestamp", ts.to_string()),
                ("webhook-signature", sign(secret, id, ts, body)),
            ];
            self.post(&headers, body).await
        }
    }

    fn event(kind: &str, event_id: &str, wedding: &str, field: &str, new_value: Value) -> Vec<u8> {
        json!({
            "type": kind,
            "timestamp": "2026-05-01T12:00:00Z",
            "data": {
                "event_id": event_id,
                "organization_id": "org-1",
                "wedding_id": wedding,
                "field_id": field,
                "field_type": "text",
                "old_value": null,
                "new_value": new_value,
            }
        })
        .to_string()
        .into_bytes()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn accepts_dedupes_and_applies_in_arrival_order() {
        let receiver = Receiver::start(SECRET).await;
        assert!(receiver.url().starts_with("http://127.0.0.1:") && receiver.url().ends_with("/hook"));
        let mut client = Client::connect(receiver.addr()).await.unwrap();

        let created = event(
            "field.created",
            "0000000001A2B3C4:00000001",
            "w1",
            "venue",
            json!("Barn"),
        );
        let reply = client
            .send(SECRET, "0000000001A2B3C4:00000001", &created)
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        // A retry of the same webhook-id (new timestamp, new signature) is acknowledged once more
        // but applied once.
        let reply = client
            .send(SECRET, "0000000001A2B3C4:00000001", &created)
            .await
            .unwrap();
        assert_eq!(reply.status, 200);

        let updated = event(
            "field.updated",
            "0000000001A2B3C4:00000002",
            "w1",
            "venue",
            json!("Castle"),
        );
        client
            .send(SECRET, "0000000001A2B3C4:00000002", &updated)
            .await
            .unwrap();
        let guests = event(
            "field.created",
            "0000000001A2B3C4:00000003",
            "w1",
            "guests",
            json!(120),
        );
        client
            .send(SECRET, "0000000001A2B3C4:00000003", &guests)
            .await
            .unwrap();
        let other = event(
            "field.created",
            "0000000001A2B3C4:00000004",
            "w2",
            "venue",
            json!({"n": 1}),
        );
        client
            .send(SECRET, "0000000001A2B3C4:00000004", &other)
            .await
            .unwrap();
        let deleted = event(
            "field.deleted",
            "0000000001A2B3C4:00000005",
            "w1",
            "guests",
            Value::Null,
        );
        client
            .send(SECRET, "0000000001A2B3C4:00000005", &deleted)
            .await
            .unwrap();

        let stats = receiver.stats();
        assert_eq!(
            (
                stats.requests,
                stats.accepted,
                stats.duplicates,
                stats.bad_signatures
            ),
            (6, 5, 1, 0)
        );
        let accepted = receiver.accepted();
        let ids: Vec<&str> = accepted.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "0000000001A2B3C4:00000001",
                "0000000001A2B3C4:00000002",
                "0000000001A2B3C4:00000003",
                "0000000001A2B3C4:00000004",
                "0000000001A2B3C4:00000005"
            ]
        );
        assert_eq!(accepted[0].kind, "field.created");
        assert_eq!(accepted[0].wedding_id.as_deref(), Some("w1"));
        assert_eq!(accepted[0].field_id.as_deref(), Some("venue"));
        assert_eq!(accepted[0].body["data"]["new_value"], json!("Barn"));

        let state = receiver.final_state();
        let expected: BTreeMap<(String, String), Value> = [
            (("w1".to_owned(), "venue".to_owned()), json!("Castle")),
            (("w2".to_owned(), "venue".to_owned()), json!({"n": 1})),
        ]
        .into_iter()
        .collect();
        assert_eq!(state, expected);
        assert!(
            receiver.order_violations().is_empty(),
            "{:?}",
            receiver.order_violations()
        );

        // An older event for w1 after a newer one is an order violation; w2 is unaffected.
        let stale = event(
            "field.updated",
            "0000000001A2B3C4:00000002",
            "w1",
            "venue",
            json!("Barn"),
        );
        client
            .send(SECRET, "late-redelivery-under-a-new-id", &stale)
            .await
            .unwrap();
        let violations = receiver.order_violations();
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(
            violations[0].contains("wedding w1") && violations[0].contains(":00000002"),
            "{violations:?}"
        );
        receiver.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rejects_bad_signatures_and_injects_faults() {
        let receiver = Receiver::start(SECRET).await;
        let mut client = Client::connect(receiver.addr()).await.unwrap();
        let body = event(
            "field.created",
            "0000000001A2B3C4:00000001",
            "w1",
            "venue",
            json!("Barn"),
        );

        // Signed with another secret; then no signature at all; then a stale timestamp.
        let other = "whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA==";
        assert_eq!(client.send(other, "e1", &body).await.unwrap().status, 401);
        let unsigned = [
            ("webhook-id", "e1".to_owned()),
            ("webhook-timestamp", unix_now().to_string()),
        ];
        let reply = client.post(&unsigned, &body).await.unwrap();
        assert_eq!(reply.status, 401);
        assert!(reply.body.contains("webhook-signature"), "{}", reply.body);
        let old = unix_now() - 600;
        let stale = [
            ("webhook-id", "e1".to_owned()),
            ("webhook-timestamp", old.to_string()),
            ("webhook-signature", sign(SECRET, "e1", old, &body)),
        ];
        assert_eq!(client.post(&stale, &body).await.unwrap().status, 401);
        assert_eq!(receiver.stats().bad_signatures, 3);
        assert!(receiver.accepted().is_empty());

        receiver.set_faults(Faults {
            reject_wedding: Some("w1".into()),
            ..Faults::default()
        });
        let reply = client.send(SECRET, "e1", &body).await.unwrap();
        assert_eq!(reply.status, 400);
        let error: Value = serde_json::from_str(&reply.body).unwrap();
        assert!(error["error"].as_str().unwrap().contains("w1"), "{}", reply.body);
        let w2 = event(
            "field.created",
            "0000000001A2B3C4:00000002",
            "w2",
            "venue",
            json!("Barn"),
        );
        assert_eq!(client.send(SECRET, "e2", &w2).await.unwrap().status, 200);

        receiver.set_faults(Faults {
            error_rate: 1.0,
            ..Faults::default()
        });
        assert_eq!(client.send(SECRET, "e3", &w2).await.unwrap().status, 500);
        receiver.set_faults(Faults {
            rate_limit_rate: 1.0,
            retry_after_secs: 7,
            ..Faults::default()
        });
        let reply = client.send(SECRET, "e3", &w2).await.unwrap();
        assert_eq!((reply.status, reply.header("retry-after")), (429, Some("7")));
        receiver.set_faults(Faults {
            gone: true,
            ..Faults::default()
        });
        assert_eq!(client.send(SECRET, "e3", &w2).await.unwrap().status, 410);

        // A hung request is accepted when it arrives, answered late.
        receiver.set_faults(Faults {
            timeout_rate: 1.0,
            hang: Duration::from_millis(300),
            ..Faults::default()
        });
        let started = Instant::now();
        let slow = event(
            "field.updated",
            "0000000001A2B3C4:00000003",
            "w2",
            "venue",
            json!("Hall"),
        );
        let mut other_client = Client::connect(receiver.addr()).await.unwrap();
        let pending =
            tokio::spawn(async move { other_client.send(SECRET, "e4", &slow).await.unwrap().status });
        let deadline = Instant::now() + Duration::from_secs(5);
        while receiver.stats().accepted < 2 {
            assert!(Instant::now() < deadline, "hung request was not accepted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(pending.await.unwrap(), 200);
        assert!(started.elapsed() >= Duration::from_millis(300));

        receiver.set_faults(Faults {
            latency: Duration::from_millis(100),
            ..Faults::default()
        });
        let started = Instant::now();
        assert_eq!(client.send(SECRET, "e4", &w2).await.unwrap().status, 200);
        assert!(started.elapsed() >= Duration::from_millis(100));

        let stats = receiver.stats();
        assert_eq!(
            (
                stats.requests,
                stats.bad_signatures,
                stats.answered_400,
                stats.accepted,
                stats.answered_500,
                stats.answered_429,
                stats.answered_410,
                stats.hung,
                stats.duplicates
            ),
            (10, 3, 1, 2, 1, 1, 1, 1, 1)
        );
        let state = receiver.final_state();
        assert_eq!(
            state.get(&("w2".to_owned(), "venue".to_owned())),
            Some(&json!("Hall"))
        );
        assert_eq!(state.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fault_rates_are_fractions_of_requests() {
        let receiver = Receiver::start(SECRET).await;
        receiver.set_faults(Faults {
            error_rate: 0.25,
            rate_limit_rate: 0.25,
            ..Faults::default()
        });
        let mut client = Client::connect(receiver.addr()).await.unwrap();
        for i in 0..400 {
            let body = event(
                "field.created",
                &format!("0000000001A2B3C4:{i:08}"),
                "w1",
                "f",
                json!(i),
            );
            client.send(SECRET, &format!("e{i}"), &body).await.unwrap();
        }
        let stats = receiver.stats();
        assert_eq!(stats.answered_500 + stats.answered_429 + stats.accepted, 400);
        // Binomial(400, 0.25): mean 100, sd ≈ 8.7.
        for (what, n) in [("500", stats.answered_500), ("429", stats.answered_429)] {
            assert!((50..=150).contains(&n), "{what}: {n} of 400");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_closes_keep_alive_connections_and_start_on_rebinds() {
        let receiver = Receiver::start(SECRET).await;
        let addr = receiver.addr();
        let mut kept = Client::connect(addr).await.unwrap();
        let body = event(
            "field.created",
            "0000000001A2B3C4:00000001",
            "w1",
            "venue",
            json!("Barn"),
        );
        assert_eq!(kept.send(SECRET, "e1", &body).await.unwrap().status, 200);

        assert_eq!(receiver.stop().await, addr);
        // The open keep-alive connection was closed by the receiver, and the port refuses new ones.
        assert!(
            kept.send(SECRET, "e2", &body).await.is_err(),
            "keep-alive connection survived stop"
        );
        let refused = TcpStream::connect(addr).await.map(|_| ()).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

        let again = Receiver::start_on(addr, SECRET).await;
        assert_eq!(again.addr(), addr);
        let mut client = Client::connect(addr).await.unwrap();
        assert_eq!(client.send(SECRET, "e2", &body).await.unwrap().status, 200);
        assert_eq!(again.accepted().len(), 1);

        // pause/resume keep the state (and the dedupe set) of one receiver.
        again.pause().await;
        assert!(TcpStream::connect(addr).await.is_err());
        again.resume().await;
        let mut client = Client::connect(addr).await.unwrap();
        assert_eq!(client.send(SECRET, "e2", &body).await.unwrap().status, 200);
        assert_eq!((again.stats().accepted, again.stats().duplicates), (1, 1));
        again.stop().await;
    }

    /// Throughput with 1,000 keep-alive connections. The client shares the process (and in a debug
    /// build, unoptimized test code); run explicitly:
    /// `cargo test --release --test it support::receiver::tests::load -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread")]
    #[ignore]
    async fn load_1000_keep_alive_connections() {
        let receiver = Receiver::start(SECRET).await;
        let addr = receiver.addr();
        let connections = 1000;
        let per_connection = 50;
        let mut clients = Vec::new();
        for _ in 0..connections {
            clients.push(Client::connect(addr).await.unwrap());
        }
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for (c, mut client) in clients.into_iter().enumerate() {
            tasks.spawn(async move {
                for i in 0..per_connection {
                    let id = format!("{c:08X}:{i:08}");
                    let body = event("field.updated", &id, &format!("w{c}"), "f", json!(i));
                    assert_eq!(client.send(SECRET, &id, &body).await.unwrap().status, 200);
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let elapsed = started.elapsed();
        let total = (connections * per_connection) as f64;
        println!(
            "{total} requests over {connections} connections in {elapsed:?}: {:.0}/s",
            total / elapsed.as_secs_f64()
        );
        assert_eq!(receiver.stats().accepted, total as u64);
        assert!(receiver.order_violations().is_empty());
    }
}
