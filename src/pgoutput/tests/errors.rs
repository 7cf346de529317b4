//! Error messages, truncated and over-long input, and property tests (no input panics; generated
//! messages round-trip).

use bytes::Bytes;
use proptest::prelude::*;

use super::real_pg::{real_messages, PG15_BINARY, PG15_TEXT};
use super::*;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn error_messages_name_message_field_and_offset() {
    assert_eq!(decode_err(b"").to_string(), "empty pgoutput message: no tag byte");
    assert_eq!(
        decode_err(b"I").to_string(),
        "truncated Insert message: needed 4 bytes for relation oid at offset 1, 0 left"
    );
    let e = decode_err(b"S\0\0\0\x01");
    assert_eq!(e, DecodeError::UnknownTag { tag: b'S' });
    assert!(e.to_string().contains("'S' (0x53)"), "{e}");
    assert!(decode_err(b"\0").to_string().contains("(0x00)"));

    // Insert, oid 1, 'N', one column of kind 'x'.
    let e = decode_err(b"I\0\0\0\x01N\0\x01x");
    assert_eq!(
        e.to_string(),
        "unknown tuple column kind 'x' (0x78) for kind of column 0 of the new tuple of Insert message at \
         offset 8: expected 'n', 'u', 't' or 'b'"
    );

    // Relation whose namespace is not UTF-8.
    let e = decode_err(b"R\0\0\0\x01\xff\0t\0d\0\0");
    assert_eq!(
        e.to_string(),
        "invalid UTF-8 in namespace of Relation message at offset 5"
    );

    let e = decode_err(b"I\0\0\0\x01N\xff\xff");
    assert_eq!(
        e.to_string(),
        "negative column count of the new tuple in Insert message at offset 6: -1"
    );
    let e = decode_err(b"R\0\0\0\x01\0t\0d\xff\xfe");
    assert_eq!(
        e.to_string(),
        "negative column count in Relation message at offset 9: -2"
    );

    let e = decode_err(b"U\0\0\0\x01X");
    assert_eq!(
        e.to_string(),
        "unexpected sub-tag 'X' (0x58) in Update message at offset 5: expected 'K', 'O' or 'N'"
    );
    let e = decode_err(b"U\0\0\0\x01K\0\0K");
    assert_eq!(
        e.to_string(),
        "unexpected sub-tag 'K' (0x4b) in Update message at offset 8: expected 'N'"
    );
    assert!(matches!(
        decode_err(b"D\0\0\0\x01N\0\0"),
        DecodeError::UnexpectedSubTag { offset: 5, .. }
    ));

    let e = decode_err(b"R\0\0\0\x01\0t\0z\0\0");
    assert!(e.to_string().contains("replica identity 'z' (0x7a)"), "{e}");

    let e = decode_err(b"R\0\0\0\x01\0t");
    assert_eq!(
        e.to_string(),
        "truncated Relation message: relation name at offset 6 has no NUL terminator in the 1 bytes left"
    );

    let mut b = encode(&samples()[0]);
    b.extend_from_slice(b"xyz");
    assert_eq!(
        decode_err(&b).to_string(),
        "3 trailing bytes after a complete Begin message, starting at offset 21"
    );
}

#[test]
fn errors_never_contain_datum_contents() {
    let secret = "bride@example.com";
    let new = tuple(vec![text(secret), text(secret)]);
    let full = encode(&Message::Insert(Insert { relation_oid: 9, new }));
    let mut bad_kind = full.clone();
    let second_kind = full.len() - 1 - 4 - secret.len();
    bad_kind[second_kind] = b'?';
    let mut trailing = full.clone();
    trailing.extend_from_slice(secret.as_bytes());
    let cases = [full[..full.len() - 3].to_vec(), bad_kind, trailing];
    for bytes in cases {
        let e = decode_err(&bytes);
        assert!(
            !e.to_string().contains("bride") && !format!("{e:?}").contains("bride"),
            "{e}"
        );
    }
}

#[test]
fn every_strict_prefix_of_a_valid_message_is_an_error() {
    let messages = samples()
        .into_iter()
        .map(|m| encode(&m))
        .chain(real_messages(PG15_TEXT))
        .chain(real_messages(PG15_BINARY));
    for full in messages {
        assert!(decode(&Bytes::from(full.clone())).is_ok());
        for n in 0..full.len() {
            assert!(
                decode(&Bytes::copy_from_slice(&full[..n])).is_err(),
                "prefix {n} of {full:02x?} decoded"
            );
        }
    }
}

#[test]
fn trailing_garbage_after_a_valid_message_is_an_error() {
    for full in samples()
        .into_iter()
        .map(|m| encode(&m))
        .chain(real_messages(PG15_TEXT))
    {
        for garbage in [&b"\0"[..], b"N", b"\xff\xff\xff\xff"] {
            let mut b = full.clone();
            b.extend_from_slice(garbage);
            let e = decode_err(&b);
            assert!(
                matches!(e, DecodeError::TrailingBytes { offset, count, .. } if offset == full.len() && count == garbage.len()),
                "{e}"
            );
        }
    }
}

