//! The pgwire side: SCRAM-SHA-256 login with the `[admin]` user and password, the simple query
//! protocol (psql) and the extended one (drivers: Parse/Describe/Bind/Execute with `$n`
//! parameters, text or binary). Queries run on a blocking thread (they read sled and wait for the
//! dispatcher); errors go back as PostgreSQL errors with their SQLSTATE, and the connection, like
//! the daemon, carries on.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::{stream, Sink};
use pgwire::api::auth::scram::{gen_salted_password, SASLScramAuthStartupHandler};
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password};
use pgwire::api::copy::NoopCopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DataRowEncoder, DescribePortalResponse, DescribeResponse, DescribeStatementResponse, FieldFormat,
    FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::{ClientInfo, NoopErrorHandler, PgWireServerHandlers, Type as PgType};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::sql::{self, Plan, SqlError, Statement, Type, Value};
use super::views::Views;
use crate::secret::Secret;

/// PBKDF2 rounds of the SCRAM verifier (PostgreSQL's default).
const SCRAM_ITERATIONS: usize = 4096;

/// Serves the admin port until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    views: Arc<Views>,
    user: String,
    password: Secret<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let salt: [u8; 16] = rand::random();
    let login = Arc::new(Login {
        user,
        salted: gen_salted_password(password.expose(), &salt, SCRAM_ITERATIONS),
        salt: salt.to_vec(),
    });
    let handler = Arc::new(Handler { views });
    let factory = Arc::new(Factory { handler, login });
    loop {
        tokio::select! {
            _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let factory = factory.clone();
                    tokio::spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, None, factory).await {
                            tracing::debug!(%peer, "admin connection ended: {e}");
                        }
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

struct Login {
    user: String,
    salt: Vec<u8>,
    salted: Vec<u8>,
}

#[async_trait]
impl AuthSource for Login {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        if login.user() != Some(self.user.as_str()) {
            // the same answer as a wrong password: no hint about which user exists
            tracing::warn!(peer = %login.host(), "admin port: login refused");
            return Err(PgWireError::InvalidPassword(
                login.user().unwrap_or_default().to_owned(),
            ));
        }
        Ok(Password::new(Some(self.salt.clone()), self.salted.clone()))
    }
}

struct Factory {
    handler: Arc<Handler>,
    login: Arc<Login>,
}

impl PgWireServerHandlers for Factory {
    type StartupHandler = SASLScramAuthStartupHandler<Login, DefaultServerParameterProvider>;
    type SimpleQueryHandler = Handler;
    type ExtendedQueryHandler = Handler;
    type CopyHandler = NoopCopyHandler;
    type ErrorHandler = NoopErrorHandler;

    fn simple_query_handler(&self) -> Arc<Handler> {
        self.handler.clone()
    }

    fn extended_query_handler(&self) -> Arc<Handler> {
        self.handler.clone()
    }

    /// One per connection: the SCRAM exchange keeps its state in the handler.
    fn startup_handler(&self) -> Arc<Self::StartupHandler> {
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = concat!("15.0 (fieldsync ", env!("CARGO_PKG_VERSION"), ")").to_owned();
        parameters.date_style = "ISO, MDY".to_owned();
        let mut scram = SASLScramAuthStartupHandler::new(self.login.clone(), Arc::new(parameters));
        scram.set_iterations(SCRAM_ITERATIONS);
        Arc::new(scram)
    }

    fn copy_handler(&self) -> Arc<NoopCopyHandler> {
        Arc::new(NoopCopyHandler)
    }

    fn error_handler(&self) -> Arc<NoopErrorHandler> {
        Arc::new(NoopErrorHandler)
    }
}

pub struct Handler {
    views: Arc<Views>,
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
    async fn query<'a>(&self, plan: Plan, params: Vec<Value>, format: &Format) -> PgWireResult<Response<'a>> {
        let schema = Arc::new(fields(&plan, format));
        let views = self.views.clone();
        let rows = tokio::task::spawn_blocking(move || sql::run(&plan, &params, &*views))
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
        stmt: Statement,
        params: Vec<Value>,
        format: &Format,
    ) -> PgWireResult<Response<'a>> {
        Ok(match stmt {
            Statement::Query(plan) => self.query(*plan, params, format).await?,
            Statement::Set(tag) => Response::Execution(Tag::new(tag)),
            Statement::Begin => Response::TransactionStart(Tag::new("BEGIN")),
            Statement::Commit => Response::TransactionEnd(Tag::new("COMMIT")),
            Statement::Rollback => Response::TransactionEnd(Tag::new("ROLLBACK")),
        })
    }
}

#[async_trait]
impl SimpleQueryHandler for Handler {
    async fn do_query<'a, C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response<'a>>>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = match sql::parse(query, &*self.views) {
            Ok(s) => s,
            Err(e) => return Ok(vec![Response::Error(Box::new(error_info(e)))]),
        };
        let mut out = Vec::new();
        for s in statements {
            let r = self.execute(s, Vec::new(), &Format::UnifiedText).await?;
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
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Option<Statement>;

    async fn parse_sql<C>(&self, _client: &C, sql: &str, _types: &[PgType]) -> PgWireResult<Option<Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
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
        _client: &mut C,
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
        self.execute(stmt, params, &portal.result_column_format).await
    }
}
