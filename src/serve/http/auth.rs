//! Who may call the HTTP endpoints that act or show personal data: bearer tokens configured under
//! `[http] tokens`, each with a name (what the audit trail records) and a role.
//! - `POST /deliveries/requeue`, `/pause` and `/resume` need an `operate` token, always: without
//!   one, 401; with a `read` token, 403 (recorded in the audit trail as denied).
//! - `GET /deliveries/dead`, `/deliveries/log` and `/audit` (dead letters' errors can quote what a
//!   CRM answered about a wedding) need a `read` or `operate` token once any token is configured.
//! - `/healthz`, `/readyz`, `/metrics`, `/status`, `/queue` and `/deliveries` show no personal
//!   data and stay open to probes and scrapers. The live stream has its own tokens (`live`).

use std::net::SocketAddr;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::config::Role;
use crate::ops::Actor;

/// The client's address, set on every request by the server.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// Constant-time comparison, so a token cannot be guessed byte by byte from response times.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of a request.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// A request refused: 401 (no valid token) or 403 (a token whose role is too low), with why.
pub struct Refused {
    status: StatusCode,
    why: String,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        if self.status == StatusCode::UNAUTHORIZED {
            (self.status, [("www-authenticate", "Bearer")], self.why).into_response()
        } else {
            (self.status, self.why).into_response()
        }
    }
}

/// The actor of a request that needs `need` to do `action` (on `integration`), or the answer
/// that refuses it. Reads (`Role::Read`) are open while no token is configured.
pub fn authorize(
    st: &AppState,
    headers: &HeaderMap,
    peer: Option<Peer>,
    need: Role,
    action: &str,
    integration: Option<&str>,
) -> Result<Actor, Refused> {
    let from = peer.map(|p| p.0.to_string());
    if need == Role::Read && st.tokens.is_empty() {
        return Ok(Actor {
            name: "anonymous".to_owned(),
            role: Role::Read,
            via: "http",
            from,
        });
    }
    let offered = bearer(headers).unwrap_or_default().as_bytes();
    // every token is compared, so the time taken does not say which one was close
    let found = st.tokens.iter().fold(None, |found, t| {
        if same(offered, t.secret.expose().as_bytes()) {
            Some(t)
        } else {
            found
        }
    });
    let Some(token) = found else {
        let why = if st.tokens.is_empty() {
            format!("{action} needs an operator's bearer token: configure one under [http] tokens with role = \"operate\" and send Authorization: Bearer <token>\n")
        } else {
            format!("{action} needs a bearer token of [http] tokens (Authorization: Bearer <token>): missing or wrong\n")
        };
        tracing::warn!(action, from = ?from, "http: refused a request without a valid bearer token");
        return Err(Refused {
            status: StatusCode::UNAUTHORIZED,
            why,
        });
    };
    let actor = Actor {
        name: token.name.clone(),
        role: token.role,
        via: "http",
        from,
    };
    if token.role < need {
        let why = format!(
            "token {:?} has role {}: {action} needs role {}",
            token.name,
            token.role.as_str(),
            need.as_str()
        );
        if need == Role::Operate {
            st.ops()
                .refused(&actor, action, integration.map(str::to_owned), &why);
        }
        return Err(Refused {
            status: StatusCode::FORBIDDEN,
            why: format!("{why}\n"),
        });
    }
    Ok(actor)
}
