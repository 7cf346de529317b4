//! The replication connection up to `START_REPLICATION`: TCP (or Unix socket) connect, TLS
//! negotiation, the startup message with `replication=database`, authentication (cleartext, md5,
//! SCRAM-SHA-256 with `tls-server-end-point` channel binding over TLS), and the simple-query
//! replication commands (`IDENTIFY_SYSTEM`, `CREATE_REPLICATION_SLOT`, `START_REPLICATION`).
//!
//! Upstream tokio-postgres has no replication API, so this speaks the wire protocol itself, with
//! `postgres-protocol` for framing and the password hashes.
//!
//! Invariants:
//! - The password is only ever written to the socket (as a cleartext/md5 password message or a SCRAM
//!   proof); errors and logs name the user and the method, never the password.
//! - After an `ErrorResponse` to a query the connection is drained to `ReadyForQuery`, so it stays
//!   usable.
//! - TLS follows libpq's `sslmode`: `prefer` falls back to plain text when the server declines,
//!   `require` and `verify-full` fail instead; Unix sockets never use TLS.
//! - The session sets `client_encoding=UTF8` and `DateStyle=ISO`: pgoutput renders column values
//!   with the session's output settings, and the decoder expects UTF-8 and ISO dates.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::{AuthenticationSaslBody, DataRowBody, Message};
use postgres_protocol::message::frontend;
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::fallible_iterator::FallibleIterator;

use super::error::SourceError;
use super::wire::{log_notice, negotiate_tls, Backend, PgStream, ReplicationStream, Transport};
use crate::lsn::Lsn;
use crate::pg::PgTarget;

/// A logical replication session (`replication=database`), ready for replication commands.
pub struct ReplicationConnection {
    transport: Transport,
    parameters: HashMap<String, String>,
    backend_pid: Option<i32>,
    tls: bool,
    auth_mechanism: &'static str,
}

/// The answer to `IDENTIFY_SYSTEM`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemIdentity {
    pub system_id: String,
    pub timeline: u32,
    pub xlogpos: Lsn,
    pub dbname: Option<String>,
}

/// The answer to `CREATE_REPLICATION_SLOT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedSlot {
    pub slot_name: String,
    /// The first LSN whose changes the slot delivers.
    pub consistent_point: Lsn,
    /// The exported snapshot (only with [`SnapshotAction::Export`]), usable with
    /// `SET TRANSACTION SNAPSHOT` while this connection runs no other command.
    pub snapshot_name: Option<String>,
}

/// What `CREATE_REPLICATION_SLOT` does with the snapshot at the slot's consistent point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotAction {
    /// Export it for other sessions (`SNAPSHOT 'export'`).
    Export,
    /// Do not keep it (`SNAPSHOT 'nothing'`).
    NoExport,
    /// Use it in the current transaction of this session (`SNAPSHOT 'use'`).
    Use,
}

