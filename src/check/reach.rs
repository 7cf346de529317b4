//! The `reachable` check's failure: what went wrong connecting, and the fix for the usual causes
//! (server down or not listening on TCP, pg_hba.conf, wrong password, missing role or database,
//! TLS mismatch). The detail shows the redacted URL only.

use std::error::Error as _;

use tokio_postgres::error::SqlState;

use super::{quote_ident, CheckResult};
use crate::pg::{ConnectError, PgTarget, TlsMode};

const NAME: &str = "reachable";

pub(super) fn unreachable(target: &PgTarget, err: &ConnectError) -> CheckResult {
    let detail = error_chain(err);
    let fix = match err {
        ConnectError::CaFile { .. } => format!(
            "set postgres.ca_file to a readable PEM file holding the CA certificate that signed the \
             server's certificate (tls = {:?})",
            tls_name(target.tls)
        ),
        ConnectError::Postgres { source, .. } => fix_for(target, source, &detail),
    };
    CheckResult::fail(NAME, detail, fix)
}

fn fix_for(target: &PgTarget, err: &tokio_postgres::Error, detail: &str) -> String {
    let user = quote_ident(&target.user);
    if let Some(db) = err.as_db_error() {
        let code = db.code();
        if *code == SqlState::INVALID_PASSWORD {
            return format!(
                "check the password: set postgres.password (or FIELDSYNC__POSTGRES__PASSWORD), or set a new \
                 one as a superuser:\nALTER ROLE {user} WITH PASSWORD '<new password>';"
            );
        }
        if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION && db.message().contains("pg_hba.conf") {
            let client = quoted_after(db.message(), "host \"").unwrap_or("<fieldsync's address>");
            let mask = if client.contains(':') { "128" } else { "32" };
            let kind = if db.message().contains("no encryption") {
                "host"
            } else {
                "hostssl"
            };
            return format!(
                "allow the connection: add this line to pg_hba.conf, above any line that matches it first \
                 (SHOW hba_file; shows where the file is)\n\
                 {kind}  {db}  {user}  {client}/{mask}  scram-sha-256\n\
                 then reload: SELECT pg_reload_conf();",
                db = quote_ident(&target.dbname)
            );
        }
        if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION && db.message().contains("role") {
            return format!("CREATE ROLE {user} WITH LOGIN REPLICATION PASSWORD '<password>';");
        }
        if *code == SqlState::INVALID_CATALOG_NAME {
            return format!(
                "create the database: CREATE DATABASE {};\nor name an existing one in postgres.url",
                quote_ident(&target.dbname)
            );
        }
        if *code == SqlState::TOO_MANY_CONNECTIONS {
            return "close idle connections, or raise the limit: ALTER SYSTEM SET max_connections = <n>; \
                    then restart PostgreSQL"
                .to_owned();
        }
        if *code == SqlState::CANNOT_CONNECT_NOW {
            return "the server is starting up or shutting down: wait and run the check again".to_owned();
        }
        return "see the server's message above and its log".to_owned();
    }
    if detail.contains("password missing") {
        return "the server asks for a password: set postgres.password or FIELDSYNC__POSTGRES__PASSWORD"
            .to_owned();
    }
    if detail.contains("server does not support TLS") {
        return format!(
            "the server has TLS off but postgres.tls is {:?}: enable it on the server (ssl = on, with \
             ssl_cert_file and ssl_key_file, then SELECT pg_reload_conf();) or set postgres.tls = \"prefer\"",
            tls_name(target.tls)
        );
    }
    if let Some(io) = io_error(err) {
        match io.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                return format!(
                    "nothing listens on {}:{}: start PostgreSQL, or check the host and port in postgres.url; the \
                     server must accept TCP: listen_addresses = '*' and port = {} in postgresql.conf, then \
                     restart PostgreSQL",
                    target.host, target.port, target.port
                )
            }
            std::io::ErrorKind::TimedOut => {
                return "no answer in time: check the host, port and firewall, or raise \
                        postgres.connect_timeout"
                    .to_owned()
            }
            _ => {}
        }
    }
    if detail.contains("lookup") || detail.contains("resolve") {
        return "the host name does not resolve: check the host in postgres.url".to_owned();
    }
    if target.tls == TlsMode::VerifyFull && (detail.contains("certificate") || detail.contains("TLS")) {
        return "the server's certificate was not accepted: set postgres.ca_file to the CA that signed it, \
                and use the host name the certificate names in postgres.url"
            .to_owned();
    }
    "check postgres.url (host, port, user, database) and that PostgreSQL is running".to_owned()
}

fn tls_name(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::Disable => "disable",
        TlsMode::Prefer => "prefer",
        TlsMode::Require => "require",
        TlsMode::VerifyFull => "verify-full",
    }
}

/// The text between `prefix` and the next `"` in `message`.
fn quoted_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let start = message.find(prefix)? + prefix.len();
    let len = message[start..].find('"')?;
    Some(&message[start..start + len])
}

fn io_error(err: &tokio_postgres::Error) -> Option<&std::io::Error> {
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = e.source();
    }
    None
}

/// The error and its causes, joined with ": ", skipping a cause already at the end of the text.
pub(super) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.ends_with(&part) {
            text = format!("{text}: {part}");
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_address_is_read_from_the_pg_hba_message() {
        let m = "no pg_hba.conf entry for host \"10.0.0.7\", user \"app\", database \"wed\", no encryption";
        assert_eq!(quoted_after(m, "host \""), Some("10.0.0.7"));
        assert_eq!(quoted_after("nothing here", "host \""), None);
    }

    #[test]
    fn an_error_chain_names_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: inner")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("inner")]
        struct Inner(#[source] std::io::Error);
        let e = Outer(Inner(std::io::Error::other("root")));
        assert_eq!(error_chain(&e), "outer: inner: root");
    }
}
