//! Serving: what operators and other programs reach over the network. [`http`]: the HTTP port
//! (health, readiness, status, the delivery endpoints, the live event stream, `/metrics`);
//! [`admin`]: the SQL admin port (views and functions over the running daemon). Both read the
//! store and act through [`crate::ops`]; nothing below imports them.

pub mod admin;
pub mod http;
