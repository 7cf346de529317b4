//! Shared integration-test support: the throwaway PostgreSQL cluster (`fieldsync_dev::devdb`) and
//! helpers that wait on a condition with a deadline instead of sleeping.
#![allow(dead_code)] // shared by test modules; not every module uses every helper

pub mod crm;
pub mod daemon;
pub mod proxy;
pub mod spec;

use std::future::Future;
use std::time::{Duration, Instant};

pub use fieldsync_dev::devdb::{Cluster, ClusterOptions, HbaAuth, StopMode, TlsFiles};

const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// Polls `f` until it returns true, with a short growing pause between polls; panics naming `what`
/// and the time waited when `deadline` passes first.
pub fn wait_for(deadline: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        if f() {
            return;
        }
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            panic!("timed out waiting for {what} after {elapsed:?}");
        }
        std::thread::sleep(pause.min(deadline - elapsed));
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// The async form of [`wait_for`]: awaits `f()` until it yields true.
pub async fn wait_for_async<F, Fut>(deadline: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        if f().await {
            return;
        }
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            panic!("timed out waiting for {what} after {elapsed:?}");
        }
        tokio::time::sleep(pause.min(deadline - elapsed)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Starts a default cluster (trust auth, no TLS) or panics with the reason.
pub fn cluster() -> Cluster {
    Cluster::start(ClusterOptions::default()).unwrap_or_else(|e| panic!("dev cluster did not start: {e}"))
}

/// Starts a default cluster and applies the default schema and setup to `postgres`.
pub fn cluster_with_schema() -> Cluster {
    let c = cluster();
    c.apply_default_schema("postgres")
        .unwrap_or_else(|e| panic!("default schema failed: {e}\n{}", c.log_tail(30)));
    c
}
