//! The stored change record: one captured row change (or a truncate) with a stable id.
//!
//! Format: JSON, one object per record, so an operator can read the queue with ordinary tools and
//! a record keeps its own column names (an `ALTER TABLE` later does not change how it reads).
//!
//! ```json
//! {"id":"00000000016B3748:00000002","commit_lsn":"0/16B3748","commit_time":1764150000123456,
//!  "xid":741,"origin":null,"schema":"public","table":"form_field_values","op":"update",
//!  "identity":"full","old":{"id":"…","value":"{…}"},"new":{"id":"…","value":{"unchanged":true}}}
//! ```
//! A column value is a JSON string (PostgreSQL's text form), `null` for SQL NULL, or
//! `{"unchanged": true}` for a TOASTed value that the update did not touch and the WAL did not carry.
//!
//! A record of a field row that became a field-sync event stores the change once: `old` and
//! `new` are `null` and `event` (the envelope, sent as stored) carries the values, the ids and the
//! wedding context. Other records (context tables, or with `[events] enabled = false`) keep their
//! row images and have no `event`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::lsn::Lsn;

/// Stable identity of a change: the commit LSN of its transaction and its index among the
/// transaction's row messages. A replay of the same WAL yields the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    pub commit_lsn: Lsn,
    pub index: u32,
}

impl EventId {
    /// The sled key: big-endian, so keys sort in commit order, then in transaction order.
    pub fn key(self) -> [u8; 12] {
        let mut k = [0u8; 12];
        k[..8].copy_from_slice(&self.commit_lsn.to_be_bytes());
        k[8..].copy_from_slice(&self.index.to_be_bytes());
        k
    }

    pub fn from_key(key: &[u8]) -> Option<EventId> {
        let lsn: [u8; 8] = key.get(..8)?.try_into().ok()?;
        let index: [u8; 4] = key.get(8..12)?.try_into().ok()?;
        Some(EventId {
            commit_lsn: Lsn::from_be_bytes(lsn),
            index: u32::from_be_bytes(index),
        })
    }
}

impl EventId {
    /// `XXXXXXXXXXXXXXXX:XXXXXXXX` (upper-case hex), written without the formatting machinery:
    /// every record and event carries it, on capture's hot path.
    fn hex(&self) -> [u8; 25] {
        const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
        let mut out = [b':'; 25];
        for (i, slot) in out[..16].iter_mut().enumerate() {
            *slot = DIGITS[(self.commit_lsn.0 >> (60 - 4 * i) & 0xF) as usize];
        }
        for (i, slot) in out[17..].iter_mut().enumerate() {
            *slot = DIGITS[(self.index >> (28 - 4 * i) & 0xF) as usize];
        }
        out
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex();
        f.write_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid event id {0:?}: expected 16 hex digits, ':', 8 hex digits")]
pub struct ParseEventIdError(String);

impl FromStr for EventId {
    type Err = ParseEventIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseEventIdError(s.to_owned());
        let (lsn, index) = s.split_once(':').ok_or_else(err)?;
        if lsn.len() != 16 || index.len() != 8 {
            return Err(err());
        }
        Ok(EventId {
            commit_lsn: Lsn(u64::from_str_radix(lsn, 16).map_err(|_| err())?),
            index: u32::from_str_radix(index, 16).map_err(|_| err())?,
        })
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let hex = self.hex();
        s.serialize_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"))
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Insert,
    Update,
    Delete,
    Truncate,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
        }
    }
}

/// What the old row image holds: only the replica identity key columns, or the full row
/// (`REPLICA IDENTITY FULL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OldImage {
    Key,
    Full,
}

/// One column's value as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnValue {
    Null,
    /// A TOASTed value the change did not modify and the WAL did not carry. Never NULL.
    Unchanged,
    Text(String),
    /// Not stored: the column holds credentials (an integration's `config`), which reach
    /// delivery through the wedding context, never through the queue's records.
    Withheld,
}

