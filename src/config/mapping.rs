//! `[mapping]` (which tables and columns hold the wedding data) and `[events]` (how rows become
//! field-sync events). The defaults match `sql/schema.sql`, so an app on the default schema needs
//! no configuration; an app with other names needs only these keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::validate::{parse_table_name, MAX_IDENTIFIER_BYTES};
use super::TableName;

/// `[mapping]` as written. Flat keys, so each can be overridden by `FIELDSYNC__MAPPING__<KEY>`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawMapping {
    pub fields_table: String,
    pub fields_organization: String,
    pub fields_wedding: String,
    pub fields_field_id: String,
    pub fields_field_type: String,
    pub fields_value: String,
    pub fields_user: String,
    pub fields_updated_at: String,
    pub weddings_table: String,
    pub weddings_id: String,
    pub weddings_organization: String,
    pub weddings_couple_names: String,
    pub weddings_date: String,
    pub weddings_timezone: String,
    pub weddings_venue: String,
    pub organizations_table: String,
    pub organizations_id: String,
    pub organizations_name: String,
    pub organizations_timezone: String,
    pub integrations_table: String,
    pub integrations_id: String,
    pub integrations_organization: String,
    pub integrations_type: String,
    pub integrations_config: String,
    pub integrations_active: String,
}

impl Default for RawMapping {
    fn default() -> Self {
        let s = |v: &str| v.to_owned();
        RawMapping {
            fields_table: s("public.form_field_values"),
            fields_organization: s("organization_id"),
            fields_wedding: s("wedding_id"),
            fields_field_id: s("field_id"),
            fields_field_type: s("field_type"),
            fields_value: s("value"),
            fields_user: s("updated_by"),
            fields_updated_at: s("updated_at"),
            weddings_table: s("public.weddings"),
            weddings_id: s("id"),
            weddings_organization: s("organization_id"),
            weddings_couple_names: s("couple_names"),
            weddings_date: s("wedding_date"),
            weddings_timezone: s("timezone"),
            weddings_venue: s("venue"),
            organizations_table: s("public.organizations"),
            organizations_id: s("id"),
            organizations_name: s("name"),
            organizations_timezone: s("timezone"),
            integrations_table: s("public.organization_integrations"),
            integrations_id: s("id"),
            integrations_organization: s("organization_id"),
            integrations_type: s("integration_type"),
            integrations_config: s("config"),
            integrations_active: s("is_active"),
        }
    }
}

/// Columns of the form-field values table: one row per (wedding, field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldsTable {
    pub table: TableName,
    pub organization: String,
    pub wedding: String,
    pub field_id: String,
    pub field_type: String,
    pub value: String,
    pub user: String,
    pub updated_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeddingsTable {
    pub table: TableName,
    pub id: String,
    pub organization: String,
    pub couple_names: String,
    pub date: String,
    pub timezone: String,
    pub venue: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrganizationsTable {
    pub table: TableName,
    pub id: String,
    pub name: String,
    pub timezone: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntegrationsTable {
    pub table: TableName,
    pub id: String,
    pub organization: String,
    pub integration_type: String,
    pub config: String,
    pub active: String,
}

/// The checked `[mapping]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub fields: FieldsTable,
    pub weddings: WeddingsTable,
    pub organizations: OrganizationsTable,
    pub integrations: IntegrationsTable,
}

impl Mapping {
    pub fn tables(&self) -> [&TableName; 4] {
        [
            &self.fields.table,
            &self.weddings.table,
            &self.organizations.table,
            &self.integrations.table,
        ]
    }
}

/// `[events]` as written.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawEvents {
    /// Build field-sync events (and keep the wedding context store); `false` captures rows only.
    pub enabled: bool,
    /// `initial`: at first start, existing rows are read consistently with the slot's start.
    pub snapshot: String,
    /// Replication origin whose transactions are fieldsync's own write-backs: they yield no event.
    pub origin: String,
    /// A wedding date in the past: `allow`, `warn` or `error`.
    pub past_wedding_date: String,
    /// A guest total above this is a warning.
    pub venue_capacity_warning: u32,
    /// Priority per field type (`critical`, `important`, `optional`), over the built-in defaults.
    pub priorities: BTreeMap<String, String>,
}

