//! Capture: turns the decoded pgoutput stream into stored transactions of change records.
//!
//! Owns the relation cache and the open transaction. Rows of the configured tables are staged in
//! the queue as they arrive (memory stays flat whatever the transaction size) and become visible
//! at Commit. A transaction the queue already holds (a replay after reconnect or crash) is
//! recognised at Begin by its commit LSN and skipped whole.
//!
//! Record ids are `commit LSN : index`, where the index counts every row message of the
//! transaction (captured or not), so ids do not change when the table list does.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::config::Config;
use crate::events::build::{Cell, Commit, Role, RowView};
use crate::events::{Envelope, EventBuilder};
use crate::lsn::Lsn;
use crate::pgoutput::{self, Column, Datum, Message, OldTuple, Relation, RelationCache, Tuple};
use crate::store::record::{ColumnValue, EventId, OldImage, Op, TxnRecord};
use crate::store::{QueueWriter, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("replication stream out of order at {lsn}: {what}")]
    Protocol { lsn: Lsn, what: String },
    #[error("cannot map a row at {lsn}: {source}")]
    Resolve {
        lsn: Lsn,
        #[source]
        source: pgoutput::ResolveError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a message did to the stream position.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing that changes what may be confirmed.
    Continue,
    /// A transaction ended. `stored` is false when it held no captured row or was a replay;
    /// such a transaction needs no flush before `end_lsn` may be confirmed.
    Committed {
        end_lsn: Lsn,
        stored: bool,
        records: u32,
    },
}

struct OpenTxn {
    commit_lsn: Lsn,
    commit_time: i64,
    xid: u32,
    origin: Option<String>,
    /// Index of the next row message in this transaction.
    next_index: u32,
    records: u32,
    /// Already stored: skip everything until Commit.
    replay: bool,
    /// Written by fieldsync itself (its replication origin): no events.
    own_write: bool,
    /// Rows of the initial snapshot rather than of a WAL transaction.
    snapshot: bool,
}

