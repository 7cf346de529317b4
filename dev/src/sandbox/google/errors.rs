//! Google's error envelope (`{"error":{"errors":[…],"code":N,"message":…}}`), the reasons the
//! sandbox answers with, and the injected faults in the same shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::utf8_header;

/// An injected failure in Google's error shape (no `Retry-After`: Google does not promise one).
pub fn fault(status: StatusCode) -> Response {
    let (domain, reason, message) = match status.as_u16() {
        403 | 429 => ("usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
        500 => ("global", "backendError", "Backend Error"),
        503 => ("global", "backendError", "The service is currently unavailable."),
        400 => ("global", "badRequest", "Bad Request"),
        401 => return auth_error(),
        404 => return not_found(),
        409 => ("global", "conflict", "Conflict"),
        410 => return deleted(),
        412 => ("global", "conditionNotMet", "Precondition Failed"),
        _ => ("global", "backendError", "Backend Error"),
    };
    error(status, domain, reason, message, None)
}

/// Google's error envelope: `{"error":{"errors":[…],"code":N,"message":…}}`.
pub(super) fn error(
    status: StatusCode,
    domain: &str,
    reason: &str,
    message: &str,
    location: Option<(&str, &str)>,
) -> Response {
    let mut item = json!({"domain": domain, "reason": reason, "message": message});
    if let Some((kind, at)) = location {
        item["locationType"] = json!(kind);
        item["location"] = json!(at);
    }
    // the charset is set here too: injected faults do not pass through the routes' layer
    utf8_header(
        (
            status,
            Json(json!({"error": {"errors": [item], "code": status.as_u16(), "message": message}})),
        )
            .into_response(),
    )
}

pub(super) fn auth_error() -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "global",
        "authError",
        "Invalid Credentials",
        Some(("header", "Authorization")),
    );
    r.headers_mut().insert(
        "www-authenticate",
        axum::http::HeaderValue::from_static(
            "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
        ),
    );
    r
}

pub(super) fn bad_request(reason: &str, message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "global", reason, message, None)
}

pub(super) fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "global", "notFound", "Not Found", None)
}

/// 410 `deleted`: the event was deleted (it is a cancelled tombstone).
pub(super) fn deleted() -> Response {
    error(
        StatusCode::GONE,
        "global",
        "deleted",
        "Resource has been deleted",
        None,
    )
}

/// 400 `timeRangeEmpty`: an event's end before its start, or a list's `timeMax` not after
/// `timeMin` (`location` names that parameter).
pub(super) fn time_range_empty(location: Option<(&str, &str)>) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "calendar",
        "timeRangeEmpty",
        "The specified time range is empty.",
        location,
    )
}
