//! The SQL admin port (`[admin] listen`): PostgreSQL's wire protocol, so a DBA can
//! `psql -h 127.0.0.1 -p PORT -U USER` into the daemon, read its views (`status`, `integrations`,
//! `queue`, `dead_letters`, `deliveries`, `audit`) and act with `requeue(...)`, `pause(...)`,
//! `resume(...)` when its role is `operate` (`read` users get `42501`). Optional TLS
//! (`[admin] tls_cert_file`), then required.

pub mod limits;
pub mod server;
pub mod sql;
mod throttle;
pub mod views;
mod wire;

pub use limits::Limits;
pub use server::serve;
pub use views::Views;
