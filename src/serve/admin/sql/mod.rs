//! The admin port's SQL: read-only `SELECT`s over the views (`WHERE`, `GROUP BY` with aggregates,
//! `ORDER BY`, `LIMIT`/`OFFSET`, `$n` parameters) and the admin functions, plus the `SET`, `SHOW`
//! and transaction statements drivers send. Parsed by sqlparser (PostgreSQL dialect), planned
//! against a [`Catalog`] ([`plan`]), evaluated over rows the catalog streams ([`eval`]). Every error
//! is a [`SqlError`] carrying its SQLSTATE.

pub mod eval;
pub mod guard;
pub mod plan;
mod value;

pub use eval::run;
pub use plan::{parse, Plan, Statement};
pub use value::{Type, Value};

/// SQLSTATE codes used by the admin port (PostgreSQL Appendix A).
pub mod state {
    pub const SYNTAX_ERROR: &str = "42601";
    pub const UNDEFINED_TABLE: &str = "42P01";
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub const UNDEFINED_COLUMN: &str = "42703";
    pub const UNDEFINED_FUNCTION: &str = "42883";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const UNDEFINED_PARAMETER: &str = "42P02";
    pub const GROUPING_ERROR: &str = "42803";
    pub const DATATYPE_MISMATCH: &str = "42804";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const READ_ONLY_TRANSACTION: &str = "25006";
    pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    pub const INVALID_DATETIME_FORMAT: &str = "22007";
    pub const DIVISION_BY_ZERO: &str = "22012";
    pub const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
    pub const DATETIME_FIELD_OVERFLOW: &str = "22008";
    pub const INVALID_ROW_COUNT: &str = "2201W";
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    pub const STATEMENT_TOO_COMPLEX: &str = "54001";
    pub const TOO_MANY_COLUMNS: &str = "54011";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const QUERY_CANCELED: &str = "57014";
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
    pub const INTERNAL_ERROR: &str = "XX000";
}

/// A query string longer than `max` bytes (`[admin] max_query_bytes`): `54000`.
pub fn check_length(sql: &str, max: usize) -> Result<(), SqlError> {
    if sql.len() > max {
        return Err(SqlError::new(
            state::PROGRAM_LIMIT_EXCEEDED,
            format!(
                "the statement is {} bytes, more than the admin port takes ({max})",
                sql.len()
            ),
        )
        .hint("shorten it, or raise [admin] max_query_bytes"));
    }
    Ok(())
}

/// An error as the client sees it: SQLSTATE, message and an optional hint.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message} (SQLSTATE {code})")]
pub struct SqlError {
    pub code: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

impl SqlError {
    pub fn new(code: &'static str, message: impl Into<String>) -> SqlError {
        SqlError {
            code,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> SqlError {
        self.hint = Some(hint.into());
        self
    }
}

/// A view's column.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub name: &'static str,
    pub ty: Type,
}

/// An admin function: how many arguments it takes and what it returns. Its arguments are text.
#[derive(Clone, Copy, Debug)]
pub struct Function {
    pub name: &'static str,
    pub min_args: usize,
    pub max_args: usize,
    pub returns: Type,
}

/// A view's rows, produced as they are read.
pub type Rows<'a> = Box<dyn Iterator<Item = Result<Vec<Value>, SqlError>> + 'a>;

/// What the SQL runs against: the views and the admin functions.
pub trait Catalog {
    /// The views' names, for hints.
    fn views(&self) -> &'static [&'static str];
    fn columns(&self, view: &str) -> Option<&'static [Column]>;
    fn scan(&self, view: &str) -> Result<Rows<'_>, SqlError>;
    fn function(&self, name: &str) -> Option<Function>;
    /// Runs an admin function (arguments checked for count, not for content).
    fn call(&self, name: &str, args: &[Value]) -> Result<Value, SqlError>;
}

#[cfg(test)]
mod tests;
