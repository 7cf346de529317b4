//! The pgoutput decoder: PostgreSQL's logical replication output plugin, protocol version 1.
//!
//! This module owns two things:
//! - [`decode`]: a pure function from one pgoutput message (the payload of one XLogData `w` frame) to a
//!   typed [`Message`]. It does no I/O, keeps no state, never panics on any input and never reads past
//!   the buffer; malformed input yields a [`DecodeError`] that names the message type, the field and
//!   the byte offset. Datum bytes are zero-copy `Bytes::slice`s of the input buffer.
//! - [`RelationCache`]: oid → the latest [`Relation`] definition. A `Relation` message arrives before
//!   the first change to a table in a session and again after its definition changes (for example
//!   `ALTER TABLE ... ADD COLUMN` mid-stream), so a new definition always replaces the old one.
//!
//! Invariants:
//! - Every byte of a message is accounted for: a message with bytes left after its last field is an
//!   error, as is one cut short.
//! - [`Datum::UnchangedToast`] (`'u'`) is never confused with [`Datum::Null`] (`'n'`): an unchanged
//!   TOASTed value means "this column kept its old, large value, which PostgreSQL did not resend";
//!   it is *not* a NULL and must not be written downstream as one.
//! - Errors never carry datum contents (they may be personal data); only names, counts and offsets.
//!
//! Protocol version 1 only: the streaming messages of version 2+ (`S`, `E`, `c`, `A`) and the
//! two-phase ones are unknown tags here.

mod decode;
mod relation;
#[cfg(test)]
mod tests;

use bytes::Bytes;

use crate::lsn::Lsn;

pub use decode::{decode, DecodeError, Field};
pub use relation::{RelationCache, ResolveError};

/// Microseconds between the Unix epoch (1970-01-01) and PostgreSQL's epoch (2000-01-01).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// Converts a PostgreSQL timestamp (microseconds since 2000-01-01 UTC) to microseconds since the Unix
/// epoch, saturating instead of overflowing.
pub fn pg_timestamp_to_unix_micros(pg_micros: i64) -> i64 {
    pg_micros.saturating_add(PG_EPOCH_OFFSET_MICROS)
}

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Begin(Begin),
    Commit(Commit),
    Origin(Origin),
    Relation(Relation),
    Type(Type),
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    Truncate(Truncate),
    Message(LogicalMessage),
}

impl Message {
    /// Which kind of message this is (for logs and metrics: carries no data).
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Begin(_) => MessageKind::Begin,
            Message::Commit(_) => MessageKind::Commit,
            Message::Origin(_) => MessageKind::Origin,
            Message::Relation(_) => MessageKind::Relation,
            Message::Type(_) => MessageKind::Type,
            Message::Insert(_) => MessageKind::Insert,
            Message::Update(_) => MessageKind::Update,
            Message::Delete(_) => MessageKind::Delete,
            Message::Truncate(_) => MessageKind::Truncate,
            Message::Message(_) => MessageKind::Message,
        }
    }
}

/// The kind of a pgoutput message, named as in PostgreSQL's documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Begin,
    Commit,
    Origin,
    Relation,
    Type,
    Insert,
    Update,
    Delete,
    Truncate,
    Message,
}

impl MessageKind {
    /// The tag byte that introduces this message on the wire.
    pub fn tag(self) -> u8 {
        match self {
            MessageKind::Begin => b'B',
            MessageKind::Commit => b'C',
            MessageKind::Origin => b'O',
            MessageKind::Relation => b'R',
            MessageKind::Type => b'Y',
            MessageKind::Insert => b'I',
            MessageKind::Update => b'U',
            MessageKind::Delete => b'D',
            MessageKind::Truncate => b'T',
            MessageKind::Message => b'M',
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MessageKind::Begin => "Begin",
            MessageKind::Commit => "Commit",
            MessageKind::Origin => "Origin",
            MessageKind::Relation => "Relation",
            MessageKind::Type => "Type",
            MessageKind::Insert => "Insert",
            MessageKind::Update => "Update",
            MessageKind::Delete => "Delete",
            MessageKind::Truncate => "Truncate",
            MessageKind::Message => "Message",
        }
    }
}

