//! From row changes to events: routes each captured row by its table's role in `[mapping]`,
//! keeps the context store current, and builds the envelope of a field row change.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::config::mapping::{FieldsTable, IntegrationsTable, OrganizationsTable, WeddingsTable};
use crate::config::{Config, DatePolicy, EventsConfig, Mapping, PriorityName};
use crate::fields::{self, FieldType};
use crate::lsn::Lsn;
use crate::store::record::{EventId, Op};
use crate::store::StoreError;

use super::context::{Facts, Integration, OrganizationContext};
use super::{rfc3339_micros, ContextStore, Envelope, EventData, EventIssue, EventKind, WeddingContext};

/// One column of a row image, by name.
pub enum Cell<'a> {
    /// The row image has no such column (or no image at all).
    Missing,
    Null,
    /// A TOASTed value the change did not touch and the WAL did not carry.
    Unchanged,
    Text(Cow<'a, str>),
}

impl Cell<'_> {
    fn text(&self) -> Option<&str> {
        match self {
            Cell::Text(t) => Some(t),
            _ => None,
        }
    }
}

/// A row image whose columns can be read by name.
pub trait RowView {
    fn cell(&self, column: &str) -> Cell<'_>;
}

/// What a captured table is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Fields,
    Weddings,
    Organizations,
    Integrations,
    Other,
}

/// The commit a row change belongs to.
#[derive(Clone, Copy, Debug)]
pub struct Commit {
    pub lsn: Lsn,
    pub unix_micros: i64,
    pub snapshot: bool,
}

/// The integration ids an event goes to.
type Targets = Arc<[String]>;

/// Wedding contexts kept in memory; beyond this many the cache starts over.
const CACHED_WEDDINGS: usize = 10_000;

pub struct EventBuilder {
    mapping: Mapping,
    events: EventsConfig,
    context: ContextStore,
    /// Wedding id → context as in the store. Capture is the store's only writer and invalidates
    /// entries as it writes, so the cache never serves a stale context.
    cache: RefCell<HashMap<String, Option<WeddingContext>>>,
    /// Facts learnt from field values (guest total, venue and its capacity) not yet written to the store:
    /// written once per network read ([`EventBuilder::persist_learned`]), not once per row.
    learned: RefCell<HashMap<String, Facts>>,
    /// (organisation, field type) → the integrations its events go to; cleared when an
    /// integration changes.
    /// Keyed by organisation, then field type, so a lookup borrows instead of allocating a key.
    targets: RefCell<HashMap<String, HashMap<String, Targets>>>,
    dispatch: bool,
    /// The last commit time, formatted, and the validation rules as of when its first row was
    /// seen: shared by the rows of a transaction.
    per_commit: RefCell<(i64, String, fields::Rules)>,
    rules: fields::Rules,
}

impl EventBuilder {
    pub fn new(config: &Config, context: ContextStore) -> EventBuilder {
        let rules = fields::Rules {
            today: chrono::Utc::now().date_naive(),
            past_wedding_date: match config.events.past_wedding_date {
                DatePolicy::Allow => fields::PastDatePolicy::Allow,
                DatePolicy::Warn => fields::PastDatePolicy::Warn,
                DatePolicy::Error => fields::PastDatePolicy::Error,
            },
            venue_capacity_warning: config.events.venue_capacity_warning,
        };
        EventBuilder {
            mapping: config.mapping.clone(),
            events: config.events.clone(),
            context,
            cache: RefCell::new(HashMap::new()),
            learned: RefCell::new(HashMap::new()),
            targets: RefCell::new(HashMap::new()),
            dispatch: config.dispatch.enabled,
            per_commit: RefCell::new((i64::MIN, String::new(), rules.clone())),
            rules,
        }
    }

    pub fn context(&self) -> &ContextStore {
        &self.context
    }

    /// False when `[events] enabled = false`: rows are captured without events or context.
    pub fn enabled(&self) -> bool {
        self.events.enabled
    }

    /// The replication origin of fieldsync's own writes.
    pub fn own_origin(&self) -> &str {
        &self.events.origin
    }

    /// The integrations table's column of credentials (`config`), which records never store.
    pub fn integrations_config(&self) -> &str {
        &self.mapping.integrations.config
    }

