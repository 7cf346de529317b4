//! The replication source: a logical replication connection speaking the wire protocol directly
//! (`conn`, `wire`), the one place where its errors are classified (`error`), the WAL positions
//! it may confirm (`progress`), and the session loop with reconnects (`stream`).

pub mod conn;
pub mod error;
pub mod health;
pub mod progress;
pub mod snapshot;
pub mod stream;
pub mod wire;
