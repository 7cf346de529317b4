//! Source-side errors and their classification: the one place that decides whether a failure of the
//! replication connection is transient (reconnect with backoff) or definite (stop and tell the
//! operator what to run).
//!
//! Invariants:
//! - [`SourceError::is_transient`] is a single exhaustive match; server errors are classified by
//!   SQLSTATE, never by message text (message text is localised). Only the operator hints look at
//!   the message, to name the object (slot, publication) the fix applies to.
//! - Nothing here ever holds a password: the server never echoes one, and authentication errors are
//!   built from the method name only.

/// Why the replication connection failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Socket error, including a timed-out connect and I/O failures during the TLS handshake.
    #[error("i/o error on the replication connection: {0}")]
    Io(#[from] std::io::Error),
    /// TLS configuration problem (unreadable CA bundle).
    #[error(transparent)]
    Connect(#[from] crate::pg::ConnectError),
    /// TLS handshake rejected (bad certificate, name mismatch) or TLS required but refused.
    #[error("tls: {0}")]
    Tls(String),
    /// An `ErrorResponse` from the server.
    #[error("server error {code}: {message}{}", server_extras(detail.as_deref(), hint.as_deref()))]
    Server {
        severity: String,
        code: String,
        message: String,
        detail: Option<String>,
        hint: Option<String>,
    },
    /// Authentication could not be carried out (unsupported method, SCRAM failure, no password).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The server sent something the protocol does not allow at this point.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server ended the stream (EOF or CopyDone).
    #[error("the server closed the replication connection")]
    Closed,
}

fn server_extras(detail: Option<&str>, hint: Option<&str>) -> String {
    match (detail, hint) {
        (None, None) => String::new(),
        (Some(d), None) => format!(" (detail: {d})"),
        (None, Some(h)) => format!(" (hint: {h})"),
        (Some(d), Some(h)) => format!(" (detail: {d}, hint: {h})"),
    }
}

impl SourceError {
    /// Builds a [`SourceError::Server`] from the fields of an `ErrorResponse`.
    pub(crate) fn from_error_fields(
        mut fields: postgres_protocol::message::backend::ErrorFields<'_>,
    ) -> SourceError {
        use tokio_postgres::fallible_iterator::FallibleIterator;
        let (mut severity, mut severity_v, mut code, mut message) = (None, None, None, None);
        let (mut detail, mut hint) = (None, None);
        loop {
            match fields.next() {
                Ok(Some(field)) => {
                    let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
                    match field.type_() {
                        b'S' => severity = Some(value),
                        b'V' => severity_v = Some(value),
                        b'C' => code = Some(value),
                        b'M' => message = Some(value),
                        b'D' => detail = Some(value),
                        b'H' => hint = Some(value),
                        _ => {}
                    }
                }
                Ok(None) => break,
                Err(e) => return SourceError::Protocol(format!("malformed error response: {e}")),
            }
        }
        SourceError::Server {
            severity: severity_v.or(severity).unwrap_or_else(|| "ERROR".into()),
            code: code.unwrap_or_else(|| "XX000".into()),
            message: message.unwrap_or_default(),
            detail,
            hint,
        }
    }

    /// The SQLSTATE of a server error.
    pub fn code(&self) -> Option<&str> {
        match self {
            SourceError::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether reconnecting with backoff may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Io(_) | SourceError::Closed => true,
            SourceError::Connect(_)
            | SourceError::Tls(_)
            | SourceError::Auth(_)
            | SourceError::Protocol(_) => false,
            SourceError::Server { code, .. } => sqlstate_is_transient(code),
        }
    }

    /// What the operator should run or change, for definite errors whose fix is known.
    pub fn fix_hint(&self) -> Option<String> {
        if self.is_transient() {
            return None;
        }
        match self {
            SourceError::Server { code, message, .. } => server_fix_hint(code, message),
            SourceError::Tls(_) => Some(
                "enable TLS on the server (ssl = on with a certificate) or relax the tls mode; for \
                 verify-full, ca_file must hold the CA that signed the server certificate and host \
                 must match a name in it"
                    .into(),
            ),
            SourceError::Auth(_) => Some(
                "use an authentication method fieldsync supports in pg_hba.conf (trust, password, md5, \
                 scram-sha-256) and set the password in the configuration"
                    .into(),
            ),
            SourceError::Connect(_) => {
                Some("check the ca_file path and that it holds PEM certificates".into())
            }
            _ => None,
        }
    }
}

/// SQLSTATEs worth retrying: connection trouble, server shutting down or starting, resource
/// exhaustion other than a configured limit, serialization failures, system errors, and a slot that
/// another process still holds.
fn sqlstate_is_transient(code: &str) -> bool {
    match code {
        "57P01" | "57P02" | "57P03" | "55006" => true,
        "53400" => false,
        _ => ["08", "53", "40", "58"]
            .iter()
            .any(|class| code.starts_with(class)),
    }
}

fn server_fix_hint(code: &str, message: &str) -> Option<String> {
    let name = quoted_name(message);
    let name = name.as_deref().unwrap_or("<name>");
    let hint = match code {
        "28P01" => "check the password configured for this user, and the pg_hba.conf method for its \
                    host and database"
            .to_string(),
        c if c.starts_with("28") => "add a pg_hba.conf line that lets this user connect to this database \
                                     from this host (logical replication connections match the database \
                                     name, not the `replication` keyword), then SELECT pg_reload_conf()"
            .to_string(),
        "3D000" => format!("the database {name} does not exist: check dbname in the configuration"),
        "42501" => "grant the replication privilege: ALTER ROLE <user> WITH REPLICATION (the role also \
                    needs SELECT on the published tables)"
            .to_string(),
        "42704" if message.contains("publication") => {
            format!("create the publication: CREATE PUBLICATION {name} FOR TABLE ... (see sql/setup.sql)")
        }
        "42704" if message.contains("slot") => format!(
            "the replication slot {name} does not exist; fieldsync creates it on first start, or run \
             SELECT pg_create_logical_replication_slot('{name}', 'pgoutput') (changes before it are \
             not captured)"
        ),
        "55000" if message.contains("wal_level") => {
            "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL".to_string()
        }
        "55000" if message.contains("can no longer get changes from replication slot") => format!(
            "the slot was invalidated (WAL it needed was removed): \
             SELECT pg_drop_replication_slot('{name}'); \
             then restart fieldsync, which takes a fresh snapshot"
        ),
        "53400" => "a configured limit was reached: drop unused slots (SELECT slot_name FROM \
                    pg_replication_slots WHERE NOT active) or raise max_replication_slots / \
                    max_wal_senders and restart PostgreSQL"
            .to_string(),
        "42710" => format!(
            "an object named {name} already exists: reuse it, or drop it (SELECT \
             pg_drop_replication_slot('{name}') for a slot) if it belongs to nothing"
        ),
        _ => return None,
    };
    Some(hint)
}

/// The first `"quoted"` identifier in a server message, e.g. the slot in
/// `replication slot "fieldsync" does not exist`.
fn quoted_name(message: &str) -> Option<String> {
    let start = message.find('"')? + 1;
    let len = message[start..].find('"')?;
    Some(message[start..start + len].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str, message: &str) -> SourceError {
        SourceError::Server {
            severity: "ERROR".into(),
            code: code.into(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    #[test]
    fn connection_and_shutdown_errors_are_transient() {
        for code in [
            "08006", "08P01", "57P01", "57P02", "57P03", "53300", "53100", "40001", "58030", "55006",
        ] {
            assert!(server(code, "x").is_transient(), "{code} should be transient");
            assert_eq!(
                server(code, "x").fix_hint(),
                None,
                "{code} needs no operator hint"
            );
        }
        assert!(SourceError::Closed.is_transient());
        assert!(SourceError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)).is_transient());
    }

    #[test]
    fn configuration_and_privilege_errors_are_definite() {
        for code in [
            "28P01", "28000", "3D000", "42501", "42704", "55000", "53400", "42710", "42601", "XX000",
        ] {
            assert!(!server(code, "x").is_transient(), "{code} should be definite");
        }
        for e in [
            SourceError::Tls("bad certificate".into()),
            SourceError::Auth("unsupported".into()),
            SourceError::Protocol("junk".into()),
        ] {
            assert!(!e.is_transient(), "{e}");
            if !matches!(e, SourceError::Protocol(_)) {
                assert!(e.fix_hint().is_some(), "{e}");
            }
        }
    }

    #[test]
    fn hints_name_the_fix_for_each_definite_error() {
        let hint = |code, message| server(code, message).fix_hint().unwrap_or_default();
        assert!(hint("28P01", "password authentication failed for user \"u\"").contains("pg_hba.conf"));
        assert!(hint("55000", "logical decoding requires wal_level >= logical")
            .contains("ALTER SYSTEM SET wal_level = logical"));
        assert!(hint(
            "55000",
            "can no longer get changes from replication slot \"fs_slot\""
        )
        .contains("SELECT pg_drop_replication_slot('fs_slot')"));
        assert!(hint("42704", "publication \"fs_pub\" does not exist").contains("CREATE PUBLICATION fs_pub"));
        assert!(hint("42704", "replication slot \"fs_slot\" does not exist")
            .contains("pg_create_logical_replication_slot('fs_slot'"));
        assert!(hint("42501", "permission denied to start WAL sender").contains("WITH REPLICATION"));
        assert!(hint("53400", "all replication slots are in use").contains("max_replication_slots"));
        assert!(hint("3D000", "database \"nope\" does not exist").contains("nope"));
        assert_eq!(server("55000", "some other object state").fix_hint(), None);
    }

    #[test]
    fn server_errors_display_code_message_detail_and_hint() {
        let e = SourceError::Server {
            severity: "FATAL".into(),
            code: "55000".into(),
            message: "m".into(),
            detail: Some("d".into()),
            hint: Some("h".into()),
        };
        assert_eq!(e.to_string(), "server error 55000: m (detail: d, hint: h)");
        assert_eq!(server("55000", "m").to_string(), "server error 55000: m");
        assert_eq!(e.code(), Some("55000"));
    }

    #[test]
    fn error_response_fields_become_a_server_error() {
        use bytes::BufMut;
        let mut frame = bytes::BytesMut::new();
        let mut body = Vec::new();
        for (t, v) in [
            (b'S', "FEHLER"),
            (b'V', "ERROR"),
            (b'C', "42704"),
            (b'M', "gone"),
            (b'H', "make it"),
        ] {
            body.push(t);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        frame.put_u8(b'E');
        frame.put_u32(body.len() as u32 + 4);
        frame.put_slice(&body);
        let Ok(Some(postgres_protocol::message::backend::Message::ErrorResponse(body))) =
            postgres_protocol::message::backend::Message::parse(&mut frame)
        else {
            panic!("frame did not parse as an error response");
        };
        match SourceError::from_error_fields(body.fields()) {
            SourceError::Server {
                severity,
                code,
                message,
                detail,
                hint,
            } => {
                assert_eq!(
                    (severity.as_str(), code.as_str(), message.as_str()),
                    ("ERROR", "42704", "gone")
                );
                assert_eq!((detail, hint.as_deref()), (None, Some("make it")));
            }
            other => panic!("unexpected {other}"),
        }
    }
}