    pub fn role(&self, schema: &str, table: &str) -> Role {
        let is = |t: &crate::config::TableName| t.schema == schema && t.name == table;
        let m = &self.mapping;
        if is(&m.fields.table) {
            Role::Fields
        } else if is(&m.weddings.table) {
            Role::Weddings
        } else if is(&m.organizations.table) {
            Role::Organizations
        } else if is(&m.integrations.table) {
            Role::Integrations
        } else {
            Role::Other
        }
    }

    /// Applies a change of a context table (weddings, organisations, integrations) to the store.
    pub fn apply_context(
        &self,
        role: Role,
        op: Op,
        old: &dyn RowView,
        new: &dyn RowView,
    ) -> Result<(), StoreError> {
        // weddings and organisations feed the cached contexts: write learnt facts, then forget them
        if matches!(role, Role::Weddings | Role::Organizations) {
            self.persist_learned()?;
            self.cache.borrow_mut().clear();
        }
        if role == Role::Integrations {
            self.targets.borrow_mut().clear();
        }
        let c = &self.context;
        match (role, op) {
            (Role::Weddings, Op::Truncate) => c.clear_weddings(),
            (Role::Organizations, Op::Truncate) => c.clear_organizations(),
            (Role::Integrations, Op::Truncate) => c.clear_integrations(),
            (Role::Weddings, Op::Delete) => {
                key(old, &self.mapping.weddings.id).map_or(Ok(()), |id| c.delete_wedding(&id))
            }
            (Role::Organizations, Op::Delete) => {
                key(old, &self.mapping.organizations.id).map_or(Ok(()), |id| c.delete_organization(&id))
            }
            (Role::Integrations, Op::Delete) => {
                key(old, &self.mapping.integrations.id).map_or(Ok(()), |id| c.delete_integration(&id))
            }
            (Role::Weddings, _) => match wedding(new, &self.mapping.weddings) {
                Some(w) => c.upsert_wedding(w),
                None => Ok(()),
            },
            (Role::Organizations, _) => match organization(new, &self.mapping.organizations) {
                Some(o) => c.upsert_organization(o),
                None => Ok(()),
            },
            (Role::Integrations, _) => match integration(new, &self.mapping.integrations) {
                Some(i) => c.upsert_integration(i),
                None => Ok(()),
            },
            (Role::Fields | Role::Other, _) => Ok(()),
        }
    }

