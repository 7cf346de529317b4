//! Calendar HTTP calls: one request with the bearer token (a 401 refreshes it once), the events
//! list paged, and single-event reads and writes whose expected answers (404, 409, 412) are told
//! apart from the rest, which [`classify`](super::classify) turns into an outcome.

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use super::{classify, Google, API};
use crate::adapters::crm::{self, Answer};
use crate::adapters::outcome::Outcome;

/// What a write came to.
pub(super) enum Written {
    Done,
    /// 412: the etag was stale.
    Stale,
    /// 404 for the event: it is not there (any more).
    Missing,
    /// 409 on insert: the id exists.
    Duplicate,
}

/// One delivery's calls.
pub(super) struct Call<'a> {
    pub(super) g: &'a Google,
    pub(super) client: &'a reqwest::Client,
    pub(super) timeout: Duration,
}

impl Call<'_> {
    fn events_url(&self, event: Option<&str>) -> Url {
        let mut url = self.g.s.base.clone();
        {
            let mut path = url.path_segments_mut().expect("checked: a base URL");
            path.pop_if_empty()
                .extend(["calendars", self.g.s.calendar_id.as_str(), "events"]);
            if let Some(id) = event {
                path.push(id);
            }
        }
        url
    }

    /// One request with the bearer token; a 401 refreshes the token once and repeats it.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Answer, Outcome> {
        let mut refreshed = false;
        loop {
            let token = self.g.access_token(self.client, self.timeout).await?;
            let mut request = self
                .client
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose());
            if let Some(body) = body {
                request = request
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(body).expect("JSON values serialize"));
            }
            if let Some(etag) = if_match {
                request = request.header("if-match", etag);
            }
            let answer = crm::exchange(request, self.timeout).await?;
            if answer.status == StatusCode::UNAUTHORIZED && !refreshed {
                self.g.drop_token(&token);
                refreshed = true;
                continue;
            }
            return Ok(answer);
        }
    }

    fn fail(&self, answer: &Answer, what: &str) -> Outcome {
        classify(answer, &self.g.s.calendar_id, what)
    }

    /// Every event of the wedding, cancelled ones included.
    pub(super) async fn wedding_events(&self, wedding_id: &str) -> Result<Vec<Value>, Outcome> {
        let mut events = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut url = self.events_url(None);
            url.query_pairs_mut()
                .append_pair(
                    "privateExtendedProperty",
                    &format!("fieldsync_wedding={wedding_id}"),
                )
                .append_pair("showDeleted", "true")
                .append_pair("maxResults", "2500");
            if let Some(p) = &page {
                url.query_pairs_mut().append_pair("pageToken", p);
            }
            let answer = self.send(Method::GET, url, None, None).await?;
            if !answer.status.is_success() {
                return Err(self.fail(&answer, "event list"));
            }
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Events {
                #[serde(default)]
                items: Vec<Value>,
                next_page_token: Option<String>,
            }
            let list: Events = answer.json(API)?;
            events.extend(list.items);
            match list.next_page_token {
                Some(p) if !p.is_empty() => page = Some(p),
                _ => return Ok(events),
            }
        }
    }

    pub(super) async fn get(&self, id: &str) -> Result<Option<Value>, Outcome> {
        let answer = self
            .send(Method::GET, self.events_url(Some(id)), None, None)
            .await?;
        match answer.status.as_u16() {
            200 => answer.json(API).map(Some),
            404 => Ok(None),
            _ => Err(self.fail(&answer, "event read")),
        }
    }

    pub(super) async fn insert(&self, event: &Value) -> Result<Written, Outcome> {
        let answer = self
            .send(Method::POST, self.events_url(None), Some(event), None)
            .await?;
        match answer.status.as_u16() {
            200 => answer.json::<Value>(API).map(|_| Written::Done),
            409 => Ok(Written::Duplicate),
            _ => Err(self.fail(&answer, "event insert")),
        }
    }

    pub(super) async fn put(&self, id: &str, event: &Value, etag: Option<&str>) -> Result<Written, Outcome> {
        let answer = self
            .send(Method::PUT, self.events_url(Some(id)), Some(event), etag)
            .await?;
        match answer.status.as_u16() {
            200 => answer.json::<Value>(API).map(|_| Written::Done),
            412 => Ok(Written::Stale),
            404 => Ok(Written::Missing),
            _ => Err(self.fail(&answer, "event update")),
        }
    }

    pub(super) async fn delete(&self, id: &str, etag: Option<&str>) -> Result<Written, Outcome> {
        let answer = self
            .send(Method::DELETE, self.events_url(Some(id)), None, etag)
            .await?;
        match answer.status.as_u16() {
            200 | 204 | 404 | 410 => Ok(Written::Done),
            412 => Ok(Written::Stale),
            _ => Err(self.fail(&answer, "event delete")),
        }
    }
}
