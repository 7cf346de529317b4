//! What one delivery attempt came to, classified in one place: from an HTTP answer or a transport
//! error to delivered, retry later, dead letter now, or disable the integration.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The target accepted the event.
    Delivered { status: u16 },
    /// Try again later. `after` is the target's own signal (`Retry-After`); `endpoint_fault` says
    /// whether the failure speaks against the endpoint as a whole (5xx, timeout, refused
    /// connection) and so counts for its circuit breaker.
    Retry {
        status: Option<u16>,
        error: String,
        after: Option<Duration>,
        endpoint_fault: bool,
    },
    /// Retrying cannot help: the delivery becomes a dead letter now.
    Reject { status: Option<u16>, error: String },
    /// The endpoint is gone (410): the integration is disabled until its configuration changes.
    Disable { status: u16, error: String },
}

impl Outcome {
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Delivered { status } | Outcome::Disable { status, .. } => Some(*status),
            Outcome::Retry { status, .. } | Outcome::Reject { status, .. } => *status,
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            Outcome::Delivered { .. } => None,
            Outcome::Retry { error, .. } | Outcome::Reject { error, .. } | Outcome::Disable { error, .. } => {
                Some(error)
            }
        }
    }
}

/// An HTTP answer of a generic receiver (Standard Webhooks delivery rules): any 2xx is success;
/// 410 disables; 429, 408 and 5xx retry (honouring `Retry-After`); a redirect is a failure (not
/// followed); `webhook-delivery: abort-message` stops retrying; other 4xx retry until the attempts
/// run out, since a receiver's rejection may be temporary.
pub fn classify_http(status: StatusCode, headers: &HeaderMap) -> Outcome {
    let code = status.as_u16();
    if status.is_success() {
        return Outcome::Delivered { status: code };
    }
    if code == 410 {
        return Outcome::Disable {
            status: code,
            error:
                "the endpoint answered 410 Gone: the integration is disabled until its configuration changes"
                    .to_owned(),
        };
    }
    let aborted = headers
        .get("webhook-delivery")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("abort-message"));
    if aborted {
        return Outcome::Reject {
            status: Some(code),
            error: format!("the receiver answered {code} with webhook-delivery: abort-message"),
        };
    }
    let after = retry_after(headers);
    if status.is_redirection() {
        let to = headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(redact_url)
            .unwrap_or_default();
        return Outcome::Retry {
            status: Some(code),
            error: format!(
                "redirect ({code}) to {to:?} not followed: set the integration's url to the final address"
            ),
            after,
            endpoint_fault: false,
        };
    }
    let (endpoint_fault, what) = match code {
        429 => (false, "rate limited"),
        408 => (true, "request timeout"),
        500..=599 => (true, "server error"),
        _ => (false, "rejected the event"),
    };
    Outcome::Retry {
        status: Some(code),
        error: format!("the receiver {what} (HTTP {code})"),
        after,
        endpoint_fault,
    }
}

/// A transport failure: no answer at all.
pub fn classify_transport(e: &reqwest::Error, timeout: Duration) -> Outcome {
    let error = if e.is_timeout() {
        format!("no answer within {timeout:?} ([dispatch] request_timeout or the integration's timeout_ms)")
    } else if e.is_connect() {
        "cannot connect to the endpoint (refused, unreachable or TLS failure)".to_owned()
    } else {
        // reqwest's own message names the URL; keep only what kind of failure it was
        let kind = if e.is_body() {
            "sending the body"
        } else if e.is_request() {
            "sending the request"
        } else {
            "reading the answer"
        };
        format!("the connection failed while {kind}")
    };
    Outcome::Retry {
        status: None,
        error,
        after: None,
        endpoint_fault: true,
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now()).num_milliseconds();
    Some(Duration::from_millis(wait.max(0) as u64))
}

/// A URL without its query and user info, for messages (either may carry a token).
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            format!(
                "{}://{}{}",
                u.scheme(),
                u.host_str().unwrap_or_default(),
                u.port().map(|p| format!(":{p}")).unwrap_or_default()
            ) + u.path()
        }
        Err(_) => "(unparsable url)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn answer(code: u16, headers: &[(&'static str, &str)]) -> Outcome {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        classify_http(StatusCode::from_u16(code).unwrap(), &h)
    }

    #[test]
    fn any_2xx_is_delivered() {
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(answer(code, &[]), Outcome::Delivered { status: code });
        }
    }

    #[test]
    fn gone_disables_and_abort_rejects() {
        assert!(matches!(answer(410, &[]), Outcome::Disable { status: 410, .. }));
        assert!(matches!(
            answer(400, &[("webhook-delivery", "abort-message")]),
            Outcome::Reject {
                status: Some(400),
                ..
            }
        ));
    }

    #[test]
    fn rate_limits_and_server_errors_retry_with_the_receivers_delay() {
        match answer(429, &[("retry-after", "7")]) {
            Outcome::Retry {
                after,
                endpoint_fault,
                ..
            } => {
                assert_eq!(after, Some(Duration::from_secs(7)));
                assert!(!endpoint_fault, "a rate limit is not an outage");
            }
            other => panic!("{other:?}"),
        }
        for code in [500, 502, 503, 504, 408] {
            assert!(matches!(
                answer(code, &[]),
                Outcome::Retry {
                    endpoint_fault: true,
                    ..
                }
            ));
        }
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        match answer(503, &[("retry-after", &later)]) {
            Outcome::Retry { after: Some(d), .. } => assert!(d > Duration::from_secs(25)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn redirects_are_failures_that_name_the_target_without_its_query() {
        match answer(301, &[("location", "https://u:p@example.com/new?token=abc")]) {
            Outcome::Retry { error, .. } => {
                assert!(error.contains("https://example.com/new"), "{error}");
                assert!(!error.contains("token") && !error.contains("u:p"), "{error}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_client_errors_retry_without_blaming_the_endpoint() {
        assert!(matches!(
            answer(400, &[]),
            Outcome::Retry {
                endpoint_fault: false,
                status: Some(400),
                ..
            }
        ));
    }
}
