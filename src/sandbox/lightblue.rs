//! Sandbox of the lightblue API (being built).

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

pub fn fault(status: StatusCode) -> Response {
    status.into_response()
}
