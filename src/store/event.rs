//! The field-sync event as stored beside its change record (see `crate::events` for how it is
//! built and what its JSON looks like). It lives here so that the store needs nothing above it.

use serde::{Deserialize, Serialize};

use super::context::WeddingContext;
use super::record::EventId;
use crate::fields::Priority;
use crate::lsn::Lsn;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "field.created")]
    Created,
    #[serde(rename = "field.updated")]
    Updated,
    #[serde(rename = "field.deleted")]
    Deleted,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub timestamp: String,
    pub data: EventData,
}

/// A validation finding: where and which rule, never the value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventIssue {
    pub path: String,
    pub rule: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    pub event_id: EventId,
    pub organization_id: Option<String>,
    pub wedding_id: Option<String>,
    pub field_id: Option<String>,
    pub field_type: String,
    pub old_value: Option<serde_json::Value>,
    pub new_value: Option<serde_json::Value>,
    pub normalized: Option<serde_json::Value>,
    pub valid: bool,
    pub errors: Vec<EventIssue>,
    pub warnings: Vec<EventIssue>,
    pub user_id: Option<String>,
    /// The row's own timestamp column, as PostgreSQL printed it.
    pub updated_at: Option<String>,
    pub committed_at: String,
    pub commit_lsn: Lsn,
    pub priority: Priority,
    /// True for events of the initial snapshot (existing rows read at first start).
    pub snapshot: bool,
    pub wedding: Option<WeddingContext>,
}
