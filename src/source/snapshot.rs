//! The initial snapshot: the rows that existed before fieldsync's slot, read consistently with the
//! slot's starting point, so the stream continues exactly where the snapshot ends (no gap, no
//! double).
//!
//! The slot is created with `SNAPSHOT 'export'`; an ordinary SQL connection reads every captured
//! table inside that snapshot (`SET TRANSACTION SNAPSHOT`), context tables first, and the rows go
//! through capture as one transaction committing just before the slot's consistent point: record
//! ids `(consistent point − 1, row number)`, events marked `"snapshot": true`.
//!
//! A durable `meta/snapshot = started` marker is written before the slot is created and becomes
//! `done` once the snapshot transaction is flushed. An interrupted snapshot left nothing visible
//! (its transaction never committed); the next start sees `started`, drops the slot and takes the
//! snapshot again from a fresh one.

use futures_util::{pin_mut, TryStreamExt};

use super::conn::{ReplicationConnection, SnapshotAction};
use super::stream::StreamError;
use crate::capture::{Capture, Step};
use crate::check::{quote_ident, quote_literal};
use crate::config::{Config, TableName};
use crate::lsn::Lsn;
use crate::pgoutput::{Column, Commit, Datum, Insert, Message, Relation, ReplicaIdentity, Tuple};
use crate::store::{SnapshotState, Store};

/// Takes the snapshot; returns the slot's consistent point, where streaming starts.
pub async fn take(
    conn: &mut ReplicationConnection,
    config: &Config,
    queue: &Store,
    capture: &mut Capture,
) -> Result<Lsn, StreamError> {
    let slot = &config.replication.slot;
    queue.set_snapshot_state(SnapshotState::Started)?;
    let exists = !conn
        .simple_query(&format!(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = {}",
            quote_literal(slot)
        ))
        .await?
        .is_empty();
    if exists {
        tracing::warn!(slot = %slot, "an earlier snapshot was interrupted; taking it again from a new slot");
        conn.simple_query(&format!(
            "SELECT pg_drop_replication_slot({})",
            quote_literal(slot)
        ))
        .await?;
    }
    let created = conn.create_slot(slot, SnapshotAction::Export).await?;
    let snapshot_name = created
        .snapshot_name
        .clone()
        .ok_or_else(|| StreamError::Snapshot("the server exported no snapshot for the new slot".into()))?;
    let point = created.consistent_point;
    tracing::info!(slot = %slot, consistent_point = %point, "replication slot created; taking the initial snapshot");

    let db = crate::pg::connect_sql(&config.postgres)
        .await
        .map_err(|e| StreamError::Snapshot(e.to_string()))?;
    let sql_err = |e: tokio_postgres::Error| StreamError::Snapshot(e.to_string());
    db.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
        quote_literal(&snapshot_name)
    ))
    .await
    .map_err(sql_err)?;

    let commit_lsn = Lsn(point.0.saturating_sub(1));
    let commit_time = crate::source::wire::now_pg_micros();
    capture.begin_snapshot(commit_lsn, commit_time)?;
    let mut rows = 0u64;
    for table in ordered_tables(config) {
        let relation = relation(&db, table).await?;
        let select = format!(
            "SELECT {} FROM {}",
            relation
                .columns
                .iter()
                .map(|c| format!("{}::text", quote_ident(&c.name)))
                .collect::<Vec<_>>()
                .join(", "),
            format_args!("{}.{}", quote_ident(&table.schema), quote_ident(&table.name))
        );
        let oid = relation.oid;
        let width = relation.columns.len();
        capture.apply(Message::Relation(relation), commit_lsn)?;
        let stream = db
            .query_raw(&select, std::iter::empty::<&str>())
            .await
            .map_err(sql_err)?;
        pin_mut!(stream);
        while let Some(row) = stream.try_next().await.map_err(sql_err)? {
            let tuple = Tuple(
                (0..width)
                    .map(|i| match row.get::<_, Option<String>>(i) {
                        Some(text) => Datum::Text(text.into()),
                        None => Datum::Null,
                    })
                    .collect(),
            );
            capture.apply(
                Message::Insert(Insert {
                    relation_oid: oid,
                    new: tuple,
                }),
                commit_lsn,
            )?;
            rows += 1;
            if rows % 10_000 == 0 {
                capture.sync()?;
            }
        }
    }
    let step = capture.apply(
        Message::Commit(Commit {
            flags: 0,
            commit_lsn,
            end_lsn: point,
            commit_time,
        }),
        commit_lsn,
    )?;
    capture.sync()?;
    db.batch_execute("COMMIT").await.map_err(sql_err)?;
    let queue_for_flush = queue.clone();
    tokio::task::spawn_blocking(move || queue_for_flush.flush_blocking())
        .await
        .map_err(|e| StreamError::Snapshot(e.to_string()))??;
    queue.set_snapshot_state(SnapshotState::Done)?;
    let records = match step {
        Step::Committed { records, .. } => records,
        Step::Continue => 0,
    };
    tracing::info!(rows, records, consistent_point = %point, "initial snapshot stored");
    Ok(point)
}

/// Context tables first, so field events of the snapshot carry their wedding's context.
fn ordered_tables(config: &Config) -> Vec<&TableName> {
    let m = &config.mapping;
    let rank = |t: &TableName| {
        if *t == m.organizations.table {
            0
        } else if *t == m.integrations.table {
            1
        } else if *t == m.weddings.table {
            2
        } else if *t == m.fields.table {
            4
        } else {
            3
        }
    };
    let mut tables: Vec<&TableName> = config.capture.tables.iter().collect();
    tables.sort_by_key(|t| rank(t));
    tables
}

/// The table's columns as pgoutput would describe them.
async fn relation(db: &tokio_postgres::Client, table: &TableName) -> Result<Relation, StreamError> {
    let sql_err =
        |e: tokio_postgres::Error| StreamError::Snapshot(format!("reading the columns of {table}: {e}"));
    let rows = db
        .query(
            "SELECT c.oid, a.attname::text, a.atttypid, a.atttypmod,
                    coalesce(a.attnum = ANY(i.indkey), false) AS is_key
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
             WHERE n.nspname = $1 AND c.relname = $2
             ORDER BY a.attnum",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(sql_err)?;
    let Some(first) = rows.first() else {
        return Err(StreamError::Snapshot(format!(
            "table {table} does not exist (see [capture] tables)"
        )));
    };
    Ok(Relation {
        oid: first.get::<_, u32>(0),
        namespace: table.schema.clone(),
        name: table.name.clone(),
        replica_identity: ReplicaIdentity::Default,
        columns: rows
            .iter()
            .map(|r| Column {
                is_key: r.get(4),
                name: r.get(1),
                type_oid: r.get(2),
                type_modifier: r.get(3),
            })
            .collect(),
    })
}