    /// The event of a field row change (none for a truncate).
    pub fn field_event(
        &self,
        id: EventId,
        commit: Commit,
        op: Op,
        old: &dyn RowView,
        new: &dyn RowView,
    ) -> Result<Option<Envelope>, StoreError> {
        let f: &FieldsTable = &self.mapping.fields;
        let kind = match op {
            Op::Insert => EventKind::Created,
            Op::Update => EventKind::Updated,
            Op::Delete => EventKind::Deleted,
            Op::Truncate => return Ok(None),
        };
        // the row as it is now; for a delete, as it was
        let row = if op == Op::Delete { old } else { new };
        let text = |col: &str| {
            row.cell(col)
                .text()
                .map(str::to_owned)
                .or_else(|| old.cell(col).text().map(str::to_owned))
        };
        let field_type_text = text(&f.field_type).unwrap_or_default();
        let field_type = FieldType::parse(&field_type_text);
        let wedding_id = text(&f.wedding);
        let (old_value, _) = json_cell(&old.cell(&f.value));
        let (new_value, unreadable) = if op == Op::Delete {
            (None, None)
        } else {
            match json_cell(&new.cell(&f.value)) {
                (None, _) => (old_value.clone(), None),
                read => read,
            }
        };

        let (committed_at, rules) = {
            let mut last = self.per_commit.borrow_mut();
            if last.0 != commit.unix_micros {
                *last = (
                    commit.unix_micros,
                    rfc3339_micros(commit.unix_micros),
                    self.rules_today(),
                );
            }
            (last.1.clone(), last.2.clone())
        };
        let wedding = match &wedding_id {
            Some(w) => self.wedding(w)?,
            None => None,
        };
        // a context that fails its checks is not passed on as if it were fine
        let context_errors = wedding.as_ref().map_or_else(Vec::new, |w| {
            issues(fields::context_issues(
                w.wedding_date.as_deref(),
                w.timezone.as_deref(),
            ))
        });
        let (valid, normalized, mut errors, warnings) = match (&new_value, op) {
            (_, Op::Delete) => (true, None, Vec::new(), Vec::new()),
            (_, _) if unreadable.is_some() => {
                crate::telemetry::metrics::invalid_event(&field_type_text);
                (false, None, issues(unreadable.into_iter().collect()), Vec::new())
            }
            (value, _) => {
                let null = serde_json::Value::Null;
                let ctx = fields::Context {
                    guest_total: wedding.as_ref().and_then(|w| w.guest_total),
                    venue_capacity: wedding.as_ref().and_then(|w| w.venue_capacity),
                };
                let checked = fields::check(&field_type, value.as_ref().unwrap_or(&null), &ctx, &rules);
                if !checked.valid {
                    crate::telemetry::metrics::invalid_event(&field_type_text);
                }
                (
                    checked.valid,
                    checked.normalized,
                    issues(checked.errors),
                    issues(checked.warnings),
                )
            }
        };
        let (valid, normalized) = if context_errors.is_empty() {
            (valid, normalized)
        } else {
            if valid {
                crate::telemetry::metrics::invalid_event(&field_type_text);
            }
            errors.extend(context_errors);
            (false, None)
        };
        // facts later events of this wedding need
        if let (Some(w), true, Some(n)) = (&wedding_id, valid, &normalized) {
            let guest_total = (field_type == FieldType::GuestCountMatrix)
                .then(|| n.get("total"))
                .flatten();
            let capacity = (field_type == FieldType::VenueSelector)
                .then(|| n.get("estimated_capacity"))
                .flatten();
            let as_u32 = |v: Option<&serde_json::Value>| {
                v.and_then(|v| v.as_u64()).and_then(|v| u32::try_from(v).ok())
            };
            let facts = Facts {
                guest_total: as_u32(guest_total),
                venue: (field_type == FieldType::VenueSelector).then(|| n.clone()),
                venue_capacity: as_u32(capacity),
            };
            if facts != Facts::default() {
                self.learn(w, facts)?;
            }
        }

        Ok(Some(Envelope {
            kind,
            timestamp: committed_at.clone(),
            data: EventData {
                event_id: id,
                organization_id: text(&f.organization),
                wedding_id,
                field_id: text(&f.field_id),
                priority: self.priority(&field_type),
                field_type: field_type_text,
                old_value,
                new_value,
                normalized,
                valid,
                errors,
                warnings,
                user_id: text(&f.user),
                updated_at: text(&f.updated_at),
                committed_at,
                commit_lsn: commit.lsn,
                snapshot: commit.snapshot,
                wedding,
            },
        }))
    }

    /// The ids of the integrations an event goes to: its organisation's active integrations that
    /// have an adapter and take its field type (see [`crate::events::accepts`]).
    pub fn targets(&self, event: &EventData) -> Result<Arc<[String]>, StoreError> {
        let Some(org) = event.organization_id.as_deref().filter(|_| self.dispatch) else {
            return Ok(Arc::from([]));
        };
        if let Some(hit) = self
            .targets
            .borrow()
            .get(org)
            .and_then(|m| m.get(&event.field_type))
        {
            return Ok(hit.clone());
        }
        let ids: Arc<[String]> = self
            .context
            .active_integrations(org)?
            .into_iter()
            .filter(|i| super::accepts(i, &event.field_type))
            .map(|i| i.id)
            .collect();
        self.targets
            .borrow_mut()
            .entry(org.to_owned())
            .or_default()
            .insert(event.field_type.clone(), ids.clone());
        Ok(ids)
    }

    fn priority(&self, field_type: &FieldType) -> PriorityName {
        if let Some(p) = self.events.priorities.get(field_type.as_str()) {
            return *p;
        }
        field_type.default_priority()
    }

    /// The validation rules, judged against today's date (UTC).
    fn rules_today(&self) -> fields::Rules {
        fields::Rules {
            today: chrono::Utc::now().date_naive(),
            ..self.rules.clone()
        }
    }

    /// Writes the facts learnt since the last call to the context store.
    pub fn persist_learned(&self) -> Result<(), StoreError> {
        for (id, facts) in self.learned.borrow_mut().drain() {
            self.context.learn(&id, facts)?;
        }
        Ok(())
    }