impl std::fmt::Display for MessageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Start of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// The LSN of the transaction's commit record.
    pub final_lsn: Lsn,
    /// PostgreSQL microseconds since 2000-01-01 UTC; see [`pg_timestamp_to_unix_micros`].
    pub commit_time: i64,
    pub xid: u32,
}

/// End of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Currently unused by PostgreSQL (0).
    pub flags: u8,
    pub commit_lsn: Lsn,
    /// The end of the commit record: the position to confirm once the transaction is durable.
    pub end_lsn: Lsn,
    /// PostgreSQL microseconds since 2000-01-01 UTC.
    pub commit_time: i64,
}

/// The replication origin of the current transaction (sent when it was replayed from elsewhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub commit_lsn: Lsn,
    pub name: String,
}

/// A table's definition as pgoutput sends it (generated and dropped columns are left out, both here
/// and in every tuple, so column positions line up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    /// Schema name; the wire's empty string (meaning `pg_catalog`) is kept as sent.
    pub namespace: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<Column>,
}

impl Relation {
    /// `schema.table`; `pg_catalog.table` when the wire namespace was empty.
    pub fn qualified_name(&self) -> String {
        let schema = if self.namespace.is_empty() {
            "pg_catalog"
        } else {
            &self.namespace
        };
        format!("{schema}.{}", self.name)
    }

    /// Position of the column called `name` in this relation's tuples.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// `pg_class.relreplident`: which old values an Update or Delete carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// `'d'`: the primary key.
    Default,
    /// `'n'`: nothing.
    Nothing,
    /// `'f'`: all columns.
    Full,
    /// `'i'`: the columns of a chosen unique index.
    Index,
}

impl ReplicaIdentity {
    pub fn from_byte(b: u8) -> Option<ReplicaIdentity> {
        match b {
            b'd' => Some(ReplicaIdentity::Default),
            b'n' => Some(ReplicaIdentity::Nothing),
            b'f' => Some(ReplicaIdentity::Full),
            b'i' => Some(ReplicaIdentity::Index),
            _ => None,
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            ReplicaIdentity::Default => b'd',
            ReplicaIdentity::Nothing => b'n',
            ReplicaIdentity::Full => b'f',
            ReplicaIdentity::Index => b'i',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Part of the replica identity key.
    pub is_key: bool,
    pub name: String,
    pub type_oid: u32,
    /// `atttypmod`; -1 when the type has none.
    pub type_modifier: i32,
}

/// A data type's name, sent before a relation that uses a non-built-in type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Type {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    pub relation_oid: u32,
    pub new: Tuple,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub relation_oid: u32,
    /// Present when the key changed (`'K'`) or the table is `REPLICA IDENTITY FULL` (`'O'`).
    pub old: Option<OldTuple>,
    pub new: Tuple,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub relation_oid: u32,
    pub old: OldTuple,
}

/// The old row of an Update or Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `'K'`: only the replica identity key columns are set; the others are [`Datum::Null`].
    Key(Tuple),
    /// `'O'`: the whole old row (`REPLICA IDENTITY FULL`).
    Full(Tuple),
}

impl OldTuple {
    pub fn tuple(&self) -> &Tuple {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    pub cascade: bool,
    pub restart_identity: bool,
    pub relation_oids: Vec<u32>,
}

/// A logical decoding message (`pg_logical_emit_message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    pub transactional: bool,
    pub lsn: Lsn,
    pub prefix: String,
    pub content: Bytes,
}

/// One row's column values, in the relation's column order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tuple(pub Vec<Datum>);

impl Tuple {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&Datum> {
        self.0.get(index)
    }
}

/// One column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    /// `'n'`: SQL NULL.
    Null,
    /// `'u'`: a TOASTed value that did not change; its bytes were not sent. Not a NULL: the column
    /// still holds its previous value.
    UnchangedToast,
    /// `'t'`: the value in PostgreSQL's text output format.
    Text(Bytes),
    /// `'b'`: the value in the type's binary format (only with the `binary` option).
    Binary(Bytes),
}

impl Datum {
    /// The value's bytes, for `Text` and `Binary`.
    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            Datum::Text(b) | Datum::Binary(b) => Some(b),
            Datum::Null | Datum::UnchangedToast => None,
        }
    }
}
