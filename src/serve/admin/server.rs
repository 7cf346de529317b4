//! The pgwire side: TLS when configured ([`negotiate`]), SCRAM-SHA-256 login with the `[admin]`
//! users and passwords (each query runs as its user, with its role: [`Session`]), the simple query
//! protocol (psql) and the extended one (drivers: Parse/Describe/Bind/Execute with `$n`
//! parameters, text or binary). Queries run on a blocking thread (they read sled and wait for the
//! dispatcher); errors go back as PostgreSQL errors with their SQLSTATE, and the connection, like
//! the daemon, carries on. Each connection is driven by [`super::wire`] (framing with limits,
//! login timeout and throttle); at most `max_connections` are served at once.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::{stream, Sink};
use pgwire::api::auth::scram::{gen_salted_password, SASLScramAuthStartupHandler};
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DataRowEncoder, DescribePortalResponse, DescribeResponse, DescribeStatementResponse, FieldFormat,
    FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::{ClientInfo, Type as PgType};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use std::panic::AssertUnwindSafe;

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use super::limits::{Limits, MAX_STARTUP_BYTES, WRITE_TIMEOUT};
use super::throttle::Throttle;
use super::wire::{serve_connection, Conn, End};

use super::sql::{self, Plan, SqlError, Statement, Type, Value};
use super::views::{Session, Views};
use crate::config::{Credential, Role};
use crate::ops::Actor;

/// PBKDF2 rounds of the SCRAM verifier (PostgreSQL's default).
const SCRAM_ITERATIONS: usize = 4096;

/// Connections being refused at once (each for at most [`WRITE_TIMEOUT`]); past it a connection
/// over the limit is closed without a word, so a flood cannot hold more sockets than this.
const MAX_REFUSING: usize = 64;

