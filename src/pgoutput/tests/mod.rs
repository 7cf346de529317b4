//! Tests for the pgoutput decoder and relation cache: a test-only encoder, one test per message type
//! and the relation cache here; error messages, truncation and property tests in `errors`; bytes
//! captured from a real PostgreSQL 15 in `real_pg`.

mod errors;
mod real_pg;

use bytes::Bytes;

use super::*;
use crate::lsn::Lsn;

// ---------------------------------------------------------------------------------------------
// Test-only encoder
// ---------------------------------------------------------------------------------------------

fn put_cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn put_tuple(out: &mut Vec<u8>, tuple: &Tuple) {
    out.extend_from_slice(&(tuple.0.len() as i16).to_be_bytes());
    for datum in &tuple.0 {
        match datum {
            Datum::Null => out.push(b'n'),
            Datum::UnchangedToast => out.push(b'u'),
            Datum::Text(b) | Datum::Binary(b) => {
                out.push(if matches!(datum, Datum::Text(_)) {
                    b't'
                } else {
                    b'b'
                });
                out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }
}

fn put_old(out: &mut Vec<u8>, old: &OldTuple) {
    match old {
        OldTuple::Key(t) => {
            out.push(b'K');
            put_tuple(out, t);
        }
        OldTuple::Full(t) => {
            out.push(b'O');
            put_tuple(out, t);
        }
    }
}

fn encode(msg: &Message) -> Vec<u8> {
    let mut out = vec![msg.kind().tag()];
    let o = &mut out;
    match msg {
        Message::Begin(m) => {
            o.extend_from_slice(&m.final_lsn.to_be_bytes());
            o.extend_from_slice(&m.commit_time.to_be_bytes());
            o.extend_from_slice(&m.xid.to_be_bytes());
        }
        Message::Commit(m) => {
            o.push(m.flags);
            o.extend_from_slice(&m.commit_lsn.to_be_bytes());
            o.extend_from_slice(&m.end_lsn.to_be_bytes());
            o.extend_from_slice(&m.commit_time.to_be_bytes());
        }
        Message::Origin(m) => {
            o.extend_from_slice(&m.commit_lsn.to_be_bytes());
            put_cstr(o, &m.name);
        }
        Message::Relation(m) => {
            o.extend_from_slice(&m.oid.to_be_bytes());
            put_cstr(o, &m.namespace);
            put_cstr(o, &m.name);
            o.push(m.replica_identity.to_byte());
            o.extend_from_slice(&(m.columns.len() as i16).to_be_bytes());
            for c in &m.columns {
                o.push(u8::from(c.is_key));
                put_cstr(o, &c.name);
                o.extend_from_slice(&c.type_oid.to_be_bytes());
                o.extend_from_slice(&c.type_modifier.to_be_bytes());
            }
        }
        Message::Type(m) => {
            o.extend_from_slice(&m.oid.to_be_bytes());
            put_cstr(o, &m.namespace);
            put_cstr(o, &m.name);
        }
        Message::Insert(m) => {
            o.extend_from_slice(&m.relation_oid.to_be_bytes());
            o.push(b'N');
            put_tuple(o, &m.new);
        }
        Message::Update(m) => {
            o.extend_from_slice(&m.relation_oid.to_be_bytes());
            if let Some(old) = &m.old {
                put_old(o, old);
            }
            o.push(b'N');
            put_tuple(o, &m.new);
        }
        Message::Delete(m) => {
            o.extend_from_slice(&m.relation_oid.to_be_bytes());
            put_old(o, &m.old);
        }
        Message::Truncate(m) => {
            o.extend_from_slice(&(m.relation_oids.len() as i32).to_be_bytes());
            o.push(u8::from(m.cascade) | (u8::from(m.restart_identity) << 1));
            for oid in &m.relation_oids {
                o.extend_from_slice(&oid.to_be_bytes());
            }
        }
        Message::Message(m) => {
            o.push(u8::from(m.transactional));
            o.extend_from_slice(&m.lsn.to_be_bytes());
            put_cstr(o, &m.prefix);
            o.extend_from_slice(&(m.content.len() as i32).to_be_bytes());
            o.extend_from_slice(&m.content);
        }
    }
    out
}

fn text(s: &str) -> Datum {
    Datum::Text(Bytes::copy_from_slice(s.as_bytes()))
}

fn tuple(values: Vec<Datum>) -> Tuple {
    Tuple(values)
}

fn column(name: &str, is_key: bool, type_oid: u32, type_modifier: i32) -> Column {
    Column {
        is_key,
        name: name.to_owned(),
        type_oid,
        type_modifier,
    }
}

fn sample_relation() -> Relation {
    Relation {
        oid: 16391,
        namespace: "wed".to_owned(),
        name: "field_values".to_owned(),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![column("id", true, 20, -1), column("value", false, 25, -1)],
    }
}

/// One of every message shape.
fn samples() -> Vec<Message> {
    let row = tuple(vec![text("1"), text("Ada")]);
    vec![
        Message::Begin(Begin {
            final_lsn: Lsn(0x1_5310_5800),
            commit_time: 783_000_000_000_000,
            xid: 733,
        }),
        Message::Commit(Commit {
            flags: 0,
            commit_lsn: Lsn(0x1_5310_5800),
            end_lsn: Lsn(0x1_5310_8800),
            commit_time: 783_000_000_000_000,
        }),
        Message::Origin(Origin {
            commit_lsn: Lsn(0xAB),
            name: "fieldsync_inbound".to_owned(),
        }),
        Message::Relation(sample_relation()),
        Message::Relation(Relation {
            oid: 1259,
            namespace: String::new(),
            name: "pg_class".to_owned(),
            replica_identity: ReplicaIdentity::Nothing,
            columns: vec![],
        }),
        Message::Type(Type {
            oid: 16386,
            namespace: "wed".to_owned(),
            name: "mood".to_owned(),
        }),
        Message::Insert(Insert {
            relation_oid: 16391,
            new: row.clone(),
        }),
        Message::Update(Update {
            relation_oid: 16391,
            old: None,
            new: row.clone(),
        }),
        Message::Update(Update {
            relation_oid: 16391,
            old: Some(OldTuple::Key(tuple(vec![text("0"), Datum::Null]))),
            new: row.clone(),
        }),
        Message::Update(Update {
            relation_oid: 16391,
            old: Some(OldTuple::Full(tuple(vec![text("1"), text("Bob")]))),
            new: tuple(vec![text("1"), Datum::UnchangedToast]),
        }),
        Message::Delete(Delete {
            relation_oid: 16391,
            old: OldTuple::Key(tuple(vec![text("1"), Datum::Null])),
        }),
        Message::Delete(Delete {
            relation_oid: 16391,
            old: OldTuple::Full(row),
        }),
        Message::Truncate(Truncate {
            cascade: true,
            restart_identity: true,
            relation_oids: vec![16398, 16403],
        }),
        Message::Truncate(Truncate {
            cascade: false,
            restart_identity: false,
            relation_oids: vec![16398],
        }),
        Message::Message(LogicalMessage {
            transactional: true,
            lsn: Lsn(0x1_5324_8000),
            prefix: "fieldsync".to_owned(),
            content: Bytes::from_static(b"inbound"),
        }),
        Message::Message(LogicalMessage {
            transactional: false,
            lsn: Lsn(7),
            prefix: "fs".to_owned(),
            content: Bytes::new(),
        }),
    ]
}

fn round_trip(msg: &Message) -> Message {
    match decode(&Bytes::from(encode(msg))) {
        Ok(decoded) => decoded,
        Err(e) => panic!("{:?} failed to decode: {e}", msg.kind()),
    }
}

fn decode_err(bytes: &[u8]) -> DecodeError {
    match decode(&Bytes::copy_from_slice(bytes)) {
        Ok(m) => panic!("expected an error, decoded {m:?}"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------------
// One test per message type
// ---------------------------------------------------------------------------------------------

#[test]
fn every_sample_message_round_trips() {
    for msg in samples() {
        assert_eq!(round_trip(&msg), msg);
    }
}

#[test]
fn begin_decodes_from_hand_written_bytes() {
    let mut b = vec![b'B'];
    b.extend_from_slice(&0x0000_0001_0000_0002u64.to_be_bytes());
    b.extend_from_slice(&(-5i64).to_be_bytes());
    b.extend_from_slice(&0xFFFF_FFFEu32.to_be_bytes());
    let msg = decode(&Bytes::from(b)).unwrap();
    assert_eq!(
        msg,
        Message::Begin(Begin {
            final_lsn: Lsn(0x1_0000_0002),
            commit_time: -5,
            xid: 0xFFFF_FFFE
        })
    );
}

#[test]
fn commit_keeps_flags_and_both_lsns() {
    let msg = Message::Commit(Commit {
        flags: 3,
        commit_lsn: Lsn(10),
        end_lsn: Lsn(u64::MAX),
        commit_time: i64::MIN,
    });
    assert_eq!(round_trip(&msg), msg);
}

#[test]
fn origin_name_is_decoded() {
    let msg = Message::Origin(Origin {
        commit_lsn: Lsn(1),
        name: "origin_ü".to_owned(),
    });
    assert_eq!(round_trip(&msg), msg);
}

#[test]
fn relation_with_empty_namespace_means_pg_catalog() {
    let Message::Relation(rel) = round_trip(&samples()[4]) else {
        panic!("not a relation")
    };
    assert_eq!(rel.namespace, "");
    assert_eq!(rel.qualified_name(), "pg_catalog.pg_class");
    assert_eq!(rel.replica_identity, ReplicaIdentity::Nothing);
    assert_eq!(sample_relation().qualified_name(), "wed.field_values");
}

#[test]
fn relation_keeps_key_flags_types_and_unicode_column_names() {
    let rel = Relation {
        oid: 42,
        namespace: "sch€ma".to_owned(),
        name: "tä".to_owned(),
        replica_identity: ReplicaIdentity::Index,
        columns: vec![
            column("naïve_名前", true, 1043, 24),
            column("😀", false, 1700, 655_366),
        ],
    };
    assert_eq!(
        round_trip(&Message::Relation(rel.clone())),
        Message::Relation(rel.clone())
    );
    assert_eq!(rel.column_index("😀"), Some(1));
    for identity in [
        ReplicaIdentity::Default,
        ReplicaIdentity::Nothing,
        ReplicaIdentity::Full,
    ] {
        let rel = Relation {
            replica_identity: identity,
            ..rel.clone()
        };
        assert_eq!(
            round_trip(&Message::Relation(rel.clone())),
            Message::Relation(rel)
        );
    }
}

#[test]
fn type_message_is_decoded() {
    let msg = Message::Type(Type {
        oid: 16386,
        namespace: "wed".to_owned(),
        name: "mood".to_owned(),
    });
    assert_eq!(round_trip(&msg), msg);
}

#[test]
fn tuple_kinds_null_unchanged_toast_text_and_binary_are_distinct() {
    let new = tuple(vec![
        Datum::Null,
        Datum::UnchangedToast,
        text(""),
        text("héllo"),
        Datum::Binary(Bytes::from_static(&[0, 0, 0, 1])),
    ]);
    let Message::Insert(ins) = round_trip(&Message::Insert(Insert { relation_oid: 1, new })) else {
        panic!("not an insert")
    };
    assert_eq!(ins.new.get(0), Some(&Datum::Null));
    assert_eq!(ins.new.get(1), Some(&Datum::UnchangedToast));
    assert_ne!(ins.new.get(1), Some(&Datum::Null));
    assert_eq!(ins.new.get(2).and_then(Datum::bytes).map(|b| b.len()), Some(0));
    assert_eq!(ins.new.get(3), Some(&text("héllo")));
    assert_eq!(
        ins.new.get(4),
        Some(&Datum::Binary(Bytes::from_static(&[0, 0, 0, 1])))
    );
    assert_eq!(Datum::UnchangedToast.bytes(), None);
}

#[test]
fn datums_are_zero_copy_slices_of_the_input() {
    let buf = Bytes::from(encode(&samples()[6]));
    let Ok(Message::Insert(ins)) = decode(&buf) else {
        panic!("not an insert")
    };
    let Some(Datum::Text(value)) = ins.new.get(1) else {
        panic!("not text")
    };
    let start = buf.as_ptr() as usize;
    let at = value.as_ptr() as usize;
    assert!(
        at >= start && at + value.len() <= start + buf.len(),
        "datum was copied"
    );
}

#[test]
fn update_without_old_with_key_and_with_full_old_row() {
    for msg in &samples()[7..10] {
        assert_eq!(&round_trip(msg), msg);
    }
    let Message::Update(u) = &samples()[8] else {
        panic!()
    };
    assert!(matches!(u.old, Some(OldTuple::Key(_))));
    let Message::Update(u) = &samples()[9] else {
        panic!()
    };
    assert!(matches!(u.old, Some(OldTuple::Full(_))));
}

#[test]
fn delete_with_key_and_with_full_old_row() {
    for msg in &samples()[10..12] {
        assert_eq!(&round_trip(msg), msg);
    }
}

#[test]
fn truncate_options_map_to_cascade_and_restart_identity() {
    let mut b = vec![b'T'];
    b.extend_from_slice(&1i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&7u32.to_be_bytes());
    let msg = decode(&Bytes::from(b)).unwrap();
    let expected = Truncate {
        cascade: false,
        restart_identity: true,
        relation_oids: vec![7],
    };
    assert_eq!(msg, Message::Truncate(expected));
    for msg in &samples()[12..14] {
        assert_eq!(&round_trip(msg), msg);
    }
}

#[test]
fn logical_messages_transactional_and_not() {
    for msg in &samples()[14..16] {
        assert_eq!(&round_trip(msg), msg);
    }
}

#[test]
fn pg_timestamps_convert_to_unix_and_saturate() {
    assert_eq!(pg_timestamp_to_unix_micros(0), 946_684_800_000_000);
    assert_eq!(pg_timestamp_to_unix_micros(-946_684_800_000_000), 0);
    assert_eq!(pg_timestamp_to_unix_micros(i64::MAX), i64::MAX);
}

// ---------------------------------------------------------------------------------------------
// Relation cache
// ---------------------------------------------------------------------------------------------

#[test]
fn relation_cache_replaces_definition_when_a_column_is_added_then_dropped() {
    let mut cache = RelationCache::new();
    let v1 = cache.apply(sample_relation());
    let two = tuple(vec![text("1"), text("a")]);
    let three = tuple(vec![text("1"), text("a"), Datum::Null]);
    assert!(cache.resolve(16391, &two).is_ok());

    let mut added = sample_relation();
    added.columns.push(column("extra", false, 23, -1));
    cache.apply(added.clone());
    assert_eq!(cache.resolve(16391, &three).map(|r| r.as_ref()), Ok(&added));
    assert_eq!(
        cache.resolve(16391, &two),
        Err(ResolveError::ColumnCountMismatch {
            table: "wed.field_values".to_owned(),
            expected: 3,
            found: 2
        })
    );

    let mut dropped = added;
    dropped.columns.remove(1);
    cache.apply(dropped.clone());
    assert_eq!(cache.get(16391).map(|r| r.as_ref()), Some(&dropped));
    assert_eq!(
        cache.resolve(16391, &two).map(|r| r.column_index("extra")),
        Ok(Some(1))
    );
    assert_eq!(cache.len(), 1);
    // A holder of the first definition keeps the shape its rows were decoded with.
    assert_eq!(v1.columns.len(), 2);
    assert_eq!(v1.columns[1].name, "value");
}

#[test]
fn relation_cache_reports_unknown_relations_and_forgets_on_clear() {
    let mut cache = RelationCache::new();
    let row = tuple(vec![text("1"), text("a")]);
    assert_eq!(
        cache.resolve(5, &row),
        Err(ResolveError::UnknownRelation { oid: 5 })
    );
    cache.apply(sample_relation());
    assert!(cache.get(16391).is_some());
    cache.clear();
    assert!(cache.is_empty());
    assert_eq!(
        cache.resolve(16391, &row).map_err(|e| e.to_string()),
        Err("change for relation oid 16391 arrived before its Relation message".to_owned())
    );
}
