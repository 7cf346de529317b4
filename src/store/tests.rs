use super::record::{EventId, TxnRecord};
use super::writer::QueueWriter;
use super::*;

fn txn(commit: u64, records: u32) -> TxnRecord {
    TxnRecord {
        commit_lsn: Lsn(commit),
        end_lsn: Lsn(commit + 8),
        commit_time: 0,
        xid: 1,
        origin: None,
        records,
    }
}

fn record_json(id: EventId) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": id, "commit_lsn": id.commit_lsn, "commit_time": 0, "xid": 1, "origin": null,
        "schema": "public", "table": "t", "op": "insert", "identity": null, "old": null,
        "new": {"n": id.index.to_string()}
    }))
    .unwrap()
}

fn stage_txn(w: &mut QueueWriter, commit: u64, n: u32) {
    for index in 0..n {
        let id = EventId {
            commit_lsn: Lsn(commit),
            index,
        };
        w.stage(id, &record_json(id)).unwrap();
    }
}

#[test]
fn committed_records_become_visible_once_flushed_in_commit_order() {
    let dir = tempfile::tempdir().unwrap();
    let q = Store::open(dir.path(), 8 << 20).unwrap();
    let mut w = q.writer().unwrap();
    stage_txn(&mut w, 100, 3);
    w.sync().unwrap();
    q.flush_blocking().unwrap();
    assert!(
        q.records_after(None, 100).unwrap().is_empty(),
        "staged records are invisible"
    );
    w.commit(txn(100, 3)).unwrap();
    stage_txn(&mut w, 200, 2);
    w.commit(txn(200, 2)).unwrap();
    w.sync().unwrap();
    let durable = q.flush_blocking().unwrap();
    assert_eq!(
        durable,
        Durable {
            commit_lsn: Lsn(200),
            end_lsn: Lsn(208),
            deliveries: 0,
        }
    );
    let ids: Vec<_> = q
        .records_after(None, 100)
        .unwrap()
        .into_iter()
        .map(|r| (r.commit_lsn.0, r.id.index))
        .collect();
    assert_eq!(ids, vec![(100, 0), (100, 1), (100, 2), (200, 0), (200, 1)]);
    let after = q
        .records_after(
            Some(EventId {
                commit_lsn: Lsn(100),
                index: 2,
            }),
            100,
        )
        .unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!(q.summary().unwrap().records, 5);
    assert_eq!(
        q.last_records(1).unwrap()[0].id,
        EventId {
            commit_lsn: Lsn(200),
            index: 1
        }
    );
}

#[test]
fn a_half_written_transaction_is_removed_when_the_queue_reopens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = Store::open(dir.path(), 8 << 20).unwrap();
        let mut w = q.writer().unwrap();
        stage_txn(&mut w, 100, 2);
        w.commit(txn(100, 2)).unwrap();
        stage_txn(&mut w, 300, 50); // never committed: the process "dies" here
        w.sync().unwrap();
        q.flush_blocking().unwrap();
        q.db.flush().unwrap();
    }
    let q = Store::open(dir.path(), 8 << 20).unwrap();
    assert_eq!(q.records_after(None, 1000).unwrap().len(), 2);
    let stored: usize = q
        .changes
        .iter()
        .map(|c| chunk::lines(&c.unwrap().1).count())
        .sum();
    assert_eq!(stored, 2, "the staged tail is gone, not just hidden");
    let mut w = q.writer().unwrap();
    assert!(w.is_stored(Lsn(100)));
    assert!(!w.is_stored(Lsn(300)));
    stage_txn(&mut w, 300, 50);
    w.commit(txn(300, 50)).unwrap();
    w.sync().unwrap();
    q.flush_blocking().unwrap();
    assert_eq!(q.records_after(None, 1000).unwrap().len(), 52);
}

#[test]
fn a_replayed_transaction_is_refused_by_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let q = Store::open(dir.path(), 8 << 20).unwrap();
    let mut w = q.writer().unwrap();
    stage_txn(&mut w, 100, 1);
    w.commit(txn(100, 1)).unwrap();
    assert!(w.is_stored(Lsn(100)) && w.is_stored(Lsn(50)));
    assert!(matches!(
        w.commit(txn(100, 1)),
        Err(StoreError::OutOfOrder { .. })
    ));
}

