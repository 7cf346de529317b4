//! Dispatch: delivers each queued field-sync event to every integration it was fanned out to.
//!
//! # Flow
//! Capture decides, when it queues an event, which integrations it goes to: its organisation's
//! active integrations with an adapter that take its field type ([`crate::events::accepts`]). The ids travel in
//! the event's record (`deliveries`), so delivery state exists from the moment the event is
//! durable. The [`Dispatcher`] reads durable records in commit order and keeps, per integration,
//! one first-in first-out queue per wedding with at most one delivery in flight; many weddings
//! are in flight at once. Final states (delivered, superseded, dead) go to the delivery store
//! ([`crate::store::deliveries`]).
//!
//! # Rules
//! - Order per (integration, wedding), coalescing to the newest value of a field, priority under
//!   backlog: the pure [`scheduler`], one [`scheduler::Lanes`] per integration.
//! - Order across crashes: [`order`], the barrier between final states and later deliveries.
//! - Retries: exponential backoff with full jitter ([`limits::backoff`]); the target's own signal
//!   (`Retry-After`) wins; after `max_attempts` or `max_age` a delivery becomes a dead letter.
//! - Each integration has a token bucket (its API's published limit, or its config's
//!   `rate_limit_per_second`) and a circuit breaker on its endpoint; when the breaker closes
//!   again, the waiting weddings are retried at once, in order.
//! - Backpressure: at most `max_queued_per_integration` deliveries per integration are held in
//!   memory; past it they wait in the durable queue and are read again when the integration has
//!   drained (`alert`), and with `pause` the replication stream is not read meanwhile.

mod engine;
pub mod limits;
mod order;
pub mod scheduler;

use bytes::Bytes;

use crate::config::PriorityName;
use crate::store::record::{ChangeRecord, EventId};
pub use engine::{ask, Command, DispatchStatus, Dispatcher, IntegrationStatus, Unanswered, WaitingDelivery};
pub use scheduler::WaitState;

/// A queued event as the dispatcher needs it: where it goes, what orders it, and the bytes sent.
#[derive(Debug)]
pub struct Queued {
    pub id: EventId,
    pub wedding_id: Option<String>,
    pub field_id: Option<String>,
    pub priority: PriorityName,
    pub deliveries: Vec<String>,
    /// The commit time, Unix microseconds (for the commit-to-delivered latency).
    pub commit_time: i64,
    /// The envelope's JSON, exactly as stored.
    pub body: Bytes,
}

#[derive(serde::Deserialize)]
struct StoredLine<'a> {
    #[serde(borrow)]
    event: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    deliveries: Vec<String>,
    #[serde(default)]
    commit_time: i64,
}

#[derive(serde::Deserialize)]
struct EnvelopeKeys {
    data: EnvelopeKeyData,
}

#[derive(serde::Deserialize)]
struct EnvelopeKeyData {
    wedding_id: Option<String>,
    field_id: Option<String>,
    priority: PriorityName,
}

impl Queued {
    /// From a stored record line, without building its row images or re-serializing its event:
    /// the envelope's bytes are sent as they were stored. `None` for a record without an event.
    pub fn from_line(id: EventId, line: &[u8]) -> Result<Option<Queued>, serde_json::Error> {
        let stored: StoredLine = serde_json::from_slice(line)?;
        let Some(event) = stored.event else {
            return Ok(None);
        };
        let keys: EnvelopeKeys = serde_json::from_str(event.get())?;
        Ok(Some(Queued {
            id,
            wedding_id: keys.data.wedding_id,
            field_id: keys.data.field_id,
            priority: keys.data.priority,
            deliveries: stored.deliveries,
            commit_time: stored.commit_time,
            body: Bytes::copy_from_slice(event.get().as_bytes()),
        }))
    }

    /// From a dead letter's copy of its envelope (a requeue after its record left the queue).
    pub fn from_envelope(id: EventId, envelope: &str, commit_time: i64) -> Result<Queued, serde_json::Error> {
        let keys: EnvelopeKeys = serde_json::from_str(envelope)?;
        Ok(Queued {
            id,
            wedding_id: keys.data.wedding_id,
            field_id: keys.data.field_id,
            priority: keys.data.priority,
            deliveries: Vec::new(),
            commit_time,
            body: Bytes::copy_from_slice(envelope.as_bytes()),
        })
    }

    /// From a decoded record (a requeued dead letter kept without its envelope).
    pub fn from_record(r: &ChangeRecord) -> Option<Queued> {
        let e = r.event.as_ref()?;
        Some(Queued {
            id: r.id,
            wedding_id: e.data.wedding_id.clone(),
            field_id: e.data.field_id.clone(),
            priority: e.data.priority,
            deliveries: r.deliveries.clone(),
            commit_time: r.commit_time,
            body: Bytes::from(serde_json::to_vec(e).expect("envelopes serialize")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_line_gives_the_envelope_bytes_as_stored_and_its_ordering_keys() {
        let line = br#"{"id":"0000000000000010:00000001","old":null,"new":{"value":"{\"a\": 1}"},"event":{"type":"field.created","data":{"wedding_id":"w1","field_id":"f1","priority":"critical","new_value":{"a":1}}},"deliveries":["i1"]}"#;
        let id: EventId = "0000000000000010:00000001".parse().unwrap();
        let q = Queued::from_line(id, line).unwrap().unwrap();
        assert_eq!(
            &q.body[..],
            br#"{"type":"field.created","data":{"wedding_id":"w1","field_id":"f1","priority":"critical","new_value":{"a":1}}}"#
        );
        assert_eq!(
            (q.wedding_id.as_deref(), q.field_id.as_deref()),
            (Some("w1"), Some("f1"))
        );
        assert_eq!(q.priority, PriorityName::Critical);
        assert_eq!(q.deliveries, ["i1"]);
        assert!(Queued::from_line(id, br#"{"id":"x","new":{}}"#)
            .unwrap()
            .is_none());
        assert!(Queued::from_line(id, b"{not json").is_err());
    }
}
