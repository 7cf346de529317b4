//! Bytes → [`Message`]: a bounds-checked cursor over one pgoutput message.
//!
//! Every read goes through [`Cursor`], which checks the remaining length before touching the buffer
//! and turns a shortfall into a [`DecodeError`] naming the message, the field and the offset. Nothing
//! here indexes unchecked, allocates per byte or trusts a count from the wire for an allocation size:
//! capacities are capped by the bytes actually left. Datums are `Bytes::slice`s of the input.
//!
//! Offsets in errors are byte offsets from the start of the message (the tag is at offset 0); column
//! and relation indexes are 0-based positions.

use std::fmt;

use bytes::Bytes;

use super::{
    Begin, Column, Commit, Datum, Delete, Insert, LogicalMessage, Message, MessageKind, OldTuple, Origin,
    Relation, ReplicaIdentity, Truncate, Tuple, Type, Update,
};
use crate::lsn::Lsn;

/// Truncate option bit: `TRUNCATE ... CASCADE`.
const TRUNCATE_CASCADE: u8 = 1;
/// Truncate option bit: `TRUNCATE ... RESTART IDENTITY`.
const TRUNCATE_RESTART_IDENTITY: u8 = 2;
/// Message flag bit: the logical message is transactional.
const MESSAGE_TRANSACTIONAL: u8 = 1;
/// Relation column flag bit: the column is part of the replica identity key.
const COLUMN_IS_KEY: u8 = 1;

/// Which field of a message an error is about. Carries names and positions, never values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// A fixed field such as `"relation oid"` or `"final lsn"`.
    Named(&'static str),
    /// A part (`"flags"`, `"name"`, `"type oid"`, `"type modifier"`) of a Relation column definition.
    ColumnDef { index: u16, part: &'static str },
    /// The column count of a tuple (`"new tuple"`, `"old key tuple"`, `"old tuple"`).
    TupleColumnCount { tuple: &'static str },
    /// A part (`"kind"`, `"length"`, `"value"`) of one column value in a tuple.
    TupleValue {
        tuple: &'static str,
        index: u16,
        part: &'static str,
    },
    /// One oid in a Truncate message's list.
    TruncatedRelationOid { index: u32 },
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Named(name) => f.write_str(name),
            Field::ColumnDef { index, part } => write!(f, "{part} of column {index}"),
            Field::TupleColumnCount { tuple } => write!(f, "column count of the {tuple}"),
            Field::TupleValue { tuple, index, part } => write!(f, "{part} of column {index} of the {tuple}"),
            Field::TruncatedRelationOid { index } => write!(f, "oid of relation {index}"),
        }
    }
}

/// A byte shown both as a character and in hex: `'X' (0x58)`, `'\u{0}' (0x00)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ShownByte(u8);

impl fmt::Display for ShownByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' (0x{:02x})", char::from(self.0).escape_default(), self.0)
    }
}

/// Why a pgoutput message could not be decoded. Messages name the message type, the field and the
/// byte offset; they never include datum contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty pgoutput message: no tag byte")]
    Empty,

    #[error("unknown pgoutput message tag {} at offset 0 (protocol version 1 expects one of B C O R Y I U D T M)", ShownByte(*tag))]
    UnknownTag { tag: u8 },

    #[error(
        "truncated {message} message: needed {needed} bytes for {field} at offset {offset}, {left} left"
    )]
    Truncated {
        message: MessageKind,
        field: Field,
        offset: usize,
        needed: usize,
        left: usize,
    },

    #[error("truncated {message} message: {field} at offset {offset} has no NUL terminator in the {left} bytes left")]
    UnterminatedString {
        message: MessageKind,
        field: Field,
        offset: usize,
        left: usize,
    },

    #[error("invalid UTF-8 in {field} of {message} message at offset {offset}")]
    InvalidUtf8 {
        message: MessageKind,
        field: Field,
        offset: usize,
    },

    #[error("negative {field} in {message} message at offset {offset}: {value}")]
    Negative {
        message: MessageKind,
        field: Field,
        offset: usize,
        value: i32,
    },

    #[error("unknown tuple column kind {} for {field} of {message} message at offset {offset}: expected 'n', 'u', 't' or 'b'", ShownByte(*kind))]
    UnknownColumnKind {
        message: MessageKind,
        field: Field,
        offset: usize,
        kind: u8,
    },

    #[error("unexpected sub-tag {} in {message} message at offset {offset}: expected {expected}", ShownByte(*found))]
    UnexpectedSubTag {
        message: MessageKind,
        offset: usize,
        found: u8,
        expected: &'static str,
    },

    #[error("unknown replica identity {} in Relation message at offset {offset}: expected 'd', 'n', 'f' or 'i'", ShownByte(*value))]
    UnknownReplicaIdentity { offset: usize, value: u8 },

    #[error("{count} trailing bytes after a complete {message} message, starting at offset {offset}")]
    TrailingBytes {
        message: MessageKind,
        offset: usize,
        count: usize,
    },
}

