//! The queue's single writer, owned by the capture loop.
//!
//! Records are appended to an in-memory chunk; [`QueueWriter::sync`] (called after every network
//! read) writes the chunk and the new head to sled and hands the newly committed transactions to
//! the flusher. A chunk that reaches [`chunk::CHUNK_BYTES`] is written out early, so memory stays
//! bounded however large a transaction is.

use super::chunk::{self, CHUNK_BYTES};

/// Bytes written out after which the flusher is asked for an interim flush, so sled's unflushed log
/// buffers stay small while a large transaction is staged (see `Flusher::request_flush`).
const FLUSH_EVERY_BYTES: usize = 16 << 20;
use super::flusher::Durable;
use super::record::{EventId, TxnRecord};
use super::{remove_after, Head, Store, StoreError, HEAD};
use crate::lsn::Lsn;

pub struct QueueWriter {
    queue: Store,
    /// The newest committed transaction, including those not yet synced.
    head: Head,
    pub(super) chunk: Vec<u8>,
    chunk_first: Option<EventId>,
    /// Transactions committed since the last sync: `(position, commit unix micros)`.
    committed: Vec<(Durable, i64)>,
    /// Bytes written out since the last interim flush request.
    unflushed: usize,
    /// Records with deliveries staged so far (see [`Durable::deliveries`]).
    deliveries: u64,
}

impl QueueWriter {
    pub(super) fn new(queue: Store, head: Head) -> QueueWriter {
        QueueWriter {
            queue,
            head,
            chunk: Vec::with_capacity(CHUNK_BYTES + 4096),
            chunk_first: None,
            committed: Vec::new(),
            unflushed: 0,
            deliveries: 0,
        }
    }

    /// True when the transaction committing at `commit_lsn` is already stored (a replay).
    pub fn is_stored(&self, commit_lsn: Lsn) -> bool {
        self.head.commit_lsn().is_some_and(|h| commit_lsn <= h)
    }

    /// Stages one record of the open transaction. Invisible until its commit is synced.
    pub fn stage(&mut self, id: EventId, record_json: &[u8]) -> Result<(), StoreError> {
        self.chunk_first.get_or_insert(id);
        self.chunk.extend_from_slice(record_json);
        self.chunk.push(b'\n');
        if self.chunk.len() >= CHUNK_BYTES {
            self.write_chunk()?;
        }
        Ok(())
    }

    /// Notes that the record just staged lists deliveries.
    pub fn note_deliveries(&mut self) {
        self.deliveries += 1;
    }

    /// Marks a transaction committed. Its records become visible (and its position durable) with
    /// the next [`QueueWriter::sync`] and flush.
    pub fn commit(&mut self, txn: TxnRecord) -> Result<(), StoreError> {
        if let Some(head) = self.head.commit_lsn() {
            if txn.commit_lsn <= head {
                return Err(StoreError::OutOfOrder {
                    commit_lsn: txn.commit_lsn,
                    head,
                });
            }
        }
        self.head.total_records += u64::from(txn.records);
        self.head.total_txns += 1;
        self.committed.push((
            Durable {
                commit_lsn: txn.commit_lsn,
                end_lsn: txn.end_lsn,
                deliveries: self.deliveries,
            },
            txn.commit_time,
        ));
        self.head.last = Some(txn);
        Ok(())
    }

    /// Writes staged records and the head, and hands committed transactions to the flusher.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.queue.flusher.check_failed()?;
        self.write_chunk()?;
        if !self.committed.is_empty() {
            let head = serde_json::to_vec(&self.head).expect("Head serializes");
            self.queue.meta.insert(HEAD, head)?;
            self.queue.flusher.written(&self.committed);
            self.committed.clear();
        }
        Ok(())
    }

    /// Removes whatever was staged for the open transaction at `commit_lsn` (the connection
    /// dropped mid-transaction; PostgreSQL sends it again). Committed transactions are kept.
    pub fn discard(&mut self, commit_lsn: Lsn) -> Result<u64, StoreError> {
        let mut removed = 0;
        if let Some(kept) = chunk::retain(&self.chunk, |id| id.commit_lsn != commit_lsn) {
            removed += (chunk::lines(&self.chunk).count() - chunk::lines(&kept).count()) as u64;
            self.chunk = kept;
        } else {
            removed += chunk::lines(&self.chunk).count() as u64;
            self.chunk.clear();
            self.chunk_first = None;
        }
        self.sync()?;
        removed += remove_after(&self.queue.changes, self.head.commit_lsn())?;
        Ok(removed)
    }

    fn write_chunk(&mut self) -> Result<(), StoreError> {
        if let Some(first) = self.chunk_first.take() {
            self.queue.changes.insert(first.key(), self.chunk.as_slice())?;
            self.unflushed += self.chunk.len();
            self.chunk.clear();
            if self.unflushed >= FLUSH_EVERY_BYTES {
                self.queue.flusher.request_flush();
                self.unflushed = 0;
            }
        }
        Ok(())
    }
}
