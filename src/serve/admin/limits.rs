//! The admin port's limits on what a client may send, hold or try: configurable ones from
//! `[admin]` (see [`Limits`]), fixed ones as constants. Each has its reason next to it; the README's
//! "SQL admin port" section lists them with their defaults.

use std::time::Duration;

use crate::config::AdminConfig;

/// The largest startup packet (and any message before login): PostgreSQL's own limit
/// (`MAX_STARTUP_PACKET_LENGTH`). Checked on the length word, before the body is read.
pub const MAX_STARTUP_BYTES: usize = 10_000;

/// A message after login may be this much longer than `max_query_bytes` (a `Bind`'s parameters
/// beside its statement), and is never refused below [`MIN_SESSION_MESSAGE_BYTES`]. Past it the
/// connection is closed: a query between `max_query_bytes` and this gets an ordinary error.
pub const SESSION_MESSAGE_SLACK: usize = 64 * 1024;
pub const MIN_SESSION_MESSAGE_BYTES: usize = 1 << 20;

/// Wrong passwords (or unknown users) from one address within [`FAILURE_WINDOW`] before that
/// address is refused for [`BLOCK_FOR`].
pub const MAX_FAILURES: u32 = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
pub const BLOCK_FOR: Duration = Duration::from_secs(60);
/// How long a refused (blocked) attempt waits before its error: a client retrying in a loop gets
/// one refusal a second per connection, and each costs us a sleeping task, not a SCRAM exchange.
pub const REFUSAL_DELAY: Duration = Duration::from_secs(1);
/// Addresses the throttle remembers at most (about 100 bytes each).
pub const MAX_TRACKED_ADDRESSES: usize = 4096;

/// How long a write to a client may take before we give up on it (errors to clients that do not
/// read, refusals).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

pub use crate::config::raw::{DEFAULT_AUTH_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_QUERY_BYTES};

/// The configurable limits (`[admin]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections held at once, logged in or not; past it: `53300` and close.
    pub max_connections: usize,
    /// From accept to logged in; past it: closed.
    pub auth_timeout: Duration,
    /// A query string's length in bytes; past it: `54000`.
    pub max_query_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            max_query_bytes: DEFAULT_MAX_QUERY_BYTES,
        }
    }
}

impl From<&AdminConfig> for Limits {
    fn from(c: &AdminConfig) -> Self {
        Limits {
            max_connections: c.max_connections,
            auth_timeout: c.auth_timeout,
            max_query_bytes: c.max_query_bytes,
        }
    }
}

impl Limits {
    /// The longest message accepted after login.
    pub fn max_session_message(&self) -> usize {
        self.max_query_bytes
            .saturating_add(SESSION_MESSAGE_SLACK)
            .max(MIN_SESSION_MESSAGE_BYTES)
    }
}
