//! HTTP calls to the v2 API: one request with its answer classified, collections paged, deletes
//! that tolerate a 404, and read-only properties left out of writes.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::{classify, not_documented, shape_error, Fail, Obj, Tave, API};
use crate::adapters::crm;

pub(super) fn without(v: &Value, read_only: &[&str]) -> Obj {
    let mut o = v.as_object().cloned().unwrap_or_default();
    for k in read_only {
        o.remove(*k);
    }
    o
}

/// One delivery's calls.
pub(super) struct Call<'a> {
    pub(super) tave: &'a Tave,
    pub(super) client: &'a reqwest::Client,
    pub(super) timeout: Duration,
}

impl Call<'_> {
    /// One request; 2xx gives the JSON body (`Null` for 204), 404 gives `Fail::NotFound`, every
    /// other answer its outcome. `what` names the operation in messages (no ids, no values).
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value, Fail> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.tave.base))
            .header("x-api-key", self.tave.api_key.expose())
            .header("accept", "application/json");
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(b) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(b).expect("json values serialize"));
        }
        let answer = crm::exchange(request, self.timeout).await?;
        match answer.status.as_u16() {
            204 => Ok(Value::Null),
            200..=299 => {
                let v: Value = answer.json(API)?;
                if v.is_object() {
                    Ok(v)
                } else {
                    Err(not_documented(&answer, what))
                }
            }
            404 => Err(Fail::NotFound),
            _ => Err(Fail::Outcome(classify(&answer, what))),
        }
    }

    pub(super) async fn get(&self, path: &str, query: &[(&str, String)], what: &str) -> Result<Value, Fail> {
        self.send(Method::GET, path, query, None, what).await
    }

    /// Every item of a collection, page by page.
    pub(super) async fn list_all(
        &self,
        path: &str,
        query: &[(&str, String)],
        what: &str,
    ) -> Result<Vec<Value>, Fail> {
        let mut items = Vec::new();
        let mut page = 1u64;
        loop {
            let (batch, last) = self.page(path, query, page, what).await?;
            items.extend(batch);
            if last {
                return Ok(items);
            }
            page += 1;
        }
    }

    /// One page of a collection (page parameters only past the first page), and whether it is
    /// the last one (or the thousandth, where paging stops).
    pub(super) async fn page(
        &self,
        path: &str,
        query: &[(&str, String)],
        page: u64,
        what: &str,
    ) -> Result<(Vec<Value>, bool), Fail> {
        let mut q = query.to_vec();
        if page > 1 {
            q.push(("page", page.to_string()));
            q.push(("pageSize", "100".to_owned()));
        }
        let mut answer = self.get(path, &q, what).await?;
        let Some(Value::Array(items)) = answer.get_mut("items").map(Value::take) else {
            return Err(Fail::Outcome(shape_error(what)));
        };
        let pages = answer["meta"]["totalPages"].as_u64().unwrap_or(1);
        let last = page >= pages || items.is_empty() || page >= 1000;
        Ok((items, last))
    }

    /// Creates an entity; a 404 here means the API is not the documented one.
    pub(super) async fn post(&self, path: &str, body: &Value, what: &str) -> Result<Value, Fail> {
        match self.send(Method::POST, path, &[], Some(body), what).await {
            Err(Fail::NotFound) => Err(Fail::Outcome(shape_error(what))),
            other => other,
        }
    }

    /// Writes an entity whole (the caller leaves out its read-only properties).
    pub(super) async fn put(&self, path: &str, body: Obj, what: &str) -> Result<Value, Fail> {
        self.send(Method::PUT, path, &[], Some(&Value::Object(body)), what)
            .await
    }

    pub(super) async fn delete(&self, path: &str, what: &str) -> Result<(), Fail> {
        match self.send(Method::DELETE, path, &[], None, what).await {
            Ok(_) | Err(Fail::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
