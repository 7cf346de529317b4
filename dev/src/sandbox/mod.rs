//! Sandboxes of the CRM APIs fieldsync delivers to, served on one port for tests, the demo and
//! the benchmarks (`fieldsync-dev sandbox --listen ADDR`). Each follows its real API's paths, auth,
//! status codes, error bodies, rate-limit signals and idempotency rules (../shared/CRM_APIS.md);
//! behaviour the vendors do not document is marked as an assumption where it is chosen.
//!
//! | prefix | API |
//! |---|---|
//! | `/tave/api/v2/…`, `/tave/webservice/create-lead/{studioId}` | VSCO Workspace (Tave) API v2, New Lead API |
//! | `/google/calendar/v3/…`, `/google/oauth2/token` | Google Calendar v3, OAuth2 token endpoint |
//! | `/stripe/v1/…` | Stripe API v1 |
//! | `/lightblue/api.php`, `/lightblue/apiCheck.php` | Light Blue contact-form API |
//! | `/zapier/hooks/catch/{id}/{key}/` | a Zapier catch hook (the HoneyBook route) |
//!
//! `GET /_sandbox/state` returns every API's records; `POST /_sandbox/faults` sets one API's
//! injected faults (`{"api": "tave", "error_rate": 0.5, "status": 503, "latency_ms": 20}`);
//! `DELETE /_sandbox/faults` clears them all.

pub mod google;
pub mod lightblue;
pub mod stripe;
pub mod tave;
pub mod zapier;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// The APIs a sandbox serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    Tave,
    Google,
    Stripe,
    Lightblue,
    Zapier,
}

impl Api {
    const ALL: [Api; 5] = [Api::Tave, Api::Google, Api::Stripe, Api::Lightblue, Api::Zapier];

    /// An injected failure with `status`, in this API's own error shape.
    fn fault(self, status: StatusCode, retry_after: u64) -> Response {
        match self {
            Api::Tave => tave::fault(status, retry_after),
            Api::Google => google::fault(status),
            Api::Stripe => stripe::fault(status),
            Api::Lightblue => lightblue::fault(status),
            Api::Zapier => zapier::fault(status),
        }
    }
}

/// The credentials the sandboxes accept. The defaults are fixed, documented test values.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Accounts {
    pub tave_api_key: String,
    pub tave_studio_id: String,
    pub tave_lead_secret: String,
    pub google_client_id: String,
    pub google_client_secret: String,
    pub google_refresh_token: String,
    /// Lifetime of the access tokens the token endpoint issues.
    pub google_token_seconds: u64,
    pub stripe_secret_key: String,
    pub lightblue_key: String,
    /// Light Blue answers `-20` to requests that did not come over HTTPS; the sandbox serves
    /// plain HTTP, so this is off unless a TLS proxy sets `X-Forwarded-Proto`.
    pub lightblue_require_https: bool,
    pub zapier_hook_id: String,
    pub zapier_hook_key: String,
}

impl Default for Accounts {
    fn default() -> Accounts {
        Accounts {
            tave_api_key: "sandbox-tave-api-key".into(),
            tave_studio_id: "sandboxstudio".into(),
            tave_lead_secret: "sandbox-tave-lead-secret".into(),
            google_client_id: "sandbox-client.apps.googleusercontent.com".into(),
            google_client_secret: "sandbox-google-client-secret".into(),
            google_refresh_token: "sandbox-google-refresh-token".into(),
            google_token_seconds: 3599,
            stripe_secret_key: "sk_test_sandbox".into(),
            lightblue_key: "sandbox-lightblue-key".into(),
            lightblue_require_https: false,
            zapier_hook_id: "123456".into(),
            zapier_hook_key: "sandboxhook".into(),
        }
    }
}

/// One API's injected faults, set with `POST /_sandbox/faults`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    pub api: Option<Api>,
    /// Fraction of requests (0..=1) answered with `status` instead of being served.
    pub error_rate: f64,
    /// The next `fail_next` requests are answered with `status` (deterministic faults).
    pub fail_next: u32,
    /// The injected status (default 503; 429 gives the API's rate-limit answer).
    pub status: Option<u16>,
    /// Added before every answer.
    pub latency_ms: u64,
    /// The API's rate limit: more requests per second than this get its rate-limit answer.
    pub rate_limit_per_second: Option<f64>,
    /// `Retry-After` seconds on rate-limit answers (APIs that send one).
    pub retry_after_secs: Option<u64>,
    /// Google only: every access token issued so far stops working (401), once.
    pub expire_tokens: bool,
    /// Google only: refresh tokens are revoked (`invalid_grant`) while set.
    pub revoke_refresh_tokens: bool,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// All sandboxes' state.