impl ReplicationConnection {
    /// Connects, negotiates TLS per `target.tls`, authenticates and waits for `ReadyForQuery`. The
    /// whole handshake is bounded by `target.connect_timeout` (zero: no bound).
    pub async fn connect(target: &PgTarget) -> Result<Self, SourceError> {
        let tls = crate::pg::tls_client_config(target)?;
        let handshake = Self::handshake(target, tls);
        if target.connect_timeout.is_zero() {
            return handshake.await;
        }
        match tokio::time::timeout(target.connect_timeout, handshake).await {
            Ok(result) => result,
            Err(_) => Err(SourceError::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "connecting to {} timed out after {:?}",
                    target.redacted_url(),
                    target.connect_timeout
                ),
            ))),
        }
    }

    async fn handshake(
        target: &PgTarget,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, SourceError> {
        let (stream, end_point) = if target.host.starts_with('/') {
            let path = format!("{}/.s.PGSQL.{}", target.host, target.port);
            (PgStream::Unix(UnixStream::connect(path).await?), None)
        } else {
            let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
            tcp.set_nodelay(true)?;
            match tls {
                None => (PgStream::Plain(tcp), None),
                Some(config) => negotiate_tls(tcp, target, config).await?,
            }
        };
        let mut conn = ReplicationConnection {
            tls: matches!(stream, PgStream::Tls(_)),
            transport: Transport::new(stream),
            parameters: HashMap::new(),
            backend_pid: None,
            auth_mechanism: "none",
        };
        let mut params = vec![
            ("user", target.user.as_str()),
            ("database", target.dbname.as_str()),
            ("replication", "database"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
        ];
        if !target.application_name.is_empty() {
            params.push(("application_name", target.application_name.as_str()));
        }
        frontend::startup_message(params, &mut conn.transport.wbuf)
            .map_err(|e| SourceError::Protocol(format!("cannot encode the startup message: {e}")))?;
        conn.transport.send().await?;
        conn.authenticate(target, end_point).await?;
        conn.wait_until_ready().await?;
        let (url, pid) = (target.redacted_url(), conn.backend_pid);
        let (mechanism, tls) = (conn.auth_mechanism, conn.tls);
        tracing::debug!(%url, ?pid, mechanism, tls, "replication connection ready");
        Ok(conn)
    }

    async fn authenticate(
        &mut self,
        target: &PgTarget,
        end_point: Option<Vec<u8>>,
    ) -> Result<(), SourceError> {
        let password = |method: &str| {
            let missing = || {
                let user = &target.user;
                SourceError::Auth(format!(
                    "the server wants a {method} password for user {user:?}; none is configured"
                ))
            };
            target
                .password
                .as_ref()
                .map(|p| p.expose().as_bytes())
                .ok_or_else(missing)
        };
        loop {
            match self.read_message().await? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    self.auth_mechanism = "password";
                    frontend::password_message(password("password")?, &mut self.transport.wbuf)
                        .map_err(|_| SourceError::Auth("the password contains a NUL byte".into()))?;
                    self.transport.send().await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    self.auth_mechanism = "md5";
                    let hash = md5_hash(target.user.as_bytes(), password("md5")?, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.transport.wbuf)
                        .map_err(|e| SourceError::Protocol(e.to_string()))?;
                    self.transport.send().await?;
                }
                Message::AuthenticationSasl(body) => {
                    let password = password("SCRAM-SHA-256")?;
                    self.scram(&body, password, end_point.clone()).await?;
                }
                Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential
                | Message::AuthenticationGss
                | Message::AuthenticationSspi => {
                    return Err(SourceError::Auth(
                        "the server asks for Kerberos/GSSAPI/SSPI/SCM authentication, which fieldsync does \
                         not support"
                            .into(),
                    ))
                }
                other => return Err(unexpected("authentication", &other)),
            }
        }
    }

    /// SCRAM-SHA-256 (PLUS when the server offers it and the certificate hash is known).
    async fn scram(
        &mut self,
        body: &AuthenticationSaslBody,
        password: &[u8],
        end_point: Option<Vec<u8>>,
    ) -> Result<(), SourceError> {
        let (mut plain, mut plus, mut offered) = (false, false, Vec::new());
        let mut mechanisms = body.mechanisms();
        while let Some(m) = mechanisms
            .next()
            .map_err(|e| SourceError::Protocol(e.to_string()))?
        {
            plain |= m == "SCRAM-SHA-256";
            plus |= m == "SCRAM-SHA-256-PLUS";
            offered.push(m.to_string());
        }
        let (mechanism, binding) = match end_point {
            Some(hash) if plus => ("SCRAM-SHA-256-PLUS", ChannelBinding::tls_server_end_point(hash)),
            Some(_) if plain => ("SCRAM-SHA-256", ChannelBinding::unrequested()),
            None if plain => ("SCRAM-SHA-256", ChannelBinding::unsupported()),
            _ => {
                return Err(SourceError::Auth(format!(
                    "the server offers SASL mechanisms {offered:?}, none of which fieldsync supports"
                )))
            }
        };
        tracing::debug!(mechanism, "scram authentication");
        self.auth_mechanism = mechanism;
        let mut scram = ScramSha256::new(password, binding);
        frontend::sasl_initial_response(mechanism, scram.message(), &mut self.transport.wbuf)
            .map_err(|e| SourceError::Protocol(e.to_string()))?;
        self.transport.send().await?;
        let scram_err = |e: io::Error| SourceError::Auth(format!("SCRAM exchange failed: {e}"));
        match self.read_message().await? {
            Message::AuthenticationSaslContinue(body) => scram.update(body.data()).map_err(scram_err)?,
            other => return Err(unexpected("SCRAM authentication", &other)),
        }
        frontend::sasl_response(scram.message(), &mut self.transport.wbuf)
            .map_err(|e| SourceError::Protocol(e.to_string()))?;
        self.transport.send().await?;
        match self.read_message().await? {
            Message::AuthenticationSaslFinal(body) => scram.finish(body.data()).map_err(scram_err),
            other => Err(unexpected("SCRAM authentication", &other)),
        }
    }

    /// After authentication: collects parameters and the backend key until `ReadyForQuery`.
    async fn wait_until_ready(&mut self) -> Result<(), SourceError> {
        loop {
            match self.read_message().await? {
                Message::ReadyForQuery(_) => return Ok(()),
                Message::BackendKeyData(body) => self.backend_pid = Some(body.process_id()),
                other => return Err(unexpected("startup", &other)),
            }
        }
    }

    /// The next message, with errors turned into `Err`, notices logged and parameters recorded.
    async fn read_message(&mut self) -> Result<Message, SourceError> {
        loop {
            match self.transport.read().await? {
                Backend::Message(Message::ErrorResponse(body)) => {
                    return Err(SourceError::from_error_fields(body.fields()))
                }
                Backend::Message(Message::NoticeResponse(body)) => log_notice(body.fields()),
                Backend::Message(Message::ParameterStatus(body)) => self.record_parameter(&body),
                Backend::Message(message) => return Ok(message),
                Backend::CopyBothResponse => {
                    return Err(SourceError::Protocol("unexpected CopyBothResponse".into()))
                }
            }
        }
    }

    fn record_parameter(&mut self, body: &postgres_protocol::message::backend::ParameterStatusBody) {
        if let (Ok(name), Ok(value)) = (body.name(), body.value()) {
            self.parameters.insert(name.to_string(), value.to_string());
        }
    }

    /// The server's `server_version` parameter, e.g. `15.6 (Debian 15.6-1)`.
    pub fn server_version(&self) -> Option<&str> {
        self.parameters.get("server_version").map(String::as_str)
    }

    /// The major version from `server_version` (15 for `15.6`, 9 for `9.6.24`).
    pub fn server_major_version(&self) -> Option<u32> {
        let version = self.server_version()?;
        let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// How we authenticated: `none` (no password asked: trust, peer, cert), `password`, `md5`,
    /// `SCRAM-SHA-256` or `SCRAM-SHA-256-PLUS` (bound to the TLS channel).
    pub fn auth_mechanism(&self) -> &'static str {
        self.auth_mechanism
    }

    /// The process id of the walsender serving this connection.
    pub fn backend_pid(&self) -> Option<i32> {
        self.backend_pid
    }

    /// Runs `sql` with the simple query protocol; rows of every statement as text (`None` for
    /// NULL). A server error comes back as [`SourceError::Server`] once the server is ready again.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, SourceError> {
        frontend::query(sql, &mut self.transport.wbuf)
            .map_err(|_| SourceError::Protocol("the query contains a NUL byte".into()))?;
        self.transport.send().await?;
        let (mut rows, mut error) = (Vec::new(), None);
        loop {
            let message = match self.transport.read().await? {
                Backend::Message(message) => message,
                Backend::CopyBothResponse => {
                    // A START_REPLICATION sent through here: the session is now streaming.
                    return Err(SourceError::Protocol(
                        "simple_query cannot run START_REPLICATION".into(),
                    ));
                }
            };
            match message {
                // A malformed row is reported once the server is ready again, like a server error.
                Message::DataRow(body) if error.is_none() => match decode_row(&body) {
                    Ok(row) => rows.push(row),
                    Err(e) => error = Some(e),
                },
                Message::ErrorResponse(body) => error = Some(SourceError::from_error_fields(body.fields())),
                Message::NoticeResponse(body) => log_notice(body.fields()),
                Message::ParameterStatus(body) => self.record_parameter(&body),
                Message::CopyInResponse(_) => {
                    frontend::copy_fail("fieldsync sends no COPY data", &mut self.transport.wbuf)
                        .map_err(|e| SourceError::Protocol(e.to_string()))?;
                    self.transport.send().await?;
                }
                Message::ReadyForQuery(_) => return error.map_or(Ok(rows), Err),
                // Row descriptions, command tags, and COPY OUT data, which this API does not return.
                _ => {}
            }
        }
    }

    /// `IDENTIFY_SYSTEM`: cluster id, timeline, current WAL position and database.
    pub async fn identify_system(&mut self) -> Result<SystemIdentity, SourceError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = single_row("IDENTIFY_SYSTEM", &rows, 4)?;
        let text = |i: usize| row[i].clone().ok_or_else(|| bad_reply("IDENTIFY_SYSTEM", i));
        Ok(SystemIdentity {
            system_id: text(0)?,
            timeline: text(1)?.parse().map_err(|_| bad_reply("IDENTIFY_SYSTEM", 1))?,
            xlogpos: text(2)?.parse().map_err(|_| bad_reply("IDENTIFY_SYSTEM", 2))?,
            dbname: row[3].clone(),
        })
    }

    /// `CREATE_REPLICATION_SLOT "name" LOGICAL pgoutput` with the snapshot option spelled for the
    /// server's version (the option list from 15 on, the older keywords before).
    pub async fn create_slot(
        &mut self,
        name: &str,
        snapshot: SnapshotAction,
    ) -> Result<CreatedSlot, SourceError> {
        let modern = self.server_major_version().map_or(true, |major| major >= 15);
        let option = match (snapshot, modern) {
            (SnapshotAction::Export, true) => "(SNAPSHOT 'export')",
            (SnapshotAction::NoExport, true) => "(SNAPSHOT 'nothing')",
            (SnapshotAction::Use, true) => "(SNAPSHOT 'use')",
            (SnapshotAction::Export, false) => "EXPORT_SNAPSHOT",
            (SnapshotAction::NoExport, false) => "NOEXPORT_SNAPSHOT",
            (SnapshotAction::Use, false) => "USE_SNAPSHOT",
        };
        let sql = format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {option}",
            quote_ident(name)
        );
        let rows = self.simple_query(&sql).await?;
        let row = single_row("CREATE_REPLICATION_SLOT", &rows, 4)?;
        let text = |i: usize| {
            row[i]
                .clone()
                .ok_or_else(|| bad_reply("CREATE_REPLICATION_SLOT", i))
        };
        let created = CreatedSlot {
            slot_name: text(0)?,
            consistent_point: text(1)?
                .parse()
                .map_err(|_| bad_reply("CREATE_REPLICATION_SLOT", 1))?,
            snapshot_name: row[2].clone(),
        };
        let (slot, lsn) = (&created.slot_name, created.consistent_point);
        tracing::info!(%slot, %lsn, "replication slot created");
        Ok(created)
    }

    /// `START_REPLICATION SLOT "slot" LOGICAL start (proto_version '1', publication_names '"pub"',
    /// messages 'true')`; the connection becomes the CopyBoth stream.
    pub async fn start_replication(
        mut self,
        slot: &str,
        start: Lsn,
        publication: &str,
    ) -> Result<ReplicationStream, SourceError> {
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {start} \
             (proto_version '1', publication_names {}, messages 'true')",
            quote_ident(slot),
            quote_literal(&quote_ident(publication)),
        );
        frontend::query(&sql, &mut self.transport.wbuf)
            .map_err(|_| SourceError::Protocol("slot or publication name contains a NUL byte".into()))?;
        self.transport.send().await?;
        loop {
            match self.transport.read().await? {
                Backend::CopyBothResponse => break,
                Backend::Message(Message::ErrorResponse(body)) => {
                    let error = SourceError::from_error_fields(body.fields());
                    self.drain_until_ready().await?;
                    return Err(error);
                }
                Backend::Message(Message::NoticeResponse(body)) => log_notice(body.fields()),
                Backend::Message(Message::ParameterStatus(_)) => {}
                Backend::Message(other) => return Err(unexpected("START_REPLICATION", &other)),
            }
        }
        tracing::info!(slot, lsn = %start, publication, "replication started");
        Ok(ReplicationStream::new(self.transport))
    }

    async fn drain_until_ready(&mut self) -> Result<(), SourceError> {
        loop {
            if let Backend::Message(Message::ReadyForQuery(_)) = self.transport.read().await? {
                return Ok(());
            }
        }
    }
}

