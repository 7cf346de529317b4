//! The admin port's views and functions over the running daemon. Queries run on a blocking
//! thread: the views read the queue directly; deliveries are read and acted on through
//! [`crate::ops`].

use std::collections::BTreeMap;
use std::sync::Arc;

use super::sql::{state, Catalog, Column, Function, Rows, SqlError, Type, Value};
use crate::config::Role;
use crate::ops::{Actor, Filter, OpsError};
use crate::serve::http::AppState;
use crate::store::record::EventId;
use crate::store::StoreError;

const fn col(name: &'static str, ty: Type) -> Column {
    Column { name, ty }
}

const STATUS: &[Column] = &[
    col("connected", Type::Bool),
    col("slot", Type::Text),
    col("publication", Type::Text),
    col("received_lsn", Type::Text),
    col("durable_lsn", Type::Text),
    col("confirmed_lsn", Type::Text),
    col("lag_bytes", Type::Int),
    col("wal_status", Type::Text),
    col("safe_wal_size", Type::Int),
    col("slot_active", Type::Bool),
    col("last_message_at", Type::Time),
    col("heartbeat_latency_seconds", Type::Float),
    col("stalled", Type::Text),
    col("reconnects", Type::Int),
    col("last_error", Type::Text),
    col("queue_records", Type::Int),
    col("queue_transactions", Type::Int),
    col("disk_bytes", Type::Int),
    col("queue_records_held", Type::Int),
    col("queue_oldest_record_age_seconds", Type::Float),
    col("queue_records_removed", Type::Int),
    col("deliveries_in_flight", Type::Int),
    col("started_at", Type::Time),
    col("version", Type::Text),
];

const INTEGRATIONS: &[Column] = &[
    col("integration_id", Type::Text),
    col("integration_type", Type::Text),
    col("state", Type::Text),
    col("reason", Type::Text),
    col("endpoint", Type::Text),
    col("breaker", Type::Text),
    col("queued", Type::Int),
    col("in_flight", Type::Int),
    col("backpressured", Type::Bool),
    col("delivered", Type::Int),
    col("retries", Type::Int),
    col("superseded", Type::Int),
    col("dead", Type::Int),
    col("dead_letters", Type::Int),
    col("oldest_age_seconds", Type::Float),
    col("rate_limited_seconds", Type::Float),
    col("paused_since", Type::Time),
];

const QUEUE: &[Column] = &[
    col("integration_id", Type::Text),
    col("event_id", Type::Text),
    col("wedding_id", Type::Text),
    col("field_id", Type::Text),
    col("priority", Type::Text),
    col("state", Type::Text),
    col("attempts", Type::Int),
    col("last_status", Type::Int),
    col("waiting_seconds", Type::Float),
    col("requeued", Type::Bool),
];

const DEAD_LETTERS: &[Column] = &[
    col("integration_id", Type::Text),
    col("event_id", Type::Text),
    col("wedding_id", Type::Text),
    col("field_id", Type::Text),
    col("attempts", Type::Int),
    col("status", Type::Int),
    col("error", Type::Text),
    col("failed_at", Type::Time),
    col("requeued", Type::Bool),
];

const DELIVERIES: &[Column] = &[
    col("at", Type::Time),
    col("integration_id", Type::Text),
    col("event_id", Type::Text),
    col("wedding_id", Type::Text),
    col("attempt", Type::Int),
    col("outcome", Type::Text),
    col("status", Type::Int),
    col("error", Type::Text),
    col("latency_ms", Type::Float),
];

const AUDIT: &[Column] = &[
    col("at", Type::Time),
    col("actor", Type::Text),
    col("role", Type::Text),
    col("via", Type::Text),
    col("client", Type::Text),
    col("action", Type::Text),
    col("integration_id", Type::Text),
    col("event_ids", Type::Text),
    col("result", Type::Text),
];

/// The views over one daemon.
pub struct Views {
    pub state: AppState,
    pub slot: String,
    pub publication: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// The daemon's runtime, for the dispatcher's channel.
    pub runtime: tokio::runtime::Handle,
}

fn storage(e: StoreError) -> SqlError {
    SqlError::new(state::INTERNAL_ERROR, format!("reading the queue: {e}"))
}