#[test]
fn discarding_an_open_transaction_removes_only_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let q = Store::open(dir.path(), 8 << 20).unwrap();
    let mut w = q.writer().unwrap();
    stage_txn(&mut w, 100, 2);
    w.commit(txn(100, 2)).unwrap();
    stage_txn(&mut w, 200, 5);
    assert_eq!(w.discard(Lsn(200)).unwrap(), 5);
    q.flush_blocking().unwrap();
    assert_eq!(q.records_after(None, 100).unwrap().len(), 2);
    // the same once the open transaction's records had already been written out
    stage_txn(&mut w, 300, 5);
    w.sync().unwrap();
    assert_eq!(w.discard(Lsn(300)).unwrap(), 5);
    let stored: usize = q
        .changes
        .iter()
        .map(|c| chunk::lines(&c.unwrap().1).count())
        .sum();
    assert_eq!(stored, 2);
}

#[test]
fn the_confirmed_position_is_kept_and_never_goes_backwards() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = Store::open(dir.path(), 8 << 20).unwrap();
        q.save_confirmed(Lsn(500)).unwrap();
        q.save_confirmed(Lsn(400)).unwrap();
        q.flush_blocking().unwrap();
        q.db.flush().unwrap();
    }
    let q = Store::open(dir.path(), 8 << 20).unwrap();
    assert_eq!(q.confirmed().unwrap(), Lsn(500));
}

#[test]
fn a_queue_in_use_is_reported_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _q = Store::open(dir.path(), 8 << 20).unwrap();
    match Store::open(dir.path(), 8 << 20) {
        Err(StoreError::Locked { .. }) => {}
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("a queue in use must not open twice"),
    }
}

#[test]
fn a_large_transaction_is_written_out_in_bounded_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let q = Store::open(dir.path(), 8 << 20).unwrap();
    let mut w = q.writer().unwrap();
    stage_txn(&mut w, 100, 5_000);
    assert!(
        q.changes.raw().len() >= 2,
        "chunks were written before the commit"
    );
    assert!(
        w.chunk.len() < chunk::CHUNK_BYTES,
        "the in-memory chunk stays bounded"
    );
    w.commit(txn(100, 5_000)).unwrap();
    w.sync().unwrap();
    q.flush_blocking().unwrap();
    let all = q.records_after(None, usize::MAX).unwrap();
    assert_eq!(all.len(), 5_000);
    let from_middle = q.records_after(Some(all[2_999].id), usize::MAX).unwrap();
    assert_eq!(from_middle.first().map(|r| r.id), Some(all[3_000].id));
    assert_eq!(
        q.last_records(3)
            .unwrap()
            .iter()
            .map(|r| r.id.index)
            .collect::<Vec<_>>(),
        vec![4_997, 4_998, 4_999]
    );
}

/// Every directory under `root` and `root` itself, and every file, with its permission bits.
fn modes(root: &Path) -> Vec<(std::path::PathBuf, bool, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        out.push((
            dir.clone(),
            true,
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        ));
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                out.push((
                    entry.path(),
                    false,
                    entry.metadata().unwrap().permissions().mode() & 0o777,
                ));
            }
        }
    }
    out
}

