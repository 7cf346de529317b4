//! What the daemon tells its operators about itself: logs ([`logs`]: structured, to stderr, never
//! a secret or a field value) and metrics ([`metrics`]: recorded where things happen, by every
//! floor, exported at `/metrics`). It imports nothing above the store but the log configuration.

pub mod logs;
pub mod metrics;