pub struct Sandbox {
    pub accounts: Accounts,
    faults: Mutex<HashMap<Api, (Faults, Option<Bucket>)>>,
    exchanges: Mutex<std::collections::VecDeque<Exchange>>,
    pub tave: Mutex<tave::State>,
    pub google: Mutex<google::State>,
    pub stripe: Mutex<stripe::State>,
    pub lightblue: Mutex<lightblue::State>,
    pub zapier: Mutex<zapier::State>,
}

/// Locks a sandbox's state; a panicked handler leaves the data usable.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sandbox {
    pub fn new(accounts: Accounts) -> Arc<Sandbox> {
        Arc::new(Sandbox {
            accounts,
            faults: Mutex::new(HashMap::new()),
            exchanges: Mutex::default(),
            tave: Mutex::default(),
            google: Mutex::default(),
            stripe: Mutex::default(),
            lightblue: Mutex::default(),
            zapier: Mutex::default(),
        })
    }

    /// The current faults of one API.
    pub fn faults(&self, api: Api) -> Faults {
        lock(&self.faults)
            .get(&api)
            .map(|f| f.0.clone())
            .unwrap_or_default()
    }

    /// Takes a Google `expire_tokens` request (true once after it was set).
    pub fn take_token_expiry(&self) -> bool {
        let mut all = lock(&self.faults);
        match all.get_mut(&Api::Google) {
            Some((f, _)) if f.expire_tokens => {
                f.expire_tokens = false;
                true
            }
            _ => false,
        }
    }

    /// What happens to the next request of `api`: its latency, and an injected status if any.
    fn decide(&self, api: Api) -> (Duration, Option<(StatusCode, u64)>) {
        let mut all = lock(&self.faults);
        let Some((f, bucket)) = all.get_mut(&api) else {
            return (Duration::ZERO, None);
        };
        let latency = Duration::from_millis(f.latency_ms);
        let status = f
            .status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let retry_after = f.retry_after_secs.unwrap_or(1);
        if let Some(rate) = f.rate_limit_per_second.filter(|r| *r > 0.0) {
            let now = Instant::now();
            let b = bucket.get_or_insert(Bucket {
                tokens: rate.max(1.0),
                at: now,
            });
            b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate.max(1.0));
            b.at = now;
            if b.tokens < 1.0 {
                return (latency, Some((StatusCode::TOO_MANY_REQUESTS, retry_after)));
            }
            b.tokens -= 1.0;
        }
        if f.fail_next > 0 {
            f.fail_next -= 1;
            return (latency, Some((status, retry_after)));
        }
        if f.error_rate > 0.0 && rand::random::<f64>() < f.error_rate {
            return (latency, Some((status, retry_after)));
        }
        (latency, None)
    }

    fn state_json(&self) -> serde_json::Value {
        serde_json::json!({
            "tave": &*lock(&self.tave),
            "google": &*lock(&self.google),
            "stripe": &*lock(&self.stripe),
            "lightblue": &*lock(&self.lightblue),
            "zapier": &*lock(&self.zapier),
        })
    }
}

/// One request a sandbox answered, kept for contract tests (in memory only: it holds credentials).
#[derive(Clone, Debug)]
pub struct Exchange {
    pub api: Api,
    pub method: String,
    /// The path below the API's prefix, e.g. `/api/v2/job` for `/tave/api/v2/job`.
    pub path: String,
    pub query: Option<String>,
    pub request_headers: axum::http::HeaderMap,
    pub request_body: bytes::Bytes,
    pub status: u16,
    pub response_headers: axum::http::HeaderMap,
    pub response_body: bytes::Bytes,
    /// True when the answer was an injected fault, not the API's own.
    pub injected: bool,
}

/// How many exchanges the sandbox keeps (the oldest are dropped).
const EXCHANGES_KEPT: usize = 20_000;
const BODY_LIMIT: usize = 16 << 20;

