//! The OAuth2 token endpoint (`POST /oauth2/token`, refresh-token grant only) and the bearer
//! check every calendar method makes: tokens it issued and that have not expired, else 401
//! `authError` with `WWW-Authenticate`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::json;

use super::errors::{auth_error, error};
use super::{form_pairs, param};
use crate::sandbox::{lock, Api, Sandbox};

const SCOPE: &str = "https://www.googleapis.com/auth/calendar.events";

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": code, "error_description": description})),
    )
        .into_response()
}

pub(super) async fn token(AxState(sandbox): AxState<Arc<Sandbox>>, body: Bytes) -> Response {
    let form = form_pairs(&String::from_utf8_lossy(&body));
    let a = &sandbox.accounts;
    match param(&form, "grant_type") {
        Some("refresh_token") => {}
        Some(other) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("Invalid grant_type: {other}"),
            )
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Invalid grant_type: ",
            )
        }
    }
    if param(&form, "client_id") != Some(a.google_client_id.as_str())
        || param(&form, "client_secret") != Some(a.google_client_secret.as_str())
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The OAuth client was not found.",
        );
    }
    let Some(refresh) = param(&form, "refresh_token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: refresh_token",
        );
    };
    if refresh != a.google_refresh_token || sandbox.faults(Api::Google).revoke_refresh_tokens {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Token has been expired or revoked.",
        );
    }
    let access = format!("ya29.sandbox-{:032x}", rand::random::<u128>());
    let lifetime = a.google_token_seconds;
    {
        let mut state = lock(&sandbox.google);
        state
            .tokens
            .insert(access.clone(), Instant::now() + Duration::from_secs(lifetime));
        state.tokens_issued += 1;
    }
    Json(json!({
        "access_token": access,
        "expires_in": lifetime,
        "scope": SCOPE,
        "token_type": "Bearer",
    }))
    .into_response()
}

/// Checks the bearer token; `Err` is the 401 answer.
pub(super) fn authorize(sandbox: &Sandbox, headers: &HeaderMap) -> Result<(), Response> {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "global",
            "required",
            "Login Required.",
            Some(("header", "Authorization")),
        ));
    };
    let expire_all = sandbox.take_token_expiry();
    let mut state = lock(&sandbox.google);
    if expire_all {
        state.tokens.clear();
    }
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .unwrap_or_default();
    match state.tokens.get(token) {
        Some(until) if *until > Instant::now() => Ok(()),
        _ => Err(auth_error()),
    }
}