/// Decodes one pgoutput message (protocol version 1). Pure and panic-free; datum and logical message
/// contents are zero-copy slices of `buf`.
pub fn decode(buf: &Bytes) -> Result<Message, DecodeError> {
    let tag = *buf.first().ok_or(DecodeError::Empty)?;
    let kind = match tag {
        b'B' => MessageKind::Begin,
        b'C' => MessageKind::Commit,
        b'O' => MessageKind::Origin,
        b'R' => MessageKind::Relation,
        b'Y' => MessageKind::Type,
        b'I' => MessageKind::Insert,
        b'U' => MessageKind::Update,
        b'D' => MessageKind::Delete,
        b'T' => MessageKind::Truncate,
        b'M' => MessageKind::Message,
        _ => return Err(DecodeError::UnknownTag { tag }),
    };
    let mut c = Cursor { buf, pos: 1, kind };
    let message = match kind {
        MessageKind::Begin => Message::Begin(c.begin()?),
        MessageKind::Commit => Message::Commit(c.commit()?),
        MessageKind::Origin => Message::Origin(c.origin()?),
        MessageKind::Relation => Message::Relation(c.relation()?),
        MessageKind::Type => Message::Type(c.type_()?),
        MessageKind::Insert => Message::Insert(c.insert()?),
        MessageKind::Update => Message::Update(c.update()?),
        MessageKind::Delete => Message::Delete(c.delete()?),
        MessageKind::Truncate => Message::Truncate(c.truncate()?),
        MessageKind::Message => Message::Message(c.logical_message()?),
    };
    c.finish()?;
    Ok(message)
}

const NEW_TUPLE: &str = "new tuple";
const OLD_KEY_TUPLE: &str = "old key tuple";
const OLD_TUPLE: &str = "old tuple";