/// An operator action's error as SQL sees it.
fn ops_error(e: OpsError) -> SqlError {
    match e {
        OpsError::UnknownIntegration(id) => unknown_integration(&id),
        OpsError::Store(e) => storage(e),
        e @ (OpsError::Disabled | OpsError::Stopped | OpsError::NotRunning) => {
            SqlError::new(state::OBJECT_NOT_IN_PREREQUISITE_STATE, e.to_string())
        }
    }
}

impl Views {
    /// Runs an operator action (from the blocking thread a query runs on).
    fn ops<T, F: std::future::Future<Output = Result<T, OpsError>>>(
        &self,
        action: impl FnOnce(crate::ops::Ops) -> F,
    ) -> Result<T, SqlError> {
        self.runtime.block_on(action(self.state.ops())).map_err(ops_error)
    }

    fn status(&self) -> Result<Vec<Value>, SqlError> {
        let s = self.state.source.snapshot();
        let q = self.state.queue.summary().map_err(storage)?;
        let slot = self.state.slot.latest().and_then(Result::ok);
        let in_flight = match &self.state.dispatch {
            Some(_) => Value::Int(self.ops(|o| async move { o.status().await })?.in_flight as i64),
            None => Value::Null,
        };
        Ok(vec![
            Value::Bool(s.connected),
            Value::text(&self.slot),
            Value::text(&self.publication),
            Value::text(s.received_lsn.to_string()),
            Value::text(s.durable_lsn.to_string()),
            Value::text(s.confirmed_lsn.to_string()),
            Value::opt_int(slot.as_ref().map(|h| h.lag_bytes.min(i64::MAX as u64) as i64)),
            Value::opt_text(slot.as_ref().and_then(|h| h.wal_status.clone())),
            Value::opt_int(slot.as_ref().and_then(|h| h.safe_wal_size)),
            slot.as_ref().map_or(Value::Null, |h| Value::Bool(h.active)),
            if s.last_message_unix_ms > 0 {
                Value::time_millis(s.last_message_unix_ms)
            } else {
                Value::Null
            },
            Value::opt_float(s.heartbeat_latency_seconds),
            Value::opt_text(s.stalled),
            Value::Int(s.reconnects as i64),
            Value::opt_text(s.last_error),
            Value::Int(q.records as i64),
            Value::Int(q.transactions as i64),
            Value::opt_int(
                self.state
                    .disk
                    .as_ref()
                    .map(|d| d.bytes().min(i64::MAX as u64) as i64),
            ),
            Value::Int(q.held as i64),
            Value::opt_float(q.oldest_record_age_seconds),
            Value::Int(q.removed as i64),
            in_flight,
            Value::Time(self.started_at),
            Value::text(env!("CARGO_PKG_VERSION")),
        ])
    }

    fn integrations(&self) -> Result<Vec<Vec<Value>>, SqlError> {
        let status = self.ops(|o| async move { o.status().await })?;
        let mut configured: BTreeMap<String, crate::events::context::Integration> = self
            .state
            .queue
            .context()
            .and_then(|c| c.integrations())
            .map_err(storage)?
            .into_iter()
            .collect();
        let mut rows = Vec::new();
        for i in status.integrations {
            configured.remove(&i.id);
            let (state, reason) = match (&i.paused_since, &i.config_error, &i.disabled) {
                (Some(_), ..) => ("paused", None),
                (None, Some(e), _) => ("misconfigured", Some(e.clone())),
                (None, None, Some(d)) => ("disabled", Some(d.clone())),
                _ => ("active", None),
            };
            rows.push(vec![
                Value::text(i.id),
                Value::text(i.integration_type),
                Value::text(state),
                Value::opt_text(reason),
                Value::opt_text(i.endpoint),
                Value::text(i.breaker),
                Value::Int(i.queued as i64),
                Value::Int(i.in_flight as i64),
                Value::Bool(i.backpressured),
                Value::Int(i.delivered as i64),
                Value::Int(i.retries as i64),
                Value::Int(i.superseded as i64),
                Value::Int(i.dead as i64),
                Value::Int(i.dead_letters as i64),
                Value::opt_float(i.oldest_age_seconds),
                Value::Float(i.rate_limited_seconds),
                Value::time_rfc3339(i.paused_since.as_deref()),
            ]);
        }
        // configured, and nothing sent to them since the start
        let store = self.state.queue.deliveries().map_err(storage)?;
        for (id, i) in configured {
            let paused = store.paused(&id).map_err(storage)?;
            let state = match (&paused, i.is_active) {
                (Some(_), _) => "paused",
                (None, true) => "idle",
                (None, false) => "inactive",
            };
            let zero = Value::Int(0);
            rows.push(vec![
                Value::text(&id),
                Value::text(i.integration_type),
                Value::text(state),
                Value::Null,
                Value::Null,
                Value::Null,
                zero.clone(),
                zero.clone(),
                Value::Bool(false),
                zero.clone(),
                zero.clone(),
                zero.clone(),
                zero,
                Value::Int(store.dead_count(&id) as i64),
                Value::Null,
                Value::Float(0.0),
                Value::time_rfc3339(paused.as_deref()),
            ]);
        }
        Ok(rows)
    }

