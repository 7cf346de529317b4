//! The order barrier: what keeps delivery order true across a kill -9 at any instant.
//!
//! # Invariant
//! After any crash, no delivery is sent for an (integration, wedding, field) after a delivery of a
//! later-committed change to it has been sent; a superseded change is either never sent or sent
//! only before its successor. And a wedding's events reach a target for the first time in commit
//! order (a requeued dead letter, sent on an operator's request, is the one exception).
//!
//! # Why it needs a rule
//! Final states (delivered, superseded, dead) are buffered and written about once a second, so
//! that most deliveries cost no sled write of their own. A crash loses the buffered ones: their
//! events are pending again after the restart and may be sent again. A repeat is harmless (same
//! id, same idempotency key) as long as nothing later went out after it. The bug this pins down:
//! `field.created` superseded by `field.deleted`, the delete sent, kill -9 before the superseded
//! state was written; after the restart the create was sent after the delete and the field came
//! back to life at the receiver.
//!
//! # The rule
//! Before a delivery of event E of (wedding, field) leaves the process:
//! 1. every older event of the same (wedding, field) whose final state is still buffered is made
//!    durable, or after a crash that older value would be sent after E;
//! 2. every older event of the same wedding that was skipped (superseded, or made a dead letter,
//!    so never received) is made durable, or after a crash it would reach the target for the first
//!    time after E;
//! 3. every dead letter of the same (wedding, field) is superseded by E: removed from the dead
//!    letters (durably, by the same flush), so that no requeue sends it after E.
//!
//! An event whose older events of the wedding were all delivered, none of its field, needs
//! nothing: after a crash those are sent again before it, in order, as duplicates. [`Unflushed`]
//! tracks rules 1 and 2 per integration from the decision to the next flush; [`DeadFields`]
//! indexes dead letters for rule 3. The dispatcher flushes at most once per round of starts (group
//! commit), and once a second anyway.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::store::record::EventId;

/// A (wedding, field) key; events without a field are keyed by their wedding alone (field "").
type FieldKey = (Arc<str>, Arc<str>);

fn field_key(wedding: &Arc<str>, field: Option<&Arc<str>>) -> FieldKey {
    (wedding.clone(), field.cloned().unwrap_or_else(|| Arc::from("")))
}

/// Final states decided since the delivery store was last flushed, which no later delivery of the
/// same wedding or field may overtake.
#[derive(Default)]
pub struct Unflushed {
    /// Weddings with an event superseded or made a dead letter.
    skipped: HashSet<Arc<str>>,
    /// (wedding, field) keys with an event in any final state.
    fields: HashSet<FieldKey>,
}

impl Unflushed {
    /// An event of `wedding` and `field` reached a final state; `skipped` when it was superseded or
    /// made a dead letter rather than delivered.
    pub fn settled(&mut self, wedding: &Arc<str>, field: Option<&Arc<str>>, skipped: bool) {
        if skipped {
            self.skipped.insert(wedding.clone());
        }
        self.fields.insert(field_key(wedding, field));
    }

    /// Whether a delivery of `wedding` and `field` must wait for a flush before it is sent.
    pub fn blocks(&self, wedding: &Arc<str>, field: Option<&Arc<str>>) -> bool {
        !self.is_empty()
            && (self.skipped.contains(wedding) || self.fields.contains(&field_key(wedding, field)))
    }

    pub fn is_empty(&self) -> bool {
        self.skipped.is_empty() && self.fields.is_empty()
    }

    /// Everything decided so far is durable.
    pub fn clear(&mut self) {
        self.skipped.clear();
        self.fields.clear();
    }
}

/// Dead letters that are neither requeued nor superseded, by (wedding, field).
#[derive(Default)]
pub struct DeadFields(HashMap<FieldKey, Vec<EventId>>);

impl DeadFields {
    pub fn add(&mut self, wedding: &Arc<str>, field: Option<&Arc<str>>, id: EventId) {
        self.0.entry(field_key(wedding, field)).or_default().push(id);
    }

    /// The dead letter was requeued: from now on it is an ordinary queued delivery.
    pub fn remove(&mut self, wedding: &Arc<str>, field: Option<&Arc<str>>, id: EventId) {
        let key = field_key(wedding, field);
        if let Some(ids) = self.0.get_mut(&key) {
            ids.retain(|d| *d != id);
            if ids.is_empty() {
                self.0.remove(&key);
            }
        }
    }

    /// Removes and returns the dead letters of `wedding` and `field` older than `id`: a delivery of
    /// `id` supersedes them (rule 3).
    pub fn take_older(&mut self, wedding: &Arc<str>, field: Option<&Arc<str>>, id: EventId) -> Vec<EventId> {
        if self.0.is_empty() {
            return Vec::new();
        }
        let key = field_key(wedding, field);
        let Some(ids) = self.0.get_mut(&key) else {
            return Vec::new();
        };
        let (older, newer): (Vec<EventId>, Vec<EventId>) = ids.iter().partition(|d| **d < id);
        if newer.is_empty() {
            self.0.remove(&key);
        } else {
            *ids = newer;
        }
        older
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;

    fn id(lsn: u64) -> EventId {
        EventId {
            commit_lsn: Lsn(lsn),
            index: 0,
        }
    }

    fn a(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn a_delivered_event_blocks_only_its_own_field_until_the_flush() {
        let mut u = Unflushed::default();
        let (w, f, g) = (a("w1"), a("guests"), a("venue"));
        assert!(!u.blocks(&w, Some(&f)));
        u.settled(&w, Some(&f), false);
        assert!(u.blocks(&w, Some(&f)), "a newer value of the same field waits");
        assert!(
            !u.blocks(&w, Some(&g)),
            "another field of the wedding goes: its predecessor is sent again first after a crash"
        );
        assert!(!u.blocks(&a("w2"), Some(&f)), "another wedding goes");
        u.clear();
        assert!(!u.blocks(&w, Some(&f)));
    }

    #[test]
    fn a_skipped_event_blocks_its_whole_wedding_until_the_flush() {
        let mut u = Unflushed::default();
        let (w, f, g) = (a("w1"), a("guests"), a("venue"));
        u.settled(&w, Some(&f), true);
        assert!(
            u.blocks(&w, Some(&g)),
            "a superseded event must not reach the target first after a later one"
        );
        assert!(u.blocks(&w, None));
        assert!(!u.blocks(&a("w2"), Some(&g)));
        u.clear();
        assert!(u.is_empty() && !u.blocks(&w, Some(&g)));
    }

    #[test]
    fn events_without_a_field_are_keyed_by_their_wedding() {
        let mut u = Unflushed::default();
        let w = a("w1");
        u.settled(&w, None, false);
        assert!(u.blocks(&w, None));
        assert!(!u.blocks(&w, Some(&a("guests"))));
    }

    #[test]
    fn a_later_change_supersedes_only_older_dead_letters_of_its_field() {
        let mut d = DeadFields::default();
        let (w, f, g) = (a("w1"), a("guests"), a("venue"));
        d.add(&w, Some(&f), id(10));
        d.add(&w, Some(&f), id(30));
        d.add(&w, Some(&g), id(5));
        assert_eq!(d.take_older(&w, Some(&f), id(20)), [id(10)]);
        assert!(d.take_older(&w, Some(&f), id(20)).is_empty(), "taken once");
        assert_eq!(d.take_older(&w, Some(&f), id(40)), [id(30)]);
        d.remove(&w, Some(&g), id(5));
        assert!(
            d.take_older(&w, Some(&g), id(40)).is_empty(),
            "a requeued dead letter is not indexed"
        );
        assert!(d.0.is_empty());
    }
}
