//! Retention: which chunks of the change queue may leave, and their removal.
//!
//! A chunk leaves once every record in it (a) is confirmed to PostgreSQL, (b) is below the
//! delivery floor (every delivery listed for it is final), and (c) is older than `[queue]
//! retention`. Records are in commit order within and across chunks, so the chunk's newest record
//! decides all three. Chunks go whole and in key order, stopping at the first that may not: sled
//! gives the space of removed leading keys back (the directory plateaus under steady churn: see the
//! README's Retention paragraph), and a removed chunk never leaves a hole a reader could fall into.
//!
//! Crash safety: `meta/removed` ([`Removed`]: the records removed so far and the newest of them)
//! is written *before* the chunks are removed, so sled's log order makes durable
//! removals imply a durable counter. A counter whose chunks are still there (the crash came
//! between the two) is completed by [`finish_removal`] on open, without counting them again.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::chunk;
use super::record::EventId;
use super::{corrupt, Store, StoreError};
use crate::lsn::Lsn;

pub(super) const REMOVED: &[u8] = b"removed";

/// How often removal runs.
pub const EVERY: Duration = Duration::from_secs(1);
/// The most chunks one round removes (8 KiB each at most): a round is short, and a full round is
/// followed by the next at once.
pub const ROUND_CHUNKS: usize = 512;

/// What retention has removed so far, kept under `meta/removed`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub records: u64,
    /// The newest record removed: every record up to it is gone.
    pub last: Option<EventId>,
}

/// What a chunk's newest record says about the whole chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkTail {
    pub newest: EventId,
    /// Commit time of the newest record, Unix microseconds.
    pub commit_time: i64,
}

/// The limits a chunk must be under to leave.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The highest position confirmed to PostgreSQL (the end LSN of a transaction).
    pub confirmed: Lsn,
    /// Every delivery of a record before it is final; `None` when no floor is known yet (nothing
    /// may go). Dispatch off: pass [`EventId::MAX`], nothing will ever deliver.
    pub floor: Option<EventId>,
    /// Records committed at or after this (Unix microseconds) are kept: now − retention.
    pub cutoff: i64,
}

impl EventId {
    /// Above every real id (a floor that holds nothing back).
    pub const MAX: EventId = EventId {
        commit_lsn: Lsn(u64::MAX),
        index: u32::MAX,
    };
}

/// The rule: a chunk may go when its newest record is confirmed, below the floor, and old enough.
///
/// `confirmed` is an end LSN; a transaction committing exactly there (its commit record right
/// after the confirmed one's) is not confirmed yet, hence the strict `<`.
pub fn may_go(tail: ChunkTail, limits: &Limits) -> bool {
    tail.newest.commit_lsn < limits.confirmed
        && limits.floor.is_some_and(|f| tail.newest < f)
        && tail.commit_time < limits.cutoff
}

/// What one removal round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub chunks: usize,
    pub records: u64,
}

#[derive(Deserialize)]
struct Tail {
    id: EventId,
    #[serde(default)]
    commit_time: i64,
}

/// The newest record of a chunk.
fn tail(key: &[u8], chunk: &[u8]) -> Result<ChunkTail, StoreError> {
    let line = chunk::lines(chunk)
        .next_back()
        .ok_or_else(|| corrupt(&format!("chunk {:?}", EventId::from_key(key)), "empty"))?;
    let t: Tail = serde_json::from_slice(line)
        .map_err(|e| corrupt(&format!("chunk {:?}", EventId::from_key(key)), &e.to_string()))?;
    Ok(ChunkTail {
        newest: t.id,
        commit_time: t.commit_time,
    })
}

/// Removes the chunks a crash left behind after their removal was counted.
pub(super) fn finish_removal(changes: &sled::Tree, removed: &Removed) -> Result<(), StoreError> {
    let Some(last) = removed.last else {
        return Ok(());
    };
    for item in changes.range(..=last.key()) {
        changes.remove(item?.0)?;
    }
    Ok(())
}

/// Removes what may go every [`EVERY`] until `stop`, each round on a blocking thread so capture
/// and delivery never wait for it. With `dispatch` off no floor applies (nothing will deliver).
pub async fn run(store: Store, retention: Duration, dispatch: bool, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        while !*stop.borrow() {
            let s = store.clone();
            let round = tokio::task::spawn_blocking(move || {
                let limits = s.limits(retention, dispatch)?;
                s.remove_expired(&limits, ROUND_CHUNKS)
            })
            .await;
            match round {
                Ok(Ok(round)) if round.chunks == ROUND_CHUNKS => continue,
                Ok(Ok(_)) => break,
                Ok(Err(e)) => {
                    tracing::warn!("retention: removing old records failed, retrying: {e}");
                    break;
                }
                Err(e) => {
                    tracing::error!("retention: removal round ended abnormally: {e}");
                    break;
                }
            }
        }
    }
}