/// Serves the admin port until `shutdown` turns true: at most `limits.max_connections` at once,
/// the others refused with `53300`.
pub async fn serve(
    listener: TcpListener,
    views: Arc<Views>,
    users: Vec<Credential>,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let login = Arc::new(Login {
        users: users
            .iter()
            .map(|u| {
                let salt: [u8; 16] = rand::random();
                let salted = gen_salted_password(u.secret.expose(), &salt, SCRAM_ITERATIONS);
                (u.name.clone(), (salt.to_vec(), salted))
            })
            .collect(),
    });
    let handler = Arc::new(Handler {
        views,
        roles: Arc::new(users.into_iter().map(|u| (u.name, u.role)).collect()),
        max_query_bytes: limits.max_query_bytes,
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let throttle = Arc::new(Throttle::default());
    let mut refusals = Refusals::default();
    loop {
        tokio::select! {
            _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        refusals.refused(peer, limits.max_connections);
                        if let Ok(refusal) = refusing.clone().try_acquire_owned() {
                            tokio::spawn(async move {
                                refuse(socket).await;
                                drop(refusal);
                            });
                        }
                        continue;
                    };
                    let startup = startup_handler(login.clone());
                    let (handler, throttle, tls) = (handler.clone(), throttle.clone(), tls.clone());
                    tokio::spawn(async move {
                        let required = tls.is_some();
                        let (socket, secure) = match tokio::time::timeout(limits.auth_timeout, negotiate(socket, tls.as_ref())).await {
                            Ok(Ok(negotiated)) => negotiated,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, "admin port: TLS negotiation failed: {e}");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "admin port: TLS negotiation not finished within auth_timeout");
                                return;
                            }
                        };
                        let mut conn = Conn::new(socket, peer).tls(secure, required);
                        let served = AssertUnwindSafe(serve_connection(&mut conn, startup, handler, limits, &throttle))
                            .catch_unwind()
                            .await;
                        let end = match served {
                            Ok(Ok(())) => End::Gone,
                            Ok(Err(end)) => end,
                            Err(_) => {
                                tracing::error!(%peer, "admin port: a handler panicked: that connection is closed");
                                End::Fatal { code: sql::state::INTERNAL_ERROR, message: "internal error".to_owned() }
                            }
                        };
                        if let End::Fatal { code, message } = &end {
                            tracing::debug!(%peer, "admin connection closed: {message} (SQLSTATE {code})");
                        }
                        conn.end(end).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::warn!("admin port: cannot accept a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Logs refused connections at most once per [`REFUSAL_LOG_EVERY`], with how many were refused
/// since: a flood of connections does not become a flood of log lines.
#[derive(Default)]
struct Refusals {
    logged_at: Option<std::time::Instant>,
    since: u64,
}

const REFUSAL_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Refusals {
    fn refused(&mut self, peer: std::net::SocketAddr, max: usize) {
        self.since += 1;
        if self.logged_at.is_some_and(|at| at.elapsed() < REFUSAL_LOG_EVERY) {
            return;
        }
        tracing::warn!(%peer, max, refused = self.since, "admin port: too many connections: refused (count since the last such line)");
        self.logged_at = Some(std::time::Instant::now());
        self.since = 0;
    }
}

/// `53300` to a connection over the limit, before reading anything from it; then a lingering
/// close (a little of what the client already sent is read and dropped, so that its startup
/// packet arriving after the close does not turn our error into a reset it never reads).
async fn refuse(mut socket: TcpStream) {
    let info = ErrorInfo::new(
        "FATAL".to_owned(),
        sql::state::TOO_MANY_CONNECTIONS.to_owned(),
        "sorry, too many clients already".to_owned(),
    );
    let mut buf = BytesMut::new();
    if PgWireBackendMessage::ErrorResponse(info.into())
        .encode(&mut buf)
        .is_err()
    {
        return;
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        socket.write_all(&buf).await?;
        socket.shutdown().await?;
        let mut sink = [0u8; 1024];
        let mut drained = 0;
        while drained < MAX_STARTUP_BYTES {
            match socket.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Each user's SCRAM salt and salted password.
/// A connection's socket, in clear or under TLS.
trait AdminIo: AsyncRead + AsyncWrite + Unpin + Send + Sync {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> AdminIo for T {}

/// With TLS on the port: answers the encryption requests that come before the startup packet
/// (GSSAPI `N`, SSL `S` and the handshake) and gives the socket to speak the protocol over, and
/// whether it is TLS. Without TLS, or when the client starts in clear, the socket as it is (the
/// connection refuses an SSL request, or a startup in clear when TLS is required). Exactly the
/// request's 8 bytes are read before the handshake, so nothing sent in clear after it is taken as
/// protocol.
async fn negotiate(
    mut socket: TcpStream,
    tls: Option<&tokio_rustls::TlsAcceptor>,
) -> std::io::Result<(Box<dyn AdminIo>, bool)> {
    let Some(acceptor) = tls else {
        return Ok((Box::new(socket), false));
    };
    loop {
        let mut head = [0u8; 8];
        let mut seen = socket.peek(&mut head).await?;
        while (1..8).contains(&seen) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            seen = socket.peek(&mut head).await?;
        }
        let len = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let code = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        match (seen, len, code) {
            (8, 8, super::wire::GSSENC_REQUEST) => {
                socket.read_exact(&mut head).await?;
                socket.write_all(b"N").await?;
            }
            (8, 8, super::wire::SSL_REQUEST) => {
                socket.read_exact(&mut head).await?;
                socket.write_all(b"S").await?;
                return Ok((Box::new(acceptor.accept(socket).await?), true));
            }
            _ => return Ok((Box::new(socket), false)),
        }
    }
}

struct Login {
    users: HashMap<String, (Vec<u8>, Vec<u8>)>,
}

#[async_trait]
impl AuthSource for Login {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        match login.user().and_then(|u| self.users.get(u)) {
            Some((salt, salted)) => Ok(Password::new(Some(salt.clone()), salted.clone())),
            // the same answer as a wrong password: no hint about which user exists (the
            // connection logs and throttles it as one)
            None => Err(PgWireError::InvalidPassword(
                login.user().unwrap_or_default().to_owned(),
            )),
        }
    }
}

/// One per connection: the SCRAM exchange keeps its state in the handler.
fn startup_handler(
    login: Arc<Login>,
) -> Arc<SASLScramAuthStartupHandler<Login, DefaultServerParameterProvider>> {
    let mut parameters = DefaultServerParameterProvider::default();
    parameters.server_version = concat!("15.0 (fieldsync ", env!("CARGO_PKG_VERSION"), ")").to_owned();
    parameters.date_style = "ISO, MDY".to_owned();
    let mut scram = SASLScramAuthStartupHandler::new(login, Arc::new(parameters));
    scram.set_iterations(SCRAM_ITERATIONS);
    Arc::new(scram)
}

pub struct Handler {
    views: Arc<Views>,
    /// Each user's role.
    roles: Arc<HashMap<String, Role>>,
    max_query_bytes: usize,
}

/// Who sends a connection's queries, as the audit trail records it.
fn actor<C: ClientInfo>(client: &C, roles: &HashMap<String, Role>) -> Actor {
    let name = client
        .metadata()
        .get(pgwire::api::METADATA_USER)
        .cloned()
        .unwrap_or_default();
    Actor {
        // only logged-in connections send queries; an unknown name cannot log in
        role: roles.get(&name).copied().unwrap_or(Role::Read),
        name,
        via: "admin",
        from: Some(client.socket_addr().to_string()),
    }
}

fn error_info(e: SqlError) -> ErrorInfo {
    let mut info = ErrorInfo::new("ERROR".to_owned(), e.code.to_owned(), e.message);
    info.hint = e.hint;
    info
}

fn user_error(e: SqlError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(e)))
}

fn pg_type(t: Type) -> PgType {
    match t {
        Type::Bool => PgType::BOOL,
        Type::Int => PgType::INT8,
        Type::Float => PgType::FLOAT8,
        Type::Time => PgType::TIMESTAMPTZ,
        Type::Text | Type::Interval => PgType::TEXT,
    }
}

fn fields(plan: &Plan, format: &Format) -> Vec<FieldInfo> {
    plan.columns
        .iter()
        .enumerate()
        .map(|(i, (name, t))| FieldInfo::new(name.clone(), None, None, pg_type(*t), format.format_for(i)))
        .collect()
}

impl Handler {
    /// Runs a plan on a blocking thread and encodes its rows.
    async fn query<'a>(
        &self,
        actor: Actor,
        plan: Plan,
        params: Vec<Value>,
        format: &Format,
    ) -> PgWireResult<Response<'a>> {
        let schema = Arc::new(fields(&plan, format));
        let session = Session {
            views: self.views.clone(),
            actor,
        };
        let rows = tokio::task::spawn_blocking(move || sql::run(&plan, &params, &session))
            .await
            .map_err(|e| {
                user_error(SqlError::new(
                    sql::state::INTERNAL_ERROR,
                    format!("the query failed: {e}"),
                ))
            })?;
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => return Ok(Response::Error(Box::new(error_info(e)))),
        };
        let encoded = rows
            .into_iter()
            .map(|row| {
                let mut enc = DataRowEncoder::new(schema.clone());
                for (i, v) in row.into_iter().enumerate() {
                    match v {
                        // text as PostgreSQL writes it (the encoder's own form keeps trailing zeros)
                        Value::Time(_) if schema[i].format() == FieldFormat::Text => {
                            enc.encode_field(&v.render())?
                        }
                        Value::Null => enc.encode_field(&None::<i8>)?,
                        Value::Bool(b) => enc.encode_field(&b)?,
                        Value::Int(n) => enc.encode_field(&n)?,
                        Value::Float(f) => enc.encode_field(&f)?,
                        Value::Text(s) => enc.encode_field(&s)?,
                        Value::Time(t) => enc.encode_field(&t)?,
                        v @ Value::Interval(_) => enc.encode_field(&v.render())?,
                    }
                }
                enc.finish()
            })
            .collect::<Vec<_>>();
        Ok(Response::Query(QueryResponse::new(schema, stream::iter(encoded))))
    }

    async fn execute<'a>(
        &self,
        actor: Actor,
        stmt: Statement,
        params: Vec<Value>,
        format: &Format,
    ) -> PgWireResult<Response<'a>> {
        Ok(match stmt {
            Statement::Query(plan) => self.query(actor, *plan, params, format).await?,
            Statement::Set(tag) => Response::Execution(Tag::new(tag)),
            Statement::Begin => Response::TransactionStart(Tag::new("BEGIN")),
            Statement::Commit => Response::TransactionEnd(Tag::new("COMMIT")),
            Statement::Rollback => Response::TransactionEnd(Tag::new("ROLLBACK")),
        })
    }
}

