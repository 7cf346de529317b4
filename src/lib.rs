//! fieldsync: a change-capture daemon that tails PostgreSQL logical replication (pgoutput) on the
//! wedding form-field tables, stores each committed change durably in a local sled queue, confirms
//! WAL to PostgreSQL only once the change is flushed, and delivers each change as a field-sync event
//! to every system the organisation connected.
//!
//! # Layout, in the order data flows
//! Ground floor, shared by all:
//! - `lsn`: WAL positions. `secret`: values that print as `***`, and short excerpts for errors.
//! - `store`: the sled store and its one error: change queue, durable watermark, the stored event,
//!   delivery state and log, wedding context. It imports nothing above it.
//!
//! Capture, from PostgreSQL to the queue:
//! - `pg`: ordinary SQL connections and TLS. `source`: the replication connection, progress and
//!   slot health. `pgoutput`: the pure decoder. `capture`: transactions of row changes into the
//!   queue. `fields`: pure validation of field values. `events`: field-sync events with their
//!   wedding context, and the integrations each goes to.
//!
//! Delivery, from the queue to the CRMs:
//! - `adapters`: one per external system, and the one classification of their answers.
//!   `credentials`: where adapters' secrets may come from.
//! - `dispatch`: the pure scheduler (per-wedding order, coalescing, priority) and the engine that
//!   does the I/O (the order barrier, retries, limits, dead letters).
//! - `ops`: operator reads and actions on deliveries (requeue, pause, resume, dead letters), the
//!   one implementation behind the HTTP endpoints, the admin port and the command line.
//!
//! Serving and operating:
//! - `http`: the HTTP port, with the delivery endpoints, the live event stream and the `/metrics`
//!   page. `admin`: the SQL admin port. `telemetry`: logs, and metrics recorded by every floor.
//!
//! Wiring:
//! - `config`: raw → checked configuration. `check`: prerequisites with their fixes. `app`: starts
//!   and stops everything. `cli`: the command line, which `main.rs` only calls.
//!
//! Development tooling (the CRM API sandboxes, throwaway clusters, the demo) lives in the `dev/` crate.

// ground floor
pub mod lsn;
pub mod secret;
pub mod store;

// capture
pub mod capture;
pub mod events;
pub mod fields;
pub mod pg;
pub mod pgoutput;
pub mod source;

// delivery
pub mod adapters;
pub mod credentials;
pub mod dispatch;
pub mod ops;

// serving and operating
pub mod admin;
pub mod http;
pub mod telemetry;

// wiring
pub mod app;
pub mod check;
pub mod cli;
pub mod config;
