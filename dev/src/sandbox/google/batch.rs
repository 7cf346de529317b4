//! Batch requests (`POST /batch/calendar/v3`, the discovery document's `batchPath`): a
//! `multipart/mixed` body of `application/http` parts, each one calendar request (request line,
//! headers, body), answered with a `multipart/mixed` body of `application/http` parts carrying
//! `Content-ID: response-<the part's Content-ID>`, in order. A part without `Authorization`
//! uses the batch's. Each part is served as if it came alone: its own injected faults, its own
//! `fields`. At most 50 parts, as the Calendar batch guide says.
//!
//! Assumptions [G]: part targets may name the path with or without the sandbox's `/google`
//! prefix or as an absolute URL; a malformed batch is a 400 `badRequest`; more than 50 parts is
//! a 400 `batchSizeTooLarge`.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::IntoResponse;
use bytes::Bytes;

use super::{bad_request, not_found, Response, Sandbox, StatusCode};
use crate::sandbox::Api;

const MAX_PARTS: usize = 50;

/// One sub-request of a batch.
struct Part {
    content_id: Option<String>,
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

fn boundary(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get("content-type")?.to_str().ok()?;
    if !ct
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/mixed")
    {
        return None;
    }
    ct.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.eq_ignore_ascii_case("boundary")
            .then(|| v.trim_matches('"').to_owned())
    })
}

/// Splits `text` at its first blank line (CRLF or LF).
fn head_and_body(text: &str) -> (&str, &str) {
    match (text.find("\r\n\r\n"), text.find("\n\n")) {
        (Some(a), Some(b)) if b < a => (&text[..b], &text[b + 2..]),
        (Some(a), _) => (&text[..a], &text[a + 4..]),
        (None, Some(b)) => (&text[..b], &text[b + 2..]),
        (None, None) => (text, ""),
    }
}

fn header_lines(head: &str) -> impl Iterator<Item = (&str, &str)> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
}

fn parse_part(raw: &str, outer: &HeaderMap) -> Result<Part, String> {
    let (part_head, http) = head_and_body(raw.trim_start_matches(['\r', '\n']));
    let content_id = header_lines(part_head)
        .find(|(k, _)| k.eq_ignore_ascii_case("content-id"))
        .map(|(_, v)| v.to_owned());
    let (head, body) = head_and_body(http.trim_start_matches(['\r', '\n']));
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut words = request_line.split_whitespace();
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return Err(format!("a part has no request line: {request_line:?}"));
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| format!("bad method {method:?}"))?;
    let target = match target.find("://") {
        Some(i) => target[i + 3..].find('/').map_or("/", |j| &target[i + 3 + j..]),
        None => target,
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    let path = path.strip_prefix("/google").unwrap_or(path).to_owned();
    let mut headers = HeaderMap::new();
    for (k, v) in header_lines(&lines.collect::<Vec<_>>().join("\n")) {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            headers.append(k, v);
        }
    }
    if !headers.contains_key("authorization") {
        if let Some(a) = outer.get("authorization") {
            headers.insert("authorization", a.clone());
        }
    }
    Ok(Part {
        content_id,
        method,
        path,
        query,
        headers,
        body: Bytes::from(body.trim_end_matches(['\r', '\n']).to_owned()),
    })
}

/// Percent-decoding of one path segment (the library escapes `@` in calendar ids).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Serves one part with the calendar handlers.
async fn serve(sandbox: Arc<Sandbox>, p: Part) -> Response {
    if let (_, Some((status, _))) = sandbox.decide(Api::Google) {
        return super::fault(status);
    }
    let segments: Vec<String> = p
        .path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let state = AxState(sandbox);
    let query = p.query.clone();
    let answer = async move {
        match (&p.method, s.as_slice()) {
            (&Method::GET, ["calendar", "v3", "calendars", cal]) => {
                super::get_calendar(state, Path(cal.to_string()), p.headers).await
            }
            (&Method::GET, ["calendar", "v3", "calendars", cal, "events"]) => {
                super::list(state, Path(cal.to_string()), RawQuery(p.query.clone()), p.headers).await
            }
            (&Method::POST, ["calendar", "v3", "calendars", cal, "events"]) => {
                super::insert(state, Path(cal.to_string()), p.headers, p.body).await
            }
            (&Method::POST, ["calendar", "v3", "calendars", cal, "events", "watch"]) => {
                super::watch(state, Path(cal.to_string()), p.headers, p.body).await
            }
            (&Method::POST, ["calendar", "v3", "channels", "stop"]) => {
                super::stop(state, p.headers, p.body).await
            }
            (m, ["calendar", "v3", "calendars", cal, "events", id]) => {
                let at = Path((cal.to_string(), id.to_string()));
                match *m {
                    Method::GET => super::get_event(state, at, p.headers).await,
                    Method::PUT => super::update(state, at, p.headers, p.body).await,
                    Method::PATCH => super::patch(state, at, p.headers, p.body).await,
                    Method::DELETE => super::delete_event(state, at, p.headers).await,
                    _ => not_found(),
                }
            }
            _ => not_found(),
        }
    };
    super::with_fields(query.as_deref(), answer).await
}