#[async_trait]
impl SimpleQueryHandler for Handler {
    async fn do_query<'a, C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response<'a>>>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = match sql::check_length(query, self.max_query_bytes)
            .and_then(|()| sql::parse(query, &*self.views))
        {
            Ok(s) => s,
            Err(e) => return Ok(vec![Response::Error(Box::new(error_info(e)))]),
        };
        let mut out = Vec::new();
        for s in statements {
            let r = self
                .execute(actor(client, &self.roles), s, Vec::new(), &Format::UnifiedText)
                .await?;
            let failed = matches!(r, Response::Error(_));
            out.push(r);
            if failed {
                break;
            }
        }
        if out.is_empty() {
            out.push(Response::EmptyQuery);
        }
        Ok(out)
    }
}

/// A prepared statement: one statement, or none for an empty query string.
pub struct Parser {
    views: Arc<Views>,
    max_query_bytes: usize,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Option<Statement>;

    async fn parse_sql<C>(&self, _client: &C, sql: &str, _types: &[PgType]) -> PgWireResult<Option<Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        sql::check_length(sql, self.max_query_bytes).map_err(user_error)?;
        let mut statements = sql::parse(sql, &*self.views).map_err(user_error)?;
        match statements.len() {
            0 | 1 => Ok(statements.pop()),
            _ => Err(user_error(SqlError::new(
                sql::state::SYNTAX_ERROR,
                "cannot insert multiple commands into a prepared statement",
            ))),
        }
    }
}

