//! fieldsync: a change-capture daemon that tails PostgreSQL logical replication (pgoutput) on the
//! wedding form-field tables, stores each committed change durably in a local sled queue, and
//! confirms WAL to PostgreSQL only once the change is flushed.
//!
//! Data flows one way: `source` (replication connection) → `pgoutput` (pure decoder) → `capture`
//! (transactions of row changes) → `queue` (sled, durable watermark) → back to `source` as the only
//! LSN it may confirm.

pub mod admin;
pub mod app;
pub mod capture;
pub mod check;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod devdb;
pub mod dispatch;
pub mod events;
pub mod fields;
pub mod http;
pub mod live;
pub mod lsn;
pub mod metrics;
pub mod pg;
pub mod pgoutput;
pub mod queue;
pub mod sandbox;
pub mod secret;
pub mod source;
pub mod telemetry;