    fn queue(&self) -> Result<Vec<Vec<Value>>, SqlError> {
        Ok(self
            .ops(|o| async move { o.waiting().await })?
            .into_iter()
            .map(|w| {
                vec![
                    Value::text(w.integration_id),
                    Value::text(w.event_id.to_string()),
                    Value::opt_text(w.wedding_id),
                    Value::opt_text(w.field_id),
                    Value::text(w.priority),
                    Value::text(w.state.as_str()),
                    Value::Int(i64::from(w.attempts)),
                    Value::opt_int(w.last_status),
                    Value::Float(w.waiting_seconds),
                    Value::Bool(w.requeued),
                ]
            })
            .collect())
    }

    fn dead_letters(&self) -> Result<Vec<Vec<Value>>, SqlError> {
        Ok(self
            .state
            .ops()
            .dead_letters(&Filter::default())
            .map_err(ops_error)?
            .into_iter()
            .map(|d| {
                vec![
                    Value::text(d.integration_id),
                    Value::text(d.event_id.to_string()),
                    Value::opt_text(d.wedding_id),
                    Value::opt_text(d.field_id),
                    Value::Int(i64::from(d.attempts)),
                    Value::opt_int(d.status),
                    Value::text(d.error),
                    Value::time_rfc3339(Some(&d.failed_at)),
                    Value::Bool(d.requeued),
                ]
            })
            .collect())
    }

    fn audit(&self) -> Result<Vec<Vec<Value>>, SqlError> {
        Ok(self
            .ops(|o| async move { o.audit(crate::ops::MAX_LOG_READ) })?
            .into_iter()
            .map(|e| {
                vec![
                    Value::time_rfc3339(Some(&e.at)),
                    Value::text(e.actor),
                    Value::text(e.role),
                    Value::text(e.via),
                    Value::opt_text(e.from),
                    Value::text(e.action),
                    Value::opt_text(e.integration),
                    Value::opt_text((!e.events.is_empty()).then(|| e.events.join(","))),
                    Value::text(e.result),
                ]
            })
            .collect())
    }

    /// Calls an admin function as `actor`: the functions that act need role `operate`; a `read`
    /// user gets `42501`, and the refusal is in the audit trail too.
    fn call_as(&self, actor: &Actor, name: &str, args: &[Value]) -> Result<Value, SqlError> {
        if matches!(name, "requeue" | "pause" | "resume" | "reencrypt") && actor.role < Role::Operate {
            let why = format!("user {:?} has role {}", actor.name, actor.role.as_str());
            self.state
                .ops()
                .refused(actor, name, args.first().map(Value::render), &why);
            return Err(SqlError::new(
                state::INSUFFICIENT_PRIVILEGE,
                format!("permission denied for function {name}: {why}"),
            )
            .hint(
                "requeue, pause, resume and reencrypt need a user of [admin] users with role = \"operate\"",
            ));
        }
        match name {
            "requeue" => self.requeue(actor, args),
            "pause" => self.pause(actor, args, true),
            "resume" => self.pause(actor, args, false),
            "reencrypt" => {
                let done = self.ops(|o| async move { o.reencrypt(actor).await })?;
                Ok(Value::Int(done.rewritten as i64))
            }
            _ => Err(SqlError::new(
                state::UNDEFINED_FUNCTION,
                format!("function {name}() does not exist"),
            )),
        }
    }

    fn requeue(&self, actor: &Actor, args: &[Value]) -> Result<Value, SqlError> {
        let integration = args[0].render();
        let events = match args.get(1) {
            Some(v) => Some(vec![v.render().parse::<EventId>().map_err(|e| {
                SqlError::new(state::INVALID_TEXT_REPRESENTATION, format!("invalid event id: {e}"))
                    .hint("event ids look like 0000000001529158:00000000 (commit LSN and index in hex), as the dead_letters view shows them")
            })?]),
            None => None,
        };
        let answer = self.ops(|o| async move { o.requeue(actor, Some(integration), events).await })?;
        Ok(Value::Int(answer.requeued as i64))
    }