impl Store {
    /// The limits under which a chunk may go now.
    pub fn limits(&self, retention: Duration, dispatch: bool) -> Result<Limits, StoreError> {
        let now = chrono::Utc::now().timestamp_micros();
        Ok(Limits {
            confirmed: self.confirmed()?,
            floor: if dispatch {
                self.deliveries.floor()?
            } else {
                Some(EventId::MAX)
            },
            cutoff: now.saturating_sub(i64::try_from(retention.as_micros()).unwrap_or(i64::MAX)),
        })
    }

    /// What retention has removed so far.
    pub fn removed(&self) -> Result<Removed, StoreError> {
        read_removed(&self.meta)
    }

    /// Removes, in key order, at most `max_chunks` leading chunks that [`may_go`], then flushes.
    pub fn remove_expired(&self, limits: &Limits, max_chunks: usize) -> Result<Round, StoreError> {
        let mut keys = Vec::new();
        let mut round = Round::default();
        let mut newest = None;
        for item in self.changes.iter() {
            if keys.len() >= max_chunks {
                break;
            }
            let (key, value) = item?;
            let tail = tail(&key, &value)?;
            if !may_go(tail, limits) {
                break;
            }
            newest = Some(tail.newest);
            round.records += chunk::lines(&value).count() as u64;
            keys.push(key);
        }
        if keys.is_empty() {
            return Ok(round);
        }
        round.chunks = keys.len();
        let before = self.removed()?;
        let after = Removed {
            records: before.records + round.records,
            last: newest,
        };
        // the counter first: see the module's crash-safety note
        self.meta
            .insert(REMOVED, serde_json::to_vec(&after).expect("Removed serializes"))?;
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key);
        }
        self.changes.raw().apply_batch(batch)?;
        self.db.flush()?;
        Ok(round)
    }

    /// Commit time (Unix microseconds) of the oldest durable record held, if any.
    pub fn oldest_commit_time(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.oldest()?.map(|(_, t)| t))
    }

    /// The oldest durable record held: its id and commit time.
    pub fn oldest(&self) -> Result<Option<(EventId, i64)>, StoreError> {
        let visible = self.durable().borrow().commit_lsn;
        let Some(item) = self.changes.iter().next() else {
            return Ok(None);
        };
        let (key, value) = item?;
        let Some(line) = chunk::lines(&value).next() else {
            return Ok(None);
        };
        let t: Tail = serde_json::from_slice(line)
            .map_err(|e| corrupt(&format!("chunk {:?}", EventId::from_key(&key)), &e.to_string()))?;
        Ok((t.id.commit_lsn <= visible).then_some((t.id, t.commit_time)))
    }
}

pub(super) fn read_removed(meta: &sled::Tree) -> Result<Removed, StoreError> {
    match meta.get(REMOVED)? {
        Some(v) => serde_json::from_slice(&v).map_err(|e| corrupt("meta/removed", &e.to_string())),
        None => Ok(Removed::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(lsn: u64, index: u32) -> EventId {
        EventId {
            commit_lsn: Lsn(lsn),
            index,
        }
    }

    fn tail(lsn: u64, commit_time: i64) -> ChunkTail {
        ChunkTail {
            newest: id(lsn, 3),
            commit_time,
        }
    }

    const LIMITS: Limits = Limits {
        confirmed: Lsn(100),
        floor: Some(EventId {
            commit_lsn: Lsn(80),
            index: 0,
        }),
        cutoff: 1_000,
    };

    #[test]
    fn a_chunk_goes_only_when_confirmed_delivered_and_old_enough() {
        assert!(may_go(tail(50, 999), &LIMITS));
        assert!(!may_go(tail(50, 1_000), &LIMITS), "not older than retention");
        assert!(
            !may_go(tail(90, 10), &LIMITS),
            "a delivery at or past the floor is not final"
        );
        assert!(
            !may_go(tail(80, 10), &LIMITS),
            "the floor itself is not below the floor"
        );
        let no_floor = Limits {
            floor: None,
            ..LIMITS
        };
        assert!(
            !may_go(tail(50, 10), &no_floor),
            "no floor known yet: nothing goes"
        );
        let dispatch_off = Limits {
            floor: Some(EventId::MAX),
            ..LIMITS
        };
        assert!(may_go(tail(99, 10), &dispatch_off));
        assert!(
            !may_go(tail(100, 10), &dispatch_off),
            "a transaction committing at the confirmed end LSN is not confirmed"
        );
        assert!(!may_go(tail(150, 10), &dispatch_off), "not confirmed");
    }

    #[test]
    fn the_newest_record_of_a_chunk_speaks_for_it() {
        let chunk = format!(
            "{{\"id\":\"{}\",\"commit_time\":5}}\n{{\"id\":\"{}\",\"commit_time\":7}}\n",
            id(10, 0),
            id(12, 1)
        );
        assert_eq!(
            super::tail(&id(10, 0).key(), chunk.as_bytes()).unwrap(),
            ChunkTail {
                newest: id(12, 1),
                commit_time: 7
            }
        );
    }
}