impl Serialize for ColumnValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            ColumnValue::Null => s.serialize_none(),
            ColumnValue::Text(t) => s.serialize_str(t),
            ColumnValue::Unchanged => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("unchanged", &true)?;
                m.end()
            }
            ColumnValue::Withheld => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("withheld", &true)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for ColumnValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Unchanged { unchanged: bool },
            Withheld { withheld: bool },
            Null(()),
        }
        match Option::<Repr>::deserialize(d)? {
            None | Some(Repr::Null(())) => Ok(ColumnValue::Null),
            Some(Repr::Text(t)) => Ok(ColumnValue::Text(t)),
            Some(Repr::Unchanged { unchanged: true }) => Ok(ColumnValue::Unchanged),
            Some(Repr::Withheld { withheld: true }) => Ok(ColumnValue::Withheld),
            Some(Repr::Unchanged { unchanged: false }) | Some(Repr::Withheld { withheld: false }) => Err(
                serde::de::Error::custom("an \"unchanged\" or \"withheld\" marker must be true"),
            ),
        }
    }
}

/// A row image: column name → value, in column name order.
pub type Row = BTreeMap<String, ColumnValue>;

/// A captured change as read back from the queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub id: EventId,
    pub commit_lsn: Lsn,
    /// Commit time, microseconds since the Unix epoch.
    pub commit_time: i64,
    pub xid: u32,
    /// Replication origin of the transaction, when it was written under one.
    pub origin: Option<String>,
    pub schema: String,
    pub table: String,
    pub op: Op,
    /// Which old image the WAL carried, if any.
    pub identity: Option<OldImage>,
    /// The row images; `None` when `event` carries the change.
    pub old: Option<Row>,
    pub new: Option<Row>,
    /// The field-sync event of a field-table row (see `crate::events`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<super::event::Envelope>,
    /// The integrations the event goes to (ids), fixed when it was queued (see `crate::dispatch`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<String>,
}

/// A transaction as stored: the marker whose presence makes its records visible.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRecord {
    pub commit_lsn: Lsn,
    /// LSN just past the commit record: what is confirmed to PostgreSQL once this is durable.
    pub end_lsn: Lsn,
    pub commit_time: i64,
    pub xid: u32,
    pub origin: Option<String>,
    /// Number of change records stored for the transaction.
    pub records: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_print_as_16_and_8_hex_digits_and_parse_back() {
        for (lsn, index) in [
            (0, 0),
            (0x15_374E8, 3),
            (u64::MAX, u32::MAX),
            (0x0123_4567_89AB_CDEF, 0xA),
        ] {
            let id = EventId {
                commit_lsn: Lsn(lsn),
                index,
            };
            let text = id.to_string();
            assert_eq!(text, format!("{lsn:016X}:{index:08X}"));
            assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{text}\""));
            assert_eq!(text.parse::<EventId>().unwrap(), id);
        }
    }

    #[test]
    fn event_ids_sort_by_commit_then_index_as_keys_and_strings() {
        let a = EventId {
            commit_lsn: Lsn(0x1_0000_0000),
            index: 2,
        };
        let b = EventId {
            commit_lsn: Lsn(0x1_0000_0000),
            index: 10,
        };
        let c = EventId {
            commit_lsn: Lsn(0x2_0000_0000),
            index: 0,
        };
        assert!(a.key() < b.key() && b.key() < c.key());
        assert!(a.to_string() < b.to_string() && b.to_string() < c.to_string());
        for id in [a, b, c] {
            assert_eq!(EventId::from_key(&id.key()), Some(id));
            assert_eq!(id.to_string().parse::<EventId>().unwrap(), id);
        }
        assert!("12:34".parse::<EventId>().is_err());
    }

    #[test]
    fn unchanged_toast_is_never_read_back_as_null() {
        let mut row = Row::new();
        row.insert("a".into(), ColumnValue::Null);
        row.insert("b".into(), ColumnValue::Unchanged);
        row.insert("c".into(), ColumnValue::Text("{\"unchanged\": true}".into()));
        let json = serde_json::to_string(&row).unwrap();
        assert_eq!(
            json,
            r#"{"a":null,"b":{"unchanged":true},"c":"{\"unchanged\": true}"}"#
        );
        let back: Row = serde_json::from_str(&json).unwrap();
        assert_eq!(back, row);
    }
}
