//! `events.list`: `showDeleted`, paging (`maxResults`, `pageToken`, `nextPageToken`), sync tokens
//! (`nextSyncToken` on the last page only, 410 `fullSyncRequired` for an unknown one) and the
//! filters and orderings of [`list_query`](super::list_query).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::auth::authorize;
use super::errors::{bad_request, error};
use super::{calendar_email, finish, form_pairs, list_query, now_millis, param, Calendar};
use crate::sandbox::{lock, Sandbox};

const MAX_PAGE: usize = 2500;
const DEFAULT_PAGE: usize = 250;

pub(super) async fn list(
    AxState(sandbox): AxState<Arc<Sandbox>>,
    Path(calendar): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    finish((|| {
        authorize(&sandbox, &headers)?;
        let q = form_pairs(query.as_deref().unwrap_or_default());
        let bool_param = |k: &str| -> Result<bool, Response> {
            match param(&q, k) {
                None | Some("false") => Ok(false),
                Some("true") => Ok(true),
                Some(_) => Err(bad_request(
                    "invalidBoolean",
                    &format!("Invalid boolean value for {k}."),
                )),
            }
        };
        let show_deleted = bool_param("showDeleted")?;
        let page_size = match param(&q, "maxResults") {
            None => DEFAULT_PAGE,
            Some(n) => match n.parse::<usize>() {
                Ok(n) if n >= 1 => n.min(MAX_PAGE),
                _ => return Err(bad_request("invalid", "Invalid value for: maxResults")),
            },
        };
        let filter = list_query::Filter::parse(&q, bool_param("singleEvents")?)?;
        let state = lock(&sandbox.google);
        let since = match param(&q, "syncToken") {
            None => None,
            Some(token) => {
                let filtered = [
                    "iCalUID",
                    "orderBy",
                    "privateExtendedProperty",
                    "q",
                    "sharedExtendedProperty",
                    "timeMin",
                    "timeMax",
                    "updatedMin",
                ]
                .iter()
                .find(|k| param(&q, k).is_some());
                if let Some(k) = filtered {
                    return Err(bad_request(
                        "invalid",
                        &format!("Sync token cannot be used with the {k} parameter."),
                    ));
                }
                match parse_sync_token(token) {
                    Some((epoch, writes)) if epoch == state.sync_epoch && writes <= state.writes => {
                        Some(writes)
                    }
                    _ => {
                        return Err(error(
                            StatusCode::GONE,
                            "calendar",
                            "fullSyncRequired",
                            "Sync token is no longer valid, a full sync is required.",
                            Some(("parameter", "syncToken")),
                        ))
                    }
                }
            }
        };
        let offset = match param(&q, "pageToken") {
            None => 0,
            Some(t) => t
                .strip_prefix("pg")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| bad_request("invalid", "Invalid page token value."))?,
        };
        let empty = Calendar::default();
        let cal = state.calendars.get(&calendar).unwrap_or(&empty);
        let mut matching: Vec<&Value> = cal
            .events
            .iter()
            .filter(|e| match since {
                Some(w) => {
                    cal.changed
                        .get(e["id"].as_str().unwrap_or_default())
                        .copied()
                        .unwrap_or(0)
                        > w
                }
                None => show_deleted || filter.lists_deleted() || e["status"] != "cancelled",
            })
            .filter(|e| filter.matches(e))
            .collect();
        filter.sort(&mut matching);
        let page: Vec<Value> = matching
            .iter()
            .skip(offset)
            .take(page_size)
            .map(|e| (*e).clone())
            .collect();
        let mut answer = json!({
            "kind": "calendar#events",
            "etag": format!("\"p{:x}\"", state.last_etag),
            "summary": calendar_email(&calendar),
            "description": "",
            "updated": now_millis(),
            "timeZone": "UTC",
            "accessRole": "owner",
            "defaultReminders": [{"method": "popup", "minutes": 30}],
            "items": page,
        });
        if offset + page_size < matching.len() {
            answer["nextPageToken"] = json!(format!("pg{}", offset + page_size));
        } else {
            answer["nextSyncToken"] = json!(sync_token(state.sync_epoch, state.writes));
        }
        Ok(Json(answer).into_response())
    })())
}

fn sync_token(epoch: u64, writes: u64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("sync:{epoch}:{writes}"))
}

fn parse_sync_token(token: &str) -> Option<(u64, u64)> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(token).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let mut parts = text.strip_prefix("sync:")?.split(':');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}
