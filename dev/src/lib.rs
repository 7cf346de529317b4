//! fieldsync's development tooling, kept out of the product crate: what the tests, the benchmarks
//! and the demo run beside the daemon.
//!
//! - `sandbox`: the CRM API sandboxes (Tave, Google Calendar, Stripe, Light Blue, a Zapier catch
//!   hook), served on one port (`fieldsync-dev sandbox`).
//! - `devdb`: throwaway PostgreSQL clusters.
//! - `demo`: the demo (`fieldsync-dev demo`, behind `scripts/demo.sh`).
//! - `receiver`: an in-process Standard Webhooks receiver for tests and benchmarks.
//! - `process`: a daemon started as a child process, stopped when dropped.
//! - `rss`: a process's peak resident set size, for the benchmarks.
//! - `scan`: raw byte scans of a directory, for the tests of encryption at rest and erasure.

pub mod demo;
pub mod devdb;
pub mod process;
pub mod receiver;
pub mod rss;
pub mod sandbox;
pub mod scan;