#[test]
fn the_store_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    // a store made before the rule, world-readable
    drop(Store::open(&path, 1 << 20).unwrap());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(path.join("conf"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let q = Store::open(&path, 1 << 20).unwrap();
    let all = modes(&path);
    assert!(all.len() > 2, "{all:?}");
    for (p, is_dir, mode) in all {
        assert_eq!(mode, if is_dir { 0o700 } else { 0o600 }, "{}", p.display());
    }
    drop(q);
}

#[test]
fn retention_removes_leading_chunks_counts_them_and_a_counted_removal_is_finished_on_open() {
    use super::retention::{Limits, Removed, REMOVED};
    let dir = tempfile::tempdir().unwrap();
    let q = Store::open(dir.path(), 8 << 20).unwrap();
    let mut w = q.writer().unwrap();
    for commit in [100, 200, 300] {
        stage_txn(&mut w, commit, 3);
        w.commit(txn(commit, 3)).unwrap();
        w.sync().unwrap();
    }
    q.flush_blocking().unwrap();
    q.save_confirmed(Lsn(208)).unwrap();
    let limits = Limits {
        confirmed: q.confirmed().unwrap(),
        floor: Some(EventId::MAX),
        cutoff: 1,
    };
    let round = q.remove_expired(&limits, 1).unwrap();
    assert_eq!(
        (round.chunks, round.records),
        (1, 3),
        "at most the round's chunks"
    );
    let round = q.remove_expired(&limits, 10).unwrap();
    assert_eq!(
        (round.chunks, round.records),
        (1, 3),
        "stops at the first chunk that is not confirmed"
    );
    let s = q.summary().unwrap();
    assert_eq!((s.records, s.held, s.removed), (9, 3, 6));
    let left: Vec<_> = q
        .records_after(None, 100)
        .unwrap()
        .iter()
        .map(|r| r.id.commit_lsn)
        .collect();
    assert_eq!(left, [Lsn(300); 3]);
    assert_eq!(q.oldest().unwrap().map(|(id, _)| id.commit_lsn), Some(Lsn(300)));
    assert_eq!(
        q.removed().unwrap().last,
        Some(EventId {
            commit_lsn: Lsn(200),
            index: 2
        })
    );

    // a crash after the counter was written and before the chunks were removed
    let counted = Removed {
        records: 9,
        last: Some(EventId {
            commit_lsn: Lsn(300),
            index: 2,
        }),
    };
    q.meta
        .insert(REMOVED, serde_json::to_vec(&counted).unwrap())
        .unwrap();
    q.flush_blocking().unwrap();
    q.db.flush().unwrap();
    drop(w);
    drop(q);
    let q = Store::open(dir.path(), 8 << 20).unwrap();
    assert!(q.records_after(None, 100).unwrap().is_empty());
    let s = q.summary().unwrap();
    assert_eq!((s.records, s.held, s.removed), (9, 0, 9));
    assert_eq!(s.oldest_record_age_seconds, None);
}

use fieldsync_dev::scan::{holds, raw_bytes};

/// Writes one record, a wedding's context, a dead letter and a log entry, each holding `secret`.
fn write_everywhere(q: &Store, commit: u64, secret: &str) {
    let mut w = q.writer().unwrap();
    let id = EventId {
        commit_lsn: Lsn(commit),
        index: 0,
    };
    let line = serde_json::to_vec(&serde_json::json!({
        "id": id, "commit_lsn": id.commit_lsn, "commit_time": 0, "xid": 1, "origin": null,
        "schema": "public", "table": "t", "op": "insert", "identity": null, "old": null,
        "new": {"dietary_notes": secret}
    }))
    .unwrap();
    w.stage(id, &line).unwrap();
    w.commit(txn(commit, 1)).unwrap();
    w.sync().unwrap();
    q.flush_blocking().unwrap();
    q.context()
        .unwrap()
        .upsert_wedding(context::WeddingContext {
            id: format!("w{commit}"),
            couple_names: Some(secret.to_owned()),
            ..Default::default()
        })
        .unwrap();
    let d = q.deliveries().unwrap();
    let dead = deliveries::DeadLetter {
        integration_id: "crm".into(),
        event_id: id,
        wedding_id: Some(format!("w{commit}")),
        field_id: None,
        attempts: 1,
        status: Some(422),
        error: format!("rejected {secret}"),
        failed_at: deliveries::now_rfc3339(),
        requeued: false,
        envelope: Some(format!("{{\"value\":\"{secret}\"}}")),
        commit_time: 0,
    };
    d.put_dead(&dead).unwrap();
    d.log(&deliveries::LogEntry {
        at: deliveries::now_rfc3339(),
        integration_id: "crm".into(),
        event_id: id,
        wedding_id: Some(format!("w{commit}")),
        attempt: 1,
        outcome: deliveries::LogOutcome::Dead,
        status: Some(422),
        error: Some(format!("rejected {secret}")),
        latency_ms: None,
    })
    .unwrap();
    d.persist(None).unwrap();
    q.flush_blocking().unwrap();
    q.db.flush().unwrap();
}

/// Reads back everything [`write_everywhere`] wrote for `commit` and checks it holds `secret`.
fn reads_back(q: &Store, commit: u64, secret: &str) {
    let id = EventId {
        commit_lsn: Lsn(commit),
        index: 0,
    };
    let rec = q.record(id).unwrap().expect("the record");
    assert!(serde_json::to_string(&rec).unwrap().contains(secret));
    let w = q
        .context()
        .unwrap()
        .wedding(&format!("w{commit}"))
        .unwrap()
        .unwrap();
    assert_eq!(w.couple_names.as_deref(), Some(secret));
    let d = q.deliveries().unwrap();
    assert!(d.dead_letters().unwrap().iter().any(|l| l.error.contains(secret)));
    assert!(d
        .read_log(None, Some(id), 10)
        .unwrap()
        .iter()
        .any(|e| e.error.as_deref().is_some_and(|m| m.contains(secret))));
}

const KEY_A: [u8; 32] = [0xA1; 32];
const KEY_B: [u8; 32] = [0xB2; 32];

fn open_with(dir: &Path, current: Option<&[u8; 32]>, old: &[&[u8; 32]]) -> Result<Store, StoreError> {
    Store::open_sealed(dir, 8 << 20, cipher::Sealer::new(current, old))
}

#[test]
fn with_a_key_no_stored_byte_shows_a_value_and_everything_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = open_with(dir.path(), Some(&KEY_A), &[]).unwrap();
        write_everywhere(&q, 100, "Ada Lovelace-Byron");
        reads_back(&q, 100, "Ada Lovelace-Byron");
    }
    assert!(
        !holds(&raw_bytes(dir.path()), "Lovelace"),
        "a value is readable at rest"
    );
    let q = open_with(dir.path(), Some(&KEY_A), &[]).unwrap();
    reads_back(&q, 100, "Ada Lovelace-Byron");
    assert_eq!(
        q.summary().unwrap().encryption.held.keys,
        vec![cipher::KeyId::of(&KEY_A)]
    );
    assert!(
        !q.summary().unwrap().encryption.held.plain,
        "a new store holds nothing in clear"
    );
}

