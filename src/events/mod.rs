//! Field-sync events: what a CRM wants to know about a row change of the form-field table.
//!
//! Capture builds one event per inserted, updated or deleted field row (not for truncates, whose
//! rows the WAL does not list), in commit order, with the wedding's context as of that point in
//! the stream. The event travels in the queue next to the raw change record it came from and has
//! the same stable id. A transaction written under fieldsync's own replication origin yields no
//! event (loop suppression).
//!
//! # Envelope (Standard Webhooks style)
//! ```json
//! {"type": "field.updated", "timestamp": "2027-01-05T10:00:00.123456Z",
//!  "data": {"event_id": "00000000015374E8:00000003", "organization_id": "…", "wedding_id": "…",
//!           "field_id": "…", "field_type": "guest_count_matrix",
//!           "old_value": {"adults": 120, "children": 14, "infants": 3},
//!           "new_value": {"adults": 128, "children": 12, "infants": 3},
//!           "normalized": {"adults": 128, "children": 12, "infants": 3, "total": 143,
//!                          "breakdown": "128 adults, 12 children, 3 infants"},
//!           "valid": true, "errors": [], "warnings": [], "user_id": "…",
//!           "updated_at": "2027-01-05 10:00:00.12+00", "committed_at": "2027-01-05T10:00:00.123456Z",
//!           "commit_lsn": "0/15374E8", "priority": "critical", "snapshot": false,
//!           "wedding": {"id": "…", "organization_id": "…", "organization_name": "Petals & Vows",
//!                       "couple_names": "Amara & Tom", "wedding_date": "2027-06-19",
//!                       "timezone": "Europe/London", "venue": {…}, "guest_total": 143}}}
//! ```
//! `type` is `field.created`, `field.updated` or `field.deleted`. `timestamp` and `committed_at`
//! are the commit time. Errors and warnings name the field path and the rule, never the value.

pub mod build;
pub mod routing;

use serde::{Deserialize, Serialize};

use crate::config::PriorityName;
use crate::lsn::Lsn;
/// The wedding context as the store keeps it (`crate::queue::context`).
pub use crate::queue::context;
use crate::queue::record::EventId;
pub use build::EventBuilder;
pub use context::{ContextStore, WeddingContext};
pub use routing::{accepts, IntegrationType};

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
    pub priority: PriorityName,
    /// True for events of the initial snapshot (existing rows read at first start).
    pub snapshot: bool,
    pub wedding: Option<WeddingContext>,
}

/// RFC 3339 with microseconds, UTC.
pub fn rfc3339_micros(unix_micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(unix_micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
