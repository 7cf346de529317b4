//! Integration tests, built as one binary. Each module is one area; `support` holds the throwaway
//! PostgreSQL cluster and wait helpers they share.

mod admin;
mod admin_hostile;
mod capture;
mod cli;
mod crash;
mod crm;
mod devdb;
mod disk;
mod dispatch;
mod events;
mod health;
mod hostile;
mod http_hostile;
mod layering;
mod memory;
mod metrics;
mod official_clients;
mod ops;
mod order;
mod retention;
mod roles;
mod sandbox_google;
mod sandbox_lightblue;
mod sandbox_stripe;
mod sandbox_tave;
mod sandbox_zapier;
mod slot;
mod source_conn;
mod stream_tokens;
mod support;
mod tls;