/// A read position in one message; `kind` labels every error it builds.
struct Cursor<'a> {
    buf: &'a Bytes,
    pos: usize,
    kind: MessageKind,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a [u8] {
        let all: &'a [u8] = self.buf;
        all.get(self.pos..).unwrap_or(&[])
    }

    fn truncated(&self, needed: usize, field: Field) -> DecodeError {
        DecodeError::Truncated {
            message: self.kind,
            field,
            offset: self.pos,
            needed,
            left: self.rest().len(),
        }
    }

    fn array<const N: usize>(&mut self, field: Field) -> Result<[u8; N], DecodeError> {
        match self.rest().first_chunk::<N>() {
            Some(bytes) => {
                self.pos += N;
                Ok(*bytes)
            }
            None => Err(self.truncated(N, field)),
        }
    }

    fn u8(&mut self, field: Field) -> Result<u8, DecodeError> {
        self.array::<1>(field).map(|[b]| b)
    }

    fn i16(&mut self, field: Field) -> Result<i16, DecodeError> {
        self.array(field).map(i16::from_be_bytes)
    }

    fn i32(&mut self, field: Field) -> Result<i32, DecodeError> {
        self.array(field).map(i32::from_be_bytes)
    }

    /// An unsigned 32-bit value (oid, xid) sent as Int32: same bits.
    fn u32(&mut self, field: Field) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    fn i64(&mut self, field: Field) -> Result<i64, DecodeError> {
        self.array(field).map(i64::from_be_bytes)
    }

    fn lsn(&mut self, field: Field) -> Result<Lsn, DecodeError> {
        self.array(field).map(|b| Lsn(u64::from_be_bytes(b)))
    }

    /// A non-negative Int16 count.
    fn count16(&mut self, field: Field) -> Result<u16, DecodeError> {
        let offset = self.pos;
        let n = self.i16(field)?;
        u16::try_from(n).map_err(|_| DecodeError::Negative {
            message: self.kind,
            field,
            offset,
            value: i32::from(n),
        })
    }

    /// A non-negative Int32 count or length.
    fn count32(&mut self, field: Field) -> Result<u32, DecodeError> {
        let offset = self.pos;
        let n = self.i32(field)?;
        u32::try_from(n).map_err(|_| DecodeError::Negative {
            message: self.kind,
            field,
            offset,
            value: n,
        })
    }

    /// `len` bytes as a zero-copy slice of the message buffer.
    fn bytes(&mut self, len: u32, field: Field) -> Result<Bytes, DecodeError> {
        let len = usize::try_from(len).map_err(|_| self.truncated(usize::MAX, field))?;
        if len > self.rest().len() {
            return Err(self.truncated(len, field));
        }
        let start = self.pos;
        self.pos += len;
        Ok(self.buf.slice(start..self.pos))
    }

    /// A NUL-terminated UTF-8 string.
    fn cstring(&mut self, field: Field) -> Result<String, DecodeError> {
        let rest = self.rest();
        let offset = self.pos;
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Err(DecodeError::UnterminatedString {
                message: self.kind,
                field,
                offset,
                left: rest.len(),
            });
        };
        let (text, _) = rest.split_at(nul);
        let text = std::str::from_utf8(text).map_err(|_| DecodeError::InvalidUtf8 {
            message: self.kind,
            field,
            offset,
        })?;
        self.pos += nul + 1;
        Ok(text.to_owned())
    }

    /// Reads a sub-tag byte, failing unless it is one of `allowed` (described by `expected`).
    fn sub_tag(&mut self, allowed: &[u8], expected: &'static str) -> Result<u8, DecodeError> {
        let offset = self.pos;
        let found = self.u8(Field::Named("tuple sub-tag"))?;
        if allowed.contains(&found) {
            Ok(found)
        } else {
            Err(DecodeError::UnexpectedSubTag {
                message: self.kind,
                offset,
                found,
                expected,
            })
        }
    }

    fn finish(&self) -> Result<(), DecodeError> {
        let count = self.rest().len();
        if count == 0 {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                message: self.kind,
                offset: self.pos,
                count,
            })
        }
    }

    fn begin(&mut self) -> Result<Begin, DecodeError> {
        Ok(Begin {
            final_lsn: self.lsn(Field::Named("final lsn"))?,
            commit_time: self.i64(Field::Named("commit timestamp"))?,
            xid: self.u32(Field::Named("xid"))?,
        })
    }

    fn commit(&mut self) -> Result<Commit, DecodeError> {
        Ok(Commit {
            flags: self.u8(Field::Named("flags"))?,
            commit_lsn: self.lsn(Field::Named("commit lsn"))?,
            end_lsn: self.lsn(Field::Named("end lsn"))?,
            commit_time: self.i64(Field::Named("commit timestamp"))?,
        })
    }

    fn origin(&mut self) -> Result<Origin, DecodeError> {
        Ok(Origin {
            commit_lsn: self.lsn(Field::Named("commit lsn"))?,
            name: self.cstring(Field::Named("origin name"))?,
        })
    }

    fn relation(&mut self) -> Result<Relation, DecodeError> {
        let oid = self.u32(Field::Named("relation oid"))?;
        let namespace = self.cstring(Field::Named("namespace"))?;
        let name = self.cstring(Field::Named("relation name"))?;
        let identity_offset = self.pos;
        let identity = self.u8(Field::Named("replica identity"))?;
        let replica_identity =
            ReplicaIdentity::from_byte(identity).ok_or(DecodeError::UnknownReplicaIdentity {
                offset: identity_offset,
                value: identity,
            })?;
        let ncols = self.count16(Field::Named("column count"))?;
        // Each column definition takes at least 10 bytes: never reserve more than the input can hold.
        let mut columns = Vec::with_capacity(usize::from(ncols).min(self.rest().len() / 10));
        for index in 0..ncols {
            let flags = self.u8(Field::ColumnDef { index, part: "flags" })?;
            columns.push(Column {
                is_key: flags & COLUMN_IS_KEY != 0,
                name: self.cstring(Field::ColumnDef { index, part: "name" })?,
                type_oid: self.u32(Field::ColumnDef {
                    index,
                    part: "type oid",
                })?,
                type_modifier: self.i32(Field::ColumnDef {
                    index,
                    part: "type modifier",
                })?,
            });
        }
        Ok(Relation {
            oid,
            namespace,
            name,
            replica_identity,
            columns,
        })
    }

    fn type_(&mut self) -> Result<Type, DecodeError> {
        Ok(Type {
            oid: self.u32(Field::Named("type oid"))?,
            namespace: self.cstring(Field::Named("namespace"))?,
            name: self.cstring(Field::Named("type name"))?,
        })
    }

    fn tuple(&mut self, tuple: &'static str) -> Result<Tuple, DecodeError> {
        let ncols = self.count16(Field::TupleColumnCount { tuple })?;
        // Each value takes at least its kind byte.
        let mut values = Vec::with_capacity(usize::from(ncols).min(self.rest().len()));
        for index in 0..ncols {
            let kind_offset = self.pos;
            let kind = self.u8(Field::TupleValue {
                tuple,
                index,
                part: "kind",
            })?;
            let datum = match kind {
                b'n' => Datum::Null,
                b'u' => Datum::UnchangedToast,
                b't' | b'b' => {
                    let len = self.count32(Field::TupleValue {
                        tuple,
                        index,
                        part: "length",
                    })?;
                    let value = self.bytes(
                        len,
                        Field::TupleValue {
                            tuple,
                            index,
                            part: "value",
                        },
                    )?;
                    if kind == b't' {
                        Datum::Text(value)
                    } else {
                        Datum::Binary(value)
                    }
                }
                _ => {
                    return Err(DecodeError::UnknownColumnKind {
                        message: self.kind,
                        field: Field::TupleValue {
                            tuple,
                            index,
                            part: "kind",
                        },
                        offset: kind_offset,
                        kind,
                    })
                }
            };
            values.push(datum);
        }
        Ok(Tuple(values))
    }

    fn insert(&mut self) -> Result<Insert, DecodeError> {
        let relation_oid = self.u32(Field::Named("relation oid"))?;
        self.sub_tag(b"N", "'N'")?;
        Ok(Insert {
            relation_oid,
            new: self.tuple(NEW_TUPLE)?,
        })
    }

    fn update(&mut self) -> Result<Update, DecodeError> {
        let relation_oid = self.u32(Field::Named("relation oid"))?;
        let old = match self.sub_tag(b"KON", "'K', 'O' or 'N'")? {
            b'K' => Some(OldTuple::Key(self.tuple(OLD_KEY_TUPLE)?)),
            b'O' => Some(OldTuple::Full(self.tuple(OLD_TUPLE)?)),
            _ => None,
        };
        if old.is_some() {
            self.sub_tag(b"N", "'N'")?;
        }
        Ok(Update {
            relation_oid,
            old,
            new: self.tuple(NEW_TUPLE)?,
        })
    }

    fn delete(&mut self) -> Result<Delete, DecodeError> {
        let relation_oid = self.u32(Field::Named("relation oid"))?;
        let old = if self.sub_tag(b"KO", "'K' or 'O'")? == b'K' {
            OldTuple::Key(self.tuple(OLD_KEY_TUPLE)?)
        } else {
            OldTuple::Full(self.tuple(OLD_TUPLE)?)
        };
        Ok(Delete { relation_oid, old })
    }

    fn truncate(&mut self) -> Result<Truncate, DecodeError> {
        let count = self.count32(Field::Named("relation count"))?;
        let options = self.u8(Field::Named("options"))?;
        let capacity = usize::try_from(count)
            .unwrap_or(usize::MAX)
            .min(self.rest().len() / 4);
        let mut relation_oids = Vec::with_capacity(capacity);
        for index in 0..count {
            relation_oids.push(self.u32(Field::TruncatedRelationOid { index })?);
        }
        Ok(Truncate {
            cascade: options & TRUNCATE_CASCADE != 0,
            restart_identity: options & TRUNCATE_RESTART_IDENTITY != 0,
            relation_oids,
        })
    }

    fn logical_message(&mut self) -> Result<LogicalMessage, DecodeError> {
        let flags = self.u8(Field::Named("flags"))?;
        let lsn = self.lsn(Field::Named("message lsn"))?;
        let prefix = self.cstring(Field::Named("prefix"))?;
        let len = self.count32(Field::Named("content length"))?;
        let content = self.bytes(len, Field::Named("content"))?;
        Ok(LogicalMessage {
            transactional: flags & MESSAGE_TRANSACTIONAL != 0,
            lsn,
            prefix,
            content,
        })
    }
}