    fn pause(&self, actor: &Actor, args: &[Value], pause: bool) -> Result<Value, SqlError> {
        let integration = args[0].render();
        let changed = self.ops(|o| async move { o.pause(actor, &integration, pause).await })?;
        Ok(Value::text(match (pause, changed) {
            (true, true) => "paused",
            (true, false) => "already paused",
            (false, true) => "resumed",
            (false, false) => "not paused",
        }))
    }
}

/// `42704` with the hint the README promises.
fn unknown_integration(id: &str) -> SqlError {
    SqlError::new(state::UNDEFINED_OBJECT, format!("no integration with id {id:?}"))
        .hint("SELECT integration_id FROM integrations lists them")
}
fn rows(v: Vec<Vec<Value>>) -> Rows<'static> {
    Box::new(v.into_iter().map(Ok))
}

impl Catalog for Views {
    fn views(&self) -> &'static [&'static str] {
        &[
            "status",
            "integrations",
            "queue",
            "dead_letters",
            "deliveries",
            "audit",
        ]
    }

    fn columns(&self, view: &str) -> Option<&'static [Column]> {
        Some(match view {
            "status" => STATUS,
            "integrations" => INTEGRATIONS,
            "queue" => QUEUE,
            "dead_letters" => DEAD_LETTERS,
            "deliveries" => DELIVERIES,
            "audit" => AUDIT,
            _ => return None,
        })
    }

    fn scan(&self, view: &str) -> Result<Rows<'_>, SqlError> {
        Ok(match view {
            "status" => rows(vec![self.status()?]),
            "integrations" => rows(self.integrations()?),
            "queue" => rows(self.queue()?),
            "dead_letters" => rows(self.dead_letters()?),
            "audit" => rows(self.audit()?),
            "deliveries" => {
                let store = self.state.queue.deliveries().map_err(storage)?;
                Box::new(store.log_newest_first().map_err(storage)?.map(|e| {
                    let e = e.map_err(storage)?;
                    Ok(vec![
                        Value::time_rfc3339(Some(&e.at)),
                        Value::text(e.integration_id),
                        Value::text(e.event_id.to_string()),
                        Value::opt_text(e.wedding_id),
                        Value::Int(i64::from(e.attempt)),
                        Value::text(e.outcome.as_str()),
                        Value::opt_int(e.status),
                        Value::opt_text(e.error),
                        Value::opt_float(e.latency_ms),
                    ])
                }))
            }
            _ => {
                return Err(SqlError::new(
                    state::UNDEFINED_TABLE,
                    format!("relation \"{view}\" does not exist"),
                ))
            }
        })
    }

    fn function(&self, name: &str) -> Option<Function> {
        let f = |name, min_args, max_args, returns| Function {
            name,
            min_args,
            max_args,
            returns,
        };
        Some(match name {
            "requeue" => f("requeue", 1, 2, Type::Int),
            "pause" => f("pause", 1, 1, Type::Text),
            "resume" => f("resume", 1, 1, Type::Text),
            "reencrypt" => f("reencrypt", 0, 0, Type::Int),
            _ => return None,
        })
    }

    /// Queries run in a [`Session`], which knows who calls.
    fn call(&self, name: &str, _args: &[Value]) -> Result<Value, SqlError> {
        Err(SqlError::new(
            state::INSUFFICIENT_PRIVILEGE,
            format!("permission denied for function {name}: no logged-in user"),
        ))
    }
}

/// The views as one logged-in user runs them: every call goes through [`Views::call_as`].
pub struct Session {
    pub views: Arc<Views>,
    pub actor: Actor,
}

impl Catalog for Session {
    fn views(&self) -> &'static [&'static str] {
        self.views.views()
    }

    fn columns(&self, view: &str) -> Option<&'static [Column]> {
        self.views.columns(view)
    }

    fn scan(&self, view: &str) -> Result<Rows<'_>, SqlError> {
        self.views.scan(view)
    }

    fn function(&self, name: &str) -> Option<Function> {
        self.views.function(name)
    }

    fn call(&self, name: &str, args: &[Value]) -> Result<Value, SqlError> {
        self.views.call_as(&self.actor, name, args)
    }
}