pub struct Capture {
    relations: RelationCache,
    tables: HashSet<(String, String)>,
    events: EventBuilder,
    writer: QueueWriter,
    txn: Option<OpenTxn>,
    buf: Vec<u8>,
    /// Row changes of the open transaction by (relation, operation), added to the metrics at
    /// commit: one atomic add per table and operation, not a registry lookup per row.
    counted: HashMap<(u32, &'static str), u64>,
    /// The metrics counter of each (relation, operation) seen, registered on first use.
    counters: HashMap<(u32, &'static str), metrics::Counter>,
    /// `schema.table` of each counted relation.
    names: HashMap<u32, String>,
}

impl Capture {
    pub fn new(config: &Config, writer: QueueWriter, events: EventBuilder) -> Capture {
        Capture {
            relations: RelationCache::new(),
            tables: config
                .capture
                .tables
                .iter()
                .map(|t| (t.schema.clone(), t.name.clone()))
                .collect(),
            events,
            writer,
            txn: None,
            buf: Vec::with_capacity(4096),
            counted: HashMap::new(),
            counters: HashMap::new(),
            names: HashMap::new(),
        }
    }

    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// The connection was lost: drop the relation cache and whatever the open transaction staged.
    /// PostgreSQL sends both again after reconnecting.
    pub fn reset(&mut self) -> Result<(), CaptureError> {
        self.relations.clear();
        self.counted.clear();
        match self.txn.take() {
            Some(txn) if !txn.replay => {
                let removed = self.writer.discard(txn.commit_lsn)?;
                tracing::info!(commit_lsn = %txn.commit_lsn, removed, "discarded a partly received transaction");
            }
            _ => self.writer.sync()?,
        }
        Ok(())
    }

    /// Opens the transaction that carries the initial snapshot's rows (see `source::snapshot`).
    pub fn begin_snapshot(&mut self, commit_lsn: Lsn, pg_commit_time: i64) -> Result<(), CaptureError> {
        self.apply(
            Message::Begin(pgoutput::Begin {
                final_lsn: commit_lsn,
                commit_time: pg_commit_time,
                xid: 0,
            }),
            commit_lsn,
        )?;
        if let Some(txn) = &mut self.txn {
            txn.snapshot = true;
        }
        Ok(())
    }

    /// Writes what was staged and committed since the last call (once per network read).
    pub fn sync(&mut self) -> Result<(), CaptureError> {
        self.events.persist_learned()?;
        Ok(self.writer.sync()?)
    }

    /// Applies one decoded message received at `lsn`.
    pub fn apply(&mut self, msg: Message, lsn: Lsn) -> Result<Step, CaptureError> {
        match msg {
            Message::Begin(b) => {
                if self.txn.is_some() {
                    return Err(protocol(lsn, "Begin inside an open transaction"));
                }
                let replay = self.writer.is_stored(b.final_lsn);
                self.txn = Some(OpenTxn {
                    commit_lsn: b.final_lsn,
                    commit_time: pgoutput::pg_timestamp_to_unix_micros(b.commit_time),
                    xid: b.xid,
                    origin: None,
                    next_index: 0,
                    records: 0,
                    replay,
                    own_write: false,
                    snapshot: false,
                });
                Ok(Step::Continue)
            }
            Message::Commit(c) => {
                let txn = self
                    .txn
                    .take()
                    .ok_or_else(|| protocol(lsn, "Commit without Begin"))?;
                if txn.commit_lsn != c.commit_lsn {
                    return Err(protocol(
                        lsn,
                        &format!(
                            "Commit at {} does not match Begin's final LSN {}",
                            c.commit_lsn, txn.commit_lsn
                        ),
                    ));
                }
                if txn.replay {
                    return Ok(Step::Committed {
                        end_lsn: c.end_lsn,
                        stored: false,
                        records: 0,
                    });
                }
                if txn.records == 0 {
                    return Ok(Step::Committed {
                        end_lsn: c.end_lsn,
                        stored: false,
                        records: 0,
                    });
                }
                self.writer.commit(TxnRecord {
                    commit_lsn: txn.commit_lsn,
                    end_lsn: c.end_lsn,
                    commit_time: txn.commit_time,
                    xid: txn.xid,
                    origin: txn.origin,
                    records: txn.records,
                })?;
                for (key, n) in self.counted.drain() {
                    let names = &self.names;
                    self.counters
                        .entry(key)
                        .or_insert_with(|| {
                            crate::telemetry::metrics::changes_counter(
                                names.get(&key.0).map_or("", String::as_str),
                                key.1,
                            )
                        })
                        .increment(n);
                }
                Ok(Step::Committed {
                    end_lsn: c.end_lsn,
                    stored: true,
                    records: txn.records,
                })
            }
            Message::Origin(o) => {
                if let Some(txn) = &mut self.txn {
                    txn.own_write = o.name == self.events.own_origin();
                    txn.origin = Some(o.name);
                }
                Ok(Step::Continue)
            }
            Message::Relation(r) => {
                self.relations.apply(r);
                Ok(Step::Continue)
            }
            // A transactional logical message with fieldsync's origin name as prefix marks a
            // write-back too (for writers that cannot set a replication origin); it must come
            // before the rows it covers.
            Message::Message(m) => {
                if let Some(txn) = &mut self.txn {
                    if m.transactional && m.prefix == self.events.own_origin() {
                        txn.own_write = true;
                    }
                }
                Ok(Step::Continue)
            }
            Message::Type(_) => Ok(Step::Continue),
            Message::Insert(i) => {
                self.row(lsn, i.relation_oid, Op::Insert, None, Some(&i.new))?;
                Ok(Step::Continue)
            }
            Message::Update(u) => {
                self.row(lsn, u.relation_oid, Op::Update, u.old.as_ref(), Some(&u.new))?;
                Ok(Step::Continue)
            }
            Message::Delete(d) => {
                self.row(lsn, d.relation_oid, Op::Delete, Some(&d.old), None)?;
                Ok(Step::Continue)
            }
            Message::Truncate(t) => {
                for oid in t.relation_oids {
                    let rel = self.relations.get(oid).cloned().ok_or(CaptureError::Resolve {
                        lsn,
                        source: pgoutput::ResolveError::UnknownRelation { oid },
                    })?;
                    self.record(lsn, &rel, Op::Truncate, None, None)?;
                }
                Ok(Step::Continue)
            }
        }
    }

    fn row(
        &mut self,
        lsn: Lsn,
        oid: u32,
        op: Op,
        old: Option<&OldTuple>,
        new: Option<&Tuple>,
    ) -> Result<(), CaptureError> {
        let tuple = new.or(old.map(|o| match o {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }));
        let rel = match tuple {
            Some(t) => self.relations.resolve(oid, t),
            None => self
                .relations
                .get(oid)
                .ok_or(pgoutput::ResolveError::UnknownRelation { oid }),
        }
        .map_err(|source| CaptureError::Resolve { lsn, source })?
        .clone();
        self.record(lsn, &rel, op, old, new)
    }

    fn record(
        &mut self,
        lsn: Lsn,
        rel: &Relation,
        op: Op,
        old: Option<&OldTuple>,
        new: Option<&Tuple>,
    ) -> Result<(), CaptureError> {
        let txn = self
            .txn
            .as_mut()
            .ok_or_else(|| protocol(lsn, "row change outside a transaction"))?;
        let index = txn.next_index;
        txn.next_index += 1;
        if txn.replay || !self.tables.contains(&(rel.namespace.clone(), rel.name.clone())) {
            return Ok(());
        }
        *self.counted.entry((rel.oid, op.as_str())).or_insert(0) += 1;
        self.names
            .entry(rel.oid)
            .or_insert_with(|| format!("{}.{}", rel.namespace, rel.name));
        let id = EventId {
            commit_lsn: txn.commit_lsn,
            index,
        };
        let (identity, old_tuple) = match old {
            Some(OldTuple::Key(t)) => (Some(OldImage::Key), Some(t)),
            Some(OldTuple::Full(t)) => (Some(OldImage::Full), Some(t)),
            None => (None, None),
        };
        // REPLICA IDENTITY FULL carries the whole old row: an unchanged TOASTed value in the new
        // row is filled from it instead of staying "unchanged".
        let fallback = if identity == Some(OldImage::Full) {
            old_tuple
        } else {
            None
        };
        let old_view = View {
            columns: &rel.columns,
            tuple: old_tuple,
            fallback: None,
        };
        let new_view = View {
            columns: &rel.columns,
            tuple: new,
            fallback,
        };
        let table_role = self.events.role(&rel.namespace, &rel.name);
        let role = if self.events.enabled() {
            table_role
        } else {
            Role::Other
        };
        let mut deliveries: Arc<[String]> = Arc::from([]);
        let event: Option<Envelope> = match role {
            Role::Fields if !txn.own_write => {
                let commit = Commit {
                    lsn: txn.commit_lsn,
                    unix_micros: txn.commit_time,
                    snapshot: txn.snapshot,
                };
                let event = self.events.field_event(id, commit, op, &old_view, &new_view)?;
                if let Some(e) = &event {
                    deliveries = self.events.targets(&e.data)?;
                }
                event
            }
            Role::Fields | Role::Other => None,
            role => {
                self.events.apply_context(role, op, &old_view, &new_view)?;
                None
            }
        };
        // a field change is stored once: its event carries the values, the ids and the context,
        // so the row images are not kept beside it
        let images = event.is_none();
        // an integration's credentials reach delivery through the context, not the queue
        let withheld = (table_role == Role::Integrations).then(|| self.events.integrations_config());
        let record = RecordRef {
            id,
            commit_lsn: txn.commit_lsn,
            commit_time: txn.commit_time,
            xid: txn.xid,
            origin: txn.origin.as_deref(),
            schema: &rel.namespace,
            table: &rel.name,
            op,
            identity,
            old: old_tuple.filter(|_| images).map(|t| RowRef {
                columns: &rel.columns,
                tuple: t,
                key_only: identity == Some(OldImage::Key),
                fallback: None,
                withheld,
            }),
            new: new.filter(|_| images).map(|t| RowRef {
                columns: &rel.columns,
                tuple: t,
                key_only: false,
                fallback,
                withheld,
            }),
            event: event.as_ref(),
            deliveries: &deliveries,
        };
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, &record).expect("records serialize to a Vec");
        txn.records += 1;
        self.writer.stage(id, &self.buf)?;
        if !deliveries.is_empty() {
            self.writer.note_deliveries();
        }
        Ok(())
    }
}

fn protocol(lsn: Lsn, what: &str) -> CaptureError {
    CaptureError::Protocol {
        lsn,
        what: what.to_owned(),
    }
}

/// The stored record, serialized straight from the decoded tuples. Field names match
/// [`crate::store::record::ChangeRecord`].
#[derive(Serialize)]
struct RecordRef<'a> {
    id: EventId,
    commit_lsn: Lsn,
    commit_time: i64,
    xid: u32,
    origin: Option<&'a str>,
    schema: &'a str,
    table: &'a str,
    op: Op,
    identity: Option<OldImage>,
    old: Option<RowRef<'a>>,
    new: Option<RowRef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a Envelope>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    deliveries: &'a [String],
}