impl Default for RawEvents {
    fn default() -> Self {
        RawEvents {
            enabled: true,
            snapshot: "initial".into(),
            origin: "fieldsync".into(),
            past_wedding_date: "warn".into(),
            venue_capacity_warning: 500,
            priorities: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMode {
    Initial,
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DatePolicy {
    Allow,
    Warn,
    Error,
}

/// A delivery priority as `[events] priorities` names it: the one enum of `fields`.
pub use crate::fields::Priority as PriorityName;

/// The checked `[events]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventsConfig {
    pub enabled: bool,
    pub snapshot: SnapshotMode,
    pub origin: String,
    pub past_wedding_date: DatePolicy,
    pub venue_capacity_warning: u32,
    pub priorities: BTreeMap<String, PriorityName>,
}

/// Checks `[mapping]`. A mapped table that `[capture] tables` does not list is simply never read.
pub(super) fn check_mapping(
    raw: &RawMapping,
    err: &dyn Fn(&str, String) -> super::ConfigError,
) -> Result<Mapping, super::ConfigError> {
    let table = |key: &str, text: &str| -> Result<TableName, super::ConfigError> {
        parse_table_name(text).map_err(|m| err(&format!("mapping.{key}"), m))
    };
    let col = |key: &str, name: &str| -> Result<String, super::ConfigError> {
        if name.is_empty() || name.len() > MAX_IDENTIFIER_BYTES {
            return Err(err(
                &format!("mapping.{key}"),
                format!("must be a column name of 1 to {MAX_IDENTIFIER_BYTES} bytes"),
            ));
        }
        Ok(name.to_owned())
    };
    Ok(Mapping {
        fields: FieldsTable {
            table: table("fields_table", &raw.fields_table)?,
            organization: col("fields_organization", &raw.fields_organization)?,
            wedding: col("fields_wedding", &raw.fields_wedding)?,
            field_id: col("fields_field_id", &raw.fields_field_id)?,
            field_type: col("fields_field_type", &raw.fields_field_type)?,
            value: col("fields_value", &raw.fields_value)?,
            user: col("fields_user", &raw.fields_user)?,
            updated_at: col("fields_updated_at", &raw.fields_updated_at)?,
        },
        weddings: WeddingsTable {
            table: table("weddings_table", &raw.weddings_table)?,
            id: col("weddings_id", &raw.weddings_id)?,
            organization: col("weddings_organization", &raw.weddings_organization)?,
            couple_names: col("weddings_couple_names", &raw.weddings_couple_names)?,
            date: col("weddings_date", &raw.weddings_date)?,
            timezone: col("weddings_timezone", &raw.weddings_timezone)?,
            venue: col("weddings_venue", &raw.weddings_venue)?,
        },
        organizations: OrganizationsTable {
            table: table("organizations_table", &raw.organizations_table)?,
            id: col("organizations_id", &raw.organizations_id)?,
            name: col("organizations_name", &raw.organizations_name)?,
            timezone: col("organizations_timezone", &raw.organizations_timezone)?,
        },
        integrations: IntegrationsTable {
            table: table("integrations_table", &raw.integrations_table)?,
            id: col("integrations_id", &raw.integrations_id)?,
            organization: col("integrations_organization", &raw.integrations_organization)?,
            integration_type: col("integrations_type", &raw.integrations_type)?,
            config: col("integrations_config", &raw.integrations_config)?,
            active: col("integrations_active", &raw.integrations_active)?,
        },
    })
}

pub(super) fn check_events(
    raw: &RawEvents,
    err: &dyn Fn(&str, String) -> super::ConfigError,
) -> Result<EventsConfig, super::ConfigError> {
    let snapshot = match raw.snapshot.as_str() {
        "initial" => SnapshotMode::Initial,
        "never" => SnapshotMode::Never,
        other => {
            return Err(err(
                "events.snapshot",
                format!(
                    "{} is not a snapshot mode: use \"initial\" or \"never\"",
                    crate::secret::quoted(other)
                ),
            ))
        }
    };
    let past_wedding_date = match raw.past_wedding_date.as_str() {
        "allow" => DatePolicy::Allow,
        "warn" => DatePolicy::Warn,
        "error" => DatePolicy::Error,
        other => {
            return Err(err(
                "events.past_wedding_date",
                format!(
                    "{} is not a policy: use \"allow\", \"warn\" or \"error\"",
                    crate::secret::quoted(other)
                ),
            ))
        }
    };
    if raw.origin.is_empty() || raw.origin.len() > MAX_IDENTIFIER_BYTES {
        return Err(err(
            "events.origin",
            format!("must be a replication origin name of 1 to {MAX_IDENTIFIER_BYTES} bytes"),
        ));
    }
    let mut priorities = BTreeMap::new();
    for (field_type, p) in &raw.priorities {
        let p = match p.as_str() {
            "critical" => PriorityName::Critical,
            "important" => PriorityName::Important,
            "optional" => PriorityName::Optional,
            other => {
                return Err(err(
                    "events.priorities",
                    format!(
                        "{} = {}: use \"critical\", \"important\" or \"optional\"",
                        crate::secret::excerpt(field_type, 64),
                        crate::secret::quoted(other)
                    ),
                ))
            }
        };
        priorities.insert(field_type.clone(), p);
    }
    Ok(EventsConfig {
        enabled: raw.enabled,
        snapshot,
        origin: raw.origin.clone(),
        past_wedding_date,
        venue_capacity_warning: raw.venue_capacity_warning,
        priorities,
    })
}