#[test]
fn huge_counts_with_little_input_fail_without_large_allocations() {
    let e = decode_err(b"T\x7f\xff\xff\xff\0\0\0\0\x01");
    assert!(
        matches!(
            e,
            DecodeError::Truncated {
                field: Field::TruncatedRelationOid { index: 1 },
                ..
            }
        ),
        "{e}"
    );
    let e = decode_err(b"I\0\0\0\x01N\x7f\xff");
    assert!(matches!(e, DecodeError::Truncated { offset: 8, .. }), "{e}");
    let e = decode_err(b"M\x01\0\0\0\0\0\0\0\0p\0\x7f\xff\xff\xff");
    assert_eq!(
        e.to_string(),
        "truncated Message message: needed 2147483647 bytes for content at offset 16, 0 left"
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

fn arb_string() -> impl Strategy<Value = String> {
    "[^\\x00]{0,12}"
}

fn arb_datum() -> impl Strategy<Value = Datum> {
    prop_oneof![
        Just(Datum::Null),
        Just(Datum::UnchangedToast),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(|v| Datum::Text(Bytes::from(v))),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(|v| Datum::Binary(Bytes::from(v))),
    ]
}

fn arb_tuple() -> impl Strategy<Value = Tuple> {
    proptest::collection::vec(arb_datum(), 0..8).prop_map(Tuple)
}

fn arb_old() -> impl Strategy<Value = OldTuple> {
    prop_oneof![
        arb_tuple().prop_map(OldTuple::Key),
        arb_tuple().prop_map(OldTuple::Full)
    ]
}

fn arb_lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn)
}

fn arb_message() -> impl Strategy<Value = Message> {
    let identity = prop_oneof![
        Just(ReplicaIdentity::Default),
        Just(ReplicaIdentity::Nothing),
        Just(ReplicaIdentity::Full),
        Just(ReplicaIdentity::Index),
    ];
    let column = (any::<bool>(), arb_string(), any::<u32>(), any::<i32>()).prop_map(
        |(is_key, name, type_oid, type_modifier)| Column {
            is_key,
            name,
            type_oid,
            type_modifier,
        },
    );
    prop_oneof![
        (arb_lsn(), any::<i64>(), any::<u32>()).prop_map(|(final_lsn, commit_time, xid)| Message::Begin(
            Begin {
                final_lsn,
                commit_time,
                xid
            }
        )),
        (any::<u8>(), arb_lsn(), arb_lsn(), any::<i64>()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_time)| {
                Message::Commit(Commit {
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_time,
                })
            }
        ),
        (arb_lsn(), arb_string()).prop_map(|(commit_lsn, name)| Message::Origin(Origin { commit_lsn, name })),
        (
            any::<u32>(),
            arb_string(),
            arb_string(),
            identity,
            proptest::collection::vec(column, 0..6)
        )
            .prop_map(|(oid, namespace, name, replica_identity, columns)| {
                Message::Relation(Relation {
                    oid,
                    namespace,
                    name,
                    replica_identity,
                    columns,
                })
            }),
        (any::<u32>(), arb_string(), arb_string()).prop_map(|(oid, namespace, name)| Message::Type(Type {
            oid,
            namespace,
            name
        })),
        (any::<u32>(), arb_tuple())
            .prop_map(|(relation_oid, new)| Message::Insert(Insert { relation_oid, new })),
        (any::<u32>(), proptest::option::of(arb_old()), arb_tuple()).prop_map(|(relation_oid, old, new)| {
            Message::Update(Update {
                relation_oid,
                old,
                new,
            })
        }),
        (any::<u32>(), arb_old())
            .prop_map(|(relation_oid, old)| Message::Delete(Delete { relation_oid, old })),
        (
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(any::<u32>(), 0..6)
        )
            .prop_map(|(cascade, restart_identity, relation_oids)| {
                Message::Truncate(Truncate {
                    cascade,
                    restart_identity,
                    relation_oids,
                })
            }),
        (
            any::<bool>(),
            arb_lsn(),
            arb_string(),
            proptest::collection::vec(any::<u8>(), 0..32)
        )
            .prop_map(|(transactional, lsn, prefix, content)| {
                Message::Message(LogicalMessage {
                    transactional,
                    lsn,
                    prefix,
                    content: Bytes::from(content),
                })
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&Bytes::from(bytes));
    }

    #[test]
    fn arbitrary_bytes_after_each_valid_tag_never_panic(
        tag in proptest::sample::select(b"BCORYIUDTM".to_vec()),
        rest in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = vec![tag];
        bytes.extend(rest);
        let _ = decode(&Bytes::from(bytes));
    }

    #[test]
    fn generated_messages_round_trip(msg in arb_message()) {
        prop_assert_eq!(decode(&Bytes::from(encode(&msg))), Ok(msg));
    }

    #[test]
    fn mutated_valid_messages_never_panic(
        msg in arb_message(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encode(&msg);
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let _ = decode(&Bytes::from(bytes));
    }
}