/// A row image read by column name, for building events.
struct View<'a> {
    columns: &'a [Column],
    tuple: Option<&'a Tuple>,
    fallback: Option<&'a Tuple>,
}

impl RowView for View<'_> {
    fn cell(&self, column: &str) -> Cell<'_> {
        let Some(tuple) = self.tuple else {
            return Cell::Missing;
        };
        let Some(i) = self.columns.iter().position(|c| c.name == column) else {
            return Cell::Missing;
        };
        let datum = match tuple.0.get(i) {
            Some(Datum::UnchangedToast) => self
                .fallback
                .and_then(|f| f.0.get(i))
                .unwrap_or(&Datum::UnchangedToast),
            Some(d) => d,
            None => return Cell::Missing,
        };
        match datum {
            Datum::Null => Cell::Null,
            Datum::UnchangedToast => Cell::Unchanged,
            Datum::Text(b) | Datum::Binary(b) => match std::str::from_utf8(b) {
                Ok(text) => Cell::Text(Cow::Borrowed(text)),
                Err(_) => Cell::Text(String::from_utf8_lossy(b)),
            },
        }
    }
}

struct RowRef<'a> {
    columns: &'a [Column],
    tuple: &'a Tuple,
    /// Old key images list only the replica identity columns.
    key_only: bool,
    fallback: Option<&'a Tuple>,
    /// A column whose value is not stored (see `ColumnValue::Withheld`).
    withheld: Option<&'a str>,
}

impl Serialize for RowRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (i, (col, datum)) in self.columns.iter().zip(&self.tuple.0).enumerate() {
            if self.key_only && !col.is_key {
                continue;
            }
            let datum = match datum {
                Datum::UnchangedToast => match self.fallback.and_then(|f| f.0.get(i)) {
                    Some(d @ (Datum::Text(_) | Datum::Binary(_))) => d,
                    _ => datum,
                },
                _ => datum,
            };
            if self.withheld == Some(col.name.as_str()) && !matches!(datum, Datum::Null) {
                map.serialize_entry(&col.name, &ColumnValue::Withheld)?;
                continue;
            }
            map.serialize_entry(&col.name, &DatumRef(datum))?;
        }
        map.end()
    }
}

struct DatumRef<'a>(&'a Datum);

impl Serialize for DatumRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Datum::Null => s.serialize_none(),
            Datum::UnchangedToast => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("unchanged", &true)?;
                m.end()
            }
            Datum::Text(b) | Datum::Binary(b) => match std::str::from_utf8(b) {
                Ok(text) => s.serialize_str(text),
                Err(_) => s.serialize_str(&String::from_utf8_lossy(b)),
            },
        }
    }
}
