//! The relation cache: relation oid → the latest [`Relation`] definition seen on this connection.
//!
//! Invariants:
//! - A `Relation` message always replaces the previous definition for its oid. PostgreSQL resends it
//!   after any schema change (`ALTER TABLE ... ADD/DROP COLUMN`), before the first change that uses
//!   the new shape, so the newest definition is the one that matches the tuples that follow.
//! - Definitions are handed out as `Arc`s: a transaction being assembled keeps the shape its rows were
//!   decoded with even if a later message replaces the cache entry.
//! - The cache is only valid for one replication session: PostgreSQL sends every definition again
//!   after a reconnect, so [`RelationCache::clear`] on reconnect is safe and drops stale shapes.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Relation, Tuple};

/// Why a tuple could not be matched to a known relation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("change for relation oid {oid} arrived before its Relation message")]
    UnknownRelation { oid: u32 },

    #[error("tuple for {table} has {found} columns but its Relation message declared {expected}")]
    ColumnCountMismatch {
        table: String,
        expected: usize,
        found: usize,
    },
}

/// Relation definitions by oid, for the current replication session.
#[derive(Debug, Default, Clone)]
pub struct RelationCache {
    relations: HashMap<u32, Arc<Relation>>,
}

impl RelationCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `rel`, replacing any earlier definition for the same oid, and returns the shared copy.
    pub fn apply(&mut self, rel: Relation) -> Arc<Relation> {
        let rel = Arc::new(rel);
        self.relations.insert(rel.oid, Arc::clone(&rel));
        rel
    }

    pub fn get(&self, oid: u32) -> Option<&Arc<Relation>> {
        self.relations.get(&oid)
    }

    /// The definition for `oid`, checked against the shape of `tuple`.
    pub fn resolve(&self, oid: u32, tuple: &Tuple) -> Result<&Arc<Relation>, ResolveError> {
        let rel = self
            .relations
            .get(&oid)
            .ok_or(ResolveError::UnknownRelation { oid })?;
        if rel.columns.len() != tuple.len() {
            return Err(ResolveError::ColumnCountMismatch {
                table: rel.qualified_name(),
                expected: rel.columns.len(),
                found: tuple.len(),
            });
        }
        Ok(rel)
    }

    /// Forgets every definition (on reconnect: PostgreSQL resends them).
    pub fn clear(&mut self) {
        self.relations.clear();
    }

    pub fn len(&self) -> usize {
        self.relations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.relations.is_empty()
    }
}