fn decode_row(body: &DataRowBody) -> Result<Vec<Option<String>>, SourceError> {
    let buf = body.buffer();
    let mut ranges = body.ranges();
    let mut row = Vec::new();
    while let Some(range) = ranges
        .next()
        .map_err(|e| SourceError::Protocol(format!("malformed data row: {e}")))?
    {
        row.push(match range {
            None => None,
            Some(r) => Some(
                std::str::from_utf8(&buf[r])
                    .map_err(|_| SourceError::Protocol("data row is not UTF-8".into()))?
                    .to_string(),
            ),
        });
    }
    Ok(row)
}

fn single_row<'a>(
    command: &str,
    rows: &'a [Vec<Option<String>>],
    min_columns: usize,
) -> Result<&'a [Option<String>], SourceError> {
    match rows {
        [row] if row.len() >= min_columns => Ok(row),
        _ => Err(SourceError::Protocol(format!(
            "{command} returned {} rows, expected one with at least {min_columns} columns",
            rows.len()
        ))),
    }
}

fn bad_reply(command: &str, column: usize) -> SourceError {
    SourceError::Protocol(format!("{command} returned an invalid value in column {column}"))
}

fn unexpected(phase: &str, message: &Message) -> SourceError {
    let name = match message {
        Message::AuthenticationOk => "AuthenticationOk",
        Message::AuthenticationSaslContinue(_) => "AuthenticationSASLContinue",
        Message::AuthenticationSaslFinal(_) => "AuthenticationSASLFinal",
        Message::BackendKeyData(_) => "BackendKeyData",
        Message::CommandComplete(_) => "CommandComplete",
        Message::CopyData(_) => "CopyData",
        Message::CopyDone => "CopyDone",
        Message::DataRow(_) => "DataRow",
        Message::ReadyForQuery(_) => "ReadyForQuery",
        Message::RowDescription(_) => "RowDescription",
        _ => "another message",
    };
    SourceError::Protocol(format!("unexpected {name} during {phase}"))
}

/// `"name"`, with embedded quotes doubled.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with embedded quotes doubled (replication commands have no backslash escapes).
pub(crate) fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted_by_doubling() {
        assert_eq!(quote_ident("fs_slot"), "\"fs_slot\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal(&quote_ident("it's")), "'\"it''s\"'");
    }
}
