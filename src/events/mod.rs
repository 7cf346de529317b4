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

/// The wedding context as the store keeps it.
pub use crate::store::context;
/// The event types, as the store keeps them beside each change record.
pub use crate::store::event::{Envelope, EventData, EventIssue, EventKind};
pub use build::EventBuilder;
pub use context::{ContextStore, WeddingContext};
pub use routing::{accepts, IntegrationType};

/// RFC 3339 with microseconds, UTC.
pub fn rfc3339_micros(unix_micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(unix_micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
