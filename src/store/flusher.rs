//! Group commit: one background thread flushes sled whenever something new was written, then
//! publishes the durable watermark on a `watch` channel.
//!
//! Invariant: the published watermark names only transactions written *before* the flush that
//! covered them began, so it never runs ahead of what is on disk, and it never moves backwards.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;

use super::StoreError;
use crate::lsn::Lsn;

/// The newest transaction whose records are flushed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Durable {
    pub commit_lsn: Lsn,
    /// The LSN just past its commit record: what may be confirmed to PostgreSQL.
    pub end_lsn: Lsn,
    /// Records with deliveries staged by this process up to that transaction: the dispatcher reads
    /// the queue again only when this grows.
    #[serde(skip)]
    pub deliveries: u64,
}

/// Bounded reservoir of the most recent commit-to-durable latencies, in microseconds.
pub struct LatencySamples {
    samples: Mutex<VecDeque<u32>>,
}

const MAX_SAMPLES: usize = 200_000;
const MAX_PENDING_TIMES: usize = 100_000;

impl LatencySamples {
    fn push(&self, micros: u32) {
        let mut s = self.samples.lock().expect("latency lock");
        if s.len() == MAX_SAMPLES {
            s.pop_front();
        }
        s.push_back(micros);
    }

    /// Removes and returns the collected samples.
    pub fn take(&self) -> Vec<u32> {
        self.samples.lock().expect("latency lock").drain(..).collect()
    }
}

struct State {
    written: Durable,
    durable: Durable,
    /// Commit times of written but not yet durable transactions: `(end_lsn, commit unix micros)`.
    pending_times: VecDeque<(Lsn, i64)>,
    /// The flush that failed: sled fails every later write of this open database too.
    failed: Option<sled::Error>,
    stop: bool,
    /// The flusher thread is waiting for work (only then does a writer need to wake it).
    idle: bool,
    /// A flush is wanted although no transaction completed (a large one is being staged).
    requested: bool,
}

pub(super) struct Flusher {
    db: sled::Db,
    state: Mutex<State>,
    wake: Condvar,
    done: Condvar,
    durable_tx: watch::Sender<Durable>,
    latencies: LatencySamples,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Flusher {
    pub(super) fn start(db: sled::Db, durable: Durable) -> Arc<Flusher> {
        let (durable_tx, _) = watch::channel(durable);
        let flusher = Arc::new(Flusher {
            db,
            state: Mutex::new(State {
                written: durable,
                durable,
                pending_times: VecDeque::new(),
                failed: None,
                stop: false,
                idle: false,
                requested: false,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            durable_tx,
            latencies: LatencySamples {
                samples: Mutex::new(VecDeque::new()),
            },
            thread: Mutex::new(None),
        });
        let worker = flusher.clone();
        let handle = std::thread::Builder::new()
            .name("queue-flusher".into())
            .spawn(move || worker.run())
            .expect("spawn queue flusher thread");
        *flusher.thread.lock().expect("flusher thread lock") = Some(handle);
        flusher
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<Durable> {
        self.durable_tx.subscribe()
    }

    pub(super) fn latencies(&self) -> &LatencySamples {
        &self.latencies
    }

    /// Notes transactions fully written to sled (not yet flushed), oldest first, each with its
    /// commit time in Unix microseconds.
    pub(super) fn written(&self, txns: &[(Durable, i64)]) {
        let Some((last, _)) = txns.last() else { return };
        let mut st = self.state.lock().expect("flusher lock");
        st.written = *last;
        for (txn, commit_time) in txns {
            if st.pending_times.len() < MAX_PENDING_TIMES {
                st.pending_times.push_back((txn.end_lsn, *commit_time));
            }
        }
        let wake = st.idle;
        drop(st);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Asks for a flush although no transaction completed: sled keeps unflushed writes in memory,
    /// so a large transaction being staged is flushed as it grows.
    pub(super) fn request_flush(&self) {
        let mut st = self.state.lock().expect("flusher lock");
        st.requested = true;
        let wake = st.idle;
        drop(st);
        if wake {
            self.wake.notify_one();
        }
    }

    pub(super) fn has_pending(&self) -> bool {
        let st = self.state.lock().expect("flusher lock");
        st.written != st.durable
    }

    pub(super) fn check_failed(&self) -> Result<(), StoreError> {
        let st = self.state.lock().expect("flusher lock");
        match &st.failed {
            Some(source) => Err(StoreError::FlushFailed {
                durable: st.durable.end_lsn,
                source: source.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Waits until everything written so far is durable.
    pub(super) fn flush_now(&self) -> Result<Durable, StoreError> {
        let mut st = self.state.lock().expect("flusher lock");
        let target = st.written;
        self.wake.notify_all();
        while st.durable != target && st.failed.is_none() && !st.stop {
            st = self
                .done
                .wait_timeout(st, Duration::from_millis(100))
                .expect("flusher lock")
                .0;
        }
        match &st.failed {
            Some(source) => Err(StoreError::FlushFailed {
                durable: st.durable.end_lsn,
                source: source.clone(),
            }),
            None => Ok(st.durable),
        }
    }

    pub(super) fn stop(&self) {
        self.state.lock().expect("flusher lock").stop = true;
        self.wake.notify_all();
        if let Some(handle) = self.thread.lock().expect("flusher thread lock").take() {
            let _ = handle.join();
        }
    }

    fn run(&self) {
        loop {
            let target = {
                let mut st = self.state.lock().expect("flusher lock");
                while st.written == st.durable && !st.stop && !st.requested {
                    st.idle = true;
                    st = self.wake.wait(st).expect("flusher lock");
                }
                st.idle = false;
                if st.failed.is_some() || (st.stop && st.written == st.durable) {
                    // storage already failed, or stop requested with nothing left to flush
                    return;
                }
                st.requested = false;
                st.written
            };
            let result = self.db.flush();
            let now = unix_micros_now();
            let mut st = self.state.lock().expect("flusher lock");
            match result {
                Ok(_) => {
                    st.durable = target;
                    while st
                        .pending_times
                        .front()
                        .is_some_and(|(end, _)| *end <= target.end_lsn)
                    {
                        let (_, committed) = st.pending_times.pop_front().expect("front checked");
                        self.latencies
                            .push(u32::try_from((now - committed).max(0)).unwrap_or(u32::MAX));
                    }
                    self.durable_tx.send_replace(target);
                }
                Err(e) => {
                    tracing::error!(error = %e, durable = %st.durable.end_lsn, "queue flush failed: the durable position stays where it was");
                    st.failed = Some(e);
                }
            }
            drop(st);
            self.done.notify_all();
        }
    }
}

fn unix_micros_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