#[test]
fn a_missing_or_wrong_key_is_refused_at_open_naming_the_key_id() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_with(dir.path(), Some(&KEY_A), &[]).unwrap());
    let id = cipher::KeyId::of(&KEY_A).to_string();
    for (current, what) in [(None, "no key"), (Some(&KEY_B), "another key")] {
        let e = open_with(dir.path(), current, &[]).err().expect(what).to_string();
        assert!(e.contains(&id), "{what}: {e}");
        assert!(e.contains("encryption_key_file"), "{what}: {e}");
    }
    // refused without writing: the right key still opens it, and no other key is recorded
    let q = open_with(dir.path(), Some(&KEY_A), &[]).unwrap();
    assert_eq!(
        q.summary().unwrap().encryption.held.keys,
        vec![cipher::KeyId::of(&KEY_A)]
    );
}

#[test]
fn a_rotated_key_reads_old_values_and_reencrypt_retires_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = open_with(dir.path(), Some(&KEY_A), &[]).unwrap();
        write_everywhere(&q, 100, "Grace Hopper-Murray");
    }
    {
        let q = open_with(dir.path(), Some(&KEY_B), &[&KEY_A]).unwrap();
        reads_back(&q, 100, "Grace Hopper-Murray");
        write_everywhere(&q, 200, "Katherine Johnson-Goble");
        let held = q.summary().unwrap().encryption.held;
        assert_eq!(
            held.keys,
            vec![cipher::KeyId::of(&KEY_A), cipher::KeyId::of(&KEY_B)]
        );
        let done = q.reencrypt().unwrap();
        assert!(done.rewritten >= 4, "{done:?}");
        assert_eq!(
            q.summary().unwrap().encryption.held.keys,
            vec![cipher::KeyId::of(&KEY_B)]
        );
        assert_eq!(
            q.reencrypt().unwrap().rewritten,
            0,
            "nothing left under the old key"
        );
    }
    let q = open_with(dir.path(), Some(&KEY_B), &[]).unwrap();
    reads_back(&q, 100, "Grace Hopper-Murray");
    reads_back(&q, 200, "Katherine Johnson-Goble");
}

#[test]
fn a_plain_store_stays_readable_when_encryption_is_turned_on_and_reencrypt_seals_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = Store::open(dir.path(), 8 << 20).unwrap();
        write_everywhere(&q, 100, "Mary Jackson-Land");
    }
    assert!(
        holds(&raw_bytes(dir.path()), "Jackson-Land"),
        "the scan finds plain values"
    );
    {
        let q = open_with(dir.path(), Some(&KEY_A), &[]).unwrap();
        reads_back(&q, 100, "Mary Jackson-Land");
        assert!(q.summary().unwrap().encryption.held.plain);
        q.reencrypt().unwrap();
        assert!(!q.summary().unwrap().encryption.held.plain);
        reads_back(&q, 100, "Mary Jackson-Land");
    }
    // turning encryption off again: the old key opens, reencrypt writes the values in clear
    let q = open_with(dir.path(), None, &[&KEY_A]).unwrap();
    reads_back(&q, 100, "Mary Jackson-Land");
    q.reencrypt().unwrap();
    drop(q);
    let q = Store::open(dir.path(), 8 << 20).unwrap();
    reads_back(&q, 100, "Mary Jackson-Land");
}
