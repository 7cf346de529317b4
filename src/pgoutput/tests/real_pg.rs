//! Decoding bytes that a real PostgreSQL 15.18 produced.

use bytes::Bytes;

use super::*;

// ---------------------------------------------------------------------------------------------
// Real PostgreSQL 15.18 output
// ---------------------------------------------------------------------------------------------
//
// Captured with `pg_logical_slot_peek_binary_changes(slot, NULL, NULL, 'proto_version', '1',
// 'publication_names', 'p', 'messages', 'true')` after: a table `wed.field_values(id bigint primary
// key, "naïve_名前" text, mood wed.mood (enum), amount numeric(10,2), big text (storage external),
// note varchar(20))`; an insert with a 2100-byte `big` (left out here for size); an update of `note`
// (big arrives as 'u'); an update of the key ('K'); a delete; a `REPLICA IDENTITY FULL` table
// `full_t` with insert, update ('O') and delete ('O'); `ALTER TABLE full_t ADD COLUMN extra int` and an
// insert; `TRUNCATE full_t, child RESTART IDENTITY CASCADE`; a transactional and a non-transactional
// logical message; and an insert under replication origin `fieldsync_inbound` (origin lsn 0/AB).

pub(super) const PG15_TEXT: &str = "
420000000001530f780003042ae4c8d9f6000002dc
5900004002776564006d6f6f6400
5200004007776564006669656c645f76616c756573006400060169640000000014ffffffff006e61c3af76655fe5908de5898d0000000019ffffffff006d6f6f640000004002ffffffff00616d6f756e7400000006a4000a0006006269670000000019ffffffff006e6f7465000000041300000018
43000000000001530f780000000001530fa80003042ae4c8d9f6
4200000000015310580003042ae4c8e096000002dd
55000040074e0006740000000131740000000668c3a96c6c6f74000000056861707079740000000531322e35307574000000016e
4300000000000153105800000000015310880003042ae4c8e096
4200000000015311800003042ae4c8e2d2000002de
55000040074b00067400000001316e6e6e6e6e4e0006740000000132740000000668c3a96c6c6f74000000056861707079740000000531322e35307574000000016e
4300000000000153118000000000015311b00003042ae4c8e2d2
4200000000015312680003042ae4c8e48d000002df
44000040074b00067400000001326e6e6e6e6e
4300000000000153126800000000015312980003042ae4c8e48d
4200000000015312d80003042ae4c8e685000002e0
520000400e7075626c69630066756c6c5f74006600020169640000000017ffffffff01760000000019ffffffff
490000400e4e0002740000000131740000000161
430000000000015312d800000000015313080003042ae4c8e685
4200000000015313600003042ae4c8e850000002e1
550000400e4f00027400000001317400000001614e0002740000000131740000000162
4300000000000153136000000000015313900003042ae4c8e850
4200000000015313d80003042ae4c8e93e000002e2
440000400e4f0002740000000131740000000162
430000000000015313d800000000015314080003042ae4c8e93e
4200000000015317c80003042ae4c8ebd4000002e4
520000400e7075626c69630066756c6c5f74006600030169640000000017ffffffff01760000000019ffffffff0165787472610000000017ffffffff
490000400e4e0003740000000132740000000163740000000137
430000000000015317c800000000015317f80003042ae4c8ebd4
4200000000015322e80003042ae4c8f08a000002e5
520000400e7075626c69630066756c6c5f74006600030169640000000017ffffffff01760000000019ffffffff0165787472610000000017ffffffff
52000040137075626c6963006368696c64006400010069640000000017ffffffff
5400000002030000400e00004013
430000000000015322e800000000015324380003042ae4c8f08a
4200000000015324800003042ae4c8f9de000002e6
4d0100000000015324806669656c6473796e630000000007696e626f756e64
4300000000000153248000000000015324b00003042ae4c8f9de
4d0000000000015324e86673000000000200ff
4200000000015327a00003042ae4c90034000002e8
4f00000000000000ab6669656c6473796e635f696e626f756e6400
52000040137075626c6963006368696c64006400010069640000000017ffffffff
49000040134e0001740000000135
430000000000015327a000000000015327e80003042ae4c90034
";