/// The parameter types: what the client declared, else what the plan inferred.
fn param_types(stmt: &StoredStatement<Option<Statement>>) -> Vec<PgType> {
    let inferred: &[Type] = match &stmt.statement {
        Some(Statement::Query(plan)) => &plan.params,
        _ => &[],
    };
    inferred
        .iter()
        .enumerate()
        .map(|(i, t)| match stmt.parameter_types.get(i) {
            Some(declared) if *declared != PgType::UNKNOWN => declared.clone(),
            _ => pg_type(*t),
        })
        .collect()
}

fn param_values(portal: &Portal<Option<Statement>>) -> PgWireResult<Vec<Value>> {
    let types = param_types(&portal.statement);
    if portal.parameter_len() != types.len() {
        return Err(user_error(SqlError::new(
            sql::state::UNDEFINED_PARAMETER,
            format!(
                "the statement takes {} parameter(s), {} given",
                types.len(),
                portal.parameter_len()
            ),
        )));
    }
    types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let v = match *t {
                PgType::BOOL => portal.parameter::<bool>(i, t)?.map(Value::Bool),
                PgType::INT2 => portal.parameter::<i16>(i, t)?.map(|n| Value::Int(n.into())),
                PgType::INT4 => portal.parameter::<i32>(i, t)?.map(|n| Value::Int(n.into())),
                PgType::INT8 => portal.parameter::<i64>(i, t)?.map(Value::Int),
                PgType::FLOAT4 => portal.parameter::<f32>(i, t)?.map(|f| Value::Float(f.into())),
                PgType::FLOAT8 => portal.parameter::<f64>(i, t)?.map(Value::Float),
                PgType::TIMESTAMPTZ => portal
                    .parameter::<chrono::DateTime<chrono::Utc>>(i, t)?
                    .map(Value::Time),
                PgType::TIMESTAMP => portal
                    .parameter::<chrono::NaiveDateTime>(i, t)?
                    .map(|d| Value::Time(d.and_utc())),
                PgType::TEXT | PgType::VARCHAR | PgType::BPCHAR | PgType::NAME | PgType::UNKNOWN => {
                    portal.parameter::<String>(i, t)?.map(Value::Text)
                }
                _ => {
                    return Err(user_error(
                        SqlError::new(
                            sql::state::FEATURE_NOT_SUPPORTED,
                            format!(
                                "parameter ${} has type {t}, which the admin port does not take",
                                i + 1
                            ),
                        )
                        .hint("send it as text"),
                    ))
                }
            };
            Ok(v.unwrap_or(Value::Null))
        })
        .collect()
}

#[async_trait]
impl ExtendedQueryHandler for Handler {
    type Statement = Option<Statement>;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::new(Parser {
            views: self.views.clone(),
            max_query_bytes: self.max_query_bytes,
        })
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        stmt: &StoredStatement<Option<Statement>>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        Ok(match &stmt.statement {
            Some(Statement::Query(plan)) => {
                DescribeStatementResponse::new(param_types(stmt), fields(plan, &Format::UnifiedText))
            }
            _ => DescribeStatementResponse::no_data(),
        })
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Option<Statement>>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        Ok(match &portal.statement.statement {
            Some(Statement::Query(plan)) => {
                DescribePortalResponse::new(fields(plan, &portal.result_column_format))
            }
            _ => DescribePortalResponse::no_data(),
        })
    }

    async fn do_query<'a, C>(
        &self,
        client: &mut C,
        portal: &Portal<Option<Statement>>,
        _max_rows: usize,
    ) -> PgWireResult<Response<'a>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let Some(stmt) = portal.statement.statement.clone() else {
            return Ok(Response::EmptyQuery);
        };
        let params = param_values(portal)?;
        self.execute(
            actor(client, &self.roles),
            stmt,
            params,
            &portal.result_column_format,
        )
        .await
    }
}
