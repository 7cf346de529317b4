pub mod conn;
pub mod error;
pub mod wire;