async fn inject(State((sandbox, api)): State<(Arc<Sandbox>, Api)>, request: Request, next: Next) -> Response {
    let (latency, fault) = sandbox.decide(api);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (parts, body) = request.into_parts();
    let request_body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response(),
    };
    let mut exchange = Exchange {
        api,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        request_headers: parts.headers.clone(),
        request_body: request_body.clone(),
        status: 0,
        response_headers: Default::default(),
        response_body: Default::default(),
        injected: fault.is_some(),
    };
    let response = match fault {
        Some((status, retry_after)) => api.fault(status, retry_after),
        None => {
            next.run(Request::from_parts(parts, axum::body::Body::from(request_body)))
                .await
        }
    };
    let (parts, body) = response.into_parts();
    let response_body = axum::body::to_bytes(body, BODY_LIMIT).await.unwrap_or_default();
    exchange.status = parts.status.as_u16();
    exchange.response_headers = parts.headers.clone();
    exchange.response_body = response_body.clone();
    {
        let mut log = lock(&sandbox.exchanges);
        if log.len() == EXCHANGES_KEPT {
            log.pop_front();
        }
        log.push_back(exchange);
    }
    Response::from_parts(parts, axum::body::Body::from(response_body))
}

async fn set_faults(State(sandbox): State<Arc<Sandbox>>, Json(faults): Json<Faults>) -> Response {
    let Some(api) = faults.api else {
        return (
            StatusCode::BAD_REQUEST,
            format!("name the API: \"api\" is one of {:?}", Api::ALL),
        )
            .into_response();
    };
    lock(&sandbox.faults).insert(api, (faults, None));
    StatusCode::NO_CONTENT.into_response()
}

async fn clear_faults(State(sandbox): State<Arc<Sandbox>>) -> StatusCode {
    lock(&sandbox.faults).clear();
    StatusCode::NO_CONTENT
}

/// Every sandbox under its prefix, with the control routes.
pub fn router(sandbox: Arc<Sandbox>) -> Router {
    let with_faults = |api: Api, routes: Router<Arc<Sandbox>>| {
        routes.layer(from_fn_with_state((sandbox.clone(), api), inject))
    };
    Router::new()
        .nest("/tave", with_faults(Api::Tave, tave::routes()))
        .nest("/google", with_faults(Api::Google, google::routes()))
        .nest("/stripe", with_faults(Api::Stripe, stripe::routes()))
        .nest("/lightblue", with_faults(Api::Lightblue, lightblue::routes()))
        .nest("/zapier", with_faults(Api::Zapier, zapier::routes()))
        .route(
            "/_sandbox/state",
            get(|State(s): State<Arc<Sandbox>>| async move { Json(s.state_json()) }),
        )
        .route(
            "/_sandbox/faults",
            axum::routing::post(set_faults).delete(clear_faults),
        )
        .with_state(sandbox)
}

/// A running sandbox server.
pub struct Running {
    pub addr: SocketAddr,
    pub sandbox: Arc<Sandbox>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Running {
    /// `http://addr`, the base of every sandbox URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state(&self) -> serde_json::Value {
        self.sandbox.state_json()
    }

    pub fn set_faults(&self, faults: Faults) {
        let api = faults.api.expect("faults name their API");
        lock(&self.sandbox.faults).insert(api, (faults, None));
    }

    /// The next `n` requests to `api` are answered with `status` in that API's error shape.
    pub fn fail_next(&self, api: Api, n: u32, status: u16) {
        self.set_faults(Faults {
            api: Some(api),
            fail_next: n,
            status: Some(status),
            ..Faults::default()
        });
    }

    pub fn clear_faults(&self) {
        lock(&self.sandbox.faults).clear();
    }

    /// The exchanges of one API so far, oldest first.
    pub fn exchanges(&self, api: Api) -> Vec<Exchange> {
        lock(&self.sandbox.exchanges)
            .iter()
            .filter(|e| e.api == api)
            .cloned()
            .collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves the sandboxes on `listener` until the returned handle is dropped.
pub fn spawn(listener: tokio::net::TcpListener, accounts: Accounts) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let sandbox = Sandbox::new(accounts);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = router(sandbox.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(Running {
        addr,
        sandbox,
        stop: Some(stop),
    })
}

/// A lowercase ULID (VSCO Workspace ids): 48-bit milliseconds and 80 random bits, Crockford base32.
pub fn ulid() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let value = (millis << 80) | (rand::random::<u128>() & ((1u128 << 80) - 1));
    (0..26)
        .rev()
        .map(|i| ALPHABET[((value >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// The current time, RFC 3339 UTC seconds.
pub fn now_utc() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