/// The row changes of the same stream with `'binary', 'true'` added.
pub(super) const PG15_BINARY: &str = "
55000040074e000662000000080000000000000001620000000668c3a96c6c6f62000000056861707079620000000c0002000000000002000c13887562000000016e
55000040074b0006620000000800000000000000016e6e6e6e6e4e000662000000080000000000000002620000000668c3a96c6c6f62000000056861707079620000000c0002000000000002000c13887562000000016e
44000040074b0006620000000800000000000000026e6e6e6e6e
490000400e4e0002620000000400000001620000000161
550000400e4f00026200000004000000016200000001614e0002620000000400000001620000000162
440000400e4f0002620000000400000001620000000162
490000400e4e0003620000000400000002620000000163620000000400000007
49000040134e0001620000000400000005
";

fn unhex(line: &str) -> Vec<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("bad hex digit {c}"),
    };
    line.as_bytes()
        .chunks(2)
        .map(|p| digit(p[0]) << 4 | digit(p[1]))
        .collect()
}

pub(super) fn real_messages(fixture: &str) -> impl Iterator<Item = Vec<u8>> + '_ {
    fixture.lines().filter(|l| !l.is_empty()).map(unhex)
}

fn decode_real(fixture: &str) -> Vec<Message> {
    real_messages(fixture)
        .map(|b| decode(&Bytes::from(b)).unwrap_or_else(|e| panic!("real message failed: {e}")))
        .collect()
}

