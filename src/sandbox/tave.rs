//! Sandbox of the tave API (being built).

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;

use super::Sandbox;

#[derive(Debug, Default, Serialize)]
pub struct State {}

pub fn routes() -> Router<Arc<Sandbox>> {
    Router::new()
}

pub fn fault(status: StatusCode, _retry_after: u64) -> Response {
    status.into_response()
}
