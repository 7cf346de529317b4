//! fieldsync: a change-capture daemon that tails PostgreSQL logical replication (pgoutput) on the
//! wedding form-field tables, stores each committed change durably in a local sled queue, confirms
//! WAL to PostgreSQL only once the change is flushed, and delivers each change as a field-sync event
//! to every system the organisation connected.
//!
//! # Layout, in the order data flows (one line per module; each imports only modules above it here)
//! - `lsn`: WAL positions.
//! - `secret`: values that print as `***`, and short excerpts of values for errors.
//! - `token`: signed, expiring grants to one organisation's (or wedding's) live stream.
//! - `fields`: pure validation and normalisation of wedding field values.
//! - `store`: the sled store and its one error: change queue, stored events, delivery state and log, context.
//! - `pg`: ordinary SQL connections and TLS to PostgreSQL.
//! - `credentials`: where integration secrets may come from, and the hosts adapters may reach.
//! - `config`: raw → checked configuration.
//! - `telemetry`: logs, and the metrics every floor records.
//! - `pgoutput`: the pure pgoutput decoder.
//! - `events`: field-sync events with their wedding context, and the integrations each goes to.
//! - `capture`: committed transactions of row changes (and their events) into the store.
//! - `check`: the database's prerequisites, each with its fix.
//! - `source`: the replication connection, progress, the initial snapshot and slot health.
//! - `adapters`: one per external system, and the one classification of their answers.
//! - `dispatch`: the pure per-wedding scheduler and the delivery engine that does the I/O.
//! - `ops`: operator reads and actions on deliveries (requeue, pause, resume, dead letters), each
//!   recorded in the audit trail with who took it.
//! - `serve`: the HTTP port and the SQL admin port.
//! - `app`: starts and stops everything.
//! - `cli`: the command line, which `main.rs` only calls.
//!
//! Development tooling (the CRM API sandboxes, throwaway clusters, the demo) lives in the `dev/`
//! crate. `tests/it/layering.rs` checks that arrows point down.

// alphabetical (rustfmt); the map above gives the order
pub mod adapters;
pub mod app;
pub mod capture;
pub mod check;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod dispatch;
pub mod events;
pub mod fields;
pub mod lsn;
pub mod ops;
pub mod pg;
pub mod pgoutput;
pub mod secret;
pub mod serve;
pub mod source;
pub mod store;
pub mod telemetry;
pub mod token;