#[test]
fn real_postgres_15_stream_decodes_and_resolves_against_the_relation_cache() {
    let messages = decode_real(PG15_TEXT);
    let mut cache = RelationCache::new();
    let mut changes = 0;
    for msg in &messages {
        match msg {
            Message::Relation(rel) => {
                cache.apply(rel.clone());
            }
            Message::Insert(m) => {
                cache.resolve(m.relation_oid, &m.new).unwrap();
                changes += 1;
            }
            Message::Update(m) => {
                let rel = cache.resolve(m.relation_oid, &m.new).unwrap();
                if let Some(old) = &m.old {
                    assert_eq!(old.tuple().len(), rel.columns.len());
                }
                changes += 1;
            }
            Message::Delete(m) => {
                cache.resolve(m.relation_oid, m.old.tuple()).unwrap();
                changes += 1;
            }
            _ => {}
        }
    }
    assert_eq!(changes, 8);

    let Message::Begin(begin) = &messages[0] else {
        panic!("stream starts with Begin")
    };
    assert_eq!(
        (begin.final_lsn.to_string(), begin.xid),
        ("0/1530F78".to_owned(), 732)
    );
    let Message::Commit(commit) = &messages[3] else {
        panic!("then Commit")
    };
    assert_eq!(
        (commit.commit_lsn, commit.end_lsn.to_string()),
        (begin.final_lsn, "0/1530FA8".to_owned())
    );
    assert_eq!(commit.commit_time, begin.commit_time);
    // 2024-ish: the commit timestamp is a plausible Unix time after conversion.
    assert!(pg_timestamp_to_unix_micros(commit.commit_time) > 1_700_000_000_000_000);

    assert_eq!(
        messages[1],
        Message::Type(Type {
            oid: 16386,
            namespace: "wed".to_owned(),
            name: "mood".to_owned()
        })
    );
    let Message::Relation(rel) = &messages[2] else {
        panic!("then Relation")
    };
    assert_eq!(rel.qualified_name(), "wed.field_values");
    assert_eq!(rel.replica_identity, ReplicaIdentity::Default);
    let names: Vec<&str> = rel.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "naïve_名前", "mood", "amount", "big", "note"]);
    assert_eq!(rel.columns[0], column("id", true, 20, -1));
    assert_eq!(rel.columns[2], column("mood", false, 16386, -1));
    assert_eq!(rel.columns[3], column("amount", false, 1700, (10 << 16 | 2) + 4));
    assert_eq!(rel.columns[5], column("note", false, 1043, 24));

    // Update of `note` only: the external TOASTed `big` is 'u', not NULL.
    let Message::Update(up) = &messages[5] else {
        panic!("Update")
    };
    assert_eq!(up.old, None);
    assert_eq!(up.new.get(4), Some(&Datum::UnchangedToast));
    assert_eq!(up.new.get(5), Some(&text("n")));
    assert_eq!(up.new.get(1), Some(&text("héllo")));

    // Key change: old key tuple with only the key set.
    let Message::Update(up) = &messages[8] else {
        panic!("Update")
    };
    assert_eq!(
        up.old,
        Some(OldTuple::Key(tuple(vec![
            text("1"),
            Datum::Null,
            Datum::Null,
            Datum::Null,
            Datum::Null,
            Datum::Null
        ])))
    );
    let Message::Delete(del) = &messages[11] else {
        panic!("Delete")
    };
    assert!(matches!(&del.old, OldTuple::Key(t) if t.get(0) == Some(&text("2"))));

    // REPLICA IDENTITY FULL: every column flagged as key, old rows as 'O'.
    let Message::Relation(full) = &messages[14] else {
        panic!("Relation")
    };
    assert_eq!(full.replica_identity, ReplicaIdentity::Full);
    assert!(full.columns.iter().all(|c| c.is_key));
    let Message::Update(up) = &messages[18] else {
        panic!("Update")
    };
    assert_eq!(up.old, Some(OldTuple::Full(tuple(vec![text("1"), text("a")]))));
    assert!(matches!(
        &messages[21],
        Message::Delete(Delete {
            old: OldTuple::Full(_),
            ..
        })
    ));

    // ALTER TABLE ADD COLUMN arrives as a new Relation before the next insert.
    let Message::Relation(altered) = &messages[24] else {
        panic!("Relation")
    };
    assert_eq!(altered.oid, full.oid);
    assert_eq!(altered.column_index("extra"), Some(2));
    assert_eq!(cache.get(full.oid).map(|r| r.columns.len()), Some(3));

    assert_eq!(
        messages[30],
        Message::Truncate(Truncate {
            cascade: true,
            restart_identity: true,
            relation_oids: vec![16398, 16403]
        })
    );
    let Message::Message(m) = &messages[33] else {
        panic!("Message")
    };
    assert!(m.transactional);
    assert_eq!(
        (m.prefix.as_str(), &m.content[..]),
        ("fieldsync", &b"inbound"[..])
    );
    let Message::Message(m) = &messages[35] else {
        panic!("Message")
    };
    assert!(!m.transactional);
    assert_eq!((m.prefix.as_str(), &m.content[..]), ("fs", &[0x00, 0xff][..]));

    assert_eq!(
        messages[37],
        Message::Origin(Origin {
            commit_lsn: Lsn(0xAB),
            name: "fieldsync_inbound".to_owned()
        })
    );
}

#[test]
fn real_postgres_15_binary_tuples_decode() {
    let messages = decode_real(PG15_BINARY);
    assert_eq!(messages.len(), 8);
    let Message::Update(up) = &messages[0] else {
        panic!("Update")
    };
    assert_eq!(
        up.new.get(0),
        Some(&Datum::Binary(Bytes::copy_from_slice(&1i64.to_be_bytes())))
    );
    assert_eq!(up.new.get(4), Some(&Datum::UnchangedToast));
    assert_eq!(
        messages[7],
        Message::Insert(Insert {
            relation_oid: 16403,
            new: tuple(vec![Datum::Binary(Bytes::copy_from_slice(&5i32.to_be_bytes()))])
        })
    );
}