/// `POST /batch/calendar/v3`.
pub(super) async fn batch(
    AxState(sandbox): AxState<Arc<Sandbox>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(boundary) = boundary(&headers) else {
        return bad_request(
            "badRequest",
            "Batch requests must be multipart/mixed with a boundary.",
        );
    };
    let text = String::from_utf8_lossy(&body);
    let delimiter = format!("--{boundary}");
    let raw_parts: Vec<&str> = text
        .split(delimiter.as_str())
        .skip(1)
        .take_while(|p| !p.starts_with("--"))
        .collect();
    if raw_parts.len() > MAX_PARTS {
        return bad_request(
            "batchSizeTooLarge",
            &format!("A batch may hold at most {MAX_PARTS} requests."),
        );
    }
    let mut parts = Vec::new();
    for raw in raw_parts {
        match parse_part(raw, &headers) {
            Ok(p) => parts.push(p),
            Err(why) => return bad_request("badRequest", &format!("Malformed batch part: {why}")),
        }
    }
    let out_boundary = format!("batch_{:024x}", rand::random::<u128>() >> 32);
    let mut out = String::new();
    for p in parts {
        let id = p.content_id.clone();
        let response = serve(sandbox.clone(), p).await;
        let (head, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
        out.push_str(&format!("--{out_boundary}\r\nContent-Type: application/http\r\n"));
        if let Some(id) = id {
            let inner = id.trim_start_matches('<').trim_end_matches('>');
            out.push_str(&format!("Content-ID: <response-{inner}>\r\n"));
        }
        out.push_str(&format!(
            "\r\nHTTP/1.1 {} {}\r\n",
            head.status.as_u16(),
            head.status.canonical_reason().unwrap_or("")
        ));
        for (k, v) in &head.headers {
            if let Ok(v) = v.to_str() {
                let v = if v == "application/json" {
                    "application/json; charset=UTF-8"
                } else {
                    v
                };
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        out.push_str(&String::from_utf8_lossy(&body));
        out.push_str("\r\n");
    }
    out.push_str(&format!("--{out_boundary}--\r\n"));
    let mut r = (StatusCode::OK, out).into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_str(&format!("multipart/mixed; boundary={out_boundary}")).expect("ascii"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_batch_parts_keep_their_target_headers_and_body() {
        let mut outer = HeaderMap::new();
        outer.insert("authorization", HeaderValue::from_static("Bearer t"));
        let raw = "\r\nContent-Type: application/http\r\nContent-ID: <a+1>\r\n\r\n\
                   PATCH https://www.googleapis.com/calendar/v3/calendars/x%40group/events/e1?fields=id HTTP/1.1\r\n\
                   If-Match: \"3\"\r\n\r\n{\"summary\":\"s\"}\r\n";
        let p = parse_part(raw, &outer).unwrap();
        assert_eq!(p.content_id.as_deref(), Some("<a+1>"));
        assert_eq!(p.method, Method::PATCH);
        assert_eq!(p.path, "/calendar/v3/calendars/x%40group/events/e1");
        assert_eq!(p.query.as_deref(), Some("fields=id"));
        assert_eq!(p.headers["if-match"], "\"3\"");
        assert_eq!(p.headers["authorization"], "Bearer t");
        assert_eq!(&p.body[..], b"{\"summary\":\"s\"}");
        assert_eq!(percent_decode("x%40group%2"), "x@group%2");
    }
}