    /// Notes facts about a wedding in its cached context; the store gets them at the next persist.
    fn learn(&self, id: &str, facts: Facts) -> Result<(), StoreError> {
        self.wedding(id)?; // make sure the context is cached
        let mut cache = self.cache.borrow_mut();
        let ctx = cache
            .entry(id.to_owned())
            .or_insert(None)
            .get_or_insert_with(|| WeddingContext {
                id: id.to_owned(),
                ..WeddingContext::default()
            });
        // only what changed is cloned and queued for the store (a venue only when it changed)
        let mut changed = Facts::default();
        if facts.guest_total.is_some() && facts.guest_total != ctx.guest_total {
            ctx.guest_total = facts.guest_total;
            changed.guest_total = facts.guest_total;
        }
        if facts.venue_capacity.is_some() && facts.venue_capacity != ctx.venue_capacity {
            ctx.venue_capacity = facts.venue_capacity;
            changed.venue_capacity = facts.venue_capacity;
        }
        if let Some(venue) = facts.venue.filter(|v| ctx.venue.as_ref() != Some(v)) {
            ctx.venue = Some(venue.clone());
            changed.venue = Some(venue);
        }
        if changed != Facts::default() {
            let mut learned = self.learned.borrow_mut();
            let entry = learned.entry(id.to_owned()).or_default();
            entry.guest_total = changed.guest_total.or(entry.guest_total);
            entry.venue_capacity = changed.venue_capacity.or(entry.venue_capacity);
            entry.venue = changed.venue.or(entry.venue.take());
        }
        Ok(())
    }

    fn wedding(&self, id: &str) -> Result<Option<WeddingContext>, StoreError> {
        if let Some(hit) = self.cache.borrow().get(id) {
            return Ok(hit.clone());
        }
        // the store must hold every learnt fact before it is read again
        self.persist_learned()?;
        let found = self.context.wedding(id)?;
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= CACHED_WEDDINGS {
            cache.clear();
        }
        cache.insert(id.to_owned(), found.clone());
        Ok(found)
    }
}

fn issues(list: Vec<fields::Issue>) -> Vec<EventIssue> {
    list.into_iter()
        .map(|i| EventIssue {
            path: i.path,
            rule: i.rule.to_owned(),
            message: i.message,
        })
        .collect()
}

/// A JSON value from a jsonb/json column's text (a plain text column becomes a JSON string), and
/// the issue when the text is JSON that cannot be held exactly (the value is then `null`).
fn json_cell(cell: &Cell<'_>) -> (Option<serde_json::Value>, Option<fields::Issue>) {
    match cell {
        Cell::Text(t) => match fields::read_json(t) {
            Ok(v) => (Some(v), None),
            Err(None) => (Some(serde_json::Value::String(t.to_string())), None),
            Err(Some(issue)) => (Some(serde_json::Value::Null), Some(issue)),
        },
        Cell::Null => (Some(serde_json::Value::Null), None),
        Cell::Missing | Cell::Unchanged => (None, None),
    }
}

fn key(row: &dyn RowView, column: &str) -> Option<String> {
    row.cell(column).text().map(str::to_owned)
}

fn wedding(row: &dyn RowView, m: &WeddingsTable) -> Option<WeddingContext> {
    Some(WeddingContext {
        id: key(row, &m.id)?,
        organization_id: key(row, &m.organization),
        organization_name: None,
        couple_names: key(row, &m.couple_names),
        wedding_date: key(row, &m.date),
        timezone: key(row, &m.timezone),
        venue: match row.cell(&m.venue) {
            Cell::Text(t) => serde_json::from_str(&t).ok(),
            _ => None,
        },
        guest_total: None,
        venue_capacity: None,
    })
}

fn organization(row: &dyn RowView, m: &OrganizationsTable) -> Option<OrganizationContext> {
    Some(OrganizationContext {
        id: key(row, &m.id)?,
        name: key(row, &m.name),
        timezone: key(row, &m.timezone),
    })
}

fn integration(row: &dyn RowView, m: &IntegrationsTable) -> Option<Integration> {
    Some(Integration {
        id: key(row, &m.id)?,
        organization_id: key(row, &m.organization)?,
        integration_type: key(row, &m.integration_type).unwrap_or_default(),
        config: match row.cell(&m.config) {
            Cell::Text(t) => serde_json::from_str(&t).unwrap_or(serde_json::Value::Null),
            _ => serde_json::Value::Null,
        },
        // PostgreSQL prints booleans as t / f
        is_active: !matches!(key(row, &m.active).as_deref(), Some("f" | "false")),
    })
}
