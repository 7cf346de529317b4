//! Integration tests, built as one binary. Each module is one area; `support` holds the throwaway
//! PostgreSQL cluster and wait helpers they share.

mod devdb;
mod source_conn;
mod support;
